//! What each method tries on dev (its grid of settings), what the sweeps may draw on (probes,
//! ranked heads, a gate), and how the dev sweep's winner is chosen under the cost constraints.

use super::{Eval, Method};
use crate::error::{Error, Result};
use crate::model::Model;
use crate::steer::{Mode, Plan, Steering};
use crate::Positions;

/// A method at one setting, ready to run.
pub struct Setting {
    pub method: Method,
    pub strength: Option<f32>,
    pub label: String,
    pub plan: Box<dyn Plan>,
    pub cad: Option<crate::generate::CadWeight>,
    pub instruct: bool,
}

impl Setting {
    pub fn none() -> Setting {
        Setting {
            method: Method::None,
            strength: None,
            label: "none".into(),
            plan: Box::new(crate::Spec::new()),
            cad: None,
            instruct: false,
        }
    }
}

/// What the sweeps may use: probe file for steering, heads ranked by patching.
#[derive(Clone)]
pub struct Resources {
    pub probes: Option<crate::probe::ProbeFile>,
    /// (layer, head) pairs, the strongest prior-pushing first.
    pub heads: Vec<(usize, usize)>,
    /// (layer, head) pairs, the strongest context-carrying first (removing them lowers
    /// logit(context) - logit(prior)).
    pub context_heads: Vec<(usize, usize)>,
    /// The gate of heads-gated: a `conflict` probe file (its best site).
    pub gate: Option<crate::probe::ProbeFile>,
    /// Greedy tokens per answer (default: the label default for the form).
    pub max_new: Option<usize>,
    /// The trained low-rank edits the `reft` method's dev sweep chooses from.
    pub reft: Vec<crate::reft::Reft>,
}

/// One steering setting along the probe file's `best` site.
fn steer_setting(
    model: &Model,
    m: Method,
    res: &Resources,
    mode: Mode,
    dir: &str,
    alpha: f32,
) -> Result<Setting> {
    let n_layers = model.cfg().n_layers;
    let pf = res
        .probes
        .as_ref()
        .ok_or_else(|| Error::Invalid(format!("method {m:?} needs a probe file")))?;
    let st = Steering::from_probes(pf, "best", None, dir, mode, alpha, Positions::All, n_layers)?;
    Ok(Setting {
        method: m,
        strength: Some(alpha),
        label: format!("{dir} alpha={alpha} at {}", pf.best),
        plan: Box::new(st),
        cad: None,
        instruct: false,
    })
}

/// The settings a method's dev sweep tries.
pub fn grid(model: &Model, m: Method, res: &Resources) -> Result<Vec<Setting>> {
    let steer = |mode, dir, alpha| steer_setting(model, m, res, mode, dir, alpha);
    Ok(match m {
        Method::None => vec![Setting::none()],
        Method::Instruct => vec![Setting {
            method: m,
            strength: None,
            label: "instruction".into(),
            plan: Box::new(crate::Spec::new()),
            cad: None,
            instruct: true,
        }],
        Method::Cad => [0.5f32, 1.0, 2.0, 4.0]
            .iter()
            .map(|b| Setting {
                method: m,
                strength: Some(*b),
                label: format!("beta={b}"),
                plan: Box::new(crate::Spec::new()),
                cad: Some(crate::generate::CadWeight::Fixed(*b)),
                instruct: false,
            })
            .collect(),
        Method::AdaCad => vec![Setting {
            method: m,
            strength: None,
            label: "beta=JSD per step".into(),
            plan: Box::new(crate::Spec::new()),
            cad: Some(crate::generate::CadWeight::Jsd),
            instruct: false,
        }],
        Method::Steer => {
            let mut v = vec![];
            for dir in ["meandiff", "probe"] {
                for a in [0.5f32, 1.0] {
                    v.push(steer(Mode::Add, dir, a)?);
                }
            }
            v
        }
        Method::SteerGated => [0.5f32, 1.0]
            .iter()
            .map(|a| steer(Mode::Gated, "meandiff", *a))
            .collect::<Result<_>>()?,
        Method::Heads | Method::HeadsGated => heads_grid(model, m, res)?,
        Method::Reft => reft_grid(m, res, &[None])?,
        Method::ReftCad => reft_grid(m, res, &[Some(0.5), Some(1.0), Some(2.0)])?,
    })
}

/// Each trained edit, alone or with context-aware decoding at each of `betas`.
fn reft_grid(m: Method, res: &Resources, betas: &[Option<f32>]) -> Result<Vec<Setting>> {
    if res.reft.is_empty() {
        return Err(Error::Invalid(format!(
            "method {} needs at least one trained edit (reft train)",
            m.name()
        )));
    }
    let mut v = vec![];
    for r in &res.reft {
        for beta in betas {
            let edit = crate::steer::Plan::describe(r);
            v.push(Setting {
                method: m,
                strength: *beta,
                label: beta.map_or(edit.clone(), |b| format!("{edit} + cad beta={b}")),
                plan: Box::new(r.clone()),
                cad: beta.map(crate::generate::CadWeight::Fixed),
                instruct: false,
            });
        }
    }
    Ok(v)
}

