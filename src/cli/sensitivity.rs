//! `prunex sensitivity`: checks the recipe and what is to be measured here
//! (no libtorch), then hands the measuring to `prunex-exec sensitivity`,
//! passing Ctrl-C on to it (it stops between evaluation batches; the
//! probes measured are in the cache, so the same command continues).

use std::sync::atomic::Ordering;

use super::run::{on_ctrl_c, spawn_exec_args, wait_exec, CHILD};
use super::{color, FAILED};
use crate::check::{check_path, Mode};
use crate::diagnostics::{is_error, render_human, render_many};
use crate::invocation::SensitivityArgs;
use crate::sensitivity::{preflight, SensitivityError};
use crate::syntax::{FsLoader, Loader};

/// Runs the subcommand.
pub fn run(a: &SensitivityArgs) -> u8 {
    let color = color();
    let Some(overrides) = super::overrides(&a.set, color) else {
        return FAILED;
    };
    let checked = check_path(&a.recipe, &FsLoader, &overrides, Mode::Single);
    if checked.reports.iter().any(|r| is_error(r.as_ref())) {
        eprint!("{}", render_many(&checked.reports, color, ""));
        return FAILED;
    }
    let Some(plan) = &checked.plan else {
        return FAILED;
    };
    if let Err(e) = preflight(plan, &a.ratios(), a.budget()) {
        eprint!("{}", render_human(&miette::Report::new(e), color));
        return FAILED;
    }
    // Known before any measuring: the results must have somewhere to go
    // (the export folder, the default, is checked with the recipe).
    if let Some(out) = &a.out {
        if let Err(e) = FsLoader.writable(out) {
            let e = SensitivityError::OutUnwritable {
                path: out.display().to_string(),
                reason: e.to_string(),
            };
            eprint!("{}", render_human(&miette::Report::new(e), color));
            return FAILED;
        }
    }
    // One process measures. Under a launcher (torchrun, srun, or a batch
    // script whose environment says several tasks) rank 0 runs the
    // analysis and the other ranks have nothing to do: without this each
    // would measure every probe again and write the same files.
    match crate::distributed::World::from_env(|k| std::env::var(k).ok()) {
        Err(e) => {
            eprint!("{}", render_human(&miette::Report::new(e), color));
            return FAILED;
        }
        Ok(Some(w)) if !w.leader() => {
            eprintln!(
                "rank {} of {}: `prunex sensitivity` runs in one process; rank 0 measures, nothing to do here",
                w.rank, w.size
            );
            return super::OK;
        }
        Ok(Some(w)) => eprintln!(
            "note: `prunex sensitivity` runs in one process: rank 0 of {} measures, any other rank exits",
            w.size
        ),
        Ok(None) => {}
    }
    on_ctrl_c(|| {});
    let mut args: Vec<std::ffi::OsString> = vec!["sensitivity".into()];
    args.extend(a.to_args());
    let child = match spawn_exec_args(&args, &[]) {
        Ok(c) => c,
        Err(code) => return code,
    };
    CHILD.store(child.id() as i32, Ordering::SeqCst);
    wait_exec(child)
}
