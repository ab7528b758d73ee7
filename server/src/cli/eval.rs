//! `triage eval`: quality measurements whose JSON output other tools rely on.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use indexer::eval::RetrievalSet;
use indexer::{Fusion, SearchMode};
use models::TextEmbedder;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use triage::eval::CachedEmbedder;

use super::ModelArgs;

/// `triage eval …` subcommands.
#[derive(Debug, Subcommand)]
pub enum EvalCommand {
    /// Retrieval quality: recall@1/5/10 and MRR@10 per search mode.
    Retrieval(RetrievalArgs),
    /// Classification quality with abstention (and out-of-scope refusal).
    Classify(ClassifyArgs),
    /// FAQ deflection quality: answer rate, answer precision, out-of-scope handoff.
    Deflect(DeflectArgs),
    /// Field extraction quality: precision and recall per field on hand-labelled requests.
    Fields(FieldsArgs),
}

/// Arguments of `triage eval fields`.
#[derive(Debug, Args)]
pub struct FieldsArgs {
    /// Requests: `{"id", "text", "fields": [{"name", "value", "span": [start, end]}]}`
    /// per line, spans in characters.
    #[arg(long)]
    cases: PathBuf,
    /// A pack directory whose `[[fields]]` (patterns, value words) are added
    /// to the built-in extractors, as the engine does; none = built-ins only.
    #[arg(long)]
    pack: Option<PathBuf>,
}

/// Arguments of `triage eval retrieval`.
#[derive(Debug, Args)]
pub struct RetrievalArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Corpus: `{"id", "text"}` per line.
    #[arg(long)]
    corpus: PathBuf,
    /// Queries: `{"text", "relevant": [ids]}` per line.
    #[arg(long)]
    queries: PathBuf,
    /// Which modes to evaluate.
    #[arg(long, value_enum, default_value_t = EvalMode::All)]
    mode: EvalMode,
    /// Hybrid fusion to measure, as the search API takes it (e.g.
    /// `{"method":"rrf","k":60}`); repeat to measure several on one index.
    /// Default: the search API's default.
    #[arg(long = "fusion", value_parser = parse_fusion)]
    fusions: Vec<Fusion>,
    /// Also write what hybrid search fuses for each query (both retrievers'
    /// ranked candidates with their scores) to this JSONL file, for
    /// `bench/fusion_sweep.py`.
    #[arg(long)]
    candidates: Option<PathBuf>,
    #[command(flatten)]
    cache: CacheArgs,
}

/// A `--fusion` value: the search API's JSON, checked as a search checks it.
fn parse_fusion(s: &str) -> Result<Fusion, String> {
    serde_json::from_str(s)
        .map_err(|e| format!("not a fusion ({e}); e.g. {{\"method\":\"rrf\",\"k\":60}}"))
}

/// `--mode` values of `eval retrieval`.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum EvalMode {
    /// BM25 only.
    Bm25,
    /// Vectors only.
    Vector,
    /// Fused.
    Hybrid,
    /// All three.
    All,
}

/// Arguments of `triage eval classify`.
#[derive(Debug, Args)]
pub struct ClassifyArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Training examples: `{"text", "label"}` per line.
    #[arg(long)]
    train: PathBuf,
    /// Test examples: `{"text", "label"}` per line.
    #[arg(long)]
    test: PathBuf,
    /// The label that marks out-of-scope examples (never in the training taxonomy).
    #[arg(long)]
    oos_label: Option<String>,
    /// Abstention threshold on the calibrated probability; defaults to a pack's
    /// default `[thresholds] classify_abstain`, so the report measures what the
    /// service does with a pack that does not set it.
    #[arg(long, default_value_t = triage::DEFAULT_CLASSIFY_ABSTAIN)]
    threshold: f32,
    #[command(flatten)]
    cache: CacheArgs,
}

