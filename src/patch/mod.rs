//! Activation patching: where does the prior take over?
//!
//! For each item, a source prompt (e.g. the true fact as context) and a target prompt (the
//! counterfactual context) run through the model. Then the source's activation at one site
//! is patched into the target run: one (layer, position) or one (layer, head) at a time. Each
//! patch is one row of a batched forward pass. The measure is the logit difference
//! LD = logit(context answer) - logit(prior answer) at the last position, normalized as
//! (LD_patched - LD_target) / (LD_source - LD_target): 1 means the patch alone moves the target
//! all the way to the source's behaviour, 0 means it does nothing (as in ROME's causal tracing).
//!
//! Source and target prompts differ only in their context, which comes first, so positions are
//! aligned from the end: the query tokens they share. `last` is the last token, `subject` is
//! the last token of the subject in the query, and `all` is each shared query token, labelled
//! by its offset from the end (-1 is the last).

use crate::capture::subject_last_token;
use crate::data::{Form, Item};
use crate::error::{Error, Result};
use crate::hooks::{Action, Captures, Intervention, Positions, Site, SiteKind, Spec};
use crate::model::{Batch, LogitsAt, Model};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

mod ablation;
mod heatmap;
pub use ablation::head_ablation;
pub use heatmap::heatmap;

crate::choice_enum! {
/// Which activations are patched.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PatchSites {
    /// The residual stream after each block (blocks.L.hook_resid_post).
    ResidPost = "resid-post",
    /// Each block's attention output (blocks.L.hook_attn_out).
    AttnOut = "attn-out",
    /// Each block's MLP output (blocks.L.hook_mlp_out).
    MlpOut = "mlp-out",
    /// Each attention head's output (attn.hook_z), one head at a time.
    Heads = "heads",
}
}

crate::choice_enum! {
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PatchPositions {
    /// Every query token the two prompts share (up to --max-positions from the end).
    All = "all",
    /// The last token of the subject's mention.
    #[serde(rename = "subject")]
    Subject = "subject-last",
    /// The prompt's last token.
    Last = "last",
}
}

crate::choice_enum! {
/// A variant of an item's prompt.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Variant {
    /// The item's own context (the counterfactual one for our data).
    Counterfactual = "counterfactual",
    /// The context with the context answer replaced by the prior answer.
    TrueContext = "true-context",
    /// No context.
    NoContext = "no-context",
}
}

/// The item's prompt under a variant; the answers stay the item's own.
pub fn variant_item(item: &Item, v: Variant) -> Item {
    let context = match v {
        Variant::Counterfactual => item.context.clone(),
        Variant::TrueContext => item
            .context
            .replace(&item.context_answer, &item.prior_answer),
        Variant::NoContext => String::new(),
    };
    Item {
        context,
        ..item.clone()
    }
}

/// One patch: copy the source's values at `pairs` (target position, source position) into
/// the target run at `site` (one head when `head` is set).
#[derive(Clone, Debug)]
pub struct Job {
    pub site: Site,
    pub head: Option<usize>,
    pub pairs: Vec<(usize, usize)>,
    /// Column of the result table: a position label or a head.
    pub key: String,
}

/// Final-position logits of the target under each job (one batch row per job).
pub fn run_jobs(
    model: &Model,
    target: &[u32],
    source: &Captures,
    jobs: &[Job],
    batch_size: usize,
) -> Result<Vec<Vec<f32>>> {
    let n = target.len();
    let prefix = shared_prefix(model, target, jobs)?;
    let mut out = Vec::with_capacity(jobs.len());
    for chunk in jobs.chunks(batch_size.max(1)) {
        let spec = jobs_spec(chunk, source)?;
        let logits = match &prefix {
            Some(cache) => {
                model.validate(&spec)?;
                let mut c = cache.repeat_rows(chunk.len())?;
                let mut hooks = crate::hooks::Hooks::new(&spec, model.cfg().n_heads)
                    .with_prompt_lens(vec![n; chunk.len()]);
                let batch = Batch {
                    ids: vec![vec![target[n - 1]]; chunk.len()],
                    pads: vec![0; chunk.len()],
                };
                model
                    .net
                    .forward(&batch, Some(&mut c), &mut hooks, LogitsAt::Last)?
            }
            None => {
                let batch = Batch {
                    ids: vec![target.to_vec(); chunk.len()],
                    pads: vec![0; chunk.len()],
                };
                model.run(&batch, &spec, LogitsAt::Last)?.0
            }
        };
        let l = logits.squeeze(1)?.to_vec2::<f32>()?;
        out.extend(l);
    }
    Ok(out)
}

