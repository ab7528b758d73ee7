//! [`Adapter`]: a desk's low-rank update of the encoder's top layers, kept
//! apart from the shipped model and merged into f32 copies of the layers it
//! changes when a desk's encoder is built ([`crate::Embedder::adapted`]).
//!
//! For each adapted layer and each of its six dense layers (Q, K, V, the
//! attention output, the FFN in and out) the update is `ΔW = scale · B·A`
//! with `A` `[rank, in]` and `B` `[out, rank]` (LoRA, Hu et al. 2021). The
//! file is a safetensors file (tensors `l{layer}.{dense}.a` / `.b`, f32) with
//! the model name, the shape and a SHA-256 of the tensor bytes in its
//! metadata; [`Adapter::load`] refuses any file whose digest, shape or values
//! do not check, so a damaged file is an error and never a wrong encoder.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;
use sha2::{Digest, Sha256};

use crate::config::BertConfig;
use crate::weights::{dense_shape, BertWeights, Layer, LayerParams, DENSE};
use crate::Error;

/// The `format` metadata value of adapter files this version reads.
const FORMAT: &str = "triage-adapter-1";
/// Short names of the six dense layers in file tensor names ([`DENSE`] order).
const SHORT: [&str; 6] = ["q", "k", "v", "ao", "fi", "fo"];

/// One dense layer's low-rank update: `A` `[rank, in]`, `B` `[out, rank]`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct LowRank {
    pub a: Vec<f32>,
    pub b: Vec<f32>,
}

/// Low-rank updates of an encoder's top layers (see the module docs).
#[derive(Debug, Clone, PartialEq)]
pub struct Adapter {
    model: String,
    first_layer: usize,
    rank: usize,
    scale: f32,
    hidden: usize,
    ffn: usize,
    /// `parts[(layer − first_layer)·6 + dense]`.
    parts: Vec<LowRank>,
}

impl Adapter {
    /// An adapter of `model` (shape `cfg`) for layers `first_layer..`, from
    /// its parts in layer-then-[`DENSE`] order; checks every shape.
    pub(crate) fn new(
        model: &str,
        cfg: &BertConfig,
        first_layer: usize,
        rank: usize,
        scale: f32,
        parts: Vec<LowRank>,
    ) -> Result<Adapter, Error> {
        let adapter = Adapter {
            model: model.to_string(),
            first_layer,
            rank,
            scale,
            hidden: cfg.hidden,
            ffn: cfg.ffn,
            parts,
        };
        adapter.check(cfg)?;
        Ok(adapter)
    }

    /// The model the adapter was trained for (its [`crate::TextEmbedder::name`]).
    pub fn model(&self) -> &str {
        &self.model
    }

    /// The first adapted layer (the layers before it are the shipped ones).
    pub fn first_layer(&self) -> usize {
        self.first_layer
    }

    /// How many top layers are adapted.
    pub fn layers(&self) -> usize {
        self.parts.len() / DENSE.len()
    }

    /// The rank of every update.
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// Trainable values stored (both factors of every update).
    pub fn parameters(&self) -> usize {
        self.parts.iter().map(|p| p.a.len() + p.b.len()).sum()
    }

    /// A short digest of the whole adapter (model, shape, values): names the
    /// adapted encoder, so caches keyed by model name never mix two of them.
    pub fn digest(&self) -> String {
        let mut h = Sha256::new();
        h.update(self.model.as_bytes());
        for n in [self.first_layer, self.rank, self.hidden, self.ffn] {
            h.update((n as u64).to_le_bytes());
        }
        h.update(self.scale.to_le_bytes());
        for p in &self.parts {
            for v in p.a.iter().chain(&p.b) {
                h.update(v.to_le_bytes());
            }
        }
        hex::encode(&h.finalize()[..6])
    }

    /// Checks the adapter against an encoder of shape `cfg`.
    pub(crate) fn check(&self, cfg: &BertConfig) -> Result<(), Error> {
        let bad = |m: String| Err(Error::InvalidInput(format!("adapter: {m}")));
        if self.hidden != cfg.hidden || self.ffn != cfg.ffn {
            return bad(format!(
                "made for hidden {} / FFN {}, the model has {} / {}",
                self.hidden, self.ffn, cfg.hidden, cfg.ffn
            ));
        }
        if self.rank == 0 || self.parts.is_empty() || self.parts.len() % DENSE.len() != 0 {
            return bad(format!(
                "rank {} with {} parts",
                self.rank,
                self.parts.len()
            ));
        }
        if self.first_layer + self.layers() > cfg.layers {
            return bad(format!(
                "layers {}..{} of a {}-layer model",
                self.first_layer,
                self.first_layer + self.layers(),
                cfg.layers
            ));
        }
        if !self.scale.is_finite() {
            return bad("scale is not finite".into());
        }
        for (i, p) in self.parts.iter().enumerate() {
            let (out, inp) = dense_shape(cfg, i % DENSE.len());
            if p.a.len() != self.rank * inp || p.b.len() != out * self.rank {
                return bad(format!("part {i} has the wrong shape"));
            }
            if p.a.iter().chain(&p.b).any(|v| !v.is_finite()) {
                return bad(format!("part {i} holds a value that is not finite"));
            }
        }
        Ok(())
    }

