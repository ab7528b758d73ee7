//! The HTTP service: JSON API under `/v1`, health and metrics, and the pages.
//!
//! [`serve`] binds the address, answers `/healthz` at once and loads the model
//! and index in the background (`/readyz` turns 200 when done), then serves
//! until SIGINT/SIGTERM, finishing in-flight requests and stopping background
//! jobs at a resumable point. [`router`] builds the same service in-process
//! for tests. Every `/v1` route declares the key scope it needs
//! ([`routes::operations`]; see docs/SECURITY.md). Engine calls run on tokio's
//! blocking pool, never on the async workers; embedding calls are
//! micro-batched by [`batch::BatchingEmbedder`]. The engine counts each
//! tenant's labelled changes, and the classifiers are retrained in the
//! background or on `POST /v1/admin/retrain` ([`retrain`]).

mod admin;
pub mod auth;
pub mod batch;
mod chat;
mod documents;
pub mod error;
mod extract;
mod guard;
mod handlers;
pub mod jobs;
pub mod listen;
pub mod metrics;
mod middleware;
mod openapi;
mod ops;
pub mod retrain;
mod routes;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock};

use anyhow::Context;
use axum::Router;
use tokio::sync::Semaphore;
use triage::Engine;

use crate::config::{ApiKey, Config, Limits};
use error::{ApiError, ApiResult};
use jobs::Jobs;
use metrics::Metrics;
use retrain::Retrainer;

pub use auth::Caller;

/// Shared state of the service; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Shared>,
}

struct Shared {
    engine: OnceLock<Arc<Engine>>,
    load_error: Mutex<Option<String>>,
    limits: Limits,
    api_keys: BTreeMap<String, ApiKey>,
    allowed_hosts: Vec<String>,
    permits: Arc<Semaphore>,
    metrics: Metrics,
    jobs: Jobs,
    retrainer: Arc<Retrainer>,
    connections: Arc<listen::ConnStats>,
    data_dir: std::path::PathBuf,
}

impl AppState {
    /// State for `cfg` with no engine yet: `/v1` answers 503 until [`AppState::set_engine`].
    pub fn new(cfg: &Config) -> Self {
        AppState {
            inner: Arc::new(Shared {
                engine: OnceLock::new(),
                load_error: Mutex::new(None),
                limits: cfg.limits.clone(),
                api_keys: cfg.api_keys.clone(),
                allowed_hosts: cfg.allowed_hosts.clone(),
                permits: Arc::new(Semaphore::new(cfg.limits.max_concurrency)),
                metrics: Metrics::default(),
                jobs: Jobs::new(&cfg.engine.data_dir),
                retrainer: Arc::new(Retrainer::new(cfg.retrain.clone())),
                connections: Arc::new(listen::ConnStats::default()),
                data_dir: cfg.engine.data_dir.clone(),
            }),
        }
    }

    /// Installs the loaded engine (which trained its classifiers while
    /// opening) and starts the background job worker.
    pub fn set_engine(&self, engine: Arc<Engine>) {
        if self.inner.engine.set(Arc::clone(&engine)).is_ok() {
            self.inner.retrainer.engine_loaded();
            self.inner.jobs.start(engine);
        }
    }

    /// Starts the background retrain task ([`retrain::background`]) on the
    /// current tokio runtime; it waits for the engine, and runs until aborted.
    pub fn start_background_retrain(&self) -> tokio::task::JoinHandle<()> {
        tokio::spawn(retrain::background(self.clone()))
    }

    /// Records why the engine could not be loaded (shown by `/readyz`).
    fn set_load_error(&self, message: String) {
        if let Ok(mut e) = self.inner.load_error.lock() {
            *e = Some(message);
        }
    }

    /// The engine, or 503 while it is loading.
    fn engine(&self) -> ApiResult<Arc<Engine>> {
        match self.inner.engine.get() {
            Some(e) => Ok(Arc::clone(e)),
            None => {
                let why = self
                    .inner
                    .load_error
                    .lock()
                    .ok()
                    .and_then(|e| e.clone())
                    .unwrap_or_else(|| "the model and index are still loading".into());
                Err(ApiError::NotReady(why))
            }
        }
    }

    /// Runs `f` with the engine on the blocking pool (never on an async worker).
    async fn run<T, F>(&self, f: F) -> ApiResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Engine) -> ApiResult<T> + Send + 'static,
    {
        let engine = self.engine()?;
        self.blocking(move || f(&engine)).await?
    }

    /// Runs `f` on the blocking pool, holding the request's concurrency slot
    /// (if any) until `f` returns, even when the request times out first.
    async fn blocking<T, F>(&self, f: F) -> ApiResult<T>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let slot = middleware::current_slot();
        tokio::task::spawn_blocking(move || {
            let _slot = slot;
            f()
        })
        .await
        .map_err(|e| {
            if e.is_panic() {
                ApiError::Internal("the engine panicked while handling this request".into())
            } else {
                ApiError::Internal("the request was cancelled".into())
            }
        })
    }

    fn limits(&self) -> &Limits {
        &self.inner.limits
    }

    fn api_keys(&self) -> &BTreeMap<String, ApiKey> {
        &self.inner.api_keys
    }

    fn allowed_hosts(&self) -> &[String] {
        &self.inner.allowed_hosts
    }

    fn permits(&self) -> Arc<Semaphore> {
        Arc::clone(&self.inner.permits)
    }

    fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    fn jobs(&self) -> &Jobs {
        &self.inner.jobs
    }

    fn retrainer(&self) -> Arc<Retrainer> {
        Arc::clone(&self.inner.retrainer)
    }

    fn connections(&self) -> Arc<listen::ConnStats> {
        Arc::clone(&self.inner.connections)
    }

    fn data_dir(&self) -> &std::path::Path {
        &self.inner.data_dir
    }
}

