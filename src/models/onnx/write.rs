//! A graph and its weights as an ONNX model (opset 20): what a run exports
//! as `model.onnx`, for onnxruntime and every runtime that reads ONNX. Names
//! are the graph's: initializers are `state_dict` keys. Weights are inline,
//! unless they exceed what one protobuf holds (2 GB): then every tensor of
//! 1 KiB or more goes to a data file beside the model, as
//! `onnx.save_model(..., save_as_external_data=True)` writes it.

use std::collections::HashSet;

use prost::Message;

use super::proto::{
    attribute_proto::AttributeType, tensor_proto::DataType, tensor_shape_proto::dimension::Value,
    tensor_shape_proto::Dimension, type_proto, AttributeProto, GraphProto, ModelProto, NodeProto,
    OperatorSetIdProto, TensorProto, TensorShapeProto, TypeProto, ValueInfoProto,
};
use crate::graph::{analyze, Graph, Op, Shape};
use crate::tensor::{StateDict, Tensor, TensorData};

/// The opset written (the first with `Gelu`).
pub const OPSET: i64 = 20;

/// Protobuf cannot hold more: larger models keep their weights in an
/// external data file.
pub const MAX_BYTES: usize = 2_000_000_000;

/// Tensors smaller than this stay inline when the weights go to a data
/// file (onnx's own `size_threshold`).
const EXTERNAL_THRESHOLD: usize = 1024;

/// An ONNX model and, when its weights are external, the data file's bytes.
#[derive(Debug)]
pub struct OnnxFiles {
    /// The model file.
    pub model: Vec<u8>,
    /// The data file its external initializers point into (by the name
    /// `to_onnx_files` was given), when there is one.
    pub data: Option<Vec<u8>>,
}

/// Serialises `graph` with the weights `sd`: inline when they take at most
/// `inline_limit` bytes, else with every tensor of 1 KiB or more in the
/// data file `data_name` (a file name beside the model).
pub fn to_onnx_files(
    graph: &Graph,
    sd: &StateDict,
    data_name: &str,
    inline_limit: usize,
) -> Result<OnnxFiles, String> {
    let (mut model, bytes) = build(graph, sd)?;
    if bytes <= inline_limit {
        return Ok(OnnxFiles {
            model: model.encode_to_vec(),
            data: None,
        });
    }
    use super::proto::{tensor_proto::DataLocation, StringStringEntryProto};
    let entry = |k: &str, v: String| StringStringEntryProto {
        key: Some(k.into()),
        value: Some(v),
    };
    let mut data = Vec::new();
    for t in &mut model
        .graph
        .as_mut()
        .expect("built with a graph")
        .initializer
    {
        let Some(raw) = t.raw_data.take_if(|r| r.len() >= EXTERNAL_THRESHOLD) else {
            continue;
        };
        t.data_location = Some(DataLocation::External as i32);
        t.external_data = vec![
            entry("location", data_name.to_owned()),
            entry("offset", data.len().to_string()),
            entry("length", raw.len().to_string()),
        ];
        data.extend_from_slice(&raw);
    }
    let model = model.encode_to_vec();
    if model.len() > MAX_BYTES {
        return Err(format!(
            "even without its large weights the model takes {} bytes, more than an ONNX file holds",
            model.len()
        ));
    }
    Ok(OnnxFiles {
        model,
        data: Some(data),
    })
}

/// Serialises `graph` with the weights `sd` (its `state_dict`) inline. The
/// batch dimension is dynamic; `[C, H, W]` are the graph's input.
pub fn to_onnx(graph: &Graph, sd: &StateDict) -> Result<Vec<u8>, String> {
    let (model, bytes) = build(graph, sd)?;
    if bytes > MAX_BYTES {
        return Err(format!(
            "the weights take {bytes} bytes, more than an ONNX file without external data holds"
        ));
    }
    Ok(model.encode_to_vec())
}

