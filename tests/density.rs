//! Density metrics on synthetic activations with known sparsity, and the conditions' inputs.

mod common;
use ctxsteer::density::{self, active_fraction, hoyer, l1_l2, participation};

#[test]
fn metrics_have_their_known_values() {
    let n = 64;
    for k in [1usize, 4, 16, 64] {
        // k equal non-zero entries (signs alternate) among n.
        let a: Vec<f32> = (0..n)
            .map(|i| {
                if i < k {
                    if i % 2 == 0 {
                        2.0
                    } else {
                        -2.0
                    }
                } else {
                    0.0
                }
            })
            .collect();
        let want_hoyer = ((n as f64).sqrt() - (k as f64).sqrt()) / ((n as f64).sqrt() - 1.0);
        assert!((hoyer(&a) - want_hoyer).abs() < 1e-9, "k={k}");
        assert!((l1_l2(&a) - (k as f64).sqrt()).abs() < 1e-9);
        assert!((participation(&a) - k as f64).abs() < 1e-9);
        assert!((active_fraction(&a, &vec![1.0; n], 1.0) - k as f64 / n as f64).abs() < 1e-12);
        assert_eq!(
            active_fraction(&a, &vec![1.0; n], 2.5),
            0.0,
            "tau above every value"
        );
    }
    assert_eq!(hoyer(&[0.0; 8]), 0.0);
    assert_eq!(participation(&[0.0; 8]), 0.0);
    // Per-unit scale: a unit counts only against its own scale.
    assert_eq!(active_fraction(&[1.0, 1.0], &[0.5, 2.0], 1.0), 0.5);
    assert!((density::pearson(&[1.0, 2.0, 3.0, 4.0], &[2.0, 4.0, 6.0, 8.0]) - 1.0).abs() < 1e-12);
    assert!(
        (density::pearson(&[1.0, 2.0, 3.0, 4.0], &[0.0, 0.0, 1.0, 1.0]) - 0.894427).abs() < 1e-6
    );
}

#[test]
fn shuffles_and_invented_names_are_deterministic() {
    let ids: Vec<u32> = (0..20).collect();
    let a = density::shuffled(&ids, 42);
    assert_eq!(a, density::shuffled(&ids, 42));
    assert_ne!(a, ids);
    let mut sorted = a.clone();
    sorted.sort();
    assert_eq!(sorted, ids, "the same tokens");
    assert_eq!(density::invented_name(7), density::invented_name(7));
    assert_ne!(density::invented_name(7), density::invented_name(8));
    let n = density::invented_name(3);
    assert!(
        n.chars().next().unwrap().is_uppercase() && n.len() >= 6,
        "{n}"
    );
}

#[test]
fn conditions_and_measure_on_the_tiny_model() {
    let (_d, path) = common::tiny::temp();
    let m = ctxsteer::Model::load(&path, ctxsteer::WeightsMode::F32).unwrap();
    let item = ctxsteer::data::Item {
        id: "x".into(),
        relation: "r".into(),
        subject: "the cat".into(),
        question: "q".into(),
        prompt: "the cat sat on the".into(),
        context: "c".into(),
        prior_answer: "mat".into(),
        context_answer: "hat".into(),
        prior_aliases: vec![],
        context_aliases: vec![],
        split: None,
        variant: None,
        distractor: None,
        true_context: None,
        prefix: String::new(),
        exposure: None,
    };
    let known = std::collections::BTreeMap::from([("x".to_string(), true)]);
    let probes = density::conditions(&m, &[item], Some(&known)).unwrap();
    assert_eq!(probes.len(), 7);
    let by = |c: &str, s: &str| {
        probes
            .iter()
            .find(|p| p.condition == c && p.side == s)
            .unwrap()
            .ids
            .clone()
    };
    let mut a = by("natural_vs_shuffled", "natural");
    let mut b = by("natural_vs_shuffled", "shuffled");
    a.sort();
    b.sort();
    assert_eq!(a, b);
    assert!(by("easy_vs_hard", "hard").len() > by("easy_vs_hard", "easy").len() + 50);
    let sites = ctxsteer::Site::parse_pattern("blocks.*.mlp.hook_post", 2).unwrap();
    let out = density::measure(&m, &probes, &sites, 1.0, 4, &mut |_| {}).unwrap();
    assert_eq!(out.len(), 7);
    for it in &out {
        for metric in density::METRICS {
            let v = &it.layers[metric];
            assert_eq!(v.len(), 2);
            assert!(
                v.iter().all(|x| x.is_finite() && *x >= 0.0),
                "{metric} {v:?}"
            );
        }
        assert!(it.layers["hoyer"].iter().all(|h| *h <= 1.0));
        assert!(it.layers["participation"]
            .iter()
            .all(|p| *p >= 1.0 && *p <= 64.0));
    }
    let s = density::summarize(&out);
    assert_eq!(s["real_vs_invented"]["real"]["active"].n, 1);
}
