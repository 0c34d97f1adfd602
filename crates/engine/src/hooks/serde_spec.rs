//! A [`Spec`] as JSON data, so that a set of interventions can be saved, shared and replayed
//! (`generate --print-spec`, `--spec FILE`), like pyvene's intervention configs.
//!
//! ```json
//! {"interventions": [
//!   {"site": "blocks.12.hook_resid_post", "positions": "all",
//!    "action": {"add": {"vector": [0.1, ...], "scale": 2.0}}},
//!   {"site": "blocks.23.attn.hook_z", "positions": [4, 5], "heads": [4], "rows": [0],
//!    "action": {"scale": {"factor": 0.0}}},
//!   {"site": "blocks.12.hook_resid_post", "positions": "all",
//!    "action": {"low_rank": {"r": [[...]], "w": [[...]], "b": [...]}}}
//! ]}
//! ```
//!
//! Sites are TransformerLens names; positions are `all`, `prompt`, `generated`, `last`, `answer` or a list
//! of absolute indices; `heads` and `rows` are optional. Actions: `capture`, `add`, `replace`
//! (`values` keyed by position), `zero_ablate`, `mean_ablate`, `project_out`, `clamp`, `scale`,
//! `low_rank`. A spec read from a file is checked against the model before it runs.

use super::{Action, LowRank, Positions, Site, Spec};
use crate::error::{Error, Result};
use candle_core::{Device, Tensor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::BTreeMap;

impl Serialize for Site {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Site {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        // The layer is checked against the model when the spec is validated.
        Site::parse(&name, usize::MAX).map_err(serde::de::Error::custom)
    }
}

/// Positions as a name or a list of indices.
#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum PositionsData {
    Named(String),
    Indices(Vec<usize>),
}

impl Serialize for Positions {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let data = match self {
            Positions::All => PositionsData::Named("all".into()),
            Positions::Prompt => PositionsData::Named("prompt".into()),
            Positions::Generated => PositionsData::Named("generated".into()),
            Positions::Last => PositionsData::Named("last".into()),
            Positions::Answer => PositionsData::Named("answer".into()),
            Positions::Indices(v) => PositionsData::Indices(v.clone()),
        };
        data.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Positions {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        match PositionsData::deserialize(d)? {
            PositionsData::Indices(v) => Ok(Positions::Indices(super::once_each(v))),
            PositionsData::Named(n) => match n.as_str() {
                "all" | "prompt" | "generated" | "last" | "answer" => {
                    n.parse().map_err(serde::de::Error::custom)
                }
                _ => Err(serde::de::Error::custom(format!(
                    "positions `{n}`: use all, prompt, generated, last, answer, or a list of indices"
                ))),
            },
        }
    }
}

/// The edit's tensors as nested arrays.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct LowRankData {
    r: Vec<Vec<f32>>,
    w: Vec<Vec<f32>>,
    b: Vec<f32>,
}

impl Serialize for LowRank {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::Error as _;
        let rows = |t: &Tensor| t.to_vec2::<f32>().map_err(S::Error::custom);
        let data = LowRankData {
            r: rows(&self.r)?,
            w: rows(&self.w)?,
            b: self.b.to_vec1::<f32>().map_err(S::Error::custom)?,
        };
        data.serialize(s)
    }
}

impl<'de> Deserialize<'de> for LowRank {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        use serde::de::Error as _;
        let data = LowRankData::deserialize(d)?;
        let matrix = |name: &str, m: Vec<Vec<f32>>| -> Result<Tensor> {
            let cols = m.first().map_or(0, Vec::len);
            if m.is_empty() || cols == 0 || m.iter().any(|row| row.len() != cols) {
                return Err(Error::Invalid(format!(
                    "low_rank.{name} must be a non-empty matrix with rows of one length"
                )));
            }
            let rows = m.len();
            let flat: Vec<f32> = m.into_iter().flatten().collect();
            Ok(Tensor::from_vec(flat, (rows, cols), &Device::Cpu)?)
        };
        let built = (|| {
            let b = Tensor::from_vec(data.b.clone(), data.b.len(), &Device::Cpu)?;
            LowRank::new(matrix("r", data.r)?, matrix("w", data.w)?, b)
        })();
        built.map_err(D::Error::custom)
    }
}

