//! Familiarity and density: does the model build dense activity for what it knows well and
//! sparse activity for unfamiliar or hard input, and is dense knowledge the kind that refuses
//! to yield to context?
//!
//! Per item and per layer, averaged over the prompt's tokens:
//! - `active`: the fraction of units with |a| > tau * that unit's scale (its RMS over a
//!   calibration set);
//! - `hoyer`: Hoyer sparsity (sqrt(n) - L1/L2) / (sqrt(n) - 1), 0 for a flat vector, 1 for one-hot;
//! - `l1_l2`: the L1/L2 ratio, between 1 and sqrt(n);
//! - `participation`: the participation ratio (sum a^2)^2 / sum a^4 of the residual stream
//!   (resid_post), the effective number of dimensions carrying its energy.
//!
//! Conditions compare, on the same queries:
//! - known against unknown facts;
//! - real against invented entities;
//! - natural against shuffled tokens;
//! - plain against after a long distracting paragraph.

use crate::data::Item;
use crate::error::{Error, Result};
use crate::hooks::{Positions, Site, SiteKind, Spec};
use crate::model::{Batch, LogitsAt, Model};
use crate::stats::SplitMix;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The metric names, in report order.
pub const METRICS: [&str; 4] = ["active", "hoyer", "l1_l2", "participation"];

/// Default threshold: a unit is active when |a| exceeds its RMS.
pub const DEFAULT_TAU: f32 = 1.0;

/// Hoyer sparsity of a vector.
pub fn hoyer(a: &[f32]) -> f64 {
    let n = a.len() as f64;
    let l1: f64 = a.iter().map(|x| x.abs() as f64).sum();
    let l2: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    if l2 == 0.0 || n <= 1.0 {
        return 0.0;
    }
    (n.sqrt() - l1 / l2) / (n.sqrt() - 1.0)
}

pub fn l1_l2(a: &[f32]) -> f64 {
    let l1: f64 = a.iter().map(|x| x.abs() as f64).sum();
    let l2: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    if l2 == 0.0 {
        0.0
    } else {
        l1 / l2
    }
}

/// (sum a^2)^2 / sum a^4: k for k equal non-zero entries.
pub fn participation(a: &[f32]) -> f64 {
    let s2: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum();
    let s4: f64 = a.iter().map(|x| (*x as f64).powi(4)).sum();
    if s4 == 0.0 {
        0.0
    } else {
        s2 * s2 / s4
    }
}

/// Fraction of units whose |a| exceeds tau times their scale.
pub fn active_fraction(a: &[f32], scale: &[f32], tau: f32) -> f64 {
    let n = a.len().max(1) as f64;
    a.iter()
        .zip(scale)
        .filter(|(x, s)| x.abs() > tau * **s)
        .count() as f64
        / n
}

/// An invented entity name, deterministic in `seed`: two or three syllables, capitalized.
pub fn invented_name(seed: u64) -> String {
    const SYL: [&str; 24] = [
        "vel", "ora", "thi", "mar", "quo", "zen", "lun", "dra", "ket", "osh", "pri", "val", "nix",
        "tor", "ael", "bru", "syl", "kav", "rem", "ulo", "fen", "gar", "ish", "wyn",
    ];
    let mut rng = SplitMix(seed ^ 0x1A7E_17ED);
    let n = 2 + rng.below(2);
    let s: String = (0..n).map(|_| SYL[rng.below(SYL.len())]).collect();
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().collect::<String>() + c.as_str())
        .unwrap_or_default()
}

/// The same tokens in a deterministic shuffled order.
pub fn shuffled(ids: &[u32], seed: u64) -> Vec<u32> {
    let mut v = ids.to_vec();
    SplitMix(seed).shuffle(&mut v);
    v
}

/// A paragraph written for the hard condition: long, fluent and unrelated to any fact asked.
pub const DISTRACTOR: &str =
    "Before we begin, a short note on the weather and the garden. The spring \
    was wet this year, so the tomatoes went in late and the beans climbed the fence before the \
    peas had flowered. A neighbour lent us a ladder to clear the gutters, and we spent an evening \
    sorting seeds into paper envelopes, labelling each one in pencil. The cat watched from the \
    windowsill, unimpressed, while the kettle boiled twice and nobody remembered to pour the tea. \
    Now, to the question at hand.";

/// One prompt under measurement.
#[derive(Clone, Debug)]
pub struct Probe {
    pub id: String,
    pub condition: String,
    /// `a` or `b` side of the comparison (e.g. known / unknown).
    pub side: String,
    pub ids: Vec<u32>,
}

