//! Steering from probes, patching and control-vector export, on the tiny model.

mod common;
use common::tiny;
use ctxsteer::model::{Batch, LogitsAt};
use ctxsteer::patch::{run_jobs, Job};
use ctxsteer::probe::{Metrics, ProbeFile, SiteProbe, SiteRef, Spread, Target};
use ctxsteer::steer::{self, Direction, Mode, Plan, ProbeSteer, Steering};
use ctxsteer::{Model, Positions, Site, Spec, WeightsMode};
use std::collections::BTreeMap;

fn unit(seed: f32) -> Vec<f32> {
    let v: Vec<f32> = (0..tiny::D_MODEL)
        .map(|i| ((i as f32) * 0.61 + seed).sin())
        .collect();
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter().map(|x| x / n).collect()
}

fn site_probe(layer: usize, bias: f32) -> SiteProbe {
    let d = unit(layer as f32);
    SiteProbe {
        site: Site::resid_post(layer).to_string(),
        weights: d.clone(),
        bias,
        mean: vec![0.0; tiny::D_MODEL],
        std: vec![1.0; tiny::D_MODEL],
        alpha: Some(1.0),
        directions: BTreeMap::from([
            ("probe".into(), d.clone()),
            ("meandiff".into(), d.clone()),
            ("pca".into(), d),
        ]),
        spread: ["probe", "meandiff", "pca"]
            .iter()
            .map(|n| {
                (
                    n.to_string(),
                    Spread {
                        std: 0.7,
                        mean_pos: 1.5,
                        mean_neg: -0.5,
                    },
                )
            })
            .collect(),
        cosines: BTreeMap::new(),
        metrics: Metrics::default(),
    }
}

fn probe_file(m: &Model, bias: f32) -> ProbeFile {
    let mut f = common::probe_file_of(
        m,
        Target::FollowsContext,
        (0..tiny::LAYERS).map(|l| site_probe(l, bias)).collect(),
    );
    f.best = Site::resid_post(1).to_string();
    f
}

fn setup() -> (tempfile::TempDir, std::path::PathBuf, Model) {
    let (dir, path) = tiny::temp();
    let m = Model::load(&path, WeightsMode::F32).unwrap();
    (dir, path, m)
}

fn logits(m: &Model, ids: &[u32], spec: &Spec) -> Vec<f32> {
    m.last_logits(ids, spec).unwrap()
}

/// blocks.1.hook_resid_post at the last position: where the test probes read.
fn last_resid(m: &Model, ids: &[u32]) -> Vec<f32> {
    let site = Site::resid_post(1);
    let (_, c) = m
        .run(
            &Batch::single(ids),
            &Spec::capture(&[site], Positions::Last),
            LogitsAt::Last,
        )
        .unwrap();
    c.at(site, 0, ids.len() - 1).unwrap().to_vec()
}

fn proj(v: &[f32], u: &[f32]) -> f32 {
    v.iter().zip(u).map(|(a, b)| a * b).sum()
}

#[test]
fn alpha_zero_turns_adding_off() {
    let (_d, _p, m) = setup();
    let ids = m.tokenizer.encode("the cat sat on the mat").unwrap();
    let plain = logits(&m, &ids, &Spec::new());
    let pf = probe_file(&m, -100.0);
    for mode in [Mode::Add, Mode::AddNorm, Mode::Gated] {
        let how = ProbeSteer {
            layers: Some(&[0, 1]),
            mode,
            alpha: 0.0,
            ..Default::default()
        };
        let st = Steering::from_probes(&pf, &how, tiny::LAYERS).unwrap();
        let spec = st.spec_for(&m, std::slice::from_ref(&ids)).unwrap();
        assert_eq!(logits(&m, &ids, &spec), plain, "{mode:?}");
    }
}

/// The projection onto the direction at the steered site, seen after the steering, with
/// and without it, at each position.
fn projections(m: &Model, ids: &[u32], st: &Steering) -> (Vec<f32>, Vec<f32>) {
    let site = st.sites[0].site;
    let u = &st.sites[0].direction;
    let cap = Spec::capture(&[site], Positions::All);
    let mut steered = st.spec_for(m, std::slice::from_ref(&ids.to_vec())).unwrap();
    steered.interventions.extend(cap.interventions.clone());
    let (_, a) = m
        .run(&Batch::single(ids), &steered, LogitsAt::Last)
        .unwrap();
    let (_, b) = m.run(&Batch::single(ids), &cap, LogitsAt::Last).unwrap();
    let p = |c: &ctxsteer::Captures| {
        (0..ids.len())
            .map(|i| proj(c.at(site, 0, i).unwrap(), u))
            .collect()
    };
    (p(&a), p(&b))
}

