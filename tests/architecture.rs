//! The library's modules import only downward: engine (`model`, `hooks`) → observations
//! (`data`, `label`, `capture`, `generate`, `proxy`, `journal`) → analyses and interventions (`probe`,
//! `steer`, `patch`, `density`, `reft`, `speed`) → evaluation (`bench`, `public`, `report`) →
//! `demo` and `render`; the command line sits on top and the library never names clap. The engine
//! (`crates/engine`: `error`, `model`, `hooks`, `generate`) is its own crate, with no command
//! line and no downloader.

use std::collections::BTreeMap;
use std::path::Path;

fn layer(module: &str) -> Option<usize> {
    Some(match module {
        "error" | "atomic" | "choice" | "stats" | "progress" | "choice_enum" | "markup" => 0,
        "hooks" | "model" | "fetch" => 1,
        "data" | "label" | "capture" | "generate" | "journal" | "proxy" => 2,
        "probe" | "steer" | "patch" | "density" | "reft" | "speed" | "organism" => 3,
        "bench" | "public" | "report" => 4,
        "demo" | "render" => 5,
        _ => return None,
    })
}

/// The source folders: this crate's and the engine's.
fn roots() -> Vec<std::path::PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    vec![root.join("src"), root.join("crates/engine/src")]
}

/// Every `.rs` file under `dir`.
fn rust_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let (mut out, mut stack) = (vec![], vec![dir.to_path_buf()]);
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().map(|e| e.unwrap().path()) {
            if e.is_dir() {
                stack.push(e);
            } else if e.extension().is_some_and(|x| x == "rs") {
                out.push(e);
            }
        }
    }
    out
}

/// Each top-level module's source, tests left out, by module name (both crates: the engine's
/// modules are this crate's `model`, `hooks`, `generate` and `error`).
fn sources() -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = BTreeMap::new();
    for src in roots() {
        for e in rust_files(&src) {
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

/// Each edge `m -> d` of `graph` from which `m` can be reached again, as "m -> d -> … -> m".
fn circles(graph: &BTreeMap<String, Vec<String>>) -> Vec<String> {
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
    graph
        .iter()
        .flat_map(|(m, ds)| {
            ds.iter()
                .filter(|d| reaches(d, m))
                .map(move |d| format!("{m} -> {d} -> … -> {m}"))
        })
        .collect()
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
    let circles = circles(&graph);
    assert!(circles.is_empty(), "{}", circles.join("\n"));
}

/// Functions longer than this many lines (signature to closing brace) are split, bar the
/// few in [`LONG_FUNCTIONS`].
const MAX_FN_LINES: usize = 60;

/// The functions still over [`MAX_FN_LINES`], each with the most lines it may have: they may
/// shrink, not grow, and a new long function fails the test.
const LONG_FUNCTIONS: [(&str, &str, usize); 0] = [];

/// Every function under `src/` outside `#[cfg(test)]` code: (file, name, lines). A function
/// starts at a line `[pub[(…)]] [const] [unsafe] fn NAME` and ends at the first line that is
/// its indentation followed by `}`; declarations without a body are skipped.
fn function_lengths() -> Vec<(String, String, usize)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let files: Vec<_> = roots().iter().flat_map(|r| rust_files(r)).collect();
    let mut out = vec![];
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        let code = text.split("#[cfg(test)]").next().unwrap();
        let rel = f.strip_prefix(root).unwrap().to_string_lossy().into_owned();
        out.extend(
            fns_in(code)
                .into_iter()
                .map(|(name, n)| (rel.clone(), name, n)),
        );
    }
    out
}

/// (name, lines) of each function with a body in `code`.
fn fns_in(code: &str) -> Vec<(String, usize)> {
    let lines: Vec<&str> = code.lines().collect();
    let mut out = vec![];
    let mut i = 0;
    while i < lines.len() {
        let t = lines[i].trim_start();
        let indent = &lines[i][..lines[i].len() - t.len()];
        let mut rest = t;
        for p in ["pub(crate) ", "pub(super) ", "pub ", "const ", "unsafe "] {
            rest = rest.strip_prefix(p).unwrap_or(rest);
        }
        let Some(sig) = rest.strip_prefix("fn ") else {
            i += 1;
            continue;
        };
        let name: String = sig
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        let mut j = i;
        while j < lines.len()
            && !lines[j].trim_end().ends_with('{')
            && !lines[j].trim_end().ends_with(';')
        {
            j += 1;
        }
        if j >= lines.len() || lines[j].trim_end().ends_with(';') {
            i = j + 1;
            continue;
        }
        let close = format!("{indent}}}");
        let mut k = j + 1;
        while k < lines.len() && lines[k].trim_end() != close {
            k += 1;
        }
        out.push((name, k - i + 1));
        i = k + 1;
    }
    out
}

