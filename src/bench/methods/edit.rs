//! The learned edit's settings: each trained edit alone, with context-aware decoding, or behind
//! the conflict gate (and the relevance gate when one is given) at several margins and scales.

use crate::bench::{Method, Params, Resources, Setting};
use crate::error::{Error, Result};
use crate::model::Model;
use crate::probe::SiteRef;
use crate::steer::Plan;
use crate::Positions;

/// Each trained edit, alone or with context-aware decoding at each of `betas`.
/// Each trained edit alone.
pub(super) fn reft(_: &Model, m: Method, res: &Resources) -> Result<Vec<Setting>> {
    reft_grid(m, res, &[None])
}

/// Each trained edit with context-aware decoding at three strengths.
pub(super) fn reft_cad(_: &Model, m: Method, res: &Resources) -> Result<Vec<Setting>> {
    reft_grid(m, res, &[Some(0.5), Some(1.0), Some(2.0)])
}

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
                    scale: None,
                    relevance: None,
                },
                label: beta.map_or(edit.clone(), |b| format!("{edit} + cad beta={b}")),
                plan: Box::new(r.clone()),
                cad: beta.map(crate::generate::CadWeight::Fixed),
                instruct: false,
                proxy: None,
            });
        }
    }
    Ok(v)
}

/// Each trained edit behind the conflict gate: applied only to the prompts where the gate's
/// probe sees a context that contradicts memory. The sweep also widens the gate (margins 2 and
/// 4 logits past the probe's boundary): it then catches more conflicts, and the dev sweep's
/// retention bar says when it starts to touch closed-book questions. Each is also tried at
/// twice the edit's trained change ([`GATED_SCALES`]): the gate, not the edit's size, keeps
/// it off closed-book questions, so a stronger edit may follow more contexts where it fires.
/// Given a `relevant` probe file as well, the edit runs only where both gates fire.
pub(super) fn reft_gated(model: &Model, _: Method, res: &Resources) -> Result<Vec<Setting>> {
    let gate = conflict_gate(model, Method::ReftGated, res)?;
    // Given a relevance gate, every setting has it: both gates must fire.
    let relevance = match &res.relevance {
        Some(pf) => {
            let fp = crate::data::stable_hash(&serde_json::to_string(pf).unwrap_or_default());
            let g = crate::steer::Gate::from_probes(pf, &SiteRef::Best, model.cfg().n_layers)?;
            Some((g, format!("{fp:016x}")))
        }
        None => None,
    };
    let mut v = vec![];
    for margin in [0.0f32, 2.0, 4.0] {
        for scale in GATED_SCALES {
            let edits = reft_grid(Method::ReftGated, res, &[None])?;
            for (mut s, reft) in edits.into_iter().zip(&res.reft) {
                let edit: Box<dyn Plan> = match scale {
                    1.0 => Box::new(reft.clone()),
                    k => Box::new(crate::reft::ScaledEdit {
                        reft: reft.clone(),
                        scale: k,
                        positions: Positions::All,
                    }),
                };
                let conflict = crate::steer::Gated {
                    gate: crate::steer::Gate {
                        margin,
                        ..gate.clone()
                    },
                    inner: edit,
                };
                s.plan = match &relevance {
                    Some((g, _)) => Box::new(crate::steer::Gated {
                        gate: g.clone(),
                        inner: Box::new(conflict),
                    }),
                    None => Box::new(conflict),
                };
                s.label = gated_label(&s.label, scale, margin, relevance.is_some());
                s.strength = Some(margin);
                if let Params::Reft {
                    gate_margin,
                    scale: sc,
                    relevance: rel,
                    ..
                } = &mut s.params
                {
                    *gate_margin = Some(margin);
                    *sc = (scale != 1.0).then_some(scale);
                    *rel = relevance.as_ref().map(|(_, fp)| fp.clone());
                }
                v.push(s);
            }
        }
    }
    Ok(v)
}

/// The gate of the gated methods: the `conflict` probe file's best site.
pub(super) fn conflict_gate(
    model: &Model,
    m: Method,
    res: &Resources,
) -> Result<crate::steer::Gate> {
    let pf = res.gate.as_ref().ok_or_else(|| {
        Error::Invalid(format!("method {} needs a conflict probe file", m.name()))
    })?;
    crate::steer::Gate::from_probes(pf, &SiteRef::Best, model.cfg().n_layers)
}

/// The scales of the trained edit's change that the gated sweep tries.
pub const GATED_SCALES: [f32; 2] = [1.0, 2.0];

/// "EDIT [x2] where the conflict gate fires[, margin M][ and the relevance gate]".
fn gated_label(edit: &str, scale: f32, margin: f32, relevance: bool) -> String {
    let mut l = edit.to_string();
    if scale != 1.0 {
        l += &format!(" x{scale}");
    }
    l += " where the conflict gate fires";
    if margin != 0.0 {
        l += &format!(", margin {margin}");
    }
    if relevance {
        l += ", and the relevance gate";
    }
    l
}
