//! The encoder's steps as candle custom ops, on `gemm` and plain loops.
//!
//! Measured on the 2-core target machine, these beat candle's generic ops
//! several times over for one short query (17 tokens), where per-op overhead
//! and `gemm`'s thread hand-off dominate:
//!
//! * [`Linear`]: `y = x·W + b` (optionally followed by GELU) with the weights
//!   stored transposed, `[in, out]` row-major: `gemm` runs 3–7× faster for
//!   few rows in that layout than reading PyTorch's `[out, in]` in place.
//!   Small inputs split the output columns across the rayon threads, each a
//!   single-threaded `gemm`; large inputs use `gemm`'s parallel kernel.
//! * [`LayerNorm`]: `LN(x + residual)` in one pass, no temporary tensor.
//! * [`Attention`]: softmax attention over *packed* sequences: the tokens of
//!   all windows are concatenated into one `[T, 3H]` matrix (no padding, so
//!   no mask and no wasted rows) and each (window, head) pair is one task
//!   computing `softmax(Q·Kᵀ)·V` with two strided `gemm` calls.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Shape, Tensor};
use gemm::{gemm, Parallelism};
use rayon::prelude::*;

/// Multiply-adds above which `gemm`'s own parallel kernel beats the column split.
const BIG_PRODUCT: usize = 64 * 384 * 1536;
/// Elements above which row-wise epilogues (GELU, LayerNorm) run in parallel.
const PARALLEL_ELEMENTS: usize = 64 * 384;

/// `erf(x)` as a rational polynomial (Eigen's `generic_fast_erf_float`):
/// within a few float ulps of libm, branch-free and vectorisable.
fn erf(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = -2.726_142_3e-10_f32;
    for c in [
        2.770_681_4e-8,
        -2.101_024e-6,
        -5.692_506_4e-5,
        -7.349_906_3e-4,
        -2.954_600_1e-3,
        -1.609_603_3e-2,
    ] {
        p = p * x2 + c;
    }
    let mut q = -1.456_607_2e-5_f32;
    for c in [
        -2.133_740_6e-4,
        -1.682_827e-3,
        -7.373_329_3e-3,
        -1.426_474e-2,
    ] {
        q = q * x2 + c;
    }
    x * p / q
}

/// BERT's exact GELU: `x · Φ(x) = x/2 · (1 + erf(x/√2))`.
fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// Layer normalisation over the last axis, optionally of `x + residual`.
pub(crate) struct LayerNorm {
    w: Vec<f32>,
    b: Vec<f32>,
    eps: f32,
}

impl LayerNorm {
    /// Builds the norm from its scale and shift vectors.
    pub(crate) fn new(w: &Tensor, b: &Tensor, eps: f64) -> candle_core::Result<Self> {
        Ok(LayerNorm {
            w: w.to_vec1()?,
            b: b.to_vec1()?,
            eps: eps as f32,
        })
    }

    /// `LN(x)`.
    pub(crate) fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        x.apply_op1_no_bwd(self)
    }

    /// `LN(x + residual)`.
    pub(crate) fn forward_add(&self, x: &Tensor, residual: &Tensor) -> candle_core::Result<Tensor> {
        x.apply_op2_no_bwd(residual, self)
    }

    fn run(
        &self,
        x: &[f32],
        residual: Option<&[f32]>,
        dims: &[usize],
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let h = self.w.len();
        if dims.last() != Some(&h) || residual.is_some_and(|r| r.len() != x.len()) {
            return Err(candle_core::Error::Msg(format!(
                "layer norm: input {dims:?}, width {h}"
            )));
        }
        let mut y = x.to_vec();
        let norm_row = |(i, row): (usize, &mut [f32])| {
            if let Some(r) = residual {
                row.iter_mut()
                    .zip(&r[i * h..(i + 1) * h])
                    .for_each(|(a, b)| *a += b);
            }
            let mean = row.iter().sum::<f32>() / h as f32;
            let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / h as f32;
            let inv = 1.0 / (var + self.eps).sqrt();
            for ((v, w), b) in row.iter_mut().zip(&self.w).zip(&self.b) {
                *v = (*v - mean) * inv * w + b;
            }
        };
        if y.len() >= PARALLEL_ELEMENTS {
            y.par_chunks_mut(h).enumerate().for_each(norm_row);
        } else {
            y.chunks_mut(h).enumerate().for_each(norm_row);
        }
        Ok((CpuStorage::F32(y), Shape::from(dims)))
    }
}

