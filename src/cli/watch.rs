//! `prunex watch`: re-check a recipe on every save of it or of a file it
//! includes, show the diagnostics at once, and re-run it from the first
//! stage the edit changed.
//!
//! The front end checks (milliseconds, no libtorch); runs go to the
//! executor with `--resume`, so every unit whose inputs did not change comes
//! from the stage cache. A valid edit cancels a run in progress (SIGINT: the
//! executor finishes its batch and saves where it was) and starts the new
//! one; an invalid edit only shows its diagnostics — the last good run goes
//! on and its results stay on disk. Saves are debounced: a burst of saves is
//! one check and at most one run. Folders are watched rather than files, so
//! editors that save by writing a new file and renaming it work too.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use notify::{RecursiveMode, Watcher};

use super::diff::{differences, facts};
use super::run::{spawn_exec_with, Reuse, CHILD};
use super::{color, FAILED, OK, TROUBLE};
use crate::check::{check_path, Checked, Mode};
use crate::diagnostics::{is_error, render_many};
use crate::syntax::FsLoader;

/// Quiet time that ends a burst of saves.
const DEBOUNCE: Duration = Duration::from_millis(50);

/// The files a checked recipe depends on: the recipe, its includes, and
/// the model description and weights it names.
fn inputs(recipe: &Path, checked: &Checked) -> BTreeSet<PathBuf> {
    let mut files: BTreeSet<PathBuf> = checked
        .sources
        .files()
        .iter()
        .filter_map(|f| f.path.clone())
        .collect();
    files.insert(std::fs::canonicalize(recipe).unwrap_or_else(|_| recipe.to_path_buf()));
    if let Some(m) = checked.recipe.as_ref().and_then(|r| r.model.as_ref()) {
        if let Some(w) = &m.weights {
            files.insert(std::fs::canonicalize(&w.node).unwrap_or_else(|_| w.node.clone()));
        }
        if let crate::syntax::ast::ModelSource::File(f) = &m.source.node {
            let p = PathBuf::from(f);
            files.insert(std::fs::canonicalize(&p).unwrap_or(p));
        }
    }
    files
}

/// Whether an event can change a file's content (reading a file, as the
/// check itself does, must not count as a save).
fn changes(ev: &notify::Event) -> bool {
    use notify::event::{EventKind, ModifyKind};
    match ev.kind {
        EventKind::Create(_) | EventKind::Remove(_) => true,
        EventKind::Modify(ModifyKind::Metadata(_)) => false,
        EventKind::Modify(_) => true,
        _ => false,
    }
}

fn stamp() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format!(
        "{:02}:{:02}:{:02}",
        (secs / 3600) % 24,
        (secs / 60) % 60,
        secs % 60
    )
}

type Facts = Vec<((String, String), String)>;

/// Checks and prints; returns the checked recipe and, when valid, its facts.
fn check(recipe: &Path, overrides: &[crate::check::Override]) -> (Checked, Option<Facts>) {
    let start = Instant::now();
    let checked = check_path(recipe, &FsLoader, overrides, Mode::Single);
    let ms = start.elapsed().as_secs_f64() * 1e3;
    let errors = checked
        .reports
        .iter()
        .filter(|r| is_error(r.as_ref()))
        .count();
    eprint!("{}", render_many(&checked.reports, color(), ""));
    let warnings = checked.reports.len() - errors;
    if errors > 0 {
        eprintln!(
            "[{}] {}: {errors} error{} ({ms:.0} ms); the last good results stay; watching for changes",
            stamp(),
            recipe.display(),
            if errors == 1 { "" } else { "s" }
        );
        return (checked, None);
    }
    eprintln!(
        "[{}] {}: ok{} ({ms:.0} ms)",
        stamp(),
        recipe.display(),
        if warnings > 0 {
            format!(
                ", {warnings} warning{}",
                if warnings == 1 { "" } else { "s" }
            )
        } else {
            String::new()
        }
    );
    let facts = match (&checked.recipe, &checked.plan) {
        (Some(r), Some(p)) => Some(facts(r, p)),
        _ => None,
    };
    (checked, facts)
}

/// Cancels the run in progress (SIGINT: it finishes the batch, saves and
/// exits) and waits for it.
fn stop(child: &mut Option<Child>) {
    if child.is_some() {
        super::run::interrupt_child();
    }
    reap(child);
}

/// Waits for the run in progress without signalling it again: after Ctrl-C
/// the handler has passed the signal on already, and a second SIGINT would
/// make the executor exit at once instead of saving its progress.
fn reap(child: &mut Option<Child>) {
    if let Some(mut c) = child.take() {
        let _ = c.wait();
        CHILD.store(0, Ordering::SeqCst);
    }
}

