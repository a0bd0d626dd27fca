//! `prunex version`: prunex's version, and what the executor sees of libtorch
//! and CUDA.

use std::process::Command;

use super::{OK, TROUBLE};

/// The executor binary that holds libtorch, installed beside `prunex`.
pub fn exec_path() -> std::io::Result<std::path::PathBuf> {
    let me = std::env::current_exe()?;
    Ok(me.with_file_name(format!("prunex-exec{}", std::env::consts::EXE_SUFFIX)))
}

/// Runs the subcommand.
pub fn run() -> u8 {
    println!("prunex {}", env!("CARGO_PKG_VERSION"));
    let exec = match exec_path() {
        Ok(p) if p.exists() => p,
        Ok(p) => {
            eprintln!(
                "error[prunex::cli::no_executor]: the executor {} is missing; build it with `cargo build --release` (it is part of the prunex package)",
                p.display()
            );
            return TROUBLE;
        }
        Err(e) => {
            eprintln!("error[prunex::cli::no_executor]: cannot locate the prunex binary: {e}");
            return TROUBLE;
        }
    };
    match Command::new(&exec).arg("version").status() {
        Ok(s) if s.success() => OK,
        Ok(s) => {
            eprintln!(
                "error[prunex::cli::executor_failed]: {} version exited with {s}",
                exec.display()
            );
            TROUBLE
        }
        Err(e) => {
            eprintln!(
                "error[prunex::cli::executor_failed]: cannot start {}: {e}",
                exec.display()
            );
            TROUBLE
        }
    }
}
