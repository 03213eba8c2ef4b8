//! The `auth0-default-roles` command line: parses arguments and hands over to the library.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};

use std::sync::Arc;

use auth0_default_roles::config::{self as cfg, Config, IngestMode, SourceSettings};
use auth0_default_roles::dedup::Dedup;
use auth0_default_roles::metrics::Metrics;
use auth0_default_roles::mgmt::MgmtError;
use auth0_default_roles::pipeline::{Mode, Pipeline, Processor};
use auth0_default_roles::replay::{self, Input, Output};
use auth0_default_roles::server::{self, Health};
use auth0_default_roles::{demo, ingest, kafka, sqs};
use mgmt_sim::{Seed, SeedRole, SimConfig, Simulator};

/// Exit status for usage and configuration errors.
const EXIT_CONFIG: u8 = 2;
/// Exit status when some events failed permanently.
const EXIT_FAILED: u8 = 3;

#[derive(Parser)]
#[command(
    name = "auth0-default-roles",
    version,
    about = "Gives Auth0 users their default roles from the tenant's log stream"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log format on stderr: `human`, or `json` (one object per line) for production.
    #[arg(long, value_enum, global = true, default_value_t = LogFormat::Human)]
    log_format: LogFormat,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Human,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Validate a config file and print its policy.
    Check {
        /// The TOML config file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Run the service: consume the configured source ([source] with [kafka] or [sqs]) and
    /// assign roles until SIGTERM/SIGINT; serves /metrics, /healthz and /readyz on [metrics] listen.
    Run {
        /// The TOML config file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Receive Auth0's Custom Webhook log stream over HTTP ([ingest]): bridge it into Kafka
    /// keyed by user id (mode "kafka"), or assign roles in-process (mode "direct").
    Ingest {
        /// The TOML config file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// See the service work in a minute, with nothing installed: an in-process Kafka cluster,
    /// the Management API simulator, a generated stream and the demo policy.
    Demo {
        /// Messages to generate (users' signups, first logins, verifications, noise).
        #[arg(long, default_value_t = 3000)]
        events: usize,
        /// The simulated tenant's rate limit in requests per second (the client uses the same;
        /// 0: unlimited).
        #[arg(long, default_value_t = 50.0)]
        rate_limit: f64,
        /// Keep serving /metrics and the simulator after the table, until Ctrl-C.
        #[arg(long)]
        keep_running: bool,
        /// Where /metrics, /healthz and /readyz are served (another free port if taken).
        #[arg(long, default_value = "127.0.0.1:9464")]
        listen: std::net::SocketAddr,
        /// Seed of the generated stream.
        #[arg(long, default_value_t = 2026)]
        seed: u64,
    },
    /// Run events from files or stdin through the policy (backfill, dry runs).
    Replay {
        /// The TOML config file.
        #[arg(long, short)]
        config: PathBuf,
        /// Read what would be needed but assign nothing.
        #[arg(long, conflicts_with = "offline")]
        dry_run: bool,
        /// No network at all: rules that need the user's profile give `needs_profile`.
        #[arg(long)]
        offline: bool,
        /// `jsonl`: one record per event; `summary`: counts per outcome and role.
        #[arg(long, value_enum, default_value_t = OutputArg::Summary)]
        output: OutputArg,
        /// Events processed at once (events of one user always one after another).
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        /// Files of events (JSON, JSON Lines, arrays, EventBridge events); `-` is stdin.
        #[arg(default_value = "-")]
        inputs: Vec<String>,
    },
    /// Run the Management API simulator (a stand-in tenant for trying the service).
    Sim {
        /// Port on 127.0.0.1 (0 picks a free one).
        #[arg(long, default_value_t = 8080)]
        port: u16,
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1")]
        host: std::net::IpAddr,
        /// JSON seed file: {"roles":[{"name":"Viewer"}],"users":[{"user_id":"auth0|1","email":"a@b.c","email_verified":true}]}.
        #[arg(long)]
        seed: Option<PathBuf>,
        /// Role names to create (in addition to the seed's).
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "INTERNAL,CUSTOMER,Viewer,PARTNER"
        )]
        roles: Vec<String>,
        /// Tenant rate limit in requests per second (0: unlimited).
        #[arg(long, default_value_t = 0.0)]
        rate_limit: f64,
        /// Tenant rate-limit burst.
        #[arg(long, default_value_t = 10)]
        burst: u32,
        /// Answer 404 for users not in the seed (by default any user id is accepted).
        #[arg(long)]
        strict_users: bool,
        /// Domain of the simulated tenant (the token audience is https://{domain}/api/v2/).
        #[arg(long, default_value = "sim.auth0.local")]
        domain: String,
        /// Client id the simulator accepts.
        #[arg(long, default_value = "sim-client")]
        client_id: String,
        /// Client secret the simulator accepts (also read from AUTH0_CLIENT_SECRET).
        #[arg(
            long,
            env = "AUTH0_CLIENT_SECRET",
            default_value = "sim-secret",
            hide_env_values = true
        )]
        client_secret: String,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum OutputArg {
    Jsonl,
    Summary,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // `run` is a service: its audit trail is at info. One-shot commands stay quiet.
    let default_level = match cli.command {
        Command::Run { .. } | Command::Ingest { .. } => "info",
        Command::Demo { .. } => "error",
        _ => "warn",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    match run(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(1)
        }
    }
}

