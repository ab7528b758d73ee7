//! Grouping tickets by meaning: threshold clustering of unit vectors.
//!
//! A cluster is a set of texts whose vectors are all within a cosine
//! `threshold` of their mean direction. The number of clusters is not fixed:
//! a text far from every cluster starts its own (DP-means, Kulis & Jordan
//! 2012, on the sphere). Two things make it fit ticket embeddings:
//!
//! * **Centring.** Sentence embeddings share a common direction (every
//!   multilingual-e5 pair scores 0.7–0.9), which squeezes the cosines
//!   together. Subtracting the batch mean and renormalising ([`Centred`])
//!   spreads them over the whole range, so one threshold separates topics.
//! * **Sample, then assign, then recurse** ([`cluster`]). DP-means on all
//!   points costs points × clusters per pass. Instead a seeded sample is
//!   clustered exactly, every point is assigned to the sample's clusters, and
//!   the points no cluster took are clustered the same way, round after round:
//!   a topic too small to show in the sample (a burst of twenty in a week of
//!   thousands) is found among the leftovers. Three passes over all points
//!   then settle each on its nearest centroid: clusters found twice (whose
//!   centres are within the threshold of each other) merge, and clusters
//!   smaller than `min_size` dissolve into noise.
//!
//! The cost is bounded by points × clusters × dimension per pass, one thread;
//! `triage eval emerging` and the cost benchmark in docs/EVAL.md measure it.

use rand::rngs::StdRng;
use rand::seq::index::sample;
use rand::SeedableRng;

use crate::model::knn::dot;

/// How [`cluster`] groups vectors.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClusterOptions {
    /// Least cosine (between centred vectors) of a member to its cluster's mean.
    pub threshold: f32,
    /// Clusters with fewer members dissolve into noise.
    pub min_size: usize,
    /// Points clustered exactly in one round.
    pub sample: usize,
    /// Most sample-and-assign rounds.
    pub rounds: usize,
    /// DP-means passes over a sample.
    pub passes: usize,
    /// Seed of the sampling (the same input gives the same clusters).
    pub seed: u64,
    /// Cluster incrementally instead ([`online`]): each point joins a cluster
    /// once, on arrival. The service clusters periodically; `triage eval
    /// emerging --online` measures what the incremental way would give.
    pub online: bool,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            threshold: 0.5,
            min_size: 3,
            sample: 3000,
            rounds: 8,
            passes: 3,
            seed: 7,
            online: false,
        }
    }
}

/// Unit vectors with their common direction removed (see the module docs).
#[derive(Debug, Clone)]
pub struct Centred {
    mean: Vec<f32>,
}

impl Centred {
    /// The centring of a batch of `dim`-dimensional unit vectors: their mean.
    pub fn fit<'a>(dim: usize, vectors: impl Iterator<Item = &'a [f32]>) -> Centred {
        let mut mean = vec![0f32; dim];
        let mut n = 0usize;
        for v in vectors {
            for (m, x) in mean.iter_mut().zip(v) {
                *m += x;
            }
            n += 1;
        }
        if n > 0 {
            for m in &mut mean {
                *m /= n as f32;
            }
        }
        Centred { mean }
    }

    /// `v` minus the mean, renormalised (zero stays zero).
    pub fn apply(&self, v: &[f32]) -> Vec<f32> {
        let mut out: Vec<f32> = v.iter().zip(&self.mean).map(|(x, m)| x - m).collect();
        normalise(&mut out);
        out
    }
}

/// Scales `v` to unit length (a zero vector stays zero).
pub fn normalise(v: &mut [f32]) {
    let n = dot(v, v).sqrt();
    if n > 1e-12 {
        for x in v.iter_mut() {
            *x /= n;
        }
    }
}

/// Rows of equal length, one vector each.
#[derive(Debug, Clone, Default)]
pub struct Rows {
    dim: usize,
    data: Vec<f32>,
}

