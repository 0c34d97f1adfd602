//! Text for reports: HTML escaping, Markdown tables, markdown as an HTML page ([`html`]), the
//! writer of a report's files for the reports with one chart, and the charts' frames.

pub mod html;

use crate::error::{Error, Result};
use std::path::Path;

/// `s` with `&`, `<` and `>` escaped for HTML.
pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A Markdown table with header `h`.
pub fn md_table<H: AsRef<str>>(h: &[H], rows: &[Vec<String>]) -> String {
    let h: Vec<&str> = h.iter().map(AsRef::as_ref).collect();
    let mut s = format!(
        "| {} |\n|{}|\n",
        h.join(" | "),
        vec!["---"; h.len()].join("|")
    );
    for r in rows {
        s += &format!("| {} |\n", r.join(" | "));
    }
    s
}

/// An SVG file's text from its `<svg` element on (without the XML prolog), to inline in HTML.
pub fn inline_svg(svg: &str) -> &str {
    svg.find("<svg").map_or(svg, |i| &svg[i..])
}

/// Write a report into `dir`: report.json (`value`), report.md (`markdown`), the chart that
/// `chart` draws at `dir/svg_name`, and report.html: the markdown as a page ([`html::page`]),
/// the chart under its first heading with `caption`. Each file is written whole or not at all.
pub fn write_report<T: serde::Serialize>(
    dir: &Path,
    value: &T,
    markdown: &str,
    (svg_name, caption): (&str, &str),
    chart: impl FnOnce(&Path) -> Result<()>,
) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::file(dir, e))?;
    let json = serde_json::to_vec_pretty(value).map_err(|e| Error::Invalid(e.to_string()))?;
    crate::atomic::write(&dir.join("report.json"), &json)?;
    crate::atomic::write(&dir.join("report.md"), markdown.as_bytes())?;
    let svg_path = dir.join(svg_name);
    chart(&svg_path)?;
    let svg = std::fs::read_to_string(&svg_path).map_err(|e| Error::file(&svg_path, e))?;
    let title = markdown
        .lines()
        .next()
        .unwrap_or("")
        .trim_start_matches('#')
        .trim();
    let figure = (title.to_string(), inline_svg(&svg).to_string());
    let figures = std::collections::BTreeMap::from([figure]);
    let page = html::page(title, markdown, &figures, Some(caption));
    crate::atomic::write(&dir.join("report.html"), page.as_bytes())
}

/// A panel of an SVG drawing.
pub type Area<'a> =
    plotters::drawing::DrawingArea<plotters::prelude::SVGBackend<'a>, plotters::coord::Shift>;

/// Draw an SVG of `size` pixels at `path`: a white page that `draw` fills.
pub fn svg_chart(
    path: &Path,
    size: (u32, u32),
    draw: impl FnOnce(&Area) -> std::result::Result<(), String>,
) -> Result<()> {
    use plotters::prelude::*;
    let err = |e: &dyn std::fmt::Display| Error::file(path, e.to_string());
    let root = SVGBackend::new(path, size).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    draw(&root).map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))
}

/// Two panels side by side on a 1080 × 400 SVG at `path`.
pub fn two_panels(
    path: &Path,
    left: impl FnOnce(&Area) -> std::result::Result<(), String>,
    right: impl FnOnce(&Area) -> std::result::Result<(), String>,
) -> Result<()> {
    svg_chart(path, (1080, 400), |root| {
        let (l, r) = root.split_horizontally(540);
        left(&l)?;
        right(&r)
    })
}

/// A plotters chart with two f64 axes, drawn into an SVG.
pub type Chart<'a> = plotters::chart::ChartContext<
    'a,
    plotters::prelude::SVGBackend<'a>,
    plotters::coord::cartesian::Cartesian2d<
        plotters::coord::types::RangedCoordf64,
        plotters::coord::types::RangedCoordf64,
    >,
>;

/// A labelled line through `pts` with a dot at each point.
pub fn dotted_line(
    c: &mut Chart,
    pts: &[(f64, f64)],
    color: plotters::style::RGBAColor,
    label: String,
) -> std::result::Result<(), String> {
    use plotters::prelude::*;
    c.draw_series(LineSeries::new(pts.to_vec(), color.stroke_width(2)))
        .map_err(|e| e.to_string())?
        .label(label)
        .legend(move |(a, b)| PathElement::new(vec![(a, b), (a + 16, b)], color));
    c.draw_series(pts.iter().map(|p| Circle::new(*p, 3, color.filled())))
        .map_err(|e| e.to_string())?;
    Ok(())
}

/// The chart's series labels, upper left.
pub fn legend(c: &mut Chart) -> std::result::Result<(), String> {
    use plotters::prelude::*;
    c.configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(|e| e.to_string())
}
