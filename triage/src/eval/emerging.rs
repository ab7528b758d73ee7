//! `triage eval emerging`: a ticket history replayed day by day through the
//! emerging-problem detector the service runs, with planted bursts whose
//! start is known (built by `bench/emerging_replay.py`).
//!
//! At the end of every day from the fifth week on, the detector looks at the
//! last seven days against the four weeks before ([`detect`], with the
//! service's settings unless overridden), and an [`AlertBook`] decides which
//! spikes are new alerts, exactly as the service's job does. Each alert is
//! judged by the topics of its cluster's tickets: it is **true** when most
//! of them belong to a planted burst that has started (for a surge of a
//! known topic: while it surges), else **false**. Reported:
//!
//! * per burst: found or not, and the detection delay in days after its start
//!   (0 = the day it started); by split (tuning bursts, held-out bursts);
//! * false alerts over the whole replay, and per 30 days;
//! * cluster purity against the known topics (share of clustered tickets in
//!   their cluster's majority topic), and the share of window tickets that
//!   clustered at all, averaged over the days;
//! * the run time of one day's detection.

use std::collections::HashMap;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::insights::alerts::AlertBook;
use crate::insights::cluster::Rows;
use crate::insights::emerging::{detect, EmergingOptions, History, Item, BASELINE_WEEKS};
use crate::insights::{parse_time, Window, DAY};

/// One ticket of a replay.
#[derive(Debug, Clone, Deserialize)]
pub struct ReplayTicket {
    /// Its id.
    pub id: String,
    /// Its text.
    pub text: String,
    /// When it was created (RFC 3339).
    pub created_at: String,
    /// The topic it was drawn from.
    pub topic: String,
    /// The burst it belongs to, if any.
    #[serde(default)]
    pub burst: Option<String>,
}

/// A planted burst.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Burst {
    /// Its topic (a written fault, or an intent).
    pub name: String,
    /// `new` (a topic the history never had) or `surge` (a known topic four times as often).
    pub kind: String,
    /// `tune` or `test`.
    pub split: String,
    /// Its first day (days after the replay's start).
    pub start: i64,
}

/// What the replay's metadata file holds.
#[derive(Debug, Clone, Deserialize)]
pub struct ReplayMeta {
    /// Midnight of day 0 (RFC 3339).
    pub start: String,
    /// Days in the replay.
    pub days: i64,
    /// The planted bursts.
    pub bursts: Vec<Burst>,
}

/// One burst's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct BurstOutcome {
    /// The burst.
    pub name: String,
    /// `new` or `surge`.
    pub kind: String,
    /// `tune` or `test`.
    pub split: String,
    /// Its first day.
    pub start: i64,
    /// Days from its start to its first alert (`None`: never alerted).
    pub delay: Option<i64>,
    /// The alert's words.
    pub label: Vec<String>,
}

/// A false alert.
#[derive(Debug, Clone, Serialize)]
pub struct FalseAlert {
    /// The day it was raised.
    pub day: i64,
    /// The majority topic of its cluster.
    pub topic: String,
    /// Share of the cluster in that topic.
    pub share: f32,
    /// The alert's words.
    pub label: Vec<String>,
    /// The count and expectation that raised it.
    pub count: u32,
    /// Expected count.
    pub expected: f64,
}

/// Detection figures over one split of the bursts.
#[derive(Debug, Clone, Serialize)]
pub struct SplitFigures {
    /// Bursts in the split.
    pub bursts: usize,
    /// Of which alerted at all.
    pub found: usize,
    /// Of which alerted within 2 days of the start (delay ≤ 2).
    pub found_within_2_days: usize,
    /// Mean delay of the found ones.
    pub mean_delay: Option<f64>,
    /// Largest delay of the found ones.
    pub max_delay: Option<i64>,
}

/// The report of `triage eval emerging`.
#[derive(Debug, Clone, Serialize)]
pub struct EmergingEvalReport {
    /// Tickets replayed.
    pub tickets: usize,
    /// Days evaluated (each a detection run).
    pub days_evaluated: i64,
    /// The detector's settings (cluster threshold, min count, alpha).
    pub settings: String,
    /// Tuning bursts.
    pub tune: SplitFigures,
    /// Held-out bursts.
    pub test: SplitFigures,
    /// True alerts (one per burst at most).
    pub true_alerts: usize,
    /// False alerts over the replay.
    pub false_alerts: usize,
    /// False alerts per 30 days.
    pub false_alerts_per_30_days: f64,
    /// Share of alerts that were true.
    pub alert_precision: f64,
    /// Share of clustered window tickets in their cluster's majority topic (mean over days).
    pub purity: f64,
    /// Share of window tickets that joined a cluster (mean over days).
    pub clustered: f64,
    /// Share of a running burst's window tickets in its largest cluster (mean over burst-days).
    pub burst_recall: f64,
    /// Clusters per day (mean).
    pub clusters_per_day: f64,
    /// Median seconds of one day's detection (clustering, baseline, counts, labels).
    pub seconds_per_day_p50: f64,
    /// Every burst's outcome.
    pub outcomes: Vec<BurstOutcome>,
    /// Every false alert.
    pub false_alert_list: Vec<FalseAlert>,
}

