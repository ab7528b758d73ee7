//! The encoder's shape, read from `config.json` or an `E5S1` header.

use std::path::Path;

use serde::Deserialize;

use crate::e5s1::E5Header;
use crate::Error;

/// The shape and numeric settings of a BERT-family encoder.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct BertConfig {
    pub hidden: usize,
    pub layers: usize,
    pub heads: usize,
    pub ffn: usize,
    pub vocab: usize,
    pub max_positions: usize,
    pub type_vocab: usize,
    pub eps: f64,
    /// First position id (0 for BERT; `pad_token_id + 1` for RoBERTa-style models).
    pub position_offset: usize,
}

#[derive(Deserialize)]
struct HfConfig {
    #[serde(default)]
    model_type: Option<String>,
    hidden_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    intermediate_size: usize,
    vocab_size: usize,
    max_position_embeddings: usize,
    #[serde(default = "one")]
    type_vocab_size: usize,
    #[serde(default = "default_eps")]
    layer_norm_eps: f64,
    #[serde(default)]
    hidden_act: Option<String>,
    #[serde(default)]
    position_embedding_type: Option<String>,
    #[serde(default)]
    pad_token_id: Option<usize>,
}

fn one() -> usize {
    1
}

fn default_eps() -> f64 {
    1e-12
}

impl BertConfig {
    /// Parses a HuggingFace `config.json`, rejecting what this encoder cannot run.
    pub(crate) fn from_hf_file(path: &Path) -> Result<Self, Error> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let c: HfConfig =
            serde_json::from_str(&text).map_err(|e| Error::format(path, e.to_string()))?;
        if let Some(act) = c.hidden_act.as_deref() {
            if act != "gelu" {
                return Err(Error::format(
                    path,
                    format!("unsupported hidden_act {act:?} (need gelu)"),
                ));
            }
        }
        if let Some(p) = c.position_embedding_type.as_deref() {
            if p != "absolute" {
                return Err(Error::format(
                    path,
                    format!("unsupported position_embedding_type {p:?}"),
                ));
            }
        }
        let position_offset = match c.model_type.as_deref() {
            Some("roberta" | "xlm-roberta" | "camembert") => c.pad_token_id.unwrap_or(1) + 1,
            _ => 0,
        };
        let cfg = BertConfig {
            hidden: c.hidden_size,
            layers: c.num_hidden_layers,
            heads: c.num_attention_heads,
            ffn: c.intermediate_size,
            vocab: c.vocab_size,
            max_positions: c.max_position_embeddings,
            type_vocab: c.type_vocab_size.max(1),
            eps: c.layer_norm_eps,
            position_offset,
        };
        cfg.validate().map_err(|m| Error::format(path, m))?;
        Ok(cfg)
    }

    /// The configuration stored in an `E5S1` header.
    pub(crate) fn from_e5(h: &E5Header) -> Self {
        BertConfig {
            hidden: h.hidden,
            layers: h.layers,
            heads: h.heads,
            ffn: h.ffn,
            vocab: h.vocab,
            max_positions: h.max_positions,
            type_vocab: h.type_vocab,
            eps: h.eps,
            position_offset: 0,
        }
    }

    /// Positions usable by one window's tokens (including begin/end tokens).
    pub(crate) fn usable_positions(&self) -> usize {
        self.max_positions.saturating_sub(self.position_offset)
    }

    fn validate(&self) -> Result<(), String> {
        if self.hidden == 0 || self.heads == 0 || !self.hidden.is_multiple_of(self.heads) {
            return Err(format!(
                "hidden size {} not divisible by {} heads",
                self.hidden, self.heads
            ));
        }
        if self.layers == 0 || self.ffn == 0 || self.vocab == 0 || self.usable_positions() < 3 {
            return Err("empty model dimensions".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_bert_and_rejects_unsupported_configs() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("config.json");
        let base = r#"{"model_type":"bert","hidden_size":8,"num_hidden_layers":1,"num_attention_heads":2,
            "intermediate_size":16,"vocab_size":10,"max_position_embeddings":12,"type_vocab_size":2}"#;
        std::fs::write(&p, base).unwrap();
        let c = BertConfig::from_hf_file(&p).unwrap();
        assert_eq!(
            (c.hidden, c.heads, c.position_offset, c.eps),
            (8, 2, 0, 1e-12)
        );

        std::fs::write(&p, base.replace("\"bert\"", "\"xlm-roberta\"")).unwrap();
        assert_eq!(BertConfig::from_hf_file(&p).unwrap().position_offset, 2);

        for bad in [
            base.replace("\"num_attention_heads\":2", "\"num_attention_heads\":3"),
            base.replace('}', r#","hidden_act":"relu"}"#),
            base.replace("\"hidden_size\":8,", ""),
            "not json".to_string(),
        ] {
            std::fs::write(&p, &bad).unwrap();
            assert!(
                matches!(BertConfig::from_hf_file(&p), Err(Error::Format { .. })),
                "{bad}"
            );
        }
    }
}
