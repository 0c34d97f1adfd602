//! Labels and activation capture on the tiny model: shapes, values, resumption, summaries.

mod common;
use common::tiny;
use ctxsteer::capture::{self, CaptureMeta, CaptureOptions, PosMode};
use ctxsteer::data::{Form, Item};
use ctxsteer::label::{self, Answer, Label};
use ctxsteer::model::{Batch, LogitsAt};
use ctxsteer::{Model, Positions, Site, Spec, WeightsMode};
use ndarray::s;

fn item(i: usize) -> Item {
    let subjects = ["the cat", "a red hat", "the sea", "old rope", "the tea pot"];
    Item {
        id: format!("t{i}"),
        relation: "toy".into(),
        subject: subjects[i % 5].into(),
        question: format!("where is {}?", subjects[i % 5]),
        prompt: format!("{} sat on the", subjects[i % 5]),
        context: format!("{} sat on the mat.", subjects[i % 5]),
        prior_answer: "hat".into(),
        context_answer: "mat".into(),
        prior_aliases: vec![],
        context_aliases: vec![],
        split: Some(ctxsteer::data::Split::Train),
        variant: None,
        distractor: None,
        true_context: None,
        prefix: String::new(),
        exposure: None,
    }
}

fn setup() -> (tempfile::TempDir, Model, Vec<Item>) {
    let (dir, path) = tiny::temp();
    let m = Model::load(&path, WeightsMode::F32).unwrap();
    (dir, m, (0..5).map(item).collect())
}

fn opts(sites: Vec<Site>, positions: PosMode) -> CaptureOptions {
    CaptureOptions {
        sites,
        positions,
        form: Form::Completion,
        with_context: true,
        batch_size: 3,
        shard_size: 2,
    }
}

fn meta(m: &Model, o: &CaptureOptions, n: usize) -> CaptureMeta {
    CaptureMeta {
        model: m.name(),
        model_sha256: String::new(),
        weights: "f32".into(),
        data_hash: String::new(),
        data: "toy".into(),
        n_items: n,
        sites: o.sites.iter().map(|s| s.to_string()).collect(),
        positions: o.positions,
        form: o.form,
        with_context: o.with_context,
        shard_size: o.shard_size,
        steering: None,
        labels: None,
        complete: false,
    }
}

/// A capture without labels or steering.
fn plain(
    m: &Model,
    items: &[Item],
    o: &CaptureOptions,
    meta: CaptureMeta,
    out: &std::path::Path,
    progress: &mut dyn FnMut(usize),
) -> ctxsteer::Result<CaptureMeta> {
    capture::capture(m, items, None, o, &Spec::new(), meta, out, progress)
}

#[test]
fn capture_writes_one_matrix_per_site_with_the_model_s_values() {
    let (dir, m, items) = setup();
    let sites = vec![
        Site::resid_post(0),
        Site::new(ctxsteer::SiteKind::MlpPost, 1),
    ];
    let o = opts(sites.clone(), PosMode::Last);
    let out = dir.path().join("acts");
    let mut seen = 0;
    plain(&m, &items, &o, meta(&m, &o, 5), &out, &mut |n| seen += n).unwrap();
    assert_eq!(seen, 5);
    let acts = capture::load(&out, m.cfg().n_layers).unwrap();
    assert_eq!(acts.index.len(), 5);
    assert_eq!(acts.sites[0].1.dim(), (5, 64));
    assert_eq!(acts.sites[1].1.dim(), (5, 128));
    for (k, it) in items.iter().enumerate() {
        assert_eq!(acts.index[k].id, it.id);
        let ids = m
            .tokenizer
            .encode(&it.query(Form::Completion, true))
            .unwrap();
        let (_, caps) = m
            .run(
                &Batch::single(&ids),
                &Spec::capture(&sites, Positions::Last),
                LogitsAt::Last,
            )
            .unwrap();
        for (s, (site, arr)) in acts.sites.iter().enumerate() {
            assert_eq!(*site, sites[s]);
            let want = caps.at(*site, 0, ids.len() - 1).unwrap();
            let got: Vec<f32> = arr.row(k).to_vec();
            assert!(common::max_abs_diff(&got, want) < 1e-4, "{site} item {k}");
        }
    }
}

