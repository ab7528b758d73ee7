//! The OpenAPI 3.1 document served at `/v1/openapi.json`, written by hand so
//! it needs no derive machinery on the engine's types. A test checks that
//! every path it lists is routed.

use serde_json::{json, Value};

/// Routes outside `/v1`'s operation table that the document describes.
#[cfg(test)]
pub const PUBLIC: &[(&str, &str)] = &[
    ("/v1/openapi.json", "get"),
    ("/healthz", "get"),
    ("/readyz", "get"),
    ("/metrics", "get"),
];

fn schema(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

fn body(name: &str) -> Value {
    json!({"required": true, "content": {"application/json": {"schema": schema(name)}}})
}

fn ok(description: &str, name: &str) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": schema(name)}}})
}

fn errors(codes: &[&str]) -> Value {
    let mut map = serde_json::Map::new();
    for code in codes {
        let description = match *code {
            "400" => "Malformed JSON, invalid UTF-8, or an unreadable path or query string",
            "401" => "Missing or wrong API key",
            "403" => "The key's scope does not cover this route, or a browser request from another origin",
            "408" => "The request body did not arrive within the body read timeout",
            "415" => "The body is not JSON (`Content-Type: application/json`)",
            "404" => "Unknown id",
            "409" => "A retrain is already running",
            "413" => "Body, a text field (or a short field such as `status`, 256 characters) or an id (256 bytes) over its limit",
            "422" => "Not a JSON object, wrong types, missing or empty text (text with no visible characters counts as empty), or a value the index refuses (bad date, fusion parameter, control character in an id or tenant)",
            "503" => "Overloaded (shed) or still loading",
            "504" => "Timed out. The work is not cancelled: a write (PUT, DELETE, feedback, job submission) that timed out may still have been applied, so re-read before retrying. Until it ends it keeps its concurrency slot (further requests may get 503)",
            "507" => "The data directory cannot be written",
            "500" => "Internal error, or stored data that cannot be read (`corrupt`, naming the file)",
            _ => "Internal error",
        };
        map.insert(
            (*code).to_string(),
            json!({"description": description, "content": {"application/json": {"schema": schema("Error")}}}),
        );
    }
    Value::Object(map)
}

fn op(summary: &str, request: Option<&str>, response: Value, error_codes: &[&str]) -> Value {
    op_with(summary, request, "200", response, error_codes)
}

fn op_with(
    summary: &str,
    request: Option<&str>,
    status: &str,
    response: Value,
    error_codes: &[&str],
) -> Value {
    let mut responses = errors(error_codes);
    if let Some(map) = responses.as_object_mut() {
        map.insert(status.to_string(), response);
    }
    let mut o = json!({"summary": summary, "responses": responses});
    if let (Some(name), Some(obj)) = (request, o.as_object_mut()) {
        obj.insert("requestBody".into(), body(name));
    }
    o
}

const V1_ERRORS: &[&str] = &["400", "401", "413", "422", "500", "503", "504"];

/// The document, with each `/v1` operation's key scope (`x-scope`) and its
/// 401/403 answers added from the operation table.
pub fn document() -> Value {
    let mut doc = paths_and_schemas();
    for op in super::routes::operations() {
        let path = format!("/v1{}", op.path);
        let method = op.method.as_str().to_ascii_lowercase();
        if let Some(o) = doc["paths"][&path][&method].as_object_mut() {
            o.insert("x-scope".into(), json!(op.scope.as_str()));
            let extra = errors(&["401", "403", "408", "415"]);
            if let (Some(responses), Some(extra)) = (
                o.get_mut("responses").and_then(Value::as_object_mut),
                extra.as_object(),
            ) {
                for (code, answer) in extra {
                    responses
                        .entry(code.clone())
                        .or_insert_with(|| answer.clone());
                }
            }
        }
    }
    doc
}

