//! The activity log: what the triage and the chat decided, per tenant, for
//! the insights (`activity.jsonl` in the data directory).
//!
//! One JSON line per event: a triage decision (abstained? flagged?), a chat
//! decision (answer / clarify / handoff; a handoff keeps the message, personal
//! data masked, because it is a question the knowledge base did not answer),
//! a ticket submitted from a handoff, an agent saying which article solved a
//! ticket, a knowledge gap published. In memory the log is kept as hourly
//! counters per tenant plus the handoff messages, so the dashboard's rates
//! cost a sum of a few hundred counters.
//!
//! These are statistics, not data a client was promised: decision events are
//! written (one `write` of a whole line, `O_APPEND`) but not fsynced, so they
//! survive a crash of the process but the last seconds may be lost with the
//! machine. The records a later decision depends on (a gap published, an
//! article that solved a ticket) are fsynced. An unreadable line (a torn
//! last write) is skipped with a warning; records older than
//! [`RETAIN_DAYS`] are dropped when the log is opened.

use std::collections::{BTreeMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use serde::{Deserialize, Serialize};

use crate::api::DeflectAction;
use crate::error::{Error, Result};

/// Days of activity kept.
pub const RETAIN_DAYS: i64 = 120;
/// Longest handoff message kept (characters).
pub const MAX_HANDOFF_CHARS: usize = 500;
const HOUR: i64 = 3600;

/// One event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Activity {
    /// A request was triaged.
    Triage {
        /// The category model abstained.
        abstained: bool,
        /// The escalation risk was flagged.
        flagged: bool,
    },
    /// The chat decided on a message.
    Deflect {
        /// The conversation.
        session: String,
        /// Answer, clarify or hand off.
        action: DeflectAction,
        /// The best article's probability.
        confidence: f32,
        /// The best article, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        article: Option<String>,
        /// A handed-off message, personal data masked.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        text: Option<String>,
    },
    /// A customer submitted the ticket of a handoff.
    ChatTicket {
        /// The ticket created.
        ticket_id: String,
    },
    /// An agent said an article solved a ticket.
    Solved {
        /// The ticket.
        ticket_id: String,
        /// The article.
        article_id: String,
    },
    /// A knowledge gap was published as an article.
    GapPublished {
        /// The gap.
        gap_id: String,
        /// The article it became.
        article_id: String,
    },
}

/// One line of the log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Unix seconds.
    pub at: i64,
    /// The tenant.
    pub tenant: String,
    /// What happened.
    #[serde(flatten)]
    pub what: Activity,
}

/// Decision counts over a period.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Requests triaged.
    pub triaged: u32,
    /// Of which the category model abstained on.
    pub abstained: u32,
    /// Of which the escalation risk flagged.
    pub flagged: u32,
    /// Chat messages answered.
    pub answer: u32,
    /// Chat messages clarified.
    pub clarify: u32,
    /// Chat messages handed off.
    pub handoff: u32,
    /// Tickets submitted from handoffs.
    pub chat_tickets: u32,
}

impl Counts {
    fn add(&mut self, o: &Counts) {
        self.triaged += o.triaged;
        self.abstained += o.abstained;
        self.flagged += o.flagged;
        self.answer += o.answer;
        self.clarify += o.clarify;
        self.handoff += o.handoff;
        self.chat_tickets += o.chat_tickets;
    }
}

/// A handed-off chat message.
#[derive(Debug, Clone, PartialEq)]
pub struct Handoff {
    /// Unix seconds.
    pub at: i64,
    /// The conversation.
    pub session: String,
    /// The message, personal data masked.
    pub text: String,
}

#[derive(Default)]
struct Memory {
    /// (tenant, hour) → counts.
    hours: BTreeMap<(String, i64), Counts>,
    /// Handoffs per tenant, in time order.
    handoffs: BTreeMap<String, Vec<Handoff>>,
    solved: HashSet<(String, String)>,
    published: HashSet<(String, String)>,
    first: Option<i64>,
}

impl Memory {
    fn apply(&mut self, r: &Record) {
        self.first = Some(self.first.map_or(r.at, |f| f.min(r.at)));
        let key = (r.tenant.clone(), r.at.div_euclid(HOUR));
        let mut count = |f: &dyn Fn(&mut Counts)| f(self.hours.entry(key.clone()).or_default());
        match &r.what {
            Activity::Triage { abstained, flagged } => count(&|c| {
                c.triaged += 1;
                c.abstained += u32::from(*abstained);
                c.flagged += u32::from(*flagged);
            }),
            Activity::Deflect {
                session,
                action,
                text,
                ..
            } => {
                count(&|c| match action {
                    DeflectAction::Answer => c.answer += 1,
                    DeflectAction::Clarify => c.clarify += 1,
                    DeflectAction::Handoff => c.handoff += 1,
                });
                if let (DeflectAction::Handoff, Some(text)) = (action, text) {
                    let list = self.handoffs.entry(r.tenant.clone()).or_default();
                    let h = Handoff {
                        at: r.at,
                        session: session.clone(),
                        text: text.clone(),
                    };
                    // Appends come in time order; a replayed log may not.
                    let at = list.partition_point(|x| x.at <= r.at);
                    list.insert(at, h);
                }
            }
            Activity::ChatTicket { .. } => count(&|c| c.chat_tickets += 1),
            Activity::Solved { ticket_id, .. } => {
                self.solved.insert((r.tenant.clone(), ticket_id.clone()));
            }
            Activity::GapPublished { gap_id, .. } => {
                self.published.insert((r.tenant.clone(), gap_id.clone()));
            }
        }
    }
}

