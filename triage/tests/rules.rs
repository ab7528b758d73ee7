//! Rule-based parts of triage: pack loading and validation, field extraction,
//! and the urgency lexicon on top of a model's priority decision.

use std::fs;
use std::path::{Path, PathBuf};

use triage::api::{FieldValue, LabelDecision, ScoredLabel};
use triage::Error;
use triage::FieldExtractor;
use triage::PriorityRules;
use triage::{FieldSpec, Pack};

// ------------------------------------------------------------------ helpers

/// A small, valid pack.toml; tests break one thing at a time with `replace`.
const PACK_TOML: &str = r#"[pack]
name = "test-pack"
description = "A pack for tests"
default_language = "zh"

[thresholds]
classify_abstain = 0.5
deflect_answer = 0.8
deflect_clarify = 0.4

[[queues]]
id = "repair"
name = "Field repair"

[[queues]]
id = "billing"
name = "Billing"

[[categories]]
id = "repair"
name = "Repair"
queue = "repair"

[[categories]]
id = "repair.no_power"
parent = "repair"
name = "No power"
description = "Device does not turn on."
default_priority = "P2"

[[categories]]
id = "billing"
name = "Billing"

[[categories]]
id = "billing.refund"
parent = "billing"
name = "Refund"
queue = "billing"

[[priorities]]
id = "P0"
name = "Critical"
response_hours = 1

[[priorities]]
id = "P1"
name = "High"
response_hours = 4.5

[[priorities]]
id = "P2"
name = "Normal"

[[priorities]]
id = "P3"
name = "Low"

[lexicon]
P0 = ["漏电", "冒烟", "停机", "宕机", "server is down", "outage"]
P1 = ["无法使用", "urgent"]
P2 = ["有点慢"]

[[fields]]
name = "ticket_ref"
pattern = "REF-(\\d{4})"
description = "Internal reference"

[[fields]]
name = "product"
description = "Product line"
infer = true
"#;

const ARTICLES: &str = r#"{"id": "kb-1", "question": "空调不通电怎么办？", "answer": "检查电源。", "category": "repair.no_power"}
{"id": "kb-2", "question": "How do I get a refund?", "answer": "Open the order page.", "category": "billing"}
"#;

const TICKETS: &str = r#"{"id": "T-1", "title": "不开机", "body": "空调按电源没反应", "category": "repair.no_power", "priority": "P2", "queue": "repair", "created_at": "2026-03-01T08:30:00Z"}

{"id": "T-2", "title": "refund", "body": "I want my money back", "category": "billing.refund", "priority": "P3", "fields": {"order_no": "JD1234567890"}}
"#;

fn write_pack(toml: &str, articles: &str, tickets: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("pack.toml"), toml).unwrap();
    fs::write(dir.path().join("articles.jsonl"), articles).unwrap();
    fs::write(dir.path().join("tickets.jsonl"), tickets).unwrap();
    dir
}

/// Loads a pack expected to be invalid and returns (file name, line, key, message).
fn load_err(toml: &str, articles: &str, tickets: &str) -> (String, usize, String, String) {
    let dir = write_pack(toml, articles, tickets);
    match Pack::load(dir.path()) {
        Ok(_) => panic!("pack should be rejected"),
        Err(Error::Pack {
            file,
            line,
            key,
            message,
        }) => {
            assert!(file.starts_with(dir.path()), "{file:?}");
            let name = file.file_name().unwrap().to_string_lossy().into_owned();
            (name, line, key, message)
        }
        Err(other) => panic!("expected Error::Pack, got {other}"),
    }
}

/// 1-based line of the first occurrence of `needle` in `text`.
fn line_of(text: &str, needle: &str) -> usize {
    let at = text
        .find(needle)
        .unwrap_or_else(|| panic!("{needle} not in text"));
    text[..at].matches('\n').count() + 1
}

fn replace(text: &str, from: &str, to: &str) -> String {
    assert!(text.contains(from), "{from} not in text");
    text.replacen(from, to, 1)
}

fn demo_pack_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/demo-pack")
}

fn fields(text: &str) -> Vec<FieldValue> {
    FieldExtractor::new(&[]).unwrap().extract(text)
}

/// Values of one field name, in text order.
fn values(text: &str, name: &str) -> Vec<String> {
    fields(text)
        .into_iter()
        .filter(|f| f.name == name)
        .map(|f| f.value)
        .collect()
}

fn decision(label: Option<&str>, confidence: f32, abstain: bool) -> LabelDecision {
    let mut alternatives: Vec<ScoredLabel> = Vec::new();
    if let Some(l) = label {
        alternatives.push(ScoredLabel {
            label: l.to_string(),
            probability: confidence,
        });
    }
    for other in ["P0", "P1", "P2", "P3"] {
        if Some(other) != label {
            alternatives.push(ScoredLabel {
                label: other.to_string(),
                probability: (1.0 - confidence) / 3.0,
            });
        }
    }
    LabelDecision {
        label: label.map(str::to_string),
        confidence,
        abstain,
        alternatives,
        reasons: vec!["knn: 7/10 neighbours".to_string()],
    }
}

fn rules() -> PriorityRules {
    let dir = write_pack(PACK_TOML, ARTICLES, TICKETS);
    PriorityRules::new(&Pack::load(dir.path()).unwrap())
}

// ------------------------------------------------------------------ pack loading

#[test]
fn valid_pack_loads_with_structure() {
    let dir = write_pack(PACK_TOML, ARTICLES, TICKETS);
    let pack = Pack::load(dir.path()).unwrap();
    assert_eq!(pack.name, "test-pack");
    assert_eq!(pack.dir, dir.path());
    assert_eq!(pack.thresholds.classify_abstain, 0.5);
    assert_eq!(pack.thresholds.deflect_clarify, 0.4);
    // absent thresholds take their defaults
    assert_eq!(pack.thresholds.duplicate_window_days, 14);
    assert_eq!(pack.thresholds.duplicate_similarity, 0.92);
    let ids: Vec<&str> = pack.priorities.iter().map(|p| p.id.as_str()).collect();
    assert_eq!(ids, ["P0", "P1", "P2", "P3"]);
    assert_eq!(pack.priorities[0].response_hours, Some(1.0)); // integer in TOML
    assert_eq!(pack.priorities[1].response_hours, Some(4.5));
    let leaves: Vec<&str> = pack
        .leaf_categories()
        .iter()
        .map(|c| c.id.as_str())
        .collect();
    assert_eq!(leaves, ["repair.no_power", "billing.refund"]);
    assert_eq!(pack.category("billing").unwrap().name, "Billing");
    assert!(pack.category("nope").is_none());
    // leaf inherits its parent's queue; own queue wins
    assert_eq!(pack.queue_for("repair.no_power"), Some("repair"));
    assert_eq!(pack.queue_for("billing.refund"), Some("billing"));
    assert_eq!(pack.queue_for("unknown"), None);
    assert_eq!(pack.lexicon["P0"].len(), 6);
    assert_eq!(pack.fields.len(), 2);
    assert_eq!(pack.fields[1].pattern, None);
    assert!(pack.fields[1].infer);
    assert_eq!(pack.articles.len(), 2);
    assert_eq!(pack.tickets.len(), 2); // blank line skipped
    assert_eq!(pack.tickets[1].fields["order_no"], "JD1234567890");
}

