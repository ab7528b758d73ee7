//! Whether a desk's adapted encoder is used at all: an adapter is trained on
//! most of the labelled texts and judged on a held-out fold against the
//! shipped encoder, with the classifier the service runs.
//!
//! The texts of task 0 (the labels the classifier learns; other tasks, such
//! as "phrasings of one article", only help the training) are split into
//! stratified folds; one fold is held out. The adapter trains on the rest.
//! Then the calibrated classifier ([`Classifier`]) is trained twice on the
//! same rest, once on the shipped vectors and once on the adapted ones, and
//! both predict the held-out fold: the adapter is accepted only when it
//! decides *more* held-out texts right. The accepted adapter is the one the
//! fold judged (it never saw the fold), so the check measures what ships.

use std::time::Instant;

use models::{AdaptExample, AdaptOptions, AdaptReport, Adapter, Embedder, TrainingSet};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::model::classify::{argmax, stratified_folds, Classifier, ClassifierOptions};
use crate::model::knn::VectorSet;

/// How an adaptation is trained and judged.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AdaptSettings {
    /// The adapter's training.
    pub options: AdaptOptions,
    /// Stratified folds the labelled texts are dealt into; one is held out.
    pub folds: usize,
    /// Seed of the fold assignment.
    pub seed: u64,
}

impl Default for AdaptSettings {
    fn default() -> Self {
        AdaptSettings {
            options: AdaptOptions::default(),
            folds: 5,
            seed: 23,
        }
    }
}

/// The held-out fold's verdict.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FoldCheck {
    /// Texts trained on (task 0 and the other tasks).
    pub trained_on: usize,
    /// Held-out texts judged.
    pub held_out: usize,
    /// Held-out accuracy of the classifier on the shipped encoder's vectors.
    pub frozen_accuracy: f32,
    /// The same on the adapted encoder's vectors.
    pub adapted_accuracy: f32,
    /// Whether the adapted encoder is used.
    pub accepted: bool,
}

/// A trained adapter with its verdict and costs.
pub struct Adaptation {
    /// The adapter (used only when `fold.accepted`).
    pub adapter: Adapter,
    /// What it measured.
    pub summary: AdaptationSummary,
}

/// What an adaptation measured (kept in reports and beside the adapter).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AdaptationSummary {
    /// The held-out fold's verdict.
    pub fold: FoldCheck,
    /// The adapter's training.
    pub training: AdaptReport,
    /// Seconds the shipped lower layers took over every text.
    pub prepare_seconds: f32,
    /// Seconds of the fold check (two classifier trainings and the vectors).
    pub fold_seconds: f32,
    /// Seconds in all.
    pub seconds: f32,
    /// Megabytes the kept lower-layer states took.
    pub states_mb: f32,
    /// Texts cut to the training window.
    pub truncated: usize,
    /// Peak resident memory of the process so far, in megabytes (Linux).
    pub peak_rss_mb: Option<f32>,
    /// The training settings.
    pub settings: AdaptSettings,
}

