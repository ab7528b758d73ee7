//! `eval deflect`: answer / clarify / hand off on an FAQ bank, measured; and
//! fitting the verifier on question pairs.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use indexer::Article;
use models::{AdaptExample, EmbedKind, TextEmbedder, TrainingSet};
use serde::{Deserialize, Serialize};

use crate::api::DeflectAction;
use crate::decide::deflect::{decide, rank, Deflector, ScoredArticle};
use crate::error::{Error, Result};
use crate::eval::classify::{embed_all, share};
use crate::model::adaptation::{adapt, AdaptSettings, AdaptationSummary};
use crate::model::keyunits::KeyUnits;
use crate::model::textsim::Units;
use crate::model::verifier::{answer_features, is_latin, Verifier};
use crate::pack::Thresholds;
use crate::store::faqbank::Candidate;
use crate::store::faqbank::FaqBank;

/// One FAQ line: `{"id","question","answer"}` (alternative phrasings optional).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct FaqEntry {
    /// Stable id.
    pub id: String,
    /// The question.
    pub question: String,
    /// The answer.
    pub answer: String,
    /// Other phrasings of the question.
    pub alt_questions: Vec<String>,
}

/// One test line: `{"text","faq_ids":[...]}`; an empty list means out of scope.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct DeflectCase {
    /// The customer's message.
    pub text: String,
    /// FAQ ids any of which is a right answer.
    pub faq_ids: Vec<String>,
}

/// Outcomes at one pair of thresholds.
#[derive(Debug, Clone, Serialize)]
pub struct DeflectPoint {
    /// Answer threshold.
    pub answer_threshold: f32,
    /// Clarify threshold.
    pub clarify_threshold: f32,
    /// In-scope messages answered (right or wrong).
    pub answer_rate: f32,
    /// Answers (to any message) that were right.
    pub answer_precision: f32,
    /// Answers to in-scope messages that were right (out-of-scope answers left out).
    pub in_scope_answer_precision: f32,
    /// Out-of-scope messages handed off.
    pub oos_handoff_recall: f32,
    /// In-scope messages answered with a clarification.
    pub clarify_rate: f32,
    /// Clarifications (in scope) whose candidates include a right article.
    pub clarify_hit_rate: f32,
}

/// A plain-cosine baseline point: answer when the best cosine ≥ threshold.
#[derive(Debug, Clone, Serialize)]
pub struct CosinePoint {
    /// Cosine threshold.
    pub threshold: f32,
    /// In-scope messages answered.
    pub answer_rate: f32,
    /// Answers that were right.
    pub answer_precision: f32,
    /// Answers to in-scope messages that were right.
    pub in_scope_answer_precision: f32,
    /// Out-of-scope messages handed off.
    pub oos_handoff_recall: f32,
}

/// What `eval deflect` prints (one JSON object).
#[derive(Debug, Clone, Serialize)]
pub struct DeflectReport {
    /// Embedding model.
    pub model: String,
    /// Verifier provenance.
    pub verifier: String,
    /// FAQ entries in the bank.
    pub faq_entries: usize,
    /// Test messages.
    pub test_messages: usize,
    /// Of which in scope.
    pub in_scope: usize,
    /// Of which out of scope.
    pub out_of_scope: usize,
    /// Messages whose right answers gained a bank entry with the very same words
    /// (case, width, punctuation and spacing aside) that the test file did not
    /// list; such an entry answers the message. `in_scope` / `out_of_scope`
    /// count the messages after this.
    pub same_text_added: usize,
    /// Answer threshold of the headline numbers (the pack default).
    pub answer_threshold: f32,
    /// Clarify threshold of the headline numbers.
    pub clarify_threshold: f32,
    /// In-scope messages answered.
    pub answer_rate: f32,
    /// Answers that were right.
    pub answer_precision: f32,
    /// Answers to in-scope messages that were right.
    pub in_scope_answer_precision: f32,
    /// Out-of-scope messages handed off.
    pub oos_handoff_recall: f32,
    /// In-scope messages answered with a clarification.
    pub clarify_rate: f32,
    /// Clarifications whose candidates include a right article.
    pub clarify_hit_rate: f32,
    /// In-scope messages with a right article among the retrieved candidates.
    pub retrieval_recall: f32,
    /// The same at other answer thresholds.
    pub at_thresholds: Vec<DeflectPoint>,
    /// The plain-cosine baseline on the same data.
    pub cosine_baseline: Vec<CosinePoint>,
    /// Seconds spent embedding the bank and the messages.
    pub embed_seconds: f32,
    /// Mean milliseconds to score one message (retrieval + verifier, embedding excluded).
    pub score_ms_per_message: f32,
    /// The encoder adaptation (`--adapt`): its fold verdict, time and memory.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub adaptation: Option<AdaptationSummary>,
}

