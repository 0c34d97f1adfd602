//! The benchmarks `bench public` knows: where each one's files are, its own metrics, and the
//! published figures quoted beside ours.

use super::{memotrap_published, nqswap_published, shots_for, PublicOptions, Published};
use crate::bench::{self, Rate};
use crate::data::{self, ImportFormat, Item};
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

crate::choice_enum! {
/// The benchmarks `bench public` knows, by their folder names in `benchmarks/`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Benchmark {
    /// MemoTrap (CAD's release): proverbs whose usual ending the instruction forbids.
    Memotrap = "memotrap",
    /// NQ-Swap: Natural Questions with the answer swapped in the passage.
    Nqswap = "nqswap",
    /// JUICE's world capitals: substitution and coherent conflicts.
    WorldCapital = "world_capital",
}
}

impl Benchmark {
    /// Greedy tokens per answer: NQ-Swap's answers run longer.
    pub(super) fn max_new(self) -> usize {
        match self {
            Benchmark::Nqswap => 12,
            _ => 8,
        }
    }

    /// The irrelevant contexts each query also meets: NQ-Swap's are another question's
    /// original passage that does not hold the answer (CUB's irrelevant type); MemoTrap's
    /// proverbs and the world capitals' one relation have none.
    pub(super) fn distractors(self) -> &'static [crate::data::Distractor] {
        match self {
            Benchmark::Nqswap => &[crate::data::Distractor::SameRelationTrue],
            _ => &[],
        }
    }
}

pub(super) fn load(dir: &Path, b: Benchmark) -> Result<Vec<Item>> {
    match b {
        Benchmark::Memotrap => {
            let d = dir.join("memotrap");
            let mut files: Vec<_> = std::fs::read_dir(&d)
                .map_err(|e| Error::file(&d, e))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "csv"))
                .collect();
            files.sort();
            let mut v = Vec::new();
            for f in files {
                v.extend(data::import(ImportFormat::Memotrap, &f)?);
            }
            Ok(v)
        }
        Benchmark::Nqswap => load_nqswap(&dir.join("nqswap")),
        Benchmark::WorldCapital => data::import(
            ImportFormat::WorldCapital,
            &dir.join("world_capital/world_capital.json"),
        ),
    }
}

/// NQ-Swap from `d/nqswap.jsonl`, or from that file inside `d/nqswap.zip` (as the repository
/// ships it, and as it was published).
fn load_nqswap(d: &Path) -> Result<Vec<Item>> {
    let plain = d.join("nqswap.jsonl");
    let zipped = d.join("nqswap.zip");
    if plain.exists() || !zipped.exists() {
        return data::import(ImportFormat::Nqswap, &plain);
    }
    let f = std::fs::File::open(&zipped).map_err(|e| Error::file(&zipped, e))?;
    let mut zip = zip::ZipArchive::new(f).map_err(|e| Error::file(&zipped, e))?;
    let mut entry = zip
        .by_name("nqswap.jsonl")
        .map_err(|e| Error::file(&zipped, format!("no nqswap.jsonl inside: {e}")))?;
    let mut text = String::new();
    std::io::Read::read_to_string(&mut entry, &mut text).map_err(|e| Error::file(&zipped, e))?;
    data::import_text(ImportFormat::Nqswap, &zipped, &text)
}

