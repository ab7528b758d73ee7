//! Deflection: answer a self-service message from the FAQ bank, offer
//! candidates, or hand off to a human.
//!
//! A wrong answer is worse than a handoff, so the answer needs the verifier's
//! calibrated probability at or above the pack's `deflect_answer` threshold;
//! between `deflect_clarify` and that, the customer chooses among 2–3
//! candidates; below, the message goes to a human (this is also where
//! out-of-scope messages end: nothing in the bank verifies).
//!
//! A message's candidates come from the FAQ bank's two retrievers; [`features`]
//! computes the verifier's evidence for each (in the order of the verifier's
//! `BASE_FEATURES`), [`rank`] scores the articles and [`decide`] chooses.

use std::collections::HashMap;

use crate::api::DeflectAction;
use crate::error::Result;
use crate::model::bankcal::{BankCalibration, Kind, Row, INPUTS};
use crate::model::keyunits::KeyUnits;
use crate::model::textsim::{edit_similarity, jaccard, Units};
use crate::model::verifier::{answer_features, is_latin, Verifier};
use crate::store::faqbank::{Candidate, FaqBank};

/// Phrasings each retriever contributes to the candidate set.
const RETRIEVE_K: usize = 10;
/// Most candidates shown when clarifying.
const CLARIFY_MAX: usize = 3;

/// One article's verified score for a message.
#[derive(Debug, Clone, PartialEq)]
pub struct ScoredArticle {
    /// Bank slot of the article.
    pub slot: usize,
    /// Verifier probability of its best phrasing.
    pub probability: f32,
    /// That phrasing's candidate record (cosine and lexical scores).
    pub best: Candidate,
    /// Units the message and that phrasing share.
    pub matched: Vec<String>,
    /// Units of that phrasing the message lacks.
    pub missing: Vec<String>,
}

/// What to do with a message and why.
#[derive(Debug, Clone)]
pub struct Decision {
    /// Answer, clarify or hand off.
    pub action: DeflectAction,
    /// Probability of the best article (0 when there is none).
    pub confidence: f32,
    /// The answer (one) or the plausible candidates (1–3), best first; empty on handoff.
    pub chosen: Vec<ScoredArticle>,
    /// Human-readable reasons.
    pub reasons: Vec<String>,
}

/// Scores a message against a bank with a verifier, its answer probability
/// read against the pack's own knowledge base when a calibration was fitted
/// ([`Deflector::calibrate`]).
#[derive(Debug, Clone)]
pub struct Deflector {
    verifier: Verifier,
    calibration: Option<BankCalibration>,
}

impl Deflector {
    /// A deflector using `verifier` as fitted (no bank calibration).
    pub fn new(verifier: Verifier) -> Deflector {
        Deflector {
            verifier,
            calibration: None,
        }
    }

    /// Fits the answer probability to `tenant`'s articles in `bank` (see
    /// [`crate::model::bankcal`]): every phrasing of an article with more than
    /// one is scored against the rest of the bank, and every `out_of_scope`
    /// message (text and query vector) against the whole bank. Keeps the
    /// verifier's own probability when there are too few rows.
    pub fn calibrate(
        &mut self,
        bank: &FaqBank,
        tenant: &str,
        out_of_scope: &[(String, Vec<f32>)],
    ) -> Result<Option<BankCalibration>> {
        let uncalibrated = Deflector::new(self.verifier.clone());
        let mut rows = Vec::new();
        for (i, entry, vector) in bank.live_entries(tenant) {
            if entry.learned || bank.phrasing_count(entry.slot) < 2 {
                continue;
            }
            let all = bank.candidates(&entry.units, vector, tenant, 2 * RETRIEVE_K)?;
            let mut cands: Vec<Candidate> = all.iter().copied().filter(|c| c.entry != i).collect();
            cands.truncate(2 * RETRIEVE_K);
            if let Some(top) = uncalibrated.top(bank, &entry.units, &cands) {
                rows.push(Row {
                    x: top.0,
                    right: top.1 == entry.slot,
                    kind: Kind::Phrasing,
                });
            }
            {
                // The same phrasing with its whole article left out: a look-alike
                // of the other articles whose right answer is not in the bank.
                let others: Vec<Candidate> =
                    all.into_iter().filter(|c| c.slot != entry.slot).collect();
                if let Some(top) = uncalibrated.top(bank, &entry.units, &others) {
                    rows.push(Row {
                        x: top.0,
                        right: false,
                        kind: Kind::LookAlike,
                    });
                }
            }
        }
        for (text, vector) in out_of_scope {
            let units = Units::new(text);
            let cands = bank.candidates(&units, vector, tenant, RETRIEVE_K)?;
            if let Some(top) = uncalibrated.top(bank, &units, &cands) {
                rows.push(Row {
                    x: top.0,
                    right: false,
                    kind: Kind::OutOfScope,
                });
            }
        }
        self.calibration = BankCalibration::fit(&rows);
        Ok(self.calibration)
    }

