//! The Prometheus metrics of the service (prefix `auth0_default_roles_`, base units, bounded
//! labels: never a user id, email or log id), in one registry per process.

use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

const PREFIX: &str = "auth0_default_roles";

/// Every metric the service exports.
pub struct Metrics {
    registry: Registry,
    /// Every family's full name, collected as each metric is registered.
    names: std::collections::BTreeSet<String>,
    pub events_received: IntCounterVec,
    pub events_processed: IntCounterVec,
    pub event_processing_duration: Histogram,
    pub event_age: Histogram,
    pub last_processed_event_timestamp: Gauge,
    pub inflight_events: IntGauge,
    pub role_assignments: IntCounterVec,
    pub policy_rules_undecided: IntCounterVec,
    pub client_metadata_unknown_roles: IntCounter,
    pub mgmt_requests: IntCounterVec,
    pub mgmt_request_duration: HistogramVec,
    pub mgmt_retries: IntCounterVec,
    pub mgmt_rate_limit_remaining: IntGauge,
    pub mgmt_client_quota_remaining: IntGaugeVec,
    pub mgmt_failing: IntGauge,
    pub mgmt_blocked: IntGaugeVec,
    pub mgmt_token_requests: IntCounterVec,
    pub task_panics: IntCounterVec,
    pub rate_limiter_wait: Histogram,
    pub organization_rate_limiter_wait: Histogram,
    pub mgmt_class_limit: IntGaugeVec,
    pub mgmt_class_remaining: IntGaugeVec,
    pub mgmt_class_rate: prometheus::GaugeVec,
    pub mgmt_class_rate_limited: IntCounterVec,
    pub mgmt_class_wait: prometheus::CounterVec,
    pub dedup_hits: IntCounterVec,
    pub dedup_entries: IntGauge,
    pub kafka_consumer_lag: IntGaugeVec,
    pub kafka_assigned_partitions: IntGauge,
    pub kafka_rebalances: IntCounterVec,
    pub kafka_offset_commits: IntCounterVec,
    pub kafka_paused_partitions: IntGauge,
    pub dead_letters: IntCounterVec,
    pub ingest_requests: IntCounterVec,
    pub ingest_records: IntCounterVec,
    pub ingest_request_duration: Histogram,
    pub sqs_messages_received: IntCounter,
    pub sqs_messages_deleted: IntCounter,
    pub sqs_visibility_extensions: IntCounter,
    pub sqs_messages_left: IntCounterVec,
    pub sqs_inflight_messages: IntGauge,
    pub build_info: IntGaugeVec,
    // The tenant's Logs API (`auth0_logs` source, `[backstop]`) and the log stream's health.
    pub backstop_recovered: IntCounterVec,
    pub log_stream_active: IntGaugeVec,
    pub auth0_logs_lag: prometheus::GaugeVec,
    pub auth0_logs_retention_gaps: IntCounterVec,
    pub auth0_logs_read_errors: IntCounterVec,
    pub ledger_writes: IntCounterVec,
    pub ledger_errors: IntCounter,
    pub ledger_refused: IntCounter,
    // Helper tasks beside the source (`crate::supervise`).
    pub helper_failures: IntCounterVec,
    pub helper_up: IntGaugeVec,
    /// Errors a library (librdkafka, the AWS SDK) reported, each counted, logged at most once
    /// per 10 s per kind (`crate::source::QuietLog::counting`).
    pub library_errors: IntCounterVec,
    pub deliveries_held: IntCounterVec,
    pub ledger_unreachable: IntGauge,
    pub ledger_kept_off: IntCounter,
    // The tenant's Events API (`auth0_events` source).
    pub auth0_events_connections: IntCounter,
    pub auth0_events_reconnects: IntCounterVec,
    pub auth0_events_gaps: IntCounter,
    pub auth0_events_connection_limit_waits: IntCounter,
    pub auth0_events_pending: IntGauge,
    pub auth0_events_lag: Gauge,
    // The readers' lease in a PostgreSQL ledger (`crate::source::lease`).
    pub reader_lease_held: IntGaugeVec,
    pub reader_lease_lost: IntCounterVec,
}

/// A metric definition failed (a programming error: names and labels are static).
#[derive(Debug, thiserror::Error)]
#[error("metrics: {0}")]
pub struct MetricsError(#[from] prometheus::Error);

/// Registers each metric as it is built and remembers its names: a metric is declared once,
/// where it is constructed.
struct Registrar<'a> {
    registry: &'a Registry,
    names: std::collections::BTreeSet<String>,
}

