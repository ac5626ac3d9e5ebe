//! The sweep journal: every state change of a sweep, appended before it is acted on.
//!
//! One JSON object per line in `journal.jsonl`. A record is written (one `write` call
//! reaching the OS) before the coordinator acts on it, so a process killed at any
//! instant loses nothing it acted on; `fdatasync` runs on every Parquet flush and at the
//! end of the sweep, so a machine crash loses at most the records since the last flush.
//! A torn last line (a crash mid-write) is ignored on replay and cut off before
//! appending.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tessera_core::ReplayEvent;
use tessera_core::trial::{MetricValues, TrialId, TrialRequest};

use crate::store::{MetricRow, TrialRow};

/// Journal format version, written in the first record.
pub const JOURNAL_VERSION: u32 = 1;

/// Errors reading or writing the journal.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// File-system failure.
    #[error("journal {path}: {source}")]
    Io {
        /// The journal file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A record in the middle of the file does not parse.
    #[error("journal {path} is corrupt at line {line}: {message}")]
    Corrupt {
        /// The journal file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// Parser message.
        message: String,
    },
}

/// One state change of a sweep.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Record {
    /// The sweep began: which spec, which seed.
    Started {
        /// Journal format version.
        version: u32,
        /// Hash of the validated spec; a resume with another spec is refused.
        spec_hash: String,
        /// The seed in force (drawn if the file had none).
        seed: u64,
        /// Milliseconds since the Unix epoch.
        at_ms: i64,
    },
    /// The searcher asked for a trial.
    Issued {
        /// The trial.
        request: TrialRequest,
    },
    /// A report at an early-stopping milestone (replayed to rebuild the rule).
    Milestone {
        /// The trial.
        trial_id: TrialId,
        /// Step.
        step: u64,
        /// Metrics at that step.
        metrics: MetricValues,
    },
    /// An attempt failed and the trial will be tried again.
    Retry {
        /// The trial.
        trial_id: TrialId,
        /// The attempt that failed.
        attempt: u32,
        /// Its error.
        error: String,
    },
    /// A trial ended for good: its row and its metrics.
    Finished {
        /// The trials-table row.
        row: TrialRow,
        /// Its metric rows.
        metrics: Vec<MetricRow>,
        /// Rows for results tables besides the metrics.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        artifacts: Vec<tessera_core::trial::Artifact>,
    },
    /// A Parquet part became visible, holding these trials.
    Flushed {
        /// Part number.
        part: u64,
        /// Trials whose rows (and metrics) the part holds.
        trial_ids: Vec<TrialId>,
    },
    /// The sweep was cancelled: nothing more is issued.
    Cancelled {
        /// Milliseconds since the Unix epoch.
        at_ms: i64,
    },
    /// Every trial is finished and flushed.
    Completed {
        /// Milliseconds since the Unix epoch.
        at_ms: i64,
    },
}

/// What a journal says about a sweep, rebuilt by replaying it.
#[derive(Debug, Clone, Default)]
pub struct JournalState {
    /// The `Started` record's spec hash and seed.
    pub started: Option<(String, u64)>,
    /// Trials issued, in order.
    pub issued: Vec<TrialRequest>,
    /// Issued trials and told outcomes, in journal order (to rebuild the searcher).
    pub replay: Vec<ReplayEvent>,
    /// Milestone reports, in order.
    pub milestones: Vec<(TrialId, u64, MetricValues)>,
    /// Failed attempts per trial.
    pub retries: BTreeMap<TrialId, u32>,
    /// Finished trials.
    pub finished: BTreeMap<TrialId, (TrialRow, Vec<MetricRow>, Vec<tessera_core::trial::Artifact>)>,
    /// Parts made visible.
    pub flushed_parts: BTreeSet<u64>,
    /// Trials whose rows are in a visible part.
    pub flushed_trials: BTreeSet<TrialId>,
    /// Whether the sweep completed.
    pub completed: bool,
    /// Whether the sweep was cancelled.
    pub cancelled: bool,
}

impl JournalState {
    fn apply(&mut self, r: Record) {
        match r {
            Record::Started {
                spec_hash, seed, ..
            } => self.started = Some((spec_hash, seed)),
            Record::Issued { request } => {
                self.replay.push(ReplayEvent::Issued(request.clone()));
                self.issued.push(request);
            }
            Record::Milestone {
                trial_id,
                step,
                metrics,
            } => self.milestones.push((trial_id, step, metrics)),
            Record::Retry {
                trial_id, attempt, ..
            } => {
                let e = self.retries.entry(trial_id).or_default();
                *e = (*e).max(attempt);
            }
            Record::Finished {
                row,
                metrics,
                artifacts,
            } => {
                let mut outcome = row.outcome();
                outcome.artifacts = artifacts.clone();
                self.replay.push(ReplayEvent::Told(outcome));
                self.finished
                    .insert(row.trial_id, (row, metrics, artifacts));
            }
            Record::Flushed { part, trial_ids } => {
                self.flushed_parts.insert(part);
                self.flushed_trials.extend(trial_ids);
            }
            Record::Completed { .. } => self.completed = true,
            Record::Cancelled { .. } => self.cancelled = true,
        }
    }
}

/// An open journal, positioned at its end.
pub struct Journal {
    path: PathBuf,
    file: File,
    buf: Vec<u8>,
    unsynced: usize,
    /// Length of the file up to the last complete record.
    len: u64,
    /// A write failed: no record is appended after a gap, so replay never sees one.
    broken: bool,
}

