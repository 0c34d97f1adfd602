//! The decoder forward pass shared by every family (Llama, SmolLM, Qwen 2, Mistral, Gemma 3),
//! with its hook sites.
//!
//! One flat forward, read top to bottom, in the shape of candle-transformers' llama.rs and
//! gemma3.rs; config.rs says what a family switches on, names.rs where its weights are,
//! weights.rs reads them, rope.rs rotates, batch.rs holds the batch, cache and masks.
//! Every hook site is an explicit `hooks.apply(site, x)` call below; nothing else reads or
//! changes activations. Every family has the same sites.

use super::batch::attention_mask;
use super::batch::KvSlot;
pub use super::batch::{Batch, KvCache, LogitsAt};
pub use super::config::{Config, Family};
use super::embedding::Embedding;
use super::names::{self, BlockNames};
use super::norm::rms_norm;
use super::rope::{rope, RopeTable};
use super::weights::{lm_head, Linear, Names};
pub use super::weights::{WeightSource, WeightsMode};
use crate::error::{Error, Result};
use crate::hooks::{Hooks, RowInfo, Site, SiteKind};
use candle_core::{Device, Tensor, D};

/// One block's weights. q|k|v and gate|up are read as one [`Linear`] each, so a token's
/// activations are multiplied once per group. The optional norms are Gemma's.
struct Block {
    attn_norm: Tensor,
    qkv: Linear,
    q_norm: Option<Tensor>,
    k_norm: Option<Tensor>,
    o: Linear,
    post_attn_norm: Option<Tensor>,
    mlp_norm: Tensor,
    gate_up: Linear,
    down: Linear,
    post_mlp_norm: Option<Tensor>,
}

impl Block {
    fn load(src: &mut WeightSource, cfg: &Config, l: usize) -> Result<Block> {
        let family = cfg.family;
        let n = BlockNames::new(family, l);
        let off = family.hf_norm_offset();
        let mut opt_norm = |n: &Option<_>| n.as_ref().map(|n| src.norm(n, off)).transpose();
        let (q_norm, k_norm) = (opt_norm(&n.q_norm)?, opt_norm(&n.k_norm)?);
        let (post_attn_norm, post_mlp_norm) =
            (opt_norm(&n.post_attn_norm)?, opt_norm(&n.post_mlp_norm)?);
        let block = Block {
            attn_norm: src.norm(&n.attn_norm, off)?,
            qkv: src.fused_linear(&[n.q.clone(), n.k.clone(), n.v.clone()], family.qkv_bias())?,
            q_norm,
            k_norm,
            o: src.linear(&n.o.0, &n.o.1, false)?,
            post_attn_norm,
            mlp_norm: src.norm(&n.mlp_norm, off)?,
            gate_up: src.fused_linear(&[n.gate.clone(), n.up.clone()], false)?,
            down: src.linear(&n.down.0, &n.down.1, false)?,
            post_mlp_norm,
        };
        block.check(cfg, &n, l)?;
        Ok(block)
    }

    /// Each weight's shape against the config's sizes: an error naming the tensors, their
    /// shape and the one the config needs (a mismatch would otherwise fail at the first
    /// forward as a bare product error).
    fn check(&self, cfg: &Config, n: &BlockNames, l: usize) -> Result<()> {
        let (d, dh) = (cfg.d_model, cfg.d_head);
        let qkv = (cfg.n_heads + 2 * cfg.n_kv_heads) * dh;
        let (qkv_names, gate_up_names) = ([&n.q, &n.k, &n.v], [&n.gate, &n.up]);
        let linears = [
            (&self.qkv, qkv_names.as_slice(), (qkv, d)),
            (&self.o, &[&n.o], (d, cfg.n_heads * dh)),
            (&self.gate_up, gate_up_names.as_slice(), (2 * cfg.d_mlp, d)),
            (&self.down, &[&n.down], (d, cfg.d_mlp)),
        ];
        for (w, names, want) in linears {
            let (out, inner) = w.dims()?;
            if (out, inner) != (want.0, Some(want.1)) {
                let inner = inner.map_or("parts of different widths".into(), |i| i.to_string());
                return Err(shape_error(l, names, &format!("{out} × {inner}"), want));
            }
        }
        let norms = [
            (Some(&self.attn_norm), Some(&n.attn_norm), d),
            (Some(&self.mlp_norm), Some(&n.mlp_norm), d),
            (self.post_attn_norm.as_ref(), n.post_attn_norm.as_ref(), d),
            (self.post_mlp_norm.as_ref(), n.post_mlp_norm.as_ref(), d),
            (self.q_norm.as_ref(), n.q_norm.as_ref(), dh),
            (self.k_norm.as_ref(), n.k_norm.as_ref(), dh),
        ];
        for (t, name, want) in norms {
            if let (Some(t), Some(name)) = (t, name) {
                if t.dims() != [want] {
                    let got = format!("{:?}", t.dims());
                    return Err(shape_error(l, &[name], &got, (want, 1)));
                }
            }
        }
        Ok(())
    }
}

