//! Each tenant's adapted encoder, on the tiny test pack with the tiny BERT of
//! `fixtures/tiny-bert` (random weights, so what is checked is the plumbing,
//! not quality): a planted adapter is used for its tenant's decisions and
//! never for another tenant's, dropping it restores the shipped decisions,
//! a damaged file is ignored, and an adapter worse than the shipped encoder
//! on the held-out fold is refused.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use indexer::Ticket;
use models::{
    AdaptExample, AdaptLoss, AdaptOptions, EmbedKind, Embedder, EmbedderOptions, TrainingSet,
};
use triage::api::{Feedback, TicketRequest};
use triage::{AdaptSettings, Engine, EngineConfig};

fn tiny() -> Arc<Embedder> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/tiny-bert");
    Arc::new(Embedder::load(&dir, EmbedderOptions::default()).unwrap())
}

fn open(pack: &Path, data: &Path, model: &Arc<Embedder>) -> Engine {
    Engine::open(
        EngineConfig::new(pack.to_path_buf(), data.to_path_buf()),
        model.clone(),
    )
    .unwrap()
}

/// Where the engine keeps the default tenant's adapter (beside its heads).
fn default_adapter(data: &Path) -> PathBuf {
    data.join("heads/adapter.safetensors")
}

const QUERIES: [&str; 3] = [
    "空调不制冷，吹出来的是热风",
    "I want a refund for my order",
    "洗衣机底部一直漏水",
];

/// The category alternatives of each query for `tenant`.
fn decisions(e: &Engine, tenant: &str) -> Vec<Vec<(String, f32)>> {
    QUERIES
        .iter()
        .map(|q| {
            let r = e
                .triage(&TicketRequest {
                    body: (*q).into(),
                    tenant: tenant.into(),
                    ..TicketRequest::default()
                })
                .unwrap();
            r.category
                .alternatives
                .into_iter()
                .map(|a| (a.label, a.probability))
                .collect()
        })
        .collect()
}

fn same(a: &[Vec<(String, f32)>], b: &[Vec<(String, f32)>]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| {
            x.len() == y.len()
                && x.iter()
                    .zip(y)
                    .all(|(p, q)| p.0 == q.0 && (p.1 - q.1).abs() < 1e-5)
        })
}

/// Tenant `b`'s own labelled tickets: the pack's, copied.
fn add_tenant_b(e: &Engine) {
    for n in 0..20 {
        let t = e
            .get_ticket(
                "",
                &format!(
                    "T-{:04}",
                    [
                        0, 1, 2, 100, 101, 102, 200, 201, 202, 300, 301, 302, 400, 401, 402, 10,
                        110, 210, 310, 410
                    ][n]
                ),
            )
            .unwrap()
            .unwrap();
        e.upsert_ticket(Ticket {
            tenant: "b".into(),
            id: format!("B-{n}"),
            ..t
        })
        .unwrap();
    }
    e.retrain("b").unwrap();
}

/// An adapter of `model` trained on the pack's tickets with the public
/// models API (not judged by any fold): a planted adapter.
fn plant(model: &Embedder, engine: &Engine, path: &Path) {
    let mut examples = Vec::new();
    let mut groups = std::collections::BTreeMap::new();
    for c in 0..5 {
        for t in 0..3 {
            for d in 0..3 {
                let id = format!("T-{:04}", c * 100 + t * 10 + d);
                let ticket = engine.get_ticket("", &id).unwrap().unwrap();
                let n = groups.len();
                let group = *groups.entry(ticket.category.clone()).or_insert(n);
                examples.push(AdaptExample {
                    text: ticket.body,
                    kind: EmbedKind::Passage,
                    task: 0,
                    group,
                });
            }
        }
    }
    let opts = AdaptOptions {
        layers: 2,
        rank: 4,
        epochs: 30,
        batch: 10,
        lr: 2e-2,
        prototype_lr: 2e-2,
        threads: 1,
        ..AdaptOptions::default()
    };
    let set = TrainingSet::prepare(model, &examples, 2, 16, 1).unwrap();
    let all: Vec<usize> = (0..examples.len()).collect();
    let (adapter, _) = set.train(model, &all, &opts).unwrap();
    adapter.save(path).unwrap();
}

