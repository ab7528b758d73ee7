//! Trained classifier heads kept on disk between starts.
//!
//! Training both heads takes about a minute at 100k tickets on a 2-core
//! machine, and every start used to pay it. A head is stored with a SHA-256
//! digest of exactly what it was trained on (the vectors, the labels, the
//! options and this crate's version); a start whose training data digests the
//! same loads the head instead of training it. The files are a cache: a
//! missing, stale or unreadable one only means training again.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::model::classify::{Classifier, ClassifierOptions};

/// Bumped when the stored format or the training method changes meaning.
const FORMAT: &str = "heads-v1";

/// Digest of a head's training data: vectors `x`, one label per row, options.
pub fn training_key(x: &[f32], labels: &[String], opts: &ClassifierOptions) -> String {
    let mut h = Sha256::new();
    h.update(FORMAT);
    h.update(env!("CARGO_PKG_VERSION"));
    h.update(format!("{opts:?}"));
    h.update((labels.len() as u64).to_le_bytes());
    for l in labels {
        h.update((l.len() as u64).to_le_bytes());
        h.update(l.as_bytes());
    }
    for v in x {
        h.update(v.to_le_bytes());
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// The start of the file names of `tenant`'s stored heads and adapter: empty
/// for the default tenant (whose files keep the names they always had),
/// `tenant-<first 8 bytes of its SHA-256>-` for the others (any string is a
/// valid tenant, so names carry a digest, never the tenant itself).
pub fn tenant_prefix(tenant: &str) -> String {
    if tenant.is_empty() {
        return String::new();
    }
    let digest = Sha256::digest(tenant.as_bytes());
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("tenant-{hex}-")
}

/// A stored head and the digest of its training data.
#[derive(Serialize, Deserialize)]
struct Stored {
    key: String,
    classifier: Classifier,
}

/// The directory of stored heads, one JSON file per head name.
#[derive(Debug, Clone)]
pub struct HeadCache {
    dir: PathBuf,
}

impl HeadCache {
    /// Heads stored under `dir` (created on the first store).
    pub fn new(dir: &Path) -> HeadCache {
        HeadCache {
            dir: dir.to_path_buf(),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.json"))
    }

    /// The head `name` if it was trained on data with digest `key`.
    pub fn load(&self, name: &str, key: &str) -> Option<Classifier> {
        let path = self.path(name);
        let bytes = std::fs::read(&path).ok()?;
        match serde_json::from_slice::<Stored>(&bytes) {
            Ok(s) if s.key == key => Some(s.classifier),
            Ok(_) => None,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "unreadable stored head; training again");
                None
            }
        }
    }

    /// Stores head `name` for training data `key` (written to a temporary
    /// file, then renamed; a failure is logged, not returned: the head is in
    /// memory and the next start trains again).
    pub fn store(&self, name: &str, key: &str, classifier: &Classifier) {
        let path = self.path(name);
        let tmp = self.dir.join(format!(".{name}.json.tmp"));
        let write = || -> std::io::Result<()> {
            std::fs::create_dir_all(&self.dir)?;
            let json = serde_json::to_vec(&Stored {
                key: key.to_string(),
                classifier: classifier.clone(),
            })
            .map_err(std::io::Error::other)?;
            std::fs::write(&tmp, json)?;
            std::fs::rename(&tmp, &path)
        };
        if let Err(e) = write() {
            tracing::warn!(path = %path.display(), error = %e, "could not store the trained head");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data() -> (Vec<f32>, Vec<String>) {
        let x = vec![
            1.0, 0.0, 0.9, 0.1, 0.0, 1.0, 0.1, 0.9, 0.95, 0.05, 0.05, 0.95,
        ];
        let y = ["a", "a", "b", "b", "a", "b"].map(String::from).to_vec();
        (x, y)
    }

    #[test]
    fn a_head_is_loaded_only_for_the_same_training_data() {
        let dir = tempfile::tempdir().unwrap();
        let cache = HeadCache::new(&dir.path().join("heads"));
        let (x, y) = data();
        let opts = ClassifierOptions::for_size(y.len());
        let clf = Classifier::train(&x, 2, &y, &opts).unwrap();
        let key = training_key(&x, &y, &opts);
        assert!(cache.load("category", &key).is_none());
        cache.store("category", &key, &clf);
        let loaded = cache.load("category", &key).unwrap();
        assert_eq!(loaded.labels(), clf.labels());
        let q = [0.8, 0.2];
        assert_eq!(
            loaded.predict(&q, &[]).unwrap(),
            clf.predict(&q, &[]).unwrap()
        );
        // Another label, another vector or other options: another key.
        let mut y2 = y.clone();
        y2[0] = "b".into();
        let mut x2 = x.clone();
        x2[0] = 0.99;
        let mut opts2 = opts.clone();
        opts2.k += 1;
        for other in [
            training_key(&x, &y2, &opts),
            training_key(&x2, &y, &opts),
            training_key(&x, &y, &opts2),
        ] {
            assert_ne!(other, key);
            assert!(cache.load("category", &other).is_none());
        }
        // A damaged file is a miss, not an error.
        std::fs::write(dir.path().join("heads/category.json"), b"{garbage").unwrap();
        assert!(cache.load("category", &key).is_none());
    }
}
