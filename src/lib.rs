//! ctxsteer: find where a language model chooses between the answer in its weights (its
//! prior) and the answer in its prompt (the context), and change that choice causally.
//!
//! The pieces: the engine crate (`ctxsteer-engine`, re-exported here as [`model`], [`hooks`],
//! [`generate`] and [`error`]) loads a real model (GGUF or safetensors) whose forward pass calls
//! [`hooks::Hooks::apply`] at every TransformerLens-named site; a [`hooks::Spec`] lists the
//! interventions (capture, add, replace, ablate, project out, clamp); [`generate`] runs
//! KV-cached generation under a spec. This crate holds what builds on it: observations,
//! analyses and interventions, evaluations, and [`fetch`], which downloads the known models.

pub mod atomic;
pub mod bench;
pub mod capture;
pub mod choice;
pub mod data;
pub mod demo;
pub mod density;
pub mod fetch;
pub mod journal;
pub mod label;
pub mod markup;
pub mod organism;
pub mod patch;
pub mod probe;
pub mod progress;
pub mod proxy;
pub mod public;
pub mod reft;
pub mod render;
pub mod report;
pub mod speed;
pub mod stats;
pub mod steer;

pub use ctxsteer_engine::{error, generate, hooks, model};
pub use error::{Error, Result};
pub use hooks::{Action, Captures, Intervention, Positions, Site, SiteKind, Spec};
pub use model::{Model, WeightsMode};