/// The embedding, the unembedding and the final norm against the vocabulary and d_model.
fn check_ends(cfg: &Config, embed: &Embedding, lm_head: &Linear, norm: &Tensor) -> Result<()> {
    let (v, d) = (cfg.vocab_size, cfg.d_model);
    let bad = |what: &str, got: String, want: String| {
        Err(Error::Model(format!(
            "{what} is {got}, where the config's vocabulary ({v}) and d_model ({d}) need {want}"
        )))
    };
    let (rows, width) = embed.dims()?;
    if (rows, width) != (v, d) {
        return bad(
            "the token embedding",
            format!("{rows} × {width}"),
            format!("{v} × {d}"),
        );
    }
    let (out, inner) = lm_head.dims()?;
    if (out, inner) != (v, Some(d)) {
        let inner = inner.map_or("?".into(), |i| i.to_string());
        return bad(
            "the unembedding",
            format!("{out} × {inner}"),
            format!("{v} × {d}"),
        );
    }
    if norm.dims() != [d] {
        return bad(
            "the final norm",
            format!("{:?}", norm.dims()),
            format!("[{d}]"),
        );
    }
    Ok(())
}

/// A layer's weights whose shape is not the one the config gives.
fn shape_error(l: usize, names: &[&Names], got: &str, want: (usize, usize)) -> Error {
    let names: Vec<String> = names.iter().map(|n| format!("{} ({})", n.0, n.1)).collect();
    Error::Model(format!(
        "layer {l}: the weights {} are {got}, where the config's sizes need {} × {}: the \
         file's tensors do not match its config (heads, KV heads, head width, d_model or d_mlp)",
        names.join(" | "),
        want.0,
        want.1
    ))
}

/// A decoder-only transformer of any supported family.
pub struct Decoder {
    pub cfg: Config,
    embed: Embedding,
    blocks: Vec<Block>,
    norm: Tensor,
    lm_head: Linear,
    /// Rope of global layers, and of sliding layers (the same table unless the base differs).
    rope_global: RopeTable,
    rope_local: RopeTable,
}

