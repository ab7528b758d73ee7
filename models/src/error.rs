//! The models crate's one error type.

use std::path::PathBuf;

/// Everything that can go wrong while fetching, loading or running a model.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A model file is missing, truncated or malformed.
    #[error("{path}: invalid model file: {message}")]
    Format {
        /// The offending file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// No model directory was found and fetching was not allowed.
    #[error("model not found at {path}: {hint}")]
    NotFound {
        /// Where the model was expected.
        path: PathBuf,
        /// How to get it.
        hint: String,
    },
    /// The model name is not one `fetch` knows.
    #[error("unknown model {name:?}; known models: {known}")]
    UnknownModel {
        /// The name asked for.
        name: String,
        /// Comma-separated known names.
        known: String,
    },
    /// Downloading a model failed (offline, HTTP error, bad index answer).
    #[error("downloading {what} failed: {message}\n{hint}")]
    Download {
        /// What was being downloaded.
        what: String,
        /// The underlying failure.
        message: String,
        /// The manual alternative.
        hint: String,
    },
    /// A downloaded or extracted file does not have the pinned sha256.
    #[error("{what}: sha256 mismatch: expected {expected}, got {actual}")]
    Checksum {
        /// The file that was checked.
        what: String,
        /// The pinned hash.
        expected: String,
        /// The hash of what we got.
        actual: String,
    },
    /// Tokenisation failed.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// A tensor operation failed.
    #[error("tensor: {0}")]
    Tensor(#[from] candle_core::Error),
    /// The caller passed something unusable (e.g. zero batch size).
    #[error("invalid input: {0}")]
    InvalidInput(String),
}

impl Error {
    /// Wraps an I/O error with the path it concerns.
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// A malformed-file error for `path`.
    pub(crate) fn format(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Error::Format {
            path: path.into(),
            message: message.into(),
        }
    }
}