/// The hand-written part of the document.
fn paths_and_schemas() -> Value {
    let id_param =
        json!([{"name": "id", "in": "path", "required": true, "schema": {"type": "string"}}]);
    let tenant_param = json!({"name": "tenant", "in": "query", "required": false, "schema": {"type": "string"}, "description": "Tenant (ignored when an API key pins one)"});
    let mut with_tenant = id_param.clone();
    if let Some(a) = with_tenant.as_array_mut() {
        a.push(tenant_param);
    }
    let text = |d: &str| json!({"type": "string", "description": d});
    let any_object = json!({"type": "object", "additionalProperties": true});
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "triage",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Self-hosted AI triage and knowledge retrieval for support tickets (Chinese + English). With API keys configured, every /v1 route needs `Authorization: Bearer <key>` with a key whose scope covers the route (`x-scope`: chat < agent < admin) and acts for the key's tenant. A request that times out (504) is not cancelled: a write may still be applied, so re-read before retrying it."
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "object", "required": ["code", "message"], "properties": {
                    "code": {"type": "string", "enum": ["malformed_json", "bad_request", "invalid_input", "too_large", "unauthorized", "forbidden", "request_timeout", "unsupported_media_type", "misdirected_request", "uri_too_long", "headers_too_large", "not_found", "conflict", "method_not_allowed", "overloaded", "not_ready", "timeout", "storage_unavailable", "corrupt", "internal"]},
                    "message": {"type": "string"}}}}},
                "TicketRequest": {"type": "object", "properties": {
                    "title": text("Subject line"), "body": text("Request text (title or body required)"),
                    "channel": text("phone, chat, wechat, email, web"), "customer_id": text("Customer id (duplicates of this customer first)"),
                    "tenant": text("Tenant (ignored when an API key pins one)")}},
                "LabelDecision": {"type": "object", "properties": {
                    "label": {"type": ["string", "null"]}, "confidence": {"type": "number"}, "abstain": {"type": "boolean"},
                    "alternatives": {"type": "array", "items": {"type": "object", "properties": {"label": {"type": "string"}, "probability": {"type": "number"}}}},
                    "reasons": {"type": "array", "items": {"type": "string"}}}},
                "FieldValue": {"type": "object", "properties": {
                    "name": {"type": "string"}, "value": {"type": "string"},
                    "span": {"type": ["array", "null"], "items": {"type": "integer"}}, "char_span": {"type": ["array", "null"], "items": {"type": "integer"}},
                    "source": {"type": "string", "enum": ["extracted", "inferred"]}, "confidence": {"type": "number"}}},
                "TriageResult": {"type": "object", "properties": {
                    "category": schema("LabelDecision"), "priority": schema("LabelDecision"), "queue": schema("LabelDecision"),
                    "fields": {"type": "array", "items": schema("FieldValue")},
                    "duplicates": {"type": "array", "items": any_object},
                    "needs_human": {"type": "boolean"},
                    "neighbours": {"type": "array", "items": schema("Hit")}}},
                "ChatMessage": {"type": "object", "required": ["text"], "properties": {
                    "text": text("The customer's message"), "session_id": text("The conversation id a previous reply issued (omit to start one)"),
                    "customer_id": {"type": "string"}, "tenant": {"type": "string"}}},
                "ChatReply": {"type": "object", "properties": {
                    "action": {"type": "string", "enum": ["answer", "clarify", "handoff"]}, "confidence": {"type": "number"},
                    "session_id": text("The conversation (issued by the service)"), "turn": {"type": "integer"},
                    "candidates": {"type": "array", "items": {"type": "object", "properties": {
                        "article": {"type": "object", "properties": {"id": {"type": "string"}, "question": {"type": "string"}, "answer": {"type": "string"}, "category": {"type": "string"}}},
                        "confidence": {"type": "number"},
                        "evidence": {"type": "object", "properties": {"similarity": {"type": "number"}, "matched_terms": {"type": "array", "items": {"type": "string"}}, "matched_phrasing": {"type": ["string", "null"]}}}}}},
                    "ticket_draft": {"type": ["object", "null"], "description": "On handoff: the prefilled ticket (ChatDraft)"},
                    "reasons": {"type": "array", "items": {"type": "string"}}}},
                "ChatDraft": {"type": "object", "properties": {
                    "title": {"type": "string"}, "body": {"type": "string"}, "category": {"type": ["string", "null"]},
                    "priority": {"type": ["string", "null"]}, "queue": {"type": ["string", "null"]}, "needs_human": {"type": "boolean"},
                    "fields": {"type": "array", "items": schema("FieldValue")}}},
                "ChatFeedback": {"type": "object", "required": ["session_id", "turn", "article_id", "helpful"], "properties": {
                    "session_id": {"type": "string"}, "turn": {"type": "integer"}, "article_id": {"type": "string"}, "helpful": {"type": "boolean"}, "tenant": {"type": "string"}}},
                "ChatSession": {"type": "object", "required": ["session_id"], "properties": {"session_id": {"type": "string"}, "tenant": {"type": "string"}}},
                "ChatTicketRequest": {"type": "object", "required": ["session_id"], "properties": {
                    "session_id": {"type": "string"}, "title": {"type": "string"}, "body": {"type": "string"}, "contact": {"type": "string"}, "tenant": {"type": "string"}}},
                "LearnedPhrasing": {"type": "object", "properties": {
                    "id": {"type": "string"}, "tenant": {"type": "string"}, "article_id": {"type": "string"}, "text": text("Personal data masked"),
                    "status": {"type": "string", "enum": ["candidate", "active", "removed"]}, "helpful_sessions": {"type": "integer"},
                    "unhelpful_sessions": {"type": "integer"}, "source": {"type": "string", "enum": ["customer", "agent"]},
                    "approved_by_agent": {"type": "boolean"}, "created_at": {"type": "string"}, "updated_at": {"type": "string"}}},
                "LearnedList": {"type": "array", "items": schema("LearnedPhrasing")},
                "ArticleRecord": {"type": "object", "properties": {"article": schema("Article"), "learned": {"type": "array", "items": schema("LearnedPhrasing")}}},
                "Suggestions": {"type": "object", "properties": {
                    "similar_tickets": {"type": "array", "items": schema("Hit")}, "articles": {"type": "array", "items": schema("Hit")},
                    "duplicates": {"type": "array", "items": any_object}, "predicted_resolution": {"type": ["object", "null"]}}},
                "SearchRequest": {"type": "object", "required": ["text"], "properties": {
                    "text": {"type": "string"}, "mode": {"type": "string", "enum": ["hybrid", "bm25", "vector"]},
                    "k": {"type": "integer", "minimum": 1, "maximum": 100},
                    "filters": {"type": "object", "properties": {"tenant": {"type": "string"}, "kind": {"type": "string", "enum": ["ticket", "article"]},
                        "categories": {"type": "array", "items": {"type": "string"}}, "statuses": {"type": "array", "items": {"type": "string"}},
                        "created_after": {"type": "string"}, "created_before": {"type": "string"}}},
                    "fusion": {"type": "object", "description": "{\"method\":\"rrf\",\"k\":60} or {\"method\":\"weighted\",\"bm25_weight\":0.5}"}}},
                "Hit": {"type": "object", "properties": {
                    "id": {"type": "string"}, "kind": {"type": "string"}, "doc": any_object, "score": {"type": "number"},
                    "explanation": {"type": "object", "properties": {"bm25_score": {"type": ["number", "null"]}, "bm25_rank": {"type": ["integer", "null"]},
                        "vector_similarity": {"type": ["number", "null"]}, "vector_rank": {"type": ["integer", "null"]},
                        "fused_score": {"type": "number"}, "matched_terms": {"type": "array", "items": {"type": "string"}}}}}},
                "HitList": {"type": "array", "items": schema("Hit")},
                "Ticket": {"type": "object", "properties": {
                    "id": {"type": "string"}, "title": {"type": "string"}, "body": {"type": "string"}, "category": {"type": "string"},
                    "priority": {"type": "string"}, "queue": {"type": "string"}, "status": {"type": "string"},
                    "fields": {"type": "object", "additionalProperties": {"type": "string"}}, "resolution": {"type": "string"},
                    "customer_id": {"type": "string"}, "channel": {"type": "string"}, "created_at": {"type": "string"}, "tenant": {"type": "string"}}},
                "Article": {"type": "object", "required": ["question"], "properties": {
                    "id": {"type": "string"}, "question": {"type": "string"}, "answer": {"type": "string"},
                    "alt_questions": {"type": "array", "items": {"type": "string"}}, "tags": {"type": "array", "items": {"type": "string"}},
                    "category": {"type": "string"}, "tenant": {"type": "string"}}},
                "Written": {"type": "object", "properties": {"id": {"type": "string"}, "kind": {"type": "string"}, "tenant": {"type": "string"}, "status": {"type": "string", "enum": ["indexed", "deleted"]}}},
                "Feedback": {"type": "object", "properties": {
                    "ticket_id": {"type": "string"}, "title": {"type": "string"}, "body": {"type": "string"},
                    "category": {"type": ["string", "null"]}, "priority": {"type": ["string", "null"]}, "queue": {"type": ["string", "null"]},
                    "fields": {"type": "object", "additionalProperties": {"type": "string"}},
                    "solved_by_article": {"type": ["string", "null"]}, "message": {"type": ["string", "null"]}, "tenant": {"type": "string"}}},
                "Object": any_object,
                "ReclassifyJob": {"type": "object", "required": ["tickets"], "properties": {"tickets": {"type": "array", "items": schema("Ticket")}}},
                "JobStatus": {"type": "object", "properties": {
                    "id": {"type": "string"}, "kind": {"type": "string"}, "state": {"type": "string", "enum": ["queued", "running", "done", "failed", "cancelled"]},
                    "done": {"type": "integer"}, "total": {"type": "integer"}, "rate_per_second": {"type": "number"},
                    "eta_seconds": {"type": ["number", "null"]}, "report": {"type": ["object", "null"], "description": "Summary once done; `input` and `output` are relative to the data directory"}, "error": {"type": ["string", "null"]}}},
                "Retrained": {"type": "object", "properties": {
                    "status": {"type": "string", "enum": ["retrained"]}, "tenant": {"type": "string"},
                    "labelled_examples": {"type": "integer", "description": "Tickets with a category the classifier learned from"},
                    "seconds": {"type": "number", "description": "Time the training took"}}}
            }
        },
        "security": [{"bearer": []}, {}],
        "paths": {
            "/v1/triage": {"post": op("Triage a new request: category, priority, queue, fields, duplicates, evidence", Some("TicketRequest"), ok("The triage", "TriageResult"), V1_ERRORS)},
            "/v1/deflect": {"post": op("Answer, clarify or hand off a chat message within its conversation (handoff carries a ticket draft)", Some("ChatMessage"), ok("The decision", "ChatReply"), V1_ERRORS)},
            "/v1/chat/feedback": {"post": op("A customer's \"did this help?\" on an article the conversation was shown: the message becomes a candidate phrasing, used for others only after several conversations agree or an agent approves", Some("ChatFeedback"), ok("What became of it", "Object"), &["400", "401", "404", "413", "422", "500", "503", "504"])},
            "/v1/chat/draft": {"post": op("The ticket draft of the conversation so far", Some("ChatSession"), ok("The draft", "ChatDraft"), &["400", "401", "404", "413", "422", "500", "503", "504"])},
            "/v1/chat/tickets": {"post": op("Hand the conversation to a person: an open, unlabelled ticket with an id the service chooses", Some("ChatTicketRequest"), ok("The created ticket", "Object"), &["400", "401", "404", "413", "422", "500", "503", "504", "507"])},
            "/v1/learned": {"get": {"summary": "Learned phrasings of the tenant (candidates first), to approve or remove", "parameters": [
                {"name": "tenant", "in": "query", "required": false, "schema": {"type": "string"}},
                {"name": "article", "in": "query", "required": false, "schema": {"type": "string"}},
                {"name": "status", "in": "query", "required": false, "schema": {"type": "string", "enum": ["candidate", "active", "removed"]}}],
                "responses": {"200": ok("Phrasings", "LearnedList"), "400": errors(&["400"])["400"].clone(), "503": errors(&["503"])["503"].clone()}}},
            "/v1/learned/{id}/approve": {"parameters": with_tenant.clone(), "post": op("Approve a learned phrasing: it answers from now on", None, ok("The phrasing", "LearnedPhrasing"), &["400", "404", "500", "503", "504", "507"])},
            "/v1/learned/{id}": {"parameters": with_tenant.clone(), "delete": op("Remove a learned phrasing: it stops answering and is not learned again from clicks", None, ok("The phrasing", "LearnedPhrasing"), &["400", "404", "500", "503", "504", "507"])},
            "/v1/admin/stats": {"get": op("The tenant's documents, labels, corrections, learned phrasings and retrain status", None, ok("Statistics", "Object"), &["503"])},
            "/v1/suggest": {"post": op("Similar resolved tickets, articles and a predicted resolution", Some("TicketRequest"), ok("Suggestions", "Suggestions"), V1_ERRORS)},
            "/v1/search": {"post": op("Hybrid search with filters and explanations", Some("SearchRequest"), ok("Hits, best first", "HitList"), V1_ERRORS)},
            "/v1/feedback": {"post": op("An agent's correction or confirmation, stored as a labelled example: it decides the same request at once, and reaches similar ones through the neighbour vote at once and the model at the next retrain", Some("Feedback"), ok("What was learned", "Object"), V1_ERRORS)},
            "/v1/pack": {"get": op("The pack's taxonomy, priorities, queues and thresholds", None, ok("Pack summary", "Object"), &["401", "503"])},
            "/v1/tickets/{id}": {
                "parameters": id_param,
                "put": op("Insert or replace a ticket (the path id wins); searchable on return", Some("Ticket"), ok("Stored", "Written"), &["400", "401", "413", "422", "500", "503", "504", "507"]),
                "get": {"summary": "A stored ticket", "parameters": [with_tenant[1].clone()], "responses": {"200": ok("The ticket", "Ticket"), "400": errors(&["400"])["400"].clone(), "404": errors(&["404"])["404"].clone(), "401": errors(&["401"])["401"].clone()}},
                "delete": {"summary": "Delete a ticket", "parameters": [with_tenant[1].clone()], "responses": {"200": ok("Deleted", "Written"), "400": errors(&["400"])["400"].clone(), "404": errors(&["404"])["404"].clone(), "401": errors(&["401"])["401"].clone(), "507": errors(&["507"])["507"].clone()}}
            },
            "/v1/articles/{id}": {
                "parameters": id_param,
                "put": op("Insert or replace an article (the path id wins); searchable on return", Some("Article"), ok("Stored", "Written"), &["400", "401", "413", "422", "500", "503", "504", "507"]),
                "get": {"summary": "An article with its learned phrasings", "parameters": [with_tenant[1].clone()], "responses": {"200": ok("The article", "ArticleRecord"), "400": errors(&["400"])["400"].clone(), "404": errors(&["404"])["404"].clone()}},
                "delete": {"summary": "Delete an article (and its learned phrasings)", "parameters": [with_tenant[1].clone()], "responses": {"200": ok("Deleted", "Written"), "400": errors(&["400"])["400"].clone(), "404": errors(&["404"])["404"].clone(), "401": errors(&["401"])["401"].clone(), "507": errors(&["507"])["507"].clone()}}
            },
            "/v1/jobs/reclassify": {"post": op_with("Start a background reclassification of the given tickets", Some("ReclassifyJob"), "202",
                json!({"description": "Accepted; poll the Location", "content": {"application/json": {"schema": schema("JobStatus")}}}), &["400", "401", "413", "422", "503", "507"])},
            "/v1/jobs/{id}": {"parameters": id_param, "get": op("A job's state, progress (rate, ETA) and report", None, ok("Status", "JobStatus"), &["400", "401", "404", "500"]),
                "delete": op("Cancel a queued or running job (durably; it is not resumed after a restart)", None, ok("Status", "JobStatus"), &["400", "401", "404", "409", "500", "503"])},
            "/v1/admin/retrain": {"post": op("Retrain the caller's tenant's category and priority classifiers from its labelled tickets (and the shared pack) now; answers when done (not subject to the request timeout)", None, ok("Retrained", "Retrained"), &["401", "409", "500", "503"])},
            "/v1/jobs/{id}/labels": {"parameters": id_param, "get": {"summary": "The job's label lines so far", "responses": {"200": {"description": "JSON lines", "content": {"application/x-ndjson": {}}}, "404": errors(&["404"])["404"].clone()}}},
            "/v1/openapi.json": {"get": {"summary": "This document", "security": [], "responses": {"200": {"description": "OpenAPI 3.1", "content": {"application/json": {}}}}}},
            "/healthz": {"get": {"summary": "Liveness", "security": [], "responses": {"200": {"description": "Up"}}}},
            "/readyz": {"get": {"summary": "Readiness: model and index loaded", "security": [], "responses": {"200": {"description": "Ready; for an operator (admin key of the default tenant, or no keys configured) with index statistics and the retrain status"}, "503": errors(&["503"])["503"].clone()}}},
            "/metrics": {"get": {"summary": "Prometheus metrics (with keys configured: an admin key of the default tenant)", "responses": {"200": {"description": "Text exposition format", "content": {"text/plain": {}}}, "401": errors(&["401"])["401"].clone(), "403": errors(&["403"])["403"].clone()}}}
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_listed_operation_is_documented_with_its_schemas() {
        let doc = document();
        for op in crate::http::routes::operations() {
            let (path, method) = (
                format!("/v1{}", op.path),
                op.method.as_str().to_ascii_lowercase(),
            );
            let documented = &doc["paths"][&path][&method];
            assert!(
                documented.is_object(),
                "{method} {path} missing from the document"
            );
            assert_eq!(documented["x-scope"], op.scope.as_str(), "{method} {path}");
        }
        for (path, method) in PUBLIC {
            assert!(
                doc["paths"][path][method].is_object(),
                "{method} {path} missing"
            );
        }
        // Every $ref points at a defined schema.
        let text = doc.to_string();
        for piece in text.split("#/components/schemas/").skip(1) {
            let name: String = piece.chars().take_while(|c| c.is_alphanumeric()).collect();
            assert!(
                doc["components"]["schemas"][&name].is_object(),
                "schema {name} is referenced but not defined"
            );
        }
    }
}
