//! Physical channel surgery: remove coupled channels from every member of
//! their group — output channels of producers, BatchNorm features, input
//! channels (or the features after a flatten) of consumers — producing a
//! smaller graph and, when given, smaller weights. Plain Rust: no libtorch.

use std::collections::{BTreeMap, BTreeSet};

use crate::graph::{Coupling, Graph, Op, Role};
use crate::tensor::{StateDict, Tensor, TensorData};

/// Channels to remove: for each group id, indices into `Group::channels`.
pub type Removal = BTreeMap<usize, Vec<usize>>;

/// What each node loses, by role.
#[derive(Default, Debug)]
struct Cut {
    out: BTreeSet<usize>,
    norm: BTreeSet<usize>,
    /// Input channel indices, each standing for `repeat` features.
    input: BTreeSet<(usize, usize)>,
    /// Attention heads.
    head: BTreeSet<usize>,
}

fn cuts(c: &Coupling, removal: &Removal) -> BTreeMap<usize, Cut> {
    let mut cuts: BTreeMap<usize, Cut> = BTreeMap::new();
    for (&gid, idxs) in removal {
        let group = &c.groups[gid];
        for &i in idxs {
            for s in &group.channels[i] {
                let cut = cuts.entry(s.node).or_default();
                match s.role {
                    Role::Out => {
                        cut.out.insert(s.index);
                    }
                    Role::Norm => {
                        cut.norm.insert(s.index);
                    }
                    Role::In => {
                        cut.input.insert((s.index, s.repeat));
                    }
                    Role::Head => {
                        cut.head.insert(s.index);
                    }
                }
            }
        }
    }
    cuts
}

/// Keeps the entries of `t` along `dim` whose index is not in `drop`.
pub fn drop_along(t: &Tensor, dim: usize, drop: &BTreeSet<usize>) -> Tensor {
    if drop.is_empty() {
        return t.clone();
    }
    let outer: usize = t.shape[..dim].iter().product();
    let n = t.shape[dim];
    let inner: usize = t.shape[dim + 1..].iter().product();
    let keep: Vec<usize> = (0..n).filter(|i| !drop.contains(i)).collect();
    let mut shape = t.shape.clone();
    shape[dim] = keep.len();
    fn gather<T: Copy>(v: &[T], outer: usize, n: usize, inner: usize, keep: &[usize]) -> Vec<T> {
        let mut out = Vec::with_capacity(outer * keep.len() * inner);
        for o in 0..outer {
            for &k in keep {
                let at = (o * n + k) * inner;
                out.extend_from_slice(&v[at..at + inner]);
            }
        }
        out
    }
    let data = match &t.data {
        TensorData::F32(v) => TensorData::F32(gather(v, outer, n, inner, &keep)),
        TensorData::I64(v) => TensorData::I64(gather(v, outer, n, inner, &keep)),
    };
    Tensor { shape, data }
}

/// Keeps the entries of `t` whose index along dimension 0 is not in
/// `drop0` and along dimension 1 not in `drop1`, in one pass.
pub fn drop_2d(t: &Tensor, drop0: &BTreeSet<usize>, drop1: &BTreeSet<usize>) -> Tensor {
    if t.shape.len() < 2 || drop1.is_empty() {
        return drop_along(t, 0, drop0);
    }
    let (n0, n1) = (t.shape[0], t.shape[1]);
    let inner: usize = t.shape[2..].iter().product();
    let keep0: Vec<usize> = (0..n0).filter(|i| !drop0.contains(i)).collect();
    let keep1: Vec<usize> = (0..n1).filter(|i| !drop1.contains(i)).collect();
    let mut shape = t.shape.clone();
    shape[0] = keep0.len();
    shape[1] = keep1.len();
    fn gather<T: Copy>(v: &[T], n1: usize, inner: usize, k0: &[usize], k1: &[usize]) -> Vec<T> {
        let mut out = Vec::with_capacity(k0.len() * k1.len() * inner);
        for &a in k0 {
            let row = &v[a * n1 * inner..(a + 1) * n1 * inner];
            if inner == 1 {
                out.extend(k1.iter().map(|&b| row[b]));
            } else {
                for &b in k1 {
                    out.extend_from_slice(&row[b * inner..(b + 1) * inner]);
                }
            }
        }
        out
    }
    let data = match &t.data {
        TensorData::F32(v) => TensorData::F32(gather(v, n1, inner, &keep0, &keep1)),
        TensorData::I64(v) => TensorData::I64(gather(v, n1, inner, &keep0, &keep1)),
    };
    Tensor { shape, data }
}