/// Per item: per layer, per metric.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ItemDensity {
    pub id: String,
    pub condition: String,
    pub side: String,
    /// metric -> per-layer values.
    pub layers: BTreeMap<String, Vec<f64>>,
}

/// Build the condition prompts from the items' closed-book completion queries.
pub fn conditions(
    model: &Model,
    items: &[Item],
    known: Option<&BTreeMap<String, bool>>,
) -> Result<Vec<Probe>> {
    let mut out = Vec::new();
    for (k, it) in items.iter().enumerate() {
        let ids = model.tokenizer.encode_prompt(&it.prompt)?;
        let mut push = |condition: &str, side: &str, ids: Vec<u32>| {
            out.push(Probe {
                id: it.id.clone(),
                condition: condition.into(),
                side: side.into(),
                ids,
            })
        };
        if let Some(kn) = known.and_then(|m| m.get(&it.id)) {
            push(
                "known_vs_unknown",
                if *kn { "known" } else { "unknown" },
                ids.clone(),
            );
        }
        push("real_vs_invented", "real", ids.clone());
        let fake = invented_name(crate::data::stable_hash(&it.id) ^ k as u64);
        push(
            "real_vs_invented",
            "invented",
            model
                .tokenizer
                .encode_prompt(&it.prompt.replace(&it.subject, &fake))?,
        );
        push("natural_vs_shuffled", "natural", ids.clone());
        push(
            "natural_vs_shuffled",
            "shuffled",
            keep_bos(model, &ids, |rest| {
                shuffled(rest, crate::data::stable_hash(&it.id))
            }),
        );
        push("easy_vs_hard", "easy", ids.clone());
        push(
            "easy_vs_hard",
            "hard",
            model
                .tokenizer
                .encode_prompt(&format!("{DISTRACTOR} {}", it.prompt))?,
        );
    }
    Ok(out)
}

/// `f` applied to the tokens after a leading BOS, which stays first.
fn keep_bos(model: &Model, ids: &[u32], f: impl Fn(&[u32]) -> Vec<u32>) -> Vec<u32> {
    match (model.tokenizer.add_bos, ids.split_first()) {
        (true, Some((b, rest))) if Some(*b) == model.tokenizer.bos_id => {
            std::iter::once(*b).chain(f(rest)).collect()
        }
        _ => f(ids),
    }
}

/// Per-position activations of one site, keyed by position.
type ByPosition = BTreeMap<usize, Vec<f32>>;

fn set(layers: &mut BTreeMap<String, Vec<f64>>, metric: &str, layer: usize, value: f64) {
    if let Some(v) = layers.get_mut(metric) {
        v[layer] = value;
    }
}

/// Sites measured: the unit sites asked for, and resid_post at the same layers.
fn resid_for(sites: &[Site]) -> Vec<Site> {
    sites.iter().map(|s| Site::resid_post(s.layer)).collect()
}

/// Run prompts in batches, calling `each(probe, site, rows-by-position)`.
fn run_prompts(
    model: &Model,
    probes: &[Probe],
    sites: &[Site],
    batch: usize,
    each: &mut dyn FnMut(&Probe, Site, &ByPosition),
    progress: &mut dyn FnMut(usize),
) -> Result<()> {
    let pad = model.tokenizer.eos_id.unwrap_or(0);
    let spec = Spec::capture(sites, Positions::All);
    for chunk in probes.chunks(batch.max(1)) {
        let ids: Vec<Vec<u32>> = chunk.iter().map(|p| p.ids.clone()).collect();
        let (_, caps) = model.run(&Batch::left_padded(&ids, pad), &spec, LogitsAt::Last)?;
        for (r, p) in chunk.iter().enumerate() {
            for s in sites {
                each(p, *s, &caps.by_position(*s, r));
            }
        }
        progress(chunk.len());
    }
    Ok(())
}

/// Per-unit RMS of each unit site over a calibration set of prompts.
pub fn unit_scales(
    model: &Model,
    probes: &[Probe],
    sites: &[Site],
    batch: usize,
) -> Result<BTreeMap<Site, Vec<f32>>> {
    let mut sums: BTreeMap<Site, (Vec<f64>, usize)> = BTreeMap::new();
    run_prompts(
        model,
        probes,
        sites,
        batch,
        &mut |_, s, rows| {
            let e = sums
                .entry(s)
                .or_insert_with(|| (vec![0.0; model.cfg().site_width(s)], 0));
            for v in rows.values() {
                for (a, x) in e.0.iter_mut().zip(v) {
                    *a += (*x as f64).powi(2);
                }
                e.1 += 1;
            }
        },
        &mut |_| {},
    )?;
    Ok(sums
        .into_iter()
        .map(|(s, (v, n))| {
            (
                s,
                v.iter()
                    .map(|x| ((x / n.max(1) as f64).sqrt() as f32).max(1e-6))
                    .collect(),
            )
        })
        .collect())
}

