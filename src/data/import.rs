//! Importers: public knowledge-conflict benchmarks in their published formats (CounterFact,
//! NQ-Swap, MemoTrap, JUICE world capitals) turned into our items. A malformed record fails with
//! the file, the record and the field; Python list literals are parsed, never evaluated.

use super::Item;
use crate::error::{Error, Result};
use std::path::Path;

crate::choice_enum! {
/// Formats `data import` understands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImportFormat {
    /// ROME's CounterFact: a JSON array of records with `requested_rewrite`.
    Counterfact = "counterfact",
    /// NQ-Swap JSONL: question, org_context, org_answer, sub_context, sub_answer.
    Nqswap = "nqswap",
    /// MemoTrap CSV: prompt, classes (a Python list literal), answer_index.
    Memotrap = "memotrap",
    /// JUICE world capitals JSON: Subject, Answer, Distracted Token, Clean Prompt,
    /// Substitution Conflict, Coherent Conflict (two items per country).
    WorldCapital = "world-capital",
}
}

/// Convert a benchmark file into items.
pub fn import(format: ImportFormat, path: &Path) -> Result<Vec<Item>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::file(path, e))?;
    import_text(format, path, &text)
}

/// Convert a benchmark file's `text` into items; `path` names it in errors.
pub fn import_text(format: ImportFormat, path: &Path, text: &str) -> Result<Vec<Item>> {
    match format {
        ImportFormat::Counterfact => import_counterfact(path, text),
        ImportFormat::Nqswap => import_nqswap(path, text),
        ImportFormat::Memotrap => import_memotrap(path, text),
        ImportFormat::WorldCapital => import_world_capital(path, text),
    }
}

fn str_at<'a>(
    v: &'a serde_json::Value,
    ptr: &str,
    what: &dyn Fn() -> String,
) -> std::result::Result<&'a str, String> {
    v.pointer(ptr)
        .and_then(|x| x.as_str())
        .filter(|s| !s.trim().is_empty())
        .ok_or_else(|| {
            format!(
                "{}: missing or empty string field `{}`",
                what(),
                ptr.trim_start_matches('/').replace('/', ".")
            )
        })
}

/// A file holding one JSON array, as its elements; `what` names them in the error.
fn json_array(path: &Path, text: &str, what: &str) -> Result<Vec<serde_json::Value>> {
    let v: serde_json::Value = serde_json::from_str(text).map_err(|e| {
        let at = format!("line {}, column {}", e.line(), e.column());
        Error::file(path, format!("not valid JSON ({at}): {e}"))
    })?;
    match v {
        serde_json::Value::Array(recs) => Ok(recs),
        _ => Err(Error::file(
            path,
            format!("expected a JSON array of {what}"),
        )),
    }
}

fn import_counterfact(path: &Path, text: &str) -> Result<Vec<Item>> {
    let recs = json_array(path, text, "CounterFact records")?;
    let mut out = Vec::new();
    for (i, r) in recs.iter().enumerate() {
        let id = r
            .get("case_id")
            .map(|c| c.to_string())
            .unwrap_or_else(|| i.to_string());
        let what = || format!("record {i} (case_id {id})");
        let conv = || -> std::result::Result<Item, String> {
            let subject = str_at(r, "/requested_rewrite/subject", &what)?;
            let tpl = str_at(r, "/requested_rewrite/prompt", &what)?;
            if !tpl.contains("{}") {
                return Err(format!(
                    "{}: field `requested_rewrite.prompt` has no `{{}}` for the subject",
                    what()
                ));
            }
            let truth = str_at(r, "/requested_rewrite/target_true/str", &what)?;
            let new = str_at(r, "/requested_rewrite/target_new/str", &what)?;
            let relation = r
                .pointer("/requested_rewrite/relation_id")
                .and_then(|x| x.as_str())
                .unwrap_or("counterfact");
            let prompt = tpl.replace("{}", subject);
            let para = r
                .get("paraphrase_prompts")
                .and_then(|p| p.as_array())
                .and_then(|a| a.first())
                .and_then(|p| p.as_str());
            Ok(Item {
                id: format!("counterfact:{id}"),
                relation: relation.to_string(),
                subject: subject.to_string(),
                question: format!(
                    "Complete the sentence: {}",
                    para.map(str::trim).unwrap_or(&prompt)
                ),
                context: format!("{prompt} {new}."),
                prompt,
                prior_answer: truth.to_string(),
                context_answer: new.to_string(),
                prior_aliases: vec![],
                context_aliases: vec![],
                split: None,
                variant: Some(super::Variant::Counterfactual),
                distractor: None,
                true_context: None,
                prefix: String::new(),
                exposure: None,
            })
        };
        out.push(conv().map_err(|m| Error::file(path, m))?);
    }
    if out.is_empty() {
        return Err(Error::file(path, "no records"));
    }
    Ok(out)
}

