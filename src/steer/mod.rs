//! Steering vectors: reading one from a file and turning it into a [`Spec`]. A vector file is
//! a JSON array of numbers or a `.safetensors` file holding exactly one 1-D tensor. Steering
//! from probe files builds on this in the steering issue.

use crate::error::{Error, Result};
use crate::hooks::{Action, Intervention, Positions, Site, Spec};
use std::path::Path;

mod cvec;
mod iti;
mod request;
pub use crate::probe::split_site;
pub use crate::probe::Direction;
pub use cvec::{read_cvec, write_cvec, LayerVectors};
pub use iti::ranked_heads;
pub use request::{combine, pair_alphas, plan, plan_as, SteerKind, SteerOptions, SteerRequest};

/// Read a steering vector from a JSON array or a one-tensor safetensors file.
pub fn read_vector(path: &Path) -> Result<Vec<f32>> {
    let is_st = path.extension().is_some_and(|e| e == "safetensors");
    if is_st {
        let map = candle_core::safetensors::load(path, &candle_core::Device::Cpu)
            .map_err(|e| Error::file(path, format!("not a readable safetensors file: {e}")))?;
        if map.len() != 1 {
            let names: Vec<_> = map.keys().cloned().collect();
            return Err(Error::file(
                path,
                format!(
                    "expected exactly one tensor, found {}: {names:?}",
                    map.len()
                ),
            ));
        }
        let t = map
            .into_values()
            .next()
            .ok_or_else(|| Error::file(path, "empty"))?;
        let v = t
            .flatten_all()?
            .to_dtype(candle_core::DType::F32)?
            .to_vec1::<f32>()?;
        return finite_vector(path, v);
    }
    let text = std::fs::read_to_string(path).map_err(|e| Error::file(path, e))?;
    // Read as f64, so that a number past f32's range becomes infinite and is named below.
    let v: Vec<f64> = serde_json::from_str(&text).map_err(|e| {
        Error::file(
            path,
            format!(
                "expected a JSON array of numbers (line {}, column {}): {e}",
                e.line(),
                e.column()
            ),
        )
    })?;
    if v.is_empty() {
        return Err(Error::file(path, "the vector is empty"));
    }
    finite_vector(path, v.into_iter().map(|x| x as f32).collect())
}

/// The vector, or an error naming the first entry that is NaN or infinite.
fn finite_vector(path: &Path, v: Vec<f32>) -> Result<Vec<f32>> {
    match v.iter().position(|x| !x.is_finite()) {
        Some(i) => Err(Error::file(
            path,
            format!("entry {i} of the vector is {}, not a finite number", v[i]),
        )),
        None => Ok(v),
    }
}

/// A spec that adds `alpha * vector` at each of `sites` on `positions`.
pub fn add_spec(sites: &[Site], vector: &[f32], alpha: f32, positions: Positions) -> Spec {
    let mut spec = Spec::new();
    for s in sites {
        spec.push(Intervention::new(
            *s,
            positions.clone(),
            Action::Add {
                vector: vector.to_vec(),
                scale: alpha,
            },
        ));
    }
    spec
}

// ---------------------------------------------------------------------------------------------
// Steering plans: the spec for a batch of prompts.

use crate::choice::Choice;
use crate::model::Model;
use crate::probe::{ProbeFile, SiteProbe, SiteRef};

pub use crate::model::Plan;

crate::choice_enum! {
/// How a direction is applied.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// x += alpha * sigma * u.
    Add = "add",
    /// x += alpha * |h| * u, where |h| is the site's typical residual norm (the root mean
    /// square norm of the probe's training activations): one strength means the same share
    /// of the stream at every layer of a band.
    AddNorm = "add-norm",
    /// Set the projection onto u to the context class mean + alpha * sigma.
    Clamp = "clamp",
    /// Add, but only for prompts whose probe predicts that the prior will win.
    Gated = "gated",
}
}

