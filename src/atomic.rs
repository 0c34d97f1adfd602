//! Output files written whole: through a uniquely named temporary file beside the target and a
//! rename, so a reader never sees half a file, a failure leaves no temporary behind, and
//! nothing that is not a regular file (a folder, a symlink, a device) is ever replaced.

use crate::error::{Error, Result};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Refuse an output path that names something other than a regular file, and check that its
/// folder can be written, before any long work whose result would go there.
pub fn check_target(path: &Path) -> Result<()> {
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        let kind = meta.file_type();
        let what = if kind.is_dir() {
            Some("a folder")
        } else if kind.is_symlink() {
            Some("a symbolic link")
        } else if !kind.is_file() {
            Some("not a regular file (a device, pipe or socket)")
        } else {
            None
        };
        if let Some(what) = what {
            return Err(Error::file(
                path,
                format!("the output path is {what}; name a regular file to write"),
            ));
        }
    }
    let dir = folder(path);
    std::fs::create_dir_all(&dir).map_err(|e| Error::file(&dir, e))?;
    let probe = temp_name(path);
    std::fs::write(&probe, b"")
        .map_err(|e| Error::file(&dir, format!("cannot write in this folder: {e}")))?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

/// Write `path` whole: `write` fills a temporary sibling, which then replaces `path`.
pub fn replace_with(path: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    check_target(path)?;
    let tmp = temp_name(path);
    let done =
        write(&tmp).and_then(|()| std::fs::rename(&tmp, path).map_err(|e| Error::file(path, e)));
    if done.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    done
}

/// Write `bytes` to `path` whole.
pub fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    replace_with(path, |tmp| {
        std::fs::write(tmp, bytes).map_err(|e| Error::file(tmp, e))
    })
}

fn folder(path: &Path) -> PathBuf {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// `.NAME.PID.N.tmp` beside `path`: unique per process and call.
fn temp_name(path: &Path) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "out".into());
    let n = N.fetch_add(1, Ordering::Relaxed);
    folder(path).join(format!(".{name}.{}.{n}.tmp", std::process::id()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_whole_and_refuses_what_is_not_a_regular_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("sub/out.json");
        write(&f, b"one").unwrap();
        write(&f, b"two").unwrap();
        assert_eq!(std::fs::read(&f).unwrap(), b"two");
        let err = write(dir.path(), b"x").unwrap_err().to_string();
        assert!(err.contains("a folder"), "{err}");
        #[cfg(unix)]
        {
            let link = dir.path().join("link.json");
            std::os::unix::fs::symlink(&f, &link).unwrap();
            let err = write(&link, b"x").unwrap_err().to_string();
            assert!(err.contains("symbolic link"), "{err}");
            assert_eq!(std::fs::read(&f).unwrap(), b"two");
        }
        // A failing writer leaves the target as it was and no temporary behind.
        let failed = replace_with(&f, |_| Err(Error::Invalid("boom".into())));
        assert!(failed.is_err());
        assert_eq!(std::fs::read(&f).unwrap(), b"two");
        let left: Vec<_> = std::fs::read_dir(f.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, vec![std::ffi::OsString::from("out.json")]);
    }
}
