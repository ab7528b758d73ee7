//! How the engine behaves as the ticket history grows: open time (which
//! includes training the classifiers), resident memory, and single-request
//! latency of `triage`, `suggest` and `deflect`, the cost of one write, and a
//! restart with unchanged tickets (which loads the stored heads).
//!
//! ```text
//! cargo run --release -p triage --example scale -- [TICKETS] [QUERIES]
//! ```
//! The history is the demo pack's tickets, repeated with varied wording,
//! customers and dates up to `TICKETS` (default 20,000). Vectors come from the
//! model-free hashing embedder, so the figures leave out the fixed cost of
//! embedding the request (about 5 ms with the default model, see
//! `docs/BENCHMARKS.md`) and measure what grows with the history.

use std::sync::Arc;
use std::time::Instant;

use indexer::{Index, Ticket};
use triage::api::{ChatMessage, TicketRequest};
use triage::hashembed::HashEmbedder;
use triage::{Engine, EngineConfig};

const PACK: &str = "fixtures/demo-pack";
const OPENERS: [&str; 8] = [
    "",
    "您好，",
    "麻烦看一下，",
    "Hi, ",
    "急：",
    "客户来电：",
    "Follow-up: ",
    "第二次反馈，",
];
const CLOSERS: [&str; 8] = [
    "",
    " 谢谢",
    " 请尽快处理",
    " thanks",
    " 已经等了三天",
    " 家里有老人",
    " please call back",
    " 上次维修后又出现",
];

/// Median and 99th percentile of `ms`.
fn p50_p99(mut ms: Vec<f64>) -> (f64, f64) {
    ms.sort_by(f64::total_cmp);
    let at = |q: f64| ms[((ms.len() - 1) as f64 * q).round() as usize];
    (at(0.5), at(0.99))
}

/// Resident memory of this process in MiB (Linux; 0 elsewhere).
fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

fn pack_tickets() -> Result<Vec<Ticket>, Box<dyn std::error::Error>> {
    let text = std::fs::read_to_string(format!("{PACK}/tickets.jsonl"))?;
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        out.push(serde_json::from_str(line)?);
    }
    Ok(out)
}

/// The `i`-th synthetic ticket, a variant of one of the pack's.
fn variant(base: &[Ticket], i: usize) -> Ticket {
    let b = &base[i % base.len()];
    let mut t = b.clone();
    t.id = format!("S-{i:07}");
    t.body = format!(
        "{}{}{}",
        OPENERS[(i / base.len()) % OPENERS.len()],
        b.body,
        CLOSERS[(i / (base.len() * OPENERS.len())) % CLOSERS.len()]
    );
    t.customer_id = format!("C{:06}", (i * 7919) % 50_000);
    t.created_at = format!(
        "2025-{:02}-{:02}T{:02}:00:00Z",
        1 + i % 12,
        1 + i % 28,
        i % 24
    );
    t
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().map_or(Ok(20_000), |a| a.parse())?;
    let queries: usize = args.next().map_or(Ok(200), |a| a.parse())?;
    let embedder = Arc::new(HashEmbedder::new(384));
    let data = tempfile::tempdir()?;
    let cfg = EngineConfig::new(PACK.into(), data.path().to_path_buf());
    // First start ingests the pack; then the synthetic history goes in through the index.
    drop(Engine::open(cfg.clone(), embedder.clone())?);
    let base = pack_tickets()?;
    let t0 = Instant::now();
    {
        let index = Index::open(&data.path().join("index"), embedder.clone())?;
        let all: Vec<Ticket> = (0..n).map(|i| variant(&base, i)).collect();
        for chunk in all.chunks(5_000) {
            index.upsert_tickets(chunk.to_vec())?;
        }
        index.flush()?;
    }
    let ingest_s = t0.elapsed().as_secs_f64();
    let rss_before = rss_mib();
    let t0 = Instant::now();
    let engine = Engine::open(cfg.clone(), embedder.clone())?;
    let open_s = t0.elapsed().as_secs_f64();
    let rss_after = rss_mib();

    let requests: Vec<TicketRequest> = (0..queries)
        .map(|q| {
            let t = variant(&base, n + q * 37);
            TicketRequest {
                title: t.title,
                body: format!("{} 再补充一句", t.body),
                customer_id: t.customer_id,
                ..TicketRequest::default()
            }
        })
        .collect();
    let time = |f: &dyn Fn(&TicketRequest) -> Result<(), triage::Error>| {
        let mut ms = Vec::new();
        for r in &requests {
            let t = Instant::now();
            f(r)?;
            ms.push(t.elapsed().as_secs_f64() * 1e3);
        }
        Ok::<_, triage::Error>(p50_p99(ms))
    };
    let triage = time(&|r| engine.triage(r).map(drop))?;
    let suggest = time(&|r| engine.suggest(r).map(drop))?;
    let deflect = time(&|r| {
        engine
            .deflect(&ChatMessage {
                text: r.body.clone(),
                ..ChatMessage::default()
            })
            .map(drop)
    })?;
    let mut write_ms = Vec::new();
    for i in 0..queries.min(50) {
        let t = Instant::now();
        engine.upsert_ticket(variant(&base, 10 * n + i))?;
        write_ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let write = p50_p99(write_ms);
    let t0 = Instant::now();
    engine.retrain("")?;
    let retrain_s = t0.elapsed().as_secs_f64();
    // A restart with the same tickets loads the heads stored by the retrain.
    let tickets = engine.stats(None).tickets;
    drop(engine);
    let t0 = Instant::now();
    let reopened = Engine::open(cfg, embedder)?;
    let reopen_s = t0.elapsed().as_secs_f64();
    assert_eq!(reopened.stats(None).tickets, tickets);
    println!(
        "{}",
        serde_json::json!({
            "tickets": tickets,
            "reopen_seconds": reopen_s,
            "index_ingest_seconds": ingest_s,
            "engine_open_seconds": open_s,
            "retrain_seconds": retrain_s,
            "rss_mib_index_only": rss_before,
            "rss_mib_engine_open": rss_after,
            "triage_ms_p50_p99": triage,
            "suggest_ms_p50_p99": suggest,
            "deflect_ms_p50_p99": deflect,
            "upsert_ticket_ms_p50_p99": write,
        })
    );
    Ok(())
}

fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
