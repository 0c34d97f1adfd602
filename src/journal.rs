//! A journal of finished runs, so that a long evaluation that stops (a killed process, a
//! machine handed back, a session's end) goes on where it stopped instead of starting over.
//!
//! One JSONL file; each line is one record (for evaluations, an item's run) under a key that
//! names the evaluation it belongs to (benchmark, method settings, dev or test, condition) and
//! the item. Lines are appended batch by batch and flushed, so at most the batch under way is
//! lost. A last line cut off by a kill is dropped when the journal is opened again; any other
//! line that does not parse is an error naming it.

use crate::error::{Error, Result};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Serialize, Deserialize)]
struct Line<R> {
    key: String,
    run: R,
}

/// Finished records by key, backed by an append-only JSONL file.
pub struct Journal<R> {
    path: PathBuf,
    /// Where new records are appended; None for a journal opened read-only.
    file: Option<std::fs::File>,
    done: HashMap<String, R>,
    /// How many runs [`Journal::get`] has handed back since the journal was opened.
    hits: std::cell::Cell<usize>,
}

impl<R: Serialize + DeserializeOwned> Journal<R> {
    /// Open the journal at `path`. With `resume`, the runs already there are kept; without it
    /// a journal that holds runs is refused (never emptied: they are an earlier run's work),
    /// and an empty or missing one is started afresh.
    pub fn open(path: &Path, resume: bool) -> Result<Journal<R>> {
        let held = std::fs::metadata(path).is_ok_and(|m| m.len() > 0);
        if held && !resume {
            return Err(Error::file(
                path,
                "holds the finished runs of an earlier run; resume it (--resume), or write \
                 to another folder",
            ));
        }
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| Error::file(dir, e))?;
        }
        let mut done = HashMap::new();
        if resume && path.exists() {
            let (runs, cut_off) = load(path)?;
            done = runs;
            // Rewrite without the cut-off tail, so that appends start on a fresh line.
            if let Some(whole) = cut_off {
                crate::data::write_atomic(path, whole.as_bytes())?;
            }
        } else {
            std::fs::write(path, b"").map_err(|e| Error::file(path, e))?;
        }
        let file = std::fs::OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(|e| Error::file(path, e))?;
        Ok(Journal {
            path: path.to_path_buf(),
            file: Some(file),
            done,
            hits: std::cell::Cell::new(0),
        })
    }

    /// Open the journal at `path` (if there is one) to read it only: the file is left exactly
    /// as it is, a cut-off last line is skipped, and runs recorded later stay in memory. Safe
    /// beside another process that is appending to it.
    pub fn open_read_only(path: &Path) -> Result<Journal<R>> {
        let done = match path.exists() {
            true => load(path)?.0,
            false => HashMap::new(),
        };
        Ok(Journal {
            path: path.to_path_buf(),
            file: None,
            done,
            hits: std::cell::Cell::new(0),
        })
    }

    /// The run saved under `key`, if any.
    pub fn get(&self, key: &str) -> Option<&R> {
        let r = self.done.get(key);
        self.hits.set(self.hits.get() + r.is_some() as usize);
        r
    }

    /// Whether a run is saved under `key` (not counted as a reuse).
    pub fn contains(&self, key: &str) -> bool {
        self.done.contains_key(key)
    }

    /// How many saved runs were reused (found by [`Journal::get`]) since it was opened.
    pub fn hits(&self) -> usize {
        self.hits.get()
    }

    /// How many runs the journal holds.
    pub fn len(&self) -> usize {
        self.done.len()
    }

    pub fn is_empty(&self) -> bool {
        self.done.is_empty()
    }

    /// Append finished runs and flush them to disk.
    pub fn record(&mut self, runs: Vec<(String, R)>) -> Result<()> {
        let mut buf = Vec::new();
        for (key, run) in runs {
            let line = Line { key, run };
            serde_json::to_writer(&mut buf, &line).map_err(|e| Error::Invalid(e.to_string()))?;
            buf.push(b'\n');
            self.done.insert(line.key, line.run);
        }
        match &mut self.file {
            Some(f) => f
                .write_all(&buf)
                .and_then(|_| f.flush())
                .map_err(|e| Error::file(&self.path, e)),
            None => Ok(()),
        }
    }
}

