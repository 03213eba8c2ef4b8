//! `doctor`: checks the tenant and the source before the service runs and prints a checklist,
//! each item with its fix. The tenant: the secret gives a token, the token's scopes cover what
//! the config needs, every policy role exists, the service's log stream exists, is active,
//! delivers the categories the policy needs and leaves the fields it reads in clear (streams of
//! other purposes are listed, not judged). The source: Kafka brokers, topics and group, the SQS
//! queue, the webhook token, the ledger. Exit 0 when the service can run (warnings allowed), 2
//! when something would stop it or make it miss users.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::check::required_scopes;
use super::EXIT_CONFIG;
use crate::config::{Config, SourceSettings};
use crate::metrics::Metrics;
use crate::mgmt::log_streams::{categories_for, fields_read, LogStream, AUTHORIZATION_KEY};
use crate::mgmt::{Auth0Settings, Blocked, ClientSettings, MgmtClient, MgmtError, RoleDirectory};
use crate::source::kafka::{consumer_config, KafkaSettings};
use crate::source::sqs::SqsSettings;

/// How long one tenant check may take, retries included.
const TENANT_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a Kafka metadata or group request may take.
const KAFKA_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the SQS queue may take to answer.
const SQS_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(clap::Args, Debug)]
pub struct DoctorArgs {
    /// The TOML config file.
    #[arg(long, short)]
    pub config: PathBuf,
    /// The name of the log stream this service consumes (default: `[auth0] log_stream`, else
    /// the name `setup log-stream` gives, `auth0-default-roles`).
    #[arg(long)]
    pub log_stream: Option<String>,
}

/// How an item of the checklist went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok,
    /// The service runs, but something deserves a look.
    Warn,
    /// The service would stop or miss users.
    Fail,
    /// Not checked (not configured, or an earlier failure makes it impossible).
    Skip,
}

impl Status {
    fn label(self) -> &'static str {
        match self {
            Status::Ok => "ok  ",
            Status::Warn => "warn",
            Status::Fail => "FAIL",
            Status::Skip => "skip",
        }
    }
}

/// One line of the checklist.
#[derive(Debug, Clone)]
pub struct Item {
    pub status: Status,
    pub text: String,
    pub fix: Option<String>,
}

/// The checklist.
#[derive(Debug, Default)]
pub struct Report {
    pub items: Vec<Item>,
}

impl Report {
    fn push(&mut self, status: Status, text: impl Into<String>, fix: Option<String>) {
        self.items.push(Item {
            status,
            text: text.into(),
            fix,
        });
    }
    fn ok(&mut self, text: impl Into<String>) {
        self.push(Status::Ok, text, None);
    }
    fn warn(&mut self, text: impl Into<String>, fix: impl Into<String>) {
        self.push(Status::Warn, text, Some(fix.into()));
    }
    fn fail(&mut self, text: impl Into<String>, fix: impl Into<String>) {
        self.push(Status::Fail, text, Some(fix.into()));
    }
    fn skip(&mut self, text: impl Into<String>) {
        self.push(Status::Skip, text, None);
    }

    fn count(&self, status: Status) -> usize {
        self.items.iter().filter(|i| i.status == status).count()
    }

    /// 0 when nothing failed, else 2.
    pub fn exit_code(&self) -> u8 {
        if self.count(Status::Fail) == 0 {
            0
        } else {
            EXIT_CONFIG
        }
    }

    /// The checklist as printed.
    pub fn render(&self) -> String {
        let mut text = String::new();
        for item in &self.items {
            let _ = writeln!(text, "{} {}", item.status.label(), item.text);
            if let Some(fix) = &item.fix {
                let _ = writeln!(text, "     fix: {fix}");
            }
        }
        let (fails, warns) = (self.count(Status::Fail), self.count(Status::Warn));
        if fails == 0 {
            let _ = writeln!(
                text,
                "result: the service can run ({warns} warning{})",
                if warns == 1 { "" } else { "s" }
            );
        } else {
            let _ = writeln!(
                text,
                "result: {fails} problem{} would stop the service or make it miss users ({warns} warning{})",
                if fails == 1 { "" } else { "s" },
                if warns == 1 { "" } else { "s" }
            );
        }
        text
    }
}

