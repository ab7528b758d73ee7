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
    for (method, path) in routes::signed_operations() {
        table.insert((format!("/v1{path}"), method.as_str().to_ascii_lowercase()));
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
