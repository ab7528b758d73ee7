//! In-memory vector state: the live documents' vectors and filterable
//! attributes by vector id, their partitions (one per tenant and kind), and
//! the HNSW graph built over them.
//!
//! The graph never forgets a point: replaced and deleted documents stay in it
//! as tombstones that the search filter skips, and the graph is rebuilt from
//! the live vectors once tombstones pile up. A tenant's small partition, or
//! the few documents of a creation-time window, are searched exactly, at the
//! cost of that partition or window, not of the whole store.

use std::collections::{BTreeSet, HashMap};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use hnsw_rs::prelude::{DistDot, Distance, Hnsw};

use crate::doc::DocKind;
use crate::schema::{CompiledFilters, Meta};

/// The HNSW graph type: dot-product distance on unit vectors (`1 - cosine`).
pub(crate) type Graph = Hnsw<'static, f32, DistDot>;

/// Neighbours per node (hnsw_rs exits the process above 256).
const MAX_CONNECTIONS: usize = 32;
/// Candidate list width while building (200 builds 2x slower for the same
/// recall at a given search width, measured with `examples/bench.rs`).
const EF_CONSTRUCTION: usize = 100;
/// Maximum number of graph layers.
const MAX_LAYERS: usize = 16;
/// Default HNSW candidate list width while searching.
pub const EF_SEARCH: usize = 128;
/// Default: candidate sets up to this size are scanned exactly instead of via
/// the graph (at 384 dimensions a scan of 10k vectors costs ~2 ms, about a
/// graph search at ef 128, and is exact; measured with `examples/bench.rs`).
pub const EXACT_MAX: usize = 10_000;
/// Batches above this size are inserted into the graph on all cores.
const PARALLEL_INSERT_MIN: usize = 64;

/// Creates an empty graph sized for `capacity` points.
pub(crate) fn new_graph(capacity: usize) -> Graph {
    Hnsw::new(
        MAX_CONNECTIONS,
        capacity.max(1024),
        MAX_LAYERS,
        EF_CONSTRUCTION,
        DistDot,
    )
}

/// Inserts `(vector, vid)` pairs into `graph`.
pub(crate) fn insert_all(graph: &Graph, items: &[(&[f32], usize)]) {
    if items.len() >= PARALLEL_INSERT_MIN {
        graph.parallel_insert_slice(&items.to_vec());
    } else {
        for &item in items {
            graph.insert_slice(item);
        }
    }
}

/// Cosine similarity of two unit vectors, with the same SIMD kernel as the graph.
pub(crate) fn similarity(a: &[f32], b: &[f32]) -> f32 {
    1.0 - DistDot.eval(a, b)
}

/// L2-normalises a vector in place; fails on zero, NaN or infinite vectors
/// (the graph's distance kernel asserts on those).
pub(crate) fn normalise(v: &mut [f32]) -> Result<(), String> {
    if v.iter().any(|x| !x.is_finite()) {
        return Err("vector contains NaN or infinite values".into());
    }
    let norm = v
        .iter()
        .map(|&x| f64::from(x) * f64::from(x))
        .sum::<f64>()
        .sqrt();
    if norm == 0.0 {
        return Err("vector is all zeros".into());
    }
    for x in v.iter_mut() {
        *x = (f64::from(*x) / norm) as f32;
    }
    Ok(())
}

/// A live document as the vector side sees it.
pub(crate) struct Slot {
    pub meta: Meta,
    pub thash: u64,
    pub vector: Box<[f32]>,
}

/// The live documents of one tenant and kind: the unit a search runs in.
#[derive(Default)]
struct Partition {
    /// Vector ids of its documents; may hold ids no longer live (skipped,
    /// and compacted away once they are half of it).
    members: Vec<u64>,
    /// Members that are no longer live.
    stale: usize,
    /// Live members.
    live: usize,
    /// Live tickets with a resolution.
    resolved: usize,
    /// Live documents with a category.
    labelled: usize,
    /// (creation time, vector id) of live members that have one.
    by_created: BTreeSet<(i64, u64)>,
}

/// Counts a live document in its partition.
fn count(part: &mut Partition, vid: u64, m: &Meta) {
    part.live += 1;
    part.resolved += usize::from(m.resolved);
    part.labelled += usize::from(!m.category.is_empty());
    if let Some(c) = m.created {
        part.by_created.insert((c, vid));
    }
}

/// Forgets a document that is no longer live from its partition's counts.
fn uncount(part: &mut Partition, vid: u64, m: &Meta) {
    part.live = part.live.saturating_sub(1);
    part.resolved = part.resolved.saturating_sub(usize::from(m.resolved));
    part.labelled = part
        .labelled
        .saturating_sub(usize::from(!m.category.is_empty()));
    if let Some(c) = m.created {
        part.by_created.remove(&(c, vid));
    }
}

