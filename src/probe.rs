//! Linear probes, one per captured site, that locate where the model represents "answer from
//! the context" versus "answer from memory".
//!
//! Features are standardized on the train part. Logistic probes (linfa-logistic, L2 strength
//! chosen by grouped cross-validation on train) or least-squares probes (linfa-linear on ±1)
//! are scored on held-out subjects, beside a majority baseline and a control task on
//! shuffled labels. Each site also gets three unit directions in the site's own space: the
//! probe's, the class mean difference, and the first principal component of paired
//! differences. Each has its sign set so that positive means "context", and records the spread
//! of projections, so steering can be set in natural units.

use crate::capture::{Acts, IndexRow};
use crate::error::{Error, Result};
use crate::model::ModelId;
use crate::stats::{self, SplitMix};
use linfa::prelude::*;
use ndarray::{Array1, Array2, Axis};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What a probe predicts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    /// Behaviour: the answer follows the context (1) or the prior (0); `neither` is left out.
    FollowsContext,
    /// The prompt holds a context that contradicts memory (counterfactual variant, 1), or it
    /// does not: the context states the true fact (true_context, 0), there is none
    /// (no_context, 0), or the text is ordinary prose (neutral, 0). As a gate it fires only
    /// where there is a conflict to resolve.
    Conflict,
    /// The model knows the fact closed-book.
    Known,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Logistic,
    Linear,
}

/// Held-out scores of one probe.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Metrics {
    pub accuracy: f64,
    pub balanced_accuracy: f64,
    pub auroc: f64,
    /// Accuracy of always predicting the train majority class.
    pub majority_baseline: f64,
    /// The same probe trained and tested on shuffled labels.
    pub control_auroc: f64,
    /// auroc - control_auroc (Hewitt & Liang 2019).
    pub selectivity: f64,
    /// Mean AUROC over the cross-validation folds on train (used to pick the best site).
    pub cv_auroc: f64,
}

/// Spread of projections onto a direction, over all examples.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Spread {
    pub std: f32,
    /// Mean projection of the positive ("context") class.
    pub mean_pos: f32,
    pub mean_neg: f32,
}

/// One site's probe.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SiteProbe {
    pub site: String,
    /// Weights on standardized features; logit = w . (x - mean) / std + bias.
    pub weights: Vec<f32>,
    pub bias: f32,
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
    /// L2 strength chosen by cross-validation (logistic only).
    pub alpha: Option<f64>,
    /// Unit directions in the site's original space: probe, meandiff, pca.
    pub directions: BTreeMap<String, Vec<f32>>,
    pub spread: BTreeMap<String, Spread>,
    pub cosines: BTreeMap<String, f64>,
    pub metrics: Metrics,
}

impl SiteProbe {
    /// The probe's probability (logistic) or score (linear, ±1 scale) for one activation.
    pub fn score(&self, x: &[f32]) -> f32 {
        let z: f32 = x
            .iter()
            .zip(&self.mean)
            .zip(&self.std)
            .zip(&self.weights)
            .map(|(((x, m), s), w)| (x - m) / s * w)
            .sum::<f32>()
            + self.bias;
        z
    }

    pub fn direction(&self, name: &str) -> Result<&[f32]> {
        self.directions.get(name).map(Vec::as_slice).ok_or_else(|| {
            Error::Invalid(format!(
                "direction `{name}` is not in the probe file; valid: probe, meandiff, pca"
            ))
        })
    }
}

/// A probe file: everything needed to reuse the probes and to know where they came from.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ProbeFile {
    pub version: u32,
    pub model: ModelId,
    pub acts: String,
    pub data: String,
    pub target: Target,
    pub kind: Kind,
    pub command: String,
    pub seed: u64,
    pub n_train: usize,
    pub n_test: usize,
    pub n_pos: usize,
    /// The relations held out for testing, when the split was by relation.
    #[serde(default)]
    pub test_relations: Option<Vec<String>>,
    /// The site with the best cross-validated AUROC on train (ties go to the deepest; see
    /// [`best_site`]).
    pub best: String,
    pub sites: Vec<SiteProbe>,
}

