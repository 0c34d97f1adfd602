//! `bench conflict`, `bench public` and `demo`.

use super::*;
use anyhow::{bail, Context, Result};
use ctxsteer::{bench, Model, WeightsMode};
use std::path::PathBuf;

pub(super) fn bench_cmd(a: BenchArgs) -> Result<()> {
    let (items, skipped) = ctxsteer::data::read_jsonl(&a.data, a.skip_invalid)?;
    let _lock = ctxsteer::atomic::OutputLock::acquire(&a.out, true)?;
    if skipped > 0 {
        eprintln!("skipped {skipped} invalid line(s)");
    }
    let items = ctxsteer::bench::sample_by_subject(items, a.limit, a.seed);
    let model = a.model.load_or(WeightsMode::F32)?;
    let id = model.identity()?;
    let (methods, res) = methods_and_resources(&model, &a.with, a.form)?;

    let t0 = std::time::Instant::now();
    let methods = bench::run(
        &model,
        &items,
        &methods,
        &res,
        a.form,
        a.batch_size,
        &mut progress_events(),
    )?;
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let charts = report_charts(&methods, &a.out)?;
    let report = ctxsteer::report::Report {
        title: "ctxsteer knowledge-conflict benchmark".into(),
        model: id,
        data: a.data.display().to_string(),
        form: a.form,
        command: super::command_line(),
        methods,
        probe: None,
        patching: None,
        density: None,
        timings: vec![("bench".into(), t0.elapsed().as_secs_f64())],
        charts,
    };
    ctxsteer::report::write(&report, &a.out)?;
    print!("{}", summary_table(&report));
    println!("report written to {}", a.out.join("report.html").display());
    Ok(())
}

