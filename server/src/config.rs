//! The service's one configuration: where the data and pack live, which model to
//! load, API keys and request limits.
//!
//! Values come from, in order of precedence: command-line flags, environment
//! variables (clap reads both; the model's `TRIAGE_MODEL`, `TRIAGE_MODEL_DIR`
//! and `TRIAGE_MODEL_CACHE` too), an optional TOML file (`--config`), then the
//! defaults below. [`ServeArgs`] and [`EngineArgs`] are `clap::Args` structs the
//! CLI flattens into its `serve` and `reclassify` subcommands.
//!
//! TOML keys (all optional; same names as the flags): `addr`, `data_dir`,
//! `pack`, `model`, `model_dir`, `model_cache`, `[api_keys]` (token =
//! "tenant:scope", scope `chat`, `agent` or `admin`; the default tenant is the
//! empty name, `":chat"`), `allow_unauthenticated`, `allowed_hosts`,
//! `max_body_bytes`, `max_text_chars`, `request_timeout_ms`,
//! `body_read_timeout_ms`, `max_concurrency`, `retrain_after_changes`
//! (background retrain after this many labelled changes of a tenant, default
//! 50, 0 = never), `retrain_min_interval_secs` (at least this long between
//! trainings, default 300) and `learn_min_sessions` (chat sessions that must
//! agree before a phrasing learned from customers answers others, default 3).
//!
//! Without API keys the service is open to whoever can reach it, so it then
//! listens on a loopback address only, unless `allow_unauthenticated` says
//! otherwise (see docs/SECURITY.md).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde::Deserialize;

use models::BatchingEmbedder;

pub use crate::services::retrain::{
    RetrainPolicy, DEFAULT_RETRAIN_AFTER_CHANGES, DEFAULT_RETRAIN_MIN_INTERVAL_SECS,
};

/// Default listen address (`triage serve` with no arguments).
pub const DEFAULT_ADDR: &str = "127.0.0.1:8080";
/// Default data directory, relative to the working directory.
pub const DEFAULT_DATA_DIR: &str = "data";
/// Default pack, relative to the working directory (falls back to the source tree's copy).
pub const DEFAULT_PACK_DIR: &str = "fixtures/demo-pack";
/// What an API key lets its holder do; each scope includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// The customer chat: deflect, the conversation's feedback and handoff.
    Chat,
    /// Agents: read and write tickets and articles, triage, suggestions,
    /// search, corrections, learned phrasings.
    Agent,
    /// Administrators of the tenant: retraining, jobs, statistics (and, for
    /// the default tenant, the service's metrics).
    Admin,
}

impl Scope {
    /// The scope's name as keys and errors spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Chat => "chat",
            Scope::Agent => "agent",
            Scope::Admin => "admin",
        }
    }

    fn parse(name: &str) -> Option<Scope> {
        match name.trim().to_ascii_lowercase().as_str() {
            "chat" => Some(Scope::Chat),
            "agent" => Some(Scope::Agent),
            "admin" => Some(Scope::Admin),
            _ => None,
        }
    }
}

/// What one API key grants: a tenant and a scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    /// The tenant every request with this key acts for (`""` = default tenant).
    pub tenant: String,
    /// What the key may do.
    pub scope: Scope,
}

/// Environment variables of the model choice (read by the `models` crate too;
/// here so that they rank above the TOML file, like every other variable).
const ENV_MODEL: &str = "TRIAGE_MODEL";
const ENV_MODEL_DIR: &str = "TRIAGE_MODEL_DIR";
const ENV_MODEL_CACHE: &str = "TRIAGE_MODEL_CACHE";

/// Flags that choose the engine's data, pack and model (shared by `serve` and `reclassify`).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct EngineArgs {
    /// Data directory holding the index (default: ./data).
    #[arg(long, env = "TRIAGE_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Tenant pack directory (default: fixtures/demo-pack).
    #[arg(long = "pack", env = "TRIAGE_PACK")]
    pub pack_dir: Option<PathBuf>,
}

