//! Paired comparisons: every method of a benchmark is measured on the same test items, so each
//! can be set against `none` item by item. The per-item outcomes are read back from the
//! journal the runs were saved in, and the mean difference gets a bootstrap CI over items,
//! which separates methods whose own intervals overlap. The same runs also tell how many
//! prompts a method changed at all: a gated method leaves the prompts its gate skips
//! bit-identical to `none`, so the share of changed runs is its gate's firing rate.

use super::{scoped_part, Benchmark, PartKeys};
use crate::bench::{self, Method, Params, Rate};
use crate::data::Item;
use crate::journal::Journal;
use crate::label::{self, Answer, Run};

/// The per-item outcome the paired comparison is made on: EM_C for NQ-Swap, the
/// in-context city named for world capitals, the answer class more probable for MemoTrap.
pub(super) fn headline(b: Benchmark) -> &'static str {
    match b {
        Benchmark::Nqswap => "EM_C",
        Benchmark::Memotrap => "accuracy",
        Benchmark::WorldCapital => "in-context city named",
    }
}

/// One test item's run as the paired comparisons need it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct Outcome {
    /// The headline outcome (see [`headline`]).
    pub hit: bool,
    /// The teacher-forced log-probabilities of the prior and the context answer.
    pub logp: (f32, f32),
}

fn hit(b: Benchmark, it: &Item, run: &Run) -> bool {
    match b {
        Benchmark::Nqswap => {
            bench::exact_match(label::answer_span(&run.greedy), &it.context_names())
        }
        Benchmark::Memotrap => run.tf_winner == Answer::Context,
        Benchmark::WorldCapital => run.greedy_answer == Answer::Context,
    }
}

/// A method's outcomes on every test item, read back from the journal where its test runs were
/// saved: with their contexts, or (`closed`) the known facts' closed-book runs that retention
/// is measured on. None when the journal lacks any of them.
pub(super) fn test_outcomes(
    journal: &mut Option<Journal<Run>>,
    keys: &PartKeys,
    (method, label, params): (Method, &str, Option<&Params>),
    (test, closed): (&[Item], bool),
    b: Benchmark,
) -> Option<Vec<Outcome>> {
    let mut part = scoped_part(journal, keys)?;
    let legacy = bench::eval_scope(true, method, label);
    let scope = match params {
        Some(p) => bench::setting_scope(true, method, p),
        None => legacy.clone(),
    };
    let mut eval = part.sub_renamed(&scope, &legacy);
    let items = eval.sub(bench::RunSet::of_closed(closed).scope());
    test.iter()
        .enumerate()
        .map(|(i, it)| {
            let run = items.get(!closed, i, &it.id)?;
            Some(Outcome {
                hit: hit(b, it, run),
                logp: (run.logp_prior, run.logp_context),
            })
        })
        .collect()
}

/// The mean per-item difference from the unsteered method on the same test items, with a
/// bootstrap CI over items; n = 0 (shown as n/a) when either side's runs are missing.
pub(super) fn paired_delta(base: Option<&[Outcome]>, other: Option<&[Outcome]>) -> Rate {
    per_item(base, other, |b, o| o.hit as u8 as f64 - b.hit as u8 as f64)
}

/// The share of test items whose run differs from the unsteered one at all (either
/// teacher-forced log-probability not bit-identical), with a bootstrap CI over items. For a
/// gated method this is how often its gate fired; n = 0 when either side's runs are missing.
pub(super) fn changed_share(base: Option<&[Outcome]>, other: Option<&[Outcome]>) -> Rate {
    per_item(base, other, |b, o| (b.logp != o.logp) as u8 as f64)
}

