//! Prefill and decode speed on the shapes of a benchmark's batches, which `bench-speed` (one
//! 128-token prompt) does not cover: `rows` prompts of `tokens` tokens each, then `steps`
//! decode steps of one token per row, best of `reps`.
//!
//! ```text
//! cargo run --release --example batch_speed -- MODEL.gguf ROWS TOKENS [REPS] [STEPS] [f32|quantized]
//! ```
//!
//! The README's NQ-Swap shapes: one prompt of 2,200 tokens, 8 of 300, 16 of 4 (decoding).

use ctxsteer::hooks::{Hooks, Spec};
use ctxsteer::model::{Batch, KvCache, LogitsAt, Model, WeightsMode};
use std::time::Instant;

fn arg(args: &[String], i: usize, default: usize) -> usize {
    args.get(i).map_or(default, |s| {
        s.parse()
            .unwrap_or_else(|_| panic!("argument {i} must be a whole number, not `{s}`"))
    })
}

fn main() -> ctxsteer::Result<()> {
    // As the ctxsteer binary does.
    ctxsteer::model::keep_freed_memory();
    let args: Vec<String> = std::env::args().collect();
    let Some(path) = args.get(1) else {
        eprintln!("usage: batch_speed MODEL.gguf ROWS TOKENS [REPS] [STEPS] [f32|quantized]");
        std::process::exit(2);
    };
    let (rows, tokens) = (arg(&args, 2, 8), arg(&args, 3, 300));
    let (reps, steps) = (arg(&args, 4, 3), arg(&args, 5, 12));
    let mode = match args.get(6).map(String::as_str) {
        None | Some("f32") => WeightsMode::F32,
        Some("quantized") => WeightsMode::Quantized,
        Some(other) => panic!("weights `{other}`: f32 or quantized"),
    };
    let model = Model::load(std::path::Path::new(path), mode)?;
    // Token ids spread over the vocabulary; the speed does not depend on them.
    let ids: Vec<Vec<u32>> = (0..rows)
        .map(|r| {
            (0..tokens)
                .map(|i| ((i * 7919 + r * 104_729) % 40_000 + 100) as u32)
                .collect()
        })
        .collect();
    let spec = Spec::new();
    let (mut prefill, mut decode) = (0f64, 0f64);
    for _ in 0..reps.max(1) {
        let mut hooks = Hooks::new(&spec, model.cfg().n_heads).with_prompt_lens(vec![tokens; rows]);
        let mut cache = KvCache::with_room(model.cfg().n_layers, steps);
        let t = Instant::now();
        let batch = Batch::left_padded(&ids, 0);
        model
            .net
            .forward(&batch, Some(&mut cache), &mut hooks, LogitsAt::Last)?;
        prefill = prefill.max((rows * tokens) as f64 / t.elapsed().as_secs_f64());
        let t = Instant::now();
        for s in 0..steps {
            let next = Batch {
                ids: (0..rows)
                    .map(|r| vec![(r * 31 + s * 7 + 200) as u32])
                    .collect(),
                pads: vec![0; rows],
            };
            model
                .net
                .forward(&next, Some(&mut cache), &mut hooks, LogitsAt::Last)?;
        }
        decode = decode.max((rows * steps) as f64 / t.elapsed().as_secs_f64());
    }
    println!(
        "{rows} rows × {tokens} tokens: prefill {prefill:.1} tok/s; decode {decode:.1} tok/s \
         ({:.1} ms a step)",
        1e3 * rows as f64 / decode
    );
    Ok(())
}