/// The model flags of the CLI (its global `--model`, `--model-dir`,
/// `--model-cache`). Unset ones fall back, like every setting, to the
/// environment (`TRIAGE_MODEL_DIR` / `TRIAGE_MODEL`, `TRIAGE_MODEL_CACHE`),
/// then to the TOML file, then to the default model and cache directory.
#[derive(Debug, Clone, Default)]
pub struct ModelFlags {
    /// A known model name.
    pub name: Option<String>,
    /// A local HuggingFace-layout model directory.
    pub dir: Option<PathBuf>,
    /// The model cache directory.
    pub cache: Option<PathBuf>,
}

/// Flags of `triage serve`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ServeArgs {
    /// Data, pack and model.
    #[command(flatten)]
    pub engine: EngineArgs,
    /// Listen address, HOST:PORT (default 127.0.0.1:8080; port 0 picks a free one).
    #[arg(long, env = "TRIAGE_ADDR")]
    pub addr: Option<SocketAddr>,
    /// Optional TOML configuration file (see `Config` for the keys).
    #[arg(long = "config", env = "TRIAGE_CONFIG")]
    pub config_file: Option<PathBuf>,
    /// API key as TOKEN=TENANT:SCOPE, SCOPE one of chat, agent, admin; the
    /// default tenant is the empty name (`TOKEN=:chat`). Repeatable, or
    /// comma-separated in the env var. With any key set, every /v1 route
    /// requires `Authorization: Bearer TOKEN` of a sufficient scope.
    #[arg(long = "api-key", env = "TRIAGE_API_KEYS", value_delimiter = ',')]
    pub api_keys: Vec<String>,
    /// Serve without API keys on a non-loopback address (everyone who can
    /// reach it is an administrator of every tenant). Without keys the
    /// service otherwise refuses to listen anywhere but on loopback.
    #[arg(long, env = "TRIAGE_ALLOW_UNAUTHENTICATED")]
    pub allow_unauthenticated: bool,
    /// Host names (optionally HOST:PORT) requests may be addressed to; others
    /// get 421. Default: without keys, loopback names only (against DNS
    /// rebinding); with keys, any.
    #[arg(
        long = "allowed-host",
        env = "TRIAGE_ALLOWED_HOSTS",
        value_delimiter = ','
    )]
    pub allowed_hosts: Vec<String>,
    /// Longest time a client may take to send a request body, in
    /// milliseconds (default 10000): slow senders are answered 408 and never
    /// hold a concurrency slot while they send.
    #[arg(long, env = "TRIAGE_BODY_READ_TIMEOUT_MS")]
    pub body_read_timeout_ms: Option<u64>,
    /// Chat sessions that must agree ("this helped") before a phrasing
    /// learned from customers answers other customers (default 3).
    #[arg(long, env = "TRIAGE_LEARN_MIN_SESSIONS")]
    pub learn_min_sessions: Option<usize>,
    /// Largest accepted request body in bytes (default 1 MiB).
    #[arg(long, env = "TRIAGE_MAX_BODY_BYTES")]
    pub max_body_bytes: Option<usize>,
    /// Longest accepted text field in characters (default 20000).
    #[arg(long, env = "TRIAGE_MAX_TEXT_CHARS")]
    pub max_text_chars: Option<usize>,
    /// Per-request timeout in milliseconds (default 30000), body reading excluded.
    #[arg(long, env = "TRIAGE_REQUEST_TIMEOUT_MS")]
    pub request_timeout_ms: Option<u64>,
    /// Requests in flight before new ones are shed with 503 (default 64).
    #[arg(long, env = "TRIAGE_MAX_CONCURRENCY")]
    pub max_concurrency: Option<usize>,
    /// Retrain the classifiers in the background once this many labelled
    /// changes (ticket writes, corrections) are pending (default 50; 0 = never).
    #[arg(long, env = "TRIAGE_RETRAIN_AFTER_CHANGES")]
    pub retrain_after_changes: Option<u64>,
    /// Shortest time between two trainings, in seconds (default 300).
    #[arg(long, env = "TRIAGE_RETRAIN_MIN_INTERVAL_SECS")]
    pub retrain_min_interval_secs: Option<u64>,
}

