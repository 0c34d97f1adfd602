//! The Llama-family forward pass (Llama, SmolLM, Qwen2) with its hook sites.
//!
//! One flat forward, read top to bottom, in the shape of candle-transformers' llama.rs and
//! quantized_llama.rs; weights.rs reads the weights, batch.rs holds the batch, cache and mask.
//! Every hook site is an explicit `hooks.apply(site, x)` call below; nothing else reads or
//! changes activations.

use super::batch::attention_mask;
pub use super::batch::{Batch, KvCache, LogitsAt};
use super::weights::{lm_head, Linear};
pub use super::weights::{WeightSource, WeightsMode};
use crate::error::{Error, Result};
use crate::hooks::{Hooks, RowInfo, Site, SiteKind};
use candle_core::quantized::gguf_file;
use candle_core::{DType, Device, Tensor, D};

/// Architecture hyper-parameters.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Config {
    pub architecture: String,
    pub n_layers: usize,
    pub d_model: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub d_head: usize,
    pub d_mlp: usize,
    pub vocab_size: usize,
    pub rope_theta: f32,
    pub rms_eps: f64,
    pub max_positions: usize,
    /// GGUF files store Q/K permuted for interleaved rope; HF checkpoints use the half split.
    pub rope_interleaved: bool,
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

    /// Read the llama-family hyper-parameters from GGUF metadata.
    pub fn from_gguf(ct: &gguf_file::Content) -> Result<Config> {
        let arch = meta_str(ct, "general.architecture")?;
        let get = |k: &str| -> Result<&gguf_file::Value> {
            ct.metadata
                .get(&format!("{arch}.{k}"))
                .ok_or_else(|| Error::Model(format!("GGUF metadata lacks `{arch}.{k}`")))
        };
        let u = |k: &str| -> Result<usize> { Ok(get(k)?.to_u32()? as usize) };
        let d_model = u("embedding_length")?;
        let n_heads = u("attention.head_count")?;
        let vocab_size = match get("vocab_size") {
            Ok(v) => v.to_u32()? as usize,
            Err(_) => ct
                .metadata
                .get("tokenizer.ggml.tokens")
                .and_then(|v| v.to_vec().ok())
                .map(|v| v.len())
                .ok_or_else(|| Error::Model("cannot tell the vocabulary size".into()))?,
        };
        Ok(Config {
            architecture: arch.clone(),
            n_layers: u("block_count")?,
            d_model,
            n_heads,
            n_kv_heads: u("attention.head_count_kv").unwrap_or(n_heads),
            d_head: d_model / n_heads,
            d_mlp: u("feed_forward_length")?,
            vocab_size,
            rope_theta: get("rope.freq_base")
                .and_then(|v| Ok(v.to_f32()?))
                .unwrap_or(10_000.0),
            rms_eps: get("attention.layer_norm_rms_epsilon")?.to_f32()? as f64,
            max_positions: u("context_length").unwrap_or(4096),
            rope_interleaved: true,
        })
    }

    /// Read a Hugging Face `config.json` (Llama, SmolLM or Qwen2).
    pub fn from_hf_json(v: &serde_json::Value) -> Result<Config> {
        let u = |k: &str| -> Result<usize> {
            v.get(k)
                .and_then(|x| x.as_u64())
                .map(|x| x as usize)
                .ok_or_else(|| Error::Model(format!("config.json lacks the integer field `{k}`")))
        };
        let model_type = v
            .get("model_type")
            .and_then(|x| x.as_str())
            .unwrap_or("llama")
            .to_string();
        if !matches!(model_type.as_str(), "llama" | "qwen2" | "mistral") {
            return Err(Error::Model(format!(
                "model_type `{model_type}` is not supported; supported: llama, qwen2, mistral"
            )));
        }
        let d_model = u("hidden_size")?;
        let n_heads = u("num_attention_heads")?;
        Ok(Config {
            architecture: model_type,
            n_layers: u("num_hidden_layers")?,
            d_model,
            n_heads,
            n_kv_heads: u("num_key_value_heads").unwrap_or(n_heads),
            d_head: u("head_dim").unwrap_or(d_model / n_heads),
            d_mlp: u("intermediate_size")?,
            vocab_size: u("vocab_size")?,
            rope_theta: v
                .get("rope_theta")
                .and_then(|x| x.as_f64())
                .unwrap_or(10_000.0) as f32,
            rms_eps: v
                .get("rms_norm_eps")
                .and_then(|x| x.as_f64())
                .unwrap_or(1e-6),
            max_positions: u("max_position_embeddings").unwrap_or(4096),
            rope_interleaved: false,
        })
    }
}

