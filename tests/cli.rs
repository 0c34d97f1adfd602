//! The binary, end to end, on the tiny model (no download): output shapes and error messages.

mod common;
use assert_cmd::Command;
use predicates::prelude::*;

fn bin() -> Command {
    Command::cargo_bin("ctxsteer").unwrap()
}

#[test]
fn info_json_lists_config_and_sites() {
    let (_d, path) = common::tiny::temp();
    let out = bin()
        .args(["info", "--json", "--model"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["config"]["n_layers"], 2);
    assert_eq!(v["config"]["d_model"], 64);
    let sites: Vec<&str> = v["sites"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    assert_eq!(sites.len(), 2 + 7 * 2);
    assert!(sites.contains(&"blocks.1.attn.hook_z") && sites.contains(&"ln_final.hook_normalized"));
}

#[test]
fn generate_json_and_steering_change_the_tokens() {
    let (dir, path) = common::tiny::temp();
    let vec_file = dir.path().join("v.json");
    let v: Vec<f32> = (0..64).map(|i| ((i as f32) * 0.37).sin()).collect();
    std::fs::write(&vec_file, serde_json::to_string(&v).unwrap()).unwrap();
    let run = |extra: &[&str]| -> serde_json::Value {
        let out = bin()
            .args([
                "generate",
                "--prompt",
                "the cat",
                "--max-tokens",
                "6",
                "--json",
                "--model",
            ])
            .arg(&path)
            .args(extra)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let plain = run(&[]);
    assert_eq!(plain["prompt"], "the cat");
    let n = plain["token_ids"].as_array().unwrap().len();
    assert_eq!(plain["tokens"].as_array().unwrap().len(), n);
    assert_eq!(
        run(&[])["token_ids"],
        plain["token_ids"],
        "greedy is deterministic"
    );
    let vf = vec_file.to_str().unwrap();
    let steered = run(&[
        "--steer",
        &format!("{vf}:blocks.*.hook_resid_post"),
        "--alpha",
        "8",
    ]);
    assert_ne!(steered["token_ids"], plain["token_ids"]);
    let zero = run(&[
        "--steer",
        &format!("{vf}:blocks.0.hook_resid_post"),
        "--alpha",
        "0",
    ]);
    assert_eq!(zero["token_ids"], plain["token_ids"]);
    // Context-aware decoding says which kind it ran; adacad has no fixed beta.
    let ada = run(&["--decoding", "adacad", "--context", "the dog sat"]);
    assert_eq!(
        (&ada["decoding"], &ada["beta"]),
        (&"adacad".into(), &None::<f32>.into())
    );
    assert_eq!(ada["tokens"].as_array().unwrap().len(), 6);
    let cad = run(&[
        "--decoding",
        "cad",
        "--context",
        "the dog sat",
        "--cad-beta",
        "2",
    ]);
    assert_eq!(
        (&cad["decoding"], &cad["beta"]),
        (&"cad".into(), &2.0.into())
    );
    bin()
        .args([
            "generate",
            "--prompt",
            "x",
            "--decoding",
            "adacad",
            "--model",
        ])
        .arg(&path)
        .assert()
        .failure()
        .stderr(predicates::str::contains("need --context"));
}

#[test]
fn bad_inputs_get_clear_errors() {
    let (dir, path) = common::tiny::temp();
    let good = dir.path().join("v.json");
    std::fs::write(&good, serde_json::to_string(&vec![0.5f32; 64]).unwrap()).unwrap();
    let bad_json = dir.path().join("bad.json");
    std::fs::write(&bad_json, "[1.0, oops]").unwrap();
    let short = dir.path().join("short.json");
    std::fs::write(&short, "[1.0, 2.0]").unwrap();
    let gen = |extra: &[&str]| {
        let mut c = bin();
        c.args(["generate", "--prompt", "x", "--model"])
            .arg(&path)
            .args(extra);
        c
    };
    gen(&[
        "--steer",
        &format!("{}:blocks.9.hook_resid_post", good.display()),
    ])
    .assert()
    .failure()
    .stderr(predicate::str::contains("out of range").and(predicate::str::contains("0..=1")));
    gen(&["--steer", &format!("{}:blocks.0.resid", good.display())])
        .assert()
        .failure()
        .stderr(
            predicate::str::contains("unknown hook site")
                .and(predicate::str::contains("hook_resid_post")),
        );
    gen(&[
        "--steer",
        &format!("{}:blocks.0.hook_resid_post", bad_json.display()),
    ])
    .assert()
    .failure()
    .stderr(predicate::str::contains("bad.json").and(predicate::str::contains("line 1")));
    gen(&[
        "--steer",
        &format!("{}:blocks.0.hook_resid_post", short.display()),
    ])
    .assert()
    .failure()
    .stderr(predicate::str::contains("length 2").and(predicate::str::contains("expected 64")));
    bin()
        .args(["info", "--model", "/nonexistent/model.gguf"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("/nonexistent/model.gguf"));
    let not_gguf = dir.path().join("x.gguf");
    std::fs::write(&not_gguf, "hello").unwrap();
    bin()
        .args(["info", "--model"])
        .arg(&not_gguf)
        .assert()
        .failure()
        .stderr(predicate::str::contains("not a readable GGUF"));
}

/// Numbers are checked where they are parsed: NaN, infinities and out-of-range values are
/// refused with the valid range, and vectors and head factors that are not finite are errors.
#[test]
fn non_finite_and_out_of_range_numbers_are_refused() {
    let (dir, path) = common::tiny::temp();
    let gen = |extra: &[&str]| {
        let mut c = bin();
        c.args(["generate", "--prompt", "x", "--max-tokens", "2", "--model"])
            .arg(&path)
            .args(extra);
        c
    };
    for (flag, value, says) in [
        ("--temperature", "-1", ">= 0"),
        ("--temperature", "NaN", "not a finite number"),
        ("--top-p", "1.5", "(0, 1]"),
        ("--cad-beta", "NaN", "not a finite number"),
        ("--alpha", "nan", "not a finite number"),
    ] {
        gen(&[&format!("{flag}={value}")])
            .assert()
            .failure()
            .stderr(predicate::str::contains(flag).and(predicate::str::contains(says)));
    }
    bin()
        .args(["generate", "--prompt", "x", "--max-tokens", "0"])
        .assert()
        .failure()
        .stderr(
            predicate::str::contains("--max-tokens").and(predicate::str::contains("at least 1")),
        );
    gen(&["--scale-heads", "1.0=NaN"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("LAYER.HEAD=FACTOR"));
    gen(&["--scale-heads", "1.0=2,1.0=3"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("twice"));
    let nan = dir.path().join("nan.json");
    let mut v = vec![serde_json::json!(0.5); 64];
    v[3] = serde_json::json!(1e39);
    std::fs::write(&nan, serde_json::to_string(&v).unwrap()).unwrap();
    gen(&[
        "--steer",
        &format!("{}:blocks.0.hook_resid_post", nan.display()),
    ])
    .assert()
    .failure()
    .stderr(predicate::str::contains("entry 3").and(predicate::str::contains("finite")));
    gen(&["--scale-heads", "1.0=2"]).assert().success();
    let good = dir.path().join("good.json");
    std::fs::write(&good, serde_json::to_string(&vec![0.5f32; 64]).unwrap()).unwrap();
    let vector = [
        "--steer",
        &format!("{}:blocks.0.hook_resid_post", good.display()),
    ];
    gen(&[&vector[..], &["--steer-positions", "999"]].concat())
        .assert()
        .failure()
        .stderr(
            predicate::str::contains("position 999").and(predicate::str::contains("past the end")),
        );
    gen(&[&vector[..], &["--steer-positions", "0,2"]].concat())
        .assert()
        .success();
}

/// An output path that is a folder is refused before any work, and nothing is left behind.
#[test]
fn a_folder_as_output_is_refused_up_front() {
    let (dir, path) = common::tiny::temp();
    let data = dir.path().join("d.jsonl");
    let line = serde_json::json!({"id": "a", "relation": "r", "subject": "the cat",
        "question": "where?", "prompt": "the cat sat on the", "context": "the cat sat on the mat.",
        "prior_answer": "hat", "context_answer": "mat"});
    std::fs::write(&data, format!("{line}\n")).unwrap();
    let out = dir.path().join("labels");
    std::fs::create_dir(&out).unwrap();
    bin()
        .args(["label", "--data"])
        .arg(&data)
        .arg("--out")
        .arg(&out)
        .arg("--model")
        .arg(&path)
        .assert()
        .failure()
        .stderr(predicate::str::contains("is a folder"));
    assert_eq!(std::fs::read_dir(&out).unwrap().count(), 0);
    let tmp_left = std::fs::read_dir(dir.path())
        .unwrap()
        .any(|e| e.unwrap().file_name().to_string_lossy().ends_with(".tmp"));
    assert!(!tmp_left);
}

/// `reft train` through the binary, then `bench conflict` with no --methods: the methods come
/// from the artefacts folder's manifest when it is for the loaded model, else only the methods
/// that need no artefacts run.
/// `--steer FILE[:SITE]` takes a raw vector and a learned edit alike, each with its own unit
/// for --alpha; the old spellings still work, say they are deprecated, and give the same
/// tokens; files and sites that do not fit are refused naming what would.
#[test]
fn one_steer_flag_takes_every_kind_and_the_old_spellings_still_work() {
    let (dir, path) = common::tiny::temp();
    let vf = dir.path().join("v.json");
    let v: Vec<f32> = (0..64).map(|i| ((i as f32) * 0.37).sin()).collect();
    std::fs::write(&vf, serde_json::to_string(&v).unwrap()).unwrap();
    let m = ctxsteer::Model::load(&path, ctxsteer::WeightsMode::F32).unwrap();
    let edit = dir.path().join("e.safetensors");
    common::tiny::write_edit(&m, &edit);
    let gen = |extra: &[&str]| {
        let out = bin()
            .args([
                "generate",
                "--prompt",
                "the cat",
                "--max-tokens",
                "6",
                "--json",
                "--model",
            ])
            .arg(&path)
            .args(extra)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(out.status.success(), "{err}");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        (v["token_ids"].clone(), err)
    };
    let (plain, _) = gen(&[]);
    let e = edit.to_str().unwrap();
    let (edited, quiet) = gen(&["--steer", e]);
    assert_ne!(edited, plain, "the edit changes the tokens");
    assert!(!quiet.contains("deprecated"), "{quiet}");
    let (old, note) = gen(&["--intervention", e]);
    assert_eq!(old, edited);
    assert!(note.contains("--intervention FILE is deprecated") && note.contains("--steer FILE"));
    assert_eq!(
        gen(&["--steer", e, "--alpha", "0"]).0,
        plain,
        "scale 0 turns the edit off"
    );
    assert_eq!(
        gen(&["--steer", e, "--alpha", "1"]).0,
        edited,
        "scale 1 is the edit"
    );
    let site = format!("{}:blocks.1.hook_resid_post", vf.display());
    let (new, _) = gen(&["--steer", &site, "--alpha", "8"]);
    let (old, note) = gen(&[
        "--steer-vector",
        vf.to_str().unwrap(),
        "--steer-site",
        "blocks.1.hook_resid_post",
        "--steer-alpha",
        "8",
    ]);
    assert_eq!((&new, note.contains("deprecated")), (&old, true));
    assert_ne!(new, plain);
    // Both at once, one strength each, in order.
    let out = bin()
        .args(["generate", "--prompt", "x", "--print-spec", "--model"])
        .arg(&path)
        .args([
            "--steer", &site, "--steer", e, "--alpha", "8", "--alpha", "0.5",
        ])
        .output()
        .unwrap();
    let spec: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let ivs = spec["interventions"].as_array().unwrap();
    assert_eq!(ivs.len(), 2, "{spec}");
    assert_eq!(ivs[0]["action"]["add"]["scale"], 8.0);
    assert_eq!(
        ivs[1]["action"]["low_rank"]["b"],
        serde_json::json!([3.0, -3.0])
    );
    let fails = |extra: &[&str], says: &str| {
        bin()
            .args(["generate", "--prompt", "x", "--max-tokens", "2", "--model"])
            .arg(&path)
            .args(extra)
            .assert()
            .failure()
            .stderr(predicate::str::contains(says));
    };
    fails(&["--steer", vf.to_str().unwrap()], "needs the site");
    fails(
        &["--steer", &format!("{e}:blocks.0.hook_resid_post")],
        "its own sites",
    );
    fails(
        &[
            "--steer", e, "--steer", e, "--alpha", "1", "--alpha", "2", "--alpha", "3",
        ],
        "2 --steer, 3 --alpha",
    );
    fails(
        &["--steer", e, "--mode", "clamp"],
        "--mode applies to a probe file",
    );
    let junk = dir.path().join("junk.txt");
    std::fs::write(&junk, "hello").unwrap();
    fails(&["--steer", junk.to_str().unwrap()], "not a steering file");
}

#[test]
fn reft_train_and_a_manifest_choose_the_methods() {
    let (dir, path) = common::tiny::temp();
    let built = dir.path().join("data");
    bin()
        .args(["data", "build", "--out"])
        .arg(&built)
        .assert()
        .success();
    let text = std::fs::read_to_string(built.join("counterfactual.jsonl")).unwrap();
    let pick = |split: &str, n: usize| -> Vec<&str> {
        text.lines()
            .filter(|l| l.contains(&format!("\"split\":\"{split}\"")))
            .take(n)
            .collect()
    };
    let data = dir.path().join("small.jsonl");
    let lines = [pick("train", 12), pick("dev", 8), pick("test", 8)].concat();
    std::fs::write(&data, lines.join("\n") + "\n").unwrap();
    let art = dir.path().join("art");
    std::fs::create_dir(&art).unwrap();
    let edit = art.join("edit.safetensors");
    bin()
        .args([
            "reft", "train", "--epochs", "1", "--layers", "1", "--rank", "2", "--data",
        ])
        .arg(&data)
        .arg("--out")
        .arg(&edit)
        .arg("--model")
        .arg(&path)
        // The old spelling of --form still works, with a note.
        .args(["--forms", "completion"])
        .assert()
        .success()
        .stderr(predicate::str::contains("--forms F,F is deprecated"))
        .stdout(predicate::str::contains(
            "LoReFT rank 2 at blocks.1.hook_resid_post",
        ));
    let bench = |out: &std::path::Path| {
        let mut c = bin();
        c.args(["bench", "conflict", "--batch-size", "8", "--data"])
            .arg(&data)
            .arg("--artefacts")
            .arg(&art)
            .arg("--out")
            .arg(out)
            .arg("--model")
            .arg(&path);
        c
    };
    let methods = |out: &std::path::Path| -> Vec<String> {
        let r: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap())
                .unwrap();
        r["methods"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["method"].as_str().unwrap().to_string())
            .collect()
    };
    // No manifest: the methods that need nothing.
    let out = dir.path().join("out0");
    bench(&out).assert().success();
    assert_eq!(methods(&out), ["none", "instruct", "cad", "adacad"]);
    // --limit samples whole subjects before the dev/test split: fewer test items.
    let test_n = |out: &std::path::Path| -> u64 {
        let r: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap())
                .unwrap();
        r["methods"][0]["test"]["adherence"]["n"].as_u64().unwrap()
    };
    let lim = dir.path().join("limited");
    bench(&lim)
        .args(["--methods", "none", "--limit", "14"])
        .assert()
        .success();
    assert!(
        test_n(&lim) < test_n(&out),
        "{} {}",
        test_n(&lim),
        test_n(&out)
    );
    // --steer sorts what it is given: an edit joins reft's sweep. The old --reft still works and
    // says it is deprecated; a raw vector has no sweep.
    let out = dir.path().join("steer");
    bench(&out)
        .args(["--methods", "none,reft", "--steer"])
        .arg(&edit)
        .assert()
        .success();
    assert_eq!(methods(&out), ["none", "reft"]);
    bench(&dir.path().join("old"))
        .args(["--methods", "none,reft", "--reft"])
        .arg(&edit)
        .assert()
        .success()
        .stderr(predicate::str::contains("--reft FILE,FILE is deprecated"));
    let vector = dir.path().join("v.json");
    std::fs::write(&vector, serde_json::to_string(&vec![0.5f32; 64]).unwrap()).unwrap();
    bench(&dir.path().join("vec"))
        .arg("--steer")
        .arg(&vector)
        .assert()
        .failure()
        .stderr(predicate::str::contains("a raw vector has no sweep"));
    // A manifest for this model adds reft and reft-cad; one for another model is ignored.
    let sha = ctxsteer::model::sha256_file(&path).unwrap();
    let manifest = |sha: &str| {
        let m = serde_json::json!({"model_sha256": sha, "reft": ["edit.safetensors"]});
        std::fs::write(art.join("manifest.json"), m.to_string()).unwrap();
    };
    manifest(&sha);
    let out = dir.path().join("out1");
    bench(&out).assert().success();
    assert_eq!(
        methods(&out),
        ["none", "instruct", "cad", "adacad", "reft", "reft-cad"]
    );
    manifest(&"0".repeat(64));
    let out = dir.path().join("out2");
    bench(&out)
        .assert()
        .success()
        .stderr(predicate::str::contains("is for the loaded model"));
    assert_eq!(methods(&out).len(), 4);
    // The loaded model's manifest is found in a subfolder, beside another model's, and its
    // gate is the one for the run's form: a chat-only gate leaves completion without one, a
    // completion gate is read (here it is missing, and the error names it).
    let sub = art.join("tiny");
    std::fs::create_dir(&sub).unwrap();
    std::fs::copy(&edit, sub.join("edit.safetensors")).unwrap();
    let gated = |gate: serde_json::Value| {
        let m =
            serde_json::json!({"model_sha256": sha, "reft": ["edit.safetensors"], "gate": gate});
        std::fs::write(sub.join("manifest.json"), m.to_string()).unwrap();
    };
    gated(serde_json::json!({"chat": "chat_gate.json"}));
    let out = dir.path().join("out3");
    bench(&out).assert().success();
    assert_eq!(
        methods(&out).len(),
        6,
        "no gate for completion: no gated method"
    );
    gated(serde_json::json!({"completion": "gate.json", "chat": "chat_gate.json"}));
    bench(&dir.path().join("out4"))
        .assert()
        .failure()
        .stderr(predicate::str::contains("tiny/gate.json"));
}

/// `generate --print-spec` writes the spec its options build; `generate --spec` with that file
/// gives the same tokens as the options themselves, and a bad spec file names its line.
#[test]
fn print_spec_and_spec_round_trip_to_identical_tokens() {
    let (dir, path) = common::tiny::temp();
    let vec_file = dir.path().join("v.json");
    let v: Vec<f32> = (0..64).map(|i| ((i as f32) * 0.3).sin()).collect();
    std::fs::write(&vec_file, serde_json::to_string(&v).unwrap()).unwrap();
    let gen = |extra: &[&str]| {
        let out = bin()
            .args([
                "generate",
                "--prompt",
                "the cat sat",
                "--max-tokens",
                "8",
                "--model",
            ])
            .arg(&path)
            .args(extra)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let vector = format!("{}:blocks.0-1.hook_resid_post", vec_file.display());
    let options = [
        "--steer",
        &vector,
        "--alpha",
        "3",
        "--scale-heads",
        "1.2=0,0.1=2.5",
        "--steer-positions",
        "prompt",
    ];
    let spec_json = gen(&[&options[..], &["--print-spec"]].concat());
    let spec: serde_json::Value = serde_json::from_str(&spec_json).unwrap();
    assert_eq!(spec["interventions"].as_array().unwrap().len(), 4);
    // --steer first, then the head scaling.
    assert_eq!(spec["interventions"][2]["heads"], serde_json::json!([2]));
    assert_eq!(spec["interventions"][0]["positions"], "prompt");
    let spec_file = dir.path().join("spec.json");
    std::fs::write(&spec_file, &spec_json).unwrap();
    let json = |s: &str| -> serde_json::Value { serde_json::from_str(s).unwrap() };
    let by_options = json(&gen(&[&options[..], &["--json"]].concat()));
    let by_spec = json(&gen(&["--spec", spec_file.to_str().unwrap(), "--json"]));
    let plain = json(&gen(&["--json"]));
    assert_eq!(by_options["token_ids"], by_spec["token_ids"]);
    assert_ne!(
        by_options["token_ids"], plain["token_ids"],
        "the spec changes the tokens"
    );
    std::fs::write(
        &spec_file,
        spec_json.replace("hook_resid_post", "hook_resid"),
    )
    .unwrap();
    bin()
        .args([
            "generate",
            "--prompt",
            "x",
            "--spec",
            spec_file.to_str().unwrap(),
            "--model",
        ])
        .arg(&path)
        .assert()
        .failure()
        .stderr(predicate::str::contains("spec.json").and(predicate::str::contains("line")));
}

/// A closed pipe ends the program quietly instead of a panic.
#[cfg(unix)]
#[test]
fn a_closed_pipe_is_not_a_panic() {
    use std::io::Read;
    use std::process::{Command as Std, Stdio};
    let (_d, path) = common::tiny::temp();
    let exe = assert_cmd::cargo::cargo_bin("ctxsteer");
    let mut child = Std::new(exe)
        .args(["info", "--model"])
        .arg(&path)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let status = child.wait().unwrap();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(!err.contains("panicked"), "{err}");
    assert_ne!(status.code(), Some(101), "{err}");
}

#[test]
fn data_label_capture_and_bench_commands_through_the_binary() {
    let (dir, path) = common::tiny::temp();
    let out = dir.path().join("data");
    bin()
        .args(["data", "build", "--out"])
        .arg(&out)
        .assert()
        .success()
        .stdout(predicate::str::contains("counterfactual.jsonl"));
    let data = out.join("counterfactual.jsonl");
    // Relative outputs (`--out x`) land in the temporary folder, never in the repository.
    let run = |args: &[&str]| {
        let mut c = bin();
        c.current_dir(dir.path())
            .args(args)
            .arg("--model")
            .arg(&path);
        c
    };
    let labels = dir.path().join("labels.jsonl");
    run(&[
        "label",
        "--data",
        data.to_str().unwrap(),
        "--limit",
        "6",
        "--json",
        "--out",
        labels.to_str().unwrap(),
    ])
    .assert()
    .success()
    .stdout(predicate::str::contains("memorization_ratio"));
    assert_eq!(std::fs::read_to_string(&labels).unwrap().lines().count(), 6);
    run(&[
        "label",
        "--data",
        data.to_str().unwrap(),
        "--split",
        "holdout",
        "--out",
        "x.jsonl",
    ])
    .assert()
    .failure()
    .stderr(predicate::str::contains(
        "[possible values: train, dev, test]",
    ));
    let acts = dir.path().join("acts");
    run(&[
        "capture",
        "--data",
        data.to_str().unwrap(),
        "--limit",
        "5",
        "--sites",
        "blocks.0-1.hook_resid_post",
        "--out",
        acts.to_str().unwrap(),
    ])
    .assert()
    .success()
    .stdout(predicate::str::contains("captured 5 items x 2 sites"));
    // Labels whose ids match none of the items are refused before any capture.
    run(&[
        "capture",
        "--data",
        data.to_str().unwrap(),
        "--split",
        "test",
        "--limit",
        "3",
        "--labels",
        labels.to_str().unwrap(),
        "--sites",
        "blocks.0.hook_resid_post",
        "--out",
        dir.path().join("acts_none").to_str().unwrap(),
    ])
    .assert()
    .failure()
    .stderr(predicate::str::contains("none of the 3 items has a label"));
    run(&[
        "capture",
        "--data",
        data.to_str().unwrap(),
        "--sites",
        "blocks.7.hook_resid_post",
        "--out",
        acts.to_str().unwrap(),
    ])
    .assert()
    .failure()
    .stderr(predicate::str::contains("out of range"));
    run(&[
        "bench",
        "conflict",
        "--data",
        data.to_str().unwrap(),
        "--methods",
        "none,steer",
        "--out",
        "x",
    ])
    .assert()
    .failure()
    .stderr(predicate::str::contains(
        "method steer needs --steer probes/",
    ));
    run(&[
        "bench",
        "public",
        "--dir",
        "/nonexistent/benchmarks",
        "--out",
        "x",
    ])
    .assert()
    .failure()
    .stderr(predicate::str::contains("no such folder"));
    run(&[
        "bench",
        "public",
        "--dir",
        dir.path().to_str().unwrap(),
        "--benchmarks",
        "memotrap,squad",
        "--out",
        "x",
    ])
    .assert()
    .failure()
    .stderr(
        predicate::str::contains("invalid value 'squad' for '--benchmarks")
            .and(predicate::str::contains("memotrap, nqswap, world_capital")),
    );
    bin()
        .args(["probe", "show", "/nonexistent/p.json"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("/nonexistent/p.json"));
    let bad = dir.path().join("bad.jsonl");
    std::fs::write(&bad, "{\"id\": \"a\"}\n").unwrap();
    run(&["label", "--data", bad.to_str().unwrap(), "--out", "x.jsonl"])
        .assert()
        .failure()
        .stderr(
            predicate::str::contains("bad.jsonl")
                .and(predicate::str::contains("line 1"))
                .and(predicate::str::contains("missing field")),
        );
}

#[test]
fn every_subcommand_has_help() {
    for cmd in [
        "fetch-model",
        "info",
        "generate",
        "data",
        "label",
        "capture",
        "probe",
        "patch",
        "density",
        "bench",
        "demo",
        "export-cvec",
        "bench-speed",
        "reft",
    ] {
        bin()
            .args([cmd, "--help"])
            .assert()
            .success()
            .stdout(predicate::str::contains("Usage"));
    }
}

/// A tiny model and the MemoTrap fixture files as `DIR/benchmarks/memotrap`.
fn memotrap_fixture() -> (tempfile::TempDir, std::path::PathBuf) {
    let (dir, model) = common::tiny::temp();
    let bench_dir = dir.path().join("benchmarks/memotrap");
    std::fs::create_dir_all(&bench_dir).unwrap();
    let fixtures =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/import/memotrap");
    for f in std::fs::read_dir(&fixtures).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, bench_dir.join(f.file_name().unwrap())).unwrap();
    }
    (dir, model)
}

/// `bench public` with none and cad on the fixture's MemoTrap, writing to `out`: its stderr
/// and report.json.
fn public_none_cad(
    dir: &std::path::Path,
    model: &std::path::Path,
    out: &std::path::Path,
    extra: &[&str],
) -> (String, serde_json::Value) {
    let o = bin()
        .args(["bench", "public", "--benchmarks", "memotrap"])
        .args(["--methods", "none,cad", "--dev-limit", "3", "--model"])
        .arg(model)
        .arg("--dir")
        .arg(dir.join("benchmarks"))
        .arg("--out")
        .arg(out)
        .args(extra)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(o.status.success(), "{err}");
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
    (err, report)
}

/// The methods whose parts MemoTrap's parts journal holds (`METHOD|hash` keys), sorted.
fn saved_parts(out: &std::path::Path) -> Vec<String> {
    let text = std::fs::read_to_string(out.join("parts/memotrap.parts.jsonl")).unwrap_or_default();
    let mut methods: Vec<String> = text
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["key"]
                .as_str()
                .unwrap()
                .split('|')
                .next()
                .unwrap()
                .to_string()
        })
        .collect();
    methods.sort();
    methods.dedup();
    methods
}

/// Saved runs are reused only on the items they were measured on: after the benchmark's file
/// changes an answer, `--resume` and `--saved-only` are refused, naming both content hashes,
/// and nothing saved is touched.
#[test]
fn bench_public_refuses_to_reuse_runs_of_other_items() {
    let (dir, model) = memotrap_fixture();
    let out = dir.path().join("out");
    public_none_cad(dir.path(), &model, &out, &[]);
    let record = out.join("parts/memotrap.items");
    let before = std::fs::read_to_string(&record).unwrap();
    let parts = out.join("parts/memotrap.parts.jsonl");
    let parts_before = std::fs::read(&parts).unwrap();
    assert_eq!(saved_parts(&out), ["cad", "none"]);
    let csv = dir.path().join("benchmarks/memotrap/1-proverb-ending.csv");
    let text = std::fs::read_to_string(&csv).unwrap();
    std::fs::write(&csv, text.replacen("' fonder.'", "' stronger.'", 1)).unwrap();
    for extra in ["--resume", "--saved-only"] {
        bin()
            .args(["bench", "public", "--benchmarks", "memotrap"])
            .args(["--methods", "none,cad", "--dev-limit", "3", "--model"])
            .arg(&model)
            .arg("--dir")
            .arg(dir.path().join("benchmarks"))
            .arg("--out")
            .arg(&out)
            .arg(extra)
            .assert()
            .failure()
            .stderr(predicate::str::contains(format!(
                "measured on memotrap items with content hash {}",
                before.trim()
            )));
    }
    assert_eq!(std::fs::read_to_string(&record).unwrap(), before);
    assert_eq!(std::fs::read(&parts).unwrap(), parts_before);
}

/// `bench public` end to end on MemoTrap fixture files: a report with the benchmark's own
/// metric per method, parts saved as they finish, and `--resume` reusing exactly the parts
/// whose settings match (another seed gives another split, so nothing is reused).
#[test]
fn bench_public_runs_saves_parts_and_resumes() {
    let (dir, model) = memotrap_fixture();
    let out = dir.path().join("out");
    let go = |extra: &[&str]| public_none_cad(dir.path(), &model, &out, extra);
    let (err, first) = go(&[]);
    assert!(!err.contains("reusing"), "{err}");
    // The command is recorded as one would type it again, not with the binary's path.
    let cmd = first["command"].as_str().unwrap();
    assert!(
        cmd.starts_with("ctxsteer bench public --benchmarks memotrap"),
        "{cmd}"
    );
    let sec = &first["sections"][0];
    assert_eq!(sec["name"], "memotrap");
    assert!(sec["n_dev"].as_u64().unwrap() <= 3);
    assert_eq!(sec["n_items"], 5); // 3 proverb endings, 2 history questions
    let methods: Vec<&str> = sec["methods"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["method"].as_str().unwrap())
        .collect();
    assert_eq!(methods, ["none", "cad"]);
    assert!(sec["own"][0][1][0][0]
        .as_str()
        .unwrap()
        .starts_with("accuracy"));
    // Read back from the journal: none changes no run of its own; CAD changes every run with a
    // context (its contrast with the closed-book pass moves each score).
    let changed = |i: usize| {
        let own = sec["own"][i][1].as_array().unwrap();
        let row = own
            .iter()
            .find(|r| r[0] == "changed vs none: test prompts")
            .unwrap();
        (
            row[1]["value"].as_f64().unwrap(),
            row[1]["n"].as_u64().unwrap(),
        )
    };
    let n_test = sec["n_test"].as_u64().unwrap();
    assert_eq!(changed(0), (0.0, n_test));
    assert_eq!(changed(1), (1.0, n_test));
    assert_eq!(saved_parts(&out), ["cad", "none"]);
    // The section's time is its split pass plus each method's own time, and the report says so.
    let secs = |v: &serde_json::Value| v.as_f64().unwrap();
    let split = secs(&sec["split_seconds"]);
    let methods_total: f64 = sec["methods"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| secs(&m["seconds"]))
        .sum();
    assert!(split > 0.0);
    assert!((secs(&sec["seconds"]) - split - methods_total).abs() < 1e-6);
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(
        md.contains(&format!("the split pass {split:.0} s in this run")),
        "{md}"
    );

    let (err, again) = go(&["--resume"]);
    assert_eq!(err.matches("reusing the saved part").count(), 2, "{err}");
    assert!(!std::fs::read_to_string(out.join("report.md"))
        .unwrap()
        .contains("after a resume"));
    assert_eq!(again["sections"][0]["methods"], sec["methods"]);

    // A run stopped in the middle of a method has no part yet, only its journal of finished
    // runs: resuming reads the runs from the journal instead of running them again. To tell the
    // two apart, every with-context run in the journal is rewritten to follow the context.
    let parts = out.join("parts/memotrap.parts.jsonl");
    std::fs::remove_file(&parts).unwrap();
    let journal = out.join("parts/memotrap.runs.jsonl");
    let text = std::fs::read_to_string(&journal).unwrap();
    let n_lines = text.lines().count();
    assert!(n_lines > 0);
    let edited: String = text
        .lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            if v["key"].as_str().unwrap().contains("|context|") {
                v["run"]["greedy_answer"] = "context".into();
                v["run"]["tf_winner"] = "context".into();
            }
            format!("{v}\n")
        })
        .collect();
    std::fs::write(&journal, edited).unwrap();
    // (The tiny random model does not follow the context by itself.)
    assert_ne!(sec["methods"][0]["test"]["adherence"]["value"], 1.0);
    let (err, resumed) = go(&["--resume"]);
    assert!(!err.contains("reusing the saved part"), "{err}");
    assert!(
        err.contains(&format!("{n_lines} finished runs in the journal")),
        "{err}"
    );
    for m in resumed["sections"][0]["methods"].as_array().unwrap() {
        assert_eq!(m["test"]["adherence"]["value"], 1.0, "{m}");
        assert_eq!(m["test"]["tf_adherence"]["value"], 1.0, "{m}");
        // Its time covers only the resumed work, and the report says so.
        assert!(m["reused_runs"].as_u64().unwrap() > 0, "{m}");
    }
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert_eq!(md.matches("after a resume (").count(), 2, "{md}");
    // Nothing was left to run, so the journal did not grow.
    assert_eq!(
        std::fs::read_to_string(&journal).unwrap().lines().count(),
        n_lines
    );

    // The resumed run recorded its two parts again, in a journal of their own.
    assert_eq!(saved_parts(&out), ["cad", "none"]);
    let parts_before = std::fs::read(&parts).unwrap();
    // --saved-only reports what is saved and runs no method: one not saved is left pending,
    // and neither the journal nor the parts change.
    let o = bin()
        .args(["bench", "public", "--benchmarks", "memotrap"])
        .args(["--methods", "none,cad,instruct", "--dev-limit", "3"])
        .arg("--model")
        .arg(&model)
        .arg("--dir")
        .arg(dir.path().join("benchmarks"))
        .arg("--out")
        .arg(&out)
        .arg("--saved-only")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("memotrap instruct: no saved part, left pending"),
        "{err}"
    );
    let only: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
    assert_eq!(
        only["sections"][0]["pending"],
        serde_json::json!(["instruct"])
    );
    assert_eq!(
        only["sections"][0]["methods"],
        resumed["sections"][0]["methods"]
    );
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(
        md.contains("Not run yet (no saved part): instruct."),
        "{md}"
    );
    assert_eq!(saved_parts(&out), ["cad", "none"]);
    assert_eq!(std::fs::read(&parts).unwrap(), parts_before);
    assert_eq!(
        std::fs::read_to_string(&journal).unwrap().lines().count(),
        n_lines
    );

    let (err, _) = go(&["--resume", "--seed", "3"]);
    assert!(!err.contains("reusing"), "{err}");

    // A split never run (another seed): --saved-only runs not even its closed-book pass, and
    // leaves every method pending.
    let n_lines = std::fs::read_to_string(&journal).unwrap().lines().count();
    let (err, never) = go(&["--saved-only", "--seed", "5"]);
    assert!(err.contains("split pass is not in the journal"), "{err}");
    let sec = &never["sections"][0];
    assert_eq!(sec["pending"], serde_json::json!(["none", "cad"]));
    assert_eq!(sec["methods"], serde_json::json!([]));
    assert_eq!(sec["split_seconds"], 0.0);
    assert_eq!(
        std::fs::read_to_string(&journal).unwrap().lines().count(),
        n_lines
    );
}