/// The runs in a journal file, from its whole lines only (a kill can leave the last one cut
/// off); and, when it was, the text of those whole lines.
fn load<R: DeserializeOwned>(path: &Path) -> Result<(HashMap<String, R>, Option<String>)> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::file(path, e))?;
    let whole = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
    let mut done = HashMap::new();
    for (i, l) in whole
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let line: Line<R> = serde_json::from_str(l).map_err(|e| {
            Error::file(path, format!("line {}: not a journal record ({e})", i + 1))
        })?;
        done.insert(line.key, line.run);
    }
    let cut_off = (whole.len() != text.len()).then(|| whole.to_string());
    Ok((done, cut_off))
}

/// One evaluation's place in a journal: keys are `scope|condition|index|item id`. Runs saved by
/// an earlier version under another scope (`legacy`) are still found, and new ones are saved
/// under `scope` only.
pub struct Scoped<'a, R> {
    pub journal: &'a mut Journal<R>,
    pub scope: String,
    pub legacy: Option<String>,
}

impl<'a, R: Serialize + DeserializeOwned> Scoped<'a, R> {
    pub fn new(journal: &'a mut Journal<R>, scope: String) -> Scoped<'a, R> {
        Scoped {
            journal,
            scope,
            legacy: None,
        }
    }

    /// Also look runs up under the `legacy` scope.
    pub fn with_legacy(mut self, legacy: String) -> Scoped<'a, R> {
        self.legacy = Some(legacy);
        self
    }

    /// The key of item `i` (id `id`) of this evaluation, closed-book or with context.
    pub fn key(&self, with_context: bool, i: usize, id: &str) -> String {
        item_key(&self.scope, with_context, i, id)
    }

    /// The run of item `i`, saved under this scope or its legacy one.
    pub fn get(&self, with_context: bool, i: usize, id: &str) -> Option<&R> {
        let old = || {
            let l = self.legacy.as_ref()?;
            self.journal.get(&item_key(l, with_context, i, id))
        };
        self.journal
            .get(&self.key(with_context, i, id))
            .or_else(old)
    }

    /// Whether the run of item `i` is saved (not counted as a reuse).
    pub fn contains(&self, with_context: bool, i: usize, id: &str) -> bool {
        let old = self
            .legacy
            .as_ref()
            .is_some_and(|l| self.journal.contains(&item_key(l, with_context, i, id)));
        old || self.journal.contains(&self.key(with_context, i, id))
    }

    /// The same journal under the same scope, borrowed again.
    pub fn reborrow(&mut self) -> Scoped<'_, R> {
        Scoped {
            scope: self.scope.clone(),
            legacy: self.legacy.clone(),
            journal: self.journal,
        }
    }

    /// The same journal under a longer scope.
    pub fn sub(&mut self, part: &str) -> Scoped<'_, R> {
        self.sub_renamed(part, part)
    }

    /// The same journal under a longer scope, which earlier versions named `legacy_part`.
    pub fn sub_renamed(&mut self, part: &str, legacy_part: &str) -> Scoped<'_, R> {
        Scoped {
            scope: format!("{}|{part}", self.scope),
            legacy: self.legacy.as_ref().map(|l| format!("{l}|{legacy_part}")),
            journal: self.journal,
        }
    }
}

