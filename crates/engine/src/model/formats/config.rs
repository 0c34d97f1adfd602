//! Model families and their hyper-parameters, read from GGUF metadata or a Hugging Face
//! `config.json` (both the transformers 4 layout, with a top-level `rope_theta`, and the
//! transformers 5 layout, with `rope_parameters`). A field this crate cannot honour is an error
//! that names it, never a silent default.

use super::gguf_meta::{gguf_vocab_size, meta_str, Gguf};
use crate::error::{Error, Result};
use crate::hooks::{Site, SiteKind};
use candle_core::quantized::gguf_file;
use serde_json::Value;

/// A decoder family: what differs between them is data here plus a few switches in the
/// forward pass (norm placement, activation, q/k norms, embedding scale).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    Llama,
    Qwen2,
    Mistral,
    Gemma3,
}

/// Every family this crate runs, by the name GGUF and config.json use.
pub const FAMILIES: &str = "llama, qwen2, mistral, gemma3";

impl Family {
    /// From GGUF's `general.architecture` or config.json's `model_type`.
    pub fn from_name(name: &str) -> Option<Family> {
        Some(match name {
            "llama" => Family::Llama,
            "qwen2" => Family::Qwen2,
            "mistral" => Family::Mistral,
            "gemma3" | "gemma3_text" => Family::Gemma3,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Family::Llama => "llama",
            Family::Qwen2 => "qwen2",
            Family::Mistral => "mistral",
            Family::Gemma3 => "gemma3",
        }
    }

    /// Biases on the q, k and v projections.
    pub fn qkv_bias(self) -> bool {
        self == Family::Qwen2
    }

    /// Gemma's layout: RMSNorm on q and k per head, norms after attention and after the MLP
    /// as well as before, GELU (tanh) gating, embeddings times √d, and a BOS before prompts.
    pub fn is_gemma(self) -> bool {
        self == Family::Gemma3
    }

    /// Gemma checkpoints store RMSNorm weights as w and apply (1 + w); llama.cpp's converter
    /// adds the 1 when it writes the GGUF, so only safetensors need it added here.
    pub fn hf_norm_offset(self) -> f64 {
        if self.is_gemma() {
            1.0
        } else {
            0.0
        }
    }
}

/// The longest sequence this crate runs (its rope tables are built for this many positions).
pub const MAX_POSITIONS: usize = 1 << 17;

/// Frequency scaling of the rotary embedding.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
#[serde(tag = "rope_type", rename_all = "lowercase")]
pub enum RopeScaling {
    /// Positions divided by `factor`.
    Linear { factor: f32 },
    /// Llama 3.1's band-wise scaling of the inverse frequencies.
    Llama3 {
        factor: f32,
        low_freq_factor: f32,
        high_freq_factor: f32,
        original_max_position_embeddings: f32,
    },
}

/// Architecture hyper-parameters.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Config {
    pub family: Family,
    /// The family's name, as artefacts record it.
    pub architecture: String,
    pub n_layers: usize,
    pub d_model: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub d_head: usize,
    pub d_mlp: usize,
    pub vocab_size: usize,
    /// Rope base of global (full-attention) layers.
    pub rope_theta: f32,
    /// Rope base of sliding-window layers (Gemma 3: 10 000).
    pub rope_local_theta: f32,
    /// Scaling of the global layers' rope.
    pub rope_scaling: Option<RopeScaling>,
    pub rms_eps: f64,
    pub max_positions: usize,
    /// GGUF files of llama-type models store Q/K permuted for interleaved rope; everything else
    /// (Hugging Face checkpoints, llama.cpp's Qwen 2 and Gemma 3) rotates halves.
    pub rope_interleaved: bool,
    /// Keys a query may see on sliding layers (transformers: query − key < window).
    pub sliding_window: Option<usize>,
    /// Which layers use the sliding window and the local rope base.
    pub local_layers: Vec<bool>,
    /// Attention scores are q·k times this (1/√d_head, or Gemma's 1/√query_pre_attn_scalar).
    pub query_scale: f64,
}

impl Config {
    /// The width of the activations seen at `site`.
    pub fn site_width(&self, site: Site) -> usize {
        match site.kind {
            SiteKind::AttnZ => self.n_heads * self.d_head,
            SiteKind::MlpPost => self.d_mlp,
            _ => self.d_model,
        }
    }

