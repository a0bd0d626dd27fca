//! The `prunex` command. Everything lives in the library; see `prunex::cli`.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = prunex::cli::Cli::parse();
    ExitCode::from(prunex::cli::run(cli))
}
