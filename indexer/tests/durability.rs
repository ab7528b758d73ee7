//! Persistence: reopen, model mismatch, damaged files, locking, kill -9, and
//! the HNSW graph against exact search across deletes and reopen.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;

use common::{open, ticket, NgramEmbedder, RandomEmbedder};
use indexer::{DocKind, Error, Index, SearchMode, SearchRequest, Ticket};

fn bm25(text: &str) -> SearchRequest {
    SearchRequest {
        text: text.into(),
        mode: SearchMode::Bm25,
        ..Default::default()
    }
}

#[test]
fn reopen_keeps_documents_and_vectors() {
    let dir = tempfile::tempdir().unwrap();
    let v = {
        let index = open(dir.path());
        index
            .upsert_tickets(vec![ticket("1", "空调不制冷", "空调开了半小时还是热风")])
            .unwrap();
        index.vector(DocKind::Ticket, "", "1").unwrap()
    };
    let index = open(dir.path());
    assert_eq!(index.len(DocKind::Ticket), 1);
    assert_eq!(index.vector(DocKind::Ticket, "", "1").unwrap(), v);
    let hits = index.search(&bm25("空调")).unwrap();
    assert_eq!(hits[0].id, "1");
    let hybrid = SearchRequest {
        mode: SearchMode::Hybrid,
        ..bm25("空调不制冷")
    };
    assert_eq!(
        index.search(&hybrid).unwrap()[0].explanation.vector_rank,
        Some(1)
    );
}

