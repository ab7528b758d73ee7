//! `eval fields`: the field extractor (built-ins plus a pack's specs) against
//! requests whose fields were written down by hand, per field name.
//!
//! A found field counts as right when its name, value and character span are
//! the expected ones. Fields a pack lets neighbours infer (the product) are
//! settled as the engine settles them with no neighbours: the first value the
//! text names.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::api::FieldValue;
use crate::decide::fields::FieldExtractor;
use crate::decide::recommend::settle_fields;
use crate::error::Result;
use crate::pack::FieldSpec;

/// One request of a field set: `{"id", "text", "fields": [{"name", "value", "span"}]}`.
#[derive(Debug, Clone, Deserialize)]
pub struct FieldCase {
    /// Case id (reported with its errors).
    pub id: String,
    /// The request text.
    pub text: String,
    /// The fields a careful agent would copy out of it.
    pub fields: Vec<ExpectedField>,
}

/// A field expected in a request.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct ExpectedField {
    /// Field name.
    pub name: String,
    /// Its value.
    pub value: String,
    /// Character span `[start, end)` of the value (or the word naming it) in the text.
    pub span: (usize, usize),
}

/// Precision and recall of one field name.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct FieldScore {
    /// Fields of this name expected.
    pub expected: usize,
    /// Fields of this name found.
    pub found: usize,
    /// Found with the expected value and span.
    pub right: usize,
    /// `right / found` (1 when nothing was found).
    pub precision: f64,
    /// `right / expected` (1 when nothing was expected).
    pub recall: f64,
}

/// One request where the extractor and the expectation differ.
#[derive(Debug, Clone, Serialize)]
pub struct FieldMiss {
    /// Case id.
    pub id: String,
    /// Expected but not found, as `name=value@start..end`.
    pub missed: Vec<String>,
    /// Found but not expected, as `name=value@start..end`.
    pub wrong: Vec<String>,
}

/// What `eval fields` prints (one JSON object).
#[derive(Debug, Clone, Serialize)]
pub struct FieldsReport {
    /// Requests evaluated.
    pub cases: usize,
    /// Scores by field name.
    pub fields: BTreeMap<String, FieldScore>,
    /// Every field together.
    pub overall: FieldScore,
    /// Requests with a missed or a wrong field.
    pub misses: Vec<FieldMiss>,
}

/// Runs the extractor of `specs` (a pack's `[[fields]]`; empty for the
/// built-ins alone) on every case and scores it.
pub fn fields(specs: &[FieldSpec], cases: &[FieldCase]) -> Result<FieldsReport> {
    let extractor = FieldExtractor::new(specs)?;
    let mut counts: BTreeMap<String, (usize, usize, usize)> = BTreeMap::new();
    let mut misses = Vec::new();
    for case in cases {
        let found = settle_fields(specs, extractor.extract(&case.text), &BTreeMap::new());
        let got: BTreeSet<ExpectedField> = found.iter().filter_map(as_expected).collect();
        let want: BTreeSet<ExpectedField> = case.fields.iter().cloned().collect();
        for f in &want {
            counts.entry(f.name.clone()).or_default().0 += 1;
        }
        for f in &got {
            let c = counts.entry(f.name.clone()).or_default();
            c.1 += 1;
            c.2 += usize::from(want.contains(f));
        }
        let show = |f: &ExpectedField| format!("{}={}@{}..{}", f.name, f.value, f.span.0, f.span.1);
        let missed: Vec<String> = want.difference(&got).map(show).collect();
        let wrong: Vec<String> = got.difference(&want).map(show).collect();
        if !missed.is_empty() || !wrong.is_empty() {
            misses.push(FieldMiss {
                id: case.id.clone(),
                missed,
                wrong,
            });
        }
    }
    let (e, f, r) = counts
        .values()
        .fold((0, 0, 0), |(e, f, r), c| (e + c.0, f + c.1, r + c.2));
    Ok(FieldsReport {
        cases: cases.len(),
        fields: counts
            .into_iter()
            .map(|(name, (e, f, r))| (name, score(e, f, r)))
            .collect(),
        overall: score(e, f, r),
        misses,
    })
}

/// A found field in the expectation's terms (fields without a span are inferred: none here).
fn as_expected(f: &FieldValue) -> Option<ExpectedField> {
    Some(ExpectedField {
        name: f.name.clone(),
        value: f.value.clone(),
        span: f.char_span?,
    })
}

/// Precision and recall from counts.
fn score(expected: usize, found: usize, right: usize) -> FieldScore {
    let ratio = |a: usize, b: usize| if b == 0 { 1.0 } else { a as f64 / b as f64 };
    FieldScore {
        expected,
        found,
        right,
        precision: ratio(right, found),
        recall: ratio(right, expected),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn case(id: &str, text: &str, fields: &[(&str, &str, (usize, usize))]) -> FieldCase {
        FieldCase {
            id: id.into(),
            text: text.into(),
            fields: fields
                .iter()
                .map(|(n, v, s)| ExpectedField {
                    name: (*n).into(),
                    value: (*v).into(),
                    span: *s,
                })
                .collect(),
        }
    }

    #[test]
    fn scores_count_value_and_span_per_field() {
        let cases = [
            // right phone; the e-mail is expected at the wrong span, so it is both missed and wrong
            case(
                "a",
                "电话 13812345678 邮箱 a@example.com",
                &[
                    ("phone", "13812345678", (3, 14)),
                    ("email", "a@example.com", (0, 13)),
                ],
            ),
            // an order number nobody expected
            case("b", "订单号 JD1234567890", &[]),
        ];
        let r = fields(&[], &cases).unwrap();
        assert_eq!(r.cases, 2);
        assert_eq!(r.fields["phone"], score(1, 1, 1));
        assert_eq!(r.fields["email"], score(1, 1, 0));
        assert_eq!(r.fields["order_no"].precision, 0.0);
        assert_eq!(r.fields["order_no"].recall, 1.0);
        assert_eq!(r.overall, score(2, 3, 1));
        assert_eq!(r.misses.len(), 2);
        assert_eq!(r.misses[0].missed, ["email=a@example.com@0..13"]);
        assert_eq!(r.misses[1].wrong, ["order_no=JD1234567890@4..16"]);
    }
}
