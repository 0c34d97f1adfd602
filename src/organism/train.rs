//! `organism train`: a Llama-family decoder (RMSNorm, SwiGLU, rope, tied embeddings) trained
//! from scratch on a world's corpus with candle's autograd and AdamW (warm-up, then cosine
//! decay). Checkpoints are Hugging Face folders (config.json, model.safetensors, tokenizer
//! files) that `--model DIR` loads in every command, plus the optimizer's state, so that
//! `--resume` continues exactly where a run stopped.

use super::adamw::AdamW;
use crate::error::{Error, Result};
use crate::stats::SplitMix;
use candle_core::{DType, Device, Tensor, Var, D};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The shape of the model and how it is trained.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainOptions {
    pub layers: usize,
    pub d_model: usize,
    pub heads: usize,
    /// Width of the SwiGLU hidden layer.
    pub d_mlp: usize,
    pub steps: usize,
    /// Sequences per step.
    pub batch: usize,
    /// Tokens per sequence.
    pub seq: usize,
    pub lr: f64,
    pub warmup: usize,
    pub weight_decay: f64,
    /// Write a checkpoint every this many steps (0: only at the end).
    pub checkpoint_every: usize,
    pub seed: u64,
}

impl Default for TrainOptions {
    fn default() -> Self {
        TrainOptions {
            layers: 4,
            d_model: 128,
            heads: 4,
            d_mlp: 384,
            steps: 2000,
            batch: 32,
            seq: 64,
            lr: 3e-3,
            warmup: 100,
            weight_decay: 0.1,
            checkpoint_every: 500,
            seed: 0,
        }
    }
}

impl TrainOptions {
    /// Shapes that cannot make a model are errors naming the option.
    pub fn check(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Invalid(m));
        if self.layers == 0 {
            return bad("--layers 0: a model needs at least one layer".into());
        }
        if self.heads == 0 || !self.d_model.is_multiple_of(self.heads) {
            return bad(format!(
                "--d-model {} is not divisible by --heads {}: each head gets d_model / heads values",
                self.d_model, self.heads
            ));
        }
        if !(self.d_model / self.heads).is_multiple_of(2) {
            return bad(format!(
                "d_model / heads = {} is odd; rope needs an even head width",
                self.d_model / self.heads
            ));
        }
        if self.d_mlp == 0 || self.steps == 0 || self.batch == 0 || self.seq < 2 {
            return bad("--d-mlp, --steps and --batch must be at least 1, --seq at least 2".into());
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return bad(format!("--lr {}: give a positive number", self.lr));
        }
        Ok(())
    }

    /// The learning rate at `step` (from 0): linear warm-up, then cosine decay to a tenth.
    pub fn lr_at(&self, step: usize) -> f64 {
        if step < self.warmup {
            return self.lr * (step + 1) as f64 / self.warmup as f64;
        }
        let span = (self.steps - self.warmup.min(self.steps)).max(1) as f64;
        let t = ((step - self.warmup) as f64 / span).min(1.0);
        let floor = 0.1 * self.lr;
        floor + (self.lr - floor) * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())
    }
}

const EPS: f64 = 1e-5;
const THETA: f64 = 10000.0;

/// The trainable weights, by their Hugging Face names.
pub struct Net {
    pub vars: BTreeMap<String, Var>,
    pub opts: TrainOptions,
    pub vocab: usize,
}

