//! Contract test server of the two platforms the connectors write to: the
//! parts of Zammad's REST API and of Chatwoot's application API that the
//! service calls, as documented (fixtures/connectors/README.md names the
//! sources). It accepts exactly the documented requests (method, path,
//! authentication header, body keys and types), answers with the documented
//! payloads (the fixtures), keeps the state the writes change (a Zammad
//! ticket's group, priority, tags and articles; a Chatwoot conversation's
//! messages and status), and fails on command: an HTTP status, 429 with
//! `Retry-After`, an answer later than the client waits, a dropped
//! connection (before or after the write is applied), or a write applied
//! and then held until the test releases it (the window in which a client
//! may die).
//!
//! `POST /hooks/...` stands for a receiver of the service's own signed
//! events: it records and accepts anything.
//!
//! Plain HTTP/1.1 on a loopback port, one thread per connection
//! (`Connection: close`), so it runs the same under a tokio test and a plain one.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

/// What the next request gets instead of a normal answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Failure {
    /// Answer this status (not applied).
    Status(u16),
    /// Answer this status with `Retry-After: secs` (not applied).
    RetryAfter(u16, u64),
    /// Answer normally (applied) but only after this delay.
    Slow(Duration),
    /// Close the connection without an answer (not applied).
    Drop,
    /// Apply the write, then close the connection without an answer.
    ApplyThenDrop,
    /// Apply the write, then hold the connection until [`Contract::release`].
    ApplyThenHold,
}

/// One request as received.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// `GET`, `POST`, ...
    pub method: String,
    /// The path, without the query.
    pub path: String,
    /// The query string (may be empty).
    pub query: String,
    /// The headers, names lower-cased.
    pub headers: BTreeMap<String, String>,
    /// The body as JSON (`Null` when empty or not JSON).
    pub body: Value,
    /// The body as sent.
    pub raw: String,
    /// Whether the request changed the state (a write that succeeded).
    pub applied: bool,
    /// The status answered (0 when the connection was dropped).
    pub status: u16,
}

/// A Zammad ticket as the contract server keeps it.
#[derive(Debug, Clone, Default)]
pub struct ZammadTicket {
    /// Title.
    pub title: String,
    /// Group name.
    pub group: String,
    /// Priority id.
    pub priority_id: u64,
    /// State name (`open`, `closed`, ...).
    pub state: String,
    /// Close time (RFC 3339), for closed tickets.
    pub close_at: String,
    /// Creation time (RFC 3339).
    pub created_at: String,
    /// Tags.
    pub tags: BTreeSet<String>,
    /// Articles, as `by_ticket` returns them.
    pub articles: Vec<Value>,
}

#[derive(Default)]
struct State {
    failures: VecDeque<Failure>,
    down: bool,
    requests: Vec<Recorded>,
    tickets: BTreeMap<u64, ZammadTicket>,
    next_article: u64,
    /// (account, conversation) → messages created.
    messages: BTreeMap<(u64, u64), Vec<Value>>,
    /// (account, conversation) → status.
    statuses: BTreeMap<(u64, u64), String>,
    next_message: u64,
    held: usize,
    released: bool,
    hold_next_write: bool,
}

struct Shared {
    state: Mutex<State>,
    changed: Condvar,
    zammad_token: String,
    chatwoot_token: String,
}

/// A running contract server.
pub struct Contract {
    shared: Arc<Shared>,
    base: String,
}

/// Zammad's API token the server accepts (`Authorization: Token token=...`).
pub const ZAMMAD_TOKEN: &str = "zammad-test-token";
/// Chatwoot's bot token the server accepts (`api_access_token`).
pub const CHATWOOT_TOKEN: &str = "chatwoot-bot-token";

/// The repository's `fixtures/connectors` directory.
pub fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/connectors")
}

/// A fixture file as JSON (`zammad/webhook-ticket-created.json`, ...).
pub fn fixture(name: &str) -> Value {
    let path = fixtures_dir().join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()))
}

