//! A bounded, seeded fuzz run of the file parsers: valid inputs mutated at random (bytes
//! flipped, cut, repeated, inserted) must give an error or a value that passes the checks
//! its users rely on (and survives a write and a read back), never a panic. Each parser gets
//! a fixed number of cases, so the run is deterministic and takes seconds. Each test also
//! counts the cases that parsed, so a base input that no longer parses cannot pass unseen.

mod common;
use rand::{Rng, SeedableRng};
use std::path::Path;

const CASES: usize = 400;

/// `base` with 1-4 random edits.
fn mutate(rng: &mut rand::rngs::StdRng, base: &[u8]) -> Vec<u8> {
    let mut v = base.to_vec();
    for _ in 0..rng.random_range(1..=4) {
        if v.is_empty() {
            v.push(rng.random());
            continue;
        }
        let i = rng.random_range(0..v.len());
        match rng.random_range(0..5) {
            0 => v[i] = rng.random(),
            1 => v.truncate(i),
            2 => v.insert(i, rng.random()),
            3 => {
                let j = rng.random_range(i..v.len().min(i + 64));
                let chunk = v[i..=j].to_vec();
                v.splice(i..i, chunk);
            }
            _ => {
                let pool = b"{}[]\",:0-9eE.\n\\ ";
                v[i] = pool[rng.random_range(0..pool.len())];
            }
        }
    }
    v
}

/// What every item a reader returns must hold: the required fields filled (the context may
/// be empty), two different answers unless its variant states the true fact or has none,
/// and a distractor only on an irrelevant context.
fn check_item(it: &ctxsteer::data::Item) -> Result<(), String> {
    use ctxsteer::data::Variant;
    let required = [
        &it.id,
        &it.relation,
        &it.subject,
        &it.question,
        &it.prompt,
        &it.prior_answer,
        &it.context_answer,
    ];
    if required.iter().any(|f| f.trim().is_empty()) {
        return Err(format!("an empty required field in {it:?}"));
    }
    let same = it
        .prior_answer
        .trim()
        .eq_ignore_ascii_case(it.context_answer.trim());
    if same && !matches!(it.variant, Some(Variant::TrueContext | Variant::Neutral)) {
        return Err(format!("one answer twice in a conflict: {it:?}"));
    }
    if it.distractor.is_some() && it.variant != Some(Variant::Irrelevant) {
        return Err(format!("a distractor outside an irrelevant item: {it:?}"));
    }
    Ok(())
}

/// Items as JSON values, for comparing what was read with what was read back.
fn as_json<T: serde::Serialize>(v: &T) -> serde_json::Value {
    serde_json::to_value(v).unwrap()
}

/// Run `parse` on `CASES` mutations of `base` written to a file; it must not panic, and it
/// returns whether the case parsed. At least `min_ok` cases must parse, so the checks on
/// parsed values are exercised.
fn fuzz_checked(name: &str, base: &[u8], seed: u64, min_ok: usize, parse: impl Fn(&Path) -> bool) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut ok = 0;
    for case in 0..CASES {
        let bytes = mutate(&mut rng, base);
        std::fs::write(&path, &bytes).unwrap();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| parse(&path)));
        match r {
            Ok(parsed) => ok += parsed as usize,
            Err(_) => panic!(
                "{name}: case {case} panicked on {:?}",
                String::from_utf8_lossy(&bytes)
            ),
        }
    }
    assert!(ok >= min_ok, "{name}: only {ok} of {CASES} cases parsed");
}

#[test]
fn jsonl_items_parse_to_valid_items_or_errors() {
    let good =
        std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("counterfactual_data/dev.jsonl"))
            .unwrap();
    let head: Vec<u8> = good
        .split(|b| *b == b'\n')
        .take(3)
        .collect::<Vec<_>>()
        .join(&b'\n');
    let back = tempfile::tempdir().unwrap();
    fuzz_checked("items.jsonl", &head, 1, 20, |p| {
        let strict = ctxsteer::data::read_jsonl(p, false);
        let (lenient, skipped) = ctxsteer::data::read_jsonl(p, true).unwrap_or_default();
        for it in &lenient {
            check_item(it).unwrap();
        }
        let Ok((items, _)) = strict else {
            return false;
        };
        // A file read whole reads the same when bad lines may be skipped: none is.
        assert_eq!((as_json(&items), skipped), (as_json(&lenient), 0));
        let again = back.path().join("again.jsonl");
        ctxsteer::data::write_jsonl(&again, &items).unwrap();
        let (reread, _) = ctxsteer::data::read_jsonl(&again, false).unwrap();
        assert_eq!(as_json(&reread), as_json(&items));
        true
    });
}

