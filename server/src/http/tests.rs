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
use crate::config::{EngineSettings, Limits};

/// Hashing embedder that sleeps on texts containing `SLOW` (to test timeouts and shedding).
struct TestEmbedder(triage::hashembed::HashEmbedder);

/// How many `SLOW` embeddings have started (so a test can wait for one to be in flight).
static SLOW_STARTED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

impl TextEmbedder for TestEmbedder {
    fn embed(&self, texts: &[&str], kind: EmbedKind) -> Result<Vec<Vec<f32>>, models::Error> {
        if texts.iter().any(|t| t.contains("SLOW")) {
            SLOW_STARTED.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(600));
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
    _dir: tempfile::TempDir,
}

fn config(data_dir: PathBuf, keys: &[(&str, &str)], limits: Limits) -> Config {
    Config {
        addr: "127.0.0.1:0".parse().unwrap(),
        engine: EngineSettings {
            data_dir,
            pack_dir: pack_dir(),
            model: models::ModelSource::Named("unused".into()),
            model_cache: PathBuf::from("unused"),
        },
        api_keys: keys
            .iter()
            .map(|(k, t)| (k.to_string(), t.to_string()))
            .collect(),
        limits,
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
        let embedder = Arc::new(batch::BatchingEmbedder::new(Arc::new(TestEmbedder(
            triage::hashembed::HashEmbedder::new(256),
        ))));
        let engine = Engine::open(
            triage::engine::EngineConfig {
                pack_dir: pack_dir(),
                data_dir: dir,
            },
            embedder,
        )
        .unwrap();
        Arc::new(engine)
    }))
}

fn harness_with(keys: &[(&str, &str)], limits: Limits) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path().to_path_buf(), keys, limits);
    let state = AppState::new(&cfg);
    state.set_engine(shared_engine());
    Harness {
        app: router(state),
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

    let (s, d) = post(
        &h.app,
        "/v1/deflect",
        json!({"text": "空调不制冷怎么办", "session_id": "s1"}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{d}");
    assert!(["answer", "clarify", "handoff"].contains(&d["action"].as_str().unwrap()));
    assert_eq!(d["session_id"], "s1");
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
    let h = harness_with(&[("key-a", "acme"), ("key-b", "globex")], Limits::default());
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
    // Once the slot is free again, requests pass.
    tokio::time::sleep(Duration::from_millis(400)).await;
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
async fn every_documented_operation_is_routed() {
    let h = harness();
    for (path, method) in openapi::OPERATIONS {
        let uri = path.replace("{id}", "x");
        let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
        let body = matches!(method, Method::POST | Method::PUT).then(|| b"{}".to_vec());
        let (s, b) = call(&h.app, method.clone(), &uri, None, body).await;
        let unrouted = b["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("no such route"));
        assert!(
            !unrouted && s != StatusCode::METHOD_NOT_ALLOWED,
            "{method} {uri}: {s} {b}"
        );
    }
}

#[tokio::test]
async fn deflect_sessions_are_per_tenant_and_echoed() {
    let h = harness();
    let (_, first) = post(
        &h.app,
        "/v1/deflect",
        json!({"text": "我的洗衣机", "session_id": "c1"}),
    )
    .await;
    assert_eq!(first["session_id"], "c1");
    let (s, second) = post(
        &h.app,
        "/v1/deflect",
        json!({"text": "还是漏水", "session_id": "c1"}),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    if second["action"] == "handoff" {
        // The draft carries the whole conversation.
        let body = second["ticket_draft"]["body"].as_str().unwrap_or_default();
        assert!(body.contains("洗衣机") && body.contains("漏水"), "{second}");
    }
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
    let req = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
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
