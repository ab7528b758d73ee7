//! Recommendations from similar tickets: duplicates, resolved look-alikes,
//! a predicted resolution where neighbours agree, and fields inferred from
//! neighbours.

use std::collections::BTreeMap;

use indexer::{ticket_text, DocKind, Document, Explanation, Hit, Ticket};
use time::OffsetDateTime;

use crate::api::{Duplicate, FieldValue, PredictedResolution};
use crate::error::Result;
use crate::model::knn::{vote_weights, VOTE_TEMPERATURE};
use crate::model::textsim::{containment, Units};
use crate::pack::FieldSpec;
use crate::store::memory::TicketMemory;

/// Most duplicates reported.
const MAX_DUPLICATES: usize = 5;
/// A predicted resolution needs at least this share of the weighted vote.
const RESOLUTION_MIN_SHARE: f32 = 0.5;
/// An inferred field needs at least this agreement.
const INFER_MIN_CONFIDENCE: f32 = 0.5;

/// A ticket as a search hit with its similarity as the evidence.
pub fn ticket_hit(t: &Ticket, similarity: f32, rank: usize) -> Hit {
    Hit {
        id: t.id.clone(),
        kind: DocKind::Ticket,
        doc: Document::Ticket(t.clone()),
        score: similarity,
        explanation: Explanation {
            vector_similarity: Some(similarity),
            vector_rank: Some(rank),
            fused_score: similarity,
            ..Explanation::default()
        },
    }
}

/// Whether a ticket has a resolution to learn from.
pub fn is_resolved(t: &Ticket) -> bool {
    !t.resolution.trim().is_empty()
}

/// A duplicate must also repeat at least this share of the shorter text's
/// words (see [`containment`]): embeddings put different faults of one
/// appliance (不脱水 / 不制冷 / 漏水) close to each other.
pub const DUPLICATE_MIN_OVERLAP: f32 = 0.5;

/// A request whose likely duplicates are looked for.
#[derive(Debug, Clone, Copy)]
pub struct DuplicateQuery<'a> {
    /// The request's passage vector.
    pub vector: &'a [f32],
    /// Its text, as embedded.
    pub text: &'a str,
    /// Its tenant: only that tenant's tickets are duplicates.
    pub tenant: &'a str,
    /// Its customer (may be empty): that customer's tickets come first.
    pub customer_id: &'a str,
    /// Cosine similarity a duplicate has at least (the pack's
    /// `duplicate_similarity`).
    pub similarity: f32,
    /// Only tickets created within this many days of `now` count.
    pub window_days: u32,
    /// The time the window ends at.
    pub now: OffsetDateTime,
}

/// Recent near-identical tickets of the same tenant, same customer first: at
/// least `query.similarity` similar in meaning and [`DUPLICATE_MIN_OVERLAP`]
/// in wording.
pub fn duplicates(memory: &TicketMemory, query: &DuplicateQuery<'_>) -> Result<Vec<Duplicate>> {
    let DuplicateQuery {
        vector,
        text,
        tenant,
        customer_id,
        similarity,
        window_days,
        now,
    } = *query;
    // A huge window (e.g. u32::MAX days) reaches back to the earliest representable time.
    let since = now
        .checked_sub(time::Duration::days(i64::from(window_days)))
        .unwrap_or(time::PrimitiveDateTime::MIN.assume_utc());
    let (since, until) = (
        since.unix_timestamp(),
        (now + time::Duration::days(1)).unix_timestamp(),
    );
    // Cut into units only when a candidate passes the cheaper tests.
    let units = std::cell::OnceCell::new();
    let near = memory.nearest_at_least(vector, 50, similarity, |e| {
        e.created.is_some_and(|c| c >= since && c <= until)
            && e.ticket.tenant == tenant
            && containment(
                units.get_or_init(|| Units::new(text)),
                &Units::new(&ticket_text(&e.ticket.title, &e.ticket.body)),
            ) >= DUPLICATE_MIN_OVERLAP
    })?;
    let mut out: Vec<Duplicate> = near
        .into_iter()
        .map(|(i, s)| {
            let t = &memory.item(i).ticket;
            Duplicate {
                same_customer: !customer_id.is_empty() && t.customer_id == customer_id,
                ticket: t.clone(),
                similarity: s,
            }
        })
        .collect();
    out.sort_by(|a, b| {
        b.same_customer
            .cmp(&a.same_customer)
            .then(b.similarity.total_cmp(&a.similarity))
    });
    out.truncate(MAX_DUPLICATES);
    Ok(out)
}

