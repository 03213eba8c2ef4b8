//! The `auth0-default-roles` command line: parses arguments and dispatches to the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use auth0_default_roles::action::{self, ClaimNamespace};
use auth0_default_roles::app::{self, App, ReplayRequest, StartError, EXIT_CONFIG};
use auth0_default_roles::check;
use auth0_default_roles::config::{process_env, Config};
use auth0_default_roles::demo::{self, DemoOptions};
use auth0_default_roles::doctor::{self, DoctorArgs};
use auth0_default_roles::pipeline::Mode;
use auth0_default_roles::reconcile::{self, Output as ReconcileOutput};
use auth0_default_roles::setup::{self, SetupArgs};
use auth0_default_roles::shutdown::Shutdown;
use auth0_default_roles::sim_command::{self, SimArgs, SimCommandError};
use auth0_default_roles::source::replay::{Input, Output};

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
    Check(ConfigArg),
    /// Print a post-login Action (JavaScript, Node 18+) compiled from the policy: it puts the
    /// roles a first login gets into the very first token, before the service assigns them.
    Action {
        #[command(flatten)]
        config: ConfigArg,
        /// The claim's namespace, an http(s) URL you own; the claim is `{namespace}roles`
        /// (a `/` is added when the URL does not end with one).
        #[arg(long)]
        claim_namespace: String,
    },
    /// Run the service: consume the configured source ([source] with [kafka] or [sqs]) and
    /// assign roles until SIGTERM/SIGINT; serves /metrics, /healthz and /readyz on [metrics] listen.
    Run(ConfigArg),
    /// Receive Auth0's Custom Webhook log stream over HTTP ([ingest]): bridge it into Kafka
    /// keyed by user id (mode "kafka"), or assign roles in-process (mode "direct").
    Ingest(ConfigArg),
    /// See the service work in a minute, with nothing installed: an in-process Kafka cluster,
    /// the Management API simulator, a generated stream and the demo policy.
    Demo(DemoOptions),
    /// Run events from files or stdin through the policy (backfill, dry runs).
    Replay {
        #[command(flatten)]
        config: ConfigArg,
        /// Read what would be needed but assign nothing.
        #[arg(long, conflicts_with = "offline")]
        dry_run: bool,
        /// No network at all: rules that need the user's profile give `needs_profile`.
        #[arg(long)]
        offline: bool,
        /// `jsonl`: one record per event; `summary`: counts per outcome and role.
        #[arg(long, value_enum, default_value_t = Output::Summary)]
        output: Output,
        /// Events processed at once (events of one user always one after another).
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        /// Files of events (JSON, JSON Lines, arrays, EventBridge events); `-` is stdin.
        #[arg(default_value = "-")]
        inputs: Vec<String>,
    },
    /// Bring every existing user in line with the policy: list who exists (a users-export
    /// job, or --users FILE) and what they hold, then print the missing roles (plan, the
    /// default) or add them (--apply).
    Reconcile {
        #[command(flatten)]
        config: ConfigArg,
        /// Add the missing roles (bulk calls); without it nothing is written.
        #[arg(long)]
        apply: bool,
        /// `jsonl`: one line per user missing roles on stdout, the summary on stderr;
        /// `summary`: the summary on stdout.
        #[arg(long, value_enum, default_value_t = ReconcileOutput::Summary)]
        output: ReconcileOutput,
        /// An export already downloaded (gzipped or plain NDJSON) instead of an export job.
        #[arg(long)]
        users: Option<PathBuf>,
        /// Spend at most this share (0 < F ≤ 1) of [auth0] requests_per_second and burst, so
        /// a `run` against the same tenant keeps the rest.
        #[arg(long, default_value_t = 1.0)]
        rate_share: f64,
        /// Journal of an apply: an interrupted apply resumes from it.
        #[arg(long)]
        state: Option<PathBuf>,
    },
    /// Run the Management API simulator (a stand-in tenant for trying the service).
    Sim(SimArgs),
    /// Check the tenant and the source before the service runs: a checklist with each fix;
    /// exit 0 when the service can run, 2 naming each problem.
    Doctor(DoctorArgs),
    /// One-time changes to the tenant (`setup log-stream`).
    Setup(SetupArgs),
}

#[derive(clap::Args)]
struct ConfigArg {
    /// The TOML config file.
    #[arg(long, short)]
    config: PathBuf,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // `run` is a service: its audit trail is at info. One-shot commands stay quiet.
    let default_level = match cli.command {
        // `reconcile` logs its progress every few seconds when stderr is not a terminal.
        Command::Run(_) | Command::Ingest(_) | Command::Reconcile { .. } => "info",
        Command::Demo(_) => "error",
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
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::from(1);
        }
    };
    let code = runtime.block_on(dispatch(cli.command));
    // Tasks still blocked on the network (a stalled call) must not hold the exit.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    ExitCode::from(code)
}