/// Arguments of `triage eval deflect`.
#[derive(Debug, Args)]
pub struct DeflectArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// FAQ bank: `{"id", "question", "answer"}` per line (the verifier alone).
    #[arg(long, required_unless_present = "pack", conflicts_with = "pack")]
    faq: Option<PathBuf>,
    /// A pack directory: its chat measured as `triage serve` ships it (the
    /// pack's articles and thresholds, the out-of-scope check, embedding
    /// included in the latency).
    #[arg(long)]
    pack: Option<PathBuf>,
    /// With `--pack`: feed back these messages (same format as `--test`) as
    /// customers and agents would, then measure the test set again.
    #[arg(long, requires = "pack")]
    learn: Option<PathBuf>,
    /// With `--faq`: out-of-scope messages (`{"text"}` per line, none in the
    /// test set) to calibrate the answer probability on the bank, as the
    /// engine does with a pack's `out_of_scope.jsonl`.
    #[arg(long, requires = "faq")]
    calibrate_on: Option<PathBuf>,
    /// Keep the per-message decisions (`*_decisions.jsonl`) in this directory.
    #[arg(long)]
    decisions: Option<PathBuf>,
    /// Test messages: `{"text", "faq_ids": [...]}` per line (empty = out of scope).
    #[arg(long)]
    test: PathBuf,
    #[command(flatten)]
    cache: CacheArgs,
}

/// `--cache`: a file remembering every vector, so rerunning an evaluation on the
/// same texts (another threshold, a refitted verifier) skips the embedding.
#[derive(Debug, Args)]
pub struct CacheArgs {
    /// Embedding cache file (created if absent; refused if written for another model).
    #[arg(long)]
    cache: Option<PathBuf>,
}

impl CacheArgs {
    /// Runs `f` with `embedder`, through the cache when one is given (saved afterwards,
    /// even when `f` fails, so the vectors computed are kept).
    fn with<T>(
        &self,
        embedder: Arc<dyn TextEmbedder>,
        f: impl FnOnce(Arc<dyn TextEmbedder>) -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        let Some(path) = &self.cache else {
            return f(embedder);
        };
        let cached = Arc::new(CachedEmbedder::open(embedder, path)?);
        let out = f(cached.clone());
        cached
            .save()
            .with_context(|| format!("saving the embedding cache {}", path.display()))?;
        out
    }
}

#[derive(Deserialize)]
struct TextLine {
    text: String,
}

#[derive(Deserialize)]
struct CorpusLine {
    id: String,
    text: String,
}

#[derive(Deserialize)]
struct QueryLine {
    text: String,
    relevant: Vec<String>,
}

#[derive(Deserialize)]
struct LabelledLine {
    text: String,
    label: String,
}

/// Runs an `eval` subcommand.
pub fn run(cmd: EvalCommand) -> anyhow::Result<()> {
    match cmd {
        EvalCommand::Retrieval(args) => retrieval(args),
        EvalCommand::Classify(args) => classify(args),
        EvalCommand::Deflect(args) => deflect(args),
        EvalCommand::Fields(args) => fields(args),
    }
}

