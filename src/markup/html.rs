//! A report's markdown as a real HTML page: its headings, paragraphs, lists and tables become
//! HTML elements (the markdown is ours, so only what it uses is handled), with charts placed
//! after the headings they belong to. Every report's HTML is written here.

use std::collections::BTreeMap;

/// `md` as a self-contained page titled `title`. `figures` maps a heading's text to HTML
/// (a chart) placed right after that heading, with `caption` under it when given; and an
/// image's file (a block `![ALT](FILE)`) to the HTML that stands for it, captioned ALT (an
/// image not in `figures` is linked by its file name).
pub fn page(
    title: &str,
    md: &str,
    figures: &BTreeMap<String, String>,
    caption: Option<&str>,
) -> String {
    let mut body = String::new();
    for block in md.split("\n\n").map(str::trim).filter(|b| !b.is_empty()) {
        if let Some(fig) = image(block, figures) {
            body += &fig;
            continue;
        }
        body += &render_block(block);
        let heading = block.lines().next().unwrap_or("").trim_start_matches('#');
        if block.starts_with('#') {
            if let Some(f) = figures.get(heading.trim()) {
                body += &match caption {
                    Some(c) => {
                        format!("<figure>{f}<figcaption>{}</figcaption></figure>", escape(c))
                    }
                    None => format!("<figure>{f}</figure>"),
                };
            }
        }
    }
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{}</title><style>{STYLE}</style></head><body>{body}</body></html>",
        escape(title)
    )
}

const STYLE: &str = "body{font-family:sans-serif;max-width:1200px;margin:2em auto;line-height:1.4}\
table{border-collapse:collapse;margin:1em 0;font-size:90%}th,td{border:1px solid #ccc;padding:3px 6px}\
th{background:#f3f3f3}td.n{text-align:right}code{background:#f6f6f6;padding:0 2px}\
figure{margin:1em 0}figcaption{font-size:85%;color:#555}";

/// A block that is one image, `![ALT](FILE)`, as a figure.
fn image(block: &str, figures: &BTreeMap<String, String>) -> Option<String> {
    let rest = block.strip_prefix("![")?.strip_suffix(')')?;
    let (alt, file) = rest.split_once("](")?;
    if block.contains('\n') {
        return None;
    }
    let content = match figures.get(file) {
        Some(html) => html.clone(),
        None => format!("<img src=\"{}\" alt=\"{}\">", escape(file), escape(alt)),
    };
    Some(format!(
        "<figure>{content}<figcaption>{}</figcaption></figure>",
        escape(alt)
    ))
}

fn render_block(block: &str) -> String {
    let lines: Vec<&str> = block.lines().collect();
    if let Some(h) = lines[0].strip_prefix('#') {
        let level = 1 + h.chars().take_while(|c| *c == '#').count();
        let text = h.trim_start_matches('#').trim();
        let rest = lines[1..].join("\n");
        let tail = if rest.trim().is_empty() {
            String::new()
        } else {
            render_block(&rest)
        };
        return format!("<h{level}>{}</h{level}>{tail}", inline(text));
    }
    if lines.iter().all(|l| l.starts_with('|')) {
        return table(&lines);
    }
    if lines.iter().all(|l| l.starts_with("- ")) {
        let items: String = lines
            .iter()
            .map(|l| format!("<li>{}</li>", inline(&l[2..])))
            .collect();
        return format!("<ul>{items}</ul>");
    }
    format!("<p>{}</p>", inline(&lines.join(" ")))
}

/// A markdown table: a header row, the `|---|` row, then body rows.
fn table(lines: &[&str]) -> String {
    let mut s = String::from("<table>");
    for (i, l) in lines.iter().enumerate() {
        if i == 1 && l.chars().all(|c| matches!(c, '|' | '-' | ':' | ' ')) {
            continue;
        }
        let tag = if i == 0 { "th" } else { "td" };
        s += "<tr>";
        for cell in cells(l) {
            let cell = cell.trim();
            let numeric = cell
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_digit() || c == '-' || c == '+');
            let class = if tag == "td" && numeric {
                " class=\"n\""
            } else {
                ""
            };
            s += &format!("<{tag}{class}>{}</{tag}>", inline(cell));
        }
        s += "</tr>";
    }
    s + "</table>"
}

/// The cells of `| a | b |`, where `\|` is a literal bar.
fn cells(line: &str) -> Vec<String> {
    let inner = line.trim().trim_start_matches('|').trim_end_matches('|');
    let mut out = vec![String::new()];
    let mut chars = inner.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&'|') => {
                out.last_mut().unwrap().push(chars.next().unwrap())
            }
            '|' => out.push(String::new()),
            c => out.last_mut().unwrap().push(c),
        }
    }
    out
}

/// Escaped text with `code`, **bold** and *emphasis* spans.
fn inline(text: &str) -> String {
    let mut s = String::new();
    for (i, part) in text.split('`').enumerate() {
        if i % 2 == 1 {
            s += &format!("<code>{}</code>", escape(part));
            continue;
        }
        for (j, p) in escape(part).split("**").enumerate() {
            let em = emphasis(p);
            s += &if j % 2 == 1 {
                format!("<strong>{em}</strong>")
            } else {
                em
            };
        }
    }
    s
}

/// `*x*` as `<em>x</em>`; a lone `*` (as in `β*`) stays.
fn emphasis(text: &str) -> String {
    let parts: Vec<&str> = text.split('*').collect();
    if parts.len() < 3 {
        return text.to_string();
    }
    let mut s = String::new();
    for (i, p) in parts.iter().enumerate() {
        match (i % 2 == 1, i + 1 == parts.len() && i % 2 == 1) {
            (true, false) => s += &format!("<em>{p}</em>"),
            (true, true) => s += &format!("*{p}"),
            _ => s += p,
        }
    }
    s
}

use super::esc as escape;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headings_tables_lists_and_inline_spans_become_html() {
        let md = "# Title\n\nSome `x<y` and **bold** and *this*.\n\n## Part\n\n| a | b \\| c |\n|---|---:|\n| 1.5 | **2** |\n\n- one\n- two";
        let fig = BTreeMap::from([("Part".to_string(), "<svg>chart</svg>".to_string())]);
        let h = page("T", md, &fig, Some("A note"));
        assert!(
            h.contains("<h2>Part</h2><figure><svg>chart</svg><figcaption>A note</figcaption>"),
            "{h}"
        );
        assert!(h.contains("<h1>Title</h1>"));
        assert!(h.contains(
            "<p>Some <code>x&lt;y</code> and <strong>bold</strong> and <em>this</em>.</p>"
        ));
        assert!(h.contains("<h2>Part</h2>"));
        assert!(h.contains("<tr><th>a</th><th>b | c</th></tr>"));
        assert!(h.contains("<td class=\"n\">1.5</td><td><strong>2</strong></td>"));
        assert!(!h.contains("---"));
        assert!(h.contains("<ul><li>one</li><li>two</li></ul>"));
        let img = "# T\n\n![a chart](c.svg)\n\n![other](d.svg)";
        let fig = BTreeMap::from([("c.svg".to_string(), "<svg>c</svg>".to_string())]);
        let h = page("T", img, &fig, None);
        assert!(h.contains("<figure><svg>c</svg><figcaption>a chart</figcaption></figure>"));
        assert!(h.contains("<figure><img src=\"d.svg\" alt=\"other\"><figcaption>other"));
    }
}
