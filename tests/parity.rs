//! Parity with PyTorch: every zoo model's parameters and MACs equal
//! torchvision's model counted by Torch-Pruning's counter, its eval-mode
//! output on the same weights matches within 1e-4, weights load from
//! safetensors and from `.pt` files (plain `torch.save(state_dict)`, a
//! DataParallel-wrapped model, a plain dict), and weights written by prunex
//! load into PyTorch with `strict=True` and reproduce the outputs.
//!
//! References are generated at test time by `tests/parity/reference.py` in
//! the project's Python environment (`scripts/setup --reference`) and kept
//! under `target/tmp/parity-references` for later runs.

mod common;

#[path = "common/io.rs"]
mod reference_io;
use reference_io::io;

#[path = "../src/exec/convert.rs"]
mod convert;

#[path = "../src/exec/model.rs"]
#[allow(dead_code)]
mod model;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use prunex::graph::analyze;
use prunex::models::weights::{self, StateDict};
use prunex::models::zoo::{self, ZooOptions};
use serde_json::json;

struct Case {
    id: &'static str,
    model: &'static str,
    input: [usize; 3],
    classes: usize,
    /// Which weight formats to write (large models get one, to keep the
    /// temporary files small).
    formats: &'static [&'static str],
}

const ALL: &[&str] = &["safetensors", "pt", "dp", "plain"];
const ONE: &[&str] = &["safetensors"];

const CASES: &[Case] = &[
    Case {
        id: "lenet5-28",
        model: "lenet5",
        input: [1, 28, 28],
        classes: 10,
        formats: ALL,
    },
    Case {
        id: "lenet5-32",
        model: "lenet5",
        input: [1, 32, 32],
        classes: 10,
        formats: ONE,
    },
    Case {
        id: "simplecnn-28",
        model: "simplecnn",
        input: [1, 28, 28],
        classes: 10,
        formats: ALL,
    },
    Case {
        id: "resnet18-224",
        model: "resnet18",
        input: [3, 224, 224],
        classes: 1000,
        formats: ALL,
    },
    Case {
        id: "resnet18-28",
        model: "resnet18",
        input: [1, 28, 28],
        classes: 10,
        formats: ONE,
    },
    Case {
        id: "resnet34-64",
        model: "resnet34",
        input: [3, 64, 64],
        classes: 100,
        formats: ONE,
    },
    Case {
        id: "resnet50-224",
        model: "resnet50",
        input: [3, 224, 224],
        classes: 1000,
        formats: ONE,
    },
    Case {
        id: "vgg11_bn-32",
        model: "vgg11_bn",
        input: [1, 32, 32],
        classes: 10,
        formats: ONE,
    },
    Case {
        id: "vgg16_bn-224",
        model: "vgg16_bn",
        input: [3, 224, 224],
        classes: 1000,
        formats: ONE,
    },
    Case {
        id: "mobilenet_v2-224",
        model: "mobilenet_v2",
        input: [3, 224, 224],
        classes: 1000,
        formats: ONE,
    },
    Case {
        id: "mobilenet_v2-28",
        model: "mobilenet_v2",
        input: [1, 28, 28],
        classes: 10,
        formats: ONE,
    },
    Case {
        id: "vit_mini-28",
        model: "vit_mini",
        input: [1, 28, 28],
        classes: 10,
        formats: ALL,
    },
    Case {
        id: "vit_b_16-224",
        model: "vit_b_16",
        input: [3, 224, 224],
        classes: 1000,
        formats: ONE,
    },
];

fn python() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python")
}

fn spec() -> String {
    let cases: Vec<_> = CASES
        .iter()
        .map(|c| json!({"id": c.id, "model": c.model, "input": c.input, "classes": c.classes, "formats": c.formats}))
        .collect();
    serde_json::to_string(&cases).unwrap()
}

/// The references, generated once (see `common::generated`).
fn references() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| common::generated("parity-references", "reference.py", &spec()))
}

