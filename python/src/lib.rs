//! `ctxsteer._native`: the engine's model, hook sites, specs, probes and learned edits for
//! Python, with numpy arrays. The pure-Python package `ctxsteer` re-exports it with
//! docstrings and type stubs. Long calls release the GIL and stop on Ctrl-C.

use ctxsteer::choice::Choice;
use ctxsteer::model::{Batch, LogitsAt};
use ctxsteer::steer::{self, Plan, SteerOptions, SteerRequest};
use ctxsteer::{Action, Intervention, Positions, Site};
use numpy::{PyArray1, PyArray2, PyArray3, PyReadonlyArrayDyn};
use pyo3::exceptions::{PyFileNotFoundError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};
use std::path::PathBuf;
use std::sync::Arc;

/// The library's error as the Python exception that fits it, with the library's message.
fn py_err(e: ctxsteer::Error) -> PyErr {
    use ctxsteer::Error as E;
    let msg = e.to_string();
    let missing = |m: &str| m.contains("No such file or directory") || m.contains("no such file");
    match &e {
        E::Io(io) if io.kind() == std::io::ErrorKind::NotFound => PyFileNotFoundError::new_err(msg),
        E::File { msg: m, .. } if missing(m) => PyFileNotFoundError::new_err(msg),
        E::Candle(_) | E::Model(_) => PyRuntimeError::new_err(msg),
        _ => PyValueError::new_err(msg),
    }
}

trait OrPy<T> {
    fn py(self) -> PyResult<T>;
}

impl<T> OrPy<T> for ctxsteer::Result<T> {
    fn py(self) -> PyResult<T> {
        self.map_err(py_err)
    }
}

/// A JSON text as Python objects (dicts, lists, numbers, strings).
fn from_json<'py>(py: Python<'py>, text: &str) -> PyResult<Bound<'py, PyAny>> {
    py.import("json")?.call_method1("loads", (text,))
}

fn to_json_text<T: serde::Serialize>(v: &T) -> PyResult<String> {
    serde_json::to_string(v).map_err(|e| PyValueError::new_err(e.to_string()))
}

/// Run `f` without the GIL. Ctrl-C stops it: `check` (called between steps) fails once it was
/// pressed, and the library's own long runs ask the same through its cancel check
/// (`progress::set_cancel`) between batches; the call then raises `KeyboardInterrupt`.
fn without_gil<T: Send>(
    py: Python<'_>,
    f: impl FnOnce(&mut dyn FnMut() -> ctxsteer::Result<()>) -> ctxsteer::Result<T> + Send,
) -> PyResult<T> {
    let interrupted = Arc::new(std::sync::Mutex::new(None::<PyErr>));
    let slot = interrupted.clone();
    let pressed: ctxsteer::progress::CancelCheck = Arc::new(move || {
        Python::attach(|py| py.check_signals())
            .map_err(|e| *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(e))
            .is_err()
    });
    ctxsteer::progress::set_cancel(Some(pressed.clone()));
    let out = py.detach(|| {
        let mut check = || match pressed() {
            true => Err(ctxsteer::Error::Invalid("interrupted".into())),
            false => Ok(()),
        };
        f(&mut check)
    });
    ctxsteer::progress::set_cancel(None);
    if let Some(e) = interrupted.lock().unwrap_or_else(|p| p.into_inner()).take() {
        return Err(e);
    }
    out.py()
}

/// A string or a list of strings, as a list.
fn one_or_many(v: Option<&Bound<'_, PyAny>>) -> PyResult<Vec<String>> {
    match v {
        None => Ok(vec![]),
        Some(v) if v.is_none() => Ok(vec![]),
        Some(v) => match v.extract::<String>() {
            Ok(s) => Ok(vec![s]),
            Err(_) => v.extract::<Vec<String>>(),
        },
    }
}

fn one_or_many_f32(v: Option<&Bound<'_, PyAny>>) -> PyResult<Vec<f32>> {
    match v {
        None => Ok(vec![]),
        Some(v) if v.is_none() => Ok(vec![]),
        Some(v) => match v.extract::<f32>() {
            Ok(a) => Ok(vec![a]),
            Err(_) => v.extract::<Vec<f32>>(),
        },
    }
}

