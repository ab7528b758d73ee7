//! Hybrid fusion: one score per candidate from what the two retrievers said
//! about it (its BM25 score and rank, its vector rank, its cosine).
//!
//! Reciprocal-rank fusion sees only ranks, so a first hit that one retriever
//! finds far ahead of everything else counts no more than a narrow one, and a
//! document both retrievers put second or third overtakes it. Z-score fusion
//! (the default) keeps that margin: each retriever's scores are standardised
//! over its own candidates (how many standard deviations above this query's
//! typical candidate), and the two are mixed with a weight. Measured in
//! docs/EVAL.md (issue 16).

use crate::doc::{Fusion, SearchMode};
use crate::search::HYBRID_DEPTH;

/// BM25's weight in the default z-score fusion, chosen on validation halves of
/// LCQMC, BQ, BANKING77 and CLINC150 (docs/EVAL.md, issue 16).
pub const DEFAULT_ZSCORE_BM25_WEIGHT: f32 = 0.4;

/// One retriever's say about a candidate: its score and 1-based rank.
pub(crate) type Ranked = Option<(f32, usize)>;

/// How one retriever's scores spread over a query's candidates.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Spread {
    mean: f64,
    sd: f64,
    /// The z-score of a candidate this retriever did not return: its lowest.
    floor: f64,
}

impl Spread {
    /// Mean and standard deviation of the scores ranked within
    /// [`HYBRID_DEPTH`] (so they do not drift with `k`), the floor over all.
    /// With fewer than two scores every z-score is 0.
    fn of(scores: impl Iterator<Item = (f32, usize)>) -> Spread {
        let (mut n, mut sum, mut sum_sq) = (0usize, 0f64, 0f64);
        let mut lowest = f64::INFINITY;
        for (s, rank) in scores {
            let s = f64::from(s);
            lowest = lowest.min(s);
            if rank <= HYBRID_DEPTH {
                n += 1;
                sum += s;
                sum_sq += s * s;
            }
        }
        if n < 2 {
            return Spread {
                mean: if lowest.is_finite() { lowest } else { 0.0 },
                sd: f64::INFINITY,
                floor: 0.0,
            };
        }
        let mean = sum / n as f64;
        let var = (sum_sq / n as f64 - mean * mean).max(0.0);
        let sd = if var > 0.0 { var.sqrt() } else { 1.0 };
        Spread {
            mean,
            sd,
            floor: (lowest - mean) / sd,
        }
    }

    fn z(&self, r: Ranked) -> f64 {
        match r {
            Some((s, _)) if self.sd.is_finite() => (f64::from(s) - self.mean) / self.sd,
            Some(_) => 0.0,
            None => self.floor,
        }
    }
}

/// Scores candidates for one search: built once over all of them (score-aware
/// fusion needs each retriever's spread), then asked per candidate.
#[derive(Debug)]
pub(crate) struct Fuser {
    mode: SearchMode,
    fusion: Fusion,
    max_bm25: f32,
    bm25: Spread,
    vector: Spread,
}

impl Fuser {
    /// A fuser for `mode` and `fusion` over the candidates' `(bm25, vector)` evidence.
    pub(crate) fn new(
        mode: SearchMode,
        fusion: Fusion,
        evidence: impl Iterator<Item = (Ranked, Ranked)> + Clone,
    ) -> Fuser {
        let max_bm25 = evidence
            .clone()
            .filter_map(|(b, _)| b.map(|b| b.0))
            .fold(0.0f32, f32::max);
        let (bm25, vector) = match (mode, fusion) {
            (SearchMode::Hybrid, Fusion::Zscore { .. }) => (
                Spread::of(evidence.clone().filter_map(|(b, _)| b)),
                Spread::of(evidence.filter_map(|(_, v)| v)),
            ),
            _ => {
                let none = Spread::of(std::iter::empty());
                (none, none)
            }
        };
        Fuser {
            mode,
            fusion,
            max_bm25,
            bm25,
            vector,
        }
    }

