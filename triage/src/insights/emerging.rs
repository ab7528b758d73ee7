//! Emerging problems: the recent window's tickets clustered by meaning, and
//! each cluster's daily volume against its own baseline.
//!
//! 1. The window's ticket vectors are centred and clustered
//!    ([`super::cluster`]).
//! 2. A sample of the baseline weeks' tickets is assigned to the same
//!    clusters (same centring, same threshold): a cluster's **baseline share**
//!    is the part of the baseline it would have held. A share is estimated
//!    with half a ticket of prior, so a cluster the baseline never saw still
//!    expects a little.
//! 3. Expected tickets on a window day = share × that day's total, so a busy
//!    Monday raises every cluster's expectation alike and only a change in the
//!    *mix* stands out. The count model ([`super::counts`]) is Poisson, or a
//!    negative binomial when the baseline's days scatter more than Poisson
//!    around their expectation, with a minimum count.
//! 4. **Spike**: the last day, or the last two days together, reach the
//!    minimum count at a tail probability ≤ `alpha`. A spike raises an alert.
//!    **New**: less than one ticket expected in the whole window.
//!    **Growing**: the window's count is improbable (≤ `alpha_growing`) and at
//!    least 1.5 × expected. Otherwise **steady**.
//! 5. Labels by class-based TF-IDF ([`super::label`]), shares by category and
//!    by the pack's `[insights] fields`, the most central tickets as examples.
//!
//! A tenant with fewer than `min_baseline` baseline tickets gets clusters but
//! no statuses beyond steady and no spikes: without history nothing is new.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

use super::cluster::{cluster, nearest, normalise, Centred, ClusterOptions, Rows};
use super::counts::{dispersion, CountModel, Surprise};
use super::label::{bag, ctfidf};
use super::{rfc3339, shares, snippet, Window, DAY};
use crate::api::{ClusterExample, ClusterStatus, EmergingCluster, EmergingReport, Spike};

/// A ticket as the detector sees it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Item {
    /// Its id.
    pub id: String,
    /// Its title.
    pub title: String,
    /// The text it was embedded as (title and body).
    pub text: String,
    /// Its category (empty: unlabelled).
    pub category: String,
    /// The values of the fields insights break clusters down by.
    pub fields: BTreeMap<String, String>,
    /// Created, Unix seconds.
    pub created: i64,
}

/// What the detector looks at: the window's tickets with their vectors, and
/// a sample of the baseline's.
#[derive(Debug, Clone)]
pub struct History {
    /// The recent window.
    pub window: Window,
    /// Days of baseline before the window.
    pub baseline_days: u32,
    /// The window's tickets.
    pub items: Vec<Item>,
    /// Their unit vectors, in the same order.
    pub vectors: Rows,
    /// Creation times of the baseline sample.
    pub baseline: Vec<i64>,
    /// The baseline sample's unit vectors.
    pub baseline_vectors: Rows,
    /// How many baseline tickets there were (the sample stands for them).
    pub baseline_total: u64,
}

/// The detector's settings; the defaults are what `triage eval emerging`
/// chose on its tuning bursts (docs/EVAL.md).
#[derive(Debug, Clone, PartialEq)]
pub struct EmergingOptions {
    /// How tickets are clustered.
    pub cluster: ClusterOptions,
    /// Tail probability at or below which the last day(s) are a spike.
    pub alpha: f64,
    /// Tail probability at or below which the window's count is growth.
    pub alpha_growing: f64,
    /// Fewest tickets in the last day(s) that can be a spike.
    pub min_count: u32,
    /// Fewest baseline tickets for statuses and spikes.
    pub min_baseline: u64,
    /// Examples shown per cluster.
    pub examples: usize,
    /// Words per label.
    pub label_words: usize,
    /// Most clusters reported.
    pub limit: usize,
    /// Fields to break clusters down by.
    pub fields: Vec<String>,
}

impl Default for EmergingOptions {
    fn default() -> Self {
        EmergingOptions {
            cluster: ClusterOptions::default(),
            alpha: 1e-4,
            alpha_growing: 1e-3,
            min_count: 5,
            min_baseline: 50,
            examples: 5,
            label_words: 5,
            limit: 30,
            fields: Vec::new(),
        }
    }
}

/// Baseline weeks compared with the window.
pub const BASELINE_WEEKS: u32 = 4;
/// Most baseline tickets assigned to clusters (a seeded sample beyond).
pub const BASELINE_SAMPLE: usize = 20_000;

/// A report and each reported cluster's mean direction in the original
/// (uncentred) space, which stays comparable from one report to the next
/// (for [`super::alerts::AlertBook`]).
#[derive(Debug, Clone)]
pub struct Detection {
    /// The report (tenant and time of computation left for the caller).
    pub report: EmergingReport,
    /// Unit mean vector of each reported cluster, in report order.
    pub centroids: Vec<Vec<f32>>,
    /// Window tickets of each reported cluster, most central first.
    pub members: Vec<Vec<usize>>,
}

