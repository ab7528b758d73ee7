//! The service's settings, each declared once.
//!
//! Every setting is one field of [`ServeOptions`] (or of the [`EngineOptions`]
//! and [`ModelOptions`] it shares with other subcommands): its doc comment is
//! its `--help` text, its attributes give the flag, the environment variable
//! and the default, and its name is its key in the optional TOML file
//! (`--config`). Values come, in order of precedence, from command-line
//! flags, environment variables, the file, then the defaults; [`Sourced`]
//! remembers which of them set each value, so the file fills in exactly what
//! neither a flag nor the environment set, and the model source is chosen in
//! one place ([`model_source`]). The one exception is `[api_keys]` (token =
//! "tenant:scope", scope `chat`, `agent` or `admin`; the default tenant is the
//! empty name, `":chat"`): keys add up across the file and `--api-key`.
//!
//! The parsed options are turned into the typed [`Config`] (limits, retrain
//! policy, engine settings) and checked there.
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
use clap::parser::ValueSource;
use clap::{ArgMatches, Args, FromArgMatches};
use models::BatchingEmbedder;
use serde::{Deserialize, Serialize};

pub use crate::services::adapt::DEFAULT_ADAPT_THREADS;
pub use crate::services::retrain::{
    RetrainPolicy, DEFAULT_RETRAIN_AFTER_CHANGES, DEFAULT_RETRAIN_MIN_INTERVAL_SECS,
};

/// Default listen address (`triage serve` with no arguments).
pub const DEFAULT_ADDR: &str = "127.0.0.1:8080";
/// Default data directory, relative to the working directory.
pub const DEFAULT_DATA_DIR: &str = "data";
/// Default pack, relative to the working directory (falls back to the source tree's copy).
pub const DEFAULT_PACK_DIR: &str = "fixtures/demo-pack";
/// Default largest request body, in bytes.
pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;
/// Default longest text field, in characters.
pub const DEFAULT_MAX_TEXT_CHARS: usize = 20_000;
/// Default request timeout, in milliseconds.
pub const DEFAULT_REQUEST_TIMEOUT_MS: u64 = 30_000;
/// Default time a client may take to send a body, in milliseconds.
pub const DEFAULT_BODY_READ_TIMEOUT_MS: u64 = 10_000;
/// Default number of requests in flight before shedding.
pub const DEFAULT_MAX_CONCURRENCY: usize = 64;

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

/// Where one setting's value came from, lowest precedence first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Origin {
    /// Nothing set it: the default (or none).
    Default,
    /// The TOML file.
    File,
    /// An environment variable.
    Env,
    /// A command-line flag.
    Flag,
}

/// Clap options together with where each value came from (flag,
/// environment or default), by field name. Dereferences to the options.
#[derive(Debug, Clone, Default)]
pub struct Sourced<T> {
    /// The parsed options.
    pub value: T,
    origins: BTreeMap<String, Origin>,
}

impl<T> Sourced<T> {
    /// Where the value of field `id` came from.
    pub fn origin(&self, id: &str) -> Origin {
        self.origins.get(id).copied().unwrap_or(Origin::Default)
    }
}

impl<T> std::ops::Deref for Sourced<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

impl<T: FromArgMatches> FromArgMatches for Sourced<T> {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        let value = T::from_arg_matches(matches)?;
        let origins = matches
            .ids()
            .filter_map(|id| {
                let origin = match matches.value_source(id.as_str())? {
                    ValueSource::CommandLine => Origin::Flag,
                    ValueSource::EnvVariable => Origin::Env,
                    _ => Origin::Default,
                };
                Some((id.to_string(), origin))
            })
            .collect();
        Ok(Sourced { value, origins })
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(matches)?;
        Ok(())
    }
}

impl<T: Args> Args for Sourced<T> {
    fn group_id() -> Option<clap::Id> {
        T::group_id()
    }
    fn augment_args(cmd: clap::Command) -> clap::Command {
        T::augment_args(cmd)
    }
    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        T::augment_args_for_update(cmd)
    }
}

