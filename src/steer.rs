//! Steering vectors: reading one from a file and turning it into a [`Spec`]. A vector file is
//! a JSON array of numbers or a `.safetensors` file holding exactly one 1-D tensor. Steering
//! from probe files builds on this in the steering issue.

use crate::error::{Error, Result};
use crate::hooks::{Action, Intervention, Positions, Site, Spec};
use std::path::Path;

/// Read a steering vector from a JSON array or a one-tensor safetensors file.
pub fn read_vector(path: &Path) -> Result<Vec<f32>> {
    let is_st = path.extension().is_some_and(|e| e == "safetensors");
    if is_st {
        let map = candle_core::safetensors::load(path, &candle_core::Device::Cpu)
            .map_err(|e| Error::file(path, format!("not a readable safetensors file: {e}")))?;
        if map.len() != 1 {
            let names: Vec<_> = map.keys().cloned().collect();
            return Err(Error::file(
                path,
                format!(
                    "expected exactly one tensor, found {}: {names:?}",
                    map.len()
                ),
            ));
        }
        let t = map
            .into_values()
            .next()
            .ok_or_else(|| Error::file(path, "empty"))?;
        return Ok(t
            .flatten_all()?
            .to_dtype(candle_core::DType::F32)?
            .to_vec1::<f32>()?);
    }
    let text = std::fs::read_to_string(path).map_err(|e| Error::file(path, e))?;
    let v: Vec<f32> = serde_json::from_str(&text).map_err(|e| {
        Error::file(
            path,
            format!(
                "expected a JSON array of numbers (line {}, column {}): {e}",
                e.line(),
                e.column()
            ),
        )
    })?;
    if v.is_empty() {
        return Err(Error::file(path, "the vector is empty"));
    }
    Ok(v)
}

/// A spec that adds `alpha * vector` at each of `sites` on `positions`.
pub fn add_spec(sites: &[Site], vector: &[f32], alpha: f32, positions: Positions) -> Spec {
    let mut spec = Spec::new();
    for s in sites {
        spec.push(Intervention::new(
            *s,
            positions.clone(),
            Action::Add {
                vector: vector.to_vec(),
                scale: alpha,
            },
        ));
    }
    spec
}
