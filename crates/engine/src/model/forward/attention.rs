//! Scaled dot-product attention on the CPU in one call to candle's worker pool: each task
//! takes one (batch row, query head, block of queries), multiplies its queries with the keys
//! they may see of their KV head, scales, masks and normalises the scores in one pass over a
//! per-thread scratch, and writes their product with the values straight into the output's
//! `[b, n, heads·d_head]` layout.
//!
//! candle's way takes two batched products handed to rayon's pool (whose threads take turns
//! with candle's own on two cores), a multiply, a broadcast add and a softmax, each allocating
//! a score-sized tensor, and its softmax calls the C library's `expf` one value at a time; on
//! NQ-Swap's long prompts these took about a fifth of the time (`perf`). The exponential here
//! is [`super::activation::exp`], which the compiler vectorizes. Other devices, dtypes and
//! training (which needs the gradient) keep candle's ops.

use super::activation::{exp, fast};
use super::qgemm::{gemm_into, SharedOut};
use crate::error::Result;
use candle_core::{Device, Storage, Tensor, D};
use std::cell::RefCell;

thread_local! {
    static SCORES: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Queries per task: a block's scores (at most this many rows of keys) stay in the core's
/// cache, and a long prompt makes enough tasks to keep every thread busy to the end.
const QUERY_BLOCK: usize = 64;

/// Attention of queries `q [b, heads, n, d]` over keys and values
/// `[b, kv_heads, keys, d]` (rows of d contiguous, e.g. narrowed from the KV cache), with an
/// additive mask `[b, 1, n, keys]`: `[b, n, heads·d]`. None where this path does not apply.
///
/// With a mask, the queries are the last `n` positions of the keys and causal: a query sees
/// no key after its own position, so a block of queries reads only the keys up to its last
/// one (about half the work of a long prompt), and the mask hides the rest.
pub(in crate::model) fn attend_cpu(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    scale: f64,
    mask: Option<&Tensor>,
) -> Result<Option<Tensor>> {
    let (b, heads, n, d) = q.dims4()?;
    let (_, kvh, keys, _) = k.dims4()?;
    let unit = |t: &Tensor| t.layout().stride()[3] == 1;
    let mask_fits = mask.is_none_or(|m| m.dims() == [b, 1, n, keys] && fast(m));
    if !(fast(q) && fast(k) && fast(v) && unit(k) && unit(v) && keys >= n && mask_fits) {
        return Ok(None);
    }
    let q = &q.contiguous()?;
    let mask = mask.map(Tensor::contiguous).transpose()?;
    let (qs, ql) = q.storage_and_layout();
    let (ks, kl) = k.storage_and_layout();
    let (vs, vl) = v.storage_and_layout();
    let m = mask.as_ref().map(|m| m.storage_and_layout());
    let (Storage::Cpu(qc), Storage::Cpu(kc), Storage::Cpu(vc)) = (&*qs, &*ks, &*vs) else {
        return Ok(None);
    };
    let md = match &m {
        Some((ms, ml)) => match &**ms {
            Storage::Cpu(mc) => Some(&mc.as_slice::<f32>()?[ml.start_offset()..]),
            _ => return Ok(None),
        },
        None => None,
    };
    let (qd, kd, vd) = (
        qc.as_slice::<f32>()?,
        kc.as_slice::<f32>()?,
        vc.as_slice::<f32>()?,
    );
    let kt =
        (n > 1).then(|| transposed_keys(&kd[kl.start_offset()..], kl.stride(), (b, kvh, keys, d)));
    let mut y = vec![0f32; b * n * heads * d];
    let call = Call {
        data: [qd, kd, vd],
        keys_t: kt.as_deref(),
        mask: md,
        starts: (ql.start_offset(), kl.start_offset(), vl.start_offset()),
        strides: (kl.stride(), vl.stride()),
        dims: (heads, kvh, n, keys, d),
        out: SharedOut(y.as_mut_ptr()),
        scale: scale as f32,
    };
    let blocks = n.div_ceil(QUERY_BLOCK);
    candle_core::utils::barrier_pool().execute_chunked(b * heads * blocks, |tasks| {
        for t in tasks {
            let (bi, h, blk) = (t / (heads * blocks), t / blocks % heads, t % blocks);
            // SAFETY: task (bi, h, blk) writes only its own rows of y at head h, which
            // outlives the call.
            unsafe { call.task(bi, h, blk) };
        }
    });
    drop((qs, ks, vs, m));
    Ok(Some(Tensor::from_vec(y, (b, n, heads * d), &Device::Cpu)?))
}

/// What the tasks of one [`attend_cpu`] call read and where they write.
struct Call<'a> {
    /// q, k and v's values.
    data: [&'a [f32]; 3],
    /// The keys transposed, `[b, kv_heads, d, keys]`, when there are several queries.
    keys_t: Option<&'a [f32]>,
    /// The mask's values.
    mask: Option<&'a [f32]>,
    /// Where q, k and v start in them.
    starts: (usize, usize, usize),
    /// The strides of k and v.
    strides: (&'a [usize], &'a [usize]),
    /// (heads, kv heads, queries, keys, d_head).
    dims: (usize, usize, usize, usize, usize),
    out: SharedOut,
    scale: f32,
}

impl Call<'_> {
    /// The queries of block `blk` of head `h` of batch row `bi`.
    ///
    /// # Safety
    /// No other task may write the same (bi, h, blk), and `out` must hold `[b, n, heads·d]`.
    unsafe fn task(&self, bi: usize, h: usize, blk: usize) {
        let ([qd, kd, vd], md) = (self.data, self.mask);
        let (heads, kvh, n, keys, d) = self.dims;
        let ((q_start, k_start, v_start), (ks, vs)) = (self.starts, self.strides);
        let (r0, rows) = (blk * QUERY_BLOCK, QUERY_BLOCK.min(n - blk * QUERY_BLOCK));
        // Without a mask every query sees every key.
        let seen = if md.is_some() {
            keys - n + r0 + rows
        } else {
            keys
        };
        let kv_head = h / (heads / kvh);
        let mask_rows = md.map(|m| (&m[(bi * n + r0) * keys..(bi * n + r0 + rows) * keys], keys));
        // The offsets and strides stay inside q, k, v and the mask as their layouts describe.
        let head = Head {
            q: qd.as_ptr().add(q_start + ((bi * heads + h) * n + r0) * d),
            k: match self.keys_t {
                Some(kt) => {
                    Keys::Transposed(kt.as_ptr().add((bi * kvh + kv_head) * d * keys), keys)
                }
                None => Keys::Rows(
                    kd.as_ptr().add(k_start + bi * ks[0] + kv_head * ks[1]),
                    ks[2],
                ),
            },
            v: (
                vd.as_ptr().add(v_start + bi * vs[0] + kv_head * vs[1]),
                vs[2],
            ),
            out: (self.out.at(((bi * n + r0) * heads + h) * d), heads * d),
            dims: (rows, seen, d),
        };
        head.attend(mask_rows, self.scale);
    }
}

