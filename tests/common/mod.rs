//! Helpers shared by the integration tests.
#![allow(dead_code)]

use ctxsteer::{Model, WeightsMode};
use std::path::PathBuf;

/// The default model, fetched by `ctxsteer fetch-model` (CI does this before the tests).
pub fn default_model_path() -> PathBuf {
    let p = ctxsteer::fetch::default_model_path();
    assert!(
        p.exists(),
        "the default model is missing at {}: run `cargo run --release -- fetch-model` first",
        p.display()
    );
    p
}

pub fn load(mode: WeightsMode) -> Model {
    Model::load(&default_model_path(), mode).expect("load default model")
}

pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

pub fn reference() -> serde_json::Value {
    reference_in("reference")
}

pub fn read_npy(name: &str) -> Vec<f32> {
    read_npy_in("reference", name)
}

/// `reference.json` of the fixture folder `dir`.
pub fn reference_in(dir: &str) -> serde_json::Value {
    let text =
        std::fs::read_to_string(fixture(&format!("{dir}/reference.json"))).expect("reference.json");
    serde_json::from_str(&text).expect("reference json")
}

/// A float32 array of the fixture folder `dir`, flattened.
pub fn read_npy_in(dir: &str, name: &str) -> Vec<f32> {
    let t = candle_core::Tensor::read_npy(fixture(&format!("{dir}/{name}"))).expect("npy");
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

/// A model `ctxsteer fetch-model NAME` puts in the cache (CI fetches them before the tests).
pub fn load_known(name: &str, mode: WeightsMode) -> Model {
    let k = ctxsteer::fetch::known(name).expect("a known model");
    let p = k.path();
    assert!(
        p.exists(),
        "{name} is missing at {}: run `cargo run --release -- fetch-model {name}` first",
        p.display()
    );
    Model::load(&p, mode).expect("load the model")
}

pub fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

pub fn top_k(v: &[f32], k: usize) -> Vec<u32> {
    let mut idx: Vec<usize> = (0..v.len()).collect();
    idx.sort_by(|a, b| v[*b].total_cmp(&v[*a]));
    idx.into_iter().take(k).map(|i| i as u32).collect()
}

pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// A tiny random Llama written as GGUF by candle's writer: 2 layers, d_model 64, 4 heads,
/// 2 KV heads, d_mlp 128, a byte-level vocabulary of printable ASCII plus 3 special tokens.
pub mod tiny {
    use candle_core::quantized::gguf_file::{self, Value};
    use candle_core::quantized::{GgmlDType, QTensor};
    use candle_core::{Device, Tensor};
    use std::path::Path;

    pub const LAYERS: usize = 2;
    pub const D_MODEL: usize = 64;
    pub const HEADS: usize = 4;
    pub const KV_HEADS: usize = 2;
    pub const D_MLP: usize = 128;

    /// Deterministic pseudo-random values in [-scale, scale].
    fn values(n: usize, seed: u64, scale: f32) -> Vec<f32> {
        let mut s = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
            })
            .collect()
    }

    fn q(shape: (usize, usize), seed: u64, scale: f32, dtype: GgmlDType) -> QTensor {
        let t =
            Tensor::from_vec(values(shape.0 * shape.1, seed, scale), shape, &Device::Cpu).unwrap();
        QTensor::quantize(&t, dtype).unwrap()
    }

    fn norm(seed: u64) -> QTensor {
        let v: Vec<f32> = values(D_MODEL, seed, 0.2).iter().map(|x| 1.0 + x).collect();
        QTensor::quantize(
            &Tensor::from_vec(v, D_MODEL, &Device::Cpu).unwrap(),
            GgmlDType::F32,
        )
        .unwrap()
    }

    /// The vocabulary: 3 control tokens, printable ASCII in byte-level form, two merges.
    pub fn tokens() -> Vec<String> {
        let mut t: Vec<String> = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
            .map(String::from)
            .to_vec();
        for b in 32u8..127 {
            t.push(if b == b' ' {
                "Ġ".to_string()
            } else {
                (b as char).to_string()
            });
        }
        t.push("Ġt".into());
        t.push("he".into());
        t
    }

    /// Write the model to `path`.
    pub fn write(path: &Path) {
        let toks = tokens();
        let vocab = toks.len();
        let d_head = D_MODEL / HEADS;
        let mut tensors: Vec<(String, QTensor)> = vec![
            (
                "token_embd.weight".into(),
                q((vocab, D_MODEL), 1, 0.5, GgmlDType::Q8_0),
            ),
            ("output_norm.weight".into(), norm(2)),
        ];
        for l in 0..LAYERS {
            let s = 100 * (l as u64 + 1);
            let w = |name: &str, shape, seed| {
                (
                    format!("blk.{l}.{name}.weight"),
                    q(shape, seed, 0.15, GgmlDType::Q4_1),
                )
            };
            tensors.push((format!("blk.{l}.attn_norm.weight"), norm(s)));
            tensors.push((format!("blk.{l}.ffn_norm.weight"), norm(s + 1)));
            tensors.push(w("attn_q", (D_MODEL, D_MODEL), s + 2));
            tensors.push(w("attn_k", (KV_HEADS * d_head, D_MODEL), s + 3));
            tensors.push(w("attn_v", (KV_HEADS * d_head, D_MODEL), s + 4));
            tensors.push(w("attn_output", (D_MODEL, D_MODEL), s + 5));
            tensors.push(w("ffn_gate", (D_MLP, D_MODEL), s + 6));
            tensors.push(w("ffn_up", (D_MLP, D_MODEL), s + 7));
            tensors.push(w("ffn_down", (D_MODEL, D_MLP), s + 8));
        }
        let u = |x: usize| Value::U32(x as u32);
        let strs = |v: Vec<String>| Value::Array(v.into_iter().map(Value::String).collect());
        let mut types = vec![Value::I32(3); 3];
        types.extend(std::iter::repeat_n(Value::I32(1), vocab - 3));
        let template = "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";
        let md: Vec<(&str, Value)> = vec![
            ("general.architecture", Value::String("llama".into())),
            ("llama.block_count", u(LAYERS)),
            ("llama.context_length", u(1024)),
            ("llama.embedding_length", u(D_MODEL)),
            ("llama.feed_forward_length", u(D_MLP)),
            ("llama.attention.head_count", u(HEADS)),
            ("llama.attention.head_count_kv", u(KV_HEADS)),
            ("llama.rope.freq_base", Value::F32(10000.0)),
            ("llama.rope.dimension_count", u(D_MODEL / HEADS)),
            ("llama.attention.layer_norm_rms_epsilon", Value::F32(1e-5)),
            ("llama.vocab_size", u(vocab)),
            ("tokenizer.ggml.model", Value::String("gpt2".into())),
            ("tokenizer.ggml.pre", Value::String("smollm".into())),
            ("tokenizer.ggml.tokens", strs(toks)),
            ("tokenizer.ggml.token_type", Value::Array(types)),
            (
                "tokenizer.ggml.merges",
                strs(vec!["Ġ t".into(), "h e".into()]),
            ),
            ("tokenizer.ggml.bos_token_id", u(1)),
            ("tokenizer.ggml.eos_token_id", u(2)),
            ("tokenizer.chat_template", Value::String(template.into())),
        ];
        let md_refs: Vec<(&str, &Value)> = md.iter().map(|(k, v)| (*k, v)).collect();
        let t_refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
        let mut f = std::fs::File::create(path).unwrap();
        gguf_file::write(&mut f, &md_refs, &t_refs).unwrap();
    }

    /// Write the tiny model into a fresh temporary folder; keep the guard alive while used.
    /// Write a rank-2 learned edit at `blocks.1.hook_resid_post` of `m` (seeded values, strong
    /// enough to change greedy tokens) to `path`, as `reft train` writes one.
    #[allow(dead_code)]
    pub fn write_edit(m: &ctxsteer::Model, path: &Path) {
        use ctxsteer::reft::{Reft, ReftMeta};
        let t = |v: Vec<f32>, shape: &[usize]| Tensor::from_vec(v, shape, &Device::Cpu).unwrap();
        let mut r = vec![0.0f32; 2 * D_MODEL];
        r[0] = 1.0;
        r[D_MODEL + 1] = 1.0;
        let edit = ctxsteer::hooks::LowRank::new(
            t(r, &[2, D_MODEL]),
            t(values(2 * D_MODEL, 41, 0.5), &[2, D_MODEL]),
            t(vec![6.0, -6.0], &[2]),
        )
        .unwrap();
        let meta = ReftMeta {
            version: 1,
            model: m.identity().unwrap(),
            sites: vec!["blocks.1.hook_resid_post".into()],
            rank: 2,
            train: Default::default(),
        };
        let site = ctxsteer::Site::resid_post(1);
        Reft {
            edits: vec![(site, edit)],
            meta,
        }
        .save(path)
        .unwrap();
    }

    pub fn temp() -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tiny.gguf");
        write(&path);
        (dir, path)
    }
}

