//! Reading a GGUF tensor straight into its typed block storage on the CPU. candle reads the
//! bytes into one buffer and then copies them into a vector of blocks, so loading briefly holds
//! the largest tensor twice (Gemma 3's 178 MB embedding: 356 MB at the peak).

use crate::error::{Error, Result};
use candle_core::quantized::gguf_file::Content;
use candle_core::quantized::k_quants::{
    BlockQ2K, BlockQ3K, BlockQ4K, BlockQ4_0, BlockQ4_1, BlockQ5K, BlockQ5_0, BlockQ5_1, BlockQ6K,
    BlockQ8K, BlockQ8_0,
};
use candle_core::quantized::{GgmlDType, QStorage, QTensor};
use std::io::{Read, Seek, SeekFrom};

/// Tensor `name` of the GGUF, read into CPU memory once; None for a type read the usual way.
pub(in crate::model) fn read_cpu(
    ct: &Content,
    file: &mut std::fs::File,
    name: &str,
) -> Result<Option<QTensor>> {
    let Some(info) = ct.tensor_infos.get(name) else {
        return Ok(None);
    };
    let start = ct.tensor_data_offset.saturating_add(info.offset);
    let dims = info.shape.dims().to_vec();
    let elems = info.shape.elem_count();
    let err = |e: String| Error::Model(format!("GGUF tensor `{name}`: {e}"));
    let mut read = |bytes: &mut [u8]| -> Result<()> {
        file.seek(SeekFrom::Start(start))
            .map_err(|e| err(e.to_string()))?;
        file.read_exact(bytes).map_err(|e| err(e.to_string()))
    };
    use GgmlDType as D;
    let storage = match info.ggml_dtype {
        D::Q4_0 => blocks::<BlockQ4_0>(elems, &mut read)?,
        D::Q4_1 => blocks::<BlockQ4_1>(elems, &mut read)?,
        D::Q5_0 => blocks::<BlockQ5_0>(elems, &mut read)?,
        D::Q5_1 => blocks::<BlockQ5_1>(elems, &mut read)?,
        D::Q8_0 => blocks::<BlockQ8_0>(elems, &mut read)?,
        D::Q2K => blocks::<BlockQ2K>(elems, &mut read)?,
        D::Q3K => blocks::<BlockQ3K>(elems, &mut read)?,
        D::Q4K => blocks::<BlockQ4K>(elems, &mut read)?,
        D::Q5K => blocks::<BlockQ5K>(elems, &mut read)?,
        D::Q6K => blocks::<BlockQ6K>(elems, &mut read)?,
        D::Q8K => blocks::<BlockQ8K>(elems, &mut read)?,
        _ => return Ok(None),
    };
    Ok(Some(
        QTensor::new(storage, dims).map_err(|e| err(e.to_string()))?,
    ))
}

/// `elems` values in blocks of B, read as bytes straight into a vector of blocks.
fn blocks<B: candle_core::quantized::k_quants::GgmlType + Send + Sync + 'static>(
    elems: usize,
    read: &mut dyn FnMut(&mut [u8]) -> Result<()>,
) -> Result<QStorage> {
    let per_block = B::BLCK_SIZE;
    if !elems.is_multiple_of(per_block) {
        return Err(Error::Model(format!(
            "{elems} values are not whole blocks of {per_block}"
        )));
    }
    let mut v: Vec<B> = vec![B::zeros(); elems / per_block];
    // SAFETY: blocks are plain-old-data structs (integers and f16s), so any bytes are a valid
    // value, and the byte view covers exactly the vector's initialized elements.
    let bytes = unsafe {
        std::slice::from_raw_parts_mut(v.as_mut_ptr().cast::<u8>(), std::mem::size_of_val(&v[..]))
    };
    read(bytes)?;
    Ok(QStorage::Cpu(Box::new(v)))
}
