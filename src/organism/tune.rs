//! Fine-tuning an organism: a trained model folder's weights, trained further on given lines
//! with a fresh AdamW and the trainer's schedule, saved as loadable model folders at chosen
//! steps. A rerun with the same options reuses the saved folders.

use super::adamw::AdamW;
use super::train::{batch_at, load_weights, save, stream_of, window_starts, Net, TrainOptions};
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// `schedule` with the shape of the model folder `dir` (its config.json, read as every
/// command reads it).
pub fn options_of(dir: &Path, schedule: &TrainOptions) -> Result<TrainOptions> {
    let (c, _) = crate::model::config::Config::from_folder(dir)?;
    Ok(TrainOptions {
        layers: c.n_layers,
        d_model: c.d_model,
        heads: c.n_heads,
        d_mlp: c.d_mlp,
        ..schedule.clone()
    })
}

/// What a finished tuning records in `out/tune.json`: a rerun with the same record reuses it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TuneRecord {
    pub init: String,
    pub options: TrainOptions,
    /// The tuning corpus's checksum (FNV-1a of its lines).
    pub corpus: u64,
    pub save_at: Vec<usize>,
    pub losses: Vec<f64>,
    pub seconds: f64,
}

/// FNV-1a of the lines, each ended by a newline.
fn checksum(lines: &[String]) -> u64 {
    crate::data::stable_hash(&lines.iter().map(|l| format!("{l}\n")).collect::<String>())
}

/// The folder a tuning saves its step-`n` model in.
pub fn step_dir(out: &Path, n: usize) -> PathBuf {
    out.join(format!("step-{n:06}"))
}

/// The previous record in `out`, if it was made with these settings.
fn finished(out: &Path, probe: &TuneRecord) -> Option<TuneRecord> {
    let text = std::fs::read_to_string(out.join("tune.json")).ok()?;
    let r: TuneRecord = serde_json::from_str(&text).ok()?;
    let same = r.init == probe.init
        && r.options == probe.options
        && r.corpus == probe.corpus
        && r.save_at == probe.save_at;
    let all_there = r
        .save_at
        .iter()
        .all(|n| step_dir(out, *n).join("config.json").exists());
    (same && all_there).then_some(r)
}

/// Train the model in `init` further on `lines` (each after an end-of-text token, windows
/// drawn as in training) for `schedule.steps` steps, saving a model folder at every step in
/// `save_at` (`out/step-N`). `on` hears each step and its loss.
pub fn tune(
    init: &Path,
    lines: &[String],
    out: &Path,
    schedule: &TrainOptions,
    save_at: &[usize],
    on: &mut dyn FnMut(usize, f64),
) -> Result<TuneRecord> {
    let opts = options_of(init, schedule)?;
    opts.check()?;
    let mut rec = TuneRecord {
        init: init.display().to_string(),
        options: opts.clone(),
        corpus: checksum(lines),
        save_at: save_at.to_vec(),
        losses: vec![],
        seconds: 0.0,
    };
    if let Some(r) = finished(out, &rec) {
        return Ok(r);
    }
    let tok = crate::model::Tokenizer::from_folder(init)?;
    let (stream, eos) = stream_of(&tok, lines.iter().map(String::as_str), init)?;
    let starts = window_starts(&stream, eos, opts.seq);
    if starts.is_empty() {
        return Err(Error::Invalid(format!(
            "the tuning lines ({} tokens) are shorter than a window of {} tokens",
            stream.len(),
            opts.seq
        )));
    }
    let mut net = Net::new(&opts, tok.vocab_size())?;
    load_weights(&mut net, init)?;
    let mut adam = AdamW::new(&net.vars)?;
    let t0 = std::time::Instant::now();
    for step in 0..opts.steps {
        crate::progress::check_cancel()?;
        let loss = net.loss(&batch_at(&stream, &starts, &opts, step)?)?;
        adam.step(
            &net.vars,
            opts.weight_decay,
            &loss.backward()?,
            opts.lr_at(step),
        )?;
        let l = f64::from(loss.to_scalar::<f32>()?);
        rec.losses.push(l);
        on(step + 1, l);
        if save_at.contains(&(step + 1)) {
            save(&step_dir(out, step + 1), &net, init, None)?;
        }
    }
    rec.seconds = t0.elapsed().as_secs_f64();
    let json = serde_json::to_vec_pretty(&rec).map_err(|e| Error::Invalid(e.to_string()))?;
    crate::atomic::write(&out.join("tune.json"), &json)?;
    Ok(rec)
}
