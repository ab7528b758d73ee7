//! Lexical evidence for matching two short texts (Chinese or English).
//!
//! Texts are cut into *units*: each CJK character is a unit, each run of
//! ASCII letters/digits is a unit (a word or a number). Overlap of units and
//! unit bigrams, IDF-weighted unmatched mass (key terms one side lacks, e.g.
//! 花呗 vs 借呗), number and negation mismatches and an edit similarity are
//! what the deflection verifier weighs beside the embedding similarity.

use std::collections::{HashMap, HashSet};

/// A text prepared for comparison.
#[derive(Debug, Clone, Default)]
pub struct Units {
    /// The units in order.
    pub units: Vec<String>,
    /// Distinct units.
    pub set: HashSet<String>,
    /// Distinct adjacent-unit bigrams.
    pub bigrams: HashSet<String>,
    /// Distinct digit runs (full-width digits folded to ASCII).
    pub numbers: HashSet<String>,
    /// Whether the text contains a negation marker.
    pub negated: bool,
}

/// Negation markers (Chinese single characters and English words).
const NEGATIONS_ZH: &[char] = &['不', '没', '无', '未', '别', '非', '否', '勿'];
const NEGATIONS_EN: &[&str] = &[
    "not", "no", "never", "cannot", "cant", "dont", "didnt", "wont", "isnt", "doesnt", "t",
];

/// Folds full-width ASCII to half-width and lowercases.
fn fold(c: char) -> char {
    let c = match c as u32 {
        0xFF01..=0xFF5E => char::from_u32(c as u32 - 0xFEE0).unwrap_or(c),
        0x3000 => ' ',
        _ => c,
    };
    c.to_ascii_lowercase()
}

fn is_cjk(c: char) -> bool {
    matches!(c as u32, 0x3400..=0x4DBF | 0x4E00..=0x9FFF | 0xF900..=0xFAFF | 0x20000..=0x2FA1F)
}

impl Units {
    /// Cuts `text` into units.
    pub fn new(text: &str) -> Units {
        let mut units = Vec::new();
        let mut word = String::new();
        let flush = |word: &mut String, units: &mut Vec<String>| {
            if !word.is_empty() {
                units.push(std::mem::take(word));
            }
        };
        for c in text.chars().map(fold) {
            if c.is_ascii_alphanumeric() {
                // Split letter→digit boundaries so `iphone13` yields `iphone` and `13`.
                if let Some(last) = word.chars().last() {
                    if last.is_ascii_digit() != c.is_ascii_digit() {
                        flush(&mut word, &mut units);
                    }
                }
                word.push(c);
            } else {
                flush(&mut word, &mut units);
                if is_cjk(c) || (c.is_alphanumeric() && !c.is_ascii()) {
                    units.push(c.to_string());
                }
            }
        }
        flush(&mut word, &mut units);
        let set: HashSet<String> = units.iter().cloned().collect();
        let bigrams = units
            .windows(2)
            .map(|w| format!("{}{}", w[0], w[1]))
            .collect();
        let numbers = units
            .iter()
            .filter(|u| u.chars().all(|c| c.is_ascii_digit()))
            .cloned()
            .collect();
        let negated = units.iter().any(|u| {
            let mut cs = u.chars();
            match (cs.next(), cs.next()) {
                (Some(c), None) if NEGATIONS_ZH.contains(&c) => true,
                _ => NEGATIONS_EN.contains(&u.as_str()),
            }
        });
        Units {
            units,
            set,
            bigrams,
            numbers,
            negated,
        }
    }
}

/// Share of the shorter text's units and unit bigrams that the other text has
/// too: 1 when one text repeats the other (whatever else it adds), low when
/// two texts only share a few common characters.
pub fn containment(a: &Units, b: &Units) -> f32 {
    let shared = a.set.intersection(&b.set).count() + a.bigrams.intersection(&b.bigrams).count();
    let size = (a.set.len() + a.bigrams.len()).min(b.set.len() + b.bigrams.len());
    if size == 0 {
        0.0
    } else {
        shared as f32 / size as f32
    }
}

/// Jaccard similarity of two sets (0 when both are empty).
pub fn jaccard(a: &HashSet<String>, b: &HashSet<String>) -> f32 {
    let inter = a.intersection(b).count();
    let union = a.len() + b.len() - inter;
    if union == 0 {
        0.0
    } else {
        inter as f32 / union as f32
    }
}

/// Document frequencies of units over a collection, for IDF weights.
#[derive(Debug, Clone, Default)]
pub struct Idf {
    df: HashMap<String, u32>,
    docs: u32,
}

