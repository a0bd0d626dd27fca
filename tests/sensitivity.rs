//! `prunex sensitivity` end to end on the committed Fashion-MNIST slice:
//! every group of a ResNet-18 measured at each ratio, a probe equal to what
//! `prunex run` gets pruning that group alone, an interrupted analysis
//! continued from the cache, the budget solver's fragment that `prunex
//! plan` confirms, a latency budget, and the diagnostics the front end
//! gives before anything runs.

#![cfg(feature = "torch")]

use std::path::Path;

use assert_cmd::Command;

const DATA: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/data/fashion-mnist-small"
);

/// A ResNet-18 trained briefly on the slice (its dense model is cached
/// after the first command); `BLOCK` is the prune block.
const RECIPE: &str = r#"recipe "resnet18-sensitivity"
seed 1
device cpu
model resnet18 { input [1, 28, 28] classes 10 }
data fashion_mnist "DATA" { batch 32 eval_batch 100 normalize mean 0.2860 std 0.3530 }
pretrain { epochs 2 optimizer sgd lr 0.05 momentum 0.9 }
BLOCK
export "out"
"#;

const BLOCK: &str = r#"prune channels by l2 {
    schedule oneshot at epoch 0
    round_to 8
    ratio 0.3
    ignore "fc"
}"#;

/// One ratio, two batches: the cheapest analysis of the recipe.
const ONE_RATIO: [&str; 6] = [
    "sensitivity",
    "r.prune",
    "--ratios",
    "0.5",
    "--batches",
    "2",
];

/// The latency test times the CPU: it runs alone, the other analyses of
/// this file (which run in parallel with each other) hold this for reading.
static TIMING: std::sync::RwLock<()> = std::sync::RwLock::new(());

fn prunex(dir: &Path) -> Command {
    let mut c = Command::cargo_bin("prunex").unwrap();
    c.current_dir(dir)
        .env("NO_COLOR", "1")
        .env("CUDA_VISIBLE_DEVICES", "")
        .env("PRUNEX_CACHE", dir.join("cache"));
    c
}

/// `prunex ARGS…` in `dir`, which must succeed.
fn succeeds(dir: &Path, args: &[&str]) -> std::process::Output {
    let out = prunex(dir).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn write_recipe(dir: &Path, name: &str, block: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, RECIPE.replace("DATA", DATA).replace("BLOCK", block)).unwrap();
    p
}

