//! One pruning step, decided in one place. The checker calls [`step`]
//! without weights to predict what a stage does (the counts kept, the graph
//! after it); the executor calls it with the model's weights (and
//! gradients, for Taylor importance) to do it. Both read the same
//! [`Stage`] of the plan, so what `prunex plan` prints is what runs.
//!
//! Counts are Torch-Pruning's (`int(n · (1 − ratio))` channels kept, of the
//! channels the group had when the stage was planned), moved to a multiple
//! of `round_to` and into the bounds a cap (`max`, `<=`) and a floor
//! (`min`, `>=`) set, rounding toward the bound: a cap is never exceeded.

use std::borrow::Cow;
use std::collections::BTreeMap;

use crate::graph::{coupling, Coupling, Graph, GraphError};
use crate::plan::{
    Criterion, Granularity, GroupPlan, RoundedBy, Rounding, Scope, Stage, Step, Target,
};
use crate::tensor::{StateDict, TensorData};

use super::importance::{self, Gradients, KeepRange, Selection};
use super::{blocks, mask, surgery};

/// What a step works from besides the plan: nothing when predicting.
#[derive(Clone, Copy, Debug, Default)]
pub struct Inputs<'a> {
    /// The model's weights; without them the least important channels,
    /// blocks and weights are not known, and the first ones stand in.
    pub weights: Option<&'a StateDict>,
    /// Loss gradients by state_dict key (Taylor importance).
    pub grads: Option<&'a Gradients>,
    /// Seed of `random` importance.
    pub seed: u64,
    /// Wanda: per weight key, the L2 norm of each input feature (channel)
    /// over the calibration batches.
    pub activations: Option<&'a Activations>,
}

pub use super::mask::Activations;

/// What a step does to the model.
#[derive(Clone, Debug)]
pub enum Outcome {
    /// Masks (`weights`, N:M): shapes stay, zeros are held.
    Masks {
        /// Per weight key, which entries stay (only when weights were given).
        masks: Option<mask::Masks>,
        /// Weights zeroed, in all.
        zeros: u64,
    },
    /// Channels or blocks removed physically.
    Rebuilt {
        /// The smaller graph.
        graph: Graph,
        /// Its weights (only when weights were given).
        weights: Option<StateDict>,
    },
}

/// Prunes `g` to schedule step `at` of `stage`.
pub fn step(
    stage: &Stage,
    at: &Step,
    g: &Graph,
    inputs: Inputs<'_>,
) -> Result<Outcome, GraphError> {
    Ok(match stage.granularity {
        Granularity::Weights | Granularity::NM { .. } => masks(stage, at, g, inputs),
        Granularity::Channels | Granularity::Heads => channels(stage, at, g, inputs)?,
        Granularity::Blocks => remove_blocks(stage, at, g, inputs),
    })
}

/// The fraction a group or layer removes at a step, and its bounds.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Want {
    fraction: f64,
    cap: Option<f64>,
    floor: Option<f64>,
}

/// What a target asks for at a step: an exact rule is exact; a stage-wide
/// fraction or a `<=`/`>=` rule is held inside the stage's `max` and `min`
/// and the rule's own bound (the cap wins where they cross). `None` for
/// ignored and frozen targets.
fn want(stage: &Stage, target: &Target, at: &Step) -> Option<Want> {
    let end = stage.end();
    let scaled = |x: f64| at.scale(&Target::Exact(x), end);
    let (fraction, cap, floor) = match *target {
        Target::Ignored | Target::Frozen(_) => return None,
        Target::Exact(x) => (scaled(x), None, None),
        Target::Stage(_) => (at.scale(target, end), stage.max, stage.min.map(scaled)),
        Target::AtMost(x) => (
            at.scale(target, end),
            Some(stage.max.map_or(x, |m| m.min(x))),
            stage.min.map(scaled),
        ),
        Target::AtLeast(x) => (
            at.scale(target, end),
            stage.max,
            Some(scaled(stage.min.map_or(x, |m| m.max(x)))),
        ),
    };
    let mut fraction = fraction;
    if let Some(f) = floor {
        fraction = fraction.max(f);
    }
    if let Some(c) = cap {
        fraction = fraction.min(c);
    }
    Some(Want {
        fraction,
        cap,
        floor,
    })
}

/// The fraction a group or layer with `target` removes at a step, within
/// its bounds; `None` for ignored and frozen targets.
pub fn fraction_at(stage: &Stage, target: &Target, at: &Step) -> Option<f64> {
    want(stage, target, at).map(|w| w.fraction)
}

/// The range of channels of `n` a group may keep under its bounds: at
/// least what its cap leaves, at most what its floor leaves (the cap wins).
fn range(n: usize, w: &Want) -> KeepRange {
    let lo = w
        .cap
        .map_or(1, |c| {
            n.saturating_sub(((n as f64) * c + 1e-9).floor() as usize)
        })
        .clamp(1, n.max(1));
    let hi = w
        .floor
        .map_or(n, |f| {
            n.saturating_sub(((n as f64) * f - 1e-9).ceil() as usize)
        })
        .max(lo);
    KeepRange { lo, hi }
}

