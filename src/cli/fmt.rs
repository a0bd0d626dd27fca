//! `prunex fmt`: format recipes canonically.

use std::path::{Path, PathBuf};

use miette::Report;

use super::{color, recipe_files, FAILED, OK, TROUBLE};
use crate::diagnostics::{render_human, render_many};
use crate::output::write_atomically;
use crate::syntax::{fmt::format, parse, SourceMap};

/// What formatting one file found.
pub enum Outcome {
    /// Already canonical.
    Unchanged,
    /// The canonical text differs.
    Changed(String),
    /// The file has syntax errors (they are returned) and is left alone.
    Invalid(Vec<Report>),
}

/// Formats one file's text. The result is re-parsed and compared with the
/// original tree before it is used, so a formatter bug cannot change what a
/// recipe means; such a bug is reported as an internal error.
pub fn format_text(name: &str, text: &str) -> Outcome {
    let mut map = SourceMap::new();
    let id = map.add(name, Some(Path::new(name)), text);
    let parsed = parse(map.get(id));
    if !parsed.is_ok() {
        return Outcome::Invalid(parsed.errors.into_iter().map(Report::new).collect());
    }
    let out = format(&parsed.file, map.get(id));
    let again_id = map.add(name, None, out.as_str());
    let again = parse(map.get(again_id));
    if !again.is_ok()
        || again.file.items != parsed.file.items
        || again.file.comments.len() != parsed.file.comments.len()
    {
        return Outcome::Invalid(vec![miette::miette!(
            code = "prunex::internal",
            help = "this is a bug in prunex's formatter, not in your recipe; the file was left unchanged. Please report it with the recipe",
            "formatting {name} would change its meaning"
        )]);
    }
    if out == text {
        Outcome::Unchanged
    } else {
        Outcome::Changed(out)
    }
}

/// Runs the subcommand.
pub fn run(paths: &[PathBuf], check: bool) -> u8 {
    let files = match recipe_files(paths) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("error[prunex::cli::no_recipes]: {e}");
            return TROUBLE;
        }
    };
    let color = color();
    let mut failed = false;
    let mut trouble = false;
    for (path, _) in &files {
        let name = path.display().to_string();
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) => {
                let err = crate::syntax::LoadError::Unreadable {
                    path: name,
                    reason: e.to_string(),
                };
                eprint!("{}", render_human(&Report::new(err), color));
                trouble = true;
                continue;
            }
        };
        match format_text(&name, &text) {
            Outcome::Unchanged => {}
            Outcome::Invalid(reports) => {
                eprint!("{}", render_many(&reports, color, ""));
                failed = true;
            }
            Outcome::Changed(out) if check => {
                println!("{name} is not formatted; `prunex fmt {name}` would change it:");
                print!("{}", diff(&name, &text, &out));
                failed = true;
            }
            Outcome::Changed(out) => {
                if let Err(e) = write_atomically(path, &out) {
                    eprintln!("error[prunex::cli::write_failed]: cannot write {name}: {e}; the file is unchanged");
                    trouble = true;
                } else {
                    eprintln!("formatted {name}");
                }
            }
        }
    }
    if trouble {
        TROUBLE
    } else if failed {
        FAILED
    } else {
        OK
    }
}

/// A unified diff of the change.
pub fn diff(name: &str, old: &str, new: &str) -> String {
    similar::TextDiff::from_lines(old, new)
        .unified_diff()
        .context_radius(2)
        .header(name, &format!("{name} (formatted)"))
        .to_string()
}