impl ProbeFile {
    pub fn read(path: &std::path::Path) -> Result<ProbeFile> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::file(path, e))?;
        serde_json::from_str(&text).map_err(|e| Error::file(path, format!("not a probe file: {e}")))
    }

    pub fn write(&self, path: &std::path::Path) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(self).map_err(|e| Error::Invalid(e.to_string()))?;
        crate::data::write_atomic(path, &bytes)
    }

    /// Read a probe file and refuse it unless it was trained on `model`.
    pub fn read_for(path: &std::path::Path, model: &ModelId) -> Result<ProbeFile> {
        let f = ProbeFile::read(path)?;
        f.check_model(model, path)?;
        Ok(f)
    }

    /// Refuse probes trained on another model.
    pub fn check_model(&self, model: &ModelId, path: &std::path::Path) -> Result<()> {
        if self.model.d_model != model.d_model || self.model.sha256 != model.sha256 {
            return Err(Error::file(
                path,
                format!(
                    "these probes were trained on {} (sha256 {}, d_model {}), not on the loaded model {} (sha256 {}, d_model {})",
                    self.model.file,
                    &self.model.sha256[..12.min(self.model.sha256.len())],
                    self.model.d_model,
                    model.file,
                    &model.sha256[..12.min(model.sha256.len())],
                    model.d_model
                ),
            ));
        }
        Ok(())
    }

    /// A site's probe by name, or the best one for `best`.
    pub fn site(&self, name: &str) -> Result<&SiteProbe> {
        let want = if name == "best" {
            self.best.as_str()
        } else {
            name
        };
        self.sites.iter().find(|s| s.site == want).ok_or_else(|| {
            let names: Vec<&str> = self.sites.iter().map(|s| s.site.as_str()).collect();
            Error::Invalid(format!(
                "no probe at `{name}`; this file has: best, {}",
                names.join(", ")
            ))
        })
    }
}

/// Cross-validated AUROCs closer than this to the best count as tied. On a hundred training
/// items it is a handful of ranked pairs, within the spread between folds.
pub const BEST_TIE: f64 = 0.005;

/// The site `best` names in a probe file: the highest cross-validated AUROC on train, and among
/// the sites tied with it (within [`BEST_TIE`]), the deepest. Without the tie-break, a near-tie
/// flips between runs; and an early site sees little more than the tokens themselves.
pub fn best_site(sites: &[SiteProbe]) -> String {
    let top = sites
        .iter()
        .map(|s| s.metrics.cv_auroc)
        .fold(f64::NEG_INFINITY, f64::max);
    sites
        .iter()
        .filter(|s| s.metrics.cv_auroc >= top - BEST_TIE)
        .max_by_key(|s| depth(&s.site))
        .map(|s| s.site.clone())
        .unwrap_or_default()
}

/// How deep a site sits: its block for `blocks.{l}.…`, first for `hook_embed`, last for
/// `ln_final.…`.
fn depth(site: &str) -> usize {
    if site.starts_with("ln_final.") {
        return usize::MAX;
    }
    site.strip_prefix("blocks.")
        .and_then(|r| r.split_once('.'))
        .and_then(|(l, _)| l.parse::<usize>().ok())
        .map_or(0, |l| l + 1)
}

/// The label of an index row for a target; None leaves the row out.
pub fn target_of(row: &IndexRow, target: Target) -> Option<bool> {
    match target {
        Target::FollowsContext => match row.label.as_deref() {
            Some("follows_context") => Some(true),
            Some("follows_prior") => Some(false),
            _ => None,
        },
        Target::Known => row.known,
        Target::Conflict => match row.variant.as_deref() {
            Some("counterfactual") => Some(true),
            Some("true_context" | "no_context" | "neutral") => Some(false),
            _ => None,
        },
    }
}

/// Held-out group of a subject: about a quarter of subjects, chosen by a seeded hash.
pub fn is_test(subject: &str, seed: u64) -> bool {
    crate::data::stable_hash(&format!("{seed}:{}", subject.to_lowercase())).is_multiple_of(4)
}

/// (row index, label) pairs.
type Rows = Vec<(usize, bool)>;

/// Settings of a training run.
pub struct TrainOptions {
    pub target: Target,
    pub kind: Kind,
    pub seed: u64,
    /// L2 strengths tried by cross-validation (logistic).
    pub alphas: Vec<f64>,
    pub folds: usize,
    /// Test on these relations and train on the others (transfer across relations), instead of
    /// the default split by subject.
    pub test_relations: Option<Vec<String>>,
}