impl CustomOp1 for LayerNorm {
    fn name(&self) -> &'static str {
        "layer-norm"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        self.run(
            contiguous_f32(storage, layout, "layer norm")?,
            None,
            layout.dims(),
        )
    }
}

impl CustomOp2 for LayerNorm {
    fn name(&self) -> &'static str {
        "add-layer-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let residual = contiguous_f32(s2, l2, "layer norm residual")?;
        self.run(
            contiguous_f32(s1, l1, "layer norm")?,
            Some(residual),
            l1.dims(),
        )
    }
}

/// A raw output pointer shared by tasks that write disjoint regions.
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: every task writes a region no other task touches (see call sites),
// and the buffer outlives the parallel scope.
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}
impl OutPtr {
    fn at(self, offset: usize) -> *mut f32 {
        // SAFETY: callers pass offsets inside the allocation.
        unsafe { self.0.add(offset) }
    }
}

fn contiguous_f32<'a>(
    storage: &'a CpuStorage,
    layout: &Layout,
    op: &str,
) -> candle_core::Result<&'a [f32]> {
    let (start, end) = layout
        .contiguous_offsets()
        .ok_or_else(|| candle_core::Error::Msg(format!("{op}: input must be contiguous")))?;
    Ok(&storage.as_slice::<f32>()?[start..end])
}

/// A dense layer: weights kept transposed (`[in, out]` row-major), bias `[out]`.
pub(crate) struct Linear {
    wt: Vec<f32>,
    b: Vec<f32>,
    out: usize,
    inp: usize,
    gelu: bool,
}

impl Linear {
    /// Builds the layer from PyTorch-layout `w` (`[out, in]`) and `b` (`[out]`).
    pub(crate) fn new(w: &Tensor, b: &Tensor) -> candle_core::Result<Self> {
        let (out, inp) = w.dims2()?;
        Ok(Linear {
            wt: w.t()?.contiguous()?.flatten_all()?.to_vec1()?,
            b: b.to_vec1()?,
            out,
            inp,
            gelu: false,
        })
    }

    /// The same layer followed by the exact (erf) GELU activation.
    pub(crate) fn with_gelu(mut self) -> Self {
        self.gelu = true;
        self
    }

    /// Applies the layer to `x` (`[.., in]`, contiguous), giving `[.., out]`.
    pub(crate) fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        x.apply_op1_no_bwd(self)
    }
}

impl CustomOp1 for Linear {
    fn name(&self) -> &'static str {
        "fused-linear"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(storage, layout, "linear")?;
        let mut dims = layout.dims().to_vec();
        let (k, n) = (self.inp, self.out);
        if dims.last() != Some(&k) {
            return Err(candle_core::Error::Msg(format!(
                "linear: input {dims:?}, weights take {k}"
            )));
        }
        let m = x.len() / k;
        let mut y = Vec::with_capacity(m * n);
        for _ in 0..m {
            y.extend_from_slice(&self.b);
        }
        let threads = rayon::current_num_threads().max(1);
        let out = OutPtr(y.as_mut_ptr());
        // y[m, n] += x[m, k] · Wt[k, n], columns c0..c0+cols at a time.
        let run = |c0: usize, cols: usize, par: Parallelism| unsafe {
            // SAFETY: x is m×k, Wt is k×n so columns c0..c0+cols are in bounds,
            // and the destination columns c0..c0+cols of the m×n buffer belong to this call.
            gemm(
                m,
                cols,
                k,
                out.at(c0),
                1,
                n as isize,
                true,
                x.as_ptr(),
                1,
                k as isize,
                self.wt.as_ptr().add(c0),
                1,
                n as isize,
                1.0f32,
                1.0f32,
                false,
                false,
                false,
                par,
            )
        };
        if threads == 1 {
            run(0, n, Parallelism::None);
        } else if m * n * k >= BIG_PRODUCT {
            run(0, n, Parallelism::Rayon(threads));
        } else {
            let chunk = n.div_ceil(threads);
            (0..n.div_ceil(chunk)).into_par_iter().for_each(|t| {
                let c0 = t * chunk;
                run(c0, chunk.min(n - c0), Parallelism::None);
            });
        }
        if self.gelu {
            let apply = |v: &mut [f32]| v.iter_mut().for_each(|x| *x = gelu(*x));
            if m * n >= PARALLEL_ELEMENTS {
                y.par_chunks_mut(n).for_each(apply);
            } else {
                apply(&mut y);
            }
        }
        if let Some(d) = dims.last_mut() {
            *d = n;
        }
        Ok((CpuStorage::F32(y), Shape::from(dims)))
    }
}

