//! Retraining through the API: per-tenant heads, one at a time, in the background, admin only.

use super::*;

/// Labelled tickets that share made-up words no pack ticket has.
const ZB_TICKETS: usize = 30;

/// Writes the [`ZB_TICKETS`] tickets `ZB-*` of tenant `rt-a` with `category`.
async fn put_zb_tickets(app: &Router, category: &str, range: std::ops::Range<usize>) {
    for i in range {
        let t = json!({"tenant": "rt-a", "title": format!("zorblax 控制器 qwv 报警 {i}"),
            "body": format!("zorblax 控制器 面板 qwv 一直闪烁 vrunk 第{i}台"), "category": category});
        let (s, b) = call(
            app,
            Method::PUT,
            &format!("/v1/tickets/ZB-{i}"),
            None,
            Some(t.to_string().into_bytes()),
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{b}");
    }
}

/// The category the engine ranks first for a `zorblax` request of `tenant`,
/// which must have no tickets at the time: no neighbour of its own votes, so
/// only its linear head (and the pack's examples) can know what `zorblax` means.
async fn zb_probe_top(app: &Router, tenant: &str) -> String {
    let (s, t) = post(
        app,
        "/v1/triage",
        json!({"tenant": tenant, "title": "zorblax 控制器 报警", "body": "zorblax 控制器 面板 qwv 闪烁 vrunk"}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{t}");
    assert!(
        t["neighbours"].as_array().is_some_and(|n| n.is_empty()),
        "{tenant} has no tickets: {t}"
    );
    t["category"]["alternatives"][0]["label"]
        .as_str()
        .unwrap_or_else(|| panic!("no alternatives: {t}"))
        .to_string()
}

/// Deletes the `ZB-*` tickets of `rt-a`.
async fn delete_zb_tickets(app: &Router) {
    for i in 0..ZB_TICKETS {
        let uri = format!("/v1/tickets/ZB-{i}?tenant=rt-a");
        assert_eq!(
            call(app, Method::DELETE, &uri, None, None).await.0,
            StatusCode::OK
        );
    }
}

/// Two leaf categories of the pack other than `avoid`.
async fn two_other_leaves(app: &Router, avoid: &str) -> (String, String) {
    let (_, pack) = call(app, Method::GET, "/v1/pack", None, None).await;
    let cats = pack["categories"].as_array().unwrap();
    let parents: Vec<&str> = cats.iter().filter_map(|c| c["parent"].as_str()).collect();
    let leaves: Vec<String> = cats
        .iter()
        .filter_map(|c| c["id"].as_str())
        .filter(|id| !parents.contains(id) && *id != avoid)
        .map(String::from)
        .collect();
    (leaves[0].clone(), leaves[leaves.len() - 1].clone())
}

async fn retrain_status(app: &Router) -> Value {
    let (s, b) = call(app, Method::GET, "/readyz", None, None).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    b
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_retrain_teaches_the_tenants_head_and_no_other() {
    let h = private_harness(RetrainPolicy {
        after_changes: 0,
        min_interval: Duration::ZERO,
    });
    let app = &h.app;
    let untrained = zb_probe_top(app, "rt-a").await;
    assert_eq!(zb_probe_top(app, "rt-b").await, untrained);
    let (first, second) = two_other_leaves(app, &untrained).await;
    let ready = retrain_status(app).await;
    assert_eq!(ready["retrain"]["pending_changes"], 0, "{ready}");
    assert!(ready["retrain"]["last_trained_unix"].is_u64(), "{ready}");

    put_zb_tickets(app, &first, 0..ZB_TICKETS).await;
    // Deleting a missing ticket and writing an article change no labelled data.
    assert_eq!(
        call(
            app,
            Method::DELETE,
            "/v1/tickets/ZB-none?tenant=rt-a",
            None,
            None
        )
        .await
        .0,
        StatusCode::NOT_FOUND
    );
    let article = json!({"question": "zorblax 是什么", "answer": "一种控制器。", "tenant": "rt-a"});
    let (s, _) = call(
        app,
        Method::PUT,
        "/v1/articles/ZB-KB",
        None,
        Some(article.to_string().into_bytes()),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let ready = retrain_status(app).await;
    assert_eq!(ready["retrain"]["pending_changes"], ZB_TICKETS, "{ready}");
    let (_, stats) = call(app, Method::GET, "/v1/admin/stats?tenant=rt-b", None, None).await;
    assert_eq!(stats["retrain"]["pending_changes"], 0, "{stats}");

    let (s, r) = post(app, "/v1/admin/retrain?tenant=rt-a", json!({})).await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert_eq!(
        (r["status"].as_str(), r["tenant"].as_str()),
        (Some("retrained"), Some("rt-a")),
        "{r}"
    );
    assert_eq!(
        r["labelled_examples"].as_u64(),
        Some(ZB_TICKETS as u64),
        "{r}"
    );
    assert!(r["seconds"].as_f64().is_some_and(|s| s > 0.0), "{r}");
    let ready = retrain_status(app).await;
    assert_eq!(ready["retrain"]["pending_changes"], 0, "{ready}");
    assert_eq!(ready["retrain"]["completed"], 1, "{ready}");
    assert_eq!(ready["retrain"]["running"], false, "{ready}");
    // One tenant's data never trains another's head (before: rt-b got `first`).
    assert_eq!(
        zb_probe_top(app, "rt-b").await,
        untrained,
        "rt-a's tickets moved rt-b"
    );

    // With its tickets gone (not retrained yet), only rt-a's head knows zorblax.
    delete_zb_tickets(app).await;
    assert_eq!(
        zb_probe_top(app, "rt-a").await,
        first,
        "the head learned zorblax"
    );

    // A relabel is learned at the next retrain.
    put_zb_tickets(app, &second, 0..ZB_TICKETS).await;
    let (s, r) = post(app, "/v1/admin/retrain?tenant=rt-a", json!({})).await;
    assert_eq!(s, StatusCode::OK, "{r}");
    delete_zb_tickets(app).await;
    assert_eq!(
        zb_probe_top(app, "rt-a").await,
        second,
        "the head learned the relabel"
    );
    assert_eq!(zb_probe_top(app, "rt-b").await, untrained);

    // Deleting labelled tickets counts too, and shows in /metrics.
    let (_, m) = call(app, Method::GET, "/metrics", None, None).await;
    let m = m.as_str().unwrap();
    assert!(
        m.contains(&format!("triage_retrain_pending_changes {ZB_TICKETS}\n")),
        "{m}"
    );
    assert!(m.contains("triage_retrain_completed 2\n"), "{m}");
    assert!(m.contains("triage_retrain_last_duration_seconds "), "{m}");
    assert!(
        m.contains("triage_retrain_last_trained_timestamp_seconds "),
        "{m}"
    );
    // Retraining a tenant without labelled tickets falls back to the pack's heads.
    let (s, r) = post(app, "/v1/admin/retrain?tenant=rt-a", json!({})).await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert_eq!(zb_probe_top(app, "rt-a").await, untrained);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_retrain_while_one_runs_gets_409() {
    let h = private_harness(RetrainPolicy {
        after_changes: 0,
        min_interval: Duration::ZERO,
    });
    // Pause the first retrain once it holds the slot, until the test releases it.
    let (started_tx, started_rx) = std::sync::mpsc::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel();
    *h.state.retrainer().hold.lock().unwrap() = Some(crate::services::retrain::TestHold {
        started: started_tx,
        release: release_rx,
    });
    let app = h.app.clone();
    let first = tokio::spawn(async move { post(&app, "/v1/admin/retrain", json!({})).await });
    tokio::task::spawn_blocking(move || started_rx.recv_timeout(Duration::from_secs(120)))
        .await
        .unwrap()
        .expect("the first retrain never started");

    let (s, b) = post(&h.app, "/v1/admin/retrain", json!({})).await;
    assert_error(s, &b, StatusCode::CONFLICT, "conflict");
    assert!(
        b["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("already running")),
        "{b}"
    );
    assert_eq!(retrain_status(&h.app).await["retrain"]["running"], true);

    release_tx.send(()).unwrap();
    let (s, b) = first.await.unwrap();
    assert_eq!(s, StatusCode::OK, "{b}");
    assert!(
        b["labelled_examples"].as_u64().is_some_and(|n| n > 0),
        "{b}"
    );
    // The slot is free again.
    let (s, b) = post(&h.app, "/v1/admin/retrain", json!({})).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let ready = retrain_status(&h.app).await;
    assert_eq!(ready["retrain"]["completed"], 2, "{ready}");
    assert_eq!(ready["retrain"]["running"], false, "{ready}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_retrain_fires_after_enough_labelled_changes() {
    let h = private_harness(RetrainPolicy {
        after_changes: ZB_TICKETS as u64,
        min_interval: Duration::ZERO,
    });
    let task = h.state.start_background_retrain();
    let untrained = zb_probe_top(&h.app, "rt-a").await;
    let (category, _) = two_other_leaves(&h.app, &untrained).await;
    // All changes but one: ticket writes...
    put_zb_tickets(&h.app, &category, 0..ZB_TICKETS - 1).await;
    assert_eq!(
        retrain_status(&h.app).await["retrain"]["pending_changes"],
        ZB_TICKETS - 1
    );
    // ...and the last one an agent's correction.
    let last = ZB_TICKETS - 1;
    let (s, b) = post(
        &h.app,
        "/v1/feedback",
        json!({"ticket_id": format!("ZB-{last}"), "tenant": "rt-a", "title": format!("zorblax 控制器 qwv 报警 {last}"),
            "body": format!("zorblax 控制器 面板 qwv 一直闪烁 vrunk 第{last}台"), "category": category}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");

    let started = std::time::Instant::now();
    let ready = loop {
        let ready = retrain_status(&h.app).await;
        if ready["retrain"]["completed"].as_u64() >= Some(1) {
            break ready;
        }
        assert_eq!(ready["retrain"]["failed"], 0, "{ready}");
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no background retrain: {ready}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(ready["retrain"]["pending_changes"], 0, "{ready}");
    // The tenant that changed was retrained, and only it.
    assert_eq!(zb_probe_top(&h.app, "rt-b").await, untrained);
    task.abort();
    delete_zb_tickets(&h.app).await;
    assert_eq!(
        zb_probe_top(&h.app, "rt-a").await,
        category,
        "rt-a's head learned zorblax"
    );
}

#[tokio::test]
async fn admin_retrain_needs_an_api_key_when_keys_are_set() {
    let h = harness_with(&[("key-a", "acme:admin")], Limits::default());
    let (s, b) = call(&h.app, Method::POST, "/v1/admin/retrain", None, None).await;
    assert_error(s, &b, StatusCode::UNAUTHORIZED, "unauthorized");
    let (s, b) = call(
        &h.app,
        Method::POST,
        "/v1/admin/retrain",
        Some("nope"),
        None,
    )
    .await;
    assert_error(s, &b, StatusCode::UNAUTHORIZED, "unauthorized");
    assert_eq!(h.state.retrainer().status(None, None).completed, 0);
}
