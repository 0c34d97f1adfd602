//! Tokenizers and chat templates.
//!
//! A Hugging Face `tokenizer.json` is used when the model folder has one. For a GGUF file the
//! byte-level BPE is rebuilt from its metadata (tokens, merges, token types and the
//! pre-tokenizer name), matching what Hugging Face's converter produces: no prefix space, and
//! digits split one by one for SmolLM. Chat prompts are rendered from the model's own Jinja
//! `chat_template` with minijinja.

use crate::error::{Error, Result};
use candle_core::quantized::gguf_file;
use std::path::Path;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::{AddedToken, SplitDelimiterBehavior};

/// A chat message for the template.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Message {
    pub role: String,
    pub content: String,
}

impl Message {
    pub fn user(content: &str) -> Self {
        Message {
            role: "user".into(),
            content: content.into(),
        }
    }
}

/// A tokenizer with the model's special tokens and chat template.
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    pub bos_id: Option<u32>,
    pub eos_id: Option<u32>,
    /// Prompts begin with BOS (GGUF `tokenizer.ggml.add_bos_token`, or `add_bos_token` in
    /// tokenizer_config.json).
    pub add_bos: bool,
    pub chat_template: Option<String>,
}

const LLAMA3_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN2_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

impl Tokenizer {
    /// Load `tokenizer.json` (plus the template and special ids from `tokenizer_config.json`).
    pub fn from_folder(dir: &Path) -> Result<Self> {
        let path = dir.join("tokenizer.json");
        let inner = tokenizers::Tokenizer::from_file(&path).map_err(|e| Error::file(&path, e))?;
        let cfg_path = dir.join("tokenizer_config.json");
        let cfg: serde_json::Value = std::fs::read_to_string(&cfg_path)
            .ok()
            .and_then(|s| serde_json::from_str(&s).ok())
            .unwrap_or_default();
        let special = |k: &str| -> Option<u32> {
            let v = cfg.get(k)?;
            let s = v.as_str().or_else(|| v.get("content")?.as_str())?;
            inner.token_to_id(s)
        };
        Ok(Tokenizer {
            bos_id: special("bos_token"),
            eos_id: special("eos_token"),
            add_bos: cfg
                .get("add_bos_token")
                .and_then(|v| v.as_bool())
                .unwrap_or(false),
            chat_template: cfg
                .get("chat_template")
                .and_then(|t| t.as_str())
                .map(String::from),
            inner,
        })
    }

    /// Rebuild a byte-level BPE tokenizer from GGUF metadata.
    pub fn from_gguf(ct: &gguf_file::Content) -> Result<Self> {
        let md = |k: &str| ct.metadata.get(k);
        let kind = md("tokenizer.ggml.model")
            .and_then(|v| v.to_string().ok())
            .cloned()
            .unwrap_or_default();
        if kind != "gpt2" && kind != "llama" {
            return Err(Error::Tokenizer(format!(
                "GGUF tokenizer model `{kind}` is not supported (byte-level BPE `gpt2`, \
                 SentencePiece BPE `llama`); put a tokenizer.json beside the model instead"
            )));
        }
        let strings = |k: &str| gguf_strings(md(k), k);
        let tokens = strings("tokenizer.ggml.tokens")?;
        let types: Vec<i64> = match md("tokenizer.ggml.token_type") {
            Some(v) => v
                .to_vec()?
                .iter()
                .map(|t| t.to_i32().map(i64::from))
                .collect::<std::result::Result<_, _>>()?,
            None => vec![1; tokens.len()],
        };
        let id = |k: &str| md(k).and_then(|v| v.to_u32().ok());
        let flag = |k: &str| md(k).and_then(|v| v.to_bool().ok());
        let inner = if kind == "llama" {
            let scores: Vec<f32> = md("tokenizer.ggml.scores")
                .ok_or_else(|| {
                    Error::Tokenizer("GGUF metadata lacks `tokenizer.ggml.scores`".into())
                })?
                .to_vec()?
                .iter()
                .map(|v| v.to_f32())
                .collect::<std::result::Result<_, _>>()?;
            let prefix = flag("tokenizer.ggml.add_space_prefix").unwrap_or(true);
            super::spm::build(&tokens, &scores, &types, prefix)?
        } else {
            byte_level_bpe(md, tokens, types)?
        };
        Ok(Tokenizer {
            inner,
            bos_id: id("tokenizer.ggml.bos_token_id"),
            eos_id: id("tokenizer.ggml.eos_token_id"),
            add_bos: flag("tokenizer.ggml.add_bos_token").unwrap_or(false),
            chat_template: md("tokenizer.chat_template")
                .and_then(|v| v.to_string().ok())
                .cloned(),
        })
    }

    /// Token ids of a whole prompt: `encode(text)` after the BOS token when the model wants
    /// one (Gemma) and the text does not already begin with it.
    pub fn encode_prompt(&self, text: &str) -> Result<Vec<u32>> {
        let ids = self.encode(text)?;
        match self.bos_before(&ids) {
            Some(bos) => Ok(std::iter::once(bos).chain(ids).collect()),
            None => Ok(ids),
        }
    }

    /// The BOS token a prompt whose text encodes to `ids` begins with, if the model wants one
    /// and the text does not already begin with it.
    fn bos_before(&self, ids: &[u32]) -> Option<u32> {
        match (self.add_bos, self.bos_id) {
            (true, Some(bos)) if ids.first() != Some(&bos) => Some(bos),
            _ => None,
        }
    }
}

/// A GGUF metadata array of strings.
fn gguf_strings(v: Option<&gguf_file::Value>, key: &str) -> Result<Vec<String>> {
    v.ok_or_else(|| Error::Tokenizer(format!("GGUF metadata lacks `{key}`")))?
        .to_vec()?
        .iter()
        .map(|v| Ok(v.to_string()?.clone()))
        .collect()
}

