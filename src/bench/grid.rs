//! What each method tries on dev (its grid of settings), what the sweeps may draw on (probes,
//! ranked heads, a gate), and how the dev sweep's winner is chosen under the cost constraints.

use super::{Eval, Method};
use crate::choice::Choice;
use crate::error::{Error, Result};
use crate::model::Model;
use crate::steer::{Direction, Mode, Plan, ProbeSteer, Steering};
use crate::Positions;
use serde::{Deserialize, Serialize};

/// What makes a setting what it is, as data. Its JSON (with the method) keys the setting's
/// saved runs, so that a display label can be reworded without losing them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Params {
    None,
    Instruction,
    Cad {
        beta: f32,
    },
    AdaCad,
    /// A probe-file direction added or clamped at `site` (the file's best site) or, with
    /// `layers`, at each of those layers.
    Steer {
        site: String,
        direction: Direction,
        mode: Mode,
        alpha: f32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        layers: Option<Vec<usize>>,
        positions: String,
    },
    /// The top `up` context heads scaled by `up_factor`, the top `down` prior heads by
    /// `down_factor` (the rankings themselves are part of the run's key).
    Heads {
        up: usize,
        up_factor: f32,
        down: usize,
        down_factor: f32,
    },
    /// A trained edit (its fingerprint), with CAD or behind the conflict gate.
    Reft {
        edit: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cad_beta: Option<f32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        gate_margin: Option<f32>,
    },
    Iti {
        heads: usize,
        direction: Direction,
        alpha: f32,
    },
}

/// The resume key of a method at one setting: its JSON, e.g.
/// `{"method":"cad","kind":"cad","beta":0.5}`.
pub fn setting_key(method: Method, params: &Params) -> String {
    #[derive(Serialize)]
    struct Key<'a> {
        method: Method,
        #[serde(flatten)]
        params: &'a Params,
    }
    serde_json::to_string(&Key { method, params }).expect("settings serialise")
}

/// A method at one setting, ready to run.
pub struct Setting {
    pub method: Method,
    pub strength: Option<f32>,
    /// What it is, as data (its resume key); `label` says it in words.
    pub params: Params,
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
            params: Params::None,
            label: "none".into(),
            plan: Box::new(crate::Spec::new()),
            cad: None,
            instruct: false,
        }
    }
}

/// An artefact a method's sweep draws on, from [`Resources`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    /// A probe file (one probe per layer for the band methods).
    Probes,
    /// Per-head probes.
    HeadProbes,
    /// Heads ranked by ablation.
    RankedHeads,
    /// A `conflict` probe file, the gate.
    Gate,
    /// At least one trained edit.
    Edit,
}

impl Need {
    pub const ALL: [Need; 5] = [
        Need::Probes,
        Need::HeadProbes,
        Need::RankedHeads,
        Need::Gate,
        Need::Edit,
    ];
}

impl Method {
    /// What the method's sweep needs: the one table that says so.
    pub fn needs(self) -> &'static [Need] {
        match self {
            Method::None | Method::Instruct | Method::Cad | Method::AdaCad => &[],
            Method::Steer | Method::SteerGated | Method::SteerMulti | Method::Clamp => {
                &[Need::Probes]
            }
            Method::Iti => &[Need::HeadProbes],
            Method::Heads => &[Need::RankedHeads],
            Method::HeadsGated => &[Need::RankedHeads, Need::Gate],
            Method::Reft | Method::ReftCad => &[Need::Edit],
            Method::ReftGated => &[Need::Edit, Need::Gate],
        }
    }
}