/// `n` normal values of standard deviation `std` (Box-Muller on a seeded generator).
fn normal(rng: &mut SplitMix, n: usize, std: f64) -> Vec<f32> {
    let mut u = || (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
    (0..n)
        .map(|_| {
            let (a, b) = (u().max(1e-12), u());
            ((-2.0 * a.ln()).sqrt() * (2.0 * std::f64::consts::PI * b).cos() * std) as f32
        })
        .collect()
}

impl Net {
    /// Fresh weights: normal(0, 0.02), output projections scaled by 1/sqrt(2 layers), norms 1.
    pub fn new(opts: &TrainOptions, vocab: usize) -> Result<Net> {
        opts.check()?;
        let mut rng = SplitMix(opts.seed ^ 0x7472_6169_6e00_0001);
        let (d, m) = (opts.d_model, opts.d_mlp);
        let mut vars = BTreeMap::new();
        let mut add = |name: String, shape: &[usize], std: Option<f64>| -> Result<()> {
            let n = shape.iter().product();
            let v = match std {
                Some(s) => normal(&mut rng, n, s),
                None => vec![1.0; n],
            };
            let t = Tensor::from_vec(v, shape, &Device::Cpu)?;
            vars.insert(name, Var::from_tensor(&t)?);
            Ok(())
        };
        let out_std = 0.02 / (2.0 * opts.layers as f64).sqrt();
        add("model.embed_tokens.weight".into(), &[vocab, d], Some(0.02))?;
        for l in 0..opts.layers {
            let p = format!("model.layers.{l}");
            for (n, shape, std) in [
                ("input_layernorm", vec![d], None),
                ("post_attention_layernorm", vec![d], None),
                ("self_attn.q_proj", vec![d, d], Some(0.02)),
                ("self_attn.k_proj", vec![d, d], Some(0.02)),
                ("self_attn.v_proj", vec![d, d], Some(0.02)),
                ("self_attn.o_proj", vec![d, d], Some(out_std)),
                ("mlp.gate_proj", vec![m, d], Some(0.02)),
                ("mlp.up_proj", vec![m, d], Some(0.02)),
                ("mlp.down_proj", vec![d, m], Some(out_std)),
            ] {
                add(format!("{p}.{n}.weight"), &shape, std)?;
            }
        }
        add("model.norm.weight".into(), &[d], None)?;
        Ok(Net {
            vars,
            opts: opts.clone(),
            vocab,
        })
    }

    /// The same weights in `dtype` (for example bf16, to train with bf16 parameters); the
    /// forward pass then computes in it, and the loss in f32.
    pub fn to_dtype(self, dtype: DType) -> Result<Net> {
        let vars = self
            .vars
            .into_iter()
            .map(|(k, v)| Ok((k, Var::from_tensor(&v.as_tensor().to_dtype(dtype)?)?)))
            .collect::<Result<_>>()?;
        Ok(Net { vars, ..self })
    }

    /// Every weight of the model, the tied embedding counted once.
    pub fn n_params(&self) -> usize {
        self.vars.values().map(|v| v.as_tensor().elem_count()).sum()
    }

    fn w(&self, name: &str) -> Result<&Tensor> {
        self.vars
            .get(name)
            .map(|v| v.as_tensor())
            .ok_or_else(|| Error::Invalid(format!("missing weight {name}")))
    }

    /// Logits `[b, t, vocab]` of token rows `ids` `[b, t]`, as transformers' Llama computes
    /// them.
    pub fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        let (b, t) = ids.dims2()?;
        let (d, h) = (self.opts.d_model, self.opts.heads);
        let dh = d / h;
        let emb = self.w("model.embed_tokens.weight")?;
        let dt = emb.dtype();
        let (cos, sin) = rope_tables(t, dh)?; // [t, dh]
        let (cos, sin) = (cos.to_dtype(dt)?, sin.to_dtype(dt)?);
        let mask = causal_mask(t)?.to_dtype(dt)?; // [t, t]
        let mut x = emb
            .index_select(&ids.flatten_all()?, 0)?
            .reshape((b, t, d))?;
        for l in 0..self.opts.layers {
            let p = |n: &str| format!("model.layers.{l}.{n}.weight");
            let hn = rms_norm(&x, self.w(&p("input_layernorm"))?)?;
            let proj = |n: &str| -> Result<Tensor> {
                let y = hn.broadcast_matmul(&self.w(&p(n))?.t()?)?; // [b, t, d]
                Ok(y.reshape((b, t, h, dh))?.transpose(1, 2)?.contiguous()?) // [b, h, t, dh]
            };
            let q = rope(&proj("self_attn.q_proj")?, &cos, &sin)?;
            let k = rope(&proj("self_attn.k_proj")?, &cos, &sin)?;
            let v = proj("self_attn.v_proj")?;
            let scores = (q.matmul(&k.t()?)? / (dh as f64).sqrt())?.broadcast_add(&mask)?;
            let att = candle_nn::ops::softmax(&scores, D::Minus1)?.matmul(&v)?; // [b, h, t, dh]
            let att = att.transpose(1, 2)?.reshape((b, t, d))?;
            x = (x + att.broadcast_matmul(&self.w(&p("self_attn.o_proj"))?.t()?)?)?;
            let hn = rms_norm(&x, self.w(&p("post_attention_layernorm"))?)?;
            let gate = hn
                .broadcast_matmul(&self.w(&p("mlp.gate_proj"))?.t()?)?
                .silu()?;
            let up = hn.broadcast_matmul(&self.w(&p("mlp.up_proj"))?.t()?)?;
            x = (x + (gate * up)?.broadcast_matmul(&self.w(&p("mlp.down_proj"))?.t()?)?)?;
        }
        let x = rms_norm(&x, self.w("model.norm.weight")?)?;
        Ok(x.broadcast_matmul(&emb.t()?)?)
    }

    /// Mean next-token cross-entropy of rows `ids` `[b, t]`.
    pub fn loss(&self, ids: &Tensor) -> Result<Tensor> {
        let (b, t) = ids.dims2()?;
        let logits = self
            .forward(&ids.narrow(1, 0, t - 1)?)?
            .to_dtype(DType::F32)?;
        let targets = ids.narrow(1, 1, t - 1)?.flatten_all()?;
        Ok(candle_nn::loss::cross_entropy(
            &logits.reshape((b * (t - 1), self.vocab))?,
            &targets,
        )?)
    }

    /// The Hugging Face config.json of this shape.
    pub fn config(&self) -> serde_json::Value {
        let o = &self.opts;
        serde_json::json!({
            "architectures": ["LlamaForCausalLM"], "model_type": "llama",
            "hidden_size": o.d_model, "intermediate_size": o.d_mlp,
            "num_hidden_layers": o.layers, "num_attention_heads": o.heads,
            "num_key_value_heads": o.heads, "vocab_size": self.vocab,
            "rms_norm_eps": EPS, "rope_theta": THETA,
            "max_position_embeddings": o.seq.max(256), "tie_word_embeddings": true,
            "hidden_act": "silu", "torch_dtype": "float32",
        })
    }
}

