//! The arguments of `prunex run`. `prunex` parses them and starts
//! `prunex-exec run` with the same ones, so both binaries share this one
//! definition (and the executor needs nothing of `cli/`).

use std::path::PathBuf;

/// The arguments of `prunex run`, shared with the executor's `run` (which
/// `prunex run` starts with the same arguments).
#[derive(Clone, Debug, clap::Args)]
pub struct RunArgs {
    /// The recipe.
    pub recipe: PathBuf,
    /// Override a variable or a setting: --set name=value, --set finetune.epochs=1,
    /// --set data.batch=64, --set prune.1.ratio=0.3 (repeatable).
    #[arg(long = "set", value_name = "NAME=VALUE")]
    pub set: Vec<String>,
    /// CPU threads for libtorch (default: libtorch's choice).
    #[arg(long)]
    pub threads: Option<i32>,
    /// Continue from the last saved checkpoint (every epoch, and where
    /// Ctrl-C stopped). Without it, only the dense model (pretraining and
    /// its evaluation) comes from the cache.
    #[arg(long, conflicts_with = "fresh")]
    pub resume: bool,
    /// Take nothing from the cache: pretrain, prune and fine-tune anew.
    #[arg(long)]
    pub fresh: bool,
    /// Train on N local processes (data-parallel, c10d's Gloo on the CPU or
    /// NCCL on one GPU each); the recipe's `batch` is per process. Under
    /// `torchrun` or `srun`, leave it out: their variables say the rest.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub nproc: Option<u16>,
}
