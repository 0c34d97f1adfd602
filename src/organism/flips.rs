//! How hard a known fact is to move: the smallest steering strength, and the smallest
//! learned-edit scale, that make its query follow its counterfactual context.
//!
//! Both act on one layer's residual at every position. The steering direction is the
//! difference of the class means (following the context against keeping the prior) of the
//! train split's last-position residuals with the context, in spreads of its projection; the
//! edit is `reft train`'s, trained on the train split's conflicts. Both are measured on the
//! known facts of the dev and test splits, which neither saw.

use super::study::{Measure, Progress, Sample, StudyEvent, StudyOptions};
use crate::data::{Form, Item, Split};
use crate::error::{Error, Result};
use crate::hooks::{Positions, Site, SiteKind, Spec};
use crate::label::{Answer, ItemLabel, Label, LabelOptions};
use crate::model::Model;

/// Fewest training items of each class the steering direction needs.
const MIN_CLASS: usize = 5;

/// What every sweep shares: the model, the conflicts with their unsteered labels, and the
/// conflicts measured (the known facts of dev and test).
struct Sweep<'a> {
    model: &'a Model,
    conflicts: &'a [Item],
    labels: &'a [ItemLabel],
    eval: Vec<usize>,
    opts: &'a StudyOptions,
}

/// The flip measures, and notes on what could not be measured.
pub fn flips(
    model: &Model,
    conflicts: &[Item],
    labels: &[ItemLabel],
    opts: &StudyOptions,
    progress: &mut Progress,
) -> Result<(Vec<Measure>, Vec<String>)> {
    let n_l = model.cfg().n_layers;
    let layer = opts.layer.unwrap_or(n_l / 2);
    if layer >= n_l {
        return Err(Error::Invalid(format!(
            "--layer {layer}: the model has layers 0 to {}",
            n_l - 1
        )));
    }
    let site = Site::new(SiteKind::ResidPost, layer);
    let train: Vec<usize> = (0..conflicts.len())
        .filter(|i| conflicts[*i].split == Some(Split::Train))
        .collect();
    let sweep = Sweep {
        model,
        conflicts,
        labels,
        eval: (0..conflicts.len())
            .filter(|i| conflicts[*i].split != Some(Split::Train) && labels[*i].known)
            .collect(),
        opts,
    };
    let (mut out, mut notes) = (vec![], vec![]);
    match direction(model, conflicts, labels, &train, site, opts, progress)? {
        Ok(v) => {
            let make = |a: f32| Ok(crate::steer::add_spec(&[site], &v, a, Positions::All));
            let what = format!("the mean-difference direction at {site}, in spreads");
            out.extend(sweep.measures("steer", &what, &opts.alphas, &make, progress)?);
        }
        Err(why) => notes.push(format!("steering not measured: {why}")),
    }
    if opts.edit_epochs > 0 {
        let edit = train_edit(model, conflicts, &train, layer, opts, progress)?;
        let make = |s: f32| edit.spec_at(s, &Positions::All);
        let what = format!(
            "the learned edit at {site} (rank 4, {} epochs), as a scale of its change",
            opts.edit_epochs
        );
        out.extend(sweep.measures("edit", &what, &opts.scales, &make, progress)?);
    }
    Ok((out, notes))
}

/// The steering vector (unit direction times the spread of the projections), or why there is
/// none.
fn direction(
    model: &Model,
    conflicts: &[Item],
    labels: &[ItemLabel],
    train: &[usize],
    site: Site,
    opts: &StudyOptions,
    progress: &mut Progress,
) -> Result<std::result::Result<Vec<f32>, String>> {
    let rows: Vec<Item> = train.iter().map(|i| conflicts[*i].clone()).collect();
    progress(StudyEvent::Stage("steering direction", rows.len()));
    let acts = crate::capture::last_position_acts(
        model,
        &rows,
        site,
        Form::Completion,
        true,
        opts.batch,
        &Spec::new(),
        &mut |n| progress(StudyEvent::Done(n)),
    )?;
    let class = |l: Label| -> Vec<&Vec<f32>> {
        train
            .iter()
            .zip(&acts)
            .filter(|(i, _)| labels[**i].label == l)
            .map(|(_, a)| a)
            .collect()
    };
    let (ctx, prior) = (class(Label::FollowsContext), class(Label::FollowsPrior));
    if ctx.len() < MIN_CLASS || prior.len() < MIN_CLASS {
        return Ok(Err(format!(
            "the train split has {} conflicts that follow the context and {} that keep the prior; the direction needs {MIN_CLASS} of each",
            ctx.len(),
            prior.len()
        )));
    }
    Ok(Ok(mean_difference(&ctx, &prior, &acts)))
}

