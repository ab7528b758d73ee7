//! `triage bench`: speed measurements on real texts.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use clap::{Args, Subcommand};
use models::{EmbedKind, Embedder, EmbedderOptions, TextEmbedder};
use serde::Serialize;

use super::ModelArgs;

/// `triage bench …` subcommands.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Embedding throughput (batch 1 and batch B) and single-query latency.
    Embed(EmbedBenchArgs),
    /// The engine at N synthetic tickets over T tenants: latency per route,
    /// writes, open and restart, memory, recall (model-free vectors).
    Scale(super::scale::ScaleBenchArgs),
}

/// Arguments of `triage bench embed`.
#[derive(Debug, Args)]
pub struct EmbedBenchArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Number of texts for the throughput runs.
    #[arg(long, default_value_t = 2000)]
    n: usize,
    /// Batch size of the batched run.
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// Texts to embed, one per line [default: BANKING77 utterances from ../shared/data].
    #[arg(long)]
    texts: Option<PathBuf>,
    /// Short queries for the latency run, one per line [default: the shortest of the texts].
    #[arg(long)]
    queries: Option<PathBuf>,
    /// Thread counts for the single-query latency runs [default: 1 and the
    /// default of this machine].
    #[arg(long, value_delimiter = ',')]
    threads: Vec<usize>,
    /// Also print where one query's forward pass spends its time, step by
    /// step and layer by layer, for each thread count.
    #[arg(long)]
    profile: bool,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

/// What `bench embed` measured.
#[derive(Debug, Serialize)]
struct EmbedReport {
    model: String,
    texts: usize,
    batch: usize,
    batch_sentences_per_s: f64,
    batch32_sentences_per_s: f64,
    bulk_sentences_per_s: f64,
    batch1_sentences_per_s: f64,
    queries: usize,
    /// Single-query latency with the default thread count.
    query_p50_ms: f64,
    query_p99_ms: f64,
    /// Single-query latency for each thread count measured.
    query_by_threads: Vec<QueryLatency>,
    peak_rss_mib: f64,
    /// Threads a forward pass may use by default (batches use all of them).
    threads: usize,
    /// SIMD features of this CPU that the kernels use.
    cpu_flags: String,
    /// The kernel path in use (`TRIAGE_KERNELS` forces one).
    kernels: String,
    /// Dense-layer arithmetic (`TRIAGE_EMBED_PRECISION`).
    precision: String,
}

/// Single-query latency with a given thread count.
#[derive(Debug, Serialize)]
struct QueryLatency {
    threads: usize,
    p50_ms: f64,
    p99_ms: f64,
}

/// Runs a `bench` subcommand.
pub fn run(cmd: BenchCommand) -> anyhow::Result<()> {
    match cmd {
        BenchCommand::Embed(args) => embed(args),
        BenchCommand::Scale(args) => super::scale::run(args),
    }
}

