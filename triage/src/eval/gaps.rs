//! `triage eval gaps`: knowledge gaps found on CLINC150 used as a knowledge
//! base with some intents removed.
//!
//! The kept intents become articles (an intent's first training phrasings as
//! the question and its alternatives), CLINC's out-of-scope training messages
//! the pack's out-of-scope examples, and an [`Engine`] opens on that pack in a
//! scratch directory. Every validation message of every intent is then sent
//! through [`Engine::deflect`] in a conversation of its own, as customers
//! would; the chat hands off what it cannot answer, and [`Engine::gaps`]
//! groups the handed-off messages. The removed intents should come out on
//! top: reported are how many of the top `|removed|` gaps are removed
//! intents (a gap's intent is the majority intent of its question and
//! alternative phrasings), how many removed intents have a gap among the
//! top `2 × |removed|`, and how many drafts take their question from their
//! own intent.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use models::TextEmbedder;
use serde::Serialize;

use crate::api::{ChatMessage, DeflectAction};
use crate::engine::{Engine, EngineConfig};
use crate::error::{Error, Result};
use crate::insights::cluster::ClusterOptions;

/// Phrasings of an intent that make its article (question + alternatives).
const ARTICLE_PHRASINGS: usize = 10;

/// One gap as judged.
#[derive(Debug, Clone, Serialize)]
pub struct JudgedGap {
    /// Its rank (1 = first).
    pub rank: usize,
    /// Its volume.
    pub volume: u32,
    /// Its draft question.
    pub question: String,
    /// The question's intent.
    pub question_intent: String,
    /// The majority intent of its question and alternatives.
    pub intent: String,
    /// Whether that intent was removed from the knowledge base.
    pub removed: bool,
}

/// The report of `triage eval gaps`.
#[derive(Debug, Clone, Serialize)]
pub struct GapEvalReport {
    /// Intents in CLINC150.
    pub intents: usize,
    /// The intents removed from the knowledge base.
    pub removed: Vec<String>,
    /// Messages sent to the chat.
    pub messages: usize,
    /// Of which handed off.
    pub handed_off: usize,
    /// Of the removed intents' messages, the share handed off.
    pub removed_handed_off: f32,
    /// Gaps reported.
    pub gaps: usize,
    /// Of the top `|removed|` gaps, the share whose intent was removed.
    pub precision_at_removed: f32,
    /// Of the removed intents, the share with a gap among the top `|removed|`.
    pub recall_at_removed: f32,
    /// Of the removed intents, the share with a gap among the top `2 × |removed|`.
    pub recall_at_twice: f32,
    /// Of the top `2 × |removed|` gaps, the share whose question comes from the gap's own intent.
    pub question_from_own_intent: f32,
    /// Seconds to compute the gaps (grouping, drafts, coverage).
    pub gap_seconds: f64,
    /// The top `2 × |removed|` gaps.
    pub top: Vec<JudgedGap>,
}