impl Contract {
    /// Starts a server on a free loopback port.
    pub fn start() -> Contract {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding a loopback port");
        let base = format!("http://{}", listener.local_addr().expect("local address"));
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                next_article: 1000,
                next_message: 5000,
                ..State::default()
            }),
            changed: Condvar::new(),
            zammad_token: ZAMMAD_TOKEN.into(),
            chatwoot_token: CHATWOOT_TOKEN.into(),
        });
        let accept = Arc::clone(&shared);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let shared = Arc::clone(&accept);
                std::thread::spawn(move || handle(&shared, stream));
            }
        });
        Contract { shared, base }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.shared.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The next requests (one each, in order) fail as given.
    pub fn fail_next(&self, failures: impl IntoIterator<Item = Failure>) {
        self.state().failures.extend(failures);
    }

    /// While down, every request is answered 503 (not applied).
    pub fn set_down(&self, down: bool) {
        self.state().down = down;
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.state().requests.clone()
    }

    /// The writes that were applied, in order.
    pub fn applied(&self) -> Vec<Recorded> {
        self.state()
            .requests
            .iter()
            .filter(|r| r.applied)
            .cloned()
            .collect()
    }

    /// Adds (or replaces) a Zammad ticket.
    pub fn add_ticket(&self, id: u64, ticket: ZammadTicket) {
        self.state().tickets.insert(id, ticket);
    }

    /// A Zammad ticket's current state.
    pub fn ticket(&self, id: u64) -> Option<ZammadTicket> {
        self.state().tickets.get(&id).cloned()
    }

    /// The messages created in a Chatwoot conversation.
    pub fn messages(&self, account: u64, conversation: u64) -> Vec<Value> {
        self.state()
            .messages
            .get(&(account, conversation))
            .cloned()
            .unwrap_or_default()
    }

    /// A Chatwoot conversation's status (`None` until toggled).
    pub fn status(&self, account: u64, conversation: u64) -> Option<String> {
        self.state().statuses.get(&(account, conversation)).cloned()
    }

    /// Waits (up to `limit`) until `f` holds on the received requests.
    pub fn wait_for(&self, limit: Duration, f: impl Fn(&[Recorded]) -> bool) -> bool {
        let deadline = std::time::Instant::now() + limit;
        let mut state = self.state();
        loop {
            if f(&state.requests) {
                return true;
            }
            let now = std::time::Instant::now();
            if now >= deadline {
                return false;
            }
            state = self
                .shared
                .changed
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Waits (up to `limit`) until a write is held ([`Failure::ApplyThenHold`]).
    pub fn wait_held(&self, limit: Duration) -> bool {
        let deadline = std::time::Instant::now() + limit;
        let mut state = self.state();
        while state.held == 0 {
            let now = std::time::Instant::now();
            if now >= deadline {
                return false;
            }
            state = self
                .shared
                .changed
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        true
    }

    /// The next write (not a GET) is applied and then held until [`Contract::release`].
    pub fn hold_next_write(&self) {
        self.state().hold_next_write = true;
    }

    /// Lets held connections go (they are closed without an answer).
    pub fn release(&self) {
        self.state().released = true;
        self.shared.changed.notify_all();
    }
}

/// One parsed request.
struct Request {
    method: String,
    path: String,
    query: String,
    headers: BTreeMap<String, String>,
    body: Vec<u8>,
}

fn read_request(stream: &TcpStream) -> Option<Request> {
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let target = parts.next()?.to_string();
    let mut headers = BTreeMap::new();
    loop {
        let mut h = String::new();
        reader.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':')?;
        headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
    }
    let len: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    reader.read_exact(&mut body).ok()?;
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p.to_string(), q.to_string()),
        None => (target, String::new()),
    };
    Some(Request {
        method,
        path,
        query,
        headers,
        body,
    })
}