/// The byte-level BPE of a `gpt2` GGUF tokenizer.
fn byte_level_bpe<'a>(
    md: impl Fn(&str) -> Option<&'a gguf_file::Value>,
    tokens: Vec<String>,
    types: Vec<i64>,
) -> Result<tokenizers::Tokenizer> {
    let strings = |k: &str| gguf_strings(md(k), k);
    {
        let merges: Vec<(String, String)> = strings("tokenizer.ggml.merges")?
            .into_iter()
            .map(|m| {
                m.split_once(' ')
                    .map(|(a, b)| (a.to_string(), b.to_string()))
                    .ok_or_else(|| Error::Tokenizer(format!("bad merge `{m}`")))
            })
            .collect::<Result<_>>()?;
        let vocab: tokenizers::models::bpe::Vocab = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i as u32))
            .collect();
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .build()
            .map_err(|e| Error::Tokenizer(e.to_string()))?;
        let mut inner = tokenizers::Tokenizer::new(bpe);
        let pre = md("tokenizer.ggml.pre")
            .and_then(|v| v.to_string().ok())
            .map(String::as_str)
            .unwrap_or("gpt2");
        inner.with_pre_tokenizer(Some(pre_tokenizer(pre)?));
        inner.with_decoder(Some(ByteLevelDecoder::default()));
        // Control (3) and user-defined (4) tokens are matched whole, before BPE.
        let added = |kind: i64| -> Vec<AddedToken> {
            tokens
                .iter()
                .zip(&types)
                .filter(|(_, t)| **t == kind)
                .map(|(s, _)| AddedToken::from(s.clone(), kind == 3))
                .collect()
        };
        let tk = |e: tokenizers::Error| Error::Tokenizer(e.to_string());
        inner.add_special_tokens(added(3)).map_err(tk)?;
        inner.add_tokens(added(4)).map_err(tk)?;
        Ok(inner)
    }
}

impl Tokenizer {
    /// Token ids of `text`, without adding BOS/EOS; special tokens written in the text match.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode(text, false)
            .map_err(|e| Error::Tokenizer(e.to_string()))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Byte offsets `(start, end)` in `text` of each token of `encode(text)`.
    pub fn offsets(&self, text: &str) -> Result<Vec<(usize, usize)>> {
        let enc = self
            .inner
            .encode(text, false)
            .map_err(|e| Error::Tokenizer(e.to_string()))?;
        Ok(enc.get_offsets().to_vec())
    }

    /// Byte offsets in `text` of each token of `encode_prompt(text)`, index for index: a BOS
    /// token the prompt begins with gets `(0, 0)`.
    pub fn prompt_offsets(&self, text: &str) -> Result<Vec<(usize, usize)>> {
        let enc = self
            .inner
            .encode(text, false)
            .map_err(|e| Error::Tokenizer(e.to_string()))?;
        let offsets = enc.get_offsets().iter().copied();
        Ok(match self.bos_before(enc.get_ids()) {
            Some(_) => std::iter::once((0, 0)).chain(offsets).collect(),
            None => offsets.collect(),
        })
    }

    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner
            .decode(ids, false)
            .map_err(|e| Error::Tokenizer(e.to_string()))
    }

    /// Write the tokenizer as a Hugging Face `tokenizer.json`.
    pub fn save(&self, path: &Path) -> Result<()> {
        self.inner
            .save(path, false)
            .map_err(|e| Error::file(path, e))
    }

    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Render `messages` with the model's chat template.
    pub fn render_chat(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String> {
        let tpl = self.chat_template.as_deref().ok_or_else(|| {
            Error::Tokenizer("this model has no chat template; use completion form".into())
        })?;
        let mut env = minijinja::Environment::new();
        env.add_function(
            "raise_exception",
            |msg: String| -> std::result::Result<String, minijinja::Error> {
                Err(minijinja::Error::new(
                    minijinja::ErrorKind::InvalidOperation,
                    msg,
                ))
            },
        );
        env.add_template("chat", tpl)
            .map_err(|e| Error::Tokenizer(format!("chat template: {e}")))?;
        let name = |id: Option<u32>| {
            id.and_then(|i| self.inner.id_to_token(i))
                .unwrap_or_default()
        };
        let ctx = minijinja::context! {
            messages => messages,
            add_generation_prompt => add_generation_prompt,
            bos_token => name(self.bos_id),
            eos_token => name(self.eos_id),
        };
        env.get_template("chat")
            .and_then(|t| t.render(ctx))
            .map_err(|e| Error::Tokenizer(format!("chat template: {e}")))
    }
}

/// The pre-tokenizer llama.cpp's `tokenizer.ggml.pre` names.
fn pre_tokenizer(pre: &str) -> Result<PreTokenizerWrapper> {
    let split = |re: &str| -> Result<PreTokenizerWrapper> {
        let s = Split::new(
            SplitPattern::Regex(re.into()),
            SplitDelimiterBehavior::Isolated,
            false,
        )
        .map_err(|e| Error::Tokenizer(e.to_string()))?;
        Ok(Sequence::new(vec![s.into(), ByteLevel::new(false, true, false).into()]).into())
    };
    Ok(match pre {
        "smollm" | "starcoder" | "refact" => Sequence::new(vec![
            Digits::new(true).into(),
            ByteLevel::new(false, true, true).into(),
        ])
        .into(),
        "llama3" | "llama-bpe" | "smaug-bpe" => split(LLAMA3_REGEX)?,
        "qwen2" => split(QWEN2_REGEX)?,
        _ => ByteLevel::new(false, true, true).into(),
    })
}
