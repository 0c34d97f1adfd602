//! Behaviour labels: what does the model actually do with each conflict?
//!
//! Each item runs twice, closed-book and with its context before the query. Each run records:
//! - the teacher-forced log-probability of the full prior answer and of the full context answer;
//! - the greedy answer.
//!
//! From these come `known` (the closed-book answer is the prior) and the label:
//! `follows_context`, `follows_prior` or `neither`, taken from which answer the greedy text
//! names first.

use crate::data::{Form, Item};
use crate::error::{Error, Result};
use crate::generate::{greedy_and_score, Stop};
use crate::journal::Scoped;
use crate::model::Model;
use crate::model::Plan;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Which answer a piece of text gives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Answer {
    Prior,
    Context,
    Neither,
}

/// One run (closed-book or with context) of one item.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Run {
    pub logp_prior: f32,
    pub logp_context: f32,
    /// The answer with the higher teacher-forced log-probability.
    pub tf_winner: Answer,
    pub greedy: String,
    /// The answer the greedy text names first.
    pub greedy_answer: Answer,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Hash, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Label {
    FollowsContext,
    FollowsPrior,
    Neither,
}

impl Label {
    pub fn name(self) -> &'static str {
        match self {
            Label::FollowsContext => "follows_context",
            Label::FollowsPrior => "follows_prior",
            Label::Neither => "neither",
        }
    }
}

/// The labels of one item.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ItemLabel {
    pub id: String,
    pub relation: String,
    pub subject: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split: Option<crate::data::Split>,
    pub form: Form,
    pub closed: Run,
    pub context: Run,
    /// The closed-book greedy answer is the prior.
    pub known: bool,
    pub label: Label,
}

pub use crate::data::normalize;

