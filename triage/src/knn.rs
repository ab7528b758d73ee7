//! Exact nearest neighbours over unit vectors, and similarity-weighted voting.
//!
//! The labelled examples a decision looks at are few enough (thousands to tens
//! of thousands) for an exact scan, which also means a new or corrected example
//! is visible to the very next query without rebuilding anything.

use candle_core::{Device, Tensor};

use crate::error::{Error, Result};
use crate::logreg::num;

/// A growable set of vectors of one dimension, addressed by insertion index.
#[derive(Debug, Clone, Default)]
pub struct VectorSet {
    dim: usize,
    data: Vec<f32>,
}

impl VectorSet {
    /// An empty set of `dim`-dimensional vectors.
    pub fn new(dim: usize) -> VectorSet {
        VectorSet {
            dim,
            data: Vec::new(),
        }
    }

    /// Vector dimension.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Number of vectors.
    pub fn len(&self) -> usize {
        self.data.len().checked_div(self.dim).unwrap_or(0)
    }

    /// True when the set holds no vectors.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Appends a vector, returning its index.
    pub fn push(&mut self, v: &[f32]) -> Result<usize> {
        self.check(v)?;
        self.data.extend_from_slice(v);
        Ok(self.len() - 1)
    }

    /// Replaces the vector at `i`.
    pub fn set(&mut self, i: usize, v: &[f32]) -> Result<()> {
        self.check(v)?;
        let row = self
            .data
            .get_mut(i * self.dim..(i + 1) * self.dim)
            .ok_or_else(|| Error::InvalidInput(format!("no vector at index {i}")))?;
        row.copy_from_slice(v);
        Ok(())
    }

    /// The vector at `i`.
    pub fn get(&self, i: usize) -> Option<&[f32]> {
        self.data.get(i * self.dim..(i + 1) * self.dim)
    }

    /// All vectors, row-major.
    pub fn as_flat(&self) -> &[f32] {
        &self.data
    }

    fn check(&self, v: &[f32]) -> Result<()> {
        if v.len() != self.dim {
            return Err(Error::InvalidInput(format!(
                "vector has {} dimensions, expected {}",
                v.len(),
                self.dim
            )));
        }
        Ok(())
    }

    /// The `k` most similar vectors (dot product) to `q` among those `keep` accepts, best first.
    pub fn top_k(
        &self,
        q: &[f32],
        k: usize,
        keep: impl Fn(usize) -> bool,
    ) -> Result<Vec<(usize, f32)>> {
        self.check(q)?;
        let mut scored: Vec<(usize, f32)> = self
            .data
            .chunks_exact(self.dim)
            .enumerate()
            .filter(|(i, _)| keep(*i))
            .map(|(i, row)| (i, row.iter().zip(q).map(|(a, b)| a * b).sum::<f32>()))
            .collect();
        Ok(select_top(&mut scored, k))
    }

    /// `top_k` for many queries at once (row-major `m × dim`), through one matrix product.
    pub fn top_k_batch(&self, queries: &[f32], k: usize) -> Result<Vec<Vec<(usize, f32)>>> {
        if !queries.len().is_multiple_of(self.dim.max(1)) {
            return Err(Error::InvalidInput(
                "query matrix is not rows of dim".into(),
            ));
        }
        let m = queries.len() / self.dim.max(1);
        if m == 0 || self.is_empty() {
            return Ok(vec![Vec::new(); m]);
        }
        let dev = Device::Cpu;
        let n = self.len();
        let mut out = Vec::with_capacity(m);
        let base = Tensor::from_slice(&self.data, (n, self.dim), &dev)
            .and_then(|t| t.t())
            .map_err(num)?;
        // Bound the similarity matrix to ~64 MB per chunk.
        let chunk = (16_000_000 / n).clamp(1, 4096);
        for qs in queries.chunks(chunk * self.dim) {
            let rows = qs.len() / self.dim;
            let sims = Tensor::from_slice(qs, (rows, self.dim), &dev)
                .and_then(|q| q.matmul(&base))
                .and_then(|s| s.to_vec2::<f32>())
                .map_err(num)?;
            for row in sims {
                let mut scored: Vec<(usize, f32)> = row.into_iter().enumerate().collect();
                out.push(select_top(&mut scored, k));
            }
        }
        Ok(out)
    }
}

/// Sorts the best `k` of `scored` to the front (descending score) and returns them.
fn select_top(scored: &mut Vec<(usize, f32)>, k: usize) -> Vec<(usize, f32)> {
    let by_score = |a: &(usize, f32), b: &(usize, f32)| b.1.total_cmp(&a.1);
    if scored.len() > k && k > 0 {
        scored.select_nth_unstable_by(k - 1, by_score);
        scored.truncate(k);
    }
    scored.truncate(k);
    scored.sort_by(by_score);
    std::mem::take(scored)
}

/// Similarity-weighted class distribution of neighbours.
///
/// Each neighbour votes `exp((sim − best_sim) / temperature)` for its class;
/// `label_of` maps a neighbour index to its class in `0..classes`. The result
/// sums to one (uniform when there are no neighbours).
pub fn vote(
    neighbours: &[(usize, f32)],
    label_of: impl Fn(usize) -> usize,
    classes: usize,
    temperature: f32,
) -> Vec<f32> {
    let mut p = vec![0f32; classes];
    let best = neighbours.first().map(|n| n.1).unwrap_or(0.0);
    let mut total = 0f32;
    for &(i, s) in neighbours {
        let c = label_of(i);
        if c < classes {
            let w = ((s - best) / temperature.max(1e-4)).exp();
            p[c] += w;
            total += w;
        }
    }
    if total <= 0.0 {
        return vec![1.0 / classes.max(1) as f32; classes];
    }
    p.iter_mut().for_each(|v| *v /= total);
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(v: &[f32]) -> Vec<f32> {
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter().map(|x| x / n).collect()
    }

    #[test]
    fn top_k_orders_by_similarity_and_batch_agrees() {
        let mut set = VectorSet::new(2);
        for v in [[1.0, 0.0], [0.0, 1.0], [0.7, 0.7], [-1.0, 0.0]] {
            set.push(&unit(&v)).unwrap();
        }
        let q = unit(&[1.0, 0.1]);
        let top = set.top_k(&q, 2, |_| true).unwrap();
        assert_eq!(top.iter().map(|t| t.0).collect::<Vec<_>>(), vec![0, 2]);
        let filtered = set.top_k(&q, 2, |i| i != 0).unwrap();
        assert_eq!(filtered[0].0, 2);
        let batch = set.top_k_batch(&q, 2).unwrap();
        assert_eq!(batch[0].iter().map(|t| t.0).collect::<Vec<_>>(), vec![0, 2]);
        assert!(set.push(&[1.0]).is_err());
    }

    #[test]
    fn vote_weights_closer_neighbours_more() {
        let labels = [0usize, 1, 1];
        let p = vote(&[(0, 0.9), (1, 0.7), (2, 0.69)], |i| labels[i], 2, 0.05);
        assert!(p[0] > p[1], "{p:?}");
        assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-5);
        let flat = vote(&[], |i| labels[i], 2, 0.05);
        assert_eq!(flat, vec![0.5, 0.5]);
    }
}