fn respond(mut stream: &TcpStream, status: u16, extra: &[(&str, String)], body: &Value) {
    let text = if body.is_null() {
        String::new()
    } else {
        body.to_string()
    };
    let mut head = format!(
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
        text.len()
    );
    for (k, v) in extra {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(text.as_bytes());
    let _ = stream.flush();
}

/// What the API answers: status and body, and whether state changed.
struct Answer {
    status: u16,
    body: Value,
    applied: bool,
}

fn answer(status: u16, body: Value) -> Answer {
    Answer {
        status,
        body,
        applied: false,
    }
}

fn error(status: u16, message: &str) -> Answer {
    answer(status, json!({"error": message}))
}

fn handle(shared: &Shared, stream: TcpStream) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let Some(req) = read_request(&stream) else {
        return;
    };
    let body: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
    let mut recorded = Recorded {
        method: req.method.clone(),
        path: req.path.clone(),
        query: req.query.clone(),
        headers: req.headers.clone(),
        body: body.clone(),
        raw: String::from_utf8_lossy(&req.body).into_owned(),
        applied: false,
        status: 0,
    };
    let failure = {
        let mut state = shared.state.lock().unwrap_or_else(|p| p.into_inner());
        if state.down {
            Some(Failure::Status(503))
        } else if state.hold_next_write && req.method != "GET" {
            state.hold_next_write = false;
            Some(Failure::ApplyThenHold)
        } else {
            state.failures.pop_front()
        }
    };
    let finish = |recorded: Recorded| {
        let mut state = shared.state.lock().unwrap_or_else(|p| p.into_inner());
        state.requests.push(recorded);
        shared.changed.notify_all();
    };
    match failure {
        Some(Failure::Status(s)) => {
            recorded.status = s;
            finish(recorded);
            respond(&stream, s, &[], &json!({"error": "failing on command"}));
            return;
        }
        Some(Failure::RetryAfter(s, secs)) => {
            recorded.status = s;
            finish(recorded);
            respond(
                &stream,
                s,
                &[("Retry-After", secs.to_string())],
                &json!({"error": "slow down"}),
            );
            return;
        }
        Some(Failure::Drop) => {
            finish(recorded);
            let _ = stream.shutdown(std::net::Shutdown::Both);
            return;
        }
        _ => {}
    }
    let a = {
        let mut state = shared.state.lock().unwrap_or_else(|p| p.into_inner());
        route(shared, &mut state, &req, &body)
    };
    recorded.applied = a.applied;
    match failure {
        Some(Failure::Slow(d)) => {
            std::thread::sleep(d);
            recorded.status = a.status;
            finish(recorded);
            respond(&stream, a.status, &[], &a.body);
        }
        Some(Failure::ApplyThenDrop) => {
            finish(recorded);
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
        Some(Failure::ApplyThenHold) => {
            finish(recorded);
            let mut state = shared.state.lock().unwrap_or_else(|p| p.into_inner());
            state.held += 1;
            shared.changed.notify_all();
            while !state.released {
                state = shared
                    .changed
                    .wait(state)
                    .unwrap_or_else(|p| p.into_inner());
            }
            drop(state);
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
        _ => {
            recorded.status = a.status;
            finish(recorded);
            respond(&stream, a.status, &[], &a.body);
        }
    }
}

fn query_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == name).then(|| percent_decode(v))
    })
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => out.push(b),
                    Err(_) => out.extend_from_slice(&bytes[i..i + 3]),
                }
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether `body` is an object whose keys are all in `allowed` and which has all of `required`.
fn keys_ok(body: &Value, allowed: &[&str], required: &[&str]) -> Result<(), String> {
    let Some(map) = body.as_object() else {
        return Err("the body is not a JSON object".into());
    };
    if let Some(k) = map.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(format!("undocumented attribute `{k}`"));
    }
    if let Some(k) = required.iter().find(|k| !map.contains_key(**k)) {
        return Err(format!("missing `{k}`"));
    }
    Ok(())
}

fn route(shared: &Shared, state: &mut State, req: &Request, body: &Value) -> Answer {
    let segments: Vec<&str> = req.path.trim_matches('/').split('/').collect();
    if req.path.starts_with("/hooks/") && req.method == "POST" {
        // A receiver of the service's own signed events: takes anything.
        return Answer {
            status: 200,
            body: json!({"received": true}),
            applied: true,
        };
    }
    if req.path.starts_with("/api/v1/accounts/") {
        if req.headers.get("api_access_token") != Some(&shared.chatwoot_token) {
            return error(401, "You need to sign in or sign up before continuing.");
        }
        return chatwoot(state, req, &segments, body);
    }
    if req.path.starts_with("/api/v1/") {
        let wanted = format!("Token token={}", shared.zammad_token);
        if req.headers.get("authorization") != Some(&wanted) {
            return error(401, "authentication failed");
        }
        return zammad(state, req, &segments, body);
    }
    error(404, "no route")
}

fn zammad_ticket_json(id: u64, t: &ZammadTicket, expand: bool) -> Value {
    let mut v = fixture("zammad/ticket-show.json");
    v["id"] = json!(id);
    v["title"] = json!(t.title);
    v["priority_id"] = json!(t.priority_id);
    v["created_at"] = json!(t.created_at);
    v["close_at"] = if t.close_at.is_empty() {
        Value::Null
    } else {
        json!(t.close_at)
    };
    v["article_count"] = json!(t.articles.len());
    if expand {
        v["group"] = json!(t.group);
        v["state"] = json!(t.state);
        v["priority"] = json!(format!("{} level", t.priority_id));
    } else if let Some(o) = v.as_object_mut() {
        for k in ["group", "state", "priority", "customer"] {
            o.remove(k);
        }
    }
    v
}

