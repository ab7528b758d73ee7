//! Field extraction: order and invoice numbers, phones, e-mails, device
//! models, serial numbers, error codes, amounts and dates found in a
//! request's text, with exact byte and character spans, plus a pack's own
//! patterns and the words that name a pack field's values (the product).
//!
//! Reference numbers are recognised by the word that introduces them (订单号,
//! 单号, order #, PO, booking reference, 发票号码, invoice no. …, with `:`, `#`,
//! `No.`, `是`, brackets between) followed by one token of letters and digits
//! with `-`, `_` or `/` separators (`ORD-2024-00123`, `#A12345`, `No. 12345`,
//! `112-3456789-1234567`), or by their own prefix (`ORD-…`, `INV-…`). Words that
//! introduce *other* references (快递单号, 运单号, 退货单号, 工单号, tracking
//! number, ticket, case) claim their value so that it is not taken for an
//! order number, and report nothing.
//!
//! Matches never start or end inside a longer ASCII letter/digit token (nor one
//! joined by `-` or `_`), and overlapping candidates are resolved by
//! precedence (pack patterns, then keyword-introduced fields, then prefixed
//! references and e-mail, phone, date, amount, and last the words naming a
//! value), and among equals by the longer match, keyword included: so a phone
//! number is never also reported as an order number, and `快递单号` beats `单号`.
//!
//! A pack field with `values` (the product) reports the value a word names, with
//! the word's span. A word right before a phone number labels that number (`手机
//! 138…`, `phone +44 …`) and does not count.

use std::collections::{BTreeMap, HashSet};

use regex::Regex;

use crate::api::FieldValue;
use crate::error::{Error, Result};
use crate::pack::FieldSpec;

/// Name of the patterns that claim a span for no field.
const BLOCK: &str = "";

/// Connectors between an introducing word and the value: `:`, `#`, `No.`,
/// `number`, `ID`, `是`, `号码`, brackets, in any order (at most four).
const CONN: &str = r"(?P<c>(?:\s*(?:[:：#＃=(（]|no\.|nr\.|no|number|num|id|ref(?:erence)?|confirmation|code|is|was|是|为|号码|编号|号))*\s*)";

/// A reference token: letters and digits with `-`, `_`, `/` separators (the
/// digits it needs are counted in [`is_valid`]).
const REF: &str = r"(?P<v>[a-z0-9]+(?:[-_/][a-z0-9]+)*)";

/// Error-code values: hex, letters + digits, or (after words that say "code") plain digits.
const CODE: &str = r"0x[0-9a-f]{4,8}|[a-z]{1,3}-?\d{1,4}";