/// The model with its weights inline, and how many bytes those take.
fn build(graph: &Graph, sd: &StateDict) -> Result<(ModelProto, usize), String> {
    let a = analyze(graph, graph.input).map_err(|e| e.to_string())?;
    let mut w = Writer {
        nodes: Vec::new(),
        inits: Vec::new(),
        seen: HashSet::new(),
        sd,
        bytes: 0,
    };
    let value = |id: usize| -> String {
        if id == 0 {
            "input".to_owned()
        } else if id == graph.output {
            "logits".to_owned()
        } else {
            format!("{}#{id}", graph.nodes[id].name)
        }
    };
    for (id, node) in graph.nodes.iter().enumerate().skip(1) {
        let ins: Vec<String> = node.inputs.iter().map(|&i| value(i)).collect();
        let out = value(id);
        let name = node.name.as_str();
        let p = |suffix: &str| format!("{name}.{suffix}");
        match &node.op {
            Op::Input => return Err(format!("`{name}`: a second input")),
            Op::Conv2d {
                kernel,
                stride,
                padding,
                dilation,
                groups,
                bias,
                ..
            } => {
                let mut inputs = vec![ins[0].clone(), w.param(&p("weight"))?];
                if *bias {
                    inputs.push(w.param(&p("bias"))?);
                }
                w.node(
                    "Conv",
                    name,
                    inputs,
                    &out,
                    vec![
                        ints("kernel_shape", kernel),
                        ints("strides", stride),
                        ints("dilations", dilation),
                        ints("pads", &[padding[0], padding[1], padding[0], padding[1]]),
                        int("group", *groups as i64),
                    ],
                );
            }
            Op::Linear { bias, .. } if matches!(a.shapes[node.inputs[0]], Shape::Map { .. }) => {
                // On the channels of a map: channels last, x · Wᵀ + b, back.
                let last = w.channels_last(name, &ins[0], &out);
                let wt = format!("{out}.weight_t");
                let weight = w.param(&p("weight"))?;
                w.node(
                    "Transpose",
                    name,
                    vec![weight],
                    &wt,
                    vec![ints("perm", &[1, 0])],
                );
                let mut y = format!("{out}.matmul");
                w.node("MatMul", name, vec![last, wt], &y, vec![]);
                if *bias {
                    let with_bias = format!("{out}.linear");
                    let b = w.param(&p("bias"))?;
                    w.node("Add", name, vec![y, b], &with_bias, vec![]);
                    y = with_bias;
                }
                w.node(
                    "Transpose",
                    name,
                    vec![y],
                    &out,
                    vec![ints("perm", &[0, 3, 1, 2])],
                );
            }
            Op::Linear { bias, .. } if matches!(a.shapes[node.inputs[0]], Shape::Tokens { .. }) => {
                let weight = w.param(&p("weight"))?;
                let b = if *bias {
                    Some(w.param(&p("bias"))?)
                } else {
                    None
                };
                w.linear(name, &ins[0], weight, b, &out);
            }
            Op::Linear { bias, .. } => {
                let mut inputs = vec![ins[0].clone(), w.param(&p("weight"))?];
                if *bias {
                    inputs.push(w.param(&p("bias"))?);
                }
                w.node("Gemm", name, inputs, &out, vec![int("transB", 1)]);
            }
            Op::LayerNorm2d { eps, .. } => {
                let last = w.channels_last(name, &ins[0], &out);
                let normed = format!("{out}.layer_norm");
                let inputs = vec![last, w.param(&p("weight"))?, w.param(&p("bias"))?];
                w.node(
                    "LayerNormalization",
                    name,
                    inputs,
                    &normed,
                    vec![int("axis", -1), float("epsilon", *eps as f32)],
                );
                w.node(
                    "Transpose",
                    name,
                    vec![normed],
                    &out,
                    vec![ints("perm", &[0, 3, 1, 2])],
                );
            }
            Op::LayerScale { .. } => {
                let inputs = vec![w.param(&p("layer_scale"))?, ins[0].clone()];
                w.node("Mul", name, inputs, &out, vec![]);
            }
            Op::BatchNorm2d { eps, momentum, .. } => {
                let mut inputs = vec![ins[0].clone()];
                for s in ["weight", "bias", "running_mean", "running_var"] {
                    inputs.push(w.param(&p(s))?);
                }
                w.node(
                    "BatchNormalization",
                    name,
                    inputs,
                    &out,
                    vec![
                        float("epsilon", *eps as f32),
                        // ONNX weighs the running value; PyTorch the batch.
                        float("momentum", (1.0 - momentum) as f32),
                    ],
                );
            }
            Op::Relu => w.node("Relu", name, ins, &out, vec![]),
            Op::Relu6 => {
                let lo = w.constant(&format!("{out}.min"), 0.0);
                let hi = w.constant(&format!("{out}.max"), 6.0);
                w.node("Clip", name, vec![ins[0].clone(), lo, hi], &out, vec![]);
            }
            Op::Gelu => w.node("Gelu", name, ins, &out, vec![]),
            Op::Silu => {
                let s = format!("{out}.sigmoid");
                w.node("Sigmoid", &s, ins.clone(), &s, vec![]);
                w.node("Mul", name, vec![ins[0].clone(), s], &out, vec![]);
            }
            Op::Sigmoid => w.node("Sigmoid", name, ins, &out, vec![]),
            Op::Hardswish => w.node("HardSwish", name, ins, &out, vec![]),
            Op::Hardsigmoid => w.node(
                "HardSigmoid",
                name,
                ins,
                &out,
                vec![float("alpha", 1.0 / 6.0), float("beta", 0.5)],
            ),
            Op::MaxPool2d {
                kernel,
                stride,
                padding,
                ceil_mode,
            } => w.node(
                "MaxPool",
                name,
                ins,
                &out,
                vec![
                    ints("kernel_shape", kernel),
                    ints("strides", stride),
                    ints("pads", &[padding[0], padding[1], padding[0], padding[1]]),
                    int("ceil_mode", i64::from(*ceil_mode)),
                ],
            ),
            Op::AvgPool2d {
                kernel,
                stride,
                padding,
            } => w.node(
                "AveragePool",
                name,
                ins,
                &out,
                vec![
                    ints("kernel_shape", kernel),
                    ints("strides", stride),
                    ints("pads", &[padding[0], padding[1], padding[0], padding[1]]),
                    // PyTorch's default: padding counts in the average.
                    int("count_include_pad", 1),
                ],
            ),
            Op::AdaptiveAvgPool2d { output } => {
                if *output == [1, 1] {
                    w.node("GlobalAveragePool", name, ins, &out, vec![]);
                } else {
                    let Shape::Map { h, w: width, .. } = a.shapes[node.inputs[0]] else {
                        return Err(format!("`{name}`: adaptive pooling of a vector"));
                    };
                    if h % output[0] != 0 || width % output[1] != 0 {
                        return Err(format!(
                            "`{name}`: adaptive pooling from {h}×{width} to {}×{} has no ONNX operator (the sizes do not divide)",
                            output[0], output[1]
                        ));
                    }
                    let k = [h / output[0], width / output[1]];
                    w.node(
                        "AveragePool",
                        name,
                        ins,
                        &out,
                        vec![ints("kernel_shape", &k), ints("strides", &k)],
                    );
                }
            }
            Op::Flatten => w.node("Flatten", name, ins, &out, vec![int("axis", 1)]),
            Op::Add if ins.len() == 2 => w.node("Add", name, ins, &out, vec![]),
            Op::Add => w.node("Sum", name, ins, &out, vec![]),
            Op::Mul => {
                let mut acc = ins[0].clone();
                for (k, other) in ins.iter().enumerate().skip(1) {
                    let to = if k + 1 == ins.len() {
                        out.clone()
                    } else {
                        format!("{out}.{k}")
                    };
                    w.node("Mul", name, vec![acc, other.clone()], &to, vec![]);
                    acc = to;
                }
            }
            Op::Concat => w.node("Concat", name, ins, &out, vec![int("axis", 1)]),
            Op::Dropout { .. } | Op::Identity => w.node("Identity", name, ins, &out, vec![]),
            Op::ChannelShuffle { groups } => {
                let Shape::Map { c, h, w: wd } = a.shapes[node.inputs[0]] else {
                    return Err(format!("`{name}`: a channel shuffle of a flat tensor"));
                };
                let g = *groups as i64;
                let (c, h, wd) = (c as i64, h as i64, wd as i64);
                let split = w.ints_constant(&format!("{out}.split"), &[-1, g, c / g, h, wd]);
                let runs = format!("{out}.runs");
                w.node("Reshape", name, vec![ins[0].clone(), split], &runs, vec![]);
                let swapped = format!("{out}.swapped");
                w.node(
                    "Transpose",
                    name,
                    vec![runs],
                    &swapped,
                    vec![ints("perm", &[0, 2, 1, 3, 4])],
                );
                let back = w.ints_constant(&format!("{out}.shape"), &[-1, c, h, wd]);
                w.node("Reshape", name, vec![swapped, back], &out, vec![]);
            }
            Op::ToTokens => {
                // [N, C, H, W] → [N, C, H·W] → [N, H·W, C].
                let Shape::Map { c, .. } = a.shapes[node.inputs[0]] else {
                    return Err(format!("`{name}`: tokens of a map"));
                };
                let shape = w.ints_constant(&format!("{out}.shape"), &[0, c as i64, -1]);
                let flat = format!("{out}.flat");
                w.node("Reshape", name, vec![ins[0].clone(), shape], &flat, vec![]);
                w.node(
                    "Transpose",
                    name,
                    vec![flat],
                    &out,
                    vec![ints("perm", &[0, 2, 1])],
                );
            }
            Op::ClassToken { features } => {
                // The token expanded to [N, 1, F], then first in the sequence.
                let batch = format!("{out}.batch");
                w.node(
                    "Shape",
                    name,
                    vec![ins[0].clone()],
                    &batch,
                    vec![int("start", 0), int("end", 1)],
                );
                let rest = w.ints_constant(&format!("{out}.rest"), &[1, *features as i64]);
                let shape = format!("{out}.shape");
                w.node(
                    "Concat",
                    name,
                    vec![batch, rest],
                    &shape,
                    vec![int("axis", 0)],
                );
                let token = w.param(&node.key(""))?;
                let expanded = format!("{out}.expanded");
                w.node("Expand", name, vec![token, shape], &expanded, vec![]);
                w.node(
                    "Concat",
                    name,
                    vec![expanded, ins[0].clone()],
                    &out,
                    vec![int("axis", 1)],
                );
            }
            Op::PosEmbedding { .. } => {
                let e = w.param(&node.key(""))?;
                w.node("Add", name, vec![ins[0].clone(), e], &out, vec![]);
            }
            Op::LayerNorm { eps, .. } => {
                let inputs = vec![ins[0].clone(), w.param(&p("weight"))?, w.param(&p("bias"))?];
                w.node(
                    "LayerNormalization",
                    name,
                    inputs,
                    &out,
                    vec![int("axis", -1), float("epsilon", *eps as f32)],
                );
            }
            Op::MultiheadAttention { .. } => {
                let from = w.nodes.len();
                let l = crate::graph::AttentionLayout::of(&node.op).expect("an attention");
                let t = match a.shapes[node.inputs[0]] {
                    Shape::Tokens { t, .. } => t,
                    _ => return Err(format!("`{name}`: attention on a tensor other than tokens")),
                };
                w.attention(name, &ins[0], &out, &l, t)?;
                // The scope and class the dynamo exporter writes for an
                // `nn.MultiheadAttention`, so that prunex (and readers of
                // that metadata) see one module and read it back.
                if l.style == crate::graph::AttentionStyle::Torch {
                    for n in &mut w.nodes[from..] {
                        n.metadata_props = attention_scope(name);
                    }
                }
            }
            Op::TokenSelect { index } => {
                let at = format!("{out}.index");
                w.inits.push(tensor(
                    &at,
                    &Tensor {
                        shape: vec![],
                        data: TensorData::I64(vec![*index as i64]),
                    },
                ));
                w.node(
                    "Gather",
                    name,
                    vec![ins[0].clone(), at],
                    &out,
                    vec![int("axis", 1)],
                );
            }
            Op::Slice { start, end } => {
                let starts = w.ints_constant(&format!("{out}.starts"), &[*start as i64]);
                let ends = w.ints_constant(&format!("{out}.ends"), &[*end as i64]);
                let axes = w.ints_constant(&format!("{out}.axes"), &[1]);
                w.node(
                    "Slice",
                    name,
                    vec![ins[0].clone(), starts, ends, axes],
                    &out,
                    vec![],
                );
            }
        }
    }
    let [c, h, width] = graph.input;
    let classes = a.shapes[graph.output].channels();
    let model = ModelProto {
        ir_version: Some(9),
        opset_import: vec![OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(OPSET),
        }],
        producer_name: Some("prunex".into()),
        producer_version: Some(env!("CARGO_PKG_VERSION").into()),
        graph: Some(GraphProto {
            name: Some(graph.name.clone()),
            node: w.nodes,
            initializer: w.inits,
            input: vec![value_info("input", &[None, Some(c), Some(h), Some(width)])],
            output: vec![value_info("logits", &[None, Some(classes)])],
            ..Default::default()
        }),
        ..Default::default()
    };
    Ok((model, w.bytes))
}

