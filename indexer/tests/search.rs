//! Behaviour of writes and searches through the public API.

mod common;

use common::{article, open, ticket};
use indexer::{
    DocKind, Document, Error, Filters, Fusion, Index, SearchMode, SearchRequest, Ticket,
};

fn req(text: &str, mode: SearchMode) -> SearchRequest {
    SearchRequest {
        text: text.into(),
        mode,
        k: 10,
        ..Default::default()
    }
}

fn ids(hits: &[indexer::Hit]) -> Vec<&str> {
    hits.iter().map(|h| h.id.as_str()).collect()
}

fn sample(index: &Index) {
    index
        .upsert_tickets(vec![
            ticket(
                "t1",
                "打印机无法连接WiFi",
                "办公室的打印机连不上无线网络，重启也没用",
            ),
            ticket(
                "t2",
                "Refund not received",
                "I returned the blender two weeks ago and still have no refund",
            ),
            ticket("t3", "洗衣机漏水", "洗衣机底部漏水，地板全湿了"),
            ticket(
                "t4",
                "Printer paper jam",
                "The printer keeps jamming on every page",
            ),
        ])
        .unwrap();
    index
        .upsert_articles(vec![
            article(
                "a1",
                "如何申请退款？",
                "在订单页面点击申请退款，3-5个工作日到账。",
            ),
            article(
                "a2",
                "How do I reset my router?",
                "Hold the reset button for 10 seconds.",
            ),
        ])
        .unwrap();
}

#[test]
fn index_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Index>();
}

#[test]
fn bm25_finds_chinese_and_stemmed_english() {
    let dir = tempfile::tempdir().unwrap();
    let index = open(dir.path());
    sample(&index);
    let hits = index
        .search(&req("打印机连接问题", SearchMode::Bm25))
        .unwrap();
    assert_eq!(hits[0].id, "t1");
    assert!(hits[0]
        .explanation
        .matched_terms
        .contains(&"打印机".to_string()));
    assert!(hits[0].explanation.bm25_rank == Some(1) && hits[0].explanation.vector_rank.is_none());

    let hits = index
        .search(&req("printers jammed", SearchMode::Bm25))
        .unwrap();
    assert_eq!(hits[0].id, "t4", "{:?}", ids(&hits));
    assert!(hits[0]
        .explanation
        .matched_terms
        .contains(&"printer".to_string()));
    // Only documents containing a query term are BM25 hits.
    assert!(!ids(&hits).contains(&"t3"));
}

#[test]
fn title_outweighs_body() {
    let dir = tempfile::tempdir().unwrap();
    let index = open(dir.path());
    index
        .upsert_tickets(vec![
            ticket(
                "body",
                "Other issue",
                "something about the dishwasher and more words here",
            ),
            ticket(
                "title",
                "Dishwasher",
                "something about an other issue and more words here",
            ),
        ])
        .unwrap();
    let hits = index.search(&req("dishwasher", SearchMode::Bm25)).unwrap();
    assert_eq!(ids(&hits), ["title", "body"]);
}

#[test]
fn hybrid_explains_both_retrievers() {
    let dir = tempfile::tempdir().unwrap();
    let index = open(dir.path());
    sample(&index);
    let rrf = SearchRequest {
        fusion: Fusion::Rrf { k: 60.0 },
        ..req("洗衣机漏水怎么办", SearchMode::Hybrid)
    };
    let hits = index.search(&rrf).unwrap();
    assert_eq!(hits[0].id, "t3");
    let e = &hits[0].explanation;
    assert_eq!(e.bm25_rank, Some(1));
    assert_eq!(e.vector_rank, Some(1));
    let rrf = 2.0 / 61.0;
    assert!((e.fused_score - rrf).abs() < 1e-6, "{e:?}");
    assert_eq!(hits[0].score, e.fused_score);
    // Every hybrid hit carries a cosine, even those only BM25 ranked.
    assert!(hits
        .iter()
        .all(|h| h.explanation.vector_similarity.is_some()));
    // Scores are non-increasing.
    assert!(hits.windows(2).all(|w| w[0].score >= w[1].score));

    // The default (z-score) fusion agrees on a hit both retrievers rank first,
    // with a positive score, and orders the same candidates.
    let default = index
        .search(&req("洗衣机漏水怎么办", SearchMode::Hybrid))
        .unwrap();
    assert_eq!(default[0].id, "t3");
    assert!(default[0].score > 0.0);
    assert!(default.windows(2).all(|w| w[0].score >= w[1].score));
    let mut a = ids(&default);
    let mut b = ids(&hits);
    a.sort_unstable();
    b.sort_unstable();
    assert_eq!(a, b);

    let weighted = SearchRequest {
        fusion: Fusion::Weighted { bm25_weight: 0.5 },
        ..req("洗衣机漏水怎么办", SearchMode::Hybrid)
    };
    let hits = index.search(&weighted).unwrap();
    let e = &hits[0].explanation;
    let expect = 0.5 * 1.0 + 0.5 * e.vector_similarity.unwrap();
    assert_eq!(hits[0].id, "t3");
    assert!((e.fused_score - expect).abs() < 1e-5, "{e:?}");
}

