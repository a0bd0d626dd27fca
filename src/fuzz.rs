//! The body of the parser/checker fuzz target (`fuzz/`), shared with the
//! test that replays its corpus on stable Rust, so both run the same checks.

use std::path::Path;

use crate::check::{check_path, Mode};
use crate::diagnostics::{render_human, to_json};
use crate::syntax::fmt::format;
use crate::syntax::{parse, MemLoader, SourceMap};

/// Parses, checks and formats `text`, and renders every diagnostic; panics
/// on any broken invariant:
/// - nothing panics, and every diagnostic renders for people and as JSON;
/// - a text that parses formats idempotently, to text that parses to the
///   same tree with the same comments.
///
/// The text is also visible as `inc.prune` so that `include` paths resolve
/// (and cycles are exercised).
pub fn exercise(text: &str) {
    let loader = MemLoader::new()
        .with("main.prune", text)
        .with("inc.prune", text);
    let checked = check_path(Path::new("main.prune"), &loader, &[], Mode::Single);
    for r in &checked.reports {
        let _ = render_human(r, false);
        let _ = to_json(r);
    }

    let mut map = SourceMap::new();
    let id = map.add("main.prune", None, text);
    let parsed = parse(map.get(id));
    if !parsed.is_ok() {
        return;
    }
    let once = format(&parsed.file, map.get(id));
    let id2 = map.add("formatted", None, once.as_str());
    let again = parse(map.get(id2));
    assert!(again.is_ok(), "formatted text does not parse:\n{once}");
    assert_eq!(
        parsed.file.items, again.file.items,
        "formatting changed the meaning:\n{once}"
    );
    let texts = |f: &crate::syntax::ast::File| {
        f.comments
            .iter()
            .map(|c| c.node.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        texts(&parsed.file),
        texts(&again.file),
        "formatting lost comments:\n{once}"
    );
    let twice = format(&again.file, map.get(id2));
    assert_eq!(once, twice, "formatting is not idempotent");
}

/// The body of the `model_weights` fuzz target: structure-aware, so the
/// fuzzer explores models and headers rather than YAML and JSON syntax.
/// The first byte picks what is built from the rest:
/// - a model description: a zoo model's YAML with numbers replaced and
///   field names misspelt as the bytes say; reading it, inferring shapes and
///   coupling never panic, and a description that reads writes back the
///   same graph;
/// - a safetensors file: a small valid one, truncated, with header bytes
///   and the length prefix edited as the bytes say; the header check never
///   panics, and a file `prunex check` accepts is one the run's reader reads,
///   with the same shapes (the checker's promise).
pub fn exercise_structured(data: &[u8]) {
    let Some((&kind, rest)) = data.split_first() else {
        return;
    };
    if kind % 2 == 0 {
        exercise_model(rest);
    } else {
        exercise_weights(rest);
    }
}

/// A byte reader that yields zeros when the input runs out.
struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }
}