/// Runs saved by earlier versions, whose keys were made from display labels, are still
/// reused: the saved parts as they are, and (with the parts gone) every run from the journal.
#[test]
fn bench_public_resumes_runs_saved_under_the_earlier_keys() {
    let (dir, model) = memotrap_fixture();
    let out = dir.path().join("out");
    let go = |extra: &[&str]| public_none_cad(dir.path(), &model, &out, extra);
    let (_, first) = go(&[]);
    // Rewrite parts and journal as the earlier version wrote them: each part in a file of its
    // own, part keys from labels and debug text, evaluation scopes `dev|test METHOD [LABEL]`,
    // no chosen_params.
    let hashed = |k: &str| format!("{:016x}", ctxsteer::data::stable_hash(k));
    let parts_journal = out.join("parts/memotrap.parts.jsonl");
    let records: Vec<serde_json::Value> = std::fs::read_to_string(&parts_journal)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    std::fs::remove_file(&parts_journal).unwrap();
    let mut scopes: Vec<(String, String)> = vec![];
    for (m, labels) in [("none", "none"), ("cad", "beta=0.5;beta=1;beta=2;beta=4")] {
        let path = out.join(format!("parts/memotrap.{m}.json"));
        let record = records
            .iter()
            .find(|r| r["key"].as_str().unwrap().starts_with(&format!("{m}|")))
            .unwrap();
        let mut part = record["run"].clone();
        let key: serde_json::Value = serde_json::from_str(part["key"].as_str().unwrap()).unwrap();
        let legacy = format!(
            "memotrap|{}|limit=None|seed=0|dev_share={}|dev_limit=Some(3)|dev={}|test={}|\
             max_new=Some({})|{labels}|heads=[]|ctx_heads=[]|gate=None",
            key["model_sha256"].as_str().unwrap(),
            key["dev_share"],
            key["dev"],
            key["test"],
            key["max_new"]
        );
        scopes.push((hashed(part["key"].as_str().unwrap()), hashed(&legacy)));
        let method: ctxsteer::bench::Method =
            serde_json::from_value(key["method"].clone()).unwrap();
        for (p, label) in key["settings"]
            .as_array()
            .unwrap()
            .iter()
            .zip(labels.split(';'))
        {
            let p: ctxsteer::bench::Params = serde_json::from_value(p.clone()).unwrap();
            for test in [false, true] {
                scopes.push((
                    ctxsteer::bench::setting_scope(test, method, &p),
                    ctxsteer::bench::eval_scope(test, method, label),
                ));
            }
        }
        part["key"] = legacy.into();
        part["result"]
            .as_object_mut()
            .unwrap()
            .remove("chosen_params")
            .unwrap();
        std::fs::write(&path, serde_json::to_vec_pretty(&part).unwrap()).unwrap();
    }
    let journal = out.join("parts/memotrap.runs.jsonl");
    let text = std::fs::read_to_string(&journal).unwrap();
    let mut renamed = 0;
    let legacy_text: String = text
        .lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            let mut parts: Vec<String> = v["key"]
                .as_str()
                .unwrap()
                .split('|')
                .map(String::from)
                .collect();
            for p in parts.iter_mut().take(2) {
                if let Some((_, old)) = scopes.iter().find(|(new, _)| new == p) {
                    *p = old.clone();
                    renamed += 1;
                }
            }
            v["key"] = parts.join("|").into();
            format!("{v}\n")
        })
        .collect();
    assert!(renamed > 0);
    std::fs::write(&journal, &legacy_text).unwrap();
    let n_lines = legacy_text.lines().count();
    // The saved parts are reused, with their chosen settings found again by label.
    let (err, again) = go(&["--resume"]);
    assert_eq!(err.matches("reusing the saved part").count(), 2, "{err}");
    for field in ["methods", "own"] {
        assert_eq!(again["sections"][0][field], first["sections"][0][field]);
    }
    // They are now recorded in the parts journal too, under the current keys: without the
    // old files they are still reused, as they were.
    for m in ["none", "cad"] {
        std::fs::remove_file(out.join(format!("parts/memotrap.{m}.json"))).unwrap();
    }
    let (err, from_journal) = go(&["--resume"]);
    assert_eq!(err.matches("reusing the saved part").count(), 2, "{err}");
    assert_eq!(
        from_journal["sections"][0]["methods"],
        again["sections"][0]["methods"]
    );
    // Without the parts, every run comes back from the journal: nothing runs, nothing is added.
    std::fs::remove_file(&parts_journal).unwrap();
    let (err, resumed) = go(&["--resume"]);
    assert!(!err.contains("reusing the saved part"), "{err}");
    let lines = std::fs::read_to_string(&journal).unwrap().lines().count();
    assert_eq!(lines, n_lines);
    let methods = |r: &serde_json::Value| r["sections"][0]["methods"].clone();
    for (a, b) in methods(&resumed)
        .as_array()
        .unwrap()
        .iter()
        .zip(methods(&first).as_array().unwrap())
    {
        assert_eq!(a["test"], b["test"]);
        assert_eq!(a["chosen_params"], b["chosen_params"]);
    }
}

