//! The `auth0-default-roles` command line: parses arguments and hands over to the library.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};

use auth0_default_roles::config::Config;
use auth0_default_roles::dedup::Dedup;
use auth0_default_roles::pipeline::Processor;
use auth0_default_roles::replay::{self, Input, Mode, Output};

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
}

#[derive(Subcommand)]
enum Command {
    /// Validate a config file and print its policy.
    Check {
        /// The TOML config file.
        #[arg(long, short)]
        config: PathBuf,
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
        /// Files of events (JSON, JSON Lines, arrays, EventBridge events); `-` is stdin.
        #[arg(default_value = "-")]
        inputs: Vec<String>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum OutputArg {
    Jsonl,
    Summary,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
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
        Command::Replay {
            config,
            dry_run,
            offline,
            output,
            inputs,
        } => {
            let config = match load_config(&config) {
                Ok(c) => c,
                Err(code) => return Ok(code),
            };
            if !offline {
                let what = if dry_run {
                    "--dry-run"
                } else {
                    "replay without --offline"
                };
                eprintln!(
                    "error: {what} needs the Management API client, which is not available yet; use --offline"
                );
                return Ok(ExitCode::from(EXIT_CONFIG));
            }
            let processor = Processor::new(config.policy.clone(), Dedup::new(config.dedup));
            let inputs: Vec<Input> = inputs.iter().map(|a| Input::parse(a)).collect();
            let output = match output {
                OutputArg::Jsonl => Output::Jsonl,
                OutputArg::Summary => Output::Summary,
            };
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            let summary = replay::run(&processor, Mode::Offline, &inputs, output, &mut out)
                .context("replay failed")?;
            Ok(if summary.has_failures() {
                ExitCode::from(EXIT_FAILED)
            } else {
                ExitCode::SUCCESS
            })
        }
    }
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
