//! Encoder weights, loaded from HF safetensors or from an `E5S1` file.
//!
//! Both sources end in the same [`BertWeights`]: f32 candle tensors for the
//! per-layer matrices (Q, K and V fused into one `[3H, H]` matrix, with the
//! attention scale folded into the Q rows), and a word-embedding table that
//! is either dense f32 (HF) or left as Q4_0 blocks in the memory-mapped file
//! (e5: 250k × 384 would be 384 MB as f32; only looked-up rows are decoded).

use std::path::Path;
use std::sync::Arc;

use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Tensor};

use crate::config::BertConfig;
use crate::e5s1::{dequantize_q4_0, E5s1, Q4_BLOCK_BYTES, Q4_BLOCK_VALUES};
use crate::kernels::{LayerNorm, Linear};
use crate::Error;

/// One transformer layer.
pub(crate) struct Layer {
    pub qkv: Linear,
    pub attn_out: Linear,
    pub attn_norm: LayerNorm,
    /// Includes the GELU activation.
    pub ffn_in: Linear,
    pub ffn_out: Linear,
    pub out_norm: LayerNorm,
}

/// Word-embedding rows, dense or Q4_0.
enum WordTable {
    Dense(Vec<f32>),
    Q4(Arc<E5s1>),
}

impl WordTable {
    /// Writes row `id` (already checked `< vocab`) into `row`.
    fn fill_row(&self, id: usize, vocab: usize, row: &mut [f32]) -> Result<(), Error> {
        let h = row.len();
        match self {
            WordTable::Dense(table) => row.copy_from_slice(&table[id * h..(id + 1) * h]),
            WordTable::Q4(file) => {
                let bytes = file.tensor("emb.word", vocab * h)?.1;
                let row_bytes = h / Q4_BLOCK_VALUES * Q4_BLOCK_BYTES;
                dequantize_q4_0(&bytes[id * row_bytes..(id + 1) * row_bytes], row);
            }
        }
        Ok(())
    }
}

/// Everything the forward pass needs.
pub(crate) struct BertWeights {
    pub cfg: BertConfig,
    word: WordTable,
    pos: Vec<f32>,
    type0: Vec<f32>,
    pub emb_norm: LayerNorm,
    pub layers: Vec<Layer>,
}

/// Source of named tensors with their expected shapes.
trait TensorSource {
    fn get(&self, name: &str, shape: &[usize]) -> Result<Tensor, Error>;
}

struct HfSource {
    st: MmapedSafetensors,
    prefix: &'static str,
    path: std::path::PathBuf,
}

impl TensorSource for HfSource {
    fn get(&self, name: &str, shape: &[usize]) -> Result<Tensor, Error> {
        let full = format!("{}{name}", self.prefix);
        let t = match self.st.load(&full, &Device::Cpu) {
            Ok(t) => t,
            // Old checkpoints call LayerNorm parameters gamma/beta.
            Err(_) if full.ends_with("LayerNorm.weight") || full.ends_with("LayerNorm.bias") => {
                let alt = full
                    .replace("LayerNorm.weight", "LayerNorm.gamma")
                    .replace("LayerNorm.bias", "LayerNorm.beta");
                self.st
                    .load(&alt, &Device::Cpu)
                    .map_err(|_| Error::format(&self.path, format!("missing tensor {full}")))?
            }
            Err(_) => return Err(Error::format(&self.path, format!("missing tensor {full}"))),
        };
        if t.dims() != shape {
            return Err(Error::format(
                &self.path,
                format!("tensor {full} has shape {:?}, expected {shape:?}", t.dims()),
            ));
        }
        Ok(t.to_dtype(DType::F32)?)
    }
}

struct E5Source(Arc<E5s1>);

const E5_NAMES: [(&str, &str); 16] = [
    ("embeddings.LayerNorm.weight", "emb.ln.w"),
    ("embeddings.LayerNorm.bias", "emb.ln.b"),
    ("embeddings.position_embeddings.weight", "emb.pos"),
    ("embeddings.token_type_embeddings.weight", "emb.type"),
    ("attention.self.query.weight", "q.w"),
    ("attention.self.query.bias", "q.b"),
    ("attention.self.key.weight", "k.w"),
    ("attention.self.key.bias", "k.b"),
    ("attention.self.value.weight", "v.w"),
    ("attention.self.value.bias", "v.b"),
    ("attention.output.dense.weight", "ao.w"),
    ("attention.output.dense.bias", "ao.b"),
    ("attention.output.LayerNorm.weight", "aln.w"),
    ("attention.output.LayerNorm.bias", "aln.b"),
    ("intermediate.dense.weight", "fi.w"),
    ("intermediate.dense.bias", "fi.b"),
];

/// Maps an HF BERT tensor name to its `E5S1` name.
fn e5_name(hf: &str) -> Option<String> {
    if let Some(rest) = hf.strip_prefix("encoder.layer.") {
        let (layer, suffix) = rest.split_once('.')?;
        let short = match suffix {
            "output.dense.weight" => "fo.w",
            "output.dense.bias" => "fo.b",
            "output.LayerNorm.weight" => "oln.w",
            "output.LayerNorm.bias" => "oln.b",
            s => E5_NAMES.iter().find(|(h, _)| *h == s)?.1,
        };
        return Some(format!("l{layer}.{short}"));
    }
    E5_NAMES
        .iter()
        .find(|(h, _)| *h == hf)
        .map(|(_, e)| e.to_string())
}

impl TensorSource for E5Source {
    fn get(&self, name: &str, shape: &[usize]) -> Result<Tensor, Error> {
        let short =
            e5_name(name).ok_or_else(|| Error::InvalidInput(format!("no E5S1 name for {name}")))?;
        let count = shape.iter().product();
        Ok(Tensor::from_vec(
            self.0.f32_tensor(&short, count)?,
            shape,
            &Device::Cpu,
        )?)
    }
}

