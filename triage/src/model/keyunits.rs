//! Key units: which words change a question's meaning when one side lacks them.
//!
//! IDF says a unit is rare, not that it matters: 呀 and 最 are rare enough yet
//! "安徽科技学院怎么样呀" asks what "安徽科技学院怎么样" asks, while 像 → 产 in
//! "稻子熟了像什么" makes another question. A [`KeyUnits`] table holds, per
//! unit, the smoothed log-odds that a pair of questions differing in it is *not*
//! a paraphrase, learned from labelled question pairs; the deflection verifier
//! reads the weights of the units a message and an FAQ phrasing do not share.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::model::textsim::Units;

/// Weight of the evidence [`KeyUnits::evidence`] reports for a side with no
/// unmatched unit (below any learned weight worth noting).
const NOTHING_UNMATCHED: f32 = -2.0;
/// Pseudo-counts added to each side of a unit's log-odds.
const SMOOTHING: f32 = 1.0;
/// Units seen in fewer pair differences than this are not kept.
const MIN_SEEN: f32 = 0.0;

/// Per-unit log-odds that a difference in it separates two different questions.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct KeyUnits {
    weights: BTreeMap<String, f32>,
}

/// Names of the values [`KeyUnits::evidence`] returns, in order (the
/// verifier's feature list ends with them, which its tests check).
#[cfg(test)]
pub const KEY_UNIT_FEATURES: [&str; 5] = [
    "key_unmatched_query_max",
    "key_unmatched_faq_max",
    "key_unmatched_positive_sum",
    "key_unmatched_sum",
    "unmatched_units",
];

impl KeyUnits {
    /// Learns the table from question pairs `(a, b, same_meaning)`: every unit in
    /// one side but not the other counts towards "paraphrase" or "different",
    /// shared equally among the pair's unmatched units.
    pub fn fit<'a>(pairs: impl IntoIterator<Item = (&'a Units, &'a Units, bool)>) -> KeyUnits {
        let mut counts: HashMap<&str, (f32, f32)> = HashMap::new();
        for (a, b, same) in pairs {
            let diff: Vec<&String> = a.set.symmetric_difference(&b.set).collect();
            if diff.is_empty() {
                continue;
            }
            let share = 1.0 / diff.len() as f32;
            for u in diff {
                let c = counts.entry(u.as_str()).or_default();
                if same {
                    c.0 += share;
                } else {
                    c.1 += share;
                }
            }
        }
        let weights = counts
            .into_iter()
            .filter(|(_, (same, different))| same + different >= MIN_SEEN)
            .map(|(u, (same, different))| {
                let w = ((different + SMOOTHING) / (same + SMOOTHING)).ln();
                (u.to_string(), (w * 1000.0).round() / 1000.0)
            })
            .collect();
        KeyUnits { weights }
    }

    /// Number of units with a learned weight.
    pub fn len(&self) -> usize {
        self.weights.len()
    }

    /// Whether nothing was learned (every weight reads 0).
    pub fn is_empty(&self) -> bool {
        self.weights.is_empty()
    }

    /// A unit's weight: positive when differing in it usually means another question.
    pub fn weight(&self, unit: &str) -> f32 {
        self.weights.get(unit).copied().unwrap_or(0.0)
    }

    /// Evidence about the units `query` and `faq` do not share, in the order of
    /// `KEY_UNIT_FEATURES`: the largest weight on each side, the sum of the
    /// positive weights, the sum of all, and how many units are unmatched.
    pub fn evidence(&self, query: &Units, faq: &Units) -> [f32; 5] {
        let side = |a: &Units, b: &Units| -> Vec<f32> {
            a.set
                .iter()
                .filter(|u| !b.set.contains(*u))
                .map(|u| self.weight(u))
                .collect()
        };
        let (q, f) = (side(query, faq), side(faq, query));
        let max = |v: &[f32]| v.iter().copied().fold(NOTHING_UNMATCHED, f32::max);
        let all = q.iter().chain(&f);
        [
            max(&q),
            max(&f),
            all.clone().map(|w| w.max(0.0)).sum(),
            all.sum(),
            (q.len() + f.len()) as f32,
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn learns_which_differences_matter() {
        let pairs = [
            ("安徽科技学院怎么样", "安徽科技学院怎么样呀", true),
            ("今年流行什么鞋", "今年流行什么鞋呀", true),
            ("花呗怎么还款", "借呗怎么还款", false),
            ("花呗可以提额吗", "借呗可以提额吗", false),
            ("稻子熟了像什么", "稻子熟了产什么", false),
        ];
        let units: Vec<(Units, Units, bool)> = pairs
            .iter()
            .map(|(a, b, s)| (Units::new(a), Units::new(b), *s))
            .collect();
        let k = KeyUnits::fit(units.iter().map(|(a, b, s)| (a, b, *s)));
        assert!(k.weight("呀") < 0.0, "{}", k.weight("呀"));
        assert!(k.weight("花") > 0.0 && k.weight("借") > 0.0);
        assert_eq!(k.weight("从未见过"), 0.0);

        let ev = k.evidence(&Units::new("花呗怎么开通"), &Units::new("借呗怎么开通"));
        let ev_same = k.evidence(&Units::new("怎么开通呀"), &Units::new("怎么开通"));
        assert!(ev[2] > ev_same[2], "{ev:?} vs {ev_same:?}");
        assert_eq!(ev_same[1], NOTHING_UNMATCHED, "the FAQ side lacks nothing");
        assert_eq!(ev[4], 2.0);

        let json = serde_json::to_string(&k).unwrap();
        assert_eq!(serde_json::from_str::<KeyUnits>(&json).unwrap(), k);
    }
}
