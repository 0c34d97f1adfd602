//! Learned low-rank interventions (LoReFT) on the tiny model: the edit's formula, the identity,
//! positions, KV-cached generation, gradients against finite differences, training, and the
//! file round trip.

mod common;
use candle_core::{Device, Tensor, Var};
use ctxsteer::data::{Form, Item, Split};
use ctxsteer::generate::{generate, GenOptions};
use ctxsteer::hooks::LowRank;
use ctxsteer::model::{Batch, LogitsAt};
use ctxsteer::reft::{Reft, TrainEvent, TrainOptions};
use ctxsteer::{Action, Intervention, Model, Positions, Site, Spec, WeightsMode};

fn tiny(mode: WeightsMode) -> (tempfile::TempDir, Model) {
    let (dir, path) = common::tiny::temp();
    (dir, Model::load(&path, mode).unwrap())
}

/// A seeded `[rows, cols]` matrix of values in [-scale, scale].
fn mat(rows: usize, cols: usize, seed: f32, scale: f32) -> Vec<f32> {
    (0..rows * cols)
        .map(|i| ((i as f32 * 0.7131 + seed).sin()) * scale)
        .collect()
}

fn edit(d: usize, rank: usize, seed: f32) -> LowRank {
    strong_edit(d, rank, seed, 0.5)
}

fn strong_edit(d: usize, rank: usize, seed: f32, b_scale: f32) -> LowRank {
    let t = |v: Vec<f32>, shape: (usize, usize)| Tensor::from_vec(v, shape, &Device::Cpu).unwrap();
    let b = Tensor::from_vec(mat(1, rank, seed + 3.0, b_scale), rank, &Device::Cpu).unwrap();
    LowRank::new(
        t(mat(rank, d, seed, 0.3), (rank, d)),
        t(mat(rank, d, seed + 1.0, 0.3), (rank, d)),
        b,
    )
    .unwrap()
}

