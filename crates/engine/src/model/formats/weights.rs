//! Where a model's weights come from and how they multiply: a GGUF file (quantized `QMatMul`s,
//! or dequantized to f32 at load) or a safetensors `VarBuilder`, read by llama.cpp's or
//! Hugging Face's tensor names, onto one candle device.

use crate::error::{Error, Result};
use candle_core::quantized::{gguf_file, QMatMul, QTensor};
use candle_core::{DType, Device, Module, Tensor};
use candle_nn::VarBuilder;
use std::sync::Arc;

/// How GGUF weights are multiplied.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WeightsMode {
    /// candle `QMatMul` on the quantized blocks.
    Quantized,
    /// Dequantized to f32 at load; on the CPU the GGUF's blocks of the types
    /// `qrows.rs` decodes are kept too, for products of a few rows.
    F32,
}

/// A linear layer, possibly several sharing an input (q|k|v, gate|up) whose outputs are
/// concatenated; weights are `[out, in]`. Parts of one quantization type are stacked into a
/// single matrix at load, so they multiply once.
pub(in crate::model) struct Linear {
    ws: Vec<QMatMul>,
    /// With f32 weights read from GGUF: the file's blocks of the same (single) matrix, when
    /// `qrows::decodes` their type. Products of a few rows read these instead.
    blocks: Option<Arc<QTensor>>,
    b: Option<Tensor>,
}

impl Linear {
    /// `(out, in)`: the parts' output widths summed, and their input width (None when the
    /// parts disagree on it).
    pub(in crate::model) fn dims(&self) -> Result<(usize, Option<usize>)> {
        let mut dims = Vec::new();
        for w in &self.ws {
            dims.push(match w {
                QMatMul::QTensor(q) => q.shape().dims2()?,
                QMatMul::Tensor(t) | QMatMul::TensorF16(t) => t.dims2()?,
            });
        }
        let inner = dims[0].1;
        let same = dims.iter().all(|d| d.1 == inner);
        Ok((dims.iter().map(|d| d.0).sum(), same.then_some(inner)))
    }

    /// `[.., in] -> [.., out]`, through 2-D matmuls.
    pub(in crate::model) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dims = x.dims().to_vec();
        let x2 = x.reshape(((), dims[dims.len() - 1]))?;
        let mut y = match self.ws.as_slice() {
            [w] => product(w, self.blocks.as_deref(), &x2)?,
            ws => {
                let ys: Vec<Tensor> = ws
                    .iter()
                    .map(|w| product(w, None, &x2))
                    .collect::<candle_core::Result<_>>()?;
                Tensor::cat(&ys, 1)?
            }
        };
        if let Some(b) = &self.b {
            y = y.broadcast_add(b)?;
        }
        let mut out = dims;
        let last = out.len() - 1;
        out[last] = y.dim(1)?;
        Ok(y.reshape(out)?)
    }
}

/// `x [m, k] · wᵀ`: for a prompt's many rows of activations and quantized weights, through
/// dequantized tiles and f32 gemm (`qgemm`); for a few rows and Q4_1 or Q5_0 weights, our
/// SIMD kernel (`qgemv`); for f32 weights, a few rows dotted where the weights lie
/// and many in tiles on candle's pool (`fgemv`); else candle's product. Activations that
/// carry a gradient always take candle's product, which is differentiable. `blocks`, when
/// given, are f32 `w`'s GGUF blocks, which a few rows read instead (`qrows`).
fn product(w: &QMatMul, blocks: Option<&QTensor>, x: &Tensor) -> candle_core::Result<Tensor> {
    if let QMatMul::Tensor(t) = w {
        if !x.track_op() && !t.track_op() {
            let few = x.dim(0)? <= super::fgemv::max_rows();
            let y = match (few, blocks) {
                (true, Some(q)) => match super::fgemv::matmul_decoded(t, q, x)? {
                    Some(y) => Some(y),
                    None => super::fgemv::matmul(t, x)?,
                },
                (true, None) => super::fgemv::matmul(t, x)?,
                (false, _) => super::fgemv::tiled(t, x)?,
            };
            if let Some(y) = y {
                return Ok(y);
            }
        }
    }
    if let QMatMul::QTensor(q) = w {
        if !x.track_op() {
            let y = match x.dim(0)? >= super::qgemm::MIN_ROWS {
                true => super::qgemm::matmul(q, x)?,
                false => super::qgemv::matmul(q, x)?,
            };
            if let Some(y) = y {
                return Ok(y);
            }
        }
    }
    w.forward(x)
}

/// Where weights come from: a GGUF file or a safetensors VarBuilder.
pub enum WeightSource<'a> {
    Gguf {
        ct: &'a gguf_file::Content,
        file: &'a mut std::fs::File,
        mode: WeightsMode,
        device: Device,
    },
    Safetensors {
        vb: VarBuilder<'a>,
        tied: bool,
    },
}

