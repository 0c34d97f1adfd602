//! Hook sites, interventions and captures.
//!
//! A [`Site`] names one place in the forward pass with TransformerLens's vocabulary
//! (`blocks.3.hook_resid_post`, `blocks.3.attn.hook_z`, ...). A [`Spec`] is an ordered list of
//! [`Intervention`]s; the model calls [`Hooks::apply`] at each site, explicitly, and nothing
//! else can touch its activations. A site whose spec is empty is returned untouched, so an
//! empty spec gives bit-identical logits. Activations at a site are seen as rows of
//! `[batch, seq, width]`; for `attn.hook_z` the width is `n_heads * d_head`, head-major.

use crate::error::{Error, Result};
use std::collections::BTreeMap;
use std::fmt;

mod lowrank;
mod run;
mod serde_spec;
mod tensor_ops;
pub use lowrank::LowRank;
pub use run::{CapturedRow, Captures, Hooks, RowInfo};

/// The kind of a hook site; `Embed` and `LnFinal` have no layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SiteKind {
    Embed,
    ResidPre,
    AttnZ,
    AttnOut,
    ResidMid,
    MlpPost,
    MlpOut,
    ResidPost,
    LnFinal,
}

impl SiteKind {
    /// Every kind with its name: the suffix after `blocks.{l}.` for per-layer kinds.
    pub const ALL: [(SiteKind, &'static str); 9] = [
        (SiteKind::Embed, "hook_embed"),
        (SiteKind::ResidPre, "hook_resid_pre"),
        (SiteKind::AttnZ, "attn.hook_z"),
        (SiteKind::AttnOut, "hook_attn_out"),
        (SiteKind::ResidMid, "hook_resid_mid"),
        (SiteKind::MlpPost, "mlp.hook_post"),
        (SiteKind::MlpOut, "hook_mlp_out"),
        (SiteKind::ResidPost, "hook_resid_post"),
        (SiteKind::LnFinal, "ln_final.hook_normalized"),
    ];

    pub fn per_layer(self) -> bool {
        !matches!(self, SiteKind::Embed | SiteKind::LnFinal)
    }

    pub fn name(self) -> &'static str {
        SiteKind::ALL
            .iter()
            .find(|(k, _)| *k == self)
            .map(|(_, n)| *n)
            .unwrap_or("?")
    }
}

/// One hook site. `layer` is 0 for the sites outside the blocks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Site {
    pub layer: usize,
    pub kind: SiteKind,
}

impl Site {
    pub fn new(kind: SiteKind, layer: usize) -> Self {
        let layer = if kind.per_layer() { layer } else { 0 };
        Site { layer, kind }
    }

    pub fn resid_post(layer: usize) -> Self {
        Site::new(SiteKind::ResidPost, layer)
    }

    /// How deep the site sits in the forward pass: 0 for `hook_embed`, `layer + 1` inside the
    /// blocks, and last for `ln_final.hook_normalized`.
    pub fn depth(&self) -> usize {
        match self.kind {
            SiteKind::Embed => 0,
            SiteKind::LnFinal => usize::MAX,
            _ => self.layer + 1,
        }
    }

    /// Parse a TransformerLens name, checking the layer against `n_layers`.
    pub fn parse(name: &str, n_layers: usize) -> Result<Site> {
        let name = name.trim();
        for (kind, suffix) in SiteKind::ALL {
            if !kind.per_layer() && name == suffix {
                return Ok(Site::new(kind, 0));
            }
        }
        let unknown = || Error::UnknownSite {
            name: name.to_string(),
            valid: Site::vocabulary(n_layers),
        };
        let rest = name.strip_prefix("blocks.").ok_or_else(unknown)?;
        let (layer, suffix) = rest.split_once('.').ok_or_else(unknown)?;
        let layer: usize = layer.parse().map_err(|_| unknown())?;
        let kind = SiteKind::ALL
            .iter()
            .find(|(k, s)| k.per_layer() && *s == suffix)
            .map(|(k, _)| *k)
            .ok_or_else(unknown)?;
        if layer >= n_layers {
            return Err(Error::LayerOutOfRange {
                name: name.to_string(),
                layer,
                last: n_layers.saturating_sub(1),
            });
        }
        Ok(Site::new(kind, layer))
    }