/// Which embedding model to use; shared by every subcommand that embeds.
#[derive(Debug, Clone, Default, clap::Args, Serialize, Deserialize)]
pub struct ModelOptions {
    /// A known model name [default: multilingual-e5-small].
    #[arg(long, global = true, env = "TRIAGE_MODEL")]
    pub model: Option<String>,
    /// A local HuggingFace-layout BERT-family model directory (wins over a
    /// model name given at the same level: both flags, both variables, or
    /// both file keys).
    #[arg(long, global = true, env = "TRIAGE_MODEL_DIR")]
    pub model_dir: Option<PathBuf>,
    /// Model cache directory [default: the user's cache dir].
    #[arg(long, global = true, env = "TRIAGE_MODEL_CACHE")]
    pub model_cache: Option<PathBuf>,
}

/// [`ModelOptions`] with the origin of each value, as subcommands take them.
pub type ModelArgs = Sourced<ModelOptions>;

/// The data directory and pack; shared by `serve` and `reclassify`.
#[derive(Debug, Clone, Default, clap::Args, Serialize, Deserialize)]
pub struct EngineOptions {
    /// Data directory holding the index.
    #[arg(long, env = "TRIAGE_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
    /// Tenant pack directory [default: fixtures/demo-pack].
    #[arg(long, env = "TRIAGE_PACK")]
    pub pack: Option<PathBuf>,
}

/// Settings of `triage serve`, each declared once (see the module docs).
#[derive(Debug, Clone, clap::Args, Serialize, Deserialize)]
pub struct ServeOptions {
    /// Data directory and pack.
    #[command(flatten)]
    #[serde(flatten)]
    pub engine: EngineOptions,
    /// The embedding model.
    #[command(flatten)]
    #[serde(flatten)]
    pub model: ModelOptions,
    /// Optional TOML settings file; its keys are these settings' names
    /// (`max_concurrency = 8`), plus an `[api_keys]` table.
    #[arg(long, env = "TRIAGE_CONFIG")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Listen address, HOST:PORT (port 0 picks a free one).
    #[arg(long, env = "TRIAGE_ADDR", default_value = DEFAULT_ADDR)]
    pub addr: SocketAddr,
    /// API key as TOKEN=TENANT:SCOPE, SCOPE one of chat, agent, admin; the
    /// default tenant is the empty name (`TOKEN=:chat`). Repeatable, or
    /// comma-separated in the env var. With any key set, every /v1 route
    /// requires `Authorization: Bearer TOKEN` of a sufficient scope.
    #[arg(long = "api-key", env = "TRIAGE_API_KEYS", value_delimiter = ',')]
    #[serde(skip)]
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
    /// milliseconds: slow senders are answered 408 and never hold a
    /// concurrency slot while they send.
    #[arg(long, env = "TRIAGE_BODY_READ_TIMEOUT_MS", default_value_t = DEFAULT_BODY_READ_TIMEOUT_MS)]
    pub body_read_timeout_ms: u64,
    /// Chat sessions that must agree ("this helped") before a phrasing
    /// learned from customers answers other customers.
    #[arg(long, env = "TRIAGE_LEARN_MIN_SESSIONS", default_value_t = triage::LearnPolicy::default().min_sessions)]
    pub learn_min_sessions: usize,
    /// Largest accepted request body in bytes.
    #[arg(long, env = "TRIAGE_MAX_BODY_BYTES", default_value_t = DEFAULT_MAX_BODY_BYTES)]
    pub max_body_bytes: usize,
    /// Longest accepted text field in characters.
    #[arg(long, env = "TRIAGE_MAX_TEXT_CHARS", default_value_t = DEFAULT_MAX_TEXT_CHARS)]
    pub max_text_chars: usize,
    /// Per-request timeout in milliseconds, body reading excluded.
    #[arg(long, env = "TRIAGE_REQUEST_TIMEOUT_MS", default_value_t = DEFAULT_REQUEST_TIMEOUT_MS)]
    pub request_timeout_ms: u64,
    /// Requests in flight before new ones are shed with 503.
    #[arg(long, env = "TRIAGE_MAX_CONCURRENCY", default_value_t = DEFAULT_MAX_CONCURRENCY)]
    pub max_concurrency: usize,
    /// Retrain the classifiers in the background once this many labelled
    /// changes (ticket writes, corrections) of a tenant are pending (0 = never).
    #[arg(long, env = "TRIAGE_RETRAIN_AFTER_CHANGES", default_value_t = DEFAULT_RETRAIN_AFTER_CHANGES)]
    pub retrain_after_changes: u64,
    /// Shortest time between two trainings of a tenant, in seconds.
    #[arg(long, env = "TRIAGE_RETRAIN_MIN_INTERVAL_SECS", default_value_t = DEFAULT_RETRAIN_MIN_INTERVAL_SECS)]
    pub retrain_min_interval_secs: u64,
    /// Threads an encoder adaptation (`POST /v1/admin/adapt`) trains on;
    /// the default leaves the other cores of a small machine to requests.
    #[arg(long, env = "TRIAGE_ADAPT_THREADS", default_value_t = DEFAULT_ADAPT_THREADS)]
    pub adapt_threads: usize,
}

