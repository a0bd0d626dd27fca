//! The budget solver on measured-looking curves: it meets the budget with
//! the least summed loss, within caps, no more pruning than needed, refuses
//! what the caps cannot reach, and does not stall where `round_to` makes two
//! ratios keep the same count.

use std::path::Path;

use prunex::check::{check_path, Mode};
use prunex::sensitivity::solve::{solve, Budget, Goal, Objective, Quantity, Solution, Solved};
use prunex::sensitivity::{Analysis, Cost, Curve, Point, Score, SensitivityError};
use prunex::syntax::MemLoader;

fn checked(recipe: &str) -> (prunex::plan::Plan, prunex::graph::Graph) {
    let loader = MemLoader::new().with("r.prune", recipe);
    let c = check_path(Path::new("r.prune"), &loader, &[], Mode::Single);
    assert!(!c.has_errors(), "{:?}", c.reports);
    (c.plan.unwrap(), c.graph.unwrap())
}

const SOLVER: &str = r#"recipe "solver"
model resnet18 { input [1, 28, 28] classes 10 }
data fashion_mnist "nowhere" { batch 32 }
prune channels by l2 {
    schedule oneshot at epoch 0
    scope local max 0.7
    ignore "fc"
}
export "out"
"#;

/// A budget, minimising the accuracy points lost (the curves below move
/// accuracy only).
fn accuracy(quantity: Quantity, target: f64) -> Goal {
    Goal {
        quantity,
        target,
        objective: Objective::Accuracy,
    }
}

/// Curves where group `i` loses `slope(i)` points per tenth of ratio.
fn curves(a: &Analysis, dense: &Score, slope: impl Fn(usize) -> f64) -> Vec<Curve> {
    a.subjects
        .iter()
        .enumerate()
        .map(|(i, s)| Curve {
            subject: s.clone(),
            points: a
                .ratios
                .iter()
                .map(|&r| Point {
                    ratio: r,
                    kept: 0,
                    score: Score {
                        accuracy: dense.accuracy - slope(i) * r * 10.0 / 100.0,
                        loss: dense.loss,
                    },
                    cost: Cost::default(),
                })
                .collect(),
        })
        .collect()
}

#[test]
fn the_solver_meets_the_budget_cheaply_and_within_caps() {
    let (plan, graph) = checked(SOLVER);
    let ratios = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9];
    let a = Analysis::new(&plan, &ratios).unwrap();
    assert_eq!(a.subjects.len(), 12);
    // `max 0.7` caps every group.
    assert!(a.subjects.iter().all(|s| s.max == Some(0.7)));
    let dense = Score {
        accuracy: 0.9,
        loss: 0.3,
    };
    let dense_cost = a
        .cost(&a.stage_with(&vec![0.0; a.subjects.len()]), &graph)
        .unwrap();
    assert_eq!(dense_cost.macs, plan.macs_before);
    // The residual streams (groups naming conv1 and the downsamples) are
    // expensive to prune; the rest are free.
    let stream = |i: usize| a.subjects[i].layers.len() > 1;
    let c = curves(&a, &dense, |i| if stream(i) { 2.0 } else { 0.0 });
    let Solved {
        ratios: r,
        cost,
        summed_drop: summed,
        evaluations: evals,
        ..
    } = solve(
        &a,
        &graph,
        &dense,
        &dense_cost,
        &c,
        accuracy(Quantity::Macs, 0.5),
    )
    .unwrap();
    assert!(cost.macs as f64 <= 0.5 * dense_cost.macs as f64);
    assert!(r.iter().all(|&x| x <= 0.7 + 1e-9), "{r:?}");
    // The predicted cost is what the joint stage plans.
    assert_eq!(a.cost(&a.stage_with(&r), &graph).unwrap(), cost);
    // Free groups go first: a stream group is pruned only when the free
    // ones, at their cap, are not enough.
    let free_at_cap = (0..r.len()).filter(|&i| !stream(i)).all(|i| r[i] == 0.7);
    assert!(
        (0..r.len()).filter(|&i| stream(i)).all(|i| r[i] == 0.0) || free_at_cap,
        "{r:?}"
    );
    let expected: f64 = (0..r.len())
        .map(|i| if stream(i) { 2.0 * r[i] * 10.0 } else { 0.0 })
        .sum();
    assert!((summed - expected).abs() < 1e-6, "{summed} vs {expected}");
    assert!(evals > 0);

    // No more pruning than needed: lowering any one group breaks the budget.
    for i in 0..r.len() {
        let Some(k) = ratios.iter().position(|&x| x == r[i]) else {
            continue;
        };
        let mut lower = r.clone();
        lower[i] = if k == 0 { 0.0 } else { ratios[k - 1] };
        let c = a.cost(&a.stage_with(&lower), &graph).unwrap();
        assert!(
            c.macs as f64 > 0.5 * dense_cost.macs as f64,
            "group {i} could go lower"
        );
    }

    // A budget the caps cannot reach is refused with what they reach.
    let e = solve(
        &a,
        &graph,
        &dense,
        &dense_cost,
        &c,
        accuracy(Quantity::Macs, 0.01),
    )
    .unwrap_err();
    match e {
        SensitivityError::Infeasible { reachable, .. } => {
            assert!(reachable > 0.01 && reachable < 0.5, "{reachable}")
        }
        e => panic!("{e}"),
    }
    // Parameters budget too.
    let Solved { cost, .. } = solve(
        &a,
        &graph,
        &dense,
        &dense_cost,
        &c,
        accuracy(Quantity::Params, 0.6),
    )
    .unwrap();
    assert!(cost.params as f64 <= 0.6 * dense_cost.params as f64);
}