    /// The calibration inputs of the best article among `cands`, and its slot.
    fn top(
        &self,
        bank: &FaqBank,
        units: &Units,
        cands: &[Candidate],
    ) -> Option<([f32; INPUTS], usize)> {
        let feats = features(bank, units, cands, &self.verifier.key_units);
        rank(&self.verifier, None, cands, &feats, is_latin(units))
            .into_iter()
            .next()
            .map(|r| (r.inputs, r.best.slot))
    }

    /// The candidates for a message with their feature rows (for fitting and scoring).
    pub fn candidates(
        &self,
        bank: &FaqBank,
        text: &str,
        qvec: &[f32],
        tenant: &str,
    ) -> Result<(Units, Vec<Candidate>, Vec<Vec<f32>>)> {
        let units = Units::new(text);
        let cands = bank.candidates(&units, qvec, tenant, RETRIEVE_K)?;
        let feats = features(bank, &units, &cands, &self.verifier.key_units);
        Ok((units, cands, feats))
    }

    /// Articles for a message, best first, each scored by its best phrasing.
    pub fn score(
        &self,
        bank: &FaqBank,
        text: &str,
        qvec: &[f32],
        tenant: &str,
    ) -> Result<Vec<ScoredArticle>> {
        let (units, cands, feats) = self.candidates(bank, text, qvec, tenant)?;
        Ok(rank(
            &self.verifier,
            self.calibration.as_ref(),
            &cands,
            &feats,
            is_latin(&units),
        )
        .into_iter()
        .map(|r| {
            let (mut matched, mut missing): (Vec<String>, Vec<String>) = bank
                .entry(r.best.entry)
                .map(|e| {
                    (
                        e.units.set.intersection(&units.set).cloned().collect(),
                        e.units.set.difference(&units.set).cloned().collect(),
                    )
                })
                .unwrap_or_default();
            matched.sort();
            missing.sort();
            ScoredArticle {
                slot: r.best.slot,
                probability: r.probability,
                best: r.best,
                matched,
                missing,
            }
        })
        .collect())
    }
}

/// One article's ranking record.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ranked {
    /// The article's best-scoring phrasing.
    pub best: Candidate,
    /// Its candidate score.
    pub logit: f32,
    /// Its lead over the best other article's score (negative when it trails).
    pub gap: f32,
    /// Probability that answering with it is right.
    pub probability: f32,
    /// Index of the best phrasing among the candidates (and their feature rows).
    pub index: usize,
    /// The bank calibration's inputs for this article (verifier answer logit,
    /// best cosine, cosine lead over the best other article).
    pub inputs: [f32; INPUTS],
}

