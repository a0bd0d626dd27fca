//! End-to-end runs of the real binaries on a committed slice of Fashion-MNIST
//! (600 training, 200 test images): training lowers the loss, the target
//! sparsity is reached exactly and stays through fine-tuning, channel
//! pruning makes the model smaller, and the exported weights load into
//! PyTorch (`load_state_dict(strict=True)` on the pruned architecture) and
//! score what prunex reported.

#![cfg(feature = "torch")]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command as Std;

use assert_cmd::Command;
use prunex::models::weights;

const DATA: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/data/fashion-mnist-small"
);

fn run(dir: &Path, recipe: &str) -> serde_json::Value {
    run_output(dir, recipe).0
}

/// Runs a recipe; returns its report and what it printed on stdout.
fn run_output(dir: &Path, recipe: &str) -> (serde_json::Value, String) {
    let path = dir.join("r.prune");
    std::fs::write(&path, recipe.replace("DATA", DATA)).unwrap();
    let out = Command::cargo_bin("prunex")
        .unwrap()
        .env("NO_COLOR", "1")
        .env("PRUNEX_CACHE", dir.join("cache"))
        .arg("run")
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "run failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let report =
        serde_json::from_str(&std::fs::read_to_string(dir.join("out/report.json")).unwrap())
            .unwrap();
    (report, String::from_utf8_lossy(&out.stdout).into_owned())
}