#[test]
fn byte_order_marks_are_accepted() {
    let dir = write_pack(
        &format!("\u{feff}{PACK_TOML}"),
        &format!("\u{feff}{ARTICLES}"),
        TICKETS,
    );
    let pack = Pack::load(dir.path()).unwrap();
    assert_eq!((pack.name.as_str(), pack.articles.len()), ("test-pack", 2));
}

#[test]
fn non_utf8_file_is_a_clear_error() {
    let dir = write_pack(PACK_TOML, ARTICLES, TICKETS);
    fs::write(dir.path().join("tickets.jsonl"), b"{\"id\": \"\xff\"}\n").unwrap();
    match Pack::load(dir.path()) {
        Err(Error::Io { path, .. }) => assert!(path.ends_with("tickets.jsonl")),
        other => panic!("expected Io error, got {other:?}"),
    }
}

#[test]
fn missing_jsonl_files_mean_empty_history() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("pack.toml"), PACK_TOML).unwrap();
    let pack = Pack::load(dir.path()).unwrap();
    assert!(pack.articles.is_empty() && pack.tickets.is_empty());
}

#[test]
fn missing_pack_toml_is_an_io_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    match Pack::load(dir.path()) {
        Err(Error::Io { path, .. }) => assert!(path.ends_with("pack.toml")),
        other => panic!("expected Io error, got {other:?}"),
    }
}

#[test]
fn toml_syntax_error_names_line_and_key() {
    let toml = replace(PACK_TOML, "deflect_answer = 0.8", "deflect_answer = 0.8.1");
    let (file, line, key, _) = load_err(&toml, ARTICLES, TICKETS);
    assert_eq!(file, "pack.toml");
    assert_eq!(line, line_of(&toml, "deflect_answer"));
    assert_eq!(key, "thresholds.deflect_answer");
}

#[test]
fn unknown_key_is_reported_with_its_line() {
    let toml = replace(
        PACK_TOML,
        "default_priority = \"P2\"",
        "default_prority = \"P2\"",
    );
    let (_, line, key, message) = load_err(&toml, ARTICLES, TICKETS);
    assert_eq!(line, line_of(&toml, "default_prority"));
    assert!(key.ends_with("default_prority"), "{key}");
    assert!(message.contains("unknown field"), "{message}");
}

#[test]
fn unknown_parent_is_rejected() {
    let toml = replace(PACK_TOML, "parent = \"billing\"", "parent = \"biling\"");
    let (file, line, key, message) = load_err(&toml, ARTICLES, TICKETS);
    assert_eq!(file, "pack.toml");
    assert_eq!(line, line_of(&toml, "parent = \"biling\""));
    assert_eq!(key, "categories.parent");
    assert!(message.contains("biling"), "{message}");
}

#[test]
fn three_level_taxonomy_is_rejected() {
    let toml = format!(
        "{PACK_TOML}\n[[categories]]\nid = \"repair.no_power.x\"\nparent = \"repair.no_power\"\nqueue = \"repair\"\n"
    );
    let (_, line, key, message) = load_err(&toml, ARTICLES, TICKETS);
    assert_eq!(line, line_of(&toml, "parent = \"repair.no_power\""));
    assert_eq!(key, "categories.parent");
    assert!(message.contains("two levels"), "{message}");
}

#[test]
fn duplicate_category_id_is_rejected() {
    let toml = replace(
        PACK_TOML,
        "id = \"billing.refund\"",
        "id = \"repair.no_power\"",
    );
    let (_, line, key, message) = load_err(&toml, ARTICLES, TICKETS);
    // the second occurrence is the one reported
    let second = toml.rfind("id = \"repair.no_power\"").unwrap();
    assert_eq!(line, toml[..second].matches('\n').count() + 1);
    assert_eq!(key, "categories.id");
    assert!(message.contains("duplicate"), "{message}");
}

#[test]
fn duplicate_queue_id_is_rejected() {
    let toml = replace(
        PACK_TOML,
        "id = \"billing\"\nname = \"Billing\"\n\n[[categories]]",
        "id = \"repair\"\nname = \"Billing\"\n\n[[categories]]",
    );
    let (_, line, key, _) = load_err(&toml, ARTICLES, TICKETS);
    assert_eq!(key, "queues.id");
    let second = toml
        .find("[[queues]]\nid = \"repair\"\nname = \"Billing\"")
        .unwrap();
    assert_eq!(line, toml[..second].matches('\n').count() + 2);
}

#[test]
fn leaf_without_any_queue_is_rejected() {
    let toml = replace(
        PACK_TOML,
        "name = \"Repair\"\nqueue = \"repair\"",
        "name = \"Repair\"",
    );
    let (_, line, key, message) = load_err(&toml, ARTICLES, TICKETS);
    assert_eq!(line, line_of(&toml, "id = \"repair.no_power\""));
    assert_eq!(key, "categories.queue");
    assert!(message.contains("repair.no_power"), "{message}");
}

#[test]
fn unknown_queue_is_rejected() {
    let toml = replace(PACK_TOML, "queue = \"billing\"", "queue = \"bill\"");
    let (_, line, key, message) = load_err(&toml, ARTICLES, TICKETS);
    assert_eq!(line, line_of(&toml, "queue = \"bill\""));
    assert_eq!(key, "categories.queue");
    assert!(message.contains("bill"), "{message}");
}

