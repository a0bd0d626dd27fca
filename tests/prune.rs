//! Selection, masks and block finding on synthetic weights (no libtorch).

use std::collections::BTreeMap;

use prunex::graph::{analyze, coupling};
use prunex::models::weights::{StateDict, Tensor};
use prunex::models::zoo::{self, ZooOptions};
use prunex::prune::importance::{
    keep_count, select_global, Aggregate, Criterion, KeepRange, Selection,
};
use prunex::prune::{blocks, mask, surgery};

/// Deterministic pseudo-random weights for a graph.
fn weights(g: &prunex::graph::Graph) -> StateDict {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    g.state_keys()
        .into_iter()
        .map(|(k, shape)| {
            let n: usize = shape.iter().product::<usize>().max(1);
            let v = (0..n)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    (state % 2000) as f32 / 1000.0 - 1.0
                })
                .collect();
            (k, Tensor::f32(shape, v))
        })
        .collect()
}

const SEL: Selection = Selection {
    criterion: Criterion::L2,
    aggregate: Aggregate::Mean,
    round_to: None,
    seed: 0,
};

#[test]
fn keep_counts_follow_torch_pruning_and_never_reach_zero() {
    assert_eq!(keep_count(64, 0.5, None), 32);
    assert_eq!(keep_count(64, 0.3, None), 44);
    assert_eq!(keep_count(64, 0.3, Some(8)), 40);
    assert_eq!(keep_count(6, 0.99, None), 1);
    assert_eq!(keep_count(16, 0.9, Some(8)), 8);
    // Python's int(720 * (1 - 0.3)) is 503: 503.99999999999994 in binary
    // floating point. Torch-Pruning keeps 503 of efficientnet_b2's 720
    // channels; so does prunex.
    assert_eq!(keep_count(720, 0.3, None), 503);
}

#[test]
fn global_ranking_reaches_the_target_within_caps() {
    let g = zoo::build(
        "resnet18",
        ZooOptions {
            input: [3, 32, 32],
            classes: 10,
        },
    )
    .unwrap()
    .unwrap();
    let c = coupling(&g).unwrap();
    let sd = weights(&g);
    // Each group loses at most 70 % and at least 10 % of its channels.
    let range = |n: usize| KeepRange {
        lo: n - (n as f64 * 0.7).floor() as usize,
        hi: n - (n as f64 * 0.1).ceil() as usize,
    };
    let ranges: BTreeMap<usize, KeepRange> = c
        .groups
        .iter()
        .filter(|gr| gr.frozen.is_none())
        .map(|gr| (gr.id, range(gr.channels.len())))
        .collect();
    let total: usize = ranges.keys().map(|&g| c.groups[g].channels.len()).sum();
    let removal = select_global(&g, &c, &sd, &ranges, total / 2, SEL, None);
    let removed: usize = removal.values().map(Vec::len).sum();
    assert_eq!(removed, total - total / 2, "exactly half of all channels");
    for (&gid, idx) in &removal {
        let n = c.groups[gid].channels.len();
        assert!(
            idx.len() as f64 <= 0.7 * n as f64 + 1e-9,
            "group {gid} above its cap"
        );
        assert!(
            idx.len() as f64 >= 0.1 * n as f64 - 1e-9,
            "group {gid} below its floor"
        );
    }
    // Not a uniform cut: some groups lose more than others.
    let fractions: Vec<f64> = removal
        .iter()
        .map(|(g, v)| v.len() as f64 / c.groups[*g].channels.len() as f64)
        .collect();
    assert!(fractions.iter().any(|&f| (f - 0.5).abs() > 0.05));
    let (pg, psd) = surgery::remove_channels(&g, &c, &removal, Some(&sd));
    prunex::models::weights::check(&psd.unwrap(), &pg, "pruned").unwrap();
    assert!(analyze(&pg, pg.input).unwrap().total_macs < analyze(&g, g.input).unwrap().total_macs);
}