/// Runs `doctor`, printing the checklist to stdout; returns the exit status.
pub async fn run(args: DoctorArgs) -> u8 {
    let config = match Config::load(&args.config) {
        Ok(config) => config,
        Err(err) => {
            println!("FAIL config {}: {err}", args.config.display());
            eprintln!("error: {err}");
            return EXIT_CONFIG;
        }
    };
    let name = super::setup::stream_name(args.log_stream.as_deref(), &config);
    let report = diagnose(&config, &name).await;
    print!("{}", report.render());
    report.exit_code()
}

/// Every check, in order: the tenant, then the source.
pub async fn diagnose(config: &Config, stream_name: &str) -> Report {
    let mut report = Report::default();
    report.ok("config: valid");
    tenant(config, stream_name, &mut report).await;
    source(config, &mut report).await;
    ledger(config, &mut report).await;
    report
}

/// The grants ledger: opened as it is, read-only (no file created, no migration; `run`
/// creates and migrates it at start).
async fn ledger(config: &Config, report: &mut Report) {
    let Some(settings) = &config.ledger else {
        report.skip("ledger: no ledger configured");
        return;
    };
    if let Ok(crate::ledger::Target::Sqlite(path)) = settings.target() {
        if !path.exists() {
            report.warn(
                format!("ledger: no file at {} yet", path.display()),
                "`run` creates it at start; if one should be there, check [ledger] url",
            );
            return;
        }
    }
    match tokio::time::timeout(
        TENANT_TIMEOUT,
        crate::ledger::Ledger::open_existing(settings, &config.instance),
    )
    .await
    {
        Ok(Ok(ledger)) => {
            report.ok(format!(
                "ledger: {} answers (opened read-only: `run` migrates it at start)",
                ledger.describe()
            ));
            deletions(&ledger, report).await;
        }
        Ok(Err(err)) if err.is_config() => report.fail(
            format!("ledger: {}", crate::exit::cause_chain(&err)),
            "fix [ledger] url (sqlite:///ABSOLUTE/PATH in an existing folder, or postgres://USER@HOST:PORT/DATABASE)",
        ),
        Ok(Err(err)) => report.fail(
            format!("ledger: {}", crate::exit::cause_chain(&err)),
            "start the database or fix [ledger] url / LEDGER_URL (host, port, database, user; the password from LEDGER_URL or PGPASSWORD)",
        ),
        Err(_) => report.fail(
            format!(
                "ledger: {} did not answer within {} s",
                settings.describe(),
                TENANT_TIMEOUT.as_secs()
            ),
            "start the database or fix [ledger] url / LEDGER_URL",
        ),
    }
}

/// Whether users' deletions reach the service: without them a deleted user's grants stay in
/// the ledger (harmless: a re-created account is recognized by its own signup, or by its
/// `created_at` at its first login), and their rows are not erased.
async fn deletions(ledger: &crate::ledger::Ledger, report: &mut Report) {
    match ledger.load_checkpoint(crate::ledger::DELETIONS_SEEN).await {
        Ok(Some(at)) => {
            let when = at
                .parse::<i64>()
                .map(super::explain::report::time_text)
                .unwrap_or(at);
            report.ok(format!(
                "ledger: users' deletions reach the service (the last at {when})"
            ));
        }
        Ok(None) => report.warn(
            "ledger: no user's deletion has reached the service yet (Dashboard and Management API deletions are logged as `sapi`, naming the admin, not the user): deleted users' rows stay in the ledger; a user re-created with the same id is still recognized, by its new signup or its account's created_at",
            "to erase deleted users' rows at once, send Event Streams' user.deleted to the service (docs/event-streams.md, docs/ledger.md)",
        ),
        Err(err) => report.warn(
            format!(
                "ledger: cannot tell whether deletions arrive: {}",
                crate::exit::cause_chain(&err)
            ),
            "check the ledger's database",
        ),
    }
}

async fn timed<T>(
    call: impl std::future::Future<Output = Result<T, MgmtError>>,
) -> Result<T, String> {
    match tokio::time::timeout(TENANT_TIMEOUT, call).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(err)) => Err(err.to_string()),
        Err(_) => Err(format!(
            "the tenant did not answer within {} s",
            TENANT_TIMEOUT.as_secs()
        )),
    }
}