/// Other answer thresholds reported beside the pack default.
const OTHER_ANSWER_THRESHOLDS: [f32; 3] = [0.5, 0.65, 0.9];
/// Cosine thresholds of the baseline.
const COSINE_THRESHOLDS: [f32; 5] = [0.9, 0.93, 0.95, 0.97, 0.98];

/// An embedded bank and embedded messages.
struct Prepared {
    bank: FaqBank,
    ids: Vec<String>,
    qvecs: Vec<f32>,
    /// The messages, with same-text entries added to their right answers.
    cases: Vec<DeflectCase>,
    /// How many messages that changed.
    same_text_added: usize,
    embed_seconds: f32,
}

fn prepare(
    faq: &[FaqEntry],
    test: &[DeflectCase],
    embedder: &dyn TextEmbedder,
) -> Result<Prepared> {
    if faq.is_empty() || test.is_empty() {
        return Err(Error::InvalidInput(
            "deflection needs a non-empty FAQ and test set".into(),
        ));
    }
    let t0 = Instant::now();
    let dim = embedder.dim();
    let mut bank = FaqBank::new(dim);
    let articles: Vec<Article> = faq
        .iter()
        .map(|f| Article {
            id: f.id.clone(),
            question: f.question.clone(),
            answer: f.answer.clone(),
            alt_questions: f.alt_questions.clone(),
            ..Article::default()
        })
        .collect();
    let phrasings: Vec<&str> = articles.iter().flat_map(FaqBank::phrasings).collect();
    let flat = embed_all(embedder, &phrasings, EmbedKind::Query)?;
    let mut rows = flat.chunks_exact(dim);
    let mut ids = Vec::new();
    for a in articles.iter() {
        let n = FaqBank::phrasings(a).len();
        let vs: Vec<Vec<f32>> = rows.by_ref().take(n).map(<[f32]>::to_vec).collect();
        ids.push(a.id.clone());
        bank.upsert(a.clone(), &vs)?;
    }
    let texts: Vec<&str> = test.iter().map(|c| c.text.as_str()).collect();
    let qvecs = embed_all(embedder, &texts, EmbedKind::Query)?;
    // An entry that is the message itself (same units: case, width, punctuation and
    // spacing aside) answers it, whether or not the data set linked the two.
    let mut same_text: HashMap<Vec<String>, Vec<String>> = HashMap::new();
    for a in &articles {
        for p in FaqBank::phrasings(a) {
            same_text
                .entry(Units::new(p).units)
                .or_default()
                .push(a.id.clone());
        }
    }
    let cases: Vec<DeflectCase> = test
        .iter()
        .map(|c| {
            let mut case = c.clone();
            for id in same_text
                .get(&Units::new(&c.text).units)
                .into_iter()
                .flatten()
            {
                if !case.faq_ids.contains(id) {
                    case.faq_ids.push(id.clone());
                }
            }
            case
        })
        .collect();
    let same_text_added = cases
        .iter()
        .zip(test)
        .filter(|(a, b)| a.faq_ids.len() != b.faq_ids.len())
        .count();
    Ok(Prepared {
        bank,
        ids,
        qvecs,
        cases,
        same_text_added,
        embed_seconds: t0.elapsed().as_secs_f32(),
    })
}

