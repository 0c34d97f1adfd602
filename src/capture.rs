//! Activation capture: run a dataset through the model and write the activations at chosen
//! sites and positions to disk as safetensors shards (one `[n, width]` tensor per site) with a
//! JSONL index of ids and labels.
//!
//! Capture streams: one shard is held in memory at a time. A shard is written to a temporary
//! file and renamed, and its index rows are then recorded in the capture's journal
//! (`shards.jsonl`, [`Journal`]), so a shard counts only when it is whole. A rerun with the
//! same settings skips the finished shards and goes on.

use crate::data::{Form, Item};
use crate::error::{Error, Result};
use crate::hooks::{Positions, Site, Spec};
use crate::journal::Journal;
use crate::label::ItemLabel;
use crate::model::{Batch, LogitsAt, Model};
use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

crate::choice_enum! {
/// Which position of each prompt is recorded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PosMode {
    /// The prompt's last token, where the answer is about to be produced.
    Last = "last",
    /// The last token of the subject's last mention (falls back to `last` if absent).
    SubjectLast = "subject-last",
    /// The mean over all prompt tokens.
    Mean = "mean",
}
}

impl PosMode {
    /// What a forward pass must capture to read this mode: the last position, or all of them.
    pub fn captured(self) -> Positions {
        match self {
            PosMode::Last => Positions::Last,
            _ => Positions::All,
        }
    }

    /// The token a prompt of `n` tokens is read at: its last, or its subject's last
    /// (`subject_last`; the last where that is None or out of range); None for the mean.
    pub fn token(self, n: usize, subject_last: Option<usize>) -> Option<usize> {
        match self {
            PosMode::Last => Some(n - 1),
            PosMode::SubjectLast => Some(subject_last.filter(|t| *t < n).unwrap_or(n - 1)),
            PosMode::Mean => None,
        }
    }
}

/// Everything that decides what a capture folder holds; a rerun must match it to resume.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct CaptureMeta {
    pub model: String,
    /// The model file's sha256 (absent in captures written before it was recorded).
    #[serde(default)]
    pub model_sha256: String,
    pub weights: String,
    pub data: String,
    /// A hash of the captured items' content, so that a changed data file is not resumed.
    #[serde(default)]
    pub data_hash: String,
    pub n_items: usize,
    pub sites: Vec<String>,
    pub positions: PosMode,
    pub form: Form,
    pub with_context: bool,
    pub shard_size: usize,
    /// A description of any steering active during capture.
    pub steering: Option<String>,
    /// The labels file whose labels the index carries, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<String>,
    #[serde(default)]
    pub complete: bool,
}

/// One captured row in the index.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct IndexRow {
    pub id: String,
    pub relation: String,
    pub subject: String,
    #[serde(default)]
    pub split: Option<crate::data::Split>,
    #[serde(default)]
    pub variant: Option<crate::data::Variant>,
    pub shard: usize,
    pub row: usize,
    pub n_tokens: usize,
    /// The recorded position (absolute token index).
    pub position: Option<usize>,
    #[serde(default)]
    pub label: Option<crate::label::Label>,
    #[serde(default)]
    pub known: Option<bool>,
    /// Closed-book log-probability of the prior answer (from the labels).
    #[serde(default)]
    pub prior_logp: Option<f32>,
}

/// Settings of a capture run.
pub struct CaptureOptions {
    pub sites: Vec<Site>,
    pub positions: PosMode,
    pub form: Form,
    pub with_context: bool,
    pub batch_size: usize,
    pub shard_size: usize,
}

impl CaptureMeta {
    /// The metadata of capturing `n_items` items of `data` from `model` with `opts`; `steering`
    /// describes the interventions (None for none), `labels` names the labels file.
    pub fn new(
        model: &crate::model::Model,
        data: String,
        items: &[Item],
        opts: &CaptureOptions,
        steering: Option<String>,
        labels: Option<String>,
    ) -> Result<CaptureMeta> {
        Ok(CaptureMeta {
            model: model.name(),
            model_sha256: model.identity()?.sha256,
            weights: format!("{:?}", model.weights).to_lowercase(),
            data,
            data_hash: crate::data::content_hash(items),
            n_items: items.len(),
            sites: opts.sites.iter().map(|s| s.to_string()).collect(),
            positions: opts.positions,
            form: opts.form,
            with_context: opts.with_context,
            shard_size: opts.shard_size,
            steering,
            labels,
            complete: false,
        })
    }