    /// Whether layer `l` attends through the sliding window.
    pub fn is_local(&self, l: usize) -> bool {
        self.local_layers.get(l).copied().unwrap_or(false)
    }

    /// Multiplier of the token embeddings (Gemma: √d_model, rounded to the weights' f32).
    pub fn embed_scale(&self) -> Option<f64> {
        self.family
            .is_gemma()
            .then(|| (self.d_model as f32).sqrt() as f64)
    }

    /// Read the hyper-parameters from GGUF metadata.
    pub fn from_gguf(ct: &gguf_file::Content) -> Result<Config> {
        let arch = meta_str(ct, "general.architecture")?;
        let family = Family::from_name(&arch).ok_or_else(|| {
            Error::Model(format!(
                "GGUF general.architecture `{arch}` is not supported; supported: {FAMILIES}"
            ))
        })?;
        let m = Gguf { ct, arch: &arch };
        let d_model = m.u("embedding_length")?;
        let n_heads = m.u("attention.head_count")?;
        let n_layers = m.u("block_count")?;
        // A zero head count is refused by `checked`, naming it, not divided by here.
        let d_head = m
            .opt_u("attention.key_length")?
            .unwrap_or(d_model.checked_div(n_heads).unwrap_or(0));
        let rope_theta = m.opt_f("rope.freq_base")?.unwrap_or(10_000.0);
        let sliding_window = m.opt_u("attention.sliding_window")?;
        let (local_layers, rope_local_theta) = match family {
            // llama.cpp: every 6th layer global, local rope base 10 000.
            Family::Gemma3 => ((0..n_layers).map(|l| (l + 1) % 6 != 0).collect(), 10_000.0),
            _ => (vec![sliding_window.is_some(); n_layers], rope_theta),
        };
        Config {
            family,
            architecture: family.name().into(),
            n_layers,
            d_model,
            n_heads,
            n_kv_heads: m.opt_u("attention.head_count_kv")?.unwrap_or(n_heads),
            d_head,
            d_mlp: m.u("feed_forward_length")?,
            vocab_size: gguf_vocab_size(&m)?,
            rope_theta,
            rope_local_theta,
            rope_scaling: gguf_rope_scaling(&m)?,
            rms_eps: m.f("attention.layer_norm_rms_epsilon")? as f64,
            max_positions: m.opt_u("context_length")?.unwrap_or(4096),
            rope_interleaved: matches!(family, Family::Llama | Family::Mistral),
            sliding_window,
            local_layers,
            query_scale: 1.0 / (d_head as f64).sqrt(),
        }
        .checked("GGUF metadata")
    }

    /// Read the `config.json` of a Hugging Face model folder (errors name the file): the
    /// config, and the JSON for the fields it does not hold.
    pub fn from_folder(dir: &std::path::Path) -> Result<(Config, Value)> {
        let p = dir.join("config.json");
        let text = std::fs::read_to_string(&p).map_err(|e| Error::file(&p, e))?;
        let json: Value = serde_json::from_str(&text).map_err(|e| Error::file(&p, e))?;
        let cfg = Config::from_hf_json(&json).map_err(|e| Error::file(&p, e))?;
        Ok((cfg, json))
    }