/// Runs the evaluation (see the module docs): `train` and `val` are
/// `(text, intent)` pairs, `oos` CLINC's out-of-scope training messages,
/// `removed` the intents left out of the knowledge base; `work` is a scratch
/// directory for the pack and the engine's data.
pub fn gaps(
    train: &[(String, String)],
    val: &[(String, String)],
    oos: &[String],
    removed: &[String],
    threshold: Option<f32>,
    embedder: Arc<dyn TextEmbedder>,
    work: &Path,
) -> Result<GapEvalReport> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| Error::Io { path, source }
    };
    let pack = work.join("pack");
    std::fs::create_dir_all(&pack).map_err(io(&pack))?;
    std::fs::write(
        pack.join("pack.toml"),
        "[pack]\nname = \"clinc150-kb\"\ndefault_language = \"en\"\n",
    )
    .map_err(io(&pack))?;
    let mut by_intent: HashMap<&str, Vec<&str>> = HashMap::new();
    for (text, intent) in train {
        by_intent.entry(intent).or_default().push(text);
    }
    let mut intents: Vec<&str> = by_intent.keys().copied().collect();
    intents.sort_unstable();
    let mut articles = String::new();
    for intent in &intents {
        if removed.iter().any(|r| r == intent) {
            continue;
        }
        let phrasings = &by_intent[intent];
        let line = serde_json::json!({
            "id": intent,
            "question": phrasings[0],
            "alt_questions": phrasings.iter().skip(1).take(ARTICLE_PHRASINGS - 1).collect::<Vec<_>>(),
            "answer": format!("The answer about {intent}."),
        });
        articles.push_str(&line.to_string());
        articles.push('\n');
    }
    std::fs::write(pack.join("articles.jsonl"), articles).map_err(io(&pack))?;
    let oos_lines: String = oos
        .iter()
        .map(|t| serde_json::json!({ "text": t }).to_string() + "\n")
        .collect();
    std::fs::write(pack.join("out_of_scope.jsonl"), oos_lines).map_err(io(&pack))?;
    let engine = Engine::open(EngineConfig::new(pack, work.join("data")), embedder)?;

    let intent_of: HashMap<&str, &str> = val
        .iter()
        .chain(train.iter())
        .map(|(t, i)| (t.as_str(), i.as_str()))
        .collect();
    let (mut handed_off, mut removed_msgs, mut removed_handed) = (0usize, 0usize, 0usize);
    for (text, intent) in val {
        let reply = engine.deflect(&ChatMessage {
            text: text.clone(),
            ..ChatMessage::default()
        })?;
        let handoff = reply.action == DeflectAction::Handoff;
        handed_off += usize::from(handoff);
        if removed.contains(intent) {
            removed_msgs += 1;
            removed_handed += usize::from(handoff);
        }
    }
    let started = std::time::Instant::now();
    let grouping = ClusterOptions {
        threshold: threshold.unwrap_or(crate::engine::gap_clustering().threshold),
        ..crate::engine::gap_clustering()
    };
    let report = engine.gaps_grouped(
        "",
        crate::insights::GAP_WINDOW_DAYS,
        crate::insights::report_end(),
        &grouping,
    )?;
    let gap_seconds = started.elapsed().as_secs_f64();
    let k = removed.len();
    let intent = |t: &str| intent_of.get(t).copied().unwrap_or("?").to_string();
    let top: Vec<JudgedGap> = report
        .gaps
        .iter()
        .take(2 * k)
        .enumerate()
        .map(|(i, g)| {
            let mut votes: HashMap<String, usize> = HashMap::new();
            for t in std::iter::once(&g.question).chain(&g.alternatives) {
                *votes.entry(intent(t)).or_default() += 1;
            }
            let majority = votes
                .into_iter()
                .max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(&a.0)))
                .map(|(i, _)| i)
                .unwrap_or_default();
            JudgedGap {
                rank: i + 1,
                volume: g.volume,
                question: g.question.clone(),
                question_intent: intent(&g.question),
                removed: removed.contains(&majority),
                intent: majority,
            }
        })
        .collect();
    let share = |n: usize, of: usize| if of == 0 { 0.0 } else { n as f32 / of as f32 };
    let recall = |depth: usize| {
        let hit = removed
            .iter()
            .filter(|r| top.iter().take(depth).any(|g| &g.intent == *r))
            .count();
        share(hit, k)
    };
    Ok(GapEvalReport {
        intents: intents.len(),
        removed: removed.to_vec(),
        messages: val.len(),
        handed_off,
        removed_handed_off: share(removed_handed, removed_msgs),
        gaps: report.gaps.len(),
        precision_at_removed: share(
            top.iter().take(k).filter(|g| g.removed).count(),
            k.min(top.len()),
        ),
        recall_at_removed: recall(k),
        recall_at_twice: recall(2 * k),
        question_from_own_intent: share(
            top.iter().filter(|g| g.question_intent == g.intent).count(),
            top.len(),
        ),
        gap_seconds,
        top,
    })
}
