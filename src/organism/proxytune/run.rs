//! One run of `organism proxy`: tune both models, measure every point, compare, report.

use super::moved::{residual_change, weight_change, Moved};
use super::{
    corpus, matched, point, proxy_scores, roles, with_replay, Matched, Method, Point, Probe,
    ProxyOptions,
};
use crate::error::{Error, Result};
use crate::model::{Model, WeightsMode};
use crate::organism::modularity::{judge, Queries, Scored};
use crate::organism::tune::{step_dir, tune, TuneRecord};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::Arc;

/// What `organism proxy` reports.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ProxyReport {
    pub command: String,
    pub world: String,
    pub large: String,
    pub small: String,
    pub seconds: f64,
    pub options: ProxyOptions,
    pub taught: usize,
    pub control: usize,
    /// Old facts (exposure ≥ 1) the large model answers before any tuning.
    pub old_known: usize,
    pub tuning_lines: usize,
    /// Seconds and mean loss over the last 10 steps of each tuning: large, then small.
    pub tune_seconds: [f64; 2],
    pub tune_final_loss: [f64; 2],
    pub points: Vec<Point>,
    pub matched: Vec<Matched>,
    pub moved: Vec<Moved>,
}

/// What a run reports as it goes.
pub enum ProxyEvent<'a> {
    Tuning {
        model: &'a str,
        step: usize,
        loss: f64,
    },
    Measured(&'a Point),
}

/// The models and folders of a run, and the command line that asked for it (for the report).
pub struct Setup<'a> {
    pub command: String,
    pub world: &'a Path,
    pub large: &'a Path,
    pub small: &'a Path,
    pub out: &'a Path,
}

fn load(dir: &Path) -> Result<Model> {
    Model::load(dir, WeightsMode::F32)
}

fn last_loss(r: &TuneRecord) -> f64 {
    let n = r.losses.len().min(10);
    r.losses[r.losses.len() - n..].iter().sum::<f64>() / n.max(1) as f64
}

/// Tune `init` on `lines` into `out/<name>`.
fn tuned(
    s: &Setup,
    init: &Path,
    name: &str,
    lines: &[String],
    o: &ProxyOptions,
    on: &mut dyn FnMut(ProxyEvent),
) -> Result<TuneRecord> {
    tune(
        init,
        lines,
        &s.out.join(name),
        &o.schedule,
        &o.save_at,
        &mut |step, loss| {
            on(ProxyEvent::Tuning {
                model: name,
                step,
                loss,
            })
        },
    )
}

/// An error unless the small model shares the large one's tokenizer.
fn check_shared(large: &Model, small: Model) -> Result<Arc<Model>> {
    let small = Arc::new(small);
    let p = crate::proxy::Proxy {
        expert: small.clone(),
        base: small.clone(),
        alpha: 1.0,
    };
    p.check(large)?;
    Ok(small)
}

/// The fine-tuned, the small tuned alone and the proxy points at one saved step.
fn points_at(
    s: &Setup,
    step: usize,
    probe: &Probe,
    base: (&[Scored], &[Vec<f32>], &[Vec<f32>]),
    o: &ProxyOptions,
) -> Result<Vec<Point>> {
    let (base_scores, large_logits, small_logits) = base;
    let q = &probe.queries;
    let ft = probe.logits(&load(&step_dir(&s.out.join("large"), step))?, o.batch)?;
    let mut out = vec![point(
        Method::FineTune { step },
        probe,
        base_scores,
        &judge(&ft, &q.target),
    )];
    let expert = probe.logits(&load(&step_dir(&s.out.join("small"), step))?, o.batch)?;
    out.push(point(
        Method::Small { step },
        probe,
        base_scores,
        &judge(&expert, &q.target),
    ));
    for &alpha in &o.alphas {
        let sc = proxy_scores(probe, large_logits, &expert, small_logits, alpha);
        out.push(point(
            Method::Proxy { step, alpha },
            probe,
            base_scores,
            &sc,
        ));
    }
    Ok(out)
}

