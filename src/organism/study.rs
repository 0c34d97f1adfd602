//! `organism study`: what a fact's exposure does to how a model holds it.
//!
//! Every measure yields one sample per fact (or per known fact), tagged with the fact's
//! exposure; [`super::summary`] turns samples into per-bucket means with bootstrap intervals
//! and a slope against log-exposure. The measures:
//! - answers: closed-book recall; with the fact's counterfactual context, following it or
//!   keeping the memorized answer; with contexts about other subjects (irrelevant), leaving the
//!   closed-book answer's class unchanged, or naming the distractor;
//! - density at the closed-book query, averaged over tokens and layers: Hoyer sparsity and the
//!   active fraction at the MLP, Hoyer sparsity and the participation ratio of the residual;
//! - separability of the fact's object at the query's last position: a nearest-class-mean
//!   linear classifier over the relation's objects, cross-fitted on two halves of the subjects;
//! - the smallest steering strength, and the smallest learned-edit scale, that make a known
//!   fact's query follow its counterfactual context.

use crate::data::{Item, Variant};
use crate::density::{self, ItemDensity};
use crate::error::{Error, Result};
use crate::hooks::{Site, SiteKind, Spec};
use crate::label::{Answer, ItemLabel, LabelOptions};
use crate::model::Model;
use std::collections::BTreeMap;
use std::path::Path;

/// One fact's value of a measure.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sample {
    pub exposure: u32,
    pub value: f64,
}

/// The samples of one measure.
#[derive(Clone, Debug)]
pub struct Measure {
    /// Short name, used as the key in report.json.
    pub name: String,
    /// What a sample's value is.
    pub about: String,
    pub samples: Vec<Sample>,
}

impl Measure {
    pub(crate) fn new(name: &str, about: &str, samples: Vec<Sample>) -> Measure {
        Measure {
            name: name.into(),
            about: about.into(),
            samples,
        }
    }
}

/// Settings of a study.
#[derive(Clone, Debug)]
pub struct StudyOptions {
    pub batch: usize,
    /// The layer whose residual the steering direction and the learned edit act on (None:
    /// the middle layer).
    pub layer: Option<usize>,
    /// Steering strengths tried, in spreads of the direction's projection.
    pub alphas: Vec<f32>,
    /// Learned-edit scales tried.
    pub scales: Vec<f32>,
    /// Epochs of the learned edit (0: no edit is trained, and its measure is left out).
    pub edit_epochs: usize,
    /// Neutral passages the edit keeps as the model had them (the world's corpus lines).
    pub neutral: Vec<String>,
    pub seed: u64,
}

impl Default for StudyOptions {
    fn default() -> Self {
        StudyOptions {
            batch: 32,
            layer: None,
            alphas: vec![0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0],
            scales: vec![0.5, 1.0, 2.0, 4.0, 8.0, 16.0],
            edit_epochs: 2,
            neutral: vec![],
            seed: 0,
        }
    }
}

/// The world's evaluation items the study reads.
#[derive(Clone, Debug)]
pub struct StudyItems {
    /// One counterfactual conflict per fact.
    pub conflicts: Vec<Item>,
    /// Contexts about other subjects, several per fact.
    pub irrelevant: Vec<Item>,
}

/// Read a world's `variants.jsonl`, checking that every item carries its exposure.
pub fn read_items(world: &Path) -> Result<StudyItems> {
    super::world::read(world)?;
    let path = world.join("variants.jsonl");
    let (items, _) = crate::data::read_jsonl(&path, false)?;
    if let Some(it) = items.iter().find(|it| it.exposure.is_none()) {
        return Err(Error::file(
            &path,
            format!("item {} has no exposure; is this an organism world?", it.id),
        ));
    }
    let of = |v: Variant| -> Vec<Item> {
        items
            .iter()
            .filter(|it| it.variant == Some(v))
            .cloned()
            .collect()
    };
    let out = StudyItems {
        conflicts: of(Variant::Counterfactual),
        irrelevant: of(Variant::Irrelevant),
    };
    if out.conflicts.is_empty() {
        return Err(Error::file(&path, "no counterfactual items"));
    }
    Ok(out)
}

