//! What the service's librdkafka clients share: their logs, quieted (a broker that is down
//! makes librdkafka repeat itself every few hundred milliseconds), and the producers' context.

use rdkafka::error::KafkaError;
use rdkafka::producer::FutureProducer;
use rdkafka::ClientContext;

use crate::source::QuietLog;

/// Logs librdkafka's warnings and errors at warn, at most once per 10 s; the rest at debug.
/// While a broker is down, librdkafka repeats its connection errors every few hundred
/// milliseconds.
pub fn log_librdkafka(
    quiet: &QuietLog,
    level: rdkafka::config::RDKafkaLogLevel,
    fac: &str,
    message: &str,
) {
    use rdkafka::config::RDKafkaLogLevel as L;
    let serious = matches!(
        level,
        L::Emerg | L::Alert | L::Critical | L::Error | L::Warning
    );
    if serious && quiet.allow("log") {
        tracing::warn!(
            facility = fac,
            "librdkafka: {message} (repeats within 10 s are counted in library_errors_total, not logged)"
        );
    } else {
        tracing::debug!(facility = fac, "librdkafka: {message}");
    }
}

/// Logs a client error reported by librdkafka at most once per 10 s.
pub(super) fn log_client_error(quiet: &QuietLog, client: &str, error: &KafkaError, reason: &str) {
    if quiet.allow("client_error") {
        tracing::warn!(%error, reason, "Kafka {client} error (librdkafka retries by itself; repeats within 10 s are counted in library_errors_total, not logged)");
    }
}

/// The context of the service's producers (dead letters, the `ingest` bridge): quiet logs.
/// `default()` for a one-shot probe; [`counting`](ProducerCallbacks::counting) in the service.
#[derive(Default)]
pub struct ProducerCallbacks {
    quiet: QuietLog,
}

impl ProducerCallbacks {
    /// Quiet logs whose errors are counted in `library_errors_total{library="librdkafka"}`.
    pub fn counting(metrics: &crate::metrics::Metrics) -> ProducerCallbacks {
        ProducerCallbacks {
            quiet: QuietLog::counting(metrics, "librdkafka"),
        }
    }
}

impl ClientContext for ProducerCallbacks {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, log_message: &str) {
        log_librdkafka(&self.quiet, level, fac, log_message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        log_client_error(&self.quiet, "producer", &error, reason);
    }
}

impl rdkafka::producer::ProducerContext for ProducerCallbacks {
    type DeliveryOpaque = ();
    fn delivery(&self, _: &rdkafka::producer::DeliveryResult<'_>, _: ()) {}
}

/// A producer with the service's quiet logging.
pub type Producer = FutureProducer<ProducerCallbacks>;