struct Inner {
    file: File,
    memory: Memory,
}

/// The activity log (see the module docs).
pub struct ActivityLog {
    path: PathBuf,
    inner: Mutex<Inner>,
}

impl ActivityLog {
    /// Opens (creating) the log at `path`, keeping the last [`RETAIN_DAYS`]
    /// days before `now` (Unix seconds).
    pub fn open(path: &Path, now: i64) -> Result<ActivityLog> {
        let io = |source| Error::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut memory = Memory::default();
        let mut kept: Vec<&[u8]> = Vec::new();
        let mut dropped = 0usize;
        let bytes = if path.exists() {
            std::fs::read(path).map_err(io)?
        } else {
            Vec::new()
        };
        let cutoff = now - RETAIN_DAYS * 86_400;
        for (n, line) in bytes.split(|b| *b == b'\n').enumerate() {
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            match serde_json::from_slice::<Record>(line) {
                Ok(r) if r.at < cutoff => dropped += 1,
                Ok(r) => {
                    memory.apply(&r);
                    kept.push(line);
                }
                Err(e) => {
                    dropped += 1;
                    tracing::warn!(line = n + 1, error = %e, "skipping an unreadable line of {}", path.display());
                }
            }
        }
        if dropped > 0 {
            // Rewrite with what is kept: a new file, synced, renamed over the old.
            let tmp = path.with_extension("jsonl.tmp");
            let mut out = Vec::with_capacity(bytes.len());
            for line in &kept {
                out.extend_from_slice(line);
                out.push(b'\n');
            }
            let written = File::create(&tmp)
                .and_then(|mut f| f.write_all(&out).and_then(|()| f.sync_all()))
                .and_then(|()| std::fs::rename(&tmp, path));
            written.map_err(io)?;
            if let Some(dir) = path.parent() {
                if let Ok(d) = File::open(dir) {
                    let _ = d.sync_all();
                }
            }
            tracing::info!(dropped, kept = kept.len(), "compacted {}", path.display());
        }
        let torn = dropped == 0 && bytes.last().is_some_and(|b| *b != b'\n');
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(io)?;
        if torn {
            file.write_all(b"\n").map_err(io)?;
        }
        Ok(ActivityLog {
            path: path.to_path_buf(),
            inner: Mutex::new(Inner { file, memory }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self, r: &Record, sync: bool) -> Result<()> {
        let line = serde_json::to_string(r).map_err(|e| Error::Numeric(e.to_string()))?;
        let mut inner = self.lock();
        let written = inner
            .file
            .write_all(format!("{line}\n").as_bytes())
            .and_then(|()| if sync { inner.file.sync_data() } else { Ok(()) });
        written.map_err(|source| Error::Io {
            path: self.path.clone(),
            source,
        })?;
        inner.memory.apply(r);
        Ok(())
    }

    /// Records a decision (not fsynced, see the module docs). A failure is
    /// logged, never passed on: statistics must not fail a customer's request.
    pub fn note(&self, tenant: &str, at: i64, what: Activity) {
        let what = match what {
            Activity::Deflect {
                session,
                action,
                confidence,
                article,
                text,
            } => Activity::Deflect {
                session,
                action,
                confidence,
                article,
                text: text.map(|t| t.chars().take(MAX_HANDOFF_CHARS).collect()),
            },
            other => other,
        };
        let r = Record {
            at,
            tenant: tenant.to_string(),
            what,
        };
        if let Err(e) = self.write(&r, false) {
            tracing::warn!(error = %e, "could not record activity");
        }
    }

    /// Records an event durably (fsynced before returning).
    pub fn record(&self, tenant: &str, at: i64, what: Activity) -> Result<()> {
        self.write(
            &Record {
                at,
                tenant: tenant.to_string(),
                what,
            },
            true,
        )
    }

    /// The decision counts of `tenant` in the hours that start in `[from, to)`.
    pub fn counts(&self, tenant: &str, from: i64, to: i64) -> Counts {
        let inner = self.lock();
        let mut out = Counts::default();
        let range = (tenant.to_string(), from.div_euclid(HOUR))
            ..(tenant.to_string(), (to + HOUR - 1).div_euclid(HOUR));
        for (_, c) in inner.memory.hours.range(range) {
            out.add(c);
        }
        out
    }

    /// The handed-off messages of `tenant` in `[from, to)`, oldest first.
    pub fn handoffs(&self, tenant: &str, from: i64, to: i64) -> Vec<Handoff> {
        let inner = self.lock();
        inner
            .memory
            .handoffs
            .get(tenant)
            .map(|list| {
                list.iter()
                    .filter(|h| h.at >= from && h.at < to)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The tickets of `tenant` an agent said an article solved.
    pub fn solved(&self, tenant: &str) -> HashSet<String> {
        let inner = self.lock();
        inner
            .memory
            .solved
            .iter()
            .filter(|(t, _)| t == tenant)
            .map(|(_, id)| id.clone())
            .collect()
    }

    /// The gaps of `tenant` already published.
    pub fn published(&self, tenant: &str) -> HashSet<String> {
        let inner = self.lock();
        inner
            .memory
            .published
            .iter()
            .filter(|(t, _)| t == tenant)
            .map(|(_, id)| id.clone())
            .collect()
    }

    /// The time of the oldest record kept, if any.
    pub fn first(&self) -> Option<i64> {
        self.lock().memory.first
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deflect(action: DeflectAction, text: Option<&str>) -> Activity {
        Activity::Deflect {
            session: "s1".into(),
            action,
            confidence: 0.3,
            article: None,
            text: text.map(str::to_string),
        }
    }

    #[test]
    fn counts_and_handoffs_are_per_tenant_and_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("activity.jsonl");
        let now = 1_000 * 86_400;
        {
            let log = ActivityLog::open(&path, now).unwrap();
            log.note("acme", now - 10, deflect(DeflectAction::Answer, None));
            log.note(
                "acme",
                now - 9,
                deflect(DeflectAction::Handoff, Some("电池鼓包怎么办")),
            );
            log.note("globex", now - 8, deflect(DeflectAction::Clarify, None));
            log.note(
                "acme",
                now - 7,
                Activity::Triage {
                    abstained: true,
                    flagged: false,
                },
            );
            log.record(
                "acme",
                now - 6,
                Activity::Solved {
                    ticket_id: "T1".into(),
                    article_id: "kb-1".into(),
                },
            )
            .unwrap();
        }
        let log = ActivityLog::open(&path, now).unwrap();
        let c = log.counts("acme", now - 3600, now);
        assert_eq!((c.answer, c.clarify, c.handoff), (1, 0, 1));
        assert_eq!((c.triaged, c.abstained), (1, 1));
        assert_eq!(log.counts("globex", now - 3600, now).clarify, 1);
        assert_eq!(
            log.counts("acme", now - 7200, now - 3600),
            Counts::default()
        );
        let h = log.handoffs("acme", now - 60, now);
        assert_eq!(h.len(), 1);
        assert_eq!(h[0].text, "电池鼓包怎么办");
        assert!(log.handoffs("globex", 0, now).is_empty());
        assert!(log.solved("acme").contains("T1"));
        assert!(log.solved("globex").is_empty());
    }

    #[test]
    fn old_records_and_torn_lines_are_dropped_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("activity.jsonl");
        let now = 1_000 * 86_400;
        {
            let log = ActivityLog::open(&path, now).unwrap();
            log.note("", now - 200 * 86_400, deflect(DeflectAction::Answer, None));
            log.note("", now - 1, deflect(DeflectAction::Handoff, Some("x")));
        }
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"at\": 12, \"ten").unwrap();
        drop(f);
        let log = ActivityLog::open(&path, now).unwrap();
        assert_eq!(log.counts("", 0, now).answer, 0);
        assert_eq!(log.counts("", 0, now).handoff, 1);
        assert_eq!(log.first(), Some(now - 1));
        drop(log);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 1, "{text}");
        // A new record after the rewrite is read back.
        let log = ActivityLog::open(&path, now).unwrap();
        log.note("", now, deflect(DeflectAction::Clarify, None));
        drop(log);
        assert_eq!(
            ActivityLog::open(&path, now)
                .unwrap()
                .counts("", 0, now + 1)
                .clarify,
            1
        );
    }

    #[test]
    fn long_handoff_messages_are_cut() {
        let dir = tempfile::tempdir().unwrap();
        let log = ActivityLog::open(&dir.path().join("a.jsonl"), 100).unwrap();
        let long = "长".repeat(2000);
        log.note("", 99, deflect(DeflectAction::Handoff, Some(&long)));
        assert_eq!(
            log.handoffs("", 0, 100)[0].text.chars().count(),
            MAX_HANDOFF_CHARS
        );
    }
}
