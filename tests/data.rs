//! The dataset format, the built-in data and the importers (no model needed).

mod common;
use ctxsteer::data::{self, ImportFormat, Item};
use std::collections::{HashMap, HashSet};

fn write(dir: &std::path::Path, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

const GOOD: &str = r#"{"id":"a","relation":"capital","subject":"France","question":"What is the capital of France?","prompt":"The capital of France is","context":"The capital of France is Rome.","prior_answer":"Paris","context_answer":"Rome"}"#;

#[test]
fn bad_lines_name_the_file_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            r#"{"id":"b","relation":"capital"}"#,
            "missing field `subject`",
        ),
        (
            &GOOD.replace(r#""prior_answer":"Paris""#, r#""prior_answer":3"#) as &str,
            "field `prior_answer` must be a string",
        ),
        (
            &GOOD.replace(r#""subject":"France""#, r#""subject":"  ""#),
            "field `subject` is empty",
        ),
        ("{not json", "not valid JSON"),
        (
            &GOOD.replace(
                r#""context_answer":"Rome""#,
                r#""context_answer":"Rome","context_aliases":"Roma""#,
            ),
            "array of strings",
        ),
        (GOOD, "duplicate id `a`"),
        (
            &GOOD.replace(r#""id":"a""#, r#""id":"c""#).replace(
                r#""context_answer":"Rome""#,
                r#""context_answer":" paris ""#,
            ),
            "`prior_answer` and `context_answer` are both",
        ),
        (
            &GOOD.replace(r#""id":"a""#, r#""id":"d""#).replace(
                r#""subject":"France""#,
                r#""subject":"France","split":"valid""#,
            ),
            "unknown variant `valid`, expected one of `train`, `dev`, `test`",
        ),
        (
            &GOOD.replace(r#""id":"a""#, r#""id":"e""#).replace(
                r#""subject":"France""#,
                r#""subject":"France","variant":"cf""#,
            ),
            "expected one of `counterfactual`, `true_context`, `no_context`, `neutral`, `irrelevant`",
        ),
        (
            &GOOD.replace(r#""id":"a""#, r#""id":"f""#).replace(
                r#""subject":"France""#,
                r#""subject":"France","distractor":"other_relation""#,
            ),
            "field `distractor` belongs to variant `irrelevant`",
        ),
    ];
    for (bad, want) in cases {
        let p = write(dir.path(), "d.jsonl", &format!("{GOOD}\n\n{bad}\n"));
        let e = data::read_jsonl(&p, false).unwrap_err().to_string();
        assert!(
            e.contains("d.jsonl") && e.contains("line 3") && e.contains(want),
            "{e}"
        );
        // --skip-invalid keeps the good line and counts the bad one.
        let (items, skipped) = data::read_jsonl(&p, true).unwrap();
        assert_eq!((items.len(), skipped), (1, 1));
    }
}

/// A true-context variant states the true fact: there the two answers agree by design.
#[test]
fn a_true_context_variant_may_repeat_the_prior() {
    let dir = tempfile::tempdir().unwrap();
    let line = GOOD.replace(
        r#""context_answer":"Rome""#,
        r#""context_answer":"Paris","variant":"true_context""#,
    );
    let p = write(dir.path(), "v.jsonl", &format!("{line}\n"));
    assert_eq!(data::read_jsonl(&p, false).unwrap().0.len(), 1);
}

/// Any file may hold irrelevant items: a query after a context about another subject.
#[test]
fn an_irrelevant_variant_is_read_with_its_distractor_kind() {
    let dir = tempfile::tempdir().unwrap();
    let line = GOOD.replace(
        r#""subject":"France""#,
        r#""subject":"France","variant":"irrelevant","distractor":"same_relation_true""#,
    );
    let p = write(dir.path(), "v.jsonl", &format!("{line}\n"));
    let it = &data::read_jsonl(&p, false).unwrap().0[0];
    assert_eq!(it.variant, Some(data::Variant::Irrelevant));
    assert_eq!(it.distractor, Some(data::Distractor::SameRelationTrue));
}

