//! The connectors against the platforms' documented contracts (the contract
//! test server, `tests/contract`): a signed Zammad webhook becomes exactly
//! the documented write-backs; forged and replayed deliveries; failures
//! retried (500, 429 with Retry-After, dropped connections, a write applied
//! but unanswered) and a 4xx surfaced; a Chatwoot conversation answered,
//! clarified and handed off, and no bot loop; signed events; the widget's
//! CORS; the OpenAI-style embeddings.

use std::collections::BTreeSet;

use contract::{fixture, Contract, Failure, Recorded, ZammadTicket, CHATWOOT_TOKEN, ZAMMAD_TOKEN};

use super::*;
use crate::connectors::settings::{ChatwootSettings, WebhookSettings, ZammadSettings};
use crate::connectors::{signing, RetryPolicy, Secret, Settings};

const WAIT: Duration = Duration::from_secs(20);

fn settings(base: &str) -> Settings {
    let pack = triage::Pack::load(&pack_dir()).unwrap();
    Settings {
        zammad: vec![ZammadSettings {
            tenant: "zam".into(),
            url: base.into(),
            token: Secret::new(ZAMMAD_TOKEN),
            webhook_secret: Secret::new("zsecret"),
            groups: pack
                .queues
                .iter()
                .map(|q| (q.id.clone(), format!("G-{}", q.id)))
                .collect(),
            priorities: [("P0", 4), ("P1", 3), ("P2", 2), ("P3", 1)]
                .into_iter()
                .map(|(p, id)| (p.to_string(), id))
                .collect(),
            tags: Default::default(),
            needs_human_tag: "needs-human".into(),
            duplicate_tag: "possible-duplicate".into(),
        }],
        chatwoot: vec![ChatwootSettings {
            // The default tenant: its FAQ bank is the pack's.
            tenant: String::new(),
            url: base.into(),
            account_id: Some(1),
            bot_token: Secret::new(CHATWOOT_TOKEN),
            webhook_secret: Some(Secret::new("cwsecret")),
            url_token: None,
        }],
        webhooks: vec![WebhookSettings {
            tenant: "hooked".into(),
            url: format!("{base}/hooks/hooked"),
            secret: Secret::new("hooksecret"),
            events: ["*".to_string()].into(),
        }],
        widget_origins: vec!["http://shop.example".into()],
        policy: RetryPolicy {
            base: Duration::from_millis(10),
            max: Duration::from_millis(80),
            max_attempts: 8,
            timeout: Duration::from_millis(800),
        },
    }
}

fn connector_harness(contract: &Contract, keys: &[(&str, &str)]) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path().to_path_buf(), keys, Limits::default());
    cfg.connectors = settings(contract.base_url());
    let state = AppState::new(&cfg);
    state.set_engine(shared_engine());
    Harness {
        app: crate::app(state.clone()),
        state,
        _dir: dir,
    }
}