/// Vectors, attributes and the graph. Guarded by the index's `RwLock`.
pub(crate) struct VectorState {
    /// Live slots by vector id.
    slots: Vec<Option<Box<Slot>>>,
    /// Document key → vector id.
    keys: HashMap<String, u64>,
    /// Live documents per (tenant, kind).
    parts: HashMap<(String, DocKind), Partition>,
    /// Which vector ids are points of `graph`.
    in_graph: Vec<bool>,
    /// Number of points in `graph` (live + tombstones).
    graph_points: usize,
    /// Graph points that are live documents (kept as a count: writes ask for
    /// the tombstones, and a scan of every key per write grows with the store).
    live_points: usize,
    graph: Arc<Graph>,
    /// Graph points added or changed since the graph was last saved.
    pub dirty: usize,
    /// A replacement graph is being built in the background.
    rebuilding: bool,
}

impl VectorState {
    /// An empty state around `graph`, whose points are `graph_vids`.
    pub(crate) fn new(graph: Graph, graph_vids: &[u64]) -> Self {
        let mut s = VectorState {
            slots: Vec::new(),
            keys: HashMap::new(),
            parts: HashMap::new(),
            in_graph: Vec::new(),
            graph_points: 0,
            live_points: 0,
            graph: Arc::new(graph),
            dirty: 0,
            rebuilding: false,
        };
        for &vid in graph_vids {
            s.mark_in_graph(vid);
        }
        s
    }

    fn mark_in_graph(&mut self, vid: u64) {
        let i = vid as usize;
        if self.in_graph.len() <= i {
            self.in_graph.resize(i + 1, false);
        }
        if !self.in_graph[i] {
            self.in_graph[i] = true;
            self.graph_points += 1;
            if self.slot(vid).is_some() {
                self.live_points += 1;
            }
        }
    }

    /// Records a live document (no graph insertion: see [`Self::graph_backlog`]).
    pub(crate) fn put(&mut self, vid: u64, slot: Slot) {
        let key = slot.meta.key();
        if let Some(old) = self.keys.insert(key, vid) {
            if old != vid {
                self.remove_vid(old);
            }
        }
        let i = vid as usize;
        if self.slots.len() <= i {
            self.slots.resize_with(i + 1, || None);
        }
        let part = self
            .parts
            .entry((slot.meta.tenant.clone(), slot.meta.kind))
            .or_default();
        match self.slots[i].replace(Box::new(slot)) {
            Some(prev) => uncount(part, vid, &prev.meta),
            None => {
                part.members.push(vid);
                if self.in_graph.get(i).copied().unwrap_or(false) {
                    self.live_points += 1;
                }
            }
        }
        if let Some(s) = self.slots[i].as_deref() {
            count(part, vid, &s.meta);
        }
    }

    fn remove_vid(&mut self, vid: u64) {
        let Some(prev) = self.slots.get_mut(vid as usize).and_then(Option::take) else {
            return;
        };
        if self.in_graph(vid) {
            self.live_points -= 1;
        }
        let Some(part) = self
            .parts
            .get_mut(&(prev.meta.tenant.clone(), prev.meta.kind))
        else {
            return;
        };
        uncount(part, vid, &prev.meta);
        part.stale += 1;
        if part.stale * 2 > part.members.len() {
            let slots = &self.slots;
            part.members
                .retain(|&v| slots.get(v as usize).is_some_and(Option::is_some));
            part.stale = 0;
        }
    }

    /// Forgets the document with this key; true if it was live.
    pub(crate) fn remove(&mut self, key: &str) -> bool {
        match self.keys.remove(key) {
            Some(vid) => {
                self.remove_vid(vid);
                true
            }
            None => false,
        }
    }

    /// The live vector id and text hash of a key.
    pub(crate) fn lookup(&self, key: &str) -> Option<(u64, u64)> {
        let vid = *self.keys.get(key)?;
        Some((vid, self.slot(vid)?.thash))
    }

    /// The live slot of a vector id.
    pub(crate) fn slot(&self, vid: u64) -> Option<&Slot> {
        self.slots.get(vid as usize)?.as_deref()
    }

    /// Live documents of a kind.
    pub(crate) fn count(&self, kind: DocKind) -> usize {
        self.parts
            .iter()
            .filter(|((_, k), _)| *k == kind)
            .map(|(_, p)| p.live)
            .sum()
    }

