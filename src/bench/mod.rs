//! The knowledge-conflict benchmark: does a method make the model honour its context, and what
//! does it cost?
//!
//! Each method is measured on the same items. The benefit side:
//! - context adherence (greedy, and by teacher-forced comparison of the two answers);
//! - the memorization ratio M_R.
//!
//! The cost side:
//! - prior retention: closed-book accuracy on the facts the model knows, method active, no context;
//! - fluency: perplexity of a fixed neutral text relative to no intervention.
//!
//! Strengths are chosen by a sweep on the dev split and the test split is measured once. Every
//! rate carries a bootstrap 95% interval.

use crate::data::{Form, Item};
use crate::error::{Error, Result};
use crate::journal::Scoped;
use crate::label::{self, Answer, LabelOptions, Run};
use crate::model::{Batch, LogitsAt, Model};
use crate::steer::Plan;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

mod grid;
mod metrics;
mod paired;
mod true_context;
pub use grid::{
    choose, context_heads_from_patch, grid, heads_from_patch, setting_key, Need, Params, Resources,
    Setting,
};
pub use metrics::{exact_match, mean_rate, squad_normalize, Rate};
use metrics::{mem_ratio, rate};
pub use paired::paired_difference;
use true_context::true_context_rate;

crate::choice_enum! {
/// The methods compared.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// No intervention.
    None = "none",
    /// An instruction to answer from the context only.
    Instruct = "instruct",
    /// Context-aware decoding (Shi et al. 2023).
    Cad = "cad",
    /// Context-aware decoding whose strength at each step is the Jensen-Shannon divergence
    /// between the passes with and without context (AdaCAD, Wang et al. 2024); nothing to tune.
    #[serde(rename = "adacad")]
    AdaCad = "adacad",
    /// Add a probe direction (strength alpha, in spread units).
    Steer = "steer",
    /// The same, only where the probe predicts the prior will win.
    SteerGated = "steer-gated",
    /// Scale up the attention heads that carry the context's answer and scale down those that
    /// push the prior, both ranked by ablation on dev.
    Heads = "heads",
    /// The same, only where a `conflict` probe sees a context that contradicts memory.
    HeadsGated = "heads-gated",
    /// A learned low-rank intervention (LoReFT) trained on the train split (`reft train`).
    Reft = "reft",
    /// The learned intervention and context-aware decoding together.
    ReftCad = "reft-cad",
    /// The learned intervention, only on prompts where a `conflict` probe sees a context that
    /// contradicts memory (the gate of heads-gated); other prompts run untouched.
    ReftGated = "reft-gated",
    /// Add each layer's probe direction over a band of layers, with a strength relative to
    /// each layer's typical residual norm.
    SteerMulti = "steer-multi",
    /// Over a band of layers, set the projection onto each layer's probe direction to the
    /// follows-context class mean (plus alpha spreads).
    Clamp = "clamp",
    /// Inference-time intervention (Li et al. 2023): shift the K attention heads whose
    /// per-head probes rank best along their directions, at every position.
    Iti = "iti",
}
}

impl Method {
    /// The method's name as the command line spells it.
    pub fn name(self) -> &'static str {
        <Self as crate::choice::Choice>::name(self)
    }
}

/// The instruction of the `instruct` method, placed before the context.
pub const INSTRUCTION: &str = "Answer using only the information in the following text, even if it disagrees with what you know.";

/// A neutral text written for the fluency measure.
pub const NEUTRAL_TEXT: &str = "The library opens at nine in the morning and closes at six in the evening. \
    On weekdays the reading room is quiet, and most visitors come to study, to borrow a novel, or to use \
    the computers near the entrance. Children have their own corner with low shelves, picture books and \
    a rug where stories are read aloud on Saturday mornings. The staff answer questions at the front desk, \
    help people find articles, and keep a list of local clubs and classes. In summer the windows are \
    opened, and the sound of the market in the square drifts in between the pages.";