fn zammad(state: &mut State, req: &Request, seg: &[&str], body: &Value) -> Answer {
    let expand = query_param(&req.query, "expand").as_deref() == Some("true");
    match (req.method.as_str(), &seg[2..]) {
        ("GET", ["tickets", "search"]) => {
            // Documented: `query`, `page`/`per_page`, `sort_by`/`order_by`,
            // `expand=true` answers an array of expanded tickets. The query
            // language is Elasticsearch's; the parts the importer sends are
            // understood here: `state.name:X`, `id:>N`, `close_at:>=DATE`, AND.
            let query = query_param(&req.query, "query").unwrap_or_default();
            let per_page: usize = query_param(&req.query, "per_page")
                .and_then(|v| v.parse().ok())
                .unwrap_or(50)
                .min(200);
            let page: usize = query_param(&req.query, "page")
                .and_then(|v| v.parse().ok())
                .unwrap_or(1)
                .max(1);
            let mut hits: Vec<(u64, &ZammadTicket)> = state
                .tickets
                .iter()
                .filter(|(id, t)| {
                    query.split(" AND ").all(|term| {
                        let term = term.trim();
                        if let Some(s) = term.strip_prefix("state.name:") {
                            t.state == s
                        } else if let Some(n) = term.strip_prefix("id:>") {
                            n.parse::<u64>().is_ok_and(|n| **id > n)
                        } else if let Some(d) = term.strip_prefix("close_at:>=") {
                            t.close_at.as_str() >= d
                        } else {
                            term.is_empty()
                        }
                    })
                })
                .map(|(id, t)| (*id, t))
                .collect();
            if query_param(&req.query, "sort_by").as_deref() == Some("id")
                && query_param(&req.query, "order_by").as_deref() == Some("desc")
            {
                hits.reverse();
            }
            let page_hits: Vec<Value> = hits
                .into_iter()
                .skip((page - 1) * per_page)
                .take(per_page)
                .map(|(id, t)| zammad_ticket_json(id, t, true))
                .collect();
            if expand {
                answer(200, Value::Array(page_hits))
            } else {
                let ids: Vec<Value> = page_hits.iter().map(|t| t["id"].clone()).collect();
                answer(
                    200,
                    json!({"tickets": ids, "tickets_count": ids.len(), "assets": {}}),
                )
            }
        }
        ("GET", ["tickets", id]) => match id.parse().ok().and_then(|id| state.tickets.get(&id)) {
            Some(t) => answer(200, zammad_ticket_json(id.parse().unwrap_or(0), t, expand)),
            None => error(404, "Couldn't find Ticket"),
        },
        ("PUT", ["tickets", id]) => {
            if let Err(e) = keys_ok(body, &["group", "group_id", "priority_id", "priority"], &[]) {
                return error(422, &e);
            }
            let Some(t) = id.parse().ok().and_then(|id| state.tickets.get_mut(&id)) else {
                return error(404, "Couldn't find Ticket");
            };
            if let Some(g) = body["group"].as_str() {
                t.group = g.to_string();
            }
            if let Some(p) = body["priority_id"].as_u64() {
                t.priority_id = p;
            }
            let v = zammad_ticket_json(id.parse().unwrap_or(0), t, false);
            Answer {
                status: 200,
                body: v,
                applied: true,
            }
        }
        ("GET", ["tags"]) => {
            let id: Option<u64> = query_param(&req.query, "o_id").and_then(|v| v.parse().ok());
            if query_param(&req.query, "object").as_deref() != Some("Ticket") {
                return error(422, "object must be Ticket");
            }
            match id.and_then(|id| state.tickets.get(&id)) {
                Some(t) => answer(200, json!({"tags": t.tags})),
                None => error(404, "Couldn't find Ticket"),
            }
        }
        ("POST", ["tags", "add"]) => {
            if let Err(e) = keys_ok(
                body,
                &["item", "object", "o_id"],
                &["item", "object", "o_id"],
            ) {
                return error(422, &e);
            }
            if body["object"] != "Ticket" || !body["item"].is_string() {
                return error(422, "item must be a string and object `Ticket`");
            }
            let id = body["o_id"]
                .as_u64()
                .or_else(|| body["o_id"].as_str().and_then(|s| s.parse().ok()));
            let Some(t) = id.and_then(|id| state.tickets.get_mut(&id)) else {
                return error(404, "Couldn't find Ticket");
            };
            let added = t
                .tags
                .insert(body["item"].as_str().unwrap_or_default().to_string());
            Answer {
                status: 201,
                body: json!(true),
                applied: added,
            }
        }
        ("GET", ["ticket_articles", "by_ticket", id]) => {
            match id.parse().ok().and_then(|id| state.tickets.get(&id)) {
                Some(t) => answer(200, Value::Array(t.articles.clone())),
                None => error(404, "Couldn't find Ticket"),
            }
        }
        ("POST", ["ticket_articles"]) => {
            let allowed = [
                "ticket_id",
                "to",
                "cc",
                "subject",
                "body",
                "content_type",
                "type",
                "internal",
                "time_unit",
            ];
            if let Err(e) = keys_ok(body, &allowed, &["ticket_id", "body"]) {
                return error(422, &e);
            }
            if !body["internal"].is_boolean() && !body["internal"].is_null() {
                return error(422, "internal must be a boolean");
            }
            let id = body["ticket_id"].as_u64();
            state.next_article += 1;
            let article_id = state.next_article;
            let Some(t) = id.and_then(|id| state.tickets.get_mut(&id)) else {
                return error(404, "Couldn't find Ticket");
            };
            let mut a = fixture("zammad/article-created.json");
            a["id"] = json!(article_id);
            a["ticket_id"] = body["ticket_id"].clone();
            for k in ["subject", "body", "content_type", "type", "internal"] {
                if !body[k].is_null() {
                    a[k] = body[k].clone();
                }
            }
            t.articles.push(a.clone());
            Answer {
                status: 201,
                body: a,
                applied: true,
            }
        }
        _ => error(404, "no route"),
    }
}

