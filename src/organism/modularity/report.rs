//! `organism modularity`'s report: report.json, report.md, modularity.svg and report.html.

use super::{KindSummary, ModularityReport, SetRow, UnitKind};
use crate::error::Result;
use crate::markup::{legend, md_table, Area};
use crate::stats::Rate;
use std::path::Path;

fn est(e: &Rate) -> String {
    format!("{:.3} [{:.3}, {:.3}]", e.value, e.ci_low, e.ci_high)
}

fn facts_table(rep: &ModularityReport) -> String {
    let rows: Vec<Vec<String>> = rep
        .facts
        .iter()
        .map(|c| {
            vec![
                c.relation.clone(),
                format!("{} / {}", c.rank_known, c.rank_all),
                format!("{} / {}", c.eval_known, c.eval_all),
            ]
        })
        .collect();
    md_table(
        &[
            "relation",
            "known / facts, ranking (train subjects)",
            "known / facts, measuring (dev and test subjects)",
        ],
        &rows,
    )
}

fn summary_table(s: &[KindSummary]) -> String {
    let rows: Vec<Vec<String>> = s
        .iter()
        .map(|x| {
            vec![
                format!("{} {}", x.k, x.kind.name()),
                format!("{:.1}%", 100.0 * x.share),
                format!("{:.3}", x.own),
                format!("{:.3}", x.other),
                format!("{:.3}", x.random_own),
                format!("{:.3}", x.random_other),
                format!("{} of {}", x.selective, x.relations),
                format!("{:.2}", x.overlap),
            ]
        })
        .collect();
    md_table(
        &[
            "ablated together",
            "of the kind's units",
            "top-k: own relation",
            "top-k: other relations",
            "random k: own",
            "random k: other",
            "relations hurt more than the others (interval above 0)",
            "overlap of the relations' top-k sets (Jaccard)",
        ],
        &rows,
    )
}

fn rows_table(rows: &[SetRow]) -> String {
    let body: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                format!("{} {}", r.k, r.kind.name()),
                r.relation.clone(),
                est(&r.own),
                est(&r.other),
                est(&r.selectivity),
                format!(
                    "{:.0}% / {:.0}%",
                    100.0 * r.own_recall,
                    100.0 * r.other_recall
                ),
                est(&r.random_own),
                est(&r.random_other),
            ]
        })
        .collect();
    md_table(
        &[
            "set",
            "relation",
            "own damage",
            "other damage",
            "own − other",
            "recall kept, own / other",
            "random: own (spread)",
            "random: other (spread)",
        ],
        &body,
    )
}

fn ranked_list(rep: &ModularityReport) -> String {
    let mut s = String::new();
    for r in &rep.ranked {
        let top: Vec<String> = r.top.iter().map(|(u, d)| format!("{u} ({d:.2})")).collect();
        s += &format!("- {} {}: {}\n", r.relation, r.kind.name(), top.join(", "));
    }
    s
}

pub fn markdown(rep: &ModularityReport) -> String {
    let o = &rep.options;
    let mut s = format!(
        "# Modularity by ablation\n\nModel `{}` ({} heads, {} MLP neurons), world `{}`; {:.0} s.\n\n`{}`\n\n\
         Damage is the fall in the right object's log-probability (nats) on closed-book queries \
         of facts the model knows, each unit zero-ablated at every position. Units are ranked \
         per relation on the train subjects' facts and measured on the dev and test subjects'. \
         Intervals: 95% bootstrap over facts; for random sets ({} per size, seed {}), the \
         2.5–97.5% spread over sets.\n\n## Facts\n\n",
        rep.model, rep.heads, rep.neurons, rep.world, rep.seconds, rep.command, o.random_sets, o.seed
    );
    s += &facts_table(rep);
    s += "\n## Over relations\n\n";
    s += &summary_table(&rep.summary);
    s += "\n## Each relation's top-k set\n\n";
    s += &rows_table(&rep.rows);
    s += "\n## The most damaging units on the ranking facts (own relation's damage, nats)\n\n";
    s += &ranked_list(rep);
    s
}

/// A line of a panel: its label, colour and value.
type Line = (
    &'static str,
    plotters::style::RGBAColor,
    fn(&KindSummary) -> f64,
);

/// One panel: mean damage over relations against k, for one kind.
fn panel(rep: &ModularityReport, kind: UnitKind, area: &Area) -> std::result::Result<(), String> {
    use plotters::prelude::*;
    let s: Vec<&KindSummary> = rep.summary.iter().filter(|x| x.kind == kind).collect();
    if s.is_empty() {
        return Ok(());
    }
    let x = |k: usize| (k as f64).log2();
    let (x0, x1) = (x(s[0].k), x(s[s.len() - 1].k));
    let ymax = s
        .iter()
        .flat_map(|v| [v.own, v.other, v.random_own, v.random_other])
        .filter(|v| v.is_finite())
        .fold(0.1, f64::max);
    let mut c = ChartBuilder::on(area)
        .caption(
            format!("{} ablated together", kind.name()),
            ("sans-serif", 15),
        )
        .margin(8)
        .x_label_area_size(30)
        .y_label_area_size(50)
        .build_cartesian_2d((x0 - 0.3)..(x1 + 0.3), 0.0..ymax * 1.1)
        .map_err(|e| e.to_string())?;
    c.configure_mesh()
        .x_label_formatter(&|v| format!("{:.0}", v.exp2()))
        .x_desc("k (units)")
        .y_desc("damage (nats)")
        .draw()
        .map_err(|e| e.to_string())?;
    let lines: [Line; 4] = [
        ("top-k: own relation", RED.to_rgba(), |v| v.own),
        ("top-k: other relations", BLUE.to_rgba(), |v| v.other),
        ("random: own", RED.mix(0.4), |v| v.random_own),
        ("random: other", BLUE.mix(0.4), |v| v.random_other),
    ];
    for (label, color, f) in lines {
        let pts: Vec<(f64, f64)> = s.iter().map(|v| (x(v.k), f(v))).collect();
        crate::markup::dotted_line(&mut c, &pts, color, label.to_string())?;
    }
    legend(&mut c)
}

pub fn chart(rep: &ModularityReport, path: &Path) -> Result<()> {
    crate::markup::two_panels(
        path,
        |a| panel(rep, UnitKind::Head, a),
        |a| panel(rep, UnitKind::Neuron, a),
    )
}

/// Write report.json, report.md, modularity.svg and report.html into `dir`.
pub fn write(rep: &ModularityReport, dir: &Path) -> Result<()> {
    crate::markup::write_report(
        dir,
        rep,
        &markdown(rep),
        ("modularity.svg", "Mean over relations: damage to the relation whose top units are ablated, and to the others, against random units of the same count."),
        |p| chart(rep, p),
    )
}
