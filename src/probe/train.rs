//! Fitting the probes: the train/test split of an activation file, grouped cross-validation of
//! the L2 strength, the held-out scores with their majority baseline and shuffled-label
//! control, and the three directions each site offers for steering.

use super::{head_site_name, is_test, target_of, Kind, Metrics, SiteProbe, Spread, Target};
use crate::capture::Acts;
use crate::error::{Error, Result};
use crate::hooks::SiteKind;
use crate::stats::{self, SplitMix};
use linfa::prelude::*;
use ndarray::{s, Array1, Array2, Axis};
use std::collections::BTreeMap;

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
    /// Probe each head's slice of the `attn.hook_z` sites on its own (the model's head count),
    /// as inference-time intervention ranks heads (Li et al. 2023); other sites stay whole.
    pub per_head: Option<usize>,
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
            per_head: None,
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
    let sp = TrainRows::new(acts, opts)?;
    let mut out = Vec::new();
    for (site, x) in &acts.sites {
        match opts.per_head.filter(|_| site.kind == SiteKind::AttnZ) {
            Some(n_heads) => {
                let d_head = x.ncols() / n_heads.max(1);
                for h in 0..n_heads {
                    let slice = x.slice(s![.., h * d_head..(h + 1) * d_head]).to_owned();
                    out.push(probe_site(
                        &head_site_name(*site, h),
                        &slice,
                        acts,
                        opts,
                        &sp,
                    )?);
                }
            }
            None => out.push(probe_site(&site.to_string(), x, acts, opts, &sp)?),
        }
        progress(1);
    }
    let n_pos = sp.rows.iter().filter(|(_, y)| *y).count();
    Ok((out, sp.tr.len(), sp.te.len(), n_pos))
}

/// Which examples a training run uses, and where: the labelled rows, the train and test rows
/// with their labels, the shuffled labels of the control task, and the cross-validation group
/// of each train row.
struct TrainRows {
    rows: Rows,
    tr: Vec<usize>,
    te: Vec<usize>,
    ytr: Vec<bool>,
    yte: Vec<bool>,
    control_tr: Vec<bool>,
    control_te: Vec<bool>,
    groups: Vec<u64>,
}

impl TrainRows {
    fn new(acts: &Acts, opts: &TrainOptions) -> Result<TrainRows> {
        let rows: Rows = acts
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
        both_classes(&train_rows, "train", opts.target)?;
        both_classes(&test_rows, "test", opts.target)?;
        let idx = |p: &[(usize, bool)]| p.iter().map(|(i, _)| *i).collect::<Vec<_>>();
        let labels = |p: &[(usize, bool)]| p.iter().map(|(_, y)| *y).collect::<Vec<_>>();
        let (tr, te) = (idx(&train_rows), idx(&test_rows));
        let groups: Vec<u64> = tr
            .iter()
            .map(|i| {
                crate::data::stable_hash(&format!("fold:{}", acts.index[*i].subject.to_lowercase()))
            })
            .collect();
        // Control task: the labels shuffled across all used rows, same split.
        let mut shuffled = labels(&rows);
        SplitMix(opts.seed ^ 0x0C01_7201).shuffle(&mut shuffled);
        let ctrl: BTreeMap<usize, bool> = rows.iter().map(|(i, _)| *i).zip(shuffled).collect();
        Ok(TrainRows {
            control_tr: tr.iter().map(|i| ctrl[i]).collect(),
            control_te: te.iter().map(|i| ctrl[i]).collect(),
            ytr: labels(&train_rows),
            yte: labels(&test_rows),
            rows,
            tr,
            te,
            groups,
        })
    }
}

/// Refuse a part of the split that holds only one class.
fn both_classes(part: &[(usize, bool)], name: &str, target: Target) -> Result<()> {
    let pos = part.iter().filter(|(_, y)| *y).count();
    if pos == 0 || pos == part.len() {
        return Err(Error::Invalid(format!(
            "the {name} part has {} examples of which {pos} are positive for {target:?}: a probe needs both classes \
             (did the capture get labels, and does the data hold both variants for `conflict`?)",
            part.len(),
        )));
    }
    Ok(())
}