/// The tiny model as a Hugging Face folder: config.json, model.safetensors, tokenizer.json.
/// Q and K rows are un-permuted from llama.cpp's interleaved layout to HF's half split.
pub mod tiny_hf {
    use super::tiny;
    use candle_core::quantized::gguf_file;
    use candle_core::{Device, Tensor};
    use std::collections::HashMap;
    use std::path::Path;

    fn unpermute(w: &Tensor, n_head: usize) -> Tensor {
        let (out, inp) = w.dims2().unwrap();
        let d = out / n_head;
        w.reshape((n_head, d / 2, 2, inp))
            .unwrap()
            .transpose(1, 2)
            .unwrap()
            .contiguous()
            .unwrap()
            .reshape((out, inp))
            .unwrap()
    }

    pub fn write(gguf: &Path, dir: &Path) {
        let mut f = std::fs::File::open(gguf).unwrap();
        let ct = gguf_file::Content::read(&mut f).unwrap();
        let mut get = |n: &str| {
            ct.tensor(&mut f, n, &Device::Cpu)
                .unwrap()
                .dequantize(&Device::Cpu)
                .unwrap()
        };
        let mut m: HashMap<String, Tensor> = HashMap::new();
        m.insert("model.embed_tokens.weight".into(), get("token_embd.weight"));
        m.insert("model.norm.weight".into(), get("output_norm.weight"));
        for l in 0..tiny::LAYERS {
            let h = format!("model.layers.{l}");
            let g = |n: &str| format!("blk.{l}.{n}.weight");
            m.insert(format!("{h}.input_layernorm.weight"), get(&g("attn_norm")));
            m.insert(
                format!("{h}.post_attention_layernorm.weight"),
                get(&g("ffn_norm")),
            );
            m.insert(
                format!("{h}.self_attn.q_proj.weight"),
                unpermute(&get(&g("attn_q")), tiny::HEADS),
            );
            m.insert(
                format!("{h}.self_attn.k_proj.weight"),
                unpermute(&get(&g("attn_k")), tiny::KV_HEADS),
            );
            m.insert(format!("{h}.self_attn.v_proj.weight"), get(&g("attn_v")));
            m.insert(
                format!("{h}.self_attn.o_proj.weight"),
                get(&g("attn_output")),
            );
            m.insert(format!("{h}.mlp.gate_proj.weight"), get(&g("ffn_gate")));
            m.insert(format!("{h}.mlp.up_proj.weight"), get(&g("ffn_up")));
            m.insert(format!("{h}.mlp.down_proj.weight"), get(&g("ffn_down")));
        }
        candle_core::safetensors::save(&m, dir.join("model.safetensors")).unwrap();
        let cfg = serde_json::json!({
            "model_type": "llama", "hidden_size": tiny::D_MODEL, "intermediate_size": tiny::D_MLP,
            "num_hidden_layers": tiny::LAYERS, "num_attention_heads": tiny::HEADS,
            "num_key_value_heads": tiny::KV_HEADS, "vocab_size": tiny::tokens().len(),
            "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "max_position_embeddings": 256,
            "tie_word_embeddings": true
        });
        std::fs::write(dir.join("config.json"), cfg.to_string()).unwrap();
        let model = ctxsteer::Model::load(gguf, ctxsteer::WeightsMode::F32).unwrap();
        model.tokenizer.save(&dir.join("tokenizer.json")).unwrap();
        let tc = serde_json::json!({"bos_token": "<|im_start|>", "eos_token": "<|im_end|>"});
        std::fs::write(dir.join("tokenizer_config.json"), tc.to_string()).unwrap();
    }
}

