//! The fluency cost: perplexity of a fixed neutral text, under a plan or proxy-tuned.

use crate::error::Result;
use crate::model::{Batch, LogitsAt, Model};
use crate::steer::Plan;

/// Perplexity of `text` under `plan`.
pub fn perplexity(model: &Model, text: &str, plan: &dyn Plan) -> Result<f64> {
    let ids = model.tokenizer.encode_prompt(text)?;
    let spec = plan.spec_for(model, std::slice::from_ref(&ids))?;
    let (logits, _) = model.run(&Batch::single(&ids), &spec, LogitsAt::All)?;
    let lp = crate::model::llama::log_softmax(&logits)?
        .squeeze(0)?
        .to_vec2::<f32>()?;
    Ok(from_logp(&ids, |j, t| lp[j][t as usize]))
}

/// [`perplexity`] of the proxy-tuned model: at each position the model's logits plus alpha
/// times the expert's minus the base's.
pub fn proxy_perplexity(model: &Model, proxy: &crate::proxy::Proxy, text: &str) -> Result<f64> {
    let ids = model.tokenizer.encode_prompt(text)?;
    let logits = |m: &Model| -> Result<Vec<Vec<f32>>> {
        let (l, _) = m.run(&Batch::single(&ids), &crate::Spec::new(), LogitsAt::All)?;
        Ok(l.squeeze(0)?.to_vec2::<f32>()?)
    };
    let (lm, le, lb) = (logits(model)?, logits(&proxy.expert)?, logits(&proxy.base)?);
    Ok(from_logp(&ids, |j, t| {
        let c = proxy.combine(&lm[j], &le[j], &lb[j]);
        crate::generate::log_softmax_vec(&c)[t as usize]
    }))
}

/// exp of the mean negative log-probability of each token of `ids` after the ones before it;
/// `logp(j, t)` is the log-probability of token `t` at the position after `j`.
fn from_logp(ids: &[u32], logp: impl Fn(usize, u32) -> f32) -> f64 {
    let nll: f64 = (1..ids.len()).map(|j| -(logp(j - 1, ids[j]) as f64)).sum();
    (nll / (ids.len() - 1).max(1) as f64).exp()
}
