//! Linear probes, one per captured site, that locate where the model represents "answer from
//! the context" versus "answer from memory".
//!
//! Features are standardized on the train part. Logistic probes (linfa-logistic, L2 strength
//! chosen by grouped cross-validation on train) or least-squares probes (linfa-linear on ±1)
//! are scored on held-out subjects, beside a majority baseline and a control task on
//! shuffled labels. Each site also gets three unit directions in the site's own space: the
//! probe's, the class mean difference, and the first principal component of paired
//! differences. Each has its sign set so that positive means "context", and records the spread
//! of projections, so steering can be set in natural units.

use crate::capture::IndexRow;
use crate::data::Variant;
use crate::error::{Error, Result};
use crate::hooks::Site;
use crate::label::Label;
use crate::model::ModelId;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

mod show;
mod train;

pub use show::{plot, table};
pub use train::{train, TrainOptions};

crate::choice_enum! {
/// What a probe predicts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    /// Behaviour: the answer follows the context (1) or the prior (0); `neither` is left out.
    FollowsContext = "follows-context",
    /// The prompt holds a context that contradicts memory (counterfactual variant, 1), or it
    /// does not: the context states the true fact (true_context, 0), there is none
    /// (no_context, 0), or the text is ordinary prose (neutral, 0). As a gate it fires only
    /// where there is a conflict to resolve.
    Conflict = "conflict",
    /// The model knows the fact closed-book.
    Known = "known",
    /// The prompt's context is about the queried subject (counterfactual or true context, 1),
    /// or about another subject (irrelevant, 0); prompts without a context are left out. As a
    /// second gate beside `conflict` it keeps an edit off contexts that do not answer the query.
    Relevant = "relevant",
}
}

crate::choice_enum! {
/// Which of a probe site's three unit directions (each signed so that positive means
/// "context").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// The probe's own weights, mapped back to the site's space.
    Probe = "probe",
    /// The difference between the two classes' means.
    Meandiff = "meandiff",
    /// The first principal component of the paired differences.
    Pca = "pca",
}
}

crate::choice_enum! {
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// L2-regularised logistic regression (linfa-logistic), its strength cross-validated.
    Logistic = "logistic",
    /// Least squares on ±1 targets (linfa-linear).
    Linear = "linear",
}
}

/// Held-out scores of one probe.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Metrics {
    pub accuracy: f64,
    pub balanced_accuracy: f64,
    pub auroc: f64,
    /// Accuracy of always predicting the train majority class.
    pub majority_baseline: f64,
    /// The same probe trained and tested on shuffled labels.
    pub control_auroc: f64,
    /// auroc - control_auroc (Hewitt & Liang 2019).
    pub selectivity: f64,
    /// Mean AUROC over the cross-validation folds on train (used to pick the best site).
    pub cv_auroc: f64,
}

/// Spread of projections onto a direction, over all examples.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Spread {
    pub std: f32,
    /// Mean projection of the positive ("context") class.
    pub mean_pos: f32,
    pub mean_neg: f32,
}

/// One site's probe.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SiteProbe {
    pub site: String,
    /// Weights on standardized features; logit = w . (x - mean) / std + bias.
    pub weights: Vec<f32>,
    pub bias: f32,
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
    /// L2 strength chosen by cross-validation (logistic only).
    pub alpha: Option<f64>,
    /// Unit directions in the site's original space: probe, meandiff, pca.
    pub directions: BTreeMap<String, Vec<f32>>,
    pub spread: BTreeMap<String, Spread>,
    pub cosines: BTreeMap<String, f64>,
    pub metrics: Metrics,
}

impl SiteProbe {
    /// The probe's logit (logistic; positive predicts the positive class) or score (linear,
    /// ±1 scale) for one activation.
    pub fn score(&self, x: &[f32]) -> f32 {
        let z: f32 = x
            .iter()
            .zip(&self.mean)
            .zip(&self.std)
            .zip(&self.weights)
            .map(|(((x, m), s), w)| (x - m) / s * w)
            .sum::<f32>()
            + self.bias;
        z
    }

    pub fn direction(&self, d: Direction) -> Result<&[f32]> {
        use crate::choice::Choice;
        self.directions
            .get(d.name())
            .map(Vec::as_slice)
            .ok_or_else(|| {
                Error::Invalid(format!(
                    "probe site {}: direction `{}` is not in the probe file",
                    self.site,
                    d.name()
                ))
            })
    }
}

