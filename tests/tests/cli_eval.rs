//! The `triage eval classify` / `eval deflect` command-line contract (one JSON
//! object on stdout with the documented keys), run with the real default model
//! on data cut from the demo pack, and the `--cache` file that lets a rerun
//! skip the embedding.

mod http_support;

use std::path::Path;
use std::process::Command;

use http_support::{binary, demo_pack};
use serde_json::{json, Value};

fn read_jsonl(name: &str) -> Vec<Value> {
    std::fs::read_to_string(demo_pack().join(name))
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn write_jsonl(path: &Path, rows: &[Value]) {
    let text: String = rows.iter().map(|r| format!("{r}\n")).collect();
    std::fs::write(path, text).unwrap();
}

/// Runs `triage eval ARGS…` and parses its stdout as one JSON object.
fn eval(args: &[&str]) -> Value {
    let out = Command::new(binary())
        .arg("eval")
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "triage eval {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        stdout.trim().lines().count(),
        1,
        "one JSON object: {stdout}"
    );
    serde_json::from_str(stdout.trim()).unwrap()
}

fn number(v: &Value, key: &str) -> f64 {
    v[key]
        .as_f64()
        .unwrap_or_else(|| panic!("`{key}` is not a number in {v}"))
}

#[test]
fn eval_classify_reports_accuracy_abstention_and_out_of_scope() {
    let dir = tempfile::tempdir().unwrap();
    let tickets = read_jsonl("tickets.jsonl");
    let labelled: Vec<Value> = tickets
        .iter()
        .map(|t| json!({"text": format!("{}\n{}", t["title"].as_str().unwrap_or(""), t["body"].as_str().unwrap_or("")), "label": t["category"]}))
        .collect();
    // Every fifth ticket is held out.
    let (mut train, mut test) = (Vec::new(), Vec::new());
    for (i, row) in labelled.into_iter().enumerate() {
        if i % 5 == 0 {
            test.push(row);
        } else {
            train.push(row);
        }
    }
    let oos = read_jsonl("out_of_scope.jsonl");
    test.extend(
        oos.iter()
            .take(40)
            .map(|o| json!({"text": o["text"], "label": "oos"})),
    );
    let (train_path, test_path) = (
        dir.path().join("train.jsonl"),
        dir.path().join("test.jsonl"),
    );
    write_jsonl(&train_path, &train);
    write_jsonl(&test_path, &test);
    let cache = dir.path().join("vectors.bin");
    let args = [
        "classify",
        "--train",
        train_path.to_str().unwrap(),
        "--test",
        test_path.to_str().unwrap(),
        "--oos-label",
        "oos",
        "--cache",
        cache.to_str().unwrap(),
    ];
    let r = eval(&args);
    for key in [
        "accuracy",
        "macro_f1",
        "in_scope_accuracy",
        "oos_recall",
        "oos_precision",
        "coverage",
        "accuracy_at_threshold",
    ] {
        let v = number(&r, key);
        assert!((0.0..=1.0).contains(&v), "{key} = {v}");
    }
    assert!(number(&r, "in_scope_accuracy") > 0.5, "{r}");
    assert!(
        number(&r, "oos_recall") > 0.5,
        "unrelated requests are refused: {r}"
    );
    assert!(
        r["coverage_table"].as_array().is_some_and(|t| t.len() >= 5),
        "{r}"
    );
    assert!(cache.exists(), "--cache writes the vectors");

    // A rerun reads every vector from the cache and reproduces the report.
    let again = eval(&args);
    for key in ["accuracy", "in_scope_accuracy", "oos_recall"] {
        assert_eq!(r[key], again[key], "{key}");
    }
}