/// [`ServeOptions`] with the origin of each value, as `triage serve` takes them.
pub type ServeArgs = Sourced<ServeOptions>;

/// The model source: of `model_dir` and `model`, the one set at the higher
/// level (flag > environment > file), the directory when both are at the
/// same level; blank values count as unset; else the default model. Both
/// given as flags is an error.
pub fn model_source(
    model: &ModelOptions,
    origin: impl Fn(&str) -> Origin,
) -> anyhow::Result<models::ModelSource> {
    let name = model.model.clone().filter(|n| !n.trim().is_empty());
    let dir = model
        .model_dir
        .clone()
        .filter(|d| !d.as_os_str().to_string_lossy().trim().is_empty());
    let (name_at, dir_at) = (origin("model"), origin("model_dir"));
    Ok(match (dir, name) {
        (Some(_), Some(_)) if name_at == Origin::Flag && dir_at == Origin::Flag => {
            anyhow::bail!("--model and --model-dir cannot be used together")
        }
        (Some(_), Some(name)) if name_at > dir_at => models::ModelSource::Named(name),
        (Some(dir), _) => models::ModelSource::Dir(dir),
        (None, Some(name)) => models::ModelSource::Named(name),
        (None, None) => models::ModelSource::Named(models::DEFAULT_MODEL.to_string()),
    })
}

impl ModelArgs {
    /// The chosen model ([`model_source`]).
    pub fn source(&self) -> anyhow::Result<models::ModelSource> {
        model_source(self, |id| self.origin(id))
    }

    /// The model cache directory (flag, environment, else the default).
    pub fn cache(&self) -> PathBuf {
        self.model_cache
            .clone()
            .unwrap_or_else(models::default_cache_dir)
    }

    /// Loads the chosen model, fetching the default one on first use.
    pub fn load(&self) -> anyhow::Result<Arc<dyn models::TextEmbedder>> {
        use models::TextEmbedder;
        let embedder = models::Embedder::load_source(
            &self.source()?,
            &self.cache(),
            models::EmbedderOptions::default(),
        )?;
        tracing::info!(
            model = embedder.name(),
            dim = embedder.dim(),
            "model loaded"
        );
        Ok(Arc::new(embedder))
    }

    /// The engine settings for `engine` and this model (defaults for the
    /// rest); for commands without a settings file.
    pub fn engine_settings(&self, engine: &EngineOptions) -> anyhow::Result<EngineSettings> {
        Ok(EngineSettings {
            data_dir: engine.data_dir.clone(),
            pack_dir: engine.pack.clone().unwrap_or_else(default_pack_dir),
            model: self.source()?,
            model_cache: self.cache(),
            learn: triage::LearnPolicy::default(),
        })
    }
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
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            max_text_chars: DEFAULT_MAX_TEXT_CHARS,
            request_timeout: Duration::from_millis(DEFAULT_REQUEST_TIMEOUT_MS),
            body_read_timeout: Duration::from_millis(DEFAULT_BODY_READ_TIMEOUT_MS),
            max_concurrency: DEFAULT_MAX_CONCURRENCY,
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
    /// Host names requests may be addressed to (empty: see [`ServeOptions::allowed_hosts`]).
    pub allowed_hosts: Vec<String>,
    /// Request limits.
    pub limits: Limits,
    /// Background retraining of the classifiers.
    pub retrain: RetrainPolicy,
    /// Threads an encoder adaptation trains on.
    pub adapt_threads: usize,
}