#[test]
fn add_moves_the_projection_by_alpha_sigma_and_clamp_lands_on_target() {
    let (_d, _p, m) = setup();
    let ids = m.tokenizer.encode("the cat sat on the mat").unwrap();
    let n = ids.len();
    let pf = probe_file(&m, 0.0);
    let add = Steering::from_probes(
        &pf,
        &ProbeSteer {
            site: SiteRef::Best,
            layers: None,
            direction: Direction::Probe,
            mode: Mode::Add,
            alpha: 3.0,
            positions: Positions::Last,
        },
        tiny::LAYERS,
    )
    .unwrap();
    let (with, without) = projections(&m, &ids, &add);
    assert!(
        (with[n - 1] - without[n - 1] - 3.0 * 0.7).abs() < 1e-4,
        "{} vs {}",
        with[n - 1],
        without[n - 1]
    );
    for i in 0..n - 1 {
        assert_eq!(with[i], without[i], "position {i} is not steered");
    }
    let clamp = Steering::from_probes(
        &pf,
        &ProbeSteer {
            site: SiteRef::Best,
            layers: None,
            direction: Direction::Meandiff,
            mode: Mode::Clamp,
            alpha: -2.0,
            positions: Positions::All,
        },
        tiny::LAYERS,
    )
    .unwrap();
    let (with, _) = projections(&m, &ids, &clamp);
    for p in with {
        assert!((p - (1.5 - 2.0 * 0.7)).abs() < 1e-4, "{p}");
    }
    // At strength 0 a clamp still sets the projection: to the context class mean.
    let clamp0 = Steering {
        alpha: 0.0,
        ..clamp
    };
    let (with, without) = projections(&m, &ids, &clamp0);
    assert!(without.iter().any(|p| (p - 1.5).abs() > 0.1), "{without:?}");
    for p in with {
        assert!((p - 1.5).abs() < 1e-4, "{p}");
    }
}

#[test]
fn gated_steering_leaves_ungated_prompts_bit_identical() {
    let (_d, _p, m) = setup();
    let a = m.tokenizer.encode("the cat sat on the mat").unwrap();
    let b = m.tokenizer.encode("hello there, old friend").unwrap();
    // Choose the gate's bias between the two prompts' raw scores so exactly one is gated.
    let gated = ProbeSteer {
        mode: Mode::Gated,
        alpha: 5.0,
        ..Default::default()
    };
    let raw = Steering::from_probes(&probe_file(&m, 0.0), &gated, tiny::LAYERS).unwrap();
    let score = |ids: &[u32]| raw.gate.as_ref().unwrap().probe.score(&last_resid(&m, ids));
    let (sa, sb) = (score(&a), score(&b));
    assert_ne!(sa, sb);
    let pf = probe_file(&m, -(sa + sb) / 2.0);
    let st = Steering::from_probes(
        &pf,
        &ProbeSteer {
            site: SiteRef::Best,
            layers: None,
            direction: Direction::Probe,
            mode: Mode::Gated,
            alpha: 5.0,
            positions: Positions::All,
        },
        tiny::LAYERS,
    )
    .unwrap();
    let gates = st.gate_rows(&m, &[a.clone(), b.clone()]).unwrap();
    assert_eq!(
        gates.iter().filter(|g| **g).count(),
        1,
        "exactly one prompt predicted to follow the prior"
    );
    let (ungated, gated) = if gates[0] { (&b, &a) } else { (&a, &b) };
    // Alone: the ungated prompt gets an empty spec and identical logits; the gated one changes.
    assert!(st
        .spec_for(&m, std::slice::from_ref(ungated))
        .unwrap()
        .is_empty());
    assert_eq!(
        logits(
            &m,
            ungated,
            &st.spec_for(&m, std::slice::from_ref(ungated)).unwrap()
        ),
        logits(&m, ungated, &Spec::new())
    );
    assert_ne!(
        logits(
            &m,
            gated,
            &st.spec_for(&m, std::slice::from_ref(gated)).unwrap()
        ),
        logits(&m, gated, &Spec::new())
    );
    // In one batch, the ungated row is bit-identical to the unsteered batch.
    let rows = vec![a.clone(), b.clone()];
    let batch = Batch::left_padded(&rows, 0);
    let spec = st.spec_for(&m, &rows).unwrap();
    let (l1, _) = m.run(&batch, &spec, LogitsAt::Last).unwrap();
    let (l0, _) = m.run(&batch, &Spec::new(), LogitsAt::Last).unwrap();
    let (l1, l0) = (l1.to_vec3::<f32>().unwrap(), l0.to_vec3::<f32>().unwrap());
    let u = if gates[0] { 1 } else { 0 };
    assert_eq!(l1[u], l0[u]);
    assert_ne!(l1[1 - u], l0[1 - u]);
}

