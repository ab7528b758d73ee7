//! Document and job endpoints: upsert/get/delete tickets and articles (the id
//! in the path wins; searchable when the call returns) and reclassify jobs.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use indexer::{Article, Ticket};
use serde::{Deserialize, Serialize};
use triage::api::ArticleRecord;
use triage::api::{LearnedPhrasing, LearnedStatus};
use triage::Engine;

use super::auth::TenantId;
use super::error::{ApiError, ApiResult};
use super::extract::{
    check_fields, check_id, check_short, check_tenant, check_text, is_blank, ApiJson, ApiQuery,
    PathId, TenantQuery,
};
use super::{AppState, Caller};
use crate::config::Limits;
use crate::services::jobs::JobStatus;

/// Most tickets one reclassify job may carry.
const MAX_JOB_TICKETS: usize = 100_000;

/// What an upsert or delete returns.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Written {
    /// Document id.
    id: String,
    /// `ticket` or `article`.
    #[schema(value_type = String)]
    kind: &'static str,
    /// Owning tenant.
    tenant: String,
    /// `indexed` or `deleted`.
    #[schema(value_type = String)]
    status: &'static str,
}

/// `PUT /v1/tickets/{id}`: inserts or replaces a ticket.
#[utoipa::path(put, path = "/tickets/{id}", request_body = Ticket,
    params(("id" = String, Path, description = "Ticket id (wins over one in the body)")),
    responses(
        (status = 200, description = "Stored; searchable on return", body = Written),
        (status = 507, description = "The data directory cannot be written"),
    ))]
pub async fn put_ticket(
    State(state): State<AppState>,
    caller: Caller,
    PathId(id): PathId,
    ApiJson(mut ticket): ApiJson<Ticket>,
) -> ApiResult<Json<Written>> {
    check_ticket(&ticket, state.limits())?;
    ticket.id = id.clone();
    ticket.tenant = caller.tenant(&ticket.tenant);
    let tenant = ticket.tenant.clone();
    state.run(move |e| Ok(e.upsert_ticket(ticket)?)).await?;
    Ok(Json(Written {
        id,
        kind: "ticket",
        tenant,
        status: "indexed",
    }))
}

/// `GET /v1/tickets/{id}`: the stored ticket.
#[utoipa::path(get, path = "/tickets/{id}",
    params(("id" = String, Path, description = "Ticket id"), TenantQuery),
    responses(
        (status = 200, description = "The ticket", body = Ticket),
        (status = 404, description = "No such ticket"),
    ))]
pub async fn get_ticket(
    State(state): State<AppState>,
    TenantId { tenant, id }: TenantId,
) -> ApiResult<Json<Ticket>> {
    let wanted = id.clone();
    let found = state
        .run(move |e| Ok(e.get_ticket(&tenant, &wanted)?))
        .await?;
    found
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("no ticket {id:?}")))
}

/// `DELETE /v1/tickets/{id}`.
#[utoipa::path(delete, path = "/tickets/{id}",
    params(("id" = String, Path, description = "Ticket id"), TenantQuery),
    responses(
        (status = 200, description = "Deleted", body = Written),
        (status = 404, description = "No such ticket"),
        (status = 507, description = "The data directory cannot be written"),
    ))]
pub async fn delete_ticket(
    State(state): State<AppState>,
    target: TenantId,
) -> ApiResult<Json<Written>> {
    delete_document(state, target, "ticket", Engine::delete_ticket).await
}

/// `PUT /v1/articles/{id}`: inserts or replaces a knowledge-base article.
#[utoipa::path(put, path = "/articles/{id}", request_body = Article,
    params(("id" = String, Path, description = "Article id (wins over one in the body)")),
    responses(
        (status = 200, description = "Stored; searchable on return", body = Written),
        (status = 507, description = "The data directory cannot be written"),
    ))]
pub async fn put_article(
    State(state): State<AppState>,
    caller: Caller,
    PathId(id): PathId,
    ApiJson(mut article): ApiJson<Article>,
) -> ApiResult<Json<Written>> {
    let limits = state.limits();
    check_text("question", &article.question, true, limits)?;
    check_text("answer", &article.answer, false, limits)?;
    for q in &article.alt_questions {
        check_text("alt_questions", q, false, limits)?;
    }
    for t in &article.tags {
        check_short("tags", t)?;
    }
    check_short("category", &article.category)?;
    article.id = id.clone();
    article.tenant = caller.act_for(&article.tenant)?;
    let tenant = article.tenant.clone();
    state.run(move |e| Ok(e.upsert_article(article)?)).await?;
    Ok(Json(Written {
        id,
        kind: "article",
        tenant,
        status: "indexed",
    }))
}

/// `DELETE /v1/articles/{id}`.
#[utoipa::path(delete, path = "/articles/{id}",
    params(("id" = String, Path, description = "Article id"), TenantQuery),
    responses(
        (status = 200, description = "Deleted (with its learned phrasings)", body = Written),
        (status = 404, description = "No such article"),
        (status = 507, description = "The data directory cannot be written"),
    ))]
