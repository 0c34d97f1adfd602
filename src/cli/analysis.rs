//! `probe`, `patch` and `density`.

use super::*;
use anyhow::{bail, Context, Result};
use ctxsteer::{Site, Spec, WeightsMode};

pub(super) fn probe_cmd(p: ProbeCmd) -> Result<()> {
    match p {
        ProbeCmd::Train(t) => probe_train(t),
        ProbeCmd::Show { file, json, plot } => probe_show(&file, json, plot.as_deref()),
        ProbeCmd::Apply {
            file,
            data,
            site,
            closed_book,
            json,
            model,
        } => probe_apply(&file, &data, &site, closed_book, json, &model),
    }
}

/// --target, or its deprecated spelling --label with a note.
fn target_of(
    target: ctxsteer::probe::Target,
    label: Option<ctxsteer::probe::Target>,
) -> ctxsteer::probe::Target {
    match label {
        Some(old) => {
            super::args::deprecated("--label TARGET", "--target TARGET");
            old
        }
        None => target,
    }
}

fn probe_train(t: ProbeTrain) -> Result<()> {
    use ctxsteer::probe::{self, ProbeFile};
    let ProbeTrain {
        acts,
        target,
        label,
        sites,
        kind,
        seed,
        test_relations,
        per_head,
        out,
        plot,
        model,
    } = t;
    if let Some(p) = &plot {
        ctxsteer::atomic::check_target(p).context("--plot")?;
    }
    let m = model.load_or(WeightsMode::F32)?;
    let id = m.identity()?;
    let mut a = ctxsteer::capture::load(&acts, m.cfg().n_layers)?;
    if a.meta.model != id.file {
        bail!(
            "{}: captured with {}, but the loaded model is {}",
            acts.display(),
            a.meta.model,
            id.file
        );
    }
    if let Some(pat) = sites {
        let keep = Site::parse_pattern(&pat, m.cfg().n_layers)?;
        a.sites.retain(|(s, _)| keep.contains(s));
        if a.sites.is_empty() {
            bail!(
                "--sites {pat}: none of these were captured in {}",
                acts.display()
            );
        }
    }
    let label = target_of(target, label);
    let mut opts = probe::TrainOptions::new(label, kind);
    opts.seed = seed;
    opts.per_head = per_head.then_some(m.cfg().n_heads);
    opts.test_relations =
        test_relations.map(|r| r.split(',').map(|s| s.trim().to_string()).collect());
    let pb = ctxsteer::progress::bar(a.sites.len() as u64, "probe", false);
    let trained = probe::train(&a, &opts, &mut |n| pb.inc(n as u64))?;
    pb.finish_and_clear();
    let data = a.meta.data.clone();
    let mut f = ProbeFile::new(id, &acts, data, &opts, super::command_line(), trained);
    f.positions = a.meta.positions;
    f.write(&out)?;
    print!("{}", probe::table(&f));
    if let Some(svg) = plot {
        probe::plot(&f, &svg)?;
        println!("plot written to {}", svg.display());
    }
    println!("probes written to {}", out.display());
    Ok(())
}

fn probe_show(file: &std::path::Path, json: bool, plot: Option<&std::path::Path>) -> Result<()> {
    if let Some(p) = plot {
        ctxsteer::atomic::check_target(p).context("--plot")?;
    }
    use ctxsteer::probe::{self, ProbeFile};
    let f = ProbeFile::read(file)?;
    if json {
        let rows: Vec<_> = f
            .sites
            .iter()
            .map(|s| serde_json::json!({"site": s.site, "metrics": s.metrics, "cosines": s.cosines, "spread": s.spread}))
            .collect();
        let v = serde_json::json!({"target": f.target, "kind": f.kind, "best": f.best, "model": f.model, "sites": rows});
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        print!("{}", probe::table(&f));
    }
    if let Some(svg) = plot {
        probe::plot(&f, svg)?;
    }
    Ok(())
}

