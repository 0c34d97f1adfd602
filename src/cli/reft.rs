//! `reft train`: its arguments and its handler.

use super::*;
use crate::cli::choice::choice;
use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use std::path::PathBuf;

#[derive(Subcommand)]
pub enum ReftCmd {
    /// Train a low-rank intervention (LoReFT) that makes the model answer from a context that
    /// contradicts memory, while keeping closed-book answers and ordinary text as they were.
    Train(ReftTrainArgs),
}

#[derive(Args)]
pub struct ReftTrainArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Training conflicts in our format (their split field is ignored: pass the train split).
    /// Each item gives three sequences: the context with the context's answer, the context with
    /// the true answer swapped in (the prior as answer), and the closed-book prompt (kept as the
    /// unedited model has it).
    #[arg(long, default_value = "counterfactual_data/train.jsonl")]
    pub data: PathBuf,
    /// Ordinary text kept as the unedited model has it, one passage a line (`#` lines skipped).
    #[arg(long, default_value = "counterfactual_data/neutral.txt")]
    pub neutral: PathBuf,
    /// Lines of --neutral joined into each kept passage (line i with the next ones, wrapping),
    /// so that the kept text is as long as the texts the edit will meet.
    #[arg(long, default_value_t = 5, value_parser = at_least_one)]
    pub neutral_lines: usize,
    /// Layers whose hook_resid_post gets an edit: 12, 10-14 or 8,16.
    #[arg(long, default_value = "12")]
    pub layers: String,
    /// Rank of each edit.
    #[arg(long, default_value_t = 4, value_parser = at_least_one)]
    pub rank: usize,
    /// Passes over the training conflicts.
    #[arg(long, default_value_t = 4, value_parser = at_least_one)]
    pub epochs: usize,
    /// Adam learning rate.
    #[arg(long, default_value_t = 4e-3, value_parser = positive_f64)]
    pub lr: f64,
    /// Conflicts per step; as many keep sequences go with them.
    #[arg(long, default_value_t = 8, value_parser = at_least_one)]
    pub batch_size: usize,
    /// Prompt forms to train on, comma-separated (default: completion and chat, or completion
    /// alone for a model without a chat template, such as a base model or an organism).
    #[arg(long, value_parser = choice::<ctxsteer::data::Form>(), value_delimiter = ',')]
    pub form: Option<Vec<ctxsteer::data::Form>>,
    /// Deprecated spelling of --form.
    #[arg(long, hide = true, value_parser = choice::<ctxsteer::data::Form>(), value_delimiter = ',')]
    pub forms: Option<Vec<ctxsteer::data::Form>>,
    /// Weight of the keep-what-you-know KL term against the answer cross-entropy.
    #[arg(long, default_value_t = 1.0, value_parser = non_negative_f64)]
    pub keep_weight: f64,
    /// Seed of the edit's initial weights and of the batches' order.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Irrelevant contexts per conflict and form: the conflict's query after a context about
    /// another subject of its split (another subject's true fact or counterfactual of the same
    /// relation, a fact of another relation, or a paragraph of such sentences, in turn), with
    /// the answer the unedited model gives that query closed-book as the target. They teach the
    /// edit to follow only a context that answers the question. 0 trains without them.
    #[arg(long, default_value_t = 1)]
    pub irrelevant: usize,
    /// Skip malformed lines (and report how many) instead of stopping at the first one.
    #[arg(long)]
    pub skip_invalid: bool,
    /// Output .safetensors file.
    #[arg(long)]
    pub out: PathBuf,
}

