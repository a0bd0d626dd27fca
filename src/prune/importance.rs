//! How important each coupled channel is, and which ones to remove.
//!
//! Magnitude importance (`l1`, `l2`) follows Torch-Pruning's
//! `GroupMagnitudeImportance`: for a coupled channel, every place it occupies
//! contributes Σ|w|ᵖ — the producer's output row, the BatchNorm γ, and each
//! consumer's input column (all H·W features of it after a flatten) — and the
//! contributions are aggregated (`sum`, `mean` or `max`). With `mean`,
//! prunex's ranking is Torch-Pruning's default. `bn_scale` uses only |γ|
//! (Network Slimming); `taylor` uses |w·∂L/∂w| from gradients the executor
//! gathers; `random` is a seeded baseline.

use std::collections::BTreeMap;

use crate::graph::{Coupling, Graph, Group, Role};
use crate::models::weights::StateDict;

/// Importance criteria.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Criterion {
    /// Σ|w|.
    L1,
    /// Σw².
    L2,
    /// BatchNorm |γ| only.
    BnScale,
    /// |w · gradient|, summed like L1.
    Taylor,
    /// Uniform random scores (seeded).
    Random,
}

/// How a coupled channel's contributions combine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Aggregate {
    /// Sum over the places the channel occupies.
    Sum,
    /// Mean over them (Torch-Pruning's default).
    Mean,
    /// The largest one.
    Max,
}

/// Gradients of the loss with respect to weights, accumulated over batches
/// by the executor, keyed like the state_dict. This is all `taylor` needs
/// from libtorch.
pub type Gradients = StateDict;

/// Per-index sums of one place (slot kind) of a group: entry `i` is what
/// channel `i` contributes there, computed in one sequential pass over the
/// tensor (in f64, with partial sums, far below float32's rounding).
fn place_sums(
    t: &crate::models::weights::Tensor,
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
                // bn_scale reads only the BatchNorm γ.
                if s.role != Role::Norm && criterion == Criterion::BnScale {
                    continue;
                }
                let v = sums.entry((s.node, s.role, s.repeat)).or_insert_with(|| {
                    let key = format!("{}.weight", g.nodes[s.node].name);
                    let t = &sd[&key];
                    // A depthwise convolution's filter is counted with its output.
                    if s.role == Role::In
                        && t.shape.len() == 4
                        && t.shape[1] == 1
                        && group.producers.contains(&s.node)
                    {
                        return None;
                    }
                    let gr = match (criterion, grads) {
                        (Criterion::Taylor, Some(gr)) => gr.get(&key).and_then(|t| t.as_f32()),
                        _ => None,
                    };
                    Some(place_sums(t, gr, s.role, s.repeat, criterion))
                });
                if let Some(v) = v {
                    c.push(v[s.index]);
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
    let mut keep = ((n as f64) * (1.0 - ratio) + 1e-9).floor() as usize;
    if let Some(r) = round_to.filter(|&r| r > 1) {
        keep = (keep / r) * r;
        if keep == 0 {
            keep = r.min(n);
        }
    }
    keep.clamp(1, n)
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

/// Local pruning: each listed group loses `ratio` of its channels, chosen by
/// the selection's criterion. Returns the removal per group.
pub fn select_local(
    g: &Graph,
    c: &Coupling,
    sd: &StateDict,
    ratios: &BTreeMap<usize, f64>,
    sel: Selection,
    grads: Option<&Gradients>,
) -> BTreeMap<usize, Vec<usize>> {
    let chosen: Vec<(usize, f64)> = ratios
        .iter()
        .filter(|(_, &r)| r > 0.0)
        .map(|(&gid, &r)| (gid, r))
        .collect();
    let gids: Vec<usize> = chosen.iter().map(|&(gid, _)| gid).collect();
    let all = group_scores(g, c, sd, &gids, sel, grads);
    chosen
        .iter()
        .zip(all)
        .map(|(&(gid, r), s)| {
            let n = c.groups[gid].channels.len();
            let keep = keep_count(n, r, sel.round_to);
            (gid, lowest(&s, n - keep))
        })
        .filter(|(_, v)| !v.is_empty())
        .collect()
}

/// The scores of the groups `gids`, in that order, on several threads.
fn group_scores(
    g: &Graph,
    c: &Coupling,
    sd: &StateDict,
    gids: &[usize],
    sel: Selection,
    grads: Option<&Gradients>,
) -> Vec<Vec<f64>> {
    super::par_map(gids, |&gid| {
        scores(
            g,
            &c.groups[gid],
            sd,
            grads,
            sel.criterion,
            sel.aggregate,
            sel.seed,
        )
    })
}

/// Per-group bounds for global ranking.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Bounds {
    /// The largest fraction the group may lose.
    pub max: f64,
    /// The smallest fraction it must lose.
    pub min: f64,
}

/// Global pruning: one ranking across groups. Scores are divided by their
/// group's mean (Torch-Pruning's `normalizer="mean"`) so groups of different
/// scale compete fairly; the lowest channels overall are removed until
/// `ratio` of all channels in `groups` is gone, within each group's bounds,
/// keeping at least one channel (and multiples of `round_to`) per group.
pub fn select_global(
    g: &Graph,
    c: &Coupling,
    sd: &StateDict,
    groups: &BTreeMap<usize, Bounds>,
    ratio: f64,
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
    let total: usize = groups.keys().map(|&gid| c.groups[gid].channels.len()).sum();
    let target = ((total as f64) * ratio).floor() as usize;
    // Start from each group's floor, then take the globally least important.
    let mut removed: BTreeMap<usize, usize> = groups
        .iter()
        .map(|(&gid, b)| {
            let n = c.groups[gid].channels.len();
            (gid, n - keep_count(n, b.min, None))
        })
        .collect();
    let mut count: usize = removed.values().sum();
    for &(_, gid, _) in &all {
        if count >= target {
            break;
        }
        let n = c.groups[gid].channels.len();
        let cap = n - keep_count(n, groups[&gid].max, None);
        let r = removed
            .get_mut(&gid)
            .expect("every ranked group has an entry");
        if *r < cap {
            *r += 1;
            count += 1;
        }
    }
    removed
        .into_iter()
        .filter_map(|(gid, r)| {
            let n = c.groups[gid].channels.len();
            let keep = keep_count(n, r as f64 / n as f64, sel.round_to);
            let s = &scores_of[&gid];
            let v = lowest(s, n - keep);
            (!v.is_empty()).then_some((gid, v))
        })
        .collect()
}
