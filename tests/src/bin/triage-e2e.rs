//! The `triage` binary, built inside this package so its end-to-end tests get
//! its path from cargo: the same `main` as `server/src/main.rs`.

fn main() -> std::process::ExitCode {
    server::cli::main()
}
