//! Channel coupling: which channels of which layers must be removed together.
//!
//! Every channel a convolution or linear layer produces is an *element*.
//! Elements are joined (union-find) where the graph ties channels together:
//! the inputs of an `add` channel by channel, a squeeze-excitation `mul`, a
//! depthwise convolution's input and output channels. A `concat` output is the
//! inputs' elements side by side; BatchNorm, LayerNorm, layer scales,
//! activations, pooling and dropout pass elements through (a linear layer on
//! a feature map reads and writes channels, as a 1×1 convolution does); a `flatten` makes each channel H·W features of the
//! next linear layer. A *coupled channel* is a class of joined elements: pruning
//! it removes one output channel from every producer in it, the matching
//! BatchNorm features, and the matching input channels (or features) of every
//! consumer. A *group* is a connected set of producers with their coupled
//! channels; a recipe gives each group one ratio.
//!
//! A grouped (not depthwise) convolution with G groups splits its input and
//! its output channels into G equal runs; it stays a grouped convolution only
//! if every run loses the same positions. Its channels are therefore pruned
//! in *units*: unit p holds channel p of every run (Torch-Pruning's channel
//! groups). Units tie coupled channels together without making them one
//! channel, so a group's count moves in steps of G. A unit is a union of
//! whole ties, and each tie holds one position of every run of its
//! convolution, so removing a unit leaves every grouped convolution's runs
//! equal. Counts assume the units of a group have one size; a group whose
//! units differ in size is frozen rather than miscounted.
//!
//! Channels that must never change are *frozen*: the model input's, the
//! graph output's (the classes), and those a channel shuffle permutes or a
//! slice splits (ShuffleNet's; the branches between them stay prunable).

use std::collections::BTreeMap;

use serde::Serialize;

use super::{analyze, Graph, GraphError, NodeId, Op, Shape};

/// What a member loses when a coupled channel is pruned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// An output channel (weight row, bias entry) of a convolution or linear layer.
    Out,
    /// A normalisation feature (BatchNorm's γ, β, running mean and
    /// variance; LayerNorm's γ and β) or a layer scale's entry.
    Norm,
    /// An input channel of a convolution, or `repeat` consecutive input
    /// features of a linear layer after a flatten.
    In,
    /// A head of a multi-head attention (`repeat` is its head_dim): its
    /// query, key and value rows of `in_proj_weight` and `in_proj_bias`,
    /// and its columns of `out_proj.weight`.
    Head,
}

/// What a group's units are.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupKind {
    /// Channels (of maps, vectors or tokens), pruned by `prune channels`.
    Channels,
    /// The heads of one attention layer, pruned by `prune heads`.
    Heads,
}

/// One place a coupled channel lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Slot {
    /// The node.
    pub node: NodeId,
    /// What it loses.
    pub role: Role,
    /// The channel index in that node's role.
    pub index: usize,
    /// Features per channel (H·W for a linear layer after a flatten, else 1).
    pub repeat: usize,
}

/// A coupled group of layers.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Group {
    /// Index among the graph's groups.
    pub id: usize,
    /// Channels or heads.
    pub kind: GroupKind,
    /// Convolutions and linear layers whose output channels the group prunes
    /// (depthwise convolutions included), or the attention layer whose
    /// heads it prunes, in graph order.
    pub producers: Vec<NodeId>,
    /// BatchNorms, LayerNorms and layer scales that follow.
    pub norms: Vec<NodeId>,
    /// Layers whose input channels follow.
    pub consumers: Vec<NodeId>,
    /// The add/concat/mul nodes and depthwise convolutions that tie producers together.
    pub couplers: Vec<NodeId>,
    /// The coupled channels: for each, every slot it occupies.
    pub channels: Vec<Vec<Slot>>,
    /// The units pruning removes whole, as indices into `channels`: one
    /// channel each, unless grouped convolutions tie a channel at the same
    /// position of each of their convolution groups; every unit of a group
    /// has the same size.
    pub units: Vec<Vec<usize>>,
    /// Why the group cannot be pruned, when it cannot.
    pub frozen: Option<Frozen>,
}

/// Why a group's channels cannot change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Frozen {
    /// They are the model input's channels.
    Input,
    /// They are the model's output (the classes), at this node.
    Output(String),
    /// The channel shuffle at this node permutes them.
    Shuffle(String),
    /// The slice at this node splits them.
    Slice(String),
    /// Grouped convolutions tie them into units of different sizes.
    UnevenUnits,
    /// The flatten at this node interleaves them (tokens flattened).
    Flatten(String),
}