/// Request limits that protect the service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest accepted request body (bytes): larger bodies get 413.
    pub max_body_bytes: usize,
    /// Longest accepted text field (Unicode scalar values): longer texts get 413.
    pub max_text_chars: usize,
    /// Time after which a request is answered with 504.
    pub request_timeout: Duration,
    /// Time a client may take to send its body: then 408.
    pub body_read_timeout: Duration,
    /// Requests in flight on /v1 before new ones are shed with 503.
    pub max_concurrency: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 1024 * 1024,
            max_text_chars: 20_000,
            request_timeout: Duration::from_secs(30),
            body_read_timeout: Duration::from_secs(10),
            max_concurrency: 64,
        }
    }
}

/// Data, pack and model: everything needed to open the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineSettings {
    /// Index data directory.
    pub data_dir: PathBuf,
    /// Tenant pack directory.
    pub pack_dir: PathBuf,
    /// The embedding model (a named one is fetched into `model_cache` if missing).
    pub model: models::ModelSource,
    /// The model cache directory.
    pub model_cache: PathBuf,
    /// When phrasings learned from chats answer other customers.
    pub learn: triage::LearnPolicy,
}

/// The whole service configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Listen address.
    pub addr: SocketAddr,
    /// Data, pack and model.
    pub engine: EngineSettings,
    /// Bearer token → tenant and scope. Empty: no authentication (loopback only,
    /// unless `allow_unauthenticated`).
    pub api_keys: BTreeMap<String, ApiKey>,
    /// Serve without keys on a non-loopback address.
    pub allow_unauthenticated: bool,
    /// Host names requests may be addressed to (empty: see [`ServeArgs::allowed_hosts`]).
    pub allowed_hosts: Vec<String>,
    /// Request limits.
    pub limits: Limits,
    /// Background retraining of the classifiers.
    pub retrain: RetrainPolicy,
}

/// The optional TOML file: every key optional, same names as the flags.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct FileConfig {
    addr: Option<SocketAddr>,
    data_dir: Option<PathBuf>,
    pack: Option<PathBuf>,
    model: Option<String>,
    model_dir: Option<PathBuf>,
    model_cache: Option<PathBuf>,
    /// `[api_keys]` table: token = "tenant:scope".
    api_keys: BTreeMap<String, String>,
    allow_unauthenticated: Option<bool>,
    allowed_hosts: Option<Vec<String>>,
    max_body_bytes: Option<usize>,
    max_text_chars: Option<usize>,
    request_timeout_ms: Option<u64>,
    body_read_timeout_ms: Option<u64>,
    learn_min_sessions: Option<usize>,
    max_concurrency: Option<usize>,
    retrain_after_changes: Option<u64>,
    retrain_min_interval_secs: Option<u64>,
}

/// Reads one environment variable; `None` when unset or blank.
type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The process environment, blank values counting as unset.
fn process_env(key: &str) -> Option<String> {
    std::env::var(key).ok().filter(|v| !v.trim().is_empty())
}

impl EngineArgs {
    /// Resolves the engine settings from these flags and the model flags
    /// (defaults for the rest); for commands without a config file.
    pub fn settings(&self, model: &ModelFlags) -> EngineSettings {
        resolve_engine(self, model, &FileConfig::default(), &process_env)
    }
}

impl Config {
    /// Builds the configuration from flags/env, the optional TOML file and defaults.
    pub fn from_args(args: &ServeArgs, model: &ModelFlags) -> anyhow::Result<Config> {
        Config::from_args_with_env(args, model, &process_env)
    }

