//! The `prunex` command. Everything lives in the library; see `prunex::cli`.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // Like any Unix filter, stop quietly when the reader goes away
    // (`prunex plan recipe.prune | head`) instead of panicking on EPIPE.
    // SAFETY: setting a signal's disposition to its default before any
    // thread starts has no other effect.
    #[cfg(unix)]
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = prunex::cli::Cli::parse();
    ExitCode::from(prunex::cli::run(cli))
}
