//! `replay`: events from files or stdin through the policy (backfill, dry runs).

use super::{exit_status, ConfigArg};
use crate::app::{self, ReplayRequest};
use crate::config::process_env;
use crate::pipeline::Mode;
use crate::source::replay::{Input, Output};

#[derive(clap::Args)]
pub struct ReplayArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Read what would be needed but assign nothing.
    #[arg(long, conflicts_with = "offline")]
    pub dry_run: bool,
    /// No network at all: rules that need the user's profile give `needs_profile`.
    #[arg(long)]
    pub offline: bool,
    /// `jsonl`: one record per event; `summary`: counts per outcome and role.
    #[arg(long, value_enum, default_value_t = Output::Summary)]
    pub output: Output,
    /// Events processed at once (events of one user always one after another).
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Files of events (JSON, JSON Lines, arrays, EventBridge events); `-` is stdin.
    #[arg(default_value = "-")]
    pub inputs: Vec<String>,
}

pub async fn run(args: &ReplayArgs) -> u8 {
    let config = match args.config.load() {
        Ok(config) => config,
        Err(code) => return code,
    };
    let mode = match (args.offline, args.dry_run) {
        (true, _) => Mode::Offline,
        (false, true) => Mode::DryRun,
        (false, false) => Mode::Live,
    };
    let inputs: Vec<Input> = args.inputs.iter().map(|a| Input::parse(a)).collect();
    let request = ReplayRequest {
        mode,
        inputs: &inputs,
        output: args.output,
        concurrency: args.concurrency,
        progress: args.output == Output::Summary
            || !std::io::IsTerminal::is_terminal(&std::io::stdout()),
    };
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let result = app::replay(&config, &process_env, request, &mut out).await;
    drop(out);
    exit_status(result)
}
