//! Zoo models, YAML descriptions and weight checking, without libtorch.

mod common;

use assert_cmd::Command;
use prunex::diagnostics::render_human;
use prunex::graph::analyze;
use prunex::models::weights::{self, StateDict, Tensor};
use prunex::models::{self, yaml, zoo};

fn render(e: impl miette::Diagnostic + Send + Sync + 'static) -> String {
    render_human(&miette::Report::new(e), false)
}

#[test]
fn every_zoo_model_round_trips_through_yaml() {
    for name in zoo::NAMES {
        for opts in [
            zoo::ZooOptions::imagenet(),
            zoo::ZooOptions {
                input: [1, 32, 32],
                classes: 10,
            },
        ] {
            let g = zoo::build(name, opts).unwrap().unwrap();
            let text = yaml::to_yaml(&g);
            let back = yaml::from_yaml(&text, "x.yaml").unwrap();
            assert_eq!(back, g, "{name} changed through YAML");
            assert_eq!(
                analyze(&back, back.input).unwrap(),
                analyze(&g, g.input).unwrap()
            );
        }
    }
}

#[test]
fn module_names_are_torchvisions() {
    let g = zoo::build("resnet50", zoo::ZooOptions::imagenet())
        .unwrap()
        .unwrap();
    let keys: Vec<String> = g.state_keys().into_iter().map(|(k, _)| k).collect();
    for k in [
        "conv1.weight",
        "bn1.running_var",
        "layer1.0.downsample.0.weight",
        "layer4.2.conv3.weight",
        "layer4.2.bn3.num_batches_tracked",
        "fc.bias",
    ] {
        assert!(keys.iter().any(|x| x == k), "missing {k}");
    }
    assert_eq!(
        keys.len(),
        320,
        "torchvision's resnet50 state_dict has 320 entries"
    );
    let g = zoo::build("mobilenet_v2", zoo::ZooOptions::imagenet())
        .unwrap()
        .unwrap();
    let names: Vec<&str> = g.modules().map(|(_, n)| n.name.as_str()).collect();
    for n in [
        "features.0.0",
        "features.1.conv.0.0",
        "features.1.conv.1",
        "features.2.conv.1.0",
        "features.18.0",
        "classifier.1",
    ] {
        assert!(names.contains(&n), "missing module {n}");
    }
}

#[test]
fn a_hand_written_description_with_concat_and_se_computes() {
    let g = models::load("examples/models/se-concat-net.yaml", None, None).unwrap();
    let a = analyze(&g, g.input).unwrap();
    assert_eq!(a.shapes[g.output].to_string(), "[10]");
    assert_eq!(a.total_params, 13_218);
}

#[test]
fn description_errors_name_the_layer() {
    let broken = "name: b\ninput: [3, 8, 8]\nlayers:\n  - {name: c1, op: conv2d, in_channels: 3, out_channels: 4, kernel: 3}\n  - {name: c2, op: conv2d, in_channels: 5, out_channels: 4, kernel: 3}\n";
    let g = yaml::from_yaml(broken, "b.yaml").unwrap();
    insta::assert_snapshot!(
        "channel_mismatch",
        render(analyze(&g, g.input).unwrap_err())
    );

    let dangling = "name: d\ninput: [3, 8, 8]\nlayers:\n  - {name: c1, op: conv2d, in_channels: 3, out_channels: 4, kernel: 3}\n  - {name: a, op: add, inputs: [c1, c0], functional: true}\n";
    insta::assert_snapshot!(
        "unknown_input",
        render(yaml::from_yaml(dangling, "d.yaml").unwrap_err())
    );

    let residual = "name: r\ninput: [3, 8, 8]\nlayers:\n  - {name: c1, op: conv2d, in_channels: 3, out_channels: 4, kernel: 3, padding: 1}\n  - {name: c2, op: conv2d, in_channels: 4, out_channels: 8, kernel: 3, padding: 1}\n  - {name: add, op: add, inputs: [c1, c2], functional: true}\n";
    let g = yaml::from_yaml(residual, "r.yaml").unwrap();
    insta::assert_snapshot!(
        "residual_shape_mismatch",
        render(analyze(&g, g.input).unwrap_err())
    );

    // A channel shuffle whose groups do not divide the channels, and a
    // slice past them.
    for (id, layer) in [
        (
            "shuffle_groups_mismatch",
            "{name: s, op: channel_shuffle, groups: 3, functional: true}",
        ),
        (
            "slice_out_of_range",
            "{name: s, op: slice, start: 2, end: 6, functional: true}",
        ),
    ] {
        let text = format!("name: x\ninput: [3, 8, 8]\nlayers:\n  - {{name: c1, op: conv2d, in_channels: 3, out_channels: 4, kernel: 1}}\n  - {layer}\n");
        let g = yaml::from_yaml(&text, "x.yaml").unwrap();
        insta::assert_snapshot!(id, render(analyze(&g, g.input).unwrap_err()));
    }

    let bad = "name: x\ninput: [3, 8, 8]\nlayers:\n  - {name: c1, op: conv3d}\n";
    insta::assert_snapshot!(
        "bad_description",
        render(yaml::from_yaml(bad, "x.yaml").unwrap_err())
    );

    // A misspelt layer field is an error with the closest name (it was
    // ignored: `strid: 2` left the stride at 1).
    let misspelt = "name: x\ninput: [3, 8, 8]\nlayers:\n  - {name: c1, op: conv2d, in_channels: 3, out_channels: 4, kernel: 3, strid: 2}\n";
    insta::assert_snapshot!(
        "unknown_field",
        render(yaml::from_yaml(misspelt, "x.yaml").unwrap_err())
    );
    // A size no model has is refused (coupling holds one entry per channel:
    // 2^40 channels exhausted memory; products overflowed shape inference).
    let huge = "name: x\ninput: [3, 8, 8]\nlayers:\n  - {name: c1, op: conv2d, in_channels: 3, out_channels: 1099511627776, kernel: 3}\n";
    assert!(matches!(
        yaml::from_yaml(huge, "x.yaml"),
        Err(yaml::DescriptionError::SizeOutOfRange { ref field, max: 1_048_576, .. }) if field == "out_channels"
    ));
    insta::assert_snapshot!(
        "size_out_of_range",
        render(yaml::from_yaml(huge, "x.yaml").unwrap_err())
    );
    let biass = "name: x\ninput: [3, 8, 8]\nlayers:\n  - {name: fc, op: linear, in_features: 192, out_features: 2, biass: false}\n";
    assert!(matches!(
        yaml::from_yaml(biass, "x.yaml"),
        Err(yaml::DescriptionError::UnknownField { ref field, .. }) if field == "biass"
    ));

    let small = zoo::build(
        "vgg16_bn",
        zoo::ZooOptions {
            input: [1, 28, 28],
            classes: 10,
        },
    )
    .unwrap()
    .unwrap_err();
    insta::assert_snapshot!("input_too_small", render(small));
}

