//! How a command that writes a report ends: its JSON, or a summary and where the report is.

use anyhow::Result;

/// With `--json`, print `value` as JSON; else `summary()` and where the report is, with the
/// run's time.
pub(super) fn print_report<T: serde::Serialize>(
    json: bool,
    value: &T,
    summary: impl FnOnce() -> String,
    out: &std::path::Path,
    seconds: f64,
) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(value)?);
        return Ok(());
    }
    print!("{}", summary());
    println!(
        "report in {} ({seconds:.0}s)",
        out.join("report.html").display()
    );
    Ok(())
}
