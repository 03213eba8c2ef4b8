//! `replay`: events from files or stdin through the policy (backfill, dry runs): offline, as a
//! dry run or live, the records or the summary on stdout; exit 3 when some event failed.

use std::sync::Arc;

use super::{ConfigArg, ExitStatus, LoadError, EXIT_FAILED};
use crate::app::{self, StartError};
use crate::config::Config;
use crate::dedup::Dedup;
use crate::metrics::{Metrics, MetricsError};
use crate::pipeline::{Mode, Pipeline, Processor, SourceKind};
use crate::source::replay::{self, Input, Output};

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

/// Why `replay` stopped.
#[derive(Debug, thiserror::Error)]
pub enum ReplayCommandError {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    /// The tenant or the ledger could not be reached (live and dry runs).
    #[error(transparent)]
    Start(#[from] StartError),
    #[error("replay failed")]
    Replay(#[from] replay::ReplayError),
}

impl ExitStatus for ReplayCommandError {
    fn exit_code(&self) -> u8 {
        match self {
            ReplayCommandError::Load(err) => err.exit_code(),
            ReplayCommandError::Start(err) => err.exit_code(),
            ReplayCommandError::Metrics(_) | ReplayCommandError::Replay(_) => 1,
        }
    }
}

/// Runs `replay`; 0, or 3 when some event failed.
pub async fn run(args: &ReplayArgs) -> Result<u8, ReplayCommandError> {
    let config = args.config.load()?;
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
    replay_to(&config, request, &mut out).await
}

/// What `replay` reads and writes.
pub struct ReplayRequest<'a> {
    pub mode: Mode,
    pub inputs: &'a [Input],
    pub output: Output,
    pub concurrency: usize,
    /// Show a large input's progress on stderr when it is a terminal (off when records go to
    /// a terminal on stdout, where the spinner would garble them).
    pub progress: bool,
}

/// Runs files or stdin through the pipeline (offline, dry run or live) and writes the records
/// or the summary to `out`. Returns the exit status: 0, or 3 when some event failed.
pub async fn replay_to(
    config: &Config,
    request: ReplayRequest<'_>,
    out: &mut dyn std::io::Write,
) -> Result<u8, ReplayCommandError> {
    let metrics = Arc::new(Metrics::new()?);
    let pipeline = if request.mode == Mode::Offline {
        let processor = Processor::new(config.policy.clone(), Dedup::new(config.dedup));
        Pipeline::offline(processor, metrics, SourceKind::Replay)
    } else {
        app::connect(config, metrics, request.mode, SourceKind::Replay).await?
    };
    let pipeline = Arc::new(pipeline);
    let summary = replay::run(
        &pipeline,
        request.inputs,
        request.output,
        request.concurrency,
        request.progress,
        out,
    )
    .await?;
    Ok(if summary.has_failures() {
        EXIT_FAILED
    } else {
        0
    })
}
