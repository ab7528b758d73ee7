//! Command-line interface (clap). Each subcommand lives in its own module.

mod bench;
mod embed;
mod eval;
mod index;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};
use models::{Embedder, EmbedderOptions, ModelSource, TextEmbedder};

/// AI triage and knowledge retrieval for customer-support tickets, on your own machine.
#[derive(Debug, Parser)]
#[command(name = "triage", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the HTTP API and the /chat and /agent pages (on the demo pack by default).
    Serve(ServeCmd),
    /// Reclassify a JSONL file of tickets (resumable) and write a change report.
    Reclassify(ReclassifyCmd),
    /// Manage embedding models.
    #[command(subcommand)]
    Models(ModelsCommand),
    /// Embed one text per stdin line; print `{"text", "embedding"}` JSON lines.
    Embed(embed::EmbedArgs),
    /// Add tickets or articles from JSONL to an index.
    Ingest(index::IngestArgs),
    /// Search an index; print hits with explanations as JSON lines.
    Search(index::SearchArgs),
    /// Measure quality on labelled data.
    #[command(subcommand)]
    Eval(eval::EvalCommand),
    /// Measure speed.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
}

/// `triage serve` flags.
#[derive(Debug, Args)]
struct ServeCmd {
    #[command(flatten)]
    serve: crate::config::ServeArgs,
    #[command(flatten)]
    model: ModelArgs,
}

/// `triage reclassify` flags.
#[derive(Debug, Args)]
struct ReclassifyCmd {
    #[command(flatten)]
    args: crate::reclassify::ReclassifyArgs,
    #[command(flatten)]
    model: ModelArgs,
}

#[derive(Debug, Subcommand)]
enum ModelsCommand {
    /// Download, verify and install a model into the model cache (idempotent).
    Fetch {
        /// Model name (see `triage models list`).
        #[arg(long, default_value = models::DEFAULT_MODEL)]
        model: String,
        /// Model cache directory [env: TRIAGE_MODEL_CACHE; default: the user's cache dir].
        #[arg(long)]
        cache_dir: Option<PathBuf>,
    },
    /// List the models `fetch` knows.
    List,
}

/// Which embedding model to use; shared by every subcommand that embeds.
#[derive(Debug, Clone, Args)]
pub struct ModelArgs {
    /// A known model name [env: TRIAGE_MODEL; default: multilingual-e5-small].
    #[arg(long, global = true)]
    pub model: Option<String>,
    /// A local HuggingFace-layout BERT-family model directory [env: TRIAGE_MODEL_DIR].
    #[arg(long, global = true, conflicts_with = "model")]
    pub model_dir: Option<PathBuf>,
    /// Model cache directory [env: TRIAGE_MODEL_CACHE; default: the user's cache dir].
    #[arg(long, global = true)]
    pub model_cache: Option<PathBuf>,
}

impl ModelArgs {
    /// The same choice in the service configuration's terms.
    fn flags(&self) -> crate::config::ModelFlags {
        crate::config::ModelFlags {
            name: self.model.clone(),
            dir: self.model_dir.clone(),
            cache: self.model_cache.clone(),
        }
    }

    /// Loads the chosen model, fetching the default one on first use.
    pub fn load(&self) -> anyhow::Result<Arc<dyn TextEmbedder>> {
        let source = ModelSource::from_env_or(self.model.clone(), self.model_dir.clone());
        let cache = self
            .model_cache
            .clone()
            .unwrap_or_else(models::default_cache_dir);
        let embedder = Embedder::load_source(&source, &cache, EmbedderOptions::default())?;
        tracing::info!(
            model = embedder.name(),
            dim = embedder.dim(),
            "model loaded"
        );
        Ok(Arc::new(embedder))
    }
}

/// Parses arguments and runs the chosen subcommand.
pub fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(c) => {
            let cfg = crate::config::Config::from_args(&c.serve, &c.model.flags())?;
            tokio::runtime::Runtime::new()?.block_on(crate::serve::serve(cfg))
        }
        Command::Reclassify(c) => {
            crate::reclassify::run_args(&c.args, &c.model.flags()).map(|_| ())
        }
        Command::Models(ModelsCommand::Fetch { model, cache_dir }) => {
            let cache = cache_dir.unwrap_or_else(models::default_cache_dir);
            let dir = models::fetch(&model, &cache, true)?;
            println!("{}", dir.display());
            Ok(())
        }
        Command::Models(ModelsCommand::List) => {
            for name in models::known_models() {
                println!("{name}");
            }
            Ok(())
        }
        Command::Embed(args) => embed::run(args),
        Command::Ingest(args) => index::ingest(args),
        Command::Search(args) => index::search(args),
        Command::Eval(cmd) => eval::run(cmd),
        Command::Bench(cmd) => bench::run(cmd),
    }
}
