//! The connectors with the real binary and model: Zammad down for a while,
//! then our server killed -9 right after a write-back was applied but before
//! its answer came, restarted: every write-back lands exactly once. The
//! OpenAI-style embeddings equal `triage embed`'s vectors. `triage import
//! zammad` brings closed tickets with their resolutions, and resumes.

mod http_support;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use contract::{fixture, Contract, ZammadTicket, ZAMMAD_TOKEN};
use hmac::{Hmac, Mac};
use http_support::{binary, demo_pack, Opts, Server};
use serde_json::{json, Value};

const SECRET: &str = "e2e-zammad-secret";

fn sign(body: &[u8]) -> String {
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(body);
    format!("sha1={}", hex::encode(mac.finalize().into_bytes()))
}

fn webhook(server: &Server, delivery: &str, body: &str) -> (u16, Value) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut res = agent
        .post(&format!("{}/v1/connectors/zammad/webhook", server.base))
        .header("content-type", "application/json")
        .header("x-hub-signature", &sign(body.as_bytes()))
        .header("x-zammad-delivery", delivery)
        .send(body)
        .unwrap();
    let status = res.status().as_u16();
    let text = res.body_mut().read_to_string().unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

fn connectors_file(dir: &std::path::Path, zammad: &Contract) -> std::path::PathBuf {
    let path = dir.join("connectors.toml");
    let pack = std::fs::read_to_string(demo_pack().join("pack.toml")).unwrap();
    let mut groups = String::new();
    let mut table = "";
    for line in pack.lines() {
        if line.starts_with('[') {
            table = line.trim();
        } else if table == "[[queues]]" && line.starts_with("id = ") {
            let id = line.trim_start_matches("id = ").trim_matches('"');
            groups.push_str(&format!("{id} = \"G-{id}\"\n"));
        }
    }
    std::fs::write(
        &path,
        format!(
            "[[zammad]]\nurl = \"{}\"\ntoken = \"{ZAMMAD_TOKEN}\"\nwebhook_secret = \"{SECRET}\"\n\
             [zammad.groups]\n{groups}[zammad.priorities]\nP0 = 4\nP1 = 3\nP2 = 2\nP3 = 1\n",
            zammad.base_url()
        ),
    )
    .unwrap();
    path
}

fn payload(id: u64, title: &str, text: &str) -> String {
    let mut p = fixture("zammad/webhook-ticket-created.json");
    p["ticket"]["id"] = json!(id);
    p["ticket"]["title"] = json!(title);
    p["article"]["body"] = json!(format!("<p>{text}</p>"));
    p.to_string()
}

