//! Rotary position embedding: the cos/sin tables (with a family's base, scaling and optional
//! per-frequency factors) and the rotation itself.

use super::config::{Config, RopeScaling};
use crate::error::Result;
use candle_core::{Device, Tensor};

/// One rope base's inverse frequencies; cos and sin are computed for the positions a forward
/// call needs (a table of every position would take 67 MB for Gemma 3's two bases).
#[derive(Clone)]
pub struct RopeTable {
    inv: Vec<f32>,
    device: Device,
}

impl RopeTable {
    /// The frequencies for base `theta`, scaled by `scaling`, with llama.cpp's per-frequency
    /// divisors `factors` (its `rope_freqs.weight`) when the file has them.
    pub fn new(
        cfg: &Config,
        theta: f32,
        scaling: Option<&RopeScaling>,
        factors: Option<&[f32]>,
        device: &Device,
    ) -> Result<Self> {
        let half = cfg.d_head / 2;
        let inv: Vec<f32> = (0..half)
            .map(|i| 1.0 / theta.powf(2.0 * i as f32 / cfg.d_head as f32))
            .map(|f| scaled(f, scaling))
            .zip(0..)
            .map(|(f, i)| factors.map_or(f, |d| f / d[i]))
            .collect();
        Ok(RopeTable {
            inv,
            device: device.clone(),
        })
    }

    /// cos/sin for each row's positions: `[seq, d_head/2]`, or `[b, seq, d_head/2]` when
    /// rows are left-padded (a row's first real token is position 0).
    pub fn at(&self, pads: &[usize], offset: usize, seq: usize) -> Result<(Tensor, Tensor)> {
        let unpadded = pads.iter().all(|p| *p == 0);
        let rows = if unpadded { &[0][..] } else { pads };
        let half = self.inv.len();
        let (mut cos, mut sin) = (Vec::new(), Vec::new());
        for p in rows {
            for i in 0..seq {
                let t = (offset + i).saturating_sub(*p) as f32;
                for f in &self.inv {
                    // The angle rounded to f32 first, as a table of t · f would be.
                    let a = t * f;
                    cos.push(a.cos());
                    sin.push(a.sin());
                }
            }
        }
        let shape: Vec<usize> = match unpadded {
            true => vec![seq, half],
            false => vec![pads.len(), seq, half],
        };
        Ok((
            Tensor::from_vec(cos, shape.clone(), &self.device)?,
            Tensor::from_vec(sin, shape, &self.device)?,
        ))
    }
}

/// One inverse frequency after `scaling` (transformers' linear and llama3 rules).
fn scaled(f: f32, scaling: Option<&RopeScaling>) -> f32 {
    match scaling {
        None => f,
        Some(RopeScaling::Linear { factor }) => f / factor,
        Some(RopeScaling::Llama3 {
            factor,
            low_freq_factor: lo,
            high_freq_factor: hi,
            original_max_position_embeddings: ctx,
        }) => {
            let wavelen = 2.0 * std::f32::consts::PI / f;
            if wavelen < ctx / hi {
                f
            } else if wavelen > ctx / lo {
                f / factor
            } else {
                let s = (ctx / wavelen - lo) / (hi - lo);
                (1.0 - s) * f / factor + s * f
            }
        }
    }
}

/// Rotary embedding of `x` `[b, heads, seq, d_head]` with cos/sin `[seq, d/2]` or
/// `[b, seq, d/2]`: pairs (2i, 2i+1) when `interleaved` (GGUF), else halves (i, i + d/2).
pub(crate) fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor, interleaved: bool) -> Result<Tensor> {
    use candle_nn::rotary_emb;
    if !x.track_op() {
        return Ok(match interleaved {
            true => rotary_emb::rope_i(x, cos, sin)?,
            false => rotary_emb::rope(x, cos, sin)?,
        });
    }
    let (b, h, seq, d) = x.dims4()?;
    let half = d / 2;
    let (cos, sin) = match cos.rank() {
        2 => (
            cos.reshape((1, 1, seq, half))?,
            sin.reshape((1, 1, seq, half))?,
        ),
        _ => (
            cos.reshape((b, 1, seq, half))?,
            sin.reshape((b, 1, seq, half))?,
        ),
    };
    let (x0, x1) = if interleaved {
        let x = x.reshape((b, h, seq, half, 2))?;
        (
            x.narrow(4, 0, 1)?.squeeze(4)?,
            x.narrow(4, 1, 1)?.squeeze(4)?,
        )
    } else {
        (x.narrow(3, 0, half)?, x.narrow(3, half, half)?)
    };
    let y0 = (x0.broadcast_mul(&cos)? - x1.broadcast_mul(&sin)?)?;
    let y1 = (x0.broadcast_mul(&sin)? + x1.broadcast_mul(&cos)?)?;
    Ok(match interleaved {
        true => Tensor::stack(&[y0, y1], 4)?.reshape((b, h, seq, d))?,
        false => Tensor::cat(&[y0, y1], 3)?,
    })
}