struct Writer<'a> {
    nodes: Vec<NodeProto>,
    inits: Vec<TensorProto>,
    seen: HashSet<String>,
    sd: &'a StateDict,
    bytes: usize,
}

impl Writer<'_> {
    fn node(
        &mut self,
        op: &str,
        name: &str,
        inputs: Vec<String>,
        out: &str,
        attribute: Vec<AttributeProto>,
    ) {
        self.nodes.push(NodeProto {
            op_type: Some(op.into()),
            name: Some(format!("{name}#{}", self.nodes.len())),
            input: inputs,
            output: vec![out.to_owned()],
            attribute,
            ..Default::default()
        });
    }

    /// `x` with its channels last (`[N, H, W, C]`), for operators that act
    /// on the last axis; its name.
    fn channels_last(&mut self, name: &str, x: &str, out: &str) -> String {
        let last = format!("{out}.channels_last");
        self.node(
            "Transpose",
            name,
            vec![x.to_owned()],
            &last,
            vec![ints("perm", &[0, 2, 3, 1])],
        );
        last
    }

    /// `x · Wᵀ (+ b)` on the last axis of a tensor of any rank (a linear
    /// layer on tokens: `Gemm` takes only matrices).
    fn linear(&mut self, name: &str, x: &str, weight: String, bias: Option<String>, out: &str) {
        let wt = format!("{out}.weight_t");
        self.node(
            "Transpose",
            name,
            vec![weight],
            &wt,
            vec![ints("perm", &[1, 0])],
        );
        match bias {
            Some(b) => {
                let y = format!("{out}.matmul");
                self.node("MatMul", name, vec![x.to_owned(), wt], &y, vec![]);
                self.node("Add", name, vec![y, b], out, vec![]);
            }
            None => self.node("MatMul", name, vec![x.to_owned(), wt], out, vec![]),
        }
    }

    /// `nn.MultiheadAttention` on `x` `[N, T, E]`, as PyTorch computes it:
    /// the packed projection, per head softmax(q·kᵀ/√d)·v, the heads side
    /// by side, the output projection.
    fn attention(
        &mut self,
        name: &str,
        x: &str,
        out: &str,
        l: &crate::graph::AttentionLayout,
        tokens: usize,
    ) -> Result<(), String> {
        let key = |s: &str| format!("{name}.{s}");
        let (heads, kv, head_dim) = (l.heads as i64, l.kv_heads as i64, l.head_dim as i64);
        let a = heads * head_dim;
        // Projection `p` of `input` into `y`.
        let project =
            |w: &mut Self, p: &crate::graph::attention::Projection, input: &str, y: &str| {
                let weight = w.param(&key(p.weight))?;
                let bias = if l.bias {
                    Some(w.param(&key(p.bias))?)
                } else {
                    None
                };
                w.linear(name, input, weight, bias, y);
                Ok::<(), String>(())
            };
        let projections = l.projections();
        let mut qkv = Vec::new();
        if projections.len() == 2 {
            // Packed: [N, T, 3A] → [N, T, 3, H, d] → [3, N, H, T, d].
            let packed = format!("{out}.qkv");
            project(self, &projections[0], x, &packed)?;
            let split =
                self.ints_constant(&format!("{out}.split_shape"), &[0, 0, 3, heads, head_dim]);
            let parts = format!("{out}.parts");
            self.node("Reshape", name, vec![packed, split], &parts, vec![]);
            let stacked = format!("{out}.stacked");
            self.node(
                "Transpose",
                name,
                vec![parts],
                &stacked,
                vec![ints("perm", &[2, 0, 3, 1, 4])],
            );
            for (i, part) in ["q", "k", "v"].iter().enumerate() {
                let at = format!("{out}.{part}_index");
                self.inits.push(tensor(
                    &at,
                    &Tensor {
                        shape: vec![],
                        data: TensorData::I64(vec![i as i64]),
                    },
                ));
                let v = format!("{out}.{part}");
                self.node(
                    "Gather",
                    name,
                    vec![stacked.clone(), at],
                    &v,
                    vec![int("axis", 0)],
                );
                qkv.push(v);
            }
        } else {
            // Separate: each [N, T, k·d] → [N, k, T, d]; a key/value head
            // repeated for the query heads of its group.
            for (p, part) in projections[..3].iter().zip(["q", "k", "v"]) {
                let k = if part == "q" { heads } else { kv };
                let y = format!("{out}.{part}_proj");
                project(self, p, x, &y)?;
                let shape =
                    self.ints_constant(&format!("{out}.{part}_shape"), &[0, 0, k, head_dim]);
                let split = format!("{out}.{part}_split");
                self.node("Reshape", name, vec![y, shape], &split, vec![]);
                let mut v = format!("{out}.{part}");
                self.node(
                    "Transpose",
                    name,
                    vec![split],
                    &v,
                    vec![ints("perm", &[0, 2, 1, 3])],
                );
                if k != heads {
                    let axes = self.ints_constant(&format!("{out}.{part}_axes"), &[2]);
                    let one = format!("{out}.{part}_one");
                    self.node("Unsqueeze", name, vec![v, axes], &one, vec![]);
                    let reps = self
                        .ints_constant(&format!("{out}.{part}_reps"), &[1, 1, heads / kv, 1, 1]);
                    let wide = format!("{out}.{part}_wide");
                    self.node("Expand", name, vec![one, reps], &wide, vec![]);
                    let back = self.ints_constant(
                        &format!("{out}.{part}_heads"),
                        &[0, heads, tokens as i64, head_dim],
                    );
                    v = format!("{out}.{part}_grouped");
                    self.node("Reshape", name, vec![wide, back], &v, vec![]);
                }
                qkv.push(v);
            }
        }
        let kt = format!("{out}.k_t");
        self.node(
            "Transpose",
            name,
            vec![qkv[1].clone()],
            &kt,
            vec![ints("perm", &[0, 1, 3, 2])],
        );
        let scale = self.constant(&format!("{out}.scale"), 1.0 / (head_dim as f32).sqrt());
        let q = format!("{out}.q_scaled");
        self.node("Mul", name, vec![qkv[0].clone(), scale], &q, vec![]);
        let scores = format!("{out}.scores");
        self.node("MatMul", name, vec![q, kt], &scores, vec![]);
        let weights = format!("{out}.softmax");
        self.node(
            "Softmax",
            name,
            vec![scores],
            &weights,
            vec![int("axis", -1)],
        );
        let mixed = format!("{out}.mixed");
        self.node(
            "MatMul",
            name,
            vec![weights, qkv[2].clone()],
            &mixed,
            vec![],
        );
        // [N, H, T, d] → [N, T, H, d] → [N, T, A].
        let side = format!("{out}.heads_last");
        self.node(
            "Transpose",
            name,
            vec![mixed],
            &side,
            vec![ints("perm", &[0, 2, 1, 3])],
        );
        let joined_shape = self.ints_constant(&format!("{out}.joined_shape"), &[0, 0, a]);
        let joined = format!("{out}.joined");
        self.node("Reshape", name, vec![side, joined_shape], &joined, vec![]);
        project(self, &l.out(), &joined, out)
    }

    /// The initializer of `state_dict` key `key` (once, for a shared
    /// module); its name.
    fn param(&mut self, key: &str) -> Result<String, String> {
        if self.seen.insert(key.to_owned()) {
            let t = self
                .sd
                .get(key)
                .ok_or_else(|| format!("the weights have no `{key}`"))?;
            self.inits.push(tensor(key, t));
            self.bytes += t.data.len() * 4;
        }
        Ok(key.to_owned())
    }

    /// A scalar float initializer.
    fn constant(&mut self, name: &str, v: f32) -> String {
        self.inits
            .push(tensor(name, &Tensor::f32(Vec::new(), vec![v])));
        name.to_owned()
    }

    /// A 1-D int64 initializer (shapes, slice bounds); its name.
    fn ints_constant(&mut self, name: &str, v: &[i64]) -> String {
        self.inits.push(tensor(
            name,
            &Tensor {
                shape: vec![v.len()],
                data: TensorData::I64(v.to_vec()),
            },
        ));
        name.to_owned()
    }
}

