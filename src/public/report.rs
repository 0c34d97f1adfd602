//! The public benchmarks' report: `report.json`, `report.md` (one section per benchmark, its own
//! metrics beside ours, published figures labelled as coming from larger models) and
//! `report.html`, the markdown in a page.

use super::Section;
use crate::bench::Rate;
use crate::error::Result;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The public report.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PublicReport {
    pub model: crate::model::ModelId,
    pub command: String,
    pub limit: Option<usize>,
    /// Dev items used for choosing strengths, at most (None: all).
    #[serde(default)]
    pub dev_limit: Option<usize>,
    pub seed: u64,
    pub sections: Vec<Section>,
}

/// What the two `changed vs none` columns count.
const CHANGED: &str = "*changed vs none*: the share of test runs whose teacher-forced log-probabilities are not bit-identical to `none`'s, on the test prompts (with their contexts) and on the known facts' closed-book prompts that retention is measured on. A method with no intervention for a prompt runs it bit-identically, so for a gated method this is how often its gate fired, and on the closed-book prompts, where there is no conflict, how often it fired without cause.";

fn pct(r: &Rate) -> String {
    if r.n == 0 {
        "n/a (n = 0)".into()
    } else if r.ci_low.is_nan() {
        format!("{:.1}%", 100.0 * r.value)
    } else {
        format!(
            "{:.1}% [{:.1}, {:.1}]",
            100.0 * r.value,
            100.0 * r.ci_low,
            100.0 * r.ci_high
        )
    }
}

pub fn markdown(r: &PublicReport) -> String {
    let mut s = format!(
        "# Public knowledge-conflict benchmarks\n\nModel `{}`; command `{}`; {}{}; seed {}.\n\n{CHANGED}\n\n",
        r.model.file,
        r.command,
        r.limit
            .map(|n| format!("at most {n} items per benchmark"))
            .unwrap_or("full size".into()),
        r.dev_limit
            .map(|n| format!(", strengths chosen on at most {n} dev items"))
            .unwrap_or_default(),
        r.seed
    );
    for sec in &r.sections {
        s += &format!(
            "## {}\n\n{} items ({} dev used for choosing strengths, {} test), {:.0} s in all: the split pass {:.0} s in this run, and each method's own time below.\n\n",
            sec.name, sec.n_items, sec.n_dev, sec.n_test, sec.seconds, sec.split_seconds
        );
        if !sec.methods.is_empty() {
            s += &methods_table(sec);
            // A subsection of this benchmark's section, where contexts of three types were run.
            let contexts = crate::report::contexts_markdown(
                &sec.methods,
                3,
                sec.dev_irrelevant_none.is_some(),
            );
            if !contexts.is_empty() {
                s += "\n";
                s += &contexts;
            }
        }
        if !sec.pending.is_empty() {
            let names: Vec<&str> = sec.pending.iter().map(|m| m.name()).collect();
            s += &format!(
                "\nNot run yet (no saved part): {}. Resuming the run goes on with them.\n",
                names.join(", ")
            );
        }
        if !sec.published.is_empty() {
            s += &published_table(&sec.published);
        }
        s += &format!("\n{}\n\n", sec.note);
    }
    s
}

/// One row per method: the benchmark's own metrics, ours, and the time.
fn methods_table(sec: &Section) -> String {
    let mut s = String::new();
    let metrics: Vec<String> = sec
        .own
        .first()
        .map(|(_, v)| v.iter().map(|(k, _)| k.clone()).collect())
        .unwrap_or_default();
    s += &format!(
        "| method | chosen on dev | {} | adherence (ours) | prior retention | time |\n",
        metrics.join(" | ")
    );
    s += &format!("|---|---|{}---|---|---:|\n", "---|".repeat(metrics.len()));
    for (m, (_, own)) in sec.methods.iter().zip(&sec.own) {
        let vals: Vec<String> = own.iter().map(|(_, r)| pct(r)).collect();
        let resumed = match m.reused_runs {
            0 => String::new(),
            n => format!(" after a resume ({n} runs done before)"),
        };
        s += &format!(
            "| {} | {} | {} | {} | {} | {:.0} s{resumed} |\n",
            m.method.name(),
            m.chosen,
            vals.join(" | "),
            pct(&m.test.adherence),
            pct(&m.test.retention),
            m.seconds
        );
    }
    s
}