    /// What differs between this capture's settings and `other`'s, in words.
    fn differences(&self, other: &CaptureMeta) -> Vec<&'static str> {
        let checks = [
            (
                self.model != other.model || self.model_sha256 != other.model_sha256,
                "model",
            ),
            (self.weights != other.weights, "weights"),
            (self.data != other.data, "data file"),
            (self.data_hash != other.data_hash, "data content"),
            (self.n_items != other.n_items, "number of items"),
            (self.sites != other.sites, "sites"),
            (self.positions != other.positions, "positions"),
            (self.form != other.form, "form"),
            (self.with_context != other.with_context, "context"),
            (self.shard_size != other.shard_size, "shard size"),
            (self.steering != other.steering, "steering"),
            (self.labels != other.labels, "labels"),
        ];
        checks.iter().filter(|(d, _)| *d).map(|(_, w)| *w).collect()
    }
}

fn shard_path(dir: &Path, k: usize, ext: &str) -> PathBuf {
    dir.join(format!("shard-{k:05}.{ext}"))
}

/// Shard `k`'s key in the capture's journal of finished shards.
fn shard_key(k: usize) -> String {
    format!("shard-{k:05}")
}

/// Whether shard `k` is finished: its activations are written and its index rows recorded. A
/// shard an earlier version finished (its rows in `shard-K.jsonl`) is recorded in the journal.
fn finished(journal: &mut Journal<Vec<IndexRow>>, dir: &Path, k: usize) -> Result<bool> {
    if !shard_path(dir, k, "safetensors").exists() {
        return Ok(false);
    }
    if journal.contains(&shard_key(k)) {
        return Ok(true);
    }
    let legacy = shard_path(dir, k, "jsonl");
    if !legacy.exists() {
        return Ok(false);
    }
    let rows = read_index(&legacy)?;
    journal.record(vec![(shard_key(k), rows)])?;
    Ok(true)
}

pub use crate::label::subject_last_token;

/// The text and token ids of an item's prompt under the capture settings.
fn prompt(model: &Model, item: &Item, opts: &CaptureOptions) -> Result<(String, Vec<u32>)> {
    let q = item.query(opts.form, opts.with_context);
    let text = model.prompt_text(&q, opts.form == Form::Chat)?;
    let ids = model.tokenizer.encode_prompt(&text)?;
    Ok((text, ids))
}

/// Capture `items` into `dir`. `steer` is applied during the runs (empty for a plain
/// capture). Returns the finished meta.
#[allow(clippy::too_many_arguments)]
pub fn capture(
    model: &Model,
    items: &[Item],
    labels: Option<&HashMap<String, ItemLabel>>,
    opts: &CaptureOptions,
    steer: &dyn crate::model::Plan,
    meta: CaptureMeta,
    dir: &Path,
    progress: &mut dyn FnMut(usize),
) -> Result<CaptureMeta> {
    std::fs::create_dir_all(dir).map_err(|e| Error::file(dir, e))?;
    let meta_path = dir.join("meta.json");
    if meta_path.exists() {
        let text = std::fs::read_to_string(&meta_path).map_err(|e| Error::file(&meta_path, e))?;
        let old: CaptureMeta =
            serde_json::from_str(&text).map_err(|e| Error::file(&meta_path, e))?;
        let differs = meta.differences(&old);
        if !differs.is_empty() {
            return Err(Error::file(
                dir,
                format!(
                    "this folder holds a capture that differs in its {}; use another output \
                     folder or delete it",
                    differs.join(", ")
                ),
            ));
        }
    }
    let to_json =
        |m: &CaptureMeta| serde_json::to_vec_pretty(m).map_err(|e| Error::Invalid(e.to_string()));
    crate::data::write_atomic(&meta_path, &to_json(&meta)?)?;

    // Finished shards: the settings matched, so what the journal holds is this capture's.
    let mut journal = Journal::<Vec<IndexRow>>::open(&dir.join("shards.jsonl"), true)?;
    let chunks: Vec<&[Item]> = items.chunks(opts.shard_size.max(1)).collect();
    for (k, chunk) in chunks.iter().enumerate() {
        if finished(&mut journal, dir, k)? {
            progress(chunk.len());
            continue;
        }
        let rows = capture_shard(model, chunk, labels, opts, steer, dir, k, progress)?;
        journal.record(vec![(shard_key(k), rows)])?;
    }
    // The full index, in item order.
    let mut index = Vec::with_capacity(items.len());
    for k in 0..chunks.len() {
        index.extend(journal.get(&shard_key(k)).into_iter().flatten().cloned());
    }
    crate::data::write_jsonl(&dir.join("index.jsonl"), &index)?;
    let done = CaptureMeta {
        complete: true,
        ..meta
    };
    crate::data::write_atomic(&meta_path, &to_json(&done)?)?;
    Ok(done)
}