#[test]
fn priorities_must_be_exactly_p0_to_p3() {
    let toml = replace(PACK_TOML, "id = \"P3\"", "id = \"P4\"");
    let (_, line, key, _) = load_err(&toml, ARTICLES, TICKETS);
    assert_eq!(line, line_of(&toml, "id = \"P4\""));
    assert_eq!(key, "priorities.id");

    let toml = replace(PACK_TOML, "id = \"P3\"", "id = \"P2\"");
    let (_, line, key, message) = load_err(&toml, ARTICLES, TICKETS);
    assert_eq!(key, "priorities.id");
    assert!(message.contains("duplicate"), "{message}");
    assert_eq!(line, line_of(&toml, "id = \"P2\"\nname = \"Low\""));

    let toml = replace(
        PACK_TOML,
        "[[priorities]]\nid = \"P3\"\nname = \"Low\"\n",
        "",
    );
    let (_, _, key, message) = load_err(&toml, ARTICLES, TICKETS);
    assert_eq!(key, "priorities");
    assert!(message.contains("missing P3"), "{message}");
}

#[test]
fn default_priority_must_be_a_level() {
    let toml = replace(
        PACK_TOML,
        "default_priority = \"P2\"",
        "default_priority = \"high\"",
    );
    let (_, line, key, _) = load_err(&toml, ARTICLES, TICKETS);
    assert_eq!(line, line_of(&toml, "default_priority"));
    assert_eq!(key, "categories.default_priority");
}

#[test]
fn lexicon_keys_must_be_levels_and_words_unique() {
    let toml = replace(PACK_TOML, "P2 = [\"有点慢\"]", "P5 = [\"有点慢\"]");
    let (_, line, key, _) = load_err(&toml, ARTICLES, TICKETS);
    assert_eq!(line, line_of(&toml, "P5 ="));
    assert_eq!(key, "lexicon.P5");

    let toml = replace(PACK_TOML, "P2 = [\"有点慢\"]", "P2 = [\"停机\"]");
    let (_, line, key, message) = load_err(&toml, ARTICLES, TICKETS);
    assert_eq!(line, line_of(&toml, "P2 = [\"停机\"]"));
    assert_eq!(key, "lexicon.P2");
    assert!(message.contains("P0"), "{message}");
}

#[test]
fn invalid_field_regex_names_the_field() {
    let toml = replace(PACK_TOML, "REF-(\\\\d{4})", "REF-(\\\\d{4}");
    let (_, line, key, message) = load_err(&toml, ARTICLES, TICKETS);
    assert_eq!(line, line_of(&toml, "pattern ="));
    assert_eq!(key, "fields.pattern");
    assert!(message.contains("ticket_ref"), "{message}");
}

#[test]
fn thresholds_are_checked() {
    let toml = replace(
        PACK_TOML,
        "classify_abstain = 0.5",
        "classify_abstain = 1.5",
    );
    let (_, line, key, message) = load_err(&toml, ARTICLES, TICKETS);
    assert_eq!(line, line_of(&toml, "classify_abstain"));
    assert_eq!(key, "thresholds.classify_abstain");
    assert!(message.contains("1.5"), "{message}");

    let toml = replace(PACK_TOML, "deflect_clarify = 0.4", "deflect_clarify = 0.9");
    let (_, line, key, _) = load_err(&toml, ARTICLES, TICKETS);
    assert_eq!(line, line_of(&toml, "deflect_clarify"));
    assert_eq!(key, "thresholds.deflect_clarify");
}

#[test]
fn bad_json_line_is_reported() {
    let articles = format!("{ARTICLES}{{\"id\": \"kb-3\", \"question\": \n");
    let (file, line, key, _) = load_err(PACK_TOML, &articles, TICKETS);
    assert_eq!(file, "articles.jsonl");
    assert_eq!(line, 3);
    assert_eq!(key, "json");
}

#[test]
fn wrong_type_names_the_key() {
    let tickets = replace(TICKETS, "\"priority\": \"P3\"", "\"priority\": 3");
    let (file, line, key, _) = load_err(PACK_TOML, ARTICLES, &tickets);
    assert_eq!(file, "tickets.jsonl");
    assert_eq!(line, 3);
    assert_eq!(key, "priority");
}

#[test]
fn missing_and_duplicate_ids_are_reported() {
    let tickets = replace(TICKETS, "\"id\": \"T-2\", ", "");
    let (_, line, key, _) = load_err(PACK_TOML, ARTICLES, &tickets);
    assert_eq!((line, key.as_str()), (3, "id"));

    let tickets = replace(TICKETS, "\"id\": \"T-2\"", "\"id\": \"T-1\"");
    let (_, line, key, message) = load_err(PACK_TOML, ARTICLES, &tickets);
    assert_eq!((line, key.as_str()), (3, "id"));
    assert!(message.contains("line 1"), "{message}");

    let articles = replace(ARTICLES, "\"kb-2\"", "\"kb-1\"");
    let (file, line, key, _) = load_err(PACK_TOML, &articles, TICKETS);
    assert_eq!(
        (file.as_str(), line, key.as_str()),
        ("articles.jsonl", 2, "id")
    );
}

#[test]
fn unknown_labels_in_jsonl_are_reported() {
    let tickets = replace(
        TICKETS,
        "\"category\": \"billing.refund\"",
        "\"category\": \"billing.refunds\"",
    );
    let (_, line, key, _) = load_err(PACK_TOML, ARTICLES, &tickets);
    assert_eq!((line, key.as_str()), (3, "category"));

    let tickets = replace(TICKETS, "\"priority\": \"P3\"", "\"priority\": \"urgent\"");
    let (_, line, key, _) = load_err(PACK_TOML, ARTICLES, &tickets);
    assert_eq!((line, key.as_str()), (3, "priority"));

    let tickets = replace(TICKETS, "\"queue\": \"repair\"", "\"queue\": \"repairs\"");
    let (_, line, key, _) = load_err(PACK_TOML, ARTICLES, &tickets);
    assert_eq!((line, key.as_str()), (1, "queue"));

    let tickets = replace(TICKETS, "2026-03-01T08:30:00Z", "yesterday");
    let (_, line, key, _) = load_err(PACK_TOML, ARTICLES, &tickets);
    assert_eq!((line, key.as_str()), (1, "created_at"));

    // tickets are labelled with leaves, not parents
    let tickets = replace(
        TICKETS,
        "\"category\": \"billing.refund\"",
        "\"category\": \"billing\"",
    );
    let (_, line, key, message) = load_err(PACK_TOML, ARTICLES, &tickets);
    assert_eq!((line, key.as_str()), (3, "category"));
    assert!(message.contains("leaf"), "{message}");

    let articles = replace(
        ARTICLES,
        "\"category\": \"billing\"",
        "\"category\": \"shipping\"",
    );
    let (file, line, key, _) = load_err(PACK_TOML, &articles, TICKETS);
    assert_eq!(
        (file.as_str(), line, key.as_str()),
        ("articles.jsonl", 2, "category")
    );
}

