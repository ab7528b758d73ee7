//! `eval classify`: train on one labelled set, predict another, report.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Instant;

use models::{EmbedKind, TextEmbedder};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::model::adaptation::{adapt as adapt_encoder, AdaptSettings, AdaptationSummary};
use crate::model::calibrate::expected_calibration_error;
use crate::model::classify::{argmax, Classifier, ClassifierOptions, TrainSummary};
use crate::model::domain::factor as domain_factor;
use crate::model::knn::VectorSet;
use models::{AdaptExample, TrainingSet};

/// Confidence thresholds of the accuracy-vs-coverage table.
const TABLE_THRESHOLDS: [f32; 10] = [0.0, 0.3, 0.4, 0.5, 0.55, 0.6, 0.7, 0.8, 0.9, 0.95];

/// One row of the accuracy-vs-coverage table.
#[derive(Debug, Clone, Serialize)]
pub struct CoveragePoint {
    /// Confidence threshold.
    pub threshold: f32,
    /// Share of test messages decided (confidence ≥ threshold, not predicted out of scope).
    pub coverage: f32,
    /// Accuracy among the decided ones.
    pub accuracy: f32,
}

/// Guard strengths (in-domain quantiles) reported in `oos_guard_table`; 0 = no guard.
const OOS_GUARD_QUANTILES: [f32; 6] = [0.0, 0.01, 0.02, 0.05, 0.1, 0.2];

/// Out-of-scope outcomes at one strength of the similarity guard.
#[derive(Debug, Clone, Serialize)]
pub struct OosPoint {
    /// In-domain quantile of the guard (see `ClassifierOptions::in_domain_quantile`).
    pub guard_quantile: f32,
    /// In-scope messages given their right label.
    pub in_scope_accuracy: f32,
    /// Out-of-scope messages refused.
    pub oos_recall: f32,
    /// Refusals that were out of scope.
    pub oos_precision: f32,
    /// Area under the ROC curve of low confidence as an out-of-scope detector.
    pub auroc: f32,
}

/// What `eval classify` prints (one JSON object).
#[derive(Debug, Clone, Serialize)]
pub struct ClassifyReport {
    /// Embedding model.
    pub model: String,
    /// Training examples.
    pub train_examples: usize,
    /// Test examples.
    pub test_examples: usize,
    /// Labels seen in training.
    pub classes: usize,
    /// Accuracy of the final decisions (with an out-of-scope label, abstaining = predicting it).
    pub accuracy: f32,
    /// Macro-averaged F1 over the labels of the final decisions.
    pub macro_f1: f32,
    /// In-scope test messages given their right label (abstentions count as wrong).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub in_scope_accuracy: Option<f32>,
    /// Out-of-scope test messages refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oos_recall: Option<f32>,
    /// Refusals that were out of scope.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oos_precision: Option<f32>,
    /// How well low confidence separates out-of-scope messages (area under the ROC curve).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oos_auroc: Option<f32>,
    /// The out-of-scope numbers at other strengths of the similarity guard.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub oos_guard_table: Vec<OosPoint>,
    /// The abstention threshold used.
    pub threshold: f32,
    /// Share of test messages decided at the threshold.
    pub coverage: f32,
    /// Accuracy among those.
    pub accuracy_at_threshold: f32,
    /// Expected calibration error of the top-label confidence on in-scope messages.
    pub ece: f32,
    /// Accuracy of the linear head alone (no abstention; in-scope messages).
    pub linear_only_accuracy: f32,
    /// Accuracy of the kNN vote alone (no abstention; in-scope messages).
    pub knn_only_accuracy: f32,
    /// Accuracy of the calibrated combination (no abstention; in-scope messages).
    pub combined_accuracy: f32,
    /// Accuracy vs coverage at several thresholds.
    pub coverage_table: Vec<CoveragePoint>,
    /// What training chose and measured on its held-out folds.
    pub training: TrainSummary,
    /// Seconds spent embedding train + test texts.
    pub embed_seconds: f32,
    /// Seconds spent training (folds, calibration, final fit).
    pub train_seconds: f32,
    /// The encoder adaptation (`--adapt`): its fold verdict, time and memory.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub adaptation: Option<AdaptationSummary>,
}

