//! The OpenAPI 3.1 document served at `/v1/openapi.json`, generated with
//! utoipa: the schemas from the request and response types (`ToSchema`, the
//! engine's behind its `openapi` feature), each operation from its handler's
//! `#[utoipa::path]`, the operations from the one table in [`super::routes`].
//!
//! What the generated document cannot know is added here, each from where it
//! is decided: the key scope of each operation (`x-scope`) and the answers of
//! the layers every operation passes through (authentication, body reading,
//! shedding, the timeout); what validation refuses ([`RULES`], with the
//! character classes and limits of `extract.rs` and the configured text
//! limit); with an engine loaded, the pack's categories, queues and
//! priorities as enums; and whether a key is required.

use serde_json::{json, Map, Value};
use utoipa::OpenApi;

use super::extract::{classes, MAX_ID_CHARS, MAX_SHORT_CHARS};
use super::routes::{self, Operation};
use super::AppState;
use crate::config::Limits;

#[derive(OpenApi)]
#[openapi(info(
    title = "triage",
    description = "Self-hosted AI triage and knowledge retrieval for support tickets (Chinese + English). With API keys configured, every /v1 route needs `Authorization: Bearer <key>` with a key whose scope covers the route (`x-scope`: chat < agent < admin) and acts for the key's tenant. A request that times out (504) is not cancelled: a write may still be applied, so re-read before retrying it."
))]
struct ApiDoc;

/// What the document states about the running service.
struct Facts<'a> {
    limits: &'a Limits,
    keyed: bool,
    pack: Option<&'a triage::Pack>,
}

/// The document for the default limits, without keys or a pack (for tests).
#[cfg(test)]
pub fn document() -> Value {
    build(&Facts {
        limits: &Limits::default(),
        keyed: false,
        pack: None,
    })
}

/// The document of this service: its limits, whether keys are required, and
/// (once the engine is loaded) its pack's labels.
pub fn document_for(state: &AppState) -> Value {
    let engine = state.engine().ok();
    build(&Facts {
        limits: state.limits(),
        keyed: !state.api_keys().is_empty(),
        pack: engine.as_deref().map(|e| e.pack()),
    })
}

/// What one error status means wherever it is answered.
fn error_description(code: &str) -> &'static str {
    match code {
        "400" => "Malformed JSON, invalid UTF-8, or an unreadable path or query string",
        "401" => "Missing or wrong API key",
        "403" => "The key's scope does not cover this route, or a browser request from another origin",
        "404" => "Unknown id",
        "408" => "The request body did not arrive within the body read timeout",
        "409" => "Conflict",
        "413" => "Body, a text field (or a short field such as `status`, 256 characters) or an id (256 characters) over its limit",
        "414" => "The URI is over 8 KiB",
        "415" => "The body is not JSON (`Content-Type: application/json`)",
        "421" => "The `Host` is not one this service answers to",
        "422" => "Not a JSON object, wrong types, missing or empty text (text with no visible characters counts as empty), or a value the engine or index refuses (bad date, fusion parameter, label outside the pack, control character in an id or tenant)",
        "431" => "The request head is over 32 KiB",
        "500" => "Internal error, or stored data that cannot be read (`corrupt`, naming the file)",
        "503" => "Overloaded (shed) or still loading",
        "504" => "Timed out. The work is not cancelled: a write (PUT, DELETE, feedback, job submission) that timed out may still have been applied, so re-read before retrying. Until it ends it keeps its concurrency slot (further requests may get 503)",
        "507" => "The data directory cannot be written",
        _ => "Error",
    }
}

/// The statuses the layers in front of a `/v1` handler answer (see
/// `routes.rs` and `guard.rs`), by what the operation takes.
fn layer_statuses(op: &Operation, operation: &Value) -> Vec<&'static str> {
    let mut codes = vec!["401", "403", "414", "421", "431", "500", "503"];
    if op.timed {
        codes.push("504");
    }
    if matches!(op.method.as_str(), "POST" | "PUT") {
        // `guard::read_body` reads every POST and PUT body, described or not.
        codes.extend(["400", "408", "413", "415"]);
    }
    if operation.get("requestBody").is_some() {
        codes.push("422");
    }
    if operation
        .get("parameters")
        .and_then(Value::as_array)
        .is_some_and(|p| !p.is_empty())
    {
        codes.extend(["400", "413", "422"]);
    }
    codes
}

/// Merges `from` into `into`, objects key by key.
fn merge(into: &mut Value, from: Value) {
    match (into, from) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k).or_insert(Value::Null), v);
            }
        }
        (slot, v) => *slot = v,
    }
}

