//! Tenant packs: loading and validating `pack.toml`, `articles.jsonl` and
//! `tickets.jsonl` (format in `docs/PACK.md`).
//!
//! A pack is edited by hand by a support team, so every validation error names
//! the file, the 1-based line and the key that is wrong ([`Error::Pack`]).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::ops::Range;
use std::path::{Path, PathBuf};

use indexer::{Article, Ticket};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use toml::Spanned;

use crate::error::{Error, Result};

pub mod sync;

/// Default of `[thresholds] classify_abstain`: below this calibrated probability a
/// label decision abstains. Also the default of `triage eval classify --threshold`,
/// so an evaluation measures what a pack without the key would do.
pub const DEFAULT_CLASSIFY_ABSTAIN: f32 = 0.55;

/// The four priority levels, most urgent first. A pack must define exactly these.
pub const PRIORITY_LEVELS: [&str; 4] = ["P0", "P1", "P2", "P3"];

/// Rank of a priority id (`P0` → 0, most urgent), or `None` if it is not one of
/// [`PRIORITY_LEVELS`]; used wherever priorities are compared.
pub fn priority_rank(id: &str) -> Option<usize> {
    PRIORITY_LEVELS.iter().position(|level| *level == id)
}

/// A loaded, validated tenant pack: configuration plus knowledge base and history.
#[derive(Debug, Clone, Serialize)]
pub struct Pack {
    /// The directory the pack was loaded from.
    pub dir: PathBuf,
    /// Identifier of the pack (`[pack] name`).
    pub name: String,
    /// Free-text description.
    pub description: String,
    /// `zh` or `en`: the language most requests are in.
    pub default_language: String,
    /// Decision thresholds.
    pub thresholds: Thresholds,
    /// Queues / skill groups, in file order.
    pub queues: Vec<Queue>,
    /// Categories (parents and leaves), in file order.
    pub categories: Vec<Category>,
    /// Priorities, always exactly `P0`..`P3` in that order.
    pub priorities: Vec<Priority>,
    /// Urgency lexicon: priority id → words whose presence raises a request to at least that level.
    pub lexicon: BTreeMap<String, Vec<String>>,
    /// Phrases inside which a lexicon word does not count (`[lexicon] except = [...]`), e.g.
    /// 点不着火 ("won't light") contains 着火 ("on fire") but is a routine fault.
    pub lexicon_exceptions: Vec<String>,
    /// Field specs (extra patterns and inferable fields).
    pub fields: Vec<FieldSpec>,
    /// Knowledge-base articles from `articles.jsonl` (empty if the file is absent).
    pub articles: Vec<Article>,
    /// Labelled historical tickets from `tickets.jsonl` (empty if the file is absent).
    pub tickets: Vec<Ticket>,
    /// Requests this pack does not serve, from `out_of_scope.jsonl` (`{"text"}` lines;
    /// empty if absent): the category classifier learns them as "none of these", so
    /// an unrelated request is sent to a human instead of into a queue.
    pub out_of_scope: Vec<String>,
    /// Fingerprint of the documents the pack puts in the index (`tickets.jsonl` and
    /// `articles.jsonl` as loaded, SHA-256): a data
    /// directory re-ingests the pack when it changes.
    #[serde(skip)]
    pub fingerprint: String,
}

/// Decision thresholds; each has a default used when the key is absent.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Thresholds {
    /// Below this calibrated probability the category decision abstains ("needs a human").
    pub classify_abstain: f32,
    /// A chat message is answered at or above this confidence.
    pub deflect_answer: f32,
    /// Candidates are offered at or above this confidence (below: hand off).
    pub deflect_clarify: f32,
    /// Cosine similarity at or above which a recent ticket is a likely duplicate.
    pub duplicate_similarity: f32,
    /// Only tickets created within this many days count as duplicates.
    pub duplicate_window_days: u32,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            classify_abstain: DEFAULT_CLASSIFY_ABSTAIN,
            deflect_answer: 0.80,
            deflect_clarify: 0.45,
            duplicate_similarity: 0.92,
            duplicate_window_days: 14,
        }
    }
}

/// A queue / skill group that tickets are routed to.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Queue {
    /// Stable id referenced by categories and tickets.
    pub id: String,
    /// Display name.
    pub name: String,
}

/// A node of the two-level category taxonomy.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Category {
    /// Stable id (e.g. `repair.no_power`).
    pub id: String,
    /// Parent id for leaves; `None` for top-level categories.
    pub parent: Option<String>,
    /// Display name.
    pub name: String,
    /// What belongs here (also useful as a label description for the model).
    pub description: String,
    /// Queue this category routes to (leaves inherit their parent's when absent).
    pub queue: Option<String>,
    /// Priority used when nothing else decides (`P0`..`P3`).
    pub default_priority: Option<String>,
}