/// The L2 strength with the best cross-validated AUROC (logistic), and that AUROC.
fn choose_alpha(
    opts: &TrainOptions,
    z: &Array2<f64>,
    sp: &TrainRows,
) -> Result<(Option<f64>, f64)> {
    let cv = |a: f64| cv_auroc(opts.kind, z, &sp.ytr, &sp.groups, opts.folds, a);
    Ok(match opts.kind {
        Kind::Logistic => {
            let mut best = (opts.alphas[0], f64::MIN);
            for a in &opts.alphas {
                let s = cv(*a)?;
                if s > best.1 {
                    best = (*a, s);
                }
            }
            (Some(best.0), best.1)
        }
        Kind::Linear => (None, cv(0.0)?),
    })
}

/// The probe's held-out metrics, beside a control probe fitted to shuffled labels.
fn held_out_metrics(
    opts: &TrainOptions,
    m: &Fitted,
    ztr: &Array2<f64>,
    zte: &Array2<f64>,
    sp: &TrainRows,
    a: f64,
    cv: f64,
) -> Result<Metrics> {
    let s = m.scores(zte);
    let pred: Vec<bool> = s.iter().map(|v| *v > 0.0).collect();
    let (accuracy, balanced_accuracy) = stats::accuracies(&pred, &sp.yte);
    let auroc = stats::auroc(&s, &sp.yte);
    let majority = sp.ytr.iter().filter(|v| **v).count() * 2 >= sp.ytr.len();
    let majority_baseline =
        sp.yte.iter().filter(|v| **v == majority).count() as f64 / sp.yte.len() as f64;
    let control = fit(opts.kind, ztr, &sp.control_tr, a)?;
    let control_auroc = stats::auroc(&control.scores(zte), &sp.control_te);
    Ok(Metrics {
        accuracy,
        balanced_accuracy,
        auroc,
        majority_baseline,
        control_auroc,
        selectivity: auroc - control_auroc,
        cv_auroc: cv,
    })
}

/// One site's probe: standardize on train, choose the strength, fit, score on test beside the
/// baselines, and derive the site's directions.
fn probe_site(
    site: &str,
    x: &Array2<f32>,
    acts: &Acts,
    opts: &TrainOptions,
    sp: &TrainRows,
) -> Result<SiteProbe> {
    let x = x.mapv(|v| v as f64);
    let (mean, std) = stats::mean_std(&x.select(Axis(0), &sp.tr));
    let z = (&x - &mean) / &std;
    let (ztr, zte) = (z.select(Axis(0), &sp.tr), z.select(Axis(0), &sp.te));
    let (alpha, cv) = choose_alpha(opts, &ztr, sp)?;
    let a = alpha.unwrap_or(0.0);
    let m = fit(opts.kind, &ztr, &sp.ytr, a)?;
    let metrics = held_out_metrics(opts, &m, &ztr, &zte, sp, a, cv)?;
    let all_i: Vec<usize> = sp.rows.iter().map(|(i, _)| *i).collect();
    let all_y: Vec<bool> = sp.rows.iter().map(|(_, y)| *y).collect();
    let rel: Vec<&str> = acts.index.iter().map(|r| r.relation.as_str()).collect();
    let dirs = directions(&x, &sp.tr, &sp.ytr, &rel, &m.w, &std, opts.seed);
    let spread: BTreeMap<String, Spread> = dirs
        .iter()
        .map(|(name, d)| (name.clone(), spread_of(&x, &all_i, &all_y, d)))
        .collect();
    let to32 = |v: &Array1<f64>| v.iter().map(|x| *x as f32).collect::<Vec<f32>>();
    let dir32 = |n: &str| dirs.get(n).map(to32).unwrap_or_default();
    let (dp, dm, dc) = (dir32("probe"), dir32("meandiff"), dir32("pca"));
    let cosines = BTreeMap::from([
        ("probe_meandiff".to_string(), stats::cosine(&dp, &dm)),
        ("probe_pca".to_string(), stats::cosine(&dp, &dc)),
        ("meandiff_pca".to_string(), stats::cosine(&dm, &dc)),
    ]);
    Ok(SiteProbe {
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
    })
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
