//! Quantized weight rows decoded to f32 with AVX-512, value for value as candle's `to_float`
//! (Q4_1: `q·d + m`; Q5_0 and Q8_0: `q·d`; each product and sum rounded on its own, as there),
//! so that a product over decoded rows equals the one over the dequantized matrix bit for bit.
//!
//! With f32 weights, a model loaded from GGUF keeps the file's blocks of these types beside
//! the dequantized matrices, and products of a few rows (decode steps, the answers' tokens)
//! decode tiles of them (`fblock::products_decoded`): a SmolLM2 decode step then reads
//! 94 MB of weights instead of 540 MB.
//!
//! A Q4_1 block (20 bytes): `d` and `m` (f16), then 16 bytes whose low nibbles are values
//! 0..16 and high nibbles values 16..32. A Q5_0 block (22 bytes): `d` (f16), 32 high bits
//! (u32, bit j for value j), then the low nibbles laid out as Q4_1's; value `(q − 16)·d`. A
//! Q8_0 block (34 bytes): `d` (f16), then 32 `i8`.
//!
//! Quantized prompts' tiles ([`super::qgemm`]) are decoded here too for these types; candle's
//! scalar decoders were 13% of Gemma 3's quantized prefill (63% of its weights are Q5_0).

use candle_core::quantized::GgmlDType;
#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// Values per block, for both types.
const QK: usize = 32;

/// Whether this CPU decodes rows of `dtype` here.
pub(in crate::model) fn decodes(dtype: GgmlDType) -> bool {
    matches!(dtype, GgmlDType::Q4_1 | GgmlDType::Q5_0 | GgmlDType::Q8_0) && super::cpu::avx512()
}

/// Bytes of one row of `k` values.
pub(in crate::model) fn row_bytes(dtype: GgmlDType, k: usize) -> usize {
    k / dtype.block_size() * dtype.type_size()
}

fn f16_at(b: &[u8], at: usize) -> f32 {
    half::f16::from_bits(u16::from_le_bytes([b[at], b[at + 1]])).to_f32()
}

/// Rows of `dtype` blocks in `src` (whole rows of `k` values; `k` a multiple of 32) into `out`,
/// `[rows, k]`. Callers check [`decodes`] first.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
pub(in crate::model) unsafe fn decode(dtype: GgmlDType, src: &[u8], out: &mut [f32]) {
    let size = dtype.type_size();
    assert!(decodes(dtype) && src.len() / size * QK == out.len() && src.len().is_multiple_of(size));
    for (b, o) in src.chunks_exact(size).zip(out.chunks_exact_mut(QK)) {
        let d = _mm512_set1_ps(f16_at(b, 0));
        let (lo, hi) = match dtype {
            GgmlDType::Q4_1 => {
                let m = _mm512_set1_ps(f16_at(b, 2));
                let (ql, qh) = nibbles(b.as_ptr().add(4));
                let value = |q| _mm512_add_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(q), d), m);
                (
                    value(_mm512_cvtepu8_epi32(ql)),
                    value(_mm512_cvtepu8_epi32(qh)),
                )
            }
            GgmlDType::Q5_0 => {
                let high = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
                let (ql, qh) = nibbles(b.as_ptr().add(6));
                // q | (its high bit)·16, minus 16, exactly as integers.
                let value = |q: __m128i, bits: u32| {
                    let q = _mm512_cvtepu8_epi32(q);
                    let q = _mm512_mask_add_epi32(q, bits as __mmask16, q, _mm512_set1_epi32(16));
                    let q = _mm512_sub_epi32(q, _mm512_set1_epi32(16));
                    _mm512_mul_ps(_mm512_cvtepi32_ps(q), d)
                };
                (value(ql, high & 0xFFFF), value(qh, high >> 16))
            }
            _ => {
                let q = |at: usize| _mm_loadu_si128(b.as_ptr().add(at).cast());
                let value = |q| _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(q)), d);
                (value(q(2)), value(q(18)))
            }
        };
        _mm512_storeu_ps(o.as_mut_ptr(), lo);
        _mm512_storeu_ps(o.as_mut_ptr().add(16), hi);
    }
}

/// The low and the high nibbles of the 16 bytes at `at` (values 0..16 and 16..32 of a Q4_1 or
/// Q5_0 block), each a byte.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn nibbles(at: *const u8) -> (__m128i, __m128i) {
    let q = _mm_loadu_si128(at.cast());
    let nibble = _mm_set1_epi8(0x0F);
    (
        _mm_and_si128(q, nibble),
        _mm_and_si128(_mm_srli_epi16::<4>(q), nibble),
    )
}

#[cfg(not(target_arch = "x86_64"))]
pub(in crate::model) unsafe fn decode(_: GgmlDType, _: &[u8], _: &mut [f32]) {
    unreachable!("qrows::decodes is false off x86-64")
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::QTensor;
    use candle_core::{Device, Tensor};

    /// Values spread over several magnitudes and both signs, with zeros and a block of one
    /// repeated value (whose Q4_1 scale is 0).
    fn values(n: usize) -> Vec<f32> {
        (0..n)
            .map(|i| match i / 32 {
                3 => 0.75,
                _ if i % 29 == 0 => 0.0,
                _ => ((i * 7919 % 1013) as f32 - 506.0) * 10f32.powi((i % 5) as i32 - 3),
            })
            .collect()
    }

    /// Decoded rows equal candle's dequantization bit for bit.
    #[test]
    fn decoded_rows_equal_candles_dequantization() {
        if !super::super::cpu::avx512() {
            eprintln!("no AVX-512 here: nothing to test");
            return;
        }
        let (n, k) = (6, 128);
        let t = Tensor::from_vec(values(n * k), (n, k), &Device::Cpu).unwrap();
        for dtype in [GgmlDType::Q4_1, GgmlDType::Q5_0, GgmlDType::Q8_0] {
            let q = QTensor::quantize(&t, dtype).unwrap();
            let want = q.dequantize(&Device::Cpu).unwrap().flatten_all().unwrap();
            let want = want.to_vec1::<f32>().unwrap();
            let mut got = vec![f32::NAN; n * k];
            // SAFETY: avx512f was checked above.
            unsafe { decode(dtype, &q.data().unwrap(), &mut got) };
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert_eq!(g.to_bits(), w.to_bits(), "{dtype:?} value {i}: {g} vs {w}");
            }
        }
    }
}