impl Resources {
    /// Whether `need` is given.
    pub fn has(&self, need: Need) -> bool {
        match need {
            Need::Probes => self.probes.is_some(),
            Need::HeadProbes => self.head_probes.is_some(),
            Need::RankedHeads => !(self.heads.is_empty() && self.context_heads.is_empty()),
            Need::Gate => self.gate.is_some(),
            Need::Edit => !self.reft.is_empty(),
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
    /// Per-head probes (`probe train --per-head` on `attn.hook_z`) for the `iti` method.
    pub head_probes: Option<crate::probe::ProbeFile>,
}

/// One steering setting along the probe file's `best` site.
fn steer_setting(
    model: &Model,
    m: Method,
    res: &Resources,
    mode: Mode,
    dir: Direction,
    alpha: f32,
) -> Result<Setting> {
    let n_layers = model.cfg().n_layers;
    let pf = res
        .probes
        .as_ref()
        .ok_or_else(|| Error::Invalid(format!("method {} needs a probe file", m.name())))?;
    let how = ProbeSteer {
        direction: dir,
        mode,
        alpha,
        ..Default::default()
    };
    let st = Steering::from_probes(pf, &how, n_layers)?;
    Ok(Setting {
        method: m,
        strength: Some(alpha),
        params: Params::Steer {
            site: pf.best.clone(),
            direction: dir,
            mode,
            alpha,
            layers: None,
            positions: "all".into(),
        },
        label: format!("{} alpha={alpha} at {}", dir.name(), pf.best),
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
            params: Params::Instruction,
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
                params: Params::Cad { beta: *b },
                label: format!("beta={b}"),
                plan: Box::new(crate::Spec::new()),
                cad: Some(crate::generate::CadWeight::Fixed(*b)),
                instruct: false,
            })
            .collect(),
        Method::AdaCad => vec![Setting {
            method: m,
            strength: None,
            params: Params::AdaCad,
            label: "beta=JSD per step".into(),
            plan: Box::new(crate::Spec::new()),
            cad: Some(crate::generate::CadWeight::Jsd),
            instruct: false,
        }],
        Method::Steer => {
            let mut v = vec![];
            for dir in [Direction::Meandiff, Direction::Probe] {
                for a in [0.5f32, 1.0] {
                    v.push(steer(Mode::Add, dir, a)?);
                }
            }
            v
        }
        Method::SteerGated => [0.5f32, 1.0]
            .iter()
            .map(|a| steer(Mode::Gated, Direction::Meandiff, *a))
            .collect::<Result<_>>()?,
        Method::Heads | Method::HeadsGated => heads_grid(model, m, res)?,
        Method::Reft => reft_grid(m, res, &[None])?,
        Method::ReftCad => reft_grid(m, res, &[Some(0.5), Some(1.0), Some(2.0)])?,
        Method::ReftGated => reft_gated_grid(model, res)?,
        Method::SteerMulti => band_grid(model, m, res, Mode::AddNorm, &[0.01, 0.02, 0.04])?,
        Method::Clamp => band_grid(model, m, res, Mode::Clamp, &[0.0, 1.0])?,
        Method::Iti => iti_grid(model, m, res)?,
    })
}

/// The bands of layers that multi-layer steering and clamping try, as fractions of the depth:
/// the first and second half of the middle third, and the whole middle third. Probes and
/// patching put the choice between context and prior there on both models (see docs/results.md).
fn bands(n_layers: usize) -> Vec<Vec<usize>> {
    let (a, b, c) = (n_layers / 3, n_layers / 2, (2 * n_layers) / 3);
    vec![(a..b).collect(), (b..c).collect(), (a..c).collect()]
}

/// Each band of [`bands`] at each strength, along the probe file's mean-difference directions.
/// Adding acts at every position; a clamp only where the answer is produced (the prompt's last
/// token, where the probes were trained, and the generated ones): clamping every token of the
/// prompt to a last-token class mean broke closed-book answers and fluency on dev (docs/results.md).
fn band_grid(
    model: &Model,
    m: Method,
    res: &Resources,
    mode: Mode,
    alphas: &[f32],
) -> Result<Vec<Setting>> {
    let n_layers = model.cfg().n_layers;
    let pf = res
        .probes
        .as_ref()
        .ok_or_else(|| Error::Invalid(format!("method {} needs a probe file", m.name())))?;
    let (positions, where_, at) = match mode {
        Mode::Clamp => (Positions::Answer, ", answer positions", "answer"),
        _ => (Positions::All, "", "all"),
    };
    let mut v = vec![];
    for band in bands(n_layers) {
        let (first, last) = (band[0], band[band.len() - 1]);
        for alpha in alphas {
            let how = ProbeSteer {
                layers: Some(&band),
                direction: Direction::Meandiff,
                mode,
                alpha: *alpha,
                positions: positions.clone(),
                ..Default::default()
            };
            let st = Steering::from_probes(pf, &how, n_layers)?;
            v.push(Setting {
                method: m,
                strength: Some(*alpha),
                params: Params::Steer {
                    site: pf.best.clone(),
                    direction: Direction::Meandiff,
                    mode,
                    alpha: *alpha,
                    layers: Some(band.clone()),
                    positions: at.into(),
                },
                label: format!(
                    "{} meandiff alpha={alpha} at layers {first}-{last}{where_}",
                    mode.name()
                ),
                plan: Box::new(st),
                cad: None,
                instruct: false,
            });
        }
    }
    Ok(v)
}

