//! `triage ingest` and `triage search`: the index from the command line.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, ValueEnum};
use indexer::{DocKind, Filters, Index, SearchMode, SearchRequest};

use super::ModelArgs;

/// Arguments of `triage ingest`.
#[derive(Debug, Args)]
pub struct IngestArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// The service's data directory (the index lives in its `index/` folder).
    #[arg(long, default_value = "data")]
    data_dir: PathBuf,
    /// Tickets to add or update, one JSON object per line.
    #[arg(
        long,
        conflicts_with = "articles",
        required_unless_present = "articles"
    )]
    tickets: Option<PathBuf>,
    /// Knowledge-base articles to add or update, one JSON object per line.
    #[arg(long)]
    articles: Option<PathBuf>,
}

/// Arguments of `triage search`.
#[derive(Debug, Args)]
pub struct SearchArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// The service's data directory.
    #[arg(long, default_value = "data")]
    data_dir: PathBuf,
    /// Only this kind of document.
    #[arg(long, value_enum)]
    kind: Option<KindArg>,
    /// Retrievers to use.
    #[arg(long, value_enum, default_value_t = ModeArg::Hybrid)]
    mode: ModeArg,
    /// Number of hits (at least 1).
    #[arg(short, default_value_t = 10)]
    k: usize,
    /// Tenant (default: the default tenant).
    #[arg(long)]
    tenant: Option<String>,
    /// The query.
    query: String,
}

/// `--kind` values.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum KindArg {
    /// Tickets.
    Ticket,
    /// Articles.
    Article,
}

/// `--mode` values.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum ModeArg {
    /// BM25 and vectors, fused (z-score fusion, the search default).
    Hybrid,
    /// BM25 only.
    Bm25,
    /// Vectors only.
    Vector,
}

impl From<ModeArg> for SearchMode {
    fn from(m: ModeArg) -> Self {
        match m {
            ModeArg::Hybrid => SearchMode::Hybrid,
            ModeArg::Bm25 => SearchMode::Bm25,
            ModeArg::Vector => SearchMode::Vector,
        }
    }
}

impl From<KindArg> for DocKind {
    fn from(k: KindArg) -> Self {
        match k {
            KindArg::Ticket => DocKind::Ticket,
            KindArg::Article => DocKind::Article,
        }
    }
}

/// Where the index lives inside a data directory.
pub fn index_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("index")
}

/// Runs `triage ingest`.
pub fn ingest(args: IngestArgs) -> anyhow::Result<()> {
    let embedder = args.model.load()?;
    let dir = index_dir(&args.data_dir);
    let index =
        Index::open(&dir, embedder).with_context(|| format!("opening index {}", dir.display()))?;
    let (kind, path) = match (&args.tickets, &args.articles) {
        (Some(p), _) => (DocKind::Ticket, p),
        (None, Some(p)) => (DocKind::Article, p),
        (None, None) => anyhow::bail!("pass --tickets FILE or --articles FILE"),
    };
    let report = index.ingest_jsonl(kind, path, true)?;
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

/// Runs `triage search`.
pub fn search(args: SearchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        !args.query.trim().is_empty(),
        "the query is empty: pass the text to search for"
    );
    anyhow::ensure!(args.k > 0, "-k must be at least 1");
    let dir = index_dir(&args.data_dir);
    anyhow::ensure!(
        dir.exists(),
        "no index at {} (run `triage ingest --data-dir {}` first)",
        dir.display(),
        args.data_dir.display()
    );
    let embedder = args.model.load()?;
    let index =
        Index::open(&dir, embedder).with_context(|| format!("opening index {}", dir.display()))?;
    let request = SearchRequest {
        text: args.query,
        mode: args.mode.into(),
        k: args.k,
        filters: Filters {
            tenant: args.tenant,
            kind: args.kind.map(DocKind::from),
            ..Filters::default()
        },
        ..SearchRequest::default()
    };
    for hit in index.search(&request)? {
        println!("{}", serde_json::to_string(&hit)?);
    }
    Ok(())
}
