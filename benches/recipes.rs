//! Recipes the benchmarks share (`benches/compare` reads the same file).

/// Channel pruning of resnet50 at `side`×`side`: gradual cubic schedule,
/// global scope with a cap, `round_to 8`, layer rules and an ignore list.
#[allow(dead_code)]
pub fn resnet50(side: usize) -> String {
    include_str!("resnet50-channels.prune.in")
        .replace("{side}", &side.to_string())
        .replace("{lr}", "0.01")
}