/// Node metadata naming module `name` an `nn.MultiheadAttention`, as the
/// dynamo exporter writes it.
fn attention_scope(name: &str) -> Vec<super::proto::StringStringEntryProto> {
    let entry = |k: &str, v: String| super::proto::StringStringEntryProto {
        key: Some(k.into()),
        value: Some(v),
    };
    vec![
        entry(
            "pkg.torch.onnx.name_scopes",
            format!("['', '{name}', 'attention']"),
        ),
        entry(
            "pkg.torch.onnx.class_hierarchy",
            "['prunex', 'torch.nn.modules.activation.MultiheadAttention', 'attention']".into(),
        ),
    ]
}

fn tensor(name: &str, t: &Tensor) -> TensorProto {
    let (data_type, raw) = match &t.data {
        TensorData::F32(v) => (
            DataType::Float,
            v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        ),
        TensorData::I64(v) => (
            DataType::Int64,
            v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        ),
    };
    TensorProto {
        name: Some(name.into()),
        dims: t.shape.iter().map(|&d| d as i64).collect(),
        data_type: Some(data_type as i32),
        raw_data: Some(raw),
        ..Default::default()
    }
}

/// A float tensor's name and shape (`None`: the dynamic batch).
pub(crate) fn value_info(name: &str, dims: &[Option<usize>]) -> ValueInfoProto {
    ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: Some(DataType::Float as i32),
                shape: Some(TensorShapeProto {
                    dim: dims
                        .iter()
                        .map(|d| Dimension {
                            value: Some(match d {
                                Some(n) => Value::DimValue(*n as i64),
                                None => Value::DimParam("batch".into()),
                            }),
                            ..Default::default()
                        })
                        .collect(),
                }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn ints(name: &str, v: &[usize]) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Ints as i32),
        ints: v.iter().map(|&x| x as i64).collect(),
        ..Default::default()
    }
}

fn int(name: &str, v: i64) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Int as i32),
        i: Some(v),
        ..Default::default()
    }
}

fn float(name: &str, v: f32) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Float as i32),
        f: Some(v),
        ..Default::default()
    }
}
