//! Encoder weights, loaded from HF safetensors or from an `E5S1` file.
//!
//! Both sources end in the same [`BertWeights`]: per-layer dense layers in
//! the layout the kernels read (Q, K and V fused into one `[3H, H]` layer,
//! with the attention scale folded into the Q rows), layer norms as plain
//! vectors, and a word-embedding table that is either dense f32 (HF) or left
//! as Q4_0 blocks in the memory-mapped file (e5: 250k × 384 would be 384 MB
//! as f32; only looked-up rows are decoded).
//!
//! The dense layers are built for one [`Precision`]: `F32` (the file's
//! weights dequantised, f32 arithmetic) or `Int8` (the e5 file's 4-bit
//! weights kept exact as bytes, activations quantised to int8 per block of
//! 32 like the reference engine). Models without 4-bit weights are always f32.

use std::path::Path;
use std::sync::Arc;

use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Tensor};

use crate::config::BertConfig;
use crate::e5s1::{dequantize_q4_0, E5DType, E5s1, Q4_BLOCK_BYTES, Q4_BLOCK_VALUES};
use crate::kernels::Linear;
use crate::{Error, Precision};

/// A layer norm's scale and shift.
#[derive(Clone)]
pub(crate) struct Norm {
    pub w: Vec<f32>,
    pub b: Vec<f32>,
}

/// One transformer layer.
pub(crate) struct Layer {
    pub qkv: Linear,
    pub attn_out: Linear,
    pub attn_norm: Norm,
    /// Followed by the GELU activation.
    pub ffn_in: Linear,
    pub ffn_out: Linear,
    pub out_norm: Norm,
}

/// The six dense layers of a transformer layer, in [`LayerParams::dense`] order.
pub(crate) const DENSE: [&str; 6] = [
    "attention.self.query",
    "attention.self.key",
    "attention.self.value",
    "attention.output.dense",
    "intermediate.dense",
    "output.dense",
];

/// `(out, in)` of dense layer `j` (in [`DENSE`] order) for shape `cfg`.
pub(crate) fn dense_shape(cfg: &BertConfig, j: usize) -> (usize, usize) {
    let (h, ff) = (cfg.hidden, cfg.ffn);
    match j {
        4 => (ff, h),
        5 => (h, ff),
        _ => (h, h),
    }
}

/// One dense layer's f32 weight (`[out, in]` row-major) and bias.
#[derive(Clone)]
pub(crate) struct Dense {
    pub w: Vec<f32>,
    pub b: Vec<f32>,
}

/// One transformer layer's parameters as plain f32 in HF layout: what the
/// adaptation trains against and merges its low-rank updates into.
#[derive(Clone)]
pub(crate) struct LayerParams {
    /// Query, key, value, attention output, FFN in, FFN out ([`DENSE`]).
    pub dense: [Dense; 6],
    pub attn_norm: Norm,
    pub out_norm: Norm,
}

/// Word-embedding rows, dense or Q4_0.
enum WordTable {
    Dense(Vec<f32>),
    Q4(Arc<E5s1>),
}

/// Everything the forward pass needs. Cloning is cheap (the parts are
/// shared), so an adapted encoder shares every layer it does not replace.
#[derive(Clone)]
pub(crate) struct BertWeights {
    pub cfg: BertConfig,
    word: Arc<WordTable>,
    pos: Arc<[f32]>,
    type0: Arc<[f32]>,
    pub emb_norm: Arc<Norm>,
    pub layers: Vec<Arc<Layer>>,
    /// Layer-norm epsilon as f32.
    pub eps: f32,
    /// Whether the dense layers are 4-bit × int8 (else f32). An adapted
    /// layer is f32 either way; the forward pass reads each layer's input in
    /// the form that layer takes.
    pub int8: bool,
    /// Where the weights came from, to read a layer's f32 parameters again.
    src: Arc<dyn TensorSource>,
}

/// Source of named tensors with their expected shapes.
trait TensorSource: Send + Sync {
    fn get(&self, name: &str, shape: &[usize]) -> Result<Tensor, Error>;

    /// The tensor as Q4_0 blocks, if it is stored that way.
    fn q4(&self, _name: &str, _count: usize) -> Option<&[u8]> {
        None
    }
}