/// Runs the subcommand.
pub fn run(recipe: &Path, set: &[String], threads: Option<i32>, check_only: bool) -> u8 {
    let Some(overrides) = super::overrides(set, color()) else {
        return FAILED;
    };
    let quit = Arc::new(AtomicBool::new(false));
    let q = quit.clone();
    super::run::on_ctrl_c(move || q.store(true, Ordering::SeqCst));

    let (tx, rx) = channel();
    let mut watcher = match notify::recommended_watcher(tx) {
        Ok(w) => w,
        Err(e) => {
            eprintln!("error[prunex::cli::watch_failed]: cannot watch files: {e}\n  help: on Linux, raise fs.inotify.max_user_watches");
            return TROUBLE;
        }
    };
    let mut watched_dirs: BTreeSet<PathBuf> = BTreeSet::new();
    let mut files: BTreeSet<PathBuf> = BTreeSet::new();
    let mut child: Option<Child> = None;
    let mut last: Option<Facts> = None;
    let mut first = true;

    loop {
        // Check, show, and (re)start the run when the recipe is valid.
        let (checked, now) = check(recipe, &overrides);
        files = inputs(recipe, &checked).union(&files).cloned().collect();
        let dirs: BTreeSet<PathBuf> = files
            .iter()
            .filter_map(|f| f.parent().map(Path::to_path_buf))
            .collect();
        for d in dirs.difference(&watched_dirs.clone()) {
            if watcher.watch(d, RecursiveMode::NonRecursive).is_ok() {
                watched_dirs.insert(d.clone());
            }
        }
        if let Some(now) = now {
            if let Some(prev) = &last {
                let diffs = differences(prev, &now);
                if diffs.is_empty() {
                    eprintln!("no change to the plan or settings");
                }
                for (sec, item, a, b) in &diffs {
                    eprintln!("changed: {sec} · {item}: {a} → {b}");
                }
            }
            let changed = last.as_ref() != Some(&now);
            let running = child
                .as_mut()
                .is_some_and(|c| matches!(c.try_wait(), Ok(None)));
            if !check_only && (changed || first) {
                if running {
                    eprintln!("cancelling the run in progress (it saves where it is)");
                }
                stop(&mut child);
                eprintln!(
                    "running {} (unchanged stages come from the cache)",
                    recipe.display()
                );
                // report.html reloads itself while watch mode rewrites it.
                let env = [("PRUNEX_WATCH", "1".to_owned())];
                match spawn_exec_with(recipe, set, threads, Reuse::Resume, &env) {
                    Ok(c) => {
                        CHILD.store(c.id() as i32, Ordering::SeqCst);
                        child = Some(c)
                    }
                    Err(code) => return code,
                }
            }
            last = Some(now);
        }
        first = false;

        // Wait for a change to an input, the run to end, or Ctrl-C.
        'wait: loop {
            if quit.load(Ordering::SeqCst) {
                reap(&mut child);
                eprintln!("stopped watching");
                return OK;
            }
            if let Some(c) = child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    CHILD.store(0, Ordering::SeqCst);
                    child = None;
                    eprintln!(
                        "[{}] run {}; watching for changes (Ctrl-C to stop)",
                        stamp(),
                        match status.code() {
                            Some(0) => "finished".to_owned(),
                            Some(130) => "interrupted".to_owned(),
                            Some(c) => format!("failed (exit {c})"),
                            None => "was killed".to_owned(),
                        }
                    );
                }
            }
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(Ok(ev)) if changes(&ev) && ev.paths.iter().any(|p| files.contains(p)) => {
                    // A burst of saves is one change.
                    // Only saves of watched files extend the quiet period:
                    // other files in the same folders (a log the run writes,
                    // say) must not hold the check back.
                    let mut changed: BTreeSet<PathBuf> = ev.paths.into_iter().collect();
                    let mut quiet_until = Instant::now() + DEBOUNCE;
                    loop {
                        let left = quiet_until.saturating_duration_since(Instant::now());
                        if left.is_zero() {
                            break;
                        }
                        match rx.recv_timeout(left) {
                            Ok(Ok(ev))
                                if changes(&ev) && ev.paths.iter().any(|p| files.contains(p)) =>
                            {
                                changed.extend(ev.paths);
                                quiet_until = Instant::now() + DEBOUNCE;
                            }
                            Ok(_) => {}
                            Err(_) => break,
                        }
                    }
                    let names: Vec<String> = changed
                        .iter()
                        .filter(|p| files.contains(*p))
                        .map(|p| p.display().to_string())
                        .collect();
                    eprintln!("\n[{}] saved: {}", stamp(), names.join(", "));
                    break 'wait;
                }
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return TROUBLE,
            }
        }
    }
}
