//! `eval deflect --pack`: the self-service chat measured as it ships.
//!
//! [`deflect`](super::deflect()) measures the verifier on a bare FAQ bank;
//! this opens an [`Engine`] on a pack, in a scratch data directory, and sends
//! every test message through [`Engine::deflect`] in a conversation of its own,
//! exactly as `/v1/deflect` does: the bank is the pack's articles with their
//! alternative questions, the thresholds are the pack's, and the category
//! model's out-of-scope veto has its say. The latency it reports includes the
//! embedding of the message.
//!
//! With `learn`, another set of messages (e.g. the dev split: other
//! customers asking about the same articles) is fed back first as customers
//! and agents would ("did this help? → yes" on the right article when the
//! chat showed it, an agent resolving the handoff with the article when it
//! did not, then an agent approving the proposed phrasings), and the test set
//! is measured again.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use models::TextEmbedder;
use serde::Serialize;

use crate::api::{ChatFeedback, ChatMessage, ChatReply, DeflectAction, Feedback, LearnedStatus};
use crate::engine::{Engine, EngineConfig};
use crate::error::{Error, Result};
use crate::eval::classify::share;
use crate::eval::deflect::DeflectCase;

/// Outcomes of one pass over a set of messages.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ChatOutcomes {
    /// Messages sent.
    pub messages: usize,
    /// Of which in scope (at least one right article).
    pub in_scope: usize,
    /// Of which out of scope.
    pub out_of_scope: usize,
    /// In-scope messages answered with a right article.
    pub answered_right: f32,
    /// In-scope messages answered at all (right or wrong).
    pub answer_rate: f32,
    /// Wrong answers (an in-scope message with another article, or any answer to an
    /// out-of-scope message) as a share of all messages.
    pub wrong_answers: f32,
    /// Answers that were right.
    pub answer_precision: f32,
    /// In-scope messages offered a choice.
    pub clarify_rate: f32,
    /// Clarifications (in scope) offering a right article.
    pub clarify_hit_rate: f32,
    /// In-scope messages handed off.
    pub in_scope_handoff: f32,
    /// Out-of-scope messages handed off (neither answered nor offered a choice).
    pub oos_handoff: f32,
    /// Median milliseconds per message, embedding included.
    pub p50_ms: f32,
    /// 99th-percentile milliseconds per message, embedding included.
    pub p99_ms: f32,
}

/// What `triage eval deflect --pack` prints (one JSON object).
#[derive(Debug, Clone, Serialize)]
pub struct ChatReport {
    /// Embedding model.
    pub model: String,
    /// Articles in the pack's bank.
    pub articles: usize,
    /// The pack's answer threshold.
    pub answer_threshold: f32,
    /// The pack's clarify threshold.
    pub clarify_threshold: f32,
    /// Every test message.
    pub all: ChatOutcomes,
    /// With `learn`: the test messages again, after the feedback.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub after_learning: Option<ChatOutcomes>,
    /// With `learn`: in-scope messages fed back.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fed_back: Option<usize>,
    /// With `learn`: phrasings learned (all approved by the simulated agent).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub learned_phrasings: Option<usize>,
    /// Seconds to open the engine (ingest and training of the pack included).
    pub open_seconds: f32,
}

/// Runs every message of `test` through the chat of an engine opened on
/// `pack_dir` (data kept in `work_dir/data`, decisions written to
/// `work_dir/chat_decisions.jsonl`); with `learn`, also the learning
/// experiment described in the module docs.
pub fn deflect_pack(
    pack_dir: &Path,
    test: &[DeflectCase],
    embedder: Arc<dyn TextEmbedder>,
    work_dir: &Path,
    learn: Option<&[DeflectCase]>,
) -> Result<ChatReport> {
    if test.is_empty() {
        return Err(Error::InvalidInput("the test set is empty".into()));
    }
    let data = work_dir.join("data");
    if data.exists() {
        std::fs::remove_dir_all(&data).map_err(|source| Error::Io {
            path: data.clone(),
            source,
        })?;
    }
    let t0 = Instant::now();
    let model = embedder.name().to_string();
    let engine = Engine::open(EngineConfig::new(pack_dir.to_path_buf(), data), embedder)?;
    let open_seconds = t0.elapsed().as_secs_f32();
    let th = engine.pack().thresholds;
    let replies = send_all(&engine, test)?;
    write_decisions(work_dir, test, &replies)?;
    let all = outcomes(test, &replies);
    let (mut after, mut fed_back, mut learned) = (None, None, None);
    if let Some(feedback) = learn {
        let inside: Vec<&DeflectCase> = feedback.iter().filter(|c| !c.faq_ids.is_empty()).collect();
        for case in &inside {
            let (reply, _) = send(&engine, case)?;
            teach(&engine, case, &reply)?;
        }
        let mut n = 0;
        for p in engine.learned_phrasings("", None) {
            if p.status == LearnedStatus::Candidate {
                engine.approve_learned("", &p.id)?;
            }
            n += 1;
        }
        fed_back = Some(inside.len());
        learned = Some(n);
        let replies = send_all(&engine, test)?;
        after = Some(outcomes(test, &replies));
    }
    Ok(ChatReport {
        model,
        articles: engine.pack().articles.len(),
        answer_threshold: th.deflect_answer,
        clarify_threshold: th.deflect_clarify,
        all,
        after_learning: after,
        fed_back,
        learned_phrasings: learned,
        open_seconds,
    })
}

