//! The rates a benchmark reports: shares with bootstrap 95% intervals, the memorization ratio
//! M_R, and SQuAD exact match.

use crate::label::{Answer, Run};

pub use crate::stats::Rate;

/// How many bootstrap resamples a benchmark's intervals take.
const REPS: usize = 1000;

pub(super) fn rate(flags: &[bool], seed: u64) -> Rate {
    Rate::share(flags, REPS, seed)
}

/// The mean of per-item values with its bootstrap 95% interval over items (seeded by `seed`):
/// a share when the values are 0 and 1, a paired difference when they are -1, 0 and 1.
pub fn mean_rate(values: &[f64], seed: u64) -> Rate {
    Rate::bootstrap(values, REPS, seed)
}

/// M_R with a bootstrap interval over items.
pub(super) fn mem_ratio(runs: &[Run], seed: u64) -> Rate {
    let f = |idx: &mut dyn Iterator<Item = usize>| {
        let (mut p, mut c) = (0.0, 0.0);
        for i in idx {
            match runs[i].greedy_answer {
                Answer::Prior => p += 1.0,
                Answer::Context => c += 1.0,
                Answer::Neither => {}
            }
        }
        if p + c == 0.0 {
            0.0
        } else {
            p / (p + c)
        }
    };
    let value = f(&mut (0..runs.len()));
    let mut rng = crate::stats::SplitMix(seed);
    let mut reps: Vec<f64> = (0..1000)
        .map(|_| f(&mut (0..runs.len()).map(|_| rng.below(runs.len()))))
        .collect();
    reps.sort_by(f64::total_cmp);
    Rate {
        value,
        ci_low: reps[25],
        ci_high: reps[974],
        n: runs.len(),
    }
}

/// SQuAD answer normalization: lowercase, drop punctuation and the articles a/an/the, collapse
/// whitespace.
pub fn squad_normalize(s: &str) -> String {
    let lower: String = s
        .to_lowercase()
        .chars()
        .filter(|c| !c.is_ascii_punctuation())
        .collect();
    lower
        .split_whitespace()
        .filter(|w| !matches!(*w, "a" | "an" | "the"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Exact match of `pred` with any of `answers` after SQuAD normalization.
pub fn exact_match(pred: &str, answers: &[&str]) -> bool {
    let p = squad_normalize(pred);
    answers.iter().any(|a| squad_normalize(a) == p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_of_no_items_is_a_plain_zero() {
        let r = rate(&[], 0);
        assert_eq!((r.value, r.n), (0.0, 0));
        assert!(r.value.is_sign_positive(), "{:?}", r.value);
        assert_eq!(format!("{:.3}", r.value), "0.000");
        let r = rate(&[true, false, true, true], 0);
        assert_eq!((r.value, r.n), (0.75, 4));
    }
}