#[test]
fn error_message_displays_file_line_key() {
    let toml = replace(PACK_TOML, "queue = \"billing\"", "queue = \"bill\"");
    let dir = write_pack(&toml, ARTICLES, TICKETS);
    let text = Pack::load(dir.path()).unwrap_err().to_string();
    let expected = format!(
        "pack.toml:{}: categories.queue:",
        line_of(&toml, "queue = \"bill\"")
    );
    assert!(text.contains(&expected), "{text}");
}

#[test]
fn demo_pack_loads() {
    let dir = demo_pack_dir();
    let pack = Pack::load(&dir).unwrap();
    assert!(pack.leaf_categories().len() >= 15);
    for leaf in pack.leaf_categories() {
        assert!(
            pack.queue_for(&leaf.id).is_some(),
            "{} has no queue",
            leaf.id
        );
    }
    assert!(pack.lexicon.contains_key("P0"));
    FieldExtractor::new(&pack.fields).unwrap();
    let rules = PriorityRules::new(&pack);
    let urgent = rules.apply("机房服务器停机了", decision(Some("P3"), 0.97, false));
    assert_eq!(urgent.label.as_deref(), Some("P0"));
}

// ------------------------------------------------------------------ fields

#[test]
fn order_numbers_zh_en_and_plain_digits() {
    assert_eq!(
        values("您好，订单号 JD1234567890 还没发货", "order_no"),
        ["JD1234567890"]
    );
    assert_eq!(values("订单号：JD1234567890", "order_no"), ["JD1234567890"]);
    assert_eq!(
        values("My order #AB12345678 never arrived", "order_no"),
        ["AB12345678"]
    );
    assert_eq!(
        values("order number: 202403151234", "order_no"),
        ["202403151234"]
    );
    assert_eq!(
        values("单号是2024031512345678，麻烦查一下", "order_no"),
        ["2024031512345678"]
    );
    // no keyword: a long digit string alone is not an order number
    assert!(values("参考 2024031512345678", "order_no").is_empty());
    // "border" is not "order"
    assert!(values("the border 12345678", "order_no").is_empty());
}

#[test]
fn phones_cn_mobile_landline_and_international() {
    assert_eq!(values("电话13812345678", "phone"), ["13812345678"]);
    assert_eq!(
        values("call me at +86 138 1234 5678 please", "phone"),
        ["+86 138 1234 5678"]
    );
    assert_eq!(values("手机：138-1234-5678。", "phone"), ["138-1234-5678"]);
    assert_eq!(
        values("座机 010-62345678 转分机", "phone"),
        ["010-62345678"]
    );
    assert_eq!(values("office (0755) 2345678", "phone"), ["(0755) 2345678"]);
    assert_eq!(values("客服热线400-820-8820", "phone"), ["400-820-8820"]);
    assert_eq!(
        values("UK office: +44 20 7946 0958.", "phone"),
        ["+44 20 7946 0958"]
    );
    assert_eq!(values("US +1 415-555-0100", "phone"), ["+1 415-555-0100"]);
}

#[test]
fn phone_negatives() {
    // a phone-shaped run inside an order number is not a phone
    let found = fields("订单号 JD13812345678 没到");
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(
        (found[0].name.as_str(), found[0].value.as_str()),
        ("order_no", "JD13812345678")
    );
    // keyword-introduced order number wins over the phone pattern
    let found = fields("订单号13812345678");
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].name, "order_no");
    // too long: part of a longer digit run
    assert!(values("编号 1381234567890123", "phone").is_empty());
    // not a mobile prefix
    assert!(values("12812345678", "phone").is_empty());
    // dates and amounts are not landlines
    assert!(values("2026-03-01 付了 ¥1299", "phone").is_empty());
}

#[test]
fn emails_and_negatives() {
    assert_eq!(
        values("邮箱zhang.san@example.com.cn，谢谢", "email"),
        ["zhang.san@example.com.cn"]
    );
    assert_eq!(
        values("Mail: john+support@mail.co.uk.", "email"),
        ["john+support@mail.co.uk"]
    );
    assert!(values("a@b", "email").is_empty());
    assert!(values("ping me @john", "email").is_empty());
    // the phone-looking local part is not also a phone
    let found = fields("13812345678@qq.com");
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].name, "email");
}

#[test]
fn device_models_do_not_swallow_words() {
    assert_eq!(
        values("空调型号KFR-35GW/BpR3DN8的不制冷", "device_model"),
        ["KFR-35GW/BpR3DN8"]
    );
    assert_eq!(
        values("洗衣机型号是 XQG100-HBD14126L，显示E4", "device_model"),
        ["XQG100-HBD14126L"]
    );
    assert_eq!(
        values(
            "My headphones (model WH-1000XM5) stopped charging",
            "device_model"
        ),
        ["WH-1000XM5"]
    );
    assert_eq!(
        values("Model: WH-1000XM5 stopped charging.", "device_model"),
        ["WH-1000XM5"]
    );
    assert!(values("the model doesn't turn on", "device_model").is_empty());
    assert!(values("model 100 is fine", "device_model").is_empty());
}

#[test]
fn serial_numbers() {
    assert_eq!(
        values("序列号：SN20240315A001", "serial_no"),
        ["SN20240315A001"]
    );
    assert_eq!(
        values("S/N: 7H2K-99X1-0042 on the back", "serial_no"),
        ["7H2K-99X1-0042"]
    );
    assert_eq!(
        values("serial number is C02XK1ABJG5H", "serial_no"),
        ["C02XK1ABJG5H"]
    );
    assert_eq!(
        values("机身SN码 ABC123456789", "serial_no"),
        ["ABC123456789"]
    );
    assert_eq!(
        values("背面贴纸上 SN20240315A001 看不清", "serial_no"),
        ["SN20240315A001"]
    );
    // "SN" inside a word is not a keyword
    assert!(values("JSON 12345678", "serial_no").is_empty());
}