fn zeros(g: &prunex::graph::Graph) -> StateDict {
    g.state_keys()
        .into_iter()
        .map(|(k, shape)| {
            let n = shape.iter().product::<usize>().max(1);
            let t = if k.ends_with("num_batches_tracked") {
                Tensor {
                    shape,
                    data: weights::TensorData::I64(vec![0]),
                }
            } else {
                Tensor::f32(shape, vec![0.0; n])
            };
            (k, t)
        })
        .collect()
}

#[test]
fn weights_that_do_not_fit_are_one_diagnostic_listing_each_key() {
    let g = zoo::build(
        "lenet5",
        zoo::ZooOptions {
            input: [1, 28, 28],
            classes: 10,
        },
    )
    .unwrap()
    .unwrap();
    let mut sd = zeros(&g);
    sd.remove("fc3.bias");
    sd.insert(
        "conv1.weight".into(),
        Tensor::f32(vec![6, 3, 5, 5], vec![0.0; 450]),
    );
    sd.insert("fc4.weight".into(), Tensor::f32(vec![1], vec![0.0]));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lenet5.safetensors");
    std::fs::write(&path, weights::to_safetensors(&sd)).unwrap();
    let err = weights::load_for(&path, &g).unwrap_err();
    assert!(matches!(err, weights::WeightsError::Mismatch { .. }));
    // The same check, under a fixed name so the snapshot does not depend on
    // the temporary folder.
    let (read, _) = weights::read(&path).unwrap();
    let err = weights::check(&read, &g, "checkpoints/lenet5.safetensors").unwrap_err();
    insta::assert_snapshot!("weights_mismatch", render(err));
}

#[test]
fn prefixes_are_stripped_with_a_note() {
    let g = zoo::build(
        "lenet5",
        zoo::ZooOptions {
            input: [1, 28, 28],
            classes: 10,
        },
    )
    .unwrap()
    .unwrap();
    let sd: StateDict = zeros(&g)
        .into_iter()
        .map(|(k, v)| (format!("_orig_mod.module.{k}"), v))
        .collect();
    let mut notes = Vec::new();
    // torch.compile wraps the DataParallel wrapper here: strip both.
    let sd = weights::strip_prefixes(sd, &mut notes);
    let sd = weights::strip_prefixes(sd, &mut notes);
    weights::check(&sd, &g, "x").unwrap();
    assert_eq!(notes.len(), 2, "{notes:?}");
}

#[test]
fn unreadable_weights_say_what_prunex_reads() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("junk.pt");
    std::fs::write(&path, b"not a weights file at all").unwrap();
    let (sd, _) = (weights::read(&path).err().map(render).unwrap(), ());
    assert!(sd.contains("prunex::weights::unreadable"), "{sd}");
    assert!(sd.contains("safetensors and `.pt` files"), "{sd}");
    let missing = render(weights::read(&dir.path().join("nope.safetensors")).unwrap_err());
    assert!(missing.contains("No such file"), "{missing}");
}