/// One method at one setting, measured on a set of items.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Eval {
    pub method: Method,
    pub setting: String,
    pub strength: Option<f32>,
    pub adherence: Rate,
    pub tf_adherence: Rate,
    pub memorization_ratio: Rate,
    /// Share of the known facts still answered from memory, closed-book, method active.
    pub retention: Rate,
    /// Perplexity of the neutral text with the method active.
    pub perplexity: f64,
    /// Relative to no intervention (filled in by the caller).
    pub perplexity_ratio: f64,
    pub per_relation: BTreeMap<String, RelationEval>,
    /// SQuAD exact match of the greedy answer with the context answer (EM_C) and with the
    /// prior answer (EM_M): lowercase, no punctuation or articles, single spaces.
    #[serde(default)]
    pub em_context: Rate,
    #[serde(default)]
    pub em_memory: Rate,
    /// Per item, in order: whether the greedy answer names the context answer (what
    /// `adherence` averages), for paired comparisons between methods on the same items.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub adherent: Vec<bool>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RelationEval {
    pub n: usize,
    pub adherence: f64,
    pub memorization_ratio: f64,
    /// Share whose context answer has the higher teacher-forced log-probability.
    #[serde(default)]
    pub tf_adherence: f64,
}

/// Perplexity of `text` under `plan`.
pub fn perplexity(model: &Model, text: &str, plan: &dyn Plan) -> Result<f64> {
    let ids = model.tokenizer.encode_prompt(text)?;
    let spec = plan.spec_for(model, std::slice::from_ref(&ids))?;
    let (logits, _) = model.run(&Batch::single(&ids), &spec, LogitsAt::All)?;
    let lp = crate::model::llama::log_softmax(&logits)?
        .squeeze(0)?
        .to_vec2::<f32>()?;
    let nll: f64 = (1..ids.len())
        .map(|j| -(lp[j - 1][ids[j] as usize] as f64))
        .sum();
    Ok((nll / (ids.len() - 1).max(1) as f64).exp())
}

fn with_instruction(items: &[Item], in_context: bool) -> Vec<Item> {
    items
        .iter()
        .map(|it| {
            let mut it = it.clone();
            if in_context {
                it.context = format!("{INSTRUCTION} {}", it.context);
            } else {
                it.prompt = format!("{INSTRUCTION} {}", it.prompt);
                it.question = format!("{INSTRUCTION} {}", it.question);
            }
            it
        })
        .collect()
}

/// Measure one setting: `items` for adherence, `known` (facts known closed-book) for retention.
pub fn evaluate(
    model: &Model,
    s: &Setting,
    items: &[Item],
    known: &[Item],
    form: Form,
    batch: usize,
) -> Result<Eval> {
    let opts = LabelOptions {
        batch_size: batch,
        ..LabelOptions::new(form)
    };
    evaluate_with(model, s, items, known, opts, None, &mut |_| {})
}

/// The items as they are, or with the instruction to follow the context
/// (`with_context`: the items keep their contexts).
fn instructed(items: &[Item], instruct: bool, with_context: bool) -> Vec<Item> {
    if instruct {
        with_instruction(items, with_context)
    } else {
        items.to_vec()
    }
}

/// [`evaluate`] with explicit labelling options (e.g. a longer answer budget); `progress` gets
/// the number of items done after each batch (of `items`, then of `known`). With a journal,
/// runs already saved there are reused and new ones are saved as they finish.
pub fn evaluate_with(
    model: &Model,
    s: &Setting,
    items: &[Item],
    known: &[Item],
    mut opts: LabelOptions,
    mut journal: Option<&mut Scoped<Run>>,
    progress: &mut dyn FnMut(usize),
) -> Result<Eval> {
    opts.cad = s.cad;
    let ctx_items = instructed(items, s.instruct, true);
    let plan = s.plan.as_ref();
    let mut items_journal = journal
        .as_deref_mut()
        .map(|j| j.sub(eval_runs_scope(false)));
    let j = items_journal.as_mut();
    let runs = label::runs(model, &ctx_items, &opts, plan, true, j, progress)?;
    let em = |names: &dyn Fn(&Item) -> Vec<&str>| -> Vec<bool> {
        items
            .iter()
            .zip(&runs)
            .map(|(it, r)| exact_match(label::answer_span(&r.greedy), &names(it)))
            .collect()
    };
    let known_items = instructed(known, s.instruct, false);
    let closed = if known_items.is_empty() {
        vec![]
    } else {
        let mut known_journal = journal.map(|j| j.sub(eval_runs_scope(true)));
        let j = known_journal.as_mut();
        label::runs(model, &known_items, &opts, plan, false, j, progress)?
    };
    let per_relation = per_relation(items, &runs);
    Ok(Eval {
        method: s.method,
        setting: s.label.clone(),
        strength: s.strength,
        adherence: share(&runs, |r| r.greedy_answer == Answer::Context, 1),
        tf_adherence: share(&runs, |r| r.tf_winner == Answer::Context, 2),
        memorization_ratio: mem_ratio(&runs, 3),
        retention: share(&closed, |r| r.greedy_answer == Answer::Prior, 4),
        perplexity: perplexity(model, NEUTRAL_TEXT, s.plan.as_ref())?,
        perplexity_ratio: 1.0,
        per_relation,
        em_context: rate(&em(&|it| it.context_names()), 5),
        em_memory: rate(&em(&|it| it.prior_names()), 6),
        adherent: runs
            .iter()
            .map(|r| r.greedy_answer == Answer::Context)
            .collect(),
    })
}