/// One steered site: a unit direction and its natural scale.
#[derive(Clone, Debug)]
pub struct SteerSite {
    pub site: Site,
    pub direction: Vec<f32>,
    /// Spread (std) of projections onto the direction at this site.
    pub sigma: f32,
    /// Mean projection of the context class.
    pub mean_pos: f32,
    /// Typical norm of the site's activations (root mean square over the probe's examples);
    /// for a per-head probe, of that head's slice.
    pub norm: f32,
    /// For a per-head probe at `attn.hook_z`: the head whose slice the direction lives in.
    pub head: Option<usize>,
}

/// Steering built from a probe file (or a control vector).
#[derive(Clone, Debug)]
pub struct Steering {
    pub sites: Vec<SteerSite>,
    pub mode: Mode,
    pub alpha: f32,
    pub positions: Positions,
    /// For gated mode: the probe that decides which prompts are steered.
    pub gate: Option<Gate>,
    pub label: String,
}

/// Parse `10-20`, `12` or `3,5,7` into layers below `n_layers`.
pub fn parse_layers(s: &str, n_layers: usize) -> Result<Vec<usize>> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let bad = || {
            Error::Invalid(format!(
                "layers `{s}`: use a range like 10-20, a layer, or a comma list; layers are 0..={}",
                n_layers.saturating_sub(1)
            ))
        };
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (
                a.parse::<usize>().map_err(|_| bad())?,
                b.parse::<usize>().map_err(|_| bad())?,
            ),
            None => {
                let l = part.parse::<usize>().map_err(|_| bad())?;
                (l, l)
            }
        };
        if a > b || b >= n_layers {
            return Err(bad());
        }
        out.extend(a..=b);
    }
    if out.is_empty() {
        return Err(Error::Invalid(format!("layers `{s}` names no layer")));
    }
    Ok(crate::hooks::once_each(out))
}

/// One probe site's steering direction, with its spread: strengths are in units of the
/// spread, so a missing or non-positive one is an error (steering would silently be 0).
fn steer_site(p: &SiteProbe, dir: Direction, n_layers: usize) -> Result<SteerSite> {
    let d = p.direction(dir)?;
    let direction = dir.name();
    let sp = p.spread.get(direction).cloned().ok_or_else(|| {
        Error::Invalid(format!(
            "probe site {}: no spread recorded for direction `{direction}`, so a strength \
             in spread units means nothing; retrain the probe with this version",
            p.site
        ))
    })?;
    if !(sp.std.is_finite() && sp.std > 0.0) {
        return Err(Error::Invalid(format!(
            "probe site {}: the spread of direction `{direction}` is {}; it must be a \
             positive number",
            p.site, sp.std
        )));
    }
    let (site, head) = crate::probe::probe_site(&p.site, n_layers)?;
    Ok(SteerSite {
        site,
        direction: d.to_vec(),
        sigma: sp.std,
        mean_pos: sp.mean_pos,
        norm: typical_norm(p),
        head,
    })
}

impl SteerSite {
    /// How far adding moves along the direction at strength `alpha`: in spreads, or for
    /// `add-norm` in typical norms.
    fn add_scale(&self, mode: Mode, alpha: f32) -> f32 {
        match mode {
            Mode::AddNorm => alpha * self.norm,
            _ => alpha * self.sigma,
        }
    }
}

/// The root mean square norm of a probe's training activations, from its per-feature mean and
/// standard deviation: sqrt(sum of mean² + std²).
fn typical_norm(p: &SiteProbe) -> f32 {
    p.mean
        .iter()
        .zip(&p.std)
        .map(|(m, s)| m * m + s * s)
        .sum::<f32>()
        .sqrt()
}

/// How to steer with a probe file: which of its sites, directions, strength and positions.
#[derive(Clone, Debug)]
pub struct ProbeSteer<'a> {
    /// Which of the file's probes.
    pub site: SiteRef,
    /// Steer the probes of the same site kind at each of these layers instead of the one site.
    pub layers: Option<&'a [usize]>,
    pub direction: Direction,
    pub mode: Mode,
    /// Strength in spreads (std of projections), or for `add-norm` in typical norms.
    pub alpha: f32,
    pub positions: Positions,
}

