//! `bench conflict`, `bench public` and `demo`.

use super::*;
use anyhow::{bail, Context, Result};
use ctxsteer::{bench, Model, WeightsMode};
use std::path::PathBuf;

pub(super) fn bench_cmd(a: BenchArgs) -> Result<()> {
    a.split.check()?;
    let (items, skipped) = ctxsteer::data::read_jsonl(&a.data, a.skip_invalid)?;
    let _lock = ctxsteer::atomic::OutputLock::acquire(&a.out, true)?;
    if skipped > 0 {
        eprintln!("skipped {skipped} invalid line(s)");
    }
    let model = a.model.load_or(WeightsMode::F32)?;
    let (methods, res) = methods_and_resources(&model, &a.model, &a.with, a.form)?;
    let opts = ctxsteer::report::ConflictOptions {
        form: a.form,
        batch_size: a.batch_size,
        limit: a.limit,
        seed: a.seed,
        split: a.split.measure_on,
        resume: a.resume,
        out: a.out.clone(),
        data: a.data.display().to_string(),
        command: super::command_line(),
    };
    let report = ctxsteer::report::bench_conflict(
        &model,
        items,
        &methods,
        &res,
        &opts,
        &mut progress_events(),
    )?;
    print!("{}", summary_table(&report));
    println!("report written to {}", a.out.join("report.html").display());
    Ok(())
}

/// The final summary: one line per method.
fn summary_table(r: &ctxsteer::report::Report) -> String {
    let w = r
        .methods
        .iter()
        .map(|m| m.chosen.chars().count())
        .chain([13])
        .max()
        .unwrap_or(13);
    let mut s = format!(
        "{:<12} {:<w$} {:>22} {:>8} {:>10} {:>7} {:>7} {:>11} {:>7}\n",
        "method",
        "chosen on dev",
        "adherence [95% CI]",
        "M_R",
        "retention",
        "gold",
        "ppl x",
        "irrelevant",
        "named"
    );
    let pct = |x: Option<f64>| x.map_or("n/a".to_string(), |v| format!("{:.1}%", 100.0 * v));
    for m in &r.methods {
        let t = &m.test;
        let irr = t.irrelevant.as_ref();
        s += &format!(
            "{:<12} {:<w$} {:>6.1}% [{:>4.1}, {:>4.1}] {:>8.3} {:>9.1}% {:>7} {:>7.3} {:>11} {:>7}\n",
            m.method.name(),
            m.chosen,
            100.0 * t.adherence.value,
            100.0 * t.adherence.ci_low,
            100.0 * t.adherence.ci_high,
            t.memorization_ratio.value,
            100.0 * t.retention.value,
            pct(m.gold.as_ref().map(|g| g.value)),
            t.perplexity_ratio,
            pct(irr.map(|i| i.unchanged.value)),
            pct(irr.map(|i| i.distractor_named.value)),
        );
    }
    if r.methods.iter().any(|m| m.test.irrelevant.is_some()) {
        s += "gold: true answer named after a true context; irrelevant: answers left as the \
              model gives them closed-book after a context about another subject; named: the \
              distractor named\n";
    }
    s
}

pub(super) fn demo_cmd(
    model: ModelArgs,
    out: PathBuf,
    form: ctxsteer::data::Form,
    batch_size: usize,
    patch_items: usize,
    artefacts: &std::path::Path,
) -> Result<()> {
    let t0 = std::time::Instant::now();
    eprintln!(
        "[{:>5.0}s] loading the model (fetching it first if needed)",
        0.0
    );
    let m = model.load_or(WeightsMode::F32)?;
    let none = ctxsteer::bench::Artefacts::default();
    let (art, _) = none.resolve(&m.identity()?, artefacts, form)?;
    let (opts, note) = ctxsteer::demo::DemoOptions::from_artefacts(&m, &art)?;
    if let Some(note) = note {
        eprintln!("{note}");
    }
    let opts = ctxsteer::demo::DemoOptions {
        form,
        batch_size,
        patch_items,
        command: super::command_line(),
        ..opts
    };
    let report = ctxsteer::demo::run(&m, &out, &opts, &mut |msg| {
        eprintln!("[{:>5.0}s] {msg}", t0.elapsed().as_secs_f64())
    })?;
    println!();
    print!("{}", summary_table(&report));
    println!(
        "\nfinished in {:.0}s; report: {}",
        t0.elapsed().as_secs_f64(),
        out.join("report.html").display()
    );
    Ok(())
}

