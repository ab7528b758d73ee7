//! The dashboard's figures that are plain counting: tickets per day by
//! top-level category, a field × category heat map, and the rates of the
//! chat's and the triage's decisions.

use std::collections::{BTreeMap, HashMap};

use super::Window;
use crate::api::{DeflectionStats, Heatmap, TriageStats, VolumeSeries};
use crate::store::activity::Counts;

/// A window ticket as the overview counts it.
#[derive(Debug, Clone, Copy)]
pub struct Counted<'a> {
    /// Created, Unix seconds.
    pub created: i64,
    /// Top-level category id (empty: unlabelled).
    pub top: &'a str,
    /// The heat map field's value (empty: not set).
    pub value: &'a str,
}

/// Tickets per day by top-level category; `names` gives each category's
/// display name, in the pack's order (unlabelled last, only when present).
pub fn volume(items: &[Counted], w: &Window, names: &[(String, String)]) -> Vec<VolumeSeries> {
    let days = w.days as usize;
    let mut by: HashMap<&str, Vec<u32>> = HashMap::new();
    for it in items {
        if let Some(d) = w.day_of(it.created) {
            by.entry(it.top).or_insert_with(|| vec![0; days])[d] += 1;
        }
    }
    let mut out: Vec<VolumeSeries> = names
        .iter()
        .map(|(id, name)| VolumeSeries {
            category: id.clone(),
            name: name.clone(),
            counts: by.remove(id.as_str()).unwrap_or_else(|| vec![0; days]),
        })
        .collect();
    if let Some(counts) = by.remove("") {
        out.push(VolumeSeries {
            category: String::new(),
            name: "unlabelled".into(),
            counts,
        });
    }
    // A category the pack no longer has still counts.
    let mut others: Vec<(&str, Vec<u32>)> = by.into_iter().collect();
    others.sort_by(|a, b| a.0.cmp(b.0));
    for (id, counts) in others {
        out.push(VolumeSeries {
            category: id.to_string(),
            name: id.to_string(),
            counts,
        });
    }
    out
}

/// Window tickets by `field`'s value × top-level category: rows with most
/// tickets first, columns in `columns` order (then any other category).
pub fn heatmap(field: &str, items: &[Counted], w: &Window, columns: &[String]) -> Heatmap {
    let mut cells: BTreeMap<(&str, &str), u32> = BTreeMap::new();
    let mut rows: HashMap<&str, u32> = HashMap::new();
    let mut cols: Vec<String> = columns.to_vec();
    for it in items.iter().filter(|it| w.contains(it.created)) {
        *cells.entry((it.value, it.top)).or_default() += 1;
        *rows.entry(it.value).or_default() += 1;
        if !cols.iter().any(|c| c == it.top) {
            cols.push(it.top.to_string());
        }
    }
    let mut row_order: Vec<(&str, u32)> = rows.into_iter().collect();
    row_order.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    Heatmap {
        field: field.to_string(),
        counts: row_order
            .iter()
            .map(|(r, _)| {
                cols.iter()
                    .map(|c| cells.get(&(*r, c.as_str())).copied().unwrap_or(0))
                    .collect()
            })
            .collect(),
        rows: row_order.into_iter().map(|(r, _)| r.to_string()).collect(),
        columns: cols,
    }
}

fn rate(n: u32, of: u32) -> f32 {
    if of == 0 {
        0.0
    } else {
        n as f32 / of as f32
    }
}

/// The chat's decision rates from the activity counts.
pub fn deflection(c: &Counts) -> DeflectionStats {
    let messages = c.answer + c.clarify + c.handoff;
    DeflectionStats {
        messages,
        answer: c.answer,
        clarify: c.clarify,
        handoff: c.handoff,
        answer_rate: rate(c.answer, messages),
        clarify_rate: rate(c.clarify, messages),
        handoff_rate: rate(c.handoff, messages),
        tickets: c.chat_tickets,
    }
}

/// The triage's abstention rate from the activity counts.
pub fn triage(c: &Counts) -> TriageStats {
    TriageStats {
        requests: c.triaged,
        abstained: c.abstained,
        abstention_rate: rate(c.abstained, c.triaged),
        escalation_flagged: c.flagged,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::insights::DAY;

    #[test]
    fn volume_and_heatmap_count_window_tickets_only() {
        let w = Window::ending(10 * DAY, 2);
        let items = [
            Counted {
                created: 9 * DAY,
                top: "repair",
                value: "tv",
            },
            Counted {
                created: 9 * DAY + 5,
                top: "repair",
                value: "tv",
            },
            Counted {
                created: 8 * DAY,
                top: "billing",
                value: "",
            },
            Counted {
                created: 8 * DAY + 1,
                top: "",
                value: "washer",
            },
            Counted {
                created: 3 * DAY,
                top: "repair",
                value: "tv",
            },
        ];
        let names = vec![
            ("repair".to_string(), "Repair".to_string()),
            ("billing".to_string(), "Billing".to_string()),
            ("install".to_string(), "Install".to_string()),
        ];
        let v = volume(&items, &w, &names);
        assert_eq!(v.len(), 4);
        assert_eq!(v[0].counts, [0, 2]);
        assert_eq!(v[1].counts, [1, 0]);
        assert_eq!(v[2].counts, [0, 0]);
        assert_eq!(v[3].name, "unlabelled");
        let cols: Vec<String> = names.iter().map(|n| n.0.clone()).collect();
        let h = heatmap("product", &items, &w, &cols);
        assert_eq!(h.rows[0], "tv");
        assert_eq!(h.counts[0][0], 2);
        assert_eq!(h.columns.last().map(String::as_str), Some(""));
        let total: u32 = h.counts.iter().flatten().sum();
        assert_eq!(total, 4);
    }

    #[test]
    fn rates_divide_by_what_was_decided() {
        let c = Counts {
            answer: 6,
            clarify: 2,
            handoff: 2,
            triaged: 4,
            abstained: 1,
            ..Counts::default()
        };
        let d = deflection(&c);
        assert_eq!(d.messages, 10);
        assert!((d.answer_rate - 0.6).abs() < 1e-6);
        assert!((triage(&c).abstention_rate - 0.25).abs() < 1e-6);
        assert_eq!(deflection(&Counts::default()).answer_rate, 0.0);
    }
}
