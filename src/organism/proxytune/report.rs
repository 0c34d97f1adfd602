//! `organism proxy`'s report: report.json, report.md, proxy.svg and report.html.

use super::{Method, Point, ProxyReport};
use crate::error::Result;
use crate::markup::{legend, md_table, Area};
use crate::stats::Rate;
use std::path::Path;

fn pct(e: &Rate) -> String {
    format!(
        "{:.1} [{:.1}, {:.1}]",
        100.0 * e.value,
        100.0 * e.ci_low,
        100.0 * e.ci_high
    )
}

fn points_table(rep: &ProxyReport) -> String {
    let rows: Vec<Vec<String>> = rep
        .points
        .iter()
        .map(|p| {
            vec![
                p.label.clone(),
                pct(&p.gain),
                format!("{:.2}", p.taught_logp),
                pct(&p.retention),
                format!("{:.3}", p.old_logp_drop),
                pct(&p.control),
            ]
        })
        .collect();
    md_table(
        &[
            "model",
            "gain: taught facts answered (%)",
            "taught facts' mean log-prob",
            "retention: known old facts still answered (%)",
            "old facts' log-prob fall (nats)",
            "control: untaught never-seen facts answered (%)",
        ],
        &rows,
    )
}

/// Retention by exposure bucket for the untouched model, the last fine-tuning point and the
/// last step's proxy points.
fn exposure_table(rep: &ProxyReport) -> String {
    let last = rep.options.save_at.iter().copied().max().unwrap_or(0);
    let cols: Vec<&Point> = rep
        .points
        .iter()
        .filter(|p| match p.method {
            Method::FineTune { step } | Method::Proxy { step, .. } => step == last,
            _ => false,
        })
        .collect();
    let Some(first) = cols.first() else {
        return String::new();
    };
    let mut head = vec!["exposure (known facts)".to_string()];
    head.extend(cols.iter().map(|p| p.label.clone()));
    let rows: Vec<Vec<String>> = first
        .by_exposure
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let mut r = vec![format!("{} ({})", b.exposure, b.n)];
            r.extend(cols.iter().map(|p| pct(&p.by_exposure[i].kept)));
            r
        })
        .collect();
    md_table(&head, &rows)
}

fn matched_table(rep: &ProxyReport) -> String {
    let rows: Vec<Vec<String>> = rep
        .matched
        .iter()
        .map(|m| {
            vec![
                m.proxy.clone(),
                m.fine_tune.clone(),
                format!("{:+.1}", 100.0 * m.gain_difference),
                format!(
                    "{:+.1} [{:+.1}, {:+.1}]",
                    100.0 * m.retention_difference.value,
                    100.0 * m.retention_difference.ci_low,
                    100.0 * m.retention_difference.ci_high
                ),
            ]
        })
        .collect();
    md_table(
        &[
            "proxy",
            "fine-tuning point of the nearest gain",
            "gain, proxy − fine-tune (points)",
            "retention, proxy − fine-tune (points, paired)",
        ],
        &rows,
    )
}

/// Per α, the matched pairs within 5 points of gain and which way their retention goes.
pub fn close_table(rep: &ProxyReport) -> String {
    let rows: Vec<Vec<String>> = rep
        .options
        .alphas
        .iter()
        .map(|a| {
            let (n, p, f) = super::close_pairs(&rep.matched, 5.0, *a);
            vec![format!("{a}"), n.to_string(), p.to_string(), f.to_string()]
        })
        .collect();
    md_table(
        &[
            "α",
            "proxy points with a fine-tuning point within 5 points of gain",
            "proxy keeps more",
            "fine-tuning keeps more",
        ],
        &rows,
    )
}

fn moved_table(rep: &ProxyReport) -> String {
    let rows: Vec<Vec<String>> = rep
        .moved
        .iter()
        .map(|m| {
            let w: Vec<String> = m.weights.iter().map(|x| format!("{x:.3}")).collect();
            let r: Vec<String> = m.residual.iter().map(|x| format!("{x:.3}")).collect();
            vec![
                m.model.clone(),
                format!("{:.3}", m.embedding),
                w.join(" / "),
                r.join(" / "),
            ]
        })
        .collect();
    md_table(
        &[
            "model",
            "embedding: relative weight change",
            "blocks 0, 1, …: relative weight change",
            "blocks 0, 1, …: residual 1 − cos on known old facts",
        ],
        &rows,
    )
}

