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
use crate::error::Result;
use crate::journal::{Journal, Scoped};
use crate::label::{self, Answer, LabelOptions, Run};
use crate::model::Model;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

mod artefacts;
mod choose;
mod grid;
mod irrelevant;
mod methods;
mod metrics;
mod paired;
mod perplexity;
mod split;
mod true_context;
pub use artefacts::{is_per_head, Artefacts};
pub use choose::{choose, irrelevant_bar_words, paired_unchanged, Bars, Chosen, BARS};
pub use grid::{setting_key, Need, Params, Resources, Setting};
pub use irrelevant::{Irrelevant, IrrelevantSet, KindEval};
pub use methods::{context_heads_from_patch, grid, heads_from_patch, PROXY_ALPHAS};
pub use metrics::{exact_match, mean_rate, squad_normalize, Rate};
use metrics::{mem_ratio, rate};
pub use paired::{fill as fill_paired, paired_difference};
pub use perplexity::{perplexity, proxy_perplexity};
pub use split::{dev_test, known_items, measured_on, sample_by_subject, Parts, SplitOptions};
pub use true_context::gold_rate;

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
    /// Proxy-tuning (Liu et al. 2024): the model's logits shifted at every step by alpha times
    /// a tuned expert's minus its untuned base's (`--proxy-expert`, `--proxy-base`).
    Proxy = "proxy",
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
    /// On contexts about other subjects: answers left as the unedited model gives them
    /// closed-book, and distractors named. Absent where the run had no irrelevant items.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub irrelevant: Option<Irrelevant>,
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

/// What one evaluation measures a setting on.
pub struct EvalItems<'a> {
    /// Conflicts, run with their contexts: adherence.
    pub items: &'a [Item],
    /// Facts the model knows, run closed-book: retention.
    pub known: &'a [Item],
    /// Contexts about other subjects: robustness (may be empty).
    pub irrelevant: &'a IrrelevantSet,
}

impl EvalItems<'_> {
    /// How many runs the evaluation makes.
    pub fn len(&self) -> usize {
        self.items.len() + self.known.len() + self.irrelevant.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
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
    let none = IrrelevantSet::default();
    let sets = EvalItems {
        items,
        known,
        irrelevant: &none,
    };
    evaluate_with(model, s, &sets, opts, None, &mut |_| {})
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

/// Where, under an evaluation's scope, its runs of one set are saved.
#[derive(Clone, Copy)]
pub enum RunSet {
    /// The conflicts with their contexts.
    Items,
    /// The known facts closed-book, on which retention is measured.
    Known,
    /// The irrelevant contexts.
    Irrelevant,
}

impl RunSet {
    /// The known facts closed-book (`closed`), else the conflicts with their contexts.
    pub fn of_closed(closed: bool) -> RunSet {
        match closed {
            true => RunSet::Known,
            false => RunSet::Items,
        }
    }

    pub fn scope(self) -> &'static str {
        match self {
            RunSet::Items => "items",
            RunSet::Known => "known",
            RunSet::Irrelevant => "irrelevant",
        }
    }
}