    /// Read a Hugging Face `config.json`.
    pub fn from_hf_json(v: &Value) -> Result<Config> {
        let model_type = match v.get("model_type") {
            Some(Value::String(t)) => t.as_str(),
            Some(t) => {
                return Err(Error::Model(format!(
                    "config.json: `model_type` must be a string, not {t}"
                )))
            }
            None => {
                return Err(Error::Model(
                    "config.json lacks `model_type`; supported: llama, qwen2, mistral, \
                     gemma3_text"
                        .into(),
                ))
            }
        };
        let family = Family::from_name(model_type).ok_or_else(|| {
            Error::Model(format!(
                "config.json: model_type `{model_type}` is not supported; supported: llama, \
                 qwen2, mistral, gemma3_text"
            ))
        })?;
        let j = Json(v);
        let d_model = j.usize("hidden_size")?;
        let n_heads = j.usize("num_attention_heads")?;
        let n_layers = j.usize("num_hidden_layers")?;
        // A zero head count is refused by `checked`, naming it, not divided by here.
        let d_head = j
            .opt_usize("head_dim")?
            .unwrap_or(d_model.checked_div(n_heads).unwrap_or(0));
        hf_unsupported(&j, family)?;
        let rope = hf_rope(&j, family)?;
        let sliding_window = hf_sliding_window(&j, family)?;
        let local_layers = hf_local_layers(&j, family, n_layers, sliding_window.is_some())?;
        let query_scale = match family {
            Family::Gemma3 => 1.0 / j.f64("query_pre_attn_scalar")?.sqrt(),
            _ => 1.0 / (d_head as f64).sqrt(),
        };
        Config {
            family,
            architecture: family.name().into(),
            n_layers,
            d_model,
            n_heads,
            n_kv_heads: j.opt_usize("num_key_value_heads")?.unwrap_or(n_heads),
            d_head,
            d_mlp: j.usize("intermediate_size")?,
            vocab_size: j.usize("vocab_size")?,
            rope_theta: rope.global_theta,
            rope_local_theta: rope.local_theta,
            rope_scaling: rope.scaling,
            rms_eps: j.opt_f64("rms_norm_eps")?.unwrap_or(1e-6),
            max_positions: j.opt_usize("max_position_embeddings")?.unwrap_or(4096),
            rope_interleaved: false,
            sliding_window,
            local_layers,
            query_scale,
        }
        .checked("config.json")
    }

    /// The config if its sizes are usable; a zero, absurd or inconsistent one (a damaged file)
    /// is an error naming it. Positions beyond [`MAX_POSITIONS`] are not supported: the limit
    /// is lowered to it, and longer sequences are refused when they come.
    fn checked(mut self, source: &str) -> Result<Config> {
        let bad = |what: &str, v: usize| {
            Err(Error::Model(format!(
                "{source}: {what} = {v} is not a usable size"
            )))
        };
        let sizes = [
            ("layers", self.n_layers, 1 << 10),
            ("d_model", self.d_model, 1 << 16),
            ("heads", self.n_heads, 1 << 10),
            ("KV heads", self.n_kv_heads, 1 << 10),
            ("d_head", self.d_head, 1 << 12),
            ("d_mlp", self.d_mlp, 1 << 20),
            ("vocabulary", self.vocab_size, 1 << 23),
            ("positions", self.max_positions, usize::MAX),
        ];
        for (what, v, max) in sizes {
            if v == 0 || v > max {
                return bad(what, v);
            }
        }
        if !self.n_heads.is_multiple_of(self.n_kv_heads) || !self.d_head.is_multiple_of(2) {
            return Err(Error::Model(format!(
                "{source}: {} heads over {} KV heads of width {} do not fit grouped-query \
                 attention with rotary embeddings",
                self.n_heads, self.n_kv_heads, self.d_head
            )));
        }
        // Each of these would turn the forward pass's numbers into NaN or infinity.
        let positive = |x: f64| x.is_finite() && x > 0.0;
        let numbers = [
            ("RMSNorm epsilon", self.rms_eps),
            ("rope base", self.rope_theta as f64),
            ("local rope base", self.rope_local_theta as f64),
            ("attention score scale", self.query_scale),
        ];
        if let Some((what, v)) = numbers.into_iter().find(|(_, v)| !positive(*v)) {
            return Err(Error::Model(format!(
                "{source}: {what} {v} is not a usable number (it must be positive and finite)"
            )));
        }
        if let Some(RopeScaling::Linear { factor } | RopeScaling::Llama3 { factor, .. }) =
            &self.rope_scaling
        {
            if !positive(*factor as f64) {
                return Err(Error::Model(format!(
                    "{source}: rope scaling factor {factor} is not a usable number (it must be \
                     positive and finite)"
                )));
            }
        }
        self.max_positions = self.max_positions.min(MAX_POSITIONS);
        Ok(self)
    }
}

/// Typed reads from config.json whose errors name the field.
struct Json<'a>(&'a Value);

