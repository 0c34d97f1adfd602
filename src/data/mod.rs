//! Counterfactual data: the JSONL format, the built-in fact tables and the builder that turns
//! them into conflicts, and (in `import`) importers for public benchmarks.
//!
//! One line is one conflict: a query about `subject` whose `context` asserts `context_answer`
//! where the model's weights hold `prior_answer`. Reading never skips a bad line silently: it
//! fails with the file, the line and the field, unless the caller asks to skip and count.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

mod build;
mod import;
mod irrelevant;
mod split;
use build::slug;
pub use build::{build, builtin_facts, parse_facts, write_built, Built, Fact};
pub use import::{answer_list, import, import_text, parse_py_list, ImportFormat};
pub use irrelevant::{irrelevant_for, Distractor};
pub use split::SubjectSplit;

crate::choice_enum! {
/// Which part of the data an item belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Split {
    /// Trains probes and edits.
    Train = "train",
    /// Chooses strengths.
    Dev = "dev",
    /// Measures, once.
    Test = "test",
}
}

crate::choice_enum! {
/// Which form of a fact an item's prompt takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Variant {
    /// The context contradicts what the model knows.
    Counterfactual = "counterfactual",
    /// The context states the true fact.
    TrueContext = "true_context",
    /// No context.
    NoContext = "no_context",
    /// Ordinary text without a fact to recall.
    Neutral = "neutral",
    /// The context is about another subject: it does not answer the query (`context_answer`
    /// is the object it names, the distractor).
    Irrelevant = "irrelevant",
}
}

/// One conflict.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Item {
    pub id: String,
    pub relation: String,
    pub subject: String,
    /// QA-style query, asked in chat form.
    pub question: String,
    /// Completion-style query.
    pub prompt: String,
    /// The sentence(s) placed before the query; empty for the no-context variant.
    pub context: String,
    pub prior_answer: String,
    pub context_answer: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prior_aliases: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub context_aliases: Vec<String>,
    /// train, dev or test (built-in data); absent for imported data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split: Option<Split>,
    /// counterfactual, true_context, no_context, neutral or irrelevant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<Variant>,
    /// What an irrelevant context says (variant `irrelevant` only; optional there).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distractor: Option<Distractor>,
    /// The context as it states the true fact, where the data gives it (NQ-Swap's
    /// `org_context`); without it, [`Item::true_twin`] rewrites `context`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub true_context: Option<String>,
    /// Text put before the query in both conditions, closed-book and with context: k-shot
    /// demonstrations (`bench public --shots`). Usually empty.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub prefix: String,
    /// How many times the fact appeared in a model organism's training corpus (`organism
    /// world`); absent elsewhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exposure: Option<u32>,
}

crate::choice_enum! {
/// How a query is put to the model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Form {
    /// `{context} {prompt}` and the answer continues the text.
    Completion = "completion",
    /// `{context} {question}` as a user message in the chat template.
    Chat = "chat",
}
}

impl Item {
    /// The text of the query: with its context, or closed-book.
    pub fn query(&self, form: Form, with_context: bool) -> String {
        let q = match form {
            Form::Completion => &self.prompt,
            Form::Chat => &self.question,
        };
        let p = &self.prefix;
        if with_context && !self.context.is_empty() {
            // A context that ends a line (e.g. NQ-Swap's `context: ...\n`) joins without a space.
            if self.context.ends_with('\n') {
                format!("{p}{}{q}", self.context)
            } else {
                format!("{p}{} {q}", self.context)
            }
        } else {
            format!("{p}{q}")
        }
    }

    /// The same query with a context that states the true fact: `true_context` where the data
    /// gives it, else the context answer replaced by the prior in the context text. None when
    /// there is neither (the context does not name its answer).
    pub fn true_twin(&self) -> Option<Item> {
        let context = match &self.true_context {
            Some(c) if !c.trim().is_empty() => c.clone(),
            _ if self.context.is_empty() || !self.context.contains(&self.context_answer) => {
                return None
            }
            _ => self
                .context
                .replace(&self.context_answer, &self.prior_answer),
        };
        let mut it = self.clone();
        it.context = context;
        it.context_answer = self.prior_answer.clone();
        it.context_aliases = self.prior_aliases.clone();
        Some(it)
    }

