//! The evaluation functions on small synthetic sets with the hashing embedder:
//! the reports' JSON contract, sensible numbers, and clear errors.

use std::sync::Arc;

use models::TextEmbedder;
use triage::eval::{self, DeflectCase, FaqEntry};
use triage::hashembed::HashEmbedder;

fn embedder() -> Arc<dyn TextEmbedder> {
    Arc::new(HashEmbedder::new(256))
}

/// Three intents with their own vocabulary, several phrasings each.
fn intents() -> Vec<(String, String)> {
    let mut out = Vec::new();
    let sets: [(&str, &[&str]); 3] = [
        ("refund", &["退款", "refund", "退钱", "money back"]),
        ("invoice", &["发票", "invoice", "开票", "receipt"]),
        ("repair", &["维修", "repair", "修理", "broken"]),
    ];
    for (label, words) in sets {
        for (i, w) in words.iter().enumerate() {
            for (j, frame) in [
                "我要{w}",
                "{w} please",
                "怎么{w}",
                "关于{w}的问题",
                "help with {w}",
            ]
            .iter()
            .enumerate()
            {
                if (i + j) % 5 != 4 {
                    out.push((frame.replace("{w}", w), label.to_string()));
                }
            }
        }
    }
    out
}

#[test]
fn classify_report_has_the_contract_keys_and_learns() {
    let data = intents();
    let (test, train): (Vec<_>, Vec<_>) = data
        .iter()
        .cloned()
        .enumerate()
        .partition(|(i, _)| i % 4 == 0);
    let train: Vec<(String, String)> = train.into_iter().map(|(_, r)| r).collect();
    let mut test: Vec<(String, String)> = test.into_iter().map(|(_, r)| r).collect();
    let in_scope = test.len();
    for t in [
        "火星天气如何",
        "推荐一首歌",
        "what time is the football match",
    ] {
        test.push((t.to_string(), "oos".to_string()));
    }
    let report = eval::classify(&train, &test, Some("oos"), 0.55, embedder()).unwrap();
    let json = serde_json::to_value(&report).unwrap();
    for key in [
        "accuracy",
        "macro_f1",
        "in_scope_accuracy",
        "oos_recall",
        "oos_precision",
        "coverage",
        "accuracy_at_threshold",
        "coverage_table",
    ] {
        assert!(json.get(key).is_some(), "missing {key} in {json}");
    }
    assert_eq!(report.test_examples, in_scope + 3);
    assert!(report.combined_accuracy >= 0.9, "{report:?}");
    assert!(report.oos_recall.unwrap() >= 2.0 / 3.0, "{report:?}");
    assert!(report.coverage_table.len() >= 5);
    // Without an out-of-scope label the OOS keys are absent.
    let plain: Vec<(String, String)> = test[..in_scope].to_vec();
    let r = eval::classify(&train, &plain, None, 0.55, embedder()).unwrap();
    let json = serde_json::to_value(&r).unwrap();
    assert!(json.get("oos_recall").is_none());
    assert!(r.accuracy >= 0.9);
}

#[test]
fn classify_rejects_bad_input() {
    let data = intents();
    assert!(eval::classify(&[], &data, None, 0.5, embedder()).is_err());
    assert!(eval::classify(&data, &[], None, 0.5, embedder()).is_err());
    assert!(eval::classify(&data, &data, None, 1.5, embedder()).is_err());
}

fn faq() -> Vec<FaqEntry> {
    [
        ("f1", "花呗怎么还款"),
        ("f2", "借呗怎么还款"),
        ("f3", "如何修改绑定的手机号"),
        ("f4", "信用卡年费是多少"),
        ("f5", "how do I reset my password"),
    ]
    .iter()
    .map(|(id, q)| FaqEntry {
        id: id.to_string(),
        question: q.to_string(),
        answer: format!("answer {id}"),
        alt_questions: Vec::new(),
    })
    .collect()
}

fn cases() -> Vec<DeflectCase> {
    let case = |t: &str, ids: &[&str]| DeflectCase {
        text: t.to_string(),
        faq_ids: ids.iter().map(|s| s.to_string()).collect(),
    };
    vec![
        case("花呗怎么还款", &["f1"]),
        case("如何修改绑定的手机号", &["f3"]),
        case("how do I reset my password", &["f5"]),
        case("今天北京下雨吗", &[]),
        case("推荐一部好看的电影", &[]),
    ]
}

#[test]
fn deflect_report_has_the_contract_keys_and_hands_off_out_of_scope() {
    let dir = tempfile::tempdir().unwrap();
    let report = eval::deflect(&faq(), &cases(), embedder(), None, dir.path()).unwrap();
    let json = serde_json::to_value(&report).unwrap();
    for key in [
        "answer_rate",
        "answer_precision",
        "oos_handoff_recall",
        "at_thresholds",
    ] {
        assert!(json.get(key).is_some(), "missing {key} in {json}");
    }
    assert_eq!(report.at_thresholds.len(), 3);
    assert_eq!((report.in_scope, report.out_of_scope), (3, 2));
    assert_eq!(report.headline.oos_handoff_recall, 1.0, "{report:?}");
    assert!(report.headline.answer_rate >= 2.0 / 3.0, "{report:?}");
    assert_eq!(report.headline.answer_precision, 1.0, "{report:?}");
    assert_eq!(report.retrieval_recall, 1.0);
    let decisions = std::fs::read_to_string(dir.path().join("deflect_decisions.jsonl")).unwrap();
    assert_eq!(decisions.lines().count(), 5);
}

#[test]
fn a_fitted_verifier_round_trips_and_scores() {
    let pair = |a: &str, b: &str, same| eval::QuestionPair {
        a: a.into(),
        b: b.into(),
        same,
    };
    let pairs = [
        pair("花呗怎么还款", "借呗怎么还款", false),
        pair("花呗怎么还款呀", "花呗怎么还款", true),
    ];
    let (verifier, fit) =
        eval::fit_verifier(&[(&faq(), &cases())], &pairs, embedder(), 1e-2, "test").unwrap();
    assert!(fit.rows > fit.positives && fit.positives >= 3, "{fit:?}");
    assert_eq!(verifier.fitted_on, "test");
    assert_eq!(fit.pairs, 2);
    assert!(verifier.key_units.weight("借") > 0.0 && verifier.key_units.weight("呀") < 0.0);
    let dir = tempfile::tempdir().unwrap();
    let report =
        eval::deflect_with(&faq(), &cases(), embedder(), &verifier, None, dir.path()).unwrap();
    assert_eq!(report.verifier, "test");
    assert_eq!(report.headline.oos_handoff_recall, 1.0, "{report:?}");
    assert!(eval::deflect(&[], &cases(), embedder(), None, dir.path()).is_err());
}

#[test]
fn a_bank_entry_with_the_very_same_words_is_a_right_answer_and_is_counted() {
    let dir = tempfile::tempdir().unwrap();
    let mut test = cases();
    // Labelled out of scope, but the bank holds this very question (punctuation aside).
    test.push(DeflectCase {
        text: "信用卡年费是多少？".into(),
        faq_ids: Vec::new(),
    });
    let report = eval::deflect(&faq(), &test, embedder(), None, dir.path()).unwrap();
    assert_eq!(report.same_text_added, 1);
    assert_eq!((report.in_scope, report.out_of_scope), (4, 2));
    assert_eq!(report.headline.oos_handoff_recall, 1.0, "{report:?}");
}
