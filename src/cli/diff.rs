//! `prunex diff OLD NEW`: how two recipes' resolved plans differ, so a
//! reviewer sees what a recipe change does (per-layer targets, schedules,
//! distillation, training), not which characters changed. Either side may
//! be `REV:PATH`, read from git (includes too).

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use serde_json::Value;
use tabled::settings::Style;
use tabled::{Table, Tabled};

use super::inspect::thousands;
use super::{color, FAILED, OK, TROUBLE};
use crate::check::recipe::Recipe;
use crate::check::{check_path, Mode};
use crate::diagnostics::{is_error, render_many};
use crate::plan::Plan;
use crate::syntax::{FsLoader, Loader};

/// Reads recipe files as they are at a git revision.
struct GitLoader {
    rev: String,
}

impl GitLoader {
    /// The bytes of `path` at the revision.
    fn show(&self, path: &Path) -> io::Result<Vec<u8>> {
        let p = crate::syntax::load::normalize(path);
        let rel = p.to_string_lossy();
        let spec = if p.is_absolute() {
            // Absolute paths are taken from the work tree's repository root.
            let top = std::process::Command::new("git")
                .args(["rev-parse", "--show-toplevel"])
                .output()?;
            let top = String::from_utf8_lossy(&top.stdout).trim().to_owned();
            let inner = p
                .strip_prefix(&top)
                .map_err(|_| io::Error::new(io::ErrorKind::NotFound, "outside the repository"))?;
            format!("{}:{}", self.rev, inner.display())
        } else {
            format!("{}:./{rel}", self.rev)
        };
        let out = std::process::Command::new("git")
            .args(["show", &spec])
            .output()?;
        if !out.status.success() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            ));
        }
        Ok(out.stdout)
    }
}

impl Loader for GitLoader {
    fn read(&self, path: &Path) -> io::Result<(PathBuf, String)> {
        let text = String::from_utf8(self.show(path)?).map_err(|_| {
            io::Error::new(io::ErrorKind::InvalidData, "the file is not UTF-8 text")
        })?;
        // The identity stays a plain path: includes resolve against it.
        Ok((crate::syntax::load::normalize(path), text))
    }

    /// Model descriptions and weights named by the recipe are read at the
    /// same revision as the recipe.
    /// Weights are seldom committed: a file the revision lacks is read from
    /// the work tree.
    fn open(&self, path: &Path) -> io::Result<Box<dyn crate::syntax::load::ReadSeek>> {
        match self.show(path) {
            Ok(bytes) => Ok(Box::new(io::Cursor::new(bytes))),
            Err(_) => crate::syntax::FsLoader.open(path),
        }
    }
}

/// `REV:PATH` → (Some(REV), PATH); a path that exists is always a path.
fn split(arg: &str) -> (Option<&str>, &str) {
    if Path::new(arg).exists() {
        return (None, arg);
    }
    match arg.split_once(':') {
        Some((rev, path)) if !rev.is_empty() && !path.is_empty() => (Some(rev), path),
        _ => (None, arg),
    }
}

/// One side, resolved: (recipe, plan).
fn resolve(arg: &str) -> Result<(Recipe, Plan), u8> {
    let (rev, path) = split(arg);
    let checked = match rev {
        Some(rev) => check_path(
            Path::new(path),
            &GitLoader {
                rev: rev.to_owned(),
            },
            &[],
            Mode::Single,
        ),
        None => check_path(Path::new(path), &FsLoader, &[], Mode::Single),
    };
    if checked.reports.iter().any(|r| is_error(r.as_ref())) {
        eprint!("{}", render_many(&checked.reports, color(), ""));
        eprintln!("error[prunex::cli::diff_invalid]: `{arg}` does not check; `prunex diff` compares recipes that do");
        return Err(FAILED);
    }
    match (checked.recipe, checked.plan) {
        (Some(r), Some(p)) => Ok((r, p)),
        _ => Err(TROUBLE),
    }
}

fn scalar(v: &Value) -> String {
    match v {
        Value::Null => "—".into(),
        Value::String(s) => s.clone(),
        Value::Array(a) if a.iter().all(|x| !x.is_object() && !x.is_array()) => {
            let items: Vec<String> = a.iter().map(scalar).collect();
            format!("[{}]", items.join(", "))
        }
        other => other.to_string(),
    }
}

/// Flattens a JSON value into `path → text` (arrays of scalars stay whole).
fn flatten(prefix: &str, v: &Value, out: &mut BTreeMap<String, String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                let p = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&p, x, out);
            }
        }
        Value::Array(a) if a.iter().any(|x| x.is_object() || x.is_array()) => {
            for (i, x) in a.iter().enumerate() {
                flatten(&format!("{prefix}[{i}]"), x, out);
            }
        }
        Value::Null => {}
        other => {
            out.insert(prefix.to_owned(), scalar(other));
        }
    }
}

