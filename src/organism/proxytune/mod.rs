//! `organism proxy`: teach a trained organism new facts two ways, and measure what each keeps.
//!
//! The new facts are facts of the world that the models never saw (exposure 0). A tuning
//! corpus states each of them a few times, with the relation's templates. The large model is
//! fine-tuned on it directly (checkpoints along the way give a curve); a small model of the
//! same world is fine-tuned on it the same way, and the large one is proxy-tuned with it
//! (Liu et al. 2024: logits = large + α·(small tuned − small), at the answer's token). Gain is
//! closed-book recall of the taught facts; retention is the share of the facts the large model
//! knew before (exposure ≥ 1) that it still answers, per exposure bucket; a control is recall
//! of never-seen facts that were not taught. Every proxy point is set against the fine-tuning
//! checkpoint of the nearest gain, paired on the same old facts.

pub mod moved;
pub mod report;
mod run;
pub use run::*;

use super::modularity::{judge, last_logits, Queries, Scored};
use super::train::TrainOptions;
use crate::data::Item;
use crate::error::{Error, Result};
use crate::hooks::Spec;
use crate::model::Model;
use crate::proxy::Proxy;
use crate::stats::Rate;
use crate::stats::SplitMix;
use serde::{Deserialize, Serialize};

/// Settings of the experiment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProxyOptions {
    /// Never-seen facts taught.
    pub facts: usize,
    /// Statements of each taught fact in the tuning corpus (its templates in turn).
    pub repeats: usize,
    /// Share of the tuning corpus drawn from the world's own corpus (replay), from 0 to
    /// below 1.
    #[serde(default)]
    pub replay: f64,
    /// The fine-tuning schedule, the same for the large and the small model (its shape fields
    /// are each model's own).
    pub schedule: TrainOptions,
    /// Steps at which the tuned models are saved and measured.
    pub save_at: Vec<usize>,
    /// Weights of the small model's shift.
    pub alphas: Vec<f32>,
    /// Queries per forward pass.
    pub batch: usize,
}

/// How the large model is changed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Method {
    /// Untouched.
    Base,
    /// Fine-tuned for `step` steps.
    FineTune { step: usize },
    /// Proxy-tuned by the small model tuned for `step` steps, with weight `alpha`.
    Proxy { step: usize, alpha: f32 },
    /// The tuned small model alone (for reference).
    Small { step: usize },
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Method::Base => write!(f, "large, untouched"),
            Method::FineTune { step } => write!(f, "fine-tune, step {step}"),
            Method::Proxy { step, alpha } => write!(f, "proxy α={alpha}, small step {step}"),
            Method::Small { step } => write!(f, "small tuned alone, step {step}"),
        }
    }
}

/// The facts the experiment reads, by role.
pub struct Roles {
    /// Never seen, taught.
    pub taught: Vec<Item>,
    /// Never seen, not taught.
    pub control: Vec<Item>,
    /// Seen at least once in pretraining.
    pub old: Vec<Item>,
}

/// `n` of the never-seen facts (one counterfactual item per fact) chosen by `seed` to teach;
/// the other never-seen facts are the control, the seen ones are old.
pub fn roles(items: &[Item], n: usize, seed: u64) -> Result<Roles> {
    let (mut never, old): (Vec<Item>, Vec<Item>) =
        items.iter().cloned().partition(|it| it.exposure == Some(0));
    if never.len() < n + 1 {
        return Err(Error::Invalid(format!(
            "the world has {} never-seen facts; --facts {n} needs at least one more, for the control",
            never.len()
        )));
    }
    SplitMix(seed ^ 0x7072_6f78_7900).shuffle(&mut never);
    let control = never.split_off(n);
    Ok(Roles {
        taught: never,
        control,
        old,
    })
}

/// The tuning corpus: each taught fact stated `repeats` times, its relation's templates in
/// turn, the lines shuffled by `seed`.
pub fn corpus(
    taught: &[Item],
    templates: &std::collections::BTreeMap<String, Vec<String>>,
    repeats: usize,
    seed: u64,
) -> Result<Vec<String>> {
    let mut lines = vec![];
    for it in taught {
        let t = templates
            .get(&it.relation)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| Error::Invalid(format!("no template for relation {}", it.relation)))?;
        for r in 0..repeats {
            let line = t[r % t.len()]
                .replace("{s}", &it.subject)
                .replace("{o}", &it.prior_answer);
            lines.push(line);
        }
    }
    SplitMix(seed ^ 0x636f_7270_7573).shuffle(&mut lines);
    Ok(lines)
}

