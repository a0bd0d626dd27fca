//! The budget solver: per-subject ratios, from the measured ratios, that
//! bring the model within a budget of MACs or parameters with the least
//! summed damage read off the curves: the evaluation loss's increase by
//! default, or the accuracy points lost ([`Objective`]).
//!
//! Greedy by marginal cost: from nothing pruned, repeatedly raise the one
//! subject whose next measured ratio does the least damage per MAC (or
//! parameter) it saves, until the budget is met; then lower any subject
//! whose last raise is no longer needed. Savings are not additive (a
//! convolution between two groups loses in proportion to both), so every
//! candidate's cost is the whole model's, predicted as `prunex plan`
//! predicts it ([`Analysis::cost`]). Curves are read as running maxima (a
//! curve never wins back what it lost at a smaller ratio); the measure not
//! minimised breaks ties.

use serde::{Deserialize, Serialize};

use super::{Analysis, Cost, Curve, Score, SensitivityError};
use crate::graph::Graph;

/// What a budget limits, as a fraction of the dense model's.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "of", content = "fraction")]
pub enum Budget {
    /// MACs per sample.
    Macs(f64),
    /// Parameters (nonzero ones under masks).
    Params(f64),
    /// Measured latency at batch 64 (solved as the least pruning whose
    /// measured latency fits; the executor measures).
    Latency(f64),
}

impl Budget {
    /// The fraction.
    pub fn fraction(&self) -> f64 {
        match *self {
            Budget::Macs(x) | Budget::Params(x) | Budget::Latency(x) => x,
        }
    }

    /// What it limits, in words.
    pub fn what(&self) -> &'static str {
        match self {
            Budget::Macs(_) => "MACs",
            Budget::Params(_) => "parameters",
            Budget::Latency(_) => "latency",
        }
    }

    /// The command-line option that sets it.
    pub fn flag(&self) -> &'static str {
        match self {
            Budget::Macs(_) => "--target-macs",
            Budget::Params(_) => "--target-params",
            Budget::Latency(_) => "--target-latency",
        }
    }

    /// A short name for file names: `macs-0.5`.
    pub fn slug(&self) -> String {
        let w = match self {
            Budget::Macs(_) => "macs",
            Budget::Params(_) => "params",
            Budget::Latency(_) => "latency",
        };
        format!("{w}-{}", self.fraction())
    }
}

/// What the solver minimises, summed over the subjects' curves.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Objective {
    /// The increase of the mean cross-entropy on the evaluation batches: it
    /// moves before any prediction flips, so it tells apart groups whose
    /// accuracy on a few thousand images does not move at all.
    #[default]
    Loss,
    /// Accuracy points lost (resolved to one image in the evaluation set;
    /// the loss's increase breaks ties).
    Accuracy,
}

impl Objective {
    /// In words, for messages.
    pub fn what(self) -> &'static str {
        match self {
            Objective::Loss => "loss increase",
            Objective::Accuracy => "accuracy loss",
        }
    }
}

fn accuracy() -> Objective {
    Objective::Accuracy
}

/// What to solve for.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Goal {
    /// Which count the budget holds down.
    pub quantity: Quantity,
    /// Its limit, as a fraction of the dense model's.
    pub target: f64,
    /// What to minimise meanwhile.
    pub objective: Objective,
}

/// What [`solve`] found.
#[derive(Clone, Debug, PartialEq)]
pub struct Solved {
    /// Per subject, in the analysis' order, the ratio chosen (0: left alone).
    pub ratios: Vec<f64>,
    /// What the model keeps, predicted.
    pub cost: Cost,
    /// Accuracy lost, summed over the subjects' curves at their ratios, in
    /// points.
    pub summed_drop: f64,
    /// The evaluation loss's increase, summed the same way.
    pub summed_loss: f64,
    /// Whole-model cost predictions made.
    pub evaluations: usize,
}

/// The solver's answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Solution {
    /// The budget.
    pub budget: Budget,
    /// What was minimised (results written before there was a choice
    /// minimised the accuracy lost).
    #[serde(default = "accuracy")]
    pub objective: Objective,
    /// Per subject (by the layer its rule names), the ratio chosen (0: left
    /// alone), in the analysis' order.
    pub ratios: Vec<(String, f64)>,
    /// What the model keeps, predicted.
    pub cost: Cost,
    /// Accuracy lost, summed over the subjects' curves at their ratios, in
    /// points (pruning them together loses more than the sum, before
    /// fine-tuning).
    pub summed_drop: f64,
    /// The evaluation loss's increase, summed the same way.
    #[serde(default)]
    pub summed_loss: f64,
    /// Latency at batch 64 of the dense and the solved model, in ms, when
    /// the budget was a latency.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<(f64, f64)>,
    /// Whole-model cost predictions the solver made.
    pub evaluations: usize,
}

/// Which count a budget holds down.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Quantity {
    /// MACs.
    Macs,
    /// Parameters.
    Params,
}

impl Quantity {
    fn of(self, c: &Cost) -> u64 {
        match self {
            Quantity::Macs => c.macs,
            Quantity::Params => c.params,
        }
    }
}

