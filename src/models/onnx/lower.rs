//! ONNX nodes to graph operations, named by PyTorch module path.

mod attention;

use std::collections::{BTreeMap, HashMap, HashSet};

use super::proto::{attribute_proto::AttributeType, AttributeProto, NodeProto};
use super::read::Model;
use super::{Imported, OnnxError, ParamSource};
use crate::graph::{Graph, Node, NodeId, Op};
use crate::syntax::Loader;
use crate::tensor::{StateDict, Tensor, TensorData};

/// What an ONNX value is while lowering.
#[derive(Clone, Debug)]
enum Val {
    /// A graph node's output.
    Node(NodeId),
    /// An initializer, by index (its data is read only when needed).
    Init(usize),
    /// A constant computed from constants.
    Const(Tensor),
    /// A graph node's feature map with its channels last (`[N, H, W, C]`,
    /// after a `Transpose` with perm `[0, 2, 3, 1]`): what ConvNeXt's
    /// LayerNorm and linear layers read.
    Last(NodeId),
    /// A 2-D initializer transposed (`Wᵀ`, the right operand of a linear
    /// layer's `MatMul`).
    InitT(usize),
    /// A graph node's output flattened to one dimension, batch included
    /// (`Reshape(x, [-1])`, which the exporter writes before gathering it
    /// back into its shape).
    Raveled(NodeId),
    /// A map's channels read as `groups` runs (`Reshape` to
    /// `[N, groups, C / groups, H, W]`: the first step of a channel shuffle).
    Runs(NodeId, usize),
    /// Those runs transposed (`[N, C / groups, groups, H, W]`); reshaped
    /// back to `[N, C, H, W]` they are the shuffled channels.
    Swapped(NodeId, usize),
    /// A map split along the channels into a sequence (`SplitToSequence`):
    /// each part's channel range.
    Parts(NodeId, Vec<(usize, usize)>),
    /// A map reshaped to `[N, C, H·W]`; transposed to `[N, H·W, C]` it is
    /// the map's tokens.
    Seq(NodeId),
    /// A `[1, 1, F]` initializer expanded over the batch: a class token
    /// on its way to be concatenated before the tokens.
    Token(usize),
    /// The output of a node prunex does not import.
    Unknown,
}

impl Val {
    /// Whether the value is computed from the model input (or unknown):
    /// not something constant arithmetic can evaluate.
    fn dynamic(&self) -> bool {
        matches!(
            self,
            Val::Node(_)
                | Val::Last(_)
                | Val::InitT(_)
                | Val::Raveled(_)
                | Val::Runs(..)
                | Val::Swapped(..)
                | Val::Parts(..)
                | Val::Seq(_)
                | Val::Token(_)
                | Val::Unknown
        )
    }
}

/// The most elements a folded constant may have (exporters fold shapes
/// and biases, never anything near this).
const MAX_FOLDED: usize = 1 << 24;

/// One operator prunex does not import: uses, first node, its module.
type Unsupported = BTreeMap<String, (usize, String, String)>;

struct Lowering<'a> {
    model: &'a Model,
    loader: &'a dyn Loader,
    vals: HashMap<String, Val>,
    inits: HashMap<&'a str, usize>,
    nodes: Vec<Node>,
    names: HashSet<String>,
    /// Parametric modules already named, with their first weight source.
    modules: HashMap<String, String>,
    sources: Vec<(String, ParamSource)>,
    notes: Vec<String>,
    anonymous: Vec<String>,
    folded: Vec<String>,
    unsupported: Unsupported,
    /// `Add` nodes (by output) that add a linear layer's bias, which the
    /// layer took in when its `MatMul` was lowered: their value.
    absorbed: HashMap<String, Val>,
    /// The model input's `[C, H, W]`.
    input: [usize; 3],
    /// The batch size the export fixed (shapes the tracer wrote out hold
    /// it), or -1 when dynamic.
    batch: i64,
}

/// Lowers `model` to a graph. Constants the graph's shape arithmetic needs
/// are read through `loader`; weights are not.
pub fn lower(model: &Model, loader: &dyn Loader) -> Result<Imported, OnnxError> {
    let graph = model.proto.graph.as_ref().expect("checked when opened");
    let inits: HashMap<&str, usize> = graph
        .initializer
        .iter()
        .enumerate()
        .map(|(i, t)| (t.name(), i))
        .collect();
    let mut lw = Lowering {
        model,
        loader,
        vals: HashMap::new(),
        inits,
        nodes: Vec::new(),
        names: HashSet::new(),
        modules: HashMap::new(),
        sources: Vec::new(),
        notes: Vec::new(),
        anonymous: Vec::new(),
        folded: Vec::new(),
        unsupported: BTreeMap::new(),
        absorbed: HashMap::new(),
        input: [0; 3],
        batch: -1,
    };
    for (name, &i) in &lw.inits {
        lw.vals.insert((*name).to_owned(), Val::Init(i));
    }
    // The model input: the one graph input that is not an initializer.
    let inputs: Vec<_> = graph
        .input
        .iter()
        .filter(|v| !lw.inits.contains_key(v.name()))
        .collect();
    let [input] = inputs[..] else {
        return Err(lw.malformed_graph(format!(
            "it has {} inputs; prunex imports models with one image input",
            inputs.len()
        )));
    };
    let dims = input_dims(input);
    let chw = match dims.as_slice() {
        [_, Some(c), Some(h), Some(w)] => [*c, *h, *w],
        _ => {
            return Err(lw.malformed_graph(format!(
                "its input `{}` is not a fixed [N, C, H, W] image batch ({dims:?})",
                input.name()
            )))
        }
    };
    lw.input = chw;
    lw.batch = dims.first().copied().flatten().map_or(-1, |n| n as i64);
    lw.nodes.push(Node {
        name: "input".into(),
        op: Op::Input,
        inputs: Vec::new(),
        functional: true,
    });
    lw.names.insert("input".into());
    lw.vals.insert(input.name().to_owned(), Val::Node(0));
    let attention_modules = attention::modules(graph);
    let mut k = 0;
    while k < graph.node.len() {
        let node = &graph.node[k];
        k += 1;
        let module = scope(node).0;
        if node.op_type() != "Constant" && attention_modules.contains(&module) {
            // A whole attention layer at once.
            let end = attention::region_end(&graph.node, k - 1, &module);
            let region = &graph.node[k - 1..end];
            k = end;
            let outs = match lw.attention(region, &module) {
                Ok(v) => v,
                Err(Skip::Unsupported(what)) => {
                    let e =
                        lw.unsupported
                            .entry(what)
                            .or_insert((0, node.name().to_owned(), module));
                    e.0 += 1;
                    region
                        .iter()
                        .map(|n| vec![Val::Unknown; n.output.len()])
                        .collect()
                }
                Err(Skip::Downstream) => region
                    .iter()
                    .map(|n| vec![Val::Unknown; n.output.len()])
                    .collect(),
                Err(Skip::Error(e)) => return Err(e),
            };
            for (n, vs) in region.iter().zip(outs) {
                for (name, v) in n.output.iter().zip(vs) {
                    if !name.is_empty() {
                        lw.vals.insert(name.clone(), v);
                    }
                }
            }
            continue;
        }
        let outs = match lw.node(node) {
            Ok(v) => v,
            Err(Skip::Unsupported(what)) => {
                let (module, _) = scope(node);
                let e = lw
                    .unsupported
                    .entry(what)
                    .or_insert((0, node.name().to_owned(), module));
                e.0 += 1;
                vec![Val::Unknown; node.output.len()]
            }
            Err(Skip::Downstream) => vec![Val::Unknown; node.output.len()],
            Err(Skip::Error(e)) => return Err(e),
        };
        for (name, v) in node.output.iter().zip(outs) {
            if !name.is_empty() {
                lw.vals.insert(name.clone(), v);
            }
        }
    }
    if !lw.unsupported.is_empty() {
        let ops: Vec<String> = lw
            .unsupported
            .iter()
            .map(|(op, (n, node, module))| {
                let at = if module.is_empty() {
                    format!("node `{node}`")
                } else {
                    format!("node `{node}`, module `{module}`")
                };
                format!("{op} ×{n} (first: {at})")
            })
            .collect();
        return Err(OnnxError::Unsupported {
            path: model.path.display().to_string(),
            ops: ops.join("; "),
            help: "prunex imports the operators of torchvision's classifiers (docs/models.md lists them); export the model's convolutional part, or open an issue with the operator and the model".into(),
        });
    }
    let outputs: Vec<&str> = graph.output.iter().map(|o| o.name()).collect();
    let output = match outputs.as_slice() {
        [one] => match lw.vals.get(*one) {
            Some(Val::Node(0)) => {
                return Err(
                    lw.malformed_graph("its output is its input: the model has no layers".into())
                )
            }
            Some(Val::Node(id)) => *id,
            _ => {
                return Err(lw
                    .malformed_graph(format!("its output `{one}` is not computed from the input")))
            }
        },
        _ => {
            return Err(lw.malformed_graph(format!(
                "it has {} outputs; prunex imports models with one output (the logits)",
                outputs.len()
            )))
        }
    };
    if !lw.anonymous.is_empty() {
        lw.notes.push(format!(
            "{} initializers had no PyTorch name ({}…): named after their node's module path (the TorchScript exporter leaves the convolutions it folded BatchNorm into so; export with `do_constant_folding=False` to keep BatchNorm and the names)",
            lw.anonymous.len(),
            lw.anonymous[0]
        ));
    }
    if !lw.folded.is_empty() {
        lw.notes.push(format!(
            "the exporter folded BatchNorm into {} convolutions ({}): the model has no BatchNorm there; export with `optimize=False` (dynamo) or `do_constant_folding=False` (TorchScript) to keep it",
            lw.folded.len(),
            lw.folded.iter().take(3).cloned().collect::<Vec<_>>().join(", ")
        ));
    }
    let name = model
        .path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "onnx".into());
    let graph = reachable(Graph {
        name,
        input: chw,
        nodes: lw.nodes,
        output,
    });
    let keys: HashSet<String> = graph.state_keys().into_iter().map(|(k, _)| k).collect();
    let sources = lw
        .sources
        .into_iter()
        .filter(|(k, _)| keys.contains(k))
        .collect();
    crate::graph::analyze(&graph, graph.input).map_err(|e| OnnxError::BadGraph {
        path: model.path.display().to_string(),
        reason: format!("the imported graph does not compute: {e}"),
    })?;
    Ok(Imported {
        graph,
        notes: lw.notes,
        sources,
    })
}

