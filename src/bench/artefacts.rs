//! The artefacts a benchmark run uses (probe files, the gates, the head ranking, trained edits):
//! files named by the caller, the rest found through a folder's `manifest.json` for the loaded
//! model; the methods they make possible; and the [`Resources`] read from them.

use super::{context_heads_from_patch, heads_from_patch, Method, Need, Resources};
use crate::data::Form;
use crate::error::{Error, Result};
use crate::model::{Model, ModelId};
use crate::probe::ProbeFile;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The artefacts a benchmark run may use: files named by the caller, else those a folder's
/// manifest.json names for the loaded model.
#[derive(Clone, Debug, Default)]
pub struct Artefacts {
    pub probes: Option<PathBuf>,
    pub head_probes: Option<PathBuf>,
    /// patch.json of `patch --sites heads --ablate`: the head ranking.
    pub heads_from: Option<PathBuf>,
    /// The `conflict` gate, `FILE[:SITE]` (at its probe file's best site unless SITE is named).
    pub gate: Option<PathBuf>,
    /// The `relevant` gate that reft-gated may add to the conflict gate.
    pub relevance: Option<PathBuf>,
    pub reft: Vec<PathBuf>,
}

/// `manifest.json` in an artefacts folder: the files made for one model, relative to it.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Manifest {
    model_sha256: String,
    #[serde(default)]
    probes: Option<PathBuf>,
    #[serde(default)]
    head_probes: Option<PathBuf>,
    /// The `conflict` gate: one file, or one per form (`{"completion": …, "chat": …}`); each
    /// `FILE[:SITE]`, read at SITE when one is named.
    #[serde(default)]
    gate: Option<GateFiles>,
    /// The `relevant` gate that reft-gated may add, in the same shape.
    #[serde(default)]
    relevance: Option<GateFiles>,
    #[serde(default)]
    heads: Option<PathBuf>,
    #[serde(default)]
    reft: Vec<PathBuf>,
}

/// A manifest's gate: one file for every form, or one per form.
#[derive(serde::Deserialize)]
#[serde(untagged)]
enum GateFiles {
    One(PathBuf),
    PerForm(BTreeMap<Form, PathBuf>),
}

impl GateFiles {
    /// The gate for prompts in `form`, if the manifest has one.
    fn for_form(self, form: Form) -> Option<PathBuf> {
        match self {
            GateFiles::One(p) => Some(p),
            GateFiles::PerForm(mut m) => m.remove(&form),
        }
    }
}

/// The manifests in `dir` and its immediate subfolders (`probes/manifest.json`,
/// `probes/gemma3-270m/manifest.json`, …), each with its folder, in name order.
fn manifests(dir: &Path) -> Result<Vec<(PathBuf, Manifest)>> {
    let mut dirs = vec![dir.to_path_buf()];
    if let Ok(rd) = std::fs::read_dir(dir) {
        let mut subs: Vec<PathBuf> = rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_dir())
            .collect();
        subs.sort();
        dirs.extend(subs);
    }
    let mut out = vec![];
    for d in dirs {
        let path = d.join("manifest.json");
        if !path.exists() {
            continue;
        }
        let text = std::fs::read_to_string(&path).map_err(|e| Error::file(&path, e))?;
        let m: Manifest = serde_json::from_str(&text)
            .map_err(|e| Error::file(&path, format!("not an artefacts manifest: {e}")))?;
        out.push((d, m));
    }
    Ok(out)
}

impl Artefacts {
    /// These artefacts, with what they lack filled in from the manifest for `model` in `dir` or
    /// one of its subfolders (the gates for `form`). The note says when manifests were found
    /// but none is for this model.
    pub fn resolve(
        self,
        model: &ModelId,
        dir: &Path,
        form: Form,
    ) -> Result<(Artefacts, Option<String>)> {
        let found = manifests(dir)?;
        let n = found.len();
        let Some((dir, m)) = found
            .into_iter()
            .find(|(_, m)| m.model_sha256 == model.sha256)
        else {
            let note = (n > 0).then(|| {
                format!(
                    "no manifest in {} or its subfolders is for the loaded model (sha256 {}); \
                     using only the artefacts given as options",
                    dir.display(),
                    model.sha256
                )
            });
            return Ok((self, note));
        };
        let fill =
            |given: Option<PathBuf>, listed: Option<PathBuf>| given.or(listed.map(|p| dir.join(p)));
        let art = Artefacts {
            probes: fill(self.probes, m.probes),
            head_probes: fill(self.head_probes, m.head_probes),
            heads_from: fill(self.heads_from, m.heads),
            gate: fill(self.gate, m.gate.and_then(|g| g.for_form(form))),
            relevance: fill(self.relevance, m.relevance.and_then(|g| g.for_form(form))),
            reft: match self.reft.is_empty() {
                true => m.reft.iter().map(|p| dir.join(p)).collect(),
                false => self.reft,
            },
        };
        Ok((art, None))
    }