/// Add 100 to shard 0's activations at `site`, to tell a reused shard from one captured again.
fn mark_shard0(out: &std::path::Path, site: Site) {
    let shard0 = out.join("shard-00000.safetensors");
    let site = site.to_string();
    let values = candle_core::safetensors::load(&shard0, &candle_core::Device::Cpu).unwrap();
    let marked = values[&site].affine(1.0, 100.0).unwrap();
    let map = std::collections::HashMap::from([(site, marked)]);
    candle_core::safetensors::save(&map, &shard0).unwrap();
}

/// A capture an earlier version left unfinished (each finished shard's index rows in a
/// `shard-K.jsonl` of its own, no journal) goes on from its finished shards.
#[test]
fn a_capture_stopped_by_an_earlier_version_resumes() {
    let (dir, m, items) = setup();
    let o = opts(vec![Site::resid_post(1)], PosMode::Last);
    let out = dir.path().join("acts");
    let run = |progress: &mut dyn FnMut(usize)| {
        plain(&m, &items, &o, meta(&m, &o, 5), &out, progress).unwrap()
    };
    run(&mut |_| {});
    let done = capture::load(&out, 2).unwrap();
    // Rewrite the folder as the earlier version left it after shards 0 and 1.
    for k in 0..2 {
        let rows: Vec<_> = done
            .index
            .iter()
            .filter(|r| r.shard == k)
            .cloned()
            .collect();
        ctxsteer::data::write_jsonl(&out.join(format!("shard-{k:05}.jsonl")), &rows).unwrap();
    }
    for f in ["shards.jsonl", "shard-00002.safetensors", "index.jsonl"] {
        std::fs::remove_file(out.join(f)).unwrap();
    }
    std::fs::write(
        out.join("meta.json"),
        serde_json::to_string(&meta(&m, &o, 5)).unwrap(),
    )
    .unwrap();
    mark_shard0(&out, Site::resid_post(1));
    run(&mut |_| {});
    let again = capture::load(&out, 2).unwrap();
    // A finished old shard is reused (its marked values kept), not captured again.
    let want = done.sites[0].1.clone();
    let (a, w) = (&again.sites[0].1, &want);
    assert_eq!(
        a.slice(s![..2, ..]),
        w.slice(s![..2, ..]).mapv(|v| v + 100.0)
    );
    assert_eq!(a.slice(s![2.., ..]), w.slice(s![2.., ..]));
    let rows = |a: &capture::Acts| serde_json::to_string(&a.index).unwrap();
    assert_eq!(rows(&again), rows(&done));
    // The old shards' rows are now in the journal, with the new shard's.
    let journal = std::fs::read_to_string(out.join("shards.jsonl")).unwrap();
    assert_eq!(journal.lines().count(), 3);
}

