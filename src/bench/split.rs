//! The items one benchmark run works on: conflicts split into dev and test, the facts the model
//! knows in each part, and each part's irrelevant contexts with the model's own closed-book
//! answers to their queries.

use super::irrelevant::{self, Irrelevant, IrrelevantSet};
use super::{
    eval_scope, evaluate_with, opts, perplexity, setting_scope, Eval, EvalItems, Event, OnEvent,
    Resources, Setting, NEUTRAL_TEXT,
};
use crate::data::{Distractor, Form, Item, Variant};
use crate::error::{Error, Result};
use crate::journal::Scoped;
use crate::label::{self, Answer, LabelOptions, Run};
use crate::model::Model;

/// Split items into (dev, test): their own split field, else half and half by subject
/// ([`crate::data::SubjectSplit::halves`]). With split fields, an item whose field is neither
/// `dev` nor `test` is in neither.
pub fn dev_test(items: &[Item]) -> (Vec<Item>, Vec<Item>) {
    let has = items.iter().any(|i| i.split.is_some());
    use crate::data::Split as S;
    let halves = crate::data::SubjectSplit::halves();
    let part_of = |i: &Item| match has {
        true => i.split,
        false => Some(halves.of(&i.subject)),
    };
    let take = |name: S| -> Vec<Item> {
        items
            .iter()
            .filter(|i| part_of(i) == Some(name))
            .cloned()
            .collect()
    };
    (take(S::Dev), take(S::Test))
}

/// The items a benchmark measures on: as given (`test`: dev chooses, test measures), or dev's
/// alone (`dev`), their split fields set by halving dev's subjects anew
/// ([`crate::data::SubjectSplit::within_dev`]), so that a method can be developed without
/// running test. `train` is refused: its items trained the probes and edits.
pub fn measured_on(items: Vec<Item>, split: crate::data::Split) -> Result<Vec<Item>> {
    use crate::data::Split as S;
    match split {
        S::Test => Ok(items),
        S::Dev => {
            let rule = crate::data::SubjectSplit::within_dev();
            let (dev, _) = dev_test(&items);
            Ok(dev
                .into_iter()
                .map(|mut i| {
                    i.split = Some(rule.of(&i.subject));
                    i
                })
                .collect())
        }
        S::Train => Err(Error::Invalid(
            "a benchmark measures on test (dev chooses) or within dev (test unseen); the train \
             split trained the probes and edits"
                .into(),
        )),
    }
}

/// Keep about `limit` items (whole subjects, until `limit` is reached), sampled with `seed`:
/// `bench conflict --limit` and `bench public --limit` alike.
pub fn sample_by_subject(mut items: Vec<Item>, limit: Option<usize>, seed: u64) -> Vec<Item> {
    let Some(n) = limit else {
        return items;
    };
    let mut subjects: Vec<String> = items.iter().map(|i| i.subject.clone()).collect();
    subjects.sort();
    subjects.dedup();
    let mut keys: Vec<(u64, String)> = subjects
        .into_iter()
        .map(|s| (crate::data::stable_hash(&format!("{seed}:{s}")), s))
        .collect();
    keys.sort();
    let mut keep = std::collections::HashSet::new();
    let mut count = 0;
    for (_, s) in keys {
        if count >= n {
            break;
        }
        count += items.iter().filter(|i| i.subject == s).count();
        keep.insert(s);
    }
    items.retain(|i| keep.contains(&i.subject));
    items
}

/// Known facts among `items`: those whose closed-book greedy answer is the prior.
pub fn known_items(
    model: &Model,
    items: &[Item],
    form: Form,
    batch: usize,
    journal: Option<&mut Scoped<Run>>,
) -> Result<Vec<Item>> {
    let mut opts = LabelOptions::new(form);
    opts.batch_size = batch;
    let spec = crate::Spec::new();
    let runs = label::runs(model, items, &opts, &spec, false, journal, &mut |_| {})?;
    Ok(items
        .iter()
        .zip(runs)
        .filter(|(_, r)| r.greedy_answer == Answer::Prior)
        .map(|(i, _)| i.clone())
        .collect())
}