    /// A file given to sweep (`--steer`), put in its slot by what it holds: learned edits, a
    /// per-head probe file or a probe file. Two files of one kind, or a kind bench does not
    /// sweep, are errors.
    pub fn add_steer(&mut self, p: &Path) -> Result<()> {
        use crate::steer::SteerKind;
        let slot = match SteerKind::detect(p)? {
            SteerKind::Edit => {
                self.reft.push(p.to_path_buf());
                return Ok(());
            }
            SteerKind::Probes if is_per_head(p)? => &mut self.head_probes,
            SteerKind::Probes => &mut self.probes,
            kind => {
                return Err(Error::file(
                    p,
                    format!(
                        "a {} has no sweep in bench; give a probe file or learned edits",
                        crate::choice::Choice::name(kind)
                    ),
                ))
            }
        };
        put(slot, p, "--steer names two files of one kind")
    }

    /// A gate file (`--gate`), put in its slot by its probe's target: `relevant`, else the
    /// conflict gate.
    pub fn add_gate(&mut self, p: &Path) -> Result<()> {
        let slot = match ProbeFile::read_ref(p)?.target {
            crate::probe::Target::Relevant => &mut self.relevance,
            _ => &mut self.gate,
        };
        put(
            slot,
            p,
            "--gate names two gates of one kind (give one `conflict` gate and at most one \
             `relevant` gate)",
        )
    }

    /// Every method these artefacts make possible, and proxy-tuning with `proxy` models: the
    /// default method list.
    pub fn methods(&self, proxy: bool) -> Vec<Method> {
        use Method::*;
        let mut v = vec![None, Instruct, Cad, AdaCad];
        if self.probes.is_some() {
            v.extend([Steer, SteerGated, SteerMulti, Clamp]);
        }
        if self.head_probes.is_some() {
            v.push(Iti);
        }
        if self.heads_from.is_some() {
            v.push(Heads);
            if self.gate.is_some() {
                v.push(HeadsGated);
            }
        }
        if !self.reft.is_empty() {
            v.extend([Reft, ReftCad]);
            if self.gate.is_some() {
                v.push(ReftGated);
            }
        }
        if proxy {
            v.push(Proxy);
        }
        v
    }

    /// One line naming the files the run uses, so that a log says which gate and edits ran.
    pub fn describe(&self) -> String {
        let show = |p: &Option<PathBuf>| {
            p.as_ref()
                .map_or("none".into(), |p| p.display().to_string())
        };
        let reft: Vec<String> = self.reft.iter().map(|p| p.display().to_string()).collect();
        format!(
            "artefacts: probes {}, head probes {}, head ranking {}, gate {}{}, edits {}",
            show(&self.probes),
            show(&self.head_probes),
            show(&self.heads_from),
            show(&self.gate),
            self.relevance.as_ref().map_or(String::new(), |p| format!(
                " (and relevance gate {})",
                p.display()
            )),
            match reft.is_empty() {
                true => "none".into(),
                false => reft.join(", "),
            }
        )
    }