/// Per-unit activation scales, from at most 64 real (or natural) prompts, or from all
/// prompts when there are none.
fn calibration_scales(
    model: &Model,
    probes: &[Probe],
    sites: &[Site],
    batch: usize,
) -> Result<BTreeMap<Site, Vec<f32>>> {
    let calib: Vec<Probe> = probes
        .iter()
        .filter(|p| p.side == "real" || p.side == "natural")
        .take(64)
        .cloned()
        .collect();
    let from = if calib.is_empty() { probes } else { &calib };
    unit_scales(model, from, sites, batch)
}

/// One zeroed record per prompt, with `n_l` layers of every metric.
fn empty_densities(probes: &[Probe], n_l: usize) -> Vec<ItemDensity> {
    probes
        .iter()
        .map(|p| ItemDensity {
            id: p.id.clone(),
            condition: p.condition.clone(),
            side: p.side.clone(),
            layers: METRICS
                .iter()
                .map(|m| (m.to_string(), vec![0.0; n_l]))
                .collect(),
        })
        .collect()
}

/// Measure every probe prompt.
pub fn measure(
    model: &Model,
    probes: &[Probe],
    sites: &[Site],
    tau: f32,
    batch: usize,
    progress: &mut dyn FnMut(usize),
) -> Result<Vec<ItemDensity>> {
    if sites
        .iter()
        .any(|s| s.kind == SiteKind::LnFinal || s.kind == SiteKind::Embed)
    {
        return Err(Error::Invalid(
            "density sites must be per-layer sites, e.g. blocks.*.mlp.hook_post".into(),
        ));
    }
    let scales = calibration_scales(model, probes, sites, batch)?;
    let resid = resid_for(sites);
    let mut all: Vec<Site> = sites.to_vec();
    all.extend(resid.iter().filter(|r| !sites.contains(r)));
    let n_l = sites.len();
    let mut out = empty_densities(probes, n_l);
    let index: BTreeMap<(String, String, String), usize> = probes
        .iter()
        .enumerate()
        .map(|(i, p)| ((p.id.clone(), p.condition.clone(), p.side.clone()), i))
        .collect();
    run_prompts(
        model,
        probes,
        &all,
        batch,
        &mut |p, s, rows| {
            let i = index[&(p.id.clone(), p.condition.clone(), p.side.clone())];
            let n = rows.len().max(1) as f64;
            let mean = |f: &dyn Fn(&[f32]) -> f64| rows.values().map(|v| f(v)).sum::<f64>() / n;
            if let Some(l) = sites.iter().position(|x| *x == s) {
                let sc = &scales[&s];
                let layers = &mut out[i].layers;
                set(layers, "active", l, mean(&|a| active_fraction(a, sc, tau)));
                set(layers, "hoyer", l, mean(&|a| hoyer(a)));
                set(layers, "l1_l2", l, mean(&|a| l1_l2(a)));
            }
            if let Some(l) = resid.iter().position(|x| *x == s) {
                set(
                    &mut out[i].layers,
                    "participation",
                    l,
                    mean(&|a| participation(a)),
                );
            }
        },
        progress,
    )?;
    Ok(out)
}

/// Mean and bootstrap 95% interval of one metric at one layer for one side of a condition.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Band {
    pub n: usize,
    pub mean: Vec<f64>,
    pub ci_low: Vec<f64>,
    pub ci_high: Vec<f64>,
}

fn band(values: &[&Vec<f64>], seed: u64) -> Band {
    let n_l = values.first().map_or(0, |v| v.len());
    let mut b = Band {
        n: values.len(),
        mean: vec![],
        ci_low: vec![],
        ci_high: vec![],
    };
    for l in 0..n_l {
        let col: Vec<f64> = values.iter().map(|v| v[l]).collect();
        b.mean
            .push(col.iter().sum::<f64>() / col.len().max(1) as f64);
        let (lo, hi) = crate::stats::bootstrap_ci(&col, 500, seed + l as u64);
        b.ci_low.push(lo);
        b.ci_high.push(hi);
    }
    b
}

/// condition -> side -> metric -> band.
pub type Summary = BTreeMap<String, BTreeMap<String, BTreeMap<String, Band>>>;