impl Rows {
    /// No rows yet, of `dim` columns.
    pub fn new(dim: usize) -> Rows {
        Rows {
            dim,
            data: Vec::new(),
        }
    }

    /// Appends a row (it must have `dim` values).
    pub fn push(&mut self, v: &[f32]) {
        debug_assert_eq!(v.len(), self.dim);
        self.data.extend_from_slice(v);
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.data.len().checked_div(self.dim).unwrap_or(0)
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Row `i`.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.dim..(i + 1) * self.dim]
    }

    /// Columns per row.
    pub fn dim(&self) -> usize {
        self.dim
    }
}

/// The result of [`cluster`].
#[derive(Debug, Clone, Default)]
pub struct Clustering {
    /// Each point's cluster (`None`: noise), in input order.
    pub labels: Vec<Option<usize>>,
    /// Each point's cosine to its cluster's centroid (0 for noise).
    pub similarity: Vec<f32>,
    /// The clusters' unit mean directions (in the centred space).
    pub centroids: Rows,
}

impl Clustering {
    /// Number of clusters.
    pub fn len(&self) -> usize {
        self.centroids.len()
    }

    /// The members of each cluster, most central first.
    pub fn members(&self) -> Vec<Vec<usize>> {
        let mut out = vec![Vec::new(); self.len()];
        for (i, l) in self.labels.iter().enumerate() {
            if let Some(c) = l {
                out[*c].push(i);
            }
        }
        for m in &mut out {
            m.sort_by(|a, b| self.similarity[*b].total_cmp(&self.similarity[*a]));
        }
        out
    }
}

/// The nearest of `centroids` to `v` and its cosine, if any reaches `threshold`.
pub fn nearest(centroids: &Rows, v: &[f32], threshold: f32) -> Option<(usize, f32)> {
    let mut best: Option<(usize, f32)> = None;
    for c in 0..centroids.len() {
        let s = dot(centroids.row(c), v);
        if s >= threshold && best.is_none_or(|(_, b)| s > b) {
            best = Some((c, s));
        }
    }
    best
}

/// Sums of member vectors, turned into unit centroids.
struct Sums {
    dim: usize,
    sums: Vec<f32>,
    counts: Vec<usize>,
}

impl Sums {
    fn new(dim: usize, k: usize) -> Sums {
        Sums {
            dim,
            sums: vec![0.0; dim * k],
            counts: vec![0; k],
        }
    }

    fn add(&mut self, c: usize, v: &[f32]) {
        for (s, x) in self.sums[c * self.dim..(c + 1) * self.dim]
            .iter_mut()
            .zip(v)
        {
            *s += x;
        }
        self.counts[c] += 1;
    }

    /// The given centroids of the clusters that have members (counts > 0),
    /// unchanged, and each old cluster's new index.
    fn centroids_unmoved(&self, centroids: &Rows) -> (Rows, Vec<Option<usize>>) {
        let mut rows = Rows::new(self.dim);
        let mut index = vec![None; self.counts.len()];
        for (c, n) in self.counts.iter().enumerate() {
            if *n > 0 {
                index[c] = Some(rows.len());
                rows.push(centroids.row(c));
            }
        }
        (rows, index)
    }

    /// The unit centroids of clusters with at least `min` members, and each
    /// old cluster's new index.
    fn centroids(mut self, min: usize) -> (Rows, Vec<Option<usize>>) {
        let mut rows = Rows::new(self.dim);
        let mut index = vec![None; self.counts.len()];
        for (c, n) in self.counts.iter().enumerate() {
            if *n >= min.max(1) {
                let s = &mut self.sums[c * self.dim..(c + 1) * self.dim];
                normalise(s);
                index[c] = Some(rows.len());
                rows.push(s);
            }
        }
        (rows, index)
    }
}