/// What a reviewer compares, as ordered `(section, item) → value` rows.
pub fn facts(recipe: &Recipe, plan: &Plan) -> Vec<((String, String), String)> {
    let mut rows: Vec<((String, String), String)> = Vec::new();
    let mut push = |sec: &str, item: String, v: String| rows.push(((sec.to_owned(), item), v));
    let mut model = BTreeMap::new();
    flatten(
        "",
        &serde_json::to_value(&recipe.model).unwrap_or(Value::Null),
        &mut model,
    );
    for (k, v) in model {
        push("model", k, v);
    }
    // Settings as the plan resolved them, defaults filled in: a default
    // written out is no difference, a changed default is one.
    push("model", "seed".into(), plan.seed.to_string());
    let settings = [
        ("model", serde_json::json!({ "device": plan.device })),
        (
            "data",
            serde_json::to_value(&plan.data).unwrap_or(Value::Null),
        ),
        (
            "pretrain",
            serde_json::to_value(&plan.pretrain).unwrap_or(Value::Null),
        ),
        (
            "finetune",
            serde_json::to_value(&plan.finetune).unwrap_or(Value::Null),
        ),
        (
            "distill",
            serde_json::to_value(&plan.distill).unwrap_or(Value::Null),
        ),
    ];
    for (sec, v) in settings {
        let mut m = BTreeMap::new();
        flatten("", &v, &mut m);
        for (k, v) in m {
            push(sec, k, v);
        }
    }
    for (i, st) in plan.stages.iter().enumerate() {
        let sec = format!(
            "stage {} ({} by {}, {})",
            i + 1,
            st.granularity,
            st.importance,
            st.scope
        );
        let schedule: Vec<String> = st
            .schedule
            .iter()
            .map(|s| {
                let unit = match s.unit {
                    crate::plan::Unit::Epochs => "epoch",
                    crate::plan::Unit::Steps => "step",
                };
                format!("{} at {unit} {}", s.amount(), s.at)
            })
            .collect();
        push(&sec, "schedule".into(), schedule.join(", "));
        if let Some(p) = st.penalty {
            push(&sec, "penalty".into(), p.to_string());
        }
        if let Some(r) = st.round_to {
            push(&sec, "round_to".into(), r.to_string());
        }
        for g in &st.groups {
            let keep = g
                .keep
                .map(|k| format!(" (keep {k} of {})", g.channels))
                .unwrap_or_default();
            for l in &g.layers {
                push(&sec, l.clone(), format!("{}{keep}", g.target.describe()));
            }
        }
        for l in &st.layers {
            push(&sec, l.layer.clone(), l.target.describe());
        }
        if let Some(b) = &st.blocks {
            push(
                &sec,
                "blocks removed".into(),
                format!("{} of {}", b.remove, b.candidates.len()),
            );
        }
        push(&sec, "params after".into(), thousands(st.params_after));
        push(&sec, "MACs after".into(), thousands(st.macs_after));
    }
    push("export", "folder".into(), plan.export.display().to_string());
    rows
}

#[derive(Tabled)]
struct Row {
    section: String,
    item: String,
    old: String,
    new: String,
}

/// The rows that differ (an item on one side only shows `—` on the other).
pub fn differences(
    old: &[((String, String), String)],
    new: &[((String, String), String)],
) -> Vec<(String, String, String, String)> {
    let o: BTreeMap<&(String, String), &String> = old.iter().map(|(k, v)| (k, v)).collect();
    let n: BTreeMap<&(String, String), &String> = new.iter().map(|(k, v)| (k, v)).collect();
    // Keep the order of the new side, then what only the old side has.
    let mut keys: Vec<&(String, String)> = new.iter().map(|(k, _)| k).collect();
    keys.extend(old.iter().map(|(k, _)| k).filter(|k| !n.contains_key(k)));
    let mut out = Vec::new();
    let dash = String::from("—");
    for k in keys {
        let (a, b) = (
            o.get(k).copied().unwrap_or(&dash),
            n.get(k).copied().unwrap_or(&dash),
        );
        if a != b {
            out.push((k.0.clone(), k.1.clone(), a.clone(), b.clone()));
        }
    }
    out
}

/// Runs the subcommand.
pub fn run(old: &str, new: &str) -> u8 {
    let (a, b) = match (resolve(old), resolve(new)) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(c), _) | (_, Err(c)) => return c,
    };
    let diffs = differences(&facts(&a.0, &a.1), &facts(&b.0, &b.1));
    if diffs.is_empty() {
        println!("{old} and {new} resolve to the same plan and settings");
        return OK;
    }
    let rows: Vec<Row> = diffs
        .into_iter()
        .map(|(section, item, old, new)| Row {
            section,
            item,
            old,
            new,
        })
        .collect();
    let n = rows.len();
    let mut t = Table::new(rows);
    t.with(Style::sharp());
    println!("{t}");
    println!(
        "{n} difference{} between {old} and {new}",
        if n == 1 { "" } else { "s" }
    );
    OK
}
