//! A modularity run: the facts prepared, every unit ranked, each relation's top sets measured
//! against random sets, and what the report holds.

use super::{
    ablation_spec, by_relation, damage, jaccard, random_set, score, split_facts, top_indices,
    top_k, units, Queries, Scored, Unit, UnitKind,
};
use crate::data::Item;
use crate::error::{Error, Result};
use crate::hooks::Spec;
use crate::model::Model;
use crate::stats::{Rate, SplitMix};
use serde::{Deserialize, Serialize};

/// Settings of a modularity run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModularityOptions {
    /// Set sizes of heads ablated together.
    pub head_ks: Vec<usize>,
    /// Set sizes of neurons ablated together.
    pub neuron_ks: Vec<usize>,
    /// Random sets per kind and size, the baseline.
    pub random_sets: usize,
    /// Queries per forward pass.
    pub batch: usize,
    pub seed: u64,
}

impl Default for ModularityOptions {
    fn default() -> Self {
        ModularityOptions {
            head_ks: vec![1, 2, 4],
            neuron_ks: vec![8, 32, 128],
            random_sets: 20,
            batch: 256,
            seed: 0,
        }
    }
}

/// Bootstrap resamples behind the experiment's intervals.
const REPS: usize = 2000;

fn mean(v: &[f64]) -> f64 {
    match v.len() {
        0 => f64::NAN,
        n => v.iter().sum::<f64>() / n as f64,
    }
}

/// The known facts of a split, and how many facts it had.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FactCounts {
    pub relation: String,
    /// Known (the right object is the top token closed-book) / all, on the ranking subjects.
    pub rank_known: usize,
    pub rank_all: usize,
    /// The same on the measuring subjects.
    pub eval_known: usize,
    pub eval_all: usize,
}

/// A relation's most damaging units of one kind on the ranking subjects, with their own
/// relation's mean damage (nats).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Ranked {
    pub relation: String,
    pub kind: UnitKind,
    pub top: Vec<(String, f64)>,
}

/// One relation's top-k units of one kind ablated together, measured on the other subjects.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SetRow {
    pub kind: UnitKind,
    pub k: usize,
    pub relation: String,
    pub units: Vec<String>,
    /// Mean damage (nats) on this relation's facts, and on every other relation's.
    pub own: Rate,
    pub other: Rate,
    /// own − other.
    pub selectivity: Rate,
    /// Share of known facts still answered (top token), own and other.
    pub own_recall: f64,
    pub other_recall: f64,
    /// The same damages under random sets of k units of the kind (mean and spread over sets).
    pub random_own: Rate,
    pub random_other: Rate,
}

/// One kind and size, over relations.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct KindSummary {
    pub kind: UnitKind,
    pub k: usize,
    /// Of the kind's units in the model.
    pub share: f64,
    /// Means over relations of the rows' own and other damage, and of the random sets'.
    pub own: f64,
    pub other: f64,
    pub random_own: f64,
    pub random_other: f64,
    /// Rows whose own damage exceeds their other damage (the interval of the difference
    /// above 0), of all relations.
    pub selective: usize,
    pub relations: usize,
    /// Mean Jaccard overlap of the relations' top-k sets, pair by pair.
    pub overlap: f64,
}

/// What `organism modularity` reports.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ModularityReport {
    pub command: String,
    pub model: String,
    pub world: String,
    pub seconds: f64,
    pub options: ModularityOptions,
    pub heads: usize,
    pub neurons: usize,
    pub facts: Vec<FactCounts>,
    pub ranked: Vec<Ranked>,
    pub rows: Vec<SetRow>,
    pub summary: Vec<KindSummary>,
}

/// The facts ranked on and measured on: known facts only, scored without ablation.
pub struct Prepared {
    pub relations: Vec<String>,
    pub rank: Queries,
    pub eval: Queries,
    pub base_rank: Vec<Scored>,
    pub base_eval: Vec<Scored>,
    pub counts: Vec<FactCounts>,
}

/// The known facts among `items` (one per fact), and their unablated scores.
fn known(
    model: &Model,
    items: &[&Item],
    rel: &[String],
    batch: usize,
) -> Result<(Queries, Vec<Scored>, Vec<usize>)> {
    let all = Queries::of(model, items, rel)?;
    let base = score(model, &all, &Spec::new(), batch)?;
    let keep: Vec<bool> = base.iter().map(|s| s.top).collect();
    let per_rel = (0..rel.len())
        .map(|r| (0..all.len()).filter(|i| all.relation[*i] == r).count())
        .collect();
    let base = base.into_iter().filter(|s| s.top).collect();
    Ok((all.filtered(&keep), base, per_rel))
}