/// Two resolutions count as the same fix when the shorter one's words are at
/// least this much in the other (see [`containment`]): "更换进水阀" and
/// "更换了进水阀，测试正常" agree, "更换进水阀" and "更换排水泵" do not.
const RESOLUTION_MIN_OVERLAP: f32 = 0.6;

/// The resolution the resolved neighbours agree on: each neighbour's
/// resolution is supported by the similarity-weighted neighbours whose
/// resolution says the same (see [`RESOLUTION_MIN_OVERLAP`]); the best
/// supported one is predicted, with its share of the weight as probability.
/// `None` when no resolution has at least two supporters and half the weight:
/// neighbours of the same category with different fixes predict nothing.
pub fn predict_resolution(
    memory: &TicketMemory,
    resolved: &[(usize, f32)],
) -> Option<PredictedResolution> {
    if resolved.len() < 2 {
        return None;
    }
    let w = vote_weights(resolved, VOTE_TEMPERATURE);
    let total: f32 = w.iter().sum();
    let units: Vec<Units> = resolved
        .iter()
        .map(|(i, _)| Units::new(&memory.item(*i).ticket.resolution))
        .collect();
    let mut best: Option<(f32, usize, Vec<usize>)> = None;
    for (a, ua) in units.iter().enumerate() {
        if ua.set.is_empty() {
            continue;
        }
        let members: Vec<usize> = (0..units.len())
            .filter(|&b| containment(ua, &units[b]) >= RESOLUTION_MIN_OVERLAP)
            .collect();
        let support: f32 = members.iter().map(|&b| w[b]).sum();
        // Ties go to the more similar neighbour (the earlier one).
        if best.as_ref().is_none_or(|(s, _, _)| support > *s) {
            best = Some((support, a, members));
        }
    }
    let (support, a, members) =
        best.filter(|(s, _, m)| m.len() >= 2 && s / total >= RESOLUTION_MIN_SHARE)?;
    Some(PredictedResolution {
        text: memory.item(resolved[a].0).ticket.resolution.clone(),
        probability: support / total,
        supporting_ticket_ids: members
            .iter()
            .map(|&b| memory.item(resolved[b].0).ticket.id.clone())
            .collect(),
    })
}

/// The neighbours' vote on each field the pack marks `infer = true`: the value
/// with the largest similarity-weighted share (neighbours without the field
/// vote "unknown") and that share, by field name.
pub fn neighbour_votes(
    memory: &TicketMemory,
    neighbours: &[(usize, f32)],
    specs: &[FieldSpec],
) -> BTreeMap<String, (String, f32)> {
    let mut out = BTreeMap::new();
    if neighbours.is_empty() {
        return out;
    }
    let w = vote_weights(neighbours, VOTE_TEMPERATURE);
    let total: f32 = w.iter().sum();
    for spec in specs.iter().filter(|s| s.infer) {
        let mut votes: BTreeMap<&str, f32> = BTreeMap::new();
        for ((i, _), wi) in neighbours.iter().zip(&w) {
            if let Some(v) = memory.item(*i).ticket.fields.get(&spec.name) {
                if !v.trim().is_empty() {
                    *votes.entry(v.as_str()).or_default() += wi;
                }
            }
        }
        if let Some((value, weight)) = votes.into_iter().max_by(|a, b| a.1.total_cmp(&b.1)) {
            out.insert(spec.name.clone(), (value.to_string(), weight / total));
        }
    }
    out
}

