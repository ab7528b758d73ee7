//! One outbox step as an HTTP call (ureq, blocking, on the outbox's own
//! thread), with the secrets looked up at send time (the outbox's files hold
//! none), the check of whether an earlier attempt was applied, and the
//! answer classified: done, retry (with `Retry-After`), or given up.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use super::outbox::Step;
use super::settings::{Settings, ZammadSettings};
use super::signing;

/// What became of one attempt of a step.
#[derive(Debug, Clone, PartialEq)]
pub enum StepOutcome {
    /// Applied (or found applied by the check).
    Done,
    /// Failed in a way waiting may cure.
    Retry {
        /// What happened.
        error: String,
        /// The other side's `Retry-After`.
        retry_after: Option<Duration>,
        /// Whether the call may have been applied (no answer came).
        maybe_applied: bool,
    },
    /// Will not succeed: given up.
    Permanent(String),
}

/// What the outbox knows of a step's earlier attempts.
#[derive(Debug, Clone, Copy, Default)]
pub struct Prior {
    /// An attempt may have reached the other side without an answer (a
    /// timeout, a dropped connection, or in flight when the process died).
    pub in_flight: bool,
    /// An attempt failed before.
    pub retried: bool,
}

/// Sends steps.
pub struct Deliverer {
    agent: ureq::Agent,
    settings: Arc<Settings>,
}

/// An answer: status, body, `Retry-After`.
type Answer = (u16, String, Option<Duration>);

/// `Retry-After` as seconds or an HTTP date.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(
        at.duration_since(std::time::SystemTime::now())
            .unwrap_or_default(),
    )
}

/// Classifies an answer or a transport failure.
fn classify(result: Result<Answer, ureq::Error>) -> Result<String, StepOutcome> {
    match result {
        Ok((s, body, _)) if (200..300).contains(&s) => Ok(body),
        Ok((429, _, retry_after)) => Err(StepOutcome::Retry {
            error: "HTTP 429 (rate limited)".into(),
            retry_after,
            maybe_applied: false,
        }),
        Ok((s, _, retry_after)) if s >= 500 || s == 408 => Err(StepOutcome::Retry {
            error: format!("HTTP {s}"),
            retry_after,
            maybe_applied: false,
        }),
        Ok((s, body, _)) => Err(StepOutcome::Permanent(format!(
            "HTTP {s}: {}",
            body.chars().take(300).collect::<String>()
        ))),
        Err(e) => {
            // Refused or unresolvable: nothing was sent. Anything else (a
            // timeout, a reset, a connection closed before the answer) may
            // have been applied.
            let never_sent = match &e {
                ureq::Error::Io(io) => io.kind() == std::io::ErrorKind::ConnectionRefused,
                ureq::Error::HostNotFound | ureq::Error::ConnectionFailed => true,
                _ => false,
            };
            if let ureq::Error::BadUri(u) = &e {
                return Err(StepOutcome::Permanent(format!("bad URL {u}")));
            }
            Err(StepOutcome::Retry {
                error: e.to_string(),
                retry_after: None,
                maybe_applied: !never_sent,
            })
        }
    }
}

impl Deliverer {
    /// A deliverer with `settings`' endpoints; each call waits at most `timeout`.
    pub fn new(settings: Arc<Settings>, timeout: Duration) -> Deliverer {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            .http_status_as_error(false)
            .max_redirects(0)
            .user_agent(concat!("triage/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        Deliverer { agent, settings }
    }

    fn call(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, String)],
        body: Option<&str>,
    ) -> Result<Answer, ureq::Error> {
        let mut req = ureq::http::Request::builder().method(method).uri(url);
        for (k, v) in headers {
            req = req.header(*k, v.as_str());
        }
        if body.is_some() {
            req = req.header("Content-Type", "application/json");
        }
        let req = req
            .body(body.unwrap_or_default().to_string())
            .map_err(ureq::Error::Http)?;
        let mut res = self.agent.run(req)?;
        let status = res.status().as_u16();
        let retry_after = res
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        let text = res
            .body_mut()
            .with_config()
            .limit(4 * 1024 * 1024)
            .read_to_string()
            .unwrap_or_default();
        Ok((status, text, retry_after))
    }

