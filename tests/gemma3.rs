//! Parity with Hugging Face transformers on the second real model, Gemma 3 270M (base, Q4_K_M
//! GGUF), against tests/fixtures/gemma3-270m (see SOURCE.md there). Gemma 3 brings what the
//! Llama path lacks: (1 + w) RMSNorm, √d-scaled embeddings, GELU-tanh gating, norms after
//! attention and the MLP, q/k norms, 5 sliding-window layers (rope θ 10k) per global one
//! (θ 1M), query_pre_attn_scalar, a SentencePiece tokenizer and a BOS before prompts.

mod common;
use common::*;
use ctxsteer::generate::{generate, GenOptions};
use ctxsteer::model::{Batch, LogitsAt};
use ctxsteer::{Model, Positions, Site, SiteKind, Spec, WeightsMode};

const DIR: &str = "gemma3-270m";
/// Dequantized f32 logits agree with transformers' to this.
const F32_TOL: f32 = 1e-3;

fn load(mode: WeightsMode) -> Model {
    load_known("gemma3-270m", mode)
}

#[test]
fn config_is_read_from_the_gguf() {
    let m = load(WeightsMode::Quantized);
    let c = m.cfg();
    let r = &reference_in(DIR)["meta"]["transformers_config"];
    let n = |k: &str| r[k].as_u64().unwrap() as usize;
    assert_eq!(c.n_layers, n("num_hidden_layers"));
    assert_eq!(c.d_model, n("hidden_size"));
    assert_eq!(c.d_mlp, n("intermediate_size"));
    assert_eq!(
        (c.n_heads, c.n_kv_heads),
        (n("num_attention_heads"), n("num_key_value_heads"))
    );
    assert_eq!(c.d_head, n("head_dim"));
    assert_eq!(c.vocab_size, n("vocab_size"));
    assert_eq!(c.sliding_window, Some(n("sliding_window")));
    let types: Vec<bool> = r["layer_types"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap() == "sliding_attention")
        .collect();
    assert_eq!(c.local_layers, types);
    assert_eq!((c.rope_theta, c.rope_local_theta), (1e6, 1e4));
    assert_eq!(
        c.query_scale,
        1.0 / (n("query_pre_attn_scalar") as f64).sqrt()
    );
    assert!(m.tokenizer.add_bos);
    assert_eq!(m.tokenizer.bos_id, Some(2));
}

#[test]
fn tokenizer_ids_match_hugging_face() {
    let model = load(WeightsMode::Quantized);
    for t in reference_in(DIR)["tokenizer"].as_array().unwrap() {
        let text = t["text"].as_str().unwrap();
        let want = ids(&t["ids"]);
        assert_eq!(
            model.tokenizer.encode(text).unwrap(),
            want,
            "ids of {text:?}"
        );
        assert_eq!(
            model.tokenizer.decode(&want).unwrap(),
            text,
            "decode of {text:?}"
        );
    }
}

/// Prompts get the BOS token (transformers' `add_special_tokens=True`), once.
#[test]
fn prompts_begin_with_bos() {
    let model = load(WeightsMode::Quantized);
    for p in reference_in(DIR)["logits"].as_array().unwrap() {
        let prompt = p["prompt"].as_str().unwrap();
        let want = ids(&p["ids"]);
        assert_eq!(model.prompt_ids(prompt, false).unwrap(), want);
        assert_eq!(
            model.tokenizer.encode_prompt("<bos>The").unwrap()[..2],
            [2, 818]
        );
    }
}

