//! Where a model's weights come from and how they multiply: a GGUF file (quantized `QMatMul`s,
//! or dequantized to f32 at load) or a safetensors `VarBuilder`, read by llama.cpp's or
//! Hugging Face's tensor names.

use crate::error::{Error, Result};
use candle_core::quantized::{gguf_file, QMatMul, QTensor};
use candle_core::{DType, Device, Module, Tensor};
use candle_nn::VarBuilder;
use std::sync::Arc;

/// How GGUF weights are multiplied.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WeightsMode {
    /// candle `QMatMul` on the quantized blocks.
    Quantized,
    /// Dequantized to f32 at load.
    F32,
}

/// A linear layer without or with bias; the weight is `[out, in]`.
pub(super) struct Linear {
    w: QMatMul,
    b: Option<Tensor>,
}

impl Linear {
    /// `[.., in] -> [.., out]`, through a 2-D matmul.
    pub(super) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dims = x.dims().to_vec();
        let x2 = x.reshape(((), dims[dims.len() - 1]))?;
        let mut y = self.w.forward(&x2)?;
        if let Some(b) = &self.b {
            y = y.broadcast_add(b)?;
        }
        let mut out = dims;
        let last = out.len() - 1;
        out[last] = y.dim(1)?;
        Ok(y.reshape(out)?)
    }
}

/// Where weights come from: a GGUF file or a safetensors VarBuilder.
pub enum WeightSource<'a> {
    Gguf {
        ct: &'a gguf_file::Content,
        file: &'a mut std::fs::File,
        mode: WeightsMode,
    },
    Safetensors {
        vb: VarBuilder<'a>,
        qkv_bias: bool,
        tied: bool,
    },
}

impl WeightSource<'_> {
    fn qtensor(&mut self, name: &str) -> Result<QTensor> {
        match self {
            WeightSource::Gguf { ct, file, .. } => ct
                .tensor(*file, name, &Device::Cpu)
                .map_err(|e| Error::Model(format!("GGUF tensor `{name}`: {e}"))),
            WeightSource::Safetensors { .. } => unreachable!("qtensor is only read from GGUF"),
        }
    }

    /// A plain f32 tensor (norm weights, embeddings).
    pub(super) fn tensor(&mut self, gguf: &str, hf: &str) -> Result<Tensor> {
        match self {
            WeightSource::Gguf { .. } => Ok(self.qtensor(gguf)?.dequantize(&Device::Cpu)?),
            WeightSource::Safetensors { vb, .. } => {
                Ok(vb.get_unchecked(hf)?.to_dtype(DType::F32)?)
            }
        }
    }

    /// Several linears sharing an input, stacked into one `[sum(out), in]` matrix.
    pub(super) fn fused_linear(
        &mut self,
        parts: &[(String, String)],
        bias: bool,
    ) -> Result<Linear> {
        if let WeightSource::Gguf {
            mode: WeightsMode::Quantized,
            ..
        } = self
        {
            let qs: Vec<QTensor> = parts
                .iter()
                .map(|(g, _)| self.qtensor(&format!("{g}.weight")))
                .collect::<Result<_>>()?;
            let dtype = qs[0].dtype();
            if qs.iter().all(|q| q.dtype() == dtype && q.rank() == 2) && !bias {
                let k = qs[0].shape().dims2()?.1;
                let mut bytes = Vec::new();
                let mut n = 0;
                for q in &qs {
                    let (rows, cols) = q.shape().dims2()?;
                    if cols != k {
                        return Err(Error::Model("fused weights disagree on width".into()));
                    }
                    n += rows;
                    bytes.extend_from_slice(&q.data()?);
                }
                let storage = candle_core::quantized::QStorage::from_data(
                    std::borrow::Cow::Owned(bytes),
                    &Device::Cpu,
                    dtype,
                )?;
                let q = QTensor::new(storage, (n, k))?;
                return Ok(Linear {
                    w: QMatMul::from_arc(Arc::new(q))?,
                    b: None,
                });
            }
        }
        let lins: Vec<Linear> = parts
            .iter()
            .map(|(g, h)| self.linear_f32(g, h, bias))
            .collect::<Result<_>>()?;
        let ws: Vec<Tensor> = lins
            .iter()
            .map(|l| match &l.w {
                QMatMul::Tensor(t) => Ok(t.clone()),
                _ => Err(Error::Model("expected f32 weights".into())),
            })
            .collect::<Result<_>>()?;
        let b = if bias {
            let bs: Vec<Tensor> = lins.iter().filter_map(|l| l.b.clone()).collect();
            Some(Tensor::cat(&bs, 0)?)
        } else {
            None
        };
        Ok(Linear {
            w: QMatMul::Tensor(Tensor::cat(&ws, 0)?),
            b,
        })
    }

    /// A linear with its weight in f32 whatever the file holds.
    fn linear_f32(&mut self, gguf: &str, hf: &str, bias: bool) -> Result<Linear> {
        if let WeightSource::Gguf { mode, .. } = self {
            let saved = *mode;
            *mode = WeightsMode::F32;
            let l = self.linear(gguf, hf, bias);
            if let WeightSource::Gguf { mode, .. } = self {
                *mode = saved;
            }
            return l;
        }
        self.linear(gguf, hf, bias)
    }

    pub(super) fn linear(&mut self, gguf: &str, hf: &str, bias: bool) -> Result<Linear> {
        match self {
            WeightSource::Gguf { mode, .. } => {
                let mode = *mode;
                let q = self.qtensor(&format!("{gguf}.weight"))?;
                let w = match mode {
                    WeightsMode::Quantized => QMatMul::from_arc(Arc::new(q))?,
                    WeightsMode::F32 => QMatMul::Tensor(q.dequantize(&Device::Cpu)?),
                };
                let b = match self.qtensor(&format!("{gguf}.bias")) {
                    Ok(b) if bias => Some(b.dequantize(&Device::Cpu)?),
                    _ => None,
                };
                Ok(Linear { w, b })
            }
            WeightSource::Safetensors { vb, .. } => {
                let w = vb
                    .get_unchecked(&format!("{hf}.weight"))?
                    .to_dtype(DType::F32)?;
                let b = if bias {
                    Some(
                        vb.get_unchecked(&format!("{hf}.bias"))?
                            .to_dtype(DType::F32)?,
                    )
                } else {
                    None
                };
                Ok(Linear {
                    w: QMatMul::Tensor(w),
                    b,
                })
            }
        }
    }
}

pub(super) fn lm_head(src: &mut WeightSource, embed: &Tensor) -> Result<Linear> {
    let w = match src {
        WeightSource::Gguf { ct, mode, .. } => {
            let name = if ct.tensor_infos.contains_key("output.weight") {
                "output.weight"
            } else {
                "token_embd.weight"
            };
            let mode = *mode;
            let q = src.qtensor(name)?;
            match mode {
                WeightsMode::Quantized => QMatMul::from_arc(Arc::new(q))?,
                WeightsMode::F32 => QMatMul::Tensor(q.dequantize(&Device::Cpu)?),
            }
        }
        WeightSource::Safetensors { vb, tied, .. } => {
            if *tied || !vb.contains_tensor("lm_head.weight") {
                QMatMul::Tensor(embed.clone())
            } else {
                QMatMul::Tensor(vb.get_unchecked("lm_head.weight")?.to_dtype(DType::F32)?)
            }
        }
    };
    Ok(Linear { w, b: None })
}
