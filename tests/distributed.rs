//! Data-parallel runs on c10d's Gloo, 2 processes on localhost, with the
//! real binaries: `prunex run --nproc 2` with batch B per rank ends with
//! the weights and metrics of one process with batch 2B — through dense
//! training, Taylor channel pruning with surgery, Wanda masks and masked
//! fine-tuning, and with `sync_bn` for a model with BatchNorm (without it,
//! per-rank BatchNorm differs: the control). A killed rank, Ctrl-C, a port
//! in use, a missing worker and torchrun are exercised too.

#![cfg(feature = "torch")]

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use prunex::models::weights;

const DATA: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/data/fashion-mnist-small"
);

/// LeNet-5 (no BatchNorm): dense training, Taylor channel pruning (its
/// gradients from calibration batches, surgery), Wanda weight masks (its
/// activation norms), masked fine-tuning.
const PLAIN: &str = r#"recipe "distributed"
seed 3
device cpu
model lenet5 { input [1, 28, 28] classes 10 }
data fashion_mnist "DATA" { batch BATCH eval_batch 100 normalize mean 0.2860 std 0.3530 }
pretrain { epochs 2 optimizer sgd lr 0.05 momentum 0.9 }
prune channels by taylor { schedule oneshot ratio 0.3 batches 2 }
prune weights by wanda { schedule oneshot sparsity 0.5 batches 2 ignore "fc3" }
finetune { epochs 1 optimizer sgd lr 0.01 momentum 0.5 }
export "out"
"#;

/// A model with BatchNorm, channel-pruned and fine-tuned with masks. 257
/// images: every epoch ends with a batch of one, so one rank's slice is
/// empty (it still takes part in every collective).
const WITH_BN: &str = r#"recipe "distributed-bn"
seed 1
device cpu
SYNC
model simplecnn { input [1, 28, 28] classes 10 }
data fashion_mnist "DATA" { batch BATCH eval_batch 100 normalize mean 0.2860 std 0.3530 limit 257 }
pretrain { epochs 1 optimizer sgd lr 0.02 }
prune channels by l2 { schedule oneshot ratio 0.5 ignore "fc" }
prune weights by l1 { schedule oneshot sparsity 0.5 ignore "fc" }
finetune { epochs 1 optimizer sgd lr 0.01 }
export "out"
"#;

fn prunex() -> Command {
    let mut c = Command::new(assert_cmd::cargo::cargo_bin("prunex"));
    c.env("NO_COLOR", "1")
        .env("PRUNEX_DIST_TIMEOUT", "20")
        .env_remove("MASTER_PORT");
    c
}

/// Writes the recipe into DIR and runs `prunex run` with ARGS.
fn run_in(dir: &Path, recipe: &str, args: &[&str]) -> Output {
    std::fs::write(dir.join("r.prune"), recipe.replace("DATA", DATA)).unwrap();
    prunex()
        .current_dir(dir)
        .env("PRUNEX_CACHE", dir.join("cache"))
        .args(["run", "r.prune"])
        .args(args)
        .output()
        .unwrap()
}

fn ok(out: &Output) -> String {
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "the run failed:\n{err}");
    err
}

fn report(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("out/report.json")).unwrap()).unwrap()
}

/// The largest difference between two exported weight files (same keys
/// and shapes asserted).
fn weight_diff(a: &Path, b: &Path) -> f64 {
    let (x, _) = weights::read(&a.join("out/weights.safetensors")).unwrap();
    let (y, _) = weights::read(&b.join("out/weights.safetensors")).unwrap();
    assert_eq!(
        x.keys().collect::<Vec<_>>(),
        y.keys().collect::<Vec<_>>(),
        "the same tensors"
    );
    let mut worst = 0f64;
    for (k, t) in &x {
        assert_eq!(t.shape, y[k].shape, "{k}");
        if let (Some(p), Some(q)) = (t.as_f32(), y[k].as_f32()) {
            for (u, v) in p.iter().zip(q) {
                worst = worst.max((u - v).abs() as f64);
            }
        }
    }
    worst
}

/// One process with batch 2B and two with batch B each, in fresh folders.
fn one_and_two(recipe: &str, batch: usize) -> (tempfile::TempDir, tempfile::TempDir) {
    let (one, two) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let r1 = recipe.replace("BATCH", &(2 * batch).to_string());
    let r2 = recipe.replace("BATCH", &batch.to_string());
    ok(&run_in(one.path(), &r1, &["--threads", "1"]));
    let err = ok(&run_in(two.path(), &r2, &["--nproc", "2"]));
    assert!(
        err.contains(&format!(
            "distributed: 2 ranks (Prunex), batch {batch} per rank, {} in all",
            2 * batch
        )),
        "{err}"
    );
    (one, two)
}

