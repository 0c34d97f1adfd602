//! `organism world`: invented subjects with pronounceable names, relations with their own
//! objects and paraphrase templates, an exposure count per fact from a schedule, a corpus that
//! states each fact that many times among filler sentences, a word-level tokenizer over it,
//! and evaluation items in ctxsteer's JSONL format, split by subject, with each item's
//! exposure. The same options give the same bytes.

use super::relations::{Relation, RELATIONS};
use super::vocab::{tokenizer_config, tokenizer_json, words};
use crate::data::{irrelevant_for, split_of, Distractor, Item, Variant};
use crate::error::{Error, Result};
use crate::stats::SplitMix;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

const ONSETS: [&str; 16] = [
    "b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "tr",
];
const VOWELS: [&str; 6] = ["a", "e", "i", "o", "u", "ai"];
const CODAS: [&str; 6] = ["", "", "n", "r", "l", "s"];

/// Filler: sentences without a fact, some naming a subject so that every subject's name is
/// trained, even one whose facts are never seen.
const FILLER_NOUNS: [&str; 8] = [
    "The wind",
    "A bell",
    "The river",
    "An old cart",
    "The market",
    "A small boat",
    "The lamp",
    "The road",
];
const FILLER_PREDICATES: [&str; 8] = [
    "was quiet all night",
    "rolled past the gate",
    "stood by the wall",
    "looked grey at dawn",
    "shook in the storm",
    "was busy before noon",
    "creaked in the cold",
    "was empty by evening",
];
const MENTIONS: [&str; 4] = [
    "{s} smiled at the stranger.",
    "Nobody saw {s} that morning.",
    "{s} walked home slowly.",
    "A letter came for {s}.",
];

/// How a world is built.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WorldOptions {
    pub subjects: usize,
    pub relations: usize,
    /// Objects per relation.
    pub objects: usize,
    /// The exposure schedule as given (see [`parse_schedule`]).
    pub schedule: String,
    /// Times each subject's name appears in a sentence without a fact.
    pub mentions: usize,
    /// Share of the corpus's sentences that are filler without any name.
    pub filler: f64,
    /// Reading episodes, as a share of the fact statements: a sentence about a reading-only
    /// subject followed by the query and its answer ("The home of Quilbo is in Kelmar. Quilbo
    /// lives in Kelmar."). Reading-only subjects get a new object each time, so only the
    /// context tells the answer: the model learns to read, and no world fact's exposure
    /// changes.
    #[serde(default)]
    pub reading: f64,
    /// How many reading-only subjects there are (None: five times the subjects, at least 20).
    /// Many of them, each read a few times, make copying from a context a skill about any
    /// name; a few, read often, teach a model to copy only after those names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readers: Option<usize>,
    pub seed: u64,
}

impl Default for WorldOptions {
    fn default() -> Self {
        WorldOptions {
            subjects: 400,
            relations: 5,
            objects: 16,
            schedule: "0,pow2:1-256".into(),
            mentions: 2,
            filler: 0.2,
            reading: 0.25,
            readers: None,
            seed: 0,
        }
    }
}

/// One fact and how many times the corpus states it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Fact {
    pub subject: String,
    pub relation: String,
    pub object: String,
    pub exposure: u32,
}

/// What `world.json` records: the options, the relations' templates, and the counts.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct World {
    pub version: u32,
    pub options: WorldOptions,
    /// Relation name to its templates (the first gives the completion query).
    pub templates: BTreeMap<String, Vec<String>>,
    pub facts: usize,
    pub corpus_sentences: usize,
    pub corpus_words: usize,
    pub vocabulary: usize,
    pub items: usize,
}

