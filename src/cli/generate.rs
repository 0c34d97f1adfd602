//! `info`, `generate` (plain, steered, or with context-aware decoding).

use super::*;
use anyhow::{bail, Context, Result};
use ctxsteer::generate::{generate, CadWeight, GenOptions, Sampling};
use ctxsteer::{Model, Positions, Site, Spec};
use std::io::Write;

pub(super) fn info(args: &ModelArgs, json: bool) -> Result<()> {
    let model = args.load()?;
    let cfg = model.cfg();
    let sites: Vec<String> = Site::all(cfg.n_layers)
        .iter()
        .map(|s| s.to_string())
        .collect();
    if json {
        let v = serde_json::json!({
            "model": model.path, "weights": model.weights, "config": cfg, "sites": sites,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!("model         {}", model.path.display());
    println!("weights       {:?}", model.weights);
    println!("architecture  {}", cfg.architecture);
    println!("layers        {}", cfg.n_layers);
    println!("d_model       {}", cfg.d_model);
    println!("heads         {} (d_head {})", cfg.n_heads, cfg.d_head);
    println!("kv heads      {}", cfg.n_kv_heads);
    println!("d_mlp         {}", cfg.d_mlp);
    println!("vocab         {}", cfg.vocab_size);
    println!(
        "sites         {} in all: {}",
        sites.len(),
        Site::vocabulary(cfg.n_layers)
    );
    Ok(())
}

pub(super) fn generate_cmd(a: GenerateArgs) -> Result<()> {
    let model = a.model.load()?;
    if a.decoding != Decoding::Plain {
        if a.proxy.proxy_expert.is_some() {
            bail!("--proxy-expert works with plain decoding; drop --decoding or the proxy");
        }
        return cad_generate(&model, &a);
    }
    if a.context.is_some() {
        bail!(
            "--context is used by --decoding cad or adacad; for plain decoding put the context in --prompt"
        );
    }
    let ids = model.prompt_ids(&a.prompt, a.chat)?;
    ctxsteer::generate::check_fits(&model, ids.len(), a.max_tokens).context("--max-tokens")?;
    let spec = steering_spec(&model, &a, &ids)?;
    check_positions(&spec, ids.len() + a.max_tokens)?;
    if a.print_spec {
        println!("{}", spec.to_json()?);
        return Ok(());
    }
    let sampling = sampling(&a)?;
    let opts = GenOptions {
        max_tokens: a.max_tokens,
        sampling,
        ..Default::default()
    };
    let proxy = a.proxy.load(&a.model, &model)?;
    let mut stdout = std::io::stdout();
    let mut printed = String::new();
    let mut so_far = Vec::new();
    let mut on_token = |t| {
        if !a.json {
            // Decode the whole tail so multi-byte characters split over tokens print whole.
            so_far.push(t);
            let text = model.tokenizer.decode(&so_far)?;
            if let Some(new) = text.strip_prefix(printed.as_str()) {
                print!("{new}");
                let _ = stdout.flush();
                printed = text;
            }
        }
        Ok(())
    };
    let g = match &proxy {
        Some(p) => ctxsteer::proxy::generate(&model, p, &ids, &spec, &opts, &mut on_token)?,
        None => generate(&model, &ids, &spec, &opts, &mut on_token)?,
    };
    finish_output(&model, &a, &g.ids, &printed)
}

/// Greedy, or top-p sampling when a temperature is given.
fn sampling(a: &GenerateArgs) -> Result<Sampling> {
    if a.temperature <= 0.0 {
        return Ok(Sampling::Greedy);
    }
    if !(0.0..=1.0).contains(&a.top_p) || a.top_p == 0.0 {
        bail!("--top-p must be in (0, 1], got {}", a.top_p);
    }
    Ok(Sampling::TopP {
        temperature: a.temperature,
        top_p: a.top_p,
        seed: a.seed,
    })
}

/// The JSON line (`--json`), or the rest of the streamed text and a line break.
fn finish_output(model: &Model, a: &GenerateArgs, ids: &[u32], printed: &str) -> Result<()> {
    let text = model.tokenizer.decode(ids)?;
    if a.json {
        let tokens: Vec<String> = ids
            .iter()
            .map(|t| model.tokenizer.decode(&[*t]))
            .collect::<ctxsteer::Result<_>>()?;
        let v = serde_json::json!({
            "prompt": a.prompt, "text": text, "tokens": tokens, "token_ids": ids,
        });
        println!("{}", serde_json::to_string(&v)?);
    } else {
        if let Some(rest) = text.strip_prefix(printed) {
            print!("{rest}");
        }
        println!();
    }
    Ok(())
}

fn steering_spec(model: &Model, a: &GenerateArgs, prompt: &[u32]) -> Result<Spec> {
    let raw = match (&a.steer_vector, &a.steer_site) {
        (Some(file), Some(site)) => {
            let old = "--steer-vector F --steer-site S --steer-alpha A";
            super::args::deprecated(old, "--steer F:S --alpha A");
            Some(ctxsteer::steer::SteerRequest {
                path: file.clone(),
                site: Some(site.clone()),
                alpha: Some(a.steer_alpha.unwrap_or(1.0)),
            })
        }
        _ => None,
    };
    let plan = a.plan.plan_with(model, raw)?;
    Ok(plan.spec_for(model, &[prompt.to_vec()])?)
}

/// Refuse explicit positions that no token of this run will have (they would do nothing).
fn check_positions(spec: &Spec, len: usize) -> Result<()> {
    for iv in &spec.interventions {
        if let Positions::Indices(v) = &iv.positions {
            if let Some(p) = v.iter().find(|p| **p >= len) {
                bail!(
                    "position {p} at {} is past the end: this run has positions 0..={} (prompt and --max-tokens)",
                    iv.site,
                    len - 1
                );
            }
        }
    }
    Ok(())
}

fn cad_generate(model: &Model, a: &GenerateArgs) -> Result<()> {
    let Some(context) = &a.context else {
        bail!("--decoding cad and adacad need --context: the text whose influence they amplify");
    };
    let (weight, name) = match a.decoding {
        Decoding::Adacad => (CadWeight::Jsd, "adacad"),
        _ => (CadWeight::Fixed(a.cad_beta), "cad"),
    };
    let with = model.prompt_ids(&format!("{context} {}", a.prompt), a.chat)?;
    let without = model.prompt_ids(&a.prompt, a.chat)?;
    ctxsteer::generate::check_fits(model, with.len(), a.max_tokens).context("--max-tokens")?;
    let spec = steering_spec(model, a, &with)?;
    check_positions(&spec, with.len() + a.max_tokens)?;
    if a.print_spec {
        println!("{}", spec.to_json()?);
        return Ok(());
    }
    let out = ctxsteer::generate::cad_greedy_and_score(
        model,
        &[with],
        &[without],
        &[vec![]],
        &spec,
        weight,
        ctxsteer::generate::Stop::tokens(a.max_tokens),
    )?;
    let ids = &out[0].greedy;
    let text = model.tokenizer.decode(ids)?;
    if a.json {
        let tokens: Vec<String> = ids
            .iter()
            .map(|t| model.tokenizer.decode(&[*t]))
            .collect::<ctxsteer::Result<_>>()?;
        let v = serde_json::json!({"prompt": a.prompt, "context": context, "decoding": name, "beta": (name == "cad").then_some(a.cad_beta),
            "text": text, "tokens": tokens, "token_ids": ids});
        println!("{}", serde_json::to_string(&v)?);
    } else {
        println!("{text}");
    }
    Ok(())
}
