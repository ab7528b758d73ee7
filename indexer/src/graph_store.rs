//! Saving and loading the HNSW graph, a derived cache of the vectors stored
//! in tantivy.
//!
//! A dump is written into a fresh temporary directory, checksummed (sha256 of
//! each file, recorded in `graph.json`), synced and renamed into place, so a
//! crash leaves either the old dump, the new one, or none. At load, anything
//! that does not verify is reported and the caller rebuilds from tantivy: the
//! graph library asserts (panics) on malformed input, so it is only handed
//! files whose checksums match what this code wrote.

use std::fs;
use std::io::Read;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use hnsw_rs::prelude::{AnnT, DistDot, HnswIo};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::vectors::Graph;
use crate::Error;

/// Directory of the current dump inside the data directory.
pub(crate) const GRAPH_DIR: &str = "graph";
const TMP_PREFIX: &str = "graph.tmp-";
const SIDECAR: &str = "graph.json";
const BASENAME: &str = "hnsw";
const FORMAT: u32 = 1;

/// What `graph.json` records about a dump.
#[derive(Serialize, Deserialize)]
struct Sidecar {
    format: u32,
    basename: String,
    dim: usize,
    points: usize,
    /// File name → sha256 (hex).
    files: Vec<(String, String)>,
}

fn sha256_file(path: &Path) -> Result<String, Error> {
    let mut f = fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

fn sync_file(path: &Path) -> Result<(), Error> {
    fs::File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|e| Error::io(path, e))
}

/// Makes renames inside `dir` durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), Error> {
    sync_file(dir)
}

/// Removes temporary dump directories left by a crash.
pub(crate) fn clean_temporaries(data_dir: &Path) {
    let Ok(entries) = fs::read_dir(data_dir) else {
        return;
    };
    for e in entries.flatten() {
        if e.file_name().to_string_lossy().starts_with(TMP_PREFIX) {
            if let Err(err) = fs::remove_dir_all(e.path()) {
                tracing::warn!(path = %e.path().display(), %err, "could not remove stale graph dump");
            }
        }
    }
}

/// Writes `graph` (with `points` points of dimension `dim`) as the current dump.
pub(crate) fn save(data_dir: &Path, graph: &Graph, dim: usize, points: usize) -> Result<(), Error> {
    let nonce = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let tmp = data_dir.join(format!("{TMP_PREFIX}{}-{nonce}", std::process::id()));
    fs::create_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    let basename = catch_unwind(AssertUnwindSafe(|| graph.file_dump(&tmp, BASENAME)))
        .map_err(|_| Error::corrupt(&tmp, "graph dump panicked"))?
        .map_err(|e| Error::corrupt(&tmp, format!("graph dump failed: {e}")))?;
    let mut files = Vec::new();
    for suffix in ["hnsw.graph", "hnsw.data"] {
        let name = format!("{basename}.{suffix}");
        let path = tmp.join(&name);
        sync_file(&path)?;
        files.push((name, sha256_file(&path)?));
    }
    let sidecar = Sidecar {
        format: FORMAT,
        basename,
        dim,
        points,
        files,
    };
    let side_path = tmp.join(SIDECAR);
    let json = serde_json::to_vec_pretty(&sidecar)
        .map_err(|e| Error::corrupt(&side_path, e.to_string()))?;
    fs::write(&side_path, json).map_err(|e| Error::io(&side_path, e))?;
    sync_file(&side_path)?;
    sync_dir(&tmp)?;
    let dest = data_dir.join(GRAPH_DIR);
    if dest.exists() {
        fs::remove_dir_all(&dest).map_err(|e| Error::io(&dest, e))?;
    }
    fs::rename(&tmp, &dest).map_err(|e| Error::io(&dest, e))?;
    sync_dir(data_dir)
}

/// Loads the current dump. `Ok(None)` if there is none; `Err(Corrupt)` if it
/// does not verify (the caller logs it and rebuilds).
pub(crate) fn load(data_dir: &Path, dim: usize) -> Result<Option<(Graph, Vec<u64>)>, Error> {
    let dir = data_dir.join(GRAPH_DIR);
    let side_path = dir.join(SIDECAR);
    if !side_path.exists() {
        return Ok(None);
    }
    let bytes = fs::read(&side_path).map_err(|e| Error::io(&side_path, e))?;
    let side: Sidecar = serde_json::from_slice(&bytes)
        .map_err(|e| Error::corrupt(&side_path, format!("unreadable graph manifest: {e}")))?;
    if side.format != FORMAT || side.dim != dim {
        return Err(Error::corrupt(
            &side_path,
            format!(
                "graph format {} dim {} does not match expected format {FORMAT} dim {dim}",
                side.format, side.dim
            ),
        ));
    }
    for (name, want) in &side.files {
        let path: PathBuf = dir.join(name);
        if !path.exists() {
            return Err(Error::corrupt(&path, "graph file missing"));
        }
        let got = sha256_file(&path)?;
        if &got != want {
            return Err(Error::corrupt(&path, "graph file checksum mismatch"));
        }
    }
    let graph = catch_unwind(AssertUnwindSafe(|| load_leaked(&dir, &side.basename)))
        .map_err(|_| Error::corrupt(&dir, "graph loader panicked"))?
        .map_err(|e| Error::corrupt(&dir, format!("graph unreadable: {e}")))?;
    let vids: Vec<u64> = graph
        .get_point_indexation()
        .into_iter()
        .map(|p| p.get_origin_id() as u64)
        .collect();
    if vids.len() != side.points {
        return Err(Error::corrupt(
            &dir,
            format!(
                "graph has {} points, manifest says {}",
                vids.len(),
                side.points
            ),
        ));
    }
    Ok(Some((graph, vids)))
}

/// Loads a dumped graph. The loaded graph borrows from its loader for its
/// whole life (hnsw_rs ties the two lifetimes for memory-mapped data, which
/// is not used here), so the small loader struct is leaked: one per load.
fn load_leaked(dir: &Path, basename: &str) -> Result<Graph, String> {
    let io: &'static mut HnswIo = Box::leak(Box::new(HnswIo::new(dir, basename)));
    io.load_hnsw::<f32, DistDot>().map_err(|e| e.to_string())
}