/// x / sqrt(mean(x²) + eps) * w, over the last dimension.
fn rms_norm(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    let ms = x.sqr()?.mean_keepdim(D::Minus1)?;
    Ok(x.broadcast_div(&(ms + EPS)?.sqrt()?)?.broadcast_mul(w)?)
}

/// cos and sin `[t, dh]` of transformers' Llama rope (the two halves repeat the frequencies).
fn rope_tables(t: usize, dh: usize) -> Result<(Tensor, Tensor)> {
    let half = dh / 2;
    let mut cos = Vec::with_capacity(t * dh);
    let mut sin = Vec::with_capacity(t * dh);
    for p in 0..t {
        for i in 0..dh {
            let f = 1.0 / THETA.powf((2 * (i % half)) as f64 / dh as f64);
            let a = p as f64 * f;
            cos.push(a.cos() as f32);
            sin.push(a.sin() as f32);
        }
    }
    Ok((
        Tensor::from_vec(cos, (t, dh), &Device::Cpu)?,
        Tensor::from_vec(sin, (t, dh), &Device::Cpu)?,
    ))
}

/// x·cos + rotate_half(x)·sin, with rotate_half(x) = (−x₂, x₁) over the two halves.
fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let dh = x.dim(D::Minus1)?;
    let (x1, x2) = (
        x.narrow(D::Minus1, 0, dh / 2)?,
        x.narrow(D::Minus1, dh / 2, dh / 2)?,
    );
    let rot = Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)?;
    Ok((x.broadcast_mul(cos)? + rot.broadcast_mul(sin)?)?)
}