/// DP-means over `points` (indices into `rows`), `passes` times: each point
/// joins its nearest centroid within `threshold` or starts a new one; then
/// centroids move to their members' mean. Returns the centroids of clusters
/// with at least `min` members.
fn dp_means(rows: &Rows, points: &[usize], threshold: f32, passes: usize, min: usize) -> Rows {
    let mut centroids = Rows::new(rows.dim());
    for pass in 0..passes.max(1) {
        let mut sums = Sums::new(rows.dim(), centroids.len());
        let mut grown = centroids.clone();
        for &p in points {
            let v = rows.row(p);
            match nearest(&grown, v, threshold) {
                Some((c, _)) => sums.add(c, v),
                None => {
                    grown.push(v);
                    sums.counts.push(0);
                    sums.sums.extend(std::iter::repeat_n(0.0, rows.dim()));
                    let c = grown.len() - 1;
                    sums.add(c, v);
                }
            }
        }
        let last = pass + 1 == passes.max(1);
        // Empty clusters go at every pass; small ones only at the end.
        centroids = sums.centroids(if last { min } else { 1 }).0;
    }
    centroids
}

/// Clusters unit vectors (`rows`, best centred with [`Centred`]); see the
/// module docs for the method.
pub fn cluster(rows: &Rows, opts: &ClusterOptions) -> Clustering {
    if opts.online {
        return online(rows, opts);
    }
    let n = rows.len();
    let mut rng = StdRng::seed_from_u64(opts.seed);
    let mut centroids = Rows::new(rows.dim());
    let mut pending: Vec<usize> = (0..n).collect();
    // A pair already agrees on a topic in a small sample; noise needs the whole set.
    let sample_min = 2;
    for _ in 0..opts.rounds.max(1) {
        if pending.len() < opts.min_size.max(2) {
            break;
        }
        let picked: Vec<usize> = if pending.len() <= opts.sample {
            pending.clone()
        } else {
            let mut idx: Vec<usize> = sample(&mut rng, pending.len(), opts.sample)
                .into_iter()
                .map(|i| pending[i])
                .collect();
            idx.sort_unstable();
            idx
        };
        let whole = picked.len() == pending.len();
        let found = dp_means(
            rows,
            &picked,
            opts.threshold,
            opts.passes,
            if whole { opts.min_size } else { sample_min },
        );
        if found.is_empty() {
            break;
        }
        pending.retain(|&p| nearest(&found, rows.row(p), opts.threshold).is_none());
        for c in 0..found.len() {
            centroids.push(found.row(c));
        }
        if whole {
            break;
        }
    }
    settle(rows, centroids, opts)
}

/// Incremental clustering, as it would run while tickets arrive: in input
/// (arrival) order each point joins the nearest cluster within the threshold,
/// whose centre moves to the new mean, or starts its own; nothing is revised
/// afterwards. Clusters under `min_size` are noise.
pub fn online(rows: &Rows, opts: &ClusterOptions) -> Clustering {
    let dim = rows.dim();
    let mut sums = Sums::new(dim, 0);
    let mut centroids = Rows::new(dim);
    let mut at: Vec<(usize, f32)> = Vec::with_capacity(rows.len());
    for p in 0..rows.len() {
        let v = rows.row(p);
        let c = match nearest(&centroids, v, opts.threshold) {
            Some((c, s)) => {
                at.push((c, s));
                c
            }
            None => {
                centroids.push(v);
                sums.counts.push(0);
                sums.sums.extend(std::iter::repeat_n(0.0, dim));
                at.push((centroids.len() - 1, 1.0));
                centroids.len() - 1
            }
        };
        sums.add(c, v);
        let mut unit = sums.sums[c * dim..(c + 1) * dim].to_vec();
        normalise(&mut unit);
        centroids.data[c * dim..(c + 1) * dim].copy_from_slice(&unit);
    }
    let (kept, index) = Sums {
        counts: sums
            .counts
            .iter()
            .map(|n| if *n < opts.min_size.max(1) { 0 } else { *n })
            .collect(),
        ..sums
    }
    .centroids_unmoved(&centroids);
    let mut labels = Vec::with_capacity(at.len());
    let mut similarity = Vec::with_capacity(at.len());
    for (c, s) in at {
        match index[c] {
            Some(k) => {
                labels.push(Some(k));
                similarity.push(s);
            }
            None => {
                labels.push(None);
                similarity.push(0.0);
            }
        }
    }
    Clustering {
        labels,
        similarity,
        centroids: kept,
    }
}

