//! Re-render an organism report from its report.json (left as it is): report.md, the chart
//! and report.html are functions of it, so a saved report can be redrawn (after a change to the writer)
//! without running anything, and its markdown checked byte for byte.

use crate::error::{Error, Result};
use std::path::Path;

/// The kinds of organism report, told apart by a field only that kind has.
const KINDS: [(&str, &str); 5] = [
    ("matched", "proxy"),
    ("ranked", "modularity"),
    ("fits", "capacity"),
    ("rows", "shapes"),
    ("snapshots", "study"),
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
                "not an organism report (capacity, shapes, study, modularity or proxy)",
            )
        })?;
    match kind {
        "proxy" => super::proxytune::report::write(&parse(&p, v)?, dir)?,
        "modularity" => super::modularity::report::write(&parse(&p, v)?, dir)?,
        "capacity" => super::capacity_report::write(&parse(&p, v)?, dir)?,
        "shapes" => super::shapes::write(&parse(&p, v)?, dir)?,
        _ => super::study_report::write(&parse(&p, v)?, dir)?,
    }
    // The writers rewrite report.json too; its text is the source, kept as it was (a float
    // read back may print differently in its last digit).
    crate::atomic::write(&p, text.as_bytes())?;
    Ok(kind)
}
