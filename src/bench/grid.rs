//! What each method tries on dev (its grid of settings), what the sweeps may draw on (probes,
//! ranked heads, a gate), and how the dev sweep's winner is chosen under the cost constraints.

use super::edit_grid::{conflict_gate, reft_gated_grid, reft_grid};
use super::Method;
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
        positions: SteerAt,
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
        /// The edit's change scaled by this (absent: as trained, 1).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        scale: Option<f32>,
        /// The hash of the `relevant` probe file that must fire too (absent: none).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        relevance: Option<String>,
    },
    Iti {
        heads: usize,
        direction: Direction,
        alpha: f32,
    },
    /// Proxy-tuning with the expert's shift weighted by `alpha`; `models` names the expert
    /// and the base (their paths).
    Proxy {
        alpha: f32,
        models: String,
    },
}

/// Where a steering setting acts: at every position, or only where the answer is produced
/// (the prompt's last position and each generated one). Written `"all"` / `"answer"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SteerAt {
    All,
    Answer,
}

impl SteerAt {
    /// Where a steering mode acts: a clamp where the answer is produced, an addition everywhere.
    fn of(mode: Mode) -> SteerAt {
        match mode {
            Mode::Clamp => SteerAt::Answer,
            _ => SteerAt::All,
        }
    }

    fn positions(self) -> Positions {
        match self {
            SteerAt::All => Positions::All,
            SteerAt::Answer => Positions::Answer,
        }
    }
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
    /// Proxy-tuning's models and weight (None: the model alone).
    pub proxy: Option<crate::proxy::Proxy>,
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
            proxy: None,
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
    /// Proxy-tuning's expert and base models.
    Proxy,
}

impl Need {
    pub const ALL: [Need; 6] = [
        Need::Probes,
        Need::HeadProbes,
        Need::RankedHeads,
        Need::Gate,
        Need::Edit,
        Need::Proxy,
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
            Method::Proxy => &[Need::Proxy],
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
            Need::Proxy => self.proxy.is_some(),
        }
    }
}

impl Resources {
    /// A hash of what `m`'s settings read besides their own parameters (the probe files, the
    /// gate, the ranked heads; the edits and the proxy models are in each setting's
    /// [`Params`]), so that a journal
    /// never hands back runs made with other artefacts. None for a method that needs none.
    pub fn fingerprint(&self, m: Method) -> Option<String> {
        let json = |p: &Option<crate::probe::ProbeFile>| {
            p.as_ref().map_or(String::new(), |p| {
                serde_json::to_string(p).unwrap_or_default()
            })
        };
        let parts: Vec<String> = m
            .needs()
            .iter()
            .filter_map(|n| match n {
                Need::Probes => Some(json(&self.probes)),
                Need::HeadProbes => Some(json(&self.head_probes)),
                Need::RankedHeads => Some(format!("{:?}{:?}", self.heads, self.context_heads)),
                Need::Gate => Some(json(&self.gate)),
                Need::Edit | Need::Proxy => None,
            })
            .collect();
        (!parts.is_empty()).then(|| format!("{:016x}", crate::data::stable_hash(&parts.join("|"))))
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
    /// A second gate for reft-gated: a `relevant` probe file (its best site). With it every
    /// setting of reft-gated's sweep runs the edit only where both gates fire.
    pub relevance: Option<crate::probe::ProbeFile>,
    /// Greedy tokens per answer (default: the label default for the form).
    pub max_new: Option<usize>,
    /// The trained low-rank edits the `reft` method's dev sweep chooses from.
    pub reft: Vec<crate::reft::Reft>,
    /// Per-head probes (`probe train --per-head` on `attn.hook_z`) for the `iti` method.
    pub head_probes: Option<crate::probe::ProbeFile>,
    /// Proxy-tuning's expert and base for the `proxy` method (its alpha is swept).
    pub proxy: Option<crate::proxy::Proxy>,
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
            positions: SteerAt::All,
        },
        label: format!("{} alpha={alpha} at {}", dir.name(), pf.best),
        plan: Box::new(st),
        cad: None,
        instruct: false,
        proxy: None,
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
            proxy: None,
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
                proxy: None,
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
            proxy: None,
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
        Method::Proxy => proxy_grid(res)?,
    })
}

/// Proxy-tuning at each of [`PROXY_ALPHAS`] (1 is the paper's); the expert and base are part
/// of each setting's key.
fn proxy_grid(res: &Resources) -> Result<Vec<Setting>> {
    let p = res.proxy.as_ref().ok_or_else(|| {
        Error::Invalid("method proxy needs --proxy-expert and --proxy-base".into())
    })?;
    Ok(PROXY_ALPHAS
        .iter()
        .map(|a| Setting {
            method: Method::Proxy,
            strength: Some(*a),
            params: Params::Proxy {
                alpha: *a,
                models: format!("{} - {}", p.expert.path.display(), p.base.path.display()),
            },
            label: format!("proxy alpha={a}"),
            plan: Box::new(crate::Spec::new()),
            cad: None,
            instruct: false,
            proxy: Some(crate::proxy::Proxy {
                alpha: *a,
                ..p.clone()
            }),
        })
        .collect())
}

/// The weights of the expert's shift that the proxy sweep tries.
pub const PROXY_ALPHAS: [f32; 3] = [0.5, 1.0, 2.0];

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
    let at = SteerAt::of(mode);
    let where_ = match at {
        SteerAt::Answer => ", answer positions",
        SteerAt::All => "",
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
                positions: at.positions(),
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
                    positions: at,
                },
                label: format!(
                    "{} meandiff alpha={alpha} at layers {first}-{last}{where_}",
                    mode.name()
                ),
                plan: Box::new(st),
                cad: None,
                instruct: false,
                proxy: None,
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
                proxy: None,
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
            proxy: None,
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A steering setting's key is the JSON saved runs are filed under: typing its fields must
    /// leave the text as it was, or every saved run would be measured again.
    #[test]
    fn a_steer_setting_keeps_its_saved_key() {
        let params = Params::Steer {
            site: "blocks.19.hook_resid_post".into(),
            direction: Direction::Meandiff,
            mode: Mode::Clamp,
            alpha: 2.0,
            layers: Some(vec![18, 19]),
            positions: SteerAt::of(Mode::Clamp),
        };
        assert_eq!(
            setting_key(Method::SteerMulti, &params),
            "{\"method\":\"steer-multi\",\"kind\":\"steer\",\"site\":\"blocks.19.hook_resid_post\",\
             \"direction\":\"meandiff\",\"mode\":\"clamp\",\"alpha\":2.0,\"layers\":[18,19],\
             \"positions\":\"answer\"}"
        );
        assert_eq!(SteerAt::of(Mode::Add).positions(), Positions::All);
        let back: Params = serde_json::from_str(&serde_json::to_string(&params).unwrap()).unwrap();
        assert_eq!(back, params);
    }
}
