//! `organism study`: its statistics against known answers, and one run end to end on a tiny
//! organism whose facts are seen either never or 32 times.

use ctxsteer::organism::study::{Measure, Sample};
use ctxsteer::organism::summary::{slope, summarize};
use ctxsteer::organism::{self, WorldOptions};
use serde_json::Value;
use std::path::Path;

fn samples(pairs: &[(u32, f64)]) -> Vec<Sample> {
    pairs
        .iter()
        .map(|(e, v)| Sample {
            exposure: *e,
            value: *v,
        })
        .collect()
}

/// value = 3 + 0.5 log2(1 + exposure) gives a slope of 0.5 per doubling, whatever the noise-free
/// bucket sizes; buckets get their means and intervals that hold them.
#[test]
fn the_fit_recovers_a_known_slope_and_buckets_their_means() {
    let mut pairs = vec![];
    for e in [0u32, 1, 3, 7, 15] {
        for _ in 0..(1 + e as usize % 4) {
            pairs.push((e, 3.0 + 0.5 * (1.0 + e as f64).log2()));
        }
    }
    let s = samples(&pairs);
    assert!((slope(&s) - 0.5).abs() < 1e-12, "{}", slope(&s));
    let m = Measure {
        name: "x".into(),
        about: "a line".into(),
        samples: s,
    };
    let sr = summarize(&m, 1);
    assert_eq!(sr.points.len(), 5);
    assert_eq!(sr.points[2].exposure, 3);
    assert!((sr.points[2].value - 4.0).abs() < 1e-12);
    assert!((sr.fit.slope - 0.5).abs() < 1e-12 && sr.fit.ci_low <= 0.5 && sr.fit.ci_high >= 0.5);
    // A flat measure: the interval holds 0.
    let flat = samples(&[(0, 1.0), (0, 0.0), (8, 1.0), (8, 0.0), (64, 0.0), (64, 1.0)]);
    let f = summarize(
        &Measure {
            name: "f".into(),
            about: String::new(),
            samples: flat,
        },
        2,
    );
    assert!(f.fit.slope.abs() < 1e-12 && f.fit.ci_low <= 0.0 && f.fit.ci_high >= 0.0);
    assert!(f.points[0].ci_low <= 0.5 && f.points[0].ci_high >= 0.5);
}

fn ctxsteer() -> assert_cmd::Command {
    assert_cmd::Command::cargo_bin("ctxsteer").unwrap()
}

fn series<'a>(snap: &'a Value, name: &str) -> &'a Value {
    snap["series"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no series {name}"))
}

fn point(s: &Value, exposure: u64) -> f64 {
    s["points"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["exposure"] == exposure)
        .unwrap()["value"]
        .as_f64()
        .unwrap()
}

fn train_tiny(world: &Path, out: &Path) {
    let o = WorldOptions {
        subjects: 24,
        relations: 1,
        objects: 4,
        schedule: "0,32".into(),
        filler: 0.1,
        ..Default::default()
    };
    organism::build(&o, world).unwrap();
    let opts = organism::TrainOptions {
        layers: 2,
        d_model: 32,
        heads: 2,
        d_mlp: 64,
        steps: 600,
        batch: 8,
        seq: 24,
        lr: 1e-2,
        warmup: 10,
        checkpoint_every: 300,
        ..Default::default()
    };
    organism::train(world, out, &opts, false, &mut |_| Ok(())).unwrap();
}

