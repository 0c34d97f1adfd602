//! The per-call side of the hooks: [`Hooks`], which the forward pass calls at every site, and
//! the [`Captures`] it fills.

use super::tensor_ops::{self, Selected};
use super::{Action, Intervention, Site, Spec};
use crate::error::Result;
use candle_core::Tensor;
use std::collections::BTreeMap;

/// One captured row: the batch row, its absolute position, and the values.
#[derive(Clone, Debug)]
pub struct CapturedRow {
    pub batch: usize,
    pub pos: usize,
    pub values: Vec<f32>,
}

/// Activations recorded by `Capture` interventions, per site, in the order they were seen.
#[derive(Clone, Debug, Default)]
pub struct Captures {
    pub sites: BTreeMap<Site, Vec<CapturedRow>>,
}

impl Captures {
    pub fn rows(&self, site: Site) -> &[CapturedRow] {
        self.sites.get(&site).map(Vec::as_slice).unwrap_or(&[])
    }

    /// The rows of one batch row at `site`, ordered by position.
    pub fn by_position(&self, site: Site, batch: usize) -> BTreeMap<usize, Vec<f32>> {
        self.rows(site)
            .iter()
            .filter(|r| r.batch == batch)
            .map(|r| (r.pos, r.values.clone()))
            .collect()
    }

    /// The value of one batch row at one position.
    pub fn at(&self, site: Site, batch: usize, pos: usize) -> Option<&[f32]> {
        self.rows(site)
            .iter()
            .rev()
            .find(|r| r.batch == batch && r.pos == pos)
            .map(|r| r.values.as_slice())
    }
}

/// Where each batch row starts (left padding) and how long its prompt is.
#[derive(Clone, Debug)]
pub struct RowInfo {
    pub pad: usize,
    pub prompt_len: usize,
}

/// The per-call state handed to the forward pass: the spec, the captures it fills, and the
/// row layout of the current batch. The model calls [`Hooks::apply`] at each site.
pub struct Hooks<'a> {
    spec: &'a Spec,
    pub captures: Captures,
    rows: Vec<RowInfo>,
    /// Absolute position of the first column of the current call (the KV cache length).
    offset: usize,
    n_heads: usize,
    /// Prompt length of each batch row, when the caller knows it (generation does).
    prompt_lens: Vec<usize>,
}

impl<'a> Hooks<'a> {
    pub fn new(spec: &'a Spec, n_heads: usize) -> Self {
        Hooks {
            spec,
            captures: Captures::default(),
            rows: vec![],
            offset: 0,
            n_heads,
            prompt_lens: vec![],
        }
    }

    /// Declare each batch row's prompt length, so `prompt`, `generated` and `last` positions
    /// keep their meaning while tokens are generated.
    pub fn with_prompt_lens(mut self, lens: Vec<usize>) -> Self {
        self.prompt_lens = lens;
        self
    }

    pub fn prompt_len(&self, row: usize) -> Option<usize> {
        self.prompt_lens.get(row).copied()
    }

    pub fn spec(&self) -> &Spec {
        self.spec
    }

    /// Set the row layout for the next forward call.
    pub fn set_rows(&mut self, rows: Vec<RowInfo>, offset: usize) {
        self.rows = rows;
        self.offset = offset;
    }

    /// Move the absolute position of the first column (when the model narrows the sequence).
    pub fn set_offset(&mut self, offset: usize) {
        self.offset = offset;
    }

    /// Run the spec's interventions for `site` on `x` ([batch, seq, width]), in spec order,
    /// as tensor operations on x's device; only captured rows are copied to the host.
    pub fn apply(&mut self, site: Site, x: Tensor) -> Result<Tensor> {
        let spec = self.spec;
        let mut x = x;
        for iv in spec.interventions.iter().filter(|iv| iv.site == site) {
            if let Action::LowRank(edit) = &iv.action {
                let mask = self.mask(iv, &x)?;
                x = edit.apply(&x, mask.as_ref())?;
                continue;
            }
            let sel = self.selected(iv, &x)?;
            if sel.is_empty() {
                continue;
            }
            if let Action::Capture = iv.action {
                self.capture(site, &x, &sel)?;
                continue;
            }
            let d_head = x.dim(2)? / self.n_heads.max(1);
            x = tensor_ops::edit(iv, &x, &sel, d_head)?;
        }
        Ok(x)
    }

    /// The positions of `x` where `iv` acts, in row-major order.
    fn selected(&self, iv: &Intervention, x: &Tensor) -> Result<Vec<Selected>> {
        let (b, seq, _) = x.dims3()?;
        Ok((0..b)
            .flat_map(|r| (0..seq).map(move |i| (r, i)))
            .filter_map(|(r, i)| {
                let pos = self.selects(iv, r, i)?;
                Some(Selected {
                    flat: r * seq + i,
                    pos,
                })
            })
            .collect())
    }

    /// Copy the selected rows of `x` to the host, as they are now.
    fn capture(&mut self, site: Site, x: &Tensor, sel: &[Selected]) -> Result<()> {
        let (_, seq, width) = x.dims3()?;
        let rows = tensor_ops::gather(&x.reshape(((), width))?, sel)?
            .to_dtype(candle_core::DType::F32)?
            .to_vec2::<f32>()?;
        let out = self.captures.sites.entry(site).or_default();
        for (s, values) in sel.iter().zip(rows) {
            out.push(CapturedRow {
                batch: s.flat / seq,
                pos: s.pos,
                values,
            });
        }
        Ok(())
    }

    /// The row layout of batch row `r`.
    fn row(&self, r: usize) -> RowInfo {
        self.rows.get(r).cloned().unwrap_or(RowInfo {
            pad: 0,
            prompt_len: usize::MAX,
        })
    }

    /// The absolute position of column `i` of row `r` when `iv` acts there.
    fn selects(&self, iv: &Intervention, r: usize, i: usize) -> Option<usize> {
        let info = self.row(r);
        let pos = (self.offset + i).checked_sub(info.pad)?;
        let hit = iv.positions.contains(pos, info.prompt_len)
            && iv.rows.as_ref().is_none_or(|rs| rs.contains(&r));
        hit.then_some(pos)
    }

    /// `[b, seq]` ones where `iv` acts, zeros elsewhere; None when it acts everywhere.
    fn mask(&self, iv: &Intervention, x: &Tensor) -> Result<Option<Tensor>> {
        let (b, seq, _) = x.dims3()?;
        let sel = self.selected(iv, x)?;
        if sel.len() == b * seq {
            return Ok(None);
        }
        let mut m = vec![0f32; b * seq];
        for s in sel {
            m[s.flat] = 1.0;
        }
        let m = Tensor::from_vec(m, (b, seq), x.device())?.to_dtype(x.dtype())?;
        Ok(Some(m))
    }
}
