//! `organism shapes`: its arguments and handler.

use super::study::{neutral, study_key, study_one};
use anyhow::{Context, Result};
use clap::Args;
use ctxsteer::organism::capacity::Shape;
use ctxsteer::organism::shapes::{self, ShapeRow, ShapesReport};
use ctxsteer::organism::study::StudyOptions;
use ctxsteer::organism::study_report::StudyReport;
use ctxsteer::organism::{TrainOptions, TrainState};
use std::path::{Path, PathBuf};

/// Corpus lines each study's learned edit keeps as the model had them (`organism study`'s
/// default).
const NEUTRAL_LINES: usize = 300;

#[derive(Args)]
pub struct ShapesArgs {
    /// The world the models are trained on (`organism world --out`).
    #[arg(long)]
    pub world: PathBuf,
    /// The report folder: report.json, report.md, report.html and shapes.svg; each shape's
    /// model in models/LxD (with checkpoints, so that a rerun goes on where it stopped) and
    /// its study under snapshots/.
    #[arg(long)]
    pub out: PathBuf,
    /// Shapes as LAYERSxWIDTH, comma-separated; each has 4 heads and a SwiGLU layer 3 times
    /// its width. The default pairs a deep-thin and a wide-shallow model at each of two
    /// budgets of non-embedding parameters (0.21 M and 0.85 M), four layers against one.
    #[arg(long, default_value = shapes::DEFAULT_SHAPES)]
    pub shapes: String,
    /// Training steps, the same for every shape.
    #[arg(long, default_value_t = 1000)]
    pub steps: usize,
    #[command(flatten)]
    pub schedule: super::training::ScheduleArgs,
    /// A checkpoint every this many steps: an interrupted run resumes from the latest.
    #[arg(long, default_value_t = 250)]
    pub checkpoint_every: usize,
    /// Epochs of the learned edit each study trains (0: no edit measure).
    #[arg(long, default_value_t = 2)]
    pub edit_epochs: usize,
    /// Print report.json instead of the summary.
    #[arg(long)]
    pub json: bool,
}

/// The shape's model in `dir`, trained unless a finished one with these options is there
/// (an unfinished one goes on from its latest checkpoint).
fn trained(a: &ShapesArgs, dir: &Path, opts: &TrainOptions, label: &str) -> Result<TrainState> {
    let latest = ctxsteer::organism::train::latest_checkpoint(dir);
    if let Some(c) = &latest {
        let state = ctxsteer::organism::train::read_state(c)?;
        if state.step == opts.steps && state.options == *opts && dir.join("config.json").exists() {
            eprintln!("{label}: reusing the model in {}", dir.display());
            return Ok(state);
        }
    }
    super::training::train_with_bar(&a.world, dir, opts, latest.is_some(), label)
}

/// The shapes asked for, and the schedule every one of them is trained with.
fn plan(a: &ShapesArgs) -> Result<(Vec<Shape>, TrainOptions)> {
    let list: Vec<Shape> = a
        .shapes
        .split(',')
        .map(|s| Shape::parse(s).context("--shapes"))
        .collect::<Result<_>>()?;
    let base = a.schedule.options(a.steps, a.checkpoint_every);
    for s in &list {
        shapes::options(&base, *s)
            .check()
            .with_context(|| format!("--shapes {s}"))?;
    }
    Ok((list, base))
}

/// What the report says of one trained shape.
fn row(s: Shape, o: &TrainOptions, state: &TrainState, vocab: usize) -> ShapeRow {
    ShapeRow {
        shape: s,
        heads: o.heads,
        d_mlp: o.d_mlp,
        params: vocab * o.d_model + shapes::body_params(o),
        body_params: shapes::body_params(o),
        steps: state.step,
        tokens: state.step * o.batch * o.seq,
        final_loss: state.final_loss(),
        train_seconds: state.seconds,
    }
}

pub(super) fn shapes_cmd(a: ShapesArgs) -> Result<()> {
    let t0 = std::time::Instant::now();
    let (list, base) = plan(&a)?;
    let items = ctxsteer::organism::study::read_items(&a.world)?;
    let vocab = ctxsteer::model::Tokenizer::from_folder(&a.world)?.vocab_size();
    let opts = StudyOptions {
        edit_epochs: a.edit_epochs,
        neutral: neutral(&a.world, NEUTRAL_LINES)?,
        seed: a.schedule.seed,
        ..StudyOptions::default()
    };
    let key = study_key(&opts, NEUTRAL_LINES, &a.world);
    let (mut rows, mut snaps) = (vec![], vec![]);
    for (k, s) in list.iter().enumerate() {
        let o = shapes::options(&base, *s);
        let dir = a.out.join("models").join(s.to_string());
        let label = format!("{s} ({}/{})", k + 1, list.len());
        let state = trained(&a, &dir, &o, &label)?;
        let snap = (s.to_string(), Some(state.step), dir.clone());
        snaps.push(study_one((&a.out, "cpu"), &key, &snap, &items, &opts)?);
        rows.push(row(*s, &o, &state, vocab));
    }
    let command = super::command_line();
    let rep = ShapesReport {
        command: command.clone(),
        world: a.world.display().to_string(),
        seconds: t0.elapsed().as_secs_f64(),
        rows,
        study: StudyReport {
            model: a.out.join("models").display().to_string(),
            world: a.world.display().to_string(),
            command,
            seconds: t0.elapsed().as_secs_f64(),
            snapshots: snaps,
        },
    };
    shapes::write(&rep, &a.out)?;
    super::output::print_report(a.json, &rep, || summary(&rep), &a.out, rep.seconds)
}

/// One line per shape: its size, loss, and recall and closed-book likelihood at the lowest
/// exposures and the highest.
fn summary(rep: &ShapesReport) -> String {
    let at = |snap: &ctxsteer::organism::summary::Snapshot, name: &str, i: usize| {
        snap.series(name)
            .and_then(|s| match i {
                usize::MAX => s.points.last(),
                i => s.points.get(i),
            })
            .map_or("-".into(), |p| format!("{:.3}", p.value))
    };
    let mut s = String::new();
    for (r, snap) in rep.rows.iter().zip(&rep.study.snapshots) {
        s += &format!(
            "{:<7} {:>8} non-embedding params, loss {:.3}: recall at exposure 1 {}, at the most {}; closed-book NLL never seen {}, seen once {}\n",
            r.shape.to_string(),
            r.body_params,
            r.final_loss,
            at(snap, "recall", 1),
            at(snap, "recall", usize::MAX),
            at(snap, "closed_nll", 0),
            at(snap, "closed_nll", 1),
        );
    }
    s
}
