//! Search: BM25 and vector retrieval with the filters applied inside each
//! retriever, fusion (see [`crate::fusion`]), and an explanation for every hit.

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use models::EmbedKind;
use tantivy::collector::TopDocs;
use tantivy::query::{BooleanQuery, BoostQuery, Occur, Query, TermQuery};
use tantivy::schema::IndexRecordOption;
use tantivy::{DocAddress, Searcher, Term};

use crate::doc::{Explanation, Fusion, Hit, SearchMode, SearchRequest};
use crate::fusion::Fuser;
use crate::index::Index;
use crate::schema::{text_fields, CompiledFilters};
use crate::text::{self, terms};
use crate::vectors::similarity;
use crate::Error;

/// Largest `k` a search accepts.
pub const MAX_K: usize = 1000;
/// Hybrid search fuses at least this many candidates from each retriever.
pub(crate) const HYBRID_DEPTH: usize = 50;
/// Longer queries (e.g. a whole ticket) keep only their first distinct terms.
const MAX_QUERY_TERMS: usize = 128;

/// One candidate while fusing.
#[derive(Default)]
struct Candidate {
    bm25: Option<(f32, usize)>,
    addr: Option<DocAddress>,
    vector: Option<(f32, usize)>,
    /// Cosine to the query even when the vector retriever did not rank it.
    cosine: Option<f32>,
}

impl Index {
    /// Runs a search, embedding the query text (as a query) when the mode
    /// needs vectors. An empty query text gives no hits.
    pub fn search(&self, req: &SearchRequest) -> Result<Vec<Hit>, Error> {
        validate(req)?;
        if req.text.trim().is_empty() || req.k == 0 {
            return Ok(Vec::new());
        }
        let query_vec = match req.mode {
            SearchMode::Bm25 => None,
            SearchMode::Vector | SearchMode::Hybrid => self
                .embed(&[req.text.as_str()], EmbedKind::Query)?
                .into_iter()
                .next(),
        };
        self.run(req, query_vec)
    }

    /// Runs a search with a query vector the caller already computed (with
    /// [`EmbedKind::Query`] and this index's model). The text still drives
    /// BM25 and matched terms; it may be empty for a pure vector search.
    pub fn search_with_vector(
        &self,
        req: &SearchRequest,
        query_vec: &[f32],
    ) -> Result<Vec<Hit>, Error> {
        validate(req)?;
        let mut v = query_vec.to_vec();
        self.check_vector(&mut v)?;
        self.run(req, Some(v))
    }

