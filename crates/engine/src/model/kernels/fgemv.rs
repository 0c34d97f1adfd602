//! Decode with f32 weights: a few rows of activations times an f32 weight matrix, without
//! packing. gemm copies (packs) the whole weight matrix into its own layout on every call,
//! which for a decode step of a few rows costs as much as the product; here each weight row
//! is read once, where it lies, and dotted with every activation row.

use candle_core::{Device, Tensor};

/// Up to this many activation rows take the portable path.
const MAX_ROWS: usize = 16;
/// Up to this many take the AVX-512 tiles ([`super::fblock`]), which measured faster than
/// gemm's packed product up to 128 rows (a decode step of 128 rows: 131 against 160 ms).
const MAX_ROWS_BLOCKS: usize = 128;

/// Up to how many activation rows [`matmul`] multiplies (more go to [`tiled`]).
pub(in crate::model) fn max_rows() -> usize {
    if super::cpu::avx512() {
        MAX_ROWS_BLOCKS
    } else {
        MAX_ROWS
    }
}
/// Lanes of the dot product: independent sums the compiler keeps in vector registers.
const LANES: usize = 16;

/// `x [m, k] · wᵀ` for an f32 `w [n, k]` on the CPU, as `[m, n]`; None when this path does not
/// apply (another device or dtype, too many rows).
pub(in crate::model) fn matmul(w: &Tensor, x: &Tensor) -> candle_core::Result<Option<Tensor>> {
    if x.dim(0)? > max_rows() {
        return Ok(None);
    }
    with_f32(w, x, |ws, xs, (m, n, k)| {
        if super::cpu::avx512() {
            return super::fblock::products(ws, xs, (m, n, k));
        }
        super::qgemm::row_products(n, m, |j, r| {
            dot(&ws[j * k..(j + 1) * k], &xs[r * k..(r + 1) * k])
        })
    })
}

/// [`matmul`] reading the weights from `blocks`, the GGUF blocks `w` was dequantized from (of a
/// type [`super::qrows::decodes`]), instead of from `w`: the same output bit for bit, from a
/// quarter of the bytes. None where this path does not apply.
pub(in crate::model) fn matmul_decoded(
    w: &Tensor,
    blocks: &candle_core::quantized::QTensor,
    x: &Tensor,
) -> candle_core::Result<Option<Tensor>> {
    let fits = blocks.shape().dims() == w.dims() && super::qrows::decodes(blocks.dtype());
    if x.dim(0)? > max_rows() || !fits || !blocks.device().is_cpu() {
        return Ok(None);
    }
    let data = blocks.data()?;
    with_f32(w, x, |_, xs, dims| {
        super::fblock::products_decoded(&data, blocks.dtype(), xs, dims)
    })
}

/// `x [m, k] · wᵀ` for an f32 `w [n, k]` and a prompt's many rows, on candle's worker pool
/// (candle's own product hands gemm to rayon's pool, whose threads take turns with candle's on
/// two cores). Each thread takes an equal share of the prompt rows and multiplies it with the
/// whole matrix in one gemm, so it packs its activations once. Before, each task took a tile of
/// 64 weight rows and packed the activations again (7% of a long prompt's prefill), and a
/// matrix of 576 rows split 5 tiles to 4 between two threads. Prompts too short to share out
/// are still split by weight rows. None when this path does not apply.
pub(in crate::model) fn tiled(w: &Tensor, x: &Tensor) -> candle_core::Result<Option<Tensor>> {
    const TILE_ROWS: usize = 64;
    with_f32(w, x, |ws, xs, (m, n, k)| {
        let pool = candle_core::utils::barrier_pool();
        let threads = pool.n_workers() + 1;
        let fill = |out: super::qgemm::SharedOut| {
            if m >= threads * TILE_ROWS {
                let per = m.div_ceil(threads);
                pool.execute_chunked(threads, |shares| {
                    for s in shares {
                        let (r0, rows) = (s * per, per.min(m.saturating_sub(s * per)));
                        if rows == 0 {
                            continue;
                        }
                        let part = &xs[r0 * k..(r0 + rows) * k];
                        // SAFETY: each share writes only its own rows r0..r0 + rows of y.
                        unsafe {
                            super::qgemm::tile_product(part, ws, out.at(r0 * n), rows, n, k, n)
                        };
                    }
                });
                return;
            }
            pool.execute_chunked(n.div_ceil(TILE_ROWS), |tiles| {
                for t in tiles {
                    let (r0, rows) = (t * TILE_ROWS, TILE_ROWS.min(n - t * TILE_ROWS));
                    let tile = &ws[r0 * k..(r0 + rows) * k];
                    // SAFETY: each tile writes only its own columns r0..r0 + rows of y, which
                    // outlives the pool's call; the strides describe y's [m, n] row-major layout.
                    unsafe { super::qgemm::tile_product(xs, tile, out.at(r0), m, rows, k, n) };
                }
            });
        };
        // SAFETY: the shares cover every row of y, the tiles every column.
        unsafe { super::qgemm::written(m * n, fill) }
    })
}