fn figures(outcomes: &[BurstOutcome], split: &str) -> SplitFigures {
    let mine: Vec<&BurstOutcome> = outcomes.iter().filter(|o| o.split == split).collect();
    let delays: Vec<i64> = mine.iter().filter_map(|o| o.delay).collect();
    SplitFigures {
        bursts: mine.len(),
        found: delays.len(),
        found_within_2_days: delays.iter().filter(|d| **d <= 2).count(),
        mean_delay: (!delays.is_empty())
            .then(|| delays.iter().sum::<i64>() as f64 / delays.len() as f64),
        max_delay: delays.iter().copied().max(),
    }
}

/// Settings to try instead of the service's (`None`: the service's).
#[derive(Debug, Clone, Copy, Default)]
pub struct Tuning {
    /// Cluster threshold (cosine of centred vectors to the cluster's centre).
    pub threshold: Option<f32>,
    /// Fewest tickets of a spike.
    pub min_count: Option<u32>,
    /// Largest tail probability of a spike.
    pub alpha: Option<f64>,
    /// Fewest tickets of a cluster.
    pub min_size: Option<usize>,
    /// Cluster incrementally (one pass in arrival order) instead of periodically.
    pub online: bool,
}

impl Tuning {
    /// The service's detector settings with these overrides.
    fn options(&self) -> EmergingOptions {
        let mut o = EmergingOptions::default();
        if let Some(t) = self.threshold {
            o.cluster.threshold = t;
        }
        if let Some(m) = self.min_count {
            o.min_count = m;
        }
        if let Some(a) = self.alpha {
            o.alpha = a;
        }
        if let Some(m) = self.min_size {
            o.cluster.min_size = m;
        }
        o.cluster.online = self.online;
        o
    }
}