#[test]
fn error_codes() {
    assert_eq!(values("洗衣机显示E4，不排水", "error_code"), ["E4"]);
    assert_eq!(values("故障码F07", "error_code"), ["F07"]);
    assert_eq!(
        values("got error code E-101 after update", "error_code"),
        ["E-101"]
    );
    assert_eq!(
        values("Windows error 0x80070005", "error_code"),
        ["0x80070005"]
    );
    assert!(values("the error happened twice", "error_code").is_empty());
}

#[test]
fn amounts() {
    assert_eq!(values("付了¥299还没到", "amount"), ["¥299"]);
    assert_eq!(values("一共299元", "amount"), ["299元"]);
    assert_eq!(values("charged $19.99 twice", "amount"), ["$19.99"]);
    assert_eq!(values("退款 1,299.00 元", "amount"), ["1,299.00 元"]);
    assert!(values("买了3台", "amount").is_empty());
}

#[test]
fn dates() {
    assert_eq!(values("2026-03-01 下单", "date"), ["2026-03-01"]);
    assert_eq!(values("我2026年3月1日买的", "date"), ["2026年3月1日"]);
    assert_eq!(values("3月5号上门", "date"), ["3月5号"]);
    assert_eq!(
        values("delivered on March 5, 2026 broken", "date"),
        ["March 5, 2026"]
    );
    assert_eq!(values("on 5th March 2026", "date"), ["5th March 2026"]);
    assert!(values("2026-13-45", "date").is_empty());
    assert!(values("may 12 people come", "date").is_empty());
}

#[test]
fn mixed_request_spans_slice_exactly() {
    let text = "【急】订单号 JD2024031501，手机 +86 138 1234 5678，邮箱 li.lei@example.com；\
                型号 KFR-35GW/BpR3DN8 显示E4，3月5号付了¥2,999.00 — order #AB12345678";
    let found = fields(text);
    let names: Vec<&str> = found.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "order_no",
            "phone",
            "email",
            "device_model",
            "error_code",
            "date",
            "amount",
            "order_no"
        ]
    );
    let chars: Vec<char> = text.chars().collect();
    for f in &found {
        let (s, e) = f.span.unwrap();
        assert_eq!(&text[s..e], f.value, "byte span of {}", f.name);
        let (cs, ce) = f.char_span.unwrap();
        assert_eq!(
            chars[cs..ce].iter().collect::<String>(),
            f.value,
            "char span of {}",
            f.name
        );
        assert_eq!(f.source, "extracted");
        assert_eq!(f.confidence, 1.0);
    }
    // no two fields overlap
    for (i, a) in found.iter().enumerate() {
        for b in &found[i + 1..] {
            let (a0, a1) = a.span.unwrap();
            let (b0, b1) = b.span.unwrap();
            assert!(a1 <= b0 || b1 <= a0, "{a:?} overlaps {b:?}");
        }
    }
}

#[test]
fn pack_patterns_add_fields_and_win_overlaps() {
    let specs = vec![
        FieldSpec {
            name: "ticket_ref".into(),
            pattern: Some(r"REF-(\d{4})".into()),
            infer: false,
            ..FieldSpec::default()
        },
        FieldSpec {
            name: "member_id".into(),
            pattern: Some(r"VIP\d{11}".into()),
            infer: false,
            ..FieldSpec::default()
        },
        FieldSpec {
            name: "product".into(),
            pattern: None,
            infer: true,
            ..FieldSpec::default()
        },
    ];
    let ex = FieldExtractor::new(&specs).unwrap();
    let text = "see REF-0042 and VIP13812345678";
    let found = ex.extract(text);
    let got: Vec<(&str, &str)> = found
        .iter()
        .map(|f| (f.name.as_str(), f.value.as_str()))
        .collect();
    // group 1 is the value; the member id is not also a phone
    assert_eq!(
        got,
        [("ticket_ref", "0042"), ("member_id", "VIP13812345678")]
    );
    let (s, e) = found[0].span.unwrap();
    assert_eq!(&text[s..e], "0042");
    // still no match inside a longer token
    assert!(ex
        .extract("XREF-0042")
        .iter()
        .all(|f| f.name != "ticket_ref"));
}

#[test]
fn invalid_pattern_is_a_clear_error() {
    let spec = FieldSpec {
        name: "broken".into(),
        pattern: Some("(unclosed".into()),
        infer: false,
        ..FieldSpec::default()
    };
    let err = FieldExtractor::new(&[spec]).unwrap_err().to_string();
    assert!(err.contains("broken"), "{err}");
}

#[test]
fn odd_input_does_not_panic() {
    let ex = FieldExtractor::new(&[]).unwrap();
    for text in [
        "",
        " ",
        "订单号",
        "order #",
        "+",
        "¥",
        "😀📞13812345678😀",
        "型号：",
        "\u{0}\u{FEFF}",
    ] {
        for f in ex.extract(text) {
            let (s, e) = f.span.unwrap();
            assert_eq!(&text[s..e], f.value);
        }
    }
    assert_eq!(values("😀📞13812345678😀", "phone"), ["13812345678"]);
}

// ------------------------------------------------------------------ priority

#[test]
fn lexicon_p0_overrides_confident_model_p3() {
    let rules = rules();
    for text in [
        "机房服务器停机了",
        "系统宕机，全部用户受影响",
        "热水器漏电！",
    ] {
        let out = rules.apply(text, decision(Some("P3"), 0.97, false));
        assert_eq!(out.label.as_deref(), Some("P0"), "{text}");
        assert!(!out.abstain);
        assert!(out.confidence >= 0.95);
        assert_eq!(out.alternatives[0].label, "P0");
        assert!(
            out.reasons
                .iter()
                .any(|r| r.starts_with("lexicon: ") && r.ends_with("→ P0")),
            "{:?}",
            out.reasons
        );
        // the model's own reasons are kept
        assert!(out.reasons.iter().any(|r| r.starts_with("knn")));
    }
}

#[test]
fn lexicon_reason_names_the_word() {
    let out = rules().apply("空调冒烟了", decision(Some("P2"), 0.6, false));
    assert!(
        out.reasons.contains(&"lexicon: 冒烟 → P0".to_string()),
        "{:?}",
        out.reasons
    );
    assert!(
        out.reasons.iter().any(|r| r.contains("P2 → P0")),
        "{:?}",
        out.reasons
    );
}

