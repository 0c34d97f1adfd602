//! `organism capacity`: how many bits a model of a given size can memorize, measured as Morris
//! et al. (2025) do, scaled to a laptop. Each model is trained from scratch, to convergence, on
//! N sequences of uniformly random tokens; what it memorized is the data's entropy minus its
//! negative log-likelihood in bits. Its capacity is the most it memorizes over N, and bits per
//! parameter is the slope of capacity against parameter count (a least-squares line through
//! the origin, with a t interval).

use super::adamw::AdamW;
use super::train::{Net, TrainOptions};
use crate::error::{Error, Result};
use crate::stats::SplitMix;
use candle_core::{Device, Tensor, D};
use serde::{Deserialize, Serialize};

crate::choice_enum! {
/// The precision the model's parameters are stored and trained in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Precision {
    /// 32-bit floats.
    #[serde(rename = "f32")]
    F32 = "f32",
    /// bfloat16: 8 bits of mantissa; the loss is still computed in f32.
    #[serde(rename = "bf16")]
    Bf16 = "bf16",
}
}

impl Precision {
    pub fn dtype(self) -> candle_core::DType {
        match self {
            Precision::F32 => candle_core::DType::F32,
            Precision::Bf16 => candle_core::DType::BF16,
        }
    }

    pub fn name(self) -> &'static str {
        crate::choice::Choice::name(self)
    }
}

/// One model shape: `layers` blocks of width `d_model` (SwiGLU hidden layer 4 × d_model).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Shape {
    pub layers: usize,
    pub d_model: usize,
}

impl Shape {
    /// `LxD`, for example `1x32`: L layers of width D.
    pub fn parse(s: &str) -> Result<Shape> {
        let bad = || {
            Error::Invalid(format!(
                "model size {s:?}: write LAYERSxWIDTH, for example 1x32 (one layer of width 32)"
            ))
        };
        let (l, d) = s.split_once('x').ok_or_else(bad)?;
        let shape = Shape {
            layers: l.trim().parse().map_err(|_| bad())?,
            d_model: d.trim().parse().map_err(|_| bad())?,
        };
        shape
            .train_options(1, 2, 1e-3, 0)
            .check()
            .map_err(|e| Error::Invalid(format!("model size {s:?}: {e}")))?;
        Ok(shape)
    }

    /// Heads of width 8 (one head below width 16).
    fn heads(&self) -> usize {
        (self.d_model / 8).max(1)
    }

    fn train_options(&self, batch: usize, seq: usize, lr: f64, seed: u64) -> TrainOptions {
        TrainOptions {
            layers: self.layers,
            d_model: self.d_model,
            heads: self.heads(),
            d_mlp: 4 * self.d_model,
            steps: 1,
            batch,
            seq,
            lr,
            warmup: 0,
            weight_decay: 0.0,
            checkpoint_every: 0,
            seed,
        }
    }
}

impl std::fmt::Display for Shape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}x{}", self.layers, self.d_model)
    }
}

/// The sweep: model sizes against dataset sizes, and how each model is trained.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CapacityOptions {
    pub vocab: usize,
    /// Tokens per sequence.
    pub seq: usize,
    pub shapes: Vec<Shape>,
    /// Each size is trained in each of these.
    pub precisions: Vec<Precision>,
    /// Dataset sizes N, in sequences, ascending.
    pub ns: Vec<usize>,
    /// Climb `ns` for each size only until memorized bits stop growing: stop after the first
    /// N that stores less than [`PLATEAU`] times the best so far (false: run every N).
    pub climb: bool,
    pub batch: usize,
    /// AdamW's learning rate (constant; no weight decay, which would cap what is stored).
    pub lr: f64,
    /// Converged: the epoch's mean training loss has not fallen by `tol` (relative; and by
    /// more than 0.001 nats) below the best so far for `patience` epochs.
    pub patience: usize,
    pub tol: f64,
    /// Training stops here even if not converged (the run says so).
    pub max_epochs: usize,
    pub seed: u64,
}

/// One model trained on one dataset.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CapacityRun {
    pub shape: Shape,
    #[serde(default = "f32_precision")]
    pub precision: Precision,
    pub params: usize,
    pub n: usize,
    pub epochs: usize,
    /// Whether the convergence criterion stopped training (false: `max_epochs` did).
    pub converged: bool,
    /// The final epoch's mean training loss, nats per token.
    pub loss: f64,
    /// The data's entropy: N × (seq − 1) × log2(vocab) (the first token is not predicted).
    pub entropy_bits: f64,
    /// The model's negative log-likelihood of the data, in bits.
    pub nll_bits: f64,
    /// entropy − NLL.
    pub memorized_bits: f64,
    pub seconds: f64,
}

