//! Chatwoot's agent-bot contract: the `message_created` events a bot gets
//! (its conversations are `pending`), which of them the bot answers (the
//! customer's own messages, while no person has the conversation), the
//! conversation's chat session, and the replies a decision becomes.

use std::collections::{BTreeSet, HashMap};
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::Deserialize;
use serde_json::Value;
use triage::api::{ChatDraft, ChatReply, DeflectAction};

use super::outbox::Step;
use crate::services::{ServiceError, ServiceResult};

/// The parts of a webhook event the bot reads.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct MessageEvent {
    /// `message_created`, ...
    pub event: String,
    /// The message id.
    pub id: Value,
    /// Its text.
    pub content: Option<String>,
    /// `incoming` (the contact's), `outgoing` (an agent's or a bot's),
    /// `activity`, `template` (a number in some payloads: 0..3).
    pub message_type: Value,
    /// A private note.
    pub private: bool,
    /// Who sent it.
    pub sender: Option<Sender>,
    /// The conversation.
    pub conversation: Conversation,
    /// The account.
    pub account: Account,
}

/// A message's sender.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Sender {
    /// Id.
    pub id: Value,
    /// `contact`, `user` (an agent) or `agent_bot`.
    #[serde(rename = "type")]
    pub kind: Option<String>,
}

/// The conversation an event is about.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Conversation {
    /// Id (the one in the dashboard's URL for the API).
    pub id: u64,
    /// `pending` while a bot has it; `open` once people do.
    pub status: String,
    /// Assignee and contact.
    pub meta: Value,
}

/// The account an event is about.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Account {
    /// Id.
    pub id: u64,
}

impl MessageEvent {
    /// Whether the message is the contact's (`incoming`).
    fn incoming(&self) -> bool {
        matches!(&self.message_type, Value::String(s) if s == "incoming")
            || self.message_type.as_u64() == Some(0)
    }

    /// Why the bot does not answer this event (`None`: it does).
    pub fn ignored(&self, account: Option<u64>) -> Option<&'static str> {
        if self.event != "message_created" {
            return Some("not a message_created event");
        }
        if account.is_some_and(|a| a != self.account.id) {
            return Some("an account this bot does not serve");
        }
        if !self.incoming() {
            return Some("not the customer's message (an agent's, a bot's or our own)");
        }
        if self.private {
            return Some("a private note");
        }
        if self
            .sender
            .as_ref()
            .and_then(|s| s.kind.as_deref())
            .is_some_and(|k| k != "contact")
        {
            return Some("not sent by the contact");
        }
        if self.conversation.status != "pending" {
            return Some("a person has the conversation (it is not pending)");
        }
        if !self.conversation.meta["assignee"].is_null() {
            return Some("the conversation is assigned to a person");
        }
        if self.content.as_deref().is_none_or(|c| c.trim().is_empty()) {
            return Some("the message has no text");
        }
        None
    }

    /// The message id as text (numbers and strings alike).
    pub fn message_id(&self) -> String {
        match &self.id {
            Value::String(s) => s.clone(),
            v => v.to_string(),
        }
    }
}

/// What the bot remembers of a conversation.
#[derive(Debug, Clone, Default)]
struct Session {
    /// The chat session the engine issued.
    session_id: Option<String>,
    /// The candidates of the last clarification (question, answer).
    offered: Vec<(String, String)>,
}

/// The bot's conversations: each one's chat session (in memory, like the
/// chat's own), and the conversations handed to people (durable: the bot
/// never answers them again, even if the status toggle is still on its way).
pub struct Conversations {
    file: PathBuf,
    inner: Mutex<(HashMap<String, Session>, BTreeSet<String>)>,
}

/// The key of a conversation.
pub fn conversation_key(tenant: &str, account: u64, conversation: u64) -> String {
    format!("{tenant}\t{account}\t{conversation}")
}

