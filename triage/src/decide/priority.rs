//! Priority rules: the pack's urgency lexicon as a floor under the model's
//! priority decision.
//!
//! A lexicon word (停机, 漏电, "server is down", ...) raises a request to at
//! least its level and never lowers it, so a model can never demote a lexicon
//! `P0`. Urgent floors (`P0`/`P1`) are never left to abstention: an urgent
//! request must not wait in a "needs a human" queue.

use std::collections::HashSet;

use crate::api::{LabelDecision, ScoredLabel};
use crate::decide::labels::overrule_abstention;
use crate::pack::{priority_rank, Pack};

/// Lexicon levels at or above this rank (`P0`, `P1`) are urgent: never abstained on.
const URGENT_RANK: usize = 1;

/// Confidence of a decision floored by an urgent lexicon word.
const URGENT_CONFIDENCE: f32 = 0.95;

/// English suffixes a lexicon word may carry and still count ("outages", "urgently").
const ALLOWED_SUFFIXES: [&str; 3] = ["s", "es", "ly"];

/// One occurrence of a lexicon word in a text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LexiconHit {
    /// The lexicon entry that matched (as written in the pack).
    pub word: String,
    /// Its level, `P0`..`P3`.
    pub level: String,
    /// Byte span `[start, end)` of the occurrence in the text.
    pub span: (usize, usize),
}

/// A lexicon entry prepared for matching.
#[derive(Debug, Clone)]
struct Entry {
    word: String,
    level: String,
    /// ASCII-lower-cased, whitespace-separated tokens; any whitespace run matches between them.
    tokens: Vec<String>,
}

/// The pack's urgency lexicon, applied on top of a model's priority decision.
#[derive(Debug, Clone)]
pub struct PriorityRules {
    entries: Vec<Entry>,
    /// Lower-cased phrases inside which a lexicon word does not count.
    exceptions: Vec<String>,
}

impl PriorityRules {
    /// Prepares the lexicon of `pack` (already validated by [`Pack::load`]).
    pub fn new(pack: &Pack) -> PriorityRules {
        let entries = pack
            .lexicon
            .iter()
            .filter(|(level, _)| priority_rank(level).is_some())
            .flat_map(|(level, words)| {
                words.iter().filter_map(move |word| {
                    let tokens: Vec<String> = word
                        .split_whitespace()
                        .map(str::to_ascii_lowercase)
                        .collect();
                    (!tokens.is_empty()).then(|| Entry {
                        word: word.clone(),
                        level: level.clone(),
                        tokens,
                    })
                })
            })
            .collect();
        PriorityRules {
            entries,
            exceptions: pack.lexicon_exceptions.clone(),
        }
    }

    /// Every occurrence of every lexicon word, in text order. English matching
    /// ignores ASCII case, accepts any whitespace between words and only whole
    /// words (plus a plural/adverb suffix); Chinese words match anywhere.
    pub fn lexicon_hits(&self, text: &str) -> Vec<LexiconHit> {
        // ASCII lower-casing keeps every byte offset, so spans index `text`.
        let lower = text.to_ascii_lowercase();
        let excepted: Vec<(usize, usize)> = self
            .exceptions
            .iter()
            .flat_map(|p| {
                lower
                    .match_indices(p.as_str())
                    .map(|(s, m)| (s, s + m.len()))
            })
            .collect();
        let mut hits = Vec::new();
        for entry in &self.entries {
            let Some(first) = entry.tokens.first() else {
                continue;
            };
            for (start, _) in lower.match_indices(first.as_str()) {
                if let Some(end) = match_entry(&lower, start, &entry.tokens) {
                    if excepted.iter().any(|&(s, e)| s <= start && end <= e) {
                        continue;
                    }
                    hits.push(LexiconHit {
                        word: entry.word.clone(),
                        level: entry.level.clone(),
                        span: (start, end),
                    });
                }
            }
        }
        hits.sort_by(|a, b| a.span.cmp(&b.span).then(a.level.cmp(&b.level)));
        hits
    }

    /// Combines the model's priority decision with the lexicon: the result is
    /// the more urgent of the two; a lexicon `P0`/`P1` floor is never abstained
    /// on and gets confidence `max(model's probability of that level, 0.95)`.
    /// Reasons name each matched word (`lexicon: 停机 → P0`).
    pub fn apply(&self, text: &str, model: LabelDecision) -> LabelDecision {
        let hits = self.lexicon_hits(text);
        let Some((floor_rank, floor)) = hits
            .iter()
            .filter_map(|h| priority_rank(&h.level).map(|r| (r, h.level.clone())))
            .min_by_key(|(rank, _)| *rank)
        else {
            return model;
        };
        let mut decision = model;
        let mut seen = HashSet::new();
        for hit in &hits {
            if seen.insert(hit.word.as_str()) {
                decision
                    .reasons
                    .push(format!("lexicon: {} → {}", hit.word, hit.level));
            }
        }
        let model_rank = decision.label.as_deref().and_then(priority_rank);
        let urgent = floor_rank <= URGENT_RANK;

        match model_rank {
            Some(rank) if rank < floor_rank => {
                // The model is already more urgent than the floor: keep its label.
                if urgent && decision.abstain {
                    overrule_abstention(
                        &mut decision,
                        &format!("the urgent lexicon floor {floor}"),
                    );
                    decision
                        .reasons
                        .push(format!("urgent lexicon floor {floor}: not held for review"));
                }
                decision
            }
            _ => {
                let model_label = decision.label.clone();
                let model_probability = probability_of(&decision, &floor);
                let confidence = if urgent {
                    model_probability.max(URGENT_CONFIDENCE)
                } else {
                    model_probability
                };
                decision.reasons.push(match &model_label {
                    Some(label) if *label == floor => format!("lexicon agrees with model: {floor}"),
                    Some(label) => format!("lexicon raised priority {label} → {floor}"),
                    None => format!("lexicon set priority {floor} (model abstained)"),
                });
                // A non-urgent floor keeps the model's abstention: a human may still decide.
                if urgent && decision.abstain {
                    overrule_abstention(
                        &mut decision,
                        &format!("the urgent lexicon floor {floor}"),
                    );
                }
                decision.label = Some(floor.clone());
                decision.confidence = confidence;
                decision.alternatives = promote(&decision.alternatives, &floor, confidence);
                decision
            }
        }
    }
}