/// Prints an error and gives its exit status.
fn fail(err: impl std::fmt::Display, code: u8) -> u8 {
    eprintln!("error: {err}");
    code
}

fn load(args: &ConfigArg) -> Result<Config, u8> {
    Config::load(&args.config).map_err(|err| fail(err, EXIT_CONFIG))
}

async fn dispatch(command: Command) -> u8 {
    let env: app::Env<'_> = &process_env;
    let started: Result<u8, StartError> = match command {
        Command::Check(args) => match load(&args) {
            Ok(config) => {
                print!("{}", check::describe(&config, env));
                Ok(0)
            }
            Err(code) => return code,
        },
        Command::Action {
            config,
            claim_namespace,
        } => return print_action(&config, &claim_namespace),
        Command::Run(args) => serve(&args, app::Command::Run).await,
        Command::Ingest(args) => serve(&args, app::Command::Ingest).await,
        Command::Demo(options) => {
            let keep = options.keep_running.then(Shutdown::on_signals);
            let stdout = std::io::stdout();
            let result = demo::run(options, keep, &mut stdout.lock()).await;
            return match result {
                Ok(report) if report.mismatched_users == 0 => 0,
                Ok(_) => 1,
                Err(err) => fail(err, 1),
            };
        }
        Command::Replay {
            config,
            dry_run,
            offline,
            output,
            concurrency,
            inputs,
        } => {
            let config = match load(&config) {
                Ok(config) => config,
                Err(code) => return code,
            };
            let mode = match (offline, dry_run) {
                (true, _) => Mode::Offline,
                (false, true) => Mode::DryRun,
                (false, false) => Mode::Live,
            };
            let inputs: Vec<Input> = inputs.iter().map(|a| Input::parse(a)).collect();
            let request = ReplayRequest {
                mode,
                inputs: &inputs,
                output,
                concurrency,
            };
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            app::replay(&config, env, request, &mut out).await
        }
        Command::Reconcile {
            config,
            apply,
            output,
            users,
            rate_share,
            state,
        } => {
            let config = match load(&config) {
                Ok(config) => config,
                Err(code) => return code,
            };
            let request = reconcile::Request {
                apply,
                output,
                users,
                rate_share,
                state,
                polling: reconcile::export::Polling::default(),
            };
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            let mut err = std::io::stderr();
            reconcile::run(
                &config,
                env,
                &request,
                Shutdown::on_signals(),
                &mut out,
                &mut err,
            )
            .await
        }
        Command::Doctor(args) => return doctor::run(args, env).await,
        Command::Setup(args) => return setup::run(args, env).await,
        Command::Sim(args) => {
            return match sim_command::serve(args).await {
                Ok(()) => 0,
                Err(err @ SimCommandError::Seed { .. }) => fail(err, EXIT_CONFIG),
                Err(err) => fail(err, 1),
            }
        }
    };
    match started {
        Ok(code) => code,
        Err(err) => match err.exit_code() {
            0 => 0,
            code => fail(err, code),
        },
    }
}

/// `action`: the post-login Action on stdout; a bad namespace or a rule it cannot compile
/// exits 2 like any config error.
fn print_action(args: &ConfigArg, namespace: &str) -> u8 {
    let namespace = match ClaimNamespace::parse(namespace) {
        Ok(namespace) => namespace,
        Err(err) => return fail(err, EXIT_CONFIG),
    };
    let config = match load(args) {
        Ok(config) => config,
        Err(code) => return code,
    };
    let source = args.config.display().to_string();
    match action::compile(&config.policy, &namespace, &source) {
        Ok(code) => {
            print!("{code}");
            for rule in action::rules_left_to_service(&config.policy) {
                eprintln!(
                    "note: rule \"{}\" fires on no login (only on email_verified): the Action leaves it to the service",
                    rule.name
                );
            }
            0
        }
        Err(err) => fail(err, EXIT_CONFIG),
    }
}

/// `run` and `ingest`: build the application, then consume until SIGTERM/SIGINT.
async fn serve(args: &ConfigArg, command: app::Command) -> Result<u8, StartError> {
    let config = match load(args) {
        Ok(config) => config,
        Err(code) => return Ok(code),
    };
    let app = App::build(&config, command, &process_env, Shutdown::on_signals()).await?;
    app.run().await.map(|()| 0)
}