fn same_metrics(a: &serde_json::Value, b: &serde_json::Value) {
    for k in [
        "dense_accuracy",
        "pruned_accuracy",
        "final_accuracy",
        "sparsity",
    ] {
        assert!(
            (a[k].as_f64().unwrap() - b[k].as_f64().unwrap()).abs() < 1e-9,
            "{k}: {} vs {}",
            a[k],
            b[k]
        );
    }
    assert_eq!(a["params"], b["params"]);
    assert_eq!(a["macs"], b["macs"]);
    let (ea, eb) = (
        a["epochs"].as_array().unwrap(),
        b["epochs"].as_array().unwrap(),
    );
    assert_eq!(ea.len(), eb.len());
    for (x, y) in ea.iter().zip(eb) {
        for k in ["loss", "train_accuracy", "test_accuracy"] {
            assert!(
                (x[k].as_f64().unwrap() - y[k].as_f64().unwrap()).abs() < 1e-5,
                "epoch {k}: {x} vs {y}"
            );
        }
    }
}

#[test]
fn two_ranks_of_batch_b_equal_one_process_of_batch_2b() {
    let (one, two) = one_and_two(PLAIN, 32);
    let d = weight_diff(one.path(), two.path());
    assert!(d < 1e-5, "weights differ by {d}");
    let (a, b) = (report(one.path()), report(two.path()));
    same_metrics(&a, &b);
    // The pruning happened: fewer parameters, masks held.
    let p = a["params"].as_array().unwrap();
    assert!(p[1].as_u64() < p[0].as_u64(), "{p:?}");
    assert!(a["sparsity"].as_f64().unwrap() > 0.5);
    // Only rank 0 wrote: one export, one cache.
    assert!(!two.path().join("out/rank1").exists());
}

#[test]
fn sync_bn_makes_two_ranks_equal_one_process_and_per_rank_batchnorm_does_not() {
    let synced = WITH_BN.replace("SYNC", "sync_bn true");
    let (one, two) = one_and_two(&synced, 32);
    let d = weight_diff(one.path(), two.path());
    assert!(d < 1e-5, "weights differ by {d}");
    same_metrics(&report(one.path()), &report(two.path()));
    // The control: BatchNorm per rank (the default) normalises each half
    // batch by its own statistics, and the weights part.
    let per_rank = WITH_BN.replace("SYNC", "");
    let (one, two) = one_and_two(&per_rank, 32);
    let d = weight_diff(one.path(), two.path());
    assert!(d > 1e-3, "per-rank BatchNorm should differ, by {d}");
}

/// The worker processes of a launcher: (rank, pid), from /proc.
fn workers_of(launcher: u32) -> Vec<(usize, i32)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
        // `pid (comm) state ppid …`
        let ppid = stat
            .rsplit(')')
            .next()
            .and_then(|s| s.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if ppid != Some(launcher) {
            continue;
        }
        let env = std::fs::read(e.path().join("environ")).unwrap_or_default();
        for var in env.split(|b| *b == 0) {
            if let Some(r) = var.strip_prefix(b"RANK=") {
                if let Ok(r) = String::from_utf8_lossy(r).parse() {
                    out.push((r, pid));
                }
            }
        }
    }
    out.sort();
    out
}