/// Runs journaled before precisions existed were f32.
fn f32_precision() -> Precision {
    Precision::F32
}

/// N sequences of `seq` tokens drawn uniformly from `vocab`, one row per sequence.
pub fn random_sequences(n: usize, seq: usize, vocab: usize, seed: u64) -> Vec<Vec<u32>> {
    let mut rng = SplitMix(seed ^ 0x6361_7061_6369_7479);
    (0..n)
        .map(|_| (0..seq).map(|_| rng.below(vocab) as u32).collect())
        .collect()
}

/// Bits each row of `targets` `[b, t]` costs under `logits` `[b, t, vocab]`: the sum over its
/// positions of −log2 p(target).
pub fn bits_of(logits: &Tensor, targets: &Tensor) -> Result<Vec<f64>> {
    let lp = candle_nn::ops::log_softmax(logits, D::Minus1)?;
    let idx = targets.contiguous()?.unsqueeze(D::Minus1)?;
    let picked = lp
        .contiguous()?
        .gather(&idx, D::Minus1)?
        .squeeze(D::Minus1)?;
    let nats: Vec<f32> = picked.sum(D::Minus1)?.to_vec1()?;
    Ok(nats
        .iter()
        .map(|n| -*n as f64 / std::f64::consts::LN_2)
        .collect())
}

/// The bits `net` needs for each sequence: every token after the first, given those before.
pub fn sequence_bits(net: &Net, data: &[Vec<u32>]) -> Result<Vec<f64>> {
    let mut out = Vec::with_capacity(data.len());
    for rows in data.chunks(256) {
        let ids = rows_tensor(rows)?;
        let t = ids.dim(1)?;
        let logits = net.forward(&ids.narrow(1, 0, t - 1)?)?.detach();
        let logits = logits.to_dtype(candle_core::DType::F32)?;
        out.extend(bits_of(&logits, &ids.narrow(1, 1, t - 1)?)?);
    }
    Ok(out)
}

/// The entropy of uniformly random sequences minus what the model needs to code them: 0 for a
/// model that predicts uniformly, the whole entropy for one that knows every token.
pub fn memorized_bits(entropy_bits: f64, nll_bits: &[f64]) -> f64 {
    entropy_bits - nll_bits.iter().sum::<f64>()
}

fn rows_tensor(rows: &[Vec<u32>]) -> Result<Tensor> {
    let t = rows.first().map_or(0, |r| r.len());
    let flat: Vec<u32> = rows.iter().flatten().copied().collect();
    Ok(Tensor::from_vec(flat, (rows.len(), t), &Device::Cpu)?)
}

/// What a run reports as it trains.
pub enum CapacityEvent<'a> {
    /// A run begins (how many came before it).
    Start {
        run: usize,
        shape: Shape,
        precision: Precision,
        n: usize,
    },
    Epoch {
        epoch: usize,
        loss: f64,
    },
    /// A run finished (or came from the journal).
    Done(&'a CapacityRun, bool),
}

/// A fall in loss smaller than this (nats per token) is no progress, however small the loss.
const LOSS_FLOOR: f64 = 1e-3;

/// Train `shape` on `data` until its loss stops falling; (epochs, converged, last loss).
fn train_until_converged(
    net: &Net,
    data: &[Vec<u32>],
    o: &CapacityOptions,
    seed: u64,
    on: &mut dyn FnMut(CapacityEvent) -> Result<()>,
) -> Result<(usize, bool, f64)> {
    let mut opt = AdamW::new(&net.vars)?;
    let mut order: Vec<usize> = (0..data.len()).collect();
    let mut rng = SplitMix(seed);
    let (mut best, mut since, mut loss) = (f64::INFINITY, 0, f64::NAN);
    for epoch in 1..=o.max_epochs {
        rng.shuffle(&mut order);
        let mut sum = 0.0;
        for idx in order.chunks(o.batch) {
            let rows: Vec<Vec<u32>> = idx.iter().map(|&i| data[i].clone()).collect();
            let l = net.loss(&rows_tensor(&rows)?)?;
            let grads = l.backward()?;
            opt.step(&net.vars, net.opts.weight_decay, &grads, o.lr)?;
            sum += l.to_scalar::<f32>()? as f64 * idx.len() as f64;
        }
        loss = sum / data.len() as f64;
        on(CapacityEvent::Epoch { epoch, loss })?;
        // Progress: below the best by the relative tolerance, and by more than a rounding.
        if loss < best * (1.0 - o.tol) && best - loss > LOSS_FLOOR {
            (best, since) = (loss, 0);
        } else {
            since += 1;
        }
        if since >= o.patience {
            return Ok((epoch, true, loss));
        }
        crate::progress::check_cancel()?;
    }
    Ok((o.max_epochs, false, loss))
}

