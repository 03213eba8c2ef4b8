//! `setup log-stream`: creates the tenant's log stream this service consumes (a Custom Webhook
//! to `ingest`, or EventBridge for the SQS source) with exactly the category filters the
//! policy's triggers need, or brings the stream of that name in line, changing only what
//! differs. The webhook's Authorization token is never printed or logged.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Map, Value};

use super::{ExitStatus, EXIT_CONFIG};
use crate::config::{Config, ConfigError, Secret};
use crate::metrics::{Metrics, MetricsError};
use crate::mgmt::log_streams::{categories_for, fields_read, LogStream, AUTHORIZATION_KEY};
use crate::mgmt::{ClientSettings, MgmtClient, MgmtError};
use crate::source::webhook::WEBHOOK_TOKEN_ENV;

/// The stream's name when `--name` is not given; `doctor` looks for it by this name too.
pub const DEFAULT_STREAM_NAME: &str = "auth0-default-roles";

/// How long one Management API call may take, retries included, before giving up.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// `setup`: one-time changes to the tenant.
#[derive(clap::Args, Debug)]
pub struct SetupArgs {
    #[command(subcommand)]
    pub command: SetupCommand,
}

#[derive(clap::Subcommand, Debug)]
pub enum SetupCommand {
    /// Create (or bring in line) the log stream this service consumes, with exactly the event
    /// categories the policy needs. Needs read:log_streams, create:log_streams and
    /// update:log_streams (this command only; the service does not).
    LogStream(LogStreamArgs),
}

/// The log stream's name: the flag, else `[auth0] log_stream`, else [`DEFAULT_STREAM_NAME`].
pub fn stream_name(flag: Option<&str>, config: &Config) -> String {
    flag.map(str::to_owned)
        .or_else(|| config.auth0.as_ref().and_then(|a| a.log_stream.clone()))
        .unwrap_or_else(|| DEFAULT_STREAM_NAME.to_owned())
}

#[derive(clap::Args, Debug)]
pub struct LogStreamArgs {
    /// The TOML config file ([auth0] and [policy]).
    #[arg(long, short)]
    pub config: PathBuf,
    /// Where Auth0 posts the logs: the `ingest` receiver's public URL, path included.
    #[arg(
        long,
        required_unless_present = "eventbridge",
        conflicts_with = "eventbridge"
    )]
    pub url: Option<String>,
    /// The stream's name (default: `[auth0] log_stream`, else `auth0-default-roles`): a run
    /// with the same name finds the stream and changes only what differs.
    #[arg(long)]
    pub name: Option<String>,
    /// Print what would be created or changed; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// An Amazon EventBridge stream (for the SQS source) instead of a Custom Webhook.
    #[arg(long, requires_all = ["aws_account_id", "aws_region"])]
    pub eventbridge: bool,
    /// The AWS account that receives the partner event source (with --eventbridge).
    #[arg(long, requires = "eventbridge")]
    pub aws_account_id: Option<String>,
    /// The AWS region of the partner event source (with --eventbridge).
    #[arg(long, requires = "eventbridge")]
    pub aws_region: Option<String>,
    /// A new stream also delivers the recent past from this point in time (Auth0's
    /// `startFrom`, e.g. `2026-12-01T00:00:00Z`); ignored for an existing stream.
    #[arg(long)]
    pub start_from: Option<String>,
}

/// Why a URL does not parse (`url::ParseError`, through reqwest's re-export of `Url`).
type UrlParseError = <reqwest::Url as std::str::FromStr>::Err;

/// Why `setup` did not finish: each cause kept as its source, for the reporter at the edge.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// The configuration file, a section this command needs, or a secret it names.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Flags that do not go together or lack their companion.
    #[error("{0}")]
    Usage(&'static str),
    #[error("--url {url} is not a URL")]
    Url {
        url: String,
        #[source]
        source: UrlParseError,
    },
    #[error("--url {0}: Auth0 posts to an https:// URL")]
    UrlScheme(String),
    #[error(
        "no webhook token: set {WEBHOOK_TOKEN_ENV} to the Authorization value `ingest` expects"
    )]
    NoWebhookToken,
    #[error("the policy has no events: no log category to stream")]
    NoCategories,
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    #[error(transparent)]
    Mgmt(#[from] MgmtError),
    #[error("the tenant did not answer within {} s (check auth0.domain / auth0.base_url and the network)", CALL_TIMEOUT.as_secs())]
    Timeout,
    #[error("{0}")]
    Conflict(String),
}