/// Groups candidates by article (best phrasing wins) and calibrates each article,
/// in the candidate scorer's order (best first). The answer stage sees more than
/// the candidate score, so a runner-up can be more probable than the first:
/// [`decide`] then asks the customer instead of answering. With a bank
/// `calibration`, the probability is its reading of the verifier's.
pub fn rank(
    verifier: &Verifier,
    calibration: Option<&BankCalibration>,
    cands: &[Candidate],
    feats: &[Vec<f32>],
    latin: bool,
) -> Vec<Ranked> {
    // Per article: its best phrasing's score and index among the candidates,
    // and its best cosine.
    let mut best: HashMap<usize, (f32, usize)> = HashMap::new();
    let mut best_cos: HashMap<usize, f32> = HashMap::new();
    for (i, (c, f)) in cands.iter().zip(feats).enumerate() {
        let z = verifier.logit(f);
        let slot = best.entry(c.slot).or_insert((z, i));
        if z > slot.0 {
            *slot = (z, i);
        }
        let cos = best_cos.entry(c.slot).or_insert(c.cos);
        *cos = cos.max(c.cos);
    }
    let cos_lead = |slot: usize| {
        let own = best_cos.get(&slot).copied().unwrap_or(0.0);
        let other = best_cos
            .iter()
            .filter(|(s, _)| **s != slot)
            .map(|(_, c)| *c)
            .fold(f32::MIN, f32::max);
        (own, if other == f32::MIN { 0.0 } else { own - other })
    };
    let mut articles: Vec<(f32, usize)> = best.into_values().collect();
    articles.sort_by(|a, b| {
        b.0.total_cmp(&a.0)
            .then(cands[b.1].cos.total_cmp(&cands[a.1].cos))
            .then(cands[a.1].slot.cmp(&cands[b.1].slot))
    });
    // Without a rival the lead is taken against a score far below any real one.
    const NO_RIVAL: f32 = 10.0;
    let first = articles.first().map(|a| a.0);
    let second = articles.get(1).map(|a| a.0);
    articles
        .iter()
        .enumerate()
        .map(|(rank, &(logit, i))| {
            let rival = if rank == 0 { second } else { first };
            let gap = rival.map(|r| logit - r).unwrap_or(NO_RIVAL);
            let z = verifier.answer_logit(&answer_features(logit, gap, latin, &feats[i]));
            let (cos, lead) = cos_lead(cands[i].slot);
            let inputs = [z, cos, lead];
            Ranked {
                best: cands[i],
                logit,
                gap,
                probability: match calibration {
                    Some(c) => c.probability(inputs),
                    None => 1.0 / (1.0 + (-z).exp()),
                },
                index: i,
                inputs,
            }
        })
        .collect()
}

/// Chooses answer / clarify / handoff from scored articles (best first).
pub fn decide(scored: &[ScoredArticle], answer_at: f32, clarify_at: f32) -> Decision {
    let Some(top) = scored.first() else {
        return Decision {
            action: DeflectAction::Handoff,
            confidence: 0.0,
            chosen: Vec::new(),
            reasons: vec!["no article in the knowledge base matches".into()],
        };
    };
    let p = top.probability;
    if p >= answer_at {
        return Decision {
            action: DeflectAction::Answer,
            confidence: p,
            chosen: vec![top.clone()],
            reasons: vec![format!(
                "verified match {p:.2} ≥ answer threshold {answer_at:.2} (cosine {:.2}, lexical {:.2})",
                top.best.cos, top.best.lex
            )],
        };
    }
    // A runner-up the answer stage finds more probable is offered, not answered.
    let most = scored.iter().map(|s| s.probability).fold(p, f32::max);
    if most >= clarify_at {
        // Only plausible articles are offered, most probable first: a lone one
        // becomes "did you mean …?".
        let floor = clarify_at / 2.0;
        let mut chosen: Vec<ScoredArticle> = scored
            .iter()
            .filter(|s| s.probability >= floor)
            .cloned()
            .collect();
        chosen.sort_by(|a, b| b.probability.total_cmp(&a.probability));
        chosen.truncate(CLARIFY_MAX);
        return Decision {
            action: DeflectAction::Clarify,
            confidence: p,
            chosen,
            reasons: vec![if most > p {
                format!(
                    "best match {p:.2} is below the answer threshold {answer_at:.2} and another article is more probable ({most:.2}): asking the customer to choose"
                )
            } else {
                format!(
                    "best match {p:.2} is below the answer threshold {answer_at:.2}: asking the customer to choose"
                )
            }],
        };
    }
    Decision {
        action: DeflectAction::Handoff,
        confidence: p,
        chosen: Vec::new(),
        reasons: vec![format!(
            "best match {p:.2} is below the clarify threshold {clarify_at:.2}: handing off to a human"
        )],
    }
}

