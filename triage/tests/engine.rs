//! Engine behaviour on a tiny pack with the model-free hashing embedder:
//! every decision, learning from feedback, persistence and bad input.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use indexer::Ticket;
use triage::api::{ChatMessage, DeflectAction, Feedback, TicketRequest};
use triage::engine::{Engine, EngineConfig};
use triage::hashembed::HashEmbedder;
use triage::Error;

fn open(pack: &Path, data: &Path) -> Engine {
    Engine::open(
        EngineConfig {
            pack_dir: pack.to_path_buf(),
            data_dir: data.to_path_buf(),
        },
        Arc::new(HashEmbedder::new(256)),
    )
    .unwrap()
}

struct Fixture {
    _dirs: (tempfile::TempDir, tempfile::TempDir),
    engine: Engine,
}

fn fixture() -> Fixture {
    let pack = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    common::write_pack(pack.path());
    let engine = open(pack.path(), data.path());
    Fixture {
        _dirs: (pack, data),
        engine,
    }
}

fn request(body: &str) -> TicketRequest {
    TicketRequest {
        body: body.into(),
        ..TicketRequest::default()
    }
}

#[test]
fn classifies_routes_and_prefills_a_clear_request() {
    let f = fixture();
    let r = f
        .engine
        .triage(&request(
            "空调不制冷，吹出来的是热风，订单号JD2026123456，电话13812345678",
        ))
        .unwrap();
    assert_eq!(
        r.category.label.as_deref(),
        Some("repair.not_cooling"),
        "{:?}",
        r.category
    );
    assert!(!r.category.abstain && r.category.confidence >= 0.55);
    assert_eq!(r.queue.label.as_deref(), Some("repair"));
    assert_eq!(r.priority.label.as_deref(), Some("P2"), "{:?}", r.priority);
    assert!(!r.neighbours.is_empty());
    let field = |name: &str| r.fields.iter().find(|f| f.name == name);
    assert_eq!(
        field("phone").map(|f| f.value.as_str()),
        Some("13812345678")
    );
    assert!(field("order_no").is_some(), "{:?}", r.fields);
    let product = field("product").expect("product inferred from neighbours");
    assert_eq!(product.value, "air_conditioner");
    assert_eq!(product.source, "inferred");
    assert!(product.confidence > 0.5 && product.confidence <= 1.0);
}

#[test]
fn an_urgent_word_is_never_routine() {
    let f = fixture();
    let r = f.engine.triage(&request("冰箱漏电而且冒烟了")).unwrap();
    assert_eq!(r.priority.label.as_deref(), Some("P0"), "{:?}", r.priority);
    assert!(!r.priority.abstain);
    assert!(r.priority.reasons.iter().any(|x| x.contains("漏电")));
}

#[test]
fn an_unrelated_request_needs_a_human() {
    let f = fixture();
    let r = f
        .engine
        .triage(&request("明天火星上的天文观测活动几点开始"))
        .unwrap();
    assert!(r.category.abstain, "{:?}", r.category);
    assert!(r.category.label.is_none());
    assert!(r.needs_human);
    assert!(!r.category.alternatives.is_empty());
}

#[test]
fn the_packs_out_of_scope_examples_send_lookalikes_to_a_human() {
    let pack = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    common::write_pack(pack.path());
    let examples = [
        "明天的足球比赛几点开始直播",
        "今晚的篮球比赛几点开始",
        "足球比赛在哪个频道直播",
        "周末的网球比赛门票在哪买",
        "世界杯足球比赛的赛程",
    ];
    let lines: String = examples
        .iter()
        .map(|t| format!("{}\n", serde_json::json!({ "text": t })))
        .collect();
    std::fs::write(pack.path().join("out_of_scope.jsonl"), lines).unwrap();
    let engine = open(pack.path(), data.path());

    let r = engine
        .triage(&request("后天的足球比赛几点开始直播呢"))
        .unwrap();
    assert!(
        r.needs_human && r.category.label.is_none(),
        "{:?}",
        r.category
    );
    assert!(
        r.category
            .reasons
            .iter()
            .any(|x| x.contains("does not handle")),
        "{:?}",
        r.category.reasons
    );
    assert!(
        r.category
            .alternatives
            .iter()
            .all(|a| !a.label.contains("scope")),
        "the out-of-scope class is never offered as a category: {:?}",
        r.category.alternatives
    );
    // Requests the pack does serve are still decided.
    let r = engine
        .triage(&request("空调不制冷，吹出来的是热风"))
        .unwrap();
    assert_eq!(
        r.category.label.as_deref(),
        Some("repair.not_cooling"),
        "{:?}",
        r.category
    );

    // A malformed line is refused with its file and line.
    std::fs::write(
        pack.path().join("out_of_scope.jsonl"),
        "{\"text\": \"ok\"}\n{\"txt\": 1}\n",
    )
    .unwrap();
    let err = Engine::open(
        EngineConfig {
            pack_dir: pack.path().to_path_buf(),
            data_dir: data.path().to_path_buf(),
        },
        Arc::new(HashEmbedder::new(256)),
    )
    .err()
    .expect("a bad out_of_scope.jsonl is refused");
    let msg = err.to_string();
    assert!(
        msg.contains("out_of_scope.jsonl") && msg.contains(":2"),
        "{msg}"
    );
}

