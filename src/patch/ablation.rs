//! Zero-ablation of single attention heads: which heads push the prior, which the context.

use super::{
    cell, ld, prompt_text, run_jobs, CellId, Job, PatchPositions, PatchResult, PatchSites, Variant,
};
use crate::data::{Form, Item};
use crate::error::{Error, Result};
use crate::hooks::{Captures, Site, SiteKind, Spec};
use crate::model::Model;
use std::collections::BTreeMap;

/// Rank attention heads by what removing them does: for each (layer, head), zero its output
/// (attn.hook_z) at the last position of the counterfactual prompt and record the change in
/// LD = logit(context answer) - logit(prior answer). A positive mean change marks a head
/// that pushes the prior (Yu, Merullo & Pavlick 2023). Cells hold the raw change in logits.
pub fn head_ablation(
    model: &Model,
    items: &[Item],
    form: Form,
    batch_size: usize,
    progress: &mut dyn FnMut(usize),
) -> Result<PatchResult> {
    let cfg = model.cfg();
    let mut effects: BTreeMap<CellId, Vec<f64>> = BTreeMap::new();
    let (mut used, mut skipped, mut sum_t) = (0, 0, 0.0);
    for item in items {
        progress(1);
        let ids = model
            .tokenizer
            .encode_prompt(&prompt_text(model, item, form)?)?;
        let ctx = crate::label::answer_ids(model, form, &item.context_answer)?;
        let prior = crate::label::answer_ids(model, form, &item.prior_answer)?;
        if ctx.first() == prior.first() {
            skipped += 1;
            continue;
        }
        let n = ids.len();
        let ld_t = ld(&model.last_logits(&ids, &Spec::new())?, ctx[0], prior[0]);
        let (zeros, jobs) = zero_jobs(model, n);
        for (job, l) in jobs
            .iter()
            .zip(run_jobs(model, &ids, &zeros, &jobs, batch_size)?)
        {
            effects
                .entry(job.cell_id())
                .or_default()
                .push(ld(&l, ctx[0], prior[0]) - ld_t);
        }
        used += 1;
        sum_t += ld_t;
    }
    if used == 0 {
        return Err(Error::Invalid(
            "no item could be measured: every item's answers share a first token".into(),
        ));
    }
    let keys: Vec<String> = (0..cfg.n_heads).map(|h| format!("head {h}")).collect();
    let cells = effects.into_iter().map(|(id, v)| cell(id, &v)).collect();
    Ok(PatchResult {
        source: Variant::Counterfactual,
        target: Variant::Counterfactual,
        sites: PatchSites::Heads,
        positions: PatchPositions::Last,
        alignment: "zero-ablation of one head at the last position; cells are the raw change in LD (logits)".into(),
        n_items: used,
        n_skipped: skipped,
        mean_ld_source: sum_t / used as f64,
        mean_ld_target: sum_t / used as f64,
        keys,
        cells,
    })
}

/// One job per (layer, head) that zeroes that head's `attn.hook_z` at the last of `n`
/// positions, and the all-zero "source" the jobs copy from.
fn zero_jobs(model: &Model, n: usize) -> (Captures, Vec<Job>) {
    let cfg = model.cfg();
    let mut zeros = Captures::default();
    let mut jobs = Vec::new();
    for l in 0..cfg.n_layers {
        let site = Site::new(SiteKind::AttnZ, l);
        zeros.sites.insert(
            site,
            vec![crate::hooks::CapturedRow {
                batch: 0,
                pos: n - 1,
                values: vec![0.0; cfg.site_width(site)],
            }],
        );
        for h in 0..cfg.n_heads {
            jobs.push(Job {
                site,
                head: Some(h),
                pairs: vec![(n - 1, n - 1)],
                key: format!("head {h}"),
            });
        }
    }
    (zeros, jobs)
}