/// The model's weights by `state_dict` key, read from the initializers.
pub fn weights(
    model: &Model,
    imported: &Imported,
    loader: &dyn Loader,
) -> Result<StateDict, OnnxError> {
    let graph = model.proto.graph.as_ref().expect("checked when opened");
    let by_name: HashMap<&str, usize> = graph
        .initializer
        .iter()
        .enumerate()
        .map(|(i, t)| (t.name(), i))
        .collect();
    let mut out = StateDict::new();
    for (key, source) in &imported.sources {
        let t = match source {
            ParamSource::Init(name) => {
                model.tensor(&graph.initializer[by_name[name.as_str()]], loader)?
            }
            ParamSource::Const(t) => t.clone(),
            ParamSource::Transposed(name) => {
                let t = model.tensor(&graph.initializer[by_name[name.as_str()]], loader)?;
                transpose2(&t).ok_or_else(|| OnnxError::BadGraph {
                    path: model.path.display().to_string(),
                    reason: format!("`{name}` is not a matrix"),
                })?
            }
        };
        out.insert(key.clone(), t);
    }
    Ok(out)
}

/// A matrix transposed.
fn transpose2(t: &Tensor) -> Option<Tensor> {
    let [r, c] = <[usize; 2]>::try_from(t.shape.as_slice()).ok()?;
    let v = t.as_f32()?;
    let mut out = vec![0.0f32; v.len()];
    for i in 0..r {
        for j in 0..c {
            out[j * r + i] = v[i * c + j];
        }
    }
    Some(Tensor::f32(vec![c, r], out))
}

/// Why a node was not lowered.
enum Skip {
    /// An operator (or a use of one) prunex does not import.
    Unsupported(String),
    /// A node reading what an unsupported one computes: not counted, so
    /// the report names the operators to fix, not everything after them.
    Downstream,
    /// A file that is wrong.
    Error(OnnxError),
}

impl From<OnnxError> for Skip {
    fn from(e: OnnxError) -> Self {
        Skip::Error(e)
    }
}

type Lowered = Result<Vec<Val>, Skip>;

/// The module path of a node and its module's class, from the dynamo
/// exporter's metadata or the TorchScript exporter's node name
/// (`/layer1/layer1.0/conv1/Conv` → `layer1.0.conv1`).
fn scope(node: &NodeProto) -> (String, Option<String>) {
    let meta = |k: &str| {
        node.metadata_props
            .iter()
            .find(|p| p.key() == k)
            .map(|p| py_list(p.value()))
    };
    if let Some(scopes) = meta("pkg.torch.onnx.name_scopes") {
        let class = meta("pkg.torch.onnx.class_hierarchy")
            .and_then(|c| c.len().checked_sub(2).map(|i| c[i].clone()));
        let module = match scopes.len() {
            n if n >= 3 => scopes[n - 2].clone(),
            _ => String::new(),
        };
        return (module, class);
    }
    let name = node.name();
    if name.starts_with('/') {
        let segs: Vec<&str> = name.split('/').filter(|s| !s.is_empty()).collect();
        let mut path: Vec<&str> = Vec::new();
        for seg in &segs[..segs.len().saturating_sub(1)] {
            match path.last() {
                Some(last) if seg.starts_with(&format!("{last}.")) => {
                    *path.last_mut().expect("non-empty") = seg;
                }
                _ => path.push(seg),
            }
        }
        return (path.join("."), None);
    }
    (String::new(), None)
}

/// `['', 'layer1', 'layer1.0']` → its strings.
fn py_list(s: &str) -> Vec<String> {
    s.trim()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .split(", ")
        .map(|x| x.trim().trim_matches('\'').trim_matches('"').to_owned())
        .collect()
}

