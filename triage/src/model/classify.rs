//! A calibrated classifier over embeddings: linear softmax head + kNN vote.
//!
//! Training picks the L2 strength on held-out folds, fits the combined
//! score's weights (see [`crate::model::calibrate`]) on the held-out predictions, and
//! retrains the head on everything. The kNN memory is not owned here: callers
//! pass the neighbours they found (the engine's live example store sees
//! corrections at once; the evaluation uses the training set).

use std::collections::BTreeMap;

use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::model::calibrate::{Calibration, HeldOut};
use crate::model::domain::{signals, DomainGuard};
use crate::model::knn::{vote, VectorSet};
use crate::model::logreg::{LogReg, TrainOptions};

/// Settings for [`Classifier::train`].
#[derive(Debug, Clone)]
pub struct ClassifierOptions {
    /// L2 strengths tried for the linear head (the best held-out NLL wins).
    pub l2_grid: Vec<f32>,
    /// Neighbours that vote.
    pub k: usize,
    /// Softness candidates of the kNN vote (in cosine units); the best held-out NLL wins.
    pub knn_temperatures: Vec<f32>,
    /// Number of stratified folds the data is split into.
    pub folds: usize,
    /// How many of those folds are held out in turn (1 = a single 1/folds hold-out).
    pub folds_used: usize,
    /// Seed of the fold assignment.
    pub seed: u64,
    /// L-BFGS iteration cap.
    pub max_iter: usize,
    /// Messages whose nearest labelled example is less similar than this share of
    /// held-out in-domain messages get their probabilities scaled down (out-of-scope guard).
    pub in_domain_quantile: f32,
    /// A label whose examples are *not* in the domain (e.g. a pack's out-of-scope
    /// requests): learned like any class, but left out when fitting the guard.
    pub out_of_scope_label: Option<String>,
}

impl Default for ClassifierOptions {
    fn default() -> Self {
        ClassifierOptions {
            l2_grid: vec![1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0],
            k: 10,
            knn_temperatures: vec![0.02, 0.05, 0.1],
            folds: 5,
            folds_used: 5,
            seed: 17,
            max_iter: 300,
            in_domain_quantile: 0.05,
            out_of_scope_label: None,
        }
    }
}

impl ClassifierOptions {
    /// Options scaled to the data size: all five folds for small sets, one hold-out fold
    /// for large ones (training time stays in seconds).
    pub fn for_size(n: usize) -> ClassifierOptions {
        ClassifierOptions {
            folds_used: if n <= 3000 { 5 } else { 1 },
            ..ClassifierOptions::default()
        }
    }
}

/// At least this many rows of each label survive [`sample_rows`] (all of a
/// label's rows when it has fewer), so a rare class is never sampled away.
const SAMPLE_FLOOR: usize = 20;

/// A fixed, stratified sample of about `max` of the rows with `labels`: the
/// rows `keep` marks (agents' corrections) always; of the others, each
/// label's rows with the smallest `order` (a stable hash of the row), in
/// proportion to the label's share, at least [`SAMPLE_FLOOR`] per label.
/// Returns row indices in ascending order; all rows when there are at most
/// `max`. The same rows give the same sample, so a restart trains (and
/// finds in its cache) the same head.
pub fn sample_rows(labels: &[String], keep: &[bool], order: &[u64], max: usize) -> Vec<usize> {
    let n = labels.len();
    if n <= max {
        return (0..n).collect();
    }
    let mut picked: Vec<usize> = (0..n)
        .filter(|&i| keep.get(i).copied().unwrap_or(false))
        .collect();
    let budget = max.saturating_sub(picked.len());
    let mut by_label: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for i in (0..n).filter(|&i| !keep.get(i).copied().unwrap_or(false)) {
        by_label.entry(labels[i].as_str()).or_default().push(i);
    }
    let rest = n - picked.len();
    for rows in by_label.values_mut() {
        rows.sort_by_key(|&i| (order.get(i).copied().unwrap_or(0), i));
        let share = (budget as f64 * rows.len() as f64 / rest.max(1) as f64).ceil() as usize;
        picked.extend(rows.iter().take(share.max(SAMPLE_FLOOR)));
    }
    picked.sort_unstable();
    picked
}

