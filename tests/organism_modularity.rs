//! `organism modularity`: its ablations do what they say, its helpers give known answers, and
//! a run on a tiny organism reports what the definitions imply.

mod common;
use common::{tiny_organism, tiny_world};

use ctxsteer::hooks::{Action, Intervention, Positions, Site, SiteKind, Spec};
use ctxsteer::organism::modularity::{
    ablation_spec, by_relation, jaccard, random_set, top_k, units, Unit, UnitKind,
};
use ctxsteer::stats::Rate;
use ctxsteer::stats::SplitMix;

fn captured(m: &ctxsteer::Model, ids: &[u32], spec: Spec, site: Site) -> Vec<Vec<f32>> {
    let spec = spec.with(Intervention::new(site, Positions::All, Action::Capture));
    let b = ctxsteer::model::Batch::single(ids);
    let (_, caps) = m.run(&b, &spec, ctxsteer::model::LogitsAt::Last).unwrap();
    caps.rows(site).iter().map(|r| r.values.clone()).collect()
}

/// A neuron's ablation zeroes its coordinate of mlp.hook_post at every position and leaves the
/// others as they were; a head's zeroes its slice of attn.hook_z and nothing else there.
#[test]
fn ablating_a_unit_zeroes_it_and_nothing_else_at_its_site() {
    let dir = tempfile::tempdir().unwrap();
    let (world, out) = (dir.path().join("w"), dir.path().join("m"));
    tiny_world(&world, 24, 2, "24");
    tiny_organism(&world, &out, 32, 3);
    let m = ctxsteer::Model::load(&out, ctxsteer::WeightsMode::F32).unwrap();
    assert_eq!(
        (
            units(&m, UnitKind::Head).len(),
            units(&m, UnitKind::Neuron).len()
        ),
        (4, 128)
    );
    let ids = m.prompt_ids("Some words here", false).unwrap();
    let neuron = Unit {
        kind: UnitKind::Neuron,
        layer: 1,
        index: 5,
    };
    let site = Site::new(SiteKind::MlpPost, 1);
    let (before, after) = (
        captured(&m, &ids, Spec::new(), site),
        captured(&m, &ids, ablation_spec(&m, &[neuron]), site),
    );
    for (b, a) in before.iter().zip(&after) {
        assert!(b[5] != 0.0 && a[5] == 0.0);
        for i in (0..64).filter(|i| *i != 5) {
            assert!(
                (a[i] - b[i]).abs() <= 1e-6 * (1.0 + b[i].abs()),
                "{i}: {} vs {}",
                a[i],
                b[i]
            );
        }
    }
    let head = Unit {
        kind: UnitKind::Head,
        layer: 0,
        index: 1,
    };
    let site = Site::new(SiteKind::AttnZ, 0);
    let (before, after) = (
        captured(&m, &ids, Spec::new(), site),
        captured(&m, &ids, ablation_spec(&m, &[head]), site),
    );
    for (b, a) in before.iter().zip(&after) {
        assert_eq!(&a[..16], &b[..16]);
        assert!(a[16..].iter().all(|v| *v == 0.0) && b[16..].iter().any(|v| *v != 0.0));
    }
}

fn u(layer: usize, index: usize) -> Unit {
    Unit {
        kind: UnitKind::Neuron,
        layer,
        index,
    }
}

