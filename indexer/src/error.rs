//! The indexer's one error type: every failure names what went wrong and where.

use std::path::PathBuf;

/// Everything that can go wrong while opening, writing or searching an index.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The index was built with a different embedding model; mixing vectors
    /// from two models would silently give meaningless similarities.
    #[error(
        "index was built with model {index_model:?} (dim {index_dim}) but the current model is \
         {model:?} (dim {dim}); use the original model or rebuild the index in a new data directory"
    )]
    ModelMismatch {
        /// Model recorded in the index manifest.
        index_model: String,
        /// Dimension recorded in the index manifest.
        index_dim: usize,
        /// Model the caller opened the index with.
        model: String,
        /// Its dimension.
        dim: usize,
    },
    /// A file of the index is unreadable, truncated or inconsistent.
    #[error("{path}: corrupt index data: {reason}")]
    Corrupt {
        /// The offending file or directory.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// Files of the full-text index are missing or fail their checksum (found
    /// when opening): searches would silently rank wrongly or fail later, so
    /// the index is not opened.
    #[error(
        "{dir}: the index is damaged: {}. Restore the data directory from a backup, or rebuild \
         it: move it aside and re-ingest the tickets and articles into an empty data directory",
        list_damage(.files)
    )]
    Damaged {
        /// The data directory.
        dir: PathBuf,
        /// Every damaged file, relative to the data directory, in path order.
        files: Vec<DamagedFile>,
    },
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Another process (or another `Index` in this process) holds the writer lock.
    #[error("{path}: index is already open for writing by another process or Index instance")]
    Locked {
        /// The data directory.
        path: PathBuf,
    },
    /// The full-text engine failed.
    #[error("tantivy: {0}")]
    Tantivy(#[from] tantivy::TantivyError),
    /// The embedding model failed.
    #[error("embedding: {0}")]
    Embed(#[from] models::Error),
    /// A document cannot be stored as given.
    #[error("invalid document {id:?}: {reason}")]
    InvalidDocument {
        /// The document's id (may be empty: that is one of the reasons).
        id: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A search request or argument is unusable.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// A line of a JSONL input file is not a valid document.
    #[error("{path}:{line}: {reason}")]
    BadLine {
        /// The input file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong with the line.
        reason: String,
    },
}

/// One damaged file of an index (see [`Error::Damaged`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DamagedFile {
    /// Path relative to the data directory, e.g. `tantivy/<segment>.pos`.
    pub path: PathBuf,
    /// What is wrong with it.
    pub problem: Damage,
}

/// What is wrong with a [`DamagedFile`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Damage {
    /// The last commit needs the file but it does not exist.
    Missing,
    /// The contents do not match the checksum written with them.
    ChecksumMismatch,
    /// The file cannot be read or is too short to hold its footer.
    Unreadable(String),
}

impl std::fmt::Display for Damage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Damage::Missing => f.write_str("missing"),
            Damage::ChecksumMismatch => f.write_str("checksum mismatch"),
            Damage::Unreadable(why) => write!(f, "unreadable: {why}"),
        }
    }
}

fn list_damage(files: &[DamagedFile]) -> String {
    files
        .iter()
        .map(|d| format!("{} ({})", d.path.display(), d.problem))
        .collect::<Vec<_>>()
        .join(", ")
}

impl Error {
    /// The kind of the I/O failure behind this error, if it is one (also one
    /// inside a tantivy or model error): lets callers tell "the disk refuses
    /// writes" from other failures by kind, never by message text.
    pub fn io_kind(&self) -> Option<std::io::ErrorKind> {
        use tantivy::directory::error::{
            LockError, OpenDirectoryError, OpenReadError, OpenWriteError,
        };
        use tantivy::TantivyError as T;
        match self {
            Error::Io { source, .. } => Some(source.kind()),
            Error::Embed(models::Error::Io { source, .. }) => Some(source.kind()),
            Error::Tantivy(
                T::IoError(e)
                | T::OpenWriteError(OpenWriteError::IoError { io_error: e, .. })
                | T::OpenReadError(OpenReadError::IoError { io_error: e, .. })
                | T::OpenDirectoryError(OpenDirectoryError::IoError { io_error: e, .. })
                | T::LockFailure(LockError::IoError(e), _),
            ) => Some(e.kind()),
            _ => None,
        }
    }

    /// Wraps an I/O error with the path it concerns.
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// A corruption error for `path`.
    pub(crate) fn corrupt(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        Error::Corrupt {
            path: path.into(),
            reason: reason.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::ErrorKind;

    use tantivy::directory::error::OpenWriteError;

    use super::*;

    #[test]
    fn io_kind_reaches_through_tantivy_and_model_errors() {
        let io = Error::io("x", ErrorKind::ReadOnlyFilesystem.into());
        assert_eq!(io.io_kind(), Some(ErrorKind::ReadOnlyFilesystem));
        let write = OpenWriteError::wrap_io_error(ErrorKind::StorageFull.into(), "seg".into());
        let tantivy = Error::Tantivy(tantivy::TantivyError::OpenWriteError(write));
        assert_eq!(tantivy.io_kind(), Some(ErrorKind::StorageFull));
        let bare = Error::Tantivy(tantivy::TantivyError::from(std::io::Error::from(
            ErrorKind::PermissionDenied,
        )));
        assert_eq!(bare.io_kind(), Some(ErrorKind::PermissionDenied));
        let model = Error::Embed(models::Error::Io {
            path: "m".into(),
            source: ErrorKind::QuotaExceeded.into(),
        });
        assert_eq!(model.io_kind(), Some(ErrorKind::QuotaExceeded));
        // Text that merely mentions a disk problem is not an I/O failure.
        assert_eq!(
            Error::InvalidRequest("no space left".into()).io_kind(),
            None
        );
    }
}