fn pytorch_accuracy(dir: &Path, pad: usize) -> f64 {
    let out = Std::new(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python"))
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/parity/yaml_model.py"
        ))
        .args(["accuracy"])
        .arg(dir.join("out/model.yaml"))
        .arg(dir.join("out/weights.safetensors"))
        .arg(DATA)
        .args(["0.2860", "0.3530", &pad.to_string()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "PyTorch (or onnxruntime, for model.onnx) could not load prunex's export:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[path = "common/figures.rs"]
mod figures;
use figures::ALL_FIGURES;

/// report.html holds a section with an SVG chart for each of `ids`, and
/// none of the others.
fn assert_report_page(dir: &Path, ids: &[&str]) {
    let html = std::fs::read_to_string(dir.join("out/report.html")).unwrap();
    for id in ALL_FIGURES {
        let at = html.find(&format!("<section id=\"{id}\""));
        if !ids.contains(&id) {
            assert!(at.is_none(), "{id} has no business on this page");
            continue;
        }
        let at = at.unwrap_or_else(|| panic!("no {id} chart"));
        let section = &html[at..at + html[at..].find("</section>").unwrap()];
        assert!(section.contains("<svg"), "{id}: {section}");
    }
}

#[test]
fn post_training_unstructured_pruning_holds_its_masks() {
    let dir = tempfile::tempdir().unwrap();
    let (report, summary) = run_output(
        dir.path(),
        r#"recipe "lenet5-small"
seed 3
device cpu
model lenet5 { input [1, 28, 28] classes 10 }
data fashion_mnist "DATA" { batch 32 eval_batch 100 normalize mean 0.2860 std 0.3530 }
pretrain { epochs 3 optimizer sgd lr 0.05 momentum 0.9 }
prune weights by l1 {
    schedule oneshot
    layer "conv1" sparsity 0.85
    layer "conv2" sparsity 0.80
    layer "fc1"   sparsity 0.75
    layer "fc2"   sparsity 0.70
    layer "fc3"   sparsity 0.80
}
finetune { epochs 2 optimizer sgd lr 0.01 momentum 0.5 }
export "out"
"#,
    );
    let epochs = report["epochs"].as_array().unwrap();
    let loss = |i: usize| epochs[i]["loss"].as_f64().unwrap();
    assert!(
        loss(2) < loss(0),
        "pretraining lowers the loss: {} → {}",
        loss(0),
        loss(2)
    );
    assert!(report["dense_accuracy"].as_f64().unwrap() > 0.5, "{report}");
    // Exactly round(n · s) zeros in every layer, still zero after fine-tuning.
    let (sd, _) = weights::read(&dir.path().join("out/weights.safetensors")).unwrap();
    for (layer, s) in [
        ("conv1", 0.85),
        ("conv2", 0.80),
        ("fc1", 0.75),
        ("fc2", 0.70),
        ("fc3", 0.80),
    ] {
        let w = sd[&format!("{layer}.weight")].as_f32().unwrap();
        let zeros = w.iter().filter(|x| **x == 0.0).count();
        assert_eq!(zeros, ((w.len() as f64) * s).round() as usize, "{layer}");
    }
    let final_acc = report["final_accuracy"].as_f64().unwrap();
    assert!((pytorch_accuracy(dir.path(), 0) - final_acc).abs() < 1e-6);
    // Masks keep every shape: no channel chart.
    assert_report_page(
        dir.path(),
        &["loss", "accuracy", "sparsity", "layer-sparsity", "latency"],
    );
    // The end-of-run summary as users see it; accuracies (which depend on
    // the CPU's kernels) and timings (on the machine) are redacted.
    insta::with_settings!({filters => vec![
        (r"\d+\.\d+ % → after pruning \d+\.\d+ % → after fine-tuning \d+\.\d+ %", "[dense] % → after pruning [pruned] % → after fine-tuning [final] %"),
        (r"measured latency \(\d+ threads\): .*", "measured latency ([n] threads): [batch 1 and 64, dense → pruned, speed-ups]"),
        (r"wrote \S+/out/", "wrote [dir]/out/"),
    ]}, {
        insta::assert_snapshot!(summary);
    });
}

#[test]
fn channel_pruning_exports_a_smaller_model_pytorch_loads() {
    let dir = tempfile::tempdir().unwrap();
    let (report, summary) = run_output(
        dir.path(),
        r#"recipe "simplecnn-small"
seed 1
device cpu
model simplecnn { input [1, 28, 28] classes 10 }
data fashion_mnist "DATA" { batch 32 eval_batch 100 normalize mean 0.2860 std 0.3530 }
pretrain { epochs 2 optimizer adam lr 0.002 }
prune channels by l2 {
    schedule oneshot
    ratio 0.5
    ignore "fc"
}
finetune { epochs 1 optimizer adam lr 0.001 }
export "out"
"#,
    );
    let params = report["params"].as_array().unwrap();
    assert!(
        params[1].as_u64().unwrap() < params[0].as_u64().unwrap() / 2,
        "{params:?}"
    );
    let (sd, _) = weights::read(&dir.path().join("out/weights.safetensors")).unwrap();
    assert_eq!(sd["conv1.weight"].shape, vec![16, 1, 3, 3]);
    assert_eq!(sd["conv2.weight"].shape, vec![32, 16, 3, 3]);
    assert_eq!(sd["fc.weight"].shape, vec![10, 32 * 7 * 7]);
    let final_acc = report["final_accuracy"].as_f64().unwrap();
    assert!((pytorch_accuracy(dir.path(), 0) - final_acc).abs() < 1e-6);
    assert_report_page(dir.path(), &ALL_FIGURES);
    // The end-of-run summary as users see it; accuracies (which depend on
    // the CPU's kernels) and timings (on the machine) are redacted.
    insta::with_settings!({filters => vec![
        (r"\d+\.\d+ % → after pruning \d+\.\d+ % → after fine-tuning \d+\.\d+ %", "[dense] % → after pruning [pruned] % → after fine-tuning [final] %"),
        (r"measured latency \(\d+ threads\): .*", "measured latency ([n] threads): [batch 1 and 64, dense → pruned, speed-ups]"),
        (r"wrote \S+/out/", "wrote [dir]/out/"),
    ]}, {
        insta::assert_snapshot!(summary);
    });
}

/// Han et al.'s iterative pruning over per-layer targets: with no
/// stage-wide fraction, round k of N takes each layer k/N of the way to its
/// own sparsity (before, every round pruned to the full targets at once).
#[test]
fn iterative_rounds_take_each_layer_part_way_to_its_own_target() {
    let dir = tempfile::tempdir().unwrap();
    let report = run(
        dir.path(),
        r#"recipe "iterative-small"
seed 4
device cpu
model lenet5 { input [1, 28, 28] classes 10 }
data fashion_mnist "DATA" { batch 32 eval_batch 100 normalize mean 0.2860 std 0.3530 }
pretrain { epochs 1 optimizer sgd lr 0.05 momentum 0.9 }
prune weights by l1 {
    schedule iterative 2 steps
    layer "conv2" sparsity 0.8
    layer "fc1"   sparsity 0.5
}
finetune { epochs 2 optimizer sgd lr 0.01 momentum 0.9 }
export "out"
"#,
    );
    // conv/linear weights: 150 + 2400 + 30720 + 10080 + 840.
    let total = 44190.0;
    let sparsity: Vec<f64> = report["epochs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["stage"] == "finetune")
        .map(|e| e["sparsity"].as_f64().unwrap())
        .collect();
    let half = (2400.0 * 0.4 + 30720.0 * 0.25) / total;
    let full = (2400.0 * 0.8 + 30720.0 * 0.5) / total;
    assert_eq!(sparsity.len(), 2);
    assert!((sparsity[0] - half).abs() < 1e-9, "round 1: {sparsity:?}");
    assert!((sparsity[1] - full).abs() < 1e-9, "round 2: {sparsity:?}");
    let (sd, _) = weights::read(&dir.path().join("out/weights.safetensors")).unwrap();
    for (layer, zeros) in [("conv1", 0), ("conv2", 1920), ("fc1", 15360), ("fc2", 0)] {
        let w = sd[&format!("{layer}.weight")].as_f32().unwrap();
        assert_eq!(w.iter().filter(|x| **x == 0.0).count(), zeros, "{layer}");
    }
}

#[test]
fn gradual_global_channel_pruning_removes_the_stage_fraction_of_all_channels() {
    let dir = tempfile::tempdir().unwrap();
    run(
        dir.path(),
        r#"recipe "global-small"
seed 1
device cpu
model simplecnn { input [1, 28, 28] classes 10 }
data fashion_mnist "DATA" { batch 32 eval_batch 100 normalize mean 0.2860 std 0.3530 }
pretrain { epochs 1 optimizer adam lr 0.002 }
prune channels by l2 {
    schedule gradual 0.0 -> 0.5 every 1 epochs curve linear
    scope global max 0.8
    ignore "fc"
}
finetune { epochs 3 optimizer adam lr 0.001 }
export "out"
"#,
    );
    let (sd, _) = weights::read(&dir.path().join("out/weights.safetensors")).unwrap();
    let (c1, c2) = (sd["conv1.weight"].shape[0], sd["conv2.weight"].shape[0]);
    assert_eq!(c1 + c2, 48, "half of the 96 channels stay ({c1} + {c2})");
    assert!(
        c1 as f64 >= 32.0 * 0.2 && c2 as f64 >= 64.0 * 0.2,
        "no layer loses more than its cap"
    );
}

fn small(technique: &str) -> String {
    format!(
        r#"recipe "technique"
seed 2
device cpu
model simplecnn {{ input [1, 28, 28] classes 10 }}
data fashion_mnist "DATA" {{ batch 32 eval_batch 100 normalize mean 0.2860 std 0.3530 }}
pretrain {{ epochs 1 optimizer adam lr 0.002 }}
{technique}
finetune {{ epochs 1 optimizer adam lr 0.001 }}
export "out"
"#
    )
}

/// Network Slimming, Taylor pruning and distillation from the dense model
/// run end to end and shrink the model; distillation changes the
/// fine-tuning objective.
#[test]
fn slimming_taylor_and_distillation_run() {
    let slimming =
        "prune channels by bn_scale { penalty 1e-3 ratio 0.5 schedule oneshot ignore \"fc\" }";
    let taylor = "prune channels by taylor { batches 5 ratio 0.5 schedule oneshot ignore \"fc\" }";
    let plain = "prune channels by l2 { ratio 0.5 schedule oneshot ignore \"fc\" }";
    let distilled = format!("{plain}\ndistill {{ teacher dense temperature 2 alpha 0.7 }}");
    let mut losses = Vec::new();
    for technique in [slimming, taylor, plain, distilled.as_str()] {
        let dir = tempfile::tempdir().unwrap();
        let report = run(dir.path(), &small(technique));
        let params = report["params"].as_array().unwrap();
        assert!(
            params[1].as_u64().unwrap() < params[0].as_u64().unwrap(),
            "{technique}: {params:?}"
        );
        let last = report["epochs"].as_array().unwrap().last().unwrap()["loss"]
            .as_f64()
            .unwrap();
        losses.push(last);
    }
    assert_ne!(
        losses[2], losses[3],
        "distillation changes the fine-tuning loss"
    );
}

const RESUMABLE: &str = r#"recipe "resumable"
seed 5
device cpu
model lenet5 { input [1, 28, 28] classes 10 }
data fashion_mnist "DATA" { batch 32 eval_batch 100 normalize mean 0.2860 std 0.3530 augment crop 2 flip }
pretrain { epochs 2 optimizer sgd lr 0.05 momentum 0.9 }
prune weights by l1 {
    schedule gradual 0.0 -> 0.6 every 1 epochs
    scope global
}
distill { teacher dense temperature 2 alpha 0.5 }
finetune { epochs 3 optimizer adamw lr 0.001 weight_decay 0.01 lr_schedule cosine lr_mult "conv*" 0.5 }
export "out"
"#;

fn exec(dir: &Path, cache: &str, args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = Command::cargo_bin("prunex").unwrap();
    cmd.current_dir(dir)
        .env("NO_COLOR", "1")
        .env("PRUNEX_CACHE", dir.join(cache))
        .arg("run")
        .arg("r.prune")
        .args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

/// A run interrupted inside a fine-tuning epoch and resumed computes
/// exactly what an uninterrupted run with the same seed does: same
/// metrics, bit-identical weights (optimizer state, masks, the dense
/// teacher and the data order are all restored).
#[test]
fn resume_after_an_interrupt_reaches_the_same_result() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("r.prune"), RESUMABLE.replace("DATA", DATA)).unwrap();

    let whole = exec(d, "cache-a", &[], &[]);
    assert!(
        whole.status.success(),
        "{}",
        String::from_utf8_lossy(&whole.stderr)
    );
    let report = std::fs::read_to_string(d.join("out/report.json")).unwrap();
    let weights = std::fs::read(d.join("out/weights.safetensors")).unwrap();
    std::fs::remove_dir_all(d.join("out")).unwrap();

    let cut = exec(
        d,
        "cache-b",
        &[],
        &[("PRUNEX_INTERRUPT_AT", "finetune:2:7")],
    );
    let err = String::from_utf8_lossy(&cut.stderr);
    assert_eq!(cut.status.code(), Some(130), "{err}");
    assert!(err.contains("prunex::run::interrupted"), "{err}");
    assert!(err.contains("finetune epoch 2, step 7"), "{err}");
    assert!(
        !d.join("out").exists(),
        "an interrupted run writes no export"
    );

    let resumed = exec(d, "cache-b", &["--resume"], &[]);
    let err = String::from_utf8_lossy(&resumed.stderr);
    assert!(resumed.status.success(), "{err}");
    assert!(err.contains("resuming finetune epoch 2 at step 7"), "{err}");
    assert_eq!(
        std::fs::read_to_string(d.join("out/report.json")).unwrap(),
        report
    );
    assert_eq!(
        std::fs::read(d.join("out/weights.safetensors")).unwrap(),
        weights
    );
}

/// The dense model is cached by a hash of model, data and training
/// settings: a second run skips pretraining; `--fresh` does not.
#[test]
fn a_second_run_reuses_pretraining_and_fresh_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("r.prune"), RESUMABLE.replace("DATA", DATA)).unwrap();
    let first = exec(d, "cache", &[], &[]);
    let err = String::from_utf8_lossy(&first.stderr);
    assert!(
        err.contains(
            "running: pretrain epochs 1–2, dense evaluation, pruning, finetune epochs 1–3"
        ),
        "{err}"
    );
    let second = exec(d, "cache", &[], &[]);
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(
        err.contains("from cache: pretrain epochs 1–2, dense evaluation\n"),
        "{err}"
    );
    assert!(
        err.contains("running: pruning, finetune epochs 1–3, final measurement"),
        "{err}"
    );
    assert!(!err.contains("pretrain epoch 1/2"), "{err}");
    let fresh = exec(d, "cache", &["--fresh"], &[]);
    let err = String::from_utf8_lossy(&fresh.stderr);
    assert!(err.contains("pretrain epoch 1/2"), "{err}");
    // The report's lock names the inputs.
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("out/report.json")).unwrap()).unwrap();
    for k in ["recipe", "plan", "model", "data"] {
        assert_eq!(r["lock"][k].as_str().unwrap().len(), 64, "{k}");
    }
    assert_eq!(r["lock"]["seed"], 5);
    // Timings are kept apart from the deterministic report.
    let t = std::fs::read_to_string(d.join("out/timings.yaml")).unwrap();
    assert!(t.contains("batch64_ms"), "{t}");
}