pub async fn delete_article(
    State(state): State<AppState>,
    target: TenantId,
) -> ApiResult<Json<Written>> {
    delete_document(state, target, "article", Engine::delete_article).await
}

/// `GET /v1/articles/{id}`: the article with its learned phrasings (masked
/// customers' words with their status and source: agents only).
#[utoipa::path(get, path = "/articles/{id}",
    params(("id" = String, Path, description = "Article id"), TenantQuery),
    responses(
        (status = 200, description = "The article with its learned phrasings", body = ArticleRecord),
        (status = 404, description = "No such article"),
    ))]
pub async fn get_article(
    State(state): State<AppState>,
    TenantId { tenant, id }: TenantId,
) -> ApiResult<Json<ArticleRecord>> {
    let wanted = id.clone();
    state
        .run(move |e| Ok(e.article_record(&tenant, &wanted)))
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("no article {id:?}")))
}

/// `?tenant=&article=&status=` of `GET /v1/learned`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LearnedQuery {
    #[serde(default)]
    tenant: String,
    /// Only this article's phrasings.
    article: Option<String>,
    /// Only phrasings with this status.
    #[param(inline)]
    status: Option<LearnedStatus>,
}

/// `GET /v1/learned`: the tenant's learned phrasings (candidates waiting for
/// approval first), to approve or remove.
#[utoipa::path(get, path = "/learned", params(LearnedQuery),
    responses((status = 200, description = "Phrasings, candidates first", body = Vec<LearnedPhrasing>)))]
pub async fn list_learned(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<LearnedQuery>,
) -> ApiResult<Json<Vec<LearnedPhrasing>>> {
    if let Some(a) = &q.article {
        check_id("article", a)?;
    }
    let tenant = caller.act_for(&q.tenant)?;
    let mut list = state
        .run(move |e| Ok(e.learned_phrasings(&tenant, q.article.as_deref())))
        .await?;
    if let Some(status) = q.status {
        list.retain(|p| p.status == status);
    }
    list.sort_by_key(|p| (p.status != LearnedStatus::Candidate, p.created_at.clone()));
    Ok(Json(list))
}

/// `POST /v1/learned/{id}/approve`: an agent approves a learned phrasing; it
/// answers customers from now on.
#[utoipa::path(post, path = "/learned/{id}/approve",
    params(("id" = String, Path, description = "Learned phrasing id"), TenantQuery),
    responses(
        (status = 200, description = "The phrasing", body = LearnedPhrasing),
        (status = 404, description = "No such phrasing"),
        (status = 507, description = "The data directory cannot be written"),
    ))]
pub async fn approve_learned(
    State(state): State<AppState>,
    TenantId { tenant, id }: TenantId,
) -> ApiResult<Json<LearnedPhrasing>> {
    Ok(Json(
        state
            .run(move |e| Ok(e.approve_learned(&tenant, &id)?))
            .await?,
    ))
}

/// `DELETE /v1/learned/{id}`: an agent removes a learned phrasing; it stops
/// answering at once and is not learned again from customers' clicks.
#[utoipa::path(delete, path = "/learned/{id}",
    params(("id" = String, Path, description = "Learned phrasing id"), TenantQuery),
    responses(
        (status = 200, description = "The phrasing", body = LearnedPhrasing),
        (status = 404, description = "No such phrasing"),
        (status = 507, description = "The data directory cannot be written"),
    ))]
pub async fn remove_learned(
    State(state): State<AppState>,
    TenantId { tenant, id }: TenantId,
) -> ApiResult<Json<LearnedPhrasing>> {
    Ok(Json(
        state
            .run(move |e| Ok(e.remove_learned(&tenant, &id)?))
            .await?,
    ))
}

/// What both deletes share: `delete` says whether the tenant's document existed.
async fn delete_document(
    state: AppState,
    TenantId { tenant, id }: TenantId,
    kind: &'static str,
    delete: fn(&Engine, &str, &str) -> triage::Result<bool>,
) -> ApiResult<Json<Written>> {
    let (t, wanted) = (tenant.clone(), id.clone());
    let existed = state.run(move |e| Ok(delete(e, &t, &wanted)?)).await?;
    if !existed {
        return Err(ApiError::NotFound(format!("no {kind} {id:?}")));
    }
    Ok(Json(Written {
        id,
        kind,
        tenant,
        status: "deleted",
    }))
}

/// Body of `POST /v1/jobs/reclassify`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReclassifyJob {
    /// The tickets to reclassify (their current `category` is the old label).
    #[serde(deserialize_with = "indexer::objects")]
    tickets: Vec<Ticket>,
}

/// `POST /v1/jobs/reclassify`: stores the tickets durably, answers 202 with the job.
#[utoipa::path(post, path = "/jobs/reclassify", request_body = ReclassifyJob,
    responses(
        (status = 202, description = "Accepted; poll the `Location`", body = JobStatus,
            headers(("Location" = String, description = "The job's status URL"))),
        (status = 507, description = "The data directory cannot be written"),
    ))]
