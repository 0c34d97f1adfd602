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
    let nll: f64 = (1..ids.len())
        .map(|j| -(lp[j - 1][ids[j] as usize] as f64))
        .sum();
    Ok((nll / (ids.len() - 1).max(1) as f64).exp())
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
    let nll: f64 = (1..ids.len())
        .map(|j| {
            let c = proxy.combine(&lm[j - 1], &le[j - 1], &lb[j - 1]);
            let m = c.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
            let lse = c.iter().map(|x| (x - m).exp()).sum::<f32>().ln() + m;
            (lse - c[ids[j] as usize]) as f64
        })
        .sum();
    Ok((nll / (ids.len() - 1).max(1) as f64).exp())
}