#[test]
fn inspect_prints_the_layer_table() {
    let out = Command::cargo_bin("prunex")
        .unwrap()
        .args(["inspect", "lenet5"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    insta::assert_snapshot!("inspect_lenet5", String::from_utf8(out).unwrap());
    Command::cargo_bin("prunex")
        .unwrap()
        .env("NO_COLOR", "1")
        .args(["inspect", "resnet19"])
        .assert()
        .code(1)
        .stderr(predicates::str::contains("did you mean `resnet18`?"));
    Command::cargo_bin("prunex")
        .unwrap()
        .args(["inspect", "resnet18", "--input", "3,x,4"])
        .assert()
        .code(2)
        .stderr(predicates::str::contains("is not an input shape"));
}

/// Damaged safetensors files are refused by `prunex check` (reading only
/// the header and the file's length), naming the tensor; they passed and
/// the run failed a second in. A legacy `torch.save` file says to re-save.
#[test]
fn damaged_weights_files_name_the_tensor() {
    let mut sd = StateDict::new();
    sd.insert("a".into(), Tensor::f32(vec![2, 3], vec![1.0; 6]));
    sd.insert("b".into(), Tensor::f32(vec![4], vec![2.0; 4]));
    let good = weights::to_safetensors(&sd);
    let dir = tempfile::tempdir().unwrap();
    let reason = |name: &str, bytes: &[u8]| {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        match weights::read_shapes(&path) {
            Err(weights::WeightsError::Unreadable { reason, help, .. }) => {
                format!("{reason} / {help}")
            }
            other => panic!("{name}: {other:?}"),
        }
    };
    assert!(weights::read_shapes(&{
        let p = dir.path().join("good.safetensors");
        std::fs::write(&p, &good).unwrap();
        p
    })
    .is_ok());
    // The header, with its data offsets edited in place (same length).
    let n = u64::from_le_bytes(good[..8].try_into().unwrap()) as usize;
    let header = String::from_utf8(good[8..8 + n].to_vec()).unwrap();
    let with_header = |h: &str| {
        assert_eq!(h.len(), header.len());
        let mut b = good.clone();
        b[8..8 + n].copy_from_slice(h.as_bytes());
        b
    };
    let truncated = reason("truncated.safetensors", &good[..good.len() - 4]);
    assert!(
        truncated.contains("`b`'s data ends at byte 40") && truncated.contains("truncated"),
        "{truncated}"
    );
    let overlap = header.replace("[24,40]", "[16,32]");
    assert_ne!(overlap, header, "{header}");
    let overlap = reason("overlap.safetensors", &with_header(&overlap));
    assert!(
        overlap.contains("`a` [0, 24) and `b` [16, 32) overlap"),
        "{overlap}"
    );
    let short = header.replace("[0,24]", "[0,20]");
    let short = reason("short.safetensors", &with_header(&short));
    assert!(
        short.contains(
            "`a` is [2, 3] of 4-byte values (24 bytes) but its data range [0, 20) holds 20"
        ),
        "{short}"
    );
    let legacy = reason(
        "legacy.pt",
        &[0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9],
    );
    assert!(
        legacy.contains("legacy torch.save") && legacy.contains("re-save"),
        "{legacy}"
    );
    // The tensors must tile the data, as the run's reader requires: a gap
    // or bytes after the last tensor are refused too.
    let mut trailing = good.clone();
    trailing.extend([0; 4]);
    let trailing = reason("trailing.safetensors", &trailing);
    let mut gap = with_header(&header.replace("[24,40]", "[28,44]"));
    gap.extend([0; 4]);
    let gap = reason("gap.safetensors", &gap);
    // Every message, as users read it.
    insta::assert_snapshot!(
        "damaged_weights",
        [truncated, overlap, short, legacy, trailing, gap].join("\n")
    );
}

/// A `.pt` archive whose storage entry is missing or shorter than its
/// tensors is refused by the shape check (`prunex check`), naming the
/// entry; it passed and the run failed. Written by PyTorch, damaged with
/// Python's zipfile (`tests/parity/damaged_pt.py`).
#[cfg(feature = "torch")]
#[test]
fn damaged_torch_archives_are_refused_by_the_check() {
    let dir = tempfile::tempdir().unwrap();
    common::python("damaged_pt.py", &[dir.path().as_os_str()]);
    let shapes = weights::read_shapes(&dir.path().join("good.pt")).unwrap().0;
    assert_eq!(shapes["w"], vec![4, 3]);
    for (name, want) in [
        ("short.pt", "holds 20 bytes but a"),
        ("missing.pt", "the archive has no storage"),
    ] {
        let e = render(weights::read_shapes(&dir.path().join(name)).unwrap_err());
        assert!(
            e.contains("prunex::weights::unreadable") && e.contains(want),
            "{name}: {e}"
        );
    }
}