/// What training measured on its held-out folds (so the choices are visible).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TrainSummary {
    /// Training examples.
    pub examples: usize,
    /// Distinct labels.
    pub classes: usize,
    /// Chosen L2 strength.
    pub l2: f32,
    /// Chosen softness of the kNN vote.
    pub knn_temperature: f32,
    /// Held-out accuracy of the linear head alone.
    pub heldout_linear_accuracy: f32,
    /// Held-out accuracy of the kNN vote alone.
    pub heldout_knn_accuracy: f32,
    /// Held-out accuracy of the calibrated combination.
    pub heldout_combined_accuracy: f32,
    /// Fitted weight of the linear logits (inverse temperature).
    pub weight_linear: f32,
    /// Fitted weight of the log kNN vote.
    pub weight_knn: f32,
    /// Held-out examples the calibration was fitted on.
    pub heldout_examples: usize,
}

/// One message's classification.
#[derive(Debug, Clone, PartialEq)]
pub struct Prediction {
    /// Calibrated probability of each class (sums to one).
    pub probs: Vec<f32>,
    /// Share of held-out in-domain messages that looked less in-domain than this one.
    pub in_domain: f32,
    /// Factor (0..=1) to multiply probabilities by before thresholding: below 1
    /// when the message is unlike the training data (likely out of scope).
    pub guard: f32,
}

/// A trained, calibrated classifier (serialisable, so trained heads can be
/// kept across restarts).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Classifier {
    labels: Vec<String>,
    head: LogReg,
    calibration: Calibration,
    k: usize,
    knn_temperature: f32,
    guard: DomainGuard,
    summary: TrainSummary,
}