fn positions(s: &str) -> PyResult<Positions> {
    s.parse::<Positions>()
        .map_err(|e| PyValueError::new_err(e.to_string()))
}

/// A loaded language model: its config, hook sites, tokenizer, generation and activations.
#[pyclass(module = "ctxsteer._native", frozen, subclass)]
struct Model {
    inner: Arc<ctxsteer::Model>,
}

#[pymethods]
impl Model {
    #[new]
    #[pyo3(signature = (model = "smollm2-135m", weights = "f32", device = "cpu"))]
    fn new(py: Python<'_>, model: &str, weights: &str, device: &str) -> PyResult<Self> {
        let mode = match weights {
            "f32" => ctxsteer::WeightsMode::F32,
            "quantized" => ctxsteer::WeightsMode::Quantized,
            other => {
                return Err(PyValueError::new_err(format!(
                    "weights {other:?}: valid choices are f32, quantized"
                )))
            }
        };
        let device = ctxsteer::model::device(device).py()?;
        let path = ctxsteer::fetch::resolve(model, &mut |m| eprintln!("{m}")).py()?;
        let m = without_gil(py, |_| ctxsteer::Model::load_on(&path, mode, &device))?;
        Ok(Model { inner: Arc::new(m) })
    }

    /// The model's architecture as a dict: family, layers, d_model, heads, …
    #[getter]
    fn config<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        from_json(py, &to_json_text(self.inner.cfg())?)
    }

    /// Every hook site, in TransformerLens names.
    #[getter]
    fn sites(&self) -> Vec<String> {
        Site::all(self.inner.cfg().n_layers)
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    /// The model file's path and its sha256 (what probe files and edits are checked against).
    #[getter]
    fn identity<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        from_json(py, &to_json_text(&self.inner.identity().py()?)?)
    }

    #[pyo3(signature = (text, chat = false))]
    fn tokenize(&self, text: &str, chat: bool) -> PyResult<Vec<u32>> {
        self.inner.prompt_ids(text, chat).py()
    }

    fn decode(&self, ids: Vec<u32>) -> PyResult<String> {
        self.inner.tokenizer.decode(&ids).py()
    }

    /// Greedy (or sampled) generation; returns the new tokens' ids.
    #[pyo3(signature = (prompt, max_tokens = 48, chat = false, spec = None, steer = None,
        alpha = None, positions = "all", gate = None, gate_margin = 0.0, temperature = 0.0, top_p = 0.9,
        seed = 0))]
    #[allow(clippy::too_many_arguments)]
    fn generate_ids(
        &self,
        py: Python<'_>,
        prompt: &str,
        max_tokens: usize,
        chat: bool,
        spec: Option<&Spec>,
        steer: Option<&Bound<'_, PyAny>>,
        alpha: Option<&Bound<'_, PyAny>>,
        positions: &str,
        gate: Option<String>,
        gate_margin: f32,
        temperature: f32,
        top_p: f32,
        seed: u64,
    ) -> PyResult<Vec<u32>> {
        use ctxsteer::generate::{GenOptions, Sampling};
        let m = &self.inner;
        let ids = m.prompt_ids(prompt, chat).py()?;
        let plan = self.plan(spec, steer, alpha, positions, gate, gate_margin)?;
        let sampling = match temperature {
            t if t <= 0.0 => Sampling::Greedy,
            t => Sampling::TopP {
                temperature: t,
                top_p,
                seed,
            },
        };
        let opts = GenOptions {
            max_tokens,
            sampling,
            ..Default::default()
        };
        let g = without_gil(py, |check| {
            let spec = plan.spec_for(m, std::slice::from_ref(&ids))?;
            ctxsteer::generate::generate(m, &ids, &spec, &opts, &mut |_| check())
        })?;
        Ok(g.ids)
    }

    /// Activations at `sites` and the last position's logits for each prompt, in one
    /// left-padded batch. positions="last": arrays (batch, width); "all": (batch, longest
    /// prompt, width) with NaN after each shorter prompt's end. Logits: (batch, vocabulary).
    #[pyo3(signature = (prompts, sites, positions = "last", spec = None, chat = false))]
    fn run_with_cache<'py>(
        &self,
        py: Python<'py>,
        prompts: &Bound<'py, PyAny>,
        sites: &Bound<'py, PyAny>,
        positions: &str,
        spec: Option<&Spec>,
        chat: bool,
    ) -> PyResult<(Bound<'py, PyArray2<f32>>, Bound<'py, PyDict>)> {
        let m = &self.inner;
        let all = match positions {
            "last" => false,
            "all" => true,
            other => {
                return Err(PyValueError::new_err(format!(
                    "positions {other:?}: valid choices are last, all"
                )))
            }
        };
        let prompts = one_or_many(Some(prompts))?;
        if prompts.is_empty() {
            return Err(PyValueError::new_err("no prompts"));
        }
        let names = one_or_many(Some(sites))?;
        let sites: Vec<Site> = names
            .iter()
            .map(|s| m.site(s))
            .collect::<Result<_, _>>()
            .py()?;
        let ids: Vec<Vec<u32>> = prompts
            .iter()
            .map(|p| m.prompt_ids(p, chat))
            .collect::<Result<_, _>>()
            .py()?;
        let mut full = spec.map(|s| s.inner.clone()).unwrap_or_default();
        let at = if all { Positions::All } else { Positions::Last };
        full.interventions
            .extend(ctxsteer::Spec::capture(&sites, at).interventions);
        let pad = m.tokenizer.eos_id.unwrap_or(0);
        let (logits, caps) = without_gil(py, |_| {
            let (l, caps) = m.run(&Batch::left_padded(&ids, pad), &full, LogitsAt::Last)?;
            let l = l.flatten_from(1)?.to_dtype(candle_core::DType::F32)?; // [b, vocab]
            Ok((l.to_vec2::<f32>()?, caps))
        })?;
        let cache = PyDict::new(py);
        for (site, name) in sites.iter().zip(&names) {
            let arr = if all {
                all_positions(py, &caps, *site, &ids)?.into_any()
            } else {
                let rows: Vec<Vec<f32>> = (0..ids.len())
                    .map(|r| caps.at(*site, r, ids[r].len() - 1).unwrap_or(&[]).to_vec())
                    .collect();
                PyArray2::from_vec2(py, &rows)
                    .map_err(|e| PyRuntimeError::new_err(e.to_string()))?
                    .into_any()
            };
            cache.set_item(name, arr)?;
        }
        let logits =
            PyArray2::from_vec2(py, &logits).map_err(|e| PyRuntimeError::new_err(e.to_string()))?;
        Ok((logits, cache))
    }

    fn __repr__(&self) -> String {
        let c = self.inner.cfg();
        format!(
            "Model({}, {} layers, d_model {})",
            self.inner.path.display(),
            c.n_layers,
            c.d_model
        )
    }
}