impl Default for ProbeSteer<'_> {
    /// The best site's probe direction, added at 4 spreads at every position.
    fn default() -> Self {
        ProbeSteer {
            site: SiteRef::Best,
            layers: None,
            direction: Direction::Probe,
            mode: Mode::Add,
            alpha: 4.0,
            positions: Positions::All,
        }
    }
}

impl Steering {
    /// Steering from `file` as `how` says: the probe at its site (or `best`), or, with
    /// `layers`, the probes of the same site kind at each of those layers.
    pub fn from_probes(file: &ProbeFile, how: &ProbeSteer, n_layers: usize) -> Result<Steering> {
        let (direction, mode, alpha) = (how.direction, how.mode, how.alpha);
        let anchor = file.site(&how.site)?;
        let (anchor_site, head) = crate::probe::probe_site(&anchor.site, n_layers)?;
        if head.is_some() && (how.layers.is_some() || mode == Mode::Gated) {
            return Err(Error::Invalid(format!(
                "{} is one head's probe: it can steer that head, but neither a band of layers nor a gate (those need whole-site probes)",
                anchor.site
            )));
        }
        let chosen: Vec<&SiteProbe> = match how.layers {
            None => vec![anchor],
            Some(ls) => ls
                .iter()
                .map(|l| file.site(&SiteRef::Named(Site::new(anchor_site.kind, *l).to_string())))
                .collect::<Result<_>>()?,
        };
        let sites = chosen
            .into_iter()
            .map(|p| steer_site(p, direction, n_layers))
            .collect::<Result<Vec<_>>>()?;
        let gate = (mode == Mode::Gated).then(|| Gate {
            site: anchor_site,
            probe: anchor.clone(),
            fire_on_positive: false,
            margin: 0.0,
            at: crate::capture::PosMode::Last,
        });
        let label = format!(
            "{mode:?} {} alpha={alpha} at {}",
            direction.name(),
            sites
                .iter()
                .map(|s| s.site.to_string())
                .collect::<Vec<_>>()
                .join(",")
        );
        Ok(Steering {
            sites,
            mode,
            alpha,
            positions: how.positions.clone(),
            gate,
            label,
        })
    }

    /// The interventions for the rows in `rows` (all rows when None).
    fn spec_rows(&self, rows: Option<Vec<usize>>) -> Spec {
        let mut spec = Spec::new();
        for s in &self.sites {
            let action = match self.mode {
                Mode::Add | Mode::Gated | Mode::AddNorm => Action::Add {
                    vector: s.direction.clone(),
                    scale: s.add_scale(self.mode, self.alpha),
                },
                Mode::Clamp => Action::Clamp {
                    direction: s.direction.clone(),
                    value: s.mean_pos + self.alpha * s.sigma,
                },
            };
            let mut iv = Intervention::new(s.site, self.positions.clone(), action);
            iv.rows = rows.clone();
            iv.heads = s.head.map(|h| vec![h]);
            spec.push(iv);
        }
        spec
    }

    /// For gated mode: which prompts the probe predicts will follow the prior (and get steered).
    pub fn gate_rows(&self, model: &Model, prompts: &[Vec<u32>]) -> Result<Vec<bool>> {
        match &self.gate {
            Some(g) => g.rows(model, prompts),
            None => Ok(vec![true; prompts.len()]),
        }
    }
}

impl Plan for Steering {
    fn spec_for(&self, model: &Model, prompts: &[Vec<u32>]) -> Result<Spec> {
        // Strength 0 turns adding off; a clamp at 0 still sets the projection (to the context
        // class mean), so it is not skipped.
        if self.alpha == 0.0 && self.mode != Mode::Clamp {
            return Ok(Spec::new());
        }
        if self.mode != Mode::Gated {
            return Ok(self.spec_rows(None));
        }
        let gated = fired(&self.gate_rows(model, prompts)?);
        if gated.is_empty() {
            return Ok(Spec::new());
        }
        Ok(self.spec_rows(Some(gated)))
    }
    fn describe(&self) -> String {
        self.label.clone()
    }
}

/// A plan made of several: their interventions in order.
pub struct Plans(pub Vec<Box<dyn Plan>>);