#[test]
fn patching_with_own_activations_is_a_no_op_and_last_layer_patch_gives_source_logits() {
    let (_d, _p, m) = setup();
    let target = m.tokenizer.encode("the cat sat on the mat").unwrap();
    let source = m.tokenizer.encode("the cat sat on the hat").unwrap();
    assert_eq!(source.len(), target.len());
    let sites: Vec<Site> = (0..tiny::LAYERS).map(Site::resid_post).collect();
    let cap = Spec::capture(&sites, Positions::All);
    let (_, tcaps) = m
        .run(&Batch::single(&target), &cap, LogitsAt::Last)
        .unwrap();
    let (_, scaps) = m
        .run(&Batch::single(&source), &cap, LogitsAt::Last)
        .unwrap();
    let n = target.len();
    let own: Vec<Job> = (0..tiny::LAYERS)
        .flat_map(|l| {
            (0..n).map(move |p| Job {
                site: Site::resid_post(l),
                head: None,
                pairs: vec![(p, p)],
                key: format!("{p}"),
            })
        })
        .collect();
    let plain = logits(&m, &target, &Spec::new());
    // One row per forward: bit-identical. Batched, the matmul rounds differently: 1e-5.
    for row in run_jobs(&m, &target, &tcaps, &own[..6], 1).unwrap() {
        assert_eq!(row, plain);
    }
    for row in run_jobs(&m, &target, &tcaps, &own, 5).unwrap() {
        assert!(common::max_abs_diff(&row, &plain) < 1e-5);
    }
    let last = Job {
        site: Site::resid_post(tiny::LAYERS - 1),
        head: None,
        pairs: (0..n).map(|p| (p, p)).collect(),
        key: "all".into(),
    };
    let got = run_jobs(&m, &target, &scaps, &[last], 1).unwrap().remove(0);
    assert!(common::max_abs_diff(&got, &logits(&m, &source, &Spec::new())) < 1e-5);
    // A head patch touches only its head: patching head 0 from the target itself is a no-op too.
    let z = Site::new(ctxsteer::SiteKind::AttnZ, 1);
    let (_, zc) = m
        .run(
            &Batch::single(&target),
            &Spec::capture(&[z], Positions::All),
            LogitsAt::Last,
        )
        .unwrap();
    let job = Job {
        site: z,
        head: Some(0),
        pairs: vec![(n - 1, n - 1)],
        key: "head 0".into(),
    };
    // Last-position jobs run as one cached step after the prefix: equal up to rounding.
    let got = run_jobs(&m, &target, &zc, &[job], 1).unwrap().remove(0);
    assert!(common::max_abs_diff(&got, &plain) < 1e-5);
    // And a last-position patch from the source equals the uncached computation of it.
    let last = |l: usize| Job {
        site: Site::resid_post(l),
        head: None,
        pairs: vec![(n - 1, n - 1)],
        key: "last".into(),
    };
    let cached = run_jobs(&m, &target, &scaps, &[last(0), last(1)], 2).unwrap();
    for (l, row) in cached.iter().enumerate() {
        let spec = Spec::new().with(ctxsteer::Intervention::new(
            Site::resid_post(l),
            Positions::Indices(vec![n - 1]),
            ctxsteer::Action::Replace {
                values: BTreeMap::from([(
                    n - 1,
                    scaps.at(Site::resid_post(l), 0, n - 1).unwrap().to_vec(),
                )]),
            },
        ));
        assert!(common::max_abs_diff(row, &logits(&m, &target, &spec)) < 1e-5);
    }
}

