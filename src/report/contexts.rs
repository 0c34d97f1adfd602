//! The three context types side by side (CUB's gold, conflicting and irrelevant): a table per
//! method, a table per distractor kind, and a chart of faithfulness against robustness.

use super::{md_table, paired, pct, rate};
use crate::bench::MethodResult;
use crate::error::Result;
use std::path::Path;

/// Whether any method was measured on irrelevant contexts.
pub(super) fn measured(methods: &[MethodResult]) -> bool {
    methods.iter().any(|m| m.test.irrelevant.is_some())
}

/// Faithfulness: the mean of the gold and conflicting rates (None without a gold measurement).
pub fn faithfulness(m: &MethodResult) -> Option<f64> {
    m.gold
        .as_ref()
        .map(|g| (g.value + m.test.adherence.value) / 2.0)
}

/// Robustness: the share of irrelevant contexts whose answer class is left as it was closed-book.
pub fn robustness(m: &MethodResult) -> Option<f64> {
    m.test.irrelevant.as_ref().map(|i| i.unchanged.value)
}

/// One row per method: gold, conflicting, irrelevant unchanged and distractor named.
pub(super) fn table(methods: &[MethodResult]) -> (Vec<&'static str>, Vec<Vec<String>>) {
    let header = vec![
        "method",
        "gold: true answer named",
        "conflicting: adherence",
        "irrelevant: unchanged",
        "Δ unchanged vs none, paired (points)",
        "irrelevant: distractor named",
        "faithfulness",
        "retention",
        "perplexity ×",
    ];
    let na = || "n/a".to_string();
    let rows = methods
        .iter()
        .map(|m| {
            let irr = m.test.irrelevant.as_ref();
            vec![
                m.method.name().to_string(),
                m.gold.as_ref().map_or_else(na, rate),
                rate(&m.test.adherence),
                irr.map_or_else(na, |i| rate(&i.unchanged)),
                paired(m, "irrelevant vs none"),
                irr.map_or_else(na, |i| rate(&i.distractor_named)),
                faithfulness(m).map_or_else(na, pct),
                // No known facts (NQ-Swap on a small model): nothing to retain.
                match m.test.retention.n {
                    0 => "n/a (n = 0)".into(),
                    _ => pct(m.test.retention.value),
                },
                format!("{:.3}", m.test.perplexity_ratio),
            ]
        })
        .collect();
    (header, rows)
}

/// One row per method, one column per distractor kind: unchanged / distractor named.
pub(super) fn kinds_table(methods: &[MethodResult]) -> (Vec<String>, Vec<Vec<String>>) {
    let kinds: std::collections::BTreeSet<&String> = methods
        .iter()
        .filter_map(|m| m.test.irrelevant.as_ref())
        .flat_map(|i| i.per_kind.keys())
        .collect();
    let mut header = vec!["method".to_string()];
    header.extend(kinds.iter().map(|k| format!("{k}: unchanged / named")));
    let rows = methods
        .iter()
        .map(|m| {
            let mut row = vec![m.method.name().to_string()];
            for k in &kinds {
                let cell = m.test.irrelevant.as_ref().and_then(|i| i.per_kind.get(*k));
                row.push(cell.map_or("n/a".into(), |c| {
                    format!(
                        "{} / {} (n={})",
                        pct(c.unchanged),
                        pct(c.distractor_named),
                        c.n
                    )
                }));
            }
            row
        })
        .collect();
    (header, rows)
}

const LEGEND: &str = "Gold: share of the test items, their context rewritten to \
    state the true fact, whose greedy answer names it. Conflicting: adherence. Irrelevant: each \
    test query after a context about another subject; unchanged = the greedy answer's class \
    (prior, context's distractor or neither) is the one the unedited model's closed-book answer \
    has (CUB's BCU); distractor named = the answer names the object that context names. \
    Faithfulness = mean of gold and conflicting. A dev setting is eligible only if it leaves \
    irrelevant contexts unchanged ";

/// The three-type table's legend; `guarded`: the dev choice kept a standard error to spare
/// ([`crate::bench::irrelevant_bar_words`]).
pub(super) fn legend(guarded: bool) -> String {
    format!(
        "{LEGEND}{}.\n\n",
        crate::bench::irrelevant_bar_words(guarded)
    )
}

/// The three context types and irrelevant contexts by kind, as markdown under a heading of
/// `level` (empty where no method was measured on irrelevant contexts), with the methods none
/// of whose dev settings met the bars.
pub fn markdown(methods: &[MethodResult], level: usize, guarded: bool) -> String {
    if !measured(methods) {
        return String::new();
    }
    let hashes = "#".repeat(level);
    let mut s = format!("{hashes} Gold, conflicting and irrelevant contexts (test)\n\n");
    let (h, rows) = table(methods);
    s += &md_table(&h, &rows);
    s += "\n";
    s += &legend(guarded);
    s += &format!("{hashes}# Irrelevant contexts by kind (test)\n\n");
    let (h, rows) = kinds_table(methods);
    s += &md_table(&h, &rows);
    s += &ineligible(methods);
    s + "\n"
}

/// The methods none of whose dev settings met the bars: the best of them and what it missed.
fn ineligible(methods: &[MethodResult]) -> String {
    let mut s = String::new();
    for m in methods {
        if let Some(b) = &m.best_ineligible {
            s += &format!(
                "- **{}**: no setting met the dev bars; the most adherent, {}, missed: {}. \
                 The cheapest was measured on test.\n",
                m.method.name(),
                b.setting,
                b.missed.join("; ")
            );
        }
    }
    match s.is_empty() {
        true => s,
        false => format!("\n{s}"),
    }
}

/// Faithfulness (mean of gold and conflicting) against robustness (irrelevant unchanged), one
/// point per method, with `none`'s robustness less 2 points as the bar.
pub fn chart(methods: &[MethodResult], path: &Path) -> Result<()> {
    crate::markup::svg_chart(path, (620, 460), |root| draw(methods, root))
}

fn draw(methods: &[MethodResult], root: &crate::markup::Area) -> std::result::Result<(), String> {
    use plotters::prelude::*;
    let err = |e: &dyn std::fmt::Display| e.to_string();
    let pts: Vec<(&MethodResult, f64, f64)> = methods
        .iter()
        .filter_map(|m| Some((m, robustness(m)?, faithfulness(m)?)))
        .collect();
    let mut chart = ChartBuilder::on(root)
        .caption("faithfulness against robustness (test)", ("sans-serif", 16))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(44)
        .build_cartesian_2d(0f64..1.02f64, 0f64..1.02f64)
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .x_desc("robustness: irrelevant contexts unchanged")
        .y_desc("faithfulness: mean of gold and conflicting")
        .draw()
        .map_err(|e| err(&e))?;
    if let Some(base) = methods
        .iter()
        .find(|m| m.method == crate::bench::Method::None)
        .and_then(robustness)
    {
        let x = base - crate::bench::BARS.irrelevant_drop;
        let bar = LineSeries::new([(x, 0.0), (x, 1.02)], RED.mix(0.6).stroke_width(1));
        chart.draw_series(bar).map_err(|e| err(&e))?;
    }
    let dots = pts.iter().map(|(m, x, y)| {
        EmptyElement::at((*x, *y))
            + Circle::new((0, 0), 4, BLUE.filled())
            + Text::new(m.method.name(), (6, -12), ("sans-serif", 13))
    });
    chart.draw_series(dots).map_err(|e| err(&e))?;
    Ok(())
}
