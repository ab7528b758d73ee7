//! The feedback log: every agent correction, durably, in order.
//!
//! `feedback.jsonl` in the data directory is the audit trail of corrections
//! and the record of which tickets are agent-verified examples (those may
//! overrule the model, and a pack re-ingest keeps their labels). Each append
//! is synced before the caller is answered; a torn last line (a crash
//! mid-append) is cut off at the next start.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// One stored correction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeedbackRecord {
    /// When it was received (RFC 3339).
    pub at: String,
    /// Tenant of the ticket.
    pub tenant: String,
    /// The ticket it corrected or confirmed.
    pub ticket_id: String,
    /// What changed.
    pub changes: Vec<String>,
    /// Article that got a new phrasing, if any.
    pub article: Option<String>,
}

/// Append-only JSONL log of corrections; each append is synced before returning.
#[derive(Debug)]
pub struct FeedbackLog {
    path: PathBuf,
    file: Mutex<File>,
}

impl FeedbackLog {
    /// Opens (creating) the log and returns the records already in it. A torn
    /// last line (a crash mid-append, even one that cut a multi-byte character)
    /// is skipped with a warning and cut off the file, so the next append does
    /// not bury it mid-file; an undecodable line elsewhere is an error (see
    /// [`scan`]).
    pub fn open(path: &Path) -> Result<(FeedbackLog, Vec<FeedbackRecord>)> {
        let io = |source| Error::Io {
            path: path.to_path_buf(),
            source,
        };
        let scan = scan(path)?;
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(io)?;
        if let Some(torn_at) = scan.torn_at {
            tracing::warn!(
                offset = torn_at,
                "cutting the torn last line off {}",
                path.display()
            );
            file.set_len(torn_at).map_err(io)?;
            file.sync_data().map_err(io)?;
        }
        let records = scan.records;
        Ok((
            FeedbackLog {
                path: path.to_path_buf(),
                file: Mutex::new(file),
            },
            records,
        ))
    }

    /// Appends one record durably.
    pub fn append(&self, record: &FeedbackRecord) -> Result<()> {
        let io = |source| Error::Io {
            path: self.path.clone(),
            source,
        };
        let line = serde_json::to_string(record).map_err(|e| Error::Numeric(e.to_string()))?;
        let mut f = self
            .file
            .lock()
            .map_err(|_| Error::Numeric("feedback log lock poisoned".into()))?;
        let before = f.metadata().map_err(io)?.len();
        // Start on a fresh line even if a previous append was torn.
        let written = f
            .write_all(format!("\n{line}\n").as_bytes())
            .and_then(|()| f.sync_data());
        if let Err(e) = written {
            // Take a partial record back off the file: the caller is told it
            // failed, and a later append must not bury it mid-file.
            if let Err(cut) = f.set_len(before) {
                tracing::warn!(
                    error = %cut,
                    "could not cut a failed append off {}",
                    self.path.display()
                );
            }
            return Err(io(e));
        }
        Ok(())
    }
}

/// What [`scan`] found in a feedback log.
#[derive(Default)]
struct Scan {
    /// The records, in file order.
    records: Vec<FeedbackRecord>,
    /// Byte offset of a skipped (torn) last line, where the file can be cut.
    torn_at: Option<u64>,
}

/// Reads the log at `path` (none if it does not exist) as bytes and parses it
/// line by line. A last line that is not valid UTF-8 or not a record (a torn
/// append) is skipped with a warning. Elsewhere, a line that is not a record
/// is corruption and an error naming the file and line.
fn scan(path: &Path) -> Result<Scan> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Scan::default()),
        Err(source) => {
            return Err(Error::Io {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    // `(byte offset, line)` for every line, the last one with or without a newline.
    let mut lines: Vec<(usize, &[u8])> = Vec::new();
    let mut start = 0;
    for piece in bytes.split_inclusive(|&b| b == b'\n') {
        lines.push((start, piece.strip_suffix(b"\n").unwrap_or(piece)));
        start += piece.len();
    }
    let blank = |l: &[u8]| l.iter().all(u8::is_ascii_whitespace);
    let last = lines.iter().rposition(|(_, l)| !blank(l));
    let mut scan = Scan::default();
    for (n, &(offset, raw)) in lines.iter().enumerate() {
        if blank(raw) {
            continue;
        }
        let is_last = Some(n) == last;
        let parsed = match std::str::from_utf8(raw) {
            Ok(text) => serde_json::from_str::<FeedbackRecord>(text).map_err(|e| e.to_string()),
            Err(e) if is_last => Err(format!("not valid UTF-8: {e}")),
            Err(e) => {
                return Err(corrupt(
                    path,
                    n,
                    format!(
                        "not valid UTF-8 ({e}); the feedback log is corrupt \
                         (only a torn last line is skipped)"
                    ),
                ))
            }
        };
        match parsed {
            Ok(r) => scan.records.push(r),
            Err(error) if is_last => {
                tracing::warn!(
                    line = n + 1,
                    %error,
                    bytes = raw.len(),
                    "skipping a torn last feedback record in {}",
                    path.display()
                );
                scan.torn_at = u64::try_from(offset).ok();
            }
            Err(error) => {
                // A garbled record in the middle is a correction that would be
                // lost without a word: refuse to start, naming the line.
                return Err(corrupt(
                    path,
                    n,
                    format!(
                        "not a feedback record ({error}); the feedback log is corrupt (only \
                         a torn last line is skipped): restore it from a backup, or remove \
                         the line to drop that correction"
                    ),
                ));
            }
        }
    }
    Ok(scan)
}

/// The error for line `n` (0-based) of the log at `path`, which is corrupt.
fn corrupt(path: &Path, n: usize, what: String) -> Error {
    Error::Io {
        path: path.to_path_buf(),
        source: std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("line {}: {what}", n + 1),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str) -> FeedbackRecord {
        FeedbackRecord {
            at: "2026-03-01T00:00:00Z".into(),
            tenant: String::new(),
            ticket_id: id.into(),
            changes: vec!["category: a → b".into()],
            article: None,
        }
    }

    #[test]
    fn records_survive_reopen_and_a_torn_line_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("feedback.jsonl");
        let (log, old) = FeedbackLog::open(&path).unwrap();
        assert!(old.is_empty());
        log.append(&record("T1")).unwrap();
        drop(log);
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"{\"at\":\"2026")
            .unwrap();
        let (log, old) = FeedbackLog::open(&path).unwrap();
        assert_eq!(old, vec![record("T1")]);
        log.append(&record("T2")).unwrap();
        let (_, all) = FeedbackLog::open(&path).unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all[1].ticket_id, "T2");
    }
}