#[test]
fn unstructured_masks_reach_their_sparsity_exactly() {
    let g = zoo::build(
        "lenet5",
        ZooOptions {
            input: [1, 28, 28],
            classes: 10,
        },
    )
    .unwrap()
    .unwrap();
    let mut sd = weights(&g);
    let targets: BTreeMap<String, f64> = [
        ("conv1", 0.85),
        ("conv2", 0.80),
        ("fc1", 0.75),
        ("fc2", 0.70),
        ("fc3", 0.80),
    ]
    .iter()
    .map(|(l, s)| (format!("{l}.weight"), *s))
    .collect();
    let masks = mask::local(&sd, &targets);
    for (k, s) in &targets {
        let m = &masks[k];
        let zeros = m.iter().filter(|x| !**x).count();
        assert_eq!(zeros, ((m.len() as f64) * s).round() as usize, "{k}");
    }
    // The classic tutorial's overall sparsity: 73.87 % of all 44,426
    // parameters (biases included) are zero.
    let zeros: usize = masks
        .values()
        .map(|m| m.iter().filter(|k| !**k).count())
        .sum();
    let params = analyze(&g, g.input).unwrap().total_params as f64;
    assert!(
        (zeros as f64 / params - 0.7387).abs() < 0.0001,
        "{}",
        zeros as f64 / params
    );
    mask::apply(&mut sd, &masks);
    let conv1 = sd["conv1.weight"].as_f32().unwrap();
    assert_eq!(
        conv1.iter().filter(|x| **x == 0.0).count(),
        (150.0f64 * 0.85).round() as usize
    );

    let keys: Vec<String> = targets.keys().cloned().collect();
    let g_masks = mask::global(&weights(&g), &keys, 0.6);
    assert!((mask::sparsity(&g_masks) - 0.6).abs() < 1e-4);
}

#[test]
fn two_of_four_keeps_two_in_every_run_of_four_input_channels() {
    let g = zoo::build(
        "resnet18",
        ZooOptions {
            input: [3, 32, 32],
            classes: 10,
        },
    )
    .unwrap()
    .unwrap();
    let sd = weights(&g);
    let keys = vec![
        "layer1.0.conv1.weight".to_owned(),
        "conv1.weight".to_owned(),
        "fc.weight".to_owned(),
    ];
    let (masks, skipped) = mask::n_m(&sd, &keys, 2, 4);
    assert_eq!(
        skipped,
        vec!["conv1.weight".to_owned()],
        "3 input channels are not a multiple of 4"
    );
    let m = &masks["layer1.0.conv1.weight"];
    let (o, i, k) = (64, 64, 9);
    for oo in 0..o {
        for kk in 0..k {
            for start in (0..i).step_by(4) {
                let kept = (start..start + 4)
                    .filter(|&c| m[(oo * i + c) * k + kk])
                    .count();
                assert_eq!(kept, 2);
            }
        }
    }
    assert!((mask::sparsity(&masks) - 0.5).abs() < 1e-9);
}

#[test]
fn blocks_with_identity_shortcuts_are_found_and_removed() {
    let g = zoo::build(
        "resnet18",
        ZooOptions {
            input: [3, 32, 32],
            classes: 10,
        },
    )
    .unwrap()
    .unwrap();
    let found = blocks::find(&g);
    let names: Vec<&str> = found.iter().map(|b| b.name.as_str()).collect();
    assert_eq!(
        names,
        ["layer1.0", "layer1.1", "layer2.1", "layer3.1", "layer4.1"]
    );
    let sd = weights(&g);
    let (pg, psd) = blocks::remove(&g, &[&found[1], &found[3]], Some(&sd));
    let psd = psd.unwrap();
    prunex::models::weights::check(&psd, &pg, "x").unwrap();
    assert!(!psd
        .keys()
        .any(|k| k.starts_with("layer1.1.") || k.starts_with("layer3.1.")));
    assert_eq!(
        analyze(&pg, pg.input).unwrap().shapes[pg.output].to_string(),
        "[10]"
    );
}

/// A transformer layer's two residual branches (attention, MLP) are two
/// blocks, told apart by their layers, and an attention branch is scored
/// by its projections (it has no convolution or linear layer).
#[test]
fn a_transformer_layer_has_two_blocks_each_scored_by_its_weights() {
    let g = zoo::build(
        "vit_mini",
        ZooOptions {
            input: [1, 28, 28],
            classes: 10,
        },
    )
    .unwrap()
    .unwrap();
    let found = blocks::find(&g);
    let names: Vec<&str> = found.iter().map(|b| b.name.as_str()).collect();
    assert_eq!(
        &names[..2],
        [
            "encoder.layers.encoder_layer_0 (ln_1 … dropout)",
            "encoder.layers.encoder_layer_0 (ln_2 … mlp.4)"
        ]
    );
    assert_eq!(found.len(), 8);
    let sd = weights(&g);
    for b in &found {
        assert!(blocks::score(&g, b, &sd, false) > 0.0, "{}", b.name);
    }
}