/// The built irrelevant items: four kinds per conflict where each fits, split with their
/// query, about another subject, never naming the query's answer.
#[test]
fn built_irrelevant_items_are_about_other_subjects_of_the_same_split() {
    let b = data::build().unwrap();
    let by_id: HashMap<&str, &data::Item> = b
        .counterfactual
        .iter()
        .map(|i| (i.id.as_str(), i))
        .collect();
    assert!(b.irrelevant.len() >= 4 * b.counterfactual.len() - 10);
    let mut kinds: HashMap<data::Distractor, usize> = HashMap::new();
    for it in &b.irrelevant {
        let (qid, _) = it.id.split_once(":irrelevant:").unwrap();
        let q = by_id[qid];
        assert_eq!(
            (it.split, &it.subject, &it.prompt),
            (q.split, &q.subject, &q.prompt)
        );
        assert!(!data::mentions(&it.context, &q.subject), "{}", it.id);
        for p in q.prior_names() {
            assert!(!data::mentions(&it.context, p), "{}: names {p}", it.id);
        }
        assert!(data::mentions(&it.context, &it.context_answer), "{}", it.id);
        // A one-sentence context is another conflict's context or its true twin's, from the
        // query's split.
        if it.distractor != Some(data::Distractor::Paragraph) {
            let from = b.counterfactual.iter().find(|c| {
                c.context == it.context || c.true_twin().is_some_and(|t| t.context == it.context)
            });
            let from = from.unwrap_or_else(|| panic!("{}: {}", it.id, it.context));
            assert_eq!(from.split, q.split, "{}", it.id);
            assert_ne!(from.subject, q.subject, "{}", it.id);
        }
        *kinds.entry(it.distractor.unwrap()).or_default() += 1;
    }
    assert_eq!(kinds.len(), 4, "{kinds:?}");
}

#[test]
fn a_byte_order_mark_is_accepted_and_bad_utf8_names_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bom.jsonl");
    std::fs::write(&p, format!("\u{feff}{GOOD}\r\n")).unwrap();
    let (items, _) = data::read_jsonl(&p, false).unwrap();
    assert_eq!(items[0].id, "a");
    let mut bytes = format!("{GOOD}\n").into_bytes();
    bytes.extend(b"{\"id\": \"\xff\"}\n");
    std::fs::write(&p, &bytes).unwrap();
    let e = data::read_jsonl(&p, false).unwrap_err().to_string();
    assert!(e.contains("line 2") && e.contains("UTF-8"), "{e}");
    assert_eq!(data::read_jsonl(&p, true).unwrap().1, 1);
}

#[test]
fn built_in_data_is_large_deterministic_and_split_by_subject() {
    let a = data::build().unwrap();
    let b = data::build().unwrap();
    assert_eq!(a.counterfactual, b.counterfactual);
    let items = &a.counterfactual;
    let relations: HashSet<&str> = items.iter().map(|i| i.relation.as_str()).collect();
    assert!(relations.len() >= 8, "{relations:?}");
    assert!(items.len() >= 400, "{} items", items.len());
    let objects: HashMap<&str, HashSet<&str>> = items.iter().fold(HashMap::new(), |mut m, i| {
        m.entry(i.relation.as_str())
            .or_default()
            .insert(i.prior_answer.as_str());
        m
    });
    let mut split_of: HashMap<String, ctxsteer::data::Split> = HashMap::new();
    for it in items {
        assert_ne!(
            it.prior_answer.to_lowercase(),
            it.context_answer.to_lowercase(),
            "{}",
            it.id
        );
        assert!(
            objects[it.relation.as_str()].contains(it.context_answer.as_str()),
            "{}",
            it.id
        );
        assert!(it.context.contains(&it.context_answer), "{}", it.id);
        let norm = ctxsteer::label::normalize;
        let without_subject = norm(&it.context).replace(&norm(&it.subject), " ");
        assert!(
            !without_subject.contains(&norm(&it.prior_answer)),
            "{}: context names the prior",
            it.id
        );
        let s = it.split.unwrap();
        let prev = split_of.entry(it.subject.to_lowercase()).or_insert(s);
        assert_eq!(*prev, s, "subject {} is in two splits", it.subject);
    }
    use ctxsteer::data::Split;
    let n = |s: Split| items.iter().filter(|i| i.split == Some(s)).count();
    assert!(n(Split::Train) > n(Split::Dev) && n(Split::Dev) > 40 && n(Split::Test) > 40);
    // The variants share ids and differ only in the context.
    for ((c, t), z) in items.iter().zip(&a.true_context).zip(&a.no_context) {
        assert_eq!((&c.id, &c.prompt), (&t.id, &t.prompt));
        assert_eq!(t.context_answer, t.prior_answer);
        assert!(t.context.contains(&t.prior_answer));
        assert!(z.context.is_empty() && z.id == c.id);
    }
    // Every relation rotates through 3 context and 3 query paraphrases.
    for rel in &relations {
        let ctx: HashSet<String> = items
            .iter()
            .filter(|i| &i.relation == rel)
            .map(|i| {
                i.context
                    .replace(&i.subject, "S")
                    .replace(&i.context_answer, "O")
            })
            .collect();
        assert!(ctx.len() >= 3, "{rel}: {ctx:?}");
    }
}

