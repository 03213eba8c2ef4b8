//! `--state FILE`: an append-only JSON Lines journal of an apply, synced after every line, so an
//! interrupted apply (Ctrl-C, SIGTERM, SIGKILL, a crash) resumes where it stopped: the export
//! downloaded, then each batch written (its role and users), each user that failed, and `done`.
//! A torn last line (a kill mid-write) is ignored.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// One journal line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Entry {
    /// The tenant (`auth0.domain`) the journal is about: a resume against another is refused.
    Tenant { domain: String },
    /// The export is on disk at `export` (from job `job`, or a `--users` file).
    Export {
        export: PathBuf,
        job: Option<String>,
    },
    /// A batch was written: every user in it now holds `role` (of id `role_id`: a role deleted
    /// and created again under the same name has a new id, and its old batches no longer count).
    Batch {
        role: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        role_id: Option<String>,
        users: Vec<String>,
    },
    /// A user could not be given `role` (404: deleted since the export, or refused).
    Failed {
        role: String,
        user: String,
        error: String,
    },
    /// The apply finished.
    Done,
}

/// What an earlier, unfinished apply left.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Resume {
    /// The tenant the interrupted apply worked on (absent in journals of older versions).
    pub tenant: Option<String>,
    pub export: Option<PathBuf>,
    pub job: Option<String>,
    /// Users given each role by finished batches, by role name and id (no id in journals of
    /// older versions).
    pub finished: BTreeMap<(String, Option<String>), Vec<String>>,
    pub batches: usize,
}

/// Why the journal cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("state file {path}: {source}")]
pub struct StateError {
    path: PathBuf,
    source: std::io::Error,
}

/// The open journal.
pub struct Journal {
    path: PathBuf,
    file: std::fs::File,
}

impl Journal {
    /// Opens `path`: an unfinished journal is resumed (`Some`), a finished or absent one starts
    /// over (`None`).
    pub fn open(path: &Path) -> Result<(Journal, Option<Resume>), StateError> {
        let error = |source| StateError {
            path: path.to_owned(),
            source,
        };
        let mut resume = Resume::default();
        let mut done = false;
        let mut any = false;
        if let Ok(file) = std::fs::File::open(path) {
            for line in BufReader::new(file).split(b'\n') {
                let line = line.map_err(error)?;
                // A torn line (killed mid-write) is skipped.
                let Ok(entry) = serde_json::from_slice::<Entry>(&line) else {
                    continue;
                };
                any = true;
                match entry {
                    Entry::Tenant { domain } => resume.tenant = Some(domain),
                    Entry::Export { export, job } => {
                        resume.export = Some(export);
                        resume.job = job;
                    }
                    Entry::Batch {
                        role,
                        role_id,
                        users,
                    } => {
                        resume.batches += 1;
                        resume
                            .finished
                            .entry((role, role_id))
                            .or_default()
                            .extend(users);
                    }
                    Entry::Failed { .. } => {}
                    Entry::Done => done = true,
                }
            }
        }
        let resuming = any && !done;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(resuming)
            .write(true)
            .truncate(!resuming)
            .open(path)
            .map_err(error)?;
        let mut journal = Journal {
            path: path.to_owned(),
            file,
        };
        if resuming {
            // A torn last line must not glue itself to the next entry.
            journal.file.write_all(b"\n").map_err(error)?;
        }
        Ok((journal, resuming.then_some(resume)))
    }

    /// Appends `entry` and syncs it to disk.
    pub fn record(&mut self, entry: &Entry) -> Result<(), StateError> {
        let error = |source| StateError {
            path: self.path.clone(),
            source,
        };
        let mut line = serde_json::to_vec(entry).map_err(|e| error(e.into()))?;
        line.push(b'\n');
        self.file.write_all(&line).map_err(error)?;
        self.file.sync_data().map_err(error)
    }

    /// Where the export is kept for a resume: next to the journal.
    pub fn export_path(&self) -> PathBuf {
        let mut name = self.path.as_os_str().to_owned();
        name.push(".export.json.gz");
        PathBuf::from(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unfinished_journal_resumes_and_a_finished_one_starts_over() {
        let temp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let dir = temp.path().to_path_buf();
        let path = dir.join("state.jsonl");
        let _ = std::fs::remove_file(&path);
        let (mut journal, resume) = Journal::open(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(resume, None);
        let export = journal.export_path();
        let entries = [
            Entry::Export {
                export: export.clone(),
                job: Some("job_1".into()),
            },
            Entry::Batch {
                role: "member".into(),
                role_id: Some("rol_1".into()),
                users: vec!["a".into(), "b".into()],
            },
            Entry::Batch {
                role: "member".into(),
                role_id: Some("rol_1".into()),
                users: vec!["c".into()],
            },
        ];
        for entry in &entries {
            journal.record(entry).unwrap_or_else(|e| panic!("{e}"));
        }
        drop(journal);
        // Killed in the middle of a line.
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap_or_else(|e| panic!("{e}"));
        file.write_all(br#"{"kind":"batch","role":"mem"#)
            .unwrap_or_else(|e| panic!("{e}"));
        drop(file);
        let (mut journal, resume) = Journal::open(&path).unwrap_or_else(|e| panic!("{e}"));
        let resume = resume.unwrap_or_else(|| panic!("resumes"));
        assert_eq!(resume.export, Some(export));
        assert_eq!(resume.batches, 2);
        assert_eq!(
            resume.finished[&("member".to_owned(), Some("rol_1".to_owned()))],
            vec!["a", "b", "c"]
        );
        journal
            .record(&Entry::Batch {
                role: "admin".into(),
                role_id: None,
                users: vec!["d".into()],
            })
            .unwrap_or_else(|e| panic!("{e}"));
        journal
            .record(&Entry::Done)
            .unwrap_or_else(|e| panic!("{e}"));
        drop(journal);
        let (_, resume) = Journal::open(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(resume, None, "a finished apply starts over");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
