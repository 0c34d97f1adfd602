//! `organism capacity`: its arguments and handler.

use super::*;
use anyhow::Result;
use clap::Args;
use ctxsteer::organism::capacity::{
    self, CapacityEvent, CapacityOptions, CapacityRun, Precision, Shape,
};
use ctxsteer::organism::capacity_report;
use std::path::PathBuf;

#[derive(Args)]
pub struct CapacityArgs {
    /// Model sizes, LAYERSxWIDTH (SwiGLU hidden layer 4 x width, heads of width 8, tied
    /// embeddings). Default: 1x8,1x12,1x16,1x24 (about 2K to 12K parameters with the default
    /// vocabulary); --full adds 1x32, 2x24 and 1x48.
    #[arg(long, value_delimiter = ',', value_parser = parse_shape)]
    pub sizes: Vec<Shape>,
    /// Dataset sizes N, in sequences, ascending; each is run for every size. Default: the
    /// powers of two from 16 to 4096, climbed for each size only until memorized bits stop
    /// growing (an N that stores under 1.05 times the best so far ends the climb).
    #[arg(long, value_delimiter = ',', value_parser = at_least_one)]
    pub ns: Vec<usize>,
    /// The precisions each size is trained in: f32, bf16 (parameters, activations and optimizer
    /// state in bfloat16; the loss in f32). `f32,bf16` runs both (about twice as long).
    #[arg(long, value_delimiter = ',', default_value = "f32", value_parser = choice::<Precision>())]
    pub precision: Vec<Precision>,
    /// Add --full's larger sizes (an hour or more; resumable with --resume).
    #[arg(long)]
    pub full: bool,
    /// Vocabulary the random tokens are drawn from.
    #[arg(long, default_value_t = 128, value_parser = at_least_one)]
    pub vocab: usize,
    /// Tokens per sequence.
    #[arg(long, default_value_t = 32, value_parser = at_least_one)]
    pub seq: usize,
    /// Sequences per step.
    #[arg(long, default_value_t = 32, value_parser = at_least_one)]
    pub batch: usize,
    /// AdamW's constant learning rate (no weight decay).
    #[arg(long, default_value_t = 3e-3)]
    pub lr: f64,
    /// Converged when an epoch's mean loss has not fallen --tol below the best for this many
    /// epochs.
    #[arg(long, default_value_t = 60, value_parser = at_least_one)]
    pub patience: usize,
    /// The relative fall in loss that counts as progress.
    #[arg(long, default_value_t = 0.002)]
    pub tol: f64,
    /// Stop a run here even if it has not converged (its row then says so).
    #[arg(long, default_value_t = 3000, value_parser = at_least_one)]
    pub max_epochs: usize,
    /// Seed of the random sequences and of each shape's weights.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// The report folder: report.json, report.md, report.html, capacity.svg, and the runs'
    /// journal (parts/capacity.runs.jsonl).
    #[arg(long)]
    pub out: PathBuf,
    /// Reuse the runs already in OUT's journal and run only the missing ones.
    #[arg(long)]
    pub resume: bool,
    /// Print report.json's fit and capacities as JSON.
    #[arg(long)]
    pub json: bool,
}

fn parse_shape(s: &str) -> std::result::Result<Shape, String> {
    Shape::parse(s).map_err(|e| e.to_string())
}

/// The sweep the arguments ask for.
fn options(a: &CapacityArgs) -> CapacityOptions {
    let mut shapes = a.sizes.clone();
    if shapes.is_empty() {
        shapes = ["1x8", "1x12", "1x16", "1x24"]
            .iter()
            .chain(if a.full {
                &["1x32", "2x24", "1x48"][..]
            } else {
                &[]
            })
            .map(|s| Shape::parse(s).expect("built-in size"))
            .collect();
    }
    let climb = a.ns.is_empty();
    let ns = match climb {
        true => (4..=12).map(|k| 1usize << k).collect(),
        false => a.ns.clone(),
    };
    CapacityOptions {
        vocab: a.vocab,
        seq: a.seq,
        shapes,
        precisions: a.precision.clone(),
        ns,
        climb,
        batch: a.batch,
        lr: a.lr,
        patience: a.patience,
        tol: a.tol,
        max_epochs: a.max_epochs,
        seed: a.seed,
    }
}

pub(super) fn capacity_cmd(a: CapacityArgs) -> Result<()> {
    let o = options(&a);
    let path = a.out.join("parts").join("capacity.runs.jsonl");
    let mut journal = ctxsteer::journal::Journal::<CapacityRun>::open(&path, a.resume)?;
    let command = super::command_line();
    let pb = ctxsteer::progress::bar(o.shapes.len() as u64, "sizes", a.json);
    let mut here = String::new();
    let rep = capacity::sweep(&o, &mut journal, command, &mut |e| {
        match e {
            CapacityEvent::Start {
                run,
                shape,
                precision,
                n,
            } => {
                let done = o.shapes.iter().position(|s| *s == shape).unwrap_or(0);
                pb.set_position(done as u64);
                here = format!("run {}: {shape} {}, N {n}", run + 1, precision.name());
                pb.set_message(here.clone());
            }
            CapacityEvent::Epoch { epoch, loss } => {
                if epoch % 10 == 0 {
                    pb.set_message(format!("{here}, epoch {epoch}, loss {loss:.3}"));
                }
            }
            CapacityEvent::Done(r, reused) => ctxsteer::progress::say(&pb, &done_line(r, reused)),
        }
        Ok(())
    })?;
    pb.finish_and_clear();
    capacity_report::write(&rep, &a.out)?;
    if a.json {
        let v = serde_json::json!({"fits": rep.fits, "sizes": rep.sizes});
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    print_fits(&rep, &a);
    Ok(())
}

/// What a finished run says.
fn done_line(r: &CapacityRun, reused: bool) -> String {
    format!(
        "{} {} N {}: memorized {:.0} of {:.0} bits ({} epochs{}, {:.0}s){}",
        r.shape,
        r.precision.name(),
        r.n,
        r.memorized_bits,
        r.entropy_bits,
        r.epochs,
        if r.converged { "" } else { ", not converged" },
        r.seconds,
        if reused { ", from the journal" } else { "" }
    )
}

fn print_fits(rep: &capacity::CapacityReport, a: &CapacityArgs) {
    let reference = rep.reference_bits_per_param;
    for f in &rep.fits {
        println!("{}", capacity_report::fit_line(f, reference));
    }
    println!(
        "report in {} ({:.0}s)",
        a.out.join("report.html").display(),
        rep.seconds
    );
}
