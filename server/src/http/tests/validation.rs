//! Request validation: every refusal gets the error shape and the right status.

use super::*;

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
async fn values_the_index_refuses_are_client_errors() {
    let h = harness();
    let app = &h.app;
    for body in [
        json!({"text": "空调", "filters": {"created_after": "notadate"}}),
        json!({"text": "空调", "filters": {"created_before": "2026-13-45"}}),
        json!({"text": "空调", "fusion": {"method": "rrf", "k": -1}}),
        json!({"text": "空调", "fusion": {"method": "weighted", "bm25_weight": 5}}),
        json!({"text": "空调", "fusion": {"method": "zscore", "bm25_weight": -0.5}}),
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