impl Conversations {
    /// Loads the handed-off conversations from `<dir>/chatwoot-handoffs.tsv`.
    pub fn open(dir: &Path) -> ServiceResult<Conversations> {
        std::fs::create_dir_all(dir)
            .map_err(|e| ServiceError::io(format!("creating {}", dir.display()), e))?;
        let file = dir.join("chatwoot-handoffs.tsv");
        let handed: BTreeSet<String> = match std::fs::read_to_string(&file) {
            Ok(text) => text
                .lines()
                .filter(|l| l.matches('\t').count() == 2)
                .map(str::to_string)
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeSet::new(),
            Err(e) => return Err(ServiceError::io(format!("reading {}", file.display()), e)),
        };
        Ok(Conversations {
            file,
            inner: Mutex::new((HashMap::new(), handed)),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (HashMap<String, Session>, BTreeSet<String>)> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the conversation was handed to people.
    pub fn handed_off(&self, key: &str) -> bool {
        self.lock().1.contains(key)
    }

    /// Records (durably) that the conversation was handed to people.
    pub fn hand_off(&self, key: &str) -> ServiceResult<()> {
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.file)
            .map_err(|e| ServiceError::io(format!("opening {}", self.file.display()), e))?;
        f.write_all(format!("{key}\n").as_bytes())
            .and_then(|()| f.sync_all())
            .map_err(|e| ServiceError::io(format!("writing {}", self.file.display()), e))?;
        let mut inner = self.lock();
        inner.1.insert(key.to_string());
        inner.0.remove(key);
        Ok(())
    }

    /// The conversation's chat session, if it has one.
    pub fn session(&self, key: &str) -> Option<String> {
        self.lock().0.get(key).and_then(|s| s.session_id.clone())
    }

    /// The answer of a clarification's candidate the customer picked by
    /// number ("2"), if the message is such a pick.
    pub fn picked(&self, key: &str, text: &str) -> Option<(String, String)> {
        let n: usize = text.trim().trim_end_matches('.').parse().ok()?;
        let inner = self.lock();
        let offered = &inner.0.get(key)?.offered;
        n.checked_sub(1).and_then(|i| offered.get(i)).cloned()
    }

    /// Remembers the session and what the reply offered.
    pub fn remember(&self, key: &str, reply: &ChatReply) {
        let offered = if reply.action == DeflectAction::Clarify {
            reply
                .candidates
                .iter()
                .map(|c| (c.article.question.clone(), c.article.answer.clone()))
                .collect()
        } else {
            Vec::new()
        };
        self.lock().0.insert(
            key.to_string(),
            Session {
                session_id: Some(reply.session_id.clone()),
                offered,
            },
        );
    }
}

/// An answer: the article's question and answer.
pub fn answer_text(question: &str, answer: &str) -> String {
    format!("**{}**\n\n{}", question.trim(), answer.trim())
}

/// A clarification: the candidates, numbered.
pub fn clarify_text(reply: &ChatReply) -> String {
    let mut t = String::from("您是想问以下哪个问题？请回复编号，或多描述一些。\nDid you mean one of these? Reply with its number, or tell us more.\n");
    for (i, c) in reply.candidates.iter().enumerate() {
        t.push_str(&format!("\n{}. {}", i + 1, c.article.question.trim()));
    }
    t
}

/// What the customer is told at a handoff.
pub const HANDOFF_TEXT: &str =
    "这个问题需要人工客服处理，正在为您转接。\nThis needs a person: passing you to an agent now.";

/// The private note agents see at a handoff: the prefilled ticket draft.
pub fn handoff_note(draft: &ChatDraft, reasons: &[String]) -> String {
    let mut t = String::from("🤖 Handed off by triage — prefilled ticket:\n");
    t.push_str(&format!("Title: {}\n", draft.title));
    t.push_str(&format!(
        "Category: {}\n",
        draft.category.as_deref().unwrap_or("to be decided")
    ));
    t.push_str(&format!(
        "Priority: {}\n",
        draft.priority.as_deref().unwrap_or("—")
    ));
    t.push_str(&format!(
        "Queue: {}\n",
        draft.queue.as_deref().unwrap_or("—")
    ));
    if draft.needs_human {
        t.push_str("Needs a person: yes\n");
    }
    for f in &draft.fields {
        t.push_str(&format!("{}: {}\n", f.name, f.value));
    }
    t.push_str(&format!("\nCustomer's words:\n{}\n", draft.body));
    if !reasons.is_empty() {
        t.push_str(&format!("\nWhy: {}", reasons.join("; ")));
    }
    t
}

/// The replies of a decision, in order.
pub fn plan(account: u64, conversation: u64, reply: &ChatReply) -> Vec<Step> {
    let message = |content: String, private: bool| Step::ChatwootMessage {
        account,
        conversation,
        content,
        private,
    };
    match reply.action {
        DeflectAction::Answer if !reply.candidates.is_empty() => {
            let a = &reply.candidates[0].article;
            vec![message(answer_text(&a.question, &a.answer), false)]
        }
        DeflectAction::Clarify if !reply.candidates.is_empty() => {
            vec![message(clarify_text(reply), false)]
        }
        _ => {
            let draft = reply.ticket_draft.clone().unwrap_or_default();
            vec![
                message(HANDOFF_TEXT.into(), false),
                message(handoff_note(&draft, &reply.reasons), true),
                Step::ChatwootStatus {
                    account,
                    conversation,
                    status: "open".into(),
                },
            ]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event() -> MessageEvent {
        serde_json::from_value(contract::fixture("chatwoot/message-created.json")).unwrap()
    }

    #[test]
    fn only_the_customers_messages_in_a_pending_conversation_are_answered() {
        let e = event();
        assert_eq!(e.ignored(None), None);
        assert_eq!(e.ignored(Some(1)), None);
        assert!(e.ignored(Some(2)).is_some());
        let mut out = e.clone();
        out.message_type = Value::String("outgoing".into());
        assert!(out.ignored(None).unwrap().contains("our own"));
        let mut agent = e.clone();
        agent.sender = Some(Sender {
            id: Value::Null,
            kind: Some("user".into()),
        });
        assert!(agent.ignored(None).is_some());
        let mut open = e.clone();
        open.conversation.status = "open".into();
        assert!(open.ignored(None).unwrap().contains("person"));
        let mut private = e.clone();
        private.private = true;
        assert!(private.ignored(None).is_some());
        let mut numeric = e;
        numeric.message_type = serde_json::json!(1);
        assert!(numeric.ignored(None).is_some());
    }

    #[test]
    fn handoffs_are_remembered_across_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let key = conversation_key("", 1, 10);
        {
            let c = Conversations::open(dir.path()).unwrap();
            assert!(!c.handed_off(&key));
            c.hand_off(&key).unwrap();
        }
        let c = Conversations::open(dir.path()).unwrap();
        assert!(c.handed_off(&key));
        assert!(!c.handed_off(&conversation_key("", 1, 11)));
    }
}
