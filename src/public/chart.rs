//! Inline SVG charts for the public report: one panel per metric, one row per method, the
//! value as a dot and its 95% interval as a line (self-contained, no image files).

use crate::bench::Rate;
use crate::markup::esc as escape;
use std::fmt::Write;

/// One panel: a metric's name and each method's rate, in the rows' order.
pub struct Panel {
    pub title: String,
    pub rates: Vec<Rate>,
}

const ROW: f64 = 22.0;
const LABEL: f64 = 110.0;
const WIDTH: f64 = 250.0;
const TOP: f64 = 34.0;
/// Room between panels, for the last tick label of one and the first of the next.
const GAP: f64 = 44.0;

/// The panels side by side as one `<svg>`, with the method names down the left.
pub fn dot_chart(methods: &[String], panels: &[Panel]) -> String {
    let h = TOP + ROW * methods.len() as f64 + 24.0;
    let w = LABEL + (WIDTH + GAP) * panels.len() as f64;
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w:.0}\" height=\"{h:.0}\" \
         font-family=\"sans-serif\" font-size=\"11\">"
    );
    for (i, m) in methods.iter().enumerate() {
        let y = TOP + ROW * (i as f64 + 0.5);
        let _ = write!(
            s,
            "<text x=\"{:.0}\" y=\"{:.1}\" text-anchor=\"end\" dy=\"4\">{}</text>",
            LABEL - 8.0,
            y,
            escape(m)
        );
    }
    for (k, p) in panels.iter().enumerate() {
        s += &panel(LABEL + (WIDTH + GAP) * k as f64, h, p);
    }
    s + "</svg>"
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

fn panel(x0: f64, h: f64, p: &Panel) -> String {
    let (lo, hi) = domain(&p.rates);
    let x = |v: f64| x0 + WIDTH * (v - lo) / (hi - lo);
    let bottom = h - 24.0;
    let mut s = format!(
        "<text x=\"{:.1}\" y=\"14\" font-weight=\"bold\">{}</text>\
         <line x1=\"{:.1}\" y1=\"{TOP}\" x2=\"{:.1}\" y2=\"{bottom:.1}\" stroke=\"#999\"/>",
        x0,
        escape(&p.title),
        x(0.0),
        x(0.0)
    );
    for t in ticks(lo, hi) {
        let _ = write!(
            s,
            "<line x1=\"{0:.1}\" y1=\"{TOP}\" x2=\"{0:.1}\" y2=\"{bottom:.1}\" stroke=\"#eee\"/>\
             <text x=\"{0:.1}\" y=\"{1:.1}\" text-anchor=\"middle\">{2:.0}%</text>",
            x(t),
            bottom + 14.0,
            100.0 * t
        );
    }
    for (i, r) in p.rates.iter().enumerate().filter(|(_, r)| r.n > 0) {
        let y = TOP + ROW * (i as f64 + 0.5);
        if r.ci_low.is_finite() && r.ci_high.is_finite() {
            let _ = write!(
                s,
                "<line x1=\"{:.1}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" stroke=\"#36c\" stroke-width=\"2\"/>",
                x(r.ci_low),
                x(r.ci_high)
            );
        }
        let _ = write!(
            s,
            "<circle cx=\"{:.1}\" cy=\"{y:.1}\" r=\"4\" fill=\"#036\"><title>{:.1}%</title></circle>",
            x(r.value),
            100.0 * r.value
        );
    }
    s
}

/// Ticks every 25 points across the range.
fn ticks(lo: f64, hi: f64) -> Vec<f64> {
    let first = (lo / 0.25).ceil() as i64;
    let last = (hi / 0.25).floor() as i64;
    (first..=last).map(|k| k as f64 * 0.25).collect()
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
    fn dots_sit_at_their_values_and_the_axis_widens_for_negative_intervals() {
        let methods = vec!["none".to_string(), "cad".to_string()];
        let shares = Panel {
            title: "adherence".into(),
            rates: vec![rate(0.0, 0.0, 0.0), rate(1.0, 0.5, 1.0)],
        };
        let svg = dot_chart(&methods, &[shares]);
        // On [0, 1] the dots of 0 and 1 sit at the panel's two ends.
        assert!(svg.contains(&format!("cx=\"{:.1}\"", LABEL)), "{svg}");
        assert!(
            svg.contains(&format!("cx=\"{:.1}\"", LABEL + WIDTH)),
            "{svg}"
        );
        assert!(svg.contains(">none</text>") && svg.contains(">cad</text>"));
        assert_eq!(domain(&[rate(0.1, -0.5, 0.2)]), (-0.5, 1.0));
        assert_eq!(ticks(-0.5, 1.0), [-0.5, -0.25, 0.0, 0.25, 0.5, 0.75, 1.0]);
        // A method with no runs gets no dot.
        let empty = Panel {
            title: "x".into(),
            rates: vec![Rate {
                n: 0,
                ..rate(0.5, 0.4, 0.6)
            }],
        };
        assert!(!dot_chart(&methods[..1], &[empty]).contains("<circle"));
    }
}