fn exposure(it: &Item) -> u32 {
    it.exposure.unwrap_or(0)
}

fn bit(b: bool) -> f64 {
    if b {
        1.0
    } else {
        0.0
    }
}

/// What the study reports as it goes: a stage's name and its item count, then items done.
pub enum StudyEvent<'a> {
    Stage(&'a str, usize),
    Done(usize),
}

pub type Progress<'a> = dyn FnMut(StudyEvent) + 'a;

/// Closed-book recall, following and keeping against the counterfactual, and the irrelevant
/// contexts' two measures. Returns the conflicts' labels too.
pub fn answers(
    model: &Model,
    items: &StudyItems,
    opts: &StudyOptions,
    progress: &mut Progress,
) -> Result<(Vec<Measure>, Vec<ItemLabel>)> {
    let lopts = LabelOptions {
        batch_size: opts.batch,
        ..LabelOptions::new(crate::data::Form::Completion)
    };
    let spec = Spec::new();
    progress(StudyEvent::Stage("answers", items.conflicts.len()));
    let labels = crate::label::label_items(model, &items.conflicts, &lopts, &spec, &mut |n| {
        progress(StudyEvent::Done(n));
        Ok(())
    })?;
    let per = |f: &dyn Fn(&ItemLabel) -> bool| per_fact(&items.conflicts, &labels, &|l| bit(f(l)));
    let mut out = vec![
        Measure::new(
            "recall",
            "closed-book answer is the fact's object",
            per(&|l| l.known),
        ),
        Measure::new(
            "follows_counterfactual",
            "with a counterfactual context, the answer is the context's object",
            per(&|l| l.context.greedy_answer == Answer::Context),
        ),
        Measure::new(
            "keeps_memory",
            "with a counterfactual context, the answer is still the fact's object",
            per(&|l| l.context.greedy_answer == Answer::Prior),
        ),
    ];
    out.extend(likelihoods(&items.conflicts, &labels));
    out.extend(irrelevant(model, &items.irrelevant, &lopts, progress)?);
    Ok((out, labels))
}

/// One sample per conflict: `f` of its label, at the fact's exposure.
fn per_fact(
    conflicts: &[Item],
    labels: &[ItemLabel],
    f: &dyn Fn(&ItemLabel) -> f64,
) -> Vec<Sample> {
    conflicts
        .iter()
        .zip(labels)
        .map(|(it, l)| Sample {
            exposure: exposure(it),
            value: f(l),
        })
        .collect()
}

/// The teacher-forced likelihoods: of the fact's object closed-book (what training on the
/// fact taught; at exposure 0 only what the relation taught), and of the counterfactual
/// context's object after it (reading).
fn likelihoods(conflicts: &[Item], labels: &[ItemLabel]) -> Vec<Measure> {
    vec![
        Measure::new(
            "closed_nll",
            "closed-book negative log-likelihood of the fact's object, in nats (summed over its \
             tokens; at exposure 0 the fact was never stated, so this is what the model has \
             learned of the relation, not of the fact)",
            per_fact(conflicts, labels, &|l| -f64::from(l.closed.logp_prior)),
        ),
        Measure::new(
            "context_nll",
            "negative log-likelihood of the counterfactual context's object after that context, \
             in nats (reading, a skill no single fact teaches)",
            per_fact(conflicts, labels, &|l| -f64::from(l.context.logp_context)),
        ),
    ]
}

