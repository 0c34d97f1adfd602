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
