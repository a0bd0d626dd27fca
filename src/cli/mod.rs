//! The command line: one module per subcommand.

mod cache;
mod check;
mod diff;
mod fmt;
pub mod inspect;
pub(crate) mod launch;
mod plan;
mod run;
mod sensitivity;
mod version;
mod watch;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand, ValueEnum};

/// Exit code for success.
pub const OK: u8 = 0;
/// Exit code when the input has errors (a bad recipe, a file that needs formatting).
pub const FAILED: u8 = 1;
/// Exit code when prunex itself could not do the work (I/O, a missing executor).
pub const TROUBLE: u8 = 2;

/// Declarative neural-network pruning.
#[derive(Debug, Parser)]
#[command(name = "prunex", version, about, long_about = None)]
pub struct Cli {
    /// The subcommand.
    #[command(subcommand)]
    pub command: Command,
}

/// Output formats for diagnostics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Rendered for people, on stderr.
    Human,
    /// One JSON object per diagnostic per line, on stdout.
    Json,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Parse and check recipes; report every problem at once.
    Check {
        /// Recipe files or folders (searched for *.prune).
        #[arg(default_value = ".")]
        paths: Vec<PathBuf>,
        /// Override a variable or a setting: --set name=value, --set finetune.epochs=1,
        /// --set data.batch=64, --set prune.1.ratio=0.3 (repeatable).
        #[arg(long = "set", value_name = "NAME=VALUE")]
        set: Vec<String>,
        /// How to print diagnostics.
        #[arg(long, value_enum, default_value_t = Format::Human)]
        format: Format,
        /// Treat warnings as errors.
        #[arg(long)]
        deny_warnings: bool,
    },
    /// Format recipes canonically (comments kept, meaning unchanged).
    Fmt {
        /// Recipe files or folders (searched for *.prune).
        #[arg(default_value = ".")]
        paths: Vec<PathBuf>,
        /// Do not write; fail and show a diff when a file is not formatted.
        #[arg(long)]
        check: bool,
    },
    /// Run a recipe: train (if needed), prune, fine-tune, export.
    Run(RunArgs),
    /// Re-check a recipe on every save of it or of any file it includes, and
    /// re-run it from the first stage the edit changed.
    Watch {
        /// The recipe.
        recipe: PathBuf,
        /// Override a variable or a setting: --set name=value, --set finetune.epochs=1,
        /// --set data.batch=64, --set prune.1.ratio=0.3 (repeatable).
        #[arg(long = "set", value_name = "NAME=VALUE")]
        set: Vec<String>,
        /// CPU threads for libtorch.
        #[arg(long)]
        threads: Option<i32>,
        /// Only check on save; do not run.
        #[arg(long)]
        check_only: bool,
    },
    /// Show how two recipes' resolved plans differ: per-layer targets,
    /// schedules, distillation, training.
    Diff {
        /// The old recipe (or REV:PATH for a git revision, e.g. HEAD~1:recipes/a.prune).
        old: String,
        /// The new recipe (or REV:PATH).
        new: String,
    },
    /// The stage cache (pretrained models, checkpoints).
    Cache {
        /// What to do.
        #[command(subcommand)]
        action: CacheAction,
    },
    /// Show what a recipe will do to its model: groups, targets, the recipe
    /// line behind each, predicted params and MACs.
    Plan {
        /// The recipe.
        recipe: PathBuf,
        /// Override a variable or a setting: --set name=value, --set finetune.epochs=1,
        /// --set data.batch=64, --set prune.1.ratio=0.3 (repeatable).
        #[arg(long = "set", value_name = "NAME=VALUE")]
        set: Vec<String>,
        /// Print the stable YAML dump instead of tables.
        #[arg(long)]
        yaml: bool,
        /// Plan for N data-parallel processes (`prunex run --nproc N`): the
        /// batch is per process. Under torchrun or srun their variables
        /// say it.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
        nproc: Option<u16>,
    },
    /// Prune each group (or layer) of the recipe's first prune stage alone
    /// at a range of ratios and measure the accuracy lost; with a budget
    /// (`--target-macs 0.5`), choose per-group ratios that meet it with the
    /// least summed loss and write them as a recipe fragment.
    Sensitivity(crate::invocation::SensitivityArgs),
    /// Show a model's layers, output shapes, parameters and MACs.
    Inspect {
        /// A zoo model (resnet18, ...) or a YAML model description.
        model: String,
        /// Input shape C,H,W (default: the model's).
        #[arg(long, value_parser = inspect::parse_input, value_name = "C,H,W")]
        input: Option<[usize; 3]>,
        /// Number of classes (zoo models).
        #[arg(long)]
        classes: Option<usize>,
        /// Check a weights file (safetensors or .pt) against the model.
        #[arg(long, value_name = "FILE")]
        weights: Option<PathBuf>,
        /// Print the model as a YAML description instead.
        #[arg(long)]
        yaml: bool,
        /// Show the coupled channel groups instead of the layers.
        #[arg(long)]
        groups: bool,
    },
    /// Print prunex's version, libtorch's, and CUDA/cuDNN availability.
    Version,
}

