//! ctxsteer: find where a language model chooses between the answer in its weights (its
//! prior) and the answer in its prompt (the context), and change that choice causally.
//!
//! The pieces: [`model`] loads a real model (GGUF or safetensors) whose forward pass calls
//! [`hooks::Hooks::apply`] at every TransformerLens-named site; a [`hooks::Spec`] lists the
//! interventions (capture, add, replace, ablate, project out, clamp); [`generate`] runs
//! KV-cached generation under a spec.

pub mod atomic;
pub mod bench;
pub mod capture;
pub mod choice;
pub mod data;
pub mod demo;
pub mod density;
pub mod error;
pub mod generate;
pub mod hooks;
pub mod journal;
pub mod label;
pub mod markup;
pub mod model;
pub mod organism;
pub mod patch;
pub mod probe;
pub mod progress;
pub mod proxy;
pub mod public;
pub mod reft;
pub mod report;
pub mod speed;
pub mod stats;
pub mod steer;

pub use error::{Error, Result};
pub use hooks::{Action, Captures, Intervention, Positions, Site, SiteKind, Spec};
pub use model::{Model, WeightsMode};