impl TrainOptions {
    pub fn new(target: Target, kind: Kind) -> Self {
        TrainOptions {
            target,
            kind,
            seed: 0,
            alphas: vec![0.01, 0.1, 1.0, 10.0, 100.0],
            folds: 4,
            test_relations: None,
        }
    }
}

/// A fitted linear scorer on standardized features.
struct Fitted {
    w: Array1<f64>,
    b: f64,
}

impl Fitted {
    fn scores(&self, x: &Array2<f64>) -> Vec<f64> {
        (x.dot(&self.w) + self.b).to_vec()
    }
}

fn fit(kind: Kind, x: &Array2<f64>, y: &[bool], alpha: f64) -> Result<Fitted> {
    match kind {
        Kind::Logistic => {
            let t = Array1::from_iter(y.iter().map(|v| *v as usize));
            let ds = linfa::Dataset::new(x.clone(), t);
            let m = linfa_logistic::LogisticRegression::default()
                .alpha(alpha)
                .max_iterations(200)
                .fit(&ds)
                .map_err(|e| Error::Invalid(format!("logistic probe: {e}")))?;
            // linfa's positive class is the larger label (1); flip if it chose otherwise.
            let sign = if m.labels().pos.class == 1 { 1.0 } else { -1.0 };
            Ok(Fitted {
                w: m.params() * sign,
                b: m.intercept() * sign,
            })
        }
        Kind::Linear => {
            let t = Array1::from_iter(y.iter().map(|v| if *v { 1.0 } else { -1.0 }));
            let ds = linfa::Dataset::new(x.clone(), t);
            let m = linfa_linear::LinearRegression::new()
                .fit(&ds)
                .map_err(|e| Error::Invalid(format!("linear probe: {e}")))?;
            Ok(Fitted {
                w: m.params().clone(),
                b: m.intercept(),
            })
        }
    }
}

/// Grouped k-fold cross-validation AUROC on train, for one alpha.
fn cv_auroc(
    kind: Kind,
    x: &Array2<f64>,
    y: &[bool],
    groups: &[u64],
    folds: usize,
    alpha: f64,
) -> Result<f64> {
    let mut total = 0.0;
    let mut used = 0;
    for f in 0..folds as u64 {
        let (tr, va): (Vec<usize>, Vec<usize>) =
            (0..y.len()).partition(|i| groups[*i] % folds as u64 != f);
        let ytr: Vec<bool> = tr.iter().map(|i| y[*i]).collect();
        let yva: Vec<bool> = va.iter().map(|i| y[*i]).collect();
        if ytr.iter().all(|v| *v)
            || ytr.iter().all(|v| !*v)
            || yva.iter().all(|v| *v)
            || yva.iter().all(|v| !*v)
        {
            continue;
        }
        let m = fit(kind, &x.select(Axis(0), &tr), &ytr, alpha)?;
        total += stats::auroc(&m.scores(&x.select(Axis(0), &va)), &yva);
        used += 1;
    }
    Ok(if used == 0 { 0.5 } else { total / used as f64 })
}