#[test]
fn exported_control_vector_has_llama_cpp_layout_and_loads_back() {
    let (dir, _p, m) = setup();
    let pf = probe_file(&m, 0.0);
    let st = Steering::from_probes(
        &pf,
        &ProbeSteer {
            site: SiteRef::Best,
            layers: Some(&[1]),
            direction: Direction::Probe,
            mode: Mode::Add,
            alpha: 2.0,
            positions: Positions::All,
        },
        tiny::LAYERS,
    )
    .unwrap();
    let out = dir.path().join("v.gguf");
    steer::write_cvec(&out, "llama", tiny::LAYERS, &st.as_cvec().unwrap()).unwrap();
    let mut f = std::fs::File::open(&out).unwrap();
    let ct = candle_core::quantized::gguf_file::Content::read(&mut f).unwrap();
    use candle_core::quantized::gguf_file::Value;
    assert!(
        matches!(&ct.metadata["general.architecture"], Value::String(s) if s == "controlvector")
    );
    assert!(matches!(&ct.metadata["controlvector.model_hint"], Value::String(s) if s == "llama"));
    assert!(matches!(
        ct.metadata["controlvector.layer_count"],
        Value::I32(1)
    ));
    let names: Vec<&String> = ct.tensor_infos.keys().collect();
    assert_eq!(names, ["direction.1"]);
    let info = &ct.tensor_infos["direction.1"];
    assert_eq!(info.ggml_dtype, candle_core::quantized::GgmlDType::F32);
    assert_eq!(info.shape.dims(), [tiny::D_MODEL]);
    let (hint, dirs) = steer::read_cvec(&out).unwrap();
    assert_eq!(hint, "llama");
    let want: Vec<f32> = unit(1.0).iter().map(|x| x * 2.0 * 0.7).collect();
    assert!(common::max_abs_diff(&dirs[0].1, &want) < 1e-6);
    // Steering with the file adds exactly its vector at blocks.1.hook_resid_post: same logits.
    let ids = m.tokenizer.encode("the cat").unwrap();
    let from_file = Steering::from_cvec(&out, 1.0, Positions::All, tiny::LAYERS).unwrap();
    let a = logits(
        &m,
        &ids,
        &from_file.spec_for(&m, std::slice::from_ref(&ids)).unwrap(),
    );
    let b = logits(
        &m,
        &ids,
        &st.spec_for(&m, std::slice::from_ref(&ids)).unwrap(),
    );
    assert!(common::max_abs_diff(&a, &b) < 1e-5);
    assert!(
        steer::write_cvec(&out, "llama", tiny::LAYERS, &[(0, vec![0.0; 64])])
            .unwrap_err()
            .to_string()
            .contains("layer 0")
    );
}

#[test]
fn head_scaling_and_layer_ranges_parse_with_clear_errors() {
    let spec = steer::scale_heads_spec("1.3=0, 0.0=0.5", 2, 4).unwrap();
    assert_eq!(spec.interventions.len(), 2);
    assert_eq!(spec.interventions[0].heads, Some(vec![3]));
    for bad in ["1.4=0", "2.0=1", "1=0", "1.1=x"] {
        let e = steer::scale_heads_spec(bad, 2, 4).unwrap_err().to_string();
        assert!(e.contains("LAYER.HEAD=FACTOR"), "{e}");
    }
    assert_eq!(steer::parse_layers("3-5,9", 30).unwrap(), vec![3, 4, 5, 9]);
    assert!(steer::parse_layers("5-3", 30).is_err());
    assert!(steer::parse_layers("28-30", 30)
        .unwrap_err()
        .to_string()
        .contains("0..=29"));
}

#[test]
fn a_conflict_gate_scales_heads_only_where_it_fires() {
    let (_d, _p, m) = setup();
    let a = m.tokenizer.encode("the cat sat on the mat").unwrap();
    let b = m.tokenizer.encode("hello there, old friend").unwrap();
    let raw = |ids: &[u32]| site_probe(1, 0.0).score(&last_resid(&m, ids));
    let (sa, sb) = (raw(&a), raw(&b));
    assert_ne!(sa, sb);
    // A conflict probe whose bias puts the threshold between the two prompts.
    let mut pf = probe_file(&m, -(sa + sb) / 2.0);
    pf.target = Target::Conflict;
    let gate = steer::Gate::from_probes(&pf, &SiteRef::Best, tiny::LAYERS).unwrap();
    assert!(
        gate.fire_on_positive,
        "a conflict probe fires on a positive score"
    );
    let fires = gate.rows(&m, &[a.clone(), b.clone()]).unwrap();
    assert_eq!(fires, vec![sa > sb, sb > sa]);
    // A margin wider than the gap between the two scores makes the quiet prompt fire too; one
    // narrower does not.
    let gap = (sa - sb).abs() / 2.0;
    for (margin, both) in [(gap * 1.01, true), (gap * 0.99, false)] {
        let wide = steer::Gate {
            margin,
            ..gate.clone()
        };
        let f = wide.rows(&m, &[a.clone(), b.clone()]).unwrap();
        assert_eq!(f.iter().all(|x| *x), both, "margin {margin}: {f:?}");
    }
    let heads = steer::scale_heads_spec("0.1=3,1.0=0", tiny::LAYERS, tiny::HEADS).unwrap();
    let gated = steer::Gated {
        gate,
        inner: Box::new(heads.clone()),
    };
    let (on, off) = if fires[0] { (&a, &b) } else { (&b, &a) };
    // Alone: the quiet prompt gets no intervention; the firing one gets the head scaling.
    assert!(gated
        .spec_for(&m, std::slice::from_ref(off))
        .unwrap()
        .is_empty());
    assert_eq!(
        logits(
            &m,
            on,
            &gated.spec_for(&m, std::slice::from_ref(on)).unwrap()
        ),
        logits(&m, on, &heads)
    );
    assert_ne!(logits(&m, on, &heads), logits(&m, on, &Spec::new()));
    // In one batch, the quiet row is bit-identical to the plain batch, the other is scaled.
    let rows = vec![a.clone(), b.clone()];
    let batch = Batch::left_padded(&rows, 0);
    let (l1, _) = m
        .run(&batch, &gated.spec_for(&m, &rows).unwrap(), LogitsAt::Last)
        .unwrap();
    let (l0, _) = m.run(&batch, &Spec::new(), LogitsAt::Last).unwrap();
    let (l1, l0) = (l1.to_vec3::<f32>().unwrap(), l0.to_vec3::<f32>().unwrap());
    let quiet = if fires[0] { 1 } else { 0 };
    assert_eq!(l1[quiet], l0[quiet]);
    assert_ne!(l1[1 - quiet], l0[1 - quiet]);
}

