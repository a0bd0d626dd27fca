//! `prunex run`: checks the recipe here (milliseconds, no libtorch), then
//! hands it to the executor `prunex-exec`, which links libtorch.
//!
//! The executor runs in its own process group, so Ctrl-C reaches only this
//! process, which passes it on: the executor finishes its batch, saves where
//! it is and exits (a second Ctrl-C stops it at once).

use std::ffi::OsString;
use std::path::Path;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicI32, Ordering};

use super::version::exec_path;
use super::{color, FAILED, TROUBLE};
use crate::check::{check_path, Mode};
use crate::diagnostics::{is_error, render_many};
use crate::syntax::FsLoader;

/// The running executor's pid (0: none), for the Ctrl-C handler.
pub(crate) static CHILD: AtomicI32 = AtomicI32::new(0);

/// Asks the running executor, if any, to stop (SIGINT: it saves and
/// exits), and every worker of a distributed run.
pub(crate) fn interrupt_child() {
    let pid = CHILD.load(Ordering::SeqCst);
    if pid > 0 {
        // SAFETY: kill(2) with a pid we started and a standard signal.
        unsafe {
            libc::kill(pid, libc::SIGINT);
        }
    }
    super::launch::signal_workers(libc::SIGINT);
}

/// Installs the Ctrl-C handler that passes Ctrl-C on to the executor;
/// `also` runs too (watch mode's exit flag).
pub(crate) fn on_ctrl_c(also: impl Fn() + Send + 'static) {
    let _ = ctrlc::set_handler(move || {
        interrupt_child();
        also();
    });
}

/// How the executor uses the stage cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Reuse {
    Dense,
    Resume,
    Fresh,
}

/// Starts `prunex-exec run` in its own process group.
pub(crate) fn spawn_exec(
    recipe: &Path,
    set: &[String],
    threads: Option<i32>,
    reuse: Reuse,
) -> Result<Child, u8> {
    let c = spawn_exec_with(recipe, set, threads, reuse, &[])?;
    CHILD.store(c.id() as i32, Ordering::SeqCst);
    Ok(c)
}

/// Starts `prunex-exec run` in its own process group with these
/// environment variables (a distributed run's worker; an empty value
/// removes one).
pub(crate) fn spawn_exec_with(
    recipe: &Path,
    set: &[String],
    threads: Option<i32>,
    reuse: Reuse,
    env: &[(&str, String)],
) -> Result<Child, u8> {
    let mut args: Vec<OsString> = vec!["run".into(), recipe.into()];
    for s in set {
        args.push("--set".into());
        args.push(s.into());
    }
    if let Some(n) = threads {
        args.push("--threads".into());
        args.push(n.to_string().into());
    }
    match reuse {
        Reuse::Resume => args.push("--resume".into()),
        Reuse::Fresh => args.push("--fresh".into()),
        Reuse::Dense => {}
    }
    spawn_exec_args(&args, env)
}

/// Starts `prunex-exec ARGS…` in its own process group with these
/// environment variables (an empty value removes one).
pub(crate) fn spawn_exec_args(args: &[OsString], env: &[(&str, String)]) -> Result<Child, u8> {
    use std::os::unix::process::CommandExt;
    let exec = match exec_path() {
        Ok(p) if p.exists() => p,
        _ => {
            eprintln!("error[prunex::cli::no_executor]: the executor prunex-exec is missing next to prunex\n  help: build it with `cargo build --release` (scripts/setup installs libtorch first)");
            return Err(TROUBLE);
        }
    };
    let mut cmd = Command::new(exec);
    cmd.args(args);
    for (k, v) in env {
        // An empty value unsets the variable.
        if v.is_empty() {
            cmd.env_remove(k);
        } else {
            cmd.env(k, v);
        }
    }
    cmd.process_group(0);
    match cmd.spawn() {
        Ok(c) => Ok(c),
        Err(e) => {
            eprintln!("error[prunex::cli::executor_failed]: cannot start prunex-exec: {e}");
            Err(TROUBLE)
        }
    }
}

/// Checks the recipe before any process starts; `Err` is the exit code.
pub(crate) fn precheck(recipe: &Path, set: &[String]) -> Result<(), u8> {
    let color = color();
    let Some(overrides) = super::overrides(set, color) else {
        return Err(FAILED);
    };
    let checked = check_path(recipe, &FsLoader, &overrides, Mode::Single);
    if checked.reports.iter().any(|r| is_error(r.as_ref())) {
        eprint!("{}", render_many(&checked.reports, color, ""));
        return Err(FAILED);
    }
    Ok(())
}

/// How `--resume` and `--fresh` use the cache.
pub(crate) fn reuse_of(resume: bool, fresh: bool) -> Reuse {
    if resume {
        Reuse::Resume
    } else if fresh {
        Reuse::Fresh
    } else {
        Reuse::Dense
    }
}

/// Runs the subcommand.
pub fn run(recipe: &Path, set: &[String], threads: Option<i32>, resume: bool, fresh: bool) -> u8 {
    if let Err(code) = precheck(recipe, set) {
        return code;
    }
    let reuse = reuse_of(resume, fresh);
    on_ctrl_c(|| {});
    let child = match spawn_exec(recipe, set, threads, reuse) {
        Ok(c) => c,
        Err(code) => return code,
    };
    wait_exec(child)
}

/// Waits for the executor and passes its exit code on.
pub(super) fn wait_exec(mut child: Child) -> u8 {
    let status = child.wait();
    CHILD.store(0, Ordering::SeqCst);
    match status {
        Ok(s) => s.code().map_or(TROUBLE, |c| c as u8),
        Err(e) => {
            eprintln!("error[prunex::cli::executor_failed]: lost the executor: {e}");
            TROUBLE
        }
    }
}