#[test]
fn english_lexicon_is_case_insensitive_and_whole_word() {
    let rules = rules();
    let hits = rules.lexicon_hits("URGENT: our Server  IS down since 9am");
    let words: Vec<&str> = hits.iter().map(|h| h.word.as_str()).collect();
    assert_eq!(words, ["urgent", "server is down"]);
    let text = "URGENT: our Server  IS down since 9am";
    let (s, e) = hits[1].span;
    assert_eq!(&text[s..e], "Server  IS down");
    assert_eq!(hits[1].level, "P0");
    let out = rules.apply(text, decision(Some("P3"), 0.9, false));
    assert_eq!(out.label.as_deref(), Some("P0"));
    // not inside other words
    assert!(rules.lexicon_hits("the observer is downstairs").is_empty());
    assert!(rules.lexicon_hits("insurgent").is_empty());
    // plural still counts
    assert_eq!(rules.lexicon_hits("two Outages today").len(), 1);
}

#[test]
fn lexicon_hits_are_all_reported_in_order() {
    let text = "停机又停机，无法使用";
    let hits = rules().lexicon_hits(text);
    let got: Vec<(&str, &str)> = hits
        .iter()
        .map(|h| (h.word.as_str(), h.level.as_str()))
        .collect();
    assert_eq!(got, [("停机", "P0"), ("停机", "P0"), ("无法使用", "P1")]);
    for h in &hits {
        assert_eq!(&text[h.span.0..h.span.1], h.word);
    }
}

#[test]
fn lexicon_never_lowers_the_model() {
    let rules = rules();
    // lexicon says P1, model says P0: P0 stays, with the model's confidence
    let out = rules.apply("急！urgent", decision(Some("P0"), 0.8, false));
    assert_eq!(out.label.as_deref(), Some("P0"));
    assert_eq!(out.confidence, 0.8);
    // a P2 word does not lower a model P1
    let out = rules.apply("系统有点慢", decision(Some("P1"), 0.7, false));
    assert_eq!(out.label.as_deref(), Some("P1"));
    assert!(out.reasons.iter().any(|r| r == "lexicon: 有点慢 → P2"));
}

#[test]
fn lexicon_raises_abstaining_model_and_clears_abstention_when_urgent() {
    let rules = rules();
    let out = rules.apply("完全无法使用", decision(Some("P3"), 0.4, true));
    assert_eq!(out.label.as_deref(), Some("P1"));
    assert!(!out.abstain);
    assert!(out.confidence >= 0.95);
    let out = rules.apply("停机", decision(None, 0.3, true));
    assert_eq!(out.label.as_deref(), Some("P0"));
    assert!(!out.abstain);
    // a non-urgent floor raises but keeps the model's abstention
    let out = rules.apply("有点慢", decision(Some("P3"), 0.4, true));
    assert_eq!(out.label.as_deref(), Some("P2"));
    assert!(out.abstain);
}

/// The reasons agree with the decision: once an urgent floor clears the
/// model's abstention, no reason says the request needs a human.
#[test]
fn an_overruled_abstention_is_not_reported_as_needing_a_human() {
    let rules = rules();
    let mut model = decision(None, 0.0, true);
    model.reasons.insert(
        0,
        "confidence 0.00 below threshold 0.55: needs a human".into(),
    );
    for (text, model) in [
        ("停机", model.clone()),
        ("完全无法使用", {
            let mut m = model.clone();
            m.label = Some("P0".into());
            m
        }),
    ] {
        let out = rules.apply(text, model);
        assert!(!out.abstain, "{text}");
        assert!(
            out.reasons.iter().all(|r| !r.contains("needs a human")),
            "{text}: {:?}",
            out.reasons
        );
        assert!(
            out.reasons.iter().any(|r| r.starts_with(
                "model confidence 0.00 below threshold 0.55: overruled by the urgent lexicon floor"
            )),
            "{text}: {:?}",
            out.reasons
        );
    }
    // A floor that does not decide leaves the abstention and its reason alone.
    let out = rules.apply("有点慢", model);
    assert!(out.abstain);
    assert!(out.reasons.iter().any(|r| r.ends_with(": needs a human")));
}

#[test]
fn no_hit_leaves_the_model_untouched() {
    let model = decision(Some("P3"), 0.66, true);
    let out = rules().apply("请问发票怎么开？", model.clone());
    assert_eq!(out.label, model.label);
    assert_eq!(out.confidence, model.confidence);
    assert_eq!(out.abstain, model.abstain);
    assert_eq!(out.reasons, model.reasons);
    assert_eq!(out.alternatives, model.alternatives);
}

/// Every labelled field value of the demo tickets that occurs in the ticket's
/// text (and has a pattern: built-in or the pack's) is extracted with its name.
#[test]
fn demo_pack_field_labels_are_extracted() {
    let dir = demo_pack_dir();
    let pack = Pack::load(&dir).unwrap();
    let ex = FieldExtractor::new(&pack.fields).unwrap();
    let inferred_only: Vec<&str> = pack
        .fields
        .iter()
        .filter(|f| f.pattern.is_none())
        .map(|f| f.name.as_str())
        .collect();
    // name -> (found, labelled)
    let mut recall = std::collections::BTreeMap::<String, (usize, usize)>::new();
    let mut misses = Vec::new();
    for t in &pack.tickets {
        let text = format!("{}\n{}", t.title, t.body);
        let got = ex.extract(&text);
        for (name, value) in &t.fields {
            if inferred_only.contains(&name.as_str()) || !text.contains(value.as_str()) {
                continue;
            }
            let entry = recall.entry(name.clone()).or_default();
            entry.1 += 1;
            if got.iter().any(|f| &f.name == name && &f.value == value) {
                entry.0 += 1;
            } else {
                misses.push(format!("{}: {name}={value}", t.id));
            }
        }
    }
    eprintln!("demo-pack field recall (found, labelled): {recall:?}");
    let (found, labelled) = recall
        .values()
        .fold((0, 0), |(f, l), (a, b)| (f + a, l + b));
    assert!(
        labelled >= 100,
        "too few labelled fields to measure: {labelled}"
    );
    assert!(
        found * 100 >= labelled * 97,
        "recall {found}/{labelled}; misses: {misses:?}"
    );
}