impl Model {
    /// The steering of one call: a spec, `--steer` files with their strengths, behind a gate.
    fn plan(
        &self,
        spec: Option<&Spec>,
        steer: Option<&Bound<'_, PyAny>>,
        alpha: Option<&Bound<'_, PyAny>>,
        positions: &str,
        gate: Option<String>,
        gate_margin: f32,
    ) -> PyResult<Box<dyn Plan>> {
        let m = &self.inner;
        let files = one_or_many(steer)?;
        let alphas = one_or_many_f32(alpha)?;
        let alphas = steer::pair_alphas(files.len(), &alphas).ok_or_else(|| {
            PyValueError::new_err(format!(
                "give one alpha for every steer file or one per file: {} files, {} alphas",
                files.len(),
                alphas.len()
            ))
        })?;
        let opts = SteerOptions {
            positions: self::positions(positions)?,
            ..Default::default()
        };
        let mut plans: Vec<Box<dyn Plan>> = Vec::new();
        for (f, alpha) in files.iter().zip(alphas) {
            let req = SteerRequest {
                alpha,
                ..SteerRequest::parse(f)
            };
            plans.push(steer::plan(m, &req, &opts).py()?);
        }
        if let Some(s) = spec {
            m.validate(&s.inner).py()?;
            plans.push(Box::new(s.inner.clone()));
        }
        steer::combine(m, plans, gate.as_deref(), gate_margin).py()
    }
}

