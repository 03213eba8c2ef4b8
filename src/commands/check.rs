//! `check`: validates a config file and prints its readable form (the policy, the source, the
//! scopes it needs) before anything runs.

use std::fmt::Write as _;

use super::{ConfigArg, ExitStatus, LoadError};
use crate::config::{Config, IngestMode, SourceSettings};

/// Why `check` refused the configuration (exit 2).
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error(transparent)]
    Load(#[from] LoadError),
}

impl ExitStatus for CheckError {
    fn exit_code(&self) -> u8 {
        match self {
            CheckError::Load(err) => err.exit_code(),
        }
    }
}

/// Runs `check`: the readable form on stdout.
pub fn run(args: &ConfigArg) -> Result<u8, CheckError> {
    let config = args.load()?;
    print!("{}", describe(&config));
    Ok(0)
}

/// The scope `GET /api/v2/users/{id}/effective-roles` needs (`[auth0] count_group_roles`).
pub const EFFECTIVE_ROLES_SCOPE: &str = "read:user_effective_roles";

/// The Management API scopes a config needs, least privilege (see docs/fault-model.md).
pub fn required_scopes(
    config: &Config,
    read_user_roles: bool,
    count_group_roles: bool,
) -> Vec<&'static str> {
    let policy = &config.policy;
    let mut scopes = vec!["read:roles", "create:role_members"];
    let reads_users = policy.rules().iter().any(|r| {
        r.when.iter().chain(&r.unless).any(|c| {
            !matches!(
                c,
                crate::policy::Condition::Event(_) | crate::policy::Condition::HasRoles(_)
            ) && !c.login_only()
        })
    });
    // With a ledger, a write is preceded by a read of the user's roles (the ledger records only
    // what the write added) and a first login may read the profile (a re-created account).
    let reads_roles = read_user_roles || policy.uses_has_roles() || config.ledger.is_some();
    if reads_users || reads_roles {
        scopes.push("read:users");
    }
    if reads_roles {
        scopes.push("read:role_members");
    }
    // `count_group_roles`: the user's roles are read through `GET /users/{id}/effective-roles`
    // ("expected any of: read:user_effective_roles").
    if count_group_roles {
        scopes.push(EFFECTIVE_ROLES_SCOPE);
    }
    if policy.uses_client_metadata() {
        scopes.push("read:clients");
    }
    let readers = logs_readers(config);
    if !readers.is_empty() {
        scopes.push("read:logs");
    }
    if readers.iter().any(|r| r.log_stream_id.is_some()) {
        scopes.push("read:log_streams");
    }
    if policy.uses_organizations() {
        scopes.push(crate::reconcile::organizations::WRITE_SCOPE);
    }
    if matches!(config.source, Some(SourceSettings::Auth0Events(_))) {
        scopes.push(crate::source::auth0_events::SCOPE);
    }
    scopes
}

/// The Logs API readers of a config: the `auth0_logs` source and the backstop.
fn logs_readers(config: &Config) -> Vec<&crate::config::LogsSettings> {
    let mut readers = Vec::new();
    if let Some(SourceSettings::Auth0Logs(settings)) = &config.source {
        readers.push(settings);
    }
    if let Some(settings) = &config.backstop {
        readers.push(settings);
    }
    readers
}

