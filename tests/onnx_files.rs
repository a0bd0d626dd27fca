//! ONNX files that are not what prunex needs get coded diagnostics naming
//! the problem (and the recipe line, in `prunex check`); a good one imports
//! with its weights. Built from `prunex::fuzz::tiny_onnx`, edited with the
//! generated protobuf types.

mod common;

use std::path::Path;

use prost::Message;
use prunex::check::{check_path, Mode};
use prunex::diagnostics::render_human;
use prunex::fuzz::tiny_onnx;
use prunex::models::onnx::{self, proto::ModelProto, OnnxError};
use prunex::syntax::FsLoader;

fn edited(f: impl FnOnce(&mut ModelProto)) -> Vec<u8> {
    let mut m = ModelProto::decode(&tiny_onnx()[..]).unwrap();
    f(&mut m);
    m.encode_to_vec()
}

fn import(dir: &Path, bytes: &[u8]) -> Result<onnx::Imported, OnnxError> {
    let path = dir.join("net.onnx");
    std::fs::write(&path, bytes).unwrap();
    onnx::import_weights(&path, &FsLoader).map(|(i, _)| i)
}

fn code(e: &OnnxError) -> String {
    miette::Diagnostic::code(e).unwrap().to_string()
}

#[test]
fn a_good_file_imports_with_its_weights() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("net.onnx");
    std::fs::write(&path, tiny_onnx()).unwrap();
    let (imported, sd) = onnx::import_weights(&path, &FsLoader).unwrap();
    let names: Vec<&str> = imported
        .graph
        .modules()
        .filter(|(_, n)| n.op.has_weights())
        .map(|(_, n)| n.name.as_str())
        .collect();
    assert_eq!(names, ["conv", "bn", "fc"]);
    assert_eq!(sd["conv.weight"].shape, [4, 3, 3, 3]);
    assert!(sd.contains_key("bn.num_batches_tracked"));
    // The same weights from a separate data file, as the dynamo exporter
    // writes them.
    let values: Vec<u8> = sd["conv.weight"]
        .as_f32()
        .unwrap()
        .iter()
        .flat_map(|x| x.to_le_bytes())
        .collect();
    std::fs::write(dir.path().join("net.onnx.data"), &values).unwrap();
    let bytes = edited(|m| common::external(m, "net.onnx.data", Some(values.len() as u64)));
    std::fs::write(&path, bytes).unwrap();
    let (_, again) = onnx::import_weights(&path, &FsLoader).unwrap();
    assert_eq!(again, sd);
}

/// A bias the exporter computes from the weight's shape (the dynamo
/// exporter's `Expand(0, Shape(weight, start=0, end=1))` for a convolution
/// without one) takes the slice of the shape `start` and `end` name: here a
/// bias of 0.5 per output channel, four of them. Before, `Shape` ignored
/// them and the bias had the weight's whole shape; with regnet_y_128gf's
/// 27-million-entry weights that was too large to fold.
#[test]
fn a_bias_computed_from_a_sliced_shape_has_one_entry_per_channel() {
    use prunex::models::onnx::proto::{AttributeProto, NodeProto, TensorProto};
    let dir = tempfile::tempdir().unwrap();
    let node = |op: &str, i: &[&str], o: &str, attribute: Vec<AttributeProto>| NodeProto {
        op_type: Some(op.into()),
        name: Some(format!("/conv/{o}")),
        input: i.iter().map(|s| (*s).to_owned()).collect(),
        output: vec![o.into()],
        attribute,
        ..Default::default()
    };
    let int = |name: &str, i: i64| AttributeProto {
        name: Some(name.into()),
        i: Some(i),
        r#type: Some(2),
        ..Default::default()
    };
    let half = AttributeProto {
        name: Some("value".into()),
        t: Some(TensorProto {
            dims: vec![],
            data_type: Some(1),
            float_data: vec![0.5],
            ..Default::default()
        }),
        r#type: Some(4),
        ..Default::default()
    };
    let bytes = edited(|m| {
        let g = m.graph.as_mut().unwrap();
        let nodes = vec![
            node(
                "Shape",
                &["conv.weight"],
                "shape",
                vec![int("start", 0), int("end", 1)],
            ),
            node("Constant", &[], "half", vec![half]),
            node("Expand", &["half", "shape"], "bias", vec![]),
        ];
        g.node.splice(0..0, nodes);
        g.node[3].input.push("bias".into());
    });
    let path = dir.path().join("net.onnx");
    std::fs::write(&path, bytes).unwrap();
    let (_, sd) = onnx::import_weights(&path, &FsLoader).unwrap();
    let bias = &sd["conv.bias"];
    assert_eq!(bias.shape, [4]);
    assert_eq!(bias.as_f32().unwrap(), [0.5; 4]);
}