async fn tenant(config: &Config, stream_name: &str, report: &mut Report) {
    let Some(auth0) = &config.auth0 else {
        report.fail(
            "auth0: no [auth0] section",
            "add [auth0] with domain and client_id (only `replay --offline` runs without it)",
        );
        return;
    };
    let secret = match auth0.client_secret() {
        Ok(secret) => secret,
        Err(err) => {
            report.fail(
                format!("auth0: no client secret: {err}"),
                "set AUTH0_CLIENT_SECRET or auth0.client_secret_file",
            );
            return;
        }
    };
    let metrics = match Metrics::new() {
        Ok(metrics) => Arc::new(metrics),
        Err(err) => {
            report.fail(format!("internal: metrics: {err}"), "report this");
            return;
        }
    };
    let client = match MgmtClient::new(
        ClientSettings::from_config(auth0, secret),
        Arc::clone(&metrics),
    ) {
        Ok(client) => client,
        Err(err) => {
            report.fail(format!("auth0: {err}"), "report this");
            return;
        }
    };
    if let Err(err) = timed(client.ensure_token()).await {
        report.fail(
            format!("auth0: the secret does not give a token: {err}"),
            Blocked::Credentials.advice(),
        );
        report.skip("auth0: scopes, roles and log streams not checked (no token)");
        return;
    }
    report.ok(format!(
        "auth0: the client secret works (a token for {} was issued)",
        auth0.audience()
    ));
    client_quota(&metrics, report);
    let granted = scopes(config, auth0, &client, report).await;
    roles(config, &client, report).await;
    log_streams(config, &client, granted.as_deref(), stream_name, report).await;
}

/// Checks the token's scopes against what the config needs; returns them when listed.
async fn scopes(
    config: &Config,
    auth0: &Auth0Settings,
    client: &MgmtClient,
    report: &mut Report,
) -> Option<Vec<String>> {
    let needed = required_scopes(config, auth0.read_user_roles, auth0.count_group_roles);
    let granted = match timed(client.granted_scopes()).await {
        Ok(Some(granted)) => granted,
        Ok(None) => {
            report.warn(
                "auth0: the token response does not list its scopes: cannot tell whether they cover this config",
                format!("make sure the application is granted: {}", needed.join(" ")),
            );
            return None;
        }
        Err(err) => {
            report.fail(
                format!("auth0: cannot read the token's scopes: {err}"),
                Blocked::Credentials.advice(),
            );
            return None;
        }
    };
    let has = |s: &str| granted.iter().any(|g| g == s);
    let mut missing: Vec<&str> = needed.iter().copied().filter(|s| !has(s)).collect();
    // Auth0 accepts the broader update:users (per user) and update:roles (bulk) for the writes.
    if missing.contains(&"create:role_members") && has("update:users") && has("update:roles") {
        missing.retain(|s| *s != "create:role_members");
        report.warn(
            "auth0: create:role_members is not granted; the broader update:users and update:roles stand in for it",
            "grant create:role_members and revoke update:users (it can rewrite any user's email and password)",
        );
    }
    if missing.is_empty() {
        report.ok(format!(
            "auth0: the token's scopes cover this config ({})",
            needed.join(" ")
        ));
    } else {
        report.fail(
            format!(
                "auth0: the token lacks scopes this config needs: {}",
                missing.join(" ")
            ),
            format!(
                "grant {} to the application: Dashboard → Applications → APIs → Auth0 Management API → Machine To Machine Applications",
                missing.join(" ")
            ),
        );
    }
    Some(granted)
}

async fn roles(config: &Config, client: &MgmtClient, report: &mut Report) {
    let names = config.policy.role_names();
    if names.is_empty() {
        report.skip("policy roles: the policy assigns no role by name");
        return;
    }
    let listed: Vec<String> = names.iter().cloned().collect();
    match tokio::time::timeout(TENANT_TIMEOUT, RoleDirectory::resolve(client, names)).await {
        Ok(Ok(_)) => report.ok(format!(
            "policy roles exist in the tenant: {}",
            listed.join(", ")
        )),
        Ok(Err(MgmtError::MissingRoles(missing))) => report.fail(
            format!(
                "policy roles missing in the tenant: {}",
                missing.join(", ")
            ),
            "create them (Dashboard → User Management → Roles; the name must match exactly) or remove them from [policy]",
        ),
        Ok(Err(MgmtError::AmbiguousRoles(names))) => report.fail(
            format!("policy roles match several tenant roles: {}", names.join("; ")),
            "rename all but one of them in the tenant (Dashboard → User Management → Roles), or name an organization's role as org_ID/NAME in [policy]",
        ),
        Ok(Err(err)) => report.fail(
            format!("policy roles: cannot list the tenant's roles: {err}"),
            "grant read:roles to the application",
        ),
        Err(_) => report.fail(
            format!(
                "policy roles: the tenant did not answer within {} s",
                TENANT_TIMEOUT.as_secs()
            ),
            "check auth0.domain / auth0.base_url and the network",
        ),
    }
}

