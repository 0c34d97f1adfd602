//! Loading a model: a GGUF file (quantized or dequantized to f32) or a Hugging Face folder
//! (config.json + *.safetensors + tokenizer.json), with its tokenizer and chat template.
//! [`Model`] is what the rest of the crate runs: the forward pass plus the tokenizer.

mod formats;
mod forward;
mod host;
mod kernels;

pub use formats::{config, tokenizer};
pub use forward::decoder;

/// The former name of [`decoder`], kept for callers that reach `log_softmax` through it.
pub mod llama {
    pub use super::decoder::log_softmax;
}

use crate::error::{Error, Result};
use crate::hooks::{Captures, Hooks, Site, Spec};
pub use config::{Family, FAMILIES};
pub use decoder::{Batch, Config, Decoder, KvCache, LogitsAt, WeightsMode};
pub use formats::gguf_check::check as check_gguf;
pub use forward::plan::Plan;
pub use host::{device, sha256_file};
pub use kernels::alloc::keep_freed_memory;
use std::path::{Path, PathBuf};
pub use tokenizer::{Message, Tokenizer};

/// What identifies a model in artefacts (probe files, reports): its file, checksum and shape.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ModelId {
    pub file: String,
    pub sha256: String,
    pub architecture: String,
    pub n_layers: usize,
    pub d_model: usize,
}

/// A loaded model and where it came from.
pub struct Model {
    pub net: Decoder,
    pub tokenizer: Tokenizer,
    pub path: PathBuf,
    pub weights: WeightsMode,
    /// [`Model::identity`], computed once: a GGUF's checksum reads the whole file.
    id: std::sync::OnceLock<ModelId>,
}

impl Model {
    /// Load a `.gguf` file or a safetensors folder onto the CPU.
    pub fn load(path: &Path, weights: WeightsMode) -> Result<Model> {
        Self::load_on(path, weights, &candle_core::Device::Cpu)
    }

    /// Load a `.gguf` file or a safetensors folder onto `device`.
    pub fn load_on(
        path: &Path,
        weights: WeightsMode,
        device: &candle_core::Device,
    ) -> Result<Model> {
        if path.is_dir() {
            return Self::load_safetensors(path, device);
        }
        formats::gguf_check::check(path)?;
        let mut file = std::fs::File::open(path).map_err(|e| Error::file(path, e))?;
        let mut ct = candle_core::quantized::gguf_file::Content::read(&mut file)
            .map_err(|e| Error::file(path, format!("not a readable GGUF file: {e}")))?;
        let cfg = Config::from_gguf(&ct).map_err(|e| Error::file(path, e))?;
        let tokenizer = match path.parent().map(|d| d.join("tokenizer.json")) {
            Some(t) if t.exists() => {
                Tokenizer::from_folder(path.parent().unwrap_or(Path::new(".")))?
            }
            _ => Tokenizer::from_gguf(&ct)?,
        };
        // The weights need only the tensor table; the metadata (33 MB of Gemma 3's vocabulary
        // as GGUF values) is freed before them, so that they reuse its memory.
        ct.metadata = Default::default();
        kernels::alloc::release_freed_memory();
        let src = decoder::WeightSource::Gguf {
            ct: &ct,
            file: &mut file,
            mode: weights,
            device: device.clone(),
        };
        let net = Decoder::new(cfg, src).map_err(|e| Error::file(path, e))?;
        drop(ct);
        kernels::alloc::release_freed_memory();
        Ok(Model {
            net,
            tokenizer,
            path: path.to_path_buf(),
            weights,
            id: Default::default(),
        })
    }

