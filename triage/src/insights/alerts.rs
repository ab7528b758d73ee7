//! Alerts that are raised once per problem, not once per report.
//!
//! A spike is reported by every report whose window holds it, and the
//! detector runs again and again: the [`AlertBook`] remembers what it raised
//! (the cluster's mean direction in the original vector space, which moves
//! little from one day's window to the next) and raises a spike again only
//! when no alert of the tenant within [`REMEMBER_DAYS`] points the same way
//! (cosine ≥ [`SAME_PROBLEM`]). While a problem keeps spiking its alert stays
//! fresh, so a fault that lasts a month alerts once.
//!
//! The book lives in memory (`triage eval emerging` replays with one) and,
//! for the service, in `insights/alerts.jsonl` under the data directory: one
//! line per alert raised or refreshed, fsynced, replayed at start, so a
//! restart does not raise the same alerts again.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::emerging::Detection;
use super::{rfc3339, DAY};
use crate::api::{AlertExample, InsightAlert};
use crate::error::{Error, Result};
use crate::model::knn::dot;

/// Days an alert keeps a problem from alerting again (counted from its last spike).
pub const REMEMBER_DAYS: i64 = 14;
/// Cosine of two clusters' mean directions at or above which they are one problem.
pub const SAME_PROBLEM: f32 = 0.9;
/// Event type of an emerging-problem alert (the outbox's `event_type`).
pub const EVENT_TYPE: &str = "insights.spike";

/// One remembered alert.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Remembered {
    id: String,
    tenant: String,
    /// Last time the problem spiked (Unix seconds).
    at: i64,
    label: Vec<String>,
    centroid: Vec<f32>,
}

/// What alerts were raised, per tenant (see the module docs).
#[derive(Debug, Default)]
pub struct AlertBook {
    seen: Vec<Remembered>,
    file: Option<(PathBuf, File)>,
}

impl AlertBook {
    /// A book in memory only.
    pub fn in_memory() -> AlertBook {
        AlertBook::default()
    }

