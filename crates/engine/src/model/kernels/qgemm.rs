//! Prefill with quantized weights at f32 speed (and the shared parallel loop of the decode
//! products, [`row_products`]): the weight matrix is dequantized a tile of rows
//! at a time into a small per-thread f32 scratch that stays in cache, and each tile is
//! multiplied with the `gemm` crate's f32 kernels. Memory stays at the GGUF's size; only the
//! scratch (TILE_ROWS × k floats per thread) is added.
//!
//! candle's `QMatMul` multiplies quantized weights with one row of activations at a time (it
//! quantizes the activations to Q8 and takes block dot products), so a prompt of m tokens costs
//! about m decode steps of weight reads. Here each weight is read once per prompt.

use candle_core::quantized::k_quants::{
    BlockQ2K, BlockQ3K, BlockQ4K, BlockQ4_0, BlockQ4_1, BlockQ5K, BlockQ5_0, BlockQ5_1, BlockQ6K,
    BlockQ8K, BlockQ8_0, GgmlType,
};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use std::cell::RefCell;

/// Rows of the weight matrix dequantized at once: 64 rows of 576 to 1536 floats take
/// 144–384 KiB, which stays in a core's L2 cache.
const TILE_ROWS: usize = 64;

/// From this many activation rows on, the tiled product replaces candle's row-by-row one
/// (below it, reading the weights once per row is cheaper than dequantizing them).
pub(in crate::model) const MIN_ROWS: usize = 8;

