//! The FAQ bank that deflection matches chat messages against.
//!
//! Every article contributes one entry per phrasing (its question and each
//! alternative question), embedded as a *query* so message and phrasing are
//! compared like with like. Candidates come from two retrievers over the
//! entries: exact vector similarity and an IDF-weighted unit-overlap score
//! (a BM25-like lexical match that works on Chinese characters and English
//! words alike); their union goes to the verifier.

use std::collections::{HashMap, HashSet};

use indexer::Article;

use crate::error::{Error, Result};
use crate::model::knn::VectorSet;
use crate::model::textsim::{Idf, Units};

/// One phrasing of an article.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Slot of the article it belongs to.
    pub slot: usize,
    /// The phrasing.
    pub text: String,
    /// Its units.
    pub units: Units,
    /// Whether it was learned from chats (see [`crate::store::learned`]) rather than
    /// written in the article.
    pub learned: bool,
    alive: bool,
}

/// A candidate phrasing for a message, with its two retrieval scores.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    /// Entry index.
    pub entry: usize,
    /// Slot of the entry's article.
    pub slot: usize,
    /// Cosine similarity of message and phrasing embeddings.
    pub cos: f32,
    /// IDF-weighted unit-overlap cosine.
    pub lex: f32,
}

/// Articles and their embedded phrasings, searchable by vector and by units.
#[derive(Debug, Clone)]
pub struct FaqBank {
    articles: Vec<Option<Article>>,
    /// Live entries per slot.
    counts: Vec<usize>,
    slot_of: HashMap<(String, String), usize>,
    entries: Vec<Entry>,
    vectors: VectorSet,
    idf: Idf,
    postings: HashMap<String, Vec<usize>>,
}

impl FaqBank {
    /// An empty bank for `dim`-dimensional vectors.
    pub fn new(dim: usize) -> FaqBank {
        FaqBank {
            articles: Vec::new(),
            counts: Vec::new(),
            slot_of: HashMap::new(),
            entries: Vec::new(),
            vectors: VectorSet::new(dim),
            idf: Idf::default(),
            postings: HashMap::new(),
        }
    }

    /// The phrasings of an article that get an entry: question then alternatives,
    /// trimmed, non-empty, without repeats.
    pub fn phrasings(article: &Article) -> Vec<&str> {
        let mut seen = HashSet::new();
        std::iter::once(article.question.as_str())
            .chain(article.alt_questions.iter().map(String::as_str))
            .map(str::trim)
            .filter(|t| !t.is_empty() && seen.insert(*t))
            .collect()
    }

    /// The texts that get an entry when `article` is stored with the active
    /// `learned` phrasings: [`FaqBank::phrasings`], then the learned ones not
    /// among them (trimmed, non-empty, without repeats).
    pub fn texts<'a>(article: &'a Article, learned: &'a [String]) -> Vec<&'a str> {
        let mut texts = Self::phrasings(article);
        for t in learned.iter().map(|t| t.trim()) {
            if !t.is_empty() && !texts.contains(&t) {
                texts.push(t);
            }
        }
        texts
    }

    /// The stored vector of a phrasing of an existing article, to avoid re-embedding it.
    pub fn known_vector(&self, tenant: &str, id: &str, text: &str) -> Option<Vec<f32>> {
        let slot = *self.slot_of.get(&(tenant.to_string(), id.to_string()))?;
        self.entries
            .iter()
            .enumerate()
            .find(|(_, e)| e.alive && e.slot == slot && e.text == text)
            .and_then(|(i, _)| self.vectors.get(i).map(<[f32]>::to_vec))
    }

    /// Adds or replaces an article; `vectors` are the embeddings of
    /// [`FaqBank::phrasings`], in order.
    pub fn upsert(&mut self, article: Article, vectors: &[Vec<f32>]) -> Result<()> {
        self.upsert_with_learned(article, &[], vectors)
    }