/// An answer field that is a JSON array of strings, a string holding a Python list literal
/// (`"['23', 'twenty-three']"`), or a plain string.
pub fn answer_list(v: &serde_json::Value) -> std::result::Result<Vec<String>, String> {
    let list = match v {
        serde_json::Value::Array(a) => a
            .iter()
            .map(|x| {
                x.as_str()
                    .map(String::from)
                    .ok_or_else(|| "a list element is not a string".to_string())
            })
            .collect::<std::result::Result<Vec<_>, _>>()?,
        serde_json::Value::String(s) if s.trim_start().starts_with('[') => parse_py_list(s)?,
        serde_json::Value::String(s) => vec![s.clone()],
        _ => return Err("expected a list of strings".into()),
    };
    let list: Vec<String> = list
        .into_iter()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    if list.is_empty() {
        return Err("the answer list is empty".into());
    }
    Ok(list)
}

/// Parse a Python list literal of string literals: `['a', "b's", 'c\'d']`.
pub fn parse_py_list(s: &str) -> std::result::Result<Vec<String>, String> {
    let mut chars = s.trim().chars().peekable();
    if chars.next() != Some('[') {
        return Err(format!(
            "`{s}` is not a Python list literal: it must start with `[`"
        ));
    }
    let mut out = Vec::new();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        match chars.next() {
            Some(']') => break,
            Some(q @ ('\'' | '"')) => {
                let mut item = String::new();
                loop {
                    match chars.next() {
                        Some('\\') => match chars.next() {
                            Some('n') => item.push('\n'),
                            Some('t') => item.push('\t'),
                            Some(c) => item.push(c),
                            None => return Err(format!("`{s}`: unterminated string")),
                        },
                        Some(c) if c == q => break,
                        Some(c) => item.push(c),
                        None => return Err(format!("`{s}`: unterminated string")),
                    }
                }
                out.push(item);
                while chars.peek().is_some_and(|c| c.is_whitespace()) {
                    chars.next();
                }
                match chars.next() {
                    Some(',') => continue,
                    Some(']') => break,
                    _ => return Err(format!("`{s}`: expected `,` or `]` after a string")),
                }
            }
            _ => return Err(format!("`{s}`: expected a quoted string or `]`")),
        }
    }
    if chars.any(|c| !c.is_whitespace()) {
        return Err(format!("`{s}`: text after the closing `]`"));
    }
    Ok(out)
}

