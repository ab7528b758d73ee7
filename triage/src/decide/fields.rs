//! Field extraction: order numbers, phones, e-mails, device models, serial
//! numbers, error codes, amounts and dates found in a request's text, with
//! exact byte and character spans, plus a pack's own patterns.
//!
//! Matches never start or end inside a longer ASCII letter/digit token, and
//! overlapping candidates are resolved by precedence (pack patterns, then
//! keyword-introduced fields, then e-mail, phone, date, amount), so a phone
//! number is never also reported as an order number.

use std::collections::{BTreeMap, HashSet};

use regex::Regex;

use crate::api::FieldValue;
use crate::error::{Error, Result};
use crate::pack::FieldSpec;

/// Built-in patterns: (field name, precedence, regex). A named group `v`, when
/// present, is the value; otherwise the whole match is. Lower precedence wins overlaps.
const BUILTINS: &[(&str, u8, &str)] = &[
    (
        "order_no",
        1,
        r"(?i)(?:订单编号|订单号码|订单号|订单|单号|order\s*(?:no\.?|number|num|id|#)?)\s*(?:是|为|is)?\s*[:：#]?\s*(?P<v>[a-z]{0,4}-?\d{6,24})",
    ),
    (
        "serial_no",
        1,
        r"(?i)(?:序列号|机身码|机身号|SN码|S/N|SN|serial\s*(?:no\.?|number|#)?)\s*(?:是|为|is)?\s*[:：#]?\s*(?P<v>[a-z0-9][a-z0-9-]{5,31})",
    ),
    // A bare "SN" + digits code is a serial number even without a keyword.
    ("serial_no", 1, r"(?P<v>SN\d[A-Z0-9]{5,30})"),
    (
        "device_model",
        1,
        r"(?i)(?:产品型号|型号|机型|model\s*(?:no\.?|number|#)?)\s*(?:是|为|is)?\s*[:：#]?\s*(?P<v>[a-z0-9]+(?:[-/.][a-z0-9]+)*)",
    ),
    (
        "error_code",
        1,
        r"(?i)(?:故障代码|故障码|错误代码|错误码|报错|显示|提示|出现|error\s*code|fault\s*code|error)\s*(?:是|为|了|is)?\s*[:：]?\s*(?P<v>0x[0-9a-f]{4,8}|[a-z]{1,3}-?\d{1,4})",
    ),
    (
        "email",
        2,
        r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}",
    ),
    ("phone", 3, r"(?:\+?86[\s-]?)?1[3-9]\d(?:[\s-]?\d{4}){2}"),
    ("phone", 3, r"(?:\(0\d{2,3}\)\s?|0\d{2,3}-)\d{7,8}"),
    ("phone", 3, r"400-?\d{3}-?\d{4}"),
    (
        "phone",
        3,
        r"\+[1-9]\d{0,2}(?:[\s-]?\(?\d{1,4}\)?)(?:[\s-]?\d{2,4}){2,4}",
    ),
    ("date", 4, r"\d{4}[-/.]\d{1,2}[-/.]\d{1,2}"),
    ("date", 4, r"(?:\d{4}年)?\d{1,2}月\d{1,2}[日号]"),
    (
        "date",
        4,
        r"(?:January|February|March|April|May|June|July|August|September|October|November|December|Jan|Feb|Mar|Apr|Jun|Jul|Aug|Sept|Sep|Oct|Nov|Dec)\.?\s+\d{1,2}(?:st|nd|rd|th)?(?:,?\s+\d{4})?",
    ),
    (
        "date",
        4,
        r"\d{1,2}(?:st|nd|rd|th)?\s+(?:January|February|March|April|May|June|July|August|September|October|November|December|Jan|Feb|Mar|Apr|Jun|Jul|Aug|Sept|Sep|Oct|Nov|Dec)\.?,?\s+\d{4}",
    ),
    (
        "amount",
        5,
        r"(?i)(?:[¥￥$€£]|RMB|CNY|USD)\s?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d{1,2})?",
    ),
    (
        "amount",
        5,
        r"(?i)(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d{1,2})?\s?(?:元|块钱|人民币|美元|rmb|yuan|dollars?|usd)",
    ),
];

/// Precedence of a pack's own patterns: they beat every built-in on overlap.
const PACK_PRECEDENCE: u8 = 0;