/// Strengths are in spread units: a probe without a spread for the direction (or a zero one)
/// is an error naming the site, not steering that silently does nothing.
#[test]
fn a_missing_or_zero_spread_is_an_error() {
    let (_d, _p, m) = setup();
    let steer = |pf: &ProbeFile| {
        Steering::from_probes(
            pf,
            &ProbeSteer {
                site: SiteRef::Best,
                layers: None,
                direction: Direction::Probe,
                mode: Mode::Add,
                alpha: 1.0,
                positions: Positions::All,
            },
            tiny::LAYERS,
        )
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default()
    };
    let mut pf = probe_file(&m, 0.0);
    pf.sites.iter_mut().for_each(|s| s.spread.clear());
    let e = steer(&pf);
    assert!(
        e.contains("no spread") && e.contains("hook_resid_post"),
        "{e}"
    );
    let mut pf = probe_file(&m, 0.0);
    pf.sites
        .iter_mut()
        .for_each(|s| s.spread.values_mut().for_each(|v| v.std = 0.0));
    let e = steer(&pf);
    assert!(e.contains("positive"), "{e}");
    assert_eq!(steer(&probe_file(&m, 0.0)), "");
}

/// A per-head probe at `blocks.{layer}.attn.hook_z[head]` with cross-validated AUROC `cv`.
fn head_probe(layer: usize, head: usize, cv: f64) -> SiteProbe {
    let d_head = tiny::D_MODEL / tiny::HEADS;
    let u: Vec<f32> = unit(head as f32)[..d_head].to_vec();
    let n = u.iter().map(|x| x * x).sum::<f32>().sqrt();
    let u: Vec<f32> = u.iter().map(|x| x / n).collect();
    let site = Site::new(ctxsteer::hooks::SiteKind::AttnZ, layer);
    SiteProbe {
        site: ctxsteer::probe::head_site_name(site, head),
        weights: u.clone(),
        mean: vec![0.0; d_head],
        std: vec![1.0; d_head],
        directions: BTreeMap::from([("meandiff".into(), u)]),
        metrics: Metrics {
            cv_auroc: cv,
            ..Metrics::default()
        },
        ..site_probe(layer, 0.0)
    }
}

