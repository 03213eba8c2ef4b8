//! The application: [`App::build`] wires the configuration, metrics, health, the HTTP
//! endpoints, the pipeline and the source once, for `run`, `ingest`, `demo` and the tests;
//! [`App::run`] consumes until the [`Shutdown`] and drains.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::config::{
    self, Config, IngestMode, IngestSettings, KafkaSettings, SourceSettings, SqsSettings,
};
use crate::dedup::Dedup;
use crate::exit::{ExitStatus, EXIT_CONFIG};
use crate::ledger::lease::{holder_id, Lease, LeaseError};
use crate::ledger::{Ledger, LedgerError, LedgerLink, LedgerSettings};
use crate::metrics::{Metrics, MetricsError};
use crate::mgmt::{self, MgmtClient, MgmtError};
use crate::pipeline::{Mode, Pipeline, Processor, SourceKind};
use crate::server::{self, Health, Pending};
use crate::shutdown::Shutdown;
use crate::source::auth0_events::{checkpoint::EventsCheckpointFile, EventsReader};
use crate::source::auth0_logs::LogsApi;
use crate::source::auth0_logs::{
    self, CheckpointError, DeadLetterFile, FileCheckpoint, LogsReader, LogsSettings,
};
use crate::source::kafka::{self, KafkaRunError};
use crate::source::lease::{takeover_bound, ReaderLease};
use crate::source::ledger_checkpoint::LedgerCheckpoint;
use crate::source::sqs::{self, SqsRunError};
use crate::source::webhook::{self, IngestError};
use crate::supervise::{self, Helpers};

