//! Where `bench public` keeps finished work: each (benchmark, method) part's key and its record
//! in the parts journal, and the journal scopes of its runs. Keys are the settings as JSON;
//! the keys earlier versions built from display labels are still read.

use super::{shots_for, BenchRun, Benchmark, PublicOptions};
use crate::bench::{self, Method, MethodResult};
use crate::choice::Choice;
use crate::data;
use crate::error::{Error, Result};
use crate::journal::{Journal, Scoped};
use crate::label::Run;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// One finished (benchmark, method) measurement, recorded in the parts journal so that a long
/// run can resume. Earlier versions saved each in a file of its own (`DIR/NAME.METHOD.json`),
/// still read.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(super) struct Part {
    /// What must match for the part to be reused: model, sample, split and the method's grid.
    key: String,
    result: MethodResult,
}

/// The key of a part: the model, the run's sampling and split settings, the dev and test sizes,
/// and the method's settings as data (each setting's [`bench::Params`], the ranked heads, the
/// gate's site). JSON, so that rewording a label leaves it unchanged. `settings` is the
/// method's grid.
pub(super) fn part_key(
    run: &BenchRun,
    m: Method,
    settings: &[bench::Setting],
    split: &bench::Parts,
) -> Result<String> {
    #[derive(Serialize)]
    struct PartKey<'a> {
        version: u32,
        benchmark: &'a str,
        model_sha256: &'a str,
        limit: Option<usize>,
        seed: u64,
        dev_share: f64,
        dev_limit: Option<usize>,
        dev: usize,
        test: usize,
        max_new: Option<usize>,
        shots: usize,
        method: Method,
        settings: Vec<bench::Params>,
        heads: &'a [(usize, usize)],
        context_heads: &'a [(usize, usize)],
        gate: Option<&'a str>,
        /// `dev` when measured within dev ([`bench::measured_on`]); absent for test, so that
        /// the keys of parts saved before `--split` existed still match.
        #[serde(skip_serializing_if = "Option::is_none")]
        split: Option<&'static str>,
    }
    let (opts, res) = (run.opts, run.res);
    let key = PartKey {
        // 3: with irrelevant contexts, the dev choice keeps a standard error to spare
        // (`bench::Bars::irrelevant_guard`); a part chosen without it is not reused.
        version: match split.irrelevant_base {
            Some(_) => 3,
            None => 2,
        },
        benchmark: run.b.name(),
        model_sha256: &run.sha256,
        limit: opts.limit,
        seed: opts.seed,
        dev_share: opts.dev_share,
        dev_limit: opts.dev_limit,
        dev: split.dev.len(),
        test: split.test.len(),
        max_new: res.max_new,
        shots: shots_for(run.b, opts),
        method: m,
        settings: settings.iter().map(|s| s.params.clone()).collect(),
        heads: &res.heads,
        context_heads: &res.context_heads,
        gate: res.gate.as_ref().map(|g| g.best.as_str()),
        split: within_dev(opts).then_some("dev"),
    };
    serde_json::to_string(&key).map_err(|e| Error::Invalid(format!("part key: {e}")))
}

/// The key earlier versions gave a part, built from the settings' display labels and debug
/// text: still read, so that runs saved then are reused.
pub(super) fn legacy_part_key(
    run: &BenchRun,
    settings: &[bench::Setting],
    split: &bench::Parts,
) -> String {
    let res = run.res;
    let labels: Vec<&str> = settings.iter().map(|s| s.label.as_str()).collect();
    format!(
        "{}|dev={}|test={}|max_new={:?}|{}|heads={:?}|ctx_heads={:?}|gate={:?}",
        run_key(run.b.name(), &run.sha256, run.opts),
        split.dev.len(),
        split.test.len(),
        res.max_new,
        labels.join(";"),
        res.heads,
        res.context_heads,
        res.gate.as_ref().map(|g| g.best.clone()),
    ) + &shots_key(run.b, run.opts)
}