#[test]
fn probe_files_parse_to_checked_probes_or_errors() {
    let good =
        std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("probes/conflict.json")).unwrap();
    let back = tempfile::tempdir().unwrap();
    let check = |p: &Path| {
        let Ok(pf) = ctxsteer::probe::ProbeFile::read(p) else {
            return false;
        };
        pf.check().unwrap();
        // `best` names a probe, and every score is a finite number.
        let best = pf.site(&ctxsteer::probe::SiteRef::Best).unwrap();
        let x = vec![1.0; best.mean.len()];
        assert!(best.score(&x).is_finite());
        let again = back.path().join("again.json");
        pf.write(&again).unwrap();
        let reread = ctxsteer::probe::ProbeFile::read(&again).unwrap();
        assert_eq!(as_json(&reread), as_json(&pf));
        true
    };
    // The first 20 KB keep the header fields; mutations cut, flip and repeat inside them
    // (cut off, they never parse).
    let text = String::from_utf8_lossy(&good[..good.len().min(20_000)]).into_owned();
    fuzz_checked("p.json", text.as_bytes(), 2, 0, check);
    fuzz_checked("whole.json", &good, 3, 5, check);
}

/// A spec for the tiny model (d_model 64, 4 heads of 16, 2 layers) that passes validation.
fn tiny_spec() -> String {
    let v: Vec<String> = (0..64)
        .map(|i| format!("{}", (i % 7) as f32 / 10.0))
        .collect();
    let v = v.join(",");
    format!(
        r#"{{"interventions": [
      {{"site": "blocks.1.hook_resid_post", "positions": "all",
       "action": {{"add": {{"vector": [{v}], "scale": 2.0}}}}}},
      {{"site": "blocks.0.attn.hook_z", "positions": [2, 3], "heads": [1], "rows": [0],
       "action": {{"scale": {{"factor": 0.5}}}}}},
      {{"site": "blocks.0.hook_mlp_out", "positions": "last", "action": "zero_ablate"}},
      {{"site": "blocks.1.hook_resid_mid", "positions": "last",
       "action": {{"clamp": {{"direction": [{v}], "value": 1.5}}}}}}]}}"#
    )
}

#[test]
fn spec_files_parse_to_specs_that_validate_and_run_or_errors() {
    let (_d, path) = common::tiny::temp();
    let m = ctxsteer::Model::load(&path, ctxsteer::WeightsMode::F32).unwrap();
    let ids = m.prompt_ids("Paris is a city", false).unwrap();
    let base = tiny_spec();
    let valid: ctxsteer::Spec = serde_json::from_str(&base).unwrap();
    m.validate(&valid).unwrap();
    let vocab = m.last_logits(&ids, &valid).unwrap().len();
    fuzz_checked("spec.json", base.as_bytes(), 4, 5, |p| {
        let Ok(spec) = ctxsteer::Spec::read(p) else {
            return false;
        };
        // What was read writes and reads back the same.
        let again: ctxsteer::Spec = serde_json::from_str(&spec.to_json().unwrap()).unwrap();
        assert_eq!(as_json(&again), as_json(&spec));
        // A spec the model accepts runs: logits for the whole vocabulary, or an error.
        if m.validate(&spec).is_ok() {
            if let Ok(l) = m.last_logits(&ids, &spec) {
                assert_eq!(l.len(), vocab);
            }
        }
        true
    });
}

#[test]
fn gguf_headers_load_to_models_that_run_or_errors() {
    let (_d, path) = common::tiny::temp();
    let good = std::fs::read(&path).unwrap();
    // Mutations in the header and metadata (the first 8 KB): counts, lengths, types, keys.
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("m.gguf");
    let mut loaded = 0;
    for case in 0..CASES / 2 {
        let mut bytes = good.clone();
        for _ in 0..rng.random_range(1..=3) {
            let i = rng.random_range(0..8192.min(bytes.len()));
            bytes[i] = rng.random();
        }
        std::fs::write(&p, &bytes).unwrap();
        let r = std::panic::catch_unwind(|| {
            let Ok(m) = ctxsteer::Model::load(&p, ctxsteer::WeightsMode::Quantized) else {
                return false;
            };
            // A model that loads has sizes that fit together, and runs: logits for its whole
            // vocabulary, or an error (weights damaged into NaN stop the run).
            let c = m.cfg();
            assert!(
                c.n_layers > 0 && c.n_heads > 0 && c.d_model % c.n_heads == 0,
                "{c:?}"
            );
            if let Ok(l) = m.last_logits(&[1, 2, 3], &ctxsteer::Spec::new()) {
                assert_eq!(l.len(), c.vocab_size, "case {case}");
            }
            true
        });
        loaded += r.unwrap_or_else(|_| panic!("gguf case {case} panicked")) as usize;
    }
    // Most mutations land in values the loader does not check (the tokens' text, a
    // norm's epsilon): the checks above run.
    assert!(loaded >= 5, "only {loaded} mutated files loaded");
}

/// A key length past the end of the file is named as a damaged header, before candle would
/// try to allocate it.
#[test]
fn a_huge_length_in_a_gguf_header_is_an_error() {
    let (_d, path) = common::tiny::temp();
    let mut bytes = std::fs::read(&path).unwrap();
    // magic, version, tensor count and metadata count take 24 bytes; the first key's length
    // follows.
    bytes[24..32].copy_from_slice(&(1u64 << 40).to_le_bytes());
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bad.gguf");
    std::fs::write(&p, &bytes).unwrap();
    let e = ctxsteer::Model::load(&p, ctxsteer::WeightsMode::Quantized)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("damaged GGUF header") && e.contains("run past the end"),
        "{e}"
    );
}
