//! The public knowledge-conflict benchmarks on their published files:
//! - MemoTrap (4 CSVs);
//! - NQ-Swap;
//! - JUICE's world capitals, in substitution and coherent form.
//!
//! Each is imported into our format, split into dev (strengths are chosen there) and test by a
//! seeded hash of the subject, and run through the same methods as `bench conflict`. Each then
//! gets its own metric:
//! - MemoTrap: accuracy, the answer class being the more probable (Shi et al. 2023);
//! - NQ-Swap: EM_C, EM_M and M_R, on a greedy answer of at most 12 tokens;
//! - world capitals: the share where the in-context city wins, per form.
//!
//! The published figures we could verify sit beside ours.

use crate::bench::{self, Event, Method, MethodResult, Rate, Resources};
use crate::choice::Choice;
use crate::data::{self, Form, Item};
use crate::error::{Error, Result};
use crate::journal::Journal;
use crate::label::Run;
use crate::model::Model;
pub use benchmark::Benchmark;
use benchmark::{load, own_metrics, published};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

mod benchmark;
mod chart;
mod keys;
mod paired;
mod published;
mod report;

use keys::{
    legacy_part_key, part_key, run_key, save_part, saved_part, scoped, scoped_part, shots_key,
    PartKeys,
};
use paired::{changed_share, headline, paired_delta, test_outcomes, Outcome};
pub use published::{memotrap_published, nqswap_published, Published};
pub use report::{markdown, write, PublicReport};

/// One benchmark's results.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Section {
    pub name: String,
    pub n_items: usize,
    pub n_dev: usize,
    pub n_test: usize,
    /// The split pass's time plus every method's own `seconds`.
    pub seconds: f64,
    /// The split pass (closed-book runs that find the known items) in this invocation: after a
    /// resume its runs come back from the journal and this is small.
    #[serde(default)]
    pub split_seconds: f64,
    pub methods: Vec<MethodResult>,
    /// Methods asked for but not run yet (`--saved-only` and no saved part).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending: Vec<Method>,
    /// How `none` did on dev's irrelevant contexts, per item (the dev bar's baseline); absent
    /// without irrelevant contexts, and in reports written before the bar kept a standard
    /// error to spare.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dev_irrelevant_none: Option<bench::Irrelevant>,
    /// Per method: the benchmark's own metrics on test.
    pub own: Vec<(Method, Vec<(String, Rate)>)>,
    pub published: Vec<Published>,
    pub note: String,
}

/// Settings of a public run.
pub struct PublicOptions {
    pub limit: Option<usize>,
    pub seed: u64,
    pub batch_size: usize,
    /// Share of subjects (by seeded hash) in dev.
    pub dev_share: f64,
    /// At most this many dev items (a seeded sample by subject) for choosing strengths.
    pub dev_limit: Option<usize>,
    /// Where each finished (benchmark, method) part is saved as it completes.
    pub parts: Option<PathBuf>,
    /// Reuse parts found in `parts` whose settings match, instead of running them again.
    pub resume: bool,
    /// NQ-Swap: this many demonstrations before every query (see [`add_shots`]).
    pub shots: usize,
    /// Where the chosen settings are measured: test (dev chooses), or within dev alone, test
    /// unseen ([`bench::measured_on`]).
    pub split: crate::data::Split,
    /// Report only what is saved: methods without a saved part are listed as pending instead of
    /// run (the split pass still runs where the journal lacks it).
    pub saved_only: bool,
}

/// The demonstrations a benchmark gets: `--shots` applies to NQ-Swap alone.
fn shots_for(b: Benchmark, opts: &PublicOptions) -> usize {
    if b == Benchmark::Nqswap {
        opts.shots
    } else {
        0
    }
}