#[test]
fn iti_shifts_the_best_ranked_heads_slice_and_no_other() {
    let (_d, _p, m) = setup();
    let ids = m.tokenizer.encode("the cat sat on the mat").unwrap();
    let mut pf = probe_file(&m, 0.0);
    pf.sites = (0..tiny::HEADS)
        .map(|h| head_probe(1, h, [0.6, 0.9, 0.7, 0.8][h]))
        .collect();
    let ranked: Vec<&str> = steer::ranked_heads(&pf)
        .iter()
        .map(|p| p.site.as_str())
        .collect();
    assert_eq!(
        ranked,
        [
            "blocks.1.attn.hook_z[1]",
            "blocks.1.attn.hook_z[3]",
            "blocks.1.attn.hook_z[2]",
            "blocks.1.attn.hook_z[0]"
        ]
    );
    let st = Steering::from_head_probes(
        &pf,
        1,
        Direction::Meandiff,
        4.0,
        Positions::All,
        tiny::LAYERS,
    )
    .unwrap();
    assert_eq!(st.sites.len(), 1);
    assert_eq!(st.sites[0].head, Some(1));
    let z = Site::new(ctxsteer::hooks::SiteKind::AttnZ, 1);
    let cap = Spec::capture(&[z], Positions::All);
    let mut steered = st.spec_for(&m, std::slice::from_ref(&ids)).unwrap();
    steered.interventions.extend(cap.interventions.clone());
    let (_, a) = m
        .run(&Batch::single(&ids), &steered, LogitsAt::Last)
        .unwrap();
    let (_, b) = m.run(&Batch::single(&ids), &cap, LogitsAt::Last).unwrap();
    let d_head = tiny::D_MODEL / tiny::HEADS;
    let u = &st.sites[0].direction;
    for pos in 0..ids.len() {
        let (x, y) = (a.at(z, 0, pos).unwrap(), b.at(z, 0, pos).unwrap());
        for h in 0..tiny::HEADS {
            let r = h * d_head..(h + 1) * d_head;
            let moved = proj(&x[r.clone()], u) - proj(&y[r.clone()], u);
            if h == 1 {
                assert!((moved - 4.0 * 0.7).abs() < 1e-4, "head 1 moved {moved}");
            } else {
                assert_eq!(
                    x[r.clone()],
                    y[r],
                    "head {h} at position {pos} is untouched"
                );
            }
        }
    }
    // One head's probe steers that head by name, as `--steer FILE:SITE[H]` does; a band of
    // layers or a gate needs whole-site probes.
    let one = Steering::from_probes(
        &pf,
        &ProbeSteer {
            site: SiteRef::parse("blocks.1.attn.hook_z[3]"),
            layers: None,
            direction: Direction::Meandiff,
            mode: Mode::Add,
            alpha: 1.0,
            positions: Positions::All,
        },
        tiny::LAYERS,
    )
    .unwrap();
    assert_eq!((one.sites[0].site, one.sites[0].head), (z, Some(3)));
    // A control vector is added to whole block outputs: a head's direction cannot be one.
    let e = one.as_cvec().unwrap_err().to_string();
    assert!(e.contains("hook_resid_post only"), "{e}");
    for (layers, mode) in [(Some(&[0usize, 1][..]), Mode::Add), (None, Mode::Gated)] {
        let e = Steering::from_probes(
            &pf,
            &ProbeSteer {
                site: SiteRef::parse("blocks.1.attn.hook_z[3]"),
                layers,
                direction: Direction::Meandiff,
                mode,
                alpha: 1.0,
                positions: Positions::All,
            },
            tiny::LAYERS,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("one head's probe"), "{e}");
    }
    // A probe file without per-head probes cannot drive ITI.
    let e = Steering::from_head_probes(
        &probe_file(&m, 0.0),
        4,
        Direction::Meandiff,
        1.0,
        Positions::All,
        2,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("--per-head"), "{e}");
}

#[test]
fn add_norm_moves_the_projection_by_alpha_times_the_typical_norm() {
    let (_d, _p, m) = setup();
    let ids = m.tokenizer.encode("the cat sat on the mat").unwrap();
    let mut pf = probe_file(&m, 0.0);
    for p in &mut pf.sites {
        p.mean = vec![0.5; tiny::D_MODEL];
        p.std = vec![2.0; tiny::D_MODEL];
    }
    let norm = (tiny::D_MODEL as f32 * (0.25 + 4.0)).sqrt();
    let st = Steering::from_probes(
        &pf,
        &ProbeSteer {
            site: SiteRef::Best,
            layers: None,
            direction: Direction::Probe,
            mode: Mode::AddNorm,
            alpha: 0.1,
            positions: Positions::All,
        },
        tiny::LAYERS,
    )
    .unwrap();
    let (with, without) = projections(&m, &ids, &st);
    for (w, wo) in with.iter().zip(&without) {
        assert!(
            (w - wo - 0.1 * norm).abs() < 1e-3,
            "{w} vs {wo}, norm {norm}"
        );
    }
    // Exported as a control vector, it is scaled the same way.
    let (layer, v) = st.as_cvec().unwrap().remove(0);
    assert_eq!(layer, 1);
    let want: Vec<f32> = st.sites[0]
        .direction
        .iter()
        .map(|x| x * 0.1 * norm)
        .collect();
    assert!(common::max_abs_diff(&v, &want) < 1e-5);
}

#[test]
fn per_head_probe_site_names_parse_with_clear_errors() {
    use ctxsteer::probe::probe_site;
    let (s, h) = probe_site("blocks.3.attn.hook_z[2]", 4).unwrap();
    assert_eq!(
        (s.to_string(), h),
        ("blocks.3.attn.hook_z".to_string(), Some(2))
    );
    let (s, h) = probe_site("blocks.3.hook_resid_post", 4).unwrap();
    assert_eq!((s.layer, h), (3, None));
    for bad in [
        "blocks.3.attn.hook_z[x]",
        "blocks.3.attn.hook_z[2",
        "blocks.3.hook_resid_post[1]",
    ] {
        assert!(probe_site(bad, 4).is_err(), "{bad}");
    }
}

