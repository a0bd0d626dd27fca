//! How important each coupled channel is, and which ones to remove.
//!
//! Magnitude importance (`l1`, `l2`) follows Torch-Pruning's
//! `GroupMagnitudeImportance`: for a coupled channel, every place it occupies
//! contributes Σ|w|ᵖ — the producer's output row, the BatchNorm γ, and each
//! consumer's input column (all H·W features of it after a flatten) — and the
//! contributions are aggregated (`sum`, `mean` or `max`). Depthwise
//! filters are left out, as Torch-Pruning leaves them out. With `mean`,
//! prunex's ranking is Torch-Pruning's default. `bn_scale` uses only |γ|
//! (Network Slimming); `taylor` uses |w·∂L/∂w| from gradients the executor
//! gathers; `random` is a seeded baseline.
//!
//! A group whose channels grouped convolutions split into units (see
//! [`crate::graph::coupling`]) is ranked by unit: a unit scores the mean of
//! its channels' scores (Torch-Pruning averages importance across channel
//! groups), counts are counts of units, and the removal lists every channel
//! of the units removed.

use std::collections::BTreeMap;

use crate::graph::{Coupling, Graph, Group, Op, Role};
use crate::tensor::StateDict;

pub use crate::plan::{Aggregate, Criterion};

/// Gradients of the loss with respect to weights, accumulated over batches
/// by the executor, keyed like the state_dict. This is all `taylor` needs
/// from libtorch.
pub type Gradients = StateDict;

/// Per-index sums of one place (slot kind) of a group: entry `i` is what
/// channel `i` contributes there, computed in one sequential pass over the
/// tensor (in f64, with partial sums, far below float32's rounding).
fn place_sums(
    t: &crate::tensor::Tensor,
    gr: Option<&[f32]>,
    role: Role,
    repeat: usize,
    criterion: Criterion,
) -> Vec<f64> {
    let w = t.as_f32().expect("weights are floating point");
    // |w·g| for Taylor: the products, once.
    let product: Vec<f32>;
    let v = match gr {
        Some(gr) => {
            product = w.iter().zip(gr).map(|(w, g)| w * g).collect();
            &product[..]
        }
        None => w,
    };
    // One monomorphic pass per criterion, so the inner loops vectorise.
    match criterion {
        Criterion::L2 => sums_of(v, &t.shape, role, repeat, |x| (x as f64) * (x as f64)),
        _ => sums_of(v, &t.shape, role, repeat, |x| (x as f64).abs()),
    }
}

/// [`place_sums`] for one term function `p` (|x| or x²).
fn sums_of(
    v: &[f32],
    shape: &[usize],
    role: Role,
    repeat: usize,
    p: impl Fn(f32) -> f64 + Copy,
) -> Vec<f64> {
    // Σ p(x) over a slice, with four partial sums so it vectorises.
    let sum = |s: &[f32]| -> f64 {
        let mut acc = [0.0f64; 4];
        let chunks = s.chunks_exact(4);
        let tail: f64 = chunks.remainder().iter().map(|&x| p(x)).sum();
        for c in chunks {
            for (a, &x) in acc.iter_mut().zip(c) {
                *a += p(x);
            }
        }
        (acc[0] + acc[1]) + (acc[2] + acc[3]) + tail
    };
    match role {
        Role::Norm => v.iter().map(|&x| p(x)).collect(),
        Role::Head => unreachable!("heads are scored by head_sums"),
        Role::Out => {
            let row: usize = shape[1..].iter().product();
            v.chunks_exact(row.max(1)).take(shape[0]).map(sum).collect()
        }
        Role::In => {
            let cols = shape[1];
            let inner: usize = shape[2..].iter().product();
            let seg = repeat.max(1) * inner;
            let mut acc = vec![0.0f64; cols / repeat.max(1)];
            for row in v.chunks_exact((cols * inner).max(1)).take(shape[0]) {
                if seg == 1 {
                    // 1×1 convolutions and linear layers: one term per channel.
                    for (a, &x) in acc.iter_mut().zip(row) {
                        *a += p(x);
                    }
                } else {
                    for (a, s) in acc.iter_mut().zip(row.chunks_exact(seg)) {
                        *a += sum(s);
                    }
                }
            }
            acc
        }
    }
}