/// The share of `runs` where `hit` holds, with its bootstrap CI (seeded by `seed`).
fn share(runs: &[Run], hit: impl Fn(&Run) -> bool, seed: u64) -> Rate {
    rate(&runs.iter().map(hit).collect::<Vec<_>>(), seed)
}

/// Adherence, M_R and teacher-forced adherence per relation.
fn per_relation(items: &[Item], runs: &[Run]) -> BTreeMap<String, RelationEval> {
    let mut per: BTreeMap<String, Vec<&Run>> = BTreeMap::new();
    for (it, r) in items.iter().zip(runs) {
        per.entry(it.relation.clone()).or_default().push(r);
    }
    let count = |v: &[&Run], f: &dyn Fn(&Run) -> bool| v.iter().filter(|r| f(r)).count() as f64;
    per.into_iter()
        .map(|(k, v)| {
            let c = count(&v, &|r| r.greedy_answer == Answer::Context);
            let p = count(&v, &|r| r.greedy_answer == Answer::Prior);
            let tf = count(&v, &|r| r.tf_winner == Answer::Context);
            let n = v.len() as f64;
            let eval = RelationEval {
                n: v.len(),
                adherence: c / n,
                memorization_ratio: if p + c == 0.0 { 0.0 } else { p / (p + c) },
                tf_adherence: tf / n,
            };
            (k, eval)
        })
        .collect()
}

/// A method's sweep on dev and its chosen test measurement.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MethodResult {
    pub method: Method,
    pub sweep: Vec<Eval>,
    pub chosen: String,
    /// The chosen setting as data (absent from results saved before settings were keyed so).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chosen_params: Option<Params>,
    /// Whether the chosen setting met the cost constraints on dev.
    pub constraints_met: bool,
    pub test: Eval,
    /// Wall-clock seconds of the sweep and the test measurement.
    #[serde(default)]
    pub seconds: f64,
    /// Item runs taken from a journal of an earlier, interrupted run rather than run again:
    /// where this is not 0, `seconds` counts only the work done after the resume.
    #[serde(default)]
    pub reused_runs: usize,
    /// The chosen setting on the test items' true-context twins (the context states the true
    /// fact): the share whose greedy answer names it. `bench conflict` only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub true_context: Option<Rate>,
    /// Test adherence minus that of `none` and of `cad` on the same items ("vs none",
    /// "vs cad"), with a bootstrap interval over items. `bench conflict` only.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub paired: BTreeMap<String, Rate>,
}

