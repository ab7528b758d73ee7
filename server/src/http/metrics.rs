//! Prometheus metrics, rendered by hand in the text exposition format:
//! request counts and latency histograms per route, decisions by outcome,
//! abstention and deflection rates, and the engine's index statistics.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds (seconds) of the latency histogram buckets.
const BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

#[derive(Default, Clone)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    sum: f64,
    total: u64,
}

impl Histogram {
    fn observe(&mut self, seconds: f64) {
        for (i, bound) in BUCKETS.iter().enumerate() {
            if seconds <= *bound {
                self.counts[i] += 1;
            }
        }
        self.sum += seconds;
        self.total += 1;
    }
}

#[derive(Default)]
struct Inner {
    /// (route, method, status) → count.
    requests: BTreeMap<(String, String, u16), u64>,
    /// route → latency histogram.
    latency: BTreeMap<String, Histogram>,
    /// (decision, outcome) → count, e.g. ("deflect", "answer").
    decisions: BTreeMap<(String, String), u64>,
    /// Requests shed by the concurrency limit.
    shed: u64,
}

/// The service's metric registry.
#[derive(Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

impl Metrics {
    /// Records one finished request.
    pub fn observe_request(&self, route: &str, method: &str, status: u16, elapsed: Duration) {
        // Labels come from a fixed set: any method string a client sends is
        // not a new series (`/metrics` must not grow with what clients send).
        let method = match method {
            "GET" | "HEAD" | "POST" | "PUT" | "DELETE" | "PATCH" | "OPTIONS" => method,
            _ => "other",
        };
        if let Ok(mut m) = self.inner.lock() {
            *m.requests
                .entry((route.to_string(), method.to_string(), status))
                .or_default() += 1;
            m.latency
                .entry(route.to_string())
                .or_default()
                .observe(elapsed.as_secs_f64());
        }
    }

    /// Records one decision outcome (`triage`/`abstain`, `deflect`/`answer`, ...).
    pub fn observe_decision(&self, decision: &str, outcome: &str) {
        if let Ok(mut m) = self.inner.lock() {
            *m.decisions
                .entry((decision.to_string(), outcome.to_string()))
                .or_default() += 1;
        }
    }

    /// Counts a request shed with 503.
    pub fn observe_shed(&self) {
        if let Ok(mut m) = self.inner.lock() {
            m.shed += 1;
        }
    }

    /// Renders everything in the Prometheus text format. `gauges` are extra
    /// (name, help, value) samples, e.g. index sizes from the engine.
    pub fn render(&self, gauges: &[(String, String, f64)]) -> String {
        let Ok(m) = self.inner.lock() else {
            return String::new();
        };
        let mut out = String::new();
        out.push_str(
            "# HELP triage_http_requests_total HTTP requests by route, method and status.\n",
        );
        out.push_str("# TYPE triage_http_requests_total counter\n");
        for ((route, method, status), n) in &m.requests {
            let _ = writeln!(
                out,
                "triage_http_requests_total{{route=\"{}\",method=\"{}\",status=\"{status}\"}} {n}",
                escape(route),
                escape(method)
            );
        }
        out.push_str("# HELP triage_http_request_duration_seconds Request latency by route.\n");
        out.push_str("# TYPE triage_http_request_duration_seconds histogram\n");
        for (route, h) in &m.latency {
            let route = escape(route);
            for (bound, count) in BUCKETS.iter().zip(h.counts.iter()) {
                let _ = writeln!(
                    out,
                    "triage_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"{bound}\"}} {count}"
                );
            }
            let _ = writeln!(
                out,
                "triage_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"+Inf\"}} {}",
                h.total
            );
            let _ = writeln!(
                out,
                "triage_http_request_duration_seconds_sum{{route=\"{route}\"}} {}",
                h.sum
            );
            let _ = writeln!(
                out,
                "triage_http_request_duration_seconds_count{{route=\"{route}\"}} {}",
                h.total
            );
        }
        out.push_str(
            "# HELP triage_http_shed_total Requests refused with 503 at the concurrency limit.\n",
        );
        out.push_str("# TYPE triage_http_shed_total counter\n");
        let _ = writeln!(out, "triage_http_shed_total {}", m.shed);
        out.push_str("# HELP triage_decisions_total Decisions by kind and outcome.\n");
        out.push_str("# TYPE triage_decisions_total counter\n");
        for ((decision, outcome), n) in &m.decisions {
            let _ = writeln!(
                out,
                "triage_decisions_total{{decision=\"{decision}\",outcome=\"{}\"}} {n}",
                escape(outcome)
            );
        }
        let rate = |decision: &str, outcome: &str| -> f64 {
            let total: u64 = m
                .decisions
                .iter()
                .filter(|((d, _), _)| *d == decision)
                .map(|(_, n)| n)
                .sum();
            let hits = m
                .decisions
                .get(&(decision.to_string(), outcome.to_string()))
                .copied()
                .unwrap_or(0);
            if total == 0 {
                0.0
            } else {
                hits as f64 / total as f64
            }
        };
        out.push_str("# HELP triage_abstention_rate Share of triaged requests whose category needs a human.\n");
        out.push_str("# TYPE triage_abstention_rate gauge\n");
        let _ = writeln!(
            out,
            "triage_abstention_rate {}",
            rate("category", "abstain")
        );
        out.push_str(
            "# HELP triage_deflection_rate Share of chat messages answered without a human.\n",
        );
        out.push_str("# TYPE triage_deflection_rate gauge\n");
        let _ = writeln!(out, "triage_deflection_rate {}", rate("deflect", "answer"));
        for (name, help, value) in gauges {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} gauge");
            let _ = writeln!(out, "{name} {value}");
        }
        out
    }
}