fn check_logits(mode: WeightsMode) {
    let model = load(mode);
    for (i, p) in reference_in(DIR)["logits"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
    {
        let ours = model.last_logits(&ids(&p["ids"]), &Spec::new()).unwrap();
        let theirs = read_npy_in(DIR, &format!("logits_{i}.npy"));
        let diff = max_abs_diff(&ours, &theirs);
        eprintln!("{mode:?} prompt {i}: max |dlogit| = {diff:.5}");
        match mode {
            WeightsMode::F32 => {
                assert!(
                    diff < F32_TOL,
                    "prompt {i}: max |dlogit| {diff} >= {F32_TOL}"
                );
                assert_eq!(top_k(&ours, 10), top_k(&theirs, 10), "prompt {i}: top-10");
            }
            // Q4_K/Q5_0/Q6_K blocks times Q8-quantized activations: the argmax must hold.
            WeightsMode::Quantized => {
                assert_eq!(top_k(&ours, 1), top_k(&theirs, 1), "prompt {i}: argmax")
            }
        }
    }
}

#[test]
fn f32_logits_match_transformers() {
    check_logits(WeightsMode::F32);
}

#[test]
fn quantized_argmax_matches_transformers() {
    check_logits(WeightsMode::Quantized);
}

#[test]
fn f32_greedy_12_tokens_match_transformers() {
    let model = load(WeightsMode::F32);
    for p in reference_in(DIR)["logits"].as_array().unwrap() {
        let ids = model
            .prompt_ids(p["prompt"].as_str().unwrap(), false)
            .unwrap();
        let opts = GenOptions {
            max_tokens: 12,
            ..Default::default()
        };
        let g = generate(&model, &ids, &Spec::new(), &opts, &mut |_| Ok(())).unwrap();
        let text = model.tokenizer.decode(&g.ids).unwrap();
        assert_eq!(text, p["greedy_12"].as_str().unwrap());
    }
}

#[test]
fn f32_hidden_states_match_transformers_layer_by_layer() {
    let model = load(WeightsMode::F32);
    let (n, d) = (model.cfg().n_layers, model.cfg().d_model);
    let mut sites = vec![Site::new(SiteKind::Embed, 0)];
    sites.extend((0..n - 1).map(Site::resid_post));
    sites.push(Site::new(SiteKind::LnFinal, 0));
    for (i, p) in reference_in(DIR)["logits"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
    {
        let ids = ids(&p["ids"]);
        let spec = Spec::capture(&sites, Positions::Last);
        let (_, caps) = model
            .run(&Batch::single(&ids), &spec, LogitsAt::Last)
            .unwrap();
        let theirs = read_npy_in(DIR, &format!("hidden_last_{i}.npy"));
        for (row, s) in sites.iter().enumerate() {
            let ours = caps.at(*s, 0, ids.len() - 1).unwrap();
            let t = &theirs[row * d..(row + 1) * d];
            let norm = t.iter().map(|x| x * x).sum::<f32>().sqrt();
            let rel = max_abs_diff(ours, t) / norm.max(1e-6);
            assert!(rel < 1e-4, "prompt {i} {s}: max diff / norm = {rel}");
        }
    }
}

/// A left-padded batch gives each row the logits it gets alone, and the cached decode the
/// logits of the uncached forward (the sliding-window and global layers both).
#[test]
fn padded_batch_and_cache_match_single_rows() {
    let model = load(WeightsMode::F32);
    let r = reference_in(DIR);
    let rows: Vec<Vec<u32>> = r["logits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| ids(&p["ids"]))
        .collect();
    let batch = Batch::left_padded(&rows, 0);
    let (logits, _) = model.run(&batch, &Spec::new(), LogitsAt::Last).unwrap();
    for (i, row) in rows.iter().enumerate() {
        let alone = model.last_logits(row, &Spec::new()).unwrap();
        let batched = logits
            .get(i)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert!(max_abs_diff(&alone, &batched) < 1e-3, "row {i}");
    }
    let row = &rows[1];
    let mut cache = ctxsteer::model::KvCache::new(model.cfg().n_layers);
    let empty = Spec::new();
    let mut hooks = ctxsteer::hooks::Hooks::new(&empty, model.cfg().n_heads);
    let split = row.len() - 3;
    model
        .net
        .forward(
            &Batch::single(&row[..split]),
            Some(&mut cache),
            &mut hooks,
            LogitsAt::Last,
        )
        .unwrap();
    let mut last = None;
    for t in &row[split..] {
        last = Some(
            model
                .net
                .forward(
                    &Batch::single(&[*t]),
                    Some(&mut cache),
                    &mut hooks,
                    LogitsAt::Last,
                )
                .unwrap(),
        );
    }
    let cached = last
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let full = model.last_logits(row, &Spec::new()).unwrap();
    assert!(max_abs_diff(&cached, &full) < 1e-3);
}
