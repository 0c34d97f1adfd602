//! `organism study`'s report: report.json, report.md and report.html (tables, and one panel
//! per measure with exposure on the x axis: the final model with its intervals, each
//! checkpoint as a thinner line).

use super::summary::{x_of, Fit, Series, Snapshot};
use crate::error::Result;
use crate::markup::{md_table, Area};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// A study of one model, over its checkpoints and its final weights (last).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StudyReport {
    pub model: String,
    pub world: String,
    /// The command that made it.
    pub command: String,
    pub seconds: f64,
    pub snapshots: Vec<Snapshot>,
}

impl StudyReport {
    /// The final model's snapshot.
    pub fn last(&self) -> Option<&Snapshot> {
        self.snapshots.last()
    }
}

/// What a fit says: rises or falls when its interval excludes 0.
pub fn verdict(f: &Fit) -> &'static str {
    if f.ci_low > 0.0 {
        "rises"
    } else if f.ci_high < 0.0 {
        "falls"
    } else {
        "no clear trend"
    }
}

/// Three significant digits or so, without scientific notation for ordinary sizes.
pub(crate) fn num(v: f64) -> String {
    match v.abs() {
        a if a >= 10.0 => format!("{v:.1}"),
        a if a >= 0.1 || a == 0.0 => format!("{v:.3}"),
        a if a >= 0.001 => format!("{v:.4}"),
        _ => format!("{v:.1e}"),
    }
}

/// The final model's mean in its lowest and highest exposure buckets.
fn range_cell(s: &Series) -> String {
    match (s.points.first(), s.points.last()) {
        (Some(a), Some(b)) => format!(
            "{} (exposure {}) → {} (exposure {})",
            num(a.value),
            a.exposure,
            num(b.value),
            b.exposure
        ),
        _ => "-".into(),
    }
}

fn fit_cell(f: &Fit) -> String {
    format!(
        "{} [{}, {}] ({})",
        num(f.slope),
        num(f.ci_low),
        num(f.ci_high),
        verdict(f)
    )
}

fn series_table(s: &Series) -> String {
    let head = ["exposure", "n", "mean", "95% CI"].map(String::from);
    let rows: Vec<Vec<String>> = s
        .points
        .iter()
        .map(|p| {
            vec![
                p.exposure.to_string(),
                p.n.to_string(),
                num(p.value),
                format!("[{}, {}]", num(p.ci_low), num(p.ci_high)),
            ]
        })
        .collect();
    md_table(&head, &rows)
}

/// The fits of every measure, one column per snapshot.
pub(crate) fn fits_table(rep: &StudyReport) -> String {
    fits_table_with(rep, true)
}

/// [`fits_table`], with the final model's lowest and highest bucket as a last column when
/// `range` (not for models set side by side, where there is no one final model).
pub(crate) fn fits_table_with(rep: &StudyReport, range: bool) -> String {
    let mut head = vec!["measure".to_string()];
    head.extend(rep.snapshots.iter().map(|s| s.label.clone()));
    if range {
        head.push("final: lowest → highest bucket".into());
    }
    let names: Vec<&str> = rep
        .last()
        .map(|l| l.series.iter().map(|s| s.name.as_str()).collect())
        .unwrap_or_default();
    let rows: Vec<Vec<String>> = names
        .iter()
        .map(|n| {
            let mut r = vec![n.to_string()];
            r.extend(
                rep.snapshots
                    .iter()
                    .map(|s| s.series(n).map_or("-".into(), |x| fit_cell(&x.fit))),
            );
            if range {
                r.push(
                    rep.last()
                        .and_then(|l| l.series(n))
                        .map_or("-".into(), range_cell),
                );
            }
            r
        })
        .collect();
    md_table(&head, &rows)
}

pub fn markdown(rep: &StudyReport) -> String {
    let mut s = format!(
        "# Organism study\n\nModel `{}`, world `{}`; {:.0} s in all.\n\n`{}`\n\n",
        rep.model, rep.world, rep.seconds, rep.command
    );
    s += "## Slope per doubling of (1 + exposure), with 95% bootstrap intervals\n\n";
    s += "Density: a higher Hoyer score is sparser; a higher active fraction or participation \
          ratio is denser.\n\n";
    s += &fits_table(rep);
    if let Some(last) = rep.last() {
        s += &format!(
            "\n## By exposure: {} ({:.0} s)\n\n",
            last.label, last.seconds
        );
        for n in &last.notes {
            s += &format!("Note: {n}\n\n");
        }
        for x in &last.series {
            s += &format!("### {}\n\n{}.\n\n{}\n", x.name, x.about, series_table(x));
        }
    }
    s
}

