//! Attention's softmax in one pass over the scores: scale, add the mask, subtract the row's
//! maximum, exponentiate, normalise. candle does this in three ops (a multiply, a broadcast
//! add and its softmax), each allocating a score-sized tensor, and its softmax calls the C
//! library's `expf` one value at a time; on NQ-Swap's long prompts these took about a fifth of
//! the time (`perf`). Here the rows are shared out over candle's worker pool and the
//! exponential is [`super::activation::exp`], which the compiler vectorizes.

use super::activation::{exp, fast};
use super::qgemm::SharedOut;
use crate::error::Result;
use candle_core::{Tensor, D};

/// `softmax(scores · scale + mask)` over the last axis. `scores` is `[b, kv_heads, g·n, kv]`
/// (the `g` query heads that share a KV head stacked along the query axis) and `mask`, when
/// given, `[b, 1, n, kv]`, added to every head's rows.
pub(super) fn scaled_masked_softmax(
    scores: &Tensor,
    scale: f64,
    mask: Option<&Tensor>,
) -> Result<Tensor> {
    if !fast(scores) {
        return candle_softmax(scores, scale, mask);
    }
    let (b, kvh, gn, kv) = scores.dims4()?;
    let mut x = scores.flatten_all()?.to_vec1::<f32>()?;
    let m = match mask {
        Some(m) => Some(m.contiguous()?.flatten_all()?.to_vec1::<f32>()?),
        None => None,
    };
    // Rows of the mask: n per batch row.
    let n = m.as_ref().map_or(1, |m| m.len() / (b * kv));
    let rows = b * kvh * gn;
    let out = SharedOut(x.as_mut_ptr());
    let scale = scale as f32;
    let per_task = 64;
    candle_core::utils::barrier_pool().execute_chunked(rows.div_ceil(per_task), |tasks| {
        for r in tasks.start * per_task..(tasks.end * per_task).min(rows) {
            // SAFETY: row r belongs to this task alone, and (r + 1)·kv <= rows·kv.
            let row = unsafe { std::slice::from_raw_parts_mut(out.at(r * kv), kv) };
            let mask_row = m.as_ref().map(|m| {
                let (bi, i) = (r / (kvh * gn), r % gn % n);
                &m[(bi * n + i) * kv..(bi * n + i + 1) * kv]
            });
            softmax_row(row, scale, mask_row);
        }
    });
    Ok(Tensor::from_vec(x, (b, kvh, gn, kv), scores.device())?)
}

/// One row in place: x·scale + mask, then its softmax.
fn softmax_row(row: &mut [f32], scale: f32, mask: Option<&[f32]>) {
    match mask {
        Some(m) => row.iter_mut().zip(m).for_each(|(x, m)| *x = *x * scale + m),
        None => row.iter_mut().for_each(|x| *x *= scale),
    }
    // Eight running maxima and sums, so that the loops vectorize.
    let mut lanes = [f32::NEG_INFINITY; 8];
    let mut chunks = row.chunks_exact(8);
    for c in &mut chunks {
        for (l, x) in lanes.iter_mut().zip(c) {
            *l = l.max(*x);
        }
    }
    let max = chunks
        .remainder()
        .iter()
        .chain(&lanes)
        .fold(f32::NEG_INFINITY, |a, x| a.max(*x));
    let mut sums = [0f32; 8];
    let mut chunks = row.chunks_exact_mut(8);
    for c in &mut chunks {
        for (s, x) in sums.iter_mut().zip(c.iter_mut()) {
            *x = exp(*x - max);
            *s += *x;
        }
    }
    let mut sum: f32 = sums.iter().sum();
    for x in chunks.into_remainder() {
        *x = exp(*x - max);
        sum += *x;
    }
    row.iter_mut().for_each(|x| *x /= sum);
}

/// The same with candle's ops (GPUs, other dtypes, and training, which needs the gradient).
fn candle_softmax(scores: &Tensor, scale: f64, mask: Option<&Tensor>) -> Result<Tensor> {
    let (b, kvh, gn, kv) = scores.dims4()?;
    let mut att = (scores * scale)?;
    if let Some(m) = mask {
        // mask [b, 1, n, kv] -> [b, 1, g, n, kv] over the stacked query heads.
        let n = m.dim(2)?;
        let att5 = att.reshape((b, kvh, gn / n, n, kv))?;
        att = att5
            .broadcast_add(&m.unsqueeze(2)?)?
            .reshape((b, kvh, gn, kv))?;
    }
    if !att.track_op() {
        return Ok(candle_nn::ops::softmax_last_dim(&att)?);
    }
    // Shift-invariant, so the maximum needs no gradient.
    let max = att.max_keepdim(D::Minus1)?.detach();
    let e = att.broadcast_sub(&max)?.exp()?;
    Ok(e.broadcast_div(&e.sum_keepdim(D::Minus1)?)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// The one-pass softmax equals candle's three ops to rounding, with and without a mask
    /// (a causal one with -inf, and padding), over stacked query heads.
    #[test]
    fn one_pass_softmax_equals_candles_ops() {
        let dev = Device::Cpu;
        let (b, kvh, g, n, kv) = (2, 3, 2, 5, 13);
        let s = Tensor::randn(0f32, 3.0, (b, kvh, g * n, kv), &dev).unwrap();
        let mut mv = vec![0f32; b * n * kv];
        for bi in 0..b {
            for i in 0..n {
                for j in 0..kv {
                    // Row bi is left-padded by bi positions; query i sits at kv - n + i.
                    if j > kv - n + i || j < bi {
                        mv[(bi * n + i) * kv + j] = f32::NEG_INFINITY;
                    }
                }
            }
        }
        let m = Tensor::from_vec(mv, (b, 1, n, kv), &dev).unwrap();
        for mask in [None, Some(&m)] {
            let fast = scaled_masked_softmax(&s, 0.125, mask).unwrap();
            let slow = candle_softmax(&s, 0.125, mask).unwrap();
            let (f, w) = (
                fast.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                slow.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            );
            let worst = f.iter().zip(&w).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            assert!(worst < 1e-6, "worst {worst}");
            // Masked keys get exactly 0.
            if mask.is_some() {
                assert_eq!(f[kv - n + 1], 0.0);
                assert_eq!(w[kv - n + 1], 0.0);
            }
        }
    }
}