/// Each bad file's diagnostic, snapshotted as users see it (the files live
/// under a fixed relative path, so the rendering does not depend on where
/// the checkout is).
#[test]
fn bad_files_get_coded_diagnostics() {
    let d = Path::new("target/onnx-diagnostics");
    let _ = std::fs::remove_dir_all(d);
    std::fs::create_dir_all(d).unwrap();
    let mut shown = Vec::new();
    let good = tiny_onnx();
    let cases: Vec<(&str, Vec<u8>, &str, &str)> = vec![
        (
            "truncated",
            good[..good.len() / 2].to_vec(),
            "prunex::onnx::not_onnx",
            "does not decode",
        ),
        (
            "text",
            b"name: not a model\n".to_vec(),
            "prunex::onnx::not_onnx",
            "",
        ),
        ("empty", Vec::new(), "prunex::onnx::not_onnx", "no graph"),
        (
            "opset 9",
            edited(|m| m.opset_import[0].version = Some(9)),
            "prunex::onnx::old_opset",
            "opset 9",
        ),
        (
            "an unknown operator",
            edited(|m| m.graph.as_mut().unwrap().node[2].op_type = Some("Swoosh".into())),
            "prunex::onnx::unsupported_op",
            "Swoosh ×1 (first: node `/relu/Relu`, module `relu`)",
        ),
        (
            "asymmetric padding",
            edited(|m| m.graph.as_mut().unwrap().node[0].attribute[0].ints = vec![0, 0, 1, 1]),
            "prunex::onnx::malformed",
            "asymmetric pads",
        ),
        (
            "no layers",
            edited(|m| {
                let g = m.graph.as_mut().unwrap();
                g.node.truncate(1);
                g.node[0].op_type = Some("Identity".into());
                g.node[0].input.truncate(1);
                g.node[0].attribute.clear();
                g.node[0].output = vec!["y".into()];
            }),
            "prunex::onnx::bad_graph",
            "no layers",
        ),
        (
            "missing external data",
            edited(|m| common::external(m, "net.onnx.data", None)),
            "prunex::onnx::external_data",
            "net.onnx.data",
        ),
        (
            "external data outside the folder",
            edited(|m| common::external(m, "../secret.bin", None)),
            "prunex::onnx::external_data",
            "beside the model",
        ),
    ];
    for (what, bytes, expected, says) in cases {
        let e = import(d, &bytes).unwrap_err();
        assert_eq!(code(&e), expected, "{what}: {e}");
        assert!(e.to_string().contains(says), "{what}: {e}");
        shown.push(render_human(&miette::Report::new(e), false));
    }
    // External data shorter than the tensors it should hold.
    std::fs::write(d.join("net.onnx.data"), [0u8; 10]).unwrap();
    let e = import(d, &edited(|m| common::external(m, "net.onnx.data", None))).unwrap_err();
    assert_eq!(code(&e), "prunex::onnx::external_data", "{e}");
    assert!(e.to_string().contains("needs bytes 0..432"), "{e}");
    shown.push(render_human(&miette::Report::new(e), false));
    std::fs::remove_dir_all(d).unwrap();
    insta::assert_snapshot!(shown.join("\n"));
}

/// Checks `dir/r.prune`; the outcome and its rendered diagnostics.
fn check(dir: &Path) -> (prunex::check::Checked, String) {
    let checked = check_path(&dir.join("r.prune"), &FsLoader, &[], Mode::Single);
    let shown = checked
        .reports
        .iter()
        .map(|r| render_human(r, false))
        .collect();
    (checked, shown)
}

/// A recipe names the ONNX file as its model: the check reads its graph
/// and the plan takes its weights from it; a bad file is reported at the
/// model line.
#[test]
fn recipes_prune_onnx_models() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("net.onnx"), tiny_onnx()).unwrap();
    std::fs::write(
        d.join("r.prune"),
        "recipe \"onnx\"\nmodel \"net.onnx\" { classes 5 }\ndata mnist \"nowhere\"\nprune channels by l2 {\n    schedule oneshot\n    ignore \"fc\"\n    group \"*\" ratio 0.5\n}\n",
    )
    .unwrap();
    let (checked, shown) = check(d);
    // The only error: the input shape ([3, 8, 8]) is not MNIST's.
    assert!(shown.contains("prunex::check::input_mismatch"), "{shown}");
    let plan = checked.plan.expect("a plan");
    assert_eq!(plan.weights.as_deref(), Some(d.join("net.onnx").as_path()));
    let group = plan.stages[0]
        .groups
        .iter()
        .find(|g| g.layers.contains(&"conv".to_owned()))
        .expect("conv's group");
    assert_eq!(group.layers, ["conv"]);
    assert_eq!((group.channels, group.keep), (4, Some(2)), "{group:?}");
    std::fs::write(d.join("net.onnx"), b"not onnx").unwrap();
    let (_, shown) = check(d);
    assert!(
        shown.contains("prunex::onnx::not_onnx") && shown.contains("model \"net.onnx\""),
        "{shown}"
    );
}

/// A model without an ONNX form is refused with the reason a run prints
/// (and the run writes everything else).
#[test]
fn a_model_without_an_onnx_form_says_why() {
    let g = prunex::models::yaml::from_yaml(
        "name: odd\ninput: [1, 8, 8]\nlayers:\n  - {name: conv, op: conv2d, in_channels: 1, out_channels: 2, kernel: 3, padding: 1}\n  - {name: pool, op: adaptive_avgpool2d, output: 3}\n  - {name: flat, op: flatten, functional: true}\n  - {name: fc, op: linear, in_features: 18, out_features: 4}\n",
        "odd.yaml",
    )
    .unwrap();
    let sd = g
        .state_keys()
        .into_iter()
        .map(|(k, shape)| {
            let n = shape.iter().product();
            (k, prunex::tensor::Tensor::f32(shape, vec![0.1; n]))
        })
        .collect();
    let e = onnx::to_onnx(&g, &sd).unwrap_err();
    assert!(
        e.contains("from 8×8 to 3×3") && e.contains("do not divide"),
        "{e}"
    );
}
