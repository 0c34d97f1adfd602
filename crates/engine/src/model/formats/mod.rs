//! Model files: GGUF reading and its checks, weights by llama.cpp's or Hugging Face's names
//! (GGUF or safetensors), the families' configs, and tokenizers.

pub mod config;
pub(super) mod gguf_check;
pub(super) mod gguf_meta;
pub(super) mod gguf_read;
pub(super) mod names;
pub(super) mod spm;
pub mod tokenizer;
pub(super) mod weights;

use super::kernels::{fgemv, qgemm, qgemv, qrows};