fn to_vec(t: Tensor) -> Result<Vec<f32>, Error> {
    Ok(t.flatten_all()?.to_vec1()?)
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

    fn q4(&self, name: &str, count: usize) -> Option<&[u8]> {
        match self.0.tensor(&e5_name(name)?, count).ok()? {
            (E5DType::Q4_0, bytes) => Some(bytes),
            _ => None,
        }
    }
}

/// Output `n`'s block `b` of a Q4_0 matrix with `nb` blocks per row: its
/// scale times `scale` and its 16 nibble bytes.
fn q4_block(bytes: &[u8], nb: usize, n: usize, b: usize, scale: f32) -> (f32, [u8; 16]) {
    let at = (n * nb + b) * Q4_BLOCK_BYTES;
    let block = &bytes[at..at + Q4_BLOCK_BYTES];
    let d = half::f16::from_le_bytes([block[0], block[1]]).to_f32() * scale;
    let mut q = [0u8; 16];
    q.copy_from_slice(&block[2..]);
    (d, q)
}

impl Layer {
    /// An f32 layer from plain parameters (Q, K and V fused, the attention
    /// scale `1/sqrt(head_dim)` folded into the Q rows).
    pub(crate) fn from_params(p: &LayerParams, cfg: &BertConfig) -> Layer {
        let (h, ff) = (cfg.hidden, cfg.ffn);
        let scale = 1.0 / ((h / cfg.heads) as f32).sqrt();
        let [q, k, v, ao, fi, fo] = &p.dense;
        let mut w = Vec::with_capacity(3 * h * h);
        w.extend(q.w.iter().map(|x| x * scale));
        w.extend_from_slice(&k.w);
        w.extend_from_slice(&v.w);
        let mut b = Vec::with_capacity(3 * h);
        b.extend(q.b.iter().map(|x| x * scale));
        b.extend_from_slice(&k.b);
        b.extend_from_slice(&v.b);
        Layer {
            qkv: Linear::from_f32(&w, &b, 3 * h, h),
            attn_out: Linear::from_f32(&ao.w, &ao.b, h, h),
            attn_norm: p.attn_norm.clone(),
            ffn_in: Linear::from_f32(&fi.w, &fi.b, ff, h),
            ffn_out: Linear::from_f32(&fo.w, &fo.b, h, ff),
            out_norm: p.out_norm.clone(),
        }
    }
}

/// Layer `i`'s parameters as f32 (4-bit weights dequantised).
fn read_params(src: &dyn TensorSource, cfg: &BertConfig, i: usize) -> Result<LayerParams, Error> {
    let h = cfg.hidden;
    let p = format!("encoder.layer.{i}");
    let vec = |name: String, shape: &[usize]| to_vec(src.get(&name, shape)?);
    let mut dense = Vec::with_capacity(DENSE.len());
    for (j, name) in DENSE.iter().enumerate() {
        let (out, inp) = dense_shape(cfg, j);
        dense.push(Dense {
            w: vec(format!("{p}.{name}.weight"), &[out, inp])?,
            b: vec(format!("{p}.{name}.bias"), &[out])?,
        });
    }
    let norm = |name: &str| -> Result<Norm, Error> {
        Ok(Norm {
            w: vec(format!("{p}.{name}.weight"), &[h])?,
            b: vec(format!("{p}.{name}.bias"), &[h])?,
        })
    };
    let dense: [Dense; 6] = dense
        .try_into()
        .map_err(|_| Error::InvalidInput("six dense layers".into()))?;
    Ok(LayerParams {
        dense,
        attn_norm: norm("attention.output.LayerNorm")?,
        out_norm: norm("output.LayerNorm")?,
    })
}

impl BertWeights {
    /// Layer `i`'s parameters as plain f32 (as the file has them, 4-bit
    /// weights dequantised), whatever form the forward pass runs them in.
    pub(crate) fn layer_params(&self, i: usize) -> Result<LayerParams, Error> {
        if i >= self.cfg.layers {
            return Err(Error::InvalidInput(format!(
                "layer {i} of a {}-layer model",
                self.cfg.layers
            )));
        }
        read_params(self.src.as_ref(), &self.cfg, i)
    }