fn meta_str(ct: &gguf_file::Content, key: &str) -> Result<String> {
    ct.metadata
        .get(key)
        .and_then(|v| v.to_string().ok())
        .cloned()
        .ok_or_else(|| Error::Model(format!("GGUF metadata lacks `{key}`")))
}

/// One block's weights. q|k|v and gate|up are stored as one matrix each (rows stacked), so a
/// token's activations are multiplied once per group; rows are independent, so the outputs
/// equal the separate products.
struct Block {
    attn_norm: Tensor,
    qkv: Linear,
    o: Linear,
    mlp_norm: Tensor,
    gate_up: Linear,
    down: Linear,
}

/// A Llama-family decoder-only transformer.
pub struct Llama {
    pub cfg: Config,
    embed: Tensor,
    blocks: Vec<Block>,
    norm: Tensor,
    lm_head: Linear,
    cos: Tensor,
    sin: Tensor,
}

impl Llama {
    /// Load the weights named as in llama.cpp (GGUF) or Hugging Face (safetensors).
    pub fn new(cfg: Config, mut src: WeightSource) -> Result<Self> {
        let embed = src.tensor("token_embd.weight", "model.embed_tokens.weight")?;
        let qkv_bias = matches!(src, WeightSource::Safetensors { qkv_bias: true, .. })
            || cfg.architecture == "qwen2";
        let mut blocks = Vec::with_capacity(cfg.n_layers);
        for l in 0..cfg.n_layers {
            let (g, h) = (format!("blk.{l}"), format!("model.layers.{l}"));
            blocks.push(Block {
                attn_norm: src.tensor(
                    &format!("{g}.attn_norm.weight"),
                    &format!("{h}.input_layernorm.weight"),
                )?,
                qkv: src.fused_linear(
                    &[
                        (format!("{g}.attn_q"), format!("{h}.self_attn.q_proj")),
                        (format!("{g}.attn_k"), format!("{h}.self_attn.k_proj")),
                        (format!("{g}.attn_v"), format!("{h}.self_attn.v_proj")),
                    ],
                    qkv_bias,
                )?,
                o: src.linear(
                    &format!("{g}.attn_output"),
                    &format!("{h}.self_attn.o_proj"),
                    false,
                )?,
                mlp_norm: src.tensor(
                    &format!("{g}.ffn_norm.weight"),
                    &format!("{h}.post_attention_layernorm.weight"),
                )?,
                gate_up: src.fused_linear(
                    &[
                        (format!("{g}.ffn_gate"), format!("{h}.mlp.gate_proj")),
                        (format!("{g}.ffn_up"), format!("{h}.mlp.up_proj")),
                    ],
                    false,
                )?,
                down: src.linear(
                    &format!("{g}.ffn_down"),
                    &format!("{h}.mlp.down_proj"),
                    false,
                )?,
            });
        }
        let norm = src.tensor("output_norm.weight", "model.norm.weight")?;
        let lm_head = lm_head(&mut src, &embed)?;
        let (cos, sin) = rope_tables(&cfg)?;
        Ok(Llama {
            cfg,
            embed,
            blocks,
            norm,
            lm_head,
            cos,
            sin,
        })
    }