pub(super) fn reft_train_cmd(a: ReftTrainArgs) -> Result<()> {
    let (items, skipped) = ctxsteer::data::read_jsonl(&a.data, a.skip_invalid)?;
    if skipped > 0 {
        eprintln!("skipped {skipped} invalid line(s)");
    }
    let neutral = neutral_passages(&a.neutral, a.neutral_lines)?;
    ctxsteer::atomic::check_not_input(&a.out, &[&a.data, &a.neutral])?;
    ctxsteer::atomic::check_target(&a.out)?;
    let _lock = ctxsteer::atomic::OutputLock::acquire(&a.out, false)?;
    let model = a.model.load_or(ctxsteer::WeightsMode::F32)?;
    let layers =
        ctxsteer::steer::parse_layers(&a.layers, model.cfg().n_layers).context("--layers")?;
    let opts = ctxsteer::reft::TrainOptions {
        layers,
        rank: a.rank,
        epochs: a.epochs,
        lr: a.lr,
        batch: a.batch_size,
        forms: forms_for(&model, given_forms(&a).as_deref()),
        keep_weight: a.keep_weight,
        seed: a.seed,
        irrelevant: a.irrelevant,
    };
    let mut reft = train_with_bar(&model, &items, &neutral, &opts)?;
    reft.meta.train.data = a.data.display().to_string();
    reft.meta.train.command = super::command_line();
    reft.save(&a.out)?;
    println!(
        "{}: {} trained in {:.0}s on {} conflicts, {} true contexts, {} irrelevant contexts, {} closed-book prompts and {} neutral passages",
        a.out.display(),
        ctxsteer::steer::Plan::describe(&reft),
        reft.meta.train.seconds,
        reft.meta.train.conflicts,
        reft.meta.train.true_contexts,
        reft.meta.train.irrelevant,
        reft.meta.train.closed_book,
        reft.meta.train.neutral
    );
    Ok(())
}

/// The neutral text's lines (blank lines and `#` comments dropped), joined `lines` to a
/// passage.
fn neutral_passages(path: &std::path::Path, lines: usize) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading --neutral {}", path.display()))?;
    let neutral: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect();
    Ok(ctxsteer::reft::joined_passages(&neutral, lines))
}

/// Train the edit with a progress bar and a line per epoch.
fn train_with_bar(
    model: &ctxsteer::Model,
    items: &[ctxsteer::data::Item],
    neutral: &[String],
    opts: &ctxsteer::reft::TrainOptions,
) -> Result<ctxsteer::reft::Reft> {
    let t0 = std::time::Instant::now();
    let mut bar: Option<indicatif::ProgressBar> = None;
    let reft = ctxsteer::reft::train(model, items, neutral, opts, &mut |e| match e {
        ctxsteer::reft::TrainEvent::Begin { steps } => {
            bar = Some(ctxsteer::progress::bar(steps as u64, "training", false))
        }
        ctxsteer::reft::TrainEvent::Step => bar.iter().for_each(|b| b.inc(1)),
        ctxsteer::reft::TrainEvent::Epoch(m) => {
            let line = format!("[{:>5.0}s] {m}", t0.elapsed().as_secs_f64());
            match &bar {
                Some(b) => b.suspend(|| eprintln!("{line}")),
                None => eprintln!("{line}"),
            }
        }
    })?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    Ok(reft)
}

/// The forms given, else both when the model has a chat template and completion alone when it
/// has none (saying so).
fn forms_for(
    model: &ctxsteer::Model,
    given: Option<&[ctxsteer::data::Form]>,
) -> Vec<ctxsteer::data::Form> {
    use ctxsteer::data::Form;
    match given {
        Some(f) => f.to_vec(),
        None if model.tokenizer.chat_template.is_some() => vec![Form::Completion, Form::Chat],
        None => {
            eprintln!("the model has no chat template: training on the completion form only");
            vec![Form::Completion]
        }
    }
}

/// The forms of --form, or of its deprecated spelling --forms.
fn given_forms(a: &ReftTrainArgs) -> Option<Vec<ctxsteer::data::Form>> {
    if a.forms.is_some() {
        super::args::deprecated("--forms F,F", "--form F,F");
    }
    a.form.clone().or_else(|| a.forms.clone())
}