/// Train one model of `shape` from scratch on `n` random sequences and measure what it stored.
pub fn run_one(
    o: &CapacityOptions,
    shape: Shape,
    precision: Precision,
    n: usize,
    on: &mut dyn FnMut(CapacityEvent) -> Result<()>,
) -> Result<CapacityRun> {
    let t0 = std::time::Instant::now();
    let data = random_sequences(n, o.seq, o.vocab, o.seed ^ (n as u64).rotate_left(20));
    let seed = o.seed ^ (shape.layers as u64) << 40 ^ (shape.d_model as u64) << 20;
    let net = Net::new(&shape.train_options(o.batch, o.seq, o.lr, seed), o.vocab)?
        .to_dtype(precision.dtype())?;
    let (epochs, converged, loss) = train_until_converged(&net, &data, o, seed ^ n as u64, on)?;
    let bits = sequence_bits(&net, &data)?;
    let entropy_bits = (n * (o.seq - 1)) as f64 * (o.vocab as f64).log2();
    Ok(CapacityRun {
        shape,
        precision,
        params: net.n_params(),
        n,
        epochs,
        converged,
        loss,
        entropy_bits,
        nll_bits: bits.iter().sum(),
        memorized_bits: memorized_bits(entropy_bits, &bits),
        seconds: t0.elapsed().as_secs_f64(),
    })
}

/// A slope through the origin with its 95% interval.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Slope {
    pub value: f64,
    pub ci_low: f64,
    pub ci_high: f64,
    pub n: usize,
}

/// Least squares y = b·x through the origin; the interval is b ± t(0.975, n − 1) × se(b).
pub fn fit_through_origin(points: &[(f64, f64)]) -> Option<Slope> {
    let n = points.len();
    let sxx: f64 = points.iter().map(|(x, _)| x * x).sum();
    if n == 0 || sxx <= 0.0 {
        return None;
    }
    let b = points.iter().map(|(x, y)| x * y).sum::<f64>() / sxx;
    let half = if n > 1 {
        let rss: f64 = points.iter().map(|(x, y)| (y - b * x).powi(2)).sum();
        t_975(n - 1) * (rss / (n - 1) as f64 / sxx).sqrt()
    } else {
        f64::INFINITY
    };
    Some(Slope {
        value: b,
        ci_low: b - half,
        ci_high: b + half,
        n,
    })
}

/// The 97.5% quantile of Student's t with `df` degrees of freedom.
fn t_975(df: usize) -> f64 {
    const T: [f64; 10] = [
        12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    ];
    match df {
        0 => f64::INFINITY,
        1..=10 => T[df - 1],
        11..=20 => 2.228 - (df - 10) as f64 * (2.228 - 2.086) / 10.0,
        21..=30 => 2.086 - (df - 20) as f64 * (2.086 - 2.042) / 10.0,
        _ => 1.96,
    }
}

/// One size's capacity in one precision: the most it memorized over N, and at which N.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SizeCapacity {
    pub shape: Shape,
    pub precision: Precision,
    pub params: usize,
    pub capacity_bits: f64,
    pub at_n: usize,
    pub bits_per_param: f64,
    /// Whether every run of this size converged.
    pub converged: bool,
}

/// Each size's capacity in each precision (in the order of `precisions`, then `shapes`).
pub fn capacities(
    runs: &[CapacityRun],
    precisions: &[Precision],
    shapes: &[Shape],
) -> Vec<SizeCapacity> {
    let pairs = precisions
        .iter()
        .flat_map(|p| shapes.iter().map(move |s| (*p, *s)));
    pairs
        .filter_map(|(p, s)| {
            let mine: Vec<&CapacityRun> = runs
                .iter()
                .filter(|r| r.shape == s && r.precision == p)
                .collect();
            let best = mine
                .iter()
                .max_by(|a, b| a.memorized_bits.total_cmp(&b.memorized_bits))?;
            Some(SizeCapacity {
                shape: s,
                precision: p,
                params: best.params,
                capacity_bits: best.memorized_bits,
                at_n: best.n,
                bits_per_param: best.memorized_bits / best.params as f64,
                converged: mine.iter().all(|r| r.converged),
            })
        })
        .collect()
}

/// Bits per parameter in one precision: capacity against parameters, through the origin.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CapacityFit {
    pub precision: Precision,
    pub bits_per_param: Slope,
}

