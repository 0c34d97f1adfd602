//! KV-cached generation and sampling. Interventions come in explicitly as a [`Spec`]; they
//! apply at prefill and at every decode step with absolute positions, so cached generation
//! gives the same tokens as re-running the whole sequence at each step (`use_cache: false`).

use crate::error::Result;
use crate::hooks::{Captures, Hooks, Spec};
use crate::model::{Batch, KvCache, LogitsAt, Model};
use rand::{Rng, SeedableRng};

mod cad;
pub use cad::{
    cad_greedy_and_score, cad_logits, jsd, log_softmax_vec, CadWeight, Combine, Pass, Passes,
};

/// How the next token is chosen.
#[derive(Clone, Debug, PartialEq)]
pub enum Sampling {
    Greedy,
    /// Temperature and nucleus (top-p) sampling from a seeded generator.
    TopP {
        temperature: f32,
        top_p: f32,
        seed: u64,
    },
}

#[derive(Clone, Debug)]
pub struct GenOptions {
    pub max_tokens: usize,
    pub sampling: Sampling,
    pub stop_at_eos: bool,
    /// Reuse keys and values (the normal path); false re-runs the whole sequence each step.
    pub use_cache: bool,
}

impl Default for GenOptions {
    fn default() -> Self {
        GenOptions {
            max_tokens: 32,
            sampling: Sampling::Greedy,
            stop_at_eos: true,
            use_cache: true,
        }
    }
}

/// The generated tokens and whatever the spec captured on the way.
pub struct Generation {
    pub prompt_ids: Vec<u32>,
    pub ids: Vec<u32>,
    pub captures: Captures,
}

/// Generate from `prompt_ids` under `spec`, calling `on_token` for each new token.
/// An error, before any work, when a prompt of `prompt` tokens and `new` generated ones do not
/// fit the model's positions (the KV cache is sized for them up front).
pub fn check_fits(model: &Model, prompt: usize, new: usize) -> Result<()> {
    let max = model.cfg().max_positions;
    match prompt.checked_add(new) {
        Some(n) if n <= max => Ok(()),
        _ => Err(crate::Error::Invalid(format!(
            "a prompt of {prompt} tokens and {new} new tokens need {} positions; this model has \
             {max} (at most {} new tokens after this prompt)",
            prompt.saturating_add(new),
            max.saturating_sub(prompt)
        ))),
    }
}

pub fn generate(
    model: &Model,
    prompt_ids: &[u32],
    spec: &Spec,
    opts: &GenOptions,
    on_token: &mut dyn FnMut(u32) -> Result<()>,
) -> Result<Generation> {
    model.validate(spec)?;
    check_fits(model, prompt_ids.len(), opts.max_tokens)?;
    let mut stream = Stream::new(model, spec, prompt_ids.len(), opts);
    let out = decode(
        model,
        prompt_ids,
        opts,
        &mut |seq, step| stream.next(seq, step),
        on_token,
    )?;
    Ok(Generation {
        prompt_ids: prompt_ids.to_vec(),
        ids: out,
        captures: stream.hooks.captures,
    })
}

/// One model's side of a decoding: its cache and its hooks, fed the sequence so far.
pub struct Stream<'a> {
    model: &'a Model,
    cache: KvCache,
    pub hooks: Hooks<'a>,
    use_cache: bool,
}

impl<'a> Stream<'a> {
    pub fn new(model: &'a Model, spec: &'a Spec, prompt_len: usize, opts: &GenOptions) -> Self {
        Stream {
            model,
            cache: KvCache::with_room(model.cfg().n_layers, opts.max_tokens),
            hooks: Hooks::new(spec, model.cfg().n_heads).with_prompt_lens(vec![prompt_len]),
            use_cache: opts.use_cache,
        }
    }

    /// The next-token logits after `seq` (the prompt and the tokens generated so far); step 0
    /// prefills, later steps feed the last token.
    pub fn next(&mut self, seq: &[u32], step: usize) -> Result<Vec<f32>> {
        let logits = if self.use_cache {
            let new = if step == 0 {
                seq
            } else {
                &seq[seq.len() - 1..]
            };
            self.model.net.forward(
                &Batch::single(new),
                Some(&mut self.cache),
                &mut self.hooks,
                LogitsAt::Last,
            )?
        } else {
            // A fresh capture set each step; only the last step's captures are kept.
            self.hooks.captures = Captures::default();
            self.model
                .net
                .forward(&Batch::single(seq), None, &mut self.hooks, LogitsAt::Last)?
        };
        Ok(logits.flatten_all()?.to_vec1::<f32>()?)
    }
}

/// The next-token logits after a sequence, at a step (0: the prompt).
pub type NextLogits<'a> = dyn FnMut(&[u32], usize) -> Result<Vec<f32>> + 'a;