/// What a file passed as a probe file seems to be when it is a GGUF or safetensors file, for
/// the error message.
fn binary_kind(bytes: &[u8]) -> Option<&'static str> {
    let header = bytes
        .get(..8)
        .map(|b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])));
    let safetensors =
        header.is_some_and(|n| n > 0 && n < bytes.len() as u64) && bytes.get(8) == Some(&b'{');
    if bytes.starts_with(b"GGUF") {
        Some("a GGUF file (a model, or a control vector: pass it to --steer)")
    } else if safetensors {
        Some("a safetensors file (a learned edit or a vector: pass it to --steer)")
    } else {
        None
    }
}

/// The probe file format this ctxsteer writes and reads.
pub const PROBE_FILE_VERSION: u32 = 1;

/// A probe file: everything needed to reuse the probes and to know where they came from.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ProbeFile {
    pub version: u32,
    pub model: ModelId,
    pub acts: String,
    pub data: String,
    pub target: Target,
    pub kind: Kind,
    pub command: String,
    pub seed: u64,
    pub n_train: usize,
    pub n_test: usize,
    pub n_pos: usize,
    /// The relations held out for testing, when the split was by relation.
    #[serde(default)]
    pub test_relations: Option<Vec<String>>,
    /// The site with the best cross-validated AUROC on train (ties go to the deepest; see
    /// [`best_site`]).
    pub best: String,
    /// Where in each prompt the capture it was trained on read: a gate reads there too.
    /// Absent (the last token) in files written before it was recorded.
    #[serde(default = "last_position", skip_serializing_if = "is_last_position")]
    pub positions: crate::capture::PosMode,
    pub sites: Vec<SiteProbe>,
}

fn last_position() -> crate::capture::PosMode {
    crate::capture::PosMode::Last
}

fn is_last_position(p: &crate::capture::PosMode) -> bool {
    *p == crate::capture::PosMode::Last
}

impl ProbeFile {
    /// The file for probes trained with `opts` on the capture in `acts` (holding `data`):
    /// `trained` is [`train`]'s result, and `best` is chosen among its sites.
    pub fn new(
        model: ModelId,
        acts: &std::path::Path,
        data: String,
        opts: &TrainOptions,
        command: String,
        trained: (Vec<SiteProbe>, usize, usize, usize),
    ) -> ProbeFile {
        let (sites, n_train, n_test, n_pos) = trained;
        ProbeFile {
            version: PROBE_FILE_VERSION,
            model,
            acts: acts.display().to_string(),
            data,
            target: opts.target,
            kind: opts.kind,
            command,
            seed: opts.seed,
            n_train,
            n_test,
            n_pos,
            test_relations: opts.test_relations.clone(),
            best: best_site(&sites),
            positions: crate::capture::PosMode::Last,
            sites,
        }
    }

    pub fn read(path: &std::path::Path) -> Result<ProbeFile> {
        let bytes = std::fs::read(path).map_err(|e| Error::file(path, e))?;
        let not_probe = |what: &str| {
            Error::file(
                path,
                format!("not a probe file (the JSON `probe train` writes): this is {what}"),
            )
        };
        if let Some(kind) = binary_kind(&bytes) {
            return Err(not_probe(kind));
        }
        let text = std::str::from_utf8(&bytes).map_err(|_| not_probe("a binary file, not text"))?;
        let f: ProbeFile = serde_json::from_str(text).map_err(|e| {
            Error::file(
                path,
                format!("not a probe file (the JSON `probe train` writes): {e}"),
            )
        })?;
        f.check().map_err(|e| Error::file(path, e))?;
        Ok(f)
    }

    /// Check that the file is whole and consistent: a known version, at least one site, `best`
    /// naming one of them, and every site's vectors of one length with finite values.
    pub fn check(&self) -> std::result::Result<(), String> {
        if self.version != PROBE_FILE_VERSION {
            return Err(format!(
                "version {} is not supported (this ctxsteer reads version {PROBE_FILE_VERSION})",
                self.version
            ));
        }
        if self.sites.is_empty() {
            return Err("the file has no site".into());
        }
        if !self.sites.iter().any(|p| p.site == self.best) {
            return Err(format!(
                "`best` names {}, which is not one of its sites",
                self.best
            ));
        }
        for p in &self.sites {
            let n = p.weights.len();
            let mut vectors = vec![("mean", &p.mean), ("std", &p.std)];
            vectors.extend(p.directions.iter().map(|(k, v)| (k.as_str(), v)));
            if let Some((what, v)) = vectors.iter().find(|(_, v)| v.len() != n) {
                return Err(format!(
                    "site {}: {what} has {} values but the weights have {n}",
                    p.site,
                    v.len()
                ));
            }
            let finite = |v: &[f32]| v.iter().all(|x| x.is_finite());
            let all_finite = finite(&p.weights)
                && p.bias.is_finite()
                && vectors.iter().all(|(_, v)| finite(v))
                && p.std.iter().all(|s| *s > 0.0);
            if !all_finite {
                return Err(format!(
                    "site {}: a weight, mean or direction is not finite, or a std is not > 0",
                    p.site
                ));
            }
        }
        Ok(())
    }