/// k-shot demonstrations: the `k` dev items with the shortest prompts leave dev, and each is
/// written out (context, query, its context answer) before every other item's query, closed-book
/// ones too. Test items never serve as demonstrations.
pub fn add_shots(dev: &mut Vec<Item>, test: &mut [Item], k: usize) -> Result<()> {
    if k == 0 {
        return Ok(());
    }
    if dev.len() <= k {
        return Err(Error::Invalid(format!(
            "{k} demonstrations need more than {k} dev items to take the demonstrations from; this run has {}",
            dev.len()
        )));
    }
    let text = |it: &Item| it.query(Form::Completion, true);
    let mut order: Vec<usize> = (0..dev.len()).collect();
    order.sort_by_key(|i| (text(&dev[*i]).len(), dev[*i].id.clone()));
    let prefix: String = order[..k]
        .iter()
        .map(|i| format!("{} {}\n\n", text(&dev[*i]), dev[*i].context_answer))
        .collect();
    let demos: std::collections::HashSet<usize> = order[..k].iter().copied().collect();
    *dev = std::mem::take(dev)
        .into_iter()
        .enumerate()
        .filter(|(i, _)| !demos.contains(i))
        .map(|(_, it)| it)
        .collect();
    for it in dev.iter_mut().chain(test.iter_mut()) {
        it.prefix = prefix.clone();
    }
    Ok(())
}

/// Run one benchmark, method by method; each finished method is saved to `opts.parts`.
pub fn run_one(
    model: &Model,
    dir: &Path,
    b: Benchmark,
    methods: &[Method],
    res: &Resources,
    opts: &PublicOptions,
    on: &mut bench::OnEvent,
) -> Result<Section> {
    let t0 = std::time::Instant::now();
    let name = b.name();
    let (n_items, used, items_hash) = items_used(dir, b, opts, on)?;
    let res = Resources {
        max_new: Some(b.max_new()),
        ..res.clone()
    };
    let mut run = BenchRun {
        model,
        b,
        res: &res,
        opts,
        sha256: model.identity()?.sha256,
        journal: None,
        parts: None,
    };
    if let Some(d) = &opts.parts {
        run.journal = Some(open_journal(&d.join(format!("{name}.runs.jsonl")), opts)?);
        run.parts = Some(open_journal(&keys::parts_path(d, name), opts)?);
        run.say_saved(on);
    }
    // After the journal: a run it refuses leaves the record of the saved runs' items alone.
    if let Some(d) = &opts.parts {
        check_items(d, name, &items_hash, opts)?;
    }
    let Some(split) = run.closed_book_split(&used, on)? else {
        return Ok(nothing_saved(b, n_items, &used, methods));
    };
    on(Event::Line(&format!("{name}: {}", split.counts())));
    let split_seconds = t0.elapsed().as_secs_f64();
    let (results, own, pending) = run.methods(methods, &split, on)?;
    let seconds = results.iter().fold(split_seconds, |s, r| s + r.seconds);
    let (published, note) = published(b, opts);
    Ok(Section {
        name: name.to_string(),
        n_items,
        n_dev: split.dev.len(),
        n_test: split.test.len(),
        seconds,
        split_seconds,
        methods: results,
        pending,
        own,
        published,
        note,
        dev_irrelevant_none: split.irrelevant_base,
    })
}

/// The benchmark's items, sampled and split (dev limited, with shots when asked): how many
/// there are in all, and the dev and test items used.
fn items_used(
    dir: &Path,
    b: Benchmark,
    opts: &PublicOptions,
    on: &mut bench::OnEvent,
) -> Result<(usize, Vec<Item>, String)> {
    let all = load(dir, b)?;
    let hash = data::content_hash(&all);
    let mut items = crate::bench::sample_by_subject(all, opts.limit, opts.seed);
    data::split_dev_test(&mut items, opts.seed, opts.dev_share);
    let items = bench::measured_on(items, opts.split)?;
    let (mut dev, mut test) = bench::dev_test(&items);
    add_shots(&mut dev, &mut test, shots_for(b, opts))?;
    let dev = crate::bench::sample_by_subject(dev, opts.dev_limit, opts.seed);
    on(Event::Line(&format!(
        "{}: {} items ({} dev used for choosing strengths, {} test)",
        b.name(),
        items.len(),
        dev.len(),
        test.len()
    )));
    Ok((items.len(), dev.into_iter().chain(test).collect(), hash))
}