/// A real Ctrl-C (SIGINT to `prunex run`) stops the executor at a batch
/// boundary: exit 130, the stable code, a checkpoint, no export.
#[test]
fn ctrl_c_saves_and_exits_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (code, seen) = interrupt_a_long_run(d, 1);
    assert_eq!(code, Some(130), "{seen}");
    assert!(seen.contains("prunex::run::interrupted"), "{seen}");
    assert!(seen.contains("--resume"), "{seen}");
    assert!(!d.join("out").exists());
    let entries = std::fs::read_dir(d.join("cache")).unwrap().count();
    // The finished epoch, and the partial one unless Ctrl-C came between two.
    assert!(entries >= 1, "the finished epoch is saved");
}

/// A second Ctrl-C ends the run at once: exit 130, nothing exported, and no
/// libtorch error. (The executor leaves with `_exit`: `exit` ran C++ static
/// destructors under the training thread, which once made libtorch fail
/// mid-convolution; that race is too narrow to provoke here reliably.)
#[test]
fn a_second_ctrl_c_exits_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (code, seen) = interrupt_a_long_run(d, 2);
    assert_eq!(code, Some(130), "{seen}");
    assert!(!seen.contains("prunex::run::torch"), "{seen}");
    assert!(!d.join("out").exists());
}