#[test]
fn committed_jsonl_equals_a_fresh_build() {
    let dir = tempfile::tempdir().unwrap();
    data::write_built(dir.path()).unwrap();
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("counterfactual_data");
    for f in [
        "counterfactual.jsonl",
        "true_context.jsonl",
        "no_context.jsonl",
        "irrelevant.jsonl",
        "variants.jsonl",
        "train.jsonl",
        "dev.jsonl",
        "test.jsonl",
    ] {
        let fresh = std::fs::read_to_string(dir.path().join(f)).unwrap();
        let committed = std::fs::read_to_string(repo.join(f)).unwrap();
        assert!(
            fresh == committed,
            "{f} is stale: run `ctxsteer data build --out counterfactual_data`"
        );
        // What we write, our own reader takes back, every line of it (the neutral passages of
        // variants.jsonl, whose two answers are both "(no answer)", included).
        let (items, skipped) = data::read_jsonl(&repo.join(f), false).unwrap();
        assert_eq!(
            (items.len(), skipped),
            (committed.lines().count(), 0),
            "{f}"
        );
    }
}

#[test]
fn counterfact_import_and_its_errors() {
    let items = data::import(
        ImportFormat::Counterfact,
        &common::fixture("import/counterfact.json"),
    )
    .unwrap();
    assert_eq!(items.len(), 2);
    let it: &Item = &items[0];
    assert_eq!(it.id, "counterfact:0");
    assert_eq!(it.prompt, "The home city of Juventus is");
    assert_eq!(it.context, "The home city of Juventus is Lyon.");
    assert_eq!(
        (it.prior_answer.as_str(), it.context_answer.as_str()),
        ("Turin", "Lyon")
    );
    assert_eq!(it.relation, "P_home");
    assert!(it.question.contains("Juventus plays its home games in"));
    assert_eq!(items[1].prompt, "Franz Schubert was born in");
    let e = data::import(
        ImportFormat::Counterfact,
        &common::fixture("import/counterfact_bad.json"),
    )
    .unwrap_err();
    let e = e.to_string();
    assert!(
        e.contains("counterfact_bad.json")
            && e.contains("case_id 3")
            && e.contains("requested_rewrite.target_true.str"),
        "{e}"
    );
}