/// Every place in `text` (normalized) where one of `names` occurs as whole words, as byte spans.
fn mentions(text: &str, names: &[&str]) -> Vec<(usize, usize)> {
    names
        .iter()
        .map(|n| normalize(n))
        .filter(|n| !n.trim().is_empty())
        .flat_map(|n| {
            text.match_indices(n.as_str())
                .map(|(i, m)| (i, i + m.len()))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The earliest of `spans` that is not part of a longer span in `other`: a name inside the
/// other answer's name ("William" in "William Shakespeare") is no mention of its own.
fn first_whole(spans: &[(usize, usize)], other: &[(usize, usize)]) -> Option<usize> {
    let inside = |a: &(usize, usize)| {
        other
            .iter()
            .any(|b| b.0 <= a.0 && a.1 <= b.1 && b.1 - b.0 > a.1 - a.0)
    };
    spans.iter().filter(|s| !inside(s)).map(|s| s.0).min()
}

/// Which of the item's answers `text` gives first, matching whole answers: mentions of the
/// subject are removed first, so "South Africa" does not count as answering "Africa", and a
/// name inside the other answer's longer name does not count either.
pub fn judge(item: &Item, text: &str) -> Answer {
    let subject = normalize(&item.subject);
    let t = normalize(text).replace(subject.as_str(), " ");
    let (ps, cs) = (
        mentions(&t, &item.prior_names()),
        mentions(&t, &item.context_names()),
    );
    match (first_whole(&ps, &cs), first_whole(&cs, &ps)) {
        (Some(p), Some(c)) if p < c => Answer::Prior,
        (Some(_), Some(_)) => Answer::Context,
        (Some(_), None) => Answer::Prior,
        (None, Some(_)) => Answer::Context,
        (None, None) => Answer::Neither,
    }
}

/// The part of a greedy continuation that answers: up to the first line break after any text.
pub fn answer_span(text: &str) -> &str {
    let t = text.trim_start();
    t.split('\n').next().unwrap_or(t)
}

/// Settings of a labelling run.
#[derive(Clone, Debug)]
pub struct LabelOptions {
    pub form: Form,
    pub batch_size: usize,
    pub max_new: usize,
    /// Context-aware decoding for the with-context run (None: plain decoding).
    pub cad: Option<crate::generate::CadWeight>,
    /// Proxy-tuning for both runs, closed-book and with context (None: the model alone).
    pub proxy: Option<crate::proxy::Proxy>,
}

impl LabelOptions {
    pub fn new(form: Form) -> Self {
        LabelOptions {
            form,
            batch_size: 16,
            max_new: match form {
                Form::Completion => 8,
                Form::Chat => 24,
            },
            cad: None,
            proxy: None,
        }
    }
}

/// Token ids of an answer as it would follow the query.
pub fn answer_ids(model: &Model, form: Form, answer: &str) -> Result<Vec<u32>> {
    match form {
        Form::Completion => model.tokenizer.encode(&format!(" {answer}")),
        Form::Chat => model.tokenizer.encode(answer),
    }
}

/// Prompt token ids of an item, with or without its context.
/// An item's prompt that does not fit the model is an error naming the item.
pub fn query_ids(model: &Model, item: &Item, form: Form, with_context: bool) -> Result<Vec<u32>> {
    let ids = model.prompt_ids(&item.query(form, with_context), form == Form::Chat)?;
    let max = model.cfg().max_positions;
    // Room for the answer or a few generated tokens after the prompt.
    if ids.len() + 32 > max {
        return Err(Error::Invalid(format!(
            "item `{}`: its prompt is {} tokens, more than the model's {max} positions leave \
             room for (32 are kept for the answer)",
            item.id,
            ids.len()
        )));
    }
    Ok(ids)
}

/// Index, in the prompt's token ids (`encode_prompt(text)`, a BOS token included where the
/// model wants one), of the token where the last mention of `subject` in `text` ends, if any.
pub fn subject_last_token(model: &Model, text: &str, subject: &str) -> Result<Option<usize>> {
    let lower = text.to_lowercase();
    let Some(start) = lower.rfind(&subject.to_lowercase()) else {
        return Ok(None);
    };
    let end = start + subject.len();
    let offsets = model.tokenizer.prompt_offsets(text)?;
    Ok(offsets.iter().rposition(|(s, _)| *s < end))
}

/// [`subject_last_token`] of `item`'s subject in its prompt as `form` puts it, with or without
/// its context: where a gate trained with `--positions subject-last` reads.
pub fn subject_last_of(
    model: &Model,
    item: &Item,
    form: Form,
    with_context: bool,
) -> Result<Option<usize>> {
    let text = model.prompt_text(&item.query(form, with_context), form == Form::Chat)?;
    subject_last_token(model, &text, &item.subject)
}

/// The batch's greedy answers and candidate scores under the decoding `opts` asks for: plain,
/// context-aware (the with-context run only) or proxy-tuned.
fn decode(
    model: &Model,
    items: &[Item],
    opts: &LabelOptions,
    (prompts, cands): (&[Vec<u32>], &[Vec<Vec<u32>>]),
    spec: &crate::hooks::Spec,
    with_context: bool,
) -> Result<Vec<crate::generate::Scored>> {
    Ok(match (opts.cad, &opts.proxy) {
        (Some(_), Some(_)) => {
            return Err(crate::Error::Invalid(
                "context-aware decoding and proxy-tuning do not combine; use one".into(),
            ))
        }
        (None, Some(p)) => crate::proxy::greedy_and_score(
            model,
            p,
            prompts,
            cands,
            spec,
            Stop::line(opts.max_new),
        )?,
        (Some(weight), None) if with_context => {
            let closed: Vec<Vec<u32>> = items
                .iter()
                .map(|it| query_ids(model, it, opts.form, false))
                .collect::<Result<_>>()?;
            crate::generate::cad_greedy_and_score(
                model,
                prompts,
                &closed,
                cands,
                spec,
                weight,
                Stop::line(opts.max_new),
            )?
        }
        _ => greedy_and_score(model, prompts, cands, spec, Stop::line(opts.max_new))?,
    })
}

/// Run one condition over a batch of items.
fn run_batch(
    model: &Model,
    items: &[Item],
    opts: &LabelOptions,
    plan: &dyn Plan,
    with_context: bool,
) -> Result<Vec<Run>> {
    let prompts: Vec<Vec<u32>> = items
        .iter()
        .map(|it| query_ids(model, it, opts.form, with_context))
        .collect::<Result<_>>()?;
    let cands: Vec<Vec<Vec<u32>>> = items
        .iter()
        .map(|it| {
            Ok(vec![
                answer_ids(model, opts.form, &it.prior_answer)?,
                answer_ids(model, opts.form, &it.context_answer)?,
            ])
        })
        .collect::<Result<_>>()?;
    // A gate trained at the subject's last token reads there; other plans need no positions.
    let subject_last: Vec<Option<usize>> = match plan.reads_subjects() {
        true => items
            .iter()
            .map(|it| subject_last_of(model, it, opts.form, with_context))
            .collect::<Result<_>>()?,
        false => vec![],
    };
    let spec = plan.spec_for_subjects(model, &prompts, &subject_last)?;
    let scored = decode(model, items, opts, (&prompts, &cands), &spec, with_context)?;
    items
        .iter()
        .zip(scored)
        .map(|(it, s)| {
            let text = model.tokenizer.decode(&s.greedy)?;
            let (lp, lc) = (s.answer_logp[0], s.answer_logp[1]);
            Ok(Run {
                logp_prior: lp,
                logp_context: lc,
                tf_winner: if lp >= lc {
                    Answer::Prior
                } else {
                    Answer::Context
                },
                greedy_answer: judge(it, answer_span(&text)),
                greedy: text,
            })
        })
        .collect()
}

/// Padded tokens (rows × longest prompt) a batch may hold beyond its first row.
const BATCH_TOKENS: usize = 4096;

/// Item indices in batches of similar prompt length: shortest first, at most `batch_size` rows,
/// and at most [`BATCH_TOKENS`] padded tokens, so that one long prompt (NQ-Swap has some of
/// 2,000 tokens) does not pad a whole batch to its length.
pub fn length_batches(lens: &[usize], batch_size: usize) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..lens.len()).collect();
    order.sort_by_key(|i| lens[*i]);
    let mut out: Vec<Vec<usize>> = Vec::new();
    for i in order {
        match out.last_mut() {
            // Sorted, so row i is the batch's longest.
            Some(b) if b.len() < batch_size.max(1) && (b.len() + 1) * lens[i] <= BATCH_TOKENS => {
                b.push(i)
            }
            _ => out.push(vec![i]),
        }
    }
    out
}

/// One condition (closed-book or with context) for every item, batched by prompt length;
/// the output keeps the input order. With a journal, items already in it are not run again and
/// each finished batch is saved to it.
pub fn runs(
    model: &Model,
    items: &[Item],
    opts: &LabelOptions,
    plan: &dyn Plan,
    with_context: bool,
    mut journal: Option<&mut Scoped<Run>>,
    progress: &mut dyn FnMut(usize),
) -> Result<Vec<Run>> {
    let key = |j: &Scoped<Run>, i: usize| saved_key(j, &items[i], with_context, i);
    let mut out: Vec<Option<Run>> = match journal.as_deref() {
        Some(j) => (0..items.len())
            .map(|i| j.get(with_context, i, &items[i].id).cloned())
            .collect(),
        None => vec![None; items.len()],
    };
    let todo: Vec<usize> = (0..items.len()).filter(|i| out[*i].is_none()).collect();
    if todo.len() < items.len() {
        progress(items.len() - todo.len());
    }
    let lens: Vec<usize> = todo
        .iter()
        .map(|i| Ok(query_ids(model, &items[*i], opts.form, with_context)?.len()))
        .collect::<Result<_>>()?;
    for chunk in &length_batches(&lens, opts.batch_size) {
        let idx: Vec<usize> = chunk.iter().map(|c| todo[*c]).collect();
        let batch: Vec<Item> = idx.iter().map(|i| items[*i].clone()).collect();
        let done = run_batch(model, &batch, opts, plan, with_context)?;
        if let Some(j) = journal.as_deref_mut() {
            let keyed = idx.iter().map(|i| key(j, *i)).zip(done.iter().cloned());
            j.journal.record(keyed.collect())?;
        }
        for (i, r) in idx.iter().zip(done) {
            out[*i] = Some(r);
        }
        progress(chunk.len());
        crate::progress::check_cancel()?;
    }
    Ok(out.into_iter().flatten().collect())
}

/// Where [`runs`] saves the run of `item`, the `i`-th of its list, in `journal`.
pub fn saved_key(journal: &Scoped<Run>, item: &Item, with_context: bool, i: usize) -> String {
    journal.key(with_context, i, &item.id)
}

/// Whether [`runs`] would find every run of `items` in `journal`, and so run nothing.
pub fn all_saved(journal: &Scoped<Run>, items: &[Item], with_context: bool) -> bool {
    items
        .iter()
        .enumerate()
        .all(|(i, it)| journal.contains(with_context, i, &it.id))
}

/// Label `items`, calling `progress` with the number done after each batch. Items are batched
/// by prompt length to keep padding small; the output keeps the input order.
pub fn label_items(
    model: &Model,
    items: &[Item],
    opts: &LabelOptions,
    plan: &dyn Plan,
    progress: &mut dyn FnMut(usize) -> Result<()>,
) -> Result<Vec<ItemLabel>> {
    let lens: Vec<usize> = items
        .iter()
        .map(|it| Ok(query_ids(model, it, opts.form, true)?.len()))
        .collect::<Result<_>>()?;
    let mut out: Vec<Option<ItemLabel>> = vec![None; items.len()];
    for chunk in &length_batches(&lens, opts.batch_size) {
        let batch: Vec<Item> = chunk.iter().map(|i| items[*i].clone()).collect();
        let closed = run_batch(model, &batch, opts, plan, false)?;
        let ctx = run_batch(model, &batch, opts, plan, true)?;
        for ((idx, c), x) in chunk.iter().zip(closed).zip(ctx) {
            let it = &items[*idx];
            let label = match x.greedy_answer {
                Answer::Context => Label::FollowsContext,
                Answer::Prior => Label::FollowsPrior,
                Answer::Neither => Label::Neither,
            };
            out[*idx] = Some(ItemLabel {
                id: it.id.clone(),
                relation: it.relation.clone(),
                subject: it.subject.clone(),
                split: it.split,
                form: opts.form,
                known: c.greedy_answer == Answer::Prior,
                closed: c,
                context: x,
                label,
            });
        }
        progress(chunk.len())?;
    }
    Ok(out.into_iter().flatten().collect())
}

/// Counts and rates for a group of labels.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Summary {
    pub n: usize,
    pub known: usize,
    pub follows_context: usize,
    pub follows_prior: usize,
    pub neither: usize,
    pub known_rate: f64,
    /// Share of items whose answer follows the context.
    pub adherence: f64,
    /// n_prior / (n_prior + n_context), Longpre et al. 2021.
    pub memorization_ratio: f64,
    /// Share of items whose context answer has the higher teacher-forced log-probability.
    pub tf_adherence: f64,
    /// Adherence among the items the model knows closed-book (the real conflicts).
    pub adherence_known: f64,
}

