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
use triage::{Engine, EngineConfig};

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
        EngineConfig::new(pack.into(), data.path().to_path_buf()),
        Arc::new(model),
    )?;
    println!(
        "{}",
        serde_json::json!({"open_seconds": t0.elapsed().as_secs_f32(), "stats": engine.stats(None)})
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
    // Held-out requests (not in the pack's files): unrelated ones should reach a
    // human, in-scope ones their category.
    let unrelated = [
        "下周六的马拉松在哪里报名",
        "帮我推荐一家好吃的川菜馆",
        "这个月的电费为什么这么高，是电网公司的账单",
        "我想学游泳，报什么班好",
        "孩子的英语作业不会做",
        "请问去机场的地铁几点停运",
        "医保卡丢了怎么补办",
        "今年的中秋节放几天假",
        "帮我写一段年会主持词",
        "有没有适合新手的吉他曲",
        "Can you recommend a hiking trail for the weekend?",
        "What's a good recipe for banana bread?",
        "How do I apply for a student visa?",
        "Which stocks should I buy this year?",
        "My internet provider keeps overcharging me",
        "Tell me something interesting about space",
        "How do I train my puppy to sit?",
        "Where can I watch the Olympics live?",
        "What's the best way to learn piano as an adult?",
        "Help me plan a trip to Japan",
    ];
    let in_scope = [
        ("空调开了半天一点都不凉快", "repair.not_cooling"),
        ("热水器洗澡洗到一半变冷水了", "repair.not_heating"),
        ("洗衣机底下一直在渗水", "repair.water_leak"),
        ("电视按了遥控器也开不了机，指示灯不亮", "repair.no_power"),
        ("冰箱晚上嗡嗡响，吵得睡不着", "repair.noise"),
        ("洗衣机屏幕上显示E4然后停了", "repair.error_code"),
        ("新买的空调什么时候能上门安装", "install.new"),
        ("搬家了，空调需要拆下来装到新房子", "install.relocation"),
        ("我的快递三天了还没发货", "order.delivery_status"),
        ("收到的冰箱门上有个大坑，运输压坏了", "order.damaged"),
        ("下单地址写错了，想改一下收货地址", "order.change"),
        ("退货已经寄回去一周了，钱还没退给我", "billing.refund"),
        ("需要开一张公司抬头的增值税专用发票", "billing.invoice"),
        (
            "The AC is running but the air is warm",
            "repair.not_cooling",
        ),
        (
            "My washing machine leaks water from the bottom",
            "repair.water_leak",
        ),
        (
            "Where is my order? It has not shipped yet",
            "order.delivery_status",
        ),
        ("I was charged twice and need a refund", "billing.refund"),
        (
            "The app cannot find my air conditioner on Wi-Fi",
            "tech.app_connect",
        ),
        ("插座那边冒火花还有焦味", "safety.hazard"),
        (
            "修了三次还是同样的毛病，太失望了",
            "complaint.repeat_failure",
        ),
    ];
    let mut to_human = 0;
    for text in unrelated {
        let r = engine.triage(&request(text))?;
        to_human += usize::from(r.category.label.is_none());
    }
    let (mut decided, mut right) = (0, 0);
    for (text, want) in in_scope {
        let r = engine.triage(&request(text))?;
        if r.category.label.as_deref() != Some(want) {
            eprintln!(
                "held-out miss: {text} → {:?} {:?}",
                r.category.label, r.category.reasons
            );
        }
        if let Some(l) = r.category.label.as_deref() {
            decided += 1;
            right += usize::from(l == want);
        }
    }
    println!(
        "{}",
        serde_json::json!({"case": "held_out", "unrelated": unrelated.len(), "unrelated_to_human": to_human,
            "in_scope": in_scope.len(), "in_scope_decided": decided, "in_scope_decided_right": right})
    );

    // The same held-out requests typed into the self-service chat, plus questions
    // that look like an article's but are not this service's.
    let look_alikes = [
        "How do I cancel my gym membership?",
        "Can I get a refund for my concert ticket?",
        "手机话费套餐怎么退订",
        "信用卡账单可以分期吗",
        "医院的体检报告怎么打印",
    ];
    let chat_count = |texts: &mut dyn Iterator<Item = &str>| -> Result<[usize; 3], triage::Error> {
        let mut n = [0; 3];
        for text in texts {
            let d = engine.deflect(&chat(text))?;
            n[match d.action {
                triage::api::DeflectAction::Answer => 0,
                triage::api::DeflectAction::Clarify => 1,
                triage::api::DeflectAction::Handoff => 2,
            }] += 1;
        }
        Ok(n)
    };
    let [_, _, unrelated_handoff] = chat_count(&mut unrelated.iter().chain(&look_alikes).copied())?;
    let [answer, clarify, handoff] = chat_count(&mut in_scope.iter().map(|(t, _)| *t))?;
    println!(
        "{}",
        serde_json::json!({"case": "held_out_chat", "unrelated": unrelated.len() + look_alikes.len(),
            "unrelated_handed_off": unrelated_handoff, "in_scope": in_scope.len(),
            "in_scope_answer": answer, "in_scope_clarify": clarify, "in_scope_handoff": handoff})
    );

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