/// One weight's two names: llama.cpp's (GGUF) and Hugging Face's (safetensors), without the
/// `.weight` suffix.
pub(in crate::model) type Names = (String, String);

impl WeightSource<'_> {
    pub(in crate::model) fn device(&self) -> Device {
        match self {
            WeightSource::Gguf { device, .. } => device.clone(),
            WeightSource::Safetensors { vb, .. } => vb.device().clone(),
        }
    }

    pub(in crate::model) fn qtensor(&mut self, name: &str) -> Result<QTensor> {
        match self {
            WeightSource::Gguf {
                ct, file, device, ..
            } => {
                if device.is_cpu() {
                    if let Some(q) = super::gguf_read::read_cpu(ct, file, name)? {
                        return Ok(q);
                    }
                }
                ct.tensor(*file, name, device)
                    .map_err(|e| Error::Model(format!("GGUF tensor `{name}`: {e}")))
            }
            WeightSource::Safetensors { .. } => unreachable!("qtensor is only read from GGUF"),
        }
    }

    /// Whether the file has a tensor named `gguf` (GGUF) or `hf` (safetensors).
    pub(in crate::model) fn has(&self, gguf: &str, hf: &str) -> bool {
        match self {
            WeightSource::Gguf { ct, .. } => ct.tensor_infos.contains_key(gguf),
            WeightSource::Safetensors { vb, .. } => vb.contains_tensor(hf),
        }
    }

    /// A plain f32 tensor (norm weights, embeddings).
    pub(in crate::model) fn tensor(&mut self, gguf: &str, hf: &str) -> Result<Tensor> {
        match self {
            WeightSource::Gguf { device, .. } => {
                let device = device.clone();
                Ok(self.qtensor(gguf)?.dequantize(&device)?)
            }
            WeightSource::Safetensors { vb, .. } => {
                Ok(vb.get_unchecked(hf)?.to_dtype(DType::F32)?)
            }
        }
    }

    /// A GGUF matrix dequantized to f32, with its blocks kept when products of a few rows can
    /// read them (`qrows::decodes` their type, on the CPU).
    pub(in crate::model) fn f32_with_blocks(
        &mut self,
        name: &str,
    ) -> Result<(Tensor, Option<Arc<QTensor>>)> {
        let device = self.device();
        let q = self.qtensor(name)?;
        let t = q.dequantize(&device)?;
        let keep = device.is_cpu() && super::qrows::decodes(q.dtype());
        Ok((t, keep.then(|| Arc::new(q))))
    }

    /// An RMSNorm weight; `hf_offset` is added to safetensors weights (Gemma's 1 + w, which
    /// GGUF files already store).
    pub(in crate::model) fn norm(&mut self, n: &Names, hf_offset: f64) -> Result<Tensor> {
        let w = self.tensor(&format!("{}.weight", n.0), &format!("{}.weight", n.1))?;
        match self {
            WeightSource::Safetensors { .. } if hf_offset != 0.0 => Ok((w + hf_offset)?),
            _ => Ok(w),
        }
    }

    /// Several linears sharing an input, as one [`Linear`].
    pub(in crate::model) fn fused_linear(&mut self, parts: &[Names], bias: bool) -> Result<Linear> {
        let quantized = matches!(
            self,
            WeightSource::Gguf {
                mode: WeightsMode::Quantized,
                ..
            }
        );
        if quantized {
            let device = self.device();
            let qs: Vec<QTensor> = parts
                .iter()
                .map(|(g, _)| self.qtensor(&format!("{g}.weight")))
                .collect::<Result<_>>()?;
            let b = match bias {
                true => {
                    let bs: Vec<Tensor> = parts
                        .iter()
                        .map(|(g, _)| {
                            Ok(self.qtensor(&format!("{g}.bias"))?.dequantize(&device)?)
                        })
                        .collect::<Result<_>>()?;
                    Some(Tensor::cat(&bs, 0)?)
                }
                false => None,
            };
            return Ok(Linear {
                ws: stack_same_type(qs, &device)?,
                blocks: None,
                b,
            });
        }
        // Not quantized here, so every part is an f32 matrix and they stack into one.
        let lins: Vec<Linear> = parts
            .iter()
            .map(|(g, h)| self.linear(g, h, bias))
            .collect::<Result<_>>()?;
        let ws: Vec<Tensor> = lins
            .iter()
            .flat_map(|l| l.ws.iter())
            .map(|w| match w {
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
            ws: vec![QMatMul::Tensor(Tensor::cat(&ws, 0)?)],
            blocks: joined_blocks(&lins, &self.device())?,
            b,
        })
    }

    pub(in crate::model) fn linear(&mut self, gguf: &str, hf: &str, bias: bool) -> Result<Linear> {
        match self {
            WeightSource::Gguf { mode, device, .. } => {
                let (mode, device) = (*mode, device.clone());
                let name = format!("{gguf}.weight");
                let (w, blocks) = match mode {
                    WeightsMode::Quantized => {
                        (QMatMul::from_arc(Arc::new(self.qtensor(&name)?))?, None)
                    }
                    WeightsMode::F32 => {
                        let (t, blocks) = self.f32_with_blocks(&name)?;
                        (QMatMul::Tensor(t), blocks)
                    }
                };
                let b = match bias {
                    true => Some(self.qtensor(&format!("{gguf}.bias"))?.dequantize(&device)?),
                    false => None,
                };
                Ok(Linear {
                    ws: vec![w],
                    blocks,
                    b,
                })
            }
            WeightSource::Safetensors { vb, .. } => {
                let get = |n: String| -> Result<Tensor> {
                    Ok(vb.get_unchecked(&n)?.to_dtype(DType::F32)?)
                };
                let w = get(format!("{hf}.weight"))?;
                let b = bias.then(|| get(format!("{hf}.bias"))).transpose()?;
                Ok(Linear {
                    ws: vec![QMatMul::Tensor(w)],
                    blocks: None,
                    b,
                })
            }
        }
    }
}