fn graph(c: &Case) -> prunex::graph::Graph {
    zoo::build(
        c.model,
        ZooOptions {
            input: c.input,
            classes: c.classes,
        },
    )
    .unwrap()
    .unwrap()
}

#[test]
fn params_and_macs_equal_torch_pruning_counter() {
    let dir = references();
    for c in CASES {
        let expected: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(dir.join(format!("{}.json", c.id))).unwrap(),
        )
        .unwrap();
        let a = analyze(&graph(c), c.input).unwrap();
        assert_eq!(
            a.total_params,
            expected["params"].as_u64().unwrap(),
            "{} params",
            c.id
        );
        assert_eq!(
            a.total_macs,
            expected["macs"].as_u64().unwrap(),
            "{} MACs",
            c.id
        );
    }
}

#[test]
fn the_headline_counts_are_the_published_ones() {
    let count = |name: &str| {
        let g = zoo::build(name, ZooOptions::imagenet()).unwrap().unwrap();
        let a = analyze(&g, g.input).unwrap();
        (
            a.total_params,
            (a.total_macs as f64 / 1e9 * 100.0).round() / 100.0,
        )
    };
    assert_eq!(count("resnet18"), (11_689_512, 1.82));
    assert_eq!(count("resnet50"), (25_557_032, 4.12));
}

fn load(path: &Path, g: &prunex::graph::Graph) -> StateDict {
    let (sd, _notes) =
        weights::load_for(path, g).unwrap_or_else(|e| panic!("{}: {e:?}", path.display()));
    sd
}

#[test]
fn every_weight_format_loads_to_the_same_state_dict() {
    let dir = references();
    for c in CASES.iter().filter(|c| c.formats.len() > 1) {
        let g = graph(c);
        let st = load(&dir.join(format!("{}.safetensors", c.id)), &g);
        for ext in ["pt", "dp.pt", "plain.pt"] {
            let path = dir.join(format!("{}.{ext}", c.id));
            let (raw, mut notes) = weights::read(&path).unwrap();
            let sd = weights::strip_prefixes(raw, &mut notes);
            weights::check(&sd, &g, "x").unwrap();
            assert_eq!(sd, st, "{} from .{ext}", c.id);
            let (shapes, _) = weights::read_shapes(&path).unwrap();
            let expected: weights::Shapes = st
                .iter()
                .map(|(k, t)| (k.clone(), t.shape.clone()))
                .collect();
            assert_eq!(shapes, expected, "{} shapes from .{ext}", c.id);
            if ext == "dp.pt" {
                assert!(notes.iter().any(|n| n.contains("`module.`")), "{notes:?}");
            }
        }
    }
}

