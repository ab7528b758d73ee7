//! `triage eval`: quality measurements whose JSON output other tools rely on.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use indexer::SearchMode;
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
    #[command(flatten)]
    adapt: AdaptArgs,
}

/// `--adapt`: adapt the encoder to the training data first, as
/// `POST /v1/admin/adapt` does for a tenant (a held-out fold decides whether
/// the adapted encoder is used; the report says which, and what it cost).
#[derive(Debug, Args)]
pub struct AdaptArgs {
    /// Adapt the encoder before measuring.
    #[arg(long)]
    adapt: bool,
    /// Top layers adapted.
    #[arg(long, requires = "adapt", default_value_t = triage::AdaptSettings::default().options.layers)]
    adapt_layers: usize,
    /// Rank of the low-rank updates.
    #[arg(long, requires = "adapt", default_value_t = triage::AdaptSettings::default().options.rank)]
    adapt_rank: usize,
    /// Passes over the training texts.
    #[arg(long, requires = "adapt", default_value_t = triage::AdaptSettings::default().options.epochs)]
    adapt_epochs: usize,
    /// Threads the training uses.
    #[arg(long, requires = "adapt", default_value_t = triage::AdaptSettings::default().options.threads)]
    adapt_threads: usize,
}

impl AdaptArgs {
    /// The settings, when `--adapt` is given.
    fn settings(&self) -> Option<triage::AdaptSettings> {
        self.adapt.then(|| {
            let mut s = triage::AdaptSettings::default();
            s.options.layers = self.adapt_layers;
            s.options.rank = self.adapt_rank;
            s.options.epochs = self.adapt_epochs;
            s.options.threads = self.adapt_threads.max(1);
            s
        })
    }
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
    /// With `--faq`: adapt the encoder to the bank's phrasings first (each
    /// article's phrasings one group).
    #[command(flatten)]
    adapt: AdaptArgs,
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
    }
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
    let embedder = args.model.load()?;
    let corpus: Vec<(String, String)> = corpus.into_iter().map(|c| (c.id, c.text)).collect();
    let queries: Vec<(String, Vec<String>)> =
        queries.into_iter().map(|q| (q.text, q.relevant)).collect();
    let work = tempfile::tempdir().context("creating a temporary index directory")?;
    for report in indexer::eval::evaluate(&corpus, &queries, &modes, embedder, work.path())? {
        println!("{}", serde_json::to_string(&report)?);
    }
    Ok(())
}

fn classify(args: ClassifyArgs) -> anyhow::Result<()> {
    let train: Vec<LabelledLine> = read_jsonl(&args.train)?;
    let test: Vec<LabelledLine> = read_jsonl(&args.test)?;
    let pairs = |v: Vec<LabelledLine>| -> Vec<(String, String)> {
        v.into_iter().map(|l| (l.text, l.label)).collect()
    };
    let settings = args.adapt.settings();
    let report = args.cache.with(args.model.load()?, |embedder| {
        Ok(triage::eval::classify_with(
            &pairs(train),
            &pairs(test),
            args.oos_label.as_deref(),
            args.threshold,
            embedder,
            models::EmbedKind::Query,
            settings.as_ref(),
        )?)
    })?;
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

fn deflect(args: DeflectArgs) -> anyhow::Result<()> {
    let test: Vec<triage::eval::DeflectCase> = read_jsonl(&args.test)?;
    let work = tempfile::tempdir().context("creating a temporary index directory")?;
    let report = match (&args.pack, &args.faq) {
        (Some(_), _) if args.adapt.adapt => {
            anyhow::bail!("`eval deflect --adapt` works on a bank (--faq), not a pack")
        }
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
            let settings = args.adapt.settings();
            let report = args.cache.with(args.model.load()?, |embedder| {
                Ok(match &settings {
                    Some(s) => triage::eval::deflect_adapted(
                        &faq,
                        &test,
                        embedder,
                        &triage::Verifier::builtin()?,
                        calibrate_on.as_deref(),
                        work.path(),
                        s,
                    )?,
                    None => triage::eval::deflect(
                        &faq,
                        &test,
                        embedder,
                        calibrate_on.as_deref(),
                        work.path(),
                    )?,
                })
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
