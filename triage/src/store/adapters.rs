//! Each tenant's adapted encoder on disk, beside its trained heads and named
//! like them (`adapter.*` for the default tenant, `tenant-<digest>-adapter.*`
//! for the others), so the shipped model file is never touched and dropping
//! an adaptation is deleting two files.
//!
//! * `<stem>.safetensors`: the accepted [`Adapter`] (only accepted ones are
//!   kept; see [`crate::model::adaptation`]);
//! * `<stem>.json`: the last adaptation's verdict, accepted or not.
//!
//! A missing file is "not adapted". A damaged adapter (bad checksum, shape,
//! values, or made for another model) is logged and ignored: the tenant runs
//! on the shipped encoder until the next adaptation replaces the file.

use std::io::Write;
use std::path::{Path, PathBuf};

use models::Adapter;

use crate::error::{Error, Result};
use crate::model::adaptation::AdaptationSummary;
use crate::store::headcache::tenant_prefix;

/// The directory of adapters (the head cache's).
#[derive(Debug, Clone)]
pub struct AdapterStore {
    dir: PathBuf,
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl AdapterStore {
    /// Adapters kept under `dir` (created on the first store).
    pub fn new(dir: &Path) -> AdapterStore {
        AdapterStore {
            dir: dir.to_path_buf(),
        }
    }

    fn stem(tenant: &str) -> String {
        format!("{}adapter", tenant_prefix(tenant))
    }

    /// Where `tenant`'s adapter is kept.
    pub fn path(&self, tenant: &str) -> PathBuf {
        self.dir.join(format!("{}.safetensors", Self::stem(tenant)))
    }

    fn verdict_path(&self, tenant: &str) -> PathBuf {
        self.dir.join(format!("{}.json", Self::stem(tenant)))
    }

    /// `tenant`'s adapter, when one is stored and reads back whole; a damaged
    /// file is logged and treated as absent.
    pub fn load(&self, tenant: &str) -> Option<Adapter> {
        let path = self.path(tenant);
        if !path.exists() {
            return None;
        }
        match Adapter::load(&path) {
            Ok(a) => Some(a),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e,
                    "unreadable adapter ignored; the tenant uses the shipped encoder until it is adapted again");
                None
            }
        }
    }

    /// The last adaptation's verdict for `tenant`, if one was recorded.
    pub fn verdict(&self, tenant: &str) -> Option<AdaptationSummary> {
        let bytes = std::fs::read(self.verdict_path(tenant)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Records an adaptation's verdict and, when given, its accepted adapter
    /// (both written durably: temporary file, fsync, rename).
    pub fn store(
        &self,
        tenant: &str,
        adapter: Option<&Adapter>,
        verdict: &AdaptationSummary,
    ) -> Result<()> {
        std::fs::create_dir_all(&self.dir).map_err(io(&self.dir))?;
        if let Some(a) = adapter {
            a.save(&self.path(tenant))?;
        }
        let path = self.verdict_path(tenant);
        let json = serde_json::to_vec_pretty(verdict)
            .map_err(|e| Error::InvalidInput(format!("verdict: {e}")))?;
        let tmp = self.dir.join(format!(".{}.json.tmp", Self::stem(tenant)));
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&json)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            std::fs::File::open(&self.dir)?.sync_all()
        };
        write().map_err(io(&path))
    }

    /// Deletes `tenant`'s adapter and verdict; `true` if an adapter was there.
    pub fn remove(&self, tenant: &str) -> Result<bool> {
        let path = self.path(tenant);
        let existed = path.exists();
        for p in [path, self.verdict_path(tenant)] {
            match std::fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io(&p)(e)),
            }
        }
        Ok(existed)
    }
}
