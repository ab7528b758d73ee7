//! Naming a cluster by its distinctive words: class-based TF-IDF (c-TF-IDF,
//! as BERTopic labels topics). All of a cluster's texts are one document; a
//! word weighs its frequency in the cluster times `ln(1 + A / f)`, where `f`
//! is its frequency across all clusters (and the unclustered texts) and `A`
//! the average number of words per cluster. Words every cluster uses score
//! low however often they occur.
//!
//! Words are the search index's ([`indexer::words`]: jieba segmentation,
//! lower-casing, English stemming), so labels are the terms search matches.
//! Single characters, numbers and a short list of English function words are
//! left out of labels: they are never what tells one problem from another.

use std::collections::HashMap;

/// English function words never used as labels (the analyzer's stemmed forms).
const STOP: &[&str] = &[
    "a", "about", "after", "again", "all", "also", "am", "an", "and", "ani", "are", "as", "at",
    "be", "been", "but", "by", "can", "could", "did", "do", "doe", "for", "from", "get", "got",
    "had", "has", "have", "he", "her", "hi", "how", "i", "if", "in", "is", "it", "it'", "just",
    "me", "mi", "my", "no", "not", "of", "on", "onli", "or", "our", "pleas", "she", "so", "some",
    "still", "than", "thank", "that", "the", "their", "them", "then", "there", "they", "thi",
    "this", "to", "up", "us", "veri", "wa", "was", "we", "what", "when", "where", "whi", "which",
    "who", "will", "with", "would", "you", "your", "i'm", "can't", "don't", "dont", "im",
];

/// Whether a word may label a cluster.
fn labels_well(w: &str) -> bool {
    w.chars().nth(1).is_some()
        && !w
            .chars()
            .all(|c| c.is_ascii_digit() || c == '.' || c == '-')
        && !STOP.contains(&w)
}

/// Word counts of a text, by [`indexer::words`], only the words that label well.
pub fn bag(text: &str) -> HashMap<String, u32> {
    let mut out = HashMap::new();
    for w in indexer::words(text) {
        if labels_well(&w) {
            *out.entry(w).or_default() += 1;
        }
    }
    out
}

/// The `top` most distinctive words of each class: `classes[c]` holds the
/// bags of its texts; `rest` the bags of texts in no class (they count in
/// the word frequencies across classes, as BERTopic's outlier topic does).
pub fn ctfidf(
    classes: &[Vec<&HashMap<String, u32>>],
    rest: &[&HashMap<String, u32>],
    top: usize,
) -> Vec<Vec<String>> {
    let mut per_class: Vec<HashMap<&str, u32>> = Vec::with_capacity(classes.len());
    let mut overall: HashMap<&str, u64> = HashMap::new();
    let mut total_words = 0u64;
    for class in classes {
        let mut counts: HashMap<&str, u32> = HashMap::new();
        for bag in class {
            for (w, n) in bag.iter() {
                *counts.entry(w.as_str()).or_default() += n;
            }
        }
        for (w, n) in &counts {
            *overall.entry(w).or_default() += u64::from(*n);
            total_words += u64::from(*n);
        }
        per_class.push(counts);
    }
    let mut rest_words = 0u64;
    for bag in rest {
        for (w, n) in bag.iter() {
            *overall.entry(w.as_str()).or_default() += u64::from(*n);
            rest_words += u64::from(*n);
        }
    }
    let n_classes = classes.len() + usize::from(rest_words > 0);
    let avg = (total_words + rest_words) as f64 / n_classes.max(1) as f64;
    per_class
        .iter()
        .map(|counts| {
            let size: u32 = counts.values().sum();
            let mut scored: Vec<(&str, f64)> = counts
                .iter()
                .map(|(w, n)| {
                    let tf = f64::from(*n) / f64::from(size.max(1));
                    let f = overall.get(w).copied().unwrap_or(1).max(1) as f64;
                    (*w, tf * (1.0 + avg / f).ln())
                })
                .collect();
            scored.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(b.0)));
            let mut picked: Vec<String> = Vec::new();
            for (w, _) in scored {
                if picked.len() >= top {
                    break;
                }
                // 充电座 after 充电 adds nothing a reader needs.
                if picked
                    .iter()
                    .any(|p| p.contains(w) || w.contains(p.as_str()))
                {
                    continue;
                }
                picked.push(w.to_string());
            }
            picked
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distinctive_words_beat_frequent_shared_ones() {
        let texts_a = [
            "扫地机器人 充电座 不充电",
            "扫地机器人回不了充电座",
            "robot vacuum won't dock on the charging base",
        ];
        let texts_b = [
            "洗衣机 不脱水",
            "洗衣机脱水时噪音大",
            "washer will not spin",
        ];
        let bags_a: Vec<_> = texts_a.iter().map(|t| bag(t)).collect();
        let bags_b: Vec<_> = texts_b.iter().map(|t| bag(t)).collect();
        let labels = ctfidf(&[bags_a.iter().collect(), bags_b.iter().collect()], &[], 3);
        assert!(labels[0].contains(&"机器人".to_string()), "{labels:?}");
        assert!(labels[1].contains(&"洗衣机".to_string()), "{labels:?}");
        assert!(labels.iter().flatten().all(|w| w.chars().count() > 1));
    }

    #[test]
    fn function_words_numbers_and_single_characters_never_label() {
        let b = bag("My TV is 55 inches, 我 的 电视 the TV");
        assert_eq!(b.get("tv"), Some(&2));
        assert!(b.contains_key("电视"));
        for w in ["my", "is", "55", "我", "的", "the"] {
            assert!(!b.contains_key(w), "{w} in {b:?}");
        }
    }
}