/// One priority level with its service-level target.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Priority {
    /// `P0`..`P3`.
    pub id: String,
    /// Display name.
    pub name: String,
    /// When to use it.
    pub description: String,
    /// Response-time target in hours, if the pack sets one.
    pub response_hours: Option<f32>,
}

/// A field the service fills in: an extra pattern and/or inference from neighbours.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FieldSpec {
    /// Field name (may be a built-in extractor's name to add a pattern to it).
    pub name: String,
    /// Regular expression; capture group 1 (or the whole match) is the value.
    pub pattern: Option<String>,
    /// What the field is.
    pub description: String,
    /// Whether the value may be inferred from similar tickets' `fields`.
    pub infer: bool,
    /// Whether the value is personal data (a name, an address, an account):
    /// masked wherever the service keeps a customer's words for others, e.g.
    /// in phrasings learned from chats.
    pub personal: bool,
}

impl Pack {
    /// Loads and validates the pack in `dir`: `pack.toml` (required) and
    /// `articles.jsonl` / `tickets.jsonl` (optional). Any problem is an
    /// [`Error::Pack`] naming the file, line and key.
    pub fn load(dir: &Path) -> Result<Pack> {
        let config_path = dir.join("pack.toml");
        let source = read_file(&config_path)?;
        let mut pack = parse_config(&config_path, &source)?;
        pack.dir = dir.to_path_buf();

        let articles_path = dir.join("articles.jsonl");
        let mut articles_source = None;
        if articles_path.exists() {
            let source = read_file(&articles_path)?;
            let articles = parse_jsonl(&articles_path, &source, |line, article| {
                pack.check_article(&articles_path, line, article)
            })?;
            pack.articles = articles;
            articles_source = Some(source);
        }
        let tickets_path = dir.join("tickets.jsonl");
        let mut tickets_source = None;
        if tickets_path.exists() {
            let source = read_file(&tickets_path)?;
            let tickets = parse_jsonl(&tickets_path, &source, |line, ticket| {
                pack.check_ticket(&tickets_path, line, ticket)
            })?;
            pack.tickets = tickets;
            tickets_source = Some(source);
        }
        pack.fingerprint = fingerprint(&[
            ("tickets.jsonl", tickets_source.as_deref()),
            ("articles.jsonl", articles_source.as_deref()),
        ]);
        let oos_path = dir.join("out_of_scope.jsonl");
        if oos_path.exists() {
            pack.out_of_scope = parse_texts(&oos_path, &read_file(&oos_path)?)?;
        }
        tracing::info!(
            pack = %pack.name,
            categories = pack.categories.len(),
            leaves = pack.leaf_categories().len(),
            articles = pack.articles.len(),
            tickets = pack.tickets.len(),
            "loaded pack from {}",
            dir.display()
        );
        Ok(pack)
    }

    /// Categories that have no children, in file order: the labels a classifier predicts.
    pub fn leaf_categories(&self) -> Vec<&Category> {
        let parents: HashSet<&str> = self
            .categories
            .iter()
            .filter_map(|c| c.parent.as_deref())
            .collect();
        self.categories
            .iter()
            .filter(|c| !parents.contains(c.id.as_str()))
            .collect()
    }

    /// The category with this id, if any.
    pub fn category(&self, id: &str) -> Option<&Category> {
        self.categories.iter().find(|c| c.id == id)
    }

    /// The queue a category routes to: its own, else its parent's.
    pub fn queue_for(&self, category: &str) -> Option<&str> {
        let cat = self.category(category)?;
        cat.queue.as_deref().or_else(|| {
            cat.parent
                .as_deref()
                .and_then(|p| self.category(p))
                .and_then(|p| p.queue.as_deref())
        })
    }

    /// Validates one article against the taxonomy.
    fn check_article(&self, file: &Path, line: usize, article: &Article) -> Result<()> {
        if article.question.trim().is_empty() {
            return Err(pack_error(file, line, "question", "must not be empty"));
        }
        if article.answer.trim().is_empty() {
            return Err(pack_error(file, line, "answer", "must not be empty"));
        }
        if !article.category.is_empty() && self.category(&article.category).is_none() {
            return Err(pack_error(
                file,
                line,
                "category",
                format!("unknown category `{}`", article.category),
            ));
        }
        Ok(())
    }

