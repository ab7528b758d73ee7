//! API keys: required when configured, and each pins its tenant.

use super::*;

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
    // globex's suggestions for acme's very words show none of acme's tickets.
    let (s, sugg) = call(
        app,
        Method::POST,
        "/v1/suggest",
        Some("key-b"),
        Some(t.to_string().into_bytes()),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{sugg}");
    assert!(
        !sugg.to_string().contains("secret-acme-token"),
        "globex suggestions leak: {sugg}"
    );
    let (s, _) = call(app, Method::DELETE, "/v1/tickets/A-1", Some("key-b"), None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}
