//! The out-of-scope guard: is a message like anything the classifier learned?
//!
//! Calibration on in-domain data cannot know how often messages fall outside
//! every label, and a softmax is confident far from its training data. Two
//! signals are low for out-of-scope messages: the largest linear logit (how
//! strongly any class fires) and the mean similarity of the nearest labelled
//! examples. Both are standardised on held-out in-domain messages and summed;
//! the message's in-domain score is the share of held-out messages scoring
//! lower (an empirical CDF, so no out-of-scope data is needed to fit it).
//! Probabilities are multiplied by `min(1, score / q)`: the lowest `q` of
//! in-domain messages (and whatever scores below them) lose confidence, and
//! the missing mass is "none of these labels".

/// Neighbours whose mean similarity is the second signal.
pub const SIM_DEPTH: usize = 5;

/// Fitted statistics of the two signals on held-out in-domain messages.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct DomainGuard {
    mean: [f32; 2],
    std: [f32; 2],
    /// Percentiles 0..=100 of the combined score.
    quantiles: Vec<f32>,
    /// Share of in-domain messages the guard may scale down.
    quantile: f32,
}

/// The two raw signals of a message: max logit and mean top-[`SIM_DEPTH`] similarity
/// (neighbours best first; `-1` when there are none).
pub fn signals(logits: &[f32], neighbours: &[(usize, f32)]) -> [f32; 2] {
    let max_logit = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let top: Vec<f32> = neighbours.iter().take(SIM_DEPTH).map(|n| n.1).collect();
    let sim = if top.is_empty() {
        -1.0
    } else {
        top.iter().sum::<f32>() / top.len() as f32
    };
    [max_logit, sim]
}

impl DomainGuard {
    /// Fits on the signals of held-out in-domain messages; `quantile` = 0 disables the guard.
    pub fn fit(rows: &[[f32; 2]], quantile: f32) -> DomainGuard {
        if rows.len() < 10 {
            return DomainGuard::default();
        }
        let n = rows.len() as f32;
        let mut mean = [0f32; 2];
        let mut std = [0f32; 2];
        for d in 0..2 {
            mean[d] = rows.iter().map(|r| r[d]).sum::<f32>() / n;
            let var = rows.iter().map(|r| (r[d] - mean[d]).powi(2)).sum::<f32>() / n;
            std[d] = var.sqrt().max(1e-6);
        }
        let mut guard = DomainGuard {
            mean,
            std,
            quantiles: Vec::new(),
            quantile,
        };
        let mut scores: Vec<f32> = rows.iter().map(|r| guard.score(*r)).collect();
        scores.sort_by(f32::total_cmp);
        guard.quantiles = (0..=100)
            .map(|q| scores[(q * (scores.len() - 1)) / 100])
            .collect();
        guard
    }

    fn score(&self, s: [f32; 2]) -> f32 {
        (0..2).map(|d| (s[d] - self.mean[d]) / self.std[d]).sum()
    }

    /// Share of held-out in-domain messages scoring at most this message (1 when unfitted).
    pub fn in_domain(&self, s: [f32; 2]) -> f32 {
        if self.quantiles.is_empty() {
            return 1.0;
        }
        let score = self.score(s);
        self.quantiles.partition_point(|&q| q <= score) as f32 / self.quantiles.len() as f32
    }

    /// The factor probabilities are multiplied by: `min(1, in_domain / quantile)`.
    pub fn factor(&self, in_domain: f32) -> f32 {
        factor(in_domain, self.quantile)
    }
}

/// `min(1, in_domain / quantile)`; a zero quantile disables the guard.
pub fn factor(in_domain: f32, quantile: f32) -> f32 {
    if quantile <= 0.0 {
        1.0
    } else {
        (in_domain / quantile).min(1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typical_messages_pass_and_outliers_are_scaled_down() {
        let rows: Vec<[f32; 2]> = (0..200)
            .map(|i| [5.0 + (i % 10) as f32 / 10.0, 0.8 + (i % 7) as f32 / 100.0])
            .collect();
        let g = DomainGuard::fit(&rows, 0.05);
        let typical = g.in_domain([5.5, 0.83]);
        assert!(typical > 0.3 && g.factor(typical) == 1.0, "{typical}");
        let outlier = g.in_domain([1.0, 0.3]);
        assert_eq!(outlier, 0.0);
        assert_eq!(g.factor(outlier), 0.0);
        assert_eq!(factor(0.01, 0.0), 1.0);
        assert_eq!(
            DomainGuard::fit(&rows[..3], 0.05).in_domain([0.0, 0.0]),
            1.0
        );
    }

    #[test]
    fn signals_read_the_max_logit_and_mean_top_similarity() {
        let s = signals(&[1.0, 3.0, -2.0], &[(0, 0.9), (1, 0.7)]);
        assert_eq!(s[0], 3.0);
        assert!((s[1] - 0.8).abs() < 1e-6);
        assert_eq!(signals(&[0.0], &[])[1], -1.0);
    }
}