/// Exposure counts: comma-separated parts, each a count (`0`, `3`) or `pow2:A-B`, the powers
/// of two from A to B; or `zipf:S:MAX`, where the fact of rank r is seen round(MAX / r^S)
/// times (at least once). Facts are spread evenly over a list's counts.
pub fn parse_schedule(s: &str) -> Result<Schedule> {
    let bad = |why: String| {
        Error::Invalid(format!(
            "exposure schedule `{s}`: {why}; write counts and powers of two like \
             `0,1,3,pow2:4-256`, or `zipf:1.0:256`"
        ))
    };
    if let Some(rest) = s.strip_prefix("zipf:") {
        let (a, m) = rest
            .split_once(':')
            .ok_or_else(|| bad("zipf needs S:MAX".into()))?;
        let exponent: f64 = a
            .parse()
            .map_err(|_| bad(format!("`{a}` is not a number")))?;
        let max: u32 = m
            .parse()
            .map_err(|_| bad(format!("`{m}` is not a count")))?;
        if !(exponent.is_finite() && exponent > 0.0) || max == 0 {
            return Err(bad("zipf needs S > 0 and MAX ≥ 1".into()));
        }
        return Ok(Schedule::Zipf { exponent, max });
    }
    let mut counts = Vec::new();
    for part in s.split(',').map(str::trim) {
        if let Some(r) = part.strip_prefix("pow2:") {
            let (a, b) = r
                .split_once('-')
                .ok_or_else(|| bad(format!("`{part}` needs A-B")))?;
            let (a, b): (u32, u32) = match (a.parse(), b.parse()) {
                (Ok(a), Ok(b)) if a >= 1 && a <= b => (a, b),
                _ => return Err(bad(format!("`{part}` needs 1 ≤ A ≤ B"))),
            };
            counts.extend((0..32).map(|k| 1u32 << k).filter(|c| *c >= a && *c <= b));
        } else {
            let c: u32 = part
                .parse()
                .map_err(|_| bad(format!("`{part}` is not a count")))?;
            counts.push(c);
        }
    }
    if counts.is_empty() {
        return Err(bad("no counts".into()));
    }
    Ok(Schedule::Counts(counts))
}

/// A parsed exposure schedule.
#[derive(Clone, Debug, PartialEq)]
pub enum Schedule {
    Counts(Vec<u32>),
    Zipf { exponent: f64, max: u32 },
}

impl Schedule {
    /// One exposure per fact, `n` facts, in an order set by `rng`.
    fn assign(&self, n: usize, rng: &mut SplitMix) -> Vec<u32> {
        let mut v: Vec<u32> = match self {
            Schedule::Counts(c) => (0..n).map(|i| c[i % c.len()]).collect(),
            Schedule::Zipf { exponent, max } => (1..=n)
                .map(|r| {
                    ((*max as f64) / (r as f64).powf(*exponent))
                        .round()
                        .max(1.0) as u32
                })
                .collect(),
        };
        rng.shuffle(&mut v);
        v
    }
}

/// A pronounceable name of 2 or 3 syllables, optionally with an ending.
fn name(rng: &mut SplitMix, ending: &str, capital: bool) -> String {
    let n = 2 + rng.below(2);
    let mut s = String::new();
    for i in 0..n {
        s.push_str(ONSETS[rng.below(ONSETS.len())]);
        s.push_str(VOWELS[rng.below(VOWELS.len())]);
        if i + 1 == n || ending.is_empty() {
            s.push_str(CODAS[rng.below(CODAS.len())]);
        }
    }
    s.push_str(ending);
    if capital {
        let mut c = s.chars();
        s = c
            .next()
            .map_or(String::new(), |f| f.to_ascii_uppercase().to_string())
            + c.as_str();
    }
    s
}

/// `n` names none of which is in `taken` (lowercase); each is added to it.
fn names(
    rng: &mut SplitMix,
    n: usize,
    taken: &mut BTreeSet<String>,
    ending: impl Fn(&mut SplitMix) -> (&'static str, bool),
) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let mut tries = 0;
    while out.len() < n {
        tries += 1;
        if tries > 100 * n + 1000 {
            return Err(Error::Invalid(format!(
                "could not make {n} distinct names; ask for fewer subjects or objects"
            )));
        }
        let (end, cap) = ending(rng);
        let s = name(rng, end, cap);
        if taken.insert(s.to_lowercase()) {
            out.push(s);
        }
    }
    Ok(out)
}

