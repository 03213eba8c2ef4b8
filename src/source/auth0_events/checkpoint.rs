//! The Events API reader's place in the stream: [`Progress`], the advance rule (the checkpoint
//! moves past an event only once it reached its verdict, and past an `offset-only` marker only
//! when nothing before it is pending), and [`EventsCheckpointFile`], the offset kept on disk
//! through the Logs API reader's [`FileCheckpoint`] (atomic replace, one reader per file by a
//! lock, the dead-letter file beside it).

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::source::auth0_logs::{CheckpointError, FileCheckpoint};

/// The longest offset accepted (the `from` parameter's documented limit).
pub const MAX_OFFSET: usize = 1024;

/// What the checkpoint file holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventsCheckpoint {
    /// The offset (`id`) every message up to which reached its verdict: reading resumes after
    /// it (`from`).
    pub offset: String,
    /// The `time` of the last event settled, as the event gave it: where reading resumes by
    /// `from_timestamp` when the offset has expired (410).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
}

/// Whether `offset` can be sent back as `from` / `Last-Event-ID`.
pub fn usable_offset(offset: &str) -> bool {
    !offset.is_empty()
        && offset.len() <= MAX_OFFSET
        && !offset.chars().any(|c| c.is_control() || c.is_whitespace())
}

/// The checkpoint in a file, locked for as long as the value lives.
pub struct EventsCheckpointFile {
    file: FileCheckpoint,
    path: PathBuf,
}

impl EventsCheckpointFile {
    /// Takes the lock: a second reader of the same file gets [`CheckpointError::Locked`].
    pub fn open(path: &Path) -> Result<EventsCheckpointFile, CheckpointError> {
        Ok(EventsCheckpointFile {
            file: FileCheckpoint::open(path)?,
            path: path.to_owned(),
        })
    }

    pub fn load(&self) -> Result<Option<EventsCheckpoint>, CheckpointError> {
        let Some(text) = self.file.read_text()? else {
            return Ok(None);
        };
        parse(&self.path, &text).map(Some)
    }

    /// Durable when it returns.
    pub fn save(&self, checkpoint: &EventsCheckpoint) -> Result<(), CheckpointError> {
        let bytes = serde_json::to_vec(checkpoint).map_err(|e| CheckpointError::Corrupt {
            path: self.path.clone(),
            detail: "cannot be encoded".to_owned(),
            source: Some(e),
        })?;
        self.file.save_bytes(&bytes)
    }

    pub fn dead_letter_path(&self) -> PathBuf {
        self.file.dead_letter_path()
    }

    pub fn describe(&self) -> String {
        self.path.display().to_string()
    }

    /// The checkpoint in `path`, read without the lock (`check`).
    pub fn peek(path: &Path) -> Result<Option<EventsCheckpoint>, CheckpointError> {
        match std::fs::read_to_string(path) {
            Ok(text) => parse(path, &text).map(Some),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(CheckpointError::Io {
                path: path.to_owned(),
                source,
            }),
        }
    }
}

fn parse(path: &Path, text: &str) -> Result<EventsCheckpoint, CheckpointError> {
    let checkpoint: EventsCheckpoint =
        serde_json::from_str(text).map_err(|e| CheckpointError::Corrupt {
            path: path.to_owned(),
            detail: "not JSON of a checkpoint".to_owned(),
            source: Some(e),
        })?;
    if !usable_offset(&checkpoint.offset) {
        return Err(CheckpointError::Corrupt {
            path: path.to_owned(),
            detail: "offset is not an Events API offset".to_owned(),
            source: None,
        });
    }
    Ok(checkpoint)
}

/// A message of the stream, in arrival order.
#[derive(Debug)]
struct Arrival {
    offset: Option<String>,
    /// An event's `time` (markers have none).
    time: Option<String>,
    resolved: bool,
}

/// Where the stream is settled up to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    pub offset: String,
    pub time: Option<String>,
}

/// The advance rule: messages enter in arrival order, events pending until their verdict,
/// markers settled on arrival; the checkpoint is the last offset of the longest settled prefix.
#[derive(Debug, Default)]
pub struct Progress {
    /// The sequence number of `arrivals[0]`.
    front: u64,
    arrivals: VecDeque<Arrival>,
    settled: Option<Position>,
    /// `settled` changed since [`Progress::take_unsaved`].
    unsaved: bool,
    /// The time of the last event settled (kept when a marker moves the offset on).
    last_time: Option<String>,
}

