//! The `replay` command: runs events from files or stdin through the same stages as the
//! consumer and prints one record per event (`jsonl`) or a summary.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::PathBuf;

use futures_util::stream::{self, StreamExt};

use crate::event::decode;
use crate::mgmt::CallStats;
use crate::pipeline::{Outcome, Pipeline, Report};
use crate::source::sequencer::Sequencer;
use crate::source::users_of;

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Jsonl,
    Summary,
}

/// A replay input: a file, or `-` for stdin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    Stdin,
    File(PathBuf),
}

impl Input {
    pub fn parse(arg: &str) -> Input {
        if arg == "-" {
            Input::Stdin
        } else {
            Input::File(PathBuf::from(arg))
        }
    }

    fn read(&self) -> std::io::Result<Vec<u8>> {
        match self {
            Input::Stdin => {
                let mut bytes = Vec::new();
                std::io::stdin().lock().read_to_end(&mut bytes)?;
                Ok(bytes)
            }
            Input::File(path) => std::fs::read(path),
        }
    }

    fn label(&self) -> String {
        match self {
            Input::Stdin => "stdin".to_owned(),
            Input::File(path) => path.display().to_string(),
        }
    }
}

/// Why a replay could not run to the end.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("cannot read {input}: {source}")]
    Read {
        input: String,
        source: std::io::Error,
    },
    #[error("cannot write output: {0}")]
    Write(#[from] std::io::Error),
}

/// Counts of a finished replay.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Summary {
    pub events: u64,
    pub by_outcome: BTreeMap<Outcome, u64>,
    pub by_role: BTreeMap<String, u64>,
    pub failed: Vec<Report>,
    /// Management API calls made (none offline).
    pub calls: Option<CallStats>,
}

impl Summary {
    fn add(&mut self, report: &Report) {
        self.events += 1;
        *self.by_outcome.entry(report.outcome).or_default() += 1;
        if matches!(report.outcome, Outcome::Assigned | Outcome::WouldAssign) {
            for role in &report.roles {
                *self.by_role.entry(role.clone()).or_default() += 1;
            }
        }
        if report.outcome == Outcome::Failed {
            self.failed.push(report.clone());
        }
    }

    /// True when some event failed permanently (exit status 3).
    pub fn has_failures(&self) -> bool {
        !self.failed.is_empty()
    }

    /// The human-readable summary.
    pub fn write_to(&self, out: &mut dyn Write) -> std::io::Result<()> {
        writeln!(out, "events: {}", self.events)?;
        writeln!(out, "outcomes:")?;
        for outcome in Outcome::ALL {
            if let Some(n) = self.by_outcome.get(&outcome) {
                writeln!(out, "  {:<14} {n}", outcome.as_str())?;
            }
        }
        if !self.by_role.is_empty() {
            writeln!(out, "roles (events that assign or would assign them):")?;
            for (role, n) in &self.by_role {
                writeln!(out, "  {role:<14} {n}")?;
            }
        }
        if let Some(calls) = &self.calls {
            writeln!(out, "management API calls: {}", calls.total())?;
            for (operation, n) in &calls.calls {
                writeln!(out, "  {:<18} {n}", operation.as_str())?;
            }
            writeln!(out, "  429 answers        {}", calls.rate_limited)?;
            writeln!(out, "  retries            {}", calls.retries)?;
            let assigned = self
                .by_outcome
                .get(&Outcome::Assigned)
                .copied()
                .unwrap_or(0);
            if assigned > 0 {
                writeln!(
                    out,
                    "  write calls per assigned event: {:.2}",
                    calls.writes() as f64 / assigned as f64
                )?;
            }
        }
        if !self.failed.is_empty() {
            writeln!(out, "failed:")?;
            for report in &self.failed {
                writeln!(
                    out,
                    "  log_id={} user_id={} error={}",
                    report.log_id.as_deref().unwrap_or("-"),
                    report.user_id.as_deref().unwrap_or("-"),
                    report.error.as_deref().unwrap_or("-"),
                )?;
            }
        }
        Ok(())
    }
}

/// Replays `inputs` through `pipeline`, up to `concurrency` events at a time (a user's events
/// one after another, in input order), writing records (`jsonl`) in input order and the
/// summary at the end (`summary`).
pub async fn run(
    pipeline: &Pipeline,
    inputs: &[Input],
    output: Output,
    concurrency: usize,
    out: &mut dyn Write,
) -> Result<Summary, ReplayError> {
    let mut summary = Summary::default();
    let sequencer = std::sync::Arc::new(Sequencer::default());
    for input in inputs {
        let bytes = input.read().map_err(|source| ReplayError::Read {
            input: input.label(),
            source,
        })?;
        let items = decode(&bytes);
        drop(bytes);
        let mut reports = stream::iter(items)
            .map(|item| {
                // Taken in input order, here; awaited when the event's turn comes.
                let mut turn = sequencer.enter(users_of(std::slice::from_ref(&item)));
                async move {
                    turn.wait().await;
                    pipeline.process(item).await
                }
            })
            .buffered(concurrency.max(1));
        while let Some(report) = reports.next().await {
            summary.add(&report);
            if output == Output::Jsonl {
                serde_json::to_writer(&mut *out, &report).map_err(std::io::Error::from)?;
                out.write_all(b"\n")?;
            }
        }
    }
    summary.calls = pipeline.client().map(|c| c.stats());
    if output == Output::Summary {
        summary.write_to(out)?;
    }
    out.flush()?;
    Ok(summary)
}
