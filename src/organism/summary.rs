//! A study's numbers: per exposure bucket, the mean of a measure's samples with a 95%
//! bootstrap interval; across buckets, the least-squares slope of the samples against
//! log2(1 + exposure), with a bootstrap interval over the samples.

use super::study::{self, Measure, Progress, Sample, StudyItems, StudyOptions};
use crate::error::Result;
use crate::model::Model;
use crate::stats::bootstrap_ci;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Bootstrap resamples for every interval.
pub const REPS: usize = 1000;

/// One exposure bucket of one measure.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Point {
    pub exposure: u32,
    pub n: usize,
    pub value: f64,
    pub ci_low: f64,
    pub ci_high: f64,
}

/// The change of a measure per doubling of (1 + exposure).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Fit {
    pub slope: f64,
    pub ci_low: f64,
    pub ci_high: f64,
    pub n: usize,
}

/// One measure, summarized.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Series {
    pub name: String,
    pub about: String,
    pub points: Vec<Point>,
    pub fit: Fit,
}

/// Every measure of one model (the final one or a checkpoint).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Snapshot {
    /// The model folder, or the checkpoint's folder name.
    pub label: String,
    /// Training steps behind it, where trainer.json says.
    pub step: Option<usize>,
    /// The layer whose residual separated objects best.
    pub probe_layer: usize,
    pub seconds: f64,
    pub series: Vec<Series>,
    pub notes: Vec<String>,
}

impl Snapshot {
    pub fn series(&self, name: &str) -> Option<&Series> {
        self.series.iter().find(|s| s.name == name)
    }
}

/// Where an exposure sits on the fits' axis: log2(1 + exposure).
pub fn x_of(exposure: u32) -> f64 {
    (1.0 + exposure as f64).log2()
}

/// Least-squares slope of value on log2(1 + exposure).
pub fn slope(samples: &[Sample]) -> f64 {
    let n = samples.len() as f64;
    if n < 2.0 {
        return 0.0;
    }
    let mx = samples.iter().map(|s| x_of(s.exposure)).sum::<f64>() / n;
    let my = samples.iter().map(|s| s.value).sum::<f64>() / n;
    let (mut sxy, mut sxx) = (0.0, 0.0);
    for s in samples {
        let dx = x_of(s.exposure) - mx;
        sxy += dx * (s.value - my);
        sxx += dx * dx;
    }
    if sxx == 0.0 {
        0.0
    } else {
        sxy / sxx
    }
}

fn fit(samples: &[Sample], seed: u64) -> Fit {
    let (ci_low, ci_high) = crate::stats::bootstrap(samples, REPS, seed, slope);
    Fit {
        slope: slope(samples),
        ci_low,
        ci_high,
        n: samples.len(),
    }
}

/// Per-bucket means with intervals, and the fit.
pub fn summarize(m: &Measure, seed: u64) -> Series {
    let mut buckets: BTreeMap<u32, Vec<f64>> = BTreeMap::new();
    for s in &m.samples {
        buckets.entry(s.exposure).or_default().push(s.value);
    }
    let points = buckets
        .into_iter()
        .map(|(exposure, v)| {
            let (ci_low, ci_high) = bootstrap_ci(&v, REPS, seed ^ exposure as u64);
            Point {
                exposure,
                n: v.len(),
                value: v.iter().sum::<f64>() / v.len() as f64,
                ci_low,
                ci_high,
            }
        })
        .collect();
    Series {
        name: m.name.clone(),
        about: m.about.clone(),
        points,
        fit: fit(&m.samples, seed),
    }
}

/// Every measure of the study on one model.
pub fn study(
    model: &Model,
    label: String,
    step: Option<usize>,
    items: &StudyItems,
    opts: &StudyOptions,
    progress: &mut Progress,
) -> Result<Snapshot> {
    let t0 = std::time::Instant::now();
    let (mut measures, labels) = study::answers(model, items, opts, progress)?;
    measures.extend(study::densities(model, &items.conflicts, opts, progress)?);
    let (sep, probe_layer) = study::separability(model, &items.conflicts, opts, progress)?;
    measures.push(sep);
    let (flips, notes) = super::flips::flips(model, &items.conflicts, &labels, opts, progress)?;
    measures.extend(flips);
    Ok(Snapshot {
        label,
        step,
        probe_layer,
        seconds: t0.elapsed().as_secs_f64(),
        series: measures
            .iter()
            .map(|m| summarize(m, opts.seed ^ 0x5757))
            .collect(),
        notes,
    })
}
