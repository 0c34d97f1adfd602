//! The model organism's world: reproducible to the byte from its seed, every fact stated as
//! often as its exposure says, one token per name, items split by subject with their exposure,
//! and bad options refused with what would work.

use ctxsteer::data::{read_jsonl, Variant};
use ctxsteer::model::Tokenizer;
use ctxsteer::organism::{self, parse_schedule, Fact, WorldOptions};
use predicates::prelude::*;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

fn small(seed: u64) -> WorldOptions {
    WorldOptions {
        subjects: 40,
        relations: 3,
        objects: 6,
        schedule: "0,1,3,pow2:4-8".into(),
        seed,
        ..Default::default()
    }
}

fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        out.insert(
            p.file_name().unwrap().to_string_lossy().into_owned(),
            std::fs::read(&p).unwrap(),
        );
    }
    out
}

#[test]
fn a_world_is_the_same_bytes_from_the_same_seed() {
    let (a, b, c) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    organism::build(&small(7), a.path()).unwrap();
    organism::build(&small(7), b.path()).unwrap();
    organism::build(&small(8), c.path()).unwrap();
    let (fa, fb, fc) = (files(a.path()), files(b.path()), files(c.path()));
    assert_eq!(
        fa.keys().collect::<Vec<_>>(),
        [
            "conflicts.jsonl",
            "corpus.txt",
            "facts.jsonl",
            "tokenizer.json",
            "tokenizer_config.json",
            "variants.jsonl",
            "world.json"
        ]
    );
    assert_eq!(fa, fb);
    assert_ne!(fa["corpus.txt"], fc["corpus.txt"]);
    assert_ne!(fa["facts.jsonl"], fc["facts.jsonl"]);
}

#[test]
fn facts_are_stated_as_often_as_their_exposure_and_names_are_single_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let w = organism::build(&small(1), dir.path()).unwrap();
    let facts: Vec<Fact> = std::fs::read_to_string(dir.path().join("facts.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!((facts.len(), w.facts), (120, 120));
    // The schedule's counts are spread evenly: 120 facts over 5 counts.
    let mut per: BTreeMap<u32, usize> = BTreeMap::new();
    for f in &facts {
        *per.entry(f.exposure).or_default() += 1;
    }
    assert_eq!(
        per,
        BTreeMap::from([(0, 24), (1, 24), (3, 24), (4, 24), (8, 24)])
    );
    let corpus = std::fs::read_to_string(dir.path().join("corpus.txt")).unwrap();
    let lines: Vec<&str> = corpus.lines().collect();
    assert_eq!(lines.len(), w.corpus_sentences);
    for f in &facts {
        let templates = &w.templates[&f.relation];
        let said = lines
            .iter()
            .filter(|l| {
                templates
                    .iter()
                    .any(|t| **l == t.replace("{s}", &f.subject).replace("{o}", &f.object))
            })
            .count();
        assert_eq!(said as u32, f.exposure, "{f:?}");
        // Every subject is named even when none of its facts is stated.
        assert!(lines
            .iter()
            .any(|l| l.split(' ').any(|w| w.trim_end_matches('.') == f.subject)));
    }
    // Reading episodes: a quarter as many as fact statements, about subjects of no fact,
    // their answer the object the context names.
    let stated: u32 = facts.iter().map(|f| f.exposure).sum();
    let episodes: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| l.matches(". ").count() == 1)
        .collect();
    assert_eq!(episodes.len(), (stated as f64 * 0.25).round() as usize);
    let subjects: BTreeSet<&str> = facts.iter().map(|f| f.subject.as_str()).collect();
    for e in &episodes {
        let (context, query) = e.split_once(". ").unwrap();
        let answer = query.trim_end_matches('.').rsplit(' ').next().unwrap();
        assert!(context.contains(answer), "{e}");
        assert!(
            !e.split(' ')
                .any(|w| subjects.contains(w.trim_end_matches('.'))),
            "{e}"
        );
    }
    let tok = Tokenizer::from_folder(dir.path()).unwrap();
    assert_eq!(tok.vocab_size(), w.vocabulary);
    assert_eq!(tok.eos_id, Some(0));
    let unk = tok.token_to_id("<unk>").unwrap();
    for f in &facts {
        for name in [&f.subject, &f.object] {
            let ids = tok.encode(name).unwrap();
            assert_eq!(ids.len(), 1, "{name} is one token");
            assert_ne!(ids[0], unk);
        }
    }
    let ids = tok.encode(lines[0]).unwrap();
    assert!(!ids.contains(&unk));
}