/// Multi-head self-attention over packed windows, applied to a `[T, 3H]`
/// Q|K|V matrix (Q already scaled by `1/sqrt(head_dim)`), giving `[T, H]`.
pub(crate) struct Attention<'a> {
    /// `(first row, length)` of each window in the packed matrix.
    pub segments: &'a [(usize, usize)],
    pub heads: usize,
}

impl CustomOp1 for Attention<'_> {
    fn name(&self) -> &'static str {
        "packed-attention"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let qkv = contiguous_f32(storage, layout, "attention")?;
        let (t, h3) = layout.shape().dims2()?;
        let h = h3 / 3;
        let hd = h / self.heads.max(1);
        if h3 % 3 != 0 || hd * self.heads != h || self.segments.iter().any(|&(s, l)| s + l > t) {
            return Err(candle_core::Error::Msg(format!(
                "attention: bad shape [{t}, {h3}] for {} heads",
                self.heads
            )));
        }
        let mut ctx = vec![0f32; t * h];
        let out = OutPtr(ctx.as_mut_ptr());
        let tasks: Vec<(usize, usize, usize)> = self
            .segments
            .iter()
            .flat_map(|&(s0, len)| (0..self.heads).map(move |head| (s0, len, head)))
            .collect();
        tasks
            .par_iter()
            .for_each_init(Vec::new, |scores: &mut Vec<f32>, &(s0, len, head)| {
                scores.clear();
                scores.resize(len * len, 0.0);
                let q = qkv[s0 * h3 + head * hd..].as_ptr();
                let k = qkv[s0 * h3 + h + head * hd..].as_ptr();
                let v = qkv[s0 * h3 + 2 * h + head * hd..].as_ptr();
                // SAFETY: rows s0..s0+len of the t×3h input are in bounds (checked
                // above); scores is len×len; the destination block (rows
                // s0..s0+len, columns head·hd..(head+1)·hd) is written by this task only.
                unsafe {
                    gemm(
                        len,
                        len,
                        hd,
                        scores.as_mut_ptr(),
                        1,
                        len as isize,
                        false,
                        q,
                        1,
                        h3 as isize,
                        k,
                        h3 as isize,
                        1,
                        0.0f32,
                        1.0f32,
                        false,
                        false,
                        false,
                        Parallelism::None,
                    );
                }
                for row in scores.chunks_exact_mut(len) {
                    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                    let mut sum = 0.0;
                    for s in row.iter_mut() {
                        *s = (*s - max).exp();
                        sum += *s;
                    }
                    let inv = 1.0 / sum;
                    row.iter_mut().for_each(|s| *s *= inv);
                }
                unsafe {
                    gemm(
                        len,
                        hd,
                        len,
                        out.at(s0 * h + head * hd),
                        1,
                        h as isize,
                        false,
                        scores.as_ptr(),
                        1,
                        len as isize,
                        v,
                        1,
                        h3 as isize,
                        0.0f32,
                        1.0f32,
                        false,
                        false,
                        false,
                        Parallelism::None,
                    );
                }
            });
        Ok((CpuStorage::F32(ctx), Shape::from((t, h))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn rand_tensor(shape: &[usize], seed: u64) -> Tensor {
        let n: usize = shape.iter().product();
        let mut s = seed;
        let data: Vec<f32> = (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) - 0.5
            })
            .collect();
        Tensor::from_vec(data, shape, &Device::Cpu).unwrap()
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar()
            .unwrap()
    }

    #[test]
    fn linear_matches_matmul_for_small_and_large_inputs() {
        let w = rand_tensor(&[96, 40], 1);
        let b = rand_tensor(&[96], 2);
        let lin = Linear::new(&w, &b).unwrap();
        for m in [1, 7, 3000] {
            let x = rand_tensor(&[m, 40], 3);
            let expected = x
                .matmul(&w.t().unwrap())
                .unwrap()
                .broadcast_add(&b)
                .unwrap();
            assert!(
                max_diff(&lin.forward(&x).unwrap(), &expected) < 1e-4,
                "m = {m}"
            );
        }
        assert!(lin.forward(&rand_tensor(&[2, 41], 4)).is_err());
        let x = rand_tensor(&[5, 40], 6);
        let expected = lin.forward(&x).unwrap().gelu_erf().unwrap();
        let fused = Linear::new(&w, &b)
            .unwrap()
            .with_gelu()
            .forward(&x)
            .unwrap();
        assert!(max_diff(&fused, &expected) < 1e-5);
    }

    #[test]
    fn polynomial_erf_matches_libm() {
        for i in -800..=800 {
            let x = i as f32 / 100.0;
            assert!(
                (erf(x) - candle_core::cpu::erf::erf_f32(x)).abs() < 2e-6,
                "x = {x}"
            );
        }
    }

    #[test]
    fn fused_layer_norm_matches_candle_nn() {
        let (w, b) = (rand_tensor(&[24], 7), rand_tensor(&[24], 8));
        let reference = candle_nn::LayerNorm::new(w.clone(), b.clone(), 1e-12);
        let ours = LayerNorm::new(&w, &b, 1e-12).unwrap();
        for rows in [3, 2000] {
            let (x, r) = (rand_tensor(&[rows, 24], 9), rand_tensor(&[rows, 24], 10));
            use candle_nn::Module;
            let expected = reference.forward(&(&x + &r).unwrap()).unwrap();
            assert!(max_diff(&ours.forward_add(&x, &r).unwrap(), &expected) < 1e-5);
            assert!(max_diff(&ours.forward(&x).unwrap(), &reference.forward(&x).unwrap()) < 1e-5);
        }
    }

    #[test]
    fn packed_attention_matches_per_window_softmax_attention() {
        let (heads, hd) = (3, 4);
        let h = heads * hd;
        let segments = [(0, 5), (5, 1), (6, 9)];
        let qkv = rand_tensor(&[15, 3 * h], 5);
        let got = qkv
            .apply_op1_no_bwd(&Attention {
                segments: &segments,
                heads,
            })
            .unwrap();
        for &(s0, len) in &segments {
            let part = qkv.narrow(0, s0, len).unwrap();
            let split = |i: usize| {
                part.narrow(1, i * h, h)
                    .unwrap()
                    .reshape((len, heads, hd))
                    .unwrap()
                    .transpose(0, 1)
                    .unwrap()
                    .contiguous()
                    .unwrap()
            };
            let (q, k, v) = (split(0), split(1), split(2));
            let probs =
                candle_nn::ops::softmax_last_dim(&q.matmul(&k.t().unwrap()).unwrap()).unwrap();
            let expected = probs
                .matmul(&v)
                .unwrap()
                .transpose(0, 1)
                .unwrap()
                .reshape((len, h))
                .unwrap();
            assert!(max_diff(&got.narrow(0, s0, len).unwrap(), &expected) < 1e-5);
        }
    }
}
