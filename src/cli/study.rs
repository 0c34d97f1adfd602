//! `organism study`: its arguments and handler.

use super::*;
use anyhow::{Context, Result};
use clap::Args;
use ctxsteer::organism::study::{StudyEvent, StudyItems, StudyOptions};
use ctxsteer::organism::study_report::{self, StudyReport};
use ctxsteer::organism::summary::Snapshot;
use std::path::{Path, PathBuf};

#[derive(Args)]
pub struct StudyArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// The world the model was trained on (`organism world --out`).
    #[arg(long)]
    pub world: PathBuf,
    /// The report folder: report.json, report.md, report.html, study.svg, and one file per
    /// studied model under snapshots/ (a rerun with the same options reuses them).
    #[arg(long)]
    pub out: PathBuf,
    /// Which of the model's checkpoints (MODEL/checkpoints/step-N) to study besides the final
    /// weights: all, none, or steps like 500,1000.
    #[arg(long, default_value = "all")]
    pub checkpoints: String,
    /// The layer whose residual the steering direction and the learned edit act on (default:
    /// the middle layer).
    #[arg(long)]
    pub layer: Option<usize>,
    /// Steering strengths tried, in spreads of the direction's projection, ascending.
    #[arg(long, value_delimiter = ',', default_value = "0.5,1,2,4,8,16,32")]
    pub alphas: Vec<f32>,
    /// Learned-edit scales tried, ascending.
    #[arg(long, value_delimiter = ',', default_value = "0.5,1,2,4,8,16")]
    pub scales: Vec<f32>,
    /// Epochs of the learned edit trained on the world's train split (0: no edit measure).
    #[arg(long, default_value_t = 2)]
    pub edit_epochs: usize,
    /// Corpus lines (the world's corpus.txt, from the top) the edit keeps as the model had
    /// them, five to a passage.
    #[arg(long, default_value_t = 300)]
    pub neutral_lines: usize,
    /// Prompts per forward pass.
    #[arg(long, default_value_t = 32, value_parser = at_least_one)]
    pub batch: usize,
    /// Seed of the edit's training and of the bootstrap intervals.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Print the final model's fits as JSON.
    #[arg(long)]
    pub json: bool,
}

/// The models to study: chosen checkpoints, then the final weights.
fn snapshots(a: &StudyArgs, model: &Path) -> Result<Vec<(String, Option<usize>, PathBuf)>> {
    let mut out = Vec::new();
    let dir = model.join("checkpoints");
    let ckpts: Vec<(usize, PathBuf)> = ctxsteer::organism::train::checkpoints(model)
        .into_iter()
        .filter_map(|p| {
            let state = ctxsteer::organism::train::read_state(&p).ok()?;
            Some((state.step, p))
        })
        .collect();
    let wanted: Option<Vec<usize>> = match a.checkpoints.as_str() {
        "all" => None,
        "none" => Some(vec![]),
        s => Some(
            s.split(',')
                .map(|x| x.trim().parse::<usize>())
                .collect::<std::result::Result<_, _>>()
                .with_context(|| {
                    format!("--checkpoints `{s}`: write all, none, or steps like 500,1000")
                })?,
        ),
    };
    if let Some(w) = &wanted {
        if let Some(s) = w.iter().find(|s| !ckpts.iter().any(|c| c.0 == **s)) {
            anyhow::bail!(
                "--checkpoints: no checkpoint of step {s} in {}; there are {:?}",
                dir.display(),
                ckpts.iter().map(|c| c.0).collect::<Vec<_>>()
            );
        }
    }
    // The final weights are the last checkpoint's when training ran to its end.
    let final_step = ckpts.last().map(|c| c.0);
    for (step, p) in &ckpts {
        let keep = wanted.as_ref().is_none_or(|w| w.contains(step));
        if keep && Some(*step) != final_step {
            out.push((format!("step {step}"), Some(*step), p.clone()));
        }
    }
    out.push(("final".into(), final_step, model.to_path_buf()));
    Ok(out)
}

pub(super) fn neutral(world: &Path, lines: usize) -> Result<Vec<String>> {
    let p = world.join("corpus.txt");
    let text = std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
    let v: Vec<String> = text.lines().take(lines).map(String::from).collect();
    Ok(ctxsteer::reft::joined_passages(&v, 5))
}

