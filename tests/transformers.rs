//! Transformers against PyTorch and Torch-Pruning: a ViT pruned by heads
//! and by width computes in onnxruntime (its `model.onnx`) and in
//! torchvision's own class (loaded by `python/prunex_load`, strict) what it
//! computes in prunex; on torchvision's `vit_b_16`, the embedding and MLP
//! widths prunex keeps are the ones Torch-Pruning 1.6.1 keeps, and heads
//! and width together give its parameter count.
//!
//! (Forward parity of the dense `vit_b_16` and `vit_mini` with torchvision,
//! and their parameters and MACs against Torch-Pruning's counter, are in
//! `tests/parity.rs` with the other zoo models.)
//!
//! References are generated at test time by `tests/parity/vit_reference.py`
//! and kept under `target/tmp/vit-references`.

mod common;

#[path = "common/io.rs"]
mod reference_io;

#[path = "../src/exec/convert.rs"]
mod convert;

#[path = "../src/exec/model.rs"]
#[allow(dead_code)]
mod model;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use prunex::graph::{analyze, coupling, Graph, GroupKind, Op};
use prunex::models::onnx;
use prunex::models::weights::{self, StateDict, Tensor};
use prunex::models::zoo::{self, ZooOptions};
use prunex::prune::importance::{select_local, Selection};
use prunex::prune::surgery::{remove_channels, Removal};

fn references() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| common::generated("vit-references", "vit_reference.py", "[]"))
}

fn zoo_model(name: &str, input: [usize; 3], classes: usize) -> Graph {
    zoo::build(name, ZooOptions { input, classes })
        .unwrap()
        .unwrap()
}

fn load(id: &str, g: &Graph) -> StateDict {
    weights::load_for(&references().join(format!("{id}.safetensors")), g)
        .unwrap()
        .0
}

/// Removes `ratio` of every prunable group of `kind` (local L2 magnitude,
/// Torch-Pruning's `MagnitudeImportance(p=2)`); the removal too.
fn prune(g: &Graph, sd: &StateDict, kind: GroupKind, ratio: f64) -> (Graph, StateDict, Removal) {
    let c = coupling(g).unwrap();
    let ratios = c
        .groups
        .iter()
        .filter(|gr| gr.kind == kind && gr.frozen.is_none())
        .map(|gr| (gr.id, ratio))
        .collect();
    let removal = select_local(g, &c, sd, &ratios, Selection::l2_magnitude(), None);
    let (pruned, psd) = remove_channels(g, &c, &removal, Some(sd));
    (pruned, psd.unwrap(), removal)
}

/// Half the heads of every attention, then half of every width group.
fn half_heads_then_widths(g: &Graph, sd: &StateDict) -> (Graph, StateDict) {
    let (heads, heads_sd, _) = prune(g, sd, GroupKind::Heads, 0.5);
    let (both, both_sd, _) = prune(&heads, &heads_sd, GroupKind::Channels, 0.5);
    (both, both_sd)
}

fn forward(g: &Graph, sd: &StateDict, x: &tch::Tensor) -> tch::Tensor {
    let mut m = model::TorchModel::new(g, tch::Device::Cpu);
    m.load(sd).unwrap();
    tch::no_grad(|| m.forward(x, false)).unwrap()
}

/// `model` run by onnxruntime on case `id`'s input.
fn onnxruntime(model: &[u8], id: &str) -> tch::Tensor {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.onnx");
    std::fs::write(&path, model).unwrap();
    let out = dir.path().join("y.safetensors");
    let io = references().join(format!("{id}.io.safetensors"));
    common::python(
        "onnx_run.py",
        &[path.as_os_str(), io.as_os_str(), out.as_os_str()],
    );
    reference_io::output_y(&out)
}

/// torchvision's class for `name` with `weights` loaded by the helper, run
/// on case `id`'s input.
fn python_helper(name: &str, classes: usize, weights: &StateDict, id: &str) -> tch::Tensor {
    let dir = tempfile::tempdir().unwrap();
    let w = dir.path().join("weights.safetensors");
    std::fs::write(&w, weights::to_safetensors(weights)).unwrap();
    let out = dir.path().join("y.safetensors");
    let classes = classes.to_string();
    let io = references().join(format!("{id}.io.safetensors"));
    common::python(
        "helper_check.py",
        &[
            name.as_ref(),
            classes.as_ref(),
            w.as_os_str(),
            io.as_os_str(),
            out.as_os_str(),
        ],
    );
    reference_io::output_y(&out)
}