/// Runs deflection on `test` against `faq` with the shipped verifier and the pack's
/// default thresholds; writes per-message decisions to `work_dir/deflect_decisions.jsonl`.
///
/// With `calibrate_on` (out-of-scope messages, none of them in `test`), the
/// answer probability is first calibrated on the bank as the engine does with
/// a pack's `out_of_scope.jsonl` (see [`crate::model::bankcal`]).
pub fn deflect(
    faq: &[FaqEntry],
    test: &[DeflectCase],
    embedder: Arc<dyn TextEmbedder>,
    calibrate_on: Option<&[String]>,
    work_dir: &Path,
) -> Result<DeflectReport> {
    deflect_with(
        faq,
        test,
        embedder,
        &Verifier::builtin()?,
        calibrate_on,
        work_dir,
    )
}

/// [`deflect_with`] after adapting the encoder to the bank's phrasings
/// (`triage eval deflect --adapt`): each article's phrasings are one group,
/// a held-out fold of phrasings decides whether the adapted encoder is used
/// (see [`adaptation`](crate::model::adaptation)); the report says which.
pub fn deflect_adapted(
    faq: &[FaqEntry],
    test: &[DeflectCase],
    embedder: Arc<dyn TextEmbedder>,
    verifier: &Verifier,
    calibrate_on: Option<&[String]>,
    work_dir: &Path,
    settings: &AdaptSettings,
) -> Result<DeflectReport> {
    let encoder = embedder.encoder().ok_or_else(|| {
        Error::InvalidInput("adaptation needs the built-in encoder (not a test embedder)".into())
    })?;
    let mut examples = Vec::new();
    for (group, e) in faq.iter().enumerate() {
        let mut seen = HashSet::new();
        for text in std::iter::once(&e.question).chain(&e.alt_questions) {
            let text = text.trim();
            if !text.is_empty() && seen.insert(text) {
                examples.push(AdaptExample {
                    text: text.to_string(),
                    kind: EmbedKind::Query,
                    task: 0,
                    group,
                });
            }
        }
    }
    let opts = &settings.options;
    let set = TrainingSet::prepare(
        encoder,
        &examples,
        opts.layers,
        opts.max_tokens,
        opts.threads,
    )?;
    let a = adapt(
        encoder,
        &set,
        &examples,
        &vec![true; examples.len()],
        settings,
    )?;
    let mut report = if a.summary.fold.accepted {
        let adapted: Arc<dyn TextEmbedder> = Arc::new(encoder.adapted(&a.adapter)?);
        deflect_with(faq, test, adapted, verifier, calibrate_on, work_dir)?
    } else {
        deflect_with(faq, test, embedder, verifier, calibrate_on, work_dir)?
    };
    report.adaptation = Some(a.summary);
    Ok(report)
}