    /// Expand a pattern: `blocks.*.hook_resid_post`, `blocks.10-20.hook_resid_post`, or a list
    /// of those separated by commas. Plain names pass through [`Site::parse`].
    pub fn parse_pattern(pattern: &str, n_layers: usize) -> Result<Vec<Site>> {
        let mut out = Vec::new();
        for part in pattern.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let layers = part
                .strip_prefix("blocks.")
                .and_then(|r| r.split_once('.'))
                .and_then(|(l, suffix)| layer_range(l, n_layers).map(|r| (r, suffix)));
            match layers {
                Some((range, suffix)) => {
                    for l in range {
                        out.push(Site::parse(&format!("blocks.{l}.{suffix}"), n_layers)?);
                    }
                }
                None => out.push(Site::parse(part, n_layers)?),
            }
        }
        if out.is_empty() {
            return Err(Error::Invalid(format!(
                "site pattern `{pattern}` names no site; valid sites are: {}",
                Site::vocabulary(n_layers)
            )));
        }
        Ok(once_each(out))
    }

    /// Every site of a model with `n_layers` blocks, in forward order.
    pub fn all(n_layers: usize) -> Vec<Site> {
        let mut v = vec![Site::new(SiteKind::Embed, 0)];
        for l in 0..n_layers {
            for (k, _) in SiteKind::ALL.iter().filter(|(k, _)| k.per_layer()) {
                v.push(Site::new(*k, l));
            }
        }
        v.push(Site::new(SiteKind::LnFinal, 0));
        v
    }

    /// A short description of the valid names, for error messages.
    pub fn vocabulary(n_layers: usize) -> String {
        let per: Vec<String> = SiteKind::ALL
            .iter()
            .map(|(k, s)| {
                if k.per_layer() {
                    format!("blocks.{{0..{}}}.{s}", n_layers.saturating_sub(1))
                } else {
                    s.to_string()
                }
            })
            .collect();
        per.join(", ")
    }
}

/// `*`, `7` or `10-20` as a layer range; None when it is not a range pattern.
fn layer_range(s: &str, n_layers: usize) -> Option<std::ops::RangeInclusive<usize>> {
    if s == "*" {
        return Some(0..=n_layers.saturating_sub(1));
    }
    let (a, b) = s.split_once('-')?;
    Some(a.parse().ok()?..=b.parse().ok()?)
}

impl fmt::Display for Site {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.kind.per_layer() {
            write!(f, "blocks.{}.{}", self.layer, self.kind.name())
        } else {
            f.write_str(self.kind.name())
        }
    }
}

/// Which sequence positions an intervention touches. Positions are absolute (0 is the first
/// real token of the sequence), so they mean the same with or without the KV cache.
#[derive(Clone, Debug, PartialEq)]
pub enum Positions {
    All,
    /// Positions of the prompt, before any generated token.
    Prompt,
    /// Positions of generated tokens.
    Generated,
    /// The prompt's last position.
    Last,
    /// The prompt's last position and every generated one: where the answer is produced.
    Answer,
    Indices(Vec<usize>),
}

/// `v` with every repeat of an earlier value left out, in order. Lists of sites, layers and
/// positions name each thing once: a repeat is merged, never applied twice.
pub fn once_each<T: PartialEq>(v: Vec<T>) -> Vec<T> {
    let mut out: Vec<T> = Vec::with_capacity(v.len());
    for x in v {
        if !out.contains(&x) {
            out.push(x);
        }
    }
    out
}

impl Positions {
    pub fn contains(&self, pos: usize, prompt_len: usize) -> bool {
        match self {
            Positions::All => true,
            Positions::Prompt => pos < prompt_len,
            Positions::Generated => pos >= prompt_len,
            Positions::Last => pos + 1 == prompt_len,
            Positions::Answer => pos + 1 >= prompt_len,
            Positions::Indices(v) => v.contains(&pos),
        }
    }
}

impl std::str::FromStr for Positions {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s.trim() {
            "all" => Positions::All,
            "prompt" => Positions::Prompt,
            "generated" => Positions::Generated,
            "last" => Positions::Last,
            "answer" => Positions::Answer,
            other => Positions::Indices(once_each(
                other
                    .split(',')
                    .map(|p| p.trim().parse::<usize>())
                    .collect::<std::result::Result<_, _>>()
                    .map_err(|_| Error::BadPositions(s.to_string()))?,
            )),
        })
    }
}

/// What an intervention does to each selected row (or head slice of a row).
#[derive(Clone, Debug)]
pub enum Action {
    /// Record the values (as they are at this point of the spec) into [`Captures`].
    Capture,
    /// `x += scale * vector`.
    Add {
        vector: Vec<f32>,
        scale: f32,
    },
    /// Replace with given values, keyed by absolute position (activation patching).
    Replace {
        values: BTreeMap<usize, Vec<f32>>,
    },
    ZeroAblate,
    MeanAblate {
        mean: Vec<f32>,
    },
    /// Remove the component along `direction` (normalized on use).
    ProjectOut {
        direction: Vec<f32>,
    },
    /// Set the projection onto `direction` (normalized on use) to `value`.
    Clamp {
        direction: Vec<f32>,
        value: f32,
    },
    /// `x *= factor` (e.g. scaling attention heads).
    Scale {
        factor: f32,
    },
    /// A learned low-rank edit `h + Rᵀ(W h + b − R h)` (LoReFT), applied as tensor operations
    /// on the model's device, so that gradients flow through it to its parameters.
    LowRank(LowRank),
}

