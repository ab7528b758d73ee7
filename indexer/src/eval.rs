//! Retrieval evaluation: build an index from a corpus, run labelled queries
//! in each search mode (and hybrid with each fusion asked for), report
//! recall@{1,5,10} and MRR@10; or write the candidates each query's fusion
//! sees, to compare fusion rules offline (`bench/fusion_sweep.py`).
//!
//! `recall@k` is the fraction of queries with at least one relevant document
//! in the top k (success@k): for intent-style sets where every same-intent
//! utterance is relevant, that is the question that matters.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use models::{EmbedKind, TextEmbedder};
use serde::{Deserialize, Serialize};

use crate::doc::{Article, Document, Fusion, SearchMode, SearchRequest};
use crate::index::{Index, EMBED_BATCH};
use crate::search::HYBRID_DEPTH;
use crate::Error;

/// Documents per upsert while building the evaluation index.
const BUILD_CHUNK: usize = 1024;

/// Scores of one search mode. Serialises as
/// `{"mode","recall@1","recall@5","recall@10","mrr@10","n"}`, plus `"fusion"`
/// for hybrid search.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RetrievalReport {
    /// The search mode evaluated.
    pub mode: SearchMode,
    /// The fusion, for hybrid search.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fusion: Option<Fusion>,
    /// Fraction of queries with a relevant document at rank 1.
    #[serde(rename = "recall@1")]
    pub recall_at_1: f64,
    /// Fraction of queries with a relevant document in the top 5.
    #[serde(rename = "recall@5")]
    pub recall_at_5: f64,
    /// Fraction of queries with a relevant document in the top 10.
    #[serde(rename = "recall@10")]
    pub recall_at_10: f64,
    /// Mean reciprocal rank of the first relevant document (0 beyond rank 10).
    #[serde(rename = "mrr@10")]
    pub mrr_at_10: f64,
    /// Number of queries evaluated (those with at least one relevant id).
    pub n: usize,
}

/// Accumulates first-relevant ranks into a report.
fn report(mode: SearchMode, ranks: &[Option<usize>]) -> RetrievalReport {
    let n = ranks.len();
    let frac = |k: usize| {
        if n == 0 {
            0.0
        } else {
            ranks.iter().filter(|r| r.is_some_and(|r| r <= k)).count() as f64 / n as f64
        }
    };
    let mrr = if n == 0 {
        0.0
    } else {
        ranks
            .iter()
            .map(|r| r.filter(|&r| r <= 10).map_or(0.0, |r| 1.0 / r as f64))
            .sum::<f64>()
            / n as f64
    };
    RetrievalReport {
        mode,
        fusion: None,
        recall_at_1: frac(1),
        recall_at_5: frac(5),
        recall_at_10: frac(10),
        mrr_at_10: mrr,
        n,
    }
}

/// A retrieval set ready to be measured: the corpus indexed (as articles
/// whose question is the text), the queries embedded once and shared by every
/// mode and fusion measured.
pub struct RetrievalSet {
    index: Index,
    /// `(text, relevant ids)`, only those with at least one relevant id.
    queries: Vec<(String, Vec<String>)>,
    /// Query vectors, parallel to `queries` (empty when not embedded).
    vectors: Vec<Vec<f32>>,
}

impl RetrievalSet {
    /// Indexes `corpus` (`(id, text)`) in `dir` (an empty, temporary
    /// directory) and embeds `queries` (`(text, relevant ids)`; queries
    /// without relevant ids are skipped) unless `embed_queries` is false.
    pub fn build(
        corpus: &[(String, String)],
        queries: &[(String, Vec<String>)],
        embedder: Arc<dyn TextEmbedder>,
        dir: &Path,
        embed_queries: bool,
    ) -> Result<RetrievalSet, Error> {
        let index = Index::open(dir, embedder)?;
        for chunk in corpus.chunks(BUILD_CHUNK) {
            let docs = chunk
                .iter()
                .map(|(id, text)| {
                    Document::Article(Article {
                        id: id.clone(),
                        question: text.clone(),
                        ..Default::default()
                    })
                })
                .collect();
            index.upsert(docs)?;
        }
        let queries: Vec<(String, Vec<String>)> = queries
            .iter()
            .filter(|(_, rel)| !rel.is_empty())
            .cloned()
            .collect();
        let mut vectors: Vec<Vec<f32>> = Vec::new();
        if embed_queries {
            for batch in queries.chunks(EMBED_BATCH) {
                let texts: Vec<&str> = batch.iter().map(|(t, _)| t.as_str()).collect();
                vectors.extend(index.embed(&texts, EmbedKind::Query)?);
            }
        }
        Ok(RetrievalSet {
            index,
            queries,
            vectors,
        })
    }

