//! The `replay` command: runs events from files or stdin through the same stages as the
//! consumer and prints one record per event (`jsonl`) or a summary.
//!
//! Each event is one delivery through [`Pipeline::deliver`], the path every source takes: a
//! lost task (a panic, a bug) runs again, decoded again from the chunk's bytes, and ends
//! `failed` after [`crate::pipeline::MAX_LOST_TASKS`] losses in a row. Replay acknowledges
//! nothing: its mapping of the verdict is the event's line, the report the verdict came with.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::sync::Arc;

use crate::event::{decode, decode_json_lines, first_line_stands_alone, Decoded};
use crate::pipeline::{ApiCalls, Outcome, Pipeline, Report, Verdict};
use crate::progress::Progress;
use crate::source::{users_of, Dispatch};

/// Bytes read from a file or stdin at a time.
const READ_BUFFER: usize = 1 << 20;
/// JSON Lines are decoded and processed in chunks of about this many bytes: memory stays
/// bounded whatever the size of the input.
const CHUNK_BYTES: usize = 4 << 20;
/// The progress line is updated every this many events.
const PROGRESS_EVERY: u64 = 1000;

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

    fn open(&self) -> std::io::Result<Box<dyn BufRead>> {
        Ok(match self {
            Input::Stdin => Box::new(BufReader::with_capacity(READ_BUFFER, std::io::stdin())),
            Input::File(path) => Box::new(BufReader::with_capacity(
                READ_BUFFER,
                std::fs::File::open(path)?,
            )),
        })
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
pub struct ReplaySummary {
    pub events: u64,
    pub by_outcome: BTreeMap<Outcome, u64>,
    pub by_role: BTreeMap<String, u64>,
    pub failed: Vec<Report>,
    /// Management API calls made (none offline).
    pub calls: Option<ApiCalls>,
}

impl ReplaySummary {
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
            for (operation, n) in &calls.by_operation {
                writeln!(out, "  {operation:<18} {n}")?;
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
                    calls.writes as f64 / assigned as f64
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
/// one after another, in input order: [`Dispatch`], as every source), writing records (`jsonl`)
/// in input order and the summary at the end (`summary`). With `spinner`, an input larger than
/// one chunk shows its progress on stderr when that is a terminal.
pub async fn run(
    pipeline: &Arc<Pipeline>,
    inputs: &[Input],
    output: Output,
    concurrency: usize,
    spinner: bool,
    out: &mut dyn Write,
) -> Result<ReplaySummary, ReplayError> {
    let mut summary = ReplaySummary::default();
    let mut dispatch: Dispatch<(usize, Report)> = Dispatch::default();
    let mut progress = Progress::hidden(spinner);
    for input in inputs {
        let read_error = |source| ReplayError::Read {
            input: input.label(),
            source,
        };
        let label = input.label();
        let message = |events: u64| format!("{events} events replayed ({label})");
        let mut chunks = Chunks::new(input.open().map_err(read_error)?);
        let mut first_chunk = true;
        while let Some(Chunk { items, bytes }) = chunks.next_chunk().map_err(read_error)? {
            if !std::mem::take(&mut first_chunk) {
                // More than one chunk: a large input, worth a progress line.
                progress.show();
                progress.update(|| message(summary.events));
            }
            let bytes = Arc::new(bytes);
            let mut lines = InOrder::new(items.len());
            let mut items = items.into_iter().enumerate();
            loop {
                // At most `concurrency` events in flight or waiting for an earlier one's line.
                while dispatch.len() + lines.waiting() < concurrency.max(1) {
                    let Some((index, item)) = items.next() else {
                        break;
                    };
                    let users = users_of(std::slice::from_ref(&item));
                    let (pipeline, bytes) = (Arc::clone(pipeline), Arc::clone(&bytes));
                    dispatch.spawn(users, move || async move {
                        let report = replay_one(&pipeline, item, move || bytes.item(index)).await;
                        (index, report)
                    });
                }
                match dispatch.next().await {
                    Some(Ok((index, report))) => lines.put(index, report),
                    Some(Err(lost)) => {
                        // Not reached (`deliver` catches the pipeline's panics): its line is
                        // written `failed` once the chunk's other events are done.
                        tracing::error!(error = %crate::exit::cause_chain(&lost), "a replayed event's task was lost outside the pipeline");
                    }
                    None => {}
                }
                let done = dispatch.is_empty() && items.len() == 0;
                for report in lines.take(done, |index| lost_report(bytes.item(index))) {
                    summary.add(&report);
                    if output == Output::Jsonl {
                        serde_json::to_writer(&mut *out, &report).map_err(std::io::Error::from)?;
                        out.write_all(b"\n")?;
                    }
                    if summary.events % PROGRESS_EVERY == 0 {
                        progress.update(|| message(summary.events));
                    }
                }
                if done {
                    break;
                }
            }
        }
    }
    progress.finish();
    summary.calls = pipeline.api_calls();
    if output == Output::Summary {
        summary.write_to(out)?;
    }
    out.flush()?;
    Ok(summary)
}

/// A chunk's lines in input order: reports held until every earlier one is written.
struct InOrder {
    next: usize,
    count: usize,
    held: BTreeMap<usize, Report>,
}

impl InOrder {
    fn new(count: usize) -> InOrder {
        InOrder {
            next: 0,
            count,
            held: BTreeMap::new(),
        }
    }

    /// Reports held for an earlier line.
    fn waiting(&self) -> usize {
        self.held.len()
    }

    fn put(&mut self, index: usize, report: Report) {
        self.held.insert(index, report);
    }

    /// The reports that can be written now, in order. With `done` (nothing of the chunk left in
    /// flight), a line whose report never came (its task lost) is `lost(index)`, so every event
    /// of the chunk gets its line.
    fn take<'a>(
        &'a mut self,
        done: bool,
        lost: impl Fn(usize) -> Report + 'a,
    ) -> impl Iterator<Item = Report> + 'a {
        std::iter::from_fn(move || {
            if self.next >= self.count {
                return None;
            }
            let report = match self.held.remove(&self.next) {
                Some(report) => report,
                None if done => lost(self.next),
                None => return None,
            };
            self.next += 1;
            Some(report)
        })
    }
}

/// One event as one delivery: its line is the report its verdict came with (the event's final
/// outcome, or `failed` once its task was lost too many times in a row).
async fn replay_one<A>(pipeline: &Pipeline, item: Decoded, again: A) -> Report
where
    A: Fn() -> Vec<Decoded>,
{
    let mut line = None;
    let verdict = pipeline
        .deliver(vec![item], Some(&again), |report| line = Some(report))
        .await;
    line.unwrap_or_else(|| {
        // Not reached: a delivery that can be decoded again ends with its event's report.
        let error = match verdict {
            Verdict::Retry(said) => said,
            Verdict::DeadLetter(rejected) => rejected.error,
            Verdict::Done => "the event ended without a report".to_owned(),
        };
        failed_report(again(), error)
    })
}

/// The `failed` line of an event whose task was lost outside the pipeline.
fn lost_report(items: Vec<Decoded>) -> Report {
    failed_report(
        items,
        "internal error: the event's task was lost".to_owned(),
    )
}

/// A `failed` line for an event (decoded again from its bytes) that ended without its report.
fn failed_report(items: Vec<Decoded>, error: String) -> Report {
    let event = items.into_iter().next().and_then(Result::ok);
    Report {
        log_id: event.as_ref().and_then(|e| e.log_id.clone()),
        event_type: event.as_ref().map(|e| e.event_type.clone()),
        user_id: event.as_ref().and_then(|e| e.user()).map(str::to_owned),
        error: Some(error),
        ..Report::with_outcome(Outcome::Failed)
    }
}

/// The bytes a chunk's events were decoded from, kept while they are replayed: an event whose
/// task was lost is decoded again from them (a bug, rare: the whole chunk is decoded again).
/// The chunk's bytes and its decoded events are both held at decode time already: keeping the
/// bytes while the events are replayed does not raise the peak.
struct ChunkBytes {
    bytes: Vec<u8>,
    /// `Some(first line)` for JSON Lines, `None` for a document decoded whole.
    first_line: Option<usize>,
}

impl ChunkBytes {
    fn decode(&self) -> Vec<Decoded> {
        match self.first_line {
            Some(first_line) => decode_json_lines(&self.bytes, first_line),
            None => decode(&self.bytes),
        }
    }

    /// The chunk's `index`th event, decoded again.
    fn item(&self, index: usize) -> Vec<Decoded> {
        self.decode().into_iter().nth(index).into_iter().collect()
    }
}

/// A chunk of an input: its decoded events and the bytes they came from.
struct Chunk {
    items: Vec<Decoded>,
    bytes: ChunkBytes,
}

impl Chunk {
    /// A whole input (a document, or blank), decoded as `decode` does.
    fn whole(bytes: Vec<u8>) -> Chunk {
        let bytes = ChunkBytes {
            bytes,
            first_line: None,
        };
        Chunk {
            items: bytes.decode(),
            bytes,
        }
    }
}

/// An input's events, a chunk at a time: JSON Lines are streamed in chunks of whole lines; an
/// input whose first value spans lines (a pretty-printed document or array) is read whole.
struct Chunks {
    reader: Box<dyn BufRead>,
    /// The number of the next line to read.
    line: usize,
    /// Known once the first non-blank line was read: `true` for JSON Lines.
    streaming: Option<bool>,
    done: bool,
}

impl Chunks {
    fn new(reader: Box<dyn BufRead>) -> Chunks {
        Chunks {
            reader,
            line: 1,
            streaming: None,
            done: false,
        }
    }

    /// The next chunk's decoded events and its bytes; `None` at the end. An empty input gives
    /// one `invalid` item, as `decode` does.
    fn next_chunk(&mut self) -> std::io::Result<Option<Chunk>> {
        if self.done {
            return Ok(None);
        }
        let first_line = self.line;
        let mut chunk = Vec::new();
        while chunk.len() < CHUNK_BYTES {
            let start = chunk.len();
            if self.reader.read_until(b'\n', &mut chunk)? == 0 {
                self.done = true;
                break;
            }
            self.line += 1;
            if self.streaming.is_none() {
                let line = &chunk[start..];
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                let stands_alone = first_line_stands_alone(line);
                self.streaming = Some(stands_alone);
                if !stands_alone {
                    // A document: only the whole input decodes it.
                    self.reader.read_to_end(&mut chunk)?;
                    self.done = true;
                    return Ok(Some(Chunk::whole(chunk)));
                }
            }
        }
        if self.streaming.is_none() {
            // Nothing but blank lines.
            return Ok(Some(Chunk::whole(chunk)));
        }
        if self.done && chunk.iter().all(u8::is_ascii_whitespace) {
            return Ok(None);
        }
        let bytes = ChunkBytes {
            bytes: chunk,
            first_line: Some(first_line),
        };
        Ok(Some(Chunk {
            items: bytes.decode(),
            bytes,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(input: &str) -> Vec<Decoded> {
        let mut chunks = Chunks::new(Box::new(std::io::Cursor::new(input.as_bytes().to_vec())));
        let mut items = Vec::new();
        while let Some(mut chunk) = chunks.next_chunk().unwrap_or_else(|e| panic!("{e}")) {
            assert!(
                chunk.bytes.decode() == chunk.items,
                "a chunk's bytes decode again to its events"
            );
            items.append(&mut chunk.items);
        }
        items
    }

    fn line(index: usize) -> Report {
        failed_report(Vec::new(), format!("line {index}"))
    }

    fn errors(reports: impl Iterator<Item = Report>) -> Vec<String> {
        reports.filter_map(|r| r.error).collect()
    }

    #[test]
    fn lines_come_out_in_input_order_and_a_lost_one_gets_its_line_once_the_chunk_is_done() {
        let mut lines = InOrder::new(4);
        lines.put(2, line(2));
        lines.put(1, line(1));
        assert!(errors(lines.take(false, line)).is_empty(), "line 0 first");
        assert_eq!(lines.waiting(), 2);
        lines.put(0, line(0));
        assert_eq!(
            errors(lines.take(false, line)),
            ["line 0", "line 1", "line 2"]
        );
        // Line 3's report never came: written only once nothing of the chunk is in flight.
        assert!(errors(lines.take(false, line)).is_empty());
        let lost = |_| lost_report(Vec::new());
        assert_eq!(
            errors(lines.take(true, lost)),
            ["internal error: the event's task was lost"]
        );
        assert!(errors(lines.take(true, line)).is_empty(), "every line once");
    }

    #[test]
    fn streamed_chunks_decode_like_the_whole_input() {
        let record = |i: usize| {
            format!(r#"{{"log_id":"{i}","data":{{"type":"ss","user_id":"auth0|{i}"}}}}"#)
        };
        let mut lines = String::from("\n");
        for i in 0..200_000 {
            lines.push_str(&if i % 10 == 3 {
                "garbage".to_owned()
            } else {
                record(i)
            });
            lines.push('\n');
        }
        assert!(
            lines.len() > 2 * CHUNK_BYTES,
            "the input spans several chunks"
        );
        let streamed = all(&lines);
        let whole = decode(lines.as_bytes());
        assert_eq!(streamed.len(), whole.len());
        assert!(
            streamed == whole,
            "same events and the same line numbers in errors"
        );
        let pretty = format!("[\n  {},\n  {}\n]\n", record(1), record(2));
        assert!(all(&pretty) == decode(pretty.as_bytes()));
        assert_eq!(all("").len(), 1, "an empty input is one invalid item");
    }
}