fn yaml(path: &Path) -> serde_yaml::Value {
    serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn sensitivity_measures_every_group_continues_when_interrupted_and_solves_a_budget() {
    let _shared = TIMING.read().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_recipe(d, "r.prune", BLOCK);
    let args = [
        "sensitivity",
        "r.prune",
        "--ratios",
        "0.25,0.5,0.75",
        "--batches",
        "2",
        "--target-macs",
        "0.5",
    ];
    // Interrupted before the 6th probe: exit 130, nothing written.
    let out = prunex(d)
        .args(args)
        .env("PRUNEX_INTERRUPT_AT", "probe:0:5")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{err}");
    assert!(err.contains("prunex::sensitivity::interrupted"), "{err}");
    assert!(err.contains("interrupted after 5 of 36 probes"), "{err}");
    assert!(!d.join("out/sensitivity").exists());

    // Continued: the five probes come from the cache.
    let out = prunex(d).args(args).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{err}");
    assert!(err.contains("from cache: 5 of 36 probes"), "{err}");
    let table = String::from_utf8(out.stdout).unwrap();
    let s = yaml(&d.join("out/sensitivity/sensitivity.yaml"));
    let curves = s["curves"].as_sequence().unwrap();
    // ResNet-18's 13 groups, `fc` (the classes) frozen: 12 measured.
    assert_eq!(curves.len(), 12);
    assert_eq!(s["images"].as_u64(), Some(200));
    for c in curves {
        let pts = c["points"].as_sequence().unwrap();
        assert_eq!(pts.len(), 3);
        // More pruning, fewer MACs and channels kept (rounded to 8).
        let macs: Vec<u64> = pts.iter().map(|p| p["macs"].as_u64().unwrap()).collect();
        assert!(macs.windows(2).all(|w| w[1] < w[0]), "{macs:?}");
        for p in pts {
            let a = p["accuracy"].as_f64().unwrap();
            assert!((0.0..=1.0).contains(&a));
            assert_eq!(p["kept"].as_u64().unwrap() % 8, 0);
        }
    }
    // The table: a row per group, ranked; numbers vary with the CPU.
    let redacted = regex_lite(&table);
    insta::assert_snapshot!("sensitivity_table", redacted);
    // The chart: a line per group and the dense model's, each in the legend.
    let svg = std::fs::read_to_string(d.join("out/sensitivity/sensitivity.svg"))
        .unwrap()
        .replace('\n', "");
    for c in curves {
        let name = c["name"].as_str().unwrap();
        assert!(
            svg.contains(&format!(">{name}</text>")),
            "{name} not in the legend"
        );
    }
    assert!(svg.contains(">dense</text>"));
    // 12 curves + dense, each a line with its points.
    assert!(svg.matches("<circle").count() >= 12 * 4 + 2, "{svg}");
    let json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(d.join("out/sensitivity/sensitivity.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(json["curves"].as_array().unwrap().len(), 12);

    // The fragment: canonical, and a recipe that includes it in place of
    // its prune block plans at most half the MACs.
    let frag = d.join("out/sensitivity/macs-0.5.prune");
    prunex(d)
        .args(["fmt", "--check"])
        .arg(&frag)
        .assert()
        .success();
    write_recipe(
        d,
        "solved.prune",
        "include \"out/sensitivity/macs-0.5.prune\"",
    );
    let plan = succeeds(d, &["plan", "solved.prune", "--yaml"]);
    let plan: serde_yaml::Value = serde_yaml::from_slice(&plan.stdout).unwrap();
    let before = plan["macs_before"].as_u64().unwrap() as f64;
    let after = plan["stages"][0]["macs_after"].as_u64().unwrap() as f64;
    assert!(after <= 0.5 * before, "{after} of {before}");
    let solution = &s["solution"];
    assert_eq!(solution["cost"]["macs"].as_f64().unwrap(), after);
    // Every group has a rule; the block's settings are kept.
    let text = std::fs::read_to_string(&frag).unwrap();
    assert_eq!(text.matches("group \"").count(), 12, "{text}");
    assert!(
        text.contains("round_to 8") && text.contains("ignore \"fc\""),
        "{text}"
    );
    assert!(
        !text.contains("ratio 0.3\n"),
        "the block-wide ratio is dropped:\n{text}"
    );

    // The default objective is the loss's increase; the summed accuracy
    // lost is reported beside it.
    assert_eq!(solution["objective"].as_str(), Some("loss"));
    assert!(solution["summed_loss"].as_f64().unwrap() >= 0.0);
    assert!(text.contains("Least summed loss increase"), "{text}");

    // A second analysis measures nothing again; solving by accuracy reads
    // the same curves.
    let out = prunex(d)
        .args(args)
        .args(["--objective", "accuracy"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("from cache: 36 of 36 probes"), "{err}");
    assert!(err.contains("summed accuracy loss"), "{err}");
    let s = yaml(&d.join("out/sensitivity/sensitivity.yaml"));
    assert_eq!(s["solution"]["objective"].as_str(), Some("accuracy"));
    let text = std::fs::read_to_string(&frag).unwrap();
    assert!(text.contains("Least summed accuracy loss"), "{text}");

    // The block's own ratio and caps do not change what pruning one group
    // alone does: the probes stay measured.
    write_recipe(
        d,
        "r.prune",
        &BLOCK.replace("ratio 0.3", "ratio 0.45\n    scope local max 0.8"),
    );
    let out = succeeds(d, &args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("from cache: 36 of 36 probes"), "{err}");
    // Its criterion does (one ratio measured before is enough to show it).
    write_recipe(d, "r.prune", &BLOCK.replace("by l2", "by l1"));
    let out = succeeds(d, &ONE_RATIO);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("by l1"), "{err}");
    assert!(!err.contains("of 12 probes"), "{err}");
}

/// Numbers out, structure in: measured values and the rank they give
/// depend on the CPU's kernels, so cells with decimals become `[pt]`,
/// ranks `[n]`, and rows are sorted by group.
fn regex_lite(table: &str) -> String {
    let mut out = String::new();
    let mut rows: Vec<String> = Vec::new();
    for line in table.lines() {
        let cells: Vec<String> = line
            .split('│')
            .map(|c| {
                let t = c.trim();
                if !t.is_empty()
                    && t.chars()
                        .all(|ch| ch.is_ascii_digit() || "+-.".contains(ch))
                    && t.contains('.')
                {
                    format!(" {:w$} ", "[pt]", w = c.len().saturating_sub(2))
                } else {
                    c.to_owned()
                }
            })
            .collect();
        let mut cells = cells;
        let is_row = cells.len() > 2 && cells[1].trim().parse::<u32>().is_ok();
        if is_row {
            cells[1] = format!(" {:w$} ", "[n]", w = cells[1].len() - 2);
            rows.push(cells.join("│"));
            continue;
        }
        if !rows.is_empty() {
            rows.sort_by_key(|r| r.split('│').nth(2).unwrap_or("").to_owned());
            for r in rows.drain(..) {
                out.push_str(&r);
                out.push('\n');
            }
        }
        out.push_str(&cells.join("│"));
        out.push('\n');
    }
    out
}

/// A probe is the run's own pruning: the group pruned alone at 0.5 scores,
/// on the whole test slice, what `prunex run` scores right after pruning
/// that group alone by the same recipe.
#[test]
fn a_probe_equals_the_run_that_prunes_its_group_alone() {
    let _shared = TIMING.read().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_recipe(d, "r.prune", BLOCK);
    succeeds(d, &ONE_RATIO);
    let s = yaml(&d.join("out/sensitivity/sensitivity.yaml"));
    let curve = s["curves"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|c| c["name"].as_str() == Some("layer2.0.conv2"))
        .unwrap()
        .clone();
    write_recipe(
        d,
        "alone.prune",
        "prune channels by l2 {\n    schedule oneshot at epoch 0\n    round_to 8\n    group \"layer2.0.conv2\" ratio 0.5\n    ignore \"fc\"\n}",
    );
    succeeds(d, &["run", "alone.prune"]);
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("out/report.json")).unwrap()).unwrap();
    let p = &curve["points"][0];
    assert_eq!(
        report["pruned_accuracy"].as_f64().unwrap(),
        p["accuracy"].as_f64().unwrap()
    );
    assert_eq!(report["macs"][1].as_u64(), p["macs"].as_u64());
    assert_eq!(report["params"][1].as_u64(), p["params"].as_u64());
    // The dense model is the run's: the same cache entry.
    assert_eq!(
        report["dense_accuracy"].as_f64().unwrap(),
        s["dense"]["accuracy"].as_f64().unwrap()
    );
}

#[test]
fn a_latency_budget_is_measured() {
    let _alone = TIMING.write().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_recipe(d, "r.prune", BLOCK);
    succeeds(
        d,
        &[
            "sensitivity",
            "r.prune",
            "--ratios",
            "0.75",
            "--batches",
            "1",
            "--target-latency",
            "0.95",
        ],
    );
    let s = yaml(&d.join("out/sensitivity/sensitivity.yaml"));
    let (dense, solved) = (
        s["solution"]["latency_ms"][0].as_f64().unwrap(),
        s["solution"]["latency_ms"][1].as_f64().unwrap(),
    );
    assert!(solved <= 0.95 * dense, "{solved} ms of {dense} ms");
    let text = std::fs::read_to_string(d.join("out/sensitivity/latency-0.95.prune")).unwrap();
    assert!(text.contains("Measured latency at batch 64"), "{text}");
}

/// What the front end refuses before the executor starts, with the fix.
#[test]
fn what_cannot_be_measured_is_a_diagnostic() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cases: [(&str, &str, &[&str]); 7] = [
        ("no-stage", "", &[]),
        (
            "blocks",
            "prune blocks { schedule oneshot ratio 0.25 }",
            &[],
        ),
        (
            "masks-macs",
            "prune weights by l1 { schedule oneshot sparsity 0.5 }",
            &["--target-macs", "0.5"],
        ),
        ("ratio", BLOCK, &["--ratios", "0.5,1.5"]),
        ("budget", BLOCK, &["--target-params", "0"]),
        (
            "all-ignored",
            "prune channels by l2 { schedule oneshot ratio 0.3 ignore \"*\" }",
            &[],
        ),
        ("out-unwritable", BLOCK, &["--out", "r.prune/results"]),
    ];
    let mut all = String::new();
    for (name, block, extra) in cases {
        write_recipe(d, "r.prune", block);
        let out = prunex(d)
            .args(["sensitivity", "r.prune"])
            .args(extra)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{name}");
        // Nothing ran: no dense model was trained.
        assert!(!d.join("cache").exists(), "{name}");
        all.push_str(&format!(
            "--- {name}\n{}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    insta::assert_snapshot!("sensitivity_diagnostics", all);
}

#[test]
fn under_a_launcher_rank_0_measures_alone() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_recipe(d, "r.prune", BLOCK);
    let launcher = |rank: &str| {
        let mut c = prunex(d);
        c.args(["sensitivity", "r.prune"])
            .env("RANK", rank)
            .env("WORLD_SIZE", "2")
            .env("MASTER_ADDR", "127.0.0.1")
            .env("MASTER_PORT", "29517");
        c
    };
    // Another rank has nothing to do: it says so and measures nothing.
    let out = launcher("1").output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(!d.join("cache").exists() && !d.join("out").exists());
    let mut seen = format!("--- rank 1\n{err}");
    // A launcher variable that makes no sense is the launcher's diagnostic.
    let out = launcher("x").output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(!d.join("cache").exists());
    seen.push_str(&format!("--- RANK=x\n{err}"));
    insta::assert_snapshot!("sensitivity_under_a_launcher", seen);
}
