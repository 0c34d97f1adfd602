//! The end-to-end demo on one model:
//! 1. build the data;
//! 2. label every item;
//! 3. capture the train split;
//! 4. train probes: `follows_context` for steering, and `conflict` (on the three variants of
//!    train) as the gate of heads-gated;
//! 5. rank heads by ablation on dev;
//! 6. sweep every method on dev and measure it on test;
//! 7. measure activation density;
//! 8. write the report.
//!
//! Only the train split reaches the probes, and only dev reaches the choice of strengths.

use crate::bench::{self, Method, Resources};
use crate::data::{Form, Item};
use crate::error::Result;
use crate::model::Model;
use crate::report::{ProbeSummary, Report};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

/// Demo settings.
pub struct DemoOptions {
    pub form: Form,
    pub batch_size: usize,
    /// Items of dev used to rank heads by patching.
    pub patch_items: usize,
    pub methods: Vec<Method>,
    pub command: String,
}

/// What capture-then-train needs to know about the run.
struct ProbeRun<'a> {
    model: &'a Model,
    id: &'a crate::model::ModelId,
    form: Form,
    batch_size: usize,
    command: &'a str,
}

impl ProbeRun<'_> {
    /// Capture resid_post at `layers` (last position) for `items` into `acts_dir`, then
    /// train one logistic probe per layer for `target`.
    fn capture_and_train(
        &self,
        items: &[Item],
        labels: Option<&std::collections::HashMap<String, crate::label::ItemLabel>>,
        data: &Path,
        target: crate::probe::Target,
        layers: impl Iterator<Item = usize>,
        acts_dir: &Path,
    ) -> Result<crate::probe::ProbeFile> {
        let model = self.model;
        let sites: Vec<crate::Site> = layers.map(crate::Site::resid_post).collect();
        let copts = crate::capture::CaptureOptions {
            sites: sites.clone(),
            positions: crate::capture::PosMode::Last,
            form: self.form,
            with_context: true,
            batch_size: self.batch_size,
            shard_size: 256,
        };
        let meta = crate::capture::CaptureMeta {
            model: model.name(),
            weights: format!("{:?}", model.weights).to_lowercase(),
            data: data.display().to_string() + " (train split)",
            n_items: items.len(),
            sites: sites.iter().map(|s| s.to_string()).collect(),
            positions: crate::capture::PosMode::Last,
            form: self.form,
            with_context: true,
            shard_size: 256,
            steering: None,
            labels: labels.map(|_| "labels.jsonl".to_string()),
            complete: false,
        };
        crate::capture::capture(
            model,
            items,
            labels,
            &copts,
            &crate::Spec::new(),
            meta,
            acts_dir,
            &mut |_| {},
        )?;
        let acts = crate::capture::load(acts_dir, model.cfg().n_layers)?;
        let topts = crate::probe::TrainOptions::new(target, crate::probe::Kind::Logistic);
        let (probe_sites, n_train, n_test, n_pos) =
            crate::probe::train(&acts, &topts, &mut |_| {})?;
        Ok(crate::probe::ProbeFile {
            version: crate::probe::PROBE_FILE_VERSION,
            model: self.id.clone(),
            acts: acts_dir.display().to_string(),
            data: acts.meta.data.clone(),
            target,
            kind: crate::probe::Kind::Logistic,
            command: self.command.to_string(),
            seed: 0,
            n_train,
            n_test,
            n_pos,
            test_relations: None,
            best: crate::probe::best_site(&probe_sites),
            sites: probe_sites,
        })
    }
}