/// Channels of `n` kept for `w`: Torch-Pruning's count, held in the bounds,
/// then moved to a multiple of `round_to` inside them; with what moved it.
fn keep_within(n: usize, w: &Want, round_to: Option<usize>) -> (usize, Option<Rounding>) {
    let base = importance::keep_count(n, w.fraction, None);
    let r = range(n, w);
    let bounded = base.clamp(r.lo, r.hi);
    let keep = importance::round_within(bounded, round_to, r.lo, r.hi, n);
    let by = if keep != bounded {
        Some(RoundedBy::RoundTo)
    } else if bounded > base {
        Some(RoundedBy::Cap)
    } else if bounded < base {
        Some(RoundedBy::Floor)
    } else {
        None
    };
    (keep, by.map(|by| Rounding { from: base, by }))
}

/// The channels a planned group keeps at a step (of the channels it had
/// when the stage was planned), and what rounding moved; `None` for
/// ignored and frozen groups.
/// In a group pruned by units, counts are of units and come back in
/// channels.
pub fn group_keep(stage: &Stage, gp: &GroupPlan, at: &Step) -> Option<(usize, Option<Rounding>)> {
    let w = want(stage, &gp.target, at)?;
    let u = gp.unit.max(1);
    let (keep, rounded) = keep_within(
        gp.channels / u,
        &w,
        importance::unit_round(stage.round_to, u),
    );
    Some((
        keep * u,
        rounded.map(|r| Rounding {
            from: r.from * u,
            ..r
        }),
    ))
}

/// Plan groups matched to the groups of `c` by their layers' names (a block
/// removed earlier may have shifted group numbers; a group whose layers are
/// all gone is skipped).
fn current<'p>(stage: &'p Stage, g: &Graph, c: &Coupling) -> Vec<(&'p GroupPlan, usize)> {
    let mut by_name: BTreeMap<&str, usize> = BTreeMap::new();
    let kind = stage.granularity.group_kind();
    for grp in c.groups.iter().filter(|grp| grp.kind == kind) {
        for &p in &grp.producers {
            by_name.insert(g.nodes[p].name.as_str(), grp.id);
        }
    }
    stage
        .groups
        .iter()
        .filter_map(|gp| {
            let gid = gp.layers.iter().find_map(|l| by_name.get(l.as_str()))?;
            Some((gp, *gid))
        })
        .collect()
}

fn channels(
    stage: &Stage,
    at: &Step,
    g: &Graph,
    inputs: Inputs<'_>,
) -> Result<Outcome, GraphError> {
    let c = coupling(g)?;
    let groups = current(stage, g, &c);
    // Counts are of units (channels, unless grouped convolutions tie them).
    let now = |gid: usize| c.groups[gid].units.len();
    let sel = Selection {
        criterion: stage.importance,
        aggregate: stage.aggregate,
        round_to: stage.round_to,
        seed: inputs.seed,
    };
    let removal: surgery::Removal = match (stage.scope, inputs.weights) {
        (Scope::Global, Some(sd)) => {
            // One ranking across groups; targets become per-group ranges.
            let mut ranges = BTreeMap::new();
            let mut planned = 0usize;
            for &(gp, gid) in &groups {
                let Some(w) = want(stage, &gp.target, at) else {
                    continue;
                };
                let u = gp.unit.max(1);
                let units = gp.channels / u;
                let r = if matches!(gp.target, Target::Exact(_)) {
                    let round_to = importance::unit_round(stage.round_to, u);
                    let k = keep_within(units, &w, round_to).0;
                    KeepRange { lo: k, hi: k }
                } else {
                    range(units, &w)
                };
                let n = now(gid);
                ranges.insert(
                    gid,
                    KeepRange {
                        lo: r.lo.min(n),
                        hi: r.hi.min(n),
                    },
                );
                planned += units;
            }
            // The stage's fraction is of the channels it was planned on.
            let keep = ((planned as f64) * (1.0 - at.fraction)).round() as usize;
            importance::select_global(g, &c, sd, &ranges, keep, sel, inputs.grads)
        }
        (_, weights) => {
            // Local (or a prediction of global): each group to its own count.
            let counts: BTreeMap<usize, usize> = groups
                .iter()
                .filter_map(|&(gp, gid)| {
                    let (keep, _) = group_keep(stage, gp, at)?;
                    Some((gid, now(gid).saturating_sub(keep / gp.unit.max(1))))
                })
                .filter(|&(_, r)| r > 0)
                .collect();
            match weights {
                Some(sd) => importance::select_counts(g, &c, sd, &counts, sel, inputs.grads),
                None => counts
                    .into_iter()
                    .map(|(gid, r)| {
                        let units: Vec<usize> = (0..r).collect();
                        (gid, c.groups[gid].channels_of(&units))
                    })
                    .collect(),
            }
        }
    };
    let (graph, weights) = surgery::remove_channels(g, &c, &removal, inputs.weights);
    Ok(Outcome::Rebuilt { graph, weights })
}

