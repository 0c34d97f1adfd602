//! The library's error type. Every failure a user can cause (a bad file, a bad site name, a
//! vector of the wrong size) becomes a variant here with enough context to fix it; the binary
//! adds its own context with anyhow at the edge.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("unknown hook site `{name}`; valid sites are: {valid}")]
    UnknownSite { name: String, valid: String },

    #[error("layer {layer} in `{name}` is out of range: this model has layers 0..={last}")]
    LayerOutOfRange {
        name: String,
        layer: usize,
        last: usize,
    },

    #[error("invalid positions `{0}`: use all, prompt, generated, last, answer, or comma-separated indices like 0,3,7")]
    BadPositions(String),

    #[error("{what} has length {got}, expected {expected} for site {site}")]
    BadLength {
        what: String,
        site: String,
        got: usize,
        expected: usize,
    },

    #[error("{path}: {msg}")]
    File { path: PathBuf, msg: String },

    #[error("model: {0}")]
    Model(String),

    #[error("tokenizer: {0}")]
    Tokenizer(String),

    #[error("{0}")]
    Invalid(String),

    #[error(transparent)]
    Candle(#[from] candle_core::Error),

    #[error(transparent)]
    Io(#[from] std::io::Error),
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// An error about a file, keeping its path in the message.
    pub fn file(path: impl Into<PathBuf>, msg: impl std::fmt::Display) -> Self {
        Error::File {
            path: path.into(),
            msg: msg.to_string(),
        }
    }
}
