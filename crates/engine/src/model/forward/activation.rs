//! The MLP activations: GELU with the tanh approximation (transformers' `gelu_pytorch_tanh`,
//! Gemma's), 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))), and SiLU, x / (1 + e^{−x}) (Llama's).
//!
//! candle computes them with the C library's `tanhf` and `expf`, one value at a time; in Gemma
//! 3's prefill that took a tenth of the time (`perf`). Here both come from an exponential
//! written as plain arithmetic (a degree-6 polynomial after range reduction), which the
//! compiler vectorizes.

use crate::error::Result;
use candle_core::{DType, Device, Tensor};

/// GELU-tanh of `x`: on the CPU for f32 values without a gradient, the fast form; elsewhere
/// candle's.
pub(in crate::model) fn gelu_tanh(x: &Tensor) -> Result<Tensor> {
    match fast(x) {
        true => map(x, gelu),
        false => Ok(x.gelu()?),
    }
}

/// SiLU of `x`, likewise.
pub(in crate::model) fn silu(x: &Tensor) -> Result<Tensor> {
    match fast(x) {
        true => map(x, |v| v / (1.0 + exp(-v))),
        false => Ok(candle_nn::ops::silu(x)?),
    }
}

/// The gated MLP's activation `f(gate) · up` from `gu = [.., gate | up]` (each `d_mlp` wide),
/// `[.., d_mlp]`, with `f` GELU-tanh (`gelu`) or SiLU: one pass over the rows on candle's pool,
/// with the same arithmetic as [`gelu_tanh`] or [`silu`] then a product. Separately, the
/// activation of the strided `gate` half copied it twice and ran on one thread while the
/// other waited. None where [`fast`] is false.
pub(in crate::model) fn gated(
    gu: &Tensor,
    d_mlp: usize,
    gelu_gate: bool,
) -> Result<Option<Tensor>> {
    if !fast(gu) || !gu.is_contiguous() {
        return Ok(None);
    }
    let mut dims = gu.dims().to_vec();
    let rows = gu.elem_count() / (2 * d_mlp);
    let (storage, layout) = gu.storage_and_layout();
    let candle_core::Storage::Cpu(cpu) = &*storage else {
        return Ok(None);
    };
    let src = &cpu.as_slice::<f32>()?[layout.start_offset()..][..rows * 2 * d_mlp];
    let row = |r: usize, out: &mut [f32]| {
        let (g, u) = src[r * 2 * d_mlp..(r + 1) * 2 * d_mlp].split_at(d_mlp);
        match gelu_gate {
            true => out
                .iter_mut()
                .zip(g.iter().zip(u))
                .for_each(|(o, (g, u))| *o = gelu(*g) * u),
            false => out
                .iter_mut()
                .zip(g.iter().zip(u))
                .for_each(|(o, (g, u))| *o = g / (1.0 + exp(-g)) * u),
        }
    };
    let act = super::qgemm::rows_on_pool(rows, d_mlp, 16, row); // 16 rows to a task
    drop(storage);
    *dims.last_mut().expect("gu has a last axis") = d_mlp;
    Ok(Some(Tensor::from_vec(act, dims, gu.device())?))
}

pub(in crate::model) fn fast(x: &Tensor) -> bool {
    matches!(x.device(), Device::Cpu) && x.dtype() == DType::F32 && !x.track_op()
}

fn map(x: &Tensor, f: impl Fn(f32) -> f32) -> Result<Tensor> {
    let mut v = x.flatten_all()?.to_vec1::<f32>()?;
    for a in v.iter_mut() {
        *a = f(*a);
    }
    Ok(Tensor::from_vec(v, x.shape(), x.device())?)
}

#[inline(always)]
fn gelu(x: f32) -> f32 {
    const K: f32 = 0.797_884_6; // √(2/π)
    let y = K * (x + 0.044_715 * x * x * x);
    0.5 * x * (1.0 + tanh(y))
}

/// tanh(y) = 1 − 2/(e^{2y} + 1): exact at ±∞ (e^{2y} overflows to ∞ or underflows to 0).
#[inline(always)]
fn tanh(y: f32) -> f32 {
    1.0 - 2.0 / (exp(2.0 * y) + 1.0)
}

