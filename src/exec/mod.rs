//! The libtorch executor. This module is compiled into the `prunex-exec`
//! binary (and tests that run tensors), never into the prunex library, so the
//! `prunex` front end never loads libtorch (see build.rs).

pub mod convert;
pub mod dist;
pub mod loss;
pub mod model;
pub mod optim;
pub mod run;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// The executor's command line (started by `prunex`, not by users).
#[derive(Debug, Parser)]
#[command(
    name = "prunex-exec",
    version,
    about = "prunex's libtorch executor (started by prunex)"
)]
pub struct ExecCli {
    /// What to do.
    #[command(subcommand)]
    pub command: ExecCommand,
}

/// Executor subcommands.
#[derive(Debug, Subcommand)]
pub enum ExecCommand {
    /// Print libtorch's version and what it sees of CUDA and cuDNN.
    Version,
    /// Run a recipe.
    Run(prunex::invocation::RunArgs),
    /// Measure the sensitivity of the recipe's first prune stage.
    Sensitivity(prunex::invocation::SensitivityArgs),
}

/// Ctrl-C: finish the batch, save, exit; a second Ctrl-C exits at once
/// (outputs and cache entries are written atomically). `_exit`, not
/// `exit`: running C++ static destructors under the training thread made
/// libtorch fail mid-operation ("Invalid (backend, op) pair") and print
/// that instead of exiting.
fn on_ctrl_c() {
    let _ = ctrlc::set_handler(|| {
        if run::CANCEL.swap(true, std::sync::atomic::Ordering::SeqCst) {
            // SAFETY: _exit(2) ends the process without running anything
            // else; every output is already complete on disk.
            unsafe { libc::_exit(130) }
        }
    });
}

fn fail(e: impl miette::Diagnostic + Send + Sync + 'static, code: u8) -> ExitCode {
    let report = miette::Report::new(e);
    eprint!("{}", prunex::diagnostics::render_human(&report, color()));
    ExitCode::from(code)
}

/// Whether to color output on stderr.
pub fn color() -> bool {
    use std::io::IsTerminal;
    std::env::var_os("NO_COLOR").is_none() && std::io::stderr().is_terminal()
}

/// What libtorch reports about this machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TorchInfo {
    /// libtorch version prunex was built against.
    pub libtorch: &'static str,
    /// Where that libtorch is.
    pub lib_dir: &'static str,
    /// Whether CUDA is usable.
    pub cuda: bool,
    /// Number of CUDA devices.
    pub cuda_devices: i64,
    /// Whether cuDNN is usable.
    pub cudnn: bool,
    /// Intra-op CPU threads.
    pub threads: i32,
}

/// Asks libtorch what it sees.
pub fn torch_info() -> TorchInfo {
    TorchInfo {
        libtorch: env!("PRUNEX_LIBTORCH_VERSION"),
        lib_dir: env!("PRUNEX_LIBTORCH_LIB_DIR"),
        cuda: tch::Cuda::is_available(),
        cuda_devices: tch::Cuda::device_count(),
        cudnn: tch::Cuda::cudnn_is_available(),
        threads: tch::get_num_threads(),
    }
}

/// Keeps freed tensor memory in the process instead of returning it to the
/// kernel after every step. glibc serves large blocks (activations, gradients)
/// with `mmap` and unmaps them on free, so each training step faults the
/// same pages in again; with both thresholds raised they are reused. Peak
/// memory is what the largest step needs either way.
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; called once at
    // start-up before any other thread exists.
    unsafe {
        // 32 MiB is the largest mmap threshold glibc accepts.
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
    }
}

/// Entry point of `prunex-exec`.
pub fn main() -> ExitCode {
    if std::env::var_os("PRUNEX_MALLOC_DEFAULTS").is_none() {
        keep_freed_memory();
    }
    let cli = ExecCli::parse();
    match cli.command {
        ExecCommand::Version => {
            let i = torch_info();
            println!("libtorch {} ({})", i.libtorch, i.lib_dir);
            if i.cuda {
                println!("cuda: available, {} device(s)", i.cuda_devices);
            } else {
                println!("cuda: not available (running on CPU)");
            }
            println!(
                "cudnn: {}",
                if i.cudnn {
                    "available"
                } else {
                    "not available"
                }
            );
            println!("cpu threads: {}", i.threads);
            // What `--nproc`, torchrun and srun can train with.
            println!(
                "distributed: gloo (CPU){}",
                if cfg!(prunex_nccl) {
                    ", nccl (CUDA)"
                } else {
                    "; no nccl (this libtorch has no CUDA, or its headers were missing at build time)"
                }
            );
            ExitCode::SUCCESS
        }
        ExecCommand::Run(prunex::invocation::RunArgs {
            recipe,
            set,
            threads,
            resume,
            fresh,
            nproc: _,
        }) => {
            if let Some(n) = threads.filter(|&n| n > 0) {
                tch::set_num_threads(n);
            }
            on_ctrl_c();
            let opts = run::Options {
                reuse: if resume {
                    run::Reuse::Resume
                } else if fresh {
                    run::Reuse::Fresh
                } else {
                    run::Reuse::Dense
                },
                cache: prunex::cache::Cache::from_env(),
                progress: true,
            };
            match run::run(&recipe, &set, &opts) {
                Ok(_) => ExitCode::SUCCESS,
                Err(e) => exit_code(e),
            }
        }
        ExecCommand::Sensitivity(a) => {
            if let Some(n) = a.threads.filter(|&n| n > 0) {
                tch::set_num_threads(n);
            }
            on_ctrl_c();
            let opts = run::Options {
                reuse: run::Reuse::Dense,
                cache: prunex::cache::Cache::from_env(),
                progress: true,
            };
            let s = run::sensitivity::Options {
                ratios: a.ratios(),
                batches: a.batches,
                budget: a.budget(),
                objective: a.objective,
                out: a.out.clone(),
            };
            match run::sensitivity::sensitivity(&a.recipe, &a.set, &opts, &s) {
                Ok(_) => ExitCode::SUCCESS,
                Err(e) => exit_code(e),
            }
        }
    }
}

/// How a failed run or analysis ends: its diagnostic, and 1 (the input),
/// 130 (interrupted) or 3 (another rank failed first).
fn exit_code(e: run::RunError) -> ExitCode {
    match e {
        // Its diagnostics were printed.
        run::RunError::Invalid => ExitCode::from(1),
        e @ (run::RunError::Interrupted { .. } | run::RunError::ProbesInterrupted { .. }) => {
            fail(e, 130)
        }
        // Another rank failed first: its message is the one that matters,
        // and the launcher tells the two apart by this code.
        e @ run::RunError::Dist(dist::DistError::PeerLost { .. }) => {
            fail(e, prunex::distributed::PEER_LOST_EXIT)
        }
        e => fail(e, 1),
    }
}
