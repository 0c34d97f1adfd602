//! One steering vocabulary. A file given to `--steer FILE[:SITE]` is a probe file, a raw
//! vector, a llama.cpp control vector or a learned edit, told apart by its bytes, and each kind
//! has one unit for its strength:
//!
//! | kind | file | `:SITE` | strength (`--alpha`) | default |
//! |---|---|---|---|---|
//! | probe file | JSON object (`probe train`) | a probe's site or `best` (default) | spreads of the projections | 4 |
//! | raw vector | JSON array, or safetensors with one tensor | required: where to add it | multiplies the vector | 1 |
//! | control vector | GGUF (llama.cpp, `export-cvec`) | none: its own layers | multiplies every layer's vector | 1 |
//! | learned edit | safetensors from `reft train` | none: its own sites | scales its change (0 = off) | 1 |

use super::{Mode, ProbeSteer, Steering};
use crate::choice::Choice;
use crate::error::{Error, Result};
use crate::hooks::{Positions, Site};
use crate::model::{Model, Plan};
use crate::probe::{split_site, Direction, ProbeFile, SiteRef};
use std::io::Read;
use std::path::{Path, PathBuf};

crate::choice_enum! {
/// What a steering file holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SteerKind {
    /// Probes from `probe train`: steer along a probe site's direction, in spreads.
    Probes = "probe file",
    /// A raw vector (JSON array or one-tensor safetensors) added at a named site.
    Vector = "raw vector",
    /// A llama.cpp control vector (GGUF): one vector per layer, added to the block outputs.
    ControlVector = "control vector",
    /// A learned low-rank edit from `reft train` (safetensors with ctxsteer metadata).
    Edit = "learned edit",
}
}

impl SteerKind {
    /// Tell the kind from the file's first bytes (and a safetensors file's header).
    pub fn detect(path: &Path) -> Result<SteerKind> {
        let mut f = std::fs::File::open(path).map_err(|e| Error::file(path, e))?;
        let mut head = Vec::new();
        (&mut f)
            .take(4096)
            .read_to_end(&mut head)
            .map_err(|e| Error::file(path, e))?;
        if head.starts_with(b"GGUF") {
            return Ok(SteerKind::ControlVector);
        }
        if head.len() > 8 && head[8] == b'{' {
            return safetensors_kind(path);
        }
        match head.iter().find(|b| !b.is_ascii_whitespace()) {
            Some(b'[') => Ok(SteerKind::Vector),
            Some(b'{') => Ok(SteerKind::Probes),
            _ => Err(Error::file(
                path,
                "not a steering file: expected a probe file (JSON object), a vector (JSON \
                 array or safetensors), a control vector (GGUF) or a learned edit (safetensors \
                 from `reft train`)",
            )),
        }
    }

    /// The strength used when none is given: 4 spreads for a probe, 1 for the others.
    pub fn default_alpha(self) -> f32 {
        match self {
            SteerKind::Probes => 4.0,
            _ => 1.0,
        }
    }
}

/// A safetensors file is an edit when its header carries ctxsteer's metadata.
fn safetensors_kind(path: &Path) -> Result<SteerKind> {
    let bytes = std::fs::read(path).map_err(|e| Error::file(path, e))?;
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes)
        .map_err(|e| Error::file(path, format!("not a readable safetensors file: {e}")))?;
    let edit = header
        .metadata()
        .as_ref()
        .is_some_and(|m| m.contains_key(crate::reft::META_KEY));
    Ok(if edit {
        SteerKind::Edit
    } else {
        SteerKind::Vector
    })
}

/// One `--steer FILE[:SITE]` with its strength (None: the kind's default).
#[derive(Clone, Debug, PartialEq)]
pub struct SteerRequest {
    pub path: PathBuf,
    pub site: Option<String>,
    pub alpha: Option<f32>,
}

impl SteerRequest {
    /// `FILE[:SITE]`, split as [`split_site`] says.
    pub fn parse(arg: &str) -> SteerRequest {
        let (file, site) = split_site(arg);
        SteerRequest {
            path: PathBuf::from(file),
            site: site.map(str::to_string),
            alpha: None,
        }
    }

    /// The argument as the user wrote it.
    pub fn arg(&self) -> String {
        match &self.site {
            Some(s) => format!("{}:{s}", self.path.display()),
            None => self.path.display().to_string(),
        }
    }
}

/// How probe-file steering is applied, and where every kind but an edit's sites act.
#[derive(Clone, Debug)]
pub struct SteerOptions {
    /// Steer a probe file's probes at each of these layers instead of the one site.
    pub layers: Option<Vec<usize>>,
    pub direction: Direction,
    pub mode: Mode,
    pub positions: Positions,
}

impl Default for SteerOptions {
    fn default() -> Self {
        SteerOptions {
            layers: None,
            direction: Direction::Probe,
            mode: Mode::Add,
            positions: Positions::All,
        }
    }
}