impl Classifier {
    /// Trains on row-major vectors `x` (`n × dim`) with one label per row.
    pub fn train(
        x: &[f32],
        dim: usize,
        labels: &[String],
        opts: &ClassifierOptions,
    ) -> Result<Classifier> {
        let n = labels.len();
        if n == 0 || x.len() != n * dim {
            return Err(Error::InvalidInput(format!(
                "training needs one {dim}-d vector per label: {} values for {n} labels",
                x.len()
            )));
        }
        let names: Vec<String> = labels
            .iter()
            .cloned()
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let index: BTreeMap<&str, usize> = names
            .iter()
            .enumerate()
            .map(|(i, s)| (s.as_str(), i))
            .collect();
        let y: Vec<usize> = labels.iter().map(|l| index[l.as_str()]).collect();
        let classes = names.len();
        let k = opts.k.max(1);
        let train_opts = |l2| TrainOptions {
            l2,
            max_iter: opts.max_iter,
            ..TrainOptions::default()
        };

        // Held-out predictions for each L2 candidate.
        let folds = stratified_folds(&y, opts.folds.max(2), opts.seed);
        let used = opts.folds_used.clamp(1, opts.folds.max(2));
        let grid = if opts.l2_grid.is_empty() {
            vec![TrainOptions::default().l2]
        } else {
            opts.l2_grid.clone()
        };
        // Per held-out row: logits for each L2 candidate, neighbours as (class, similarity), label.
        let mut logits_by_l2: Vec<Vec<Vec<f32>>> = vec![Vec::new(); grid.len()];
        let mut neighbours: Vec<Vec<(usize, f32)>> = Vec::new();
        let mut truth: Vec<usize> = Vec::new();
        if classes > 1 {
            for f in 0..used {
                let (tr, te): (Vec<usize>, Vec<usize>) = (0..n).partition(|&i| folds[i] != f);
                if te.is_empty() || tr.is_empty() {
                    continue;
                }
                let xtr = gather(x, dim, &tr);
                let xte = gather(x, dim, &te);
                let ytr: Vec<usize> = tr.iter().map(|&i| y[i]).collect();
                let mut memory = VectorSet::new(dim);
                for i in &tr {
                    memory.push(&x[i * dim..(i + 1) * dim])?;
                }
                for nb in memory.top_k_batch(&xte, k)? {
                    neighbours.push(nb.into_iter().map(|(j, s)| (ytr[j], s)).collect());
                }
                truth.extend(te.iter().map(|&i| y[i]));
                let heads = LogReg::train_path(&xtr, dim, &ytr, classes, &grid, train_opts(0.0))?;
                for (g, head) in heads.iter().enumerate() {
                    logits_by_l2[g].extend(head.logits_batch(&xte)?);
                }
            }
        }
        let rows_for = |g: usize, temperature: f32| -> Vec<HeldOut> {
            logits_by_l2[g]
                .iter()
                .zip(&neighbours)
                .zip(&truth)
                .map(|((z, nb), &label)| HeldOut {
                    logits: z.clone(),
                    knn: vote(nb, |c| c, classes, temperature),
                    label,
                })
                .collect()
        };
        let mut summary = TrainSummary {
            examples: n,
            classes,
            l2: grid[0],
            knn_temperature: opts.knn_temperatures.first().copied().unwrap_or(0.05),
            ..TrainSummary::default()
        };
        let mut calibration = Calibration::default();
        if !truth.is_empty() {
            // L2 by the temperature-scaled NLL of the linear head alone.
            let t0 = summary.knn_temperature;
            let best_l2 = (0..grid.len())
                .map(|g| {
                    let rows = rows_for(g, t0);
                    let cal = Calibration::fit(&rows, false);
                    (g, crate::model::calibrate::nll(&rows, cal))
                })
                .min_by(|a, b| a.1.total_cmp(&b.1))
                .map(|(g, _)| g)
                .unwrap_or(0);
            // Then the vote temperature and the stacking weights, jointly by NLL.
            let (temperature, cal, rows) = opts
                .knn_temperatures
                .iter()
                .map(|&t| {
                    let rows = rows_for(best_l2, t);
                    let cal = Calibration::fit(&rows, true);
                    (t, cal, rows)
                })
                .min_by(|a, b| {
                    crate::model::calibrate::nll(&a.2, a.1)
                        .total_cmp(&crate::model::calibrate::nll(&b.2, b.1))
                })
                .unwrap_or_else(|| {
                    let rows = rows_for(best_l2, t0);
                    (t0, Calibration::fit(&rows, true), rows)
                });
            calibration = cal;
            let acc = |f: &dyn Fn(&HeldOut) -> usize| {
                rows.iter().filter(|r| f(r) == r.label).count() as f32 / rows.len() as f32
            };
            summary.l2 = grid[best_l2];
            summary.knn_temperature = temperature;
            summary.heldout_linear_accuracy = acc(&|r| argmax(&r.logits));
            summary.heldout_knn_accuracy = acc(&|r| argmax(&r.knn));
            summary.heldout_combined_accuracy =
                acc(&|r| argmax(&calibration.probabilities(&r.logits, &r.knn)));
            summary.heldout_examples = rows.len();
        }
        // How strongly in-domain held-out messages fire and how close their neighbours are.
        let best_l2 = grid.iter().position(|&l| l == summary.l2).unwrap_or(0);
        let outside = opts
            .out_of_scope_label
            .as_deref()
            .and_then(|l| index.get(l).copied());
        let guard_rows: Vec<[f32; 2]> = logits_by_l2
            .get(best_l2)
            .map(|rows| {
                rows.iter()
                    .zip(&neighbours)
                    .zip(&truth)
                    .filter(|(_, t)| Some(**t) != outside)
                    .map(|((z, nb), _)| signals(z, nb))
                    .collect()
            })
            .unwrap_or_default();
        let guard = DomainGuard::fit(&guard_rows, opts.in_domain_quantile);
        summary.weight_linear = calibration.a;
        summary.weight_knn = calibration.b;
        let head = LogReg::train(x, dim, &y, classes, train_opts(summary.l2))?;
        tracing::info!(?summary, "classifier trained");
        Ok(Classifier {
            labels: names,
            head,
            calibration,
            k,
            knn_temperature: summary.knn_temperature,
            guard,
            summary,
        })
    }