    /// All accepted spellings of the prior (first) and the context answer.
    pub fn prior_names(&self) -> Vec<&str> {
        std::iter::once(self.prior_answer.as_str())
            .chain(self.prior_aliases.iter().map(String::as_str))
            .collect()
    }

    pub fn context_names(&self) -> Vec<&str> {
        std::iter::once(self.context_answer.as_str())
            .chain(self.context_aliases.iter().map(String::as_str))
            .collect()
    }
}

/// Lowercase, letters and digits only, single spaces, padded with spaces for word matching.
pub fn normalize(s: &str) -> String {
    let mut out = String::from(" ");
    for c in s.to_lowercase().chars() {
        if c.is_alphanumeric() {
            out.push(c);
        } else if !out.ends_with(' ') {
            out.push(' ');
        }
    }
    if !out.ends_with(' ') {
        out.push(' ');
    }
    out
}

/// Whether `text` names `name` as whole words (case and punctuation aside); an empty name is
/// named nowhere.
pub fn mentions(text: &str, name: &str) -> bool {
    let n = normalize(name);
    !n.trim().is_empty() && normalize(text).contains(&n)
}

const REQUIRED: [&str; 8] = [
    "id",
    "relation",
    "subject",
    "question",
    "prompt",
    "context",
    "prior_answer",
    "context_answer",
];

/// Check one parsed line; the error names the field at fault.
fn check_line(v: &serde_json::Value) -> std::result::Result<Item, String> {
    let obj = v.as_object().ok_or("the line is not a JSON object")?;
    for f in REQUIRED {
        match obj.get(f) {
            None => return Err(format!("missing field `{f}`")),
            Some(x) if !x.is_string() => return Err(format!("field `{f}` must be a string")),
            Some(x) if f != "context" && x.as_str().is_some_and(|s| s.trim().is_empty()) => {
                return Err(format!("field `{f}` is empty"))
            }
            _ => {}
        }
    }
    for f in ["prior_aliases", "context_aliases"] {
        if let Some(x) = obj.get(f) {
            let ok = x
                .as_array()
                .is_some_and(|a| a.iter().all(|s| s.is_string()));
            if !ok {
                return Err(format!("field `{f}` must be an array of strings"));
            }
        }
    }
    let item: Item = serde_json::from_value(v.clone()).map_err(|e| e.to_string())?;
    if item.distractor.is_some() && item.variant != Some(Variant::Irrelevant) {
        return Err(
            "field `distractor` belongs to variant `irrelevant` (a context about \
                    another subject); this item has another variant"
                .into(),
        );
    }
    let same = item
        .prior_answer
        .trim()
        .eq_ignore_ascii_case(item.context_answer.trim());
    // A true-context variant states the true fact, so there its two answers agree; a neutral
    // passage has no answer at all.
    if same && !matches!(item.variant, Some(Variant::TrueContext | Variant::Neutral)) {
        return Err(format!(
            "fields `prior_answer` and `context_answer` are both {:?}: a conflict needs two \
             different answers (only a `true_context` or `neutral` variant may repeat the prior)",
            item.prior_answer
        ));
    }
    Ok(item)
}

/// Read a JSONL file of items. With `skip_invalid`, bad lines are skipped and counted;
/// otherwise the first bad line is an error naming the file, the line and the field.
pub fn read_jsonl(path: &Path, skip_invalid: bool) -> Result<(Vec<Item>, usize)> {
    let bytes = std::fs::read(path).map_err(|e| Error::file(path, e))?;
    // A UTF-8 byte-order mark (as some editors write) is not part of the first line.
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&bytes);
    let mut items = Vec::new();
    let mut skipped = 0;
    let mut seen = std::collections::HashSet::new();
    for (i, raw) in bytes.split(|b| *b == b'\n').enumerate() {
        let line = match std::str::from_utf8(raw) {
            Ok(line) => line,
            Err(_) if skip_invalid => {
                skipped += 1;
                continue;
            }
            Err(e) => {
                return Err(Error::file(
                    path,
                    format!(
                        "line {}: not valid UTF-8 (at byte {} of the line)",
                        i + 1,
                        e.valid_up_to() + 1
                    ),
                ))
            }
        };
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.trim().is_empty() {
            continue;
        }
        let parsed = serde_json::from_str::<serde_json::Value>(line)
            .map_err(|e| format!("not valid JSON ({e})"))
            .and_then(|v| check_line(&v))
            .and_then(|it| {
                if seen.insert(it.id.clone()) {
                    Ok(it)
                } else {
                    Err(format!("field `id`: duplicate id `{}`", it.id))
                }
            });
        match parsed {
            Ok(it) => items.push(it),
            Err(_) if skip_invalid => skipped += 1,
            Err(msg) => {
                return Err(Error::file(
                    path,
                    format!("line {}: {msg} (invalid lines can be skipped)", i + 1),
                ))
            }
        }
    }
    if items.is_empty() {
        return Err(Error::file(path, "no valid items in this file"));
    }
    Ok((items, skipped))
}

