//! Tickets and articles: upserts are searchable on return, the path id wins.

use super::*;

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
