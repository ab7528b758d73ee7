//! The decision endpoints: triage, suggest, search, deflect and their shapes.

use super::*;

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