#[test]
fn an_interrupted_capture_resumes_to_the_same_result() {
    let (dir, m, items) = setup();
    let o = opts(vec![Site::resid_post(1)], PosMode::Mean);
    let out = dir.path().join("acts");
    plain(&m, &items, &o, meta(&m, &o, 5), &out, &mut |_| {}).unwrap();
    let full = capture::load(&out, 2).unwrap().sites[0].1.clone();
    // Simulate a stop during shard 1, after shard 0 was recorded: the journal keeps only shard
    // 0's line, shard 2's activations, the index and the finished flag are gone.
    let journal = out.join("shards.jsonl");
    let first = std::fs::read_to_string(&journal).unwrap();
    assert_eq!(first.lines().count(), 3, "one record per shard");
    let first = first.lines().next().unwrap().to_string() + "\n";
    std::fs::write(&journal, &first).unwrap();
    for f in ["shard-00002.safetensors", "index.jsonl"] {
        std::fs::remove_file(out.join(f)).unwrap();
    }
    mark_shard0(&out, Site::resid_post(1));
    std::fs::write(
        out.join("meta.json"),
        serde_json::to_string(&meta(&m, &o, 5)).unwrap(),
    )
    .unwrap();
    assert!(
        capture::load(&out, 2).is_err(),
        "an unfinished capture must not load"
    );
    let mut redone = 0;
    plain(&m, &items, &o, meta(&m, &o, 5), &out, &mut |n| redone += n).unwrap();
    assert_eq!(redone, 5, "progress counts skipped shards too");
    // Shard 0 (items 0 and 1) was reused as it was; shards 1 and 2 were captured again.
    let resumed = capture::load(&out, 2).unwrap().sites[0].1.clone();
    assert_eq!(
        resumed.slice(s![..2, ..]),
        full.slice(s![..2, ..]).mapv(|v| v + 100.0)
    );
    assert_eq!(resumed.slice(s![2.., ..]), full.slice(s![2.., ..]));
    // An index row for every item, in order, and the journal holds every shard once more.
    let ids: Vec<String> = capture::load(&out, 2)
        .unwrap()
        .index
        .iter()
        .map(|r| r.id.clone())
        .collect();
    assert_eq!(ids, ["t0", "t1", "t2", "t3", "t4"]);
    assert_eq!(
        std::fs::read_to_string(&journal).unwrap().lines().count(),
        3
    );
    // Other settings in the same folder are refused instead of mixed in.
    let other = opts(vec![Site::resid_post(0)], PosMode::Mean);
    let e = plain(&m, &items, &other, meta(&m, &other, 5), &out, &mut |_| {})
        .unwrap_err()
        .to_string();
    assert!(e.contains("differs in its sites"), "{e}");
    // So is a changed data file (same path and count, other content), and another model.
    let built = |items: &[Item]| {
        let mut mt = capture::CaptureMeta::new(&m, "toy".into(), items, &o, None, None).unwrap();
        mt.complete = false;
        mt
    };
    let fresh = dir.path().join("acts2");
    plain(&m, &items, &o, built(&items), &fresh, &mut |_| {}).unwrap();
    let mut changed = items.clone();
    changed[2].context = "the sea is made of tea.".into();
    let e = plain(&m, &changed, &o, built(&changed), &fresh, &mut |_| {})
        .unwrap_err()
        .to_string();
    assert!(e.contains("differs in its data content"), "{e}");
    let mut other_model = built(&items);
    other_model.model_sha256 = "0".repeat(64);
    let e = plain(&m, &items, &o, other_model, &fresh, &mut |_| {})
        .unwrap_err()
        .to_string();
    assert!(e.contains("differs in its model"), "{e}");
    // An index with a line more, or fewer, than the shards' rows is refused, not misread.
    let index = std::fs::read_to_string(fresh.join("index.jsonl")).unwrap();
    let first = index.lines().next().unwrap().to_string();
    for broken in [
        format!("{index}{first}\n"),
        index.lines().skip(1).map(|l| format!("{l}\n")).collect(),
    ] {
        std::fs::write(fresh.join("index.jsonl"), broken).unwrap();
        let e = capture::load(&fresh, 2).err().unwrap().to_string();
        assert!(e.contains("must agree"), "{e}");
    }
    // So is rerunning the finished capture with labels added: the index would not carry them.
    let mut with_labels = meta(&m, &o, 5);
    with_labels.labels = Some("labels.jsonl".into());
    let e = plain(&m, &items, &o, with_labels, &out, &mut |_| {})
        .unwrap_err()
        .to_string();
    assert!(e.contains("differs in its labels"), "{e}");
}

#[test]
fn subject_last_picks_the_subject_s_final_token() {
    let (_d, m, _) = setup();
    let text = "a red hat sat on the mat. a red hat sat on the";
    let p = capture::subject_last_token(&m, text, "a red hat")
        .unwrap()
        .unwrap();
    let offs = m.tokenizer.offsets(text).unwrap();
    // The last mention starts at byte 26 and ends at byte 35 ("...hat").
    assert_eq!(&text[offs[p].0..offs[p].1].trim(), &"t");
    assert!(offs[p].1 == 35, "{:?}", offs[p]);
    assert_eq!(
        capture::subject_last_token(&m, text, "a blue hat").unwrap(),
        None
    );
    // A model whose prompts begin with BOS: the index is into the prompt's ids, one further.
    let mut m = m;
    m.tokenizer.add_bos = true;
    m.tokenizer.bos_id = Some(1);
    let ids = m.tokenizer.encode_prompt(text).unwrap();
    assert_eq!(ids.len(), offs.len() + 1);
    let q = capture::subject_last_token(&m, text, "a red hat")
        .unwrap()
        .unwrap();
    assert_eq!(q, p + 1);
    assert_eq!(ids[q], m.tokenizer.encode(text).unwrap()[p]);
}