/// When every job patches only the last position, the prefix runs once and each job is a
/// one-token step on a copy of its KV cache: the prefix cannot see the last position.
fn shared_prefix(
    model: &Model,
    target: &[u32],
    jobs: &[Job],
) -> Result<Option<crate::model::KvCache>> {
    let n = target.len();
    let last_only = n > 1
        && jobs
            .iter()
            .all(|j| j.pairs.iter().all(|(t, _)| *t == n - 1));
    if !last_only {
        return Ok(None);
    }
    let mut cache = crate::model::KvCache::new(model.cfg().n_layers);
    let empty = Spec::new();
    let mut hooks = crate::hooks::Hooks::new(&empty, model.cfg().n_heads).with_prompt_lens(vec![n]);
    let batch = Batch::single(&target[..n - 1]);
    model
        .net
        .forward(&batch, Some(&mut cache), &mut hooks, LogitsAt::Last)?;
    Ok(Some(cache))
}

/// One batch of jobs as a spec: row `r` replaces job `r`'s positions with the source's values.
fn jobs_spec(chunk: &[Job], source: &Captures) -> Result<Spec> {
    let mut spec = Spec::new();
    for (r, job) in chunk.iter().enumerate() {
        let mut values = BTreeMap::new();
        for (t, s) in &job.pairs {
            let v = source.at(job.site, 0, *s).ok_or_else(|| {
                Error::Invalid(format!(
                    "source has no capture at {} position {s}",
                    job.site
                ))
            })?;
            values.insert(*t, v.to_vec());
        }
        let positions = Positions::Indices(job.pairs.iter().map(|(t, _)| *t).collect());
        let mut iv =
            Intervention::new(job.site, positions, Action::Replace { values }).on_rows(vec![r]);
        iv.heads = job.head.map(|h| vec![h]);
        spec.push(iv);
    }
    Ok(spec)
}

/// Settings of a patching run.
pub struct PatchOptions {
    pub source: Variant,
    pub target: Variant,
    pub sites: PatchSites,
    pub positions: PatchPositions,
    pub form: Form,
    pub batch_size: usize,
    /// With `all` positions, at most this many query tokens from the end.
    pub max_positions: usize,
}

/// One cell of the result: mean normalized effect with a bootstrap 95% interval.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Cell {
    pub layer: usize,
    pub key: String,
    /// The head patched or ablated, for head cells (absent from files of earlier versions, whose
    /// key alone names it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head: Option<usize>,
    pub n: usize,
    pub mean: f64,
    pub ci_low: f64,
    pub ci_high: f64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PatchResult {
    pub source: Variant,
    pub target: Variant,
    pub sites: PatchSites,
    pub positions: PatchPositions,
    pub alignment: String,
    pub n_items: usize,
    /// Items left out: source and target behave alike (|LD_s - LD_t| < 0.5), or the answers
    /// share their first token, or the subject is not in the shared query.
    pub n_skipped: usize,
    pub mean_ld_source: f64,
    pub mean_ld_target: f64,
    pub keys: Vec<String>,
    pub cells: Vec<Cell>,
}

fn ld(logits: &[f32], ctx: u32, prior: u32) -> f64 {
    (logits[ctx as usize] - logits[prior as usize]) as f64
}

fn prompt_text(model: &Model, item: &Item, form: Form) -> Result<String> {
    model.prompt_text(&item.query(form, true), form == Form::Chat)
}