    /// Validates one labelled ticket against the taxonomy, priorities and queues.
    fn check_ticket(&self, file: &Path, line: usize, ticket: &Ticket) -> Result<()> {
        if ticket.title.trim().is_empty() && ticket.body.trim().is_empty() {
            return Err(pack_error(
                file,
                line,
                "body",
                "a ticket needs a title or a body",
            ));
        }
        if !ticket.category.is_empty() {
            if self.category(&ticket.category).is_none() {
                return Err(pack_error(
                    file,
                    line,
                    "category",
                    format!("unknown category `{}`", ticket.category),
                ));
            }
            if !self
                .leaf_categories()
                .iter()
                .any(|c| c.id == ticket.category)
            {
                return Err(pack_error(
                    file,
                    line,
                    "category",
                    format!(
                        "`{}` is a parent category; label tickets with a leaf",
                        ticket.category
                    ),
                ));
            }
        }
        if !ticket.priority.is_empty() && priority_rank(&ticket.priority).is_none() {
            return Err(pack_error(
                file,
                line,
                "priority",
                format!("unknown priority `{}` (expected P0..P3)", ticket.priority),
            ));
        }
        if !ticket.queue.is_empty() && !self.queues.iter().any(|q| q.id == ticket.queue) {
            return Err(pack_error(
                file,
                line,
                "queue",
                format!("unknown queue `{}`", ticket.queue),
            ));
        }
        if !ticket.created_at.is_empty()
            && time::OffsetDateTime::parse(
                &ticket.created_at,
                &time::format_description::well_known::Rfc3339,
            )
            .is_err()
        {
            return Err(pack_error(
                file,
                line,
                "created_at",
                format!(
                    "`{}` is not an RFC 3339 time (e.g. 2026-03-01T08:30:00Z)",
                    ticket.created_at
                ),
            ));
        }
        Ok(())
    }
}

/// Builds an [`Error::Pack`].
fn pack_error(file: &Path, line: usize, key: &str, message: impl Into<String>) -> Error {
    Error::Pack {
        file: file.to_path_buf(),
        line,
        key: key.to_string(),
        message: message.into(),
    }
}

/// Reads a whole UTF-8 file without a leading byte-order mark (some editors
/// add one), mapping failures to [`Error::Io`].
fn read_file(path: &Path) -> Result<String> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(match text.strip_prefix('\u{feff}') {
        Some(rest) => rest.to_string(),
        None => text,
    })
}

/// The `text` of each non-blank line of a JSON-lines file (`{"text": "..."}`).
fn parse_texts(file: &Path, source: &str) -> Result<Vec<String>> {
    #[derive(Deserialize)]
    struct Line {
        text: String,
    }
    let known: BTreeSet<String> = BTreeSet::from(["text".to_string()]);
    let mut texts = Vec::new();
    for (index, line) in source
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let expected = |e: &dyn std::fmt::Display| format!("expected {{\"text\": \"...\"}}: {e}");
        let value: serde_json::Value = serde_json::from_str(line)
            .map_err(|e| pack_error(file, index + 1, "text", expected(&e)))?;
        if let serde_json::Value::Object(object) = &value {
            check_keys(file, index + 1, object, &known)?;
        }
        let record: Line = serde_json::from_value(value)
            .map_err(|e| pack_error(file, index + 1, "text", expected(&e)))?;
        if record.text.trim().is_empty() {
            return Err(pack_error(file, index + 1, "text", "empty `text`"));
        }
        texts.push(record.text);
    }
    Ok(texts)
}

