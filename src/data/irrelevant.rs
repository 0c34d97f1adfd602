//! Contexts that do not answer the question: a query preceded by a context about **another**
//! subject (CUB's irrelevant context type, Hagström et al. 2025). A method that makes a model
//! honour its context should leave such a query as the model answers it closed-book.
//!
//! Each item keeps the query, subject and prior of a conflict; its `context_answer` is the
//! object the context names (the distractor), so judging its greedy answer says whether the
//! model copied the distractor.

use super::{mentions, Item, Variant};
use serde::{Deserialize, Serialize};

crate::choice_enum! {
/// What an irrelevant context says, and about what.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Distractor {
    /// Another subject's true fact of the same relation ("The Sydney Opera House is in Sydney.").
    SameRelationTrue = "same_relation_true",
    /// Another subject's counterfactual of the same relation.
    SameRelationFalse = "same_relation_false",
    /// A true fact of another relation.
    OtherRelation = "other_relation",
    /// A paragraph of three such sentences: same relation true, other relation, same relation
    /// false, each about a different subject.
    Paragraph = "paragraph",
}
}

impl Distractor {
    /// Every kind, in the order items are built.
    pub const ALL: [Distractor; 4] = [
        Distractor::SameRelationTrue,
        Distractor::SameRelationFalse,
        Distractor::OtherRelation,
        Distractor::Paragraph,
    ];

    /// The name the data files write.
    pub fn name(self) -> &'static str {
        crate::choice::Choice::name(self)
    }
}

/// One sentence about another item's subject, and the object (with aliases) it names.
#[derive(Clone)]
struct Sentence<'a> {
    text: String,
    names: Vec<&'a str>,
    from: &'a Item,
}

/// The sentence of `j` stating its true fact (`truth`) or its counterfactual.
fn sentence(j: &Item, truth: bool) -> Option<Sentence<'_>> {
    if truth {
        let text = j.true_twin()?.context;
        Some(Sentence {
            text,
            names: j.prior_names(),
            from: j,
        })
    } else {
        Some(Sentence {
            text: j.context.clone(),
            names: j.context_names(),
            from: j,
        })
    }
}

/// Whether `s` may stand before `q`'s query: about another subject, naming none of `q`'s
/// answers, and with a distractor that no prior name contains or is contained in.
fn fits(q: &Item, s: &Sentence) -> bool {
    let clash = |a: &str, b: &str| mentions(a, b) || mentions(b, a);
    !s.from.subject.eq_ignore_ascii_case(&q.subject)
        && !mentions(&s.text, &q.subject)
        && !q.prior_names().iter().any(|p| mentions(&s.text, p))
        && !q
            .prior_names()
            .iter()
            .any(|p| s.names.iter().any(|d| clash(p, d)))
}

/// The sentences of `pool` that fit `q`, in an order set by a hash of `q`'s id and `salt`.
fn ranked<'a>(q: &Item, pool: &[&'a Item], truth: bool, salt: &str) -> Vec<Sentence<'a>> {
    let mut v: Vec<(u64, Sentence)> = pool
        .iter()
        .filter_map(|j| sentence(j, truth))
        .filter(|s| fits(q, s))
        .map(|s| {
            let h = super::stable_hash(&format!("{}|{}|{salt}", q.id, s.from.id));
            (h, s)
        })
        .collect();
    v.sort_by_key(|(h, s)| (*h, s.from.id.clone()));
    v.into_iter().map(|(_, s)| s).collect()
}

/// The item for `q` with `context` before its query, naming `names` (the first the distractor).
fn item(q: &Item, kind: Distractor, context: String, names: &[&str]) -> Item {
    Item {
        id: format!("{}:irrelevant:{}", q.id, kind.name()),
        context,
        context_answer: names[0].to_string(),
        context_aliases: names[1..].iter().map(|s| s.to_string()).collect(),
        variant: Some(Variant::Irrelevant),
        distractor: Some(kind),
        ..q.clone()
    }
}

/// One irrelevant item of `kind` for `q`, its sentences taken from `same` (other items of its
/// relation) and `other` (items of other relations); None when none fits.
fn one(q: &Item, kind: Distractor, same: &[&Item], other: &[&Item]) -> Option<Item> {
    match kind {
        Distractor::SameRelationTrue | Distractor::SameRelationFalse => {
            let truth = kind == Distractor::SameRelationTrue;
            let s = ranked(q, same, truth, kind.name()).into_iter().next()?;
            Some(item(q, kind, s.text, &s.names))
        }
        Distractor::OtherRelation => {
            let s = ranked(q, other, true, kind.name()).into_iter().next()?;
            Some(item(q, kind, s.text, &s.names))
        }
        Distractor::Paragraph => {
            let a = ranked(q, same, true, "paragraph a").into_iter().next()?;
            let b = ranked(q, other, true, "paragraph b").into_iter().next()?;
            let c = ranked(q, same, false, "paragraph c")
                .into_iter()
                .find(|c| c.from.subject != a.from.subject)?;
            let names: Vec<&str> = [&a, &b, &c]
                .iter()
                .flat_map(|s| s.names.iter().copied())
                .collect();
            let text = format!("{} {} {}", a.text, b.text, c.text);
            Some(item(q, kind, text, &names))
        }
    }
}