/// The serialized form of an action: one key naming it.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
enum ActionData {
    Capture,
    Add { vector: Vec<f32>, scale: f32 },
    Replace { values: BTreeMap<usize, Vec<f32>> },
    ZeroAblate,
    MeanAblate { mean: Vec<f32> },
    ProjectOut { direction: Vec<f32> },
    Clamp { direction: Vec<f32>, value: f32 },
    Scale { factor: f32 },
    LowRank(LowRank),
}

impl Serialize for Action {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let data = match self.clone() {
            Action::Capture => ActionData::Capture,
            Action::Add { vector, scale } => ActionData::Add { vector, scale },
            Action::Replace { values } => ActionData::Replace { values },
            Action::ZeroAblate => ActionData::ZeroAblate,
            Action::MeanAblate { mean } => ActionData::MeanAblate { mean },
            Action::ProjectOut { direction } => ActionData::ProjectOut { direction },
            Action::Clamp { direction, value } => ActionData::Clamp { direction, value },
            Action::Scale { factor } => ActionData::Scale { factor },
            Action::LowRank(e) => ActionData::LowRank(e),
        };
        data.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Action {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        Ok(match ActionData::deserialize(d)? {
            ActionData::Capture => Action::Capture,
            ActionData::Add { vector, scale } => Action::Add { vector, scale },
            ActionData::Replace { values } => Action::Replace { values },
            ActionData::ZeroAblate => Action::ZeroAblate,
            ActionData::MeanAblate { mean } => Action::MeanAblate { mean },
            ActionData::ProjectOut { direction } => Action::ProjectOut { direction },
            ActionData::Clamp { direction, value } => Action::Clamp { direction, value },
            ActionData::Scale { factor } => Action::Scale { factor },
            ActionData::LowRank(e) => Action::LowRank(e),
        })
    }
}

impl Spec {
    /// The spec as pretty JSON.
    pub fn to_json(&self) -> Result<String> {
        serde_json::to_string_pretty(self).map_err(|e| Error::Invalid(e.to_string()))
    }

    /// Read a spec from a JSON file; the error names the file, line and column.
    pub fn read(path: &std::path::Path) -> Result<Spec> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::file(path, e))?;
        Spec::from_json(&text).map_err(|e| Error::file(path, e))
    }

    /// A spec from JSON text; the error names the line and column, or the intervention that
    /// holds a non-finite number.
    pub fn from_json(text: &str) -> Result<Spec> {
        let spec: Spec = serde_json::from_str(text).map_err(|e| {
            Error::Invalid(format!(
                "not a spec (line {}, column {}): {e}",
                e.line(),
                e.column()
            ))
        })?;
        for iv in &spec.interventions {
            let finite = match &iv.action {
                Action::Add { vector, scale } => {
                    scale.is_finite() && vector.iter().all(|x| x.is_finite())
                }
                Action::Clamp { direction, value } => {
                    value.is_finite() && direction.iter().all(|x| x.is_finite())
                }
                Action::Scale { factor } => factor.is_finite(),
                _ => true,
            };
            if !finite {
                return Err(Error::Invalid(format!(
                    "the intervention at {} holds a non-finite number",
                    iv.site
                )));
            }
        }
        Ok(spec)
    }
}

/// Whether `site` is a per-layer site whose layer is below `n_layers`.
pub(super) fn layer_in_range(site: Site, n_layers: usize) -> bool {
    !site.kind.per_layer() || site.layer < n_layers
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_named_position_round_trips_and_unknown_names_are_refused() {
        for p in [
            Positions::All,
            Positions::Prompt,
            Positions::Generated,
            Positions::Last,
            Positions::Answer,
            Positions::Indices(vec![0, 3]),
        ] {
            let text = serde_json::to_string(&p).unwrap();
            assert_eq!(
                serde_json::from_str::<Positions>(&text).unwrap(),
                p,
                "{text}"
            );
        }
        let e = serde_json::from_str::<Positions>("\"first\"").unwrap_err();
        assert!(e.to_string().contains("answer"), "{e}");
    }
}
