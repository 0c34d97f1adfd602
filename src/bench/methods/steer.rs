//! The methods that steer along a probe file's directions: at its best site (`steer`, and
//! behind the file's own gate, `steer-gated`), or over a band of layers (`steer-multi` adds,
//! `clamp` sets the projection).

use crate::bench::grid::SteerAt;
use crate::bench::{Method, Params, Resources, Setting};
use crate::choice::Choice;
use crate::error::{Error, Result};
use crate::model::Model;
use crate::steer::{Direction, Mode, ProbeSteer, Steering};

/// Both directions, added at two strengths.
pub(super) fn steer(model: &Model, m: Method, res: &Resources) -> Result<Vec<Setting>> {
    let mut v = vec![];
    for dir in [Direction::Meandiff, Direction::Probe] {
        for a in [0.5f32, 1.0] {
            v.push(steer_setting(model, m, res, Mode::Add, dir, a)?);
        }
    }
    Ok(v)
}

/// The mean-difference direction where the probe predicts the prior will win.
pub(super) fn steer_gated(model: &Model, m: Method, res: &Resources) -> Result<Vec<Setting>> {
    [0.5f32, 1.0]
        .iter()
        .map(|a| steer_setting(model, m, res, Mode::Gated, Direction::Meandiff, *a))
        .collect()
}

/// Added over each band, relative to each layer's typical norm.
pub(super) fn steer_multi(model: &Model, m: Method, res: &Resources) -> Result<Vec<Setting>> {
    band_grid(model, m, res, Mode::AddNorm, &[0.01, 0.02, 0.04])
}

/// Clamped over each band to the follows-context class mean (plus alpha spreads).
pub(super) fn clamp(model: &Model, m: Method, res: &Resources) -> Result<Vec<Setting>> {
    band_grid(model, m, res, Mode::Clamp, &[0.0, 1.0])
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
/// prompt to a last-token class mean broke closed-book answers and fluency on dev
/// (docs/results.md).
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