/// The benchmark's own metrics from a test evaluation.
pub(super) fn own_metrics(b: Benchmark, e: &bench::Eval) -> Vec<(String, Rate)> {
    let rel = |r: &str, f: &dyn Fn(&bench::RelationEval) -> f64| -> Rate {
        e.per_relation
            .get(r)
            .map(|x| Rate {
                value: f(x),
                ci_low: f64::NAN,
                ci_high: f64::NAN,
                n: x.n,
            })
            .unwrap_or_default()
    };
    match b {
        Benchmark::Memotrap => {
            let mut v = vec![(
                "accuracy (answer class more probable)".to_string(),
                e.tf_adherence.clone(),
            )];
            for k in e.per_relation.keys() {
                v.push((format!("accuracy: {k}"), rel(k, &|x| x.tf_adherence)));
            }
            v
        }
        Benchmark::Nqswap => {
            let (c, m) = (e.em_context.value, e.em_memory.value);
            vec![
                ("EM_C".into(), e.em_context.clone()),
                ("EM_M".into(), e.em_memory.clone()),
                (
                    "M_R = EM_M / (EM_M + EM_C)".into(),
                    Rate {
                        value: if c + m == 0.0 { 0.0 } else { m / (c + m) },
                        ci_low: f64::NAN,
                        ci_high: f64::NAN,
                        n: e.em_context.n,
                    },
                ),
            ]
        }
        Benchmark::WorldCapital => vec![
            (
                "in-context city wins, substitution (teacher-forced)".into(),
                rel("world_capital_substitution", &|x| x.tf_adherence),
            ),
            (
                "in-context city wins, coherent (teacher-forced)".into(),
                rel("world_capital_coherent", &|x| x.tf_adherence),
            ),
            (
                "in-context city named, substitution (greedy)".into(),
                rel("world_capital_substitution", &|x| x.adherence),
            ),
            (
                "in-context city named, coherent (greedy)".into(),
                rel("world_capital_coherent", &|x| x.adherence),
            ),
        ],
    }
}

/// The published figures quoted beside ours, and a note on how they compare.
pub(super) fn published(b: Benchmark, opts: &PublicOptions) -> (Vec<Published>, String) {
    let (published, note) = published_as_run(b, opts);
    match opts.split {
        crate::data::Split::Dev => (
            published,
            format!(
                "Measured within dev, test unseen: half of dev's subjects chose each method's \
                 setting and the other half measured it. {note}"
            ),
        ),
        _ => (published, note),
    }
}

/// The published figures beside a benchmark, and the note that says how ours were run.
fn published_as_run(b: Benchmark, opts: &PublicOptions) -> (Vec<Published>, String) {
    match b {
        Benchmark::Nqswap => (
            nqswap_published(),
            format!("Published: SpARE's NQSwap table and CAD's table (larger models, their own prompting). Ours: `context: ...\\nquestion: ...\\nanswer:`, {}, greedy, at most 12 tokens, the answer cut at the first line break.", match shots_for(b, opts) {
                0 => "zero-shot".to_string(),
                k => format!("{k}-shot (the {k} dev items with the shortest prompts, written out with their context answers before every query and left out of dev)"),
            }),
        ),
        Benchmark::Memotrap => (
            memotrap_published(),
            "Published: CAD's table (larger models; greedy exact match of the ending, where ours compares the two classes teacher-forced, so the two are not comparable one to one).".to_string(),
        ),
        Benchmark::WorldCapital => (vec![], "No published figure is quoted for the world-capital split.".to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shipped benchmarks load from the repository: NQ-Swap from inside its zip, every
    /// published line, the same items as the plain file gives.
    #[test]
    fn the_shipped_benchmarks_load() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("benchmarks");
        let nq = load(&dir, Benchmark::Nqswap).unwrap();
        assert_eq!(nq.len(), 4746);
        assert_eq!(
            nq[0].question,
            "how many episodes are in chicago fire season 4?"
        );
        let plain = tempfile::tempdir().unwrap();
        let f = std::fs::File::open(dir.join("nqswap/nqswap.zip")).unwrap();
        let mut zip = zip::ZipArchive::new(f).unwrap();
        let mut text = String::new();
        std::io::Read::read_to_string(&mut zip.by_name("nqswap.jsonl").unwrap(), &mut text)
            .unwrap();
        std::fs::create_dir_all(plain.path().join("nqswap")).unwrap();
        std::fs::write(plain.path().join("nqswap/nqswap.jsonl"), text).unwrap();
        let from_plain = load(plain.path(), Benchmark::Nqswap).unwrap();
        let json = |v: &[Item]| serde_json::to_string(v).unwrap();
        assert_eq!(json(&from_plain), json(&nq));
        assert_eq!(
            load(&dir, Benchmark::Memotrap).unwrap().len(),
            860 + 843 + 100 + 736
        );
        // Two items per country: the substitution and the coherent conflict.
        assert_eq!(load(&dir, Benchmark::WorldCapital).unwrap().len(), 2 * 218);
    }
}
