//! Probes on synthetic activations with a planted direction, and the statistics under them.

use ctxsteer::capture::{Acts, CaptureMeta, IndexRow, PosMode};
use ctxsteer::data::{Form, Variant};
use ctxsteer::label::Label;
use ctxsteer::probe::{self, Kind, ProbeFile, SiteRef, Target, TrainOptions};
use ctxsteer::stats::{self, SplitMix};
use ctxsteer::Site;
use ndarray::Array2;

const D: usize = 24;

fn planted_u() -> Vec<f64> {
    let v: Vec<f64> = (0..D).map(|i| ((i * 7 % 5) as f64 - 2.0) + 0.5).collect();
    let n = v.iter().map(|x| x * x).sum::<f64>().sqrt();
    v.iter().map(|x| x / n).collect()
}

/// 400 examples over 100 subjects and 4 relations; site 1 carries the label along `u`
/// (plus a large-variance nuisance dimension), site 0 is noise.
fn synthetic() -> Acts {
    let n = 400;
    let mut rng = SplitMix(7);
    let mut gauss = move || {
        let (a, b) = (
            (rng.next_u64() % 1_000_000) as f64 / 1e6 + 1e-9,
            (rng.next_u64() % 1_000_000) as f64 / 1e6,
        );
        (-2.0 * a.ln()).sqrt() * (2.0 * std::f64::consts::PI * b).cos()
    };
    let u = planted_u();
    let mut index = vec![];
    let mut noise = Array2::<f32>::zeros((n, D));
    let mut signal = Array2::<f32>::zeros((n, D));
    for i in 0..n {
        let y = i % 3 == 0;
        for j in 0..D {
            noise[[i, j]] = gauss() as f32;
            let base = gauss() + if j == 0 { 20.0 * gauss() } else { 0.0 } + 5.0;
            signal[[i, j]] = (base + if y { 3.0 * u[j] } else { -u[j] }) as f32;
        }
        index.push(IndexRow {
            id: format!("i{i}"),
            relation: format!("r{}", i % 4),
            subject: format!("s{}", i % 100),
            split: None,
            variant: Some(if y {
                Variant::Counterfactual
            } else {
                Variant::TrueContext
            }),
            shard: 0,
            row: i,
            n_tokens: 10,
            position: Some(9),
            label: Some(if y {
                Label::FollowsContext
            } else {
                Label::FollowsPrior
            }),
            known: Some(i % 2 == 0),
            prior_logp: None,
        });
    }
    let meta = CaptureMeta {
        model: "synthetic".into(),
        model_sha256: String::new(),
        weights: "f32".into(),
        data_hash: String::new(),
        data: "synthetic".into(),
        n_items: n,
        sites: vec![
            "blocks.0.hook_resid_post".into(),
            "blocks.1.hook_resid_post".into(),
        ],
        positions: PosMode::Last,
        form: Form::Completion,
        with_context: true,
        shard_size: n,
        steering: None,
        labels: None,
        complete: true,
    };
    Acts {
        meta,
        index,
        sites: vec![(Site::resid_post(0), noise), (Site::resid_post(1), signal)],
    }
}

fn cos_u(v: &[f32]) -> f64 {
    let u: Vec<f32> = planted_u().iter().map(|x| *x as f32).collect();
    stats::cosine(v, &u)
}

