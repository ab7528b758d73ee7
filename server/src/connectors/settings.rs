//! The connectors file (`--connectors FILE`, TOML): which Zammad, Chatwoot
//! and webhook endpoints each tenant talks to, their secrets, and how our
//! queues, priorities and categories map to Zammad's groups, priority ids
//! and tags. Read and checked once at start, against the pack: every error
//! names the file, the line and the key, and no error repeats a secret.
//!
//! ```toml
//! [[zammad]]
//! tenant = ""                                   # the default tenant
//! url = "https://zammad.example.com"
//! token_file = "/etc/triage/zammad-token"       # or token = "..."
//! webhook_secret_file = "/etc/triage/zammad-hmac"
//! needs_human_tag = "needs-human"               # the defaults
//! duplicate_tag = "possible-duplicate"
//! [zammad.groups]                               # queue → group name
//! field_repair = "Field repair"
//! [zammad.priorities]                           # P0..P3 → priority id
//! P0 = 3
//! [zammad.tags]                                 # category → tag (default: the category id)
//! "repair.no_power" = "no-power"
//!
//! [[chatwoot]]
//! tenant = ""
//! url = "https://chat.example.com"
//! account_id = 1                                # optional: only this account
//! bot_token_file = "/etc/triage/chatwoot-bot"
//! webhook_secret_file = "/etc/triage/chatwoot-secret"   # Chatwoot ≥ 4.13 signs agent-bot webhooks
//! # url_token_file = "..."                      # older Chatwoot: a token in the webhook URL instead
//!
//! [[webhooks]]
//! tenant = ""
//! url = "https://hooks.example.com/triage"
//! secret_file = "/etc/triage/webhook-secret"
//! events = ["triage.decided", "chat.handoff", "phrasing.learned"]   # or ["*"]
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::events::EVENT_TYPES;

/// A secret read from the file or the file it names; never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// A secret with this value (tests, and the values read at start).
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The value, for signing or an `Authorization` header only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// One tenant's Zammad: where it is, its secrets, and the label mapping.
#[derive(Debug, Clone)]
pub struct ZammadSettings {
    /// The tenant whose tickets these are (`""` = default tenant).
    pub tenant: String,
    /// Base URL, without a trailing slash.
    pub url: String,
    /// API token of a user with `ticket.agent` (`Authorization: Token token=…`).
    pub token: Secret,
    /// The webhook's HMAC-SHA1 signature token.
    pub webhook_secret: Secret,
    /// Our queue id → Zammad group name.
    pub groups: BTreeMap<String, String>,
    /// Our priority (`P0`..`P3`) → Zammad priority id.
    pub priorities: BTreeMap<String, u64>,
    /// Our category id → Zammad tag (unmapped categories are tagged with their id).
    pub tags: BTreeMap<String, String>,
    /// Tag of tickets the classifier abstained on (or that need a human).
    pub needs_human_tag: String,
    /// Tag of tickets with a likely duplicate.
    pub duplicate_tag: String,
}

impl ZammadSettings {
    /// The tag for a category: the mapped one, else the category id.
    pub fn tag_for(&self, category: &str) -> String {
        self.tags
            .get(category)
            .cloned()
            .unwrap_or_else(|| category.to_string())
    }
}

/// One tenant's Chatwoot agent bot.
#[derive(Debug, Clone)]
pub struct ChatwootSettings {
    /// The tenant whose customers these are.
    pub tenant: String,
    /// Base URL, without a trailing slash.
    pub url: String,
    /// Only events of this account are answered (all when `None`).
    pub account_id: Option<u64>,
    /// The agent bot's access token (`api_access_token`).
    pub bot_token: Secret,
    /// The agent bot's signing secret (Chatwoot ≥ 4.13): `X-Chatwoot-Signature` required.
    pub webhook_secret: Option<Secret>,
    /// A token the webhook URL must carry (`?token=`), for Chatwoot versions that do not sign.
    pub url_token: Option<Secret>,
}

/// One endpoint that receives signed events.
#[derive(Debug, Clone)]
pub struct WebhookSettings {
    /// Whose events it receives.
    pub tenant: String,
    /// Where they are posted.
    pub url: String,
    /// The HMAC-SHA256 key of `Triage-Signature`.
    pub secret: Secret,
    /// Event types it receives (`*` = all).
    pub events: BTreeSet<String>,
}