    /// Run `batch` through the model, continuing `cache` when given.
    /// Returns logits `[batch, n, vocab]` with n = 1 (`LogitsAt::Last`) or seq.
    pub fn forward(
        &self,
        batch: &Batch,
        cache: Option<&mut KvCache>,
        hooks: &mut Hooks,
        at: LogitsAt,
    ) -> Result<Tensor> {
        let cfg = &self.cfg;
        let (b, seq) = (batch.ids.len(), batch.ids.first().map_or(0, Vec::len));
        if b == 0 || seq == 0 {
            return Err(Error::Invalid("forward needs at least one token".into()));
        }
        let mut cache = cache;
        let offset = cache.as_ref().map_or(0, |c| c.len);
        let pads = match cache.as_mut() {
            Some(c) if c.len > 0 => c.pads.clone(),
            Some(c) => {
                c.pads = batch.pads.clone();
                c.pads.clone()
            }
            None => batch.pads.clone(),
        };
        if offset + seq > cfg.max_positions {
            return Err(Error::Invalid(format!(
                "sequence of {} tokens exceeds the model's {} positions",
                offset + seq,
                cfg.max_positions
            )));
        }
        let rows = (0..b)
            .map(|r| RowInfo {
                pad: pads[r],
                prompt_len: hooks_prompt_len(hooks, r, offset + seq - pads[r]),
            })
            .collect();
        hooks.set_rows(rows, offset);

        let flat: Vec<u32> = batch.ids.iter().flatten().copied().collect();
        let ids = Tensor::from_vec(flat, (b * seq,), &Device::Cpu)?;
        let mut x = self
            .embed
            .index_select(&ids, 0)?
            .reshape((b, seq, cfg.d_model))?; // [b, seq, d_model]
        x = hooks.apply(Site::new(SiteKind::Embed, 0), x)?;
        let (cos, sin) = self.rope_for(&pads, offset, b, seq)?;
        let mask = attention_mask(&pads, offset, b, seq)?;

        for (l, blk) in self.blocks.iter().enumerate() {
            let site = |k| Site::new(k, l);
            x = hooks.apply(site(SiteKind::ResidPre), x)?;
            let resid_pre = x.clone();

            // attention
            let h = rms_norm(&x, &blk.attn_norm, cfg.rms_eps)?;
            let kv = cache.as_mut().map(|c| &mut c.kv[l]);
            let z = self.attention(blk, &h, &cos, &sin, mask.as_ref(), kv)?; // [b, seq, heads*d_head]
            let z = hooks.apply(site(SiteKind::AttnZ), z)?;
            let attn_out = blk.o.forward(&z)?; // [b, seq, d_model]
            let attn_out = hooks.apply(site(SiteKind::AttnOut), attn_out)?;
            let x_mid = (resid_pre + attn_out)?;
            let x_mid = hooks.apply(site(SiteKind::ResidMid), x_mid)?;

            // gated MLP
            let h = rms_norm(&x_mid, &blk.mlp_norm, cfg.rms_eps)?;
            let gu = blk.gate_up.forward(&h)?; // [b, seq, 2*d_mlp]
            let (gate, up) = (
                gu.narrow(2, 0, cfg.d_mlp)?,
                gu.narrow(2, cfg.d_mlp, cfg.d_mlp)?,
            );
            let act = (candle_nn::ops::silu(&gate)? * up)?; // [b, seq, d_mlp]
            let act = hooks.apply(site(SiteKind::MlpPost), act)?;
            let mlp_out = blk.down.forward(&act)?;
            let mlp_out = hooks.apply(site(SiteKind::MlpOut), mlp_out)?;
            x = (x_mid + mlp_out)?;
            x = hooks.apply(site(SiteKind::ResidPost), x)?;
        }
        if let Some(c) = cache {
            c.len += seq;
        }

        let x = match at {
            LogitsAt::Last => {
                // Only the last column goes on: its absolute position is offset + seq - 1.
                hooks.set_offset(offset + seq - 1);
                x.narrow(1, seq - 1, 1)?.contiguous()?
            }
            LogitsAt::All | LogitsAt::Normed => x,
        };
        let x = rms_norm(&x, &self.norm, cfg.rms_eps)?;
        let x = hooks.apply(Site::new(SiteKind::LnFinal, 0), x)?;
        if at == LogitsAt::Normed {
            return Ok(x);
        }
        self.lm_head.forward(&x)
    }

