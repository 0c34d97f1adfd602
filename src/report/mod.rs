//! The benchmark report: `report.json` (schema in docs/methods.md), `report.md`, and a
//! self-contained `report.html` with the SVG charts inlined: the dev sweep curves, the probe
//! layer curve, the patching heatmap and, when measured, activation density.

use crate::bench::MethodResult;
use crate::error::Result;
use crate::markup::md_table;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

mod conflict;
mod contexts;
pub use conflict::{bench_conflict, charts, ConflictOptions};
pub use contexts::{
    chart as contexts_chart, faithfulness, markdown as contexts_markdown, robustness,
};

/// condition -> side -> metric -> mean over layers.
pub type DensityMeans = BTreeMap<String, BTreeMap<String, BTreeMap<String, f64>>>;

/// Everything the report shows.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Report {
    pub title: String,
    pub model: crate::model::ModelId,
    pub data: String,
    pub form: crate::data::Form,
    pub command: String,
    pub methods: Vec<MethodResult>,
    /// Per site: test AUROC and control AUROC of the probes used for steering.
    pub probe: Option<ProbeSummary>,
    /// The strongest patching cells.
    pub patching: Option<Vec<crate::patch::Cell>>,
    /// Density per condition (mean over layers, per metric and side).
    pub density: Option<DensityMeans>,
    /// Seconds per stage.
    pub timings: Vec<(String, f64)>,
    /// Chart files, relative to the report folder.
    pub charts: BTreeMap<String, String>,
    /// `bench conflict`: how `none` did on dev's irrelevant contexts, per item in order (the
    /// baseline the dev sweep's robustness bar is paired against).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dev_irrelevant_none: Option<crate::bench::Irrelevant>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ProbeSummary {
    pub file: String,
    pub best: String,
    pub sites: Vec<(String, f64, f64)>,
}

fn pct(x: f64) -> String {
    format!("{:.1}%", 100.0 * x)
}

fn rate(r: &crate::bench::Rate) -> String {
    format!("{} [{}, {}]", pct(r.value), pct(r.ci_low), pct(r.ci_high))
}

/// A paired difference in points with its interval, or n/a.
fn paired(m: &MethodResult, key: &str) -> String {
    m.paired.get(key).map_or("n/a".into(), |r| {
        format!(
            "{:+.1} [{:+.1}, {:+.1}]",
            100.0 * r.value,
            100.0 * r.ci_low,
            100.0 * r.ci_high
        )
    })
}

/// The main table as (header, rows).
fn table(rep: &Report) -> (Vec<&'static str>, Vec<Vec<String>>) {
    let mut header = vec![
        "method",
        "chosen on dev",
        "adherence (95% CI)",
        "TF adherence",
        "M_R",
        "prior retention",
        "true context kept",
        "perplexity ×",
        "dev constraints",
    ];
    let rows = rep
        .methods
        .iter()
        .map(|m| {
            let t = &m.test;
            let mut row = vec![
                m.method.name().to_string(),
                m.chosen.clone(),
                rate(&t.adherence),
                pct(t.tf_adherence.value),
                format!(
                    "{:.3} [{:.3}, {:.3}]",
                    t.memorization_ratio.value,
                    t.memorization_ratio.ci_low,
                    t.memorization_ratio.ci_high
                ),
                rate(&t.retention),
                m.gold.as_ref().map_or("n/a".into(), rate),
                format!("{:.3}", t.perplexity_ratio),
                if m.sweep.is_empty() {
                    "no sweep".into()
                } else if m.constraints_met {
                    "met".into()
                } else {
                    "not met".into()
                },
            ];
            if has_paired(rep) {
                row.splice(3..3, [paired(m, "vs none"), paired(m, "vs cad")]);
            }
            row
        })
        .collect();
    if has_paired(rep) {
        header.splice(
            3..3,
            ["Δ vs none, paired (points)", "Δ vs cad, paired (points)"],
        );
    }
    (header, rows)
}

/// Whether the report has paired differences (reports written before they existed do not).
fn has_paired(rep: &Report) -> bool {
    rep.methods.iter().any(|m| !m.paired.is_empty())
}

