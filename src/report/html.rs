//! `report.html`: a run's report as one self-contained page (inline CSS
//! and SVG, no script, nothing fetched) — the summary, loss and accuracy
//! per epoch across pretraining and fine-tuning, the sparsity the schedule
//! planned against what was reached, channels and sparsity per layer, and
//! latency before and after. The charts come from [`super::chart`].

use super::chart::{self, BarChart, LineChart, Series};
use super::RunReport;

/// Escapes text for HTML.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// What the page shows besides the report itself.
#[derive(Clone, Debug, Default)]
pub struct Extras {
    /// Planned sparsity after each fine-tuning epoch (0: after the pruning
    /// before fine-tuning), from [`super::schedule::planned_sparsity`].
    pub planned_sparsity: Vec<(u64, f64)>,
    /// Reload the page every few seconds (watch mode rewrites it after
    /// each re-run).
    pub refresh: Option<u32>,
}

/// One chart of the page: its id, title, and the SVG or why it is absent.
#[derive(Clone, Debug)]
pub struct Figure {
    /// A stable id (`loss`, `accuracy`, …).
    pub id: &'static str,
    /// The heading.
    pub title: String,
    /// A line under the heading.
    pub caption: String,
    /// The chart, or why there is none.
    pub svg: Result<String, String>,
}

fn pct(x: f64) -> String {
    format!("{:.2} %", x * 100.0)
}

fn millions(n: u64) -> String {
    if n >= 1_000_000 {
        format!("{:.2} M", n as f64 / 1e6)
    } else {
        format!("{n}")
    }
}

/// Epochs of pretraining, for placing fine-tuning after them on one axis.
fn pretrain_epochs(r: &RunReport) -> u64 {
    r.epochs
        .iter()
        .filter(|e| e.stage == "pretrain")
        .map(|e| e.epoch)
        .max()
        .unwrap_or(0)
}

fn by_stage(
    r: &RunReport,
    f: impl Fn(&super::EpochReport) -> f64,
) -> Vec<(String, Vec<(f64, f64)>)> {
    let p = pretrain_epochs(r) as f64;
    let mut out: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
    for e in &r.epochs {
        let x = if e.stage == "finetune" {
            p + e.epoch as f64
        } else {
            e.epoch as f64
        };
        let name = if e.stage == "finetune" {
            "fine-tuning"
        } else {
            "pretraining"
        };
        match out.iter_mut().find(|(n, _)| n == name) {
            Some((_, v)) => v.push((x, f(e))),
            None => out.push((name.to_owned(), vec![(x, f(e))])),
        }
    }
    out
}

fn draw(c: Result<String, chart::ChartError>) -> Result<String, String> {
    c.map_err(|e| e.to_string())
}