impl Plan for Plans {
    fn spec_for(&self, model: &Model, prompts: &[Vec<u32>]) -> Result<Spec> {
        self.spec_for_subjects(model, prompts, &[])
    }
    fn spec_for_subjects(
        &self,
        model: &Model,
        prompts: &[Vec<u32>],
        subject_last: &[Option<usize>],
    ) -> Result<Spec> {
        let mut spec = Spec::new();
        for p in &self.0 {
            let s = p.spec_for_subjects(model, prompts, subject_last)?;
            spec.interventions.extend(s.interventions);
        }
        Ok(spec)
    }
    fn reads_subjects(&self) -> bool {
        self.0.iter().any(|p| p.reads_subjects())
    }
    fn describe(&self) -> String {
        let parts: Vec<String> = self
            .0
            .iter()
            .map(|p| p.describe())
            .filter(|d| d != "none")
            .collect();
        if parts.is_empty() {
            "none".into()
        } else {
            parts.join(" + ")
        }
    }
}

/// A probe read at each prompt's last position (or, for a probe trained at the subject's last
/// token, there) that decides which prompts are steered.
///
/// A `follows_context` probe fires where it predicts the prior will win (score <= 0). A
/// `conflict` probe, trained on counterfactual contexts against true contexts and no context,
/// fires where it sees a context that contradicts memory (score > 0): prompts without one,
/// closed-book questions included, are left untouched.
#[derive(Clone, Debug)]
pub struct Gate {
    pub site: Site,
    pub probe: SiteProbe,
    /// Fire where the score is positive (`conflict`, `known`), else where it is not
    /// (`follows_context`: the prior will win).
    pub fire_on_positive: bool,
    /// How far past the probe's own boundary (score 0) the gate still fires, in logits: 0 is
    /// the probe's decision; a larger margin fires on more prompts (a `conflict` gate then
    /// fires where score > -margin).
    pub margin: f32,
    /// Where the probe reads: the last token, or the last token of the subject's last mention
    /// where the caller knows it ([`Plan::spec_for_subjects`]), else the last token, as
    /// `capture --positions subject-last` falls back.
    pub at: crate::capture::PosMode,
}

impl Gate {
    /// The gate of a probe file at `site` (or `best`); its target sets which side fires.
    pub fn from_probes(file: &ProbeFile, site: &SiteRef, n_layers: usize) -> Result<Gate> {
        use crate::capture::PosMode;
        let p = file.site(site)?;
        if file.positions == PosMode::Mean {
            return Err(Error::Invalid(format!(
                "probe file for {}: trained on the mean over the prompt's tokens; a gate reads \
                 one token (capture with --positions last or subject-last)",
                p.site
            )));
        }
        Ok(Gate {
            site: Site::parse(&p.site, n_layers)?,
            probe: p.clone(),
            fire_on_positive: file.target != crate::probe::Target::FollowsContext,
            margin: 0.0,
            at: file.positions,
        })
    }

    /// Whether the gate fires for each prompt (one forward pass over the batch, capture only),
    /// read at each prompt's last token.
    pub fn rows(&self, model: &Model, prompts: &[Vec<u32>]) -> Result<Vec<bool>> {
        self.rows_at(model, prompts, &[])
    }

    /// [`Gate::rows`], where a gate trained at the subject's last token reads row r at
    /// `subject_last[r]` (the last token where that is None or missing).
    pub fn rows_at(
        &self,
        model: &Model,
        prompts: &[Vec<u32>],
        subject_last: &[Option<usize>],
    ) -> Result<Vec<bool>> {
        if prompts.is_empty() {
            return Ok(vec![]);
        }
        // `from_probes` refuses the mean, so every row has its one token.
        let at = |r: usize, p: &[u32]| {
            let subject = subject_last.get(r).copied().flatten();
            self.at.token(p.len(), subject).unwrap_or(p.len() - 1)
        };
        let pad = model.tokenizer.eos_id.unwrap_or(0);
        let spec = Spec::capture(&[self.site], self.at.captured());
        let (_, caps) = model.run(
            &crate::model::Batch::left_padded(prompts, pad),
            &spec,
            crate::model::LogitsAt::Last,
        )?;
        prompts
            .iter()
            .enumerate()
            .map(|(r, p)| {
                let x = caps
                    .at(self.site, r, at(r, p))
                    .ok_or_else(|| Error::Invalid(format!("no gate capture at {}", self.site)))?;
                if x.len() != self.probe.weights.len() {
                    return Err(Error::BadLength {
                        what: "the gate probe's weight vector".into(),
                        site: self.site.to_string(),
                        got: self.probe.weights.len(),
                        expected: x.len(),
                    });
                }
                let z = self.probe.score(x);
                Ok(match self.fire_on_positive {
                    true => z > -self.margin,
                    false => z <= self.margin,
                })
            })
            .collect()
    }
}

