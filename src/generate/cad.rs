//! Context-aware decoding (CAD, Shi et al. 2023; AdaCAD): the next token from the contrast of
//! two passes, with and without the context, their KV caches advancing in lockstep.

use super::*;

/// Context-aware decoding (Shi et al. 2023): next-token logits are
/// (1 + beta) * logits(with context) - beta * logits(without context).
/// It leaves weights and hidden states untouched; two KV caches advance in lockstep.
pub fn cad_logits(with: &[f32], without: &[f32], beta: f32) -> Vec<f32> {
    with.iter()
        .zip(without)
        .map(|(a, b)| (1.0 + beta) * a - beta * b)
        .collect()
}

/// How strongly context-aware decoding contrasts the two passes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum CadWeight {
    /// The same beta at every step (Shi et al. 2023).
    Fixed(f32),
    /// At each step and for each row, beta is the Jensen-Shannon divergence (base 2, so in
    /// [0, 1]) between the next-token distributions with and without the context, as in AdaCAD
    /// (Wang et al. 2024): a step where the context changes little, such as the line break
    /// that ends an answer, is hardly contrasted at all.
    Jsd,
}

impl CadWeight {
    /// The beta of one step, from the two passes' logits.
    pub fn beta(self, with: &[f32], without: &[f32]) -> f32 {
        match self {
            CadWeight::Fixed(b) => b,
            CadWeight::Jsd => jsd(with, without),
        }
    }

    /// The contrasted logits of one step.
    pub fn logits(self, with: &[f32], without: &[f32]) -> Vec<f32> {
        cad_logits(with, without, self.beta(with, without))
    }
}

/// Jensen-Shannon divergence, base 2, between the softmax distributions of two logit vectors.
pub fn jsd(a: &[f32], b: &[f32]) -> f32 {
    let (p, q) = (log_softmax_vec(a), log_softmax_vec(b));
    let mut d = 0.0f64;
    for (lp, lq) in p.iter().zip(&q) {
        let (pp, pq) = ((*lp as f64).exp(), (*lq as f64).exp());
        let ln_m = (0.5 * (pp + pq)).ln();
        // p log(p/m) is 0 where p is (and then m may be too); likewise for q.
        if pp > 0.0 {
            d += 0.5 * pp * (*lp as f64 - ln_m);
        }
        if pq > 0.0 {
            d += 0.5 * pq * (*lq as f64 - ln_m);
        }
    }
    (d / std::f64::consts::LN_2).clamp(0.0, 1.0) as f32
}

fn log_softmax_vec(l: &[f32]) -> Vec<f32> {
    let m = l.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    let lse = l.iter().map(|x| (x - m).exp()).sum::<f32>().ln() + m;
    l.iter().map(|x| x - lse).collect()
}

/// [`greedy_and_score`] under context-aware decoding: `with` and `without` are the prompts with
/// and without their context (row by row), contrasted at every step by `weight`.
pub fn cad_greedy_and_score(
    model: &Model,
    with: &[Vec<u32>],
    without: &[Vec<u32>],
    candidates: &[Vec<Vec<u32>>],
    spec: &Spec,
    weight: CadWeight,
    stop: Stop,
) -> Result<Vec<Scored>> {
    let b = with.len();
    let (mut cw, lw) = prefill_last(model, spec, with)?;
    let (mut cn, ln) = prefill_last(model, spec, without)?;
    let first: Vec<Vec<f32>> = (0..b).map(|r| weight.logits(&lw[r], &ln[r])).collect();
    let n_cand = candidates.first().map_or(0, Vec::len);
    let mut out: Vec<Scored> = (0..b)
        .map(|_| Scored {
            greedy: vec![],
            answer_logp: vec![0.0; n_cand],
        })
        .collect();
    let pair = CadPair {
        model,
        spec,
        with,
        without,
        weight,
    };
    pair.score(&mut cw, &mut cn, &first, candidates, &mut out)?;
    let greedy = greedy_rows(model, &first, stop, &mut |next| {
        pair.step(&mut cw, &mut cn, next)
    })?;
    for (o, g) in out.iter_mut().zip(greedy) {
        o.greedy = g;
    }
    Ok(out)
}