/// The figures of a run's page, in order.
pub fn figures(r: &RunReport, extras: &Extras) -> Vec<Figure> {
    let p = pretrain_epochs(r) as f64;
    let pruned_mark = || {
        if r.plan.stages.is_empty() {
            Vec::new()
        } else {
            vec![(p, "pruned".to_owned())]
        }
    };
    let mut figs = Vec::new();

    // Loss.
    let loss: Vec<Series> = by_stage(r, |e| e.loss)
        .into_iter()
        .map(|(n, pts)| Series::new(format!("training loss, {n}"), pts))
        .collect();
    figs.push(Figure {
        id: "loss",
        title: "Loss per epoch".into(),
        caption: "mean training loss; fine-tuning continues the axis after pretraining".into(),
        svg: if loss.is_empty() {
            Err("no training epochs ran (the weights were given and nothing was fine-tuned)".into())
        } else {
            draw(chart::line_svg(&LineChart {
                x_label: "epoch".into(),
                y_label: "loss".into(),
                series: loss,
                marks: pruned_mark(),
                y_range: None,
                x_whole: true,
            }))
        },
    });

    // Accuracy.
    let mut acc: Vec<Series> = Vec::new();
    for (n, pts) in by_stage(r, |e| e.test_accuracy * 100.0) {
        acc.push(Series::new(format!("test, {n}"), pts));
    }
    for (n, pts) in by_stage(r, |e| e.train_accuracy * 100.0) {
        acc.push(Series::dashed(format!("train, {n}"), pts));
    }
    let mut points = vec![(p, r.dense_accuracy * 100.0)];
    let mut names = vec!["dense"];
    if let Some(a) = r.pruned_accuracy {
        points.push((p, a * 100.0));
        names.push("after pruning");
    }
    acc.push(Series::new(format!("{} (test)", names.join(", ")), points));
    figs.push(Figure {
        id: "accuracy",
        title: "Accuracy per epoch".into(),
        caption: format!(
            "dense {}, after pruning {}, final {}",
            pct(r.dense_accuracy),
            r.pruned_accuracy.map_or("—".into(), pct),
            pct(r.final_accuracy)
        ),
        svg: draw(chart::line_svg(&LineChart {
            x_label: "epoch".into(),
            y_label: "accuracy (%)".into(),
            series: acc,
            marks: pruned_mark(),
            y_range: None,
            x_whole: true,
        })),
    });

    // Sparsity planned and reached.
    let reached: Vec<(f64, f64)> = r
        .epochs
        .iter()
        .filter(|e| e.stage == "finetune")
        .map(|e| (e.epoch as f64, e.sparsity * 100.0))
        .collect();
    let planned: Vec<(f64, f64)> = extras
        .planned_sparsity
        .iter()
        .map(|&(x, s)| (x as f64, s * 100.0))
        .collect();
    let mut sp = vec![Series::dashed("planned", planned)];
    if reached.is_empty() {
        sp.push(Series::new("reached", vec![(0.0, r.sparsity * 100.0)]));
    } else {
        sp.push(Series::new("reached", reached));
    }
    figs.push(Figure {
        id: "sparsity",
        title: "Sparsity: planned and reached".into(),
        caption: "weights of convolutions, linear layers and attention projections that are zero or removed, of the dense model's, after each fine-tuning epoch".into(),
        svg: if r.plan.stages.is_empty() {
            Err("the recipe prunes nothing".into())
        } else {
            draw(chart::line_svg(&LineChart {
                x_label: "fine-tuning epoch".into(),
                y_label: "sparsity (%)".into(),
                series: sp,
                marks: Vec::new(),
                y_range: Some((0.0, 100.0)),
                x_whole: true,
            }))
        },
    });

    // Channels per layer (when shapes changed).
    let names: Vec<String> = r.layers.iter().map(|l| l.layer.clone()).collect();
    if r.layers
        .iter()
        .any(|l| l.shape_after.as_ref() != Some(&l.shape_before))
    {
        let before: Vec<f64> = r.layers.iter().map(|l| l.shape_before[0] as f64).collect();
        let after: Vec<f64> = r
            .layers
            .iter()
            .map(|l| l.shape_after.as_ref().map_or(0.0, |s| s[0] as f64))
            .collect();
        figs.push(Figure {
            id: "channels",
            title: "Output channels per layer".into(),
            caption: "rows of each weight matrix (output channels or features) before and after; 0: the layer was removed with its block".into(),
            svg: draw(chart::bars_svg(&BarChart {
                x_label: "output channels".into(),
                categories: names.clone(),
                series: vec![("before".into(), before), ("after".into(), after)],
            })),
        });
    }

    // Sparsity per layer.
    figs.push(Figure {
        id: "layer-sparsity",
        title: "Sparsity per layer".into(),
        caption: "weights zero or removed in each layer, of its dense count".into(),
        svg: draw(chart::bars_svg(&BarChart {
            x_label: "sparsity (%)".into(),
            categories: names,
            series: vec![(
                "after".into(),
                r.layers.iter().map(|l| l.sparsity * 100.0).collect(),
            )],
        })),
    });

    // Latency.
    let t = &r.timings;
    figs.push(Figure {
        id: "latency",
        title: "Latency before and after".into(),
        caption: match (&t.dense, &t.pruned) {
            (Some(d), Some(p)) => format!(
                "median inference latency, measured in alternation at the end of the run: batch 1 {:.2}×, batch {} {:.2}× faster",
                d.batch1_ms / p.batch1_ms.max(1e-9),
                super::LATENCY_BATCH,
                d.batch64_ms / p.batch64_ms.max(1e-9)
            ),
            _ => "median inference latency".into(),
        },
        svg: match (&t.dense, &t.pruned) {
            (Some(d), Some(p)) => draw(chart::bars_svg(&BarChart {
                x_label: "milliseconds".into(),
                categories: vec!["batch 1".into(), format!("batch {}", super::LATENCY_BATCH)],
                series: vec![
                    ("dense".into(), vec![d.batch1_ms, d.batch64_ms]),
                    ("pruned".into(), vec![p.batch1_ms, p.batch64_ms]),
                ],
            })),
            (None, Some(_)) => Err(
                "the dense model's latency was not measured (its cache entry was evicted)".into(),
            ),
            _ => Err("latency was not measured".into()),
        },
    });
    figs
}

