//! Phrasings learned from chats, kept apart from the articles until trusted.
//!
//! When a customer says an answer helped, the message they typed is another
//! way to ask that article's question, and the next customer who asks that
//! way should be answered. But the chat is open to anyone: one click must
//! never make the bank answer something new to other customers. So a learned
//! phrasing starts as a *candidate* and only becomes *active* (an entry of the
//! FAQ bank) when
//!
//! * customers in at least [`LearnPolicy::min_sessions`] different chat
//!   sessions said it helped (more "helped" than "did not help" sessions by
//!   that margin), or
//! * an agent approved it, or taught it directly ("this article solved the
//!   handed-off chat").
//!
//! An agent may remove a phrasing; a removed one is never learned again from
//! clicks. Texts are stored with personal data masked (see
//! the privacy masker), at most [`MAX_TEXT_CHARS`] long, at most
//! [`MAX_PER_ARTICLE`] per article: learned phrasings cannot grow without
//! bound or slow the start down.
//!
//! Everything is one append-only JSONL log (`learned.jsonl`), each event
//! fsynced before the caller is answered, replayed at start.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::api::{LearnedPhrasing, LearnedStatus};
use crate::clock::now_rfc3339;
use crate::error::{Error, Result};

/// Longest phrasing that is learned (characters, after masking).
pub const MAX_TEXT_CHARS: usize = 300;
/// Most learned phrasings (candidates and active) one article keeps.
pub const MAX_PER_ARTICLE: usize = 50;

/// When customer votes make a phrasing active.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LearnPolicy {
    /// Distinct sessions that must have said "helped" (net of "did not help").
    pub min_sessions: usize,
}

impl Default for LearnPolicy {
    fn default() -> Self {
        LearnPolicy { min_sessions: 3 }
    }
}

/// What one customer vote did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vote {
    /// The phrasing voted on.
    pub id: String,
    /// Its status after the vote.
    pub status: LearnedStatus,
    /// Whether the vote counted (a session counts once per phrasing).
    pub counted: bool,
    /// Whether the vote changed whether the phrasing is active.
    pub activation_changed: bool,
}

/// One line of the log.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum Event {
    /// A customer session said the article did (or did not) help with `text`.
    Vote {
        at: String,
        tenant: String,
        article: String,
        text: String,
        /// Digest of the session id (the id itself is not stored).
        session: String,
        helpful: bool,
    },
    /// An agent taught `text` as a phrasing of `article` (active at once).
    Teach {
        at: String,
        tenant: String,
        article: String,
        text: String,
    },
    /// An agent approved a candidate.
    Approve {
        at: String,
        tenant: String,
        id: String,
    },
    /// An agent removed a phrasing.
    Remove {
        at: String,
        tenant: String,
        id: String,
    },
    /// The article was deleted: its phrasings are forgotten.
    Forget {
        at: String,
        tenant: String,
        article: String,
    },
}

/// A phrasing's state while replaying and running.
#[derive(Debug, Clone)]
struct Item {
    phrasing: LearnedPhrasing,
    helpful: BTreeSet<String>,
    unhelpful: BTreeSet<String>,
}

impl Item {
    /// An agent approved or taught it (at `at`): active from now on, even if
    /// it was removed.
    fn approve(&mut self, at: &str, policy: LearnPolicy) {
        let p = &mut self.phrasing;
        p.approved_by_agent = true;
        p.status = LearnedStatus::Candidate;
        p.updated_at = at.to_string();
        self.refresh(policy);
    }

    fn refresh(&mut self, policy: LearnPolicy) {
        let p = &mut self.phrasing;
        p.helpful_sessions = self.helpful.len();
        p.unhelpful_sessions = self.unhelpful.len();
        if p.status == LearnedStatus::Removed {
            return;
        }
        let net = p.helpful_sessions.saturating_sub(p.unhelpful_sessions);
        p.status = if p.approved_by_agent || net >= policy.min_sessions.max(1) {
            LearnedStatus::Active
        } else {
            LearnedStatus::Candidate
        };
    }
}

/// Learned phrasings keyed by `(tenant, id)`.
#[derive(Debug, Default)]
struct Items {
    by_id: BTreeMap<(String, String), Item>,
}