/// [`deflect`] with a given verifier.
pub fn deflect_with(
    faq: &[FaqEntry],
    test: &[DeflectCase],
    embedder: Arc<dyn TextEmbedder>,
    verifier: &Verifier,
    calibrate_on: Option<&[String]>,
    work_dir: &Path,
) -> Result<DeflectReport> {
    let prep = prepare(faq, test, embedder.as_ref())?;
    let test = prep.cases.as_slice();
    let dim = embedder.dim();
    let mut deflector = Deflector::new(verifier.clone());
    let mut calibrated = false;
    if let Some(texts) = calibrate_on.filter(|t| !t.is_empty()) {
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let flat = embed_all(embedder.as_ref(), &refs, EmbedKind::Query)?;
        let oos: Vec<(String, Vec<f32>)> = texts
            .iter()
            .cloned()
            .zip(flat.chunks_exact(dim).map(<[f32]>::to_vec))
            .collect();
        calibrated = deflector.calibrate(&prep.bank, "", &oos)?.is_some();
    }
    let t0 = Instant::now();
    let mut scored_all: Vec<Vec<ScoredArticle>> = Vec::with_capacity(test.len());
    let mut top_cos: Vec<(f32, Option<usize>)> = Vec::with_capacity(test.len());
    let mut retrieved = 0usize;
    for (case, q) in test.iter().zip(prep.qvecs.chunks_exact(dim)) {
        let (_, cands, _) = deflector.candidates(&prep.bank, &case.text, q, "")?;
        let best = cands.iter().max_by(|a, b| a.cos.total_cmp(&b.cos));
        top_cos.push((best.map(|c| c.cos).unwrap_or(0.0), best.map(|c| c.slot)));
        let right = |slot: usize| case.faq_ids.iter().any(|id| *id == prep.ids[slot]);
        retrieved += usize::from(!case.faq_ids.is_empty() && cands.iter().any(|c| right(c.slot)));
        scored_all.push(deflector.score(&prep.bank, &case.text, q, "")?);
    }
    let score_ms = t0.elapsed().as_secs_f64() * 1000.0 / test.len() as f64;
    std::fs::create_dir_all(work_dir).map_err(|source| Error::Io {
        path: work_dir.to_path_buf(),
        source,
    })?;
    let defaults = Thresholds::default();
    let headline = point(
        test,
        &prep.ids,
        &scored_all,
        defaults.deflect_answer,
        defaults.deflect_clarify,
    );
    write_decisions(work_dir, test, &prep.ids, &scored_all, &defaults)?;
    let in_scope = test.iter().filter(|c| !c.faq_ids.is_empty()).count();
    let cosine_baseline = COSINE_THRESHOLDS
        .iter()
        .map(|&t| {
            let (mut answered_in, mut answers, mut right, mut oos_handoff) = (0, 0, 0, 0);
            for (case, &(cos, slot)) in test.iter().zip(&top_cos) {
                let answered = cos >= t && slot.is_some();
                if answered {
                    answers += 1;
                    answered_in += usize::from(!case.faq_ids.is_empty());
                    right += usize::from(slot.is_some_and(|s| case.faq_ids.contains(&prep.ids[s])));
                } else if case.faq_ids.is_empty() {
                    oos_handoff += 1;
                }
            }
            CosinePoint {
                threshold: t,
                answer_rate: share(answered_in, in_scope),
                answer_precision: share(right, answers),
                in_scope_answer_precision: share(right, answered_in),
                oos_handoff_recall: share(oos_handoff, test.len() - in_scope),
            }
        })
        .collect();
    Ok(DeflectReport {
        adaptation: None,
        model: embedder.name().to_string(),
        verifier: if calibrated {
            format!("{} (calibrated on this bank)", verifier.fitted_on)
        } else {
            verifier.fitted_on.clone()
        },
        faq_entries: faq.len(),
        test_messages: test.len(),
        in_scope,
        out_of_scope: test.len() - in_scope,
        same_text_added: prep.same_text_added,
        answer_threshold: headline.answer_threshold,
        clarify_threshold: headline.clarify_threshold,
        answer_rate: headline.answer_rate,
        answer_precision: headline.answer_precision,
        in_scope_answer_precision: headline.in_scope_answer_precision,
        oos_handoff_recall: headline.oos_handoff_recall,
        clarify_rate: headline.clarify_rate,
        clarify_hit_rate: headline.clarify_hit_rate,
        retrieval_recall: share(retrieved, in_scope),
        at_thresholds: OTHER_ANSWER_THRESHOLDS
            .iter()
            .map(|&a| {
                point(
                    test,
                    &prep.ids,
                    &scored_all,
                    a,
                    defaults.deflect_clarify.min(a),
                )
            })
            .collect(),
        cosine_baseline,
        embed_seconds: prep.embed_seconds,
        score_ms_per_message: score_ms as f32,
    })
}