    /// These weights with layers replaced (`(index, layer)`); the rest shared.
    pub(crate) fn with_layers(&self, replaced: Vec<(usize, Layer)>) -> BertWeights {
        let mut w = self.clone();
        for (i, layer) in replaced {
            w.layers[i] = Arc::new(layer);
        }
        w
    }

    /// Loads `model.safetensors` (names with or without a `bert.` prefix);
    /// always f32, whatever the precision asked for.
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
        let word = WordTable::Dense(to_vec(word)?);
        Self::build(Arc::new(src), cfg, word, Precision::F32)
    }

    /// Builds weights from a parsed `E5S1` file, keeping word embeddings in
    /// Q4_0 and the dense layers in `precision`.
    pub(crate) fn from_e5s1(file: Arc<E5s1>, precision: Precision) -> Result<Self, Error> {
        let cfg = BertConfig::from_e5(&file.header);
        // Validates presence and size of the quantised table once, up front.
        file.tensor("emb.word", cfg.vocab * cfg.hidden)?;
        let src = E5Source(file.clone());
        Self::build(Arc::new(src), cfg, WordTable::Q4(file), precision)
    }

    fn build(
        src: Arc<dyn TensorSource>,
        cfg: BertConfig,
        word: WordTable,
        precision: Precision,
    ) -> Result<Self, Error> {
        let h = cfg.hidden;
        let int8 = precision == Precision::Int8
            && (0..cfg.layers).all(|i| {
                (0..DENSE.len()).all(|j| {
                    let (out, inp) = dense_shape(&cfg, j);
                    src.q4(&format!("encoder.layer.{i}.{}.weight", DENSE[j]), out * inp)
                        .is_some()
                })
            });
        if precision == Precision::Int8 && !int8 {
            tracing::info!("int8 precision needs 4-bit weights; this model runs in f32");
        }
        let norm = |name: &str| -> Result<Norm, Error> {
            Ok(Norm {
                w: to_vec(src.get(&format!("{name}.weight"), &[h])?)?,
                b: to_vec(src.get(&format!("{name}.bias"), &[h])?)?,
            })
        };
        let bias = |name: &str, out: usize| to_vec(src.get(&format!("{name}.bias"), &[out])?);
        // 4-bit parts stacked along the output axis, each (name, rows, scale).
        let q4_linear = |parts: &[(&str, usize, f32)], inp: usize| -> Result<Linear, Error> {
            let out: usize = parts.iter().map(|p| p.1).sum();
            let mut b = Vec::with_capacity(out);
            for &(name, rows, scale) in parts {
                b.extend(bias(name, rows)?.into_iter().map(|v| v * scale));
            }
            let nb = inp / Q4_BLOCK_VALUES;
            let mut sources = Vec::with_capacity(parts.len());
            for &(name, rows, scale) in parts {
                let bytes = src
                    .q4(&format!("{name}.weight"), rows * inp)
                    .ok_or_else(|| Error::InvalidInput(format!("{name} is not 4-bit")))?;
                sources.push((bytes, rows, scale));
            }
            let block = |n: usize, blk: usize| {
                let mut n = n;
                for &(bytes, rows, scale) in &sources {
                    if n < rows {
                        return q4_block(bytes, nb, n, blk, scale);
                    }
                    n -= rows;
                }
                unreachable!("output row within the stacked parts")
            };
            Ok(Linear::from_q4(block, &b, out, inp))
        };
        let pos = to_vec(src.get(
            "embeddings.position_embeddings.weight",
            &[cfg.max_positions, h],
        )?)?;
        let type0 = to_vec(
            src.get(
                "embeddings.token_type_embeddings.weight",
                &[cfg.type_vocab, h],
            )?
            .narrow(0, 0, 1)?,
        )?;
        let emb_norm = norm("embeddings.LayerNorm")?;
        let scale = 1.0 / ((h / cfg.heads) as f32).sqrt();
        let mut layers = Vec::with_capacity(cfg.layers);
        for i in 0..cfg.layers {
            if !int8 {
                let params = read_params(src.as_ref(), &cfg, i)?;
                layers.push(Arc::new(Layer::from_params(&params, &cfg)));
                continue;
            }
            let p = format!("encoder.layer.{i}");
            let name = |j: usize| format!("{p}.{}", DENSE[j]);
            let (q, k, v, ao, fi, fo) = (name(0), name(1), name(2), name(3), name(4), name(5));
            layers.push(Arc::new(Layer {
                // One fused Q|K|V layer; the 1/sqrt(head_dim) attention scale is folded into Q.
                qkv: q4_linear(&[(&q, h, scale), (&k, h, 1.0), (&v, h, 1.0)], h)?,
                attn_out: q4_linear(&[(&ao, h, 1.0)], h)?,
                attn_norm: norm(&format!("{p}.attention.output.LayerNorm"))?,
                ffn_in: q4_linear(&[(&fi, cfg.ffn, 1.0)], h)?,
                ffn_out: q4_linear(&[(&fo, h, 1.0)], cfg.ffn)?,
                out_norm: norm(&format!("{p}.output.LayerNorm"))?,
            }));
        }
        Ok(BertWeights {
            eps: cfg.eps as f32,
            cfg,
            word: Arc::new(word),
            pos: pos.into(),
            type0: type0.into(),
            emb_norm: Arc::new(emb_norm),
            layers,
            int8,
            src,
        })
    }

    /// Checks that every token id is in the vocabulary and every window's
    /// positions fit the model, so the forward pass cannot fail midway.
    pub(crate) fn check_input(&self, windows: &[Vec<u32>]) -> Result<(), Error> {
        let vocab = self.cfg.vocab;
        if let Some(&id) = windows.iter().flatten().find(|&&id| id as usize >= vocab) {
            return Err(Error::InvalidInput(format!(
                "token id {id} outside vocabulary of {vocab}"
            )));
        }
        let longest = windows.iter().map(Vec::len).max().unwrap_or(0);
        if longest + self.cfg.position_offset > self.cfg.max_positions {
            return Err(Error::InvalidInput(format!(
                "position {} beyond {}",
                longest + self.cfg.position_offset - 1,
                self.cfg.max_positions
            )));
        }
        // The Q4 table was validated at load; this cannot fail afterwards.
        self.word_view().map(|_| ())
    }

    /// The word table's rows, for [`WordView::fill`].
    pub(crate) fn word_view(&self) -> Result<WordView<'_>, Error> {
        let h = self.cfg.hidden;
        Ok(match self.word.as_ref() {
            WordTable::Dense(t) => WordView::Dense(t),
            WordTable::Q4(file) => WordView::Q4(file.tensor("emb.word", self.cfg.vocab * h)?.1),
        })
    }

    /// Writes the sum of word `id`'s, position `pos`'s and token type 0's
    /// embeddings into `row` (before the embedding LayerNorm). `id` and
    /// `pos` must have passed [`BertWeights::check_input`].
    pub(crate) fn embed_row(&self, words: &WordView<'_>, id: u32, pos: usize, row: &mut [f32]) {
        let h = self.cfg.hidden;
        words.fill(id as usize, row);
        let p = pos + self.cfg.position_offset;
        let pos = &self.pos[p * h..(p + 1) * h];
        for ((x, &a), &b) in row.iter_mut().zip(pos).zip(self.type0.iter()) {
            *x += a + b;
        }
    }
}

