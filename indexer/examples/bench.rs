//! Scale benchmark of the index on synthetic documents.
//!
//! `cargo run --release -p indexer --example bench -- [--docs N] [--queries Q] [--dim D] [--clusters C] [--spread S] [--ef 32,64,128,256] [--keep DIR]`
//! (`--keep DIR` builds the index in DIR and leaves it there; `--reopen DIR`
//! with the same `--dim --clusters --spread` only times the checksum pass and
//! opening it again.)
//!
//! `--clusters 0` (default) draws uniformly random directions, the hardest
//! case for a graph index; `--clusters C` draws each vector near one of C
//! random centres (centre + S x random unit noise, default S = 1.0), closer to
//! real sentence embeddings.
//!
//! Documents are tickets with generated mixed Chinese/English text and a
//! random unit vector each (a stand-in embedder derives it from the text, so
//! embedding costs ~nothing and is reported separately). Measures bulk ingest
//! rate, size on disk, resident memory, HNSW recall@10 against exact search
//! for several search widths, query latency p50/p99 for bm25, vector and
//! hybrid search (query vectors given, i.e. excluding embedding), reopen time
//! and the cost of the checksum verification at open.

use std::io::Write;
use std::sync::Arc;
use std::time::Instant;

use indexer::{DocKind, Index, SearchMode, SearchRequest, Ticket};
use models::{EmbedKind, TextEmbedder};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const ZH: &[&str] = &[
    "打印机",
    "无法",
    "连接",
    "网络",
    "退款",
    "订单",
    "发票",
    "洗衣机",
    "漏水",
    "空调",
    "不制冷",
    "屏幕",
    "闪烁",
    "电池",
    "充电",
    "很慢",
    "售后",
    "维修",
    "更换",
    "配件",
    "物流",
    "延迟",
    "账号",
    "登录",
    "密码",
    "重置",
    "升级",
    "固件",
    "噪音",
    "异味",
    "冰箱",
    "温度",
    "安装",
    "预约",
    "上门",
    "保修",
    "过期",
    "投诉",
    "客服",
    "电话",
    "停机",
    "故障",
    "报错",
    "代码",
    "蓝牙",
    "配对",
    "失败",
];
const EN: &[&str] = &[
    "printer",
    "cannot",
    "connect",
    "wifi",
    "refund",
    "order",
    "invoice",
    "washer",
    "leaking",
    "screen",
    "flickers",
    "battery",
    "charging",
    "slow",
    "repair",
    "replace",
    "shipping",
    "delayed",
    "account",
    "login",
    "password",
    "reset",
    "firmware",
    "update",
    "noise",
    "fridge",
    "install",
    "warranty",
    "expired",
    "complaint",
    "error",
    "code",
    "bluetooth",
    "pairing",
    "failed",
    "after",
    "the",
    "my",
    "is",
    "not",
    "working",
    "since",
    "yesterday",
    "please",
    "help",
    "again",
];