impl Summary {
    pub fn of<'a>(labels: impl IntoIterator<Item = &'a ItemLabel>) -> Summary {
        let mut s = Summary::default();
        let (mut tf, mut kc) = (0, 0);
        for l in labels {
            s.n += 1;
            s.known += l.known as usize;
            match l.label {
                Label::FollowsContext => s.follows_context += 1,
                Label::FollowsPrior => s.follows_prior += 1,
                Label::Neither => s.neither += 1,
            }
            tf += (l.context.tf_winner == Answer::Context) as usize;
            kc += (l.known && l.label == Label::FollowsContext) as usize;
        }
        let r = |a: usize, b: usize| if b == 0 { 0.0 } else { a as f64 / b as f64 };
        s.known_rate = r(s.known, s.n);
        s.adherence = r(s.follows_context, s.n);
        s.memorization_ratio = r(s.follows_prior, s.follows_prior + s.follows_context);
        s.tf_adherence = r(tf, s.n);
        s.adherence_known = r(kc, s.known);
        s
    }
}

/// The overall summary and one per relation.
pub fn summarize(labels: &[ItemLabel]) -> (Summary, BTreeMap<String, Summary>) {
    let mut by: BTreeMap<String, Vec<&ItemLabel>> = BTreeMap::new();
    for l in labels {
        by.entry(l.relation.clone()).or_default().push(l);
    }
    let per = by.into_iter().map(|(k, v)| (k, Summary::of(v))).collect();
    (Summary::of(labels), per)
}

