//! The actions as tensor operations on the model's device: the selected rows of a site's
//! activations are gathered, edited, and written back, so nothing but captured rows ever
//! leaves the device.
//!
//! Each edit computes its new rows over the whole width and keeps them only on the chosen
//! heads (`where_cond`), so unselected values are returned untouched, bit for bit.

use super::{Action, Intervention};
use crate::error::Result;
use candle_core::{DType, Device, Tensor, D};

/// One selected position: its flat row index in `[b * seq, width]` and absolute position.
#[derive(Clone, Copy)]
pub(super) struct Selected {
    pub flat: usize,
    pub pos: usize,
}

/// The rows of `x2` (`[b * seq, width]`) at `sel`, as `[n, width]`.
pub(super) fn gather(x2: &Tensor, sel: &[Selected]) -> Result<Tensor> {
    let idx: Vec<u32> = sel.iter().map(|s| s.flat as u32).collect();
    let idx = Tensor::from_vec(idx, sel.len(), x2.device())?;
    Ok(x2.index_select(&idx, 0)?)
}

/// `x2` with the rows at `sel` replaced by `new` (`[n, width]`).
fn scatter(x2: &Tensor, sel: &[Selected], new: &Tensor) -> Result<Tensor> {
    let (rows, width) = x2.dims2()?;
    let idx: Vec<u32> = sel.iter().map(|s| s.flat as u32).collect();
    let idx = Tensor::from_vec(idx, sel.len(), x2.device())?;
    // Each row is written once, so adding into zeros places it exactly.
    let placed = x2.zeros_like()?.index_add(&idx, new, 0)?;
    let mut m = vec![0u8; rows];
    for s in sel {
        m[s.flat] = 1;
    }
    let m = Tensor::from_vec(m, (rows, 1), x2.device())?.broadcast_as((rows, width))?;
    Ok(m.where_cond(&placed, x2)?)
}

/// Apply `iv` (any action but capture and low-rank) to the selected rows of `x`
/// (`[b, seq, width]`); `d_head` is the width of one head's slice.
pub(super) fn edit(
    iv: &Intervention,
    x: &Tensor,
    sel: &[Selected],
    d_head: usize,
) -> Result<Tensor> {
    let dims = x.dims().to_vec();
    let width = dims[2];
    let x2 = x.reshape(((), width))?;
    let rows = gather(&x2, sel)?; // [n, width]
    let layout = Slices::new(iv, width, d_head);
    let dev = x.device();
    let new = match &iv.action {
        Action::Add { vector, scale } => {
            let v = layout.full(vector, dev)?;
            rows.broadcast_add(&(v * *scale as f64)?)?
        }
        Action::ZeroAblate => rows.zeros_like()?,
        Action::MeanAblate { mean } => layout
            .full(mean, dev)?
            .broadcast_as(rows.shape())?
            .contiguous()?,
        Action::Scale { factor } => (&rows * *factor as f64)?,
        Action::ProjectOut { direction } => layout.project(&rows, direction, None)?,
        Action::Clamp { direction, value } => layout.project(&rows, direction, Some(*value))?,
        Action::Replace { values } => return replace(x, &x2, sel, values, &layout, &dims),
        Action::Capture | Action::LowRank(_) => return Ok(x.clone()),
    };
    let new = layout.keep(&new, &rows)?;
    Ok(scatter(&x2, sel, &new)?.reshape(dims)?)
}

/// Activation patching: each selected row whose position has values takes them.
fn replace(
    x: &Tensor,
    x2: &Tensor,
    sel: &[Selected],
    values: &std::collections::BTreeMap<usize, Vec<f32>>,
    layout: &Slices,
    dims: &[usize],
) -> Result<Tensor> {
    let hit: Vec<Selected> = sel
        .iter()
        .copied()
        .filter(|s| values.contains_key(&s.pos))
        .collect();
    if hit.is_empty() {
        return Ok(x.clone());
    }
    let mut flat = Vec::with_capacity(hit.len() * layout.width);
    for s in &hit {
        flat.extend(layout.full_vec(&values[&s.pos]));
    }
    let new = Tensor::from_vec(flat, (hit.len(), layout.width), x.device())?;
    let rows = gather(x2, &hit)?;
    let new = layout.keep(&new, &rows)?;
    Ok(scatter(x2, &hit, &new)?.reshape(dims)?)
}