fn max_diff(a: &tch::Tensor, b: &tch::Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

fn attention(g: &Graph) -> Vec<(usize, usize, usize)> {
    g.nodes
        .iter()
        .filter_map(|n| match n.op {
            Op::MultiheadAttention {
                embed,
                heads,
                head_dim,
                ..
            } => Some((embed, heads, head_dim)),
            _ => None,
        })
        .collect()
}

/// `vit_mini` with half its heads removed (the attention then narrower
/// than the tokens), and with half its heads and then half its embedding
/// and MLP widths removed: onnxruntime runs each `model.onnx` to prunex's
/// outputs, and the helper loads each into torchvision's
/// `VisionTransformer` (strict) with the same outputs.
#[test]
fn a_vit_pruned_by_heads_and_width_runs_in_onnxruntime_and_torchvision() {
    let id = "vit_mini";
    let g = zoo_model(id, [1, 28, 28], 10);
    let sd = load(id, &g);
    let (x, y) = reference_io::io(references(), id);
    assert!(max_diff(&forward(&g, &sd, &x), &y) < 1e-4, "dense");
    let (heads, heads_sd, _) = prune(&g, &sd, GroupKind::Heads, 0.5);
    assert_eq!(attention(&heads), vec![(64, 2, 16); 4]);
    let (both, both_sd, _) = prune(&heads, &heads_sd, GroupKind::Channels, 0.5);
    assert_eq!(attention(&both), vec![(32, 2, 16); 4]);
    for (what, pg, psd) in [
        ("heads", &heads, &heads_sd),
        ("heads and width", &both, &both_sd),
    ] {
        weights::check(psd, pg, "pruned").unwrap();
        let ours = forward(pg, psd, &x);
        assert!(
            max_diff(&ours, &y) > 1e-3,
            "{what}: pruning changed nothing"
        );
        let theirs = onnxruntime(&onnx::to_onnx(pg, psd).unwrap(), id);
        let diff = max_diff(&ours, &theirs);
        assert!(diff < 1e-4, "{what}: onnxruntime differs by {diff}");
        let helper = python_helper(id, 10, psd, id);
        let diff = max_diff(&ours, &helper);
        assert!(diff < 1e-4, "{what}: the helper's module differs by {diff}");
    }
}

/// A pruned head is gone from the attention: the pruned model computes
/// what the original computes with that head's query, key and value rows
/// and output-projection columns zeroed.
#[test]
fn removing_a_head_equals_silencing_it() {
    let id = "vit_mini";
    let g = zoo_model(id, [1, 28, 28], 10);
    let sd = load(id, &g);
    let (x, _) = reference_io::io(references(), id);
    let (pg, psd, removal) = prune(&g, &sd, GroupKind::Heads, 0.25);
    let c = coupling(&g).unwrap();
    let mut silenced = sd.clone();
    for (&gid, heads) in &removal {
        let grp = &c.groups[gid];
        assert_eq!(grp.kind, GroupKind::Heads);
        let node = &g.nodes[grp.producers[0]];
        let Op::MultiheadAttention {
            heads: h, head_dim, ..
        } = node.op
        else {
            panic!("a head group's producer is an attention")
        };
        let a = h * head_dim;
        for &head in heads {
            let cols: BTreeSet<usize> = (head * head_dim..(head + 1) * head_dim).collect();
            let zero_rows = |t: &mut Tensor, rows: &BTreeSet<usize>| {
                let row: usize = t.shape[1..].iter().product();
                if let weights::TensorData::F32(v) = &mut t.data {
                    for &r in rows {
                        v[r * row..(r + 1) * row].fill(0.0);
                    }
                }
            };
            let rows: BTreeSet<usize> = (0..3)
                .flat_map(|s| cols.iter().map(move |&j| s * a + j))
                .collect();
            zero_rows(
                silenced.get_mut(&node.key("in_proj_weight")).unwrap(),
                &rows,
            );
            zero_rows(silenced.get_mut(&node.key("in_proj_bias")).unwrap(), &rows);
            let w = silenced.get_mut(&node.key("out_proj.weight")).unwrap();
            let width = w.shape[1];
            if let weights::TensorData::F32(v) = &mut w.data {
                for (k, x) in v.iter_mut().enumerate() {
                    if cols.contains(&(k % width)) {
                        *x = 0.0;
                    }
                }
            }
        }
    }
    let diff = max_diff(&forward(&pg, &psd, &x), &forward(&g, &silenced, &x));
    assert!(diff < 1e-5, "differs by {diff}");
}

/// The rows `i`, `E + i` and `2E + i` for each kept `i`: the query, key and
/// value rows Torch-Pruning keeps with the embedding channels.
fn gather_rows(t: &Tensor, blocks: usize, kept: &[usize]) -> Tensor {
    let row: usize = t.shape[1..].iter().product();
    let e = t.shape[0] / blocks;
    let v = t.as_f32().unwrap();
    let mut out = Vec::new();
    for b in 0..blocks {
        for &i in kept {
            let r = b * e + i;
            out.extend_from_slice(&v[r * row..(r + 1) * row]);
        }
    }
    let mut shape = t.shape.clone();
    shape[0] = blocks * kept.len();
    Tensor::f32(shape, out)
}

/// The columns `kept` of a matrix.
fn gather_cols(t: &Tensor, kept: &[usize]) -> Tensor {
    let cols = t.shape[1];
    let v = t.as_f32().unwrap();
    let out = v
        .chunks_exact(cols)
        .flat_map(|r| kept.iter().map(|&c| r[c]))
        .collect();
    Tensor::f32(vec![t.shape[0], kept.len()], out)
}

/// Torch-Pruning's default setting on `vit_b_16` (L2 magnitude, local 50 %,
/// `heads.head` ignored) keeps an embedding width of 384 and MLP widths of
/// 1536; prunex's `prune channels` at 50 % keeps the same channels, shown
/// by identical tensors outside the attention and, inside it, by the
/// input-projection columns and output-projection rows. Torch-Pruning also
/// ties each attention's query, key and value rows to the embedding
/// channel of the same index, so 12 heads narrow to 32 features each;
/// prunex prunes heads as a unit of their own instead, and half the heads
/// and half the width give Torch-Pruning's parameter count exactly
/// (22,050,664) and its MACs but for the softmax of 6 heads instead of 12.
#[test]
fn vit_b_16_keeps_the_widths_torch_pruning_keeps() {
    let id = "vit_b_16";
    let g = zoo_model(id, [3, 224, 224], 1000);
    let sd = load(id, &g);
    let tp_sd = weights::read(&references().join("vit_b_16.tp.safetensors"))
        .unwrap()
        .0;
    let tp: serde_json::Value =
        serde_json::from_slice(&std::fs::read(references().join("vit_b_16.tp.json")).unwrap())
            .unwrap();
    let dense = analyze(&g, g.input).unwrap();
    assert_eq!(dense.total_params, tp["params_before"].as_u64().unwrap());
    assert_eq!(dense.total_macs, tp["macs_before"].as_u64().unwrap());

    let (width, width_sd, removal) = prune(&g, &sd, GroupKind::Channels, 0.5);
    let c = coupling(&g).unwrap();
    let stream = c.group_of[&1]; // conv_proj's group: the residual stream
    let gone: BTreeSet<usize> = removal[&stream].iter().copied().collect();
    let kept: Vec<usize> = (0..768).filter(|i| !gone.contains(i)).collect();
    assert_eq!(kept.len(), 384);
    for (k, t) in &tp_sd {
        let ours = &width_sd[k];
        if k.ends_with("in_proj_weight") || k.ends_with("in_proj_bias") {
            // Torch-Pruning keeps rows i, E + i, 2E + i with channel i.
            assert_eq!(&gather_rows(ours, 3, &kept), t, "`{k}`");
        } else if k.ends_with("out_proj.weight") {
            assert_eq!(&gather_cols(ours, &kept), t, "`{k}`");
        } else {
            assert_eq!(
                ours, t,
                "`{k}`: prunex kept other channels than Torch-Pruning"
            );
        }
    }
    assert!(attention(&width).iter().all(|&a| a == (384, 12, 64)));

    let (both, _) = half_heads_then_widths(&g, &sd);
    assert!(attention(&both).iter().all(|&a| a == (384, 6, 64)));
    let a = analyze(&both, both.input).unwrap();
    assert_eq!(a.total_params, tp["params"].as_u64().unwrap());
    assert_eq!(a.total_params, 22_050_664);
    // Per layer, the softmax and the two attention products of 197 tokens:
    // Torch-Pruning's 12 heads × 32 features against prunex's 6 × 64.
    let t = 197u64;
    let heads_macs = |h: u64, d: u64| h * (2 * t * t * d + t * t);
    let softmax_gap = 12 * (heads_macs(12, 32) - heads_macs(6, 64));
    assert_eq!(a.total_macs + softmax_gap, tp["macs"].as_u64().unwrap());
    assert_eq!(a.total_macs, 4_613_728_240);
}

/// The pruned `vit_b_16` (half the heads, half the widths) loads into
/// torchvision's `vit_b_16` through the helper, strict, and computes what
/// prunex computes.
#[test]
fn a_pruned_vit_b_16_loads_back_into_torchvision() {
    let id = "vit_b_16";
    let g = zoo_model(id, [3, 224, 224], 1000);
    let sd = load(id, &g);
    let (x, _) = reference_io::io(references(), id);
    let (both, both_sd) = half_heads_then_widths(&g, &sd);
    let ours = forward(&both, &both_sd, &x);
    let helper = python_helper(id, 1000, &both_sd, id);
    let diff = max_diff(&ours, &helper);
    assert!(diff < 1e-4, "the helper's module differs by {diff}");
}

/// Wanda's masks at 50 % on `vit_mini` (calibrated on the reference batch)
/// equal a PyTorch reference's: the executor's recorded input norms of
/// every linear layer, convolution and attention projection (the output
/// projection's input measured inside the attention), |W|·‖X‖ scores, and
/// each output row keeping its highest half.
#[test]
fn wanda_masks_equal_a_pytorch_reference() {
    use prunex::prune::mask;
    let id = "vit_mini";
    let g = zoo_model(id, [1, 28, 28], 10);
    let sd = load(id, &g);
    let (x, _) = reference_io::io(references(), id);
    let mut m = model::TorchModel::new(&g, tch::Device::Cpu);
    m.load(&sd).unwrap();
    m.record = Some(Default::default());
    let _ = tch::no_grad(|| m.forward(&x, false)).unwrap();
    let acts: mask::Activations = m
        .record
        .take()
        .unwrap()
        .into_iter()
        .map(|(k, s)| {
            let v = Vec::<f64>::try_from(s.sqrt().to_kind(tch::Kind::Double)).unwrap();
            (k, v)
        })
        .collect();
    let keys: Vec<String> = g
        .weight_layers()
        .into_iter()
        .flat_map(|(_, m)| m.into_iter().map(|(k, _)| k))
        .collect();
    assert_eq!(
        keys.len(),
        4 * 4 + 2,
        "two projections and two MLP layers per block, the patch convolution and the head"
    );
    // Every weight matrix's input was measured, and nothing else.
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(acts.keys().cloned().collect::<Vec<_>>(), sorted);
    let scored = mask::wanda_scores(&sd, &keys, Some(&acts));
    let targets = keys.iter().map(|k| (k.clone(), 0.5)).collect();
    let ours = mask::local_rows(&scored, &targets);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("masks.safetensors");
    common::python(
        "wanda_reference.py",
        &[
            references().join("vit_mini.safetensors").as_os_str(),
            references().join("vit_mini.io.safetensors").as_os_str(),
            "0.5".as_ref(),
            out.as_os_str(),
        ],
    );
    let theirs = weights::read_safetensors(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(theirs.len(), keys.len());
    for k in &keys {
        let want: Vec<bool> = theirs[k]
            .as_f32()
            .unwrap()
            .iter()
            .map(|&v| v > 0.5)
            .collect();
        assert_eq!(ours[k], want, "`{k}`");
    }
    // And not what magnitude alone keeps.
    let magnitude = mask::local_rows(&sd, &targets);
    assert!(
        keys.iter().any(|k| magnitude[k] != ours[k]),
        "Wanda chose what magnitude chooses"
    );
}

/// `vit_mini` exported by both of torch 2.13's exporters imports as the
/// zoo's `vit_mini`: the same `state_dict` keys, shapes and values (the
/// TorchScript exporter's transposed projections and shared initializers
/// included), parameters and MACs, and torchvision's outputs. prunex's own
/// `model.onnx` of a head- and width-pruned ViT reads back to its graph and
/// weights.
#[test]
fn onnx_exports_of_a_vit_import_from_both_exporters() {
    use prunex::syntax::FsLoader;
    let id = "vit_mini";
    let g = zoo_model(id, [1, 28, 28], 10);
    let sd = load(id, &g);
    let (x, y) = reference_io::io(references(), id);
    let dense = analyze(&g, g.input).unwrap();
    let mut want = g.state_keys();
    want.sort();
    for export in ["dynamo", "torchscript"] {
        let path = references().join(format!("{id}.{export}.onnx"));
        let (imported, isd) = onnx::import_weights(&path, &FsLoader).unwrap();
        let ig = imported.graph;
        let mut keys = ig.state_keys();
        keys.sort();
        assert_eq!(keys, want, "{export}: state_dict keys and shapes");
        for (k, t) in &sd {
            assert_eq!(isd.get(k), Some(t), "{export}: `{k}`");
        }
        let a = analyze(&ig, ig.input).unwrap();
        assert_eq!(
            (a.total_params, a.total_macs),
            (dense.total_params, dense.total_macs),
            "{export}"
        );
        let diff = max_diff(&forward(&ig, &isd, &x), &y);
        assert!(diff < 1e-4, "{export}: differs from torchvision by {diff}");
    }
    let (both, both_sd) = half_heads_then_widths(&g, &sd);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("m.onnx");
    std::fs::write(&file, onnx::to_onnx(&both, &both_sd).unwrap()).unwrap();
    let (back, back_sd) = onnx::import_weights(&file, &FsLoader).unwrap();
    assert_eq!(back.graph.state_keys(), both.state_keys(), "round trip");
    assert_eq!(attention(&back.graph), attention(&both));
    for (k, v) in &back_sd {
        assert_eq!(Some(v), both_sd.get(k), "round trip: `{k}`");
    }
}

/// A small transformer in each attention layout prunex reads: timm's
/// packed `qkv`/`proj`, and separate `q_proj`/`k_proj`/`v_proj`/`o_proj`
/// with grouped-query attention (4 query heads on 2 key/value heads).
const LAYOUTS: &[(&str, &str)] = &[
    ("timm", "style: timm"),
    ("gqa", "style: separate, kv_heads: 2"),
];

fn layout_model(attention: &str) -> String {
    format!(
        "name: tiny\ninput: [1, 8, 8]\nlayers:\n\
  - {{name: patch, op: conv2d, in_channels: 1, out_channels: 16, kernel: 4, stride: 4}}\n\
  - {{name: tokens, op: to_tokens, functional: true}}\n\
  - {{name: cls, op: class_token, features: 16}}\n\
  - {{name: pos, op: pos_embedding, tokens: 5, features: 16}}\n\
  - {{name: blocks.0.norm1, op: layernorm, features: 16}}\n\
  - {{name: blocks.0.attn, op: multihead_attention, embed: 16, heads: 4, head_dim: 4, {attention}}}\n\
  - {{name: blocks.0.add, op: add, inputs: [blocks.0.attn, pos], functional: true}}\n\
  - {{name: blocks.0.norm2, op: layernorm, features: 16}}\n\
  - {{name: blocks.0.mlp.fc1, op: linear, in_features: 16, out_features: 32}}\n\
  - {{name: blocks.0.mlp.act, op: gelu}}\n\
  - {{name: blocks.0.mlp.fc2, op: linear, in_features: 32, out_features: 16}}\n\
  - {{name: blocks.0.add_1, op: add, inputs: [blocks.0.add, blocks.0.mlp.fc2], functional: true}}\n\
  - {{name: norm, op: layernorm, features: 16}}\n\
  - {{name: select, op: token_select, functional: true}}\n\
  - {{name: head, op: linear, in_features: 16, out_features: 3}}\n"
    )
}

/// Each layout computes what PyTorch code with its `state_dict` names
/// computes (`tests/parity/yaml_model.py`); with half its heads removed
/// (for grouped-query attention, one key/value head with the two query
/// heads it serves), the pruned model's description and weights load into
/// that code again (strict) with prunex's outputs, and its `model.onnx`
/// gives them in onnxruntime.
#[test]
fn attention_layouts_compute_what_pytorch_computes_before_and_after_pruning() {
    use prunex::models::yaml;
    for (id, layout) in LAYOUTS {
        let dir = tempfile::tempdir().unwrap();
        let desc = dir.path().join("model.yaml");
        std::fs::write(&desc, layout_model(layout)).unwrap();
        let (w, io) = (
            dir.path().join("w.safetensors"),
            dir.path().join("case.io.safetensors"),
        );
        common::python(
            "yaml_forward.py",
            &[
                "init".as_ref(),
                desc.as_os_str(),
                w.as_os_str(),
                io.as_os_str(),
            ],
        );
        let g = yaml::from_yaml(&std::fs::read_to_string(&desc).unwrap(), "model.yaml").unwrap();
        let sd = weights::load_for(&w, &g).unwrap().0;
        let (x, y) = reference_io::io(dir.path(), "case");
        let diff = max_diff(&forward(&g, &sd, &x), &y);
        assert!(diff < 1e-5, "{id}: differs from PyTorch by {diff}");
        let (pg, psd, _) = prune(&g, &sd, GroupKind::Heads, 0.5);
        assert_eq!(attention(&pg), vec![(16, 2, 4)], "{id}: 2 heads of 4 left");
        if *id == "gqa" {
            assert!(
                matches!(
                    pg.nodes.iter().find_map(|n| match n.op {
                        Op::MultiheadAttention { kv_heads, .. } => kv_heads,
                        _ => None,
                    }),
                    Some(1)
                ),
                "gqa keeps one key/value head for its two query heads"
            );
        }
        let ours = forward(&pg, &psd, &x);
        assert!(max_diff(&ours, &y) > 1e-3, "{id}: pruning changed nothing");
        let pdesc = dir.path().join("pruned.yaml");
        std::fs::write(&pdesc, yaml::to_yaml(&pg)).unwrap();
        let pw = dir.path().join("pruned.safetensors");
        std::fs::write(&pw, weights::to_safetensors(&psd)).unwrap();
        let out = dir.path().join("y.safetensors");
        common::python(
            "yaml_forward.py",
            &[
                "run".as_ref(),
                pdesc.as_os_str(),
                pw.as_os_str(),
                io.as_os_str(),
                out.as_os_str(),
            ],
        );
        let diff = max_diff(&ours, &reference_io::output_y(&out));
        assert!(
            diff < 1e-5,
            "{id}: the pruned model differs from PyTorch by {diff}"
        );
        let model = dir.path().join("m.onnx");
        std::fs::write(&model, onnx::to_onnx(&pg, &psd).unwrap()).unwrap();
        let ort = dir.path().join("ort.safetensors");
        common::python(
            "onnx_run.py",
            &[model.as_os_str(), io.as_os_str(), ort.as_os_str()],
        );
        let diff = max_diff(&ours, &reference_io::output_y(&ort));
        assert!(diff < 1e-5, "{id}: onnxruntime differs by {diff}");
    }
}

/// The Python helper follows a timm-style attention's head count
/// (`tests/parity/helper_timm.py`).
#[test]
fn the_helper_loads_a_head_pruned_timm_attention() {
    common::python("helper_timm.py", &[]);
}

/// Torch-Pruning 1.6.1 prunes whole heads of a timm-style attention (it
/// cannot on `nn.MultiheadAttention`): on the same weights, prunex's `prune
/// heads by l2` at 50 % removes the same 4 of 8 heads, shown by identical
/// pruned tensors (`tests/parity/tp_heads.py`).
#[test]
fn heads_pruned_are_the_heads_torch_pruning_prunes() {
    use prunex::models::yaml;
    let dir = tempfile::tempdir().unwrap();
    common::python("tp_heads.py", &[dir.path().as_os_str()]);
    let text = std::fs::read_to_string(dir.path().join("heads.yaml")).unwrap();
    let g = yaml::from_yaml(&text, "heads.yaml").unwrap();
    let sd = weights::load_for(&dir.path().join("heads.safetensors"), &g)
        .unwrap()
        .0;
    let (pg, psd, _) = prune(&g, &sd, GroupKind::Heads, 0.5);
    assert_eq!(attention(&pg), vec![(64, 4, 8)]);
    let tp = weights::read(&dir.path().join("heads.tp.safetensors"))
        .unwrap()
        .0;
    assert_eq!(psd, tp, "prunex removed other heads than Torch-Pruning");
}
