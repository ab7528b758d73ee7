//! Zammad: the trigger webhook's payload, the write-backs a triage becomes
//! (group and priority, tags, an internal note with the evidence), and the
//! import of closed tickets with their resolutions (`triage import zammad`).

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;
use triage::api::{Suggestions, TriageResult};

use super::outbox::Step;
use super::settings::ZammadSettings;

/// The parts of the default trigger payload the connector reads.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct WebhookPayload {
    /// The ticket.
    pub ticket: ZammadTicket,
    /// The article that fired the trigger (absent for some triggers).
    pub article: Option<ZammadArticle>,
}

/// A ticket as the webhook (or the API with `expand=true`) sends it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ZammadTicket {
    /// Ticket id (the API's, not the number shown to people).
    pub id: u64,
    /// The number shown to people.
    pub number: Value,
    /// Title.
    pub title: String,
    /// The customer's user id.
    pub customer_id: Value,
    /// Creation time.
    pub created_at: String,
    /// Close time.
    pub close_at: Option<String>,
    /// Group: a name (API with `expand=true`) or an object (webhook).
    pub group: Value,
    /// Priority id.
    pub priority_id: Option<u64>,
}

/// An article as the webhook or the API sends it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ZammadArticle {
    /// Body (HTML when `content_type` is `text/html`).
    pub body: String,
    /// `text/html` or `text/plain`.
    pub content_type: String,
    /// `Customer`, `Agent` or `System`.
    pub sender: String,
    /// Internal notes are for agents only.
    pub internal: bool,
    /// Creation time.
    pub created_at: String,
    /// Subject.
    pub subject: Option<String>,
}

impl ZammadArticle {
    /// The body as plain text.
    pub fn text(&self) -> String {
        if self.content_type.contains("html") || self.body.contains('<') {
            html_to_text(&self.body)
        } else {
            self.body.trim().to_string()
        }
    }
}

