//! Training a low-rank edit through the model with candle's autograd: the examples, the
//! losses, and the optimizer loop (see the module above for what the loss asks).

use super::{Reft, ReftMeta, TrainRecord, VERSION};
use crate::data::{Form, Item};
use crate::error::{Error, Result};
use crate::hooks::{Action, Intervention, LowRank, Positions, Site, SiteKind, Spec};
use crate::model::{Batch, LogitsAt, Model};
use candle_core::{DType, Device, Tensor, Var, D};

/// Training settings.
#[derive(Clone, Debug)]
pub struct TrainOptions {
    pub layers: Vec<usize>,
    pub rank: usize,
    pub epochs: usize,
    pub lr: f64,
    /// Conflicts per step (true contexts come in the same number); closed-book prompts and
    /// neutral passages are spread over the steps, at most this many of each per step.
    pub batch: usize,
    pub forms: Vec<Form>,
    /// Weight of the keep-what-you-know KL term against the answer cross-entropy.
    pub keep_weight: f64,
    pub seed: u64,
    /// Irrelevant contexts per conflict and form: its query after a context about another
    /// subject (kinds in turn), answered as the unedited model answers it closed-book. 0: none.
    pub irrelevant: usize,
}

/// One training sequence: a prompt, optionally followed by an answer.
#[derive(Clone, Debug)]
struct Example {
    ids: Vec<u32>,
    /// Tokens of the prompt; the rest is the answer the loss asks for.
    prompt_len: usize,
}

/// The training sequences, by what the loss asks of them.
struct Examples {
    /// Counterfactual contexts (answer: the context's), true contexts (answer: the prior) and
    /// irrelevant contexts (answer: the unedited model's own closed-book answer).
    answer: Vec<Example>,
    /// Closed-book prompts with the prior answer: keep as the model had them.
    closed: Vec<Example>,
    /// Ordinary text: keep as the model had it.
    neutral: Vec<Example>,
    /// Conflicts, true contexts, closed-book prompts, neutral passages, irrelevant contexts.
    counts: [usize; 5],
}

fn example(model: &Model, item: &Item, form: Form, ctx: bool, answer: &str) -> Result<Example> {
    let mut ids = crate::label::query_ids(model, item, form, ctx)?;
    let prompt_len = ids.len();
    ids.extend(crate::label::answer_ids(model, form, answer)?);
    Ok(Example { ids, prompt_len })
}

/// Irrelevant-context examples in `form`: each conflict's query after `per_item` contexts
/// about other subjects of its split (the kinds in turn, from a hash of its id), with the
/// answer the unedited model gives that query closed-book (greedy, up to the line's end).
fn irrelevant_examples(
    model: &Model,
    items: &[Item],
    form: Form,
    per_item: usize,
) -> Result<Vec<Example>> {
    use crate::data::{irrelevant_for, stable_hash, Distractor};
    let conflicts: Vec<Item> = items
        .iter()
        .filter(|it| !it.context.is_empty())
        .cloned()
        .collect();
    if per_item == 0 || conflicts.is_empty() {
        return Ok(vec![]);
    }
    let all = irrelevant_for(&conflicts, &Distractor::ALL);
    let opts = crate::label::LabelOptions::new(form);
    let spec = Spec::new();
    let closed = crate::label::runs(model, &conflicts, &opts, &spec, false, None, &mut |_| {})?;
    let mut out = Vec::new();
    for (q, run) in conflicts.iter().zip(&closed) {
        let answer = crate::label::answer_span(&run.greedy).trim();
        let prefix = format!("{}:irrelevant:", q.id);
        let own: Vec<&Item> = all.iter().filter(|i| i.id.starts_with(&prefix)).collect();
        if answer.is_empty() || own.is_empty() {
            continue;
        }
        let start = stable_hash(&q.id) as usize;
        for k in 0..per_item.min(own.len()) {
            let irr = own[(start + k) % own.len()];
            out.push(example(model, irr, form, true, answer)?);
        }
    }
    Ok(out)
}