/// The evidence behind a decision in one line a person can check: the best
/// article and the runner-up, each with its probability, cosine, the phrasing
/// it matched and the terms matched and missing. A phrasing learned from chats
/// is named as such, not quoted (customers' words are not shown to others).
pub fn evidence_line(bank: &FaqBank, scored: &[ScoredArticle]) -> String {
    let one = |s: &ScoredArticle, full: bool| {
        let id = bank.article(s.slot).map_or("?", |a| a.id.as_str());
        let entry = bank.entry(s.best.entry);
        let mut out = format!("{id} {:.2} (cosine {:.2}", s.probability, s.best.cos);
        match entry {
            Some(e) if e.learned => out.push_str(", a learned phrasing"),
            Some(e) if full => out.push_str(&format!(", phrasing \"{}\"", e.text)),
            _ => {}
        }
        if full && !s.matched.is_empty() {
            out.push_str(&format!(", matched {}", s.matched.join(" ")));
        }
        if full && entry.is_some_and(|e| !e.learned) && !s.missing.is_empty() {
            out.push_str(&format!(", missing {}", s.missing.join(" ")));
        }
        out.push(')');
        out
    };
    match scored {
        [] => "no candidate article".into(),
        [top] => format!("best: {}; no runner-up", one(top, true)),
        [top, second, ..] => format!("best: {}; runner-up: {}", one(top, true), one(second, true)),
    }
}

