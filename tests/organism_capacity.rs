//! `organism capacity`: memorized bits, the capacity fit, and a small sweep end to end.

use candle_core::{Device, Tensor};
use ctxsteer::journal::Journal;
use ctxsteer::organism::capacity::{
    self, CapacityEvent, CapacityOptions, CapacityRun, Precision, Shape,
};
use ctxsteer::organism::{Net, TrainOptions};

const VOCAB: usize = 16;
const SEQ: usize = 8;

fn entropy(n: usize) -> f64 {
    (n * (SEQ - 1)) as f64 * (VOCAB as f64).log2()
}

/// A model whose weights are all zero predicts every token with probability 1/vocab: it needs
/// the whole entropy, and has memorized nothing.
#[test]
fn a_model_that_predicts_uniformly_memorizes_zero_bits() {
    let opts = TrainOptions {
        layers: 1,
        d_model: 8,
        heads: 1,
        d_mlp: 32,
        ..TrainOptions::default()
    };
    let net = Net::new(&opts, VOCAB).unwrap();
    for v in net.vars.values() {
        v.set(&v.as_tensor().zeros_like().unwrap()).unwrap();
    }
    let data = capacity::random_sequences(10, SEQ, VOCAB, 3);
    let bits = capacity::sequence_bits(&net, &data).unwrap();
    assert_eq!(bits.len(), 10);
    for b in &bits {
        assert!((b - 7.0 * 4.0).abs() < 1e-4, "{b}");
    }
    assert!(capacity::memorized_bits(entropy(10), &bits).abs() < 1e-3);
}

/// Logits that put all the mass on each next token cost nothing: the model has memorized the
/// whole entropy. Logits that are uniform but for one token cost exactly what they should.
#[test]
fn a_model_that_knows_the_sequences_memorizes_their_entropy() {
    let data = capacity::random_sequences(5, SEQ, VOCAB, 4);
    let targets: Vec<u32> = data.iter().flat_map(|r| r[1..].to_vec()).collect();
    let logits: Vec<f32> = targets
        .iter()
        .flat_map(|t| (0..VOCAB).map(move |v| if v as u32 == *t { 60.0 } else { 0.0 }))
        .collect();
    let logits = Tensor::from_vec(logits, (5, SEQ - 1, VOCAB), &Device::Cpu).unwrap();
    let t = Tensor::from_vec(targets.clone(), (5, SEQ - 1), &Device::Cpu).unwrap();
    let bits = capacity::bits_of(&logits, &t).unwrap();
    assert!(bits.iter().all(|b| b.abs() < 1e-6), "{bits:?}");
    assert!((capacity::memorized_bits(entropy(5), &bits) - entropy(5)).abs() < 1e-6);
    // Target logit ln(3): p = 3 / (3 + 15) = 1/6, so log2(6) bits per token.
    let one: Vec<f32> = targets
        .iter()
        .flat_map(|t| (0..VOCAB).map(move |v| if v as u32 == *t { 3f32.ln() } else { 0.0 }))
        .collect();
    let one = Tensor::from_vec(one, (5, SEQ - 1, VOCAB), &Device::Cpu).unwrap();
    for b in capacity::bits_of(&one, &t).unwrap() {
        assert!((b - 7.0 * 6f64.log2()).abs() < 1e-4, "{b}");
    }
}

/// The fit through the origin finds the slope of points on a line exactly, and of noisy
/// points within an interval that holds the true slope and narrows with more points.
#[test]
fn the_capacity_fit_recovers_a_known_slope() {
    let exact: Vec<(f64, f64)> = [1e3, 5e3, 2e4, 8e4].iter().map(|x| (*x, 3.6 * x)).collect();
    let f = capacity::fit_through_origin(&exact).unwrap();
    assert!((f.value - 3.6).abs() < 1e-12 && (f.ci_high - f.ci_low).abs() < 1e-9);
    let noisy = |n: usize| -> Vec<(f64, f64)> {
        let mut rng = ctxsteer::stats::SplitMix(9);
        (1..=n)
            .map(|k| {
                let x = 2e3 * k as f64;
                let e = (rng.below(1001) as f64 / 1000.0 - 0.5) * 0.4; // ±0.2 bits/param
                (x, (3.6 + e) * x)
            })
            .collect()
    };
    let (four, forty) = (
        capacity::fit_through_origin(&noisy(4)).unwrap(),
        capacity::fit_through_origin(&noisy(40)).unwrap(),
    );
    for f in [&four, &forty] {
        assert!(f.ci_low < 3.6 && 3.6 < f.ci_high, "{f:?}");
        assert!(f.ci_high - f.ci_low > 0.0);
    }
    assert!(forty.ci_high - forty.ci_low < four.ci_high - four.ci_low);
    assert_eq!(capacity::fit_through_origin(&[]), None);
}

