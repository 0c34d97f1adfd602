//! `organism proxy`: its pieces against known answers, and one run end to end on two tiny
//! organisms of one world.

mod common;
use common::{tiny_organism, tiny_world};

use ctxsteer::organism;
use ctxsteer::organism::modularity::Scored;
use ctxsteer::organism::proxytune::{
    corpus, frontier, matched, point, roles, with_replay, Method, Point, Probe,
};
use ctxsteer::stats::Rate;
use std::path::Path;

fn items(world: &Path) -> Vec<ctxsteer::data::Item> {
    organism::study::read_items(world).unwrap().conflicts
}

/// The tuning corpus states each taught fact `repeats` times with its relation's templates in
/// turn; replay makes up the share asked of the lines; roles split the never-seen facts.
#[test]
fn the_corpus_and_roles_are_what_they_say() {
    let dir = tempfile::tempdir().unwrap();
    let world = dir.path().join("w");
    tiny_world(&world, 30, 2, "0,24");
    let all = items(&world);
    let r = roles(&all, 5, 0).unwrap();
    let never = all.iter().filter(|i| i.exposure == Some(0)).count();
    assert_eq!((r.taught.len(), r.control.len()), (5, never - 5));
    assert!(r.old.iter().all(|i| i.exposure == Some(24)));
    let w = organism::world::read(&world).unwrap();
    let lines = corpus(&r.taught, &w.templates, 6, 0).unwrap();
    assert_eq!(lines.len(), 30);
    for it in &r.taught {
        let t = &w.templates[&it.relation];
        for tpl in t {
            let s = tpl
                .replace("{s}", &it.subject)
                .replace("{o}", &it.prior_answer);
            assert_eq!(lines.iter().filter(|l| **l == s).count(), 2, "{s}");
        }
    }
    let mixed = with_replay(lines.clone(), &world, 0.5, 0).unwrap();
    assert_eq!(mixed.len(), 60);
    assert_eq!(with_replay(lines.clone(), &world, 0.0, 0).unwrap(), lines);
    let err = roles(&all, never, 0).err().unwrap().to_string();
    assert!(
        err.contains("needs at least one more, for the control"),
        "{err}"
    );
}

fn sc(logp: f64, top: bool) -> Scored {
    Scored { logp, top }
}

fn est(v: f64) -> Rate {
    Rate {
        value: v,
        ci_low: v,
        ci_high: v,
        n: 1,
    }
}

fn pt(method: Method, gain: f64, retention: f64, kept: Vec<bool>) -> Point {
    Point {
        label: method.to_string(),
        method,
        gain: est(gain),
        taught_logp: 0.0,
        control: est(0.0),
        retention: est(retention),
        by_exposure: vec![],
        old_logp_drop: 0.0,
        kept,
    }
}

/// A point counts gains on the taught facts, and retention only over the old facts the large
/// model knew; the frontier keeps the undominated points; each proxy point is paired with the
/// fine-tuning point of the nearest gain.
#[test]
fn points_frontier_and_pairs_give_known_answers() {
    let probe = Probe {
        queries: Default::default(),
        n_taught: 2,
        n_control: 1,
        exposure: vec![4, 4, 8],
    };
    let base = [
        sc(-3.0, false),
        sc(-3.0, false),
        sc(-2.0, false),
        sc(-0.1, true),
        sc(-0.1, true),
        sc(-5.0, false),
    ];
    let after = [
        sc(-0.5, true),
        sc(-4.0, false),
        sc(-2.0, false),
        sc(-0.3, true),
        sc(-3.1, false),
        sc(-0.1, true),
    ];
    let p = point(Method::FineTune { step: 1 }, &probe, &base, &after);
    assert_eq!(
        (p.gain.value, p.control.value, p.retention.value),
        (0.5, 0.0, 0.5)
    );
    assert_eq!(p.kept, vec![true, false]);
    assert_eq!(p.by_exposure.len(), 1);
    assert!((p.old_logp_drop - 1.6).abs() < 1e-12 && (p.taught_logp + 2.25).abs() < 1e-12);
    let same = point(Method::Base, &probe, &base, &base);
    assert_eq!(same.retention.value, 1.0);
    let pts = vec![
        pt(Method::Base, 0.0, 1.0, vec![true, true]),
        pt(Method::FineTune { step: 1 }, 0.5, 0.5, vec![true, false]),
        pt(Method::FineTune { step: 2 }, 0.9, 0.0, vec![false, false]),
        pt(
            Method::Proxy {
                step: 1,
                alpha: 1.0,
            },
            0.4,
            0.4,
            vec![true, false],
        ),
        pt(
            Method::Proxy {
                step: 2,
                alpha: 1.0,
            },
            0.6,
            1.0,
            vec![true, true],
        ),
    ];
    let f: Vec<String> = frontier(&pts).iter().map(|p| p.label.clone()).collect();
    // The untouched point (0, 1) is beaten by the proxy's (0.6, 1).
    assert_eq!(f, ["proxy α=1, small step 2", "fine-tune, step 2"]);
    let m = matched(&pts);
    assert_eq!(m.len(), 2);
    assert_eq!(
        (m[0].fine_tune.as_str(), m[1].fine_tune.as_str()),
        ("fine-tune, step 1", "fine-tune, step 1")
    );
    assert_eq!(m[1].retention_difference.value, 0.5);
    assert!((m[0].gain_difference + 0.1).abs() < 1e-12);
}

