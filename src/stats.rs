//! Small statistics used across the crate: AUROC, balanced accuracy, standardization, the
//! first principal component, seeded shuffles and bootstrap confidence intervals.

use ndarray::{Array1, Array2, Axis};
use serde::{Deserialize, Serialize};

/// Area under the ROC curve of `scores` for binary `labels` (Mann-Whitney U with tied ranks).
/// 0.5 when one class is missing.
pub fn auroc(scores: &[f64], labels: &[bool]) -> f64 {
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|a, b| scores[*a].total_cmp(&scores[*b]));
    let mut ranks = vec![0f64; scores.len()];
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && scores[idx[j + 1]] == scores[idx[i]] {
            j += 1;
        }
        let r = (i + j) as f64 / 2.0 + 1.0;
        for k in i..=j {
            ranks[idx[k]] = r;
        }
        i = j + 1;
    }
    let n_pos = labels.iter().filter(|l| **l).count() as f64;
    let n_neg = labels.len() as f64 - n_pos;
    if n_pos == 0.0 || n_neg == 0.0 {
        return 0.5;
    }
    let sum_pos: f64 = ranks
        .iter()
        .zip(labels)
        .filter(|(_, l)| **l)
        .map(|(r, _)| r)
        .sum();
    (sum_pos - n_pos * (n_pos + 1.0) / 2.0) / (n_pos * n_neg)
}

/// Accuracy and balanced accuracy of `pred` against `labels`.
pub fn accuracies(pred: &[bool], labels: &[bool]) -> (f64, f64) {
    let n = labels.len().max(1) as f64;
    let acc = pred.iter().zip(labels).filter(|(p, l)| p == l).count() as f64 / n;
    let rate = |cls: bool| {
        let tot = labels.iter().filter(|l| **l == cls).count();
        if tot == 0 {
            return 1.0;
        }
        pred.iter()
            .zip(labels)
            .filter(|(p, l)| **l == cls && **p == cls)
            .count() as f64
            / tot as f64
    };
    (acc, (rate(true) + rate(false)) / 2.0)
}

/// Column means and standard deviations (floored so constant columns do not divide by 0).
pub fn mean_std(x: &Array2<f64>) -> (Array1<f64>, Array1<f64>) {
    let mean = x
        .mean_axis(Axis(0))
        .unwrap_or_else(|| Array1::zeros(x.ncols()));
    let std = x.std_axis(Axis(0), 0.0).mapv(|s| s.max(1e-6));
    (mean, std)
}

/// Unit vector along `v` (unchanged if zero).
pub fn unit(v: &Array1<f64>) -> Array1<f64> {
    let n = v.dot(v).sqrt();
    if n == 0.0 {
        v.clone()
    } else {
        v / n
    }
}

pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    if na == 0.0 || nb == 0.0 {
        0.0
    } else {
        dot / (na * nb)
    }
}

/// First principal component of the rows of `x` (centered), by power iteration.
pub fn first_pc(x: &Array2<f64>) -> Array1<f64> {
    let mean = x
        .mean_axis(Axis(0))
        .unwrap_or_else(|| Array1::zeros(x.ncols()));
    let c = x - &mean;
    let cov = c.t().dot(&c);
    let mut v = Array1::from_iter((0..x.ncols()).map(|i| 1.0 + (i % 7) as f64 * 0.01));
    for _ in 0..200 {
        let next = unit(&cov.dot(&v));
        let delta = (&next - &v).mapv(f64::abs).sum();
        v = next;
        if delta < 1e-10 {
            break;
        }
    }
    v
}

/// A deterministic generator (SplitMix64) for shuffles and bootstraps.
pub struct SplitMix(pub u64);

impl SplitMix {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E3779B97F4A7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58476D1CE4E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D049BB133111EB);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }

    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i + 1);
            v.swap(i, j);
        }
    }
}

/// Bootstrap 95% interval of the mean of `values` (percentile method).
pub fn bootstrap_ci(values: &[f64], reps: usize, seed: u64) -> (f64, f64) {
    bootstrap(values, reps, seed, |v| {
        v.iter().sum::<f64>() / v.len() as f64
    })
}

/// The 95% percentile bootstrap interval of `stat` over `values`, resampled `reps` times with
/// `seed`; (0, 0) for no values.
pub fn bootstrap<T: Copy>(
    values: &[T],
    reps: usize,
    seed: u64,
    stat: impl Fn(&[T]) -> f64,
) -> (f64, f64) {
    if values.is_empty() {
        return (0.0, 0.0);
    }
    let mut rng = SplitMix(seed);
    let mut stats: Vec<f64> = (0..reps)
        .map(|_| {
            let re: Vec<T> = (0..values.len())
                .map(|_| values[rng.below(values.len())])
                .collect();
            stat(&re)
        })
        .collect();
    stats.sort_by(f64::total_cmp);
    (percentile(&stats, 0.025), percentile(&stats, 0.975))
}

