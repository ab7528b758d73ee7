//! The services' one error type, and the one rule for what counts as "the
//! data directory cannot take writes".

use std::io::ErrorKind;

/// Whether an I/O failure of this kind means the disk refuses writes (read-only,
/// full, over quota, no permission): the service is then answered 507
/// `storage_unavailable`, not 500. The one list of such kinds, used for the
/// services' own files and for the engine's.
pub fn refuses_writes(kind: ErrorKind) -> bool {
    matches!(
        kind,
        ErrorKind::PermissionDenied
            | ErrorKind::ReadOnlyFilesystem
            | ErrorKind::StorageFull
            | ErrorKind::QuotaExceeded
    )
}

/// Everything a job or retrain can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// No such job for this tenant.
    #[error("{0}")]
    NotFound(String),
    /// The operation conflicts with the state of things: a retrain is already
    /// running, or a job has already finished.
    #[error("{0}")]
    Conflict(String),
    /// The service is not running yet (e.g. the job worker before the engine loads).
    #[error("{0}")]
    NotReady(String),
    /// Stored data the operation needs is unreadable or garbled.
    #[error("{0}")]
    Corrupt(String),
    /// Reading or writing the service's own files failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, naming the file or directory.
        context: String,
        /// The underlying error (its kind decides [`ServiceError::refuses_writes`]).
        source: std::io::Error,
    },
    /// The engine failed.
    #[error(transparent)]
    Engine(#[from] triage::Error),
    /// Anything else (a poisoned lock, a panic, a cancelled task).
    #[error("{0}")]
    Internal(String),
}

impl ServiceError {
    /// An I/O failure while doing `context`.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        ServiceError::Io {
            context: context.into(),
            source,
        }
    }

    /// Whether this failure is the disk refusing writes ([`refuses_writes`]).
    pub fn refuses_writes(&self) -> bool {
        match self {
            ServiceError::Io { source, .. } => refuses_writes(source.kind()),
            ServiceError::Engine(e) => e.io_kind().is_some_and(refuses_writes),
            _ => false,
        }
    }
}

/// Result alias of the services.
pub type ServiceResult<T> = Result<T, ServiceError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_failures_are_told_by_kind_not_message() {
        for kind in [
            ErrorKind::PermissionDenied,
            ErrorKind::ReadOnlyFilesystem,
            ErrorKind::StorageFull,
            ErrorKind::QuotaExceeded,
        ] {
            assert!(
                ServiceError::io("w", kind.into()).refuses_writes(),
                "{kind:?}"
            );
        }
        // A message that merely reads like one is not a storage failure.
        let other = std::io::Error::other("permission denied (says the text)");
        assert!(!ServiceError::io("w", other).refuses_writes());
        let engine = triage::Error::Io {
            path: "x".into(),
            source: ErrorKind::StorageFull.into(),
        };
        assert!(ServiceError::from(engine).refuses_writes());
        let index = triage::Error::Index(indexer::Error::InvalidRequest("no space left".into()));
        assert!(!ServiceError::from(index).refuses_writes());
    }
}