fn input_dims(v: &super::proto::ValueInfoProto) -> Vec<Option<usize>> {
    use super::proto::{tensor_shape_proto::dimension::Value, type_proto};
    let Some(type_proto::Value::TensorType(t)) = v.r#type.as_ref().and_then(|t| t.value.as_ref())
    else {
        return Vec::new();
    };
    t.shape
        .as_ref()
        .map(|s| {
            s.dim
                .iter()
                .map(|d| match d.value {
                    Some(Value::DimValue(x)) if x > 0 => Some(x as usize),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default()
}

fn attr<'n>(node: &'n NodeProto, name: &str) -> Option<&'n AttributeProto> {
    node.attribute.iter().find(|a| a.name() == name)
}

fn attr_i(node: &NodeProto, name: &str, default: i64) -> i64 {
    attr(node, name).and_then(|a| a.i).unwrap_or(default)
}

fn attr_f(node: &NodeProto, name: &str, default: f32) -> f32 {
    attr(node, name).and_then(|a| a.f).unwrap_or(default)
}

fn attr_ints(node: &NodeProto, name: &str) -> Option<Vec<i64>> {
    attr(node, name).map(|a| a.ints.clone())
}

fn pair(v: &[i64]) -> Option<[usize; 2]> {
    match v {
        [a, b] if *a >= 0 && *b >= 0 => Some([*a as usize, *b as usize]),
        _ => None,
    }
}

impl<'a> Lowering<'a> {
    fn malformed_graph(&self, reason: String) -> OnnxError {
        OnnxError::BadGraph {
            path: self.model.path.display().to_string(),
            reason,
        }
    }

    fn malformed(&self, node: &NodeProto, reason: impl Into<String>) -> Skip {
        Skip::Error(OnnxError::Malformed {
            path: self.model.path.display().to_string(),
            node: node.name().to_owned(),
            op: node.op_type().to_owned(),
            module: scope(node).0,
            reason: reason.into(),
        })
    }

    fn val(&self, node: &NodeProto, i: usize) -> Result<Val, Skip> {
        match node.input.get(i).filter(|n| !n.is_empty()) {
            None => Ok(Val::Unknown),
            Some(name) => match self.vals.get(name) {
                Some(Val::Unknown) => Err(Skip::Downstream),
                Some(v) => Ok(v.clone()),
                None => Err(self.malformed(node, format!("its input `{name}` is never computed"))),
            },
        }
    }

    /// A constant's value (reading an initializer's data).
    fn constant(&self, v: &Val) -> Result<Option<Tensor>, OnnxError> {
        match v {
            Val::Const(t) => Ok(Some(t.clone())),
            Val::Init(i) => {
                let g = self.model.proto.graph.as_ref().expect("checked");
                self.model.tensor(&g.initializer[*i], self.loader).map(Some)
            }
            _ => Ok(None),
        }
    }

    /// The shape of a constant, without reading its data.
    fn const_shape(&self, v: &Val) -> Option<Vec<usize>> {
        match v {
            Val::Const(t) => Some(t.shape.clone()),
            Val::Init(i) => {
                let g = self.model.proto.graph.as_ref().expect("checked");
                Some(
                    g.initializer[*i]
                        .dims
                        .iter()
                        .map(|&d| d.max(0) as usize)
                        .collect(),
                )
            }
            _ => None,
        }
    }

    fn init_name(&self, v: &Val) -> Option<String> {
        match v {
            Val::Init(i) => {
                let g = self.model.proto.graph.as_ref().expect("checked");
                Some(g.initializer[*i].name().to_owned())
            }
            _ => None,
        }
    }

    /// Where a parameter's values are: an initializer or a constant; a
    /// computed or missing parameter is not imported.
    fn source(&self, node: &NodeProto, v: &Val) -> Result<ParamSource, Skip> {
        match v {
            Val::Init(_) => Ok(ParamSource::Init(
                self.init_name(v).expect("an initializer"),
            )),
            Val::Const(t) => Ok(ParamSource::Const(t.clone())),
            Val::Unknown => Err(self.malformed(node, "a parameter input is missing")),
            // Every other value is computed from the model input.
            _ => Err(Skip::Unsupported(format!(
                "{} (with computed parameters)",
                node.op_type()
            ))),
        }
    }

    fn unique(&mut self, base: &str) -> String {
        let base = if base.is_empty() { "op" } else { base };
        let mut name = base.to_owned();
        let mut k = 1;
        while self.names.contains(&name) {
            name = format!("{base}_{k}");
            k += 1;
        }
        self.names.insert(name.clone());
        name
    }

    fn push(&mut self, name: String, op: Op, inputs: Vec<NodeId>, functional: bool) -> Val {
        self.nodes.push(Node {
            name,
            op,
            inputs,
            functional,
        });
        Val::Node(self.nodes.len() - 1)
    }

    /// A non-parametric node, named after its scope. Where a `torch.nn`
    /// module computed it (an `nn.ReLU`, an `nn.AdaptiveAvgPool2d`), it is
    /// that module, by its path (a module called twice is one name, as in
    /// PyTorch), and its MACs count as Torch-Pruning's counter counts the
    /// module's; else it is functional. The dynamo exporter names the
    /// module's class; in a TorchScript export, a scope that holds no
    /// parameters (`/layer1/layer1.0/relu/Relu`, not `/layer1/layer1.0/Relu`
    /// in a block's own forward) is a module's.
    fn functional(&mut self, node: &NodeProto, op: Op, inputs: Vec<NodeId>) -> Lowered {
        let (module, class) = scope(node);
        let module_call = match class.as_deref() {
            Some(c) => {
                c.starts_with("torch.nn.modules.") && !c.starts_with("torch.nn.modules.container.")
            }
            None if node.name().starts_with('/') && !module.is_empty() => {
                let inside = format!("{module}.");
                !self.inits.keys().any(|k| k.starts_with(&inside))
            }
            None => false,
        };
        if module_call && !module.is_empty() {
            self.names.insert(module.clone());
            return Ok(vec![self.push(module, op, inputs, false)]);
        }
        let base = if module.is_empty() {
            op.kind().to_owned()
        } else {
            module
        };
        let name = self.unique(&base);
        Ok(vec![self.push(name, op, inputs, true)])
    }

    /// The module path of a parametric node: its weight's name (`x.weight`)
    /// when the exporter kept it, else its scope.
    fn module_name(&mut self, node: &NodeProto, weight: &Val) -> String {
        let (scope_path, class) = scope(node);
        let from_weight = self.init_name(weight).and_then(|n| {
            n.strip_suffix(".weight")
                .filter(|p| !p.starts_with("onnx::") && !p.is_empty())
                .map(str::to_owned)
        });
        let name = match from_weight {
            Some(n) => n,
            None => {
                // A linear layer's transposed weight (`onnx::MatMul_N`) is
                // named by its scope, which is its module's path: nothing
                // is lost.
                if let Some(n) = self
                    .init_name(weight)
                    .filter(|n| !n.starts_with("onnx::MatMul"))
                {
                    self.anonymous.push(n);
                }
                if scope_path.is_empty() {
                    format!(
                        "{}_{}",
                        node.op_type().to_ascii_lowercase(),
                        self.nodes.len()
                    )
                } else {
                    scope_path.clone()
                }
            }
        };
        if node.op_type() == "Conv" && class.as_deref().is_some_and(|c| c.contains("BatchNorm")) {
            self.folded.push(format!("`{scope_path}` into `{name}`"));
        }
        name
    }

    /// Registers a parametric module's parameters; a module met again
    /// (shared) must use the same weight.
    fn params(
        &mut self,
        node: &NodeProto,
        name: &str,
        op: &Op,
        params: &[(&str, &Val)],
    ) -> Result<bool, Skip> {
        // Every parameter has the shape the module's state_dict needs.
        let expected: HashMap<&str, Vec<usize>> = op.state().into_iter().collect();
        for (suffix, v) in params {
            let shape = self.const_shape(v);
            if shape.as_ref() != expected.get(suffix) {
                return Err(self.malformed(
                    node,
                    format!(
                        "its `{suffix}` has shape {shape:?}, the layer needs {:?}",
                        expected.get(suffix)
                    ),
                ));
            }
        }
        let first = params
            .first()
            .map(|(_, v)| self.init_name(v).unwrap_or_default())
            .unwrap_or_default();
        if let Some(prev) = self.modules.get(name) {
            if *prev == first && !first.is_empty() {
                return Ok(true);
            }
            return Err(self.malformed(
                node,
                format!("a second module is named `{name}`, with other weights"),
            ));
        }
        self.modules.insert(name.to_owned(), first);
        self.names.insert(name.to_owned());
        for (suffix, v) in params {
            let s = self.source(node, v)?;
            let key = if suffix.is_empty() {
                name.to_owned()
            } else {
                format!("{name}.{suffix}")
            };
            self.sources.push((key, s));
        }
        Ok(false)
    }

    fn node_input(&self, node: &NodeProto, i: usize) -> Result<NodeId, Skip> {
        match self.val(node, i)? {
            Val::Node(id) => Ok(id),
            _ => Err(Skip::Unsupported(format!(
                "{} (on a constant input)",
                node.op_type()
            ))),
        }
    }

    fn node(&mut self, node: &NodeProto) -> Lowered {
        if !matches!(node.domain(), "" | "ai.onnx") {
            return Err(Skip::Unsupported(format!(
                "{}::{}",
                node.domain(),
                node.op_type()
            )));
        }
        let op = node.op_type();
        if let Some(v) = node.output.first().and_then(|o| self.absorbed.get(o)) {
            return Ok(vec![v.clone()]);
        }
        // A class token expanded over the batch (before constant arithmetic,
        // which would fold the parameter away).
        if op == "Expand" {
            if let Ok(Val::Init(i)) = self.val(node, 0) {
                if matches!(self.const_shape(&Val::Init(i)).as_deref(), Some([1, 1, _])) {
                    return Ok(vec![Val::Token(i)]);
                }
            }
        }
        // Constant arithmetic first: exporters compute shapes and zero
        // biases with these.
        if let Some(v) = self.fold(node)? {
            return Ok(vec![v]);
        }
        match op {
            "Identity" | "Dropout" => Ok(vec![self.val(node, 0)?, Val::Unknown]),
            "Conv" => self.conv(node),
            "BatchNormalization" => self.batchnorm(node),
            "Gemm" => self.gemm(node),
            "Relu" => self.unary(node, Op::Relu),
            "Sigmoid" => self.unary(node, Op::Sigmoid),
            "HardSwish" => self.unary(node, Op::Hardswish),
            "HardSigmoid" => {
                let (alpha, beta) = (attr_f(node, "alpha", 0.2), attr_f(node, "beta", 0.5));
                if (alpha - 1.0 / 6.0).abs() > 1e-6 || (beta - 0.5).abs() > 1e-6 {
                    return Err(Skip::Unsupported(format!(
                        "HardSigmoid (alpha {alpha}, beta {beta}; PyTorch's is 1/6, 0.5)"
                    )));
                }
                self.unary(node, Op::Hardsigmoid)
            }
            "Gelu" => {
                if !matches!(
                    attr(node, "approximate").and_then(|a| a.s.as_deref()),
                    None | Some(b"none")
                ) {
                    return Err(Skip::Unsupported("Gelu (tanh approximation)".into()));
                }
                self.unary(node, Op::Gelu)
            }
            "Clip" => self.clip(node),
            "Add" | "Mul" => self.binary(node),
            "Concat" => {
                let axis = attr_i(node, "axis", 0);
                if let (1, Val::Token(i), Ok(Val::Node(x))) =
                    (axis, self.val(node, 0)?, self.val(node, 1))
                {
                    return self.class_token(node, i, x);
                }
                if axis != 1 && axis != -3 {
                    return Err(Skip::Unsupported(format!("Concat (axis {axis})")));
                }
                let ins = (0..node.input.len())
                    .map(|i| self.node_input(node, i))
                    .collect::<Result<Vec<_>, _>>()?;
                self.functional(node, Op::Concat, ins)
            }
            "MaxPool" | "AveragePool" => self.pool(node),
            "GlobalAveragePool" => {
                let x = self.node_input(node, 0)?;
                self.functional(node, Op::AdaptiveAvgPool2d { output: [1, 1] }, vec![x])
            }
            "ReduceMean" => self.reduce_mean(node),
            "Flatten" => {
                if attr_i(node, "axis", 1) != 1 {
                    return Err(Skip::Unsupported("Flatten (axis other than 1)".into()));
                }
                let x = self.node_input(node, 0)?;
                self.functional(node, Op::Flatten, vec![x])
            }
            "Transpose" => self.transpose(node),
            "LayerNormalization" => self.layer_norm(node),
            "MatMul" => self.matmul(node),
            "Gather" => self.gather(node),
            "Reshape" => self.reshape(node),
            "SplitToSequence" => self.split_to_sequence(node),
            "SequenceAt" => self.sequence_at(node),
            "Slice" => self.slice(node),
            other => Err(Skip::Unsupported(other.to_owned())),
        }
    }

    fn conv(&mut self, node: &NodeProto) -> Lowered {
        let x = self.node_input(node, 0)?;
        let w = self.val(node, 1)?;
        let Some(ws) = self.const_shape(&w) else {
            return Err(Skip::Unsupported("Conv (with computed weights)".into()));
        };
        if ws.len() != 4 {
            return Err(Skip::Unsupported(format!(
                "Conv ({}-D)",
                ws.len().saturating_sub(2)
            )));
        }
        if !matches!(
            attr(node, "auto_pad").and_then(|a| a.s.as_deref()),
            None | Some(b"NOTSET")
        ) {
            return Err(self.malformed(node, "auto_pad is set; prunex reads explicit pads"));
        }
        let groups = attr_i(node, "group", 1).max(1) as usize;
        let pads = attr_ints(node, "pads").unwrap_or_else(|| vec![0; 4]);
        let padding = match pads.as_slice() {
            [t, l, b, r] if t == b && l == r && *t >= 0 && *l >= 0 => [*t as usize, *l as usize],
            _ => return Err(self.malformed(node, format!("asymmetric pads {pads:?}"))),
        };
        let stride = pair(&attr_ints(node, "strides").unwrap_or(vec![1, 1]))
            .ok_or_else(|| self.malformed(node, "strides are not 2-D"))?;
        let dilation = pair(&attr_ints(node, "dilations").unwrap_or(vec![1, 1]))
            .ok_or_else(|| self.malformed(node, "dilations are not 2-D"))?;
        let b = self.val(node, 2)?;
        // A bias the exporter made of zeros (a convolution without one).
        let bias = match &b {
            Val::Unknown => None,
            Val::Const(t) if t.as_f32().is_some_and(|v| v.iter().all(|&x| x == 0.0)) => None,
            other => Some(other.clone()),
        };
        let name = self.module_name(node, &w);
        let mut params = vec![("weight", &w)];
        if let Some(b) = &bias {
            params.push(("bias", b));
        }
        let op = Op::Conv2d {
            in_channels: ws[1].saturating_mul(groups),
            out_channels: ws[0],
            kernel: [ws[2], ws[3]],
            stride,
            padding,
            dilation,
            groups,
            bias: bias.is_some(),
        };
        self.params(node, &name, &op, &params)?;
        Ok(vec![self.push(name, op, vec![x], false)])
    }

    fn batchnorm(&mut self, node: &NodeProto) -> Lowered {
        let x = self.node_input(node, 0)?;
        let vals = (1..5)
            .map(|i| self.val(node, i))
            .collect::<Result<Vec<_>, _>>()?;
        let Some(features) = self.const_shape(&vals[0]).and_then(|s| s.first().copied()) else {
            return Err(Skip::Unsupported(
                "BatchNormalization (computed parameters)".into(),
            ));
        };
        // The module: the scale's name (`bn1.weight`), else the scope.
        let name = self.module_name(node, &vals[0]);
        let tracked = Val::Const(Tensor {
            shape: Vec::new(),
            data: TensorData::I64(vec![0]),
        });
        let op = Op::BatchNorm2d {
            features,
            eps: f64::from(attr_f(node, "epsilon", 1e-5)),
            // ONNX's momentum weighs the running value; PyTorch's the batch.
            momentum: attr(node, "momentum")
                .and_then(|a| a.f)
                .map_or(0.1, |m| f64::from(1.0 - m)),
        };
        self.params(
            node,
            &name,
            &op,
            &[
                ("weight", &vals[0]),
                ("bias", &vals[1]),
                ("running_mean", &vals[2]),
                ("running_var", &vals[3]),
                ("num_batches_tracked", &tracked),
            ],
        )?;
        Ok(vec![self.push(name, op, vec![x], false)])
    }

    fn gemm(&mut self, node: &NodeProto) -> Lowered {
        let x = self.node_input(node, 0)?;
        let w = self.val(node, 1)?;
        let Some(ws) = self.const_shape(&w) else {
            return Err(Skip::Unsupported("Gemm (with computed weights)".into()));
        };
        if attr_i(node, "transA", 0) != 0
            || attr_i(node, "transB", 0) != 1
            || attr_f(node, "alpha", 1.0) != 1.0
            || attr_f(node, "beta", 1.0) != 1.0
            || ws.len() != 2
        {
            return Err(Skip::Unsupported(
                "Gemm (other than nn.Linear's x·Wᵀ + b)".into(),
            ));
        }
        let b = self.val(node, 2)?;
        let bias = !matches!(b, Val::Unknown);
        let name = self.module_name(node, &w);
        let mut params = vec![("weight", &w)];
        if bias {
            params.push(("bias", &b));
        }
        let op = Op::Linear {
            in_features: ws[1],
            out_features: ws[0],
            bias,
        };
        self.params(node, &name, &op, &params)?;
        Ok(vec![self.push(name, op, vec![x], false)])
    }

    /// An element-wise operation, on a feature map in either layout (the
    /// result keeps it).
    fn unary(&mut self, node: &NodeProto, op: Op) -> Lowered {
        match self.val(node, 0)? {
            Val::Last(x) => {
                let out = self.functional(node, op, vec![x])?;
                Ok(out
                    .into_iter()
                    .map(|v| match v {
                        Val::Node(id) => Val::Last(id),
                        other => other,
                    })
                    .collect())
            }
            _ => {
                let x = self.node_input(node, 0)?;
                self.functional(node, op, vec![x])
            }
        }
    }

    /// Permutes that prunex follows: a feature map to channels last and
    /// back, and a weight transposed for `MatMul`.
    fn transpose(&mut self, node: &NodeProto) -> Lowered {
        let perm = attr_ints(node, "perm").unwrap_or_default();
        let v = self.val(node, 0)?;
        match (&v, perm.as_slice()) {
            (Val::Init(i), [1, 0]) => Ok(vec![Val::InitT(*i)]),
            (Val::Node(x), [0, 2, 3, 1]) => Ok(vec![Val::Last(*x)]),
            (Val::Last(x), [0, 3, 1, 2]) => Ok(vec![Val::Node(*x)]),
            (Val::Runs(x, g), [0, 2, 1, 3, 4]) => Ok(vec![Val::Swapped(*x, *g)]),
            (Val::Seq(x), [0, 2, 1]) => {
                let x = *x;
                self.functional(node, Op::ToTokens, vec![x])
            }
            _ => Err(Skip::Unsupported(format!(
                "Transpose (perm {perm:?}{})",
                match v {
                    Val::Last(_) => ", of a channels-last map",
                    Val::Node(_) => "",
                    _ => ", of a constant",
                }
            ))),
        }
    }

    /// `LayerNormalization` over the channels of a channels-last map:
    /// torchvision's `LayerNorm2d`, ConvNeXt's `LayerNorm`.
    fn layer_norm(&mut self, node: &NodeProto) -> Lowered {
        if let Val::Node(x) = self.val(node, 0)? {
            return self.token_norm(node, x);
        }
        let Val::Last(x) = self.val(node, 0)? else {
            return Err(Skip::Unsupported(
                "LayerNormalization (other than over the channels of a feature map)".into(),
            ));
        };
        let axis = attr_i(node, "axis", -1);
        if axis != -1 && axis != 3 {
            return Err(Skip::Unsupported(format!(
                "LayerNormalization (axis {axis})"
            )));
        }
        let (w, b) = (self.val(node, 1)?, self.val(node, 2)?);
        let Some([features]) = self.const_shape(&w).as_deref().map(|s| match s {
            [c] => [*c],
            _ => [0],
        }) else {
            return Err(Skip::Unsupported(
                "LayerNormalization (computed parameters)".into(),
            ));
        };
        if matches!(b, Val::Unknown) {
            return Err(Skip::Unsupported(
                "LayerNormalization (without a bias)".into(),
            ));
        }
        let name = self.module_name(node, &w);
        let op = Op::LayerNorm2d {
            features,
            eps: f64::from(attr_f(node, "epsilon", 1e-5)),
        };
        self.params(node, &name, &op, &[("weight", &w), ("bias", &b)])?;
        let Val::Node(id) = self.push(name, op, vec![x], false) else {
            unreachable!("push pushes a node")
        };
        Ok(vec![Val::Last(id)])
    }

    /// `MatMul` of a channels-last map (or a `[N, features]` batch) by a
    /// transposed weight: an `nn.Linear`, which takes in the `Add` of its
    /// bias when that follows.
    fn matmul(&mut self, node: &NodeProto) -> Lowered {
        let (x, w) = (self.val(node, 0)?, self.val(node, 1)?);
        // Wᵀ: a Transpose of the weight (dynamo), or an initializer the
        // TorchScript exporter stored transposed (`onnx::MatMul_N`).
        let (input, weight, stored_t) = match (&x, &w) {
            (Val::Last(input) | Val::Node(input), Val::InitT(i)) => (*input, Val::Init(*i), false),
            (Val::Node(input), Val::Init(i))
                if self
                    .init_name(&w)
                    .is_some_and(|n| n.starts_with("onnx::MatMul")) =>
            {
                (*input, Val::Init(*i), true)
            }
            _ => {
                return Err(Skip::Unsupported(
                    "MatMul (other than a linear layer's x · Wᵀ)".into(),
                ))
            }
        };
        let Some(mut dims) = self
            .const_shape(&weight)
            .and_then(|s| <[usize; 2]>::try_from(s).ok())
        else {
            return Err(Skip::Unsupported(
                "MatMul (by a weight that is not 2-D)".into(),
            ));
        };
        if stored_t {
            dims.reverse();
        }
        let [out_features, in_features] = dims;
        // The bias: an `Add` of a [out_features] initializer, the product's
        // only reader.
        let graph = self.model.proto.graph.as_ref().expect("checked");
        let out = node.output.first().cloned().unwrap_or_default();
        let readers: Vec<&NodeProto> = graph
            .node
            .iter()
            .filter(|n| n.input.contains(&out))
            .collect();
        let bias = match readers[..] {
            [add] if add.op_type() == "Add" => add
                .input
                .iter()
                .find(|i| **i != out)
                .and_then(|i| self.vals.get(i))
                .filter(|v| matches!(v, Val::Init(_)))
                .filter(|v| self.const_shape(v) == Some(vec![out_features]))
                .cloned()
                .map(|b| (add.output.first().cloned().unwrap_or_default(), b)),
            _ => None,
        };
        let name = self.module_name(node, &weight);
        let op = Op::Linear {
            in_features,
            out_features,
            bias: bias.is_some(),
        };
        if stored_t {
            // Registered by hand: its initializer's shape is the transpose
            // of the layer's weight.
            if self.modules.contains_key(&name) {
                return Err(Skip::Unsupported(
                    "MatMul (a linear layer called twice)".into(),
                ));
            }
            let w_name = self.init_name(&weight).unwrap_or_default();
            self.modules.insert(name.clone(), w_name.clone());
            self.names.insert(name.clone());
            self.sources
                .push((format!("{name}.weight"), ParamSource::Transposed(w_name)));
            if let Some((_, b)) = &bias {
                let s = self.source(node, b)?;
                self.sources.push((format!("{name}.bias"), s));
            }
        } else {
            let mut params = vec![("weight", &weight)];
            if let Some((_, b)) = &bias {
                params.push(("bias", b));
            }
            self.params(node, &name, &op, &params)?;
        }
        let Val::Node(id) = self.push(name, op, vec![input], false) else {
            unreachable!("push pushes a node")
        };
        let v = if matches!(x, Val::Last(_)) {
            Val::Last(id)
        } else {
            Val::Node(id)
        };
        if let Some((add, _)) = bias {
            self.absorbed.insert(add, v.clone());
        }
        Ok(vec![v])
    }

    /// A `[1, 1, F]` parameter concatenated before the tokens: the class
    /// token, named by its initializer (a parameter outside modules).
    fn class_token(&mut self, node: &NodeProto, token: usize, x: NodeId) -> Lowered {
        let v = Val::Init(token);
        let name = self.init_name(&v).unwrap_or_default();
        let Some(&[1, 1, features]) = self.const_shape(&v).as_deref() else {
            return Err(self.malformed(node, "a class token that is not [1, 1, F]"));
        };
        if !matches!(self.shape_of(x).as_deref(), Some(&[_, f]) if f == features) {
            return Err(Skip::Unsupported(
                "Concat (of a parameter and a tensor other than tokens)".into(),
            ));
        }
        let op = Op::ClassToken { features };
        self.params(node, &name, &op, &[("", &v)])?;
        Ok(vec![self.push(name, op, vec![x], false)])
    }

    /// Tokens plus a `[1, T, F]` parameter: a position embedding, named by
    /// its initializer; `None` for any other `Add`.
    fn pos_embedding(&mut self, node: &NodeProto) -> Result<Option<Val>, Skip> {
        let (a, b) = (self.val(node, 0)?, self.val(node, 1)?);
        let (e, x) = match (&a, &b) {
            (Val::Init(_), Val::Node(x)) => (a.clone(), *x),
            (Val::Node(x), Val::Init(_)) => (b.clone(), *x),
            _ => return Ok(None),
        };
        let (Some(&[1, tokens, features]), Some(&[t, f])) =
            (self.const_shape(&e).as_deref(), self.shape_of(x).as_deref())
        else {
            return Ok(None);
        };
        if (t, f) != (tokens, features) {
            return Ok(None);
        }
        let name = self.init_name(&e).unwrap_or_default();
        let op = Op::PosEmbedding { tokens, features };
        self.params(node, &name, &op, &[("", &e)])?;
        Ok(Some(self.push(name, op, vec![x], false)))
    }

    /// `LayerNormalization` over the last dimension of tokens or of a
    /// `[N, features]` batch: `nn.LayerNorm`.
    fn token_norm(&mut self, node: &NodeProto, x: NodeId) -> Lowered {
        let features = match self.shape_of(x).as_deref() {
            Some(&[_, f]) | Some(&[f]) => f,
            _ => {
                return Err(Skip::Unsupported(
                    "LayerNormalization (over a feature map's last axis)".into(),
                ))
            }
        };
        let axis = attr_i(node, "axis", -1);
        if axis != -1 {
            return Err(Skip::Unsupported(format!(
                "LayerNormalization (axis {axis})"
            )));
        }
        let (w, b) = (self.val(node, 1)?, self.val(node, 2)?);
        if self.const_shape(&w) != Some(vec![features]) || matches!(b, Val::Unknown) {
            return Err(Skip::Unsupported(
                "LayerNormalization (without [features] weight and bias)".into(),
            ));
        }
        let name = self.module_name(node, &w);
        let op = Op::LayerNorm {
            features,
            eps: f64::from(attr_f(node, "epsilon", 1e-5)),
        };
        self.params(node, &name, &op, &[("weight", &w), ("bias", &b)])?;
        Ok(vec![self.push(name, op, vec![x], false)])
    }

    /// `Gather` of one token (`x[:, i]`, axis 1, a scalar index).
    fn token_select(&mut self, node: &NodeProto, x: NodeId) -> Lowered {
        let Some(&[t, _]) = self.shape_of(x).as_deref() else {
            return Err(Skip::Unsupported("Gather (of a feature map)".into()));
        };
        let idx = self.constant(&self.val(node, 1)?)?;
        match idx.map(|i| (i.shape, i.data)) {
            Some((shape, TensorData::I64(v)))
                if shape.is_empty() && attr_i(node, "axis", 0) == 1 && v.len() == 1 =>
            {
                let index = if v[0] < 0 { v[0] + t as i64 } else { v[0] };
                if !(0..t as i64).contains(&index) {
                    return Err(self.malformed(node, format!("token {} of {t}", v[0])));
                }
                self.functional(
                    node,
                    Op::TokenSelect {
                        index: index as usize,
                    },
                    vec![x],
                )
            }
            _ => Err(Skip::Unsupported(
                "Gather (other than one token of a sequence)".into(),
            )),
        }
    }

    /// `x · layer_scale` with a `[C, 1, 1]` parameter named `….layer_scale`
    /// (ConvNeXt's blocks); `None` for any other `Mul`.
    fn layer_scale(&mut self, node: &NodeProto) -> Result<Option<Val>, Skip> {
        let (a, b) = (self.val(node, 0)?, self.val(node, 1)?);
        let (scale, x) = match (&a, &b) {
            (Val::Init(_), Val::Node(x)) => (a.clone(), *x),
            (Val::Node(x), Val::Init(_)) => (b.clone(), *x),
            _ => return Ok(None),
        };
        let Some(module) = self
            .init_name(&scale)
            .and_then(|n| n.strip_suffix(".layer_scale").map(str::to_owned))
        else {
            return Ok(None);
        };
        let Some([features, 1, 1]) = self
            .const_shape(&scale)
            .and_then(|s| <[usize; 3]>::try_from(s).ok())
        else {
            return Err(self.malformed(node, "a layer scale that is not [C, 1, 1]"));
        };
        let op = Op::LayerScale { features };
        self.params(node, &module, &op, &[("layer_scale", &scale)])?;
        Ok(Some(self.push(module, op, vec![x], false)))
    }

    /// `Gather` of a raveled map by the indices `0..n` in the map's own
    /// shape: the map itself (how the exporter writes the `as_strided` of
    /// an adaptive average pool to 1×1).
    fn gather(&mut self, node: &NodeProto) -> Lowered {
        if let Val::Node(x) = self.val(node, 0)? {
            return self.token_select(node, x);
        }
        let Val::Raveled(x) = self.val(node, 0)? else {
            return Err(Skip::Unsupported("Gather (of a feature map)".into()));
        };
        let idx = self.constant(&self.val(node, 1)?)?;
        let shape = self.shape_of(x);
        match (idx, shape) {
            (Some(t), Some(s))
                if matches!(&t.data, TensorData::I64(v) if v.iter().enumerate().all(|(k, &i)| i == k as i64))
                    && t.shape.first() == Some(&1)
                    && t.shape[1..] == s[..]
                    && attr_i(node, "axis", 0) == 0 =>
            {
                Ok(vec![Val::Node(x)])
            }
            _ => Err(Skip::Unsupported(
                "Gather (other than restoring a raveled map)".into(),
            )),
        }
    }

    /// `Reshape`: flattening to `[N, features]`, raveling (`[-1]`), and the
    /// two reshapes of a channel shuffle.
    fn reshape(&mut self, node: &NodeProto) -> Lowered {
        let v = self.val(node, 0)?;
        let shape = match self.constant(&self.val(node, 1)?)?.map(|t| t.data) {
            Some(TensorData::I64(s)) => s,
            _ => return Err(Skip::Unsupported("Reshape (to a computed shape)".into())),
        };
        // The batch dimension as exporters write it: 1 (traced), -1 or 0.
        let batch = |d: i64| (-1..=1).contains(&d) || d == self.batch;
        match (&v, shape.as_slice()) {
            (Val::Node(x), [n, _]) if batch(*n) => self.functional(node, Op::Flatten, vec![*x]),
            (Val::Node(x), [-1]) => Ok(vec![Val::Raveled(*x)]),
            (Val::Node(x), [n, c, hw]) if batch(*n) => match self.shape_of(*x).as_deref() {
                // A ViT's patches: [N, C, H·W], then transposed to tokens.
                Some(&[mc, h, w]) if mc as i64 == *c && ((h * w) as i64 == *hw || *hw == -1) => {
                    Ok(vec![Val::Seq(*x)])
                }
                _ => Err(Skip::Unsupported(format!("Reshape (to {shape:?})"))),
            },
            (Val::Node(x), [n, g, per, h, w]) if batch(*n) && *g > 0 => {
                let want = [(*g * *per) as usize, *h as usize, *w as usize];
                if self.shape_of(*x).as_deref() == Some(&want[..]) {
                    Ok(vec![Val::Runs(*x, *g as usize)])
                } else {
                    Err(Skip::Unsupported(format!("Reshape (to {shape:?})")))
                }
            }
            (Val::Swapped(x, g), [n, c, h, w]) if batch(*n) => {
                let want = [*c as usize, *h as usize, *w as usize];
                if self.shape_of(*x).as_deref() == Some(&want[..]) {
                    let op = Op::ChannelShuffle { groups: *g };
                    self.functional(node, op, vec![*x])
                } else {
                    Err(Skip::Unsupported(format!("Reshape (to {shape:?})")))
                }
            }
            _ => Err(Skip::Unsupported(
                "Reshape (other than flattening to [N, features] or a channel shuffle)".into(),
            )),
        }
    }

    /// `SplitToSequence` of a map along the channels (`torch.chunk`, `split`
    /// in the dynamo exporter): the parts' channel ranges.
    fn split_to_sequence(&mut self, node: &NodeProto) -> Lowered {
        let x = self.node_input(node, 0)?;
        let axis = attr_i(node, "axis", 0);
        let c = match self.shape_of(x).as_deref() {
            Some([c, _, _]) if axis == 1 || axis == -3 => *c,
            _ => return Err(Skip::Unsupported(format!("SplitToSequence (axis {axis})"))),
        };
        let sizes: Vec<usize> = match self.constant(&self.val(node, 1)?)? {
            Some(Tensor {
                shape,
                data: TensorData::I64(v),
            }) if shape.is_empty() && v.first().is_some_and(|&k| k > 0) => {
                let k = v[0] as usize;
                (0..c.div_ceil(k)).map(|i| k.min(c - i * k)).collect()
            }
            Some(Tensor {
                data: TensorData::I64(v),
                ..
            }) if v.iter().all(|&k| k > 0) && v.iter().sum::<i64>() == c as i64 => {
                v.iter().map(|&k| k as usize).collect()
            }
            _ => return Err(Skip::Unsupported("SplitToSequence (computed sizes)".into())),
        };
        let mut at = 0;
        let parts = sizes
            .iter()
            .map(|&k| {
                at += k;
                (at - k, at)
            })
            .collect();
        Ok(vec![Val::Parts(x, parts)])
    }

    /// `SequenceAt` of a split map: its part, as a slice of the channels.
    fn sequence_at(&mut self, node: &NodeProto) -> Lowered {
        let Val::Parts(x, parts) = self.val(node, 0)? else {
            return Err(Skip::Unsupported(
                "SequenceAt (of a sequence prunex does not follow)".into(),
            ));
        };
        let k = match self.constant(&self.val(node, 1)?)?.map(|t| t.data) {
            Some(TensorData::I64(v)) if v.len() == 1 => v[0],
            _ => return Err(Skip::Unsupported("SequenceAt (computed position)".into())),
        };
        let k = if k < 0 { k + parts.len() as i64 } else { k };
        let Some(&(start, end)) = usize::try_from(k).ok().and_then(|k| parts.get(k)) else {
            return Err(self.malformed(node, format!("part {k} of {}", parts.len())));
        };
        self.functional(node, Op::Slice { start, end }, vec![x])
    }

    /// `Slice` of a map's channels by constant bounds, step 1.
    fn slice(&mut self, node: &NodeProto) -> Lowered {
        let x = self.node_input(node, 0)?;
        let int = |i: usize| -> Result<Option<Vec<i64>>, Skip> {
            let v = self.val(node, i)?;
            if matches!(v, Val::Unknown) {
                return Ok(None);
            }
            match self.constant(&v)?.map(|t| t.data) {
                Some(TensorData::I64(v)) => Ok(Some(v)),
                _ => Err(Skip::Unsupported("Slice (computed bounds)".into())),
            }
        };
        let (starts, ends) = (int(1)?, int(2)?);
        let axes = int(3)?.unwrap_or_else(|| vec![0]);
        let steps = int(4)?.unwrap_or_else(|| vec![1]);
        let c = self
            .shape_of(x)
            .and_then(|s| s.first().copied())
            .unwrap_or(0) as i64;
        match (
            starts.as_deref(),
            ends.as_deref(),
            axes.as_slice(),
            steps.as_slice(),
        ) {
            (Some([a]), Some([b]), [1 | -3], [1]) => {
                let at = |k: i64| (if k < 0 { k + c } else { k }).clamp(0, c) as usize;
                let (start, end) = (at(*a), at(*b));
                if start >= end {
                    return Err(
                        self.malformed(node, format!("an empty slice {a}..{b} of {c} channels"))
                    );
                }
                self.functional(node, Op::Slice { start, end }, vec![x])
            }
            _ => Err(Skip::Unsupported(
                "Slice (other than a range of channels)".into(),
            )),
        }
    }

    /// The shape of a node's output (`[C, H, W]` or `[features]`), from the
    /// graph so far.
    fn shape_of(&self, x: NodeId) -> Option<Vec<usize>> {
        let g = Graph {
            name: String::new(),
            input: self.input,
            nodes: self.nodes[..=x].to_vec(),
            output: x,
        };
        let a = crate::graph::analyze(&g, g.input).ok()?;
        Some(match a.shapes[x] {
            crate::graph::Shape::Map { c, h, w } => vec![c, h, w],
            crate::graph::Shape::Flat(f) => vec![f],
            crate::graph::Shape::Tokens { t, f } => vec![t, f],
        })
    }

    fn clip(&mut self, node: &NodeProto) -> Lowered {
        let x = self.node_input(node, 0)?;
        let bound = |i: usize, default: f32| -> Result<f32, Skip> {
            let v = self.val(node, i)?;
            if matches!(v, Val::Unknown) {
                return Ok(default);
            }
            match self.constant(&v)?.map(|t| t.data) {
                Some(TensorData::F32(v)) if v.len() == 1 => Ok(v[0]),
                Some(TensorData::I64(v)) if v.len() == 1 => Ok(v[0] as f32),
                _ => Err(Skip::Unsupported("Clip (with computed bounds)".into())),
            }
        };
        let (lo, hi) = (bound(1, f32::MIN)?, bound(2, f32::MAX)?);
        match (lo, hi) {
            (0.0, 6.0) => self.functional(node, Op::Relu6, vec![x]),
            (0.0, f32::MAX) => self.functional(node, Op::Relu, vec![x]),
            _ => Err(Skip::Unsupported(format!("Clip (to [{lo}, {hi}])"))),
        }
    }

    fn binary(&mut self, node: &NodeProto) -> Lowered {
        if node.op_type() == "Add" {
            if let Some(v) = self.pos_embedding(node)? {
                return Ok(vec![v]);
            }
        }
        if node.op_type() == "Mul" {
            if let Some(v) = self.layer_scale(node)? {
                return Ok(vec![v]);
            }
        }
        let (a, b) = (self.node_input(node, 0)?, self.node_input(node, 1)?);
        if node.op_type() == "Add" {
            return self.functional(node, Op::Add, vec![a, b]);
        }
        // x · sigmoid(x) is SiLU.
        for (x, s) in [(a, b), (b, a)] {
            let n = &self.nodes[s];
            if n.op == Op::Sigmoid && n.inputs == [x] {
                return self.functional(node, Op::Silu, vec![x]);
            }
        }
        self.functional(node, Op::Mul, vec![a, b])
    }

    fn pool(&mut self, node: &NodeProto) -> Lowered {
        let x = self.node_input(node, 0)?;
        let kernel = pair(&attr_ints(node, "kernel_shape").unwrap_or_default())
            .ok_or_else(|| self.malformed(node, "kernel_shape is not 2-D"))?;
        let stride = pair(&attr_ints(node, "strides").unwrap_or(vec![1, 1]))
            .ok_or_else(|| self.malformed(node, "strides are not 2-D"))?;
        let pads = attr_ints(node, "pads").unwrap_or_else(|| vec![0; 4]);
        let padding = match pads.as_slice() {
            [t, l, b, r] if t == b && l == r && *t >= 0 && *l >= 0 => [*t as usize, *l as usize],
            _ => return Err(self.malformed(node, format!("asymmetric pads {pads:?}"))),
        };
        if attr_ints(node, "dilations").is_some_and(|d| d.iter().any(|&x| x != 1)) {
            return Err(Skip::Unsupported(format!("{} (dilated)", node.op_type())));
        }
        let ceil_mode = attr_i(node, "ceil_mode", 0) != 0;
        let op = if node.op_type() == "MaxPool" {
            Op::MaxPool2d {
                kernel,
                stride,
                padding,
                ceil_mode,
            }
        } else {
            if ceil_mode || (padding != [0, 0] && attr_i(node, "count_include_pad", 0) == 0) {
                return Err(Skip::Unsupported(
                    "AveragePool (ceil_mode, or padding not counted)".into(),
                ));
            }
            Op::AvgPool2d {
                kernel,
                stride,
                padding,
            }
        };
        self.functional(node, op, vec![x])
    }

    fn reduce_mean(&mut self, node: &NodeProto) -> Lowered {
        let x = self.node_input(node, 0)?;
        let axes = match attr_ints(node, "axes") {
            Some(a) => a,
            None => match self.constant(&self.val(node, 1)?)?.map(|t| t.data) {
                Some(TensorData::I64(a)) => a,
                _ => return Err(Skip::Unsupported("ReduceMean (computed axes)".into())),
            },
        };
        let mut axes: Vec<i64> = axes
            .iter()
            .map(|&a| if a < 0 { a + 4 } else { a })
            .collect();
        axes.sort_unstable();
        if axes != [2, 3] {
            return Err(Skip::Unsupported(format!(
                "ReduceMean (over axes {axes:?})"
            )));
        }
        let pooled = self.functional(node, Op::AdaptiveAvgPool2d { output: [1, 1] }, vec![x])?;
        if attr_i(node, "keepdims", 1) != 0 {
            return Ok(pooled);
        }
        let Val::Node(p) = pooled[0] else {
            unreachable!("functional pushes a node")
        };
        self.functional(node, Op::Flatten, vec![p])
    }

    /// Evaluates a node whose inputs are all constants (the shape and
    /// zero-bias arithmetic exporters leave in); `None` when it is not one.
    fn fold(&mut self, node: &NodeProto) -> Result<Option<Val>, Skip> {
        let op = node.op_type();
        if op == "Constant" {
            return self.constant_node(node).map(Some);
        }
        if !matches!(
            op,
            "Shape"
                | "Expand"
                | "CastLike"
                | "Cast"
                | "Reshape"
                | "Concat"
                | "Unsqueeze"
                | "Squeeze"
                | "Identity"
                | "Add"
                | "Sub"
                | "Mul"
                | "Div"
                | "ConstantOfShape"
                | "Gather"
                | "Equal"
                | "Where"
        ) {
            return Ok(None);
        }
        let vals = (0..node.input.len())
            .map(|i| self.val(node, i))
            .collect::<Result<Vec<_>, _>>()?;
        if op == "Shape" {
            // `start` and `end` slice the shape (negative from the back,
            // clamped), as ONNX 15 defines them.
            let slice = |s: Vec<usize>| {
                let r = s.len() as i64;
                let at = |k: i64| (if k < 0 { k + r } else { k }).clamp(0, r) as usize;
                let (a, b) = (at(attr_i(node, "start", 0)), at(attr_i(node, "end", r)));
                s[a..b.max(a)].to_vec()
            };
            // A feature map's shape is known from the graph so far, at the
            // batch size of 1 prunex imports.
            let of_node = |v: &Val| match v {
                Val::Node(x) => self.shape_of(*x).map(|s| [vec![1], s].concat()),
                Val::Last(x) => self
                    .shape_of(*x)
                    .filter(|s| s.len() == 3)
                    .map(|s| vec![1, s[1], s[2], s[0]]),
                _ => None,
            };
            return Ok(vals
                .first()
                .and_then(|v| self.const_shape(v).or_else(|| of_node(v)))
                .map(slice)
                .map(|s| {
                    Val::Const(Tensor {
                        shape: vec![s.len()],
                        data: TensorData::I64(s.iter().map(|&d| d as i64).collect()),
                    })
                }));
        }
        if vals.iter().any(Val::dynamic) && op != "CastLike" {
            return Ok(None);
        }
        if op == "CastLike" && vals.first().is_some_and(Val::dynamic) {
            return Ok(None);
        }
        let mut ts = Vec::new();
        for v in &vals {
            ts.push(if v.dynamic() { None } else { self.constant(v)? });
        }
        let bad = |why: &str| self.malformed(node, why.to_owned());
        let t0 = ts[0].clone().ok_or_else(|| bad("no input"))?;
        let ints = |t: &Option<Tensor>| -> Option<Vec<i64>> {
            match t.as_ref().map(|t| &t.data) {
                Some(TensorData::I64(v)) => Some(v.clone()),
                _ => None,
            }
        };
        let out = match op {
            "Identity" => t0,
            "Cast" => {
                let to = attr_i(node, "to", 1);
                cast(&t0, to == 1 || to == 10 || to == 11)
            }
            "CastLike" => {
                let float =
                    vals[1].dynamic() || ts[1].as_ref().is_some_and(|t| t.as_f32().is_some());
                cast(&t0, float)
            }
            "Expand" => {
                let shape = ints(&ts[1]).ok_or_else(|| bad("a computed shape"))?;
                expand(&t0, &shape).ok_or_else(|| bad("a shape it cannot expand to"))?
            }
            "ConstantOfShape" => {
                let shape: Vec<usize> = t0_as_shape(&t0).ok_or_else(|| bad("a bad shape"))?;
                let n = shape
                    .iter()
                    .try_fold(1usize, |a, &d| a.checked_mul(d))
                    .filter(|&n| n <= MAX_FOLDED)
                    .ok_or_else(|| bad("a constant too large to fold"))?;
                let value = attr(node, "value").and_then(|a| a.t.as_ref());
                let data = match value {
                    Some(v) => match self.model.tensor(v, self.loader)?.data {
                        TensorData::F32(x) => {
                            TensorData::F32(vec![x.first().copied().unwrap_or(0.0); n])
                        }
                        TensorData::I64(x) => {
                            TensorData::I64(vec![x.first().copied().unwrap_or(0); n])
                        }
                    },
                    None => TensorData::F32(vec![0.0; n]),
                };
                Tensor { shape, data }
            }
            "Reshape" => {
                let shape = ints(&ts[1]).ok_or_else(|| bad("a computed shape"))?;
                let n = t0.data.len();
                let mut dims: Vec<i64> = shape
                    .iter()
                    .enumerate()
                    .map(|(i, &d)| {
                        if d == 0 {
                            t0.shape.get(i).map_or(0, |&x| x as i64)
                        } else {
                            d
                        }
                    })
                    .collect();
                let known = dims
                    .iter()
                    .filter(|&&d| d > 0)
                    .try_fold(1i64, |a, &d| a.checked_mul(d))
                    .unwrap_or(0);
                for d in dims.iter_mut().filter(|d| **d == -1) {
                    *d = if known > 0 { n as i64 / known } else { 0 };
                }
                let shape: Vec<usize> = dims.iter().map(|&d| d.max(0) as usize).collect();
                if shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d)) != Some(n) {
                    return Err(bad("a reshape that changes the number of elements"));
                }
                Tensor {
                    shape,
                    data: t0.data,
                }
            }
            "Concat" => {
                let mut data = Vec::new();
                for t in &ts {
                    data.extend(ints(t).ok_or_else(|| bad("non-integer constants"))?);
                }
                Tensor {
                    shape: vec![data.len()],
                    data: TensorData::I64(data),
                }
            }
            "Unsqueeze" | "Squeeze" => {
                // Only rank changes of scalars and vectors (shape math).
                let n = t0.data.len();
                Tensor {
                    shape: if op == "Unsqueeze" {
                        vec![n]
                    } else if n == 1 {
                        Vec::new()
                    } else {
                        vec![n]
                    },
                    data: t0.data,
                }
            }
            // Shape arithmetic (`expand(n, -1, -1)` in a TorchScript
            // export): integer vectors of one length, or a scalar.
            "Equal" | "Where" => {
                let Some(vs) = ts.iter().map(ints).collect::<Option<Vec<Vec<i64>>>>() else {
                    return Ok(None);
                };
                let n = vs.iter().map(Vec::len).max().unwrap_or(0);
                if n > MAX_FOLDED || vs.iter().any(|v| v.len() != n && v.len() != 1) {
                    return Err(bad("operands of different shapes"));
                }
                let at = |v: &Vec<i64>, i: usize| if v.len() == 1 { v[0] } else { v[i] };
                let data = (0..n)
                    .map(|i| match op {
                        "Equal" => i64::from(at(&vs[0], i) == at(&vs[1], i)),
                        _ if at(&vs[0], i) != 0 => at(&vs[1], i),
                        _ => at(&vs[2], i),
                    })
                    .collect();
                Tensor {
                    shape: vec![n],
                    data: TensorData::I64(data),
                }
            }
            "Gather" => {
                let idx = ints(&ts[1]).ok_or_else(|| bad("computed indices"))?;
                let src = ints(&ts[0]).ok_or_else(|| bad("non-integer data"))?;
                let picked: Option<Vec<i64>> = idx
                    .iter()
                    .map(|&i| {
                        let i = if i < 0 { i + src.len() as i64 } else { i };
                        src.get(i as usize).copied()
                    })
                    .collect();
                let picked = picked.ok_or_else(|| bad("an index out of range"))?;
                Tensor {
                    shape: ts[1].as_ref().map(|t| t.shape.clone()).unwrap_or_default(),
                    data: TensorData::I64(picked),
                }
            }
            _ => {
                let t1 = ts[1].clone().ok_or_else(|| bad("a missing operand"))?;
                arith(op, &t0, &t1).ok_or_else(|| bad("operands of different shapes"))?
            }
        };
        Ok(Some(Val::Const(out)))
    }

    fn constant_node(&self, node: &NodeProto) -> Result<Val, Skip> {
        let a = node
            .attribute
            .first()
            .ok_or_else(|| self.malformed(node, "a Constant without a value"))?;
        let t = match (
            a.name(),
            AttributeType::try_from(a.r#type.unwrap_or(0)).ok(),
        ) {
            ("value", _) => self.model.tensor(
                a.t.as_ref()
                    .ok_or_else(|| self.malformed(node, "no tensor"))?,
                self.loader,
            )?,
            ("value_float", _) => Tensor::f32(Vec::new(), vec![a.f.unwrap_or(0.0)]),
            ("value_floats", _) => Tensor::f32(vec![a.floats.len()], a.floats.clone()),
            ("value_int", _) => Tensor {
                shape: Vec::new(),
                data: TensorData::I64(vec![a.i.unwrap_or(0)]),
            },
            ("value_ints", _) => Tensor {
                shape: vec![a.ints.len()],
                data: TensorData::I64(a.ints.clone()),
            },
            (other, _) => {
                return Err(Skip::Unsupported(format!("Constant ({other})")));
            }
        };
        Ok(Val::Const(t))
    }
}

fn t0_as_shape(t: &Tensor) -> Option<Vec<usize>> {
    match &t.data {
        TensorData::I64(v) => v.iter().map(|&d| usize::try_from(d).ok()).collect(),
        TensorData::F32(_) => None,
    }
}

fn cast(t: &Tensor, float: bool) -> Tensor {
    let data = match (&t.data, float) {
        (TensorData::I64(v), true) => TensorData::F32(v.iter().map(|&x| x as f32).collect()),
        (TensorData::F32(v), false) => TensorData::I64(v.iter().map(|&x| x as i64).collect()),
        (d, _) => d.clone(),
    };
    Tensor {
        shape: t.shape.clone(),
        data,
    }
}

/// Broadcasts `t` to `shape` (numpy rules).
fn expand(t: &Tensor, shape: &[i64]) -> Option<Tensor> {
    let rank = shape.len().max(t.shape.len());
    let pad = |s: &[usize]| -> Vec<usize> {
        let mut v = vec![1; rank - s.len()];
        v.extend_from_slice(s);
        v
    };
    let src = pad(&t.shape);
    let want: Vec<usize> = pad(&shape.iter().map(|&d| d.max(0) as usize).collect::<Vec<_>>());
    let out: Vec<usize> = src
        .iter()
        .zip(&want)
        .map(|(&a, &b)| {
            if a == 1 {
                Some(b)
            } else if b == 1 || a == b {
                Some(a)
            } else {
                None
            }
        })
        .collect::<Option<_>>()?;
    let n = out
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .filter(|&n| n <= MAX_FOLDED)?;
    let index = |mut i: usize| -> usize {
        let mut at = 0;
        let mut stride = 1;
        for d in (0..rank).rev() {
            let coord = i % out[d];
            i /= out[d];
            if src[d] != 1 {
                at += coord * stride;
            }
            stride *= src[d];
        }
        at
    };
    let data = match &t.data {
        TensorData::F32(v) => TensorData::F32((0..n).map(|i| v[index(i)]).collect()),
        TensorData::I64(v) => TensorData::I64((0..n).map(|i| v[index(i)]).collect()),
    };
    Some(Tensor { shape: out, data })
}

/// Element-wise arithmetic of two constants of one shape (or a scalar).
fn arith(op: &str, a: &Tensor, b: &Tensor) -> Option<Tensor> {
    let (n, shape) = if a.data.len() >= b.data.len() {
        (a.data.len(), a.shape.clone())
    } else {
        (b.data.len(), b.shape.clone())
    };
    let at = |len: usize, i: usize| if len == 1 { 0 } else { i };
    if a.data.len() != n && a.data.len() != 1 || b.data.len() != n && b.data.len() != 1 {
        return None;
    }
    let data = match (&a.data, &b.data) {
        (TensorData::I64(x), TensorData::I64(y)) => TensorData::I64(
            (0..n)
                .map(|i| {
                    let (p, q) = (x[at(x.len(), i)], y[at(y.len(), i)]);
                    match op {
                        "Add" => p.wrapping_add(q),
                        "Sub" => p.wrapping_sub(q),
                        "Mul" => p.wrapping_mul(q),
                        _ => p.checked_div(q).unwrap_or(0),
                    }
                })
                .collect(),
        ),
        _ => {
            let (x, y) = (cast(a, true), cast(b, true));
            let (x, y) = (x.as_f32()?.to_vec(), y.as_f32()?.to_vec());
            TensorData::F32(
                (0..n)
                    .map(|i| {
                        let (p, q) = (x[at(x.len(), i)], y[at(y.len(), i)]);
                        match op {
                            "Add" => p + q,
                            "Sub" => p - q,
                            "Mul" => p * q,
                            _ => p / q,
                        }
                    })
                    .collect(),
            )
        }
    };
    Some(Tensor { shape, data })
}

/// Keeps the nodes the output depends on (a pattern such as SiLU leaves
/// its `Sigmoid` unused), renumbered in order.
fn reachable(g: Graph) -> Graph {
    let mut keep = vec![false; g.nodes.len()];
    keep[0] = true;
    let mut stack = vec![g.output];
    while let Some(id) = stack.pop() {
        if !keep[id] || id == 0 {
            keep[id] = true;
            stack.extend(g.nodes[id].inputs.iter().copied().filter(|&i| !keep[i]));
        }
    }
    let mut map = vec![usize::MAX; g.nodes.len()];
    let mut nodes = Vec::new();
    for (id, node) in g.nodes.into_iter().enumerate() {
        if keep[id] {
            map[id] = nodes.len();
            nodes.push(Node {
                inputs: node.inputs.iter().map(|&i| map[i]).collect(),
                ..node
            });
        }
    }
    Graph {
        output: map[g.output],
        nodes,
        ..g
    }
}
