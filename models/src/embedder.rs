//! [`Embedder`]: texts in, L2-normalised sentence vectors out.
//!
//! Long texts are windowed like the reference e5 engine: content tokens are
//! split into windows of `max_positions − 2`, each window is encoded with its
//! own begin/end tokens, and the windows' mean-pooled vectors are averaged
//! weighted by their content-token counts, then L2-normalised. Only text past
//! [`EmbedderOptions::max_windows`] windows (2,040 tokens by default) is left
//! out: the start of a ticket carries its meaning, and a pasted log of 16,000
//! characters would otherwise hold a request for ten seconds. Windows are packed (concatenated, no padding) into forward
//! passes bounded by [`EmbedderOptions::max_batch`] windows and
//! [`EmbedderOptions::max_batch_tokens`] tokens.

use std::path::Path;
use std::sync::Arc;

use crate::config::BertConfig;
use crate::e5s1::E5s1;
use crate::encoder::{l2_normalize, pooled, WorkspacePool};
use crate::source::{resolve, ModelInfo, ModelSource, E5_FILE};
use crate::tokenize::TextTokenizer;
use crate::weights::BertWeights;
use crate::Adapter;
use crate::{EmbedKind, Error, TextEmbedder};

/// The arithmetic of the dense layers (90 % of the work).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Precision {
    /// f32 weights (the 4-bit file's dequantised exactly) and activations.
    F32,
    /// The 4-bit file's weights kept exact as bytes, activations quantised
    /// to int8 per block of 32 (as the reference C engine does), integer
    /// dot products. Models without 4-bit weights run in f32.
    Int8,
}

impl Precision {
    /// `TRIAGE_EMBED_PRECISION` (`f32` or `int8`), else the default.
    pub fn from_env() -> Precision {
        match std::env::var("TRIAGE_EMBED_PRECISION")
            .as_deref()
            .map(str::trim)
        {
            Ok("int8") | Ok("i8") | Ok("q8") => Precision::Int8,
            Ok("f32") | Ok("fp32") => Precision::F32,
            Ok(other) if !other.is_empty() => {
                tracing::warn!(value = other, "unknown TRIAGE_EMBED_PRECISION (f32, int8)");
                Precision::DEFAULT
            }
            _ => Precision::DEFAULT,
        }
    }

    /// The default precision.
    pub const DEFAULT: Precision = Precision::F32;

    /// `f32` or `int8`.
    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Int8 => "int8",
        }
    }
}

