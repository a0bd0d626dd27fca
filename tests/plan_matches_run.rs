//! What `prunex plan` predicts is what `prunex run` does. For generated
//! recipes (granularities, local and global scope with caps and floors,
//! `round_to`, layer rules, one-shot and iterative schedules) on zoo models,
//! the plan's per-group channel counts, parameters and MACs equal those of
//! the model the executor exports after running the recipe on a tiny slice
//! of Fashion-MNIST, and every cap and floor holds exactly.

#![cfg(feature = "torch")]

use std::collections::BTreeMap;
use std::path::Path;

use assert_cmd::Command;
use proptest::prelude::*;
use prunex::check::{check_path, Mode};
use prunex::models::weights;
use prunex::plan::{Granularity, Plan, Scope, Target};
use prunex::syntax::FsLoader;

const DATA: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/data/fashion-mnist-small"
);

/// A zoo model with a layer rule that matches it.
#[derive(Clone, Debug)]
struct Model {
    name: &'static str,
    input: &'static str,
    pad: u32,
    rule: &'static str,
    blocks: bool,
    /// A layer rule for `prune heads` (attention models).
    heads: Option<&'static str>,
}

const MODELS: [Model; 5] = [
    Model {
        name: "simplecnn",
        input: "[1, 28, 28]",
        pad: 0,
        rule: "conv1",
        blocks: false,
        heads: None,
    },
    Model {
        name: "lenet5",
        input: "[1, 28, 28]",
        pad: 0,
        rule: "conv2",
        blocks: false,
        heads: None,
    },
    Model {
        name: "resnet18",
        input: "[1, 32, 32]",
        pad: 2,
        rule: "layer*.*.conv1",
        blocks: true,
        heads: None,
    },
    Model {
        name: "mobilenet_v2",
        input: "[1, 32, 32]",
        pad: 2,
        rule: "features.1*.conv.0.0",
        blocks: false,
        heads: None,
    },
    Model {
        name: "vit_mini",
        input: "[1, 28, 28]",
        pad: 0,
        rule: "encoder.layers.*.mlp.0",
        blocks: false,
        heads: Some("encoder.layers.encoder_layer_[02].self_attention"),
    },
];