impl Json<'_> {
    fn bad(&self, k: &str, want: &str) -> Error {
        Error::Model(format!("config.json: `{k}` must be {want}"))
    }
    fn is_null(&self, k: &str) -> bool {
        self.0.get(k).is_none_or(Value::is_null)
    }
    fn opt_usize(&self, k: &str) -> Result<Option<usize>> {
        if self.is_null(k) {
            return Ok(None);
        }
        let v = self.0[k]
            .as_u64()
            .ok_or_else(|| self.bad(k, "an integer"))?;
        Ok(Some(v as usize))
    }
    fn usize(&self, k: &str) -> Result<usize> {
        self.opt_usize(k)?
            .ok_or_else(|| Error::Model(format!("config.json lacks the integer field `{k}`")))
    }
    fn opt_f64(&self, k: &str) -> Result<Option<f64>> {
        if self.is_null(k) {
            return Ok(None);
        }
        let v = self.0[k].as_f64().ok_or_else(|| self.bad(k, "a number"))?;
        Ok(Some(v))
    }
    fn f64(&self, k: &str) -> Result<f64> {
        self.opt_f64(k)?
            .ok_or_else(|| Error::Model(format!("config.json lacks the number field `{k}`")))
    }
    /// A string field: absent or null is None; any other type is an error naming it.
    fn opt_str(&self, k: &str) -> Result<Option<&str>> {
        match self.0.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(v) => Err(self.bad(k, &format!("a string, not {v}"))),
        }
    }
    /// An object field: absent or null is None; any other type is an error naming it.
    fn opt_object(&self, k: &str) -> Result<Option<&Value>> {
        match self.0.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(v) if v.is_object() => Ok(Some(v)),
            Some(v) => Err(self.bad(k, &format!("an object, not {v}"))),
        }
    }
}

/// Fields whose values this crate cannot honour: soft-capping, another activation.
fn hf_unsupported(j: &Json, family: Family) -> Result<()> {
    for k in ["final_logit_softcapping", "attn_logit_softcapping"] {
        if !j.is_null(k) {
            return Err(Error::Model(format!(
                "config.json: `{k}` is set; soft-capping is not supported"
            )));
        }
    }
    let act = j.opt_str(if family.is_gemma() {
        "hidden_activation"
    } else {
        "hidden_act"
    })?;
    let want = if family.is_gemma() {
        "gelu_pytorch_tanh"
    } else {
        "silu"
    };
    if let Some(a) = act.filter(|a| *a != want) {
        return Err(Error::Model(format!(
            "config.json: activation `{a}` is not supported for {}; supported: {want}",
            family.name()
        )));
    }
    Ok(())
}

/// What the rope fields of config.json come to.
struct HfRope {
    global_theta: f32,
    local_theta: f32,
    scaling: Option<RopeScaling>,
}

/// Rope from `rope_parameters` (transformers 5: one object, or one per layer type) or from
/// the older `rope_theta`, `rope_scaling` and `rope_local_base_freq`.
fn hf_rope(j: &Json, family: Family) -> Result<HfRope> {
    let default_theta = if family.is_gemma() { 1e6 } else { 1e4 };
    let params = j.opt_object("rope_parameters")?;
    let (global, local) = match params {
        Some(p) if p.get("full_attention").is_some() || p.get("sliding_attention").is_some() => (
            p.get("full_attention").cloned(),
            p.get("sliding_attention").cloned(),
        ),
        Some(p) => (Some(p.clone()), None),
        None => (j.opt_object("rope_scaling")?.cloned(), None),
    };
    let theta_of = |p: &Option<Value>, key: &str, dflt: f64| -> Result<f64> {
        let inner = match p.as_ref().and_then(|p| p.get("rope_theta")) {
            None | Some(Value::Null) => None,
            Some(t) => Some(t.as_f64().ok_or_else(|| {
                Error::Model(format!(
                    "config.json: `rope_parameters.rope_theta` must be a number, not {t}"
                ))
            })?),
        };
        Ok(inner.or(j.opt_f64(key)?).unwrap_or(dflt))
    };
    let global_theta = theta_of(&global, "rope_theta", default_theta)?;
    let local_theta = match family {
        Family::Gemma3 => theta_of(&local, "rope_local_base_freq", 1e4)?,
        _ => global_theta,
    };
    if let Some(s) = rope_scaling(local.as_ref(), "rope_parameters.sliding_attention")? {
        return Err(Error::Model(format!(
            "config.json: rope scaling {s:?} on sliding layers is not supported"
        )));
    }
    Ok(HfRope {
        global_theta: global_theta as f32,
        local_theta: local_theta as f32,
        scaling: rope_scaling(global.as_ref(), "rope_parameters")?,
    })
}