#[test]
fn model_names_and_devices_are_checked() {
    let (_d, path) = common::tiny::temp();
    bin()
        .args(["info", "--device", "tpu", "--model"])
        .arg(&path)
        .assert()
        .failure()
        .stderr(predicate::str::contains(
            "valid choices are cpu, cuda, cuda:N, metal",
        ));
    bin()
        .args(["info", "--model", "no-such-model"])
        .assert()
        .failure()
        .stderr(
            predicate::str::contains("not a known model name")
                .and(predicate::str::contains("gemma3-270m")),
        );
    bin()
        .args(["fetch-model", "no-such-model"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("known: smollm2-135m, gemma3-270m"));
    let out = bin().args(["fetch-model", "--list"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("gemma3-270m") && text.contains("smollm2-135m"),
        "{text}"
    );
}

/// A prompt longer than the model's positions names its item before any work starts.
#[test]
fn an_overlong_prompt_names_its_item() {
    let (dir, model) = common::tiny::temp();
    let item = serde_json::json!({
        "id": "long-one", "relation": "capital", "subject": "France",
        "question": "What is the capital of France?", "prompt": "The capital of France is",
        "context": "the cat sat on the mat. ".repeat(400),
        "prior_answer": "Paris", "context_answer": "Rome"
    });
    let data = dir.path().join("long.jsonl");
    std::fs::write(&data, format!("{item}\n")).unwrap();
    bin()
        .args(["label", "--model"])
        .arg(&model)
        .arg("--data")
        .arg(&data)
        .arg("--out")
        .arg(dir.path().join("l.jsonl"))
        .assert()
        .failure()
        .stderr(
            predicate::str::contains("item `long-one`").and(predicate::str::contains("positions")),
        );
}

/// A stdout that cannot be written (a full disk) is one line of error and a non-zero exit,
/// not a panic.
#[cfg(target_os = "linux")]
#[test]
fn a_full_disk_on_stdout_is_a_clear_error() {
    let (_d, path) = common::tiny::temp();
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let out = std::process::Command::new(assert_cmd::cargo::cargo_bin("ctxsteer"))
        .args(["info", "--model"])
        .arg(&path)
        .stdout(full)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("error: writing to standard output") && !err.contains("panicked"),
        "{err}"
    );
}

/// `bench-speed --llama-bench` with no binary at the path says so at once, before measuring.
#[test]
fn a_missing_llama_bench_is_named_before_any_measurement() {
    let (dir, path) = common::tiny::temp();
    let missing = dir.path().join("llama-bench");
    let out = bin()
        .args(["bench-speed", "--model"])
        .arg(&path)
        .arg("--llama-bench")
        .arg(&missing)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no llama-bench binary"), "{err}");
    assert!(!err.contains("measuring"), "it measured first: {err}");
}

/// A `llama-bench` that a signal kills (as llama.cpp's AMX path does on some Xeons) is run once
/// more with `--repack 0`, and llama.cpp's row says so; one that fails with an exit code is an
/// error.
#[cfg(unix)]
#[test]
fn a_crashing_llama_bench_is_measured_again_without_repacking() {
    use std::os::unix::fs::PermissionsExt;
    let (dir, path) = common::tiny::temp();
    let fake = dir.path().join("llama-bench");
    let json = r#"[{"n_prompt": 8, "n_gen": 0, "samples_ts": [300.0]}, {"n_prompt": 0, "n_gen": 4, "samples_ts": [90.0]}]"#;
    let script = format!(
        "#!/bin/sh\ncase \"$*\" in *\"--repack 0\"*) echo '{json}' ;; *) kill -SEGV $$ ;; esac\n"
    );
    std::fs::write(&fake, script).unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let run = |bin_path: &std::path::Path| {
        bin()
            .args([
                "bench-speed",
                "--prompt-tokens",
                "8",
                "--decode-tokens",
                "4",
                "--json",
            ])
            .arg("--model")
            .arg(&path)
            .arg("--llama-bench")
            .arg(bin_path)
            .output()
            .unwrap()
    };
    let out = run(&fake);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("again with --repack 0"), "{err}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let text = v.to_string();
    assert!(text.contains("llama.cpp llama-bench --repack 0"), "{text}");
    assert!(text.contains("300") && text.contains("90"), "{text}");
    // An exit code is not a crash: no second run, an error.
    std::fs::write(&fake, "#!/bin/sh\necho broken >&2\nexit 3\n").unwrap();
    let out = run(&fake);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("llama-bench failed"),
        "{err}"
    );
    assert!(!err.contains("again with --repack 0"), "{err}");
}