/// (batch, longest prompt, width) with NaN past each prompt's end.
fn all_positions<'py>(
    py: Python<'py>,
    caps: &ctxsteer::hooks::Captures,
    site: Site,
    ids: &[Vec<u32>],
) -> PyResult<Bound<'py, PyArray3<f32>>> {
    let longest = ids.iter().map(Vec::len).max().unwrap_or(0);
    let width = caps.rows(site).first().map_or(0, |r| r.values.len());
    let mut out = ndarray::Array3::<f32>::from_elem((ids.len(), longest, width), f32::NAN);
    for r in caps.rows(site) {
        for (j, v) in r.values.iter().enumerate() {
            out[[r.batch, r.pos, j]] = *v;
        }
    }
    Ok(numpy::PyArray3::from_owned_array(py, out))
}

/// Interventions as data: where, at which positions, and what (add, clamp, scale, …).
#[pyclass(module = "ctxsteer._native")]
#[derive(Clone, Default)]
struct Spec {
    inner: ctxsteer::Spec,
}

#[pymethods]
impl Spec {
    #[new]
    fn new() -> Self {
        Spec::default()
    }

    /// A spec file (JSON, as `ctxsteer generate --print-spec` writes it).
    #[staticmethod]
    fn load(path: PathBuf) -> PyResult<Spec> {
        Ok(Spec {
            inner: ctxsteer::Spec::read(&path).py()?,
        })
    }

    #[staticmethod]
    fn from_json(text: &str) -> PyResult<Spec> {
        Ok(Spec {
            inner: ctxsteer::Spec::from_json(text).py()?,
        })
    }

    fn to_json(&self) -> PyResult<String> {
        self.inner.to_json().py()
    }

    /// Add `scale * vector` at `site` (e.g. "blocks.12.hook_resid_post") on `positions`.
    #[pyo3(signature = (site, vector, scale = 1.0, positions = "all"))]
    fn add(
        &mut self,
        site: &str,
        vector: PyReadonlyArrayDyn<'_, f32>,
        scale: f32,
        positions: &str,
    ) -> PyResult<()> {
        let site = Site::parse(site, usize::MAX).py()?;
        let v: Vec<f32> = vector.as_array().iter().copied().collect();
        self.inner.push(Intervention::new(
            site,
            self::positions(positions)?,
            Action::Add { vector: v, scale },
        ));
        Ok(())
    }

    fn __len__(&self) -> usize {
        self.inner.interventions.len()
    }

    fn __repr__(&self) -> String {
        let sites: Vec<String> = self
            .inner
            .interventions
            .iter()
            .map(|i| i.site.to_string())
            .collect();
        format!("Spec([{}])", sites.join(", "))
    }
}

/// A probe file from `ctxsteer probe train`: one linear probe per site.
#[pyclass(module = "ctxsteer._native", frozen)]
struct Probe {
    inner: ctxsteer::probe::ProbeFile,
}

#[pymethods]
impl Probe {
    #[staticmethod]
    fn load(path: PathBuf) -> PyResult<Probe> {
        Ok(Probe {
            inner: ctxsteer::probe::ProbeFile::read(&path).py()?,
        })
    }

    /// The site with the best cross-validated AUROC on train.
    #[getter]
    fn best(&self) -> String {
        self.inner.best.clone()
    }

    #[getter]
    fn sites(&self) -> Vec<String> {
        self.inner.sites.iter().map(|p| p.site.clone()).collect()
    }

    /// What the probes predict: follows_context, conflict or known.
    #[getter]
    fn target(&self) -> String {
        self.inner.target.name().replace('-', "_")
    }

