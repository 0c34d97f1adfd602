//! A learned low-rank intervention, kept as tensors on the model's device.
//!
//! LoReFT (Wu et al. 2024) edits a hidden state `h` (width d) inside an r-dimensional subspace:
//! `h + Rᵀ(W h + b − R h)`, with `R` `[r, d]` (orthonormal rows), `W` `[r, d]` and `b` `[r]`.
//! It is applied with tensor operations only, so when its parameters are candle `Var`s the
//! gradient flows to them; with `W = R` and `b = 0` it is the identity.

use crate::error::{Error, Result};
use candle_core::{DType, Tensor, D};

/// The parameters of one low-rank edit.
#[derive(Clone, Debug)]
pub struct LowRank {
    /// `[rank, d]`, orthonormal rows: the subspace that is edited.
    pub r: Tensor,
    /// `[rank, d]`: the learned projection.
    pub w: Tensor,
    /// `[rank]`: the learned offset.
    pub b: Tensor,
}

impl LowRank {
    /// Check the shapes against each other; the width is checked against the site by `Spec`.
    pub fn new(r: Tensor, w: Tensor, b: Tensor) -> Result<LowRank> {
        let (rank, d) = r.dims2()?;
        if w.dims() != [rank, d] || b.dims() != [rank] {
            return Err(Error::Invalid(format!(
                "low-rank edit: R is [{rank}, {d}], so W must be [{rank}, {d}] and b [{rank}]; got W {:?} and b {:?}",
                w.dims(),
                b.dims()
            )));
        }
        for (name, t) in [("R", &r), ("W", &w), ("b", &b)] {
            let v = t.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?;
            if v.iter().any(|x| !x.is_finite()) {
                return Err(Error::Invalid(format!(
                    "low-rank edit: {name} holds a non-finite number"
                )));
            }
        }
        Ok(LowRank { r, w, b })
    }

    /// The hidden width d the edit expects.
    pub fn width(&self) -> usize {
        self.r.dims().get(1).copied().unwrap_or(0)
    }

    pub fn rank(&self) -> usize {
        self.r.dims().first().copied().unwrap_or(0)
    }

    /// The change it makes to `h` (`[b, seq, d]`): `(h (W − R)ᵀ + b) R`.
    pub fn delta(&self, h: &Tensor) -> Result<Tensor> {
        let (b, seq, d) = h.dims3()?;
        let h2 = h.reshape((b * seq, d))?; // [n, d]
        let diff = (&self.w - &self.r)?; // [r, d]
        let low = h2.matmul(&diff.t()?)?.broadcast_add(&self.b)?; // [n, r]
        Ok(low.matmul(&self.r)?.reshape((b, seq, d))?) // [b, seq, d]
    }

    /// The edit whose change is `scale` times this one's: `W' = R + scale (W − R)`,
    /// `b' = scale b`. Scale 1 is this edit, bit for bit; 0 is the identity.
    pub fn scaled(&self, scale: f32) -> Result<LowRank> {
        if scale == 1.0 {
            return Ok(self.clone());
        }
        let s = f64::from(scale);
        Ok(LowRank {
            r: self.r.clone(),
            w: (&self.r + ((&self.w - &self.r)? * s)?)?,
            b: (&self.b * s)?,
        })
    }

    /// The same edit with its tensors on `device`.
    pub fn to_device(&self, device: &candle_core::Device) -> Result<LowRank> {
        Ok(LowRank {
            r: self.r.to_device(device)?,
            w: self.w.to_device(device)?,
            b: self.b.to_device(device)?,
        })
    }

    /// `h` with the edit applied where `mask` (`[b, seq]`, 1 or 0) is 1; everywhere when None.
    /// An edit read from a JSON spec lives on the CPU and moves to `h`'s device here.
    pub fn apply(&self, h: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        if !self.r.device().same_device(h.device()) {
            return self.to_device(h.device())?.apply(h, mask);
        }
        let delta = self.delta(h)?;
        let delta = match mask {
            Some(m) => delta.broadcast_mul(&m.unsqueeze(D::Minus1)?)?,
            None => delta,
        };
        Ok((h + delta)?)
    }
}