    /// The resources `methods` use, read from these files (probe files checked against the
    /// model), with proxy-tuning's models when given; an error naming the option to give when
    /// a method's artefact is missing.
    pub fn load(
        &self,
        model: &Model,
        methods: &[Method],
        proxy: Option<crate::proxy::Proxy>,
    ) -> Result<Resources> {
        let id = model.identity()?;
        let read = |p: &Option<PathBuf>| read_ref_for(p, &id);
        let (heads, context_heads) = match &self.heads_from {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|e| Error::file(p, e))?;
                let r: crate::patch::PatchResult = serde_json::from_str(&text)
                    .map_err(|e| Error::file(p, format!("not a patch.json: {e}")))?;
                (heads_from_patch(&r), context_heads_from_patch(&r))
            }
            None => (vec![], vec![]),
        };
        let res = Resources {
            probes: read(&self.probes)?,
            heads,
            context_heads,
            gate: read(&self.gate)?,
            relevance: read(&self.relevance)?,
            max_new: None,
            reft: self.edits(model, methods)?,
            head_probes: read(&self.head_probes)?,
            proxy,
        };
        check_needs(methods, &res)?;
        Ok(res)
    }

    /// The relevance gate, read and checked against `model`, if one is given or listed.
    pub fn relevance_gate(&self, model: &Model) -> Result<Option<ProbeFile>> {
        read_ref_for(&self.relevance, &model.identity()?)
    }

    /// The trained edits, from their files; an error when a method that needs one has none.
    pub fn edits(&self, model: &Model, methods: &[Method]) -> Result<Vec<crate::reft::Reft>> {
        let users = users_of(methods, Need::Edit);
        if self.reft.is_empty() && !users.is_empty() {
            return Err(missing(&users, Need::Edit));
        }
        self.reft
            .iter()
            .map(|p| crate::reft::Reft::load(p, model))
            .collect()
    }
}

/// `p` into an empty `slot`, else an error naming both files.
fn put(slot: &mut Option<PathBuf>, p: &Path, what: &str) -> Result<()> {
    match slot.replace(p.to_path_buf()) {
        Some(first) => Err(Error::Invalid(format!(
            "{what}: {} and {}",
            first.display(),
            p.display()
        ))),
        None => Ok(()),
    }
}

/// Whether a probe file holds per-head probes (its best site is one head's slice).
pub fn is_per_head(p: &Path) -> Result<bool> {
    let pf = ProbeFile::read(p)?;
    Ok(crate::probe::probe_site(&pf.best, usize::MAX).is_ok_and(|(_, h)| h.is_some()))
}

/// The names of the methods among `methods` that need `need`.
fn users_of(methods: &[Method], need: Need) -> Vec<&'static str> {
    methods
        .iter()
        .filter(|m| m.needs().contains(&need))
        .map(|m| m.name())
        .collect()
}

/// Refuse methods whose artefacts are missing, naming the option that gives them.
fn check_needs(methods: &[Method], res: &Resources) -> Result<()> {
    // Trained edits are checked where their files are read.
    for need in Need::ALL.into_iter().filter(|n| *n != Need::Edit) {
        let users = users_of(methods, need);
        if !users.is_empty() && !res.has(need) {
            return Err(missing(&users, need));
        }
    }
    Ok(())
}

/// "method X needs …" or "methods X, Y and Z need …", with the option that gives it.
fn missing(names: &[&str], need: Need) -> Error {
    let who = match names {
        [one] => format!("method {one} needs"),
        [rest @ .., last] => format!("methods {} and {last} need", rest.join(", ")),
        [] => String::new(),
    };
    Error::Invalid(format!("{who} {}", need_option(need)))
}

/// The option that gives an artefact, and where it comes from.
fn need_option(need: Need) -> &'static str {
    match need {
        Need::Probes => "--steer probes/NAME.json (from `ctxsteer probe train`)",
        Need::HeadProbes => {
            "--steer probes/NAME.json with per-head probes (from `ctxsteer probe train --per-head` on an attn.hook_z capture)"
        }
        Need::RankedHeads => {
            "--heads-from DIR/patch.json (from `ctxsteer patch --sites heads --ablate`)"
        }
        Need::Gate => "--gate probes/NAME.json (from `ctxsteer probe train --label conflict`)",
        Need::Edit => "--steer FILE.safetensors (from `ctxsteer reft train`)",
        Need::Proxy => "--proxy-expert MODEL --proxy-base MODEL (a tuned model and its base)",
    }
}

/// The probe file at `p` (`FILE[:SITE]`), if given, checked against the model `id`.
fn read_ref_for(p: &Option<PathBuf>, id: &ModelId) -> Result<Option<ProbeFile>> {
    p.as_deref()
        .map(|p| ProbeFile::read_ref_for(p, id))
        .transpose()
}
