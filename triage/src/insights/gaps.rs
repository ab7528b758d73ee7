//! Knowledge gaps: what customers ask that the knowledge base does not
//! answer, grouped by meaning, each with a draft article.
//!
//! The candidates are the chat messages the chat handed off (from the
//! activity log, personal data masked) and the tickets resolved without an
//! article (no agent said "this article solved it"). They are clustered like
//! emerging problems ([`super::cluster`]); each cluster's draft takes
//!
//! * as its question the most central phrasing (the customer's own words),
//! * as alternatives the next most central distinct phrasings,
//! * as answer material the resolutions of the nearest resolved tickets
//!   (found by the engine in its ticket memory),
//!
//! and is ranked by its volume discounted by how probably an existing article
//! already answers its question (the chat's own scoring, done by the engine):
//! `score = volume × (1 − p)`. A gap whose question an article answers
//! outright is not a gap; its id is stable (tenant and question), so an
//! agent can publish it.

use sha2::{Digest, Sha256};

use super::cluster::{cluster, normalise, Centred, ClusterOptions, Rows};
use super::label::{bag, ctfidf};

/// Where a candidate question came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A chat message that was handed off (its conversation).
    Chat {
        /// The conversation id.
        session: String,
    },
    /// A ticket resolved without an article.
    Ticket {
        /// The ticket id.
        id: String,
    },
}

/// A question the knowledge base may not answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    /// Where it came from.
    pub source: Source,
    /// Its text (chat messages: personal data masked).
    pub text: String,
    /// When it was asked (Unix seconds).
    pub at: i64,
}

/// A group of candidates asking one question.
#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    /// Its candidates, most central first.
    pub members: Vec<usize>,
    /// Unit mean of its members' vectors (original space): for finding the
    /// nearest resolved tickets.
    pub centroid: Vec<f32>,
    /// Its distinctive words.
    pub label: Vec<String>,
}

/// Groups candidates (`vectors[i]` is candidate `i`'s unit vector) by
/// meaning; groups are sorted by size, largest first.
pub fn group(
    candidates: &[Candidate],
    vectors: &Rows,
    opts: &ClusterOptions,
    label_words: usize,
) -> Vec<Group> {
    let dim = vectors.dim();
    let centring = Centred::fit(dim, (0..vectors.len()).map(|i| vectors.row(i)));
    let mut centred = Rows::new(dim);
    for i in 0..vectors.len() {
        centred.push(&centring.apply(vectors.row(i)));
    }
    let clustering = cluster(&centred, opts);
    let members = clustering.members();
    let bags: Vec<_> = candidates.iter().map(|c| bag(&c.text)).collect();
    let classes: Vec<Vec<_>> = members
        .iter()
        .map(|m| m.iter().map(|i| &bags[*i]).collect())
        .collect();
    let rest: Vec<_> = clustering
        .labels
        .iter()
        .zip(&bags)
        .filter(|(l, _)| l.is_none())
        .map(|(_, b)| b)
        .collect();
    let labels = ctfidf(&classes, &rest, label_words);
    let mut groups: Vec<Group> = members
        .into_iter()
        .zip(labels)
        .map(|(members, label)| {
            let mut centroid = vec![0f32; dim];
            for m in &members {
                for (c, x) in centroid.iter_mut().zip(vectors.row(*m)) {
                    *c += x;
                }
            }
            normalise(&mut centroid);
            Group {
                members,
                centroid,
                label,
            }
        })
        .collect();
    groups.sort_by_key(|g| std::cmp::Reverse(g.members.len()));
    groups
}

/// Text compared for sameness: lower case, letters and digits only.
fn plain(text: &str) -> String {
    text.chars()
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_lowercase)
        .collect()
}

/// The draft's question and up to `n` alternative phrasings: the group's
/// texts, most central first, each different from the ones before (ignoring
/// case, spacing and punctuation).
pub fn phrasings(candidates: &[Candidate], g: &Group, n: usize) -> (String, Vec<String>) {
    let mut seen: Vec<String> = Vec::new();
    let mut texts: Vec<String> = Vec::new();
    for m in &g.members {
        let text = candidates[*m].text.trim();
        let p = plain(text);
        if p.is_empty() || seen.contains(&p) {
            continue;
        }
        seen.push(p);
        texts.push(text.to_string());
        if texts.len() > n {
            break;
        }
    }
    let mut it = texts.into_iter();
    let question = it.next().unwrap_or_default();
    (question, it.collect())
}

/// A gap's stable id: from the tenant and its question.
pub fn gap_id(tenant: &str, question: &str) -> String {
    let d = Sha256::digest(format!("{tenant}\u{1f}{}", plain(question)).as_bytes());
    format!(
        "gap-{}",
        d.iter()
            .take(6)
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    )
}

/// A gap's rank score: its volume discounted by the probability that an
/// existing article answers its question.
pub fn score(volume: usize, answered: f32) -> f32 {
    volume as f32 * (1.0 - answered.clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chat(text: &str) -> Candidate {
        Candidate {
            source: Source::Chat {
                session: "s".into(),
            },
            text: text.into(),
            at: 0,
        }
    }

    #[test]
    fn drafts_take_the_central_phrasing_and_distinct_alternatives() {
        let cands = vec![
            chat("How do I pair the new earbuds?"),
            chat("how do i pair the NEW earbuds"),
            chat("Earbuds won't pair with my phone"),
            chat("耳机怎么配对"),
        ];
        let g = Group {
            members: vec![0, 1, 2, 3],
            centroid: vec![],
            label: vec![],
        };
        let (q, alts) = phrasings(&cands, &g, 5);
        assert_eq!(q, "How do I pair the new earbuds?");
        assert_eq!(alts, ["Earbuds won't pair with my phone", "耳机怎么配对"]);
        let (_, one) = phrasings(&cands, &g, 1);
        assert_eq!(one.len(), 1);
    }

    #[test]
    fn ids_are_stable_per_tenant_and_question() {
        let a = gap_id("acme", "How do I pair the earbuds?");
        assert_eq!(a, gap_id("acme", "how do i pair the earbuds"));
        assert_ne!(a, gap_id("globex", "How do I pair the earbuds?"));
        assert!(a.starts_with("gap-") && a.len() == 16);
    }

    #[test]
    fn an_answered_question_scores_nothing() {
        assert_eq!(score(10, 0.0), 10.0);
        assert_eq!(score(10, 1.0), 0.0);
        assert!(score(20, 0.5) > score(8, 0.0));
    }

    #[test]
    fn groups_follow_meaning_and_come_largest_first() {
        let mut vectors = Rows::new(3);
        let mut cands = Vec::new();
        for (i, v) in [[1.0, 0.1, 0.0], [0.0, 1.0, 0.1], [0.1, 0.0, 1.0]]
            .iter()
            .enumerate()
        {
            for k in 0..(3 + i) {
                let mut v = v.to_vec();
                v[(i + 1) % 3] += 0.01 * k as f32;
                normalise(&mut v);
                vectors.push(&v);
                cands.push(chat(&format!("topic{i} question {k}")));
            }
        }
        let groups = group(
            &cands,
            &vectors,
            &ClusterOptions {
                threshold: 0.5,
                min_size: 2,
                ..ClusterOptions::default()
            },
            3,
        );
        assert_eq!(groups.len(), 3);
        assert_eq!(groups[0].members.len(), 5);
        assert!(
            groups[0].label.contains(&"topic2".to_string()),
            "{:?}",
            groups[0].label
        );
    }
}