/// Built-in patterns: (field name, precedence, regex). A named group `v`, when
/// present, is the value; otherwise the whole match is. Lower precedence wins overlaps.
fn builtins() -> Vec<(&'static str, u8, String)> {
    let keyed = |words: &str| format!(r"(?i)(?:{words}){CONN}{REF}");
    vec![
        (
            "order_no",
            1,
            keyed(r"订单编号|订单号码|订单号|订单ID|订单|单号|purchase\s+order|order|(?-i:PO)|booking|reservation"),
        ),
        (
            "invoice_no",
            1,
            keyed(r"电子发票号码|发票号码|发票编号|发票号|invoice|(?-i:INV)"),
        ),
        // Other references: they claim their value and report nothing.
        (
            BLOCK,
            1,
            keyed(r"快递单号|快递号|运单号码|运单编号|运单号|物流单号|物流编号|退货单号|退款单号|退换货单号|售后单号|工单编号|工单号|工单|服务单号|维修单号|tracking|waybill|ticket|case|(?-i:RMA)|return\s+(?:number|no\.?|#|id)"),
        ),
        (
            "serial_no",
            1,
            r"(?i)(?:序列号|机身码|机身号|SN码|S/N|SN|IMEI\d?|serial\s*(?:no\.?|number|#)?)\s*(?:是|为|is)?\s*[:：#]?\s*(?P<v>[a-z0-9][a-z0-9-]{5,31})".to_string(),
        ),
        // A bare "SN" + digits code is a serial number even without a keyword.
        ("serial_no", 1, r"(?P<v>SN\d[A-Z0-9]{5,30})".to_string()),
        (
            "device_model",
            1,
            r"(?i)(?:产品型号|型号|机型|model\s*(?:no\.?|number|#)?)\s*(?:是|为|is)?\s*[:：#]?\s*(?P<v>[a-z0-9]+(?:[-/.][a-z0-9]+)*)".to_string(),
        ),
        (
            "error_code",
            1,
            format!(r"(?i)(?:故障代码|故障码|错误代码|错误码|报错|error\s*code|fault\s*code|error)\s*(?:是|为|了|is)?\s*[:：]?\s*(?P<v>{CODE}|\d{{2,5}})"),
        ),
        (
            "error_code",
            1,
            format!(r"(?i)(?:显示|提示|出现|闪|报|shows?|showing|displays?|displaying|flash(?:es|ing)?|blink(?:s|ing)?|says?|saying)\s*(?:了)?\s*[:：]?\s*(?P<v>{CODE})"),
        ),
        // References that carry their kind in their prefix.
        (
            "order_no",
            2,
            r"(?P<v>(?:ORDER|ORD)[-_]?\d[A-Za-z0-9]*(?:[-_/][A-Za-z0-9]+)*)".to_string(),
        ),
        (
            "invoice_no",
            2,
            r"(?P<v>INV[-_/]?[A-Za-z0-9]*\d[A-Za-z0-9]*(?:[-_/][A-Za-z0-9]+)*)".to_string(),
        ),
        (
            "email",
            2,
            r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}".to_string(),
        ),
        ("phone", 3, r"(?:\+?86[\s-]?)?1[3-9]\d(?:[\s-]?\d{4}){2}".to_string()),
        ("phone", 3, r"(?:\(0\d{2,3}\)\s?|0\d{2,3}-)\d{7,8}".to_string()),
        ("phone", 3, r"400-?\d{3}-?\d{4}".to_string()),
        (
            "phone",
            3,
            r"\+[1-9]\d{0,2}(?:[\s-]?\(?\d{1,4}\)?)(?:[\s-]?\d{2,4}){2,4}".to_string(),
        ),
        // North American numbers without the country code: (415) 555-0100, 415-555-0100.
        ("phone", 3, r"(?:\([2-9]\d{2}\)\s?|[2-9]\d{2}[-.])[2-9]\d{2}[-.]\d{4}".to_string()),
        ("date", 4, r"\d{4}[-/.]\d{1,2}[-/.]\d{1,2}".to_string()),
        // Day and month either way round, then the year: 05/03/2024, 12.05.2024.
        ("date", 4, r"\d{1,2}[/.]\d{1,2}[/.]\d{4}".to_string()),
        ("date", 4, r"(?:\d{4}年)?\d{1,2}月\d{1,2}[日号]".to_string()),
        (
            "date",
            4,
            format!(r"(?:{MONTHS})\.?\s+\d{{1,2}}(?:st|nd|rd|th)?(?:,?\s+\d{{4}})?"),
        ),
        (
            "date",
            4,
            format!(r"\d{{1,2}}(?:st|nd|rd|th)?\s+(?:{MONTHS})\.?,?\s+\d{{4}}"),
        ),
        (
            "amount",
            5,
            r"(?i)(?:[¥￥$€£]|RMB|CNY|USD|EUR)\s?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d{1,2})?".to_string(),
        ),
        (
            "amount",
            5,
            r"(?i)(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d{1,2})?\s?(?:元|块钱|人民币|美元|欧元|rmb|cny|yuan|dollars?|usd|euros?|eur)".to_string(),
        ),
        // 块 is also a counter (3块电池): money only from two digits on.
        ("amount", 5, r"(?:\d{1,3}(?:,\d{3})+|\d{2,})(?:\.\d{1,2})?\s?块".to_string()),
    ]
}

