//! Calibration: turning classifier scores into probabilities that mean something.
//!
//! The final class score is `a · z_linear + b · ln(p_knn + ε)`: a generalised
//! temperature scaling (`a = 1/T`) that also weighs the kNN vote against the
//! linear head. Both weights are fitted by minimising the negative
//! log-likelihood on held-out predictions (a convex 2-parameter problem,
//! solved with Newton steps), so stacking and calibration are one fit.

use serde::{Deserialize, Serialize};

/// Floor added to kNN probabilities before the logarithm.
pub const KNN_EPS: f32 = 0.01;

/// The two fitted weights of the combined score.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    /// Weight of the linear head's logits (inverse temperature).
    pub a: f32,
    /// Weight of the log kNN vote.
    pub b: f32,
}

impl Default for Calibration {
    fn default() -> Self {
        Calibration { a: 1.0, b: 0.0 }
    }
}

/// One held-out prediction to fit on.
#[derive(Debug, Clone)]
pub struct HeldOut {
    /// Linear-head logits.
    pub logits: Vec<f32>,
    /// kNN vote distribution over the same classes.
    pub knn: Vec<f32>,
    /// The true class.
    pub label: usize,
}

impl Calibration {
    /// Calibrated class probabilities.
    pub fn probabilities(&self, logits: &[f32], knn: &[f32]) -> Vec<f32> {
        let scores: Vec<f32> = logits
            .iter()
            .zip(knn)
            .map(|(z, p)| self.a * z + self.b * (p + KNN_EPS).ln())
            .collect();
        softmax(&scores)
    }

    /// Fits `a` and `b` (both ≥ 0) on held-out predictions; `use_knn = false` fixes `b = 0`
    /// (plain temperature scaling).
    pub fn fit(rows: &[HeldOut], use_knn: bool) -> Calibration {
        let mut cal = Calibration::default();
        if rows.is_empty() {
            return cal;
        }
        let mut current = nll(rows, cal);
        for _ in 0..50 {
            let (g, h) = grad_hess(rows, cal);
            let (da, db) = if use_knn {
                let det = h[0] * h[3] - h[1] * h[2];
                if det.abs() < 1e-12 {
                    (g[0] / h[0].max(1e-9), 0.0)
                } else {
                    (
                        (h[3] * g[0] - h[1] * g[1]) / det,
                        (h[0] * g[1] - h[2] * g[0]) / det,
                    )
                }
            } else {
                (g[0] / h[0].max(1e-9), 0.0)
            };
            let mut step = 1.0f64;
            let mut improved = false;
            for _ in 0..30 {
                let cand = Calibration {
                    a: (cal.a as f64 - step * da).max(0.0) as f32,
                    b: (cal.b as f64 - step * db).max(0.0) as f32,
                };
                let v = nll(rows, cand);
                if v < current - 1e-10 {
                    cal = cand;
                    current = v;
                    improved = true;
                    break;
                }
                step *= 0.5;
            }
            if !improved {
                break;
            }
        }
        cal
    }
}

/// Mean negative log-likelihood of the true labels.
pub fn nll(rows: &[HeldOut], cal: Calibration) -> f64 {
    let total: f64 = rows
        .iter()
        .map(|r| {
            let p = cal.probabilities(&r.logits, &r.knn);
            -(p.get(r.label).copied().unwrap_or(0.0).max(1e-12) as f64).ln()
        })
        .sum();
    total / rows.len().max(1) as f64
}