#[test]
fn more_config_mistakes_are_located() {
    // (edit, expected key, text on the expected line)
    let cases: &[(&str, &str, &str, &str)] = &[
        (
            "parent = \"billing\"",
            "parent = \"billing.refund\"",
            "categories.parent",
            "parent = \"billing.refund\"",
        ),
        (
            "name = \"test-pack\"",
            "name = \"  \"",
            "pack.name",
            "name = \"  \"",
        ),
        (
            "default_language = \"zh\"",
            "default_language = \"fr\"",
            "pack.default_language",
            "default_language",
        ),
        (
            "response_hours = 4.5",
            "response_hours = -2",
            "priorities.response_hours",
            "response_hours = -2",
        ),
        (
            "[[fields]]\nname = \"product\"",
            "[[fields]]\nname = \"ticket_ref\"",
            "fields.name",
            "name = \"ticket_ref\"\ndescription = \"Product",
        ),
        (
            "[[fields]]\nname = \"product\"",
            "[[fields]]\nname = \"pro duct\"",
            "fields.name",
            "name = \"pro duct\"",
        ),
        (
            "id = \"P1\"\nname = \"High\"",
            "name = \"High\"",
            "priorities.id",
            "[[priorities]]\nname = \"High\"",
        ),
    ];
    for (from, to, key, at) in cases {
        let toml = replace(PACK_TOML, from, to);
        let (_, line, got_key, message) = load_err(&toml, ARTICLES, TICKETS);
        assert_eq!(&got_key, key, "{to}: {message}");
        let at_line = line_of(&toml, at);
        assert!(
            line == at_line || line == at_line + 1,
            "{to}: line {line}, expected about {at_line}: {message}"
        );
    }
}

#[test]
fn a_pack_without_categories_is_rejected() {
    let toml = "[pack]\nname = \"empty\"\n";
    let (file, _, key, _) = load_err(toml, "", "");
    assert_eq!((file.as_str(), key.as_str()), ("pack.toml", "categories"));
}

#[test]
fn more_jsonl_mistakes_are_located() {
    let (_, line, key, _) = load_err(PACK_TOML, &format!("{ARTICLES}[1, 2]\n"), TICKETS);
    assert_eq!((line, key.as_str()), (3, "json"));
    let articles = replace(ARTICLES, "\"answer\": \"检查电源。\"", "\"answer\": \" \"");
    let (_, line, key, _) = load_err(PACK_TOML, &articles, TICKETS);
    assert_eq!((line, key.as_str()), (1, "answer"));
    let tickets = replace(
        TICKETS,
        "\"title\": \"refund\", \"body\": \"I want my money back\"",
        "\"title\": \"\"",
    );
    let (_, line, key, _) = load_err(PACK_TOML, ARTICLES, &tickets);
    assert_eq!((line, key.as_str()), (3, "body"));
    let tickets = replace(
        TICKETS,
        "\"fields\": {\"order_no\": \"JD1234567890\"}",
        "\"fields\": [\"JD1234567890\"]",
    );
    let (_, line, key, _) = load_err(PACK_TOML, ARTICLES, &tickets);
    assert_eq!((line, key.as_str()), (3, "fields"));
}

/// On the demo history the lexicon finds the labelled P0 tickets and does not
/// escalate routine (P2/P3) ones: guards against matching that is too loose
/// (`fire` in `firmware`) or too strict (case, spacing).
#[test]
fn demo_pack_lexicon_agrees_with_labels() {
    let dir = demo_pack_dir();
    let pack = Pack::load(&dir).unwrap();
    let rules = PriorityRules::new(&pack);
    let (mut p0, mut p0_hit, mut routine, mut escalated) = (0, 0, 0, Vec::new());
    for t in &pack.tickets {
        let text = format!("{}\n{}", t.title, t.body);
        let top = rules.lexicon_hits(&text).into_iter().map(|h| h.level).min();
        match t.priority.as_str() {
            "P0" => {
                p0 += 1;
                p0_hit += usize::from(top.as_deref() == Some("P0"));
            }
            "P2" | "P3" => {
                routine += 1;
                if matches!(top.as_deref(), Some("P0" | "P1")) {
                    escalated.push(t.id.clone());
                }
            }
            _ => {}
        }
    }
    eprintln!(
        "P0 found {p0_hit}/{p0}; routine escalated {}/{routine}",
        escalated.len()
    );
    assert!(p0 > 0 && p0_hit * 100 >= p0 * 95, "P0 recall {p0_hit}/{p0}");
    assert!(
        escalated.len() * 100 <= routine,
        "escalated {escalated:?} of {routine}"
    );
}

#[test]
fn long_text_with_many_fields_stays_fast_and_exact() {
    let line = "订单号 JD2024031501 手机 13812345678 邮箱 a.b@example.com 付了¥299；";
    let text = line.repeat(20_000); // ~1.4 MB, 80k candidate matches
    let start = std::time::Instant::now();
    let found = fields(&text);
    let elapsed = start.elapsed();
    // each distinct value once, at its first occurrence
    let names: Vec<&str> = found.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["order_no", "phone", "email", "amount"]);
    for f in &found {
        let (s, e) = f.span.unwrap();
        assert_eq!(&text[s..e], f.value);
    }
    // generous bound for an unoptimised build on a busy 2-core machine
    assert!(elapsed.as_secs() < 20, "{elapsed:?}");
}

#[test]
fn lexicon_exceptions_neutralise_only_the_words_inside_them() {
    let pack = Pack::load(&demo_pack_dir()).unwrap();
    let rules = PriorityRules::new(&pack);
    // "won't light" contains 着火 but is a routine water-heater fault
    assert!(rules
        .lexicon_hits("燃气热水器点不着火，打了三次")
        .is_empty());
    // a real fire elsewhere in the same text still counts
    let hits = rules.lexicon_hits("热水器点不着火，后来插头着火了");
    assert_eq!(hits.len(), 1, "{hits:?}");
    assert_eq!(hits[0].word, "着火");
    assert_eq!(hits[0].level, "P0");
    let out = rules.apply("热水器点不着火", decision(Some("P2"), 0.8, false));
    assert_eq!(out.label.as_deref(), Some("P2"));
}