/// Evidence for every candidate of one message, in candidate order; `keys` weighs
/// the units the two sides do not share.
pub fn features(
    bank: &FaqBank,
    query: &Units,
    cands: &[Candidate],
    keys: &KeyUnits,
) -> Vec<Vec<f32>> {
    let latin = f32::from(is_latin(query));
    let top_cos = cands.iter().map(|c| c.cos).fold(f32::MIN, f32::max);
    let top_lex = cands.iter().map(|c| c.lex).fold(f32::MIN, f32::max);
    // Per article: cosines of its retrieved phrasings, best first.
    let mut article_cos: HashMap<usize, Vec<f32>> = HashMap::new();
    for c in cands {
        article_cos.entry(c.slot).or_default().push(c.cos);
    }
    for v in article_cos.values_mut() {
        v.sort_by(|a, b| b.total_cmp(a));
    }
    let idf = bank.idf();
    let scale = |v: f32| v / ((bank.len() as f32 + 1.0).ln() + 1.0);
    cands
        .iter()
        .map(|c| {
            let other = article_cos
                .iter()
                .filter(|(slot, _)| **slot != c.slot)
                .map(|(_, v)| v[0])
                .fold(f32::MIN, f32::max);
            let other = if other == f32::MIN { 0.0 } else { other };
            let empty = Units::default();
            let e = bank.entry(c.entry).map(|e| &e.units).unwrap_or(&empty);
            let bigram_j = jaccard(&query.bigrams, &e.bigrams);
            let (lq, le) = (query.units.len() as f32, e.units.len() as f32);
            let base: Vec<f32> = vec![
                c.cos,
                c.cos - top_cos,
                c.cos - other,
                c.lex,
                c.lex - top_lex,
                jaccard(&query.set, &e.set),
                bigram_j,
                idf.unmatched_mass(query, e),
                idf.unmatched_mass(e, query),
                scale(idf.max_unmatched_idf(query, e)),
                scale(idf.max_unmatched_idf(e, query)),
                f32::from(
                    !query.numbers.is_empty()
                        && !e.numbers.is_empty()
                        && query.numbers != e.numbers,
                ),
                f32::from(query.numbers.is_empty() != e.numbers.is_empty()),
                f32::from(query.negated != e.negated),
                edit_similarity(&query.units, &e.units),
                if lq.max(le) > 0.0 {
                    lq.min(le) / lq.max(le)
                } else {
                    1.0
                },
                f32::from(query.units == e.units),
                c.cos * bigram_j,
                c.cos * c.cos,
                // Support from the article's other phrasings (0 in one-phrasing banks).
                article_cos
                    .get(&c.slot)
                    .and_then(|v| v.get(1))
                    .copied()
                    .unwrap_or(0.0),
                article_cos
                    .get(&c.slot)
                    .map_or(0.0, |v| (v.len() - 1) as f32 / cands.len().max(1) as f32),
            ]
            .into_iter()
            .chain(keys.evidence(query, e))
            .collect();
            let multi = f32::from(bank.phrasing_count(c.slot) > 1);
            let mut all = Vec::with_capacity(base.len() * 3);
            all.extend_from_slice(&base);
            all.extend(base.iter().map(|v| v * latin));
            all.extend(base.iter().map(|v| v * multi));
            all
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::verifier::{feature_names, BASE_FEATURES};

    fn scored(p: &[f32]) -> Vec<ScoredArticle> {
        p.iter()
            .enumerate()
            .map(|(i, &probability)| ScoredArticle {
                slot: i,
                probability,
                best: Candidate {
                    entry: i,
                    slot: i,
                    cos: 0.9,
                    lex: 0.5,
                },
                matched: Vec::new(),
                missing: Vec::new(),
            })
            .collect()
    }

    #[test]
    fn thresholds_pick_the_action() {
        let d = decide(&scored(&[0.9, 0.3]), 0.8, 0.45);
        assert_eq!(d.action, DeflectAction::Answer);
        assert_eq!(d.chosen.len(), 1);
        let d = decide(&scored(&[0.6, 0.5, 0.4, 0.3]), 0.8, 0.45);
        assert_eq!(d.action, DeflectAction::Clarify);
        assert_eq!(d.chosen.len(), 3);
        let d = decide(&scored(&[0.6, 0.01]), 0.8, 0.45);
        assert_eq!(d.action, DeflectAction::Clarify);
        assert_eq!(d.chosen.len(), 1, "an implausible article is not offered");
        // The answer stage prefers the runner-up: ask, most probable first.
        let d = decide(&scored(&[0.6, 0.9, 0.5]), 0.8, 0.45);
        assert_eq!(d.action, DeflectAction::Clarify);
        assert_eq!(
            d.chosen.iter().map(|c| c.slot).collect::<Vec<_>>(),
            vec![1, 0, 2]
        );
        // A more probable runner-up is offered even when the first is not plausible.
        let d = decide(&scored(&[0.2, 0.6]), 0.8, 0.45);
        assert_eq!(d.action, DeflectAction::Clarify);
        assert_eq!(d.chosen.iter().map(|c| c.slot).collect::<Vec<_>>(), vec![1]);
        assert!(d.reasons[0].contains("more probable"), "{:?}", d.reasons);
        let d = decide(&scored(&[0.2]), 0.8, 0.45);
        assert_eq!(d.action, DeflectAction::Handoff);
        assert!(d.chosen.is_empty());
        assert_eq!(decide(&[], 0.8, 0.45).action, DeflectAction::Handoff);
    }

    /// A bank of `n` two-topic articles, three phrasings each, embedded by the
    /// hashing embedder.
    fn bank_of(n: usize) -> (FaqBank, crate::hashembed::HashEmbedder) {
        use models::{EmbedKind, TextEmbedder};
        let embedder = crate::hashembed::HashEmbedder::new(256);
        let mut bank = FaqBank::new(256);
        let things = [
            "冰箱",
            "空调",
            "洗衣机",
            "热水器",
            "电视",
            "手机",
            "电脑",
            "耳机",
            "烤箱",
            "风扇",
            "音箱",
            "相机",
        ];
        let troubles = ["漏水", "不制冷", "噪音大", "开不了机", "显示E1"];
        for i in 0..n {
            let (a, b) = (things[i % things.len()], troubles[i % troubles.len()]);
            let article = indexer::Article {
                id: format!("kb-{i}"),
                question: format!("{a}{b}怎么办"),
                answer: "…".into(),
                alt_questions: vec![format!("我的{a}{b}了"), format!("{a}{b}是什么原因")],
                ..indexer::Article::default()
            };
            let texts = FaqBank::phrasings(&article);
            let vectors = embedder.embed(&texts, EmbedKind::Query).unwrap();
            bank.upsert(article.clone(), &vectors).unwrap();
        }
        (bank, embedder)
    }

    #[test]
    fn the_bank_calibration_is_fitted_on_held_out_phrasings_and_out_of_scope_requests() {
        use models::{EmbedKind, TextEmbedder};
        let (bank, embedder) = bank_of(12);
        let oos_texts: Vec<String> = (0..25)
            .map(|i| format!("明天第{i}场足球比赛几点开始"))
            .collect();
        let refs: Vec<&str> = oos_texts.iter().map(String::as_str).collect();
        let oos: Vec<(String, Vec<f32>)> = oos_texts
            .iter()
            .cloned()
            .zip(embedder.embed(&refs, EmbedKind::Query).unwrap())
            .collect();
        let mut d = Deflector::new(Verifier::builtin().unwrap());
        assert!(
            d.calibrate(&bank, "", &oos[..5]).unwrap().is_none(),
            "five out-of-scope requests are too few: the verifier stays as fitted"
        );
        assert!(d.calibrate(&bank, "", &oos).unwrap().is_some());
        let p = |text: &str| {
            let q = embedder.embed(&[text], EmbedKind::Query).unwrap().remove(0);
            d.score(&bank, text, &q, "").unwrap()[0].clone()
        };
        let inside = p("我家冰箱漏水了怎么办");
        let outside = p("后天第3场足球比赛几点开始");
        assert_eq!(bank.article(inside.slot).unwrap().id, "kb-0");
        assert!(
            inside.probability > outside.probability,
            "{} vs {}",
            inside.probability,
            outside.probability
        );
        // The evidence names the best article and the runner-up.
        let q = embedder
            .embed(&["冰箱漏水"], EmbedKind::Query)
            .unwrap()
            .remove(0);
        let scored = d.score(&bank, "冰箱漏水", &q, "").unwrap();
        let line = evidence_line(&bank, &scored);
        assert!(line.starts_with("best: kb-0 "), "{line}");
        assert!(line.contains("; runner-up: kb-"), "{line}");
        assert!(line.contains("matched"), "{line}");
        assert_eq!(evidence_line(&bank, &[]), "no candidate article");
    }

    #[test]
    fn other_phrasings_of_an_article_support_it() {
        use crate::hashembed::HashEmbedder;
        use models::{EmbedKind, TextEmbedder};
        let embedder = HashEmbedder::new(64);
        let mut bank = FaqBank::new(64);
        let articles = [
            (
                "a",
                "空调不制冷怎么办",
                vec!["空调不制冷了", "空调不凉快怎么办"],
            ),
            ("b", "空调漏水怎么办", vec![]),
        ];
        for (id, q, alts) in &articles {
            let article = indexer::Article {
                id: id.to_string(),
                question: q.to_string(),
                answer: "…".into(),
                alt_questions: alts.iter().map(|s| s.to_string()).collect(),
                ..indexer::Article::default()
            };
            let texts = FaqBank::phrasings(&article);
            let vectors = embedder.embed(&texts, EmbedKind::Query).unwrap();
            bank.upsert(article.clone(), &vectors).unwrap();
        }
        let text = "空调不制冷";
        let q = embedder.embed(&[text], EmbedKind::Query).unwrap().remove(0);
        let units = Units::new(text);
        let cands = bank.candidates(&units, &q, "", 10).unwrap();
        let feats = features(&bank, &units, &cands, &KeyUnits::default());
        let slots: std::collections::HashSet<usize> = cands.iter().map(|c| c.slot).collect();
        assert_eq!(slots.len(), 2, "both articles are candidates");
        let at = |name: &str| BASE_FEATURES.iter().position(|f| *f == name).unwrap();
        for (c, f) in cands.iter().zip(&feats) {
            assert_eq!(
                f.len(),
                feature_names().len(),
                "the verifier's feature list"
            );
            let article = &bank.article(c.slot).unwrap().id;
            let (second, share) = (
                f[at("article_second_cos")],
                f[at("article_other_phrasings_share")],
            );
            let n = BASE_FEATURES.len();
            let (base, faq_block) = (&f[..n], &f[2 * n..]);
            if article == "a" {
                assert!(second > 0.0 && share > 0.0, "{second} {share}");
                assert_eq!(
                    faq_block, base,
                    "a multi-phrasing article's FAQ block is its evidence"
                );
            } else {
                assert_eq!(
                    (second, share),
                    (0.0, 0.0),
                    "a one-phrasing article has no support"
                );
                assert!(faq_block.iter().all(|v| *v == 0.0), "{faq_block:?}");
            }
        }
        // Once its alternatives are gone, article a is a one-phrasing article too.
        let slot_a = cands
            .iter()
            .find(|c| bank.article(c.slot).is_some_and(|a| a.id == "a"))
            .map(|c| c.slot)
            .unwrap();
        assert_eq!(bank.phrasing_count(slot_a), 3);
        bank.remove("", "a");
        assert_eq!(bank.phrasing_count(slot_a), 0);
    }
}