/// Per fact, the share of its irrelevant contexts that leave the answer's class as closed-book,
/// and the share whose answer names the distractor.
fn irrelevant(
    model: &Model,
    items: &[Item],
    lopts: &LabelOptions,
    progress: &mut Progress,
) -> Result<Vec<Measure>> {
    if items.is_empty() {
        return Ok(vec![]);
    }
    progress(StudyEvent::Stage("irrelevant contexts", items.len()));
    let labels = crate::label::label_items(model, items, lopts, &Spec::new(), &mut |n| {
        progress(StudyEvent::Done(n));
        Ok(())
    })?;
    // (relation, subject) -> (exposure, unchanged per context, distractor named per context)
    type PerFact = (u32, Vec<f64>, Vec<f64>);
    let mut facts: BTreeMap<(&str, &str), PerFact> = BTreeMap::new();
    for (it, l) in items.iter().zip(&labels) {
        let e = facts
            .entry((&it.relation, &it.subject))
            .or_insert((exposure(it), vec![], vec![]));
        e.1.push(bit(l.context.greedy_answer == l.closed.greedy_answer));
        e.2.push(bit(l.context.greedy_answer == Answer::Context));
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    let col = |k: usize| -> Vec<Sample> {
        facts
            .values()
            .map(|(x, u, d)| Sample {
                exposure: *x,
                value: mean(if k == 0 { u } else { d }),
            })
            .collect()
    };
    Ok(vec![
        Measure::new(
            "irrelevant_unchanged",
            "share of the fact's irrelevant contexts that leave the closed-book answer's class",
            col(0),
        ),
        Measure::new(
            "distractor_named",
            "share of the fact's irrelevant contexts whose answer names the distractor",
            col(1),
        ),
    ])
}

/// Density at each fact's closed-book query, averaged over the query's tokens and the layers.
pub fn densities(
    model: &Model,
    conflicts: &[Item],
    opts: &StudyOptions,
    progress: &mut Progress,
) -> Result<Vec<Measure>> {
    let probes = conflicts
        .iter()
        .map(|it| {
            Ok(density::Probe {
                id: it.id.clone(),
                condition: "exposure".into(),
                side: exposure(it).to_string(),
                ids: model.tokenizer.encode_prompt(&it.prompt)?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let n_l = model.cfg().n_layers;
    let at = |k: SiteKind| (0..n_l).map(|l| Site::new(k, l)).collect::<Vec<_>>();
    let mut out = Vec::new();
    for (kind, metrics) in [
        (SiteKind::MlpPost, ["hoyer", "active"]),
        (SiteKind::ResidPost, ["hoyer", "participation"]),
    ] {
        progress(StudyEvent::Stage("density", probes.len()));
        let d = density::measure(
            model,
            &probes,
            &at(kind),
            density::DEFAULT_TAU,
            opts.batch,
            &mut |n| progress(StudyEvent::Done(n)),
        )?;
        let place = if kind == SiteKind::MlpPost {
            "mlp"
        } else {
            "resid"
        };
        for m in metrics {
            out.push(layer_mean(conflicts, &d, m, place));
        }
    }
    Ok(out)
}

fn layer_mean(conflicts: &[Item], d: &[ItemDensity], metric: &str, place: &str) -> Measure {
    let samples = conflicts
        .iter()
        .zip(d)
        .map(|(it, x)| {
            let v = &x.layers[metric];
            Sample {
                exposure: exposure(it),
                value: v.iter().sum::<f64>() / v.len().max(1) as f64,
            }
        })
        .collect();
    let about = format!(
        "{metric} at {}, the mean over the closed-book query's tokens and all layers",
        if place == "mlp" {
            "mlp.hook_post"
        } else {
            "hook_resid_post"
        }
    );
    Measure::new(&format!("{metric}_{place}"), &about, samples)
}

/// Which half of the subjects an item's subject falls in, for cross-fitting
/// ([`crate::data::SubjectSplit::halves`]: 0 for its first half, 1 for its second).
fn half(subject: &str) -> usize {
    match crate::data::SubjectSplit::halves().of(subject) {
        crate::data::Split::Dev => 0,
        _ => 1,
    }
}

/// Whether each item's object is the nearest class mean (over its relation's items in the
/// other half of the subjects) to its standardized activation.
fn nearest_mean_correct(items: &[Item], acts: &[Vec<f32>]) -> Vec<bool> {
    let d = acts.first().map_or(0, |a| a.len());
    let n = acts.len().max(1) as f64;
    let mut mean = vec![0f64; d];
    let mut var = vec![0f64; d];
    for a in acts {
        for j in 0..d {
            mean[j] += a[j] as f64 / n;
        }
    }
    for a in acts {
        for j in 0..d {
            var[j] += (a[j] as f64 - mean[j]).powi(2) / n;
        }
    }
    let z = |a: &[f32]| -> Vec<f64> {
        (0..d)
            .map(|j| (a[j] as f64 - mean[j]) / var[j].sqrt().max(1e-9))
            .collect()
    };
    let zs: Vec<Vec<f64>> = acts.iter().map(|a| z(a)).collect();
    // (relation, half, object) -> (sum, count)
    let mut sums: BTreeMap<(&str, usize, &str), (Vec<f64>, usize)> = BTreeMap::new();
    for (it, x) in items.iter().zip(&zs) {
        let e = sums
            .entry((&it.relation, half(&it.subject), &it.prior_answer))
            .or_insert((vec![0.0; d], 0));
        e.0.iter_mut().zip(x).for_each(|(s, v)| *s += v);
        e.1 += 1;
    }
    items
        .iter()
        .zip(&zs)
        .map(|(it, x)| {
            let other = 1 - half(&it.subject);
            let dist = |(s, c): &(Vec<f64>, usize)| -> f64 {
                s.iter()
                    .zip(x)
                    .map(|(a, b)| (a / *c as f64 - b).powi(2))
                    .sum()
            };
            let best = sums
                .iter()
                .filter(|((r, h, _), _)| *r == it.relation && *h == other)
                .min_by(|a, b| dist(a.1).total_cmp(&dist(b.1)));
            best.is_some_and(|((_, _, o), _)| *o == it.prior_answer)
        })
        .collect()
}

/// Separability of the fact's object at the closed-book query's last position, at the layer
/// whose residual separates objects best overall. Returns the measure and that layer.
pub fn separability(
    model: &Model,
    conflicts: &[Item],
    opts: &StudyOptions,
    progress: &mut Progress,
) -> Result<(Measure, usize)> {
    let n_l = model.cfg().n_layers;
    progress(StudyEvent::Stage("object probe", conflicts.len()));
    let sites: Vec<Site> = (0..n_l)
        .map(|l| Site::new(SiteKind::ResidPost, l))
        .collect();
    let acts = crate::capture::last_position_acts_at(
        model,
        conflicts,
        &sites,
        crate::data::Form::Completion,
        false,
        opts.batch,
        &Spec::new(),
        &mut |n| progress(StudyEvent::Done(n)),
    )?;
    let mut best: Option<(f64, usize, Vec<bool>)> = None;
    for (l, acts) in acts.iter().enumerate() {
        let ok = nearest_mean_correct(conflicts, acts);
        let acc = ok.iter().filter(|b| **b).count() as f64 / ok.len().max(1) as f64;
        if best.as_ref().is_none_or(|b| acc > b.0) {
            best = Some((acc, l, ok));
        }
    }
    let (_, layer, ok) = best.ok_or_else(|| Error::Invalid("the model has no layers".into()))?;
    let samples = conflicts
        .iter()
        .zip(&ok)
        .map(|(it, b)| Sample {
            exposure: exposure(it),
            value: bit(*b),
        })
        .collect();
    let about = format!(
        "the object is the nearest class mean at blocks.{layer}.hook_resid_post (the best layer), \
         cross-fitted on two halves of the subjects; chance is 1 / the relation's objects"
    );
    Ok((Measure::new("object_separable", &about, samples), layer))
}
