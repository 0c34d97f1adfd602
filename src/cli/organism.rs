//! `organism …`: model organisms, their arguments and handlers.

use super::*;
use anyhow::Result;
use clap::{Args, Subcommand};
use std::path::PathBuf;

#[derive(Subcommand)]
pub enum OrganismCmd {
    /// Write a synthetic fact world: invented subjects and objects, an exposure count per fact,
    /// the corpus that states each fact that many times among filler, a word-level tokenizer,
    /// and evaluation items (closed-book, counterfactual, true and irrelevant contexts) split
    /// by subject, each with its exposure. The same options give the same bytes.
    World(WorldArgs),
    /// Train a Llama-family decoder (RMSNorm, SwiGLU, rope, tied embeddings) from scratch on a
    /// world's corpus with AdamW (warm-up, cosine decay). OUT becomes a Hugging Face folder that
    /// `--model OUT` loads in every command; OUT/checkpoints/step-N are loadable too, and hold
    /// the optimizer's state for --resume.
    Train(TrainArgs),
    /// Measure, per exposure bucket with bootstrap intervals, what a fact's exposure does:
    /// closed-book recall, following or resisting a counterfactual context, robustness to
    /// irrelevant contexts, MLP and residual density, how separable the fact's object is, and
    /// the smallest steering strength and learned-edit scale that flip a known fact to the
    /// context; each fitted against log-exposure, for the final model and its checkpoints.
    Study(super::study::StudyArgs),
    /// Memorization capacity (Morris et al. 2025, scaled down): models of several sizes, each
    /// trained from scratch to convergence on N sequences of uniformly random tokens; memorized
    /// bits are the data's entropy minus the model's negative log-likelihood in bits, a size's
    /// capacity is the most it memorizes over N, and bits per parameter is fitted across sizes.
    Capacity(super::capacity::CapacityArgs),
    /// Depth against width: models of several shapes (by default a deep-thin and a
    /// wide-shallow one at each of two budgets of non-embedding parameters) trained on one
    /// world with the same tokens and steps, each studied as `organism study` does, set side
    /// by side by exposure bucket.
    Shapes(super::shapes::ShapesArgs),
    /// Modularity by ablation: every attention head and MLP neuron is zero-ablated alone and
    /// ranked per relation by the damage to the facts the model knows (train subjects); then
    /// each relation's top units are ablated together, on the other subjects, and the damage
    /// to that relation is set against the damage to the others and against random units.
    Modularity(super::modularity::ModularityArgs),
    /// Proxy-tuning against fine-tuning: teach never-seen facts of the world to a large
    /// organism by fine-tuning it, and by proxy-tuning it with a small organism fine-tuned the
    /// same way (logits = large + alpha * (small tuned - small)); measure the gain on the
    /// taught facts and the retention of the facts it knew, per exposure bucket, at each
    /// saved step and alpha, paired at equal gain.
    Proxy(super::proxy_tune::ProxyTuneArgs),
}

#[derive(Args)]
pub struct TrainArgs {
    /// The world folder (`organism world --out`).
    #[arg(long)]
    pub world: PathBuf,
    /// The model folder to write.
    #[arg(long)]
    pub out: PathBuf,
    /// Transformer blocks.
    #[arg(long, default_value_t = 4)]
    pub layers: usize,
    /// Width of the residual stream.
    #[arg(long, default_value_t = 128)]
    pub d_model: usize,
    /// Attention heads (d-model must be divisible by them).
    #[arg(long, default_value_t = 4)]
    pub heads: usize,
    /// Width of the SwiGLU hidden layer.
    #[arg(long, default_value_t = 384)]
    pub d_mlp: usize,
    /// Optimiser steps (each of --batch sequences of --seq tokens).
    #[arg(long, default_value_t = 2000)]
    pub steps: usize,
    #[command(flatten)]
    pub schedule: super::training::ScheduleArgs,
    /// Write a checkpoint every N steps (0: only at the end).
    #[arg(long, default_value_t = 500)]
    pub checkpoint_every: usize,
    /// Go on from the latest checkpoint in OUT/checkpoints (trained with the same options).
    #[arg(long)]
    pub resume: bool,
}