/// 1-based line of a byte offset in `source`.
fn line_of(source: &str, offset: usize) -> usize {
    let end = offset.min(source.len());
    source.as_bytes()[..end]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

// ---------------------------------------------------------------- pack.toml

/// `pack.toml` as written; spans give line numbers for validation errors.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    pack: RawMeta,
    #[serde(default)]
    thresholds: RawThresholds,
    #[serde(default)]
    queues: Vec<RawQueue>,
    #[serde(default)]
    categories: Vec<RawCategory>,
    #[serde(default)]
    priorities: Vec<RawPriority>,
    #[serde(default)]
    lexicon: BTreeMap<String, Spanned<Vec<Spanned<String>>>>,
    #[serde(default)]
    fields: Vec<RawField>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMeta {
    name: Spanned<String>,
    #[serde(default)]
    description: String,
    default_language: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawThresholds {
    classify_abstain: Option<Spanned<f32>>,
    deflect_answer: Option<Spanned<f32>>,
    deflect_clarify: Option<Spanned<f32>>,
    duplicate_similarity: Option<Spanned<f32>>,
    duplicate_window_days: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawQueue {
    id: Spanned<String>,
    #[serde(default)]
    name: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCategory {
    id: Spanned<String>,
    parent: Option<Spanned<String>>,
    #[serde(default)]
    name: String,
    #[serde(default)]
    description: String,
    queue: Option<Spanned<String>>,
    default_priority: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPriority {
    id: Spanned<String>,
    #[serde(default)]
    name: String,
    #[serde(default)]
    description: String,
    response_hours: Option<Spanned<f32>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawField {
    name: Spanned<String>,
    pattern: Option<Spanned<String>>,
    #[serde(default)]
    description: String,
    #[serde(default)]
    infer: bool,
    #[serde(default)]
    personal: bool,
}

/// Validation context for `pack.toml`: the file name and its text (for line numbers).
struct ConfigCtx<'a> {
    file: &'a Path,
    source: &'a str,
}

impl ConfigCtx<'_> {
    fn err(&self, span: Range<usize>, key: &str, message: impl Into<String>) -> Error {
        pack_error(self.file, line_of(self.source, span.start), key, message)
    }
}

/// Parses and validates `pack.toml` (everything but the JSONL files).
fn parse_config(file: &Path, source: &str) -> Result<Pack> {
    let raw: RawConfig = toml::from_str(source).map_err(|e| toml_error(file, source, &e))?;
    let ctx = ConfigCtx { file, source };

    let name = raw.pack.name.get_ref().trim().to_string();
    if name.is_empty() {
        return Err(ctx.err(raw.pack.name.span(), "pack.name", "must not be empty"));
    }
    let default_language = match &raw.pack.default_language {
        None => "zh".to_string(),
        Some(lang) if matches!(lang.get_ref().as_str(), "zh" | "en") => lang.get_ref().clone(),
        Some(lang) => {
            return Err(ctx.err(
                lang.span(),
                "pack.default_language",
                format!("`{}` is not supported (expected zh or en)", lang.get_ref()),
            ))
        }
    };

    let thresholds = convert_thresholds(&ctx, &raw.thresholds)?;
    let queues = convert_queues(&ctx, &raw.queues)?;
    let categories = convert_categories(&ctx, &raw.categories, &queues)?;
    let priorities = convert_priorities(&ctx, &raw.priorities)?;
    let (lexicon, lexicon_exceptions) = convert_lexicon(&ctx, &raw.lexicon)?;
    let fields = convert_fields(&ctx, &raw.fields)?;

    Ok(Pack {
        dir: PathBuf::new(),
        name,
        description: raw.pack.description,
        default_language,
        thresholds,
        queues,
        categories,
        priorities,
        lexicon,
        lexicon_exceptions,
        fields,
        articles: Vec::new(),
        tickets: Vec::new(),
        out_of_scope: Vec::new(),
        fingerprint: String::new(),
    })
}

/// Turns a TOML syntax or schema error into an [`Error::Pack`] with line and key.
fn toml_error(file: &Path, source: &str, e: &toml::de::Error) -> Error {
    let offset = e.span().map(|s| s.start).unwrap_or(0);
    let line = if e.span().is_some() {
        line_of(source, offset)
    } else {
        0
    };
    pack_error(
        file,
        line,
        &toml_key_at(source, offset, e.message()),
        e.message().trim(),
    )
}

/// Best-effort dotted key for a TOML error: the enclosing `[table]` plus the
/// key on the error's line, or the field named in backticks in the message.
fn toml_key_at(source: &str, offset: usize, message: &str) -> String {
    let offset = offset.min(source.len());
    let before = source.get(..offset).unwrap_or("");
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line_text = source[line_start..].lines().next().unwrap_or("").trim();
    let table = before
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim().to_string());
    let named_in_message = message
        .split('`')
        .nth(1)
        .filter(|k| {
            !k.is_empty()
                && k.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
        })
        .map(str::to_string);
    let on_line = line_text
        .split_once('=')
        .map(|(k, _)| k.trim().trim_matches('"').to_string())
        .filter(|k| !k.is_empty() && !k.starts_with('['));
    let leaf = named_in_message.or(on_line);
    match (table, leaf) {
        (Some(t), Some(k)) => format!("{t}.{k}"),
        (Some(t), None) => t,
        (None, Some(k)) => k,
        (None, None) => "pack.toml".to_string(),
    }
}

fn convert_thresholds(ctx: &ConfigCtx, raw: &RawThresholds) -> Result<Thresholds> {
    let defaults = Thresholds::default();
    let prob = |value: &Option<Spanned<f32>>, key: &str, default: f32| -> Result<f32> {
        match value {
            None => Ok(default),
            Some(v) if (0.0..=1.0).contains(v.get_ref()) => Ok(*v.get_ref()),
            Some(v) => Err(ctx.err(
                v.span(),
                &format!("thresholds.{key}"),
                format!("{} is outside 0..1", v.get_ref()),
            )),
        }
    };
    let thresholds = Thresholds {
        classify_abstain: prob(
            &raw.classify_abstain,
            "classify_abstain",
            defaults.classify_abstain,
        )?,
        deflect_answer: prob(
            &raw.deflect_answer,
            "deflect_answer",
            defaults.deflect_answer,
        )?,
        deflect_clarify: prob(
            &raw.deflect_clarify,
            "deflect_clarify",
            defaults.deflect_clarify,
        )?,
        duplicate_similarity: prob(
            &raw.duplicate_similarity,
            "duplicate_similarity",
            defaults.duplicate_similarity,
        )?,
        duplicate_window_days: raw
            .duplicate_window_days
            .unwrap_or(defaults.duplicate_window_days),
    };
    if thresholds.deflect_clarify > thresholds.deflect_answer {
        let span = raw
            .deflect_clarify
            .as_ref()
            .or(raw.deflect_answer.as_ref())
            .map_or(0..0, |s| s.span());
        return Err(ctx.err(
            span,
            "thresholds.deflect_clarify",
            format!(
                "deflect_clarify ({}) must not exceed deflect_answer ({})",
                thresholds.deflect_clarify, thresholds.deflect_answer
            ),
        ));
    }
    Ok(thresholds)
}

fn convert_queues(ctx: &ConfigCtx, raw: &[RawQueue]) -> Result<Vec<Queue>> {
    let mut seen = HashSet::new();
    let mut queues = Vec::with_capacity(raw.len());
    for q in raw {
        let id = q.id.get_ref().trim();
        if id.is_empty() {
            return Err(ctx.err(q.id.span(), "queues.id", "must not be empty"));
        }
        if !seen.insert(id.to_string()) {
            return Err(ctx.err(
                q.id.span(),
                "queues.id",
                format!("duplicate queue id `{id}`"),
            ));
        }
        let name = if q.name.trim().is_empty() {
            id.to_string()
        } else {
            q.name.clone()
        };
        queues.push(Queue {
            id: id.to_string(),
            name,
        });
    }
    Ok(queues)
}

fn convert_categories(
    ctx: &ConfigCtx,
    raw: &[RawCategory],
    queues: &[Queue],
) -> Result<Vec<Category>> {
    if raw.is_empty() {
        return Err(pack_error(
            ctx.file,
            0,
            "categories",
            "the pack defines no [[categories]]",
        ));
    }
    let mut by_id: HashMap<&str, &RawCategory> = HashMap::new();
    for c in raw {
        let id = c.id.get_ref().trim();
        if id.is_empty() {
            return Err(ctx.err(c.id.span(), "categories.id", "must not be empty"));
        }
        if by_id.insert(id, c).is_some() {
            return Err(ctx.err(
                c.id.span(),
                "categories.id",
                format!("duplicate category id `{id}`"),
            ));
        }
    }
    // Parents first: a typo in a parent id would otherwise surface as a
    // confusing "leaf without queue" on the would-be parent.
    for c in raw {
        let id = c.id.get_ref().trim();
        let Some(parent) = &c.parent else {
            continue;
        };
        let parent_id = parent.get_ref().trim();
        let message = match by_id.get(parent_id) {
            _ if parent_id == id => format!("category `{id}` cannot be its own parent"),
            None => format!("unknown parent `{parent_id}` for category `{id}`"),
            Some(p) if p.parent.is_some() => format!(
                "parent `{parent_id}` of `{id}` has a parent itself; the taxonomy has two levels"
            ),
            Some(_) => continue,
        };
        return Err(ctx.err(parent.span(), "categories.parent", message));
    }
    let parents: HashSet<&str> = raw
        .iter()
        .filter_map(|c| c.parent.as_ref().map(|p| p.get_ref().trim()))
        .collect();
    let mut categories = Vec::with_capacity(raw.len());
    for c in raw {
        let id = c.id.get_ref().trim();
        if let Some(queue) = &c.queue {
            let queue_id = queue.get_ref().trim();
            if !queues.iter().any(|q| q.id == queue_id) {
                return Err(ctx.err(
                    queue.span(),
                    "categories.queue",
                    format!("unknown queue `{queue_id}` for category `{id}`"),
                ));
            }
        }
        if let Some(priority) = &c.default_priority {
            if priority_rank(priority.get_ref().trim()).is_none() {
                return Err(ctx.err(
                    priority.span(),
                    "categories.default_priority",
                    format!("`{}` is not one of P0, P1, P2, P3", priority.get_ref()),
                ));
            }
        }
        let is_leaf = !parents.contains(id);
        if is_leaf {
            let inherited = c
                .parent
                .as_ref()
                .and_then(|p| by_id.get(p.get_ref().trim()))
                .and_then(|p| p.queue.as_ref());
            if c.queue.is_none() && inherited.is_none() {
                return Err(ctx.err(
                    c.id.span(),
                    "categories.queue",
                    format!("leaf category `{id}` has no queue (set `queue` on it or its parent)"),
                ));
            }
        }
        categories.push(Category {
            id: id.to_string(),
            parent: c.parent.as_ref().map(|p| p.get_ref().trim().to_string()),
            name: if c.name.trim().is_empty() {
                id.to_string()
            } else {
                c.name.clone()
            },
            description: c.description.clone(),
            queue: c.queue.as_ref().map(|q| q.get_ref().trim().to_string()),
            default_priority: c
                .default_priority
                .as_ref()
                .map(|p| p.get_ref().trim().to_string()),
        });
    }
    Ok(categories)
}

/// Priorities must be exactly `P0`..`P3`; when the section is absent the
/// standard four are used.
fn convert_priorities(ctx: &ConfigCtx, raw: &[RawPriority]) -> Result<Vec<Priority>> {
    if raw.is_empty() {
        return Ok(default_priorities());
    }
    let mut slots: [Option<Priority>; 4] = Default::default();
    for p in raw {
        let id = p.id.get_ref().trim();
        let Some(rank) = priority_rank(id) else {
            return Err(ctx.err(
                p.id.span(),
                "priorities.id",
                format!("`{id}` is not one of P0, P1, P2, P3"),
            ));
        };
        if slots[rank].is_some() {
            return Err(ctx.err(
                p.id.span(),
                "priorities.id",
                format!("duplicate priority `{id}`"),
            ));
        }
        let response_hours = match &p.response_hours {
            Some(h) if !(h.get_ref().is_finite() && *h.get_ref() > 0.0) => {
                return Err(ctx.err(
                    h.span(),
                    "priorities.response_hours",
                    format!("{} must be a positive number of hours", h.get_ref()),
                ))
            }
            other => other.as_ref().map(|h| *h.get_ref()),
        };
        slots[rank] = Some(Priority {
            id: id.to_string(),
            name: if p.name.trim().is_empty() {
                id.to_string()
            } else {
                p.name.clone()
            },
            description: p.description.clone(),
            response_hours,
        });
    }
    let missing: Vec<&str> = PRIORITY_LEVELS
        .iter()
        .zip(&slots)
        .filter(|(_, slot)| slot.is_none())
        .map(|(id, _)| *id)
        .collect();
    if !missing.is_empty() {
        let span = raw.first().map_or(0..0, |p| p.id.span());
        return Err(ctx.err(
            span,
            "priorities",
            format!(
                "priorities must be exactly P0, P1, P2, P3; missing {}",
                missing.join(", ")
            ),
        ));
    }
    Ok(slots.into_iter().flatten().collect())
}

/// The standard four levels, used when a pack has no `[[priorities]]`.
fn default_priorities() -> Vec<Priority> {
    let defs = [
        ("P0", "Critical", "Safety risk or total outage.", 1.0),
        ("P1", "High", "Cannot use the product or service.", 4.0),
        ("P2", "Normal", "Degraded or partly working.", 24.0),
        ("P3", "Low", "Questions and requests.", 72.0),
    ];
    defs.iter()
        .map(|(id, name, description, hours)| Priority {
            id: id.to_string(),
            name: name.to_string(),
            description: description.to_string(),
            response_hours: Some(*hours),
        })
        .collect()
}

/// The `[lexicon]` table: levels `P0`..`P3` with their words, and the optional
/// `except` list of phrases that neutralise a word they contain.
type Lexicon = (BTreeMap<String, Vec<String>>, Vec<String>);

fn convert_lexicon(
    ctx: &ConfigCtx,
    raw: &BTreeMap<String, Spanned<Vec<Spanned<String>>>>,
) -> Result<Lexicon> {
    let mut lexicon = BTreeMap::new();
    let mut exceptions = Vec::new();
    let mut first_level: HashMap<String, String> = HashMap::new();
    for (level, words) in raw {
        if level == "except" {
            for phrase in words.get_ref() {
                let text = phrase.get_ref().trim();
                if text.is_empty() {
                    return Err(ctx.err(phrase.span(), "lexicon.except", "empty phrase"));
                }
                // Folded like the text it is matched against (ASCII only, offsets kept).
                exceptions.push(text.to_ascii_lowercase());
            }
            continue;
        }
        if priority_rank(level).is_none() {
            return Err(ctx.err(
                words.span(),
                &format!("lexicon.{level}"),
                format!("`{level}` is not one of P0, P1, P2, P3"),
            ));
        }
        let mut list = Vec::with_capacity(words.get_ref().len());
        for word in words.get_ref() {
            let text = word
                .get_ref()
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ");
            if text.is_empty() {
                return Err(ctx.err(word.span(), &format!("lexicon.{level}"), "empty word"));
            }
            let folded = text.to_lowercase();
            if let Some(other) = first_level.insert(folded, level.clone()) {
                return Err(ctx.err(
                    word.span(),
                    &format!("lexicon.{level}"),
                    format!("`{text}` is also listed under {other}"),
                ));
            }
            list.push(text);
        }
        lexicon.insert(level.clone(), list);
    }
    Ok((lexicon, exceptions))
}

fn convert_fields(ctx: &ConfigCtx, raw: &[RawField]) -> Result<Vec<FieldSpec>> {
    let mut seen = HashSet::new();
    let mut fields = Vec::with_capacity(raw.len());
    for f in raw {
        let name = f.name.get_ref().trim();
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
        {
            return Err(ctx.err(
                f.name.span(),
                "fields.name",
                format!("`{name}` must be a non-empty identifier (letters, digits, _ - .)"),
            ));
        }
        if !seen.insert(name.to_string()) {
            return Err(ctx.err(
                f.name.span(),
                "fields.name",
                format!("duplicate field `{name}`"),
            ));
        }
        if let Some(pattern) = &f.pattern {
            if let Err(e) = regex::Regex::new(pattern.get_ref()) {
                return Err(ctx.err(
                    pattern.span(),
                    "fields.pattern",
                    format!("invalid regex for field `{name}`: {e}"),
                ));
            }
        }
        fields.push(FieldSpec {
            name: name.to_string(),
            pattern: f.pattern.as_ref().map(|p| p.get_ref().clone()),
            description: f.description.clone(),
            infer: f.infer,
            personal: f.personal,
        });
    }
    Ok(fields)
}

// ---------------------------------------------------------------- JSONL

/// A record with an id, so duplicate and missing ids can be reported uniformly.
trait HasId {
    fn id(&self) -> &str;
}

impl HasId for Article {
    fn id(&self) -> &str {
        &self.id
    }
}

impl HasId for Ticket {
    fn id(&self) -> &str {
        &self.id
    }
}

/// The keys a JSONL record type accepts: the keys of its default value serialised
/// (every field of `Ticket` and `Article` is serialised, and both default every
/// field). Derived rather than listed so a field added to the indexer's types is
/// accepted here without a second edit.
fn known_keys<T: Serialize + Default>() -> BTreeSet<String> {
    match serde_json::to_value(T::default()) {
        Ok(serde_json::Value::Object(object)) => object.keys().cloned().collect(),
        _ => BTreeSet::new(),
    }
}

/// Rejects a key of a JSONL object that the record type does not have: serde
/// would ignore it, so a typo such as `catgory` would load an unlabelled ticket.
fn check_keys(
    file: &Path,
    line: usize,
    object: &serde_json::Map<String, serde_json::Value>,
    known: &BTreeSet<String>,
) -> Result<()> {
    let Some(unknown) = object.keys().find(|k| !known.contains(*k)) else {
        return Ok(());
    };
    let hint = known
        .iter()
        .map(|k| (edit_distance(k, unknown), k))
        .filter(|(d, _)| *d <= 2)
        .min()
        .map(|(_, k)| format!("did you mean `{k}`? "))
        .unwrap_or_default();
    let expected: Vec<&str> = known.iter().map(String::as_str).collect();
    Err(pack_error(
        file,
        line,
        unknown,
        format!(
            "unknown key `{unknown}` ({hint}expected one of: {})",
            expected.join(", ")
        ),
    ))
}

/// Levenshtein distance in characters, for "did you mean" hints on short keys.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitution = diagonal + usize::from(ca != *cb);
            diagonal = row[j + 1];
            row[j + 1] = substitution.min(row[j] + 1).min(row[j + 1] + 1);
        }
    }
    row[b.len()]
}