/// The whole service: `/v1` API (authenticated, scoped per route, read, shed,
/// timed out), health, metrics, OpenAPI and pages, all counted in `/metrics`
/// and checked by [`guard::check_request`].
pub fn router(state: AppState) -> Router {
    use axum::middleware::{from_fn, from_fn_with_state as mw};
    let v1 = routes::v1(&state)
        .layer(mw(state.clone(), auth::authenticate))
        .layer(from_fn(guard::same_origin));
    Router::new()
        .nest("/v1", v1)
        .merge(routes::public())
        .merge(crate::pages::routes())
        .fallback(ops::not_found)
        .method_not_allowed_fallback(ops::method_not_allowed)
        .layer(mw(state.clone(), middleware::track))
        .layer(mw(state.clone(), guard::check_request))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            ops::panic_response,
        ))
        .with_state(state)
}

/// Runs the service until SIGINT/SIGTERM: binds, loads the engine in the
/// background, serves, then drains in-flight requests and stops jobs at a
/// resumable point. Fails (after stopping the listener) when the engine
/// cannot be loaded.
pub async fn serve(cfg: Config) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(cfg.addr)
        .await
        .with_context(|| format!("binding {}", cfg.addr))?;
    let local = listener.local_addr().context("reading the bound address")?;
    tracing::info!(
        "listening on http://{local} (pages: /chat, /agent; API: /v1, /v1/openapi.json)"
    );
    if cfg.api_keys.is_empty() {
        tracing::warn!(
            "no API keys configured: every caller that reaches http://{local} is an administrator \
             of every tenant{}; add keys (--api-key TOKEN=TENANT:SCOPE) before exposing the \
             service (see docs/SECURITY.md)",
            if cfg.allow_unauthenticated && !local.ip().is_loopback() {
                " (--allow-unauthenticated)"
            } else {
                " (listening on loopback only)"
            }
        );
    }
    // Machine-readable line for scripts and tests that bind port 0.
    println!("triage: listening on http://{local}");
    serve_on(listener, cfg, shutdown_signal()).await
}

/// [`serve`] on a bound listener, until `shutdown` resolves.
async fn serve_on(
    listener: tokio::net::TcpListener,
    cfg: Config,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let state = AppState::new(&cfg);
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let (loaded_tx, loaded_rx) = tokio::sync::oneshot::channel::<anyhow::Result<()>>();
    let loader_state = state.clone();
    let settings = cfg.engine.clone();
    // A plain thread, not the blocking pool: a model download in progress must
    // not hold the runtime open after a shutdown signal.
    std::thread::Builder::new()
        .name("engine-loader".into())
        .spawn(move || {
            let started = std::time::Instant::now();
            let result = settings.open_engine().map(|engine| {
                loader_state.set_engine(Arc::new(engine));
                tracing::info!("engine ready in {:.1}s", started.elapsed().as_secs_f64());
            });
            if let Err(e) = &result {
                tracing::error!("cannot start the engine: {e:#}");
                loader_state.set_load_error(format!("{e:#}"));
            }
            let _ = loaded_tx.send(result);
        })
        .context("starting the engine loader thread")?;
    let load_watch = tokio::spawn(async move {
        let result = loaded_rx
            .await
            .unwrap_or_else(|_| Err(anyhow::anyhow!("the engine loader stopped unexpectedly")));
        if result.is_err() {
            let _ = stop.send(true);
        }
        result
    });

    let load_failed = async move {
        // Resolves only when the loader reports a failure (not when it succeeds).
        while stopped.changed().await.is_ok() {
            if *stopped.borrow() {
                return;
            }
        }
        std::future::pending::<()>().await;
    };
    let until = async move {
        tokio::select! {
            () = shutdown => tracing::info!("shutdown signal received: finishing in-flight requests"),
            () = load_failed => {},
        }
    };
    let retrain_task = state.start_background_retrain();
    // Slow heads and idle keep-alives end at the header deadline and slow
    // bodies at the body deadline; the socket's idle timer is the backstop for
    // clients that stop reading. It also runs while a handler works, so it
    // stays well above the request timeout and a retrain (which is not timed out).
    let limits = listen::ConnLimits {
        idle_timeout: std::time::Duration::from_secs(300)
            .max(cfg.limits.request_timeout + std::time::Duration::from_secs(10)),
        ..listen::ConnLimits::default()
    };
    let served = listen::serve(
        listener,
        router(state.clone()),
        limits,
        state.connections(),
        until,
    )
    .await
    .context("serving HTTP");
    retrain_task.abort();
    served?;
    if state.retrainer().running() {
        tracing::info!("waiting for the retrain in progress to finish");
    }

    let jobs_state = state.clone();
    tokio::task::spawn_blocking(move || jobs_state.jobs().shutdown())
        .await
        .context("stopping background jobs")?;
    if load_watch.is_finished() {
        load_watch
            .await
            .context("waiting for the engine loader")??;
    }
    tracing::info!("stopped cleanly");
    Ok(())
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::warn!("cannot listen for Ctrl-C: {e}");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!("cannot listen for SIGTERM: {e}");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

#[cfg(test)]
mod tests;