/// Embeds `texts` as queries in chunks, logging progress.
pub(crate) fn embed_all(
    embedder: &dyn TextEmbedder,
    texts: &[&str],
    kind: EmbedKind,
) -> Result<Vec<f32>> {
    let mut out = Vec::with_capacity(texts.len() * embedder.dim());
    for (i, chunk) in texts.chunks(256).enumerate() {
        for v in embedder.embed(chunk, kind)? {
            if v.len() != embedder.dim() {
                return Err(Error::Numeric(format!(
                    "embedder returned {} dimensions, declared {}",
                    v.len(),
                    embedder.dim()
                )));
            }
            out.extend(v);
        }
        if i % 8 == 7 {
            tracing::info!(
                done = ((i + 1) * 256).min(texts.len()),
                total = texts.len(),
                "embedding"
            );
        }
    }
    Ok(out)
}

/// Trains on `train` (`(text, label)`), predicts `test`, and reports.
///
/// With `oos_label`, test messages with that label are out of scope: a
/// prediction below `threshold` (or of that label, if training had examples
/// of it) counts as refusing them.
pub fn classify(
    train: &[(String, String)],
    test: &[(String, String)],
    oos_label: Option<&str>,
    threshold: f32,
    embedder: Arc<dyn TextEmbedder>,
) -> Result<ClassifyReport> {
    classify_as(
        train,
        test,
        oos_label,
        threshold,
        embedder,
        EmbedKind::Query,
    )
}

/// [`classify`] with texts embedded as `kind` (the engine classifies tickets as passages).
pub fn classify_as(
    train: &[(String, String)],
    test: &[(String, String)],
    oos_label: Option<&str>,
    threshold: f32,
    embedder: Arc<dyn TextEmbedder>,
    kind: EmbedKind,
) -> Result<ClassifyReport> {
    classify_with(train, test, oos_label, threshold, embedder, kind, None)
}

/// The training and test vectors, through an adapted encoder when `adapt`
/// is given and its held-out fold accepts it (see [`adaptation`](crate::model::adaptation)).
fn vectors(
    train: &[(String, String)],
    test: &[(String, String)],
    embedder: &dyn TextEmbedder,
    kind: EmbedKind,
    adapt: Option<&AdaptSettings>,
) -> Result<(Vec<f32>, Vec<f32>, Option<AdaptationSummary>)> {
    let train_texts: Vec<&str> = train.iter().map(|(t, _)| t.as_str()).collect();
    let test_texts: Vec<&str> = test.iter().map(|(t, _)| t.as_str()).collect();
    let Some(settings) = adapt else {
        let xtr = embed_all(embedder, &train_texts, kind)?;
        return Ok((xtr, embed_all(embedder, &test_texts, kind)?, None));
    };
    let encoder = embedder.encoder().ok_or_else(|| {
        Error::InvalidInput("adaptation needs the built-in encoder (not a test embedder)".into())
    })?;
    let mut groups: BTreeMap<&str, usize> = BTreeMap::new();
    for (_, l) in train {
        let n = groups.len();
        groups.entry(l.as_str()).or_insert(n);
    }
    let examples: Vec<AdaptExample> = train
        .iter()
        .map(|(t, l)| AdaptExample {
            text: t.clone(),
            kind,
            task: 0,
            group: groups[l.as_str()],
        })
        .collect();
    let opts = &settings.options;
    let set = TrainingSet::prepare(
        encoder,
        &examples,
        opts.layers,
        opts.max_tokens,
        opts.threads,
    )?;
    let a = adapt_encoder(
        encoder,
        &set,
        &examples,
        &vec![true; examples.len()],
        settings,
    )?;
    let summary = a.summary;
    if !summary.fold.accepted {
        let xtr = embed_all(embedder, &train_texts, kind)?;
        return Ok((xtr, embed_all(embedder, &test_texts, kind)?, Some(summary)));
    }
    let adapted = encoder.adapted(&a.adapter)?;
    // The kept states give the training texts' vectors through the adapted
    // top layers; texts longer than the training window are embedded whole.
    let xtr = if set.truncated() == 0 {
        let all: Vec<usize> = (0..train.len()).collect();
        set.vectors(&adapted, &all)?.concat()
    } else {
        embed_all(&adapted, &train_texts, kind)?
    };
    Ok((xtr, embed_all(&adapted, &test_texts, kind)?, Some(summary)))
}