    /// The label names, indexed by class.
    pub fn labels(&self) -> &[String] {
        &self.labels
    }

    /// The class index of `label`.
    pub fn class_of(&self, label: &str) -> Option<usize> {
        self.labels.binary_search_by(|l| l.as_str().cmp(label)).ok()
    }

    /// How many neighbours should vote.
    pub fn k(&self) -> usize {
        self.k
    }

    /// What training measured.
    pub fn summary(&self) -> &TrainSummary {
        &self.summary
    }

    /// Calibrated probabilities and the out-of-scope guard for `x`, given its
    /// neighbours as `(class, similarity)`, best first.
    pub fn predict(&self, x: &[f32], neighbours: &[(usize, f32)]) -> Result<Prediction> {
        let z = self.head.logits(x)?;
        Ok(self.assess(&z, neighbours))
    }

    /// [`Classifier::predict`] for many rows at once (row-major `m × dim`).
    pub fn predict_batch(
        &self,
        x: &[f32],
        neighbours: &[Vec<(usize, f32)>],
    ) -> Result<Vec<Prediction>> {
        let logits = self.head.logits_batch(x)?;
        if logits.len() != neighbours.len() {
            return Err(Error::InvalidInput(
                "one neighbour list per row is required".into(),
            ));
        }
        Ok(logits
            .iter()
            .zip(neighbours)
            .map(|(z, nb)| self.assess(z, nb))
            .collect())
    }

    /// Probabilities of the linear head alone (temperature-scaled), for comparison.
    pub fn linear_only(&self, x: &[f32]) -> Result<Vec<Vec<f32>>> {
        Ok(self
            .head
            .logits_batch(x)?
            .iter()
            .map(|z| self.calibration.probabilities(z, &vec![1.0; z.len()]))
            .collect())
    }

    fn assess(&self, z: &[f32], neighbours: &[(usize, f32)]) -> Prediction {
        let in_domain = self.guard.in_domain(signals(z, neighbours));
        Prediction {
            probs: self
                .calibration
                .probabilities(z, &self.knn_vote(neighbours)),
            in_domain,
            guard: self.guard.factor(in_domain),
        }
    }

    /// The kNN vote alone over `(class, similarity)` neighbours.
    pub fn knn_vote(&self, neighbours: &[(usize, f32)]) -> Vec<f32> {
        vote(neighbours, |c| c, self.labels.len(), self.knn_temperature)
    }
}

/// Index of the largest value.
pub fn argmax(v: &[f32]) -> usize {
    v.iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map(|(i, _)| i)
        .unwrap_or(0)
}

/// Rows `idx` of a row-major matrix.
fn gather(x: &[f32], dim: usize, idx: &[usize]) -> Vec<f32> {
    idx.iter()
        .flat_map(|&i| x[i * dim..(i + 1) * dim].iter().copied())
        .collect()
}