#[test]
fn a_correction_changes_the_next_decision() {
    let f = fixture();
    let text = "空调不制冷，吹出来的是热风";
    let before = f.engine.triage(&request(text)).unwrap();
    assert_eq!(before.category.label.as_deref(), Some("repair.not_cooling"));
    let out = f
        .engine
        .feedback(Feedback {
            ticket_id: "NEW-1".into(),
            body: text.into(),
            category: Some("repair.leak".into()),
            priority: Some("P1".into()),
            ..Feedback::default()
        })
        .unwrap();
    assert!(out.created);
    assert_eq!(out.ticket_id, "NEW-1");
    let after = f.engine.triage(&request(text)).unwrap();
    assert_eq!(
        after.category.label.as_deref(),
        Some("repair.leak"),
        "{:?}",
        after.category
    );
    assert_eq!(after.priority.label.as_deref(), Some("P1"));
    assert!(after.category.reasons[0].contains("NEW-1"));
    assert_eq!(f.engine.stats().corrections, 1);
    // The correction is a stored, labelled ticket.
    let stored = f.engine.get_ticket("", "NEW-1").unwrap().unwrap();
    assert_eq!(stored.category, "repair.leak");
    assert_eq!(stored.queue, "repair");
}

#[test]
fn deflection_answers_known_questions_and_hands_off_others() {
    let f = fixture();
    let answer = f
        .engine
        .deflect(&ChatMessage {
            text: "如何申请退款？".into(),
            ..ChatMessage::default()
        })
        .unwrap();
    assert_eq!(answer.action, DeflectAction::Answer, "{answer:?}");
    assert_eq!(answer.candidates[0].article.id, "kb-refund");
    assert!(answer.ticket_draft.is_none());

    let away = f
        .engine
        .deflect(&ChatMessage {
            text: "推荐一部好看的科幻电影".into(),
            customer_id: "C9".into(),
            ..ChatMessage::default()
        })
        .unwrap();
    assert_eq!(away.action, DeflectAction::Handoff, "{away:?}");
    let draft = away.ticket_draft.expect("a handoff carries a ticket draft");
    assert!(draft.body.contains("科幻电影"));
}

#[test]
fn this_article_solved_it_teaches_the_bank() {
    let f = fixture();
    let msg = ChatMessage {
        text: "制冷坏掉了该咋整".into(),
        ..ChatMessage::default()
    };
    let before = f.engine.deflect(&msg).unwrap();
    assert_ne!(before.action, DeflectAction::Answer, "{before:?}");
    let out = f
        .engine
        .feedback(Feedback {
            solved_by_article: Some("kb-cool".into()),
            message: Some(msg.text.clone()),
            ..Feedback::default()
        })
        .unwrap();
    assert_eq!(out.article_updated.as_deref(), Some("kb-cool"));
    let after = f.engine.deflect(&msg).unwrap();
    assert_eq!(after.action, DeflectAction::Answer, "{after:?}");
    assert_eq!(after.candidates[0].article.id, "kb-cool");
}

#[test]
fn recent_near_identical_requests_are_duplicates_same_customer_first() {
    let f = fixture();
    let body = "洗衣机滚筒异响很大，像金属摩擦的声音";
    for (id, customer) in [("D-1", "C-other"), ("D-2", "C-me")] {
        f.engine
            .upsert_ticket(Ticket {
                id: id.into(),
                body: body.into(),
                customer_id: customer.into(),
                status: "open".into(),
                ..Ticket::default()
            })
            .unwrap();
    }
    let r = f
        .engine
        .triage(&TicketRequest {
            body: body.into(),
            customer_id: "C-me".into(),
            ..TicketRequest::default()
        })
        .unwrap();
    let ids: Vec<&str> = r.duplicates.iter().map(|d| d.ticket.id.as_str()).collect();
    assert_eq!(ids, vec!["D-2", "D-1"]);
    assert!(r.duplicates[0].same_customer && r.duplicates[0].similarity > 0.99);
    // Old pack tickets (2025) are outside the 14-day window.
    let old = f
        .engine
        .triage(&request("空调不制冷，吹出来的是热风"))
        .unwrap();
    assert!(old.duplicates.is_empty());
    assert!(f.engine.delete_ticket("", "D-2").unwrap());
    assert!(f.engine.get_ticket("", "D-2").unwrap().is_none());
}

