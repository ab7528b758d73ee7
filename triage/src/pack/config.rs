//! `pack.toml`: parsed with spans, so every validation error names the line
//! and the dotted key, and converted to the pack's types with their defaults.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use super::{
    pack_error, priority_rank, Category, Escalation, FieldSpec, Insights, Pack, Priority, Queue,
    Thresholds, PRIORITY_LEVELS,
};
use crate::error::{Error, Result};

/// 1-based line of a byte offset in `source`.
fn line_of(source: &str, offset: usize) -> usize {
    let end = offset.min(source.len());
    source.as_bytes()[..end]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

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
    escalation: Option<RawEscalation>,
    insights: Option<RawInsights>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInsights {
    fields: Option<Vec<Spanned<String>>>,
    heatmap: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEscalation {
    words: Option<Vec<Spanned<String>>>,
    anger: Option<Vec<Spanned<String>>>,
    flag: Option<Spanned<f32>>,
    field: Option<Spanned<String>>,
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
pub(super) fn parse_config(file: &Path, source: &str) -> Result<Pack> {
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
    let escalation = convert_escalation(&ctx, raw.escalation.as_ref(), &fields)?;
    let insights = convert_insights(&ctx, raw.insights.as_ref(), &fields)?;

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
        escalation,
        insights,
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

/// The `[escalation]` table: word lists replace the defaults, `flag` is a
/// risk in 0..1, `field` must be one of the pack's `[[fields]]`.
fn convert_escalation(
    ctx: &ConfigCtx,
    raw: Option<&RawEscalation>,
    fields: &[FieldSpec],
) -> Result<Escalation> {
    let mut out = Escalation::default();
    let Some(raw) = raw else {
        return Ok(out);
    };
    let words = |list: &Option<Vec<Spanned<String>>>, key: &str| -> Result<Option<Vec<String>>> {
        let Some(list) = list else {
            return Ok(None);
        };
        let mut seen = HashSet::new();
        let mut out = Vec::with_capacity(list.len());
        for w in list {
            let word = w.get_ref().trim().to_lowercase();
            if word.is_empty() {
                return Err(ctx.err(w.span(), key, "empty word"));
            }
            if !seen.insert(word.clone()) {
                return Err(ctx.err(w.span(), key, format!("duplicate word `{word}`")));
            }
            out.push(word);
        }
        Ok(Some(out))
    };
    if let Some(w) = words(&raw.words, "escalation.words")? {
        out.words = w;
    }
    if let Some(w) = words(&raw.anger, "escalation.anger")? {
        out.anger = w;
    }
    if let Some(flag) = &raw.flag {
        let v = *flag.get_ref();
        if !(v > 0.0 && v <= 1.0) {
            return Err(ctx.err(
                flag.span(),
                "escalation.flag",
                format!("{v} is not in (0, 1]"),
            ));
        }
        out.flag = v;
    }
    if let Some(field) = &raw.field {
        let name = field.get_ref().trim();
        if !fields.iter().any(|f| f.name == name) {
            return Err(ctx.err(
                field.span(),
                "escalation.field",
                format!("`{name}` is not one of the pack's [[fields]]"),
            ));
        }
        out.field = Some(name.to_string());
    }
    Ok(out)
}

/// The `[insights]` table: every field it names must be one of the pack's
/// `[[fields]]`, named once.
fn convert_insights(
    ctx: &ConfigCtx,
    raw: Option<&RawInsights>,
    fields: &[FieldSpec],
) -> Result<Insights> {
    let Some(raw) = raw else {
        return Ok(Insights::default());
    };
    let declared = |f: &Spanned<String>, key: &str| -> Result<String> {
        let name = f.get_ref().trim();
        if fields.iter().any(|x| x.name == name) {
            Ok(name.to_string())
        } else {
            Err(ctx.err(
                f.span(),
                key,
                format!("`{name}` is not one of the pack's [[fields]]"),
            ))
        }
    };
    let mut out = Insights::default();
    for f in raw.fields.iter().flatten() {
        let name = declared(f, "insights.fields")?;
        if out.fields.contains(&name) {
            return Err(ctx.err(
                f.span(),
                "insights.fields",
                format!("duplicate field `{name}`"),
            ));
        }
        out.fields.push(name);
    }
    out.heatmap = match &raw.heatmap {
        Some(f) => Some(declared(f, "insights.heatmap")?),
        None => out.fields.first().cloned(),
    };
    Ok(out)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_of_counts_newlines_before_offset() {
        let text = "a\nbb\nccc";
        assert_eq!(line_of(text, 0), 1);
        assert_eq!(line_of(text, 2), 2);
        assert_eq!(line_of(text, 5), 3);
        assert_eq!(line_of(text, 100), 3);
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