    fn zammad_call(
        &self,
        z: &ZammadSettings,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Result<String, StepOutcome> {
        let auth = format!("Token token={}", z.token.expose());
        let body = body.map(|b| b.to_string());
        classify(self.call(
            method,
            &format!("{}{path}", z.url),
            &[("Authorization", auth)],
            body.as_deref(),
        ))
    }

    fn zammad_get(&self, z: &ZammadSettings, path: &str) -> Result<Value, StepOutcome> {
        let text = self.zammad_call(z, "GET", path, None)?;
        serde_json::from_str(&text).map_err(|e| StepOutcome::Retry {
            error: format!("GET {path}: the answer is not JSON: {e}"),
            retry_after: None,
            maybe_applied: true,
        })
    }

    /// Runs `step` for `tenant`: first checks whether it was applied already
    /// when an earlier attempt may have been (see the outbox's docs).
    pub fn run(&self, tenant: &str, step: &Step, prior: Prior) -> StepOutcome {
        let check = prior.in_flight || prior.retried;
        let result = match step {
            Step::ZammadTicket {
                ticket,
                group,
                priority_id,
            } => self.with_zammad(tenant, |z| {
                if check {
                    let t = self.zammad_get(z, &format!("/api/v1/tickets/{ticket}?expand=true"))?;
                    let group_ok = group.as_ref().is_none_or(|g| t["group"] == json!(g));
                    let priority_ok = priority_id.is_none_or(|p| t["priority_id"] == json!(p));
                    if group_ok && priority_ok {
                        return Ok(());
                    }
                }
                let mut body = json!({});
                if let Some(g) = group {
                    body["group"] = json!(g);
                }
                if let Some(p) = priority_id {
                    body["priority_id"] = json!(p);
                }
                self.zammad_call(z, "PUT", &format!("/api/v1/tickets/{ticket}"), Some(body))
                    .map(drop)
            }),
            Step::ZammadTag { ticket, tag } => self.with_zammad(tenant, |z| {
                if check {
                    let t =
                        self.zammad_get(z, &format!("/api/v1/tags?object=Ticket&o_id={ticket}"))?;
                    if t["tags"]
                        .as_array()
                        .is_some_and(|tags| tags.contains(&json!(tag)))
                    {
                        return Ok(());
                    }
                }
                let body = json!({"item": tag, "object": "Ticket", "o_id": ticket});
                self.zammad_call(z, "POST", "/api/v1/tags/add", Some(body))
                    .map(drop)
            }),
            Step::ZammadNote {
                ticket,
                subject,
                body,
            } => self.with_zammad(tenant, |z| {
                if check {
                    let articles =
                        self.zammad_get(z, &format!("/api/v1/ticket_articles/by_ticket/{ticket}"))?;
                    let found = articles
                        .as_array()
                        .is_some_and(|a| a.iter().any(|a| a["subject"] == json!(subject)));
                    if found {
                        return Ok(());
                    }
                }
                let article = json!({
                    "ticket_id": ticket,
                    "subject": subject,
                    "body": body,
                    "content_type": "text/html",
                    "type": "note",
                    "internal": true,
                });
                self.zammad_call(z, "POST", "/api/v1/ticket_articles", Some(article))
                    .map(drop)
            }),
            Step::ChatwootMessage {
                account,
                conversation,
                content,
                private,
            } => {
                if prior.in_flight {
                    // A bot's token cannot list a conversation's messages:
                    // resending could show the customer the same reply twice.
                    return StepOutcome::Permanent(
                        "an earlier attempt got no answer and may have been delivered; not resent, so \
                         the conversation never gets the message twice"
                            .into(),
                    );
                }
                let body =
                    json!({"content": content, "message_type": "outgoing", "private": private});
                self.chatwoot_post(
                    tenant,
                    &format!("/api/v1/accounts/{account}/conversations/{conversation}/messages"),
                    body,
                )
            }
            Step::ChatwootStatus {
                account,
                conversation,
                status,
            } => self.chatwoot_post(
                tenant,
                &format!("/api/v1/accounts/{account}/conversations/{conversation}/toggle_status"),
                json!({"status": status}),
            ),
            Step::Event {
                url,
                event_id,
                event_type,
                body,
            } => {
                let Some(endpoint) = self
                    .settings
                    .webhooks
                    .iter()
                    .find(|w| w.tenant == tenant && &w.url == url)
                else {
                    return StepOutcome::Permanent(format!(
                        "no webhook endpoint {url} is configured for this tenant any more"
                    ));
                };
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0);
                let signature = signing::sign_event(endpoint.secret.expose(), body.as_bytes(), now);
                classify(self.call(
                    "POST",
                    url,
                    &[
                        ("Triage-Signature", signature),
                        ("Triage-Event-Id", event_id.clone()),
                        ("Triage-Event-Type", event_type.clone()),
                    ],
                    Some(body),
                ))
                .map(drop)
            }
        };
        match result {
            Ok(()) => StepOutcome::Done,
            Err(outcome) => outcome,
        }
    }