    pub(crate) fn run(
        &self,
        req: &SearchRequest,
        query_vec: Option<Vec<f32>>,
    ) -> Result<Vec<Hit>, Error> {
        let filters = CompiledFilters::compile(&req.filters)?;
        let k = req.k;
        if k == 0 {
            return Ok(Vec::new());
        }
        let depth = match req.mode {
            SearchMode::Hybrid => (3 * k).max(HYBRID_DEPTH),
            _ => k,
        };
        let mut analyzer = text::analyzer();
        let mut q_terms = terms(&mut analyzer, &req.text);
        q_terms.truncate(MAX_QUERY_TERMS);
        let searcher = self.reader.searcher();

        let bm25 = if req.mode != SearchMode::Vector && !q_terms.is_empty() {
            self.bm25(&searcher, &q_terms, &filters, depth)?
        } else {
            Vec::new()
        };
        let mut cands: HashMap<u64, Candidate> = HashMap::new();
        for (rank, (vid, score, addr)) in bm25.into_iter().enumerate() {
            let c = cands.entry(vid).or_default();
            c.bm25 = Some((score, rank + 1));
            c.addr = Some(addr);
        }
        {
            let state = self.read_state();
            if let (Some(q), true) = (&query_vec, req.mode != SearchMode::Bm25) {
                for (rank, (vid, sim)) in state
                    .search(
                        q,
                        depth,
                        &filters,
                        self.ef_search.load(Ordering::Relaxed),
                        self.exact_max.load(Ordering::Relaxed),
                    )
                    .into_iter()
                    .enumerate()
                {
                    let c = cands.entry(vid).or_default();
                    c.vector = Some((sim, rank + 1));
                    c.cosine = Some(sim);
                }
                if req.mode == SearchMode::Hybrid {
                    for (vid, c) in cands.iter_mut().filter(|(_, c)| c.cosine.is_none()) {
                        c.cosine = state.slot(*vid).map(|s| similarity(q, &s.vector));
                    }
                }
            }
        }

        let fuser = Fuser::new(
            req.mode,
            req.fusion,
            cands.values().map(|c| (c.bm25, c.vector)),
        );
        let mut scored: Vec<(u64, f32, Candidate)> = cands
            .into_iter()
            .map(|(vid, c)| (vid, fuser.score(c.bm25, c.vector, c.cosine), c))
            .collect();
        scored.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        scored.truncate(k);

        let mut hits = Vec::with_capacity(scored.len());
        for (vid, score, c) in scored {
            let addr = match c.addr {
                Some(a) => Some(a),
                None => {
                    let key = self.read_state().slot(vid).map(|s| s.meta.key());
                    match key {
                        Some(key) => self.address(&searcher, &key)?,
                        None => None,
                    }
                }
            };
            // A document deleted between the two retrievers' snapshots is skipped.
            let Some(addr) = addr else { continue };
            let doc = self.load_doc(&searcher, addr)?;
            let doc_terms = terms(&mut analyzer, &text::searchable_text(&doc));
            let matched_terms = text::without_covered_chars(
                q_terms
                    .iter()
                    .filter(|t| doc_terms.contains(t))
                    .cloned()
                    .collect(),
            );
            let (id, kind) = match &doc {
                crate::Document::Ticket(t) => (t.id.clone(), crate::DocKind::Ticket),
                crate::Document::Article(a) => (a.id.clone(), crate::DocKind::Article),
            };
            hits.push(Hit {
                id,
                kind,
                doc,
                score,
                explanation: Explanation {
                    bm25_score: c.bm25.map(|b| b.0),
                    bm25_rank: c.bm25.map(|b| b.1),
                    vector_similarity: c.cosine,
                    vector_rank: c.vector.map(|v| v.1),
                    fused_score: score,
                    matched_terms,
                },
            });
        }
        Ok(hits)
    }

    /// Top `depth` BM25 matches of any query term, filters applied as
    /// non-scoring required clauses. Returns (vector id, score, address).
    fn bm25(
        &self,
        searcher: &Searcher,
        q_terms: &[String],
        filters: &CompiledFilters,
        depth: usize,
    ) -> Result<Vec<(u64, f32, DocAddress)>, Error> {
        let f = &self.fields;
        let mut should: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        for t in q_terms {
            for (field, boost) in text_fields(f) {
                let tq = TermQuery::new(
                    Term::from_field_text(field, t),
                    IndexRecordOption::WithFreqs,
                );
                should.push((
                    Occur::Should,
                    Box::new(BoostQuery::new(Box::new(tq), boost)),
                ));
            }
        }
        let mut clauses: Vec<(Occur, Box<dyn Query>)> =
            vec![(Occur::Must, Box::new(BooleanQuery::new(should)))];
        clauses.extend(filters.clauses(f));
        let top = searcher.search(
            &BooleanQuery::new(clauses),
            &TopDocs::with_limit(depth).order_by_score(),
        )?;
        let mut columns = HashMap::new();
        let mut out = Vec::with_capacity(top.len());
        for (score, addr) in top {
            let col = match columns.entry(addr.segment_ord) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(e) => e.insert(
                    searcher
                        .segment_reader(addr.segment_ord)
                        .fast_fields()
                        .u64("vid")?,
                ),
            };
            if let Some(vid) = col.first(addr.doc_id) {
                out.push((vid, score, addr));
            }
        }
        Ok(out)
    }
}

/// Checks the parts of a request that do not depend on the index.
fn validate(req: &SearchRequest) -> Result<(), Error> {
    if req.k > MAX_K {
        return Err(Error::InvalidRequest(format!(
            "k = {} exceeds the maximum of {MAX_K}",
            req.k
        )));
    }
    match req.fusion {
        Fusion::Rrf { k } if !(k.is_finite() && k >= 0.0) => Err(Error::InvalidRequest(format!(
            "RRF constant must be a finite number >= 0, got {k}"
        ))),
        Fusion::Weighted { bm25_weight: w } | Fusion::Zscore { bm25_weight: w }
            if !(0.0..=1.0).contains(&w) =>
        {
            Err(Error::InvalidRequest(format!(
                "bm25_weight must be between 0 and 1, got {w}"
            )))
        }
        _ => Ok(()),
    }
}