impl Items {
    fn apply(&mut self, event: &Event, policy: LearnPolicy) {
        match event {
            Event::Vote {
                at,
                tenant,
                article,
                text,
                session,
                helpful,
            } => {
                let Some(item) = self.entry(tenant, article, text, at, "customer") else {
                    return;
                };
                if item.phrasing.status == LearnedStatus::Removed {
                    return;
                }
                let (add, other) = if *helpful {
                    (&mut item.helpful, &mut item.unhelpful)
                } else {
                    (&mut item.unhelpful, &mut item.helpful)
                };
                other.remove(session);
                add.insert(session.clone());
                item.phrasing.updated_at.clone_from(at);
                item.refresh(policy);
            }
            Event::Teach {
                at,
                tenant,
                article,
                text,
            } => {
                if let Some(item) = self.entry(tenant, article, text, at, "agent") {
                    item.approve(at, policy);
                }
            }
            Event::Approve { at, tenant, id } => {
                if let Some(item) = self.by_id.get_mut(&(tenant.clone(), id.clone())) {
                    item.approve(at, policy);
                }
            }
            Event::Remove { at, tenant, id } => {
                if let Some(item) = self.by_id.get_mut(&(tenant.clone(), id.clone())) {
                    item.phrasing.status = LearnedStatus::Removed;
                    item.phrasing.approved_by_agent = false;
                    item.phrasing.updated_at.clone_from(at);
                }
            }
            Event::Forget {
                tenant, article, ..
            } => self
                .by_id
                .retain(|(t, _), item| !(t == tenant && item.phrasing.article_id == *article)),
        }
    }

    /// The item for `(tenant, article, text)`, created if the article has room.
    fn entry(
        &mut self,
        tenant: &str,
        article: &str,
        text: &str,
        at: &str,
        source: &str,
    ) -> Option<&mut Item> {
        let id = phrasing_id(tenant, article, text);
        let key = (tenant.to_string(), id.clone());
        if !self.by_id.contains_key(&key) {
            if self.count(tenant, article) >= MAX_PER_ARTICLE {
                return None;
            }
            self.by_id.insert(
                key.clone(),
                Item {
                    phrasing: LearnedPhrasing {
                        id,
                        tenant: tenant.to_string(),
                        article_id: article.to_string(),
                        text: text.to_string(),
                        status: LearnedStatus::Candidate,
                        helpful_sessions: 0,
                        unhelpful_sessions: 0,
                        source: source.to_string(),
                        approved_by_agent: false,
                        created_at: at.to_string(),
                        updated_at: at.to_string(),
                    },
                    helpful: BTreeSet::new(),
                    unhelpful: BTreeSet::new(),
                },
            );
        }
        self.by_id.get_mut(&key)
    }

    fn count(&self, tenant: &str, article: &str) -> usize {
        self.by_id
            .iter()
            .filter(|((t, _), i)| t == tenant && i.phrasing.article_id == article)
            .count()
    }
}

/// The id of a phrasing: a digest of what it is, so the same text learned
/// twice is one phrasing.
fn phrasing_id(tenant: &str, article: &str, text: &str) -> String {
    let mut h = Sha256::new();
    for part in [tenant, article, text] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    let digest = h.finalize();
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("lp-{hex}")
}

/// A digest of a chat session id: enough to count distinct sessions, useless
/// to resume one.
pub fn session_digest(session_id: &str) -> String {
    let digest = Sha256::digest(session_id.as_bytes());
    digest[..12].iter().map(|b| format!("{b:02x}")).collect()
}

/// The durable store of learned phrasings (see the module docs).
#[derive(Debug)]
pub struct LearnedStore {
    path: PathBuf,
    policy: LearnPolicy,
    inner: Mutex<(File, Items)>,
}

