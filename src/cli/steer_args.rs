//! `--steer`, `--alpha`, `--gate` and the other steering options of generate, label and
//! capture, and the plan they build.

use crate::cli::choice::choice;
use anyhow::{bail, Context, Result};
use clap::Args;
use ctxsteer::steer::{SteerKind, SteerOptions, SteerRequest};
use ctxsteer::{Model, Positions, Spec};
use std::path::PathBuf;

use super::numbers::finite_f32;

/// Steering options shared by generate, label and capture.
#[derive(Args, Clone)]
pub struct SteerArgs {
    /// Steer with FILE[:SITE], told apart by its contents: a probe file (probes/NAME.json, at
    /// :SITE or its best site; --alpha in spreads of the projections, default 4), a raw
    /// vector (a JSON array or a one-tensor .safetensors, added at :SITE, which it needs;
    /// --alpha multiplies it, default 1), a llama.cpp control vector (.gguf, its own layers;
    /// --alpha multiplies it, default 1) or a learned edit (`reft train`'s .safetensors, its
    /// own sites; --alpha scales its change, default 1, 0 turns it off). Repeat to combine.
    #[arg(long, value_name = "FILE[:SITE]")]
    pub steer: Vec<String>,
    /// Strength of --steer in its file's unit (see --steer): once for every file, or once per
    /// --steer in the same order. Negative steers toward the prior.
    #[arg(long, allow_hyphen_values = true, value_parser = finite_f32)]
    pub alpha: Vec<f32>,
    /// Steer a probe file's probes at these layers (e.g. 10-20) instead of the one site.
    #[arg(long)]
    pub layers: Option<String>,
    /// How a probe file's direction is applied.
    #[arg(long, value_parser = choice::<ctxsteer::steer::Mode>(), default_value = "add")]
    pub mode: ctxsteer::steer::Mode,
    /// Which of a probe file's directions to use.
    #[arg(long, value_parser = choice::<ctxsteer::steer::Direction>(), default_value = "probe")]
    pub direction: ctxsteer::steer::Direction,
    /// Positions --steer acts on: all, prompt, generated, last, answer (last and generated),
    /// or indices like 0,4,5 (default: all).
    #[arg(long)]
    pub steer_positions: Option<String>,
    /// Scale attention heads' outputs: LAYER.HEAD=FACTOR, comma-separated (0 ablates, 3
    /// triples).
    #[arg(long)]
    pub scale_heads: Option<String>,
    /// Apply all the steering only to prompts where this probe fires (FILE[:SITE], a probe
    /// file at :SITE or its best site): a `conflict` probe fires on a context that contradicts
    /// memory, a `follows_context` probe where it predicts the prior will win. Other prompts
    /// run untouched. A probe captured with `--positions subject-last` reads the subject's
    /// last token where items name their subject (label, capture), else the last token.
    #[arg(long, value_name = "FILE[:SITE]")]
    pub gate: Option<String>,
    /// How far past its probe's boundary the gate still fires, in logits: 0 (the default) is
    /// the probe's own decision; a larger margin fires on more prompts. `bench` chooses it on
    /// dev (reft-gated: 0, 2 or 4).
    #[arg(long, default_value_t = 0.0, allow_hyphen_values = true, value_parser = finite_f32)]
    pub gate_margin: f32,
    /// Apply the interventions of a spec file (JSON, as `generate --print-spec` writes it),
    /// after those of the options above.
    #[arg(long)]
    pub spec: Option<PathBuf>,
    /// Deprecated spelling of --steer EDIT.
    #[arg(long, hide = true)]
    pub intervention: Option<PathBuf>,
}

/// Say on stderr that `old` still works but `new` is its name now.
pub fn deprecated(old: &str, new: &str) {
    eprintln!("note: {old} is deprecated and goes in the next release; use {new}");
}

impl SteerArgs {
    /// The positions to steer (all when not given).
    pub fn positions(&self) -> Result<Positions> {
        Ok(self.steer_positions.as_deref().unwrap_or("all").parse()?)
    }