async fn log_streams(
    config: &Config,
    client: &MgmtClient,
    granted: Option<&[String]>,
    name: &str,
    report: &mut Report,
) {
    if granted.is_some_and(|g| !g.iter().any(|s| s == "read:log_streams")) {
        report.warn(
            "log streams: not checked (the application lacks read:log_streams)",
            "grant read:log_streams (`doctor`, `setup` and a `log_stream_id` watch use it), or check the stream in Dashboard → Monitoring → Streams",
        );
        return;
    }
    let streams = match timed(client.list_log_streams()).await {
        Ok(streams) => streams,
        Err(err) => {
            report.warn(
                format!("log streams: not checked: {err}"),
                "grant read:log_streams (`doctor`, `setup` and a `log_stream_id` watch use it), or check the stream in Dashboard → Monitoring → Streams",
            );
            return;
        }
    };
    let (ours, others): (Vec<&LogStream>, Vec<&LogStream>) =
        streams.iter().partition(|s| s.name == name);
    match ours.as_slice() {
        [] => report.fail(
            format!("log stream \"{name}\": no stream of that name in the tenant"),
            "create it with `setup log-stream --config FILE --url URL` (or `--eventbridge`), or pass --log-stream with the name of the stream this service consumes",
        ),
        streams => {
            for stream in streams {
                judge(config, stream, report);
            }
        }
    }
    if !others.is_empty() {
        let names: Vec<String> = others
            .iter()
            .map(|s| format!("\"{}\" ({}, {})", s.name, s.kind, s.status))
            .collect();
        report.skip(format!(
            "log streams of other purposes, not judged: {}",
            names.join(", ")
        ));
    }
}

/// The per-client token quota the token answer showed (`Auth0-Client-Quota-Limit`), if any:
/// Management API tokens count toward no tenant quota, but a client quota counts them.
fn client_quota(metrics: &Metrics, report: &mut Report) {
    use prometheus::core::Collector;
    let buckets: Vec<(String, i64)> = metrics
        .mgmt_client_quota_remaining
        .collect()
        .into_iter()
        .flat_map(|f| f.get_metric().to_vec())
        .map(|m| {
            let bucket = m
                .get_label()
                .iter()
                .find(|l| l.name() == "bucket")
                .map(|l| l.value().to_owned())
                .unwrap_or_default();
            (bucket, m.get_gauge().get_value() as i64)
        })
        .collect();
    if buckets.is_empty() {
        return;
    }
    let text: Vec<String> = buckets
        .iter()
        .map(|(b, r)| format!("{b}: {r} left"))
        .collect();
    if buckets.iter().any(|(_, r)| *r == 0) {
        report.fail(
            format!(
                "auth0: the application's client token quota is used up ({})",
                text.join(", ")
            ),
            crate::mgmt::client_quota::ADVICE,
        );
    } else {
        report.ok(format!(
            "auth0: the application's client token quota: {}",
            text.join(", ")
        ));
    }
}

