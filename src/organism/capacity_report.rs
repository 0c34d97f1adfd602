//! `organism capacity`'s report: report.json, report.md, capacity.svg (memorized bits against
//! N for each size, and capacity against parameters with the fitted slope beside 3.6) and
//! report.html.

use super::capacity::{CapacityFit, CapacityReport, CapacityRun};
use crate::error::Result;
use crate::markup::{legend, md_table, Area};
use std::path::Path;

/// The fit, each size's capacity and every run, as Markdown.
pub fn markdown(rep: &CapacityReport) -> String {
    let o = &rep.options;
    let mut s = format!(
        "# Memorization capacity\n\nUniformly random sequences: vocabulary {}, {} tokens ({:.1} \
         bits each, the first token unpredicted); {:.0} s.\n\n`{}`\n\n",
        o.vocab,
        o.seq,
        (o.seq - 1) as f64 * (o.vocab as f64).log2(),
        rep.seconds,
        rep.command
    );
    for f in &rep.fits {
        s += &format!("**{}**.\n\n", fit_line(f, rep.reference_bits_per_param));
    }
    s += "## Capacity by size\n\n";
    s += &sizes_table(rep);
    s += "\n## Runs\n\n";
    s += &md_table(
        &[
            "size",
            "precision",
            "N",
            "epochs",
            "converged",
            "loss",
            "entropy",
            "memorized",
            "seconds",
        ],
        &rep.runs.iter().map(run_row).collect::<Vec<_>>(),
    );
    s
}

/// "Bits per parameter, PRECISION: B [LOW, HIGH] (95% t interval over N sizes; the reference
/// is R)"; one size gives no interval, and says so.
pub fn fit_line(f: &CapacityFit, reference: f64) -> String {
    let b = &f.bits_per_param;
    let interval = match b.ci_low.is_finite() && b.ci_high.is_finite() {
        true => format!(
            "[{:.2}, {:.2}] (95% t interval over {} sizes; ",
            b.ci_low, b.ci_high, b.n
        ),
        false => format!("(no interval from {} size; ", b.n),
    };
    format!(
        "Bits per parameter, {}: {:.2} {interval}the reference is {reference:.1})",
        f.precision.name(),
        b.value
    )
}

/// Each size's capacity, as a Markdown table.
fn sizes_table(rep: &CapacityReport) -> String {
    let rows: Vec<Vec<String>> = rep
        .sizes
        .iter()
        .map(|c| {
            vec![
                c.shape.to_string(),
                c.precision.name().into(),
                c.params.to_string(),
                format!("{:.0}", c.capacity_bits),
                c.at_n.to_string(),
                format!("{:.2}", c.bits_per_param),
                if c.converged { "yes" } else { "no" }.into(),
            ]
        })
        .collect();
    md_table(
        &[
            "size",
            "precision",
            "parameters",
            "capacity (bits)",
            "at N",
            "bits/param",
            "all converged",
        ],
        &rows,
    )
}

fn run_row(r: &CapacityRun) -> Vec<String> {
    vec![
        r.shape.to_string(),
        r.precision.name().into(),
        r.n.to_string(),
        r.epochs.to_string(),
        if r.converged { "yes" } else { "no" }.into(),
        format!("{:.3}", r.loss),
        format!("{:.0}", r.entropy_bits),
        format!("{:.0}", r.memorized_bits),
        format!("{:.0}", r.seconds),
    ]
}

/// Left: memorized bits against N (log2), one line per size. Right: capacity against
/// parameters, the fitted slope and 3.6 bits per parameter.
pub fn chart(rep: &CapacityReport, path: &Path) -> Result<()> {
    crate::markup::two_panels(path, |a| by_n(rep, a), |a| by_params(rep, a))
}