/// A counter with one label, in the text format (`name{label="value"} n`).
pub fn labelled_counter(
    name: &str,
    help: &str,
    label: &str,
    values: &BTreeMap<String, u64>,
) -> String {
    let mut out = format!("# HELP {name} {help}\n# TYPE {name} counter\n");
    for (value, n) in values {
        let _ = writeln!(out, "{name}{{{label}=\"{}\"}} {n}", escape(value));
    }
    out
}

/// Escapes a label value.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Turns a JSON statistics object into gauges: every numeric leaf becomes
/// `triage_index_<path>` (nested keys joined with `_`).
pub fn stats_gauges(stats: &serde_json::Value) -> Vec<(String, String, f64)> {
    let mut out = Vec::new();
    flatten("triage_index", stats, &mut out);
    out
}

fn flatten(prefix: &str, value: &serde_json::Value, out: &mut Vec<(String, String, f64)>) {
    match value {
        serde_json::Value::Number(n) => {
            if let Some(v) = n.as_f64() {
                out.push((prefix.to_string(), format!("Engine statistic {prefix}."), v));
            }
        }
        serde_json::Value::Bool(b) => out.push((
            prefix.to_string(),
            format!("Engine flag {prefix} (1 = true)."),
            f64::from(u8::from(*b)),
        )),
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                let key: String = k
                    .chars()
                    .map(|c| {
                        if c.is_ascii_alphanumeric() {
                            c.to_ascii_lowercase()
                        } else {
                            '_'
                        }
                    })
                    .collect();
                flatten(&format!("{prefix}_{key}"), v, out);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counts_histograms_and_rates() {
        let m = Metrics::default();
        m.observe_request("/v1/triage", "POST", 200, Duration::from_millis(30));
        m.observe_request("/v1/triage", "POST", 200, Duration::from_millis(300));
        m.observe_decision("deflect", "answer");
        m.observe_decision("deflect", "handoff");
        m.observe_decision("deflect", "handoff");
        m.observe_decision("category", "abstain");
        let text = m.render(&stats_gauges(
            &serde_json::json!({"tickets": 12, "nested": {"Docs-On": 3}}),
        ));
        assert!(text.contains(
            "triage_http_requests_total{route=\"/v1/triage\",method=\"POST\",status=\"200\"} 2"
        ));
        assert!(text.contains(
            "triage_http_request_duration_seconds_bucket{route=\"/v1/triage\",le=\"0.05\"} 1"
        ));
        assert!(text.contains(
            "triage_http_request_duration_seconds_bucket{route=\"/v1/triage\",le=\"0.5\"} 2"
        ));
        assert!(text.contains("triage_deflection_rate 0.3333"));
        assert!(text.contains("triage_abstention_rate 1\n"));
        assert!(text.contains("triage_index_tickets 12\n"));
        assert!(text.contains("triage_index_nested_docs_on 3\n"));
    }
}