/// Each message in a new conversation, with its time (ms, embedding included).
fn send_all(engine: &Engine, test: &[DeflectCase]) -> Result<Vec<(ChatReply, f32)>> {
    test.iter().map(|c| send(engine, c)).collect()
}

/// One message in a new conversation, with its time.
fn send(engine: &Engine, case: &DeflectCase) -> Result<(ChatReply, f32)> {
    let t = Instant::now();
    let reply = engine.deflect(&ChatMessage {
        text: case.text.clone(),
        ..ChatMessage::default()
    })?;
    Ok((reply, t.elapsed().as_secs_f32() * 1000.0))
}

/// Feeds back one in-scope message the way its conversation would end: the
/// customer says the right article helped when the chat showed it; otherwise an
/// agent resolves the handed-off chat with the article.
fn teach(engine: &Engine, case: &DeflectCase, reply: &ChatReply) -> Result<()> {
    let shown = reply
        .candidates
        .iter()
        .find(|c| case.faq_ids.contains(&c.article.id));
    match shown {
        Some(c) => {
            engine.chat_feedback(&ChatFeedback {
                session_id: reply.session_id.clone(),
                turn: reply.turn,
                article_id: c.article.id.clone(),
                helpful: true,
                tenant: String::new(),
            })?;
        }
        None => {
            engine.feedback(Feedback {
                ticket_id: format!("eval-chat-{:x}", hash_of(&case.text)),
                title: case.text.clone(),
                solved_by_article: Some(case.faq_ids[0].clone()),
                message: Some(case.text.clone()),
                ..Feedback::default()
            })?;
        }
    }
    Ok(())
}

fn hash_of(text: &str) -> u64 {
    let mut h = DefaultHasher::new();
    text.hash(&mut h);
    h.finish()
}

fn outcomes(test: &[DeflectCase], replies: &[(ChatReply, f32)]) -> ChatOutcomes {
    let (mut right, mut answered, mut wrong, mut answers) = (0, 0, 0, 0);
    let (mut clarified, mut clarify_hit, mut handoff_in, mut oos_handoff) = (0, 0, 0, 0);
    let mut in_scope = 0;
    for (case, (reply, _)) in test.iter().zip(replies) {
        let is_right = |id: &str| case.faq_ids.iter().any(|f| f == id);
        let inside = !case.faq_ids.is_empty();
        in_scope += usize::from(inside);
        match reply.action {
            DeflectAction::Answer => {
                answers += 1;
                answered += usize::from(inside);
                let ok = reply
                    .candidates
                    .first()
                    .is_some_and(|c| is_right(&c.article.id));
                right += usize::from(ok);
                wrong += usize::from(!ok);
            }
            DeflectAction::Clarify => {
                if inside {
                    clarified += 1;
                    clarify_hit +=
                        usize::from(reply.candidates.iter().any(|c| is_right(&c.article.id)));
                }
            }
            DeflectAction::Handoff => {
                handoff_in += usize::from(inside);
                oos_handoff += usize::from(!inside);
            }
        }
    }
    let mut ms: Vec<f32> = replies.iter().map(|(_, t)| *t).collect();
    ms.sort_by(f32::total_cmp);
    let pct = |p: f32| {
        if ms.is_empty() {
            0.0
        } else {
            let i = ((ms.len() as f32 * p).ceil() as usize).clamp(1, ms.len());
            ms[i - 1]
        }
    };
    let n = test.len();
    ChatOutcomes {
        messages: n,
        in_scope,
        out_of_scope: n - in_scope,
        answered_right: share(right, in_scope),
        answer_rate: share(answered, in_scope),
        wrong_answers: share(wrong, n),
        answer_precision: share(right, answers),
        clarify_rate: share(clarified, in_scope),
        clarify_hit_rate: share(clarify_hit, clarified),
        in_scope_handoff: share(handoff_in, in_scope),
        oos_handoff: share(oos_handoff, n - in_scope),
        p50_ms: pct(0.5),
        p99_ms: pct(0.99),
    }
}

/// One line per message: the expected articles, the action, what was shown and why.
fn write_decisions(
    work_dir: &Path,
    test: &[DeflectCase],
    replies: &[(ChatReply, f32)],
) -> Result<()> {
    let path = work_dir.join("chat_decisions.jsonl");
    let io = |source| Error::Io {
        path: path.clone(),
        source,
    };
    std::fs::create_dir_all(work_dir).map_err(io)?;
    let mut out = std::io::BufWriter::new(std::fs::File::create(&path).map_err(io)?);
    for (case, (reply, ms)) in test.iter().zip(replies) {
        let line = serde_json::json!({
            "text": case.text,
            "expected": case.faq_ids,
            "action": reply.action,
            "confidence": reply.confidence,
            "shown": reply.candidates.iter().map(|c| (&c.article.id, c.confidence)).collect::<Vec<_>>(),
            "reasons": reply.reasons,
            "ms": ms,
        });
        writeln!(out, "{line}").map_err(io)?;
    }
    out.flush().map_err(io)
}
