//! The public report's charts, inlined in its page: one panel per metric, one row per method,
//! the value as a dot and its 95% interval as a line. Drawn with plotters, as every chart is.

use crate::error::Result;
use crate::markup::Area;
use crate::stats::Rate;
use plotters::prelude::*;

/// One panel: a metric's name and each method's rate, in the rows' order.
pub struct Panel {
    pub title: String,
    pub rates: Vec<Rate>,
}

/// Pixels per method row, for the method names, per panel, and above and below the rows.
const ROW: u32 = 22;
const LABEL: u32 = 110;
const WIDTH: u32 = 290;
const FRAME: u32 = 70;

/// The panels side by side as one SVG (its text), the method names down the left of the first.
pub fn dot_chart(methods: &[String], panels: &[Panel]) -> Result<String> {
    let n = panels.len().max(1) as u32;
    let size = (LABEL + WIDTH * n, FRAME + ROW * methods.len().max(1) as u32);
    crate::markup::svg_text(size, |root| {
        let breaks: Vec<i32> = (1..n).map(|k| (LABEL + WIDTH * k) as i32).collect();
        for (k, (p, area)) in panels
            .iter()
            .zip(root.split_by_breakpoints(breaks, [0i32; 0]))
            .enumerate()
        {
            let names = (k == 0).then_some(methods);
            panel(p, names, methods.len(), &area)?;
        }
        Ok(())
    })
}

/// One metric's panel; `names` labels its rows (the first panel's only).
fn panel(
    p: &Panel,
    names: Option<&[String]>,
    rows: usize,
    area: &Area,
) -> std::result::Result<(), String> {
    let (lo, hi) = domain(&p.rates);
    // Method i sits at y = rows - i (the first at the top), with an empty row at either end.
    let rows = rows.max(1);
    let row = |i: usize| rows - i;
    let mut chart = ChartBuilder::on(area)
        .caption(&p.title, ("sans-serif", 13))
        .margin(8)
        .margin_right(28)
        .x_label_area_size(22)
        .y_label_area_size(names.map_or(0, |_| LABEL - 8))
        .build_cartesian_2d(lo..hi, 0..rows + 1)
        .map_err(|e| e.to_string())?;
    let name = |y: &usize| match names {
        Some(n) if (1..=rows).contains(y) => n.get(rows - y).cloned().unwrap_or_default(),
        _ => String::new(),
    };
    chart
        .configure_mesh()
        .disable_y_mesh()
        .x_labels(5)
        .y_labels(rows + 2)
        .label_style(("sans-serif", 12))
        .x_label_formatter(&|v| format!("{:.0}%", 100.0 * v))
        .y_label_formatter(&name)
        .draw()
        .map_err(|e| e.to_string())?;
    let blue = RGBColor(0x33, 0x66, 0xcc);
    let shown = p.rates.iter().enumerate().filter(|(_, r)| r.n > 0);
    let intervals = shown
        .clone()
        .filter(|(_, r)| r.ci_low.is_finite() && r.ci_high.is_finite());
    chart
        .draw_series(intervals.map(|(i, r)| {
            PathElement::new(
                vec![(r.ci_low, row(i)), (r.ci_high, row(i))],
                blue.stroke_width(2),
            )
        }))
        .map_err(|e| e.to_string())?;
    let dark = RGBColor(0x00, 0x33, 0x66);
    chart
        .draw_series(shown.map(|(i, r)| Circle::new((r.value, row(i)), 4, dark.filled())))
        .map_err(|e| e.to_string())?;
    Ok(())
}

/// The axis range of a panel: [0, 1] for shares, widened to hold every interval.
fn domain(rates: &[Rate]) -> (f64, f64) {
    let finite = |v: f64| v.is_finite().then_some(v);
    let lo = rates
        .iter()
        .filter_map(|r| finite(r.ci_low).or(finite(r.value)))
        .fold(0.0, f64::min);
    let hi = rates
        .iter()
        .filter_map(|r| finite(r.ci_high).or(finite(r.value)))
        .fold(1.0, f64::max);
    (lo, hi)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(value: f64, lo: f64, hi: f64) -> Rate {
        Rate {
            value,
            ci_low: lo,
            ci_high: hi,
            n: 10,
        }
    }

    #[test]
    fn one_dot_per_measured_method_and_the_axis_widens_for_negative_intervals() {
        let methods = vec!["none".to_string(), "cad".to_string()];
        let shares = Panel {
            title: "adherence".into(),
            rates: vec![rate(0.0, 0.0, 0.0), rate(1.0, 0.5, 1.0)],
        };
        let diff = Panel {
            title: "paired difference".into(),
            rates: vec![
                rate(-0.2, -0.5, 0.1),
                Rate {
                    n: 0,
                    ..rate(0.5, 0.4, 0.6)
                },
            ],
        };
        let svg = dot_chart(&methods, &[shares, diff]).unwrap();
        assert!(
            svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"),
            "{svg}"
        );
        // A dot per method with runs (a method with none gets no dot), names and titles.
        assert_eq!(svg.matches("<circle").count(), 3, "{svg}");
        let text = |t: &str| svg.matches(&format!(">\n{t}\n</text>")).count();
        for t in [
            "none",
            "cad",
            "adherence",
            "paired difference",
            "-50%",
            "100%",
        ] {
            assert!(text(t) > 0, "{t} in {svg}");
        }
        // The method names label the first panel only, one row each.
        assert_eq!((text("none"), text("cad")), (1, 1), "{svg}");
        assert_eq!(domain(&[rate(0.1, -0.5, 0.2)]), (-0.5, 1.0));
        assert_eq!(domain(&[rate(f64::NAN, f64::NAN, 1.5)]), (0.0, 1.5));
    }
}