impl Decoder {
    /// Load the weights named as in llama.cpp (GGUF) or Hugging Face (safetensors).
    pub fn new(cfg: Config, mut src: WeightSource) -> Result<Self> {
        let family = cfg.family;
        let (g, h) = names::embed();
        let embed = Embedding::load(&mut src, &format!("{g}.weight"), &format!("{h}.weight"))?;
        let blocks = (0..cfg.n_layers)
            .map(|l| Block::load(&mut src, &cfg, l))
            .collect::<Result<Vec<_>>>()?;
        let norm = src.norm(&names::final_norm(), family.hf_norm_offset())?;
        let lm_head = lm_head(&mut src, (embed.as_matmul()?, embed.blocks()))?;
        check_ends(&cfg, &embed, &lm_head, &norm)?;
        let device = src.device();
        let factors = match src.has("rope_freqs.weight", "") {
            true => Some(src.tensor("rope_freqs.weight", "")?.to_vec1::<f32>()?),
            false => None,
        };
        let table =
            |theta, scaling| RopeTable::new(&cfg, theta, scaling, factors.as_deref(), &device);
        let rope_global = table(cfg.rope_theta, cfg.rope_scaling.as_ref())?;
        let rope_local = match cfg.rope_local_theta == cfg.rope_theta {
            true => rope_global.clone(),
            false => table(cfg.rope_local_theta, None)?,
        };
        Ok(Decoder {
            cfg,
            embed,
            blocks,
            norm,
            lm_head,
            rope_global,
            rope_local,
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
        let (offset, pads) = self.layout(batch, cache.as_deref_mut(), hooks)?;

        let mut x = self.embed_tokens(batch, b, seq)?; // [b, seq, d_model]
        x = hooks.apply(Site::new(SiteKind::Embed, 0), x)?;
        let ctx = LayerCtx::new(self, &pads, offset, seq)?;
        for (l, blk) in self.blocks.iter().enumerate() {
            let kv = cache.as_mut().map(|c| c.slot(l));
            x = self.block(l, blk, x, &ctx, kv, hooks)?;
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

    /// The cache length before this call and each row's left padding (fixed at prefill), told
    /// to the hooks so that positions keep their meaning.
    fn layout(
        &self,
        batch: &Batch,
        cache: Option<&mut KvCache>,
        hooks: &mut Hooks,
    ) -> Result<(usize, Vec<usize>)> {
        let (b, seq) = (batch.ids.len(), batch.ids[0].len());
        let offset = cache.as_ref().map_or(0, |c| c.len);
        let pads = match cache {
            Some(c) if c.len > 0 => c.pads.clone(),
            Some(c) => {
                c.pads = batch.pads.clone();
                c.pads.clone()
            }
            None => batch.pads.clone(),
        };
        if offset + seq > self.cfg.max_positions {
            return Err(Error::Invalid(format!(
                "sequence of {} tokens exceeds the model's {} positions",
                offset + seq,
                self.cfg.max_positions
            )));
        }
        let rows = (0..b)
            .map(|r| RowInfo {
                pad: pads[r],
                prompt_len: hooks_prompt_len(hooks, r, offset + seq - pads[r]),
            })
            .collect();
        hooks.set_rows(rows, offset);
        Ok((offset, pads))
    }

    /// Token embeddings `[b, seq, d_model]`, times the family's scale.
    fn embed_tokens(&self, batch: &Batch, b: usize, seq: usize) -> Result<Tensor> {
        let flat: Vec<u32> = batch.ids.iter().flatten().copied().collect();
        let x = self
            .embed
            .lookup(&flat, self.device())?
            .reshape((b, seq, self.cfg.d_model))?;
        match self.cfg.embed_scale() {
            Some(s) => Ok((x * s)?),
            None => Ok(x),
        }
    }

    /// One block: attention then the gated MLP, each added to the residual stream.
    fn block(
        &self,
        l: usize,
        blk: &Block,
        x: Tensor,
        ctx: &LayerCtx,
        kv: Option<KvSlot<'_>>,
        hooks: &mut Hooks,
    ) -> Result<Tensor> {
        let cfg = &self.cfg;
        let site = |k| Site::new(k, l);
        let x = hooks.apply(site(SiteKind::ResidPre), x)?;

        // attention
        let h = rms_norm(&x, &blk.attn_norm, cfg.rms_eps)?;
        let z = self.attention(blk, &h, ctx.for_layer(cfg, l), kv)?; // [b, seq, heads*d_head]
        let z = hooks.apply(site(SiteKind::AttnZ), z)?;
        let attn_out = opt_norm(blk.o.forward(&z)?, &blk.post_attn_norm, cfg.rms_eps)?; // [b, seq, d_model]
        let attn_out = hooks.apply(site(SiteKind::AttnOut), attn_out)?;
        let x_mid = (x + attn_out)?;
        let x_mid = hooks.apply(site(SiteKind::ResidMid), x_mid)?;

        // gated MLP
        let h = rms_norm(&x_mid, &blk.mlp_norm, cfg.rms_eps)?;
        let gu = blk.gate_up.forward(&h)?; // [b, seq, 2*d_mlp]
        let gemma = cfg.family.is_gemma(); // gelu_pytorch_tanh, else SiLU
        let act = match super::activation::gated(&gu, cfg.d_mlp, gemma)? {
            Some(act) => act,
            None => {
                let (gate, up) = (
                    gu.narrow(2, 0, cfg.d_mlp)?,
                    gu.narrow(2, cfg.d_mlp, cfg.d_mlp)?,
                );
                let gate = match gemma {
                    true => super::activation::gelu_tanh(&gate)?,
                    false => super::activation::silu(&gate)?,
                };
                (gate * up)?
            }
        }; // [b, seq, d_mlp]
        let act = hooks.apply(site(SiteKind::MlpPost), act)?;
        let mlp_out = opt_norm(blk.down.forward(&act)?, &blk.post_mlp_norm, cfg.rms_eps)?;
        let mlp_out = hooks.apply(site(SiteKind::MlpOut), mlp_out)?;
        let x = (x_mid + mlp_out)?;
        hooks.apply(site(SiteKind::ResidPost), x)
    }

    /// Self-attention of one block: `h` is `[b, seq, d_model]`, the result `[b, seq, heads*d_head]`.
    fn attention(
        &self,
        blk: &Block,
        h: &Tensor,
        li: LayerInputs,
        kv: Option<KvSlot<'_>>,
    ) -> Result<Tensor> {
        let (cos, sin, mask) = (li.cos, li.sin, li.mask);
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
        let q = rope(
            &opt_norm(q, &blk.q_norm, cfg.rms_eps)?,
            cos,
            sin,
            cfg.rope_interleaved,
        )?;
        let k = rope(
            &opt_norm(k, &blk.k_norm, cfg.rms_eps)?,
            cos,
            sin,
            cfg.rope_interleaved,
        )?;
        let (k, v) = match kv {
            Some(slot) => slot.append(k, v)?,
            None => (k, v),
        };
        self.attend_chunked(&q, &k, &v, mask)
    }

    /// Attention on the CPU ([`super::attention::attend_cpu`]), or else [`Self::attend`] (candle's
    /// ops) in query chunks. The scores of all queries at once (`[b, heads, seq,
    /// kv]` floats) would take gigabytes for long prompts, so queries go in chunks that keep each
    /// score block near [`ATT_BLOCK`] floats; prompts of [`CAUSAL_CHUNKS_FROM`] tokens or more go
    /// in at least 4 chunks. Each chunk reads only the keys up to its last query: the mask
    /// hides the later ones from every query of the chunk (causal), so leaving them out changes
    /// nothing but the work, about half of it for a long prompt.
    fn attend_chunked(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        mask: Option<&Tensor>,
    ) -> Result<Tensor> {
        // The CPU path takes every query at once, in blocks of its own.
        if let Some(y) = super::attention::attend_cpu(q, k, v, self.cfg.query_scale, mask)? {
            return Ok(y);
        }
        let (b, n_heads, seq, _) = q.dims4()?;
        let kv_len = k.dim(2)?;
        let mut rows = (ATT_BLOCK / (b * n_heads * kv_len).max(1)).max(1);
        if seq >= CAUSAL_CHUNKS_FROM {
            rows = rows.min(seq.div_ceil(4));
        }
        // Without a mask (one query), every key is seen.
        let Some(mask) = mask.filter(|_| rows < seq) else {
            return self.attend(q, k, v, mask);
        };
        let past = kv_len - seq; // cached positions before this call's queries
        let mut parts = Vec::with_capacity(seq.div_ceil(rows));
        for s0 in (0..seq).step_by(rows) {
            let n = rows.min(seq - s0);
            let keys = past + s0 + n; // the chunk's last query sees no key after this
            let qc = q.narrow(2, s0, n)?.contiguous()?; // [b, heads, n, d_head]
            let kc = k.narrow(2, 0, keys)?; // [b, kv_heads, keys, d_head]
            let vc = v.narrow(2, 0, keys)?;
            let mc = mask.narrow(2, s0, n)?.narrow(3, 0, keys)?; // [b, 1, n, keys]
            parts.push(self.attend(&qc, &kc, &vc, Some(&mc))?);
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
        let q = q.reshape((b, kvh, g * n, cfg.d_head))?;
        let scores = q.matmul(&k.t()?)?; // [b, kv_heads, g*n, kv]
        let att = super::attention::scaled_masked_softmax(&scores, cfg.query_scale, mask)?;
        let y = att.matmul(v)?.reshape((b, cfg.n_heads, n, cfg.d_head))?; // [b, heads, n, d_head]
        Ok(y.transpose(1, 2)?
            .reshape((b, n, cfg.n_heads * cfg.d_head))?)
    }

    /// The device the weights live on; activations and interventions go there too.
    pub fn device(&self) -> &Device {
        self.norm.device()
    }

    /// The unembedding applied to a final-normalized residual `[.., d_model]`.
    pub fn unembed(&self, x: &Tensor) -> Result<Tensor> {
        self.lm_head.forward(x)
    }
}

/// What every layer of one forward call shares: the rope rows and masks of global and of
/// sliding-window layers.
struct LayerCtx {
    global: (Tensor, Tensor, Option<Tensor>),
    /// Present when sliding layers differ from global ones (another rope base, or a window
    /// shorter than the keys).
    local: Option<(Tensor, Tensor, Option<Tensor>)>,
}

/// One layer's view of [`LayerCtx`].
struct LayerInputs<'a> {
    cos: &'a Tensor,
    sin: &'a Tensor,
    mask: Option<&'a Tensor>,
}

impl LayerCtx {
    fn new(d: &Decoder, pads: &[usize], offset: usize, seq: usize) -> Result<Self> {
        let dev = d.device();
        let (cos, sin) = d.rope_global.at(pads, offset, seq)?;
        let global = (cos, sin, attention_mask(pads, offset, seq, None, dev)?);
        let window = d.cfg.sliding_window.filter(|w| offset + seq > *w);
        let any_local = d.cfg.local_layers.iter().any(|l| *l);
        let local =
            match any_local && (window.is_some() || d.cfg.rope_local_theta != d.cfg.rope_theta) {
                false => None,
                true => {
                    let (cos, sin) = d.rope_local.at(pads, offset, seq)?;
                    Some((cos, sin, attention_mask(pads, offset, seq, window, dev)?))
                }
            };
        Ok(LayerCtx { global, local })
    }

    fn for_layer(&self, cfg: &Config, l: usize) -> LayerInputs<'_> {
        let (cos, sin, mask) = match (&self.local, cfg.is_local(l)) {
            (Some(local), true) => local,
            _ => &self.global,
        };
        LayerInputs {
            cos,
            sin,
            mask: mask.as_ref(),
        }
    }
}

/// RMSNorm with `w` when the family has that norm (Gemma's q/k norms and the norms on a
/// sublayer's output), else `x` unchanged.
fn opt_norm(x: Tensor, w: &Option<Tensor>, eps: f64) -> Result<Tensor> {
    match w {
        Some(w) => rms_norm(&x, w, eps),
        None => Ok(x),
    }
}

/// The prompt length of row `r` as the caller set it, else the whole sequence so far.
fn hooks_prompt_len(hooks: &Hooks, r: usize, len: usize) -> usize {
    hooks.prompt_len(r).unwrap_or(len)
}

// Fused kernels for inference; when a tensor carries a gradient (a learned intervention being
// trained upstream), the same operations written out of differentiable primitives.

/// Attention scores computed at once, in floats (4 MiB): longer prompts go in query chunks.
const ATT_BLOCK: usize = 1 << 20;

/// Prompts this long are attended in at least 4 query chunks, each reading only the keys its
/// queries may see.
const CAUSAL_CHUNKS_FROM: usize = 64;

/// Log-softmax over the last dimension.
pub fn log_softmax(logits: &Tensor) -> Result<Tensor> {
    Ok(candle_nn::ops::log_softmax(logits, D::Minus1)?)
}