#[test]
fn curves_read_as_running_worst_loss() {
    let (plan, _) = checked(SOLVER);
    let a = Analysis::new(&plan, &[0.2, 0.4, 0.6]).unwrap();
    let dense = Score {
        accuracy: 0.9,
        loss: 0.3,
    };
    let mut c = curves(&a, &dense, |_| 0.0);
    // Noise: a gain at 0.2, a loss at 0.4, a partial recovery at 0.6.
    c[0].points[0].score.accuracy = 0.91;
    c[0].points[1].score.accuracy = 0.85;
    c[0].points[2].score.accuracy = 0.88;
    let d = c[0].drops(&dense);
    assert_eq!(d.len(), 3);
    assert!(
        d[0] == 0.0 && (d[1] - 5.0).abs() < 1e-9 && (d[2] - 5.0).abs() < 1e-9,
        "{d:?}"
    );
}

#[test]
fn the_solver_steps_over_ratios_that_round_to_the_same_count() {
    let (plan, graph) = checked(&SOLVER.replace("scope local max 0.7", "round_to 16"));
    let ratios = [0.1, 0.2, 0.5];
    let a = Analysis::new(&plan, &ratios).unwrap();
    let n = a.subjects.len();
    let dense = Score {
        accuracy: 0.9,
        loss: 0.3,
    };
    let at = |i: usize, r: f64| {
        let mut v = vec![0.0; n];
        v[i] = r;
        a.cost(&a.stage_with(&v), &graph).unwrap()
    };
    let dense_cost = a.cost(&a.stage_with(&vec![0.0; n]), &graph).unwrap();
    // Groups that keep as many channels at 20 % as at 10 % (64 channels:
    // 57 and 51 both round down to 48): their step to 20 % saves nothing.
    let stalls: Vec<usize> = (0..n)
        .filter(|&i| {
            let (a1, a2, a5) = (at(i, 0.1).macs, at(i, 0.2).macs, at(i, 0.5).macs);
            a1 < dense_cost.macs && a1 == a2 && a5 < a2
        })
        .collect();
    assert!(
        !stalls.is_empty(),
        "no group keeps the same count at 10 and 20 %"
    );
    // Those groups cost nothing to prune; every other group costs a lot.
    let c = curves(&a, &dense, |i| if stalls.contains(&i) { 0.0 } else { 5.0 });
    let mut free = vec![0.0; n];
    for &i in &stalls {
        free[i] = 0.5;
    }
    let reachable = a.cost(&a.stage_with(&free), &graph).unwrap();
    let target = reachable.macs as f64 / dense_cost.macs as f64;
    let solved = solve(
        &a,
        &graph,
        &dense,
        &dense_cost,
        &c,
        accuracy(Quantity::Macs, target),
    );
    let Solved {
        ratios: r,
        cost,
        summed_drop: summed,
        ..
    } = solved.unwrap();
    assert!(cost.macs <= reachable.macs);
    assert_eq!(summed, 0.0, "{r:?}");
    assert_eq!(r, free);
}

