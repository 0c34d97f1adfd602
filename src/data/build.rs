//! The built-in data: fact tables (`counterfactual_data/facts/*.tsv`) and templates turned into
//! conflicts, their true-context and no-context twins, and the files `data build` writes.

use super::*;

const FACTS: [(&str, &str); 11] = [
    (
        "capital",
        include_str!("../../counterfactual_data/facts/capital.tsv"),
    ),
    (
        "currency",
        include_str!("../../counterfactual_data/facts/currency.tsv"),
    ),
    (
        "language",
        include_str!("../../counterfactual_data/facts/language.tsv"),
    ),
    (
        "continent",
        include_str!("../../counterfactual_data/facts/continent.tsv"),
    ),
    (
        "landmark",
        include_str!("../../counterfactual_data/facts/landmark.tsv"),
    ),
    (
        "author",
        include_str!("../../counterfactual_data/facts/author.tsv"),
    ),
    (
        "painter",
        include_str!("../../counterfactual_data/facts/painter.tsv"),
    ),
    (
        "founder",
        include_str!("../../counterfactual_data/facts/founder.tsv"),
    ),
    (
        "sport",
        include_str!("../../counterfactual_data/facts/sport.tsv"),
    ),
    (
        "element_symbol",
        include_str!("../../counterfactual_data/facts/element_symbol.tsv"),
    ),
    (
        "composer",
        include_str!("../../counterfactual_data/facts/composer.tsv"),
    ),
];

/// One row of a fact table.
#[derive(Clone, Debug)]
pub struct Fact {
    pub relation: String,
    pub subject: String,
    pub object: String,
    pub aliases: Vec<String>,
}

#[derive(Deserialize)]
struct Templates {
    context: Vec<String>,
    prompt: Vec<String>,
    question: Vec<String>,
}

/// Parse a fact table: `subject<TAB>object[<TAB>alias|alias]`, `#` comments.
pub fn parse_facts(relation: &str, text: &str) -> Result<Vec<Fact>> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let cols: Vec<&str> = line.split('\t').collect();
        if cols.len() < 2 || cols[0].trim().is_empty() || cols[1].trim().is_empty() {
            return Err(Error::Invalid(format!(
                "facts/{relation}.tsv line {}: expected `subject<TAB>object[<TAB>aliases]`",
                i + 1
            )));
        }
        out.push(Fact {
            relation: relation.to_string(),
            subject: cols[0].trim().to_string(),
            object: cols[1].trim().to_string(),
            aliases: cols
                .get(2)
                .map(|a| {
                    a.split('|')
                        .map(|s| s.trim().to_string())
                        .filter(|s| !s.is_empty())
                        .collect()
                })
                .unwrap_or_default(),
        });
    }
    Ok(out)
}

/// Every built-in fact.
pub fn builtin_facts() -> Result<Vec<Fact>> {
    let mut v = Vec::new();
    for (rel, text) in FACTS {
        v.extend(parse_facts(rel, text)?);
    }
    Ok(v)
}

fn fill(t: &str, s: &str, o: &str) -> String {
    let out = t.replace("{s}", s).replace("{o}", o);
    let mut c = out.chars();
    match c.next() {
        Some(f) => f.to_uppercase().collect::<String>() + c.as_str(),
        None => out,
    }
}

/// The counterfactual object of a fact: another object of the same relation, chosen by hash.
fn counterfactual<'a>(fact: &Fact, objects: &[&'a Fact]) -> Option<&'a Fact> {
    let bad = |o: &Fact| {
        o.object.eq_ignore_ascii_case(&fact.object)
            || fact
                .aliases
                .iter()
                .any(|a| a.eq_ignore_ascii_case(&o.object))
            || o.aliases
                .iter()
                .any(|a| a.eq_ignore_ascii_case(&fact.object))
    };
    let mut seen = std::collections::BTreeSet::new();
    let cands: Vec<&Fact> = objects
        .iter()
        .filter(|o| !bad(o) && seen.insert(o.object.to_lowercase()))
        .copied()
        .collect();
    if cands.is_empty() {
        return None;
    }
    Some(
        cands[(stable_hash(&format!("{}|{}", fact.relation, fact.subject)) % cands.len() as u64)
            as usize],
    )
}

