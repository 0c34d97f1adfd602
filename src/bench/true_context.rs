//! The cost on contexts that agree with memory: a method's chosen setting measured on the test
//! items' true-context twins (the context rewritten to state the true fact).

use super::{
    evaluate_with, grid, opts, EvalItems, Event, IrrelevantSet, MethodResult, OnEvent, Parts, Rate,
    Resources,
};
use crate::data::Item;
use crate::error::{Error, Result};
use crate::journal::Scoped;
use crate::label::Run;
use crate::model::Model;

/// A method's chosen setting on gold contexts, which agree with memory: the share of `twins`
/// whose greedy answer names the true answer. With a journal, its runs are saved under the
/// setting's scope there and reused when found.
pub fn gold_rate(
    model: &Model,
    r: &MethodResult,
    twins: &[Item],
    split: &Parts,
    res: &Resources,
    mut journal: Option<Scoped<Run>>,
    on: &mut OnEvent,
) -> Result<Rate> {
    let settings = grid(model, r.method, res)?;
    let s = settings
        .iter()
        .find(|s| s.label == r.chosen)
        .ok_or_else(|| Error::Invalid(format!("setting `{}` is not in the grid", r.chosen)))?;
    on(Event::Begin {
        what: "true ctx",
        items: twins.len(),
    });
    let none = IrrelevantSet::default();
    let sets = EvalItems {
        items: twins,
        known: &[],
        irrelevant: &none,
    };
    let e = evaluate_with(
        model,
        s,
        &sets,
        opts(split.form, split.batch, res.max_new),
        journal
            .as_mut()
            .map(|j| j.sub(&super::setting_scope(true, s.method, &s.params)))
            .as_mut(),
        &mut |n| on(Event::Done(n)),
    )?;
    on(Event::Line(&format!(
        "true contexts {}: the true answer named {:.3} [{:.3}, {:.3}]",
        r.method.name(),
        e.adherence.value,
        e.adherence.ci_low,
        e.adherence.ci_high
    )));
    Ok(e.adherence)
}