/// The report's charts, written into `out`: the dev sweeps and, where irrelevant contexts
/// were measured, faithfulness against robustness.
pub(super) fn report_charts(
    methods: &[ctxsteer::bench::MethodResult],
    out: &std::path::Path,
) -> Result<std::collections::BTreeMap<String, String>> {
    ctxsteer::report::sweep_chart(methods, &out.join("sweep.svg"))?;
    let mut charts = std::collections::BTreeMap::new();
    charts.insert(
        "dev sweeps: adherence and retention by strength".to_string(),
        "sweep.svg".to_string(),
    );
    if methods.iter().any(|m| m.test.irrelevant.is_some()) {
        ctxsteer::report::contexts_chart(methods, &out.join("contexts.svg"))?;
        charts.insert(
            "faithfulness (gold and conflicting) against robustness (irrelevant)".to_string(),
            "contexts.svg".to_string(),
        );
    }
    Ok(charts)
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
    use ctxsteer::bench::Method;
    let t0 = std::time::Instant::now();
    eprintln!(
        "[{:>5.0}s] loading the model (fetching it first if needed)",
        0.0
    );
    let m = model.load_or(WeightsMode::F32)?;
    let none = Artefacts {
        probes: None,
        head_probes: None,
        heads_from: None,
        gate_probes: None,
        reft: vec![],
    };
    let art = Artefacts::resolve(&m.identity()?, artefacts, form, none)?;
    let reft = reft_for(&m, &art.reft, &[])?;
    // With committed edits, the demo sets the tool's best methods beside CAD; probe steering
    // and ungated heads, which never beat it, are left to `bench conflict`. Without edits it
    // runs every method its own artefacts allow.
    let mut methods = vec![Method::None, Method::Instruct, Method::Cad];
    if reft.is_empty() {
        methods.extend([
            Method::Steer,
            Method::SteerGated,
            Method::Heads,
            Method::HeadsGated,
        ]);
    } else {
        eprintln!(
            "the committed edit(s) {} join the benchmark as reft and reft-gated",
            art.reft
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
        methods.extend([Method::HeadsGated, Method::Reft, Method::ReftGated]);
    }
    let opts = ctxsteer::demo::DemoOptions {
        form,
        batch_size,
        patch_items,
        methods,
        reft,
        command: super::command_line(),
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
    w: &MethodArgs,
    form: ctxsteer::data::Form,
) -> Result<(Vec<ctxsteer::bench::Method>, ctxsteer::bench::Resources)> {
    let given = Artefacts::given(w)?;
    let art = Artefacts::resolve(&model.identity()?, &w.artefacts, form, given)?;
    eprintln!("{}", art.describe());
    let methods = w.methods.clone().unwrap_or_else(|| art.methods());
    let mut res = resources(model, &art, &methods)?;
    res.reft = reft_for(model, &art.reft, &methods)?;
    Ok((methods, res))
}

/// The artefacts a benchmark run may use: files named on the command line, else those a
/// folder's manifest.json names for the loaded model.
pub(super) struct Artefacts {
    probes: Option<PathBuf>,
    head_probes: Option<PathBuf>,
    heads_from: Option<PathBuf>,
    gate_probes: Option<PathBuf>,
    reft: Vec<PathBuf>,
}

impl Artefacts {
    /// The files given as options: each --steer file sorted by what it holds, then the
    /// deprecated spellings.
    fn given(w: &MethodArgs) -> Result<Artefacts> {
        use ctxsteer::steer::SteerKind;
        let mut art = Artefacts {
            probes: None,
            head_probes: None,
            heads_from: w.heads_from.clone(),
            gate_probes: w.gate.clone(),
            reft: vec![],
        };
        for p in &w.steer {
            let slot =
                match SteerKind::detect(p).with_context(|| format!("--steer {}", p.display()))? {
                    SteerKind::Edit => {
                        art.reft.push(p.clone());
                        continue;
                    }
                    SteerKind::Probes if per_head(p)? => &mut art.head_probes,
                    SteerKind::Probes => &mut art.probes,
                    kind => bail!(
                    "--steer {}: a {} has no sweep in bench; give a probe file or learned edits",
                    p.display(),
                    ctxsteer::choice::Choice::name(kind)
                ),
                };
            if let Some(first) = slot.replace(p.clone()) {
                bail!(
                    "--steer names two files of one kind: {} and {}",
                    first.display(),
                    p.display()
                );
            }
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
                &mut art.gate_probes,
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

    /// One line naming the files the run uses, so that a log says which gate and edits ran.
    fn describe(&self) -> String {
        let show = |p: &Option<PathBuf>| {
            p.as_ref()
                .map_or("none".into(), |p| p.display().to_string())
        };
        let reft: Vec<String> = self.reft.iter().map(|p| p.display().to_string()).collect();
        format!(
            "artefacts: probes {}, head probes {}, head ranking {}, gate {}, edits {}",
            show(&self.probes),
            show(&self.head_probes),
            show(&self.heads_from),
            show(&self.gate_probes),
            if reft.is_empty() {
                "none".into()
            } else {
                reft.join(", ")
            }
        )
    }
}

/// `manifest.json` in an artefacts folder: the files made for one model, relative to it.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Manifest {
    model_sha256: String,
    #[serde(default)]
    probes: Option<PathBuf>,
    #[serde(default)]
    head_probes: Option<PathBuf>,
    /// The `conflict` gate: one file, or one per form (`{"completion": …, "chat": …}`).
    #[serde(default)]
    gate: Option<GateFiles>,
    #[serde(default)]
    heads: Option<PathBuf>,
    #[serde(default)]
    reft: Vec<PathBuf>,
}

/// A manifest's gate: one file for every form, or one per form.
#[derive(serde::Deserialize)]
#[serde(untagged)]
enum GateFiles {
    One(PathBuf),
    PerForm(std::collections::BTreeMap<ctxsteer::data::Form, PathBuf>),
}

impl GateFiles {
    /// The gate for prompts in `form`, if the manifest has one.
    fn for_form(self, form: ctxsteer::data::Form) -> Option<PathBuf> {
        match self {
            GateFiles::One(p) => Some(p),
            GateFiles::PerForm(mut m) => m.remove(&form),
        }
    }
}

/// The manifests in `dir` and its immediate subfolders (`probes/manifest.json`,
/// `probes/gemma3-270m/manifest.json`, …), each with its folder, in name order.
fn manifests(dir: &std::path::Path) -> Result<Vec<(PathBuf, Manifest)>> {
    let mut dirs = vec![dir.to_path_buf()];
    if let Ok(rd) = std::fs::read_dir(dir) {
        let mut subs: Vec<PathBuf> = rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_dir())
            .collect();
        subs.sort();
        dirs.extend(subs);
    }
    let mut out = vec![];
    for d in dirs {
        let path = d.join("manifest.json");
        if !path.exists() {
            continue;
        }
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let m: Manifest = serde_json::from_str(&text)
            .with_context(|| format!("{}: not an artefacts manifest", path.display()))?;
        out.push((d, m));
    }
    Ok(out)
}

impl Artefacts {
    /// `given`, with what it lacks filled in from the manifest for `model` in `dir` or one of
    /// its subfolders (the gate for `form`).
    fn resolve(
        model: &ctxsteer::model::ModelId,
        dir: &std::path::Path,
        form: ctxsteer::data::Form,
        given: Artefacts,
    ) -> Result<Artefacts> {
        let found = manifests(dir)?;
        let n = found.len();
        let Some((dir, m)) = found
            .into_iter()
            .find(|(_, m)| m.model_sha256 == model.sha256)
        else {
            if n > 0 {
                eprintln!(
                    "no manifest in {} or its subfolders is for the loaded model (sha256 {}); \
                     using only the artefacts given as options",
                    dir.display(),
                    model.sha256
                );
            }
            return Ok(given);
        };
        let fill =
            |given: Option<PathBuf>, listed: Option<PathBuf>| given.or(listed.map(|p| dir.join(p)));
        Ok(Artefacts {
            probes: fill(given.probes, m.probes),
            head_probes: fill(given.head_probes, m.head_probes),
            heads_from: fill(given.heads_from, m.heads),
            gate_probes: fill(given.gate_probes, m.gate.and_then(|g| g.for_form(form))),
            reft: match given.reft.is_empty() {
                true => m.reft.iter().map(|p| dir.join(p)).collect(),
                false => given.reft,
            },
        })
    }

    /// Every method these artefacts make possible.
    fn methods(&self) -> Vec<ctxsteer::bench::Method> {
        use ctxsteer::bench::Method::*;
        let mut v = vec![None, Instruct, Cad, AdaCad];
        if self.probes.is_some() {
            v.extend([Steer, SteerGated, SteerMulti, Clamp]);
        }
        if self.head_probes.is_some() {
            v.push(Iti);
        }
        if self.heads_from.is_some() {
            v.push(Heads);
            if self.gate_probes.is_some() {
                v.push(HeadsGated);
            }
        }
        if !self.reft.is_empty() {
            v.extend([Reft, ReftCad]);
            if self.gate_probes.is_some() {
                v.push(ReftGated);
            }
        }
        v
    }
}

/// Whether a probe file holds per-head probes (its best site is one head's slice).
fn per_head(p: &std::path::Path) -> Result<bool> {
    let pf = ctxsteer::probe::ProbeFile::read(p)?;
    Ok(ctxsteer::probe::probe_site(&pf.best, usize::MAX).is_ok_and(|(_, h)| h.is_some()))
}

/// The probes and head ranking a benchmark run may use, from their files.
fn resources(
    model: &Model,
    art: &Artefacts,
    methods: &[ctxsteer::bench::Method],
) -> Result<ctxsteer::bench::Resources> {
    let (probes, heads_from, gate_probes) = (&art.probes, &art.heads_from, &art.gate_probes);
    let id = model.identity()?;
    let read_probes = |p: &Option<PathBuf>| {
        p.as_deref()
            .map(|p| ctxsteer::probe::ProbeFile::read_for(p, &id))
            .transpose()
    };
    let (probes, gate) = (read_probes(probes)?, read_probes(gate_probes)?);
    let head_probes = read_probes(&art.head_probes)?;
    let (heads, context_heads) = match heads_from {
        Some(p) => {
            let text =
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            let r: ctxsteer::patch::PatchResult = serde_json::from_str(&text)
                .with_context(|| format!("{}: not a patch.json", p.display()))?;
            (
                ctxsteer::bench::heads_from_patch(&r),
                ctxsteer::bench::context_heads_from_patch(&r),
            )
        }
        None => (vec![], vec![]),
    };
    let res = ctxsteer::bench::Resources {
        probes,
        heads,
        context_heads,
        gate,
        max_new: None,
        reft: vec![],
        head_probes,
    };
    check_needs(methods, &res)?;
    Ok(res)
}

/// Refuse methods whose artefacts are missing, naming the option that gives them.
fn check_needs(
    methods: &[ctxsteer::bench::Method],
    res: &ctxsteer::bench::Resources,
) -> Result<()> {
    use ctxsteer::bench::Need;
    // Trained edits are checked where their files are read (reft_for).
    for need in Need::ALL.into_iter().filter(|n| *n != Need::Edit) {
        let users: Vec<&str> = methods
            .iter()
            .filter(|m| m.needs().contains(&need))
            .map(|m| m.name())
            .collect();
        if !users.is_empty() && !res.has(need) {
            bail!("{} {}", method_list(&users), need_option(need));
        }
    }
    Ok(())
}

/// "method X needs" or "methods X, Y and Z need".
fn method_list(names: &[&str]) -> String {
    match names {
        [one] => format!("method {one} needs"),
        [rest @ .., last] => format!("methods {} and {last} need", rest.join(", ")),
        [] => String::new(),
    }
}

/// The option that gives an artefact, and where it comes from.
fn need_option(need: ctxsteer::bench::Need) -> &'static str {
    use ctxsteer::bench::Need;
    match need {
        Need::Probes => "--steer probes/NAME.json (from `ctxsteer probe train`)",
        Need::HeadProbes => {
            "--steer probes/NAME.json with per-head probes (from `ctxsteer probe train --per-head` on an attn.hook_z capture)"
        }
        Need::RankedHeads => {
            "--heads-from DIR/patch.json (from `ctxsteer patch --sites heads --ablate`)"
        }
        Need::Gate => {
            "--gate probes/NAME.json (from `ctxsteer probe train --label conflict`)"
        }
        Need::Edit => "--steer FILE.safetensors (from `ctxsteer reft train`)",
    }
}

/// The trained edits of method reft, from their files; an error when reft runs without one.
fn reft_for(
    model: &Model,
    paths: &[PathBuf],
    methods: &[ctxsteer::bench::Method],
) -> Result<Vec<ctxsteer::reft::Reft>> {
    use ctxsteer::bench::Need;
    let users: Vec<&str> = methods
        .iter()
        .filter(|m| m.needs().contains(&Need::Edit))
        .map(|m| m.name())
        .collect();
    if paths.is_empty() && !users.is_empty() {
        bail!("{} {}", method_list(&users), need_option(Need::Edit));
    }
    paths
        .iter()
        .map(|p| {
            ctxsteer::reft::Reft::load(p, model).with_context(|| format!("--steer {}", p.display()))
        })
        .collect()
}

pub(super) fn public_cmd(a: PublicArgs) -> Result<()> {
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
    let (methods, res) = methods_and_resources(&model, &a.with, completion)?;
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