/// Starts a long run in DIR, waits for its first finished epoch, presses
/// Ctrl-C TIMES times; returns the exit code and everything it printed.
fn interrupt_a_long_run(d: &Path, times: usize) -> (Option<i32>, String) {
    use std::io::Read;
    let long = RESUMABLE
        .replace("DATA", DATA)
        .replace("pretrain { epochs 2", "pretrain { epochs 500");
    std::fs::write(d.join("r.prune"), long).unwrap();
    let mut child = Std::new(assert_cmd::cargo::cargo_bin("prunex"))
        .current_dir(d)
        .env("NO_COLOR", "1")
        .env("PRUNEX_CACHE", d.join("cache"))
        .args(["run", "r.prune"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = child.stderr.take().unwrap();
    let mut seen = common::read_until(&mut err, "pretrain epoch 1/500");
    for _ in 0..times {
        unsafe {
            libc::kill(child.id() as i32, libc::SIGINT);
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    err.read_to_string(&mut seen).unwrap();
    (child.wait().unwrap().code(), seen)
}

/// A stage cache that cannot be written (here: its path runs through a
/// file) costs the checkpoints, not the run: warnings, then the export.
#[test]
fn an_unwritable_cache_costs_checkpoints_not_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("r.prune"), RESUMABLE.replace("DATA", DATA)).unwrap();
    std::fs::write(d.join("blocker"), "a file, not a folder").unwrap();
    let out = exec(d, "blocker/cache", &[], &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("prunex::run::checkpoint_failed"), "{err}");
    assert!(d.join("out/weights.safetensors").exists());
}

/// Runs `RESUMABLE` with `from` replaced by `to`: it must stop before any
/// training, with exit 1 and nothing exported. Returns what it printed from
/// the first run diagnostic on (or the first check diagnostic, when the
/// check refused it).
fn refused_run(from: &str, to: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let recipe = RESUMABLE.replace("DATA", DATA);
    assert!(recipe.contains(from), "{from}");
    std::fs::write(d.join("r.prune"), recipe.replace(from, to)).unwrap();
    let out = exec(d, "cache", &[], &[]);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(!d.join("out").exists());
    let at = err
        .find("prunex::run::")
        .or_else(|| err.find("prunex::check::"))
        .expect("a run or check diagnostic");
    err[at..].to_owned()
}

/// Data whose images do not fit the model's input stop the run before any
/// training, with the stable code: the check's pre-flight knows it from
/// the data's headers.
#[test]
fn data_that_does_not_fit_the_model_is_reported() {
    let err = refused_run("input [1, 28, 28]", "input [1, 32, 32]");
    assert!(err.contains("prunex::check::input_mismatch"), "{err}");
    assert!(
        err.contains("[1, 32, 32]") && err.contains("[1, 28, 28]"),
        "{err}"
    );
}

/// A schedule counted in steps that would prune after fine-tuning ends is
/// stopped before training (the fixture's 600 images make 19 steps of 32).
#[test]
fn a_step_schedule_past_fine_tuning_is_reported() {
    insta::assert_snapshot!(refused_run(
        "schedule gradual 0.0 -> 0.6 every 1 epochs",
        "schedule oneshot at step 60",
    ));
}

/// A CUDA device the machine does not have stops the run before any data
/// is read, with a coded diagnostic (it was a libtorch panic, exit 101);
/// `prunex check` warns about it at the device line.
#[test]
fn a_missing_cuda_device_is_reported_not_a_panic() {
    let diagnostic = refused_run("device cpu", "device cuda:63");
    insta::with_settings!({filters => vec![(r"sees \d+ CUDA", "sees [n] CUDA")]}, {
        insta::assert_snapshot!(diagnostic);
    });
}

/// `--set` on settings shortens a run from the command line; the report's
/// plan (and so the lock's plan hash) says what was set.
#[test]
fn set_shortens_a_run_and_the_report_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("r.prune"), RESUMABLE.replace("DATA", DATA)).unwrap();
    let out = exec(
        d,
        "cache",
        &["--set", "pretrain.epochs=1", "--set", "finetune.epochs=2"],
        &[],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("out/report.json")).unwrap()).unwrap();
    let epochs: Vec<(&str, u64)> = report["epochs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["stage"].as_str().unwrap(), e["epoch"].as_u64().unwrap()))
        .collect();
    assert_eq!(epochs, [("pretrain", 1), ("finetune", 1), ("finetune", 2)]);
    assert_eq!(
        report["plan"]["overrides"],
        serde_json::json!(["pretrain.epochs=1", "finetune.epochs=2"])
    );
}