/// The decoding loop: `logits` gives the next-token logits after the sequence so far at each
/// step; the sampler picks; EOS ends it when `opts` says so.
pub fn decode(
    model: &Model,
    prompt_ids: &[u32],
    opts: &GenOptions,
    logits: &mut NextLogits,
    on_token: &mut dyn FnMut(u32) -> Result<()>,
) -> Result<Vec<u32>> {
    let mut sampler = Sampler::new(&opts.sampling);
    let mut seq = prompt_ids.to_vec();
    let mut out = Vec::new();
    for step in 0..opts.max_tokens {
        let l = logits(&seq, step)?;
        check_finite(&l, || {
            format!("generated token {step} (position {})", seq.len())
        })?;
        let next = sampler.next(&l);
        if opts.stop_at_eos && Some(next) == model.tokenizer.eos_id {
            break;
        }
        seq.push(next);
        out.push(next);
        on_token(next)?;
    }
    Ok(out)
}

/// An error when `logits` hold a NaN or an infinity: corrupt weights or an intervention that
/// overflowed, which would otherwise decode as a silent stream of one token.
pub fn check_finite(logits: &[f32], at: impl Fn() -> String) -> Result<()> {
    match logits.iter().find(|x| !x.is_finite()) {
        None => Ok(()),
        Some(x) => Err(crate::Error::Invalid(format!(
            "the forward pass gave a non-finite logit ({x}) at {}: the model's weights or an \
             intervention hold a NaN or an infinity, or an intervention overflowed",
            at()
        ))),
    }
}

/// Picks tokens from logits.
pub struct Sampler {
    sampling: Sampling,
    rng: rand::rngs::StdRng,
}

impl Sampler {
    pub fn new(sampling: &Sampling) -> Self {
        let seed = match sampling {
            Sampling::TopP { seed, .. } => *seed,
            Sampling::Greedy => 0,
        };
        Sampler {
            sampling: sampling.clone(),
            rng: rand::rngs::StdRng::seed_from_u64(seed),
        }
    }

    pub fn next(&mut self, logits: &[f32]) -> u32 {
        match self.sampling {
            Sampling::Greedy => argmax(logits),
            Sampling::TopP {
                temperature, top_p, ..
            } => {
                if temperature <= 0.0 {
                    return argmax(logits);
                }
                let probs = softmax(logits, temperature);
                let mut order: Vec<usize> = (0..probs.len()).collect();
                order.sort_by(|a, b| probs[*b].total_cmp(&probs[*a]));
                let mut kept = Vec::new();
                let mut mass = 0.0;
                for i in order {
                    kept.push(i);
                    mass += probs[i];
                    if mass >= top_p {
                        break;
                    }
                }
                let mut u = self.rng.random::<f32>() * mass;
                for &i in &kept {
                    u -= probs[i];
                    if u <= 0.0 {
                        return i as u32;
                    }
                }
                kept.last().copied().unwrap_or(0) as u32
            }
        }
    }
}

/// Index of the largest value (the first on ties).
pub fn argmax(v: &[f32]) -> u32 {
    let mut best = 0;
    for (i, x) in v.iter().enumerate() {
        if *x > v[best] {
            best = i;
        }
    }
    best as u32
}

/// Softmax of `logits / temperature`.
pub fn softmax(logits: &[f32], temperature: f32) -> Vec<f32> {
    let m = logits.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    let e: Vec<f32> = logits
        .iter()
        .map(|x| ((x - m) / temperature).exp())
        .collect();
    let s: f32 = e.iter().sum();
    e.into_iter().map(|x| x / s).collect()
}

/// When a greedy answer ends: EOS always, after `max_new` tokens, and, with `at_line`, at the
/// end of its first line of text (a line break after some text), which is where answers are
/// read anyway.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stop {
    pub max_new: usize,
    pub at_line: bool,
}

impl Stop {
    /// At most `n` tokens.
    pub fn tokens(n: usize) -> Stop {
        Stop {
            max_new: n,
            at_line: false,
        }
    }

    /// At most `n` tokens, and no further than the first line of text.
    pub fn line(n: usize) -> Stop {
        Stop {
            max_new: n,
            at_line: true,
        }
    }
}

/// What [`greedy_and_score`] returns for each row of a batch.
#[derive(Clone, Debug)]
pub struct Scored {
    /// Greedy continuation (stops at EOS; at most `max_new` tokens).
    pub greedy: Vec<u32>,
    /// Teacher-forced log-probability of each candidate answer, summed over its tokens.
    pub answer_logp: Vec<f32>,
}