/// Scores every coupled channel of a group.
pub fn scores(
    g: &Graph,
    group: &Group,
    sd: &StateDict,
    grads: Option<&Gradients>,
    criterion: Criterion,
    aggregate: Aggregate,
    seed: u64,
) -> Vec<f64> {
    // Each place's sums are computed once for all channels of the group.
    let mut sums: BTreeMap<(usize, Role, usize), Option<Vec<f64>>> = BTreeMap::new();
    (0..group.channels.len())
        .map(|ch| {
            if criterion == Criterion::Random {
                return splitmix(seed ^ ((group.id as u64) << 32) ^ ch as u64);
            }
            let mut c = Vec::new();
            for s in &group.channels[ch] {
                let op = &g.nodes[s.node].op;
                // bn_scale reads only the BatchNorm γ; layer scales are not
                // ranked (Torch-Pruning ranks by layers and norms alone).
                // Class tokens, position embeddings and an attention's
                // embedding-width rows and columns are not ranked either
                // (Torch-Pruning ranks a ViT's width by its linear layers
                // and LayerNorms); its heads are.
                if (criterion == Criterion::BnScale && !matches!(op, Op::BatchNorm2d { .. }))
                    || matches!(
                        op,
                        Op::LayerScale { .. } | Op::ClassToken { .. } | Op::PosEmbedding { .. }
                    )
                    || (matches!(op, Op::MultiheadAttention { .. }) && s.role != Role::Head)
                {
                    continue;
                }
                let v = sums.entry((s.node, s.role, s.repeat)).or_insert_with(|| {
                    if s.role == Role::Head {
                        return Some(head_sums(g, s.node, sd, grads, criterion));
                    }
                    let key = format!("{}.weight", g.nodes[s.node].name);
                    let t = &sd[&key];
                    // Torch-Pruning leaves depthwise filters out of the
                    // importance (they follow the channel they filter).
                    if is_depthwise(&g.nodes[s.node].op) {
                        return None;
                    }
                    let gr = match (criterion, grads) {
                        (Criterion::Taylor, Some(gr)) => gr.get(&key).and_then(|t| t.as_f32()),
                        _ => None,
                    };
                    Some(place_sums(t, gr, s.role, s.repeat, criterion))
                });
                if let Some(v) = v {
                    // A grouped convolution's weight has one column per
                    // position of its input runs: every run reads it.
                    let i = if s.role == Role::In {
                        s.index % v.len()
                    } else {
                        s.index
                    };
                    c.push(v[i]);
                }
            }
            if c.is_empty() {
                return 0.0;
            }
            match aggregate {
                Aggregate::Sum => c.iter().sum(),
                Aggregate::Mean => c.iter().sum::<f64>() / c.len() as f64,
                Aggregate::Max => c.iter().cloned().fold(f64::MIN, f64::max),
            }
        })
        .collect()
}

/// Per key/value group (a head, without grouped-query attention) of
/// attention node `node`: Σ|w|ᵖ (or |w·∂L/∂w|) over its rows of the
/// projections that read the tokens (queries, keys, values) and its
/// columns of the output projection.
fn head_sums(
    g: &Graph,
    node: usize,
    sd: &StateDict,
    grads: Option<&Gradients>,
    criterion: Criterion,
) -> Vec<f64> {
    let n = &g.nodes[node];
    let Some(l) = crate::graph::AttentionLayout::of(&n.op) else {
        return Vec::new();
    };
    let mut acc = vec![0.0f64; l.kv_heads];
    for p in l.projections() {
        let key = n.key(p.weight);
        let t = &sd[&key];
        let w = t.as_f32().expect("weights are floating point");
        let gr = match (criterion, grads) {
            (Criterion::Taylor, Some(gr)) => gr.get(&key).and_then(|t| t.as_f32()),
            _ => None,
        };
        let cols = t.shape[1];
        let out = p.part == crate::graph::attention::Part::Out;
        for (k, &x) in w.iter().enumerate() {
            let x = gr.map_or(x, |gr| x * gr[k]);
            let term = match criterion {
                Criterion::L2 => (x as f64) * (x as f64),
                _ => (x as f64).abs(),
            };
            let at = if out { k % cols } else { k / cols };
            acc[l.group_of(p, at)] += term;
        }
    }
    acc
}

fn is_depthwise(op: &Op) -> bool {
    matches!(*op, Op::Conv2d { in_channels, out_channels, groups, .. }
        if groups > 1 && groups == in_channels && groups == out_channels)
}