/// The summary as a text table.
pub fn summary_table(all: &Summary, per: &BTreeMap<String, Summary>) -> String {
    let mut s = format!(
        "{:<16} {:>5} {:>7} {:>9} {:>7} {:>8} {:>9} {:>10}\n",
        "relation", "n", "known", "adhere", "M_R", "neither", "TF adh.", "adh.|known"
    );
    let row = |name: &str, x: &Summary| {
        format!(
            "{:<16} {:>5} {:>6.1}% {:>8.1}% {:>7.3} {:>8} {:>8.1}% {:>9.1}%\n",
            name,
            x.n,
            100.0 * x.known_rate,
            100.0 * x.adherence,
            x.memorization_ratio,
            x.neither,
            100.0 * x.tf_adherence,
            100.0 * x.adherence_known
        )
    };
    for (k, v) in per {
        s += &row(k, v);
    }
    s += &row("ALL", all);
    s
}

/// Read a labels JSONL file.
pub fn read_labels(path: &std::path::Path) -> Result<Vec<ItemLabel>> {
    let text = std::fs::read_to_string(path).map_err(|e| crate::Error::file(path, e))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l)
                .map_err(|e| crate::Error::file(path, format!("line {}: {e}", i + 1)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn length_batches_cover_every_item_once_within_the_budgets() {
        let lens = [10, 2300, 12, 300, 300, 11, 900, 2400, 13, 299];
        let b = length_batches(&lens, 3);
        let mut seen: Vec<usize> = b.iter().flatten().copied().collect();
        seen.sort();
        assert_eq!(seen, (0..lens.len()).collect::<Vec<_>>());
        for batch in &b {
            let longest = batch.iter().map(|i| lens[*i]).max().unwrap();
            assert!(batch.len() <= 3);
            assert!(batch.len() == 1 || batch.len() * longest <= BATCH_TOKENS);
        }
        // Short prompts share batches; the two longest each get their own.
        assert_eq!(b[0], vec![0, 5, 2]);
        assert_eq!(&b[b.len() - 2..], &[vec![1], vec![7]]);
    }
}