#[test]
fn items_are_split_by_subject_and_carry_their_exposure() {
    let dir = tempfile::tempdir().unwrap();
    organism::build(&small(2), dir.path()).unwrap();
    let (items, skipped) = read_jsonl(&dir.path().join("variants.jsonl"), false).unwrap();
    assert_eq!(skipped, 0);
    let mut split_of: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
    for it in &items {
        split_of
            .entry(&it.subject)
            .or_default()
            .insert(format!("{:?}", it.split.unwrap()));
        *kinds
            .entry(format!("{:?}", it.variant.unwrap()))
            .or_default() += 1;
        assert!(it.exposure.is_some(), "{}", it.id);
        match it.variant.unwrap() {
            Variant::Counterfactual => {
                assert_ne!(it.context_answer, it.prior_answer);
                assert!(
                    it.context.contains(&it.context_answer) && it.context.contains(&it.subject)
                );
            }
            Variant::Irrelevant => {
                assert!(
                    !it.context.contains(&it.subject) && !it.context.contains(&it.prior_answer)
                );
            }
            Variant::NoContext => assert!(it.context.is_empty()),
            _ => {}
        }
    }
    assert!(
        split_of.values().all(|s| s.len() == 1),
        "one split per subject"
    );
    let splits: BTreeSet<String> = split_of.values().flatten().cloned().collect();
    assert_eq!(splits.len(), 3, "train, dev and test: {splits:?}");
    assert_eq!(kinds["Counterfactual"], 120);
    assert_eq!(kinds["TrueContext"], 120);
    assert_eq!(kinds["NoContext"], 120);
    assert!(kinds["Irrelevant"] >= 240, "{kinds:?}");
    let (conflicts, _) = read_jsonl(&dir.path().join("conflicts.jsonl"), false).unwrap();
    assert_eq!(conflicts.len(), 120);
    assert!(conflicts
        .iter()
        .all(|c| c.variant == Some(Variant::Counterfactual)));
}

#[test]
fn bad_worlds_are_refused_with_what_would_work() {
    for (s, says) in [
        ("pow2:0-4", "1 ≤ A ≤ B"),
        ("1,two", "`two` is not a count"),
        ("zipf:x:10", "`x` is not a number"),
        ("zipf:1.0", "S:MAX"),
        ("", "is not a count"),
    ] {
        let e = parse_schedule(s).unwrap_err().to_string();
        assert!(e.contains(says) && e.contains("zipf:1.0:256"), "{s}: {e}");
    }
    assert_eq!(
        parse_schedule("0,pow2:1-8").unwrap(),
        organism::world::Schedule::Counts(vec![0, 1, 2, 4, 8])
    );
    let dir = tempfile::tempdir().unwrap();
    let err = |o: WorldOptions| organism::build(&o, dir.path()).unwrap_err().to_string();
    assert!(err(WorldOptions {
        relations: 0,
        ..small(0)
    })
    .contains("home, job, pet"));
    assert!(err(WorldOptions {
        relations: 7,
        ..small(0)
    })
    .contains("1 to 6"));
    assert!(err(WorldOptions {
        objects: 1,
        ..small(0)
    })
    .contains("at least 2"));
    assert!(err(WorldOptions {
        filler: 1.0,
        ..small(0)
    })
    .contains("[0, 0.95)"));
    assert!(
        std::fs::read_dir(dir.path()).unwrap().next().is_none(),
        "nothing written"
    );
    let e = organism::world::read(dir.path()).unwrap_err().to_string();
    assert!(e.contains("not a world folder"), "{e}");
}

#[test]
fn the_command_writes_a_world_and_names_a_bad_schedule() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("w");
    let run = |extra: &[&str]| {
        assert_cmd::Command::cargo_bin("ctxsteer")
            .unwrap()
            .args([
                "organism",
                "world",
                "--subjects",
                "20",
                "--relations",
                "2",
                "--out",
            ])
            .arg(&out)
            .args(extra)
            .assert()
    };
    run(&["--schedule", "pow2:1-x"])
        .failure()
        .stderr(predicates::str::contains("pow2:1-x").and(predicates::str::contains("1 ≤ A ≤ B")));
    run(&[])
        .success()
        .stdout(predicates::str::contains("40 facts (2 relations)"));
    let w = organism::world::read(&out).unwrap();
    assert_eq!((w.facts, w.options.subjects), (40, 20));
}

fn tiny_train(steps: usize, every: usize) -> organism::TrainOptions {
    organism::TrainOptions {
        layers: 2,
        d_model: 32,
        heads: 2,
        d_mlp: 64,
        steps,
        batch: 8,
        seq: 24,
        lr: 1e-2,
        warmup: 10,
        checkpoint_every: every,
        ..Default::default()
    }
}

fn tiny_world(dir: &Path) {
    let o = WorldOptions {
        subjects: 12,
        relations: 1,
        objects: 4,
        schedule: "24".into(),
        filler: 0.1,
        ..Default::default()
    };
    organism::build(&o, dir).unwrap();
}

