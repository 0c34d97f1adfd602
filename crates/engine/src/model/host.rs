//! What the engine needs of its host: the device to run on, and a file's digest (a model's
//! identity in every artefact).

use crate::error::{Error, Result};
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::Path;

/// The candle device a name means: cpu, cuda, cuda:N or metal (GPUs need a build with the
/// `cuda` or `metal` feature).
pub fn device(s: &str) -> Result<candle_core::Device> {
    let gpu = |r: candle_core::Result<candle_core::Device>, feature: &str| {
        r.map_err(|e| {
            Error::Invalid(format!(
                "device {s}: {e} (a GPU build is `cargo build --release --features {feature}`)"
            ))
        })
    };
    Ok(match s {
        "cpu" => candle_core::Device::Cpu,
        "cuda" => gpu(candle_core::Device::new_cuda(0), "cuda")?,
        "metal" => gpu(candle_core::Device::new_metal(0), "metal")?,
        _ => match s.strip_prefix("cuda:").map(str::parse::<usize>) {
            Some(Ok(n)) => gpu(candle_core::Device::new_cuda(n), "cuda")?,
            _ => {
                return Err(Error::Invalid(format!(
                    "device {s:?}: valid choices are cpu, cuda, cuda:N, metal"
                )))
            }
        },
    })
}

/// The sha256 of a file, as lowercase hex.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).map_err(|e| Error::file(path, e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(|e| Error::file(path, e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(format!("{:x}", h.finalize()))
}