#[test]
fn logistic_probe_finds_the_planted_direction_and_not_noise() {
    let acts = synthetic();
    let (sites, n_train, n_test, n_pos) = probe::train(
        &acts,
        &TrainOptions::new(Target::FollowsContext, Kind::Logistic),
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(n_train + n_test, 400);
    assert_eq!(n_pos, 134);
    let (noise, signal) = (&sites[0], &sites[1]);
    assert!(signal.metrics.auroc > 0.95, "{:?}", signal.metrics);
    assert!(noise.metrics.auroc < 0.7, "{:?}", noise.metrics);
    assert!(signal.metrics.control_auroc < 0.7, "{:?}", signal.metrics);
    assert!(signal.metrics.selectivity > 0.25);
    assert!(signal.metrics.accuracy > signal.metrics.majority_baseline);
    assert!(signal.alpha.is_some());
    // The directions point along u, in the site's original (unstandardized) space.
    assert!(
        cos_u(&signal.directions["meandiff"]) > 0.8,
        "{}",
        cos_u(&signal.directions["meandiff"])
    );
    assert!(
        cos_u(&signal.directions["probe"]) > 0.8,
        "{}",
        cos_u(&signal.directions["probe"])
    );
    assert!(
        cos_u(&signal.directions["pca"]) > 0.0,
        "pca is signed toward the positive class"
    );
    for d in signal.directions.values() {
        let norm: f32 = d.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4);
    }
    let sp = &signal.spread["meandiff"];
    assert!(sp.mean_pos > sp.mean_neg && sp.std > 0.0);
    assert!(
        (sp.mean_pos - sp.mean_neg - 4.0).abs() < 0.5,
        "class gap along u is 4: {sp:?}"
    );
    // The probe score separates the classes on a fresh example.
    let mut x: Vec<f32> = signal.mean.clone();
    let u = planted_u();
    let pos: Vec<f32> = x.iter().zip(&u).map(|(m, u)| m + 2.0 * *u as f32).collect();
    x.iter_mut()
        .zip(&u)
        .for_each(|(m, u)| *m -= 2.0 * *u as f32);
    assert!(signal.score(&pos) > signal.score(&x));
}

#[test]
fn linear_probe_and_other_targets() {
    let acts = synthetic();
    let (sites, ..) = probe::train(
        &acts,
        &TrainOptions::new(Target::Conflict, Kind::Linear),
        &mut |_| {},
    )
    .unwrap();
    assert!(sites[1].metrics.auroc > 0.95 && sites[1].alpha.is_none());
    // `known` is independent of the planted signal: no finding.
    let (sites, ..) = probe::train(
        &acts,
        &TrainOptions::new(Target::Known, Kind::Logistic),
        &mut |_| {},
    )
    .unwrap();
    assert!(sites[1].metrics.auroc < 0.7, "{:?}", sites[1].metrics);
}

#[test]
fn splits_keep_subjects_apart_and_relations_transfer() {
    let acts = synthetic();
    let test: std::collections::HashSet<bool> = (0..100)
        .map(|s| probe::is_test(&format!("s{s}"), 0))
        .collect();
    assert_eq!(test.len(), 2, "both parts are used");
    for s in 0..100 {
        let subject = format!("s{s}");
        let parts: std::collections::HashSet<bool> = acts
            .index
            .iter()
            .filter(|r| r.subject == subject)
            .map(|r| probe::is_test(&r.subject, 0))
            .collect();
        assert_eq!(parts.len(), 1);
    }
    let mut o = TrainOptions::new(Target::FollowsContext, Kind::Logistic);
    o.test_relations = Some(vec!["r0".into(), "r1".into()]);
    let (sites, n_train, n_test, _) = probe::train(&acts, &o, &mut |_| {}).unwrap();
    assert_eq!((n_train, n_test), (200, 200));
    assert!(sites[1].metrics.auroc > 0.95);
}

#[test]
fn a_single_class_is_a_clear_error() {
    let mut acts = synthetic();
    for r in &mut acts.index {
        r.label = Some(Label::FollowsPrior);
    }
    let e = probe::train(
        &acts,
        &TrainOptions::new(Target::FollowsContext, Kind::Logistic),
        &mut |_| {},
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("needs both classes"), "{e}");
}