pub use crate::invocation::RunArgs;

/// `prunex cache` subcommands.
#[derive(Debug, Subcommand)]
pub enum CacheAction {
    /// Where the cache is, its entries and size.
    Info,
    /// Remove every entry.
    Clean,
}

/// Runs a parsed command line and returns the process exit code.
pub fn run(cli: Cli) -> u8 {
    match cli.command {
        Command::Check {
            paths,
            set,
            format,
            deny_warnings,
        } => check::run(&paths, &set, format, deny_warnings),
        Command::Fmt { paths, check } => fmt::run(&paths, check),
        Command::Inspect {
            model,
            input,
            classes,
            weights,
            yaml,
            groups,
        } => inspect::run(&model, input, classes, weights, yaml, groups),
        Command::Plan {
            recipe,
            set,
            yaml,
            nproc,
        } => plan::run(&recipe, &set, yaml, nproc),
        Command::Run(a) => match a.nproc {
            Some(n) if n > 1 => launch::launch(&a, n as usize),
            _ => run::run(&a.recipe, &a.set, a.threads, a.resume, a.fresh),
        },
        Command::Watch {
            recipe,
            set,
            threads,
            check_only,
        } => watch::run(&recipe, &set, threads, check_only),
        Command::Diff { old, new } => diff::run(&old, &new),
        Command::Cache { action } => cache::run(action),
        Command::Version => version::run(),
        Command::Sensitivity(a) => sensitivity::run(&a),
    }
}

/// Parses `--set` arguments, printing the first bad one.
pub(crate) fn overrides(set: &[String], color: bool) -> Option<Vec<crate::check::Override>> {
    let mut out = Vec::new();
    for s in set {
        match crate::check::parse_override(s) {
            Ok(o) => out.push(o),
            Err(e) => {
                eprint!(
                    "{}",
                    crate::diagnostics::render_human(&miette::Report::new(*e), color)
                );
                return None;
            }
        }
    }
    Some(out)
}

/// Whether to color output on stderr.
pub(crate) fn color() -> bool {
    std::env::var_os("NO_COLOR").is_none() && std::io::stderr().is_terminal()
}

/// The recipe files named by `paths`: files as given, folders searched
/// recursively for `*.prune` (hidden folders and `target/` skipped), sorted.
/// A file that does not exist is kept, so that loading it reports
/// `prunex::syntax::unreadable`; a folder with no recipes is an error.
pub(crate) fn recipe_files(paths: &[PathBuf]) -> Result<Vec<(PathBuf, bool)>, String> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut found: Vec<PathBuf> = walkdir::WalkDir::new(p)
                .into_iter()
                .filter_entry(|e| {
                    let name = e.file_name().to_string_lossy();
                    e.depth() == 0 || !(name.starts_with('.') || name == "target")
                })
                .filter_map(Result::ok)
                .filter(|e| {
                    e.file_type().is_file() && e.path().extension().is_some_and(|x| x == "prune")
                })
                .map(|e| clean(e.path()))
                .collect();
            found.sort();
            if found.is_empty() {
                return Err(format!(
                    "no recipes (*.prune files) under {}; name a recipe file or a folder that holds some",
                    p.display()
                ));
            }
            out.extend(found.into_iter().map(|f| (f, true)));
        } else {
            out.push((p.clone(), false));
        }
    }
    Ok(out)
}

fn clean(p: &Path) -> PathBuf {
    p.strip_prefix("./").unwrap_or(p).to_path_buf()
}