/// ITI's sweep: the top K heads by per-head probe, shifted by alpha spreads (Li et al. used
/// 48 of 1,024 heads and alpha 15 on LLaMA-7B).
fn iti_grid(model: &Model, m: Method, res: &Resources) -> Result<Vec<Setting>> {
    let pf = res.head_probes.as_ref().ok_or_else(|| {
        Error::Invalid(
            "method iti needs per-head probes (sites like blocks.L.attn.hook_z[H])".into(),
        )
    })?;
    let n_layers = model.cfg().n_layers;
    let mut v = vec![];
    for k in [8usize, 24] {
        for alpha in [3.0f32, 8.0, 15.0] {
            let st = Steering::from_head_probes(
                pf,
                k,
                Direction::Meandiff,
                alpha,
                Positions::All,
                n_layers,
            )?;
            v.push(Setting {
                method: m,
                strength: Some(alpha),
                params: Params::Iti {
                    heads: k,
                    direction: Direction::Meandiff,
                    alpha,
                },
                label: st.label.clone(),
                plan: Box::new(st),
                cad: None,
                instruct: false,
            });
        }
    }
    Ok(v)
}

/// Each trained edit, alone or with context-aware decoding at each of `betas`.
fn reft_grid(m: Method, res: &Resources, betas: &[Option<f32>]) -> Result<Vec<Setting>> {
    if res.reft.is_empty() {
        return Err(Error::Invalid(format!(
            "method {} needs at least one trained edit",
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
                params: Params::Reft {
                    edit: r.fingerprint()?,
                    cad_beta: *beta,
                    gate_margin: None,
                },
                label: beta.map_or(edit.clone(), |b| format!("{edit} + cad beta={b}")),
                plan: Box::new(r.clone()),
                cad: beta.map(crate::generate::CadWeight::Fixed),
                instruct: false,
            });
        }
    }
    Ok(v)
}

/// Each trained edit behind the conflict gate: applied only to the prompts where the gate's
/// probe sees a context that contradicts memory. The sweep also widens the gate (margins 2 and
/// 4 logits past the probe's boundary): it then catches more conflicts, and the dev sweep's
/// retention bar says when it starts to touch closed-book questions.
fn reft_gated_grid(model: &Model, res: &Resources) -> Result<Vec<Setting>> {
    let gate = conflict_gate(model, Method::ReftGated, res)?;
    let mut v = vec![];
    for margin in [0.0f32, 2.0, 4.0] {
        for mut s in reft_grid(Method::ReftGated, res, &[None])? {
            let inner = std::mem::replace(&mut s.plan, Box::new(crate::Spec::new()));
            s.plan = Box::new(crate::steer::Gated {
                gate: crate::steer::Gate {
                    margin,
                    ..gate.clone()
                },
                inner,
            });
            s.label = match margin {
                0.0 => format!("{} where the conflict gate fires", s.label),
                m => format!("{} where the conflict gate fires, margin {m}", s.label),
            };
            s.strength = Some(margin);
            if let Params::Reft { gate_margin, .. } = &mut s.params {
                *gate_margin = Some(margin);
            }
            v.push(s);
        }
    }
    Ok(v)
}