/// The jobs of one item, or None when its positions cannot be aligned.
fn jobs_for(
    model: &Model,
    opts: &PatchOptions,
    tgt_text: &str,
    subject: &str,
    nt: usize,
    ns: usize,
    shared: usize,
) -> Result<Option<Vec<Job>>> {
    let cfg = model.cfg();
    let pairs: Vec<(usize, usize, String)> = match opts.positions {
        PatchPositions::Last => vec![(nt - 1, ns - 1, "last".into())],
        PatchPositions::Subject => match subject_last_token(model, tgt_text, subject)? {
            Some(t) if t >= nt - shared => vec![(t, ns - (nt - t), "subject".into())],
            _ => return Ok(None),
        },
        PatchPositions::All => (1..=shared.min(opts.max_positions))
            .map(|j| (nt - j, ns - j, format!("-{j}")))
            .collect(),
    };
    let mut jobs = Vec::new();
    for l in 0..cfg.n_layers {
        let kind = match opts.sites {
            PatchSites::ResidPost => SiteKind::ResidPost,
            PatchSites::AttnOut => SiteKind::AttnOut,
            PatchSites::MlpOut => SiteKind::MlpOut,
            PatchSites::Heads => SiteKind::AttnZ,
        };
        let site = Site::new(kind, l);
        for (t, s, key) in &pairs {
            if opts.sites == PatchSites::Heads {
                for h in 0..cfg.n_heads {
                    let key = if pairs.len() == 1 {
                        format!("head {h}")
                    } else {
                        format!("{key} head {h}")
                    };
                    jobs.push(Job {
                        site,
                        head: Some(h),
                        pairs: vec![(*t, *s)],
                        key,
                    });
                }
            } else {
                jobs.push(Job {
                    site,
                    head: None,
                    pairs: vec![(*t, *s)],
                    key: key.clone(),
                });
            }
        }
    }
    Ok(Some(jobs))
}

/// Patch source into target for every item; aggregate the normalized effects.
pub fn patch(
    model: &Model,
    items: &[Item],
    opts: &PatchOptions,
    progress: &mut dyn FnMut(usize),
) -> Result<PatchResult> {
    let kind = match opts.sites {
        PatchSites::ResidPost => SiteKind::ResidPost,
        PatchSites::AttnOut => SiteKind::AttnOut,
        PatchSites::MlpOut => SiteKind::MlpOut,
        PatchSites::Heads => SiteKind::AttnZ,
    };
    let kinds: Vec<Site> = (0..model.cfg().n_layers)
        .map(|l| Site::new(kind, l))
        .collect();
    let mut done = Vec::new();
    for item in items {
        progress(1);
        done.push(patch_item(model, item, opts, &kinds)?);
    }
    summarize(opts, done)
}

/// The patching result over items (None: skipped): each cell's mean effect with its CI.
fn summarize(opts: &PatchOptions, done: Vec<Option<ItemPatch>>) -> Result<PatchResult> {
    let skipped = done.iter().filter(|d| d.is_none()).count();
    let done: Vec<ItemPatch> = done.into_iter().flatten().collect();
    let used = done.len();
    if used == 0 {
        return Err(Error::Invalid(format!(
            "no item could be patched ({skipped} skipped: source and target behave alike, answers share a first token, or positions do not align)"
        )));
    }
    let mean = |f: fn(&ItemPatch) -> f64| done.iter().map(f).sum::<f64>() / used as f64;
    let (mean_ld_source, mean_ld_target) = (mean(|p| p.ld_source), mean(|p| p.ld_target));
    let mut effects: BTreeMap<CellId, Vec<f64>> = BTreeMap::new();
    for (id, e) in done.into_iter().flat_map(|p| p.effects) {
        effects.entry(id).or_default().push(e);
    }
    let mut keys: Vec<String> = Vec::new();
    let cells = effects
        .into_iter()
        .map(|(id, v)| {
            if !keys.contains(&id.1) {
                keys.push(id.1.clone());
            }
            cell(id, &v)
        })
        .collect();
    keys.sort_by_key(|k| key_order(k));
    Ok(PatchResult {
        source: opts.source,
        target: opts.target,
        sites: opts.sites,
        positions: opts.positions,
        alignment: "positions aligned from the end over the query tokens that source and target share \
                    (the contexts differ and come first); `subject` is the subject's last token in the query"
            .into(),
        n_items: used,
        n_skipped: skipped,
        mean_ld_source,
        mean_ld_target,
        keys,
        cells,
    })
}

/// One item's patching: the logit differences of source and target, and each job's effect
/// (layer, key, share of the source-target difference restored).
struct ItemPatch {
    ld_source: f64,
    ld_target: f64,
    effects: Vec<(CellId, f64)>,
}

/// An item's source and target prompts, its two answers' first tokens and its jobs.
struct Pair {
    sids: Vec<u32>,
    tids: Vec<u32>,
    jobs: Vec<Job>,
    c: u32,
    p: u32,
}