/// Train one probe per site of `acts`.
pub fn train(
    acts: &Acts,
    opts: &TrainOptions,
    progress: &mut dyn FnMut(usize),
) -> Result<(Vec<SiteProbe>, usize, usize, usize)> {
    let rows: Vec<(usize, bool)> = acts
        .index
        .iter()
        .enumerate()
        .filter_map(|(i, r)| target_of(r, opts.target).map(|y| (i, y)))
        .collect();
    let held_out = |i: usize| match &opts.test_relations {
        Some(rels) => rels.contains(&acts.index[i].relation),
        None => is_test(&acts.index[i].subject, opts.seed),
    };
    let (test_rows, train_rows): (Rows, Rows) = rows.iter().partition(|(i, _)| held_out(*i));
    let n_pos = rows.iter().filter(|(_, y)| *y).count();
    let check = |part: &[(usize, bool)], name: &str| -> Result<()> {
        let pos = part.iter().filter(|(_, y)| *y).count();
        if pos == 0 || pos == part.len() {
            return Err(Error::Invalid(format!(
                "the {name} part has {} examples of which {pos} are positive for {:?}: a probe needs both classes \
                 (did the capture get --labels, and does the data hold both variants for `conflict`?)",
                part.len(),
                opts.target
            )));
        }
        Ok(())
    };
    check(&train_rows, "train")?;
    check(&test_rows, "test")?;
    let idx = |p: &[(usize, bool)]| p.iter().map(|(i, _)| *i).collect::<Vec<_>>();
    let (tr_i, te_i) = (idx(&train_rows), idx(&test_rows));
    let ytr: Vec<bool> = train_rows.iter().map(|(_, y)| *y).collect();
    let yte: Vec<bool> = test_rows.iter().map(|(_, y)| *y).collect();
    let groups: Vec<u64> = tr_i
        .iter()
        .map(|i| {
            crate::data::stable_hash(&format!("fold:{}", acts.index[*i].subject.to_lowercase()))
        })
        .collect();
    // Control task: the labels shuffled across all used rows, same split.
    let mut shuffled: Vec<bool> = rows.iter().map(|(_, y)| *y).collect();
    SplitMix(opts.seed ^ 0x0C01_7201).shuffle(&mut shuffled);
    let ctrl: BTreeMap<usize, bool> = rows.iter().map(|(i, _)| *i).zip(shuffled).collect();
    let cytr: Vec<bool> = tr_i.iter().map(|i| ctrl[i]).collect();
    let cyte: Vec<bool> = te_i.iter().map(|i| ctrl[i]).collect();

    let mut out = Vec::new();
    for (site, x) in &acts.sites {
        let x = x.mapv(|v| v as f64);
        let (mean, std) = stats::mean_std(&x.select(Axis(0), &tr_i));
        let z = (&x - &mean) / &std;
        let (ztr, zte) = (z.select(Axis(0), &tr_i), z.select(Axis(0), &te_i));
        let (alpha, cv) = match opts.kind {
            Kind::Logistic => {
                let mut best = (opts.alphas[0], f64::MIN);
                for a in &opts.alphas {
                    let s = cv_auroc(opts.kind, &ztr, &ytr, &groups, opts.folds, *a)?;
                    if s > best.1 {
                        best = (*a, s);
                    }
                }
                (Some(best.0), best.1)
            }
            Kind::Linear => (
                None,
                cv_auroc(opts.kind, &ztr, &ytr, &groups, opts.folds, 0.0)?,
            ),
        };
        let a = alpha.unwrap_or(0.0);
        let m = fit(opts.kind, &ztr, &ytr, a)?;
        let s = m.scores(&zte);
        let pred: Vec<bool> = s.iter().map(|v| *v > 0.0).collect();
        let (accuracy, balanced_accuracy) = stats::accuracies(&pred, &yte);
        let auroc = stats::auroc(&s, &yte);
        let majority = ytr.iter().filter(|v| **v).count() * 2 >= ytr.len();
        let majority_baseline =
            yte.iter().filter(|v| **v == majority).count() as f64 / yte.len() as f64;
        let control_auroc = stats::auroc(&fit(opts.kind, &ztr, &cytr, a)?.scores(&zte), &cyte);
        let metrics = Metrics {
            accuracy,
            balanced_accuracy,
            auroc,
            majority_baseline,
            control_auroc,
            selectivity: auroc - control_auroc,
            cv_auroc: cv,
        };
        let all_i: Vec<usize> = rows.iter().map(|(i, _)| *i).collect();
        let all_y: Vec<bool> = rows.iter().map(|(_, y)| *y).collect();
        let rel: Vec<&str> = acts.index.iter().map(|r| r.relation.as_str()).collect();
        let dirs = directions(&x, &tr_i, &ytr, &rel, &m.w, &std, opts.seed);
        let mut spread = BTreeMap::new();
        for (name, d) in &dirs {
            spread.insert(name.clone(), spread_of(&x, &all_i, &all_y, d));
        }
        let f = |n: &str| {
            dirs.get(n)
                .map(|d| d.iter().map(|v| *v as f32).collect::<Vec<f32>>())
                .unwrap_or_default()
        };
        let (dp, dm, dc) = (f("probe"), f("meandiff"), f("pca"));
        let cosines = BTreeMap::from([
            ("probe_meandiff".to_string(), stats::cosine(&dp, &dm)),
            ("probe_pca".to_string(), stats::cosine(&dp, &dc)),
            ("meandiff_pca".to_string(), stats::cosine(&dm, &dc)),
        ]);
        let to32 = |v: &Array1<f64>| v.iter().map(|x| *x as f32).collect::<Vec<f32>>();
        out.push(SiteProbe {
            site: site.to_string(),
            weights: to32(&m.w),
            bias: m.b as f32,
            mean: to32(&mean),
            std: to32(&std),
            alpha,
            directions: BTreeMap::from([
                ("probe".into(), dp),
                ("meandiff".into(), dm),
                ("pca".into(), dc),
            ]),
            spread,
            cosines,
            metrics,
        });
        progress(1);
    }
    Ok((out, tr_i.len(), te_i.len(), n_pos))
}

