//! `manifest.json`: which embedding model (name and dimension) an index was
//! built with, so it is never searched with vectors from another model.

use std::fs;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::graph_store::sync_dir;
use crate::Error;

/// File name of the manifest inside the data directory.
pub(crate) const FILE: &str = "manifest.json";
const FORMAT: u32 = 1;

/// The manifest's contents.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub(crate) struct Manifest {
    /// On-disk layout version.
    pub format: u32,
    /// Embedding model name.
    pub model: String,
    /// Embedding dimension.
    pub dim: usize,
}

/// Reads the manifest, or writes one for `model`/`dim` if there is none yet
/// (atomically: temp file, fsync, rename). Refuses another model.
pub(crate) fn check_or_create(dir: &Path, model: &str, dim: usize) -> Result<(), Error> {
    let path = dir.join(FILE);
    if path.exists() {
        let bytes = fs::read(&path).map_err(|e| Error::io(&path, e))?;
        let m: Manifest = serde_json::from_slice(&bytes)
            .map_err(|e| Error::corrupt(&path, format!("unreadable manifest: {e}")))?;
        if m.format != FORMAT {
            return Err(Error::corrupt(
                &path,
                format!(
                    "manifest format {} is not supported (expected {FORMAT})",
                    m.format
                ),
            ));
        }
        if m.model != model || m.dim != dim {
            return Err(Error::ModelMismatch {
                index_model: m.model,
                index_dim: m.dim,
                model: model.to_string(),
                dim,
            });
        }
        return Ok(());
    }
    let m = Manifest {
        format: FORMAT,
        model: model.to_string(),
        dim,
    };
    let json = serde_json::to_vec_pretty(&m).map_err(|e| Error::corrupt(&path, e.to_string()))?;
    let tmp = dir.join(format!("{FILE}.tmp"));
    fs::write(&tmp, json).map_err(|e| Error::io(&tmp, e))?;
    fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(|e| Error::io(&tmp, e))?;
    fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e))?;
    sync_dir(dir)
}
