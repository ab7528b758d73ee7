//! Where a model comes from: a known name in the model cache, or a local directory.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::fetch::{fetch, spec};
use crate::Error;

/// The model used when nothing else is asked for: Chinese + English + cross-lingual.
pub const DEFAULT_MODEL: &str = "multilingual-e5-small";

/// File name of the `E5S1` weights inside an installed e5 model directory.
pub(crate) const E5_FILE: &str = "e5-small-q4.bin";

/// Sidecar written into every installed model directory (and optional in a
/// user's own directory): the model's name and text prefixes.
pub(crate) const INFO_FILE: &str = "triage-model.json";

/// Env var naming a known model.
const ENV_MODEL: &str = "TRIAGE_MODEL";
/// Env var pointing at a local HF-layout model directory.
const ENV_MODEL_DIR: &str = "TRIAGE_MODEL_DIR";
/// Env var overriding the model cache directory.
const ENV_CACHE: &str = "TRIAGE_MODEL_CACHE";

/// A model to load: a known name (looked up in, or fetched into, the cache) or a local directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSource {
    /// A model `fetch` knows, e.g. [`DEFAULT_MODEL`].
    Named(String),
    /// A local HuggingFace-layout (or installed) model directory.
    Dir(PathBuf),
}

impl ModelSource {
    /// Picks the source: command-line flags win, then `TRIAGE_MODEL_DIR`, then
    /// `TRIAGE_MODEL`, else [`DEFAULT_MODEL`]. Empty values count as unset.
    pub fn from_env_or(name: Option<String>, dir: Option<PathBuf>) -> ModelSource {
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        if let Some(dir) = dir {
            ModelSource::Dir(dir)
        } else if let Some(name) = name.filter(|n| !n.trim().is_empty()) {
            ModelSource::Named(name)
        } else if let Some(dir) = env(ENV_MODEL_DIR) {
            ModelSource::Dir(PathBuf::from(dir))
        } else {
            ModelSource::Named(env(ENV_MODEL).unwrap_or_else(|| DEFAULT_MODEL.to_string()))
        }
    }
}

/// The model cache: `$TRIAGE_MODEL_CACHE`, else `<user cache dir>/triage/models`
/// (e.g. `~/.cache/triage/models`), else `./.cache/triage/models`.
pub fn default_cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os(ENV_CACHE).filter(|v| !v.is_empty()) {
        return PathBuf::from(dir);
    }
    dirs::cache_dir()
        .unwrap_or_else(|| PathBuf::from(".cache"))
        .join("triage")
        .join("models")
}

/// Names `fetch` can download, the default first.
pub fn known_models() -> Vec<&'static str> {
    vec![DEFAULT_MODEL, "all-MiniLM-L6-v2"]
}

/// Finds the model directory for `source`. A named model missing from
/// `cache_dir` is fetched when `fetch_if_missing` is set (progress on stderr
/// when it is a terminal); otherwise the error says how to get it.
pub fn resolve(
    source: &ModelSource,
    cache_dir: &Path,
    fetch_if_missing: bool,
) -> Result<PathBuf, Error> {
    match source {
        ModelSource::Dir(dir) => {
            if dir.join(E5_FILE).is_file() || dir.join("config.json").is_file() {
                Ok(dir.clone())
            } else {
                Err(Error::NotFound {
                    path: dir.clone(),
                    hint: format!(
                        "expected a HuggingFace-layout directory (config.json, tokenizer.json, \
                         model.safetensors) or an installed model ({E5_FILE})"
                    ),
                })
            }
        }
        ModelSource::Named(name) => {
            let dir = cache_dir.join(name);
            if is_installed(&dir) {
                return Ok(dir);
            }
            spec(name)?;
            if fetch_if_missing {
                use std::io::IsTerminal;
                fetch(name, cache_dir, std::io::stderr().is_terminal())
            } else {
                Err(Error::NotFound {
                    path: dir,
                    hint: format!("run `triage models fetch --model {name}` first"),
                })
            }
        }
    }
}

/// An installed model directory: `fetch` writes the sidecar last, before the
/// atomic rename, so its presence means the directory is complete.
pub(crate) fn is_installed(dir: &Path) -> bool {
    dir.join(INFO_FILE).is_file()
}

/// Contents of the [`INFO_FILE`] sidecar.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ModelInfo {
    /// Stable model identifier stored in index manifests.
    pub name: String,
    /// Prepended to query texts (e.g. `query: `).
    #[serde(default)]
    pub query_prefix: String,
    /// Prepended to passage texts (e.g. `passage: `).
    #[serde(default)]
    pub passage_prefix: String,
}

impl ModelInfo {
    /// Info for a model called `name`: e5 models get their `query: ` / `passage: ` prefixes.
    pub(crate) fn for_name(name: &str) -> Self {
        let e5 = name.to_ascii_lowercase().contains("e5");
        let (q, p) = if e5 {
            ("query: ", "passage: ")
        } else {
            ("", "")
        };
        ModelInfo {
            name: name.to_string(),
            query_prefix: q.to_string(),
            passage_prefix: p.to_string(),
        }
    }

    /// Reads `dir`'s sidecar, or derives the info from the directory name.
    pub(crate) fn load(dir: &Path) -> Result<Self, Error> {
        let path = dir.join(INFO_FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                serde_json::from_str(&text).map_err(|e| Error::format(&path, e.to_string()))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let canonical = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
                let name = canonical
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_else(|| "local-model".to_string());
                Ok(Self::for_name(&name))
            }
            Err(e) => Err(Error::io(&path, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_win_over_default() {
        assert_eq!(
            ModelSource::from_env_or(Some("x".into()), Some("/d".into())),
            ModelSource::Dir("/d".into())
        );
        assert_eq!(
            ModelSource::from_env_or(Some("all-MiniLM-L6-v2".into()), None),
            ModelSource::Named("all-MiniLM-L6-v2".into())
        );
    }

    #[test]
    fn prefixes_follow_the_model_name_or_sidecar() {
        assert_eq!(
            ModelInfo::for_name("multilingual-e5-small").query_prefix,
            "query: "
        );
        assert_eq!(ModelInfo::for_name("all-MiniLM-L6-v2").passage_prefix, "");
        let dir = tempfile::tempdir().unwrap();
        let info = ModelInfo {
            name: "custom".into(),
            query_prefix: "q> ".into(),
            passage_prefix: String::new(),
        };
        std::fs::write(
            dir.path().join(INFO_FILE),
            serde_json::to_string(&info).unwrap(),
        )
        .unwrap();
        assert_eq!(ModelInfo::load(dir.path()).unwrap(), info);
        std::fs::write(dir.path().join(INFO_FILE), "{").unwrap();
        assert!(matches!(
            ModelInfo::load(dir.path()),
            Err(Error::Format { .. })
        ));
    }

    #[test]
    fn resolve_without_fetch_explains_what_to_do() {
        let cache = tempfile::tempdir().unwrap();
        let named = ModelSource::Named(DEFAULT_MODEL.into());
        let err = resolve(&named, cache.path(), false).unwrap_err();
        assert!(err.to_string().contains("triage models fetch"), "{err}");
        let unknown = ModelSource::Named("no-such-model".into());
        assert!(matches!(
            resolve(&unknown, cache.path(), true),
            Err(Error::UnknownModel { .. })
        ));
        let empty_dir = ModelSource::Dir(cache.path().to_path_buf());
        assert!(matches!(
            resolve(&empty_dir, cache.path(), true),
            Err(Error::NotFound { .. })
        ));
    }
}
