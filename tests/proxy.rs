//! Proxy-tuning in `generate`: logits = model + alpha * (expert - base), on tiny organisms.

use ctxsteer::organism::{self, WorldOptions};
use std::path::{Path, PathBuf};

fn world(dir: &Path, seed: u64) -> PathBuf {
    let w = dir.join(format!("w{seed}"));
    let o = WorldOptions {
        subjects: 12,
        relations: 1,
        objects: 4,
        schedule: "16".into(),
        filler: 0.1,
        seed,
        ..Default::default()
    };
    organism::build(&o, &w).unwrap();
    w
}

fn train(world: &Path, out: &Path, steps: usize, seed: u64) {
    let opts = organism::TrainOptions {
        layers: 1,
        d_model: 32,
        heads: 2,
        d_mlp: 64,
        steps,
        batch: 8,
        seq: 24,
        lr: 1e-2,
        warmup: 10,
        seed,
        ..Default::default()
    };
    organism::train(world, out, &opts, false, &mut |_| Ok(())).unwrap();
}

/// The token ids `generate --json` gives with `extra` arguments.
fn tokens(model: &Path, extra: &[&std::ffi::OsStr]) -> Vec<u64> {
    let out = assert_cmd::Command::cargo_bin("ctxsteer")
        .unwrap()
        .args(["generate", "--json", "--max-tokens", "8", "--model"])
        .arg(model)
        .args(extra)
        .assert()
        .success();
    let v: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    v["token_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_u64().unwrap())
        .collect()
}

#[test]
fn proxy_tuning_adds_the_experts_shift() {
    let dir = tempfile::tempdir().unwrap();
    let w = world(dir.path(), 0);
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    train(&w, &a, 200, 0);
    train(&w, &b, 8, 1);
    let text = std::fs::read_to_string(w.join("facts.jsonl")).unwrap();
    let fact: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    let prompt = format!("{} lives in", fact["subject"].as_str().unwrap());
    let p = std::ffi::OsStr::new;
    let gen = |m: &Path, extra: &[&std::ffi::OsStr]| {
        let mut args = vec![p("--prompt"), p(&prompt)];
        args.extend_from_slice(extra);
        tokens(m, &args)
    };
    let plain_a = gen(&a, &[]);
    let plain_b = gen(&b, &[]);
    assert_ne!(
        plain_a, plain_b,
        "the two models should differ for this test to mean anything"
    );
    // expert = base: no shift, the model's own tokens, whatever alpha.
    let same = gen(
        &a,
        &[
            p("--proxy-expert"),
            b.as_os_str(),
            p("--proxy-base"),
            b.as_os_str(),
            p("--proxy-alpha"),
            p("3"),
        ],
    );
    assert_eq!(same, plain_a);
    // base = the model, alpha 1: the expert's logits, so the expert's tokens.
    let to_b = gen(
        &a,
        &[
            p("--proxy-expert"),
            b.as_os_str(),
            p("--proxy-base"),
            a.as_os_str(),
        ],
    );
    assert_eq!(to_b, plain_b);
    // alpha 0: the model alone.
    let off = gen(
        &a,
        &[
            p("--proxy-expert"),
            b.as_os_str(),
            p("--proxy-base"),
            a.as_os_str(),
            p("--proxy-alpha"),
            p("0"),
        ],
    );
    assert_eq!(off, plain_a);
}

#[test]
fn proxy_tuning_refuses_another_tokenizer_and_a_lone_expert() {
    let dir = tempfile::tempdir().unwrap();
    let (w0, w1) = (world(dir.path(), 0), world(dir.path(), 1));
    let (a, c) = (dir.path().join("a"), dir.path().join("c"));
    train(&w0, &a, 5, 0);
    train(&w1, &c, 5, 0);
    let run = |extra: &[&Path], flags: &[&str]| {
        let mut cmd = assert_cmd::Command::cargo_bin("ctxsteer").unwrap();
        cmd.args(["generate", "--prompt", "a", "--max-tokens", "2", "--model"])
            .arg(&a);
        for (f, p) in flags.iter().zip(extra) {
            cmd.arg(f).arg(p);
        }
        let out = cmd.assert().failure();
        String::from_utf8_lossy(&out.get_output().stderr).into_owned()
    };
    let e = run(&[&c, &a], &["--proxy-expert", "--proxy-base"]);
    assert!(e.contains("does not share the model's tokenizer"), "{e}");
    let e = run(&[&a], &["--proxy-expert"]);
    assert!(e.contains("--proxy-base"), "{e}");
}

/// Proxy-tuning in `label` (the library's `LabelOptions::proxy`): with the expert as its own
/// base the labels are the model's own (scores to rounding); with the model as the base and alpha 1
/// the logits are the expert's, so greedy answers are the expert's and scores agree closely;
/// with CAD as well it is an error.
#[test]
fn proxy_tuning_in_label_shifts_the_model_by_the_expert() {
    use ctxsteer::label::{label_items, LabelOptions};
    use ctxsteer::{Model, WeightsMode};
    use std::sync::Arc;
    let dir = tempfile::tempdir().unwrap();
    let w = world(dir.path(), 0);
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    train(&w, &a, 200, 0);
    train(&w, &b, 8, 1);
    let load = |p: &Path| Model::load(p, WeightsMode::F32).unwrap();
    let (ma, mb) = (load(&a), load(&b));
    let (items, _) = ctxsteer::data::read_jsonl(&w.join("conflicts.jsonl"), false).unwrap();
    let items = &items[..6];
    let none = ctxsteer::Spec::new();
    let label = |m: &Model, proxy: Option<(&Path, &Path, f32)>| {
        let mut o = LabelOptions::new(ctxsteer::data::Form::Completion);
        o.proxy = proxy.map(|(e, base, alpha)| ctxsteer::proxy::Proxy {
            expert: Arc::new(load(e)),
            base: Arc::new(load(base)),
            alpha,
        });
        label_items(m, items, &o, &none, &mut |_| Ok(())).unwrap()
    };
    let plain_a = label(&ma, None);
    let plain_b = label(&mb, None);
    let text = |l: &[ctxsteer::label::ItemLabel]| -> Vec<String> {
        l.iter()
            .flat_map(|x| [x.closed.greedy.clone(), x.context.greedy.clone()])
            .collect()
    };
    assert_ne!(
        text(&plain_a),
        text(&plain_b),
        "the two models should differ"
    );
    // Scores agree to rounding: the combined passes take their log-softmax on the CPU.
    let close = |x: &[ctxsteer::label::ItemLabel], y: &[ctxsteer::label::ItemLabel], tol: f32| {
        assert_eq!(text(x), text(y));
        for (x, y) in x.iter().zip(y) {
            assert_eq!((x.known, x.label), (y.known, y.label));
            for (p, q) in [(&x.closed, &y.closed), (&x.context, &y.context)] {
                assert!((p.logp_prior - q.logp_prior).abs() < tol, "{p:?} {q:?}");
                assert!((p.logp_context - q.logp_context).abs() < tol, "{p:?} {q:?}");
            }
        }
    };
    close(&label(&ma, Some((&b, &b, 3.0))), &plain_a, 1e-5);
    close(&label(&ma, Some((&b, &a, 1.0))), &plain_b, 1e-3);
    let mut o = LabelOptions::new(ctxsteer::data::Form::Completion);
    o.cad = Some(ctxsteer::generate::CadWeight::Fixed(1.0));
    o.proxy = Some(ctxsteer::proxy::Proxy {
        expert: Arc::new(load(&b)),
        base: Arc::new(load(&a)),
        alpha: 1.0,
    });
    let e = label_items(&ma, items, &o, &none, &mut |_| Ok(()))
        .err()
        .unwrap();
    assert!(e.to_string().contains("do not combine"), "{e}");
}

/// The `proxy` method in `bench conflict`: its sweep tries three weights; with the expert as its
/// own base every setting is the model alone (answers, and perplexity to rounding); with the
/// model as the base, weight 1 is the expert. Without proxy models the method is refused.
#[test]
fn the_proxy_method_in_bench_is_the_model_shifted_by_the_expert() {
    use ctxsteer::bench::{self, Method, Resources};
    use ctxsteer::{Model, WeightsMode};
    use std::sync::Arc;
    let dir = tempfile::tempdir().unwrap();
    let w = world(dir.path(), 0);
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    train(&w, &a, 200, 0);
    train(&w, &b, 8, 1);
    let load = |p: &Path| Arc::new(Model::load(p, WeightsMode::F32).unwrap());
    let (ma, mb) = (load(&a), load(&b));
    let (items, _) = ctxsteer::data::read_jsonl(&w.join("conflicts.jsonl"), false).unwrap();
    let res = |expert: &Arc<Model>, base: &Arc<Model>| Resources {
        probes: None,
        heads: vec![],
        context_heads: vec![],
        gate: None,
        relevance: None,
        max_new: None,
        head_probes: None,
        reft: vec![],
        proxy: Some(ctxsteer::proxy::Proxy {
            expert: expert.clone(),
            base: base.clone(),
            alpha: 1.0,
        }),
    };
    let form = ctxsteer::data::Form::Completion;
    let same = res(&mb, &mb);
    let grid = bench::grid(&ma, Method::Proxy, &same).unwrap();
    assert_eq!(grid.len(), 3);
    let none = bench::evaluate(&ma, &bench::Setting::none(), &items, &items, form, 4).unwrap();
    for s in &grid {
        let e = bench::evaluate(&ma, s, &items, &items, form, 4).unwrap();
        assert_eq!(e.adherent, none.adherent, "{}", s.label);
        assert!(
            (e.perplexity / none.perplexity - 1.0).abs() < 1e-4,
            "{}",
            s.label
        );
    }
    // Base = the model, weight 1: the expert's own answers and perplexity.
    let to_b = bench::grid(&ma, Method::Proxy, &res(&mb, &ma)).unwrap();
    let one = to_b.iter().find(|s| s.strength == Some(1.0)).unwrap();
    let e = bench::evaluate(&ma, one, &items, &items, form, 4).unwrap();
    let expert = bench::evaluate(&mb, &bench::Setting::none(), &items, &items, form, 4).unwrap();
    assert_eq!(e.adherent, expert.adherent);
    assert!((e.perplexity / expert.perplexity - 1.0).abs() < 1e-3);
    let bare = Resources {
        proxy: None,
        ..same
    };
    let err = bench::grid(&ma, Method::Proxy, &bare)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("--proxy-expert"), "{err}");
}
