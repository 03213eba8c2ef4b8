//! Where a reader is: the checkpoint store (a file, locked while a reader runs, written
//! atomically) and the dead-letter file of logs that failed.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::client::log_id_of;
use crate::pipeline::Rejected;

/// Where a reader is: the last log every event up to which reached a final verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub log_id: String,
    /// The `date` of that log, when it had one (the lag and the retention check read it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub date: Option<String>,
}

/// Why a checkpoint could not be read, written or taken.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("checkpoint {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// `source`: the JSON error, when the file is not JSON of a checkpoint.
    #[error("checkpoint {path} is not a checkpoint this service wrote ({detail}): move it away to start again from `start`")]
    Corrupt {
        path: PathBuf,
        detail: String,
        #[source]
        source: Option<serde_json::Error>,
    },
    #[error("another reader holds the checkpoint {path} (lock {lock}): one reader per checkpoint; stop the other instance, or give this one a checkpoint_file of its own for another tenant")]
    Locked { path: PathBuf, lock: PathBuf },
}

/// Where checkpoints live: a file now; the ledger (issue 23) can implement it too.
pub trait CheckpointStore: Send + Sync {
    fn load(&self) -> Result<Option<Checkpoint>, CheckpointError>;
    /// Durable when it returns.
    fn save(&self, checkpoint: &Checkpoint) -> Result<(), CheckpointError>;
    /// Where, for logs and `check`.
    fn describe(&self) -> String;
}

/// A checkpoint in a JSON file, replaced atomically (temp file, fsync, rename, fsync of the
/// directory), guarded by an exclusive lock on `<file>.lock` held as long as the value lives.
pub struct FileCheckpoint {
    path: PathBuf,
    _lock: File,
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> CheckpointError + '_ {
    move |source| CheckpointError::Io {
        path: path.to_owned(),
        source,
    }
}

/// `<path><suffix>` next to the checkpoint.
pub(super) fn beside(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

impl FileCheckpoint {
    /// Takes the lock; a second reader gets [`CheckpointError::Locked`].
    pub fn open(path: &Path) -> Result<FileCheckpoint, CheckpointError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io_error(dir))?;
        }
        let lock_path = beside(path, ".lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_error(&lock_path))?;
        if !try_lock_exclusive(&lock).map_err(io_error(&lock_path))? {
            return Err(CheckpointError::Locked {
                path: path.to_owned(),
                lock: lock_path,
            });
        }
        Ok(FileCheckpoint {
            path: path.to_owned(),
            _lock: lock,
        })
    }

    /// The checkpoint in `path`, read without the lock (`check`).
    pub fn peek(path: &Path) -> Result<Option<Checkpoint>, CheckpointError> {
        read_checkpoint(path)
    }

    /// The dead-letter file of this checkpoint.
    pub fn dead_letter_path(&self) -> PathBuf {
        beside(&self.path, ".dead-letters.jsonl")
    }
}

/// An exclusive, non-blocking `flock` on `file`: `Ok(false)` when another holds it. Released
/// when the file is closed (also when the process dies).
#[cfg(unix)]
fn try_lock_exclusive(file: &File) -> std::io::Result<bool> {
    use rustix::fs::{flock, FlockOperation};
    match flock(file, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(true),
        Err(rustix::io::Errno::WOULDBLOCK) => Ok(false),
        Err(errno) => Err(std::io::Error::from(errno)),
    }
}

/// Not enforced off Unix: one reader per checkpoint is the deployment's to keep.
#[cfg(not(unix))]
fn try_lock_exclusive(_file: &File) -> std::io::Result<bool> {
    tracing::warn!(
        "the checkpoint lock is not enforced on this platform: run one reader per checkpoint"
    );
    Ok(true)
}

fn read_checkpoint(path: &Path) -> Result<Option<Checkpoint>, CheckpointError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(CheckpointError::Io {
                path: path.to_owned(),
                source,
            })
        }
    };
    let checkpoint: Checkpoint =
        serde_json::from_str(&text).map_err(|e| CheckpointError::Corrupt {
            path: path.to_owned(),
            detail: "not JSON of a checkpoint".to_owned(),
            source: Some(e),
        })?;
    if checkpoint.log_id.is_empty() || !checkpoint.log_id.chars().all(|c| c.is_ascii_digit()) {
        return Err(CheckpointError::Corrupt {
            path: path.to_owned(),
            detail: "log_id is not a log id".to_owned(),
            source: None,
        });
    }
    Ok(Some(checkpoint))
}

impl CheckpointStore for FileCheckpoint {
    fn load(&self) -> Result<Option<Checkpoint>, CheckpointError> {
        read_checkpoint(&self.path)
    }

    fn save(&self, checkpoint: &Checkpoint) -> Result<(), CheckpointError> {
        let text = serde_json::to_vec(checkpoint).map_err(|e| CheckpointError::Corrupt {
            path: self.path.clone(),
            detail: "cannot be encoded".to_owned(),
            source: Some(e),
        })?;
        self.save_bytes(&text)
    }

    fn describe(&self) -> String {
        self.path.display().to_string()
    }
}

impl FileCheckpoint {
    /// The file's text (`None` when there is none yet): for other checkpoint formats that
    /// share the file, lock and dead-letter handling (the Events API reader).
    pub(crate) fn read_text(&self) -> Result<Option<String>, CheckpointError> {
        match std::fs::read_to_string(&self.path) {
            Ok(text) => Ok(Some(text)),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(CheckpointError::Io {
                path: self.path.clone(),
                source,
            }),
        }
    }

    /// Replaces the file's content atomically (temp file, fsync, rename, fsync of the
    /// directory): durable when it returns.
    pub(crate) fn save_bytes(&self, text: &[u8]) -> Result<(), CheckpointError> {
        let tmp = beside(&self.path, ".tmp");
        let mut file = File::create(&tmp).map_err(io_error(&tmp))?;
        file.write_all(text).map_err(io_error(&tmp))?;
        file.sync_all().map_err(io_error(&tmp))?;
        drop(file);
        std::fs::rename(&tmp, &self.path).map_err(io_error(&self.path))?;
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            // The rename is durable once the directory is.
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(io_error(dir))?;
        }
        Ok(())
    }
}

/// Appends dead-lettered logs (one JSON object a line, fsynced) next to the checkpoint.
pub struct DeadLetterFile {
    path: PathBuf,
}

impl DeadLetterFile {
    pub fn new(path: PathBuf) -> DeadLetterFile {
        DeadLetterFile { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub(super) fn append(&self, log: &Value, rejected: &Rejected) -> Result<(), CheckpointError> {
        self.append_value(&serde_json::json!({
            "reason": rejected.reason(),
            "error": rejected.error,
            "log_id": log_id_of(log),
            "log": log,
        }))
    }

    /// Appends `line` as one JSON line, fsynced.
    pub(crate) fn append_value(&self, line: &Value) -> Result<(), CheckpointError> {
        let mut bytes = serde_json::to_vec(line).unwrap_or_default();
        bytes.push(b'\n');
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(io_error(&self.path))?;
        file.write_all(&bytes).map_err(io_error(&self.path))?;
        file.sync_data().map_err(io_error(&self.path))
    }
}