/// Outcomes of every message at one pair of thresholds.
fn point(
    test: &[DeflectCase],
    ids: &[String],
    scored: &[Vec<ScoredArticle>],
    answer_at: f32,
    clarify_at: f32,
) -> DeflectPoint {
    let (mut answered_in, mut answers, mut right, mut oos_handoff) =
        (0usize, 0usize, 0usize, 0usize);
    let (mut clarified_in, mut clarify_hits) = (0usize, 0usize);
    for (case, s) in test.iter().zip(scored) {
        let d = decide(s, answer_at, clarify_at);
        let is_right = |a: &ScoredArticle| case.faq_ids.contains(&ids[a.slot]);
        match d.action {
            DeflectAction::Answer => {
                answers += 1;
                answered_in += usize::from(!case.faq_ids.is_empty());
                right += usize::from(d.chosen.first().is_some_and(is_right));
            }
            DeflectAction::Clarify if !case.faq_ids.is_empty() => {
                clarified_in += 1;
                clarify_hits += usize::from(d.chosen.iter().any(is_right));
            }
            DeflectAction::Handoff if case.faq_ids.is_empty() => oos_handoff += 1,
            _ => {}
        }
    }
    let in_scope = test.iter().filter(|c| !c.faq_ids.is_empty()).count();
    DeflectPoint {
        answer_threshold: answer_at,
        clarify_threshold: clarify_at,
        answer_rate: share(answered_in, in_scope),
        answer_precision: share(right, answers),
        in_scope_answer_precision: share(right, answered_in),
        oos_handoff_recall: share(oos_handoff, test.len() - in_scope),
        clarify_rate: share(clarified_in, in_scope),
        clarify_hit_rate: share(clarify_hits, clarified_in),
    }
}

/// Writes one JSON line per message: action, top candidates, truth (for error analysis).
fn write_decisions(
    dir: &Path,
    test: &[DeflectCase],
    ids: &[String],
    scored: &[Vec<ScoredArticle>],
    th: &Thresholds,
) -> Result<()> {
    let path = dir.join("deflect_decisions.jsonl");
    let io = |source| Error::Io {
        path: path.clone(),
        source,
    };
    let mut w = std::io::BufWriter::new(std::fs::File::create(&path).map_err(io)?);
    for (case, s) in test.iter().zip(scored) {
        let d = decide(s, th.deflect_answer, th.deflect_clarify);
        let top: Vec<serde_json::Value> = s
            .iter()
            .take(3)
            .map(|a| {
                serde_json::json!({"id": ids[a.slot], "p": a.probability, "cos": a.best.cos, "lex": a.best.lex})
            })
            .collect();
        let line = serde_json::json!({"text": case.text, "faq_ids": case.faq_ids, "action": d.action, "top": top});
        writeln!(w, "{line}").map_err(io)?;
    }
    w.flush().map_err(io)
}

/// One message while fitting: its candidates, their features, the slots of the
/// right articles among them, and whether it is Latin-script.
type FitMessage = (Vec<Candidate>, Vec<Vec<f32>>, HashSet<usize>, bool);

/// What fitting the verifier saw.
#[derive(Debug, Clone, Serialize)]
pub struct FitReport {
    /// Messages used.
    pub messages: usize,
    /// Candidate rows fitted on.
    pub rows: usize,
    /// Rows that were right answers.
    pub positives: usize,
    /// In-scope messages with a right candidate retrieved.
    pub retrieval_recall: f32,
    /// Question pairs the key-unit table learned from.
    pub pairs: usize,
    /// Units in the key-unit table.
    pub key_units: usize,
}

/// One labelled question pair for learning key units: `{"a","b","same"}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct QuestionPair {
    /// One question.
    pub a: String,
    /// The other.
    pub b: String,
    /// Whether they ask the same thing.
    pub same: bool,
}

