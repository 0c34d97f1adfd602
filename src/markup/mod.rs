//! Text for reports: HTML escaping, Markdown tables, markdown as an HTML page ([`html`]), the
//! one writer of a report's files ([`write_files`]), and the charts' frames.

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

/// What every report is made of: its data, its text, and its charts.
pub struct ReportFiles<'a, T: serde::Serialize> {
    /// Written as report.json.
    pub value: &'a T,
    /// The HTML page's title.
    pub title: &'a str,
    /// Written as report.md, and as the page's body.
    pub markdown: &'a str,
    /// SVG charts (their text) by the heading or image file name they go under
    /// ([`html::page`]).
    pub figures: std::collections::BTreeMap<String, String>,
    /// A caption under every chart, if any.
    pub caption: Option<&'a str>,
}

/// The one report writer: report.json, report.md and report.html (the markdown as a page with
/// the charts inlined) in `dir`, each written whole or not at all.
pub fn write_files<T: serde::Serialize>(dir: &Path, r: &ReportFiles<T>) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::file(dir, e))?;
    let json = serde_json::to_vec_pretty(r.value).map_err(|e| Error::Invalid(e.to_string()))?;
    crate::atomic::write(&dir.join("report.json"), &json)?;
    crate::atomic::write(&dir.join("report.md"), r.markdown.as_bytes())?;
    let figures: std::collections::BTreeMap<String, String> = r
        .figures
        .iter()
        .map(|(k, svg)| (k.clone(), inline_svg(svg).to_string()))
        .collect();
    let page = html::page(r.title, r.markdown, &figures, r.caption);
    crate::atomic::write(&dir.join("report.html"), page.as_bytes())
}

/// The text of the chart files `names` in `dir`, by file name: figures for [`write_files`].
pub fn chart_files(
    dir: &Path,
    names: &[&str],
) -> Result<std::collections::BTreeMap<String, String>> {
    names
        .iter()
        .map(|f| {
            let p = dir.join(f);
            let svg = std::fs::read_to_string(&p).map_err(|e| Error::file(&p, e))?;
            Ok((f.to_string(), svg))
        })
        .collect()
}

/// A report with one chart (the organism's): the chart that `chart` draws at `dir/svg_name`
/// goes under the markdown's first heading (its title) with `caption` ([`write_files`]).
pub fn write_report<T: serde::Serialize>(
    dir: &Path,
    value: &T,
    markdown: &str,
    (svg_name, caption): (&str, &str),
    chart: impl FnOnce(&Path) -> Result<()>,
) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::file(dir, e))?;
    chart(&dir.join(svg_name))?;
    let title = markdown
        .lines()
        .next()
        .unwrap_or("")
        .trim_start_matches('#')
        .trim();
    let svg = chart_files(dir, &[svg_name])?
        .remove(svg_name)
        .unwrap_or_default();
    let figures = std::collections::BTreeMap::from([(title.to_string(), svg)]);
    let files = ReportFiles {
        value,
        title,
        markdown,
        figures,
        caption: Some(caption),
    };
    write_files(dir, &files)
}

/// A panel of an SVG drawing.
pub type Area<'a> =
    plotters::drawing::DrawingArea<plotters::prelude::SVGBackend<'a>, plotters::coord::Shift>;

/// Draw an SVG of `size` pixels at `path` ([`svg_text`], written whole or not at all).
pub fn svg_chart(
    path: &Path,
    size: (u32, u32),
    draw: impl FnOnce(&Area) -> std::result::Result<(), String>,
) -> Result<()> {
    let text = svg_text(size, draw).map_err(|e| Error::file(path, e))?;
    crate::atomic::write(path, text.as_bytes())
}

/// An SVG of `size` pixels as text (for a page that inlines it): a white page that `draw`
/// fills.
pub fn svg_text(
    size: (u32, u32),
    draw: impl FnOnce(&Area) -> std::result::Result<(), String>,
) -> Result<String> {
    use plotters::prelude::*;
    let err = |e: &dyn std::fmt::Display| Error::Invalid(format!("drawing a chart: {e}"));
    let mut text = String::new();
    {
        let root = SVGBackend::with_string(&mut text, size).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(&e))?;
        draw(&root).map_err(|e| err(&e))?;
        root.present().map_err(|e| err(&e))?;
    }
    Ok(text)
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