/// `--resume` after an interrupted `--fresh` run continues that run: the
/// fresh run dropped the older entries of the same recipe (it resumed from
/// them, finishing at once with the old results); every run's first line
/// says what it takes from the cache.
#[test]
fn resume_after_an_interrupted_fresh_run_continues_it() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("r.prune"), RESUMABLE.replace("DATA", DATA)).unwrap();
    let first = exec(d, "cache", &[], &[]);
    let err = String::from_utf8_lossy(&first.stderr);
    assert!(
        err.contains("from cache: nothing saved for these settings yet\n"),
        "{err}"
    );
    let fresh = exec(
        d,
        "cache",
        &["--fresh"],
        &[("PRUNEX_INTERRUPT_AT", "finetune:2:3")],
    );
    let err = String::from_utf8_lossy(&fresh.stderr);
    assert_eq!(fresh.status.code(), Some(130), "{err}");
    assert!(
        err.contains("from cache: nothing (--fresh: this recipe's earlier results were dropped)\n"),
        "{err}"
    );
    let resumed = exec(d, "cache", &["--resume"], &[]);
    let err = String::from_utf8_lossy(&resumed.stderr);
    assert!(resumed.status.success(), "{err}");
    assert!(
        err.contains(
            "from cache: pretrain epochs 1–2, dense evaluation, pruning, finetune epoch 1\n"
        ) && err.contains("resuming finetune epoch 2 at step 3"),
        "{err}"
    );
}