fn import_nqswap(path: &Path, text: &str) -> Result<Vec<Item>> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let at = |m: String| Error::file(path, format!("line {}: {m}", i + 1));
        let v: serde_json::Value =
            serde_json::from_str(line).map_err(|e| at(format!("not valid JSON ({e})")))?;
        let s = |f: &str| -> Result<String> {
            v.get(f)
                .and_then(|x| x.as_str())
                .filter(|x| !x.trim().is_empty())
                .map(clean_nq)
                .ok_or_else(|| at(format!("missing or empty string field `{f}`")))
        };
        let list = |f: &str| -> Result<Vec<String>> {
            let x = v.get(f).ok_or_else(|| at(format!("missing field `{f}`")))?;
            answer_list(x).map_err(|m| at(format!("field `{f}`: {m}")))
        };
        let question = s("question")?;
        let org_context = s("org_context")?;
        let (org, sub) = (list("org_answer")?, list("sub_answer")?);
        out.push(Item {
            id: format!("nqswap:{}", i + 1),
            relation: "nq".into(),
            subject: question.clone(),
            prompt: format!("question: {question}\nanswer:"),
            question: format!("{question}?"),
            // With the prompt this gives `context: {sub_context}\nquestion: {question}\nanswer:`.
            context: format!("context: {}\n", s("sub_context")?),
            prior_answer: org[0].clone(),
            context_answer: sub[0].clone(),
            prior_aliases: org[1..].to_vec(),
            context_aliases: sub[1..].to_vec(),
            split: None,
            variant: Some(super::Variant::Counterfactual),
            distractor: None,
            // The gold context: the original passage, which states the true answer.
            true_context: Some(format!("context: {org_context}\n")),
            prefix: String::new(),
            exposure: None,
        });
    }
    if out.is_empty() {
        return Err(Error::file(path, "no records"));
    }
    Ok(out)
}