/// Gradient and Hessian (row-major 2×2) of the mean NLL in `(a, b)`.
fn grad_hess(rows: &[HeldOut], cal: Calibration) -> ([f64; 2], [f64; 4]) {
    let mut g = [0f64; 2];
    let mut h = [0f64; 4];
    for r in rows {
        let p = cal.probabilities(&r.logits, &r.knn);
        let feats: Vec<(f64, f64)> = r
            .logits
            .iter()
            .zip(&r.knn)
            .map(|(z, q)| (*z as f64, ((q + KNN_EPS) as f64).ln()))
            .collect();
        let (mut ez, mut el, mut ezz, mut ezl, mut ell) = (0.0, 0.0, 0.0, 0.0, 0.0);
        for (pc, (z, l)) in p.iter().zip(&feats) {
            let pc = *pc as f64;
            ez += pc * z;
            el += pc * l;
            ezz += pc * z * z;
            ezl += pc * z * l;
            ell += pc * l * l;
        }
        let (zy, ly) = feats.get(r.label).copied().unwrap_or((0.0, 0.0));
        g[0] += ez - zy;
        g[1] += el - ly;
        h[0] += ezz - ez * ez;
        h[1] += ezl - ez * el;
        h[3] += ell - el * el;
    }
    let n = rows.len().max(1) as f64;
    g.iter_mut().for_each(|v| *v /= n);
    h.iter_mut().for_each(|v| *v /= n);
    h[2] = h[1];
    (g, h)
}

/// Numerically stable softmax.
pub fn softmax(scores: &[f32]) -> Vec<f32> {
    let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if !max.is_finite() {
        return vec![1.0 / scores.len().max(1) as f32; scores.len()];
    }
    let exps: Vec<f32> = scores.iter().map(|s| (s - max).exp()).collect();
    let total: f32 = exps.iter().sum();
    exps.iter().map(|e| e / total).collect()
}

/// Expected calibration error over equal-width confidence bins:
/// the mean gap between confidence and accuracy, weighted by bin size.
pub fn expected_calibration_error(confidence_correct: &[(f32, bool)], bins: usize) -> f32 {
    let bins = bins.max(1);
    let mut sum_conf = vec![0f64; bins];
    let mut sum_acc = vec![0f64; bins];
    let mut count = vec![0usize; bins];
    for &(c, ok) in confidence_correct {
        let b = ((c.clamp(0.0, 1.0) * bins as f32) as usize).min(bins - 1);
        sum_conf[b] += c as f64;
        sum_acc[b] += ok as u8 as f64;
        count[b] += 1;
    }
    let n = confidence_correct.len().max(1) as f64;
    (0..bins)
        .map(|b| (sum_conf[b] - sum_acc[b]).abs() / n)
        .sum::<f64>() as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Overconfident logits (always 10 for the predicted class, right 60 % of the time)
    /// must be cooled down to about 0.6 confidence.
    #[test]
    fn temperature_scaling_cools_overconfident_logits() {
        let rows: Vec<HeldOut> = (0..100)
            .map(|i| HeldOut {
                logits: vec![10.0, 0.0],
                knn: vec![0.5, 0.5],
                label: usize::from(i % 5 >= 3),
            })
            .collect();
        let cal = Calibration::fit(&rows, false);
        let p = cal.probabilities(&[10.0, 0.0], &[0.5, 0.5]);
        assert!((p[0] - 0.6).abs() < 0.02, "{p:?} {cal:?}");
        assert!(nll(&rows, cal) < nll(&rows, Calibration::default()));
    }

    /// When the kNN vote is always right and the logits are noise, `b` must dominate.
    #[test]
    fn stacking_learns_to_trust_the_informative_vote() {
        let rows: Vec<HeldOut> = (0..60)
            .map(|i| {
                let label = i % 3;
                let mut knn = vec![0.05; 3];
                knn[label] = 0.9;
                HeldOut {
                    logits: vec![(i % 7) as f32, (i % 5) as f32, (i % 4) as f32],
                    knn,
                    label,
                }
            })
            .collect();
        let cal = Calibration::fit(&rows, true);
        assert!(cal.b > 1.0 && cal.b > 5.0 * cal.a, "{cal:?}");
    }

    #[test]
    fn ece_is_zero_when_confidence_matches_accuracy() {
        let perfect: Vec<(f32, bool)> = (0..10).map(|i| (0.95, i != 0)).collect();
        assert!(expected_calibration_error(&perfect, 10) < 0.1);
        let bad: Vec<(f32, bool)> = (0..10).map(|_| (0.99, false)).collect();
        assert!(expected_calibration_error(&bad, 10) > 0.9);
    }
}