/// A head's keys: rows of `d` (pointer, row stride), or transposed, rows of keys (pointer,
/// row stride).
#[derive(Clone, Copy)]
enum Keys {
    Rows(*const f32, usize),
    Transposed(*const f32, usize),
}

/// `k [b, kv_heads, keys, d]` at `kd` with `strides` (its last 1) as `[b, kv_heads, d, keys]`,
/// one task per (batch row, KV head) on candle's pool. Where several queries multiply every
/// key, gemm reads the keys so laid out as they lie; given as rows of `d`, each task packed them
/// again (5% of a 2,200-token prefill).
fn transposed_keys(
    kd: &[f32],
    strides: &[usize],
    (b, kvh, keys, d): (usize, usize, usize, usize),
) -> Vec<f32> {
    let fill = |out: SharedOut| {
        candle_core::utils::barrier_pool().execute_chunked(b * kvh, |tasks| {
            for t in tasks {
                let src = &kd[(t / kvh) * strides[0] + (t % kvh) * strides[1]..];
                // SAFETY: task t writes only its own d × keys block.
                let dst = unsafe { std::slice::from_raw_parts_mut(out.at(t * d * keys), d * keys) };
                for key in 0..keys {
                    let row = &src[key * strides[2]..key * strides[2] + d];
                    for (c, v) in row.iter().enumerate() {
                        dst[c * keys + key] = *v;
                    }
                }
            }
        });
    };
    // SAFETY: the tasks write every (batch row, KV head) block whole.
    unsafe { super::qgemm::written(b * kvh * d * keys, fill) }
}

/// One (batch row, query head, block of queries) of [`attend_cpu`]: its `n` queries (rows of
/// `d`), the keys and values they see of their KV head (row pointer, row stride), and where
/// its output rows go (pointer, row stride).
struct Head {
    q: *const f32,
    k: Keys,
    v: (*const f32, usize),
    out: (*mut f32, usize),
    /// (queries n, keys, d_head).
    dims: (usize, usize, usize),
}