/// Prefills `prompts` (left-padded) into a new cache; returns it with each row's last logits.
fn prefill_last(
    model: &Model,
    spec: &Spec,
    prompts: &[Vec<u32>],
) -> Result<(KvCache, Vec<Vec<f32>>)> {
    let pad = model.tokenizer.eos_id.unwrap_or(0);
    let mut cache = KvCache::new(model.cfg().n_layers);
    let mut hooks = Hooks::new(spec, model.cfg().n_heads)
        .with_prompt_lens(prompts.iter().map(Vec::len).collect());
    let l = model.net.forward(
        &Batch::left_padded(prompts, pad),
        Some(&mut cache),
        &mut hooks,
        LogitsAt::Last,
    )?;
    Ok((cache, l.squeeze(1)?.to_vec2::<f32>()?))
}

/// Feeds one token per row into `cache` (which holds `prompts` and what followed);
/// returns each row's next logits.
fn step_last(
    model: &Model,
    spec: &Spec,
    cache: &mut KvCache,
    prompts: &[Vec<u32>],
    toks: &[u32],
) -> Result<Vec<Vec<f32>>> {
    let mut hooks = Hooks::new(spec, model.cfg().n_heads)
        .with_prompt_lens(prompts.iter().map(Vec::len).collect());
    let ids: Vec<Vec<u32>> = toks.iter().map(|t| vec![*t]).collect();
    let batch = Batch {
        ids,
        pads: vec![0; toks.len()],
    };
    let l = model
        .net
        .forward(&batch, Some(cache), &mut hooks, LogitsAt::Last)?;
    Ok(l.squeeze(1)?.to_vec2::<f32>()?)
}

/// The two passes of context-aware decoding, advanced in lockstep.
struct CadPair<'a> {
    model: &'a Model,
    spec: &'a Spec,
    with: &'a [Vec<u32>],
    without: &'a [Vec<u32>],
    weight: CadWeight,
}

impl CadPair<'_> {
    /// Feeds one token per row to both passes; returns the contrasted next logits.
    fn step(&self, cw: &mut KvCache, cn: &mut KvCache, toks: &[u32]) -> Result<Vec<Vec<f32>>> {
        let a = step_last(self.model, self.spec, cw, self.with, toks)?;
        let n = step_last(self.model, self.spec, cn, self.without, toks)?;
        Ok((0..toks.len())
            .map(|r| self.weight.logits(&a[r], &n[r]))
            .collect())
    }

    /// Teacher-forced scoring of every candidate, token by token, after the prompts in both
    /// caches, which are truncated back to them after each candidate.
    fn score(
        &self,
        cw: &mut KvCache,
        cn: &mut KvCache,
        first: &[Vec<f32>],
        candidates: &[Vec<Vec<u32>>],
        out: &mut [Scored],
    ) -> Result<()> {
        let b = candidates.len();
        let pad = self.model.tokenizer.eos_id.unwrap_or(0);
        let n_cand = candidates.first().map_or(0, Vec::len);
        #[allow(clippy::needless_range_loop)] // c indexes the second axis of candidates[r][c]
        for c in 0..n_cand {
            let longest = (0..b).map(|r| candidates[r][c].len()).max().unwrap_or(0);
            let (lw, ln) = (cw.len, cn.len);
            let mut cur = first.to_vec();
            for j in 0..longest {
                let mut toks = vec![pad; b];
                for r in 0..b {
                    if let Some(t) = candidates[r][c].get(j) {
                        out[r].answer_logp[c] += log_softmax_vec(&cur[r])[*t as usize];
                        toks[r] = *t;
                    }
                }
                if j + 1 == longest {
                    break;
                }
                cur = self.step(cw, cn, &toks)?;
            }
            cw.truncate(lw);
            cn.truncate(ln);
        }
        Ok(())
    }
}