    /// [`Config::from_args`] with the model's environment variables read
    /// through `env` (tests pass a fixed map instead of the process's).
    fn from_args_with_env(
        args: &ServeArgs,
        model: &ModelFlags,
        env: EnvLookup<'_>,
    ) -> anyhow::Result<Config> {
        let file = match &args.config_file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading config file {}", path.display()))?;
                toml::from_str::<FileConfig>(&text)
                    .with_context(|| format!("parsing config file {}", path.display()))?
            }
            None => FileConfig::default(),
        };
        let addr = match args.addr.or(file.addr) {
            Some(a) => a,
            None => DEFAULT_ADDR.parse().context("default address")?,
        };
        let mut api_keys = BTreeMap::new();
        for (n, (token, grant)) in file.api_keys.iter().enumerate() {
            let key = parse_grant(grant)
                .with_context(|| format!("[api_keys] entry {} of the config file", n + 1))?;
            api_keys.insert(token.trim().to_string(), key);
        }
        for (n, spec) in args.api_keys.iter().enumerate() {
            let (token, key) =
                parse_key(spec).with_context(|| format!("--api-key number {}", n + 1))?;
            api_keys.insert(token, key);
        }
        if api_keys.keys().any(|t| t.trim().is_empty()) {
            anyhow::bail!("an API key's token is empty (expected TOKEN=TENANT:SCOPE)");
        }
        let allow_unauthenticated =
            args.allow_unauthenticated || file.allow_unauthenticated.unwrap_or(false);
        if api_keys.is_empty() && !addr.ip().is_loopback() && !allow_unauthenticated {
            anyhow::bail!(
                "refusing to listen on {addr} without API keys: everyone who can reach it would \
                 be an administrator of every tenant. Add keys (--api-key TOKEN=TENANT:SCOPE, \
                 see docs/SECURITY.md), listen on a loopback address, or pass \
                 --allow-unauthenticated"
            );
        }
        let allowed_hosts = if args.allowed_hosts.is_empty() {
            file.allowed_hosts.clone().unwrap_or_default()
        } else {
            args.allowed_hosts.clone()
        };
        let defaults = Limits::default();
        let limits = Limits {
            max_body_bytes: args
                .max_body_bytes
                .or(file.max_body_bytes)
                .unwrap_or(defaults.max_body_bytes),
            max_text_chars: args
                .max_text_chars
                .or(file.max_text_chars)
                .unwrap_or(defaults.max_text_chars),
            request_timeout: args
                .request_timeout_ms
                .or(file.request_timeout_ms)
                .map(Duration::from_millis)
                .unwrap_or(defaults.request_timeout),
            body_read_timeout: args
                .body_read_timeout_ms
                .or(file.body_read_timeout_ms)
                .map(Duration::from_millis)
                .unwrap_or(defaults.body_read_timeout),
            max_concurrency: args
                .max_concurrency
                .or(file.max_concurrency)
                .unwrap_or(defaults.max_concurrency),
        };
        if limits.max_concurrency == 0 || limits.max_body_bytes == 0 || limits.max_text_chars == 0 {
            anyhow::bail!("max_concurrency, max_body_bytes and max_text_chars must be positive");
        }
        if limits.request_timeout.is_zero() || limits.body_read_timeout.is_zero() {
            anyhow::bail!("request_timeout_ms and body_read_timeout_ms must be positive");
        }
        let defaults = RetrainPolicy::default();
        let retrain = RetrainPolicy {
            after_changes: args
                .retrain_after_changes
                .or(file.retrain_after_changes)
                .unwrap_or(defaults.after_changes),
            min_interval: args
                .retrain_min_interval_secs
                .or(file.retrain_min_interval_secs)
                .map(Duration::from_secs)
                .unwrap_or(defaults.min_interval),
        };
        let mut engine = resolve_engine(&args.engine, model, &file, env);
        if let Some(n) = args.learn_min_sessions.or(file.learn_min_sessions) {
            if n == 0 {
                anyhow::bail!("learn_min_sessions must be at least 1");
            }
            engine.learn.min_sessions = n;
        }
        Ok(Config {
            addr,
            engine,
            api_keys,
            allow_unauthenticated,
            allowed_hosts,
            limits,
            retrain,
        })
    }
}