/// [`classify_as`], optionally adapting the encoder to the training set
/// first (`triage eval classify --adapt`): the adapted encoder embeds both
/// sets when its held-out fold accepts it, the shipped one otherwise.
pub fn classify_with(
    train: &[(String, String)],
    test: &[(String, String)],
    oos_label: Option<&str>,
    threshold: f32,
    embedder: Arc<dyn TextEmbedder>,
    kind: EmbedKind,
    adapt: Option<&AdaptSettings>,
) -> Result<ClassifyReport> {
    if train.is_empty() || test.is_empty() {
        return Err(Error::InvalidInput(
            "classification needs non-empty train and test sets".into(),
        ));
    }
    if !(0.0..=1.0).contains(&threshold) {
        return Err(Error::InvalidInput(format!(
            "threshold {threshold} is outside 0..=1"
        )));
    }
    let dim = embedder.dim();
    let t0 = Instant::now();
    let (xtr, xte, adaptation) = vectors(train, test, embedder.as_ref(), kind, adapt)?;
    let embed_seconds = t0.elapsed().as_secs_f32();

    let t1 = Instant::now();
    let labels: Vec<String> = train.iter().map(|(_, l)| l.clone()).collect();
    let clf = Classifier::train(
        &xtr,
        dim,
        &labels,
        &ClassifierOptions::for_size(train.len()),
    )?;
    let train_seconds = t1.elapsed().as_secs_f32();

    let ytr: Vec<usize> = labels
        .iter()
        .map(|l| clf.class_of(l).unwrap_or(usize::MAX))
        .collect();
    let mut memory = VectorSet::new(dim);
    for row in xtr.chunks_exact(dim) {
        memory.push(row)?;
    }
    let neigh: Vec<Vec<(usize, f32)>> = memory
        .top_k_batch(&xte, clf.k())?
        .into_iter()
        .map(|nb| nb.into_iter().map(|(i, s)| (ytr[i], s)).collect())
        .collect();
    let predictions = clf.predict_batch(&xte, &neigh)?;
    let linear = clf.linear_only(&xte)?;

    let names = clf.labels();
    let is_oos = |label: &str| oos_label == Some(label);
    // Per test message: predicted class, raw calibrated confidence, in-domain score.
    let preds: Vec<(usize, f32, f32)> = predictions
        .iter()
        .map(|p| {
            let top = argmax(&p.probs);
            (top, p.probs[top], p.in_domain)
        })
        .collect();
    let quantile = ClassifierOptions::default().in_domain_quantile;
    let confidence = |i: usize, q: f32| preds[i].1 * domain_factor(preds[i].2, q);
    let finals_at = |q: f32| -> Vec<String> {
        preds
            .iter()
            .enumerate()
            .map(|(i, (top, _, _))| {
                let label = &names[*top];
                match oos_label {
                    Some(o) if confidence(i, q) < threshold || is_oos(label) => o.to_string(),
                    _ => label.clone(),
                }
            })
            .collect()
    };
    let finals = finals_at(quantile);
    let (mut lin_ok, mut knn_ok, mut comb_ok, mut in_scope) = (0usize, 0usize, 0usize, 0usize);
    let mut conf_correct = Vec::new();
    for (i, (_, truth)) in test.iter().enumerate() {
        if is_oos(truth) {
            continue;
        }
        let label = &names[preds[i].0];
        in_scope += 1;
        conf_correct.push((confidence(i, quantile), label == truth));
        lin_ok += usize::from(names[argmax(&linear[i])] == *truth);
        knn_ok += usize::from(names[argmax(&clf.knn_vote(&neigh[i]))] == *truth);
        comb_ok += usize::from(label == truth);
    }
    let n = test.len() as f32;
    let accuracy = finals
        .iter()
        .zip(test)
        .filter(|(p, (_, t))| *p == t)
        .count() as f32
        / n;
    let oos_at =
        |q: f32| oos_label.map(|o| oos_metrics(test, &finals_at(q), o, q, |i| confidence(i, q)));
    let headline = oos_at(quantile);
    let point = |th: f32| {
        let covered: Vec<usize> = (0..test.len())
            .filter(|&i| confidence(i, quantile) >= th && !is_oos(&names[preds[i].0]))
            .collect();
        CoveragePoint {
            threshold: th,
            coverage: share(covered.len(), test.len()),
            accuracy: share(
                covered
                    .iter()
                    .filter(|&&i| names[preds[i].0] == test[i].1)
                    .count(),
                covered.len(),
            ),
        }
    };
    let at = point(threshold);
    Ok(ClassifyReport {
        model: embedder.name().to_string(),
        train_examples: train.len(),
        test_examples: test.len(),
        classes: names.len(),
        accuracy,
        macro_f1: macro_f1(
            test.iter().map(|(_, t)| t.as_str()),
            finals.iter().map(String::as_str),
        ),
        in_scope_accuracy: headline.as_ref().map(|h| h.in_scope_accuracy),
        oos_recall: headline.as_ref().map(|h| h.oos_recall),
        oos_precision: headline.as_ref().map(|h| h.oos_precision),
        oos_auroc: headline.as_ref().map(|h| h.auroc),
        oos_guard_table: oos_label
            .map(|_| {
                OOS_GUARD_QUANTILES
                    .iter()
                    .filter_map(|&q| oos_at(q))
                    .collect()
            })
            .unwrap_or_default(),
        threshold,
        coverage: at.coverage,
        accuracy_at_threshold: at.accuracy,
        ece: expected_calibration_error(&conf_correct, 10),
        linear_only_accuracy: share(lin_ok, in_scope),
        knn_only_accuracy: share(knn_ok, in_scope),
        combined_accuracy: share(comb_ok, in_scope),
        coverage_table: TABLE_THRESHOLDS.iter().map(|&t| point(t)).collect(),
        training: clf.summary().clone(),
        embed_seconds,
        train_seconds,
        adaptation,
    })
}

