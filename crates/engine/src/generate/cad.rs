//! Decoding that combines several passes, their KV caches advancing in lockstep: context-aware
//! decoding (CAD, Shi et al. 2023; AdaCAD), the contrast of the prompt with and without its
//! context; proxy-tuning (the proxy module) builds on the same passes.

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

/// The log-softmax of one row of logits, on the CPU.
pub fn log_softmax_vec(l: &[f32]) -> Vec<f32> {
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
    let passes = vec![
        Pass::new(model, spec, with),
        Pass::new(model, spec, without),
    ];
    let combine = |l: &[&[f32]]| weight.logits(l[0], l[1]);
    Passes {
        passes,
        combine: &combine,
    }
    .greedy_and_score(candidates, stop)
}

/// One forward pass of a decoding method that combines several: a model, its spec, the
/// prompts it reads and its KV cache.
pub struct Pass<'a> {
    model: &'a Model,
    spec: &'a Spec,
    prompts: &'a [Vec<u32>],
    cache: KvCache,
}

impl<'a> Pass<'a> {
    pub fn new(model: &'a Model, spec: &'a Spec, prompts: &'a [Vec<u32>]) -> Pass<'a> {
        Pass {
            model,
            spec,
            prompts,
            cache: KvCache::new(model.cfg().n_layers),
        }
    }

    /// Prefills the prompts (left-padded); each row's last logits.
    fn prefill(&mut self) -> Result<Vec<Vec<f32>>> {
        let pad = self.model.tokenizer.eos_id.unwrap_or(0);
        let mut hooks = self.hooks();
        let l = self.model.net.forward(
            &Batch::left_padded(self.prompts, pad),
            Some(&mut self.cache),
            &mut hooks,
            LogitsAt::Last,
        )?;
        Ok(l.squeeze(1)?.to_vec2::<f32>()?)
    }

    /// Feeds one token per row; each row's next logits.
    fn step(&mut self, toks: &[u32]) -> Result<Vec<Vec<f32>>> {
        let mut hooks = self.hooks();
        let batch = Batch {
            ids: toks.iter().map(|t| vec![*t]).collect(),
            pads: vec![0; toks.len()],
        };
        let l =
            self.model
                .net
                .forward(&batch, Some(&mut self.cache), &mut hooks, LogitsAt::Last)?;
        Ok(l.squeeze(1)?.to_vec2::<f32>()?)
    }

    fn hooks(&self) -> Hooks<'a> {
        Hooks::new(self.spec, self.model.cfg().n_heads)
            .with_prompt_lens(self.prompts.iter().map(Vec::len).collect())
    }
}

/// Row logits of each pass (pass-major) combined row by row into one set of next logits.
pub type Combine<'a> = dyn Fn(&[&[f32]]) -> Vec<f32> + 'a;

/// The passes of a combined decoding method, advanced in lockstep.
pub struct Passes<'a, 'c> {
    pub passes: Vec<Pass<'a>>,
    pub combine: &'c Combine<'c>,
}

impl Passes<'_, '_> {
    /// Each row's combined logits from every pass's.
    fn combined(&self, each: &[Vec<Vec<f32>>]) -> Vec<Vec<f32>> {
        let rows = each.first().map_or(0, Vec::len);
        (0..rows)
            .map(|r| {
                let row: Vec<&[f32]> = each.iter().map(|p| p[r].as_slice()).collect();
                (self.combine)(&row)
            })
            .collect()
    }

    /// Feeds one token per row to every pass; the combined next logits.
    fn step(&mut self, toks: &[u32]) -> Result<Vec<Vec<f32>>> {
        let each = self
            .passes
            .iter_mut()
            .map(|p| p.step(toks))
            .collect::<Result<Vec<_>>>()?;
        Ok(self.combined(&each))
    }

    /// Prefill every pass, score the candidates, then decode greedily.
    pub fn greedy_and_score(
        mut self,
        candidates: &[Vec<Vec<u32>>],
        stop: Stop,
    ) -> Result<Vec<Scored>> {
        let each = self
            .passes
            .iter_mut()
            .map(Pass::prefill)
            .collect::<Result<Vec<_>>>()?;
        let first = self.combined(&each);
        let n_cand = candidates.first().map_or(0, Vec::len);
        let mut out: Vec<Scored> = (0..first.len())
            .map(|_| Scored {
                greedy: vec![],
                answer_logp: vec![0.0; n_cand],
            })
            .collect();
        self.score(&first, candidates, &mut out)?;
        let model = self.passes[0].model;
        let greedy = greedy_rows(model, &first, stop, &mut |next| self.step(next))?;
        for (o, g) in out.iter_mut().zip(greedy) {
            o.greedy = g;
        }
        Ok(out)
    }

    /// Teacher-forced scoring of every candidate, token by token, after the prompts in every
    /// pass's cache, which is truncated back to them after each candidate.
    fn score(
        &mut self,
        first: &[Vec<f32>],
        candidates: &[Vec<Vec<u32>>],
        out: &mut [Scored],
    ) -> Result<()> {
        let b = candidates.len();
        let pad = self.passes[0].model.tokenizer.eos_id.unwrap_or(0);
        let n_cand = candidates.first().map_or(0, Vec::len);
        #[allow(clippy::needless_range_loop)] // c indexes the second axis of candidates[r][c]
        for c in 0..n_cand {
            let longest = (0..b).map(|r| candidates[r][c].len()).max().unwrap_or(0);
            let lens: Vec<usize> = self.passes.iter().map(|p| p.cache.len).collect();
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
                cur = self.step(&toks)?;
            }
            for (p, n) in self.passes.iter_mut().zip(lens) {
                p.cache.truncate(n);
            }
        }
        Ok(())
    }
}
