//! Invariants of the forward pass and its hooks, on a tiny random-weight model that the test
//! writes as GGUF (no download).

mod common;
use common::tiny;
use ctxsteer::generate::{generate, GenOptions};
use ctxsteer::hooks::Hooks;
use ctxsteer::model::{Batch, KvCache, LogitsAt};
use ctxsteer::{Action, Intervention, Model, Positions, Site, SiteKind, Spec, WeightsMode};

fn load(mode: WeightsMode) -> (tempfile::TempDir, Model) {
    let (dir, path) = tiny::temp();
    let m = Model::load(&path, mode).expect("tiny model loads");
    (dir, m)
}

const PROMPT: &str = "the cat sat on the mat";

fn logits(m: &Model, ids: &[u32], spec: &Spec) -> Vec<f32> {
    let (l, _) = m.run(&Batch::single(ids), spec, LogitsAt::All).unwrap();
    l.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

fn steer_vec(n: usize, seed: f32) -> Vec<f32> {
    (0..n)
        .map(|i| ((i as f32 * 0.37 + seed).sin()) * 0.5)
        .collect()
}

#[test]
fn gguf_written_by_candle_loads_back_with_its_config() {
    for mode in [WeightsMode::Quantized, WeightsMode::F32] {
        let (_d, m) = load(mode);
        let c = m.cfg();
        assert_eq!(
            (
                c.n_layers,
                c.d_model,
                c.n_heads,
                c.n_kv_heads,
                c.d_mlp,
                c.d_head
            ),
            (
                tiny::LAYERS,
                tiny::D_MODEL,
                tiny::HEADS,
                tiny::KV_HEADS,
                tiny::D_MLP,
                16
            )
        );
        assert_eq!(c.vocab_size, tiny::tokens().len());
        // Byte-level BPE from the metadata: " t" merges, "he" merges, the rest are bytes.
        let ids = m.tokenizer.encode("the t").unwrap();
        let toks: Vec<String> = ids
            .iter()
            .map(|i| tiny::tokens()[*i as usize].clone())
            .collect();
        assert_eq!(toks, ["t", "he", "Ġt"]);
        assert_eq!(m.tokenizer.decode(&ids).unwrap(), "the t");
    }
}

#[test]
fn empty_spec_is_bit_identical_to_a_capture_everything_run() {
    let (_d, m) = load(WeightsMode::Quantized);
    let ids = m.tokenizer.encode(PROMPT).unwrap();
    let plain = logits(&m, &ids, &Spec::new());
    let all = Spec::capture(&Site::all(m.cfg().n_layers), Positions::All);
    let (l, caps) = m.run(&Batch::single(&ids), &all, LogitsAt::All).unwrap();
    assert_eq!(plain, l.flatten_all().unwrap().to_vec1::<f32>().unwrap());
    // Every site captured every position with its own width.
    for s in Site::all(m.cfg().n_layers) {
        let rows = caps.rows(s);
        assert_eq!(rows.len(), ids.len(), "{s}");
        assert_eq!(rows[0].values.len(), m.cfg().site_width(s), "{s}");
    }
}

/// Candle's reference model multiplies quantized weights with 8-bit activations, one row at a
/// time; ours does so too below 8 rows (decode, short prompts), through our own Q4_1 kernel
/// (llama.cpp's arithmetic). Longer prompts take dequantized tiles instead: see
/// `quantized_and_f32_paths_agree`.
#[test]
fn plain_forward_matches_candle_quantized_llama() {
    use candle_transformers::models::quantized_llama::ModelWeights;
    let (_d, path) = tiny::temp();
    let m = Model::load(&path, WeightsMode::Quantized).unwrap();
    let ids = m.tokenizer.encode(PROMPT).unwrap()[..5].to_vec();
    let ours = m.last_logits(&ids, &Spec::new()).unwrap();
    let mut f = std::fs::File::open(&path).unwrap();
    let ct = candle_core::quantized::gguf_file::Content::read(&mut f).unwrap();
    let mut theirs = ModelWeights::from_gguf(ct, &mut f, &candle_core::Device::Cpu).unwrap();
    let x = candle_core::Tensor::new(ids.as_slice(), &candle_core::Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let t = theirs
        .forward(&x, 0)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let d = common::max_abs_diff(&ours, &t);
    assert!(d < 1e-4, "max |dlogit| vs candle quantized_llama = {d}");
}

#[test]
fn replacing_each_site_with_its_own_values_is_the_identity() {
    let (_d, m) = load(WeightsMode::F32);
    let ids = m.tokenizer.encode(PROMPT).unwrap();
    let plain = logits(&m, &ids, &Spec::new());
    let sites = Site::all(m.cfg().n_layers);
    let (_, caps) = m
        .run(
            &Batch::single(&ids),
            &Spec::capture(&sites, Positions::All),
            LogitsAt::All,
        )
        .unwrap();
    for s in sites {
        let spec = Spec::new().with(Intervention::new(
            s,
            Positions::All,
            Action::Replace {
                values: caps.by_position(s, 0),
            },
        ));
        assert_eq!(logits(&m, &ids, &spec), plain, "replace at {s}");
    }
}

#[test]
fn adding_a_zero_vector_is_the_identity() {
    let (_d, m) = load(WeightsMode::Quantized);
    let ids = m.tokenizer.encode(PROMPT).unwrap();
    let plain = logits(&m, &ids, &Spec::new());
    let sites: Vec<Site> = (0..tiny::LAYERS).map(Site::resid_post).collect();
    let spec = ctxsteer::steer::add_spec(&sites, &vec![0.0; tiny::D_MODEL], 3.0, Positions::All);
    assert_eq!(logits(&m, &ids, &spec), plain);
    // And a non-zero vector does change them, so the comparison above can fail.
    let spec =
        ctxsteer::steer::add_spec(&sites, &steer_vec(tiny::D_MODEL, 0.0), 3.0, Positions::All);
    assert_ne!(logits(&m, &ids, &spec), plain);
}

fn gen(m: &Model, spec: &Spec, use_cache: bool) -> Vec<u32> {
    let ids = m.tokenizer.encode(PROMPT).unwrap();
    let opts = GenOptions {
        max_tokens: 12,
        stop_at_eos: false,
        use_cache,
        ..Default::default()
    };
    generate(m, &ids, spec, &opts, &mut |_| Ok(())).unwrap().ids
}

#[test]
fn kv_cached_generation_equals_full_recompute() {
    for mode in [WeightsMode::Quantized, WeightsMode::F32] {
        let (_d, m) = load(mode);
        let sites: Vec<Site> = (0..tiny::LAYERS).map(Site::resid_post).collect();
        let v = steer_vec(tiny::D_MODEL, 1.0);
        let specs = [
            ("none", Spec::new()),
            (
                "steer all",
                ctxsteer::steer::add_spec(&sites, &v, 4.0, Positions::All),
            ),
            (
                "steer generated",
                ctxsteer::steer::add_spec(&sites, &v, 4.0, Positions::Generated),
            ),
            (
                "steer last",
                ctxsteer::steer::add_spec(&sites, &v, 4.0, Positions::Last),
            ),
            (
                "steer answer",
                ctxsteer::steer::add_spec(&sites, &v, 4.0, Positions::Answer),
            ),
        ];
        let plain = gen(&m, &Spec::new(), true);
        for (name, spec) in &specs {
            let cached = gen(&m, spec, true);
            assert_eq!(cached, gen(&m, spec, false), "{mode:?} {name}");
            assert_eq!(cached.len(), 12);
            if *name == "steer answer" {
                // `answer` is `last` and `generated` together.
                let mut both = ctxsteer::steer::add_spec(&sites, &v, 4.0, Positions::Last);
                both.interventions.extend(
                    ctxsteer::steer::add_spec(&sites, &v, 4.0, Positions::Generated).interventions,
                );
                assert_eq!(
                    cached,
                    gen(&m, &both, true),
                    "{mode:?} answer = last + generated"
                );
            }
            if *name == "steer all" {
                assert_ne!(
                    cached, plain,
                    "{mode:?}: steering should change the tiny model's tokens"
                );
            }
        }
    }
}

/// Last-position logits of `ids` fed to `cache` in one forward call.
fn step(m: &Model, cache: &mut KvCache, ids: &[u32]) -> Vec<f32> {
    let spec = Spec::new();
    let mut hooks = Hooks::new(&spec, m.cfg().n_heads);
    let l = m
        .net
        .forward(&Batch::single(ids), Some(cache), &mut hooks, LogitsAt::Last)
        .unwrap();
    l.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

fn assert_close(a: &[f32], b: &[f32], what: &str) {
    let worst = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    assert!(worst < 1e-4, "{what}: logits differ by {worst}");
}

/// The KV cache is written in place, in buffers that grow: decoding 40 tokens one at a time
/// (past the room left after the prompt) gives the logits of one uncached run over the whole
/// sequence, and a cache truncated back to the prompt after other tokens continues as if they
/// had never been fed.
#[test]
fn kv_cache_grows_and_truncates_like_a_fresh_run() {
    let (_d, m) = load(WeightsMode::F32);
    let prompt = m.tokenizer.encode(PROMPT).unwrap();
    let more: Vec<u32> = (0..40).map(|i| 5 + (i * 7) % 50).collect();
    let mut all = prompt.clone();
    all.extend(&more);
    let full = logits(&m, &all, &Spec::new());
    let vocab = full.len() / all.len();
    let mut cache = KvCache::new(m.cfg().n_layers);
    step(&m, &mut cache, &prompt);
    for (i, t) in more.iter().enumerate() {
        let got = step(&m, &mut cache, &[*t]);
        let at = prompt.len() + i;
        assert_close(
            &got,
            &full[at * vocab..(at + 1) * vocab],
            &format!("token {i}"),
        );
    }
    assert_eq!(cache.len, all.len());

    let mut cache = KvCache::new(m.cfg().n_layers);
    step(&m, &mut cache, &prompt);
    step(&m, &mut cache, &more[..3]);
    cache.truncate(prompt.len());
    let after = step(&m, &mut cache, &more[3..4]);
    let mut fresh = KvCache::new(m.cfg().n_layers);
    step(&m, &mut fresh, &prompt);
    assert_eq!(after, step(&m, &mut fresh, &more[3..4]), "truncated cache");
}

#[test]
fn quantized_and_f32_paths_agree() {
    let (_d1, q) = load(WeightsMode::Quantized);
    let (_d2, f) = load(WeightsMode::F32);
    let ids = q.tokenizer.encode(PROMPT).unwrap();
    assert!(ids.len() >= 8, "the prompt must take the tiled path");
    // A prompt of 8 or more rows multiplies dequantized tiles of the quantized weights: the
    // same f32 weights the f32 path dequantized at load, so the logits agree to rounding.
    let (a, b) = (
        logits(&q, &ids, &Spec::new()),
        logits(&f, &ids, &Spec::new()),
    );
    let scale = b.iter().map(|x| x.abs()).fold(0.0, f32::max);
    let d = common::max_abs_diff(&a, &b);
    assert!(d < 1e-5 * scale, "max |dlogit| {d} vs max |logit| {scale}");
    // Fewer rows take 8-bit activations: within 3% of the largest logit.
    let short = &ids[..5];
    let (a, b) = (
        logits(&q, short, &Spec::new()),
        logits(&f, short, &Spec::new()),
    );
    let d = common::max_abs_diff(&a, &b);
    assert!(
        d > 0.0 && d < 0.03 * scale,
        "max |dlogit| {d} vs max |logit| {scale}"
    );
}

#[test]
fn left_padded_batch_matches_single_rows() {
    let (_d, m) = load(WeightsMode::F32);
    let rows = vec![
        m.tokenizer.encode(PROMPT).unwrap(),
        m.tokenizer.encode("hello there").unwrap(),
    ];
    let batch = Batch::left_padded(&rows, 0);
    let site = Site::resid_post(1);
    let spec = Spec::capture(&[site], Positions::Last);
    let (l, caps) = m.run(&batch, &spec, LogitsAt::Last).unwrap();
    let l = l.to_vec3::<f32>().unwrap();
    for (r, ids) in rows.iter().enumerate() {
        let (single, c1) = m.run(&Batch::single(ids), &spec, LogitsAt::Last).unwrap();
        let single = single.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert!(
            common::max_abs_diff(&l[r][0], &single) < 1e-4,
            "row {r} logits"
        );
        let a = caps
            .at(site, r, ids.len() - 1)
            .expect("batched capture at the row's last position");
        let b = c1.at(site, 0, ids.len() - 1).unwrap();
        assert!(common::max_abs_diff(a, b) < 1e-4, "row {r} capture");
    }
}

#[test]
fn clamp_project_out_and_heads_do_what_they_say() {
    let (_d, m) = load(WeightsMode::F32);
    let ids = m.tokenizer.encode(PROMPT).unwrap();
    let n = ids.len();
    let site = Site::resid_post(0);
    let u = steer_vec(tiny::D_MODEL, 2.0);
    let unit: Vec<f32> = {
        let norm = u.iter().map(|x| x * x).sum::<f32>().sqrt();
        u.iter().map(|x| x / norm).collect()
    };
    let proj = |v: &[f32]| v.iter().zip(&unit).map(|(a, b)| a * b).sum::<f32>();
    for (action, want) in [
        (
            Action::Clamp {
                direction: u.clone(),
                value: 2.5,
            },
            2.5,
        ),
        (
            Action::ProjectOut {
                direction: u.clone(),
            },
            0.0,
        ),
    ] {
        let spec = Spec::new()
            .with(Intervention::new(site, Positions::Last, action))
            .with(Intervention::new(site, Positions::All, Action::Capture));
        let (_, caps) = m.run(&Batch::single(&ids), &spec, LogitsAt::Last).unwrap();
        assert!((proj(caps.at(site, 0, n - 1).unwrap()) - want).abs() < 1e-4);
        // Other positions are untouched.
        assert!((proj(caps.at(site, 0, 0).unwrap()) - want).abs() > 1e-3);
    }
    // Zero-ablating head 2 of attn.hook_z zeroes that head's slice and only it.
    let z = Site::new(SiteKind::AttnZ, 1);
    let spec = Spec::new()
        .with(Intervention::new(z, Positions::All, Action::ZeroAblate).on_heads(vec![2]))
        .with(Intervention::new(z, Positions::All, Action::Capture));
    let (_, caps) = m.run(&Batch::single(&ids), &spec, LogitsAt::Last).unwrap();
    let row = caps.at(z, 0, 1).unwrap();
    assert!(row[32..48].iter().all(|x| *x == 0.0));
    assert!(row[..32].iter().any(|x| *x != 0.0) && row[48..].iter().any(|x| *x != 0.0));
}

#[test]
fn site_names_round_trip_and_bad_names_explain_themselves() {
    let n = 30;
    for s in Site::all(n) {
        assert_eq!(Site::parse(&s.to_string(), n).unwrap(), s);
    }
    assert_eq!(Site::all(n).len(), 2 + 7 * n);
    let e = Site::parse("blocks.3.hook_resid_poost", n)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("unknown hook site") && e.contains("blocks.{0..29}.hook_resid_post"),
        "{e}"
    );
    let e = Site::parse("blocks.30.hook_resid_post", n)
        .unwrap_err()
        .to_string();
    assert!(e.contains("out of range") && e.contains("0..=29"), "{e}");
    let v = Site::parse_pattern("blocks.10-12.hook_resid_post,hook_embed", n).unwrap();
    assert_eq!(
        v.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        [
            "blocks.10.hook_resid_post",
            "blocks.11.hook_resid_post",
            "blocks.12.hook_resid_post",
            "hook_embed"
        ]
    );
    assert_eq!(
        Site::parse_pattern("blocks.*.mlp.hook_post", n)
            .unwrap()
            .len(),
        n
    );
    assert!("1,x".parse::<Positions>().is_err());
    assert_eq!(
        "3, 5".parse::<Positions>().unwrap(),
        Positions::Indices(vec![3, 5])
    );
}

#[test]
fn vectors_of_the_wrong_width_are_refused() {
    let (_d, m) = load(WeightsMode::Quantized);
    let spec = ctxsteer::steer::add_spec(&[Site::resid_post(0)], &[1.0; 10], 1.0, Positions::All);
    let e = m.validate(&spec).unwrap_err().to_string();
    assert!(e.contains("length 10") && e.contains("expected 64"), "{e}");
    let spec = Spec::new().with(
        Intervention::new(
            Site::new(SiteKind::AttnZ, 0),
            Positions::All,
            Action::ZeroAblate,
        )
        .on_heads(vec![7]),
    );
    assert!(m
        .validate(&spec)
        .unwrap_err()
        .to_string()
        .contains("head 7"));
}

#[test]
fn safetensors_folder_matches_the_gguf_f32_path() {
    let (dir, gguf) = tiny::temp();
    let hf = dir.path().join("hf");
    std::fs::create_dir(&hf).unwrap();
    common::tiny_hf::write(&gguf, &hf);
    let a = Model::load(&gguf, WeightsMode::F32).unwrap();
    let b = Model::load(&hf, WeightsMode::F32).unwrap();
    assert!(!b.cfg().rope_interleaved && a.cfg().rope_interleaved);
    let ids = a.tokenizer.encode(PROMPT).unwrap();
    assert_eq!(b.tokenizer.encode(PROMPT).unwrap(), ids);
    assert_eq!(b.tokenizer.eos_id, Some(2));
    let d = common::max_abs_diff(
        &logits(&a, &ids, &Spec::new()),
        &logits(&b, &ids, &Spec::new()),
    );
    assert!(d < 1e-4, "max |dlogit| GGUF vs safetensors = {d}");
}

/// In both weight modes: the quantized one must not round a non-finite hidden state into
/// finite 8-bit activations (its unembedding of one row takes them).
#[test]
fn non_finite_logits_stop_generation_with_an_error() {
    for mode in [WeightsMode::F32, WeightsMode::Quantized] {
        non_finite_stops(mode);
    }
}

fn non_finite_stops(mode: WeightsMode) {
    let (_d, m) = load(mode);
    let ids = m.tokenizer.encode(PROMPT).unwrap();
    // Each entry is finite, but the sum overflows to infinity inside the forward pass.
    let huge = Spec::new().with(Intervention::new(
        Site::resid_post(0),
        Positions::All,
        Action::Add {
            vector: vec![3e38; m.cfg().d_model],
            scale: 3e38,
        },
    ));
    let opts = GenOptions {
        max_tokens: 3,
        ..Default::default()
    };
    let err = generate(&m, &ids, &huge, &opts, &mut |_| Ok(()))
        .err()
        .expect("an error, not tokens")
        .to_string();
    assert!(
        err.contains("non-finite logit") && err.contains("generated token 0"),
        "{mode:?}: {err}"
    );
    let cands = vec![vec![m.tokenizer.encode(" mat").unwrap()]];
    let stop = ctxsteer::generate::Stop::tokens(3);
    let err = ctxsteer::generate::greedy_and_score(&m, &[ids], &cands, &huge, stop);
    assert!(err.is_err());
    assert!(generate(
        &m,
        &m.tokenizer.encode(PROMPT).unwrap(),
        &Spec::new(),
        &opts,
        &mut |_| Ok(())
    )
    .is_ok());
}
