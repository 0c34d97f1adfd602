//! Proxy-tuning (Liu et al. 2024, arXiv 2401.08565): decode a model with the logit shift of a
//! tuned expert against its untuned base, step by step, each with its own KV cache:
//!
//! logits = model + alpha * (expert - base)
//!
//! The three must share a tokenizer, so that a token id means the same in each.

use crate::error::{Error, Result};
use crate::generate::{
    check_fits, decode, GenOptions, Generation, Pass, Passes, Scored, Stop, Stream,
};
use crate::hooks::Spec;
use crate::model::Model;

/// The expert, its base and the weight of their difference. Cloning shares the models.
#[derive(Clone)]
pub struct Proxy {
    pub expert: std::sync::Arc<Model>,
    pub base: std::sync::Arc<Model>,
    pub alpha: f32,
}

/// Texts whose token ids must agree between tokenizers that are the same.
const PROBES: [&str; 3] = [
    "The capital of France is Paris.",
    " lives in Zotraidanheim, 1234!",
    "\nQ: who?\nA:",
];

/// An error unless `other` tokenizes as `model` does and has as many logits.
fn same_tokens(model: &Model, other: &Model, what: &str) -> Result<()> {
    let differ = |why: String| {
        Error::Invalid(format!(
            "the proxy {what} does not share the model's tokenizer ({why}); proxy-tuning adds logits token by token, so the three must share one"
        ))
    };
    if model.cfg().vocab_size != other.cfg().vocab_size {
        return Err(differ(format!(
            "{} logits against {}",
            other.cfg().vocab_size,
            model.cfg().vocab_size
        )));
    }
    for t in PROBES {
        if model.tokenizer.encode(t)? != other.tokenizer.encode(t)? {
            return Err(differ(format!("{t:?} gives other ids")));
        }
    }
    if model.tokenizer.eos_id != other.tokenizer.eos_id {
        return Err(differ("another end-of-text token".into()));
    }
    Ok(())
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("expert", &self.expert.path)
            .field("base", &self.base.path)
            .field("alpha", &self.alpha)
            .finish()
    }
}

impl Proxy {
    /// Check that the expert and the base share `model`'s tokenizer.
    pub fn check(&self, model: &Model) -> Result<()> {
        if !self.alpha.is_finite() {
            return Err(Error::Invalid(format!(
                "--proxy-alpha must be finite, got {}",
                self.alpha
            )));
        }
        same_tokens(model, &self.expert, "expert")?;
        same_tokens(model, &self.base, "base")
    }

    /// The proxy-tuned logits from the three models' logits.
    pub fn combine(&self, model: &[f32], expert: &[f32], base: &[f32]) -> Vec<f32> {
        Proxy::combine_with(self.alpha, model, expert, base)
    }

    /// `model + alpha * (expert - base)`, element by element.
    pub fn combine_with(alpha: f32, model: &[f32], expert: &[f32], base: &[f32]) -> Vec<f32> {
        model
            .iter()
            .zip(expert)
            .zip(base)
            .map(|((m, e), b)| m + alpha * (e - b))
            .collect()
    }
}

/// Generate from `prompt_ids` with `model` under `spec` (the expert and the base run
/// unsteered), proxy-tuned by `proxy`.
pub fn generate(
    model: &Model,
    proxy: &Proxy,
    prompt_ids: &[u32],
    spec: &Spec,
    opts: &GenOptions,
    on_token: &mut dyn FnMut(u32) -> Result<()>,
) -> Result<Generation> {
    proxy.check(model)?;
    model.validate(spec)?;
    for m in [model, &proxy.expert, &proxy.base] {
        check_fits(m, prompt_ids.len(), opts.max_tokens)?;
    }
    let none = Spec::new();
    let n = prompt_ids.len();
    let mut main = Stream::new(model, spec, n, opts);
    let mut expert = Stream::new(&proxy.expert, &none, n, opts);
    let mut base = Stream::new(&proxy.base, &none, n, opts);
    let ids = decode(
        model,
        prompt_ids,
        opts,
        &mut |seq, step| {
            let m = main.next(seq, step)?;
            let e = expert.next(seq, step)?;
            let b = base.next(seq, step)?;
            Ok(proxy.combine(&m, &e, &b))
        },
        on_token,
    )?;
    Ok(Generation {
        prompt_ids: prompt_ids.to_vec(),
        ids,
        captures: main.hooks.captures,
    })
}

/// [`crate::generate::greedy_and_score`] under proxy-tuning: `model` (under `spec`) on `prompts`, shifted at
/// every step by `alpha` times the expert's logits minus the base's (both unsteered).
pub fn greedy_and_score(
    model: &Model,
    proxy: &Proxy,
    prompts: &[Vec<u32>],
    candidates: &[Vec<Vec<u32>>],
    spec: &Spec,
    stop: Stop,
) -> Result<Vec<Scored>> {
    let none = Spec::new();
    let passes = vec![
        Pass::new(model, spec, prompts),
        Pass::new(&proxy.expert, &none, prompts),
        Pass::new(&proxy.base, &none, prompts),
    ];
    let combine = |l: &[&[f32]]| proxy.combine(l[0], l[1], l[2]);
    Passes {
        passes,
        combine: &combine,
    }
    .greedy_and_score(candidates, stop)
}