/// Two tiny organisms of one world: the untouched model keeps everything it knew, the
/// proxy at α = 0 is the untouched model, fine-tuning raises the taught facts'
/// log-probability, the tuned small model differs from where it started, and a rerun reuses
/// the tuned models.
#[test]
fn a_run_on_two_tiny_organisms() {
    let dir = tempfile::tempdir().unwrap();
    let (world, large, small) = (
        dir.path().join("w"),
        dir.path().join("l"),
        dir.path().join("s"),
    );
    tiny_world(&world, 30, 2, "0,24");
    tiny_organism(&world, &large, 32, 600);
    tiny_organism(&world, &small, 16, 600);
    let out = dir.path().join("r");
    let run = || {
        assert_cmd::Command::cargo_bin("ctxsteer")
            .unwrap()
            .args(["organism", "proxy", "--world"])
            .arg(&world)
            .arg("--large")
            .arg(&large)
            .arg("--small")
            .arg(&small)
            .arg("--out")
            .arg(&out)
            .args([
                "--facts",
                "6",
                "--steps",
                "20",
                "--save-at",
                "5,20",
                "--alphas",
                "0,1",
            ])
            .args(["--seq", "16", "--batch", "8", "--lr", "3e-3", "--json"])
            .assert()
            .success()
    };
    let first = run();
    let rep: serde_json::Value = serde_json::from_slice(&first.get_output().stdout).unwrap();
    for f in ["report.json", "report.md", "report.html", "proxy.svg"] {
        assert!(out.join(f).exists(), "{f}");
    }
    // The command is recorded as one would type it again, not with the binary's path.
    let cmd = rep["command"].as_str().unwrap();
    assert!(cmd.starts_with("ctxsteer organism proxy --world"), "{cmd}");
    let pts = rep["points"].as_array().unwrap();
    let by = |label: &str| pts.iter().find(|p| p["label"] == label).unwrap();
    let base = by("large, untouched");
    assert_eq!(base["retention"]["value"], 1.0);
    assert!(rep["old_known"].as_u64().unwrap() > 0);
    for step in [5, 20] {
        let zero = by(&format!("proxy α=0, small step {step}"));
        assert_eq!(zero["gain"], base["gain"]);
        assert_eq!(zero["retention"], base["retention"]);
        assert_eq!(zero["taught_logp"], base["taught_logp"]);
    }
    let ft = by("fine-tune, step 20");
    assert!(ft["taught_logp"].as_f64().unwrap() > base["taught_logp"].as_f64().unwrap() + 0.5);
    let moved = rep["moved"].as_array().unwrap();
    assert_eq!(moved.len(), 2);
    assert!(moved[1]["weights"]
        .as_array()
        .unwrap()
        .iter()
        .all(|w| w.as_f64().unwrap() > 0.0));
    let t0 = std::fs::metadata(out.join("large/step-000020/model.safetensors"))
        .unwrap()
        .modified()
        .unwrap();
    let again = run();
    let rep2: serde_json::Value = serde_json::from_slice(&again.get_output().stdout).unwrap();
    assert_eq!(rep2["points"], rep["points"]);
    let t1 = std::fs::metadata(out.join("large/step-000020/model.safetensors"))
        .unwrap()
        .modified()
        .unwrap();
    assert_eq!(t0, t1, "the rerun reused the tuned model");
}

/// Bad settings are refused before anything loads, naming the option.
#[test]
fn bad_settings_are_refused_by_name() {
    let refuse = |extra: &[&str], want: &str| {
        let out = assert_cmd::Command::cargo_bin("ctxsteer")
            .unwrap()
            .args([
                "organism", "proxy", "--world", "nowhere", "--large", "l", "--small", "s",
            ])
            .args(["--out", "o"])
            .args(extra)
            .assert()
            .failure();
        let err = String::from_utf8_lossy(&out.get_output().stderr).to_string();
        assert!(err.contains(want), "{extra:?}: {err}");
    };
    refuse(&["--save-at", "0,5"], "--save-at");
    refuse(
        &["--steps", "10", "--save-at", "20"],
        "give steps from 1 to --steps 10",
    );
    refuse(&["--replay", "1"], "--replay 1");
    refuse(&["--alphas", "inf"], "--alphas finite");
}
