//! A few rows of f32 activations times an f32 weight matrix where it lies, four weight rows
//! by up to six activation rows at a time in AVX-512 registers.
//!
//! The portable path ([`super::fgemv`]) takes one (weight row, activation row) dot product at a
//! time: two loads per multiply-add, and a sixteen-lane sum after every 576-long dot. Here each
//! loaded weight vector serves six activation rows and each activation vector four weight
//! rows (ten loads per 24 multiply-adds), and the lanes are summed once per tile. A
//! decode step of 16 rows took 60 ms with f32 weights before, against the 13 ms it takes to
//! read them.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// Weight rows per tile.
const W: usize = 4;
/// Activation rows per tile, at most: 24 accumulators, 4 weight vectors and one activation
/// vector fill 29 of the 32 registers. Six rather than four: a step of 48 rows 58 -> 52 ms.
const R: usize = 6;

/// Whether this CPU runs [`products`] (AVX-512F; [`super::cpu::avx512`]).
pub(in crate::model) use super::cpu::avx512 as available;

/// `y [m, n] = x [m, k] · wᵀ` for `w [n, k]`, on candle's worker pool: each thread takes one
/// contiguous share of the weight rows and reads each of them once. Callers check
/// [`available`] first.
#[cfg(target_arch = "x86_64")]
pub(in crate::model) fn products(
    ws: &[f32],
    xs: &[f32],
    (m, n, k): (usize, usize, usize),
) -> Vec<f32> {
    assert!(available() && ws.len() >= n * k && xs.len() >= m * k);
    let mut y = vec![0f32; m * n];
    let out = super::qgemm::SharedOut(y.as_mut_ptr());
    // Shares of whole tiles.
    super::qgemm::weight_row_shares(n, W, |rows| {
        // SAFETY: the share's rows j write only y[·, j], inside y; avx512f was checked.
        unsafe { share(ws, xs, out, rows, (m, n, k)) };
    });
    y
}

#[cfg(not(target_arch = "x86_64"))]
pub(in crate::model) fn products(_: &[f32], _: &[f32], _: (usize, usize, usize)) -> Vec<f32> {
    unreachable!("fblock::available() is false off x86-64")
}

/// The weight rows `rows` of [`products`]: whole tiles of [`W`], then the last rows one by one.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn share(
    ws: &[f32],
    xs: &[f32],
    out: super::qgemm::SharedOut,
    rows: std::ops::Range<usize>,
    (m, n, k): (usize, usize, usize),
) {
    let mut j = rows.start;
    while j < rows.end {
        let w = ws.as_ptr().add(j * k);
        // The first pass over a tile also asks for the rows two tiles on, which the
        // hardware prefetcher, following four streams, fetched too late: the weight loads
        // stalled on memory.
        let next = (j + 3 * W <= rows.end).then(|| w.add(2 * W * k));
        j += tile_rows(w, rows.end - j, xs, out, j, (m, n, k), next);
    }
}

/// `y[·, j..]` for the weight rows at `w` (stride `k`), of which `left` remain in the share:
/// a tile of [`W`] rows when there are, else one row, times every activation row, [`R`] at a
/// time. Returns the number of weight rows done.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn tile_rows(
    w: *const f32,
    left: usize,
    xs: &[f32],
    out: super::qgemm::SharedOut,
    j: usize,
    (m, n, k): (usize, usize, usize),
    next: Option<*const f32>,
) -> usize {
    let width = if left >= W { W } else { 1 };
    let mut r = 0;
    while r < m {
        let x = xs.as_ptr().add(r * k);
        let next = next.filter(|_| r == 0);
        let t = match (width, (m - r).min(R)) {
            (W, 1) => tile::<W, 1>(w, x, k, next),
            (W, 2) => tile::<W, 2>(w, x, k, next),
            (W, 3) => tile::<W, 3>(w, x, k, next),
            (W, 4) => tile::<W, 4>(w, x, k, next),
            (W, 5) => tile::<W, 5>(w, x, k, next),
            (W, _) => tile::<W, R>(w, x, k, next),
            _ => tile::<1, 1>(w, x, k, None),
        };
        let tr = if width == W { R.min(m - r) } else { 1 };
        for (a, row) in t.iter().enumerate().take(tr) {
            for (b, v) in row.iter().enumerate().take(width) {
                *out.at((r + a) * n + j + b) = *v;
            }
        }
        r += tr;
    }
    width
}

/// [`products`] with the weights as GGUF blocks of a type [`super::qrows::decodes`]: each
/// tile is decoded into a buffer of its thread and multiplied as [`products`] multiplies it
/// where it lies, so the output is the same bit for bit, having read a quarter of the bytes.
#[cfg(target_arch = "x86_64")]
pub(in crate::model) fn products_decoded(
    blocks: &[u8],
    dtype: candle_core::quantized::GgmlDType,
    xs: &[f32],
    (m, n, k): (usize, usize, usize),
) -> Vec<f32> {
    let rb = super::qrows::row_bytes(dtype, k);
    assert!(super::qrows::decodes(dtype) && blocks.len() >= n * rb && xs.len() >= m * k);
    let mut y = vec![0f32; m * n];
    let out = super::qgemm::SharedOut(y.as_mut_ptr());
    super::qgemm::weight_row_shares(n, W, |rows| {
        let mut buf = vec![0f32; W * k];
        let mut j = rows.start;
        while j < rows.end {
            let width = if rows.end - j >= W { W } else { 1 };
            // SAFETY: rows j..j + width lie inside the share; avx512f was checked.
            unsafe {
                let ahead = (j + 2 * W) * rb;
                if ahead + W * rb <= rows.end * rb {
                    for at in (ahead..ahead + W * rb).step_by(64) {
                        _mm_prefetch::<_MM_HINT_T0>(blocks.as_ptr().add(at).cast());
                    }
                }
                let tile = &mut buf[..width * k];
                super::qrows::decode(dtype, &blocks[j * rb..(j + width) * rb], tile);
                tile_rows(tile.as_ptr(), rows.end - j, xs, out, j, (m, n, k), None);
            }
            j += width;
        }
    });
    y
}