/// NQ contexts carry HTML-ish paragraph tags; drop them.
fn clean_nq(s: &str) -> String {
    s.replace("<P>", "")
        .replace("</P>", "")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// Split a MemoTrap prompt into the instruction (the context) and what follows: at the last
/// line break when there is one, else after the first `": "`. Joined, they give the prompt back.
fn split_instruction(prompt: &str) -> (String, String) {
    if let Some(i) = prompt.rfind('\n') {
        return (prompt[..=i].to_string(), prompt[i + 1..].to_string());
    }
    if let Some(i) = prompt.find(": ") {
        return (prompt[..=i].to_string(), prompt[i + 2..].to_string());
    }
    (String::new(), prompt.to_string())
}

fn import_memotrap(path: &Path, text: &str) -> Result<Vec<Item>> {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let relation = stem
        .trim_start_matches(|c: char| c.is_ascii_digit() || c == '-')
        .to_string();
    let mut rdr = csv::Reader::from_reader(text.as_bytes());
    let headers = rdr
        .headers()
        .map_err(|e| Error::file(path, format!("not a CSV file: {e}")))?
        .clone();
    let col = |name: &str| {
        headers.iter().position(|h| h == name).ok_or_else(|| {
            Error::file(
                path,
                format!(
                    "missing column `{name}` (columns: {})",
                    headers.iter().collect::<Vec<_>>().join(", ")
                ),
            )
        })
    };
    let (cp, cc, ca) = (col("prompt")?, col("classes")?, col("answer_index")?);
    let mut out = Vec::new();
    for (i, rec) in rdr.records().enumerate() {
        let at = |m: String| Error::file(path, format!("record {} (line {}): {m}", i + 1, i + 2));
        let rec = rec.map_err(|e| at(e.to_string()))?;
        let field = |c: usize| rec.get(c).unwrap_or_default();
        let item = memotrap_item(&relation, i, field(cp), field(cc), field(ca)).map_err(at)?;
        out.push(item);
    }
    if out.is_empty() {
        return Err(Error::file(path, "no records"));
    }
    Ok(out)
}

/// One MemoTrap record as an item: its prompt, its classes (a Python list) and the index of the
/// class that follows the instruction. Errors name the field.
fn memotrap_item(
    relation: &str,
    i: usize,
    prompt: &str,
    classes: &str,
    answer_index: &str,
) -> std::result::Result<Item, String> {
    if prompt.trim().is_empty() {
        return Err("field `prompt` is empty".into());
    }
    let classes = parse_py_list(classes).map_err(|m| format!("field `classes`: {m}"))?;
    let idx: usize = answer_index
        .trim()
        .parse()
        .map_err(|_| "field `answer_index` must be an integer".to_string())?;
    if classes.len() < 2 || idx >= classes.len() {
        return Err(format!(
            "field `answer_index` {idx} does not pick one of {} classes",
            classes.len()
        ));
    }
    let other = classes
        .iter()
        .enumerate()
        .find(|(k, _)| *k != idx)
        .map(|(_, c)| c.trim().to_string())
        .unwrap_or_default();
    let (context, rest) = split_instruction(prompt);
    // The subject groups an item's variants in one split: the text to complete (a proverb),
    // or, where that is only an answer cue ("Answer:"), the question itself.
    let subject = if rest.trim().ends_with(':') {
        context.trim()
    } else {
        rest.trim()
    };
    Ok(Item {
        id: format!("memotrap:{relation}:{}", i + 1),
        relation: relation.to_string(),
        subject: subject.to_string(),
        question: prompt.to_string(),
        prompt: rest,
        context,
        prior_answer: other,
        context_answer: classes[idx].trim().to_string(),
        prior_aliases: vec![],
        context_aliases: vec![],
        split: None,
        variant: Some(super::Variant::Counterfactual),
        distractor: None,
        true_context: None,
        prefix: String::new(),
        exposure: None,
    })
}

fn import_world_capital(path: &Path, text: &str) -> Result<Vec<Item>> {
    let recs = json_array(path, text, "records")?;
    let mut out = Vec::new();
    for (i, r) in recs.iter().enumerate() {
        let items =
            world_capital_items(i, r).map_err(|m| Error::file(path, format!("record {i}: {m}")))?;
        out.extend(items);
    }
    if out.is_empty() {
        return Err(Error::file(path, "no records"));
    }
    Ok(out)
}

/// One world-capital record as two items: its substitution and its coherent conflict.
fn world_capital_items(i: usize, r: &serde_json::Value) -> std::result::Result<[Item; 2], String> {
    let s = |f: &str| -> std::result::Result<String, String> {
        r.get(f)
            .and_then(|x| x.as_str())
            .filter(|x| !x.trim().is_empty())
            .map(str::to_string)
            .ok_or_else(|| format!("missing or empty string field `{f}`"))
    };
    let subject = s("Subject")?;
    let answers = answer_list(r.get("Answer").unwrap_or(&serde_json::Value::Null))
        .map_err(|m| format!("field `Answer`: {m}"))?;
    let (distract, clean) = (s("Distracted Token")?, s("Clean Prompt")?);
    let sub = s("Substitution Conflict")?;
    let sub_ctx = sub
        .strip_suffix(&clean)
        .map(|c| c.trim_end().to_string())
        .ok_or("`Substitution Conflict` does not end with the `Clean Prompt`")?;
    let coh = s("Coherent Conflict")?;
    let q = coh
        .rfind("Question:")
        .ok_or("`Coherent Conflict` has no `Question:`")?;
    let base = Item {
        id: String::new(),
        relation: String::new(),
        subject: subject.clone(),
        question: format!("What is the capital city of {subject}?"),
        prompt: clean.clone(),
        context: String::new(),
        prior_answer: answers[0].clone(),
        context_answer: distract.clone(),
        prior_aliases: answers[1..].to_vec(),
        context_aliases: vec![],
        split: None,
        variant: Some(super::Variant::Counterfactual),
        distractor: None,
        true_context: None,
        prefix: String::new(),
        exposure: None,
    };
    Ok([
        Item {
            id: format!("world_capital:{}:substitution", i + 1),
            relation: "world_capital_substitution".into(),
            context: sub_ctx,
            ..base.clone()
        },
        Item {
            id: format!("world_capital:{}:coherent", i + 1),
            relation: "world_capital_coherent".into(),
            context: coh[..q].trim_end().to_string(),
            prompt: coh[q..].to_string(),
            ..base
        },
    ])
}