/// Assigns every point to its nearest centroid within the threshold: the
/// sums of each cluster's members, and each point's cluster and cosine.
fn assign_all(rows: &Rows, centroids: &Rows, threshold: f32) -> (Sums, Vec<Option<(usize, f32)>>) {
    let mut sums = Sums::new(rows.dim(), centroids.len());
    let mut at = Vec::with_capacity(rows.len());
    for p in 0..rows.len() {
        let v = rows.row(p);
        let hit = nearest(centroids, v, threshold);
        if let Some((c, _)) = hit {
            sums.add(c, v);
        }
        at.push(hit);
    }
    (sums, at)
}

/// Merges clusters whose centres lie within each other's reach (cosine ≥
/// `threshold`): the rounds can find one topic twice, once in the sample and
/// again among the leftovers. Larger clusters absorb smaller ones.
fn merge_close(sums: Sums, threshold: f32) -> Rows {
    let dim = sums.dim;
    let mut order: Vec<usize> = (0..sums.counts.len())
        .filter(|c| sums.counts[*c] > 0)
        .collect();
    order.sort_by(|a, b| sums.counts[*b].cmp(&sums.counts[*a]).then(a.cmp(b)));
    let mut kept_sums: Vec<Vec<f32>> = Vec::new();
    let mut kept = Rows::new(dim);
    for c in order {
        let s = &sums.sums[c * dim..(c + 1) * dim];
        let mut unit = s.to_vec();
        normalise(&mut unit);
        match nearest(&kept, &unit, threshold) {
            Some((k, _)) => {
                for (a, b) in kept_sums[k].iter_mut().zip(s) {
                    *a += b;
                }
            }
            None => {
                kept.push(&unit);
                kept_sums.push(s.to_vec());
            }
        }
    }
    let mut out = Rows::new(dim);
    for mut s in kept_sums {
        normalise(&mut s);
        out.push(&s);
    }
    out
}