/// e^x to about 2 ulp: x = n·ln 2 + r with |r| ≤ ln2/2, e^r by its Taylor polynomial to r⁶,
/// scaled by 2ⁿ through the exponent bits. Saturates to 0 and ∞ outside ±88.
#[inline(always)]
pub(in crate::model) fn exp(x: f32) -> f32 {
    let x = x.clamp(-88.0, 88.0);
    // Ties to even: one rounding instruction on vectors (any nearest integer reduces as well).
    let n = (x * std::f32::consts::LOG2_E).round_ties_even();
    // ln 2 in two parts, so that n·ln2 is subtracted without rounding error.
    let r = x - n * 0.693_145_75 - n * 1.428_606_8e-6;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    // 2ⁿ from its exponent bits. n + 127 is a whole number in 1..=254, and adding 2²³ puts it
    // in the low mantissa bits, to be shifted into the exponent: a float-to-integer step
    // without `as`, whose saturating semantics kept the loops that call this from vectorizing.
    let scale = f32::from_bits((n + (127.0 + 8_388_608.0)).to_bits() << 23);
    p * scale
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fast GELU agrees with the formula in f64 to 1e-6 (absolute, and relative where the
    /// value is large) across the range activations take, and with candle's at the extremes.
    #[test]
    fn fast_gelu_matches_the_exact_formula() {
        let exact = |x: f64| {
            0.5 * x
                * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x * x * x)).tanh())
        };
        let mut worst = 0f64;
        for i in -200_000..=200_000 {
            let x = i as f32 * 1e-4; // -20 .. 20
            let e = exact(x as f64);
            let err = (gelu(x) as f64 - e).abs() / (1.0 + e.abs());
            worst = worst.max(err);
        }
        assert!(worst < 1e-6, "worst error {worst}");
        for x in [-1e4f32, -90.0, 90.0, 1e4] {
            assert_eq!(gelu(x), if x > 0.0 { x } else { 0.0 }, "x = {x}");
        }
        assert!((exp(1.0) - std::f32::consts::E).abs() < 1e-6);
        let silu_exact = |x: f64| x / (1.0 + (-x).exp());
        let t = Tensor::new(&[-100f32, -3.0, -0.5, 0.0, 0.25, 2.0, 30.0], &Device::Cpu).unwrap();
        let got = silu(&t).unwrap().to_vec1::<f32>().unwrap();
        for (x, g) in t.to_vec1::<f32>().unwrap().iter().zip(got) {
            let e = silu_exact(*x as f64);
            assert!(
                (g as f64 - e).abs() <= 1e-6 * (1.0 + e.abs()),
                "silu({x}) = {g}, not {e}"
            );
        }
    }

    /// The fused gated activation equals the activation of the gate half times the up half,
    /// bit for bit, for both gates, over rows that leave a partial last task (37 rows).
    #[test]
    fn gated_equals_the_activation_times_up() {
        let (rows, d) = (37, 24);
        let vals: Vec<f32> = (0..rows * 2 * d)
            .map(|i| ((i * 7919 % 401) as f32 - 200.0) / 23.0)
            .collect();
        let gu = Tensor::from_vec(vals, (1, rows, 2 * d), &Device::Cpu).unwrap();
        for gelu_gate in [false, true] {
            let got = gated(&gu, d, gelu_gate).unwrap().expect("f32 on the CPU");
            let (g, u) = (gu.narrow(2, 0, d).unwrap(), gu.narrow(2, d, d).unwrap());
            let g = match gelu_gate {
                true => gelu_tanh(&g).unwrap(),
                false => silu(&g).unwrap(),
            };
            let want = (g * u).unwrap();
            let bits = |t: &Tensor| -> Vec<u32> {
                let v = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                v.iter().map(|x| x.to_bits()).collect()
            };
            assert_eq!(got.dims(), want.dims());
            assert_eq!(bits(&got), bits(&want), "gelu gate: {gelu_gate}");
        }
    }

    /// The exponential is within about 2 ulp of e^x (relative error 2.5·2⁻²³ against f64)
    /// over the range the softmax and the activations reach, and saturates to 0 far below it.
    #[test]
    fn exponential_is_within_two_ulp() {
        let mut worst = 0f64;
        for i in -870_000..=870_000 {
            let x = i as f32 * 1e-4;
            let (got, want) = (exp(x) as f64, (x as f64).exp());
            worst = worst.max((got - want).abs() / want / f32::EPSILON as f64);
        }
        // 2.12 measured.
        assert!(worst <= 2.5, "{worst} eps");
        assert_eq!(exp(-200.0), 0.0);
    }
}
