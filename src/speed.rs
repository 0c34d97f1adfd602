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
    /// Prefill and decode speed as multiples of llama.cpp's, when it ran beside.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vs_llama_cpp: Option<(f64, f64)>,
    /// The process's peak resident memory so far, in MiB, for our quantized rows, which run
    /// first: what the quantized model took, with its KV cache and the program itself.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peak_rss_mib: Option<f64>,
}

/// The process's peak resident set (VmHWM) in MiB, where /proc tells it.
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
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
    let mut cache = KvCache::with_room(model.cfg().n_layers, n_decode);
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

/// What `bench-speed` measures.
pub struct SpeedOptions {
    pub n_prompt: usize,
    pub n_decode: usize,
    /// Each figure is the best of this many runs.
    pub reps: usize,
    /// A `llama-bench` binary to run on the same GGUF, prompt length and threads.
    pub llama_bench: Option<std::path::PathBuf>,
}

/// Run the whole table for the GGUF at `path`.
pub fn run(path: &Path, o: &SpeedOptions, log: &mut dyn FnMut(&str)) -> Result<Vec<SpeedRow>> {
    let (n_prompt, n_decode) = (o.n_prompt, o.n_decode);
    // Before the minutes of our own measurements, not after them.
    if let Some(bin) = o.llama_bench.as_deref().filter(|b| !b.is_file()) {
        return Err(Error::file(
            bin,
            "no llama-bench binary here (scripts/llama-bench.sh builds one)",
        ));
    }
    let mut rows = Vec::new();
    let best = |f: &mut dyn FnMut() -> Result<(f64, f64)>| -> Result<(f64, f64)> {
        let mut b = (0f64, 0f64);
        for _ in 0..o.reps.max(1) {
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
            let weights = format!("{mode:?}").to_lowercase();
            let mut row = SpeedRow::new("ctxsteer", &weights, name, o, (p, d));
            if mode == WeightsMode::Quantized {
                row.peak_rss_mib = peak_rss_mib();
            }
            rows.push(row);
        }
    }
    log("candle-transformers quantized_llama");
    let hooks = "none (has none)";
    // It reads Llama-style GGUFs only (not Gemma 3's): then its row is left out.
    match best(&mut || time_candle(path, &ids, n_decode)) {
        Ok(pd) => rows.push(SpeedRow::new(
            "candle quantized_llama",
            "quantized",
            hooks,
            o,
            pd,
        )),
        Err(e) => log(&format!(
            "candle quantized_llama cannot run this model, left out: {e}"
        )),
    }
    if let Some(bin) = &o.llama_bench {
        log("llama.cpp llama-bench");
        if add_llama_cpp(&mut rows, bin, path, o)? {
            log("llama.cpp llama-bench again with --repack 0: it crashed (its repacked CPU paths, AMX among them, are left out)");
        }
    }
    Ok(rows)
}

/// llama.cpp's row, and every other row's speeds as multiples of its. A `llama-bench` killed by
/// a signal is run once more with `--repack 0` (its AMX path crashes on some Xeons), and its
/// row says so; true when that happened.
fn add_llama_cpp(
    rows: &mut Vec<SpeedRow>,
    bin: &Path,
    gguf: &Path,
    o: &SpeedOptions,
) -> Result<bool> {
    let ((p, d), retried) = match llama_bench(bin, gguf, o, &[])? {
        Ok(pd) => (pd, false),
        Err(_crashed) => {
            let pd =
                llama_bench(bin, gguf, o, &["--repack", "0"])?.map_err(|e| Error::file(bin, e))?;
            (pd, true)
        }
    };
    let engine = match retried {
        true => "llama.cpp llama-bench --repack 0",
        false => "llama.cpp llama-bench",
    };
    for r in rows.iter_mut() {
        r.vs_llama_cpp = Some((r.prefill_tok_s / p, r.decode_tok_s / d));
    }
    let hooks = "none (has none)";
    rows.push(SpeedRow::new(engine, "quantized", hooks, o, (p, d)));
    Ok(retried)
}

impl SpeedRow {
    fn new(engine: &str, weights: &str, hooks: &str, o: &SpeedOptions, tok_s: (f64, f64)) -> Self {
        SpeedRow {
            engine: engine.into(),
            weights: weights.into(),
            hooks: hooks.into(),
            prefill_tokens: o.n_prompt,
            prefill_tok_s: tok_s.0,
            decode_tokens: o.n_decode,
            decode_tok_s: tok_s.1,
            vs_llama_cpp: None,
            peak_rss_mib: None,
        }
    }
}