thread_local! {
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// `x [m, k] · wᵀ` for a quantized `w [n, k]` on the CPU, as `[m, n]`; None when this path does
/// not apply (another device, an unsupported block type), and the caller uses `QMatMul`.
pub(in crate::model) fn matmul(w: &QTensor, x: &Tensor) -> candle_core::Result<Option<Tensor>> {
    let (n, k) = w.shape().dims2()?;
    let (m, xk) = x.dims2()?;
    if !matches!(w.device(), Device::Cpu) || xk != k || !supported(w.dtype()) {
        return Ok(None);
    }
    let data = w.data()?;
    let row_bytes = k / w.dtype().block_size() * w.dtype().type_size();
    // Every block type here has an alignment of at most 4 and a size that is a multiple of it.
    let aligned = data.as_ptr().align_offset(4) == 0;
    if !k.is_multiple_of(w.dtype().block_size()) || data.len() != row_bytes * n || !aligned {
        return Ok(None);
    }
    let xs = x.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
    let mut y = vec![0f32; m * n];
    let out = SharedOut(y.as_mut_ptr());
    let dtype = w.dtype();
    // On candle's own worker pool, the one its other products use.
    candle_core::utils::barrier_pool().execute_chunked(n.div_ceil(TILE_ROWS), |tiles| {
        for t in tiles {
            let (r0, rows) = (t * TILE_ROWS, TILE_ROWS.min(n - t * TILE_ROWS));
            let bytes = &data[r0 * row_bytes..(r0 + rows) * row_bytes];
            SCRATCH.with(|s| {
                let mut s = s.borrow_mut();
                s.resize(TILE_ROWS * k, 0.0);
                let tile = &mut s[..rows * k];
                dequantize(dtype, bytes, tile);
                // What tile_product computes, taken as yᵀ = tile · xᵀ: gemm then packs the tile
                // (rows × k) instead of all the activations (m × k) for every tile.
                // SAFETY: each tile writes only its own columns r0..r0 + rows of y, which
                // outlives the pool's call; the strides describe y's [m, n] row-major layout.
                unsafe {
                    let (x, dst) = (xs.as_ptr(), out.at(r0));
                    gemm_into(dst, (n, 1), tile.as_ptr(), (1, k), x, (k, 1), (rows, m, k));
                }
            });
        }
    });
    Ok(Some(Tensor::from_vec(y, (m, n), &Device::Cpu)?))
}

/// `len` floats that `fill` writes, every one, through the pointer it is given, before anything
/// reads them; they are not zeroed first (zeroing prompt products' outputs was 2% of prefill).
///
/// # Safety
/// `fill` must write every element.
pub(in crate::model) unsafe fn written(len: usize, fill: impl FnOnce(SharedOut)) -> Vec<f32> {
    let mut v: Vec<std::mem::MaybeUninit<f32>> = Vec::with_capacity(len);
    // SAFETY: MaybeUninit elements need no initialization.
    unsafe { v.set_len(len) };
    fill(SharedOut(v.as_mut_ptr().cast()));
    let mut v = std::mem::ManuallyDrop::new(v);
    // SAFETY: the same allocation, of a type with f32's layout, every element now written.
    unsafe { Vec::from_raw_parts(v.as_mut_ptr().cast(), len, v.capacity()) }
}

/// `rows × width` floats, row `r` written whole by `row(r, its floats)` on candle's pool,
/// `per_task` rows to a task. `row` must write every float of its row and read none (they
/// start unwritten, as [`written`] gives them).
pub(in crate::model) fn rows_on_pool(
    rows: usize,
    width: usize,
    per_task: usize,
    row: impl Fn(usize, &mut [f32]) + Sync,
) -> Vec<f32> {
    let fill = |out: SharedOut| {
        candle_core::utils::barrier_pool().execute_chunked(rows.div_ceil(per_task), |tasks| {
            for r in tasks.start * per_task..(tasks.end * per_task).min(rows) {
                // SAFETY: row r lies inside the buffer and only this task writes it.
                let o = unsafe { std::slice::from_raw_parts_mut(out.at(r * width), width) };
                row(r, o);
            }
        });
    };
    // SAFETY: the tasks cover every row, and `row` writes each whole.
    unsafe { written(rows * width, fill) }
}

/// An output buffer, shared by the tasks that write disjoint parts of it.
#[derive(Clone, Copy)]
pub(in crate::model) struct SharedOut(pub(in crate::model) *mut f32);
unsafe impl Send for SharedOut {}
unsafe impl Sync for SharedOut {}

impl SharedOut {
    /// The element at `offset`, which the caller keeps inside the buffer.
    pub(in crate::model) fn at(self, offset: usize) -> *mut f32 {
        // SAFETY: the caller's offset is inside the buffer.
        unsafe { self.0.add(offset) }
    }
}

/// A decode product `[m, n]` whose element `(r, j)` is `dot(j, r)`, for weight row `j` and
/// activation row `r`. It runs on candle's own worker pool, the one its quantized products
/// use, so no second pool wakes up between ops, each thread on one share of the weight rows
/// ([`weight_row_shares`]).
pub(in crate::model) fn row_products(
    n: usize,
    m: usize,
    dot: impl Fn(usize, usize) -> f32 + Sync,
) -> Vec<f32> {
    // [n, m]: a weight row's m outputs lie together, written by the task that owns the row.
    let mut cols = vec![0f32; n * m];
    let out = SharedOut(cols.as_mut_ptr());
    weight_row_shares(n, 1, |rows| {
        for j in rows {
            for r in 0..m {
                // SAFETY: j belongs to this task alone, and j·m + r < n·m.
                unsafe { *out.at(j * m + r) = dot(j, r) };
            }
        }
    });
    if m == 1 {
        return cols;
    }
    let mut y = vec![0f32; m * n];
    for (j, c) in cols.chunks_exact(m).enumerate() {
        for (r, v) in c.iter().enumerate() {
            y[r * n + j] = *v;
        }
    }
    y
}

/// Calls `f` on contiguous shares of the `n` weight rows of a decode product, one share per
/// thread of candle's worker pool, each at least 64 rows and a multiple of `multiple` (but the
/// last): handing out small chunks instead decoded 25% slower (more hand-offs, shorter
/// streams).
pub(in crate::model) fn weight_row_shares(
    n: usize,
    multiple: usize,
    f: impl Fn(std::ops::Range<usize>) + Sync,
) {
    let pool = candle_core::utils::barrier_pool();
    let per_task = n
        .div_ceil(pool.n_workers() + 1)
        .max(64)
        .next_multiple_of(multiple);
    pool.execute_chunked(n.div_ceil(per_task), |tasks| {
        f(tasks.start * per_task..(tasks.end * per_task).min(n))
    });
}

/// `dst[i, j] = Σ_c x[i, c] · tile[j, c]` for `x [m, k]`, `tile [rows, k]`, `dst` with row stride `n`.
pub(in crate::model) unsafe fn tile_product(
    x: &[f32],
    tile: &[f32],
    dst: *mut f32,
    m: usize,
    rows: usize,
    k: usize,
    n: usize,
) {
    gemm_into(
        dst,
        (1, n),
        x.as_ptr(),
        (1, k),
        tile.as_ptr(),
        (k, 1),
        (m, rows, k),
    );
}

/// `dst = lhs · rhs` for `lhs [m, k]` and `rhs [k, n]` given as pointers with (column, row)
/// strides, on this thread.
///
/// # Safety
/// Every element the strides reach must be inside its buffer, and `dst` not aliased.
pub(in crate::model) unsafe fn gemm_into(
    dst: *mut f32,
    (dst_cs, dst_rs): (usize, usize),
    lhs: *const f32,
    (lhs_cs, lhs_rs): (usize, usize),
    rhs: *const f32,
    (rhs_cs, rhs_rs): (usize, usize),
    (m, n, k): (usize, usize, usize),
) {
    gemm::gemm(
        m,
        n,
        k,
        dst,
        dst_cs as isize,
        dst_rs as isize,
        false,
        lhs,
        lhs_cs as isize,
        lhs_rs as isize,
        rhs,
        rhs_cs as isize,
        rhs_rs as isize,
        0.0,
        1.0,
        false,
        false,
        false,
        gemm::Parallelism::None,
    );
}

/// Whether tiles of this block type can be dequantized here.
pub(in crate::model) fn supported(d: GgmlDType) -> bool {
    use GgmlDType as D;
    matches!(
        d,
        D::Q4_0
            | D::Q4_1
            | D::Q5_0
            | D::Q5_1
            | D::Q8_0
            | D::Q2K
            | D::Q3K
            | D::Q4K
            | D::Q5K
            | D::Q6K
            | D::Q8K
    )
}

/// Whole rows of blocks of type `dtype` as f32.
pub(in crate::model) fn dequantize(dtype: GgmlDType, bytes: &[u8], out: &mut [f32]) {
    use GgmlDType as D;
    if super::qrows::decodes(dtype) {
        // SAFETY: decodes checked the CPU; the same values as candle's decoders, bit for bit.
        return unsafe { super::qrows::decode(dtype, bytes, out) };
    }
    match dtype {
        D::Q4_0 => blocks_to_f32::<BlockQ4_0>(bytes, out),
        D::Q4_1 => blocks_to_f32::<BlockQ4_1>(bytes, out),
        D::Q5_0 => blocks_to_f32::<BlockQ5_0>(bytes, out),
        D::Q5_1 => blocks_to_f32::<BlockQ5_1>(bytes, out),
        D::Q8_0 => blocks_to_f32::<BlockQ8_0>(bytes, out),
        D::Q2K => blocks_to_f32::<BlockQ2K>(bytes, out),
        D::Q3K => blocks_to_f32::<BlockQ3K>(bytes, out),
        D::Q4K => blocks_to_f32::<BlockQ4K>(bytes, out),
        D::Q5K => blocks_to_f32::<BlockQ5K>(bytes, out),
        D::Q6K => blocks_to_f32::<BlockQ6K>(bytes, out),
        D::Q8K => blocks_to_f32::<BlockQ8K>(bytes, out),
        other => unreachable!("{other:?} is not supported here"),
    }
}

fn blocks_to_f32<B: GgmlType>(bytes: &[u8], out: &mut [f32]) {
    let size = std::mem::size_of::<B>();
    assert!(
        bytes.len().is_multiple_of(size)
            && bytes.as_ptr().align_offset(std::mem::align_of::<B>()) == 0
    );
    // SAFETY: the bytes are a QTensor's storage of blocks of type B (plain-old-data structs),
    // whole and aligned as just checked.
    let blocks =
        unsafe { std::slice::from_raw_parts(bytes.as_ptr().cast::<B>(), bytes.len() / size) };
    B::to_float(blocks, out);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tiled product equals x · dequantize(w)ᵀ for every block type the GGUFs we load use,
    /// with a last tile that is not full (130 rows = 2 × 64 + 2).
    #[test]
    fn tiled_product_equals_the_dequantized_product() {
        let dev = Device::Cpu;
        for (dtype, k) in [
            (GgmlDType::Q4_0, 96),
            (GgmlDType::Q4_1, 96),
            (GgmlDType::Q5_0, 64),
            (GgmlDType::Q8_0, 64),
            (GgmlDType::Q4K, 256),
            (GgmlDType::Q6K, 512),
        ] {
            let w = Tensor::randn(0f32, 1.0, (130, k), &dev).unwrap();
            let q = QTensor::quantize(&w, dtype).unwrap();
            let x = Tensor::randn(0f32, 1.0, (9, k), &dev).unwrap();
            let got = matmul(&q, &x).unwrap().expect("supported");
            let want = x.matmul(&q.dequantize(&dev).unwrap().t().unwrap()).unwrap();
            assert_eq!(got.dims(), &[9, 130]);
            let err = (got - &want)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            let scale = want
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(err <= 1e-5 * scale, "{dtype:?}: error {err} of {scale}");
        }
    }
}