/// Split the world's facts (its counterfactual items, one per fact) by subject, keep those the
/// model knows, and score them without ablation.
pub fn prepare(model: &Model, items: &[Item], batch: usize) -> Result<Prepared> {
    let mut relations: Vec<String> = vec![];
    for it in items {
        if !relations.contains(&it.relation) {
            relations.push(it.relation.clone());
        }
    }
    let (train, rest) = split_facts(items);
    let (rank, base_rank, rank_all) = known(model, &train, &relations, batch)?;
    let (eval, base_eval, eval_all) = known(model, &rest, &relations, batch)?;
    let count = |q: &Queries, r: usize| q.relation.iter().filter(|x| **x == r).count();
    let counts: Vec<FactCounts> = (0..relations.len())
        .map(|r| FactCounts {
            relation: relations[r].clone(),
            rank_known: count(&rank, r),
            rank_all: rank_all[r],
            eval_known: count(&eval, r),
            eval_all: eval_all[r],
        })
        .collect();
    if let Some(c) = counts
        .iter()
        .find(|c| c.rank_known == 0 || c.eval_known == 0)
    {
        return Err(Error::Invalid(format!(
            "the model knows no fact of relation {} among the {} subjects ({} ranking, {} measuring known): train it longer or on more exposure",
            c.relation,
            if c.rank_known == 0 { "train" } else { "dev and test" },
            c.rank_known,
            c.eval_known
        )));
    }
    Ok(Prepared {
        relations,
        rank,
        eval,
        base_rank,
        base_eval,
        counts,
    })
}

/// Per unit (in order), the mean damage its ablation does to each relation's ranking facts.
pub fn rank(
    model: &Model,
    p: &Prepared,
    units: &[Unit],
    batch: usize,
    progress: &mut dyn FnMut(usize),
) -> Result<Vec<Vec<f64>>> {
    let mut out = Vec::with_capacity(units.len());
    for u in units {
        crate::progress::check_cancel()?;
        let s = score(model, &p.rank, &ablation_spec(model, &[*u]), batch)?;
        out.push(by_relation(
            &damage(&p.base_rank, &s),
            &p.rank.relation,
            p.relations.len(),
        ));
        progress(1);
    }
    Ok(out)
}

/// The damage and the surviving answers of ablating `set` on the measuring facts.
fn measure(
    model: &Model,
    p: &Prepared,
    set: &[Unit],
    batch: usize,
) -> Result<(Vec<f64>, Vec<bool>)> {
    let s = score(model, &p.eval, &ablation_spec(model, set), batch)?;
    Ok((damage(&p.base_eval, &s), s.iter().map(|x| x.top).collect()))
}

/// The values of `v` on relation `r`'s rows (`own`) or on every other relation's.
fn part<T: Copy>(v: &[T], rel: &[usize], r: usize, own: bool) -> Vec<T> {
    v.iter()
        .zip(rel)
        .filter(|(_, x)| (**x == r) == own)
        .map(|(v, _)| *v)
        .collect()
}

fn share(v: &[bool]) -> f64 {
    v.iter().filter(|b| **b).count() as f64 / v.len().max(1) as f64
}

/// Per relation, (own, other) damage of each random set: `[relation][set]`.
type RandomDamage = Vec<Vec<(f64, f64)>>;

/// `n` random sets of `k` units, each measured; per relation the own and other mean damage.
fn random_damage(
    model: &Model,
    p: &Prepared,
    all: &[Unit],
    k: usize,
    n: usize,
    seed: u64,
    batch: usize,
) -> Result<RandomDamage> {
    let mut rng = SplitMix(seed ^ (k as u64).wrapping_mul(0x51_7cc1_b727_220a));
    let mut out = vec![vec![]; p.relations.len()];
    for _ in 0..n {
        crate::progress::check_cancel()?;
        let (d, _) = measure(model, p, &random_set(all, k, &mut rng), batch)?;
        for (r, o) in out.iter_mut().enumerate() {
            let rel = &p.eval.relation;
            o.push((
                mean(&part(&d, rel, r, true)),
                mean(&part(&d, rel, r, false)),
            ));
        }
    }
    Ok(out)
}

/// One relation's top-k set, measured and set against the random sets.
fn set_row(
    model: &Model,
    p: &Prepared,
    set: &[Unit],
    r: usize,
    random: &[(f64, f64)],
    batch: usize,
    seed: u64,
) -> Result<SetRow> {
    let (d, top) = measure(model, p, set, batch)?;
    let rel = &p.eval.relation;
    let (own, other) = (part(&d, rel, r, true), part(&d, rel, r, false));
    let ro: Vec<f64> = random.iter().map(|x| x.0).collect();
    let rt: Vec<f64> = random.iter().map(|x| x.1).collect();
    Ok(SetRow {
        kind: set[0].kind,
        k: set.len(),
        relation: p.relations[r].clone(),
        units: set.iter().map(Unit::to_string).collect(),
        own: Rate::bootstrap(&own, REPS, seed),
        other: Rate::bootstrap(&other, REPS, seed ^ 1),
        selectivity: Rate::difference(&own, &other, REPS, seed ^ 2),
        own_recall: share(&part(&top, rel, r, true)),
        other_recall: share(&part(&top, rel, r, false)),
        random_own: Rate::spread(&ro),
        random_other: Rate::spread(&rt),
    })
}