#[test]
fn unknown_jsonl_keys_are_reported_with_file_line_and_key() {
    // A typo in a ticket's key would otherwise load an unlabelled ticket.
    let tickets = replace(
        TICKETS,
        "\"category\": \"billing.refund\"",
        "\"catgory\": \"billing.refund\"",
    );
    let (file, line, key, message) = load_err(PACK_TOML, ARTICLES, &tickets);
    assert_eq!(
        (file.as_str(), line, key.as_str()),
        ("tickets.jsonl", 3, "catgory")
    );
    assert!(message.contains("did you mean `category`"), "{message}");

    let articles = replace(
        ARTICLES,
        "\"answer\": \"检查电源。\"",
        "\"answer\": \"检查电源。\", \"alt_question\": [\"没电\"]",
    );
    let (file, line, key, message) = load_err(PACK_TOML, &articles, TICKETS);
    assert_eq!(
        (file.as_str(), line, key.as_str()),
        ("articles.jsonl", 1, "alt_question")
    );
    assert!(message.contains("alt_questions"), "{message}");

    // A key of the other record type is unknown too (articles have no `body`).
    let articles = replace(
        ARTICLES,
        "\"question\": \"How",
        "\"body\": \"x\", \"question\": \"How",
    );
    let (_, line, key, _) = load_err(PACK_TOML, &articles, TICKETS);
    assert_eq!((line, key.as_str()), (2, "body"));

    // The displayed error names the file, the line and the key, like pack.toml errors.
    let dir = write_pack(PACK_TOML, ARTICLES, &tickets);
    let text = Pack::load(dir.path()).unwrap_err().to_string();
    assert!(
        text.contains("tickets.jsonl:3: catgory: unknown key"),
        "{text}"
    );

    // Keys of nested maps (`fields`) are free-form.
    let tickets = replace(TICKETS, "\"order_no\"", "\"anything_goes\"");
    let dir = write_pack(PACK_TOML, ARTICLES, &tickets);
    let pack = Pack::load(dir.path()).unwrap();
    assert_eq!(pack.tickets[1].category, "billing.refund");
    assert!(pack.tickets[1].fields.contains_key("anything_goes"));
}

#[test]
fn unknown_out_of_scope_keys_are_reported() {
    let dir = write_pack(PACK_TOML, ARTICLES, TICKETS);
    fs::write(
        dir.path().join("out_of_scope.jsonl"),
        "{\"text\": \"推荐一部电影\"}\n\n{\"txt\": \"天气怎么样\"}\n",
    )
    .unwrap();
    match Pack::load(dir.path()) {
        Err(Error::Pack {
            file,
            line,
            key,
            message,
        }) => {
            assert!(file.ends_with("out_of_scope.jsonl"), "{file:?}");
            assert_eq!((line, key.as_str()), (3, "txt"));
            assert!(message.contains("did you mean `text`"), "{message}");
        }
        other => panic!("expected a pack error, got {other:?}"),
    }
    fs::write(
        dir.path().join("out_of_scope.jsonl"),
        "{\"text\": \"推荐一部电影\"}\n",
    )
    .unwrap();
    assert_eq!(
        Pack::load(dir.path()).unwrap().out_of_scope,
        ["推荐一部电影"]
    );
}

#[test]
fn the_pack_fingerprint_follows_the_documents_only() {
    let a = write_pack(PACK_TOML, ARTICLES, TICKETS);
    let b = write_pack(
        &replace(PACK_TOML, "A pack for tests", "Edited"),
        ARTICLES,
        TICKETS,
    );
    let c = write_pack(
        PACK_TOML,
        &replace(ARTICLES, "检查电源。", "检查插座。"),
        TICKETS,
    );
    let load = |d: &tempfile::TempDir| Pack::load(d.path()).unwrap().fingerprint;
    assert!(load(&a).starts_with("sha256:"));
    assert_eq!(
        load(&a),
        load(&b),
        "pack.toml is not ingested into the index"
    );
    assert_ne!(load(&a), load(&c));
    fs::remove_file(a.path().join("articles.jsonl")).unwrap();
    assert_ne!(load(&a), load(&b));
}

#[test]
fn demo_pack_lexicon_has_emergency_room_at_p0() {
    let pack = Pack::load(&demo_pack_dir()).unwrap();
    assert!(pack.lexicon["P0"].iter().any(|w| w == "急诊"));
    let rules = PriorityRules::new(&pack);
    let out = rules.apply(
        "孩子碰了热水器插座被电了一下，已经送急诊",
        decision(Some("P2"), 0.9, false),
    );
    assert_eq!(out.label.as_deref(), Some("P0"), "{out:?}");
    let hits = rules.lexicon_hits("医院急诊的空调坏了");
    assert_eq!(hits.len(), 1, "{hits:?}");
    assert_eq!(
        (hits[0].word.as_str(), hits[0].level.as_str()),
        ("急诊", "P0")
    );
}

#[test]
fn the_escalation_table_is_optional_and_checked_with_its_line() {
    // Absent: the defaults.
    let dir = write_pack(PACK_TOML, ARTICLES, TICKETS);
    let pack = Pack::load(dir.path()).unwrap();
    assert!(pack.escalation.words.iter().any(|w| w == "投诉"));
    assert_eq!(pack.escalation.field, None);
    // Present: its lists replace the defaults, its field must be a declared field.
    let with = format!(
        "{PACK_TOML}\n[escalation]\nwords = [\"Escalate\", \"上报\"]\nflag = 0.7\nfield = \"product\"\n"
    );
    let dir = write_pack(&with, ARTICLES, TICKETS);
    let pack = Pack::load(dir.path()).unwrap();
    assert_eq!(pack.escalation.words, vec!["escalate", "上报"]);
    assert_eq!(pack.escalation.flag, 0.7);
    assert_eq!(pack.escalation.field.as_deref(), Some("product"));
    assert!(
        !pack.escalation.anger.is_empty(),
        "anger keeps its defaults"
    );
    for (bad, key, says) in [
        ("flag = 1.5", "escalation.flag", "not in"),
        ("field = \"escalated\"", "escalation.field", "escalated"),
        (
            "words = [\"投诉\", \" 投诉 \"]",
            "escalation.words",
            "duplicate",
        ),
        ("anger = [\"\"]", "escalation.anger", "empty"),
        ("loudness = 3", "escalation", "loudness"),
    ] {
        let toml = format!("{PACK_TOML}\n[escalation]\n{bad}\n");
        let (_, line, k, message) = load_err(&toml, ARTICLES, TICKETS);
        assert_eq!(line, line_of(&toml, bad), "{bad}: {message}");
        assert!(k.starts_with(key), "{bad}: {k}");
        assert!(message.contains(says), "{bad}: {message}");
    }
}