async fn send_raw(
    app: &Router,
    path: &str,
    headers: &[(&str, String)],
    body: &str,
) -> (StatusCode, Value) {
    let mut req = Request::builder()
        .method(Method::POST)
        .uri(path)
        .header("content-type", "application/json");
    for (k, v) in headers {
        req = req.header(*k, v.as_str());
    }
    let res = app
        .clone()
        .oneshot(req.body(Body::from(body.to_string())).unwrap())
        .await
        .unwrap();
    let status = res.status();
    let bytes = axum::body::to_bytes(res.into_body(), usize::MAX)
        .await
        .unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// A Zammad delivery of `body`, signed with `secret`.
async fn zammad_hook(
    app: &Router,
    tenant: &str,
    body: &str,
    secret: &str,
    delivery: &str,
) -> (StatusCode, Value) {
    let headers = [
        (
            "x-hub-signature",
            signing::sign_zammad(secret, body.as_bytes()),
        ),
        ("x-zammad-delivery", delivery.to_string()),
        ("x-zammad-trigger", "triage".to_string()),
    ];
    send_raw(
        app,
        &format!("/v1/connectors/zammad/webhook?tenant={tenant}"),
        &headers,
        body,
    )
    .await
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A Chatwoot `message_created` event of conversation `conv`, signed.
async fn chatwoot_hook(app: &Router, event: &Value) -> (StatusCode, Value) {
    let body = event.to_string();
    let ts = now();
    let headers = [
        (
            "x-chatwoot-signature",
            signing::sign_chatwoot("cwsecret", body.as_bytes(), ts),
        ),
        ("x-chatwoot-timestamp", ts.to_string()),
    ];
    send_raw(app, "/v1/connectors/chatwoot/webhook", &headers, &body).await
}

fn message(id: u64, conv: u64, text: &str) -> Value {
    let mut e = fixture("chatwoot/message-created.json");
    e["id"] = json!(id);
    e["content"] = json!(text);
    e["conversation"]["id"] = json!(conv);
    e
}

fn zammad_payload(id: u64, title: &str, body: &str) -> String {
    let mut p = fixture("zammad/webhook-ticket-created.json");
    p["ticket"]["id"] = json!(id);
    p["ticket"]["title"] = json!(title);
    p["article"]["ticket_id"] = json!(id);
    p["article"]["body"] = json!(format!("<p>{body}</p>"));
    p.to_string()
}

fn open_ticket() -> ZammadTicket {
    ZammadTicket {
        title: "x".into(),
        group: "Service Desk".into(),
        priority_id: 2,
        state: "open".into(),
        ..ZammadTicket::default()
    }
}

fn writes(requests: &[Recorded]) -> Vec<Recorded> {
    requests
        .iter()
        .filter(|r| r.method != "GET" && r.path.starts_with("/api/"))
        .cloned()
        .collect()
}

#[tokio::test]
async fn a_signed_zammad_webhook_becomes_the_exact_write_backs() {
    let zammad = Contract::start();
    zammad.add_ticket(81, open_ticket());
    let h = connector_harness(&zammad, &[]);
    let (title, text) = (
        "空调不制冷",
        "家里空调开了一整天都不制冷，出风是热的，遥控器显示正常",
    );
    let (_, want) = post(
        &h.app,
        "/v1/triage",
        json!({"title": title, "body": text, "tenant": "zam"}),
    )
    .await;
    let body = zammad_payload(81, title, text);
    let (s, b) = zammad_hook(&h.app, "zam", &body, "zsecret", "d-81").await;
    assert_eq!(
        (s, b["status"].as_str()),
        (StatusCode::OK, Some("queued")),
        "{b}"
    );
    assert!(zammad.wait_for(WAIT, |r| r
        .iter()
        .any(|r| r.path == "/api/v1/ticket_articles" && r.applied)));
    let got = writes(&zammad.requests());
    // The documented calls, in order: PUT ticket (group, priority), tags, the note.
    let mut expected: Vec<(String, String, Value)> = Vec::new();
    let abstain = want["category"]["abstain"].as_bool().unwrap();
    let mut put = json!({});
    if let (Some(q), false) = (
        want["queue"]["label"].as_str(),
        abstain || want["queue"]["abstain"] == true,
    ) {
        put["group"] = json!(format!("G-{q}"));
    }
    if let Some(p) = want["priority"]["label"].as_str() {
        put["priority_id"] = json!(
            [("P0", 4), ("P1", 3), ("P2", 2), ("P3", 1)]
                .iter()
                .find(|x| x.0 == p)
                .unwrap()
                .1
        );
    }
    if put.as_object().is_some_and(|o| !o.is_empty()) {
        expected.push(("PUT".into(), "/api/v1/tickets/81".into(), put));
    }
    let mut tags = Vec::new();
    if !abstain {
        tags.push(want["category"]["label"].as_str().unwrap().to_string());
    }
    if abstain || want["needs_human"] == true {
        tags.push("needs-human".to_string());
    }
    if !want["duplicates"].as_array().unwrap().is_empty() {
        tags.push("possible-duplicate".to_string());
    }
    for t in &tags {
        expected.push((
            "POST".into(),
            "/api/v1/tags/add".into(),
            json!({"item": t, "object": "Ticket", "o_id": 81}),
        ));
    }
    assert_eq!(got.len(), expected.len() + 1, "{got:#?}");
    for (r, (m, p, body)) in got.iter().zip(&expected) {
        assert_eq!((&r.method, &r.path, &r.body), (m, p, body));
    }
    let note = &got.last().unwrap();
    assert_eq!(
        (note.method.as_str(), note.path.as_str()),
        ("POST", "/api/v1/ticket_articles")
    );
    let keys: BTreeSet<&str> = note
        .body
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            "body",
            "content_type",
            "internal",
            "subject",
            "ticket_id",
            "type"
        ]
        .into()
    );
    assert_eq!(
        (note.body["internal"].clone(), note.body["type"].clone()),
        (json!(true), json!("note"))
    );
    let html = note.body["body"].as_str().unwrap();
    let cat = want["category"]["label"].as_str().unwrap();
    assert!(html.contains(cat) && html.contains("Evidence"), "{html}");
    assert!(note.body["subject"]
        .as_str()
        .unwrap()
        .starts_with("Triage suggestion [ref "));
    for r in &got {
        assert_eq!(
            r.headers["authorization"],
            format!("Token token={ZAMMAD_TOKEN}")
        );
        assert!(r.applied, "{r:?}");
    }
    // The ticket in Zammad now shows it.
    let t = zammad.ticket(81).unwrap();
    assert_eq!(t.articles.len(), 1);
    for tag in &tags {
        assert!(t.tags.contains(tag), "{tag}");
    }
    // Our index keeps it, so a later request can find it as a duplicate.
    let (s, stored) = call(
        &h.app,
        Method::GET,
        "/v1/tickets/zammad-81?tenant=zam",
        None,
        None,
    )
    .await;
    assert_eq!(
        (s, stored["channel"].as_str()),
        (StatusCode::OK, Some("zammad")),
        "{stored}"
    );
}