    /// Self-attention of one block: `h` is `[b, seq, d_model]`, the result `[b, seq, heads*d_head]`.
    fn attention(
        &self,
        blk: &Block,
        h: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        mask: Option<&Tensor>,
        kv: Option<&mut Option<(Tensor, Tensor)>>,
    ) -> Result<Tensor> {
        let cfg = &self.cfg;
        let (b, seq, _) = h.dims3()?;
        let heads = |t: Tensor, n: usize| -> Result<Tensor> {
            Ok(t.reshape((b, seq, n, cfg.d_head))?
                .transpose(1, 2)?
                .contiguous()?)
        };
        let qkv = blk.qkv.forward(h)?; // [b, seq, (heads + 2*kv_heads)*d_head]
        let (nq, nk) = (cfg.n_heads * cfg.d_head, cfg.n_kv_heads * cfg.d_head);
        let q = heads(qkv.narrow(2, 0, nq)?, cfg.n_heads)?; // [b, heads, seq, d_head]
        let k = heads(qkv.narrow(2, nq, nk)?, cfg.n_kv_heads)?; // [b, kv_heads, seq, d_head]
        let v = heads(qkv.narrow(2, nq + nk, nk)?, cfg.n_kv_heads)?;
        let q = rope(&q, cos, sin, cfg.rope_interleaved)?;
        let k = rope(&k, cos, sin, cfg.rope_interleaved)?;
        let (k, v) = match kv {
            Some(slot) => {
                let (k, v) = match slot.take() {
                    Some((pk, pv)) => (Tensor::cat(&[&pk, &k], 2)?, Tensor::cat(&[&pv, &v], 2)?),
                    None => (k, v),
                };
                *slot = Some((k.clone(), v.clone()));
                (k, v)
            }
            None => (k, v),
        };
        // Long prompts: the scores of all queries at once ([b, heads, seq, kv] floats) would take
        // gigabytes, so queries go in chunks that keep each score block near ATT_BLOCK floats.
        let kv_len = k.dim(2)?;
        let rows = (ATT_BLOCK / (b * cfg.n_heads * kv_len).max(1)).max(1);
        if rows >= seq {
            return self.attend(&q, &k, &v, mask);
        }
        let mut parts = Vec::with_capacity(seq.div_ceil(rows));
        for s0 in (0..seq).step_by(rows) {
            let n = rows.min(seq - s0);
            let qc = q.narrow(2, s0, n)?.contiguous()?; // [b, heads, n, d_head]
            let mc = mask.map(|m| m.narrow(2, s0, n)).transpose()?; // [b, 1, n, kv]
            parts.push(self.attend(&qc, &k, &v, mc.as_ref())?);
        }
        Ok(Tensor::cat(&parts, 1)?) // [b, seq, heads*d_head]
    }

    /// Scaled dot-product attention of queries `[b, heads, n, d_head]` over keys and values
    /// `[b, kv_heads, kv, d_head]`, with an additive mask `[b, 1, n, kv]`; `[b, n, heads*d_head]`.
    fn attend(&self, q: &Tensor, k: &Tensor, v: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        let cfg = &self.cfg;
        let (b, _, n, _) = q.dims4()?;
        // Grouped-query attention without copying K/V: the `g` query heads that share a KV head
        // are stacked along the query axis, [b, kv_heads, g*n, d_head].
        let (kvh, g) = (cfg.n_kv_heads, cfg.n_heads / cfg.n_kv_heads);
        let kv_len = k.dim(2)?;
        let q = q.reshape((b, kvh, g * n, cfg.d_head))?;
        let scale = 1.0 / (cfg.d_head as f64).sqrt();
        let mut att = (q.matmul(&k.t()?)? * scale)?; // [b, kv_heads, g*n, kv]
        if let Some(m) = mask {
            // mask [b, 1, n, kv] -> [b, 1, g, n, kv] over the stacked query heads.
            let att5 = att.reshape((b, kvh, g, n, kv_len))?;
            att = att5
                .broadcast_add(&m.unsqueeze(2)?)?
                .reshape((b, kvh, g * n, kv_len))?;
        }
        let att = softmax_last_dim(&att)?;
        let y = att.matmul(v)?.reshape((b, cfg.n_heads, n, cfg.d_head))?; // [b, heads, n, d_head]
        Ok(y.transpose(1, 2)?
            .reshape((b, n, cfg.n_heads * cfg.d_head))?)
    }

    /// cos/sin for each row's positions: `[seq, d_head/2]`, or `[b, seq, d_head/2]` with padding.
    fn rope_for(
        &self,
        pads: &[usize],
        offset: usize,
        b: usize,
        seq: usize,
    ) -> Result<(Tensor, Tensor)> {
        if pads.iter().all(|p| *p == 0) {
            return Ok((
                self.cos.narrow(0, offset, seq)?,
                self.sin.narrow(0, offset, seq)?,
            ));
        }
        let pos: Vec<u32> = (0..b)
            .flat_map(|r| (0..seq).map(move |i| (offset + i).saturating_sub(pads[r]) as u32))
            .collect();
        let idx = Tensor::from_vec(pos, (b * seq,), &Device::Cpu)?;
        let half = self.cfg.d_head / 2;
        Ok((
            self.cos.index_select(&idx, 0)?.reshape((b, seq, half))?,
            self.sin.index_select(&idx, 0)?.reshape((b, seq, half))?,
        ))
    }