/// Settles the fields the pack marks `infer = true`, which hold one value per
/// ticket, given the extracted `fields` and the neighbours' `votes`
/// ([`neighbour_votes`]; empty without neighbours):
///
/// * a value the text names beats the neighbours' vote. When the text names
///   several, the one the neighbours voted for is kept, else the first named;
///   the reasons say what the neighbours voted and which won;
/// * otherwise the neighbours' value is added as `inferred` when its share is
///   at least [`INFER_MIN_CONFIDENCE`].
///
/// Other fields pass through unchanged.
pub fn settle_fields(
    specs: &[FieldSpec],
    mut fields: Vec<FieldValue>,
    votes: &BTreeMap<String, (String, f32)>,
) -> Vec<FieldValue> {
    for spec in specs.iter().filter(|s| s.infer) {
        let vote = votes.get(&spec.name);
        let named: Vec<usize> = (0..fields.len())
            .filter(|&i| fields[i].name == spec.name)
            .collect();
        let Some(&first) = named.first() else {
            if let Some((value, share)) = vote.filter(|(_, s)| *s >= INFER_MIN_CONFIDENCE) {
                fields.push(FieldValue {
                    name: spec.name.clone(),
                    value: value.clone(),
                    span: None,
                    char_span: None,
                    source: "inferred".into(),
                    confidence: *share,
                    reasons: vec![format!("neighbours' vote: {}", percent(*share))],
                });
            }
            continue;
        };
        let voted = vote.and_then(|(v, _)| named.iter().copied().find(|&i| fields[i].value == *v));
        let chosen = voted.unwrap_or(first);
        let mut reasons = vec![match vote {
            None => "named in the text".to_string(),
            Some((v, share)) if *v == fields[chosen].value => {
                format!(
                    "named in the text; the neighbours agree ({})",
                    percent(*share)
                )
            }
            Some((v, share)) => format!(
                "named in the text, so it beats the neighbours' `{v}` ({})",
                percent(*share)
            ),
        }];
        let others: Vec<String> = named
            .iter()
            .filter(|&&i| i != chosen)
            .map(|&i| format!("`{}`", fields[i].value))
            .collect();
        if !others.is_empty() {
            reasons.push(format!(
                "the text also names {}; {}",
                others.join(", "),
                if voted.is_some() {
                    "the neighbours' vote picked this one"
                } else {
                    "the first named is kept"
                }
            ));
        }
        fields[chosen].reasons = reasons;
        let mut i = 0;
        fields.retain(|_| {
            let keep = i == chosen || !named.contains(&i);
            i += 1;
            keep
        });
    }
    fields
}

