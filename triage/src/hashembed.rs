//! A model-free, deterministic embedder: hashed character units and bigrams.
//!
//! It captures lexical overlap only (no meaning), which is exactly what fast
//! tests need: near-identical texts get near-identical vectors, unrelated
//! texts get near-orthogonal ones, in microseconds and with no model file.

use models::{EmbedKind, Error as ModelError, TextEmbedder};

use crate::model::textsim::Units;

/// Feature-hashing embedder over a text's units (each CJK character, each
/// ASCII word or number) and their bigrams.
#[derive(Debug, Clone)]
pub struct HashEmbedder {
    dim: usize,
}

impl HashEmbedder {
    /// An embedder producing `dim`-dimensional unit vectors (`dim` ≥ 8).
    pub fn new(dim: usize) -> HashEmbedder {
        HashEmbedder { dim: dim.max(8) }
    }

    /// Embeds one text.
    pub fn vector(&self, text: &str) -> Vec<f32> {
        let units = Units::new(text);
        let mut v = vec![0f32; self.dim];
        let mut add = |feature: &str, weight: f32| {
            let h = fnv1a(feature.as_bytes());
            let sign = if h & 1 == 0 { 1.0 } else { -1.0 };
            v[(h >> 1) as usize % self.dim] += sign * weight;
        };
        for u in &units.units {
            add(u, 1.0);
        }
        for w in units.units.windows(2) {
            add(&format!("{}\u{1}{}", w[0], w[1]), 1.0);
        }
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        if norm == 0.0 {
            v[0] = 1.0;
        } else {
            v.iter_mut().for_each(|x| *x /= norm);
        }
        v
    }
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ *b as u64).wrapping_mul(0x100000001b3)
    })
}

impl TextEmbedder for HashEmbedder {
    fn embed(&self, texts: &[&str], _kind: EmbedKind) -> Result<Vec<Vec<f32>>, ModelError> {
        Ok(texts.iter().map(|t| self.vector(t)).collect())
    }

    fn dim(&self) -> usize {
        self.dim
    }

    fn name(&self) -> &str {
        "hash-units"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cos(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    }

    #[test]
    fn similar_texts_are_close_and_unrelated_far() {
        let e = HashEmbedder::new(256);
        let a = e.vector("空调不制冷怎么办");
        let b = e.vector("空调不制冷了怎么办");
        let c = e.vector("how do I reset my password");
        assert!(cos(&a, &b) > 0.7, "{}", cos(&a, &b));
        assert!(cos(&a, &c).abs() < 0.3);
        assert!((cos(&a, &a) - 1.0).abs() < 1e-5);
        assert!((cos(&e.vector(""), &e.vector("")) - 1.0).abs() < 1e-5);
        assert_eq!(e.embed(&["x", "y"], EmbedKind::Query).unwrap().len(), 2);
    }
}