#[allow(clippy::too_many_arguments)]
fn capture_shard(
    model: &Model,
    items: &[Item],
    labels: Option<&HashMap<String, ItemLabel>>,
    opts: &CaptureOptions,
    steer: &dyn crate::model::Plan,
    dir: &Path,
    k: usize,
    progress: &mut dyn FnMut(usize),
) -> Result<Vec<IndexRow>> {
    let cfg = model.cfg();
    let subjects = opts.positions == PosMode::SubjectLast || steer.reads_subjects();
    let (prompts, subject_last) = prompts_of(model, items, opts, subjects)?;
    let mut order: Vec<usize> = (0..items.len()).collect();
    order.sort_by_key(|i| prompts[*i].1.len());
    // rows[site][item] = values
    let mut rows: Vec<Vec<Vec<f32>>> = vec![vec![vec![]; items.len()]; opts.sites.len()];
    let mut positions = vec![None; items.len()];
    let pad = model.tokenizer.eos_id.unwrap_or(0);
    for batch_idx in order.chunks(opts.batch_size.max(1)) {
        let ids: Vec<Vec<u32>> = batch_idx.iter().map(|i| prompts[*i].1.clone()).collect();
        // Steering first, then the captures, so captures see the steered values.
        let subjects: Vec<Option<usize>> = batch_idx.iter().map(|i| subject_last[*i]).collect();
        let mut spec = steer.spec_for_subjects(model, &ids, &subjects)?;
        spec.interventions
            .extend(Spec::capture(&opts.sites, opts.positions.captured()).interventions);
        let (_, caps) = model.run(&Batch::left_padded(&ids, pad), &spec, LogitsAt::Last)?;
        for (r, &i) in batch_idx.iter().enumerate() {
            let at = opts.positions.token(ids[r].len(), subject_last[i]);
            positions[i] = at;
            for (s, site) in opts.sites.iter().enumerate() {
                rows[s][i] = row_at(&caps, *site, r, at, cfg.site_width(*site))?;
            }
        }
        progress(batch_idx.len());
    }
    save_rows(
        cfg,
        &opts.sites,
        &rows,
        items.len(),
        &shard_path(dir, k, "safetensors"),
    )?;
    Ok(index_rows(items, labels, &prompts, &positions, k))
}

/// Each item's prompt (text and ids) and where its subject's last token is in it.
type Prompts = (Vec<(String, Vec<u32>)>, Vec<Option<usize>>);

/// The items' prompts, and their subjects' last tokens where `subjects` asks (else None).
fn prompts_of(
    model: &Model,
    items: &[Item],
    opts: &CaptureOptions,
    subjects: bool,
) -> Result<Prompts> {
    let prompts: Vec<(String, Vec<u32>)> = items
        .iter()
        .map(|it| prompt(model, it, opts))
        .collect::<Result<_>>()?;
    let subject_last = match subjects {
        true => prompts
            .iter()
            .zip(items)
            .map(|((text, _), it)| subject_last_token(model, text, &it.subject))
            .collect::<Result<_>>()?,
        false => vec![None; items.len()],
    };
    Ok((prompts, subject_last))
}

/// Batch row `r`'s captured values at `site`: at position `at`, or averaged over positions.
fn row_at(
    caps: &crate::hooks::Captures,
    site: Site,
    r: usize,
    at: Option<usize>,
    width: usize,
) -> Result<Vec<f32>> {
    match at {
        Some(p) => Ok(caps
            .at(site, r, p)
            .ok_or_else(|| Error::Invalid(format!("no capture at {site} position {p}")))?
            .to_vec()),
        None => Ok(mean_row(&caps.by_position(site, r), width)),
    }
}

