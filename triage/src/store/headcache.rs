//! Trained classifier heads kept on disk between starts.
//!
//! Training both heads takes about a minute at 100k tickets on a 2-core
//! machine, and every start used to pay it. A head is stored with a SHA-256
//! digest of exactly what it was trained on (computed by the engine from the
//! rows' ids, text hashes and labels, the shared vectors, the options, the
//! model and this crate's version); a start whose training data digests the
//! same loads the head instead of training it. The files are a cache: a
//! missing, stale or unreadable one only means training again.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::model::classify::Classifier;

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
    use crate::model::classify::ClassifierOptions;

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
        let key = "digest-of-the-data";
        assert!(cache.load("category", key).is_none());
        cache.store("category", key, &clf);
        let loaded = cache.load("category", key).unwrap();
        assert_eq!(loaded.labels(), clf.labels());
        let q = [0.8, 0.2];
        assert_eq!(
            loaded.predict(&q, &[]).unwrap(),
            clf.predict(&q, &[]).unwrap()
        );
        // Another digest: a miss.
        assert!(cache.load("category", "another-digest").is_none());
        // A damaged file is a miss, not an error.
        std::fs::write(dir.path().join("heads/category.json"), b"{garbage").unwrap();
        assert!(cache.load("category", key).is_none());
    }
}