/// English month names, capitalised (a lower-case "may" is a verb).
const MONTHS: &str = "January|February|March|April|May|June|July|August|September|October|November|December|Jan|Feb|Mar|Apr|Jun|Jul|Aug|Sept|Sep|Oct|Nov|Dec";

/// Precedence of a pack's own patterns: they beat every built-in on overlap.
const PACK_PRECEDENCE: u8 = 0;

/// Precedence of the words that name a pack field's values: everything else wins.
const WORD_PRECEDENCE: u8 = 6;

/// What a match of one extractor gives.
#[derive(Debug)]
enum Yields {
    /// The matched text (or its `v` group) is the value.
    Text,
    /// This value, named by the matched word.
    Value(String),
}

/// One compiled pattern.
#[derive(Debug)]
struct Extractor {
    name: String,
    precedence: u8,
    regex: Regex,
    /// Capture group holding the value (0 = whole match).
    group: usize,
    yields: Yields,
}

/// A candidate match before overlap resolution.
struct Candidate<'a> {
    ex: &'a Extractor,
    /// The value's byte span.
    start: usize,
    end: usize,
    /// The span it claims against other candidates: the value and, for a
    /// built-in, the words that introduce it.
    claim: (usize, usize),
}

/// Extracts built-in and pack-defined fields from text; patterns compile once in [`FieldExtractor::new`].
#[derive(Debug)]
pub struct FieldExtractor {
    extractors: Vec<Extractor>,
    /// (field name, ASCII-lower-cased phrases inside which its words do not count).
    exceptions: Vec<(String, Vec<String>)>,
}