fn probe_apply(
    file: &std::path::Path,
    data: &DataArgs,
    site: &str,
    closed_book: bool,
    json: bool,
    model: &ModelArgs,
) -> Result<()> {
    use ctxsteer::probe::ProbeFile;
    let f = ProbeFile::read(file)?;
    let items = data.read()?;
    let m = model.load_or(WeightsMode::F32)?;
    f.check_model(&m.identity()?, file)?;
    let sp = f.site(&ctxsteer::probe::SiteRef::parse(site))?;
    let s = Site::parse(&sp.site, m.cfg().n_layers)?;
    let pb = ctxsteer::progress::bar(items.len() as u64, "probe apply", false);
    // Read where the probe's capture read: the last token, or the subject's last.
    let o = ctxsteer::capture::CaptureOptions {
        sites: vec![s],
        positions: f.positions,
        form: data.form,
        with_context: !closed_book,
        batch_size: data.batch_size,
        shard_size: items.len().max(1),
    };
    let acts =
        ctxsteer::capture::acts_in_memory(&m, &items, &o, &Spec::new(), &mut |n| pb.inc(n as u64))?
            .pop()
            .unwrap_or_default();
    pb.finish_and_clear();
    for (it, x) in items.iter().zip(acts) {
        let z = sp.score(&x);
        let p = 1.0 / (1.0 + (-z).exp());
        if json {
            println!(
                "{}",
                serde_json::json!({"id": it.id, "site": sp.site, "score": z, "p_positive": p, "predicted": z > 0.0})
            );
        } else {
            println!(
                "{:<40} {:>7.3} {}",
                it.id,
                p,
                if z > 0.0 { "positive" } else { "negative" }
            );
        }
    }
    Ok(())
}

pub(super) fn patch_cmd(a: PatchArgs) -> Result<()> {
    let items = a.data.read()?;
    let model = a.model.load_or(WeightsMode::F32)?;
    let opts = ctxsteer::patch::PatchOptions {
        source: a.source,
        target: a.target,
        sites: a.sites,
        positions: a.positions,
        form: a.data.form,
        batch_size: a.data.batch_size,
        max_positions: a.max_positions.max(1),
    };
    let pb = ctxsteer::progress::bar(items.len() as u64, "patch", false);
    let r = if a.ablate {
        if a.sites != ctxsteer::patch::PatchSites::Heads {
            bail!("--ablate ranks attention heads: use it with --sites heads");
        }
        let target: Vec<_> = items
            .iter()
            .map(|i| ctxsteer::patch::variant_item(i, a.target))
            .collect();
        ctxsteer::patch::head_ablation(&model, &target, a.data.form, a.data.batch_size, &mut |n| {
            pb.inc(n as u64)
        })?
    } else {
        ctxsteer::patch::patch(&model, &items, &opts, &mut |n| pb.inc(n as u64))?
    };
    pb.finish_and_clear();
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    ctxsteer::data::write_atomic(&a.out.join("patch.json"), &serde_json::to_vec_pretty(&r)?)?;
    ctxsteer::patch::heatmap(&r, &a.out.join("heatmap.svg"))?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(());
    }
    println!(
        "{} items patched ({} skipped); mean logit difference (context - prior): source {:.2}, target {:.2}",
        r.n_items, r.n_skipped, r.mean_ld_source, r.mean_ld_target
    );
    println!("top sites (mean normalized effect, 95% CI):");
    for c in ctxsteer::patch::top(&r, 10) {
        println!(
            "  layer {:>2} {:<14} {:>7.3}  [{:.3}, {:.3}]",
            c.layer, c.key, c.mean, c.ci_low, c.ci_high
        );
    }
    println!(
        "wrote {} and {}",
        a.out.join("patch.json").display(),
        a.out.join("heatmap.svg").display()
    );
    Ok(())
}

