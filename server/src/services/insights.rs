//! The emerging-problem job and its alerts.
//!
//! Emerging problems are computed as a periodic job, not incrementally as
//! tickets arrive (docs/EVAL.md measures both): every `insights_interval_secs`
//! [`background`] computes each tenant's report over the default window on
//! the blocking pool, one tenant after another, on one thread. A report is
//! kept until the next run, so `GET /v1/insights/emerging` answers from it
//! at once however large the tenant; another window is computed on demand.
//!
//! A report's spikes that no alert of the last two weeks covers raise an
//! alert (the engine remembers them in the data directory, so each problem
//! alerts once, even across restarts), three ways:
//!
//! * a `warn` log line naming the tenant, the cluster's words and the count;
//! * the counter `triage_insights_alerts_total{tenant}` in `/metrics`;
//! * an outgoing event through an [`AlertSink`]: event type `insights.spike`,
//!   the [`InsightAlert`] as JSON. The default sink is the log line; the
//!   signed-webhook outbox implements the trait (`Outbox::emit(tenant,
//!   event_type, json)`) and is wired in with [`Insights::new`].

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use triage::api::{EmergingReport, InsightAlert};
use triage::Engine;

/// Default seconds between two runs of the emerging-problem job.
pub const DEFAULT_INSIGHTS_INTERVAL_SECS: u64 = 3600;

/// Where an alert goes besides the log and the metric: the outgoing event.
pub trait AlertSink: Send + Sync {
    /// Sends one event of `tenant`: `event_type` is `insights.spike`, `payload`
    /// the alert as JSON. An error is logged; the alert stays raised.
    fn emit(
        &self,
        tenant: &str,
        event_type: &str,
        payload: &serde_json::Value,
    ) -> Result<(), String>;
}

/// The sink while no outbox is wired: the event goes to the log only.
#[derive(Debug, Default)]
pub struct LogSink;

impl AlertSink for LogSink {
    fn emit(
        &self,
        tenant: &str,
        event_type: &str,
        payload: &serde_json::Value,
    ) -> Result<(), String> {
        tracing::info!(tenant, event_type, event = %payload, "outgoing event (no outbox configured)");
        Ok(())
    }
}

/// A computed report and when.
type Cached = (Instant, Arc<EmergingReport>);

/// The job's state: the last reports, the alerts raised, the sink.
pub struct Insights {
    interval: Duration,
    sink: Arc<dyn AlertSink>,
    reports: Mutex<HashMap<(String, u32), Cached>>,
    raised: Mutex<BTreeMap<String, u64>>,
}

impl Insights {
    /// The job, running every `interval` (zero: never in the background,
    /// reports computed on demand), sending alerts to `sink`.
    pub fn new(interval: Duration, sink: Arc<dyn AlertSink>) -> Insights {
        Insights {
            interval,
            sink,
            reports: Mutex::new(HashMap::new()),
            raised: Mutex::new(BTreeMap::new()),
        }
    }

    fn reports(&self) -> MutexGuard<'_, HashMap<(String, u32), Cached>> {
        self.reports.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The emerging problems of `tenant` over `days`: the last report when
    /// it is younger than the job's interval, else computed now. Blocking:
    /// call it on the blocking pool. The default window's computation raises
    /// its alerts.
    pub fn emerging(
        &self,
        engine: &Engine,
        tenant: &str,
        days: u32,
    ) -> triage::Result<Arc<EmergingReport>> {
        let key = (tenant.to_string(), days);
        if let Some((at, report)) = self.reports().get(&key) {
            if at.elapsed() < self.interval {
                return Ok(Arc::clone(report));
            }
        }
        self.compute(engine, tenant, days)
    }

    /// Computes and keeps a report (and raises the default window's alerts).
    fn compute(
        &self,
        engine: &Engine,
        tenant: &str,
        days: u32,
    ) -> triage::Result<Arc<EmergingReport>> {
        let now = triage::report_end();
        let report = if days == triage::EMERGING_WINDOW_DAYS {
            let (report, alerts) = engine.emerging_alerts(tenant, days, now)?;
            self.raise(alerts);
            report
        } else {
            engine.emerging(tenant, days, now)?
        };
        let report = Arc::new(report);
        self.reports().insert(
            (tenant.to_string(), days),
            (Instant::now(), Arc::clone(&report)),
        );
        Ok(report)
    }

