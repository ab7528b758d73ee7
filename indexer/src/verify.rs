//! Integrity check of the full-text index at open: every file that the
//! segments of the last commit (`tantivy/meta.json`) need must exist and
//! match the CRC32 that tantivy wrote in its footer.
//!
//! Without this check a flipped block in a `.term` file opens fine and only
//! ranks wrongly, and a deleted `.pos` file opens fine and fails every later
//! phrase search and write: damage must stop the start, naming the files.

use std::path::{Path, PathBuf};
use std::time::Instant;

use tantivy::index::SegmentComponent;

use crate::error::{Damage, DamagedFile};
use crate::Error;

/// Checks every file the committed segments of `index` (stored in `tdir`,
/// inside the data directory `data_dir`) need. Reads each file once, in full.
pub(crate) fn check_tantivy(
    data_dir: &Path,
    tdir: &Path,
    index: &tantivy::Index,
) -> Result<(), Error> {
    let metas = index
        .load_metas()
        .map_err(|e| Error::corrupt(tdir.join("meta.json"), e.to_string()))?;
    let mut needed: Vec<PathBuf> = metas.list_segment_files().into_iter().collect();
    // The alive-docs bitset exists only for segments with deletes.
    for seg in metas.segments.iter().filter(|s| !s.has_deletes()) {
        let del = seg.relative_path(SegmentComponent::Delete);
        needed.retain(|p| *p != del);
    }
    needed.sort();
    let started = Instant::now();
    let rel_dir = tdir.strip_prefix(data_dir).unwrap_or(tdir);
    let mut files = Vec::new();
    let mut bytes = 0u64;
    for path in &needed {
        bytes += std::fs::metadata(tdir.join(path)).map_or(0, |m| m.len());
        let problem = if !tdir.join(path).is_file() {
            Some(Damage::Missing)
        } else {
            match index.directory().validate_checksum(path) {
                Ok(true) => None,
                Ok(false) => Some(Damage::ChecksumMismatch),
                Err(e) => Some(Damage::Unreadable(e.to_string())),
            }
        };
        if let Some(problem) = problem {
            files.push(DamagedFile {
                path: rel_dir.join(path),
                problem,
            });
        }
    }
    tracing::info!(
        files = needed.len(),
        mib = bytes / (1 << 20),
        seconds = started.elapsed().as_secs_f64(),
        damaged = files.len(),
        "index files verified"
    );
    if files.is_empty() {
        Ok(())
    } else {
        Err(Error::Damaged {
            dir: data_dir.to_path_buf(),
            files,
        })
    }
}
