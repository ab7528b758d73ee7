//! Calibration of the answer probability on the knowledge base itself.
//!
//! The shipped verifier was fitted on other people's banks (LCQMC, CLINC150);
//! in a pack's own knowledge base its probabilities need not mean the same
//! precision. Each pack can say what they mean for it: leave one phrasing out
//! (each held-out phrasing is an in-scope message whose right answer is its
//! own article), score it against the rest of the bank, and take the pack's
//! out-of-scope requests as messages whose every answer is wrong. A logistic
//! regression over the verifier's answer logit, the best article's cosine and
//! its cosine lead over the best other article, fitted on those rows, is the
//! probability the pack's thresholds are read against.
//!
//! The two kinds of rows are weighted to equal total weight, so the
//! probability does not lean on how many phrasings a pack happens to have
//! compared with its out-of-scope examples.

use serde::{Deserialize, Serialize};

/// Inputs of the calibration, in order: the verifier's answer logit, the best
/// article's cosine, its cosine lead over the best other article.
pub const INPUTS: usize = 3;

/// Fewest rows of each kind (in scope, out of scope) worth a calibration.
pub const MIN_ROWS: usize = 20;

/// Share of the total weight the look-alike rows carry (the out-of-scope
/// requests carry the rest of the negative half).
const LOOK_ALIKE_SHARE: f64 = 0.25;

/// L2 penalty on the weights (not the bias).
const L2: f64 = 1e-2;

/// One row: the inputs and whether answering was right.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Row {
    /// See [`INPUTS`].
    pub x: [f32; INPUTS],
    /// Whether the best article was a right answer.
    pub right: bool,
    /// What kind of message the row is (for the weighting).
    pub kind: Kind,
}

/// The kinds of calibration rows; each kind carries a fixed share of the
/// total weight ([`Kind::share`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A held-out phrasing, scored against the rest of the bank.
    Phrasing,
    /// A held-out phrasing with its whole article left out: a look-alike of
    /// the other articles whose right answer is not in the bank.
    LookAlike,
    /// One of the pack's out-of-scope requests.
    OutOfScope,
}

impl Kind {
    /// The share of the total weight the rows of this kind carry together.
    fn share(self) -> f64 {
        match self {
            Kind::Phrasing => 0.5,
            Kind::LookAlike => LOOK_ALIKE_SHARE,
            Kind::OutOfScope => 0.5 - LOOK_ALIKE_SHARE,
        }
    }
}

/// A fitted calibration: `σ(b + w · x)`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BankCalibration {
    /// Weights of [`INPUTS`].
    pub w: [f32; INPUTS],
    /// Bias.
    pub b: f32,
}

impl BankCalibration {
    /// Fits the calibration by Newton's method on weighted, L2-penalised log
    /// loss; `None` when either kind of row is scarcer than [`MIN_ROWS`] or
    /// every row has the same outcome (nothing to calibrate against).
    pub fn fit(rows: &[Row]) -> Option<BankCalibration> {
        let count = |k: Kind| rows.iter().filter(|r| r.kind == k).count();
        let oos = count(Kind::OutOfScope);
        let inside = count(Kind::Phrasing);
        let positives = rows.iter().filter(|r| r.right).count();
        if oos < MIN_ROWS || inside < MIN_ROWS || positives == 0 || positives == rows.len() {
            return None;
        }
        let look_alikes = count(Kind::LookAlike);
        // Each row's weight, by kind, counted once (not per row and iteration).
        // Without look-alike rows the out-of-scope rows carry the whole negative half.
        let kind_weight = |k: Kind, n: usize| {
            let share = match k {
                Kind::OutOfScope if look_alikes == 0 => 0.5,
                k => k.share(),
            };
            share * rows.len() as f64 / n.max(1) as f64
        };
        let (w_phrasing, w_look_alike, w_oos) = (
            kind_weight(Kind::Phrasing, inside),
            kind_weight(Kind::LookAlike, look_alikes),
            kind_weight(Kind::OutOfScope, oos),
        );
        let weight = |r: &Row| match r.kind {
            Kind::Phrasing => w_phrasing,
            Kind::LookAlike => w_look_alike,
            Kind::OutOfScope => w_oos,
        };
        // Standardised inputs, so the penalty weighs each alike (folded back below).
        let mut mean = [0f64; INPUTS];
        let mut sd = [0f64; INPUTS];
        for r in rows {
            for (m, x) in mean.iter_mut().zip(r.x) {
                *m += f64::from(x) / rows.len() as f64;
            }
        }
        for r in rows {
            for ((s, m), x) in sd.iter_mut().zip(&mean).zip(r.x) {
                *s += (f64::from(x) - m).powi(2) / rows.len() as f64;
            }
        }
        for s in &mut sd {
            *s = s.sqrt().max(1e-6);
        }
        let standard = |x: [f32; INPUTS]| {
            let mut out = [1f64; INPUTS + 1];
            for i in 0..INPUTS {
                out[i + 1] = (f64::from(x[i]) - mean[i]) / sd[i];
            }
            out
        };
        const N: usize = INPUTS + 1;
        let mut beta = [0f64; N];
        for _ in 0..50 {
            let mut grad = [0f64; N];
            let mut hess = [[0f64; N]; N];
            for r in rows {
                let x = standard(r.x);
                let z: f64 = x.iter().zip(&beta).map(|(a, b)| a * b).sum();
                let p = 1.0 / (1.0 + (-z).exp());
                let (y, w) = (f64::from(u8::from(r.right)), weight(r));
                for i in 0..N {
                    grad[i] += w * (p - y) * x[i];
                    for j in 0..N {
                        hess[i][j] += w * p * (1.0 - p) * x[i] * x[j];
                    }
                }
            }
            for i in 1..N {
                grad[i] += L2 * rows.len() as f64 * beta[i];
                hess[i][i] += L2 * rows.len() as f64;
            }
            let step = solve(hess, grad)?;
            let mut largest = 0f64;
            for i in 0..N {
                beta[i] -= step[i];
                largest = largest.max(step[i].abs());
            }
            if largest < 1e-7 {
                break;
            }
        }
        if beta.iter().any(|b| !b.is_finite()) {
            return None;
        }
        let mut w = [0f32; INPUTS];
        let mut b = beta[0];
        for (i, wi) in w.iter_mut().enumerate() {
            *wi = (beta[i + 1] / sd[i]) as f32;
            b -= beta[i + 1] * mean[i] / sd[i];
        }
        Some(BankCalibration { w, b: b as f32 })
    }

