//! End-to-end tests of the HTTP API against the real `triage serve` binary
//! with the real default model and the demo pack: every route, the decisions
//! that need the real model (answer vs handoff, urgent priority, prefilled
//! fields, a correction that changes the next decision), error shapes, API
//! keys with tenant isolation, background jobs and graceful shutdown.

mod http_support;

use std::time::Duration;

use http_support::{assert_error, demo_pack, wait_job, Opts, Server};
use serde_json::{json, Value};

fn jsonl(name: &str) -> Vec<Value> {
    let path = demo_pack().join(name);
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn every_route_and_the_decisions_that_need_the_real_model() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &Opts::default());

    // Health, readiness, document, pages.
    assert_eq!(server.get("/healthz").0, 200);
    let (s, ready) = server.get("/readyz");
    assert_eq!(s, 200, "{ready}");
    let (s, doc) = server.get("/v1/openapi.json");
    assert_eq!(s, 200);
    for path in [
        "/v1/triage",
        "/v1/deflect",
        "/v1/suggest",
        "/v1/search",
        "/v1/feedback",
        "/v1/tickets/{id}",
        "/v1/articles/{id}",
        "/v1/jobs/reclassify",
        "/v1/jobs/{id}",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} not documented");
    }
    for page in ["/chat", "/agent"] {
        let (s, html) = server.get(page);
        assert_eq!(s, 200);
        assert!(html.as_str().unwrap().contains("<html"), "{page}");
    }

    // Urgent: a P0 lexicon word must never be routine.
    let (s, t) = server.post("/v1/triage", &json!({"title": "机房服务器宕机", "body": "我们的智能家居云服务器宕机了，所有设备都连不上，停机已经半小时", "channel": "phone"}));
    assert_eq!(s, 200, "{t}");
    assert_eq!(t["priority"]["label"], "P0", "{t}");

    // Prefill: order number and phone with their spans.
    let text = "空调不制冷，订单号 JD20240315001，联系电话 13812345678";
    let (s, t) = server.post("/v1/triage", &json!({"body": text}));
    assert_eq!(s, 200, "{t}");
    let fields = t["fields"].as_array().unwrap();
    let phone = fields
        .iter()
        .find(|f| f["name"] == "phone")
        .unwrap_or_else(|| panic!("no phone: {t}"));
    assert_eq!(phone["value"], "13812345678");
    let span = phone["char_span"].as_array().unwrap();
    let chars: Vec<char> = text.chars().collect();
    let (a, b) = (
        span[0].as_u64().unwrap() as usize,
        span[1].as_u64().unwrap() as usize,
    );
    assert_eq!(chars[a..b].iter().collect::<String>(), "13812345678");
    assert!(
        fields.iter().any(|f| f["name"] == "order_no"),
        "no order number: {t}"
    );

    // Unrelated requests (worded unlike the pack's out-of-scope examples) go to a
    // human instead of into a queue; a clear in-scope one is still decided.
    for text in [
        "请问下个月的马拉松比赛在哪里报名",
        "Can you recommend a good hiking trail for the weekend?",
    ] {
        let (s, t) = server.post("/v1/triage", &json!({ "body": text }));
        assert_eq!(s, 200, "{t}");
        assert!(t["category"]["label"].is_null(), "{text}: {t}");
        assert_eq!(t["needs_human"], true, "{text}: {t}");
    }
    let (_, t) = server.post(
        "/v1/triage",
        &json!({"body": "洗衣机脱水的时候声音特别大，像是在跳"}),
    );
    assert_eq!(t["category"]["label"], "repair.noise", "{t}");

    // Deflect: a knowledge-base question is answered with its article...
    let articles = jsonl("articles.jsonl");
    let article = &articles[0];
    let (s, d) = server.post("/v1/deflect", &json!({"text": article["question"]}));
    assert_eq!(s, 200, "{d}");
    assert_eq!(d["action"], "answer", "{d}");
    assert_eq!(d["candidates"][0]["article"]["id"], article["id"], "{d}");
    // ...and an out-of-scope message is handed off with a prefilled draft.
    let (s, d) = server.post(
        "/v1/deflect",
        &json!({"text": "明天北京会下雨吗？我想去爬长城"}),
    );
    assert_eq!(s, 200, "{d}");
    assert_eq!(d["action"], "handoff", "{d}");
    assert!(
        d["ticket_draft"]["body"]
            .as_str()
            .is_some_and(|b| b.contains("长城")),
        "{d}"
    );

    // A question worded like an article's ("cancel an order") that this service
    // does not serve is handed off too, not answered.
    let (_, d) = server.post(
        "/v1/deflect",
        &json!({"text": "How do I cancel my gym membership?"}),
    );
    assert_eq!(d["action"], "handoff", "{d}");
    // A close but unsure match asks the customer to choose among plausible
    // articles only, most probable first.
    let (_, d) = server.post(
        "/v1/deflect",
        &json!({"text": "冬天开空调制热，出来的是凉风"}),
    );
    assert_eq!(d["action"], "clarify", "{d}");
    let probs: Vec<f64> = d["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["confidence"].as_f64().unwrap())
        .collect();
    assert!(!probs.is_empty() && probs.len() <= 3, "{d}");
    assert!(probs.windows(2).all(|w| w[0] >= w[1]), "{d}");

    // Customers teach the chat together, never alone: "this helped" from one
    // conversation leaves the next customer's answer as it was; from three
    // different conversations the same question is answered.
    let chosen = d["candidates"][0]["article"]["id"].clone();
    let vote = |d: &Value| {
        let (s, b) = server.post(
            "/v1/chat/feedback",
            &json!({"session_id": d["session_id"], "turn": d["turn"], "article_id": chosen, "helpful": true}),
        );
        assert_eq!(s, 200, "{b}");
        b
    };
    assert_eq!(vote(&d)["learning"], "candidate");
    let (_, again) = server.post(
        "/v1/deflect",
        &json!({"text": "冬天开空调制热，出来的是凉风"}),
    );
    assert_eq!(
        again["action"], "clarify",
        "one customer changed the answer: {again}"
    );
    assert_eq!(vote(&again)["learning"], "candidate");
    let (_, third) = server.post(
        "/v1/deflect",
        &json!({"text": "冬天开空调制热，出来的是凉风"}),
    );
    assert_eq!(vote(&third)["learning"], "active");
    let (_, learned) = server.post(
        "/v1/deflect",
        &json!({"text": "冬天开空调制热，出来的是凉风"}),
    );
    assert_eq!(learned["action"], "answer", "{learned}");
    assert_eq!(
        learned["candidates"][0]["article"]["id"], chosen,
        "{learned}"
    );
    assert!(probs.iter().all(|&p| p >= 0.2), "{d}");

    // Duplicates: a recent repeat in other words is one, another fault of the
    // same appliance is not (their embeddings are close too).
    let (s, _) = server.put(
        "/v1/tickets/E2E-DUP",
        &json!({"title": "洗衣机不脱水", "body": "洗衣机不脱水，滚筒转不起来", "customer_id": "C-E2E"}),
    );
    assert_eq!(s, 200);
    let dups = |body: &str| {
        let (s, t) = server.post("/v1/triage", &json!({"body": body, "customer_id": "C-E2E"}));
        assert_eq!(s, 200, "{t}");
        t["duplicates"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| {
                (
                    d["ticket"]["id"].as_str().unwrap().to_string(),
                    d["same_customer"].as_bool().unwrap(),
                )
            })
            .collect::<Vec<_>>()
    };
    assert!(dups("洗衣机又不脱水了，滚筒转不起来").contains(&("E2E-DUP".to_string(), true)));
    for other in ["空调不制冷了", "洗碗机漏水", "维修师傅态度很差"] {
        assert!(
            !dups(other).iter().any(|(id, _)| id == "E2E-DUP"),
            "{other}"
        );
    }
    assert_eq!(
        server.call("DELETE", "/v1/tickets/E2E-DUP", None, None).0,
        200
    );

    // Suggest and search.
    let tickets = jsonl("tickets.jsonl");
    let (s, g) = server.post(
        "/v1/suggest",
        &json!({"title": tickets[0]["title"], "body": tickets[0]["body"]}),
    );
    assert_eq!(s, 200, "{g}");
    assert!(!g["similar_tickets"].as_array().unwrap().is_empty(), "{g}");
    let (s, hits) = server.post(
        "/v1/search",
        &json!({"text": article["question"], "k": 3, "filters": {"kind": "article"}}),
    );
    assert_eq!(s, 200, "{hits}");
    assert_eq!(hits[0]["id"], article["id"], "{hits}");
    assert!(hits[0]["explanation"]["fused_score"].is_number());

    // Upserts are searchable on return; the path id wins; deletes work.
    let (s, w) = server.put("/v1/tickets/E2E-1", &json!({"id": "other", "title": "投影仪 qx7-e2e 色彩偏绿", "body": "投影仪 qx7-e2e 画面偏绿色"}));
    assert_eq!((s, w["id"].as_str()), (200, Some("E2E-1")), "{w}");
    let (_, hits) = server.post("/v1/search", &json!({"text": "qx7-e2e", "mode": "bm25"}));
    assert_eq!(hits[0]["id"], "E2E-1", "{hits}");
    assert_eq!(
        server.get("/v1/tickets/E2E-1").1["title"],
        "投影仪 qx7-e2e 色彩偏绿"
    );
    let (s, _) = server.put(
        "/v1/articles/KB-E2E",
        &json!({"question": "qx7-e2e 投影仪如何校色", "answer": "在设置-画面中选择色彩校准。"}),
    );
    assert_eq!(s, 200);
    let (_, hits) = server.post(
        "/v1/search",
        &json!({"text": "qx7-e2e 校色", "filters": {"kind": "article"}}),
    );
    assert_eq!(hits[0]["id"], "KB-E2E", "{hits}");
    assert_eq!(
        server.call("DELETE", "/v1/tickets/E2E-1", None, None).0,
        200
    );
    assert_error(&server.get("/v1/tickets/E2E-1"), 404, "not_found");
    assert_eq!(
        server.call("DELETE", "/v1/articles/KB-E2E", None, None).0,
        200
    );

    // Feedback: a correction changes the next decision at once.
    let request =
        json!({"title": "qx9 设备异常", "body": "qx9 设备的指示灯一直闪烁橙色，说明书里没有写"});
    let (_, before) = server.post("/v1/triage", &request);
    let pack = server.get("/v1/pack").1;
    let parents: Vec<&str> = pack["categories"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["parent"].as_str())
        .collect();
    let target = pack["categories"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .find(|id| !parents.contains(id) && Some(*id) != before["category"]["label"].as_str())
        .unwrap();
    let (s, fb) = server.post("/v1/feedback", &json!({"ticket_id": "E2E-FB", "title": request["title"], "body": request["body"], "category": target}));
    assert_eq!(s, 200, "{fb}");
    let (_, after) = server.post("/v1/triage", &request);
    assert_eq!(
        after["category"]["label"], target,
        "before {before}\nafter {after}"
    );
    // One correction relabels that request, not every similar one: another
    // air-conditioner fault keeps its own category after a not-cooling request
    // is corrected to something else.
    let leak = json!({"body": "空调漏水了"});
    let (_, leak_before) = server.post("/v1/triage", &leak);
    let (s, _) = server.post(
        "/v1/feedback",
        &json!({"ticket_id": "E2E-FB2", "body": "空调不制冷了", "category": "complaint.service"}),
    );
    assert_eq!(s, 200);
    let (_, leak_after) = server.post("/v1/triage", &leak);
    assert_eq!(
        leak_after["category"]["label"], leak_before["category"]["label"],
        "{leak_after}"
    );
    assert!(
        !leak_after["category"]["reasons"]
            .to_string()
            .contains("agent correction"),
        "{leak_after}"
    );

    // Errors: one shape, the right status, and the server stays up.
    let raw = |m: &str, p: &str, b: &[u8]| server.call(m, p, None, Some(b));
    assert_error(
        &raw("POST", "/v1/triage", b"{\"body\": "),
        400,
        "malformed_json",
    );
    assert_error(
        &raw("POST", "/v1/deflect", b"{\"text\": \"\xc3\x28\"}"),
        400,
        "malformed_json",
    );
    assert_error(
        &raw("POST", "/v1/triage", b"{\"body\": [1, 2]}"),
        422,
        "invalid_input",
    );
    assert_error(
        &server.post("/v1/deflect", &json!({"text": "   "})),
        422,
        "invalid_input",
    );
    assert_error(
        &server.post("/v1/deflect", &json!({"text": "x".repeat(1_000_000)})),
        413,
        "too_large",
    );
    assert_error(&server.get("/v1/tickets/does-not-exist"), 404, "not_found");
    assert_error(&server.get("/v1/jobs/does-not-exist"), 404, "not_found");
    assert_error(
        &server.call("DELETE", "/v1/articles/does-not-exist", None, None),
        404,
        "not_found",
    );
    assert_eq!(server.get("/healthz").0, 200);

    // Metrics saw all of it.
    let (s, m) = server.get("/metrics");
    assert_eq!(s, 200);
    let m = m.as_str().unwrap();
    assert!(
        m.contains("route=\"/v1/triage\",method=\"POST\",status=\"200\""),
        "{m}"
    );
    assert!(
        m.contains("route=\"/v1/deflect\",method=\"POST\",status=\"413\""),
        "{m}"
    );
    assert!(
        m.contains("triage_decisions_total{decision=\"deflect\",outcome=\"handoff\"}"),
        "{m}"
    );
    assert!(m.contains("triage_deflection_rate"), "{m}");
}

#[test]
fn api_keys_pin_tenants_and_isolate_their_documents() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        dir.path(),
        &Opts {
            args: ["--api-key", "ka=acme:agent", "--api-key", "kb=globex:agent"]
                .map(String::from)
                .to_vec(),
            ..Opts::default()
        },
    );
    let body = json!({"body": "电视没有声音"}).to_string();
    assert_error(
        &server.call("POST", "/v1/triage", None, Some(body.as_bytes())),
        401,
        "unauthorized",
    );
    assert_error(
        &server.call("POST", "/v1/triage", Some("nope"), Some(body.as_bytes())),
        401,
        "unauthorized",
    );
    assert_error(
        &server.call("GET", "/v1/tickets/x", None, None),
        401,
        "unauthorized",
    );
    assert_eq!(
        server
            .call("POST", "/v1/triage", Some("ka"), Some(body.as_bytes()))
            .0,
        200
    );

    let secret = json!({"title": "acme-only-secret 冰箱", "body": "acme-only-secret 冰箱结霜", "tenant": "globex"}).to_string();
    let (s, w) = server.call(
        "PUT",
        "/v1/tickets/S-1",
        Some("ka"),
        Some(secret.as_bytes()),
    );
    assert_eq!((s, w["tenant"].as_str()), (200, Some("acme")), "{w}");
    assert_eq!(
        server.call("GET", "/v1/tickets/S-1", Some("ka"), None).0,
        200
    );
    assert_eq!(
        server
            .call("GET", "/v1/tickets/S-1?tenant=acme", Some("kb"), None)
            .0,
        404
    );
    let q = json!({"text": "acme-only-secret", "mode": "bm25", "filters": {"tenant": "acme"}})
        .to_string();
    let (_, hits) = server.call("POST", "/v1/search", Some("kb"), Some(q.as_bytes()));
    assert!(
        hits.as_array().unwrap().iter().all(|h| h["id"] != "S-1"),
        "globex saw acme's ticket: {hits}"
    );
    let (_, hits) = server.call("POST", "/v1/search", Some("ka"), Some(q.as_bytes()));
    assert!(
        hits.as_array().unwrap().iter().any(|h| h["id"] == "S-1"),
        "{hits}"
    );
    let (_, s2) = server.call("POST", "/v1/suggest", Some("kb"), Some(secret.as_bytes()));
    assert!(
        !s2.to_string().contains("acme-only-secret"),
        "globex suggestions leak: {s2}"
    );
    assert_eq!(
        server.call("DELETE", "/v1/tickets/S-1", Some("kb"), None).0,
        404
    );
}