    /// The device the weights live on; activations and interventions go there too.
    pub fn device(&self) -> &Device {
        self.embed.device()
    }

    /// The unembedding applied to a final-normalized residual `[.., d_model]`.
    pub fn unembed(&self, x: &Tensor) -> Result<Tensor> {
        self.lm_head.forward(x)
    }
}

/// The prompt length of row `r` as the caller set it, else the whole sequence so far.
fn hooks_prompt_len(hooks: &Hooks, r: usize, len: usize) -> usize {
    hooks.prompt_len(r).unwrap_or(len)
}

/// cos and sin tables `[max_positions, d_head/2]`.
fn rope_tables(cfg: &Config) -> Result<(Tensor, Tensor)> {
    let half = cfg.d_head / 2;
    let inv: Vec<f32> = (0..half)
        .map(|i| 1.0 / cfg.rope_theta.powf(2.0 * i as f32 / cfg.d_head as f32))
        .collect();
    let inv = Tensor::from_vec(inv, (1, half), &Device::Cpu)?;
    let t = Tensor::arange(0u32, cfg.max_positions as u32, &Device::Cpu)?
        .to_dtype(DType::F32)?
        .reshape((cfg.max_positions, 1))?;
    let freqs = t.broadcast_mul(&inv)?;
    Ok((freqs.cos()?, freqs.sin()?))
}

// Fused kernels for inference; when a tensor carries a gradient (a learned intervention being
// trained upstream), the same operations written out of differentiable primitives.

/// RMSNorm over the last dimension, times `w`.
fn rms_norm(x: &Tensor, w: &Tensor, eps: f64) -> Result<Tensor> {
    if x.track_op() {
        return Ok(candle_nn::ops::rms_norm_slow(x, w, eps as f32)?);
    }
    Ok(candle_nn::ops::rms_norm(x, w, eps as f32)?)
}

/// Softmax over the last dimension.
fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    if !x.track_op() {
        return Ok(candle_nn::ops::softmax_last_dim(x)?);
    }
    // Shift-invariant, so the maximum needs no gradient.
    let max = x.max_keepdim(D::Minus1)?.detach();
    let e = x.broadcast_sub(&max)?.exp()?;
    Ok(e.broadcast_div(&e.sum_keepdim(D::Minus1)?)?)
}

/// Rotary embedding of `x` `[b, heads, seq, d_head]` with cos/sin `[seq, d/2]` or
/// `[b, seq, d/2]`: pairs (2i, 2i+1) when `interleaved` (GGUF), else halves (i, i + d/2).
pub(crate) fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor, interleaved: bool) -> Result<Tensor> {
    use candle_nn::rotary_emb;
    if !x.track_op() {
        return Ok(match interleaved {
            true => rotary_emb::rope_i(x, cos, sin)?,
            false => rotary_emb::rope(x, cos, sin)?,
        });
    }
    let (b, h, seq, d) = x.dims4()?;
    let half = d / 2;
    let (cos, sin) = match cos.rank() {
        2 => (
            cos.reshape((1, 1, seq, half))?,
            sin.reshape((1, 1, seq, half))?,
        ),
        _ => (
            cos.reshape((b, 1, seq, half))?,
            sin.reshape((b, 1, seq, half))?,
        ),
    };
    let (x0, x1) = if interleaved {
        let x = x.reshape((b, h, seq, half, 2))?;
        (
            x.narrow(4, 0, 1)?.squeeze(4)?,
            x.narrow(4, 1, 1)?.squeeze(4)?,
        )
    } else {
        (x.narrow(3, 0, half)?, x.narrow(3, half, half)?)
    };
    let y0 = (x0.broadcast_mul(&cos)? - x1.broadcast_mul(&sin)?)?;
    let y1 = (x0.broadcast_mul(&sin)? + x1.broadcast_mul(&cos)?)?;
    Ok(match interleaved {
        true => Tensor::stack(&[y0, y1], 4)?.reshape((b, h, seq, d))?,
        false => Tensor::cat(&[y0, y1], 3)?,
    })
}

/// Attention scores computed at once, in floats (4 MiB): longer prompts go in query chunks.
const ATT_BLOCK: usize = 1 << 20;

/// Log-softmax over the last dimension.
pub fn log_softmax(logits: &Tensor) -> Result<Tensor> {
    Ok(candle_nn::ops::log_softmax(logits, D::Minus1)?)
}