#[test]
fn suggestions_bring_resolutions_and_articles() {
    let f = fixture();
    let s = f.engine.suggest(&request("冰箱漏水，地上都是水")).unwrap();
    assert!(!s.similar_tickets.is_empty());
    let p = s
        .predicted_resolution
        .expect("neighbours agree on a resolution");
    assert_eq!(p.text, "更换排水管密封圈，漏水问题解决。");
    assert!(p.probability > 0.5 && p.supporting_ticket_ids.len() >= 2);
    assert!(
        s.articles.iter().any(|h| h.id == "kb-leak"),
        "{:?}",
        s.articles
    );
}

#[test]
fn corrections_and_documents_survive_a_restart() {
    let pack = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    common::write_pack(pack.path());
    let text = "冰箱不制冷，吹出来的是热风";
    {
        let e = open(pack.path(), data.path());
        assert_eq!(e.stats().tickets, 45);
        assert_eq!(e.stats().articles, 4);
        let mut fields = BTreeMap::new();
        fields.insert("product".to_string(), "fridge".to_string());
        e.feedback(Feedback {
            ticket_id: "R-1".into(),
            body: text.into(),
            category: Some("billing.invoice".into()),
            fields,
            ..Feedback::default()
        })
        .unwrap();
    }
    let e = open(pack.path(), data.path());
    let stats = e.stats();
    assert_eq!(stats.tickets, 46, "the pack is not ingested twice");
    assert_eq!(stats.corrections, 1);
    assert_eq!(stats.model, "hash-units");
    let r = e.triage(&request(text)).unwrap();
    assert_eq!(r.category.label.as_deref(), Some("billing.invoice"));
    // Reclassifying a stored ticket does not let it vote for itself…
    let stored = e.get_ticket("", "T-0100").unwrap().unwrap();
    let again = e.classify_ticket(&stored).unwrap();
    assert!(again.neighbours.iter().all(|h| h.id != "T-0100"));
    assert_eq!(again.category.label.as_deref(), Some("repair.not_cooling"));
    // …unless an agent corrected it.
    let corrected = e.get_ticket("", "R-1").unwrap().unwrap();
    let c = e.classify_ticket(&corrected).unwrap();
    assert_eq!(c.category.label.as_deref(), Some("billing.invoice"));
}

#[test]
fn bad_input_is_a_clear_error() {
    let f = fixture();
    assert!(matches!(
        f.engine.triage(&request("  ")),
        Err(Error::InvalidInput(_))
    ));
    assert!(matches!(
        f.engine.deflect(&ChatMessage::default()),
        Err(Error::InvalidInput(_))
    ));
    let err = f
        .engine
        .feedback(Feedback {
            ticket_id: "T-0000".into(),
            category: Some("no.such.category".into()),
            ..Feedback::default()
        })
        .unwrap_err();
    assert!(err.to_string().contains("no.such.category"), "{err}");
    assert!(matches!(
        f.engine.feedback(Feedback {
            ticket_id: "missing".into(),
            category: Some("billing.refund".into()),
            ..Feedback::default()
        }),
        Err(Error::NotFound(_))
    ));
    assert!(matches!(
        f.engine.feedback(Feedback::default()),
        Err(Error::InvalidInput(_))
    ));
    let bad_priority = Ticket {
        id: "X".into(),
        body: "text".into(),
        priority: "urgent".into(),
        ..Ticket::default()
    };
    assert!(matches!(
        f.engine.upsert_ticket(bad_priority),
        Err(Error::InvalidInput(_))
    ));
    assert!(matches!(
        f.engine.feedback(Feedback {
            solved_by_article: Some("kb-none".into()),
            message: Some("x".into()),
            ..Feedback::default()
        }),
        Err(Error::NotFound(_))
    ));
}

#[test]
fn the_engine_can_be_shared_between_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Engine>();
    let f = fixture();
    let engine = Arc::new(f.engine);
    let handles: Vec<_> = (0..4)
        .map(|i| {
            let e = Arc::clone(&engine);
            std::thread::spawn(move || {
                if i % 2 == 0 {
                    e.triage(&request("洗衣机漏水，地上都是水"))
                        .map(|r| Some(r.category.label))
                } else {
                    e.upsert_ticket(Ticket {
                        id: format!("P-{i}"),
                        body: "电视开不了机".into(),
                        category: "repair.no_power".into(),
                        ..Ticket::default()
                    })
                    .map(|_| None)
                }
            })
        })
        .collect();
    for h in handles {
        let out = h.join().unwrap().unwrap();
        if let Some(label) = out {
            assert_eq!(label.as_deref(), Some("repair.leak"));
        }
    }
    assert_eq!(engine.stats().tickets, 47);
}