impl Frozen {
    /// Whether an operator prunex cannot prune through froze them (not the
    /// model's own input or output).
    pub fn by_operator(&self) -> bool {
        !matches!(self, Frozen::Input | Frozen::Output(_))
    }
}

impl std::fmt::Display for Frozen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Frozen::Input => write!(f, "the model input's channels"),
            Frozen::Output(node) => write!(f, "the model's output (`{node}`)"),
            Frozen::Shuffle(node) => write!(f, "a channel shuffle (`{node}`) permutes them"),
            Frozen::Slice(node) => write!(f, "a slice (`{node}`) splits them"),
            Frozen::Flatten(node) => {
                write!(
                    f,
                    "a flatten (`{node}`) interleaves the features of its tokens"
                )
            }
            Frozen::UnevenUnits => write!(
                f,
                "grouped convolutions tie its channels into units of different sizes"
            ),
        }
    }
}

/// All groups of a graph.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Coupling {
    /// The groups, in the order of their first producer.
    pub groups: Vec<Group>,
    /// The channel group of each producer node.
    pub group_of: BTreeMap<NodeId, usize>,
    /// The head group of each attention node.
    pub heads_of: BTreeMap<NodeId, usize>,
}

struct Uf {
    parent: Vec<usize>,
}

impl Group {
    /// Channels per unit (the convolution groups the channels are split
    /// into; 1 when no grouped convolution touches the group).
    pub fn unit(&self) -> usize {
        self.units.first().map_or(1, Vec::len)
    }

    /// The channels of the units `units` (indices into `units`), sorted.
    pub fn channels_of(&self, units: &[usize]) -> Vec<usize> {
        let mut v: Vec<usize> = units
            .iter()
            .flat_map(|&u| self.units[u].iter().copied())
            .collect();
        v.sort_unstable();
        v
    }
}

/// A grouped convolution's channels on one side: `elems` in `groups` runs.
struct Split {
    elems: Vec<usize>,
    groups: usize,
}

impl Uf {
    fn find(&mut self, mut x: usize) -> usize {
        while self.parent[x] != x {
            self.parent[x] = self.parent[self.parent[x]];
            x = self.parent[x];
        }
        x
    }
    fn union(&mut self, a: usize, b: usize) {
        let (a, b) = (self.find(a), self.find(b));
        if a != b {
            self.parent[a.max(b)] = a.min(b);
        }
    }
    fn fresh(&mut self, n: usize) -> Vec<usize> {
        let base = self.parent.len();
        self.parent.extend(base..base + n);
        (base..base + n).collect()
    }
}

/// The channels of a tensor: one element per channel, each standing for
/// `repeat` consecutive features.
#[derive(Clone, Debug)]
struct Layout {
    elems: Vec<usize>,
    repeat: usize,
}