    /// The book kept in `path` (created if missing, with its directory). A
    /// torn or unreadable line is skipped with a warning: forgetting an alert
    /// only means raising it once more.
    pub fn open(path: &Path) -> Result<AlertBook> {
        let io = |source| Error::Io {
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let mut seen: Vec<Remembered> = Vec::new();
        let mut torn = false;
        if path.exists() {
            let bytes = std::fs::read(path).map_err(io)?;
            torn = bytes.last().is_some_and(|b| *b != b'\n');
            for (n, line) in bytes.split(|b| *b == b'\n').enumerate() {
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                match serde_json::from_slice::<Remembered>(line) {
                    Ok(r) => match seen.iter_mut().find(|s| s.id == r.id) {
                        Some(s) => *s = r,
                        None => seen.push(r),
                    },
                    Err(e) => tracing::warn!(
                        line = n + 1,
                        error = %e,
                        "skipping an unreadable line of {}",
                        path.display()
                    ),
                }
            }
        }
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(io)?;
        if torn {
            // The next record starts on its own line.
            file.write_all(b"\n").map_err(io)?;
        }
        Ok(AlertBook {
            seen,
            file: Some((path.to_path_buf(), file)),
        })
    }

    /// The new alerts of a detection at time `now`: the spiking clusters no
    /// remembered alert of `tenant` covers. Every spiking cluster refreshes
    /// (or starts) its memory.
    pub fn admit(&mut self, tenant: &str, d: &Detection, now: i64) -> Result<Vec<InsightAlert>> {
        let mut raised = Vec::new();
        for (c, centroid) in d.report.clusters.iter().zip(&d.centroids) {
            let Some(spike) = &c.spike else { continue };
            let known = self.seen.iter().position(|r| {
                r.tenant == tenant
                    && now - r.at <= REMEMBER_DAYS * DAY
                    && dot(&r.centroid, centroid) >= SAME_PROBLEM
            });
            let record = match known {
                Some(i) => {
                    let r = &mut self.seen[i];
                    r.at = now;
                    r.centroid = centroid.clone();
                    r.clone()
                }
                None => {
                    let id = alert_id(tenant, &c.id, now);
                    let r = Remembered {
                        id: id.clone(),
                        tenant: tenant.to_string(),
                        at: now,
                        label: c.label.clone(),
                        centroid: centroid.clone(),
                    };
                    self.seen.push(r.clone());
                    raised.push(InsightAlert {
                        id,
                        event_type: EVENT_TYPE.into(),
                        tenant: tenant.to_string(),
                        at: rfc3339(now),
                        cluster_id: c.id.clone(),
                        label: c.label.clone(),
                        status: c.status,
                        size: c.size,
                        days: d.report.days.clone(),
                        daily: c.daily.clone(),
                        spike: spike.clone(),
                        examples: c
                            .examples
                            .iter()
                            .map(|e| AlertExample {
                                ticket_id: e.ticket_id.clone(),
                                title: e.title.clone(),
                            })
                            .collect(),
                    });
                    r
                }
            };
            self.persist(&record)?;
        }
        // Forget what can no longer match.
        self.seen.retain(|r| now - r.at <= REMEMBER_DAYS * DAY);
        Ok(raised)
    }

    fn persist(&mut self, r: &Remembered) -> Result<()> {
        let Some((path, file)) = &mut self.file else {
            return Ok(());
        };
        let line = serde_json::to_string(r).map_err(|e| Error::Numeric(e.to_string()))?;
        file.write_all(format!("{line}\n").as_bytes())
            .and_then(|()| file.sync_data())
            .map_err(|source| Error::Io {
                path: path.clone(),
                source,
            })
    }
}

/// An alert's id: from the tenant, the cluster and the time.
fn alert_id(tenant: &str, cluster: &str, at: i64) -> String {
    let d = Sha256::digest(format!("{tenant}\u{1f}{cluster}\u{1f}{at}").as_bytes());
    format!(
        "al-{}",
        d.iter()
            .take(8)
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{ClusterStatus, EmergingCluster, EmergingReport, Spike};

    fn detection(centroids: Vec<Vec<f32>>, spiking: &[bool]) -> Detection {
        let clusters = spiking
            .iter()
            .enumerate()
            .map(|(i, s)| EmergingCluster {
                id: format!("cl-{i}"),
                label: vec![format!("w{i}")],
                size: 10,
                daily: vec![0, 10],
                expected: 0.1,
                baseline_share: 0.0,
                status: ClusterStatus::New,
                p_value: 1e-9,
                spike: s.then(|| Spike {
                    from: String::new(),
                    days: 1,
                    count: 10,
                    expected: 0.1,
                    p_value: 1e-9,
                }),
                categories: Vec::new(),
                fields: Default::default(),
                examples: Vec::new(),
            })
            .collect();
        Detection {
            report: EmergingReport {
                tenant: String::new(),
                window_days: 2,
                baseline_days: 28,
                from: String::new(),
                to: String::new(),
                days: vec![],
                tickets: 20,
                daily_total: vec![0, 20],
                baseline_tickets: 100,
                clustered: 20,
                dispersion: 1.0,
                clusters,
                generated_at: String::new(),
            },
            members: vec![Vec::new(); centroids.len()],
            centroids,
        }
    }

    #[test]
    fn a_problem_alerts_once_while_it_lasts_and_again_after_a_quiet_spell() {
        let mut book = AlertBook::in_memory();
        let d = detection(vec![vec![1.0, 0.0], vec![0.0, 1.0]], &[true, false]);
        let first = book.admit("acme", &d, 100 * DAY).unwrap();
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].event_type, EVENT_TYPE);
        assert_eq!(first[0].cluster_id, "cl-0");
        // The next days' reports hold the same spike: no new alert.
        for day in 101..130 {
            assert!(book.admit("acme", &d, day * DAY).unwrap().is_empty());
        }
        // Another tenant's identical spike is its own.
        assert_eq!(book.admit("globex", &d, 130 * DAY).unwrap().len(), 1);
        // Quiet for longer than it is remembered: it alerts again.
        assert_eq!(book.admit("acme", &d, 150 * DAY).unwrap().len(), 1);
    }

    #[test]
    fn the_book_on_disk_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("insights").join("alerts.jsonl");
        let d = detection(vec![vec![1.0, 0.0]], &[true]);
        {
            let mut book = AlertBook::open(&path).unwrap();
            assert_eq!(book.admit("acme", &d, 10 * DAY).unwrap().len(), 1);
        }
        // A torn last line is skipped.
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"id\":\"al-torn").unwrap();
        drop(f);
        let mut book = AlertBook::open(&path).unwrap();
        assert!(book.admit("acme", &d, 11 * DAY).unwrap().is_empty());
        let other = detection(vec![vec![0.0, 1.0]], &[true]);
        assert_eq!(book.admit("acme", &other, 11 * DAY).unwrap().len(), 1);
        // What was written after the torn line is read back.
        drop(book);
        let mut book = AlertBook::open(&path).unwrap();
        assert!(book.admit("acme", &other, 12 * DAY).unwrap().is_empty());
    }
}
