//! In-process tests of the router: every route, the error shapes, auth and
//! tenant isolation, shedding and timeouts, metrics, jobs. They run the real
//! engine on the demo pack with a model-free hashing embedder (fast, no model
//! file); answer quality is tested end-to-end with the real model.

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

mod security;

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
    let embedder = Arc::new(batch::BatchingEmbedder::new(Arc::new(TestEmbedder(
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
        app: router(state.clone()),
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

#[tokio::test]
async fn health_and_readiness() {
    let dir = tempfile::tempdir().unwrap();
    let state = AppState::new(&config(dir.path().to_path_buf(), &[], Limits::default()));
    let app = router(state);
    let (s, b) = call(&app, Method::GET, "/healthz", None, None).await;
    assert_eq!((s, b["status"].as_str()), (StatusCode::OK, Some("ok")));
    let (s, b) = call(&app, Method::GET, "/readyz", None, None).await;
    assert_error(s, &b, StatusCode::SERVICE_UNAVAILABLE, "not_ready");
    let (s, b) = post(&app, "/v1/triage", json!({"body": "hi"})).await;
    assert_error(s, &b, StatusCode::SERVICE_UNAVAILABLE, "not_ready");

    let h = harness();
    let (s, b) = call(&h.app, Method::GET, "/readyz", None, None).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["status"], "ready");
}

#[tokio::test]
async fn decisions_return_their_documented_shapes() {
    let h = harness();
    let (s, t) = post(
        &h.app,
        "/v1/triage",
        json!({"title": "冰箱冒烟", "body": "冰箱后面冒烟了，订单号 JD20240315001，电话 13812345678", "channel": "web"}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{t}");
    for key in [
        "category",
        "priority",
        "queue",
        "fields",
        "duplicates",
        "needs_human",
        "neighbours",
    ] {
        assert!(t.get(key).is_some(), "triage lacks {key}: {t}");
    }
    // The lexicon makes smoke a P0 whatever the model says.
    assert_eq!(t["priority"]["label"], "P0", "{t}");
    assert!(
        t["fields"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["name"] == "phone"),
        "{t}"
    );

    let (s, d) = post(&h.app, "/v1/deflect", json!({"text": "空调不制冷怎么办"})).await;
    assert_eq!(s, StatusCode::OK, "{d}");
    assert!(["answer", "clarify", "handoff"].contains(&d["action"].as_str().unwrap()));
    assert_eq!(d["session_id"].as_str().map(str::len), Some(32), "{d}");
    assert_eq!(d["turn"], 1, "{d}");
    if d["action"] == "handoff" {
        assert!(d["ticket_draft"].is_object(), "{d}");
    }

    let (s, g) = post(&h.app, "/v1/suggest", json!({"body": "洗衣机漏水"})).await;
    assert_eq!(s, StatusCode::OK, "{g}");
    assert!(
        g["similar_tickets"].is_array() && g["articles"].is_array(),
        "{g}"
    );

    let (s, p) = call(&h.app, Method::GET, "/v1/pack", None, None).await;
    assert_eq!(s, StatusCode::OK);
    assert!(p["categories"].as_array().unwrap().len() >= 15, "{p}");
}

#[tokio::test]
async fn bad_input_gets_the_error_shape_with_the_right_status() {
    let h = harness_with(
        &[],
        Limits {
            max_body_bytes: 64 * 1024,
            max_text_chars: 2000,
            ..Limits::default()
        },
    );
    let app = &h.app;
    let raw = |b: &[u8]| Some(b.to_vec());
    let (s, b) = call(app, Method::POST, "/v1/triage", None, raw(b"{\"body\": ")).await;
    assert_error(s, &b, StatusCode::BAD_REQUEST, "malformed_json");
    let (s, b) = call(app, Method::POST, "/v1/triage", None, raw(b"")).await;
    assert_error(s, &b, StatusCode::BAD_REQUEST, "malformed_json");
    let (s, b) = call(
        app,
        Method::POST,
        "/v1/deflect",
        None,
        raw(b"{\"text\": \"\xff\xfe\"}"),
    )
    .await;
    assert_error(s, &b, StatusCode::BAD_REQUEST, "malformed_json");
    let (s, b) = post(app, "/v1/triage", json!({"body": 42})).await;
    assert_error(s, &b, StatusCode::UNPROCESSABLE_ENTITY, "invalid_input");
    let (s, b) = post(app, "/v1/triage", json!({"title": " ", "body": ""})).await;
    assert_error(s, &b, StatusCode::UNPROCESSABLE_ENTITY, "invalid_input");
    let (s, b) = post(app, "/v1/deflect", json!({"text": ""})).await;
    assert_error(s, &b, StatusCode::UNPROCESSABLE_ENTITY, "invalid_input");
    let (s, b) = post(app, "/v1/search", json!({"text": "x", "k": 1000})).await;
    assert_error(s, &b, StatusCode::UNPROCESSABLE_ENTITY, "invalid_input");
    let (s, b) = post(app, "/v1/deflect", json!({"text": "长".repeat(2001)})).await;
    assert_error(s, &b, StatusCode::PAYLOAD_TOO_LARGE, "too_large");
    let (s, b) = post(app, "/v1/triage", json!({"body": "x".repeat(1024 * 1024)})).await;
    assert_error(s, &b, StatusCode::PAYLOAD_TOO_LARGE, "too_large");
    let (s, b) = call(app, Method::GET, "/v1/tickets/nope", None, None).await;
    assert_error(s, &b, StatusCode::NOT_FOUND, "not_found");
    let (s, b) = call(app, Method::DELETE, "/v1/articles/nope", None, None).await;
    assert_error(s, &b, StatusCode::NOT_FOUND, "not_found");
    let (s, b) = call(app, Method::GET, "/v1/jobs/nope", None, None).await;
    assert_error(s, &b, StatusCode::NOT_FOUND, "not_found");
    let (s, b) = call(app, Method::GET, "/v1/nothing-here", None, None).await;
    assert_error(s, &b, StatusCode::NOT_FOUND, "not_found");
    let (s, b) = call(app, Method::GET, "/v1/triage", None, None).await;
    assert_error(s, &b, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
    // The service is still fine afterwards.
    let (s, _) = post(app, "/v1/triage", json!({"body": "电视没有声音"})).await;
    assert_eq!(s, StatusCode::OK);
}

#[tokio::test]
async fn upserts_are_searchable_on_return_and_the_path_id_wins() {
    let h = harness();
    let app = &h.app;
    let ticket = json!({"id": "ignored", "title": "扫地机器人 zq-unique-token 无法回充",
        "body": "robot vacuum zq-unique-token cannot find its dock", "status": "open"});
    let (s, b) = call(
        app,
        Method::PUT,
        "/v1/tickets/T-1",
        None,
        Some(ticket.to_string().into_bytes()),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["id"], "T-1");
    let (s, got) = call(app, Method::GET, "/v1/tickets/T-1", None, None).await;
    assert_eq!(s, StatusCode::OK, "{got}");
    assert_eq!(got["id"], "T-1");
    let (s, hits) = post(
        app,
        "/v1/search",
        json!({"text": "zq-unique-token", "mode": "bm25", "k": 5}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{hits}");
    assert_eq!(hits[0]["id"], "T-1", "{hits}");
    assert!(hits[0]["explanation"].is_object());

    let article =
        json!({"question": "如何重置 zq-unique-token 路由器", "answer": "长按复位键 5 秒。"});
    let (s, b) = call(
        app,
        Method::PUT,
        "/v1/articles/KB-9",
        None,
        Some(article.to_string().into_bytes()),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (s, hits) = post(
        app,
        "/v1/search",
        json!({"text": "zq-unique-token 路由器", "filters": {"kind": "article"}}),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(hits[0]["id"], "KB-9", "{hits}");

    let (s, _) = call(app, Method::DELETE, "/v1/tickets/T-1", None, None).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = call(app, Method::GET, "/v1/tickets/T-1", None, None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (_, hits) = post(
        app,
        "/v1/search",
        json!({"text": "zq-unique-token", "mode": "bm25", "filters": {"kind": "ticket"}}),
    )
    .await;
    assert!(
        hits.as_array().unwrap().iter().all(|h| h["id"] != "T-1"),
        "{hits}"
    );
    let (s, _) = call(app, Method::DELETE, "/v1/articles/KB-9", None, None).await;
    assert_eq!(s, StatusCode::OK);
}

#[tokio::test]
async fn api_keys_are_required_and_pin_the_tenant() {
    let h = harness_with(
        &[("key-a", "acme:agent"), ("key-b", "globex:agent")],
        Limits::default(),
    );
    let app = &h.app;
    let body = || Some(json!({"body": "hello"}).to_string().into_bytes());
    let (s, b) = call(app, Method::POST, "/v1/triage", None, body()).await;
    assert_error(s, &b, StatusCode::UNAUTHORIZED, "unauthorized");
    let (s, b) = call(app, Method::POST, "/v1/triage", Some("wrong"), body()).await;
    assert_error(s, &b, StatusCode::UNAUTHORIZED, "unauthorized");
    let (s, b) = call(app, Method::GET, "/v1/pack", None, None).await;
    assert_error(s, &b, StatusCode::UNAUTHORIZED, "unauthorized");
    let (s, _) = call(app, Method::POST, "/v1/triage", Some("key-a"), body()).await;
    assert_eq!(s, StatusCode::OK);
    // Health, metrics and the document stay open.
    assert_eq!(
        call(app, Method::GET, "/healthz", None, None).await.0,
        StatusCode::OK
    );
    assert_eq!(
        call(app, Method::GET, "/v1/openapi.json", None, None)
            .await
            .0,
        StatusCode::OK
    );

    // acme writes a ticket claiming to be globex's: the key's tenant wins.
    let t = json!({"title": "secret-acme-token 冰箱异响", "body": "secret-acme-token", "tenant": "globex"});
    let (s, b) = call(
        app,
        Method::PUT,
        "/v1/tickets/A-1",
        Some("key-a"),
        Some(t.to_string().into_bytes()),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["tenant"], "acme");
    let (s, _) = call(app, Method::GET, "/v1/tickets/A-1", Some("key-a"), None).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = call(
        app,
        Method::GET,
        "/v1/tickets/A-1?tenant=acme",
        Some("key-b"),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let q = json!({"text": "secret-acme-token", "mode": "bm25", "filters": {"tenant": "acme"}});
    let (s, hits) = call(
        app,
        Method::POST,
        "/v1/search",
        Some("key-b"),
        Some(q.to_string().into_bytes()),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        hits.as_array().unwrap().iter().all(|h| h["id"] != "A-1"),
        "{hits}"
    );
    let (s, hits) = call(
        app,
        Method::POST,
        "/v1/search",
        Some("key-a"),
        Some(q.to_string().into_bytes()),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        hits.as_array().unwrap().iter().any(|h| h["id"] == "A-1"),
        "{hits}"
    );
    let (s, _) = call(app, Method::DELETE, "/v1/tickets/A-1", Some("key-b"), None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn slow_requests_time_out_and_excess_load_is_shed() {
    let h = harness_with(
        &[],
        Limits {
            max_concurrency: 1,
            request_timeout: Duration::from_millis(300),
            ..Limits::default()
        },
    );
    let app = h.app.clone();
    let slow =
        tokio::spawn(
            async move { post(&app, "/v1/triage", json!({"body": "SLOW request"})).await },
        );
    // Wait until the slow request holds the only slot (not a fixed sleep: CI machines are busy).
    while SLOW_STARTED.load(std::sync::atomic::Ordering::SeqCst) == 0 && !slow.is_finished() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (s, b) = post(&h.app, "/v1/triage", json!({"body": "fast"})).await;
    assert_error(s, &b, StatusCode::SERVICE_UNAVAILABLE, "overloaded");
    let (s, b) = slow.await.unwrap();
    assert_error(s, &b, StatusCode::GATEWAY_TIMEOUT, "timeout");
    // Once the slow work has really finished, its slot is free and requests pass.
    wait_for_free_slots(&h.state, 1).await;
    let (s, _) = post(&h.app, "/v1/triage", json!({"body": "fast"})).await;
    assert_eq!(s, StatusCode::OK);
    let (_, m) = call(&h.app, Method::GET, "/metrics", None, None).await;
    let m = m.as_str().unwrap().to_string();
    assert!(m.contains("triage_http_shed_total 1"), "{m}");
    assert!(m.contains("status=\"504\""), "{m}");
}

#[tokio::test]
async fn metrics_count_routes_and_decisions() {
    let h = harness();
    post(&h.app, "/v1/triage", json!({"body": "电视黑屏"})).await;
    post(&h.app, "/v1/deflect", json!({"text": "怎么开发票"})).await;
    post(&h.app, "/v1/triage", json!({"body": 1})).await;
    let (s, m) = call(&h.app, Method::GET, "/metrics", None, None).await;
    assert_eq!(s, StatusCode::OK);
    let m = m.as_str().unwrap().to_string();
    assert!(
        m.contains(
            "triage_http_requests_total{route=\"/v1/triage\",method=\"POST\",status=\"200\"} 1"
        ),
        "{m}"
    );
    assert!(
        m.contains(
            "triage_http_requests_total{route=\"/v1/triage\",method=\"POST\",status=\"422\"} 1"
        ),
        "{m}"
    );
    assert!(
        m.contains("triage_http_request_duration_seconds_count{route=\"/v1/deflect\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("triage_decisions_total{decision=\"deflect\""),
        "{m}"
    );
    assert!(m.contains("triage_deflection_rate"), "{m}");
    assert!(m.contains("triage_abstention_rate"), "{m}");
    assert!(
        m.contains("triage_index_"),
        "index size gauges missing: {m}"
    );
}

#[tokio::test]
async fn the_document_and_the_router_hold_the_same_routes() {
    let h = harness();
    // Hold the retrain slot: the admin route must answer (409), not retrain the shared engine.
    let _slot = h.state.retrainer().try_begin().expect("no retrain running");
    let (s, doc) = call(&h.app, Method::GET, "/v1/openapi.json", None, None).await;
    assert_eq!(s, StatusCode::OK);
    let methods = ["get", "put", "post", "delete", "patch"];
    let mut documented = std::collections::BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in methods.iter().filter(|m| item.get(**m).is_some()) {
            documented.insert((path.clone(), method.to_string()));
        }
    }
    // The table's operations and the public routes are the document's paths...
    let mut table: std::collections::BTreeSet<(String, String)> = routes::operations()
        .into_iter()
        .map(|op| {
            (
                format!("/v1{}", op.path),
                op.method.as_str().to_ascii_lowercase(),
            )
        })
        .collect();
    for path in ["/v1/openapi.json", "/healthz", "/readyz", "/metrics"] {
        table.insert((path.to_string(), "get".to_string()));
    }
    assert_eq!(documented, table);
    // ...every one of them is routed, and no other method is on their paths.
    for (path, item) in doc["paths"].as_object().unwrap() {
        let uri = path.replace("{id}", "x");
        for method in methods {
            let m = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let body = matches!(m, Method::POST | Method::PUT).then(|| b"{}".to_vec());
            let (s, b) = call(&h.app, m.clone(), &uri, None, body).await;
            let unrouted = b["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("no such route"));
            assert!(!unrouted, "{m} {uri}: {s} {b}");
            if item.get(method).is_some() {
                assert!(s != StatusCode::METHOD_NOT_ALLOWED, "{m} {uri}: {s} {b}");
                // Whatever it answers is documented.
                let documented = &item[method]["responses"][s.as_str()];
                assert!(documented.is_object(), "{m} {uri}: undocumented {s} {b}");
            } else {
                assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED, "{m} {uri}: {b}");
            }
        }
    }
}

#[tokio::test]
async fn deflect_sessions_are_issued_per_tenant_and_carry_context() {
    let h = harness();
    let (_, first) = post(&h.app, "/v1/deflect", json!({"text": "我的洗衣机"})).await;
    let id = first["session_id"].as_str().unwrap().to_string();
    let (s, second) = post(
        &h.app,
        "/v1/deflect",
        json!({"text": "还是漏水", "session_id": id}),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        (second["session_id"].as_str(), second["turn"].as_u64()),
        (Some(id.as_str()), Some(2))
    );
    if second["action"] == "handoff" {
        // The draft carries the whole conversation.
        let body = second["ticket_draft"]["body"].as_str().unwrap_or_default();
        assert!(body.contains("洗衣机") && body.contains("漏水"), "{second}");
    }
    // Another tenant naming the id gets a conversation of its own.
    let (_, other) = post(
        &h.app,
        "/v1/deflect",
        json!({"text": "还是漏水", "session_id": id, "tenant": "elsewhere"}),
    )
    .await;
    assert_ne!(other["session_id"], id.as_str(), "{other}");
    assert_eq!(other["turn"], 1, "{other}");
    let (s, b) = post(
        &h.app,
        "/v1/deflect",
        json!({"text": "hi", "session_id": "x".repeat(300)}),
    )
    .await;
    assert_error(s, &b, StatusCode::PAYLOAD_TOO_LARGE, "too_large");
}

#[tokio::test]
async fn reclassify_jobs_run_in_the_background_with_progress() {
    let h = harness();
    let tickets: Vec<Value> = (0..5)
        .map(|i| json!({"id": format!("R-{i}"), "title": "空调不制冷", "body": format!("空调不制冷 第{i}台"), "category": "old.category"}))
        .collect();
    let (s, b) = post(&h.app, "/v1/jobs/reclassify", json!({"tickets": tickets})).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{b}");
    let id = b["id"].as_str().unwrap().to_string();
    let mut status = Value::Null;
    for _ in 0..200 {
        let (s, b) = call(&h.app, Method::GET, &format!("/v1/jobs/{id}"), None, None).await;
        assert_eq!(s, StatusCode::OK);
        status = b;
        if status["state"] == "done" || status["state"] == "failed" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(status["state"], "done", "{status}");
    assert_eq!(status["done"], 5);
    let report = &status["report"];
    assert_eq!(report["tickets"], 5, "{status}");
    let moved = report["changed"].as_u64().unwrap() + report["abstained"].as_u64().unwrap();
    assert_eq!(
        moved, 5,
        "old.category is not in the pack: every ticket changes or abstains"
    );
    let (s, labels) = call(
        &h.app,
        Method::GET,
        &format!("/v1/jobs/{id}/labels"),
        None,
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(labels.as_str().unwrap().lines().count(), 5);
    let (s, b) = post(&h.app, "/v1/jobs/reclassify", json!({"tickets": []})).await;
    assert_error(s, &b, StatusCode::UNPROCESSABLE_ENTITY, "invalid_input");
}

#[tokio::test]
async fn pages_are_served() {
    let h = harness();
    for (path, needle) in [
        ("/chat", "chat.js"),
        ("/agent", "agent.js"),
        ("/assets/common.js", "Triage"),
        ("/assets/app.css", ":root"),
    ] {
        let (s, b) = call(&h.app, Method::GET, path, None, None).await;
        assert_eq!(s, StatusCode::OK, "{path}");
        assert!(b.as_str().unwrap().contains(needle), "{path}");
    }
}

/// Status code of a plain HTTP/1.1 GET (no client library needed).
async fn raw_get_status(addr: std::net::SocketAddr, path: &str) -> Option<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    stream.write_all(req.as_bytes()).await.ok()?;
    let mut buf = Vec::new();
    stream.read_to_end(&mut buf).await.ok()?;
    let text = String::from_utf8_lossy(&buf);
    text.split_whitespace().nth(1)?.parse().ok()
}

fn tiny_model_config(dir: &std::path::Path) -> Config {
    let mut cfg = config(dir.to_path_buf(), &[], Limits::default());
    cfg.engine.model = models::ModelSource::Dir(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/tiny-bert"),
    );
    cfg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_loads_in_the_background_stays_up_and_stops_on_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve_on(listener, tiny_model_config(dir.path()), async {
        let _ = stopped.await;
    }));
    assert_eq!(raw_get_status(addr, "/healthz").await, Some(200));
    let started = std::time::Instant::now();
    while raw_get_status(addr, "/readyz").await != Some(200) {
        assert!(started.elapsed() < Duration::from_secs(120), "never ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Still serving well after the loader finished.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(raw_get_status(addr, "/readyz").await, Some(200));
    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
    assert_eq!(
        raw_get_status(addr, "/healthz").await,
        None,
        "still listening"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_fails_clearly_when_the_engine_cannot_load() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = tiny_model_config(dir.path());
    cfg.engine.pack_dir = dir.path().join("no-such-pack");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let result = tokio::time::timeout(
        Duration::from_secs(60),
        serve_on(listener, cfg, std::future::pending()),
    )
    .await
    .expect("serve should stop by itself");
    let err = format!("{:#}", result.unwrap_err());
    assert!(err.contains("no-such-pack"), "{err}");
}

#[test]
fn reclassify_stops_on_cancel_and_resumes_without_repeats() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let engine = shared_engine();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("tickets.jsonl");
    let output = dir.path().join("labels.jsonl");
    let mut lines: Vec<String> = (0..12)
        .map(|i| json!({"id": format!("C-{i}"), "title": "洗衣机漏水", "body": format!("洗衣机底部漏水 {i}"), "category": "repair.water_leak"}).to_string())
        .collect();
    lines.insert(3, "not json".into());
    lines.push(json!({"id": "C-0", "body": "duplicate id"}).to_string());
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();

    let cancel = AtomicBool::new(false);
    let opts = crate::reclassify::RunOptions {
        tenant: None,
        cancel: Some(&cancel),
    };
    let mut seen = 0;
    let first = crate::reclassify::run(&engine, &input, &output, &opts, &mut |p| {
        seen = p.done;
        if p.done >= 5 {
            cancel.store(true, Ordering::SeqCst);
        }
    })
    .unwrap();
    assert!(first.interrupted);
    assert_eq!(first.processed_this_run, 5);
    assert_eq!(seen, 5);

    let base = dir.path().join("labels.report");
    let second = crate::reclassify::run_cli(&engine, &input, &output, &base, false).unwrap();
    assert!(!second.interrupted);
    assert_eq!(second.resumed, 5);
    assert_eq!(second.processed_this_run, 7);
    assert_eq!(second.tickets, 12);
    assert_eq!(second.duplicate_ids, 1);
    assert_eq!(second.error_count, 1);
    assert_eq!(second.errors[0].line, 4);
    let text = std::fs::read_to_string(&output).unwrap();
    let ids: std::collections::HashSet<String> = text
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!((ids.len(), text.lines().count()), (12, 12));
    // Mostly the labelled category comes back for such clear leak reports.
    assert!(
        second.per_category["repair.water_leak"].unchanged >= 6,
        "{second:?}"
    );
    assert!(dir.path().join("labels.report.json").is_file());
    assert!(std::fs::read_to_string(dir.path().join("labels.report.md"))
        .unwrap()
        .contains("repair.water_leak"));
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
        app: router(state.clone()),
        state,
        _dir: dir,
    }
}

/// Labelled tickets that share made-up words no pack ticket has.
const ZB_TICKETS: usize = 30;

/// Writes the [`ZB_TICKETS`] tickets `ZB-*` of tenant `rt-a` with `category`.
async fn put_zb_tickets(app: &Router, category: &str, range: std::ops::Range<usize>) {
    for i in range {
        let t = json!({"tenant": "rt-a", "title": format!("zorblax 控制器 qwv 报警 {i}"),
            "body": format!("zorblax 控制器 面板 qwv 一直闪烁 vrunk 第{i}台"), "category": category});
        let (s, b) = call(
            app,
            Method::PUT,
            &format!("/v1/tickets/ZB-{i}"),
            None,
            Some(t.to_string().into_bytes()),
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{b}");
    }
}

/// The category the engine ranks first for a `zorblax` request of `tenant`,
/// which must have no tickets at the time: no neighbour of its own votes, so
/// only its linear head (and the pack's examples) can know what `zorblax` means.
async fn zb_probe_top(app: &Router, tenant: &str) -> String {
    let (s, t) = post(
        app,
        "/v1/triage",
        json!({"tenant": tenant, "title": "zorblax 控制器 报警", "body": "zorblax 控制器 面板 qwv 闪烁 vrunk"}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{t}");
    assert!(
        t["neighbours"].as_array().is_some_and(|n| n.is_empty()),
        "{tenant} has no tickets: {t}"
    );
    t["category"]["alternatives"][0]["label"]
        .as_str()
        .unwrap_or_else(|| panic!("no alternatives: {t}"))
        .to_string()
}

/// Deletes the `ZB-*` tickets of `rt-a`.
async fn delete_zb_tickets(app: &Router) {
    for i in 0..ZB_TICKETS {
        let uri = format!("/v1/tickets/ZB-{i}?tenant=rt-a");
        assert_eq!(
            call(app, Method::DELETE, &uri, None, None).await.0,
            StatusCode::OK
        );
    }
}

/// Two leaf categories of the pack other than `avoid`.
async fn two_other_leaves(app: &Router, avoid: &str) -> (String, String) {
    let (_, pack) = call(app, Method::GET, "/v1/pack", None, None).await;
    let cats = pack["categories"].as_array().unwrap();
    let parents: Vec<&str> = cats.iter().filter_map(|c| c["parent"].as_str()).collect();
    let leaves: Vec<String> = cats
        .iter()
        .filter_map(|c| c["id"].as_str())
        .filter(|id| !parents.contains(id) && *id != avoid)
        .map(String::from)
        .collect();
    (leaves[0].clone(), leaves[leaves.len() - 1].clone())
}

async fn retrain_status(app: &Router) -> Value {
    let (s, b) = call(app, Method::GET, "/readyz", None, None).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    b
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_retrain_teaches_the_tenants_head_and_no_other() {
    let h = private_harness(RetrainPolicy {
        after_changes: 0,
        min_interval: Duration::ZERO,
    });
    let app = &h.app;
    let untrained = zb_probe_top(app, "rt-a").await;
    assert_eq!(zb_probe_top(app, "rt-b").await, untrained);
    let (first, second) = two_other_leaves(app, &untrained).await;
    let ready = retrain_status(app).await;
    assert_eq!(ready["retrain"]["pending_changes"], 0, "{ready}");
    assert!(ready["retrain"]["last_trained_unix"].is_u64(), "{ready}");

    put_zb_tickets(app, &first, 0..ZB_TICKETS).await;
    // Deleting a missing ticket and writing an article change no labelled data.
    assert_eq!(
        call(
            app,
            Method::DELETE,
            "/v1/tickets/ZB-none?tenant=rt-a",
            None,
            None
        )
        .await
        .0,
        StatusCode::NOT_FOUND
    );
    let article = json!({"question": "zorblax 是什么", "answer": "一种控制器。", "tenant": "rt-a"});
    let (s, _) = call(
        app,
        Method::PUT,
        "/v1/articles/ZB-KB",
        None,
        Some(article.to_string().into_bytes()),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let ready = retrain_status(app).await;
    assert_eq!(ready["retrain"]["pending_changes"], ZB_TICKETS, "{ready}");
    let (_, stats) = call(app, Method::GET, "/v1/admin/stats?tenant=rt-b", None, None).await;
    assert_eq!(stats["retrain"]["pending_changes"], 0, "{stats}");

    let (s, r) = post(app, "/v1/admin/retrain?tenant=rt-a", json!({})).await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert_eq!(
        (r["status"].as_str(), r["tenant"].as_str()),
        (Some("retrained"), Some("rt-a")),
        "{r}"
    );
    assert_eq!(
        r["labelled_examples"].as_u64(),
        Some(ZB_TICKETS as u64),
        "{r}"
    );
    assert!(r["seconds"].as_f64().is_some_and(|s| s > 0.0), "{r}");
    let ready = retrain_status(app).await;
    assert_eq!(ready["retrain"]["pending_changes"], 0, "{ready}");
    assert_eq!(ready["retrain"]["completed"], 1, "{ready}");
    assert_eq!(ready["retrain"]["running"], false, "{ready}");
    // One tenant's data never trains another's head (before: rt-b got `first`).
    assert_eq!(
        zb_probe_top(app, "rt-b").await,
        untrained,
        "rt-a's tickets moved rt-b"
    );

    // With its tickets gone (not retrained yet), only rt-a's head knows zorblax.
    delete_zb_tickets(app).await;
    assert_eq!(
        zb_probe_top(app, "rt-a").await,
        first,
        "the head learned zorblax"
    );

    // A relabel is learned at the next retrain.
    put_zb_tickets(app, &second, 0..ZB_TICKETS).await;
    let (s, r) = post(app, "/v1/admin/retrain?tenant=rt-a", json!({})).await;
    assert_eq!(s, StatusCode::OK, "{r}");
    delete_zb_tickets(app).await;
    assert_eq!(
        zb_probe_top(app, "rt-a").await,
        second,
        "the head learned the relabel"
    );
    assert_eq!(zb_probe_top(app, "rt-b").await, untrained);

    // Deleting labelled tickets counts too, and shows in /metrics.
    let (_, m) = call(app, Method::GET, "/metrics", None, None).await;
    let m = m.as_str().unwrap();
    assert!(
        m.contains(&format!("triage_retrain_pending_changes {ZB_TICKETS}\n")),
        "{m}"
    );
    assert!(m.contains("triage_retrain_completed 2\n"), "{m}");
    assert!(m.contains("triage_retrain_last_duration_seconds "), "{m}");
    assert!(
        m.contains("triage_retrain_last_trained_timestamp_seconds "),
        "{m}"
    );
    // Retraining a tenant without labelled tickets falls back to the pack's heads.
    let (s, r) = post(app, "/v1/admin/retrain?tenant=rt-a", json!({})).await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert_eq!(zb_probe_top(app, "rt-a").await, untrained);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_retrain_while_one_runs_gets_409() {
    let h = private_harness(RetrainPolicy {
        after_changes: 0,
        min_interval: Duration::ZERO,
    });
    // Pause the first retrain once it holds the slot, until the test releases it.
    let (started_tx, started_rx) = std::sync::mpsc::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel();
    *h.state.retrainer().hold.lock().unwrap() = Some(retrain::TestHold {
        started: started_tx,
        release: release_rx,
    });
    let app = h.app.clone();
    let first = tokio::spawn(async move { post(&app, "/v1/admin/retrain", json!({})).await });
    tokio::task::spawn_blocking(move || started_rx.recv_timeout(Duration::from_secs(120)))
        .await
        .unwrap()
        .expect("the first retrain never started");

    let (s, b) = post(&h.app, "/v1/admin/retrain", json!({})).await;
    assert_error(s, &b, StatusCode::CONFLICT, "conflict");
    assert!(
        b["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("already running")),
        "{b}"
    );
    assert_eq!(retrain_status(&h.app).await["retrain"]["running"], true);

    release_tx.send(()).unwrap();
    let (s, b) = first.await.unwrap();
    assert_eq!(s, StatusCode::OK, "{b}");
    assert!(
        b["labelled_examples"].as_u64().is_some_and(|n| n > 0),
        "{b}"
    );
    // The slot is free again.
    let (s, b) = post(&h.app, "/v1/admin/retrain", json!({})).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let ready = retrain_status(&h.app).await;
    assert_eq!(ready["retrain"]["completed"], 2, "{ready}");
    assert_eq!(ready["retrain"]["running"], false, "{ready}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_retrain_fires_after_enough_labelled_changes() {
    let h = private_harness(RetrainPolicy {
        after_changes: ZB_TICKETS as u64,
        min_interval: Duration::ZERO,
    });
    let task = h.state.start_background_retrain();
    let untrained = zb_probe_top(&h.app, "rt-a").await;
    let (category, _) = two_other_leaves(&h.app, &untrained).await;
    // All changes but one: ticket writes...
    put_zb_tickets(&h.app, &category, 0..ZB_TICKETS - 1).await;
    assert_eq!(
        retrain_status(&h.app).await["retrain"]["pending_changes"],
        ZB_TICKETS - 1
    );
    // ...and the last one an agent's correction.
    let last = ZB_TICKETS - 1;
    let (s, b) = post(
        &h.app,
        "/v1/feedback",
        json!({"ticket_id": format!("ZB-{last}"), "tenant": "rt-a", "title": format!("zorblax 控制器 qwv 报警 {last}"),
            "body": format!("zorblax 控制器 面板 qwv 一直闪烁 vrunk 第{last}台"), "category": category}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");

    let started = std::time::Instant::now();
    let ready = loop {
        let ready = retrain_status(&h.app).await;
        if ready["retrain"]["completed"].as_u64() >= Some(1) {
            break ready;
        }
        assert_eq!(ready["retrain"]["failed"], 0, "{ready}");
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no background retrain: {ready}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(ready["retrain"]["pending_changes"], 0, "{ready}");
    // The tenant that changed was retrained, and only it.
    assert_eq!(zb_probe_top(&h.app, "rt-b").await, untrained);
    task.abort();
    delete_zb_tickets(&h.app).await;
    assert_eq!(
        zb_probe_top(&h.app, "rt-a").await,
        category,
        "rt-a's head learned zorblax"
    );
}

#[tokio::test]
async fn admin_retrain_needs_an_api_key_when_keys_are_set() {
    let h = harness_with(&[("key-a", "acme:admin")], Limits::default());
    let (s, b) = call(&h.app, Method::POST, "/v1/admin/retrain", None, None).await;
    assert_error(s, &b, StatusCode::UNAUTHORIZED, "unauthorized");
    let (s, b) = call(
        &h.app,
        Method::POST,
        "/v1/admin/retrain",
        Some("nope"),
        None,
    )
    .await;
    assert_error(s, &b, StatusCode::UNAUTHORIZED, "unauthorized");
    assert_eq!(h.state.retrainer().status(None, None).completed, 0);
}

/// Waits (up to a minute) until `n` concurrency slots are free, i.e. the work
/// of earlier requests, timed out or not, has finished.
async fn wait_for_free_slots(state: &AppState, n: usize) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while state.permits().available_permits() < n {
        assert!(
            std::time::Instant::now() < deadline,
            "the slots were never freed"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn call_str(app: &Router, method: Method, path: &str, body: &str) -> (StatusCode, Value) {
    call(app, method, path, None, Some(body.as_bytes().to_vec())).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timed_out_work_keeps_its_slot_until_it_really_ends() {
    // Its own engine: held embeddings must not stall other tests' batches.
    let dir = tempfile::tempdir().unwrap();
    let limits = Limits {
        max_concurrency: 2,
        request_timeout: Duration::from_millis(200),
        ..Limits::default()
    };
    let state = AppState::new(&config(dir.path().join("server"), &[], limits));
    state.set_engine(open_test_engine(dir.path().join("engine")));
    let app = router(state.clone());
    // Two heavy requests fill both slots; their work is held past the timeout.
    let write =
        json!({"title": "HOLD 写入", "body": "HOLD 空调不制冷", "tenant": "hold-t"}).to_string();
    let (a, b) = tokio::join!(
        post(&app, "/v1/triage", json!({"body": "HOLD 空调不制冷"})),
        call_str(&app, Method::PUT, "/v1/tickets/HOLD-1", &write),
    );
    // Both answer 504 while their work is still blocked: the answer is prompt.
    assert_error(a.0, &a.1, StatusCode::GATEWAY_TIMEOUT, "timeout");
    assert_error(b.0, &b.1, StatusCode::GATEWAY_TIMEOUT, "timeout");
    // The work still runs, so it still holds the slots: new load is shed at
    // once with 503 instead of piling more work onto the blocking pool.
    assert_eq!(state.permits().available_permits(), 0);
    for _ in 0..3 {
        let (s, b) = post(&app, "/v1/triage", json!({"body": "电视没有声音"})).await;
        assert_error(s, &b, StatusCode::SERVICE_UNAVAILABLE, "overloaded");
    }
    let (_, m) = call(&app, Method::GET, "/metrics", None, None).await;
    assert!(
        m.as_str().unwrap().contains("triage_http_in_flight 2"),
        "{m}"
    );
    open_hold_gate();
    wait_for_free_slots(&state, 2).await;
    let (s, b) = post(&app, "/v1/triage", json!({"body": "电视没有声音"})).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    // As documented for 504: the timed-out write was applied all the same.
    let (s, t) = call(
        &app,
        Method::GET,
        "/v1/tickets/HOLD-1?tenant=hold-t",
        None,
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{t}");
    let doc = openapi::document();
    assert!(
        doc["paths"]["/v1/triage"]["post"]["responses"]["504"]["description"]
            .as_str()
            .unwrap()
            .contains("may still have been applied")
    );
}

/// A `tracing` writer that keeps what is logged, to check log lines.
#[derive(Clone, Default)]
struct LogBuffer(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn a_garbled_job_meta_is_logged_and_reported_not_hidden() {
    let dir = tempfile::tempdir().unwrap();
    let job_dir = dir.path().join("jobs").join("job-garbled");
    std::fs::create_dir_all(&job_dir).unwrap();
    std::fs::write(job_dir.join("meta.json"), b"{\"id\": \"job-garb").unwrap();
    std::fs::write(job_dir.join("input.jsonl"), b"").unwrap();
    let state = AppState::new(&config(dir.path().to_path_buf(), &[], Limits::default()));
    let logs = LogBuffer::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    // Jobs on disk are read when the engine arrives.
    tracing::subscriber::with_default(subscriber, || state.set_engine(shared_engine()));
    let logged = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(
        logged.contains("WARN") && logged.contains("job-garbled/meta.json"),
        "{logged}"
    );
    let app = router(state);
    for path in ["/v1/jobs/job-garbled", "/v1/jobs/job-garbled/labels"] {
        let (s, b) = call(&app, Method::GET, path, None, None).await;
        assert_error(s, &b, StatusCode::INTERNAL_SERVER_ERROR, "corrupt");
        let message = b["error"]["message"].as_str().unwrap();
        assert!(message.contains("jobs/job-garbled/meta.json"), "{message}");
        assert!(
            !message.contains(&dir.path().display().to_string()),
            "{message}"
        );
    }
    let (s, b) = call(&app, Method::GET, "/v1/jobs/job-other", None, None).await;
    assert_error(s, &b, StatusCode::NOT_FOUND, "not_found");
}

#[tokio::test]
async fn values_the_index_refuses_are_client_errors() {
    let h = harness();
    let app = &h.app;
    for body in [
        json!({"text": "空调", "filters": {"created_after": "notadate"}}),
        json!({"text": "空调", "filters": {"created_before": "2026-13-45"}}),
        json!({"text": "空调", "fusion": {"method": "rrf", "k": -1}}),
        json!({"text": "空调", "fusion": {"method": "weighted", "bm25_weight": 5}}),
    ] {
        let (s, b) = post(app, "/v1/search", body.clone()).await;
        assert_error(s, &b, StatusCode::UNPROCESSABLE_ENTITY, "invalid_input");
        let message = b["error"]["message"].as_str().unwrap();
        assert!(!message.is_empty(), "{body}: {b}");
    }
    let ticket = |extra: Value| {
        let mut t = json!({"title": "空调不制冷", "body": "空调不制冷"});
        t.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        t.to_string()
    };
    let (s, b) = call_str(app, Method::PUT, "/v1/tickets/a%1Fb", &ticket(json!({}))).await;
    assert_error(s, &b, StatusCode::UNPROCESSABLE_ENTITY, "invalid_input");
    let (s, b) = call_str(
        app,
        Method::PUT,
        "/v1/tickets/U1F-1",
        &ticket(json!({"tenant": "a\u{1f}b"})),
    )
    .await;
    assert_error(s, &b, StatusCode::UNPROCESSABLE_ENTITY, "invalid_input");
    // Refused by the index itself (an unparsable time): still the client's fault.
    let (s, b) = call_str(
        app,
        Method::PUT,
        "/v1/tickets/BADTIME-1",
        &ticket(json!({"created_at": "notadate"})),
    )
    .await;
    assert_error(s, &b, StatusCode::UNPROCESSABLE_ENTITY, "invalid_input");
    assert!(b["error"]["message"]
        .as_str()
        .unwrap()
        .contains("created_at"));
    let (s, b) = post(
        app,
        "/v1/feedback",
        json!({"ticket_id": "a\u{1f}b", "body": "空调不制冷", "category": "repair.not_cooling"}),
    )
    .await;
    assert_error(s, &b, StatusCode::UNPROCESSABLE_ENTITY, "invalid_input");
    let (s, b) = post(
        app,
        "/v1/triage",
        json!({"body": "空调", "tenant": "x\u{1f}"}),
    )
    .await;
    assert_error(s, &b, StatusCode::UNPROCESSABLE_ENTITY, "invalid_input");
}

#[tokio::test]
async fn unreadable_paths_and_queries_get_the_json_error_shape() {
    let h = harness();
    for (method, path) in [
        (Method::GET, "/v1/tickets/%FF"),
        (Method::DELETE, "/v1/articles/%FF%FE"),
        (Method::GET, "/v1/jobs/%FF"),
        (Method::GET, "/v1/tickets/x?tenant=a&tenant=b"),
        (Method::DELETE, "/v1/tickets/x?tenant=a&tenant=b"),
    ] {
        let (s, b) = call(&h.app, method.clone(), path, None, None).await;
        assert_error(s, &b, StatusCode::BAD_REQUEST, "bad_request");
        assert!(b.is_object(), "{method} {path}: {b}");
    }
}

#[tokio::test]
async fn feedback_ids_are_checked_like_document_ids() {
    let h = harness();
    let long = "f".repeat(1000);
    let (s, b) = post(
        &h.app,
        "/v1/feedback",
        json!({"ticket_id": long, "body": "空调不制冷", "category": "repair.not_cooling"}),
    )
    .await;
    assert_error(s, &b, StatusCode::PAYLOAD_TOO_LARGE, "too_large");
    assert!(b["error"]["message"]
        .as_str()
        .unwrap()
        .contains("ticket_id"));
    // Nothing was created under that id.
    let (s, _) = call(&h.app, Method::GET, "/v1/tickets/ffff", None, None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, b) = post(
        &h.app,
        "/v1/feedback",
        json!({"ticket_id": "\u{200b}", "body": "空调不制冷", "category": "repair.not_cooling"}),
    )
    .await;
    assert_error(s, &b, StatusCode::UNPROCESSABLE_ENTITY, "invalid_input");
    let (s, b) = post(
        &h.app,
        "/v1/feedback",
        json!({"solved_by_article": "k".repeat(300), "message": "怎么退货"}),
    )
    .await;
    assert_error(s, &b, StatusCode::PAYLOAD_TOO_LARGE, "too_large");
}

#[tokio::test]
async fn text_without_visible_characters_counts_as_empty() {
    let h = harness();
    let app = &h.app;
    let invisible = "\u{200b}\u{200c}\u{200d}\u{2060}\u{feff} \u{00ad}";
    for (path, body) in [
        (
            "/v1/triage",
            json!({"title": invisible, "body": "\u{200b}"}),
        ),
        ("/v1/suggest", json!({"body": invisible})),
        ("/v1/deflect", json!({"text": invisible})),
        ("/v1/search", json!({"text": "\u{200b}"})),
    ] {
        let (s, b) = post(app, path, body).await;
        assert_error(s, &b, StatusCode::UNPROCESSABLE_ENTITY, "invalid_input");
    }
    let (s, b) = call_str(
        app,
        Method::PUT,
        "/v1/tickets/ZW-1",
        &json!({"title": invisible, "body": "\u{200b}"}).to_string(),
    )
    .await;
    assert_error(s, &b, StatusCode::UNPROCESSABLE_ENTITY, "invalid_input");
    let (s, b) = call_str(
        app,
        Method::PUT,
        "/v1/articles/ZW-2",
        &json!({"question": "\u{200b}", "answer": "答"}).to_string(),
    )
    .await;
    assert_error(s, &b, StatusCode::UNPROCESSABLE_ENTITY, "invalid_input");
    // An id of just U+200B is refused like an empty id.
    let ok_ticket = json!({"title": "空调不制冷", "body": "空调不制冷"}).to_string();
    let (s, b) = call_str(app, Method::PUT, "/v1/tickets/%E2%80%8B", &ok_ticket).await;
    assert_error(s, &b, StatusCode::UNPROCESSABLE_ENTITY, "invalid_input");
    let (s, b) = call(app, Method::GET, "/v1/tickets/%E2%80%8B", None, None).await;
    assert_error(s, &b, StatusCode::UNPROCESSABLE_ENTITY, "invalid_input");
    // Visible text next to zero-width characters is real text.
    let (s, b) = post(app, "/v1/triage", json!({"body": "\u{200b}空调不制冷"})).await;
    assert_eq!(s, StatusCode::OK, "{b}");
}

#[tokio::test]
async fn short_ticket_fields_have_limits_that_name_the_field() {
    let h = harness();
    let app = &h.app;
    let long = "s".repeat(30_000);
    for field in [
        "status",
        "created_at",
        "category",
        "priority",
        "queue",
        "channel",
        "customer_id",
        "tenant",
    ] {
        let mut t = json!({"title": "空调不制冷", "body": "空调不制冷"});
        t[field] = json!(long);
        let (s, b) = call_str(app, Method::PUT, "/v1/tickets/LEN-1", &t.to_string()).await;
        assert_error(s, &b, StatusCode::PAYLOAD_TOO_LARGE, "too_large");
        let message = b["error"]["message"].as_str().unwrap();
        assert!(
            message.contains(&format!("`{field}`")),
            "{field}: {message}"
        );
    }
    let (s, _) = call(app, Method::GET, "/v1/tickets/LEN-1", None, None).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "nothing over a limit was stored");
    let (s, b) = post(
        app,
        "/v1/jobs/reclassify",
        json!({"tickets": [{"id": "LEN-2", "body": "空调", "status": long}]}),
    )
    .await;
    assert_error(s, &b, StatusCode::PAYLOAD_TOO_LARGE, "too_large");
    assert!(b["error"]["message"].as_str().unwrap().contains("`status`"));
    let (s, b) = post(
        app,
        "/v1/feedback",
        json!({"ticket_id": "LEN-3", "body": "空调", "category": long}),
    )
    .await;
    assert_error(s, &b, StatusCode::PAYLOAD_TOO_LARGE, "too_large");
    // Ordinary values pass.
    let t = json!({"title": "空调不制冷", "body": "空调不制冷", "status": "open", "created_at": "2026-03-01T08:30:00Z"});
    let (s, b) = call_str(app, Method::PUT, "/v1/tickets/LEN-4", &t.to_string()).await;
    assert_eq!(s, StatusCode::OK, "{b}");
}

#[tokio::test]
async fn bodies_must_be_json_objects() {
    let h = harness();
    let app = &h.app;
    for (path, body) in [
        ("/v1/search", r#"["空调","bm25",3]"#),
        ("/v1/triage", r#"["冰箱冒烟","冰箱后面冒烟了"]"#),
        ("/v1/deflect", r#""怎么退货""#),
        ("/v1/feedback", "42"),
        ("/v1/triage", "null"),
    ] {
        let (s, b) = call_str(app, Method::POST, path, body).await;
        assert_error(s, &b, StatusCode::UNPROCESSABLE_ENTITY, "invalid_input");
        assert!(
            b["error"]["message"]
                .as_str()
                .unwrap()
                .contains("JSON object"),
            "{body}: {b}"
        );
    }
    let (s, b) = call_str(app, Method::PUT, "/v1/tickets/ARR-1", r#"["a","b"]"#).await;
    assert_error(s, &b, StatusCode::UNPROCESSABLE_ENTITY, "invalid_input");
    // Broken JSON stays a syntax error.
    let (s, b) = call_str(app, Method::POST, "/v1/search", r#"["空调", "#).await;
    assert_error(s, &b, StatusCode::BAD_REQUEST, "malformed_json");
}

#[tokio::test]
async fn job_reports_show_paths_relative_to_the_data_dir() {
    let h = harness();
    let tickets: Vec<Value> = (0..2)
        .map(|i| json!({"id": format!("REL-{i}"), "title": "空调不制冷", "body": "空调不制冷", "category": "repair.not_cooling"}))
        .collect();
    let (s, b) = post(&h.app, "/v1/jobs/reclassify", json!({"tickets": tickets})).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{b}");
    let id = b["id"].as_str().unwrap().to_string();
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let status = loop {
        let (_, st) = call(&h.app, Method::GET, &format!("/v1/jobs/{id}"), None, None).await;
        if st["state"] == "done" || st["state"] == "failed" {
            break st;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "job never ended: {st}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(status["state"], "done", "{status}");
    let report = &status["report"];
    assert_eq!(
        report["input"],
        format!("jobs/{id}/input.jsonl"),
        "{status}"
    );
    assert_eq!(
        report["output"],
        format!("jobs/{id}/labels.jsonl"),
        "{status}"
    );
    let data_dir = h._dir.path().display().to_string();
    assert!(!status.to_string().contains(&data_dir), "{status}");
}