/// The study runs end to end on a tiny organism: facts seen 32 times are recalled and those
/// never seen are not, so recall rises with exposure; the checkpoint is studied beside the
/// final weights, and a rerun reuses both.
#[test]
fn a_study_finds_recall_rising_with_exposure() {
    let dir = tempfile::tempdir().unwrap();
    let (world, model, out) = (
        dir.path().join("w"),
        dir.path().join("m"),
        dir.path().join("s"),
    );
    train_tiny(&world, &model);
    let run = || {
        ctxsteer()
            .args(["organism", "study", "--edit-epochs", "1", "--model"])
            .arg(&model)
            .arg("--world")
            .arg(&world)
            .arg("--out")
            .arg(&out)
            .assert()
            .success()
    };
    run();
    let rep: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    let snaps = rep["snapshots"].as_array().unwrap();
    assert_eq!(snaps.len(), 2, "step 300 and the final weights");
    assert_eq!(snaps[0]["step"], 300);
    assert_eq!(snaps[1]["label"], "final");
    let last = &snaps[1];
    let recall = series(last, "recall");
    assert!(point(recall, 32) >= 0.8, "{recall}");
    assert!(point(recall, 0) <= 0.5, "{recall}");
    assert!(recall["fit"]["ci_low"].as_f64().unwrap() > 0.0, "{recall}");
    for name in [
        "keeps_memory",
        "irrelevant_unchanged",
        "hoyer_mlp",
        "participation_resid",
        "object_separable",
    ] {
        let s = series(last, name);
        assert_eq!(s["points"].as_array().unwrap().len(), 2, "{name}: {s}");
    }
    // The likelihood of a fact's object: a fact seen 32 times is far likelier than one never
    // stated, and even a never-stated one is likelier than a uniform guess over the vocabulary
    // (the model has learned which objects the relation takes).
    let nll = series(last, "closed_nll");
    let vocab = ctxsteer::model::Tokenizer::from_folder(&world)
        .unwrap()
        .vocab_size() as f64;
    assert!(point(nll, 32) + 1.0 < point(nll, 0), "{nll}");
    assert!(point(nll, 0) < vocab.ln() - 1.0, "{nll} against ln {vocab}");
    assert!(point(series(last, "context_nll"), 32) > 0.0);
    // Measured on the known facts of dev and test only.
    series(last, "edit_flipped");
    for f in ["report.md", "report.html", "study.svg"] {
        assert!(out.join(f).exists(), "{f}");
    }
    let again = run();
    let err = String::from_utf8_lossy(&again.get_output().stderr).into_owned();
    assert_eq!(err.matches("reusing").count(), 2, "{err}");
}

#[test]
fn a_study_refuses_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let bad = |args: &[&str], want: &str| {
        let a = ctxsteer()
            .args(["organism", "study", "--model"])
            .arg(dir.path())
            .arg("--out")
            .arg(dir.path().join("o"))
            .args(args)
            .assert()
            .failure();
        let err = String::from_utf8_lossy(&a.get_output().stderr).into_owned();
        assert!(err.contains(want), "{args:?}: {err}");
    };
    let w = dir.path().to_str().unwrap();
    bad(&["--world", w], "not a world folder");
    bad(&["--world", w, "--alphas", "4,2"], "--alphas");
    bad(&["--world", w, "--scales", "0,1"], "--scales");
}

/// `organism shapes` trains each shape on the same tokens, studies it, counts its parameters
/// as the model has them, and a rerun reuses both the models and the studies.
#[test]
fn shapes_are_trained_alike_studied_and_reused() {
    let dir = tempfile::tempdir().unwrap();
    let (world, out) = (dir.path().join("w"), dir.path().join("shapes"));
    organism::build(
        &WorldOptions {
            subjects: 24,
            relations: 1,
            objects: 4,
            schedule: "0,8".into(),
            filler: 0.1,
            ..Default::default()
        },
        &world,
    )
    .unwrap();
    let run = || {
        ctxsteer()
            .args([
                "organism",
                "shapes",
                "--shapes",
                "2x16,1x24",
                "--steps",
                "20",
            ])
            .args(["--batch", "4", "--seq", "16", "--checkpoint-every", "10"])
            .args(["--edit-epochs", "0", "--world"])
            .arg(&world)
            .arg("--out")
            .arg(&out)
            .assert()
            .success()
    };
    run();
    let rep: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    let vocab = ctxsteer::model::Tokenizer::from_folder(&world)
        .unwrap()
        .vocab_size();
    let rows = rep["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    for (r, (layers, d)) in rows.iter().zip([(2usize, 16usize), (1, 24)]) {
        let o = organism::shapes::options(
            &organism::TrainOptions {
                steps: 20,
                ..Default::default()
            },
            organism::capacity::Shape { layers, d_model: d },
        );
        let net = organism::Net::new(&o, vocab).unwrap();
        assert_eq!(r["params"], net.n_params(), "{r}");
        assert_eq!(r["body_params"], net.n_params() - vocab * d, "{r}");
        assert_eq!(r["tokens"], 20 * 4 * 16);
    }
    let snaps = rep["study"]["snapshots"].as_array().unwrap();
    assert_eq!(snaps[0]["label"], "2x16");
    assert_eq!(snaps[1]["label"], "1x24");
    series(&snaps[1], "closed_nll");
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains("| exposure | 2x16 | 1x24 |"), "{md}");
    assert!(out.join("shapes.svg").exists() && out.join("report.html").exists());
    let again = run();
    let err = String::from_utf8_lossy(&again.get_output().stderr).into_owned();
    assert_eq!(err.matches("reusing").count(), 4, "{err}");
}