/// Parses `TOKEN=TENANT:SCOPE`. Errors never repeat the token: it is a secret.
fn parse_key(spec: &str) -> anyhow::Result<(String, ApiKey)> {
    let Some((token, grant)) = spec.split_once('=') else {
        anyhow::bail!(
            "expected TOKEN=TENANT:SCOPE (SCOPE chat, agent or admin; the default tenant is the \
             empty name: TOKEN=:chat)"
        );
    };
    let token = token.trim();
    if token.is_empty() {
        anyhow::bail!("the token is empty (expected TOKEN=TENANT:SCOPE)");
    }
    Ok((token.to_string(), parse_grant(grant)?))
}

/// Parses `TENANT:SCOPE` (the part after `TOKEN=`, or a config file value).
fn parse_grant(grant: &str) -> anyhow::Result<ApiKey> {
    let Some((tenant, scope)) = grant.rsplit_once(':') else {
        anyhow::bail!(
            "the key has no scope: write TENANT:SCOPE with SCOPE chat, agent or admin (the \
             default tenant is the empty name, e.g. `:chat`)"
        );
    };
    let scope = Scope::parse(scope).ok_or_else(|| {
        anyhow::anyhow!(
            "unknown scope `{}` (expected chat, agent or admin)",
            scope.trim()
        )
    })?;
    Ok(ApiKey {
        tenant: tenant.trim().to_string(),
        scope,
    })
}

/// Data and pack: flag, else file, else default (clap already put the
/// environment into the flags). Model and cache: flag, else environment, else
/// file, else default.
fn resolve_engine(
    args: &EngineArgs,
    model: &ModelFlags,
    file: &FileConfig,
    env: EnvLookup<'_>,
) -> EngineSettings {
    let data_dir = args
        .data_dir
        .clone()
        .or_else(|| file.data_dir.clone())
        .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
    let pack_dir = args
        .pack_dir
        .clone()
        .or_else(|| file.pack.clone())
        .unwrap_or_else(default_pack_dir);
    let named = |n: &Option<String>| n.clone().filter(|n| !n.trim().is_empty());
    let source = [
        (model.dir.clone(), named(&model.name)),
        (env(ENV_MODEL_DIR).map(PathBuf::from), env(ENV_MODEL)),
        (file.model_dir.clone(), named(&file.model)),
    ]
    .into_iter()
    .find_map(|(dir, name)| match (dir, name) {
        (Some(dir), _) => Some(models::ModelSource::Dir(dir)),
        (None, Some(name)) => Some(models::ModelSource::Named(name)),
        (None, None) => None,
    })
    .unwrap_or_else(|| models::ModelSource::Named(models::DEFAULT_MODEL.to_string()));
    let model_cache = model
        .cache
        .clone()
        .or_else(|| env(ENV_MODEL_CACHE).map(PathBuf::from))
        .or_else(|| file.model_cache.clone())
        .unwrap_or_else(models::default_cache_dir);
    EngineSettings {
        data_dir,
        pack_dir,
        model: source,
        model_cache,
        learn: triage::LearnPolicy::default(),
    }
}

/// `fixtures/demo-pack` under the working directory, else the copy in the source tree.
fn default_pack_dir() -> PathBuf {
    let local = PathBuf::from(DEFAULT_PACK_DIR);
    if local.is_dir() {
        return local;
    }
    let built_in = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(DEFAULT_PACK_DIR);
    if built_in.is_dir() {
        built_in
    } else {
        local
    }
}