#[test]
fn nqswap_import_parses_lists_and_rejects_malformed_records() {
    let items = data::import(
        ImportFormat::Nqswap,
        &common::fixture("import/nqswap.jsonl"),
    )
    .unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(items[0].prior_answer, "Marta Vell");
    assert_eq!(
        items[0].context,
        "context: The ceiling of the old chapel was painted by Joris Kam in 1702 .\n"
    );
    assert_eq!(
        items[0].query(ctxsteer::data::Form::Completion, true),
        "context: The ceiling of the old chapel was painted by Joris Kam in 1702 .\nquestion: who painted the ceiling of the old chapel in the town\nanswer:"
    );
    // The gold context is the original passage, even where the swapped answer is spelled
    // otherwise in the text ("Forty" for 40), so that no replacement could recover it.
    let gold = |i: usize| items[i].true_twin().unwrap().context;
    assert_eq!(
        gold(0),
        "context: The ceiling of the old chapel was painted by Marta Vell in 1702 .\n"
    );
    assert_eq!(gold(1), "context: Eleven bridges cross the river .\n");
    assert_eq!(
        (
            items[1].prior_answer.as_str(),
            items[1].prior_aliases.clone()
        ),
        ("11", vec!["eleven".to_string()])
    );
    assert_eq!(
        (
            items[1].context_answer.as_str(),
            items[1].context_aliases.clone()
        ),
        ("40", vec!["forty".to_string()])
    );
    let e = data::import(
        ImportFormat::Nqswap,
        &common::fixture("import/nqswap_bad_literal.jsonl"),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("line 1") && e.contains("org_answer") && e.contains("quoted string"),
        "{e}"
    );
    let e = data::import(
        ImportFormat::Nqswap,
        &common::fixture("import/nqswap_missing.jsonl"),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("line 1") && e.contains("sub_context"), "{e}");
}

#[test]
fn python_list_literals() {
    assert_eq!(
        data::parse_py_list("[' heavy.', ' fonder.']").unwrap(),
        [" heavy.", " fonder."]
    );
    assert_eq!(
        data::parse_py_list(r#"["it's", 'a\'b', 'x\\y']"#).unwrap(),
        ["it's", "a'b", "x\\y"]
    );
    assert_eq!(data::parse_py_list("[]").unwrap(), Vec::<String>::new());
    for bad in ["['a'", "['a' 'b']", "[a]", "'a'", "['a'] x"] {
        assert!(data::parse_py_list(bad).is_err(), "{bad}");
    }
}

#[test]
fn imported_files_read_back_through_the_validator() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("nq.jsonl");
    let items = data::import(
        ImportFormat::Nqswap,
        &common::fixture("import/nqswap.jsonl"),
    )
    .unwrap();
    data::write_jsonl(&out, &items).unwrap();
    let (back, skipped) = data::read_jsonl(&out, false).unwrap();
    assert_eq!((back, skipped), (items, 0));
}

#[test]
fn memotrap_import_splits_instruction_from_text_and_checks_classes() {
    let items = data::import(
        ImportFormat::Memotrap,
        &common::fixture("import/memotrap/1-proverb-ending.csv"),
    )
    .unwrap();
    assert_eq!(items.len(), 3);
    let it = &items[0];
    assert_eq!(it.relation, "proverb-ending");
    assert_eq!(it.context, "Write a quote that ends in the word \"heavy\":");
    assert_eq!(it.prompt, "Absence makes the heart grow");
    assert_eq!(
        (it.context_answer.as_str(), it.prior_answer.as_str()),
        ("heavy.", "fonder.")
    );
    // Joined back, context and prompt are the published prompt.
    assert_eq!(
        it.query(ctxsteer::data::Form::Completion, true),
        it.question
    );
    let qa = data::import(
        ImportFormat::Memotrap,
        &common::fixture("import/memotrap/4-history-of-science-qa.csv"),
    )
    .unwrap();
    assert_eq!(qa[0].prompt, "Answer:");
    // Each question is its own subject (the shared cue "Answer:" would put every question of
    // the file in one split).
    assert!(qa[0]
        .subject
        .starts_with("What was the common wisdom before"));
    assert_ne!(qa[0].subject, qa[1].subject);
    assert!(qa[0].context.ends_with("B. The Earth is flat.\n"));
    assert_eq!(
        qa[0].query(ctxsteer::data::Form::Completion, true),
        qa[0].question
    );
    assert_eq!(
        (qa[0].context_answer.as_str(), qa[0].prior_answer.as_str()),
        ("B", "A")
    );
    let e = data::import(
        ImportFormat::Memotrap,
        &common::fixture("import/memotrap_bad.csv"),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("record 2") && e.contains("classes"), "{e}");
    let e = data::import(
        ImportFormat::Memotrap,
        &common::fixture("import/memotrap_bad_index.csv"),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("answer_index") && e.contains("2 classes"), "{e}");
}