/// A tiny model learns a tiny world: the loss falls, the saved folder loads through the
/// ordinary model path with the training logits, and it recalls facts it saw 24 times.
#[test]
fn an_organism_learns_its_world_and_loads_as_a_model() {
    let dir = tempfile::tempdir().unwrap();
    let (world, out) = (dir.path().join("w"), dir.path().join("m"));
    tiny_world(&world);
    let opts = tiny_train(800, 0);
    let state = organism::train(&world, &out, &opts, false, &mut |_| Ok(())).unwrap();
    let first: f64 = state.losses[..10].iter().sum::<f64>() / 10.0;
    let last: f64 = state.losses[790..].iter().sum::<f64>() / 10.0;
    assert!(last < 0.5 * first, "loss {first:.3} -> {last:.3}");
    let m = ctxsteer::Model::load(&out, ctxsteer::WeightsMode::F32).unwrap();
    assert_eq!(m.cfg().n_layers, 2);
    // The engine's logits are the trainer's.
    let ckpt = out.join("checkpoints/step-000800");
    let vocab = m.tokenizer.vocab_size();
    let (net, _, _) = organism::train::load_checkpoint(&ckpt, vocab).unwrap();
    let facts: Vec<Fact> = std::fs::read_to_string(world.join("facts.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let prompt = format!("{} lives in", facts[0].subject);
    let ids = m.prompt_ids(&prompt, false).unwrap();
    let engine = m.last_logits(&ids, &ctxsteer::Spec::new()).unwrap();
    let t = candle_core::Tensor::new(ids.as_slice(), &candle_core::Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let trained = net.forward(&t).unwrap();
    let n = ids.len();
    let trained: Vec<f32> = trained
        .get(0)
        .unwrap()
        .get(n - 1)
        .unwrap()
        .to_vec1()
        .unwrap();
    let worst = engine
        .iter()
        .zip(&trained)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(worst < 1e-3, "engine and trainer differ by {worst}");
    // Recall: the greedy next word is the fact's object for most subjects.
    let recalled = facts
        .iter()
        .filter(|f| {
            let ids = m
                .prompt_ids(&format!("{} lives in", f.subject), false)
                .unwrap();
            let l = m.last_logits(&ids, &ctxsteer::Spec::new()).unwrap();
            let best = (0..l.len()).max_by(|a, b| l[*a].total_cmp(&l[*b])).unwrap();
            m.tokenizer.decode(&[best as u32]).unwrap() == f.object
        })
        .count();
    assert!(recalled >= 9, "{recalled} of 12 facts recalled");
    // The learned edit trains on an organism unchanged; without a chat template it keeps to
    // the completion form.
    assert_cmd::Command::cargo_bin("ctxsteer")
        .unwrap()
        .args(["reft", "train", "--layers", "1", "--epochs", "1", "--model"])
        .arg(&out)
        .arg("--data")
        .arg(world.join("conflicts.jsonl"))
        .arg("--neutral")
        .arg(world.join("corpus.txt"))
        .arg("--out")
        .arg(dir.path().join("edit.safetensors"))
        .assert()
        .success()
        .stderr(predicates::str::contains("completion form only"));
}

/// Training 20 steps, then resuming for 20 more, gives the weights of 40 steps straight.
#[test]
fn resuming_from_a_checkpoint_gives_the_weights_of_a_straight_run() {
    let dir = tempfile::tempdir().unwrap();
    let world = dir.path().join("w");
    tiny_world(&world);
    let straight = dir.path().join("a");
    organism::train(&world, &straight, &tiny_train(40, 20), false, &mut |_| {
        Ok(())
    })
    .unwrap();
    let resumed = dir.path().join("b");
    // Stop after the first checkpoint (an error from the callback interrupts the run).
    let stop = organism::train(
        &world,
        &resumed,
        &tiny_train(40, 20),
        false,
        &mut |e| match e {
            organism::TrainEvent::Checkpoint(_) => Err(ctxsteer::Error::Invalid("stop".into())),
            _ => Ok(()),
        },
    );
    assert!(stop.is_err());
    assert!(resumed
        .join("checkpoints/step-000020/trainer.json")
        .exists());
    let state =
        organism::train(&world, &resumed, &tiny_train(40, 20), true, &mut |_| Ok(())).unwrap();
    assert_eq!(state.step, 40);
    let read = |p: &Path| std::fs::read(p.join("model.safetensors")).unwrap();
    assert_eq!(
        read(&straight),
        read(&resumed),
        "the same weights, bit for bit"
    );
    // Other options cannot resume that run.
    let e = organism::train(&world, &resumed, &tiny_train(60, 20), true, &mut |_| Ok(()))
        .unwrap_err()
        .to_string();
    assert!(e.contains("other options"), "{e}");
}

#[test]
fn shapes_that_make_no_model_are_refused() {
    let bad = |o: organism::TrainOptions, says: &str| {
        let e = o.check().unwrap_err().to_string();
        assert!(e.contains(says), "{e}");
    };
    bad(
        organism::TrainOptions {
            layers: 0,
            ..tiny_train(1, 0)
        },
        "--layers 0",
    );
    bad(
        organism::TrainOptions {
            d_model: 30,
            heads: 4,
            ..tiny_train(1, 0)
        },
        "not divisible by --heads 4",
    );
    bad(
        organism::TrainOptions {
            lr: f64::NAN,
            ..tiny_train(1, 0)
        },
        "--lr",
    );
    let dir = tempfile::tempdir().unwrap();
    let e = organism::train(
        dir.path(),
        &dir.path().join("m"),
        &tiny_train(1, 0),
        false,
        &mut |_| Ok(()),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("not a world folder"), "{e}");
}