/// The sweep's result.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CapacityReport {
    pub command: String,
    pub options: CapacityOptions,
    pub runs: Vec<CapacityRun>,
    pub sizes: Vec<SizeCapacity>,
    /// One fit per precision that has runs.
    pub fits: Vec<CapacityFit>,
    /// Morris et al.'s figure for GPT-style models (3.51 in bf16, 3.83 in f32).
    pub reference_bits_per_param: f64,
    pub seconds: f64,
}

/// Every size in every precision against the dataset sizes (climbed, or all of them; runs
/// already in `journal` are reused), then the fits.
pub fn sweep(
    o: &CapacityOptions,
    journal: &mut crate::journal::Journal<CapacityRun>,
    command: String,
    on: &mut dyn FnMut(CapacityEvent) -> Result<()>,
) -> Result<CapacityReport> {
    check(o)?;
    let t0 = std::time::Instant::now();
    let mut runs = vec![];
    for &precision in &o.precisions {
        for &shape in &o.shapes {
            climb(o, shape, precision, journal, &mut runs, on)?;
        }
    }
    let sizes = capacities(&runs, &o.precisions, &o.shapes);
    let fits = o
        .precisions
        .iter()
        .filter_map(|p| {
            let points: Vec<(f64, f64)> = sizes
                .iter()
                .filter(|s| s.precision == *p)
                .map(|s| (s.params as f64, s.capacity_bits))
                .collect();
            let bits_per_param = fit_through_origin(&points)?;
            Some(CapacityFit {
                precision: *p,
                bits_per_param,
            })
        })
        .collect();
    Ok(CapacityReport {
        command,
        options: o.clone(),
        runs,
        sizes,
        fits,
        reference_bits_per_param: 3.6,
        seconds: t0.elapsed().as_secs_f64(),
    })
}

fn check(o: &CapacityOptions) -> Result<()> {
    let ascending = o.ns.windows(2).all(|w| w[0] < w[1]);
    let sizes = !o.shapes.is_empty() && !o.precisions.is_empty();
    if !sizes || o.ns.is_empty() || !ascending || o.vocab < 2 || o.seq < 2 || o.batch == 0 {
        return Err(Error::Invalid(
            "capacity needs at least one size and precision, dataset sizes N in ascending \
             order, a vocabulary of 2 or more, sequences of 2 or more tokens and a batch of at \
             least 1"
                .into(),
        ));
    }
    Ok(())
}

/// One size's runs up the dataset sizes, until memorized bits stop growing (with `climb`).
fn climb(
    o: &CapacityOptions,
    shape: Shape,
    precision: Precision,
    journal: &mut crate::journal::Journal<CapacityRun>,
    runs: &mut Vec<CapacityRun>,
    on: &mut dyn FnMut(CapacityEvent) -> Result<()>,
) -> Result<()> {
    let mut best = f64::MIN;
    for &n in &o.ns {
        on(CapacityEvent::Start {
            run: runs.len(),
            shape,
            precision,
            n,
        })?;
        let run = journaled(o, shape, precision, n, journal, on)?;
        let stored = run.memorized_bits;
        runs.push(run);
        if o.climb && stored < PLATEAU * best {
            break;
        }
        best = best.max(stored);
    }
    Ok(())
}

/// Memorized bits below this share of the best so far mean a size's capacity is reached.
pub const PLATEAU: f64 = 1.05;

/// One run, from the journal or trained now and saved there.
fn journaled(
    o: &CapacityOptions,
    shape: Shape,
    precision: Precision,
    n: usize,
    journal: &mut crate::journal::Journal<CapacityRun>,
    on: &mut dyn FnMut(CapacityEvent) -> Result<()>,
) -> Result<CapacityRun> {
    let key = run_key(o, shape, precision, n);
    let (run, reused) = match journal.get(&key) {
        Some(r) => (r.clone(), true),
        None => {
            let r = run_one(o, shape, precision, n, on)?;
            journal.record(vec![(key, r.clone())])?;
            (r, false)
        }
    };
    on(CapacityEvent::Done(&run, reused))?;
    Ok(run)
}

/// A run's journal key: everything that decides its result (f32 runs have no precision in
/// theirs).
fn run_key(o: &CapacityOptions, shape: Shape, precision: Precision, n: usize) -> String {
    let p = match precision {
        Precision::F32 => String::new(),
        p => format!("|{}", p.name()),
    };
    format!(
        "capacity|v{}|s{}|{shape}|n{n}|b{}|lr{}|p{}|tol{}|max{}|seed{}{p}",
        o.vocab, o.seq, o.batch, o.lr, o.patience, o.tol, o.max_epochs, o.seed
    )
}