    pub fn write(&self, path: &std::path::Path) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(self).map_err(|e| Error::Invalid(e.to_string()))?;
        crate::data::write_atomic(path, &bytes)
    }

    /// Read a probe file and refuse it unless it was trained on `model`.
    pub fn read_for(path: &std::path::Path, model: &ModelId) -> Result<ProbeFile> {
        let f = ProbeFile::read(path)?;
        f.check_model(model, path)?;
        Ok(f)
    }

    /// A probe file named as `FILE[:SITE]` ([`split_site`]): the file, its `best` pinned to
    /// SITE when one is named, so that whatever reads its best site reads SITE (and a run
    /// keyed by the file's contents tells the two apart).
    pub fn read_ref(arg: &std::path::Path) -> Result<ProbeFile> {
        let text = arg.to_string_lossy();
        let (file, site) = split_site(&text);
        let path = std::path::Path::new(file);
        let mut f = ProbeFile::read(path)?;
        if let Some(site) = site {
            let which = SiteRef::parse(site);
            f.best = f
                .site(&which)
                .map_err(|e| Error::file(path, e))?
                .site
                .clone();
        }
        Ok(f)
    }

    /// [`ProbeFile::read_ref`], refused when trained on another model than `model`.
    pub fn read_ref_for(arg: &std::path::Path, model: &ModelId) -> Result<ProbeFile> {
        let f = ProbeFile::read_ref(arg)?;
        f.check_model(model, arg)?;
        Ok(f)
    }

    /// Refuse probes trained on another model.
    pub fn check_model(&self, model: &ModelId, path: &std::path::Path) -> Result<()> {
        if self.model.d_model != model.d_model || self.model.sha256 != model.sha256 {
            return Err(Error::file(
                path,
                format!(
                    "these probes were trained on {} (sha256 {}, d_model {}), not on the loaded model {} (sha256 {}, d_model {})",
                    self.model.file,
                    &self.model.sha256[..12.min(self.model.sha256.len())],
                    self.model.d_model,
                    model.file,
                    &model.sha256[..12.min(model.sha256.len())],
                    model.d_model
                ),
            ));
        }
        Ok(())
    }

    /// The probe `which` names: the file's best, or the one at a named site.
    pub fn site(&self, which: &SiteRef) -> Result<&SiteProbe> {
        let (want, name) = match which {
            SiteRef::Best => (self.best.as_str(), BEST),
            SiteRef::Named(n) => (n.as_str(), n.as_str()),
        };
        self.sites.iter().find(|s| s.site == want).ok_or_else(|| {
            let names: Vec<&str> = self.sites.iter().map(|s| s.site.as_str()).collect();
            Error::Invalid(format!(
                "no probe at `{name}`; this file has: best, {}",
                names.join(", ")
            ))
        })
    }
}

/// How a probe's site is written to mean the file's best site.
pub const BEST: &str = "best";

/// Which probe of a probe file: its best site's, or the one at a named site.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum SiteRef {
    #[default]
    Best,
    Named(String),
}

impl SiteRef {
    /// `best`, or a site's name.
    pub fn parse(s: &str) -> SiteRef {
        match s {
            BEST => SiteRef::Best,
            name => SiteRef::Named(name.to_string()),
        }
    }

    /// [`SiteRef::parse`] of a site given or not (not given: the best).
    pub fn or_best(s: Option<&str>) -> SiteRef {
        s.map_or(SiteRef::Best, SiteRef::parse)
    }
}

/// Cross-validated AUROCs closer than this to the best count as tied. On a hundred training
/// items it is a handful of ranked pairs, within the spread between folds.
pub const BEST_TIE: f64 = 0.005;

/// The site `best` names in a probe file: the highest cross-validated AUROC on train, and among
/// the sites tied with it (within [`BEST_TIE`]), the deepest. Without the tie-break, a near-tie
/// flips between runs; and an early site sees little more than the tokens themselves.
pub fn best_site(sites: &[SiteProbe]) -> String {
    let top = sites
        .iter()
        .map(|s| s.metrics.cv_auroc)
        .fold(f64::NEG_INFINITY, f64::max);
    sites
        .iter()
        .filter(|s| s.metrics.cv_auroc >= top - BEST_TIE)
        .max_by_key(|s| depth(&s.site))
        .map(|s| s.site.clone())
        .unwrap_or_default()
}

/// How deep a site named in a probe file sits; an unparsable name counts as shallowest.
fn depth(site: &str) -> usize {
    probe_site(site, usize::MAX).map_or(0, |(s, _)| s.depth())
}

