//! Loading a pack directory: `pack.toml` (parsed by `config`), then the
//! JSONL files of articles, tickets and out-of-scope requests, each line
//! checked against the taxonomy, with a "did you mean" for a mistyped key.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use indexer::{Article, Ticket};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::config::parse_config;
use super::{pack_error, priority_rank, Pack};
use crate::error::{Error, Result};

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
        let (articles, articles_source) = read_jsonl(&articles_path, |line, article| {
            pack.check_article(&articles_path, line, article)
        })?;
        let tickets_path = dir.join("tickets.jsonl");
        let (tickets, tickets_source) = read_jsonl(&tickets_path, |line, ticket| {
            pack.check_ticket(&tickets_path, line, ticket)
        })?;
        (pack.articles, pack.tickets) = (articles, tickets);
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

/// The records of the optional JSONL file at `path` ([`parse_jsonl`]) and its
/// text, for the fingerprint; none and `None` when the file does not exist.
fn read_jsonl<T, F>(path: &Path, check: F) -> Result<(Vec<T>, Option<String>)>
where
    T: DeserializeOwned + Serialize + Default + HasId,
    F: FnMut(usize, &T) -> Result<()>,
{
    if !path.exists() {
        return Ok((Vec::new(), None));
    }
    let source = read_file(path)?;
    let records = parse_jsonl(path, &source, check)?;
    Ok((records, Some(source)))
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
fn fingerprint(parts: &[(&str, Option<&str>)]) -> String {
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
}
