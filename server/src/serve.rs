//! Running the service on a socket: bind, answer `/healthz` at once, load the
//! model and index in the background (`/readyz` turns 200 when done), serve
//! [`crate::app`] until SIGINT/SIGTERM, then finish in-flight requests and
//! stop background jobs at a resumable point.

use std::sync::Arc;

use anyhow::Context;

use crate::config::Config;
use crate::http::{app, listen, AppState};

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
pub(crate) async fn serve_on(
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
    let insights_task = state.start_background_insights();
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
        app(state.clone()),
        limits,
        state.connections(),
        until,
    )
    .await
    .context("serving HTTP");
    retrain_task.abort();
    insights_task.abort();
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
