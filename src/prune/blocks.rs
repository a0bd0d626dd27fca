//! Block pruning: a residual block whose shortcut is the identity is
//! replaced by that identity (its branch and its addition disappear), the
//! least important blocks first.

use std::collections::{BTreeMap, BTreeSet};

use crate::graph::{Graph, NodeId, Op};
use crate::tensor::StateDict;

/// A removable residual block.
#[derive(Clone, Debug, PartialEq)]
pub struct Block {
    /// The addition that closes the block.
    pub add: NodeId,
    /// The block's input, which the identity shortcut carries.
    pub input: NodeId,
    /// The nodes of the residual branch.
    pub branch: Vec<NodeId>,
    /// The module path the branch's layers share (`layer1.1`).
    pub name: String,
}

/// Finds every residual block with an identity shortcut.
pub fn find(g: &Graph) -> Vec<Block> {
    let mut out = Vec::new();
    for (id, node) in g.nodes.iter().enumerate() {
        if node.op != Op::Add || node.inputs.len() != 2 {
            continue;
        }
        for (a, b) in [
            (node.inputs[0], node.inputs[1]),
            (node.inputs[1], node.inputs[0]),
        ] {
            // `a` is the branch output, `b` the shortcut source.
            let mut branch = BTreeSet::new();
            let mut stack = vec![a];
            let mut ok = a != b;
            while let Some(n) = stack.pop() {
                if n == b || !branch.insert(n) {
                    continue;
                }
                if n == 0 || n < b {
                    ok = false;
                    break;
                }
                stack.extend(g.nodes[n].inputs.iter().copied());
            }
            // The branch must read only the block input and be read only
            // inside the block.
            ok = ok
                && branch.iter().all(|&n| {
                    g.consumers(n)
                        .iter()
                        .all(|c| branch.contains(c) || *c == id)
                        && g.nodes[n]
                            .inputs
                            .iter()
                            .all(|i| branch.contains(i) || *i == b)
                });
            if ok && branch.iter().any(|&n| g.nodes[n].op.has_weights()) {
                let names: Vec<&str> = branch
                    .iter()
                    .filter(|&&n| !g.nodes[n].functional)
                    .map(|&n| g.nodes[n].name.as_str())
                    .collect();
                let name = common_prefix(&names);
                out.push(Block {
                    add: id,
                    input: b,
                    branch: branch.into_iter().collect(),
                    name,
                });
                break;
            }
        }
    }
    // Blocks of one module (a transformer layer's attention and MLP
    // branches) are told apart by their layers.
    let names: Vec<String> = out.iter().map(|b| b.name.clone()).collect();
    for b in &mut out {
        if names.iter().filter(|n| **n == b.name).count() > 1 {
            let layers: Vec<&str> = b
                .branch
                .iter()
                .filter(|&&n| !g.nodes[n].functional)
                .map(|&n| {
                    let name = g.nodes[n].name.as_str();
                    name.strip_prefix(&format!("{}.", b.name)).unwrap_or(name)
                })
                .collect();
            if let (Some(first), Some(last)) = (layers.first(), layers.last()) {
                b.name = format!("{} ({first} … {last})", b.name);
            }
        }
    }
    out
}

fn common_prefix(names: &[&str]) -> String {
    let Some(first) = names.first() else {
        return String::new();
    };
    let parts: Vec<&str> = first.split('.').collect();
    let mut n = parts.len();
    for other in &names[1..] {
        let o: Vec<&str> = other.split('.').collect();
        n = n.min(parts.iter().zip(&o).take_while(|(a, b)| a == b).count());
    }
    parts[..n].join(".")
}

/// A block's importance: the root mean square of its branch's weights (or,
/// with `bn_scale`, the mean |γ| of the branch's last BatchNorm).
pub fn score(g: &Graph, b: &Block, sd: &StateDict, bn_scale: bool) -> f64 {
    if bn_scale {
        if let Some(&bn) = b
            .branch
            .iter()
            .rev()
            .find(|&&n| matches!(g.nodes[n].op, Op::BatchNorm2d { .. }))
        {
            let w = sd[&format!("{}.weight", g.nodes[bn].name)]
                .as_f32()
                .unwrap_or(&[]);
            return w.iter().map(|x| x.abs() as f64).sum::<f64>() / w.len().max(1) as f64;
        }
    }
    // Convolutions, linear layers and attention projections.
    let (mut sum, mut n) = (0.0, 0usize);
    for &id in &b.branch {
        for (suffix, _) in g.nodes[id].op.weight_matrices() {
            if let Some(w) = sd.get(&g.nodes[id].key(suffix)).and_then(|t| t.as_f32()) {
                sum += w.iter().map(|x| (*x as f64) * (*x as f64)).sum::<f64>();
                n += w.len();
            }
        }
    }
    (sum / n.max(1) as f64).sqrt()
}

/// Replaces the given blocks by their identity shortcut.
pub fn remove(g: &Graph, blocks: &[&Block], sd: Option<&StateDict>) -> (Graph, Option<StateDict>) {
    let gone: BTreeSet<NodeId> = blocks
        .iter()
        .flat_map(|b| b.branch.iter().copied().chain([b.add]))
        .collect();
    let replace: BTreeMap<NodeId, NodeId> = blocks.iter().map(|b| (b.add, b.input)).collect();
    let resolve = |mut n: NodeId| {
        while let Some(&r) = replace.get(&n) {
            n = r;
        }
        n
    };
    let mut new_id = BTreeMap::new();
    let mut out = Graph {
        name: g.name.clone(),
        input: g.input,
        nodes: Vec::new(),
        output: 0,
    };
    for (id, node) in g.nodes.iter().enumerate() {
        if gone.contains(&id) {
            continue;
        }
        let mut n = node.clone();
        n.inputs = node.inputs.iter().map(|&i| new_id[&resolve(i)]).collect();
        new_id.insert(id, out.nodes.len());
        out.nodes.push(n);
    }
    out.output = new_id[&resolve(g.output)];
    let kept: BTreeSet<&str> = out.nodes.iter().map(|n| n.name.as_str()).collect();
    let weights = sd.map(|sd| {
        sd.iter()
            .filter(|(k, _)| {
                let module = k.rsplit_once('.').map_or(k.as_str(), |(m, _)| m);
                kept.contains(module)
            })
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    });
    (out, weights)
}
