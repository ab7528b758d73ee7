//! Fault tests against the real binary: kill -9 during API ingest, during a
//! background reclassify job and during `triage reclassify`, then restart —
//! nothing acknowledged is lost and nothing is done twice; a data directory
//! that cannot be written gives clear errors while the server stays up.

mod http_support;

use std::collections::HashSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_support::{assert_error, binary, demo_pack, try_call, wait_job, Opts, Server};
use serde_json::{json, Value};

fn ticket(i: usize) -> Value {
    let products = ["空调", "冰箱", "洗衣机", "热水器", "电视", "扫地机器人"];
    let problems = [
        "不制冷",
        "漏水",
        "有异响",
        "显示故障码 E4",
        "无法开机",
        "连不上 Wi-Fi",
    ];
    json!({
        "id": format!("K-{i:04}"),
        "title": format!("{}{}", products[i % 6], problems[(i / 6) % 6]),
        "body": format!("第 {i} 号客户反馈：{}{}，请尽快处理。", products[i % 6], problems[(i / 6) % 6]),
        "category": "repair.not_cooling",
        "status": "open",
    })
}

#[test]
fn kill9_during_api_ingest_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), &Opts::default());
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (acked, stop, base) = (Arc::clone(&acked), Arc::clone(&stop), server.base.clone());
        std::thread::spawn(move || {
            for i in 0..10_000 {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let t = ticket(i);
                let path = format!("/v1/tickets/{}", t["id"].as_str().unwrap());
                match try_call(&base, "PUT", &path, None, Some(t.to_string().as_bytes())) {
                    Ok((200, _)) => acked
                        .lock()
                        .unwrap()
                        .push(t["id"].as_str().unwrap().to_string()),
                    _ => break, // the server died mid-request: not acknowledged
                }
            }
        })
    };
    let started = Instant::now();
    while acked.lock().unwrap().len() < 25 {
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "ingest too slow"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    server.kill9();
    stop.store(true, Ordering::SeqCst);
    writer.join().unwrap();
    let acked = acked.lock().unwrap().clone();

    server.restart();
    for id in &acked {
        let (s, body) = server.get(&format!("/v1/tickets/{id}"));
        assert_eq!(
            s, 200,
            "acknowledged ticket {id} lost after kill -9: {body}"
        );
    }
    // And the restarted index is searchable and writable.
    let (s, hits) = server.post(
        "/v1/search",
        &json!({"text": "扫地机器人", "mode": "bm25", "filters": {"kind": "ticket"}}),
    );
    assert_eq!(s, 200, "{hits}");
    assert_eq!(
        server.put("/v1/tickets/after-restart", &ticket(9999)).0,
        200
    );
}

fn label_ids(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect()
}

fn assert_each_once(ids: &[String], n: usize) {
    let unique: HashSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "a ticket was done twice");
    assert_eq!(ids.len(), n, "a ticket was lost");
}