/// Why the service could not start or stopped abnormally. Each knows its exit status; each
/// keeps its cause as its `source`, for the reporter at the edge to print the whole chain.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration cannot work (exit 2).
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// The sections cannot work together for this command (exit 2).
    #[error(transparent)]
    Wiring(#[from] WiringError),
    /// The dead-letter topic cannot be written (exit 2).
    #[error(transparent)]
    DeadLetterTopic(#[from] kafka::DeadLetterTopicError),
    /// The SQS source has no region (exit 2).
    #[error(transparent)]
    Sqs(#[from] SqsRunError),
    /// The Management API refused the credentials or lacks the policy's roles (exit 2), or
    /// failed otherwise (exit 1).
    #[error(transparent)]
    Mgmt(MgmtError),
    #[error("cannot listen on {addr} for /metrics (set [metrics] listen): {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    #[error(transparent)]
    Kafka(#[from] KafkaRunError),
    #[error(transparent)]
    Ingest(#[from] IngestError),
    /// The tenant's Logs API checkpoint is held by another reader (exit 2), or cannot be
    /// read or written (exit 1).
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// The ledger's URL or place cannot work (exit 2), or its database did not answer at
    /// start (exit 1).
    #[error("{0}")]
    Ledger(#[from] LedgerError),
    /// A reader's lease cannot be set up in the ledger (exit 1).
    #[error(transparent)]
    Lease(#[from] LeaseError),
    /// A stop signal arrived while the tenant was still being reached (exit 0).
    #[error("stopped before the service started")]
    Stopped,
}

impl ExitStatus for StartError {
    fn exit_code(&self) -> u8 {
        match self {
            StartError::Config(_)
            | StartError::Wiring(_)
            | StartError::DeadLetterTopic(_)
            | StartError::Sqs(SqsRunError::NoRegion)
            | StartError::Checkpoint(CheckpointError::Locked { .. })
            | StartError::Mgmt(
                MgmtError::Auth(_) | MgmtError::MissingRoles(_) | MgmtError::AmbiguousRoles(_),
            ) => EXIT_CONFIG,
            StartError::Ledger(err) if err.is_config() => EXIT_CONFIG,
            StartError::Stopped => 0,
            _ => 1,
        }
    }
}

/// Sections that cannot work together for the command (exit 2).
#[derive(Debug, thiserror::Error)]
pub enum WiringError {
    #[error("`run` needs a source: add [source] type = \"kafka\" with a [kafka] section, type = \"sqs\" with an [sqs] section, type = \"auth0_logs\" with an [auth0_logs] section, or type = \"auth0_events\" with an [auth0_events] section (see config/example.toml)")]
    NoSource,
    #[error("`ingest` needs an [ingest] section (see config/example.toml)")]
    NoIngest,
    #[error("[backstop] needs [auth0]")]
    BackstopWithoutAuth0,
}

/// The long-running commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Consume the configured `[source]` (Kafka or SQS).
    Run,
    /// Receive the webhook stream (`[ingest]`): bridge into Kafka, or assign directly.
    Ingest,
}

/// What the application consumes.
enum Source {
    Kafka(KafkaSettings, Arc<Pipeline>),
    Sqs(SqsSettings, Arc<Pipeline>),
    /// The receiver's listener is bound at build: its address is known before it runs.
    Ingest(
        IngestSettings,
        Arc<webhook::IngestState>,
        tokio::net::TcpListener,
    ),
    Auth0Logs(Box<LogsReader>),
    Auth0Events(Box<EventsReader>),
}

/// A Logs API reader's checkpoint, locked: a second reader is a configuration error (exit 2).
fn open_checkpoint(
    settings: &LogsSettings,
) -> Result<(FileCheckpoint, DeadLetterFile), StartError> {
    let store = FileCheckpoint::open(&settings.checkpoint_file)?;
    let dead_letters = DeadLetterFile::new(store.dead_letter_path());
    Ok((store, dead_letters))
}

/// With a ledger: the reader `name`'s checkpoint as the ledger keeps it (`name` is also its
/// lease's). With a PostgreSQL ledger it is of record, under the lease that keeps the reader
/// active on one replica at a time, with its say on `/readyz`; with SQLite a copy (one host:
/// the checkpoint file's lock keeps one reader). `None` without a ledger.
fn reader_ledger(
    pipeline: &Pipeline,
    name: &str,
    reader: &'static str,
    config: &Config,
    metrics: &Arc<Metrics>,
    health: &Arc<Health>,
) -> Result<Option<LedgerCheckpoint>, StartError> {
    let Some(link) = pipeline.ledger() else {
        return Ok(None);
    };
    let checkpoint = LedgerCheckpoint::new(link.clone(), name, Arc::clone(metrics));
    let ledger = link.ledger();
    if !ledger.is_shared() {
        return Ok(Some(checkpoint));
    }
    let holder = holder_id(&config.instance);
    let lease = Lease::new(ledger, name, &holder, config.lease_ttl)?;
    tracing::info!(
        reader,
        lease = name,
        holder,
        ttl_seconds = config.lease_ttl.as_secs_f64(),
        takeover_within_seconds = takeover_bound(config.lease_ttl).as_secs_f64(),
        "one active reader across replicas: this replica reads only while it holds the lease in the ledger"
    );
    let lease = Arc::new(ReaderLease::new(lease, reader, Arc::clone(metrics)));
    health.add_probe(Arc::clone(&lease) as Arc<dyn server::ReadinessProbe>);
    Ok(Some(checkpoint.with_lease(lease)))
}

/// Watches the log stream's status every `log_stream_check` until `shutdown`, a supervised
/// helper: a read that fails (a refusal, an unknown id) is reported and tried again.
fn watch_stream(
    settings: &LogsSettings,
    client: &crate::mgmt::MgmtClient,
    metrics: &Arc<Metrics>,
    helpers: &Arc<Helpers>,
    shutdown: &Shutdown,
) {
    let Some(id) = &settings.log_stream_id else {
        return;
    };
    let api = Arc::new(LogsApi::auxiliary(client.clone(), 1.0));
    let status = helpers.status("log_stream_watcher", metrics);
    let (id, every, metrics, stop) = (
        id.clone(),
        settings.log_stream_check,
        Arc::clone(metrics),
        shutdown.clone(),
    );
    tokio::spawn(supervise::supervise(
        status.clone(),
        shutdown.clone(),
        move || {
            let watch = auth0_logs::watch_log_stream(
                Arc::clone(&api),
                id.clone(),
                every,
                Arc::clone(&metrics),
                status.clone(),
                stop.clone(),
            );
            async move {
                watch.await;
                Ok::<(), std::convert::Infallible>(())
            }
        },
    ));
}

/// A built application, ready to [`run`](App::run).
pub struct App {
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    metrics_addr: SocketAddr,
    shutdown: Shutdown,
    /// Stops the endpoints once the source drained (they keep answering while it drains).
    endpoints_stop: Shutdown,
    source: Source,
    /// The backstop reading the tenant's logs behind the source (`[backstop]`).
    backstop: Option<LogsReader>,
    /// The helper tasks beside the source (their say on `/readyz`).
    helpers: Arc<Helpers>,
}

impl App {
    /// Serves `/metrics`, `/healthz` and `/readyz`, reaches the tenant (unless the bridge needs
    /// none) and prepares the source. A `shutdown` while the tenant is awaited gives
    /// [`StartError::Stopped`].
    pub async fn build(
        config: &Config,
        command: Command,
        shutdown: Shutdown,
    ) -> Result<App, StartError> {
        // Loading checked these; a configuration built in code is held to the same rules.
        config.check_sections()?;
        let kind = source_kind(config, command)?;
        require_secrets(config, kind)?;
        let metrics = Arc::new(Metrics::new()?);
        let health = Health::new(kind.not_connected());
        // The tenant's say comes first: no token yet, or the tenant refusing the service.
        let tenant: Arc<Pending<MgmtClient>> = Arc::new(Pending::new(MgmtClient::NOT_CONNECTED));
        if kind.needs_tenant() {
            health.add_probe(Arc::clone(&tenant) as Arc<dyn server::ReadinessProbe>);
        }
        let helpers = Helpers::new();
        health.add_probe(Arc::clone(&helpers) as Arc<dyn server::ReadinessProbe>);
        let endpoints_stop = Shutdown::new();
        let metrics_addr = server::serve(
            config.metrics_listen,
            Arc::clone(&health),
            Arc::clone(&metrics),
            endpoints_stop.clone(),
        )
        .await
        .map_err(|source| StartError::Listen {
            addr: config.metrics_listen,
            source,
        })?;
        tracing::info!(addr = %metrics_addr, "serving /metrics, /healthz and /readyz");
        let pipeline = if kind.needs_tenant() {
            let connect = connect(config, Arc::clone(&metrics), Mode::Live, kind);
            let pipeline = tokio::select! {
                pipeline = connect => pipeline?,
                _ = shutdown.wait() => return Err(StartError::Stopped),
            };
            if let Some(client) = pipeline.client() {
                tenant.set(client.clone());
            }
            if let Some(link) = pipeline.ledger() {
                health.add_probe(Arc::new(link.ledger().clone()));
            }
            Some(Arc::new(pipeline))
        } else {
            None
        };
        let produces_dead_letters = matches!(kind, SourceKind::Kafka | SourceKind::KafkaBridge);
        if let (Some(SourceSettings::Kafka(kafka)), true) = (&config.source, produces_dead_letters)
        {
            kafka::check_dead_letter_topic(kafka)
                .await
                .map_err(StartError::DeadLetterTopic)?;
        }
        let backstop = match (&config.backstop, &pipeline) {
            (None, _) => None,
            (Some(settings), Some(pipeline)) => {
                let (store, dead_letters) = open_checkpoint(settings)?;
                let Some(client) = pipeline.client() else {
                    return Err(WiringError::BackstopWithoutAuth0.into());
                };
                watch_stream(settings, client, &metrics, &helpers, &shutdown);
                tracing::info!(checkpoint = %settings.checkpoint_file.display(), lag_seconds = settings.lag.as_secs_f64(), rate_share = settings.rate_share, "backstop: reading the tenant's logs behind the stream");
                let name = LogsReader::ledger_name_of(settings.role);
                let ledger = reader_ledger(pipeline, &name, "backstop", config, &metrics, &health)?;
                let reader = LogsReader::new(
                    settings.clone(),
                    LogsApi::auxiliary(client.clone(), settings.rate_share),
                    Arc::new(pipeline.relabelled(SourceKind::Backstop)),
                    Box::new(store),
                    ledger,
                    dead_letters,
                )
                .with_status(helpers.status("backstop", &metrics));
                Some(reader)
            }
            (Some(_), None) => None,
        };
        let source = match (command, &config.source, pipeline) {
            (Command::Run, Some(SourceSettings::Auth0Logs(settings)), Some(p)) => {
                let (store, dead_letters) = open_checkpoint(settings)?;
                let Some(client) = p.client().cloned() else {
                    return Err(WiringError::NoSource.into());
                };
                watch_stream(settings, &client, &metrics, &helpers, &shutdown);
                let name = LogsReader::ledger_name_of(settings.role);
                let ledger = reader_ledger(&p, &name, "auth0_logs", config, &metrics, &health)?;
                let reader = LogsReader::new(
                    settings.clone(),
                    LogsApi::primary(client),
                    p,
                    Box::new(store),
                    ledger,
                    dead_letters,
                )
                .with_status(helpers.status("auth0_logs", &metrics));
                Source::Auth0Logs(Box::new(reader))
            }
            (Command::Run, Some(SourceSettings::Auth0Events(settings)), Some(p)) => {
                let name = crate::source::auth0_events::LEDGER_NAME;
                let ledger = reader_ledger(&p, name, "auth0_events", config, &metrics, &health)?;
                let reader = events_reader(settings, p, ledger, &helpers, &metrics)?;
                Source::Auth0Events(Box::new(reader))
            }
            (Command::Run, Some(SourceSettings::Kafka(k)), Some(p)) => Source::Kafka(k.clone(), p),
            (Command::Run, Some(SourceSettings::Sqs(q)), Some(p)) => Source::Sqs(q.clone(), p),
            (Command::Ingest, _, pipeline) => {
                let (settings, state) = ingest_state(config, &health, &metrics, pipeline)?;
                let listener = webhook::bind(&settings).await?;
                Source::Ingest(settings, state, listener)
            }
            _ => return Err(WiringError::NoSource.into()),
        };
        Ok(App {
            metrics,
            health,
            metrics_addr,
            shutdown,
            endpoints_stop,
            source,
            backstop,
            helpers,
        })
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    pub fn health(&self) -> &Arc<Health> {
        &self.health
    }

    /// Where `/metrics`, `/healthz` and `/readyz` are served.
    pub fn metrics_addr(&self) -> SocketAddr {
        self.metrics_addr
    }

    /// Where the webhook receiver listens (`ingest`), bound at build.
    pub fn ingest_addr(&self) -> Option<SocketAddr> {
        match &self.source {
            Source::Ingest(_, _, listener) => listener.local_addr().ok(),
            _ => None,
        }
    }

    /// Runs the application as a task of the current runtime (the tests' in-process service):
    /// its addresses, and the stop that drains it as a signal does.
    pub fn spawn(self) -> RunningApp {
        RunningApp {
            metrics_addr: self.metrics_addr,
            ingest_addr: self.ingest_addr(),
            shutdown: self.shutdown.clone(),
            task: tokio::spawn(self.run()),
        }
    }

    /// Consumes until the shutdown, drains within the grace period, and stops the endpoints.
    pub async fn run(self) -> Result<(), StartError> {
        let backstop_stop = Shutdown::new();
        let backstop = self.backstop.map(|reader| {
            let stop = backstop_stop.clone();
            let app_stop = self.shutdown.clone();
            tokio::spawn(async move {
                app_stop.wait().await;
                stop.trigger();
            });
            let status = self.helpers.status("backstop", &self.metrics);
            tokio::spawn(run_leased_reader(
                Arc::new(reader),
                None,
                status,
                backstop_stop.clone(),
                "backstop stopped",
            ))
        });
        let result = match self.source {
            Source::Auth0Logs(reader) => {
                let status = self.helpers.status("auth0_logs", &self.metrics);
                run_leased_reader(
                    Arc::from(reader),
                    Some(Arc::clone(&self.health)),
                    status,
                    self.shutdown,
                    "stopped",
                )
                .await;
                Ok(())
            }
            Source::Auth0Events(reader) => {
                let status = self.helpers.status("auth0_events", &self.metrics);
                let reader: Arc<EventsReader> = Arc::from(reader);
                let health = Arc::clone(&self.health);
                match reader.lease().cloned() {
                    Some(lease) => {
                        lease
                            .run(self.shutdown, Some(Arc::clone(&health)), move |stop| {
                                run_events_reader(
                                    Arc::clone(&reader),
                                    Arc::clone(&health),
                                    status.clone(),
                                    stop,
                                )
                            })
                            .await
                    }
                    None => run_events_reader(reader, health, status, self.shutdown).await,
                }
                Ok(())
            }
            Source::Kafka(settings, pipeline) => {
                kafka::run(settings, pipeline, Arc::clone(&self.health), self.shutdown)
                    .await
                    .map(|summary| {
                        tracing::info!(
                            messages = summary.messages,
                            dead_letters = summary.dead_lettered,
                            abandoned = summary.abandoned,
                            "stopped"
                        );
                    })
                    .map_err(StartError::from)
            }
            Source::Sqs(settings, pipeline) => {
                sqs::run(settings, pipeline, Arc::clone(&self.health), self.shutdown)
                    .await
                    .map(|summary| {
                        tracing::info!(
                            messages = summary.messages,
                            deleted = summary.acknowledged.unwrap_or(0),
                            left_for_redrive = summary.dead_lettered,
                            abandoned = summary.abandoned,
                            "stopped"
                        );
                    })
                    .map_err(StartError::from)
            }
            Source::Ingest(settings, state, listener) => {
                let served =
                    webhook::serve_on(listener, &settings, Arc::clone(&state), self.shutdown).await;
                if let webhook::Backend::Bridge(bridge) = state.backend() {
                    bridge.flush(std::time::Duration::from_secs(10));
                }
                tracing::info!("stopped");
                served.map_err(StartError::from)
            }
        };
        backstop_stop.trigger();
        if let Some(handle) = backstop {
            if let Err(err) = handle.await {
                tracing::error!(error = %err, "the backstop's supervisor was lost");
            }
        }
        self.endpoints_stop.trigger();
        result
    }
}

/// An application [spawned](App::spawn) on the current runtime.
pub struct RunningApp {
    metrics_addr: SocketAddr,
    ingest_addr: Option<SocketAddr>,
    shutdown: Shutdown,
    task: tokio::task::JoinHandle<Result<(), StartError>>,
}

impl RunningApp {
    /// Where `/metrics`, `/healthz` and `/readyz` are served.
    pub fn metrics_addr(&self) -> SocketAddr {
        self.metrics_addr
    }

    /// Where the webhook receiver listens (`ingest`).
    pub fn ingest_addr(&self) -> Option<SocketAddr> {
        self.ingest_addr
    }

    /// Asks the application to stop without waiting (what a dropped handle does).
    pub fn trigger_stop(&self) {
        self.shutdown.trigger();
    }

    /// Stops the application as SIGTERM does (the source drains, the endpoints close last)
    /// and gives what its run returned. A panic of the run is resumed here.
    pub async fn stop(self) -> Result<(), StartError> {
        self.shutdown.trigger();
        match self.task.await {
            Ok(result) => result,
            Err(err) => match err.try_into_panic() {
                Ok(panic) => std::panic::resume_unwind(panic),
                Err(_) => Err(StartError::Stopped),
            },
        }
    }
}

/// Runs a Logs API reader under its lease when it has one (reading only while it holds it,
/// standing by otherwise), else as [`run_reader`].
async fn run_leased_reader(
    reader: Arc<LogsReader>,
    health: Option<Arc<Health>>,
    status: supervise::HelperStatus,
    shutdown: Shutdown,
    stopped: &'static str,
) {
    match reader.lease().cloned() {
        Some(lease) => {
            lease
                .run(shutdown, health.clone(), move |stop| {
                    run_reader(
                        Arc::clone(&reader),
                        health.clone(),
                        status.clone(),
                        stop,
                        stopped,
                    )
                })
                .await
        }
        None => run_reader(reader, health, status, shutdown, stopped).await,
    }
}

/// Runs a Logs API reader (the source or the backstop) as a supervised helper until
/// `shutdown`: a start that fails (a refused scope, an unexpected answer) or a run that stops
/// on an error is reported and tried again with backoff.
async fn run_reader(
    reader: Arc<LogsReader>,
    health: Option<Arc<Health>>,
    status: supervise::HelperStatus,
    shutdown: Shutdown,
    stopped: &'static str,
) {
    let stop = shutdown.clone();
    supervise::supervise(status, shutdown, move || {
        let (reader, health, stop) = (Arc::clone(&reader), health.clone(), stop.clone());
        async move {
            let summary = reader.run(health, stop).await?;
            tracing::info!(
                events = summary.events,
                pages = summary.pages,
                dead_letters = summary.dead_letters,
                unfinished_batches = summary.unfinished_batches,
                "{stopped}"
            );
            Ok::<(), crate::source::auth0_logs::LogsRunError>(())
        }
    })
    .await;
}

/// The Events API reader of `[auth0_events]`, its checkpoint locked (a second reader is a
/// configuration error, exit 2).
fn events_reader(
    settings: &crate::config::EventsSettings,
    pipeline: Arc<Pipeline>,
    ledger: Option<LedgerCheckpoint>,
    helpers: &Arc<Helpers>,
    metrics: &Arc<Metrics>,
) -> Result<EventsReader, StartError> {
    let store = EventsCheckpointFile::open(&settings.checkpoint_file)?;
    let Some(client) = pipeline.client().cloned() else {
        return Err(WiringError::NoSource.into());
    };
    tracing::info!(checkpoint = %settings.checkpoint_file.display(), event_types = %settings.event_types.join(","), "reading the tenant's Events API");
    Ok(
        EventsReader::new(settings.clone(), client, pipeline, store, ledger)
            .map_err(StartError::Mgmt)?
            .with_status(helpers.status("auth0_events", metrics)),
    )
}

/// Runs the Events API reader as a supervised helper until `shutdown`: a run that stops on an
/// error (a checkpoint that cannot be read, a refused request) is reported and started again
/// with backoff, from the checkpoint.
async fn run_events_reader(
    reader: Arc<EventsReader>,
    health: Arc<Health>,
    status: supervise::HelperStatus,
    shutdown: Shutdown,
) {
    let stop = shutdown.clone();
    supervise::supervise(status, shutdown, move || {
        let (reader, health, stop) = (Arc::clone(&reader), Arc::clone(&health), stop.clone());
        async move {
            let summary = reader.run(Some(health), stop).await?;
            tracing::info!(
                events = summary.events,
                markers = summary.markers,
                connections = summary.connections,
                "stopped"
            );
            Ok::<(), crate::source::auth0_events::EventsRunError>(())
        }
    })
    .await;
}

/// Which source a command runs with this configuration.
fn source_kind(config: &Config, command: Command) -> Result<SourceKind, StartError> {
    match command {
        Command::Run => match &config.source {
            Some(SourceSettings::Kafka(_)) => Ok(SourceKind::Kafka),
            Some(SourceSettings::Sqs(_)) => Ok(SourceKind::Sqs),
            Some(SourceSettings::Auth0Logs(_)) => Ok(SourceKind::Auth0Logs),
            Some(SourceSettings::Auth0Events(_)) => Ok(SourceKind::Auth0Events),
            None => Err(WiringError::NoSource.into()),
        },
        Command::Ingest => match config.ingest.as_ref().map(|i| i.mode) {
            Some(IngestMode::Kafka) => Ok(SourceKind::KafkaBridge),
            Some(IngestMode::Direct) => Ok(SourceKind::Http),
            None => Err(WiringError::NoIngest.into()),
        },
    }
}

/// The secrets this source sends, each required before anything starts: a missing one is an
/// error naming its environment variable and its `_file` key (`check` only warns of it).
fn require_secrets(config: &Config, kind: SourceKind) -> Result<(), config::ConfigError> {
    if kind.needs_tenant() {
        config.require_auth0()?.client_secret()?;
    }
    if let (Some(ingest), SourceKind::Http | SourceKind::KafkaBridge) = (&config.ingest, kind) {
        ingest.token()?;
    }
    if let (Some(SourceSettings::Kafka(kafka)), SourceKind::Kafka | SourceKind::KafkaBridge) =
        (&config.source, kind)
    {
        kafka.sasl_password()?;
    }
    Ok(())
}

/// The webhook receiver's state: the bridge producer, or the direct pipeline.
fn ingest_state(
    config: &Config,
    health: &Arc<Health>,
    metrics: &Arc<Metrics>,
    pipeline: Option<Arc<Pipeline>>,
) -> Result<(IngestSettings, Arc<webhook::IngestState>), StartError> {
    let Some(settings) = config.ingest.clone() else {
        return Err(WiringError::NoIngest.into());
    };
    let token = settings.token()?;
    let backend = match (settings.mode, pipeline) {
        (IngestMode::Direct, Some(pipeline)) => {
            health.set_source_connected(true);
            webhook::Backend::Direct(webhook::Direct::new(
                pipeline,
                settings.direct_deadline,
                settings.max_inflight,
            ))
        }
        _ => {
            let Some(SourceSettings::Kafka(kafka)) = &config.source else {
                return Err(config::bridge_without_kafka().into());
            };
            let bridge = Arc::new(webhook::Bridge::new(kafka, metrics)?);
            bridge.spawn_readiness(Arc::clone(health));
            tracing::info!(topic = %kafka.topics.join(","), brokers = %kafka.brokers.join(","), "bridging into Kafka");
            webhook::Backend::Bridge(bridge)
        }
    };
    let state = webhook::IngestState::new(&settings, token, Arc::clone(metrics), backend);
    Ok((settings, state))
}

/// The pipeline of a command that talks to the tenant: `[auth0]` and its secret required, a
/// token obtained and every policy role resolved (the pipeline `run`, `ingest`, `replay` and
/// `demo` use).
pub async fn connect(
    config: &Config,
    metrics: Arc<Metrics>,
    mode: Mode,
    kind: SourceKind,
) -> Result<Pipeline, StartError> {
    let auth0 = config.require_auth0()?;
    let secret = auth0.client_secret()?;
    // The ledger first: a bad URL is a configuration error, told before the tenant is reached.
    let ledger = match &config.ledger {
        Some(settings) => Some(open_ledger(settings, &config.instance).await?),
        None => None,
    };
    let (client, assigner) = mgmt::connect(auth0, secret, config.policy.role_names(), metrics)
        .await
        .map_err(StartError::Mgmt)?;
    tracing::info!(
        tenant = %auth0.domain,
        roles = ?assigner.directory().all().keys().collect::<Vec<_>>(),
        "Management API ready"
    );
    let processor = Processor::new(config.policy.clone(), Dedup::new(config.dedup));
    let pipeline = Pipeline::online(processor, assigner, client, mode, kind);
    Ok(match ledger {
        Some(ledger) => {
            let metrics = Arc::clone(pipeline.metrics());
            pipeline.with_ledger(
                LedgerLink::new(ledger, config.policy_fingerprint.clone()).batched(metrics),
            )
        }
        None => pipeline,
    })
}

/// How long start-up waits for a ledger database that does not answer (PostgreSQL starting
/// beside the service, as in docker-compose) before giving up with exit 1.
pub const LEDGER_START_PATIENCE: std::time::Duration = std::time::Duration::from_secs(60);

/// Opens the ledger (connects once, migrates) as `instance` (`Config::instance`). A bad URL or
/// place fails at once (exit 2); a database that does not answer is tried again for
/// [`LEDGER_START_PATIENCE`], then exit 1.
pub async fn open_ledger(settings: &LedgerSettings, instance: &str) -> Result<Ledger, StartError> {
    let started = tokio::time::Instant::now();
    let mut wait = std::time::Duration::from_millis(500);
    loop {
        match Ledger::open(settings, instance).await {
            Ok(ledger) => {
                tracing::info!(ledger = %ledger.describe(), "ledger ready");
                return Ok(ledger);
            }
            Err(err) if err.is_config() || started.elapsed() >= LEDGER_START_PATIENCE => {
                return Err(StartError::Ledger(err))
            }
            Err(err) => {
                tracing::warn!(error = %crate::exit::cause_chain(&err), "the ledger does not answer yet; trying again");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(std::time::Duration::from_secs(5));
            }
        }
    }
}