    /// Live documents of a kind in one tenant.
    pub(crate) fn count_in(&self, kind: DocKind, tenant: &str) -> usize {
        self.parts
            .get(&(tenant.to_string(), kind))
            .map_or(0, |p| p.live)
    }

    /// Live documents of `kind` per category (of one tenant, or of all),
    /// sorted by category; documents without one are not counted.
    pub(crate) fn category_counts(
        &self,
        kind: DocKind,
        tenant: Option<&str>,
    ) -> Vec<(String, usize)> {
        let mut counts: HashMap<&str, usize> = HashMap::new();
        for ((t, k), part) in &self.parts {
            if *k != kind || tenant.is_some_and(|x| x != t) {
                continue;
            }
            for &vid in &part.members {
                if let Some(s) = self.slot(vid).filter(|s| !s.meta.category.is_empty()) {
                    *counts.entry(s.meta.category.as_str()).or_default() += 1;
                }
            }
        }
        let mut out: Vec<(String, usize)> = counts
            .into_iter()
            .map(|(c, n)| (c.to_string(), n))
            .collect();
        out.sort();
        out
    }

    /// The tenants that hold documents of `kind`.
    pub(crate) fn tenants(&self, kind: DocKind) -> Vec<String> {
        let mut out: Vec<String> = self
            .parts
            .iter()
            .filter(|((_, k), p)| *k == kind && p.live > 0)
            .map(|((t, _), _)| t.clone())
            .collect();
        out.sort();
        out
    }