#[test]
fn zammad_down_then_a_kill_9_still_delivers_every_write_back_exactly_once() {
    let zammad = Contract::start();
    let tickets = [
        (11, "空调不制冷", "空调开了一下午都不制冷，出风是热的"),
        (12, "洗衣机漏水", "洗衣机一洗衣服底下就漏水，地上全是水"),
        (
            13,
            "Invoice",
            "Please issue a VAT invoice for order AB12345678",
        ),
    ];
    for (id, title, _) in tickets {
        zammad.add_ticket(
            id,
            ZammadTicket {
                title: title.into(),
                group: "Users".into(),
                priority_id: 2,
                state: "new".into(),
                ..ZammadTicket::default()
            },
        );
    }
    zammad.set_down(true);
    let dir = tempfile::tempdir().unwrap();
    let file = connectors_file(dir.path(), &zammad);
    let opts = Opts {
        args: [
            "--connectors",
            file.to_str().unwrap(),
            "--outbox-backoff-ms",
            "20",
            "--outbox-max-backoff-ms",
            "200",
            "--outbox-timeout-ms",
            "3000",
        ]
        .map(String::from)
        .to_vec(),
        ..Opts::default()
    };
    let mut server = Server::start(&dir.path().join("data"), &opts);
    for (id, title, text) in tickets {
        let (s, b) = webhook(&server, &format!("e2e-{id}"), &payload(id, title, text));
        assert_eq!((s, b["status"].as_str()), (200, Some("queued")), "{b}");
    }
    // Zammad is down: the outbox keeps retrying.
    assert!(zammad.wait_for(Duration::from_secs(60), |r| r
        .iter()
        .filter(|r| r.status == 503)
        .count()
        >= 6));
    // Zammad comes back; the first write is applied but its answer never
    // comes: our server is killed -9 in that window.
    zammad.hold_next_write();
    zammad.set_down(false);
    assert!(
        zammad.wait_held(Duration::from_secs(60)),
        "no write reached Zammad"
    );
    server.kill9();
    zammad.release();
    server.restart();
    // Zammad's retry of a delivery our server acknowledged is a duplicate.
    let (_, again) = webhook(&server, "e2e-11", &payload(11, tickets[0].1, tickets[0].2));
    assert_eq!(again["status"], "duplicate", "{again}");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (_, ready) = server.get("/readyz");
        if ready["outbox"]["pending"] == 0 {
            assert_eq!(ready["outbox"]["failed"], 0, "{ready}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the outbox never emptied: {ready}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let applied = zammad.applied();
    for (id, _, _) in tickets {
        let ticket = zammad.ticket(id).unwrap();
        assert_eq!(
            ticket.articles.len(),
            1,
            "ticket {id}: {:#?}",
            ticket.articles
        );
        let puts = applied
            .iter()
            .filter(|r| r.method == "PUT" && r.path == format!("/api/v1/tickets/{id}"))
            .count();
        assert!(puts <= 1, "ticket {id} updated {puts} times");
        let tags = applied
            .iter()
            .filter(|r| r.path == "/api/v1/tags/add" && r.body["o_id"] == id)
            .count();
        assert_eq!(tags, ticket.tags.len(), "ticket {id}");
        assert!(!ticket.tags.is_empty(), "ticket {id}");
    }
    server.terminate();
}

fn embed_cli(texts: &[&str]) -> Vec<Vec<f32>> {
    let mut child = Command::new(binary())
        .args(["embed", "--kind", "query"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(texts.join("\n").as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .map(|v| serde_json::from_value(v["embedding"].clone()).unwrap())
        .collect()
}

#[test]
fn openai_style_embeddings_are_the_vectors_of_triage_embed() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &Opts::default());
    let texts = [
        "空调不制冷怎么办",
        "How do I reset the router?",
        "冰箱冒烟了",
    ];
    let (s, b) = server.post(
        "/v1/embeddings",
        &json!({"model": "multilingual-e5-small", "input": texts}),
    );
    assert_eq!(s, 200, "{b}");
    let cli = embed_cli(&texts);
    for (i, want) in cli.iter().enumerate() {
        let got: Vec<f32> = serde_json::from_value(b["data"][i]["embedding"].clone()).unwrap();
        assert_eq!(got.len(), want.len());
        let diff = got
            .iter()
            .zip(want)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        // The same model and kind; batched with other texts vs. alone, the
        // sums may round differently in the last bits.
        assert!(diff < 1e-5, "input {i}: largest difference {diff}");
    }
    assert!(b["usage"]["prompt_tokens"].as_u64().unwrap() >= 3 * 3);
}

#[test]
fn zammad_history_is_imported_with_resolutions_and_resumes() {
    let zammad = Contract::start();
    let article = |sender: &str, body: &str, internal: bool| {
        let mut a = fixture("zammad/article-created.json");
        a["sender"] = json!(sender);
        a["body"] = json!(body);
        a["internal"] = json!(internal);
        a
    };
    for (id, title, request, fix, state) in [
        (
            21,
            "冰箱不制冷",
            "<p>冰箱冷藏室不制冷了</p>",
            "<p>上门更换了温控器，已恢复制冷</p>",
            "closed",
        ),
        (
            22,
            "Router offline",
            "<p>The router keeps dropping the connection</p>",
            "<p>Firmware updated, stable since</p>",
            "closed",
        ),
        (
            23,
            "still open",
            "<p>空调漏水</p>",
            "<p>we are on it</p>",
            "open",
        ),
    ] {
        zammad.add_ticket(
            id,
            ZammadTicket {
                title: title.into(),
                state: state.into(),
                created_at: "2024-05-01T08:00:00Z".into(),
                close_at: "2024-05-03T08:00:00Z".into(),
                articles: vec![
                    article("Customer", request, false),
                    article("Agent", "<p>internal remark</p>", true),
                    article("Agent", fix, false),
                ],
                ..ZammadTicket::default()
            },
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, format!("{ZAMMAD_TOKEN}\n")).unwrap();
    let data = dir.path().join("data");
    let import = || {
        let out = Command::new(binary())
            .args([
                "import",
                "zammad",
                "--url",
                zammad.base_url(),
                "--per-page",
                "1",
            ])
            .arg("--token-file")
            .arg(&token)
            .arg("--data-dir")
            .arg(&data)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<Value>(&out.stdout).unwrap()
    };
    let first = import();
    assert_eq!(
        (first["imported"].as_u64(), first["last_id"].as_u64()),
        (Some(2), Some(22)),
        "{first}"
    );
    // A rerun asks only for tickets after the last one imported.
    let searches_before = zammad
        .requests()
        .iter()
        .filter(|r| r.path.ends_with("/search"))
        .count();
    let again = import();
    assert_eq!(again["imported"], 2, "{again}");
    let reruns: Vec<String> = zammad.requests()[..]
        .iter()
        .filter(|r| r.path.ends_with("/search"))
        .skip(searches_before)
        .map(|r| r.query.clone())
        .collect();
    assert_eq!(reruns.len(), 1);
    assert!(reruns[0].contains("id%3A%3E22"), "{reruns:?}");
    let out = Command::new(binary())
        .args(["search", "--kind", "ticket", "-k", "5", "冰箱不制冷"])
        .arg("--data-dir")
        .arg(&data)
        .output()
        .unwrap();
    let hits: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let fridge = hits
        .iter()
        .find(|h| h["id"] == "zammad-21")
        .expect("imported ticket");
    let doc = &fridge["doc"];
    let doc = if doc["Ticket"].is_object() {
        &doc["Ticket"]
    } else {
        doc
    };
    assert_eq!(
        doc["resolution"], "上门更换了温控器，已恢复制冷",
        "{fridge}"
    );
    assert_eq!(doc["body"], "冰箱冷藏室不制冷了");
    assert_eq!(doc["status"], "closed");
    assert!(
        hits.iter().all(|h| h["id"] != "zammad-23"),
        "an open ticket was imported"
    );
}
