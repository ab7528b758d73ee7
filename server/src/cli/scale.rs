//! `triage bench scale`: how the engine behaves as the ticket history grows.
//!
//! The history is the pack's tickets repeated with other openings, closings,
//! order numbers, customers and dates, up to `--tickets`, spread over
//! `--tenants` tenants (`t0`, `t1`, …; one tenant = the default tenant).
//! Vectors come from the model-free hashing embedder, so the figures leave
//! out the fixed cost of embedding the request and show what grows with the
//! history. Prints one JSON object: bulk ingest rate, first open (trains the
//! heads), restart with unchanged data (loads them), resident memory,
//! single-request p50/p99 of triage, suggest and deflect, one ticket write,
//! a retrain of the queried tenant, and recall@10 of the neighbour search
//! against an exact scan of that tenant.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use clap::Args;
use indexer::{DocKind, Index, NeighbourQuery, Ticket};
use models::{EmbedKind, TextEmbedder};
use serde::Serialize;
use triage::api::{ChatMessage, TicketRequest};
use triage::hashembed::HashEmbedder;
use triage::{Engine, EngineConfig};

/// Arguments of `triage bench scale`.
#[derive(Debug, Args)]
pub struct ScaleBenchArgs {
    /// Synthetic tickets added to the pack's.
    #[arg(long, default_value_t = 20_000)]
    tickets: usize,
    /// Tenants the synthetic tickets are spread over (1 = the default tenant).
    #[arg(long, default_value_t = 1)]
    tenants: usize,
    /// Requests timed per route.
    #[arg(long, default_value_t = 200)]
    queries: usize,
    /// The pack whose tickets are varied.
    #[arg(long, default_value = "fixtures/demo-pack")]
    pack: PathBuf,
    /// Where the documents live: `embedded` (a data directory, the default).
    #[arg(long, default_value = "embedded")]
    store: String,
    /// Keep the data directory here instead of a temporary one.
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

/// p50 and p99 of one measurement, in milliseconds.
#[derive(Debug, Serialize)]
struct Latency {
    p50: f64,
    p99: f64,
}

/// What `bench scale` measured.
#[derive(Debug, Serialize)]
struct ScaleReport {
    store: String,
    tickets: usize,
    tenants: usize,
    queries: usize,
    ingest_seconds: f64,
    ingest_per_second: f64,
    first_open_seconds: f64,
    restart_seconds: f64,
    rss_mib_after_open: f64,
    rss_mib_peak: f64,
    triage_ms: Latency,
    suggest_ms: Latency,
    deflect_ms: Latency,
    write_ms: Latency,
    retrain_seconds: f64,
    recall_at_10: f64,
}

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
fn p50_p99(mut ms: Vec<f64>) -> Latency {
    ms.sort_by(f64::total_cmp);
    let at = |q: f64| {
        ms.get(((ms.len().max(1) - 1) as f64 * q).round() as usize)
            .copied()
            .unwrap_or(0.0)
    };
    Latency {
        p50: round2(at(0.5)),
        p99: round2(at(0.99)),
    }
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// A line of `/proc/self/status` in MiB (Linux; 0 elsewhere).
fn status_mib(field: &str) -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| round2(kb / 1024.0))
}

/// The tenant of the `i`-th synthetic ticket.
fn tenant_of(i: usize, tenants: usize) -> String {
    if tenants <= 1 {
        String::new()
    } else {
        format!("t{}", i % tenants)
    }
}