impl ExitStatus for SetupError {
    /// 2 for what the operator must fix (config, flags, credentials, scopes, a conflicting
    /// stream), 1 for anything else.
    fn exit_code(&self) -> u8 {
        match self {
            SetupError::Config(_)
            | SetupError::Usage(_)
            | SetupError::Url { .. }
            | SetupError::UrlScheme(_)
            | SetupError::NoWebhookToken
            | SetupError::NoCategories
            | SetupError::Conflict(_) => EXIT_CONFIG,
            SetupError::Mgmt(MgmtError::Auth(_)) => EXIT_CONFIG,
            SetupError::Mgmt(_) | SetupError::Metrics(_) | SetupError::Timeout => 1,
        }
    }
}

/// Where the stream delivers.
enum Sink {
    Http { endpoint: String, token: Secret },
    EventBridge { account_id: String, region: String },
}

/// The stream this service wants.
struct Desired {
    name: String,
    sink: Sink,
    categories: BTreeSet<&'static str>,
    /// PII fields the policy reads (must not be masked or hashed).
    read: Vec<&'static str>,
    /// `startFrom` of a new stream.
    start_from: Option<String>,
}

impl Desired {
    fn kind(&self) -> &'static str {
        match self.sink {
            Sink::Http { .. } => "http",
            Sink::EventBridge { .. } => "eventbridge",
        }
    }

    fn filters(&self) -> Value {
        Value::Array(
            self.categories
                .iter()
                .map(|c| json!({"type": "category", "name": c}))
                .collect(),
        )
    }

    /// The sink; with `reveal` false the token is `***`.
    fn sink(&self, reveal: bool) -> Value {
        match &self.sink {
            Sink::Http { endpoint, token } => json!({
                "httpEndpoint": endpoint,
                "httpContentType": "application/json",
                "httpContentFormat": "JSONLINES",
                AUTHORIZATION_KEY: if reveal { token.expose() } else { "***" },
            }),
            Sink::EventBridge { account_id, region } => json!({
                "awsAccountId": account_id,
                "awsRegion": region,
            }),
        }
    }

    /// The `POST` body; with `reveal` false, fit to print.
    fn creation_body(&self, reveal: bool) -> Value {
        let mut body = json!({
            "name": self.name,
            "type": self.kind(),
            "sink": self.sink(reveal),
            "filters": self.filters(),
        });
        if let Some(start) = &self.start_from {
            body["startFrom"] = json!(start);
        }
        body
    }

    /// What differs in `existing`: the `PATCH` body and one printable line per change.
    fn changes(
        &self,
        existing: &LogStream,
    ) -> Result<(Map<String, Value>, Vec<String>), SetupError> {
        if existing.is_priority {
            return Err(SetupError::Conflict(format!(
                "the log stream \"{}\" ({}) is a prioritized stream (isPriority): Auth0 keeps its filters at security events only and ignores changes, so it never delivers ss, s or sv; create a normal stream: delete it and run setup again, or pass another --name",
                existing.name, existing.id
            )));
        }
        if existing.kind != self.kind() {
            return Err(SetupError::Conflict(format!(
                "the log stream \"{}\" ({}) is of type {}, not {}: the type cannot be changed; delete it or pass another --name",
                existing.name, existing.id, existing.kind, self.kind()
            )));
        }
        let mut patch = Map::new();
        let mut lines = Vec::new();
        if existing.status != "active" {
            patch.insert("status".to_owned(), json!("active"));
            lines.push(format!("status: {} → active", existing.status));
        }
        let has: BTreeSet<&str> = existing.categories();
        let want: BTreeSet<&str> = self.categories.iter().copied().collect();
        if has != want || existing.filters.len() != want.len() {
            patch.insert("filters".to_owned(), self.filters());
            let show = |set: &BTreeSet<&str>| {
                if set.is_empty() {
                    "(none: every category)".to_owned()
                } else {
                    set.iter().copied().collect::<Vec<_>>().join(", ")
                }
            };
            lines.push(format!("filters: {} → {}", show(&has), show(&want)));
        }
        let mut sink = Map::new();
        match &self.sink {
            Sink::Http { endpoint, token } => {
                let wanted = [
                    ("httpEndpoint", endpoint.as_str()),
                    ("httpContentType", "application/json"),
                    ("httpContentFormat", "JSONLINES"),
                ];
                for (key, value) in wanted {
                    let now = existing.sink_str(key);
                    if now != Some(value) {
                        sink.insert(key.to_owned(), json!(value));
                        lines.push(format!("sink.{key}: {} → {value}", now.unwrap_or("(none)")));
                    }
                }
                if existing.sink_str(AUTHORIZATION_KEY) != Some(token.expose()) {
                    sink.insert(AUTHORIZATION_KEY.to_owned(), json!(token.expose()));
                    lines.push(format!(
                        "sink.{AUTHORIZATION_KEY}: replaced by the token of {WEBHOOK_TOKEN_ENV} (not shown)"
                    ));
                }
            }
            Sink::EventBridge { account_id, region } => {
                for (key, value) in [("awsAccountId", account_id), ("awsRegion", region)] {
                    if existing.sink_str(key) != Some(value.as_str()) {
                        return Err(SetupError::Conflict(format!(
                            "the log stream \"{}\" ({}) has {key} {}, not {value}: Auth0 does not change it; delete the stream or pass another --name",
                            existing.name,
                            existing.id,
                            existing.sink_str(key).unwrap_or("(none)")
                        )));
                    }
                }
            }
        }
        if !sink.is_empty() {
            patch.insert("sink".to_owned(), Value::Object(sink));
        }
        let obscured = existing.obscured_fields(&self.read);
        if let Some(pii) = &existing.pii_config {
            if !obscured.is_empty() {
                let kept: Vec<&String> = pii
                    .log_fields
                    .iter()
                    .filter(|f| !self.read.contains(&f.as_str()))
                    .collect();
                let value = if kept.is_empty() {
                    Value::Null
                } else {
                    json!({"log_fields": kept, "method": pii.method.clone().unwrap_or_else(|| "mask".to_owned())})
                };
                patch.insert("pii_config".to_owned(), value);
                let names: Vec<String> =
                    obscured.iter().map(|(f, m)| format!("{f} ({m})")).collect();
                lines.push(format!(
                    "pii_config: no longer obscures {} (the policy's email_domain reads it)",
                    names.join(", ")
                ));
            }
        }
        Ok((patch, lines))
    }
}

