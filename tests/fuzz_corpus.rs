//! Replays the fuzzer's corpus (and every fixture and recipe) through the
//! fuzz target's body on stable Rust, so CI catches a regression on any input
//! the fuzzer ever kept, without needing nightly or cargo-fuzz.

use std::path::Path;

fn replay(dir: &Path) -> usize {
    let mut n = 0;
    for entry in walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(Result::ok)
    {
        if !entry.file_type().is_file() {
            continue;
        }
        let bytes = std::fs::read(entry.path()).unwrap();
        if let Ok(text) = std::str::from_utf8(&bytes) {
            prunex::fuzz::exercise(text);
            n += 1;
        }
    }
    n
}

#[test]
fn fuzz_corpus_replays_without_panics() {
    let n = replay(Path::new("fuzz/corpus/parse_check"));
    assert!(
        n >= 30,
        "the corpus should hold the seeds at least, found {n} inputs"
    );
}

#[test]
fn fixtures_and_recipes_replay_without_panics() {
    assert!(replay(Path::new("tests/fixtures")) > 0);
    assert!(replay(Path::new("recipes")) > 0);
}

/// A structure-aware target on its kept corpus, where one was kept, and on
/// inputs drawn from a fixed seed, so stable CI exercises it too
/// (`PRUNEX_STRUCTURED_CASES=50000` for a longer search).
fn replay_structured(corpus: &str, exercise: fn(&[u8])) {
    let kept = Path::new(corpus);
    if kept.is_dir() {
        for entry in walkdir::WalkDir::new(kept)
            .into_iter()
            .filter_map(Result::ok)
        {
            if entry.file_type().is_file() {
                exercise(&std::fs::read(entry.path()).unwrap());
            }
        }
    }
    let cases: usize = std::env::var("PRUNEX_STRUCTURED_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000);
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..cases {
        let len = 1 + (state % 48) as usize;
        let input: Vec<u8> = (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 24) as u8
            })
            .collect();
        exercise(&input);
    }
}

/// `fuzz/fuzz_targets/model_weights.rs`: model descriptions and weights
/// headers.
#[test]
fn model_and_weights_inputs_replay_without_panics() {
    replay_structured(
        "fuzz/corpus/model_weights",
        prunex::fuzz::exercise_structured,
    );
}

/// `fuzz/fuzz_targets/onnx.rs`: damaged ONNX files.
#[test]
fn onnx_inputs_replay_without_panics() {
    replay_structured("fuzz/corpus/onnx", prunex::fuzz::exercise_onnx);
}