/// The checks of the service's own stream.
fn judge(config: &Config, stream: &LogStream, report: &mut Report) {
    let label = format!(
        "log stream \"{}\" ({}, {})",
        stream.name, stream.id, stream.kind
    );
    if stream.is_priority {
        // Its filters are forced to security and changes to them are ignored: nothing else
        // said of this stream could be fixed in place.
        report.fail(
            format!("{label} is a prioritized stream (isPriority): Auth0 forces its filters to security events only and ignores filter changes, so it never delivers ss, s or sv"),
            "create a normal stream for this service: delete this one (Dashboard → Monitoring → Streams) and run `setup log-stream` (which creates streams without isPriority), or give it another name and pass --log-stream",
        );
        return;
    }
    let mut fine = true;
    if stream.status != "active" {
        fine = false;
        let why = if stream.status == "suspended" {
            "Auth0 suspended it after failed deliveries"
        } else {
            "someone paused it"
        };
        report.fail(
            format!("{label} is {} ({why}): no events reach the service", stream.status),
            "fix what made deliveries fail (is `ingest` reachable at the stream's URL?), then resume it: Dashboard → Monitoring → Streams → the stream → Resume, or run `setup log-stream` again",
        );
    }
    let needed = categories_for(&config.policy);
    let missing = stream.missing_categories(&needed);
    if !missing.is_empty() {
        fine = false;
        report.fail(
            format!(
                "{label} does not deliver the categories the policy's triggers need: {}",
                missing.join(", ")
            ),
            "add these category filters (Dashboard → Monitoring → Streams → the stream → Settings → Filter by event category), or run `setup log-stream` again",
        );
    }
    let obscured = stream.obscured_fields(&fields_read(&config.policy));
    if !obscured.is_empty() {
        fine = false;
        let names: Vec<String> = obscured.iter().map(|(f, m)| format!("{f} ({m})")).collect();
        report.warn(
            format!(
                "{label} obscures fields the policy's email_domain reads: {}; every such event costs a profile read (read:users)",
                names.join(", ")
            ),
            "stop masking/hashing them (the stream's PII settings), or run `setup log-stream` again",
        );
    }
    if stream.kind == "http" {
        if let (Some(ingest), Some(sent)) = (&config.ingest, stream.sink_str(AUTHORIZATION_KEY)) {
            if let Ok(expected) = ingest.token() {
                if sent != expected.expose() {
                    fine = false;
                    report.fail(
                        format!("{label} sends an Authorization token that `ingest` does not expect: every delivery is refused"),
                        "set the stream's Authorization token to the value of AUTH0_WEBHOOK_TOKEN (or ingest.token_file), or run `setup log-stream` again",
                    );
                }
            }
        }
    }
    if fine {
        let filters = if stream.filters.is_empty() {
            "every category (no filters: consider `setup log-stream` to send only what the policy needs)".to_owned()
        } else {
            stream
                .categories()
                .into_iter()
                .collect::<Vec<_>>()
                .join(", ")
        };
        report.ok(format!("{label} is active and delivers {filters}"));
    }
}

async fn source(config: &Config, report: &mut Report) {
    match &config.source {
        Some(SourceSettings::Kafka(kafka)) => {
            if let Err(err) = kafka.sasl_password() {
                report.fail(
                    format!("kafka: {err}"),
                    "set KAFKA_SASL_PASSWORD or make kafka.sasl_password_file readable by the service",
                );
            }
            let settings = kafka.clone();
            match tokio::task::spawn_blocking(move || kafka_checks(&settings)).await {
                Ok(items) => report.items.extend(items),
                Err(err) => report.fail(format!("kafka: the check failed: {err}"), "report this"),
            }
        }
        Some(SourceSettings::Sqs(sqs)) => sqs_check(sqs, report).await,
        Some(SourceSettings::Auth0Logs(logs)) => report.ok(format!(
            "source: the tenant's Logs API (checkpoint {}; needs read:logs)",
            logs.checkpoint_file.display()
        )),
        Some(SourceSettings::Auth0Events(events)) => report.ok(events.doctor_line()),
        None if config.ingest.is_none() => report.fail(
            "source: no [source] and no [ingest]: `run` has nothing to consume",
            "add [source] with [kafka] or [sqs], or [ingest] for the webhook",
        ),
        None => report.skip("source: no [source] (`ingest` alone receives the events)"),
    }
    if let Some(ingest) = &config.ingest {
        match ingest.token() {
            Ok(_) => report.ok(format!(
                "ingest: the webhook token is set (for http://{}{})",
                ingest.listen, ingest.path
            )),
            Err(err) => report.fail(
                format!("ingest: {err}"),
                "set AUTH0_WEBHOOK_TOKEN (or ingest.token_file) to the Authorization token of the log stream",
            ),
        }
    }
}

