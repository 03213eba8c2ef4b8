//! Direct mode: each record's events taken through the pipeline in-process, in per-user order,
//! within the deadline.

use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use axum::response::Response;

use crate::event::Decoded;
use crate::metrics::Metrics;
use crate::pipeline::{Outcome, Pipeline};
use crate::source::sequencer::Sequencer;
use crate::source::{users_of, Dispatch};

/// Environment variable holding the webhook's Authorization token.
use super::http::{json, Answer};

/// The in-process pipeline, ordered per user.
pub struct Direct {
    pipeline: Arc<Pipeline>,
    sequencer: Arc<Sequencer>,
    deadline: Duration,
    /// `max_inflight` permits: each event in flight holds one, until its outcome (even after
    /// a 503 answered its delivery).
    room: Arc<tokio::sync::Semaphore>,
}

impl Direct {
    pub fn new(pipeline: Arc<Pipeline>, deadline: Duration, max_inflight: usize) -> Direct {
        Direct {
            pipeline,
            sequencer: Arc::new(Sequencer::default()),
            deadline,
            room: Arc::new(tokio::sync::Semaphore::new(max_inflight)),
        }
    }
}

pub(super) async fn direct_records(
    direct: &Direct,
    m: &Metrics,
    total: usize,
    good: Vec<(Vec<u8>, Vec<Decoded>)>,
    invalid: usize,
) -> Response {
    let count: usize = good.iter().map(|(_, events)| events.len()).sum();
    // Room for every event of the delivery, or none: a delivery beyond `max_inflight` (Auth0
    // retrying batches during an outage) is answered 503 at once instead of queueing copies.
    let mut permits = match u32::try_from(count)
        .ok()
        .and_then(|n| Arc::clone(&direct.room).try_acquire_many_owned(n).ok())
    {
        Some(permits) => permits,
        None => {
            m.ingest_records
                .with_label_values(&["unacknowledged"])
                .inc_by(count as u64);
            return json(
                StatusCode::SERVICE_UNAVAILABLE,
                &Answer {
                    records: total,
                    invalid,
                    error: Some(
                        "too many events in flight ([ingest] max_inflight); retry later".to_owned(),
                    ),
                    ..Answer::default()
                },
            );
        }
    };
    // Its own dispatcher per delivery, with the order shared by every delivery.
    let mut dispatch: Dispatch<Vec<Outcome>> =
        Dispatch::with_sequencer(Arc::clone(&direct.sequencer));
    for (record, events) in good {
        // One delivery per record (its events in order): a lost task runs again from the
        // record's bytes, then ends `failed`.
        let users = users_of(&events);
        let pipeline = Arc::clone(&direct.pipeline);
        let permit = permits.split(events.len());
        dispatch.spawn(users, move || async move {
            let mut outcomes = Vec::with_capacity(events.len());
            let again = || crate::event::decode(&record);
            pipeline
                .deliver(events, Some(again), |report| outcomes.push(report.outcome))
                .await;
            drop(permit);
            outcomes
        });
    }
    let n = dispatch.len();
    let all = async {
        let mut results = Vec::with_capacity(n);
        while let Some(result) = dispatch.next().await {
            results.push(result);
        }
        results
    };
    let answered = tokio::time::timeout(direct.deadline, all).await;
    if answered.is_err() {
        // The work outlives the 503: it finishes, and Auth0's retry is deduplicated.
        dispatch.detach();
    }
    match answered {
        Ok(results) if results.iter().any(Result::is_err) => {
            // A task died (a bug): its event is not done, so Auth0 must send the batch again.
            let lost = results.iter().filter(|r| r.is_err()).count();
            tracing::error!(
                lost,
                "event tasks of a delivery ended abnormally: answering 503 so Auth0 retries"
            );
            json(
                StatusCode::SERVICE_UNAVAILABLE,
                &Answer {
                    records: total,
                    invalid,
                    error: Some("internal error; retry later".to_owned()),
                    ..Answer::default()
                },
            )
        }
        Ok(results) => {
            let reports: Vec<Outcome> = results
                .into_iter()
                .filter_map(Result::ok)
                .flatten()
                .collect();
            let failed = reports.iter().filter(|o| **o == Outcome::Failed).count();
            let bad = reports.iter().filter(|o| **o == Outcome::Invalid).count();
            m.ingest_records
                .with_label_values(&["processed"])
                .inc_by((reports.len() - failed - bad) as u64);
            m.ingest_records
                .with_label_values(&["failed"])
                .inc_by(failed as u64);
            m.ingest_records
                .with_label_values(&["invalid"])
                .inc_by(bad as u64);
            json(
                StatusCode::OK,
                &Answer {
                    records: total,
                    processed: Some(reports.len() - failed - bad),
                    invalid: invalid + bad,
                    failed: Some(failed),
                    ..Answer::default()
                },
            )
        }
        Err(_) => {
            tracing::warn!(
                events = n,
                deadline = ?direct.deadline,
                "delivery not finished within the deadline (Management API slow or failing): answering 503 so Auth0 retries"
            );
            json(
                StatusCode::SERVICE_UNAVAILABLE,
                &Answer {
                    records: total,
                    invalid,
                    error: Some("still processing; retry later".to_owned()),
                    ..Answer::default()
                },
            )
        }
    }
}