#[test]
fn forward_matches_pytorch_and_weights_round_trip() {
    let dir = references();
    let written = tempfile::tempdir().unwrap();
    tch::manual_seed(0);
    for c in CASES {
        let g = graph(c);
        let sd = load(&dir.join(format!("{}.safetensors", c.id)), &g);
        let mut m = model::TorchModel::new(&g, tch::Device::Cpu);
        m.load(&sd).unwrap();
        let (x, y) = io(dir, c.id);
        let out = tch::no_grad(|| m.forward(&x, false)).unwrap();
        let diff = (&out - &y).abs().max().double_value(&[]);
        assert!(
            diff < 1e-4,
            "{}: output differs from PyTorch by {diff}",
            c.id
        );
        // What prunex writes is what PyTorch wrote.
        let back = m.state_dict().unwrap();
        assert_eq!(back, sd, "{} state_dict round trip", c.id);
        std::fs::write(
            written.path().join(format!("{}.prunex.safetensors", c.id)),
            weights::to_safetensors(&back),
        )
        .unwrap();
    }
    let out = Command::new(python())
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/parity/reference.py"))
        .arg("verify")
        .arg(dir)
        .arg(dir.join("cases.json"))
        .arg(written.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "PyTorch rejected prunex's weights:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn training_mode_runs_backward_and_updates_batchnorm() {
    let c = &CASES[2];
    let g = graph(c);
    let mut m = model::TorchModel::new(&g, tch::Device::Cpu);
    let x = tch::Tensor::randn([4, 1, 28, 28], (tch::Kind::Float, tch::Device::Cpu));
    let before = m.state_dict().unwrap()["bn1.running_mean"].clone();
    let y = m.forward(&x, true).unwrap();
    let loss = y.cross_entropy_for_logits(&tch::Tensor::from_slice(&[0i64, 1, 2, 3]));
    loss.backward();
    let grads: f64 =
        m.vs.trainable_variables()
            .iter()
            .map(|v| v.grad().abs().sum(tch::Kind::Float).double_value(&[]))
            .sum();
    assert!(grads > 0.0, "gradients reach the parameters");
    let after = m.state_dict().unwrap();
    assert_ne!(
        after["bn1.running_mean"], before,
        "training updates BatchNorm running statistics"
    );
    assert_eq!(
        after["bn1.num_batches_tracked"].data,
        weights::TensorData::I64(vec![1])
    );
}

/// Torch-Pruning 1.6 with L2 magnitude, local 50 % and `fc` ignored, against
/// prunex's `l2`, `aggregate mean`, local 50 % on the same weights: the same
/// counts (resnet18 3.06 M / 0.49 G, resnet50 6.92 M / 1.07 G) and the same
/// kept channels, shown by identical pruned weights.
#[test]
fn channel_pruning_keeps_the_channels_torch_pruning_keeps() {
    use prunex::prune::importance::{select_local, Selection};
    use prunex::prune::surgery::remove_channels;
    let dir = tempfile::tempdir().unwrap();
    for (name, params, gmacs) in [
        ("resnet18", 3_055_880u64, 0.49),
        ("resnet50", 6_917_640, 1.07),
    ] {
        let out = Command::new(python())
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/parity/tp_prune.py"))
            .arg(name)
            .arg(dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "tp_prune.py failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let g = zoo::build(name, ZooOptions::imagenet()).unwrap().unwrap();
        let c = prunex::graph::coupling(&g).unwrap();
        let sd = load(&dir.path().join(format!("{name}.orig.safetensors")), &g);
        let fc = g.nodes.iter().position(|n| n.name == "fc").unwrap();
        let ratios = c
            .groups
            .iter()
            .filter(|gr| gr.frozen.is_none() && !gr.producers.contains(&fc))
            .map(|gr| (gr.id, 0.5))
            .collect();
        let removal = select_local(&g, &c, &sd, &ratios, Selection::l2_magnitude(), None);
        let (pruned, psd) = remove_channels(&g, &c, &removal, Some(&sd));
        let a = analyze(&pruned, pruned.input).unwrap();
        let tp: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(dir.path().join(format!("{name}.tp.json"))).unwrap(),
        )
        .unwrap();
        assert_eq!(
            a.total_params,
            tp["params"].as_u64().unwrap(),
            "{name} params"
        );
        assert_eq!(a.total_macs, tp["macs"].as_u64().unwrap(), "{name} MACs");
        assert_eq!(a.total_params, params);
        assert_eq!((a.total_macs as f64 / 1e7).round() / 100.0, gmacs);
        let (tp_sd, _) = weights::read(&dir.path().join(format!("{name}.tp.safetensors"))).unwrap();
        assert_eq!(
            psd.unwrap(),
            tp_sd,
            "{name}: prunex kept other channels than Torch-Pruning"
        );
    }
}

/// After channel surgery, the pruned model computes what the original does
/// with the removed channels zeroed (producer rows, biases and BatchNorm
/// affine parameters), and it trains (forward and backward).
#[test]
fn pruned_models_equal_their_masked_originals() {
    use prunex::graph::Role;
    use prunex::prune::importance::{select_local, Aggregate, Criterion, Selection};
    use prunex::prune::surgery::remove_channels;
    tch::manual_seed(1);
    let mut graphs: Vec<prunex::graph::Graph> = [
        "resnet18",
        "resnet34",
        "resnet50",
        "mobilenet_v2",
        "vgg16_bn",
    ]
    .iter()
    .map(|n| {
        zoo::build(
            n,
            ZooOptions {
                input: [3, 64, 64],
                classes: 10,
            },
        )
        .unwrap()
        .unwrap()
    })
    .collect();
    graphs.push(prunex::models::load("examples/models/se-concat-net.yaml", None, None).unwrap());
    graphs.push(
        prunex::models::load("tests/fixtures/ok/models/grouped-cnn.yaml", None, None).unwrap(),
    );
    for g in graphs {
        let c = prunex::graph::coupling(&g).unwrap();
        let mut m = model::TorchModel::new(&g, tch::Device::Cpu);
        // Spread BatchNorm statistics so zeroing is not trivially harmless.
        let mut sd = m.state_dict().unwrap();
        for (k, t) in sd.iter_mut() {
            if k.ends_with("running_var") || k.ends_with(".bias") && !k.contains("conv") {
                if let weights::TensorData::F32(v) = &mut t.data {
                    for (i, x) in v.iter_mut().enumerate() {
                        *x += 0.1 * ((i % 7) as f32);
                    }
                }
            }
        }
        m.load(&sd).unwrap();
        let ratios = c
            .groups
            .iter()
            .filter(|gr| gr.frozen.is_none())
            .map(|gr| (gr.id, 0.3))
            .collect();
        let removal = select_local(
            &g,
            &c,
            &sd,
            &ratios,
            Selection {
                criterion: Criterion::L1,
                aggregate: Aggregate::Sum,
                round_to: Some(2),
                seed: 0,
            },
            None,
        );
        assert!(!removal.is_empty());
        // The masked original.
        let mut masked = sd.clone();
        for (&gid, idxs) in &removal {
            for &i in idxs {
                for s in &c.groups[gid].channels[i] {
                    let name = &g.nodes[s.node].name;
                    let keys: Vec<String> = match s.role {
                        Role::Out => vec![format!("{name}.weight"), format!("{name}.bias")],
                        Role::Norm => vec![format!("{name}.weight"), format!("{name}.bias")],
                        Role::In | Role::Head => vec![],
                    };
                    for k in keys {
                        if let Some(t) = masked.get_mut(&k) {
                            let row: usize = t.shape[1..].iter().product();
                            if let weights::TensorData::F32(v) = &mut t.data {
                                v[s.index * row..(s.index + 1) * row]
                                    .iter_mut()
                                    .for_each(|x| *x = 0.0);
                            }
                        }
                    }
                }
            }
        }
        let mut mm = model::TorchModel::new(&g, tch::Device::Cpu);
        mm.load(&masked).unwrap();
        let (pg, psd) = remove_channels(&g, &c, &removal, Some(&sd));
        let psd = psd.unwrap();
        weights::check(&psd, &pg, "pruned").unwrap();
        let mut pm = model::TorchModel::new(&pg, tch::Device::Cpu);
        pm.load(&psd).unwrap();
        let x = tch::Tensor::randn(
            [2, g.input[0] as i64, g.input[1] as i64, g.input[2] as i64],
            (tch::Kind::Float, tch::Device::Cpu),
        );
        let (want, got) = tch::no_grad(|| {
            (
                mm.forward(&x, false).unwrap(),
                pm.forward(&x, false).unwrap(),
            )
        });
        let diff = (&want - &got).abs().max().double_value(&[]);
        assert!(
            diff < 1e-5,
            "{}: pruned output differs from masked by {diff}",
            g.name
        );
        let before = analyze(&g, g.input).unwrap().total_params;
        assert!(
            analyze(&pg, pg.input).unwrap().total_params < before,
            "{} got smaller",
            g.name
        );
        let y = pm.forward(&x, true).unwrap();
        y.sum(tch::Kind::Float).backward();
        assert!(
            pm.vs
                .trainable_variables()
                .iter()
                .all(|v| v.grad().defined()),
            "{}: backward reaches every parameter",
            g.name
        );
    }
}

/// Removing a residual block equals zeroing its branch's last BatchNorm
/// (the branch then adds nothing): the block-pruned model computes what the
/// original does with those blocks silenced.
#[test]
fn removed_blocks_equal_silenced_branches() {
    use prunex::prune::blocks;
    tch::manual_seed(2);
    for name in ["resnet18", "resnet50", "mobilenet_v2"] {
        let g = zoo::build(
            name,
            ZooOptions {
                input: [3, 64, 64],
                classes: 10,
            },
        )
        .unwrap()
        .unwrap();
        let m = model::TorchModel::new(&g, tch::Device::Cpu);
        let sd = m.state_dict().unwrap();
        let found = blocks::find(&g);
        let chosen: Vec<&blocks::Block> = found.iter().step_by(2).collect();
        let mut silenced = sd.clone();
        for b in &chosen {
            let bn = b
                .branch
                .iter()
                .rev()
                .find(|&&n| matches!(g.nodes[n].op, prunex::graph::Op::BatchNorm2d { .. }))
                .unwrap();
            for k in ["weight", "bias"] {
                if let weights::TensorData::F32(v) = &mut silenced
                    .get_mut(&format!("{}.{k}", g.nodes[*bn].name))
                    .unwrap()
                    .data
                {
                    v.iter_mut().for_each(|x| *x = 0.0);
                }
            }
        }
        let mut sm = model::TorchModel::new(&g, tch::Device::Cpu);
        sm.load(&silenced).unwrap();
        let (pg, psd) = blocks::remove(&g, &chosen, Some(&sd));
        let mut pm = model::TorchModel::new(&pg, tch::Device::Cpu);
        pm.load(&psd.unwrap()).unwrap();
        let x = tch::Tensor::randn([2, 3, 64, 64], (tch::Kind::Float, tch::Device::Cpu));
        let (want, got) = tch::no_grad(|| {
            (
                sm.forward(&x, false).unwrap(),
                pm.forward(&x, false).unwrap(),
            )
        });
        let diff = (&want - &got).abs().max().double_value(&[]);
        assert!(diff < 1e-5, "{name}: block-pruned output differs by {diff}");
    }
}

/// Unstructured masks equal `torch.nn.utils.prune`'s on the same weights:
/// `l1_unstructured` layer by layer and `global_unstructured` across layers
/// (random float weights have no ties, so the choice is unique).
#[test]
fn unstructured_masks_equal_torch_nn_utils_prune() {
    use prunex::prune::mask;
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(python())
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/parity/tnup_masks.py"))
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (sd, _) = weights::read(&dir.path().join("lenet.safetensors")).unwrap();
    let amounts = [
        ("conv1", 0.85),
        ("conv2", 0.80),
        ("fc1", 0.75),
        ("fc2", 0.70),
        ("fc3", 0.80),
    ];
    let targets = amounts
        .iter()
        .map(|(n, s)| (format!("{n}.weight"), *s))
        .collect();
    let keys: Vec<String> = amounts.iter().map(|(n, _)| format!("{n}.weight")).collect();
    for (file, ours) in [
        ("local.safetensors", mask::local(&sd, &targets)),
        ("global.safetensors", mask::global(&sd, &keys, 0.9)),
    ] {
        let (theirs, _) = weights::read(&dir.path().join(file)).unwrap();
        for k in &keys {
            let t: Vec<bool> = theirs[k]
                .as_f32()
                .unwrap()
                .iter()
                .map(|&m| m != 0.0)
                .collect();
            assert_eq!(ours[k], t, "{file}: {k}");
        }
    }
}
