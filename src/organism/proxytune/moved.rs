//! Which layers a tuning moved: each block's weights, relative to their size, and the
//! residual stream at each block's output on the old facts' queries.

use crate::error::{Error, Result};
use crate::hooks::{Positions, Site, Spec};
use crate::model::Model;
use crate::organism::modularity::{each_batch, Queries};
use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;

/// How far one tuned model is from where it started.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Moved {
    pub model: String,
    /// Per block, ‖after − before‖ / ‖before‖ over the block's weights.
    pub weights: Vec<f64>,
    /// The same for the (tied) embedding.
    pub embedding: f64,
    /// Per block, the mean of 1 − cos(before, after) of the residual after the block at the
    /// query's last token.
    pub residual: Vec<f64>,
}

fn weights_of(dir: &Path) -> Result<HashMap<String, Tensor>> {
    let p = dir.join("model.safetensors");
    candle_core::safetensors::load(&p, &Device::Cpu).map_err(|e| Error::file(&p, e.to_string()))
}

/// Relative change of the weights whose names start with `prefix`.
fn relative(a: &HashMap<String, Tensor>, b: &HashMap<String, Tensor>, prefix: &str) -> Result<f64> {
    let (mut diff, mut norm) = (0.0f64, 0.0f64);
    for (k, t) in a.iter().filter(|(k, _)| k.starts_with(prefix)) {
        let u = b
            .get(k)
            .ok_or_else(|| Error::Invalid(format!("the tuned model lacks {k}")))?;
        diff += f64::from((u - t)?.sqr()?.sum_all()?.to_scalar::<f32>()?);
        norm += f64::from(t.sqr()?.sum_all()?.to_scalar::<f32>()?);
    }
    Ok((diff / norm.max(f64::MIN_POSITIVE)).sqrt())
}

/// Per block and for the embedding, how far the weights in `after` are from `before`'s.
pub fn weight_change(before: &Path, after: &Path, layers: usize) -> Result<(Vec<f64>, f64)> {
    let (a, b) = (weights_of(before)?, weights_of(after)?);
    let per = (0..layers)
        .map(|l| relative(&a, &b, &format!("model.layers.{l}.")))
        .collect::<Result<Vec<f64>>>()?;
    Ok((per, relative(&a, &b, "model.embed_tokens.")?))
}

/// The residual after each block at the last token of every query, `[layer][query]`.
fn residuals(model: &Model, q: &Queries, batch: usize) -> Result<Vec<Vec<Vec<f32>>>> {
    let n = model.cfg().n_layers;
    let sites: Vec<Site> = (0..n).map(Site::resid_post).collect();
    let spec = Spec::capture(&sites, Positions::Last);
    let mut out = vec![vec![]; n];
    each_batch(model, q, &spec, batch, |_, caps| {
        for (l, s) in sites.iter().enumerate() {
            let mut r: Vec<_> = caps.rows(*s).to_vec();
            r.sort_by_key(|x| x.batch);
            out[l].extend(r.into_iter().map(|x| x.values));
        }
        Ok(())
    })?;
    Ok(out)
}

/// Per block, the mean of 1 − cos between `before`'s and `after`'s residuals on `q`.
pub fn residual_change(
    before: &Model,
    after: &Model,
    q: &Queries,
    batch: usize,
) -> Result<Vec<f64>> {
    let (a, b) = (residuals(before, q, batch)?, residuals(after, q, batch)?);
    Ok(a.iter()
        .zip(&b)
        .map(|(x, y)| {
            let d: f64 = x
                .iter()
                .zip(y)
                .map(|(u, v)| 1.0 - crate::stats::cosine(u, v))
                .sum();
            d / x.len().max(1) as f64
        })
        .collect())
}