/// Threads one forward pass may use: `TRIAGE_EMBED_THREADS`, else every core.
fn threads_from_env() -> usize {
    std::env::var("TRIAGE_EMBED_THREADS")
        .ok()
        .and_then(|s| s.trim().parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// Batching limits and execution settings for [`Embedder`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmbedderOptions {
    /// Most windows encoded in one forward pass (default 32).
    pub max_batch: usize,
    /// Most tokens in one forward pass (default 8192); bounds activation
    /// memory (~20 KB per token for e5-small). A single window always fits.
    pub max_batch_tokens: usize,
    /// Most windows encoded per text (default 4); later tokens are ignored.
    pub max_windows: usize,
    /// Dense-layer arithmetic (default: `TRIAGE_EMBED_PRECISION`, else
    /// [`Precision::DEFAULT`]).
    pub precision: Precision,
    /// Most threads one forward pass uses (default: `TRIAGE_EMBED_THREADS`,
    /// else every core; inputs of at most 64 tokens use at most 4).
    pub threads: usize,
}

impl Default for EmbedderOptions {
    fn default() -> Self {
        EmbedderOptions {
            max_batch: 32,
            max_batch_tokens: 8192,
            max_windows: 4,
            precision: Precision::from_env(),
            threads: threads_from_env(),
        }
    }
}

/// A loaded sentence-embedding model (thread-safe; share it behind an `Arc`).
pub struct Embedder {
    pub(crate) info: ModelInfo,
    pub(crate) tokenizer: Arc<TextTokenizer>,
    pub(crate) weights: BertWeights,
    pub(crate) opts: EmbedderOptions,
    pub(crate) workspaces: WorkspacePool,
    /// The first layer an [`Adapter`] changed, for adapted encoders.
    pub(crate) adapted_from: Option<usize>,
}

/// One encoder input: a slice of a text's content tokens.
struct Window {
    text: usize,
    ids: Vec<u32>,
    weight: f32,
}

impl Embedder {
    /// Loads a model directory: an installed e5 model (`e5-small-q4.bin`) or a
    /// HuggingFace-layout BERT-family directory (`config.json`,
    /// `tokenizer.json`, `model.safetensors`).
    pub fn load(dir: &Path, opts: EmbedderOptions) -> Result<Embedder, Error> {
        if opts.max_batch == 0 || opts.max_batch_tokens == 0 {
            return Err(Error::InvalidInput(
                "max_batch and max_batch_tokens must be at least 1".into(),
            ));
        }
        let info = ModelInfo::load(dir)?;
        let e5 = dir.join(E5_FILE);
        let (tokenizer, weights) = if e5.is_file() {
            let file = Arc::new(E5s1::open(&e5)?);
            let tokenizer = TextTokenizer::from_sentencepiece(&file.vocab, file.norm.clone())?;
            (tokenizer, BertWeights::from_e5s1(file, opts.precision)?)
        } else {
            let need = ["config.json", "tokenizer.json", "model.safetensors"];
            let missing: Vec<_> = need.iter().filter(|f| !dir.join(f).is_file()).collect();
            if !missing.is_empty() {
                return Err(Error::NotFound {
                    path: dir.to_path_buf(),
                    hint: format!(
                        "missing {missing:?}; expected a HuggingFace-layout BERT directory"
                    ),
                });
            }
            let cfg = BertConfig::from_hf_file(&dir.join("config.json"))?;
            let tokenizer = TextTokenizer::from_hf_file(&dir.join("tokenizer.json"))?;
            (
                tokenizer,
                BertWeights::from_safetensors(&dir.join("model.safetensors"), cfg)?,
            )
        };
        tracing::debug!(
            model = %info.name,
            dir = %dir.display(),
            precision = if weights.int8 { "int8" } else { "f32" },
            kernels = %crate::cpu::cpu_info().summary(),
            "embedding model loaded"
        );
        Ok(Embedder {
            info,
            tokenizer: Arc::new(tokenizer),
            weights,
            opts,
            workspaces: WorkspacePool::default(),
            adapted_from: None,
        })
    }

    /// This encoder with `adapter`'s low-rank updates merged into f32 copies
    /// of the layers it changes; every other layer, the tokenizer and the
    /// options are shared with `self`, so it runs on the same fast forward
    /// pass. Its name is the model's with the adapter's digest appended.
    /// Refused when the adapter was made for another model or shape.
    pub fn adapted(&self, adapter: &Adapter) -> Result<Embedder, Error> {
        if self.adapted_from.is_some() {
            return Err(Error::InvalidInput(
                "this encoder is already adapted".into(),
            ));
        }
        if adapter.model() != self.info.name {
            return Err(Error::InvalidInput(format!(
                "the adapter was made for {}, this model is {}",
                adapter.model(),
                self.info.name
            )));
        }
        let weights = adapter.merged(&self.weights)?;
        let mut info = self.info.clone();
        info.name = format!("{}+adapter-{}", self.info.name, adapter.digest());
        Ok(Embedder {
            info,
            tokenizer: Arc::clone(&self.tokenizer),
            weights,
            opts: self.opts.clone(),
            workspaces: WorkspacePool::default(),
            adapted_from: Some(adapter.first_layer()),
        })
    }

    /// The dense-layer arithmetic in use (f32 when the model has no 4-bit
    /// weights, whatever was asked for).
    pub fn precision(&self) -> Precision {
        if self.weights.int8 {
            Precision::Int8
        } else {
            Precision::F32
        }
    }

    /// Most threads one forward pass uses.
    pub fn threads(&self) -> usize {
        self.opts.threads
    }

    /// Changes the most threads one forward pass uses (at least 1), e.g. to
    /// measure one and two threads with the same loaded model.
    pub fn set_threads(&mut self, threads: usize) {
        self.opts.threads = threads.max(1);
    }

    /// Resolves `source` (fetching a named model into `cache_dir` if missing) and loads it.
    pub fn load_source(
        source: &ModelSource,
        cache_dir: &Path,
        opts: EmbedderOptions,
    ) -> Result<Embedder, Error> {
        Self::load(&resolve(source, cache_dir, true)?, opts)
    }

    /// Token ids the model sees for `text` as `kind`: prefix included, framed by
    /// the begin/end tokens, not windowed (long texts give more than
    /// [`Embedder::max_positions`] ids). For tests and token counting.
    pub fn token_ids(&self, text: &str, kind: EmbedKind) -> Result<Vec<u32>, Error> {
        let content = self.content_ids(text, kind)?;
        let mut ids = Vec::with_capacity(content.len() + 2);
        ids.extend(self.tokenizer.bos);
        ids.extend(content);
        ids.extend(self.tokenizer.eos);
        Ok(ids)
    }

    /// Transformer layers of the encoder.
    pub fn layers(&self) -> usize {
        self.weights.cfg.layers
    }

    /// Positions one window can use, including the begin/end tokens (512 for e5).
    pub fn max_positions(&self) -> usize {
        self.weights.cfg.usable_positions()
    }

    fn content_ids(&self, text: &str, kind: EmbedKind) -> Result<Vec<u32>, Error> {
        let prefix = match kind {
            EmbedKind::Query => &self.info.query_prefix,
            EmbedKind::Passage => &self.info.passage_prefix,
        };
        self.tokenizer.content_ids(&format!("{prefix}{text}"))
    }

    /// Splits every text into framed windows.
    fn windows(&self, texts: &[&str], kind: EmbedKind) -> Result<Vec<Window>, Error> {
        let frame =
            usize::from(self.tokenizer.bos.is_some()) + usize::from(self.tokenizer.eos.is_some());
        let per_window = self.max_positions().saturating_sub(frame).max(1);
        let mut windows = Vec::new();
        for (text, t) in texts.iter().enumerate() {
            let content = self.content_ids(t, kind)?;
            let chunks: Vec<&[u32]> = if content.is_empty() {
                vec![&[]]
            } else {
                content
                    .chunks(per_window)
                    .take(self.opts.max_windows.max(1))
                    .collect()
            };
            for chunk in chunks {
                let mut ids = Vec::with_capacity(chunk.len() + frame);
                ids.extend(self.tokenizer.bos);
                ids.extend_from_slice(chunk);
                ids.extend(self.tokenizer.eos);
                if ids.is_empty() {
                    // No content and no special tokens: encode a lone pad-free token 0.
                    ids.push(0);
                }
                windows.push(Window {
                    text,
                    weight: chunk.len().max(1) as f32,
                    ids,
                });
            }
        }
        Ok(windows)
    }
}

impl TextEmbedder for Embedder {
    fn embed(&self, texts: &[&str], kind: EmbedKind) -> Result<Vec<Vec<f32>>, Error> {
        let h = self.dim();
        let windows = self.windows(texts, kind)?;
        let mut sums = vec![vec![0f32; h]; texts.len()];
        let mut start = 0;
        while start < windows.len() {
            // Take windows while they fit the batch limits (always at least one).
            let mut end = start + 1;
            let mut tokens = windows[start].ids.len();
            while end < windows.len()
                && end - start < self.opts.max_batch
                && tokens + windows[end].ids.len() <= self.opts.max_batch_tokens
            {
                tokens += windows[end].ids.len();
                end += 1;
            }
            let batch: Vec<Vec<u32>> = windows[start..end].iter().map(|w| w.ids.clone()).collect();
            for (w, v) in windows[start..end].iter().zip(pooled(
                &self.weights,
                &batch,
                self.opts.threads,
                &self.workspaces,
            )?) {
                for (s, x) in sums[w.text].iter_mut().zip(v) {
                    *s += w.weight * x;
                }
            }
            start = end;
        }
        for v in &mut sums {
            l2_normalize(v);
        }
        Ok(sums)
    }

    fn dim(&self) -> usize {
        self.weights.cfg.hidden
    }

    fn name(&self) -> &str {
        &self.info.name
    }

    fn encoder(&self) -> Option<&Embedder> {
        Some(self)
    }
}