/// Starts a long 2-rank run in DIR and waits for its first epoch; returns
/// the launcher and what it printed so far.
fn long_run(dir: &Path) -> (std::process::Child, std::process::ChildStderr, String) {
    let recipe = PLAIN
        .replace("DATA", DATA)
        .replace("BATCH", "16")
        .replace("pretrain { epochs 2", "pretrain { epochs 500");
    std::fs::write(dir.join("r.prune"), recipe).unwrap();
    let mut child = prunex()
        .current_dir(dir)
        .env("PRUNEX_CACHE", dir.join("cache"))
        .args(["run", "r.prune", "--nproc", "2"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = child.stderr.take().unwrap();
    let seen = common::read_until(&mut err, "pretrain epoch 1/500");
    (child, err, seen)
}

#[test]
fn a_killed_rank_ends_the_run_with_its_name_and_no_output() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (mut child, mut err, mut seen) = long_run(d);
    let ranks = workers_of(child.id());
    assert_eq!(ranks.iter().map(|r| r.0).collect::<Vec<_>>(), [0, 1]);
    let killed = Instant::now();
    // SAFETY: a pid this test's launcher started.
    unsafe {
        libc::kill(ranks[1].1, libc::SIGKILL);
    }
    err.read_to_string(&mut seen).unwrap();
    let code = child.wait().unwrap().code();
    let took = killed.elapsed();
    assert_eq!(code, Some(2), "{seen}");
    assert!(took < Duration::from_secs(10), "took {took:?}: {seen}");
    assert!(
        seen.contains("error[prunex::dist::worker_failed]: rank 1 was killed by signal 9"),
        "{seen}"
    );
    // Rank 0 says what it lost, and does not hang.
    assert!(seen.contains("prunex::dist::peer_lost"), "{seen}");
    assert!(!d.join("out").exists(), "no output after a failure");
    // What was saved is whole: every cache entry is complete (one writer,
    // rank 0, renaming finished folders into place).
    let entries: Vec<_> = std::fs::read_dir(d.join("cache"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_type().unwrap().is_dir())
        .collect();
    assert!(!entries.is_empty());
    for e in entries {
        let name = e.file_name().to_string_lossy().into_owned();
        assert!(!name.starts_with(".tmp"), "a half-written entry: {name}");
        assert!(e.path().join("meta.json").exists(), "{name}");
        assert!(e.path().join("model.safetensors").exists(), "{name}");
    }
}

#[test]
fn ctrl_c_stops_every_rank_at_the_same_batch_and_saves_once() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (mut child, mut err, mut seen) = long_run(d);
    // SAFETY: the launcher this test started; it passes SIGINT on.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
    err.read_to_string(&mut seen).unwrap();
    let code = child.wait().unwrap().code();
    assert_eq!(code, Some(130), "{seen}");
    assert!(seen.contains("prunex::run::interrupted"), "{seen}");
    assert!(!seen.contains("peer_lost"), "{seen}");
    assert!(!d.join("out").exists());
}

#[test]
fn an_interrupted_distributed_run_resumes_to_the_uninterrupted_result() {
    let recipe = PLAIN.replace("BATCH", "32");
    let whole = tempfile::tempdir().unwrap();
    ok(&run_in(whole.path(), &recipe, &["--nproc", "2"]));
    let cut = tempfile::tempdir().unwrap();
    std::fs::write(cut.path().join("r.prune"), recipe.replace("DATA", DATA)).unwrap();
    let stopped = prunex()
        .current_dir(cut.path())
        .env("PRUNEX_CACHE", cut.path().join("cache"))
        .env("PRUNEX_INTERRUPT_AT", "finetune:1:3")
        .args(["run", "r.prune", "--nproc", "2"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&stopped.stderr);
    assert_eq!(stopped.status.code(), Some(130), "{err}");
    let resumed = prunex()
        .current_dir(cut.path())
        .env("PRUNEX_CACHE", cut.path().join("cache"))
        .args(["run", "r.prune", "--nproc", "2", "--resume"])
        .output()
        .unwrap();
    let err = ok(&resumed);
    assert!(err.contains("resuming finetune epoch 1 at step 3"), "{err}");
    assert_eq!(weight_diff(whole.path(), cut.path()), 0.0);
    same_metrics(&report(whole.path()), &report(cut.path()));
}

#[test]
fn a_port_in_use_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let held = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let port = held.local_addr().unwrap().port();
    std::fs::write(
        dir.path().join("r.prune"),
        PLAIN.replace("DATA", DATA).replace("BATCH", "32"),
    )
    .unwrap();
    let out = prunex()
        .current_dir(dir.path())
        .env("PRUNEX_CACHE", dir.path().join("cache"))
        .env("MASTER_PORT", port.to_string())
        .args(["run", "r.prune", "--nproc", "2"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("prunex::dist::port_in_use"), "{err}");
    assert!(err.contains(&format!("port {port}")), "{err}");
}

/// A folder holding the plain recipe at batch 32, and a free port.
fn recipe_and_port() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("r.prune"),
        PLAIN.replace("DATA", DATA).replace("BATCH", "32"),
    )
    .unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    (dir, port.to_string())
}