#[test]
fn kill9_during_a_reclassify_job_resumes_without_loss_or_repeats() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), &Opts::default());
    let n = 300;
    let tickets: Vec<Value> = (0..n).map(ticket).collect();
    let (s, job) = server.post("/v1/jobs/reclassify", &json!({"tickets": tickets}));
    assert_eq!(s, 202, "{job}");
    let id = job["id"].as_str().unwrap().to_string();
    let started = Instant::now();
    loop {
        let (_, st) = server.get(&format!("/v1/jobs/{id}"));
        let done = st["done"].as_u64().unwrap_or(0);
        if done >= 5 {
            assert!(
                done < n as u64,
                "the job finished before it could be interrupted"
            );
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "job did not start: {st}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    server.kill9();
    server.restart();
    let status = wait_job(&server, &id, Duration::from_secs(600));
    assert_eq!(status["state"], "done", "{status}");
    assert_eq!(status["report"]["tickets"], n, "{status}");
    let (_, labels) = server.get(&format!("/v1/jobs/{id}/labels"));
    assert_each_once(&label_ids(labels.as_str().unwrap()), n);
}

#[test]
fn kill9_during_cli_reclassify_then_rerun_finishes_each_ticket_once() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("tickets.jsonl");
    let output = dir.path().join("labels.jsonl");
    let n = 200;
    let text: String = (0..n).map(|i| ticket(i).to_string() + "\n").collect();
    std::fs::write(&input, text).unwrap();
    let data = dir.path().join("data");
    let run = || {
        Command::new(binary())
            .args(["reclassify", "--no-progress", "--data-dir"])
            .arg(&data)
            .arg("--pack")
            .arg(demo_pack())
            .arg("--in")
            .arg(&input)
            .arg("--out")
            .arg(&output)
            .stdout(Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut child = run();
    let started = Instant::now();
    while lines_in(&output) < 5 {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("reclassify exited early: {status}");
        }
        assert!(started.elapsed() < Duration::from_secs(600), "no progress");
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let partial = lines_in(&output);
    assert!(partial < n, "finished before the kill");
    // Simulate the torn write a power cut leaves behind.
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&output)
            .unwrap();
        f.write_all(b"{\"id\":\"K-9").unwrap();
    }
    let status = run().wait().unwrap();
    assert!(status.success());
    let ids = label_ids(&std::fs::read_to_string(&output).unwrap());
    assert_each_once(&ids, n);
    let report: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("labels.report.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(report["tickets"], n);
    assert_eq!(report["repaired_torn_line"], true);
    assert!(report["resumed"].as_u64().unwrap() >= partial as u64);
    assert!(dir.path().join("labels.report.md").is_file());
}

fn lines_in(path: &Path) -> usize {
    std::fs::read_to_string(path)
        .map(|t| t.matches('\n').count())
        .unwrap_or(0)
}

/// The model directory the server would use, copied where another user can read it.
fn readable_model_copy(dest: &Path) -> Option<std::path::PathBuf> {
    let source = match std::env::var_os("TRIAGE_MODEL_DIR") {
        Some(d) => std::path::PathBuf::from(d),
        None => {
            let cache = std::env::var_os("TRIAGE_MODEL_CACHE")
                .map(std::path::PathBuf::from)
                .or_else(|| {
                    std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache/triage/models"))
                })?;
            cache.join("multilingual-e5-small")
        }
    };
    if !source.is_dir() {
        return None;
    }
    std::fs::create_dir_all(dest).ok()?;
    for entry in std::fs::read_dir(&source).ok()? {
        let entry = entry.ok()?;
        if entry.path().is_file() {
            std::fs::copy(entry.path(), dest.join(entry.file_name())).ok()?;
        }
    }
    Some(dest.to_path_buf())
}

#[test]
fn unwritable_data_dir_gives_clear_errors_and_the_server_stays_up() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let is_root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.starts_with(b"0"))
        .unwrap_or(false);
    let mut opts = Opts::default();
    if is_root {
        // Root ignores permission bits: run the server as `nobody` instead,
        // with a model copy it can read.
        let nobody = 65534;
        let Some(model) = readable_model_copy(&dir.path().join("model")) else {
            eprintln!("skipped: no model directory to copy (fetch the model first)");
            return;
        };
        Command::new("chown")
            .arg("-R")
            .arg(format!("{nobody}:{nobody}"))
            .arg(dir.path())
            .status()
            .unwrap();
        opts.run_as = Some(nobody);
        opts.args = vec!["--model-dir".into(), model.display().to_string()];
    }
    let server = Server::start(&data, &opts);
    assert_eq!(server.put("/v1/tickets/RO-0", &ticket(0)).0, 200);

    make_read_only(&data);
    let put = server.put("/v1/tickets/RO-1", &ticket(1));
    assert_error(&put, 507, "storage_unavailable");
    let msg = put.1["error"]["message"].as_str().unwrap().to_lowercase();
    assert!(
        msg.contains("permission") || msg.contains("read-only"),
        "unclear message: {msg}"
    );
    let job = server.post("/v1/jobs/reclassify", &json!({"tickets": [ticket(2)]}));
    assert_error(&job, 507, "storage_unavailable");
    // Reads and decisions still work.
    assert_eq!(server.get("/healthz").0, 200);
    assert_eq!(server.get("/v1/tickets/RO-0").0, 200);
    assert_eq!(
        server
            .post("/v1/triage", &json!({"body": "电视没有声音"}))
            .0,
        200
    );
}

fn make_read_only(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    for entry in walk(dir) {
        let mode = if entry.is_dir() { 0o555 } else { 0o444 };
        std::fs::set_permissions(&entry, std::fs::Permissions::from_mode(mode)).unwrap();
    }
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = vec![dir.to_path_buf()];
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.path().is_dir() {
                out.extend(walk(&e.path()));
            } else {
                out.push(e.path());
            }
        }
    }
    out
}

#[test]
fn cli_search_refuses_an_empty_query_or_zero_hits() {
    let dir = tempfile::tempdir().unwrap();
    for args in [vec![""], vec!["  "], vec!["-k", "0", "空调不制冷"]] {
        let out = Command::new(binary())
            .arg("search")
            .arg("--data-dir")
            .arg(dir.path())
            .args(&args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded: {stderr}");
        assert!(out.stdout.is_empty(), "{args:?}");
        assert!(
            stderr.contains("the query is empty") || stderr.contains("-k must be at least 1"),
            "{args:?}: unclear error: {stderr}"
        );
    }
}