/// The rows where `gates` is true.
fn fired(gates: &[bool]) -> Vec<usize> {
    gates
        .iter()
        .enumerate()
        .filter_map(|(r, g)| g.then_some(r))
        .collect()
}

/// Any plan, applied only to the prompts where a gate fires; the other rows get no
/// intervention at all, so their logits are bit-identical to the plain forward.
pub struct Gated {
    pub gate: Gate,
    pub inner: Box<dyn Plan>,
}

impl Plan for Gated {
    fn spec_for(&self, model: &Model, prompts: &[Vec<u32>]) -> Result<Spec> {
        self.spec_for_subjects(model, prompts, &[])
    }
    fn spec_for_subjects(
        &self,
        model: &Model,
        prompts: &[Vec<u32>],
        subject_last: &[Option<usize>],
    ) -> Result<Spec> {
        let rows = fired(&self.gate.rows_at(model, prompts, subject_last)?);
        if rows.is_empty() {
            return Ok(Spec::new());
        }
        let mut spec = self.inner.spec_for_subjects(model, prompts, subject_last)?;
        for iv in &mut spec.interventions {
            iv.rows = Some(match iv.rows.take() {
                Some(own) => own.into_iter().filter(|r| rows.contains(r)).collect(),
                None => rows.clone(),
            });
        }
        spec.interventions
            .retain(|iv| iv.rows.as_ref().is_none_or(|r| !r.is_empty()));
        Ok(spec)
    }
    fn reads_subjects(&self) -> bool {
        self.gate.at == crate::capture::PosMode::SubjectLast || self.inner.reads_subjects()
    }
    fn describe(&self) -> String {
        format!(
            "{} where the probe at {} fires",
            self.inner.describe(),
            self.gate.site
        )
    }
}

/// Parse head scalings such as `12.3=0,14.1=0.5` into scaling interventions at `attn.hook_z`.
pub fn scale_heads_spec(s: &str, n_layers: usize, n_heads: usize) -> Result<Spec> {
    let mut spec = Spec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let bad = || {
            Error::Invalid(format!("head scaling `{part}`: use LAYER.HEAD=FACTOR, e.g. 12.3=0 (layers 0..={}, heads 0..={})", n_layers - 1, n_heads - 1))
        };
        let (lh, f) = part.split_once('=').ok_or_else(bad)?;
        let (l, h) = lh.split_once('.').ok_or_else(bad)?;
        let (l, h): (usize, usize) = (l.parse().map_err(|_| bad())?, h.parse().map_err(|_| bad())?);
        let factor: f32 = f.parse().map_err(|_| bad())?;
        if l >= n_layers || h >= n_heads || !factor.is_finite() {
            return Err(bad());
        }
        let site = Site::new(crate::hooks::SiteKind::AttnZ, l);
        if spec
            .interventions
            .iter()
            .any(|iv| iv.site == site && iv.heads.as_deref() == Some(&[h]))
        {
            return Err(Error::Invalid(format!(
                "head scaling names head {l}.{h} twice; give each head once"
            )));
        }
        spec.push(
            Intervention::new(
                Site::new(crate::hooks::SiteKind::AttnZ, l),
                Positions::All,
                Action::Scale { factor },
            )
            .on_heads(vec![h]),
        );
    }
    Ok(spec)
}
