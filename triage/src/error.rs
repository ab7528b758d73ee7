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

impl Error {
    /// The kind of the I/O failure behind this error, if it is one (also one
    /// inside an index or model error): lets callers tell "the disk refuses
    /// writes" from other failures by kind, never by message text.
    pub fn io_kind(&self) -> Option<std::io::ErrorKind> {
        match self {
            Error::Io { source, .. } => Some(source.kind()),
            Error::Index(e) => e.io_kind(),
            Error::Model(models::Error::Io { source, .. }) => Some(source.kind()),
            _ => None,
        }
    }
}

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, Error>;

/// Converts a candle error into this crate's numeric error.
pub(crate) fn num(e: candle_core::Error) -> Error {
    Error::Numeric(e.to_string())
}