/// One steering vocabulary: a probe file, a raw vector, a control vector and a learned edit are
/// told apart by their contents, each kind has its own default strength, and each request
/// builds the same spec as the kind's own constructor.
#[test]
fn steer_requests_tell_every_kind_of_file_apart() {
    use ctxsteer::steer::{SteerKind, SteerOptions, SteerRequest};
    let (dir, _p, m) = setup();
    let probes = dir.path().join("probes.json");
    probe_file(&m, 0.0).write(&probes).unwrap();
    let vector = dir.path().join("v.json");
    std::fs::write(&vector, serde_json::to_string(&vec![0.25f32; 64]).unwrap()).unwrap();
    let cvec = dir.path().join("c.gguf");
    steer::write_cvec(&cvec, "llama", tiny::LAYERS, &[(1, vec![0.5; 64])]).unwrap();
    let edit = dir.path().join("e.safetensors");
    tiny::write_edit(&m, &edit);
    let kinds: Vec<SteerKind> = [&probes, &vector, &cvec, &edit]
        .iter()
        .map(|p| SteerKind::detect(p).unwrap())
        .collect();
    use SteerKind::*;
    assert_eq!(kinds, [Probes, Vector, ControlVector, Edit]);
    let alphas: Vec<f32> = kinds.iter().map(|k| k.default_alpha()).collect();
    assert_eq!(alphas, [4.0, 1.0, 1.0, 1.0]);
    let ids = m.tokenizer.encode("the cat sat").unwrap();
    let spec_of = |arg: &str, alpha: Option<f32>| {
        let req = SteerRequest {
            alpha,
            ..SteerRequest::parse(arg)
        };
        steer::plan(&m, &req, &SteerOptions::default())
            .unwrap()
            .spec_for(&m, std::slice::from_ref(&ids))
            .unwrap()
    };
    let plain = logits(&m, &ids, &Spec::new());
    // A probe file at its best site, 4 spreads by default.
    let by_probe =
        Steering::from_probes(&probe_file(&m, 0.0), &ProbeSteer::default(), tiny::LAYERS)
            .unwrap()
            .spec_for(&m, std::slice::from_ref(&ids))
            .unwrap();
    let p = probes.display().to_string();
    assert_eq!(
        spec_of(&p, None).to_json().unwrap(),
        by_probe.to_json().unwrap()
    );
    // A raw vector at the named site; a control vector at its own layer, multiplied.
    let v = format!("{}:blocks.1.hook_resid_post", vector.display());
    let added = steer::add_spec(&[Site::resid_post(1)], &[0.25; 64], 3.0, Positions::All);
    assert_eq!(
        spec_of(&v, Some(3.0)).to_json().unwrap(),
        added.to_json().unwrap()
    );
    let c = cvec.display().to_string();
    let from_cvec = steer::add_spec(&[Site::resid_post(1)], &[0.5; 64], 2.0, Positions::All);
    assert_eq!(
        logits(&m, &ids, &spec_of(&c, Some(2.0))),
        logits(&m, &ids, &from_cvec)
    );
    // An edit: scale 1 is the edit itself, 0 the unedited model, and 2 doubles its change.
    let e = edit.display().to_string();
    let full = logits(&m, &ids, &spec_of(&e, None));
    assert_ne!(full, plain);
    assert_eq!(logits(&m, &ids, &spec_of(&e, Some(1.0))), full);
    assert_eq!(logits(&m, &ids, &spec_of(&e, Some(0.0))), plain);
    let reft = ctxsteer::reft::Reft::load(&edit, &m).unwrap();
    let (site, one) = &reft.edits[0];
    assert_eq!(*site, Site::resid_post(1));
    let h = candle_core::Tensor::from_vec(
        (0..128)
            .map(|i| (i as f32 * 0.1).cos())
            .collect::<Vec<f32>>(),
        (1, 2, 64),
        &candle_core::Device::Cpu,
    )
    .unwrap();
    let d1 = one.delta(&h).unwrap();
    let d2 = one.scaled(2.0).unwrap().delta(&h).unwrap();
    let diff = (d2 - (d1 * 2.0).unwrap()).unwrap().abs().unwrap();
    let worst = diff
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(worst < 1e-4, "scale 2 doubles the change: off by {worst}");
    // Sites: a raw vector needs one, an edit and a control vector refuse one.
    let err = |arg: &str| {
        let req = SteerRequest::parse(arg);
        steer::plan(&m, &req, &SteerOptions::default())
            .err()
            .unwrap()
            .to_string()
    };
    assert!(err(&vector.display().to_string()).contains("needs the site"));
    assert!(err(&format!("{e}:blocks.1.hook_resid_post")).contains("its own sites"));
    assert!(err(&format!("{c}:blocks.1.hook_resid_post")).contains("its own layers"));
}