#[test]
fn taylor_selection_follows_the_gradients() {
    use prunex::prune::importance::select_local;
    let g = zoo::build(
        "simplecnn",
        ZooOptions {
            input: [1, 28, 28],
            classes: 10,
        },
    )
    .unwrap()
    .unwrap();
    let c = coupling(&g).unwrap();
    let sd = weights(&g);
    let conv1 = c.group_of[&g.nodes.iter().position(|n| n.name == "conv1").unwrap()];
    let ratios = BTreeMap::from([(conv1, 0.5)]);
    let sel = Selection {
        criterion: Criterion::Taylor,
        aggregate: Aggregate::Sum,
        round_to: None,
        seed: 0,
    };
    // Gradients that favour the first 16 output channels of conv1 (and are
    // zero elsewhere) make exactly the last 16 the least important.
    let mut grads = StateDict::new();
    for (k, t) in &sd {
        let mut v = vec![0.0f32; t.data.len()];
        if k == "conv1.weight" {
            v[..16 * 9].iter_mut().for_each(|x| *x = 1.0);
        }
        grads.insert(k.clone(), Tensor::f32(t.shape.clone(), v));
    }
    let removal = select_local(&g, &c, &sd, &ratios, sel, Some(&grads));
    assert_eq!(removal[&conv1], (16..32).collect::<Vec<_>>());
}

/// The plan of `prune channels { … }` on simplecnn, as `prunex check` makes it.
fn simplecnn_plan(body: &str) -> (prunex::graph::Graph, prunex::plan::Plan) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.prune");
    std::fs::write(
        &path,
        format!(
            "recipe \"r\"\nmodel simplecnn {{ input [1, 28, 28] classes 10 }}\n\
             data fashion_mnist \"/data\"\nprune channels {{ {body} }}\n"
        ),
    )
    .unwrap();
    let checked = prunex::check::check_path(
        &path,
        &prunex::syntax::FsLoader,
        &[],
        prunex::check::Mode::Single,
    );
    assert!(!checked.has_errors(), "{:?}", checked.reports);
    (checked.graph.unwrap(), checked.plan.unwrap())
}

/// Output channels of a layer of `g`.
fn out_channels(g: &prunex::graph::Graph, layer: &str) -> usize {
    let n = g.nodes.iter().find(|n| n.name == layer).unwrap();
    n.op.state()[0].1[0]
}

/// `int(32 · 0.7) = 22` channels kept would remove 10 of 32 (31.25 %), above
/// a 0.3 cap: the count rounds toward the bound instead, with and without
/// weights (the run and the plan's prediction).
#[test]
fn a_cap_holds_after_integer_rounding() {
    use prunex::prune::decide::{step, Inputs, Outcome};
    for scope in ["global", "local"] {
        let (g, plan) = simplecnn_plan(&format!("scope {scope} max 0.3 ratio 0.5"));
        let stage = &plan.stages[0];
        let at = stage.schedule.last().unwrap();
        let sd = weights(&g);
        for w in [Some(&sd), None] {
            let inputs = Inputs {
                weights: w,
                ..Inputs::default()
            };
            let Outcome::Rebuilt { graph, .. } = step(stage, at, &g, inputs).unwrap() else {
                panic!("channels rebuild the graph");
            };
            for (layer, n) in [("conv1", 32), ("conv2", 64)] {
                let removed = n - out_channels(&graph, layer);
                assert!(
                    removed as f64 <= 0.3 * n as f64,
                    "{scope}: {layer} lost {removed} of {n}"
                );
            }
        }
        if scope == "local" {
            // The plan says what moved the count.
            let gp = &stage.groups[0];
            assert_eq!(gp.keep, Some(23));
            assert_eq!(
                gp.rounded.map(|r| (r.from, r.by)),
                Some((22, prunex::plan::RoundedBy::Cap))
            );
        }
    }
}

