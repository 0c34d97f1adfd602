//! Head scaling: the heads that carry the context's answer scaled up and those that push the
//! prior scaled down, both ranked by ablation (`heads`), also behind the conflict gate
//! (`heads-gated`); and the rankings read from a head-patching result.

use super::edit::conflict_gate;
use crate::bench::{Method, Params, Resources, Setting};
use crate::error::{Error, Result};
use crate::model::Model;
use crate::steer::Plan;

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

pub(super) fn heads(model: &Model, m: Method, res: &Resources) -> Result<Vec<Setting>> {
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