/// Where in a row an intervention acts: the whole row, or the slices of some heads.
struct Slices {
    width: usize,
    /// The slice length (d_head with heads, else the width) and which slices are chosen.
    len: usize,
    chosen: Vec<bool>,
}

impl Slices {
    fn new(iv: &Intervention, width: usize, d_head: usize) -> Self {
        match &iv.heads {
            None => Slices {
                width,
                len: width,
                chosen: vec![true],
            },
            Some(hs) => {
                let n = width / d_head.max(1);
                Slices {
                    width,
                    len: d_head,
                    chosen: (0..n).map(|h| hs.contains(&h)).collect(),
                }
            }
        }
    }

    /// A vector given with the slice width repeats in every slice; a full-width one is used
    /// as it is.
    fn full_vec(&self, v: &[f32]) -> Vec<f32> {
        if v.len() == self.len && self.len != self.width {
            v.iter().copied().cycle().take(self.width).collect()
        } else {
            v.to_vec()
        }
    }

    fn full(&self, v: &[f32], dev: &Device) -> Result<Tensor> {
        Ok(Tensor::from_vec(self.full_vec(v), self.width, dev)?)
    }

    /// `new` on the chosen slices, `old` elsewhere.
    fn keep(&self, new: &Tensor, old: &Tensor) -> Result<Tensor> {
        if self.chosen.iter().all(|c| *c) {
            return Ok(new.clone());
        }
        let m: Vec<u8> = self
            .chosen
            .iter()
            .flat_map(|c| std::iter::repeat_n(u8::from(*c), self.len))
            .collect();
        let m = Tensor::from_vec(m, self.width, new.device())?.broadcast_as(new.shape())?;
        Ok(m.where_cond(new, old)?)
    }