fn embed(args: EmbedBenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.batch > 0, "--batch must be at least 1");
    let mut texts = match &args.texts {
        Some(p) => read_lines(p)?,
        None => banking77()?,
    };
    texts.truncate(args.n);
    anyhow::ensure!(!texts.is_empty(), "no texts to embed");
    let queries = match &args.queries {
        Some(p) => read_lines(p)?,
        None => {
            let mut q: Vec<String> = texts.iter().filter(|t| t.len() < 60).cloned().collect();
            q.truncate(300);
            q
        }
    };
    anyhow::ensure!(!queries.is_empty(), "no queries for the latency run");
    let source = args.model.source()?;
    let cache = args.model.cache();
    let mut embedder = Embedder::load_source(&source, &cache, EmbedderOptions::default())?;
    let cpu = models::cpu_info();
    let default_threads = embedder.threads();
    if !args.json {
        println!("cpu                        {}", cpu.summary());
        println!(
            "precision / threads        {} / {default_threads}",
            embedder.precision().name()
        );
    }
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();

    // Warm-up: first calls pay for allocations and page faults.
    embedder.embed(&refs[..refs.len().min(args.batch)], EmbedKind::Passage)?;

    let per_second = |batch: usize, limit: usize| -> anyhow::Result<f64> {
        let slice = &refs[..refs.len().min(limit)];
        let start = Instant::now();
        for chunk in slice.chunks(batch) {
            embedder.embed(chunk, EmbedKind::Passage)?;
        }
        Ok(slice.len() as f64 / start.elapsed().as_secs_f64())
    };
    let batch_rate = per_second(args.batch, usize::MAX)?;
    let batch32_rate = if args.batch == 32 {
        batch_rate
    } else {
        per_second(32, usize::MAX)?
    };
    let bulk_rate = per_second(refs.len(), usize::MAX)?;
    let batch1_rate = per_second(1, 200)?;

    let mut thread_counts = if args.threads.is_empty() {
        vec![1, default_threads]
    } else {
        args.threads.clone()
    };
    thread_counts.retain(|&t| t > 0);
    thread_counts.dedup();
    let mut by_threads = Vec::new();
    for &t in &thread_counts {
        embedder.set_threads(t);
        // One warm-up query per setting (the workers may have gone to sleep).
        embedder.embed(&[queries[0].as_str()], EmbedKind::Query)?;
        let mut latencies = Vec::with_capacity(queries.len());
        for q in &queries {
            let start = Instant::now();
            embedder.embed(&[q.as_str()], EmbedKind::Query)?;
            latencies.push(start.elapsed().as_secs_f64() * 1000.0);
        }
        latencies.sort_by(f64::total_cmp);
        let pct = |p: f64| {
            latencies[((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len()) - 1]
        };
        by_threads.push(QueryLatency {
            threads: t,
            p50_ms: round2(pct(0.50)),
            p99_ms: round2(pct(0.99)),
        });
    }
    if args.profile {
        for &t in &thread_counts {
            embedder.set_threads(t);
            models::profile::start();
            for q in &queries {
                embedder.embed(&[q.as_str()], EmbedKind::Query)?;
            }
            if let Some(p) = models::profile::stop() {
                print_profile(&p, t);
            }
        }
    }
    embedder.set_threads(default_threads);
    let default_latency = by_threads
        .iter()
        .find(|q| q.threads == default_threads)
        .or(by_threads.last())
        .map_or((0.0, 0.0), |q| (q.p50_ms, q.p99_ms));

    let report = EmbedReport {
        model: embedder.name().to_string(),
        texts: refs.len(),
        batch: args.batch,
        batch_sentences_per_s: round1(batch_rate),
        batch32_sentences_per_s: round1(batch32_rate),
        bulk_sentences_per_s: round1(bulk_rate),
        batch1_sentences_per_s: round1(batch1_rate),
        queries: queries.len(),
        query_p50_ms: default_latency.0,
        query_p99_ms: default_latency.1,
        query_by_threads: by_threads,
        peak_rss_mib: round1(peak_rss_mib()),
        threads: default_threads,
        cpu_flags: cpu.flags.join(" "),
        kernels: format!("{}{}", cpu.path.name(), if cpu.vnni { "+vnni" } else { "" }),
        precision: embedder.precision().name().to_string(),
    };
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!("model                      {}", report.model);
        println!("texts                      {}", report.texts);
        println!(
            "batch {:<4} sentences/s    {}",
            report.batch, report.batch_sentences_per_s
        );
        if report.batch != 32 {
            println!(
                "batch 32   sentences/s    {}",
                report.batch32_sentences_per_s
            );
        }
        println!("bulk (sorted) sentences/s  {}", report.bulk_sentences_per_s);
        println!(
            "batch 1    sentences/s    {}",
            report.batch1_sentences_per_s
        );
        for q in &report.query_by_threads {
            println!(
                "query p50 / p99 ms, {:>2} th {} / {}",
                q.threads, q.p50_ms, q.p99_ms
            );
        }
        println!("peak RSS MiB               {}", report.peak_rss_mib);
        println!("threads                    {}", report.threads);
    }
    Ok(())
}

/// Prints a profile as two tables (milliseconds per forward pass).
fn print_profile(p: &models::profile::Profile, threads: usize) {
    let total: f64 = p.by_step().iter().map(|s| s.1).sum();
    println!(
        "profile, {threads} thread(s): {} passes, {:.1} tokens each, {:.3} ms per pass",
        p.passes,
        p.tokens as f64 / p.passes.max(1) as f64,
        total * 1e3
    );
    for (name, secs) in p.by_step() {
        println!(
            "  step  {name:<28} {:>8.3} ms {:>5.1} %",
            secs * 1e3,
            100.0 * secs / total.max(1e-12)
        );
    }
    for (layer, secs) in p.by_layer() {
        let name = layer.map_or("outside layers".to_string(), |l| format!("layer {l}"));
        println!("  layer {name:<28} {:>8.3} ms", secs * 1e3);
    }
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn read_lines(path: &Path) -> anyhow::Result<Vec<String>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(text
        .lines()
        .map(str::to_string)
        .filter(|l| !l.trim().is_empty())
        .collect())
}

/// BANKING77 utterances from the shared data directory (the first CSV column).
fn banking77() -> anyhow::Result<Vec<String>> {
    let path = Path::new("../shared/data/banking77/train.csv");
    let text = std::fs::read_to_string(path).with_context(|| {
        format!(
            "reading {} (pass --texts FILE to bench on other texts)",
            path.display()
        )
    })?;
    Ok(text
        .lines()
        .skip(1)
        .filter_map(|line| line.rsplit_once(','))
        .map(|(text, _label)| text.trim_matches('"').replace("\"\"", "\""))
        .filter(|t| !t.is_empty())
        .collect())
}

/// Peak resident set size of this process (Linux `VmHWM`), 0 where unavailable.
fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}
