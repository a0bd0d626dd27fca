//! `prunex plan`: what a recipe will do to its model, per stage and group,
//! with the recipe line behind every target; `--yaml` for the stable dump.

use std::path::Path;

use tabled::settings::Style;
use tabled::{Table, Tabled};

use super::inspect::si;
use super::{color, FAILED, OK};
use crate::check::{check_path, Mode};
use crate::diagnostics::{is_error, render_many};
use crate::plan::{Plan, Stage};
use crate::syntax::FsLoader;

#[derive(Tabled)]
struct GroupRow {
    group: String,
    layers: String,
    #[tabled(rename = "channels / weights")]
    channels: String,
    target: String,
    keep: String,
    #[tabled(rename = "set by")]
    set_by: String,
}

/// A group's channel count, with the step its counts move in when grouped
/// convolutions tie its channels into units.
pub fn channel_count(channels: usize, unit: usize) -> String {
    if unit > 1 {
        format!("{channels} (steps of {unit})")
    } else {
        channels.to_string()
    }
}

fn stage_table(s: &Stage) -> String {
    let heads = s.granularity == crate::plan::Granularity::Heads;
    let rows: Vec<GroupRow> = if s.groups.is_empty() {
        s.layers
            .iter()
            .map(|l| GroupRow {
                group: String::new(),
                layers: l.layer.clone(),
                channels: l.weights.to_string(),
                target: l.target.describe(),
                keep: String::new(),
                set_by: l.set_by.join("\n"),
            })
            .collect()
    } else {
        s.groups
            .iter()
            .map(|g| GroupRow {
                group: g.group.to_string(),
                layers: crate::plan::shorten_layers(&g.layers),
                channels: if heads && g.heads_per_unit > 1 {
                    format!(
                        "{} heads ({} key/value)",
                        g.channels * g.heads_per_unit,
                        g.channels
                    )
                } else if heads {
                    format!("{} heads", g.channels)
                } else {
                    channel_count(g.channels, g.unit)
                },
                target: g.target.describe(),
                keep: match (g.keep, g.rounded) {
                    (Some(k), Some(r)) if heads => {
                        format!("{} heads ({})", k * g.heads_per_unit, r.describe())
                    }
                    (Some(k), Some(r)) => format!("{k} ({})", r.describe()),
                    (Some(k), None) if heads => format!("{} heads", k * g.heads_per_unit),
                    (Some(k), None) => k.to_string(),
                    (None, _) => String::new(),
                },
                set_by: g.set_by.join("\n"),
            })
            .collect()
    };
    let mut t = Table::new(rows);
    t.with(Style::sharp());
    t.to_string()
}

/// Prints a plan for people.
pub fn print(p: &Plan) {
    println!(
        "{} · {} · input [{}, {}, {}]",
        p.recipe, p.model, p.input[0], p.input[1], p.input[2]
    );
    for o in &p.overrides {
        println!("--set {o}");
    }
    if let Some(line) = device_line(p.device, crate::syntax::Loader::cuda_devices(&FsLoader)) {
        println!("{line}");
    }
    for (i, s) in p.stages.iter().enumerate() {
        let steps: Vec<String> = s
            .schedule
            .iter()
            .map(|st| {
                format!(
                    "{}@{}{}",
                    st.amount(),
                    st.at,
                    if matches!(st.unit, crate::plan::Unit::Epochs) {
                        "e"
                    } else {
                        "s"
                    }
                )
            })
            .collect();
        println!(
            "\nstage {} · prune {} by {} ({} scope, aggregate {}) · schedule: {}",
            i + 1,
            s.granularity,
            s.importance,
            s.scope,
            s.aggregate,
            steps.join(" → ")
        );
        match &s.blocks {
            Some(b) => println!(
                "removes the {} least important of {} residual blocks with an identity shortcut: {}",
                b.remove,
                b.candidates.len(),
                b.candidates.join(", ")
            ),
            None => println!("{}", stage_table(s)),
        }
        let about = if s.estimate { "~" } else { "" };
        println!(
            "params {} → {about}{} · MACs {} → {about}{}{}",
            si(p.params_before),
            si(s.params_after),
            si(p.macs_before),
            si(s.macs_after),
            if !s.layers.is_empty() {
                " (masks: zeros do not speed up dense kernels; MACs are unchanged)"
            } else if s.estimate {
                " (estimated: the weights decide at run time which groups or blocks lose most)"
            } else {
                ""
            }
        );
    }
}