/// How a split is made, and what it measures besides the conflicts.
#[derive(Clone, Debug)]
pub struct SplitOptions {
    pub form: Form,
    pub batch: usize,
    /// Greedy tokens per answer in the irrelevant-context passes (None: the form's default), as
    /// the methods' own runs get.
    pub max_new: Option<usize>,
    /// The irrelevant contexts built from each part's conflicts when the data has none of its
    /// own (variant `irrelevant`); empty: none are built. Test keeps every one.
    pub distractors: Vec<Distractor>,
    /// Dev keeps only one irrelevant item per query (every setting of a sweep is measured on
    /// them, so this bounds the sweep's cost where contexts are long); otherwise dev keeps every
    /// one, so the bar on them is measured on as many items as test's.
    pub dev_one_per_query: bool,
}

impl SplitOptions {
    /// Every kind of irrelevant context, the form's default answer budget.
    pub fn new(form: Form, batch: usize) -> SplitOptions {
        SplitOptions {
            form,
            batch,
            max_new: None,
            distractors: Distractor::ALL.to_vec(),
            dev_one_per_query: false,
        }
    }
}

/// The items one benchmark run works on: dev (strengths are chosen there) and test, each with
/// its known facts (closed-book greedy answer = prior) for measuring retention, and its
/// irrelevant contexts for measuring robustness.
pub struct Parts {
    pub dev: Vec<Item>,
    pub test: Vec<Item>,
    pub dev_known: Vec<Item>,
    pub test_known: Vec<Item>,
    pub dev_irrelevant: IrrelevantSet,
    pub test_irrelevant: IrrelevantSet,
    /// How `none` does on dev's irrelevant items (the share it leaves unchanged, and which):
    /// the baseline of the dev sweep's robustness bar. None without irrelevant items.
    pub irrelevant_base: Option<Irrelevant>,
    pub form: Form,
    /// The batch size of its runs, and of every evaluation on it.
    pub batch: usize,
    /// Perplexity of the neutral text without intervention.
    pub base_ppl: f64,
}

/// How `none` does on dev's irrelevant items (None without them): the baseline of the dev
/// sweep's robustness bar.
fn none_on_irrelevant(
    model: &Model,
    dev_irrelevant: &IrrelevantSet,
    lo: &label::LabelOptions,
    mut j: Option<Scoped<Run>>,
) -> Result<Option<Irrelevant>> {
    if dev_irrelevant.is_empty() {
        return Ok(None);
    }
    let spec = crate::Spec::new();
    let items = &dev_irrelevant.items;
    let runs = label::runs(model, items, lo, &spec, true, j.as_mut(), &mut |_| {})?;
    Ok(Some(irrelevant::score(dev_irrelevant, &runs)))
}

/// Where [`Parts::new`] saves its runs, under the journal scope it is given.
const KNOWN_DEV: &str = "known dev";
const KNOWN_TEST: &str = "known test";
const IRRELEVANT_CLOSED_DEV: &str = "irrelevant closed dev";
const IRRELEVANT_CLOSED_TEST: &str = "irrelevant closed test";
const IRRELEVANT_NONE_DEV: &str = "irrelevant none dev";

/// The parts of `items`: (conflicts, irrelevant items) of dev and of test, the irrelevant ones
/// built from the conflicts where the data has none.
type ItemPairs = [(Vec<Item>, Vec<Item>); 2];

fn parts(items: &[Item], kinds: &[Distractor], dev_one_per_query: bool) -> ItemPairs {
    let is_irr = |i: &Item| i.variant == Some(Variant::Irrelevant);
    let given = items.iter().any(is_irr);
    let (dev, test) = dev_test(items);
    let [mut dev, test] = [dev, test].map(|part| {
        let (irr, conflicts): (Vec<Item>, Vec<Item>) = part.into_iter().partition(is_irr);
        let irr = irrelevant::items_for(irr, &conflicts, kinds, given);
        (conflicts, irr)
    });
    if dev_one_per_query {
        dev.1 = one_per_query(std::mem::take(&mut dev.1));
    }
    [dev, test]
}

