//! `reconcile`: every existing user in line with the policy (plan, or `--apply`). The engine
//! (the export, the memberships, the judging and the batched writes) is [`crate::reconcile`];
//! this is the command: its arguments, its run, and its error
//! ([`ReconcileError`](crate::reconcile::ReconcileError), exit 2 for what the operator must fix,
//! 3 when some users failed, 1 otherwise).

use std::path::PathBuf;

use super::{ConfigArg, ExitStatus, LoadError};
use crate::reconcile::{self, Output, ReconcileError};
use crate::shutdown::Shutdown;

#[derive(clap::Args)]
pub struct ReconcileArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Add the missing roles (bulk calls); without it nothing is written.
    #[arg(long)]
    pub apply: bool,
    /// `jsonl`: one line per user missing roles on stdout, the summary on stderr;
    /// `summary`: the summary on stdout.
    #[arg(long, value_enum, default_value_t = Output::Summary)]
    pub output: Output,
    /// An export already downloaded (gzipped or plain NDJSON) instead of an export job.
    #[arg(long)]
    pub users: Option<PathBuf>,
    /// Spend at most this share (0 < F ≤ 1) of [auth0] requests_per_second and burst, so
    /// a `run` against the same tenant keeps the rest.
    #[arg(long, default_value_t = 1.0)]
    pub rate_share: f64,
    /// Journal of an apply: an interrupted apply resumes from it.
    #[arg(long)]
    pub state: Option<PathBuf>,
    /// Also plan (and with --apply, remove) the roles this service granted that the current
    /// policy no longer gives (needs [ledger]); roles it did not grant are never removed.
    #[arg(long)]
    pub revoke: bool,
    /// Give back the roles this service granted that someone removed since, when the policy
    /// still gives them (needs [ledger]); without it they are left removed.
    #[arg(long)]
    pub restore: bool,
    /// With --revoke --apply: remove nothing (exit 2) when more (user, role) pairs than this
    /// are to be taken back.
    #[arg(long, default_value_t = reconcile::MAX_REVOCATIONS)]
    pub max_revocations: usize,
}

/// Why `reconcile` stopped: its configuration, or the engine's error.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileCommandError {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error(transparent)]
    Reconcile(#[from] ReconcileError),
}

impl ExitStatus for ReconcileCommandError {
    fn exit_code(&self) -> u8 {
        match self {
            ReconcileCommandError::Load(err) => err.exit_code(),
            ReconcileCommandError::Reconcile(err) => err.exit_code(),
        }
    }
}

/// Runs `reconcile`; 0, or 3 when some users failed.
pub async fn run(args: ReconcileArgs) -> Result<u8, ReconcileCommandError> {
    let config = args.config.load()?;
    let request = reconcile::Request {
        apply: args.apply,
        output: args.output,
        users: args.users,
        rate_share: args.rate_share,
        state: args.state,
        polling: reconcile::export::Polling::default(),
        revoke: args.revoke,
        restore: args.restore,
        max_revocations: args.max_revocations,
    };
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut err = std::io::stderr();
    let result = reconcile::run(
        &config,
        &request,
        Shutdown::on_signals(),
        &mut out,
        &mut err,
    )
    .await;
    drop(out);
    Ok(result?)
}
