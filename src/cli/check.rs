//! `prunex check`: parse and check recipes, report every problem at once.

use std::path::PathBuf;

use miette::Report;

use super::{color, recipe_files, Format, FAILED, OK, TROUBLE};
use crate::check::{check_path, parse_override, Mode};
use crate::diagnostics::{is_error, render_many, to_json};
use crate::syntax::FsLoader;

/// Runs the subcommand.
pub fn run(paths: &[PathBuf], set: &[String], format: Format, deny_warnings: bool) -> u8 {
    let files = match recipe_files(paths) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("error[prunex::cli::no_recipes]: {e}");
            return TROUBLE;
        }
    };
    let mut overrides = Vec::new();
    let mut reports: Vec<Report> = Vec::new();
    for s in set {
        match parse_override(s) {
            Ok(o) => overrides.push(o),
            Err(e) => reports.push(Report::new(*e)),
        }
    }
    let mode = if files.len() == 1 && !files[0].1 {
        Mode::Single
    } else {
        Mode::Many
    };
    let (mut recipes, mut fragments) = (0, 0);
    for (path, _) in &files {
        let checked = check_path(path, &FsLoader, &overrides, mode);
        match &checked.recipe {
            Some(r) if !r.is_recipe() => fragments += 1,
            _ => recipes += 1,
        }
        reports.extend(checked.reports);
    }
    let errors = reports.iter().filter(|r| is_error(r.as_ref())).count();
    let warnings = reports.len() - errors;
    match format {
        Format::Json => {
            for r in &reports {
                println!(
                    "{}",
                    serde_json::to_string(&to_json(r)).expect("diagnostics serialize")
                );
            }
        }
        Format::Human => {
            let color = color();
            eprint!("{}", render_many(&reports, color, "\n"));
            eprintln!(
                "checked {recipes} recipe{} and {fragments} fragment{}: {errors} error{}, {warnings} warning{}",
                plural(recipes),
                plural(fragments),
                plural(errors),
                plural(warnings)
            );
        }
    }
    if errors > 0 || (deny_warnings && warnings > 0) {
        FAILED
    } else {
        OK
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}