/// A share as a whole percentage, `64 %`.
fn percent(share: f32) -> String {
    format!("{:.0} %", share * 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::format_description::well_known::Rfc3339;

    fn add(m: &mut TicketMemory, id: &str, v: [f32; 2], resolution: &str, product: &str) {
        let mut t = Ticket {
            id: id.into(),
            body: "电视开不了机，指示灯不亮".into(),
            resolution: resolution.into(),
            category: "c".into(),
            created_at: "2026-03-01T00:00:00Z".into(),
            customer_id: if id == "b" { "C1".into() } else { "C2".into() },
            ..Ticket::default()
        };
        if !product.is_empty() {
            t.fields.insert("product".into(), product.into());
        }
        let n = (v[0] * v[0] + v[1] * v[1]).sqrt();
        m.upsert(t, &[v[0] / n, v[1] / n], None).unwrap();
    }

    fn memory() -> TicketMemory {
        let mut m = TicketMemory::new(2);
        add(&mut m, "a", [1.0, 0.0], "更换电源板", "tv");
        add(&mut m, "b", [1.0, 0.02], "更换电源板", "tv");
        add(&mut m, "c", [1.0, 0.3], "重置网络", "router");
        add(&mut m, "d", [0.0, 1.0], "", "");
        m
    }

    #[test]
    fn neighbours_that_agree_predict_a_resolution() {
        let m = memory();
        let near = m
            .nearest(&[1.0, 0.0], 3, |e| is_resolved(&e.ticket))
            .unwrap();
        let p = predict_resolution(&m, &near).unwrap();
        assert_eq!(p.text, "更换电源板");
        assert!(p.probability > 0.5);
        assert_eq!(p.supporting_ticket_ids.len(), 2);
        assert!(predict_resolution(&m, &near[..1]).is_none());
    }

    #[test]
    fn the_same_fix_in_other_words_agrees_and_different_fixes_do_not() {
        let mut m = TicketMemory::new(2);
        add(&mut m, "a", [1.0, 0.0], "更换进水阀", "");
        add(&mut m, "b", [1.0, 0.01], "更换了进水阀，测试正常", "");
        add(&mut m, "c", [1.0, 0.02], "清理排水泵滤网", "");
        let near = m.nearest(&[1.0, 0.0], 3, |_| true).unwrap();
        let p = predict_resolution(&m, &near).unwrap();
        assert_eq!(p.text, "更换进水阀");
        assert_eq!(p.supporting_ticket_ids, vec!["a", "b"]);
        assert!(p.probability > 0.5 && p.probability < 1.0);
        // Same category, three different fixes: nothing to predict.
        let mut m = TicketMemory::new(2);
        add(&mut m, "a", [1.0, 0.0], "更换进水阀", "");
        add(&mut m, "b", [1.0, 0.01], "更换排水泵", "");
        add(&mut m, "c", [1.0, 0.02], "重置主板程序", "");
        let near = m.nearest(&[1.0, 0.0], 3, |_| true).unwrap();
        assert!(predict_resolution(&m, &near).is_none());
    }

    #[test]
    fn duplicates_are_recent_similar_and_same_customer_first() {
        let m = memory();
        let now = OffsetDateTime::parse("2026-03-05T00:00:00Z", &Rfc3339).unwrap();
        let query = |text, window_days, now| DuplicateQuery {
            vector: &[1.0, 0.0],
            text,
            tenant: "",
            customer_id: "C1",
            similarity: 0.99,
            window_days,
            now,
        };
        let text = "电视又开不了机了";
        let d = duplicates(&m, &query(text, 14, now)).unwrap();
        assert_eq!(
            d.iter().map(|x| x.ticket.id.as_str()).collect::<Vec<_>>(),
            vec!["b", "a"]
        );
        assert!(d[0].same_customer);
        let later = OffsetDateTime::parse("2026-06-01T00:00:00Z", &Rfc3339).unwrap();
        // As close in meaning, but other words: not a duplicate.
        assert!(duplicates(&m, &query("冰箱漏水", 14, now))
            .unwrap()
            .is_empty());
        assert!(duplicates(&m, &query(text, 14, later)).unwrap().is_empty());
        let forever = duplicates(&m, &query(text, u32::MAX, later)).unwrap();
        assert_eq!(forever.len(), 2);
    }

    fn product_spec() -> FieldSpec {
        FieldSpec {
            name: "product".into(),
            infer: true,
            ..FieldSpec::default()
        }
    }

    fn named(value: &str, at: usize) -> FieldValue {
        FieldValue {
            name: "product".into(),
            value: value.into(),
            span: Some((at, at + 6)),
            char_span: Some((at / 3, at / 3 + 2)),
            source: "extracted".into(),
            confidence: 1.0,
            reasons: Vec::new(),
        }
    }

    #[test]
    fn inferred_fields_need_agreement() {
        let m = memory();
        let specs = [product_spec()];
        let near = m.nearest(&[1.0, 0.0], 3, |_| true).unwrap();
        let votes = neighbour_votes(&m, &near, &specs);
        let f = settle_fields(&specs, Vec::new(), &votes);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].value, "tv");
        assert_eq!(f[0].source, "inferred");
        assert!(f[0].confidence > 0.5 && f[0].confidence < 1.0);
        assert!(
            f[0].reasons[0].starts_with("neighbours' vote: "),
            "{:?}",
            f[0].reasons
        );
        // "unknown" outweighs any value: nothing inferred
        let far = m.nearest(&[0.0, 1.0], 1, |_| true).unwrap();
        let votes = neighbour_votes(&m, &far, &specs);
        assert!(settle_fields(&specs, Vec::new(), &votes).is_empty());
    }

    #[test]
    fn a_product_named_in_the_text_beats_the_neighbours() {
        let m = memory();
        let specs = [product_spec()];
        let near = m.nearest(&[1.0, 0.0], 3, |_| true).unwrap();
        let votes = neighbour_votes(&m, &near, &specs);
        assert_eq!(votes["product"].0, "tv");
        let f = settle_fields(&specs, vec![named("router", 0)], &votes);
        assert_eq!(f.len(), 1);
        assert_eq!(
            (f[0].value.as_str(), f[0].source.as_str()),
            ("router", "extracted")
        );
        assert!(
            f[0].reasons[0].starts_with("named in the text, so it beats the neighbours' `tv` ("),
            "{:?}",
            f[0].reasons
        );
        // the neighbours agreeing is said so
        let f = settle_fields(&specs, vec![named("tv", 0)], &votes);
        assert!(f[0].reasons[0].starts_with("named in the text; the neighbours agree"));
        // several named: the neighbours pick among them, the others are dropped
        let f = settle_fields(&specs, vec![named("router", 0), named("tv", 9)], &votes);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].value, "tv");
        assert_eq!(
            f[0].reasons[1],
            "the text also names `router`; the neighbours' vote picked this one"
        );
        // without neighbours the first named is kept; other fields pass through
        let mut phone = named("13812345678", 30);
        phone.name = "phone".into();
        let f = settle_fields(
            &specs,
            vec![named("router", 0), named("tv", 9), phone.clone()],
            &BTreeMap::new(),
        );
        let got: Vec<(&str, &str)> = f
            .iter()
            .map(|x| (x.name.as_str(), x.value.as_str()))
            .collect();
        assert_eq!(got, [("product", "router"), ("phone", "13812345678")]);
        assert_eq!(f[0].reasons[0], "named in the text");
        assert!(f[1].reasons.is_empty());
    }
}
