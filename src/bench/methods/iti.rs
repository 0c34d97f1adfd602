//! Inference-time intervention (ITI, Li et al. 2023): the heads whose per-head probes rank
//! best, shifted along their directions.

use crate::bench::{Method, Params, Resources, Setting};
use crate::error::{Error, Result};
use crate::model::Model;
use crate::steer::{Direction, Steering};
use crate::Positions;

/// ITI's sweep: the top K heads by per-head probe, shifted by alpha spreads (Li et al. used
/// 48 of 1,024 heads and alpha 15 on LLaMA-7B).
pub(super) fn iti(model: &Model, m: Method, res: &Resources) -> Result<Vec<Setting>> {
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
