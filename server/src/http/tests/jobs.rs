//! Reclassification jobs through the API: progress, cancel and resume, corrupt metadata, reported paths.

use super::*;

#[tokio::test]
async fn reclassify_jobs_run_in_the_background_with_progress() {
    let h = harness();
    let tickets: Vec<Value> = (0..5)
        .map(|i| json!({"id": format!("R-{i}"), "title": "空调不制冷", "body": format!("空调不制冷 第{i}台"), "category": "old.category"}))
        .collect();
    let (s, b) = post(&h.app, "/v1/jobs/reclassify", json!({"tickets": tickets})).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{b}");
    let id = b["id"].as_str().unwrap().to_string();
    let mut status = Value::Null;
    for _ in 0..200 {
        let (s, b) = call(&h.app, Method::GET, &format!("/v1/jobs/{id}"), None, None).await;
        assert_eq!(s, StatusCode::OK);
        status = b;
        if status["state"] == "done" || status["state"] == "failed" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(status["state"], "done", "{status}");
    assert_eq!(status["done"], 5);
    let report = &status["report"];
    assert_eq!(report["tickets"], 5, "{status}");
    let moved = report["changed"].as_u64().unwrap() + report["abstained"].as_u64().unwrap();
    assert_eq!(
        moved, 5,
        "old.category is not in the pack: every ticket changes or abstains"
    );
    let (s, labels) = call(
        &h.app,
        Method::GET,
        &format!("/v1/jobs/{id}/labels"),
        None,
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(labels.as_str().unwrap().lines().count(), 5);
    let (s, b) = post(&h.app, "/v1/jobs/reclassify", json!({"tickets": []})).await;
    assert_error(s, &b, StatusCode::UNPROCESSABLE_ENTITY, "invalid_input");
}

#[test]
fn reclassify_stops_on_cancel_and_resumes_without_repeats() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let engine = shared_engine();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("tickets.jsonl");
    let output = dir.path().join("labels.jsonl");
    let mut lines: Vec<String> = (0..12)
        .map(|i| json!({"id": format!("C-{i}"), "title": "洗衣机漏水", "body": format!("洗衣机底部漏水 {i}"), "category": "repair.water_leak"}).to_string())
        .collect();
    lines.insert(3, "not json".into());
    lines.push(json!({"id": "C-0", "body": "duplicate id"}).to_string());
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();

    let cancel = AtomicBool::new(false);
    let opts = crate::reclassify::RunOptions {
        tenant: None,
        cancel: Some(&cancel),
    };
    let mut seen = 0;
    let first = crate::reclassify::run(&engine, &input, &output, &opts, &mut |p| {
        seen = p.done;
        if p.done >= 5 {
            cancel.store(true, Ordering::SeqCst);
        }
    })
    .unwrap();
    assert!(first.interrupted);
    assert_eq!(first.processed_this_run, 5);
    assert_eq!(seen, 5);

    let base = dir.path().join("labels.report");
    let second = crate::reclassify::run_cli(&engine, &input, &output, &base, false).unwrap();
    assert!(!second.interrupted);
    assert_eq!(second.resumed, 5);
    assert_eq!(second.processed_this_run, 7);
    assert_eq!(second.tickets, 12);
    assert_eq!(second.duplicate_ids, 1);
    assert_eq!(second.error_count, 1);
    assert_eq!(second.errors[0].line, 4);
    let text = std::fs::read_to_string(&output).unwrap();
    let ids: std::collections::HashSet<String> = text
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!((ids.len(), text.lines().count()), (12, 12));
    // Mostly the labelled category comes back for such clear leak reports.
    assert!(
        second.per_category["repair.water_leak"].unchanged >= 6,
        "{second:?}"
    );
    assert!(dir.path().join("labels.report.json").is_file());
    assert!(std::fs::read_to_string(dir.path().join("labels.report.md"))
        .unwrap()
        .contains("repair.water_leak"));
}

/// A `tracing` writer that keeps what is logged, to check log lines.
#[derive(Clone, Default)]
struct LogBuffer(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn a_garbled_job_meta_is_logged_and_reported_not_hidden() {
    let dir = tempfile::tempdir().unwrap();
    let job_dir = dir.path().join("jobs").join("job-garbled");
    std::fs::create_dir_all(&job_dir).unwrap();
    std::fs::write(job_dir.join("meta.json"), b"{\"id\": \"job-garb").unwrap();
    std::fs::write(job_dir.join("input.jsonl"), b"").unwrap();
    let state = AppState::new(&config(dir.path().to_path_buf(), &[], Limits::default()));
    let logs = LogBuffer::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    // Jobs on disk are read when the engine arrives.
    tracing::subscriber::with_default(subscriber, || state.set_engine(shared_engine()));
    let logged = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(
        logged.contains("WARN") && logged.contains("job-garbled/meta.json"),
        "{logged}"
    );
    let app = crate::app(state);
    for path in ["/v1/jobs/job-garbled", "/v1/jobs/job-garbled/labels"] {
        let (s, b) = call(&app, Method::GET, path, None, None).await;
        assert_error(s, &b, StatusCode::INTERNAL_SERVER_ERROR, "corrupt");
        let message = b["error"]["message"].as_str().unwrap();
        assert!(message.contains("jobs/job-garbled/meta.json"), "{message}");
        assert!(
            !message.contains(&dir.path().display().to_string()),
            "{message}"
        );
    }
    let (s, b) = call(&app, Method::GET, "/v1/jobs/job-other", None, None).await;
    assert_error(s, &b, StatusCode::NOT_FOUND, "not_found");
}

#[tokio::test]
async fn job_reports_show_paths_relative_to_the_data_dir() {
    let h = harness();
    let tickets: Vec<Value> = (0..2)
        .map(|i| json!({"id": format!("REL-{i}"), "title": "空调不制冷", "body": "空调不制冷", "category": "repair.not_cooling"}))
        .collect();
    let (s, b) = post(&h.app, "/v1/jobs/reclassify", json!({"tickets": tickets})).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{b}");
    let id = b["id"].as_str().unwrap().to_string();
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let status = loop {
        let (_, st) = call(&h.app, Method::GET, &format!("/v1/jobs/{id}"), None, None).await;
        if st["state"] == "done" || st["state"] == "failed" {
            break st;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "job never ended: {st}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(status["state"], "done", "{status}");
    let report = &status["report"];
    assert_eq!(
        report["input"],
        format!("jobs/{id}/input.jsonl"),
        "{status}"
    );
    assert_eq!(
        report["output"],
        format!("jobs/{id}/labels.jsonl"),
        "{status}"
    );
    let data_dir = h._dir.path().display().to_string();
    assert!(!status.to_string().contains(&data_dir), "{status}");
}
