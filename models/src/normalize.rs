//! The e5 tokenizer's text normalisation, done in one pass of plain Rust.
//!
//! The reference engine maps every code point through an NFKC-like table
//! (about 4,800 entries), collapses runs of spaces, then applies
//! SentencePiece's metaspace convention. Expressing the table as thousands of
//! chained `Replace` normalisers in `tokenizer.json` costs ~4 ms per 400
//! characters; a sorted table with binary search and an ASCII fast path costs
//! microseconds.

/// The SentencePiece word-boundary marker that replaces spaces.
pub(crate) const METASPACE: char = '\u{2581}';

/// A sorted code point → replacement sequence table.
#[derive(Debug, Clone, Default)]
pub(crate) struct CodepointMap {
    /// Sorted source code points.
    keys: Vec<u32>,
    /// `spans[i]..spans[i + 1]` indexes `values` for `keys[i]`.
    spans: Vec<u32>,
    /// Replacement characters, concatenated.
    values: Vec<char>,
    /// Bit `c` set when ASCII `c` has an entry (fast path for plain text).
    ascii: u128,
}

impl CodepointMap {
    /// Parses `n` entries of `u32` code point, `u8` count, `u32` × count replacements.
    pub(crate) fn parse(bytes: &[u8], n: usize) -> Result<Self, String> {
        let mut map = CodepointMap {
            keys: Vec::with_capacity(n),
            spans: Vec::with_capacity(n + 1),
            values: Vec::new(),
            ascii: 0,
        };
        map.spans.push(0);
        let mut pos = 0usize;
        let read_u32 = |pos: &mut usize| -> Result<u32, String> {
            let b = bytes.get(*pos..*pos + 4).ok_or("truncated")?;
            *pos += 4;
            Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        };
        for i in 0..n {
            let cp = read_u32(&mut pos)?;
            let count = *bytes.get(pos).ok_or("truncated")?;
            pos += 1;
            if map.keys.last().is_some_and(|&last| last >= cp) {
                return Err(format!("entry {i} (U+{cp:04X}) is out of order"));
            }
            for _ in 0..count {
                let v = read_u32(&mut pos)?;
                let ch = char::from_u32(v)
                    .ok_or_else(|| format!("U+{cp:04X} maps to invalid {v:#x}"))?;
                map.values.push(ch);
            }
            map.keys.push(cp);
            map.spans.push(map.values.len() as u32);
            if cp < 128 {
                map.ascii |= 1u128 << cp;
            }
        }
        Ok(map)
    }

    /// Number of entries.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.keys.len()
    }

    fn lookup(&self, c: char) -> Option<&[char]> {
        let cp = c as u32;
        if cp < 128 && self.ascii & (1u128 << cp) == 0 {
            return None;
        }
        let i = self.keys.binary_search(&cp).ok()?;
        Some(&self.values[self.spans[i] as usize..self.spans[i + 1] as usize])
    }

    /// The string the e5 Unigram model sees: every code point mapped through the
    /// table, runs of U+0020 collapsed to one, a leading metaspace unless the
    /// text starts with a space, and every space replaced by the metaspace.
    pub(crate) fn sentencepiece_input(&self, text: &str) -> String {
        let mut out = String::with_capacity(text.len() + 3);
        out.push(METASPACE);
        let mut prev_space = false;
        let mut first = true;
        let mut emit = |c: char, out: &mut String| {
            if c == ' ' {
                if prev_space {
                    return;
                }
                prev_space = true;
                if first {
                    // The text starts with a space: it becomes the leading metaspace.
                    first = false;
                    return;
                }
                out.push(METASPACE);
            } else {
                prev_space = false;
                out.push(c);
            }
            first = false;
        };
        for c in text.chars() {
            match self.lookup(c) {
                None => emit(c, &mut out),
                Some(repl) => {
                    for &r in repl {
                        emit(r, &mut out);
                    }
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(cp: u32, to: &[u32]) -> Vec<u8> {
        let mut v = cp.to_le_bytes().to_vec();
        v.push(to.len() as u8);
        for t in to {
            v.extend_from_slice(&t.to_le_bytes());
        }
        v
    }

    fn sample() -> CodepointMap {
        // TAB -> space, 'Ａ' (U+FF21) -> 'A', U+00AD soft hyphen -> nothing, '½' -> "1⁄2"
        let mut bytes = entry(0x09, &[0x20]);
        bytes.extend(entry(0xAD, &[]));
        bytes.extend(entry(0xBD, &[0x31, 0x2044, 0x32]));
        bytes.extend(entry(0xFF21, &[0x41]));
        CodepointMap::parse(&bytes, 4).unwrap()
    }

    #[test]
    fn maps_collapses_and_adds_metaspace() {
        let m = sample();
        assert_eq!(m.len(), 4);
        assert_eq!(m.sentencepiece_input("Ａb\t \tc½\u{AD}"), "▁Ab▁c1⁄2");
        assert_eq!(m.sentencepiece_input("a  b"), "▁a▁b");
        // A leading space is the leading metaspace; nothing doubles it.
        assert_eq!(m.sentencepiece_input("  a"), "▁a");
        assert_eq!(m.sentencepiece_input(""), "▁");
        assert_eq!(m.sentencepiece_input("你好 世界"), "▁你好▁世界");
    }

    #[test]
    fn rejects_unsorted_truncated_and_invalid_entries() {
        let mut unsorted = entry(0x42, &[0x41]);
        unsorted.extend(entry(0x41, &[0x42]));
        assert!(CodepointMap::parse(&unsorted, 2).is_err());
        assert!(CodepointMap::parse(&entry(0x41, &[0x42])[..6], 1).is_err());
        assert!(CodepointMap::parse(&entry(0x41, &[0xD800]), 1).is_err());
    }
}
