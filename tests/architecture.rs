//! The library's modules import only downward: engine (`model`, `hooks`) → observations
//! (`data`, `label`, `capture`, `generate`, `proxy`, `journal`) → analyses and interventions (`probe`,
//! `steer`, `patch`, `density`, `reft`, `speed`) → evaluation (`bench`, `public`, `report`) →
//! `demo`; the command line sits on top and the library never names clap.

use std::collections::BTreeMap;
use std::path::Path;

fn layer(module: &str) -> Option<usize> {
    Some(match module {
        "error" | "atomic" | "choice" | "stats" | "progress" | "choice_enum" | "markup" => 0,
        "hooks" | "model" => 1,
        "data" | "label" | "capture" | "generate" | "journal" | "proxy" => 2,
        "probe" | "steer" | "patch" | "density" | "reft" | "speed" | "organism" => 3,
        "bench" | "public" | "report" => 4,
        "demo" => 5,
        _ => return None,
    })
}

/// Each top-level module's source, tests left out, by module name.
fn sources() -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = BTreeMap::new();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut stack = vec![src.clone()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()) {
            if e.is_dir() {
                stack.push(e);
                continue;
            }
            let rel = e.strip_prefix(&src).unwrap().to_string_lossy().into_owned();
            let top = rel
                .split('/')
                .next()
                .unwrap()
                .trim_end_matches(".rs")
                .to_string();
            if matches!(top.as_str(), "main" | "lib" | "cli") {
                continue;
            }
            let text = std::fs::read_to_string(&e).unwrap();
            let body = text.split("#[cfg(test)]").next().unwrap().to_string();
            out.entry(top).or_default().push_str(&body);
        }
    }
    out
}

/// The modules `text` names as `crate::NAME`.
fn imports(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (i, _) in text.match_indices("crate::") {
        let rest = &text[i + 7..];
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || *c == '_')
            .collect();
        if !name.is_empty() {
            out.push(name);
        }
    }
    for (i, _) in text.match_indices("use crate::{") {
        let group = &text[i + 12..i + 12 + text[i + 12..].find('}').unwrap()];
        for part in group.split(',') {
            if let Some((name, _)) = part.trim().split_once("::") {
                out.push(name.to_string());
            }
        }
    }
    out
}

#[test]
fn modules_import_only_downward_and_the_library_never_names_clap() {
    let mut wrong = Vec::new();
    for (module, text) in sources() {
        let own =
            layer(&module).unwrap_or_else(|| panic!("src/{module}: add it to the layer table"));
        for dep in imports(&text) {
            if dep == module {
                continue;
            }
            let theirs = layer(&dep).unwrap_or_else(|| panic!("{module} imports unknown {dep}"));
            if theirs > own {
                wrong.push(format!(
                    "{module} (layer {own}) imports {dep} (layer {theirs})"
                ));
            }
        }
        if text.contains("clap::") {
            wrong.push(format!("{module} names clap"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn no_import_circles() {
    let graph: BTreeMap<String, Vec<String>> = sources()
        .into_iter()
        .map(|(m, t)| {
            (
                m.clone(),
                imports(&t).into_iter().filter(|d| *d != m).collect(),
            )
        })
        .collect();
    let reaches = |from: &str, to: &str| {
        let (mut seen, mut stack) = (std::collections::BTreeSet::new(), vec![from.to_string()]);
        while let Some(m) = stack.pop() {
            for d in graph.get(&m).into_iter().flatten() {
                if d == to {
                    return true;
                }
                if seen.insert(d.clone()) {
                    stack.push(d.clone());
                }
            }
        }
        false
    };
    let circles: Vec<String> = graph
        .iter()
        .flat_map(|(m, ds)| {
            ds.iter()
                .filter(|d| reaches(d, m))
                .map(move |d| format!("{m} -> {d} -> … -> {m}"))
        })
        .collect();
    assert!(circles.is_empty(), "{}", circles.join("\n"));
}
