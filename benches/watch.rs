//! Save-to-diagnostic latency of `prunex watch` on a ResNet-50 recipe: the
//! real binary watches a real file; each round saves a changed recipe and
//! times until the check's verdict line arrives. Prints the median and
//! spread over 40 saves. Run: `cargo bench --bench watch`.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc::channel;
use std::time::{Duration, Instant};

mod recipes;

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.prune");
    std::fs::write(&path, recipes::resnet50(224)).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_prunex"))
        .current_dir(dir.path())
        .env("NO_COLOR", "1")
        .args(["watch", "--check-only", "r.prune"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = channel();
    let err = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines() {
            let Ok(line) = line else { break };
            if tx.send((Instant::now(), line)).is_err() {
                break;
            }
        }
    });
    let verdict = |timeout: Duration| -> Instant {
        loop {
            let (at, line) = rx.recv_timeout(timeout).expect("prunex watch answered");
            if line.contains("r.prune: ok") {
                return at;
            }
            assert!(
                !line.contains("error"),
                "the benchmark recipe checks: {line}"
            );
        }
    };
    verdict(Duration::from_secs(10));
    let mut ms = Vec::new();
    for i in 1..=40 {
        std::thread::sleep(Duration::from_millis(250));
        let text = recipes::resnet50(224).replace("lr 0.01", &format!("lr 0.01{i:02}"));
        let t0 = Instant::now();
        std::fs::write(&path, text).unwrap();
        ms.push((verdict(Duration::from_secs(5)) - t0).as_secs_f64() * 1e3);
    }
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
    let _ = child.wait();
    ms.sort_by(f64::total_cmp);
    let q = |p: f64| ms[((ms.len() - 1) as f64 * p).round() as usize];
    println!(
        "prunex watch, resnet50 recipe at 224x224, save to diagnostic over {} saves: median {:.1} ms (min {:.1}, p90 {:.1}, max {:.1}); includes the {} ms debounce",
        ms.len(),
        q(0.5),
        q(0.0),
        q(0.9),
        q(1.0),
        50
    );
}