fn render(template: &str, subject: &str, object: &str) -> String {
    template.replace("{s}", subject).replace("{o}", object)
}

/// The world's facts (every subject has one fact of each relation), and the reading-only
/// subjects.
fn facts(opts: &WorldOptions, rng: &mut SplitMix) -> Result<(Vec<Fact>, Vec<String>)> {
    let rels = &RELATIONS[..opts.relations];
    // Every word of a template or filler is taken, so no name is an ordinary word.
    let mut taken: BTreeSet<String> = RELATIONS
        .iter()
        .flat_map(|r| r.templates.iter().chain([&r.question]))
        .chain(
            FILLER_NOUNS
                .iter()
                .chain(&FILLER_PREDICATES)
                .chain(&MENTIONS),
        )
        .flat_map(|t| words(t))
        .map(|w| w.to_lowercase())
        .collect();
    let subjects = names(rng, opts.subjects, &mut taken, |_| ("", true))?;
    let mut objects = Vec::new();
    for r in rels {
        let ending = |g: &mut SplitMix| (r.endings[g.below(r.endings.len())], r.capital);
        objects.push(names(rng, opts.objects, &mut taken, ending)?);
    }
    let n_readers = opts.readers.unwrap_or((opts.subjects * 5).max(20));
    let readers = names(rng, n_readers, &mut taken, |_| ("", true))?;
    let schedule = parse_schedule(&opts.schedule)?;
    let exposure = schedule.assign(opts.subjects * rels.len(), rng);
    let mut out = Vec::new();
    for s in &subjects {
        for (ri, r) in rels.iter().enumerate() {
            out.push(Fact {
                subject: s.clone(),
                relation: r.name.to_string(),
                object: objects[ri][rng.below(opts.objects)].clone(),
                exposure: exposure[out.len()],
            });
        }
    }
    Ok((out, readers))
}

/// The corpus: each fact stated `exposure` times in random templates, reading episodes about
/// `readers`, each subject named `mentions` times without a fact, and filler, shuffled; one
/// sentence (or episode) per line.
fn corpus(
    opts: &WorldOptions,
    facts: &[Fact],
    objects: &BTreeMap<&str, Vec<&str>>,
    readers: &[String],
    rng: &mut SplitMix,
) -> Vec<String> {
    let mut lines = Vec::new();
    for f in facts {
        let r = relation(&f.relation);
        for _ in 0..f.exposure {
            lines.push(render(r.templates[rng.below(3)], &f.subject, &f.object));
        }
    }
    let relations: Vec<&str> = objects.keys().copied().collect();
    let episodes = ((lines.len() as f64) * opts.reading).round() as usize;
    for _ in 0..episodes {
        let rel = relations[rng.below(relations.len())];
        let r = relation(rel);
        let s = &readers[rng.below(readers.len())];
        let o = objects[rel][rng.below(objects[rel].len())];
        let context = render(r.templates[1 + rng.below(2)], s, o);
        lines.push(format!("{context} {} {o}.", render(query(r), s, "")));
    }
    let subjects: BTreeSet<&str> = facts.iter().map(|f| f.subject.as_str()).collect();
    for s in subjects {
        for _ in 0..opts.mentions {
            lines.push(render(MENTIONS[rng.below(MENTIONS.len())], s, ""));
        }
    }
    let share = opts.filler.clamp(0.0, 0.95);
    let n_filler = ((lines.len() as f64) * share / (1.0 - share)).round() as usize;
    for _ in 0..n_filler {
        let noun = FILLER_NOUNS[rng.below(FILLER_NOUNS.len())];
        let pred = FILLER_PREDICATES[rng.below(FILLER_PREDICATES.len())];
        lines.push(format!("{noun} {pred}."));
    }
    rng.shuffle(&mut lines);
    lines
}