fn load_config(path: &Path) -> Result<Config, ExitCode> {
    Config::load(path).map_err(|err| {
        eprintln!("error: {err}");
        ExitCode::from(EXIT_CONFIG)
    })
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Check { config } => {
            let config = match load_config(&config) {
                Ok(c) => c,
                Err(code) => return Ok(code),
            };
            print!("{}", describe(&config));
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo {
            events,
            rate_limit,
            keep_running,
            listen,
            seed,
        } => {
            let runtime =
                tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
            runtime.block_on(async {
                let keep = if keep_running {
                    let (tx, rx) = tokio::sync::watch::channel(false);
                    spawn_signal_handler(tx);
                    Some(rx)
                } else {
                    None
                };
                let options = demo::DemoOptions {
                    events,
                    rate_limit,
                    listen,
                    seed,
                };
                let stdout = std::io::stdout();
                let report = demo::run(options, keep, &mut stdout.lock()).await?;
                Ok(if report.mismatched_users == 0 {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(1)
                })
            })
        }
        Command::Ingest { config } => {
            let config = match load_config(&config) {
                Ok(c) => c,
                Err(code) => return Ok(code),
            };
            let runtime =
                tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
            runtime.block_on(ingest_command(config))
        }
        Command::Run { config } => {
            let config = match load_config(&config) {
                Ok(c) => c,
                Err(code) => return Ok(code),
            };
            let runtime =
                tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
            runtime.block_on(run_command(config))
        }
        Command::Replay {
            config,
            dry_run,
            offline,
            output,
            concurrency,
            inputs,
        } => {
            let config = match load_config(&config) {
                Ok(c) => c,
                Err(code) => return Ok(code),
            };
            let mode = match (offline, dry_run) {
                (true, _) => Mode::Offline,
                (false, true) => Mode::DryRun,
                (false, false) => Mode::Live,
            };
            let inputs: Vec<Input> = inputs.iter().map(|a| Input::parse(a)).collect();
            let output = match output {
                OutputArg::Jsonl => Output::Jsonl,
                OutputArg::Summary => Output::Summary,
            };
            let runtime =
                tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
            runtime.block_on(replay_command(config, mode, inputs, output, concurrency))
        }
        Command::Sim {
            port,
            host,
            seed,
            roles,
            rate_limit,
            burst,
            strict_users,
            domain,
            client_id,
            client_secret,
        } => {
            let mut seed: Seed = match seed {
                Some(path) => {
                    let text = std::fs::read_to_string(&path)
                        .with_context(|| format!("cannot read seed file {}", path.display()))?;
                    match serde_json::from_str(&text) {
                        Ok(seed) => seed,
                        Err(err) => {
                            eprintln!("error: seed file {}: {err}", path.display());
                            return Ok(ExitCode::from(EXIT_CONFIG));
                        }
                    }
                }
                None => Seed::default(),
            };
            for name in roles.into_iter().filter(|r| !r.is_empty()) {
                if !seed.roles.iter().any(|r| r.name == name) {
                    seed.roles.push(SeedRole::named(name));
                }
            }
            let sim_config = SimConfig {
                domain,
                client_id,
                client_secret,
                rate_per_second: rate_limit,
                burst,
                accept_any_user: !strict_users,
                ..SimConfig::default()
            };
            let runtime =
                tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
            runtime.block_on(sim_command(
                sim_config,
                seed,
                std::net::SocketAddr::new(host, port),
            ))
        }
    }
}