impl Progress {
    /// Progress resuming from a saved checkpoint.
    pub fn from_checkpoint(checkpoint: Option<&EventsCheckpoint>) -> Progress {
        Progress {
            settled: checkpoint.map(|c| Position {
                offset: c.offset.clone(),
                time: c.time.clone(),
            }),
            last_time: checkpoint.and_then(|c| c.time.clone()),
            ..Progress::default()
        }
    }

    /// An event arrived: pending until [`Progress::resolve`] with the number returned.
    pub fn event(&mut self, offset: Option<String>, time: Option<String>) -> u64 {
        self.push(Arrival {
            offset,
            time,
            resolved: false,
        })
    }

    /// An `offset-only` marker arrived: settled at once, so the checkpoint reaches it as soon
    /// as every event before it is settled.
    pub fn marker(&mut self, offset: String) {
        self.push(Arrival {
            offset: Some(offset),
            time: None,
            resolved: true,
        });
        self.settle();
    }

    fn push(&mut self, arrival: Arrival) -> u64 {
        let seq = self.front + self.arrivals.len() as u64;
        self.arrivals.push_back(arrival);
        seq
    }

    /// The event `seq` reached its verdict. Unknown or repeated numbers change nothing.
    pub fn resolve(&mut self, seq: u64) {
        let Some(index) = seq.checked_sub(self.front) else {
            return;
        };
        if let Some(arrival) = usize::try_from(index)
            .ok()
            .and_then(|i| self.arrivals.get_mut(i))
        {
            arrival.resolved = true;
        }
        self.settle();
    }

    fn settle(&mut self) {
        while self.arrivals.front().is_some_and(|a| a.resolved) {
            let Some(arrival) = self.arrivals.pop_front() else {
                break;
            };
            self.front += 1;
            if arrival.time.is_some() {
                self.last_time = arrival.time;
            }
            if let Some(offset) = arrival.offset {
                self.settled = Some(Position {
                    offset,
                    time: self.last_time.clone(),
                });
                self.unsaved = true;
            }
        }
    }

    /// Events arrived and not yet settled (markers behind them included).
    pub fn pending(&self) -> usize {
        self.arrivals.len()
    }

    /// The checkpoint as it stands.
    pub fn settled(&self) -> Option<&Position> {
        self.settled.as_ref()
    }

    /// The checkpoint, when it changed since the last call.
    pub fn take_unsaved(&mut self) -> Option<EventsCheckpoint> {
        if !std::mem::take(&mut self.unsaved) {
            return None;
        }
        self.settled.as_ref().map(|p| EventsCheckpoint {
            offset: p.offset.clone(),
            time: p.time.clone(),
        })
    }

    /// Puts back a checkpoint [`Progress::take_unsaved`] gave but that could not be written.
    pub fn unsaved_again(&mut self) {
        self.unsaved = true;
    }

    /// The time of the last event settled (where reading resumes by `from_timestamp` after
    /// an expired offset), as the event gave it.
    pub fn last_event_time(&self) -> Option<&str> {
        self.last_time.as_deref()
    }
}

/// An RFC 3339 time with any offset, at or after 1970.
pub fn parse_time(text: &str) -> Option<SystemTime> {
    let at =
        time::OffsetDateTime::parse(text.trim(), &time::format_description::well_known::Rfc3339)
            .ok()?;
    let nanos = u64::try_from(at.unix_timestamp_nanos()).ok()?;
    Some(SystemTime::UNIX_EPOCH + std::time::Duration::from_nanos(nanos))
}