/// The resid_post of layer 1 at position `t` of one prompt.
fn resid_at(m: &Model, ids: &[u32], t: usize) -> Vec<f32> {
    let site = Site::resid_post(1);
    let spec = Spec::capture(&[site], Positions::All);
    let (_, c) = m.run(&Batch::single(ids), &spec, LogitsAt::Last).unwrap();
    c.at(site, 0, t).unwrap().to_vec()
}

/// A gate whose probe was captured at the subject's last token reads there when the caller
/// gives the subject's position (also inside a batch, and through `Gated` and `Plans`), and
/// at the last token where it is not given, as a capture falls back; the probe file records
/// where it was trained, and a file trained at the last token reads as before.
#[test]
fn a_subject_position_gate_reads_the_subject_s_last_token() {
    let (_d, _p, m) = setup();
    let a = m.tokenizer.encode("the cat sat on the mat").unwrap();
    let b = m
        .tokenizer
        .encode("hello there, old friend of mine")
        .unwrap();
    let raw = |ids: &[u32], t: usize| site_probe(1, 0.0).score(&resid_at(&m, ids, t));
    // The threshold between a's scores at token 1 and at its last token.
    let (s1, slast) = (raw(&a, 1), raw(&a, a.len() - 1));
    assert_ne!(s1, slast);
    let mut pf = probe_file(&m, -(s1 + slast) / 2.0);
    pf.target = Target::Relevant;
    pf.positions = ctxsteer::capture::PosMode::SubjectLast;
    let gate = steer::Gate::from_probes(&pf, &SiteRef::Best, tiny::LAYERS).unwrap();
    assert_eq!(gate.at, ctxsteer::capture::PosMode::SubjectLast);
    let prompts = [a.clone(), b.clone()];
    let at_subject = gate.rows_at(&m, &prompts, &[Some(1), Some(2)]).unwrap();
    let b_at_2 = raw(&b, 2) > (s1 + slast) / 2.0;
    assert_eq!(at_subject, vec![s1 > slast, b_at_2]);
    let at_last = gate.rows_at(&m, &prompts, &[None, None]).unwrap();
    assert_eq!(at_last[0], slast > s1);
    assert_eq!(gate.rows(&m, &prompts).unwrap(), at_last);
    // Through a gated plan: the rows steered are the rows the gate fires on.
    let heads = steer::scale_heads_spec("0.1=3", tiny::LAYERS, tiny::HEADS).unwrap();
    let gated = steer::Gated {
        gate: gate.clone(),
        inner: Box::new(heads),
    };
    let plans = steer::Plans(vec![Box::new(gated)]);
    // Only a plan with such a gate asks its callers for the subjects' positions.
    assert!(plans.reads_subjects());
    let last = steer::Gated {
        gate: steer::Gate {
            at: ctxsteer::capture::PosMode::Last,
            ..gate.clone()
        },
        inner: Box::new(Spec::new()),
    };
    assert!(!last.reads_subjects());
    let spec = plans
        .spec_for_subjects(&m, &prompts, &[Some(1), Some(2)])
        .unwrap();
    let fired: Vec<usize> = (0..2).filter(|r| at_subject[*r]).collect();
    match fired.is_empty() {
        true => assert!(spec.is_empty()),
        false => assert_eq!(spec.interventions[0].rows, Some(fired)),
    }
    // Recorded in the file: absent for the last token (files as before), there otherwise.
    let json = serde_json::to_value(&pf).unwrap();
    assert_eq!(json["positions"], "subject_last");
    let back: ProbeFile = serde_json::from_value(json).unwrap();
    assert_eq!(back.positions, ctxsteer::capture::PosMode::SubjectLast);
    pf.positions = ctxsteer::capture::PosMode::Last;
    let mut json = serde_json::to_value(&pf).unwrap();
    assert!(json.get("positions").is_none());
    json.as_object_mut().unwrap().remove("positions");
    let back: ProbeFile = serde_json::from_value(json).unwrap();
    assert_eq!(back.positions, ctxsteer::capture::PosMode::Last);
    pf.positions = ctxsteer::capture::PosMode::Mean;
    let e = steer::Gate::from_probes(&pf, &SiteRef::Best, tiny::LAYERS).unwrap_err();
    assert!(e.to_string().contains("reads one token"), "{e}");
}