/// `round_to` moves a count to a multiple inside the bounds: down as
/// Torch-Pruning rounds, up where down would pass the cap.
#[test]
fn round_to_stays_inside_the_cap() {
    let (_, plan) = simplecnn_plan("scope local max 0.3 round_to 8 ratio 0.5");
    let keeps: Vec<Option<usize>> = plan.stages[0].groups.iter().map(|g| g.keep).collect();
    // 32 channels: at least 23 kept (cap), a multiple of 8 → 24; 64: at
    // least 45 → 48.
    assert_eq!(&keeps[..2], &[Some(24), Some(48)]);
    let (_, plan) = simplecnn_plan("round_to 8 ratio 0.3");
    let keeps: Vec<Option<usize>> = plan.stages[0].groups.iter().map(|g| g.keep).collect();
    // int(32 · 0.7) = 22 → 16; int(64 · 0.7) = 44 → 40.
    assert_eq!(&keeps[..2], &[Some(16), Some(40)]);
}

/// A grouped convolution's channels are pruned in units, one channel at the
/// same position of each of its convolution groups: its input group and its
/// output group count 8 units of 4, every unit loses or keeps all four,
/// and the pruned convolution keeps its 4 groups, each with 5 channels.
#[test]
fn grouped_convolutions_lose_the_same_positions_in_every_group() {
    let g = prunex::models::load("tests/fixtures/ok/models/grouped-cnn.yaml", None, None).unwrap();
    let c = coupling(&g).unwrap();
    let id = |name: &str| g.nodes.iter().position(|n| n.name == name).unwrap();
    let grouped = id("grouped");
    for producer in ["reduce", "grouped"] {
        let grp = &c.groups[c.group_of[&id(producer)]];
        assert!(grp.frozen.is_none(), "{producer}: {:?}", grp.frozen);
        assert_eq!((grp.unit(), grp.units.len()), (4, 8), "{producer}");
        for (p, unit) in grp.units.iter().enumerate() {
            // Channel i of the group is channel i of the convolution here.
            let at: Vec<usize> = unit
                .iter()
                .map(|&i| {
                    grp.channels[i]
                        .iter()
                        .find(|s| s.node == grouped)
                        .unwrap()
                        .index
                })
                .collect();
            assert_eq!(at, vec![p, p + 8, p + 16, p + 24], "{producer}");
        }
    }
    // The residual stream touches no grouped convolution: units of one.
    assert_eq!(c.groups[c.group_of[&id("stem")]].unit(), 1);

    let sd = weights(&g);
    let ratios: BTreeMap<usize, f64> = c
        .groups
        .iter()
        .filter(|gr| gr.frozen.is_none())
        .map(|gr| (gr.id, 0.3))
        .collect();
    let removal = prunex::prune::importance::select_local(&g, &c, &sd, &ratios, SEL, None);
    for producer in ["reduce", "grouped"] {
        let gid = c.group_of[&id(producer)];
        let removed = &removal[&gid];
        // int(8 · 0.7) = 5 units kept: 3 units of 4 channels removed.
        assert_eq!(removed.len(), 12, "{producer}");
        let positions: std::collections::BTreeSet<usize> = removed.iter().map(|i| i % 8).collect();
        assert_eq!(positions.len(), 3, "{producer}: {removed:?}");
    }
    let (pg, psd) = surgery::remove_channels(&g, &c, &removal, Some(&sd));
    let psd = psd.unwrap();
    analyze(&pg, pg.input).unwrap();
    match pg.nodes[grouped].op {
        prunex::graph::Op::Conv2d {
            in_channels,
            out_channels,
            groups,
            ..
        } => assert_eq!((in_channels, out_channels, groups), (20, 20, 4)),
        ref op => panic!("{op:?}"),
    }
    assert_eq!(psd["grouped.weight"].shape, vec![20, 5, 3, 3]);
    // The kept columns are the kept positions of the input runs.
    let kept_in: Vec<usize> = (0..8)
        .filter(|p| !removal[&c.group_of[&id("reduce")]].contains(p))
        .collect();
    let w = sd["grouped.weight"].as_f32().unwrap();
    let pw = psd["grouped.weight"].as_f32().unwrap();
    let kept_out: Vec<usize> = (0..32)
        .filter(|o| !removal[&c.group_of[&grouped]].contains(o))
        .collect();
    for (r, &o) in kept_out.iter().enumerate() {
        for (k, &p) in kept_in.iter().enumerate() {
            assert_eq!(
                &pw[(r * 5 + k) * 9..(r * 5 + k + 1) * 9],
                &w[(o * 8 + p) * 9..(o * 8 + p + 1) * 9]
            );
        }
    }
}
