//! Redraw a saved report from its report.json (left as it is): report.md, its charts and
//! report.html are functions of it, so a report can be redrawn after a change to the writer
//! without running anything, and checked byte for byte.

use crate::error::{Error, Result};
use std::path::Path;

/// The kinds of report, told apart by a field only that kind has (checked in this order).
const KINDS: [(&str, &str); 7] = [
    ("sections", "public"),
    ("matched", "proxy"),
    ("ranked", "modularity"),
    ("fits", "capacity"),
    ("rows", "shapes"),
    ("snapshots", "study"),
    ("methods", "conflict"),
];

fn parse<T: serde::de::DeserializeOwned>(p: &Path, v: serde_json::Value) -> Result<T> {
    serde_json::from_value(v).map_err(|e| Error::file(p, format!("not a report.json: {e}")))
}

/// Rewrite `dir`'s report files from its report.json; returns the kind of report.
pub fn render(dir: &Path) -> Result<&'static str> {
    let p = dir.join("report.json");
    let text = std::fs::read_to_string(&p).map_err(|e| Error::file(&p, e))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| Error::file(&p, e.to_string()))?;
    let kind = KINDS
        .iter()
        .find(|(field, _)| v.get(field).is_some())
        .map(|(_, k)| *k)
        .ok_or_else(|| {
            Error::file(
                &p,
                "not a report this can redraw (bench conflict, bench public or demo; organism \
                 capacity, shapes, study, modularity or proxy)",
            )
        })?;
    // The writers rewrite report.json too; its text is the source, kept as it was whatever
    // happens (a report written by another serializer may space or order it otherwise).
    let drawn = draw(kind, &p, v, dir);
    crate::atomic::write(&p, text.as_bytes())?;
    drawn?;
    Ok(kind)
}

/// Write `dir`'s files from `v`, a report of `kind`.
fn draw(kind: &str, p: &Path, v: serde_json::Value, dir: &Path) -> Result<()> {
    use crate::organism::{capacity_report, modularity, proxytune, shapes, study_report};
    match kind {
        "proxy" => proxytune::report::write(&parse(p, v)?, dir),
        "modularity" => modularity::report::write(&parse(p, v)?, dir),
        "capacity" => capacity_report::write(&parse(p, v)?, dir),
        "shapes" => shapes::write(&parse(p, v)?, dir),
        "study" => study_report::write(&parse(p, v)?, dir),
        "public" => crate::public::write(&parse(p, v)?, dir),
        _ => {
            let rep: crate::report::Report = parse(p, v)?;
            redraw_bench_charts(&rep, dir)?;
            crate::report::write(&rep, dir)
        }
    }
}

/// A `bench conflict` report's charts are functions of its methods: drawn again (a demo's also
/// show what its report.json does not keep, and are left as they are).
fn redraw_bench_charts(rep: &crate::report::Report, dir: &Path) -> Result<()> {
    if rep.probe.is_some() || rep.patching.is_some() || rep.density.is_some() {
        return Ok(());
    }
    let drawn = crate::report::charts(&rep.methods, dir)?;
    match drawn == rep.charts {
        true => Ok(()),
        false => Err(Error::file(
            dir,
            format!(
                "report.json names the charts {:?}; its methods give {:?}",
                rep.charts.values().collect::<Vec<_>>(),
                drawn.values().collect::<Vec<_>>()
            ),
        )),
    }
}
