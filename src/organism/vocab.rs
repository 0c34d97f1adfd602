//! The world's word-level tokenizer: words split as the `Whitespace` pre-tokenizer splits them,
//! ids by descending count, written as tokenizer.json directly so that the bytes depend only on
//! the texts.

use crate::error::{Error, Result};
use std::collections::BTreeMap;

/// Words as the tokenizer's pre-tokenizer splits them: runs of letters, digits and `_`, and
/// runs of other non-space characters.
pub fn words(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start: Option<(usize, bool)> = None;
    for (i, c) in text.char_indices() {
        let kind = (!c.is_whitespace()).then(|| c.is_alphanumeric() || c == '_');
        if let Some((s, k)) = start {
            if kind == Some(k) {
                continue;
            }
            out.push(&text[s..i]);
        }
        start = kind.map(|k| (i, k));
    }
    if let Some((s, _)) = start {
        out.push(&text[s..]);
    }
    out
}

/// The end-of-text token, which separates training sequences and stops generation.
pub const EOS: &str = "<|endoftext|>";
pub(super) const UNK: &str = "<unk>";

/// A word-level tokenizer over `texts` (ids by descending count, then by word), as
/// tokenizer.json text.
pub(super) fn tokenizer_json(texts: &[&str]) -> Result<(String, usize)> {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for t in texts {
        for w in words(t) {
            *counts.entry(w).or_default() += 1;
        }
    }
    let mut order: Vec<(&str, usize)> = counts.into_iter().collect();
    order.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let mut vocab = serde_json::Map::new();
    for (i, w) in [EOS, UNK]
        .into_iter()
        .chain(order.iter().map(|(w, _)| *w))
        .enumerate()
    {
        vocab.insert(w.to_string(), serde_json::json!(i));
    }
    let special = |id: usize, content: &str| {
        serde_json::json!({"id": id, "content": content, "single_word": false, "lstrip": false,
            "rstrip": false, "normalized": false, "special": true})
    };
    let n = vocab.len();
    let v = serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null,
        "added_tokens": [special(0, EOS), special(1, UNK)],
        "normalizer": null, "pre_tokenizer": {"type": "Whitespace"}, "post_processor": null,
        "decoder": null,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": UNK},
    });
    let text = serde_json::to_string_pretty(&v).map_err(|e| Error::Invalid(e.to_string()))?;
    Ok((text, n))
}

/// tokenizer_config.json: prompts begin with the end-of-text token, as every training
/// window's sentences do.
pub(super) fn tokenizer_config() -> String {
    serde_json::json!({"bos_token": EOS, "eos_token": EOS, "unk_token": UNK,
        "add_bos_token": true})
    .to_string()
}