/// Borrowed rows of the word-embedding table.
pub(crate) enum WordView<'a> {
    Dense(&'a [f32]),
    Q4(&'a [u8]),
}

impl WordView<'_> {
    /// Writes row `id` (in the vocabulary) into `row`.
    fn fill(&self, id: usize, row: &mut [f32]) {
        let h = row.len();
        match self {
            WordView::Dense(table) => row.copy_from_slice(&table[id * h..(id + 1) * h]),
            WordView::Q4(bytes) => {
                let row_bytes = h / Q4_BLOCK_VALUES * Q4_BLOCK_BYTES;
                dequantize_q4_0(&bytes[id * row_bytes..(id + 1) * row_bytes], row);
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod synthetic {
    //! Random weights of any shape, 4-bit where a real e5 file is, for tests
    //! and timings that need no model file.
    use std::collections::HashMap;

    use super::*;

    /// Random tensors: dense layers as Q4_0 blocks (also served as f32).
    struct RandomSource {
        f32s: HashMap<String, Vec<f32>>,
        q4s: HashMap<String, Vec<u8>>,
    }

    fn lcg(s: &mut u64) -> u32 {
        *s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (*s >> 33) as u32
    }

    impl RandomSource {
        fn new(cfg: &BertConfig, seed: u64) -> Self {
            let (h, ff) = (cfg.hidden, cfg.ffn);
            let mut s = seed;
            let mut f32s = HashMap::new();
            let mut q4s = HashMap::new();
            let vec = |n: usize, scale: f32, offset: f32, s: &mut u64| -> Vec<f32> {
                (0..n)
                    .map(|_| offset + scale * (lcg(s) as f32 / u32::MAX as f32 - 0.5))
                    .collect()
            };
            f32s.insert(
                "embeddings.position_embeddings.weight".into(),
                vec(cfg.max_positions * h, 0.2, 0.0, &mut s),
            );
            f32s.insert(
                "embeddings.token_type_embeddings.weight".into(),
                vec(cfg.type_vocab * h, 0.2, 0.0, &mut s),
            );
            let mut norms = vec!["embeddings.LayerNorm".to_string()];
            for i in 0..cfg.layers {
                let p = format!("encoder.layer.{i}");
                norms.push(format!("{p}.attention.output.LayerNorm"));
                norms.push(format!("{p}.output.LayerNorm"));
                for (name, out, inp) in [
                    ("attention.self.query", h, h),
                    ("attention.self.key", h, h),
                    ("attention.self.value", h, h),
                    ("attention.output.dense", h, h),
                    ("intermediate.dense", ff, h),
                    ("output.dense", h, ff),
                ] {
                    let mut bytes = Vec::with_capacity(out * inp / 32 * 18);
                    let mut deq = vec![0f32; out * inp];
                    for blk in 0..out * inp / 32 {
                        let d = half::f16::from_f32(
                            0.5 / (inp as f32).sqrt() * (0.5 + (lcg(&mut s) % 100) as f32 / 100.0),
                        );
                        bytes.extend_from_slice(&d.to_le_bytes());
                        for _ in 0..16 {
                            bytes.push((lcg(&mut s) & 0xFF) as u8);
                        }
                        let at = bytes.len() - 18;
                        dequantize_q4_0(&bytes[at..], &mut deq[blk * 32..(blk + 1) * 32]);
                    }
                    f32s.insert(format!("{p}.{name}.weight"), deq);
                    q4s.insert(format!("{p}.{name}.weight"), bytes);
                    f32s.insert(format!("{p}.{name}.bias"), vec(out, 0.1, 0.0, &mut s));
                }
            }
            for n in norms {
                f32s.insert(format!("{n}.weight"), vec(h, 0.4, 1.0, &mut s));
                f32s.insert(format!("{n}.bias"), vec(h, 0.2, 0.0, &mut s));
            }
            RandomSource { f32s, q4s }
        }
    }

    impl TensorSource for RandomSource {
        fn get(&self, name: &str, shape: &[usize]) -> Result<Tensor, Error> {
            let v = self
                .f32s
                .get(name)
                .ok_or_else(|| Error::InvalidInput(format!("no synthetic {name}")))?;
            Ok(Tensor::from_vec(v.clone(), shape, &Device::Cpu)?)
        }

        fn q4(&self, name: &str, count: usize) -> Option<&[u8]> {
            self.q4s
                .get(name)
                .map(Vec::as_slice)
                .filter(|b| b.len() == count / 32 * 18)
        }
    }

    /// e5-small's shape (vocabulary cut to 1,000 tokens).
    pub(crate) fn e5_small_shape() -> BertConfig {
        BertConfig {
            hidden: 384,
            layers: 12,
            heads: 12,
            ffn: 1536,
            vocab: 1000,
            max_positions: 512,
            type_vocab: 1,
            eps: 1e-12,
            position_offset: 0,
        }
    }

    /// Random weights of shape `cfg` in `precision`.
    pub(crate) fn weights(cfg: BertConfig, precision: Precision, seed: u64) -> BertWeights {
        let src = RandomSource::new(&cfg, seed);
        let mut s = seed ^ 0x9E37;
        let word = (0..cfg.vocab * cfg.hidden)
            .map(|_| lcg(&mut s) as f32 / u32::MAX as f32 - 0.5)
            .collect();
        BertWeights::build(Arc::new(src), cfg, WordTable::Dense(word), precision)
            .expect("synthetic weights build")
    }
}