    /// Adds this adapter's update to layer `layer`'s dense weights.
    fn merge_into(&self, layer: usize, params: &mut LayerParams) {
        let l = layer - self.first_layer;
        for (j, dense) in params.dense.iter_mut().enumerate() {
            let p = &self.parts[l * DENSE.len() + j];
            let (out, inp) = (dense.b.len(), dense.w.len() / dense.b.len());
            let r = self.rank;
            for o in 0..out {
                let row = &mut dense.w[o * inp..(o + 1) * inp];
                for k in 0..r {
                    let coef = self.scale * p.b[o * r + k];
                    if coef == 0.0 {
                        continue;
                    }
                    for (w, &a) in row.iter_mut().zip(&p.a[k * inp..(k + 1) * inp]) {
                        *w += coef * a;
                    }
                }
            }
        }
    }

    /// `w` with this adapter's updates merged into f32 copies of the layers
    /// it changes (the others shared).
    pub(crate) fn merged(&self, w: &BertWeights) -> Result<BertWeights, Error> {
        self.check(&w.cfg)?;
        let mut layers = Vec::with_capacity(self.layers());
        for i in self.first_layer..self.first_layer + self.layers() {
            let mut params = w.layer_params(i)?;
            self.merge_into(i, &mut params);
            layers.push((i, Layer::from_params(&params, &w.cfg)));
        }
        Ok(w.with_layers(layers))
    }

    fn tensor_names(&self) -> Vec<(String, usize)> {
        let mut names = Vec::with_capacity(self.parts.len() * 2);
        for (i, _) in self.parts.iter().enumerate() {
            let (layer, j) = (self.first_layer + i / DENSE.len(), i % DENSE.len());
            names.push((format!("l{layer}.{}.a", SHORT[j]), i));
            names.push((format!("l{layer}.{}.b", SHORT[j]), i));
        }
        names
    }