/// Per relation: adherence of each method on test.
fn relation_table(rep: &Report) -> (Vec<String>, Vec<Vec<String>>) {
    let mut header = vec!["relation".to_string()];
    header.extend(rep.methods.iter().map(|m| m.method.name().to_string()));
    let rels: std::collections::BTreeSet<&String> = rep
        .methods
        .iter()
        .flat_map(|m| m.test.per_relation.keys())
        .collect();
    let rows = rels
        .into_iter()
        .map(|r| {
            let mut row = vec![r.clone()];
            for m in &rep.methods {
                row.push(
                    m.test
                        .per_relation
                        .get(r)
                        .map(|x| format!("{} (n={})", pct(x.adherence), x.n))
                        .unwrap_or_default(),
                );
            }
            row
        })
        .collect();
    (header, rows)
}

pub fn markdown(rep: &Report) -> String {
    let mut s = format!("# {}\n\n", rep.title);
    s += &format!(
        "Model `{}` (sha256 {}…), data `{}`, form {:?}.\n\nCommand: `{}`\n\n",
        rep.model.file,
        &rep.model.sha256[..12.min(rep.model.sha256.len())],
        rep.data,
        rep.form,
        rep.command
    );
    s += "## Test split, each method at the setting chosen on dev\n\n";
    let (h, rows) = table(rep);
    s += &md_table(&h, &rows);
    s += LEGEND_HEAD;
    if has_paired(rep) {
        s += PAIRED_LEGEND;
    }
    let guarded = rep.dev_irrelevant_none.is_some();
    s += LEGEND;
    s += crate::bench::irrelevant_bar_words(guarded);
    s += LEGEND_TAIL;
    s += &contexts::markdown(&rep.methods, 2, guarded);
    s += "## Adherence per relation (test)\n\n";
    let (h, rows) = relation_table(rep);
    s += &md_table(&h, &rows);
    s += &md_sweeps(rep);
    s += &md_extras(rep);
    s += "\n## Charts\n\n";
    for (k, f) in &rep.charts {
        s += &format!("![{k}]({f})\n\n");
    }
    s
}

const LEGEND_HEAD: &str =
    "\nAdherence: share of items whose greedy answer names the context answer first. ";

const PAIRED_LEGEND: &str = "Δ vs none (vs cad), paired: the method's adherence minus none's \
    (cad's) on the same test items, in points, with a bootstrap 95% interval over items. ";

const LEGEND: &str = "TF adherence: share whose context answer has the higher teacher-forced log-probability. \
    M_R = n_prior / (n_prior + n_context). Prior retention: closed-book accuracy on the facts \
    the model knows, method active, no context. True context kept: share of the test items, \
    their context rewritten to state the true fact, whose greedy answer names it. Perplexity ×: perplexity of a fixed neutral \
    text relative to no intervention. Settings are chosen on dev: highest adherence with \
    retention ≥ 95%, perplexity ≤ +5% and irrelevant contexts left unchanged ";

/// The end of [`LEGEND`], after the robustness bar's words.
const LEGEND_TAIL: &str = " (where the data has them); else the cheapest (\"not met\").\n\n";

/// Each swept method's settings on dev, one line per method.
fn md_sweeps(rep: &Report) -> String {
    let mut s = "\n## Dev sweeps\n\n".to_string();
    for m in rep.methods.iter().filter(|m| !m.sweep.is_empty()) {
        let pts: Vec<String> = m
            .sweep
            .iter()
            .map(|e| {
                let irr = e.irrelevant.as_ref().map_or(String::new(), |i| {
                    format!(", irrelevant unchanged {}", pct(i.unchanged.value))
                });
                format!(
                    "{} → adherence {}, retention {}, ppl ×{:.3}{irr}",
                    e.setting,
                    pct(e.adherence.value),
                    pct(e.retention.value),
                    e.perplexity_ratio
                )
            })
            .collect();
        s += &format!("- **{:?}**: {}\n", m.method, pts.join("; "));
    }
    s
}