/// One compiled pattern.
#[derive(Debug)]
struct Extractor {
    name: String,
    precedence: u8,
    regex: Regex,
    /// Capture group holding the value (0 = whole match).
    group: usize,
}

/// A candidate match before overlap resolution.
struct Candidate {
    name: String,
    precedence: u8,
    start: usize,
    end: usize,
}

/// Extracts built-in and pack-defined fields from text; patterns compile once in [`FieldExtractor::new`].
#[derive(Debug)]
pub struct FieldExtractor {
    extractors: Vec<Extractor>,
}

impl FieldExtractor {
    /// Compiles the built-in extractors plus every spec that has a `pattern`.
    /// An invalid pack pattern is an [`Error::InvalidInput`] naming the field.
    pub fn new(specs: &[FieldSpec]) -> Result<FieldExtractor> {
        let mut extractors = Vec::with_capacity(BUILTINS.len() + specs.len());
        for spec in specs {
            let Some(pattern) = &spec.pattern else {
                continue;
            };
            let regex = Regex::new(pattern).map_err(|e| {
                Error::InvalidInput(format!(
                    "field `{}`: invalid pattern `{pattern}`: {e}",
                    spec.name
                ))
            })?;
            let group = usize::from(regex.captures_len() > 1);
            extractors.push(Extractor {
                name: spec.name.clone(),
                precedence: PACK_PRECEDENCE,
                regex,
                group,
            });
        }
        for (name, precedence, pattern) in BUILTINS {
            let regex = Regex::new(pattern).map_err(|e| {
                Error::InvalidInput(format!("built-in field `{name}`: invalid pattern: {e}"))
            })?;
            let group = regex
                .capture_names()
                .position(|n| n == Some("v"))
                .unwrap_or(0);
            extractors.push(Extractor {
                name: (*name).to_string(),
                precedence: *precedence,
                regex,
                group,
            });
        }
        Ok(FieldExtractor { extractors })
    }

    /// Every field found in `text`, in text order: non-overlapping, one per
    /// distinct (name, value), `source = "extracted"`, confidence 1.0, with
    /// byte spans that slice the value out of `text` and character spans.
    pub fn extract(&self, text: &str) -> Vec<FieldValue> {
        let mut candidates: Vec<Candidate> = self
            .extractors
            .iter()
            .flat_map(|ex| find_all(ex, text))
            .collect();
        candidates.sort_by(|a, b| {
            a.precedence
                .cmp(&b.precedence)
                .then((b.end - b.start).cmp(&(a.end - a.start)))
                .then(a.start.cmp(&b.start))
        });
        // Kept spans are disjoint, so sorted by start they are sorted by end too:
        // a candidate overlaps one iff it overlaps the last kept span starting before its end.
        let mut kept: BTreeMap<usize, Candidate> = BTreeMap::new();
        for c in candidates {
            let overlaps = kept
                .range(..c.end)
                .next_back()
                .is_some_and(|(_, k)| k.end > c.start);
            if !overlaps {
                kept.insert(c.start, c);
            }
        }

        let mut seen = HashSet::new();
        let mut fields = Vec::with_capacity(kept.len());
        // Candidates are in text order, so character offsets are counted incrementally.
        let (mut byte_pos, mut char_pos) = (0, 0);
        for c in kept.into_values() {
            char_pos += text[byte_pos..c.start].chars().count();
            byte_pos = c.start;
            let value = &text[c.start..c.end];
            if !seen.insert((c.name.clone(), value.to_string())) {
                continue;
            }
            fields.push(FieldValue {
                name: c.name,
                value: value.to_string(),
                span: Some((c.start, c.end)),
                char_span: Some((char_pos, char_pos + value.chars().count())),
                source: "extracted".to_string(),
                confidence: 1.0,
            });
        }
        fields
    }
}