    /// Scores of activations (width,) or (n, width) at `site` (default: best): the logit of a
    /// logistic probe (positive predicts the positive class), the ±1-scale score of a linear one.
    #[pyo3(signature = (acts, site = None))]
    fn score<'py>(
        &self,
        py: Python<'py>,
        acts: PyReadonlyArrayDyn<'py, f32>,
        site: Option<&str>,
    ) -> PyResult<Bound<'py, PyArray1<f32>>> {
        let p = self
            .inner
            .site(&ctxsteer::probe::SiteRef::or_best(site))
            .py()?;
        let a = acts.as_array();
        let width = p.weights.len();
        let rows: Vec<Vec<f32>> = match a.ndim() {
            1 => vec![a.iter().copied().collect()],
            2 => a
                .outer_iter()
                .map(|r| r.iter().copied().collect())
                .collect(),
            n => {
                return Err(PyValueError::new_err(format!(
                    "acts has {n} dimensions; give (width,) or (n, width)"
                )))
            }
        };
        if let Some(r) = rows.iter().find(|r| r.len() != width) {
            return Err(PyValueError::new_err(format!(
                "acts have width {}, the probe at {} expects {width}",
                r.len(),
                p.site
            )));
        }
        Ok(PyArray1::from_vec(
            py,
            rows.iter().map(|r| p.score(r)).collect(),
        ))
    }

    /// A unit direction at `site` (default: best): kind "probe", "meandiff" or "pca".
    #[pyo3(signature = (site = None, kind = "probe"))]
    fn direction<'py>(
        &self,
        py: Python<'py>,
        site: Option<&str>,
        kind: &str,
    ) -> PyResult<Bound<'py, PyArray1<f32>>> {
        let d: steer::Direction = choose("kind", kind)?;
        let p = self
            .inner
            .site(&ctxsteer::probe::SiteRef::or_best(site))
            .py()?;
        Ok(PyArray1::from_slice(py, p.direction(d).py()?))
    }

    /// Held-out metrics at `site` (default: best) as a dict.
    #[pyo3(signature = (site = None))]
    fn metrics<'py>(&self, py: Python<'py>, site: Option<&str>) -> PyResult<Bound<'py, PyAny>> {
        let p = self
            .inner
            .site(&ctxsteer::probe::SiteRef::or_best(site))
            .py()?;
        from_json(py, &to_json_text(&p.metrics)?)
    }
}

/// A learned low-rank edit from `ctxsteer reft train`, checked against the model it is for.
#[pyclass(module = "ctxsteer._native", frozen)]
struct Edit {
    inner: ctxsteer::reft::Reft,
}

#[pymethods]
impl Edit {
    #[staticmethod]
    fn load(path: PathBuf, model: &Model) -> PyResult<Edit> {
        Ok(Edit {
            inner: ctxsteer::reft::Reft::load(&path, &model.inner).py()?,
        })
    }

    #[getter]
    fn sites(&self) -> Vec<String> {
        self.inner.meta.sites.clone()
    }

    #[getter]
    fn rank(&self) -> usize {
        self.inner.meta.rank
    }

    /// The spec that applies the edit, its change scaled by `scale`, on `positions`.
    #[pyo3(signature = (scale = 1.0, positions = "all"))]
    fn spec(&self, scale: f32, positions: &str) -> PyResult<Spec> {
        Ok(Spec {
            inner: self
                .inner
                .spec_at(scale, &self::positions(positions)?)
                .py()?,
        })
    }
}

/// Label each item of a JSONL file: closed-book and with its context, as ctxsteer label does.
#[pyfunction]
#[pyo3(signature = (model, data, form = "completion", split = None, spec = None, steer = None,
    alpha = None, gate = None, gate_margin = 0.0))]
