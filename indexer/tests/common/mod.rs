//! Test embedders: deterministic stand-ins for the real model so the
//! indexer's tests run in milliseconds without model files.
#![allow(dead_code)] // each test binary uses a different subset

use std::sync::Arc;

use indexer::{Article, Index, Ticket};
use models::{EmbedKind, TextEmbedder};

fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn normalise(mut v: Vec<f32>) -> Vec<f32> {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if n == 0.0 {
        v[0] = 1.0;
        return v;
    }
    v.iter_mut().for_each(|x| *x /= n);
    v
}

/// Bag of hashed character unigrams and bigrams: texts sharing characters
/// get similar vectors, like a (very) poor sentence model.
pub struct NgramEmbedder {
    pub dim: usize,
    pub name: String,
}

impl NgramEmbedder {
    pub fn arc(name: &str, dim: usize) -> Arc<dyn TextEmbedder> {
        Arc::new(NgramEmbedder {
            dim,
            name: name.into(),
        })
    }
}

impl TextEmbedder for NgramEmbedder {
    fn embed(&self, texts: &[&str], _kind: EmbedKind) -> Result<Vec<Vec<f32>>, models::Error> {
        Ok(texts
            .iter()
            .map(|t| {
                let chars: Vec<char> = t
                    .to_lowercase()
                    .chars()
                    .filter(|c| c.is_alphanumeric())
                    .collect();
                let mut v = vec![0.0f32; self.dim];
                for (i, c) in chars.iter().enumerate() {
                    let mut buf = [0u8; 8];
                    let s = c.encode_utf8(&mut buf);
                    v[(fnv(s.as_bytes()) % self.dim as u64) as usize] += 1.0;
                    if let Some(d) = chars.get(i + 1) {
                        let bi: String = [*c, *d].iter().collect();
                        v[(fnv(bi.as_bytes()) % self.dim as u64) as usize] += 2.0;
                    }
                }
                normalise(v)
            })
            .collect())
    }
    fn dim(&self) -> usize {
        self.dim
    }
    fn name(&self) -> &str {
        &self.name
    }
}

/// Maps every text to a pseudo-random unit vector seeded by the text: for
/// testing the vector index against exact search.
pub struct RandomEmbedder {
    pub dim: usize,
}

impl RandomEmbedder {
    pub fn vector(&self, text: &str) -> Vec<f32> {
        let mut state = fnv(text.as_bytes()) | 1;
        let v = (0..self.dim)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5
            })
            .collect();
        normalise(v)
    }
}

impl TextEmbedder for RandomEmbedder {
    fn embed(&self, texts: &[&str], _kind: EmbedKind) -> Result<Vec<Vec<f32>>, models::Error> {
        Ok(texts.iter().map(|t| self.vector(t)).collect())
    }
    fn dim(&self) -> usize {
        self.dim
    }
    fn name(&self) -> &str {
        "random"
    }
}

/// An embedder that returns vectors of the wrong size.
pub struct BrokenEmbedder;

impl TextEmbedder for BrokenEmbedder {
    fn embed(&self, texts: &[&str], _kind: EmbedKind) -> Result<Vec<Vec<f32>>, models::Error> {
        Ok(texts.iter().map(|_| vec![1.0; 3]).collect())
    }
    fn dim(&self) -> usize {
        8
    }
    fn name(&self) -> &str {
        "broken"
    }
}

pub fn open(dir: &std::path::Path) -> Index {
    Index::open(dir, NgramEmbedder::arc("ngram-test", 64)).unwrap()
}

pub fn ticket(id: &str, title: &str, body: &str) -> Ticket {
    Ticket {
        id: id.into(),
        title: title.into(),
        body: body.into(),
        ..Default::default()
    }
}

pub fn article(id: &str, question: &str, answer: &str) -> Article {
    Article {
        id: id.into(),
        question: question.into(),
        answer: answer.into(),
        ..Default::default()
    }
}