    fn load_safetensors(dir: &Path, device: &candle_core::Device) -> Result<Model> {
        let (cfg, json) = Config::from_folder(dir)?;
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| Error::file(dir, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
            .collect();
        files.sort();
        if files.is_empty() {
            return Err(Error::file(dir, "no *.safetensors files in this folder"));
        }
        // SAFETY: the files are memory-mapped read-only and not modified while loaded.
        let vb = unsafe {
            candle_nn::VarBuilder::from_mmaped_safetensors(&files, candle_core::DType::F32, device)?
        };
        let tied = json
            .get("tie_word_embeddings")
            .and_then(|v| v.as_bool())
            .unwrap_or(false);
        let src = decoder::WeightSource::Safetensors { vb, tied };
        let net = Decoder::new(cfg, src).map_err(|e| Error::file(dir, e))?;
        Ok(Model {
            net,
            tokenizer: Tokenizer::from_folder(dir)?,
            path: dir.to_path_buf(),
            weights: WeightsMode::F32,
            id: Default::default(),
        })
    }

    /// The device the model runs on.
    pub fn device(&self) -> &candle_core::Device {
        self.net.device()
    }

    pub fn cfg(&self) -> &Config {
        &self.net.cfg
    }

    /// Parse a site name against this model.
    pub fn site(&self, name: &str) -> Result<Site> {
        Site::parse(name, self.cfg().n_layers)
    }

    /// Check a spec's vectors and heads against this model's widths.
    pub fn validate(&self, spec: &Spec) -> Result<()> {
        let cfg = self.cfg();
        spec.validate(|s| cfg.site_width(s), cfg.n_heads, cfg.n_layers)
    }

    /// The one prompt renderer: plain text, or the user message rendered by the chat template.
    pub fn prompt_text(&self, prompt: &str, chat: bool) -> Result<String> {
        if chat {
            self.tokenizer.render_chat(&[Message::user(prompt)], true)
        } else {
            Ok(prompt.to_string())
        }
    }

    /// Tokens of a prompt rendered by [`Model::prompt_text`], with BOS where the model wants one.
    pub fn prompt_ids(&self, prompt: &str, chat: bool) -> Result<Vec<u32>> {
        self.tokenizer
            .encode_prompt(&self.prompt_text(prompt, chat)?)
    }

    /// One uncached forward of `batch` under `spec`; returns logits and captures.
    pub fn run(
        &self,
        batch: &Batch,
        spec: &Spec,
        at: LogitsAt,
    ) -> Result<(candle_core::Tensor, Captures)> {
        self.validate(spec)?;
        let mut hooks = Hooks::new(spec, self.cfg().n_heads);
        let logits = self.net.forward(batch, None, &mut hooks, at)?;
        Ok((logits, hooks.captures))
    }

    /// Final-position logits of a single token sequence, as a vector.
    pub fn last_logits(&self, ids: &[u32], spec: &Spec) -> Result<Vec<f32>> {
        let (logits, _) = self.run(&Batch::single(ids), spec, LogitsAt::Last)?;
        Ok(logits.flatten_all()?.to_vec1::<f32>()?)
    }

    /// The model's identity. For a folder the checksum covers config.json and the names and
    /// sizes of its safetensors files. Computed on first use, then kept.
    pub fn identity(&self) -> Result<ModelId> {
        if let Some(id) = self.id.get() {
            return Ok(id.clone());
        }
        let id = self.compute_identity()?;
        Ok(self.id.get_or_init(|| id).clone())
    }

    fn compute_identity(&self) -> Result<ModelId> {
        let sha256 = if self.path.is_dir() {
            use sha2::Digest;
            let mut h = sha2::Sha256::new();
            let cfg = self.path.join("config.json");
            h.update(std::fs::read(&cfg).map_err(|e| Error::file(&cfg, e))?);
            let mut files: Vec<_> = std::fs::read_dir(&self.path)
                .map_err(|e| Error::file(&self.path, e))?
                .filter_map(|e| e.ok())
                .filter(|e| e.path().extension().is_some_and(|x| x == "safetensors"))
                .map(|e| (e.file_name(), e.metadata().map(|m| m.len()).unwrap_or(0)))
                .collect();
            files.sort();
            for (n, len) in files {
                h.update(n.to_string_lossy().as_bytes());
                h.update(len.to_le_bytes());
            }
            format!("{:x}", h.finalize())
        } else {
            sha256_file(&self.path)?
        };
        Ok(ModelId {
            file: self.name(),
            sha256,
            architecture: self.cfg().architecture.clone(),
            n_layers: self.cfg().n_layers,
            d_model: self.cfg().d_model,
        })
    }

    /// The file name that identifies this model in artefacts.
    pub fn name(&self) -> String {
        self.path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| self.path.display().to_string())
    }
}