/// Runs a `setup` subcommand, printing to stdout; returns the exit status. `token` is
/// `AUTH0_WEBHOOK_TOKEN` as the binary's edge read it: the token for a config without
/// `[ingest]` (one with it resolves its own at load).
pub async fn run(args: SetupArgs, token: Option<Secret>) -> u8 {
    let SetupCommand::LogStream(args) = args.command;
    let mut out = String::new();
    let result = log_stream(&args, token, &mut out).await;
    print!("{out}");
    super::exit_status(result.map(|()| 0))
}

async fn timed<T>(
    call: impl std::future::Future<Output = Result<T, MgmtError>>,
) -> Result<T, SetupError> {
    match tokio::time::timeout(CALL_TIMEOUT, call).await {
        Ok(result) => result.map_err(SetupError::from),
        Err(_) => Err(SetupError::Timeout),
    }
}

/// The webhook token: `[ingest]`'s (its env variable or file, resolved at load) when the
/// config has one, else `from_env` (`AUTH0_WEBHOOK_TOKEN`).
fn webhook_token(config: &Config, from_env: Option<Secret>) -> Result<Secret, SetupError> {
    if let Some(ingest) = &config.ingest {
        return Ok(ingest.token()?);
    }
    from_env.ok_or(SetupError::NoWebhookToken)
}

