//! A SentencePiece-style BPE tokenizer (GGUF `tokenizer.ggml.model = "llama"`, as Gemma 3
//! uses), rebuilt from GGUF metadata as a Hugging Face tokenizer.
//!
//! SentencePiece's BPE merges, at each step, the adjacent pair whose joined piece has the
//! highest score. Ranking every (left, right) split of each normal piece by that piece's score
//! gives the same order as a merge list, which is what Hugging Face's converter does too.
//! Spaces become `▁` (no prefix space unless the file asks for one), unknown characters fall
//! back to `<0xXX>` byte pieces, and control and user-defined pieces (Gemma's runs of spaces
//! and newlines, HTML tags) are matched whole in the raw text first.

use crate::error::{Error, Result};
use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::models::bpe::Vocab;
use tokenizers::models::bpe::BPE;
use tokenizers::normalizers::{Prepend, Replace};
use tokenizers::{AddedToken, DecoderWrapper, NormalizerWrapper};

/// llama.cpp's token types.
const NORMAL: i64 = 1;
const CONTROL: i64 = 3;
const USER_DEFINED: i64 = 4;

/// The tokenizer for `tokens` with their `scores` and `types`.
pub(in crate::model) fn build(
    tokens: &[String],
    scores: &[f32],
    types: &[i64],
    add_space_prefix: bool,
) -> Result<tokenizers::Tokenizer> {
    if scores.len() != tokens.len() || types.len() != tokens.len() {
        return Err(Error::Tokenizer(format!(
            "GGUF tokenizer: {} tokens but {} scores and {} types",
            tokens.len(),
            scores.len(),
            types.len()
        )));
    }
    let vocab: Vocab = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), i as u32))
        .collect();
    let merges = merges(tokens, scores, types, &vocab);
    let unk = tokens
        .iter()
        .zip(types)
        .find(|(t, ty)| **ty == 2 || t.as_str() == "<unk>")
        .map(|(t, _)| t.clone())
        .unwrap_or_else(|| "<unk>".into());
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .unk_token(unk)
        .byte_fallback(true)
        .build()
        .map_err(|e| Error::Tokenizer(e.to_string()))?;
    let mut inner = tokenizers::Tokenizer::new(bpe);
    let tk = |e: tokenizers::Error| Error::Tokenizer(e.to_string());
    inner
        .with_normalizer(Some(normalizer(add_space_prefix)?))
        .map_err(tk)?;
    inner.with_decoder(Some(decoder(add_space_prefix)?));
    let added = |kind: i64| -> Vec<AddedToken> {
        tokens
            .iter()
            .zip(types)
            .filter(|(_, t)| **t == kind)
            .map(|(s, _)| AddedToken::from(s.clone(), kind == CONTROL).normalized(false))
            .collect()
    };
    inner.add_special_tokens(added(CONTROL)).map_err(tk)?;
    inner.add_tokens(added(USER_DEFINED)).map_err(tk)?;
    Ok(inner)
}

/// Spaces become `▁`, after a `▁` prefix when the file asks for one.
fn normalizer(add_space_prefix: bool) -> Result<NormalizerWrapper> {
    let tk = |e: tokenizers::Error| Error::Tokenizer(e.to_string());
    let space = Replace::new(" ", "▁").map_err(tk)?;
    Ok(match add_space_prefix {
        true => tokenizers::normalizers::Sequence::new(vec![
            Prepend::new("▁".into()).into(),
            space.into(),
        ])
        .into(),
        false => space.into(),
    })
}

/// `▁` back to spaces, byte pieces back to bytes, and the prefix space dropped.
fn decoder(add_space_prefix: bool) -> Result<DecoderSequence> {
    let tk = |e: tokenizers::Error| Error::Tokenizer(e.to_string());
    let unspace: DecoderWrapper = Replace::new("▁", " ").map_err(tk)?.into();
    let mut steps = vec![
        unspace,
        ByteFallback::default().into(),
        Fuse::default().into(),
    ];
    if add_space_prefix {
        steps.push(tokenizers::decoders::strip::Strip::new(' ', 1, 0).into());
    }
    Ok(DecoderSequence::new(steps))
}

/// Every split of a normal piece into two pieces of the vocabulary, best joined score first.
fn merges(
    tokens: &[String],
    scores: &[f32],
    types: &[i64],
    vocab: &Vocab,
) -> Vec<(String, String)> {
    let mut ranked: Vec<(f32, u32, u32, usize)> = Vec::new();
    for (id, piece) in tokens.iter().enumerate() {
        if types[id] != NORMAL || piece.chars().nth(1).is_none() {
            continue;
        }
        for (cut, _) in piece.char_indices().skip(1) {
            let (l, r) = piece.split_at(cut);
            if let (Some(&li), Some(&ri)) = (vocab.get(l), vocab.get(r)) {
                ranked.push((scores[id], li, ri, cut));
            }
        }
    }
    // Higher score first; among splits of one piece, the longer left part first.
    ranked.sort_by(|a, b| b.0.total_cmp(&a.0).then(b.3.cmp(&a.3)));
    ranked
        .into_iter()
        .map(|(_, l, r, _)| (tokens[l as usize].clone(), tokens[r as usize].clone()))
        .collect()
}
