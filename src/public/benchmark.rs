//! The benchmarks `bench public` knows: where each one's files are, its own metrics, and the
//! published figures quoted beside ours.

use super::{memotrap_published, nqswap_published, shots_for, PublicOptions, Published};
use crate::bench::{self, Rate};
use crate::data::{self, ImportFormat, Item};
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

crate::choice_enum! {
/// The benchmarks `bench public` knows, by the folder names of ../shared/benchmarks.
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
        Benchmark::Nqswap => data::import(ImportFormat::Nqswap, &dir.join("nqswap/nqswap.jsonl")),
        Benchmark::WorldCapital => data::import(
            ImportFormat::WorldCapital,
            &dir.join("world_capital/world_capital.json"),
        ),
    }
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