/// Each relation's objects, in the order the facts first name them.
fn objects_by_relation(facts: &[Fact]) -> BTreeMap<&str, Vec<&str>> {
    let mut out: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for f in facts {
        let v = out.entry(f.relation.as_str()).or_default();
        if !v.contains(&f.object.as_str()) {
            v.push(f.object.as_str());
        }
    }
    out
}

/// The completion query of a relation: its first template cut before the object.
fn query(r: &Relation) -> &'static str {
    r.templates[0].split("{o}").next().unwrap_or("").trim_end()
}

fn relation(name: &str) -> &'static Relation {
    RELATIONS
        .iter()
        .find(|r| r.name == name)
        .unwrap_or(&RELATIONS[0])
}

/// The evaluation items of one fact: closed-book, counterfactual and true context (the
/// irrelevant ones come from [`irrelevant_for`]). The context is a template other than the
/// query's, naming another object of the relation.
fn items_of(f: &Fact, objects: &[&str], rng: &mut SplitMix) -> Vec<Item> {
    let r = relation(&f.relation);
    let prompt = query(r);
    let others: Vec<&&str> = objects.iter().filter(|o| **o != f.object).collect();
    let other = others[rng.below(others.len())].to_string();
    let template = r.templates[1 + rng.below(2)];
    let id = format!("{}:{}", f.relation, f.subject.to_lowercase());
    let base = Item {
        id: id.clone(),
        relation: f.relation.clone(),
        subject: f.subject.clone(),
        question: render(r.question, &f.subject, ""),
        prompt: render(prompt, &f.subject, ""),
        context: render(template, &f.subject, &other),
        prior_answer: f.object.clone(),
        context_answer: other,
        prior_aliases: vec![],
        context_aliases: vec![],
        split: Some(split_of(&f.subject)),
        variant: Some(Variant::Counterfactual),
        distractor: None,
        true_context: Some(render(template, &f.subject, &f.object)),
        prefix: String::new(),
        exposure: Some(f.exposure),
    };
    // As in the built-in data, the closed-book item keeps the counterfactual's answer.
    let closed = Item {
        id: format!("{id}:no_context"),
        context: String::new(),
        variant: Some(Variant::NoContext),
        true_context: None,
        ..base.clone()
    };
    let truth = Item {
        id: format!("{id}:true_context"),
        context: render(template, &f.subject, &f.object),
        context_answer: f.object.clone(),
        variant: Some(Variant::TrueContext),
        ..base.clone()
    };
    vec![base, truth, closed]
}

fn check(opts: &WorldOptions) -> Result<()> {
    let bad = |m: String| Err(Error::Invalid(m));
    if opts.relations == 0 || opts.relations > RELATIONS.len() {
        return bad(format!(
            "--relations {}: give 1 to {} (the built-in relations: {})",
            opts.relations,
            RELATIONS.len(),
            RELATIONS.map(|r| r.name).join(", ")
        ));
    }
    if opts.subjects < 10 {
        return bad(format!("--subjects {}: give at least 10", opts.subjects));
    }
    if opts.objects < 2 {
        return bad(format!(
            "--objects {}: give at least 2 (a counterfactual needs another)",
            opts.objects
        ));
    }
    if !(0.0..0.95).contains(&opts.filler) {
        return bad(format!(
            "--filler {}: give a share in [0, 0.95)",
            opts.filler
        ));
    }
    parse_schedule(&opts.schedule).map(|_| ())
}