    /// The adapter as safetensors bytes (see the module docs).
    pub fn to_bytes(&self) -> Result<Vec<u8>, Error> {
        let bytes: Vec<(String, Vec<u8>, Vec<usize>)> = self
            .tensor_names()
            .into_iter()
            .map(|(name, i)| {
                let p = &self.parts[i];
                let (out, inp) = (p.b.len() / self.rank, p.a.len() / self.rank);
                let (values, shape) = if name.ends_with(".a") {
                    (&p.a, vec![self.rank, inp])
                } else {
                    (&p.b, vec![out, self.rank])
                };
                let raw: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
                (name, raw, shape)
            })
            .collect();
        let mut digest = Sha256::new();
        for (name, raw, _) in &bytes {
            digest.update(name.as_bytes());
            digest.update(raw);
        }
        let meta: HashMap<String, String> = [
            ("format", FORMAT.to_string()),
            ("model", self.model.clone()),
            ("first_layer", self.first_layer.to_string()),
            ("rank", self.rank.to_string()),
            ("scale", format!("{:?}", self.scale)),
            ("hidden", self.hidden.to_string()),
            ("ffn", self.ffn.to_string()),
            ("sha256", hex::encode(digest.finalize())),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let views = bytes
            .iter()
            .map(|(name, raw, shape)| {
                TensorView::new(Dtype::F32, shape.clone(), raw).map(|v| (name.clone(), v))
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| Error::InvalidInput(format!("adapter: {e}")))?;
        safetensors::serialize(views, Some(meta))
            .map_err(|e| Error::InvalidInput(format!("adapter: {e}")))
    }

    /// Reads an adapter from safetensors bytes, checking its format, digest
    /// and values (`path` names it in errors).
    pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<Adapter, Error> {
        let bad = |m: String| Error::format(path, format!("adapter: {m}"));
        let (_, meta) = SafeTensors::read_metadata(bytes).map_err(|e| bad(e.to_string()))?;
        let meta = meta
            .metadata()
            .clone()
            .ok_or_else(|| bad("no metadata".into()))?;
        let get = |k: &str| {
            meta.get(k)
                .cloned()
                .ok_or_else(|| bad(format!("no {k} in the metadata")))
        };
        let num = |k: &str| -> Result<usize, Error> {
            get(k)?
                .parse()
                .map_err(|_| bad(format!("{k} is not a number")))
        };
        if get("format")? != FORMAT {
            return Err(bad(format!("not a {FORMAT} file")));
        }
        let st = SafeTensors::deserialize(bytes).map_err(|e| bad(e.to_string()))?;
        let (first_layer, rank, hidden, ffn) = (
            num("first_layer")?,
            num("rank")?,
            num("hidden")?,
            num("ffn")?,
        );
        let scale: f32 = get("scale")?
            .parse()
            .map_err(|_| bad("scale is not a number".into()))?;
        let layers = st.len() / (2 * DENSE.len());
        if layers == 0 || st.len() != layers * 2 * DENSE.len() || rank == 0 || rank > hidden {
            return Err(bad(format!("{} tensors at rank {rank}", st.len())));
        }
        let mut adapter = Adapter {
            model: get("model")?,
            first_layer,
            rank,
            scale,
            hidden,
            ffn,
            parts: vec![
                LowRank {
                    a: Vec::new(),
                    b: Vec::new()
                };
                layers * DENSE.len()
            ],
        };
        let mut digest = Sha256::new();
        for (name, i) in adapter.tensor_names() {
            let t = st
                .tensor(&name)
                .map_err(|_| bad(format!("missing tensor {name}")))?;
            if t.dtype() != Dtype::F32 {
                return Err(bad(format!("{name} is not f32")));
            }
            digest.update(name.as_bytes());
            digest.update(t.data());
            let values: Vec<f32> = t
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            if name.ends_with(".a") {
                adapter.parts[i].a = values;
            } else {
                adapter.parts[i].b = values;
            }
        }
        if hex::encode(digest.finalize()) != get("sha256")? {
            return Err(bad("checksum mismatch".into()));
        }
        Ok(adapter)
    }

    /// Writes the adapter to `path` durably: a temporary file, fsync, rename,
    /// fsync of the directory.
    pub fn save(&self, path: &Path) -> Result<(), Error> {
        let bytes = self.to_bytes()?;
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "adapter".into());
        let tmp = dir.join(format!(".{name}.tmp"));
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
            std::fs::rename(&tmp, path)?;
            std::fs::File::open(dir)?.sync_all()
        };
        write().map_err(|e| Error::io(path, e))
    }

    /// Reads the adapter file at `path` (see [`Adapter::from_bytes`]).
    pub fn load(path: &Path) -> Result<Adapter, Error> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        Self::from_bytes(&bytes, path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::weights::synthetic;

    fn adapter(cfg: &BertConfig, seed: u32) -> Adapter {
        let (rank, first) = (2, cfg.layers - 1);
        let parts = (0..DENSE.len())
            .map(|j| {
                let (out, inp) = dense_shape(cfg, j);
                let f = |n: usize, k: u32| -> Vec<f32> {
                    (0..n)
                        .map(|i| ((i as u32 * 2654435761 ^ k ^ seed) % 1000) as f32 / 1e4 - 0.05)
                        .collect()
                };
                LowRank {
                    a: f(rank * inp, j as u32),
                    b: f(out * rank, 7 + j as u32),
                }
            })
            .collect();
        Adapter::new("m", cfg, first, rank, 0.5, parts).unwrap()
    }

    #[test]
    fn an_adapter_survives_its_file_and_a_damaged_file_is_refused() {
        let mut cfg = synthetic::e5_small_shape();
        cfg.layers = 2;
        let a = adapter(&cfg, 1);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.adapter");
        a.save(&path).unwrap();
        let back = Adapter::load(&path).unwrap();
        assert_eq!(back, a);
        assert_eq!(back.digest(), a.digest());
        assert_ne!(adapter(&cfg, 2).digest(), a.digest());

        let bytes = std::fs::read(&path).unwrap();
        // A flipped byte in the values, a truncated file, garbage: all refused.
        let mut flipped = bytes.clone();
        let n = flipped.len();
        flipped[n - 3] ^= 0x40;
        for bad in [
            flipped,
            bytes[..bytes.len() / 2].to_vec(),
            b"{garbage".to_vec(),
        ] {
            assert!(Adapter::from_bytes(&bad, &path).is_err());
        }
        // Another model's shape is refused.
        let mut other = cfg.clone();
        other.hidden = 64;
        assert!(back.check(&other).is_err());
    }
}
