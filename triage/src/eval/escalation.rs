//! `triage eval escalation`: how well the escalation risk on every triage
//! result separates requests that escalate into a complaint from those that
//! do not.
//!
//! An [`Engine`] opens on a pack in a scratch directory, and every test
//! message goes through [`Engine::triage`] as a request of its own (no
//! customer id: the repeat-contact evidence comes from the text only).
//! Reported: AUROC of the risk score (the probability that an escalated
//! message scores above a calm one, ties counting half), and precision and
//! recall of the flag at the pack's threshold, overall and per language. When
//! the pack labels its history (`[escalation] field`), the same figures on
//! those tickets, each scored by [`Engine::classify_ticket`] so that it is not
//! its own nearest neighbour.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use models::TextEmbedder;
use serde::{Deserialize, Serialize};

use crate::api::TicketRequest;
use crate::engine::{Engine, EngineConfig};
use crate::error::Result;

/// One labelled message.
#[derive(Debug, Clone, Deserialize)]
pub struct EscalationCase {
    /// The customer's message.
    pub text: String,
    /// Whether it escalated into a complaint.
    pub escalated: bool,
    /// Its language (`zh`, `en`), for the per-language figures.
    #[serde(default)]
    pub lang: String,
}

/// Figures on one set of scored messages.
#[derive(Debug, Clone, Default, Serialize)]
pub struct EscalationFigures {
    /// Messages.
    pub messages: usize,
    /// Of which escalated.
    pub escalated: usize,
    /// Area under the ROC curve of the risk score.
    pub auroc: f64,
    /// Messages flagged (risk ≥ the pack's flag).
    pub flagged: usize,
    /// Flagged messages that escalated.
    pub precision_at_flag: f64,
    /// Escalated messages that were flagged.
    pub recall_at_flag: f64,
}

/// The report of `triage eval escalation`.
#[derive(Debug, Clone, Serialize)]
pub struct EscalationReport {
    /// The pack's flag threshold.
    pub flag: f32,
    /// The test messages.
    pub test: EscalationFigures,
    /// The test messages by language.
    pub by_language: BTreeMap<String, EscalationFigures>,
    /// The pack's labelled history, each ticket scored without itself.
    pub pack_history: Option<EscalationFigures>,
    /// The test messages flagged wrongly and missed, with their score and reasons.
    pub errors: Vec<ScoredCase>,
}

/// A scored message.
#[derive(Debug, Clone, Serialize)]
pub struct ScoredCase {
    /// The message.
    pub text: String,
    /// Its label.
    pub escalated: bool,
    /// Its risk.
    pub score: f32,
    /// Why.
    pub reasons: Vec<String>,
}

/// AUROC of scores against labels (Mann–Whitney, ties half).
pub fn auroc(scored: &[(f32, bool)]) -> f64 {
    let pos: Vec<f32> = scored.iter().filter(|s| s.1).map(|s| s.0).collect();
    let neg: Vec<f32> = scored.iter().filter(|s| !s.1).map(|s| s.0).collect();
    if pos.is_empty() || neg.is_empty() {
        return 0.0;
    }
    let mut wins = 0f64;
    for p in &pos {
        for n in &neg {
            wins += if p > n {
                1.0
            } else if p == n {
                0.5
            } else {
                0.0
            };
        }
    }
    wins / (pos.len() * neg.len()) as f64
}

fn figures(scored: &[(f32, bool)], flag: f32) -> EscalationFigures {
    let flagged = scored.iter().filter(|s| s.0 >= flag).count();
    let hits = scored.iter().filter(|s| s.0 >= flag && s.1).count();
    let escalated = scored.iter().filter(|s| s.1).count();
    let ratio = |n: usize, of: usize| if of == 0 { 0.0 } else { n as f64 / of as f64 };
    EscalationFigures {
        messages: scored.len(),
        escalated,
        auroc: auroc(scored),
        flagged,
        precision_at_flag: ratio(hits, flagged),
        recall_at_flag: ratio(hits, escalated),
    }
}

/// Runs the evaluation on `pack_dir` with `test` (see the module docs).
pub fn escalation(
    pack_dir: &Path,
    test: &[EscalationCase],
    embedder: Arc<dyn TextEmbedder>,
    work: &Path,
) -> Result<EscalationReport> {
    let engine = Engine::open(
        EngineConfig::new(pack_dir.to_path_buf(), work.to_path_buf()),
        embedder,
    )?;
    let flag = engine.pack().escalation.flag;
    let mut scored = Vec::new();
    let mut by_lang: BTreeMap<String, Vec<(f32, bool)>> = BTreeMap::new();
    let mut errors = Vec::new();
    for case in test {
        let r = engine.triage(&TicketRequest {
            body: case.text.clone(),
            ..TicketRequest::default()
        })?;
        let s = r.escalation_risk;
        scored.push((s.score, case.escalated));
        by_lang
            .entry(case.lang.clone())
            .or_default()
            .push((s.score, case.escalated));
        if (s.score >= flag) != case.escalated {
            errors.push(ScoredCase {
                text: case.text.clone(),
                escalated: case.escalated,
                score: s.score,
                reasons: s.reasons,
            });
        }
    }
    let pack_history = match engine.pack().escalation.field.clone() {
        None => None,
        Some(field) => {
            let mut history = Vec::new();
            for t in &engine.pack().tickets {
                let Some(v) = t.fields.get(&field) else {
                    continue;
                };
                let label = matches!(v.trim().to_ascii_lowercase().as_str(), "true" | "yes" | "1");
                history.push((engine.classify_ticket(t)?.escalation_risk.score, label));
            }
            Some(figures(&history, flag))
        }
    };
    Ok(EscalationReport {
        flag,
        test: figures(&scored, flag),
        by_language: by_lang
            .iter()
            .map(|(l, s)| (l.clone(), figures(s, flag)))
            .collect(),
        pack_history,
        errors,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auroc_counts_ordered_pairs_and_half_ties() {
        assert_eq!(auroc(&[(0.9, true), (0.1, false)]), 1.0);
        assert_eq!(auroc(&[(0.1, true), (0.9, false)]), 0.0);
        assert_eq!(auroc(&[(0.5, true), (0.5, false)]), 0.5);
        let f = figures(&[(0.8, true), (0.6, false), (0.2, true)], 0.5);
        assert_eq!((f.flagged, f.escalated), (2, 2));
        assert!((f.precision_at_flag - 0.5).abs() < 1e-9);
        assert!((f.recall_at_flag - 0.5).abs() < 1e-9);
    }
}
