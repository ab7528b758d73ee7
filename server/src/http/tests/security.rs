//! The service as an attacker and a careless integrator meet it (issue 15):
//! scopes on every route, customers who cannot teach the bank alone, tenants
//! that cannot train each other, personal data that stays with its owner,
//! slow clients, forged origins and hosts, odd ids and bodies.

use super::*;

/// Keys of the default tenant and of `acme`, one per scope.
const KEYS: &[(&str, &str)] = &[
    ("k-chat", ":chat"),
    ("k-agent", ":agent"),
    ("k-admin", ":admin"),
    ("a-chat", "acme:chat"),
    ("a-agent", "acme:agent"),
    ("a-admin", "acme:admin"),
];

fn keyed() -> Harness {
    harness_with(KEYS, Limits::default())
}

async fn send(
    app: &Router,
    method: Method,
    path: &str,
    key: Option<&str>,
    body: Value,
) -> (StatusCode, Value) {
    call(app, method, path, key, Some(body.to_string().into_bytes())).await
}

/// A raw request with the headers given (and no others).
async fn raw(
    app: &Router,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (StatusCode, Value) {
    let mut req = Request::builder().method(method).uri(path);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let res = app
        .clone()
        .oneshot(req.body(Body::from(body.to_vec())).unwrap())
        .await
        .unwrap();
    let status = res.status();
    let bytes = axum::body::to_bytes(res.into_body(), usize::MAX)
        .await
        .unwrap();
    let value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    (status, value)
}

#[tokio::test]
async fn every_route_answers_each_scope_as_it_declares() {
    let h = keyed();
    // Hold the retrain slot: admin retrains answer 409 instead of training the shared engine.
    let _slot = h.state.retrainer().try_begin().expect("no retrain running");
    let rank = |s: Scope| s as u8;
    for op in routes::operations() {
        let uri = format!("/v1{}", op.path.replace("{id}", "x"));
        for (key, scope) in [
            (None, None),
            (Some("wrong-key"), None),
            (Some("k-chat"), Some(Scope::Chat)),
            (Some("k-agent"), Some(Scope::Agent)),
            (Some("k-admin"), Some(Scope::Admin)),
            (Some("a-chat"), Some(Scope::Chat)),
        ] {
            let body = matches!(op.method, Method::POST | Method::PUT).then(|| b"{}".to_vec());
            let (s, b) = call(&h.app, op.method.clone(), &uri, key, body).await;
            let what = format!("{} {uri} with {key:?}: {s} {b}", op.method);
            match scope {
                None => assert_eq!(s, StatusCode::UNAUTHORIZED, "{what}"),
                Some(have) if rank(have) < rank(op.scope) => {
                    assert_error(s, &b, StatusCode::FORBIDDEN, "forbidden");
                    assert!(
                        b["error"]["message"]
                            .as_str()
                            .unwrap()
                            .contains(op.scope.as_str()),
                        "{what}"
                    );
                }
                Some(_) => assert!(
                    s != StatusCode::UNAUTHORIZED && s != StatusCode::FORBIDDEN,
                    "{what}"
                ),
            }
        }
    }
    // Service-wide figures are the operator's: an admin of the default tenant.
    for (key, want) in [
        (None, StatusCode::UNAUTHORIZED),
        (Some("k-agent"), StatusCode::FORBIDDEN),
        (Some("a-admin"), StatusCode::FORBIDDEN),
        (Some("k-admin"), StatusCode::OK),
    ] {
        assert_eq!(
            call(&h.app, Method::GET, "/metrics", key, None).await.0,
            want,
            "{key:?}"
        );
    }
    // Readiness stays open, but only the operator sees the totals.
    let (s, r) = call(&h.app, Method::GET, "/readyz", None, None).await;
    assert_eq!((s, r.clone()), (StatusCode::OK, json!({"status": "ready"})));
    let (_, r) = call(&h.app, Method::GET, "/readyz", Some("a-admin"), None).await;
    assert!(r.get("stats").is_none(), "{r}");
    let (_, r) = call(&h.app, Method::GET, "/readyz", Some("k-admin"), None).await;
    assert!(r["stats"]["tickets"].is_u64(), "{r}");
    for open in [
        "/healthz",
        "/v1/openapi.json",
        "/chat",
        "/agent",
        "/insights",
    ] {
        assert_eq!(
            call(&h.app, Method::GET, open, None, None).await.0,
            StatusCode::OK,
            "{open}"
        );
    }
}

#[tokio::test]
async fn chat_keys_cannot_relabel_teach_or_read_anything() {
    let h = keyed();
    let app = &h.app;
    // Before: `POST /v1/feedback` without an agent made a fire report answer
    // with the cancel-an-order article, and relabelled a safety report.
    let fire = "冰箱冒烟了，有烧焦的味道";
    let (s, b) = send(
        app,
        Method::POST,
        "/v1/feedback",
        Some("k-chat"),
        json!({"solved_by_article": "kb-050", "message": fire}),
    )
    .await;
    assert_error(s, &b, StatusCode::FORBIDDEN, "forbidden");
    let (s, b) = send(
        app,
        Method::POST,
        "/v1/feedback",
        Some("k-chat"),
        json!({"ticket_id": "SEC-1", "body": fire, "category": "billing.invoice"}),
    )
    .await;
    assert_error(s, &b, StatusCode::FORBIDDEN, "forbidden");
    // Nor read, write or delete tickets, search, suggest or retrain.
    for (method, path) in [
        (Method::GET, "/v1/tickets/T-0001"),
        (Method::PUT, "/v1/tickets/SEC-2"),
        (Method::DELETE, "/v1/tickets/T-0001"),
        (Method::POST, "/v1/search"),
        (Method::POST, "/v1/suggest"),
        (Method::POST, "/v1/admin/retrain"),
        (Method::GET, "/v1/learned"),
    ] {
        let (s, b) = send(
            app,
            method.clone(),
            path,
            Some("k-chat"),
            json!({"text": "x", "body": "x"}),
        )
        .await;
        assert_error(s, &b, StatusCode::FORBIDDEN, "forbidden");
    }
    // Through the chat's own route, feedback is about what the conversation was shown.
    let (_, d) = send(
        app,
        Method::POST,
        "/v1/deflect",
        Some("k-chat"),
        json!({"text": fire}),
    )
    .await;
    assert_eq!(d["action"], "handoff", "{d}");
    let session = d["session_id"].as_str().unwrap();
    let (s, b) = send(
        app,
        Method::POST,
        "/v1/chat/feedback",
        Some("k-chat"),
        json!({"session_id": session, "turn": 1, "article_id": "kb-050", "helpful": true}),
    )
    .await;
    assert_error(s, &b, StatusCode::UNPROCESSABLE_ENTITY, "invalid_input");
    // A made-up conversation is nobody's.
    let (s, b) = send(app, Method::POST, "/v1/chat/feedback", Some("k-chat"),
        json!({"session_id": "0123456789abcdef0123456789abcdef", "turn": 1, "article_id": "kb-050", "helpful": true})).await;
    assert_error(s, &b, StatusCode::NOT_FOUND, "not_found");
    // And another tenant's chat key cannot use this conversation.
    let (s, b) = send(
        app,
        Method::POST,
        "/v1/chat/feedback",
        Some("a-chat"),
        json!({"session_id": session, "turn": 1, "article_id": "kb-050", "helpful": true}),
    )
    .await;
    assert_error(s, &b, StatusCode::NOT_FOUND, "not_found");
    let (_, again) = send(
        app,
        Method::POST,
        "/v1/deflect",
        Some("k-chat"),
        json!({"text": fire}),
    )
    .await;
    assert_eq!(again["action"], "handoff", "{again}");
}

/// Deflects `text` in a new conversation with `key`.
async fn ask(app: &Router, key: &str, text: &str) -> Value {
    let (s, d) = send(
        app,
        Method::POST,
        "/v1/deflect",
        Some(key),
        json!({"text": text}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{d}");
    d
}

#[tokio::test]
async fn one_customers_click_never_changes_what_others_get() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path().join("server"), KEYS, Limits::default());
    let state = AppState::new(&cfg);
    state.set_engine(open_test_engine(dir.path().join("engine")));
    let app = crate::app(state.clone());
    // Clarified (not answered) with the refund article in this pack.
    let message = "我想申请退款要怎么弄";
    let before = ask(&app, "k-chat", message).await;
    assert_eq!(before["action"], "clarify", "{before}");
    assert_eq!(
        before["candidates"][0]["article"]["id"], "kb-052",
        "{before}"
    );
    let vote = |session: String, turn: u64| {
        let app = app.clone();
        async move {
            let (s, b) = send(&app, Method::POST, "/v1/chat/feedback", Some("k-chat"),
                json!({"session_id": session, "turn": turn, "article_id": "kb-052", "helpful": true})).await;
            assert_eq!(s, StatusCode::OK, "{b}");
            b
        }
    };
    // One customer says "this helped", again and again: a candidate, nothing more.
    let first = ask(&app, "k-chat", message).await;
    let session = first["session_id"].as_str().unwrap().to_string();
    for _ in 0..5 {
        let b = vote(session.clone(), 1).await;
        assert_eq!(b["learning"], "candidate", "{b}");
    }
    let other = ask(&app, "k-chat", message).await;
    assert_eq!(
        (&other["action"], &other["confidence"]),
        (&before["action"], &before["confidence"]),
        "{other}"
    );
    // Another tenant's customers never see it either way.
    let (_, listed) = call(&app, Method::GET, "/v1/learned", Some("a-agent"), None).await;
    assert_eq!(listed, json!([]));
    // Three conversations agreeing make it an answer for everyone of this tenant...
    for _ in 0..2 {
        let d = ask(&app, "k-chat", message).await;
        vote(d["session_id"].as_str().unwrap().to_string(), 1).await;
    }
    let after = ask(&app, "k-chat", message).await;
    assert_eq!(after["action"], "answer", "{after}");
    assert_eq!(after["candidates"][0]["article"]["id"], "kb-052");
    // ...shown as the article's, never with the customers' words.
    assert!(
        after["candidates"][0]["evidence"]["matched_phrasing"].is_null(),
        "{after}"
    );
    assert!(!after.to_string().contains("alt_questions"), "{after}");
    // An agent sees where it came from and removes it: gone for good.
    let (_, listed) = call(&app, Method::GET, "/v1/learned", Some("k-agent"), None).await;
    let learned = &listed[0];
    assert_eq!(
        (
            learned["status"].as_str(),
            learned["helpful_sessions"].as_u64()
        ),
        (Some("active"), Some(3)),
        "{listed}"
    );
    assert_eq!(learned["source"], "customer");
    let id = learned["id"].as_str().unwrap();
    let (s, b) = call(
        &app,
        Method::DELETE,
        &format!("/v1/learned/{id}"),
        Some("k-agent"),
        None,
    )
    .await;
    assert_eq!(
        (s, b["status"].as_str()),
        (StatusCode::OK, Some("removed")),
        "{b}"
    );
    let removed = ask(&app, "k-chat", message).await;
    assert_eq!(removed["action"], "clarify", "{removed}");
    let d = ask(&app, "k-chat", message).await;
    let b = vote(d["session_id"].as_str().unwrap().to_string(), 1).await;
    assert_eq!(b["learning"], "removed", "{b}");
    // An agent's approval brings it back at once.
    let (s, _) = call(
        &app,
        Method::POST,
        &format!("/v1/learned/{id}/approve"),
        Some("k-agent"),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(ask(&app, "k-chat", message).await["action"], "answer");
    // The article's record shows its learned phrasings to agents.
    let (_, record) = call(
        &app,
        Method::GET,
        "/v1/articles/kb-052",
        Some("k-agent"),
        None,
    )
    .await;
    assert_eq!(record["learned"][0]["id"], id, "{record}");
}

#[tokio::test]
async fn personal_data_is_masked_and_never_shown_to_customers() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path().join("server"), KEYS, Limits::default());
    let state = AppState::new(&cfg);
    state.set_engine(open_test_engine(dir.path().join("engine")));
    let app = crate::app(state.clone());
    // Before: a "this helped" message with a name, phone, e-mail and address
    // became an alternative question, returned to later customers.
    let message = "我叫王小明，电话13812345678，邮箱 wxm@example.com，住北京市朝阳区建国路88号3栋，怎么申请退款";
    let (s, out) = send(
        &app,
        Method::POST,
        "/v1/feedback",
        Some("k-agent"),
        json!({"solved_by_article": "kb-052", "message": message}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{out}");
    let learned = out["learned_phrasing"]["text"]
        .as_str()
        .unwrap()
        .to_string();
    for secret in ["王小明", "13812345678", "wxm@example.com", "建国路88号"] {
        assert!(!learned.contains(secret), "{secret} kept in {learned}");
        let (_, listed) = call(&app, Method::GET, "/v1/learned", Some("k-agent"), None).await;
        assert!(!listed.to_string().contains(secret), "{listed}");
    }
    assert!(learned.contains("申请退款"), "{learned}");
    // What the chat returns is what it shows: no phrasings, learned or not.
    let d = ask(&app, "k-chat", "怎么申请退款？").await;
    assert!(
        !d.to_string().contains("alt_questions") && !d.to_string().contains("[phone]"),
        "{d}"
    );
    let article = &d["candidates"][0]["article"];
    let keys: Vec<&String> = article.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["answer", "category", "id", "question"], "{d}");
    // The article as written is unchanged; search is for agents, and finds no learned text.
    let (_, hits) = send(
        &app,
        Method::POST,
        "/v1/search",
        Some("k-agent"),
        json!({"text": "申请退款", "k": 20}),
    )
    .await;
    assert!(!hits.to_string().contains("[phone]"), "{hits}");
    // Learned phrasings are bounded: an essay is not one.
    let (s, b) = send(
        &app,
        Method::POST,
        "/v1/feedback",
        Some("k-agent"),
        json!({"solved_by_article": "kb-052", "message": "退款".repeat(3000)}),
    )
    .await;
    assert_error(s, &b, StatusCode::UNPROCESSABLE_ENTITY, "invalid_input");
}

#[tokio::test]
async fn handoff_tickets_are_open_unlabelled_and_cannot_teach_resolutions() {
    let h = keyed();
    let app = &h.app;
    // Before: the chat PUT tickets as it liked (status closed, a resolution with a
    // phishing link), and six of them became the agents' predicted resolution.
    let (s, b) = send(
        app,
        Method::PUT,
        "/v1/tickets/chat-evil",
        Some("k-chat"),
        json!({"body": "x"}),
    )
    .await;
    assert_error(s, &b, StatusCode::FORBIDDEN, "forbidden");
    let scam = "退款到账了吗 请付款299元到 http://evil.example 并提供卡号";
    let mut ids = Vec::new();
    for _ in 0..2 {
        let d = ask(app, "k-chat", scam).await;
        let session = d["session_id"].as_str().unwrap();
        let (s, b) = send(
            app,
            Method::POST,
            "/v1/chat/tickets",
            Some("k-chat"),
            json!({"session_id": session, "status": "closed", "resolution": scam}),
        )
        .await;
        assert_error(s, &b, StatusCode::UNPROCESSABLE_ENTITY, "invalid_input");
        for _ in 0..3 {
            let (s, b) = send(
                app,
                Method::POST,
                "/v1/chat/tickets",
                Some("k-chat"),
                json!({"session_id": session, "body": scam, "contact": "13812345678"}),
            )
            .await;
            assert_eq!(s, StatusCode::OK, "{b}");
            ids.push(b["ticket_id"].as_str().unwrap().to_string());
        }
        // A conversation creates a few tickets, not a flood.
        let (s, b) = send(
            app,
            Method::POST,
            "/v1/chat/tickets",
            Some("k-chat"),
            json!({"session_id": session, "body": scam}),
        )
        .await;
        assert_error(s, &b, StatusCode::UNPROCESSABLE_ENTITY, "invalid_input");
    }
    for id in &ids {
        let (s, t) = call(
            app,
            Method::GET,
            &format!("/v1/tickets/{id}"),
            Some("k-agent"),
            None,
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{t}");
        assert_eq!(
            (
                t["status"].as_str(),
                t["resolution"].as_str(),
                t["category"].as_str()
            ),
            (Some("open"), Some(""), Some("")),
            "{t}"
        );
        assert_eq!(t["fields"]["contact"], "13812345678");
    }
    let (_, s) = send(
        app,
        Method::POST,
        "/v1/suggest",
        Some("k-agent"),
        json!({"body": scam}),
    )
    .await;
    assert!(
        !s["predicted_resolution"]
            .to_string()
            .contains("evil.example"),
        "{s}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_tenant_cannot_train_another_tenants_classifier() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path().join("server"), KEYS, Limits::default());
    cfg.retrain = RetrainPolicy {
        after_changes: 0,
        min_interval: Duration::ZERO,
    };
    let state = AppState::new(&cfg);
    state.set_engine(open_test_engine(dir.path().join("engine")));
    let app = crate::app(state.clone());
    let probe = json!({"body": "Please issue a VAT invoice"});
    let (_, before) = send(
        &app,
        Method::POST,
        "/v1/triage",
        Some("k-agent"),
        probe.clone(),
    )
    .await;
    assert_eq!(before["category"]["label"], "billing.invoice", "{before}");
    // Before: acme's admin wrote invoice-like tickets labelled as fire hazards,
    // retrained, and everyone's invoice requests became P0 safety hazards.
    for i in 0..50 {
        let t = json!({"title": "VAT invoice", "body": format!("Please issue a VAT invoice for order {i}"), "category": "safety.hazard", "priority": "P0"});
        let (s, b) = send(
            &app,
            Method::PUT,
            &format!("/v1/tickets/POISON-{i}"),
            Some("a-admin"),
            t,
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{b}");
    }
    let (s, r) = send(
        &app,
        Method::POST,
        "/v1/admin/retrain?tenant=",
        Some("a-admin"),
        json!({}),
    )
    .await;
    assert_eq!(
        (s, r["tenant"].as_str()),
        (StatusCode::OK, Some("acme")),
        "{r}"
    );
    let (_, after) = send(
        &app,
        Method::POST,
        "/v1/triage",
        Some("k-agent"),
        probe.clone(),
    )
    .await;
    assert_eq!(after["category"]["label"], "billing.invoice", "{after}");
    assert_eq!(
        after["priority"]["label"], before["priority"]["label"],
        "{after}"
    );
    assert!(!after.to_string().contains("POISON"), "{after}");
    // acme itself learned its own (odd) labels.
    let (_, own) = send(
        &app,
        Method::POST,
        "/v1/triage",
        Some("a-agent"),
        probe.clone(),
    )
    .await;
    assert_eq!(own["category"]["label"], "safety.hazard", "{own}");
    // The default tenant's admin retrains only the default tenant.
    let (_, r) = send(
        &app,
        Method::POST,
        "/v1/admin/retrain?tenant=acme",
        Some("k-admin"),
        json!({}),
    )
    .await;
    assert_eq!(r["tenant"], "", "{r}");
    let (_, stats) = call(&app, Method::GET, "/v1/admin/stats", Some("a-admin"), None).await;
    assert_eq!(
        (stats["tenant"].as_str(), stats["stats"]["tickets"].as_u64()),
        (Some("acme"), Some(50)),
        "{stats}"
    );
}

#[tokio::test]
async fn cross_site_pages_and_rebinding_hosts_are_refused() {
    let h = harness();
    let app = &h.app;
    let body = br#"{"ticket_id": "XS-1", "body": "x", "category": "billing.invoice"}"#;
    // Before: a text/plain or form body was parsed as JSON, so any page could post.
    for ct in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
    ] {
        let (s, b) = raw(app, "POST", "/v1/feedback", &[("content-type", ct)], body).await;
        assert_error(
            s,
            &b,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        );
    }
    let (s, b) = raw(app, "POST", "/v1/feedback", &[], body).await;
    assert_error(
        s,
        &b,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    );
    // A page of another origin is refused even with a JSON body...
    let json_ct = ("content-type", "application/json");
    for origin in ["http://evil.example", "null", "http://127.0.0.1:9999"] {
        let (s, b) = raw(
            app,
            "POST",
            "/v1/feedback",
            &[json_ct, ("host", "127.0.0.1:8080"), ("origin", origin)],
            body,
        )
        .await;
        assert_error(s, &b, StatusCode::FORBIDDEN, "forbidden");
    }
    // ...its own origin is not.
    let (s, b) = raw(
        app,
        "POST",
        "/v1/triage",
        &[
            json_ct,
            ("host", "127.0.0.1:8080"),
            ("origin", "http://127.0.0.1:8080"),
        ],
        br#"{"body": "hi"}"#,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    // Without keys only loopback names are served: a rebinding name is not.
    for host in ["evil.example", "evil.example:8080", "10.0.0.5:8080"] {
        let (s, b) = raw(app, "GET", "/v1/pack", &[("host", host)], b"").await;
        assert_error(
            s,
            &b,
            StatusCode::MISDIRECTED_REQUEST,
            "misdirected_request",
        );
        let (s, _) = raw(app, "GET", "/agent", &[("host", host)], b"").await;
        assert_eq!(s, StatusCode::MISDIRECTED_REQUEST);
    }
    for host in ["localhost:8080", "127.0.0.1", "[::1]:8080"] {
        assert_eq!(
            raw(app, "GET", "/v1/pack", &[("host", host)], b"").await.0,
            StatusCode::OK,
            "{host}"
        );
    }
    // Pages carry a CSP, refuse framing, and nothing is content-sniffed.
    let res = h
        .app
        .clone()
        .oneshot(Request::get("/chat").body(Body::empty()).unwrap())
        .await
        .unwrap();
    let headers = res.headers();
    let csp = headers["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    assert_eq!(headers["x-frame-options"], "DENY");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    let res = h
        .app
        .clone()
        .oneshot(Request::get("/v1/pack").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(res.headers()["x-content-type-options"], "nosniff");
}

#[tokio::test]
async fn odd_ids_texts_and_heads_get_clear_errors() {
    let h = harness();
    let app = &h.app;
    // Before: ids with `..`, `/` or direction overrides were accepted.
    for id in [
        "..",
        "a%2Fb",
        "%2E%2E",
        "evil%E2%80%AEtxt.exe",
        "%E2%80%8Bzw",
        "%20pad",
    ] {
        let (s, b) = call(app, Method::GET, &format!("/v1/tickets/{id}"), None, None).await;
        assert!(
            s == StatusCode::UNPROCESSABLE_ENTITY
                || s == StatusCode::NOT_FOUND
                    && !b["error"]["message"]
                        .as_str()
                        .unwrap_or("")
                        .contains("no ticket"),
            "{id}: {s} {b}"
        );
    }
    let (s, b) = send(
        app,
        Method::PUT,
        "/v1/tickets/..%2Fetc",
        None,
        json!({"body": "x"}),
    )
    .await;
    assert_error(s, &b, StatusCode::UNPROCESSABLE_ENTITY, "invalid_input");
    // Before: U+2800 or combining marks alone counted as text.
    for blank in ["\u{2800}\u{2800}", "\u{0301}\u{0308}", " \u{20DD} "] {
        let (s, b) = post(app, "/v1/triage", json!({"body": blank})).await;
        assert_error(s, &b, StatusCode::UNPROCESSABLE_ENTITY, "invalid_input");
    }
    // A job takes only what PUT takes.
    let (s, b) = post(
        app,
        "/v1/jobs/reclassify",
        json!({"tickets": [{"id": "J-1", "title": " ", "body": "\u{200B}"}]}),
    )
    .await;
    assert_error(s, &b, StatusCode::UNPROCESSABLE_ENTITY, "invalid_input");
    // Before: a 10^12 Content-Length waited 30 s then 504; now it is refused at once.
    let (s, b) = raw(
        app,
        "POST",
        "/v1/triage",
        &[
            ("content-type", "application/json"),
            ("content-length", "1000000000000"),
        ],
        b"",
    )
    .await;
    assert_error(s, &b, StatusCode::PAYLOAD_TOO_LARGE, "too_large");
    // Over-long URIs and heads get the JSON shape too.
    let long = format!("/v1/tickets/{}", "a".repeat(9000));
    let (s, b) = call(app, Method::GET, &long, None, None).await;
    assert_error(s, &b, StatusCode::URI_TOO_LONG, "uri_too_long");
    let big = "b".repeat(33 * 1024);
    let (s, b) = raw(app, "GET", "/v1/pack", &[("x-big", big.as_str())], b"").await;
    assert_error(
        s,
        &b,
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        "headers_too_large",
    );
    // Before: 200 made-up methods made 200 metrics series (one of 60 KB).
    for i in 0..50 {
        let method = format!("M{i}{}", "X".repeat(i * 20));
        let req = Request::builder()
            .method(method.as_str())
            .uri("/v1/pack")
            .body(Body::empty())
            .unwrap();
        let _ = h.app.clone().oneshot(req).await.unwrap();
    }
    let (_, m) = call(app, Method::GET, "/metrics", None, None).await;
    let m = m.as_str().unwrap();
    assert!(
        !m.contains("M49XXX") && !m.contains("method=\"M1"),
        "made-up methods became series"
    );
    assert!(m.contains("method=\"other\""), "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_bodies_never_hold_the_engine_slots() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let limits = Limits {
        max_concurrency: 2,
        body_read_timeout: Duration::from_millis(500),
        ..Limits::default()
    };
    let state = AppState::new(&config(dir.path().to_path_buf(), &[], limits));
    state.set_engine(shared_engine());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, crate::app(state)).await });
    // Before: 70 clients sending headers and one byte held every slot for 18–30 s.
    let mut slow = Vec::new();
    for _ in 0..6 {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(b"POST /v1/triage HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{")
            .await
            .unwrap();
        slow.push(s);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = std::time::Instant::now();
    let mut fast = tokio::net::TcpStream::connect(addr).await.unwrap();
    let body = r#"{"body": "洗衣机漏水"}"#.as_bytes();
    fast.write_all(format!("POST /v1/triage HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len()).as_bytes()).await.unwrap();
    fast.write_all(body).await.unwrap();
    let mut answer = Vec::new();
    fast.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        started.elapsed() < Duration::from_millis(450),
        "waited for the slow clients: {:?}",
        started.elapsed()
    );
    // The slow ones are answered 408 once their time is up.
    for mut s in slow {
        let mut buf = vec![0u8; 64];
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
            .await
            .expect("a slow client was never answered")
            .unwrap();
        let text = String::from_utf8_lossy(&buf[..n]);
        assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    }
    server.abort();
}

#[tokio::test]
async fn jobs_can_be_cancelled_by_their_tenant_only() {
    let h = keyed();
    let tickets: Vec<Value> = (0..3000)
        .map(|i| json!({"id": format!("C-{i}"), "body": format!("空调不制冷 第{i}台")}))
        .collect();
    let (s, job) = send(
        &h.app,
        Method::POST,
        "/v1/jobs/reclassify",
        Some("a-admin"),
        json!({"tickets": tickets}),
    )
    .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{job}");
    let uri = format!("/v1/jobs/{}", job["id"].as_str().unwrap());
    // Another tenant's admin neither sees nor cancels it.
    let (s, b) = call(&h.app, Method::DELETE, &uri, Some("k-admin"), None).await;
    assert_error(s, &b, StatusCode::NOT_FOUND, "not_found");
    let (s, b) = call(&h.app, Method::DELETE, &uri, Some("a-admin"), None).await;
    assert_eq!(
        (s, b["state"].as_str()),
        (StatusCode::OK, Some("cancelled")),
        "{b}"
    );
    let (_, b) = call(&h.app, Method::GET, &uri, Some("a-admin"), None).await;
    assert_eq!(b["state"], "cancelled", "{b}");
}