/// One measure's panel. `compare`: every snapshot is drawn alike (its own colour, its
/// intervals, a legend), as for models set side by side; else the last is the final model and
/// the others its checkpoints, drawn thin.
fn panel(
    rep: &StudyReport,
    name: &str,
    area: &Area,
    compare: bool,
) -> std::result::Result<(), String> {
    use plotters::prelude::*;
    let all: Vec<&Series> = rep
        .snapshots
        .iter()
        .filter_map(|s| s.series(name))
        .collect();
    let pts = all.iter().flat_map(|s| &s.points);
    let (lo, hi) = pts.fold((f64::MAX, f64::MIN), |a, p| {
        (a.0.min(p.ci_low), a.1.max(p.ci_high))
    });
    let xmax = all
        .iter()
        .flat_map(|s| &s.points)
        .map(|p| x_of(p.exposure))
        .fold(1.0, f64::max);
    if lo > hi {
        return Ok(()); // no samples
    }
    let pad = ((hi - lo) * 0.08).max(1e-3);
    let mut chart = ChartBuilder::on(area)
        .caption(name, ("sans-serif", 14))
        .margin(6)
        .x_label_area_size(26)
        .y_label_area_size(42)
        .build_cartesian_2d(-0.2f64..xmax + 0.2, (lo - pad)..(hi + pad))
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .x_labels(6)
        .x_label_formatter(&|x| format!("{:.0}", x.exp2() - 1.0))
        .x_desc("exposure")
        .draw()
        .map_err(|e| e.to_string())?;
    let n = all.len();
    for (k, s) in all.iter().enumerate() {
        let last = k + 1 == n || compare;
        let color = match (compare, last) {
            (true, _) => Palette99::pick(k).to_rgba(),
            (false, true) => BLUE.to_rgba(),
            (false, false) => Palette99::pick(k + 1).to_rgba().mix(0.6),
        };
        let label = compare.then(|| rep.snapshots.get(k).map_or("", |s| s.label.as_str()));
        draw_line(&mut chart, s, color, last, label)?;
    }
    if compare {
        crate::markup::legend(&mut chart)?;
    }
    Ok(())
}

/// One series as a line, with its 95% intervals when `main`, and a legend entry when
/// labelled.
fn draw_line(
    chart: &mut crate::markup::Chart,
    s: &Series,
    color: plotters::style::RGBAColor,
    main: bool,
    label: Option<&str>,
) -> std::result::Result<(), String> {
    use plotters::prelude::*;
    let line = s.points.iter().map(|p| (x_of(p.exposure), p.value));
    let width = if main { 2 } else { 1 };
    let drawn = chart
        .draw_series(LineSeries::new(line, color.stroke_width(width)))
        .map_err(|e| e.to_string())?;
    if let Some(l) = label {
        drawn
            .label(l)
            .legend(move |(a, b)| PathElement::new(vec![(a, b), (a + 14, b)], color));
    }
    if main {
        chart
            .draw_series(s.points.iter().map(|p| {
                let x = x_of(p.exposure);
                PathElement::new(vec![(x, p.ci_low), (x, p.ci_high)], color.stroke_width(1))
            }))
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// All measures' panels in one SVG, three to a row: the final model and its checkpoints.
pub fn chart(rep: &StudyReport, path: &Path) -> Result<()> {
    chart_lines(rep, path, false)
}

/// All measures' panels in one SVG, three to a row; `compare` as in [`panel`].
pub fn chart_lines(rep: &StudyReport, path: &Path, compare: bool) -> Result<()> {
    let names: Vec<String> = rep
        .last()
        .map(|l| l.series.iter().map(|s| s.name.clone()).collect())
        .unwrap_or_default();
    let rows = names.len().div_ceil(3).max(1);
    crate::markup::svg_chart(path, (1080, 260 * rows as u32), |root| {
        for (n, area) in names.iter().zip(root.split_evenly((rows, 3)).iter()) {
            panel(rep, n, area, compare)?;
        }
        Ok(())
    })
}

/// Write report.json, report.md, study.svg and report.html into `dir`.
pub fn write(rep: &StudyReport, dir: &Path) -> Result<()> {
    crate::markup::write_report(
        dir,
        rep,
        &markdown(rep),
        (
            "study.svg",
            "By exposure: the final model's points with 95% intervals; checkpoints as thin lines.",
        ),
        |p| chart(rep, p),
    )
}