#[test]
fn vector_mode_ranks_by_cosine() {
    let dir = tempfile::tempdir().unwrap();
    let index = open(dir.path());
    sample(&index);
    let hits = index.search(&req("退款申请", SearchMode::Vector)).unwrap();
    assert_eq!(hits.len(), 6);
    assert!(hits.iter().all(|h| h.explanation.bm25_score.is_none()));
    let sims: Vec<f32> = hits
        .iter()
        .map(|h| h.explanation.vector_similarity.unwrap())
        .collect();
    assert!(sims.windows(2).all(|w| w[0] >= w[1]), "{sims:?}");
    assert_eq!(hits[0].id, "a1");
}

#[test]
fn filters_apply_inside_both_retrievers() {
    let dir = tempfile::tempdir().unwrap();
    let index = open(dir.path());
    let mk = |id: &str, cat: &str, status: &str, at: &str, tenant: &str| Ticket {
        category: cat.into(),
        status: status.into(),
        created_at: at.into(),
        tenant: tenant.into(),
        ..ticket(id, "screen flickers", "the screen flickers after update")
    };
    index
        .upsert_tickets(vec![
            mk("1", "display", "open", "2026-01-10T00:00:00Z", ""),
            mk("2", "display", "resolved", "2026-02-10T00:00:00Z", ""),
            mk("3", "power", "resolved", "2026-03-10T00:00:00Z", ""),
            mk("4", "display", "resolved", "2026-02-11T00:00:00Z", "acme"),
        ])
        .unwrap();
    index
        .upsert_articles(vec![article("a", "screen flickers", "update the driver")])
        .unwrap();
    for mode in [SearchMode::Bm25, SearchMode::Vector, SearchMode::Hybrid] {
        let mut r = req("screen flickers", mode);
        r.k = 1;
        r.filters = Filters {
            kind: Some(DocKind::Ticket),
            categories: vec!["display".into()],
            statuses: vec!["resolved".into()],
            ..Default::default()
        };
        // k = 1: the filter must apply before truncation, not after.
        assert_eq!(ids(&index.search(&r).unwrap()), ["2"], "{mode:?}");
        r.k = 10;
        r.filters = Filters {
            created_after: Some("2026-02-01".into()),
            created_before: Some("2026-03-01T00:00:00Z".into()),
            ..Default::default()
        };
        assert_eq!(ids(&index.search(&r).unwrap()), ["2"], "{mode:?}");
        r.filters = Filters {
            tenant: Some("acme".into()),
            ..Default::default()
        };
        assert_eq!(ids(&index.search(&r).unwrap()), ["4"], "{mode:?}");
        r.filters = Filters {
            kind: Some(DocKind::Article),
            ..Default::default()
        };
        assert_eq!(ids(&index.search(&r).unwrap()), ["a"], "{mode:?}");
    }
    let bad = SearchRequest {
        filters: Filters {
            created_after: Some("last week".into()),
            ..Default::default()
        },
        ..req("screen", SearchMode::Bm25)
    };
    assert!(matches!(index.search(&bad), Err(Error::InvalidRequest(_))));
}

