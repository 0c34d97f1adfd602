//! `organism proxy`: its arguments and handler.

use super::*;
use anyhow::Result;
use clap::Args;
use ctxsteer::organism::proxytune::{self, ProxyEvent, ProxyOptions, ProxyReport, Setup};
use std::path::PathBuf;

#[derive(Args)]
pub struct ProxyTuneArgs {
    /// The world both models were trained on (`organism world --out`).
    #[arg(long)]
    pub world: PathBuf,
    /// The large organism (a model folder from `organism train` or `organism shapes`): tuned
    /// directly, and proxy-tuned.
    #[arg(long)]
    pub large: PathBuf,
    /// The small organism of the same world (the same tokenizer): tuned, then used as the
    /// proxy's expert (tuned) and base (as it was).
    #[arg(long)]
    pub small: PathBuf,
    /// The report folder: report.json, report.md, report.html and proxy.svg; the tuned models
    /// in large/step-N and small/step-N (a rerun with the same options reuses them).
    #[arg(long)]
    pub out: PathBuf,
    /// Never-seen facts to teach (the rest of them are the control).
    #[arg(long, default_value_t = 100, value_parser = at_least_one)]
    pub facts: usize,
    /// Statements of each taught fact in the tuning corpus, its relation's templates in turn.
    #[arg(long, default_value_t = 16, value_parser = at_least_one)]
    pub repeats: usize,
    /// Share of the tuning corpus drawn from the world's own corpus (replay of pretraining
    /// text), from 0 (only the taught facts) to below 1.
    #[arg(long, default_value_t = 0.0)]
    pub replay: f64,
    /// Fine-tuning steps, the same for both models.
    #[arg(long, default_value_t = 100, value_parser = at_least_one)]
    pub steps: usize,
    /// Steps at which both tuned models are saved and measured, comma-separated (dense early,
    /// where fine-tuning's gain rises, so that each proxy point has a fine-tuning point of
    /// nearly equal gain).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "1,2,3,4,6,8,12,16,25,50,100"
    )]
    pub save_at: Vec<usize>,
    /// Weights α of the small model's shift, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "0.5,1,2,4")]
    pub alphas: Vec<f32>,
    /// Sequences per tuning step.
    #[arg(long, default_value_t = 32, value_parser = at_least_one)]
    pub batch: usize,
    /// Tokens per tuning sequence.
    #[arg(long, default_value_t = 64)]
    pub seq: usize,
    /// Peak learning rate of the tuning, after --warmup steps, then cosine decay to a tenth.
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f64,
    /// Steps of linear warm-up.
    #[arg(long, default_value_t = 10)]
    pub warmup: usize,
    /// AdamW's decoupled weight decay.
    #[arg(long, default_value_t = 0.1)]
    pub weight_decay: f64,
    /// Seed of the taught facts, the corpus's order and the batches.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Queries per forward pass when measuring.
    #[arg(long, default_value_t = 256, value_parser = at_least_one)]
    pub batch_size: usize,
    /// Print report.json instead of the summary.
    #[arg(long)]
    pub json: bool,
}

fn options(a: &ProxyTuneArgs) -> ProxyOptions {
    ProxyOptions {
        facts: a.facts,
        repeats: a.repeats,
        replay: a.replay,
        schedule: ctxsteer::organism::TrainOptions {
            steps: a.steps,
            batch: a.batch,
            seq: a.seq,
            lr: a.lr,
            warmup: a.warmup,
            weight_decay: a.weight_decay,
            checkpoint_every: 0,
            seed: a.seed,
            ..Default::default()
        },
        save_at: a.save_at.clone(),
        alphas: a.alphas.clone(),
        batch: a.batch_size,
    }
}

pub(super) fn proxy_tune_cmd(a: ProxyTuneArgs) -> Result<()> {
    let o = options(&a);
    proxytune::check(&o)?;
    let s = Setup {
        command: super::command_line(),
        world: &a.world,
        large: &a.large,
        small: &a.small,
        out: &a.out,
    };
    let pb = ctxsteer::progress::bar(2 * o.schedule.steps as u64, "tuning", a.json);
    let rep = proxytune::run(&s, &o, &mut |e| match e {
        ProxyEvent::Tuning { model, step, loss } => {
            pb.inc(1);
            pb.set_message(format!("{model} step {step}: loss {loss:.3}"));
        }
        ProxyEvent::Measured(p) => ctxsteer::progress::say(
            &pb,
            &format!(
                "{}: gain {:.1}%, retention {:.1}%",
                p.label,
                100.0 * p.gain.value,
                100.0 * p.retention.value
            ),
        ),
    })?;
    pb.finish_and_clear();
    proxytune::report::write(&rep, &a.out)?;
    super::output::print_report(a.json, &rep, || summary(&rep), &a.out, rep.seconds)
}

/// The points no other beats on both gain and retention, and per alpha which way the pairs
/// of nearly equal gain go.
fn summary(rep: &ProxyReport) -> String {
    let mut s = String::from("frontier (gain, retention):\n");
    for p in proxytune::frontier(&rep.points) {
        s += &format!(
            "  {}: {:.1}%, {:.1}%\n",
            p.label,
            100.0 * p.gain.value,
            100.0 * p.retention.value
        );
    }
    s + &proxytune::report::close_table(rep)
}
