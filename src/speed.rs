//! `bench-speed`: prefill and decode throughput of our forward pass, in both weight modes,
//! with no hooks and with a steering vector at every layer, next to candle-transformers' own
//! `quantized_llama` (no hooks) on the same GGUF. A benchmark, never a test.

use crate::error::{Error, Result};
use crate::generate::argmax;
use crate::hooks::{Hooks, Positions, Site, Spec};
use crate::model::{Batch, KvCache, LogitsAt, Model, WeightsMode};
use candle_core::{Device, Tensor};
use std::path::Path;
use std::time::Instant;

/// One line of the speed table.
#[derive(Clone, Debug, serde::Serialize)]
pub struct SpeedRow {
    pub engine: String,
    pub weights: String,
    pub hooks: String,
    pub prefill_tokens: usize,
    pub prefill_tok_s: f64,
    pub decode_tokens: usize,
    pub decode_tok_s: f64,
}

/// A fixed text long enough for `n` tokens.
fn prompt_ids(model: &Model, n: usize) -> Result<Vec<u32>> {
    let text = "The history of the city begins with a small settlement on the river, where \
                traders met to exchange grain, salt and cloth. Over the centuries it grew into \
                a capital with bridges, markets, libraries and a cathedral. "
        .repeat(1 + n / 30);
    let ids = model.tokenizer.encode_prompt(&text)?;
    if ids.len() < n {
        return Err(Error::Invalid(format!(
            "benchmark text has only {} tokens",
            ids.len()
        )));
    }
    Ok(ids[..n].to_vec())
}

/// A spec adding a fixed small vector at every layer's resid_post, on all positions.
pub fn steer_every_layer(model: &Model) -> Spec {
    let cfg = model.cfg();
    let v: Vec<f32> = (0..cfg.d_model)
        .map(|i| ((i % 7) as f32 - 3.0) * 1e-3)
        .collect();
    let sites: Vec<Site> = (0..cfg.n_layers).map(Site::resid_post).collect();
    crate::steer::add_spec(&sites, &v, 1.0, Positions::All)
}

/// Time the prefill of `n_prompt` tokens and `n_decode` greedy decode steps.
fn time_ours(model: &Model, spec: &Spec, n_prompt: usize, n_decode: usize) -> Result<(f64, f64)> {
    let ids = prompt_ids(model, n_prompt)?;
    let mut hooks = Hooks::new(spec, model.cfg().n_heads).with_prompt_lens(vec![ids.len()]);
    let mut cache = KvCache::new(model.cfg().n_layers);
    let t0 = Instant::now();
    let logits = model.net.forward(
        &Batch::single(&ids),
        Some(&mut cache),
        &mut hooks,
        LogitsAt::Last,
    )?;
    let mut next = argmax(&logits.flatten_all()?.to_vec1::<f32>()?);
    let prefill = t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    for _ in 0..n_decode {
        let logits = model.net.forward(
            &Batch::single(&[next]),
            Some(&mut cache),
            &mut hooks,
            LogitsAt::Last,
        )?;
        next = argmax(&logits.flatten_all()?.to_vec1::<f32>()?);
    }
    let decode = t1.elapsed().as_secs_f64();
    Ok((n_prompt as f64 / prefill, n_decode as f64 / decode))
}

/// The same measurement with candle-transformers' `quantized_llama`.
fn time_candle(path: &Path, ids: &[u32], n_decode: usize) -> Result<(f64, f64)> {
    use candle_transformers::models::quantized_llama::ModelWeights;
    let mut file = std::fs::File::open(path).map_err(|e| Error::file(path, e))?;
    let ct = candle_core::quantized::gguf_file::Content::read(&mut file)
        .map_err(|e| Error::file(path, e))?;
    let mut m = ModelWeights::from_gguf(ct, &mut file, &Device::Cpu)?;
    let x = Tensor::new(ids, &Device::Cpu)?.unsqueeze(0)?;
    let t0 = Instant::now();
    let logits = m.forward(&x, 0)?;
    let mut next = argmax(&logits.flatten_all()?.to_vec1::<f32>()?);
    let prefill = t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    for i in 0..n_decode {
        let x = Tensor::new(&[next], &Device::Cpu)?.unsqueeze(0)?;
        let logits = m.forward(&x, ids.len() + i)?;
        next = argmax(&logits.flatten_all()?.to_vec1::<f32>()?);
    }
    let decode = t1.elapsed().as_secs_f64();
    Ok((ids.len() as f64 / prefill, n_decode as f64 / decode))
}

/// Run the whole table for the GGUF at `path`. Each figure is the best of `reps` runs.
pub fn run(
    path: &Path,
    n_prompt: usize,
    n_decode: usize,
    reps: usize,
    log: &mut dyn FnMut(&str),
) -> Result<Vec<SpeedRow>> {
    let mut rows = Vec::new();
    let best = |f: &mut dyn FnMut() -> Result<(f64, f64)>| -> Result<(f64, f64)> {
        let mut b = (0f64, 0f64);
        for _ in 0..reps.max(1) {
            let (p, d) = f()?;
            b = (b.0.max(p), b.1.max(d));
        }
        Ok(b)
    };
    let mut ids = Vec::new();
    for mode in [WeightsMode::Quantized, WeightsMode::F32] {
        let model = Model::load(path, mode)?;
        ids = prompt_ids(&model, n_prompt)?;
        for (name, spec) in [
            ("none", Spec::new()),
            ("steer@every-layer", steer_every_layer(&model)),
        ] {
            log(&format!("ctxsteer {mode:?} hooks={name}"));
            let (p, d) = best(&mut || time_ours(&model, &spec, n_prompt, n_decode))?;
            rows.push(SpeedRow {
                engine: "ctxsteer".into(),
                weights: format!("{mode:?}").to_lowercase(),
                hooks: name.into(),
                prefill_tokens: n_prompt,
                prefill_tok_s: p,
                decode_tokens: n_decode,
                decode_tok_s: d,
            });
        }
    }
    log("candle-transformers quantized_llama");
    let (p, d) = best(&mut || time_candle(path, &ids, n_decode))?;
    rows.push(SpeedRow {
        engine: "candle quantized_llama".into(),
        weights: "quantized".into(),
        hooks: "none (has none)".into(),
        prefill_tokens: n_prompt,
        prefill_tok_s: p,
        decode_tokens: n_decode,
        decode_tok_s: d,
    });
    Ok(rows)
}

/// The table as text.
pub fn table(rows: &[SpeedRow]) -> String {
    let mut s = format!(
        "{:<24} {:<10} {:<18} {:>14} {:>14}\n",
        "engine", "weights", "hooks", "prefill tok/s", "decode tok/s"
    );
    for r in rows {
        s += &format!(
            "{:<24} {:<10} {:<18} {:>14.1} {:>14.1}\n",
            r.engine, r.weights, r.hooks, r.prefill_tok_s, r.decode_tok_s
        );
    }
    s
}