impl WebhookSettings {
    /// Whether this endpoint receives `event_type`.
    pub fn wants(&self, event_type: &str) -> bool {
        self.events.contains("*") || self.events.contains(event_type)
    }
}

/// How the outbox retries a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Delay before the first retry (doubled each time, with jitter).
    pub base: Duration,
    /// Longest delay between two attempts (a `Retry-After` may ask for more).
    pub max: Duration,
    /// Attempts of one call before the delivery is given up (and surfaced).
    pub max_attempts: u32,
    /// Longest wait for one call's answer.
    pub timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            base: Duration::from_millis(super::DEFAULT_OUTBOX_BACKOFF_MS),
            max: Duration::from_millis(super::DEFAULT_OUTBOX_MAX_BACKOFF_MS),
            max_attempts: super::DEFAULT_OUTBOX_MAX_ATTEMPTS,
            timeout: Duration::from_millis(super::DEFAULT_OUTBOX_TIMEOUT_MS),
        }
    }
}

/// Everything the connectors need: the file's endpoints, the widget's
/// origins and the retry policy.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// Zammad instances, one per tenant at most.
    pub zammad: Vec<ZammadSettings>,
    /// Chatwoot agent bots, one per tenant at most.
    pub chatwoot: Vec<ChatwootSettings>,
    /// Endpoints of the signed outgoing events.
    pub webhooks: Vec<WebhookSettings>,
    /// Origins whose pages may call the widget's routes (CORS); none by default.
    pub widget_origins: Vec<String>,
    /// The outbox's retries.
    pub policy: RetryPolicy,
}

impl Settings {
    /// The Zammad of `tenant`.
    pub fn zammad(&self, tenant: &str) -> Option<&ZammadSettings> {
        self.zammad.iter().find(|z| z.tenant == tenant)
    }

    /// The Chatwoot of `tenant`.
    pub fn chatwoot(&self, tenant: &str) -> Option<&ChatwootSettings> {
        self.chatwoot.iter().find(|c| c.tenant == tenant)
    }