/// Adds the error statuses `codes` an operation lacks, and the error body to
/// every error answer.
fn add_errors(operation: &mut Value, codes: &[&str]) {
    let Some(responses) = operation
        .get_mut("responses")
        .and_then(Value::as_object_mut)
    else {
        return;
    };
    for code in codes {
        responses
            .entry(code.to_string())
            .or_insert_with(|| json!({"description": error_description(code)}));
    }
    for (code, answer) in responses.iter_mut() {
        if code.as_str() >= "400" && answer.get("content").is_none() {
            answer["content"] =
                json!({"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}});
        }
    }
}

fn build(facts: &Facts) -> Value {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).unwrap_or_else(|_| json!({}));
    let documented = routes::documented();
    let mut paths = Value::Object(Map::new());
    for (op, item) in documented.v1 {
        let item = serde_json::to_value(item).unwrap_or_default();
        let method = op.method.as_str().to_ascii_lowercase();
        let Some(mut operation) = item.get(&op.path).and_then(|i| i.get(&method)).cloned() else {
            continue;
        };
        operation["x-scope"] = json!(op.scope.as_str());
        let codes = layer_statuses(&op, &operation);
        add_errors(&mut operation, &codes);
        merge(
            &mut paths,
            json!({ format!("/v1{}", op.path): { method: operation } }),
        );
    }
    for item in documented.public {
        let mut item = serde_json::to_value(item).unwrap_or_default();
        if let Some(items) = item.as_object_mut() {
            for methods in items.values_mut() {
                if let Some(methods) = methods.as_object_mut() {
                    for operation in methods.values_mut() {
                        add_errors(operation, &["414", "421", "431"]);
                    }
                }
            }
        }
        merge(&mut paths, item);
    }
    let mut schemas = Map::new();
    for (name, schema) in documented.schemas {
        schemas.insert(name, serde_json::to_value(schema).unwrap_or_default());
    }
    schemas.insert("Error".into(), error_schema());
    doc["paths"] = paths;
    doc["components"] = json!({
        "schemas": schemas,
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
    });
    apply_rules(&mut doc, facts);
    if facts.keyed {
        doc["security"] = json!([{"bearer": []}]);
        // Open routes say so; `/metrics` needs an operator's key.
        for path in ["/healthz", "/readyz", "/v1/openapi.json"] {
            doc["paths"][path]["get"]["security"] = json!([]);
        }
    } else {
        // Without keys nothing is authenticated (loopback only): no 401.
        if let Some(paths) = doc["paths"].as_object_mut() {
            for item in paths.values_mut().filter_map(Value::as_object_mut) {
                for op in item.values_mut().filter_map(Value::as_object_mut) {
                    op.remove("security");
                    if let Some(r) = op.get_mut("responses").and_then(Value::as_object_mut) {
                        r.remove("401");
                    }
                }
            }
        }
    }
    doc
}

/// The one error shape (`error.rs`).
fn error_schema() -> Value {
    json!({"type": "object", "required": ["error"], "properties": {"error": {
        "type": "object", "required": ["code", "message"], "properties": {
            "code": {"type": "string", "enum": [
                "malformed_json", "bad_request", "invalid_input", "too_large", "unauthorized",
                "forbidden", "request_timeout", "unsupported_media_type", "misdirected_request",
                "uri_too_long", "headers_too_large", "not_found", "conflict", "method_not_allowed",
                "overloaded", "not_ready", "timeout", "storage_unavailable", "corrupt", "internal"]},
            "message": {"type": "string"}}}}})
}

/// What validation (`extract.rs`, the handlers, the engine) accepts in one field.
#[derive(Debug, Clone, Copy)]
enum Rule {
    /// Text up to the configured limit.
    Text,
    /// Required text with a visible character, up to the limit.
    RequiredText,
    /// A short field: at most 256 characters.
    Short,
    /// A tenant or contact: short, no control characters.
    Plain,
    /// An id ([`super::extract::check_id`]), required.
    Id,
    /// An id, or empty for none.
    IdOrEmpty,
    /// An id, or null or blank for a new conversation.
    SessionId,
    /// Empty, or an RFC 3339 time.
    Time,
    /// Null, or an RFC 3339 time or a date.
    FilterTime,
    /// Empty, or one of the pack's leaf categories.
    LeafCategory,
    /// Empty, or one of the pack's categories.
    Category,
    /// Empty, or one of the pack's queues.
    Queue,
    /// Empty, or `P0`..`P3`.
    Priority,
    /// Field names (short) to values (text).
    Fields,
    /// Field names (short, not blank) to values (text).
    NamedFields,
    /// A list of texts.
    Texts,
    /// A list of short fields.
    Shorts,
    /// A report's window: 1–90 days or 1–12 weeks (`triage::parse_window`).
    Window,
    /// Empty, or one of the pack's fields.
    PackField,
}

/// Every checked field of every request body, by schema and property.
const RULES: &[(&str, &str, Rule)] = &[
    ("TicketRequest", "title", Rule::Text),
    ("TicketRequest", "body", Rule::Text),
    ("TicketRequest", "channel", Rule::Short),
    ("TicketRequest", "customer_id", Rule::Short),
    ("TicketRequest", "tenant", Rule::Plain),
    ("ChatMessage", "text", Rule::RequiredText),
    ("ChatMessage", "session_id", Rule::SessionId),
    ("ChatMessage", "customer_id", Rule::Short),
    ("ChatMessage", "tenant", Rule::Plain),
    ("ChatFeedback", "session_id", Rule::Id),
    ("ChatFeedback", "article_id", Rule::Id),
    ("ChatFeedback", "tenant", Rule::Plain),
    ("DraftRequest", "session_id", Rule::Id),
    ("DraftRequest", "tenant", Rule::Plain),
    ("ChatTicketRequest", "session_id", Rule::Id),
    ("ChatTicketRequest", "title", Rule::Text),
    ("ChatTicketRequest", "body", Rule::Text),
    ("ChatTicketRequest", "contact", Rule::Plain),
    ("ChatTicketRequest", "tenant", Rule::Plain),
    ("SearchRequest", "text", Rule::RequiredText),
    ("Filters", "tenant", Rule::Plain),
    ("Filters", "categories", Rule::Shorts),
    ("Filters", "statuses", Rule::Shorts),
    ("Filters", "created_after", Rule::FilterTime),
    ("Filters", "created_before", Rule::FilterTime),
    ("Feedback", "ticket_id", Rule::IdOrEmpty),
    ("Feedback", "title", Rule::Text),
    ("Feedback", "body", Rule::Text),
    ("Feedback", "category", Rule::LeafCategory),
    ("Feedback", "priority", Rule::Priority),
    ("Feedback", "queue", Rule::Queue),
    ("Feedback", "fields", Rule::NamedFields),
    ("Feedback", "solved_by_article", Rule::Id),
    ("Feedback", "message", Rule::Text),
    ("Feedback", "tenant", Rule::Plain),
    ("Ticket", "title", Rule::Text),
    ("Ticket", "body", Rule::Text),
    ("Ticket", "resolution", Rule::Text),
    ("Ticket", "fields", Rule::Fields),
    ("Ticket", "category", Rule::LeafCategory),
    ("Ticket", "priority", Rule::Priority),
    ("Ticket", "queue", Rule::Queue),
    ("Ticket", "status", Rule::Short),
    ("Ticket", "customer_id", Rule::Short),
    ("Ticket", "channel", Rule::Short),
    ("Ticket", "created_at", Rule::Time),
    ("Ticket", "tenant", Rule::Plain),
    ("Article", "question", Rule::RequiredText),
    ("Article", "answer", Rule::Text),
    ("Article", "alt_questions", Rule::Texts),
    ("Article", "tags", Rule::Shorts),
    ("Article", "category", Rule::Category),
    ("Article", "tenant", Rule::Plain),
    ("PublishGap", "question", Rule::RequiredText),
    ("PublishGap", "answer", Rule::RequiredText),
    ("PublishGap", "alt_questions", Rule::Texts),
    ("PublishGap", "category", Rule::Category),
    ("PublishGap", "tenant", Rule::Plain),
];

/// Query and path parameters, by name.
const PARAMETER_RULES: &[(&str, Rule)] = &[
    ("id", Rule::Id),
    ("tenant", Rule::Plain),
    ("article", Rule::Id),
    ("window", Rule::Window),
    ("field", Rule::PackField),
];

/// The JSON Schema keywords of `rule`.
fn constraint(rule: Rule, facts: &Facts) -> Value {
    let text_max = facts.limits.max_text_chars;
    let blank = classes::blank();
    let ws = classes::whitespace();
    let not_in_id = classes::not_in_id();
    let control = classes::control();
    let id = json!({
        "type": "string", "minLength": 1, "maxLength": MAX_ID_CHARS,
        "pattern": format!("^[^{not_in_id}]*$"),
        "not": {"pattern": format!("[{not_in_id}]|\\.\\.|^[{ws}]|[{ws}]$")},
    });
    let labels = |values: Option<Vec<String>>| match values {
        Some(mut v) => {
            v.insert(0, String::new());
            json!({"type": "string", "enum": v})
        }
        None => json!({"type": "string", "maxLength": MAX_SHORT_CHARS}),
    };
    match rule {
        Rule::Text => json!({"type": "string", "maxLength": text_max}),
        Rule::RequiredText => json!({
            "type": "string", "maxLength": text_max, "pattern": format!("[^{blank}]"),
        }),
        Rule::Short => json!({"type": "string", "maxLength": MAX_SHORT_CHARS}),
        Rule::Plain => json!({
            "type": "string", "maxLength": MAX_SHORT_CHARS,
            "pattern": format!("^[^{control}]*$"), "not": {"pattern": format!("[{control}]")},
        }),
        Rule::Id => id,
        Rule::IdOrEmpty => json!({"anyOf": [{"type": "string", "maxLength": 0}, id]}),
        Rule::SessionId => json!({"anyOf": [
            {"type": "null"},
            {"type": "string", "not": {"pattern": format!("[^{blank}]")}},
            id,
        ]}),
        Rule::Time => json!({"anyOf": [
            {"type": "string", "maxLength": 0},
            {"type": "string", "format": "date-time"},
        ]}),
        Rule::FilterTime => json!({"anyOf": [
            {"type": "null"},
            {"type": "string", "format": "date-time"},
            {"type": "string", "format": "date"},
        ]}),
        Rule::LeafCategory => labels(
            facts
                .pack
                .map(|p| p.leaf_categories().iter().map(|c| c.id.clone()).collect()),
        ),
        Rule::Category => labels(
            facts
                .pack
                .map(|p| p.categories.iter().map(|c| c.id.clone()).collect()),
        ),
        Rule::Queue => labels(
            facts
                .pack
                .map(|p| p.queues.iter().map(|q| q.id.clone()).collect()),
        ),
        Rule::Priority => labels(Some(["P0", "P1", "P2", "P3"].map(String::from).to_vec())),
        Rule::Fields | Rule::NamedFields => {
            let mut names = json!({"type": "string", "maxLength": MAX_SHORT_CHARS});
            if matches!(rule, Rule::NamedFields) {
                names["pattern"] = json!(format!("[^{ws}]"));
            }
            json!({
                "type": "object", "propertyNames": names,
                "additionalProperties": {"type": "string", "maxLength": text_max},
            })
        }
        Rule::Texts => json!({"type": "array", "items": {"type": "string", "maxLength": text_max}}),
        Rule::Window => json!({
            "type": "string",
            "pattern": "^([1-9]|[1-8][0-9]|90)[dD]?$|^([1-9]|1[0-2])[wW]$",
            "example": "7d",
        }),
        Rule::PackField => labels(
            facts
                .pack
                .map(|p| p.fields.iter().map(|f| f.name.clone()).collect()),
        ),
        Rule::Shorts => {
            json!({"type": "array", "items": {"type": "string", "maxLength": MAX_SHORT_CHARS}})
        }
    }
}

/// Whether a property schema admits null (an `Option`).
fn nullable(property: &Value) -> bool {
    (match property.get("type") {
        Some(Value::Array(types)) => types.iter().any(|t| t == "null"),
        _ => false,
    }) || property
        .get("oneOf")
        .and_then(Value::as_array)
        .is_some_and(|o| o.iter().any(|s| s.get("type") == Some(&json!("null"))))
}

/// Puts `rule` on a property schema, keeping null where the type allows it.
fn constrain(property: &mut Value, rule: Rule, facts: &Facts) {
    let nullable = nullable(property);
    let description = property.get("description").cloned();
    let mut c = constraint(rule, facts);
    if nullable && !matches!(rule, Rule::SessionId | Rule::FilterTime) {
        c = json!({"anyOf": [{"type": "null"}, c]});
    }
    if let Some(d) = description {
        c["description"] = d;
    }
    *property = c;
}

/// Requires `field` in `schema`.
fn require(schema: &mut Value, field: &str) {
    let required = schema
        .as_object_mut()
        .map(|o| o.entry("required").or_insert_with(|| json!([])));
    if let Some(Value::Array(r)) = required {
        if !r.iter().any(|f| f == field) {
            r.push(json!(field));
        }
    }
}

fn apply_rules(doc: &mut Value, facts: &Facts) {
    let schemas = &mut doc["components"]["schemas"];
    // Reclassify jobs take tickets as `PUT /v1/tickets/{id}` does, with
    // their own id, and with labels outside the pack (they are the old ones).
    let mut job_ticket = schemas["Ticket"].clone();
    for (schema, field, rule) in RULES {
        let Some(p) = schemas[*schema]["properties"].get_mut(*field) else {
            continue;
        };
        // Required text and ids must be sent, unless they are optional (`Option`).
        let required = matches!(rule, Rule::RequiredText | Rule::Id) && !nullable(p);
        constrain(p, *rule, facts);
        if required {
            require(&mut schemas[*schema], field);
        }
    }
    let no_pack = Facts {
        pack: None,
        ..*facts
    };
    for (_, field, rule) in RULES.iter().filter(|r| r.0 == "Ticket") {
        // Only the service's own checks apply (not the engine's: time format, labels).
        let rule = match rule {
            Rule::Time | Rule::LeafCategory | Rule::Priority | Rule::Queue => Rule::Short,
            r => *r,
        };
        if let Some(p) = job_ticket["properties"].get_mut(*field) {
            constrain(p, rule, &no_pack);
        }
    }
    if let Some(p) = job_ticket["properties"].get_mut("id") {
        constrain(p, Rule::Id, facts);
    }
    require(&mut job_ticket, "id");
    let visible = |field: &str| json!({"required": [field], "properties": {field: {"pattern": format!("[^{}]", classes::blank())}}});
    // A request or ticket needs visible text in its title or body.
    let title_or_body = json!([visible("title"), visible("body")]);
    schemas["TicketRequest"]["anyOf"] = title_or_body.clone();
    schemas["Ticket"]["anyOf"] = title_or_body.clone();
    job_ticket["anyOf"] = title_or_body;
    job_ticket["description"] = json!("A ticket to reclassify: as `Ticket`, with its own id, and labels that may lie outside the pack (they are the old ones)");
    schemas["ReclassifyTicket"] = job_ticket;
    let job = &mut schemas["ReclassifyJob"]["properties"]["tickets"];
    job["items"] = json!({"$ref": "#/components/schemas/ReclassifyTicket"});
    job["minItems"] = json!(1);
    job["maxItems"] = json!(100_000);
    // Feedback corrects a ticket (by id, or created from its text) or says
    // which article solved it (then with the message it answered).
    let some = |field: &str| json!({"required": [field], "properties": {field: {"not": {"type": "null"}}}});
    schemas["Feedback"]["anyOf"] = json!([
        {"allOf": [
            {"required": ["ticket_id"], "properties": {"ticket_id": {"minLength": 1}}},
            {"anyOf": [some("category"), some("priority"), some("queue"),
                {"required": ["fields"], "properties": {"fields": {"minProperties": 1}}}]},
        ]},
        {"allOf": [some("solved_by_article"),
            {"anyOf": [visible("message"), visible("title"), visible("body")]}]},
    ]);
    // Search: how many hits, and the fusion parameters the index accepts.
    if let Some(k) = schemas["SearchRequest"]["properties"].get_mut("k") {
        k["maximum"] = json!(super::handlers::MAX_K);
        k["description"] = json!("Number of hits (10 when omitted or 0)");
    }
    if let Some(variants) = schemas["Fusion"]["oneOf"].as_array_mut() {
        for v in variants {
            if let Some(k) = v["properties"].get_mut("k") {
                k["minimum"] = json!(0);
                k["maximum"] = json!(f32::MAX);
            }
            if let Some(w) = v["properties"].get_mut("bm25_weight") {
                w["minimum"] = json!(0);
                w["maximum"] = json!(1);
            }
        }
    }
    // Path and query parameters.
    if let Some(paths) = doc["paths"].as_object_mut() {
        for item in paths.values_mut().filter_map(Value::as_object_mut) {
            for op in item.values_mut() {
                let Some(params) = op.get_mut("parameters").and_then(Value::as_array_mut) else {
                    continue;
                };
                for p in params {
                    let name = p["name"].as_str().unwrap_or_default().to_string();
                    if let Some((_, rule)) = PARAMETER_RULES.iter().find(|(n, _)| *n == name) {
                        let mut schema = constraint(*rule, facts);
                        if name == "tenant" {
                            schema["description"] =
                                json!("Tenant (ignored when an API key pins one)");
                        }
                        p["schema"] = schema;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_operation_is_documented_with_its_scope_and_schemas() {
        let doc = document();
        for op in routes::operations() {
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
            assert!(
                documented["responses"]["503"].is_object(),
                "{method} {path}"
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
        // Every rule names a property the types have.
        for (schema, field, _) in RULES {
            assert!(
                doc["components"]["schemas"][*schema]["properties"][*field].is_object(),
                "{schema}.{field}"
            );
        }
    }
}