/// What a kind's rows at one size say over relations.
fn summarize(rows: &[&SetRow], sets: &[Vec<Unit>], total: usize) -> KindSummary {
    let m = |f: &dyn Fn(&SetRow) -> f64| mean(&rows.iter().map(|r| f(r)).collect::<Vec<_>>());
    let mut pairs = vec![];
    for i in 0..sets.len() {
        for j in i + 1..sets.len() {
            pairs.push(jaccard(&sets[i], &sets[j]));
        }
    }
    KindSummary {
        kind: rows[0].kind,
        k: rows[0].k,
        share: rows[0].k as f64 / total as f64,
        own: m(&|r| r.own.value),
        other: m(&|r| r.other.value),
        random_own: m(&|r| r.random_own.value),
        random_other: m(&|r| r.random_other.value),
        selective: rows.iter().filter(|r| r.selectivity.ci_low > 0.0).count(),
        relations: rows.len(),
        overlap: if pairs.is_empty() {
            f64::NAN
        } else {
            mean(&pairs)
        },
    }
}

/// What one kind gives: its ranking lists, its rows and its summaries.
pub struct KindResult {
    pub ranked: Vec<Ranked>,
    pub rows: Vec<SetRow>,
    pub summary: Vec<KindSummary>,
}

/// Per relation, the eight units that damage it most on the ranking facts, with the damage.
fn ranked_lists(p: &Prepared, kind: UnitKind, all: &[Unit], per_rel: &[Vec<f64>]) -> Vec<Ranked> {
    per_rel
        .iter()
        .zip(&p.relations)
        .map(|(effect, relation)| Ranked {
            relation: relation.clone(),
            kind,
            top: top_indices(effect, 8)
                .into_iter()
                .map(|i| (all[i].to_string(), effect[i]))
                .collect(),
        })
        .collect()
}

/// Rank every unit of `kind`, then measure each relation's top-k sets, for each k, against
/// random sets. `progress` counts forward passes.
pub fn run_kind(
    model: &Model,
    p: &Prepared,
    kind: UnitKind,
    ks: &[usize],
    opts: &ModularityOptions,
    progress: &mut dyn FnMut(usize),
) -> Result<KindResult> {
    check_sizes(model, kind, ks)?;
    let all = units(model, kind);
    let effects = rank(model, p, &all, opts.batch, progress)?;
    let n_rel = p.relations.len();
    let per_rel: Vec<Vec<f64>> = (0..n_rel)
        .map(|r| effects.iter().map(|e| e[r]).collect())
        .collect();
    let ranked = ranked_lists(p, kind, &all, &per_rel);
    let (mut rows, mut summary) = (vec![], vec![]);
    for &k in ks {
        let random = random_damage(model, p, &all, k, opts.random_sets, opts.seed, opts.batch)?;
        progress(opts.random_sets);
        let sets: Vec<Vec<Unit>> = (0..n_rel).map(|r| top_k(&all, &per_rel[r], k)).collect();
        let start = rows.len();
        for (r, set) in sets.iter().enumerate() {
            let seed = opts.seed ^ ((k * 31 + r) as u64);
            rows.push(set_row(model, p, set, r, &random[r], opts.batch, seed)?);
            progress(1);
        }
        let these: Vec<&SetRow> = rows[start..].iter().collect();
        summary.push(summarize(&these, &sets, all.len()));
    }
    Ok(KindResult {
        ranked,
        rows,
        summary,
    })
}

/// An error unless every size in `ks` is a set of `kind` the model has.
fn check_sizes(model: &Model, kind: UnitKind, ks: &[usize]) -> Result<()> {
    let n = units(model, kind).len();
    match ks.iter().find(|k| **k == 0 || **k > n) {
        Some(k) => Err(Error::Invalid(format!(
            "a set of {k} {} cannot be drawn from the model's {n}",
            kind.name()
        ))),
        None => Ok(()),
    }
}

/// An error unless the options' set sizes fit the model: checked before any work.
pub fn check(model: &Model, opts: &ModularityOptions) -> Result<()> {
    check_sizes(model, UnitKind::Head, &opts.head_ks)?;
    check_sizes(model, UnitKind::Neuron, &opts.neuron_ks)
}

/// Forward passes a run takes for `kind` at sizes `ks` (for a progress bar).
pub fn passes(
    model: &Model,
    n_rel: usize,
    kind: UnitKind,
    ks: &[usize],
    random_sets: usize,
) -> usize {
    units(model, kind).len() + ks.len() * (random_sets + n_rel)
}