/// Parses a JSONL file of records: blank lines are skipped, every other line
/// must be a JSON object with only the record's keys, a unique non-empty `id`,
/// and pass `check`.
fn parse_jsonl<T, F>(file: &Path, source: &str, mut check: F) -> Result<Vec<T>>
where
    T: DeserializeOwned + Serialize + Default + HasId,
    F: FnMut(usize, &T) -> Result<()>,
{
    let known = known_keys::<T>();
    let mut records = Vec::new();
    let mut first_line: HashMap<String, usize> = HashMap::new();
    for (index, text) in source.lines().enumerate() {
        let line = index + 1;
        if text.trim().is_empty() {
            continue;
        }
        let value: serde_json::Value = serde_json::from_str(text).map_err(|e| {
            pack_error(
                file,
                line,
                "json",
                format!("invalid JSON at column {}: {e}", e.column()),
            )
        })?;
        let serde_json::Value::Object(object) = &value else {
            return Err(pack_error(file, line, "json", "expected a JSON object"));
        };
        check_keys(file, line, object, &known)?;
        let record: T = serde_json::from_value(value.clone())
            .map_err(|e| json_field_error::<T>(file, line, object, &e))?;
        let id = record.id().trim();
        if id.is_empty() {
            return Err(pack_error(file, line, "id", "missing or empty `id`"));
        }
        if let Some(previous) = first_line.insert(id.to_string(), line) {
            return Err(pack_error(
                file,
                line,
                "id",
                format!("duplicate id `{id}` (first on line {previous})"),
            ));
        }
        check(line, &record)?;
        records.push(record);
    }
    Ok(records)
}