/// The three unit directions of a site, each signed so that the positive class projects higher.
fn directions(
    x: &Array2<f64>,
    tr: &[usize],
    y: &[bool],
    relation: &[&str],
    w_std: &Array1<f64>,
    std: &Array1<f64>,
    seed: u64,
) -> BTreeMap<String, Array1<f64>> {
    let pos: Vec<usize> = tr
        .iter()
        .zip(y)
        .filter(|(_, y)| **y)
        .map(|(i, _)| *i)
        .collect();
    let neg: Vec<usize> = tr
        .iter()
        .zip(y)
        .filter(|(_, y)| !**y)
        .map(|(i, _)| *i)
        .collect();
    let mp = x
        .select(Axis(0), &pos)
        .mean_axis(Axis(0))
        .unwrap_or_else(|| Array1::zeros(x.ncols()));
    let mn = x
        .select(Axis(0), &neg)
        .mean_axis(Axis(0))
        .unwrap_or_else(|| Array1::zeros(x.ncols()));
    let meandiff = stats::unit(&(&mp - &mn));
    // Probe weights live on standardized features; w_j / std_j is the same linear form on x.
    let probe = stats::unit(&(w_std / std));
    // Paired differences (repeng's pca_diff): each positive with a negative drawn from the same
    // relation when there is one, so the differences carry the label more than the item.
    let mut rng = SplitMix(seed ^ 0x5EED);
    let diffs: Vec<Array1<f64>> = pos
        .iter()
        .map(|p| {
            let same: Vec<usize> = neg
                .iter()
                .copied()
                .filter(|n| relation[*n] == relation[*p])
                .collect();
            let pool = if same.is_empty() { &neg } else { &same };
            &x.row(*p) - &x.row(pool[rng.below(pool.len())])
        })
        .collect();
    let dm = Array2::from_shape_fn((diffs.len(), x.ncols()), |(i, j)| diffs[i][j]);
    let pca = stats::first_pc(&dm);
    let orient = |d: Array1<f64>| if d.dot(&(&mp - &mn)) < 0.0 { -d } else { d };
    BTreeMap::from([
        ("probe".to_string(), orient(probe)),
        ("meandiff".to_string(), meandiff),
        ("pca".to_string(), orient(pca)),
    ])
}

fn spread_of(x: &Array2<f64>, rows: &[usize], y: &[bool], d: &Array1<f64>) -> Spread {
    let proj: Vec<f64> = rows.iter().map(|i| x.row(*i).dot(d)).collect();
    let n = proj.len().max(1) as f64;
    let m = proj.iter().sum::<f64>() / n;
    let sd = (proj.iter().map(|p| (p - m).powi(2)).sum::<f64>() / n).sqrt();
    let mean_of = |cls: bool| {
        let v: Vec<f64> = proj
            .iter()
            .zip(y)
            .filter(|(_, l)| **l == cls)
            .map(|(p, _)| *p)
            .collect();
        v.iter().sum::<f64>() / v.len().max(1) as f64
    };
    Spread {
        std: sd as f32,
        mean_pos: mean_of(true) as f32,
        mean_neg: mean_of(false) as f32,
    }
}

