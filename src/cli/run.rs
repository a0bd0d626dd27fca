//! `prunex run`: checks the recipe here (milliseconds, no libtorch), then
//! hands it to the executor `prunex-exec`, which links libtorch.

use std::path::Path;
use std::process::Command;

use super::version::exec_path;
use super::{color, FAILED, TROUBLE};
use crate::check::{check_path, Mode};
use crate::diagnostics::{is_error, render_human};
use crate::syntax::FsLoader;

/// Runs the subcommand.
pub fn run(recipe: &Path, set: &[String], threads: Option<i32>) -> u8 {
    let color = color();
    let Some(overrides) = super::overrides(set, color) else {
        return FAILED;
    };
    let checked = check_path(recipe, &FsLoader, &overrides, Mode::Single);
    if checked.reports.iter().any(|r| is_error(r.as_ref())) {
        for r in &checked.reports {
            eprint!("{}", render_human(r, color));
        }
        return FAILED;
    }
    let exec = match exec_path() {
        Ok(p) if p.exists() => p,
        _ => {
            eprintln!("error[prunex::cli::no_executor]: the executor prunex-exec is missing next to prunex; build it with `cargo build --release`");
            return TROUBLE;
        }
    };
    let mut cmd = Command::new(exec);
    cmd.arg("run").arg(recipe);
    for s in set {
        cmd.arg("--set").arg(s);
    }
    if let Some(n) = threads {
        cmd.arg("--threads").arg(n.to_string());
    }
    match cmd.status() {
        Ok(s) => s.code().map_or(TROUBLE, |c| c as u8),
        Err(e) => {
            eprintln!("error[prunex::cli::executor_failed]: cannot start prunex-exec: {e}");
            TROUBLE
        }
    }
}