fn build_examples(
    model: &Model,
    items: &[Item],
    neutral: &[String],
    opts: &TrainOptions,
) -> Result<Examples> {
    let (mut answer, mut closed, mut kept) = (Vec::new(), Vec::new(), Vec::new());
    let mut counts = [0usize; 5];
    for form in &opts.forms {
        let irr = irrelevant_examples(model, items, *form, opts.irrelevant)?;
        counts[4] += irr.len();
        answer.extend(irr);
        for it in items.iter().filter(|it| !it.context.is_empty()) {
            answer.push(example(model, it, *form, true, &it.context_answer)?);
            counts[0] += 1;
            if let Some(t) = it.true_twin() {
                answer.push(example(model, &t, *form, true, &t.context_answer)?);
                counts[1] += 1;
            }
            closed.push(example(model, it, *form, false, &it.prior_answer)?);
            counts[2] += 1;
        }
    }
    for text in neutral {
        let ids = model.tokenizer.encode_prompt(text)?;
        if ids.len() >= 2 {
            kept.push(Example { ids, prompt_len: 0 });
            counts[3] += 1;
        }
    }
    Ok(Examples {
        answer,
        closed,
        neutral: kept,
        counts,
    })
}

/// Fresh edits at `layers`: R a random orthonormal basis, W = R and b = 0 (the identity).
fn init_vars(d: usize, rank: usize, layers: &[usize], seed: u64, dev: &Device) -> Result<Vec<Var>> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut vars = Vec::new();
    for _ in layers {
        let mut r: Vec<f32> = (0..rank * d)
            .map(|_| rng.random::<f32>() * 2.0 - 1.0)
            .collect();
        orthonormalize(&mut r, rank, d);
        vars.push(Var::from_vec(r.clone(), (rank, d), dev)?);
        vars.push(Var::from_vec(r, (rank, d), dev)?);
        vars.push(Var::zeros(rank, DType::F32, dev)?);
    }
    Ok(vars)
}

/// Gram-Schmidt on the rows of a `[rank, d]` matrix.
fn orthonormalize(m: &mut [f32], rank: usize, d: usize) {
    for i in 0..rank {
        for j in 0..i {
            let dot: f32 = (0..d).map(|k| m[i * d + k] * m[j * d + k]).sum();
            for k in 0..d {
                m[i * d + k] -= dot * m[j * d + k];
            }
        }
        let norm = (0..d).map(|k| m[i * d + k].powi(2)).sum::<f32>().sqrt();
        for k in 0..d {
            m[i * d + k] /= norm.max(1e-12);
        }
    }
}

/// The spec of the edits held by `vars` (three per layer: R, W, b).
fn spec_of(vars: &[Var], layers: &[usize]) -> Result<Spec> {
    let mut spec = Spec::new();
    for (l, v) in layers.iter().zip(vars.chunks(3)) {
        let edit = LowRank {
            r: v[0].as_tensor().clone(),
            w: v[1].as_tensor().clone(),
            b: v[2].as_tensor().clone(),
        };
        spec.push(Intervention::new(
            Site::new(SiteKind::ResidPost, *l),
            Positions::All,
            Action::LowRank(edit),
        ));
    }
    Ok(spec)
}

/// A left-padded batch and the positions the loss reads, as flat indices into its
/// `b * seq` columns: answer columns (each predicting its target token) and keep columns.
struct Packed {
    batch: Batch,
    answer_at: Tensor,
    targets: Tensor,
    keep_at: Tensor,
}

/// Column i of a row holds token i - pad and predicts token i - pad + 1. An answer column
/// predicts an answer token. Keep columns: from the prompt's last token on for a prompt with an
/// answer (where the model answers), every column but the last for plain text.
fn pack(model: &Model, ex: &[&Example]) -> Result<Packed> {
    let pad = model.tokenizer.eos_id.unwrap_or(0);
    let rows: Vec<Vec<u32>> = ex.iter().map(|e| e.ids.clone()).collect();
    let batch = Batch::left_padded(&rows, pad);
    let seq = batch.ids.first().map_or(0, Vec::len);
    let (mut answer_at, mut targets, mut keep_at) = (vec![], vec![], vec![]);
    for (r, (e, p)) in ex.iter().zip(&batch.pads).enumerate() {
        for i in *p..seq.saturating_sub(1) {
            let next = i - p + 1;
            let col = (r * seq + i) as u32;
            if next >= e.prompt_len {
                keep_at.push(col);
                if e.prompt_len > 0 {
                    answer_at.push(col);
                    targets.push(e.ids[next]);
                }
            }
        }
    }
    let dev = model.device();
    let t = |v: Vec<u32>| Tensor::from_vec(v.clone(), v.len(), dev);
    Ok(Packed {
        answer_at: t(answer_at)?,
        targets: t(targets)?,
        keep_at: t(keep_at)?,
        batch,
    })
}