/// An action at a site, on some positions and, for `attn.hook_z`, some heads.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Intervention {
    pub site: Site,
    pub positions: Positions,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heads: Option<Vec<usize>>,
    /// Only these rows of a batch (all rows when None): lets one batch carry different
    /// interventions per row, e.g. one patch per row or steering only the gated prompts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<Vec<usize>>,
    pub action: Action,
}

impl Intervention {
    pub fn new(site: Site, positions: Positions, action: Action) -> Self {
        Intervention {
            site,
            positions,
            heads: None,
            rows: None,
            action,
        }
    }

    pub fn on_rows(mut self, rows: Vec<usize>) -> Self {
        self.rows = Some(rows);
        self
    }

    pub fn on_heads(mut self, heads: Vec<usize>) -> Self {
        self.heads = Some(heads);
        self
    }

    /// The vector lengths this intervention carries, for validation.
    /// An error when the intervention would do nothing: `rows` or `heads` that select none, or
    /// a direction to project along whose length is zero or not a finite number (entries of
    /// 1e20 overflow it), which would make the projection or clamp a silent no-op.
    fn selects_something(&self) -> Result<()> {
        let at = self.site;
        if self.rows.as_ref().is_some_and(Vec::is_empty) {
            return Err(Error::Invalid(format!(
                "`rows` at {at} selects no row; leave it out to act on every row"
            )));
        }
        if self.heads.as_ref().is_some_and(Vec::is_empty) {
            return Err(Error::Invalid(format!(
                "`heads` at {at} selects no head; leave it out to act on every head"
            )));
        }
        if let Action::ProjectOut { direction } | Action::Clamp { direction, .. } = &self.action {
            let norm = direction
                .iter()
                .map(|d| (*d as f64).powi(2))
                .sum::<f64>()
                .sqrt();
            if !(norm.is_finite() && norm > 0.0) {
                return Err(Error::Invalid(format!(
                    "the direction at {at} has length {norm}: projecting along it would do \
                     nothing; give a nonzero direction of finite length"
                )));
            }
        }
        Ok(())
    }

    fn vector_lengths(&self) -> Vec<(&'static str, usize)> {
        match &self.action {
            Action::Add { vector, .. } => vec![("steering vector", vector.len())],
            Action::MeanAblate { mean } => vec![("mean", mean.len())],
            Action::ProjectOut { direction } | Action::Clamp { direction, .. } => {
                vec![("direction", direction.len())]
            }
            Action::Replace { values } => values.values().map(|v| ("values", v.len())).collect(),
            Action::LowRank(edit) => vec![("low-rank edit", edit.width())],
            _ => vec![],
        }
    }
}

/// An ordered list of interventions. Everything that changes or reads activations goes here.
/// It reads and writes JSON (see `serde_spec.rs` for the format).
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    pub interventions: Vec<Intervention>,
}

impl Spec {
    pub fn new() -> Self {
        Spec::default()
    }

    pub fn with(mut self, iv: Intervention) -> Self {
        self.interventions.push(iv);
        self
    }

    pub fn push(&mut self, iv: Intervention) {
        self.interventions.push(iv);
    }

    pub fn is_empty(&self) -> bool {
        self.interventions.is_empty()
    }

    /// Capture `sites` at `positions`.
    pub fn capture(sites: &[Site], positions: Positions) -> Self {
        Spec {
            interventions: sites
                .iter()
                .map(|s| Intervention::new(*s, positions.clone(), Action::Capture))
                .collect(),
        }
    }

    /// Check every site's layer, vector length and head index against the model.
    pub fn validate(
        &self,
        width: impl Fn(Site) -> usize,
        n_heads: usize,
        n_layers: usize,
    ) -> Result<()> {
        for iv in &self.interventions {
            if !serde_spec::layer_in_range(iv.site, n_layers) {
                return Err(Error::LayerOutOfRange {
                    name: iv.site.to_string(),
                    layer: iv.site.layer,
                    last: n_layers.saturating_sub(1),
                });
            }
            let w = width(iv.site);
            let d_head = w / n_heads.max(1);
            iv.selects_something()?;
            if let Some(hs) = &iv.heads {
                if matches!(iv.action, Action::LowRank(_)) {
                    return Err(Error::Invalid(format!(
                        "a low-rank edit acts on whole rows; it cannot pick heads at {}",
                        iv.site
                    )));
                }
                if iv.site.kind != SiteKind::AttnZ {
                    return Err(Error::Invalid(format!(
                        "heads can only be chosen at attn.hook_z, not at {}",
                        iv.site
                    )));
                }
                if let Some(h) = hs.iter().find(|h| **h >= n_heads) {
                    return Err(Error::Invalid(format!(
                        "head {h} at {} is out of range: the model has heads 0..={}",
                        iv.site,
                        n_heads - 1
                    )));
                }
            }
            for (what, len) in iv.vector_lengths() {
                let ok = len == w || (iv.heads.is_some() && len == d_head);
                if !ok {
                    return Err(Error::BadLength {
                        what: what.to_string(),
                        site: iv.site.to_string(),
                        got: len,
                        expected: w,
                    });
                }
            }
        }
        Ok(())
    }
}