/// What one benchmark's methods share while they run.
struct BenchRun<'a> {
    model: &'a Model,
    b: Benchmark,
    res: &'a Resources,
    opts: &'a PublicOptions,
    sha256: String,
    /// The runs of items finished so far (`DIR/NAME.runs.jsonl`).
    journal: Option<Journal<Run>>,
    /// The (method, settings) parts finished so far (`DIR/NAME.parts.jsonl`).
    parts: Option<Journal<keys::Part>>,
}

/// A method's headline outcomes per test item: with context, and closed-book on known facts.
type Outcomes = [Option<Vec<Outcome>>; 2];

impl BenchRun<'_> {
    /// The closed-book split pass over the used items, from the journal where saved; None
    /// when only saved runs are wanted and this pass is not saved.
    fn closed_book_split(
        &mut self,
        used: &[Item],
        on: &mut bench::OnEvent,
    ) -> Result<Option<bench::Parts>> {
        let (name, opts) = (self.b.name(), self.opts);
        let o = bench::SplitOptions {
            form: Form::Completion,
            batch: opts.batch_size,
            max_new: self.res.max_new,
            distractors: self.b.distractors().to_vec(),
            // NQ-Swap's contexts are passages: one per query keeps the sweep's cost bounded.
            dev_one_per_query: true,
        };
        let split_scope = format!(
            "{}|split{}",
            run_key(name, &self.sha256, opts),
            shots_key(self.b, opts)
        );
        if opts.saved_only
            && !scoped(&mut self.journal, &split_scope)
                .is_some_and(|mut j| bench::Parts::is_saved(used, &o, &mut j))
        {
            // Every method's runs come after the split's, so nothing of this benchmark is saved.
            on(Event::Line(&format!(
                "{name}: its closed-book split pass is not in the journal; all methods left pending"
            )));
            return Ok(None);
        }
        let split = bench::Parts::new(
            self.model,
            used,
            &o,
            scoped(&mut self.journal, &split_scope).as_mut(),
        )?;
        Ok(Some(split))
    }

    /// Run (or reuse) each of `methods` in turn: the results, with their paired differences
    /// from none; the benchmark's own table; and the methods left pending.
    fn methods(
        &mut self,
        methods: &[Method],
        split: &bench::Parts,
        on: &mut bench::OnEvent,
    ) -> Result<(Vec<MethodResult>, OwnRows, Vec<Method>)> {
        let (mut results, mut outcomes, mut pending) = (Vec::new(), Vec::new(), Vec::new());
        for m in methods {
            let Some((r, o)) = self.method(*m, split, on)? else {
                pending.push(*m);
                continue;
            };
            outcomes.push(o);
            results.push(r);
        }
        bench::fill_paired(&mut results);
        let own = own_table(self.b, &results, &outcomes);
        Ok((results, own, pending))
    }

    /// Run method `m` (or reuse its saved part); None when it is left pending (`saved_only`
    /// without a saved part).
    fn method(
        &mut self,
        m: Method,
        split: &bench::Parts,
        on: &mut bench::OnEvent,
    ) -> Result<Option<(MethodResult, Outcomes)>> {
        let grid = bench::grid(self.model, m, self.res)?;
        let keys = PartKeys {
            new: part_key(self, m, &grid, split)?,
            legacy: legacy_part_key(self, &grid, split),
        };
        let Some(mut r) = self.saved_or_run(m, split, &keys, on)? else {
            return Ok(None);
        };
        if r.chosen_params.is_none() {
            // Saved before settings were keyed as data: its chosen setting, found by label.
            let chosen = grid.iter().find(|s| s.label == r.chosen);
            r.chosen_params = chosen.map(|s| s.params.clone());
        }
        let mut read = |items, closed| {
            let chosen = (r.method, r.chosen.as_str(), r.chosen_params.as_ref());
            test_outcomes(&mut self.journal, &keys, chosen, (items, closed), self.b)
        };
        let o = [read(&split.test, false), read(&split.test_known, true)];
        Ok(Some((r, o)))
    }

    /// The saved part of method `m` under either of its keys, else its run (saved as it
    /// finishes); None when only saved parts are wanted and there is none.
    fn saved_or_run(
        &mut self,
        m: Method,
        split: &bench::Parts,
        keys: &PartKeys,
        on: &mut bench::OnEvent,
    ) -> Result<Option<MethodResult>> {
        let (name, opts) = (self.b.name(), self.opts);
        let saved = match (&opts.parts, &mut self.parts, opts.resume) {
            (Some(d), Some(parts), true) => saved_part(parts, d, name, m, keys)?,
            _ => None,
        };
        // A part saved before irrelevant contexts were measured lacks them, and its setting
        // was chosen without their bar: it is run again (its runs come from the journal).
        let stale =
            |r: &MethodResult| !split.test_irrelevant.is_empty() && r.test.irrelevant.is_none();
        let saved = match saved {
            Some(r) if stale(&r) => {
                on(Event::Line(&format!(
                    "{name} {}: the saved part has no irrelevant contexts; measuring it again",
                    m.name()
                )));
                None
            }
            other => other,
        };
        if let Some(r) = saved {
            on(Event::Line(&format!(
                "{name} {}: reusing the saved part",
                m.name()
            )));
            return Ok(Some(r));
        }
        if opts.saved_only {
            on(Event::Line(&format!(
                "{name} {}: no saved part, left pending",
                m.name()
            )));
            return Ok(None);
        }
        let hits = self.journal.as_ref().map_or(0, Journal::hits);
        let mut j = scoped_part(&mut self.journal, keys);
        let (res, batch) = (self.res, opts.batch_size);
        let mut r = bench::run_method(self.model, m, split, res, batch, j.as_mut(), on)?;
        if !self.b.distractors().is_empty() {
            // Where irrelevant contexts are measured, so are gold ones: the three types.
            let twins: Vec<Item> = split.test.iter().filter_map(Item::true_twin).collect();
            let gold = j.as_mut().map(|j| j.sub("gold"));
            r.gold = Some(bench::gold_rate(
                self.model, &r, &twins, split, res, gold, on,
            )?);
        }
        drop(j);
        r.reused_runs = self.journal.as_ref().map_or(0, Journal::hits) - hits;
        if let Some(parts) = &mut self.parts {
            save_part(parts, m, keys, &r)?;
        }
        Ok(Some(r))
    }
}

