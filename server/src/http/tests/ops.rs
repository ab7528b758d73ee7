//! Health, readiness, metrics, the routed operations and the pages.

use super::*;

#[tokio::test]
async fn health_and_readiness() {
    let dir = tempfile::tempdir().unwrap();
    let state = AppState::new(&config(dir.path().to_path_buf(), &[], Limits::default()));
    let app = crate::app(state);
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
    // Hold the retrain slot: the admin route must answer (409), not retrain the shared engine.
    let _slot = h.state.retrainer().try_begin().expect("no retrain running");
    let ops = routes::operations()
        .into_iter()
        .map(|op| {
            (
                format!("/v1{}", op.path),
                op.method.as_str().to_ascii_lowercase(),
            )
        })
        .chain(
            openapi::PUBLIC
                .iter()
                .map(|(p, m)| (p.to_string(), m.to_string())),
        );
    for (path, method) in ops {
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