fn by_n(rep: &CapacityReport, area: &Area) -> std::result::Result<(), String> {
    use plotters::prelude::*;
    let x = |n: usize| (n.max(1) as f64).log2();
    let xs = rep.runs.iter().map(|r| x(r.n));
    let (x0, x1) = xs.fold((f64::MAX, f64::MIN), |a, v| (a.0.min(v), a.1.max(v)));
    let ymax = rep
        .runs
        .iter()
        .map(|r| r.memorized_bits)
        .fold(1.0, f64::max);
    let ymin = rep
        .runs
        .iter()
        .map(|r| r.memorized_bits)
        .fold(0.0, f64::min);
    if x0 > x1 {
        return Ok(());
    }
    let mut c = ChartBuilder::on(area)
        .caption("memorized bits against N", ("sans-serif", 15))
        .margin(8)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .build_cartesian_2d((x0 - 0.3)..(x1 + 0.3), ymin..(ymax * 1.08))
        .map_err(|e| e.to_string())?;
    c.configure_mesh()
        .x_label_formatter(&|v| format!("{:.0}", v.exp2()))
        .x_desc("N (sequences)")
        .y_desc("bits")
        .draw()
        .map_err(|e| e.to_string())?;
    for (k, s) in rep.sizes.iter().enumerate() {
        let color = Palette99::pick(k).to_rgba();
        let pts: Vec<(f64, f64)> = rep
            .runs
            .iter()
            .filter(|r| r.shape == s.shape && r.precision == s.precision)
            .map(|r| (x(r.n), r.memorized_bits))
            .collect();
        let label = format!("{} {} ({} params)", s.shape, s.precision.name(), s.params);
        crate::markup::dotted_line(&mut c, &pts, color, label)?;
    }
    legend(&mut c)
}

fn by_params(rep: &CapacityReport, area: &Area) -> std::result::Result<(), String> {
    use plotters::prelude::*;
    let pmax = rep
        .sizes
        .iter()
        .map(|s| s.params as f64)
        .fold(1.0, f64::max)
        * 1.1;
    let steepest = rep
        .fits
        .iter()
        .map(|f| f.bits_per_param.value)
        .fold(rep.reference_bits_per_param, f64::max);
    let ymax = rep
        .sizes
        .iter()
        .map(|s| s.capacity_bits)
        .fold(pmax * steepest, f64::max);
    let mut c = ChartBuilder::on(area)
        .caption("capacity against parameters", ("sans-serif", 15))
        .margin(8)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..pmax, 0.0..ymax * 1.05)
        .map_err(|e| e.to_string())?;
    c.configure_mesh()
        .x_desc("parameters")
        .y_desc("bits")
        .draw()
        .map_err(|e| e.to_string())?;
    for (b, color, label) in fit_lines(rep) {
        c.draw_series(LineSeries::new(
            [(0.0, 0.0), (pmax, b * pmax)],
            color.stroke_width(2),
        ))
        .map_err(|e| e.to_string())?
        .label(label)
        .legend(move |(a, y)| PathElement::new(vec![(a, y), (a + 16, y)], color));
    }
    for (k, f) in rep.fits.iter().enumerate() {
        let color = Palette99::pick(k + 1).to_rgba();
        let pts = rep.sizes.iter().filter(|s| s.precision == f.precision);
        c.draw_series(
            pts.map(|s| Circle::new((s.params as f64, s.capacity_bits), 4, color.filled())),
        )
        .map_err(|e| e.to_string())?;
    }
    legend(&mut c)
}

/// The reference slope and each precision's fitted one, with their colours and labels.
fn fit_lines(rep: &CapacityReport) -> Vec<(f64, plotters::style::RGBAColor, String)> {
    use plotters::prelude::*;
    let reference = rep.reference_bits_per_param;
    let mut lines = vec![(reference, RED.mix(0.6), format!("{reference} bits/param"))];
    for (k, f) in rep.fits.iter().enumerate() {
        let b = f.bits_per_param.value;
        let label = format!("{}: {b:.2} bits/param", f.precision.name());
        lines.push((b, Palette99::pick(k + 1).to_rgba(), label));
    }
    lines
}

/// Write report.json, report.md, capacity.svg and report.html into `dir`.
pub fn write(rep: &CapacityReport, dir: &Path) -> Result<()> {
    crate::markup::write_report(
        dir,
        rep,
        &markdown(rep),
        ("capacity.svg", "Left: memorized bits against N, one line per size. Right: capacity against parameters, the fitted slopes and 3.6 bits per parameter."),
        |p| chart(rep, p),
    )
}
