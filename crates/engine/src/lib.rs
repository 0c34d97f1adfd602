//! ctxsteer's engine: a model loaded from a GGUF file or a Hugging Face folder ([`model`]), its
//! forward pass with hook sites named as TransformerLens names them ([`hooks`]), and decoding
//! with interventions and context-aware decoding ([`generate`]). The analyses, the evaluations,
//! the command line and the Python package build on it; it knows none of them, and fetches
//! nothing.

pub mod error;
pub mod generate;
pub mod hooks;
pub mod model;

pub use error::{Error, Result};
pub use hooks::{Action, Captures, Intervention, Positions, Site, SiteKind, Spec};
pub use model::{Model, WeightsMode};
