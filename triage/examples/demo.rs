//! Smoke run of the engine on the demo pack with the real model: a few
//! decisions printed as JSON lines, then warm latencies of `triage` and `deflect`.
//!
//! ```text
//! cargo run --release -p triage --example demo [-- PACK_DIR]
//! ```
//! Uses a fresh temporary data directory, so the first start ingests the pack.

use std::sync::Arc;
use std::time::Instant;

use models::{default_cache_dir, Embedder, EmbedderOptions, ModelSource};
use triage::api::{ChatMessage, Feedback, TicketRequest};
use triage::engine::{Engine, EngineConfig};

fn request(body: &str) -> TicketRequest {
    TicketRequest {
        body: body.into(),
        ..TicketRequest::default()
    }
}

fn chat(text: &str) -> ChatMessage {
    ChatMessage {
        text: text.into(),
        ..ChatMessage::default()
    }
}

/// Median and 99th percentile of `ms`, in milliseconds.
fn p50_p99(mut ms: Vec<f64>) -> (f64, f64) {
    ms.sort_by(f64::total_cmp);
    let at = |q: f64| ms[((ms.len() - 1) as f64 * q).round() as usize];
    (at(0.5), at(0.99))
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let pack = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "fixtures/demo-pack".into());
    let data = tempfile::tempdir()?;
    let model = Embedder::load_source(
        &ModelSource::from_env_or(None, None),
        &default_cache_dir(),
        EmbedderOptions::default(),
    )?;
    let t0 = Instant::now();
    let engine = Engine::open(
        EngineConfig {
            pack_dir: pack.into(),
            data_dir: data.path().to_path_buf(),
        },
        Arc::new(model),
    )?;
    println!(
        "{}",
        serde_json::json!({"open_seconds": t0.elapsed().as_secs_f32(), "stats": engine.stats()})
    );
    let show = |name: &str, r: &triage::api::TriageResult| {
        println!(
            "{}",
            serde_json::json!({
                "case": name,
                "category": r.category.label, "category_confidence": r.category.confidence,
                "priority": r.priority.label, "queue": r.queue.label, "needs_human": r.needs_human,
                "fields": r.fields.iter().map(|f| format!("{}={} ({})", f.name, f.value, f.source)).collect::<Vec<_>>(),
                "reasons": r.category.reasons,
            })
        );
    };
    let urgent = "机房服务器宕机了，整个系统停机，急需处理";
    show("urgent", &engine.triage(&request(urgent))?);
    let prefill = "空调不制冷，订单号JD202403150001，电话13812345678，麻烦尽快上门";
    show("prefill", &engine.triage(&request(prefill))?);
    show(
        "unrelated",
        &engine.triage(&request("请问明天的足球比赛几点开始直播"))?,
    );
    for text in [
        "空调不制冷怎么办？",
        "空调不制冷怎么办",
        "空调吹的不是冷风怎么办",
        "my fridge is not cold enough",
        "推荐一部好看的科幻电影",
    ] {
        let d = engine.deflect(&chat(text))?;
        println!(
            "{}",
            serde_json::json!({"case": "deflect", "text": text, "action": d.action, "confidence": d.confidence,
                "candidates": d.candidates.iter().map(|c| c.article.id.clone()).collect::<Vec<_>>()})
        );
    }
    let before = engine.triage(&request(prefill))?.category.label;
    engine.feedback(Feedback {
        ticket_id: "DEMO-FB-1".into(),
        body: prefill.into(),
        category: Some("complaint.service".into()),
        ..Feedback::default()
    })?;
    let after = engine.triage(&request(prefill))?.category.label;
    println!(
        "{}",
        serde_json::json!({"case": "feedback", "before": before, "after": after})
    );

    let texts = [
        "洗衣机脱水的时候声音特别大",
        "The TV shows error code E3 and turns off",
        "发票抬头开错了，想重新开",
        "冰箱漏水，地上都是水",
    ];
    let mut tri = Vec::new();
    let mut defl = Vec::new();
    for i in 0..40 {
        let t = texts[i % texts.len()];
        let s = Instant::now();
        engine.triage(&request(t))?;
        tri.push(s.elapsed().as_secs_f64() * 1000.0);
        let s = Instant::now();
        engine.deflect(&chat(t))?;
        defl.push(s.elapsed().as_secs_f64() * 1000.0);
    }
    let (t50, t99) = p50_p99(tri);
    let (d50, d99) = p50_p99(defl);
    println!(
        "{}",
        serde_json::json!({"triage_ms_p50": t50, "triage_ms_p99": t99, "deflect_ms_p50": d50, "deflect_ms_p99": d99})
    );
    Ok(())
}

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