/// llama.cpp's `llama-bench` on the GGUF at `gguf`, with our prompt and decode lengths,
/// candle's thread count and `extra` arguments: the best (prefill, decode) tokens per second of
/// `reps` runs; Ok(Err(why)) when a signal killed it.
fn llama_bench(
    bin: &Path,
    gguf: &Path,
    o: &SpeedOptions,
    extra: &[&str],
) -> Result<std::result::Result<(f64, f64), String>> {
    let threads = candle_core::utils::get_num_threads();
    let out = std::process::Command::new(bin)
        .arg("-m")
        .arg(gguf)
        .args(["-p", &o.n_prompt.to_string(), "-n", &o.n_decode.to_string()])
        .args(["-t", &threads.to_string(), "-r", &o.reps.max(1).to_string()])
        .args(["-o", "json"])
        .args(extra)
        .output()
        .map_err(|e| Error::file(bin, format!("cannot run llama-bench: {e}")))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let last = err.lines().last().unwrap_or("").to_string();
        let why = format!("llama-bench failed ({}): {last}", out.status);
        return match out.status.code() {
            None => Ok(Err(why)),
            Some(_) => Err(Error::file(bin, why)),
        };
    }
    parse_llama_bench(&String::from_utf8_lossy(&out.stdout))
        .map(Ok)
        .map_err(|m| Error::file(bin, format!("llama-bench's JSON output: {m}")))
}

/// The best prefill (a test with `n_gen` 0) and decode (`n_prompt` 0) tokens per second in
/// llama-bench's JSON output.
fn parse_llama_bench(json: &str) -> std::result::Result<(f64, f64), String> {
    let tests: Vec<serde_json::Value> = serde_json::from_str(json).map_err(|e| e.to_string())?;
    let best = |prefill: bool| -> std::result::Result<f64, String> {
        let field = if prefill { "n_gen" } else { "n_prompt" };
        tests
            .iter()
            .filter(|t| t[field].as_u64() == Some(0))
            .flat_map(|t| t["samples_ts"].as_array().cloned().unwrap_or_default())
            .filter_map(|v| v.as_f64())
            .reduce(f64::max)
            .ok_or_else(|| format!("no test with `{field}` 0 and `samples_ts`"))
    };
    Ok((best(true)?, best(false)?))
}

/// The table as text.
pub fn table(rows: &[SpeedRow]) -> String {
    let ratios = rows.iter().any(|r| r.vs_llama_cpp.is_some());
    let mut s = format!(
        "{:<24} {:<10} {:<18} {:>14} {:>14}",
        "engine", "weights", "hooks", "prefill tok/s", "decode tok/s"
    );
    if ratios {
        s += &format!(" {:>16} {:>16}", "prefill × llama", "decode × llama");
    }
    s += "\n";
    for r in rows {
        s += &format!(
            "{:<24} {:<10} {:<18} {:>14.1} {:>14.1}",
            r.engine, r.weights, r.hooks, r.prefill_tok_s, r.decode_tok_s
        );
        if let Some((p, d)) = r.vs_llama_cpp {
            s += &format!(" {p:>16.2} {d:>16.2}");
        }
        s += "\n";
    }
    if let Some(m) = rows.iter().filter_map(|r| r.peak_rss_mib).reduce(f64::max) {
        s += &format!("peak resident memory with quantized weights: {m:.0} MiB\n");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn llama_bench_json_gives_the_best_prefill_and_decode_samples() {
        let json = r#"[{"n_prompt": 128, "n_gen": 0, "samples_ts": [476.0, 478.8]},
                       {"n_prompt": 0, "n_gen": 128, "samples_ts": [151.2, 160.4]}]"#;
        assert_eq!(parse_llama_bench(json), Ok((478.8, 160.4)));
        let no_decode = r#"[{"n_prompt": 128, "n_gen": 0, "samples_ts": [476.0]}]"#;
        assert!(parse_llama_bench(no_decode)
            .unwrap_err()
            .contains("n_prompt"));
        assert!(parse_llama_bench("build: 1234").is_err());
    }
}
