//! Decode with Q4_1 and Q5_0 weights: SIMD products of weight rows with a few rows of
//! activations quantized to 8 bits per 32-value block, with llama.cpp's arithmetic
//! (`ggml_vec_dot_q4_1_q8_1`, `ggml_vec_dot_q5_0_q8_0`).
//!
//! candle 0.11 has no SIMD kernel for either type on x86 (its `vec_dot` falls back to scalar
//! code): decoding the default model (Q4_1) spent 58% of its time there (`perf`), and Gemma 3
//! 270M keeps 44 MB of its weights in Q5_0. These kernels need AVX2, FMA and F16C, detected at
//! run time; without them the caller keeps candle's product.
//!
//! A Q4_1 block (GGUF layout, 20 bytes): scale `d` (f16), minimum `m` (f16), then 16 bytes
//! whose low nibbles are values 0..16 and high nibbles values 16..32; value = d·q + m.
//! A Q5_0 block (22 bytes): `d` (f16), 32 high bits (u32, bit j for value j), then the low
//! nibbles laid out as Q4_1's; value = d·(q − 16) with q in 0..32.

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use half::f16;

const QK: usize = 32;
const Q4_1_BYTES: usize = 20;
const Q5_0_BYTES: usize = 22;
const Q8_0_BYTES: usize = 34;

/// Activations quantized per 32-value block: `x ≈ d·q`, with each block's sum `Σx ≈ s` (as
/// llama.cpp's Q8_1 keeps it) and `Σq` exactly.
struct Q8Rows {
    q: Vec<i8>,
    d: Vec<f32>,
    s: Vec<f32>,
    sum_q: Vec<i32>,
    blocks: usize,
}

impl Q8Rows {
    fn new(xs: &[f32], m: usize, k: usize) -> Q8Rows {
        let blocks = k / QK;
        let (mut q, mut d, mut s) = (
            vec![0i8; m * k],
            vec![0f32; m * blocks],
            vec![0f32; m * blocks],
        );
        let mut sum_q = vec![0i32; m * blocks];
        // As llama.cpp's quantize_row_q8_1 (and _q8_0, which keeps no sum): the scale and the
        // sum are kept as f16.
        for (b, chunk) in xs.chunks_exact(QK).enumerate() {
            // A NaN makes the block's scale NaN, so that it reaches the output instead of
            // rounding to 0 (f32::max would skip it); an infinity does so through 0·∞.
            let amax = chunk
                .iter()
                .fold(0f32, |a, v| match a.is_nan() || v.is_nan() {
                    true => f32::NAN,
                    false => a.max(v.abs()),
                });
            let scale = amax / 127.0;
            let inv = if scale != 0.0 { 1.0 / scale } else { 0.0 };
            let mut sum = 0i32;
            for (j, v) in chunk.iter().enumerate() {
                let qi = (v * inv).round() as i8;
                q[b * QK + j] = qi;
                sum += qi as i32;
            }
            let d16 = f16::from_f32(scale);
            d[b] = d16.to_f32();
            s[b] = (f16::from_f32(sum as f32) * d16).to_f32();
            sum_q[b] = sum;
        }
        Q8Rows {
            q,
            d,
            s,
            sum_q,
            blocks,
        }
    }
}

/// Whether this machine has the instructions the kernel needs.
use super::cpu::avx2_fma_f16c as available;

/// One weight row (whole blocks) times activation row `r`.
type DotFn = unsafe fn(&[u8], &Q8Rows, usize) -> f32;

/// `x [m, k] · wᵀ` for a Q4_1 or Q5_0 `w [n, k]` on the CPU, as `[m, n]`; None when no kernel
/// here applies (another type or device, no AVX2), and the caller uses candle's product.
pub(in crate::model) fn matmul(w: &QTensor, x: &Tensor) -> candle_core::Result<Option<Tensor>> {
    let (n, k) = w.shape().dims2()?;
    let (m, xk) = x.dims2()?;
    let (dot, block_bytes): (DotFn, usize) = match w.dtype() {
        GgmlDType::Q4_1 => (dot_q4_1, Q4_1_BYTES),
        GgmlDType::Q5_0 => (dot_q5_0, Q5_0_BYTES),
        GgmlDType::Q8_0 => (dot_q8_0, Q8_0_BYTES),
        _ => return Ok(None),
    };
    if !matches!(w.device(), Device::Cpu) || xk != k {
        return Ok(None);
    }
    if !k.is_multiple_of(QK) || !available() {
        return Ok(None);
    }
    let data = w.data()?;
    let row_bytes = k / QK * block_bytes;
    if data.len() != row_bytes * n {
        return Ok(None);
    }
    let xs = x.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
    let xq = Q8Rows::new(&xs, m, k);
    let y = super::qgemm::row_products(n, m, |j, r| {
        // SAFETY: `available()` checked AVX2, FMA and F16C; the row holds whole blocks.
        unsafe { dot(&data[j * row_bytes..(j + 1) * row_bytes], &xq, r) }
    });
    Ok(Some(Tensor::from_vec(y, (m, n), &Device::Cpu)?))
}

