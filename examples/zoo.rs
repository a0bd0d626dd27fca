//! One torchvision model exported to ONNX, through prunex: what
//! `benches/compare --sections zoo` sets beside Torch-Pruning for every
//! torchvision classifier.
//!
//! `cargo run --release --example zoo -- MODEL.onnx IO.safetensors RATIO`
//!
//! Imports MODEL.onnx (timed), runs it on IO's `x` with the executor and
//! compares with IO's `y` (torchvision's eval output), removes RATIO of the
//! channels of every coupled group the model's output does not freeze
//! (local L2 magnitude, Torch-Pruning's `MagnitudeImportance(p=2)`; timed),
//! runs the pruned model, and prints one JSON line. A step that fails
//! prints its reason in `error` and stops there.

#[path = "../src/exec/convert.rs"]
#[allow(dead_code)]
mod convert;

#[path = "../src/exec/model.rs"]
#[allow(dead_code)]
mod model;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use prunex::graph::{analyze, coupling};
use prunex::models::{onnx, weights};
use prunex::prune::importance::{select_local, Selection};
use prunex::prune::surgery::remove_channels;
use prunex::syntax::FsLoader;
use serde_json::{json, Value};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() != 3 {
        eprintln!("usage: zoo MODEL.onnx IO.safetensors RATIO");
        std::process::exit(2);
    }
    let mut out = BTreeMap::new();
    if let Err(e) = measure(&args, &mut out) {
        out.insert("error", json!(e));
    }
    println!("{}", serde_json::to_string(&out).expect("JSON"));
}

fn tensor(t: &prunex::tensor::Tensor) -> tch::Tensor {
    let shape: Vec<i64> = t.shape.iter().map(|&d| d as i64).collect();
    tch::Tensor::from_slice(t.as_f32().expect("floats")).reshape(&shape)
}

fn forward(
    g: &prunex::graph::Graph,
    sd: &weights::StateDict,
    x: &tch::Tensor,
) -> Result<tch::Tensor, String> {
    let mut m = model::TorchModel::new(g, tch::Device::Cpu);
    m.load(sd).map_err(|e| e.to_string())?;
    tch::no_grad(|| m.forward(x, false)).map_err(|e| e.to_string())
}

fn measure(args: &[String], out: &mut BTreeMap<&'static str, Value>) -> Result<(), String> {
    tch::set_num_threads(2);
    let ratio: f64 = args[2].parse().map_err(|_| "RATIO is a number")?;
    let t = Instant::now();
    let (imported, sd) =
        onnx::import_weights(Path::new(&args[0]), &FsLoader).map_err(|e| format!("import: {e}"))?;
    out.insert("import_s", json!(t.elapsed().as_secs_f64()));
    out.insert("notes", json!(imported.notes));
    let g = imported.graph;
    let before = analyze(&g, g.input).map_err(|e| e.to_string())?;
    out.insert("params", json!(before.total_params));
    let io = weights::read_safetensors(&std::fs::read(&args[1]).map_err(|e| e.to_string())?)?;
    let x = tensor(&io["x"]);
    let y = forward(&g, &sd, &x).map_err(|e| format!("forward: {e}"))?;
    let diff = (&y - tensor(&io["y"])).abs().max().double_value(&[]);
    out.insert("forward_diff", json!(diff));
    let t = Instant::now();
    let c = coupling(&g).map_err(|e| format!("coupling: {e}"))?;
    let ratios = c
        .groups
        .iter()
        .filter(|gr| gr.frozen.is_none())
        .map(|gr| (gr.id, ratio))
        .collect();
    let removal = select_local(&g, &c, &sd, &ratios, Selection::l2_magnitude(), None);
    let (pruned, psd) = remove_channels(&g, &c, &removal, Some(&sd));
    out.insert("prune_s", json!(t.elapsed().as_secs_f64()));
    let after = analyze(&pruned, pruned.input).map_err(|e| format!("pruned graph: {e}"))?;
    out.insert("params_after", json!(after.total_params));
    let psd = psd.expect("weights given");
    let py = forward(&pruned, &psd, &x).map_err(|e| format!("pruned forward: {e}"))?;
    out.insert("pruned_output", json!(py.size()));
    Ok(())
}
