//! The `auth0-default-roles` command line: parses arguments and dispatches to the command's
//! module in the library ([`commands`](auth0_default_roles::commands)), which runs it; an
//! error is printed once, with its cause chain, by [`commands::exit_status`].

#![forbid(unsafe_code)]
// Input reaches the service from the network and files: no unwrap/expect outside tests.
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use auth0_default_roles::app;
use auth0_default_roles::commands::{self, exit_status, ConfigArg};

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
    Action(commands::action::ActionArgs),
    /// Run the service: consume the configured source ([source] with [kafka] or [sqs]) and
    /// assign roles until SIGTERM/SIGINT; serves /metrics, /healthz and /readyz on [metrics] listen.
    Run(ConfigArg),
    /// Receive Auth0's Custom Webhook log stream over HTTP ([ingest]): bridge it into Kafka
    /// keyed by user id (mode "kafka"), or assign roles in-process (mode "direct").
    Ingest(ConfigArg),
    /// See the service work in a minute, with nothing installed: an in-process Kafka cluster,
    /// the Management API simulator, a generated stream and the demo policy.
    Demo(commands::demo::DemoOptions),
    /// Run events from files or stdin through the policy (backfill, dry runs).
    Replay(commands::replay::ReplayArgs),
    /// Bring every existing user in line with the policy: list who exists (a users-export
    /// job, or --users FILE) and what they hold, then print the missing roles (plan, the
    /// default) or add them (--apply).
    Reconcile(commands::reconcile::ReconcileArgs),
    /// Why a user holds the roles this service gave: every grant and revocation in the
    /// ledger ([ledger] url), any standing failure, and what the policy gives them now.
    Explain(commands::explain::ExplainArgs),
    /// Run the Management API simulator (a stand-in tenant for trying the service).
    Sim(commands::sim::SimArgs),
    /// Check the tenant and the source before the service runs: a checklist with each fix;
    /// exit 0 when the service can run, 2 naming each problem.
    Doctor(commands::doctor::DoctorArgs),
    /// One-time changes to the tenant (`setup log-stream`).
    Setup(commands::setup::SetupArgs),
}

impl Command {
    /// `run` is a service: its audit trail is at info. One-shot commands stay quiet.
    fn default_log_level(&self) -> &'static str {
        match self {
            // `reconcile` logs its progress every few seconds when stderr is not a terminal.
            Command::Run(_) | Command::Ingest(_) | Command::Reconcile(_) => "info",
            Command::Demo(_) => "error",
            _ => "warn",
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    #[cfg(debug_assertions)]
    arm_test_panic();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(cli.command.default_log_level()));
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

/// Test-only fault injection of debug builds (`pipeline::arm_test_panic`): read here, at the
/// edge, as the library reads no environment.
#[cfg(debug_assertions)]
fn arm_test_panic() {
    if let Ok(log_id) = std::env::var("AUTH0_DEFAULT_ROLES_TEST_PANIC_LOG_ID") {
        let times = std::env::var("AUTH0_DEFAULT_ROLES_TEST_PANIC_TIMES")
            .ok()
            .and_then(|n| n.parse::<u64>().ok());
        auth0_default_roles::pipeline::arm_test_panic(log_id, times);
    }
}

/// `AUTH0_WEBHOOK_TOKEN` for `setup log-stream` with a config without `[ingest]` (one with it
/// resolves the token at load), read here at the edge.
fn webhook_token_from_env() -> Option<auth0_default_roles::settings::Secret> {
    std::env::var(auth0_default_roles::settings::WEBHOOK_TOKEN_ENV)
        .ok()
        .filter(|t| !t.is_empty())
        .map(auth0_default_roles::settings::Secret::new)
}

/// Runs the command; gives its exit status (an error reported with its cause chain).
async fn dispatch(command: Command) -> u8 {
    match command {
        Command::Check(args) => exit_status(commands::check::run(&args)),
        Command::Action(args) => exit_status(commands::action::run(&args)),
        Command::Run(args) => exit_status(commands::serve::run(&args, app::Command::Run).await),
        Command::Ingest(args) => {
            exit_status(commands::serve::run(&args, app::Command::Ingest).await)
        }
        Command::Demo(options) => exit_status(commands::demo::run(options).await),
        Command::Replay(args) => exit_status(commands::replay::run(&args).await),
        Command::Reconcile(args) => exit_status(commands::reconcile::run(args).await),
        Command::Explain(args) => exit_status(commands::explain::run(&args).await),
        Command::Sim(args) => exit_status(commands::sim::run(args).await),
        Command::Doctor(args) => commands::doctor::run(args).await,
        Command::Setup(args) => commands::setup::run(args, webhook_token_from_env()).await,
    }
}