    /// Runs every query in `mode` (with `fusion` when hybrid) for 10 hits.
    pub fn report(&self, mode: SearchMode, fusion: Fusion) -> Result<RetrievalReport, Error> {
        let mut ranks = Vec::with_capacity(self.queries.len());
        for (i, (text, relevant)) in self.queries.iter().enumerate() {
            let req = SearchRequest {
                text: text.clone(),
                mode,
                k: 10,
                fusion,
                ..Default::default()
            };
            let hits = self.index.run(&req, self.vectors.get(i).cloned())?;
            ranks.push(
                hits.iter()
                    .position(|h| relevant.contains(&h.id))
                    .map(|p| p + 1),
            );
        }
        let mut r = report(mode, &ranks);
        r.fusion = (mode == SearchMode::Hybrid).then_some(fusion);
        Ok(r)
    }

    /// Writes, one JSON line per query, what hybrid search fuses for 10 hits:
    /// `{"text", "relevant", "bm25": [[id, score, cosine], ...], "vector": [[id, cosine], ...]}`,
    /// each list in its retriever's order ([`HYBRID_DEPTH`] deep), so fusion
    /// rules can be compared offline on exactly the candidates the index sees.
    /// Needs the query vectors. Written to `path` (created or replaced).
    pub fn write_candidates(&self, path: &Path) -> Result<(), Error> {
        let io = |source| Error::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut out = std::io::BufWriter::new(std::fs::File::create(path).map_err(io)?);
        for (i, (text, relevant)) in self.queries.iter().enumerate() {
            let vector = self.vectors.get(i).cloned();
            let run = |mode, fusion| {
                let req = SearchRequest {
                    text: text.clone(),
                    mode,
                    k: HYBRID_DEPTH,
                    fusion,
                    ..Default::default()
                };
                self.index.run(&req, vector.clone())
            };
            // Hybrid ordered by BM25 alone: the BM25 list, each with its cosine,
            // in BM25's own rank order (equal scores keep their retriever's order).
            let mut bm25: Vec<(usize, String, f32, Option<f32>)> =
                run(SearchMode::Hybrid, Fusion::Weighted { bm25_weight: 1.0 })?
                    .into_iter()
                    .filter_map(|h| {
                        let e = h.explanation;
                        Some((e.bm25_rank?, h.id, e.bm25_score?, e.vector_similarity))
                    })
                    .collect();
            bm25.sort_by_key(|b| b.0);
            let bm25: Vec<(String, f32, Option<f32>)> =
                bm25.into_iter().map(|(_, id, s, c)| (id, s, c)).collect();
            let vector: Vec<(String, Option<f32>)> = run(SearchMode::Vector, Fusion::default())?
                .into_iter()
                .map(|h| (h.id, h.explanation.vector_similarity))
                .collect();
            let line = serde_json::json!({
                "text": text,
                "relevant": relevant,
                "bm25": bm25,
                "vector": vector,
            });
            writeln!(out, "{line}").map_err(io)?;
        }
        out.flush().map_err(io)
    }
}

/// Builds a [`RetrievalSet`] and reports each of `modes` (hybrid with the
/// default fusion).
pub fn evaluate(
    corpus: &[(String, String)],
    queries: &[(String, Vec<String>)],
    modes: &[SearchMode],
    embedder: Arc<dyn TextEmbedder>,
    dir: &Path,
) -> Result<Vec<RetrievalReport>, Error> {
    let needs_vectors = modes.iter().any(|m| *m != SearchMode::Bm25);
    let set = RetrievalSet::build(corpus, queries, embedder, dir, needs_vectors)?;
    modes
        .iter()
        .map(|&mode| set.report(mode, Fusion::default()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_counts_first_relevant_ranks() {
        let r = report(SearchMode::Bm25, &[Some(1), Some(3), Some(7), None]);
        assert_eq!(r.n, 4);
        assert!((r.recall_at_1 - 0.25).abs() < 1e-12);
        assert!((r.recall_at_5 - 0.5).abs() < 1e-12);
        assert!((r.recall_at_10 - 0.75).abs() < 1e-12);
        let mrr = (1.0 + 1.0 / 3.0 + 1.0 / 7.0) / 4.0;
        assert!((r.mrr_at_10 - mrr).abs() < 1e-12);
    }

    #[test]
    fn report_serialises_with_the_agreed_keys() {
        let r = report(SearchMode::Hybrid, &[Some(2)]);
        let v = serde_json::to_value(&r).unwrap();
        let mut keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            ["mode", "mrr@10", "n", "recall@1", "recall@10", "recall@5"]
        );
        assert_eq!(v["mode"], "hybrid");
        assert_eq!(v["mrr@10"], 0.5);
        // a hybrid row names its fusion
        let r = RetrievalReport {
            fusion: Some(Fusion::Rrf { k: 60.0 }),
            ..r
        };
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["fusion"], serde_json::json!({"method": "rrf", "k": 60.0}));
    }
}
