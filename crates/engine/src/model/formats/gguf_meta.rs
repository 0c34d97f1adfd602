//! Typed reads of a GGUF's metadata, whose errors name the key.

use crate::error::{Error, Result};
use candle_core::quantized::gguf_file;

/// Typed reads of an architecture's GGUF metadata (`ARCH.KEY`), whose errors name the key.
pub(super) struct Gguf<'a> {
    pub ct: &'a gguf_file::Content,
    pub arch: &'a str,
}

impl<'a> Gguf<'a> {
    pub fn get(&self, k: &str) -> Result<&'a gguf_file::Value> {
        self.optional(k)
            .ok_or_else(|| Error::Model(format!("GGUF metadata lacks `{}.{k}`", self.arch)))
    }

    pub fn u(&self, k: &str) -> Result<usize> {
        Ok(self.get(k)?.to_u32()? as usize)
    }

    pub fn f(&self, k: &str) -> Result<f32> {
        Ok(self.get(k)?.to_f32()?)
    }

    /// An optional key may be absent; present, it must have its type (not be read as absent).
    fn optional(&self, k: &str) -> Option<&'a gguf_file::Value> {
        self.ct.metadata.get(&format!("{}.{k}", self.arch))
    }

    fn wrong(&self, k: &str, e: candle_core::Error) -> Error {
        Error::Model(format!("GGUF metadata `{}.{k}`: {e}", self.arch))
    }

    pub fn opt_u(&self, k: &str) -> Result<Option<usize>> {
        self.optional(k)
            .map(|v| v.to_u32().map(|x| x as usize).map_err(|e| self.wrong(k, e)))
            .transpose()
    }

    pub fn opt_f(&self, k: &str) -> Result<Option<f32>> {
        self.optional(k)
            .map(|v| v.to_f32().map_err(|e| self.wrong(k, e)))
            .transpose()
    }
}

/// A top-level string key of the metadata.
pub(super) fn meta_str(ct: &gguf_file::Content, key: &str) -> Result<String> {
    ct.metadata
        .get(key)
        .and_then(|v| v.to_string().ok())
        .cloned()
        .ok_or_else(|| Error::Model(format!("GGUF metadata lacks `{key}`")))
}

/// The vocabulary size: `ARCH.vocab_size`, else the tokenizer's token count.
pub(super) fn gguf_vocab_size(m: &Gguf) -> Result<usize> {
    if let Ok(v) = m.get("vocab_size") {
        return Ok(v.to_u32()? as usize);
    }
    m.ct.metadata
        .get("tokenizer.ggml.tokens")
        .and_then(|v| v.to_vec().ok())
        .map(|v| v.len())
        .ok_or_else(|| Error::Model("cannot tell the vocabulary size".into()))
}
