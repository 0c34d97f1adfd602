//! Text for reports: HTML escaping and Markdown tables, shared by every report writer.

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
