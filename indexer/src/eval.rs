//! Retrieval evaluation: build an index from a corpus, run labelled queries
//! in each search mode, report recall@{1,5,10} and MRR@10.
//!
//! `recall@k` is the fraction of queries with at least one relevant document
//! in the top k (success@k): for intent-style sets where every same-intent
//! utterance is relevant, that is the question that matters.

use std::path::Path;
use std::sync::Arc;

use models::{EmbedKind, TextEmbedder};
use serde::{Deserialize, Serialize};

use crate::doc::{Article, Document, SearchMode, SearchRequest};
use crate::index::{Index, EMBED_BATCH};
use crate::Error;

/// Documents per upsert while building the evaluation index.
const BUILD_CHUNK: usize = 1024;

/// Scores of one search mode. Serialises as
/// `{"mode","recall@1","recall@5","recall@10","mrr@10","n"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RetrievalReport {
    /// The search mode evaluated.
    pub mode: SearchMode,
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
        recall_at_1: frac(1),
        recall_at_5: frac(5),
        recall_at_10: frac(10),
        mrr_at_10: mrr,
        n,
    }
}

/// Indexes `corpus` (`(id, text)`, stored as articles whose question is the
/// text) in `dir` (an empty, temporary directory), then runs `queries`
/// (`(text, relevant ids)`; queries without relevant ids are skipped) in each
/// of `modes` with k = 10. Query embeddings are computed once and shared by
/// the vector and hybrid modes.
pub fn evaluate(
    corpus: &[(String, String)],
    queries: &[(String, Vec<String>)],
    modes: &[SearchMode],
    embedder: Arc<dyn TextEmbedder>,
    dir: &Path,
) -> Result<Vec<RetrievalReport>, Error> {
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
    let queries: Vec<&(String, Vec<String>)> =
        queries.iter().filter(|(_, rel)| !rel.is_empty()).collect();
    let needs_vectors = modes.iter().any(|m| *m != SearchMode::Bm25);
    let mut vectors: Vec<Vec<f32>> = Vec::new();
    if needs_vectors {
        for batch in queries.chunks(EMBED_BATCH) {
            let texts: Vec<&str> = batch.iter().map(|(t, _)| t.as_str()).collect();
            vectors.extend(index.embed(&texts, EmbedKind::Query)?);
        }
    }
    let mut out = Vec::new();
    for &mode in modes {
        let mut ranks = Vec::with_capacity(queries.len());
        for (i, (text, relevant)) in queries.iter().enumerate() {
            let req = SearchRequest {
                text: text.clone(),
                mode,
                k: 10,
                ..Default::default()
            };
            let hits = index.run(&req, vectors.get(i).cloned())?;
            ranks.push(
                hits.iter()
                    .position(|h| relevant.contains(&h.id))
                    .map(|p| p + 1),
            );
        }
        out.push(report(mode, &ranks));
    }
    Ok(out)
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
    }
}