#[test]
fn the_loss_objective_tells_apart_groups_whose_accuracy_does_not_move() {
    let (plan, graph) = checked(SOLVER);
    let ratios = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7];
    let a = Analysis::new(&plan, &ratios).unwrap();
    let n = a.subjects.len();
    let dense = Score {
        accuracy: 0.9,
        loss: 0.3,
    };
    let dense_cost = a.cost(&a.stage_with(&vec![0.0; n]), &graph).unwrap();
    // No group's accuracy moves on the evaluation images, but the streams'
    // loss rises ten times as fast as the others'.
    let stream = |i: usize| a.subjects[i].layers.len() > 1;
    let mut c = curves(&a, &dense, |_| 0.0);
    for (i, curve) in c.iter_mut().enumerate() {
        for p in &mut curve.points {
            p.score.loss = dense.loss + p.ratio * if stream(i) { 1.0 } else { 0.1 };
        }
    }
    let goal = |objective| Goal {
        quantity: Quantity::Macs,
        target: 0.7,
        objective,
    };
    let by_loss = solve(&a, &graph, &dense, &dense_cost, &c, goal(Objective::Loss)).unwrap();
    assert!(by_loss.cost.macs as f64 <= 0.7 * dense_cost.macs as f64);
    assert_eq!(by_loss.summed_drop, 0.0);
    let expected: f64 = (0..n)
        .map(|i| by_loss.ratios[i] * if stream(i) { 1.0 } else { 0.1 })
        .sum();
    assert!((by_loss.summed_loss - expected).abs() < 1e-9);
    // Minimising the loss leaves the streams alone: the others, at their
    // cap, are enough for this budget.
    assert!(
        (0..n)
            .filter(|&i| stream(i))
            .all(|i| by_loss.ratios[i] == 0.0),
        "{:?}",
        by_loss.ratios
    );
    // Where the two disagree, each objective follows its own measure: the
    // other groups now lose a little accuracy (one image in a thousand per
    // tenth), the streams none.
    for (i, curve) in c.iter_mut().enumerate() {
        for p in &mut curve.points {
            if !stream(i) {
                p.score.accuracy = dense.accuracy - p.ratio * 0.01;
            }
        }
    }
    let by_loss = solve(&a, &graph, &dense, &dense_cost, &c, goal(Objective::Loss)).unwrap();
    assert!((0..n)
        .filter(|&i| stream(i))
        .all(|i| by_loss.ratios[i] == 0.0));
    let by_acc = solve(
        &a,
        &graph,
        &dense,
        &dense_cost,
        &c,
        goal(Objective::Accuracy),
    )
    .unwrap();
    assert!(by_acc.cost.macs as f64 <= 0.7 * dense_cost.macs as f64);
    assert!(
        (0..n).any(|i| stream(i) && by_acc.ratios[i] > 0.0),
        "{:?}",
        by_acc.ratios
    );
    assert!(by_acc.summed_drop < by_loss.summed_drop);
    assert!(by_acc.summed_loss > by_loss.summed_loss);
}

#[test]
fn a_solution_written_before_the_objective_reads_as_accuracy() {
    let sol = Solution {
        budget: Budget::Macs(0.5),
        objective: Objective::Loss,
        ratios: vec![("conv1".into(), 0.3)],
        cost: Cost::default(),
        summed_drop: 1.5,
        summed_loss: 0.2,
        latency_ms: None,
        evaluations: 3,
    };
    let mut v = serde_json::to_value(&sol).unwrap();
    assert_eq!(v["objective"], "loss");
    let m = v.as_object_mut().unwrap();
    m.remove("objective");
    m.remove("summed_loss");
    let old: Solution = serde_json::from_value(v).unwrap();
    assert_eq!(old.objective, Objective::Accuracy);
    assert_eq!(old.summed_loss, 0.0);
    assert_eq!(old.ratios, sol.ratios);
}