#[test]
fn another_model_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    drop(open(dir.path()));
    let err = Index::open(dir.path(), NgramEmbedder::arc("other-model", 64)).unwrap_err();
    assert!(matches!(err, Error::ModelMismatch { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("ngram-test") && msg.contains("other-model"),
        "{msg}"
    );
    let err = Index::open(dir.path(), NgramEmbedder::arc("ngram-test", 32)).unwrap_err();
    assert!(
        matches!(
            err,
            Error::ModelMismatch {
                index_dim: 64,
                dim: 32,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn second_writer_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _first = open(dir.path());
    let err = Index::open(dir.path(), NgramEmbedder::arc("ngram-test", 64)).unwrap_err();
    assert!(matches!(err, Error::Locked { .. }), "{err}");
}

#[test]
fn damaged_manifest_is_a_clear_error() {
    for content in [
        "",
        "{\"format\":1,",
        "garbage \u{0}\u{1}",
        "{\"format\": 9, \"model\": \"x\", \"dim\": 1}",
    ] {
        let dir = tempfile::tempdir().unwrap();
        {
            let index = open(dir.path());
            index.upsert_tickets(vec![ticket("1", "a", "b")]).unwrap();
        }
        std::fs::write(dir.path().join("manifest.json"), content).unwrap();
        let err = open_err(dir.path());
        assert!(matches!(err, Error::Corrupt { .. }), "{content:?}: {err}");
        assert!(err.to_string().contains("manifest.json"), "{err}");
    }
    let dir = tempfile::tempdir().unwrap();
    drop(open(dir.path()));
    std::fs::remove_file(dir.path().join("manifest.json")).unwrap();
    assert!(matches!(open_err(dir.path()), Error::Corrupt { .. }));
}

fn open_err(dir: &Path) -> Error {
    Index::open(dir, NgramEmbedder::arc("ngram-test", 64)).unwrap_err()
}

#[test]
fn damaged_tantivy_meta_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    {
        let index = open(dir.path());
        index.upsert_tickets(vec![ticket("1", "a", "b")]).unwrap();
    }
    let meta = dir.path().join("tantivy/meta.json");
    let bytes = std::fs::read(&meta).unwrap();
    std::fs::write(&meta, &bytes[..bytes.len() / 2]).unwrap();
    let err = open_err(dir.path());
    assert!(matches!(err, Error::Corrupt { .. }), "{err}");
}

#[test]
fn missing_tantivy_meta_with_segments_is_refused_not_wiped() {
    let dir = tempfile::tempdir().unwrap();
    {
        let index = open(dir.path());
        index.upsert_tickets(vec![ticket("1", "a", "b")]).unwrap();
    }
    let tdir = dir.path().join("tantivy");
    let files = || std::fs::read_dir(&tdir).unwrap().count();
    std::fs::remove_file(tdir.join("meta.json")).unwrap();
    let before = files();
    let err = open_err(dir.path());
    assert!(matches!(err, Error::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains("meta.json"), "{err}");
    assert_eq!(files(), before, "segment files were touched");
}

/// An index of one commit (one segment) with 300 tickets, one of them deleted
/// (so the segment has an alive-docs `.del` file too).
fn one_segment_index(dir: &Path) {
    let index = open(dir);
    let tickets: Vec<Ticket> = (0..300)
        .map(|i| {
            ticket(
                &i.to_string(),
                &format!("空调不制冷 {i}"),
                "空调开了半小时还是热风",
            )
        })
        .collect();
    index.upsert_tickets(tickets).unwrap();
    assert!(index.delete(DocKind::Ticket, "", "7").unwrap());
}

/// The one segment file of `dir` ending in `ext` (e.g. `.term`).
fn segment_file(dir: &Path, ext: &str) -> std::path::PathBuf {
    let tdir = dir.join("tantivy");
    let found: Vec<_> = std::fs::read_dir(&tdir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().ends_with(ext))
        .collect();
    assert_eq!(found.len(), 1, "{ext}: {found:?}");
    found[0].clone()
}

/// Asserts that opening `dir` fails with [`Error::Damaged`] naming exactly
/// `file` (relative to `dir`) with `problem`, and that the message says what to do.
fn assert_damaged(dir: &Path, file: &Path, problem: fn(&indexer::Damage) -> bool) {
    let err = open_err(dir);
    let rel = file.strip_prefix(dir).unwrap();
    match &err {
        Error::Damaged { files, .. } => {
            assert_eq!(files.len(), 1, "{err}");
            assert_eq!(files[0].path, rel, "{err}");
            assert!(problem(&files[0].problem), "{err}");
        }
        other => panic!("expected Error::Damaged, got {other}"),
    }
    let msg = err.to_string();
    assert!(msg.contains(&rel.display().to_string()), "{msg}");
    assert!(msg.contains("backup") && msg.contains("re-ingest"), "{msg}");
}

#[test]
fn an_intact_index_with_deletes_passes_verification() {
    let dir = tempfile::tempdir().unwrap();
    one_segment_index(dir.path());
    segment_file(dir.path(), ".del");
    let index = open(dir.path());
    assert_eq!(index.len(DocKind::Ticket), 299);
    assert_eq!(index.search(&bm25("空调")).unwrap().len(), 10);
}

#[test]
fn flipped_bytes_in_a_term_file_refuses_to_open() {
    let dir = tempfile::tempdir().unwrap();
    one_segment_index(dir.path());
    let term = segment_file(dir.path(), ".term");
    let mut bytes = std::fs::read(&term).unwrap();
    // Up to 8 KB from a quarter in, in the data (not the footer at the end).
    let start = bytes.len() / 4;
    let end = (start + 8192).min(bytes.len() / 2);
    bytes[start..end].iter_mut().for_each(|b| *b ^= 0x5a);
    std::fs::write(&term, bytes).unwrap();
    assert_damaged(dir.path(), &term, |d| {
        *d == indexer::Damage::ChecksumMismatch
    });
}

#[test]
fn a_deleted_pos_file_refuses_to_open() {
    let dir = tempfile::tempdir().unwrap();
    one_segment_index(dir.path());
    let pos = segment_file(dir.path(), ".pos");
    std::fs::remove_file(&pos).unwrap();
    assert_damaged(dir.path(), &pos, |d| *d == indexer::Damage::Missing);
}

#[test]
fn a_deleted_alive_docs_file_refuses_to_open() {
    let dir = tempfile::tempdir().unwrap();
    one_segment_index(dir.path());
    let del = segment_file(dir.path(), ".del");
    std::fs::remove_file(&del).unwrap();
    assert_damaged(dir.path(), &del, |d| *d == indexer::Damage::Missing);
}

#[test]
fn a_truncated_store_file_refuses_to_open() {
    let dir = tempfile::tempdir().unwrap();
    one_segment_index(dir.path());
    let store = segment_file(dir.path(), ".store");
    let len = std::fs::metadata(&store).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&store)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    assert_damaged(dir.path(), &store, |d| {
        matches!(
            d,
            indexer::Damage::ChecksumMismatch | indexer::Damage::Unreadable(_)
        )
    });
}

#[test]
fn writes_during_a_background_rebuild_reach_the_new_graph() {
    let dir = tempfile::tempdir().unwrap();
    let emb = RandomEmbedder { dim: 32 };
    let index = Index::open(dir.path(), Arc::new(RandomEmbedder { dim: 32 })).unwrap();
    index.set_exact_threshold(0);
    fill(&index, 0..2000);
    // Re-text 1200 documents: their old points become tombstones and a rebuild starts.
    let retexted: Vec<Ticket> = (0..1200)
        .map(|i| ticket(&i.to_string(), &format!("new {i}"), ""))
        .collect();
    index.upsert_tickets(retexted).unwrap();
    // Writes go on while the new graph is being built: new documents, a
    // re-text and deletes (one document at a time, so some land mid-rebuild).
    for i in 2000..2100 {
        index
            .upsert_tickets(vec![ticket(&i.to_string(), &format!("late {i}"), "")])
            .unwrap();
    }
    for i in (1200..1300).step_by(10) {
        assert!(index.delete(DocKind::Ticket, "", &i.to_string()).unwrap());
    }
    index.flush().unwrap();
    let stats = index.stats();
    assert_eq!(stats.tickets, 2090);
    assert!(
        stats.tombstones < 1000,
        "the rebuild dropped the old points: {stats:?}"
    );
    // Every live document is a point of the graph: its own vector finds it first.
    for i in (0..2100)
        .step_by(7)
        .filter(|i| !(1200..1300).contains(i) || i % 10 != 0)
    {
        let id = i.to_string();
        let v = index.vector(DocKind::Ticket, "", &id).unwrap();
        let req = SearchRequest {
            mode: SearchMode::Vector,
            k: 1,
            ..Default::default()
        };
        let hits = index.search_with_vector(&req, &v).unwrap();
        assert_eq!(hits[0].id, id, "document {id} missing from the graph");
    }
    let r = recall_vs_exact(&index, &emb, 30);
    assert!(r >= 0.95, "recall after a background rebuild {r}");
}

/// Writes `n` tickets with random vectors (one text per id).
fn fill(index: &Index, ids: impl Iterator<Item = usize>) {
    let docs: Vec<Ticket> = ids
        .map(|i| ticket(&i.to_string(), &format!("doc {i}"), ""))
        .collect();
    for chunk in docs.chunks(1000) {
        index.upsert_tickets(chunk.to_vec()).unwrap();
    }
}

/// Recall@10 of vector search against exact search over `all()`, for `queries` random queries.
fn recall_vs_exact(index: &Index, emb: &RandomEmbedder, queries: usize) -> f64 {
    let all = index.all(DocKind::Ticket, None).unwrap();
    let mut found = 0;
    for q in 0..queries {
        let qv = emb.vector(&format!("query {q}"));
        let mut exact: Vec<(f32, String)> = all
            .iter()
            .map(|(d, v)| {
                let indexer::Document::Ticket(t) = d else {
                    unreachable!()
                };
                (v.iter().zip(&qv).map(|(a, b)| a * b).sum(), t.id.clone())
            })
            .collect();
        exact.sort_by(|a, b| b.0.total_cmp(&a.0));
        let want: Vec<&String> = exact.iter().take(10).map(|e| &e.1).collect();
        let req = SearchRequest {
            mode: SearchMode::Vector,
            ..Default::default()
        };
        let hits = index.search_with_vector(&req, &qv).unwrap();
        found += hits.iter().filter(|h| want.contains(&&h.id)).count();
    }
    found as f64 / (queries * 10) as f64
}

/// No vector hit is a deleted document, and every similarity is that of the stored vector.
fn assert_no_stale_hits(index: &Index, emb: &RandomEmbedder) {
    for q in 0..20 {
        let qv = emb.vector(&format!("query {q}"));
        let req = SearchRequest {
            mode: SearchMode::Vector,
            k: 50,
            ..Default::default()
        };
        let hits = index.search_with_vector(&req, &qv).unwrap();
        assert_eq!(hits.len(), 50);
        for h in hits {
            let id: usize = h.id.parse().unwrap();
            assert_ne!(id % 10, 0, "deleted document {id} returned");
            let stored = index.vector(DocKind::Ticket, "", &h.id).unwrap();
            let cos: f32 = stored.iter().zip(&qv).map(|(a, b)| a * b).sum();
            assert!(
                (cos - h.explanation.vector_similarity.unwrap()).abs() < 1e-4,
                "stale vector for {id}"
            );
        }
    }
}

#[test]
fn graph_matches_exact_search_across_deletes_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let emb = RandomEmbedder { dim: 32 };
    // Threshold 0: always search the graph (small sets are otherwise scanned exactly).
    let open_rand = || {
        let index = Index::open(dir.path(), Arc::new(RandomEmbedder { dim: 32 })).unwrap();
        index.set_exact_threshold(0);
        index
    };
    {
        let index = open_rand();
        fill(&index, 0..1500);
        let r = recall_vs_exact(&index, &emb, 30);
        assert!(r >= 0.95, "recall {r}");
        // Delete a tenth: the graph keeps them as tombstones that no search may return.
        for i in (0..1500).step_by(10) {
            assert!(index.delete(DocKind::Ticket, "", &i.to_string()).unwrap());
        }
        assert_eq!(index.stats().tombstones, 150);
        assert_no_stale_hits(&index, &emb);
        // Re-text another fifth: their old vectors become tombstones too, which
        // crosses the rebuild threshold.
        let retexted: Vec<Ticket> = (0..1500)
            .filter(|i| (1..=6).contains(&(i % 10)))
            .map(|i| ticket(&i.to_string(), &format!("new {i}"), ""))
            .collect();
        index.upsert_tickets(retexted).unwrap();
        // The rebuild runs in the background; flush waits for it.
        index.flush().unwrap();
        let stats = index.stats();
        assert_eq!(stats.tickets, 1350);
        assert_eq!(
            (stats.graph_points, stats.tombstones),
            (1350, 0),
            "graph rebuilt"
        );
        assert_no_stale_hits(&index, &emb);
        let r = recall_vs_exact(&index, &emb, 30);
        assert!(r >= 0.95, "recall after deletes {r}");
    }
    // Reopen: the graph saved on drop is loaded, not rebuilt.
    let index = open_rand();
    assert_eq!(index.len(DocKind::Ticket), 1350);
    let r = recall_vs_exact(&index, &emb, 30);
    assert!(r >= 0.95, "recall after reopen {r}");
    drop(index);

    // A damaged graph dump is rebuilt from the documents.
    let graph_dir = dir.path().join("graph");
    for entry in std::fs::read_dir(&graph_dir).unwrap() {
        let p = entry.unwrap().path();
        if p.extension().is_some_and(|e| e == "graph") {
            std::fs::write(&p, b"not a graph").unwrap();
        }
    }
    let index = open_rand();
    let stats = index.stats();
    assert_eq!((stats.graph_points, stats.tombstones), (1350, 0));
    let r = recall_vs_exact(&index, &emb, 30);
    assert!(r >= 0.95, "recall after rebuild {r}");
    drop(index);
    std::fs::write(graph_dir.join("graph.json"), b"{").unwrap();
    let index = open_rand();
    assert_eq!(index.stats().graph_points, 1350);
}

const CHILD_ENV: &str = "INDEXER_CRASH_CHILD_DIR";

/// Not a test on its own: the body of the child process that
/// `acknowledged_writes_survive_kill_9` kills. Writes tickets (single and in
/// batches of 50) and prints `acked N` after each durable write.
#[test]
#[ignore]
fn crash_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let index = open(Path::new(&dir));
    let mut next = 0usize;
    for round in 0..100_000 {
        let n = if round % 2 == 0 { 1 } else { 50 };
        let docs: Vec<Ticket> = (next..next + n)
            .map(|i| ticket(&format!("c{i}"), &format!("crash test {i}"), "body"))
            .collect();
        index.upsert_tickets(docs).unwrap();
        next += n;
        println!("acked {next}");
    }
}

#[test]
fn acknowledged_writes_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "crash_child",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut acked = 0usize;
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        if let Some(n) = line.strip_prefix("acked ") {
            acked = n.trim().parse().unwrap();
            if acked >= 400 {
                break;
            }
        }
    }
    child.kill().unwrap(); // SIGKILL on Unix
    child.wait().unwrap();
    assert!(acked >= 400, "child stopped early after {acked}");

    let index = open(dir.path());
    let n = index.len(DocKind::Ticket);
    assert!(
        n >= acked,
        "only {n} of {acked} acknowledged tickets survived"
    );
    for i in [0, acked / 2, acked - 1] {
        assert!(
            index
                .get(DocKind::Ticket, "", &format!("c{i}"))
                .unwrap()
                .is_some(),
            "c{i} lost"
        );
        assert!(index
            .vector(DocKind::Ticket, "", &format!("c{i}"))
            .is_some());
    }
    let hits = index
        .search(&bm25(&format!("crash test {}", acked - 1)))
        .unwrap();
    assert!(!hits.is_empty());
    // The index still accepts writes after the crash.
    index
        .upsert_tickets(vec![ticket("after", "after crash", "")])
        .unwrap();
    assert_eq!(index.len(DocKind::Ticket), n + 1);
}