/// The gate of the gated methods: the `conflict` probe file's best site.
fn conflict_gate(model: &Model, m: Method, res: &Resources) -> Result<crate::steer::Gate> {
    let pf = res.gate.as_ref().ok_or_else(|| {
        Error::Invalid(format!("method {} needs a conflict probe file", m.name()))
    })?;
    crate::steer::Gate::from_probes(pf, "best", model.cfg().n_layers)
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
            "method {} needs heads ranked by ablation (a head-patching result)",
            m.name()
        )));
    }
    let gate = match m {
        Method::HeadsGated => Some(conflict_gate(model, m, res)?),
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
            params: Params::Heads {
                up: k_up,
                up_factor: f_up,
                down: k_down,
                down_factor: f_down,
            },
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

/// The dev bars a setting must clear to be chosen.
#[derive(Clone, Copy, Debug)]
pub struct Bars {
    /// Share of the known facts still answered from memory.
    pub retention: f64,
    /// Perplexity of the neutral text relative to no intervention.
    pub perplexity_ratio: f64,
    /// Irrelevant contexts: the share left unchanged may fall at most this far below `none`'s.
    pub irrelevant_drop: f64,
}

/// The bars of the dev sweep: retention ≥ 95%, perplexity ≤ 1.05×, irrelevant contexts left
/// unchanged at least as often as `none` leaves them, less 2 points.
pub const BARS: Bars = Bars {
    retention: 0.95,
    perplexity_ratio: 1.05,
    irrelevant_drop: 0.02,
};

impl Bars {
    /// The bars `e` misses, in words (empty: eligible). `irrelevant_base` is `none`'s share of
    /// irrelevant contexts left unchanged on the same items.
    pub fn missed(&self, e: &Eval, irrelevant_base: Option<f64>) -> Vec<String> {
        let mut v = vec![];
        // Retention is measured on the dev facts the model knows closed-book; where it knows
        // none (NQ-Swap), there is nothing to lose and the bar does not apply.
        if e.retention.n > 0 && e.retention.value < self.retention {
            v.push(format!(
                "retention {:.1}% < {:.0}%",
                100.0 * e.retention.value,
                100.0 * self.retention
            ));
        }
        if e.perplexity_ratio > self.perplexity_ratio {
            v.push(format!(
                "perplexity ×{:.3} > ×{:.2}",
                e.perplexity_ratio, self.perplexity_ratio
            ));
        }
        if let (Some(base), Some(irr)) = (irrelevant_base, &e.irrelevant) {
            // A small tolerance keeps a setting that equals the bar from failing on rounding.
            if irr.unchanged.value + 1e-9 < base - self.irrelevant_drop {
                v.push(format!(
                    "irrelevant contexts unchanged {:.1}% < none's {:.1}% − {:.0} points",
                    100.0 * irr.unchanged.value,
                    100.0 * base,
                    100.0 * self.irrelevant_drop
                ));
            }
        }
        v
    }
}

/// What the dev sweep chose.
#[derive(Clone, Debug, PartialEq)]
pub struct Chosen {
    /// The setting measured on test.
    pub index: usize,
    /// Whether it clears every bar.
    pub eligible: bool,
    /// When none is eligible: the setting with the highest adherence, and the bars it misses.
    pub best_ineligible: Option<(usize, Vec<String>)>,
}

/// The best dev setting: the highest adherence among those that clear every bar ([`BARS`]);
/// if none does, the one that costs least (the highest retention, then the most irrelevant
/// contexts left unchanged, then the lowest perplexity), flagged, with the best ineligible
/// setting (the highest adherence) and the bars it misses.
pub fn choose(evals: &[Eval], irrelevant_base: Option<f64>) -> Chosen {
    let by_adherence = |a: &(usize, &Eval), b: &(usize, &Eval)| {
        a.1.adherence.value.total_cmp(&b.1.adherence.value)
    };
    let eligible = evals
        .iter()
        .enumerate()
        .filter(|(_, e)| BARS.missed(e, irrelevant_base).is_empty())
        .max_by(by_adherence);
    if let Some((i, _)) = eligible {
        return Chosen {
            index: i,
            eligible: true,
            best_ineligible: None,
        };
    }
    // The cheapest: the most retention, then the most irrelevant contexts left unchanged, then
    // the lowest perplexity.
    let unchanged = |e: &Eval| e.irrelevant.as_ref().map_or(0.0, |i| i.unchanged.value);
    let cheapest = evals
        .iter()
        .enumerate()
        .max_by(|(_, a), (_, b)| {
            (a.retention.value.total_cmp(&b.retention.value))
                .then(unchanged(a).total_cmp(&unchanged(b)))
                .then(b.perplexity_ratio.total_cmp(&a.perplexity_ratio))
        })
        .map_or(0, |(i, _)| i);
    let best = evals.iter().enumerate().max_by(by_adherence);
    Chosen {
        index: cheapest,
        eligible: false,
        best_ineligible: best.map(|(i, e)| (i, BARS.missed(e, irrelevant_base))),
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
    // Files of earlier versions name the head only in the key, `[POSITION ]head H`.
    let legacy = |c: &crate::patch::Cell| c.key.rsplit("head ").next()?.parse::<usize>().ok();
    cells
        .filter_map(|c| c.head.or_else(|| legacy(c)).map(|h| (c.layer, h)))
        .collect()
}