/// A size from an option is bounded by what the model can do before any work: a huge
/// `--max-tokens` is an error naming the model's positions, in plain and CAD decoding, instead
/// of an allocation that aborts the process.
#[test]
fn max_tokens_past_the_models_positions_is_refused_before_any_work() {
    let (_d, path) = common::tiny::temp();
    for extra in [
        &[][..],
        &["--decoding", "cad", "--context", "the cat sat"][..],
    ] {
        bin()
            .args([
                "generate",
                "--prompt",
                "the cat",
                "--max-tokens",
                "100000000",
            ])
            .args(extra)
            .arg("--model")
            .arg(&path)
            .assert()
            .failure()
            .stderr(
                predicate::str::contains("--max-tokens")
                    .and(predicate::str::contains("this model has 1024")),
            );
    }
}

/// `data irrelevant` builds, for any conflicts file, what `data build` writes for the built-in
/// data; it never writes over its input.
#[test]
fn data_irrelevant_builds_contexts_about_other_subjects() {
    let dir = tempfile::tempdir().unwrap();
    bin()
        .args(["data", "build", "--out"])
        .arg(dir.path())
        .assert()
        .success();
    let cf = dir.path().join("counterfactual.jsonl");
    let out = dir.path().join("irr.jsonl");
    bin()
        .args(["data", "irrelevant", "--data"])
        .arg(&cf)
        .arg("--out")
        .arg(&out)
        .assert()
        .success();
    let built = std::fs::read_to_string(dir.path().join("irrelevant.jsonl")).unwrap();
    assert_eq!(std::fs::read_to_string(&out).unwrap(), built);
    // One kind only.
    bin()
        .args(["data", "irrelevant", "--kinds", "other_relation", "--data"])
        .arg(&cf)
        .arg("--out")
        .arg(&out)
        .assert()
        .success();
    let one = std::fs::read_to_string(&out).unwrap();
    assert!(one
        .lines()
        .all(|l| l.contains("\"distractor\":\"other_relation\"")));
    assert_eq!(one.lines().count(), 427);
    // An output that is the input, under another spelling too, is refused and the input is
    // left whole (label refuses it before loading a model).
    let before = std::fs::read(&cf).unwrap();
    let respelled = cf.parent().unwrap().join(".").join(cf.file_name().unwrap());
    for args in [["data", "irrelevant"], ["label", "--weights"]] {
        let mut cmd = bin();
        cmd.args(args);
        if args[0] == "label" {
            cmd.arg("f32");
        }
        cmd.arg("--data")
            .arg(&cf)
            .arg("--out")
            .arg(&respelled)
            .assert()
            .failure()
            .stderr(predicate::str::contains("the output is the input"));
    }
    assert_eq!(std::fs::read(&cf).unwrap(), before);
}