/// Chooses a ratio per subject so that the goal's quantity is at most its
/// target fraction of the dense model's, with the least summed damage by
/// its objective.
pub fn solve(
    a: &Analysis,
    graph: &Graph,
    dense: &Score,
    dense_cost: &Cost,
    curves: &[Curve],
    goal: Goal,
) -> Result<Solved, SensitivityError> {
    let Goal {
        quantity,
        target,
        objective,
    } = goal;
    let n = a.subjects.len();
    // Damage at levels 0 (nothing) ..= R (the largest ratio measured).
    let at_levels = |v: Vec<f64>| [vec![0.0], v].concat();
    let drops: Vec<Vec<f64>> = curves.iter().map(|c| at_levels(c.drops(dense))).collect();
    let loss_up: Vec<Vec<f64>> = curves
        .iter()
        .map(|c| at_levels(c.loss_rises(dense)))
        .collect();
    // What is minimised, and what breaks its ties, weighted to stay below
    // what the evaluations resolve of the first (one image in thousands).
    let (main, tie, weight) = match objective {
        Objective::Loss => (&loss_up, &drops, 1e-6),
        Objective::Accuracy => (&drops, &loss_up, 1e-3),
    };
    let damage = |i: usize, from: usize, to: usize| {
        (main[i][to] - main[i][from]) + weight * (tie[i][to] - tie[i][from])
    };
    // The largest level each subject may take: its cap.
    let top: Vec<usize> = a
        .subjects
        .iter()
        .map(|s| {
            a.ratios
                .iter()
                .take_while(|&&r| s.max.is_none_or(|m| r <= m + 1e-9))
                .count()
        })
        .collect();
    let ratio = |l: usize| if l == 0 { 0.0 } else { a.ratios[l - 1] };
    let ratios_of = |levels: &[usize]| levels.iter().map(|&l| ratio(l)).collect::<Vec<_>>();
    let mut evaluations = 0usize;
    let mut cost = |levels: &[usize]| -> Result<Cost, SensitivityError> {
        evaluations += 1;
        Ok(a.cost(&a.stage_with(&ratios_of(levels)), graph)?)
    };
    // A relative tolerance: a budget given as a fraction read back from a
    // cost (the latency search's floor) must admit that cost.
    let budget = target * quantity.of(dense_cost) as f64 * (1.0 + 1e-9) + 1e-9;
    let fits = |c: &Cost| quantity.of(c) as f64 <= budget;
    let mut levels = vec![0usize; n];
    let mut cur = cost(&levels)?;
    while !fits(&cur) {
        // (score, saving, subject, level, cost after)
        let mut best: Option<(f64, u64, usize, usize, Cost)> = None;
        for i in 0..n {
            let l = levels[i];
            // The next measured ratio that saves anything: with `round_to`
            // two ratios may keep the same count, and a subject must not
            // stall on the first of them.
            let mut step = None;
            for j in l + 1..=top[i] {
                levels[i] = j;
                let c = cost(&levels)?;
                let saved = quantity.of(&cur).saturating_sub(quantity.of(&c));
                if saved > 0 {
                    step = Some((j, saved, c));
                    break;
                }
            }
            levels[i] = l;
            let Some((j, saved, c)) = step else {
                continue;
            };
            let score = damage(i, l, j) / saved as f64;
            let better = match &best {
                None => true,
                Some((s, sv, ..)) => {
                    score < *s - 1e-15 || ((score - *s).abs() <= 1e-15 && saved > *sv)
                }
            };
            if better {
                best = Some((score, saved, i, j, c));
            }
        }
        if let Some((_, _, i, j, c)) = best {
            levels[i] = j;
            cur = c;
            continue;
        }
        // No single raise saves anything more: everything at its cap is the
        // last answer to try (the undo pass below then lowers what it can).
        let all = cost(&top)?;
        if fits(&all) && levels != top {
            levels = top.clone();
            cur = all;
            continue;
        }
        return Err(SensitivityError::Infeasible {
            what: match quantity {
                Quantity::Macs => "MACs",
                Quantity::Params => "parameters",
            },
            target,
            reachable: quantity.of(&all) as f64 / quantity.of(dense_cost).max(1) as f64,
        });
    }
    // Undo raises the budget no longer needs, the most damaging first.
    loop {
        let mut order: Vec<usize> = (0..n).filter(|&i| levels[i] > 0).collect();
        order.sort_by(|&x, &y| {
            let gain = |i: usize| damage(i, levels[i] - 1, levels[i]);
            gain(y).total_cmp(&gain(x))
        });
        let mut changed = false;
        for i in order {
            levels[i] -= 1;
            let c = cost(&levels)?;
            if fits(&c) {
                cur = c;
                changed = true;
            } else {
                levels[i] += 1;
            }
        }
        if !changed {
            break;
        }
    }
    Ok(Solved {
        ratios: ratios_of(&levels),
        cost: cur,
        summed_drop: (0..n).map(|i| drops[i][levels[i]]).sum(),
        summed_loss: (0..n).map(|i| loss_up[i][levels[i]]).sum(),
        evaluations,
    })
}
