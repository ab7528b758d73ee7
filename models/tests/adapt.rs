//! Adapting `fixtures/tiny-bert`: training pulls a group's texts together,
//! the fast forward pass serves exactly what training saw, and the adapter
//! file round-trips.

use std::path::PathBuf;

use models::{
    AdaptExample, AdaptLoss, AdaptOptions, Adapter, EmbedKind, Embedder, EmbedderOptions,
    TextEmbedder, TrainingSet,
};

fn tiny() -> Embedder {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/tiny-bert");
    Embedder::load(&dir, EmbedderOptions::default()).unwrap()
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Mean cosine within groups minus mean cosine across groups.
fn separation(vectors: &[Vec<f32>], groups: &[usize]) -> f32 {
    let (mut within, mut nw, mut across, mut na) = (0f32, 0f32, 0f32, 0f32);
    for i in 0..vectors.len() {
        for j in i + 1..vectors.len() {
            let c = cosine(&vectors[i], &vectors[j]);
            if groups[i] == groups[j] {
                within += c;
                nw += 1.0;
            } else {
                across += c;
                na += 1.0;
            }
        }
    }
    within / nw - across / na
}

const GROUPS: [&[&str]; 2] = [
    &[
        "the printer is down",
        "printer down again",
        "my printer is broken",
        "printer not working",
        "the printer will not print",
        "printer error",
    ],
    &[
        "hello world",
        "hello there world",
        "world says hello",
        "hello hello world",
        "a world of hello",
        "hello again world",
    ],
];

fn examples() -> Vec<AdaptExample> {
    GROUPS
        .iter()
        .enumerate()
        .flat_map(|(g, texts)| {
            texts.iter().map(move |t| AdaptExample {
                text: t.to_string(),
                kind: EmbedKind::Query,
                task: 0,
                group: g,
            })
        })
        .collect()
}

fn options(loss: AdaptLoss) -> AdaptOptions {
    AdaptOptions {
        layers: 2,
        rank: 4,
        epochs: 40,
        batch: 8,
        per_group: 4,
        lr: 2e-2,
        prototype_lr: 2e-2,
        loss,
        threads: 1,
        ..AdaptOptions::default()
    }
}

#[test]
fn training_pulls_groups_apart_and_the_fast_pass_serves_the_trained_encoder() {
    let base = tiny();
    let examples = examples();
    let groups: Vec<usize> = examples.iter().map(|e| e.group).collect();
    let texts: Vec<&str> = examples.iter().map(|e| e.text.as_str()).collect();
    let set = TrainingSet::prepare(&base, &examples, 2, 16, 1).unwrap();
    assert_eq!(set.first_layer(), 0);
    let all: Vec<usize> = (0..examples.len()).collect();
    let before = separation(&base.embed(&texts, EmbedKind::Query).unwrap(), &groups);
    for loss in [
        AdaptLoss::Prototypes {
            scale: 10.0,
            margin: 0.1,
        },
        AdaptLoss::Contrastive { temperature: 0.1 },
    ] {
        let (adapter, report) = set.train(&base, &all, &options(loss)).unwrap();
        assert!(
            report.last_loss < report.first_loss,
            "{loss:?}: {} → {}",
            report.first_loss,
            report.last_loss
        );
        let adapted = base.adapted(&adapter).unwrap();
        assert_ne!(adapted.name(), base.name());
        let served = adapted.embed(&texts, EmbedKind::Query).unwrap();
        // The merged layers on the fast path give what the kept states give
        // through the adapted top layers (f16 states: close, not equal).
        for (s, k) in served.iter().zip(set.vectors(&adapted, &all).unwrap()) {
            assert!(cosine(s, &k) > 0.999, "{}", cosine(s, &k));
        }
        let after = separation(&served, &groups);
        assert!(after > before + 0.05, "{loss:?}: {before} → {after}");

        // The file round-trips into the same encoder.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.safetensors");
        adapter.save(&path).unwrap();
        let again = base.adapted(&Adapter::load(&path).unwrap()).unwrap();
        assert_eq!(again.embed(&texts, EmbedKind::Query).unwrap(), served);
        // An adapted encoder is not adapted twice.
        assert!(adapted.adapted(&adapter).is_err());
    }
}

#[test]
fn training_refuses_states_prepared_for_other_layers() {
    let base = tiny();
    let examples = examples();
    let set = TrainingSet::prepare(&base, &examples, 1, 16, 1).unwrap();
    let all: Vec<usize> = (0..examples.len()).collect();
    let loss = AdaptLoss::Contrastive { temperature: 0.1 };
    assert!(set.train(&base, &all, &options(loss)).is_err());
    assert!(TrainingSet::prepare(&base, &examples, 3, 16, 1).is_err());
}