/// Log-probabilities `[n, vocab]` at the flat columns `at` of a batch run under `spec`.
fn log_probs_at(model: &Model, batch: &Batch, spec: &Spec, at: &Tensor) -> Result<Tensor> {
    let (h, _) = model.run(batch, spec, LogitsAt::Normed)?; // [b, seq, d]
    let (b, seq, d) = h.dims3()?;
    let h = h.reshape((b * seq, d))?.index_select(at, 0)?; // [n, d]
    let logits = model.net.unembed(&h)?; // [n, vocab]
    Ok(candle_nn::ops::log_softmax(&logits, D::Minus1)?)
}

/// Mean cross-entropy of the answer tokens under `spec`.
fn answer_loss(model: &Model, p: &Packed, spec: &Spec) -> Result<Tensor> {
    let lp = log_probs_at(model, &p.batch, spec, &p.answer_at)?;
    let picked = lp.gather(&p.targets.unsqueeze(1)?, 1)?; // [n, 1]
    Ok(picked.mean_all()?.neg()?)
}

/// Mean KL(unedited || edited) of the next-token distributions at the keep columns.
fn keep_loss(model: &Model, p: &Packed, spec: &Spec) -> Result<Tensor> {
    let lp_ref = log_probs_at(model, &p.batch, &Spec::new(), &p.keep_at)?;
    let lp = log_probs_at(model, &p.batch, spec, &p.keep_at)?;
    let kl = (lp_ref.exp()? * (&lp_ref - lp)?)?.sum(D::Minus1)?; // [n]
    Ok(kl.mean_all()?)
}

/// The keep KL of step `s`'s share of `pool` (taken in the order `idx`, wrapping around so that
/// every step gets some, at most `cap` sequences); zero for an empty pool.
fn keep_part(
    model: &Model,
    pool: &[Example],
    idx: &[usize],
    (s, steps, cap): (usize, usize, usize),
    spec: &Spec,
) -> Result<Tensor> {
    if pool.is_empty() {
        return Ok(Tensor::zeros((), DType::F32, model.device())?);
    }
    let per = pool.len().div_ceil(steps.max(1)).clamp(1, cap.max(1));
    let ex: Vec<&Example> = (0..per)
        .map(|j| &pool[idx[(s * per + j) % idx.len()]])
        .collect();
    keep_loss(model, &pack(model, &ex)?, spec)
}