impl EngineSettings {
    /// Loads the embedding model (fetching the default one if missing), wraps it
    /// in the micro-batching embedder and opens the engine on the data directory.
    pub fn open_engine(&self) -> anyhow::Result<triage::Engine> {
        let embedder = models::Embedder::load_source(
            &self.model,
            &self.model_cache,
            models::EmbedderOptions::default(),
        )
        .context("loading the embedding model")?;
        let batching = BatchingEmbedder::new(Arc::new(embedder));
        std::fs::create_dir_all(&self.data_dir)
            .with_context(|| format!("creating data directory {}", self.data_dir.display()))?;
        let cfg = triage::EngineConfig {
            learn: self.learn,
            ..triage::EngineConfig::new(self.pack_dir.clone(), self.data_dir.clone())
        };
        triage::Engine::open(cfg, Arc::new(batching)).with_context(|| {
            format!(
                "opening the engine (pack {}, data {})",
                self.pack_dir.display(),
                self.data_dir.display()
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        serve: ServeArgs,
    }

    /// The CLI's global model flags, as `cli::ModelArgs` declares them.
    #[derive(clap::Args)]
    struct GlobalModelFlags {
        #[arg(long, global = true)]
        model: Option<String>,
        #[arg(long, global = true, conflicts_with = "model")]
        model_dir: Option<PathBuf>,
        #[arg(long, global = true)]
        model_cache: Option<PathBuf>,
    }

    #[derive(Parser)]
    struct Wired {
        #[command(subcommand)]
        command: Sub,
    }

    #[derive(clap::Subcommand)]
    enum Sub {
        Serve {
            #[command(flatten)]
            serve: ServeArgs,
            #[command(flatten)]
            model: GlobalModelFlags,
        },
        Reclassify {
            #[command(flatten)]
            args: crate::reclassify::ReclassifyArgs,
            #[command(flatten)]
            model: GlobalModelFlags,
        },
    }

    #[test]
    fn flags_fit_next_to_the_cli_model_flags() {
        use clap::CommandFactory;
        Wired::command().debug_assert();
        let w = Wired::parse_from([
            "triage",
            "serve",
            "--addr",
            "127.0.0.1:0",
            "--pack",
            "p",
            "--model-dir",
            "m",
        ]);
        let Sub::Serve { serve, model } = w.command else {
            panic!("not serve")
        };
        let flags = ModelFlags {
            name: model.model,
            dir: model.model_dir,
            cache: model.model_cache,
        };
        let cfg = Config::from_args(&serve, &flags).unwrap();
        assert_eq!(cfg.engine.pack_dir, PathBuf::from("p"));
        assert_eq!(
            cfg.engine.model,
            models::ModelSource::Dir(PathBuf::from("m"))
        );
        let w = Wired::parse_from([
            "triage",
            "reclassify",
            "--in",
            "a.jsonl",
            "--out",
            "b.jsonl",
            "--data-dir",
            "d",
        ]);
        let Sub::Reclassify { args, .. } = w.command else {
            panic!("not reclassify")
        };
        assert_eq!(args.output, PathBuf::from("b.jsonl"));
        assert_eq!(args.engine.data_dir, Some(PathBuf::from("d")));
    }

    #[test]
    fn flags_override_file_and_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("triage.toml");
        std::fs::write(
            &file,
            "addr = \"127.0.0.1:9000\"\nmax_concurrency = 5\nmax_text_chars = 10\n[api_keys]\nk1 = \"acme:agent\"\n",
        )
        .unwrap();
        let cli = Cli::parse_from([
            "triage",
            "--config",
            file.to_str().unwrap(),
            "--max-concurrency",
            "7",
            "--api-key",
            "k2=globex:chat",
        ]);
        let cfg = Config::from_args(&cli.serve, &ModelFlags::default()).unwrap();
        assert_eq!(cfg.addr.port(), 9000);
        assert_eq!(cfg.limits.max_concurrency, 7);
        assert_eq!(cfg.limits.max_text_chars, 10);
        assert_eq!(cfg.limits.max_body_bytes, Limits::default().max_body_bytes);
        let key = |k: &str| cfg.api_keys.get(k).map(|g| (g.tenant.as_str(), g.scope));
        assert_eq!(key("k1"), Some(("acme", Scope::Agent)));
        assert_eq!(key("k2"), Some(("globex", Scope::Chat)));
    }

    #[test]
    fn bad_values_are_refused_with_a_message() {
        let cli = Cli::parse_from(["triage", "--api-key", "=acme:chat"]);
        let err = format!(
            "{:#}",
            Config::from_args(&cli.serve, &ModelFlags::default()).unwrap_err()
        );
        assert!(err.contains("token is empty"), "{err}");
        let cli = Cli::parse_from(["triage", "--max-concurrency", "0"]);
        assert!(Config::from_args(&cli.serve, &ModelFlags::default()).is_err());
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("bad.toml");
        std::fs::write(&file, "no_such_key = 1\n").unwrap();
        let cli = Cli::parse_from(["triage", "--config", file.to_str().unwrap()]);
        let err = format!(
            "{:#}",
            Config::from_args(&cli.serve, &ModelFlags::default()).unwrap_err()
        );
        assert!(err.contains("no_such_key"), "{err}");
    }

    /// The configuration `args` give, or its whole error chain.
    fn parse(args: &[&str]) -> Result<Config, String> {
        let cli = Cli::parse_from(std::iter::once("triage").chain(args.iter().copied()));
        Config::from_args(&cli.serve, &ModelFlags::default()).map_err(|e| format!("{e:#}"))
    }

    #[test]
    fn keys_need_a_scope_and_never_echo_the_token() {
        // Before: a bare token (or TOKEN=TENANT) silently meant the default tenant.
        for spec in [
            "s3cret-token",
            "s3cret-token=acme",
            "s3cret-token=acme:root",
        ] {
            let err = parse(&["--api-key", spec]).unwrap_err();
            assert!(
                err.contains("SCOPE") || err.contains("scope"),
                "{spec}: {err}"
            );
            assert!(
                !err.contains("s3cret"),
                "the token leaked into the error: {err}"
            );
        }
        let cfg = parse(&["--api-key", "k1=:chat,k2=acme:Agent,k3=a:b:admin"]).unwrap();
        let key = |k: &str| cfg.api_keys.get(k).map(|g| (g.tenant.clone(), g.scope));
        assert_eq!(key("k1"), Some((String::new(), Scope::Chat)));
        assert_eq!(key("k2"), Some(("acme".into(), Scope::Agent)));
        assert_eq!(key("k3"), Some(("a:b".into(), Scope::Admin)));
        assert!(Scope::Chat < Scope::Agent && Scope::Agent < Scope::Admin);
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("keys.toml");
        std::fs::write(&file, "[api_keys]\nk9 = \"acme\"\n").unwrap();
        let err = parse(&["--config", file.to_str().unwrap()]).unwrap_err();
        assert!(err.contains("no scope"), "{err}");
    }

    #[test]
    fn without_keys_only_loopback_unless_allowed_explicitly() {
        let err = parse(&["--addr", "0.0.0.0:8080"]).unwrap_err();
        assert!(err.contains("without API keys"), "{err}");
        assert!(parse(&["--addr", "0.0.0.0:8080", "--allow-unauthenticated"]).is_ok());
        assert!(parse(&["--addr", "0.0.0.0:8080", "--api-key", "k=:admin"]).is_ok());
        assert!(parse(&["--addr", "127.0.0.1:8080"]).is_ok());
        assert!(parse(&["--addr", "[::1]:8080"]).is_ok());
        let cfg = parse(&["--learn-min-sessions", "5", "--body-read-timeout-ms", "250"]).unwrap();
        assert_eq!(cfg.engine.learn.min_sessions, 5);
        assert_eq!(cfg.limits.body_read_timeout, Duration::from_millis(250));
        assert!(parse(&["--learn-min-sessions", "0"]).is_err());
    }

    /// An environment of fixed variables (tests must not depend on, or change,
    /// the process environment: tests run in parallel).
    fn fixed_env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let vars: BTreeMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k: &str| vars.get(k).cloned().filter(|v| !v.trim().is_empty())
    }

    #[test]
    fn model_flags_win_over_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("triage.toml");
        std::fs::write(&file, "model_dir = \"/from-file\"\n").unwrap();
        let cli = Cli::parse_from(["triage", "--config", file.to_str().unwrap()]);
        let no_env = fixed_env(&[]);
        let from_file =
            Config::from_args_with_env(&cli.serve, &ModelFlags::default(), &no_env).unwrap();
        assert_eq!(
            from_file.engine.model,
            models::ModelSource::Dir(PathBuf::from("/from-file"))
        );
        let flags = ModelFlags {
            dir: Some(PathBuf::from("/m")),
            ..ModelFlags::default()
        };
        let cfg = Config::from_args_with_env(&cli.serve, &flags, &no_env).unwrap();
        assert_eq!(
            cfg.engine.model,
            models::ModelSource::Dir(PathBuf::from("/m"))
        );
    }