#[test]
fn upsert_replaces_and_delete_removes() {
    let dir = tempfile::tempdir().unwrap();
    let index = open(dir.path());
    sample(&index);
    assert_eq!(index.len(DocKind::Ticket), 4);
    index
        .upsert_tickets(vec![ticket("t3", "冰箱不制冷", "冰箱冷藏室温度很高")])
        .unwrap();
    assert_eq!(index.len(DocKind::Ticket), 4);
    for mode in [SearchMode::Bm25, SearchMode::Vector, SearchMode::Hybrid] {
        // The old text matches neither lexically nor by its old vector.
        let hits = index.search(&req("洗衣机漏水", mode)).unwrap();
        for h in hits.iter().filter(|h| h.id == "t3") {
            assert!(h.explanation.bm25_score.is_none(), "{mode:?}");
            assert!(h.explanation.vector_similarity.unwrap() < 0.5, "{mode:?}");
        }
        let hits = index.search(&req("冰箱不制冷", mode)).unwrap();
        assert_eq!(hits[0].id, "t3", "{mode:?}");
    }
    match index.get(DocKind::Ticket, "", "t3").unwrap() {
        Some(Document::Ticket(t)) => assert_eq!(t.title, "冰箱不制冷"),
        other => panic!("unexpected {other:?}"),
    }
    assert!(index.delete(DocKind::Ticket, "", "t3").unwrap());
    assert!(!index.delete(DocKind::Ticket, "", "t3").unwrap());
    assert!(index.get(DocKind::Ticket, "", "t3").unwrap().is_none());
    assert!(index.vector(DocKind::Ticket, "", "t3").is_none());
    assert_eq!(index.len(DocKind::Ticket), 3);
    for mode in [SearchMode::Bm25, SearchMode::Vector, SearchMode::Hybrid] {
        let hits = index.search(&req("冰箱不制冷", mode)).unwrap();
        assert!(!ids(&hits).contains(&"t3"), "{mode:?}");
    }
    // Same id, other kind or tenant: a different document.
    assert!(index.get(DocKind::Article, "", "t1").unwrap().is_none());
    assert!(index.get(DocKind::Ticket, "other", "t1").unwrap().is_none());
}

#[test]
fn unchanged_text_keeps_its_vector() {
    let dir = tempfile::tempdir().unwrap();
    let index = open(dir.path());
    sample(&index);
    let before = index.stats();
    let mut t = ticket(
        "t1",
        "打印机无法连接WiFi",
        "办公室的打印机连不上无线网络，重启也没用",
    );
    t.status = "resolved".into();
    index.upsert_tickets(vec![t]).unwrap();
    let after = index.stats();
    assert_eq!(
        after.graph_points, before.graph_points,
        "status change must not add a vector"
    );
    let filtered = SearchRequest {
        filters: Filters {
            statuses: vec!["resolved".into()],
            ..Default::default()
        },
        ..req("打印机", SearchMode::Hybrid)
    };
    assert_eq!(ids(&index.search(&filtered).unwrap()), ["t1"]);
}

#[test]
fn all_and_vector_return_stored_vectors() {
    let dir = tempfile::tempdir().unwrap();
    let index = open(dir.path());
    sample(&index);
    let tickets = index.all(DocKind::Ticket, Some("")).unwrap();
    assert_eq!(tickets.len(), 4);
    for (doc, v) in &tickets {
        let Document::Ticket(t) = doc else {
            panic!("kind")
        };
        assert_eq!(
            index.vector(DocKind::Ticket, "", &t.id).as_deref(),
            Some(&v[..])
        );
        let norm: f32 = v.iter().map(|x| x * x).sum();
        assert!((norm - 1.0).abs() < 1e-4);
    }
    assert_eq!(index.all(DocKind::Article, None).unwrap().len(), 2);
    assert!(index
        .all(DocKind::Article, Some("nobody"))
        .unwrap()
        .is_empty());
}

#[test]
fn bad_input_gives_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let index = open(dir.path());
    let err = index
        .upsert_tickets(vec![ticket("", "x", "y")])
        .unwrap_err();
    assert!(err.to_string().contains("id is empty"), "{err}");
    let bad_time = Ticket {
        created_at: "tomorrow".into(),
        ..ticket("x", "a", "b")
    };
    let err = index.upsert_tickets(vec![bad_time]).unwrap_err();
    assert!(err.to_string().contains("created_at"), "{err}");
    assert!(index.is_empty(), "a failed batch writes nothing");
    let too_many = SearchRequest {
        k: 1_000_000,
        ..req("x", SearchMode::Bm25)
    };
    assert!(matches!(
        index.search(&too_many),
        Err(Error::InvalidRequest(_))
    ));
    let bad_weight = SearchRequest {
        fusion: Fusion::Weighted { bm25_weight: 2.0 },
        ..req("x", SearchMode::Hybrid)
    };
    assert!(matches!(
        index.search(&bad_weight),
        Err(Error::InvalidRequest(_))
    ));
    let err = index
        .search_with_vector(&req("x", SearchMode::Vector), &[1.0, 2.0])
        .unwrap_err();
    assert!(err.to_string().contains("dimension 2"), "{err}");
    let err = index
        .search_with_vector(&req("x", SearchMode::Vector), &[f32::NAN; 64])
        .unwrap_err();
    assert!(err.to_string().contains("NaN"), "{err}");
    // Empty query text or k = 0: no hits, no error.
    assert!(index
        .search(&req("   ", SearchMode::Hybrid))
        .unwrap()
        .is_empty());

    let dir2 = tempfile::tempdir().unwrap();
    let broken = Index::open(dir2.path(), std::sync::Arc::new(common::BrokenEmbedder)).unwrap();
    let err = broken
        .upsert_tickets(vec![ticket("1", "a", "b")])
        .unwrap_err();
    assert!(err.to_string().contains("dimension 3"), "{err}");
}