/// The caption of every chart.
const FIGURE_NOTE: &str = "Test items. Dot: the value; line: its 95% bootstrap interval.";

/// Write report.json, report.md and report.html (the same, as an HTML page) into `dir`.
pub fn write(r: &PublicReport, dir: &Path) -> Result<()> {
    let md = markdown(r);
    let figures = r
        .sections
        .iter()
        .filter(|sec| !sec.methods.is_empty())
        .map(|sec| Ok((sec.name.clone(), section_chart(sec)?)))
        .collect::<Result<_>>()?;
    let files = crate::markup::ReportFiles {
        value: r,
        title: "Public knowledge-conflict benchmarks",
        markdown: &md,
        figures,
        caption: Some(FIGURE_NOTE),
    };
    crate::markup::write_files(dir, &files)
}

/// A section's chart: per method, the benchmark's headline metric (its first own metric), our
/// adherence and the prior retention, each with its 95% interval, on the test items.
fn section_chart(sec: &Section) -> Result<String> {
    use super::chart::{dot_chart, Panel};
    let names: Vec<String> = sec.methods.iter().map(|m| m.method.name().into()).collect();
    let mut panels = Vec::new();
    if let Some((_, first)) = sec.own.first() {
        if let Some((title, _)) = first.first() {
            let rates = sec.own.iter().map(|(_, v)| v[0].1.clone()).collect();
            panels.push(Panel {
                title: title.clone(),
                rates,
            });
        }
    }
    type Pick = fn(&crate::bench::Eval) -> &Rate;
    let ours: [(&str, Pick); 2] = [
        ("adherence (ours)", |e| &e.adherence),
        ("prior retention", |e| &e.retention),
    ];
    for (title, f) in ours {
        panels.push(Panel {
            title: title.into(),
            rates: sec.methods.iter().map(|m| f(&m.test).clone()).collect(),
        });
    }
    dot_chart(&names, &panels)
}

/// Published figures as one row per (model, metric, source) and one column per method, in the
/// order they first appear.
fn published_table(published: &[super::Published]) -> String {
    let mut methods: Vec<&str> = Vec::new();
    let mut rows: Vec<(&str, &str, &str)> = Vec::new();
    for p in published {
        if !methods.contains(&p.method.as_str()) {
            methods.push(&p.method);
        }
        let row = (p.model.as_str(), p.metric.as_str(), p.source.as_str());
        if !rows.contains(&row) {
            rows.push(row);
        }
    }
    let mut s = format!(
        "\nPublished figures (**larger models**, for orientation only):\n\n| model | metric | {} | source |\n|---|---|{}---|\n",
        methods.join(" | "),
        "---:|".repeat(methods.len())
    );
    for (model, metric, source) in rows {
        let cells: Vec<String> = methods
            .iter()
            .map(|m| {
                published
                    .iter()
                    .find(|p| {
                        (
                            p.model.as_str(),
                            p.metric.as_str(),
                            p.source.as_str(),
                            p.method.as_str(),
                        ) == (model, metric, source, m)
                    })
                    .map_or(String::new(), |p| format!("{:.2}", p.value))
            })
            .collect();
        s += &format!(
            "| {model} | {metric} | {} | {source} |\n",
            cells.join(" | ")
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn published_figures_pivot_to_one_row_per_model_and_metric() {
        let t = published_table(&crate::public::nqswap_published());
        assert!(
            t.contains("| model | metric | none | cad | SpARE | source |"),
            "{t}"
        );
        // SpARE: 3 models x (EM_C, EM_M); CAD: 8 models x EM_C.
        let rows = t
            .lines()
            .filter(|l| l.starts_with("| ") && !l.starts_with("| model"));
        assert_eq!(rows.count(), 3 * 2 + 8, "{t}");
        assert!(
            t.contains("| Llama3-8B | EM_C | 42.69 | 65.65 | 77.69 | Zhao"),
            "{t}"
        );
        assert!(t.contains("| Llama3-8B | EM_M | 26.63 |  |  | Zhao"), "{t}");
        assert!(
            t.contains("| GPT-Neo-20B | EM_C | 16.10 | 36.80 |  | Shi"),
            "{t}"
        );
    }
}
