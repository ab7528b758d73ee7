//! The pack marker: which pack a data directory belongs to, and the
//! fingerprint of the pack documents it last ingested (`pack-ingested` in the
//! data directory; see the pack sync for how it is used).

use std::path::Path;

use crate::error::{Error, Result};

/// Name of the marker file in the data directory.
pub const MARKER_FILE: &str = "pack-ingested";

/// Prefix of the marker line that holds the fingerprint.
const FINGERPRINT_KEY: &str = "fingerprint=";

/// What the `pack-ingested` marker records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackMarker {
    /// The pack the data directory belongs to (`[pack] name`).
    pub name: String,
    /// The fingerprint of the pack documents last ingested (`Pack::fingerprint`); `None` in
    /// markers written before fingerprints existed (treated as changed).
    pub fingerprint: Option<String>,
}

impl PackMarker {
    /// Parses a marker: the pack name on the first line, then an optional
    /// `fingerprint=…` line. `None` when there is no name.
    pub fn parse(text: &str) -> Option<PackMarker> {
        let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
        let name = lines.next()?.to_string();
        let fingerprint = lines
            .find_map(|l| l.strip_prefix(FINGERPRINT_KEY))
            .map(|f| f.trim().to_string())
            .filter(|f| !f.is_empty());
        Some(PackMarker { name, fingerprint })
    }

    /// The marker as written to disk (readable by [`PackMarker::parse`]; the
    /// first line alone is what older versions wrote and read).
    pub fn render(&self) -> String {
        match &self.fingerprint {
            Some(f) => format!("{}\n{FINGERPRINT_KEY}{f}\n", self.name),
            None => format!("{}\n", self.name),
        }
    }

    /// Reads the marker at `path`; `None` if it does not exist or is empty.
    pub fn read(path: &Path) -> Result<Option<PackMarker>> {
        match std::fs::read_to_string(path) {
            Ok(text) => Ok(PackMarker::parse(&text)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(Error::Io {
                path: path.to_path_buf(),
                source,
            }),
        }
    }

    /// Writes the marker atomically (a temporary file renamed over it), so a
    /// crash leaves the old marker or the new one, never half of one.
    pub fn write(&self, path: &Path) -> Result<()> {
        let tmp = path.with_extension("tmp");
        let io = |p: &Path| {
            let p = p.to_path_buf();
            move |source| Error::Io { path: p, source }
        };
        std::fs::write(&tmp, self.render()).map_err(io(&tmp))?;
        std::fs::rename(&tmp, path).map_err(io(path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_round_trip_and_old_ones_have_no_fingerprint() {
        let m = PackMarker {
            name: "demo".into(),
            fingerprint: Some("sha256:00ff".into()),
        };
        assert_eq!(PackMarker::parse(&m.render()), Some(m));
        assert_eq!(
            PackMarker::parse("demo-appliances\n"),
            Some(PackMarker {
                name: "demo-appliances".into(),
                fingerprint: None
            })
        );
        assert_eq!(PackMarker::parse(" \n"), None);
    }

    #[test]
    fn marker_write_replaces_and_read_of_missing_is_none() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(MARKER_FILE);
        assert_eq!(PackMarker::read(&path).unwrap(), None);
        std::fs::write(&path, "old\n").unwrap();
        let m = PackMarker {
            name: "new".into(),
            fingerprint: Some("sha256:1".into()),
        };
        m.write(&path).unwrap();
        assert_eq!(PackMarker::read(&path).unwrap(), Some(m));
        assert!(!path.with_extension("tmp").exists());
    }
}
