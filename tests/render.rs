//! Saved reports are functions of their report.json: redrawing one (of every kind, the public
//! benchmarks' too) gives its committed report.md, chart and report.html byte for byte, and
//! leaves report.json as it was.

use std::path::Path;

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_file() {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

#[test]
fn a_saved_report_redraws_byte_for_byte() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("results");
    let tmp = tempfile::tempdir().unwrap();
    // An organism report and a `bench conflict` report draw their charts; a demo's charts
    // (which show more than its report.json keeps) are read as saved.
    for (run, kind, svg) in [
        ("organism/capacity", "capacity", "capacity.svg"),
        ("organism/shapes", "shapes", "shapes.svg"),
        ("organism/transition", "study", "study.svg"),
        ("organism/modularity/4x128", "modularity", "modularity.svg"),
        ("organism/proxy/seed0-replay50", "proxy", "proxy.svg"),
        (
            "contexts/smollm2-completion-subject",
            "conflict",
            "contexts.svg",
        ),
        ("gemma3-270m/demo", "conflict", "sweep.svg"),
        // Its charts are inline in report.html.
        ("contexts/gemma3-270m-nqswap", "public", "report.html"),
    ] {
        let (src, dst) = (root.join(run), tmp.path().join(run));
        copy_dir(&src, &dst);
        // Start from the JSON alone: the other files must come back as committed.
        let drawn: &[&str] = match run {
            "gemma3-270m/demo" | "contexts/gemma3-270m-nqswap" => &["report.md", "report.html"],
            _ => &["report.md", "report.html", svg],
        };
        for f in drawn {
            std::fs::remove_file(dst.join(f)).unwrap();
        }
        assert_eq!(ctxsteer::render::render(&dst).unwrap(), kind);
        for f in ["report.json", "report.md", "report.html", svg] {
            let (a, b) = (
                std::fs::read(src.join(f)).unwrap(),
                std::fs::read(dst.join(f)).unwrap(),
            );
            assert!(a == b, "{run}/{f} differs when redrawn");
        }
    }
    let not = tmp.path().join("not");
    std::fs::create_dir_all(&not).unwrap();
    std::fs::write(not.join("report.json"), "{\"title\": 1}").unwrap();
    let err = ctxsteer::render::render(&not).unwrap_err().to_string();
    assert!(err.contains("not a report this can redraw"), "{err}");
    std::fs::write(not.join("report.json"), "{\"sections\": []}").unwrap();
    let err = ctxsteer::render::render(&not).unwrap_err().to_string();
    assert!(
        err.contains("not a report.json") && err.contains("model"),
        "{err}"
    );
    let json = std::fs::read_to_string(not.join("report.json")).unwrap();
    assert_eq!(json, "{\"sections\": []}", "report.json is left as it was");
    assert!(!not.join("report.md").exists());
}
