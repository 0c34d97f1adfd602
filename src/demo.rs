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
use crate::data::{Form, Item, Split};
use crate::error::Result;
use crate::label::ItemLabel;
use crate::model::Model;
use crate::report::{ProbeSummary, Report};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::Instant;

/// Demo settings.
pub struct DemoOptions {
    pub form: Form,
    pub batch_size: usize,
    /// Items of dev used to rank heads by patching.
    pub patch_items: usize,
    pub methods: Vec<Method>,
    /// Trained edits for the learned-edit methods (reft, reft-gated), e.g. the committed ones.
    pub reft: Vec<crate::reft::Reft>,
    /// A `relevant` gate for the gated methods, beside the conflict gate the demo trains (e.g.
    /// the committed one); None: the conflict gate alone.
    pub relevance: Option<crate::probe::ProbeFile>,
    pub command: String,
}

impl DemoOptions {
    /// The demo's methods and what they use, from the artefacts found for the model (the
    /// other settings at the command line's defaults: completion form, batches of 16, 32
    /// patching items), and a line saying which edits joined. With committed
    /// edits the demo sets the tool's best methods beside CAD (the gated edit with the
    /// committed relevance gate); probe steering and ungated heads, which never beat it, are
    /// left to `bench conflict`. Without edits it runs every method its own artefacts allow.
    pub fn from_artefacts(
        model: &Model,
        art: &bench::Artefacts,
    ) -> Result<(DemoOptions, Option<String>)> {
        let reft = art.edits(model, &[])?;
        let mut methods = vec![Method::None, Method::Instruct, Method::Cad];
        let mut opts = DemoOptions {
            form: Form::Completion,
            batch_size: 16,
            patch_items: 32,
            methods: vec![],
            reft,
            relevance: None,
            command: String::new(),
        };
        if opts.reft.is_empty() {
            methods.extend([
                Method::Steer,
                Method::SteerGated,
                Method::Heads,
                Method::HeadsGated,
            ]);
            opts.methods = methods;
            return Ok((opts, None));
        }
        let files: Vec<String> = art.reft.iter().map(|p| p.display().to_string()).collect();
        let note = format!(
            "the committed edit(s) {} join the benchmark as reft and reft-gated",
            files.join(", ")
        );
        methods.extend([Method::HeadsGated, Method::Reft, Method::ReftGated]);
        opts.methods = methods;
        opts.relevance = art.relevance_gate(model)?;
        Ok((opts, Some(note)))
    }
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
        labels: Option<&HashMap<String, ItemLabel>>,
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
        let meta = crate::capture::CaptureMeta::new(
            model,
            data.display().to_string() + " (train split)",
            items,
            &copts,
            None,
            labels.map(|_| "labels.jsonl".to_string()),
        )?;
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
        let trained = crate::probe::train(&acts, &topts, &mut |_| {})?;
        let data = acts.meta.data.clone();
        let command = self.command.to_string();
        Ok(crate::probe::ProbeFile::new(
            self.id.clone(),
            acts_dir,
            data,
            &topts,
            command,
            trained,
        ))
    }
}

/// Run the demo into `out`, calling `stage` with a message as each stage starts.
pub fn run(
    model: &Model,
    out: &Path,
    opts: &DemoOptions,
    stage: &mut dyn FnMut(&str),
) -> Result<Report> {
    let mut d = Demo {
        model,
        out,
        opts,
        stage,
        timings: Vec::new(),
        clock: Instant::now(),
    };
    let items = d.data()?;
    let labels = d.label(&items)?;
    let pf = d.follows_context_probes(&items, &labels)?;
    let gate = d.conflict_gate()?;
    let heads = d.rank_heads(&items)?;
    d.step("sweeping every method on dev and measuring it on test");
    let res = Resources {
        probes: Some(pf.clone()),
        heads: heads.prior,
        context_heads: heads.context,
        gate,
        relevance: opts.relevance.clone(),
        proxy: None,
        max_new: None,
        head_probes: None,
        reft: opts.reft.clone(),
    };
    let stage = &mut *d.stage;
    let measured = bench::run(
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
    crate::report::sweep_chart(&measured.methods, &out.join("sweep.svg"))?;
    crate::report::contexts_chart(&measured.methods, &out.join("contexts.svg"))?;
    d.lap("bench");
    let density = d.density(&items, &labels)?;
    let report = d.report(measured, &pf, heads.top, density)?;
    crate::report::write(&report, out)?;
    Ok(report)
}

/// The demo's state between stages: where it writes, and how long each stage took.
struct Demo<'a> {
    model: &'a Model,
    out: &'a Path,
    opts: &'a DemoOptions,
    stage: &'a mut dyn FnMut(&str),
    timings: Vec<(String, f64)>,
    clock: Instant,
}

