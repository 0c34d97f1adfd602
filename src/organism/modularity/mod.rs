//! `organism modularity`: do separate relations live in separable parts of the model?
//!
//! Every attention head and every MLP neuron is zero-ablated alone, on the closed-book queries
//! of facts the model knows from the world's train subjects, and ranked per relation by how
//! much it lowers the log-probability of the right object. Then, on the other subjects' known
//! facts, a relation's top-k units are ablated together and the damage to that relation is
//! set against the damage to every other relation, and both against k units drawn at random.
//! A relation held by its own units shows a large own damage, an other-relation damage near
//! the random units', and top-k sets that differ between relations.

use crate::data::{Form, Item, Split};
use crate::error::{Error, Result};
use crate::hooks::{Action, Intervention, Positions, Site, SiteKind, Spec};
use crate::model::{Batch, LogitsAt, Model};
use crate::stats::SplitMix;
use serde::{Deserialize, Serialize};

/// What kind of unit is ablated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UnitKind {
    /// One attention head's output (`attn.hook_z`, its slice) at every position.
    Head,
    /// One SwiGLU neuron (`mlp.hook_post`, one coordinate) at every position.
    Neuron,
}

impl UnitKind {
    pub fn name(self) -> &'static str {
        match self {
            UnitKind::Head => "heads",
            UnitKind::Neuron => "neurons",
        }
    }
}

/// One head or neuron.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Unit {
    pub kind: UnitKind,
    pub layer: usize,
    pub index: usize,
}

impl std::fmt::Display for Unit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.kind {
            UnitKind::Head => write!(f, "L{}H{}", self.layer, self.index),
            UnitKind::Neuron => write!(f, "L{}N{}", self.layer, self.index),
        }
    }
}

/// Every unit of `kind` in `model`, layer by layer.
pub fn units(model: &Model, kind: UnitKind) -> Vec<Unit> {
    let cfg = model.cfg();
    let per = match kind {
        UnitKind::Head => cfg.n_heads,
        UnitKind::Neuron => cfg.site_width(Site::new(SiteKind::MlpPost, 0)),
    };
    (0..cfg.n_layers)
        .flat_map(|layer| (0..per).map(move |index| Unit { kind, layer, index }))
        .collect()
}

/// The spec that zero-ablates `set` at every position: a head's slice of `attn.hook_z`, a
/// neuron's coordinate of `mlp.hook_post` (projected out along its basis vector).
pub fn ablation_spec(model: &Model, set: &[Unit]) -> Spec {
    let mut spec = Spec::new();
    let width = model.cfg().site_width(Site::new(SiteKind::MlpPost, 0));
    let mut heads: std::collections::BTreeMap<usize, Vec<usize>> = Default::default();
    for u in set {
        match u.kind {
            UnitKind::Head => heads.entry(u.layer).or_default().push(u.index),
            UnitKind::Neuron => {
                let mut direction = vec![0.0; width];
                direction[u.index] = 1.0;
                let site = Site::new(SiteKind::MlpPost, u.layer);
                spec.push(Intervention::new(
                    site,
                    Positions::All,
                    Action::ProjectOut { direction },
                ));
            }
        }
    }
    for (layer, hs) in heads {
        let site = Site::new(SiteKind::AttnZ, layer);
        spec.push(Intervention::new(site, Positions::All, Action::ZeroAblate).on_heads(hs));
    }
    spec
}

/// Closed-book queries: their tokens, the right object's first token, and the relation's index.
#[derive(Clone, Debug, Default)]
pub struct Queries {
    pub ids: Vec<Vec<u32>>,
    pub target: Vec<u32>,
    pub relation: Vec<usize>,
}

impl Queries {
    /// The closed-book queries of `items` (one per fact), relations numbered by `relations`.
    pub fn of(model: &Model, items: &[&Item], relations: &[String]) -> Result<Queries> {
        let mut q = Queries::default();
        for it in items {
            let r = relations
                .iter()
                .position(|x| *x == it.relation)
                .ok_or_else(|| Error::Invalid(format!("unknown relation {}", it.relation)))?;
            let ids = model.prompt_ids(&it.query(Form::Completion, false), false)?;
            let target = crate::label::answer_ids(model, Form::Completion, &it.prior_answer)?;
            q.ids.push(ids);
            q.target.push(target[0]);
            q.relation.push(r);
        }
        Ok(q)
    }