fn fields(args: FieldsArgs) -> anyhow::Result<()> {
    let cases: Vec<triage::eval::FieldCase> = read_jsonl(&args.cases)?;
    let specs = match &args.pack {
        Some(dir) => triage::Pack::load(dir)?.fields,
        None => Vec::new(),
    };
    let report = triage::eval::fields(&specs, &cases)?;
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

fn retrieval(args: RetrievalArgs) -> anyhow::Result<()> {
    let corpus: Vec<CorpusLine> = read_jsonl(&args.corpus)?;
    let queries: Vec<QueryLine> = read_jsonl(&args.queries)?;
    let modes = match args.mode {
        EvalMode::Bm25 => vec![SearchMode::Bm25],
        EvalMode::Vector => vec![SearchMode::Vector],
        EvalMode::Hybrid => vec![SearchMode::Hybrid],
        EvalMode::All => vec![SearchMode::Bm25, SearchMode::Vector, SearchMode::Hybrid],
    };
    let fusions = if args.fusions.is_empty() {
        vec![Fusion::default()]
    } else {
        args.fusions.clone()
    };
    let corpus: Vec<(String, String)> = corpus.into_iter().map(|c| (c.id, c.text)).collect();
    let queries: Vec<(String, Vec<String>)> =
        queries.into_iter().map(|q| (q.text, q.relevant)).collect();
    let work = tempfile::tempdir().context("creating a temporary index directory")?;
    let embed_queries = args.candidates.is_some() || modes.iter().any(|m| *m != SearchMode::Bm25);
    let set = args.cache.with(args.model.load()?, |embedder| {
        Ok(RetrievalSet::build(
            &corpus,
            &queries,
            embedder,
            work.path(),
            embed_queries,
        )?)
    })?;
    for mode in modes {
        let fusions = if mode == SearchMode::Hybrid {
            &fusions[..]
        } else {
            &fusions[..1]
        };
        for &fusion in fusions {
            println!("{}", serde_json::to_string(&set.report(mode, fusion)?)?);
        }
    }
    if let Some(path) = &args.candidates {
        set.write_candidates(path)?;
    }
    Ok(())
}

fn classify(args: ClassifyArgs) -> anyhow::Result<()> {
    let train: Vec<LabelledLine> = read_jsonl(&args.train)?;
    let test: Vec<LabelledLine> = read_jsonl(&args.test)?;
    let pairs = |v: Vec<LabelledLine>| -> Vec<(String, String)> {
        v.into_iter().map(|l| (l.text, l.label)).collect()
    };
    let report = args.cache.with(args.model.load()?, |embedder| {
        Ok(triage::eval::classify(
            &pairs(train),
            &pairs(test),
            args.oos_label.as_deref(),
            args.threshold,
            embedder,
        )?)
    })?;
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

fn deflect(args: DeflectArgs) -> anyhow::Result<()> {
    let test: Vec<triage::eval::DeflectCase> = read_jsonl(&args.test)?;
    let work = tempfile::tempdir().context("creating a temporary index directory")?;
    let report = match (&args.pack, &args.faq) {
        (Some(pack), _) => {
            let learn: Option<Vec<triage::eval::DeflectCase>> =
                args.learn.as_deref().map(read_jsonl).transpose()?;
            let report = args.cache.with(args.model.load()?, |embedder| {
                Ok(triage::eval::deflect_pack(
                    pack,
                    &test,
                    embedder,
                    work.path(),
                    learn.as_deref(),
                )?)
            })?;
            serde_json::to_string(&report)?
        }
        (None, Some(faq)) => {
            let faq: Vec<triage::eval::FaqEntry> = read_jsonl(faq)?;
            let calibrate_on: Option<Vec<String>> = args
                .calibrate_on
                .as_deref()
                .map(read_jsonl::<TextLine>)
                .transpose()?
                .map(|lines| lines.into_iter().map(|l| l.text).collect());
            let report = args.cache.with(args.model.load()?, |embedder| {
                Ok(triage::eval::deflect(
                    &faq,
                    &test,
                    embedder,
                    calibrate_on.as_deref(),
                    work.path(),
                )?)
            })?;
            serde_json::to_string(&report)?
        }
        (None, None) => anyhow::bail!("`eval deflect` needs --faq or --pack"),
    };
    if let Some(dir) = &args.decisions {
        keep_decisions(work.path(), dir)?;
    }
    println!("{report}");
    Ok(())
}

/// Copies the `*_decisions.jsonl` files an evaluation wrote into `dir`.
fn keep_decisions(work: &std::path::Path, dir: &std::path::Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    for entry in std::fs::read_dir(work)? {
        let path = entry?.path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if name.ends_with("_decisions.jsonl") {
            std::fs::copy(&path, dir.join(name))
                .with_context(|| format!("copying {} to {}", path.display(), dir.display()))?;
        }
    }
    Ok(())
}

/// Reads one JSON object per non-empty line; an error names the file and line.
fn read_jsonl<T: DeserializeOwned>(path: &Path) -> anyhow::Result<Vec<T>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l)
                .with_context(|| format!("{}:{}: invalid line", path.display(), i + 1))
        })
        .collect()
}