/// Finds the emerging problems of a history (see the module docs).
pub fn detect(h: &History, opts: &EmergingOptions) -> Detection {
    let w = h.window;
    let days = w.days as usize;
    let dim = h.vectors.dim();
    let centring = Centred::fit(dim, (0..h.vectors.len()).map(|i| h.vectors.row(i)));
    let mut centred = Rows::new(dim);
    for i in 0..h.vectors.len() {
        centred.push(&centring.apply(h.vectors.row(i)));
    }
    let clustering = cluster(&centred, &opts.cluster);
    let members = clustering.members();

    // Daily totals of the window, and of the baseline sample.
    let mut daily_total = vec![0u32; days];
    let day_of: Vec<Option<usize>> = h.items.iter().map(|it| w.day_of(it.created)).collect();
    for d in day_of.iter().flatten() {
        daily_total[*d] += 1;
    }
    let base = w.before(h.baseline_days);
    let base_days = h.baseline_days as usize;
    let mut base_total_daily = vec![0f64; base_days];
    let mut base_counts = vec![0f64; clustering.len()];
    let mut base_daily = vec![vec![0f64; base_days]; clustering.len()];
    for (i, t) in h.baseline.iter().enumerate() {
        let Some(d) = base.day_of(*t) else { continue };
        base_total_daily[d] += 1.0;
        let v = centring.apply(h.baseline_vectors.row(i));
        if let Some((c, _)) = nearest(&clustering.centroids, &v, opts.cluster.threshold) {
            base_counts[c] += 1.0;
            base_daily[c][d] += 1.0;
        }
    }
    let sample_n = base_total_daily.iter().sum::<f64>();
    let n_base = h.baseline_total as f64;
    let scale = if sample_n > 0.0 {
        n_base / sample_n
    } else {
        0.0
    };
    let share = |c: usize| (base_counts[c] * scale + 0.5) / (n_base + 1.0);

    // Dispersion of the baseline days around share × day total, corrected
    // for sampling (a thinned count's var/mean is 1 + q(φ − 1)).
    let q = if n_base > 0.0 { sample_n / n_base } else { 1.0 };
    let raw_phi = dispersion((0..clustering.len()).flat_map(|c| {
        let s = base_counts[c] / sample_n.max(1.0);
        base_daily[c]
            .iter()
            .zip(&base_total_daily)
            .map(move |(y, t)| (*y, s * t))
    }));
    let phi = (1.0 + (raw_phi - 1.0) / q.max(1e-6)).clamp(1.0, super::counts::MAX_DISPERSION);
    let model = CountModel {
        alpha: opts.alpha,
        min_count: opts.min_count,
        dispersion: phi,
    };
    let growth = CountModel {
        alpha: opts.alpha_growing,
        ..model
    };
    let judged = h.baseline_total >= opts.min_baseline;

    let bags: Vec<_> = h.items.iter().map(|it| bag(&it.text)).collect();
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
    let labels = ctfidf(&classes, &rest, opts.label_words);

    let mut clusters: Vec<(EmergingCluster, usize)> = Vec::new();
    for (c, m) in members.iter().enumerate() {
        let mut daily = vec![0u32; days];
        for i in m {
            if let Some(d) = day_of[*i] {
                daily[d] += 1;
            }
        }
        let size: u32 = daily.iter().sum();
        let s = share(c);
        let expected = s * f64::from(daily_total.iter().sum::<u32>());
        let (window_test, grew) = growth.test(size, expected);
        let spike = if judged {
            spike_of(&model, &w, &daily, &daily_total, s)
        } else {
            None
        };
        let status = if !judged {
            ClusterStatus::Steady
        } else if expected < 1.0 && size >= opts.min_count {
            ClusterStatus::New
        } else if spike.is_some() || (grew && f64::from(size) >= 1.5 * expected) {
            ClusterStatus::Growing
        } else {
            ClusterStatus::Steady
        };
        let items: Vec<&Item> = m.iter().map(|i| &h.items[*i]).collect();
        let mut fields = BTreeMap::new();
        for f in &opts.fields {
            fields.insert(
                f.clone(),
                shares(
                    items
                        .iter()
                        .map(|it| it.fields.get(f).map(String::as_str).unwrap_or("")),
                ),
            );
        }
        let central = &h.items[m[0]];
        clusters.push((
            EmergingCluster {
                id: cluster_id(&central.id),
                label: labels[c].clone(),
                size,
                daily,
                expected,
                baseline_share: s,
                status,
                p_value: window_test.p_value,
                spike,
                categories: shares(items.iter().map(|it| it.category.as_str())),
                fields,
                examples: m
                    .iter()
                    .take(opts.examples)
                    .map(|i| example(&h.items[*i], clustering.similarity[*i]))
                    .collect(),
            },
            c,
        ));
    }
    let rank = |c: &EmergingCluster| match (c.spike.is_some(), c.status) {
        (true, _) => 0,
        (false, ClusterStatus::New) => 1,
        (false, ClusterStatus::Growing) => 2,
        (false, ClusterStatus::Steady) => 3,
    };
    clusters.sort_by(|(a, _), (b, _)| {
        rank(a)
            .cmp(&rank(b))
            .then(
                a.spike
                    .as_ref()
                    .map(|s| s.p_value)
                    .unwrap_or(1.0)
                    .total_cmp(&b.spike.as_ref().map(|s| s.p_value).unwrap_or(1.0)),
            )
            .then(b.size.cmp(&a.size))
    });
    clusters.truncate(opts.limit);
    let centroids = clusters
        .iter()
        .map(|(_, c)| raw_centroid(&h.vectors, &members[*c]))
        .collect();
    let kept_members = clusters.iter().map(|(_, c)| members[*c].clone()).collect();
    Detection {
        report: EmergingReport {
            tenant: String::new(),
            window_days: w.days,
            baseline_days: h.baseline_days,
            from: rfc3339(w.from),
            to: rfc3339(w.to),
            days: w.day_starts(),
            tickets: daily_total.iter().sum(),
            daily_total,
            baseline_tickets: u32::try_from(h.baseline_total).unwrap_or(u32::MAX),
            clustered: members.iter().map(|m| m.len() as u32).sum(),
            dispersion: phi,
            clusters: clusters.into_iter().map(|(c, _)| c).collect(),
            generated_at: String::new(),
        },
        centroids,
        members: kept_members,
    }
}