/// `num / den`, 0 when `den` is 0 (every evaluation's rates).
pub(super) fn share(num: usize, den: usize) -> f32 {
    if den == 0 {
        0.0
    } else {
        num as f32 / den as f32
    }
}

/// Out-of-scope outcomes of final decisions (`finals`, with `oos` meaning refused).
fn oos_metrics(
    test: &[(String, String)],
    finals: &[String],
    oos: &str,
    quantile: f32,
    confidence: impl Fn(usize) -> f32,
) -> OosPoint {
    let in_scope = test.iter().filter(|(_, t)| t != oos).count();
    let ok_in = finals
        .iter()
        .zip(test)
        .filter(|(p, (_, t))| t != oos && *p == t)
        .count();
    let oos_total = test.len() - in_scope;
    let refused = finals.iter().filter(|p| *p == oos).count();
    let refused_right = finals
        .iter()
        .zip(test)
        .filter(|(p, (_, t))| *p == oos && t == oos)
        .count();
    // AUROC of "low confidence" as an out-of-scope detector (ties count half).
    let mut scored: Vec<(f32, bool)> = test
        .iter()
        .enumerate()
        .map(|(i, (_, t))| (confidence(i), t == oos))
        .collect();
    scored.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (mut rank_sum, mut i) = (0f64, 0usize);
    while i < scored.len() {
        let mut j = i;
        while j < scored.len() && scored[j].0 == scored[i].0 {
            j += 1;
        }
        // Ascending confidence: out-of-scope messages should come first (high rank = in scope).
        let avg_rank = (i + j + 1) as f64 / 2.0;
        rank_sum += avg_rank * scored[i..j].iter().filter(|s| !s.1).count() as f64;
        i = j;
    }
    let (pos, neg) = (in_scope as f64, oos_total as f64);
    let auroc = if pos == 0.0 || neg == 0.0 {
        0.0
    } else {
        ((rank_sum - pos * (pos + 1.0) / 2.0) / (pos * neg)) as f32
    };
    OosPoint {
        guard_quantile: quantile,
        in_scope_accuracy: share(ok_in, in_scope),
        oos_recall: share(refused_right, oos_total),
        oos_precision: share(refused_right, refused),
        auroc,
    }
}

/// Macro-averaged F1 over every label that occurs as truth or prediction.
pub fn macro_f1<'a>(
    truth: impl Iterator<Item = &'a str>,
    predicted: impl Iterator<Item = &'a str>,
) -> f32 {
    let mut tp: BTreeMap<&str, usize> = BTreeMap::new();
    let mut fp: BTreeMap<&str, usize> = BTreeMap::new();
    let mut fn_: BTreeMap<&str, usize> = BTreeMap::new();
    let mut labels = BTreeSet::new();
    for (t, p) in truth.zip(predicted) {
        labels.insert(t);
        labels.insert(p);
        if t == p {
            *tp.entry(t).or_default() += 1;
        } else {
            *fp.entry(p).or_default() += 1;
            *fn_.entry(t).or_default() += 1;
        }
    }
    if labels.is_empty() {
        return 0.0;
    }
    let f1s: f32 = labels
        .iter()
        .map(|l| {
            let tp = *tp.get(l).unwrap_or(&0) as f32;
            let denom =
                2.0 * tp + *fp.get(l).unwrap_or(&0) as f32 + *fn_.get(l).unwrap_or(&0) as f32;
            if denom == 0.0 {
                0.0
            } else {
                2.0 * tp / denom
            }
        })
        .sum();
    f1s / labels.len() as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macro_f1_matches_a_hand_computed_case() {
        // a: tp 1, fn 1 → F1 2/3; b: tp 1, fp 1 → F1 2/3; mean 2/3.
        let f = macro_f1(["a", "a", "b"].into_iter(), ["a", "b", "b"].into_iter());
        assert!((f - 2.0 / 3.0).abs() < 1e-6, "{f}");
        assert_eq!(macro_f1(["a"].into_iter(), ["a"].into_iter()), 1.0);
    }
}