/// `product(w's values, x's values, (m, n, k))` as an `[m, n]` tensor, for an f32 `w [n, k]`
/// and `x [m, k]` on the CPU; None when they are not that.
fn with_f32(
    w: &Tensor,
    x: &Tensor,
    product: impl FnOnce(&[f32], &[f32], (usize, usize, usize)) -> Vec<f32>,
) -> candle_core::Result<Option<Tensor>> {
    let (n, k) = w.dims2()?;
    let (m, xk) = x.dims2()?;
    let cpu = matches!(w.device(), Device::Cpu) && matches!(x.device(), Device::Cpu);
    let f32s = w.dtype() == candle_core::DType::F32 && x.dtype() == candle_core::DType::F32;
    if !cpu || !f32s || xk != k || !w.is_contiguous() {
        return Ok(None);
    }
    // Both read where they lie (a prompt's activations are megabytes; copying them out was
    // part of the 3% of prefill in copies).
    let x = x.contiguous()?;
    let (xstore, xlayout) = x.storage_and_layout();
    let (wstore, wlayout) = w.storage_and_layout();
    let (candle_core::Storage::Cpu(xcpu), candle_core::Storage::Cpu(wcpu)) = (&*xstore, &*wstore)
    else {
        return Ok(None);
    };
    let ws = &wcpu.as_slice::<f32>()?[wlayout.start_offset()..][..n * k];
    let xs = &xcpu.as_slice::<f32>()?[xlayout.start_offset()..][..m * k];
    let y = product(ws, xs, (m, n, k));
    drop((xstore, wstore));
    Ok(Some(Tensor::from_vec(y, (m, n), &Device::Cpu)?))
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..LANES {
            acc[i] = x[i].mul_add(y[i], acc[i]);
        }
    }
    let mut s: f32 = acc.iter().sum();
    for (x, y) in ra.iter().zip(rb) {
        s = x.mul_add(*y, s);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `product(w, x)` for a random `w [150, 100]` (a width that leaves a remainder after the
    /// 16 lanes, a row count split unevenly) and `x [m, 100]` equals candle's (gemm's) product
    /// to rounding.
    fn assert_equals_candles(m: usize, product: fn(&Tensor, &Tensor) -> Option<Tensor>) {
        let dev = Device::Cpu;
        let w = Tensor::randn(0f32, 1.0, (150, 100), &dev).unwrap();
        let x = Tensor::randn(0f32, 1.0, (m, 100), &dev).unwrap();
        let got = product(&w, &x).expect("f32 on the CPU");
        let want = x.matmul(&w.t().unwrap()).unwrap();
        let (got, want) = (
            got.to_vec2::<f32>().unwrap(),
            want.to_vec2::<f32>().unwrap(),
        );
        assert_eq!((got.len(), got[0].len()), (m, 150));
        for (g, w) in got.iter().flatten().zip(want.iter().flatten()) {
            assert!((g - w).abs() < 1e-5 * (1.0 + w.abs()), "m {m}: {g} vs {w}");
        }
    }

    /// The decode product, for 1 to 16 rows; more rows than it takes are refused.
    #[test]
    fn product_equals_candles_matmul() {
        for m in [1, 3, 16] {
            assert_equals_candles(m, |w, x| matmul(w, x).unwrap());
        }
        let dev = Device::Cpu;
        let w = Tensor::randn(0f32, 1.0, (150, 100), &dev).unwrap();
        let x = Tensor::randn(0f32, 1.0, (max_rows() + 1, 100), &dev).unwrap();
        assert!(matmul(&w, &x).unwrap().is_none(), "more rows are gemm's");
    }

    /// The prompt product, with few rows (split by weight rows, in tiles with a partial last
    /// one) and with many (split by prompt rows between threads, unevenly).
    #[test]
    fn prompt_product_equals_candles_matmul() {
        for m in [20, 301] {
            assert_equals_candles(m, |w, x| tiled(w, x).unwrap());
        }
    }
}