/// Plain text of an article's HTML: tags dropped (block ends become line
/// breaks), the common entities decoded, blank lines collapsed.
pub fn html_to_text(html: &str) -> String {
    let mut out = String::new();
    let mut rest = html;
    while let Some(start) = rest.find('<') {
        out.push_str(&rest[..start]);
        let Some(end) = rest[start..].find('>') else {
            rest = "";
            break;
        };
        let tag = rest[start + 1..start + end].trim().to_ascii_lowercase();
        let name = tag
            .trim_start_matches('/')
            .split_whitespace()
            .next()
            .unwrap_or("");
        if matches!(
            name,
            "br" | "br/" | "p" | "div" | "li" | "tr" | "h1" | "h2" | "h3" | "blockquote"
        ) {
            out.push('\n');
        }
        rest = &rest[start + end + 1..];
    }
    out.push_str(rest);
    let decoded = out
        .replace("&nbsp;", " ")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&");
    decoded
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Escapes text for the note's HTML.
fn esc(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The id our index keeps a Zammad ticket under.
pub fn our_id(zammad_id: u64) -> String {
    format!("zammad-{zammad_id}")
}

/// The note's subject: it carries the delivery's reference, which the
/// outbox looks for before posting the note again.
pub fn note_subject(reference: &str) -> String {
    format!("Triage suggestion [ref {reference}]")
}

/// The write-backs of a triage: group and priority (when decided and
/// mapped), tags (the category's, or the needs-human tag when the
/// classifier abstained; the duplicate tag), and the internal note.
pub fn plan(
    z: &ZammadSettings,
    ticket: u64,
    result: &TriageResult,
    suggestions: &Suggestions,
    reference: &str,
) -> Vec<Step> {
    let mut steps = Vec::new();
    let group = result
        .queue
        .label
        .as_ref()
        .filter(|_| !result.queue.abstain && !result.category.abstain)
        .and_then(|q| z.groups.get(q))
        .cloned();
    let priority_id = result
        .priority
        .label
        .as_ref()
        .and_then(|p| z.priorities.get(p))
        .copied();
    if group.is_some() || priority_id.is_some() {
        steps.push(Step::ZammadTicket {
            ticket,
            group,
            priority_id,
        });
    }
    let mut tags = Vec::new();
    match result.category.label.as_ref() {
        Some(c) if !result.category.abstain => tags.push(z.tag_for(c)),
        _ => {}
    }
    if result.category.abstain || result.needs_human {
        tags.push(z.needs_human_tag.clone());
    }
    if !result.duplicates.is_empty() {
        tags.push(z.duplicate_tag.clone());
    }
    tags.dedup();
    for tag in tags {
        steps.push(Step::ZammadTag { ticket, tag });
    }
    steps.push(Step::ZammadNote {
        ticket,
        subject: note_subject(reference),
        body: note_html(result, suggestions),
    });
    steps
}

fn label_line(name: &str, d: &triage::api::LabelDecision) -> String {
    match (&d.label, d.abstain) {
        (Some(l), false) => format!(
            "<li><b>{name}</b>: {} ({:.0}%)</li>",
            esc(l),
            d.confidence * 100.0
        ),
        (Some(l), true) => format!(
            "<li><b>{name}</b>: left to an agent (best guess {}, {:.0}%, below the pack's threshold)</li>",
            esc(l),
            d.confidence * 100.0
        ),
        (None, _) => format!("<li><b>{name}</b>: —</li>"),
    }
}

/// The internal note: the decision with its confidence, the fields found,
/// duplicates, similar resolved tickets with their resolutions, articles,
/// and the evidence.
pub fn note_html(r: &TriageResult, s: &Suggestions) -> String {
    let mut h = String::from(
        "<p><b>Triage</b> (automatic suggestion; the ticket is yours to change)</p><ul>",
    );
    h.push_str(&label_line("Category", &r.category));
    h.push_str(&label_line("Priority", &r.priority));
    h.push_str(&label_line("Queue", &r.queue));
    if r.needs_human {
        h.push_str("<li><b>Needs a person</b>: yes</li>");
    }
    if r.escalation_risk.flagged {
        h.push_str(&format!(
            "<li><b>Escalation risk</b>: {:.0}% — {}</li>",
            r.escalation_risk.score * 100.0,
            esc(&r.escalation_risk.reasons.join("; "))
        ));
    }
    h.push_str("</ul>");
    if !r.fields.is_empty() {
        h.push_str("<p><b>Fields</b></p><ul>");
        for f in &r.fields {
            h.push_str(&format!(
                "<li>{}: {} <i>({})</i></li>",
                esc(&f.name),
                esc(&f.value),
                esc(&f.source)
            ));
        }
        h.push_str("</ul>");
    }
    if !r.duplicates.is_empty() {
        h.push_str("<p><b>Possible duplicates</b></p><ul>");
        for d in &r.duplicates {
            h.push_str(&format!(
                "<li>{} — {} ({:.0}% similar{})</li>",
                esc(&d.ticket.id),
                esc(&d.ticket.title),
                d.similarity * 100.0,
                if d.same_customer {
                    ", same customer"
                } else {
                    ""
                }
            ));
        }
        h.push_str("</ul>");
    }
    if !s.similar_tickets.is_empty() {
        h.push_str("<p><b>Similar resolved tickets</b></p><ul>");
        for hit in s.similar_tickets.iter().take(5) {
            let (title, resolution) = match &hit.doc {
                indexer::Document::Ticket(t) => (t.title.clone(), t.resolution.clone()),
                indexer::Document::Article(a) => (a.question.clone(), String::new()),
            };
            h.push_str(&format!(
                "<li>{} — {}{}</li>",
                esc(&hit.id),
                esc(&title),
                if resolution.is_empty() {
                    String::new()
                } else {
                    format!("<br>Resolution: {}", esc(&resolution))
                }
            ));
        }
        h.push_str("</ul>");
    }
    if let Some(p) = &s.predicted_resolution {
        h.push_str(&format!(
            "<p><b>Likely resolution</b> ({:.0}%): {}</p>",
            p.probability * 100.0,
            esc(&p.text)
        ));
    }
    if !s.articles.is_empty() {
        h.push_str("<p><b>Suggested articles</b></p><ul>");
        for hit in s.articles.iter().take(3) {
            let title = match &hit.doc {
                indexer::Document::Ticket(t) => t.title.clone(),
                indexer::Document::Article(a) => a.question.clone(),
            };
            h.push_str(&format!("<li>{} — {}</li>", esc(&hit.id), esc(&title)));
        }
        h.push_str("</ul>");
    }
    let reasons: Vec<&String> = r
        .category
        .reasons
        .iter()
        .chain(&r.priority.reasons)
        .collect();
    if !reasons.is_empty() {
        h.push_str("<p><b>Evidence</b></p><ul>");
        for reason in reasons {
            h.push_str(&format!("<li>{}</li>", esc(reason)));
        }
        h.push_str("</ul>");
    }
    h
}

/// How Zammad's labels map back to ours, for the import (the inverse of the
/// settings' mapping; a priority id several of ours share maps to none).
#[derive(Debug, Clone, Default)]
pub struct Reverse {
    /// Group name → queue.
    pub groups: BTreeMap<String, String>,
    /// Priority id → priority.
    pub priorities: BTreeMap<u64, String>,
    /// Tag → leaf category.
    pub tags: BTreeMap<String, String>,
}

impl Reverse {
    /// The inverse of `z`'s mapping; tags name leaf categories of `pack`
    /// (their own id, or the mapped tag).
    pub fn new(z: Option<&ZammadSettings>, pack: &triage::Pack) -> Reverse {
        let mut r = Reverse::default();
        for c in pack.leaf_categories() {
            let tag = z.map_or_else(|| c.id.clone(), |z| z.tag_for(&c.id));
            r.tags.insert(tag, c.id.clone());
        }
        if let Some(z) = z {
            for (queue, group) in &z.groups {
                r.groups.insert(group.clone(), queue.clone());
            }
            let mut seen: BTreeMap<u64, usize> = BTreeMap::new();
            for id in z.priorities.values() {
                *seen.entry(*id).or_default() += 1;
            }
            for (p, id) in &z.priorities {
                if seen[id] == 1 {
                    r.priorities.insert(*id, p.clone());
                }
            }
        }
        r
    }
}

/// One closed Zammad ticket as our ticket: the first customer article is the
/// request, the last public agent reply the resolution; labels from the
/// group, priority and tags where the mapping knows them.
pub fn to_ticket(
    t: &ZammadTicket,
    articles: &[ZammadArticle],
    tags: &[String],
    reverse: &Reverse,
    tenant: &str,
) -> Option<indexer::Ticket> {
    let request = articles
        .iter()
        .find(|a| a.sender == "Customer" && !a.internal)
        .or_else(|| articles.iter().find(|a| !a.internal))?;
    let resolution = articles
        .iter()
        .rev()
        .find(|a| a.sender == "Agent" && !a.internal)
        .map(ZammadArticle::text)
        .unwrap_or_default();
    let body = request.text();
    if body.is_empty() && t.title.trim().is_empty() {
        return None;
    }
    let group = t
        .group
        .as_str()
        .map(str::to_string)
        .or_else(|| t.group["name"].as_str().map(str::to_string))
        .unwrap_or_default();
    let customer = match &t.customer_id {
        Value::Null => String::new(),
        v => format!(
            "zammad:{}",
            v.as_u64()
                .map(|n| n.to_string())
                .unwrap_or_else(|| v.to_string())
        ),
    };
    Some(indexer::Ticket {
        id: our_id(t.id),
        title: t.title.trim().to_string(),
        body,
        category: tags
            .iter()
            .find_map(|tag| reverse.tags.get(tag).cloned())
            .unwrap_or_default(),
        priority: t
            .priority_id
            .and_then(|p| reverse.priorities.get(&p).cloned())
            .unwrap_or_default(),
        queue: reverse.groups.get(&group).cloned().unwrap_or_default(),
        status: "closed".into(),
        resolution,
        customer_id: customer,
        channel: "zammad".into(),
        created_at: normalise_time(&t.created_at),
        tenant: tenant.to_string(),
        ..indexer::Ticket::default()
    })
}

/// Zammad's times (`2021-06-01T11:57:17.935Z`) are RFC 3339 already; an
/// unreadable one is left out rather than refused.
fn normalise_time(t: &str) -> String {
    use time::format_description::well_known::Rfc3339;
    match time::OffsetDateTime::parse(t, &Rfc3339) {
        Ok(_) => t.to_string(),
        Err(_) => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_bodies_become_plain_text() {
        assert_eq!(
            html_to_text(
                "This is a simple Webhook Test.<div><br></div><div>\n<img src=\"x\"><br>\n</div>"
            ),
            "This is a simple Webhook Test."
        );
        assert_eq!(html_to_text("a&amp;b<br>c &lt;d&gt;"), "a&b\nc <d>");
        assert_eq!(html_to_text("<p>空调</p><p>不制冷</p>"), "空调\n不制冷");
    }

    #[test]
    fn closed_tickets_map_with_their_last_agent_reply() {
        let article = |sender: &str, body: &str, internal: bool| ZammadArticle {
            body: body.into(),
            content_type: "text/html".into(),
            sender: sender.into(),
            internal,
            ..ZammadArticle::default()
        };
        let t = ZammadTicket {
            id: 7,
            title: "Fridge".into(),
            group: Value::String("Field".into()),
            priority_id: Some(2),
            customer_id: serde_json::json!(9),
            created_at: "2021-06-01T11:57:17.935Z".into(),
            ..ZammadTicket::default()
        };
        let reverse = Reverse {
            groups: [("Field".to_string(), "field_repair".to_string())].into(),
            priorities: [(2, "P2".to_string())].into(),
            tags: [("not-cooling".to_string(), "repair.not_cooling".to_string())].into(),
        };
        let articles = [
            article("Customer", "<p>冰箱不制冷</p>", false),
            article("Agent", "first reply", false),
            article("Agent", "internal", true),
            article("Agent", "<p>Replaced the compressor</p>", false),
        ];
        let ours = to_ticket(&t, &articles, &["not-cooling".into()], &reverse, "acme").unwrap();
        assert_eq!(ours.id, "zammad-7");
        assert_eq!(ours.body, "冰箱不制冷");
        assert_eq!(ours.resolution, "Replaced the compressor");
        assert_eq!(
            (
                ours.category.as_str(),
                ours.priority.as_str(),
                ours.queue.as_str()
            ),
            ("repair.not_cooling", "P2", "field_repair")
        );
        assert_eq!(
            (ours.customer_id.as_str(), ours.tenant.as_str()),
            ("zammad:9", "acme")
        );
        assert!(to_ticket(&t, &[], &[], &reverse, "").is_none());
    }
}