#[test]
fn ingest_jsonl_reports_and_names_bad_lines() {
    let dir = tempfile::tempdir().unwrap();
    let index = open(dir.path());
    let input = tempfile::tempdir().unwrap();
    let good = input.path().join("tickets.jsonl");
    let mut lines = String::new();
    for i in 0..300 {
        lines.push_str(
            &serde_json::to_string(&ticket(&format!("t{i}"), &format!("问题 {i}"), "body text"))
                .unwrap(),
        );
        lines.push('\n');
        if i == 10 {
            lines.push('\n');
        }
    }
    std::fs::write(&good, &lines).unwrap();
    let report = index.ingest_jsonl(DocKind::Ticket, &good, false).unwrap();
    assert_eq!(report.docs, 300);
    assert_eq!(report.embedded, 300);
    assert_eq!(index.len(DocKind::Ticket), 300);
    // Re-ingesting unchanged documents embeds nothing.
    let again = index.ingest_jsonl(DocKind::Ticket, &good, false).unwrap();
    assert_eq!((again.docs, again.embedded), (300, 0));
    assert_eq!(index.len(DocKind::Ticket), 300);

    let bad = input.path().join("bad.jsonl");
    std::fs::write(&bad, "{\"id\":\"ok\"}\n{\"id\": 5}\n").unwrap();
    let err = index
        .ingest_jsonl(DocKind::Article, &bad, false)
        .unwrap_err();
    assert!(matches!(err, Error::BadLine { line: 2, .. }), "{err}");
    assert!(err.to_string().contains("bad.jsonl:2"), "{err}");
    assert_eq!(
        index.len(DocKind::Article),
        0,
        "nothing written from a bad file"
    );
    let missing = index.ingest_jsonl(DocKind::Article, &input.path().join("nope.jsonl"), false);
    assert!(matches!(missing, Err(Error::Io { .. })));
}

#[test]
fn concurrent_searches_during_writes() {
    let dir = tempfile::tempdir().unwrap();
    let index = open(dir.path());
    sample(&index);
    std::thread::scope(|s| {
        for _ in 0..3 {
            s.spawn(|| {
                for _ in 0..30 {
                    let hits = index.search(&req("打印机", SearchMode::Hybrid)).unwrap();
                    assert!(ids(&hits).contains(&"t1"));
                }
            });
        }
        s.spawn(|| {
            for i in 0..20 {
                index
                    .upsert_tickets(vec![ticket(&format!("n{i}"), "new ticket", "more text")])
                    .unwrap();
            }
        });
    });
    assert_eq!(index.len(DocKind::Ticket), 24);
}

#[test]
fn evaluate_scores_each_mode() {
    let dir = tempfile::tempdir().unwrap();
    let corpus: Vec<(String, String)> = [
        ("1", "如何申请退款"),
        ("2", "打印机无法连接网络"),
        ("3", "洗衣机漏水怎么办"),
        ("4", "how to reset my password"),
    ]
    .iter()
    .map(|(i, t)| (i.to_string(), t.to_string()))
    .collect();
    let queries: Vec<(String, Vec<String>)> = [
        ("退款怎么申请", vec!["1"]),
        ("洗衣机漏水", vec!["3"]),
        ("password reset", vec!["4"]),
        ("zzz", vec!["2"]),
        ("no relevant documents: skipped", vec![]),
    ]
    .iter()
    .map(|(t, r)| (t.to_string(), r.iter().map(|s| s.to_string()).collect()))
    .collect();
    let modes = [SearchMode::Bm25, SearchMode::Vector, SearchMode::Hybrid];
    let reports = indexer::eval::evaluate(
        &corpus,
        &queries,
        &modes,
        common::NgramEmbedder::arc("ngram-test", 64),
        dir.path(),
    )
    .unwrap();
    assert_eq!(reports.iter().map(|r| r.mode).collect::<Vec<_>>(), modes);
    assert!(reports.iter().all(|r| r.n == 4));
    // BM25 finds the three queries that share words, at rank 1, and not "zzz".
    let b = &reports[0];
    assert_eq!(
        (b.recall_at_1, b.recall_at_10, b.mrr_at_10),
        (0.75, 0.75, 0.75)
    );
    // Vector search ranks the whole (4-document) corpus, so everything is in the top 10.
    assert_eq!(reports[1].recall_at_10, 1.0);
    assert!(reports[1].recall_at_1 >= 0.5);
}
