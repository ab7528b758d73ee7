//! Who is calling and what they may do: bearer API keys with a tenant and a
//! scope ([`Scope`]: chat ⊂ agent ⊂ admin).
//!
//! [`authenticate`] runs on every `/v1` request: with keys configured it
//! requires `Authorization: Bearer <key>` (401 otherwise) and pins the key's
//! tenant and scope on the request as a [`Caller`]; without keys (loopback
//! only, see `config.rs`) every caller is an administrator who may name any
//! tenant. [`require`] is layered on each route with the scope the route
//! declares (403 when the key's scope is too small). A handler that extracts
//! [`Caller`] on a request that did not pass [`authenticate`] gets a 500:
//! a route can never be open by accident.

use std::collections::BTreeMap;

use axum::extract::{FromRequestParts, Request, State};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::{ApiError, ApiResult};
use super::extract::{check_tenant, ApiQuery, PathId, TenantQuery};
use super::AppState;
use crate::config::{ApiKey, Scope};

/// Who is calling: the tenant their key pins (none without keys) and their scope.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The tenant forced by the caller's key; `None` when no keys are configured.
    pub forced_tenant: Option<String>,
    /// What the caller may do.
    pub scope: Scope,
}

impl Caller {
    /// The caller of a service without keys: an administrator of any tenant.
    fn open() -> Caller {
        Caller {
            forced_tenant: None,
            scope: Scope::Admin,
        }
    }

    /// The tenant a request acts for: the key's tenant, else the one it asked for.
    pub fn tenant(&self, requested: &str) -> String {
        match &self.forced_tenant {
            Some(t) => t.clone(),
            None => requested.to_string(),
        }
    }

    /// The tenant a request acts for, after checking the one it asked for
    /// (a key's tenant still wins): the prologue of every tenant-scoped handler.
    pub fn act_for(&self, requested: &str) -> ApiResult<String> {
        check_tenant(requested)?;
        Ok(self.tenant(requested))
    }

    /// The tenant to restrict listings to (`None` = all, only without keys).
    pub fn listing_tenant(&self) -> Option<&str> {
        self.forced_tenant.as_deref()
    }

    /// Whether the caller operates the whole service: an administrator of the
    /// default tenant (which holds the pack), or anyone without keys. Only
    /// operators see service-wide figures (`/metrics`, `/readyz` details).
    pub fn is_operator(&self) -> bool {
        self.scope == Scope::Admin && self.forced_tenant.as_deref().is_none_or(str::is_empty)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Caller>()
            .cloned()
            .ok_or_else(|| ApiError::Internal("this route is not behind authentication".into()))
    }
}

/// The tenant of a request addressed by `?tenant=` (checked; a key's tenant
/// wins): the admin routes and listings.
pub struct QueryTenant(pub String);

impl<S: Send + Sync> FromRequestParts<S> for QueryTenant {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let caller = Caller::from_request_parts(parts, state).await?;
        let ApiQuery(q) = ApiQuery::<TenantQuery>::from_request_parts(parts, state).await?;
        Ok(QueryTenant(caller.act_for(&q.tenant)?))
    }
}

/// One tenant's record addressed by `/{id}?tenant=`: the id checked like
/// every id ([`PathId`]), the tenant checked and resolved against the key.
pub struct TenantId {
    /// The tenant the request acts for.
    pub tenant: String,
    /// The record's id from the path.
    pub id: String,
}

impl<S: Send + Sync> FromRequestParts<S> for TenantId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let caller = Caller::from_request_parts(parts, state).await?;
        let PathId(id) = PathId::from_request_parts(parts, state).await?;
        let ApiQuery(q) = ApiQuery::<TenantQuery>::from_request_parts(parts, state).await?;
        Ok(TenantId {
            tenant: caller.act_for(&q.tenant)?,
            id,
        })
    }
}

