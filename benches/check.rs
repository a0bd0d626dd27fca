//! How long `prunex check` takes on a ResNet-50 channel-pruning recipe:
//! parse, resolve, build the model graph, analyse coupling, plan. No
//! libtorch is involved. Run: `cargo bench --bench check`.

use std::path::Path;

use criterion::{criterion_group, criterion_main, Criterion};
use prunex::check::{check_path, Mode};
use prunex::syntax::MemLoader;

fn recipe(side: usize) -> String {
    format!(
        r#"recipe "resnet50-channels"
model resnet50 {{ input [3, {side}, {side}] classes 1000 }}
data image_folder "data/imagenet"
prune channels by l2 {{
    schedule gradual 0.0 -> 0.5 every 2 epochs until epoch 20 curve cubic
    scope global max 0.7
    round_to 8
    layer "conv1" ratio <= 0.2
    layer "layer*.*.conv1" ratio 0.5
    layer "layer*.*.conv2" ratio 0.6
    ignore "fc"
}}
finetune {{ epochs 30 optimizer sgd lr 0.01 momentum 0.9 lr_schedule cosine }}
"#
    )
}

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