/// What a saved snapshot must match to be reused: the study's options and world, and the
/// measures' version (v2 added the two likelihoods).
pub(super) fn study_key(opts: &StudyOptions, neutral_lines: usize, world: &Path) -> String {
    format!(
        "v2 {:?}",
        (
            &opts.layer,
            &opts.alphas,
            &opts.scales,
            opts.edit_epochs,
            neutral_lines,
            opts.seed,
            world.display().to_string()
        )
    )
}

/// One snapshot, from its saved file when an earlier run with the same options made it.
pub(super) fn study_one(
    (out, device): (&Path, &str),
    key: &str,
    (label, step, path): &(String, Option<usize>, PathBuf),
    items: &StudyItems,
    opts: &StudyOptions,
) -> Result<Snapshot> {
    let file = out
        .join("snapshots")
        .join(format!("{}.json", label.replace(' ', "-")));
    // The weights' size and time too: a model retrained into the same folder is studied anew.
    let w = std::fs::metadata(path.join("model.safetensors")).ok();
    let key = format!("{key} {:?}", w.map(|m| (m.len(), m.modified().ok())));
    let key = key.as_str();
    if let Ok(text) = std::fs::read_to_string(&file) {
        if let Ok((k, s)) = serde_json::from_str::<(String, Snapshot)>(&text) {
            if k == key {
                eprintln!("{label}: reusing {}", file.display());
                return Ok(s);
            }
        }
    }
    let device = parse_device(device)?;
    let model = ctxsteer::Model::load_on(path, ctxsteer::WeightsMode::F32, &device)
        .with_context(|| format!("loading {}", path.display()))?;
    let pb = ctxsteer::progress::bar(1, label, false);
    let snap =
        ctxsteer::organism::summary::study(&model, label.clone(), *step, items, opts, &mut |e| {
            match e {
                StudyEvent::Stage(name, n) => {
                    pb.set_length(n as u64);
                    pb.set_position(0);
                    pb.set_message(name.to_string());
                }
                StudyEvent::Done(n) => pb.inc(n as u64),
            }
        })?;
    pb.finish_and_clear();
    eprintln!("{label}: studied in {:.0}s", snap.seconds);
    std::fs::create_dir_all(file.parent().unwrap_or(Path::new(".")))?;
    ctxsteer::data::write_atomic(&file, &serde_json::to_vec_pretty(&(key, &snap))?)?;
    Ok(snap)
}

pub(super) fn study_cmd(a: StudyArgs) -> Result<()> {
    let t0 = std::time::Instant::now();
    for (name, v) in [("--alphas", &a.alphas), ("--scales", &a.scales)] {
        if v.is_empty() || v.windows(2).any(|w| w[0] >= w[1]) || v[0] <= 0.0 {
            anyhow::bail!("{name}: give positive strengths in ascending order, like 0.5,1,2,4");
        }
    }
    let items = ctxsteer::organism::study::read_items(&a.world)?;
    let model = a.model.path()?;
    let opts = StudyOptions {
        batch: a.batch,
        layer: a.layer,
        alphas: a.alphas.clone(),
        scales: a.scales.clone(),
        edit_epochs: a.edit_epochs,
        neutral: neutral(&a.world, a.neutral_lines)?,
        seed: a.seed,
    };
    let key = study_key(&opts, a.neutral_lines, &a.world);
    let mut snaps = Vec::new();
    for s in snapshots(&a, &model)? {
        snaps.push(study_one(
            (&a.out, &a.model.device),
            &key,
            &s,
            &items,
            &opts,
        )?);
    }
    let rep = StudyReport {
        model: model.display().to_string(),
        world: a.world.display().to_string(),
        command: super::command_line(),
        seconds: t0.elapsed().as_secs_f64(),
        snapshots: snaps,
    };
    study_report::write(&rep, &a.out)?;
    let last = rep.last();
    let summary = || summary_lines(&rep);
    super::output::print_report(a.json, &last, summary, &a.out, rep.seconds)
}

/// One line per measure: the final model's fit against log-exposure.
fn summary_lines(rep: &StudyReport) -> String {
    let mut s = String::new();
    if let Some(last) = rep.last() {
        for n in &last.notes {
            s += &format!("note: {n}\n");
        }
        for x in &last.series {
            s += &format!(
                "{:<24} slope per doubling {:+.3} [{:+.3}, {:+.3}]: {}\n",
                x.name,
                x.fit.slope,
                x.fit.ci_low,
                x.fit.ci_high,
                study_report::verdict(&x.fit)
            );
        }
    }
    s
}