#[test]
fn probe_files_round_trip_and_refuse_other_models() {
    let acts = synthetic();
    let (sites, n_train, n_test, n_pos) = probe::train(
        &acts,
        &TrainOptions::new(Target::FollowsContext, Kind::Logistic),
        &mut |_| {},
    )
    .unwrap();
    let id = ctxsteer::model::ModelId {
        file: "a.gguf".into(),
        sha256: "aa".repeat(32),
        architecture: "llama".into(),
        n_layers: 2,
        d_model: D,
    };
    let f = ProbeFile {
        version: 1,
        model: id.clone(),
        acts: "x".into(),
        data: "y".into(),
        target: Target::FollowsContext,
        kind: Kind::Logistic,
        command: "test".into(),
        seed: 0,
        n_train,
        n_test,
        n_pos,
        test_relations: None,
        best: sites[1].site.clone(),
        positions: ctxsteer::capture::PosMode::Last,
        sites,
    };
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("p.json");
    f.write(&p).unwrap();
    let back = ProbeFile::read(&p).unwrap();
    assert_eq!(
        back.site(&SiteRef::Best).unwrap().site,
        "blocks.1.hook_resid_post"
    );
    assert!(back
        .site(&SiteRef::parse("blocks.9.hook_resid_post"))
        .unwrap_err()
        .to_string()
        .contains("blocks.0.hook_resid_post"));
    back.check_model(&id, &p).unwrap();
    // `FILE:SITE` pins the best site (and so changes what a run keyed by the file reads);
    // `FILE` alone and `FILE:best` keep the file's own; an unknown site names the valid ones.
    let at = |arg: String| ProbeFile::read_ref(std::path::Path::new(&arg));
    let pinned = at(format!("{}:blocks.0.hook_resid_post", p.display())).unwrap();
    assert_eq!(
        pinned.site(&SiteRef::Best).unwrap().site,
        "blocks.0.hook_resid_post"
    );
    assert_ne!(
        serde_json::to_string(&pinned).unwrap(),
        serde_json::to_string(&back).unwrap()
    );
    for same in [p.display().to_string(), format!("{}:best", p.display())] {
        assert_eq!(at(same).unwrap().best, back.best);
    }
    let e = at(format!("{}:blocks.7.hook_resid_post", p.display()))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("p.json") && e.contains("blocks.1.hook_resid_post"),
        "{e}"
    );
    ProbeFile::read_ref_for(&p, &id).unwrap();
    let other = ctxsteer::model::ModelId {
        sha256: "bb".repeat(32),
        ..id.clone()
    };
    assert!(back
        .check_model(&other, &p)
        .unwrap_err()
        .to_string()
        .contains("trained on a.gguf"));
    let wider = ctxsteer::model::ModelId { d_model: 64, ..id };
    assert!(back.check_model(&wider, &p).is_err());
    // Files that are not whole or not consistent are refused on read, naming what is wrong.
    let broken = |edit: &dyn Fn(&mut ProbeFile), want: &str| {
        let mut g = back.clone();
        edit(&mut g);
        let q = dir.path().join("broken.json");
        std::fs::write(&q, serde_json::to_string(&g).unwrap()).unwrap();
        let e = ProbeFile::read(&q).unwrap_err().to_string();
        assert!(e.contains("broken.json") && e.contains(want), "{e}");
    };
    broken(&|g| g.version = 99, "version 99 is not supported");
    broken(&|g| g.sites.clear(), "no site");
    broken(
        &|g| g.best = "blocks.7.hook_resid_post".into(),
        "not one of its sites",
    );
    broken(&|g| g.sites[0].weights.truncate(3), "the weights have 3");
    broken(&|g| g.sites[0].std[1] = 0.0, "not > 0");
    let svg = dir.path().join("p.svg");
    probe::plot(&back, &svg).unwrap();
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(text.contains("<svg") && text.contains("AUROC"));
    assert!(probe::table(&back).contains("blocks.1.hook_resid_post"));
}

