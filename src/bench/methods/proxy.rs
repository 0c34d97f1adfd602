//! Proxy-tuning (Liu et al. 2024): the model's logits shifted at every step by alpha times a
//! tuned expert's minus its untuned base's.

use crate::bench::{Method, Params, Resources, Setting};
use crate::error::{Error, Result};
use crate::model::Model;

/// Proxy-tuning at each of [`PROXY_ALPHAS`] (1 is the paper's); the expert and base are part
/// of each setting's key.
pub(super) fn proxy(_: &Model, _: Method, res: &Resources) -> Result<Vec<Setting>> {
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
