//! `prunex watch` end to end: the real binaries, real files in a temp
//! folder, a real recipe on the committed Fashion-MNIST slice.

#![cfg(feature = "torch")]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const DATA: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/data/fashion-mnist-small"
);

fn recipe(lr: &str) -> String {
    format!(
        r#"recipe "watched"
seed 3
device cpu
model lenet5 {{ input [1, 28, 28] classes 10 }}
data fashion_mnist "{DATA}" {{ batch 32 eval_batch 100 normalize mean 0.2860 std 0.3530 }}
pretrain {{ epochs 3 optimizer sgd lr 0.05 momentum 0.9 }}
prune weights by l1 {{
    schedule oneshot
    layer "conv*" sparsity 0.5
}}
finetune {{ epochs 2 optimizer sgd lr {lr} momentum 0.5 }}
export "out"
"#
    )
}

struct Watch {
    child: Child,
    log: std::path::PathBuf,
}

impl Watch {
    fn text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until `needle` occurs `n` times in the output; returns it.
    fn wait_for(&mut self, needle: &str, n: usize) -> String {
        let start = Instant::now();
        loop {
            let t = self.text();
            if t.matches(needle).count() >= n {
                return t;
            }
            assert!(
                self.child.try_wait().unwrap().is_none(),
                "prunex watch exited:\n{t}"
            );
            assert!(
                start.elapsed() < Duration::from_secs(120),
                "no {n}× `{needle}` after 120 s:\n{t}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

fn start(dir: &Path) -> Watch {
    let log = dir.join("watch.log");
    let out = std::fs::File::create(&log).unwrap();
    let child = Command::new(assert_cmd::cargo::cargo_bin("prunex"))
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .env("PRUNEX_CACHE", dir.join("cache"))
        .args(["watch", "r.prune"])
        .stdout(Stdio::from(out.try_clone().unwrap()))
        .stderr(Stdio::from(out))
        .spawn()
        .unwrap();
    Watch { child, log }
}

/// Saves by writing a temporary file and renaming it, as many editors do.
fn save_by_rename(path: &Path, text: &str) {
    let tmp = path.with_extension("swp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[test]
fn watch_reruns_only_what_changed_survives_errors_and_debounces() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let r = d.join("r.prune");
    std::fs::write(&r, recipe("0.01")).unwrap();
    let mut w = start(d);
    let first = w.wait_for("run finished", 1);
    assert!(first.contains("running: pretrain epochs 1–3"), "{first}");

    // A fine-tuning setting: only fine-tuning re-runs.
    std::fs::write(&r, recipe("0.02")).unwrap();
    let t = w.wait_for("run finished", 2);
    let edit = &t[first.len()..];
    assert!(
        edit.contains("changed: finetune · lr: 0.01 → 0.02"),
        "{edit}"
    );
    assert!(
        edit.contains("from cache: pretrain epochs 1–3, dense evaluation, pruning\n"),
        "{edit}"
    );
    assert!(
        edit.contains("running: finetune epochs 1–2, final measurement"),
        "{edit}"
    );
    assert!(!edit.contains("pretrain epoch 1/3"), "{edit}");
    let good = std::fs::read(d.join("out/weights.safetensors")).unwrap();
    // The report page the re-run wrote reloads itself in a browser.
    let page = std::fs::read_to_string(d.join("out/report.html")).unwrap();
    assert!(page.contains("http-equiv=\"refresh\""), "{page}");

    // An invalid edit: diagnostics, the process keeps watching, results stay.
    let before = t.len();
    std::fs::write(&r, recipe("0.02").replace("seed 3", "seed 3 bogus")).unwrap();
    let t = w.wait_for("prunex::syntax::unknown_item", 1);
    let t = if t.contains("1 error") {
        t
    } else {
        w.wait_for("1 error", 1)
    };
    assert!(t[before..].contains("the last good results stay"), "{t}");
    std::thread::sleep(Duration::from_millis(300));
    assert!(w.child.try_wait().unwrap().is_none(), "still watching");
    assert_eq!(
        std::fs::read(d.join("out/weights.safetensors")).unwrap(),
        good
    );

    // Fixed (saved by rename): re-runs.
    save_by_rename(&r, &recipe("0.03"));
    let t = w.wait_for("run finished", 3);
    assert!(t.contains("changed: finetune · lr: 0.02 → 0.03"), "{t}");

    // Twenty saves in a burst: one check, one run.
    let before = t.len();
    for i in 1..=20 {
        std::fs::write(&r, recipe(&format!("0.04{i:02}"))).unwrap();
    }
    w.wait_for("run finished", 4);
    std::thread::sleep(Duration::from_millis(1500));
    let burst = w.text()[before..].to_owned();
    assert_eq!(burst.matches("running r.prune").count(), 1, "{burst}");
    assert!(burst.contains("lr: 0.03 → 0.042\n"), "{burst}");

    // A long run is cancelled at a batch boundary by the next valid save.
    let long = |lr: &str| recipe(lr).replace("finetune { epochs 2", "finetune { epochs 4000");
    std::fs::write(&r, long("0.05")).unwrap();
    w.wait_for("finetune epoch 1/4000", 1);
    std::fs::write(&r, long("0.06")).unwrap();
    w.wait_for("cancelling the run in progress", 1);
    let t = w.wait_for("prunex::run::interrupted", 1);
    assert!(t.contains("lr: 0.05 → 0.06"), "{t}");
    w.wait_for("finetune epoch 1/4000", 2);

    // Ctrl-C stops the run in progress and exits cleanly.
    unsafe {
        libc::kill(w.child.id() as i32, libc::SIGINT);
    }
    let status = w.child.wait().unwrap();
    let t = w.text();
    assert!(status.success(), "{t}");
    assert!(t.ends_with("stopped watching\n"), "{t}");
    assert_eq!(t.matches("prunex::run::interrupted").count(), 2, "{t}");
}
