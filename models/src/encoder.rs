//! The BERT encoder forward pass (candle) and mean pooling.
//!
//! Windows are *packed*: their tokens are concatenated into one `[T, H]`
//! matrix, so every weight matrix is streamed once per batch and no compute
//! is spent on padding. Per layer: fused QKV projection, per-window attention
//! ([`Attention`]), output projection and residual LayerNorm, GELU
//! feed-forward and residual LayerNorm. The result is each window's mean over
//! its tokens, before normalisation, so callers can combine windows.

use candle_core::{Device, Tensor};

use crate::kernels::Attention;
use crate::weights::BertWeights;
use crate::Error;

/// Mean-pooled last hidden states of each window (token ids including the
/// begin/end tokens; every window must be non-empty and fit the model).
pub(crate) fn pooled(w: &BertWeights, windows: &[Vec<u32>]) -> Result<Vec<Vec<f32>>, Error> {
    let total: usize = windows.iter().map(Vec::len).sum();
    if windows.iter().any(Vec::is_empty) {
        return Err(Error::InvalidInput("empty encoder window".into()));
    }
    if total == 0 {
        return Ok(Vec::new());
    }
    let h = w.cfg.hidden;
    let mut ids = Vec::with_capacity(total);
    let mut positions = Vec::with_capacity(total);
    let mut segments = Vec::with_capacity(windows.len());
    for win in windows {
        segments.push((ids.len(), win.len()));
        ids.extend_from_slice(win);
        positions.extend(0..win.len());
    }

    let x = Tensor::from_vec(w.embed(&ids, &positions)?, (total, h), &Device::Cpu)?;
    let mut x = w.emb_norm.forward(&x)?;
    let attention = Attention {
        segments: &segments,
        heads: w.cfg.heads,
    };
    for layer in &w.layers {
        let ctx = layer.qkv.forward(&x)?.apply_op1_no_bwd(&attention)?;
        x = layer
            .attn_norm
            .forward_add(&layer.attn_out.forward(&ctx)?, &x)?;
        let mid = layer.ffn_in.forward(&x)?;
        x = layer
            .out_norm
            .forward_add(&layer.ffn_out.forward(&mid)?, &x)?;
    }

    let hidden: Vec<f32> = x.flatten_all()?.to_vec1()?;
    let pooled = segments
        .iter()
        .map(|&(s0, len)| {
            let mut acc = vec![0f32; h];
            for row in hidden[s0 * h..(s0 + len) * h].chunks_exact(h) {
                for (a, &v) in acc.iter_mut().zip(row) {
                    *a += v;
                }
            }
            let inv = 1.0 / len as f32;
            acc.iter_mut().for_each(|a| *a *= inv);
            acc
        })
        .collect();
    Ok(pooled)
}

/// Scales `v` to unit L2 norm (left unchanged if it is all zeros).
pub(crate) fn l2_normalize(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 1e-12 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
}
