//! The services the HTTP adapter (and the CLI) call, which know nothing of
//! HTTP: the durable reclassification job store and its worker ([`jobs`]),
//! the retrain scheduler ([`retrain`]) and background encoder adaptation
//! ([`adapt`]). They fail with [`ServiceError`],
//! which tells a disk that refuses writes from other failures by the I/O
//! error's kind ([`refuses_writes`]), never by its message.

pub mod adapt;
mod error;
pub mod jobs;
pub mod retrain;

pub use error::{refuses_writes, ServiceError, ServiceResult};
