//! ONNX import against torchvision: small torchvision classifiers exported
//! by torch 2.13's dynamo exporter and by the TorchScript one import with
//! torchvision's parameter count and `state_dict` names and shapes, and give
//! torchvision's eval-mode outputs (1e-4) on the imported weights. An export
//! that folded BatchNorm still imports and computes the same function, and
//! says what was folded.
//!
//! References are generated at test time by `tests/parity/onnx_reference.py`
//! (`scripts/setup --reference` installs onnx and onnxscript) and kept under
//! `target/tmp/onnx-references`.

mod common;

#[path = "common/io.rs"]
mod reference_io;

#[path = "../src/exec/convert.rs"]
mod convert;

#[path = "../src/exec/model.rs"]
#[allow(dead_code)]
mod model;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use prunex::graph::analyze;
use prunex::models::onnx;
use prunex::models::weights;
use prunex::syntax::FsLoader;
use serde_json::json;

/// (id, torchvision model, input, classes): one of each family of
/// operators (residual; depthwise and ReLU6; squeeze-excitation with
/// Hardswish and Hardsigmoid; SiLU and stochastic depth; grouped
/// convolutions with squeeze-excitation; LayerNorm over channels, linear
/// layers on channels-last maps and layer scales).
const CASES: &[(&str, &str, [usize; 3], usize)] = &[
    ("resnet18", "resnet18", [3, 64, 64], 10),
    ("mobilenet_v2", "mobilenet_v2", [3, 64, 64], 10),
    ("mobilenet_v3_small", "mobilenet_v3_small", [3, 64, 64], 10),
    ("efficientnet_b0", "efficientnet_b0", [3, 64, 64], 10),
    ("regnet_y_400mf", "regnet_y_400mf", [3, 64, 64], 10),
    ("convnext_tiny", "convnext_tiny", [3, 64, 64], 10),
    ("shufflenet_v2_x0_5", "shufflenet_v2_x0_5", [3, 64, 64], 10),
];

/// Models Torch-Pruning 1.6.1 fails to prune (ShuffleNet: a division by
/// zero in its channel-group arithmetic); prunex prunes what a channel
/// shuffle does not touch.
const TP_FAILS: &[&str] = &["shufflenet_v2_x0_5"];

const EXPORTS: &[&str] = &["dynamo", "torchscript"];

fn references() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let cases: Vec<_> = CASES
            .iter()
            .map(|(id, m, input, classes)| {
                json!({"id": id, "model": m, "input": input, "classes": classes})
            })
            .collect();
        common::generated(
            "onnx-references",
            "onnx_reference.py",
            &serde_json::to_string(&cases).unwrap(),
        )
    })
}