    /// Whether a page of `origin` may call the widget's routes.
    pub fn origin_allowed(&self, origin: &str) -> bool {
        let origin = origin.trim_end_matches('/');
        self.widget_origins
            .iter()
            .any(|o| o.trim_end_matches('/').eq_ignore_ascii_case(origin))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    zammad: Vec<RawZammad>,
    #[serde(default)]
    chatwoot: Vec<RawChatwoot>,
    #[serde(default)]
    webhooks: Vec<RawWebhook>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawZammad {
    #[serde(default)]
    tenant: String,
    url: Spanned<String>,
    token: Option<Spanned<String>>,
    token_file: Option<Spanned<String>>,
    webhook_secret: Option<Spanned<String>>,
    webhook_secret_file: Option<Spanned<String>>,
    #[serde(default)]
    groups: BTreeMap<Spanned<String>, Spanned<String>>,
    #[serde(default)]
    priorities: BTreeMap<Spanned<String>, Spanned<u64>>,
    #[serde(default)]
    tags: BTreeMap<Spanned<String>, Spanned<String>>,
    needs_human_tag: Option<Spanned<String>>,
    duplicate_tag: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawChatwoot {
    #[serde(default)]
    tenant: String,
    url: Spanned<String>,
    account_id: Option<u64>,
    bot_token: Option<Spanned<String>>,
    bot_token_file: Option<Spanned<String>>,
    webhook_secret: Option<Spanned<String>>,
    webhook_secret_file: Option<Spanned<String>>,
    url_token: Option<Spanned<String>>,
    url_token_file: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWebhook {
    #[serde(default)]
    tenant: String,
    url: Spanned<String>,
    secret: Option<Spanned<String>>,
    secret_file: Option<Spanned<String>>,
    events: Spanned<Vec<Spanned<String>>>,
}

/// 1-based line of a byte offset.
fn line_of(source: &str, offset: usize) -> usize {
    source.as_bytes()[..offset.min(source.len())]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

struct Ctx<'a> {
    file: &'a Path,
    source: &'a str,
}

impl Ctx<'_> {
    fn err(&self, span: Range<usize>, key: &str, message: impl std::fmt::Display) -> anyhow::Error {
        anyhow::anyhow!(
            "{}:{}: {key}: {message}",
            self.file.display(),
            line_of(self.source, span.start)
        )
    }

    /// A secret given inline (`name`) or in a file (`name_file`, relative to this file).
    fn secret(
        &self,
        key: &str,
        inline: &Option<Spanned<String>>,
        file: &Option<Spanned<String>>,
        at: Range<usize>,
    ) -> anyhow::Result<Option<Secret>> {
        let value = match (inline, file) {
            (Some(v), Some(_)) => {
                return Err(self.err(
                    v.span(),
                    key,
                    format!("give `{key}` or `{key}_file`, not both"),
                ))
            }
            (Some(v), None) => v.get_ref().trim().to_string(),
            (None, Some(f)) => {
                let path = self
                    .file
                    .parent()
                    .unwrap_or_else(|| Path::new("."))
                    .join(f.get_ref());
                std::fs::read_to_string(&path)
                    .map_err(|e| {
                        self.err(
                            f.span(),
                            &format!("{key}_file"),
                            format!("cannot read {}: {e}", path.display()),
                        )
                    })?
                    .trim()
                    .to_string()
            }
            (None, None) => return Ok(None),
        };
        if value.is_empty() {
            return Err(self.err(at, key, "the secret is empty"));
        }
        Ok(Some(Secret(value)))
    }

    fn required_secret(
        &self,
        key: &str,
        inline: &Option<Spanned<String>>,
        file: &Option<Spanned<String>>,
        at: Range<usize>,
    ) -> anyhow::Result<Secret> {
        self.secret(key, inline, file, at.clone())?
            .ok_or_else(|| self.err(at, key, format!("missing: give `{key}` or `{key}_file`")))
    }

    fn url(&self, section: &str, url: &Spanned<String>) -> anyhow::Result<String> {
        let u = url.get_ref().trim().trim_end_matches('/');
        let rest = u
            .strip_prefix("https://")
            .or_else(|| u.strip_prefix("http://"));
        match rest {
            Some(host) if !host.is_empty() && !host.starts_with('/') => Ok(u.to_string()),
            _ => Err(self.err(
                url.span(),
                &format!("{section}.url"),
                format!("`{}` is not an http(s) URL", url.get_ref()),
            )),
        }
    }
}

/// Reads and checks the connectors file against `pack` (queues, priorities,
/// categories); every error names the file, line and key.
pub fn load(path: &Path, pack: &triage::Pack) -> anyhow::Result<Settings> {
    let source = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("reading connectors file {}: {e}", path.display()))?;
    parse(path, &source, pack)
}

/// [`load`] on the file's text.
pub fn parse(path: &Path, source: &str, pack: &triage::Pack) -> anyhow::Result<Settings> {
    let raw: RawFile = toml::from_str(source).map_err(|e| {
        let line = e.span().map(|s| line_of(source, s.start)).unwrap_or(0);
        anyhow::anyhow!("{}:{line}: {}", path.display(), e.message().trim())
    })?;
    let ctx = Ctx { file: path, source };
    let mut out = Settings::default();
    let queues: BTreeSet<&str> = pack.queues.iter().map(|q| q.id.as_str()).collect();
    let categories: BTreeSet<&str> = pack.categories.iter().map(|c| c.id.as_str()).collect();
    let mut seen = BTreeSet::new();
    for (i, z) in raw.zammad.iter().enumerate() {
        let at = z.url.span();
        let section = format!("zammad[{i}]");
        if !seen.insert(z.tenant.clone()) {
            return Err(ctx.err(
                at,
                &format!("{section}.tenant"),
                format!("a second Zammad for tenant `{}`", z.tenant),
            ));
        }
        let mut groups = BTreeMap::new();
        for (queue, group) in &z.groups {
            if !queues.contains(queue.get_ref().as_str()) {
                return Err(ctx.err(
                    queue.span(),
                    &format!("{section}.groups.{}", queue.get_ref()),
                    format!(
                        "unknown queue (the pack's queues: {})",
                        queues.iter().copied().collect::<Vec<_>>().join(", ")
                    ),
                ));
            }
            if group.get_ref().trim().is_empty() {
                return Err(ctx.err(
                    group.span(),
                    &format!("{section}.groups.{}", queue.get_ref()),
                    "the group name is empty",
                ));
            }
            groups.insert(queue.get_ref().clone(), group.get_ref().trim().to_string());
        }
        let mut priorities = BTreeMap::new();
        for (p, id) in &z.priorities {
            if !matches!(p.get_ref().as_str(), "P0" | "P1" | "P2" | "P3") {
                return Err(ctx.err(
                    p.span(),
                    &format!("{section}.priorities.{}", p.get_ref()),
                    "unknown priority (expected P0, P1, P2 or P3)",
                ));
            }
            if *id.get_ref() == 0 {
                return Err(ctx.err(
                    id.span(),
                    &format!("{section}.priorities.{}", p.get_ref()),
                    "a Zammad priority id is a positive number",
                ));
            }
            priorities.insert(p.get_ref().clone(), *id.get_ref());
        }
        let mut tags = BTreeMap::new();
        for (c, tag) in &z.tags {
            if !categories.contains(c.get_ref().as_str()) {
                return Err(ctx.err(
                    c.span(),
                    &format!("{section}.tags.{}", c.get_ref()),
                    "unknown category of the pack",
                ));
            }
            tags.insert(c.get_ref().clone(), check_tag(&ctx, &section, tag)?);
        }
        let tag_or = |t: &Option<Spanned<String>>, default: &str| -> anyhow::Result<String> {
            match t {
                Some(t) => check_tag(&ctx, &section, t),
                None => Ok(default.to_string()),
            }
        };
        out.zammad.push(ZammadSettings {
            tenant: z.tenant.clone(),
            url: ctx.url(&section, &z.url)?,
            token: ctx.required_secret(
                &format!("{section}.token"),
                &z.token,
                &z.token_file,
                at.clone(),
            )?,
            webhook_secret: ctx.required_secret(
                &format!("{section}.webhook_secret"),
                &z.webhook_secret,
                &z.webhook_secret_file,
                at.clone(),
            )?,
            groups,
            priorities,
            tags,
            needs_human_tag: tag_or(&z.needs_human_tag, "needs-human")?,
            duplicate_tag: tag_or(&z.duplicate_tag, "possible-duplicate")?,
        });
    }
    let mut seen = BTreeSet::new();
    for (i, c) in raw.chatwoot.iter().enumerate() {
        let at = c.url.span();
        let section = format!("chatwoot[{i}]");
        if !seen.insert(c.tenant.clone()) {
            return Err(ctx.err(
                at,
                &format!("{section}.tenant"),
                format!("a second Chatwoot for tenant `{}`", c.tenant),
            ));
        }
        let webhook_secret = ctx.secret(
            &format!("{section}.webhook_secret"),
            &c.webhook_secret,
            &c.webhook_secret_file,
            at.clone(),
        )?;
        let url_token = ctx.secret(
            &format!("{section}.url_token"),
            &c.url_token,
            &c.url_token_file,
            at.clone(),
        )?;
        if webhook_secret.is_none() && url_token.is_none() {
            return Err(ctx.err(
                at,
                &section,
                "give `webhook_secret` (the agent bot's secret, Chatwoot 4.13 and later) or, for \
                 Chatwoot versions that do not sign, `url_token` (then add `&token=…` to the bot's \
                 webhook URL): an unauthenticated bot endpoint would answer anyone",
            ));
        }
        out.chatwoot.push(ChatwootSettings {
            tenant: c.tenant.clone(),
            url: ctx.url(&section, &c.url)?,
            account_id: c.account_id,
            bot_token: ctx.required_secret(
                &format!("{section}.bot_token"),
                &c.bot_token,
                &c.bot_token_file,
                at.clone(),
            )?,
            webhook_secret,
            url_token,
        });
    }
    for (i, w) in raw.webhooks.iter().enumerate() {
        let at = w.url.span();
        let section = format!("webhooks[{i}]");
        let mut events = BTreeSet::new();
        for e in w.events.get_ref() {
            if e.get_ref() != "*" && !EVENT_TYPES.contains(&e.get_ref().as_str()) {
                return Err(ctx.err(
                    e.span(),
                    &format!("{section}.events"),
                    format!(
                        "unknown event `{}` (known: {}, or `*`)",
                        e.get_ref(),
                        EVENT_TYPES.join(", ")
                    ),
                ));
            }
            events.insert(e.get_ref().clone());
        }
        if events.is_empty() {
            return Err(ctx.err(
                w.events.span(),
                &format!("{section}.events"),
                "no event named",
            ));
        }
        out.webhooks.push(WebhookSettings {
            tenant: w.tenant.clone(),
            url: ctx.url(&section, &w.url)?,
            secret: ctx.required_secret(
                &format!("{section}.secret"),
                &w.secret,
                &w.secret_file,
                at,
            )?,
            events,
        });
    }
    Ok(out)
}

fn check_tag(ctx: &Ctx, section: &str, tag: &Spanned<String>) -> anyhow::Result<String> {
    let t = tag.get_ref().trim();
    if t.is_empty() || t.contains(',') || t.chars().any(char::is_control) {
        return Err(ctx.err(
            tag.span(),
            &format!("{section} tag"),
            "a tag is a non-empty name without commas or control characters",
        ));
    }
    Ok(t.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn pack() -> triage::Pack {
        triage::Pack::load(&PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/demo-pack"))
            .unwrap()
    }

    #[test]
    fn a_valid_file_maps_labels_and_reads_secrets() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("tok"), "s3cret\n").unwrap();
        let text = r#"
[[zammad]]
url = "https://z.example.com/"
token_file = "tok"
webhook_secret = "hmac"
[zammad.groups]
field_repair = "Field repair"
[zammad.priorities]
P0 = 4
[zammad.tags]
"repair.no_power" = "no-power"

[[webhooks]]
tenant = "acme"
url = "http://127.0.0.1:9/hook"
secret = "w"
events = ["*"]
"#;
        let s = parse(&dir.path().join("c.toml"), text, &pack()).unwrap();
        let z = s.zammad("").unwrap();
        assert_eq!(z.url, "https://z.example.com");
        assert_eq!(z.token.expose(), "s3cret");
        assert_eq!(z.groups["field_repair"], "Field repair");
        assert_eq!(z.priorities["P0"], 4);
        assert_eq!(z.tag_for("repair.no_power"), "no-power");
        assert_eq!(z.tag_for("billing.invoice"), "billing.invoice");
        assert!(s.webhooks[0].wants("triage.decided"));
        assert!(!format!("{z:?}").contains("s3cret"));
    }

    #[test]
    fn errors_name_file_line_and_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        let bad = |text: &str| parse(&path, text, &pack()).unwrap_err().to_string();
        let e = bad("[[zammad]]\nurl = \"https://z\"\ntoken = \"t\"\nwebhook_secret = \"w\"\n[zammad.groups]\nfield_repai = \"x\"\n");
        assert!(
            e.contains("c.toml:6: zammad[0].groups.field_repai: unknown queue"),
            "{e}"
        );
        let e = bad("[[zammad]]\nurl = \"https://z\"\ntoken = \"t\"\nwebhook_secret = \"w\"\n[zammad.priorities]\nP9 = 1\n");
        assert!(e.contains("c.toml:6: zammad[0].priorities.P9"), "{e}");
        let e = bad("[[zammad]]\nurl = \"ftp://z\"\ntoken = \"t\"\nwebhook_secret = \"w\"\n");
        assert!(e.contains("c.toml:2: zammad[0].url"), "{e}");
        let e = bad("[[zammad]]\nurl = \"https://z\"\ntoken = \"sekrit\"\n");
        assert!(
            e.contains("c.toml:2: zammad[0].webhook_secret: missing"),
            "{e}"
        );
        assert!(!e.contains("sekrit"), "{e}");
        let e = bad("[[chatwoot]]\nurl = \"https://c\"\nbot_token = \"b\"\n");
        assert!(
            e.contains("c.toml:2: chatwoot[0]: give `webhook_secret`"),
            "{e}"
        );
        let e = bad("[[webhooks]]\nurl = \"https://h\"\nsecret = \"s\"\nevents = [\"triage.decided\", \"nope\"]\n");
        assert!(
            e.contains("c.toml:4: webhooks[0].events: unknown event `nope`"),
            "{e}"
        );
        let e = bad("[[zammad]]\nurll = 1\n");
        assert!(e.contains("c.toml:2:"), "{e}");
    }
}
