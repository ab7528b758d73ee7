//! The `/v1` operations, each with the key scope it needs: the one list the
//! router and the OpenAPI document ([`super::openapi`]) are built from, and
//! the scope tests walk. Each handler's method, path, body and answers are
//! written once, in its `#[utoipa::path]`.
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
use axum::routing::MethodRouter;
use axum::Router;
use utoipa::openapi::path::Paths;
use utoipa::openapi::{RefOr, Schema};
use utoipa_axum::routes;

use super::{admin, auth, chat, documents, guard, handlers, middleware, ops, AppState};
use crate::config::Scope;

/// One `/v1` operation: method, path (under `/v1`), the scope it needs, and
/// whether the request timeout applies. Method and path come from the
/// handler's `#[utoipa::path]`, the one place each is written.
#[derive(Debug, Clone)]
pub struct Operation {
    /// HTTP method.
    pub method: Method,
    /// Path under `/v1`, with `{id}` parameters.
    pub path: String,
    /// The smallest key scope that may call it.
    pub scope: Scope,
    /// Whether the request timeout applies (retraining answers when done).
    pub timed: bool,
}

/// What `utoipa_axum::routes!` makes of a handler: the schemas it names, its
/// documented path item, and its axum method router.
type Routed = (Vec<(String, RefOr<Schema>)>, Paths, MethodRouter<AppState>);

/// One entry of the table: the scope, whether it is timed, the handler.
struct Entry {
    scope: Scope,
    timed: bool,
    routed: Routed,
}

/// Every `/v1` operation with its handler: the one list the router and the
/// OpenAPI document are built from.
fn table() -> Vec<Entry> {
    use Scope::{Admin, Agent, Chat};
    let op = |scope, routed| Entry {
        scope,
        timed: true,
        routed,
    };
    vec![
        op(Chat, routes!(chat::deflect)),
        op(Chat, routes!(chat::feedback)),
        op(Chat, routes!(chat::draft)),
        op(Chat, routes!(chat::ticket)),
        op(Chat, routes!(handlers::pack)),
        op(Agent, routes!(handlers::triage)),
        op(Agent, routes!(handlers::suggest)),
        op(Agent, routes!(handlers::search)),
        op(Agent, routes!(handlers::feedback)),
        op(Agent, routes!(documents::put_ticket)),
        op(Agent, routes!(documents::get_ticket)),
        op(Agent, routes!(documents::delete_ticket)),
        op(Agent, routes!(documents::put_article)),
        op(Agent, routes!(documents::get_article)),
        op(Agent, routes!(documents::delete_article)),
        op(Agent, routes!(documents::list_learned)),
        op(Agent, routes!(documents::approve_learned)),
        op(Agent, routes!(documents::remove_learned)),
        op(Admin, routes!(documents::submit_reclassify)),
        op(Admin, routes!(documents::job_status)),
        op(Admin, routes!(documents::cancel_job)),
        op(Admin, routes!(documents::job_labels)),
        op(Admin, routes!(admin::stats)),
        op(
            Admin,
            routes!(admin::start_adapt, admin::adapt_status, admin::drop_adapt),
        ),
        Entry {
            scope: Admin,
            timed: false,
            routed: routes!(admin::retrain),
        },
    ]
}

/// The routes outside `/v1`'s table (no key scope, no body, not shed): the
/// document, health, readiness and metrics. Their paths are absolute.
fn public_table() -> Vec<Routed> {
    vec![
        routes!(ops::openapi),
        routes!(ops::healthz),
        routes!(ops::readyz),
        routes!(ops::metrics),
    ]
}

/// The (path, method) pairs a documented path item holds.
fn methods_of(paths: &Paths) -> Vec<(String, Method)> {
    let mut out = Vec::new();
    for (path, item) in &paths.paths {
        for (present, method) in [
            (item.get.is_some(), Method::GET),
            (item.put.is_some(), Method::PUT),
            (item.post.is_some(), Method::POST),
            (item.delete.is_some(), Method::DELETE),
            (item.patch.is_some(), Method::PATCH),
            (item.head.is_some(), Method::HEAD),
            (item.options.is_some(), Method::OPTIONS),
            (item.trace.is_some(), Method::TRACE),
        ] {
            if present {
                out.push((path.clone(), method));
            }
        }
    }
    out
}

/// The `/v1` operations (method, path, scope), in the order they are routed
/// (what the scope tests walk).
#[cfg(test)]
pub fn operations() -> Vec<Operation> {
    table()
        .into_iter()
        .flat_map(|e| {
            methods_of(&e.routed.1)
                .into_iter()
                .map(move |(path, method)| Operation {
                    method,
                    path,
                    scope: e.scope,
                    timed: e.timed,
                })
        })
        .collect()
}

/// What the OpenAPI document is built from: each `/v1` operation with its
/// documented path item (paths under `/v1`), then the public routes
/// (absolute paths, no operation), and the schemas all of them name.
pub(super) struct Documented {
    /// The `/v1` operations and their path items.
    pub v1: Vec<(Operation, Paths)>,
    /// The public routes' path items.
    pub public: Vec<Paths>,
    /// Every schema the handlers name.
    pub schemas: Vec<(String, RefOr<Schema>)>,
}

/// The table as the OpenAPI document needs it.
pub(super) fn documented() -> Documented {
    let mut schemas = Vec::new();
    let mut v1 = Vec::new();
    for e in table() {
        let (named, paths, _) = e.routed;
        schemas.extend(named);
        for (path, method) in methods_of(&paths) {
            v1.push((
                Operation {
                    method,
                    path,
                    scope: e.scope,
                    timed: e.timed,
                },
                paths.clone(),
            ));
        }
    }
    let mut public = Vec::new();
    for (named, paths, _) in public_table() {
        schemas.extend(named);
        public.push(paths);
    }
    Documented {
        v1,
        public,
        schemas,
    }
}

/// The public routes (see [`public_table`]), to merge into the service.
pub fn public() -> Router<AppState> {
    public_table()
        .into_iter()
        .fold(Router::new(), |router, (_, paths, handler)| {
            let path = paths.paths.keys().next().cloned().unwrap_or_default();
            router.route(&path, handler)
        })
}

/// The `/v1` router: every operation behind its own stack (see the module docs).
pub fn v1(state: &AppState) -> Router<AppState> {
    let mut by_path: std::collections::BTreeMap<String, MethodRouter<AppState>> =
        std::collections::BTreeMap::new();
    for e in table() {
        let scope = e.scope;
        let (_, paths, mut handler) = e.routed;
        if e.timed {
            handler = handler.route_layer(from_fn_with_state(state.clone(), middleware::timeout));
        }
        let handler = handler
            .route_layer(from_fn_with_state(state.clone(), middleware::shed))
            .route_layer(from_fn_with_state(state.clone(), guard::read_body))
            .route_layer(from_fn(move |req, next| auth::require(scope, req, next)));
        for path in paths.paths.into_keys() {
            let merged = match by_path.remove(&path) {
                Some(existing) => existing.merge(handler.clone()),
                None => handler.clone(),
            };
            by_path.insert(path, merged);
        }
    }
    by_path
        .into_iter()
        .fold(Router::new(), |router, (path, handler)| {
            router.route(&path, handler)
        })
}