    /// Adds or replaces an article with its active learned phrasings;
    /// `vectors` are the embeddings of [`FaqBank::texts`], in order.
    pub fn upsert_with_learned(
        &mut self,
        article: Article,
        learned: &[String],
        vectors: &[Vec<f32>],
    ) -> Result<()> {
        let own = Self::phrasings(&article).len();
        let texts: Vec<String> = Self::texts(&article, learned)
            .into_iter()
            .map(str::to_string)
            .collect();
        if texts.len() != vectors.len() {
            return Err(Error::InvalidInput(format!(
                "article {} has {} phrasings but {} vectors",
                article.id,
                texts.len(),
                vectors.len()
            )));
        }
        if let Some(v) = vectors.iter().find(|v| v.len() != self.vectors.dim()) {
            return Err(Error::InvalidInput(format!(
                "vector has {} dimensions, expected {}",
                v.len(),
                self.vectors.dim()
            )));
        }
        self.remove(&article.tenant, &article.id);
        let slot = self.articles.len();
        self.slot_of
            .insert((article.tenant.clone(), article.id.clone()), slot);
        self.articles.push(Some(article));
        self.counts.push(texts.len());
        for (n, (text, v)) in texts.into_iter().zip(vectors).enumerate() {
            let units = Units::new(&text);
            self.idf.add(&units);
            let idx = self.vectors.push(v)?;
            for u in &units.set {
                self.postings.entry(u.clone()).or_default().push(idx);
            }
            self.entries.push(Entry {
                slot,
                text,
                units,
                learned: n >= own,
                alive: true,
            });
        }
        Ok(())
    }

    /// Removes an article; returns whether it existed.
    pub fn remove(&mut self, tenant: &str, id: &str) -> bool {
        let Some(slot) = self.slot_of.remove(&(tenant.to_string(), id.to_string())) else {
            return false;
        };
        self.articles[slot] = None;
        self.counts[slot] = 0;
        for e in self
            .entries
            .iter_mut()
            .filter(|e| e.slot == slot && e.alive)
        {
            e.alive = false;
            self.idf.remove(&e.units);
        }
        true
    }

    /// The article in `slot`, if it is still live.
    pub fn article(&self, slot: usize) -> Option<&Article> {
        self.articles.get(slot).and_then(Option::as_ref)
    }

    /// The live article with this tenant and id.
    pub fn get(&self, tenant: &str, id: &str) -> Option<&Article> {
        let slot = *self.slot_of.get(&(tenant.to_string(), id.to_string()))?;
        self.article(slot)
    }

    /// Number of live articles.
    pub fn len(&self) -> usize {
        self.slot_of.len()
    }

    /// Number of live articles of one tenant (`None`: of all).
    pub fn count(&self, tenant: Option<&str>) -> usize {
        match tenant {
            None => self.len(),
            Some(t) => self.slot_of.keys().filter(|(x, _)| x == t).count(),
        }
    }

