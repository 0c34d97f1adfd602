//! Learned low-rank interventions (LoReFT, Wu et al. 2024) that make the model honour its
//! context, trained with candle's autograd through our own forward pass.
//!
//! An edit `h + Rᵀ(W h + b − R h)` sits at one or a few `hook_resid_post` sites and acts on
//! every position, prompt and generated alike. Training (on the train split only) asks for:
//! - the context's answer after a prompt whose context contradicts memory (cross-entropy);
//! - the true answer after a prompt whose context agrees with memory (cross-entropy);
//! - after a context about another subject (irrelevant), the answer the unedited model gives
//!   the same query closed-book (cross-entropy);
//! - nothing changed without a context: the KL divergence from the unedited model's next-token
//!   distributions, closed-book from the prompt's last token on, and at every position of
//!   ordinary text.
//!
//! The file is safetensors: `{site}.R`, `{site}.W`, `{site}.b` per site, and the settings and
//! training record as JSON in the header's metadata under `ctxsteer`.

use crate::data::Form;
use crate::error::{Error, Result};
use crate::hooks::{Action, Intervention, LowRank, Positions, Site, Spec};
use crate::model::Plan;
use crate::model::{Model, ModelId};

mod train;
use candle_core::Device;
use serde::{Deserialize, Serialize};
use std::path::Path;
pub use train::{joined_passages, train, TrainEvent, TrainOptions};

/// The settings and training record saved with the tensors.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ReftMeta {
    pub version: u32,
    pub model: ModelId,
    /// Site names, in the order the edits are applied.
    pub sites: Vec<String>,
    pub rank: usize,
    pub train: TrainRecord,
}

/// How an edit was trained, for the record.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct TrainRecord {
    pub data: String,
    pub forms: Vec<Form>,
    pub conflicts: usize,
    pub true_contexts: usize,
    pub closed_book: usize,
    pub neutral: usize,
    /// Irrelevant contexts (a query after a context about another subject), answered as the
    /// unedited model answers closed-book; 0 in edits trained before they were.
    #[serde(default)]
    pub irrelevant: usize,
    pub epochs: usize,
    pub steps: usize,
    pub lr: f64,
    pub keep_weight: f64,
    pub seed: u64,
    pub seconds: f64,
    /// Mean loss per epoch: (answer cross-entropy, keep KL: closed-book plus neutral text).
    pub losses: Vec<(f64, f64)>,
    /// Mean loss per epoch by part: answer cross-entropy, closed-book KL, neutral-text KL.
    #[serde(default)]
    pub loss_parts: Vec<[f64; 3]>,
    #[serde(default)]
    pub command: String,
}

/// Trained low-rank edits, ready to apply.
#[derive(Clone, Debug)]
pub struct Reft {
    pub edits: Vec<(Site, LowRank)>,
    pub meta: ReftMeta,
}

/// The first 8 hex digits of the sha256 of the edits' values: tells two trained edits apart in
/// labels and resume keys.
fn fingerprint(edits: &[(Site, LowRank)]) -> Result<String> {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    for (site, e) in edits {
        h.update(site.to_string().as_bytes());
        for t in [&e.r, &e.w, &e.b] {
            for x in t.flatten_all()?.to_vec1::<f32>()? {
                h.update(x.to_le_bytes());
            }
        }
    }
    Ok(format!("{:x}", h.finalize())[..8].to_string())
}

/// The safetensors metadata key that marks a file as a ctxsteer edit.
pub const META_KEY: &str = "ctxsteer";
const VERSION: u32 = 1;

impl Reft {
    /// The first 8 hex digits of the sha256 of the edits' values.
    pub fn fingerprint(&self) -> Result<String> {
        fingerprint(&self.edits)
    }

    /// The spec that applies every edit at every position.
    pub fn spec(&self) -> Spec {
        let mut spec = Spec::new();
        for (site, edit) in &self.edits {
            spec.push(Intervention::new(
                *site,
                Positions::All,
                Action::LowRank(edit.clone()),
            ));
        }
        spec
    }

    /// The spec that applies every edit, its change scaled by `scale`, at `positions`.
    pub fn spec_at(&self, scale: f32, positions: &Positions) -> Result<Spec> {
        let mut spec = Spec::new();
        for (site, edit) in &self.edits {
            spec.push(Intervention::new(
                *site,
                positions.clone(),
                Action::LowRank(edit.scaled(scale)?),
            ));
        }
        Ok(spec)
    }