/// `setup log-stream`: finds the stream by name, then creates it or changes what differs.
pub async fn log_stream(
    args: &LogStreamArgs,
    env_token: Option<Secret>,
    out: &mut String,
) -> Result<(), SetupError> {
    let config = Config::load(&args.config)?;
    let auth0 = config.require_auth0()?;
    let secret = auth0.client_secret()?;
    let sink = if args.eventbridge {
        match (&args.aws_account_id, &args.aws_region) {
            (Some(account_id), Some(region)) => Sink::EventBridge {
                account_id: account_id.clone(),
                region: region.clone(),
            },
            _ => {
                return Err(SetupError::Usage(
                    "--eventbridge needs --aws-account-id and --aws-region",
                ))
            }
        }
    } else {
        let Some(url) = args.url.clone() else {
            return Err(SetupError::Usage(
                "--url is required (the ingest receiver's public URL)",
            ));
        };
        let parsed = match reqwest::Url::parse(&url) {
            Ok(parsed) => parsed,
            Err(source) => return Err(SetupError::Url { url, source }),
        };
        if !matches!(parsed.scheme(), "https" | "http") {
            return Err(SetupError::UrlScheme(url));
        }
        Sink::Http {
            endpoint: url,
            token: webhook_token(&config, env_token)?,
        }
    };
    let desired = Desired {
        name: stream_name(args.name.as_deref(), &config),
        sink,
        categories: categories_for(&config.policy),
        read: fields_read(&config.policy),
        start_from: args.start_from.clone(),
    };
    if desired.categories.is_empty() {
        return Err(SetupError::NoCategories);
    }
    let metrics = Arc::new(Metrics::new()?);
    let client = MgmtClient::new(ClientSettings::from_config(auth0, secret), metrics)?;
    let streams = timed(client.list_log_streams()).await?;
    let mut named = streams.iter().filter(|s| s.name == desired.name);
    let existing = named.next();
    if let Some(other) = named.next() {
        return Err(SetupError::Conflict(format!(
            "several log streams are named \"{}\" ({} and {}): delete the extra ones or pass another --name",
            desired.name,
            existing.map(|s| s.id.as_str()).unwrap_or("?"),
            other.id
        )));
    }
    let categories: Vec<&str> = desired.categories.iter().copied().collect();
    match existing {
        None if args.dry_run => {
            let _ = writeln!(
                out,
                "dry run: would create the log stream \"{}\" (POST /api/v2/log-streams):",
                desired.name
            );
            let body =
                serde_json::to_string_pretty(&desired.creation_body(false)).unwrap_or_default();
            let _ = writeln!(out, "{body}");
        }
        None => {
            let created = timed(client.create_log_stream(&desired.creation_body(true))).await?;
            tracing::info!(id = %created.id, name = %created.name, "log stream created");
            let _ = writeln!(
                out,
                "created the log stream \"{}\" ({}), type {}, status {}, categories {}",
                created.name,
                created.id,
                created.kind,
                created.status,
                categories.join(", ")
            );
            describe_sink(&desired, &created, out);
        }
        Some(stream) => {
            let (patch, lines) = desired.changes(stream)?;
            if lines.is_empty() {
                let _ = writeln!(
                    out,
                    "the log stream \"{}\" ({}) is as it should be: type {}, status {}, categories {}",
                    stream.name,
                    stream.id,
                    stream.kind,
                    stream.status,
                    categories.join(", ")
                );
                return Ok(());
            }
            let verb = if args.dry_run {
                "dry run: would change"
            } else {
                "changed"
            };
            if !args.dry_run {
                timed(client.update_log_stream(&stream.id, &Value::Object(patch))).await?;
                tracing::info!(id = %stream.id, changes = lines.len(), "log stream updated");
            }
            let _ = writeln!(
                out,
                "{verb} the log stream \"{}\" ({}):",
                stream.name, stream.id
            );
            for line in lines {
                let _ = writeln!(out, "  {line}");
            }
            if !args.dry_run {
                // What the tenant really kept (it may answer 200 and ignore a change).
                let streams = timed(client.list_log_streams()).await?;
                let kept = streams.iter().find(|s| s.id == stream.id);
                let left = match kept {
                    Some(kept) => desired.changes(kept)?.1,
                    None => vec!["the stream is gone".to_owned()],
                };
                if !left.is_empty() {
                    return Err(SetupError::Conflict(format!(
                        "the tenant answered the change but did not keep it: {}; check the stream in Dashboard → Monitoring → Streams",
                        left.join("; ")
                    )));
                }
                let _ = writeln!(out, "  read back: the tenant kept every change");
            }
        }
    }
    Ok(())
}

fn describe_sink(desired: &Desired, created: &LogStream, out: &mut String) {
    match &desired.sink {
        Sink::Http { endpoint, .. } => {
            let _ = writeln!(
                out,
                "  posts JSON Lines to {endpoint} with the Authorization token of {WEBHOOK_TOKEN_ENV} (not shown)"
            );
        }
        Sink::EventBridge { account_id, region } => {
            let _ = writeln!(
                out,
                "  partner event source {} in account {account_id}, region {region}: associate it with an event bus and route it to the SQS queue",
                created.sink_str("awsPartnerEventSource").unwrap_or("(not given)")
            );
        }
    }
}