#[test]
fn a_planted_adapter_decides_for_its_tenant_only_and_dropping_it_restores_the_shipped_decisions() {
    let model = tiny();
    let (pack, data) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    common::write_pack(pack.path());
    let (shipped, shipped_b) = {
        let e = open(pack.path(), data.path(), &model);
        add_tenant_b(&e);
        plant(&model, &e, &default_adapter(data.path()));
        assert!(e.adaptation("").active.is_none(), "not read before a start");
        (decisions(&e, ""), decisions(&e, "b"))
    };

    let e = open(pack.path(), data.path(), &model);
    let active = e
        .adaptation("")
        .active
        .expect("the planted adapter is used");
    assert!(e.adaptation("b").active.is_none());
    let adapted = decisions(&e, "");
    assert!(!same(&adapted, &shipped), "{adapted:?} vs {shipped:?}");
    // Tenant b has no adapter: its decisions are exactly what they were.
    assert!(same(&decisions(&e, "b"), &shipped_b));

    // A retrain keeps the tenant in its adapted space.
    e.retrain("").unwrap();
    assert_eq!(e.adaptation("").active.as_deref(), Some(active.as_str()));
    assert!(same(&decisions(&e, ""), &adapted));

    // An agent's correction of this very request still decides at once.
    e.feedback(Feedback {
        ticket_id: "NEW-1".into(),
        body: QUERIES[0].into(),
        category: Some("billing.invoice".into()),
        ..Feedback::default()
    })
    .unwrap();
    let corrected = e
        .triage(&TicketRequest {
            body: QUERIES[0].into(),
            ..TicketRequest::default()
        })
        .unwrap();
    assert_eq!(corrected.category.label.as_deref(), Some("billing.invoice"));
    assert_eq!(corrected.category.confidence, 1.0);
    e.delete_ticket("", "NEW-1").unwrap();

    // Dropped: the file is gone and the shipped decisions are back.
    assert!(e.drop_adaptation("").unwrap());
    assert!(e.adaptation("").active.is_none());
    assert!(!default_adapter(data.path()).exists());
    assert!(same(&decisions(&e, ""), &shipped));
    assert!(!e.drop_adaptation("").unwrap(), "nothing left to drop");
    drop(e);
    let e = open(pack.path(), data.path(), &model);
    assert!(e.adaptation("").active.is_none());
    assert!(same(&decisions(&e, ""), &shipped));
}

#[test]
fn a_damaged_adapter_file_is_ignored() {
    let model = tiny();
    let (pack, data) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    common::write_pack(pack.path());
    let shipped = {
        let e = open(pack.path(), data.path(), &model);
        plant(&model, &e, &default_adapter(data.path()));
        decisions(&e, "")
    };
    let path = default_adapter(data.path());
    let mut bytes = std::fs::read(&path).unwrap();
    let n = bytes.len();
    bytes[n - 5] ^= 0x10;
    for damaged in [bytes, b"not an adapter".to_vec(), Vec::new()] {
        std::fs::write(&path, damaged).unwrap();
        let e = open(pack.path(), data.path(), &model);
        assert!(e.adaptation("").active.is_none());
        assert!(same(&decisions(&e, ""), &shipped));
    }
}

#[test]
fn an_adapter_worse_than_the_shipped_encoder_on_the_fold_is_refused() {
    let model = tiny();
    let (pack, data) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    common::write_pack(pack.path());
    let e = open(pack.path(), data.path(), &model);
    let shipped = decisions(&e, "");
    // A negative logit scale trains every text *away* from its category.
    let settings = AdaptSettings {
        options: AdaptOptions {
            layers: 2,
            rank: 4,
            epochs: 30,
            batch: 10,
            lr: 5e-2,
            prototype_lr: 5e-2,
            loss: AdaptLoss::Prototypes {
                scale: -20.0,
                margin: 0.0,
            },
            threads: 1,
            ..AdaptOptions::default()
        },
        folds: 3,
        seed: 5,
    };
    let out = e.adapt("", &settings).unwrap();
    let fold = &out.summary.fold;
    assert!(!out.accepted && !fold.accepted);
    assert!(
        fold.adapted_accuracy < fold.frozen_accuracy,
        "{} vs {}",
        fold.adapted_accuracy,
        fold.frozen_accuracy
    );
    assert_eq!(out.labelled_tickets, 45);
    assert_eq!(fold.held_out, 15);
    // Nothing changed but the recorded verdict.
    assert!(e.adaptation("").active.is_none());
    assert!(!e.adaptation("").last.unwrap().fold.accepted);
    assert!(!default_adapter(data.path()).exists());
    assert!(same(&decisions(&e, ""), &shipped));
}