/// Folds of the key-unit table while fitting: a message's rows are computed with a
/// table learned without the pairs of its own fold, so the verifier learns how much
/// to trust the table on pairs it has not seen.
const KEY_UNIT_FOLDS: u64 = 5;

/// A stable fold for a text (FNV-1a).
fn fold_of(text: &str) -> usize {
    let h = text.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    (h % KEY_UNIT_FOLDS) as usize
}

/// Fits a verifier on deflection sets `(faq, messages)`: every retrieved candidate
/// of every message is a row labelled by whether its article is a right answer.
/// `pairs` (labelled question pairs, disjoint from any evaluation data) teach the
/// key-unit table; a message's fold is that of the pairs whose first question it is.
pub fn fit_verifier(
    sets: &[(&[FaqEntry], &[DeflectCase])],
    pairs: &[QuestionPair],
    embedder: Arc<dyn TextEmbedder>,
    l2: f32,
    fitted_on: &str,
) -> Result<(Verifier, FitReport)> {
    let pair_units: Vec<(usize, Units, Units, bool)> = pairs
        .iter()
        .map(|p| (fold_of(&p.a), Units::new(&p.a), Units::new(&p.b), p.same))
        .collect();
    let table = |skip: Option<usize>| {
        KeyUnits::fit(
            pair_units
                .iter()
                .filter(|p| Some(p.0) != skip)
                .map(|(_, a, b, same)| (a, b, *same)),
        )
    };
    let deflectors: Vec<Deflector> = (0..KEY_UNIT_FOLDS as usize)
        .map(|k| Deflector::new(Verifier::unfitted(table(Some(k)))))
        .collect();
    let dim = embedder.dim();
    // Per message: its candidates, their features and the right articles' slots.
    let mut groups: Vec<FitMessage> = Vec::new();
    let (mut in_scope, mut retrieved) = (0usize, 0usize);
    for (faq, test) in sets {
        let prep = prepare(faq, test, embedder.as_ref())?;
        for (case, q) in prep.cases.iter().zip(prep.qvecs.chunks_exact(dim)) {
            let right: HashSet<&str> = case.faq_ids.iter().map(String::as_str).collect();
            let deflector = &deflectors[fold_of(&case.text)];
            let (units, cands, feats) = deflector.candidates(&prep.bank, &case.text, q, "")?;
            let right_slots: HashSet<usize> = cands
                .iter()
                .filter(|c| right.contains(prep.ids[c.slot].as_str()))
                .map(|c| c.slot)
                .collect();
            in_scope += usize::from(!right.is_empty());
            retrieved += usize::from(!right_slots.is_empty());
            groups.push((cands, feats, right_slots, is_latin(&units)));
        }
    }
    let rows: Vec<(Vec<f32>, bool)> = groups
        .iter()
        .flat_map(|(cands, feats, right, _)| {
            cands
                .iter()
                .zip(feats)
                .map(|(c, f)| (f.clone(), right.contains(&c.slot)))
        })
        .collect();
    let message_rows = |v: &Verifier| -> Vec<(Vec<f32>, bool)> {
        groups
            .iter()
            .filter_map(|(cands, feats, right, latin)| {
                let top = rank(v, None, cands, feats, *latin).into_iter().next()?;
                Some((
                    answer_features(top.logit, top.gap, *latin, &feats[top.index]),
                    right.contains(&top.best.slot),
                ))
            })
            .collect()
    };
    let verifier = Verifier::fit(&rows, message_rows, l2, fitted_on, table(None))?;
    let messages = groups.len();
    let report = FitReport {
        pairs: pairs.len(),
        key_units: verifier.key_units.len(),
        messages,
        rows: rows.len(),
        positives: rows.iter().filter(|r| r.1).count(),
        retrieval_recall: if in_scope == 0 {
            0.0
        } else {
            retrieved as f32 / in_scope as f32
        },
    };
    Ok((verifier, report))
}