    /// The live phrasings of `tenant`'s articles: index, entry and vector.
    pub fn live_entries<'a>(
        &'a self,
        tenant: &'a str,
    ) -> impl Iterator<Item = (usize, &'a Entry, &'a [f32])> + 'a {
        self.entries.iter().enumerate().filter_map(move |(i, e)| {
            let own = self
                .article(e.slot)
                .is_some_and(|a| a.tenant.as_str() == tenant);
            if !(e.alive && own) {
                return None;
            }
            self.vectors.get(i).map(|v| (i, e, v))
        })
    }

    /// Entry `i`.
    pub fn entry(&self, i: usize) -> Option<&Entry> {
        self.entries.get(i)
    }

    /// How many live phrasings (its own and the learned ones) the article in `slot` has.
    pub fn phrasing_count(&self, slot: usize) -> usize {
        self.counts.get(slot).copied().unwrap_or(0)
    }

    /// The unit statistics of the live phrasings.
    pub fn idf(&self) -> &Idf {
        &self.idf
    }

    /// IDF-weighted cosine between two unit sets.
    pub fn lexical(&self, a: &Units, b: &Units) -> f32 {
        let norm = |u: &Units| u.set.iter().map(|t| self.idf.idf(t).powi(2)).sum::<f32>();
        let shared: f32 = a
            .set
            .intersection(&b.set)
            .map(|t| self.idf.idf(t).powi(2))
            .sum();
        let denom = (norm(a) * norm(b)).sqrt();
        if denom > 0.0 {
            shared / denom
        } else {
            0.0
        }
    }

    /// The union of the `k` best phrasings by vector and the `k` best by units,
    /// among the live articles of `tenant`.
    pub fn candidates(
        &self,
        units: &Units,
        qvec: &[f32],
        tenant: &str,
        k: usize,
    ) -> Result<Vec<Candidate>> {
        let eligible = |i: usize| {
            let e = &self.entries[i];
            e.alive
                && self
                    .article(e.slot)
                    .is_some_and(|a| a.tenant.as_str() == tenant)
        };
        let by_vector = self.vectors.top_k(qvec, k, eligible)?;
        let mut shared: HashMap<usize, f32> = HashMap::new();
        for u in &units.set {
            let w = self.idf.idf(u).powi(2);
            for &i in self.postings.get(u).map(Vec::as_slice).unwrap_or(&[]) {
                *shared.entry(i).or_default() += w;
            }
        }
        let qnorm = units
            .set
            .iter()
            .map(|t| self.idf.idf(t).powi(2))
            .sum::<f32>();
        let mut by_units: Vec<(usize, f32)> = shared
            .into_iter()
            .filter(|(i, _)| eligible(*i))
            .map(|(i, s)| {
                let enorm: f32 = self.entries[i]
                    .units
                    .set
                    .iter()
                    .map(|t| self.idf.idf(t).powi(2))
                    .sum();
                (i, s / (qnorm * enorm).sqrt().max(1e-9))
            })
            .collect();
        by_units.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        by_units.truncate(k);
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for i in by_vector
            .iter()
            .map(|c| c.0)
            .chain(by_units.iter().map(|c| c.0))
        {
            if !seen.insert(i) {
                continue;
            }
            let e = &self.entries[i];
            let cos = self
                .vectors
                .get(i)
                .map(|v| v.iter().zip(qvec).map(|(a, b)| a * b).sum())
                .unwrap_or(0.0);
            out.push(Candidate {
                entry: i,
                slot: e.slot,
                cos,
                lex: self.lexical(units, &e.units),
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hashembed::HashEmbedder;

    fn article(id: &str, q: &str, alts: &[&str]) -> Article {
        Article {
            id: id.into(),
            question: q.into(),
            answer: format!("answer {id}"),
            alt_questions: alts.iter().map(|s| s.to_string()).collect(),
            ..Article::default()
        }
    }

    fn add(bank: &mut FaqBank, e: &HashEmbedder, a: Article) {
        let vs: Vec<Vec<f32>> = FaqBank::phrasings(&a).iter().map(|t| e.vector(t)).collect();
        bank.upsert(a, &vs).unwrap();
    }

    #[test]
    fn finds_articles_by_any_phrasing_and_forgets_removed_ones() {
        let e = HashEmbedder::new(128);
        let mut bank = FaqBank::new(128);
        add(
            &mut bank,
            &e,
            article("a", "空调不制冷怎么办", &["AC not cooling"]),
        );
        add(&mut bank, &e, article("b", "洗衣机漏水", &[]));
        assert_eq!(bank.len(), 2);
        let q = "my AC is not cooling";
        let c = bank
            .candidates(&Units::new(q), &e.vector(q), "", 5)
            .unwrap();
        let best = c.iter().max_by(|x, y| x.lex.total_cmp(&y.lex)).unwrap();
        assert_eq!(bank.article(best.slot).unwrap().id, "a");
        assert!(bank.known_vector("", "a", "AC not cooling").is_some());
        assert!(bank.remove("", "a"));
        assert!(!bank.remove("", "a"));
        let c = bank
            .candidates(&Units::new(q), &e.vector(q), "", 5)
            .unwrap();
        assert!(c.iter().all(|x| bank.article(x.slot).unwrap().id == "b"));
        // Other tenants' articles are never candidates.
        let c = bank
            .candidates(&Units::new(q), &e.vector(q), "other", 5)
            .unwrap();
        assert!(c.is_empty());
    }

    #[test]
    fn rejects_wrong_vector_count() {
        let mut bank = FaqBank::new(4);
        let err = bank.upsert(article("a", "q", &["r"]), &[vec![1.0, 0.0, 0.0, 0.0]]);
        assert!(err.is_err());
    }
}