/// Write items as JSONL, atomically (a temporary file renamed into place).
pub fn write_jsonl<T: Serialize>(path: &Path, items: &[T]) -> Result<()> {
    let mut s = String::new();
    for it in items {
        s += &serde_json::to_string(it).map_err(|e| Error::Invalid(e.to_string()))?;
        s.push('\n');
    }
    write_atomic(path, s.as_bytes())
}

/// Write a file whole (see [`crate::atomic`]).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    crate::atomic::write(path, bytes)
}

// ---------------------------------------------------------------------------------------------
// Built-in data

/// The relation templates and fact tables, compiled in from counterfactual_data/.
const RELATIONS: &str = include_str!("../../counterfactual_data/relations.json");
const NEUTRAL: &str = include_str!("../../counterfactual_data/neutral.txt");

/// Ordinary passages with no fact in conflict (variant `neutral`, relation `neutral`): the
/// negatives that teach a `conflict` gate that plain text is not a conflict. They have no
/// answer to judge, so both answer fields hold `(no answer)`.
pub fn neutral_items() -> Vec<Item> {
    NEUTRAL
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|text| {
            let words: Vec<&str> = text.split_whitespace().take(6).collect();
            let subject = words.join(" ");
            Item {
                id: format!("neutral:{}", slug(&subject)),
                relation: "neutral".into(),
                question: text.to_string(),
                prompt: text.to_string(),
                context: String::new(),
                prior_answer: "(no answer)".into(),
                context_answer: "(no answer)".into(),
                prior_aliases: vec![],
                context_aliases: vec![],
                split: Some(split_of(&subject)),
                variant: Some(Variant::Neutral),
                distractor: None,
                true_context: None,
                prefix: String::new(),
                exposure: None,
                subject,
            }
        })
        .collect()
}

/// The content hash of `items` (their JSONL lines, hashed with [`stable_hash`]), as 16 hex
/// digits: what a resumed run checks that it resumes on the same items.
pub fn content_hash(items: &[Item]) -> String {
    let content: String = items
        .iter()
        .map(|it| serde_json::to_string(it).unwrap_or_default() + "\n")
        .collect();
    format!("{:016x}", stable_hash(&content))
}

/// FNV-1a: a stable hash for deterministic choices that do not depend on the Rust version.
pub fn stable_hash(s: &str) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in s.as_bytes() {
        h ^= *b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

impl Split {
    /// The name the data files write.
    pub fn name(self) -> &'static str {
        crate::choice::Choice::name(self)
    }
}

impl Variant {
    /// The name the data files write.
    pub fn name(self) -> &'static str {
        crate::choice::Choice::name(self)
    }
}

/// The split of a subject in the built-in data ([`SubjectSplit::builtin`]).
pub fn split_of(subject: &str) -> Split {
    SubjectSplit::builtin().of(subject)
}

/// Marks each item dev or test by its subject ([`SubjectSplit::dev_test`]): about `dev_share`
/// of subjects dev (the public benchmarks' split).
pub fn split_dev_test(items: &mut [Item], seed: u64, dev_share: f64) {
    let rule = SubjectSplit::dev_test(seed, dev_share);
    for it in items.iter_mut() {
        it.split = Some(rule.of(&it.subject));
    }
}