/// The `q` quantile of ascending `sorted` (the nearest rank, rounded); NaN when it is empty.
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    match sorted.len() {
        0 => f64::NAN,
        n => sorted[((q * (n - 1) as f64).round() as usize).min(n - 1)],
    }
}

/// A mean (a share, a rate, a difference) with its 95% interval and how many values it is over:
/// the one type every benchmark and experiment reports an estimate in. No values is a mean of
/// 0 with `n` = 0 (reports show n/a).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Rate {
    // JSON has no NaN (an undefined ratio, an interval over nothing): it is written as null and
    // read back as NaN.
    #[serde(deserialize_with = "nan_if_null")]
    pub value: f64,
    #[serde(deserialize_with = "nan_if_null")]
    pub ci_low: f64,
    #[serde(deserialize_with = "nan_if_null")]
    pub ci_high: f64,
    /// How many values the mean is over (absent in reports written before it was kept).
    #[serde(default)]
    pub n: usize,
}

/// A number, or NaN where JSON holds null (serde_json writes NaN as null).
fn nan_if_null<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

/// The mean of `v`; 0 for none (an empty sum of floats is -0.0).
fn mean_or_zero(v: &[f64]) -> f64 {
    match v.len() {
        0 => 0.0,
        n => v.iter().sum::<f64>() / n as f64,
    }
}

impl Rate {
    /// The mean of `values` with its percentile bootstrap interval over `reps` resamples.
    pub fn bootstrap(values: &[f64], reps: usize, seed: u64) -> Rate {
        let (ci_low, ci_high) = bootstrap_ci(values, reps, seed);
        Rate {
            value: mean_or_zero(values),
            ci_low,
            ci_high,
            n: values.len(),
        }
    }

    /// The share of `flags` that hold, with its bootstrap interval over `reps` resamples.
    pub fn share(flags: &[bool], reps: usize, seed: u64) -> Rate {
        let v: Vec<f64> = flags.iter().map(|f| f64::from(u8::from(*f))).collect();
        Rate::bootstrap(&v, reps, seed)
    }

    /// The mean of `values` with their 2.5th and 97.5th percentiles: a spread of the values
    /// (for example of random draws), not an interval of the mean.
    pub fn spread(values: &[f64]) -> Rate {
        let mut s = values.to_vec();
        s.sort_by(f64::total_cmp);
        Rate {
            value: mean_or_zero(values),
            ci_low: percentile(&s, 0.025),
            ci_high: percentile(&s, 0.975),
            n: values.len(),
        }
    }

    /// mean(a) − mean(b) of two independent samples, with a percentile bootstrap interval
    /// that resamples each on its own `reps` times; `n` counts the values of both.
    pub fn difference(a: &[f64], b: &[f64], reps: usize, seed: u64) -> Rate {
        let mut rng = SplitMix(seed);
        let mut draw = |v: &[f64]| {
            let re: Vec<f64> = (0..v.len()).map(|_| v[rng.below(v.len())]).collect();
            mean_or_zero(&re)
        };
        let diffs: Vec<f64> = (0..reps).map(|_| draw(a) - draw(b)).collect();
        Rate {
            value: mean_or_zero(a) - mean_or_zero(b),
            n: a.len() + b.len(),
            ..Rate::spread(&diffs)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rate_reads_back_what_it_wrote_nan_included() {
        let r = Rate::share(&[true, false, true, true], 1000, 3);
        assert_eq!((r.value, r.n), (0.75, 4));
        assert!(r.ci_low <= 0.75 && r.ci_high >= 0.75);
        let text = serde_json::to_string(&r).unwrap();
        assert_eq!(serde_json::from_str::<Rate>(&text).unwrap(), r);
        // NaN is written as null and read back as NaN; a report without n reads it as 0.
        let undefined = Rate {
            value: f64::NAN,
            ..r.clone()
        };
        let text = serde_json::to_string(&undefined).unwrap();
        assert!(text.contains("\"value\":null"), "{text}");
        assert!(serde_json::from_str::<Rate>(&text).unwrap().value.is_nan());
        let old: Rate =
            serde_json::from_str("{\"value\":0.5,\"ci_low\":0.25,\"ci_high\":0.75}").unwrap();
        assert_eq!((old.value, old.n), (0.5, 0));
        // Floats come back exactly (serde_json's float_roundtrip), last digit included.
        let third = Rate {
            // 1/11 is one that the default parser read back a unit off in its last place.
            value: 1.0 / 11.0,
            ..r
        };
        let back: Rate = serde_json::from_str(&serde_json::to_string(&third).unwrap()).unwrap();
        assert_eq!(back.value.to_bits(), third.value.to_bits());
    }
}
