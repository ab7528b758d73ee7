//! AVX-512 micro-kernels: one zmm register holds a whole 16-column panel row.
//!
//! Every function is `unsafe` and compiled with the AVX-512 features it
//! uses; callers must have checked them (`crate::cpu` does, once) and pass
//! slices of the documented sizes.

use std::arch::x86_64::*;

use crate::kernels::{Q8Rows, PANEL, QK};

/// Mask of columns `lo..hi` of a 16-column row.
fn col_mask(lo: usize, hi: usize) -> u16 {
    let upto = |n: usize| if n >= 16 { u16::MAX } else { (1u16 << n) - 1 };
    upto(hi) & !upto(lo)
}

/// f32 tile of `mr ≤ 8` rows × 16 columns (one accumulator per row).
///
/// # Safety
/// AVX-512 F present; `x` is `mr × k`, `w` is `k × 16`; `y` is writable at
/// `r·ldy + c` for `r < mr`, `lo ≤ c < hi ≤ 16`, and nobody else touches it.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma")]
pub(crate) unsafe fn f32_tile(
    x: &[f32],
    mr: usize,
    k: usize,
    w: &[f32],
    bias: &[f32; PANEL],
    y: *mut f32,
    ldy: usize,
    lo: usize,
    hi: usize,
) {
    assert!(x.len() >= mr * k && w.len() >= k * PANEL && hi <= PANEL && mr <= 8);
    // SAFETY: sizes checked above; y is the caller's promise.
    unsafe {
        match mr {
            8 => f32_rows::<8>(x, k, w, bias, y, ldy, lo, hi),
            7 => f32_rows::<7>(x, k, w, bias, y, ldy, lo, hi),
            6 => f32_rows::<6>(x, k, w, bias, y, ldy, lo, hi),
            5 => f32_rows::<5>(x, k, w, bias, y, ldy, lo, hi),
            4 => f32_rows::<4>(x, k, w, bias, y, ldy, lo, hi),
            3 => f32_rows::<3>(x, k, w, bias, y, ldy, lo, hi),
            2 => f32_rows::<2>(x, k, w, bias, y, ldy, lo, hi),
            1 => f32_rows::<1>(x, k, w, bias, y, ldy, lo, hi),
            _ => {}
        }
    }
}

#[allow(clippy::too_many_arguments)]
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma")]
unsafe fn f32_rows<const MR: usize>(
    x: &[f32],
    k: usize,
    w: &[f32],
    bias: &[f32; PANEL],
    y: *mut f32,
    ldy: usize,
    lo: usize,
    hi: usize,
) {
    let (xp, wp) = (x.as_ptr(), w.as_ptr());
    // SAFETY (whole body): reads within x and w as checked by the caller;
    // masked writes to the caller's tile of y.
    unsafe {
        let b = _mm512_loadu_ps(bias.as_ptr());
        let mut acc = [b; MR];
        for kk in 0..k {
            let wv = _mm512_loadu_ps(wp.add(kk * PANEL));
            for (r, a) in acc.iter_mut().enumerate() {
                *a = _mm512_fmadd_ps(_mm512_set1_ps(*xp.add(r * k + kk)), wv, *a);
            }
        }
        let mask = col_mask(lo, hi);
        for (r, a) in acc.iter().enumerate() {
            _mm512_mask_storeu_ps(y.add(r * ldy), mask, *a);
        }
    }
}

/// Q4 weights × Q8 activations with AVX-512 VNNI for `mr ≤ 8` rows: per
/// group of 4 inputs one `vpdpbusd` multiplies the 16 columns' 4 weight
/// bytes with the row's broadcast 4 activation bytes and accumulates into
/// 32-bit lanes, so a block's exact integer dot product needs no widening.
///
/// # Safety
/// AVX-512 F/BW/VL and VNNI present; sizes as for the AVX2 `q4_tile`.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")]
pub(crate) unsafe fn q4_tile(
    a: &Q8Rows<'_>,
    mr: usize,
    w: &[u8],
    wd: &[f32],
    bias: &[f32; PANEL],
    y: *mut f32,
    ldy: usize,
    lo: usize,
    hi: usize,
) {
    let nb = a.k / QK;
    assert!(
        a.q.len() >= mr * a.k
            && a.d.len() >= mr * nb
            && a.s.len() >= mr * nb
            && w.len() >= nb * QK * PANEL
            && wd.len() >= nb * PANEL
            && hi <= PANEL
            && mr <= 8
    );
    // SAFETY: sizes checked above; y is the caller's promise.
    unsafe {
        match mr {
            8 => q4_rows::<8>(a, w, wd, bias, y, ldy, lo, hi),
            7 => q4_rows::<7>(a, w, wd, bias, y, ldy, lo, hi),
            6 => q4_rows::<6>(a, w, wd, bias, y, ldy, lo, hi),
            5 => q4_rows::<5>(a, w, wd, bias, y, ldy, lo, hi),
            4 => q4_rows::<4>(a, w, wd, bias, y, ldy, lo, hi),
            3 => q4_rows::<3>(a, w, wd, bias, y, ldy, lo, hi),
            2 => q4_rows::<2>(a, w, wd, bias, y, ldy, lo, hi),
            1 => q4_rows::<1>(a, w, wd, bias, y, ldy, lo, hi),
            _ => {}
        }
    }
}

#[allow(clippy::too_many_arguments)]
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")]
unsafe fn q4_rows<const MR: usize>(
    a: &Q8Rows<'_>,
    w: &[u8],
    wd: &[f32],
    bias: &[f32; PANEL],
    y: *mut f32,
    ldy: usize,
    lo: usize,
    hi: usize,
) {
    let (k, nb) = (a.k, a.k / QK);
    let (qa, da, sa) = (a.q.as_ptr(), a.d.as_ptr(), a.s.as_ptr());
    // SAFETY (whole body): reads within the checked slices; masked writes to
    // the caller's tile of y.
    unsafe {
        let mut acc = [_mm512_loadu_ps(bias.as_ptr()); MR];
        for b in 0..nb {
            let wb = w.as_ptr().add(b * QK * PANEL);
            let mut isum = [_mm512_setzero_si512(); MR];
            for g in 0..QK / 4 {
                let wv = _mm512_loadu_si512(wb.add(g * 64) as *const __m512i);
                for (r, s) in isum.iter_mut().enumerate() {
                    let quad = (qa.add(r * k + b * QK + g * 4) as *const i32).read_unaligned();
                    *s = _mm512_dpbusd_epi32(*s, wv, _mm512_set1_epi32(quad));
                }
            }
            let d = _mm512_loadu_ps(wd.as_ptr().add(b * PANEL));
            for (r, (s, f)) in isum.iter().zip(acc.iter_mut()).enumerate() {
                let corr = _mm512_set1_epi32(8 * *sa.add(r * nb + b));
                let scale = _mm512_mul_ps(d, _mm512_set1_ps(*da.add(r * nb + b)));
                *f = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(*s, corr)), scale, *f);
            }
        }
        let mask = col_mask(lo, hi);
        for (r, f) in acc.iter().enumerate() {
            _mm512_mask_storeu_ps(y.add(r * ldy), mask, *f);
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn column_masks() {
        assert_eq!(super::col_mask(0, 16), u16::MAX);
        assert_eq!(super::col_mask(0, 3), 0b111);
        assert_eq!(super::col_mask(2, 4), 0b1100);
        assert_eq!(super::col_mask(15, 16), 1 << 15);
    }
}
