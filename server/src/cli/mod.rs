//! Command-line interface (clap). Each subcommand lives in its own module.

mod bench;
mod embed;
mod eval;
mod index;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

pub use crate::config::ModelArgs;

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

/// Parses arguments and runs the chosen subcommand.
pub fn main() -> ExitCode {
    models::serial_candle_pool();
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
            let cfg = crate::config::Config::from_args(&c.serve)?;
            tokio::runtime::Runtime::new()?.block_on(crate::serve::serve(cfg))
        }
        Command::Reclassify(c) => crate::reclassify::run_args(&c.args, &c.model).map(|_| ()),
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