/// One worker started by hand (as a launcher would), with a 3 s timeout.
fn worker(dir: &Path, port: &str, rank: &str, size: &str) -> Command {
    let mut c = Command::new(assert_cmd::cargo::cargo_bin("prunex-exec"));
    c.current_dir(dir)
        .env("NO_COLOR", "1")
        .env("PRUNEX_CACHE", dir.join("cache"))
        .env("PRUNEX_DIST_TIMEOUT", "3")
        .envs([
            ("RANK", rank),
            ("WORLD_SIZE", size),
            ("MASTER_ADDR", "127.0.0.1"),
            ("MASTER_PORT", port),
        ])
        .args(["run", "r.prune"]);
    c
}

/// A worker whose peers never come (a launcher that started fewer than
/// WORLD_SIZE, or gave them another size) stops after the timeout with
/// the rendezvous diagnostic.
#[test]
fn a_missing_worker_is_a_rendezvous_error_not_a_hang() {
    let (dir, port) = recipe_and_port();
    let started = Instant::now();
    let out = worker(dir.path(), &port, "0", "2").output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(started.elapsed() < Duration::from_secs(30));
    assert!(err.contains("prunex::dist::rendezvous"), "{err}");
    assert!(err.contains("1/2"), "says how many came: {err}");
}

/// torchrun starts the workers (its agent hosts the store); prunex needs
/// no flag and gives what `--nproc 2` gives.
#[test]
fn torchrun_starts_the_same_run() {
    let torchrun = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/torchrun");
    let recipe = PLAIN.replace("BATCH", "32");
    let ours = tempfile::tempdir().unwrap();
    ok(&run_in(ours.path(), &recipe, &["--nproc", "2"]));
    let theirs = tempfile::tempdir().unwrap();
    std::fs::write(theirs.path().join("r.prune"), recipe.replace("DATA", DATA)).unwrap();
    let out = Command::new(torchrun)
        .current_dir(theirs.path())
        .env("NO_COLOR", "1")
        .env("PRUNEX_CACHE", theirs.path().join("cache"))
        .args(["--standalone", "--nproc_per_node", "2", "--no-python"])
        .arg(assert_cmd::cargo::cargo_bin("prunex-exec"))
        .args(["run", "r.prune"])
        .output()
        .unwrap();
    let err = ok(&out);
    assert!(err.contains("distributed: 2 ranks (Torchrun)"), "{err}");
    assert_eq!(weight_diff(ours.path(), theirs.path()), 0.0);
}

/// Launcher variables that do not make a world are coded diagnostics with a
/// fix, before anything runs (rendered as users see them).
#[test]
fn bad_launcher_variables_are_diagnostics() {
    let (dir, _) = recipe_and_port();
    let mut shown = Vec::new();
    for vars in [
        &[("RANK", "one"), ("WORLD_SIZE", "2")][..],
        &[
            ("RANK", "2"),
            ("WORLD_SIZE", "2"),
            ("MASTER_ADDR", "a"),
            ("MASTER_PORT", "1"),
        ],
        &[("WORLD_SIZE", "2")],
        &[("RANK", "0"), ("WORLD_SIZE", "2"), ("MASTER_PORT", "29500")],
    ] {
        let out = Command::new(assert_cmd::cargo::cargo_bin("prunex-exec"))
            .current_dir(dir.path())
            .env("NO_COLOR", "1")
            .env("PRUNEX_CACHE", dir.path().join("cache"))
            .envs(vars.iter().copied())
            .args(["run", "r.prune"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{vars:?}");
        assert!(!dir.path().join("out").exists());
        shown.push(format!(
            "{vars:?}\n{}",
            String::from_utf8_lossy(&out.stderr).trim_end()
        ));
    }
    insta::assert_snapshot!(shown.join("\n\n"));
}

/// Two workers started with different WORLD_SIZEs: neither trains; rank
/// 0 says how many of the workers it expected came, within the timeout.
#[test]
fn a_mismatched_world_size_is_a_clear_error() {
    let (dir, port) = recipe_and_port();
    let spawn = |rank: &str, size: &str| {
        worker(dir.path(), &port, rank, size)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let started = Instant::now();
    let (a, b) = (spawn("0", "3"), spawn("1", "2"));
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    assert!(started.elapsed() < Duration::from_secs(40));
    let err = String::from_utf8_lossy(&a.stderr);
    assert!(!a.status.success() && !b.status.success());
    assert!(err.contains("prunex::dist::rendezvous"), "{err}");
    assert!(err.contains("2/3"), "{err}");
    assert!(!dir.path().join("out").exists());
}
