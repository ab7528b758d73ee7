//! The `/v1` operations, each with the key scope it needs: the one list the
//! router is built from and the scope tests walk.
//!
//! | scope | may |
//! |---|---|
//! | `chat` | deflect, the conversation's feedback, draft and ticket, the pack's taxonomy |
//! | `agent` | all of `chat`, triage, suggest, search, corrections, tickets, articles, learned phrasings |
//! | `admin` | all of `agent`, retraining, jobs and statistics of the tenant |
//!
//! Each operation's stack, outermost first: the scope check (403), the body
//! read under its deadline ([`super::guard::read_body`]), the concurrency slot
//! ([`super::middleware::shed`]), the request timeout (all but retraining,
//! which answers when done), the handler.

use axum::http::Method;
use axum::middleware::{from_fn, from_fn_with_state};
use axum::routing::{delete, get, post, put, MethodRouter};
use axum::Router;

use super::{admin, auth, chat, documents, guard, handlers, middleware, AppState};
use crate::config::Scope;

/// One `/v1` operation: method, path (under `/v1`), the scope it needs, and
/// whether the request timeout applies.
#[derive(Debug, Clone)]
pub struct Operation {
    /// HTTP method.
    pub method: Method,
    /// Path under `/v1`, with `{id}` parameters.
    pub path: &'static str,
    /// The smallest key scope that may call it.
    pub scope: Scope,
    /// Whether the request timeout applies (retraining answers when done).
    pub timed: bool,
}

/// Every `/v1` operation with its handler.
fn table() -> Vec<(Operation, MethodRouter<AppState>)> {
    use Scope::{Admin, Agent, Chat};
    let op = |method: Method, path, scope, handler| {
        (
            Operation {
                method,
                path,
                scope,
                timed: true,
            },
            handler,
        )
    };
    let mut ops = vec![
        op(Method::POST, "/deflect", Chat, post(chat::deflect)),
        op(Method::POST, "/chat/feedback", Chat, post(chat::feedback)),
        op(Method::POST, "/chat/draft", Chat, post(chat::draft)),
        op(Method::POST, "/chat/tickets", Chat, post(chat::ticket)),
        op(Method::GET, "/pack", Chat, get(handlers::pack)),
        op(Method::POST, "/triage", Agent, post(handlers::triage)),
        op(Method::POST, "/suggest", Agent, post(handlers::suggest)),
        op(Method::POST, "/search", Agent, post(handlers::search)),
        op(Method::POST, "/feedback", Agent, post(handlers::feedback)),
        op(
            Method::PUT,
            "/tickets/{id}",
            Agent,
            put(documents::put_ticket),
        ),
        op(
            Method::GET,
            "/tickets/{id}",
            Agent,
            get(documents::get_ticket),
        ),
        op(
            Method::DELETE,
            "/tickets/{id}",
            Agent,
            delete(documents::delete_ticket),
        ),
        op(
            Method::PUT,
            "/articles/{id}",
            Agent,
            put(documents::put_article),
        ),
        op(
            Method::GET,
            "/articles/{id}",
            Agent,
            get(documents::get_article),
        ),
        op(
            Method::DELETE,
            "/articles/{id}",
            Agent,
            delete(documents::delete_article),
        ),
        op(Method::GET, "/learned", Agent, get(documents::list_learned)),
        op(
            Method::POST,
            "/learned/{id}/approve",
            Agent,
            post(documents::approve_learned),
        ),
        op(
            Method::DELETE,
            "/learned/{id}",
            Agent,
            delete(documents::remove_learned),
        ),
        op(
            Method::POST,
            "/jobs/reclassify",
            Admin,
            post(documents::submit_reclassify),
        ),
        op(Method::GET, "/jobs/{id}", Admin, get(documents::job_status)),
        op(
            Method::DELETE,
            "/jobs/{id}",
            Admin,
            delete(documents::cancel_job),
        ),
        op(
            Method::GET,
            "/jobs/{id}/labels",
            Admin,
            get(documents::job_labels),
        ),
        op(Method::GET, "/admin/stats", Admin, get(admin::stats)),
    ];
    ops.push((
        Operation {
            method: Method::POST,
            path: "/admin/retrain",
            scope: Admin,
            timed: false,
        },
        post(admin::retrain),
    ));
    ops
}

/// The `/v1` operations (method, path, scope), in the order they are routed.
pub fn operations() -> Vec<Operation> {
    table().into_iter().map(|(op, _)| op).collect()
}

/// The `/v1` router: every operation behind its own stack (see the module docs).
pub fn v1(state: &AppState) -> Router<AppState> {
    let mut by_path: std::collections::BTreeMap<&'static str, MethodRouter<AppState>> =
        std::collections::BTreeMap::new();
    for (op, handler) in table() {
        let scope = op.scope;
        let mut handler = handler;
        if op.timed {
            handler = handler.route_layer(from_fn_with_state(state.clone(), middleware::timeout));
        }
        let handler = handler
            .route_layer(from_fn_with_state(state.clone(), middleware::shed))
            .route_layer(from_fn_with_state(state.clone(), guard::read_body))
            .route_layer(from_fn(move |req, next| auth::require(scope, req, next)));
        let merged = match by_path.remove(op.path) {
            Some(existing) => existing.merge(handler),
            None => handler,
        };
        by_path.insert(op.path, merged);
    }
    by_path
        .into_iter()
        .fold(Router::new(), |router, (path, handler)| {
            router.route(path, handler)
        })
}
