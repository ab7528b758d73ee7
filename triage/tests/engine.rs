//! Engine behaviour on a tiny pack with the model-free hashing embedder:
//! every decision, learning from feedback, persistence and bad input.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use indexer::Ticket;
use triage::api::{ChatMessage, DeflectAction, Feedback, TicketRequest};
use triage::hashembed::HashEmbedder;
use triage::Error;
use triage::{Engine, EngineConfig};

fn open(pack: &Path, data: &Path) -> Engine {
    Engine::open(
        EngineConfig::new(pack.to_path_buf(), data.to_path_buf()),
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
        EngineConfig::new(pack.path().to_path_buf(), data.path().to_path_buf()),
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
    assert_eq!(f.engine.stats(None).corrections, 1);
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

/// Escalation risk in every triage result: the words of the request, and the
/// same customer's earlier requests (the duplicate finder's) as repeat contact.
#[test]
fn escalation_risk_names_its_words_and_counts_the_customers_earlier_requests() {
    let f = fixture();
    let calm = f
        .engine
        .triage(&request("空调不制冷，麻烦安排师傅上门"))
        .unwrap();
    assert_eq!(
        calm.escalation_risk.score, 0.0,
        "{:?}",
        calm.escalation_risk
    );
    assert!(!calm.escalation_risk.flagged);
    let angry = f
        .engine
        .triage(&request("空调坏了三次了，再不修好我就打12315投诉"))
        .unwrap();
    assert!(angry.escalation_risk.flagged, "{:?}", angry.escalation_risk);
    assert!(
        angry
            .escalation_risk
            .reasons
            .iter()
            .any(|r| r.contains("12315")),
        "{:?}",
        angry.escalation_risk.reasons
    );
    let body = "洗衣机滚筒异响很大，像金属摩擦的声音";
    let ask = |customer: &str| {
        f.engine
            .triage(&TicketRequest {
                body: body.into(),
                customer_id: customer.into(),
                ..TicketRequest::default()
            })
            .unwrap()
            .escalation_risk
    };
    assert_eq!(ask("C-me").score, 0.0);
    f.engine
        .upsert_ticket(Ticket {
            id: "E-1".into(),
            body: body.into(),
            customer_id: "C-me".into(),
            status: "open".into(),
            ..Ticket::default()
        })
        .unwrap();
    let again = ask("C-me");
    assert!(again.score > 0.0, "{again:?}");
    assert!(
        again
            .reasons
            .iter()
            .any(|r| r.contains("1 earlier request")),
        "{again:?}"
    );
    assert_eq!(
        ask("C-someone-else").score,
        0.0,
        "another customer's request is no repeat"
    );
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
        assert_eq!(e.stats(None).tickets, 45);
        assert_eq!(e.stats(None).articles, 4);
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
    let stats = e.stats(None);
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
    assert_eq!(engine.stats(None).tickets, 47);
}

/// Opens an engine that is expected to fail.
fn open_err(pack: &Path, data: &Path) -> Error {
    match Engine::open(
        EngineConfig::new(pack.to_path_buf(), data.to_path_buf()),
        Arc::new(HashEmbedder::new(256)),
    ) {
        Ok(_) => panic!("the engine should not open"),
        Err(e) => e,
    }
}

/// Non-blank lines of the feedback log.
fn feedback_records(data: &Path) -> usize {
    std::fs::read_to_string(data.join("feedback.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .count()
}

#[test]
fn refused_feedback_changes_nothing() {
    let pack = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    common::write_pack(pack.path());
    let e = open(pack.path(), data.path());
    let text = "空调不制冷，吹出来的是热风";
    let before = e.triage(&request(text)).unwrap();
    assert_eq!(before.category.label.as_deref(), Some("repair.not_cooling"));

    // A relabel of a new ticket with an unknown article: 404, and no part applied.
    let err = e
        .feedback(Feedback {
            ticket_id: "NEW-9".into(),
            body: text.into(),
            category: Some("repair.leak".into()),
            priority: Some("P1".into()),
            solved_by_article: Some("kb-none".into()),
            ..Feedback::default()
        })
        .unwrap_err();
    assert!(matches!(err, Error::NotFound(_)), "{err}");
    assert!(err.to_string().contains("kb-none"), "{err}");
    // Same for a relabel of a stored pack ticket.
    assert!(matches!(
        e.feedback(Feedback {
            ticket_id: "T-0100".into(),
            category: Some("billing.invoice".into()),
            solved_by_article: Some("kb-none".into()),
            ..Feedback::default()
        }),
        Err(Error::NotFound(_))
    ));
    // A valid article with an invalid category does not teach the article.
    let chat = ChatMessage {
        text: "制冷坏掉了该咋整".into(),
        ..ChatMessage::default()
    };
    let deflect_before = e.deflect(&chat).unwrap();
    assert!(matches!(
        e.feedback(Feedback {
            ticket_id: "NEW-10".into(),
            body: chat.text.clone(),
            category: Some("no.such.category".into()),
            solved_by_article: Some("kb-cool".into()),
            ..Feedback::default()
        }),
        Err(Error::InvalidInput(_))
    ));

    let after = e.triage(&request(text)).unwrap();
    assert_eq!(after.category.label, before.category.label);
    assert_eq!(after.category.confidence, before.category.confidence);
    assert_eq!(after.priority.label, before.priority.label);
    assert_eq!(after.queue.label, before.queue.label);
    assert!(after.neighbours.iter().all(|h| !h.id.starts_with("NEW-")));
    assert_eq!(
        e.deflect(&chat).unwrap().action,
        deflect_before.action,
        "the article learned nothing"
    );
    assert!(e.get_ticket("", "NEW-9").unwrap().is_none());
    assert!(e.get_ticket("", "NEW-10").unwrap().is_none());
    let pack_ticket = e.get_ticket("", "T-0100").unwrap().unwrap();
    assert_eq!(pack_ticket.category, "repair.not_cooling");
    assert_eq!(e.stats(None).corrections, 0);
    assert_eq!(e.stats(None).tickets, 45);
    assert_eq!(feedback_records(data.path()), 0, "nothing logged");

    // Accepted feedback is logged and applied.
    e.feedback(Feedback {
        ticket_id: "NEW-9".into(),
        body: text.into(),
        category: Some("repair.leak".into()),
        ..Feedback::default()
    })
    .unwrap();
    assert_eq!(feedback_records(data.path()), 1);
    assert_eq!(
        e.triage(&request(text)).unwrap().category.label.as_deref(),
        Some("repair.leak")
    );
}

#[test]
fn an_edited_pack_is_reingested_on_the_next_open() {
    let pack = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    common::write_pack(pack.path());
    let refund = ChatMessage {
        text: "如何申请退款？".into(),
        ..ChatMessage::default()
    };
    let taught = ChatMessage {
        text: "洗衣机往外冒水咋办".into(),
        ..ChatMessage::default()
    };
    {
        let e = open(pack.path(), data.path());
        let a = e.deflect(&refund).unwrap();
        assert_eq!(a.candidates[0].article.answer, "在订单页点击申请退款。");
        // An article added through the API, a correction of a pack ticket and a
        // phrasing taught by feedback: none may be lost when the pack changes.
        e.upsert_article(indexer::Article {
            id: "kb-api".into(),
            question: "门店几点关门？".into(),
            answer: "晚上九点。".into(),
            ..indexer::Article::default()
        })
        .unwrap();
        e.feedback(Feedback {
            ticket_id: "T-0000".into(),
            category: Some("billing.invoice".into()),
            ..Feedback::default()
        })
        .unwrap();
        e.feedback(Feedback {
            solved_by_article: Some("kb-leak".into()),
            message: Some(taught.text.clone()),
            ..Feedback::default()
        })
        .unwrap();
    }
    let marker = std::fs::read_to_string(data.path().join("pack-ingested")).unwrap();
    assert!(
        marker.starts_with("test-appliances\nfingerprint=sha256:"),
        "{marker}"
    );

    // Edit the pack: a new answer for kb-refund and a new article.
    let path = pack.path().join("articles.jsonl");
    let articles = std::fs::read_to_string(&path).unwrap().replace(
        "在订单页点击申请退款。",
        "请在“我的订单”中点击“退款”，3个工作日内到账。",
    ) + &serde_json::json!({"id": "kb-new", "question": "怎么预约上门安装？", "answer": "在服务页预约安装。"})
        .to_string()
        + "\n";
    std::fs::write(&path, articles).unwrap();

    let e = open(pack.path(), data.path());
    let a = e.deflect(&refund).unwrap();
    assert_eq!(a.action, DeflectAction::Answer, "{a:?}");
    assert_eq!(a.candidates[0].article.id, "kb-refund");
    assert_eq!(
        a.candidates[0].article.answer,
        "请在“我的订单”中点击“退款”，3个工作日内到账。"
    );
    let stats = e.stats(None);
    assert_eq!(stats.articles, 6, "4 pack + 1 new pack + 1 API article");
    assert_eq!(stats.tickets, 45, "pack tickets are not duplicated");
    let api = e
        .search(&indexer::SearchRequest {
            text: "门店几点关门？".into(),
            k: 3,
            ..indexer::SearchRequest::default()
        })
        .unwrap();
    assert_eq!(
        api.first().map(|h| h.id.as_str()),
        Some("kb-api"),
        "{api:?}"
    );
    let new = e
        .deflect(&ChatMessage {
            text: "怎么预约上门安装？".into(),
            ..ChatMessage::default()
        })
        .unwrap();
    assert_eq!(new.candidates[0].article.id, "kb-new");
    assert_eq!(
        e.get_ticket("", "T-0000").unwrap().unwrap().category,
        "billing.invoice",
        "the agent's correction survives re-ingestion"
    );
    let t = e.deflect(&taught).unwrap();
    assert_eq!(t.candidates[0].article.id, "kb-leak", "{t:?}");
    let record = e.article_record("", "kb-leak").unwrap();
    assert!(
        record.learned.iter().any(|p| p.text == taught.text
            && p.status == triage::api::LearnedStatus::Active
            && p.source == "agent"),
        "{:?}",
        record.learned
    );
    let updated = std::fs::read_to_string(data.path().join("pack-ingested")).unwrap();
    assert_ne!(updated, marker, "the marker records the new fingerprint");
}

#[test]
fn an_old_marker_without_fingerprint_still_opens_and_upserts() {
    let pack = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    common::write_pack(pack.path());
    drop(open(pack.path(), data.path()));
    let marker = data.path().join("pack-ingested");
    std::fs::write(&marker, "test-appliances\n").unwrap();
    let path = pack.path().join("articles.jsonl");
    let edited = std::fs::read_to_string(&path)
        .unwrap()
        .replace("检查排水管是否松动。", "关闭水阀并检查排水管。");
    std::fs::write(&path, edited).unwrap();
    let e = open(pack.path(), data.path());
    let r = e
        .deflect(&ChatMessage {
            text: "洗衣机漏水怎么办？".into(),
            ..ChatMessage::default()
        })
        .unwrap();
    assert_eq!(r.candidates[0].article.answer, "关闭水阀并检查排水管。");
    assert_eq!(e.stats(None).tickets, 45);
    assert!(std::fs::read_to_string(&marker)
        .unwrap()
        .contains("fingerprint="));
}

#[test]
fn unchanged_packs_are_not_rewritten_and_changes_are_counted() {
    let pack = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    common::write_pack(pack.path());
    drop(open(pack.path(), data.path()));
    let embedder = Arc::new(HashEmbedder::new(256));
    let sync = |p: &triage::Pack| {
        let index = indexer::Index::open(&data.path().join("index"), embedder.clone()).unwrap();
        let mut ingested = (0, 0);
        let report = triage::sync_pack(data.path(), p, &index, &[], |changed| {
            ingested = (changed.tickets.len(), changed.articles.len());
            index.upsert_tickets(changed.tickets.clone())?;
            index.upsert_articles(changed.articles.clone())?;
            Ok(())
        })
        .unwrap();
        (report, ingested)
    };
    let loaded = triage::Pack::load(pack.path()).unwrap();
    let (report, ingested) = sync(&loaded);
    assert!(!report.checked, "same fingerprint: nothing compared");
    assert_eq!(ingested, (0, 0));

    // An old marker on an unchanged pack: compared, nothing rewritten.
    std::fs::write(data.path().join("pack-ingested"), "test-appliances\n").unwrap();
    let (report, ingested) = sync(&loaded);
    assert!(report.checked);
    assert_eq!((report.tickets_upserted, report.articles_upserted), (0, 0));
    assert_eq!(ingested, (0, 0));

    // One ticket edited: only it is written.
    let path = pack.path().join("tickets.jsonl");
    let edited = std::fs::read_to_string(&path).unwrap().replacen(
        "\"priority\":\"P2\"",
        "\"priority\":\"P1\"",
        1,
    );
    std::fs::write(&path, edited).unwrap();
    let (report, ingested) = sync(&triage::Pack::load(pack.path()).unwrap());
    assert_eq!((report.tickets_upserted, report.articles_upserted), (1, 0));
    assert_eq!(ingested, (1, 0));
}

#[test]
fn a_data_dir_of_another_pack_is_refused() {
    let pack = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    common::write_pack(pack.path());
    drop(open(pack.path(), data.path()));
    let toml = pack.path().join("pack.toml");
    let renamed = std::fs::read_to_string(&toml)
        .unwrap()
        .replace("name = \"test-appliances\"", "name = \"other-pack\"");
    std::fs::write(&toml, renamed).unwrap();
    let err = open_err(pack.path(), data.path());
    let msg = err.to_string();
    assert!(matches!(err, Error::Pack { .. }), "{msg}");
    assert!(msg.contains("`test-appliances`"), "{msg}");
    assert!(msg.contains("`other-pack`"), "{msg}");
    assert!(msg.contains(&data.path().display().to_string()), "{msg}");
    // Nothing was ingested or rewritten.
    let marker = std::fs::read_to_string(data.path().join("pack-ingested")).unwrap();
    assert!(marker.starts_with("test-appliances\n"), "{marker}");
}

/// A ticket corrected by many agents at once keeps every correction.
#[test]
fn parallel_corrections_of_one_ticket_are_all_kept() {
    const FIELD_WRITERS: usize = 30;
    const ROUNDS: usize = 8;
    let f = fixture();
    for round in 0..ROUNDS {
        let id = format!("RACE-{round}");
        f.engine
            .upsert_ticket(Ticket {
                id: id.clone(),
                body: format!("空调不制冷，吹出来的是热风 第{round}轮"),
                category: "repair.not_cooling".into(),
                priority: "P3".into(),
                ..Ticket::default()
            })
            .unwrap();
        let correction = |fb: Feedback| Feedback {
            ticket_id: id.clone(),
            ..fb
        };
        let mut jobs = vec![
            correction(Feedback {
                category: Some("repair.leak".into()),
                ..Feedback::default()
            }),
            correction(Feedback {
                priority: Some("P0".into()),
                ..Feedback::default()
            }),
        ];
        for i in 0..FIELD_WRITERS {
            jobs.push(correction(Feedback {
                fields: BTreeMap::from([(format!("f{i}"), format!("v{i}"))]),
                ..Feedback::default()
            }));
        }
        let barrier = std::sync::Barrier::new(jobs.len());
        std::thread::scope(|s| {
            for fb in jobs {
                let (engine, barrier) = (&f.engine, &barrier);
                s.spawn(move || {
                    barrier.wait();
                    engine.feedback(fb).unwrap();
                });
            }
        });
        let t = f.engine.get_ticket("", &id).unwrap().unwrap();
        assert_eq!(t.category, "repair.leak", "round {round}: {t:?}");
        assert_eq!(t.queue, "repair", "round {round}: {t:?}");
        assert_eq!(t.priority, "P0", "round {round}: {t:?}");
        for i in 0..FIELD_WRITERS {
            assert_eq!(
                t.fields.get(&format!("f{i}")).map(String::as_str),
                Some(format!("v{i}").as_str()),
                "round {round}: field f{i} lost: {:?}",
                t.fields
            );
        }
        // The index holds the same copy as the memory.
        let hits = f
            .engine
            .search(&indexer::SearchRequest {
                text: t.body.clone(),
                k: 50,
                filters: indexer::Filters {
                    kind: Some(indexer::DocKind::Ticket),
                    ..indexer::Filters::default()
                },
                ..indexer::SearchRequest::default()
            })
            .unwrap();
        let indexed = hits
            .iter()
            .find_map(|h| match &h.doc {
                indexer::Document::Ticket(x) if x.id == id => Some(x.clone()),
                _ => None,
            })
            .expect("the corrected ticket is in the index");
        assert_eq!(indexed, t, "round {round}: index and memory disagree");
    }
    assert_eq!(
        f.engine.stats(None).corrections,
        ROUNDS * (FIELD_WRITERS + 2)
    );
}

/// Many "this article solved it" calls at once each add their phrasing.
#[test]
fn parallel_solved_by_article_keeps_every_phrasing() {
    const WRITERS: usize = 20;
    let f = fixture();
    let messages: Vec<String> = (0..WRITERS)
        .map(|i| format!("空调第{i}号机不出冷风了该怎么处理"))
        .collect();
    let barrier = std::sync::Barrier::new(WRITERS);
    std::thread::scope(|s| {
        for m in &messages {
            let (engine, barrier) = (&f.engine, &barrier);
            s.spawn(move || {
                barrier.wait();
                engine
                    .feedback(Feedback {
                        solved_by_article: Some("kb-cool".into()),
                        message: Some(m.clone()),
                        ..Feedback::default()
                    })
                    .unwrap();
            });
        }
    });
    // Taught phrasings are kept apart from the article, with their source.
    let record = f
        .engine
        .article_record("", "kb-cool")
        .expect("kb-cool exists");
    for m in &messages {
        assert!(
            record
                .learned
                .iter()
                .any(|p| &p.text == m && p.approved_by_agent),
            "phrasing `{m}` lost: {:?}",
            record.learned
        );
    }
    let stored = article_in_index(&f.engine, "kb-cool", "空调不制冷怎么办？")
        .expect("kb-cool is in the index");
    assert!(
        messages.iter().all(|m| !stored.alt_questions.contains(m)),
        "the article as written is unchanged"
    );
    // The FAQ bank learned them too: each message is now answered by kb-cool.
    for m in &messages {
        let d = f
            .engine
            .deflect(&ChatMessage {
                text: m.clone(),
                ..ChatMessage::default()
            })
            .unwrap();
        assert_eq!(
            d.candidates.first().map(|c| c.article.id.as_str()),
            Some("kb-cool"),
            "{m}: {d:?}"
        );
    }
}

/// The stored copy of article `id`, found in the index by searching `question`.
fn article_in_index(engine: &Engine, id: &str, question: &str) -> Option<indexer::Article> {
    engine
        .search(&indexer::SearchRequest {
            text: question.into(),
            k: 50,
            filters: indexer::Filters {
                kind: Some(indexer::DocKind::Article),
                ..indexer::Filters::default()
            },
            ..indexer::SearchRequest::default()
        })
        .unwrap()
        .into_iter()
        .find_map(|h| match h.doc {
            indexer::Document::Article(a) if a.id == id => Some(a),
            _ => None,
        })
}

/// The hashing embedder, slowed down for big query batches (an article's
/// phrasings), so that a write racing an article upsert lands while the
/// phrasings are being embedded.
struct SlowPhrasings(HashEmbedder);

impl models::TextEmbedder for SlowPhrasings {
    fn embed(
        &self,
        texts: &[&str],
        kind: models::EmbedKind,
    ) -> std::result::Result<Vec<Vec<f32>>, models::Error> {
        if kind == models::EmbedKind::Query && texts.len() >= 50 {
            std::thread::sleep(std::time::Duration::from_millis(30));
        }
        self.0.embed(texts, kind)
    }

    fn dim(&self) -> usize {
        self.0.dim()
    }

    fn name(&self) -> &str {
        self.0.name()
    }
}

/// An article upserted and deleted at the same time ends up either in both the
/// index and the FAQ bank or in neither: deleted when the delete came last (it
/// found the article), stored when the upsert came last.
#[test]
fn parallel_article_upsert_and_delete_keep_index_and_bank_in_step() {
    const ROUNDS: usize = 20;
    let pack = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    common::write_pack(pack.path());
    let engine = Engine::open(
        EngineConfig::new(pack.path().to_path_buf(), data.path().to_path_buf()),
        Arc::new(SlowPhrasings(HashEmbedder::new(256))),
    )
    .unwrap();
    let baseline = engine.stats(None).articles;
    let question = "冰箱门关不严总是自动弹开怎么调整？";
    let article = indexer::Article {
        id: "kb-race".into(),
        question: question.into(),
        answer: "调整冰箱底脚，使机身略向后倾。".into(),
        alt_questions: (0..120).map(|i| format!("冰箱门关不上 情况{i}")).collect(),
        category: "repair.leak".into(),
        ..indexer::Article::default()
    };
    let (mut deleted, mut stored) = (0, 0);
    for round in 0..ROUNDS {
        let barrier = std::sync::Barrier::new(2);
        // Start the delete 0 to 50 ms after the upsert, across its phrasing
        // embedding (30 ms), so that rounds end both ways; the assertions hold
        // whichever write comes last.
        let head_start = std::time::Duration::from_millis(10 * (round as u64 % 6));
        let existed = std::thread::scope(|s| {
            let up = s.spawn(|| {
                barrier.wait();
                engine.upsert_article(article.clone()).unwrap();
            });
            let del = s.spawn(|| {
                barrier.wait();
                std::thread::sleep(head_start);
                engine.delete_article("", "kb-race").unwrap()
            });
            up.join().unwrap();
            del.join().unwrap()
        });
        let in_index = article_in_index(&engine, "kb-race", question).is_some();
        let in_bank = engine.stats(None).articles == baseline + 1;
        let answered = engine
            .deflect(&ChatMessage {
                text: question.into(),
                ..ChatMessage::default()
            })
            .unwrap()
            .candidates
            .iter()
            .any(|c| c.article.id == "kb-race");
        if existed {
            // The delete came last.
            deleted += 1;
            assert!(
                !in_index && !in_bank && !answered,
                "round {round}: deleted, yet index {in_index}, bank {in_bank}, deflect {answered}"
            );
        } else {
            // The upsert came last.
            stored += 1;
            assert!(
                in_index && in_bank && answered,
                "round {round}: stored, yet index {in_index}, bank {in_bank}, deflect {answered}"
            );
            assert!(engine.delete_article("", "kb-race").unwrap());
        }
        assert!(article_in_index(&engine, "kb-race", question).is_none());
        assert_eq!(engine.stats(None).articles, baseline);
    }
    assert_eq!(deleted + stored, ROUNDS);
    eprintln!("article race: {deleted} rounds ended deleted, {stored} stored");
}

/// One feedback record as `feedback.jsonl` stores it.
fn feedback_line(ticket_id: &str) -> String {
    serde_json::json!({
        "at": "2026-03-01T00:00:00Z",
        "tenant": "",
        "ticket_id": ticket_id,
        "changes": ["category: a → b"],
        "article": null,
    })
    .to_string()
}

#[test]
fn a_feedback_log_torn_inside_a_multibyte_character_still_opens() {
    let pack = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    common::write_pack(pack.path());
    let torn = feedback_line("工单-3");
    let cut = torn.find('工').unwrap() + 1; // inside the 3-byte character
    let mut bytes = format!("{}\n{}\n", feedback_line("T1"), feedback_line("T2")).into_bytes();
    bytes.extend_from_slice(&torn.as_bytes()[..cut]);
    assert!(std::str::from_utf8(&bytes).is_err());
    let log = data.path().join("feedback.jsonl");
    std::fs::write(&log, &bytes).unwrap();

    let engine = open(pack.path(), data.path());
    assert_eq!(engine.stats(None).corrections, 2);
    // Later appends do not bury the torn line mid-file: the log reopens.
    engine
        .feedback(Feedback {
            ticket_id: "T4".into(),
            body: "空调不制冷".into(),
            category: Some("repair.leak".into()),
            ..Feedback::default()
        })
        .unwrap();
    drop(engine);
    let text = String::from_utf8(std::fs::read(&log).unwrap()).unwrap();
    let ids: Vec<String> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["ticket_id"].to_string())
        .collect();
    assert_eq!(ids, [r#""T1""#, r#""T2""#, r#""T4""#]);
    assert_eq!(open(pack.path(), data.path()).stats(None).corrections, 3);
}

#[test]
fn an_undecodable_middle_line_in_the_feedback_log_is_an_error() {
    let pack = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    common::write_pack(pack.path());
    let mut bytes = format!("{}\n", feedback_line("T1")).into_bytes();
    bytes.extend_from_slice(b"{\"at\":\"\xff\xfe\"}\n");
    bytes.extend_from_slice(format!("{}\n", feedback_line("T3")).as_bytes());
    let log = data.path().join("feedback.jsonl");
    std::fs::write(&log, &bytes).unwrap();

    let err = open_err(pack.path(), data.path());
    let msg = err.to_string();
    assert!(matches!(err, Error::Io { .. }), "{msg}");
    assert!(msg.contains(&log.display().to_string()), "{msg}");
    assert!(msg.contains("line 2"), "{msg}");
    assert!(msg.contains("UTF-8"), "{msg}");
    // Nothing was cut off the corrupt log.
    assert_eq!(std::fs::read(&log).unwrap(), bytes);
}

#[test]
fn a_restart_with_the_same_tickets_loads_the_stored_heads_and_a_change_retrains() {
    let pack = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    common::write_pack(pack.path());
    let text = "空调不制冷，吹出来的是热风";
    let stored = data.path().join("heads/category.json");
    {
        let e = open(pack.path(), data.path());
        assert_eq!(
            e.triage(&request(text)).unwrap().category.label.as_deref(),
            Some("repair.not_cooling")
        );
    }
    // Plant a head that calls everything `billing.refund`: if the next start
    // loads the stored head instead of training, every request says so.
    let mut head: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&stored).unwrap()).unwrap();
    let labels: Vec<String> = serde_json::from_value(head["classifier"]["labels"].clone()).unwrap();
    let refund = labels.iter().position(|l| l == "billing.refund").unwrap();
    head["classifier"]["head"]["b"][refund] = serde_json::json!(1000.0);
    std::fs::write(&stored, serde_json::to_vec(&head).unwrap()).unwrap();
    {
        let e = open(pack.path(), data.path());
        assert_eq!(
            e.triage(&request(text)).unwrap().category.label.as_deref(),
            Some("billing.refund"),
            "the stored head was not used"
        );
        // A change of the category head's training data makes it stale.
        let mut t = e.get_ticket("", "T-0001").unwrap().unwrap();
        t.category = "billing.refund".into();
        e.upsert_ticket(t).unwrap();
    }
    let e = open(pack.path(), data.path());
    assert_eq!(
        e.triage(&request(text)).unwrap().category.label.as_deref(),
        Some("repair.not_cooling"),
        "a stale stored head was used"
    );
    // A damaged file is retrained over, not an error.
    drop(e);
    std::fs::write(&stored, b"{not json").unwrap();
    let e = open(pack.path(), data.path());
    assert_eq!(
        e.triage(&request(text)).unwrap().category.label.as_deref(),
        Some("repair.not_cooling")
    );
    assert!(serde_json::from_slice::<serde_json::Value>(&std::fs::read(&stored).unwrap()).is_ok());
}

#[test]
fn a_garbled_middle_record_in_the_feedback_log_is_an_error_not_a_lost_correction() {
    let pack = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    common::write_pack(pack.path());
    // Before: a valid UTF-8 line that is not a record was skipped with a warning.
    let log = data.path().join("feedback.jsonl");
    let text = format!(
        "{}\n{{\"at\": \"2026\", \"ticket\n{}\n",
        feedback_line("T1"),
        feedback_line("T3")
    );
    std::fs::write(&log, &text).unwrap();
    let msg = open_err(pack.path(), data.path()).to_string();
    assert!(
        msg.contains("line 2") && msg.contains("feedback.jsonl"),
        "{msg}"
    );
    assert_eq!(std::fs::read_to_string(&log).unwrap(), text, "nothing cut");
}

/// A hashing embedder that fails while `FAIL` is set: a storage step that
/// embeds (the index write) fails after the engine has planned a change.
struct Flaky {
    inner: HashEmbedder,
    fail: std::sync::atomic::AtomicBool,
}

impl models::TextEmbedder for Flaky {
    fn embed(
        &self,
        texts: &[&str],
        kind: models::EmbedKind,
    ) -> Result<Vec<Vec<f32>>, models::Error> {
        if self.fail.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(models::Error::Tokenizer("injected failure".into()));
        }
        self.inner.embed(texts, kind)
    }
    fn dim(&self) -> usize {
        self.inner.dim()
    }
    fn name(&self) -> &str {
        // The same model as `open` uses, so the data dir reopens with it.
        self.inner.name()
    }
}

#[test]
fn a_correction_that_never_reached_the_index_is_not_taken_for_one_after_a_restart() {
    let pack = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    common::write_pack(pack.path());
    let text = "电视开不了机，按电源键没反应";
    let flaky = Arc::new(Flaky {
        inner: HashEmbedder::new(256),
        fail: std::sync::atomic::AtomicBool::new(false),
    });
    {
        let e = Engine::open(
            EngineConfig::new(pack.path().to_path_buf(), data.path().to_path_buf()),
            flaky.clone(),
        )
        .unwrap();
        // The index write of the correction fails (as a kill -9 between the
        // log and the index would leave it): the caller is told.
        flaky.fail.store(true, std::sync::atomic::Ordering::SeqCst);
        let err = e.feedback(Feedback {
            ticket_id: "CC-1".into(),
            body: text.into(),
            category: Some("billing.invoice".into()),
            ..Feedback::default()
        });
        assert!(err.is_err());
        flaky.fail.store(false, std::sync::atomic::Ordering::SeqCst);
    }
    // Before: the log said "CC-1 corrected" although the index never had it.
    assert_eq!(
        feedback_records(data.path()),
        0,
        "no record of what was not applied"
    );
    {
        let e = open(pack.path(), data.path());
        assert_eq!(e.stats(None).corrections, 0);
        assert!(e.get_ticket("", "CC-1").unwrap().is_none());
        // Later the ticket arrives through an ordinary write, not a correction...
        e.upsert_ticket(Ticket {
            id: "CC-1".into(),
            body: text.into(),
            category: "repair.no_power".into(),
            ..Ticket::default()
        })
        .unwrap();
    }
    // ...and after a restart it must not decide as "an agent correction".
    let e = open(pack.path(), data.path());
    let t = e.get_ticket("", "CC-1").unwrap().unwrap();
    let r = e.classify_ticket(&t).unwrap();
    assert!(
        !r.category
            .reasons
            .iter()
            .any(|x| x.contains("agent correction")),
        "{:?}",
        r.category
    );
}

#[test]
fn each_tenant_learns_from_its_own_tickets_and_the_pack_only() {
    let f = fixture();
    let probe = request("发票抬头写错了，需要重新开具增值税发票");
    let before = f.engine.triage(&probe).unwrap();
    // Tenant `mallory` labels invoice requests as power faults and retrains.
    for i in 0..40 {
        f.engine
            .upsert_ticket(Ticket {
                id: format!("M-{i}"),
                tenant: "mallory".into(),
                body: format!("发票抬头写错了，需要重新开具增值税发票 {i}"),
                category: "repair.no_power".into(),
                priority: "P0".into(),
                ..Ticket::default()
            })
            .unwrap();
    }
    assert_eq!(
        f.engine.pending_changes(),
        vec![("mallory".to_string(), 40)]
    );
    assert_eq!(f.engine.retrain("mallory").unwrap(), 40);
    assert!(f.engine.pending_changes().is_empty());
    // Others (the default tenant, and a tenant with no tickets) are untouched.
    for tenant in ["", "bob"] {
        let mut req = probe.clone();
        req.tenant = tenant.into();
        let after = f.engine.triage(&req).unwrap();
        assert_eq!(
            after.category.label, before.category.label,
            "{tenant}: {after:?}"
        );
        assert_eq!(after.priority.label, before.priority.label, "{tenant}");
        assert!(after.neighbours.iter().all(|h| !h.id.starts_with("M-")));
    }
    let mut req = probe.clone();
    req.tenant = "mallory".into();
    let own = f.engine.triage(&req).unwrap();
    assert_eq!(
        own.category.label.as_deref(),
        Some("repair.no_power"),
        "{:?}",
        own.category
    );
}