fn item_key(scope: &str, with_context: bool, i: usize, id: &str) -> String {
    let cond = if with_context { "context" } else { "closed" };
    format!("{scope}|{cond}|{i}|{id}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::label::{Answer, Run};

    fn run(text: &str) -> Run {
        Run {
            logp_prior: -1.25,
            logp_context: -0.5,
            tf_winner: Answer::Context,
            greedy: text.into(),
            greedy_answer: Answer::Neither,
        }
    }

    #[test]
    fn runs_survive_a_reopen_and_a_cut_off_line_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.jsonl");
        let mut j = Journal::open(&path, false).unwrap();
        j.record(vec![
            ("a".into(), run(" Paris")),
            ("b".into(), run(" Rome")),
        ])
        .unwrap();
        drop(j);
        // A kill in the middle of a write leaves half a line.
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(b"{\"key\":\"c\",\"run\":{\"logp_pr").unwrap();
        drop(f);
        let mut j: Journal<Run> = Journal::open(&path, true).unwrap();
        assert_eq!(j.len(), 2);
        assert_eq!(j.get("a").unwrap().greedy, " Paris");
        assert_eq!(j.get("b").unwrap().logp_prior, -1.25);
        assert!(j.get("c").is_none());
        assert_eq!(j.hits(), 2);
        j.record(vec![("c".into(), run(" Oslo"))]).unwrap();
        drop(j);
        let j: Journal<Run> = Journal::open(&path, true).unwrap();
        assert_eq!(j.len(), 3);
        assert_eq!(j.get("c").unwrap().greedy, " Oslo");
        // Without resume a journal holding runs is refused and left whole; an empty one
        // starts afresh.
        let before = std::fs::read_to_string(&path).unwrap();
        let e = Journal::<Run>::open(&path, false)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("earlier run") && e.contains("--resume"), "{e}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), before);
        std::fs::write(&path, b"").unwrap();
        assert!(Journal::<Run>::open(&path, false).unwrap().is_empty());
    }

    #[test]
    fn a_read_only_journal_leaves_the_file_as_it_is() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.jsonl");
        let mut j = Journal::open(&path, false).unwrap();
        j.record(vec![("a".into(), run(" Paris"))]).unwrap();
        drop(j);
        // Another process is in the middle of appending a line.
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(b"{\"key\":\"b\",\"run\":{").unwrap();
        drop(f);
        let before = std::fs::read(&path).unwrap();
        let mut j: Journal<Run> = Journal::open_read_only(&path).unwrap();
        assert_eq!(j.len(), 1);
        assert_eq!(j.get("a").unwrap().greedy, " Paris");
        j.record(vec![("c".into(), run(" Oslo"))]).unwrap();
        assert_eq!(j.get("c").unwrap().greedy, " Oslo");
        assert_eq!(std::fs::read(&path).unwrap(), before);
        // No file: an empty journal, and still nothing written.
        let none = dir.path().join("none.jsonl");
        assert!(Journal::<Run>::open_read_only(&none).unwrap().is_empty());
        assert!(!none.exists());
    }

    #[test]
    fn a_damaged_whole_line_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.jsonl");
        let mut j = Journal::open(&path, false).unwrap();
        j.record(vec![("a".into(), run(" Paris"))]).unwrap();
        drop(j);
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(b"garbage\n").unwrap();
        drop(f);
        let e = Journal::<Run>::open(&path, true).err().unwrap().to_string();
        assert!(e.contains("line 2") && e.contains("j.jsonl"), "{e}");
    }

    #[test]
    fn runs_saved_under_a_legacy_scope_are_found_and_new_ones_go_under_the_new_scope() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::open(&dir.path().join("j.jsonl"), false).unwrap();
        // An earlier version saved item 0 under `old|test cad beta=1|items`.
        j.record(vec![(
            "old|test cad beta=1|items|context|0|a".into(),
            run(" Paris"),
        )])
        .unwrap();
        let mut part = Scoped::new(&mut j, "new".into()).with_legacy("old".into());
        let mut eval = part.sub_renamed("test 0123", "test cad beta=1");
        let items = eval.sub("items");
        assert_eq!(items.get(true, 0, "a").unwrap().greedy, " Paris");
        assert!(items.contains(true, 0, "a"));
        // Not the closed-book run, another index or another item.
        assert!(items.get(false, 0, "a").is_none() && !items.contains(true, 1, "a"));
        assert!(items.get(true, 0, "b").is_none());
        assert_eq!(items.key(true, 1, "b"), "new|test 0123|items|context|1|b");
        items
            .journal
            .record(vec![(items.key(true, 1, "b"), run(" Rome"))])
            .unwrap();
        assert_eq!(items.get(true, 1, "b").unwrap().greedy, " Rome");
        // Without the legacy scope, only the new run is there.
        let mut bare = Scoped::new(&mut j, "new".into());
        let mut eval = bare.sub("test 0123");
        let items = eval.sub("items");
        assert!(items.get(true, 0, "a").is_none() && items.contains(true, 1, "b"));
    }
}
