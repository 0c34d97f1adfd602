//! llama.cpp control vectors: `direction.N` tensors in a GGUF file, added to block N's output.

use super::{Mode, SteerSite, Steering};
use crate::error::{Error, Result};
use crate::hooks::{Positions, Site, SiteKind};
use std::path::Path;

/// `(layer, vector)` pairs, as a control vector holds them.
pub type LayerVectors = Vec<(usize, Vec<f32>)>;

/// Write a llama.cpp control vector: `direction.N` (F32, 1-D) is added to the output of block N.
pub fn write_cvec(
    path: &Path,
    model_hint: &str,
    n_layers: usize,
    dirs: &[(usize, Vec<f32>)],
) -> Result<()> {
    use candle_core::quantized::gguf_file::{self, Value};
    use candle_core::quantized::{GgmlDType, QTensor};
    if let Some((l, _)) = dirs.iter().find(|(l, _)| *l == 0 || *l >= n_layers) {
        return Err(Error::Invalid(format!(
            "a control vector has directions for layers 1..={} only (llama.cpp never steers layer 0); got layer {l}",
            n_layers - 1
        )));
    }
    let md = [
        (
            "general.architecture",
            Value::String("controlvector".into()),
        ),
        ("controlvector.model_hint", Value::String(model_hint.into())),
        (
            "controlvector.layer_count",
            Value::I32((n_layers - 1) as i32),
        ),
    ];
    let tensors: Vec<(String, QTensor)> = dirs
        .iter()
        .map(|(l, v)| {
            let t = candle_core::Tensor::from_vec(v.clone(), v.len(), &candle_core::Device::Cpu)?;
            Ok((
                format!("direction.{l}"),
                QTensor::quantize(&t, GgmlDType::F32)?,
            ))
        })
        .collect::<Result<_>>()?;
    let md_refs: Vec<(&str, &Value)> = md.iter().map(|(k, v)| (*k, v)).collect();
    let t_refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    crate::atomic::replace_with(path, |tmp| {
        let mut f = std::fs::File::create(tmp).map_err(|e| Error::file(tmp, e))?;
        gguf_file::write(&mut f, &md_refs, &t_refs).map_err(|e| Error::file(tmp, e))
    })
}

/// Read a llama.cpp control vector: its model hint and `(layer, vector)` pairs.
pub fn read_cvec(path: &Path) -> Result<(String, LayerVectors)> {
    use candle_core::quantized::gguf_file;
    crate::model::check_gguf(path)?;
    let mut f = std::fs::File::open(path).map_err(|e| Error::file(path, e))?;
    let ct = gguf_file::Content::read(&mut f)
        .map_err(|e| Error::file(path, format!("not a GGUF file: {e}")))?;
    let arch = ct
        .metadata
        .get("general.architecture")
        .and_then(|v| v.to_string().ok())
        .cloned()
        .unwrap_or_default();
    if arch != "controlvector" {
        return Err(Error::file(
            path,
            format!("general.architecture is `{arch}`, not `controlvector`"),
        ));
    }
    let hint = ct
        .metadata
        .get("controlvector.model_hint")
        .and_then(|v| v.to_string().ok())
        .cloned()
        .unwrap_or_default();
    let mut dirs = Vec::new();
    let names: Vec<String> = ct.tensor_infos.keys().cloned().collect();
    for name in names {
        let layer: usize = name
            .strip_prefix("direction.")
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| {
                Error::file(
                    path,
                    format!("unexpected tensor `{name}` (want direction.N)"),
                )
            })?;
        let t = ct
            .tensor(&mut f, &name, &candle_core::Device::Cpu)?
            .dequantize(&candle_core::Device::Cpu)?;
        dirs.push((layer, t.flatten_all()?.to_vec1::<f32>()?));
    }
    dirs.sort_by_key(|(l, _)| *l);
    Ok((hint, dirs))
}

impl Steering {
    /// Steering that adds a control vector's directions (times `alpha`) at blocks.N.hook_resid_post.
    pub fn from_cvec(
        path: &Path,
        alpha: f32,
        positions: Positions,
        n_layers: usize,
    ) -> Result<Steering> {
        let (_, dirs) = read_cvec(path)?;
        let mut sites = Vec::new();
        for (l, v) in dirs {
            if l >= n_layers {
                return Err(Error::file(
                    path,
                    format!(
                        "direction.{l} is past this model's last layer {}",
                        n_layers - 1
                    ),
                ));
            }
            sites.push(SteerSite {
                site: Site::resid_post(l),
                direction: v,
                sigma: 1.0,
                mean_pos: 0.0,
                norm: 1.0,
                head: None,
            });
        }
        Ok(Steering {
            sites,
            mode: Mode::Add,
            alpha,
            positions,
            gate: None,
            label: format!("control vector {} x{alpha}", path.display()),
        })
    }

    /// The directions scaled as adding applies them, for export as a control vector. A
    /// control vector is added to whole block outputs, so only `hook_resid_post` probes of whole
    /// sites can be exported; anything else (a head's slice, another site) is an error.
    pub fn as_cvec(&self) -> Result<LayerVectors> {
        self.sites
            .iter()
            .map(|s| {
                if s.site.kind != SiteKind::ResidPost || s.head.is_some() {
                    return Err(Error::Invalid(format!(
                        "a control vector holds directions of blocks.N.hook_resid_post only;                          this steering acts at {}{}",
                        s.site,
                        s.head.map_or(String::new(), |h| format!(" head {h}"))
                    )));
                }
                let scale = s.add_scale(self.mode, self.alpha);
                Ok((s.site.layer, s.direction.iter().map(|x| x * scale).collect()))
            })
            .collect()
    }
}