/// What every key of one benchmark run starts with: the model and the sampling and split
/// settings.
pub(super) fn run_key(name: &str, sha256: &str, opts: &PublicOptions) -> String {
    let key = format!(
        "{name}|{sha256}|limit={:?}|seed={}|dev_share={}|dev_limit={:?}",
        opts.limit, opts.seed, opts.dev_share, opts.dev_limit
    );
    match within_dev(opts) {
        true => key + "|within dev",
        false => key,
    }
}

/// Whether the run measures within dev, test unseen (`--split dev`).
fn within_dev(opts: &PublicOptions) -> bool {
    opts.split == data::Split::Dev
}

/// The part of a key that says how many demonstrations the prompts carry; empty for zero-shot,
/// so zero-shot keys are what they were before shots existed.
pub(super) fn shots_key(b: Benchmark, opts: &PublicOptions) -> String {
    match shots_for(b, opts) {
        0 => String::new(),
        k => format!("|shots={k}"),
    }
}

/// The benchmark's journal of finished parts, one [`Part`] per (method, settings).
pub(super) fn parts_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.parts.jsonl"))
}

/// The file an earlier version saved a part in.
fn legacy_part_path(dir: &Path, name: &str, m: Method) -> PathBuf {
    dir.join(format!("{name}.{}.json", m.name()))
}

/// A part's key ([`part_key`]) and the key earlier versions gave it ([`legacy_part_key`]).
pub(super) struct PartKeys {
    pub new: String,
    pub legacy: String,
}

/// A part's key in the parts journal: the method's name, and its part key hashed.
fn part_record(m: Method, keys: &PartKeys) -> String {
    format!("{}|{}", m.name(), hashed(&keys.new))
}

/// The saved part of method `m`: from the parts journal, else from the file an earlier version
/// saved it in under either key (then also recorded in the journal, which a writable run keeps).
/// A legacy file that does not parse is not reused.
pub(super) fn saved_part(
    parts: &mut Journal<Part>,
    dir: &Path,
    name: &str,
    m: Method,
    keys: &PartKeys,
) -> Result<Option<MethodResult>> {
    let matches = |p: &Part| p.key == keys.new || p.key == keys.legacy;
    if let Some(p) = parts.get(&part_record(m, keys)).filter(|p| matches(p)) {
        return Ok(Some(p.result.clone()));
    }
    let legacy = || -> Option<MethodResult> {
        let text = std::fs::read_to_string(legacy_part_path(dir, name, m)).ok()?;
        let p: Part = serde_json::from_str(&text).ok()?;
        matches(&p).then_some(p.result)
    };
    let Some(r) = legacy() else {
        return Ok(None);
    };
    save_part(parts, m, keys, &r)?;
    Ok(Some(r))
}

/// Record a finished part in the parts journal (a later record of the same key wins).
pub(super) fn save_part(
    parts: &mut Journal<Part>,
    m: Method,
    keys: &PartKeys,
    r: &MethodResult,
) -> Result<()> {
    let part = Part {
        key: keys.new.clone(),
        result: r.clone(),
    };
    parts.record(vec![(part_record(m, keys), part)])
}

/// The journal's place for the runs made under `key` (hashed: keys are long).
pub(super) fn scoped<'a>(
    journal: &'a mut Option<Journal<Run>>,
    key: &str,
) -> Option<Scoped<'a, Run>> {
    journal.as_mut().map(|j| Scoped::new(j, hashed(key)))
}

/// The journal's place for a part's runs: under its key, or under its legacy key where an
/// earlier version saved them.
pub(super) fn scoped_part<'a>(
    journal: &'a mut Option<Journal<Run>>,
    keys: &PartKeys,
) -> Option<Scoped<'a, Run>> {
    scoped(journal, &keys.new).map(|s| s.with_legacy(hashed(&keys.legacy)))
}

/// A journal scope made from a (long) key.
pub(super) fn hashed(key: &str) -> String {
    format!("{:016x}", data::stable_hash(key))
}
