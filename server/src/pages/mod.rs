//! The pages served by the binary: `/chat` (customer self-service), `/agent`
//! (agent side panel) and `/insights` (the dashboard). Plain HTML, CSS and
//! JavaScript embedded with `include_str!`: no build step, no external
//! requests. One library is vendored, uPlot (`assets/vendor/`, MIT), for the
//! dashboard's charts.

use axum::http::header;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;

use crate::http::AppState;

const CHAT_HTML: &str = include_str!("assets/chat.html");
const AGENT_HTML: &str = include_str!("assets/agent.html");
const APP_CSS: &str = include_str!("assets/app.css");
const COMMON_JS: &str = include_str!("assets/common.js");
const CHAT_JS: &str = include_str!("assets/chat.js");
const AGENT_JS: &str = include_str!("assets/agent.js");
const INSIGHTS_HTML: &str = include_str!("assets/insights.html");
const INSIGHTS_JS: &str = include_str!("assets/insights.js");
const UPLOT_JS: &str = include_str!("assets/vendor/uPlot.iife.min.js");
const UPLOT_CSS: &str = include_str!("assets/vendor/uPlot.min.css");

/// What the pages may load and who may frame them: only their own scripts,
/// styles and API, no inline code, never inside another site's frame.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

/// Routes of the pages and their assets, each answer with the security headers.
pub fn routes() -> Router<AppState> {
    use axum::http::HeaderValue;
    use tower_http::set_header::SetResponseHeaderLayer;
    let header = |name, value: &'static str| {
        SetResponseHeaderLayer::overriding(name, HeaderValue::from_static(value))
    };
    Router::new()
        .route("/", get(|| async { Redirect::to("/chat") }))
        .route("/chat", get(|| async { Html(CHAT_HTML) }))
        .route("/agent", get(|| async { Html(AGENT_HTML) }))
        .route("/insights", get(|| async { Html(INSIGHTS_HTML) }))
        .route(
            "/assets/app.css",
            get(|| async { asset("text/css", APP_CSS) }),
        )
        .route("/assets/common.js", get(|| async { asset(JS, COMMON_JS) }))
        .route("/assets/chat.js", get(|| async { asset(JS, CHAT_JS) }))
        .route("/assets/agent.js", get(|| async { asset(JS, AGENT_JS) }))
        .route(
            "/assets/insights.js",
            get(|| async { asset(JS, INSIGHTS_JS) }),
        )
        .route(
            "/assets/vendor/uPlot.iife.min.js",
            get(|| async { asset(JS, UPLOT_JS) }),
        )
        .route(
            "/assets/vendor/uPlot.min.css",
            get(|| async { asset("text/css", UPLOT_CSS) }),
        )
        .layer(header(header::CONTENT_SECURITY_POLICY, CSP))
        .layer(header(header::X_FRAME_OPTIONS, "DENY"))
        .layer(header(header::REFERRER_POLICY, "no-referrer"))
}

const JS: &str = "text/javascript";

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}