/// The head-scaling settings a sweep tries: (context heads scaled up, factor; prior heads
/// scaled down, factor). Scaling up the heads that move the context's answer to the last
/// position, and down the ones that bring the prior, follows JUICE (Li et al. 2025) and
/// PH3 (Jin et al. 2024).
const HEAD_GRID: [(usize, f32, usize, f32); 4] = [
    (0, 1.0, 3, 0.5),
    (4, 2.0, 0, 1.0),
    (4, 3.0, 0, 1.0),
    (4, 3.0, 1, 0.0),
];

fn heads_grid(model: &Model, m: Method, res: &Resources) -> Result<Vec<Setting>> {
    let cfg = model.cfg();
    if res.heads.is_empty() && res.context_heads.is_empty() {
        return Err(Error::Invalid(format!(
            "method {} needs heads ranked by ablation (a patch.json of `patch --sites heads --ablate`)",
            m.name()
        )));
    }
    let gate = match m {
        Method::HeadsGated => {
            let pf = res.gate.as_ref().ok_or_else(|| {
                Error::Invalid("method heads-gated needs a conflict probe file".into())
            })?;
            Some(crate::steer::Gate::from_probes(pf, "best", cfg.n_layers)?)
        }
        _ => None,
    };
    let mut v = vec![];
    for (k_up, f_up, k_down, f_down) in HEAD_GRID {
        let up = res.context_heads.iter().take(k_up);
        let down = res.heads.iter().take(k_down);
        let parts: Vec<String> = up
            .map(|(l, h)| format!("{l}.{h}={f_up}"))
            .chain(down.map(|(l, h)| format!("{l}.{h}={f_down}")))
            .collect();
        if parts.is_empty() {
            continue;
        }
        let spec = crate::steer::scale_heads_spec(&parts.join(","), cfg.n_layers, cfg.n_heads)?;
        let plan: Box<dyn Plan> = match &gate {
            Some(g) => Box::new(crate::steer::Gated {
                gate: g.clone(),
                inner: Box::new(spec),
            }),
            None => Box::new(spec),
        };
        v.push(Setting {
            method: m,
            strength: Some(k_up as f32 * (f_up - 1.0) + k_down as f32 * (1.0 - f_down)),
            label: head_label(k_up, f_up, k_down, f_down),
            plan,
            cad: None,
            instruct: false,
        });
    }
    Ok(v)
}

fn head_label(k_up: usize, f_up: f32, k_down: usize, f_down: f32) -> String {
    let mut parts = vec![];
    if k_up > 0 {
        parts.push(format!("top {k_up} context heads x{f_up}"));
    }
    if k_down > 0 {
        parts.push(format!("top {k_down} prior heads x{f_down}"));
    }
    parts.join(" + ")
}

/// The best dev setting: the highest adherence among those that keep retention >= 95% and
/// perplexity within +5%; if none does, the one that costs least (flagged).
pub fn choose(evals: &[Eval]) -> (usize, bool) {
    // Retention is measured on the dev facts the model knows closed-book; where it knows none
    // (NQ-Swap), there is nothing to lose and the constraint does not apply.
    let kept = |e: &Eval| e.retention.n == 0 || e.retention.value >= 0.95;
    let ok = |e: &Eval| kept(e) && e.perplexity_ratio <= 1.05;
    let best_ok = evals
        .iter()
        .enumerate()
        .filter(|(_, e)| ok(e))
        .max_by(|a, b| a.1.adherence.value.total_cmp(&b.1.adherence.value));
    match best_ok {
        Some((i, _)) => (i, true),
        None => {
            let i = evals
                .iter()
                .enumerate()
                .max_by(|a, b| a.1.retention.value.total_cmp(&b.1.retention.value))
                .map(|(i, _)| i)
                .unwrap_or(0);
            (i, false)
        }
    }
}

/// Heads ranked by a heads patching result: largest mean effect first.
pub fn heads_from_patch(r: &crate::patch::PatchResult) -> Vec<(usize, usize)> {
    head_pairs(
        crate::patch::top(r, usize::MAX)
            .into_iter()
            .filter(|c| c.mean > 0.0 && c.ci_low > 0.0),
    )
}

/// The heads whose removal lowers logit(context) - logit(prior) most, strongest first.
pub fn context_heads_from_patch(r: &crate::patch::PatchResult) -> Vec<(usize, usize)> {
    head_pairs(
        crate::patch::top(r, usize::MAX)
            .into_iter()
            .rev()
            .filter(|c| c.mean < 0.0 && c.ci_high < 0.0),
    )
}

fn head_pairs<'a>(cells: impl Iterator<Item = &'a crate::patch::Cell>) -> Vec<(usize, usize)> {
    cells
        .filter_map(|c| {
            c.key
                .rsplit("head ")
                .next()?
                .parse::<usize>()
                .ok()
                .map(|h| (c.layer, h))
        })
        .collect()
}