/// Heads ranked by ablation: those that push the prior, those that carry the context, and
/// the strongest cells for the report.
#[derive(Default)]
struct RankedHeads {
    prior: Vec<(usize, usize)>,
    context: Vec<(usize, usize)>,
    top: Option<Vec<crate::patch::Cell>>,
}

impl Demo<'_> {
    fn step(&mut self, msg: &str) {
        (self.stage)(msg);
    }

    /// Record the time since the last lap under `name`.
    fn lap(&mut self, name: &str) {
        self.timings
            .push((name.to_string(), self.clock.elapsed().as_secs_f64()));
        self.clock = Instant::now();
    }

    fn probe_run<'b>(&'b self, id: &'b crate::model::ModelId) -> ProbeRun<'b> {
        ProbeRun {
            model: self.model,
            id,
            form: self.opts.form,
            batch_size: self.opts.batch_size,
            command: &self.opts.command,
        }
    }

    fn data(&mut self) -> Result<Vec<Item>> {
        self.step("building the data");
        let data_dir = self.out.join("data");
        crate::data::write_built(&data_dir)?;
        let (items, _) = crate::data::read_jsonl(&data_dir.join("counterfactual.jsonl"), false)?;
        self.lap("data");
        Ok(items)
    }

    fn label(&mut self, items: &[Item]) -> Result<Vec<ItemLabel>> {
        self.step("labelling every item (closed-book and with context)");
        let mut lopts = crate::label::LabelOptions::new(self.opts.form);
        lopts.batch_size = self.opts.batch_size;
        let labels =
            crate::label::label_items(self.model, items, &lopts, &crate::Spec::new(), &mut |_| {
                Ok(())
            })?;
        crate::data::write_jsonl(&self.out.join("labels.jsonl"), &labels)?;
        self.lap("label");
        Ok(labels)
    }

    fn follows_context_probes(
        &mut self,
        items: &[Item],
        labels: &[ItemLabel],
    ) -> Result<crate::probe::ProbeFile> {
        self.step(
            "capturing resid_post at every layer for the train split; training follows_context probes",
        );
        let by_id: HashMap<String, ItemLabel> =
            labels.iter().map(|l| (l.id.clone(), l.clone())).collect();
        let id = self.model.identity()?;
        let pf = self.probe_run(&id).capture_and_train(
            &of_split(items, Split::Train),
            Some(&by_id),
            &self.out.join("data/counterfactual.jsonl"),
            crate::probe::Target::FollowsContext,
            0..self.model.cfg().n_layers,
            &self.out.join("acts"),
        )?;
        self.lap("capture and probes");
        pf.write(&self.out.join("probes.json"))?;
        crate::probe::plot(&pf, &self.out.join("probe_layers.svg"))?;
        Ok(pf)
    }

    /// The conflict gate of heads-gated and reft-gated, when one of them runs.
    fn conflict_gate(&mut self) -> Result<Option<crate::probe::ProbeFile>> {
        let gated = [Method::HeadsGated, Method::ReftGated];
        if !self.opts.methods.iter().any(|m| gated.contains(m)) {
            return Ok(None);
        }
        self.step(
            "capturing train's variants (irrelevant contexts included) and neutral text; \
             training the conflict gate",
        );
        let variants_path = self.out.join("data/variants.jsonl");
        let (variants, _) = crate::data::read_jsonl(&variants_path, false)?;
        let id = self.model.identity()?;
        let g = self.probe_run(&id).capture_and_train(
            &of_split(&variants, Split::Train),
            None,
            &variants_path,
            crate::probe::Target::Conflict,
            // Every third layer: enough to find where the conflict is readable, at a third
            // of the cost.
            (1..self.model.cfg().n_layers).step_by(3),
            &self.out.join("acts_variants"),
        )?;
        g.write(&self.out.join("conflict_probes.json"))?;
        self.lap("conflict probes (gate)");
        Ok(Some(g))
    }

    /// Heads ranked by ablation on dev, when a heads method runs.
    fn rank_heads(&mut self, items: &[Item]) -> Result<RankedHeads> {
        let wanted = self
            .opts
            .methods
            .iter()
            .any(|m| matches!(m, Method::Heads | Method::HeadsGated));
        if !wanted {
            return Ok(RankedHeads::default());
        }
        self.step("ranking attention heads by ablation on dev (which heads push the prior?)");
        let dev: Vec<Item> = of_split(items, Split::Dev)
            .into_iter()
            .take(self.opts.patch_items)
            .collect();
        let r = crate::patch::head_ablation(self.model, &dev, self.opts.form, 54, &mut |_| {})?;
        crate::patch::heatmap(&r, &self.out.join("patching_heads.svg"))?;
        crate::data::write_atomic(
            &self.out.join("patching_heads.json"),
            &serde_json::to_vec_pretty(&r).map_err(|e| crate::Error::Invalid(e.to_string()))?,
        )?;
        self.lap("patching");
        Ok(RankedHeads {
            prior: bench::heads_from_patch(&r),
            context: bench::context_heads_from_patch(&r),
            top: Some(crate::patch::top(&r, 10).into_iter().cloned().collect()),
        })
    }

    /// Activation density by familiarity condition, mean over layers per side and metric.
    fn density(&mut self, items: &[Item], labels: &[ItemLabel]) -> Result<DensityTable> {
        self.step("measuring activation density by familiarity condition (every other test item)");
        // Every other item keeps every relation and halves the time; `ctxsteer density` runs all.
        let test: Vec<Item> = of_split(items, Split::Test)
            .into_iter()
            .step_by(2)
            .collect();
        let known: BTreeMap<String, bool> =
            labels.iter().map(|l| (l.id.clone(), l.known)).collect();
        let model = self.model;
        let probes = crate::density::conditions(model, &test, Some(&known))?;
        let dsites = crate::Site::parse_pattern("blocks.*.mlp.hook_post", model.cfg().n_layers)?;
        let tau = crate::density::DEFAULT_TAU;
        let measured = crate::density::measure(
            model,
            &probes,
            &dsites,
            tau,
            self.opts.batch_size,
            &mut |_| {},
        )?;
        let summary = crate::density::summarize(&measured);
        crate::density::plot(&summary, "active", &self.out.join("density_active.svg"))?;
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
        let table = summary
            .iter()
            .map(|(c, sides)| {
                let per = sides
                    .iter()
                    .map(|(side, m)| {
                        (
                            side.clone(),
                            m.iter().map(|(k, b)| (k.clone(), mean(&b.mean))).collect(),
                        )
                    })
                    .collect();
                (c.clone(), per)
            })
            .collect();
        self.lap("density");
        Ok(table)
    }

    fn report(
        &mut self,
        measured: bench::Measured,
        pf: &crate::probe::ProbeFile,
        patching: Option<Vec<crate::patch::Cell>>,
        density: DensityTable,
    ) -> Result<Report> {
        let mut charts = BTreeMap::new();
        let mut chart =
            |title: &str, file: &str| charts.insert(title.to_string(), file.to_string());
        chart(
            "dev sweeps: adherence and retention by strength",
            "sweep.svg",
        );
        chart(
            "faithfulness (gold and conflicting) against robustness (irrelevant)",
            "contexts.svg",
        );
        chart("probe AUROC by layer", "probe_layers.svg");
        if patching.is_some() {
            chart(
                "head ablation: change in logit(context) - logit(prior) (layer x head)",
                "patching_heads.svg",
            );
        }
        chart(
            "activation density (fraction of active MLP units)",
            "density_active.svg",
        );
        Ok(Report {
            title: "ctxsteer knowledge-conflict benchmark".into(),
            model: self.model.identity()?,
            data: "built-in counterfactual data (test split; strengths chosen on dev)".into(),
            form: self.opts.form,
            command: self.opts.command.clone(),
            methods: measured.methods,
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
            timings: std::mem::take(&mut self.timings),
            charts,
            dev_irrelevant_none: measured.dev_irrelevant_none,
        })
    }
}

/// Condition → side → metric → mean over layers.
type DensityTable = BTreeMap<String, BTreeMap<String, BTreeMap<String, f64>>>;

/// The items of one split.
fn of_split(items: &[Item], split: Split) -> Vec<Item> {
    items
        .iter()
        .filter(|i| i.split == Some(split))
        .cloned()
        .collect()
}