/// Which device a run here would use, when the recipe leaves it to `auto`
/// or names a CUDA device (`None` for `cpu`).
fn device_line(device: crate::plan::Device, cuda: Option<usize>) -> Option<String> {
    use crate::plan::Device;
    let here = |n: usize| match n {
        0 => "no CUDA device here".to_owned(),
        1 => "1 CUDA device here".to_owned(),
        n => format!("{n} CUDA devices here"),
    };
    match (device, cuda) {
        (Device::Cpu, _) => None,
        (Device::Auto, Some(0)) => Some(format!("device auto: runs on the CPU ({})", here(0))),
        (Device::Auto, Some(n)) => Some(format!("device auto: runs on cuda:0 ({})", here(n))),
        (Device::Auto, None) => None,
        (Device::Cuda(i), Some(n)) if i >= n => Some(format!(
            "device cuda:{i}: not here ({}); prunex run here would stop",
            here(n)
        )),
        (Device::Cuda(i), _) => Some(format!("device cuda:{i}")),
    }
}

/// The training and distillation lines under the stages; with several
/// ranks, the batch is per rank.
fn print_training(p: &Plan, ranks: usize) {
    if ranks > 1 {
        println!(
            "distributed: {ranks} ranks · BatchNorm {}",
            if p.sync_bn {
                "synchronised over all ranks (sync_bn)"
            } else {
                "per rank (`sync_bn true` normalises over the global batch)"
            }
        );
    } else if p.sync_bn {
        println!(
            "sync_bn: BatchNorm over all ranks' batches when run with --nproc, torchrun or srun"
        );
    }
    let batch = |b: u64| {
        if ranks > 1 {
            format!("batch {b} per rank × {ranks} = {}", b * ranks as u64)
        } else {
            format!("batch {b}")
        }
    };
    for (what, t) in [("pretrain", &p.pretrain), ("finetune", &p.finetune)] {
        if let Some(t) = t {
            let opt = match t.optimizer {
                crate::plan::Optimizer::Sgd { momentum, nesterov } => format!(
                    "sgd (momentum {momentum}{})",
                    if nesterov { ", nesterov" } else { "" }
                ),
                crate::plan::Optimizer::Adam => "adam".into(),
                crate::plan::Optimizer::AdamW => "adamw".into(),
            };
            println!(
                "{what}: {} epochs · {opt} · lr {} · {}",
                t.epochs,
                t.lr,
                batch(t.batch)
            );
        }
    }
    if let Some(d) = &p.distill {
        let teacher = match &d.teacher {
            crate::plan::Teacher::Dense => "the dense model".to_owned(),
            crate::plan::Teacher::Model { model, weights, .. } => match weights {
                Some(w) => format!("{model} ({})", w.display()),
                None => format!("{model} (untrained: no weights given)"),
            },
        };
        println!(
            "distill from {teacher} · temperature {} · alpha {}",
            d.temperature, d.alpha
        );
    }
}

/// Runs the subcommand.
pub fn run(path: &Path, set: &[String], yaml: bool, nproc: Option<u16>) -> u8 {
    let color = color();
    let Some(overrides) = super::overrides(set, color) else {
        return FAILED;
    };
    let checked = check_path(path, &FsLoader, &overrides, Mode::Single);
    eprint!("{}", render_many(&checked.reports, color, ""));
    if checked.reports.iter().any(|r| is_error(r.as_ref())) {
        return FAILED;
    }
    match checked.plan {
        Some(p) if yaml => {
            print!("{}", p.to_yaml());
            OK
        }
        Some(p) => {
            let ranks = match nproc {
                Some(n) => n as usize,
                None => match crate::distributed::World::from_env(|k| std::env::var(k).ok()) {
                    Ok(w) => w.map_or(1, |w| w.size),
                    Err(e) => {
                        eprint!(
                            "{}",
                            crate::diagnostics::render_human(&miette::Report::new(e), color)
                        );
                        return FAILED;
                    }
                },
            };
            print(&p);
            print_training(&p, ranks);
            OK
        }
        None => {
            eprintln!(
                "error[prunex::cli::no_plan]: {} has no model to plan against (is it a fragment?)",
                path.display()
            );
            FAILED
        }
    }
}