/// A section whose methods are all pending: nothing of the benchmark is saved.
fn nothing_saved(b: Benchmark, n_items: usize, used: &[Item], methods: &[Method]) -> Section {
    let (dev, test) = bench::dev_test(used);
    Section {
        name: b.name().to_string(),
        n_items,
        n_dev: dev.len(),
        n_test: test.len(),
        seconds: 0.0,
        split_seconds: 0.0,
        methods: vec![],
        pending: methods.to_vec(),
        own: vec![],
        published: vec![],
        note: "Nothing of this benchmark is saved yet.".into(),
        dev_irrelevant_none: None,
    }
}

/// Per method, the benchmark's own measures.
type OwnRows = Vec<(Method, Vec<(String, Rate)>)>;

/// Each method's own metrics, and its paired differences from `none`.
fn own_table(b: Benchmark, results: &[MethodResult], outcomes: &[Outcomes]) -> OwnRows {
    let base = results.iter().position(|r| r.method == Method::None);
    let base = |k: usize| base.and_then(|i| outcomes[i][k].as_deref());
    results
        .iter()
        .zip(outcomes)
        .map(|(m, o)| {
            let mut v = own_metrics(b, &m.test);
            v.push((
                format!("Δ {} vs none, paired (points)", headline(b)),
                paired_delta(base(0), o[0].as_deref()),
            ));
            v.push((
                "changed vs none: test prompts".into(),
                changed_share(base(0), o[0].as_deref()),
            ));
            v.push((
                "changed vs none: known facts closed-book".into(),
                changed_share(base(1), o[1].as_deref()),
            ));
            (m.method, v)
        })
        .collect()
}