/// 0 on and below the diagonal, −inf above: `[t, t]`.
fn causal_mask(t: usize) -> Result<Tensor> {
    let v: Vec<f32> = (0..t * t)
        .map(|k| {
            if k % t > k / t {
                f32::NEG_INFINITY
            } else {
                0.0
            }
        })
        .collect();
    Ok(Tensor::from_vec(v, (t, t), &Device::Cpu)?)
}

/// The corpus as one token stream (each sentence after an end-of-text token), and that token.
pub fn token_stream(world: &Path, tok: &crate::model::Tokenizer) -> Result<(Vec<u32>, u32)> {
    let path = world.join("corpus.txt");
    let text = std::fs::read_to_string(&path).map_err(|e| Error::file(&path, e))?;
    stream_of(tok, text.lines().filter(|l| !l.is_empty()), world)
}

/// `lines` as one token stream, each after the end-of-text token; and that token. The
/// tokenizer, from the folder `from`, must have one.
pub fn stream_of<'a>(
    tok: &crate::model::Tokenizer,
    lines: impl Iterator<Item = &'a str>,
    from: &Path,
) -> Result<(Vec<u32>, u32)> {
    let eos = tok
        .eos_id
        .ok_or_else(|| Error::file(from, "the tokenizer has no eos_token"))?;
    let mut out = Vec::new();
    for line in lines {
        out.push(eos);
        out.extend(tok.encode(line)?);
    }
    Ok((out, eos))
}

/// The rows of step `step`: `batch` windows of `seq` tokens, each starting at an end-of-text
/// token, chosen by a generator seeded from the seed and the step (so a resumed run sees the
/// same batches).
pub fn batch_at(
    stream: &[u32],
    starts: &[usize],
    opts: &TrainOptions,
    step: usize,
) -> Result<Tensor> {
    let mut rng = SplitMix(
        opts.seed
            .wrapping_mul(0x9E37_79B9)
            .wrapping_add(step as u64 + 1),
    );
    let mut rows = Vec::with_capacity(opts.batch * opts.seq);
    for _ in 0..opts.batch {
        let s = starts[rng.below(starts.len())];
        rows.extend_from_slice(&stream[s..s + opts.seq]);
    }
    Ok(Tensor::from_vec(
        rows,
        (opts.batch, opts.seq),
        &Device::Cpu,
    )?)
}

/// Where windows may start: end-of-text tokens with a full window after them.
pub fn window_starts(stream: &[u32], eos: u32, seq: usize) -> Vec<usize> {
    (0..stream.len().saturating_sub(seq))
        .filter(|i| stream[*i] == eos)
        .collect()
}

/// What a checkpoint's trainer.json records.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TrainState {
    pub step: usize,
    pub options: TrainOptions,
    /// Mean loss of each finished step.
    pub losses: Vec<f64>,
    pub seconds: f64,
    pub world: String,
}

impl TrainState {
    /// The mean training loss over the last 50 steps (nats per token).
    pub fn final_loss(&self) -> f64 {
        self.losses.iter().rev().take(50).sum::<f64>() / self.losses.len().clamp(1, 50) as f64
    }
}