/// Longer stretches of ordinary text from one-line passages: passage i joins lines i, i+1, …,
/// i+k-1 (wrapping around), so the keep term also covers positions deep into a long text.
pub fn joined_passages(lines: &[String], k: usize) -> Vec<String> {
    let n = lines.len();
    if n == 0 || k <= 1 {
        return lines.to_vec();
    }
    (0..n)
        .map(|i| {
            (0..k.min(n))
                .map(|j| lines[(i + j) % n].as_str())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}

/// What training reports as it goes.
#[derive(Clone, Debug)]
pub enum TrainEvent {
    /// Training starts: this many steps in all.
    Begin { steps: usize },
    /// One optimizer step done.
    Step,
    /// An epoch done, with its summary line.
    Epoch(String),
}

/// Train edits on `items` (their contexts, true-context twins and closed-book prompts) and
/// `neutral` passages.
pub fn train(
    model: &Model,
    items: &[Item],
    neutral: &[String],
    opts: &TrainOptions,
    progress: &mut dyn FnMut(TrainEvent),
) -> Result<Reft> {
    use candle_nn::Optimizer;
    use rand::SeedableRng;
    check_options(model, opts)?;
    let t0 = std::time::Instant::now();
    let ex = build_examples(model, items, neutral, opts)?;
    if ex.counts[0] == 0 {
        return Err(Error::Invalid(
            "training needs items with a context (none of the items has one)".into(),
        ));
    }
    let vars = init_vars(
        model.cfg().d_model,
        opts.rank,
        &opts.layers,
        opts.seed,
        model.device(),
    )?;
    let params = candle_nn::ParamsAdamW {
        lr: opts.lr,
        weight_decay: 0.0,
        ..Default::default()
    };
    let mut run = Run {
        model,
        opts,
        adam: candle_nn::AdamW::new(vars.clone(), params)?,
        vars,
        steps_per_epoch: ex.answer.len().div_ceil(2 * opts.batch),
        ex,
    };
    let mut rng = rand::rngs::StdRng::seed_from_u64(opts.seed);
    progress(TrainEvent::Begin {
        steps: run.steps_per_epoch * opts.epochs,
    });
    let mut losses = Vec::new();
    for epoch in 0..opts.epochs {
        let mean = run.epoch(&mut rng, progress)?;
        losses.push(mean);
        progress(TrainEvent::Epoch(format!(
            "epoch {}/{}: answer cross-entropy {:.4}, closed-book KL {:.5}, neutral-text KL {:.5} ({:.0}s)",
            epoch + 1,
            opts.epochs,
            mean[0],
            mean[1],
            mean[2],
            t0.elapsed().as_secs_f64()
        )));
    }
    run.finish(losses, t0.elapsed().as_secs_f64())
}

/// The state of one training run.
struct Run<'a> {
    model: &'a Model,
    opts: &'a TrainOptions,
    ex: Examples,
    vars: Vec<Var>,
    adam: candle_nn::AdamW,
    steps_per_epoch: usize,
}

impl Run<'_> {
    /// One pass over the answer sequences in a fresh order, with a share of the keep sequences
    /// at each step; the mean of each loss part.
    fn epoch(
        &mut self,
        rng: &mut rand::rngs::StdRng,
        progress: &mut dyn FnMut(TrainEvent),
    ) -> Result<[f64; 3]> {
        use rand::seq::SliceRandom;
        let order = |n: usize, rng: &mut rand::rngs::StdRng| {
            let mut v: Vec<usize> = (0..n).collect();
            v.shuffle(rng);
            v
        };
        let a_idx = order(self.ex.answer.len(), rng);
        let c_idx = order(self.ex.closed.len(), rng);
        let n_idx = order(self.ex.neutral.len(), rng);
        let mut sums = [0.0f64; 3];
        for (s, chunk) in a_idx.chunks(2 * self.opts.batch).enumerate() {
            let parts = self.step(s, chunk, &c_idx, &n_idx)?;
            for (sum, p) in sums.iter_mut().zip(parts) {
                *sum += p;
            }
            progress(TrainEvent::Step);
        }
        Ok(sums.map(|x| x / self.steps_per_epoch.max(1) as f64))
    }

    /// One optimizer step on the answer sequences `chunk` and step `s`'s share of the keep
    /// sequences; the three loss parts.
    fn step(
        &mut self,
        s: usize,
        chunk: &[usize],
        c_idx: &[usize],
        n_idx: &[usize],
    ) -> Result<[f64; 3]> {
        use candle_nn::Optimizer;
        let (model, ex, n) = (self.model, &self.ex, self.steps_per_epoch);
        let spec = spec_of(&self.vars, &self.opts.layers)?;
        let a: Vec<&Example> = chunk.iter().map(|i| &ex.answer[*i]).collect();
        let parts = [
            answer_loss(model, &pack(model, &a)?, &spec)?,
            keep_part(model, &ex.closed, c_idx, (s, n, self.opts.batch), &spec)?,
            keep_part(model, &ex.neutral, n_idx, (s, n, self.opts.batch), &spec)?,
        ];
        let keep = (&parts[1] + &parts[2])?;
        self.adam
            .backward_step(&(&parts[0] + (keep * self.opts.keep_weight)?)?)?;
        retract(&self.vars)?;
        let mut out = [0.0; 3];
        for (o, p) in out.iter_mut().zip(&parts) {
            *o = p.to_scalar::<f32>()? as f64;
        }
        Ok(out)
    }

    /// The trained edits, detached, with the record of how they were made.
    fn finish(self, losses: Vec<[f64; 3]>, seconds: f64) -> Result<Reft> {
        let (opts, counts) = (self.opts, self.ex.counts);
        let edits = opts
            .layers
            .iter()
            .zip(self.vars.chunks(3))
            .map(|(l, v)| {
                let t = |i: usize| v[i].as_tensor().detach();
                Ok((Site::resid_post(*l), LowRank::new(t(0), t(1), t(2))?))
            })
            .collect::<Result<Vec<_>>>()?;
        let train = TrainRecord {
            forms: opts.forms.clone(),
            conflicts: counts[0],
            true_contexts: counts[1],
            closed_book: counts[2],
            neutral: counts[3],
            irrelevant: counts[4],
            epochs: opts.epochs,
            steps: self.steps_per_epoch * opts.epochs,
            lr: opts.lr,
            keep_weight: opts.keep_weight,
            seed: opts.seed,
            seconds,
            losses: losses.iter().map(|l| (l[0], l[1] + l[2])).collect(),
            loss_parts: losses,
            ..Default::default()
        };
        let meta = ReftMeta {
            version: VERSION,
            model: self.model.identity()?,
            sites: edits.iter().map(|(s, _)| s.to_string()).collect(),
            rank: opts.rank,
            train,
        };
        Ok(Reft { edits, meta })
    }
}