impl Head {
    /// softmax(q·kᵀ·scale + mask)·v into `out`, the scores in this thread's scratch.
    ///
    /// # Safety
    /// The pointers and strides must describe buffers as large as `dims` says, and no other
    /// thread may write this head's output rows.
    /// `mask` holds this head's query rows of the mask, `(rows, row stride)`.
    unsafe fn attend(&self, mask: Option<(&[f32], usize)>, scale: f32) {
        let (n, keys, d) = self.dims;
        SCORES.with(|s| {
            let mut s = s.borrow_mut();
            s.resize(n * keys, 0.0);
            let sc = s.as_mut_ptr();
            // kᵀ [d, keys] given by its (column, row) strides.
            let (k, kt_strides) = match self.k {
                Keys::Rows(k, stride) => (k, (stride, 1)),
                Keys::Transposed(k, stride) => (k, (1, stride)),
            };
            gemm_into(sc, (1, keys), self.q, (1, d), k, kt_strides, (n, keys, d));
            for i in 0..n {
                let row = std::slice::from_raw_parts_mut(sc.add(i * keys), keys);
                softmax_row(row, scale, mask.map(|(m, st)| &m[i * st..i * st + keys]));
            }
            // As outᵀ [d, n] = vᵀ [d, keys] · pᵀ [keys, n]: vᵀ is column-major as it lies and
            // pᵀ's columns are contiguous, so gemm copies neither. Multiplied the other way
            // round, it packed the n × keys probabilities first (8% of a 2,200-token prefill).
            let ((v, vs), (dst, ds)) = (self.v, self.out);
            gemm_into(dst, (ds, 1), v, (vs, 1), sc, (keys, 1), (d, n, keys));
        });
    }
}

/// Lanes of the softmax loops: 32 running maxima and sums, so that they vectorize with
/// several independent accumulators.
const LANES: usize = 32;

/// One row in place: x·scale + mask, then its softmax.
fn softmax_row(row: &mut [f32], scale: f32, mask: Option<&[f32]>) {
    match mask {
        Some(m) => row.iter_mut().zip(m).for_each(|(x, m)| *x = *x * scale + m),
        None => row.iter_mut().for_each(|x| *x *= scale),
    }
    // `>` rather than f32::max, whose NaN handling doubles the loop; a NaN score still makes
    // the row NaN through its exponential, for the caller's finiteness check.
    let mut lanes = [f32::NEG_INFINITY; LANES];
    let mut chunks = row.chunks_exact(LANES);
    for c in &mut chunks {
        for (l, x) in lanes.iter_mut().zip(c) {
            *l = if *x > *l { *x } else { *l };
        }
    }
    let max = chunks
        .remainder()
        .iter()
        .chain(&lanes)
        .fold(f32::NEG_INFINITY, |a, x| if *x > a { *x } else { a });
    let mut sums = [0f32; LANES];
    let mut chunks = row.chunks_exact_mut(LANES);
    for c in &mut chunks {
        exp_block(c, max, &mut sums);
    }
    // The last partial block goes through the same loop, padded with lanes that add nothing.
    let tail = chunks.into_remainder();
    if !tail.is_empty() {
        let mut block = [f32::NEG_INFINITY; LANES];
        block[..tail.len()].copy_from_slice(tail);
        let mut tail_sums = [0f32; LANES];
        exp_block(&mut block, max, &mut tail_sums);
        tail.copy_from_slice(&block[..tail.len()]);
        tail_sums[tail.len()..].fill(0.0);
        sums.iter_mut().zip(tail_sums).for_each(|(s, t)| *s += t);
    }
    let inv = 1.0 / sums.iter().sum::<f32>();
    row.iter_mut().for_each(|x| *x *= inv);
}

/// `x ← e^(x − max)` over one block of [`LANES`], adding each lane to its running sum.
#[inline(always)]
fn exp_block(block: &mut [f32], max: f32, sums: &mut [f32; LANES]) {
    for (s, x) in sums.iter_mut().zip(block.iter_mut()) {
        *x = exp(*x - max);
        *s += *x;
    }
}