/// One irrelevant item per query (chosen by a hash of the query), in their order.
fn one_per_query(items: Vec<Item>) -> Vec<Item> {
    let query = |it: &Item| format!("{}\u{1f}{}\u{1f}{}", it.subject, it.prompt, it.question);
    let mut groups: std::collections::BTreeMap<String, Vec<usize>> = Default::default();
    for (i, it) in items.iter().enumerate() {
        groups.entry(query(it)).or_default().push(i);
    }
    let keep: std::collections::HashSet<usize> = groups
        .iter()
        .map(|(q, ix)| ix[(crate::data::stable_hash(q) % ix.len() as u64) as usize])
        .collect();
    items
        .into_iter()
        .enumerate()
        .filter(|(i, _)| keep.contains(i))
        .map(|(_, it)| it)
        .collect()
}

/// `scope` under `journal`, when there is one.
fn sub<'a>(journal: &'a mut Option<&mut Scoped<Run>>, scope: &str) -> Option<Scoped<'a, Run>> {
    journal.as_deref_mut().map(|j| j.sub(scope))
}

impl Parts {
    /// Whether `journal` holds every run [`Parts::new`] makes on `items`, so that it would run
    /// nothing.
    pub fn is_saved(items: &[Item], o: &SplitOptions, journal: &mut Scoped<Run>) -> bool {
        let [(dev, dev_irr), (test, test_irr)] = parts(items, &o.distractors, o.dev_one_per_query);
        let closed = |irr: &[Item]| -> Vec<Item> {
            let mut seen = std::collections::HashSet::new();
            irr.iter()
                .filter(|it| seen.insert(it.query(o.form, false)))
                .cloned()
                .collect()
        };
        label::all_saved(&journal.sub(KNOWN_DEV), &dev, false)
            && label::all_saved(&journal.sub(KNOWN_TEST), &test, false)
            && label::all_saved(
                &journal.sub(IRRELEVANT_CLOSED_DEV),
                &closed(&dev_irr),
                false,
            )
            && label::all_saved(
                &journal.sub(IRRELEVANT_CLOSED_TEST),
                &closed(&test_irr),
                false,
            )
            && label::all_saved(&journal.sub(IRRELEVANT_NONE_DEV), &dev_irr, true)
    }

    /// Split `items` (see [`dev_test`]), find the known facts of each part, and the closed-book
    /// answers to the irrelevant items' queries (saved to and reused from `journal` when one is
    /// given).
    pub fn new(
        model: &Model,
        items: &[Item],
        o: &SplitOptions,
        mut journal: Option<&mut Scoped<Run>>,
    ) -> Result<Parts> {
        let [(dev, dev_irr), (test, test_irr)] = parts(items, &o.distractors, o.dev_one_per_query);
        if dev.is_empty() || test.is_empty() {
            return Err(Error::Invalid(format!(
                "need dev and test items; got {} dev and {} test (the split goes by subject: \
                 use more items, or another seed)",
                dev.len(),
                test.len()
            )));
        }
        let (form, batch) = (o.form, o.batch);
        let dev_known = known_items(
            model,
            &dev,
            form,
            batch,
            sub(&mut journal, KNOWN_DEV).as_mut(),
        )?;
        let test_known = known_items(
            model,
            &test,
            form,
            batch,
            sub(&mut journal, KNOWN_TEST).as_mut(),
        )?;
        let lo = opts(form, batch, o.max_new);
        let dev_irrelevant = IrrelevantSet::new(
            model,
            dev_irr,
            &lo,
            sub(&mut journal, IRRELEVANT_CLOSED_DEV).as_mut(),
        )?;
        let test_irrelevant = IrrelevantSet::new(
            model,
            test_irr,
            &lo,
            sub(&mut journal, IRRELEVANT_CLOSED_TEST).as_mut(),
        )?;
        let j = sub(&mut journal, IRRELEVANT_NONE_DEV);
        let irrelevant_base = none_on_irrelevant(model, &dev_irrelevant, &lo, j)?;
        Ok(Parts {
            dev_known,
            test_known,
            dev,
            test,
            dev_irrelevant,
            test_irrelevant,
            irrelevant_base,
            form,
            batch,
            base_ppl: perplexity(model, NEUTRAL_TEXT, &crate::Spec::new())?,
        })
    }

