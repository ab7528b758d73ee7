//! Exact nearest neighbours over unit vectors, and similarity-weighted voting.
//!
//! The labelled examples a decision looks at are few enough (thousands to tens
//! of thousands) for an exact scan, which also means a new or corrected example
//! is visible to the very next query without rebuilding anything.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use candle_core::{Device, Tensor};

use crate::error::{num, Error, Result};

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
    ///
    /// `keep` is asked only about rows that would enter the current top `k`, so
    /// a costly filter (tenant, date window) runs a few times per query, not
    /// once per stored vector.
    pub fn top_k(
        &self,
        q: &[f32],
        k: usize,
        keep: impl Fn(usize) -> bool,
    ) -> Result<Vec<(usize, f32)>> {
        self.top_k_at_least(q, k, f32::NEG_INFINITY, keep)
    }

    /// [`VectorSet::top_k`] among rows scoring at least `min` (a rare match,
    /// such as a near-duplicate, then costs one pass of dot products only).
    pub fn top_k_at_least(
        &self,
        q: &[f32],
        k: usize,
        min: f32,
        keep: impl Fn(usize) -> bool,
    ) -> Result<Vec<(usize, f32)>> {
        self.check(q)?;
        let mut top = TopK::new(k);
        for (i, row) in self.data.chunks_exact(self.dim).enumerate() {
            let s = dot(row, q);
            if s >= min && top.admits(s) && keep(i) {
                top.push(i, s);
            }
        }
        Ok(top.into_sorted())
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
        // Bound the similarity matrix to ~16 MB per chunk.
        let chunk = (4_000_000 / n).clamp(1, 4096);
        for qs in queries.chunks(chunk * self.dim) {
            let rows = qs.len() / self.dim;
            let sims = Tensor::from_slice(qs, (rows, self.dim), &dev)
                .and_then(|q| q.matmul(&base))
                .and_then(|s| s.flatten_all())
                .and_then(|s| s.to_vec1::<f32>())
                .map_err(num)?;
            for row in sims.chunks_exact(n) {
                let mut top = TopK::new(k);
                for (i, &s) in row.iter().enumerate() {
                    if top.admits(s) {
                        top.push(i, s);
                    }
                }
                out.push(top.into_sorted());
            }
        }
        Ok(out)
    }
}

/// Dot product in eight independent lanes, which the compiler vectorises
/// (a plain `zip().sum()` is one serial chain of additions).
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    const LANES: usize = 8;
    let mut acc = [0f32; LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for l in 0..LANES {
            acc[l] += x[l] * y[l];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// The best `k` scored rows seen so far (a min-heap on the score).
struct TopK {
    k: usize,
    heap: BinaryHeap<Reverse<Scored>>,
}

/// A row index and its score, ordered by score (ties: lower index first).
#[derive(PartialEq)]
struct Scored(f32, usize);

impl Eq for Scored {}

impl PartialOrd for Scored {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Scored {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0).then(other.1.cmp(&self.1))
    }
}

impl TopK {
    fn new(k: usize) -> TopK {
        TopK {
            k,
            heap: BinaryHeap::with_capacity(k + 1),
        }
    }

    /// Whether a row with score `s` would be among the best `k` now.
    fn admits(&self, s: f32) -> bool {
        self.k > 0
            && (self.heap.len() < self.k || self.heap.peek().is_some_and(|Reverse(w)| s > w.0))
    }

    fn push(&mut self, i: usize, s: f32) {
        self.heap.push(Reverse(Scored(s, i)));
        if self.heap.len() > self.k {
            self.heap.pop();
        }
    }

    /// The kept rows, best first.
    fn into_sorted(self) -> Vec<(usize, f32)> {
        self.heap
            .into_sorted_vec()
            .into_iter()
            .map(|Reverse(Scored(s, i))| (i, s))
            .collect()
    }
}

/// Softness of a neighbour vote (in cosine units) where no training chose
/// one: the label vote of a tenant without a trained head, the predicted
/// resolution and inferred fields. A trained classifier picks its own.
pub const VOTE_TEMPERATURE: f32 = 0.05;

/// The weight of each neighbour's vote (neighbours best first): the one vote
/// formula, `exp((sim − best_sim) / temperature)`. The nearest neighbour
/// weighs 1; one `temperature` less similar weighs `1/e` of it.
pub fn vote_weights(neighbours: &[(usize, f32)], temperature: f32) -> Vec<f32> {
    let best = neighbours.first().map(|n| n.1).unwrap_or(0.0);
    neighbours
        .iter()
        .map(|(_, s)| ((s - best) / temperature.max(1e-4)).exp())
        .collect()
}

/// Similarity-weighted class distribution of neighbours.
///
/// Each neighbour votes its [`vote_weights`] weight for its class;
/// `label_of` maps a neighbour index to its class in `0..classes`. The result
/// sums to one (uniform when there are no neighbours).
pub fn vote(
    neighbours: &[(usize, f32)],
    label_of: impl Fn(usize) -> usize,
    classes: usize,
    temperature: f32,
) -> Vec<f32> {
    let mut p = vec![0f32; classes];
    let mut total = 0f32;
    for (&(i, _), w) in neighbours.iter().zip(vote_weights(neighbours, temperature)) {
        let c = label_of(i);
        if c < classes {
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
    fn top_k_matches_a_full_sort_with_a_filter() {
        // Pseudo-random 13-d unit vectors (odd dimension: exercises the dot's tail).
        let mut seed = 7u64;
        let mut next = move || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((seed >> 33) as f32 / (1u64 << 31) as f32) - 0.5
        };
        let mut set = VectorSet::new(13);
        for _ in 0..500 {
            set.push(&unit(&(0..13).map(|_| next()).collect::<Vec<_>>()))
                .unwrap();
        }
        let q = unit(&(0..13).map(|_| next()).collect::<Vec<_>>());
        let keep = |i: usize| !i.is_multiple_of(3);
        let mut all: Vec<(usize, f32)> = (0..set.len())
            .filter(|&i| keep(i))
            .map(|i| {
                (
                    i,
                    set.get(i).unwrap().iter().zip(&q).map(|(a, b)| a * b).sum(),
                )
            })
            .collect();
        all.sort_by(|a, b| b.1.total_cmp(&a.1));
        let top = set.top_k(&q, 20, keep).unwrap();
        assert_eq!(
            top.iter().map(|t| t.0).collect::<Vec<_>>(),
            all[..20].iter().map(|t| t.0).collect::<Vec<_>>()
        );
        for (got, want) in top.iter().zip(&all) {
            assert!((got.1 - want.1).abs() < 1e-5);
        }
        assert!(set.top_k(&q, 0, keep).unwrap().is_empty());
        assert_eq!(set.top_k(&q, 1000, keep).unwrap().len(), all.len());
        let batch = set.top_k_batch(&q, 20).unwrap();
        let unfiltered = set.top_k(&q, 20, |_| true).unwrap();
        assert_eq!(
            batch[0].iter().map(|t| t.0).collect::<Vec<_>>(),
            unfiltered.iter().map(|t| t.0).collect::<Vec<_>>()
        );
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