#[test]
fn reclassify_job_reports_and_graceful_shutdown_exits_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), &Opts::default());
    let tickets: Vec<Value> = jsonl("tickets.jsonl").into_iter().take(40).collect();
    let (s, job) = server.post("/v1/jobs/reclassify", &json!({"tickets": tickets}));
    assert_eq!(s, 202, "{job}");
    let status = wait_job(
        &server,
        job["id"].as_str().unwrap(),
        Duration::from_secs(300),
    );
    assert_eq!(status["state"], "done", "{status}");
    let report = &status["report"];
    assert_eq!(report["tickets"], 40, "{report}");
    let total = report["changed"].as_u64().unwrap()
        + report["unchanged"].as_u64().unwrap()
        + report["abstained"].as_u64().unwrap();
    assert_eq!(total, 40, "{report}");
    // Labelled history reclassified by a model trained on it: mostly unchanged.
    assert!(report["unchanged"].as_u64().unwrap() >= 20, "{report}");
    assert!(dir
        .path()
        .join("jobs")
        .join(job["id"].as_str().unwrap())
        .join("report.md")
        .is_file());
    assert!(
        server.terminate(),
        "SIGTERM should end the server with success"
    );
}

#[test]
fn retrain_on_demand_and_in_the_background_after_labelled_changes() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("triage.toml");
    std::fs::write(
        &config,
        "retrain_after_changes = 2\nretrain_min_interval_secs = 0\n",
    )
    .unwrap();
    let data = dir.path().join("data");
    let server = Server::start(
        &data,
        &Opts {
            args: vec!["--config".into(), config.display().to_string()],
            ..Opts::default()
        },
    );
    let (s, ready) = server.get("/readyz");
    assert_eq!(s, 200, "{ready}");
    assert_eq!(ready["retrain"]["pending_changes"], 0, "{ready}");
    assert_eq!(ready["retrain"]["after_changes"], 2, "{ready}");

    // On demand: answers when done, with the labelled example count.
    let (s, r) = server.post("/v1/admin/retrain", &json!({}));
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["status"], "retrained", "{r}");
    assert_eq!(
        r["labelled_examples"], ready["stats"]["labelled_examples"],
        "{r}"
    );
    assert!(r["seconds"].as_f64().is_some_and(|s| s > 0.0), "{r}");

    // In the background: two labelled writes are enough with this configuration.
    for i in 0..2 {
        let (s, w) = server.put(
            &format!("/v1/tickets/RT-{i}"),
            &json!({"title": "洗衣机漏水", "body": format!("洗衣机底部漏水，第{i}次报修"), "category": "repair.water_leak"}),
        );
        assert_eq!(s, 200, "{w}");
    }
    let started = std::time::Instant::now();
    let ready = loop {
        let (_, ready) = server.get("/readyz");
        if ready["retrain"]["completed"].as_u64() >= Some(2) {
            break ready;
        }
        assert_eq!(ready["retrain"]["failed"], 0, "{ready}");
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "no background retrain: {ready}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(ready["retrain"]["pending_changes"], 0, "{ready}");
    assert_eq!(
        ready["stats"]["labelled_examples"].as_u64(),
        r["labelled_examples"].as_u64().map(|n| n + 2),
        "{ready}"
    );
    let (_, m) = server.get("/metrics");
    let m = m.as_str().unwrap();
    assert!(m.contains("triage_retrain_pending_changes 0\n"), "{m}");
    assert!(m.contains("triage_retrain_completed 2\n"), "{m}");
}