    /// "N dev (K known, I irrelevant), M test (J known, H irrelevant)" and `none`'s share of dev's
    /// irrelevant answers left unchanged, for the log.
    pub fn counts(&self) -> String {
        let irr = |s: &IrrelevantSet| match s.is_empty() {
            true => String::new(),
            false => format!(", {} irrelevant", s.items.len()),
        };
        let base = self.irrelevant_base.as_ref().map_or(String::new(), |b| {
            format!(
                "; none leaves {:.1}% of dev's irrelevant-context answers as they are closed-book",
                100.0 * b.unchanged.value
            )
        });
        format!(
            "{} dev ({} known{}), {} test ({} known{}){base}",
            self.dev.len(),
            self.dev_known.len(),
            irr(&self.dev_irrelevant),
            self.test.len(),
            self.test_known.len(),
            irr(&self.test_irrelevant)
        )
    }

    /// Measure `s` on test (else dev), its perplexity relative to no intervention.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn measure(
        &self,
        model: &Model,
        s: &Setting,
        test: bool,
        batch: usize,
        res: &Resources,
        journal: Option<&mut Scoped<Run>>,
        on: &mut OnEvent,
    ) -> Result<Eval> {
        let sets = match test {
            true => EvalItems {
                items: &self.test,
                known: &self.test_known,
                irrelevant: &self.test_irrelevant,
            },
            false => EvalItems {
                items: &self.dev,
                known: &self.dev_known,
                irrelevant: &self.dev_irrelevant,
            },
        };
        let what = eval_scope(test, s.method, &s.label);
        on(Event::Begin {
            what: &what,
            items: sets.len(),
        });
        let o = opts(self.form, batch, res.max_new);
        let scope = setting_scope(test, s.method, &s.params);
        let mut journal = journal.map(|j| j.sub_renamed(&scope, &what));
        let mut e = evaluate_with(model, s, &sets, o, journal.as_mut(), &mut |n| {
            on(Event::Done(n))
        })?;
        e.perplexity_ratio = e.perplexity / self.base_ppl;
        Ok(e)
    }
}

#[cfg(test)]
mod tests {
    use super::sample_by_subject;
    use crate::data::Item;

    fn item(subject: &str, k: usize) -> Item {
        serde_json::from_value(serde_json::json!({
            "id": format!("{subject}:{k}"), "relation": "r", "subject": subject,
            "question": "q", "prompt": "p", "context": "c",
            "prior_answer": "a", "context_answer": "b"
        }))
        .unwrap()
    }

    /// Whole subjects until the limit is reached, the same ones for the same seed.
    #[test]
    fn a_sample_keeps_subjects_whole_and_is_seeded() {
        let items: Vec<Item> = (0..20)
            .flat_map(|s| (0..3).map(move |k| item(&format!("s{s}"), k)))
            .collect();
        assert_eq!(sample_by_subject(items.clone(), None, 0).len(), 60);
        let a = sample_by_subject(items.clone(), Some(10), 0);
        assert_eq!(a.len(), 12, "four whole subjects of three items");
        for it in &a {
            assert_eq!(a.iter().filter(|x| x.subject == it.subject).count(), 3);
        }
        assert_eq!(a, sample_by_subject(items.clone(), Some(10), 0));
        assert_ne!(a, sample_by_subject(items, Some(10), 1));
    }
}