/// One Q4_1 weight row times activation row `r`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_q4_1(row: &[u8], x: &Q8Rows, r: usize) -> f32 {
    use std::arch::x86_64::*;
    let nb = x.blocks;
    let (xq, xd, xs) = (&x.q[r * nb * QK..], &x.d[r * nb..], &x.s[r * nb..]);
    let low = _mm_set1_epi8(0x0F);
    let ones = _mm256_set1_epi16(1);
    let mut acc = _mm256_setzero_ps();
    let mut mins = 0f32;
    for b in 0..nb {
        let p = row.as_ptr().add(b * Q4_1_BYTES);
        // d and m, two f16s, converted together.
        let dm = _mm_cvtph_ps(_mm_cvtsi32_si128((p as *const i32).read_unaligned()));
        let (d, mn) = (_mm_cvtss_f32(dm), _mm_cvtss_f32(_mm_movehdup_ps(dm)));
        let q = _mm_loadu_si128(p.add(4) as *const __m128i);
        let lo = _mm_and_si128(q, low);
        let hi = _mm_and_si128(_mm_srli_epi16(q, 4), low);
        let qw = _mm256_set_m128i(hi, lo); // values 0..16 then 16..32, as the activations
        let qx = _mm256_loadu_si256(xq.as_ptr().add(b * QK) as *const __m256i);
        let pairs = _mm256_maddubs_epi16(qw, qx); // |15·127·2| fits in i16
        let sums = _mm256_cvtepi32_ps(_mm256_madd_epi16(pairs, ones));
        acc = _mm256_fmadd_ps(sums, _mm256_set1_ps(d * xd[b]), acc);
        mins += mn * xs[b];
    }
    hsum(acc) + mins
}

/// The sum of a vector's 8 lanes.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn hsum(acc: std::arch::x86_64::__m256) -> f32 {
    use std::arch::x86_64::*;
    let h = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
    let h = _mm_add_ps(h, _mm_movehl_ps(h, h));
    let h = _mm_add_ss(h, _mm_shuffle_ps(h, h, 1));
    _mm_cvtss_f32(h)
}

/// One Q8_0 weight row (per block: `d` as f16, then 32 signed bytes) times activation row `r`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_q8_0(row: &[u8], x: &Q8Rows, r: usize) -> f32 {
    use std::arch::x86_64::*;
    let nb = x.blocks;
    let (xq, xd) = (&x.q[r * nb * QK..], &x.d[r * nb..]);
    let ones = _mm256_set1_epi16(1);
    let mut acc = _mm256_setzero_ps();
    for (b, xd_b) in xd.iter().enumerate().take(nb) {
        let p = row.as_ptr().add(b * Q8_0_BYTES);
        let d = _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(
            (p as *const u16).read_unaligned() as i32,
        )));
        let qw = _mm256_loadu_si256(p.add(2) as *const __m256i);
        let qx = _mm256_loadu_si256(xq.as_ptr().add(b * QK) as *const __m256i);
        // maddubs multiplies unsigned by signed bytes: |w| times x with w's sign moved onto x.
        let pairs = _mm256_maddubs_epi16(_mm256_sign_epi8(qw, qw), _mm256_sign_epi8(qx, qw));
        let sums = _mm256_cvtepi32_ps(_mm256_madd_epi16(pairs, ones));
        acc = _mm256_fmadd_ps(sums, _mm256_set1_ps(d * xd_b), acc);
    }
    hsum(acc)
}

