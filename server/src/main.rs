//! `triage`: the one binary of the support-ticket triage service.
//!
//! Subcommands: `serve` (HTTP API + pages), `models` (fetch), `embed`, `ingest`, `search`,
//! `reclassify`, `eval` and `bench`. See `triage --help` and the `server` library.

fn main() -> std::process::ExitCode {
    server::cli::main()
}