impl<'a> Registrar<'a> {
    fn new(registry: &'a Registry) -> Self {
        Registrar {
            registry,
            names: std::collections::BTreeSet::new(),
        }
    }

    fn add<C>(&mut self, collector: C) -> Result<C, prometheus::Error>
    where
        C: prometheus::core::Collector + Clone + 'static,
    {
        self.names
            .extend(collector.desc().iter().map(|d| d.fq_name.clone()));
        self.registry.register(Box::new(collector.clone()))?;
        Ok(collector)
    }
}

fn opts(name: &str, help: &str) -> Opts {
    Opts::new(name, help).namespace(PREFIX)
}

fn hopts(name: &str, help: &str, buckets: Vec<f64>) -> HistogramOpts {
    HistogramOpts::new(name, help)
        .namespace(PREFIX)
        .buckets(buckets)
}

impl Metrics {
    pub fn new() -> Result<Metrics, MetricsError> {
        let registry = Registry::new();
        let latency = vec![
            0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
        ];
        let age = vec![
            0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0, 3600.0, 21600.0,
            86400.0,
        ];
        let mut reg = Registrar::new(&registry);
        let m = Metrics {
            events_received: reg.add(IntCounterVec::new(
                opts("events_received_total", "Events decoded from deliveries (invalid included), by source and input kind (`log`: tenant logs; `event_stream`: Event Streams CloudEvents; `test`: Event Streams test events, acknowledged and never processed; `invalid`)."),
                &["source", "input"],
            )?)?,
            events_processed: reg.add(IntCounterVec::new(
                opts("events_processed_total", "Events that reached a final outcome."),
                &["source", "trigger", "outcome"],
            )?)?,
            event_processing_duration: reg.add(Histogram::with_opts(hopts(
                "event_processing_duration_seconds",
                "Time from receiving an event to its final outcome.",
                latency.clone(),
            ))?)?,
            event_age: reg.add(Histogram::with_opts(hopts(
                "event_age_seconds",
                "Age of an event when it reached its outcome: now minus the Auth0 `date`.",
                age,
            ))?)?,
            last_processed_event_timestamp: reg.add(Gauge::with_opts(opts(
                "last_processed_event_timestamp_seconds",
                "Unix time of the last event that reached an outcome.",
            ))?)?,
            inflight_events: reg.add(IntGauge::with_opts(opts(
                "inflight_events",
                "Events received but not yet at a final outcome.",
            ))?)?,
            role_assignments: reg.add(IntCounterVec::new(
                opts("role_assignments_total", "Roles given to users, by role name and kind of write (`tenant`: the user's roles; `organization`: a member's roles in an organization)."),
                &["role", "kind"],
            )?)?,
            policy_rules_undecided: reg.add(IntCounterVec::new(
                opts("policy_rules_undecided_total", "Rules not applied to an event because a condition stayed undecided (the event lacks a login field no read can give, e.g. client_id), by rule and condition key."),
                &["rule", "key"],
            )?)?,
            client_metadata_unknown_roles: reg.add(IntCounter::with_opts(opts(
                "client_metadata_unknown_roles_total",
                "Roles an application's client_metadata named (assign_client_metadata) that are not roles in the tenant: nothing was added for them.",
            ))?)?,
            mgmt_requests: reg.add(IntCounterVec::new(
                opts("mgmt_api_requests_total", "Management API requests by operation and HTTP status (`error` for no response)."),
                &["operation", "status"],
            )?)?,
            mgmt_request_duration: reg.add(HistogramVec::new(
                hopts(
                    "mgmt_api_request_duration_seconds",
                    "Management API request latency.",
                    latency,
                ),
                &["operation"],
            )?)?,
            mgmt_retries: reg.add(IntCounterVec::new(
                opts("mgmt_api_retries_total", "Management API retries by operation and reason."),
                &["operation", "reason"],
            )?)?,
            mgmt_rate_limit_remaining: reg.add(IntGauge::with_opts(opts(
                "mgmt_api_rate_limit_remaining",
                "The tenant's x-ratelimit-remaining on the last response.",
            ))?)?,
            mgmt_client_quota_remaining: reg.add(IntGaugeVec::new(
                opts("mgmt_token_client_quota_remaining", "Tokens this application may still request in each bucket of its per-client quota (Auth0-Client-Quota-Limit on the last token answer; absent without a client quota)."),
                &["bucket"],
            )?)?,
            mgmt_failing: reg.add(IntGauge::with_opts(opts(
                "mgmt_api_failing",
                "1 while Management API calls are failing transiently and being retried.",
            ))?)?,
            mgmt_blocked: reg.add(IntGaugeVec::new(
                opts("mgmt_api_blocked", "1 while the tenant refuses the service itself, by reason (credentials, scope, transport, role_missing): events wait and intake is paused until it accepts again."),
                &["reason"],
            )?)?,
            mgmt_token_requests: reg.add(IntCounterVec::new(
                opts("mgmt_api_token_requests_total", "Token requests (client credentials) by outcome: issued, refused (400/401/403), transient (429, 5xx, no answer). Auth0 counts tokens against a monthly quota."),
                &["outcome"],
            )?)?,
            task_panics: reg.add(IntCounterVec::new(
                opts("task_panics_total", "Events whose processing panicked (a bug): they end `failed`, are not marked done, and are dead-lettered or redelivered."),
                &["source"],
            )?)?,
            rate_limiter_wait: reg.add(Histogram::with_opts(hopts(
                "rate_limiter_wait_seconds",
                "Time requests waited for the client-side rate limiter.",
                vec![0.0, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0],
            ))?)?,
            organization_rate_limiter_wait: reg.add(Histogram::with_opts(hopts(
                "organization_rate_limiter_wait_seconds",
                "Time organization member role writes waited for their own client-side limiter (`[auth0] organization_roles_per_minute`) and its 429 hold, before the tenant's.",
                vec![0.0, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0],
            ))?)?,
            mgmt_class_limit: reg.add(IntGaugeVec::new(
                opts("mgmt_api_rate_limit_limit", "The tenant's bucket size (x-ratelimit-limit) as last stated, by Auth0 limit class (role_writes, role_reads, user_reads, organization_member_roles, logs, token, other)."),
                &["class"],
            )?)?,
            mgmt_class_remaining: reg.add(IntGaugeVec::new(
                opts("mgmt_api_rate_limit_class_remaining", "The tenant's x-ratelimit-remaining on the last answer of each limit class."),
                &["class"],
            )?)?,
            mgmt_class_rate: reg.add(prometheus::GaugeVec::new(
                opts("mgmt_api_rate_limit_pace_per_second", "The pace the learning limiter sends a limit class at when its bucket is empty: min(ceiling, AIMD allowance, inferred refill) times the share."),
                &["class"],
            )?)?,
            mgmt_class_rate_limited: reg.add(IntCounterVec::new(
                opts("mgmt_api_rate_limited_total", "429 answers by Auth0 limit class (the token endpoint's included)."),
                &["class"],
            )?)?,
            mgmt_class_wait: reg.add(prometheus::CounterVec::new(
                opts("mgmt_api_rate_limit_wait_seconds_total", "Time calls spent waiting for their limit class (its pace and a 429's hold), summed over calls."),
                &["class"],
            )?)?,
            dedup_hits: reg.add(IntCounterVec::new(
                opts("dedup_hits_total", "Work skipped by dedup: `log_id` (redelivery) or `user_roles` (roles already given)."),
                &["kind"],
            )?)?,
            dedup_entries: reg.add(IntGauge::with_opts(opts(
                "dedup_entries",
                "Entries in the dedup caches.",
            ))?)?,
            kafka_consumer_lag: reg.add(IntGaugeVec::new(
                opts("kafka_consumer_lag", "High watermark minus committed position, for assigned partitions."),
                &["topic", "partition"],
            )?)?,
            kafka_assigned_partitions: reg.add(IntGauge::with_opts(opts(
                "kafka_assigned_partitions",
                "Partitions assigned to this consumer.",
            ))?)?,
            kafka_rebalances: reg.add(IntCounterVec::new(
                opts("kafka_rebalances_total", "Consumer-group rebalances by kind (assign, revoke, lost)."),
                &["kind"],
            )?)?,
            kafka_offset_commits: reg.add(IntCounterVec::new(
                opts("kafka_offset_commits_total", "Offset commits by result."),
                &["result"],
            )?)?,
            kafka_paused_partitions: reg.add(IntGauge::with_opts(opts(
                "kafka_paused_partitions",
                "Partitions paused for back-pressure.",
            ))?)?,
            dead_letters: reg.add(IntCounterVec::new(
                opts("dead_letters_total", "Events sent to the dead-letter topic (the dead-letter file for auth0_logs), by reason."),
                &["reason"],
            )?)?,
            ingest_requests: reg.add(IntCounterVec::new(
                opts("ingest_requests_total", "Log-stream deliveries received over HTTP, by response status."),
                &["status"],
            )?)?,
            ingest_records: reg.add(IntCounterVec::new(
                opts("ingest_records_total", "Records of HTTP deliveries by outcome: `produced` (bridge), `processed` (direct), `invalid`, `failed`, `unacknowledged`."),
                &["outcome"],
            )?)?,
            ingest_request_duration: reg.add(Histogram::with_opts(hopts(
                "ingest_request_duration_seconds",
                "Time from receiving a delivery to answering it.",
                vec![0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0],
            ))?)?,
            sqs_messages_received: reg.add(IntCounter::with_opts(opts(
                "sqs_messages_received_total",
                "SQS messages received (redeliveries included).",
            ))?)?,
            sqs_messages_deleted: reg.add(IntCounter::with_opts(opts(
                "sqs_messages_deleted_total",
                "SQS messages deleted after their events reached a final outcome.",
            ))?)?,
            sqs_visibility_extensions: reg.add(IntCounter::with_opts(opts(
                "sqs_visibility_extensions_total",
                "Visibility timeouts extended for messages still being processed.",
            ))?)?,
            sqs_messages_left: reg.add(IntCounterVec::new(
                opts("sqs_messages_left_total", "SQS messages deliberately not deleted, left for redelivery and the queue's redrive policy, by reason (invalid, failed)."),
                &["reason"],
            )?)?,
            sqs_inflight_messages: reg.add(IntGauge::with_opts(opts(
                "sqs_inflight_messages",
                "SQS messages received and not yet deleted or released.",
            ))?)?,
            build_info: reg.add(IntGaugeVec::new(
                opts("build_info", "Always 1; the version label tells the build."),
                &["version"],
            )?)?,
            backstop_recovered: reg.add(IntCounterVec::new(
                opts("backstop_recovered_total", "Eligible events the backstop read from the tenant's logs that the stream had not delivered (to this instance) in time, by trigger: the stream is losing events."),
                &["trigger"],
            )?)?,
            log_stream_active: reg.add(IntGaugeVec::new(
                opts("log_stream_active", "1 while the log stream (log_stream_id) is active, 0 while it is paused, suspended or cannot be read; by stream id."),
                &["stream"],
            )?)?,
            auth0_logs_lag: reg.add(prometheus::GaugeVec::new(
                opts("auth0_logs_lag_seconds", "How far the Logs API reader (reader: source, backstop) is behind: now minus the date of its checkpoint's log, 0 when the last read found nothing new."),
                &["reader"],
            )?)?,
            auth0_logs_retention_gaps: reg.add(IntCounterVec::new(
                opts("auth0_logs_retention_gaps_total", "Times a Logs API reader found its checkpoint older than the oldest log the tenant still keeps (retention): the logs in between are lost to it; run `reconcile`."),
                &["reader"],
            )?)?,
            auth0_logs_read_errors: reg.add(IntCounterVec::new(
                opts("auth0_logs_read_errors_total", "Logs API or log-stream reads that failed for good (a refused scope, a 404, an unexpected answer), by reader (source, backstop, health)."),
                &["reader"],
            )?)?,
            ledger_writes: reg.add(IntCounterVec::new(
                opts("ledger_writes_total", "Ledger transactions committed, by kind (grant, revocation, failure, clear, forget)."),
                &["kind"],
            )?)?,
            ledger_errors: reg.add(IntCounter::with_opts(opts(
                "ledger_errors_total",
                "Ledger statements that failed: outages and conflicts are retried (the events wait), refusals are not.",
            ))?)?,
            ledger_refused: reg.add(IntCounter::with_opts(opts(
                "ledger_refused_total",
                "Ledger statements the database refused for their data (a NUL, a value past a limit): the event fails, the service goes on.",
            ))?)?,
            ledger_unreachable: reg.add(IntGauge::with_opts(opts(
                "ledger_unreachable",
                "1 while the ledger's database fails: events wait, intake is paused, /readyz names it.",
            ))?)?,
            ledger_kept_off: reg.add(IntCounter::with_opts(opts(
                "ledger_roles_not_regranted_total",
                "Roles the policy gives that were not granted because the ledger shows this service granted them before (an admin's removal stands; another instance granted them).",
            ))?)?,
            helper_failures: reg.add(IntCounterVec::new(
                opts("helper_failures_total", "Failures of a helper task beside the source (helper: backstop, log_stream_watcher, auth0_logs), each logged and retried with backoff; /readyz says degraded meanwhile."),
                &["helper"],
            )?)?,
            library_errors: reg.add(IntCounterVec::new(
                opts("library_errors_total", "Errors a library reported (library: librdkafka, aws_sdk; kind: what failed, e.g. log, client_error, consume, receive), every one counted; the log shows the first of each kind and then at most one per 10 s."),
                &["library", "kind"],
            )?)?,
            helper_up: reg.add(IntGaugeVec::new(
                opts("helper_up", "1 while a helper task beside the source works, 0 from its failure until it works again (retried with backoff)."),
                &["helper"],
            )?)?,
            deliveries_held: reg.add(IntCounterVec::new(
                opts("deliveries_held_total", "Deliveries kept unacknowledged because their task was lost (a panic) and the source has no way to run or dead-letter them again (Kafka without dead_letter_topic): the partition's committed offset stays before it until a restart or rebalance redelivers it."),
                &["source"],
            )?)?,
            auth0_events_connections: reg.add(IntCounter::with_opts(opts(
                "auth0_events_connections_total",
                "Events API connections opened (auth0_events source): Auth0 closes them every few minutes, so this grows steadily.",
            ))?)?,
            auth0_events_reconnects: reg.add(IntCounterVec::new(
                opts("auth0_events_reconnects_total", "Events API connections that ended and were opened again, by reason (server_closed: normal cycling; broken: a transport error or the idle timeout; stream_error: an `event: error`)."),
                &["reason"],
            )?)?,
            auth0_events_gaps: reg.add(IntCounter::with_opts(opts(
                "auth0_events_gaps_total",
                "Times the Events API answered that the reader's offset expired (410): events since the last processed one may be lost to it; reading resumed by from_timestamp; run `reconcile`.",
            ))?)?,
            auth0_events_connection_limit_waits: reg.add(IntCounter::with_opts(opts(
                "auth0_events_connection_limit_waits_total",
                "Events API connections refused because the plan's concurrent connections are taken (another reader holds them); each is waited out and tried again.",
            ))?)?,
            auth0_events_pending: reg.add(IntGauge::with_opts(opts(
                "auth0_events_pending",
                "Events API messages received and not yet settled (events waiting for their verdict, markers behind them): the checkpoint stays before the first.",
            ))?)?,
            auth0_events_lag: reg.add(Gauge::with_opts(opts(
                "auth0_events_lag_seconds",
                "Now minus the time of the last event the Events API reader's checkpoint passed.",
            ))?)?,
            reader_lease_held: reg.add(IntGaugeVec::new(
                opts("reader_lease_held", "1 while this replica holds the reader's lease in the PostgreSQL ledger and reads (reader: auth0_events, auth0_logs, backstop), 0 while it stands by; across replicas, at most one has 1 per reader."),
                &["reader"],
            )?)?,
            reader_lease_lost: reg.add(IntCounterVec::new(
                opts("reader_lease_lost_total", "Times this replica lost a reader's lease while reading (a renewal failed, came too late or found another holder): it stopped at once and stands by."),
                &["reader"],
            )?)?,
            names: reg.names,
            registry,
        };
        m.build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        // Counters alerts take `increase()` of exist at 0 from the start: a series that first
        // appears at 1 shows no increase, and its first occurrence would never alert.
        for reason in ["invalid", "failed", "not_delivered"] {
            m.dead_letters.with_label_values(&[reason]);
        }
        for kind in ["grant", "revocation", "failure", "clear", "forget"] {
            m.ledger_writes.with_label_values(&[kind]);
        }
        Ok(m)
    }

    /// The text exposition format served on `/metrics`.
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        let encoder = TextEncoder::new();
        if let Err(err) = encoder.encode(&self.registry.gather(), &mut buffer) {
            tracing::warn!(error = %err, "metrics: encoding failed");
        }
        // The encoder writes UTF-8: taken as it is, not copied (lossily only if it were not).
        String::from_utf8(buffer)
            .unwrap_or_else(|invalid| String::from_utf8_lossy(invalid.as_bytes()).into_owned())
    }

    /// The full name of every metric family the service exports, sorted, whether or not it has
    /// samples yet (`gather()` leaves out labelled families without children).
    pub fn names(&self) -> Vec<String> {
        self.names.iter().cloned().collect()
    }
}