/// Run the demo into `out`, calling `stage` with a message as each stage starts.
pub fn run(
    model: &Model,
    out: &Path,
    opts: &DemoOptions,
    stage: &mut dyn FnMut(&str),
) -> Result<Report> {
    let mut timings: Vec<(String, f64)> = Vec::new();
    let mut clock = Instant::now();
    let mut lap = |name: &str, timings: &mut Vec<(String, f64)>| {
        timings.push((name.to_string(), clock.elapsed().as_secs_f64()));
        clock = Instant::now();
    };
    let id = model.identity()?;

    stage("building the data");
    let data_dir = out.join("data");
    crate::data::write_built(&data_dir)?;
    let (items, _) = crate::data::read_jsonl(&data_dir.join("counterfactual.jsonl"), false)?;
    lap("data", &mut timings);

    stage("labelling every item (closed-book and with context)");
    let mut lopts = crate::label::LabelOptions::new(opts.form);
    lopts.batch_size = opts.batch_size;
    let labels =
        crate::label::label_items(model, &items, &lopts, &crate::Spec::new(), &mut |_| {})?;
    crate::data::write_jsonl(&out.join("labels.jsonl"), &labels)?;
    let by_id: std::collections::HashMap<String, crate::label::ItemLabel> =
        labels.iter().map(|l| (l.id.clone(), l.clone())).collect();
    lap("label", &mut timings);

    stage(
        "capturing resid_post at every layer for the train split; training follows_context probes",
    );
    let train = |its: &[Item]| -> Vec<Item> {
        its.iter()
            .filter(|i| i.split.as_deref() == Some("train"))
            .cloned()
            .collect()
    };
    let train_items = train(&items);
    let probe_run = ProbeRun {
        model,
        id: &id,
        form: opts.form,
        batch_size: opts.batch_size,
        command: &opts.command,
    };
    let pf = probe_run.capture_and_train(
        &train_items,
        Some(&by_id),
        &data_dir.join("counterfactual.jsonl"),
        crate::probe::Target::FollowsContext,
        0..model.cfg().n_layers,
        &out.join("acts"),
    )?;
    lap("capture and probes", &mut timings);
    pf.write(&out.join("probes.json"))?;
    crate::probe::plot(&pf, &out.join("probe_layers.svg"))?;
    let mut gate = None;
    if opts.methods.contains(&Method::HeadsGated) {
        stage("capturing train's three variants and neutral text; training the conflict gate");
        let variants_path = data_dir.join("variants.jsonl");
        let (variants, _) = crate::data::read_jsonl(&variants_path, false)?;
        let g = probe_run.capture_and_train(
            &train(&variants),
            None,
            &variants_path,
            crate::probe::Target::Conflict,
            // Every third layer: enough to find where the conflict is readable, at a third
            // of the cost.
            (1..model.cfg().n_layers).step_by(3),
            &out.join("acts_variants"),
        )?;
        g.write(&out.join("conflict_probes.json"))?;
        gate = Some(g);
        lap("conflict probes (gate)", &mut timings);
    }

    let dev: Vec<Item> = items
        .iter()
        .filter(|i| i.split.as_deref() == Some("dev"))
        .take(opts.patch_items)
        .cloned()
        .collect();
    let (mut heads, mut context_heads) = (vec![], vec![]);
    let mut patching = None;
    if opts
        .methods
        .iter()
        .any(|m| matches!(m, Method::Heads | Method::HeadsGated))
    {
        stage("ranking attention heads by ablation on dev (which heads push the prior?)");
        let r = crate::patch::head_ablation(model, &dev, opts.form, 54, &mut |_| {})?;
        crate::patch::heatmap(&r, &out.join("patching_heads.svg"))?;
        crate::data::write_atomic(
            &out.join("patching_heads.json"),
            &serde_json::to_vec_pretty(&r).map_err(|e| crate::Error::Invalid(e.to_string()))?,
        )?;
        heads = bench::heads_from_patch(&r);
        context_heads = bench::context_heads_from_patch(&r);
        patching = Some(crate::patch::top(&r, 10).into_iter().cloned().collect());
        lap("patching", &mut timings);
    }

    stage("sweeping every method on dev and measuring it on test");
    let res = Resources {
        probes: Some(pf.clone()),
        heads,
        context_heads,
        gate,
        max_new: None,
        reft: vec![],
    };
    let methods = bench::run(
        model,
        &items,
        &opts.methods,
        &res,
        opts.form,
        opts.batch_size,
        &mut |e| {
            if let bench::Event::Line(m) = e {
                stage(m)
            }
        },
    )?;
    crate::report::sweep_chart(&methods, &out.join("sweep.svg"))?;
    lap("bench", &mut timings);

    stage("measuring activation density by familiarity condition (every other test item)");
    // Every other item keeps every relation and halves the time; `ctxsteer density` runs all.
    let test: Vec<Item> = items
        .iter()
        .filter(|i| i.split.as_deref() == Some("test"))
        .step_by(2)
        .cloned()
        .collect();
    let known: BTreeMap<String, bool> = labels.iter().map(|l| (l.id.clone(), l.known)).collect();
    let probes = crate::density::conditions(model, &test, Some(&known))?;
    let dsites = crate::Site::parse_pattern("blocks.*.mlp.hook_post", model.cfg().n_layers)?;
    let measured = crate::density::measure(
        model,
        &probes,
        &dsites,
        crate::density::DEFAULT_TAU,
        opts.batch_size,
        &mut |_| {},
    )?;
    let summary = crate::density::summarize(&measured);
    crate::density::plot(&summary, "active", &out.join("density_active.svg"))?;
    let density = summary
        .iter()
        .map(|(c, sides)| {
            let per = sides
                .iter()
                .map(|(side, m)| {
                    (
                        side.clone(),
                        m.iter()
                            .map(|(k, b)| {
                                (
                                    k.clone(),
                                    b.mean.iter().sum::<f64>() / b.mean.len().max(1) as f64,
                                )
                            })
                            .collect(),
                    )
                })
                .collect();
            (c.clone(), per)
        })
        .collect();
    lap("density", &mut timings);

    let mut charts = BTreeMap::new();
    charts.insert(
        "dev sweeps: adherence and retention by strength".to_string(),
        "sweep.svg".to_string(),
    );
    charts.insert(
        "probe AUROC by layer".to_string(),
        "probe_layers.svg".to_string(),
    );
    if patching.is_some() {
        charts.insert(
            "head ablation: change in logit(context) - logit(prior) (layer x head)".to_string(),
            "patching_heads.svg".to_string(),
        );
    }
    charts.insert(
        "activation density (fraction of active MLP units)".to_string(),
        "density_active.svg".to_string(),
    );
    let report = Report {
        title: "ctxsteer knowledge-conflict benchmark".into(),
        model: id,
        data: "built-in counterfactual data (test split; strengths chosen on dev)".into(),
        form: opts.form,
        command: opts.command.clone(),
        methods,
        probe: Some(ProbeSummary {
            file: "probes.json".into(),
            best: pf.best.clone(),
            sites: pf
                .sites
                .iter()
                .map(|s| (s.site.clone(), s.metrics.auroc, s.metrics.control_auroc))
                .collect(),
        }),
        patching,
        density: Some(density),
        timings,
        charts,
    };
    crate::report::write(&report, out)?;
    Ok(report)
}