    /// Logs, counts and sends each alert.
    fn raise(&self, alerts: Vec<InsightAlert>) {
        for a in alerts {
            tracing::warn!(
                tenant = %a.tenant,
                alert = %a.id,
                label = %a.label.join(" "),
                status = ?a.status,
                count = a.spike.count,
                expected = a.spike.expected,
                p_value = a.spike.p_value,
                "emerging problem: {} tickets where {:.1} were expected",
                a.spike.count,
                a.spike.expected
            );
            *self
                .raised
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .entry(a.tenant.clone())
                .or_default() += 1;
            match serde_json::to_value(&a) {
                Ok(payload) => {
                    if let Err(e) = self.sink.emit(&a.tenant, &a.event_type, &payload) {
                        tracing::warn!(alert = %a.id, error = %e, "could not send the alert event");
                    }
                }
                Err(e) => tracing::warn!(alert = %a.id, error = %e, "could not encode the alert"),
            }
        }
    }

    /// One run of the job: every tenant's default-window report, computed
    /// afresh (alerts raised). A tenant that fails is logged and skipped.
    pub fn run(&self, engine: &Engine) {
        for tenant in engine.tenants() {
            let started = Instant::now();
            match self.compute(engine, &tenant, triage::EMERGING_WINDOW_DAYS) {
                Ok(r) => tracing::info!(
                    tenant = %tenant,
                    tickets = r.tickets,
                    clusters = r.clusters.len(),
                    seconds = started.elapsed().as_secs_f64(),
                    "emerging problems computed"
                ),
                Err(e) => {
                    tracing::warn!(tenant = %tenant, error = %e, "emerging problems failed")
                }
            }
        }
    }

    /// Alerts raised since start, per tenant (for `/metrics`).
    pub fn alerts_raised(&self) -> BTreeMap<String, u64> {
        self.raised
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The interval between runs.
    pub fn interval(&self) -> Duration {
        self.interval
    }
}

/// Runs the job every interval once the engine is loaded, each run on the
/// blocking pool; returns at once when the interval is zero.
pub async fn background<F>(insights: Arc<Insights>, engine: F)
where
    F: Fn() -> Option<Arc<Engine>> + Send + 'static,
{
    if insights.interval().is_zero() {
        tracing::info!("the emerging-problem job is off (insights_interval_secs = 0)");
        return;
    }
    let mut tick = tokio::time::interval(insights.interval());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        // Wait for the engine without waiting a whole interval.
        let engine = loop {
            match engine() {
                Some(e) => break e,
                None => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        };
        let job = Arc::clone(&insights);
        if let Err(e) = tokio::task::spawn_blocking(move || job.run(&engine)).await {
            tracing::error!(error = %e, "the emerging-problem job stopped unexpectedly");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A sink that counts what it was sent (the outbox's place).
    #[derive(Default)]
    struct Counting(AtomicUsize, Mutex<Vec<String>>);

    impl AlertSink for Counting {
        fn emit(
            &self,
            tenant: &str,
            event_type: &str,
            p: &serde_json::Value,
        ) -> Result<(), String> {
            self.0.fetch_add(1, Ordering::SeqCst);
            self.1
                .lock()
                .unwrap()
                .push(format!("{tenant}/{event_type}/{}", p["cluster_id"]));
            Err("the receiver is down".into())
        }
    }

    #[test]
    fn each_alert_is_logged_counted_and_sent_even_when_the_sink_fails() {
        let sink = Arc::new(Counting::default());
        let job = Insights::new(Duration::from_secs(60), sink.clone());
        let alert: InsightAlert = serde_json::from_value(serde_json::json!({
            "id": "al-1", "type": "insights.spike", "tenant": "acme", "at": "2026-12-07T00:00:00Z",
            "cluster_id": "cl-1", "label": ["鼓包"], "status": "new", "size": 9, "days": [],
            "daily": [0, 9], "spike": {"from": "", "days": 1, "count": 9, "expected": 0.1, "p_value": 1e-9},
            "examples": []
        }))
        .unwrap();
        job.raise(vec![alert.clone(), alert]);
        assert_eq!(sink.0.load(Ordering::SeqCst), 2);
        assert_eq!(sink.1.lock().unwrap()[0], "acme/insights.spike/\"cl-1\"");
        assert_eq!(job.alerts_raised().get("acme"), Some(&2));
    }
}