/// Check that the benchmark's items (`hash`: [`data::content_hash`]) are those the folder's
/// saved parts and runs were measured on: the hash is kept in `DIR/NAME.items`, written by the
/// first run there. A run that would reuse saved work (`--resume`, `--saved-only`) on other
/// items is refused, naming both hashes; a fresh run records its items.
fn check_items(dir: &Path, name: &str, hash: &str, opts: &PublicOptions) -> Result<()> {
    let path = dir.join(format!("{name}.items"));
    let saved = std::fs::read_to_string(&path).ok();
    let saved = saved.as_deref().map(str::trim);
    let reuses = opts.resume || opts.saved_only;
    match saved {
        Some(old) if old != hash && reuses => Err(Error::file(
            &path,
            format!(
                "the saved runs were measured on {name} items with content hash {old}; the \
                 benchmark's file now gives {hash} (its questions or answers changed): run \
                 into another folder"
            ),
        )),
        Some(old) if old == hash => Ok(()),
        _ if opts.saved_only => Ok(()),
        _ => {
            std::fs::create_dir_all(dir).map_err(|e| Error::file(dir, e))?;
            data::write_atomic(&path, format!("{hash}\n").as_bytes())
        }
    }
}

/// One of the benchmark's journals (its runs', its parts'): kept with `resume`, else refused
/// when it holds records ([`Journal::open`]); only read with `saved_only`, so that a run still
/// appending to it is safe.
fn open_journal<R: Serialize + serde::de::DeserializeOwned>(
    path: &Path,
    opts: &PublicOptions,
) -> Result<Journal<R>> {
    match opts.saved_only {
        true => Journal::open_read_only(path),
        false => Journal::open(path, opts.resume),
    }
}

impl BenchRun<'_> {
    /// Say what the journals hold that may be reused.
    fn say_saved(&self, on: &mut bench::OnEvent) {
        let name = self.b.name();
        let runs = self.journal.as_ref().map_or(0, Journal::len);
        if runs > 0 {
            on(Event::Line(&format!(
                "{name}: {runs} finished runs in the journal are reused where their settings match"
            )));
        }
        let parts = self.parts.as_ref().map_or(0, Journal::len);
        if parts > 0 {
            on(Event::Line(&format!(
                "{name}: {parts} finished parts are saved; each is reused where its settings match"
            )));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An NQ-Swap item `nqswap:{i}` with context `ctx`; also the fixture of `paired`'s tests.
    pub(super) fn nq(i: usize, ctx: &str) -> Item {
        Item {
            id: format!("nqswap:{i}"),
            relation: "nq".into(),
            subject: format!("q{i}"),
            question: format!("q{i}?"),
            prompt: format!("question: q{i}\nanswer:"),
            context: format!("context: {ctx}\n"),
            prior_answer: format!("old{i}"),
            context_answer: format!("new{i}"),
            prior_aliases: vec![],
            context_aliases: vec![],
            split: None,
            variant: None,
            distractor: None,
            true_context: None,
            prefix: String::new(),
            exposure: None,
        }
    }

    #[test]
    fn shots_come_from_the_shortest_dev_items_and_precede_every_query() {
        let mut dev = vec![
            nq(1, "a long one here"),
            nq(2, "x"),
            nq(3, "yy"),
            nq(4, "zzz z"),
        ];
        let mut test = vec![nq(5, "t")];
        add_shots(&mut dev, &mut test, 2).unwrap();
        let want =
            "context: x\nquestion: q2\nanswer: new2\n\ncontext: yy\nquestion: q3\nanswer: new3\n\n";
        // The demonstrations left dev; test is whole and gets them too, even its shortest item.
        let ids: Vec<&str> = dev.iter().map(|i| i.id.as_str()).collect();
        assert_eq!(ids, ["nqswap:1", "nqswap:4"]);
        assert_eq!(test.len(), 1);
        for it in dev.iter().chain(&test) {
            assert_eq!(it.prefix, want);
        }
        assert_eq!(
            test[0].query(Form::Completion, true),
            format!("{want}context: t\nquestion: q5\nanswer:")
        );
        assert_eq!(
            test[0].query(Form::Completion, false),
            format!("{want}question: q5\nanswer:")
        );
        // Zero shots change nothing; too few dev items is an error that says why.
        let before = dev.clone();
        add_shots(&mut dev, &mut test, 0).unwrap();
        assert_eq!(dev, before);
        let err = add_shots(&mut dev, &mut test, 2).unwrap_err().to_string();
        assert!(
            err.contains("2 demonstrations") && err.contains("has 2"),
            "{err}"
        );
    }
}