#[test]
fn statistics_have_their_known_values() {
    assert_eq!(
        stats::auroc(&[0.1, 0.2, 0.8, 0.9], &[false, false, true, true]),
        1.0
    );
    assert_eq!(
        stats::auroc(&[0.9, 0.8, 0.2, 0.1], &[false, false, true, true]),
        0.0
    );
    assert_eq!(
        stats::auroc(&[0.5, 0.5, 0.5, 0.5], &[false, true, false, true]),
        0.5
    );
    assert!(
        (stats::auroc(&[0.1, 0.4, 0.35, 0.8], &[false, false, true, true]) - 0.75).abs() < 1e-12
    );
    let (acc, bal) = stats::accuracies(&[true, true, true, true], &[true, true, true, false]);
    assert_eq!((acc, bal), (0.75, 0.5));
    let x = Array2::from_shape_fn((50, 3), |(i, j)| {
        if j == 1 {
            i as f64
        } else {
            (i % 3) as f64 * 0.01
        }
    });
    let pc = stats::first_pc(&x);
    assert!(pc[1].abs() > 0.999, "{pc:?}");
    let (lo, hi) = stats::bootstrap_ci(&[0.0, 1.0, 0.0, 1.0, 1.0, 0.0, 1.0, 0.0], 2000, 1);
    assert!(lo < 0.5 && hi > 0.5 && lo >= 0.0 && hi <= 1.0);
}

#[test]
fn conflict_counts_no_context_as_no_conflict() {
    let mut row = synthetic().index[0].clone();
    let of = |r: &IndexRow| probe::target_of(r, Target::Conflict);
    row.variant = Some(Variant::Counterfactual);
    assert_eq!(of(&row), Some(true));
    row.variant = Some(Variant::TrueContext);
    assert_eq!(of(&row), Some(false));
    row.variant = Some(Variant::NoContext);
    assert_eq!(of(&row), Some(false));
    row.variant = Some(Variant::Neutral);
    assert_eq!(of(&row), Some(false));
    row.variant = None;
    assert_eq!(of(&row), None);
    // The relevance gate's target: a context about the queried subject, against one about
    // another; prompts without a context say nothing about it.
    let rel = |v: Option<Variant>| {
        let mut r = row.clone();
        r.variant = v;
        probe::target_of(&r, Target::Relevant)
    };
    assert_eq!(rel(Some(Variant::Counterfactual)), Some(true));
    assert_eq!(rel(Some(Variant::TrueContext)), Some(true));
    assert_eq!(rel(Some(Variant::Irrelevant)), Some(false));
    assert_eq!(rel(Some(Variant::NoContext)), None);
    assert_eq!(rel(Some(Variant::Neutral)), None);
    assert_eq!(rel(None), None);
}

#[test]
fn per_head_probes_find_the_head_that_carries_the_label() {
    // One attn.hook_z site of two heads: head 0 is noise, head 1 carries the planted direction.
    let mut acts = synthetic();
    let (noise, signal) = (acts.sites[0].1.clone(), acts.sites[1].1.clone());
    let z = ndarray::concatenate(ndarray::Axis(1), &[noise.view(), signal.view()]).unwrap();
    let site = Site::new(ctxsteer::hooks::SiteKind::AttnZ, 1);
    acts.sites = vec![(site, z), (Site::resid_post(1), signal)];
    let mut o = TrainOptions::new(Target::FollowsContext, Kind::Logistic);
    o.per_head = Some(2);
    let (sites, ..) = probe::train(&acts, &o, &mut |_| {}).unwrap();
    let names: Vec<&str> = sites.iter().map(|s| s.site.as_str()).collect();
    assert_eq!(
        names,
        [
            "blocks.1.attn.hook_z[0]",
            "blocks.1.attn.hook_z[1]",
            "blocks.1.hook_resid_post"
        ]
    );
    assert_eq!(
        sites[0].weights.len(),
        D,
        "each head probe sees its own slice"
    );
    assert!(
        sites[0].metrics.auroc < 0.7,
        "noise head {}",
        sites[0].metrics.auroc
    );
    assert!(
        sites[1].metrics.auroc > 0.95,
        "signal head {}",
        sites[1].metrics.auroc
    );
    // Head 1's slice is exactly the whole signal site: the same data gives the same probe.
    assert_eq!(sites[1].weights, sites[2].weights);
    assert_eq!(sites[1].directions, sites[2].directions);
    assert!(cos_u(&sites[1].directions["probe"]) > 0.9);
}
