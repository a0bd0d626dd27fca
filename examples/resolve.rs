//! Using prunex as a library: load a recipe with its includes, resolve it,
//! and print either its diagnostics or the resolved recipe as YAML.
//!
//! `cargo run --example resolve -- recipes/resnet34-channels.prune`

use std::path::PathBuf;

use prunex::check::{check_path, Mode};
use prunex::diagnostics::render_human;
use prunex::syntax::FsLoader;

fn main() -> std::process::ExitCode {
    let Some(path) = std::env::args_os().nth(1).map(PathBuf::from) else {
        eprintln!("usage: resolve RECIPE.prune");
        return std::process::ExitCode::from(2);
    };
    let checked = check_path(&path, &FsLoader, &[], Mode::Single);
    for r in &checked.reports {
        eprint!("{}", render_human(r, false));
    }
    match checked.recipe {
        Some(recipe) if !checked.has_errors() => {
            print!(
                "{}",
                serde_yaml::to_string(&recipe).expect("a recipe serializes")
            );
            std::process::ExitCode::SUCCESS
        }
        _ => std::process::ExitCode::FAILURE,
    }
}
