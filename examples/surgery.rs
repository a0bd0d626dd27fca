//! Channel surgery without training, timed: the part of `prunex run` that
//! `benches/compare` sets beside Torch-Pruning's graph build + step.
//!
//! `cargo run --release --example surgery -- MODEL C,H,W RATIO WEIGHTS OUT [REPEATS]`
//!
//! Loads WEIGHTS (safetensors) into zoo MODEL at input C,H,W, removes RATIO
//! of the channels of every coupled group (local L2 magnitude, mean over a
//! group's places — Torch-Pruning's `MagnitudeImportance(p=2)`; `fc`
//! ignored), writes OUT/model.yaml and OUT/weights.safetensors, and prints
//! one JSON line: the median seconds of coupling analysis + importance +
//! selection + surgery over REPEATS (default 5), and params/MACs before and
//! after.

use std::collections::BTreeMap;
use std::time::Instant;

use prunex::graph::{analyze, coupling};
use prunex::models::weights;
use prunex::models::zoo::{self, ZooOptions};
use prunex::prune::importance::{select_local, Selection};
use prunex::prune::surgery::remove_channels;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 5 {
        eprintln!("usage: surgery MODEL C,H,W RATIO WEIGHTS OUT [REPEATS]");
        std::process::exit(2);
    }
    let input: Vec<usize> = args[1].split(',').map(|d| d.parse().unwrap()).collect();
    let ratio: f64 = args[2].parse().unwrap();
    let repeats: usize = args.get(5).map_or(5, |r| r.parse().unwrap());
    let (shapes, _) = weights::read_shapes(std::path::Path::new(&args[3])).unwrap();
    let opts = ZooOptions {
        input: [input[0], input[1], input[2]],
        classes: shapes.get("fc.weight").map_or(1000, |s| s[0]),
    };
    let g = zoo::build(&args[0], opts).unwrap().expect("a zoo model");
    let (sd, _) = weights::load_for(std::path::Path::new(&args[3]), &g).unwrap();
    let fc = g.nodes.iter().position(|n| n.name == "fc");
    let mut times = Vec::new();
    let mut result = None;
    for _ in 0..repeats {
        let t = Instant::now();
        let c = coupling(&g).unwrap();
        let ratios: BTreeMap<usize, f64> = c
            .groups
            .iter()
            .filter(|gr| gr.frozen.is_none() && fc.is_none_or(|fc| !gr.producers.contains(&fc)))
            .map(|gr| (gr.id, ratio))
            .collect();
        let removal = select_local(&g, &c, &sd, &ratios, Selection::l2_magnitude(), None);
        let out = remove_channels(&g, &c, &removal, Some(&sd));
        times.push(t.elapsed().as_secs_f64());
        result = Some(out);
    }
    let (pruned, psd) = result.expect("at least one repeat");
    times.sort_by(f64::total_cmp);
    let before = analyze(&g, g.input).unwrap();
    let after = analyze(&pruned, pruned.input).unwrap();
    let out = std::path::Path::new(&args[4]);
    std::fs::create_dir_all(out).unwrap();
    std::fs::write(
        out.join("model.yaml"),
        prunex::models::yaml::to_yaml(&pruned),
    )
    .unwrap();
    std::fs::write(
        out.join("weights.safetensors"),
        weights::to_safetensors(&psd.expect("weights given")),
    )
    .unwrap();
    println!(
        "{}",
        serde_json::json!({
            "seconds": times[times.len() / 2],
            "params": [before.total_params, after.total_params],
            "macs": [before.total_macs, after.total_macs],
        })
    );
}
