//! A tiny bilingual pack written into a temporary directory, for engine tests.

use std::path::Path;

use serde_json::json;

const PACK_TOML: &str = r#"
[pack]
name = "test-appliances"
default_language = "zh"

[thresholds]
classify_abstain = 0.55
deflect_answer = 0.80
deflect_clarify = 0.45
duplicate_similarity = 0.92
duplicate_window_days = 14

[[queues]]
id = "repair"
name = "Repair"

[[queues]]
id = "billing"
name = "Billing"

[[categories]]
id = "repair"
name = "Repair"

[[categories]]
id = "repair.no_power"
parent = "repair"
queue = "repair"

[[categories]]
id = "repair.not_cooling"
parent = "repair"
queue = "repair"

[[categories]]
id = "repair.leak"
parent = "repair"
queue = "repair"

[[categories]]
id = "billing"
name = "Billing"

[[categories]]
id = "billing.refund"
parent = "billing"
queue = "billing"

[[categories]]
id = "billing.invoice"
parent = "billing"
queue = "billing"

[[priorities]]
id = "P0"
[[priorities]]
id = "P1"
[[priorities]]
id = "P2"
[[priorities]]
id = "P3"

[lexicon]
P0 = ["停机", "漏电", "冒烟", "outage"]

[[fields]]
name = "product"
description = "Product line"
infer = true
"#;

/// `(category, priority, resolution, templates)`; `{d}` is a device, `{o}` an order number.
const CATEGORIES: &[(&str, &str, &str, &[&str])] = &[
    (
        "repair.no_power",
        "P2",
        "上门检修，更换电源板后恢复。",
        &[
            "{d}开不了机，按电源键没反应",
            "{d} won't turn on, no power light at all",
            "{d}通电后完全没反应，指示灯不亮",
        ],
    ),
    (
        "repair.not_cooling",
        "P2",
        "补充制冷剂并清洗冷凝器后恢复制冷。",
        &[
            "{d}不制冷，吹出来的是热风",
            "{d} is not cooling, blowing warm air",
            "{d}制冷效果很差，温度降不下来",
        ],
    ),
    (
        "repair.leak",
        "P1",
        "更换排水管密封圈，漏水问题解决。",
        &[
            "{d}漏水，地上都是水",
            "{d} is leaking water on the floor",
            "{d}底部一直滴水漏水",
        ],
    ),
    (
        "billing.refund",
        "P3",
        "已按原路退款，预计3个工作日到账。",
        &[
            "申请退款，订单{o}已经退货",
            "I want a refund for order {o}",
            "退货后退款一直没到账，订单{o}",
        ],
    ),
    (
        "billing.invoice",
        "P3",
        "电子发票已重新开具并发送到邮箱。",
        &[
            "需要开增值税发票，订单{o}",
            "please send me the invoice for order {o}",
            "发票抬头开错了要重开，订单{o}",
        ],
    ),
];

const DEVICES: &[(&str, &str)] = &[
    ("空调", "air_conditioner"),
    ("冰箱", "fridge"),
    ("洗衣机", "washer"),
];

/// Writes the test pack (config, 45 tickets, 4 articles) into `dir`.
pub fn write_pack(dir: &Path) {
    std::fs::write(dir.join("pack.toml"), PACK_TOML).unwrap();
    let mut tickets = Vec::new();
    for (c, (category, priority, resolution, templates)) in CATEGORIES.iter().enumerate() {
        for (t, template) in templates.iter().enumerate() {
            for (d, (device, product)) in DEVICES.iter().enumerate() {
                let n = c * 100 + t * 10 + d;
                let body = template
                    .replace("{d}", device)
                    .replace("{o}", &format!("JD2026{n:06}"));
                tickets.push(json!({
                    "id": format!("T-{n:04}"),
                    "title": "",
                    "body": body,
                    "category": category,
                    "priority": priority,
                    "queue": category.split('.').next().unwrap(),
                    "status": "resolved",
                    "fields": {"product": product},
                    "resolution": resolution,
                    "customer_id": format!("C{n}"),
                    "channel": "phone",
                    "created_at": "2025-01-01T08:00:00Z",
                }));
            }
        }
    }
    let articles = [
        json!({"id": "kb-cool", "question": "空调不制冷怎么办？", "answer": "请先检查滤网并设置制冷模式。", "alt_questions": ["AC not cooling"], "category": "repair.not_cooling"}),
        json!({"id": "kb-refund", "question": "如何申请退款？", "answer": "在订单页点击申请退款。", "alt_questions": ["how do I get a refund"], "category": "billing.refund"}),
        json!({"id": "kb-invoice", "question": "怎么开发票？", "answer": "在订单详情页申请电子发票。", "alt_questions": ["how to get an invoice"], "category": "billing.invoice"}),
        json!({"id": "kb-leak", "question": "洗衣机漏水怎么办？", "answer": "检查排水管是否松动。", "alt_questions": [], "category": "repair.leak"}),
    ];
    let lines = |rows: &[serde_json::Value]| {
        rows.iter()
            .map(|r| r.to_string())
            .collect::<Vec<_>>()
            .join("\n")
            + "\n"
    };
    std::fs::write(dir.join("tickets.jsonl"), lines(&tickets)).unwrap();
    std::fs::write(dir.join("articles.jsonl"), lines(&articles)).unwrap();
}