#[test]
fn world_capital_import_gives_both_conflict_forms() {
    let items = data::import(
        ImportFormat::WorldCapital,
        &common::fixture("import/world_capital.json"),
    )
    .unwrap();
    assert_eq!(items.len(), 4);
    let (sub, coh) = (&items[0], &items[1]);
    assert_eq!(sub.relation, "world_capital_substitution");
    assert_eq!(
        sub.prompt,
        "The name of the capital city of American Samoa is"
    );
    assert_eq!(
        sub.context,
        "The name of the capital city of American Samoa is Yerevan."
    );
    assert_eq!(
        (sub.prior_answer.as_str(), sub.context_answer.as_str()),
        ("Pago Pago", "Yerevan")
    );
    assert_eq!(coh.relation, "world_capital_coherent");
    assert!(coh
        .prompt
        .starts_with("Question: What is the capital city of American Samoa?"));
    assert!(
        coh.context
            .starts_with("The capital city of American Samoa is Yerevan.")
            && !coh.context.contains("Question:")
    );
    let e = data::import(
        ImportFormat::WorldCapital,
        &common::fixture("import/world_capital_bad.json"),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("record 0") && e.contains("Clean Prompt"), "{e}");
}

#[test]
fn json_importers_say_what_is_wrong_with_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.json");
    for (format, what) in [
        (ImportFormat::Counterfact, "CounterFact records"),
        (ImportFormat::WorldCapital, "records"),
    ] {
        std::fs::write(&bad, "[{\"a\": 1},\n oops]").unwrap();
        let e = data::import(format, &bad).unwrap_err().to_string();
        assert!(e.contains("bad.json"), "{e}");
        assert!(e.contains("not valid JSON (line 2, column 2)"), "{e}");
        std::fs::write(&bad, "{\"a\": 1}").unwrap();
        let e = data::import(format, &bad).unwrap_err().to_string();
        assert!(
            e.contains(&format!("expected a JSON array of {what}")),
            "{e}"
        );
    }
}

/// The one subject-split rule gives, for each of its uses, the assignment each use made before
/// it existed (the formulas below), so that the committed data, probes and reports stand.
#[test]
fn the_subject_split_keeps_every_former_assignment() {
    use ctxsteer::data::{stable_hash, Split, SubjectSplit};
    let subjects: Vec<String> = (0..2000)
        .map(|i| format!("Subject {i} {}", if i % 3 == 0 { "Of Paris" } else { "x" }))
        .collect();
    for s in &subjects {
        let builtin = match stable_hash(&s.to_lowercase()) % 10 {
            0..=5 => Split::Train,
            6 | 7 => Split::Dev,
            _ => Split::Test,
        };
        assert_eq!(SubjectSplit::builtin().of(s), builtin, "{s}");
        assert_eq!(ctxsteer::data::split_of(s), builtin);
        for (seed, share) in [(0u64, 0.5f64), (7, 0.3), (1, 0.0), (2, 1.0)] {
            let h = stable_hash(&format!("split:{seed}:{s}")) % 1000;
            let want = if (h as f64) < share * 1000.0 {
                Split::Dev
            } else {
                Split::Test
            };
            assert_eq!(
                SubjectSplit::dev_test(seed, share).of(s),
                want,
                "{s} {seed} {share}"
            );
        }
        let half = match stable_hash(s) % 2 {
            0 => Split::Dev,
            _ => Split::Test,
        };
        assert_eq!(SubjectSplit::halves().of(s), half);
        for seed in [0u64, 3] {
            let held = stable_hash(&format!("{seed}:{}", s.to_lowercase())).is_multiple_of(4);
            assert_eq!(SubjectSplit::held_out(seed).of(s) == Split::Test, held);
            assert_eq!(ctxsteer::probe::is_test(s, seed), held);
        }
    }
    // Shares are what they say, within sampling noise, and case folds where the rule says so.
    let n = |r: &SubjectSplit, p: Split| subjects.iter().filter(|s| r.of(s) == p).count();
    let b = SubjectSplit::builtin();
    assert!(
        (1100..1300).contains(&n(&b, Split::Train)),
        "{}",
        n(&b, Split::Train)
    );
    assert!((300..500).contains(&n(&b, Split::Test)));
    assert_eq!(b.of("PARIS"), b.of("paris"));
}