/// For a batch of prompts: the greedy continuation, and the summed log-probability of each of
/// the row's candidate answers given the prompt. The prompts are prefilled once; each
/// candidate is scored on a copy of the KV cache, and greedy decoding continues from it.
pub fn greedy_and_score(
    model: &Model,
    prompts: &[Vec<u32>],
    candidates: &[Vec<Vec<u32>>],
    spec: &Spec,
    stop: Stop,
) -> Result<Vec<Scored>> {
    let b = prompts.len();
    let pad = model.tokenizer.eos_id.unwrap_or(0);
    let batch = Batch::left_padded(prompts, pad);
    let lens: Vec<usize> = prompts.iter().map(Vec::len).collect();
    let mut hooks = Hooks::new(spec, model.cfg().n_heads).with_prompt_lens(lens);
    let mut cache = KvCache::new(model.cfg().n_layers);
    let first = model
        .net
        .forward(&batch, Some(&mut cache), &mut hooks, LogitsAt::Last)?;
    let first = crate::model::llama::log_softmax(&first.squeeze(1)?)?.to_vec2::<f32>()?; // [b, vocab]
    let n_cand = candidates.first().map_or(0, Vec::len);
    let mut out: Vec<Scored> = (0..b)
        .map(|r| Scored {
            greedy: vec![],
            answer_logp: (0..n_cand)
                .map(|c| {
                    candidates[r][c]
                        .first()
                        .map_or(0.0, |t| first[r][*t as usize])
                })
                .collect(),
        })
        .collect();
    score_tails(model, &mut cache, &mut hooks, candidates, pad, &mut out)?;
    let greedy = greedy_rows(model, &first, stop, &mut |next| {
        let ids: Vec<Vec<u32>> = next.iter().map(|t| vec![*t]).collect();
        let batch = Batch {
            ids,
            pads: vec![0; b],
        };
        let logits = model
            .net
            .forward(&batch, Some(&mut cache), &mut hooks, LogitsAt::Last)?;
        Ok(logits.squeeze(1)?.to_vec2::<f32>()?)
    })?;
    for (o, g) in out.iter_mut().zip(greedy) {
        o.greedy = g;
    }
    Ok(out)
}

/// Adds to each `out[r].answer_logp[c]` the log-probabilities of candidate `c`'s tokens after
/// its first, teacher-forced after the prompts in `cache`, which is truncated back to them.
fn score_tails(
    model: &Model,
    cache: &mut KvCache,
    hooks: &mut Hooks,
    candidates: &[Vec<Vec<u32>>],
    pad: u32,
    out: &mut [Scored],
) -> Result<()> {
    let b = candidates.len();
    let n_cand = candidates.first().map_or(0, Vec::len);
    #[allow(clippy::needless_range_loop)] // c indexes the second axis of candidates[r][c]
    for c in 0..n_cand {
        let rest: Vec<&[u32]> = (0..b).map(|r| &candidates[r][c][..]).collect();
        let longest = rest.iter().map(|a| a.len()).max().unwrap_or(0);
        if longest < 2 {
            continue;
        }
        // Feed a_0..a_{n-2} after the prompt; position j predicts a_{j+1}. Right padding only
        // affects positions after each row's answer, which nothing reads.
        let ids: Vec<Vec<u32>> = rest
            .iter()
            .map(|a| {
                let mut v: Vec<u32> = a.iter().take(a.len().saturating_sub(1)).copied().collect();
                v.resize(longest - 1, pad);
                v
            })
            .collect();
        let tb = Batch {
            ids,
            pads: vec![0; b],
        };
        let prompts_len = cache.len;
        let logits = model.net.forward(&tb, Some(cache), hooks, LogitsAt::All)?;
        cache.truncate(prompts_len);
        let lp = crate::model::llama::log_softmax(&logits)?.to_vec3::<f32>()?; // [b, longest-1, vocab]
        for r in 0..b {
            for j in 1..rest[r].len() {
                out[r].answer_logp[c] += lp[r][j - 1][rest[r][j] as usize];
            }
        }
    }
    Ok(())
}

/// Feeds each row's last token and returns each row's next logits.
type StepFn<'a> = dyn FnMut(&[u32]) -> Result<Vec<Vec<f32>>> + 'a;

/// Greedy decoding of a batch from its first logits: `step` feeds each row's last token and
/// returns the next logits. A row ends as `stop` says (EOS is left out).
pub(super) fn greedy_rows(
    model: &Model,
    first: &[Vec<f32>],
    stop: Stop,
    step: &mut StepFn,
) -> Result<Vec<Vec<u32>>> {
    let b = first.len();
    let eos = model.tokenizer.eos_id;
    let mut out = vec![vec![]; b];
    for (r, l) in first.iter().enumerate() {
        check_finite(l, || format!("the first answer token of row {r}"))?;
    }
    let mut next: Vec<u32> = first.iter().map(|l| argmax(l)).collect();
    let mut done = vec![false; b];
    for s in 0..stop.max_new {
        for r in 0..b {
            if !done[r] {
                if Some(next[r]) == eos {
                    done[r] = true;
                } else {
                    out[r].push(next[r]);
                    done[r] = stop.at_line && first_line_ended(model, &out[r])?;
                }
            }
        }
        if s + 1 == stop.max_new || done.iter().all(|d| *d) {
            break;
        }
        let logits = step(&next)?;
        for (r, l) in logits.iter().enumerate() {
            check_finite(l, || format!("answer token {} of row {r}", s + 1))?;
        }
        next = logits.iter().map(|l| argmax(l)).collect();
    }
    Ok(out)
}

/// Whether `ids` hold a line break after some text.
fn first_line_ended(model: &Model, ids: &[u32]) -> Result<bool> {
    Ok(model.tokenizer.decode(ids)?.trim_start().contains('\n'))
}
