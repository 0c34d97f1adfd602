//! Output files written whole: through a uniquely named temporary file beside the target and a
//! rename, so a reader never sees half a file, a failure leaves no temporary behind, and
//! nothing that is not a regular file (a folder, a symlink, a device) is ever replaced.

use crate::error::{Error, Result};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

/// An error when the output `out` is one of the `inputs` (the same file, by any name): an
/// output never overwrites what the run reads.
pub fn check_not_input(out: &Path, inputs: &[&Path]) -> Result<()> {
    let same = |a: &Path, b: &Path| match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    };
    match inputs.iter().find(|i| same(out, i)) {
        Some(i) => Err(Error::file(
            out,
            format!(
                "the output is the input {}; write the output elsewhere",
                i.display()
            ),
        )),
        None => Ok(()),
    }
}

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

/// An advisory lock on an output (a file or a folder), held until dropped: a second run that
/// writes the same output is refused instead of silently losing one of the two results.
pub struct OutputLock {
    _file: std::fs::File,
}

impl OutputLock {
    /// Lock `out`: `.NAME.lock` beside a file, `.ctxsteer.lock` inside a folder (`folder`).
    pub fn acquire(out: &Path, folder: bool) -> Result<OutputLock> {
        let lock = if folder {
            std::fs::create_dir_all(out).map_err(|e| Error::file(out, e))?;
            out.join(".ctxsteer.lock")
        } else {
            let dir = self::folder(out);
            std::fs::create_dir_all(&dir).map_err(|e| Error::file(&dir, e))?;
            let name = out
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "out".into());
            dir.join(format!(".{name}.lock"))
        };
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock)
            .map_err(|e| Error::file(&lock, e))?;
        #[cfg(unix)]
        {
            use std::os::unix::io::AsRawFd;
            // SAFETY: flock on a file descriptor this function owns.
            let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
            if rc != 0 {
                return Err(Error::file(
                    out,
                    "another ctxsteer run is writing this output now; wait for it or choose another output",
                ));
            }
        }
        Ok(OutputLock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn a_second_writer_of_one_output_is_refused_until_the_first_is_done() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("labels.jsonl");
        let first = OutputLock::acquire(&out, false).unwrap();
        let err = OutputLock::acquire(&out, false).err().unwrap().to_string();
        assert!(err.contains("another ctxsteer run"), "{err}");
        drop(first);
        OutputLock::acquire(&out, false).unwrap();
        let folder = dir.path().join("acts");
        let _held = OutputLock::acquire(&folder, true).unwrap();
        assert!(OutputLock::acquire(&folder, true).is_err());
    }

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
