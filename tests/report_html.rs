//! `report.html`: the page built from a run's report (here a synthetic one
//! on a real plan, so the figures are stable) holds every chart, its SVG
//! structure is snapshotted, and headless Chromium renders it without a
//! script error: a screenshot shows drawn pixels where each chart is.

use std::path::Path;
use std::process::Command;

use prunex::check::{check_path, Mode};
use prunex::report::html::{figures, page, Extras};
use prunex::report::{EpochReport, Latency, LayerReport, Lock, RunReport, Timings};
use prunex::syntax::MemLoader;

const RECIPE: &str = r#"recipe "resnet18-report"
seed 0
model resnet18 { input [1, 28, 28] classes 10 }
data fashion_mnist "nowhere" { batch 32 }
pretrain { epochs 3 }
prune channels by l2 {
    schedule gradual 0.0 -> 0.4 every 1 epochs until epoch 2
    round_to 8
    ignore "fc"
}
finetune { epochs 4 }
export "out"
"#;

fn checked(recipe: &str) -> (prunex::plan::Plan, prunex::graph::Graph) {
    let loader = MemLoader::new().with("r.prune", recipe);
    let c = check_path(Path::new("r.prune"), &loader, &[], Mode::Single);
    assert!(!c.has_errors(), "{:?}", c.reports);
    (c.plan.unwrap(), c.graph.unwrap())
}

fn report() -> (RunReport, Extras) {
    let (plan, graph) = checked(RECIPE);
    let mut epochs = Vec::new();
    for e in 1..=3 {
        epochs.push(EpochReport {
            stage: "pretrain".into(),
            epoch: e,
            loss: 1.0 / e as f64,
            train_accuracy: 0.7 + 0.05 * e as f64,
            test_accuracy: 0.68 + 0.05 * e as f64,
            sparsity: 0.0,
        });
    }
    for e in 1..=4 {
        epochs.push(EpochReport {
            stage: "finetune".into(),
            epoch: e,
            loss: 0.5 / e as f64,
            train_accuracy: 0.8 + 0.02 * e as f64,
            test_accuracy: 0.79 + 0.02 * e as f64,
            sparsity: [0.2, 0.35, 0.35, 0.35][e as usize - 1],
        });
    }
    let layers = graph
        .weight_layers()
        .into_iter()
        .map(|(id, m)| {
            let s = m[0].1.clone();
            let mut after = s.clone();
            if graph.nodes[id].name != "fc" {
                after[0] = after[0] * 3 / 4;
            }
            LayerReport {
                layer: graph.nodes[id].name.clone(),
                shape_before: s,
                shape_after: Some(after),
                sparsity: 0.4,
                params: (1000, 600),
                macs: (1000, 600),
            }
        })
        .collect();
    let steps = (600u64).div_ceil(32);
    let extras = Extras {
        planned_sparsity: prunex::report::schedule::planned_sparsity(&plan, &graph, steps).unwrap(),
        refresh: None,
    };
    let r = RunReport {
        recipe: "resnet18-report <&>".into(),
        device: "cpu".into(),
        lock: Lock {
            recipe: "0123456789abcdef".into(),
            plan: String::new(),
            model: String::new(),
            weights: None,
            data: String::new(),
            seed: 0,
            prunex: "0.1.0".into(),
            libtorch: "2.13.0".into(),
        },
        dense_accuracy: 0.83,
        pruned_accuracy: Some(0.41),
        final_accuracy: 0.87,
        params: (plan.params_before, plan.stages[0].params_after),
        macs: (plan.macs_before, plan.stages[0].macs_after),
        sparsity: 0.35,
        epochs,
        layers,
        plan,
        timings: Timings {
            epochs: Vec::new(),
            dense: Some(Latency {
                batch1_ms: 3.0,
                batch64_ms: 12.0,
            }),
            pruned: Some(Latency {
                batch1_ms: 2.0,
                batch64_ms: 7.0,
            }),
            threads: 2,
        },
    };
    (r, extras)
}

#[path = "common/figures.rs"]
mod figures;
use figures::ALL_FIGURES as IDS;

#[test]
fn the_planned_sparsity_follows_the_schedule() {
    let (r, extras) = report();
    let p = &extras.planned_sparsity;
    // Fine-tuning epochs 0..=4; the gradual schedule steps at epochs 0, 1, 2.
    assert_eq!(p.len(), 5);
    assert_eq!(p[0].1, 0.0, "{p:?}");
    assert!(p[1].1 < p[2].1 && p[2].1 < p[3].1, "{p:?}");
    assert_eq!(p[3].1, p[4].1, "{p:?}");
    // Where the schedule ends: the weights the plan's last stage keeps.
    let dense: u64 = r
        .layers
        .iter()
        .map(|l| l.shape_before.iter().product::<usize>() as u64)
        .sum();
    assert!(p[4].1 > 0.3 && p[4].1 < 0.7, "{p:?} of {dense}");
}