/// `lines` with replayed lines of the world's corpus, so that they make up `share` of the
/// result, drawn and mixed by `seed`.
pub fn with_replay(
    lines: Vec<String>,
    world: &std::path::Path,
    share: f64,
    seed: u64,
) -> Result<Vec<String>> {
    if share <= 0.0 {
        return Ok(lines);
    }
    let p = world.join("corpus.txt");
    let text = std::fs::read_to_string(&p).map_err(|e| Error::file(&p, e))?;
    let mut pool: Vec<String> = text
        .lines()
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    let want = (lines.len() as f64 * share / (1.0 - share)).round() as usize;
    let mut rng = SplitMix(seed ^ 0x7265_706c_6179);
    rng.shuffle(&mut pool);
    pool.truncate(want);
    let mut all = lines;
    all.extend(pool);
    rng.shuffle(&mut all);
    Ok(all)
}

/// The closed-book queries of every role, in one list: taught, control, old.
pub struct Probe {
    pub queries: Queries,
    pub n_taught: usize,
    pub n_control: usize,
    /// The old facts' exposures, in order.
    pub exposure: Vec<u32>,
}

impl Probe {
    pub fn new(model: &Model, r: &Roles) -> Result<Probe> {
        let all: Vec<&Item> = r.taught.iter().chain(&r.control).chain(&r.old).collect();
        let mut rels: Vec<String> = all.iter().map(|it| it.relation.clone()).collect();
        rels.sort();
        rels.dedup();
        Ok(Probe {
            queries: Queries::of(model, &all, &rels)?,
            n_taught: r.taught.len(),
            n_control: r.control.len(),
            exposure: r.old.iter().map(|it| it.exposure.unwrap_or(0)).collect(),
        })
    }

    /// Every query's last-position logits under `model`.
    pub fn logits(&self, model: &Model, batch: usize) -> Result<Vec<Vec<f32>>> {
        last_logits(model, &self.queries, &Spec::new(), batch)
    }
}

/// One exposure bucket's retention.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Bucket {
    pub exposure: u32,
    pub n: usize,
    pub kept: Rate,
}

/// What one way of changing the model gives.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Point {
    pub method: Method,
    pub label: String,
    /// Share of taught facts answered closed-book, and their mean log-probability.
    pub gain: Rate,
    pub taught_logp: f64,
    /// Share of never-seen, untaught facts answered (chance level if nothing leaks).
    pub control: Rate,
    /// Share of the old facts the large model knew that are still answered, over all and by
    /// exposure; and their mean fall in log-probability (nats).
    pub retention: Rate,
    pub by_exposure: Vec<Bucket>,
    pub old_logp_drop: f64,
    /// Per known old fact, whether it is still answered (for the paired comparisons).
    #[serde(skip)]
    pub kept: Vec<bool>,
}

fn share(v: &[bool], seed: u64) -> Rate {
    Rate::share(v, REPS, seed)
}

/// Bootstrap resamples behind the experiment's intervals.
const REPS: usize = 2000;

/// The point of `scores` (every probe query, in order) against the large model's `base`.
pub fn point(method: Method, probe: &Probe, base: &[Scored], scores: &[Scored]) -> Point {
    let (t, c) = (probe.n_taught, probe.n_taught + probe.n_control);
    let known: Vec<usize> = (c..scores.len()).filter(|i| base[*i].top).collect();
    let kept: Vec<bool> = known.iter().map(|i| scores[*i].top).collect();
    let mut exposures: Vec<u32> = known.iter().map(|i| probe.exposure[i - c]).collect();
    exposures.sort();
    exposures.dedup();
    let by_exposure = exposures
        .into_iter()
        .map(|e| {
            let v: Vec<bool> = known
                .iter()
                .zip(&kept)
                .filter(|(i, _)| probe.exposure[**i - c] == e)
                .map(|(_, k)| *k)
                .collect();
            Bucket {
                exposure: e,
                n: v.len(),
                kept: share(&v, u64::from(e)),
            }
        })
        .collect();
    let drop: f64 = known.iter().map(|i| base[*i].logp - scores[*i].logp).sum();
    let tops = |r: std::ops::Range<usize>| scores[r].iter().map(|s| s.top).collect::<Vec<_>>();
    Point {
        label: method.to_string(),
        method,
        gain: share(&tops(0..t), 1),
        taught_logp: scores[..t].iter().map(|s| s.logp).sum::<f64>() / t.max(1) as f64,
        control: share(&tops(t..c), 2),
        retention: share(&kept, 3),
        by_exposure,
        old_logp_drop: drop / known.len().max(1) as f64,
        kept,
    }
}