/// Errors name the file and what was expected: a binary file as a probe file says what it
/// seems to be, an F64 edit names its tensor, and a folder as `--plot` is refused before the
/// work.
#[test]
fn wrong_files_are_named_with_what_was_expected() {
    let (dir, path) = common::tiny::temp();
    let st = dir.path().join("v.safetensors");
    let t =
        candle_core::Tensor::zeros(4, candle_core::DType::F64, &candle_core::Device::Cpu).unwrap();
    candle_core::safetensors::save(&std::collections::HashMap::from([("v", t)]), &st).unwrap();
    for (file, want) in [(&path, "a GGUF file"), (&st, "a safetensors file")] {
        bin()
            .args(["probe", "show"])
            .arg(file)
            .assert()
            .failure()
            .stderr(
                predicate::str::contains("not a probe file").and(predicate::str::contains(want)),
            );
    }
    // An edit whose tensors are F64.
    let m = ctxsteer::Model::load(&path, ctxsteer::WeightsMode::F32).unwrap();
    let meta = serde_json::json!({
        "version": 1, "model": m.identity().unwrap(), "sites": ["blocks.1.hook_resid_post"],
        "rank": 1, "train": {"data": "", "forms": [], "conflicts": 0, "true_contexts": 0,
        "closed_book": 0, "neutral": 0, "epochs": 0, "steps": 0, "lr": 0.0, "keep_weight": 0.0,
        "seed": 0, "seconds": 0.0, "losses": []}
    });
    let z = |shape: &[usize]| {
        candle_core::Tensor::zeros(shape, candle_core::DType::F64, &candle_core::Device::Cpu)
            .unwrap()
    };
    let edit = dir.path().join("e.safetensors");
    let tensors = [
        ("blocks.1.hook_resid_post.R", z(&[1, 64])),
        ("blocks.1.hook_resid_post.W", z(&[1, 64])),
        ("blocks.1.hook_resid_post.b", z(&[1])),
    ];
    let md = std::collections::HashMap::from([("ctxsteer".to_string(), meta.to_string())]);
    let bytes = safetensors::serialize(tensors.iter().map(|(k, t)| (*k, t)), Some(md)).unwrap();
    std::fs::write(&edit, bytes).unwrap();
    bin()
        .args([
            "generate",
            "--prompt",
            "the cat",
            "--max-tokens",
            "2",
            "--steer",
        ])
        .arg(&edit)
        .arg("--model")
        .arg(&path)
        .assert()
        .failure()
        .stderr(predicate::str::contains(
            "blocks.1.hook_resid_post.R` is F64",
        ));
    // --plot naming a folder.
    bin()
        .args(["probe", "show"])
        .arg(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("probes/follows_context.json"))
        .arg("--plot")
        .arg(dir.path())
        .assert()
        .failure()
        .stderr(predicate::str::contains("--plot").and(predicate::str::contains("a folder")));
}