/// How many of `candidates` blocks a stage fraction removes in all.
pub fn blocks_removed(candidates: usize, fraction: f64) -> usize {
    ((candidates as f64) * fraction + 1e-9).floor() as usize
}

fn remove_blocks(stage: &Stage, at: &Step, g: &Graph, inputs: Inputs<'_>) -> Outcome {
    let planned: &[String] = stage.blocks.as_ref().map_or(&[], |b| &b.candidates);
    let found = blocks::find(g);
    let candidates: Vec<&blocks::Block> =
        found.iter().filter(|b| planned.contains(&b.name)).collect();
    // The fraction is of the blocks planned; earlier steps took some.
    let total = blocks_removed(planned.len(), at.fraction);
    let gone = planned.len() - candidates.len();
    let remove = total.saturating_sub(gone).min(candidates.len());
    let chosen: Vec<&blocks::Block> = match inputs.weights {
        Some(sd) => {
            let bn = stage.importance == Criterion::BnScale;
            let mut ranked: Vec<(f64, &blocks::Block)> = candidates
                .iter()
                .map(|b| (blocks::score(g, b, sd, bn), *b))
                .collect();
            ranked.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap_or(std::cmp::Ordering::Equal));
            ranked.into_iter().take(remove).map(|(_, b)| b).collect()
        }
        None => candidates.into_iter().take(remove).collect(),
    };
    let (graph, weights) = blocks::remove(g, &chosen, inputs.weights);
    Outcome::Rebuilt { graph, weights }
}

/// The weight matrices of a layer of `g` by module name: keys and shapes.
fn matrices_of(g: &Graph, layer: &str) -> Vec<(String, Vec<usize>)> {
    let Some(node) = g.nodes.iter().find(|n| n.name == layer) else {
        return Vec::new();
    };
    node.op
        .weight_matrices()
        .into_iter()
        .map(|(k, s)| (node.key(k), s))
        .collect()
}

fn masks(stage: &Stage, at: &Step, g: &Graph, inputs: Inputs<'_>) -> Outcome {
    // Every weight matrix of the layers the stage does not ignore, with
    // its layer's target and its shape.
    let layers: Vec<(String, &Target, Vec<usize>)> = stage
        .layers
        .iter()
        .filter(|l| l.target != Target::Ignored)
        .flat_map(|l| {
            matrices_of(g, &l.layer)
                .into_iter()
                .map(move |(k, s)| (k, &l.target, s))
        })
        .collect();
    let keys: Vec<String> = layers.iter().map(|(k, _, _)| k.clone()).collect();
    let numel = |s: &[usize]| s.iter().product::<usize>() as u64;
    // Masks rank magnitudes; under Taylor those are |w · g|. The values only
    // pick the masks: masks apply to the model's weights.
    // Only Taylor scoring needs a copy of the weights.
    let scored: Option<Cow<'_, StateDict>> = match (inputs.weights, inputs.grads) {
        (Some(sd), _) if stage.importance == Criterion::Wanda => Some(Cow::Owned(
            mask::wanda_scores(sd, &keys, inputs.activations),
        )),
        (Some(sd), Some(gr)) if stage.importance == Criterion::Taylor => {
            let mut sd = sd.clone();
            for (k, t) in sd.iter_mut() {
                if let (TensorData::F32(w), Some(g)) =
                    (&mut t.data, gr.get(k).and_then(|g| g.as_f32()))
                {
                    w.iter_mut().zip(g).for_each(|(w, g)| *w *= g);
                }
            }
            Some(Cow::Owned(sd))
        }
        (sd, _) => sd.map(Cow::Borrowed),
    };
    let (masks, zeros) = match stage.granularity {
        Granularity::NM { n, m } => {
            // Layers whose input channels are not a multiple of M stay dense.
            let zeros = layers
                .iter()
                .filter(|(_, _, s)| s.get(1).copied().unwrap_or(1) % m == 0)
                .map(|(_, _, s)| numel(s) / m as u64 * (m - n) as u64)
                .sum();
            (scored.map(|sd| mask::n_m(&sd, &keys, n, m).0), zeros)
        }
        _ if stage.scope == Scope::Global => {
            let total: u64 = layers.iter().map(|(_, _, s)| numel(s)).sum();
            let zeros = ((total as f64) * at.fraction).round() as u64;
            (
                scored.map(|sd| mask::global(&sd, &keys, at.fraction)),
                zeros,
            )
        }
        _ => {
            let targets: BTreeMap<String, f64> = layers
                .iter()
                .filter_map(|(k, t, _)| Some((k.clone(), fraction_at(stage, t, at)?)))
                .collect();
            let zeros = layers
                .iter()
                .map(|(k, _, s)| ((numel(s) as f64) * targets[k]).round() as u64)
                .sum();
            let masks = scored.map(|sd| {
                if stage.importance == Criterion::Wanda {
                    mask::local_rows(&sd, &targets)
                } else {
                    mask::local(&sd, &targets)
                }
            });
            (masks, zeros)
        }
    };
    Outcome::Masks { masks, zeros }
}