/// Build the world into `dir`: world.json, facts.jsonl, corpus.txt, tokenizer.json,
/// tokenizer_config.json, conflicts.jsonl (the counterfactual items, for `bench conflict`,
/// `label` and `reft train`) and variants.jsonl (closed-book, counterfactual, true and
/// irrelevant contexts, for `capture` and `probe train`). Every file is written whole.
pub fn build(opts: &WorldOptions, dir: &Path) -> Result<World> {
    check(opts)?;
    let mut rng = SplitMix(opts.seed ^ 0x6f72_6761_6e69_736d);
    let (facts, readers) = facts(opts, &mut rng)?;
    let objects = objects_by_relation(&facts);
    let corpus = corpus(opts, &facts, &objects, &readers, &mut rng);
    let (mut items, conflicts) = all_items(&facts, &objects, &mut rng);
    let texts: Vec<&str> = corpus
        .iter()
        .map(String::as_str)
        .chain(
            items
                .iter()
                .flat_map(|i| [i.context.as_str(), i.prompt.as_str(), i.question.as_str()]),
        )
        .collect();
    let (tokenizer, vocabulary) = tokenizer_json(&texts)?;
    // In variants.jsonl every item's id names its variant, as in the built-in data.
    for it in items.iter_mut() {
        if it.variant == Some(Variant::Counterfactual) {
            it.id.push_str(":counterfactual");
        }
    }
    let world = World {
        version: 1,
        options: opts.clone(),
        templates: templates(opts.relations),
        facts: facts.len(),
        corpus_sentences: corpus.len(),
        corpus_words: corpus.iter().map(|l| words(l).len()).sum(),
        vocabulary,
        items: items.len(),
    };
    write_world(
        dir,
        &world,
        (&facts, &items, &conflicts),
        &corpus,
        &tokenizer,
    )?;
    Ok(world)
}

/// Every fact's evaluation items, then the irrelevant contexts for its counterfactuals; and
/// the counterfactuals alone.
fn all_items(
    facts: &[Fact],
    objects: &BTreeMap<&str, Vec<&str>>,
    rng: &mut SplitMix,
) -> (Vec<Item>, Vec<Item>) {
    let mut items: Vec<Item> = Vec::new();
    for f in facts {
        items.extend(items_of(f, &objects[f.relation.as_str()], rng));
    }
    let conflicts: Vec<Item> = items
        .iter()
        .filter(|i| i.variant == Some(Variant::Counterfactual))
        .cloned()
        .collect();
    // An irrelevant item's true context would be its query's; it has none of its own.
    items.extend(
        irrelevant_for(&conflicts, &Distractor::ALL)
            .into_iter()
            .map(|i| Item {
                true_context: None,
                ..i
            }),
    );
    (items, conflicts)
}

/// The first `n` relations' templates, by name.
fn templates(n: usize) -> BTreeMap<String, Vec<String>> {
    RELATIONS[..n]
        .iter()
        .map(|r| {
            (
                r.name.to_string(),
                r.templates.iter().map(|t| t.to_string()).collect(),
            )
        })
        .collect()
}

/// Write the world's files into `dir`: its facts, items (all, and the counterfactuals), corpus,
/// tokenizer and world.json.
fn write_world(
    dir: &Path,
    world: &World,
    (facts, items, conflicts): (&[Fact], &[Item], &[Item]),
    corpus: &[String],
    tokenizer: &str,
) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::file(dir, e))?;
    use crate::data::write_jsonl;
    write_jsonl(&dir.join("facts.jsonl"), facts)?;
    write_jsonl(&dir.join("variants.jsonl"), items)?;
    write_jsonl(&dir.join("conflicts.jsonl"), conflicts)?;
    let write = crate::atomic::write;
    write(
        &dir.join("corpus.txt"),
        (corpus.join("\n") + "\n").as_bytes(),
    )?;
    write(&dir.join("tokenizer.json"), tokenizer.as_bytes())?;
    write(
        &dir.join("tokenizer_config.json"),
        tokenizer_config().as_bytes(),
    )?;
    let text = serde_json::to_string_pretty(world).map_err(|e| Error::Invalid(e.to_string()))?;
    write(&dir.join("world.json"), text.as_bytes())
}

/// Read `world.json` from a world folder, saying so when the folder is not a world.
pub fn read(dir: &Path) -> Result<World> {
    let p = dir.join("world.json");
    let text = std::fs::read_to_string(&p).map_err(|e| {
        Error::file(dir, format!("not a world folder (no readable world.json: {e}); make one with `ctxsteer organism world`"))
    })?;
    serde_json::from_str(&text).map_err(|e| Error::file(&p, format!("not a world.json: {e}")))
}