/// The spike of a cluster's last day, or of its last two days together
/// (whichever is less probable), if either is one.
fn spike_of(
    model: &CountModel,
    w: &Window,
    daily: &[u32],
    totals: &[u32],
    share: f64,
) -> Option<Spike> {
    let n = daily.len();
    let mut best: Option<(Surprise, u32)> = None;
    for span in [1usize, 2] {
        if n < span {
            continue;
        }
        let count: u32 = daily[n - span..].iter().sum();
        let total: u32 = totals[n - span..].iter().sum();
        let (s, spike) = model.test(count, share * f64::from(total));
        if spike && best.as_ref().is_none_or(|(b, _)| s.p_value < b.p_value) {
            best = Some((s, span as u32));
        }
    }
    best.map(|(s, span)| Spike {
        from: rfc3339(w.to - i64::from(span) * DAY),
        days: span,
        count: s.count,
        expected: s.expected,
        p_value: s.p_value,
    })
}

/// A cluster's id: from its most central ticket.
fn cluster_id(ticket: &str) -> String {
    let d = Sha256::digest(ticket.as_bytes());
    format!(
        "cl-{}",
        d.iter()
            .take(5)
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    )
}

fn example(it: &Item, similarity: f32) -> ClusterExample {
    ClusterExample {
        ticket_id: it.id.clone(),
        title: it.title.clone(),
        text: snippet(&it.text, 200),
        created_at: rfc3339(it.created),
        category: it.category.clone(),
        similarity,
    }
}