impl Journal {
    /// Opens (creating if absent) the journal at `path` and replays it.
    pub fn open(path: &Path) -> Result<(Self, JournalState), JournalError> {
        let io = |source| JournalError::Io {
            path: path.to_owned(),
            source,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)
            .map_err(io)?;
        let mut state = JournalState::default();
        let mut good_len = 0u64;
        let mut reader = BufReader::new(&file);
        // Bytes, not a String: a torn write can end in the middle of a UTF-8 character.
        let mut line: Vec<u8> = Vec::new();
        let mut lineno = 0;
        let mut pending_error: Option<(usize, String)> = None;
        loop {
            line.clear();
            let n = reader.read_until(b'\n', &mut line).map_err(io)?;
            if n == 0 {
                break;
            }
            lineno += 1;
            if let Some((l, m)) = pending_error.take() {
                // A bad record followed by more records is corruption, not a torn tail.
                return Err(JournalError::Corrupt {
                    path: path.to_owned(),
                    line: l,
                    message: m,
                });
            }
            if line.last() != Some(&b'\n') {
                break; // torn last write
            }
            match serde_json::from_slice::<Record>(&line[..line.len() - 1]) {
                Ok(r) => {
                    state.apply(r);
                    good_len += n as u64;
                }
                Err(e) => pending_error = Some((lineno, e.to_string())),
            }
        }
        drop(reader);
        if file.metadata().map_err(io)?.len() != good_len {
            file.set_len(good_len).map_err(io)?;
            file.sync_data().map_err(io)?;
        }
        file.seek(SeekFrom::End(0)).map_err(io)?;
        Ok((
            Self {
                path: path.to_owned(),
                file,
                buf: Vec::with_capacity(4096),
                unsynced: 0,
                len: good_len,
                broken: false,
            },
            state,
        ))
    }

    /// Appends a record: it has reached the OS when this returns.
    pub fn append(&mut self, record: &Record) -> Result<(), JournalError> {
        self.buf.clear();
        serde_json::to_writer(&mut self.buf, record).map_err(|e| JournalError::Io {
            path: self.path.clone(),
            source: e.into(),
        })?;
        self.buf.push(b'\n');
        if self.broken {
            return Err(JournalError::Io {
                path: self.path.clone(),
                source: std::io::Error::other(
                    "an earlier write failed; resume the run to continue",
                ),
            });
        }
        let t = std::time::Instant::now();
        if let Err(source) = self.file.write_all(&self.buf) {
            // Cut a partial record off, and refuse every later one.
            self.broken = true;
            let _ = self.file.set_len(self.len);
            return Err(JournalError::Io {
                path: self.path.clone(),
                source,
            });
        }
        self.len += self.buf.len() as u64;
        crate::metrics::JOURNAL_WRITE
            .with_label_values(&["append"])
            .observe(t.elapsed().as_secs_f64());
        self.unsynced += 1;
        Ok(())
    }

    /// Forces appended records to stable storage.
    pub fn sync(&mut self) -> Result<(), JournalError> {
        if self.unsynced > 0 {
            let t = std::time::Instant::now();
            self.file.sync_data().map_err(|source| JournalError::Io {
                path: self.path.clone(),
                source,
            })?;
            crate::metrics::JOURNAL_WRITE
                .with_label_values(&["sync"])
                .observe(t.elapsed().as_secs_f64());
            self.unsynced = 0;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replays_and_ignores_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.jsonl");
        {
            let (mut j, s) = Journal::open(&path).unwrap();
            assert!(s.started.is_none());
            j.append(&Record::Started {
                version: 1,
                spec_hash: "h".into(),
                seed: 5,
                at_ms: 0,
            })
            .unwrap();
            j.append(&Record::Flushed {
                part: 1,
                trial_ids: vec![0, 1],
            })
            .unwrap();
        }
        // A crash in the middle of a write leaves half a line.
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"type\":\"flushed\",\"part\":2,\"tri")
            .unwrap();
        drop(f);
        let (mut j, s) = Journal::open(&path).unwrap();
        assert_eq!(s.started, Some(("h".into(), 5)));
        assert_eq!(s.flushed_parts.iter().copied().collect::<Vec<_>>(), vec![1]);
        j.append(&Record::Completed { at_ms: 1 }).unwrap();
        let (_, s) = Journal::open(&path).unwrap();
        assert!(s.completed);
    }

    #[test]
    fn a_tail_torn_inside_a_utf8_character_is_still_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.jsonl");
        {
            let (mut j, _) = Journal::open(&path).unwrap();
            j.append(&Record::Retry {
                trial_id: 0,
                attempt: 1,
                error: "première".into(),
            })
            .unwrap();
            j.append(&Record::Retry {
                trial_id: 1,
                attempt: 1,
                error: "déjà vu".into(),
            })
            .unwrap();
        }
        let bytes = std::fs::read(&path).unwrap();
        let cut = bytes.len() - "jà vu\"}\n".len() + 1; // inside the two-byte `à`
        std::fs::write(&path, &bytes[..cut]).unwrap();
        let (_, s) = Journal::open(&path).unwrap();
        assert_eq!(s.retries.len(), 1);
    }

    #[test]
    fn corruption_in_the_middle_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.jsonl");
        std::fs::write(&path, "{\"type\":\"completed\",\"at_ms\":1}\nnot json\n{\"type\":\"completed\",\"at_ms\":1}\n").unwrap();
        assert!(matches!(
            Journal::open(&path),
            Err(JournalError::Corrupt { line: 2, .. })
        ));
    }
}