/// Resolves when SIGTERM or SIGINT arrives. A second signal exits at once.
fn spawn_signal_handler(stop: tokio::sync::watch::Sender<bool>) {
    tokio::spawn(async move {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(err) => {
                    tracing::error!(%err, "cannot listen for SIGTERM");
                    return;
                }
            };
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down"),
        }
        let _ = stop.send(true);
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        tracing::warn!("second signal: exiting without draining");
        std::process::exit(130);
    });
}

/// Prints a configuration problem and gives the configuration exit status.
fn config_error(err: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {err}");
    ExitCode::from(EXIT_CONFIG)
}

/// Serves /metrics, /healthz and /readyz on `[metrics] listen`.
async fn serve_metrics(config: &Config, health: &Arc<Health>) -> anyhow::Result<()> {
    let addr = server::serve(config.metrics_listen, Arc::clone(health))
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} for /metrics (set [metrics] listen)",
                config.metrics_listen
            )
        })?;
    tracing::info!(%addr, "serving /metrics, /healthz and /readyz");
    Ok(())
}

/// The live pipeline for a long-running command, or the exit status to stop with: a
/// configuration problem (printed, status 2), or a stop signal while the tenant was awaited (0).
async fn live_pipeline(
    config: &Config,
    metrics: &Arc<Metrics>,
    health: &Health,
    mode: Mode,
    source: &'static str,
    stop: Option<&mut tokio::sync::watch::Receiver<bool>>,
) -> anyhow::Result<Result<Pipeline, ExitCode>> {
    let auth0 = match config.require_auth0() {
        Ok(a) => a,
        Err(err) => return Ok(Err(config_error(err))),
    };
    let secret = match auth0.client_secret(&cfg::process_env) {
        Ok(s) => s,
        Err(err) => return Ok(Err(config_error(err))),
    };
    let connect = Pipeline::connect(
        config,
        auth0,
        secret,
        Arc::clone(metrics),
        mode,
        source,
        Some(health),
    );
    let connected = match stop {
        Some(stop) => tokio::select! {
            connected = connect => connected,
            _ = stop.changed() => return Ok(Err(ExitCode::SUCCESS)),
        },
        None => connect.await,
    };
    match connected {
        Ok(pipeline) => Ok(Ok(pipeline)),
        Err(err @ (MgmtError::Auth(_) | MgmtError::MissingRoles(_))) => Ok(Err(config_error(err))),
        Err(err) => Err(err).context("cannot start the Management API client"),
    }
}