/// `softmax(scores · scale + mask)` over the last axis with candle's ops, where [`attend_cpu`]
/// does not apply (GPUs, other dtypes, and training, which needs the gradient). `scores` is
/// `[b, kv_heads, g·n, kv]` (the `g` query heads that share a KV head stacked along the query
/// axis) and `mask`, when given, `[b, 1, n, kv]`, added to every head's rows.
pub(in crate::model) fn scaled_masked_softmax(
    scores: &Tensor,
    scale: f64,
    mask: Option<&Tensor>,
) -> Result<Tensor> {
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

    /// A causal mask `[b, 1, n, keys]` for the last `n` of `keys` positions, row `bi` left-padded
    /// by `bi` positions.
    fn causal_mask(b: usize, n: usize, keys: usize) -> Tensor {
        let mut mv = vec![0f32; b * n * keys];
        for bi in 0..b {
            for i in 0..n {
                for j in 0..keys {
                    if j > keys - n + i || j < bi {
                        mv[(bi * n + i) * keys + j] = f32::NEG_INFINITY;
                    }
                }
            }
        }
        Tensor::from_vec(mv, (b, 1, n, keys), &Device::Cpu).unwrap()
    }

    /// The one-pass softmax of each row equals candle's three ops to rounding, with and without
    /// a mask (a causal one with -inf, and padding), over stacked query heads.
    #[test]
    fn one_pass_softmax_equals_candles_ops() {
        let dev = Device::Cpu;
        let (b, kvh, g, n, kv) = (2, 3, 2, 5, 13);
        let s = Tensor::randn(0f32, 3.0, (b, kvh, g * n, kv), &dev).unwrap();
        let m = causal_mask(b, n, kv);
        let mv = m.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        for mask in [None, Some(&m)] {
            let mut f = s.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            for (r, row) in f.chunks_exact_mut(kv).enumerate() {
                // Row r is (batch bi, KV head, stacked query g·n + i).
                let (bi, i) = (r / (kvh * g * n), r % (g * n) % n);
                let mrow = &mv[(bi * n + i) * kv..(bi * n + i + 1) * kv];
                softmax_row(row, 0.125, mask.map(|_| mrow));
            }
            let slow = scaled_masked_softmax(&s, 0.125, mask).unwrap();
            let w = slow.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let worst = f
                .iter()
                .zip(&w)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(worst < 1e-6, "worst {worst}");
            // Masked keys get exactly 0.
            if mask.is_some() {
                assert_eq!(f[kv - n + 1], 0.0);
                assert_eq!(w[kv - n + 1], 0.0);
            }
        }
    }

    /// The one-call attention equals candle's ops to rounding: grouped-query heads, keys and
    /// values narrowed from a longer cache (strided), a causal and padding mask, one query
    /// without a mask, and 150 queries in three blocks that each read only their keys.
    #[test]
    fn one_call_attention_equals_candles_ops() {
        let dev = Device::Cpu;
        let (b, heads, kvh, d, full) = (2, 6, 2, 8, 180);
        let cache_k = Tensor::randn(0f32, 1.0, (b, kvh, full, d), &dev).unwrap();
        let cache_v = Tensor::randn(0f32, 1.0, (b, kvh, full, d), &dev).unwrap();
        for (n, keys, masked) in [(5, 13, true), (1, 17, false), (150, 170, true)] {
            let q = Tensor::randn(0f32, 1.0, (b, heads, n, d), &dev).unwrap();
            let k = cache_k.narrow(2, 0, keys).unwrap();
            let v = cache_v.narrow(2, 0, keys).unwrap();
            assert!(!k.is_contiguous());
            let m = causal_mask(b, n, keys);
            let mask = masked.then_some(&m);
            let got = attend_cpu(&q, &k, &v, 0.3, mask)
                .unwrap()
                .expect("f32 on the CPU");
            // candle: stack the g query heads of each KV head, two products, softmax.
            let g = heads / kvh;
            let qs = q.reshape((b, kvh, g * n, d)).unwrap();
            let scores = qs.matmul(&k.t().unwrap()).unwrap();
            let att = scaled_masked_softmax(&scores, 0.3, mask).unwrap();
            let want = att
                .matmul(&v)
                .unwrap()
                .reshape((b, heads, n, d))
                .unwrap()
                .transpose(1, 2)
                .unwrap()
                .reshape((b, n, heads * d))
                .unwrap();
            let (got, want) = (
                got.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                want.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            );
            assert_eq!(got.len(), want.len());
            let worst = got
                .iter()
                .zip(&want)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(worst < 1e-5, "n {n}: worst {worst}");
        }
    }
}