impl LearnedStore {
    /// Opens (creating) the log at `path` and replays it. A torn last line (a
    /// crash mid-append) is cut off; any other unreadable line is an error
    /// naming the file and line.
    pub fn open(path: &Path, policy: LearnPolicy) -> Result<LearnedStore> {
        let io = |source| Error::Io {
            path: path.to_path_buf(),
            source,
        };
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(io(e)),
        };
        let mut items = Items::default();
        let mut torn_at = None;
        let mut offset = 0usize;
        let lines: Vec<&[u8]> = bytes.split_inclusive(|&b| b == b'\n').collect();
        let last = lines
            .iter()
            .rposition(|l| !l.iter().all(u8::is_ascii_whitespace));
        for (n, piece) in lines.iter().enumerate() {
            let raw = piece.strip_suffix(b"\n").unwrap_or(piece);
            let start = offset;
            offset += piece.len();
            if raw.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let parsed = std::str::from_utf8(raw)
                .map_err(|e| e.to_string())
                .and_then(|t| serde_json::from_str::<Event>(t).map_err(|e| e.to_string()));
            match parsed {
                Ok(event) => items.apply(&event, policy),
                Err(e) if Some(n) == last && !piece.ends_with(b"\n") => {
                    tracing::warn!(line = n + 1, error = %e, "cutting a torn last line off {}", path.display());
                    torn_at = Some(start as u64);
                }
                Err(e) => {
                    return Err(io(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!(
                            "line {}: not a learned-phrasing event ({e}); the file is corrupt \
                             (restore it from a backup, or remove the line to drop that event)",
                            n + 1
                        ),
                    )))
                }
            }
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(io)?;
        if let Some(at) = torn_at {
            file.set_len(at).map_err(io)?;
            file.sync_data().map_err(io)?;
        }
        Ok(LearnedStore {
            path: path.to_path_buf(),
            policy,
            inner: Mutex::new((file, items)),
        })
    }

    fn lock(&self) -> MutexGuard<'_, (File, Items)> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends `event` durably, then applies it.
    fn record(&self, event: Event) -> Result<()> {
        let line = serde_json::to_string(&event).map_err(|e| Error::Numeric(e.to_string()))?;
        let mut guard = self.lock();
        let (file, items) = &mut *guard;
        let io = |source| Error::Io {
            path: self.path.clone(),
            source,
        };
        let before = file.metadata().map_err(io)?.len();
        let written = file
            .write_all(format!("{line}\n").as_bytes())
            .and_then(|()| file.sync_data());
        if let Err(e) = written {
            let _ = file.set_len(before);
            return Err(io(e));
        }
        items.apply(&event, self.policy);
        Ok(())
    }

    fn get(&self, tenant: &str, id: &str) -> Option<LearnedPhrasing> {
        self.lock()
            .1
            .by_id
            .get(&(tenant.to_string(), id.to_string()))
            .map(|i| i.phrasing.clone())
    }

    /// Refuses texts that must not be learned: empty or over [`MAX_TEXT_CHARS`].
    fn check_text(text: &str) -> Result<()> {
        if text.trim().is_empty() {
            return Err(Error::InvalidInput(
                "an empty phrasing cannot be learned".into(),
            ));
        }
        if text.chars().count() > MAX_TEXT_CHARS {
            return Err(Error::InvalidInput(format!(
                "phrasings longer than {MAX_TEXT_CHARS} characters are not learned"
            )));
        }
        Ok(())
    }

    /// Records a customer session's vote that `article` did (or did not) help
    /// with the (masked) `text`. `Ok(None)` when the article already has
    /// [`MAX_PER_ARTICLE`] learned phrasings and this text is not one of them.
    pub fn vote(
        &self,
        tenant: &str,
        article: &str,
        text: &str,
        session_id: &str,
        helpful: bool,
    ) -> Result<Option<Vote>> {
        Self::check_text(text)?;
        let id = phrasing_id(tenant, article, text);
        let session = session_digest(session_id);
        let before = self.get(tenant, &id);
        if before.is_none() && self.lock().1.count(tenant, article) >= MAX_PER_ARTICLE {
            return Ok(None);
        }
        let was_active = before
            .as_ref()
            .is_some_and(|p| p.status == LearnedStatus::Active);
        let counted = {
            let guard = self.lock();
            guard
                .1
                .by_id
                .get(&(tenant.to_string(), id.clone()))
                .is_none_or(|i| {
                    i.phrasing.status != LearnedStatus::Removed
                        && !(if helpful { &i.helpful } else { &i.unhelpful }).contains(&session)
                })
        };
        if counted {
            self.record(Event::Vote {
                at: now_rfc3339(),
                tenant: tenant.to_string(),
                article: article.to_string(),
                text: text.to_string(),
                session,
                helpful,
            })?;
        }
        let after = self.get(tenant, &id);
        let status = after.map_or(LearnedStatus::Candidate, |p| p.status);
        Ok(Some(Vote {
            id,
            status,
            counted,
            activation_changed: was_active != (status == LearnedStatus::Active),
        }))
    }

    /// An agent teaches `text` as a phrasing of `article`: active at once
    /// (also when it was removed before: the agent's latest word counts).
    /// `Ok(None)` when the article is full.
    pub fn teach(
        &self,
        tenant: &str,
        article: &str,
        text: &str,
    ) -> Result<Option<LearnedPhrasing>> {
        Self::check_text(text)?;
        let id = phrasing_id(tenant, article, text);
        if self.get(tenant, &id).is_none()
            && self.lock().1.count(tenant, article) >= MAX_PER_ARTICLE
        {
            return Ok(None);
        }
        self.record(Event::Teach {
            at: now_rfc3339(),
            tenant: tenant.to_string(),
            article: article.to_string(),
            text: text.to_string(),
        })?;
        Ok(self.get(tenant, &id))
    }

    /// An agent approves a phrasing (a removed one too): active at once.
    pub fn approve(&self, tenant: &str, id: &str) -> Result<LearnedPhrasing> {
        self.agent_event(tenant, id, |at, tenant, id| Event::Approve {
            at,
            tenant,
            id,
        })
    }

    /// An agent removes a phrasing: no longer used, never learned again from clicks.
    pub fn remove(&self, tenant: &str, id: &str) -> Result<LearnedPhrasing> {
        self.agent_event(tenant, id, |at, tenant, id| Event::Remove {
            at,
            tenant,
            id,
        })
    }

    /// Records an agent's event (`event(at, tenant, id)`) about the existing
    /// phrasing `id` of `tenant`; returns the phrasing as it is afterwards.
    fn agent_event(
        &self,
        tenant: &str,
        id: &str,
        event: fn(String, String, String) -> Event,
    ) -> Result<LearnedPhrasing> {
        let missing = || Error::NotFound(format!("learned phrasing `{id}`"));
        if self.get(tenant, id).is_none() {
            return Err(missing());
        }
        self.record(event(now_rfc3339(), tenant.to_string(), id.to_string()))?;
        self.get(tenant, id).ok_or_else(missing)
    }

    /// Forgets every phrasing of a deleted article.
    pub fn forget_article(&self, tenant: &str, article: &str) -> Result<()> {
        let any = self
            .lock()
            .1
            .by_id
            .iter()
            .any(|((t, _), i)| t == tenant && i.phrasing.article_id == article);
        if !any {
            return Ok(());
        }
        self.record(Event::Forget {
            at: now_rfc3339(),
            tenant: tenant.to_string(),
            article: article.to_string(),
        })
    }

    /// The tenant's learned phrasings (of one article, or all), in id order.
    pub fn list(&self, tenant: &str, article: Option<&str>) -> Vec<LearnedPhrasing> {
        self.lock()
            .1
            .by_id
            .iter()
            .filter(|((t, _), i)| t == tenant && article.is_none_or(|a| i.phrasing.article_id == a))
            .map(|(_, i)| i.phrasing.clone())
            .collect()
    }

    /// The active phrasings' texts of one article.
    pub fn active_texts(&self, tenant: &str, article: &str) -> Vec<String> {
        self.list(tenant, Some(article))
            .into_iter()
            .filter(|p| p.status == LearnedStatus::Active)
            .map(|p| p.text)
            .collect()
    }

    /// Counts of learned phrasings by status, for statistics.
    pub fn counts(&self, tenant: Option<&str>) -> (usize, usize) {
        let guard = self.lock();
        let mine = guard
            .1
            .by_id
            .iter()
            .filter(|((t, _), _)| tenant.is_none_or(|x| x == t));
        let (mut candidates, mut active) = (0, 0);
        for (_, i) in mine {
            match i.phrasing.status {
                LearnedStatus::Candidate => candidates += 1,
                LearnedStatus::Active => active += 1,
                LearnedStatus::Removed => {}
            }
        }
        (candidates, active)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(dir: &Path) -> LearnedStore {
        LearnedStore::open(&dir.join("learned.jsonl"), LearnPolicy { min_sessions: 3 }).unwrap()
    }

    #[test]
    fn one_session_never_activates_a_phrasing_several_do() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        for _ in 0..5 {
            let v = s
                .vote("", "kb-1", "冰箱不冷了咋整", "session-a", true)
                .unwrap()
                .unwrap();
            assert_eq!(v.status, LearnedStatus::Candidate);
        }
        assert!(s.active_texts("", "kb-1").is_empty());
        s.vote("", "kb-1", "冰箱不冷了咋整", "session-b", true)
            .unwrap();
        let v = s
            .vote("", "kb-1", "冰箱不冷了咋整", "session-c", true)
            .unwrap()
            .unwrap();
        assert_eq!(v.status, LearnedStatus::Active);
        assert!(v.activation_changed);
        assert_eq!(
            s.active_texts("", "kb-1"),
            vec!["冰箱不冷了咋整".to_string()]
        );
        // Other tenants see nothing of it.
        assert!(s.list("other", None).is_empty());
        // "Did not help" from another session takes it back below the margin.
        let v = s
            .vote("", "kb-1", "冰箱不冷了咋整", "session-d", false)
            .unwrap()
            .unwrap();
        assert_eq!(v.status, LearnedStatus::Candidate);
        // Replayed from the log, the state is the same.
        drop(s);
        let s = store(dir.path());
        let p = &s.list("", Some("kb-1"))[0];
        assert_eq!((p.helpful_sessions, p.unhelpful_sessions), (3, 1));
        assert_eq!(p.status, LearnedStatus::Candidate);
    }

    #[test]
    fn agents_teach_approve_and_remove_for_good() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        let p = s.teach("t", "kb-2", "怎么开发票").unwrap().unwrap();
        assert_eq!(p.status, LearnedStatus::Active);
        assert_eq!(p.source, "agent");
        let v = s
            .vote("t", "kb-2", "发票怎么开", "s1", true)
            .unwrap()
            .unwrap();
        let approved = s.approve("t", &v.id).unwrap();
        assert_eq!(approved.status, LearnedStatus::Active);
        let removed = s.remove("t", &v.id).unwrap();
        assert_eq!(removed.status, LearnedStatus::Removed);
        for session in ["s2", "s3", "s4", "s5"] {
            s.vote("t", "kb-2", "发票怎么开", session, true).unwrap();
        }
        assert_eq!(s.active_texts("t", "kb-2"), vec!["怎么开发票".to_string()]);
        drop(s);
        let s = store(dir.path());
        assert_eq!(s.active_texts("t", "kb-2"), vec!["怎么开发票".to_string()]);
        assert!(matches!(s.approve("t", "lp-nope"), Err(Error::NotFound(_))));
        s.forget_article("t", "kb-2").unwrap();
        assert!(s.list("t", None).is_empty());
    }

    #[test]
    fn sizes_are_capped_and_torn_tails_cut() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        let long = "很".repeat(MAX_TEXT_CHARS + 1);
        assert!(matches!(
            s.vote("", "kb", &long, "s", true),
            Err(Error::InvalidInput(_))
        ));
        for i in 0..MAX_PER_ARTICLE {
            s.vote("", "kb", &format!("问法{i}"), "s", true)
                .unwrap()
                .unwrap();
        }
        assert!(s.vote("", "kb", "再一个问法", "s", true).unwrap().is_none());
        assert!(s.teach("", "kb", "再一个问法").unwrap().is_none());
        drop(s);
        let path = dir.path().join("learned.jsonl");
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"op\":\"vote\",\"at\":\"20").unwrap();
        drop(f);
        let s = store(dir.path());
        assert_eq!(s.list("", Some("kb")).len(), MAX_PER_ARTICLE);
        // A garbled line in the middle is an error naming the line.
        drop(s);
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, format!("garbage\n{text}")).unwrap();
        let err = LearnedStore::open(&path, LearnPolicy::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 1"), "{err}");
    }
}