/// Analyses how channels are coupled in `g` (at its default input).
pub fn coupling(g: &Graph) -> Result<Coupling, GraphError> {
    let a = analyze(g, g.input)?;
    let mut uf = Uf { parent: Vec::new() };
    let mut layouts: Vec<Layout> = Vec::with_capacity(g.nodes.len());
    // Element → the slots it occupies.
    let mut slots: Vec<Vec<Slot>> = Vec::new();
    let mut frozen: BTreeMap<usize, Frozen> = BTreeMap::new();
    let mut couplers: Vec<(NodeId, usize)> = Vec::new();
    let mut splits: Vec<Split> = Vec::new();
    // Records that every element of `elems` occupies `role` at its position
    // in `node`.
    let occupy =
        |slots: &mut Vec<Vec<Slot>>, elems: &[usize], node: NodeId, role: Role, repeat: usize| {
            for (index, &e) in elems.iter().enumerate() {
                if slots.len() <= e {
                    slots.resize(e + 1, Vec::new());
                }
                slots[e].push(Slot {
                    node,
                    role,
                    index,
                    repeat,
                });
            }
        };
    for (id, node) in g.nodes.iter().enumerate() {
        let input = |k: usize| layouts[node.inputs[k]].clone();
        let layout = match &node.op {
            Op::Input => {
                let elems = uf.fresh(a.shapes[id].channels());
                for &e in &elems {
                    frozen.insert(e, Frozen::Input);
                }
                Layout { elems, repeat: 1 }
            }
            Op::Conv2d {
                in_channels,
                out_channels,
                groups,
                ..
            } if *groups == *in_channels && *groups == *out_channels && *groups > 1 => {
                // Depthwise: each output channel is its input channel, filtered.
                let x = input(0);
                occupy(&mut slots, &x.elems, id, Role::In, 1);
                occupy(&mut slots, &x.elems, id, Role::Out, 1);
                couplers.push((id, x.elems[0]));
                x
            }
            Op::Conv2d {
                out_channels: out, ..
            }
            | Op::Linear {
                out_features: out, ..
            } => {
                let x = input(0);
                occupy(&mut slots, &x.elems, id, Role::In, x.repeat);
                let elems = uf.fresh(*out);
                occupy(&mut slots, &elems, id, Role::Out, 1);
                if let Op::Conv2d { groups: g, .. } = node.op {
                    if g > 1 {
                        for elems in [x.elems.clone(), elems.clone()] {
                            splits.push(Split { elems, groups: g });
                        }
                    }
                }
                Layout { elems, repeat: 1 }
            }
            Op::BatchNorm2d { .. }
            | Op::LayerNorm2d { .. }
            | Op::LayerScale { .. }
            | Op::LayerNorm { .. }
            | Op::ClassToken { .. }
            | Op::PosEmbedding { .. } => {
                let x = input(0);
                occupy(&mut slots, &x.elems, id, Role::Norm, 1);
                x
            }
            Op::MultiheadAttention { .. } => {
                // An attention reads and writes one embedding width: input
                // feature i (the projections' column) and output feature i
                // (the output projection's row) are one channel. Its heads,
                // by key/value group, are units of their own group.
                let x = input(0);
                occupy(&mut slots, &x.elems, id, Role::In, 1);
                occupy(&mut slots, &x.elems, id, Role::Out, 1);
                let l = super::AttentionLayout::of(&node.op).expect("an attention");
                let hs = uf.fresh(l.kv_heads);
                occupy(&mut slots, &hs, id, Role::Head, l.group() * l.head_dim);
                x
            }
            Op::Add | Op::Mul => {
                let first = input(0);
                for k in 1..node.inputs.len() {
                    let other = input(k);
                    for (&x, &y) in first.elems.iter().zip(&other.elems) {
                        uf.union(x, y);
                    }
                }
                couplers.push((id, first.elems[0]));
                // A [C, 1, 1] gate times a [C, H, W] map has the map's layout.
                let widest = (0..node.inputs.len())
                    .max_by_key(|&k| a.shapes[node.inputs[k]].numel())
                    .expect("add and mul have inputs");
                input(widest)
            }
            Op::Concat => {
                let mut elems = Vec::new();
                for k in 0..node.inputs.len() {
                    elems.extend(input(k).elems);
                }
                couplers.push((id, elems[0]));
                Layout { elems, repeat: 1 }
            }
            Op::ChannelShuffle { groups } => {
                // Frozen: pruning would have to keep every run equal and
                // every later split of the interleaved channels balanced,
                // which prunex does not solve (yet).
                let x = input(0);
                for &e in &x.elems {
                    frozen
                        .entry(e)
                        .or_insert_with(|| Frozen::Shuffle(node.name.clone()));
                }
                let run = x.elems.len() / (*groups).max(1);
                let elems = (0..x.elems.len())
                    .map(|k| x.elems[(k % groups) * run + k / groups])
                    .collect();
                Layout { elems, repeat: 1 }
            }
            Op::Slice { start, end } => {
                let x = input(0);
                for &e in &x.elems {
                    frozen
                        .entry(e)
                        .or_insert_with(|| Frozen::Slice(node.name.clone()));
                }
                Layout {
                    elems: x.elems[*start..*end].to_vec(),
                    repeat: 1,
                }
            }
            Op::Flatten => {
                let x = input(0);
                let repeat = match a.shapes[node.inputs[0]] {
                    Shape::Map { h, w, .. } => x.repeat.saturating_mul(h).saturating_mul(w),
                    Shape::Flat(_) => x.repeat,
                    Shape::Tokens { .. } => {
                        // Token-major: a feature's entries are not
                        // consecutive, which the slots cannot say.
                        for &e in &x.elems {
                            frozen
                                .entry(e)
                                .or_insert_with(|| Frozen::Flatten(node.name.clone()));
                        }
                        x.repeat
                    }
                };
                Layout {
                    elems: x.elems,
                    repeat,
                }
            }
            _ => input(0),
        };
        layouts.push(layout);
    }
    for &e in &layouts[g.output].elems {
        frozen.insert(e, Frozen::Output(g.nodes[g.output].name.clone()));
    }

    // Classes of elements, and the groups they form: two classes are in one
    // group when a producer has output channels in both.
    let n = uf.parent.len();
    slots.resize(n, Vec::new());
    let mut class_slots: BTreeMap<usize, Vec<Slot>> = BTreeMap::new();
    let mut class_frozen: BTreeMap<usize, Frozen> = BTreeMap::new();
    for (e, occupied) in slots.iter().enumerate() {
        let c = uf.find(e);
        class_slots
            .entry(c)
            .or_default()
            .extend(occupied.iter().copied());
        if let Some(why) = frozen.get(&e) {
            class_frozen.entry(c).or_insert_with(|| why.clone());
        }
    }
    let mut gf = Uf { parent: Vec::new() };
    let classes: Vec<usize> = class_slots.keys().copied().collect();
    let index_of: BTreeMap<usize, usize> =
        classes.iter().enumerate().map(|(i, &c)| (c, i)).collect();
    gf.fresh(classes.len());
    let mut first_class_of_producer: BTreeMap<(NodeId, Role), usize> = BTreeMap::new();
    for (&c, ss) in &class_slots {
        for s in ss
            .iter()
            .filter(|s| matches!(s.role, Role::Out | Role::Head))
        {
            match first_class_of_producer.get(&(s.node, s.role)) {
                Some(&other) => gf.union(index_of[&c], index_of[&other]),
                None => {
                    first_class_of_producer.insert((s.node, s.role), c);
                }
            }
        }
    }
    // Units: classes at the same position of a grouped convolution's runs
    // are pruned together, so their groups are one group too.
    let mut tie = Uf { parent: Vec::new() };
    tie.fresh(classes.len());
    for sp in &splits {
        let run = sp.elems.len() / sp.groups;
        for p in 0..run {
            let first = index_of[&uf.find(sp.elems[p])];
            for k in 1..sp.groups {
                let other = index_of[&uf.find(sp.elems[p + k * run])];
                tie.union(first, other);
                gf.union(first, other);
            }
        }
    }
    let mut by_root: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (i, &c) in classes.iter().enumerate() {
        by_root.entry(gf.find(i)).or_default().push(c);
    }
    let mut groups: Vec<Group> = Vec::new();
    for members in by_root.values() {
        let mut channels: Vec<Vec<Slot>> = members.iter().map(|c| class_slots[c].clone()).collect();
        for ch in &mut channels {
            ch.sort();
        }
        let nodes_with = |role: Role| {
            let mut v: Vec<NodeId> = channels
                .iter()
                .flatten()
                .filter(|s| s.role == role)
                .map(|s| s.node)
                .collect();
            v.sort();
            v.dedup();
            v
        };
        let heads = nodes_with(Role::Head);
        let (kind, producers) = if heads.is_empty() {
            (GroupKind::Channels, nodes_with(Role::Out))
        } else {
            (GroupKind::Heads, heads)
        };
        if producers.is_empty() {
            continue; // the model input alone
        }
        let norms = nodes_with(Role::Norm);
        let consumers: Vec<NodeId> = nodes_with(Role::In)
            .into_iter()
            .filter(|n| !producers.contains(n))
            .collect();
        let root_elems: Vec<usize> = members.clone();
        let mut cs: Vec<NodeId> = couplers
            .iter()
            .filter(|(_, e)| root_elems.contains(&uf.find(*e)))
            .map(|(n, _)| *n)
            .collect();
        cs.sort();
        cs.dedup();
        let mut by_unit: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        for (i, c) in members.iter().enumerate() {
            by_unit.entry(tie.find(index_of[c])).or_default().push(i);
        }
        let units: Vec<Vec<usize>> = by_unit.into_values().collect();
        let frozen = members
            .iter()
            .find_map(|c| class_frozen.get(c).cloned())
            .or_else(|| {
                units
                    .iter()
                    .any(|u| u.len() != units[0].len())
                    .then_some(Frozen::UnevenUnits)
            });
        groups.push(Group {
            id: 0,
            kind,
            producers,
            norms,
            consumers,
            couplers: cs,
            channels,
            units,
            frozen,
        });
    }
    groups.sort_by_key(|g| (g.producers[0], g.kind == GroupKind::Heads));
    let (mut group_of, mut heads_of) = (BTreeMap::new(), BTreeMap::new());
    for (i, grp) in groups.iter_mut().enumerate() {
        grp.id = i;
        let of = match grp.kind {
            GroupKind::Channels => &mut group_of,
            GroupKind::Heads => &mut heads_of,
        };
        for &p in &grp.producers {
            of.insert(p, i);
        }
    }
    Ok(Coupling {
        groups,
        group_of,
        heads_of,
    })
}