pub async fn submit_reclassify(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(job): ApiJson<ReclassifyJob>,
) -> ApiResult<Response> {
    state.engine()?;
    if job.tickets.is_empty() {
        return Err(ApiError::InvalidInput("`tickets` is empty".into()));
    }
    if job.tickets.len() > MAX_JOB_TICKETS {
        return Err(ApiError::TooLarge(format!(
            "a job takes at most {MAX_JOB_TICKETS} tickets"
        )));
    }
    let limits = state.limits();
    let tenant = caller.tenant("");
    // A job takes the tickets `PUT /v1/tickets/{id}` takes (ids, visible
    // text, field limits), except that their labels are the old ones and may
    // lie outside the pack: that is what reclassification is for.
    for (i, t) in job.tickets.iter().enumerate() {
        check_id(&format!("tickets[{i}].id"), &t.id)?;
        check_ticket(t, limits).map_err(|e| match e {
            ApiError::InvalidInput(m) => ApiError::InvalidInput(format!("tickets[{i}]: {m}")),
            ApiError::TooLarge(m) => ApiError::TooLarge(format!("tickets[{i}]: {m}")),
            other => other,
        })?;
    }
    let jobs_state = state.clone();
    let status = state
        .blocking(move || jobs_state.jobs().submit(&tenant, &job.tickets))
        .await??;
    let location = format!("/v1/jobs/{}", status.id);
    Ok((
        StatusCode::ACCEPTED,
        [(header::LOCATION, location)],
        Json(status),
    )
        .into_response())
}

/// `GET /v1/jobs/{id}`: state, progress (done/total, rate, ETA) and the report when done.
#[utoipa::path(get, path = "/jobs/{id}",
    params(("id" = String, Path, description = "Job id")),
    responses(
        (status = 200, description = "Status", body = JobStatus),
        (status = 404, description = "No such job"),
    ))]
pub async fn job_status(
    State(state): State<AppState>,
    caller: Caller,
    PathId(id): PathId,
) -> ApiResult<Json<JobStatus>> {
    Ok(Json(state.jobs().status(&id, caller.listing_tenant())?))
}

/// `DELETE /v1/jobs/{id}`: cancels a queued or running job of the caller's
/// tenant (durably: it is not resumed after a restart); 409 once it has finished.
#[utoipa::path(delete, path = "/jobs/{id}",
    params(("id" = String, Path, description = "Job id")),
    responses(
        (status = 200, description = "Status", body = JobStatus),
        (status = 404, description = "No such job"),
        (status = 409, description = "The job has already finished"),
        (status = 507, description = "The data directory cannot be written"),
    ))]
pub async fn cancel_job(
    State(state): State<AppState>,
    caller: Caller,
    PathId(id): PathId,
) -> ApiResult<Json<JobStatus>> {
    let tenant = caller.listing_tenant().map(str::to_string);
    let jobs_state = state.clone();
    let status = state
        .blocking(move || jobs_state.jobs().cancel(&id, tenant.as_deref()))
        .await??;
    Ok(Json(status))
}

/// `GET /v1/jobs/{id}/labels`: the job's label lines so far (JSON lines).
#[utoipa::path(get, path = "/jobs/{id}/labels",
    params(("id" = String, Path, description = "Job id")),
    responses(
        (status = 200, description = "The job's label lines so far (JSON lines)", content_type = "application/x-ndjson", body = String),
        (status = 404, description = "No such job"),
    ))]
pub async fn job_labels(
    State(state): State<AppState>,
    caller: Caller,
    PathId(id): PathId,
) -> ApiResult<Response> {
    let path = state.jobs().labels_path(&id, caller.listing_tenant())?;
    let body = match tokio::fs::read(&path).await {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(ApiError::Internal(format!("{}: {e}", path.display()))),
    };
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson; charset=utf-8")],
        body,
    )
        .into_response())
}

/// Checks every field of a ticket against its limit: long texts against the
/// text limit, labels, status, time and the like against [`MAX_SHORT_CHARS`];
/// a ticket needs visible text in its title or body.
///
/// [`MAX_SHORT_CHARS`]: super::extract::MAX_SHORT_CHARS
fn check_ticket(ticket: &Ticket, limits: &Limits) -> ApiResult<()> {
    if is_blank(&ticket.title) && is_blank(&ticket.body) {
        return Err(ApiError::InvalidInput(
            "a ticket needs a `title` or a `body`".into(),
        ));
    }
    for (name, value) in [
        ("title", &ticket.title),
        ("body", &ticket.body),
        ("resolution", &ticket.resolution),
    ] {
        check_text(name, value, false, limits)?;
    }
    check_fields(&ticket.fields, limits)?;
    for (name, value) in [
        ("category", &ticket.category),
        ("priority", &ticket.priority),
        ("queue", &ticket.queue),
        ("status", &ticket.status),
        ("customer_id", &ticket.customer_id),
        ("channel", &ticket.channel),
        ("created_at", &ticket.created_at),
    ] {
        check_short(name, value)?;
    }
    check_tenant(&ticket.tenant)
}