    /// The live slots of one tenant and kind, with their vector ids.
    pub(crate) fn partition_slots(
        &self,
        kind: DocKind,
        tenant: &str,
    ) -> impl Iterator<Item = (u64, &Slot)> + '_ {
        self.parts
            .get(&(tenant.to_string(), kind))
            .into_iter()
            .flat_map(|p| p.members.iter())
            .filter_map(|&v| self.slot(v).map(|s| (v, s)))
    }

    /// Live documents in total.
    pub(crate) fn live(&self) -> usize {
        self.keys.len()
    }

    /// Graph points that are no longer live.
    pub(crate) fn tombstones(&self) -> usize {
        self.graph_points.saturating_sub(self.live_points)
    }

    /// Whether a vector id is a point of the graph.
    pub(crate) fn in_graph(&self, vid: u64) -> bool {
        self.in_graph.get(vid as usize).copied().unwrap_or(false)
    }

    /// Number of points in the graph.
    pub(crate) fn graph_points(&self) -> usize {
        self.graph_points
    }

    /// The current graph (shared, so it can be saved or extended without
    /// holding the state lock).
    pub(crate) fn graph(&self) -> Arc<Graph> {
        Arc::clone(&self.graph)
    }

    /// Live vector ids that are not yet graph points, with their vectors.
    pub(crate) fn graph_backlog(&self) -> Vec<(u64, Box<[f32]>)> {
        self.keys
            .values()
            .filter(|&&v| !self.in_graph(v))
            .filter_map(|&v| Some((v, self.slot(v)?.vector.clone())))
            .collect()
    }

    /// Records that `items` (vector, vid) were inserted into `used`, a graph
    /// taken from [`Self::graph`] before the lock was released. When a rebuilt
    /// graph has replaced it meanwhile, they are inserted into the current one too.
    pub(crate) fn graph_added(&mut self, used: &Arc<Graph>, items: &[(&[f32], usize)]) {
        if !Arc::ptr_eq(used, &self.graph) {
            insert_all(&self.graph, items);
        }
        for &(_, v) in items {
            self.mark_in_graph(v as u64);
        }
        self.dirty += items.len();
    }

    /// Starts a background rebuild: returns the live vectors to build from, or
    /// `None` when one is already running.
    pub(crate) fn begin_rebuild(&mut self) -> Option<Vec<(u64, Box<[f32]>)>> {
        if self.rebuilding {
            return None;
        }
        self.rebuilding = true;
        Some(self.live_vectors())
    }

    /// Swaps in `graph`, built from the vectors `vids` that [`Self::begin_rebuild`]
    /// returned, after adding what was written while it was being built.
    pub(crate) fn finish_rebuild(&mut self, graph: Graph, vids: &[u64]) {
        self.replace_graph(Arc::new(graph), vids);
        let backlog = self.graph_backlog();
        let items: Vec<(&[f32], usize)> =
            backlog.iter().map(|(v, x)| (&x[..], *v as usize)).collect();
        insert_all(&self.graph, &items);
        for (v, _) in &backlog {
            self.mark_in_graph(*v);
        }
        self.dirty += backlog.len();
        self.rebuilding = false;
    }

    /// Gives up a rebuild that [`Self::begin_rebuild`] started (the old graph stays).
    pub(crate) fn abort_rebuild(&mut self) {
        self.rebuilding = false;
    }

    /// Every live vector, for rebuilding the graph.
    pub(crate) fn live_vectors(&self) -> Vec<(u64, Box<[f32]>)> {
        self.keys
            .values()
            .filter_map(|&v| Some((v, self.slot(v)?.vector.clone())))
            .collect()
    }

    /// Swaps in a rebuilt graph holding exactly `vids`.
    pub(crate) fn replace_graph(&mut self, graph: Arc<Graph>, vids: &[u64]) {
        self.graph = graph;
        self.in_graph.clear();
        self.graph_points = 0;
        self.live_points = 0;
        for &v in vids {
            self.mark_in_graph(v);
        }
        self.dirty = vids.len().max(1);
    }

    /// Whether enough of the graph is dead to be worth rebuilding.
    pub(crate) fn needs_rebuild(&self) -> bool {
        let dead = self.tombstones();
        !self.rebuilding && dead > 1000 && dead * 4 > self.live()
    }

    /// Top `k` live documents passing `f` with a cosine to the unit vector
    /// `q` of at least `min`, best first. Each of the filter's partitions
    /// (its tenant, one or both kinds) is searched on its own: exactly when it
    /// holds at most `exact_max` documents, or when a creation-time window
    /// leaves at most that many; through the graph (search width `ef`,
    /// widened by the filter's selectivity) otherwise.
    pub(crate) fn search(
        &self,
        q: &[f32],
        k: usize,
        min: f32,
        f: &CompiledFilters,
        ef: usize,
        exact_max: usize,
    ) -> Vec<(u64, f32)> {
        if k == 0 {
            return Vec::new();
        }
        let kinds: &[DocKind] = match &f.kind {
            Some(DocKind::Ticket) => &[DocKind::Ticket],
            Some(DocKind::Article) => &[DocKind::Article],
            None => &[DocKind::Ticket, DocKind::Article],
        };
        let mut out: Vec<(u64, f32)> = Vec::new();
        for &kind in kinds {
            if let Some(part) = self.parts.get(&(f.tenant.clone(), kind)) {
                out.extend(self.search_partition(part, kind, q, k, min, f, ef, exact_max));
            }
        }
        sort_hits(&mut out, k);
        out
    }

    #[allow(clippy::too_many_arguments)]
    fn search_partition(
        &self,
        part: &Partition,
        kind: DocKind,
        q: &[f32],
        k: usize,
        min: f32,
        f: &CompiledFilters,
        ef: usize,
        exact_max: usize,
    ) -> Vec<(u64, f32)> {
        if part.live == 0 {
            return Vec::new();
        }
        let keep = |vid: u64, s: &Slot| s.meta.kind == kind && f.matches(vid, &s.meta);
        if part.live <= exact_max {
            return self.exact(part.members.iter().copied(), q, k, min, keep);
        }
        if f.after.is_some() || f.before.is_some() {
            // A creation-time window: its documents, when few, are all there is to scan.
            let lo = f.after.unwrap_or(i64::MIN);
            let window = part
                .by_created
                .range((lo, 0)..)
                .take_while(|(c, _)| f.before.is_none_or(|b| *c < b))
                .map(|&(_, v)| v);
            let in_window: Vec<u64> = window.take(exact_max + 1).collect();
            if in_window.len() <= exact_max {
                return self.exact(in_window.into_iter(), q, k, min, keep);
            }
        }
        // The share of the graph that may match: the partition, narrowed by
        // the flags whose counts are known (other filters widen on a short result).
        let mut candidates = part.live as f64;
        if f.resolved_only {
            candidates *= part.resolved as f64 / part.live as f64;
        }
        if f.labelled_only {
            candidates *= part.labelled as f64 / part.live as f64;
        }
        if candidates < 1.0 {
            return Vec::new();
        }
        let wanted = k.min(candidates as usize);
        let selectivity = candidates / self.graph_points.max(1) as f64;
        let mut ef = ((ef.max(k) as f64 / selectivity).ceil() as usize).max(2);
        let everything_matches =
            f.is_simple() && part.live == self.graph_points && self.parts.len() == 1;
        loop {
            let hits = self.graph_search(q, k, ef, &keep, everything_matches);
            match hits {
                Some(h) if h.len() >= wanted || h.last().is_some_and(|l| l.1 < min) => {
                    return h.into_iter().filter(|h| h.1 >= min).collect();
                }
                _ if ef >= self.graph_points => break,
                _ => ef = (ef * 4).min(self.graph_points.max(2)),
            }
        }
        tracing::debug!(
            partition = part.live,
            "graph search came up short; scanning the partition exactly"
        );
        self.exact(part.members.iter().copied(), q, k, min, keep)
    }

    /// One graph search; `None` if the graph library panicked (its internal
    /// asserts must never take a request down).
    fn graph_search(
        &self,
        q: &[f32],
        k: usize,
        ef: usize,
        keep: &dyn Fn(u64, &Slot) -> bool,
        unfiltered: bool,
    ) -> Option<Vec<(u64, f32)>> {
        let filter = |vid: &usize| self.slot(*vid as u64).is_some_and(|s| keep(*vid as u64, s));
        let result = catch_unwind(AssertUnwindSafe(|| {
            if unfiltered {
                self.graph.search(q, k, ef)
            } else {
                self.graph.search_filter(q, k, ef, Some(&filter))
            }
        }));
        match result {
            Ok(ns) => Some(
                ns.into_iter()
                    .map(|n| (n.d_id as u64, 1.0 - n.distance))
                    .filter(|(vid, _)| self.slot(*vid).is_some())
                    .collect(),
            ),
            Err(_) => {
                tracing::error!("hnsw search panicked; falling back to exact search");
                None
            }
        }
    }

    /// Exact top `k` (cosine at least `min`) among the live slots of `vids` accepted by `keep`.
    fn exact(
        &self,
        vids: impl Iterator<Item = u64>,
        q: &[f32],
        k: usize,
        min: f32,
        keep: impl Fn(u64, &Slot) -> bool,
    ) -> Vec<(u64, f32)> {
        let mut scored: Vec<(u64, f32)> = vids
            .filter_map(|vid| {
                let s = self.slot(vid)?;
                if !keep(vid, s) {
                    return None;
                }
                let sim = similarity(q, &s.vector);
                (sim >= min).then_some((vid, sim))
            })
            .collect();
        sort_hits(&mut scored, k);
        scored
    }
}

