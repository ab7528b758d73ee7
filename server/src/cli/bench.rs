//! `triage bench`: speed measurements on real texts.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use clap::{Args, Subcommand};
use models::EmbedKind;
use serde::Serialize;

use super::ModelArgs;

/// `triage bench …` subcommands.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Embedding throughput (batch 1 and batch B) and single-query latency.
    Embed(EmbedBenchArgs),
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
    query_p50_ms: f64,
    query_p99_ms: f64,
    peak_rss_mib: f64,
    threads: usize,
}

/// Runs a `bench` subcommand.
pub fn run(cmd: BenchCommand) -> anyhow::Result<()> {
    match cmd {
        BenchCommand::Embed(args) => embed(args),
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
    let embedder = args.model.load()?;
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

    let report = EmbedReport {
        model: embedder.name().to_string(),
        texts: refs.len(),
        batch: args.batch,
        batch_sentences_per_s: round1(batch_rate),
        batch32_sentences_per_s: round1(batch32_rate),
        bulk_sentences_per_s: round1(bulk_rate),
        batch1_sentences_per_s: round1(batch1_rate),
        queries: latencies.len(),
        query_p50_ms: round2(pct(0.50)),
        query_p99_ms: round2(pct(0.99)),
        peak_rss_mib: round1(peak_rss_mib()),
        threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
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
        println!(
            "batch 32   sentences/s    {}",
            report.batch32_sentences_per_s
        );
        println!("bulk (sorted) sentences/s  {}", report.bulk_sentences_per_s);
        println!(
            "batch 1    sentences/s    {}",
            report.batch1_sentences_per_s
        );
        println!(
            "query p50 / p99 ms         {} / {}",
            report.query_p50_ms, report.query_p99_ms
        );
        println!("peak RSS MiB               {}", report.peak_rss_mib);
        println!("threads                    {}", report.threads);
    }
    Ok(())
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