    /// Write the tensors and the metadata, atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut tensors = Vec::new();
        for (site, e) in &self.edits {
            for (k, t) in [("R", &e.r), ("W", &e.w), ("b", &e.b)] {
                tensors.push((format!("{site}.{k}"), t.to_device(&Device::Cpu)?));
            }
        }
        let meta = serde_json::to_string(&self.meta).map_err(|e| Error::file(path, e))?;
        let md = std::collections::HashMap::from([(META_KEY.to_string(), meta)]);
        // Serialized in memory and written like every other output (the crate's own file
        // writer creates files readable by their owner only).
        let bytes = safetensors::serialize(tensors.iter().map(|(k, t)| (k, t)), Some(md))
            .map_err(|e| Error::file(path, e))?;
        crate::atomic::write(path, &bytes)
    }

    /// Read a file written by [`Reft::save`], checking it belongs to `model`.
    pub fn load(path: &Path, model: &Model) -> Result<Reft> {
        let bytes = std::fs::read(path).map_err(|e| Error::file(path, e))?;
        let meta = read_meta(path, &bytes)?;
        let id = model.identity()?;
        if meta.model.sha256 != id.sha256 {
            return Err(Error::file(
                path,
                format!(
                    "trained for {} (sha256 {}), not for the loaded model {} ({})",
                    meta.model.file, meta.model.sha256, id.file, id.sha256
                ),
            ));
        }
        let map = candle_core::safetensors::load_buffer(&bytes, model.device())
            .map_err(|e| Error::file(path, e))?;
        let mut edits = Vec::new();
        for name in &meta.sites {
            let site = model.site(name).map_err(|e| Error::file(path, e))?;
            let get = |k: &str| edit_tensor(path, &map, name, k);
            let edit =
                LowRank::new(get("R")?, get("W")?, get("b")?).map_err(|e| Error::file(path, e))?;
            edits.push((site, edit));
        }
        let reft = Reft { edits, meta };
        model
            .validate(&reft.spec())
            .map_err(|e| Error::file(path, e))?;
        Ok(reft)
    }
}

/// An edit file's metadata, its sites once each; an error unless it is a ctxsteer edit of
/// this version.
fn read_meta(path: &Path, bytes: &[u8]) -> Result<ReftMeta> {
    let (_, header) = safetensors::SafeTensors::read_metadata(bytes)
        .map_err(|e| Error::file(path, format!("not a safetensors file: {e}")))?;
    let text = header
        .metadata()
        .as_ref()
        .and_then(|m| m.get(META_KEY))
        .ok_or_else(|| {
            Error::file(
                path,
                format!("no `{META_KEY}` metadata: not a ctxsteer edit"),
            )
        })?;
    let mut meta: ReftMeta = serde_json::from_str(text)
        .map_err(|e| Error::file(path, format!("bad `{META_KEY}` metadata: {e}")))?;
    // A site listed twice is one edit, applied once.
    meta.sites = crate::hooks::once_each(std::mem::take(&mut meta.sites));
    if meta.version != VERSION {
        return Err(Error::file(
            path,
            format!("version {} is not supported (want {VERSION})", meta.version),
        ));
    }
    Ok(meta)
}

/// The F32 tensor `NAME.K` of an edit file.
fn edit_tensor(
    path: &Path,
    map: &std::collections::HashMap<String, candle_core::Tensor>,
    name: &str,
    k: &str,
) -> Result<candle_core::Tensor> {
    let t = map
        .get(&format!("{name}.{k}"))
        .ok_or_else(|| Error::file(path, format!("missing tensor `{name}.{k}`")))?;
    if t.dtype() != candle_core::DType::F32 {
        return Err(Error::file(
            path,
            format!(
                "tensor `{name}.{k}` is {:?}; an edit's tensors are F32, as `reft \
                 train` writes them",
                t.dtype()
            ),
        ));
    }
    Ok(t.clone())
}

/// A trained edit applied with its change scaled and only at some positions
/// (`--steer EDIT --alpha S --steer-positions P`).
#[derive(Clone, Debug)]
pub struct ScaledEdit {
    pub reft: Reft,
    pub scale: f32,
    pub positions: Positions,
}

impl Plan for ScaledEdit {
    fn spec_for(&self, _: &Model, _: &[Vec<u32>]) -> Result<Spec> {
        self.reft.spec_at(self.scale, &self.positions)
    }
    fn describe(&self) -> String {
        format!(
            "{} x{} at {:?} positions",
            self.reft.describe(),
            self.scale,
            self.positions
        )
    }
}

impl Plan for Reft {
    fn spec_for(&self, _: &Model, _: &[Vec<u32>]) -> Result<Spec> {
        Ok(self.spec())
    }
    fn describe(&self) -> String {
        let fp = fingerprint(&self.edits).unwrap_or_else(|_| "?".into());
        format!(
            "LoReFT rank {} at {} (#{fp})",
            self.meta.rank,
            self.meta.sites.join(",")
        )
    }
}