#[tokio::test]
async fn forged_or_replayed_zammad_deliveries_are_refused_or_acted_on_once() {
    let zammad = Contract::start();
    zammad.add_ticket(82, open_ticket());
    let h = connector_harness(&zammad, &[("k-admin", ":admin")]);
    let body = zammad_payload(82, "洗衣机漏水", "洗衣机一洗衣服底下就漏水");
    // Wrong secret, none, a body changed after signing: 401, nothing written.
    let (s, b) = zammad_hook(&h.app, "zam", &body, "guess", "f-1").await;
    assert_error(s, &b, StatusCode::UNAUTHORIZED, "unauthorized");
    let (s, _) = send_raw(
        &h.app,
        "/v1/connectors/zammad/webhook?tenant=zam",
        &[("x-zammad-delivery", "f-2".into())],
        &body,
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let sig = signing::sign_zammad("zsecret", body.as_bytes());
    let tampered = body.replace("漏水", "起火");
    let (s, _) = send_raw(
        &h.app,
        "/v1/connectors/zammad/webhook?tenant=zam",
        &[
            ("x-hub-signature", sig.clone()),
            ("x-zammad-delivery", "f-3".into()),
        ],
        &tampered,
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    // Another tenant's secret does not open this tenant, and a tenant without Zammad is unknown.
    let (s, _) = zammad_hook(&h.app, "acme", &body, "zsecret", "f-4").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    // A bearer key is no signature.
    let (s, _) = send_raw(
        &h.app,
        "/v1/connectors/zammad/webhook?tenant=zam",
        &[
            ("authorization", "Bearer k-admin".into()),
            ("x-zammad-delivery", "f-5".into()),
        ],
        &body,
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    // Signed, no delivery id: refused.
    let (s, _) = send_raw(
        &h.app,
        "/v1/connectors/zammad/webhook?tenant=zam",
        &[("x-hub-signature", sig)],
        &body,
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(zammad.requests().is_empty());
    // The genuine delivery, then Zammad's retries of it: acted on once.
    let (_, first) = zammad_hook(&h.app, "zam", &body, "zsecret", "d-82").await;
    assert_eq!(first["status"], "queued", "{first}");
    for _ in 0..3 {
        let (s, again) = zammad_hook(&h.app, "zam", &body, "zsecret", "d-82").await;
        assert_eq!(
            (s, again["status"].as_str(), again["id"].clone()),
            (StatusCode::OK, Some("duplicate"), first["id"].clone())
        );
    }
    assert!(zammad.wait_for(WAIT, |r| r
        .iter()
        .any(|r| r.path == "/api/v1/ticket_articles")));
    // Our own note fires the trigger too: not the customer's article, ignored.
    let mut note = serde_json::from_str::<Value>(&body).unwrap();
    note["article"]["sender"] = json!("Agent");
    note["article"]["internal"] = json!(true);
    let (_, ignored) = zammad_hook(&h.app, "zam", &note.to_string(), "zsecret", "d-82-note").await;
    assert_eq!(ignored["status"], "ignored", "{ignored}");
    let (_, outbox) = call(
        &h.app,
        Method::GET,
        "/v1/admin/outbox",
        Some("k-admin"),
        None,
    )
    .await;
    assert_eq!(outbox, json!([]), "delivered, nothing pending");
    assert_eq!(zammad.ticket(82).unwrap().articles.len(), 1);
}

#[tokio::test]
async fn zammad_outages_are_retried_and_a_refusal_is_surfaced() {
    let zammad = Contract::start();
    zammad.add_ticket(83, open_ticket());
    let h = connector_harness(&zammad, &[]);
    // Down, rate limited (Retry-After), a dropped connection, then a write
    // applied whose answer never comes: each call still lands exactly once.
    zammad.fail_next([
        Failure::Status(500),
        Failure::RetryAfter(429, 1),
        Failure::Drop,
        Failure::Status(502),
        Failure::ApplyThenDrop,
        Failure::Slow(Duration::from_millis(1500)),
    ]);
    let body = zammad_payload(
        83,
        "电视没有声音",
        "电视有画面但是没有声音，音量调到最大也没用",
    );
    let (_, b) = zammad_hook(&h.app, "zam", &body, "zsecret", "d-83").await;
    assert_eq!(b["status"], "queued", "{b}");
    assert!(zammad.wait_for(WAIT, |r| r
        .iter()
        .any(|r| r.path == "/api/v1/ticket_articles" && r.status == 201)));
    let applied = zammad.applied();
    let count = |path: &str| {
        applied
            .iter()
            .filter(|r| r.path == path && r.method != "GET")
            .count()
    };
    assert_eq!(count("/api/v1/ticket_articles"), 1, "{applied:#?}");
    assert!(count("/api/v1/tickets/83") <= 1);
    let t = zammad.ticket(83).unwrap();
    assert_eq!(t.articles.len(), 1);
    // The 429's Retry-After was honoured: the next call came a second later or more.
    let reqs = zammad.requests();
    let after_429 = reqs.iter().position(|r| r.status == 429).unwrap();
    assert!(after_429 + 1 < reqs.len());
    // A ticket Zammad does not have: 404 will not change by waiting; surfaced.
    let body = zammad_payload(999, "热水器不出热水", "热水器打开以后一直没有热水");
    let (_, b) = zammad_hook(&h.app, "zam", &body, "zsecret", "d-999").await;
    assert_eq!(b["status"], "queued");
    let id = b["id"].as_str().unwrap().to_string();
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let (_, listed) = call(&h.app, Method::GET, "/v1/admin/outbox", None, None).await;
        if let Some(item) = listed
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["id"] == id.as_str() && i["state"] == "failed")
        {
            assert!(item["error"].as_str().unwrap().contains("404"), "{item}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never given up: {listed}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, ready) = call(&h.app, Method::GET, "/readyz", None, None).await;
    assert_eq!(ready["outbox"]["failed"], 1, "{ready}");
    assert_eq!(ready["outbox"]["recent_failures"][0]["id"], id.as_str());
    let (_, metrics) = call(&h.app, Method::GET, "/metrics", None, None).await;
    let m = metrics.as_str().unwrap();
    assert!(
        m.contains("triage_outbox_failed 1\n") && m.contains("triage_outbox_pending 0\n"),
        "{m}"
    );
    assert!(!m.contains("triage_outbox_retries_total 0\n"), "{m}");
}

#[tokio::test]
async fn a_chatwoot_conversation_is_answered_clarified_and_handed_off() {
    let chatwoot = Contract::start();
    let h = connector_harness(&chatwoot, &[]);
    // An FAQ question: answered with the article.
    let article: Value = serde_json::from_str(
        std::fs::read_to_string(pack_dir().join("articles.jsonl"))
            .unwrap()
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    let question = article["question"].as_str().unwrap();
    let (s, b) = chatwoot_hook(&h.app, &message(1001, 20, question)).await;
    assert_eq!(
        (s, b["decision"].as_str()),
        (StatusCode::OK, Some("answer")),
        "{b}"
    );
    assert!(chatwoot.wait_for(WAIT, |r| r.len() == 1));
    let sent = chatwoot.messages(1, 20);
    assert_eq!(sent[0]["private"], false);
    assert!(sent[0]["content"]
        .as_str()
        .unwrap()
        .contains(article["answer"].as_str().unwrap()));
    let r = &chatwoot.requests()[0];
    assert_eq!(
        (r.path.as_str(), r.headers["api_access_token"].as_str()),
        (
            "/api/v1/accounts/1/conversations/20/messages",
            CHATWOOT_TOKEN
        )
    );
    assert_eq!(r.body["message_type"], "outgoing");
    // An unclear one: the candidates, numbered; "1" picks the first.
    let (_, b) = chatwoot_hook(&h.app, &message(1002, 21, "我想申请退款要怎么弄")).await;
    assert_eq!(b["decision"], "clarify", "{b}");
    assert!(chatwoot.wait_for(WAIT, |r| r.len() == 2));
    let offered = chatwoot.messages(1, 21)[0]["content"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(offered.contains("\n1. "), "{offered}");
    let (_, b) = chatwoot_hook(&h.app, &message(1003, 21, "1")).await;
    assert_eq!(b["decision"], "answer", "{b}");
    assert!(chatwoot.wait_for(WAIT, |r| r.len() == 3));
    let first = offered
        .split("\n1. ")
        .nth(1)
        .unwrap()
        .lines()
        .next()
        .unwrap();
    assert!(chatwoot.messages(1, 21)[1]["content"]
        .as_str()
        .unwrap()
        .contains(first));
    // Out of scope: handed off — told, a private note with the draft, status open.
    let (_, b) = chatwoot_hook(&h.app, &message(1004, 22, "明天北京会下雨吗？我想去爬长城")).await;
    assert_eq!(b["decision"], "handoff", "{b}");
    assert!(chatwoot.wait_for(WAIT, |r| r
        .iter()
        .any(|r| r.path.ends_with("toggle_status"))));
    let msgs = chatwoot.messages(1, 22);
    assert_eq!(msgs.len(), 2);
    assert_eq!(
        (msgs[0]["private"].clone(), msgs[1]["private"].clone()),
        (json!(false), json!(true))
    );
    assert!(
        msgs[1]["content"].as_str().unwrap().contains("长城"),
        "{}",
        msgs[1]
    );
    assert_eq!(chatwoot.status(1, 22).as_deref(), Some("open"));
    // Handed off: the bot stays quiet in that conversation from now on.
    let (_, b) = chatwoot_hook(&h.app, &message(1005, 22, "还在吗？")).await;
    assert_eq!(b["status"], "ignored", "{b}");
    // The same event again (Chatwoot's retry) is not answered twice.
    let (_, b) = chatwoot_hook(&h.app, &message(1001, 20, question)).await;
    assert_eq!(b["status"], "duplicate", "{b}");
    assert!(
        !chatwoot.wait_for(Duration::from_millis(300), |r| r.len() > 6),
        "{:#?}",
        chatwoot.requests()
    );
    assert_eq!(chatwoot.requests().len(), 6);
}

#[tokio::test]
async fn the_bot_never_answers_agents_itself_or_people_s_conversations() {
    let chatwoot = Contract::start();
    let h = connector_harness(&chatwoot, &[]);
    let q = "我的订单什么时候发货";
    let mut outgoing = message(2001, 30, q);
    outgoing["message_type"] = json!("outgoing");
    let mut agent = message(2002, 30, q);
    agent["sender"]["type"] = json!("user");
    let mut bot = message(2003, 30, q);
    bot["sender"]["type"] = json!("agent_bot");
    bot["message_type"] = json!("outgoing");
    let mut open = message(2004, 31, q);
    open["conversation"]["status"] = json!("open");
    let mut assigned = message(2005, 32, q);
    assigned["conversation"]["meta"]["assignee"] = json!({"id": 1, "type": "user"});
    let mut private = message(2006, 33, q);
    private["private"] = json!(true);
    let mut other_account = message(2007, 34, q);
    other_account["account"]["id"] = json!(9);
    for event in [outgoing, agent, bot, open, assigned, private, other_account] {
        let (s, b) = chatwoot_hook(&h.app, &event).await;
        assert_eq!(
            (s, b["status"].as_str()),
            (StatusCode::OK, Some("ignored")),
            "{event} → {b}"
        );
    }
    // Forged, stale or unsigned: refused.
    let body = message(2008, 35, q).to_string();
    let stale = now() - 600;
    for headers in [
        vec![
            (
                "x-chatwoot-signature",
                signing::sign_chatwoot("guess", body.as_bytes(), now()),
            ),
            ("x-chatwoot-timestamp", now().to_string()),
        ],
        vec![
            (
                "x-chatwoot-signature",
                signing::sign_chatwoot("cwsecret", body.as_bytes(), stale),
            ),
            ("x-chatwoot-timestamp", stale.to_string()),
        ],
        vec![],
    ] {
        let (s, _) = send_raw(&h.app, "/v1/connectors/chatwoot/webhook", &headers, &body).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
    }
    assert!(!chatwoot.wait_for(Duration::from_millis(300), |r| !r.is_empty()));
}

#[tokio::test]
async fn decisions_are_posted_as_signed_events() {
    let hooks = Contract::start();
    let h = connector_harness(&hooks, &[]);
    let (s, _) = post(
        &h.app,
        "/v1/triage",
        json!({"body": "冰箱冒烟了，有烧焦的味道", "tenant": "hooked"}),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let (_, d) = post(
        &h.app,
        "/v1/deflect",
        json!({"text": "明天北京会下雨吗", "tenant": "hooked"}),
    )
    .await;
    let (s, t) = post(
        &h.app,
        "/v1/chat/tickets",
        json!({"session_id": d["session_id"], "tenant": "hooked"}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{t}");
    // Another tenant's decisions go to its own endpoints (none here).
    post(
        &h.app,
        "/v1/triage",
        json!({"body": "冰箱冒烟了", "tenant": "other"}),
    )
    .await;
    assert!(hooks.wait_for(WAIT, |r| r.len() >= 2));
    assert!(!hooks.wait_for(Duration::from_millis(300), |r| r.len() > 2));
    let got = hooks.requests();
    let types: Vec<&str> = got
        .iter()
        .map(|r| r.headers["triage-event-type"].as_str())
        .collect();
    assert_eq!(types, ["triage.decided", "chat.handoff"]);
    for r in &got {
        let raw = &r.raw;
        assert!(
            signing::verify_event(
                "hooksecret",
                raw.as_bytes(),
                &r.headers["triage-signature"],
                now()
            ),
            "{r:?}"
        );
        assert!(!signing::verify_event(
            "other",
            raw.as_bytes(),
            &r.headers["triage-signature"],
            now()
        ));
        assert_eq!(
            r.body["id"].as_str(),
            Some(r.headers["triage-event-id"].as_str())
        );
        assert_eq!(r.body["tenant"], "hooked");
    }
    assert_eq!(got[0].body["data"]["source"], "api");
    assert_eq!(got[1].body["data"]["ticket_id"], t["ticket_id"]);
    assert!(got[1].body["data"]["draft"]["body"]
        .as_str()
        .unwrap()
        .contains("北京"));
}

#[tokio::test]
async fn the_widget_routes_answer_configured_origins_only() {
    let contract = Contract::start();
    let h = connector_harness(&contract, &[("pk", "shop:public"), ("ak", "shop:agent")]);
    let preflight = |origin: &'static str, path: &'static str| {
        let app = h.app.clone();
        async move {
            let req = Request::builder()
                .method(Method::OPTIONS)
                .uri(path)
                .header("origin", origin)
                .header("host", "triage.example")
                .header("access-control-request-method", "POST")
                .header(
                    "access-control-request-headers",
                    "authorization, content-type",
                )
                .body(Body::empty())
                .unwrap();
            app.oneshot(req).await.unwrap()
        }
    };
    let ok = preflight("http://shop.example", "/v1/deflect").await;
    assert_eq!(ok.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        ok.headers()["access-control-allow-origin"],
        "http://shop.example"
    );
    assert!(ok.headers()["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .contains("authorization"));
    for (origin, path) in [
        ("http://evil.example", "/v1/deflect"),
        ("http://shop.example", "/v1/search"),
    ] {
        let refused = preflight(origin, path).await;
        assert_eq!(refused.status(), StatusCode::FORBIDDEN, "{origin} {path}");
        assert!(refused
            .headers()
            .get("access-control-allow-origin")
            .is_none());
    }
    let cross = |origin: &'static str, path: &'static str, key: &'static str, body: Value| {
        let app = h.app.clone();
        async move {
            let req = Request::builder()
                .method(Method::POST)
                .uri(path)
                .header("origin", origin)
                .header("host", "triage.example")
                .header("content-type", "application/json")
                .header("authorization", format!("Bearer {key}"))
                .body(Body::from(body.to_string()))
                .unwrap();
            app.oneshot(req).await.unwrap()
        }
    };
    let res = cross(
        "http://shop.example",
        "/v1/deflect",
        "pk",
        json!({"text": "怎么申请退款"}),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        res.headers()["access-control-allow-origin"],
        "http://shop.example"
    );
    assert_eq!(res.headers()["vary"], "Origin");
    // An agent key on a listed origin still reaches only the widget's routes.
    let res = cross(
        "http://shop.example",
        "/v1/search",
        "ak",
        json!({"text": "退款"}),
    )
    .await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    let res = cross(
        "http://evil.example",
        "/v1/deflect",
        "pk",
        json!({"text": "退款"}),
    )
    .await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    // The script itself is served to any page.
    let res = h
        .app
        .clone()
        .oneshot(Request::get("/widget.js").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["content-type"], "text/javascript");
}

#[tokio::test]
async fn embeddings_answer_in_openai_shape_with_the_engines_vectors() {
    let h = harness();
    let texts = ["空调不制冷", "How do I reset my router?"];
    let (s, b) = post(
        &h.app,
        "/v1/embeddings",
        json!({"model": "any", "input": texts, "input_type": "passage"}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(
        (b["object"].as_str(), b["model"].as_str()),
        (Some("list"), Some("test-hash"))
    );
    let engine = shared_engine();
    let want = engine.embedder().embed(&texts, EmbedKind::Passage).unwrap();
    for (i, w) in want.iter().enumerate() {
        let d = &b["data"][i];
        assert_eq!(
            (d["object"].as_str(), d["index"].as_u64()),
            (Some("embedding"), Some(i as u64))
        );
        let got: Vec<f32> = serde_json::from_value(d["embedding"].clone()).unwrap();
        assert_eq!(&got, w);
    }
    assert!(b["usage"]["prompt_tokens"].as_u64().unwrap() > 0);
    assert_eq!(b["usage"]["prompt_tokens"], b["usage"]["total_tokens"]);
    // One string, base64 (OpenAI's Python client's default): the same floats.
    let (_, one) = post(
        &h.app,
        "/v1/embeddings",
        json!({"input": texts[0], "encoding_format": "base64"}),
    )
    .await;
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(one["data"][0]["embedding"].as_str().unwrap())
        .unwrap();
    let floats: Vec<f32> = bytes
        .chunks(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(
        floats,
        engine
            .embedder()
            .embed(&texts[..1], EmbedKind::Query)
            .unwrap()[0]
    );
    // Limits and errors as elsewhere.
    for (body, status) in [
        (json!({"input": []}), StatusCode::UNPROCESSABLE_ENTITY),
        (
            json!({"input": ["ok", " "]}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            json!({"input": [1, 2, 3]}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            json!({"input": "x", "dimensions": 3}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            json!({"input": "x", "input_type": "document"}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            json!({"input": vec!["x"; 257]}),
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
        (
            json!({"input": "x".repeat(20_001)}),
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
    ] {
        let (s, e) = post(&h.app, "/v1/embeddings", body.clone()).await;
        assert_eq!(s, status, "{body} → {e}");
    }
}
