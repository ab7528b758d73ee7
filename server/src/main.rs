//! `triage`: the one binary of the support-ticket triage service.
//!
//! Subcommands: `serve` (HTTP API + pages), `models` (fetch), `embed`, `ingest`, `search`,
//! `reclassify`, `eval` and `bench`. See `triage --help`.

// The hand-written OpenAPI document is one large `json!` literal.
#![recursion_limit = "256"]

mod cli;
mod config;
mod http;
mod pages;
mod reclassify;

fn main() -> std::process::ExitCode {
    cli::main()
}