impl FieldExtractor {
    /// Compiles the built-in extractors plus every spec's `pattern` and `values`.
    /// An invalid pack pattern is an [`Error::InvalidInput`] naming the field.
    pub fn new(specs: &[FieldSpec]) -> Result<FieldExtractor> {
        let builtins = builtins();
        let mut extractors = Vec::with_capacity(builtins.len() + specs.len());
        let mut exceptions = Vec::new();
        for spec in specs {
            if let Some(pattern) = &spec.pattern {
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
                    yields: Yields::Text,
                });
            }
            for (value, words) in &spec.values {
                let regex = Regex::new(&words_pattern(words)).map_err(|e| {
                    Error::InvalidInput(format!("field `{}`: value `{value}`: {e}", spec.name))
                })?;
                extractors.push(Extractor {
                    name: spec.name.clone(),
                    precedence: WORD_PRECEDENCE,
                    regex,
                    group: 0,
                    yields: Yields::Value(value.clone()),
                });
            }
            if !spec.except.is_empty() {
                let lower = spec.except.iter().map(|p| p.to_ascii_lowercase()).collect();
                exceptions.push((spec.name.clone(), lower));
            }
        }
        for (name, precedence, pattern) in builtins {
            let regex = Regex::new(&pattern).map_err(|e| {
                Error::InvalidInput(format!("built-in field `{name}`: invalid pattern: {e}"))
            })?;
            let group = regex
                .capture_names()
                .position(|n| n == Some("v"))
                .unwrap_or(0);
            extractors.push(Extractor {
                name: name.to_string(),
                precedence,
                regex,
                group,
                yields: Yields::Text,
            });
        }
        Ok(FieldExtractor {
            extractors,
            exceptions,
        })
    }

    /// Every field found in `text`, in text order: non-overlapping, one per
    /// distinct (name, value), `source = "extracted"`, confidence 1.0, with
    /// byte spans that slice the value out of `text` (for a value named by a
    /// word, the word) and character spans.
    pub fn extract(&self, text: &str) -> Vec<FieldValue> {
        let excepted = self.excepted(text);
        let mut candidates: Vec<Candidate> = self
            .extractors
            .iter()
            .flat_map(|ex| find_all(ex, text))
            .filter(|c| {
                !matches!(c.ex.yields, Yields::Value(_))
                    || !excepted
                        .iter()
                        .any(|(n, s, e)| *n == c.ex.name && *s <= c.start && c.end <= *e)
            })
            .collect();
        candidates.sort_by(|a, b| {
            a.ex.precedence
                .cmp(&b.ex.precedence)
                .then((b.claim.1 - b.claim.0).cmp(&(a.claim.1 - a.claim.0)))
                .then(a.start.cmp(&b.start))
        });
        // Kept claims are disjoint, so sorted by start they are sorted by end too:
        // a candidate overlaps one iff it overlaps the last kept claim starting before its end.
        let mut kept: BTreeMap<usize, Candidate> = BTreeMap::new();
        for c in candidates {
            let overlaps = kept
                .range(..c.claim.1)
                .next_back()
                .is_some_and(|(_, k)| k.claim.1 > c.claim.0);
            if !overlaps {
                kept.insert(c.claim.0, c);
            }
        }
        let kept: Vec<Candidate> = kept.into_values().collect();

        let mut seen = HashSet::new();
        let mut fields = Vec::with_capacity(kept.len());
        // Candidates are in text order, so character offsets are counted incrementally.
        let (mut byte_pos, mut char_pos) = (0, 0);
        for (i, c) in kept.iter().enumerate() {
            if c.ex.name == BLOCK || labels_a_phone(text, c, kept.get(i + 1)) {
                continue;
            }
            char_pos += text[byte_pos..c.start].chars().count();
            byte_pos = c.start;
            let span = &text[c.start..c.end];
            let value = match &c.ex.yields {
                Yields::Text => span,
                Yields::Value(v) => v.as_str(),
            };
            if !seen.insert((c.ex.name.as_str(), value)) {
                continue;
            }
            fields.push(FieldValue {
                name: c.ex.name.clone(),
                value: value.to_string(),
                span: Some((c.start, c.end)),
                char_span: Some((char_pos, char_pos + span.chars().count())),
                source: "extracted".to_string(),
                confidence: 1.0,
                reasons: Vec::new(),
            });
        }
        fields
    }

    /// (field name, byte span) of every exception phrase in `text`.
    fn excepted<'a>(&'a self, text: &str) -> Vec<(&'a str, usize, usize)> {
        if self.exceptions.is_empty() {
            return Vec::new();
        }
        // ASCII lower-casing keeps every byte offset.
        let lower = text.to_ascii_lowercase();
        self.exceptions
            .iter()
            .flat_map(|(name, phrases)| {
                let lower = &lower;
                phrases.iter().flat_map(move |p| {
                    lower
                        .match_indices(p.as_str())
                        .map(move |(s, m)| (name.as_str(), s, s + m.len()))
                })
            })
            .collect()
    }
}

/// One regex for the words naming a value: ASCII case ignored, an English word
/// may take a plural `s`/`es`; longer words first so the longest one matches.
fn words_pattern(words: &[String]) -> String {
    let mut words: Vec<&String> = words.iter().collect();
    words.sort_by_key(|w| std::cmp::Reverse(w.len()));
    let alternatives: Vec<String> = words
        .iter()
        .map(|w| {
            let escaped = regex::escape(w);
            if w.ends_with(|c: char| c.is_ascii_alphabetic()) {
                format!("{escaped}(?:e?s)?")
            } else {
                escaped
            }
        })
        .collect();
    format!("(?i:{})", alternatives.join("|"))
}

/// True when `c` is a value-naming word followed, after spaces or a colon only,
/// by a phone number: the word labels the number (`手机 138…`, `phone: +44…`).
fn labels_a_phone(text: &str, c: &Candidate, next: Option<&Candidate>) -> bool {
    matches!(c.ex.yields, Yields::Value(_))
        && next.is_some_and(|n| {
            n.ex.name == "phone"
                && text[c.end..n.start]
                    .chars()
                    .all(|ch| ch.is_whitespace() || ch == ':' || ch == '：')
        })
}