/// All boundary-respecting, valid matches of one extractor. After a rejected
/// match the search resumes one character later, so a valid match that starts
/// inside the rejected one is still found.
fn find_all(ex: &Extractor, text: &str) -> Vec<Candidate> {
    let mut found = Vec::new();
    let mut pos = 0;
    while pos <= text.len() {
        let Some(caps) = ex.regex.captures_at(text, pos) else {
            break;
        };
        let Some(whole) = caps.get(0) else {
            break;
        };
        let value = caps.get(ex.group).unwrap_or(whole);
        let accepted = !value.as_str().is_empty()
            && !glued_before(text, whole.start())
            && !glued_before(text, value.start())
            && !glued_after(text, value.end())
            && is_valid(&ex.name, ex.precedence, value.as_str());
        if accepted {
            found.push(Candidate {
                name: ex.name.clone(),
                precedence: ex.precedence,
                start: value.start(),
                end: value.end(),
            });
            pos = whole.end().max(whole.start() + 1);
        } else {
            pos = whole.start() + 1;
        }
        while pos < text.len() && !text.is_char_boundary(pos) {
            pos += 1;
        }
    }
    found
}

/// True when the match starting at `start` would continue an ASCII letter/digit
/// token (e.g. the `13812345678` inside `JD13812345678`).
fn glued_before(text: &str, start: usize) -> bool {
    let first = text[start..].chars().next();
    let prev = text[..start].chars().next_back();
    matches!((prev, first), (Some(p), Some(f)) if p.is_ascii_alphanumeric() && f.is_ascii_alphanumeric())
}

/// True when the value ending at `end` is followed by more of the same ASCII token.
fn glued_after(text: &str, end: usize) -> bool {
    let last = text[..end].chars().next_back();
    let next = text[end..].chars().next();
    matches!((last, next), (Some(l), Some(n)) if l.is_ascii_alphanumeric() && n.is_ascii_alphanumeric())
}

/// Extra checks a regex cannot express cheaply.
fn is_valid(name: &str, precedence: u8, value: &str) -> bool {
    if precedence == PACK_PRECEDENCE {
        return true;
    }
    let digits = value.chars().filter(char::is_ascii_digit).count();
    let has_letter = value.chars().any(|c| c.is_ascii_alphabetic());
    match name {
        // A model code mixes letters and digits ("doesn't" or "100" are not models).
        "device_model" => digits > 0 && has_letter && value.len() >= 3,
        "serial_no" => digits >= 2,
        "phone" => (7..=15).contains(&digits),
        "date" => valid_date(value),
        _ => true,
    }
}

/// Month 1–12 and day 1–31 for numeric dates; named-month dates need a day 1–31.
fn valid_date(value: &str) -> bool {
    let numbers: Vec<u32> = value
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .filter_map(|s| s.parse().ok())
        .collect();
    // English month names are matched capitalised; numeric forms have no capitals.
    if value.chars().any(|c| c.is_ascii_uppercase()) {
        // "March 5, 2026" / "5th March 2026": the day is the first number < 100.
        return numbers
            .iter()
            .find(|n| **n < 100)
            .is_some_and(|d| (1..=31).contains(d));
    }
    match numbers.as_slice() {
        [_, month, day] | [month, day] => (1..=12).contains(month) && (1..=31).contains(day),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn extract(text: &str) -> Vec<(String, String)> {
        let ex = FieldExtractor::new(&[]).unwrap();
        ex.extract(text)
            .into_iter()
            .map(|f| (f.name, f.value))
            .collect()
    }

    #[test]
    fn builtins_compile_and_have_value_groups_where_keyed() {
        let ex = FieldExtractor::new(&[]).unwrap();
        assert_eq!(ex.extractors.len(), BUILTINS.len());
        for e in &ex.extractors {
            if e.precedence == 1 {
                assert!(e.group > 0, "{} needs a value group", e.name);
            }
        }
    }

    #[test]
    fn glue_checks_only_ascii_tokens() {
        assert!(glued_before("JD138", 2));
        assert!(!glued_before("单号138", "单号".len()));
        assert!(glued_after("1381234567890", 11));
        assert!(!glued_after("138元", 3));
    }

    #[test]
    fn date_validation_rejects_impossible_months() {
        assert!(valid_date("2026-03-01"));
        assert!(!valid_date("2026-13-01"));
        assert!(valid_date("3月5号"));
        assert!(!valid_date("3月45号"));
        assert!(valid_date("March 5, 2026"));
        assert!(!valid_date("March 45"));
    }

    #[test]
    fn one_value_reported_once() {
        let got = extract("手机 13812345678，再说一遍 13812345678");
        assert_eq!(got, vec![("phone".to_string(), "13812345678".to_string())]);
    }
}