/// The scores of a group's units: the mean of their channels' scores.
pub fn unit_scores(group: &Group, channel_scores: &[f64]) -> Vec<f64> {
    group
        .units
        .iter()
        .map(|u| u.iter().map(|&i| channel_scores[i]).sum::<f64>() / u.len() as f64)
        .collect()
}

/// A deterministic pseudo-random number in [0, 1).
fn splitmix(mut x: u64) -> f64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^= x >> 31;
    (x >> 11) as f64 / (1u64 << 53) as f64
}

/// How many channels of `n` to keep for a fraction removed, as
/// Torch-Pruning counts (`int(n · (1 − ratio))`), rounded down to a multiple
/// of `round_to` when given, and never fewer than one.
pub fn keep_count(n: usize, ratio: f64, round_to: Option<usize>) -> usize {
    // Exactly Python's `int(n * (1 - ratio))`, rounding error included:
    // 720 · (1 − 0.3) is 503.99999999999994 in binary floating point, and
    // Torch-Pruning keeps 503.
    let keep = (((n as f64) * (1.0 - ratio)).floor() as usize).clamp(1, n.max(1));
    round_within(keep, round_to, 1, n, n).clamp(1, n.max(1))
}

/// The indices of the lowest-scoring channels to remove (ties broken by
/// index, lowest first, like a stable sort).
pub fn lowest(scores: &[f64], remove: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| {
        scores[a]
            .partial_cmp(&scores[b])
            .unwrap_or(std::cmp::Ordering::Equal)
            .then(a.cmp(&b))
    });
    let mut out: Vec<usize> = idx.into_iter().take(remove).collect();
    out.sort();
    out
}

/// How channels are chosen.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Selection {
    /// Importance criterion.
    pub criterion: Criterion,
    /// Aggregation over a coupled channel's places.
    pub aggregate: Aggregate,
    /// Keep channel counts multiples of this.
    pub round_to: Option<usize>,
    /// Seed of `random`.
    pub seed: u64,
}

impl Selection {
    /// Torch-Pruning's `MagnitudeImportance(p=2)`: L2 magnitude, the mean
    /// over a coupled channel's places, counts not rounded (what the parity
    /// tests and benchmarks compare with).
    pub fn l2_magnitude() -> Self {
        Selection {
            criterion: Criterion::L2,
            aggregate: Aggregate::Mean,
            round_to: None,
            seed: 0,
        }
    }
}

/// Local pruning: each listed group loses `ratio` of its units (channels,
/// unless grouped convolutions split them), chosen by the selection's
/// criterion. Returns the removal per group, in channels.
pub fn select_local(
    g: &Graph,
    c: &Coupling,
    sd: &StateDict,
    ratios: &BTreeMap<usize, f64>,
    sel: Selection,
    grads: Option<&Gradients>,
) -> BTreeMap<usize, Vec<usize>> {
    let counts: BTreeMap<usize, usize> = ratios
        .iter()
        .filter(|(_, &r)| r > 0.0)
        .map(|(&gid, &r)| {
            let group = &c.groups[gid];
            let n = group.units.len();
            (
                gid,
                n - keep_count(n, r, unit_round(sel.round_to, group.unit())),
            )
        })
        .collect();
    select_counts(g, c, sd, &counts, sel, grads)
}

/// Each listed group loses exactly `remove` of its units, the least
/// important by the selection's criterion. Returns the removal per group,
/// in channels.
pub fn select_counts(
    g: &Graph,
    c: &Coupling,
    sd: &StateDict,
    remove: &BTreeMap<usize, usize>,
    sel: Selection,
    grads: Option<&Gradients>,
) -> BTreeMap<usize, Vec<usize>> {
    let chosen: Vec<(usize, usize)> = remove
        .iter()
        .filter(|(_, &r)| r > 0)
        .map(|(&gid, &r)| (gid, r))
        .collect();
    let gids: Vec<usize> = chosen.iter().map(|&(gid, _)| gid).collect();
    let all = group_scores(g, c, sd, &gids, sel, grads);
    chosen
        .iter()
        .zip(all)
        .map(|(&(gid, r), s)| (gid, c.groups[gid].channels_of(&lowest(&s, r))))
        .filter(|(_, v)| !v.is_empty())
        .collect()
}

