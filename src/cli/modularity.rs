//! `organism modularity`: its arguments and handler.

use super::*;
use anyhow::{Context, Result};
use clap::Args;
use ctxsteer::organism::modularity::{self, ModularityOptions, ModularityReport, UnitKind};
use std::path::PathBuf;

#[derive(Args)]
pub struct ModularityArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// The world the model was trained on (`organism world --out`): its facts' closed-book
    /// queries, split by subject (train ranks the units, dev and test measure them).
    #[arg(long)]
    pub world: PathBuf,
    /// The report folder: report.json, report.md, report.html and modularity.svg.
    #[arg(long)]
    pub out: PathBuf,
    /// How many of a relation's top heads are ablated together, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4", value_parser = at_least_one)]
    pub heads_k: Vec<usize>,
    /// How many of a relation's top MLP neurons are ablated together, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "8,32,128", value_parser = at_least_one)]
    pub neurons_k: Vec<usize>,
    /// Random sets of the same size and kind per size: the baseline a relation's top units are
    /// set against.
    #[arg(long, default_value_t = 20, value_parser = at_least_one)]
    pub random_sets: usize,
    /// Queries per forward pass.
    #[arg(long, default_value_t = 256, value_parser = at_least_one)]
    pub batch_size: usize,
    /// Seed of the random sets and the bootstrap.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Print report.json instead of the summary.
    #[arg(long)]
    pub json: bool,
}

pub(super) fn modularity_cmd(a: ModularityArgs) -> Result<()> {
    let t0 = std::time::Instant::now();
    let items = ctxsteer::organism::study::read_items(&a.world)?.conflicts;
    let model = a.model.load_or(ctxsteer::WeightsMode::F32)?;
    let opts = ModularityOptions {
        head_ks: a.heads_k.clone(),
        neuron_ks: a.neurons_k.clone(),
        random_sets: a.random_sets,
        batch: a.batch_size,
        seed: a.seed,
    };
    modularity::check(&model, &opts)?;
    let p = modularity::prepare(&model, &items, opts.batch).context("scoring the facts")?;
    let kinds = [
        (UnitKind::Head, &opts.head_ks),
        (UnitKind::Neuron, &opts.neuron_ks),
    ];
    let total: usize = kinds
        .iter()
        .map(|(k, ks)| modularity::passes(&model, p.relations.len(), *k, ks, opts.random_sets))
        .sum();
    let pb = ctxsteer::progress::bar(total as u64, "ablations", a.json);
    let (mut ranked, mut rows, mut summary) = (vec![], vec![], vec![]);
    for (kind, ks) in kinds {
        let r = modularity::run_kind(&model, &p, kind, ks, &opts, &mut |n| pb.inc(n as u64))?;
        ranked.extend(r.ranked);
        rows.extend(r.rows);
        summary.extend(r.summary);
    }
    pb.finish_and_clear();
    let units = |k| modularity::units(&model, k).len();
    let rep = ModularityReport {
        command: super::command_line(),
        model: model.path.display().to_string(),
        world: a.world.display().to_string(),
        seconds: t0.elapsed().as_secs_f64(),
        options: opts,
        heads: units(UnitKind::Head),
        neurons: units(UnitKind::Neuron),
        facts: p.counts,
        ranked,
        rows,
        summary,
    };
    ctxsteer::organism::modularity::report::write(&rep, &a.out)?;
    super::output::print_report(a.json, &rep, || summary_lines(&rep), &a.out, rep.seconds)
}

/// One line per kind and size: the damages over relations.
fn summary_lines(rep: &ModularityReport) -> String {
    let line = |s: &modularity::KindSummary| {
        format!(
            "{:>4} {:<7} ({:>5.1}% of them): own relation {:.3} nats, others {:.3} (random: {:.3} / {:.3}); {} of {} relations selective; overlap {:.2}\n",
            s.k, s.kind.name(), 100.0 * s.share, s.own, s.other, s.random_own, s.random_other,
            s.selective, s.relations, s.overlap
        )
    };
    rep.summary.iter().map(line).collect()
}