    #[test]
    fn model_environment_beats_the_file_and_flags_beat_both() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("triage.toml");
        std::fs::write(
            &file,
            "model_dir = \"/file-model\"\nmodel_cache = \"/file-cache\"\n",
        )
        .unwrap();
        let cli = Cli::parse_from(["triage", "--config", file.to_str().unwrap()]);
        let none = ModelFlags::default();

        let cfg = Config::from_args_with_env(&cli.serve, &none, &fixed_env(&[])).unwrap();
        assert_eq!(
            cfg.engine.model,
            models::ModelSource::Dir(PathBuf::from("/file-model"))
        );
        assert_eq!(cfg.engine.model_cache, PathBuf::from("/file-cache"));

        // A model named in the environment replaces the file's model directory.
        let env = fixed_env(&[
            ("TRIAGE_MODEL", "all-MiniLM-L6-v2"),
            ("TRIAGE_MODEL_CACHE", "/env-cache"),
        ]);
        let cfg = Config::from_args_with_env(&cli.serve, &none, &env).unwrap();
        assert_eq!(
            cfg.engine.model,
            models::ModelSource::Named("all-MiniLM-L6-v2".into())
        );
        assert_eq!(cfg.engine.model_cache, PathBuf::from("/env-cache"));
        let env = fixed_env(&[("TRIAGE_MODEL_DIR", "/env-model"), ("TRIAGE_MODEL", " ")]);
        let cfg = Config::from_args_with_env(&cli.serve, &none, &env).unwrap();
        assert_eq!(
            cfg.engine.model,
            models::ModelSource::Dir(PathBuf::from("/env-model"))
        );

