//! Check: a loaded recipe to a resolved, validated [`Recipe`]. Every recipe
//! diagnostic past syntax is born here (`prunex::check::*`).

pub mod diag;
pub mod model;
pub mod plan;
pub mod recipe;
pub mod settings;

pub use diag::CheckError;
pub use recipe::{parse_override, resolve, Override, Recipe};

use std::path::Path;

use crate::diagnostics::report_problem;
use crate::syntax::{load, Loader, SourceMap};

/// The outcome of loading and checking one recipe file.
#[derive(Debug)]
pub struct Checked {
    /// The resolved recipe; `None` when the file did not load or parse.
    pub recipe: Option<Recipe>,
    /// The recipe's model graph, when it has a model that builds.
    pub graph: Option<crate::graph::Graph>,
    /// The execution plan, when the recipe and its model check.
    pub plan: Option<crate::plan::Plan>,
    /// The distillation teacher's graph, when it is another model.
    pub teacher: Option<crate::graph::Graph>,
    /// Every file read.
    pub sources: SourceMap,
    /// Every diagnostic, errors and warnings, in the order found.
    pub reports: Vec<miette::Report>,
}

impl Checked {
    /// Whether any diagnostic is an error.
    pub fn has_errors(&self) -> bool {
        self.reports
            .iter()
            .any(|r| crate::diagnostics::is_error(r.as_ref()))
    }
}

/// How strictly a file is checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// The user named this file: `--set` names must exist in it.
    Single,
    /// One of many files in a folder: `--set` names may belong to others.
    Many,
}

/// Loads, parses and checks a recipe. Fragments (files without a `recipe`
/// header) are checked for syntax and values, but not for variables, which
/// the recipes that include them define.
pub fn check_path(path: &Path, loader: &dyn Loader, overrides: &[Override], mode: Mode) -> Checked {
    let mut unresolved = load(path, loader);
    let sources = unresolved.sources.clone();
    if sources.files().is_empty() {
        let reports = unresolved
            .problems
            .into_iter()
            .map(report_problem)
            .collect();
        return Checked {
            recipe: None,
            graph: None,
            plan: None,
            teacher: None,
            sources,
            reports,
        };
    }
    // Values in the parts that parsed are still checked, so one run shows
    // every problem; what a broken line may have caused (a missing item, a
    // variable whose `let` did not parse) is not reported on top of it.
    let broken = unresolved.has_errors();
    let (recipe, errors) = resolve(&unresolved, overrides);
    let fragment = !recipe.is_recipe();
    let mut reports: Vec<miette::Report> = std::mem::take(&mut unresolved.problems)
        .into_iter()
        .map(report_problem)
        .collect();
    reports.extend(
        errors
            .into_iter()
            .filter(|e| match e {
                CheckError::UndefinedVariable { .. } | CheckError::UnusedVariable { .. } => {
                    !fragment && !broken
                }
                CheckError::MissingItem { .. } => !broken,
                CheckError::UnknownOverride { .. } => !fragment && mode == Mode::Single,
                _ => true,
            })
            .map(miette::Report::new),
    );
    let mut graph = None;
    let mut the_plan = None;
    let mut teacher = None;
    if !broken
        && !reports
            .iter()
            .any(|r| crate::diagnostics::is_error(r.as_ref()))
    {
        let (g, model_reports) = model::check_model(&recipe, &sources, loader);
        reports.extend(model_reports);
        if let Some(g) = &g {
            let planned = plan::plan(&recipe, g, &sources, loader);
            the_plan = planned.plan;
            teacher = planned.teacher;
            reports.extend(planned.reports);
        }
        graph = g;
    }
    Checked {
        recipe: (!broken).then_some(recipe),
        graph,
        plan: the_plan,
        teacher,
        sources,
        reports,
    }
}