/// Quantized matrices sharing an input: consecutive ones of the same type and width are
/// stacked row-wise into one (rows are independent, so the product is the same); a part of
/// another type (Q4_K_M mixes Q5_0, Q8_0 and Q6_K) gets its own matmul.
fn stack_same_type(qs: Vec<QTensor>, device: &Device) -> Result<Vec<QMatMul>> {
    let mut groups: Vec<Vec<QTensor>> = Vec::new();
    for q in qs {
        let k = q.shape().dims2()?.1;
        match groups.last_mut() {
            Some(g) if g[0].dtype() == q.dtype() && g[0].shape().dims2()?.1 == k => g.push(q),
            _ => groups.push(vec![q]),
        }
    }
    groups
        .into_iter()
        .map(|mut g| {
            let q = match g.len() {
                1 => g.pop().expect("one part"),
                _ => concat_rows(&g, device)?,
            };
            Ok(QMatMul::from_arc(Arc::new(q))?)
        })
        .collect()
}

/// The f32 parts' kept blocks stacked as their matrices are, when every part kept its blocks
/// and all are of one type.
fn joined_blocks(parts: &[Linear], device: &Device) -> Result<Option<Arc<QTensor>>> {
    let Some(qs) = parts
        .iter()
        .map(|l| l.blocks.as_deref())
        .collect::<Option<Vec<&QTensor>>>()
    else {
        return Ok(None);
    };
    if qs.iter().any(|q| q.dtype() != qs[0].dtype()) {
        return Ok(None);
    }
    Ok(match parts {
        [one] => one.blocks.clone(),
        _ => Some(Arc::new(concat_rows(&qs, device)?)),
    })
}

/// Quantized matrices of one type and width, rows stacked.
fn concat_rows<Q: std::borrow::Borrow<QTensor>>(g: &[Q], device: &Device) -> Result<QTensor> {
    let k = g[0].borrow().shape().dims2()?.1;
    let (mut bytes, mut n) = (Vec::new(), 0);
    for q in g.iter().map(|q| q.borrow()) {
        n += q.shape().dims2()?.0;
        bytes.extend_from_slice(&q.data()?);
    }
    let storage = candle_core::quantized::QStorage::from_data(
        std::borrow::Cow::Owned(bytes),
        device,
        g[0].borrow().dtype(),
    )?;
    Ok(QTensor::new(storage, (n, k))?)
}

/// The unembedding: `output.weight` when the file has one, else `tied`, the embedding's matrix
/// and blocks (reused, not loaded twice, when it is already in f32).
pub(in crate::model) fn lm_head(
    src: &mut WeightSource,
    tied: (QMatMul, Option<Arc<QTensor>>),
) -> Result<Linear> {
    let (w, blocks) = match src {
        WeightSource::Gguf { ct, mode, .. } => {
            let own = ct.tensor_infos.contains_key("output.weight");
            match (*mode, own) {
                (_, false) => tied,
                (WeightsMode::F32, true) => {
                    let (t, blocks) = src.f32_with_blocks("output.weight")?;
                    (QMatMul::Tensor(t), blocks)
                }
                (WeightsMode::Quantized, true) => (
                    QMatMul::from_arc(Arc::new(src.qtensor("output.weight")?))?,
                    None,
                ),
            }
        }
        WeightSource::Safetensors { vb, tied: t, .. } => {
            if *t || !vb.contains_tensor("lm_head.weight") {
                tied
            } else {
                let w = vb.get_unchecked("lm_head.weight")?.to_dtype(DType::F32)?;
                (QMatMul::Tensor(w), None)
            }
        }
    };
    Ok(Linear {
        ws: vec![w],
        blocks,
        b: None,
    })
}