    /// Each --steer with its strength, then the deprecated spellings' (`extra`: `generate
    /// --steer-vector`'s request).
    pub fn requests(&self, extra: Option<SteerRequest>) -> Result<Vec<SteerRequest>> {
        let n = self.steer.len();
        let Some(alphas) = ctxsteer::steer::pair_alphas(n, &self.alpha) else {
            bail!(
                "give --alpha once for every --steer file or once per file in order: {n} --steer, {} --alpha",
                self.alpha.len()
            );
        };
        if n == 0 && !self.alpha.is_empty() && extra.is_none() {
            bail!("--alpha sets the strength of --steer; give --steer FILE[:SITE]");
        }
        let mut out: Vec<SteerRequest> = self
            .steer
            .iter()
            .zip(alphas)
            .map(|(s, alpha)| SteerRequest {
                alpha,
                ..SteerRequest::parse(s)
            })
            .collect();
        if let Some(p) = &self.intervention {
            deprecated("--intervention FILE", "--steer FILE");
            out.push(SteerRequest::parse(&p.display().to_string()));
        }
        out.extend(extra);
        Ok(out)
    }

    /// Options that would do nothing without another one are errors naming both (`kinds`: the
    /// --steer files' kinds).
    fn check_needs(&self, reqs: &[SteerRequest], kinds: &[SteerKind]) -> Result<()> {
        let probes = kinds.contains(&SteerKind::Probes);
        let defaults = SteerOptions::default();
        let probe_only = [
            ("--layers", self.layers.is_some()),
            ("--mode", self.mode != defaults.mode),
            ("--direction", self.direction != defaults.direction),
        ];
        if let Some((flag, _)) = probe_only.iter().find(|(_, given)| *given && !probes) {
            bail!("{flag} applies to a probe file; give --steer probes/NAME.json");
        }
        if self.steer_positions.is_some() && reqs.is_empty() {
            bail!("--steer-positions places the steering of --steer; give --steer FILE[:SITE]");
        }
        let gated = !reqs.is_empty() || self.spec.is_some() || self.scale_heads.is_some();
        if self.gate.is_some() && !gated {
            bail!(
                "--gate applies the other steering options only where its probe fires; give \
                 --steer, --spec or --scale-heads"
            );
        }
        Ok(())
    }

    /// The plan these options describe (an empty spec when none is given).
    pub fn plan(&self, model: &Model) -> Result<Box<dyn ctxsteer::steer::Plan>> {
        self.plan_with(model, None)
    }

    /// [`SteerArgs::plan`], with `generate --steer-vector`'s request too.
    pub fn plan_with(
        &self,
        model: &Model,
        extra: Option<SteerRequest>,
    ) -> Result<Box<dyn ctxsteer::steer::Plan>> {
        use ctxsteer::steer;
        let reqs = self.requests(extra)?;
        let kinds = reqs
            .iter()
            .map(|r| SteerKind::detect(&r.path).with_context(|| format!("--steer {}", r.arg())))
            .collect::<Result<Vec<_>>>()?;
        self.check_needs(&reqs, &kinds)?;
        let n_layers = model.cfg().n_layers;
        let opts = SteerOptions {
            layers: self
                .layers
                .as_deref()
                .map(|l| steer::parse_layers(l, n_layers))
                .transpose()
                .context("--layers")?,
            direction: self.direction,
            mode: self.mode,
            positions: self.positions()?,
        };
        let mut plans: Vec<Box<dyn steer::Plan>> = Vec::new();
        for (r, kind) in reqs.iter().zip(kinds) {
            let plan = steer::plan_as(model, r, kind, &opts);
            plans.push(plan.with_context(|| format!("--steer {}", r.arg()))?);
        }
        if let Some(p) = &self.spec {
            let spec = Spec::read(p)?;
            model
                .validate(&spec)
                .with_context(|| format!("--spec {}", p.display()))?;
            plans.push(Box::new(spec));
        }
        if let Some(h) = &self.scale_heads {
            plans.push(Box::new(
                steer::scale_heads_spec(h, n_layers, model.cfg().n_heads)
                    .context("--scale-heads")?,
            ));
        }
        if self.gate_margin != 0.0 && self.gate.is_none() {
            bail!("--gate-margin widens --gate; give --gate FILE[:SITE]");
        }
        Ok(steer::combine(
            model,
            plans,
            self.gate.as_deref(),
            self.gate_margin,
        )?)
    }
}