/// The unit difference of the two class means, times the spread of all rows' projections on it.
fn mean_difference(ctx: &[&Vec<f32>], prior: &[&Vec<f32>], acts: &[Vec<f32>]) -> Vec<f32> {
    let mean = |v: &[&Vec<f32>]| -> Vec<f64> {
        let mut m = vec![0f64; v[0].len()];
        for a in v {
            m.iter_mut()
                .zip(a.iter())
                .for_each(|(s, x)| *s += *x as f64);
        }
        m.iter().map(|s| s / v.len() as f64).collect()
    };
    let diff: Vec<f64> = mean(ctx)
        .iter()
        .zip(mean(prior))
        .map(|(a, b)| a - b)
        .collect();
    let norm = diff.iter().map(|x| x * x).sum::<f64>().sqrt().max(1e-12);
    let unit: Vec<f64> = diff.iter().map(|x| x / norm).collect();
    let proj: Vec<f64> = acts
        .iter()
        .map(|a| a.iter().zip(&unit).map(|(x, u)| *x as f64 * u).sum())
        .collect();
    let m = proj.iter().sum::<f64>() / proj.len() as f64;
    let spread = (proj.iter().map(|p| (p - m).powi(2)).sum::<f64>() / proj.len() as f64).sqrt();
    unit.iter().map(|u| (u * spread) as f32).collect()
}

/// The learned edit, trained on the train split's conflicts.
fn train_edit(
    model: &Model,
    conflicts: &[Item],
    train: &[usize],
    layer: usize,
    opts: &StudyOptions,
    progress: &mut Progress,
) -> Result<crate::reft::Reft> {
    let items: Vec<Item> = train.iter().map(|i| conflicts[*i].clone()).collect();
    let topts = crate::reft::TrainOptions {
        layers: vec![layer],
        rank: 4,
        epochs: opts.edit_epochs,
        lr: 4e-3,
        batch: 8,
        forms: vec![Form::Completion],
        keep_weight: 1.0,
        seed: opts.seed,
        irrelevant: 1,
    };
    use crate::reft::TrainEvent;
    crate::reft::train(model, &items, &opts.neutral, &topts, &mut |e| match e {
        TrainEvent::Begin { steps } => progress(StudyEvent::Stage("learned edit", steps)),
        TrainEvent::Step => progress(StudyEvent::Done(1)),
        TrainEvent::Epoch(_) => {}
    })
}

impl Sweep<'_> {
    /// Per item of `eval`, the smallest strength of `grid` (ascending) at which its query with
    /// the context names the context's object: 0 when it already does unsteered, None when no
    /// strength does.
    fn smallest(
        &self,
        grid: &[f32],
        make: &dyn Fn(f32) -> Result<Spec>,
        progress: &mut Progress,
    ) -> Result<Vec<Option<f32>>> {
        let lopts = LabelOptions {
            batch_size: self.opts.batch,
            ..LabelOptions::new(Form::Completion)
        };
        let mut out: Vec<Option<f32>> = self
            .eval
            .iter()
            .map(|i| (self.labels[*i].context.greedy_answer == Answer::Context).then_some(0.0))
            .collect();
        progress(StudyEvent::Stage("strength sweep", grid.len()));
        for a in grid {
            let todo: Vec<usize> = (0..self.eval.len()).filter(|k| out[*k].is_none()).collect();
            let items: Vec<Item> = todo
                .iter()
                .map(|k| self.conflicts[self.eval[*k]].clone())
                .collect();
            if !items.is_empty() {
                let spec = make(*a)?;
                let runs =
                    crate::label::runs(self.model, &items, &lopts, &spec, true, None, &mut |_| {})?;
                for (k, r) in todo.iter().zip(runs) {
                    if r.greedy_answer == Answer::Context {
                        out[*k] = Some(*a);
                    }
                }
            }
            progress(StudyEvent::Done(1));
        }
        Ok(out)
    }

    /// The sweep's two measures: flipped within the grid, and the smallest strength.
    fn measures(
        &self,
        name: &str,
        what: &str,
        grid: &[f32],
        make: &dyn Fn(f32) -> Result<Spec>,
        progress: &mut Progress,
    ) -> Result<Vec<Measure>> {
        let s = self.smallest(grid, make, progress)?;
        Ok(flip_measures(
            name,
            what,
            &self.eval,
            self.conflicts,
            &s,
            grid,
        ))
    }
}

/// Two measures from a sweep: flipped within the grid, and the smallest strength (an item no
/// strength flips counts as twice the largest).
fn flip_measures(
    name: &str,
    what: &str,
    eval: &[usize],
    conflicts: &[Item],
    smallest: &[Option<f32>],
    grid: &[f32],
) -> Vec<Measure> {
    let cap = 2.0 * grid.iter().cloned().fold(0f32, f32::max) as f64;
    let samples = |f: &dyn Fn(Option<f32>) -> f64| -> Vec<Sample> {
        eval.iter()
            .zip(smallest)
            .map(|(i, s)| Sample {
                exposure: conflicts[*i].exposure.unwrap_or(0),
                value: f(*s),
            })
            .collect()
    };
    vec![
        Measure::new(
            &format!("{name}_flipped"),
            &format!("a known fact's query follows its counterfactual context at some strength up to {} of {what}", grid.last().copied().unwrap_or(0.0)),
            samples(&|s| if s.is_some() { 1.0 } else { 0.0 }),
        ),
        Measure::new(
            &format!("{name}_strength"),
            &format!("the smallest strength of {what} that makes a known fact's query follow its counterfactual context (none: counted as {cap})"),
            samples(&|s| s.map_or(cap, |a| a as f64)),
        ),
    ]
}
