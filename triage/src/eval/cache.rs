//! A disk cache in front of an embedder, so repeated evaluations of the same
//! data set embed each text once.
//!
//! File format (little-endian): magic `TEC1`, model-name length (u32) and
//! bytes, dimension (u32), then records of kind (u8: 0 query, 1 passage),
//! text length (u32), text bytes, `dim` f32 values. New vectors are appended
//! by [`CachedEmbedder::save`]; a truncated tail (an interrupted save) is
//! ignored on load.

use std::collections::HashMap;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use models::{EmbedKind, Error as ModelError, TextEmbedder};

use crate::error::{Error, Result};

const MAGIC: &[u8; 4] = b"TEC1";

type Key = (u8, String);

/// An embedder that remembers every vector it produced, persisted to one file.
pub struct CachedEmbedder {
    inner: Arc<dyn TextEmbedder>,
    path: PathBuf,
    known: Mutex<HashMap<Key, Vec<f32>>>,
    fresh: Mutex<Vec<Key>>,
}

fn kind_byte(kind: EmbedKind) -> u8 {
    match kind {
        EmbedKind::Query => 0,
        EmbedKind::Passage => 1,
    }
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl CachedEmbedder {
    /// Wraps `inner`, loading `path` if it exists and was written for the same model.
    pub fn open(inner: Arc<dyn TextEmbedder>, path: &Path) -> Result<CachedEmbedder> {
        let mut known = HashMap::new();
        if path.exists() {
            let mut bytes = Vec::new();
            std::fs::File::open(path)
                .and_then(|mut f| f.read_to_end(&mut bytes))
                .map_err(io_err(path))?;
            known = parse(&bytes, inner.name(), inner.dim()).ok_or_else(|| {
                Error::InvalidInput(format!(
                    "{} is not an embedding cache for model {} (delete it to rebuild)",
                    path.display(),
                    inner.name()
                ))
            })?;
            tracing::info!(
                vectors = known.len(),
                "loaded embedding cache {}",
                path.display()
            );
        }
        Ok(CachedEmbedder {
            inner,
            path: path.to_path_buf(),
            known: Mutex::new(known),
            fresh: Mutex::new(Vec::new()),
        })
    }

    /// Appends the vectors computed since the last save to the cache file.
    pub fn save(&self) -> Result<()> {
        let fresh: Vec<Key> = std::mem::take(&mut *self.fresh.lock().map_err(poisoned)?);
        if fresh.is_empty() {
            return Ok(());
        }
        let known = self.known.lock().map_err(poisoned)?;
        let exists = self.path.exists();
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(io_err(&self.path))?;
        let mut w = BufWriter::new(file);
        let mut write = || -> std::io::Result<()> {
            if !exists {
                w.write_all(MAGIC)?;
                let name = self.inner.name().as_bytes();
                w.write_all(&(name.len() as u32).to_le_bytes())?;
                w.write_all(name)?;
                w.write_all(&(self.inner.dim() as u32).to_le_bytes())?;
            }
            for key in &fresh {
                if let Some(v) = known.get(key) {
                    w.write_all(&[key.0])?;
                    w.write_all(&(key.1.len() as u32).to_le_bytes())?;
                    w.write_all(key.1.as_bytes())?;
                    for x in v {
                        w.write_all(&x.to_le_bytes())?;
                    }
                }
            }
            w.flush()
        };
        write().map_err(io_err(&self.path))
    }
}

fn poisoned<T>(_: std::sync::PoisonError<T>) -> Error {
    Error::Numeric("embedding cache lock poisoned".into())
}

/// Parses a cache file; `None` if the header does not match.
fn parse(bytes: &[u8], model: &str, dim: usize) -> Option<HashMap<Key, Vec<f32>>> {
    let mut pos = 0;
    let mut take = |n: usize| -> Option<&[u8]> {
        let s = bytes.get(pos..pos + n)?;
        pos += n;
        Some(s)
    };
    let u32_at = |s: &[u8]| u32::from_le_bytes([s[0], s[1], s[2], s[3]]) as usize;
    if take(4)? != MAGIC {
        return None;
    }
    let name_len = u32_at(take(4)?);
    if take(name_len)? != model.as_bytes() || u32_at(take(4)?) != dim {
        return None;
    }
    let mut out = HashMap::new();
    // Records until the end; a truncated last record is dropped.
    while let Some(kind) = take(1) {
        let kind = kind[0];
        let Some(len) = take(4).map(u32_at) else {
            break;
        };
        let Some(text) = take(len).map(|t| String::from_utf8_lossy(t).into_owned()) else {
            break;
        };
        let Some(raw) = take(4 * dim) else { break };
        let v = raw
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        out.insert((kind, text), v);
    }
    Some(out)
}

impl TextEmbedder for CachedEmbedder {
    fn embed(
        &self,
        texts: &[&str],
        kind: EmbedKind,
    ) -> std::result::Result<Vec<Vec<f32>>, ModelError> {
        let k = kind_byte(kind);
        let missing: Vec<&str> = {
            let known = self
                .known
                .lock()
                .map_err(|_| ModelError::InvalidInput("embedding cache lock poisoned".into()))?;
            let mut seen = std::collections::HashSet::new();
            texts
                .iter()
                .copied()
                .filter(|t| !known.contains_key(&(k, t.to_string())) && seen.insert(*t))
                .collect()
        };
        if !missing.is_empty() {
            let vectors = self.inner.embed(&missing, kind)?;
            let mut known = self
                .known
                .lock()
                .map_err(|_| ModelError::InvalidInput("embedding cache lock poisoned".into()))?;
            let mut fresh = self
                .fresh
                .lock()
                .map_err(|_| ModelError::InvalidInput("embedding cache lock poisoned".into()))?;
            for (t, v) in missing.iter().zip(vectors) {
                known.insert((k, t.to_string()), v);
                fresh.push((k, t.to_string()));
            }
        }
        let known = self
            .known
            .lock()
            .map_err(|_| ModelError::InvalidInput("embedding cache lock poisoned".into()))?;
        texts
            .iter()
            .map(|t| {
                known
                    .get(&(k, t.to_string()))
                    .cloned()
                    .ok_or_else(|| ModelError::InvalidInput("embedding missing from cache".into()))
            })
            .collect()
    }

    fn dim(&self) -> usize {
        self.inner.dim()
    }

    fn name(&self) -> &str {
        self.inner.name()
    }

    fn encoder(&self) -> Option<&models::Embedder> {
        self.inner.encoder()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hashembed::HashEmbedder;

    #[test]
    fn vectors_survive_a_save_and_reload() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache.bin");
        let inner: Arc<dyn TextEmbedder> = Arc::new(HashEmbedder::new(16));
        let c = CachedEmbedder::open(inner.clone(), &path).unwrap();
        let a = c
            .embed(&["你好", "hello", "你好"], EmbedKind::Query)
            .unwrap();
        c.save().unwrap();
        c.embed(&["more"], EmbedKind::Passage).unwrap();
        c.save().unwrap();
        let again = CachedEmbedder::open(inner, &path).unwrap();
        assert_eq!(again.known.lock().unwrap().len(), 3);
        assert_eq!(again.embed(&["你好"], EmbedKind::Query).unwrap()[0], a[0]);
        // A truncated tail is ignored, not an error.
        let len = std::fs::metadata(&path).unwrap().len();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(len - 3)
            .unwrap();
        let cut = CachedEmbedder::open(Arc::new(HashEmbedder::new(16)), &path).unwrap();
        assert_eq!(cut.known.lock().unwrap().len(), 2);
    }

    #[test]
    fn refuses_a_cache_of_another_model() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache.bin");
        let c = CachedEmbedder::open(Arc::new(HashEmbedder::new(16)), &path).unwrap();
        c.embed(&["x"], EmbedKind::Query).unwrap();
        c.save().unwrap();
        assert!(CachedEmbedder::open(Arc::new(HashEmbedder::new(32)), &path).is_err());
    }
}