#[allow(clippy::too_many_arguments)]
fn label<'py>(
    py: Python<'py>,
    model: &Model,
    data: PathBuf,
    form: &str,
    split: Option<&str>,
    spec: Option<&Spec>,
    steer: Option<&Bound<'py, PyAny>>,
    alpha: Option<&Bound<'py, PyAny>>,
    gate: Option<String>,
    gate_margin: f32,
) -> PyResult<Bound<'py, PyList>> {
    use ctxsteer::data::{Form, Split};
    let form: Form = choose("form", form)?;
    let (mut items, _) = ctxsteer::data::read_jsonl(&data, false).py()?;
    if let Some(s) = split {
        let s: Split = choose("split", s)?;
        items.retain(|it| it.split == Some(s));
    }
    let plan = model.plan(spec, steer, alpha, "all", gate, gate_margin)?;
    let opts = ctxsteer::label::LabelOptions::new(form);
    let m = &model.inner;
    let labels = without_gil(py, |check| {
        ctxsteer::label::label_items(m, &items, &opts, plan.as_ref(), &mut |_| check())
    })?;
    let list = PyList::empty(py);
    for l in &labels {
        list.append(from_json(py, &to_json_text(l)?)?)?;
    }
    Ok(list)
}

/// A name of `T`'s closed set, or a ValueError naming the valid choices.
fn choose<T: Choice>(what: &str, name: &str) -> PyResult<T> {
    T::from_name(name).ok_or_else(|| {
        PyValueError::new_err(format!("{what} {name:?}: valid choices are {}", T::names()))
    })
}

/// `ctxsteer bench conflict`: sweep each method on dev, measure the chosen setting on test on
/// conflicting, gold and irrelevant contexts, write the report into `out`; the report as a
/// dict.
#[pyfunction]
#[pyo3(signature = (model, data, out, methods = None, form = "completion", artefacts = "probes",
    steer = vec![], gate = vec![], heads_from = None, limit = None, seed = 0, batch_size = 16,
    resume = false, split = "test"))]
#[allow(clippy::too_many_arguments)]
fn bench_conflict<'py>(
    py: Python<'py>,
    model: &Model,
    data: PathBuf,
    out: PathBuf,
    methods: Option<Vec<String>>,
    form: &str,
    artefacts: &str,
    steer: Vec<PathBuf>,
    gate: Vec<PathBuf>,
    heads_from: Option<PathBuf>,
    limit: Option<usize>,
    seed: u64,
    batch_size: usize,
    resume: bool,
    split: &str,
) -> PyResult<Bound<'py, PyAny>> {
    use ctxsteer::bench::{Artefacts, Method};
    let form: ctxsteer::data::Form = choose("form", form)?;
    let split: ctxsteer::data::Split = choose("split", split)?;
    if batch_size == 0 || limit == Some(0) {
        return Err(PyValueError::new_err(
            "batch_size and limit must be at least 1",
        ));
    }
    let methods = methods
        .map(|v| v.iter().map(|m| choose::<Method>("method", m)).collect())
        .transpose()?;
    let (items, _) = ctxsteer::data::read_jsonl(&data, false).py()?;
    let mut art = Artefacts {
        heads_from,
        ..Default::default()
    };
    for p in &steer {
        art.add_steer(p).py()?;
    }
    for p in &gate {
        art.add_gate(p).py()?;
    }
    let m = &model.inner;
    let (art, _) = art
        .resolve(&m.identity().py()?, std::path::Path::new(artefacts), form)
        .py()?;
    let methods: Vec<Method> = methods.unwrap_or_else(|| art.methods(false));
    let res = art.load(m, &methods, None).py()?;
    let opts = ctxsteer::report::ConflictOptions {
        form,
        batch_size,
        limit,
        seed,
        split,
        resume,
        out,
        data: data.display().to_string(),
        command: "ctxsteer.bench_conflict (Python)".into(),
    };
    // Ctrl-C stops the run after the batch under way; finished batches stay in its journal.
    let report = without_gil(py, |_| {
        ctxsteer::report::bench_conflict(m, items, &methods, &res, &opts, &mut |_| {})
    })?;
    from_json(py, &to_json_text(&report)?)
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Model>()?;
    m.add_class::<Spec>()?;
    m.add_class::<Probe>()?;
    m.add_class::<Edit>()?;
    m.add_function(wrap_pyfunction!(label, m)?)?;
    m.add_function(wrap_pyfunction!(bench_conflict, m)?)?;
    Ok(())
}
