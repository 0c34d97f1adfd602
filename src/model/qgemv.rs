//! Decode with Q4_1 weights: a SIMD product of Q4_1 weight rows with a few rows of activations
//! quantized to 8 bits per 32-value block, as llama.cpp's `ggml_vec_dot_q4_1_q8_1` does.
//!
//! candle 0.11 has no SIMD kernel for Q4_1 on x86 (its `vec_dot` falls back to scalar code),
//! and decoding the default model spent 58% of its time there (`perf`). This kernel needs AVX2
//! and FMA, detected at run time; without them the caller keeps candle's product.
//!
//! A Q4_1 block (GGUF layout, 20 bytes): scale `d` (f16), minimum `m` (f16), then 16 bytes
//! whose low nibbles are values 0..16 and high nibbles values 16..32; value = d·q + m.

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use half::f16;

const QK: usize = 32;
const BLOCK_BYTES: usize = 20;
/// Weight rows per parallel task.
const ROWS_PER_TASK: usize = 64;

/// Activations quantized per 32-value block: `x ≈ d·q`, with each block's sum `Σx ≈ s`.
struct Q8Rows {
    q: Vec<i8>,
    d: Vec<f32>,
    s: Vec<f32>,
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
        // As llama.cpp's quantize_row_q8_1: the scale and the sum are kept as f16.
        for (b, chunk) in xs.chunks_exact(QK).enumerate() {
            let amax = chunk.iter().fold(0f32, |a, v| a.max(v.abs()));
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
        }
        Q8Rows { q, d, s, blocks }
    }
}

/// Whether this machine has the instructions the kernel needs.
fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `x [m, k] · wᵀ` for a Q4_1 `w [n, k]` on the CPU, as `[m, n]`; None when this kernel does
/// not apply (another type or device, no AVX2), and the caller uses candle's product.
pub(super) fn matmul(w: &QTensor, x: &Tensor) -> candle_core::Result<Option<Tensor>> {
    let (n, k) = w.shape().dims2()?;
    let (m, xk) = x.dims2()?;
    if w.dtype() != GgmlDType::Q4_1 || !matches!(w.device(), Device::Cpu) || xk != k {
        return Ok(None);
    }
    if !k.is_multiple_of(QK) || !available() {
        return Ok(None);
    }
    let data = w.data()?;
    let row_bytes = k / QK * BLOCK_BYTES;
    if data.len() != row_bytes * n {
        return Ok(None);
    }
    let xs = x.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
    let xq = Q8Rows::new(&xs, m, k);
    // [n, m]: each task owns whole weight rows of it. The tasks run on candle's own worker
    // pool, the one its quantized products use, so no second pool wakes up between ops.
    let mut cols = vec![0f32; n * m];
    let out = super::qgemm::SharedOut(cols.as_mut_ptr());
    candle_core::utils::barrier_pool().execute_chunked(n.div_ceil(ROWS_PER_TASK), |tasks| {
        for j in tasks.start * ROWS_PER_TASK..(tasks.end * ROWS_PER_TASK).min(n) {
            let row = &data[j * row_bytes..(j + 1) * row_bytes];
            for r in 0..m {
                // SAFETY: `available()` checked AVX2 and FMA; the row holds whole blocks; each
                // j belongs to one task, so its m outputs are written by that task alone.
                unsafe { *out.at(j * m + r) = dot(row, &xq, r) };
            }
        }
    });
    let y = if m == 1 {
        cols
    } else {
        let mut y = vec![0f32; m * n];
        for (j, c) in cols.chunks_exact(m).enumerate() {
            for (r, v) in c.iter().enumerate() {
                y[r * n + j] = *v;
            }
        }
        y
    };
    Ok(Some(Tensor::from_vec(y, (m, n), &Device::Cpu)?))
}

/// One Q4_1 weight row times activation row `r`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot(row: &[u8], x: &Q8Rows, r: usize) -> f32 {
    use std::arch::x86_64::*;
    let nb = x.blocks;
    let (xq, xd, xs) = (&x.q[r * nb * QK..], &x.d[r * nb..], &x.s[r * nb..]);
    let low = _mm_set1_epi8(0x0F);
    let ones = _mm256_set1_epi16(1);
    let mut acc = _mm256_setzero_ps();
    let mut mins = 0f32;
    for b in 0..nb {
        let p = row.as_ptr().add(b * BLOCK_BYTES);
        let d = f16::from_bits(u16::from_le_bytes([*p, *p.add(1)])).to_f32();
        let mn = f16::from_bits(u16::from_le_bytes([*p.add(2), *p.add(3)])).to_f32();
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
    let h = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
    let h = _mm_add_ps(h, _mm_movehl_ps(h, h));
    let h = _mm_add_ss(h, _mm_shuffle_ps(h, h, 1));
    _mm_cvtss_f32(h) + mins
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn dot(_row: &[u8], _x: &Q8Rows, _r: usize) -> f32 {
    unreachable!("available() is false off x86-64")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kernel equals x̂ · dequantize(w)ᵀ, where x̂ is the activations after their 8-bit
    /// rounding, for one and for several rows, with a partial last task (150 rows).
    #[test]
    fn q4_1_product_matches_the_dequantized_product() {
        if !available() {
            return; // nothing to test: the caller keeps candle's product
        }
        let dev = Device::Cpu;
        let w = Tensor::randn(0f32, 1.0, (150, 96), &dev).unwrap();
        let q = QTensor::quantize(&w, GgmlDType::Q4_1).unwrap();
        let wd = q.dequantize(&dev).unwrap();
        for m in [1, 3] {
            let x = Tensor::randn(0f32, 1.0, (m, 96), &dev).unwrap();
            let got = matmul(&q, &x).unwrap().expect("Q4_1 on x86-64 with AVX2");
            let xq = Q8Rows::new(&x.flatten_all().unwrap().to_vec1::<f32>().unwrap(), m, 96);
            let got = got.to_vec2::<f32>().unwrap();
            let wd = wd.to_vec2::<f32>().unwrap();
            for (j, wrow) in wd.iter().enumerate() {
                for (r, got_r) in got.iter().enumerate() {
                    // x̂ · w with x̂ = d·q, and each block's minimum times the block sum as
                    // the kernel keeps it (f16, as llama.cpp) rather than Σ d·q. A block's
                    // minimum is its smallest dequantized value (that value has q = 0).
                    let mut want = 0f64;
                    for b in 0..3 {
                        let (xd, xs) = (xq.d[r * 3 + b], xq.s[r * 3 + b]);
                        let block = &wrow[b * QK..(b + 1) * QK];
                        let q = &xq.q[(r * 3 + b) * QK..(r * 3 + b + 1) * QK];
                        let dot: f64 = block
                            .iter()
                            .zip(q)
                            .map(|(w, q)| (*w * xd * *q as f32) as f64)
                            .sum();
                        let sum_q: i32 = q.iter().map(|q| *q as i32).sum();
                        let min = block.iter().cloned().fold(f32::INFINITY, f32::min);
                        want += dot + (min * (xs - xd * sum_q as f32)) as f64;
                    }
                    let g = got_r[j] as f64;
                    assert!(
                        (g - want).abs() < 1e-4 * (1.0 + want.abs()),
                        "m {m}: {g} vs {want}"
                    );
                }
            }
        }
    }
}