fn chatwoot(state: &mut State, req: &Request, seg: &[&str], body: &Value) -> Answer {
    // api/v1/accounts/{account}/conversations/{id}/(messages|toggle_status)
    let parse = |s: &str| s.parse::<u64>().ok();
    match (req.method.as_str(), &seg[3..]) {
        ("POST", [account, "conversations", conv, "messages"]) => {
            let (Some(account), Some(conv)) = (parse(account), parse(conv)) else {
                return error(404, "Resource could not be found");
            };
            let allowed = [
                "content",
                "message_type",
                "private",
                "content_type",
                "content_attributes",
                "template_params",
            ];
            if let Err(e) = keys_ok(body, &allowed, &["content"]) {
                return error(422, &e);
            }
            if !matches!(body["message_type"].as_str(), None | Some("outgoing")) {
                return error(422, "agent bots send outgoing messages");
            }
            if !body["private"].is_boolean() && !body["private"].is_null() {
                return error(422, "private must be a boolean");
            }
            if let Some(ct) = body["content_type"].as_str() {
                let known = [
                    "text",
                    "input_email",
                    "cards",
                    "input_select",
                    "form",
                    "article",
                ];
                if !known.contains(&ct) {
                    return error(422, "unknown content_type");
                }
            }
            state.next_message += 1;
            let mut m = fixture("chatwoot/message-create-response.json");
            m["id"] = json!(state.next_message);
            m["conversation_id"] = json!(conv);
            for k in ["content", "private", "content_type", "content_attributes"] {
                if !body[k].is_null() {
                    m[k] = body[k].clone();
                }
            }
            state
                .messages
                .entry((account, conv))
                .or_default()
                .push(m.clone());
            Answer {
                status: 200,
                body: m,
                applied: true,
            }
        }
        ("POST", [account, "conversations", conv, "toggle_status"]) => {
            let (Some(account), Some(conv)) = (parse(account), parse(conv)) else {
                return error(404, "Resource could not be found");
            };
            if let Err(e) = keys_ok(body, &["status", "snoozed_until"], &["status"]) {
                return error(422, &e);
            }
            let status = body["status"].as_str().unwrap_or_default();
            if !["open", "resolved", "pending", "snoozed"].contains(&status) {
                return error(422, "unknown status");
            }
            let before = state.statuses.insert((account, conv), status.to_string());
            let mut r = fixture("chatwoot/toggle-status-response.json");
            r["payload"]["current_status"] = json!(status);
            r["payload"]["conversation_id"] = json!(conv);
            Answer {
                status: 200,
                body: r,
                applied: before.as_deref() != Some(status),
            }
        }
        _ => error(404, "Resource could not be found"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding() {
        assert_eq!(
            percent_decode("state.name%3Aclosed+AND+id%3A%3E5"),
            "state.name:closed AND id:>5"
        );
        assert_eq!(percent_decode("a%"), "a%");
    }
}
