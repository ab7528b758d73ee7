//! Runs the triage evaluations with the real embedding model, caching vectors.
//!
//! ```text
//! cargo run --release -p triage --example eval -- classify --train T.jsonl --test T.jsonl [--oos-label oos] [--threshold 0.55] [--kind query|passage]
//! cargo run --release -p triage --example eval -- deflect --faq F.jsonl --test T.jsonl [--verifier V.json] [--max N]
//! cargo run --release -p triage --example eval -- fit-verifier --sets F1.jsonl:M1.jsonl,F2.jsonl:M2.jsonl --out triage/verifier.json [--max N]
//! ```
//! Vectors are cached in `data/eval/.cache-<model>.bin` (override with `--cache`).
//! The model comes from the usual places (`TRIAGE_MODEL_DIR`, `TRIAGE_MODEL`, the cache).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use models::{default_cache_dir, EmbedKind, Embedder, EmbedderOptions, ModelSource, TextEmbedder};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use triage::eval::{self, CachedEmbedder, DeflectCase, FaqEntry};
use triage::Verifier;

#[derive(Deserialize)]
struct Labelled {
    text: String,
    label: String,
}

fn read_jsonl<T: DeserializeOwned>(path: &str) -> Result<Vec<T>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| serde_json::from_str(l).map_err(|e| format!("{path}:{}: {e}", i + 1)))
        .collect()
}

/// `--adapt 1` and the `--adapt-*` settings (for experiments).
fn adapt_settings(opts: &HashMap<String, String>) -> Option<eval::AdaptSettings> {
    opts.get("adapt")?;
    let mut s = eval::AdaptSettings::default();
    let get = |k: &str| opts.get(&format!("adapt-{k}"));
    let o = &mut s.options;
    macro_rules! set {
        ($field:expr, $key:literal) => {
            if let Some(v) = get($key).and_then(|v| v.parse().ok()) {
                $field = v;
            }
        };
    }
    set!(o.layers, "layers");
    set!(o.rank, "rank");
    set!(o.alpha, "alpha");
    set!(o.epochs, "epochs");
    set!(o.max_steps, "max-steps");
    set!(o.batch, "batch");
    set!(o.per_group, "per-group");
    set!(o.lr, "lr");
    set!(o.prototype_lr, "proto-lr");
    set!(o.max_tokens, "max-tokens");
    set!(o.seed, "seed");
    set!(o.threads, "threads");
    set!(s.folds, "folds");
    match get("loss").map(String::as_str) {
        Some("supcon") => {
            o.loss = models::AdaptLoss::Contrastive {
                temperature: get("temp").and_then(|v| v.parse().ok()).unwrap_or(0.05),
            }
        }
        _ => {
            if let models::AdaptLoss::Prototypes { scale, margin } = &mut o.loss {
                if let Some(v) = get("scale").and_then(|v| v.parse().ok()) {
                    *scale = v;
                }
                if let Some(v) = get("margin").and_then(|v| v.parse().ok()) {
                    *margin = v;
                }
            }
        }
    }
    Some(s)
}