const STYLE: &str = "body{font-family:sans-serif;max-width:800px;margin:2em auto;color:#222}\
h1{font-size:1.5em}h2{font-size:1.15em;margin-top:2em}\
table{border-collapse:collapse}td,th{padding:.2em .8em;border-bottom:1px solid #ddd;text-align:left}\
td.n{text-align:right}figure{margin:0}p.caption{color:#555;font-size:.9em}\
p.empty{color:#a33;font-style:italic}";

/// The page.
pub fn page(r: &RunReport, extras: &Extras) -> String {
    let mut h = String::new();
    h.push_str("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
    if let Some(s) = extras.refresh {
        h.push_str(&format!("<meta http-equiv=\"refresh\" content=\"{s}\">\n"));
    }
    h.push_str(&format!(
        "<title>prunex: {}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n",
        escape(&r.recipe)
    ));
    h.push_str(&format!(
        "<h1>{} <small>— prunex report</small></h1>\n",
        escape(&r.recipe)
    ));
    let speed = match (&r.timings.dense, &r.timings.pruned) {
        (Some(d), Some(p)) => format!(
            "{:.2} → {:.2} ms ({:.2}×)",
            d.batch64_ms,
            p.batch64_ms,
            d.batch64_ms / p.batch64_ms.max(1e-9)
        ),
        (None, Some(p)) => format!("{:.2} ms", p.batch64_ms),
        _ => "—".into(),
    };
    let rows: [(&str, String); 8] = [
        ("model", escape(&r.plan.model)),
        ("device", escape(&r.device)),
        ("test accuracy, dense", pct(r.dense_accuracy)),
        ("after pruning", r.pruned_accuracy.map_or("—".into(), pct)),
        ("after fine-tuning", pct(r.final_accuracy)),
        (
            "parameters",
            format!("{} → {}", millions(r.params.0), millions(r.params.1)),
        ),
        (
            "MACs per sample",
            format!(
                "{} → {} ({:.2}× fewer)",
                millions(r.macs.0),
                millions(r.macs.1),
                r.macs.0 as f64 / r.macs.1.max(1) as f64
            ),
        ),
        (
            "latency, batch 64",
            format!("{speed}; sparsity {}", pct(r.sparsity)),
        ),
    ];
    h.push_str("<table>\n");
    for (k, v) in rows {
        h.push_str(&format!("<tr><th>{k}</th><td>{v}</td></tr>\n"));
    }
    h.push_str("</table>\n");
    for f in figures(r, extras) {
        h.push_str(&format!(
            "<section id=\"{}\">\n<h2>{}</h2>\n<p class=\"caption\">{}</p>\n<figure>\n",
            f.id,
            escape(&f.title),
            escape(&f.caption)
        ));
        match f.svg {
            Ok(svg) => h.push_str(&svg),
            Err(why) => h.push_str(&format!("<p class=\"empty\">{}</p>", escape(&why))),
        }
        h.push_str("\n</figure>\n</section>\n");
    }
    h.push_str(&format!(
        "<p class=\"caption\">prunex {}, libtorch {}; recipe {} (BLAKE3 of the recipe and its includes)</p>\n</body>\n</html>\n",
        escape(&r.lock.prunex),
        escape(&r.lock.libtorch),
        &r.lock.recipe[..12.min(r.lock.recipe.len())]
    ));
    h
}