fn words(rng: &mut StdRng, n: usize) -> String {
    (0..n)
        .map(|_| {
            // Zipf-like skew: earlier words are more frequent.
            let list = if rng.random_bool(0.5) { ZH } else { EN };
            let r: f64 = rng.random();
            list[((r * r) * list.len() as f64) as usize]
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// A random unit vector seeded by the text: uniformly distributed
/// directions, or (with `clusters`) a random cluster centre plus noise, which
/// is closer to how sentence embeddings are distributed.
struct SeededEmbedder {
    dim: usize,
    centres: Vec<Vec<f32>>,
    spread: f32,
}

fn gaussian(rng: &mut StdRng, dim: usize) -> Vec<f32> {
    // Sum of uniforms ~ gaussian: uniformly distributed directions.
    let mut v: Vec<f32> = (0..dim)
        .map(|_| (0..4).map(|_| rng.random::<f32>() - 0.5).sum())
        .collect();
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter_mut().for_each(|x| *x /= n);
    v
}

impl SeededEmbedder {
    fn new(dim: usize, clusters: usize, spread: f32) -> Self {
        let mut rng = StdRng::seed_from_u64(7);
        let centres = (0..clusters).map(|_| gaussian(&mut rng, dim)).collect();
        SeededEmbedder {
            dim,
            centres,
            spread,
        }
    }

    fn vector(&self, text: &str) -> Vec<f32> {
        let mut rng = StdRng::seed_from_u64(fnv(text.as_bytes()));
        let noise = gaussian(&mut rng, self.dim);
        if self.centres.is_empty() {
            return noise;
        }
        let c = &self.centres[rng.random_range(0..self.centres.len())];
        let mut v: Vec<f32> = c
            .iter()
            .zip(&noise)
            .map(|(a, b)| a + self.spread * b)
            .collect();
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter_mut().for_each(|x| *x /= n);
        v
    }
}

impl TextEmbedder for SeededEmbedder {
    fn embed(&self, texts: &[&str], _kind: EmbedKind) -> Result<Vec<Vec<f32>>, models::Error> {
        Ok(texts.iter().map(|t| self.vector(t)).collect())
    }
    fn dim(&self) -> usize {
        self.dim
    }
    fn name(&self) -> &str {
        "seeded-random"
    }
}

fn rss_mib() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = arg(&args, "--docs").map_or(Ok(10_000), |s| s.parse())?;
    let nq: usize = arg(&args, "--queries").map_or(Ok(200), |s| s.parse())?;
    let dim: usize = arg(&args, "--dim").map_or(Ok(384), |s| s.parse())?;
    let efs: Vec<usize> = arg(&args, "--ef")
        .unwrap_or_else(|| "32,64,128,256,512".into())
        .split(',')
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    let clusters: usize = arg(&args, "--clusters").map_or(Ok(0), |s| s.parse())?;
    let spread: f32 = arg(&args, "--spread").map_or(Ok(1.0), |s| s.parse())?;
    let emb = Arc::new(SeededEmbedder::new(dim, clusters, spread));
    if let Some(dir) = arg(&args, "--reopen") {
        return reopen(std::path::Path::new(&dir), emb);
    }
    let mut rng = StdRng::seed_from_u64(42);
    let tmp = tempfile::tempdir()?;
    let data = arg(&args, "--keep").map_or_else(|| tmp.path().join("data"), Into::into);
    let jsonl = tmp.path().join("tickets.jsonl");

    let mut doc_vectors = Vec::with_capacity(n);
    {
        let mut out = std::io::BufWriter::new(std::fs::File::create(&jsonl)?);
        for i in 0..n {
            let t = Ticket {
                id: format!("d{i}"),
                title: words(&mut rng, 3 + i % 4),
                body: words(&mut rng, 15 + i % 20),
                ..Default::default()
            };
            doc_vectors.push(emb.vector(&format!("{}\n{}", t.title.trim(), t.body.trim())));
            serde_json::to_writer(&mut out, &t)?;
            out.write_all(b"\n")?;
        }
    }
    let (rss0, _) = rss_mib();
    let index = Index::open(&data, emb.clone())?;
    let report = index.ingest_jsonl(DocKind::Ticket, &jsonl, true)?;
    let (rss1, hwm1) = rss_mib();
    let stats = index.stats();
    println!(
        "docs {n} dim {dim} clusters {clusters}: ingest {:.1} s = {:.0} docs/s (embedding {:.2} s, indexing {:.1} s = {:.0} docs/s)",
        report.total_secs,
        n as f64 / report.total_secs,
        report.embed_secs,
        report.index_secs,
        n as f64 / report.index_secs
    );
    println!(
        "disk {:.1} MiB ({:.1} MiB per 100k); RSS {:.0} MiB (+{:.0} MiB for the index = {:.0} MiB per 100k), peak {:.0} MiB",
        stats.bytes_on_disk as f64 / 1048576.0,
        stats.bytes_on_disk as f64 / 1048576.0 * 100_000.0 / n as f64,
        rss1,
        rss1 - rss0,
        (rss1 - rss0) * 100_000.0 / n as f64,
        hwm1
    );

    let queries: Vec<(String, Vec<f32>)> = (0..nq)
        .map(|q| {
            let text = words(&mut rng, 3);
            let v = emb.vector(&format!("query {q}"));
            (text, v)
        })
        .collect();
    // Exact top-10 by brute force.
    let truth: Vec<Vec<String>> = queries
        .iter()
        .map(|(_, q)| {
            let mut s: Vec<(f32, usize)> = doc_vectors
                .iter()
                .enumerate()
                .map(|(i, v)| (v.iter().zip(q).map(|(a, b)| a * b).sum(), i))
                .collect();
            s.sort_by(|a, b| b.0.total_cmp(&a.0));
            s.iter().take(10).map(|(_, i)| format!("d{i}")).collect()
        })
        .collect();

    let run = |mode: SearchMode| -> Result<(Vec<f64>, f64), indexer::Error> {
        let mut lat = Vec::with_capacity(nq);
        let mut found = 0;
        for ((text, v), want) in queries.iter().zip(&truth) {
            let req = SearchRequest {
                text: text.clone(),
                mode,
                k: 10,
                ..Default::default()
            };
            let t = Instant::now();
            let hits = index.search_with_vector(&req, v)?;
            lat.push(t.elapsed().as_secs_f64() * 1000.0);
            found += hits.iter().filter(|h| want.contains(&h.id)).count();
        }
        lat.sort_by(f64::total_cmp);
        Ok((lat, found as f64 / (nq * 10) as f64))
    };
    // The sweep measures the graph itself, so no exact scan of small sets.
    index.set_exact_threshold(0);
    for &ef in &efs {
        index.set_ef_search(ef);
        let (lat, recall) = run(SearchMode::Vector)?;
        println!(
            "vector ef={ef:<4} recall@10 {recall:.4}  p50 {:.2} ms  p99 {:.2} ms",
            percentile(&lat, 0.5),
            percentile(&lat, 0.99)
        );
    }
    index.set_ef_search(indexer::DEFAULT_EF_SEARCH);
    index.set_exact_threshold(indexer::DEFAULT_EXACT_MAX);
    let path = if n <= indexer::DEFAULT_EXACT_MAX {
        "exact scan"
    } else {
        "graph"
    };
    for mode in [SearchMode::Bm25, SearchMode::Vector, SearchMode::Hybrid] {
        let (lat, recall) = run(mode)?;
        let recall = if mode == SearchMode::Vector {
            format!("recall@10 {recall:.4}  ")
        } else {
            String::new()
        };
        println!(
            "{:<7} (defaults: vector {path}, ef {}) {recall}p50 {:.2} ms  p99 {:.2} ms",
            format!("{mode:?}").to_lowercase(),
            indexer::DEFAULT_EF_SEARCH,
            percentile(&lat, 0.5),
            percentile(&lat, 0.99)
        );
    }
    let t = Instant::now();
    drop(index);
    let close = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let index = Index::open(&data, emb)?;
    println!(
        "close (graph save) {close:.2} s; reopen {:.2} s with {} docs",
        t.elapsed().as_secs_f64(),
        index.len(DocKind::Ticket)
    );
    drop(index);
    verify_alone(&data)
}

/// `--reopen DIR`: only times the checksum pass alone, then opening, of an
/// index kept with `--keep DIR` (e.g. after dropping it from the page cache).
fn reopen(
    data: &std::path::Path,
    emb: Arc<SeededEmbedder>,
) -> Result<(), Box<dyn std::error::Error>> {
    verify_alone(data)?;
    let t = Instant::now();
    let index = Index::open(data, emb)?;
    println!(
        "reopen {:.2} s with {} docs",
        t.elapsed().as_secs_f64(),
        index.len(DocKind::Ticket)
    );
    Ok(())
}

/// The checksum pass `Index::open` makes over every committed file (part of
/// the reopen time), timed alone with tantivy's own check.
fn verify_alone(data: &std::path::Path) -> Result<(), Box<dyn std::error::Error>> {
    let t = Instant::now();
    let tantivy = tantivy::Index::open_in_dir(data.join("tantivy"))?;
    let damaged = tantivy.validate_checksum()?;
    let bytes: u64 = std::fs::read_dir(data.join("tantivy"))?
        .flatten()
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum();
    println!(
        "checksum verification {:.2} s over {:.0} MiB of tantivy files ({} damaged)",
        t.elapsed().as_secs_f64(),
        bytes as f64 / 1048576.0,
        damaged.len()
    );
    Ok(())
}
