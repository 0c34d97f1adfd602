//! Training an organism with a progress bar (`organism train`, `organism shapes`).

use anyhow::Result;
use clap::Args;

/// How an organism is trained, whatever its shape: batches, learning rate, seed.
#[derive(Args)]
pub struct ScheduleArgs {
    /// Sequences per step.
    #[arg(long, default_value_t = 32)]
    pub batch: usize,
    /// Tokens per sequence.
    #[arg(long, default_value_t = 64)]
    pub seq: usize,
    /// Peak learning rate, reached after --warmup steps, then cosine decay to a tenth.
    #[arg(long, default_value_t = 3e-3)]
    pub lr: f64,
    /// Steps of linear warm-up to the peak learning rate.
    #[arg(long, default_value_t = 100)]
    pub warmup: usize,
    /// AdamW's decoupled weight decay.
    #[arg(long, default_value_t = 0.1)]
    pub weight_decay: f64,
    /// Seed of the weights and the batches.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

impl ScheduleArgs {
    /// These settings with `steps` steps and a checkpoint every `checkpoint_every`, on the
    /// default shape.
    pub fn options(
        &self,
        steps: usize,
        checkpoint_every: usize,
    ) -> ctxsteer::organism::TrainOptions {
        ctxsteer::organism::TrainOptions {
            steps,
            batch: self.batch,
            seq: self.seq,
            lr: self.lr,
            warmup: self.warmup,
            weight_decay: self.weight_decay,
            checkpoint_every,
            seed: self.seed,
            ..Default::default()
        }
    }
}

/// Train with a progress bar that shows the recent loss and speed, and a line per checkpoint.
pub(super) fn train_with_bar(
    world: &std::path::Path,
    out: &std::path::Path,
    opts: &ctxsteer::organism::TrainOptions,
    resume: bool,
    label: &str,
) -> Result<ctxsteer::organism::TrainState> {
    use ctxsteer::organism::TrainEvent;
    let pb = ctxsteer::progress::bar(opts.steps as u64, label, false);
    let mut recent: std::collections::VecDeque<f64> = Default::default();
    let state = ctxsteer::organism::train(world, out, opts, resume, &mut |e| {
        match e {
            TrainEvent::Step {
                step,
                loss,
                tokens_per_s,
            } => {
                recent.push_back(loss);
                if recent.len() > 50 {
                    recent.pop_front();
                }
                let mean = recent.iter().sum::<f64>() / recent.len() as f64;
                pb.set_position(step as u64);
                pb.set_message(format!("loss {mean:.3}, {tokens_per_s:.0} tok/s"));
            }
            TrainEvent::Checkpoint(p) => {
                ctxsteer::progress::say(&pb, &format!("checkpoint {}", p.display()))
            }
        }
        Ok(())
    })?;
    pb.finish_and_clear();
    Ok(state)
}