#[test]
fn labels_have_both_runs_and_a_consistent_summary() {
    let (_d, m, items) = setup();
    let mut o = label::LabelOptions::new(Form::Completion);
    o.batch_size = 2;
    let labels = label::label_items(&m, &items, &o, &Spec::new(), &mut |_| Ok(())).unwrap();
    assert_eq!(labels.len(), 5);
    for (l, it) in labels.iter().zip(&items) {
        assert_eq!(l.id, it.id);
        assert!(l.closed.logp_prior < 0.0 && l.context.logp_context < 0.0);
        // Log-probs from the batched path equal a single-row teacher-forced computation.
        let ids = m
            .tokenizer
            .encode(&it.query(Form::Completion, true))
            .unwrap();
        let ans = label::answer_ids(&m, Form::Completion, &it.context_answer).unwrap();
        let full: Vec<u32> = ids.iter().chain(&ans).copied().collect();
        let (lg, _) = m
            .run(&Batch::single(&full), &Spec::new(), LogitsAt::All)
            .unwrap();
        let lp = ctxsteer::model::llama::log_softmax(&lg)
            .unwrap()
            .squeeze(0)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        let want: f32 = ans
            .iter()
            .enumerate()
            .map(|(j, t)| lp[ids.len() - 1 + j][*t as usize])
            .sum();
        assert!(
            (l.context.logp_context - want).abs() < 1e-3,
            "{} vs {want}",
            l.context.logp_context
        );
    }
    let (all, per) = label::summarize(&labels);
    assert_eq!(all.n, 5);
    assert_eq!(all.follows_context + all.follows_prior + all.neither, 5);
    assert_eq!(per["toy"].n, 5);
}

#[test]
fn judge_and_summary_arithmetic() {
    let it = Item {
        subject: "South Africa".into(),
        prior_answer: "Africa".into(),
        context_answer: "Asia".into(),
        context_aliases: vec!["Asian continent".into()],
        ..item(0)
    };
    assert_eq!(label::judge(&it, " Asia, not Africa."), Answer::Context);
    assert_eq!(label::judge(&it, " Africa. Some say Asia"), Answer::Prior);
    assert_eq!(
        label::judge(&it, " South Africa is big"),
        Answer::Neither,
        "the subject is not an answer"
    );
    assert_eq!(
        label::judge(&it, " Eurasia"),
        Answer::Neither,
        "whole words only"
    );
    // Whole answers: a context answer inside the prior's name is no mention of its own, and
    // the other way round; alone, it counts.
    let bard = Item {
        subject: "Hamlet".into(),
        prior_answer: "William Shakespeare".into(),
        context_answer: "William".into(),
        context_aliases: vec![],
        ..item(0)
    };
    assert_eq!(label::judge(&bard, " William Shakespeare."), Answer::Prior);
    assert_eq!(label::judge(&bard, " William, a poet"), Answer::Context);
    assert_eq!(
        label::judge(&bard, " William Shakespeare, or William"),
        Answer::Prior
    );
    let swapped = Item {
        prior_answer: "William".into(),
        context_answer: "William Shakespeare".into(),
        ..bard
    };
    assert_eq!(
        label::judge(&swapped, " William Shakespeare."),
        Answer::Context
    );
    let mk = |label: Label, known: bool| label::ItemLabel {
        id: "x".into(),
        relation: "r".into(),
        subject: "s".into(),
        split: None,
        form: Form::Completion,
        closed: label::Run {
            logp_prior: -1.0,
            logp_context: -2.0,
            tf_winner: Answer::Prior,
            greedy: String::new(),
            greedy_answer: Answer::Prior,
        },
        context: label::Run {
            logp_prior: -1.0,
            logp_context: -2.0,
            tf_winner: Answer::Prior,
            greedy: String::new(),
            greedy_answer: Answer::Prior,
        },
        known,
        label,
    };
    let ls = vec![
        mk(Label::FollowsPrior, true),
        mk(Label::FollowsPrior, true),
        mk(Label::FollowsContext, true),
        mk(Label::Neither, false),
    ];
    let s = label::Summary::of(&ls);
    assert_eq!(
        (s.n, s.known, s.follows_prior, s.follows_context, s.neither),
        (4, 3, 2, 1, 1)
    );
    assert!((s.memorization_ratio - 2.0 / 3.0).abs() < 1e-9);
    assert!((s.adherence - 0.25).abs() < 1e-9);
    assert!((s.adherence_known - 1.0 / 3.0).abs() < 1e-9);
}