/// The unit mean of some rows.
fn raw_centroid(rows: &Rows, members: &[usize]) -> Vec<f32> {
    let mut c = vec![0f32; rows.dim()];
    for m in members {
        for (x, y) in c.iter_mut().zip(rows.row(*m)) {
            *x += y;
        }
    }
    normalise(&mut c);
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    const DIM: usize = 24;

    /// A noisy unit vector near axis `topic`.
    fn near(rng: &mut StdRng, topic: usize) -> Vec<f32> {
        let mut v: Vec<f32> = (0..DIM)
            .map(|_| 0.25 * (rng.random::<f32>() - 0.5))
            .collect();
        v[topic] += 1.0;
        normalise(&mut v);
        v
    }

    /// `per_day[t]` tickets of topic `t` every day from `from` to `to`
    /// (days before the window end `end`), plus `burst` tickets of topic
    /// `burst_topic` on each of the last `burst_days` days.
    fn history(per_day: &[u32], burst: u32, burst_days: u32) -> History {
        let mut rng = StdRng::seed_from_u64(11);
        let end = 400 * DAY;
        let window = Window::ending(end, 7);
        let base = window.before(28);
        let (mut items, mut vectors) = (Vec::new(), Rows::new(DIM));
        let (mut baseline, mut baseline_vectors) = (Vec::new(), Rows::new(DIM));
        let words = [
            "充电座 过热",
            "屏幕 闪烁",
            "退款 到账",
            "发票 抬头",
            "物流 延迟",
        ];
        for day in 0..35i64 {
            let start = base.from + day * DAY;
            for (t, n) in per_day.iter().enumerate() {
                for k in 0..*n {
                    let at = start + 3600 + i64::from(k) * 60;
                    let v = near(&mut rng, t);
                    if window.contains(at) {
                        items.push(Item {
                            id: format!("T{day}-{t}-{k}"),
                            title: words[t % words.len()].into(),
                            text: words[t % words.len()].into(),
                            category: format!("cat{t}"),
                            created: at,
                            ..Item::default()
                        });
                        vectors.push(&v);
                    } else {
                        baseline.push(at);
                        baseline_vectors.push(&v);
                    }
                }
            }
        }
        for day in 0..burst_days {
            for k in 0..burst {
                let at = end - i64::from(day + 1) * DAY + 7200 + i64::from(k);
                items.push(Item {
                    id: format!("B{day}-{k}"),
                    title: "扫地机 电池 鼓包".into(),
                    text: "扫地机 电池 鼓包 robot vacuum battery swelling".into(),
                    category: "safety".into(),
                    created: at,
                    ..Item::default()
                });
                vectors.push(&near(&mut rng, 20));
            }
        }
        let baseline_total = baseline.len() as u64;
        History {
            window,
            baseline_days: 28,
            items,
            vectors,
            baseline,
            baseline_vectors,
            baseline_total,
        }
    }

    fn opts() -> EmergingOptions {
        EmergingOptions {
            cluster: ClusterOptions {
                threshold: 0.6,
                ..ClusterOptions::default()
            },
            ..EmergingOptions::default()
        }
    }

    #[test]
    fn a_steady_background_raises_nothing() {
        let d = detect(&history(&[6, 4, 3, 8, 5], 0, 0), &opts());
        assert_eq!(d.report.clusters.len(), 5);
        for c in &d.report.clusters {
            assert_eq!(c.status, ClusterStatus::Steady, "{c:?}");
            assert!(c.spike.is_none());
            assert_eq!(c.size, c.daily.iter().sum::<u32>());
        }
        assert_eq!(d.report.tickets, 7 * 26);
    }

    #[test]
    fn a_new_fault_is_new_spiking_and_labelled_by_its_words() {
        let d = detect(&history(&[6, 4, 3, 8, 5], 8, 2), &opts());
        let first = &d.report.clusters[0];
        assert_eq!(first.status, ClusterStatus::New);
        let spike = first.spike.as_ref().expect("a spike");
        assert_eq!(spike.count, 16);
        assert_eq!(spike.days, 2);
        assert!(
            first.label.iter().any(|w| w == "鼓包" || w == "swell"),
            "{:?}",
            first.label
        );
        assert_eq!(first.daily[5..], [8, 8]);
        assert_eq!(first.categories[0].value, "safety");
        assert!(first.examples.len() <= 5);
        assert!(d.report.clusters[1..].iter().all(|c| c.spike.is_none()));
    }

    #[test]
    fn a_handful_is_not_a_spike() {
        let d = detect(&history(&[6, 4, 3, 8, 5], 2, 1), &opts());
        assert!(d.report.clusters.iter().all(|c| c.spike.is_none()));
    }

    #[test]
    fn a_known_problem_that_triples_is_growing() {
        let mut h = history(&[6, 4, 3, 8, 5, 3, 4, 6, 5, 4], 0, 0);
        // Ten more tickets of topic 2 (three a day) on each of the last two days.
        let mut rng = StdRng::seed_from_u64(5);
        for day in 0..2 {
            for k in 0..10 {
                h.items.push(Item {
                    id: format!("G{day}-{k}"),
                    text: "发票 抬头".into(),
                    created: h.window.to - (day + 1) * DAY + 60 * k,
                    ..Item::default()
                });
                h.vectors.push(&near(&mut rng, 2));
            }
        }
        let d = detect(&h, &opts());
        let grown = &d.report.clusters[0];
        assert_eq!(grown.size, 7 * 3 + 20);
        assert_eq!(grown.status, ClusterStatus::Growing);
        assert!(grown.spike.is_some());
        assert!(d.report.clusters[1..].iter().all(|c| c.spike.is_none()));
    }

    #[test]
    fn without_history_nothing_is_new() {
        let mut h = history(&[6, 4], 8, 2);
        h.baseline.clear();
        h.baseline_vectors = Rows::new(DIM);
        h.baseline_total = 0;
        let d = detect(&h, &opts());
        assert!(d
            .report
            .clusters
            .iter()
            .all(|c| c.status == ClusterStatus::Steady && c.spike.is_none()));
    }
}
