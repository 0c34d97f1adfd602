//! `organism shapes`: depth against width. Models of a few shapes, paired at equal budgets of
//! non-embedding parameters (deep and thin against wide and shallow), are trained on the same
//! world with the same tokens and steps, and each is studied as `organism study` does (recall
//! by exposure, the likelihood of seen and never-seen facts, density, stickiness). The report
//! sets the shapes side by side.

use super::capacity::Shape;
use super::study_report::{fits_table_with, num, StudyReport};
use super::summary::Snapshot;
use super::TrainOptions;
use crate::error::Result;
use crate::markup::md_table;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Two budgets, each as a deep-thin and a wide-shallow model of equal non-embedding size.
pub const DEFAULT_SHAPES: &str = "4x64,1x128,4x128,1x256";

/// Heads of every shape: the same count, so that depth and width alone differ.
pub const HEADS: usize = 4;

/// The SwiGLU hidden layer is this many times the width (the default organism's ratio).
pub const MLP_RATIO: usize = 3;

/// `base`'s schedule (steps, batch, sequence, learning rate, seed) with shape `s`: its depth
/// and width, [`HEADS`] heads and a SwiGLU layer [`MLP_RATIO`] times the width.
pub fn options(base: &TrainOptions, s: Shape) -> TrainOptions {
    TrainOptions {
        layers: s.layers,
        d_model: s.d_model,
        heads: HEADS,
        d_mlp: MLP_RATIO * s.d_model,
        ..base.clone()
    }
}

/// The parameters outside the tied embedding (attention, SwiGLU, norms): what depth and width
/// trade at a fixed budget.
pub fn body_params(o: &TrainOptions) -> usize {
    let (d, m) = (o.d_model, o.d_mlp);
    o.layers * (4 * d * d + 3 * d * m + 2 * d) + d
}

/// One trained shape.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ShapeRow {
    pub shape: Shape,
    pub heads: usize,
    pub d_mlp: usize,
    /// Every parameter, the tied embedding counted once.
    pub params: usize,
    /// Outside the embedding ([`body_params`]).
    pub body_params: usize,
    pub steps: usize,
    pub tokens: usize,
    /// Mean training loss over the last 50 steps (nats per token).
    pub final_loss: f64,
    pub train_seconds: f64,
}

/// The shapes and each one's study (its final weights: one snapshot per shape, in order).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ShapesReport {
    pub command: String,
    pub world: String,
    pub seconds: f64,
    pub rows: Vec<ShapeRow>,
    pub study: StudyReport,
}

/// The measures set side by side by exposure bucket, in this order (those a study lacks are
/// left out).
const SIDE_BY_SIDE: [&str; 9] = [
    "recall",
    "closed_nll",
    "context_nll",
    "follows_counterfactual",
    "irrelevant_unchanged",
    "hoyer_mlp",
    "object_separable",
    "steer_strength",
    "edit_strength",
];

fn shapes_table(rep: &ShapesReport) -> String {
    let rows: Vec<Vec<String>> = rep
        .rows
        .iter()
        .map(|r| {
            vec![
                r.shape.to_string(),
                format!("{} / {}", r.heads, r.d_mlp),
                r.body_params.to_string(),
                r.params.to_string(),
                r.tokens.to_string(),
                format!("{:.3}", r.final_loss),
                format!("{:.0}", r.train_seconds),
            ]
        })
        .collect();
    md_table(
        &[
            "shape (layers x width)",
            "heads / SwiGLU width",
            "non-embedding parameters",
            "parameters",
            "training tokens",
            "final training loss",
            "training s",
        ],
        &rows,
    )
}

/// One measure by exposure bucket, one column per shape: mean [95% CI].
fn measure_table(snaps: &[Snapshot], name: &str) -> Option<String> {
    let first = snaps.first()?.series(name)?;
    let mut head = vec!["exposure".to_string()];
    head.extend(snaps.iter().map(|s| s.label.clone()));
    let rows: Vec<Vec<String>> = first
        .points
        .iter()
        .map(|p0| {
            let mut r = vec![p0.exposure.to_string()];
            r.extend(snaps.iter().map(|s| {
                s.series(name)
                    .and_then(|x| x.points.iter().find(|p| p.exposure == p0.exposure))
                    .map_or("-".into(), |p| {
                        format!("{} [{}, {}]", num(p.value), num(p.ci_low), num(p.ci_high))
                    })
            }));
            r
        })
        .collect();
    // A measure read at a layer names the first shape's; the others' are in report.json.
    let differs = snaps
        .iter()
        .any(|s| s.series(name).is_some_and(|x| x.about != first.about));
    let about = match differs {
        true => format!(
            "{} (for {}; each shape's own site is in report.json)",
            first.about, snaps[0].label
        ),
        false => first.about.clone(),
    };
    Some(format!(
        "### {name}\n\n{about}.\n\n{}",
        md_table(&head, &rows)
    ))
}

pub fn markdown(rep: &ShapesReport) -> String {
    let mut s = format!(
        "# Depth against width\n\nWorld `{}`; {:.0} s in all.\n\n`{}`\n\n## Shapes\n\n",
        rep.world, rep.seconds, rep.command
    );
    s += &shapes_table(rep);
    s += "\n## By exposure (final weights; 95% bootstrap intervals over facts)\n\n";
    for name in SIDE_BY_SIDE {
        if let Some(t) = measure_table(&rep.study.snapshots, name) {
            s += &t;
            s += "\n";
        }
    }
    s += "## Slope per doubling of (1 + exposure), one column per shape\n\n";
    s += &fits_table_with(&rep.study, false);
    s
}

/// Write report.json, report.md, shapes.svg (the study's panels, one line per shape) and
/// report.html into `dir`.
pub fn write(rep: &ShapesReport, dir: &Path) -> Result<()> {
    crate::markup::write_report(
        dir,
        rep,
        &markdown(rep),
        (
            "shapes.svg",
            "By exposure, one line per shape (95% intervals).",
        ),
        |p| super::study_report::chart_lines(&rep.study, p, true),
    )
}