/// How far the large model's and the small model's last tunings moved them.
fn moved(s: &Setup, probe: &Probe, base: &[Scored], o: &ProxyOptions) -> Result<Vec<Moved>> {
    let last = *o.save_at.iter().max().unwrap_or(&o.schedule.steps);
    let c = probe.n_taught + probe.n_control;
    let keep: Vec<bool> = (0..base.len()).map(|i| i >= c && base[i].top).collect();
    let old: Queries = probe.queries.filtered(&keep);
    let mut out = vec![];
    for (name, init) in [("large", s.large), ("small", s.small)] {
        let dir = step_dir(&s.out.join(name), last);
        let before = load(init)?;
        let (weights, embedding) = weight_change(init, &dir, before.cfg().n_layers)?;
        let residual = residual_change(&before, &load(&dir)?, &old, o.batch)?;
        out.push(Moved {
            model: format!("{name}, fine-tuned {last} steps"),
            weights,
            embedding,
            residual,
        });
    }
    Ok(out)
}

/// Check the options before anything runs.
pub fn check(o: &ProxyOptions) -> Result<()> {
    o.schedule.check()?;
    if o.save_at.is_empty() || o.save_at.iter().any(|s| *s == 0 || *s > o.schedule.steps) {
        return Err(Error::Invalid(format!(
            "--save-at {:?}: give steps from 1 to --steps {}",
            o.save_at, o.schedule.steps
        )));
    }
    if o.facts == 0 || o.repeats == 0 || o.alphas.iter().any(|a| !a.is_finite()) {
        return Err(Error::Invalid(
            "--facts and --repeats must be at least 1, and --alphas finite".into(),
        ));
    }
    if !(0.0..1.0).contains(&o.replay) {
        return Err(Error::Invalid(format!(
            "--replay {}: give a share from 0 to below 1",
            o.replay
        )));
    }
    Ok(())
}

/// Run the experiment: tune both models, measure every point, compare.
pub fn run(s: &Setup, o: &ProxyOptions, on: &mut dyn FnMut(ProxyEvent)) -> Result<ProxyReport> {
    check(o)?;
    let t0 = std::time::Instant::now();
    let items = crate::organism::study::read_items(s.world)?.conflicts;
    let w = crate::organism::world::read(s.world)?;
    let r = roles(&items, o.facts, o.schedule.seed)?;
    let taught = corpus(&r.taught, &w.templates, o.repeats, o.schedule.seed)?;
    let lines = with_replay(taught, s.world, o.replay, o.schedule.seed)?;
    let large = load(s.large)?;
    let small = check_shared(&large, load(s.small)?)?;
    let probe = Probe::new(&large, &r)?;
    let rec = [
        tuned(s, s.large, "large", &lines, o, on)?,
        tuned(s, s.small, "small", &lines, o, on)?,
    ];
    let large_logits = probe.logits(&large, o.batch)?;
    let small_logits = probe.logits(&small, o.batch)?;
    let base = judge(&large_logits, &probe.queries.target);
    let mut points = vec![point(Method::Base, &probe, &base, &base)];
    on(ProxyEvent::Measured(&points[0]));
    let mut steps = o.save_at.clone();
    steps.sort();
    steps.dedup();
    for step in steps {
        for p in points_at(s, step, &probe, (&base, &large_logits, &small_logits), o)? {
            on(ProxyEvent::Measured(&p));
            points.push(p);
        }
    }
    let (matched, moved) = (matched(&points), moved(s, &probe, &base, o)?);
    Ok(ProxyReport {
        command: s.command.clone(),
        world: s.world.display().to_string(),
        large: s.large.display().to_string(),
        small: s.small.display().to_string(),
        seconds: t0.elapsed().as_secs_f64(),
        options: o.clone(),
        taught: r.taught.len(),
        control: r.control.len(),
        old_known: points[0].kept.len(),
        tuning_lines: lines.len(),
        tune_seconds: [rec[0].seconds, rec[1].seconds],
        tune_final_loss: [last_loss(&rec[0]), last_loss(&rec[1])],
        matched,
        moved,
        points,
    })
}