    /// The score of one candidate: its BM25 evidence, its vector evidence and
    /// its cosine (known for every hybrid candidate, ranked by vectors or not).
    pub(crate) fn score(&self, bm25: Ranked, vector: Ranked, cosine: Option<f32>) -> f32 {
        match (self.mode, self.fusion) {
            (SearchMode::Bm25, _) => bm25.map_or(0.0, |b| b.0),
            (SearchMode::Vector, _) => vector.map_or(0.0, |v| v.0),
            (SearchMode::Hybrid, Fusion::Rrf { k }) => {
                let rr = |r: Ranked| r.map_or(0.0, |(_, rank)| 1.0 / (k + rank as f32));
                rr(bm25) + rr(vector)
            }
            (SearchMode::Hybrid, Fusion::Weighted { bm25_weight: w }) => {
                let b = match (bm25, self.max_bm25 > 0.0) {
                    (Some((s, _)), true) => s / self.max_bm25,
                    _ => 0.0,
                };
                w * b + (1.0 - w) * cosine.unwrap_or(0.0)
            }
            (SearchMode::Hybrid, Fusion::Zscore { bm25_weight: w }) => {
                let w = f64::from(w);
                (w * self.bm25.z(bm25) + (1.0 - w) * self.vector.z(vector)) as f32
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One candidate: (id, BM25 score, vector cosine), each `None` when that
    /// retriever did not return it; ranks follow from the scores.
    type Row = (&'static str, Option<f32>, Option<f32>);

    /// The candidates' ids, best first, under `fusion` (ties by id).
    fn ranking(fusion: Fusion, rows: &[Row]) -> Vec<&'static str> {
        let rank = |pick: fn(&Row) -> Option<f32>, id: &str| -> Ranked {
            let own = rows.iter().find(|r| r.0 == id).and_then(pick)?;
            let better = rows.iter().filter_map(pick).filter(|s| *s > own).count();
            Some((own, better + 1))
        };
        let evidence: Vec<(Ranked, Ranked)> = rows
            .iter()
            .map(|r| (rank(|r| r.1, r.0), rank(|r| r.2, r.0)))
            .collect();
        let fuser = Fuser::new(SearchMode::Hybrid, fusion, evidence.iter().copied());
        let mut scored: Vec<(&str, f32)> = rows
            .iter()
            .zip(&evidence)
            .map(|(r, (b, v))| (r.0, fuser.score(*b, *v, r.2)))
            .collect();
        scored.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(b.0)));
        scored.into_iter().map(|(id, _)| id).collect()
    }

    const RRF: Fusion = Fusion::Rrf { k: 60.0 };
    const Z: Fusion = Fusion::Zscore {
        bm25_weight: DEFAULT_ZSCORE_BM25_WEIGHT,
    };

    /// BM25 finds `sharp` far ahead of its other candidates; the vectors rank
    /// it fourth among near-equal cosines, and put `both` second in each list.
    fn sharp_bm25_hit() -> Vec<Row> {
        vec![
            ("sharp", Some(30.0), Some(0.850)),
            ("both", Some(9.0), Some(0.862)),
            ("b3", Some(8.5), None),
            ("b4", Some(8.0), None),
            ("b5", Some(7.5), Some(0.855)),
            ("v1", None, Some(0.865)),
            ("v5", None, Some(0.845)),
            ("v6", None, Some(0.840)),
        ]
    }

    #[test]
    fn zscore_keeps_a_sharp_first_hit_that_rrf_loses() {
        let rows = sharp_bm25_hit();
        assert_eq!(ranking(RRF, &rows)[0], "both");
        assert_eq!(ranking(Z, &rows)[0], "sharp");
        // The same from the vector side: a cosine far above the rest wins over
        // a document BM25 and the vectors both rank second.
        let rows: Vec<Row> = vec![
            ("sharp", Some(5.0), Some(0.95)),
            ("both", Some(9.8), Some(0.81)),
            ("b1", Some(10.0), None),
            ("b4", Some(9.6), Some(0.79)),
            ("v1", None, Some(0.80)),
            ("v2", None, Some(0.80)),
            ("v3", None, Some(0.79)),
        ];
        assert_eq!(ranking(RRF, &rows)[0], "both");
        assert_eq!(ranking(Z, &rows)[0], "sharp");
    }

    #[test]
    fn agreement_still_wins_when_no_hit_is_sharp() {
        // Flat scores in both lists: the document both retrievers rank first stays first,
        // and one both rank second beats those only one retriever found.
        let rows: Vec<Row> = vec![
            ("top", Some(10.0), Some(0.90)),
            ("second", Some(9.9), Some(0.89)),
            ("b_only", Some(9.95), None),
            ("v_only", None, Some(0.895)),
            ("b4", Some(9.7), Some(0.85)),
            ("v5", None, Some(0.84)),
        ];
        assert_eq!(&ranking(Z, &rows)[..2], ["top", "second"]);
        assert_eq!(&ranking(RRF, &rows)[..2], ["top", "second"]);
    }

    #[test]
    fn every_candidate_keeps_a_place_whichever_retriever_found_it() {
        // Recall@k: fusion re-orders but never drops a candidate, and the first
        // hit of each retriever stays within the top few.
        let rows = sharp_bm25_hit();
        let z = ranking(Z, &rows);
        assert_eq!(z.len(), rows.len());
        let pos = |id| z.iter().position(|x| *x == id).unwrap();
        assert!(pos("v1") < 3, "{z:?}");
        assert!(pos("sharp") < 3, "{z:?}");
    }

    #[test]
    fn one_retriever_alone_ranks_as_it_does() {
        // No BM25 match at all: the vectors' order.
        let rows: Vec<Row> = vec![
            ("a", None, Some(0.7)),
            ("b", None, Some(0.9)),
            ("c", None, Some(0.8)),
        ];
        assert_eq!(ranking(Z, &rows), ["b", "c", "a"]);
        // A single BM25 candidate and a single vector candidate: no spread, no crash.
        let rows: Vec<Row> = vec![("a", Some(3.0), None), ("b", None, Some(0.5))];
        assert_eq!(ranking(Z, &rows).len(), 2);
    }

    #[test]
    fn spread_statistics_ignore_candidates_beyond_the_fusion_depth() {
        let near: Vec<(f32, usize)> = (1..=HYBRID_DEPTH).map(|r| (100.0 - r as f32, r)).collect();
        let mut deep = near.clone();
        deep.extend((HYBRID_DEPTH + 1..=3 * HYBRID_DEPTH).map(|r| (1.0, r)));
        let (a, b) = (Spread::of(near.into_iter()), Spread::of(deep.into_iter()));
        assert_eq!((a.mean, a.sd), (b.mean, b.sd));
        // the floor is the lowest score returned, whatever its rank
        assert!(b.floor < a.floor);
    }
}
