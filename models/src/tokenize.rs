//! Text → token ids, for both kinds of model directory.
//!
//! * HuggingFace directories use their `tokenizer.json` through the
//!   `tokenizers` crate, with padding and truncation switched off (we window
//!   long texts ourselves and pool with the attention mask).
//! * The e5 `E5S1` file carries SentencePiece pieces and a normalisation
//!   table: we normalise in Rust ([`crate::normalize`]) and run the
//!   `tokenizers` crate's Unigram model over the whole metaspaced string, as
//!   the reference engine does.
//!
//! Both return *content* ids only; the caller adds the model's begin/end
//! tokens around each window.

use std::path::Path;

use tokenizers::models::unigram::Unigram;
use tokenizers::Model;
use tokenizers::Tokenizer;

use crate::e5s1::E5Vocab;
use crate::normalize::CodepointMap;
use crate::Error;

/// A loaded tokenizer plus the special ids that frame every window.
pub(crate) struct TextTokenizer {
    kind: Kind,
    /// Token placed before each window (`<s>` / `[CLS]`), if the model uses one.
    pub bos: Option<u32>,
    /// Token placed after each window (`</s>` / `[SEP]`), if the model uses one.
    pub eos: Option<u32>,
}

enum Kind {
    Hf(Box<Tokenizer>),
    SentencePiece {
        model: Box<Unigram>,
        norm: CodepointMap,
        unk: u32,
    },
}

impl TextTokenizer {
    /// Loads `tokenizer.json`, turning off padding and truncation.
    pub(crate) fn from_hf_file(path: &Path) -> Result<Self, Error> {
        let mut tok = Tokenizer::from_file(path).map_err(|e| Error::format(path, e.to_string()))?;
        tok.with_padding(None);
        tok.with_truncation(None)
            .map_err(|e| Error::format(path, e.to_string()))?;
        // The post-processor's frame around an empty text gives the special ids.
        let frame = tok
            .encode("", true)
            .map_err(|e| Error::format(path, e.to_string()))?;
        let ids = frame.get_ids();
        let (bos, eos) = match ids {
            [] => (None, None),
            [one] => (Some(*one), None),
            [first, .., last] => (Some(*first), Some(*last)),
        };
        Ok(TextTokenizer {
            kind: Kind::Hf(Box::new(tok)),
            bos,
            eos,
        })
    }

    /// Builds the e5 tokenizer from the `E5S1` vocabulary and normalisation table.
    pub(crate) fn from_sentencepiece(vocab: &E5Vocab, norm: CodepointMap) -> Result<Self, Error> {
        let mut pieces = vocab.pieces.clone();
        // The reference never matches the unk piece's text ("<unk>") inside user
        // text; a space can never survive metaspacing, so this spelling is unmatchable.
        if let Some(p) = pieces.get_mut(vocab.unk as usize) {
            p.0.push(' ');
        }
        let model = Unigram::from(pieces, Some(vocab.unk as usize), false)
            .map_err(|e| Error::Tokenizer(e.to_string()))?;
        Ok(TextTokenizer {
            kind: Kind::SentencePiece {
                model: Box::new(model),
                norm,
                unk: vocab.unk,
            },
            bos: Some(vocab.bos),
            eos: Some(vocab.eos),
        })
    }

    /// Content token ids of `text` (no begin/end tokens, no truncation).
    pub(crate) fn content_ids(&self, text: &str) -> Result<Vec<u32>, Error> {
        match &self.kind {
            Kind::Hf(tok) => Ok(tok
                .encode(text, false)
                .map_err(|e| Error::Tokenizer(e.to_string()))?
                .get_ids()
                .to_vec()),
            Kind::SentencePiece { model, norm, unk } => {
                let input = norm.sentencepiece_input(text);
                let pieces = model
                    .encode(&input)
                    .map_err(|e| Error::Tokenizer(e.to_string()))?;
                let mut ids = Vec::with_capacity(pieces.len());
                for piece in &pieces {
                    match model.token_to_id(piece) {
                        Some(id) => ids.push(id),
                        // `Unigram` fuses runs of unknown characters into one
                        // token; the reference emits one unk per character.
                        None => ids.extend(std::iter::repeat_n(*unk, piece.chars().count())),
                    }
                }
                Ok(ids)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toy() -> TextTokenizer {
        let pieces = ["<s>", "</s>", "<unk>", "▁", "a", "b", "▁ab", "▁a"]
            .iter()
            .enumerate()
            .map(|(i, p)| (p.to_string(), -(i as f64)))
            .collect();
        let vocab = E5Vocab {
            pieces,
            bos: 0,
            eos: 1,
            unk: 2,
        };
        TextTokenizer::from_sentencepiece(&vocab, CodepointMap::default()).unwrap()
    }

    #[test]
    fn each_unknown_character_is_its_own_unk() {
        let t = toy();
        assert_eq!(t.content_ids("ab").unwrap(), vec![6]);
        // "xy" has no pieces: two unks (not one fused), after the lone metaspace.
        assert_eq!(t.content_ids("ab xy").unwrap(), vec![6, 3, 2, 2]);
        // The literal text "<unk>" is not the unk piece.
        assert!(t
            .content_ids("<unk>")
            .unwrap()
            .iter()
            .all(|&id| id == 2 || id == 3));
        assert_eq!(t.content_ids("").unwrap(), vec![3]);
    }
}