pub(super) fn density_cmd(a: DensityArgs) -> Result<()> {
    use ctxsteer::density;
    use std::collections::BTreeMap;
    let items = a.data.read()?;
    let model = a.model.load_or(WeightsMode::F32)?;
    let sites = Site::parse_pattern(&a.sites, model.cfg().n_layers)?;
    let labels = a
        .labels
        .as_ref()
        .map(|p| ctxsteer::label::read_labels(p))
        .transpose()?;
    let known: Option<BTreeMap<String, bool>> = labels
        .as_ref()
        .map(|ls| ls.iter().map(|l| (l.id.clone(), l.known)).collect());
    let probes = density::conditions(&model, &items, known.as_ref())?;
    let pb = ctxsteer::progress::bar(probes.len() as u64, "density", false);
    let measured = density::measure(
        &model,
        &probes,
        &sites,
        a.tau,
        a.data.batch_size,
        &mut |n| pb.inc(n as u64),
    )?;
    pb.finish_and_clear();
    let summary = density::summarize(&measured);
    let corr = match &labels {
        Some(ls) => label_correlations(&measured, ls),
        None => BTreeMap::new(),
    };
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    ctxsteer::data::write_jsonl(&a.out.join("items.jsonl"), &measured)?;
    let report = serde_json::json!({
        "tau": a.tau, "sites": sites.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        "metrics": {
            "active": "fraction of units with |a| > tau * unit RMS (RMS over up to 64 natural, real-entity prompts)",
            "hoyer": "(sqrt(n) - L1/L2) / (sqrt(n) - 1): 0 dense, 1 one-hot",
            "l1_l2": "L1/L2 ratio: higher is denser",
            "participation": "(sum a^2)^2 / sum a^4 of resid_post: effective number of dimensions"
        },
        "summary": summary, "correlations": corr,
    });
    ctxsteer::data::write_atomic(
        &a.out.join("density.json"),
        &serde_json::to_vec_pretty(&report)?,
    )?;
    for m in density::METRICS {
        density::plot(&summary, m, &a.out.join(format!("{m}.svg")))?;
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    print_density(&summary, &corr);
    println!("wrote {}", a.out.display());
    Ok(())
}

type Correlations =
    std::collections::BTreeMap<&'static str, std::collections::BTreeMap<String, Vec<f64>>>;

/// Each metric's correlation, per layer, with the prior's strength (its closed-book
/// log-probability) and with following the prior.
fn label_correlations(
    measured: &[ctxsteer::density::ItemDensity],
    ls: &[ctxsteer::label::ItemLabel],
) -> Correlations {
    use ctxsteer::density;
    use ctxsteer::label::Label;
    use std::collections::BTreeMap;
    let strength: BTreeMap<String, f64> = ls
        .iter()
        .map(|l| (l.id.clone(), l.closed.logp_prior as f64))
        .collect();
    let follows: BTreeMap<String, f64> = ls
        .iter()
        .filter(|l| l.label != Label::Neither)
        .map(|l| {
            (
                l.id.clone(),
                f64::from(u8::from(l.label == Label::FollowsPrior)),
            )
        })
        .collect();
    let mut corr = BTreeMap::new();
    corr.insert("prior_logp", density::correlations(measured, &strength));
    corr.insert("follows_prior", density::correlations(measured, &follows));
    corr
}

/// The density table and the strongest correlation of each metric.
fn print_density(summary: &ctxsteer::density::Summary, corr: &Correlations) {
    println!(
        "{:<22} {:<10} {:>5} {:>9} {:>9} {:>9} {:>13}",
        "condition", "side", "n", "active", "hoyer", "l1/l2", "participation"
    );
    for (c, sides) in summary {
        for (side, m) in sides {
            let avg = |k: &str| m[k].mean.iter().sum::<f64>() / m[k].mean.len().max(1) as f64;
            println!(
                "{:<22} {:<10} {:>5} {:>9.4} {:>9.4} {:>9.2} {:>13.1}",
                c,
                side,
                m["active"].n,
                avg("active"),
                avg("hoyer"),
                avg("l1_l2"),
                avg("participation")
            );
        }
    }
    for (what, per) in corr {
        for (m, v) in per {
            let (l, r) = v
                .iter()
                .enumerate()
                .max_by(|x, y| x.1.abs().total_cmp(&y.1.abs()))
                .map(|(l, r)| (l, *r))
                .unwrap_or((0, 0.0));
            println!("correlation of {m} with {what}: strongest at layer {l}: r = {r:.3}");
        }
    }
}
