//! The methods that change only the prompt or the decoding: none, an instruction, and
//! context-aware decoding at fixed strengths or at the JSD of each step (AdaCAD).

use crate::bench::{Method, Params, Resources, Setting};
use crate::error::Result;
use crate::model::Model;

/// No intervention: the one setting every other is measured against.
pub(super) fn none(_: &Model, _: Method, _: &Resources) -> Result<Vec<Setting>> {
    Ok(vec![Setting::none()])
}

/// The instruction [`crate::bench::INSTRUCTION`] before the context.
pub(super) fn instruct(_: &Model, m: Method, _: &Resources) -> Result<Vec<Setting>> {
    Ok(vec![Setting {
        method: m,
        strength: None,
        params: Params::Instruction,
        label: "instruction".into(),
        plan: Box::new(crate::Spec::new()),
        cad: None,
        instruct: true,
        proxy: None,
    }])
}

/// Context-aware decoding at each strength the sweep tries.
pub(super) fn cad(_: &Model, m: Method, _: &Resources) -> Result<Vec<Setting>> {
    Ok([0.5f32, 1.0, 2.0, 4.0]
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
        .collect())
}

/// AdaCAD: nothing to sweep.
pub(super) fn adacad(_: &Model, m: Method, _: &Resources) -> Result<Vec<Setting>> {
    Ok(vec![Setting {
        method: m,
        strength: None,
        params: Params::AdaCad,
        label: "beta=JSD per step".into(),
        plan: Box::new(crate::Spec::new()),
        cad: Some(crate::generate::CadWeight::Jsd),
        instruct: false,
        proxy: None,
    }])
}