/// The caller a request's headers identify: `Ok(None)` when keys are
/// configured and none was sent, 401 for a wrong or malformed one.
pub fn identify(state: &AppState, headers: &HeaderMap) -> Result<Option<Caller>, ApiError> {
    let keys = state.api_keys();
    if keys.is_empty() {
        return Ok(Some(Caller::open()));
    }
    let Some(value) = headers.get(AUTHORIZATION) else {
        return Ok(None);
    };
    let token = value.to_str().ok().and_then(|v| {
        let (scheme, token) = v.trim().split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
    });
    let Some(token) = token else {
        return Err(ApiError::Unauthorized(
            "malformed Authorization header: send `Authorization: Bearer <key>`".into(),
        ));
    };
    match lookup(keys, token) {
        Some(key) => Ok(Some(Caller {
            forced_tenant: Some(key.tenant),
            scope: key.scope,
        })),
        None => Err(ApiError::Unauthorized("invalid API key".into())),
    }
}

/// The operator's check for service-wide routes (`/metrics`): 401 without a
/// key, 403 for a key that is not an administrator of the default tenant.
pub fn operator(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    match identify(state, headers)? {
        Some(c) if c.is_operator() => Ok(()),
        Some(_) => Err(ApiError::Forbidden(
            "service-wide figures need an admin key of the default tenant".into(),
        )),
        None => Err(ApiError::Unauthorized(
            "missing API key: send `Authorization: Bearer <key>`".into(),
        )),
    }
}

/// Authenticates every `/v1` request and pins its [`Caller`] (see the module docs).
pub async fn authenticate(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let caller = match identify(&state, req.headers()) {
        Ok(Some(c)) => c,
        Ok(None) => {
            return ApiError::Unauthorized(
                "missing API key: send `Authorization: Bearer <key>`".into(),
            )
            .into_response()
        }
        Err(e) => return e.into_response(),
    };
    req.extensions_mut().insert(caller);
    next.run(req).await
}

/// Refuses (403) a caller whose scope is below `needed`: layered on each
/// route with the scope it declares.
pub async fn require(needed: Scope, req: Request, next: Next) -> Response {
    let Some(caller) = req.extensions().get::<Caller>() else {
        return ApiError::Internal("this route is not behind authentication".into())
            .into_response();
    };
    if caller.scope < needed {
        return ApiError::Forbidden(format!(
            "this key's scope is `{}`; {} {} needs `{}`",
            caller.scope.as_str(),
            req.method(),
            req.uri().path(),
            needed.as_str()
        ))
        .into_response();
    }
    next.run(req).await
}

/// Finds a key's grant, comparing every key in constant time per byte so the
/// response time does not reveal how much of a key was right.
fn lookup(keys: &BTreeMap<String, ApiKey>, token: &str) -> Option<ApiKey> {
    let mut found = None;
    for (key, grant) in keys {
        if constant_time_eq(key.as_bytes(), token.as_bytes()) {
            found = Some(grant.clone());
        }
    }
    found
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_match_exactly() {
        let keys = [(
            "secret-a".to_string(),
            ApiKey {
                tenant: "acme".into(),
                scope: Scope::Agent,
            },
        )]
        .into_iter()
        .collect();
        assert_eq!(
            lookup(&keys, "secret-a").map(|k| k.tenant),
            Some("acme".into())
        );
        assert_eq!(lookup(&keys, "secret-b"), None);
        assert_eq!(lookup(&keys, "secret-"), None);
        assert_eq!(lookup(&keys, ""), None);
    }

    #[test]
    fn forced_tenant_wins_and_only_default_admins_operate() {
        let open = Caller::open();
        assert_eq!(open.tenant("globex"), "globex");
        assert!(open.is_operator());
        let keyed = |tenant: &str, scope| Caller {
            forced_tenant: Some(tenant.into()),
            scope,
        };
        assert_eq!(keyed("acme", Scope::Chat).tenant("globex"), "acme");
        assert_eq!(keyed("acme", Scope::Chat).listing_tenant(), Some("acme"));
        assert!(keyed("", Scope::Admin).is_operator());
        assert!(!keyed("acme", Scope::Admin).is_operator());
        assert!(!keyed("", Scope::Agent).is_operator());
    }
}
