//! Lists that name a thing twice (layers, sites, positions) give what naming it once gives: a
//! repeat is merged, never applied twice. A seeded property test over random lists, and the
//! cases that steered or wrote a site twice before.

mod common;
use ctxsteer::{Positions, Site};

/// A small seeded generator (SplitMix64), so the cases are the same on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e3779b97f4a7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d049bb133111eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Random comma lists of layers and ranges over `n` layers, often overlapping.
fn layer_list(r: &mut Rng, n: usize) -> String {
    let k = 1 + r.below(5) as usize;
    (0..k)
        .map(|_| {
            let a = r.below(n as u64) as usize;
            match r.below(2) {
                0 => a.to_string(),
                _ => format!("{a}-{}", a + r.below((n - a) as u64) as usize),
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// The layers a list names, each once, in first-named order: what the parser must give.
fn expected_layers(list: &str) -> Vec<usize> {
    let mut out = vec![];
    for part in list.split(',') {
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (a.parse().unwrap(), b.parse().unwrap()),
            None => (part.parse().unwrap(), part.parse().unwrap()),
        };
        for l in a..=b {
            if !out.contains(&l) {
                out.push(l);
            }
        }
    }
    out
}

#[test]
fn layer_site_and_position_lists_with_repeats_equal_those_without() {
    let n = 30;
    let mut r = Rng(7);
    for _ in 0..500 {
        let list = layer_list(&mut r, n);
        let want = expected_layers(&list);
        assert_eq!(
            ctxsteer::steer::parse_layers(&list, n).unwrap(),
            want,
            "{list}"
        );
        // The same list as a site pattern, and the same again after it.
        let pattern =
            format!("blocks.{list}.hook_resid_post").replace(',', ".hook_resid_post,blocks.");
        let twice = format!("{pattern},{pattern}");
        let sites = Site::parse_pattern(&twice, n).unwrap();
        let want_sites: Vec<Site> = want.iter().map(|l| Site::resid_post(*l)).collect();
        assert_eq!(sites, want_sites, "{twice}");
        // Positions: a list with repeats selects what the list without them selects, and reads
        // back from a spec's JSON the same way.
        let pos: Vec<String> = list
            .split(',')
            .map(|p| p.split('-').next().unwrap().to_string())
            .collect();
        let p: Positions = format!("{},{}", pos.join(","), pos.join(","))
            .parse()
            .unwrap();
        let once: Positions = pos.join(",").parse().unwrap();
        assert_eq!(p, once);
        let json = format!("[{},{}]", pos.join(","), pos.join(","));
        let from_json: Positions = serde_json::from_str(&json).unwrap();
        assert_eq!(from_json, once);
    }
}

/// `export-cvec --layers 10,10` writes `direction.10` once, and `reft train --layers 1,1`
/// trains one edit (it panicked after training before).
#[test]
fn a_layer_named_twice_is_one_layer_for_export_and_training() {
    let (dir, path) = common::tiny::temp();
    let m = ctxsteer::Model::load(&path, ctxsteer::WeightsMode::F32).unwrap();
    let layers = ctxsteer::steer::parse_layers("1,1", m.cfg().n_layers).unwrap();
    assert_eq!(layers, [1]);
    let item = ctxsteer::data::Item {
        id: "a".into(),
        relation: "r".into(),
        subject: "the cat".into(),
        question: "where is the cat?".into(),
        prompt: "the cat sat on the".into(),
        context: "the cat sat on the mat.".into(),
        prior_answer: "hat".into(),
        context_answer: "mat".into(),
        prior_aliases: vec![],
        context_aliases: vec![],
        split: None,
        variant: None,
        distractor: None,
        true_context: None,
        prefix: String::new(),
        exposure: None,
    };
    let opts = ctxsteer::reft::TrainOptions {
        layers,
        rank: 2,
        epochs: 1,
        lr: 1e-2,
        batch: 1,
        forms: vec![ctxsteer::data::Form::Completion],
        keep_weight: 1.0,
        seed: 0,
        irrelevant: 0,
    };
    let reft = ctxsteer::reft::train(&m, &[item], &[], &opts, &mut |_| {}).unwrap();
    assert_eq!(reft.edits.len(), 1);
    let out = dir.path().join("e.safetensors");
    reft.save(&out).unwrap();
    assert_eq!(ctxsteer::reft::Reft::load(&out, &m).unwrap().edits.len(), 1);
}
