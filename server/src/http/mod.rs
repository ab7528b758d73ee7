//! The HTTP adapter: JSON API under `/v1`, health and metrics, and the pages.
//!
//! [`app`] builds the whole service as one axum [`Router`] over an
//! [`AppState`]; `crate::serve` runs it on a socket, and the in-process tests
//! drive it with `tower::ServiceExt::oneshot`. Handlers are thin: typed
//! extractors ([`extract`]), checks of the request's limits, one engine or
//! service call, one error type ([`error::ApiError`]). Every `/v1` route
//! declares the key scope it needs ([`routes::operations`]; see
//! docs/SECURITY.md). Engine calls run on tokio's blocking pool, never on the
//! async workers. What is not HTTP lives elsewhere: the embedding
//! micro-batcher in `models` ([`models::BatchingEmbedder`]), the job store and
//! the retrain scheduler in [`crate::services`]; the engine itself counts each
//! tenant's labelled changes where they are written.

mod admin;
pub mod auth;
mod chat;
mod documents;
pub mod error;
mod extract;
mod guard;
mod handlers;
pub mod listen;
pub mod metrics;
mod middleware;
mod openapi;
mod ops;
mod routes;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock};

use axum::Router;
use tokio::sync::Semaphore;
use triage::Engine;

use crate::config::{ApiKey, Config, Limits};
use crate::services::adapt::Adaptations;
use crate::services::jobs::Jobs;
use crate::services::retrain::{self, Retrainer};
use error::{ApiError, ApiResult};
use metrics::Metrics;

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
    adaptations: Arc<Adaptations>,
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
                adaptations: Arc::new(Adaptations::new(cfg.adapt_threads)),
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
        let state = self.clone();
        tokio::spawn(retrain::background(self.retrainer(), move || {
            state.engine().ok()
        }))
    }

    /// Records why the engine could not be loaded (shown by `/readyz`).
    pub(crate) fn set_load_error(&self, message: String) {
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

    pub(crate) fn jobs(&self) -> &Jobs {
        &self.inner.jobs
    }

    pub(crate) fn retrainer(&self) -> Arc<Retrainer> {
        Arc::clone(&self.inner.retrainer)
    }

    pub(crate) fn adaptations(&self) -> Arc<Adaptations> {
        Arc::clone(&self.inner.adaptations)
    }

    pub(crate) fn connections(&self) -> Arc<listen::ConnStats> {
        Arc::clone(&self.inner.connections)
    }

    fn data_dir(&self) -> &std::path::Path {
        &self.inner.data_dir
    }
}

/// The whole service: `/v1` API (authenticated, scoped per route, read, shed,
/// timed out), health, metrics, OpenAPI and pages, all counted in `/metrics`
/// and checked by [`guard::check_request`].
pub fn app(state: AppState) -> Router {
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

#[cfg(test)]
mod tests;