/// The methods to run (as given, else every one the artefacts allow) and what they use.
fn methods_and_resources(
    model: &Model,
    margs: &ModelArgs,
    w: &MethodArgs,
    form: ctxsteer::data::Form,
) -> Result<(Vec<ctxsteer::bench::Method>, ctxsteer::bench::Resources)> {
    let (art, note) = given(w)?.resolve(&model.identity()?, &w.artefacts, form)?;
    if let Some(note) = note {
        eprintln!("{note}");
    }
    eprintln!("{}", art.describe());
    let proxy = w.proxy.load(margs, model)?;
    let methods = w
        .methods
        .clone()
        .unwrap_or_else(|| art.methods(proxy.is_some()));
    let res = art.load(model, &methods, proxy)?;
    Ok((methods, res))
}

/// The files given as options: each --steer file sorted by what it holds, each --gate by its
/// target, then the deprecated spellings.
fn given(w: &MethodArgs) -> Result<ctxsteer::bench::Artefacts> {
    let mut art = ctxsteer::bench::Artefacts {
        heads_from: w.heads_from.clone(),
        ..Default::default()
    };
    for p in &w.steer {
        art.add_steer(p)
            .with_context(|| format!("--steer {}", p.display()))?;
    }
    for p in &w.gate {
        art.add_gate(p)
            .with_context(|| format!("--gate {}", p.display()))?;
    }
    let old = [
        ("--probes FILE", "--steer FILE", &w.probes, &mut art.probes),
        (
            "--head-probes FILE",
            "--steer FILE",
            &w.head_probes,
            &mut art.head_probes,
        ),
        (
            "--gate-probes FILE",
            "--gate FILE",
            &w.gate_probes,
            &mut art.gate,
        ),
    ];
    for (flag, new, given, slot) in old {
        if let Some(p) = given {
            super::args::deprecated(flag, new);
            slot.get_or_insert(p.clone());
        }
    }
    if !w.reft.is_empty() {
        super::args::deprecated("--reft FILE,FILE", "--steer FILE,FILE");
        art.reft.extend(w.reft.iter().cloned());
    }
    Ok(art)
}

pub(super) fn public_cmd(a: PublicArgs) -> Result<()> {
    a.split.check()?;
    if !a.dir.is_dir() {
        bail!(
            "--dir {}: no such folder (it should hold memotrap/, nqswap/ and world_capital/)",
            a.dir.display()
        );
    }
    // A --saved-only report may run beside a run that is still appending; two runs may not.
    let _lock = match a.saved_only {
        true => None,
        false => Some(ctxsteer::atomic::OutputLock::acquire(&a.out, true)?),
    };
    let model = a.model.load_or(WeightsMode::F32)?;
    let completion = ctxsteer::data::Form::Completion;
    let (methods, res) = methods_and_resources(&model, &a.model, &a.with, completion)?;
    let opts = ctxsteer::public::PublicOptions {
        limit: a.limit,
        seed: a.seed,
        batch_size: a.batch_size,
        dev_share: 0.3,
        dev_limit: (a.dev_limit > 0).then_some(a.dev_limit),
        parts: Some(a.out.join("parts")),
        resume: a.resume || a.saved_only,
        shots: a.shots,
        saved_only: a.saved_only,
        split: a.split.measure_on,
    };
    let mut report = ctxsteer::public::PublicReport {
        model: model.identity()?,
        command: super::command_line(),
        limit: a.limit,
        dev_limit: opts.dev_limit,
        seed: a.seed,
        sections: Vec::new(),
    };
    for b in &a.benchmarks {
        report.sections.push(ctxsteer::public::run_one(
            &model,
            &a.dir,
            *b,
            &methods,
            &res,
            &opts,
            &mut progress_events(),
        )?);
        // Written after each benchmark, so a long run has a report of what is finished.
        ctxsteer::public::write(&report, &a.out)?;
    }
    print!("{}", ctxsteer::public::markdown(&report));
    println!("report written to {}", a.out.join("report.md").display());
    Ok(())
}

/// Prints a benchmark's lines, with a progress bar under them for the evaluation under way.
fn progress_events() -> impl FnMut(bench::Event) {
    let mut bar: Option<indicatif::ProgressBar> = None;
    move |e| match e {
        bench::Event::Line(m) => match &bar {
            Some(b) => b.suspend(|| eprintln!("{m}")),
            None => eprintln!("{m}"),
        },
        bench::Event::Begin { what, items } => {
            if let Some(b) = bar.take() {
                b.finish_and_clear();
            }
            bar = Some(ctxsteer::progress::bar(items as u64, what, false));
        }
        bench::Event::Done(n) => {
            if let Some(b) = &bar {
                b.inc(n as u64)
            }
        }
    }
}