/// A probe file for `m` holding `sites`, whose `best` is the first of them; the bookkeeping
/// fields are placeholders.
pub fn probe_file_of(
    m: &Model,
    target: ctxsteer::probe::Target,
    sites: Vec<ctxsteer::probe::SiteProbe>,
) -> ctxsteer::probe::ProbeFile {
    ctxsteer::probe::ProbeFile {
        version: 1,
        model: m.identity().unwrap(),
        acts: "x".into(),
        data: "y".into(),
        target,
        kind: ctxsteer::probe::Kind::Logistic,
        command: "test".into(),
        seed: 0,
        n_train: 1,
        n_test: 1,
        n_pos: 1,
        test_relations: None,
        best: sites[0].site.clone(),
        positions: ctxsteer::capture::PosMode::Last,
        sites,
    }
}

/// A tiny organism world in `dir`: `subjects` subjects, `relations` relations of 4 objects,
/// exposures from `schedule`.
pub fn tiny_world(dir: &std::path::Path, subjects: usize, relations: usize, schedule: &str) {
    let o = ctxsteer::organism::WorldOptions {
        subjects,
        relations,
        objects: 4,
        schedule: schedule.into(),
        filler: 0.1,
        ..Default::default()
    };
    ctxsteer::organism::build(&o, dir).unwrap();
}

/// A tiny two-layer organism of width `d` (2 heads, SwiGLU 2d) trained `steps` steps on
/// `world` into `out`.
pub fn tiny_organism(world: &std::path::Path, out: &std::path::Path, d: usize, steps: usize) {
    let opts = ctxsteer::organism::TrainOptions {
        layers: 2,
        d_model: d,
        heads: 2,
        d_mlp: 2 * d,
        steps,
        batch: 8,
        seq: 24,
        lr: 1e-2,
        warmup: 10,
        checkpoint_every: 0,
        ..Default::default()
    };
    ctxsteer::organism::train(world, out, &opts, false, &mut |_| Ok(())).unwrap();
}