/// The per-site table as text.
pub fn table(f: &ProbeFile) -> String {
    let mut s = format!(
        "target {:?}, {:?} probes, {} train / {} test examples ({} positive); best site {}\n",
        f.target, f.kind, f.n_train, f.n_test, f.n_pos, f.best
    );
    s += &format!(
        "{:<28} {:>6} {:>6} {:>6} {:>6} {:>7} {:>6} {:>6} {:>6} {:>6}\n",
        "site", "acc", "bal", "AUROC", "major", "control", "select", "cv", "cos p-m", "cos p-c"
    );
    for p in &f.sites {
        let m = &p.metrics;
        s += &format!(
            "{:<28} {:>6.3} {:>6.3} {:>6.3} {:>6.3} {:>7.3} {:>6.3} {:>6.3} {:>6.2} {:>6.2}\n",
            p.site,
            m.accuracy,
            m.balanced_accuracy,
            m.auroc,
            m.majority_baseline,
            m.control_auroc,
            m.selectivity,
            m.cv_auroc,
            p.cosines["probe_meandiff"],
            p.cosines["probe_pca"]
        );
    }
    s
}

/// Draw accuracy, AUROC and control AUROC by layer as an SVG.
pub fn plot(f: &ProbeFile, path: &std::path::Path) -> Result<()> {
    use plotters::prelude::*;
    let n = f.sites.len();
    let series = |g: &dyn Fn(&Metrics) -> f64| -> Vec<(f64, f64)> {
        f.sites
            .iter()
            .enumerate()
            .map(|(i, p)| (i as f64, g(&p.metrics)))
            .collect()
    };
    let root = SVGBackend::new(path, (760, 420)).into_drawing_area();
    let err = |e: &dyn std::fmt::Display| Error::file(path, e.to_string());
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("{:?} probes by site ({:?})", f.kind, f.target),
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(44)
        .build_cartesian_2d(0f64..(n.max(2) - 1) as f64, 0.3f64..1.0f64)
        .map_err(|e| err(&e))?;
    let labels: Vec<String> = f
        .sites
        .iter()
        .map(|p| p.site.replace("blocks.", "").replace(".hook_", " "))
        .collect();
    chart
        .configure_mesh()
        .x_desc("site (layer)")
        .y_desc("held-out score")
        .x_label_formatter(&|x| labels.get(*x as usize).cloned().unwrap_or_default())
        .draw()
        .map_err(|e| err(&e))?;
    type Line<'a> = (&'a str, RGBColor, Vec<(f64, f64)>);
    let lines: [Line; 3] = [
        ("AUROC", BLUE, series(&|m| m.auroc)),
        ("accuracy", GREEN, series(&|m| m.accuracy)),
        (
            "control AUROC (shuffled labels)",
            RED,
            series(&|m| m.control_auroc),
        ),
    ];
    for (name, color, pts) in lines {
        chart
            .draw_series(LineSeries::new(pts, color.stroke_width(2)))
            .map_err(|e| err(&e))?
            .label(name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site(name: &str, cv_auroc: f64) -> SiteProbe {
        SiteProbe {
            site: name.into(),
            weights: vec![],
            bias: 0.0,
            mean: vec![],
            std: vec![],
            alpha: None,
            directions: BTreeMap::new(),
            spread: BTreeMap::new(),
            cosines: BTreeMap::new(),
            metrics: Metrics {
                cv_auroc,
                ..Metrics::default()
            },
        }
    }

    #[test]
    fn best_site_breaks_near_ties_toward_the_deeper_site() {
        // The demo's follows_context probes: layer 0 ahead of layer 22 by 0.0005.
        let mut sites = vec![
            site("blocks.0.hook_resid_post", 0.94736),
            site("blocks.2.hook_resid_post", 0.89),
            site("blocks.22.hook_resid_post", 0.94688),
            site("blocks.23.hook_resid_post", 0.9372),
            site("blocks.29.hook_resid_post", 0.912),
        ];
        assert_eq!(best_site(&sites), "blocks.22.hook_resid_post");
        // A clear lead is kept, however early the site.
        sites[0].metrics.cv_auroc = 0.96;
        assert_eq!(best_site(&sites), "blocks.0.hook_resid_post");
        // Depth is by block, not by the order of the list; ln_final is deepest, embed first.
        let sites = vec![
            site("ln_final.hook_normalized", 0.90),
            site("blocks.3.hook_resid_post", 0.902),
            site("hook_embed", 0.903),
        ];
        assert_eq!(best_site(&sites), "ln_final.hook_normalized");
        assert_eq!(depth("hook_embed"), 0);
        assert_eq!(depth("blocks.0.attn.hook_z"), 1);
        assert_eq!(best_site(&[]), "");
    }
}
