//! Fast tests on `fixtures/tiny-bert`: a 2-layer, 32-wide BERT with random
//! weights, a WordPiece tokenizer whose `tokenizer.json` has padding and
//! truncation switched on (as all-MiniLM-L6-v2's does), and only 16
//! positions, so windowing is exercised by short texts.
//!
//! `cargo test -p models --test tiny_bert -- --ignored regenerate` rewrites
//! the fixture from a fixed seed.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use models::{EmbedKind, Embedder, EmbedderOptions, Error, ModelSource, TextEmbedder};
use rand::{Rng, SeedableRng};

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/tiny-bert")
}

fn load(dir: &Path) -> Result<Embedder, Error> {
    Embedder::load(dir, EmbedderOptions::default())
}

fn norm(v: &[f32]) -> f32 {
    v.iter().map(|x| x * x).sum::<f32>().sqrt()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn matches_candle_transformers_bert_with_mean_pooling() {
    let dir = fixture();
    let ours = load(&dir).unwrap();
    let cfg: Config =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    let vb = unsafe {
        VarBuilder::from_mmaped_safetensors(
            &[dir.join("model.safetensors")],
            DType::F32,
            &Device::Cpu,
        )
    }
    .unwrap();
    let reference = BertModel::load(vb, &cfg).unwrap();
    for text in ["hello world", "the printer is down!", "你好 世界 停机"] {
        let ids = ours.token_ids(text, EmbedKind::Query).unwrap();
        let input = Tensor::new(ids.as_slice(), &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let hidden = reference
            .forward(&input, &input.zeros_like().unwrap(), None)
            .unwrap()
            .squeeze(0)
            .unwrap();
        let mean: Vec<f32> = hidden.mean(0).unwrap().to_vec1().unwrap();
        let n = norm(&mean);
        let expected: Vec<f32> = mean.iter().map(|x| x / n).collect();
        let got = &ours.embed(&[text], EmbedKind::Query).unwrap()[0];
        assert!(
            max_diff(got, &expected) < 1e-5,
            "{text}: {got:?} vs {expected:?}"
        );
    }
}

#[test]
fn vectors_are_finite_unit_vectors_even_for_odd_inputs() {
    let m = load(&fixture()).unwrap();
    assert_eq!(m.dim(), 32);
    assert_eq!(m.name(), "tiny-bert");
    let long = "hello world the printer ".repeat(40);
    let texts = [
        "",
        "   ",
        "\t\n",
        "😀😀 🙈",
        "hello",
        long.as_str(),
        "空调漏水 order refund",
    ];
    for kind in [EmbedKind::Query, EmbedKind::Passage] {
        let vs = m.embed(&texts, kind).unwrap();
        assert_eq!(vs.len(), texts.len());
        for (t, v) in texts.iter().zip(&vs) {
            assert_eq!(v.len(), 32);
            assert!(v.iter().all(|x| x.is_finite()), "{t:?}");
            assert!((norm(v) - 1.0).abs() < 1e-5, "{t:?}: norm {}", norm(v));
        }
    }
    assert!(m.embed(&[], EmbedKind::Query).unwrap().is_empty());
}

#[test]
fn tokenizer_padding_and_truncation_are_off() {
    let m = load(&fixture()).unwrap();
    // tokenizer.json pads to 16 and truncates at 8: neither may happen.
    let ids = m
        .token_ids(
            "hello world the printer is down order refund hello world",
            EmbedKind::Query,
        )
        .unwrap();
    assert_eq!(ids.len(), 12);
    assert_eq!((ids[0], ids[11]), (2, 3), "[CLS] … [SEP]");
    assert_eq!(
        m.token_ids("hello", EmbedKind::Query).unwrap(),
        vec![2, 46, 3]
    );
    // Unknown emoji become [UNK].
    assert_eq!(m.token_ids("😀", EmbedKind::Query).unwrap(), vec![2, 1, 3]);
}

#[test]
fn a_batch_equals_one_by_one_in_any_batch_shape() {
    let m = load(&fixture()).unwrap();
    let long = "order refund ".repeat(12);
    let texts = [
        "hello",
        "the printer is down",
        "你好世界",
        "",
        long.as_str(),
        "hello world hello world hello",
    ];
    let batch = m.embed(&texts, EmbedKind::Passage).unwrap();
    let tiny_batches = Embedder::load(
        &fixture(),
        EmbedderOptions {
            max_batch: 2,
            max_batch_tokens: 20,
            ..Default::default()
        },
    )
    .unwrap()
    .embed(&texts, EmbedKind::Passage)
    .unwrap();
    for (i, t) in texts.iter().enumerate() {
        let single = &m.embed(&[t], EmbedKind::Passage).unwrap()[0];
        assert!(max_diff(&batch[i], single) < 1e-5, "{t:?}");
        assert!(max_diff(&tiny_batches[i], single) < 1e-5, "{t:?}");
    }
}

#[test]
fn long_texts_are_windowed_up_to_the_window_limit() {
    let m = load(&fixture()).unwrap();
    assert_eq!(m.max_positions(), 16);
    // 14 content tokens fill the first window exactly; the rest spill into a second.
    let first = "hello ".repeat(14);
    let longer = format!("{first}printer server down refund");
    assert_eq!(m.token_ids(&longer, EmbedKind::Query).unwrap().len(), 20);
    let v = m.embed(&[&first, &longer], EmbedKind::Query).unwrap();
    assert!(
        max_diff(&v[0], &v[1]) > 1e-3,
        "tokens past the first window must count"
    );
    // With a limit of one window, the spill is left out.
    let one = Embedder::load(
        &fixture(),
        EmbedderOptions {
            max_windows: 1,
            ..Default::default()
        },
    )
    .unwrap();
    let v = one.embed(&[&first, &longer], EmbedKind::Query).unwrap();
    assert!(max_diff(&v[0], &v[1]) < 1e-6);
}

#[test]
fn bad_model_directories_give_clear_errors() {
    let src = fixture();
    let copy = |dir: &Path| {
        for f in ["config.json", "tokenizer.json", "model.safetensors"] {
            std::fs::copy(src.join(f), dir.join(f)).unwrap();
        }
    };
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();

    copy(d);
    std::fs::remove_file(d.join("tokenizer.json")).unwrap();
    let err = load(d).err().unwrap();
    assert!(
        matches!(err, Error::NotFound { .. }) && err.to_string().contains("tokenizer.json"),
        "{err}"
    );

    copy(d);
    let weights = std::fs::read(src.join("model.safetensors")).unwrap();
    std::fs::write(d.join("model.safetensors"), &weights[..weights.len() / 2]).unwrap();
    assert!(matches!(load(d), Err(Error::Format { .. })));

    copy(d);
    std::fs::write(d.join("config.json"), "{\"hidden_size\": 32}").unwrap();
    assert!(matches!(load(d), Err(Error::Format { .. })));

    copy(d);
    std::fs::write(d.join("tokenizer.json"), "{]").unwrap();
    assert!(matches!(load(d), Err(Error::Format { .. })));

    // Config and weights disagree on the shape.
    copy(d);
    let cfg = std::fs::read_to_string(src.join("config.json")).unwrap();
    std::fs::write(
        d.join("config.json"),
        cfg.replace("\"intermediate_size\": 64", "\"intermediate_size\": 48"),
    )
    .unwrap();
    let err = load(d).err().unwrap();
    assert!(
        matches!(err, Error::Format { .. }) && err.to_string().contains("shape"),
        "{err}"
    );

    // A garbage e5 file.
    let e5 = tempfile::tempdir().unwrap();
    std::fs::write(e5.path().join("e5-small-q4.bin"), b"E5S1 but not really").unwrap();
    assert!(matches!(load(e5.path()), Err(Error::Format { .. })));

    let zero = Embedder::load(
        &src,
        EmbedderOptions {
            max_batch: 0,
            ..Default::default()
        },
    );
    assert!(matches!(zero, Err(Error::InvalidInput(_))));
}

#[test]
fn load_source_accepts_a_directory() {
    let cache = tempfile::tempdir().unwrap();
    let m = Embedder::load_source(
        &ModelSource::Dir(fixture()),
        cache.path(),
        EmbedderOptions::default(),
    )
    .unwrap();
    assert_eq!(m.dim(), 32);
}

/// Writes `fixtures/tiny-bert` (config, tokenizer, weights) from a fixed seed.
#[test]
#[ignore = "rewrites the committed fixture"]
fn regenerate() {
    use tokenizers::models::wordpiece::WordPiece;
    use tokenizers::normalizers::BertNormalizer;
    use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
    use tokenizers::processors::template::TemplateProcessing;
    use tokenizers::{PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};

    let dir = fixture();
    std::fs::create_dir_all(&dir).unwrap();
    let mut vocab: Vec<String> = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
        .map(String::from)
        .to_vec();
    vocab.extend(
        "abcdefghijklmnopqrstuvwxyz0123456789.,!?'"
            .chars()
            .map(String::from),
    );
    vocab.extend(
        [
            "hello", "world", "the", "printer", "server", "is", "down", "order", "refund",
        ]
        .map(String::from),
    );
    vocab.extend(
        "abcdefghijklmnopqrstuvwxyz"
            .chars()
            .map(|c| format!("##{c}")),
    );
    vocab.extend("你好世界空调漏水停机".chars().map(String::from));
    assert_eq!(
        vocab.iter().position(|t| t == "hello"),
        Some(46),
        "ids used by the tests"
    );
    let vocab_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(vocab_file.path(), vocab.join("\n") + "\n").unwrap();
    let wordpiece = WordPiece::from_file(&vocab_file.path().to_string_lossy())
        .unk_token("[UNK]".into())
        .build()
        .unwrap();
    let mut tok = Tokenizer::new(wordpiece);
    tok.with_normalizer(Some(BertNormalizer::new(true, true, None, true)))
        .unwrap();
    tok.with_pre_tokenizer(Some(BertPreTokenizer));
    tok.with_post_processor(Some(
        TemplateProcessing::builder()
            .try_single("[CLS] $A [SEP]")
            .unwrap()
            .special_tokens(vec![("[CLS]", 2), ("[SEP]", 3)])
            .build()
            .unwrap(),
    ));
    tok.with_padding(Some(PaddingParams {
        strategy: PaddingStrategy::Fixed(16),
        ..Default::default()
    }));
    tok.with_truncation(Some(TruncationParams {
        max_length: 8,
        ..Default::default()
    }))
    .unwrap();
    tok.save(dir.join("tokenizer.json"), true).unwrap();

    let (h, ff, layers, positions) = (32usize, 64usize, 2usize, 16usize);
    let config = serde_json::json!({
        "architectures": ["BertModel"], "model_type": "bert", "hidden_act": "gelu",
        "hidden_size": h, "num_hidden_layers": layers, "num_attention_heads": 4,
        "intermediate_size": ff, "vocab_size": vocab.len(), "max_position_embeddings": positions,
        "type_vocab_size": 2, "layer_norm_eps": 1e-12, "pad_token_id": 0,
        "position_embedding_type": "absolute", "hidden_dropout_prob": 0.1, "initializer_range": 0.02
    });
    std::fs::write(
        dir.join("config.json"),
        serde_json::to_string_pretty(&config).unwrap() + "\n",
    )
    .unwrap();

    let mut rng = rand::rngs::StdRng::seed_from_u64(20251124);
    let mut tensors = HashMap::new();
    let mut add = |name: String, shape: &[usize], center: f32, spread: f32| {
        let n = shape.iter().product();
        let data: Vec<f32> = (0..n)
            .map(|_| center + rng.random_range(-spread..spread))
            .collect();
        tensors.insert(name, Tensor::from_vec(data, shape, &Device::Cpu).unwrap());
    };
    add(
        "embeddings.word_embeddings.weight".into(),
        &[vocab.len(), h],
        0.0,
        0.5,
    );
    add(
        "embeddings.position_embeddings.weight".into(),
        &[positions, h],
        0.0,
        0.5,
    );
    add(
        "embeddings.token_type_embeddings.weight".into(),
        &[2, h],
        0.0,
        0.5,
    );
    add("embeddings.LayerNorm.weight".into(), &[h], 1.0, 0.1);
    add("embeddings.LayerNorm.bias".into(), &[h], 0.0, 0.1);
    for l in 0..layers {
        let p = format!("encoder.layer.{l}");
        for (name, out, inp) in [
            ("attention.self.query", h, h),
            ("attention.self.key", h, h),
            ("attention.self.value", h, h),
            ("attention.output.dense", h, h),
            ("intermediate.dense", ff, h),
            ("output.dense", h, ff),
        ] {
            add(format!("{p}.{name}.weight"), &[out, inp], 0.0, 0.3);
            add(format!("{p}.{name}.bias"), &[out], 0.0, 0.1);
        }
        for name in ["attention.output.LayerNorm", "output.LayerNorm"] {
            add(format!("{p}.{name}.weight"), &[h], 1.0, 0.1);
            add(format!("{p}.{name}.bias"), &[h], 0.0, 0.1);
        }
    }
    candle_core::safetensors::save(&tensors, dir.join("model.safetensors")).unwrap();
}