/// Replays `tickets` (with their unit vectors, in the same order) day by day
/// through the detector, with the service's settings changed by `tuning`
/// (see the module docs).
pub fn replay(
    tickets: &[ReplayTicket],
    vectors: &[Vec<f32>],
    meta: &ReplayMeta,
    tuning: &Tuning,
) -> Result<EmergingEvalReport> {
    let opts = &tuning.options();
    let dim = vectors.first().map_or(0, Vec::len);
    let mut rows = Rows::new(dim);
    for v in vectors {
        rows.push(v);
    }
    let vectors = &rows;
    let origin = parse_time(&meta.start)?;
    let created: Vec<i64> = tickets
        .iter()
        .map(|t| parse_time(&t.created_at))
        .collect::<Result<_>>()?;
    let window_days = crate::insights::EMERGING_WINDOW_DAYS;
    let baseline_days = BASELINE_WEEKS * 7;
    let first_day = i64::from(window_days + baseline_days);
    let by_name: HashMap<&str, &Burst> = meta.bursts.iter().map(|b| (b.name.as_str(), b)).collect();
    let mut found: HashMap<String, (i64, Vec<String>)> = HashMap::new();
    let mut false_alerts = Vec::new();
    let mut true_alerts = 0usize;
    let mut book = AlertBook::in_memory();
    let (mut purity_sum, mut clustered_sum, mut clusters_sum) = (0f64, 0f64, 0f64);
    let (mut recall_sum, mut recall_n) = (0f64, 0usize);
    let mut seconds = Vec::new();
    let mut days = 0i64;
    for day in first_day..meta.days {
        let end = origin + (day + 1) * DAY;
        let window = Window::ending(end, window_days);
        let base = window.before(baseline_days);
        let mut h = History {
            window,
            baseline_days,
            items: Vec::new(),
            vectors: Rows::new(vectors.dim()),
            baseline: Vec::new(),
            baseline_vectors: Rows::new(vectors.dim()),
            baseline_total: 0,
        };
        let mut topics: Vec<&str> = Vec::new();
        for (i, t) in tickets.iter().enumerate() {
            let at = created[i];
            if window.contains(at) {
                h.items.push(Item {
                    id: t.id.clone(),
                    title: t.text.chars().take(60).collect(),
                    text: t.text.clone(),
                    created: at,
                    ..Item::default()
                });
                h.vectors.push(vectors.row(i));
                topics.push(&t.topic);
            } else if base.contains(at) {
                h.baseline.push(at);
                h.baseline_vectors.push(vectors.row(i));
                h.baseline_total += 1;
            }
        }
        let started = Instant::now();
        let mut all = opts.clone();
        all.limit = usize::MAX;
        let d = detect(&h, &all);
        seconds.push(started.elapsed().as_secs_f64());
        let raised = book.admit("", &d, end)?;
        days += 1;

        // Purity, coverage and each running burst's recall.
        let mut in_clusters = 0usize;
        let mut in_majority = 0usize;
        let mut burst_best: HashMap<&str, usize> = HashMap::new();
        let majority = |members: &[usize]| -> (String, usize) {
            let mut n: HashMap<&str, usize> = HashMap::new();
            for m in members {
                *n.entry(topics[*m]).or_default() += 1;
            }
            n.into_iter()
                .max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(a.0)))
                .map(|(t, c)| (t.to_string(), c))
                .unwrap_or_default()
        };
        for members in &d.members {
            let (topic, count) = majority(members);
            in_clusters += members.len();
            in_majority += count;
            if by_name.contains_key(topic.as_str()) {
                let slot = burst_best
                    .entry(by_name[topic.as_str()].name.as_str())
                    .or_default();
                *slot = (*slot).max(count);
            }
        }
        if !h.items.is_empty() {
            clustered_sum += in_clusters as f64 / h.items.len() as f64;
        }
        if in_clusters > 0 {
            purity_sum += in_majority as f64 / in_clusters as f64;
        }
        clusters_sum += d.members.len() as f64;
        for b in &meta.bursts {
            let running = day >= b.start && day < b.start + 10;
            if b.kind != "new" || !running {
                continue;
            }
            let total = topics.iter().filter(|t| **t == b.name).count();
            if total > 0 {
                recall_sum +=
                    burst_best.get(b.name.as_str()).copied().unwrap_or(0) as f64 / total as f64;
                recall_n += 1;
            }
        }

        for a in raised {
            let Some(idx) = d.report.clusters.iter().position(|c| c.id == a.cluster_id) else {
                continue;
            };
            let (topic, count) = majority(&d.members[idx]);
            let share = count as f32 / d.members[idx].len().max(1) as f32;
            let burst = by_name.get(topic.as_str()).filter(|b| {
                let running = if b.kind == "surge" { 7 } else { 10 };
                day >= b.start && day < b.start + running + i64::from(window_days)
            });
            match burst {
                Some(b) if !found.contains_key(&b.name) => {
                    true_alerts += 1;
                    found.insert(b.name.clone(), (day - b.start, a.label.clone()));
                }
                // A second alert of a burst already found: a duplicate, not a new problem.
                Some(_) => false_alerts.push(FalseAlert {
                    day,
                    topic: format!("{topic} (again)"),
                    share,
                    label: a.label.clone(),
                    count: a.spike.count,
                    expected: a.spike.expected,
                }),
                None => false_alerts.push(FalseAlert {
                    day,
                    topic,
                    share,
                    label: a.label.clone(),
                    count: a.spike.count,
                    expected: a.spike.expected,
                }),
            }
        }
    }
    let outcomes: Vec<BurstOutcome> = meta
        .bursts
        .iter()
        .map(|b| BurstOutcome {
            name: b.name.clone(),
            kind: b.kind.clone(),
            split: b.split.clone(),
            start: b.start,
            delay: found.get(&b.name).map(|(d, _)| *d),
            label: found
                .get(&b.name)
                .map(|(_, l)| l.clone())
                .unwrap_or_default(),
        })
        .collect();
    seconds.sort_by(f64::total_cmp);
    let n = days.max(1) as f64;
    let alerts = true_alerts + false_alerts.len();
    Ok(EmergingEvalReport {
        tickets: tickets.len(),
        days_evaluated: days,
        settings: format!(
            "threshold {} min_count {} alpha {:e} min_size {}{}",
            opts.cluster.threshold,
            opts.min_count,
            opts.alpha,
            opts.cluster.min_size,
            if opts.cluster.online { " online" } else { "" }
        ),
        tune: figures(&outcomes, "tune"),
        test: figures(&outcomes, "test"),
        true_alerts,
        false_alerts: false_alerts.len(),
        false_alerts_per_30_days: false_alerts.len() as f64 * 30.0 / n,
        alert_precision: if alerts == 0 {
            0.0
        } else {
            true_alerts as f64 / alerts as f64
        },
        purity: purity_sum / n,
        clustered: clustered_sum / n,
        burst_recall: if recall_n == 0 {
            0.0
        } else {
            recall_sum / recall_n as f64
        },
        clusters_per_day: clusters_sum / n,
        seconds_per_day_p50: seconds.get(seconds.len() / 2).copied().unwrap_or(0.0),
        outcomes,
        false_alert_list: false_alerts,
    })
}