#[test]
fn the_page_has_every_chart_and_their_structure_holds() {
    let (r, extras) = report();
    let figs = figures(&r, &extras);
    let ids: Vec<&str> = figs.iter().map(|f| f.id).collect();
    assert_eq!(ids, IDS);
    for f in &figs {
        let svg = f.svg.as_ref().unwrap_or_else(|e| panic!("{}: {e}", f.id));
        insta::assert_snapshot!(
            format!("svg_structure_{}", f.id),
            prunex::report::chart::structure(svg)
        );
    }
    let html = page(&r, &extras);
    assert!(html.contains("resnet18-report &lt;&amp;&gt;"), "escaped");
    assert!(!html.contains("<script"), "no scripts");
    // Nothing to fetch: no links, images, frames or stylesheets (the SVG
    // namespace is a name, not an address).
    for tag in [
        "<link", "<img", "<iframe", "src=", "href=", "@import", "url(",
    ] {
        assert!(!html.contains(tag), "{tag} in the page");
    }
    assert!(!html.contains("http-equiv=\"refresh\""));
    let watched = page(
        &r,
        &Extras {
            refresh: Some(5),
            ..extras
        },
    );
    assert!(watched.contains("<meta http-equiv=\"refresh\" content=\"5\">"));
}

fn chromium() -> Option<&'static str> {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .find(|p| Path::new(p).exists())
}

#[test]
fn chromium_renders_every_chart_without_errors() {
    let Some(browser) = chromium() else {
        // scripts/setup installs it; CI must not skip this.
        assert!(
            std::env::var_os("CI").is_none(),
            "Debian's chromium is missing: scripts/setup --reference installs it"
        );
        eprintln!("skipped: no chromium here (scripts/setup --reference installs it)");
        return;
    };
    let (r, extras) = report();
    let dir = tempfile::tempdir().unwrap();
    let page_path = dir.path().join("report.html");
    std::fs::write(&page_path, page(&r, &extras)).unwrap();
    let url = format!("file://{}", page_path.display());
    let common = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        "--no-first-run",
        "--enable-logging=stderr",
        "--v=0",
    ];
    let profile = format!("--user-data-dir={}", dir.path().join("profile").display());
    // The DOM after load: every chart is an SVG element with content.
    let dom = Command::new(browser)
        .args(common)
        .arg(&profile)
        .args(["--dump-dom", &url])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&dom.stderr);
    assert!(dom.status.success(), "{err}");
    let text = String::from_utf8_lossy(&dom.stdout);
    for id in IDS {
        let at = text
            .find(&format!("<section id=\"{id}\""))
            .unwrap_or_else(|| panic!("no section {id}"));
        let section = &text[at..at + text[at..].find("</section>").unwrap()];
        assert!(section.contains("<svg"), "{id} has no SVG");
        assert!(section.matches("<rect").count() + section.matches("<polyline").count() >= 2);
    }
    // No script errors, no failed loads.
    for bad in ["Uncaught", "CONSOLE", "net::ERR"] {
        assert!(!err.contains(bad), "{bad} in Chromium's log:\n{err}");
    }
    // A screenshot: each chart's band of the page has drawn pixels.
    let png = dir.path().join("shot.png");
    let shot = Command::new(browser)
        .args(common)
        .arg(&profile)
        .args(["--window-size=900,4200"])
        .arg(format!("--screenshot={}", png.display()))
        .arg(&url)
        .output()
        .unwrap();
    assert!(
        shot.status.success(),
        "{}",
        String::from_utf8_lossy(&shot.stderr)
    );
    let img = image::open(&png).unwrap().to_rgb8();
    let (w, h) = img.dimensions();
    assert_eq!((w, h), (900, 4200));
    let colored = |y0: u32, y1: u32| {
        (y0..y1.min(h))
            .flat_map(|y| (0..w).map(move |x| (x, y)))
            .filter(|&(x, y)| {
                let p = img.get_pixel(x, y);
                // The palette's blue and orange, not text grey or white.
                let (r, g, b) = (p[0] as i32, p[1] as i32, p[2] as i32);
                (r - b).abs() > 60 || (g - b).abs() > 60 || (b - r) > 60
            })
            .count()
    };
    // Charts stack down the page: every 700-pixel band past the summary
    // has colored lines or bars, and the total is substantial.
    let total = colored(0, h);
    assert!(total > 20_000, "{total} colored pixels");
    for y in (300..3300).step_by(700) {
        assert!(
            colored(y, y + 700) > 500,
            "nothing drawn between {y} and {}",
            y + 700
        );
    }
}