/// Irrelevant items for `conflicts`: for each conflict with a context and each of `kinds`, its
/// query after a context about another subject, drawn from the other conflicts of the same
/// split (items of one split only meet each other's sentences). Deterministic: the same
/// conflicts give the same items. A kind with no fitting sentence is skipped for that query.
pub fn irrelevant_for(conflicts: &[Item], kinds: &[Distractor]) -> Vec<Item> {
    let usable: Vec<&Item> = conflicts
        .iter()
        .filter(|it| !it.context.is_empty() && it.variant != Some(Variant::Irrelevant))
        .collect();
    let mut out = Vec::new();
    for q in &usable {
        let peers = usable.iter().filter(|j| j.split == q.split);
        let (same, other): (Vec<&Item>, Vec<&Item>) = peers.partition(|j| j.relation == q.relation);
        for kind in kinds {
            out.extend(one(q, *kind, &same, &other));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conflict(id: &str, rel: &str, subject: &str, prior: &str, ctx_answer: &str) -> Item {
        Item {
            id: id.into(),
            relation: rel.into(),
            subject: subject.into(),
            question: format!("Where is {subject}?"),
            prompt: format!("{subject} is in"),
            context: format!("{subject} is in {ctx_answer}."),
            prior_answer: prior.into(),
            context_answer: ctx_answer.into(),
            prior_aliases: vec![],
            context_aliases: vec![],
            split: Some(super::super::Split::Test),
            variant: Some(Variant::Counterfactual),
            distractor: None,
            true_context: None,
            prefix: String::new(),
            exposure: None,
        }
    }

    #[test]
    fn contexts_are_about_other_subjects_and_never_name_the_answer() {
        let items = vec![
            conflict("a", "landmark", "the Eiffel Tower", "Paris", "Rome"),
            conflict("b", "landmark", "the Opera House", "Sydney", "Auckland"),
            conflict("c", "landmark", "Big Ben", "London", "Paris"),
            conflict("d", "capital", "Peru", "Lima", "Quito"),
        ];
        let out = irrelevant_for(&items, &Distractor::ALL);
        let of_a: Vec<&Item> = out.iter().filter(|i| i.id.starts_with("a:")).collect();
        assert_eq!(of_a.len(), 4, "{of_a:#?}");
        for it in &out {
            let q = items
                .iter()
                .find(|q| it.id.starts_with(&format!("{}:", q.id)));
            let q = q.unwrap();
            assert_eq!((&it.prompt, &it.subject), (&q.prompt, &q.subject));
            assert!(!mentions(&it.context, &q.subject), "{it:?}");
            assert!(!mentions(&it.context, &q.prior_answer), "{it:?}");
            assert!(mentions(&it.context, &it.context_answer), "{it:?}");
            assert_eq!(it.variant, Some(Variant::Irrelevant));
        }
        // Big Ben's counterfactual names Paris: never a distractor for the Eiffel Tower.
        let false_a = of_a
            .iter()
            .find(|i| i.distractor == Some(Distractor::SameRelationFalse))
            .unwrap();
        assert_eq!(false_a.context, "the Opera House is in Auckland.");
        let para = of_a
            .iter()
            .find(|i| i.distractor == Some(Distractor::Paragraph))
            .unwrap();
        assert_eq!(para.context.matches('.').count(), 3, "{para:?}");
        assert_eq!(out, irrelevant_for(&items, &Distractor::ALL));
    }

    #[test]
    fn splits_do_not_mix_and_a_lone_relation_has_no_other_relation_kind() {
        let mut items = vec![
            conflict("a", "landmark", "the Eiffel Tower", "Paris", "Rome"),
            conflict("b", "landmark", "the Opera House", "Sydney", "Auckland"),
        ];
        items[1].split = Some(super::super::Split::Train);
        assert!(irrelevant_for(&items, &Distractor::ALL).is_empty());
        items[1].split = items[0].split;
        let kinds: Vec<_> = irrelevant_for(&items, &Distractor::ALL)
            .iter()
            .map(|i| i.distractor.unwrap())
            .collect();
        assert_eq!(
            kinds,
            [
                Distractor::SameRelationTrue,
                Distractor::SameRelationFalse,
                Distractor::SameRelationTrue,
                Distractor::SameRelationFalse
            ]
        );
    }
}