/// The name of one head's slice of an `attn.hook_z` site in a per-head probe file, indexed
/// as TransformerLens indexes `hook_z`'s head axis: `blocks.12.attn.hook_z[3]`.
pub fn head_site_name(site: Site, head: usize) -> String {
    format!("{site}[{head}]")
}

/// A probe file's site name as a hook site and, for a per-head probe (`…attn.hook_z[H]`), its
/// head.
pub fn probe_site(name: &str, n_layers: usize) -> Result<(Site, Option<usize>)> {
    let name = name.trim();
    let Some((base, rest)) = name.split_once('[') else {
        return Ok((Site::parse(name, n_layers)?, None));
    };
    let head = rest
        .strip_suffix(']')
        .and_then(|h| h.parse::<usize>().ok())
        .ok_or_else(|| {
            Error::Invalid(format!(
                "probe site `{name}`: a head index is written `blocks.L.attn.hook_z[H]`"
            ))
        })?;
    let site = Site::parse(base, n_layers)?;
    if site.kind != crate::hooks::SiteKind::AttnZ {
        return Err(Error::Invalid(format!(
            "probe site `{name}`: only attn.hook_z has heads"
        )));
    }
    Ok((site, Some(head)))
}

/// The label of an index row for a target; None leaves the row out.
pub fn target_of(row: &IndexRow, target: Target) -> Option<bool> {
    match target {
        Target::FollowsContext => match row.label {
            Some(Label::FollowsContext) => Some(true),
            Some(Label::FollowsPrior) => Some(false),
            _ => None,
        },
        Target::Known => row.known,
        Target::Conflict => row.variant.map(|v| v == Variant::Counterfactual),
        Target::Relevant => match row.variant? {
            Variant::Counterfactual | Variant::TrueContext => Some(true),
            Variant::Irrelevant => Some(false),
            Variant::NoContext | Variant::Neutral => None,
        },
    }
}

/// Whether a subject is held out of a probe's training: about a quarter of subjects
/// ([`crate::data::SubjectSplit::held_out`]).
pub fn is_test(subject: &str, seed: u64) -> bool {
    crate::data::SubjectSplit::held_out(seed).of(subject) == crate::data::Split::Test
}

/// `FILE[:SITE]` into the file and the site, when one is named: an existing file is a file
/// whatever its name, else the part after the last `:` is a site when the part before it is a
/// file, or when it is `best` or names a hook.
pub fn split_site(s: &str) -> (&str, Option<&str>) {
    if std::path::Path::new(s).exists() {
        return (s, None);
    }
    match s.rsplit_once(':') {
        Some((f, site))
            if !f.is_empty()
                && !site.is_empty()
                && (std::path::Path::new(f).exists() || site == BEST || site.contains("hook")) =>
        {
            (f, Some(site))
        }
        _ => (s, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site(name: &str, cv_auroc: f64) -> SiteProbe {
        SiteProbe {
            site: name.into(),
            weights: vec![],
            bias: 0.0,
            mean: vec![],
            std: vec![],
            alpha: None,
            directions: BTreeMap::new(),
            spread: BTreeMap::new(),
            cosines: BTreeMap::new(),
            metrics: Metrics {
                cv_auroc,
                ..Metrics::default()
            },
        }
    }

    #[test]
    fn best_site_breaks_near_ties_toward_the_deeper_site() {
        // The demo's follows_context probes: layer 0 ahead of layer 22 by 0.0005.
        let mut sites = vec![
            site("blocks.0.hook_resid_post", 0.94736),
            site("blocks.2.hook_resid_post", 0.89),
            site("blocks.22.hook_resid_post", 0.94688),
            site("blocks.23.hook_resid_post", 0.9372),
            site("blocks.29.hook_resid_post", 0.912),
        ];
        assert_eq!(best_site(&sites), "blocks.22.hook_resid_post");
        // A clear lead is kept, however early the site.
        sites[0].metrics.cv_auroc = 0.96;
        assert_eq!(best_site(&sites), "blocks.0.hook_resid_post");
        // Depth is by block, not by the order of the list; ln_final is deepest, embed first.
        let sites = vec![
            site("ln_final.hook_normalized", 0.90),
            site("blocks.3.hook_resid_post", 0.902),
            site("hook_embed", 0.903),
        ];
        assert_eq!(best_site(&sites), "ln_final.hook_normalized");
        assert_eq!(depth("hook_embed"), 0);
        assert_eq!(depth("blocks.0.attn.hook_z"), 1);
        assert_eq!(depth("blocks.29.hook_resid_post"), 30);
        assert_eq!(depth("ln_final.hook_normalized"), usize::MAX);
        assert_eq!(depth("blocks.x.hook_resid_post"), 0);
        assert_eq!(best_site(&[]), "");
    }
}
