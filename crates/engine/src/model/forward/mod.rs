//! The forward pass: token embeddings, attention, rope, norms, activations, the decoder that
//! runs them with hooks at every site, batches and KV caches, and plans (prompts to a spec).

pub(super) mod activation;
pub(super) mod attention;
pub(super) mod batch;
pub mod decoder;
pub(super) mod embedding;
pub(super) mod norm;
pub(super) mod plan;
pub(super) mod rope;

use super::formats::{config, names, weights};
use super::kernels::qgemm;