/// Matches `tokens` at byte `start` of the ASCII-lower-cased `text`; returns the
/// end of the match, or `None` when it does not match or is part of a longer word.
fn match_entry(text: &str, start: usize, tokens: &[String]) -> Option<usize> {
    let mut pos = start;
    for (i, token) in tokens.iter().enumerate() {
        if i > 0 {
            let gap: usize = text[pos..]
                .chars()
                .take_while(|c| c.is_whitespace())
                .map(char::len_utf8)
                .sum();
            if gap == 0 {
                return None;
            }
            pos += gap;
        }
        if !text[pos..].starts_with(token.as_str()) {
            return None;
        }
        pos += token.len();
    }
    let starts_word = text[start..].starts_with(|c: char| c.is_ascii_alphanumeric());
    if starts_word
        && text[..start]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_ascii_alphanumeric())
    {
        return None;
    }
    let ends_word = text[..pos]
        .chars()
        .next_back()
        .is_some_and(|c| c.is_ascii_alphanumeric());
    if ends_word {
        let tail_len = text[pos..]
            .bytes()
            .take_while(u8::is_ascii_alphanumeric)
            .count();
        let tail = &text[pos..pos + tail_len];
        if !(tail.is_empty() || ALLOWED_SUFFIXES.contains(&tail)) {
            return None;
        }
        pos += tail_len;
    }
    Some(pos)
}

/// The model's probability for `label`: its confidence if it chose it, else
/// the label's entry among the alternatives, else 0.
fn probability_of(decision: &LabelDecision, label: &str) -> f32 {
    if decision.label.as_deref() == Some(label) {
        return decision.confidence;
    }
    decision
        .alternatives
        .iter()
        .find(|a| a.label == label)
        .map_or(0.0, |a| a.probability)
}

/// Alternatives with `label` first at `probability` and the others rescaled to
/// share the remaining mass, so they still sum to at most 1.
fn promote(alternatives: &[ScoredLabel], label: &str, probability: f32) -> Vec<ScoredLabel> {
    let others: Vec<&ScoredLabel> = alternatives.iter().filter(|a| a.label != label).collect();
    let other_mass: f32 = others.iter().map(|a| a.probability).sum();
    let scale = if other_mass > 0.0 {
        ((1.0 - probability) / other_mass).min(1.0)
    } else {
        0.0
    };
    let mut result = vec![ScoredLabel {
        label: label.to_string(),
        probability,
    }];
    result.extend(others.into_iter().map(|a| ScoredLabel {
        label: a.label.clone(),
        probability: a.probability * scale,
    }));
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(word: &str) -> Vec<String> {
        word.split_whitespace()
            .map(str::to_ascii_lowercase)
            .collect()
    }

    #[test]
    fn match_entry_respects_word_boundaries() {
        let text = "the firewall is on fire";
        assert_eq!(match_entry(text, 4, &tokens("fire")), None);
        assert_eq!(match_entry(text, 19, &tokens("fire")), Some(23));
        assert_eq!(match_entry("two outages", 4, &tokens("outage")), Some(11));
        assert_eq!(match_entry("outaged", 0, &tokens("outage")), None);
    }

    #[test]
    fn match_entry_spans_any_whitespace_between_words() {
        let text = "server  is\ndown";
        assert_eq!(
            match_entry(text, 0, &tokens("server is down")),
            Some(text.len())
        );
        assert_eq!(
            match_entry("serveris down", 0, &tokens("server is down")),
            None
        );
    }

    #[test]
    fn promote_keeps_a_distribution() {
        let alts = vec![
            ScoredLabel {
                label: "P3".into(),
                probability: 0.9,
            },
            ScoredLabel {
                label: "P2".into(),
                probability: 0.08,
            },
            ScoredLabel {
                label: "P0".into(),
                probability: 0.02,
            },
        ];
        let out = promote(&alts, "P0", 0.95);
        assert_eq!(out[0].label, "P0");
        assert_eq!(out.len(), 3);
        let total: f32 = out.iter().map(|a| a.probability).sum();
        assert!((total - 1.0).abs() < 1e-5, "total {total}");
        assert!(out[1].probability > out[2].probability);
    }
}