/// Keep R's rows orthonormal after a step (a retraction onto the Stiefel manifold).
fn retract(vars: &[Var]) -> Result<()> {
    for v in vars.chunks(3) {
        let (rank, d) = v[0].as_tensor().dims2()?;
        let mut r = v[0].as_tensor().flatten_all()?.to_vec1::<f32>()?;
        orthonormalize(&mut r, rank, d);
        v[0].set(&Tensor::from_vec(r, (rank, d), v[0].as_tensor().device())?)?;
    }
    Ok(())
}

fn check_options(model: &Model, o: &TrainOptions) -> Result<()> {
    let n = model.cfg().n_layers;
    if let Some(l) = o.layers.iter().find(|l| **l >= n) {
        return Err(Error::Invalid(format!(
            "layer {l} is out of range: this model has layers 0..={}",
            n - 1
        )));
    }
    let bad = |what: &str, why: &str| Err(Error::Invalid(format!("{what}: {why}")));
    if o.layers.is_empty() {
        return bad("layers", "name at least one layer");
    }
    if o.rank == 0 || o.rank > model.cfg().d_model {
        return bad("rank", "must be between 1 and d_model");
    }
    if o.epochs == 0 || o.batch == 0 {
        return bad("epochs and batch", "must be at least 1");
    }
    if !(o.lr.is_finite() && o.lr > 0.0) {
        return bad("learning rate", "must be a positive finite number");
    }
    if !(o.keep_weight.is_finite() && o.keep_weight >= 0.0) {
        return bad("keep weight", "must be a finite number >= 0");
    }
    if model.weights == crate::model::WeightsMode::Quantized {
        return bad(
            "weights",
            "training needs f32 weights (the quantized matmul has no gradient)",
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passages_join_consecutive_lines_wrapping_around() {
        let lines: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
        assert_eq!(joined_passages(&lines, 2), ["a b", "b c", "c a"]);
        assert_eq!(joined_passages(&lines, 1), lines);
        assert_eq!(joined_passages(&lines, 9), ["a b c", "b c a", "c a b"]);
    }

    #[test]
    fn gram_schmidt_gives_orthonormal_rows() {
        let mut m = vec![1.0, 1.0, 0.0, 1.0, 0.0, 1.0];
        orthonormalize(&mut m, 2, 3);
        let dot = |i: usize, j: usize| (0..3).map(|k| m[i * 3 + k] * m[j * 3 + k]).sum::<f32>();
        assert!((dot(0, 0) - 1.0).abs() < 1e-6);
        assert!((dot(1, 1) - 1.0).abs() < 1e-6);
        assert!(dot(0, 1).abs() < 1e-6);
    }
}
