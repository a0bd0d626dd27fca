//! `nn.MultiheadAttention` in an ONNX export: about a hundred nodes per
//! layer (the packed projection, the split into queries, keys and values,
//! the per-head reshapes, the decomposed scaled dot-product attention, the
//! output projection), all in the attention module's scope. prunex lowers
//! the whole run of them to one `multihead_attention` node: its input is
//! what the run reads from outside, its output the run's last value, its
//! parameters the initializers the projections read, and its heads the
//! `[N, heads, tokens, head_dim]` reshape both exporters write.

use std::collections::HashSet;

use super::super::proto::{GraphProto, NodeProto};
use super::{attr_i, scope, Lowering, Skip, Val};
use crate::graph::{NodeId, Op};
use crate::models::onnx::ParamSource;
use crate::tensor::TensorData;

/// The module paths of the attention layers of `graph`: the dynamo
/// exporter names the class; in a TorchScript export, a scope whose
/// `out_proj.weight` is a value of the graph is one.
pub(super) fn modules(graph: &GraphProto) -> HashSet<String> {
    let mut values: HashSet<&str> = graph.initializer.iter().map(|t| t.name()).collect();
    values.extend(
        graph
            .node
            .iter()
            .flat_map(|n| n.output.iter().map(String::as_str)),
    );
    graph
        .node
        .iter()
        .filter_map(|n| {
            let (module, class) = scope(n);
            let by_class =
                class.as_deref() == Some("torch.nn.modules.activation.MultiheadAttention");
            let by_name = values.contains(format!("{module}.out_proj.weight").as_str());
            (!module.is_empty() && (by_class || by_name)).then_some(module)
        })
        .collect()
}

/// Where the run of nodes of attention module `module` starting at
/// `start` ends (exclusive): the last node in its scope (constants between
/// its nodes belong to it).
pub(super) fn region_end(nodes: &[NodeProto], start: usize, module: &str) -> usize {
    let mut end = start + 1;
    for (k, n) in nodes.iter().enumerate().skip(start + 1) {
        let s = scope(n).0;
        if s == module {
            end = k + 1;
        } else if n.op_type() != "Constant" && !s.is_empty() {
            break;
        }
    }
    end
}