async fn run_command(config: Config) -> anyhow::Result<ExitCode> {
    let source = match &config.source {
        Some(source) => source.clone(),
        None => {
            eprintln!("error: `run` needs a source: add [source] type = \"kafka\" with a [kafka] section, or type = \"sqs\" with an [sqs] section (see config/example.toml)");
            return Ok(ExitCode::from(EXIT_CONFIG));
        }
    };
    let metrics = Arc::new(Metrics::new()?);
    let health = Health::new(Arc::clone(&metrics), source.name());
    serve_metrics(&config, &health).await?;
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    spawn_signal_handler(stop_tx);
    let pipeline = match live_pipeline(
        &config,
        &metrics,
        &health,
        Mode::Live,
        source.name(),
        Some(&mut stop_rx),
    )
    .await?
    {
        Ok(p) => Arc::new(p),
        Err(code) => return Ok(code),
    };
    match source {
        SourceSettings::Kafka(settings) => {
            let summary = kafka::run(settings, pipeline, health, stop_rx).await?;
            tracing::info!(
                messages = summary.messages,
                dead_letters = summary.dead_letters,
                abandoned = summary.abandoned,
                "stopped"
            );
        }
        SourceSettings::Sqs(settings) => {
            let summary = match sqs::run(settings, pipeline, health, stop_rx).await {
                Ok(s) => s,
                Err(err @ sqs::SqsRunError::NoRegion) => {
                    eprintln!("error: {err}");
                    return Ok(ExitCode::from(EXIT_CONFIG));
                }
            };
            tracing::info!(
                messages = summary.messages,
                deleted = summary.deleted,
                left_for_redrive = summary.left,
                abandoned = summary.abandoned,
                "stopped"
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn ingest_command(config: Config) -> anyhow::Result<ExitCode> {
    let Some(settings) = config.ingest.clone() else {
        eprintln!("error: `ingest` needs an [ingest] section (see config/example.toml)");
        return Ok(ExitCode::from(EXIT_CONFIG));
    };
    let token = match settings.token(&cfg::process_env) {
        Ok(t) => t,
        Err(err) => {
            eprintln!("error: {err}");
            return Ok(ExitCode::from(EXIT_CONFIG));
        }
    };
    let metrics = Arc::new(Metrics::new()?);
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    spawn_signal_handler(stop_tx);
    let (health, backend) = match settings.mode {
        IngestMode::Kafka => {
            let Some(SourceSettings::Kafka(kafka)) = &config.source else {
                eprintln!(
                    "error: ingest.mode = \"kafka\" needs a [kafka] section with brokers and topic"
                );
                return Ok(ExitCode::from(EXIT_CONFIG));
            };
            let health = Health::new(Arc::clone(&metrics), "kafka-bridge");
            health
                .token
                .store(true, std::sync::atomic::Ordering::SeqCst);
            health
                .roles
                .store(true, std::sync::atomic::Ordering::SeqCst);
            let bridge = Arc::new(ingest::Bridge::new(kafka)?);
            bridge.spawn_readiness(Arc::clone(&health));
            tracing::info!(topic = %kafka.topics.join(","), brokers = %kafka.brokers.join(","), "bridging into Kafka");
            (health, ingest::Backend::Bridge(bridge))
        }
        IngestMode::Direct => {
            let health = Health::new(Arc::clone(&metrics), "http");
            let pipeline = match live_pipeline(
                &config,
                &metrics,
                &health,
                Mode::Live,
                "http",
                Some(&mut stop_rx),
            )
            .await?
            {
                Ok(p) => Arc::new(p),
                Err(code) => return Ok(code),
            };
            health
                .source
                .store(true, std::sync::atomic::Ordering::SeqCst);
            (
                health,
                ingest::Backend::Direct(ingest::Direct::new(pipeline, settings.direct_deadline)),
            )
        }
    };
    serve_metrics(&config, &health).await?;
    let state = ingest::IngestState::new(token, metrics, backend);
    ingest::serve(&settings, Arc::clone(&state), stop_rx).await?;
    if let ingest::Backend::Bridge(bridge) = state.backend() {
        bridge.flush(std::time::Duration::from_secs(10));
    }
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

async fn replay_command(
    config: Config,
    mode: Mode,
    inputs: Vec<Input>,
    output: Output,
    concurrency: usize,
) -> anyhow::Result<ExitCode> {
    let metrics = Arc::new(Metrics::new()?);
    let pipeline = if mode == Mode::Offline {
        let processor = Processor::new(config.policy.clone(), Dedup::new(config.dedup));
        Pipeline::offline(processor, metrics, "replay")
    } else {
        let health = Health::new(Arc::clone(&metrics), "replay");
        match live_pipeline(&config, &metrics, &health, mode, "replay", None).await? {
            Ok(p) => p,
            Err(code) => return Ok(code),
        }
    };
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let summary = replay::run(&pipeline, &inputs, output, concurrency, &mut out)
        .await
        .context("replay failed")?;
    Ok(if summary.has_failures() {
        ExitCode::from(EXIT_FAILED)
    } else {
        ExitCode::SUCCESS
    })
}

async fn sim_command(
    config: SimConfig,
    seed: Seed,
    addr: std::net::SocketAddr,
) -> anyhow::Result<ExitCode> {
    let roles: Vec<String> = seed.roles.iter().map(|r| r.name.clone()).collect();
    let simulator = Simulator::new(config.clone(), seed);
    let running = simulator
        .start(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    println!("Management API simulator listening on {}", running.base_url);
    println!(
        "  tenant domain {} (audience {})",
        config.domain,
        config.audience()
    );
    println!(
        "  client_id {} (secret from --client-secret or AUTH0_CLIENT_SECRET)",
        config.client_id
    );
    println!("  roles: {}", roles.join(", "));
    println!(
        "  state: GET {}/sim/state   control: POST {}/sim/control",
        running.base_url, running.base_url
    );
    println!(
        "Point a config at it with: base_url = \"{}\", domain = \"{}\", client_id = \"{}\"",
        running.base_url, config.domain, config.client_id
    );
    println!("Stop with Ctrl-C.");
    tokio::signal::ctrl_c()
        .await
        .context("cannot wait for Ctrl-C")?;
    running.shutdown().await;
    Ok(ExitCode::SUCCESS)
}

/// The readable form of a valid config printed by `check`.
fn describe(config: &Config) -> String {
    use std::fmt::Write as _;
    let mut text = String::new();
    let _ = writeln!(text, "config OK");
    match &config.auth0 {
        Some(a) => {
            let _ = writeln!(
                text,
                "auth0: domain {} client_id {} via {} ({} requests/s, burst {})",
                a.domain, a.client_id, a.base_url, a.requests_per_second, a.burst
            );
            let secret = match a.client_secret(&auth0_default_roles::config::process_env) {
                Ok(_) => "available".to_owned(),
                Err(e) => format!("NOT available ({e})"),
            };
            let _ = writeln!(text, "auth0: client secret {secret}");
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
        None => {
            let _ = writeln!(text, "source: none (only `replay` can run)");
        }
    }
    if let Some(i) = &config.ingest {
        let token = match i.token(&cfg::process_env) {
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
    let _ = writeln!(text, "metrics: {}", config.metrics_listen);
    let events: Vec<&str> = config.policy.events().map(|e| e.as_str()).collect();
    let _ = writeln!(text, "policy: events {}", events.join(", "));
    let roles: Vec<String> = config.policy.role_names().into_iter().collect();
    let _ = writeln!(text, "policy: roles {}", roles.join(", "));
    let _ = writeln!(
        text,
        "dedup: ttl {} s, at most {} entries",
        config.dedup.ttl.as_secs(),
        config.dedup.max_entries
    );
    for (i, rule) in config.policy.rules().iter().enumerate() {
        let _ = writeln!(text, "{}. {rule}", i + 1);
    }
    if config.policy.rules().is_empty() {
        let _ = writeln!(text, "policy: no rules (every event ends as no_rule)");
    }
    text
}