/// What `check` says of a Logs API reader: where it starts or stands, how far behind, what
/// it costs.
fn describe_logs_reader(text: &mut String, label: &str, r: &crate::config::LogsSettings) {
    use crate::source::auth0_logs::{calls_per_hour, FileCheckpoint};
    let lag = if r.lag.is_zero() {
        String::new()
    } else {
        format!(
            ", {} s behind now, at most {} of the request rate",
            r.lag.as_secs_f64(),
            r.rate_share
        )
    };
    let _ = writeln!(
        text,
        "{label}: tenant Logs API, checkpoint {} (start {} when absent), pages of {}, polls every {} s when caught up{lag}; dead letters in {}.dead-letters.jsonl",
        r.checkpoint_file.display(),
        r.start.describe(),
        r.take,
        r.poll_interval.as_secs_f64(),
        r.checkpoint_file.display(),
    );
    match FileCheckpoint::peek(&r.checkpoint_file) {
        Ok(Some(checkpoint)) => {
            let age = checkpoint
                .date
                .as_deref()
                .and_then(|d| humantime::parse_rfc3339(d).ok())
                .and_then(|d| std::time::SystemTime::now().duration_since(d).ok())
                .map(|a| format!("{} s ago", a.as_secs()))
                .unwrap_or_else(|| "date unknown".to_owned());
            let _ = writeln!(
                text,
                "{label}: checkpoint at log_id {} (logged {age}: the lag while logs keep coming; the tenant keeps logs for its plan's retention only)",
                checkpoint.log_id
            );
        }
        Ok(None) => {
            let _ = writeln!(
                text,
                "{label}: no checkpoint yet (starts {})",
                r.start.describe()
            );
        }
        Err(err) => {
            let _ = writeln!(
                text,
                "{label}: checkpoint unreadable: {}",
                crate::exit::cause_chain(&err)
            );
        }
    }
    let estimates: Vec<String> = [1_000.0, 10_000.0, 100_000.0]
        .iter()
        .map(|v| {
            format!(
                "{v} events/h → {} calls/h",
                calls_per_hour(*v, r.take, r.poll_interval)
            )
        })
        .collect();
    let _ = writeln!(
        text,
        "{label}: estimated Logs API calls (one per {} tenant log events of any type, plus one poll per {} s): {}",
        r.take,
        r.poll_interval.as_secs_f64(),
        estimates.join("; ")
    );
    if let Some(id) = &r.log_stream_id {
        let _ = writeln!(
            text,
            "{label}: watches log stream {id} every {} s (log_stream_active)",
            r.log_stream_check.as_secs_f64()
        );
    }
}

/// The scopes `reconcile` needs: the users-export job and reading it (`read:users`), role
/// names and members (`read:roles`, `read:role_members`), the bulk writes.
pub const RECONCILE_SCOPES: [&str; 4] = [
    "read:roles",
    "create:role_members",
    "read:users",
    "read:role_members",
];

/// The scopes `setup log-stream` needs (that command only; `doctor` reads the streams with
/// `read:log_streams` when granted). The service itself only reads a stream's status, with
/// `log_stream_id` (`read:log_streams`, in [`required_scopes`]).
pub const SETUP_LOG_STREAM_SCOPES: [&str; 3] = [
    "read:log_streams",
    "create:log_streams",
    "update:log_streams",
];

/// A warning for each secret the loaded configuration lacks: not an error here (a deployment
/// may inject it at run time), an error for every command that sends it.
fn missing_secrets(config: &Config) -> Vec<String> {
    let mut missing = Vec::new();
    if let Some(Err(err)) = config.auth0.as_ref().map(|a| a.client_secret()) {
        missing.push(format!("{err}: `run`, `ingest` in direct mode, `doctor`, `setup`, `explain`, `reconcile` and `replay` (unless --offline) refuse to start without it"));
    }
    if let Some(Err(err)) = config.ingest.as_ref().map(|i| i.token()) {
        missing.push(format!("{err}: `ingest` refuses to start without it"));
    }
    if let Some(SourceSettings::Kafka(kafka)) = &config.source {
        if let Err(err) = kafka.sasl_password() {
            missing.push(format!(
                "{err}: `run` and the `ingest` bridge refuse to start without it"
            ));
        }
    }
    missing
}

