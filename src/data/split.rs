//! The one rule that puts a subject in a split, so that every item about a subject lands in
//! the same part and nothing learned about a subject leaks into where it is measured.
//!
//! A subject (case-folded or not) after a salt that carries the seed is hashed into buckets,
//! and the buckets are cut into parts in order. The built-in data, the public benchmarks, a
//! bench run on data without split fields and a probe's held-out subjects each use one
//! constructor below; each keeps the assignments it has always made, so the committed data
//! and reports rebuild byte for byte.

use super::{stable_hash, Split};

/// Which part each subject falls in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubjectSplit {
    /// Hashed before the subject (carries the seed where there is one).
    pub salt: String,
    /// Whether "Paris" and "paris" are one subject.
    pub fold_case: bool,
    /// The parts in bucket order, each with its number of buckets.
    pub shares: Vec<(Split, u64)>,
}

impl SubjectSplit {
    /// The built-in data's: about 60% train, 20% dev, 20% test, the same in every relation.
    pub fn builtin() -> SubjectSplit {
        SubjectSplit {
            salt: String::new(),
            fold_case: true,
            shares: vec![(Split::Train, 6), (Split::Dev, 2), (Split::Test, 2)],
        }
    }

    /// The public benchmarks': about `dev_share` of subjects dev, the rest test, by `seed`.
    pub fn dev_test(seed: u64, dev_share: f64) -> SubjectSplit {
        // A subject is dev where its bucket (of 1000) is below dev_share × 1000.
        let dev = (dev_share * 1000.0).ceil().clamp(0.0, 1000.0) as u64;
        SubjectSplit {
            salt: format!("split:{seed}:"),
            fold_case: false,
            shares: vec![(Split::Dev, dev), (Split::Test, 1000 - dev)],
        }
    }

    /// Half dev, half test: a bench run on data without split fields, and cross-fitting.
    pub fn halves() -> SubjectSplit {
        SubjectSplit {
            salt: String::new(),
            fold_case: false,
            shares: vec![(Split::Dev, 1), (Split::Test, 1)],
        }
    }

    /// Dev's subjects halved again (a salt of their own), for a benchmark measured within dev
    /// (`--split dev`): one half chooses, the other measures, and test stays unseen.
    pub fn within_dev() -> SubjectSplit {
        SubjectSplit {
            salt: "within dev:".into(),
            fold_case: false,
            // 500 and 500, not 1 and 1: the hash's lowest bit is only the parity of the odd
            // bytes, which names that differ by one digit share.
            shares: vec![(Split::Dev, 500), (Split::Test, 500)],
        }
    }

    /// A probe's held-out subjects: about a quarter test, the rest train, by `seed`.
    pub fn held_out(seed: u64) -> SubjectSplit {
        SubjectSplit {
            salt: format!("{seed}:"),
            fold_case: true,
            shares: vec![(Split::Test, 1), (Split::Train, 3)],
        }
    }

    /// The part `subject` falls in.
    pub fn of(&self, subject: &str) -> Split {
        let total: u64 = self.shares.iter().map(|(_, n)| n).sum();
        let s = match self.fold_case {
            true => subject.to_lowercase(),
            false => subject.to_string(),
        };
        let mut b = stable_hash(&format!("{}{s}", self.salt)) % total.max(1);
        for (part, n) in &self.shares {
            if b < *n {
                return *part;
            }
            b -= n;
        }
        self.shares.last().map_or(Split::Test, |(p, _)| *p)
    }
}
