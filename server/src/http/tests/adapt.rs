//! `/v1/admin/adapt`: an adaptation runs in the background, one at a time,
//! reports the held-out verdict, and a tenant's adapter can be dropped.

use super::*;

/// A harness whose engine runs the tiny BERT of `fixtures/tiny-bert` (an
/// encoder that can be adapted, in seconds) on the demo pack.
fn tiny_harness() -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path().join("server"), &[], Limits::default());
    let state = AppState::new(&cfg);
    let model = models::Embedder::load(
        &PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/tiny-bert"),
        models::EmbedderOptions::default(),
    )
    .unwrap();
    let engine = Engine::open(
        triage::EngineConfig::new(pack_dir(), dir.path().join("engine")),
        Arc::new(model),
    )
    .unwrap();
    state.set_engine(Arc::new(engine));
    Harness {
        app: crate::app(state.clone()),
        state,
        _dir: dir,
    }
}

async fn status(h: &Harness) -> Value {
    let (s, body) = call(&h.app, Method::GET, "/v1/admin/adapt", None, None).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_adaptation_runs_in_the_background_one_at_a_time_and_can_be_dropped() {
    let h = tiny_harness();
    let before = status(&h).await;
    assert_eq!(before["running"], false);
    assert!(before["active"].is_null() && before["last"].is_null());

    // Hold the adaptation once it runs, so the test sees it running.
    let (started_tx, started) = std::sync::mpsc::channel();
    let (release, release_rx) = std::sync::mpsc::channel();
    *h.state.adaptations().hold.lock().unwrap() = Some(crate::services::retrain::TestHold {
        started: started_tx,
        release: release_rx,
    });
    let (s, body) = call(&h.app, Method::POST, "/v1/admin/adapt", None, None).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["running"], true);
    tokio::task::spawn_blocking(move || started.recv().unwrap())
        .await
        .unwrap();
    let (s, body) = call(&h.app, Method::POST, "/v1/admin/adapt", None, None).await;
    assert_error(s, &body, StatusCode::CONFLICT, "conflict");
    let (s, body) = call(&h.app, Method::DELETE, "/v1/admin/adapt", None, None).await;
    assert_error(s, &body, StatusCode::CONFLICT, "conflict");
    release.send(()).unwrap();

    // Wait for the verdict (seconds with the tiny model).
    let mut done = status(&h).await;
    while done["running"] == true {
        tokio::time::sleep(Duration::from_millis(50)).await;
        done = status(&h).await;
    }
    assert!(done["last_error"].is_null(), "{done}");
    let last = &done["last"];
    assert!(last["held_out"].as_u64().unwrap() > 0, "{done}");
    let accepted = last["accepted"].as_bool().unwrap();
    assert_eq!(done["active"].is_string(), accepted, "{done}");

    let (s, body) = call(&h.app, Method::DELETE, "/v1/admin/adapt", None, None).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body["dropped"], accepted);
    let after = status(&h).await;
    assert!(
        after["active"].is_null() && after["last"].is_null(),
        "{after}"
    );
}

#[tokio::test]
async fn an_engine_without_an_adaptable_encoder_reports_why() {
    // The shared test engine runs a hashing embedder, which cannot be adapted.
    let h = private_harness(RetrainPolicy::default());
    let (s, _) = call(&h.app, Method::POST, "/v1/admin/adapt", None, None).await;
    assert_eq!(s, StatusCode::ACCEPTED);
    let mut done = status(&h).await;
    while done["running"] == true {
        tokio::time::sleep(Duration::from_millis(20)).await;
        done = status(&h).await;
    }
    assert!(
        done["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("built-in encoder")),
        "{done}"
    );
    assert!(done["active"].is_null());
}