fn exercise_model(data: &[u8]) {
    let mut b = Bytes(data);
    let zoo = [
        "lenet5",
        "simplecnn",
        "resnet18",
        "mobilenet_v2",
        "vit_mini",
    ];
    let name = zoo[b.byte() as usize % zoo.len()];
    let opts = crate::models::zoo::ZooOptions {
        input: [1 + (b.byte() % 3) as usize, 32, 32],
        classes: 1 + (b.byte() % 20) as usize,
    };
    let Some(Ok(g)) = crate::models::zoo::build(name, opts) else {
        return;
    };
    let mut text = crate::models::yaml::to_yaml(&g);
    // Edits: (position, what) pairs while bytes last.
    for _ in 0..(b.byte() % 8) {
        let at = (b.byte() as usize * 256 + b.byte() as usize) % text.len().max(1);
        let at = (0..=at)
            .rev()
            .find(|&i| text.is_char_boundary(i))
            .unwrap_or(0);
        match b.byte() % 4 {
            // A number: replaced by a fuzzer one (0, huge, or small).
            0 => {
                if let Some(start) = text[at..]
                    .find(|c: char| c.is_ascii_digit())
                    .map(|i| at + i)
                {
                    let end = text[start..]
                        .find(|c: char| !c.is_ascii_digit())
                        .map_or(text.len(), |i| start + i);
                    let n = match b.byte() % 3 {
                        0 => 0u64,
                        1 => u64::MAX,
                        _ => b.byte() as u64,
                    };
                    text.replace_range(start..end, &n.to_string());
                }
            }
            // A field name: a letter dropped (`strid`, `paddin`).
            1 => {
                if let Some(colon) = text[at..].find(':').map(|i| at + i) {
                    if colon > 0 && text.as_bytes()[colon - 1].is_ascii_alphabetic() {
                        text.remove(colon - 1);
                    }
                }
            }
            // A layer's op name.
            2 => {
                let ops = [
                    "conv2d",
                    "linear",
                    "add",
                    "concat",
                    "flatten",
                    "relu",
                    "nope",
                    "layernorm",
                    "to_tokens",
                    "multihead_attention",
                    "token_select",
                ];
                if let Some(i) = text[at..].find("op: ").map(|i| at + i + 4) {
                    let end = text[i..]
                        .find(['\n', ',', '}'])
                        .map_or(text.len(), |e| i + e);
                    text.replace_range(i..end, ops[b.byte() as usize % ops.len()]);
                }
            }
            // Cut the description short.
            _ => text.truncate(at),
        }
    }
    let Ok(read) = crate::models::yaml::from_yaml(&text, "fuzz.yaml") else {
        return;
    };
    if crate::graph::analyze(&read, read.input).is_ok() {
        let _ = crate::graph::coupling(&read);
    }
    let again = crate::models::yaml::from_yaml(&crate::models::yaml::to_yaml(&read), "again.yaml")
        .expect("a description prunex wrote reads back");
    assert_eq!(again, read, "a description does not round-trip:\n{text}");
}

/// A loader over one binary file.
struct OneFile(Vec<u8>);

impl crate::syntax::Loader for OneFile {
    fn read(&self, _: &Path) -> std::io::Result<(std::path::PathBuf, String)> {
        Err(std::io::Error::other("binary"))
    }

    fn open(&self, _: &Path) -> std::io::Result<Box<dyn crate::syntax::load::ReadSeek>> {
        Ok(Box::new(std::io::Cursor::new(self.0.clone())))
    }
}

fn exercise_weights(data: &[u8]) {
    use crate::models::weights;
    use crate::tensor::{StateDict, Tensor};
    let mut b = Bytes(data);
    let mut sd = StateDict::new();
    for k in 0..(1 + b.byte() % 4) {
        let shape: Vec<usize> = (0..(b.byte() % 4))
            .map(|_| (b.byte() % 5) as usize)
            .collect();
        let n = shape.iter().product();
        sd.insert(format!("t{k}.weight"), Tensor::f32(shape, vec![0.5; n]));
    }
    let mut file = weights::to_safetensors(&sd);
    for _ in 0..(b.byte() % 6) {
        let at = (b.byte() as usize * 256 + b.byte() as usize) % file.len().max(1);
        match b.byte() % 3 {
            0 => file.truncate(at),
            1 => {
                if let Some(x) = file.get_mut(at) {
                    *x = b.byte();
                }
            }
            // The header length prefix.
            _ => {
                let v = b.byte();
                if let Some(x) = file.get_mut(at % 8) {
                    *x = v;
                }
            }
        }
    }
    let checked = weights::read_shapes_with(Path::new("w.safetensors"), &OneFile(file.clone()));
    if let Ok((shapes, _)) = checked {
        let read = weights::read_safetensors(&file)
            .expect("a file prunex check accepts is one the run reads");
        let read: weights::Shapes = read.into_iter().map(|(k, t)| (k, t.shape)).collect();
        assert_eq!(read, shapes, "the check and the run read different shapes");
    }
}

