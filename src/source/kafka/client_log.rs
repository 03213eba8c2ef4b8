//! librdkafka's own log for one-shot commands (`doctor`): a broker that is down makes
//! librdkafka repeat "Connect to ... failed" and "AllBrokersDown" every few hundred
//! milliseconds, which would bury the command's checklist. A one-shot command's clients log
//! them at debug (`RUST_LOG=debug` shows them); the command reports a broker it cannot reach
//! as one line of its own. The long-running service keeps its own contexts (`Ctx`,
//! `ProducerCtx`), which log a repeated library error once per interval.

use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::ConsumerContext;
use rdkafka::error::KafkaError;

/// The context of a one-shot command's Kafka clients: librdkafka's log lines and client
/// errors go to tracing at debug, below the command's output.
#[derive(Debug, Default, Clone, Copy)]
pub struct OneShotContext;

impl ClientContext for OneShotContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        tracing::debug!(?level, facility = fac, "librdkafka: {log_message}");
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::debug!(%error, reason, "librdkafka: client error");
    }
}

impl ConsumerContext for OneShotContext {}