/// `at` as `from_timestamp` takes it: `YYYY-MM-DDTHH:MM:SSZ` (20 characters, the parameter's
/// limit), rounded down to the second so the event of that time is read again.
pub fn from_timestamp(at: SystemTime) -> Option<String> {
    let secs = at.duration_since(SystemTime::UNIX_EPOCH).ok()?.as_secs();
    let whole = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(secs);
    let text = humantime::format_rfc3339_seconds(whole).to_string();
    (text.len() == 20).then_some(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Step {
        Event,
        Marker,
        /// Resolve the n-th pending event (modulo how many are pending).
        Resolve(usize),
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            3 => Just(Step::Event),
            1 => Just(Step::Marker),
            3 => any::<usize>().prop_map(Step::Resolve),
        ]
    }

    proptest! {
        /// Against a plain model (a list of arrivals with a settled flag): the checkpoint is
        /// the offset of the last arrival of the longest settled prefix, so it never passes an
        /// event still pending, and it reaches every marker once nothing before it is pending.
        #[test]
        fn the_checkpoint_never_passes_a_pending_event(steps in proptest::collection::vec(step(), 0..200)) {
            let mut progress = Progress::default();
            // (offset, settled, seq for events)
            let mut model: Vec<(String, bool, Option<u64>)> = Vec::new();
            for (i, step) in steps.into_iter().enumerate() {
                let offset = format!("o{i}");
                match step {
                    Step::Event => {
                        let seq = progress.event(Some(offset.clone()), Some(format!("t{i}")));
                        model.push((offset, false, Some(seq)));
                    }
                    Step::Marker => {
                        progress.marker(offset.clone());
                        model.push((offset, true, None));
                    }
                    Step::Resolve(n) => {
                        let pending: Vec<usize> = model
                            .iter()
                            .enumerate()
                            .filter(|(_, a)| !a.1)
                            .map(|(i, _)| i)
                            .collect();
                        if pending.is_empty() {
                            continue;
                        }
                        let at = pending[n % pending.len()];
                        model[at].1 = true;
                        if let Some(seq) = model[at].2 {
                            progress.resolve(seq);
                            // Resolving twice changes nothing.
                            progress.resolve(seq);
                        }
                    }
                }
                let prefix = model.iter().take_while(|a| a.1).count();
                let expected = prefix.checked_sub(1).map(|last| model[last].0.clone());
                prop_assert_eq!(progress.settled().map(|p| p.offset.clone()), expected.clone());
                if let Some(expected) = expected {
                    let index = model.iter().position(|a| a.0 == expected).unwrap_or(0);
                    prop_assert!(model[..=index].iter().all(|a| a.1), "passed a pending event");
                }
                prop_assert_eq!(progress.pending(), model.len() - prefix);
            }
        }
    }

    #[test]
    fn from_timestamp_is_twenty_characters_rounded_down() {
        let at = parse_time("2026-12-07T05:10:11.900+01:00");
        assert_eq!(
            at.and_then(from_timestamp).as_deref(),
            Some("2026-12-07T04:10:11Z")
        );
        assert_eq!(parse_time("yesterday"), None);
    }

    #[test]
    fn a_marker_waits_for_the_events_before_it_and_the_time_is_the_last_events() {
        let mut progress = Progress::default();
        let a = progress.event(Some("a".into()), Some("2026-12-01T00:00:00Z".into()));
        let b = progress.event(Some("b".into()), Some("2026-12-01T00:00:01Z".into()));
        progress.marker("m".into());
        assert_eq!(progress.settled(), None);
        progress.resolve(b);
        assert_eq!(progress.settled(), None, "a is still pending");
        progress.resolve(a);
        let settled = progress.take_unsaved();
        assert_eq!(
            settled,
            Some(EventsCheckpoint {
                offset: "m".into(),
                time: Some("2026-12-01T00:00:01Z".into())
            })
        );
        assert_eq!(progress.take_unsaved(), None);
        assert_eq!(progress.pending(), 0);
    }

    #[test]
    fn the_file_is_locked_saved_atomically_and_checked() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("events.checkpoint");
        let file = EventsCheckpointFile::open(&path).unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(file.load(), Ok(None)));
        let checkpoint = EventsCheckpoint {
            offset: "MTIz".into(),
            time: None,
        };
        file.save(&checkpoint).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(file.load().ok().flatten(), Some(checkpoint));
        assert!(matches!(
            EventsCheckpointFile::open(&path),
            Err(CheckpointError::Locked { .. })
        ));
        std::fs::write(&path, r#"{"offset":"a b"}"#).unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(file.load(), Err(CheckpointError::Corrupt { .. })));
    }
}