#[cfg(not(target_arch = "x86_64"))]
pub(in crate::model) fn products_decoded(
    _: &[u8],
    _: candle_core::quantized::GgmlDType,
    _: &[f32],
    _: (usize, usize, usize),
) -> Vec<f32> {
    unreachable!("fblock::available() is false off x86-64")
}

/// Dot products of `WR` weight rows at `w` with `XR` activation rows at `x` (both of row
/// length and stride `k`), as `[activation row][weight row]`; `prefetch`, when given, is
/// another `WR` rows to bring into the cache on the way.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn tile<const WR: usize, const XR: usize>(
    w: *const f32,
    x: *const f32,
    k: usize,
    prefetch: Option<*const f32>,
) -> [[f32; W]; R] {
    let mut acc = [[_mm512_setzero_ps(); WR]; XR];
    let mut c = 0;
    while c < k {
        // The last block of a row whose length is not a multiple of 16 loads only its lanes.
        let mask: __mmask16 = if k - c >= 16 {
            !0
        } else {
            (1u16 << (k - c)) - 1
        };
        if let Some(p) = prefetch {
            for i in 0..WR {
                _mm_prefetch::<_MM_HINT_T0>(p.add(i * k + c) as *const i8);
            }
        }
        let mut wv = [_mm512_setzero_ps(); WR];
        for (i, v) in wv.iter_mut().enumerate() {
            *v = _mm512_maskz_loadu_ps(mask, w.add(i * k + c));
        }
        for (r, acc_r) in acc.iter_mut().enumerate() {
            let xv = _mm512_maskz_loadu_ps(mask, x.add(r * k + c));
            for (a, v) in acc_r.iter_mut().zip(&wv) {
                *a = _mm512_fmadd_ps(xv, *v, *a);
            }
        }
        c += 16;
    }
    let mut out = [[0f32; W]; R];
    for (o, a) in out.iter_mut().zip(&acc) {
        for (o, a) in o.iter_mut().zip(a) {
            *o = _mm512_reduce_add_ps(*a);
        }
    }
    out
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use candle_core::quantized::{GgmlDType, QTensor};
    use candle_core::{Device, Tensor};

    /// Every output equals the f64 dot product to rounding, for row counts that leave partial
    /// tiles on both sides (1 to 7 activation rows, 10 weight rows) and a row length with a
    /// partial last block (37).
    #[test]
    fn products_equal_the_dot_products() {
        if !super::available() {
            eprintln!("no AVX-512 here: nothing to test");
            return;
        }
        let (n, k) = (10, 37);
        let val = |i: usize| ((i * 7919 % 101) as f32 - 50.0) / 25.0;
        let ws: Vec<f32> = (0..n * k).map(val).collect();
        for m in 1..=7 {
            let xs: Vec<f32> = (0..m * k).map(|i| val(i + 13)).collect();
            let y = super::products(&ws, &xs, (m, n, k));
            for r in 0..m {
                for j in 0..n {
                    let want: f64 = (0..k)
                        .map(|c| ws[j * k + c] as f64 * xs[r * k + c] as f64)
                        .sum();
                    let got = y[r * n + j] as f64;
                    assert!(
                        (got - want).abs() < 1e-4,
                        "m {m} ({r}, {j}): {got} vs {want}"
                    );
                }
            }
        }
    }

    /// Products over decoded blocks equal those over the dequantized matrix bit for bit, for
    /// every block type decoded, 1 to 13 activation rows (partial groups of 6) and 10 weight rows
    /// (partial tiles of 4) of two blocks each.
    #[test]
    fn decoded_products_equal_the_f32_products_bit_for_bit() {
        if !super::available() {
            eprintln!("no AVX-512 here: nothing to test");
            return;
        }
        let (n, k) = (10, 64);
        let val = |i: usize| ((i * 7919 % 211) as f32 - 105.0) / 37.0;
        let w = Tensor::from_vec((0..n * k).map(val).collect(), (n, k), &Device::Cpu).unwrap();
        for dtype in [GgmlDType::Q4_1, GgmlDType::Q5_0, GgmlDType::Q8_0] {
            let q = QTensor::quantize(&w, dtype).unwrap();
            let ws = q.dequantize(&Device::Cpu).unwrap().flatten_all().unwrap();
            let ws = ws.to_vec1::<f32>().unwrap();
            for m in 1..=13 {
                let xs: Vec<f32> = (0..m * k).map(|i| val(i + 29)).collect();
                let want = super::products(&ws, &xs, (m, n, k));
                let got = super::products_decoded(&q.data().unwrap(), dtype, &xs, (m, n, k));
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&got), bits(&want), "{dtype:?}, {m} rows");
            }
        }
    }
}