/// A model from ONNX runs end to end: its initializers (here partly in an
/// external data file, as the dynamo exporter writes them) are the starting
/// weights, channels are cut, and the weights' content keys the cache, so
/// a changed data file is not mistaken for the cached model.
#[test]
fn an_onnx_model_runs_and_its_external_weights_key_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for (split, n) in [("train", 3u32), ("test", 1)] {
        for class in 0..5u32 {
            for i in 0..n {
                let p = d.join(format!("data/{split}/c{class}/{i}.png"));
                std::fs::create_dir_all(p.parent().unwrap()).unwrap();
                image::RgbImage::from_fn(8, 8, |x, y| {
                    image::Rgb([(x * 30 + class * 40) as u8, (y * 20 + i * 9) as u8, 90])
                })
                .save(p)
                .unwrap();
            }
        }
    }
    let write_model = |scale: f32| {
        let values: Vec<f32> = (0..108).map(|i| (i % 11) as f32 * 0.05 * scale).collect();
        let (model, data) = common::tiny_onnx_external(&values);
        std::fs::write(d.join("net.onnx"), model).unwrap();
        std::fs::write(d.join("net.onnx.data"), data).unwrap();
    };
    write_model(1.0);
    std::fs::write(
        d.join("r.prune"),
        "recipe \"onnx\"\ndevice cpu\nmodel \"net.onnx\"\ndata image_folder \"data\" { batch 4 }\n\
         prune channels by l2 {\n    schedule oneshot\n    ignore \"fc\"\n    group \"*\" ratio 0.5\n}\n\
         finetune { epochs 1 optimizer sgd lr 0.01 }\nexport \"out\"\n",
    )
    .unwrap();
    let run = |what: &str| {
        let out = exec(d, "cache", &[], &[]);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{what}: {err}");
        err
    };
    let first = run("first run");
    assert!(first.contains("from cache: nothing saved"), "{first}");
    let sd = weights::read_safetensors(&std::fs::read(d.join("out/weights.safetensors")).unwrap())
        .unwrap();
    assert_eq!(sd["conv.weight"].shape, [2, 3, 3, 3]);
    assert_eq!(sd["fc.weight"].shape, [5, 2]);
    // The pruned model goes back out as ONNX, with the pruned shapes.
    let (back, back_sd) =
        prunex::models::onnx::import_weights(&d.join("out/model.onnx"), &prunex::syntax::FsLoader)
            .unwrap();
    assert_eq!(back.graph.name, "model");
    assert_eq!(back_sd["conv.weight"], sd["conv.weight"]);
    let again = run("second run");
    assert!(!again.contains("from cache: nothing saved"), "{again}");
    // Other values in the data file only: a different model.
    write_model(2.0);
    let changed = run("run on changed weights");
    assert!(changed.contains("from cache: nothing saved"), "{changed}");
}