/// All boundary-respecting, valid matches of one extractor. After a rejected
/// match the search resumes one character later, so a valid match that starts
/// inside the rejected one is still found.
fn find_all<'a>(ex: &'a Extractor, text: &str) -> Vec<Candidate<'a>> {
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
        let connector = caps.name("c").map_or("", |c| c.as_str());
        let accepted = !value.as_str().is_empty()
            && !continues_token(text, whole.start())
            && !glued_before(text, value.start())
            && !token_goes_on(text, value.end())
            && is_valid(ex, value.as_str(), connector);
        if accepted {
            // A pack pattern's match may take context (a following character):
            // only its value is claimed. A built-in claims its introducing words too.
            let claim = if ex.precedence == PACK_PRECEDENCE {
                (value.start(), value.end())
            } else {
                (whole.start(), whole.end())
            };
            found.push(Candidate {
                ex,
                start: value.start(),
                end: value.end(),
                claim,
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

/// [`glued_before`], or the previous token is joined to it by `-` or `_`
/// (the `2024-00123` inside `ORD-2024-00123`).
fn continues_token(text: &str, start: usize) -> bool {
    if glued_before(text, start) {
        return true;
    }
    let mut before = text[..start].chars().rev();
    let first = text[start..].chars().next();
    matches!(
        (before.next(), before.next(), first),
        (Some('-' | '_'), Some(p), Some(f)) if p.is_ascii_alphanumeric() && f.is_ascii_alphanumeric()
    )
}

/// True when the value ending at `end` is followed by more of the same ASCII
/// token, directly or after a `-`/`_` (the `EB-2024` of `EB-2024-55120`).
fn token_goes_on(text: &str, end: usize) -> bool {
    let last = text[..end].chars().next_back();
    let mut after = text[end..].chars();
    match (last, after.next(), after.next()) {
        (Some(l), Some(n), _) if l.is_ascii_alphanumeric() && n.is_ascii_alphanumeric() => true,
        (Some(l), Some('-' | '_'), Some(n)) => {
            l.is_ascii_alphanumeric() && n.is_ascii_alphanumeric()
        }
        _ => false,
    }
}

/// Extra checks a regex cannot express cheaply. `connector` is what stood
/// between a reference's introducing word and its value.
fn is_valid(ex: &Extractor, value: &str, connector: &str) -> bool {
    if ex.precedence == PACK_PRECEDENCE || matches!(ex.yields, Yields::Value(_)) {
        return true;
    }
    let digits = value.chars().filter(char::is_ascii_digit).count();
    let has_letter = value.chars().any(|c| c.is_ascii_alphabetic());
    match ex.name.as_str() {
        // A reference has four digits at least (five when nothing but a space
        // introduces a plain number: "order 2024" is not one), and is not a date.
        "order_no" | "invoice_no" => {
            let bare_number = !has_letter && connector.trim().is_empty();
            digits >= 4 + usize::from(bare_number)
                && value.len() <= 40
                && (has_letter || !valid_date(value))
        }
        // A model code mixes letters and digits ("doesn't" or "100" are not models).
        "device_model" => digits > 0 && has_letter && value.len() >= 3,
        "serial_no" => digits >= 2,
        // Another reference's number ("ticket closed" is no reference).
        BLOCK => digits >= 3,
        "phone" => (7..=15).contains(&digits),
        "date" => valid_date(value),
        _ => true,
    }
}

/// A calendar date: year-month-day, day and month either way round before the
/// year (`05/03/2024`), Chinese 月/日 forms (month 1–12, day 1–31), or a named
/// month with a day 1–31.
fn valid_date(value: &str) -> bool {
    let numbers: Vec<u32> = value
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .filter_map(|s| s.parse().ok())
        .collect();
    let ok = |month: u32, day: u32| (1..=12).contains(&month) && (1..=31).contains(&day);
    // English month names are matched capitalised; numeric forms have no capitals.
    if value.chars().any(|c| c.is_ascii_uppercase()) {
        // "March 5, 2026" / "5th March 2026": the day is the first number < 100.
        return numbers
            .iter()
            .find(|n| **n < 100)
            .is_some_and(|d| (1..=31).contains(d));
    }
    let year_first = value.chars().take_while(char::is_ascii_digit).count() == 4;
    match numbers.as_slice() {
        [_, month, day] if year_first => ok(*month, *day),
        [a, b, _] if !value.contains(['年', '月']) => ok(*a, *b) || ok(*b, *a),
        [_, month, day] | [month, day] => ok(*month, *day),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (name, value) pairs found by the built-ins plus `specs`, in text order.
    fn found(specs: &[FieldSpec], text: &str) -> Vec<(String, String)> {
        FieldExtractor::new(specs)
            .unwrap()
            .extract(text)
            .into_iter()
            .map(|f| (f.name, f.value))
            .collect()
    }

    /// Each text yields exactly these fields (so a negative row lists none, or
    /// only the field the look-alike really is).
    fn check(specs: &[FieldSpec], table: &[(&str, &[(&str, &str)])]) {
        for (text, want) in table {
            let want: Vec<(String, String)> = want
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect();
            assert_eq!(found(specs, text), want, "{text}");
        }
    }

    #[test]
    fn builtins_compile_and_have_value_groups_where_keyed() {
        let ex = FieldExtractor::new(&[]).unwrap();
        assert_eq!(ex.extractors.len(), builtins().len());
        for e in &ex.extractors {
            if e.precedence == 1 {
                assert!(e.group > 0, "{} needs a value group", e.name);
            }
        }
    }

    #[test]
    fn order_numbers_after_their_words_in_every_shape() {
        check(
            &[],
            &[
                (
                    "订单号是：ORD-2024-00123，没发货",
                    &[("order_no", "ORD-2024-00123")],
                ),
                ("订单 #A12345 的冰箱", &[("order_no", "A12345")]),
                ("订单No.20240315088 退款", &[("order_no", "20240315088")]),
                (
                    "订单（编号：PO-4500012345）",
                    &[("order_no", "PO-4500012345")],
                ),
                (
                    "订单编号为：DD20240401-0093",
                    &[("order_no", "DD20240401-0093")],
                ),
                ("订单ID：SO-88231", &[("order_no", "SO-88231")]),
                (
                    "拼多多订单 220315-123456789012345",
                    &[("order_no", "220315-123456789012345")],
                ),
                ("Order No. 12345 was charged", &[("order_no", "12345")]),
                (
                    "My order #1042 still says processing",
                    &[("order_no", "1042")],
                ),
                (
                    "the order number is 112-3456789-1234567",
                    &[("order_no", "112-3456789-1234567")],
                ),
                ("PO#4500012345 - urgent", &[("order_no", "4500012345")]),
                ("My order (#B-20931) is late", &[("order_no", "B-20931")]),
                (
                    "Booking reference: HB-2024-7781",
                    &[("order_no", "HB-2024-7781")],
                ),
                (
                    "order id: 7781-2231-9902",
                    &[("order_no", "7781-2231-9902")],
                ),
                (
                    "我的 order number 是 AM6978897168",
                    &[("order_no", "AM6978897168")],
                ),
                ("refund for order 4420031", &[("order_no", "4420031")]),
            ],
        );
    }

    #[test]
    fn order_number_negatives() {
        check(
            &[],
            &[
                // other references claim their number
                ("快递单号 SF1402938475612 显示签收", &[]),
                ("运单号YT8823749201233，物流没动", &[]),
                ("工单号 T-000123 还没人处理", &[]),
                ("退货单号 RT20240402001 寄回去了", &[]),
                ("Tracking number 1Z999AA10123456784", &[]),
                ("Ticket #48213 was closed", &[]),
                // a partial number, counts, plain words
                ("订单尾号5678的扫地机", &[]),
                ("I ordered 3 fridges last week", &[]),
                ("the border 12345678", &[]),
                ("order 2024 was fine", &[]),
                // a phone is a phone, a date a date, an amount an amount
                ("手机 13812345678 订单没到", &[("phone", "13812345678")]),
                ("订单 2024-03-15 下的", &[("date", "2024-03-15")]),
                ("订单付了¥4,599", &[("amount", "¥4,599")]),
            ],
        );
    }

    #[test]
    fn references_that_carry_their_kind_in_a_prefix() {
        check(
            &[],
            &[
                (
                    "ORD-2024-00456 hasn't shipped",
                    &[("order_no", "ORD-2024-00456")],
                ),
                ("INV-2024-0042 这张发票", &[("invoice_no", "INV-2024-0042")]),
                ("Invoice please: INV-3391", &[("invoice_no", "INV-3391")]),
                ("INV/24/000512 is wrong", &[("invoice_no", "INV/24/000512")]),
                // inside a longer token the prefix means nothing
                ("XORD-2024-1", &[]),
                ("2024INV0098", &[]),
            ],
        );
    }

    #[test]
    fn invoice_numbers_and_negatives() {
        check(
            &[],
            &[
                (
                    "发票号：24442000000123456789",
                    &[("invoice_no", "24442000000123456789")],
                ),
                (
                    "发票代码 044031900111 发票号码 04521789",
                    &[("invoice_no", "04521789")],
                ),
                (
                    "电子发票号码是 25312000000034567812",
                    &[("invoice_no", "25312000000034567812")],
                ),
                ("Invoice #88213 shows", &[("invoice_no", "88213")]),
                (
                    "invoice no. 2024-00017 for",
                    &[("invoice_no", "2024-00017")],
                ),
                (
                    "invoice number is 2024INV0098",
                    &[("invoice_no", "2024INV0098")],
                ),
                ("I got invoice 55102 twice", &[("invoice_no", "55102")]),
                ("invoice # INV-77120 的金额", &[("invoice_no", "INV-77120")]),
                // no number: a request for an invoice, a tax number
                ("send me the invoice for my order", &[]),
                ("开发票，税号 91440300MA5F8XXX12", &[]),
            ],
        );
    }

    #[test]
    fn phones_north_american_and_negatives() {
        check(
            &[],
            &[
                ("call (415) 555-0100 today", &[("phone", "(415) 555-0100")]),
                ("reach me on 415-555-0123", &[("phone", "415-555-0123")]),
                ("+852 2345 6789 front desk", &[("phone", "+852 2345 6789")]),
                ("手机：+86-138-0013-8000", &[("phone", "+86-138-0013-8000")]),
                // seven digits, a version, an ID card, an order: no phone
                ("call 555-0134", &[]),
                ("version 2.3.1", &[]),
                ("身份证号 110101199003074512", &[]),
                ("订单号13812345678", &[("order_no", "13812345678")]),
            ],
        );
    }

    #[test]
    fn error_codes_with_digits_only_after_code_words() {
        check(
            &[],
            &[
                ("扫地机提示错误码 1003", &[("error_code", "1003")]),
                ("App登录报错 500", &[("error_code", "500")]),
                ("keeps saying error 14", &[("error_code", "14")]),
                ("the display is flashing F3", &[("error_code", "F3")]),
                ("The TV shows fault code F07", &[("error_code", "F07")]),
                ("故障码 P0 出现后", &[("error_code", "P0")]),
                // digits after a word that only says "shows" are not a code
                ("空调遥控显示 88:88", &[]),
                ("the error happened 2 times", &[]),
            ],
        );
    }

    #[test]
    fn serials_models_amounts_and_dates_new_forms() {
        check(
            &[],
            &[
                (
                    "IMEI: 356938035643809 stolen",
                    &[("serial_no", "356938035643809")],
                ),
                ("机身号 4C9X22A10098", &[("serial_no", "4C9X22A10098")]),
                ("599块", &[("amount", "599块")]),
                ("充值了 100 块", &[("amount", "100 块")]),
                ("买了2块电池", &[]),
                ("CNY 89 for shipping", &[("amount", "CNY 89")]),
                ("bought on 05/03/2024", &[("date", "05/03/2024")]),
                ("bought it 12.05.2024", &[("date", "12.05.2024")]),
                ("paid on 03/28/2024", &[("date", "03/28/2024")]),
                ("not a date 13/13/2024", &[]),
                ("Model year 2023", &[]),
            ],
        );
    }

    fn product() -> FieldSpec {
        let words = |w: &[&str]| w.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        FieldSpec {
            name: "product".into(),
            values: [
                ("phone".to_string(), words(&["手机", "phone"])),
                ("earbuds".to_string(), words(&["耳机", "earbuds"])),
                ("smart_home_app".to_string(), words(&["智能家居App", "app"])),
                (
                    "air_conditioner".to_string(),
                    words(&["空调", "air conditioner", "AC"]),
                ),
            ]
            .into_iter()
            .collect(),
            except: vec!["手机号".into(), "phone number".into()],
            infer: true,
            ..FieldSpec::default()
        }
    }

    #[test]
    fn words_name_a_value_with_the_word_as_span() {
        let p = [product()];
        check(
            &p,
            &[
                ("耳机左边没声音", &[("product", "earbuds")]),
                (
                    "we ordered 20 Air Conditioners",
                    &[("product", "air_conditioner")],
                ),
                // the longest word wins; whole English words only
                ("你们的智能家居App离线了", &[("product", "smart_home_app")]),
                ("my iPhone and headphones", &[]),
                ("ACME apples", &[]),
                // both named: both reported, first first
                (
                    "耳机连手机可以",
                    &[("product", "earbuds"), ("product", "phone")],
                ),
                // exceptions and labels of a phone number do not count
                (
                    "手机号 13576026429 收不到验证码",
                    &[("phone", "13576026429")],
                ),
                ("My phone number changed", &[]),
                ("请打手机 150 8485 8269", &[("phone", "150 8485 8269")]),
                ("phone +44 20 7946 0958", &[("phone", "+44 20 7946 0958")]),
                // a word before another kind of value still counts
                (
                    "手机型号 PH-A52 更新后重启",
                    &[("product", "phone"), ("device_model", "PH-A52")],
                ),
            ],
        );
        let text = "订单号 JD2024031501，空调不制冷";
        let f = FieldExtractor::new(&p).unwrap().extract(text);
        let (s, e) = f[1].span.unwrap();
        assert_eq!(&text[s..e], "空调");
        assert_eq!(f[1].char_span, Some((17, 19)));
    }

    #[test]
    fn a_pack_shape_does_not_take_part_of_a_longer_reference() {
        let spec = FieldSpec {
            name: "device_model".into(),
            pattern: Some(r"((?:EB|KFR)-[0-9A-Z]+)".into()),
            ..FieldSpec::default()
        };
        check(
            &[spec],
            &[
                ("订单编号：EB-2024-55120", &[("order_no", "EB-2024-55120")]),
                ("耳机 EB-A3 连不上", &[("device_model", "EB-A3")]),
            ],
        );
    }

    #[test]
    fn glue_checks_only_ascii_tokens() {
        assert!(glued_before("JD138", 2));
        assert!(!glued_before("单号138", "单号".len()));
        assert!(continues_token("ORD-2024", 4));
        assert!(!continues_token("+86-138", 0) && !continues_token("--138", 2));
        assert!(token_goes_on("1381234567890", 11));
        assert!(token_goes_on("EB-2024-55120", 7));
        assert!(!token_goes_on("138元", 3));
        assert!(!token_goes_on("E4-", 2));
    }

    #[test]
    fn date_validation_rejects_impossible_months() {
        assert!(valid_date("2026-03-01"));
        assert!(!valid_date("2026-13-01"));
        assert!(valid_date("3月5号"));
        assert!(!valid_date("3月45号"));
        assert!(valid_date("March 5, 2026"));
        assert!(!valid_date("March 45"));
        assert!(valid_date("28/03/2024") && valid_date("03/28/2024"));
        assert!(!valid_date("28/13/2024"));
    }

    #[test]
    fn one_value_reported_once() {
        let got = found(&[], "手机 13812345678，再说一遍 13812345678");
        assert_eq!(got, vec![("phone".to_string(), "13812345678".to_string())]);
    }
}