/// The proxy-tuned scores: the large model's logits shifted by α times the tuned small
/// model's minus the small model's, query by query.
pub fn proxy_scores(
    probe: &Probe,
    large: &[Vec<f32>],
    expert: &[Vec<f32>],
    base: &[Vec<f32>],
    alpha: f32,
) -> Vec<Scored> {
    let combined: Vec<Vec<f32>> = (0..large.len())
        .map(|i| Proxy::combine_with(alpha, &large[i], &expert[i], &base[i]))
        .collect();
    judge(&combined, &probe.queries.target)
}

/// A proxy point set against the fine-tuning point of the nearest gain.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Matched {
    pub proxy: String,
    pub alpha: f32,
    pub fine_tune: String,
    /// Proxy's gain minus fine-tuning's (share of taught facts).
    pub gain_difference: f64,
    /// Proxy's retention minus fine-tuning's, paired on the same old facts.
    pub retention_difference: Rate,
}

/// The matched pairs of weight `alpha` whose gains are within `points` of each other: how
/// many, how many keep more under the proxy and how many under fine-tuning (paired interval
/// clear of 0).
pub fn close_pairs(m: &[Matched], points: f64, alpha: f32) -> (usize, usize, usize) {
    let close: Vec<&Matched> = m
        .iter()
        .filter(|x| x.alpha == alpha && (100.0 * x.gain_difference).abs() <= points)
        .collect();
    let proxy = close
        .iter()
        .filter(|x| x.retention_difference.ci_low > 0.0)
        .count();
    let ft = close
        .iter()
        .filter(|x| x.retention_difference.ci_high < 0.0)
        .count();
    (close.len(), proxy, ft)
}

/// The untouched, fine-tuned and proxy points that no other of them beats on both gain and
/// retention (at least as good on both, better on one), by gain.
pub fn frontier(points: &[Point]) -> Vec<&Point> {
    let pool: Vec<&Point> = points
        .iter()
        .filter(|p| !matches!(p.method, Method::Small { .. }))
        .collect();
    let beats = |a: &Point, b: &Point| {
        let (ga, ra, gb, rb) = (
            a.gain.value,
            a.retention.value,
            b.gain.value,
            b.retention.value,
        );
        ga >= gb && ra >= rb && (ga > gb || ra > rb)
    };
    let mut f: Vec<&Point> = pool
        .iter()
        .filter(|p| !pool.iter().any(|q| beats(q, p)))
        .copied()
        .collect();
    f.sort_by(|a, b| a.gain.value.total_cmp(&b.gain.value));
    f
}

/// Each proxy point against the fine-tuning point whose gain is nearest.
pub fn matched(points: &[Point]) -> Vec<Matched> {
    let ft: Vec<&Point> = points
        .iter()
        .filter(|p| matches!(p.method, Method::FineTune { .. }))
        .collect();
    points
        .iter()
        .filter_map(|p| {
            let Method::Proxy { alpha, .. } = p.method else {
                return None;
            };
            let f = ft.iter().min_by(|a, b| {
                let d = |x: &Point| (x.gain.value - p.gain.value).abs();
                d(a).total_cmp(&d(b))
            })?;
            let diff: Vec<f64> = p
                .kept
                .iter()
                .zip(&f.kept)
                .map(|(a, b)| f64::from(u8::from(*a)) - f64::from(u8::from(*b)))
                .collect();
            Some(Matched {
                proxy: p.label.clone(),
                alpha,
                fine_tune: f.label.clone(),
                gain_difference: p.gain.value - f.gain.value,
                retention_difference: Rate::bootstrap(&diff, REPS, 4),
            })
        })
        .collect()
}
