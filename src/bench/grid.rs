//! What a setting of a method is (its parameters as data, its key, what it runs), and what the
//! sweeps may draw on (probes, ranked heads, a gate, edits); each method's grid is in
//! [`super::methods`].

use super::Method;
use crate::steer::{Direction, Mode, Plan};
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
    pub(super) fn of(mode: Mode) -> SteerAt {
        match mode {
            Mode::Clamp => SteerAt::Answer,
            _ => SteerAt::All,
        }
    }

    pub(super) fn positions(self) -> Positions {
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