    /// Those whose rows `keep` says.
    pub fn filtered(&self, keep: &[bool]) -> Queries {
        let pick = |i: usize| keep[i];
        Queries {
            ids: (0..self.ids.len())
                .filter(|i| pick(*i))
                .map(|i| self.ids[i].clone())
                .collect(),
            target: (0..self.ids.len())
                .filter(|i| pick(*i))
                .map(|i| self.target[i])
                .collect(),
            relation: (0..self.ids.len())
                .filter(|i| pick(*i))
                .map(|i| self.relation[i])
                .collect(),
        }
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

/// One query's outcome: the right object's log-probability, and whether it is the top token.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Scored {
    pub logp: f64,
    pub top: bool,
}

/// Run every query under `spec`, left-padded in batches of `batch`, in order, handing each
/// batch's last-position logits `[rows, 1, vocab]` and captures to `each`.
pub fn each_batch(
    model: &Model,
    q: &Queries,
    spec: &Spec,
    batch: usize,
    mut each: impl FnMut(candle_core::Tensor, crate::hooks::Captures) -> Result<()>,
) -> Result<()> {
    let pad = model.tokenizer.eos_id.unwrap_or(0);
    for rows in q.ids.chunks(batch.max(1)) {
        let (logits, caps) = model.run(&Batch::left_padded(rows, pad), spec, LogitsAt::Last)?;
        each(logits, caps)?;
    }
    Ok(())
}

/// Last-position logits of every query under `spec`, in batches of `batch`.
pub fn last_logits(model: &Model, q: &Queries, spec: &Spec, batch: usize) -> Result<Vec<Vec<f32>>> {
    let mut out = Vec::with_capacity(q.len());
    each_batch(model, q, spec, batch, |logits, _| {
        out.extend(logits.squeeze(1)?.to_vec2::<f32>()?);
        Ok(())
    })?;
    Ok(out)
}

/// Each query's outcome from its last-position logits: the target's log-probability (a
/// log-softmax in f64) and whether it is the largest logit (the first, on a tie).
pub fn judge(logits: &[Vec<f32>], targets: &[u32]) -> Vec<Scored> {
    logits
        .iter()
        .zip(targets)
        .map(|(l, t)| {
            let max = l.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let z: f64 = l.iter().map(|v| f64::from(v - max).exp()).sum();
            let best = crate::generate::argmax(l);
            Scored {
                logp: f64::from(l[*t as usize] - max) - z.ln(),
                top: best == *t,
            }
        })
        .collect()
}

/// Every query scored under `spec`, in batches of `batch`.
pub fn score(model: &Model, q: &Queries, spec: &Spec, batch: usize) -> Result<Vec<Scored>> {
    Ok(judge(&last_logits(model, q, spec, batch)?, &q.target))
}

/// The train subjects' facts rank the units; the others' measure. Each item is one fact's
/// counterfactual (its closed-book query is the item's query without context).
pub fn split_facts(items: &[Item]) -> (Vec<&Item>, Vec<&Item>) {
    items
        .iter()
        .partition(|it| it.split.unwrap_or(Split::Train) == Split::Train)
}

/// Per relation, the mean of `values` over the rows of that relation (NaN where none).
pub fn by_relation(values: &[f64], relation: &[usize], n_rel: usize) -> Vec<f64> {
    let mut sum = vec![0.0; n_rel];
    let mut n = vec![0usize; n_rel];
    for (v, r) in values.iter().zip(relation) {
        sum[*r] += v;
        n[*r] += 1;
    }
    sum.iter()
        .zip(&n)
        .map(|(s, n)| if *n == 0 { f64::NAN } else { s / *n as f64 })
        .collect()
}

/// How far each query's log-probability fell from `base` under an ablation (nats; positive is
/// damage).
pub fn damage(base: &[Scored], ablated: &[Scored]) -> Vec<f64> {
    base.iter()
        .zip(ablated)
        .map(|(b, a)| b.logp - a.logp)
        .collect()
}

/// The indices of the `k` largest effects, largest first (ties: the earlier index).
pub fn top_indices(effect: &[f64], k: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..effect.len()).collect();
    order.sort_by(|a, b| effect[*b].total_cmp(&effect[*a]).then(a.cmp(b)));
    order.truncate(k);
    order
}

/// The `k` units with the largest effect, by `effect` (ties: the earlier unit).
pub fn top_k(units: &[Unit], effect: &[f64], k: usize) -> Vec<Unit> {
    top_indices(effect, k)
        .into_iter()
        .map(|i| units[i])
        .collect()
}

/// `k` distinct units drawn uniformly from `units`.
pub fn random_set(units: &[Unit], k: usize, rng: &mut SplitMix) -> Vec<Unit> {
    let mut v = units.to_vec();
    rng.shuffle(&mut v);
    v.truncate(k);
    v.sort();
    v
}

/// The share of units two sets hold in common, |a ∩ b| / |a ∪ b|.
pub fn jaccard(a: &[Unit], b: &[Unit]) -> f64 {
    let (sa, sb): (std::collections::BTreeSet<_>, std::collections::BTreeSet<_>) =
        (a.iter().collect(), b.iter().collect());
    let union = sa.union(&sb).count();
    match union {
        0 => 0.0,
        u => sa.intersection(&sb).count() as f64 / u as f64,
    }
}

pub mod report;
mod run;
pub use run::*;