/// Brokers, topics, dead-letter topic and group (blocking librdkafka calls).
fn kafka_checks(settings: &KafkaSettings) -> Vec<Item> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let mut report = Report::default();
    let brokers = settings.brokers.join(",");
    let mut config = consumer_config(settings);
    config.set("client.id", "auth0-default-roles-doctor");
    // librdkafka's own log stays below the checklist (an unreachable broker is one line of it).
    let consumer: BaseConsumer<crate::source::kafka::client_log::OneShotContext> =
        match config.create_with_context(crate::source::kafka::client_log::OneShotContext) {
            Ok(consumer) => consumer,
            Err(err) => {
                report.fail(
                    format!(
                        "kafka: cannot create a client: {}",
                        crate::source::kafka::redact(err)
                    ),
                    "fix [kafka.properties]",
                );
                return report.items;
            }
        };
    let mut topics = settings.topics.clone();
    if let Some(dlq) = &settings.dead_letter_topic {
        topics.push(dlq.clone());
    }
    for (i, topic) in topics.iter().enumerate() {
        let dead_letters = i >= settings.topics.len();
        let what = if dead_letters {
            "dead-letter topic"
        } else {
            "topic"
        };
        match consumer.fetch_metadata(Some(topic), KAFKA_TIMEOUT) {
            Err(err) => {
                report.fail(
                    format!(
                        "kafka: brokers {brokers} unreachable (no metadata within {} s): {err}",
                        KAFKA_TIMEOUT.as_secs()
                    ),
                    "check kafka.brokers, the network and the security settings in [kafka.properties]",
                );
                report.skip("kafka: topics and group not checked (brokers unreachable)");
                return report.items;
            }
            Ok(metadata) => match metadata.topics().iter().find(|t| t.name() == topic) {
                Some(t) if t.error().is_none() && !t.partitions().is_empty() => report.ok(format!(
                    "kafka: {what} {topic} has {} partition{} (brokers {brokers} reachable)",
                    t.partitions().len(),
                    if t.partitions().len() == 1 { "" } else { "s" }
                )),
                Some(t) => report.fail(
                    format!(
                        "kafka: {what} {topic}: {}",
                        t.error()
                            .map(|e| rdkafka::types::RDKafkaErrorCode::from(e).to_string())
                            .unwrap_or_else(|| "no partitions".to_owned())
                    ),
                    format!("create the topic {topic}, or grant this client access to it"),
                ),
                None => report.fail(
                    format!("kafka: {what} {topic} does not exist"),
                    format!("create the topic {topic}"),
                ),
            },
        }
    }
    match consumer.fetch_group_list(Some(&settings.group_id), KAFKA_TIMEOUT) {
        Ok(list) => {
            let state = list
                .groups()
                .iter()
                .find(|g| g.name() == settings.group_id)
                .map(|g| g.state().to_owned())
                .unwrap_or_default();
            report.ok(format!(
                "kafka: group {} reachable ({})",
                settings.group_id,
                if state.is_empty() || state == "Dead" {
                    "no members or offsets yet".to_owned()
                } else {
                    format!("state {state}")
                }
            ));
        }
        Err(err) => report.fail(
            format!("kafka: group {}: {err}", settings.group_id),
            "check that this client may describe and join the group (ACLs) and that the group coordinator is up",
        ),
    }
    report.items
}

async fn sqs_check(settings: &SqsSettings, report: &mut Report) {
    use aws_sdk_sqs::error::DisplayErrorContext;
    use aws_sdk_sqs::types::QueueAttributeName;
    let client = match crate::source::sqs::client(settings).await {
        Ok(client) => client,
        Err(err) => {
            report.fail(
                format!("sqs: cannot build the client: {err}"),
                "check the AWS configuration (region, credentials)",
            );
            return;
        }
    };
    let call = client
        .get_queue_attributes()
        .queue_url(&settings.queue_url)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
        .send();
    match tokio::time::timeout(SQS_TIMEOUT, call).await {
        Ok(Ok(out)) => {
            let waiting = out
                .attributes
                .as_ref()
                .and_then(|a| a.get(&QueueAttributeName::ApproximateNumberOfMessages))
                .cloned()
                .unwrap_or_else(|| "?".to_owned());
            report.ok(format!(
                "sqs: queue {} readable (ApproximateNumberOfMessages {waiting})",
                settings.queue_url
            ));
        }
        Ok(Err(err)) => report.fail(
            format!("sqs: queue {}: {}", settings.queue_url, DisplayErrorContext(&err)),
            "check sqs.queue_url, the credentials and that they allow sqs:GetQueueAttributes, sqs:ReceiveMessage, sqs:DeleteMessage and sqs:ChangeMessageVisibility",
        ),
        Err(_) => report.fail(
            format!(
                "sqs: queue {} did not answer within {} s",
                settings.queue_url,
                SQS_TIMEOUT.as_secs()
            ),
            "check the network path to SQS (AWS_ENDPOINT_URL_SQS, proxies)",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_code_is_2_only_with_a_failure() {
        let mut report = Report::default();
        report.ok("a");
        report.warn("b", "c");
        assert_eq!(report.exit_code(), 0);
        assert!(report
            .render()
            .contains("result: the service can run (1 warning)"));
        report.fail("d", "e");
        assert_eq!(report.exit_code(), 2);
        let text = report.render();
        assert!(text.contains("FAIL d\n     fix: e\n"), "{text}");
        assert!(text.contains("1 problem would stop"), "{text}");
    }
}