    /// The calibrated probability that answering is right.
    pub fn probability(&self, x: [f32; INPUTS]) -> f32 {
        let z = self.b + self.w.iter().zip(x).map(|(w, x)| w * x).sum::<f32>();
        1.0 / (1.0 + (-z).exp())
    }
}

/// Solves `a · s = g` by Gaussian elimination with partial pivoting; `None`
/// when `a` is singular.
fn solve<const N: usize>(mut a: [[f64; N]; N], mut g: [f64; N]) -> Option<[f64; N]> {
    for col in 0..N {
        let pivot = (col..N).max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs()))?;
        if a[pivot][col].abs() < 1e-12 {
            return None;
        }
        a.swap(col, pivot);
        g.swap(col, pivot);
        for row in col + 1..N {
            let f = a[row][col] / a[col][col];
            let pivot_row = a[col];
            for (x, p) in a[row][col..].iter_mut().zip(&pivot_row[col..]) {
                *x -= f * p;
            }
            g[row] -= f * g[col];
        }
    }
    let mut s = [0f64; N];
    for row in (0..N).rev() {
        let rest: f64 = (row + 1..N).map(|k| a[row][k] * s[k]).sum();
        s[row] = (g[row] - rest) / a[row][row];
    }
    Some(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows() -> Vec<Row> {
        // In scope: right when the cosine is high and leads; out of scope: low cosine.
        let mut rows = Vec::new();
        for i in 0..60 {
            let cos = 0.85 + 0.15 * (i as f32 / 60.0);
            rows.push(Row {
                x: [0.0, cos, if i % 5 == 0 { 0.0 } else { 0.05 }],
                right: i % 5 != 0,
                kind: Kind::Phrasing,
            });
        }
        for i in 0..30 {
            rows.push(Row {
                x: [-1.0, 0.80 + 0.12 * (i as f32 / 30.0), 0.01],
                right: false,
                kind: Kind::OutOfScope,
            });
        }
        rows
    }

    #[test]
    fn the_fit_separates_right_answers_from_wrong_ones() {
        let cal = BankCalibration::fit(&rows()).expect("enough rows of both kinds");
        let right = cal.probability([0.0, 0.97, 0.05]);
        let tied = cal.probability([0.0, 0.97, 0.0]);
        let oos = cal.probability([-1.0, 0.85, 0.01]);
        assert!(right > 0.8, "{right}");
        assert!(
            tied < right,
            "{tied} vs {right}: a tie with another article is less sure"
        );
        assert!(oos < 0.2, "{oos}");
    }

    #[test]
    fn too_few_rows_or_one_outcome_give_no_calibration() {
        let rows = rows();
        assert_eq!(
            BankCalibration::fit(&rows[..50]),
            None,
            "no out-of-scope rows"
        );
        let all_wrong: Vec<Row> = rows.iter().map(|r| Row { right: false, ..*r }).collect();
        assert_eq!(BankCalibration::fit(&all_wrong), None);
    }

    #[test]
    fn solve_inverts_a_small_system() {
        let s = solve([[2.0, 1.0], [1.0, 3.0]], [3.0, 5.0]).unwrap();
        assert!(
            (s[0] - 0.8).abs() < 1e-9 && (s[1] - 1.4).abs() < 1e-9,
            "{s:?}"
        );
        assert_eq!(solve([[1.0, 2.0], [2.0, 4.0]], [1.0, 2.0]), None);
    }
}