/// One generated recipe.
#[derive(Clone, Debug)]
struct Case {
    model: usize,
    granularity: &'static str,
    global: bool,
    ratio: f64,
    max: Option<f64>,
    min: Option<f64>,
    round_to: Option<u32>,
    rule: Option<(&'static str, f64)>,
    iterative: bool,
}

impl Case {
    fn recipe(&self) -> String {
        let m = &MODELS[self.model];
        let mut body = String::new();
        if self.iterative {
            body += "    schedule iterative 2 steps\n";
        } else {
            body += "    schedule oneshot\n";
        }
        let blocks = self.granularity == "blocks";
        if !blocks && self.granularity != "2:4" {
            let mut scope = format!("    scope {}", if self.global { "global" } else { "local" });
            if let Some(x) = self.max {
                scope += &format!(" max {x}");
            }
            if let Some(x) = self.min {
                scope += &format!(" min {x}");
            }
            body += &format!("{scope}\n");
        }
        if self.granularity == "channels" || self.granularity == "heads" {
            if let Some(r) = self.round_to {
                body += &format!("    round_to {r}\n");
            }
        }
        if self.granularity != "2:4" {
            body += &format!("    ratio {}\n", self.ratio);
        }
        if let (Some((cmp, v)), false) = (self.rule, blocks || self.granularity == "2:4") {
            let rule = match (self.granularity, m.heads) {
                ("heads", Some(heads)) => heads,
                _ => m.rule,
            };
            body += &format!("    layer \"{rule}\" ratio {cmp}{v}\n");
        }
        format!(
            "recipe \"generated\"\nseed 7\ndevice cpu\nmodel {} {{ input {} classes 10 }}\n\
             data fashion_mnist \"{DATA}\" {{ batch 32 eval_batch 100 limit 64 pad {} }}\n\
             prune {} {{\n{body}}}\nfinetune {{ epochs {} optimizer sgd lr 0.01 }}\nexport \"out\"\n",
            m.name,
            m.input,
            m.pad,
            self.granularity,
            if self.iterative { 2 } else { 1 }
        )
    }
}

fn cases() -> impl Strategy<Value = Case> {
    (
        0..MODELS.len(),
        prop_oneof![
            4 => Just("channels"),
            2 => Just("heads"),
            2 => Just("weights"),
            1 => Just("2:4"),
            1 => Just("blocks"),
        ],
        any::<bool>(),
        prop_oneof![Just(0.3), Just(0.45), Just(0.6)],
        prop_oneof![Just(None), Just(Some(0.3)), Just(Some(0.5))],
        prop_oneof![Just(None), Just(Some(0.1))],
        prop_oneof![Just(None), Just(Some(4)), Just(Some(8))],
        prop_oneof![
            Just(None),
            Just(Some(("", 0.25))),
            Just(Some(("<= ", 0.2))),
            Just(Some((">= ", 0.4)))
        ],
        any::<bool>(),
    )
        .prop_map(
            |(model, granularity, global, ratio, max, min, round_to, rule, iterative)| {
                // Block pruning needs residual blocks, head pruning attention.
                let granularity = if (granularity == "blocks" && !MODELS[model].blocks)
                    || (granularity == "heads" && MODELS[model].heads.is_none())
                {
                    "channels"
                } else {
                    granularity
                };
                Case {
                    model,
                    granularity,
                    global,
                    ratio,
                    max,
                    min,
                    round_to,
                    rule,
                    iterative,
                }
            },
        )
}

/// Runs a recipe; returns its report.
fn run(dir: &Path, recipe: &str) -> serde_json::Value {
    let out = Command::cargo_bin("prunex")
        .unwrap()
        .env("NO_COLOR", "1")
        .env("PRUNEX_CACHE", dir.join("cache"))
        .current_dir(dir)
        .args(["run", "r.prune", "--fresh"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "run failed:\n{recipe}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(&std::fs::read_to_string(dir.join("out/report.json")).unwrap()).unwrap()
}

/// Heads per attention layer of the exported model (whose heads keep
/// their width, `vit_mini`'s 16 features).
fn heads_kept(dir: &Path) -> BTreeMap<String, usize> {
    let (sd, _) = weights::read(&dir.join("out/weights.safetensors")).unwrap();
    sd.iter()
        .filter_map(|(k, t)| {
            Some((
                k.strip_suffix(".in_proj_weight")?.to_owned(),
                t.shape[0] / (3 * 16),
            ))
        })
        .collect()
}

/// Output channels per layer of the exported model.
fn out_channels(dir: &Path) -> BTreeMap<String, usize> {
    let (sd, _) = weights::read(&dir.join("out/weights.safetensors")).unwrap();
    sd.iter()
        .filter_map(|(k, t)| {
            // An attention's output projection writes its output channels.
            let k = k.strip_suffix(".weight")?;
            Some((
                k.strip_suffix(".out_proj").unwrap_or(k).to_owned(),
                t.shape[0],
            ))
        })
        .collect()
}

/// Checks the run in `dir` against its plan.
fn compare(case: &Case, plan: &Plan, report: &serde_json::Value, dir: &Path) {
    let stage = &plan.stages[0];
    let params = report["params"][1].as_u64().unwrap();
    let macs = report["macs"][1].as_u64().unwrap();
    match stage.granularity {
        Granularity::Channels | Granularity::Heads => {
            let after = if stage.granularity == Granularity::Heads {
                heads_kept(dir)
            } else {
                out_channels(dir)
            };
            let mut total_planned = 0usize;
            let mut total_kept = 0usize;
            for gp in &stage.groups {
                if matches!(gp.target, Target::Ignored | Target::Frozen(_)) {
                    continue;
                }
                let kept = after[&gp.layers[0]];
                // Every producer of a coupled group keeps the same channels.
                for l in &gp.layers {
                    assert_eq!(after[l], kept, "{l} of group {}", gp.group);
                }
                let n = gp.channels;
                let removed = n - kept;
                // Caps and floors hold exactly, after rounding.
                let cap = match (&gp.target, stage.max) {
                    (Target::Exact(_), _) => None,
                    (Target::AtMost(x), m) => Some(m.map_or(*x, |m| m.min(*x))),
                    (_, m) => m,
                };
                if let Some(c) = cap {
                    assert!(
                        removed as f64 <= c * n as f64 + 1e-9,
                        "group {} lost {removed} of {n}, above its cap {c}",
                        gp.group
                    );
                }
                if let (Some(f), false, None) =
                    (stage.min, matches!(gp.target, Target::Exact(_)), cap)
                {
                    assert!(
                        removed as f64 >= f * n as f64 - 1e-9,
                        "group {} lost {removed} of {n}, below its floor {f}",
                        gp.group
                    );
                }
                if let Some(k) = gp.keep {
                    assert_eq!(kept, k, "group {} ({:?})", gp.group, gp.layers);
                }
                total_planned += n;
                total_kept += kept;
            }
            assert_eq!(stage.estimate, stage.scope == Scope::Global);
            if !stage.estimate {
                assert_eq!(params, stage.params_after, "params");
                assert_eq!(macs, stage.macs_after, "MACs");
            } else if case.round_to.is_none() && stage.groups.iter().all(|g| g.set_by.is_empty()) {
                // Global ranking keeps the stage's share of all channels.
                let want = (total_planned as f64 * (1.0 - stage.end())).round() as usize;
                assert!(
                    total_kept >= want,
                    "kept {total_kept} of {total_planned}, the stage asks {want}"
                );
            }
        }
        Granularity::Weights | Granularity::NM { .. } => {
            let (sd, _) = weights::read(&dir.join("out/weights.safetensors")).unwrap();
            let zeros: u64 = stage
                .layers
                .iter()
                .flat_map(|l| {
                    // A layer's weight, or an attention's two projections.
                    ["weight", "in_proj_weight", "out_proj.weight"]
                        .into_iter()
                        .filter_map(|k| sd.get(&format!("{}.{k}", l.layer)))
                        .collect::<Vec<_>>()
                })
                .map(|t| t.as_f32().unwrap().iter().filter(|x| **x == 0.0).count() as u64)
                .sum();
            assert_eq!(plan.params_before - zeros, stage.params_after, "zeros held");
            assert_eq!(macs, stage.macs_after, "MACs");
        }
        Granularity::Blocks => {
            let b = stage.blocks.as_ref().unwrap();
            let layers = report["layers"].as_array().unwrap();
            let gone: std::collections::BTreeSet<String> = layers
                .iter()
                .filter(|l| l["shape_after"].is_null())
                .map(|l| {
                    let name = l["layer"].as_str().unwrap();
                    name.rsplit_once('.').unwrap().0.to_owned()
                })
                .collect();
            assert_eq!(gone.len(), b.remove, "blocks removed: {gone:?}");
            if !stage.estimate {
                assert_eq!(params, stage.params_after, "params");
                assert_eq!(macs, stage.macs_after, "MACs");
            }
        }
    }
}

proptest! {
    // 14 cases in the suite; `PROPTEST_CASES=200` for a longer search.
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(14),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn the_plan_predicts_what_the_run_does(case in cases()) {
        let dir = tempfile::tempdir().unwrap();
        let recipe = case.recipe();
        std::fs::write(dir.path().join("r.prune"), &recipe).unwrap();
        let checked = check_path(&dir.path().join("r.prune"), &FsLoader, &[], Mode::Single);
        if checked.has_errors() {
            // A generated combination the checker refuses (a ratio that
            // removes a whole group, a rule the granularity does not take).
            let codes: Vec<String> = checked
                .reports
                .iter()
                .filter_map(|r| r.code().map(|c| c.to_string()))
                .collect();
            eprintln!("refused: {codes:?}");
            prop_assume!(false);
        }
        let plan = checked.plan.expect("a clean recipe has a plan");
        let report = run(dir.path(), &recipe);
        compare(&case, &plan, &report, dir.path());
    }
}