/// Write a loadable model folder at `dir` (config, weights, tokenizer) and, with `optim`, the
/// optimizer's state and the trainer's record. Written into a sibling folder, then renamed.
pub fn save(
    dir: &Path,
    net: &Net,
    world: &Path,
    optim: Option<(&AdamW, &TrainState)>,
) -> Result<()> {
    let tmp = dir.with_extension("partial");
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| Error::file(&tmp, e))?;
    }
    std::fs::create_dir_all(&tmp).map_err(|e| Error::file(&tmp, e))?;
    let weights: std::collections::HashMap<String, Tensor> = net
        .vars
        .iter()
        .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
        .collect();
    candle_core::safetensors::save(&weights, tmp.join("model.safetensors"))?;
    let cfg =
        serde_json::to_string_pretty(&net.config()).map_err(|e| Error::Invalid(e.to_string()))?;
    std::fs::write(tmp.join("config.json"), cfg).map_err(|e| Error::file(&tmp, e))?;
    for f in ["tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(world.join(f), tmp.join(f)).map_err(|e| Error::file(world.join(f), e))?;
    }
    if let Some((adam, state)) = optim {
        let mut moments = std::collections::HashMap::new();
        for (k, t) in &adam.m {
            moments.insert(format!("m.{k}"), t.clone());
        }
        for (k, t) in &adam.v {
            moments.insert(format!("v.{k}"), t.clone());
        }
        candle_core::safetensors::save(&moments, tmp.join("optimizer.safetensors"))?;
        let s = serde_json::to_string_pretty(state).map_err(|e| Error::Invalid(e.to_string()))?;
        std::fs::write(tmp.join("trainer.json"), s).map_err(|e| Error::file(&tmp, e))?;
    }
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(|e| Error::file(dir, e))?;
    }
    std::fs::rename(&tmp, dir).map_err(|e| Error::file(dir, e))
}

/// The checkpoints under `out/checkpoints` (folders with a trainer.json), lowest step first.
pub fn checkpoints(out: &Path) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(out.join("checkpoints")) else {
        return vec![];
    };
    let mut v: Vec<PathBuf> = rd
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("trainer.json").exists())
        .collect();
    v.sort();
    v
}

/// The latest checkpoint under `out/checkpoints` (the highest step), if any.
pub fn latest_checkpoint(out: &Path) -> Option<PathBuf> {
    checkpoints(out).pop()
}

/// A checkpoint's training state (its trainer.json), without its weights.
pub fn read_state(dir: &Path) -> Result<TrainState> {
    let p = dir.join("trainer.json");
    let text = std::fs::read_to_string(&p).map_err(|e| Error::file(&p, e))?;
    serde_json::from_str(&text).map_err(|e| Error::file(&p, e))
}

/// Replace `net`'s weights by those of the model folder `dir` (its model.safetensors).
pub fn load_weights(net: &mut Net, dir: &Path) -> Result<()> {
    let weights = candle_core::safetensors::load(dir.join("model.safetensors"), &Device::Cpu)?;
    for (k, v) in net.vars.iter_mut() {
        let t = weights
            .get(k)
            .ok_or_else(|| Error::file(dir, format!("missing weight {k}")))?;
        *v = Var::from_tensor(&t.to_dtype(DType::F32)?)?;
    }
    Ok(())
}

/// Reload a checkpoint: the weights, the optimizer's moments and the record.
pub fn load_checkpoint(dir: &Path, vocab: usize) -> Result<(Net, AdamW, TrainState)> {
    let state = read_state(dir)?;
    let mut net = Net::new(&state.options, vocab)?;
    load_weights(&mut net, dir)?;
    let moments = candle_core::safetensors::load(dir.join("optimizer.safetensors"), &Device::Cpu)?;
    let mut adam = AdamW::new(&net.vars)?;
    for k in net.vars.keys() {
        let get = |p: &str| {
            moments
                .get(&format!("{p}.{k}"))
                .cloned()
                .ok_or_else(|| Error::file(dir, format!("missing optimizer state {p}.{k}")))
        };
        adam.m.insert(k.clone(), get("m")?);
        adam.v.insert(k.clone(), get("v")?);
    }
    adam.t = state.step;
    Ok((net, adam, state))
}

/// What the trainer reports as it goes.
pub enum TrainEvent<'a> {
    Step {
        step: usize,
        loss: f64,
        tokens_per_s: f64,
    },
    Checkpoint(&'a Path),
}