/// One strength per steering file from the strengths given: none (each kind's default), one
/// for all, or one per file in order; None when the counts fit none of these.
pub fn pair_alphas(files: usize, alphas: &[f32]) -> Option<Vec<Option<f32>>> {
    match alphas.len() {
        0 => Some(vec![None; files]),
        1 => Some(vec![Some(alphas[0]); files]),
        m if m == files => Some(alphas.iter().map(|a| Some(*a)).collect()),
        _ => None,
    }
}

/// The plan one request describes for `model`, checked against it.
pub fn plan(model: &Model, req: &SteerRequest, opts: &SteerOptions) -> Result<Box<dyn Plan>> {
    plan_as(model, req, SteerKind::detect(&req.path)?, opts)
}

/// [`plan`] for a request whose file is already known to be of `kind`.
pub fn plan_as(
    model: &Model,
    req: &SteerRequest,
    kind: SteerKind,
    opts: &SteerOptions,
) -> Result<Box<dyn Plan>> {
    let path = req.path.as_path();
    if kind != SteerKind::Probes && opts.layers.is_some() {
        return Err(Error::file(
            path,
            format!(
                "--layers picks a probe file's layers; this is a {}",
                kind.name()
            ),
        ));
    }
    let plan = build_plan(model, req, kind, opts)?;
    model
        .validate(&plan.spec_for(model, &[])?)
        .map_err(|e| Error::file(path, e))?;
    Ok(plan)
}

/// The plan of [`plan_as`], not yet checked against the model.
fn build_plan(
    model: &Model,
    req: &SteerRequest,
    kind: SteerKind,
    opts: &SteerOptions,
) -> Result<Box<dyn Plan>> {
    let path = req.path.as_path();
    let alpha = req.alpha.unwrap_or(kind.default_alpha());
    let n_layers = model.cfg().n_layers;
    let own_sites = |what: &str| {
        let site = req.site.as_deref().unwrap_or_default();
        Error::file(
            path,
            format!("a {} has its own {what}; drop `:{site}`", kind.name()),
        )
    };
    Ok(match kind {
        SteerKind::Probes => {
            let pf = ProbeFile::read_for(path, &model.identity()?)?;
            let how = ProbeSteer {
                site: SiteRef::or_best(req.site.as_deref()),
                layers: opts.layers.as_deref(),
                direction: opts.direction,
                mode: opts.mode,
                alpha,
                positions: opts.positions.clone(),
            };
            Box::new(Steering::from_probes(&pf, &how, n_layers)?)
        }
        SteerKind::Vector => {
            let Some(site) = &req.site else {
                return Err(Error::file(
                    path,
                    "a raw vector needs the site to add it at: FILE:SITE, e.g. \
                     FILE:blocks.12.hook_resid_post (patterns like blocks.10-14.hook_resid_post work)",
                ));
            };
            let v = super::read_vector(path)?;
            let sites = Site::parse_pattern(site, n_layers)?;
            Box::new(super::add_spec(&sites, &v, alpha, opts.positions.clone()))
        }
        SteerKind::ControlVector if req.site.is_some() => return Err(own_sites("layers")),
        SteerKind::ControlVector => Box::new(Steering::from_cvec(
            path,
            alpha,
            opts.positions.clone(),
            n_layers,
        )?),
        SteerKind::Edit if req.site.is_some() => return Err(own_sites("sites")),
        SteerKind::Edit => Box::new(crate::reft::ScaledEdit {
            reft: crate::reft::Reft::load(path, model)?,
            scale: alpha,
            positions: opts.positions.clone(),
        }),
    })
}

/// `plans` in order as one plan, behind the gate `gate` (`FILE[:SITE]`, a probe file at a site
/// or its best) when one is given: then only prompts where the gate's probe fires are steered.
/// `margin` (logits) widens the gate past its probe's boundary (see [`super::Gate::margin`]).
pub fn combine(
    model: &Model,
    plans: Vec<Box<dyn Plan>>,
    gate: Option<&str>,
    margin: f32,
) -> Result<Box<dyn Plan>> {
    let plan = Box::new(super::Plans(plans));
    let Some(g) = gate else {
        return Ok(plan);
    };
    let (file, site) = split_site(g);
    let pf = ProbeFile::read_for(Path::new(file), &model.identity()?)?;
    let which = SiteRef::or_best(site);
    let mut gate = super::Gate::from_probes(&pf, &which, model.cfg().n_layers)
        .map_err(|e| Error::Invalid(format!("gate {g}: {e}")))?;
    if !margin.is_finite() {
        return Err(Error::Invalid(format!(
            "gate margin {margin} is not a finite number"
        )));
    }
    gate.margin = margin;
    Ok(Box::new(super::Gated { gate, inner: plan }))
}
