//! The layer × key heatmap of a patching result, as SVG.

use super::PatchResult;
use crate::error::Result;

/// Draw the layer x key heatmap of mean effects as an SVG (blue < 0 < red).
pub fn heatmap(r: &PatchResult, path: &std::path::Path) -> Result<()> {
    use plotters::prelude::*;
    let err = |e: &dyn std::fmt::Display| e.to_string();
    let n_layers = r.cells.iter().map(|c| c.layer + 1).max().unwrap_or(1);
    let cols = r.keys.len().max(1);
    let w = 160 + 40 * cols as u32;
    crate::markup::svg_chart(path, (w.max(420), 560), |root| {
        let title = if r.source == r.target {
            format!(
                "zero-ablating each head: change in logit(context) - logit(prior) ({} items)",
                r.n_items
            )
        } else {
            format!(
                "patching {:?} -> {:?}: {:?} ({} items)",
                r.source, r.target, r.sites, r.n_items
            )
        };
        let mut chart = ChartBuilder::on(root)
            .caption(title, ("sans-serif", 15))
            .margin(10)
            .x_label_area_size(60)
            .y_label_area_size(40)
            .build_cartesian_2d(0..cols, 0..n_layers)
            .map_err(|e| err(&e))?;
        let keys = r.keys.clone();
        chart
            .configure_mesh()
            .disable_mesh()
            .x_labels(cols)
            .y_labels(n_layers.min(30))
            .x_label_formatter(&|x| keys.get(*x).cloned().unwrap_or_default())
            .y_desc("layer")
            .draw()
            .map_err(|e| err(&e))?;
        let color = |v: f64| {
            let v = v.clamp(-1.0, 1.0);
            let f = |x: f64| (255.0 * (1.0 - x)) as u8;
            if v >= 0.0 {
                RGBColor(255, f(v), f(v))
            } else {
                RGBColor(f(-v), f(-v), 255)
            }
        };
        chart
            .draw_series(r.cells.iter().filter_map(|c| {
                let x = r.keys.iter().position(|k| *k == c.key)?;
                Some(Rectangle::new(
                    [(x, c.layer), (x + 1, c.layer + 1)],
                    color(c.mean).filled(),
                ))
            }))
            .map_err(|e| err(&e))?;
        Ok(())
    })
}