/// Settles every point: assign and move the centroids, merge clusters found
/// twice, assign and move again dropping clusters under `min_size`, then a
/// last assignment to the final centroids (labels and cosines exact).
fn settle(rows: &Rows, centroids: Rows, opts: &ClusterOptions) -> Clustering {
    let (sums, _) = assign_all(rows, &centroids, opts.threshold);
    let merged = merge_close(sums, opts.threshold);
    let (sums, _) = assign_all(rows, &merged, opts.threshold);
    let (moved, _) = sums.centroids(opts.min_size);
    let (sums, at) = assign_all(rows, &moved, opts.threshold);
    // Members the last move pushed out may leave a cluster under the minimum.
    let small: Vec<bool> = sums
        .counts
        .iter()
        .map(|n| *n < opts.min_size.max(1))
        .collect();
    let (final_centroids, index) = Sums {
        counts: sums
            .counts
            .iter()
            .zip(&small)
            .map(|(n, s)| if *s { 0 } else { *n })
            .collect(),
        ..sums
    }
    .centroids_unmoved(&moved);
    let mut labels = Vec::with_capacity(rows.len());
    let mut similarity = Vec::with_capacity(rows.len());
    for hit in at {
        match hit.and_then(|(c, s)| index[c].map(|k| (k, s))) {
            Some((k, s)) => {
                labels.push(Some(k));
                similarity.push(s);
            }
            None => {
                labels.push(None);
                similarity.push(0.0);
            }
        }
    }
    Clustering {
        labels,
        similarity,
        centroids: final_centroids,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `per` noisy copies of each of `topics` orthogonal directions in `dim`
    /// dimensions, interleaved.
    fn topics(dim: usize, topics: usize, per: usize, noise: f32) -> (Rows, Vec<usize>) {
        let mut rng = StdRng::seed_from_u64(3);
        let mut rows = Rows::new(dim);
        let mut truth = Vec::new();
        for _ in 0..per {
            for t in 0..topics {
                let mut v: Vec<f32> = (0..dim)
                    .map(|_| noise * (rand::Rng::random::<f32>(&mut rng) - 0.5))
                    .collect();
                v[t] += 1.0;
                normalise(&mut v);
                rows.push(&v);
                truth.push(t);
            }
        }
        (rows, truth)
    }

    #[test]
    fn separated_topics_become_one_cluster_each() {
        let (rows, truth) = topics(32, 6, 40, 0.3);
        let c = cluster(
            &rows,
            &ClusterOptions {
                threshold: 0.7,
                sample: 50,
                ..ClusterOptions::default()
            },
        );
        assert_eq!(c.len(), 6);
        for members in c.members() {
            let t = truth[members[0]];
            assert!(members.iter().all(|m| truth[*m] == t));
            assert_eq!(members.len(), 40);
        }
    }

    #[test]
    fn a_small_topic_missing_from_the_sample_is_found_among_the_leftovers() {
        // 5 big topics of 300, one of 6: a sample of 100 rarely holds two of the six.
        let (mut rows, mut truth) = topics(16, 5, 300, 0.2);
        let mut v = vec![0f32; 16];
        v[10] = 1.0;
        for _ in 0..6 {
            rows.push(&v);
        }
        truth.extend(std::iter::repeat_n(10, 6));
        let c = cluster(
            &rows,
            &ClusterOptions {
                threshold: 0.7,
                sample: 100,
                ..ClusterOptions::default()
            },
        );
        let small: Vec<Vec<usize>> = c
            .members()
            .into_iter()
            .filter(|m| truth[m[0]] == 10)
            .collect();
        assert_eq!(small.len(), 1);
        assert_eq!(small[0].len(), 6);
    }

    #[test]
    fn online_clustering_finds_separated_topics_in_one_pass() {
        let (rows, truth) = topics(32, 6, 40, 0.3);
        let c = cluster(
            &rows,
            &ClusterOptions {
                threshold: 0.7,
                online: true,
                ..ClusterOptions::default()
            },
        );
        assert_eq!(c.len(), 6);
        for members in c.members() {
            assert!(members.iter().all(|m| truth[*m] == truth[members[0]]));
        }
    }

    #[test]
    fn points_far_from_everything_are_noise_and_tiny_groups_dissolve() {
        let mut rows = Rows::new(4);
        for v in [
            [1.0, 0.0, 0.0, 0.0],
            [0.0, 1.0, 0.0, 0.0],
            [0.0, 0.0, 1.0, 0.0],
        ] {
            rows.push(&v);
        }
        let c = cluster(&rows, &ClusterOptions::default());
        assert_eq!(c.len(), 0);
        assert!(c.labels.iter().all(Option::is_none));
    }

    #[test]
    fn centring_spreads_vectors_that_share_a_direction() {
        // Two topics on top of a strong common direction: raw cosine 0.9+.
        let common = [3.0f32, 0.0, 0.0];
        let mut a = vec![common[0], 1.0, 0.0];
        let mut b = vec![common[0], 0.0, 1.0];
        normalise(&mut a);
        normalise(&mut b);
        assert!(dot(&a, &b) > 0.85);
        let c = Centred::fit(3, [a.as_slice(), b.as_slice()].into_iter());
        let (ca, cb) = (c.apply(&a), c.apply(&b));
        assert!(dot(&ca, &cb) < -0.9, "{}", dot(&ca, &cb));
    }
}
