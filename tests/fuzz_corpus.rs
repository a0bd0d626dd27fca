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