fn info(id: &str) -> serde_json::Value {
    let p = references().join(format!("{id}.json"));
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

/// The largest difference between the imported model's output and
/// torchvision's.
fn forward_diff(g: &prunex::graph::Graph, sd: &weights::StateDict, id: &str) -> f64 {
    let mut m = model::TorchModel::new(g, tch::Device::Cpu);
    m.load(sd).unwrap();
    let (x, y) = reference_io::io(references(), id);
    let out = tch::no_grad(|| m.forward(&x, false)).unwrap();
    (&out - &y).abs().max().double_value(&[])
}

#[test]
fn torchvision_exports_import_with_torchvisions_names_counts_and_outputs() {
    for (id, _, input, _) in CASES {
        let expected = info(id);
        let keys: BTreeMap<String, Vec<usize>> =
            serde_json::from_value(expected["keys"].clone()).unwrap();
        for export in EXPORTS {
            let path = references().join(format!("{id}.{export}.onnx"));
            let (imported, sd) = onnx::import_weights(&path, &FsLoader)
                .unwrap_or_else(|e| panic!("{id} ({export}): {e}"));
            let g = &imported.graph;
            assert_eq!(g.input, *input, "{id} ({export})");
            let got: BTreeMap<String, Vec<usize>> = g.state_keys().into_iter().collect();
            assert_eq!(got, keys, "{id} ({export}): state_dict keys and shapes");
            let a = analyze(g, g.input).unwrap();
            assert_eq!(
                a.total_params,
                expected["params"].as_u64().unwrap(),
                "{id} ({export}): parameters"
            );
            // MACs as Torch-Pruning's counter counts them (activations and
            // pools that are modules count), plus the LayerNorm2d modules
            // that counter skips.
            let skipped = expected["macs_skipped"].as_u64().unwrap();
            assert_eq!(
                a.total_macs,
                expected["macs"].as_u64().unwrap() + skipped,
                "{id} ({export}): MACs"
            );
            weights::check(&sd, g, &path.display().to_string()).unwrap();
            let diff = forward_diff(g, &sd, id);
            assert!(diff < 1e-4, "{id} ({export}): output differs by {diff}");
        }
    }
}

/// The TorchScript exporter's defaults fold BatchNorm into the convolutions
/// and leave their initializers anonymous: the model still imports, names
/// its layers by module path, computes the same function, and says so.
#[test]
fn a_folded_export_imports_and_says_what_was_lost() {
    let id = "resnet18";
    let path = references().join(format!("{id}.folded.onnx"));
    let (imported, sd) = onnx::import_weights(&path, &FsLoader).unwrap();
    let g = &imported.graph;
    assert!(
        g.nodes
            .iter()
            .all(|n| !matches!(n.op, prunex::graph::Op::BatchNorm2d { .. })),
        "folded"
    );
    assert!(g.nodes.iter().any(|n| n.name == "layer1.0.conv1"));
    assert!(
        imported.notes.iter().any(|n| n.contains("no PyTorch name")),
        "{:?}",
        imported.notes
    );
    let diff = forward_diff(g, &sd, id);
    assert!(diff < 1e-4, "output differs by {diff}");
}

/// torchvision's `name` with prunex's `weights` loaded by
/// `python/prunex_load`, run on the case's input `x`.
fn python_helper(
    name: &str,
    classes: usize,
    weights: &weights::StateDict,
    id: &str,
) -> tch::Tensor {
    let dir = tempfile::tempdir().unwrap();
    let w = dir.path().join("weights.safetensors");
    std::fs::write(&w, weights::to_safetensors(weights)).unwrap();
    let out = dir.path().join("y.safetensors");
    let classes = classes.to_string();
    common::python(
        "helper_check.py",
        &[
            name.as_ref(),
            classes.as_ref(),
            w.as_os_str(),
            references()
                .join(format!("{id}.io.safetensors"))
                .as_os_str(),
            out.as_os_str(),
        ],
    );
    reference_io::output_y(&out)
}

/// `model` run by onnxruntime on the case's input `x`.
fn onnxruntime(model: &[u8], id: &str) -> tch::Tensor {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.onnx");
    std::fs::write(&path, model).unwrap();
    let out = dir.path().join("y.safetensors");
    common::python(
        "onnx_run.py",
        &[
            path.as_os_str(),
            references()
                .join(format!("{id}.io.safetensors"))
                .as_os_str(),
            out.as_os_str(),
        ],
    );
    reference_io::output_y(&out)
}

/// A model whose weights pass what one ONNX file holds is written with its
/// weights in a data file beside it (here with the limit at 0 bytes, so
/// every tensor of 1 KiB or more goes there): onnxruntime runs it, and
/// prunex imports it back to the same weights.
#[test]
fn large_weights_go_to_an_external_data_file() {
    let id = "resnet18";
    let path = references().join(format!("{id}.dynamo.onnx"));
    let (imported, sd) = onnx::import_weights(&path, &FsLoader).unwrap();
    let g = imported.graph;
    let files = onnx::to_onnx_files(&g, &sd, "model.onnx.data", 0).unwrap();
    let data = files.data.expect("the weights went to the data file");
    assert!(
        files.model.len() < 100_000,
        "{} bytes inline",
        files.model.len()
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("model.onnx"), &files.model).unwrap();
    std::fs::write(dir.path().join("model.onnx.data"), &data).unwrap();
    let (back, back_sd) = onnx::import_weights(&dir.path().join("model.onnx"), &FsLoader).unwrap();
    assert_eq!(back.graph.state_keys(), g.state_keys());
    for (k, v) in back_sd
        .iter()
        .filter(|(k, _)| !k.ends_with("num_batches_tracked"))
    {
        assert_eq!(Some(v), sd.get(k), "`{k}`");
    }
    let out = dir.path().join("y.safetensors");
    common::python(
        "onnx_run.py",
        &[
            dir.path().join("model.onnx").as_os_str(),
            references()
                .join(format!("{id}.io.safetensors"))
                .as_os_str(),
            out.as_os_str(),
        ],
    );
    let mut m = model::TorchModel::new(&g, tch::Device::Cpu);
    m.load(&sd).unwrap();
    let (x, _) = reference_io::io(references(), id);
    let ours = tch::no_grad(|| m.forward(&x, false)).unwrap();
    let diff = (&ours - &reference_io::output_y(&out))
        .abs()
        .max()
        .double_value(&[]);
    assert!(diff < 1e-4, "onnxruntime differs by {diff}");
    // Inline below the limit.
    let inline = onnx::to_onnx_files(&g, &sd, "model.onnx.data", onnx::MAX_BYTES).unwrap();
    assert!(inline.data.is_none());
    assert_eq!(inline.model, onnx::to_onnx(&g, &sd).unwrap());
}

/// The dynamo export of case `id` imported (graph, weights), and the same
/// with half of every prunable channel group removed by local L2
/// magnitude, as Torch-Pruning's `MagnitudeImportance(p=2)` ranks.
fn imported_and_half_pruned(
    id: &str,
) -> (
    prunex::graph::Graph,
    weights::StateDict,
    prunex::graph::Graph,
    weights::StateDict,
) {
    use prunex::prune::importance::{select_local, Selection};
    use prunex::prune::surgery::remove_channels;
    let path = references().join(format!("{id}.dynamo.onnx"));
    let (imported, sd) = onnx::import_weights(&path, &FsLoader).unwrap();
    let g = imported.graph;
    let c = prunex::graph::coupling(&g).unwrap();
    let ratios = c
        .groups
        .iter()
        .filter(|gr| gr.frozen.is_none())
        .map(|gr| (gr.id, 0.5))
        .collect();
    let removal = select_local(&g, &c, &sd, &ratios, Selection::l2_magnitude(), None);
    let (pruned, psd) = remove_channels(&g, &c, &removal, Some(&sd));
    (g, sd, pruned, psd.unwrap())
}

/// Half of every coupled group of an imported torchvision model removed by
/// prunex keeps the channels Torch-Pruning 1.6.1 keeps on torchvision's own
/// module (the same weights, L2 magnitude, local): the same tensors, value
/// for value — through residual, depthwise, squeeze-excitation and grouped
/// couplings (grouped convolutions lose the same positions in every
/// convolution group, by the importance averaged over the groups).
#[test]
fn pruning_an_imported_model_keeps_what_torch_pruning_keeps() {
    for (id, _, _, _) in CASES {
        let (_, _, _, psd) = imported_and_half_pruned(id);
        if TP_FAILS.contains(id) {
            let why = references().join(format!("{id}.tp.error"));
            assert!(why.exists(), "{id}: Torch-Pruning pruned it after all");
            continue;
        }
        let (tp, _) = weights::read(&references().join(format!("{id}.tp.safetensors"))).unwrap();
        let counted = |k: &&String| !k.ends_with("num_batches_tracked");
        let ours: Vec<&String> = psd.keys().filter(counted).collect();
        let theirs: Vec<&String> = tp.keys().filter(counted).collect();
        assert_eq!(ours, theirs, "{id}: keys");
        for (k, v) in psd.iter().filter(|(k, _)| counted(k)) {
            assert_eq!(
                v.shape, tp[k].shape,
                "{id}: `{k}` has another shape than Torch-Pruning's"
            );
            assert_eq!(
                Some(v),
                tp.get(k),
                "{id}: `{k}`: prunex kept other channels than Torch-Pruning"
            );
        }
    }
}

/// What prunex exports as `model.onnx` gives, in onnxruntime, the outputs
/// prunex computes (1e-4): every imported torchvision model, and each
/// again with half of every prunable channel group removed (residual,
/// depthwise and squeeze-excitation couplings cut physically).
#[test]
fn exported_onnx_gives_prunex_outputs_in_onnxruntime() {
    for (id, tv_name, _, classes) in CASES {
        let (g, sd, pruned, psd) = imported_and_half_pruned(id);
        assert!(
            analyze(&pruned, pruned.input).unwrap().total_params
                < analyze(&g, g.input).unwrap().total_params,
            "{id}: pruning removed nothing"
        );
        for (what, graph, weights) in [("dense", &g, &sd), ("pruned", &pruned, &psd)] {
            let bytes = onnx::to_onnx(graph, weights).unwrap();
            let mut m = model::TorchModel::new(graph, tch::Device::Cpu);
            m.load(weights).unwrap();
            let (x, _) = reference_io::io(references(), id);
            let ours = tch::no_grad(|| m.forward(&x, false)).unwrap();
            let theirs = onnxruntime(&bytes, id);
            let diff = (&ours - &theirs).abs().max().double_value(&[]);
            assert!(diff < 1e-4, "{id} ({what}): onnxruntime differs by {diff}");
            // The Python helper loads the weights into torchvision's own
            // class (resized, strict) and computes the same.
            let helper = python_helper(tv_name, *classes, weights, id);
            let diff = (&ours - &helper).abs().max().double_value(&[]);
            assert!(
                diff < 1e-4,
                "{id} ({what}): the helper's module differs by {diff}"
            );
            // And it reads back into the same graph and weights.
            let dir = tempfile::tempdir().unwrap();
            let file = dir.path().join("m.onnx");
            std::fs::write(&file, &bytes).unwrap();
            let (back, back_sd) = onnx::import_weights(&file, &FsLoader).unwrap();
            assert_eq!(
                back.graph.state_keys(),
                graph.state_keys(),
                "{id} ({what}): round trip"
            );
            for (k, v) in back_sd
                .iter()
                .filter(|(k, _)| !k.ends_with("num_batches_tracked"))
            {
                assert_eq!(Some(v), weights.get(k), "{id} ({what}): `{k}`");
            }
        }
    }
}
