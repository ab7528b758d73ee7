//! Request timeouts and load shedding, and the slot a timed-out request keeps.

use super::*;

#[tokio::test]
async fn slow_requests_time_out_and_excess_load_is_shed() {
    let h = harness_with(
        &[],
        Limits {
            max_concurrency: 1,
            request_timeout: Duration::from_millis(300),
            ..Limits::default()
        },
    );
    let app = h.app.clone();
    let slow =
        tokio::spawn(
            async move { post(&app, "/v1/triage", json!({"body": "SLOW request"})).await },
        );
    // Wait until the slow request holds the only slot (not a fixed sleep: CI machines are busy).
    while SLOW_STARTED.load(std::sync::atomic::Ordering::SeqCst) == 0 && !slow.is_finished() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (s, b) = post(&h.app, "/v1/triage", json!({"body": "fast"})).await;
    assert_error(s, &b, StatusCode::SERVICE_UNAVAILABLE, "overloaded");
    let (s, b) = slow.await.unwrap();
    assert_error(s, &b, StatusCode::GATEWAY_TIMEOUT, "timeout");
    // Once the slow work has really finished, its slot is free and requests pass.
    wait_for_free_slots(&h.state, 1).await;
    let (s, _) = post(&h.app, "/v1/triage", json!({"body": "fast"})).await;
    assert_eq!(s, StatusCode::OK);
    let (_, m) = call(&h.app, Method::GET, "/metrics", None, None).await;
    let m = m.as_str().unwrap().to_string();
    assert!(m.contains("triage_http_shed_total 1"), "{m}");
    assert!(m.contains("status=\"504\""), "{m}");
}

/// Waits (up to a minute) until `n` concurrency slots are free, i.e. the work
/// of earlier requests, timed out or not, has finished.
async fn wait_for_free_slots(state: &AppState, n: usize) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while state.permits().available_permits() < n {
        assert!(
            std::time::Instant::now() < deadline,
            "the slots were never freed"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timed_out_work_keeps_its_slot_until_it_really_ends() {
    // Its own engine: held embeddings must not stall other tests' batches.
    let dir = tempfile::tempdir().unwrap();
    let limits = Limits {
        max_concurrency: 2,
        request_timeout: Duration::from_millis(200),
        ..Limits::default()
    };
    let state = AppState::new(&config(dir.path().join("server"), &[], limits));
    state.set_engine(open_test_engine(dir.path().join("engine")));
    let app = crate::app(state.clone());
    // Two heavy requests fill both slots; their work is held past the timeout.
    let write =
        json!({"title": "HOLD 写入", "body": "HOLD 空调不制冷", "tenant": "hold-t"}).to_string();
    let (a, b) = tokio::join!(
        post(&app, "/v1/triage", json!({"body": "HOLD 空调不制冷"})),
        call_str(&app, Method::PUT, "/v1/tickets/HOLD-1", &write),
    );
    // Both answer 504 while their work is still blocked: the answer is prompt.
    assert_error(a.0, &a.1, StatusCode::GATEWAY_TIMEOUT, "timeout");
    assert_error(b.0, &b.1, StatusCode::GATEWAY_TIMEOUT, "timeout");
    // The work still runs, so it still holds the slots: new load is shed at
    // once with 503 instead of piling more work onto the blocking pool.
    assert_eq!(state.permits().available_permits(), 0);
    for _ in 0..3 {
        let (s, b) = post(&app, "/v1/triage", json!({"body": "电视没有声音"})).await;
        assert_error(s, &b, StatusCode::SERVICE_UNAVAILABLE, "overloaded");
    }
    let (_, m) = call(&app, Method::GET, "/metrics", None, None).await;
    assert!(
        m.as_str().unwrap().contains("triage_http_in_flight 2"),
        "{m}"
    );
    open_hold_gate();
    wait_for_free_slots(&state, 2).await;
    let (s, b) = post(&app, "/v1/triage", json!({"body": "电视没有声音"})).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    // As documented for 504: the timed-out write was applied all the same.
    let (s, t) = call(
        &app,
        Method::GET,
        "/v1/tickets/HOLD-1?tenant=hold-t",
        None,
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{t}");
    let doc = openapi::document();
    assert!(
        doc["paths"]["/v1/triage"]["post"]["responses"]["504"]["description"]
            .as_str()
            .unwrap()
            .contains("may still have been applied")
    );
}
