//! Robustness to contexts that do not answer the question: a method's answers to queries put
//! after a context about another subject, against the answers the unedited model gives to the
//! same queries closed-book (CUB's irrelevant context type, Hagström et al. 2025).

use super::metrics::rate;
use super::Rate;
use crate::data::Item;
use crate::error::Result;
use crate::journal::Scoped;
use crate::label::{self, Answer, LabelOptions, Run};
use crate::model::Model;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

/// The irrelevant-context items of one part of a split, each with the class (prior, context or
/// neither) of the unedited model's closed-book answer to its query.
#[derive(Clone, Debug, Default)]
pub struct IrrelevantSet {
    pub items: Vec<Item>,
    /// Per item: the closed-book answer's class, judged against the item's own answers (its
    /// prior and its distractor).
    pub closed: Vec<Answer>,
}

impl IrrelevantSet {
    /// `items` with their closed-book classes: each distinct closed-book query is run once,
    /// without intervention (saved to and reused from `journal`).
    pub fn new(
        model: &Model,
        items: Vec<Item>,
        opts: &LabelOptions,
        journal: Option<&mut Scoped<Run>>,
    ) -> Result<IrrelevantSet> {
        let key = |it: &Item| it.query(opts.form, false);
        let mut first: HashMap<String, usize> = HashMap::new();
        let mut queries: Vec<Item> = Vec::new();
        for it in &items {
            first.entry(key(it)).or_insert_with(|| {
                queries.push(it.clone());
                queries.len() - 1
            });
        }
        let spec = crate::Spec::new();
        let runs = label::runs(model, &queries, opts, &spec, false, journal, &mut |_| {})?;
        let closed = items
            .iter()
            .map(|it| {
                let greedy = &runs[first[&key(it)]].greedy;
                label::judge(it, label::answer_span(greedy))
            })
            .collect();
        Ok(IrrelevantSet { items, closed })
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

/// One distractor kind's share of a method's results.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct KindEval {
    pub n: usize,
    pub unchanged: f64,
    pub distractor_named: f64,
}

/// A method on irrelevant contexts.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Irrelevant {
    /// The greedy answer's class (prior, context or neither) is the one the unedited model's
    /// closed-book answer has.
    pub unchanged: Rate,
    /// The greedy answer names the distractor (the object the context names).
    pub distractor_named: Rate,
    pub n: usize,
    /// Per distractor kind (`same_relation_true`, …; `unspecified` for items without one).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub per_kind: BTreeMap<String, KindEval>,
    /// Per item, in order: whether it is unchanged, for paired comparisons between methods.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unchanged_items: Vec<bool>,
}

/// Score a method's with-context `runs` of `set`'s items.
pub(super) fn score(set: &IrrelevantSet, runs: &[Run]) -> Irrelevant {
    let unchanged: Vec<bool> = runs
        .iter()
        .zip(&set.closed)
        .map(|(r, c)| r.greedy_answer == *c)
        .collect();
    let named: Vec<bool> = runs
        .iter()
        .map(|r| r.greedy_answer == Answer::Context)
        .collect();
    let mut per: BTreeMap<String, Vec<(bool, bool)>> = BTreeMap::new();
    for ((it, u), d) in set.items.iter().zip(&unchanged).zip(&named) {
        let kind = it.distractor.map_or("unspecified", |k| k.name());
        per.entry(kind.to_string()).or_default().push((*u, *d));
    }
    let per_kind = per
        .into_iter()
        .map(|(k, v)| {
            let n = v.len() as f64;
            let count = |f: fn(&(bool, bool)) -> bool| v.iter().filter(|x| f(x)).count() as f64;
            let eval = KindEval {
                n: v.len(),
                unchanged: count(|x| x.0) / n,
                distractor_named: count(|x| x.1) / n,
            };
            (k, eval)
        })
        .collect();
    Irrelevant {
        unchanged: rate(&unchanged, 7),
        distractor_named: rate(&named, 8),
        n: runs.len(),
        per_kind,
        unchanged_items: unchanged,
    }
}

/// The irrelevant items a part of a split is measured on: those the data gives, else built from
/// the part's own conflicts (`kinds` of [`crate::data::Distractor`]).
pub(super) fn items_for(
    given: Vec<Item>,
    conflicts: &[Item],
    kinds: &[crate::data::Distractor],
    data_has_them: bool,
) -> Vec<Item> {
    if data_has_them {
        given
    } else {
        crate::data::irrelevant_for(conflicts, kinds)
    }
}