/// The mean of `f` over items paired by position, with a bootstrap CI over items.
fn per_item(
    base: Option<&[Outcome]>,
    other: Option<&[Outcome]>,
    f: impl Fn(&Outcome, &Outcome) -> f64,
) -> Rate {
    let (Some(b), Some(o)) = (base, other) else {
        return Rate::default();
    };
    if b.len() != o.len() || b.is_empty() {
        return Rate::default();
    }
    let d: Vec<f64> = b.iter().zip(o).map(|(b, o)| f(b, o)).collect();
    bench::mean_rate(&d, 7)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::public::scoped;
    use crate::public::tests::nq;

    #[test]
    fn paired_deltas_read_each_methods_test_runs_back_from_the_journal() {
        let dir = tempfile::tempdir().unwrap();
        let mut journal = Some(Journal::open(&dir.path().join("j.jsonl"), false).unwrap());
        let test: Vec<Item> = (1..=4).map(|i| nq(i, "c")).collect();
        // The log-probability stands in for the whole run: equal texts, equal runs.
        let run = |greedy: &str| Run {
            logp_prior: -1.0,
            logp_context: -(greedy.len() as f32),
            tf_winner: Answer::Prior,
            greedy: greedy.into(),
            greedy_answer: Answer::Neither,
        };
        // Saved as earlier versions saved them: part key, then `test METHOD [SETTING]`, then
        // `items` with their contexts, or `known` closed-book; read back as a legacy part.
        let mut save_runs = |key: &str, (m, chosen): (Method, &str), closed, greedy: &[&str]| {
            let mut part = scoped(&mut journal, key).unwrap();
            let mut eval = part.sub(&bench::eval_scope(true, m, chosen));
            let items = eval.sub(bench::RunSet::of_closed(closed).scope());
            let runs: Vec<(String, Run)> = greedy
                .iter()
                .enumerate()
                .map(|(i, g)| (label::saved_key(&items, &test[i], !closed, i), run(g)))
                .collect();
            items.journal.record(runs).unwrap();
        };
        let mut save = |key: &str, method, greedy: &[&str]| save_runs(key, method, false, greedy);
        let (none, cad) = ((Method::None, "none"), (Method::Cad, "beta=1"));
        // EM_C per item: none 1,0,0,0; cad 1,1,1,0 (the answer is cut at its first line).
        save("k-none", none, &[" new1", "old2", "x", "old4"]);
        save("k-cad", cad, &[" New1.", "new2\nmore", "the new3", "new"]);
        // A gated method that changes one run of four, and none of its EM_C.
        let gated = (Method::SteerGated, "alpha=1");
        save("k-gated", gated, &[" new1", "old22", "x", "old4"]);
        // Closed-book on the first two items, where the gated method changes one run.
        save_runs("k-none", none, true, &["old1", "old2"]);
        save_runs("k-gated", gated, true, &["old1", "old22"]);
        let mut outcomes = |key: &str, (m, label): (Method, &str), items: (&[Item], bool)| {
            let keys = PartKeys {
                new: format!("new {key}"),
                legacy: key.into(),
            };
            test_outcomes(
                &mut journal,
                &keys,
                (m, label, None),
                items,
                Benchmark::Nqswap,
            )
        };
        let b = outcomes("k-none", none, (&test, false)).unwrap();
        let c = outcomes("k-cad", cad, (&test, false)).unwrap();
        let hits = |o: &[Outcome]| o.iter().map(|o| o.hit).collect::<Vec<_>>();
        assert_eq!(hits(&b), [true, false, false, false]);
        assert_eq!(hits(&c), [true, true, true, false]);
        let d = paired_delta(Some(&b), Some(&c));
        assert_eq!((d.value, d.n), (0.5, 4));
        assert!(d.ci_low <= 0.5 && d.ci_high >= 0.5 && d.ci_low >= 0.0);
        assert_eq!(changed_share(Some(&b), Some(&c)).value, 1.0);
        assert_eq!(changed_share(Some(&b), Some(&b)).value, 0.0);
        // The gated method changed one run of four, and none of its EM_C.
        let g = outcomes("k-gated", gated, (&test, false)).unwrap();
        assert_eq!(paired_delta(Some(&b), Some(&g)).value, 0.0);
        let s = changed_share(Some(&b), Some(&g));
        assert_eq!((s.value, s.n), (0.25, 4));
        let known = &test[..2];
        let bk = outcomes("k-none", none, (known, true)).unwrap();
        let gk = outcomes("k-gated", gated, (known, true)).unwrap();
        let s = changed_share(Some(&bk), Some(&gk));
        assert_eq!((s.value, s.n), (0.5, 2));
        assert!(outcomes("k-cad", cad, (known, true)).is_none());
        // Another setting's runs are not these; a missing run or method gives n/a.
        assert!(outcomes("k-cad", (Method::Cad, "beta=2"), (&test, false)).is_none());
        assert!(outcomes("k-cad", cad, (&test[..3], false)).is_some());
        let extra: Vec<Item> = (1..=5).map(|i| nq(i, "c")).collect();
        assert!(outcomes("k-cad", cad, (&extra, false)).is_none());
        assert_eq!(paired_delta(None, Some(&c)).n, 0);
        assert_eq!(paired_delta(Some(&b), Some(&c[..3])).n, 0);
        assert_eq!(changed_share(None, Some(&c)).n, 0);
    }

    #[test]
    fn runs_are_found_by_their_settings_not_their_labels() {
        let dir = tempfile::tempdir().unwrap();
        let mut journal = Some(Journal::open(&dir.path().join("j.jsonl"), false).unwrap());
        let test: Vec<Item> = (1..=3).map(|i| nq(i, "c")).collect();
        let keys = PartKeys {
            new: "{\"version\":2}".into(),
            legacy: "old key".into(),
        };
        let beta = |b| Params::Cad { beta: b };
        // Saved as an evaluation now saves them: under the setting's key, not its label.
        {
            let mut part = scoped_part(&mut journal, &keys).unwrap();
            let scope = bench::setting_scope(true, Method::Cad, &beta(1.0));
            let mut eval = part.sub_renamed(&scope, "test cad beta=1");
            let items = eval.sub(bench::RunSet::Items.scope());
            let runs: Vec<(String, Run)> = test
                .iter()
                .enumerate()
                .map(|(i, it)| {
                    (
                        label::saved_key(&items, it, true, i),
                        nq_run(&format!(" new{}", i + 1)),
                    )
                })
                .collect();
            items.journal.record(runs).unwrap();
        }
        let mut read = |label: &str, p: &Params| {
            let chosen = (Method::Cad, label, Some(p));
            test_outcomes(
                &mut journal,
                &keys,
                chosen,
                (&test, false),
                Benchmark::Nqswap,
            )
        };
        // A reworded label finds the same runs; another strength finds none.
        let o = read("CAD at beta 1", &beta(1.0)).unwrap();
        assert_eq!(o.iter().filter(|o| o.hit).count(), 3);
        assert!(read("beta=1", &beta(2.0)).is_none());
        // The key is the setting as JSON, with its method.
        assert_eq!(
            bench::setting_key(Method::Cad, &beta(0.5)),
            r#"{"method":"cad","kind":"cad","beta":0.5}"#
        );
        assert_ne!(
            bench::setting_scope(true, Method::Cad, &beta(1.0)),
            bench::setting_scope(false, Method::Cad, &beta(1.0))
        );
    }

    fn nq_run(greedy: &str) -> Run {
        Run {
            logp_prior: -1.0,
            logp_context: -0.5,
            tf_winner: Answer::Context,
            greedy: greedy.into(),
            greedy_answer: Answer::Neither,
        }
    }
}