/// The scaling an HF rope object asks for; `default` (or no type) is none.
fn rope_scaling(p: Option<&Value>, field: &str) -> Result<Option<RopeScaling>> {
    let Some(p) = p.filter(|p| !p.is_null()) else {
        return Ok(None);
    };
    let kind = match p.get("rope_type").or_else(|| p.get("type")) {
        None | Some(Value::Null) => None,
        Some(Value::String(t)) => Some(t.as_str()),
        Some(t) => {
            return Err(Error::Model(format!(
                "config.json: `{field}.rope_type` must be a string, not {t}"
            )))
        }
    };
    let num = |k: &str| -> Result<f32> {
        p.get(k)
            .and_then(Value::as_f64)
            .map(|x| x as f32)
            .ok_or_else(|| Error::Model(format!("config.json: `{field}.{k}` must be a number")))
    };
    Ok(match kind {
        None | Some("default") => None,
        Some("linear") => Some(RopeScaling::Linear {
            factor: num("factor")?,
        }),
        Some("llama3") => Some(RopeScaling::Llama3 {
            factor: num("factor")?,
            low_freq_factor: num("low_freq_factor")?,
            high_freq_factor: num("high_freq_factor")?,
            original_max_position_embeddings: num("original_max_position_embeddings")?,
        }),
        Some(t) => {
            return Err(Error::Model(format!(
                "config.json: `{field}.rope_type` `{t}` is not supported; supported: default, \
                 linear, llama3"
            )))
        }
    })
}

/// The window of sliding layers. Qwen 2 applies its `sliding_window` only with
/// `use_sliding_window`.
fn hf_sliding_window(j: &Json, family: Family) -> Result<Option<usize>> {
    let window = j.opt_usize("sliding_window")?;
    Ok(match family {
        Family::Qwen2 => match j.0.get("use_sliding_window") {
            Some(Value::Bool(true)) => window,
            None | Some(Value::Null) | Some(Value::Bool(false)) => None,
            Some(v) => return Err(j.bad("use_sliding_window", &format!("true or false, not {v}"))),
        },
        Family::Llama => None,
        _ => window,
    })
}

/// Which layers slide: `layer_types` when given, else Gemma 3's every-6th-global pattern
/// (`sliding_window_pattern`), else all layers when there is a window.
fn hf_local_layers(j: &Json, family: Family, n: usize, window: bool) -> Result<Vec<bool>> {
    let types = match j.0.get("layer_types") {
        None | Some(Value::Null) => None,
        Some(Value::Array(t)) => Some(t),
        Some(v) => return Err(j.bad("layer_types", &format!("a list, not {v}"))),
    };
    if let Some(types) = types {
        if types.len() != n {
            return Err(Error::Model(format!(
                "config.json: `layer_types` has {} entries for {n} layers",
                types.len()
            )));
        }
        return types
            .iter()
            .enumerate()
            .map(|(i, t)| match t.as_str() {
                Some("sliding_attention") => Ok(window),
                Some("full_attention") => Ok(false),
                _ => Err(Error::Model(format!(
                    "config.json: `layer_types[{i}]` is {t}; valid: \"full_attention\", \
                     \"sliding_attention\""
                ))),
            })
            .collect();
    }
    if family.is_gemma() {
        let every = j.opt_usize("sliding_window_pattern")?.unwrap_or(6).max(1);
        return Ok((0..n).map(|l| window && (l + 1) % every != 0).collect());
    }
    Ok(vec![window; n])
}

/// The rope scaling a GGUF names (`ARCH.rope.scaling.type`): none or linear.
fn gguf_rope_scaling(m: &Gguf) -> Result<Option<RopeScaling>> {
    match m.get("rope.scaling.type").ok().map(|v| v.to_string()) {
        None => Ok(None),
        Some(Ok(t)) if t == "none" => Ok(None),
        Some(Ok(t)) if t == "linear" => Ok(Some(RopeScaling::Linear {
            factor: m.f("rope.scaling.factor")?,
        })),
        Some(t) => Err(Error::Model(format!(
            "GGUF `{}.rope.scaling.type` {t:?} is not supported; supported: none, linear",
            m.arch
        ))),
    }
}