/// Trains the model description `fixture` (in tests/fixtures/ok/models,
/// edited by `edit`) for an epoch on the small Fashion-MNIST, removes half
/// of every channel group but the classifier's, fine-tunes for an epoch,
/// and checks that the exported model.yaml and weights (and model.onnx,
/// in onnxruntime) give prunex's accuracy in PyTorch. Returns the weights.
fn run_description(fixture: &str, edit: impl Fn(String) -> String) -> weights::StateDict {
    let dir = tempfile::tempdir().unwrap();
    let yaml = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/ok/models")
            .join(fixture),
    )
    .unwrap();
    std::fs::write(dir.path().join("model.yaml"), edit(yaml)).unwrap();
    let report = run(
        dir.path(),
        r#"recipe "description"
seed 1
device cpu
model "model.yaml"
data fashion_mnist "DATA" { batch 32 eval_batch 100 normalize mean 0.2860 std 0.3530 }
pretrain { epochs 1 optimizer adam lr 0.003 }
prune channels by l2 {
    schedule oneshot
    ratio 0.5
    ignore "fc"
}
finetune { epochs 1 optimizer adam lr 0.001 }
export "out"
"#,
    );
    let final_acc = report["final_accuracy"].as_f64().unwrap();
    assert!((pytorch_accuracy(dir.path(), 0) - final_acc).abs() < 1e-6);
    weights::read(&dir.path().join("out/weights.safetensors"))
        .unwrap()
        .0
}

