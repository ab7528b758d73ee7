//! Embedding speed on real texts: batch throughput and single-query latency.
//!
//! `cargo run --release -p models --example embed_bench -- [CSV] [N] [BATCH]`
//! (default: the first 2,000 BANKING77 utterances from `../shared/data`, batch 32).
//! Uses the model chosen by `TRIAGE_MODEL` / `TRIAGE_MODEL_DIR` (default e5),
//! `TRIAGE_EMBED_PRECISION`, `TRIAGE_EMBED_THREADS` and `TRIAGE_KERNELS`.
//! Single queries are timed with 1 thread and with the default thread
//! count; `EMBED_PROFILE=1` also prints where one query's time goes.

use std::time::Instant;

use models::{default_cache_dir, EmbedKind, Embedder, EmbedderOptions, ModelSource, TextEmbedder};

/// The text column of a `text,label` CSV line (quotes undone).
fn csv_text(line: &str) -> String {
    let text = line.rsplit_once(',').map_or(line, |(t, _)| t);
    match text.strip_prefix('"').and_then(|t| t.strip_suffix('"')) {
        Some(quoted) => quoted.replace("\"\"", "\""),
        None => text.to_string(),
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let csv = args.first().cloned().unwrap_or_else(|| {
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../shared/data/banking77/train.csv"
        )
        .into()
    });
    let n: usize = args.get(1).map_or(Ok(2000), |s| s.parse())?;
    let batch: usize = args.get(2).map_or(Ok(32), |s| s.parse())?;
    let texts: Vec<String> = std::fs::read_to_string(&csv)?
        .lines()
        .skip(1)
        .take(n)
        .map(csv_text)
        .collect();

    let t = Instant::now();
    let source = ModelSource::from_env_or(None, None);
    let mut model =
        Embedder::load_source(&source, &default_cache_dir(), EmbedderOptions::default())?;
    println!(
        "model {} loaded in {:.0} ms; {}; precision {}, threads {}",
        model.name(),
        t.elapsed().as_secs_f64() * 1e3,
        models::cpu_info().summary(),
        model.precision().name(),
        model.threads()
    );

    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    model.embed(&refs[..batch.min(refs.len())], EmbedKind::Passage)?; // warm-up
    let t = Instant::now();
    for chunk in refs.chunks(batch) {
        model.embed(chunk, EmbedKind::Passage)?;
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        "batch {batch}: {} texts in {secs:.2} s = {:.1} texts/s",
        refs.len(),
        refs.len() as f64 / secs
    );

    let mut short: Vec<&str> = refs.clone();
    short.sort_by_key(|s| s.len());
    let queries: Vec<&str> = short
        .iter()
        .copied()
        .filter(|s| s.len() >= 20)
        .take(200)
        .collect();
    let tokens: usize = queries
        .iter()
        .map(|q| model.token_ids(q, EmbedKind::Query).map_or(0, |t| t.len()))
        .sum();
    let default_threads = model.threads();
    let mut counts = vec![1, default_threads];
    counts.dedup();
    for threads in counts {
        model.set_threads(threads);
        let profile = std::env::var_os("EMBED_PROFILE").is_some();
        if profile {
            models::profile::start();
        }
        let mut lat = Vec::with_capacity(queries.len());
        for q in &queries {
            let t = Instant::now();
            model.embed(&[q], EmbedKind::Query)?;
            lat.push(t.elapsed().as_secs_f64() * 1e3);
        }
        lat.sort_by(f64::total_cmp);
        println!(
            "single query ({:.1} tokens avg), {threads} thread(s): p50 {:.2} ms, p99 {:.2} ms",
            tokens as f64 / queries.len() as f64,
            percentile(&lat, 0.5),
            percentile(&lat, 0.99)
        );
        if let Some(p) = models::profile::stop().filter(|_| profile) {
            let total: f64 = p.by_step().iter().map(|s| s.1).sum();
            let cpu_total: f64 = p.cpu_by_step().iter().map(|s| s.1).sum();
            println!(
                "  {:<28} {:>10} {:>7} {:>10}",
                "step (12 layers)", "wall ms", "%", "cpu ms"
            );
            for ((name, secs), (_, cpu)) in p.by_step().into_iter().zip(p.cpu_by_step()) {
                println!(
                    "  {name:<28} {:>10.3} {:>6.1}% {:>10.3}",
                    secs * 1e3,
                    100.0 * secs / total,
                    cpu * 1e3
                );
            }
            println!(
                "  {:<28} {:>10.3} {:>7} {:>10.3}",
                "total",
                total * 1e3,
                "",
                cpu_total * 1e3
            );
        }
    }
    Ok(())
}
