//! The optimizer the organisms train with.

use crate::error::Result;
use candle_core::{Tensor, Var};
use std::collections::BTreeMap;

/// AdamW with decoupled weight decay (none on norm weights), its moments kept by name.
pub struct AdamW {
    pub m: BTreeMap<String, Tensor>,
    pub v: BTreeMap<String, Tensor>,
    /// Steps taken.
    pub t: usize,
}

impl AdamW {
    /// Zero moments for each of `vars`.
    pub fn new(vars: &BTreeMap<String, Var>) -> Result<AdamW> {
        let zeros = || -> Result<BTreeMap<String, Tensor>> {
            vars.iter()
                .map(|(k, v)| Ok((k.clone(), v.as_tensor().zeros_like()?)))
                .collect()
        };
        Ok(AdamW {
            m: zeros()?,
            v: zeros()?,
            t: 0,
        })
    }

    /// One update of every weight in `vars` from `grads`, at learning rate `lr`, matrices
    /// decayed by `weight_decay`.
    pub fn step(
        &mut self,
        vars: &BTreeMap<String, Var>,
        weight_decay: f64,
        grads: &candle_core::backprop::GradStore,
        lr: f64,
    ) -> Result<()> {
        let (b1, b2, eps) = (0.9f64, 0.95f64, 1e-8f64);
        self.t += 1;
        let (c1, c2) = (1.0 - b1.powi(self.t as i32), 1.0 - b2.powi(self.t as i32));
        for (name, var) in vars {
            let Some(g) = grads.get(var.as_tensor()) else {
                continue;
            };
            let m = ((&self.m[name] * b1)? + (g * (1.0 - b1))?)?;
            let v = ((&self.v[name] * b2)? + (g.sqr()? * (1.0 - b2))?)?;
            let update = ((&m / c1)? / ((&v / c2)?.sqrt()? + eps)?)?;
            let w = var.as_tensor();
            let decay = if w.rank() > 1 { weight_decay } else { 0.0 };
            let next = ((w * (1.0 - lr * decay))? - (update * lr)?)?;
            var.set(&next)?;
            self.m.insert(name.clone(), m);
            self.v.insert(name.clone(), v);
        }
        Ok(())
    }
}
