//! Check: a loaded recipe to a resolved, validated [`Recipe`]. Every recipe
//! diagnostic past syntax is born here (`prunex::check::*`).

pub mod diag;
pub mod model;
pub mod plan;
pub mod preflight;
pub mod recipe;
pub mod settings;

pub use diag::CheckError;
pub use recipe::{parse_override, resolve, Override, Recipe};

use std::collections::BTreeSet;
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
    // `--set` on a setting is a one-statement fragment, parsed like a file.
    let declared: BTreeSet<String> = unresolved
        .items
        .iter()
        .filter_map(|i| match &i.node {
            crate::syntax::ast::Item::Let { name, .. } => Some(name.node.clone()),
            _ => None,
        })
        .collect();
    let (settings, variables): (Vec<Override>, Vec<Override>) = overrides
        .iter()
        .cloned()
        .partition(|o| recipe::patch::is_setting(o, &declared));
    let mut patches = Vec::new();
    let mut patch_reports = Vec::new();
    if !unresolved.sources.files().is_empty() {
        for o in &settings {
            match recipe::patch::fragment(o) {
                Ok((target, text)) => {
                    let id = unresolved
                        .sources
                        .add(format!("--set {}", o.arg), None, text);
                    let parsed = crate::syntax::parse(unresolved.sources.get(id));
                    patch_reports.extend(parsed.errors.into_iter().map(miette::Report::new));
                    patches.extend(parsed.file.items.into_iter().map(|item| {
                        recipe::patch::Patch {
                            target,
                            item,
                            arg: o.arg.clone(),
                        }
                    }));
                }
                Err(reason) => patch_reports.push(miette::Report::new(CheckError::BadOverride {
                    text: o.arg.clone(),
                    reason,
                })),
            }
        }
    }
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
    let broken = unresolved.has_errors() || !patch_reports.is_empty();
    let (recipe, errors) = resolve(&unresolved, &variables, &patches);
    let fragment = !recipe.is_recipe();
    let mut reports: Vec<miette::Report> = std::mem::take(&mut unresolved.problems)
        .into_iter()
        .map(report_problem)
        .collect();
    reports.extend(patch_reports);
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
            the_plan = planned.plan.map(|mut p| {
                p.overrides = overrides.iter().map(|o| o.arg.clone()).collect();
                p
            });
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