/// The `i`-th synthetic ticket, a variant of one of the pack's.
fn variant(base: &[Ticket], i: usize, tenants: usize) -> Ticket {
    let b = &base[i % base.len()];
    let mut t = b.clone();
    t.id = format!("S-{i:07}");
    t.tenant = tenant_of(i, tenants);
    t.body = format!(
        "{}{}{} 单号 {}",
        OPENERS[(i / base.len()) % OPENERS.len()],
        b.body,
        CLOSERS[(i / (base.len() * OPENERS.len())) % CLOSERS.len()],
        (i * 7919) % 1_000_003
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

/// Runs `triage bench scale`.
pub fn run(args: ScaleBenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.store == "embedded",
        "--store {}: only the embedded store is implemented so far",
        args.store
    );
    anyhow::ensure!(args.queries > 0, "--queries must be at least 1");
    let tenants = args.tenants.max(1);
    let embedder: Arc<dyn TextEmbedder> = Arc::new(HashEmbedder::new(384));
    let temp = tempfile::tempdir()?;
    let data = args
        .data_dir
        .clone()
        .unwrap_or_else(|| temp.path().to_path_buf());
    let cfg = EngineConfig::new(args.pack.clone(), data.clone());
    // The first start ingests the pack; the history then goes in through the index.
    drop(Engine::open(cfg.clone(), embedder.clone())?);
    let base: Vec<Ticket> = triage::Pack::load(&args.pack)?
        .tickets
        .into_iter()
        .filter(|t| t.tenant.is_empty())
        .collect();
    anyhow::ensure!(!base.is_empty(), "the pack has no tickets to vary");
    let started = Instant::now();
    {
        let index = Index::open(&data.join("index"), embedder.clone())?;
        let mut chunk = Vec::with_capacity(1024);
        for i in 0..args.tickets {
            chunk.push(variant(&base, i, tenants));
            if chunk.len() == 1024 {
                index.upsert_tickets(std::mem::take(&mut chunk))?;
            }
        }
        index.upsert_tickets(chunk)?;
        index.flush()?;
    }
    let ingest_seconds = started.elapsed().as_secs_f64();

    let started = Instant::now();
    let engine = Engine::open(cfg.clone(), embedder.clone())?;
    let first_open_seconds = started.elapsed().as_secs_f64();
    let rss_mib_after_open = status_mib("VmRSS:");
    let tenant = tenant_of(0, tenants);
    let requests: Vec<TicketRequest> = (0..args.queries)
        .map(|q| {
            let t = variant(&base, args.tickets + q * 37, tenants);
            TicketRequest {
                title: t.title,
                body: format!("{} 再补充一句", t.body),
                customer_id: t.customer_id,
                tenant: tenant.clone(),
                ..TicketRequest::default()
            }
        })
        .collect();
    let time = |f: &dyn Fn(&TicketRequest) -> Result<(), triage::Error>| {
        let mut ms = Vec::with_capacity(requests.len());
        for r in &requests {
            let t = Instant::now();
            f(r)?;
            ms.push(t.elapsed().as_secs_f64() * 1e3);
        }
        Ok::<_, triage::Error>(p50_p99(ms))
    };
    let triage_ms = time(&|r| engine.triage(r).map(drop))?;
    let suggest_ms = time(&|r| engine.suggest(r).map(drop))?;
    let deflect_ms = time(&|r| {
        engine
            .deflect(&ChatMessage {
                text: r.body.clone(),
                tenant: r.tenant.clone(),
                ..ChatMessage::default()
            })
            .map(drop)
    })?;
    let mut write = Vec::new();
    for i in 0..args.queries.min(100) {
        let mut t = variant(&base, 10 * args.tickets + i, tenants);
        t.tenant = tenant.clone();
        let started = Instant::now();
        engine.upsert_ticket(t)?;
        write.push(started.elapsed().as_secs_f64() * 1e3);
    }
    let started = Instant::now();
    engine.retrain(&tenant)?;
    let retrain_seconds = started.elapsed().as_secs_f64();
    let tickets = engine.stats(None).tickets;
    drop(engine);
    let started = Instant::now();
    let reopened = Engine::open(cfg, embedder.clone())?;
    let restart_seconds = started.elapsed().as_secs_f64();
    anyhow::ensure!(
        reopened.stats(None).tickets == tickets,
        "the restart lost tickets"
    );
    drop(reopened);
    let recall_at_10 = recall(&data, embedder, &requests, &tenant)?;
    let report = ScaleReport {
        store: args.store,
        tickets,
        tenants,
        queries: args.queries,
        ingest_seconds: round2(ingest_seconds),
        ingest_per_second: round2(args.tickets as f64 / ingest_seconds.max(1e-9)),
        first_open_seconds: round2(first_open_seconds),
        restart_seconds: round2(restart_seconds),
        rss_mib_after_open,
        rss_mib_peak: status_mib("VmHWM:"),
        triage_ms,
        suggest_ms,
        deflect_ms,
        write_ms: p50_p99(write),
        retrain_seconds: round2(retrain_seconds),
        recall_at_10,
    };
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

/// Recall@10 of the store's neighbour search for the requests' vectors,
/// against an exact scan of the tenant's stored tickets (at most 50 requests).
fn recall(
    data: &std::path::Path,
    embedder: Arc<dyn TextEmbedder>,
    requests: &[TicketRequest],
    tenant: &str,
) -> anyhow::Result<f64> {
    let index =
        Index::open(&data.join("index"), embedder.clone()).context("reopening the index")?;
    let queries: Vec<Vec<f32>> = requests
        .iter()
        .take(50)
        .map(|r| {
            let text = indexer::ticket_text(&r.title, &r.body);
            embedder
                .embed(&[text.as_str()], EmbedKind::Passage)
                .map(|mut v| v.pop().unwrap_or_default())
        })
        .collect::<Result<_, _>>()?;
    let mut exact: Vec<Vec<(f32, String)>> = vec![Vec::new(); queries.len()];
    // The exact top 10 of each query over every stored ticket of the tenant.
    for row in index.rows(DocKind::Ticket, tenant) {
        let Some(v) = index.vector(DocKind::Ticket, tenant, &row.id) else {
            continue;
        };
        for (q, best) in queries.iter().zip(exact.iter_mut()) {
            let s: f32 = q.iter().zip(&v).map(|(a, b)| a * b).sum();
            best.push((s, row.id.clone()));
            if best.len() > 200 {
                best.sort_by(|a, b| b.0.total_cmp(&a.0));
                best.truncate(10);
            }
        }
    }
    let mut found = 0usize;
    let mut wanted = 0usize;
    for (q, mut best) in queries.iter().zip(exact) {
        best.sort_by(|a, b| b.0.total_cmp(&a.0));
        best.truncate(10);
        // A hit at least as similar as the exact tenth is right (the
        // synthetic history has many equally similar tickets).
        let tenth = best.last().map_or(f32::MIN, |b| b.0);
        let hits = index.neighbours(q, &NeighbourQuery::tickets(tenant, 10))?;
        wanted += best.len();
        found += hits
            .iter()
            .filter(|h| h.similarity >= tenth - 1e-5)
            .count()
            .min(best.len());
    }
    Ok(round2(found as f64 / wanted.max(1) as f64 * 100.0) / 100.0)
}