/// Peak resident memory of this process (`VmHWM`), in megabytes.
pub fn peak_rss_mb() -> Option<f32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f32 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// Trains an adapter of `embedder` on `examples` (already run through the
/// lower layers as `set`, in the same order) and judges it on a held-out
/// fold of the task-0 texts marked in `judged` (a desk's own tickets; texts
/// that only teach, such as a pack's shared phrasings, are never held out).
pub fn adapt(
    embedder: &Embedder,
    set: &TrainingSet,
    examples: &[AdaptExample],
    judged: &[bool],
    settings: &AdaptSettings,
) -> Result<Adaptation> {
    let t0 = Instant::now();
    if set.len() != examples.len() || judged.len() != examples.len() {
        return Err(Error::InvalidInput(
            "the prepared set, the examples and their marks differ".into(),
        ));
    }
    let labelled: Vec<usize> = (0..examples.len())
        .filter(|&i| examples[i].task == 0 && judged[i])
        .collect();
    let groups: Vec<usize> = labelled.iter().map(|&i| examples[i].group).collect();
    let distinct: std::collections::BTreeSet<usize> = groups.iter().copied().collect();
    if distinct.len() < 2 || labelled.len() < 2 * settings.folds.max(2) {
        return Err(Error::InvalidInput(format!(
            "adaptation needs labelled texts of two groups at least ({} texts, {} groups)",
            labelled.len(),
            distinct.len()
        )));
    }
    let fold = stratified_folds(&groups, settings.folds.max(2), settings.seed);
    let held: Vec<usize> = labelled
        .iter()
        .zip(&fold)
        .filter(|(_, f)| **f == 0)
        .map(|(&i, _)| i)
        .collect();
    let held_set: std::collections::HashSet<usize> = held.iter().copied().collect();
    let train: Vec<usize> = (0..examples.len())
        .filter(|i| !held_set.contains(i))
        .collect();
    let (adapter, training) = set.train(embedder, &train, &settings.options)?;

    let t1 = Instant::now();
    let adapted = embedder.adapted(&adapter)?;
    let fit: Vec<usize> = train
        .iter()
        .copied()
        .filter(|&i| examples[i].task == 0)
        .collect();
    let label = |i: &usize| examples[*i].group.to_string();
    let fit_labels: Vec<String> = fit.iter().map(label).collect();
    let held_labels: Vec<String> = held.iter().map(label).collect();
    let accuracy = |encoder: &Embedder| -> Result<f32> {
        let xtr: Vec<f32> = set.vectors(encoder, &fit)?.concat();
        let xte: Vec<f32> = set.vectors(encoder, &held)?.concat();
        held_accuracy(&xtr, &fit_labels, &xte, &held_labels, encoder_dim(encoder))
    };
    let frozen_accuracy = accuracy(embedder)?;
    let adapted_accuracy = accuracy(&adapted)?;
    let fold = FoldCheck {
        trained_on: train.len(),
        held_out: held.len(),
        frozen_accuracy,
        adapted_accuracy,
        accepted: adapted_accuracy > frozen_accuracy,
    };
    tracing::info!(
        frozen = frozen_accuracy,
        adapted = adapted_accuracy,
        accepted = fold.accepted,
        held_out = held.len(),
        "adapted encoder judged on the held-out fold"
    );
    let summary = AdaptationSummary {
        fold,
        training,
        prepare_seconds: set.prepare_seconds(),
        fold_seconds: t1.elapsed().as_secs_f32(),
        seconds: set.prepare_seconds() + t0.elapsed().as_secs_f32(),
        states_mb: set.state_bytes() as f32 / 1e6,
        truncated: set.truncated(),
        peak_rss_mb: peak_rss_mb(),
        settings: settings.clone(),
    };
    Ok(Adaptation { adapter, summary })
}

fn encoder_dim(e: &Embedder) -> usize {
    models::TextEmbedder::dim(e)
}

/// Accuracy on `(xte, yte)` of the service's classifier trained on `(xtr, ytr)`.
pub fn held_accuracy(
    xtr: &[f32],
    ytr: &[String],
    xte: &[f32],
    yte: &[String],
    dim: usize,
) -> Result<f32> {
    let clf = Classifier::train(xtr, dim, ytr, &ClassifierOptions::for_size(ytr.len()))?;
    let classes: Vec<usize> = ytr
        .iter()
        .map(|l| clf.class_of(l).unwrap_or(usize::MAX))
        .collect();
    let mut memory = VectorSet::new(dim);
    for row in xtr.chunks_exact(dim) {
        memory.push(row)?;
    }
    let neigh: Vec<Vec<(usize, f32)>> = memory
        .top_k_batch(xte, clf.k())?
        .into_iter()
        .map(|nb| nb.into_iter().map(|(i, s)| (classes[i], s)).collect())
        .collect();
    let preds = clf.predict_batch(xte, &neigh)?;
    let right = preds
        .iter()
        .zip(yte)
        .filter(|(p, y)| clf.labels()[argmax(&p.probs)] == **y)
        .count();
    Ok(right as f32 / yte.len().max(1) as f32)
}