#[test]
fn functions_stay_short() {
    let fns = function_lengths();
    assert!(
        fns.len() > 300,
        "the scan found only {} functions",
        fns.len()
    );
    let mut wrong = vec![];
    for (file, name, n) in &fns {
        let cap = LONG_FUNCTIONS
            .iter()
            .find(|(f, fname, _)| f == file && fname == name)
            .map_or(MAX_FN_LINES, |(.., cap)| *cap);
        if *n > cap {
            wrong.push(format!("{file}: fn {name} has {n} lines (at most {cap})"));
        }
    }
    assert!(
        wrong.is_empty(),
        "split these functions:\n{}",
        wrong.join("\n")
    );
    // The scan measures what it should: a known function's length, and a nested one.
    let sample = "fn a() {\n    let x = 1;\n    fn b() {\n    }\n}\npub fn c(\n    y: u8,\n) -> u8 {\n    y\n}\nfn d();\n";
    assert_eq!(
        fns_in(sample),
        vec![("a".to_string(), 5), ("c".to_string(), 5)]
    );
}

/// No source file under `src/` (or the engine's) is over 600 lines: a module that grows past
/// it is split.
#[test]
fn files_stay_under_600_lines() {
    let files: Vec<_> = roots().iter().flat_map(|r| rust_files(r)).collect();
    let wrong: Vec<String> = files
        .iter()
        .filter_map(|e| {
            let n = std::fs::read_to_string(e).unwrap().lines().count();
            (n > 600).then(|| format!("{}: {n} lines", e.display()))
        })
        .collect();
    assert!(files.len() > 50, "found only {} files", files.len());
    assert!(wrong.is_empty(), "split these files:\n{}", wrong.join("\n"));
}

/// The engine crate has no command line and no downloader: neither in its dependencies nor in
/// its code; and this crate reaches the engine's modules only through it.
#[test]
fn the_engine_has_no_command_line_and_no_downloader() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let manifest = std::fs::read_to_string(root.join("crates/engine/Cargo.toml")).unwrap();
    let deps = manifest.split("[dependencies]").nth(1).unwrap();
    let deps = deps.split("\n[").next().unwrap();
    for banned in ["clap", "anyhow", "indicatif", "zip", "reqwest", "ureq"] {
        let named = deps.lines().any(|l| l.trim_start().starts_with(banned));
        assert!(!named, "the engine depends on {banned}");
    }
    assert!(
        deps.contains("candle-core"),
        "the scan reads the engine's dependencies"
    );
    let engine = rust_files(&root.join("crates/engine/src"));
    assert!(
        engine.len() > 20,
        "found only {} engine files",
        engine.len()
    );
    for f in &engine {
        let text = std::fs::read_to_string(f).unwrap();
        for banned in [
            "clap::",
            "std::process::Command",
            "Command::new",
            "pip download",
        ] {
            assert!(!text.contains(banned), "{} names {banned}", f.display());
        }
    }
    for m in ["model", "hooks", "generate", "error"] {
        assert!(!root.join("src").join(m).exists() && !root.join(format!("src/{m}.rs")).exists());
    }
}

/// No import circle among the files of any folder module (`super::NAME` between siblings; the
/// folder's mod.rs, which declares them, is left out): inside the engine's `model/` too, the
/// formats, the forward pass and the kernels point one way.
#[test]
fn no_import_circles_inside_a_module() {
    let mut dirs: BTreeMap<std::path::PathBuf, Vec<std::path::PathBuf>> = BTreeMap::new();
    for f in roots().iter().flat_map(|r| rust_files(r)) {
        dirs.entry(f.parent().unwrap().to_path_buf())
            .or_default()
            .push(f);
    }
    let mut all = vec![];
    for (dir, files) in &dirs {
        let stems: Vec<String> = files
            .iter()
            .map(|f| f.file_stem().unwrap().to_string_lossy().into_owned())
            .filter(|s| s != "mod" && s != "lib" && s != "main")
            .collect();
        let mut graph: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for f in files {
            let stem = f.file_stem().unwrap().to_string_lossy().into_owned();
            if !stems.contains(&stem) {
                continue;
            }
            let text = std::fs::read_to_string(f).unwrap();
            let code: String = text
                .split("#[cfg(test)]")
                .next()
                .unwrap()
                .lines()
                .filter(|l| !l.trim_start().starts_with("//"))
                .collect::<Vec<_>>()
                .join("\n");
            let deps = stems
                .iter()
                .filter(|s| **s != stem && code.contains(&format!("super::{s}")))
                .cloned()
                .collect();
            graph.insert(stem, deps);
        }
        let found = circles(&graph).into_iter();
        all.extend(found.map(|c| format!("{}: {c}", dir.display())));
    }
    assert!(dirs.len() > 10, "found only {} folders", dirs.len());
    assert!(all.is_empty(), "import circles:\n{}", all.join("\n"));
}