/// Options that would do nothing alone are errors naming what they need; a spec whose rows or
/// heads select nothing, or whose direction has no usable length, is refused.
#[test]
fn options_and_specs_that_would_do_nothing_are_refused() {
    let (dir, path) = common::tiny::temp();
    let run = |args: &[&str]| {
        bin()
            .args(["generate", "--prompt", "the cat", "--max-tokens", "2"])
            .args(args)
            .arg("--model")
            .arg(&path)
            .assert()
            .failure()
    };
    run(&["--layers", "1"]).stderr(predicate::str::contains("--layers applies to a probe file"));
    run(&["--mode", "clamp"]).stderr(predicate::str::contains("--mode applies to a probe file"));
    run(&["--alpha", "2"]).stderr(predicate::str::contains(
        "--alpha sets the strength of --steer",
    ));
    run(&["--steer-positions", "last"]).stderr(predicate::str::contains("--steer-positions"));
    run(&["--gate", "probes/conflict.json"]).stderr(predicate::str::contains("--gate applies"));
    run(&["--scale-heads", "1.0=2", "--gate-margin", "2"])
        .stderr(predicate::str::contains("--gate-margin widens --gate"));
    let spec = |iv: serde_json::Value| {
        let p = dir.path().join("spec.json");
        std::fs::write(&p, serde_json::json!({"interventions": [iv]}).to_string()).unwrap();
        p
    };
    let zeros = vec![0.0f32; 64];
    let huge = vec![1e20f32; 64];
    let cases = [
        (
            serde_json::json!({"site": "blocks.1.hook_resid_post", "positions": "all", "rows": [],
                "action": {"scale": {"factor": 0.0}}}),
            "selects no row",
        ),
        (
            serde_json::json!({"site": "blocks.1.attn.hook_z", "positions": "all", "heads": [],
                "action": {"scale": {"factor": 0.0}}}),
            "selects no head",
        ),
        (
            serde_json::json!({"site": "blocks.1.hook_resid_post", "positions": "all",
                "action": {"project_out": {"direction": zeros}}}),
            "has length 0",
        ),
    ];
    for (iv, want) in cases {
        let p = spec(iv);
        run(&["--spec", p.to_str().unwrap()]).stderr(predicate::str::contains(want));
    }
    // A direction of huge entries is no longer a silent no-op (its length overflowed f32):
    // clamping along it is clamping along the same direction of unit length.
    let tokens = |dir: &[f32]| {
        let iv = serde_json::json!({"site": "blocks.1.hook_resid_post", "positions": "all",
            "action": {"clamp": {"direction": dir, "value": 40.0}}});
        let p = spec(iv);
        let o = bin()
            .args([
                "generate",
                "--prompt",
                "the cat",
                "--max-tokens",
                "6",
                "--json",
                "--spec",
            ])
            .arg(&p)
            .arg("--model")
            .arg(&path)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        v["token_ids"].clone()
    };
    let unit = vec![0.125f32; 64];
    assert_eq!(tokens(&huge), tokens(&unit));
    assert_ne!(tokens(&unit), tokens(&[0.0; 64].map(|_: f32| -0.125)));
}

/// `patch --positions` takes capture's name for the subject's last token, and its earlier one.
#[test]
fn patch_positions_take_one_name_per_place() {
    let run = |v: &str| {
        let out = bin()
            .args([
                "patch",
                "--data",
                "/nonexistent/x.jsonl",
                "--out",
                "/nonexistent/o",
            ])
            .args(["--positions", v])
            .assert()
            .failure();
        String::from_utf8_lossy(&out.get_output().stderr).into_owned()
    };
    for ok in ["subject-last", "subject", "last", "all"] {
        let e = run(ok);
        assert!(!e.contains("invalid value"), "{ok}: {e}");
    }
    let e = run("middle");
    assert!(
        e.contains("invalid value") && e.contains("subject-last"),
        "{e}"
    );
}
