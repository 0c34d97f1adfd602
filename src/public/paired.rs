//! Paired comparisons: every method of a benchmark is measured on the same test items, so each
//! can be set against `none` item by item. The per-item outcomes are read back from the
//! journal the runs were saved in, and the mean difference gets a bootstrap CI over items,
//! which separates methods whose own intervals overlap.

use super::scoped;
use crate::bench::{self, Method, Rate};
use crate::data::Item;
use crate::journal::Journal;
use crate::label::{self, Answer, Run};

/// The per-item outcome the paired comparison is made on: EM_C for NQ-Swap, the
/// in-context city named for world capitals, the answer class more probable for MemoTrap.
pub(super) fn headline(name: &str) -> &'static str {
    match name {
        "nqswap" => "EM_C",
        "memotrap" => "accuracy",
        _ => "in-context city named",
    }
}

fn outcome(name: &str, it: &Item, run: &Run) -> bool {
    match name {
        "nqswap" => bench::exact_match(label::answer_span(&run.greedy), &it.context_names()),
        "memotrap" => run.tf_winner == Answer::Context,
        _ => run.greedy_answer == Answer::Context,
    }
}

/// A method's outcome on every test item, read back from the journal where its test runs were
/// saved; None when the journal lacks any of them.
pub(super) fn test_outcomes(
    journal: &mut Option<Journal>,
    key: &str,
    (method, chosen): (Method, &str),
    test: &[Item],
    name: &str,
) -> Option<Vec<bool>> {
    let mut part = scoped(journal, key)?;
    let mut eval = part.sub(&bench::eval_scope(true, method, chosen));
    let items = eval.sub("items");
    test.iter()
        .enumerate()
        .map(|(i, it)| {
            let run = items.journal.get(&items.key(true, i, &it.id))?;
            Some(outcome(name, it, run))
        })
        .collect()
}

/// The mean per-item difference from the unsteered method on the same test items, with a
/// bootstrap CI over items; n = 0 (shown as n/a) when either side's runs are missing.
pub(super) fn paired_delta(base: Option<&[bool]>, other: Option<&[bool]>) -> Rate {
    let (Some(b), Some(o)) = (base, other) else {
        return Rate::default();
    };
    if b.len() != o.len() || b.is_empty() {
        return Rate::default();
    }
    let d: Vec<f64> = b
        .iter()
        .zip(o)
        .map(|(b, o)| *o as u8 as f64 - *b as u8 as f64)
        .collect();
    let (ci_low, ci_high) = crate::stats::bootstrap_ci(&d, 1000, 7);
    Rate {
        value: d.iter().sum::<f64>() / d.len() as f64,
        ci_low,
        ci_high,
        n: d.len(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::public::tests::nq;

    #[test]
    fn paired_deltas_read_each_methods_test_runs_back_from_the_journal() {
        let dir = tempfile::tempdir().unwrap();
        let mut journal = Some(Journal::open(&dir.path().join("j.jsonl"), false).unwrap());
        let test: Vec<Item> = (1..=4).map(|i| nq(i, "c")).collect();
        let run = |greedy: &str| Run {
            logp_prior: -1.0,
            logp_context: -2.0,
            tf_winner: Answer::Prior,
            greedy: greedy.into(),
            greedy_answer: Answer::Neither,
        };
        // Saved as an evaluation saves them: part key, then `test METHOD [SETTING]`, then items.
        let mut save = |key: &str, (m, chosen): (Method, &str), greedy: &[&str]| {
            let mut part = scoped(&mut journal, key).unwrap();
            let mut eval = part.sub(&bench::eval_scope(true, m, chosen));
            let items = eval.sub("items");
            let runs: Vec<(String, Run)> = greedy
                .iter()
                .enumerate()
                .map(|(i, g)| (items.key(true, i, &test[i].id), run(g)))
                .collect();
            items.journal.record(runs).unwrap();
        };
        let (none, cad) = ((Method::None, "none"), (Method::Cad, "beta=1"));
        // EM_C per item: none 1,0,0,0; cad 1,1,1,0 (the answer is cut at its first line).
        save("k-none", none, &[" new1", "old2", "x", "old4"]);
        save("k-cad", cad, &[" New1.", "new2\nmore", "the new3", "new"]);
        let b = test_outcomes(&mut journal, "k-none", none, &test, "nqswap").unwrap();
        let c = test_outcomes(&mut journal, "k-cad", cad, &test, "nqswap").unwrap();
        assert_eq!(b, [true, false, false, false]);
        assert_eq!(c, [true, true, true, false]);
        let d = paired_delta(Some(&b), Some(&c));
        assert_eq!((d.value, d.n), (0.5, 4));
        assert!(d.ci_low <= 0.5 && d.ci_high >= 0.5 && d.ci_low >= 0.0);
        // Another setting's runs are not these; a missing run or method gives n/a.
        let other = (Method::Cad, "beta=2");
        assert!(test_outcomes(&mut journal, "k-cad", other, &test, "nqswap").is_none());
        assert!(test_outcomes(&mut journal, "k-cad", cad, &test[..3], "nqswap").is_some());
        let extra: Vec<Item> = (1..=5).map(|i| nq(i, "c")).collect();
        assert!(test_outcomes(&mut journal, "k-cad", cad, &extra, "nqswap").is_none());
        assert_eq!(paired_delta(None, Some(&c)).n, 0);
        assert_eq!(paired_delta(Some(&b), Some(&c[..3])).n, 0);
    }
}