/// A small valid ONNX model (Conv → BatchNorm → Relu → GlobalAveragePool →
/// Flatten → Gemm on a `[1, 3, 8, 8]` input, weights inline), as
/// `torch.onnx.export` names things: the seed the ONNX fuzz target damages,
/// and a fixture for tests of bad files.
pub fn tiny_onnx() -> Vec<u8> {
    use crate::models::onnx::proto::{
        tensor_proto::DataType, AttributeProto, GraphProto, ModelProto, NodeProto,
        OperatorSetIdProto, TensorProto,
    };
    use prost::Message;
    let init = |name: &str, dims: &[i64]| {
        let n: i64 = dims.iter().product();
        TensorProto {
            name: Some(name.into()),
            dims: dims.to_vec(),
            data_type: Some(DataType::Float as i32),
            float_data: (0..n).map(|i| (i % 7) as f32 * 0.1 + 0.5).collect(),
            ..Default::default()
        }
    };
    let ints = |name: &str, v: &[i64]| AttributeProto {
        name: Some(name.into()),
        ints: v.to_vec(),
        r#type: Some(7),
        ..Default::default()
    };
    let node = |op: &str, name: &str, i: &[&str], o: &str, attrs: Vec<AttributeProto>| NodeProto {
        op_type: Some(op.into()),
        name: Some(name.into()),
        input: i.iter().map(|s| (*s).to_owned()).collect(),
        output: vec![o.into()],
        attribute: attrs,
        ..Default::default()
    };
    let value = |name: &str, dims: &[usize]| {
        let dims: Vec<Option<usize>> = dims.iter().map(|&d| Some(d)).collect();
        crate::models::onnx::write::value_info(name, &dims)
    };
    let graph = GraphProto {
        name: Some("tiny".into()),
        node: vec![
            node(
                "Conv",
                "/conv/Conv",
                &["x", "conv.weight"],
                "c",
                vec![ints("pads", &[1, 1, 1, 1]), ints("kernel_shape", &[3, 3])],
            ),
            node(
                "BatchNormalization",
                "/bn/BatchNormalization",
                &[
                    "c",
                    "bn.weight",
                    "bn.bias",
                    "bn.running_mean",
                    "bn.running_var",
                ],
                "b",
                vec![],
            ),
            node("Relu", "/relu/Relu", &["b"], "r", vec![]),
            node(
                "GlobalAveragePool",
                "/pool/GlobalAveragePool",
                &["r"],
                "p",
                vec![],
            ),
            node("Flatten", "/Flatten", &["p"], "f", vec![]),
            node(
                "Gemm",
                "/fc/Gemm",
                &["f", "fc.weight", "fc.bias"],
                "y",
                vec![AttributeProto {
                    name: Some("transB".into()),
                    i: Some(1),
                    r#type: Some(2),
                    ..Default::default()
                }],
            ),
        ],
        initializer: vec![
            init("conv.weight", &[4, 3, 3, 3]),
            init("bn.weight", &[4]),
            init("bn.bias", &[4]),
            init("bn.running_mean", &[4]),
            init("bn.running_var", &[4]),
            init("fc.weight", &[5, 4]),
            init("fc.bias", &[5]),
        ],
        input: vec![value("x", &[1, 3, 8, 8])],
        output: vec![value("y", &[1, 5])],
        ..Default::default()
    };
    ModelProto {
        ir_version: Some(9),
        opset_import: vec![OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(18),
        }],
        producer_name: Some("pytorch".into()),
        graph: Some(graph),
        ..Default::default()
    }
    .encode_to_vec()
}

/// The body of the `onnx` fuzz target: [`tiny_onnx`] truncated and with
/// bytes edited as the fuzzer's bytes say (or the bytes themselves, when
/// the first is odd). Importing never panics, a file that imports has
/// weights that fit its graph, and it exports and imports back to the same
/// layers.
pub fn exercise_onnx(data: &[u8]) {
    let Some((&kind, rest)) = data.split_first() else {
        return;
    };
    let file = if kind % 2 == 1 {
        rest.to_vec()
    } else {
        let mut b = Bytes(rest);
        let mut file = tiny_onnx();
        for _ in 0..(b.byte() % 8) {
            let at = (b.byte() as usize * 256 + b.byte() as usize) % file.len().max(1);
            match b.byte() % 3 {
                0 => file.truncate(at),
                1 => {
                    if let Some(x) = file.get_mut(at) {
                        *x = b.byte();
                    }
                }
                _ => file.insert(at.min(file.len()), b.byte()),
            }
        }
        file
    };
    let loader = OneFile(file);
    let path = Path::new("fuzz.onnx");
    if let Ok((imported, weights)) = crate::models::onnx::import_weights(path, &loader) {
        crate::models::weights::check(&weights, &imported.graph, "fuzz.onnx")
            .expect("an imported model's weights fit its graph");
        // What imports, exports; and the export imports as the same graph.
        let bytes = crate::models::onnx::to_onnx(&imported.graph, &weights)
            .expect("an imported model exports");
        let (back, _) = crate::models::onnx::import_weights(path, &OneFile(bytes))
            .expect("an exported model imports");
        assert_eq!(back.graph.state_keys(), imported.graph.state_keys());
    }
}