pub fn summarize(items: &[ItemDensity]) -> Summary {
    let mut s: Summary = BTreeMap::new();
    let mut groups: BTreeMap<(String, String), Vec<&ItemDensity>> = BTreeMap::new();
    for it in items {
        groups
            .entry((it.condition.clone(), it.side.clone()))
            .or_default()
            .push(it);
    }
    for ((c, side), v) in groups {
        for m in METRICS {
            let vals: Vec<&Vec<f64>> = v.iter().map(|it| &it.layers[m]).collect();
            s.entry(c.clone())
                .or_default()
                .entry(side.clone())
                .or_default()
                .insert(m.to_string(), band(&vals, 11));
        }
    }
    s
}

/// Pearson correlation (0/1 labels give the point-biserial correlation).
pub fn pearson(x: &[f64], y: &[f64]) -> f64 {
    let n = x.len().min(y.len()) as f64;
    if n < 3.0 {
        return 0.0;
    }
    let (mx, my) = (x.iter().sum::<f64>() / n, y.iter().sum::<f64>() / n);
    let cov: f64 = x.iter().zip(y).map(|(a, b)| (a - mx) * (b - my)).sum();
    let vx: f64 = x.iter().map(|a| (a - mx).powi(2)).sum();
    let vy: f64 = y.iter().map(|b| (b - my).powi(2)).sum();
    if vx == 0.0 || vy == 0.0 {
        0.0
    } else {
        cov / (vx * vy).sqrt()
    }
}

/// Per metric, per layer: correlation of the real-entity query's density with `y` (per item id).
pub fn correlations(
    items: &[ItemDensity],
    y: &BTreeMap<String, f64>,
) -> BTreeMap<String, Vec<f64>> {
    let real: Vec<&ItemDensity> = items
        .iter()
        .filter(|i| i.side == "real" && y.contains_key(&i.id))
        .collect();
    let ys: Vec<f64> = real.iter().map(|i| y[&i.id]).collect();
    METRICS
        .iter()
        .map(|m| {
            let n_l = real.first().map_or(0, |i| i.layers[*m].len());
            let per: Vec<f64> = (0..n_l)
                .map(|l| {
                    pearson(
                        &real.iter().map(|i| i.layers[*m][l]).collect::<Vec<_>>(),
                        &ys,
                    )
                })
                .collect();
            (m.to_string(), per)
        })
        .collect()
}

/// One metric's band for every condition and side, named "condition: side".
fn bands_of<'a>(summary: &'a Summary, metric: &str) -> Vec<(String, &'a Band)> {
    summary
        .iter()
        .flat_map(|(c, sides)| {
            sides
                .iter()
                .filter_map(move |(side, m)| m.get(metric).map(|b| (format!("{c}: {side}"), b)))
        })
        .collect()
}

/// A per-layer series as (layer, value) points.
fn by_layer(v: &[f64]) -> Vec<(f64, f64)> {
    v.iter().enumerate().map(|(l, v)| (l as f64, *v)).collect()
}

/// One SVG per metric: each condition's two sides by layer, with their intervals as thin lines.
pub fn plot(summary: &Summary, metric: &str, path: &std::path::Path) -> Result<()> {
    use plotters::prelude::*;
    let err = |e: &dyn std::fmt::Display| e.to_string();
    let bands = bands_of(summary, metric);
    let n_l = bands.first().map_or(1, |(_, b)| b.mean.len());
    let (lo, hi) = bands
        .iter()
        .flat_map(|(_, b)| b.ci_low.iter().chain(&b.ci_high))
        .fold((f64::MAX, f64::MIN), |a, v| (a.0.min(*v), a.1.max(*v)));
    let pad = ((hi - lo) * 0.05).max(1e-6);
    crate::markup::svg_chart(path, (820, 460), |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(
                format!("{metric} by layer and condition (95% bootstrap CI)"),
                ("sans-serif", 17),
            )
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(56)
            .build_cartesian_2d(0f64..(n_l.max(2) - 1) as f64, (lo - pad)..(hi + pad))
            .map_err(|e| err(&e))?;
        chart
            .configure_mesh()
            .x_desc("layer")
            .y_desc(metric)
            .draw()
            .map_err(|e| err(&e))?;
        for (k, (name, b)) in bands.iter().enumerate() {
            let color = Palette99::pick(k).to_rgba();
            chart
                .draw_series(LineSeries::new(by_layer(&b.mean), color.stroke_width(2)))
                .map_err(|e| err(&e))?
                .label(name.clone())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2))
                });
            for side in [&b.ci_low, &b.ci_high] {
                chart
                    .draw_series(LineSeries::new(by_layer(side), color.mix(0.35)))
                    .map_err(|e| err(&e))?;
            }
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font(("sans-serif", 11))
            .draw()
            .map_err(|e| err(&e))?;
        Ok(())
    })
}
