//! A bounded, seeded fuzz run of the file parsers: valid inputs mutated at random (bytes
//! flipped, cut, repeated, inserted) must give an error or a value, never a panic. Each
//! parser gets a fixed number of cases, so the run is deterministic and takes seconds.

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

/// Run `parse` on `CASES` mutations of `base` written to a file; it must not panic.
fn fuzz(name: &str, base: &[u8], seed: u64, parse: impl Fn(&Path)) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    for case in 0..CASES {
        let bytes = mutate(&mut rng, base);
        std::fs::write(&path, &bytes).unwrap();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| parse(&path)));
        assert!(
            r.is_ok(),
            "{name}: case {case} panicked on {:?}",
            String::from_utf8_lossy(&bytes)
        );
    }
}

#[test]
fn jsonl_items_never_panic() {
    let good =
        std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("counterfactual_data/dev.jsonl"))
            .unwrap();
    let head: Vec<u8> = good
        .split(|b| *b == b'\n')
        .take(3)
        .collect::<Vec<_>>()
        .join(&b'\n');
    fuzz("items.jsonl", &head, 1, |p| {
        let _ = ctxsteer::data::read_jsonl(p, false);
        let _ = ctxsteer::data::read_jsonl(p, true);
    });
}

#[test]
fn probe_files_never_panic() {
    let good =
        std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("probes/conflict.json")).unwrap();
    // The first 20 KB keep the header fields; mutations cut, flip and repeat inside them.
    let text = String::from_utf8_lossy(&good[..good.len().min(20_000)]).into_owned();
    fuzz("p.json", text.as_bytes(), 2, |p| {
        let _ = ctxsteer::probe::ProbeFile::read(p);
    });
    fuzz("whole.json", &good, 3, |p| {
        let _ = ctxsteer::probe::ProbeFile::read(p);
    });
}

#[test]
fn spec_files_never_panic() {
    let spec = br#"{"interventions": [
      {"site": "blocks.1.hook_resid_post", "positions": "all",
       "action": {"add": {"vector": [0.1, -0.3, 2.0], "scale": 2.0}}},
      {"site": "blocks.0.attn.hook_z", "positions": [4, 5], "heads": [1], "rows": [0],
       "action": {"scale": {"factor": 0.0}}},
      {"site": "blocks.1.hook_resid_post", "positions": "last",
       "action": {"low_rank": {"r": [[1, 0]], "w": [[0.5, 0]], "b": [0.25]}}}]}"#;
    fuzz("spec.json", spec, 4, |p| {
        let _ = ctxsteer::Spec::read(p);
    });
}

#[test]
fn gguf_headers_never_panic() {
    let (_d, path) = common::tiny::temp();
    let good = std::fs::read(&path).unwrap();
    // Mutations in the header and metadata (the first 8 KB): counts, lengths, types, keys.
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("m.gguf");
    for case in 0..CASES / 2 {
        let mut bytes = good.clone();
        for _ in 0..rng.random_range(1..=3) {
            let i = rng.random_range(0..8192.min(bytes.len()));
            bytes[i] = rng.random();
        }
        std::fs::write(&p, &bytes).unwrap();
        let r = std::panic::catch_unwind(|| {
            let _ = ctxsteer::Model::load(&p, ctxsteer::WeightsMode::Quantized);
        });
        assert!(r.is_ok(), "gguf case {case} panicked");
    }
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