/// Split items into (dev, test): their own split field, else a seeded half split by subject.
/// With split fields, an item whose field is neither `dev` nor `test` is in neither.
pub fn dev_test(items: &[Item]) -> (Vec<Item>, Vec<Item>) {
    let has = items.iter().any(|i| i.split.is_some());
    use crate::data::Split as S;
    fn part_of(i: &Item, has: bool) -> Option<S> {
        if has {
            i.split
        } else if crate::data::stable_hash(&i.subject).is_multiple_of(2) {
            Some(S::Dev)
        } else {
            Some(S::Test)
        }
    }
    let take = |name: S| -> Vec<Item> {
        items
            .iter()
            .filter(|i| part_of(i, has) == Some(name))
            .cloned()
            .collect()
    };
    (take(S::Dev), take(S::Test))
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

/// What a benchmark run reports as it goes.
pub enum Event<'a> {
    /// A finished step, as a line of text.
    Line(&'a str),
    /// An evaluation of `items` items (with context, then known facts closed-book) begins.
    Begin { what: &'a str, items: usize },
    /// `n` more items of the current evaluation are done.
    Done(usize),
}

/// Receives a benchmark run's [`Event`]s.
pub type OnEvent<'a> = dyn FnMut(Event) + 'a;

/// The items one benchmark run works on: dev (strengths are chosen there) and test, each with
/// its known facts (closed-book greedy answer = prior) for measuring retention.
pub struct Split {
    pub dev: Vec<Item>,
    pub test: Vec<Item>,
    pub dev_known: Vec<Item>,
    pub test_known: Vec<Item>,
    pub form: Form,
    /// Perplexity of the neutral text without intervention.
    pub base_ppl: f64,
}

/// Where [`Split::new`] saves its closed-book runs, under the journal scope it is given.
const KNOWN_DEV: &str = "known dev";
const KNOWN_TEST: &str = "known test";

impl Split {
    /// Whether `journal` holds every closed-book run [`Split::new`] makes on `items`, so that
    /// it would run nothing.
    pub fn is_saved(items: &[Item], journal: &mut Scoped<Run>) -> bool {
        let (dev, test) = dev_test(items);
        label::all_saved(&journal.sub(KNOWN_DEV), &dev, false)
            && label::all_saved(&journal.sub(KNOWN_TEST), &test, false)
    }

    /// Split `items` (see [`dev_test`]) and find the known facts of each part (saved to and
    /// reused from `journal` when one is given).
    pub fn new(
        model: &Model,
        items: &[Item],
        form: Form,
        batch: usize,
        mut journal: Option<&mut Scoped<Run>>,
    ) -> Result<Split> {
        let (dev, test) = dev_test(items);
        if dev.is_empty() || test.is_empty() {
            return Err(Error::Invalid(format!(
                "need dev and test items; got {} dev and {} test (the split goes by subject: \
                 use more items, or another seed)",
                dev.len(),
                test.len()
            )));
        }
        let mut dev_j = journal.as_deref_mut().map(|j| j.sub(KNOWN_DEV));
        let dev_known = known_items(model, &dev, form, batch, dev_j.as_mut())?;
        let mut test_j = journal.map(|j| j.sub(KNOWN_TEST));
        let test_known = known_items(model, &test, form, batch, test_j.as_mut())?;
        Ok(Split {
            dev_known,
            test_known,
            dev,
            test,
            form,
            base_ppl: perplexity(model, NEUTRAL_TEXT, &crate::Spec::new())?,
        })
    }

    /// "N dev (K known), M test (J known)", for the log.
    pub fn counts(&self) -> String {
        format!(
            "{} dev ({} known), {} test ({} known)",
            self.dev.len(),
            self.dev_known.len(),
            self.test.len(),
            self.test_known.len()
        )
    }

    /// Measure `s` on test (else dev), its perplexity relative to no intervention.
    #[allow(clippy::too_many_arguments)]
    fn measure(
        &self,
        model: &Model,
        s: &Setting,
        test: bool,
        batch: usize,
        res: &Resources,
        journal: Option<&mut Scoped<Run>>,
        on: &mut OnEvent,
    ) -> Result<Eval> {
        let (items, known) = if test {
            (&self.test, &self.test_known)
        } else {
            (&self.dev, &self.dev_known)
        };
        let what = eval_scope(test, s.method, &s.label);
        on(Event::Begin {
            what: &what,
            items: items.len() + known.len(),
        });
        let o = opts(self.form, batch, res);
        let scope = setting_scope(test, s.method, &s.params);
        let mut journal = journal.map(|j| j.sub_renamed(&scope, &what));
        let mut e = evaluate_with(model, s, items, known, o, journal.as_mut(), &mut |n| {
            on(Event::Done(n))
        })?;
        e.perplexity_ratio = e.perplexity / self.base_ppl;
        Ok(e)
    }
}

/// The name of one evaluation, `dev|test METHOD [SETTING]`: its progress line and its scope in
/// a journal.
pub fn eval_scope(test: bool, m: Method, label: &str) -> String {
    let mut what = format!("{} {}", if test { "test" } else { "dev" }, m.name());
    if label != m.name() {
        what += &format!(" {label}");
    }
    what
}

/// Where one evaluation's runs are saved in a journal: `dev|test` and a hash of the setting's
/// key ([`setting_key`]). Earlier versions used [`eval_scope`], which is still read.
pub fn setting_scope(test: bool, m: Method, params: &Params) -> String {
    let split = if test { "test" } else { "dev" };
    let key = setting_key(m, params);
    format!("{split} {:016x}", crate::data::stable_hash(&key))
}

/// Where, under an evaluation's scope, its runs are saved: the items with their contexts, or
/// (`closed`) the known facts closed-book, on which retention is measured.
pub fn eval_runs_scope(closed: bool) -> &'static str {
    if closed {
        "known"
    } else {
        "items"
    }
}

/// Run every method: sweep on dev, measure the chosen setting on test.
pub fn run(
    model: &Model,
    items: &[Item],
    methods: &[Method],
    res: &Resources,
    form: Form,
    batch: usize,
    on: &mut OnEvent,
) -> Result<Vec<MethodResult>> {
    let split = Split::new(model, items, form, batch, None)?;
    on(Event::Line(&split.counts()));
    let twins: Vec<Item> = split.test.iter().filter_map(Item::true_twin).collect();
    let mut out = Vec::new();
    for m in methods {
        let mut r = run_method(model, *m, &split, res, batch, None, on)?;
        if !twins.is_empty() {
            r.true_context = Some(true_context_rate(
                model, &r, &twins, &split, res, batch, on,
            )?);
        }
        out.push(r);
    }
    paired::fill(&mut out);
    Ok(out)
}

/// One method: sweep its settings on dev (when it has several), measure the chosen on test.
/// With a journal, every evaluation's runs are saved as they finish and reused when found.
pub fn run_method(
    model: &Model,
    m: Method,
    split: &Split,
    res: &Resources,
    batch: usize,
    mut journal: Option<&mut Scoped<Run>>,
    on: &mut OnEvent,
) -> Result<MethodResult> {
    let t0 = std::time::Instant::now();
    let settings = grid(model, m, res)?;
    let mut sweep = Vec::new();
    // A single setting has nothing to choose: it is not swept.
    for s in settings.iter().filter(|_| settings.len() > 1) {
        let e = split.measure(model, s, false, batch, res, journal.as_deref_mut(), on)?;
        on(Event::Line(&format!(
            "dev {} {}: adherence {:.3}, retention {:.3}, ppl x{:.3}",
            m.name(),
            s.label,
            e.adherence.value,
            e.retention.value,
            e.perplexity_ratio
        )));
        sweep.push(e);
    }
    let (i, met) = if settings.len() > 1 {
        choose(&sweep)
    } else {
        (0, true)
    };
    let test_eval = split.measure(model, &settings[i], true, batch, res, journal, on)?;
    on(Event::Line(&format!(
        "test {} {}: adherence {:.3} [{:.3}, {:.3}]",
        m.name(),
        settings[i].label,
        test_eval.adherence.value,
        test_eval.adherence.ci_low,
        test_eval.adherence.ci_high
    )));
    Ok(MethodResult {
        method: m,
        sweep,
        chosen: settings[i].label.clone(),
        chosen_params: Some(settings[i].params.clone()),
        constraints_met: met,
        test: test_eval,
        seconds: t0.elapsed().as_secs_f64(),
        reused_runs: 0,
        true_context: None,
        paired: BTreeMap::new(),
    })
}

fn opts(form: Form, batch: usize, res: &Resources) -> LabelOptions {
    let mut o = LabelOptions::new(form);
    o.batch_size = batch;
    if let Some(n) = res.max_new {
        o.max_new = n;
    }
    o
}