/// Writes one shard's captured rows, `rows[site][item]`, as one `(items, width)`
/// tensor per site, atomically.
fn save_rows(
    cfg: &crate::model::Config,
    sites: &[Site],
    rows: &[Vec<Vec<f32>>],
    n_items: usize,
    st: &Path,
) -> Result<()> {
    let mut tensors = HashMap::new();
    for (s, site) in sites.iter().enumerate() {
        let w = cfg.site_width(*site);
        let flat: Vec<f32> = rows[s].iter().flatten().copied().collect();
        tensors.insert(
            site.to_string(),
            Tensor::from_vec(flat, (n_items, w), &Device::Cpu)?,
        );
    }
    let tmp = st.with_extension("safetensors.tmp");
    candle_core::safetensors::save(&tensors, &tmp).map_err(|e| Error::file(&tmp, e))?;
    std::fs::rename(&tmp, st).map_err(|e| Error::file(st, e))
}

/// One shard's index: which row holds which item, with its labels if given.
fn index_rows(
    items: &[Item],
    labels: Option<&HashMap<String, ItemLabel>>,
    prompts: &[(String, Vec<u32>)],
    positions: &[Option<usize>],
    k: usize,
) -> Vec<IndexRow> {
    items
        .iter()
        .enumerate()
        .map(|(row, it)| {
            let l = labels.and_then(|m| m.get(&it.id));
            IndexRow {
                id: it.id.clone(),
                relation: it.relation.clone(),
                subject: it.subject.clone(),
                split: it.split,
                variant: it.variant,
                shard: k,
                row,
                n_tokens: prompts[row].1.len(),
                position: positions[row],
                label: l.map(|l| l.label),
                known: l.map(|l| l.known),
                prior_logp: l.map(|l| l.closed.logp_prior),
            }
        })
        .collect()
}

fn mean_row(by_pos: &std::collections::BTreeMap<usize, Vec<f32>>, width: usize) -> Vec<f32> {
    let mut m = vec![0f32; width];
    for v in by_pos.values() {
        for (a, b) in m.iter_mut().zip(v) {
            *a += b;
        }
    }
    let n = by_pos.len().max(1) as f32;
    m.iter_mut().for_each(|x| *x /= n);
    m
}

/// A finished capture, loaded: the index and one `[n, width]` matrix per site.
pub struct Acts {
    pub meta: CaptureMeta,
    pub index: Vec<IndexRow>,
    pub sites: Vec<(Site, ndarray::Array2<f32>)>,
}

/// Index rows, one per line; a line that does not parse is an error naming it.
fn read_index(path: &Path) -> Result<Vec<IndexRow>> {
    std::fs::read_to_string(path)
        .map_err(|e| Error::file(path, e))?
        .lines()
        .enumerate()
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|e| Error::file(path, format!("line {}: {e}", i + 1)))
        })
        .collect()
}

/// Load a capture folder written by [`capture`].
pub fn load(dir: &Path, n_layers: usize) -> Result<Acts> {
    let meta_path = dir.join("meta.json");
    let text = std::fs::read_to_string(&meta_path)
        .map_err(|e| Error::file(&meta_path, format!("{e} (is this a capture folder?)")))?;
    let meta: CaptureMeta = serde_json::from_str(&text).map_err(|e| Error::file(&meta_path, e))?;
    if !meta.complete {
        return Err(Error::file(
            dir,
            "the capture did not finish; rerun the same capture command to resume it",
        ));
    }
    let index = read_index(&dir.join("index.jsonl"))?;
    let n_shards = meta.n_items.div_ceil(meta.shard_size.max(1));
    let mut sites = Vec::new();
    for name in &meta.sites {
        let site = Site::parse(name, n_layers)?;
        let mut parts = Vec::new();
        for k in 0..n_shards {
            let p = shard_path(dir, k, "safetensors");
            let map =
                candle_core::safetensors::load(&p, &Device::Cpu).map_err(|e| Error::file(&p, e))?;
            let t = map
                .get(name)
                .ok_or_else(|| Error::file(&p, format!("no tensor `{name}`")))?;
            parts.push(t.clone());
        }
        let t = Tensor::cat(&parts, 0)?;
        let (n, w) = t.dims2()?;
        // The index names one row per captured item: a line more or fewer would shift every
        // label after it onto another item's activations.
        if n != index.len() || n != meta.n_items {
            return Err(Error::file(
                dir,
                format!(
                    "the index has {} rows, the shards {n} of `{name}` and meta.json {} items; \
                     they must agree (capture again into a fresh folder)",
                    index.len(),
                    meta.n_items
                ),
            ));
        }
        let v = t.flatten_all()?.to_vec1::<f32>()?;
        let arr = ndarray::Array2::from_shape_vec((n, w), v)
            .map_err(|e| Error::Invalid(e.to_string()))?;
        sites.push((site, arr));
    }
    Ok(Acts { meta, index, sites })
}