fn logits(m: &Model, ids: &[u32], spec: &Spec) -> Vec<f32> {
    let (l, _) = m.run(&Batch::single(ids), spec, LogitsAt::All).unwrap();
    l.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

fn at(site: Site, positions: Positions, e: LowRank) -> Intervention {
    Intervention::new(site, positions, Action::LowRank(e))
}

#[test]
fn the_edit_is_h_plus_r_transposed_times_wh_plus_b_minus_rh() {
    let (_d, m) = tiny(WeightsMode::F32);
    let ids = m.tokenizer.encode("the cat sat on the mat").unwrap();
    let d = m.cfg().d_model;
    let site = Site::resid_post(1);
    let e = edit(d, 3, 0.4);
    let spec = Spec::new()
        .with(Intervention::new(site, Positions::All, Action::Capture))
        .with(at(site, Positions::All, e.clone()))
        .with(Intervention::new(site, Positions::All, Action::Capture));
    let (_, caps) = m.run(&Batch::single(&ids), &spec, LogitsAt::Last).unwrap();
    let v = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let (r, w, b) = (v(&e.r), v(&e.w), v(&e.b));
    for pos in 0..ids.len() {
        let rows: Vec<&[f32]> = caps
            .rows(site)
            .iter()
            .filter(|c| c.pos == pos)
            .map(|c| c.values.as_slice())
            .collect();
        let (h, after) = (rows[0], rows[1]);
        let mut want = h.to_vec();
        for k in 0..3 {
            let dot = |m: &[f32]| (0..d).map(|j| m[k * d + j] * h[j]).sum::<f32>();
            let coef = dot(&w) + b[k] - dot(&r);
            for j in 0..d {
                want[j] += coef * r[k * d + j];
            }
        }
        assert!(common::max_abs_diff(after, &want) < 1e-4, "position {pos}");
        assert!(
            common::max_abs_diff(after, h) > 1e-3,
            "the edit changes position {pos}"
        );
    }
}

#[test]
fn w_equal_to_r_and_zero_bias_is_bit_identical() {
    let (_d, m) = tiny(WeightsMode::F32);
    let ids = m.tokenizer.encode("the cat sat").unwrap();
    let e = edit(m.cfg().d_model, 2, 1.0);
    let id = LowRank::new(e.r.clone(), e.r.clone(), e.b.zeros_like().unwrap()).unwrap();
    let spec = Spec::new().with(at(Site::resid_post(0), Positions::All, id));
    assert_eq!(logits(&m, &ids, &spec), logits(&m, &ids, &Spec::new()));
}

#[test]
fn positions_limit_the_edit_and_cached_generation_equals_recompute() {
    let (_d, m) = tiny(WeightsMode::F32);
    let ids = m.tokenizer.encode("the cat sat on").unwrap();
    let n = ids.len();
    let vocab = m.cfg().vocab_size;
    let e = edit(m.cfg().d_model, 2, 2.0);
    let last = Spec::new().with(at(Site::resid_post(0), Positions::Last, e.clone()));
    let (plain, edited) = (logits(&m, &ids, &Spec::new()), logits(&m, &ids, &last));
    assert_eq!(plain[..(n - 1) * vocab], edited[..(n - 1) * vocab]);
    assert!(common::max_abs_diff(&plain[(n - 1) * vocab..], &edited[(n - 1) * vocab..]) > 1e-4);

    // Generation with the KV cache against recomputing the whole sequence at each step.
    let strong = strong_edit(m.cfg().d_model, 2, 2.0, 8.0);
    let all = Spec::new().with(at(Site::resid_post(1), Positions::All, strong));
    let opts = GenOptions {
        max_tokens: 6,
        ..Default::default()
    };
    let g = generate(&m, &ids, &all, &opts, &mut |_| Ok(())).unwrap();
    let mut seq = ids.clone();
    for want in &g.ids {
        let l = m.last_logits(&seq, &all).unwrap();
        assert_eq!(ctxsteer::generate::argmax(&l), *want);
        seq.push(*want);
    }
    assert_ne!(
        g.ids,
        generate(&m, &ids, &Spec::new(), &opts, &mut |_| Ok(()))
            .unwrap()
            .ids,
        "the edit changes the greedy tokens"
    );
}

/// The loss of the last position's log-probability of token 5, as a function of the edit.
fn loss(m: &Model, ids: &[u32], e: LowRank) -> Tensor {
    let spec = Spec::new().with(at(Site::resid_post(0), Positions::All, e));
    let (l, _) = m.run(&Batch::single(ids), &spec, LogitsAt::Last).unwrap();
    let lp = candle_nn::ops::log_softmax(&l.flatten_all().unwrap(), 0).unwrap();
    lp.narrow(0, 5, 1).unwrap().sum_all().unwrap()
}

#[test]
fn gradients_through_the_forward_match_finite_differences() {
    let (_d, m) = tiny(WeightsMode::F32);
    let ids = m.tokenizer.encode("the cat sat on the").unwrap();
    let e = edit(m.cfg().d_model, 2, 0.3);
    // The tracked forward (differentiable norms, softmax and rope) equals the fused one.
    let b = Var::from_tensor(&e.b).unwrap();
    let tracked = LowRank {
        b: b.as_tensor().clone(),
        ..e.clone()
    };
    let (lt, lf) = (loss(&m, &ids, tracked.clone()), loss(&m, &ids, e.clone()));
    let (lt, lf) = (
        lt.to_scalar::<f32>().unwrap(),
        lf.to_scalar::<f32>().unwrap(),
    );
    assert!((lt - lf).abs() < 1e-4, "tracked {lt} vs fused {lf}");

    let grads = loss(&m, &ids, tracked).backward().unwrap();
    let g = grads.get(b.as_tensor()).expect("b has a gradient");
    let g = g.to_vec1::<f32>().unwrap();
    let eps = 1e-2f32;
    for (k, gk) in g.iter().enumerate() {
        let shifted = |s: f32| {
            let mut v = e.b.to_vec1::<f32>().unwrap();
            v[k] += s;
            let bb = Tensor::from_vec(v, e.b.dims(), &Device::Cpu).unwrap();
            let ek = LowRank::new(e.r.clone(), e.w.clone(), bb).unwrap();
            loss(&m, &ids, ek).to_scalar::<f32>().unwrap()
        };
        let fd = (shifted(eps) - shifted(-eps)) / (2.0 * eps);
        assert!(gk.abs() > 1e-5, "gradient {k} is not zero");
        assert!(
            (fd - gk).abs() < 2e-2 * (1.0 + fd.abs()),
            "b[{k}]: {gk} vs {fd}"
        );
    }
}

/// Rank 2, batch 2, completion form, keep weight 1.
fn train_opts(layers: [usize; 1], epochs: usize, lr: f64, seed: u64) -> TrainOptions {
    TrainOptions {
        layers: layers.to_vec(),
        rank: 2,
        epochs,
        lr,
        batch: 2,
        forms: vec![Form::Completion],
        keep_weight: 1.0,
        seed,
        irrelevant: 0,
    }
}

fn items() -> Vec<Item> {
    [
        "the cat",
        "a red hat",
        "the sea",
        "old rope",
        "the tea pot",
        "a big dog",
    ]
    .iter()
    .enumerate()
    .map(|(i, s)| Item {
        id: format!("t{i}"),
        relation: "r".into(),
        subject: s.to_string(),
        question: format!("where is {s}?"),
        prompt: format!("{s} sat on the"),
        context: format!("{s} sat on the mat."),
        prior_answer: "hat".into(),
        context_answer: "mat".into(),
        prior_aliases: vec![],
        context_aliases: vec![],
        split: Some(Split::Train),
        variant: None,
        distractor: None,
        true_context: None,
        prefix: String::new(),
        exposure: None,
    })
    .collect()
}

#[test]
fn training_lowers_the_answer_loss_and_the_file_round_trips() {
    let (_d, m) = tiny(WeightsMode::F32);
    let opts = train_opts([1], 6, 2e-2, 7);
    let neutral = vec!["the tea is hot and the sea is cold".to_string()];
    let mut steps = 0;
    let reft = ctxsteer::reft::train(&m, &items(), &neutral, &opts, &mut |e| {
        if let TrainEvent::Step = e {
            steps += 1
        }
    })
    .unwrap();
    let l = &reft.meta.train.losses;
    assert_eq!(l.len(), 6);
    assert!(l[5].0 < 0.8 * l[0].0, "answer loss {:?}", l);
    assert_eq!(steps, reft.meta.train.steps);
    assert_eq!(
        reft.meta.train.true_contexts, 6,
        "every context names its answer"
    );

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("edit.safetensors");
    reft.save(&path).unwrap();
    let back = Reft::load(&path, &m).unwrap();
    let ids = m
        .tokenizer
        .encode("the cat sat on the mat. the cat sat on the")
        .unwrap();
    assert_eq!(
        logits(&m, &ids, &back.spec()),
        logits(&m, &ids, &reft.spec())
    );
    assert_eq!(
        back.meta.sites,
        vec!["blocks.1.hook_resid_post".to_string()]
    );

    // Another model's edit is refused, naming both models.
    let mut other = back.clone();
    other.meta.model.sha256 = "0".repeat(64);
    other.save(&path).unwrap();
    let err = Reft::load(&path, &m).unwrap_err().to_string();
    assert!(err.contains("not for the loaded model"), "{err}");
}

#[test]
fn irrelevant_contexts_join_the_answer_sequences_with_the_closed_book_answer() {
    let (_d, m) = tiny(WeightsMode::F32);
    let its = items();
    // What the unedited model answers closed-book: the target after an irrelevant context.
    let opts = ctxsteer::label::LabelOptions::new(Form::Completion);
    let closed = ctxsteer::label::runs(
        &m,
        &its,
        &opts,
        &ctxsteer::Spec::new(),
        false,
        None,
        &mut |_| {},
    )
    .unwrap();
    let answered = closed
        .iter()
        .filter(|r| !ctxsteer::label::answer_span(&r.greedy).trim().is_empty())
        .count();
    let train = |irrelevant: usize| {
        let o = TrainOptions {
            irrelevant,
            ..train_opts([0], 1, 1e-2, 1)
        };
        ctxsteer::reft::train(&m, &its, &[], &o, &mut |_| {})
            .unwrap()
            .meta
            .train
    };
    assert!(answered > 0, "the tiny model answers some queries");
    let (without, with) = (train(0), train(1));
    assert_eq!(without.irrelevant, 0);
    // Each item's query after another subject's counterfactual ("… sat on the mat."): the true
    // sentences all name "hat", every item's own answer, so they never qualify.
    assert_eq!(with.irrelevant, answered);
    // They are answer sequences: 6 conflicts and 6 true contexts, 4 a step.
    assert_eq!(without.steps, 3);
    assert_eq!(with.steps, (12 + answered).div_ceil(4));
}

#[test]
fn bench_sweeps_the_trained_edits_on_dev() {
    use ctxsteer::bench::{self, Method, Resources};
    let (_d, m) = tiny(WeightsMode::F32);
    let opts = train_opts([0], 1, 1e-2, 1);
    let a = ctxsteer::reft::train(&m, &items(), &[], &opts, &mut |_| {}).unwrap();
    let b = ctxsteer::reft::train(
        &m,
        &items(),
        &[],
        &TrainOptions { seed: 2, ..opts },
        &mut |_| {},
    )
    .unwrap();
    let mut its = items();
    for (i, it) in its.iter_mut().enumerate() {
        it.split = Some(if i < 3 { Split::Dev } else { Split::Test });
    }
    let res = Resources {
        probes: None,
        heads: vec![],
        context_heads: vec![],
        gate: None,
        relevance: None,
        proxy: None,
        max_new: None,
        head_probes: None,
        reft: vec![a, b],
    };
    let out = bench::run(
        &m,
        &its,
        &[Method::Reft],
        &res,
        Form::Completion,
        4,
        &mut |_| {},
    );
    let out = out.unwrap().methods;
    assert_eq!(out[0].sweep.len(), 2, "two edits: the dev sweep chooses");
    assert!(out[0]
        .chosen
        .starts_with("LoReFT rank 2 at blocks.0.hook_resid_post (#"));
    assert_ne!(out[0].sweep[0].setting, out[0].sweep[1].setting);
    let none = Resources {
        reft: vec![],
        ..res
    };
    let err = bench::run(
        &m,
        &its,
        &[Method::Reft],
        &none,
        Form::Completion,
        4,
        &mut |_| {},
    );
    assert!(err.is_err());
}

#[test]
fn training_refuses_quantized_weights_and_bad_settings() {
    let (_d, m) = tiny(WeightsMode::Quantized);
    let opts = train_opts([0], 1, 1e-2, 0);
    let err = ctxsteer::reft::train(&m, &items(), &[], &opts, &mut |_| {}).unwrap_err();
    assert!(err.to_string().contains("f32"), "{err}");
    let (_d2, m) = tiny(WeightsMode::F32);
    for bad in [
        TrainOptions {
            layers: vec![99],
            ..opts.clone()
        },
        TrainOptions {
            lr: f64::NAN,
            ..opts.clone()
        },
        TrainOptions {
            rank: 0,
            ..opts.clone()
        },
    ] {
        assert!(ctxsteer::reft::train(&m, &items(), &[], &bad, &mut |_| {}).is_err());
    }
}

#[test]
fn reft_gated_is_reft_where_the_gate_fires_and_none_where_it_does_not() {
    use ctxsteer::bench::{self, Eval, Method, Resources};
    use ctxsteer::probe::{Metrics, SiteProbe, Target};
    let (_d, m) = tiny(WeightsMode::F32);
    let edit = ctxsteer::reft::train(&m, &items(), &[], &train_opts([0], 1, 1e-2, 1), &mut |_| {})
        .unwrap();
    let mut its = items();
    for (i, it) in its.iter_mut().enumerate() {
        it.split = Some(if i < 3 { Split::Dev } else { Split::Test });
    }
    // A conflict gate whose bias decides alone: it fires on every prompt, or on none.
    let gate = |bias: f32| {
        let site = SiteProbe {
            site: "blocks.1.hook_resid_post".into(),
            weights: vec![0.0; common::tiny::D_MODEL],
            bias,
            mean: vec![0.0; common::tiny::D_MODEL],
            std: vec![1.0; common::tiny::D_MODEL],
            alpha: None,
            directions: Default::default(),
            spread: Default::default(),
            cosines: Default::default(),
            metrics: Metrics::default(),
        };
        common::probe_file_of(&m, Target::Conflict, vec![site])
    };
    let run = |method: Method, bias: f32| -> Eval {
        let res = Resources {
            probes: None,
            heads: vec![],
            context_heads: vec![],
            gate: Some(gate(bias)),
            relevance: None,
            proxy: None,
            max_new: None,
            head_probes: None,
            reft: vec![edit.clone()],
        };
        let out = bench::run(&m, &its, &[method], &res, Form::Completion, 4, &mut |_| {});
        out.unwrap().methods.remove(0).test
    };
    let key = |e: &Eval| {
        (
            e.adherence.value,
            e.tf_adherence.value,
            e.retention.value,
            e.perplexity,
        )
    };
    let (reft, none) = (run(Method::Reft, 0.0), run(Method::None, 0.0));
    assert_ne!(key(&reft), key(&none), "the edit changes something");
    // A gate that always fires gives the edit (the sweep may choose it at 2x: see
    // reft_gated_sweeps_scales_and_a_second_gate_that_must_also_fire); one that never fires,
    // none at every setting.
    assert_ne!(key(&run(Method::ReftGated, 100.0)), key(&none));
    assert_eq!(key(&run(Method::ReftGated, -100.0)), key(&none));
}

/// The gated sweep tries the edit at its trained size and at twice it, behind the conflict gate;
/// given a `relevant` probe as well, behind both gates: where the relevance gate never fires
/// every setting is none, whatever the conflict gate says.
#[test]
fn reft_gated_sweeps_scales_and_a_second_gate_that_must_also_fire() {
    use ctxsteer::bench::{self, Method, Params, Resources};
    use ctxsteer::probe::{Metrics, SiteProbe, Target};
    let (_d, m) = tiny(WeightsMode::F32);
    let edit = ctxsteer::reft::train(&m, &items(), &[], &train_opts([0], 1, 1e-2, 1), &mut |_| {})
        .unwrap();
    let probe = |target: Target, bias: f32| {
        let site = SiteProbe {
            site: "blocks.1.hook_resid_post".into(),
            weights: vec![0.0; common::tiny::D_MODEL],
            bias,
            mean: vec![0.0; common::tiny::D_MODEL],
            std: vec![1.0; common::tiny::D_MODEL],
            alpha: None,
            directions: Default::default(),
            spread: Default::default(),
            cosines: Default::default(),
            metrics: Metrics::default(),
        };
        common::probe_file_of(&m, target, vec![site])
    };
    let conflict_only = Resources {
        probes: None,
        heads: vec![],
        context_heads: vec![],
        gate: Some(probe(Target::Conflict, 100.0)),
        relevance: None,
        proxy: None,
        max_new: None,
        head_probes: None,
        reft: vec![edit.clone()],
    };
    let both = Resources {
        relevance: Some(probe(Target::Relevant, -100.0)),
        proxy: None,
        ..conflict_only.clone()
    };
    let its = items();
    let eval = |s: &bench::Setting| {
        let e = bench::evaluate(&m, s, &its, &its, Form::Completion, 4).unwrap();
        (e.adherence.value, e.tf_adherence.value, e.perplexity)
    };
    let plain = |e: Box<dyn ctxsteer::steer::Plan>, method| bench::Setting {
        method,
        strength: None,
        params: Params::Cad { beta: 0.0 },
        label: "x".into(),
        plan: e,
        cad: None,
        instruct: false,
        proxy: None,
    };
    let none = eval(&plain(Box::new(ctxsteer::Spec::new()), Method::None));
    let reft = eval(&plain(Box::new(edit.clone()), Method::Reft));
    assert_ne!(none, reft);
    let one = bench::grid(&m, Method::ReftGated, &conflict_only).unwrap();
    let two = bench::grid(&m, Method::ReftGated, &both).unwrap();
    assert_eq!((one.len(), two.len()), (6, 6), "3 margins x 2 scales");
    let mut keys = std::collections::BTreeSet::new();
    for s in one.iter().chain(&two) {
        let Params::Reft {
            scale, relevance, ..
        } = &s.params
        else {
            panic!("{:?}", s.params)
        };
        assert!(
            keys.insert(bench::setting_key(s.method, &s.params)),
            "{}",
            s.label
        );
        match (relevance.is_some(), scale) {
            (true, _) => {
                assert_eq!(eval(s), none, "{}", s.label);
                assert!(s.label.ends_with("and the relevance gate"), "{}", s.label);
            }
            (false, None) => assert_eq!(eval(s), reft, "{}", s.label),
            (false, Some(k)) => {
                assert_eq!(*k, 2.0);
                assert_ne!(eval(s), reft, "{}", s.label);
            }
        }
    }
    assert!(two.iter().all(|s| matches!(
        &s.params,
        Params::Reft {
            relevance: Some(_),
            ..
        }
    )));
}