        // Flags beat the environment.
        let flags = ModelFlags {
            name: Some("multilingual-e5-small".into()),
            dir: None,
            cache: Some(PathBuf::from("/flag-cache")),
        };
        let env = fixed_env(&[
            ("TRIAGE_MODEL_DIR", "/env-model"),
            ("TRIAGE_MODEL_CACHE", "/env-cache"),
        ]);
        let cfg = Config::from_args_with_env(&cli.serve, &flags, &env).unwrap();
        assert_eq!(
            cfg.engine.model,
            models::ModelSource::Named("multilingual-e5-small".into())
        );
        assert_eq!(cfg.engine.model_cache, PathBuf::from("/flag-cache"));
    }

    #[test]
    fn retrain_policy_comes_from_flags_file_or_defaults() {
        let cli = Cli::parse_from(["triage"]);
        let cfg = Config::from_args(&cli.serve, &ModelFlags::default()).unwrap();
        assert_eq!(cfg.retrain, RetrainPolicy::default());
        assert_eq!(cfg.retrain.after_changes, DEFAULT_RETRAIN_AFTER_CHANGES);

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("triage.toml");
        std::fs::write(
            &file,
            "retrain_after_changes = 0\nretrain_min_interval_secs = 7\n",
        )
        .unwrap();
        let cli = Cli::parse_from(["triage", "--config", file.to_str().unwrap()]);
        let cfg = Config::from_args(&cli.serve, &ModelFlags::default()).unwrap();
        assert_eq!(cfg.retrain.after_changes, 0);
        assert_eq!(cfg.retrain.min_interval, Duration::from_secs(7));

        let cli = Cli::parse_from([
            "triage",
            "--config",
            file.to_str().unwrap(),
            "--retrain-after-changes",
            "3",
        ]);
        let cfg = Config::from_args(&cli.serve, &ModelFlags::default()).unwrap();
        assert_eq!(cfg.retrain.after_changes, 3);
        assert_eq!(cfg.retrain.min_interval, Duration::from_secs(7));
    }
}
