//! The sparsity a plan's schedule should reach after each fine-tuning
//! epoch, predicted the way `prunex plan` predicts counts (through
//! [`decide::step`] without weights), for the report's "planned against
//! reached" chart.

use std::collections::BTreeMap;

use crate::graph::{Graph, GraphError};
use crate::plan::Plan;
use crate::prune::decide;

/// Weights of every convolution, linear layer and attention projection.
fn weights(g: &Graph) -> u64 {
    g.weight_layers()
        .iter()
        .flat_map(|(_, m)| m.iter())
        .map(|(_, s)| s.iter().product::<usize>() as u64)
        .sum()
}

/// Planned sparsity (weights zero or removed, of the dense model's) after
/// each fine-tuning epoch `0..=epochs` (0: after the pruning before
/// fine-tuning). Steps apply in the executor's order: a step at epoch `e`
/// (counted in epochs, or its step's epoch) before fine-tuning epoch
/// `e + 1`, stages in recipe order.
pub fn planned_sparsity(
    plan: &Plan,
    graph: &Graph,
    steps_per_epoch: u64,
) -> Result<Vec<(u64, f64)>, GraphError> {
    let dense = weights(graph).max(1) as f64;
    let mut events: BTreeMap<u64, Vec<(usize, usize)>> = BTreeMap::new();
    for (i, st) in plan.stages.iter().enumerate() {
        for (k, step) in st.schedule.iter().enumerate() {
            events
                .entry(step.epoch(steps_per_epoch))
                .or_default()
                .push((i, k));
        }
    }
    let epochs = plan.finetune.as_ref().map_or(0, |t| t.epochs);
    let mut g = graph.clone();
    // Each masking stage's zeros as of its latest step.
    let mut zeros: BTreeMap<usize, u64> = BTreeMap::new();
    let mut applied_through: Option<u64> = None;
    let mut out = Vec::new();
    for x in 0..=epochs {
        // After fine-tuning epoch x, the steps at epochs up to x − 1 (and
        // those at epoch 0, which run before fine-tuning) have run.
        let upto = x.max(1) - 1;
        for (&e, evs) in events.range(..=upto) {
            if applied_through.is_some_and(|a| e <= a) {
                continue;
            }
            for &(i, k) in evs {
                let st = &plan.stages[i];
                match decide::step(st, &st.schedule[k], &g, decide::Inputs::default())? {
                    decide::Outcome::Masks { zeros: z, .. } => {
                        zeros.insert(i, z);
                    }
                    decide::Outcome::Rebuilt { graph, .. } => g = graph,
                }
            }
        }
        applied_through = Some(applied_through.map_or(upto, |a| a.max(upto)));
        let kept = weights(&g).saturating_sub(zeros.values().sum()) as f64;
        out.push((x, (1.0 - kept / dense).max(0.0)));
    }
    Ok(out)
}