    fn with_zammad(
        &self,
        tenant: &str,
        f: impl FnOnce(&ZammadSettings) -> Result<(), StepOutcome>,
    ) -> Result<(), StepOutcome> {
        match self.settings.zammad(tenant) {
            Some(z) => f(z),
            None => Err(StepOutcome::Permanent(
                "no Zammad is configured for this tenant any more".into(),
            )),
        }
    }

    fn chatwoot_post(&self, tenant: &str, path: &str, body: Value) -> Result<(), StepOutcome> {
        let Some(c) = self.settings.chatwoot(tenant) else {
            return Err(StepOutcome::Permanent(
                "no Chatwoot is configured for this tenant any more".into(),
            ));
        };
        classify(self.call(
            "POST",
            &format!("{}{path}", c.url),
            &[("api_access_token", c.bot_token.expose().to_string())],
            Some(&body.to_string()),
        ))
        .map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_takes_seconds_or_a_date() {
        assert_eq!(parse_retry_after("12"), Some(Duration::from_secs(12)));
        let later = std::time::SystemTime::now() + Duration::from_secs(90);
        let d = parse_retry_after(&httpdate::fmt_http_date(later)).unwrap();
        assert!(
            d > Duration::from_secs(80) && d <= Duration::from_secs(90),
            "{d:?}"
        );
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn answers_are_classified() {
        assert_eq!(classify(Ok((201, "x".into(), None))), Ok("x".into()));
        let retry = classify(Ok((429, String::new(), Some(Duration::from_secs(3))))).unwrap_err();
        assert_eq!(
            retry,
            StepOutcome::Retry {
                error: "HTTP 429 (rate limited)".into(),
                retry_after: Some(Duration::from_secs(3)),
                maybe_applied: false
            }
        );
        assert!(matches!(
            classify(Ok((503, String::new(), None))),
            Err(StepOutcome::Retry { .. })
        ));
        assert!(
            matches!(classify(Ok((422, "bad".into(), None))), Err(StepOutcome::Permanent(m)) if m.contains("422: bad"))
        );
        let refused = ureq::Error::Io(std::io::ErrorKind::ConnectionRefused.into());
        assert!(matches!(
            classify(Err(refused)),
            Err(StepOutcome::Retry {
                maybe_applied: false,
                ..
            })
        ));
        let reset = ureq::Error::Io(std::io::ErrorKind::ConnectionReset.into());
        assert!(matches!(
            classify(Err(reset)),
            Err(StepOutcome::Retry {
                maybe_applied: true,
                ..
            })
        ));
    }
}