impl Idf {
    /// Counts one document's distinct units.
    pub fn add(&mut self, u: &Units) {
        self.docs += 1;
        for t in &u.set {
            *self.df.entry(t.clone()).or_default() += 1;
        }
    }

    /// Removes one previously added document's units.
    pub fn remove(&mut self, u: &Units) {
        self.docs = self.docs.saturating_sub(1);
        for t in &u.set {
            if let Some(v) = self.df.get_mut(t) {
                *v = v.saturating_sub(1);
            }
        }
    }

    /// Smoothed inverse document frequency of a unit.
    pub fn idf(&self, unit: &str) -> f32 {
        let df = self.df.get(unit).copied().unwrap_or(0) as f32;
        ((self.docs as f32 + 1.0) / (df + 1.0)).ln() + 1.0
    }

    /// Share of `a`'s IDF mass whose units do not occur in `b`.
    pub fn unmatched_mass(&self, a: &Units, b: &Units) -> f32 {
        let total: f32 = a.set.iter().map(|t| self.idf(t)).sum();
        if total <= 0.0 {
            return 0.0;
        }
        let missing: f32 = a
            .set
            .iter()
            .filter(|t| !b.set.contains(*t))
            .map(|t| self.idf(t))
            .sum();
        missing / total
    }

    /// IDF of the rarest unit in `a` that `b` lacks (0 when none is missing).
    pub fn max_unmatched_idf(&self, a: &Units, b: &Units) -> f32 {
        a.set
            .iter()
            .filter(|t| !b.set.contains(*t))
            .map(|t| self.idf(t))
            .fold(0.0, f32::max)
    }
}

/// `1 − levenshtein(a, b) / max(len)` over unit sequences.
pub fn edit_similarity(a: &[String], b: &[String]) -> f32 {
    let (n, m) = (a.len(), b.len());
    if n.max(m) == 0 {
        return 1.0;
    }
    let mut prev: Vec<usize> = (0..=m).collect();
    let mut cur = vec![0; m + 1];
    for i in 1..=n {
        cur[0] = i;
        for j in 1..=m {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            cur[j] = (prev[j] + 1).min(cur[j - 1] + 1).min(prev[j - 1] + cost);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    1.0 - prev[m] as f32 / n.max(m) as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn containment_is_high_for_repeats_only() {
        let c = |a: &str, b: &str| containment(&Units::new(a), &Units::new(b));
        assert_eq!(c("洗衣机不脱水", "洗衣机不脱水了，怎么回事？"), 1.0);
        assert!(c("洗衣机不脱水", "空调不制冷了") < 0.2);
        assert!(c("洗碗机漏水", "洗衣机不脱水") < 0.5);
        assert!(
            c(
                "Washer trips the breaker",
                "the washer trips the breaker again"
            ) > 0.8
        );
        assert_eq!(c("", "anything"), 0.0);
    }

    #[test]
    fn units_split_cjk_words_and_numbers() {
        let u = Units::new("我的ＩＰｈｏｎｅ13 不能开机, order #AB123!");
        assert_eq!(
            u.units,
            vec!["我", "的", "iphone", "13", "不", "能", "开", "机", "order", "ab", "123"]
        );
        assert!(u.negated);
        assert_eq!(u.numbers.len(), 2);
        assert!(u.bigrams.contains("开机"));
        assert!(!Units::new("how do I reset it").negated);
    }

    #[test]
    fn key_term_mismatch_weighs_rare_units() {
        let docs = [
            "花呗怎么还款",
            "借呗怎么还款",
            "怎么还款",
            "怎么开通",
            "怎么注销",
        ];
        let mut idf = Idf::default();
        let units: Vec<Units> = docs.iter().map(|d| Units::new(d)).collect();
        units.iter().for_each(|u| idf.add(u));
        // 花呗 vs 借呗: only one rare character differs, but it carries a large share.
        let m = idf.unmatched_mass(&units[0], &units[1]);
        assert!(m > 0.15, "{m}");
        assert!(idf.max_unmatched_idf(&units[0], &units[1]) > idf.idf("怎"));
        assert_eq!(idf.unmatched_mass(&units[2], &units[0]), 0.0);
    }

    #[test]
    fn overlap_and_edit_similarity() {
        let a = Units::new("空调不制冷");
        let b = Units::new("空调不制冷怎么办");
        let c = Units::new("洗衣机漏水");
        assert!(jaccard(&a.bigrams, &b.bigrams) > 0.5);
        assert_eq!(jaccard(&a.set, &c.set), 0.0);
        assert!(edit_similarity(&a.units, &b.units) > 0.6);
        assert_eq!(edit_similarity(&a.units, &a.units), 1.0);
    }
}