#[test]
fn eval_deflect_reports_answers_precision_and_handoffs_at_four_thresholds() {
    let dir = tempfile::tempdir().unwrap();
    let articles = read_jsonl("articles.jsonl");
    // Each article's first other phrasing is held out of the bank as an in-scope
    // message; out of scope: unrelated requests.
    let alts = |a: &Value| a["alt_questions"].as_array().cloned().unwrap_or_default();
    let faq: Vec<Value> = articles
        .iter()
        .map(|a| json!({"id": a["id"], "question": a["question"], "answer": a["answer"], "alt_questions": alts(a).get(1..).unwrap_or_default()}))
        .collect();
    let mut test: Vec<Value> = articles
        .iter()
        .filter_map(|a| {
            let held_out = alts(a).first()?.clone();
            Some(json!({"text": held_out, "faq_ids": [a["id"]]}))
        })
        .collect();
    let in_scope = test.len();
    test.extend(
        read_jsonl("out_of_scope.jsonl")
            .iter()
            .take(40)
            .map(|o| json!({"text": o["text"], "faq_ids": []})),
    );
    let (faq_path, test_path) = (dir.path().join("faq.jsonl"), dir.path().join("test.jsonl"));
    write_jsonl(&faq_path, &faq);
    write_jsonl(&test_path, &test);
    let r = eval(&[
        "deflect",
        "--faq",
        faq_path.to_str().unwrap(),
        "--test",
        test_path.to_str().unwrap(),
    ]);
    assert_eq!(r["in_scope"], in_scope, "{r}");
    for key in ["answer_rate", "answer_precision", "oos_handoff_recall"] {
        let v = number(&r, key);
        assert!((0.0..=1.0).contains(&v), "{key} = {v}");
    }
    // Some paraphrases are answered, rightly; unrelated requests are handed off.
    assert!(number(&r, "answer_rate") > 0.1, "{r}");
    assert!(number(&r, "answer_precision") >= 0.9, "{r}");
    assert!(number(&r, "oos_handoff_recall") >= 0.9, "{r}");
    let others = r["at_thresholds"].as_array().expect("at_thresholds");
    assert_eq!(others.len(), 3, "{r}");
    for p in others {
        // A lower answer threshold answers at least as many messages.
        let rate = number(p, "answer_rate");
        if number(p, "answer_threshold") < number(&r, "answer_threshold") {
            assert!(rate >= number(&r, "answer_rate"), "{p} vs {r}");
        }
        assert!(
            p["answer_precision"].is_number() && p["oos_handoff_recall"].is_number(),
            "{p}"
        );
    }
}

/// `eval deflect --pack` measures the chat as `triage serve` ships it: the
/// demo pack's own articles, its thresholds and out-of-scope check, on the
/// chat messages written for it; `--learn` feeds another set back first and
/// measures again; `--decisions` keeps the per-message record.
#[test]
fn eval_deflect_pack_measures_the_shipped_chat_and_the_learning_loop() {
    let dir = tempfile::tempdir().unwrap();
    let chat = demo_pack().join("../demo-chat");
    let r = eval(&[
        "deflect",
        "--pack",
        demo_pack().to_str().unwrap(),
        "--test",
        chat.join("test.jsonl").to_str().unwrap(),
        "--learn",
        chat.join("dev.jsonl").to_str().unwrap(),
        "--decisions",
        dir.path().to_str().unwrap(),
    ]);
    let all = &r["all"];
    assert_eq!(all["in_scope"], 93, "{r}");
    assert_eq!(all["out_of_scope"], 40, "{r}");
    for key in [
        "answered_right",
        "wrong_answers",
        "oos_handoff",
        "clarify_rate",
    ] {
        let v = number(all, key);
        assert!((0.0..=1.0).contains(&v), "{key} = {v}");
    }
    // Paraphrases of the articles are answered, rightly; off-topic messages are
    // handed off; a wrong answer is rare.
    assert!(number(all, "answered_right") > 0.2, "{r}");
    assert!(number(all, "wrong_answers") <= 0.05, "{r}");
    assert!(number(all, "oos_handoff") >= 0.8, "{r}");
    assert!(number(all, "p50_ms") > 0.0, "{r}");
    assert_eq!(r["fed_back"], 93, "{r}");
    assert!(
        r["learned_phrasings"].as_u64().is_some_and(|n| n > 0),
        "{r}"
    );
    assert_eq!(r["after_learning"]["in_scope"], 93, "{r}");
    let decisions = std::fs::read_to_string(dir.path().join("chat_decisions.jsonl")).unwrap();
    assert_eq!(decisions.lines().count(), 133);
    let first: Value = serde_json::from_str(decisions.lines().next().unwrap()).unwrap();
    let reasons = first["reasons"].as_array().unwrap();
    assert!(
        reasons
            .iter()
            .any(|r| r.as_str().is_some_and(|s| s.starts_with("best: "))),
        "every decision names its best article: {first}"
    );
}