/// Tokenizes an item's source and target variants and lists its jobs; None when the answers
/// share a first token or the positions do not align.
fn prepare(model: &Model, item: &Item, opts: &PatchOptions) -> Result<Option<Pair>> {
    let (src, tgt) = (
        variant_item(item, opts.source),
        variant_item(item, opts.target),
    );
    let (st, tt) = (
        prompt_text(model, &src, opts.form)?,
        prompt_text(model, &tgt, opts.form)?,
    );
    let (sids, tids) = (
        model.tokenizer.encode_prompt(&st)?,
        model.tokenizer.encode_prompt(&tt)?,
    );
    let ctx = crate::label::answer_ids(model, opts.form, &item.context_answer)?;
    let prior = crate::label::answer_ids(model, opts.form, &item.prior_answer)?;
    if ctx.first() == prior.first() {
        return Ok(None);
    }
    let shared = sids
        .iter()
        .rev()
        .zip(tids.iter().rev())
        .take_while(|(a, b)| a == b)
        .count();
    let (nt, ns) = (tids.len(), sids.len());
    let jobs = jobs_for(model, opts, &tt, &item.subject, nt, ns, shared.max(1))?;
    Ok(jobs.map(|jobs| Pair {
        sids,
        tids,
        jobs,
        c: ctx[0],
        p: prior[0],
    }))
}

/// Patch one item; None when it is skipped (answers share a first token, positions do not
/// align, or source and target behave alike).
fn patch_item(
    model: &Model,
    item: &Item,
    opts: &PatchOptions,
    kinds: &[Site],
) -> Result<Option<ItemPatch>> {
    let Some(pair) = prepare(model, item, opts)? else {
        return Ok(None);
    };
    let Pair {
        sids,
        tids,
        jobs,
        c,
        p,
    } = pair;
    let (sl, caps) = model.run(
        &Batch::single(&sids),
        &Spec::capture(kinds, Positions::All),
        LogitsAt::Last,
    )?;
    let ld_s = ld(&sl.flatten_all()?.to_vec1::<f32>()?, c, p);
    let ld_t = ld(&model.last_logits(&tids, &Spec::new())?, c, p);
    if (ld_s - ld_t).abs() < 0.5 {
        return Ok(None);
    }
    let logits = run_jobs(model, &tids, &caps, &jobs, opts.batch_size)?;
    let effects = jobs
        .iter()
        .zip(logits)
        .map(|(job, l)| (job.cell_id(), (ld(&l, c, p) - ld_t) / (ld_s - ld_t)))
        .collect();
    Ok(Some(ItemPatch {
        ld_source: ld_s,
        ld_target: ld_t,
        effects,
    }))
}

/// Order keys: -12 .. -1, subject, last, then heads by number.
fn key_order(k: &str) -> (i64, i64) {
    if let Some(h) = k
        .rsplit("head ")
        .next()
        .and_then(|h| h.parse::<i64>().ok())
        .filter(|_| k.contains("head"))
    {
        let base = k
            .split(" head")
            .next()
            .and_then(|p| p.parse::<i64>().ok())
            .unwrap_or(0);
        return (base, h);
    }
    (k.parse::<i64>().unwrap_or(0), 0)
}

/// The strongest cells, best first.
pub fn top(r: &PatchResult, n: usize) -> Vec<&Cell> {
    let mut v: Vec<&Cell> = r.cells.iter().collect();
    v.sort_by(|a, b| b.mean.total_cmp(&a.mean));
    v.truncate(n);
    v
}

/// A cell of the result: (layer, column key, head).
type CellId = (usize, String, Option<usize>);

impl Job {
    fn cell_id(&self) -> CellId {
        (self.site.layer, self.key.clone(), self.head)
    }
}

/// The mean of a cell's effects with a bootstrap 95% interval.
fn cell((layer, key, head): CellId, v: &[f64]) -> Cell {
    let mean = v.iter().sum::<f64>() / v.len().max(1) as f64;
    let (ci_low, ci_high) = crate::stats::bootstrap_ci(v, 1000, layer as u64);
    Cell {
        layer,
        key,
        head,
        n: v.len(),
        mean,
        ci_low,
        ci_high,
    }
}