fn run() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let cmd = args.first().cloned().unwrap_or_default();
    let mut opts: HashMap<String, String> = HashMap::new();
    let mut it = args.iter().skip(1);
    while let Some(k) = it.next() {
        let v = it.next().ok_or_else(|| format!("{k} needs a value"))?;
        opts.insert(k.trim_start_matches("--").to_string(), v.clone());
    }
    let need = |k: &str| {
        opts.get(k)
            .cloned()
            .ok_or_else(|| format!("--{k} is required"))
    };
    let max: Option<usize> = opts.get("max").and_then(|m| m.parse().ok());

    let model = Embedder::load_source(
        &ModelSource::from_env_or(None, None),
        &default_cache_dir(),
        EmbedderOptions::default(),
    )
    .map_err(|e| e.to_string())?;
    let cache_path = opts
        .get("cache")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(format!("data/eval/.cache-{}.bin", model.name())));
    let cached =
        Arc::new(CachedEmbedder::open(Arc::new(model), &cache_path).map_err(|e| e.to_string())?);
    let embedder: Arc<dyn TextEmbedder> = cached.clone();

    let out = match cmd.as_str() {
        "classify" => {
            let pairs = |p: &str| -> Result<Vec<(String, String)>, String> {
                Ok(read_jsonl::<Labelled>(p)?
                    .into_iter()
                    .map(|l| (l.text, l.label))
                    .collect())
            };
            let threshold: f32 = opts
                .get("threshold")
                .and_then(|t| t.parse().ok())
                .unwrap_or(triage::DEFAULT_CLASSIFY_ABSTAIN);
            let kind = match opts.get("kind").map(String::as_str) {
                Some("passage") => EmbedKind::Passage,
                _ => EmbedKind::Query,
            };
            let adapt = adapt_settings(&opts);
            let report = eval::classify_with(
                &pairs(&need("train")?)?,
                &pairs(&need("test")?)?,
                opts.get("oos-label").map(String::as_str),
                threshold,
                embedder,
                kind,
                adapt.as_ref(),
            );
            cached.save().map_err(|e| e.to_string())?;
            serde_json::to_string(&report.map_err(|e| e.to_string())?).map_err(|e| e.to_string())?
        }
        "deflect" => {
            let faq: Vec<FaqEntry> = read_jsonl(&need("faq")?)?;
            let mut test: Vec<DeflectCase> = read_jsonl(&need("test")?)?;
            if let Some(m) = max {
                test.truncate(m);
            }
            let verifier = match opts.get("verifier") {
                Some(p) => Verifier::load(Path::new(p)).map_err(|e| e.to_string())?,
                None => Verifier::builtin().map_err(|e| e.to_string())?,
            };
            let work = PathBuf::from(
                opts.get("work")
                    .cloned()
                    .unwrap_or_else(|| "data/eval/work".into()),
            );
            let report = match adapt_settings(&opts) {
                Some(settings) => {
                    eval::deflect_adapted(&faq, &test, embedder, &verifier, None, &work, &settings)
                }
                None => eval::deflect_with(&faq, &test, embedder, &verifier, None, &work),
            };
            cached.save().map_err(|e| e.to_string())?;
            serde_json::to_string(&report.map_err(|e| e.to_string())?).map_err(|e| e.to_string())?
        }
        "fit-verifier" => {
            // --sets FAQ1:MESSAGES1,FAQ2:MESSAGES2 (each capped at --max messages)
            let mut sets: Vec<(Vec<FaqEntry>, Vec<DeflectCase>)> = Vec::new();
            for pair in need("sets")?.split(',') {
                let (f, t) = pair
                    .split_once(':')
                    .ok_or_else(|| format!("--sets entry {pair:?} is not FAQ:MESSAGES"))?;
                let mut test: Vec<DeflectCase> = read_jsonl(t)?;
                if let Some(m) = max {
                    test.truncate(m);
                }
                sets.push((read_jsonl(f)?, test));
            }
            let borrowed: Vec<(&[FaqEntry], &[DeflectCase])> = sets
                .iter()
                .map(|(f, t)| (f.as_slice(), t.as_slice()))
                .collect();
            let l2: f32 = opts.get("l2").and_then(|t| t.parse().ok()).unwrap_or(1e-3);
            let name = opts.get("name").cloned().unwrap_or_else(|| "fit".into());
            // --pairs P1.jsonl,P2.jsonl: labelled question pairs for the key-unit table
            let mut pairs: Vec<eval::QuestionPair> = Vec::new();
            for p in opts
                .get("pairs")
                .map(String::as_str)
                .unwrap_or("")
                .split(',')
            {
                if !p.is_empty() {
                    pairs.extend(read_jsonl::<eval::QuestionPair>(p)?);
                }
            }
            let fitted = eval::fit_verifier(&borrowed, &pairs, embedder, l2, &name);
            cached.save().map_err(|e| e.to_string())?;
            let (verifier, report) = fitted.map_err(|e| e.to_string())?;
            let out = need("out")?;
            std::fs::write(&out, verifier.to_json().map_err(|e| e.to_string())? + "\n")
                .map_err(|e| format!("{out}: {e}"))?;
            serde_json::to_string(&report).map_err(|e| e.to_string())?
        }
        _ => return Err("usage: eval (classify|deflect|fit-verifier) --key value ...".into()),
    };
    println!("{out}");
    Ok(())
}

fn main() -> std::process::ExitCode {
    models::serial_candle_pool();
    tracing_subscriber_init();
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Logs to stderr at info level unless `RUST_LOG` says otherwise.
fn tracing_subscriber_init() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
