//! How long `prunex check` takes on a ResNet-50 channel-pruning recipe:
//! parse, resolve, build the model graph, analyse coupling, plan. No
//! libtorch is involved. Run: `cargo bench --bench check`.

use std::path::Path;

use criterion::{criterion_group, criterion_main, Criterion};
use prunex::check::{check_path, Mode};
use prunex::syntax::MemLoader;

mod recipes;
use recipes::resnet50 as recipe;

fn bench(c: &mut Criterion) {
    for side in [224, 1024] {
        let loader = MemLoader::new().with("r.prune", recipe(side));
        let checked = check_path(Path::new("r.prune"), &loader, &[], Mode::Single);
        assert!(
            !checked.has_errors() && checked.plan.is_some(),
            "the benchmark recipe checks"
        );
        c.bench_function(&format!("check resnet50 recipe at {side}x{side}"), |b| {
            b.iter(|| check_path(Path::new("r.prune"), &loader, &[], Mode::Single))
        });
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