/// Removes the channels in `removal` from the graph (and its weights).
/// Frozen groups must not appear in `removal`; the checker guarantees it.
pub fn remove_channels(
    g: &Graph,
    c: &Coupling,
    removal: &Removal,
    sd: Option<&StateDict>,
) -> (Graph, Option<StateDict>) {
    let cuts = cuts(c, removal);
    let mut out = g.clone();
    // The graph is updated here; the tensors are cut afterwards, in parallel.
    let mut jobs: Vec<(String, Job)> = Vec::new();
    for (id, cut) in &cuts {
        let node = &mut out.nodes[*id];
        let in_features: usize = cut.input.iter().map(|(_, r)| r).sum();
        let feature_drop: BTreeSet<usize> = cut
            .input
            .iter()
            .flat_map(|&(i, r)| i * r..(i + 1) * r)
            .collect();
        let channel_drop: BTreeSet<usize> = cut.input.iter().map(|&(i, _)| i).collect();
        match &mut node.op {
            Op::Conv2d {
                in_channels,
                out_channels,
                groups,
                ..
            } => {
                let depthwise = *groups == *in_channels && *groups == *out_channels && *groups > 1;
                *out_channels -= cut.out.len();
                // A grouped convolution's weight has one column per position
                // of its input runs; units remove the same positions from
                // every run.
                let columns = *in_channels / (*groups).max(1);
                if depthwise {
                    *in_channels = *out_channels;
                    *groups = *out_channels;
                } else {
                    *in_channels -= channel_drop.len();
                }
                let w = if depthwise {
                    Job::Along(cut.out.clone())
                } else {
                    Job::TwoD(
                        cut.out.clone(),
                        channel_drop.iter().map(|&i| i % columns).collect(),
                    )
                };
                jobs.push((format!("{}.weight", node.name), w));
                jobs.push((format!("{}.bias", node.name), Job::Along(cut.out.clone())));
            }
            Op::Linear {
                in_features: inf,
                out_features,
                ..
            } => {
                *out_features -= cut.out.len();
                *inf -= in_features;
                jobs.push((
                    format!("{}.weight", node.name),
                    Job::TwoD(cut.out.clone(), feature_drop),
                ));
                jobs.push((format!("{}.bias", node.name), Job::Along(cut.out.clone())));
            }
            Op::BatchNorm2d { features, .. } => {
                *features -= cut.norm.len();
                for k in ["weight", "bias", "running_mean", "running_var"] {
                    jobs.push((format!("{}.{k}", node.name), Job::Along(cut.norm.clone())));
                }
                jobs.push((format!("{}.num_batches_tracked", node.name), Job::Copy));
            }
            Op::LayerNorm2d { features, .. } | Op::LayerNorm { features, .. } => {
                *features -= cut.norm.len();
                for k in ["weight", "bias"] {
                    jobs.push((format!("{}.{k}", node.name), Job::Along(cut.norm.clone())));
                }
            }
            Op::LayerScale { features } => {
                *features -= cut.norm.len();
                jobs.push((
                    format!("{}.layer_scale", node.name),
                    Job::Along(cut.norm.clone()),
                ));
            }
            Op::ClassToken { features } | Op::PosEmbedding { features, .. } => {
                *features -= cut.norm.len();
                jobs.push((node.name.clone(), Job::Last(cut.norm.clone())));
            }
            Op::MultiheadAttention {
                embed,
                heads,
                kv_heads,
                ..
            } => {
                // Removed heads (by key/value group): their rows of the
                // projections that read the tokens, their columns of the
                // output projection; removed channels: those projections'
                // columns, the output projection's rows.
                let l = crate::graph::AttentionLayout::of(&g.nodes[*id].op).expect("an attention");
                for p in l.projections() {
                    let heads_cut = l.indices(p, &cut.head);
                    let key = |s: &str| g.nodes[*id].key(s);
                    let (w, b) = (key(p.weight), key(p.bias));
                    if p.part == crate::graph::attention::Part::Out {
                        jobs.push((w, Job::TwoD(cut.out.clone(), heads_cut)));
                        if l.bias {
                            jobs.push((b, Job::Along(cut.out.clone())));
                        }
                    } else {
                        jobs.push((w, Job::TwoD(heads_cut.clone(), channel_drop.clone())));
                        if l.bias {
                            jobs.push((b, Job::Along(heads_cut)));
                        }
                    }
                }
                *embed -= cut.out.len();
                *heads -= cut.head.len() * l.group();
                if let Some(kv) = kv_heads {
                    *kv -= cut.head.len();
                }
            }
            _ => {}
        }
    }
    // Tensors of modules that lose channels are rebuilt from `sd` below;
    // only the others are copied as they are.
    let cut_keys: BTreeSet<&str> = jobs.iter().map(|(k, _)| k.as_str()).collect();
    let mut weights: Option<StateDict> = sd.map(|sd| {
        sd.iter()
            .filter(|(k, _)| !cut_keys.contains(k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    });
    if let (Some(src), Some(sd)) = (sd, weights.as_mut()) {
        let present: Vec<(String, &Tensor, Job)> = jobs
            .into_iter()
            .filter_map(|(k, job)| src.get(&k).map(|t| (k, t, job)))
            .collect();
        let cut = super::par_map(&present, |(_, t, job)| match job {
            Job::TwoD(drop0, drop1) => drop_2d(t, drop0, drop1),
            Job::Along(drop) => drop_along(t, 0, drop),
            Job::Last(drop) => drop_along(t, t.shape.len().saturating_sub(1), drop),
            Job::Copy => (*t).clone(),
        });
        for ((k, _, _), t) in present.into_iter().zip(cut) {
            sd.insert(k, t);
        }
    }
    (out, weights)
}

/// What becomes of one tensor of a module that loses channels.
enum Job {
    /// Drop output rows and input columns (conv and linear weights).
    TwoD(BTreeSet<usize>, BTreeSet<usize>),
    /// Drop entries along the first dimension.
    Along(BTreeSet<usize>),
    /// Drop entries along the last dimension (a class token's or position
    /// embedding's features).
    Last(BTreeSet<usize>),
    /// Keep as it is.
    Copy,
}
