//! The log stream's health: its status read now and then, a warning while it is not active.

use std::sync::Arc;
use std::time::Duration;

use crate::metrics::Metrics;
use crate::shutdown::Shutdown;
use crate::supervise::HelperStatus;

use super::*;

/// Reads the stream's status now and every `every` until `shutdown`: `log_stream_active{stream}`
/// 1 when `active`, 0 otherwise (and when it cannot be read), with a warning naming the
/// status. A read that fails (a missing `read:log_streams`, an unknown id, no answer) is
/// reported through `status` (logged, counted, `/readyz` degraded) and tried again at the
/// next check; the next read that works clears it.
pub async fn watch_log_stream(
    api: Arc<LogsApi>,
    stream_id: String,
    every: Duration,
    metrics: Arc<Metrics>,
    status: HelperStatus,
    shutdown: Shutdown,
) {
    let mut last: Option<String> = None;
    let mut warned = None;
    loop {
        let read = tokio::select! {
            read = api.log_stream(&stream_id) => read,
            _ = shutdown.wait() => return,
        };
        match read {
            Ok(stream) => {
                status.healthy();
                warned = report_stream_status(
                    &metrics,
                    &stream_id,
                    &stream.name,
                    &stream.status,
                    last.as_deref(),
                    warned,
                );
                last = Some(stream.status);
            }
            Err(err) => {
                metrics
                    .log_stream_active
                    .with_label_values(&[&stream_id])
                    .set(0);
                metrics
                    .auth0_logs_read_errors
                    .with_label_values(&["health"])
                    .inc();
                status.failed(&format!(
                    "the status of log stream {stream_id} cannot be read: {err}"
                ));
                last = Some(String::new());
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.wait() => return,
        }
    }
}

/// While a stream stays inactive, the warning is repeated this often (not at every read).
const STATUS_WARNING_REPEAT: Duration = Duration::from_secs(600);

/// Sets the gauge and logs a change (a warning naming the status when not active, repeated
/// every 10 minutes while it lasts). Returns when the last warning was logged.
fn report_stream_status(
    metrics: &Metrics,
    id: &str,
    name: &str,
    status: &str,
    previous: Option<&str>,
    warned: Option<tokio::time::Instant>,
) -> Option<tokio::time::Instant> {
    let active = status == "active";
    metrics
        .log_stream_active
        .with_label_values(&[id])
        .set(i64::from(active));
    if active {
        if previous.is_some_and(|p| p != "active") {
            tracing::info!(stream = id, name, "the log stream is active again");
        }
        return None;
    }
    let changed = previous != Some(status);
    if !changed && warned.is_some_and(|at| at.elapsed() < STATUS_WARNING_REPEAT) {
        return warned;
    }
    tracing::warn!(
        stream = id,
        name,
        status,
        "the log stream is not active: Auth0 is not delivering it (a stream failing for 7 days is paused and must be resumed by hand: Dashboard → Monitoring → Streams); the backstop, if configured, gives the users their roles meanwhile"
    );
    Some(tokio::time::Instant::now())
}