pub fn markdown(rep: &ProxyReport) -> String {
    let o = &rep.options;
    let mut s = format!(
        "# Proxy-tuning against fine-tuning\n\nWorld `{}`; large `{}`, small `{}`; {:.0} s \
         (tuning {:.0} s and {:.0} s).\n\n`{}`\n\n{} never-seen facts taught ({} statements \
         each; {} lines with {:.0}% replay of the world's corpus), {} never-seen facts left as the control, {} old facts the large model \
         answers before tuning. Both models fine-tuned {} steps (batch {}, {} tokens, peak lr \
         {}, warm-up {}, weight decay {}); final tuning loss {:.3} (large) and {:.3} (small). \
         Proxy: logits = large + α·(small tuned − small). Intervals: 95% bootstrap over facts.\n\n",
        rep.world,
        rep.large,
        rep.small,
        rep.seconds,
        rep.tune_seconds[0],
        rep.tune_seconds[1],
        rep.command,
        rep.taught,
        o.repeats,
        rep.tuning_lines,
        100.0 * o.replay,
        rep.control,
        rep.old_known,
        o.schedule.steps,
        o.schedule.batch,
        o.schedule.seq,
        o.schedule.lr,
        o.schedule.warmup,
        o.schedule.weight_decay,
        rep.tune_final_loss[0],
        rep.tune_final_loss[1]
    );
    s += "## Every point\n\nThe small model tuned alone is listed for reference: its retention counts the \
          large model's known facts that it answers.\n\n";
    s += &points_table(rep);
    s += "\n## At equal gain: each proxy point against the nearest fine-tuning point\n\n";
    s += &matched_table(rep);
    s += "\n### Within 5 points of gain, by α\n\n";
    s += &close_table(rep);
    s += "\n### The frontier: points no other beats on both gain and retention\n\n";
    let f: Vec<String> = super::frontier(&rep.points)
        .iter()
        .map(|p| {
            format!(
                "- {}: gain {}, retention {}\n",
                p.label,
                pct(&p.gain),
                pct(&p.retention)
            )
        })
        .collect();
    s += &f.concat();
    s += "\n## Retention by exposure, after the last tuning step\n\n";
    s += &exposure_table(rep);
    s += "\n## Which layers moved\n\nThe proxy leaves the large model's weights and \
          representations as they were; its change lives in the small pair's logits.\n\n";
    s += &moved_table(rep);
    s
}

/// The chart's series: fine-tuning over its steps, then one per α over the small model's
/// steps, each as (label, points).
fn series(rep: &ProxyReport) -> Vec<(String, Vec<(f64, f64)>)> {
    let xy = |p: &Point| (100.0 * p.gain.value, 100.0 * p.retention.value);
    let mut out = vec![(
        "fine-tune (steps)".to_string(),
        rep.points
            .iter()
            .filter(|p| matches!(p.method, Method::Base | Method::FineTune { .. }))
            .map(xy)
            .collect(),
    )];
    for a in &rep.options.alphas {
        let pts = rep
            .points
            .iter()
            .filter(|p| {
                matches!(p.method, Method::Base)
                    || matches!(p.method, Method::Proxy { alpha, .. } if alpha == *a)
            })
            .map(xy)
            .collect();
        out.push((format!("proxy α={a} (small's steps)"), pts));
    }
    out
}

pub fn chart(rep: &ProxyReport, path: &Path) -> Result<()> {
    crate::markup::svg_chart(path, (760, 480), |root| frontier_panel(rep, root))
}

fn frontier_panel(rep: &ProxyReport, root: &Area) -> std::result::Result<(), String> {
    use plotters::prelude::*;
    let mut c = ChartBuilder::on(root)
        .caption("gain against retention", ("sans-serif", 16))
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(50)
        .build_cartesian_2d(0.0..100.0, 0.0..100.0)
        .map_err(|e| e.to_string())?;
    c.configure_mesh()
        .x_desc("taught facts answered (%)")
        .y_desc("known old facts still answered (%)")
        .draw()
        .map_err(|e| e.to_string())?;
    for (k, (label, pts)) in series(rep).into_iter().enumerate() {
        let color = Palette99::pick(k).to_rgba();
        crate::markup::dotted_line(&mut c, &pts, color, label)?;
    }
    legend(&mut c)
}

/// Write report.json, report.md, proxy.svg and report.html into `dir`.
pub fn write(rep: &ProxyReport, dir: &Path) -> Result<()> {
    crate::markup::write_report(
        dir,
        rep,
        &markdown(rep),
        ("proxy.svg", "Gain on the taught facts against retention of the facts known before, along the tuning steps."),
        |p| chart(rep, p),
    )
}
