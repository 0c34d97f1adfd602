//! RMSNorm over the last axis: `x / √(mean(x²) + eps) · w`.
//!
//! candle's CPU kernel hands a prompt's rows to rayon, whose two threads then take turns on two
//! cores with candle's own worker pool (which spins a while after each of its calls). Here the
//! rows go to candle's pool, with candle's arithmetic: the squares summed in order, then
//! `x / m · w` for each value, so the output is the same bit for bit.

use super::activation::fast;
use crate::error::Result;
use candle_core::{Storage, Tensor};

/// Rows per task on the pool.
const ROWS_PER_TASK: usize = 8;

/// RMSNorm over the last axis, times `w`: on the pool for f32 on the CPU, else candle's (its
/// differentiable form for activations that carry a gradient).
pub(in crate::model) fn rms_norm(x: &Tensor, w: &Tensor, eps: f64) -> Result<Tensor> {
    if x.track_op() {
        return Ok(candle_nn::ops::rms_norm_slow(x, w, eps as f32)?);
    }
    if let Some(y) = pooled(x, w, eps as f32)? {
        return Ok(y);
    }
    Ok(candle_nn::ops::rms_norm(x, w, eps as f32)?)
}

/// [`rms_norm`] on candle's pool; None where it does not apply (not f32 on the CPU, a weight
/// that does not match the last axis).
fn pooled(x: &Tensor, w: &Tensor, eps: f32) -> Result<Option<Tensor>> {
    let d = w.elem_count();
    if !fast(x) || !fast(w) || x.dims().last() != Some(&d) || w.rank() != 1 {
        return Ok(None);
    }
    let x = x.contiguous()?;
    let rows = x.elem_count() / d.max(1);
    let (xs, xl) = x.storage_and_layout();
    let (ws, wl) = w.storage_and_layout();
    let (Storage::Cpu(xc), Storage::Cpu(wc)) = (&*xs, &*ws) else {
        return Ok(None);
    };
    let src = &xc.as_slice::<f32>()?[xl.start_offset()..][..rows * d];
    let alpha = &wc.as_slice::<f32>()?[wl.start_offset()..][..d];
    let row = |r: usize, dst: &mut [f32]| {
        let src = &src[r * d..(r + 1) * d];
        let sum2 = src.iter().map(|v| v * v).sum::<f32>();
        let m = (sum2 / d as f32 + eps).sqrt();
        for ((o, s), a) in dst.iter_mut().zip(src).zip(alpha) {
            *o = *s / m * *a;
        }
    };
    let y = super::qgemm::rows_on_pool(rows, d, ROWS_PER_TASK, row);
    drop((xs, ws));
    Ok(Some(Tensor::from_vec(y, x.dims(), x.device())?))
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor};

    /// The pooled norm equals candle's bit for bit, over a row count that leaves a partial
    /// last task (19 rows) and a row length that is not a multiple of 16 (40).
    #[test]
    fn pooled_norm_equals_candles() {
        let (rows, d) = (19, 40);
        let val = |i: usize| ((i * 7919 % 307) as f32 - 150.0) / 17.0;
        let x = Tensor::from_vec((0..rows * d).map(val).collect(), (1, rows, d), &Device::Cpu);
        let w = Tensor::from_vec((0..d).map(|i| val(i + 5)).collect(), d, &Device::Cpu);
        let (x, w) = (x.unwrap(), w.unwrap());
        let got = super::pooled(&x, &w, 1e-5)
            .unwrap()
            .expect("f32 on the CPU");
        let want = candle_nn::ops::rms_norm(&x, &w, 1e-5).unwrap();
        let bits = |t: &Tensor| -> Vec<u32> {
            let v = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            v.iter().map(|x| x.to_bits()).collect()
        };
        assert_eq!(got.dims(), want.dims());
        assert_eq!(bits(&got), bits(&want));
    }
}