/// The settings `args` and the file they name give, with the origin of each:
/// the file fills in what neither a flag nor the environment set. Returns
/// also the file's `[api_keys]` table.
fn merge_file(args: &ServeArgs) -> anyhow::Result<(ServeArgs, BTreeMap<String, String>)> {
    let mut merged = args.clone();
    let Some(path) = &args.config else {
        return Ok((merged, BTreeMap::new()));
    };
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading config file {}", path.display()))?;
    let mut file: toml::Table =
        toml::from_str(&text).with_context(|| format!("parsing config file {}", path.display()))?;
    let keys = match file.remove("api_keys") {
        Some(table) => table
            .try_into::<BTreeMap<String, String>>()
            .with_context(|| {
                format!(
                    "config file {}: [api_keys] must map tokens to \"tenant:scope\"",
                    path.display()
                )
            })?,
        None => BTreeMap::new(),
    };
    let mut values = match serde_json::to_value(&args.value)? {
        serde_json::Value::Object(map) => map,
        _ => anyhow::bail!("the settings are not a JSON object"),
    };
    for (key, value) in file {
        if !values.contains_key(&key) {
            anyhow::bail!("config file {}: unknown key `{key}`", path.display());
        }
        if args.origin(&key) >= Origin::Env {
            continue;
        }
        values.insert(key.clone(), serde_json::to_value(value)?);
        merged.value = serde_json::from_value(serde_json::Value::Object(values.clone()))
            .with_context(|| format!("config file {}: key `{key}`", path.display()))?;
        merged.origins.insert(key, Origin::File);
    }
    merged.value.config = args.config.clone();
    merged.value.api_keys = args.api_keys.clone();
    Ok((merged, keys))
}

impl Config {
    /// Builds the configuration from flags, environment, the optional TOML
    /// file and defaults, and checks it.
    pub fn from_args(args: &ServeArgs) -> anyhow::Result<Config> {
        let (merged, file_keys) = merge_file(args)?;
        let o = &merged.value;
        let addr = o.addr;
        let mut api_keys = BTreeMap::new();
        for (n, (token, grant)) in file_keys.iter().enumerate() {
            let key = parse_grant(grant)
                .with_context(|| format!("[api_keys] entry {} of the config file", n + 1))?;
            api_keys.insert(token.trim().to_string(), key);
        }
        for (n, spec) in o.api_keys.iter().enumerate() {
            let (token, key) =
                parse_key(spec).with_context(|| format!("--api-key number {}", n + 1))?;
            api_keys.insert(token, key);
        }
        if api_keys.keys().any(|t| t.trim().is_empty()) {
            anyhow::bail!("an API key's token is empty (expected TOKEN=TENANT:SCOPE)");
        }
        if api_keys.is_empty() && !o.allow_unauthenticated && !addr.ip().is_loopback() {
            anyhow::bail!(
                "refusing to listen on {addr} without API keys: everyone who can reach it would \
                 be an administrator of every tenant. Add keys (--api-key TOKEN=TENANT:SCOPE, \
                 see docs/SECURITY.md), listen on a loopback address, or pass \
                 --allow-unauthenticated"
            );
        }
        let limits = Limits {
            max_body_bytes: o.max_body_bytes,
            max_text_chars: o.max_text_chars,
            request_timeout: Duration::from_millis(o.request_timeout_ms),
            body_read_timeout: Duration::from_millis(o.body_read_timeout_ms),
            max_concurrency: o.max_concurrency,
        };
        if limits.max_concurrency == 0 || limits.max_body_bytes == 0 || limits.max_text_chars == 0 {
            anyhow::bail!("max_concurrency, max_body_bytes and max_text_chars must be positive");
        }
        if limits.request_timeout.is_zero() || limits.body_read_timeout.is_zero() {
            anyhow::bail!("request_timeout_ms and body_read_timeout_ms must be positive");
        }
        if o.learn_min_sessions == 0 {
            anyhow::bail!("learn_min_sessions must be at least 1");
        }
        let engine = EngineSettings {
            data_dir: o.engine.data_dir.clone(),
            pack_dir: o.engine.pack.clone().unwrap_or_else(default_pack_dir),
            model: model_source(&o.model, |id| merged.origin(id))?,
            model_cache: o
                .model
                .model_cache
                .clone()
                .unwrap_or_else(models::default_cache_dir),
            learn: triage::LearnPolicy {
                min_sessions: o.learn_min_sessions,
            },
        };
        Ok(Config {
            addr,
            engine,
            api_keys,
            allow_unauthenticated: o.allow_unauthenticated,
            allowed_hosts: o.allowed_hosts.clone(),
            limits,
            retrain: RetrainPolicy {
                after_changes: o.retrain_after_changes,
                min_interval: Duration::from_secs(o.retrain_min_interval_secs),
            },
            adapt_threads: o.adapt_threads.max(1),
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
mod tests;