/// Finds which key of a JSON object made deserialisation fail, by decoding each
/// key alone (every record field has a default, so only the bad key fails).
fn json_field_error<T: DeserializeOwned>(
    file: &Path,
    line: usize,
    object: &serde_json::Map<String, serde_json::Value>,
    error: &serde_json::Error,
) -> Error {
    let key = object
        .iter()
        .find(|(k, v)| {
            let mut single = serde_json::Map::new();
            single.insert((*k).clone(), (*v).clone());
            serde_json::from_value::<T>(serde_json::Value::Object(single)).is_err()
        })
        .map_or_else(|| "json".to_string(), |(k, _)| k.clone());
    pack_error(file, line, &key, error.to_string())
}

/// A stable fingerprint of named file contents (`None` = the file is absent),
/// `sha256:` and 64 hex digits. The names and lengths are hashed too, so
/// moving text from one file to another, or deleting a file, changes it.
pub fn fingerprint(parts: &[(&str, Option<&str>)]) -> String {
    let mut h = Sha256::new();
    for (name, content) in parts {
        h.update((name.len() as u64).to_le_bytes());
        h.update(name.as_bytes());
        match content {
            None => h.update(b"\x00absent"),
            Some(text) => {
                h.update((text.len() as u64).to_le_bytes());
                h.update(text.as_bytes());
            }
        }
    }
    let digest = h.finalize();
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_is_stable_and_sees_every_change() {
        let base = fingerprint(&[("t", Some("a\n")), ("a", Some("b\n"))]);
        assert_eq!(base, fingerprint(&[("t", Some("a\n")), ("a", Some("b\n"))]));
        assert!(
            base.starts_with("sha256:") && base.len() == 7 + 64,
            "{base}"
        );
        for other in [
            fingerprint(&[("t", Some("a\n")), ("a", Some("c\n"))]),
            fingerprint(&[("t", Some("a\nb\n")), ("a", Some(""))]),
            fingerprint(&[("t", Some("a\n")), ("a", None)]),
            fingerprint(&[("t", Some("a\n"))]),
        ] {
            assert_ne!(base, other);
        }
        // Pinned: the marker on disk must mean the same thing in every version.
        assert_eq!(
            fingerprint(&[]),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn line_of_counts_newlines_before_offset() {
        let text = "a\nbb\nccc";
        assert_eq!(line_of(text, 0), 1);
        assert_eq!(line_of(text, 2), 2);
        assert_eq!(line_of(text, 5), 3);
        assert_eq!(line_of(text, 100), 3);
    }

    #[test]
    fn known_keys_are_every_record_field() {
        let ticket = known_keys::<Ticket>();
        for key in [
            "id", "title", "body", "category", "priority", "queue", "fields",
        ] {
            assert!(ticket.contains(key), "{key} missing from {ticket:?}");
        }
        assert_eq!(ticket.len(), 13, "{ticket:?}");
        let article = known_keys::<Article>();
        assert!(article.contains("alt_questions") && !article.contains("body"));
    }

    #[test]
    fn edit_distance_counts_single_edits() {
        assert_eq!(edit_distance("category", "catgory"), 1);
        assert_eq!(edit_distance("body", "body"), 0);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("queue", "qeueu"), 2);
    }

    #[test]
    fn priority_rank_orders_levels() {
        assert_eq!(priority_rank("P0"), Some(0));
        assert_eq!(priority_rank("P3"), Some(3));
        assert_eq!(priority_rank("P4"), None);
        assert_eq!(priority_rank("p0"), None);
    }

    #[test]
    fn toml_key_combines_table_and_line_key() {
        let src = "[pack]\nname = \"x\"\n\n[thresholds]\nclassify_abstain = oops\n";
        let offset = src.find("oops").unwrap_or(0);
        assert_eq!(
            toml_key_at(src, offset, "invalid string"),
            "thresholds.classify_abstain"
        );
    }
}
