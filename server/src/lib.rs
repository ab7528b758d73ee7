//! The support-ticket triage service: the HTTP adapter over the `triage`
//! engine, the services it calls, the settings, and the `triage` CLI.
//!
//! [`app`] builds the whole HTTP service as one axum router over an
//! [`AppState`], so tests drive it in process (axum's `examples/testing`);
//! [`serve`] runs it on a socket; [`cli::main`] is the binary.
//!
//! | module | job |
//! |---|---|
//! | [`config`] | the settings, declared once: flags, environment, the TOML file, defaults |
//! | [`http`] | the adapter: router, thin handlers, extractors, auth, guards, one error type |
//! | [`services`] | what handlers call besides the engine: the job store, the retrain scheduler |
//! | [`connectors`] | Zammad, Chatwoot and signed webhooks: verification, write-backs, the durable outbox |
//! | [`serve`] | binding, background engine load, graceful shutdown |
//! | [`reclassify`] | the resumable bulk reclassification behind jobs and `triage reclassify` |
//! | `pages` | the `/chat` and `/agent` pages |
//! | [`cli`] | the subcommands |

pub mod cli;
pub mod config;
pub mod connectors;
pub mod http;
mod pages;
pub mod reclassify;
pub mod serve;
pub mod services;

pub use http::{app, AppState};