/// The unit scores of the groups `gids`, in that order, on several threads.
fn group_scores(
    g: &Graph,
    c: &Coupling,
    sd: &StateDict,
    gids: &[usize],
    sel: Selection,
    grads: Option<&Gradients>,
) -> Vec<Vec<f64>> {
    super::par_map(gids, |&gid| {
        let group = &c.groups[gid];
        let s = scores(g, group, sd, grads, sel.criterion, sel.aggregate, sel.seed);
        if group.unit() == 1 {
            s
        } else {
            unit_scores(group, &s)
        }
    })
}

/// How many units a group may keep under global ranking: at least `lo`
/// (its cap on what is removed), at most `hi` (its floor), both counted in
/// the group's units now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeepRange {
    /// The fewest units it keeps.
    pub lo: usize,
    /// The most units it keeps.
    pub hi: usize,
}

/// Global pruning: one ranking across groups. Scores are divided by their
/// group's mean (Torch-Pruning's `normalizer="mean"`) so groups of different
/// scale compete fairly. Every group first drops to its most (`hi`), then
/// the lowest units overall go until `keep` units are left in all listed
/// groups, no group going below its fewest (`lo`). Each group's count is
/// then moved to a multiple of `round_to` channels inside its range (down,
/// as Torch-Pruning rounds, unless that passes `lo`). The removal is in
/// channels.
pub fn select_global(
    g: &Graph,
    c: &Coupling,
    sd: &StateDict,
    groups: &BTreeMap<usize, KeepRange>,
    keep: usize,
    sel: Selection,
    grads: Option<&Gradients>,
) -> BTreeMap<usize, Vec<usize>> {
    let mut all: Vec<(f64, usize, usize)> = Vec::new();
    let mut scores_of: BTreeMap<usize, Vec<f64>> = BTreeMap::new();
    let gids: Vec<usize> = groups.keys().copied().collect();
    for (&gid, s) in gids.iter().zip(group_scores(g, c, sd, &gids, sel, grads)) {
        let mean = s.iter().sum::<f64>() / s.len().max(1) as f64;
        for (i, &x) in s.iter().enumerate() {
            all.push((if mean > 0.0 { x / mean } else { x }, gid, i));
        }
        scores_of.insert(gid, s);
    }
    all.sort_by(|a, b| {
        a.0.partial_cmp(&b.0)
            .unwrap_or(std::cmp::Ordering::Equal)
            .then((a.1, a.2).cmp(&(b.1, b.2)))
    });
    // Start from each group's floor, then take the globally least important.
    let mut kept: BTreeMap<usize, usize> = groups
        .iter()
        .map(|(&gid, r)| (gid, c.groups[gid].units.len().min(r.hi).max(1)))
        .collect();
    let mut count: usize = kept.values().sum();
    for &(_, gid, _) in &all {
        if count <= keep {
            break;
        }
        let k = kept.get_mut(&gid).expect("every ranked group has an entry");
        if *k > groups[&gid].lo.max(1) {
            *k -= 1;
            count -= 1;
        }
    }
    kept.into_iter()
        .filter_map(|(gid, k)| {
            let n = c.groups[gid].units.len();
            let r = groups[&gid];
            let round_to = unit_round(sel.round_to, c.groups[gid].unit());
            let k = round_within(k, round_to, r.lo.max(1), r.hi.min(n), n);
            let v = c.groups[gid].channels_of(&lowest(&scores_of[&gid], n - k));
            (!v.is_empty()).then_some((gid, v))
        })
        .collect()
}

/// `round_to` (channels) in units of `unit` channels: the fewest units
/// whose channels are a multiple of `round_to`; `None` when any count is.
pub fn unit_round(round_to: Option<usize>, unit: usize) -> Option<usize> {
    let r = round_to?;
    let (mut a, mut b) = (r, unit.max(1));
    while b != 0 {
        (a, b) = (b, a % b);
    }
    Some(r / a).filter(|&r| r > 1)
}

/// `keep` (of `n`) moved to a multiple of `round_to` inside `lo..=hi`: down
/// when that stays at or above `lo`, else up when that stays at or below
/// `hi`; all `n` when even one multiple is more than the group has (and
/// `hi` allows it); else unchanged.
pub fn round_within(keep: usize, round_to: Option<usize>, lo: usize, hi: usize, n: usize) -> usize {
    let Some(r) = round_to.filter(|&r| r > 1) else {
        return keep;
    };
    let down = keep / r * r;
    let up = keep.div_ceil(r) * r;
    if down >= lo.max(1) {
        down
    } else if up <= hi {
        up
    } else if up > n && hi >= n {
        n
    } else {
        keep
    }
}