/// A model with a grouped convolution: it keeps its 4 groups, with fewer
/// channels each.
#[test]
fn a_grouped_convolution_is_pruned_group_by_group() {
    let sd = run_description("grouped-cnn.yaml", |y| {
        y.replace("input: [3, 32, 32]", "input: [1, 28, 28]")
            .replace("in_channels: 3,", "in_channels: 1,")
    });
    // 8 positions of 4 groups; int(8 · 0.5) = 4 kept on each side.
    assert_eq!(sd["grouped.weight"].shape, vec![16, 4, 3, 3]);
    assert_eq!(sd["reduce.weight"].shape, vec![16, 16, 1, 1]);
}

/// A ConvNeXt block (LayerNorm over the channels, linear layers on the
/// channels at every position, a layer scale) loses half of each group.
#[test]
fn a_convnext_block_is_pruned_through_its_layer_norms_and_layer_scale() {
    let sd = run_description("convnext-block.yaml", |y| y);
    assert_eq!(sd["stem.1.weight"].shape, vec![8]);
    assert_eq!(sd["block.layer_scale"].shape, vec![8, 1, 1]);
    assert_eq!(sd["block.pwconv1.weight"].shape, vec![32, 8]);
    assert_eq!(sd["block.pwconv2.weight"].shape, vec![8, 32]);
    assert_eq!(sd["fc.weight"].shape, vec![10, 8]);
}

/// A ShuffleNetV2 unit: the channels a slice splits and a shuffle permutes
/// stay whole, the branch's inner channels lose half.
#[test]
fn a_shuffle_block_prunes_its_branch_and_keeps_the_shuffled_channels() {
    let sd = run_description("shuffle-block.yaml", |y| y);
    assert_eq!(sd["stem.weight"].shape, vec![16, 1, 3, 3]);
    assert_eq!(sd["branch.0.weight"].shape, vec![8, 8, 1, 1]);
    assert_eq!(sd["branch.3.weight"].shape, vec![8, 1, 3, 3]);
    assert_eq!(sd["branch.5.weight"].shape, vec![8, 8, 1, 1]);
}

/// `vit_mini` trained, half its heads and then half its widths pruned
/// (two stages), fine-tuned: its `model.yaml` and weights give prunex's
/// accuracy in PyTorch, and its `model.onnx` the same outputs in
/// onnxruntime (`yaml_model.py` checks both).
#[test]
fn a_vit_is_pruned_by_heads_and_widths_and_pytorch_and_onnxruntime_agree() {
    let dir = tempfile::tempdir().unwrap();
    let report = run(
        dir.path(),
        r#"recipe "vit-small"
seed 1
device cpu
model vit_mini { input [1, 28, 28] classes 10 }
data fashion_mnist "DATA" { batch 32 eval_batch 100 normalize mean 0.2860 std 0.3530 }
pretrain { epochs 1 optimizer adamw lr 0.002 }
prune heads by l2 {
    schedule oneshot
    ratio 0.5
}
prune channels by l2 {
    schedule oneshot
    ratio 0.5
    ignore "heads.head"
}
finetune { epochs 1 optimizer adamw lr 0.001 }
export "out"
"#,
    );
    let (sd, _) = weights::read(&dir.path().join("out/weights.safetensors")).unwrap();
    let attn = "encoder.layers.encoder_layer_0.self_attention";
    assert_eq!(
        sd[&format!("{attn}.in_proj_weight")].shape,
        vec![3 * 32, 32]
    );
    assert_eq!(sd[&format!("{attn}.out_proj.weight")].shape, vec![32, 32]);
    assert_eq!(sd["class_token"].shape, vec![1, 1, 32]);
    assert_eq!(sd["encoder.pos_embedding"].shape, vec![1, 50, 32]);
    assert_eq!(
        sd["encoder.layers.encoder_layer_0.mlp.0.weight"].shape,
        vec![64, 32]
    );
    let final_acc = report["final_accuracy"].as_f64().unwrap();
    assert!((pytorch_accuracy(dir.path(), 0) - final_acc).abs() < 1e-6);
}
