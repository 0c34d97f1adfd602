//! Showing a probe file: the per-site table printed by `probe`, and the by-layer SVG plot.

use super::{Metrics, ProbeFile};
use crate::error::Result;

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
    crate::markup::svg_chart(path, (760, 420), |root| plot_on(f, root))
}

fn plot_on(f: &ProbeFile, root: &crate::markup::Area) -> std::result::Result<(), String> {
    use plotters::prelude::*;
    let n = f.sites.len();
    let series = |g: &dyn Fn(&Metrics) -> f64| -> Vec<(f64, f64)> {
        f.sites
            .iter()
            .enumerate()
            .map(|(i, p)| (i as f64, g(&p.metrics)))
            .collect()
    };
    let err = |e: &dyn std::fmt::Display| e.to_string();
    let mut chart = ChartBuilder::on(root)
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
        .map_err(|e| err(&e))
}
