//! Whether a count is surprising: the upper tail of a Poisson or
//! negative-binomial count, with a minimum count, so a handful of tickets
//! never raises an alarm however quiet the baseline was.
//!
//! Ticket volumes vary more from day to day than a Poisson count (weekdays,
//! campaigns): the dispersion φ = variance / mean of the baseline's daily
//! counts widens the tail to a negative binomial with the same mean when φ > 1
//! (variance μ·φ: `r = μ / (φ − 1)`, `p = 1 / φ`). The tails come from
//! statrs (regularised incomplete gamma and beta functions), exact far into
//! the tail where `1 − cdf` would round to zero.

use statrs::distribution::{DiscreteCDF, NegativeBinomial, Poisson};

/// The largest dispersion the model assumes: past it one noisy cluster's
/// history would silence every alarm.
pub const MAX_DISPERSION: f64 = 4.0;

/// `P(X ≥ x)` for a count with this mean and dispersion (≤ 1: Poisson).
pub fn upper_tail(x: u64, mean: f64, dispersion: f64) -> f64 {
    if x == 0 {
        return 1.0;
    }
    let mean = mean.max(1e-9);
    let tail = if dispersion <= 1.0 + 1e-9 {
        Poisson::new(mean).map(|d| d.sf(x - 1)).ok()
    } else {
        let phi = dispersion.min(MAX_DISPERSION);
        NegativeBinomial::new(mean / (phi - 1.0), 1.0 / phi)
            .map(|d| d.sf(x - 1))
            .ok()
    };
    tail.unwrap_or(1.0).clamp(0.0, 1.0)
}

/// The dispersion of counts around what was expected of them: Pearson's
/// `Σ (y − e)² / e`, over the pairs expected at least once, per degree of
/// freedom. 1 (Poisson) without such pairs; never below 1 or above
/// [`MAX_DISPERSION`].
pub fn dispersion(pairs: impl Iterator<Item = (f64, f64)>) -> f64 {
    let (mut chi2, mut n) = (0f64, 0usize);
    for (y, e) in pairs {
        if e < 1.0 {
            continue;
        }
        chi2 += (y - e) * (y - e) / e;
        n += 1;
    }
    if n < 2 {
        1.0
    } else {
        (chi2 / (n - 1) as f64).clamp(1.0, MAX_DISPERSION)
    }
}

/// A count with what was expected of it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Surprise {
    /// The count seen.
    pub count: u32,
    /// The count expected from the baseline.
    pub expected: f64,
    /// `P(X ≥ count)` under the baseline.
    pub p_value: f64,
}

/// When a count is a spike: at least `min_count`, and at most `alpha`
/// probable under the baseline.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CountModel {
    /// Largest tail probability that is a spike.
    pub alpha: f64,
    /// Fewest tickets that can be a spike.
    pub min_count: u32,
    /// Variance / mean of the baseline's daily counts (1 = Poisson).
    pub dispersion: f64,
}

impl CountModel {
    /// The count's surprise, and whether it is a spike.
    pub fn test(&self, count: u32, expected: f64) -> (Surprise, bool) {
        let p_value = upper_tail(u64::from(count), expected, self.dispersion);
        let s = Surprise {
            count,
            expected,
            p_value,
        };
        (s, count >= self.min_count && p_value <= self.alpha)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poisson_tail_matches_the_sum_of_the_pmf() {
        // P(X ≥ 3 | λ = 1) = 1 − e⁻¹(1 + 1 + 1/2)
        let exact = 1.0 - (-1f64).exp() * 2.5;
        assert!((upper_tail(3, 1.0, 1.0) - exact).abs() < 1e-12);
        assert_eq!(upper_tail(0, 5.0, 1.0), 1.0);
        // Far in the tail, where 1 − cdf would round to 0.
        let far = upper_tail(40, 0.5, 1.0);
        assert!(far > 0.0 && far < 1e-40, "{far}");
    }

    #[test]
    fn overdispersion_widens_the_tail() {
        let poisson = upper_tail(10, 3.0, 1.0);
        let nb = upper_tail(10, 3.0, 2.0);
        assert!(nb > poisson * 10.0, "{nb} vs {poisson}");
        // Variance / mean of a negative binomial with φ = 2 is 2: check the mean.
        let mean: f64 = (1..200).map(|x| upper_tail(x, 3.0, 2.0)).sum();
        assert!((mean - 3.0).abs() < 1e-6, "{mean}");
    }

    #[test]
    fn a_few_tickets_on_a_quiet_baseline_are_no_spike() {
        let m = CountModel {
            alpha: 1e-4,
            min_count: 5,
            dispersion: 1.0,
        };
        // Three tickets where 0.01 were expected: improbable, but too few.
        let (s, spike) = m.test(3, 0.01);
        assert!(s.p_value < 1e-4);
        assert!(!spike);
        assert!(m.test(8, 0.5).1);
        assert!(!m.test(8, 6.0).1);
    }

    #[test]
    fn dispersion_measures_spread_around_the_expected_counts() {
        // Exactly as expected: no overdispersion.
        let exact = [(5.0, 5.0), (8.0, 8.0), (3.0, 3.0)];
        assert_eq!(dispersion(exact.into_iter()), 1.0);
        // 0 and 10 where 5 were expected: χ² = 5 a pair.
        let bursty = [(0.0, 5.0), (10.0, 5.0), (0.0, 5.0), (10.0, 5.0)];
        assert_eq!(dispersion(bursty.into_iter()), MAX_DISPERSION);
        let mild = [(3.0, 5.0), (7.0, 5.0), (3.0, 5.0), (7.0, 5.0)];
        let d = dispersion(mild.into_iter());
        assert!((d - 3.2 / 3.0).abs() < 1e-9, "{d}");
        // Pairs expected less than once do not count.
        assert_eq!(dispersion([(4.0, 0.1), (0.0, 0.2)].into_iter()), 1.0);
    }
}