/// Seeded stratified fold assignment: each class is shuffled and dealt round-robin.
pub fn stratified_folds(y: &[usize], folds: usize, seed: u64) -> Vec<usize> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut by_class: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (i, &c) in y.iter().enumerate() {
        by_class.entry(c).or_default().push(i);
    }
    let mut out = vec![0; y.len()];
    let mut offset = 0;
    for members in by_class.values_mut() {
        members.shuffle(&mut rng);
        for (r, &i) in members.iter().enumerate() {
            out[i] = (r + offset) % folds.max(1);
        }
        offset += members.len();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sample_is_stratified_fixed_and_keeps_the_marked_rows() {
        // 900 rows of "a", 90 of "b", 10 of "c"; row 5 is marked.
        let labels: Vec<String> = (0..1000)
            .map(|i| match i {
                0..900 => "a",
                900..990 => "b",
                _ => "c",
            })
            .map(String::from)
            .collect();
        let order: Vec<u64> = (0..1000u64)
            .map(|i| i.wrapping_mul(2_654_435_761) % 1009)
            .collect();
        let mut keep = vec![false; 1000];
        keep[5] = true;
        let s = sample_rows(&labels, &keep, &order, 100);
        assert!(s.contains(&5));
        assert!(s.windows(2).all(|w| w[0] < w[1]));
        let of = |l: &str| s.iter().filter(|&&i| labels[i] == l).count();
        // Proportional shares, but never fewer than the floor (or all of a small class).
        assert!((89..=92).contains(&of("a")), "{}", of("a"));
        assert_eq!(of("b"), SAMPLE_FLOOR);
        assert_eq!(of("c"), 10);
        assert_eq!(sample_rows(&labels, &keep, &order, 100), s, "not fixed");
        assert_eq!(sample_rows(&labels, &keep, &order, 1000).len(), 1000);
    }

    /// Three well separated clusters in 4-d, with noise: training must classify new points
    /// and the calibrated confidence must be high near a centre, lower between centres.
    #[test]
    fn learns_clusters_with_sensible_confidence() {
        let centres = [
            [1.0, 0.0, 0.0, 0.2],
            [0.0, 1.0, 0.0, 0.2],
            [0.0, 0.0, 1.0, 0.2],
        ];
        let mut x = Vec::new();
        let mut labels = Vec::new();
        for i in 0..60 {
            let c = i % 3;
            let jitter = ((i * 7919) % 13) as f32 / 40.0 - 0.15;
            let mut v = centres[c].to_vec();
            v[(c + 1) % 3] += jitter;
            v[3] += jitter;
            x.extend(v);
            labels.push(format!("class{c}"));
        }
        let clf = Classifier::train(&x, 4, &labels, &ClassifierOptions::default()).unwrap();
        assert_eq!(clf.labels().len(), 3);
        let mut memory = VectorSet::new(4);
        for row in x.chunks_exact(4) {
            memory.push(row).unwrap();
        }
        let neighbours = |q: &[f32]| -> Vec<(usize, f32)> {
            memory
                .top_k(q, 10, |_| true)
                .unwrap()
                .into_iter()
                .map(|(i, s)| (clf.class_of(&labels[i]).unwrap(), s))
                .collect()
        };
        let centre = [0.0, 1.0, 0.0, 0.2];
        let near = clf.predict(&centre, &neighbours(&centre)).unwrap();
        assert_eq!(argmax(&near.probs), clf.class_of("class1").unwrap());
        assert_eq!(near.guard, 1.0, "{near:?}");
        let mid = [0.5, 0.5, 0.0, 0.2];
        let between = clf.predict(&mid, &neighbours(&mid)).unwrap();
        assert!(
            near.probs[argmax(&near.probs)] > between.probs[argmax(&between.probs)],
            "{near:?} {between:?}"
        );
        assert!(clf.summary().heldout_combined_accuracy > 0.9);
        // Far from every cluster, with distant neighbours: the guard scales confidence down.
        let far = [-1.0, -1.0, -1.0, 0.2];
        let away = clf.predict(&far, &neighbours(&far)).unwrap();
        assert!(away.in_domain < 0.05 && away.guard < 1.0, "{away:?}");
    }

    #[test]
    fn folds_are_stratified() {
        let y: Vec<usize> = (0..20).map(|i| i % 2).collect();
        let f = stratified_folds(&y, 5, 1);
        for fold in 0..5 {
            let members: Vec<usize> = (0..20).filter(|&i| f[i] == fold).collect();
            assert_eq!(members.len(), 4);
            assert_eq!(members.iter().filter(|&&i| y[i] == 0).count(), 2);
        }
    }

    #[test]
    fn rejects_empty_training_data() {
        assert!(Classifier::train(&[], 4, &[], &ClassifierOptions::default()).is_err());
    }
}