/// One Q5_0 weight row times activation row `r`: Σ d·dx·(Σ q·qx − 16·Σqx) over blocks.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_q5_0(row: &[u8], x: &Q8Rows, r: usize) -> f32 {
    use std::arch::x86_64::*;
    let nb = x.blocks;
    let (xq, xd, xsum) = (&x.q[r * nb * QK..], &x.d[r * nb..], &x.sum_q[r * nb..]);
    let low = _mm_set1_epi8(0x0F);
    let ones = _mm256_set1_epi16(1);
    // Byte j of a vector gets bit j of the 32 high bits: spread the u32's byte j/8 over bytes
    // 8·(j/8)..8·(j/8)+8, keep bit j%8 of each, and compare.
    let spread = _mm256_setr_epi8(
        0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3,
        3, 3,
    );
    let bit = _mm256_set1_epi64x(0x8040_2010_0804_0201u64 as i64);
    let sixteen = _mm256_set1_epi8(0x10);
    let mut acc = _mm256_setzero_ps();
    for b in 0..nb {
        let p = row.as_ptr().add(b * Q5_0_BYTES);
        let d = _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(
            (p as *const u16).read_unaligned() as i32,
        )));
        let qh = (p.add(2) as *const i32).read_unaligned();
        let q = _mm_loadu_si128(p.add(6) as *const __m128i);
        let lo = _mm_and_si128(q, low);
        let hi = _mm_and_si128(_mm_srli_epi16(q, 4), low);
        let nibbles = _mm256_set_m128i(hi, lo);
        let bytes = _mm256_shuffle_epi8(_mm256_set1_epi32(qh), spread);
        let set = _mm256_cmpeq_epi8(_mm256_and_si256(bytes, bit), bit);
        let qw = _mm256_or_si256(nibbles, _mm256_and_si256(set, sixteen)); // 0..32
        let qx = _mm256_loadu_si256(xq.as_ptr().add(b * QK) as *const __m256i);
        let pairs = _mm256_maddubs_epi16(qw, qx); // |31·127·2| fits in i16
        let sums = _mm256_madd_epi16(pairs, ones);
        // Σ (q − 16)·qx = Σ q·qx − 16·Σ qx, the second term added to one lane.
        let sums = _mm256_add_epi32(sums, _mm256_setr_epi32(-16 * xsum[b], 0, 0, 0, 0, 0, 0, 0));
        acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sums), _mm256_set1_ps(d * xd[b]), acc);
    }
    hsum(acc)
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn dot_q4_1(_row: &[u8], _x: &Q8Rows, _r: usize) -> f32 {
    unreachable!("available() is false off x86-64")
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn dot_q5_0(_row: &[u8], _x: &Q8Rows, _r: usize) -> f32 {
    unreachable!("available() is false off x86-64")
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn dot_q8_0(_row: &[u8], _x: &Q8Rows, _r: usize) -> f32 {
    unreachable!("available() is false off x86-64")
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::QMatMul;
    use candle_core::Module;

    /// Each kernel equals candle's product, which takes the same 8-bit activations (llama.cpp's
    /// Q8_1 for Q4_1, Q8_0 for Q5_0) and the same block arithmetic in scalar code, for one and
    /// for several rows, with a partial last task (150 rows).
    #[test]
    fn kernels_match_candles_scalar_products() {
        if !available() {
            return; // nothing to test: the caller keeps candle's product
        }
        let dev = Device::Cpu;
        for dtype in [GgmlDType::Q4_1, GgmlDType::Q5_0, GgmlDType::Q8_0] {
            let w = Tensor::randn(0f32, 1.0, (150, 96), &dev).unwrap();
            let reference = QMatMul::from_qtensor(QTensor::quantize(&w, dtype).unwrap()).unwrap();
            let q = QTensor::quantize(&w, dtype).unwrap();
            for m in [1, 3] {
                let x = Tensor::randn(0f32, 1.0, (m, 96), &dev).unwrap();
                let got = matmul(&q, &x)
                    .unwrap()
                    .expect("a kernel on x86-64 with AVX2");
                let want = reference.forward(&x).unwrap();
                let (got, want) = (
                    got.to_vec2::<f32>().unwrap(),
                    want.to_vec2::<f32>().unwrap(),
                );
                for (g, w) in got.iter().flatten().zip(want.iter().flatten()) {
                    assert!(
                        (g - w).abs() < 1e-4 * (1.0 + w.abs()),
                        "{dtype:?} m {m}: {g} vs {w}"
                    );
                }
            }
        }
    }

    /// A NaN activation reaches every output of its row, and only its row.
    #[test]
    fn a_nan_activation_is_not_rounded_away() {
        if !available() {
            return;
        }
        let dev = Device::Cpu;
        for dtype in [GgmlDType::Q4_1, GgmlDType::Q5_0, GgmlDType::Q8_0] {
            let w = Tensor::randn(0f32, 1.0, (70, 96), &dev).unwrap();
            let q = QTensor::quantize(&w, dtype).unwrap();
            let mut xs = vec![0.5f32; 2 * 96];
            xs[7] = f32::NAN;
            let x = Tensor::from_vec(xs, (2, 96), &dev).unwrap();
            let got = matmul(&q, &x).unwrap().unwrap().to_vec2::<f32>().unwrap();
            assert!(got[0].iter().all(|v| v.is_nan()), "{dtype:?}: NaN lost");
            assert!(
                got[1].iter().all(|v| v.is_finite()),
                "{dtype:?}: NaN leaked"
            );
        }
    }
}
