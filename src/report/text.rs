//! The run report as people read it: the per-layer table and the summary
//! lines printed at the end of every run, and the number formats the
//! command line shares.

use std::path::Path;

use super::{RunReport, LATENCY_BATCH};

/// 11,689,512.
pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

/// 1.82 G, 290.8 K, ...
pub fn si(n: u64) -> String {
    let x = n as f64;
    if x >= 1e9 {
        format!("{:.2} G", x / 1e9)
    } else if x >= 1e6 {
        format!("{:.2} M", x / 1e6)
    } else if x >= 1e3 {
        format!("{:.1} K", x / 1e3)
    } else {
        n.to_string()
    }
}

#[derive(tabled::Tabled)]
struct Row {
    layer: String,
    #[tabled(rename = "weight shape")]
    shape: String,
    #[tabled(rename = "zero or removed")]
    sparsity: String,
    params: String,
    #[tabled(rename = "MACs")]
    macs: String,
}

/// Prints the end-of-run summary: the per-layer table, accuracies, counts,
/// measured latency and where the outputs went (and why there is no
/// `model.onnx`, when there is none).
pub fn print_summary(r: &RunReport, dir: &Path, onnx_skipped: Option<&str>) {
    let dims = |s: &[usize]| {
        s.iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join("×")
    };
    let rows: Vec<Row> = r
        .layers
        .iter()
        .map(|l| Row {
            layer: l.layer.clone(),
            shape: match &l.shape_after {
                Some(a) if *a != l.shape_before => {
                    format!("{} → {}", dims(&l.shape_before), dims(a))
                }
                Some(a) => dims(a),
                None => format!("{} → removed", dims(&l.shape_before)),
            },
            sparsity: format!("{:.1} %", l.sparsity * 100.0),
            params: format!("{} → {}", thousands(l.params.0), thousands(l.params.1)),
            macs: format!("{} → {}", thousands(l.macs.0), thousands(l.macs.1)),
        })
        .collect();
    let mut t = tabled::Table::new(rows);
    t.with(tabled::settings::Style::sharp());
    println!("{t}");
    println!("{} · seed {} · {}", r.recipe, r.lock.seed, r.device);
    println!(
        "accuracy: dense {:.2} %{} → after fine-tuning {:.2} %",
        r.dense_accuracy * 100.0,
        r.pruned_accuracy
            .map(|a| format!(" → after pruning {:.2} %", a * 100.0))
            .unwrap_or_default(),
        r.final_accuracy * 100.0
    );
    println!(
        "params {} → {} · MACs {} → {} · conv/linear weights zero or removed: {:.2} %",
        si(r.params.0),
        si(r.params.1),
        si(r.macs.0),
        si(r.macs.1),
        r.sparsity * 100.0
    );
    if let (Some(a), Some(b)) = (r.timings.dense, r.timings.pruned) {
        println!(
            "measured latency ({} threads): batch 1 {:.3} → {:.3} ms ({:.2}×) · batch {LATENCY_BATCH} {:.2} → {:.2} ms ({:.2}×)",
            r.timings.threads,
            a.batch1_ms,
            b.batch1_ms,
            a.batch1_ms / b.batch1_ms.max(1e-9),
            a.batch64_ms,
            b.batch64_ms,
            a.batch64_ms / b.batch64_ms.max(1e-9),
        );
    } else if let Some(b) = r.timings.pruned {
        println!(
            "measured latency ({} threads): batch 1 {:.3} ms · batch {LATENCY_BATCH} {:.2} ms (the dense model left the stage cache, so it was not timed beside it)",
            r.timings.threads, b.batch1_ms, b.batch64_ms,
        );
    }
    if r.macs.0 == r.macs.1 && r.sparsity > 0.0 {
        println!("note: the pruning is unstructured: zeros do not speed up dense kernels. For a faster model, prune `channels` (or `2:4` on hardware with sparse tensor cores).");
    }
    match onnx_skipped {
        None => println!(
            "wrote {}/weights.safetensors, model.onnx{}, model.yaml, report.yaml, report.json, report.html, timings.yaml",
            dir.display(),
            // The export removes a data file it did not write.
            if dir.join("model.onnx.data").exists() {
                " (weights in model.onnx.data, which must stay beside it)"
            } else {
                ""
            }
        ),
        Some(why) => {
            println!(
                "wrote {}/weights.safetensors, model.yaml, report.yaml, report.json, report.html, timings.yaml",
                dir.display()
            );
            println!("note: no model.onnx: {why}");
        }
    }
}