impl BertWeights {
    /// Loads `model.safetensors` (names with or without a `bert.` prefix).
    pub(crate) fn from_safetensors(path: &Path, cfg: BertConfig) -> Result<Self, Error> {
        // SAFETY: the file is only read while mapped; a concurrent truncation by
        // another process is outside what a model directory supports.
        let st = unsafe { MmapedSafetensors::new(path) }
            .map_err(|e| Error::format(path, e.to_string()))?;
        let prefix = if st.get("embeddings.word_embeddings.weight").is_ok() {
            ""
        } else {
            "bert."
        };
        let src = HfSource {
            st,
            prefix,
            path: path.to_path_buf(),
        };
        let word = src.get(
            "embeddings.word_embeddings.weight",
            &[cfg.vocab, cfg.hidden],
        )?;
        let word = WordTable::Dense(word.flatten_all()?.to_vec1()?);
        Self::build(&src, cfg, word)
    }

    /// Builds weights from a parsed `E5S1` file, keeping word embeddings in Q4_0.
    pub(crate) fn from_e5s1(file: Arc<E5s1>) -> Result<Self, Error> {
        let cfg = BertConfig::from_e5(&file.header);
        // Validates presence and size of the quantised table once, up front.
        file.tensor("emb.word", cfg.vocab * cfg.hidden)?;
        let src = E5Source(file.clone());
        Self::build(&src, cfg, WordTable::Q4(file))
    }

    fn build(src: &dyn TensorSource, cfg: BertConfig, word: WordTable) -> Result<Self, Error> {
        let (h, ff) = (cfg.hidden, cfg.ffn);
        let norm = |name: &str| -> Result<LayerNorm, Error> {
            let w = src.get(&format!("{name}.weight"), &[h])?;
            let b = src.get(&format!("{name}.bias"), &[h])?;
            Ok(LayerNorm::new(&w, &b, cfg.eps)?)
        };
        let tensors = |name: &str, out: usize, inp: usize| -> Result<(Tensor, Tensor), Error> {
            Ok((
                src.get(&format!("{name}.weight"), &[out, inp])?,
                src.get(&format!("{name}.bias"), &[out])?,
            ))
        };
        let linear = |name: &str, out: usize, inp: usize| -> Result<Linear, Error> {
            let (w, b) = tensors(name, out, inp)?;
            Ok(Linear::new(&w, &b)?)
        };
        let pos = src
            .get(
                "embeddings.position_embeddings.weight",
                &[cfg.max_positions, h],
            )?
            .flatten_all()?
            .to_vec1()?;
        let type0 = src
            .get(
                "embeddings.token_type_embeddings.weight",
                &[cfg.type_vocab, h],
            )?
            .narrow(0, 0, 1)?
            .flatten_all()?
            .to_vec1()?;
        let emb_norm = norm("embeddings.LayerNorm")?;
        let scale = 1.0 / ((h / cfg.heads) as f64).sqrt();
        let mut layers = Vec::with_capacity(cfg.layers);
        for i in 0..cfg.layers {
            let p = format!("encoder.layer.{i}");
            let (qw, qb) = tensors(&format!("{p}.attention.self.query"), h, h)?;
            let (kw, kb) = tensors(&format!("{p}.attention.self.key"), h, h)?;
            let (vw, vb) = tensors(&format!("{p}.attention.self.value"), h, h)?;
            // One fused Q|K|V product; the 1/sqrt(head_dim) attention scale is folded into Q.
            let qkv = Linear::new(
                &Tensor::cat(&[&(qw * scale)?, &kw, &vw], 0)?,
                &Tensor::cat(&[&(qb * scale)?, &kb, &vb], 0)?,
            )?;
            layers.push(Layer {
                qkv,
                attn_out: linear(&format!("{p}.attention.output.dense"), h, h)?,
                attn_norm: norm(&format!("{p}.attention.output.LayerNorm"))?,
                ffn_in: linear(&format!("{p}.intermediate.dense"), ff, h)?.with_gelu(),
                ffn_out: linear(&format!("{p}.output.dense"), h, ff)?,
                out_norm: norm(&format!("{p}.output.LayerNorm"))?,
            });
        }
        Ok(BertWeights {
            cfg,
            word,
            pos,
            type0,
            emb_norm,
            layers,
        })
    }

    /// Sum of word, position and token-type-0 embeddings for each token, as a
    /// `[ids.len(), hidden]` row-major buffer (before the embedding LayerNorm).
    pub(crate) fn embed(&self, ids: &[u32], positions: &[usize]) -> Result<Vec<f32>, Error> {
        let h = self.cfg.hidden;
        let mut out = vec![0f32; ids.len() * h];
        let vocab = self.cfg.vocab;
        for ((&id, &p), row) in ids.iter().zip(positions).zip(out.chunks_exact_mut(h)) {
            let id = id as usize;
            if id >= vocab {
                return Err(Error::InvalidInput(format!(
                    "token id {id} outside vocabulary of {vocab}"
                )));
            }
            let p = p + self.cfg.position_offset;
            if p >= self.cfg.max_positions {
                return Err(Error::InvalidInput(format!(
                    "position {p} beyond {}",
                    self.cfg.max_positions
                )));
            }
            self.word.fill_row(id, vocab, row)?;
            let pos = &self.pos[p * h..(p + 1) * h];
            for ((x, &a), &b) in row.iter_mut().zip(pos).zip(&self.type0) {
                *x += a + b;
            }
        }
        Ok(out)
    }
}
