//! A small, bounded HTTP load generator for `triage serve`.
//!
//! For each concurrency level it runs that many client threads against one
//! route for a fixed time (or request count), then prints throughput, latency
//! percentiles and errors by status; with `--pid` it samples the server's
//! resident memory once a second. One JSON line per level goes to stdout.
//!
//! ```text
//! cargo run -p e2e --example loadgen -- --url http://127.0.0.1:8080 \
//!     --route deflect --concurrency 1,8,32 --seconds 20 --pid $(pgrep -n triage)
//! ```

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;

/// Bilingual requests in the demo pack's domain, cycled through.
const TEXTS: &[&str] = &[
    "空调不制冷怎么办？",
    "洗衣机脱水的时候漏水",
    "My fridge is making a loud buzzing noise",
    "订单 JD20240315001 什么时候发货",
    "热水器显示E4故障码",
    "How do I get a refund for a returned TV?",
    "扫地机器人找不到充电座",
    "电视开机后黑屏但有声音",
    "The app cannot connect my air conditioner to Wi-Fi",
    "冰箱冷藏室结冰了",
    "I want to change my delivery address",
    "耳机左边没有声音",
];

struct Args {
    url: String,
    route: String,
    levels: Vec<usize>,
    seconds: u64,
    max_requests: usize,
    key: Option<String>,
    pid: Option<u32>,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        url: "http://127.0.0.1:8080".into(),
        route: "triage".into(),
        levels: vec![1, 8, 32],
        seconds: 20,
        max_requests: 100_000,
        key: None,
        pid: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--url" => a.url = value()?,
            "--route" => a.route = value()?,
            "--concurrency" => {
                a.levels = value()?
                    .split(',')
                    .map(|v| v.trim().parse().map_err(|e| format!("--concurrency: {e}")))
                    .collect::<Result<_, _>>()?
            }
            "--seconds" => a.seconds = value()?.parse().map_err(|e| format!("--seconds: {e}"))?,
            "--max-requests" => {
                a.max_requests = value()?.parse().map_err(|e| format!("--max-requests: {e}"))?
            }
            "--key" => a.key = Some(value()?),
            "--pid" => a.pid = Some(value()?.parse().map_err(|e| format!("--pid: {e}"))?),
            "-h" | "--help" => {
                return Err("usage: loadgen [--url URL] [--route triage|deflect|suggest|search] \
                     [--concurrency 1,8,32] [--seconds 20] [--max-requests N] [--key KEY] [--pid PID]"
                    .into())
            }
            other => return Err(format!("unknown flag {other}")),
        }
    }
    if !["triage", "deflect", "suggest", "search"].contains(&a.route.as_str()) {
        return Err(format!("unknown route {}", a.route));
    }
    Ok(a)
}

fn body(route: &str, i: usize) -> String {
    let text = TEXTS[i % TEXTS.len()];
    match route {
        "deflect" => json!({"text": text, "session_id": format!("load-{}", i % 50)}),
        "search" => json!({"text": text, "k": 10}),
        _ => json!({"title": "", "body": text, "channel": "web"}),
    }
    .to_string()
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn run_level(a: &Args, concurrency: usize) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .max_idle_connections_per_host(concurrency.max(1) * 2)
        .build()
        .into();
    let url = format!("{}/v1/{}", a.url.trim_end_matches('/'), a.route);
    let deadline = Instant::now() + Duration::from_secs(a.seconds);
    let issued = Arc::new(AtomicUsize::new(0));
    let latencies = Arc::new(Mutex::new(Vec::<f64>::new()));
    let errors = Arc::new(Mutex::new(
        std::collections::BTreeMap::<String, usize>::new(),
    ));
    let stop = Arc::new(AtomicBool::new(false));
    let rss = Arc::new(Mutex::new(Vec::<u64>::new()));
    let sampler = a.pid.map(|pid| {
        let (rss, stop) = (Arc::clone(&rss), Arc::clone(&stop));
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                if let Some(v) = rss_kib(pid) {
                    rss.lock().map(|mut r| r.push(v)).ok();
                }
                std::thread::sleep(Duration::from_secs(1));
            }
        })
    });
    let started = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (agent, url, issued, latencies, errors) = (
                agent.clone(),
                url.clone(),
                Arc::clone(&issued),
                Arc::clone(&latencies),
                Arc::clone(&errors),
            );
            let (route, key, max) = (a.route.clone(), a.key.clone(), a.max_requests);
            std::thread::spawn(move || {
                let mut mine = Vec::new();
                loop {
                    let i = issued.fetch_add(1, Ordering::SeqCst);
                    if i >= max || Instant::now() >= deadline {
                        break;
                    }
                    let mut req = agent.post(&url).header("content-type", "application/json");
                    if let Some(k) = &key {
                        req = req.header("authorization", &format!("Bearer {k}"));
                    }
                    let t = Instant::now();
                    let outcome = req.send(body(&route, i)).and_then(|mut r| {
                        let status = r.status().as_u16();
                        r.body_mut().read_to_string().map(|_| status)
                    });
                    let ms = t.elapsed().as_secs_f64() * 1000.0;
                    match outcome {
                        Ok(200) => mine.push(ms),
                        Ok(code) => {
                            *errors
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .entry(code.to_string())
                                .or_default() += 1
                        }
                        Err(e) => {
                            *errors
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .entry(format!("transport: {e}"))
                                .or_default() += 1
                        }
                    }
                }
                latencies
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .extend(mine);
            })
        })
        .collect();
    for w in workers {
        let _ = w.join();
    }
    let elapsed = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::SeqCst);
    if let Some(s) = sampler {
        let _ = s.join();
    }
    let mut lat = latencies.lock().unwrap_or_else(|p| p.into_inner()).clone();
    lat.sort_by(|x, y| x.total_cmp(y));
    let errors = errors.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let error_count: usize = errors.values().sum();
    let rss = rss.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let (rss_first, rss_max, rss_last) = (
        rss.first().copied().unwrap_or(0),
        rss.iter().copied().max().unwrap_or(0),
        rss.last().copied().unwrap_or(0),
    );
    let line = json!({
        "route": format!("/v1/{}", a.route),
        "concurrency": concurrency,
        "seconds": elapsed,
        "ok": lat.len(),
        "errors": error_count,
        "errors_by_status": errors,
        "throughput_rps": lat.len() as f64 / elapsed,
        "p50_ms": percentile(&lat, 50.0),
        "p90_ms": percentile(&lat, 90.0),
        "p99_ms": percentile(&lat, 99.0),
        "max_ms": lat.last().copied().unwrap_or(0.0),
        "rss_kib_first": rss_first,
        "rss_kib_max": rss_max,
        "rss_kib_last": rss_last,
        "rss_kib_every_30s": rss.iter().step_by(30).collect::<Vec<_>>(),
    });
    eprintln!(
        "/v1/{:<8} c={:<3} {:>7.1} req/s  p50 {:>7.1} ms  p99 {:>7.1} ms  ok {:>6}  errors {}  rss {}→{} KiB (max {})",
        a.route,
        concurrency,
        lat.len() as f64 / elapsed,
        percentile(&lat, 50.0),
        percentile(&lat, 99.0),
        lat.len(),
        error_count,
        rss_first,
        rss_last,
        rss_max
    );
    println!("{line}");
}

fn main() -> std::process::ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return std::process::ExitCode::from(2);
        }
    };
    for &c in &args.levels {
        run_level(&args, c.max(1));
    }
    std::process::ExitCode::SUCCESS
}
