//! The triage crate's one error type.

use std::path::PathBuf;

/// Everything that can go wrong while loading a pack or making a decision.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A pack file is invalid; the message names the file, line and key.
    #[error("{file}:{line}: {key}: {message}")]
    Pack {
        /// The file that failed validation.
        file: PathBuf,
        /// 1-based line number (0 when unknown).
        line: usize,
        /// The offending key or field.
        key: String,
        /// What is wrong.
        message: String,
    },
    /// A request was invalid (empty text, unknown label, ...).
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// A referenced document does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// The embedding model failed.
    #[error(transparent)]
    Model(#[from] models::Error),
    /// The index failed.
    #[error(transparent)]
    Index(#[from] indexer::Error),
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A numeric routine (training, calibration) failed.
    #[error("numeric error: {0}")]
    Numeric(String),
}

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, Error>;

/// Converts a candle error into this crate's numeric error.
pub(crate) fn num(e: candle_core::Error) -> Error {
    Error::Numeric(e.to_string())
}