/// Activations at `site` at each item's last prompt position, in memory (no files), under
/// `spec` (e.g. steering): what `probe apply` and gated steering read.
#[allow(clippy::too_many_arguments)]
pub fn last_position_acts(
    model: &Model,
    items: &[Item],
    site: Site,
    form: Form,
    with_context: bool,
    batch_size: usize,
    spec: &Spec,
    progress: &mut dyn FnMut(usize),
) -> Result<Vec<Vec<f32>>> {
    let mut all = last_position_acts_at(
        model,
        items,
        &[site],
        form,
        with_context,
        batch_size,
        spec,
        progress,
    )?;
    Ok(all.pop().unwrap_or_default())
}

/// [`last_position_acts`] at several sites from one pass: per site, per item.
#[allow(clippy::too_many_arguments)]
pub fn last_position_acts_at(
    model: &Model,
    items: &[Item],
    sites: &[Site],
    form: Form,
    with_context: bool,
    batch_size: usize,
    spec: &Spec,
    progress: &mut dyn FnMut(usize),
) -> Result<Vec<Vec<Vec<f32>>>> {
    let opts = CaptureOptions {
        sites: sites.to_vec(),
        positions: PosMode::Last,
        form,
        with_context,
        batch_size,
        shard_size: items.len().max(1),
    };
    acts_in_memory(model, items, &opts, spec, progress)
}

/// Activations at `o.sites`, at each item's last token or its subject's last token
/// (`o.positions`; a prompt without its subject is read at its last token, as [`capture`]
/// does), in memory under `spec`: per site, per item.
pub fn acts_in_memory(
    model: &Model,
    items: &[Item],
    o: &CaptureOptions,
    spec: &Spec,
    progress: &mut dyn FnMut(usize),
) -> Result<Vec<Vec<Vec<f32>>>> {
    if o.positions == PosMode::Mean {
        return Err(Error::Invalid(
            "activations in memory are read at one token: last or subject-last".into(),
        ));
    }
    let mut full = spec.clone();
    for site in &o.sites {
        full.push(crate::hooks::Intervention::new(
            *site,
            o.positions.captured(),
            crate::hooks::Action::Capture,
        ));
    }
    let pad = model.tokenizer.eos_id.unwrap_or(0);
    let mut out = vec![vec![vec![]; items.len()]; o.sites.len()];
    let subjects = o.positions == PosMode::SubjectLast;
    let (prompts, subject_last) = prompts_of(model, items, o, subjects)?;
    // Batches of similar lengths: a batch is padded to its longest prompt.
    let mut order: Vec<usize> = (0..items.len()).collect();
    order.sort_by_key(|i| prompts[*i].1.len());
    for chunk in order.chunks(o.batch_size.max(1)) {
        let ids: Vec<Vec<u32>> = chunk.iter().map(|i| prompts[*i].1.clone()).collect();
        let (_, caps) = model.run(&Batch::left_padded(&ids, pad), &full, LogitsAt::Last)?;
        for (r, i) in chunk.iter().enumerate() {
            // Not the mean (refused above): every row has its one token.
            let n = ids[r].len();
            let at = o.positions.token(n, subject_last[*i]).unwrap_or(n - 1);
            for (s, site) in o.sites.iter().enumerate() {
                out[s][*i] = caps
                    .at(*site, r, at)
                    .ok_or_else(|| Error::Invalid(format!("no capture at {site}")))?
                    .to_vec();
            }
        }
        progress(chunk.len());
    }
    Ok(out)
}
