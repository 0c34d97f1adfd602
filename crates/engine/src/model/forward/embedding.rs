//! The token embedding: f32 rows, or, with quantized weights, the GGUF's quantized rows,
//! dequantized only for the tokens looked up (a 49,152 × 576 f32 table would take 113 MB
//! beside a 97 MB model, and Gemma 3's 262,144 × 640 one 671 MB beside 253 MB).

use super::weights::{WeightSource, WeightsMode};
use crate::error::{Error, Result};
use candle_core::quantized::{QMatMul, QTensor};
use candle_core::{Device, Tensor};
use std::sync::Arc;

/// The embedding table `[vocab, d_model]`.
pub(in crate::model) enum Embedding {
    /// With the GGUF's blocks of the table when `qrows::decodes` their type, for a
    /// tied unembedding's products of a few rows.
    F32(Tensor, Option<Arc<QTensor>>),
    /// On the CPU; tied unembeddings share it.
    Quantized(Arc<QTensor>),
}

impl Embedding {
    /// `(rows, width)` of the table.
    pub(in crate::model) fn dims(&self) -> Result<(usize, usize)> {
        Ok(match self {
            Embedding::F32(t, _) => t.dims2()?,
            Embedding::Quantized(q) => q.shape().dims2()?,
        })
    }

    /// Reads `token_embd.weight` (GGUF) or `model.embed_tokens.weight` (safetensors).
    pub(in crate::model) fn load(
        src: &mut WeightSource,
        gguf: &str,
        hf: &str,
    ) -> Result<Embedding> {
        if let WeightSource::Gguf {
            mode: WeightsMode::Quantized,
            device: Device::Cpu,
            ..
        } = src
        {
            let q = src.qtensor(gguf)?;
            if super::qgemm::supported(q.dtype()) {
                return Ok(Embedding::Quantized(Arc::new(q)));
            }
        }
        if let WeightSource::Gguf { .. } = src {
            let (t, blocks) = src.f32_with_blocks(gguf)?;
            return Ok(Embedding::F32(t, blocks));
        }
        Ok(Embedding::F32(src.tensor(gguf, hf)?, None))
    }

    /// The table's kept GGUF blocks (f32 tables only).
    pub(in crate::model) fn blocks(&self) -> Option<Arc<QTensor>> {
        match self {
            Embedding::F32(_, b) => b.clone(),
            Embedding::Quantized(_) => None,
        }
    }

    /// The rows of `ids`, `[ids.len(), d_model]`, on `device`.
    pub(in crate::model) fn lookup(&self, ids: &[u32], device: &Device) -> Result<Tensor> {
        match self {
            Embedding::F32(t, _) => {
                let ids = Tensor::from_slice(ids, ids.len(), device)?;
                Ok(t.index_select(&ids, 0)?)
            }
            Embedding::Quantized(q) => {
                let (vocab, d) = q.shape().dims2()?;
                let row_bytes = d / q.dtype().block_size() * q.dtype().type_size();
                let data = q.data()?;
                let mut out = vec![0f32; ids.len() * d];
                for (id, row) in ids.iter().zip(out.chunks_exact_mut(d)) {
                    let i = *id as usize;
                    if i >= vocab {
                        return Err(Error::Invalid(format!(
                            "token id {i} is outside the vocabulary of {vocab}"
                        )));
                    }
                    let bytes = &data[i * row_bytes..(i + 1) * row_bytes];
                    super::qgemm::dequantize(q.dtype(), bytes, row);
                }
                Ok(Tensor::from_vec(out, (ids.len(), d), device)?)
            }
        }
    }

    /// The table as an unembedding matrix (tied weights), sharing its storage.
    pub(in crate::model) fn as_matmul(&self) -> Result<QMatMul> {
        Ok(match self {
            Embedding::F32(t, _) => QMatMul::Tensor(t.clone()),
            Embedding::Quantized(q) => QMatMul::from_arc(q.clone())?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::GgmlDType;

    /// Looking up quantized rows gives the rows of the dequantized table, and an id past the
    /// vocabulary is an error.
    #[test]
    fn quantized_rows_equal_the_dequantized_table() {
        let dev = Device::Cpu;
        let t = Tensor::randn(0f32, 1.0, (10, 64), &dev).unwrap();
        let q = Arc::new(QTensor::quantize(&t, GgmlDType::Q8_0).unwrap());
        let table = q.dequantize(&dev).unwrap();
        let e = Embedding::Quantized(q);
        let got = e.lookup(&[7, 0, 7], &dev).unwrap();
        let ids = Tensor::new(&[7u32, 0, 7], &dev).unwrap();
        let want = table.index_select(&ids, 0).unwrap();
        assert_eq!(
            got.to_vec2::<f32>().unwrap(),
            want.to_vec2::<f32>().unwrap()
        );
        assert!(e.lookup(&[10], &dev).is_err());
    }
}