    /// Set each slice's projection onto its part of `direction` (normalised) to `target`
    /// (0: project it out). A slice whose direction is zero is left alone.
    fn project(&self, rows: &Tensor, direction: &[f32], target: Option<f32>) -> Result<Tensor> {
        let n_slices = self.width / self.len;
        let dir = self.full_vec(direction);
        let mut unit = Vec::with_capacity(self.width);
        for s in dir.chunks(self.len) {
            // In f64, so that large entries do not overflow the length to infinity.
            let norm = s.iter().map(|d| (*d as f64).powi(2)).sum::<f64>().sqrt();
            unit.extend(s.iter().map(|d| match norm {
                0.0 => 0.0,
                n => (*d as f64 / n) as f32,
            }));
        }
        let n = rows.dim(0)?;
        let u = Tensor::from_vec(unit, (1, n_slices, self.len), rows.device())?;
        let r = rows.reshape((n, n_slices, self.len))?;
        let proj = r.broadcast_mul(&u)?.sum_keepdim(D::Minus1)?; // [n, slices, 1]
        let delta = (proj.affine(-1.0, target.unwrap_or(0.0) as f64))?;
        let out = r.broadcast_add(&delta.broadcast_mul(&u)?)?;
        Ok(out.reshape((n, self.width))?.to_dtype(DType::F32)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hooks::{Positions, Site, SiteKind};
    use std::collections::BTreeMap;

    const B: usize = 2;
    const SEQ: usize = 3;
    const W: usize = 8;
    const D_HEAD: usize = 4;

    fn x() -> Tensor {
        let v: Vec<f32> = (0..B * SEQ * W)
            .map(|i| ((i as f32) * 0.73).sin() * 2.0)
            .collect();
        Tensor::from_vec(v, (B, SEQ, W), &Device::Cpu).unwrap()
    }

    /// The same edit written row by row on the host: what each action means.
    fn by_hand(a: &Action, row: &mut [f32], pos: usize, slices: &[std::ops::Range<usize>]) {
        for r in slices {
            let (off, len) = (r.start, r.len());
            let part = |v: &[f32]| -> Vec<f32> {
                if v.len() == len {
                    v.to_vec()
                } else {
                    v[off..off + len].to_vec()
                }
            };
            let s = &mut row[r.clone()];
            match a {
                Action::Add { vector, scale } => s
                    .iter_mut()
                    .zip(part(vector))
                    .for_each(|(x, v)| *x += scale * v),
                Action::Replace { values } => {
                    if let Some(v) = values.get(&pos) {
                        s.copy_from_slice(&part(v))
                    }
                }
                Action::ZeroAblate => s.fill(0.0),
                Action::MeanAblate { mean } => s.copy_from_slice(&part(mean)),
                Action::Scale { factor } => s.iter_mut().for_each(|x| *x *= factor),
                Action::ProjectOut { direction } | Action::Clamp { direction, .. } => {
                    let d = part(direction);
                    let norm = d.iter().map(|v| v * v).sum::<f32>().sqrt();
                    let proj: f32 = s.iter().zip(&d).map(|(x, v)| x * v).sum::<f32>() / norm;
                    let target = if let Action::Clamp { value, .. } = a {
                        *value
                    } else {
                        0.0
                    };
                    s.iter_mut()
                        .zip(&d)
                        .for_each(|(x, v)| *x += (target - proj) * v / norm);
                }
                _ => {}
            }
        }
    }

    #[test]
    fn tensor_edits_equal_the_row_by_row_definition() {
        let head = vec![0.5, -1.0, 2.0, 0.25];
        let full: Vec<f32> = (0..W).map(|i| (i as f32 - 3.5) * 0.3).collect();
        let mut values = BTreeMap::new();
        values.insert(1, full.clone());
        let actions = vec![
            Action::Add {
                vector: head.clone(),
                scale: 1.5,
            },
            Action::Add {
                vector: full.clone(),
                scale: -0.5,
            },
            Action::Replace { values },
            Action::ZeroAblate,
            Action::MeanAblate { mean: full.clone() },
            Action::Scale { factor: 0.1 },
            Action::ProjectOut {
                direction: head.clone(),
            },
            Action::Clamp {
                direction: full.clone(),
                value: 3.0,
            },
        ];
        // Rows 0 and 1 at positions 1 and 2, head 1 only; then whole rows.
        let sel: Vec<Selected> = [(0, 1), (0, 2), (1, 1), (1, 2)]
            .iter()
            .map(|&(r, i)| Selected {
                flat: r * SEQ + i,
                pos: i,
            })
            .collect();
        for heads in [Some(vec![1]), None] {
            for a in &actions {
                if heads.is_none()
                    && matches!(a, Action::Add { vector, .. } | Action::ProjectOut { direction: vector } if vector.len() != W)
                {
                    continue;
                }
                let mut iv =
                    Intervention::new(Site::new(SiteKind::AttnZ, 0), Positions::All, a.clone());
                iv.heads = heads.clone();
                let got = edit(&iv, &x(), &sel, D_HEAD)
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap();
                let mut want = x().flatten_all().unwrap().to_vec1::<f32>().unwrap();
                let slices: Vec<_> = match &heads {
                    Some(hs) => hs.iter().map(|h| h * D_HEAD..(h + 1) * D_HEAD).collect(),
                    None => std::iter::once(0..W).collect(),
                };
                for s in &sel {
                    by_hand(a, &mut want[s.flat * W..(s.flat + 1) * W], s.pos, &slices);
                }
                for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                    assert!(
                        (g - w).abs() < 1e-5,
                        "{a:?} heads {heads:?} at {i}: {g} vs {w}"
                    );
                    let row = i / W;
                    let touched = sel.iter().any(|s| s.flat == row)
                        && slices.iter().any(|r| r.contains(&(i % W)));
                    if !touched {
                        assert_eq!(g.to_bits(), w.to_bits(), "{a:?}: untouched value changed");
                    }
                }
            }
        }
    }
}