#[test]
fn the_helpers_give_known_answers() {
    let all = vec![u(0, 0), u(0, 1), u(1, 0), u(1, 1)];
    // The largest effects first; a tie goes to the earlier unit.
    assert_eq!(
        top_k(&all, &[0.5, 2.0, 0.5, -1.0], 3),
        vec![u(0, 1), u(0, 0), u(1, 0)]
    );
    assert_eq!(jaccard(&all[..2], &all[1..3]), 1.0 / 3.0);
    assert_eq!(jaccard(&all, &all), 1.0);
    let mut rng = SplitMix(7);
    let s = random_set(&all, 3, &mut rng);
    assert_eq!(s.len(), 3);
    assert!(
        s.windows(2).all(|w| w[0] < w[1]),
        "distinct and sorted: {s:?}"
    );
    assert_eq!(random_set(&all, 4, &mut rng), all);
    let m = by_relation(&[1.0, 3.0, 5.0], &[0, 0, 1], 3);
    assert_eq!((m[0], m[1]), (2.0, 5.0));
    assert!(m[2].is_nan());
    let d = Rate::difference(&[3.0, 3.0, 3.0], &[1.0, 1.0], 2000, 1);
    assert_eq!((d.value, d.ci_low, d.ci_high, d.n), (2.0, 2.0, 2.0, 5));
    let d = Rate::difference(&[0.0, 4.0], &[1.0, 1.0], 2000, 1);
    assert!(d.value == 1.0 && d.ci_low < 1.0 && d.ci_high > 1.0, "{d:?}");
    let s = Rate::spread(&[1.0, 2.0, 3.0]);
    assert_eq!((s.value, s.ci_low, s.ci_high, s.n), (2.0, 1.0, 3.0, 3));
    // No values: a mean of 0 over n = 0, the convention every report shows as n/a.
    let e = Rate::share(&[], 2000, 1);
    assert_eq!((e.value, e.ci_low, e.ci_high, e.n), (0.0, 0.0, 0.0, 0));
}

/// On a tiny organism that knows its facts: ablating every head is the same set whether it is
/// a relation's top set or a random one, so the two damages agree exactly; a relation's top
/// single head hurts it at least as much on the ranking facts as any other head; the report's
/// files are written.
#[test]
fn a_run_on_a_tiny_organism_reports_what_the_definitions_imply() {
    let dir = tempfile::tempdir().unwrap();
    let (world, model) = (dir.path().join("w"), dir.path().join("m"));
    tiny_world(&world, 24, 2, "24");
    tiny_organism(&world, &model, 32, 600);
    let out = dir.path().join("r");
    let run = assert_cmd::Command::cargo_bin("ctxsteer")
        .unwrap()
        .args(["organism", "modularity", "--model"])
        .arg(&model)
        .arg("--world")
        .arg(&world)
        .arg("--out")
        .arg(&out)
        .args([
            "--heads-k",
            "1,4",
            "--neurons-k",
            "4",
            "--random-sets",
            "3",
            "--json",
        ])
        .assert()
        .success();
    let rep: serde_json::Value = serde_json::from_slice(&run.get_output().stdout).unwrap();
    for f in ["report.json", "report.md", "report.html", "modularity.svg"] {
        assert!(out.join(f).exists(), "{f}");
    }
    assert_eq!(rep["heads"], 4);
    let rows = rep["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2 * 3, "two relations, three sizes");
    for r in rows.iter().filter(|r| r["k"] == 4 && r["kind"] == "head") {
        assert_eq!(r["own"]["value"], r["random_own"]["value"]);
        assert_eq!(r["other"]["value"], r["random_other"]["value"]);
    }
    for r in rep["ranked"].as_array().unwrap() {
        let top = r["top"].as_array().unwrap();
        let d: Vec<f64> = top.iter().map(|x| x[1].as_f64().unwrap()).collect();
        assert!(d.windows(2).all(|w| w[0] >= w[1]), "{d:?}");
    }
    let bad = assert_cmd::Command::cargo_bin("ctxsteer")
        .unwrap()
        .args(["organism", "modularity", "--model"])
        .arg(&model)
        .arg("--world")
        .arg(&world)
        .arg("--out")
        .arg(&out)
        .args(["--heads-k", "5"])
        .assert()
        .failure();
    let err = String::from_utf8_lossy(&bad.get_output().stderr).to_string();
    assert!(
        err.contains("a set of 5 heads cannot be drawn from the model's 4"),
        "{err}"
    );
}