/// [`evaluate`] with explicit labelling options (e.g. a longer answer budget) and irrelevant
/// contexts; `progress` gets the number of items done after each batch. With a journal, runs
/// already saved there are reused and new ones are saved as they finish.
pub fn evaluate_with(
    model: &Model,
    s: &Setting,
    sets: &EvalItems,
    mut opts: LabelOptions,
    mut journal: Option<&mut Scoped<Run>>,
    progress: &mut dyn FnMut(usize),
) -> Result<Eval> {
    opts.cad = s.cad;
    opts.proxy = s.proxy.clone();
    let plan = s.plan.as_ref();
    let mut run_set = |set: RunSet, items: &[Item], ctx: bool| -> Result<Vec<Run>> {
        if items.is_empty() {
            return Ok(vec![]);
        }
        let items = instructed(items, s.instruct, ctx);
        let mut j = journal.as_deref_mut().map(|j| j.sub(set.scope()));
        label::runs(model, &items, &opts, plan, ctx, j.as_mut(), progress)
    };
    let runs = run_set(RunSet::Items, sets.items, true)?;
    let closed = run_set(RunSet::Known, sets.known, false)?;
    let irr = run_set(RunSet::Irrelevant, &sets.irrelevant.items, true)?;
    let items = sets.items;
    let em = |names: &dyn Fn(&Item) -> Vec<&str>| -> Vec<bool> {
        items
            .iter()
            .zip(&runs)
            .map(|(it, r)| exact_match(label::answer_span(&r.greedy), &names(it)))
            .collect()
    };
    Ok(Eval {
        method: s.method,
        setting: s.label.clone(),
        strength: s.strength,
        adherence: share(&runs, |r| r.greedy_answer == Answer::Context, 1),
        tf_adherence: share(&runs, |r| r.tf_winner == Answer::Context, 2),
        memorization_ratio: mem_ratio(&runs, 3),
        retention: share(&closed, |r| r.greedy_answer == Answer::Prior, 4),
        perplexity: match &s.proxy {
            Some(p) => proxy_perplexity(model, p, NEUTRAL_TEXT)?,
            None => perplexity(model, NEUTRAL_TEXT, plan)?,
        },
        perplexity_ratio: 1.0,
        per_relation: per_relation(items, &runs),
        em_context: rate(&em(&|it| it.context_names()), 5),
        em_memory: rate(&em(&|it| it.prior_names()), 6),
        adherent: runs
            .iter()
            .map(|r| r.greedy_answer == Answer::Context)
            .collect(),
        irrelevant: (!sets.irrelevant.is_empty()).then(|| irrelevant::score(sets.irrelevant, &irr)),
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

/// The best setting of a sweep in which none met the bars, and what it missed.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Ineligible {
    pub setting: String,
    pub missed: Vec<String>,
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
    /// When no setting met them: the setting with the highest dev adherence, and the bars it
    /// missed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub best_ineligible: Option<Ineligible>,
    pub test: Eval,
    /// Wall-clock seconds of the sweep and the test measurement.
    #[serde(default)]
    pub seconds: f64,
    /// Item runs taken from a journal of an earlier, interrupted run rather than run again:
    /// where this is not 0, `seconds` counts only the work done after the resume.
    #[serde(default)]
    pub reused_runs: usize,
    /// Gold contexts: the chosen setting on the test items' true-context twins (the context
    /// states the true fact), the share whose greedy answer names it. `bench conflict` only.
    /// (Reports written before it had this name call it `true_context`.)
    #[serde(
        default,
        alias = "true_context",
        skip_serializing_if = "Option::is_none"
    )]
    pub gold: Option<Rate>,
    /// Test adherence minus that of `none` and of `cad` on the same items ("vs none",
    /// "vs cad"), with a bootstrap interval over items. `bench conflict` only.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub paired: BTreeMap<String, Rate>,
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

/// What one benchmark run measured.
#[derive(Clone, Debug)]
pub struct Measured {
    /// Each method's dev sweep, choice and test measures, in the order asked.
    pub methods: Vec<MethodResult>,
    /// How `none` did on dev's irrelevant contexts, per item: the dev bar's baseline (None
    /// without irrelevant contexts).
    pub dev_irrelevant_none: Option<Irrelevant>,
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
) -> Result<Measured> {
    let o = SplitOptions {
        max_new: res.max_new,
        ..SplitOptions::new(form, batch)
    };
    run_journaled(model, items, methods, res, &o, None, on)
}

/// [`run`] with a journal: every run is saved as it finishes, and a rerun (`--resume`) takes
/// the runs it finds there instead of running them again. Its keys start with a hash of the
/// model, its weights, the form, the answer budget and the items, so a journal written for
/// other data or another model is never reused; then the split's or the setting's scope.
pub fn run_journaled(
    model: &Model,
    items: &[Item],
    methods: &[Method],
    res: &Resources,
    o: &SplitOptions,
    journal: Option<&mut Journal<Run>>,
    on: &mut OnEvent,
) -> Result<Measured> {
    let root = match &journal {
        Some(_) => journal_root(model, items, o)?,
        None => String::new(),
    };
    let mut scoped = journal.map(|j| Scoped::new(j, root));
    let split = Parts::new(
        model,
        items,
        o,
        scoped.as_mut().map(|s| s.sub("split")).as_mut(),
    )?;
    on(Event::Line(&split.counts()));
    let twins: Vec<Item> = split.test.iter().filter_map(Item::true_twin).collect();
    let mut out = Vec::new();
    for m in methods {
        let before = scoped.as_ref().map_or(0, |s| s.journal.hits());
        // Runs of a method that reads artefacts go under their hash as well.
        let mut uses = match res.fingerprint(*m) {
            Some(fp) => scoped.as_mut().map(|s| s.sub(&format!("uses {fp}"))),
            None => scoped.as_mut().map(|s| s.reborrow()),
        };
        let mut r = run_method(model, *m, &split, res, o.batch, uses.as_mut(), on)?;
        if !twins.is_empty() {
            let j = uses.as_mut().map(|s| s.sub("gold"));
            r.gold = Some(gold_rate(model, &r, &twins, &split, res, j, on)?);
        }
        drop(uses);
        r.reused_runs = scoped.as_ref().map_or(0, |s| s.journal.hits()) - before;
        out.push(r);
    }
    paired::fill(&mut out);
    Ok(Measured {
        methods: out,
        dev_irrelevant_none: split.irrelevant_base,
    })
}

/// The root of a conflict benchmark's journal keys: what its runs depend on besides the
/// setting and the item.
fn journal_root(model: &Model, items: &[Item], o: &SplitOptions) -> Result<String> {
    let id = model.identity()?;
    let data = serde_json::to_string(items).map_err(|e| crate::Error::Invalid(e.to_string()))?;
    let key = format!(
        "{}|{:?}|{:?}|{:?}|{:?}|{}|{data}",
        id.sha256, model.weights, o.form, o.max_new, o.distractors, o.dev_one_per_query
    );
    Ok(format!("conflict {:016x}", crate::data::stable_hash(&key)))
}

/// One method: sweep its settings on dev (when it has several), measure the chosen on test.
/// With a journal, every evaluation's runs are saved as they finish and reused when found.
pub fn run_method(
    model: &Model,
    m: Method,
    split: &Parts,
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
            "dev {} {}: {}",
            m.name(),
            s.label,
            brief(&e)
        )));
        sweep.push(e);
    }
    let chosen = match settings.len() {
        1 => Chosen {
            index: 0,
            eligible: true,
            best_ineligible: None,
        },
        _ => choose(&sweep, split.irrelevant_base.as_ref()),
    };
    let i = chosen.index;
    let test_eval = split.measure(model, &settings[i], true, batch, res, journal, on)?;
    on(Event::Line(&format!(
        "test {} {}: {}",
        m.name(),
        settings[i].label,
        brief(&test_eval)
    )));
    let best_ineligible = chosen.best_ineligible.map(|(j, missed)| Ineligible {
        setting: settings[j].label.clone(),
        missed,
    });
    Ok(MethodResult {
        method: m,
        sweep,
        chosen: settings[i].label.clone(),
        chosen_params: Some(settings[i].params.clone()),
        constraints_met: chosen.eligible,
        best_ineligible,
        test: test_eval,
        seconds: t0.elapsed().as_secs_f64(),
        reused_runs: 0,
        gold: None,
        paired: BTreeMap::new(),
    })
}

/// One evaluation in a line: adherence with its interval, retention, perplexity and, where
/// measured, irrelevant contexts left unchanged.
fn brief(e: &Eval) -> String {
    let mut s = format!(
        "adherence {:.3} [{:.3}, {:.3}], retention {:.3}, ppl x{:.3}",
        e.adherence.value,
        e.adherence.ci_low,
        e.adherence.ci_high,
        e.retention.value,
        e.perplexity_ratio
    );
    if let Some(irr) = &e.irrelevant {
        s += &format!(
            ", irrelevant unchanged {:.3} (distractor named {:.3})",
            irr.unchanged.value, irr.distractor_named.value
        );
    }
    s
}

fn opts(form: Form, batch: usize, max_new: Option<usize>) -> LabelOptions {
    let mut o = LabelOptions::new(form);
    o.batch_size = batch;
    if let Some(n) = max_new {
        o.max_new = n;
    }
    o
}