/// The demo's sections: probes, patching, density and timings, where present.
fn md_extras(rep: &Report) -> String {
    let mut s = String::new();
    if let Some(p) = &rep.probe {
        s += &format!("\n## Probes\n\n`{}`; best site {}.\n\n", p.file, p.best);
        s += "| site | test AUROC | control AUROC |\n|---|---|---|\n";
        for (site, a, c) in &p.sites {
            s += &format!("| {site} | {a:.3} | {c:.3} |\n");
        }
    }
    if let Some(cells) = &rep.patching {
        s += "\n## Patching: strongest sites\n\n| layer | where | mean effect | 95% CI | n |\n|---|---|---|---|---|\n";
        for c in cells {
            s += &format!(
                "| {} | {} | {:.3} | [{:.3}, {:.3}] | {} |\n",
                c.layer, c.key, c.mean, c.ci_low, c.ci_high, c.n
            );
        }
    }
    if let Some(d) = &rep.density {
        s += "\n## Activation density (mean over layers)\n\n| condition | side | active | hoyer | l1_l2 | participation |\n|---|---|---|---|---|---|\n";
        for (c, sides) in d {
            for (side, m) in sides {
                let g = |k: &str| m.get(k).copied().unwrap_or(0.0);
                s += &format!(
                    "| {c} | {side} | {:.4} | {:.4} | {:.2} | {:.1} |\n",
                    g("active"),
                    g("hoyer"),
                    g("l1_l2"),
                    g("participation")
                );
            }
        }
    }
    if !rep.timings.is_empty() {
        s += "\n## Timings\n\n";
        for (k, v) in &rep.timings {
            s += &format!("- {k}: {v:.1} s\n");
        }
    }
    s
}

/// The report's chart files, read from `dir`, by file name.
fn figures(rep: &Report, dir: &Path) -> Result<BTreeMap<String, String>> {
    let names: Vec<&str> = rep.charts.values().map(String::as_str).collect();
    crate::markup::chart_files(dir, &names)
}

/// Small multiples: dev adherence and retention against each swept setting, one panel per method.
pub fn sweep_chart(methods: &[MethodResult], path: &Path) -> Result<()> {
    let swept: Vec<&MethodResult> = methods.iter().filter(|m| !m.sweep.is_empty()).collect();
    let n = swept.len().max(1);
    crate::markup::svg_chart(path, (330 * n as u32, 340), |root| {
        for (m, area) in swept.iter().zip(root.split_evenly((1, n)).iter()) {
            sweep_panel(m, area)?;
        }
        Ok(())
    })
}

/// One method's dev sweep: adherence and retention against strength.
fn sweep_panel(
    m: &MethodResult,
    area: &plotters::drawing::DrawingArea<plotters::prelude::SVGBackend, plotters::coord::Shift>,
) -> std::result::Result<(), String> {
    use plotters::prelude::*;
    let k = m.sweep.len();
    let mut chart = ChartBuilder::on(area)
        .caption(format!("{:?} (dev)", m.method), ("sans-serif", 15))
        .margin(8)
        .x_label_area_size(30)
        .y_label_area_size(36)
        .build_cartesian_2d(-0.5f64..(k as f64 - 0.5), 0f64..1f64)
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .x_labels(k)
        .x_label_formatter(&|x| {
            m.sweep
                .get(x.round() as usize)
                .and_then(|e| e.strength)
                .map(|s| format!("{s}"))
                .unwrap_or_default()
        })
        .x_desc("strength")
        .draw()
        .map_err(|e| e.to_string())?;
    type Metric = fn(&crate::bench::Eval) -> f64;
    let series: [(&str, RGBColor, Metric); 2] = [
        ("adherence", BLUE, |e| e.adherence.value),
        ("retention", GREEN, |e| e.retention.value),
    ];
    for (name, color, f) in series {
        let pts = m.sweep.iter().enumerate().map(|(i, e)| (i as f64, f(e)));
        chart
            .draw_series(LineSeries::new(pts, color.stroke_width(2)))
            .map_err(|e| e.to_string())?
            .label(name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 14, y)], color.stroke_width(2))
            });
    }
    chart
        .draw_series(
            m.sweep
                .iter()
                .enumerate()
                .map(|(i, e)| Circle::new((i as f64, e.adherence.value), 3, BLUE.filled())),
        )
        .map_err(|e| e.to_string())?;
    // Bottom right: adherence and retention rarely go that low, so no point is hidden.
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| e.to_string())?;
    Ok(())
}

/// Write report.json, report.md and report.html into `dir`.
pub fn write(rep: &Report, dir: &Path) -> Result<()> {
    let md = markdown(rep);
    let files = crate::markup::ReportFiles {
        value: rep,
        title: &rep.title,
        markdown: &md,
        figures: figures(rep, dir)?,
        caption: None,
    };
    crate::markup::write_files(dir, &files)
}
