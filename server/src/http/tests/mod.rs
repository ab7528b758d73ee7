//! In-process tests of the router ([`crate::app`]), one file per concern;
//! this file is their one harness. They run the real engine on the demo pack
//! with a model-free hashing embedder (fast, no model file); answer quality,
//! kill -9 and the CLI are tested end-to-end with the real model and binary
//! (the `e2e` package in `tests/`).

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use models::{EmbedKind, TextEmbedder};
use serde_json::{json, Value};
use tower::ServiceExt;

use super::*;
use crate::config::{ApiKey, EngineSettings, Limits, RetrainPolicy, Scope};

mod adapt;
mod auth;
mod decisions;
mod documents;
mod jobs;
mod limits;
mod ops;
mod retrain;
mod security;
mod serve;
mod validation;

/// Hashing embedder that sleeps on texts containing `SLOW` (to test timeouts and shedding).
struct TestEmbedder(triage::hashembed::HashEmbedder);

/// How many `SLOW` embeddings have started (so a test can wait for one to be in flight).
static SLOW_STARTED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Whether embeddings of texts containing `HOLD` may finish: until a test
/// opens the gate (or 60 s pass) they block, so a request's work outlives its
/// timeout for as long as the test needs, without depending on timing.
static HOLD_OPEN: std::sync::Mutex<bool> = std::sync::Mutex::new(false);
static HOLD_CHANGED: std::sync::Condvar = std::sync::Condvar::new();

/// Lets every held (`HOLD`) embedding finish, now and later.
fn open_hold_gate() {
    *HOLD_OPEN.lock().unwrap() = true;
    HOLD_CHANGED.notify_all();
}

impl TextEmbedder for TestEmbedder {
    fn embed(&self, texts: &[&str], kind: EmbedKind) -> Result<Vec<Vec<f32>>, models::Error> {
        if texts.iter().any(|t| t.contains("SLOW")) {
            SLOW_STARTED.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(600));
        }
        if texts.iter().any(|t| t.contains("HOLD")) {
            let open = HOLD_OPEN.lock().unwrap();
            let _ = HOLD_CHANGED
                .wait_timeout_while(open, Duration::from_secs(60), |open| !*open)
                .unwrap();
        }
        self.0.embed(texts, kind)
    }
    fn dim(&self) -> usize {
        self.0.dim()
    }
    fn name(&self) -> &str {
        "test-hash"
    }
}

fn pack_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/demo-pack")
}

struct Harness {
    app: Router,
    state: AppState,
    _dir: tempfile::TempDir,
}

/// `keys` as `(token, "tenant:scope")`.
fn config(data_dir: PathBuf, keys: &[(&str, &str)], limits: Limits) -> Config {
    Config {
        addr: "127.0.0.1:0".parse().unwrap(),
        engine: EngineSettings {
            data_dir,
            pack_dir: pack_dir(),
            model: models::ModelSource::Named("unused".into()),
            model_cache: PathBuf::from("unused"),
            learn: triage::LearnPolicy::default(),
        },
        api_keys: keys
            .iter()
            .map(|(k, grant)| {
                let (tenant, scope) = grant.rsplit_once(':').expect("tenant:scope");
                let scope = match scope {
                    "chat" => Scope::Chat,
                    "agent" => Scope::Agent,
                    "admin" => Scope::Admin,
                    other => panic!("scope {other}"),
                };
                (
                    k.to_string(),
                    ApiKey {
                        tenant: tenant.into(),
                        scope,
                    },
                )
            })
            .collect(),
        allow_unauthenticated: false,
        allowed_hosts: Vec::new(),
        limits,
        // Off: the shared engine must not retrain under other tests' feet.
        retrain: RetrainPolicy {
            after_changes: 0,
            ..RetrainPolicy::default()
        },
        adapt_threads: 1,
    }
}

/// One engine for all tests (opening it trains on the demo pack); tests use
/// their own ids and tenants, and each harness its own data dir for jobs.
fn shared_engine() -> Arc<Engine> {
    static ENGINE: OnceLock<Arc<Engine>> = OnceLock::new();
    Arc::clone(ENGINE.get_or_init(|| {
        // A static is never dropped: remove what earlier (finished) runs left.
        let tmp = std::env::temp_dir();
        for entry in std::fs::read_dir(&tmp).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(pid) = name.strip_prefix("triage-http-tests-") {
                if !Path::new("/proc").join(pid).exists() {
                    let _ = std::fs::remove_dir_all(entry.path());
                }
            }
        }
        let dir = tmp.join(format!("triage-http-tests-{}", std::process::id()));
        open_test_engine(dir)
    }))
}

/// Opens an engine on the demo pack with the hashing test embedder.
fn open_test_engine(data_dir: PathBuf) -> Arc<Engine> {
    let embedder = Arc::new(models::BatchingEmbedder::new(Arc::new(TestEmbedder(
        triage::hashembed::HashEmbedder::new(256),
    ))));
    let engine = Engine::open(triage::EngineConfig::new(pack_dir(), data_dir), embedder).unwrap();
    Arc::new(engine)
}

fn harness_with(keys: &[(&str, &str)], limits: Limits) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path().to_path_buf(), keys, limits);
    let state = AppState::new(&cfg);
    state.set_engine(shared_engine());
    Harness {
        app: crate::app(state.clone()),
        state,
        _dir: dir,
    }
}

fn harness() -> Harness {
    harness_with(&[], Limits::default())
}

async fn call(
    app: &Router,
    method: Method,
    path: &str,
    key: Option<&str>,
    body: Option<Vec<u8>>,
) -> (StatusCode, Value) {
    let mut req = Request::builder().method(method).uri(path);
    if let Some(k) = key {
        req = req.header("authorization", format!("Bearer {k}"));
    }
    let req = req
        .header("content-type", "application/json")
        .body(body.map(Body::from).unwrap_or_else(Body::empty))
        .unwrap();
    let res = app.clone().oneshot(req).await.unwrap();
    let status = res.status();
    let bytes = axum::body::to_bytes(res.into_body(), usize::MAX)
        .await
        .unwrap();
    let value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    (status, value)
}

async fn post(app: &Router, path: &str, body: Value) -> (StatusCode, Value) {
    call(
        app,
        Method::POST,
        path,
        None,
        Some(body.to_string().into_bytes()),
    )
    .await
}

async fn call_str(app: &Router, method: Method, path: &str, body: &str) -> (StatusCode, Value) {
    call(app, method, path, None, Some(body.as_bytes().to_vec())).await
}

fn assert_error(status: StatusCode, body: &Value, want: StatusCode, code: &str) {
    assert_eq!(status, want, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{body}"
    );
}

/// A harness on its own engine and data directory, for tests that retrain:
/// retraining the shared engine would change other tests' decisions midway.
fn private_harness(retrain: RetrainPolicy) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path().join("server"), &[], Limits::default());
    cfg.retrain = retrain;
    let state = AppState::new(&cfg);
    state.set_engine(open_test_engine(dir.path().join("engine")));
    Harness {
        app: crate::app(state.clone()),
        state,
        _dir: dir,
    }
}