/// The readable form of a valid config printed by `check`.
pub fn describe(config: &Config) -> String {
    let mut text = String::new();
    let _ = writeln!(text, "config OK");
    match &config.auth0 {
        Some(a) => {
            let _ = writeln!(
                text,
                "auth0: domain {} client_id {} via {} ({} requests/s, burst {})",
                a.domain, a.client_id, a.base_url, a.requests_per_second, a.burst
            );
            let secret = match a.client_secret() {
                Ok(_) => "available".to_owned(),
                Err(e) => format!("NOT available ({e})"),
            };
            let _ = writeln!(text, "auth0: client secret {secret}");
            let _ = writeln!(
                text,
                "auth0: scopes this config needs: {}",
                required_scopes(config, a.read_user_roles, a.count_group_roles).join(" ")
            );
            let needed = required_scopes(config, a.read_user_roles, a.count_group_roles);
            let more: Vec<&str> = RECONCILE_SCOPES
                .iter()
                .copied()
                .filter(|s| !needed.contains(s))
                .collect();
            if !more.is_empty() {
                let _ = writeln!(
                    text,
                    "auth0: `reconcile` also needs: {} (the users export and role members)",
                    more.join(" ")
                );
            }
            if config.policy.uses_organizations() {
                let _ = writeln!(
                    text,
                    "auth0: `reconcile` also needs: {} (organizations and their members with roles)",
                    crate::reconcile::organizations::READ_SCOPES.join(" ")
                );
                let _ = writeln!(
                    text,
                    "auth0: organization member role writes: {} per minute, burst {} (a bucket of their own at Auth0), then the tenant's limiter",
                    a.organization_roles_per_minute, a.organization_roles_burst
                );
            }
            let _ = writeln!(
                text,
                "auth0: `setup log-stream` also needs: {} (that command only; `doctor` checks the stream with read:log_streams)",
                SETUP_LOG_STREAM_SCOPES.join(" ")
            );
        }
        None => {
            let _ = writeln!(
                text,
                "auth0: no [auth0] section (only `replay --offline` can run)"
            );
        }
    }
    match &config.source {
        Some(SourceSettings::Kafka(k)) => {
            let _ = writeln!(
                text,
                "source: kafka topics {} group {} brokers {} (at most {} in flight, commit every {} ms{})",
                k.topics.join(","),
                k.group_id,
                k.brokers.join(","),
                k.max_inflight,
                k.commit_interval.as_millis(),
                k.dead_letter_topic
                    .as_ref()
                    .map(|t| format!(", dead letters to {t}"))
                    .unwrap_or_default()
            );
        }
        Some(SourceSettings::Sqs(q)) => {
            let _ = writeln!(
                text,
                "source: sqs queue {} ({} receive loops of up to {} messages, long polling {} s, visibility timeout {} s extended while processing, at most {} in flight)",
                q.queue_url,
                q.concurrency,
                q.max_messages,
                q.wait_time_seconds,
                q.visibility_timeout_seconds,
                q.max_inflight
            );
        }
        Some(SourceSettings::Auth0Logs(r)) => describe_logs_reader(&mut text, "source", r),
        Some(SourceSettings::Auth0Events(e)) => text.push_str(&e.describe()),
        None => {
            let _ = writeln!(text, "source: none (only `replay` can run)");
        }
    }
    if let Some(b) = &config.backstop {
        describe_logs_reader(&mut text, "backstop", b);
    }
    if let Some(i) = &config.ingest {
        let token = match i.token() {
            Ok(_) => "available".to_owned(),
            Err(e) => format!("NOT available ({e})"),
        };
        let _ = writeln!(
            text,
            "ingest: {} mode on http://{}{} (bodies up to {} bytes); webhook token {token}",
            match i.mode {
                IngestMode::Kafka => "kafka bridge",
                IngestMode::Direct => "direct",
            },
            i.listen,
            i.path,
            i.max_body_bytes
        );
    }
    if config.ingest.is_some() || matches!(config.source, Some(SourceSettings::Sqs(_))) {
        let _ = writeln!(
            text,
            "event streams: the Dashboard's test button (Event Streams -> your stream -> Test) sends a test event (a0purpose \"test\", a sample user); it is acknowledged and counted in events_received_total{{input=\"test\"}}, never processed: seeing that count rise verifies the path"
        );
    }
    let _ = writeln!(text, "metrics: {}", config.metrics_listen);
    match &config.ledger {
        Some(ledger) => {
            let _ = writeln!(
                text,
                "ledger: {} (policy fingerprint {})",
                ledger.describe(),
                config.policy_fingerprint
            );
            let reads_tenant = config.backstop.is_some()
                || matches!(
                    config.source,
                    Some(SourceSettings::Auth0Logs(_) | SourceSettings::Auth0Events(_))
                );
            if ledger.is_postgres() && reads_tenant {
                let _ = writeln!(
                    text,
                    "ledger: one active reader per tenant across replicas (a lease in the ledger, ttl {} s): the others stand by, ready, and take over within {} s of the reader's last renewal",
                    config.lease_ttl.as_secs_f64(),
                    crate::source::lease::takeover_bound(config.lease_ttl).as_secs_f64()
                );
            }
        }
        None => {
            let _ = writeln!(
                text,
                "ledger: none (grants are not remembered; `explain` needs [ledger] url)"
            );
        }
    }
    let events: Vec<&str> = config.policy.events().map(|e| e.as_str()).collect();
    let _ = writeln!(text, "policy: events {}", events.join(", "));
    if config
        .policy
        .handles(crate::event::Trigger::OrganizationMemberAdded)
    {
        let _ = writeln!(
            text,
            "policy: organization_member_added comes from Auth0 Event Streams' organization.member.added (to the webhook receiver or EventBridge; no log stream carries it): a user became a member (auto-membership, just-in-time, the Management API, an invitation); it names the organization, not the application"
        );
    }
    if config.policy.uses_organizations() {
        let _ = writeln!(
            text,
            "policy: assign_in_organization roles are given in the event's organization on organization_member_added and on a first_login through an organization (its log names organization_id); events that name no organization give none of them. A later first login through another organization gives none without a ledger"
        );
    }
    let roles: Vec<String> = config.policy.role_names().into_iter().collect();
    let _ = writeln!(text, "policy: roles {}", roles.join(", "));
    let _ = writeln!(
        text,
        "dedup: log ids for {} s, users' given roles for {} s, at most {} entries",
        config.dedup.ttl.as_secs(),
        config.dedup.user_roles_ttl.as_secs(),
        config.dedup.max_entries
    );
    for (i, rule) in config.policy.rules().iter().enumerate() {
        let _ = writeln!(text, "{}. {rule}", i + 1);
    }
    let login_only: Vec<&str> = config
        .policy
        .rules()
        .iter()
        .filter(|r| r.needs_login_context())
        .map(|r| r.name.as_str())
        .collect();
    if !login_only.is_empty() {
        let _ = writeln!(
            text,
            "note: Event Streams events (user.created, user.updated) carry no application or organization (organization.member.added carries only the organization): rules {} never fire on them (log-stream logins still trigger them)",
            login_only.join(", ")
        );
    }
    for (rule, why) in config.policy.skipped_for_existing_users() {
        let _ = writeln!(
            text,
            "reconcile: rule {rule} is not applied to existing users ({why})"
        );
    }
    let mut warnings = config.policy.warnings();
    warnings.extend(config.section_warnings());
    warnings.extend(missing_secrets(config));
    if let Some(auth0) = &config.auth0 {
        let domain = auth0.domain.trim_end_matches('.').to_ascii_lowercase();
        if !domain.ends_with(".auth0.com") {
            warnings.push(format!(
                "auth0.domain {} looks like a custom domain: the Management API audience must be the tenant's canonical domain (e.g. acme.eu.auth0.com), which tokens for a custom domain do not carry",
                auth0.domain
            ));
        }
    }
    for warning in warnings {
        let _ = writeln!(text, "warning: {warning}");
    }
    if config.policy.rules().is_empty() {
        let _ = writeln!(text, "policy: no rules (every event ends as no_rule)");
    }
    text
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::Config;

    /// `check` on an `auth0_events` source: the event types it will ask for, `read:events`
    /// among the scopes, and with a PostgreSQL ledger the lease and its takeover bound.
    #[test]
    fn check_names_the_events_api_types_and_its_scope() {
        let text = "[auth0]\ndomain = \"t.auth0.com\"\nclient_id = \"c\"\n\n[source]\ntype = \"auth0_events\"\n\n[auth0_events]\ncheckpoint_file = \"/tmp/e.checkpoint\"\n\n[policy]\nevents = [\"signup\", \"first_login\", \"email_verified\"]\n\n[[policy.rules]]\nname = \"all\"\nassign = [\"Viewer\"]\n";
        let config = Config::from_toml(text, Path::new("t.toml"), &|_| None)
            .unwrap_or_else(|e| panic!("{e}"));
        let described = super::describe(&config);
        assert!(
            described.contains("event types asked for: user.created, user.updated"),
            "{described}"
        );
        assert!(super::required_scopes(&config, false, false).contains(&"read:events"));
        assert!(
            !described.contains("lease"),
            "no lease without a ledger: {described}"
        );
        let shared = format!(
            "{text}\n[ledger]\nurl = \"postgres://svc@db.internal/roles\"\nlease_ttl_seconds = 9\n"
        );
        let config = Config::from_toml(&shared, Path::new("t.toml"), &|_| None)
            .unwrap_or_else(|e| panic!("{e}"));
        let described = super::describe(&config);
        assert!(
            described.contains(
                "one active reader per tenant across replicas (a lease in the ledger, ttl 9 s)"
            ) && described.contains("take over within 12 s"),
            "{described}"
        );
        let bad = format!("{text}\n[ledger]\nurl = \"postgres://svc@db.internal/roles\"\nlease_ttl_seconds = 0.5\n");
        let err = Config::from_toml(&bad, Path::new("t.toml"), &|_| None)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("ledger.lease_ttl_seconds"), "{err}");
    }
}