/// The variants of the built-in data, each with every split.
pub struct Built {
    pub counterfactual: Vec<Item>,
    pub true_context: Vec<Item>,
    pub no_context: Vec<Item>,
    /// Each conflict's query after contexts about other subjects of its split, one per
    /// [`Distractor`] kind.
    pub irrelevant: Vec<Item>,
}

/// Build the conflicts from the fact tables: one item per fact, its context and query
/// templates rotating through the relation's paraphrases.
pub fn build() -> Result<Built> {
    let templates: BTreeMap<String, Templates> = serde_json::from_str(RELATIONS)
        .map_err(|e| Error::Invalid(format!("relations.json: {e}")))?;
    let facts = builtin_facts()?;
    let mut built = Built {
        counterfactual: vec![],
        true_context: vec![],
        no_context: vec![],
        irrelevant: vec![],
    };
    for (rel, t) in &templates {
        let rel_facts: Vec<&Fact> = facts.iter().filter(|f| &f.relation == rel).collect();
        for (i, f) in rel_facts.iter().enumerate() {
            let Some(cf) = counterfactual(f, &rel_facts) else {
                continue;
            };
            let (ci, qi) = (i % t.context.len(), (i / t.context.len()) % t.prompt.len());
            let base = Item {
                id: format!("{rel}:{}", slug(&f.subject)),
                relation: rel.clone(),
                subject: f.subject.clone(),
                question: fill(&t.question[qi % t.question.len()], &f.subject, ""),
                prompt: fill(&t.prompt[qi], &f.subject, ""),
                context: fill(&t.context[ci], &f.subject, &cf.object),
                prior_answer: f.object.clone(),
                context_answer: cf.object.clone(),
                prior_aliases: f.aliases.clone(),
                context_aliases: cf.aliases.clone(),
                split: Some(split_of(&f.subject)),
                variant: Some(Variant::Counterfactual),
                distractor: None,
                true_context: None,
                prefix: String::new(),
                exposure: None,
            };
            built.true_context.push(Item {
                context: fill(&t.context[ci], &f.subject, &f.object),
                context_answer: f.object.clone(),
                context_aliases: f.aliases.clone(),
                variant: Some(Variant::TrueContext),
                ..base.clone()
            });
            built.no_context.push(Item {
                context: String::new(),
                variant: Some(Variant::NoContext),
                ..base.clone()
            });
            built.counterfactual.push(base);
        }
    }
    built.irrelevant = irrelevant_for(&built.counterfactual, &Distractor::ALL);
    Ok(built)
}

pub(super) fn slug(s: &str) -> String {
    let mut out = String::new();
    for c in s.to_lowercase().chars() {
        if c.is_alphanumeric() {
            out.push(c);
        } else if !out.ends_with('_') {
            out.push('_');
        }
    }
    out.trim_matches('_').to_string()
}

/// Write the built data into `dir`: one file per variant, and the counterfactual variant
/// per split. Returns (file, count) pairs.
pub fn write_built(dir: &Path) -> Result<Vec<(String, usize)>> {
    let b = build()?;
    let mut written = vec![];
    for (name, items) in [
        ("counterfactual.jsonl", &b.counterfactual),
        ("true_context.jsonl", &b.true_context),
        ("no_context.jsonl", &b.no_context),
        ("irrelevant.jsonl", &b.irrelevant),
    ] {
        write_jsonl(&dir.join(name), items)?;
        written.push((name.to_string(), items.len()));
    }
    // Every variant in one file, with unique ids, plus neutral passages, for the `conflict`
    // probe target: the counterfactual context against the true one, none, contexts about
    // other subjects (already unique), and ordinary text.
    let neutral = neutral_items();
    let both: Vec<Item> = b
        .counterfactual
        .iter()
        .chain(&b.true_context)
        .chain(&b.no_context)
        .map(|it| Item {
            id: format!("{}:{}", it.id, it.variant.map_or("", Variant::name)),
            ..it.clone()
        })
        .chain(b.irrelevant.iter().cloned())
        .chain(neutral)
        .collect();
    write_jsonl(&dir.join("variants.jsonl"), &both)?;
    written.push(("variants.jsonl".to_string(), both.len()));
    for split in [Split::Train, Split::Dev, Split::Test] {
        let part: Vec<&Item> = b
            .counterfactual
            .iter()
            .filter(|i| i.split == Some(split))
            .collect();
        let name = format!("{}.jsonl", split.name());
        write_jsonl(&dir.join(&name), &part)?;
        written.push((name, part.len()));
    }
    Ok(written)
}