/// Train on the world in `world` into `out` (the final model in `out`, checkpoints in
/// `out/checkpoints/step-NNNNNN`). With `resume`, go on from the latest checkpoint, whose
/// options must be `opts`.
pub fn train(
    world: &Path,
    out: &Path,
    opts: &TrainOptions,
    resume: bool,
    on: &mut dyn FnMut(TrainEvent) -> Result<()>,
) -> Result<TrainState> {
    opts.check()?;
    let w = super::world::read(world)?;
    let tok = crate::model::Tokenizer::from_folder(world)?;
    let vocab = tok.vocab_size();
    let (stream, eos) = token_stream(world, &tok)?;
    let starts = window_starts(&stream, eos, opts.seq);
    if starts.is_empty() {
        return Err(Error::file(
            world,
            format!("the corpus is shorter than --seq {}", opts.seq),
        ));
    }
    let about = format!(
        "{} ({} facts, seed {})",
        world.display(),
        w.facts,
        w.options.seed
    );
    let (net, mut adam, mut state) = start(&about, out, opts, resume, vocab)?;
    let t0 = std::time::Instant::now();
    let before = state.seconds;
    for step in state.step..opts.steps {
        let ts = std::time::Instant::now();
        let ids = batch_at(&stream, &starts, opts, step)?;
        let loss = net.loss(&ids)?;
        let grads = loss.backward()?;
        adam.step(&net.vars, net.opts.weight_decay, &grads, opts.lr_at(step))?;
        let l = f64::from(loss.to_scalar::<f32>()?);
        state.losses.push(l);
        state.step = step + 1;
        state.seconds = before + t0.elapsed().as_secs_f64();
        let tps = (opts.batch * opts.seq) as f64 / ts.elapsed().as_secs_f64();
        on(TrainEvent::Step {
            step: step + 1,
            loss: l,
            tokens_per_s: tps,
        })?;
        let every = opts.checkpoint_every;
        if (every > 0 && state.step % every == 0) || state.step == opts.steps {
            let dir = out
                .join("checkpoints")
                .join(format!("step-{:06}", state.step));
            save(&dir, &net, world, Some((&adam, &state)))?;
            on(TrainEvent::Checkpoint(&dir))?;
        }
    }
    write_model_files(out, &net, world)?;
    Ok(state)
}

/// Fresh weights, optimizer and record (of the world described by `world`); or, with `resume`
/// and a checkpoint in `out`, the latest checkpoint's, which must have been trained with
/// `opts`.
fn start(
    world: &str,
    out: &Path,
    opts: &TrainOptions,
    resume: bool,
    vocab: usize,
) -> Result<(Net, AdamW, TrainState)> {
    let (net, adam, state) = match (resume, latest_checkpoint(out)) {
        (true, Some(c)) => load_checkpoint(&c, vocab)?,
        _ => {
            let net = Net::new(opts, vocab)?;
            let adam = AdamW::new(&net.vars)?;
            let state = TrainState {
                step: 0,
                options: opts.clone(),
                losses: vec![],
                seconds: 0.0,
                world: world.to_string(),
            };
            (net, adam, state)
        }
    };
    if state.options != *opts {
        return Err(Error::Invalid(format!(
            "--resume: the checkpoint in {} was trained with other options ({:?}); give the same options or start afresh without --resume",
            out.display(),
            state.options
        )));
    }
    Ok((net, adam, state))
}

/// The final model's files in `out` itself (beside `checkpoints/`).
fn write_model_files(out: &Path, net: &Net, world: &Path) -> Result<()> {
    let tmp = out.join("final-model");
    save(&tmp, net, world, None)?;
    for f in [
        "model.safetensors",
        "config.json",
        "tokenizer.json",
        "tokenizer_config.json",
    ] {
        std::fs::rename(tmp.join(f), out.join(f)).map_err(|e| Error::file(out.join(f), e))?;
    }
    std::fs::remove_dir_all(&tmp).map_err(|e| Error::file(&tmp, e))
}