#[derive(Args)]
pub struct WorldArgs {
    /// Invented subjects; each has one fact of every relation.
    #[arg(long, default_value_t = 400, value_parser = at_least_one)]
    pub subjects: usize,
    /// Relations, from the built-in six (home, job, pet, club, food, teacher).
    #[arg(long, default_value_t = 5, value_parser = at_least_one)]
    pub relations: usize,
    /// Objects per relation.
    #[arg(long, default_value_t = 16, value_parser = at_least_one)]
    pub objects: usize,
    /// Exposure counts: comma-separated counts and `pow2:A-B` (the powers of two from A to B),
    /// spread evenly over the facts; or `zipf:S:MAX` (rank r seen round(MAX / r^S) times). 0
    /// makes facts that are never stated, about subjects the corpus still names.
    #[arg(long, default_value = "0,pow2:1-256")]
    pub schedule: String,
    /// Times each subject is named in a sentence without a fact.
    #[arg(long, default_value_t = 2)]
    pub mentions: usize,
    /// Share of the corpus's sentences that are filler naming no one, in [0, 0.95).
    #[arg(long, default_value_t = 0.2)]
    pub filler: f64,
    /// Reading episodes, as a share of the fact statements (0 to 4): a sentence about a
    /// reading-only subject, then the query and its answer. Those subjects get a new object
    /// each time, so only the context tells the answer; the model learns to read, and no world
    /// fact's exposure changes. 0: a corpus of bare facts, where a model never learns to use a
    /// context.
    #[arg(long, default_value_t = 0.25)]
    pub reading: f64,
    /// Reading-only subjects (default: five times --subjects, at least 20). Many of them, each
    /// read a few times, make copying from a context a skill about any name; with a quarter of
    /// --subjects (the default before 2026-12-02), a model copies only after those names.
    #[arg(long, value_parser = at_least_one)]
    pub readers: Option<usize>,
    /// Seed of the names, the facts, their exposure and the corpus's order.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// The world folder to write.
    #[arg(long)]
    pub out: PathBuf,
    /// Print world.json's summary as JSON.
    #[arg(long)]
    pub json: bool,
}

pub(super) fn organism_cmd(c: OrganismCmd) -> Result<()> {
    match c {
        OrganismCmd::World(a) => world_cmd(a),
        OrganismCmd::Train(a) => train_cmd(a),
        OrganismCmd::Study(a) => super::study::study_cmd(a),
        OrganismCmd::Capacity(a) => super::capacity::capacity_cmd(a),
        OrganismCmd::Shapes(a) => super::shapes::shapes_cmd(a),
        OrganismCmd::Modularity(a) => super::modularity::modularity_cmd(a),
        OrganismCmd::Proxy(a) => super::proxy_tune::proxy_tune_cmd(a),
    }
}

fn world_cmd(a: WorldArgs) -> Result<()> {
    let t0 = std::time::Instant::now();
    let opts = ctxsteer::organism::WorldOptions {
        subjects: a.subjects,
        relations: a.relations,
        objects: a.objects,
        schedule: a.schedule,
        mentions: a.mentions,
        filler: a.filler,
        reading: a.reading,
        readers: a.readers,
        seed: a.seed,
    };
    let w = ctxsteer::organism::build(&opts, &a.out)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&w)?);
        return Ok(());
    }
    println!(
        "wrote {}: {} facts ({} relations), {} corpus sentences ({} words), vocabulary {}, {} \
         evaluation items, in {:.1}s",
        a.out.display(),
        w.facts,
        w.templates.len(),
        w.corpus_sentences,
        w.corpus_words,
        w.vocabulary,
        w.items,
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}

fn train_cmd(a: TrainArgs) -> Result<()> {
    use ctxsteer::organism::TrainOptions;
    let opts = TrainOptions {
        layers: a.layers,
        d_model: a.d_model,
        heads: a.heads,
        d_mlp: a.d_mlp,
        ..a.schedule.options(a.steps, a.checkpoint_every)
    };
    opts.check()?;
    if !a.resume && a.out.join("checkpoints").exists() {
        anyhow::bail!(
            "{} already holds checkpoints; pass --resume to go on from the latest, or choose another --out",
            a.out.display()
        );
    }
    let t0 = std::time::Instant::now();
    let state = super::training::train_with_bar(&a.world, &a.out, &opts, a.resume, "train")?;
    let last = state.final_loss();
    println!(
        "trained {} steps in {:.0}s ({:.0}s this run): loss {last:.3} (mean of the last 50 steps); model in {}",
        state.step,
        state.seconds,
        t0.elapsed().as_secs_f64(),
        a.out.display()
    );
    Ok(())
}