impl Lowering<'_> {
    /// Lowers the run `nodes` of attention module `module`; returns the
    /// value of each node's outputs (the last node's is the attention's).
    pub(super) fn attention(
        &mut self,
        nodes: &[NodeProto],
        module: &str,
    ) -> Result<Vec<Vec<Val>>, Skip> {
        // Constants and their arithmetic (shapes, the softmax scale),
        // which later layers may share.
        let mut outs: Vec<Vec<Val>> = Vec::with_capacity(nodes.len());
        for n in nodes {
            let v = match self.fold(n) {
                Ok(Some(v)) => vec![v],
                _ => vec![Val::Unknown; n.output.len()],
            };
            for (name, v) in n.output.iter().zip(&v) {
                self.vals.insert(name.clone(), v.clone());
            }
            outs.push(v);
        }
        let unsupported = |why: &str| Skip::Unsupported(format!("MultiheadAttention ({why})"));
        let produced: HashSet<&str> = nodes
            .iter()
            .flat_map(|n| n.output.iter().map(String::as_str))
            .collect();
        // The tokens it reads: the one value from outside that the model
        // input computes.
        let mut x: Option<NodeId> = None;
        for n in nodes {
            for i in n.input.iter().filter(|i| !produced.contains(i.as_str())) {
                match self.vals.get(i) {
                    Some(Val::Node(id)) if x.is_none_or(|x| x == *id) => x = Some(*id),
                    Some(Val::Node(_)) => return Err(unsupported("it reads two inputs")),
                    Some(Val::Unknown) => return Err(Skip::Downstream),
                    _ => {}
                }
            }
        }
        let x = x.ok_or_else(|| unsupported("it reads no tokens"))?;
        let (t, e) = match self.shape_of(x).as_deref() {
            Some(&[t, e]) => (t, e),
            _ => return Err(unsupported("its input is not a sequence of tokens")),
        };
        let first = |op: &str| nodes.iter().find(|n| n.op_type() == op);
        // A parameter: an initializer, or a constant (the TorchScript
        // exporter writes equal initializers once, the others as
        // `Identity` of it, which constant folding reads).
        let init = |name: &str| -> Option<(ParamSource, Vec<usize>)> {
            match self.vals.get(name)? {
                v @ Val::Init(_) => {
                    Some((ParamSource::Init(self.init_name(v)?), self.const_shape(v)?))
                }
                Val::Const(t) => Some((ParamSource::Const(t.clone()), t.shape.clone())),
                _ => None,
            }
        };
        // The parameter a Transpose in the run reads, by the Transpose's
        // output (dynamo writes `x · Wᵀ` as MatMul(x, Transpose(W))).
        let transposed = |name: &str| {
            nodes
                .iter()
                .find(|n| {
                    n.output.first().map(String::as_str) == Some(name) && n.op_type() == "Transpose"
                })
                .and_then(|tr| init(tr.input.first()?))
        };
        // The bias an Add in the run adds to `product`, when it has `rows`.
        let bias_of = |product: &str, rows: usize| {
            nodes
                .iter()
                .find(|n| n.op_type() == "Add" && n.input.iter().any(|i| i == product))
                .and_then(|add| add.input.iter().find(|i| *i != product))
                .and_then(|b| init(b))
                .filter(|(_, s)| *s == [rows])
                .map(|(src, _)| src)
        };
        // The packed projection: x · Wᵀ, with Wᵀ an initializer the
        // TorchScript exporter stored transposed, or a Transpose of
        // `in_proj_weight` (dynamo).
        let matmul = first("MatMul").ok_or_else(|| unsupported("no input projection"))?;
        let w_name = matmul.input.get(1).cloned().unwrap_or_default();
        let (in_w, a3) = match init(&w_name) {
            Some((ParamSource::Init(name), s)) if s.len() == 2 && s[0] == e => {
                (ParamSource::Transposed(name), s[1])
            }
            Some(_) => return Err(unsupported("an input projection of another shape")),
            None => match transposed(&w_name) {
                Some((src @ ParamSource::Init(_), s)) if s.len() == 2 && s[1] == e => (src, s[0]),
                Some(_) => return Err(unsupported("an input projection of another shape")),
                None => return Err(unsupported("an input projection it computes")),
            },
        };
        if a3 % 3 != 0 {
            return Err(unsupported(
                "a projection that is not queries, keys and values",
            ));
        }
        let a = a3 / 3;
        let in_b = bias_of(matmul.output.first().map_or("", String::as_str), a3);
        // The output projection: a Gemm (both exporters) or prunex's own
        // MatMul by a transposed weight and Add, its last MatMul.
        let (out_w, out_b) = match first("Gemm") {
            Some(gemm) => {
                if attr_i(gemm, "transB", 0) != 1 {
                    return Err(unsupported("an output projection not transposed"));
                }
                let w = match gemm.input.get(1).and_then(|w| init(w)) {
                    Some((src, s)) if s == [e, a] => src,
                    _ => return Err(unsupported("an output projection of another shape")),
                };
                let b = gemm
                    .input
                    .get(2)
                    .and_then(|b| init(b))
                    .filter(|(_, s)| *s == [e])
                    .map(|(src, _)| src);
                (w, b)
            }
            None => {
                let mm = nodes
                    .iter()
                    .rev()
                    .find(|n| n.op_type() == "MatMul")
                    .filter(|n| !std::ptr::eq(*n, matmul))
                    .ok_or_else(|| unsupported("no output projection"))?;
                let w = transposed(mm.input.get(1).map_or("", String::as_str))
                    .filter(|(_, s)| *s == [e, a])
                    .map(|(src, _)| src)
                    .ok_or_else(|| unsupported("an output projection of another shape"))?;
                (w, bias_of(mm.output.first().map_or("", String::as_str), e))
            }
        };
        if in_b.is_some() != out_b.is_some() {
            return Err(unsupported("a bias on one projection only"));
        }
        // Heads: the reshape to [N, heads, tokens, head_dim].
        let (heads, head_dim) = nodes
            .iter()
            .filter(|n| n.op_type() == "Reshape")
            .filter_map(|n| {
                let v = self.vals.get(n.input.get(1)?)?;
                matches!(v, Val::Const(_) | Val::Init(_))
                    .then(|| self.constant(v).ok().flatten())
                    .flatten()
            })
            .filter_map(|c| match &c.data {
                TensorData::I64(v) => match v[..] {
                    // [N, heads, tokens, head_dim] (both exporters), or
                    // [N, tokens, 3, heads, head_dim] (prunex's own).
                    [_, h, tt, d] | [_, tt, 3, h, d]
                        if h > 0
                            && d > 0
                            && (tt as usize == t || tt == 0)
                            && (h * d) as usize == a =>
                    {
                        Some((h as usize, d as usize))
                    }
                    _ => None,
                },
                _ => None,
            })
            .next()
            .ok_or_else(|| unsupported("no reshape into heads"))?;
        let bias = in_b.is_some();
        let op = Op::MultiheadAttention {
            embed: e,
            heads,
            head_dim,
            bias,
            kv_heads: None,
            style: Default::default(),
        };
        if self.modules.contains_key(module) {
            return Err(unsupported("a module called twice"));
        }
        let first_source = match &in_w {
            ParamSource::Init(n) | ParamSource::Transposed(n) => n.clone(),
            ParamSource::Const(_) => String::new(),
        };
        self.modules.insert(module.to_owned(), first_source);
        self.names.insert(module.to_owned());
        let mut sources = vec![("in_proj_weight", in_w)];
        if let (Some(ib), Some(ob)) = (in_b, out_b.clone()) {
            sources.push(("in_proj_bias", ib));
            sources.push(("out_proj.bias", ob));
        }
        sources.push(("out_proj.weight", out_w));
        for (suffix, s) in sources {
            self.sources.push((format!("{module}.{suffix}"), s));
        }
        let v = self.push(module.to_owned(), op, vec![x], false);
        let last = nodes
            .iter()
            .rposition(|n| n.op_type() != "Constant")
            .unwrap_or(nodes.len() - 1);
        outs[last] = vec![v];
        Ok(outs)
    }
}