fn tiny_sweep() -> CapacityOptions {
    CapacityOptions {
        vocab: VOCAB,
        seq: SEQ,
        shapes: vec![Shape::parse("1x8").unwrap()],
        precisions: vec![Precision::F32, Precision::Bf16],
        ns: vec![2, 8],
        climb: false,
        batch: 8,
        lr: 1e-2,
        patience: 30,
        tol: 0.01,
        max_epochs: 400,
        seed: 1,
    }
}

/// Trained on two sequences, a small model stores most of their bits, and never more than
/// their entropy, in f32 and in bf16; its capacity is its best run. A rerun from the journal
/// trains nothing and reports the same.
#[test]
fn a_small_sweep_memorizes_and_resumes_from_its_journal() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("runs.jsonl");
    let o = tiny_sweep();
    let mut reused = vec![];
    let run = |resume: bool, reused: &mut Vec<bool>| {
        let mut j = Journal::<CapacityRun>::open(&path, resume).unwrap();
        capacity::sweep(&o, &mut j, "test".into(), &mut |e| {
            if let CapacityEvent::Done(_, r) = e {
                reused.push(r);
            }
            Ok(())
        })
        .unwrap()
    };
    let first = run(false, &mut reused);
    assert_eq!(reused, [false; 4]);
    for (two, p) in [
        (&first.runs[0], Precision::F32),
        (&first.runs[2], Precision::Bf16),
    ] {
        assert_eq!(
            (two.n, two.params, two.precision),
            // The embedding, q/k/v/o, gate/up/down and two norms, the final norm.
            (2, VOCAB * 8 + (4 * 8 * 8 + 3 * 8 * 32 + 2 * 8) + 8, p)
        );
        assert!(two.memorized_bits > 0.5 * two.entropy_bits, "{two:?}");
    }
    assert!(first
        .runs
        .iter()
        .all(|r| r.memorized_bits <= r.entropy_bits + 1e-3));
    for (size, runs) in first.sizes.iter().zip(first.runs.chunks(2)) {
        let best = runs
            .iter()
            .map(|r| r.memorized_bits)
            .fold(f64::MIN, f64::max);
        assert_eq!(size.capacity_bits, best);
    }
    assert_eq!(first.fits.len(), 2);
    reused.clear();
    let again = run(true, &mut reused);
    assert_eq!(reused, [true; 4]);
    // The same runs (JSON may round a float's last bit).
    assert_eq!(again.runs.len(), first.runs.len());
    for (a, b) in again.runs.iter().zip(&first.runs) {
        assert_eq!(
            (a.shape, a.precision, a.n, a.epochs),
            (b.shape, b.precision, b.n, b.epochs)
        );
        assert!((a.memorized_bits - b.memorized_bits).abs() < 1e-9);
    }
    assert!(Journal::<CapacityRun>::open(&path, false).is_err());
}

#[test]
fn bad_sizes_are_refused_with_the_form_that_works() {
    for bad in ["16", "1x", "x8", "0x8", "1x9"] {
        let e = Shape::parse(bad).unwrap_err().to_string();
        assert!(
            e.contains("1x32") || e.contains("d_model") || e.contains("layer"),
            "{bad}: {e}"
        );
    }
    // What a run counts as its parameters: every weight of the model, the tied embedding once.
    let opts = TrainOptions {
        layers: 2,
        d_model: 16,
        heads: 2,
        d_mlp: 64,
        ..TrainOptions::default()
    };
    assert_eq!(
        Net::new(&opts, 100).unwrap().n_params(),
        100 * 16 + 2 * (4 * 256 + 3 * 16 * 64 + 32) + 16
    );
}