/// Keeps the best `k` of `hits`, best first (ties by vector id).
fn sort_hits(hits: &mut Vec<(u64, f32)>, k: usize) {
    let by_score = |a: &(u64, f32), b: &(u64, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
    if hits.len() > k {
        hits.select_nth_unstable_by(k - 1, by_score);
        hits.truncate(k);
    }
    hits.sort_by(by_score);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(v: &[f32]) -> Vec<f32> {
        let mut v = v.to_vec();
        normalise(&mut v).unwrap();
        v
    }

    fn slot(id: &str, kind: DocKind, v: &[f32]) -> Slot {
        Slot {
            meta: Meta {
                kind,
                tenant: String::new(),
                id: id.into(),
                category: String::new(),
                status: String::new(),
                priority: String::new(),
                created: None,
                resolved: false,
            },
            thash: 0,
            vector: unit(v).into_boxed_slice(),
        }
    }

    #[test]
    fn normalise_rejects_degenerate_vectors() {
        assert!(normalise(&mut [0.0, 0.0]).is_err());
        assert!(normalise(&mut [f32::NAN, 1.0]).is_err());
        let mut v = [3.0, 4.0];
        normalise(&mut v).unwrap();
        assert!((v[0] - 0.6).abs() < 1e-6 && (v[1] - 0.8).abs() < 1e-6);
    }

    #[test]
    fn replace_and_remove_keep_counts_and_hide_old_vectors() {
        let mut s = VectorState::new(new_graph(16), &[]);
        s.put(0, slot("a", DocKind::Ticket, &[1.0, 0.0]));
        s.put(1, slot("b", DocKind::Article, &[0.0, 1.0]));
        s.put(2, slot("a", DocKind::Ticket, &[0.0, 1.0]));
        assert_eq!(s.count(DocKind::Ticket), 1);
        assert_eq!(s.live(), 2);
        assert!(s.slot(0).is_none());
        let f = CompiledFilters {
            kind: Some(DocKind::Ticket),
            ..Default::default()
        };
        let hits = s.search(&unit(&[1.0, 0.0]), 5, f32::MIN, &f, EF_SEARCH, 0);
        assert_eq!(hits.iter().map(|h| h.0).collect::<Vec<_>>(), vec![2]);
        assert!(s.remove("ticket\x1f\x1fa"));
        assert!(!s.remove("ticket\x1f\x1fa"));
        assert_eq!(s.count(DocKind::Ticket), 0);
        assert!(s
            .search(&unit(&[1.0, 0.0]), 5, f32::MIN, &f, EF_SEARCH, 0)
            .is_empty());
    }
}
