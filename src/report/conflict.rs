//! `bench conflict` from start to report: sample, split, sweep on dev, measure on test, and
//! write `report.{json,md,html}` with its charts. The command line and the Python package both
//! call [`bench_conflict`].

use super::Report;
use crate::bench::{self, Method, MethodResult, OnEvent, Resources, SplitOptions};
use crate::data::{Form, Item, Split};
use crate::error::{Error, Result};
use crate::journal::Journal;
use crate::label::Run;
use crate::model::Model;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// How one `bench conflict` run goes.
#[derive(Clone, Debug)]
pub struct ConflictOptions {
    pub form: Form,
    pub batch_size: usize,
    /// About this many items (whole subjects, a seeded sample) before the dev/test split.
    pub limit: Option<usize>,
    pub seed: u64,
    /// Where the chosen settings are measured: `Test` (dev chooses), or `Dev`, within dev
    /// alone, test unseen ([`bench::measured_on`]).
    pub split: Split,
    /// Reuse the runs saved in `OUT/parts/conflict.runs.jsonl` by an earlier run on the same
    /// model, weights, form and items; without it a journal that holds runs is refused.
    pub resume: bool,
    pub out: PathBuf,
    /// The data file's name and the command line, for the report.
    pub data: String,
    pub command: String,
}

/// Run the benchmark on `items` and write its report into `o.out`.
pub fn bench_conflict(
    model: &Model,
    items: Vec<Item>,
    methods: &[Method],
    res: &Resources,
    o: &ConflictOptions,
    on: &mut OnEvent,
) -> Result<Report> {
    let items = bench::measured_on(bench::sample_by_subject(items, o.limit, o.seed), o.split)?;
    let t0 = std::time::Instant::now();
    let path = o.out.join("parts").join("conflict.runs.jsonl");
    let mut journal = Journal::<Run>::open(&path, o.resume)?;
    if !journal.is_empty() {
        let line = format!(
            "{}: {} finished runs are reused where they match",
            path.display(),
            journal.len()
        );
        on(bench::Event::Line(&line));
    }
    let split = SplitOptions {
        max_new: res.max_new,
        ..SplitOptions::new(o.form, o.batch_size)
    };
    let measured =
        bench::run_journaled(model, &items, methods, res, &split, Some(&mut journal), on)?;
    std::fs::create_dir_all(&o.out).map_err(|e| Error::file(&o.out, e))?;
    let title = match o.split {
        Split::Dev => {
            "ctxsteer knowledge-conflict benchmark, within dev (test unseen: half of \
                       dev's subjects choose, the other half measure)"
        }
        _ => "ctxsteer knowledge-conflict benchmark",
    };
    let report = Report {
        title: title.into(),
        model: model.identity()?,
        data: o.data.clone(),
        form: o.form,
        command: o.command.clone(),
        charts: charts(&measured.methods, &o.out)?,
        methods: measured.methods,
        probe: None,
        patching: None,
        density: None,
        timings: vec![("bench".into(), t0.elapsed().as_secs_f64())],
        dev_irrelevant_none: measured.dev_irrelevant_none,
    };
    super::write(&report, &o.out)?;
    Ok(report)
}

/// The report's charts, written into `out`: the dev sweeps and, where irrelevant contexts
/// were measured, faithfulness against robustness. Title → file name.
pub fn charts(methods: &[MethodResult], out: &Path) -> Result<BTreeMap<String, String>> {
    super::sweep_chart(methods, &out.join("sweep.svg"))?;
    let mut charts = BTreeMap::new();
    charts.insert(
        "dev sweeps: adherence and retention by strength".to_string(),
        "sweep.svg".to_string(),
    );
    if methods.iter().any(|m| m.test.irrelevant.is_some()) {
        super::contexts_chart(methods, &out.join("contexts.svg"))?;
        charts.insert(
            "faithfulness (gold and conflicting) against robustness (irrelevant)".to_string(),
            "contexts.svg".to_string(),
        );
    }
    Ok(charts)
}
