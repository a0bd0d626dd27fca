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

/// The arguments of `prunex sensitivity`, shared with the executor's
/// `sensitivity` (which `prunex sensitivity` starts with the same ones).
#[derive(Clone, Debug, clap::Args)]
pub struct SensitivityArgs {
    /// The recipe: its first prune stage is measured.
    pub recipe: PathBuf,
    /// Override a variable or a setting, as for `prunex run` (repeatable).
    #[arg(long = "set", value_name = "NAME=VALUE")]
    pub set: Vec<String>,
    /// Fractions removed, comma-separated [default: 0.1,0.2,…,0.9].
    #[arg(long, value_delimiter = ',', value_name = "R,R,…")]
    pub ratios: Vec<f64>,
    /// Test batches (of the recipe's `eval_batch`) each probe is evaluated on.
    #[arg(long, default_value_t = crate::sensitivity::DEFAULT_BATCHES,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub batches: u64,
    /// Solve for MACs at most this fraction of the dense model's (0.5: 2×
    /// fewer) and write the ratios as a recipe fragment.
    #[arg(long, value_name = "FRACTION", group = "budget")]
    pub target_macs: Option<f64>,
    /// Solve for parameters (nonzero ones under masks) at most this fraction.
    #[arg(long, value_name = "FRACTION", group = "budget")]
    pub target_params: Option<f64>,
    /// Solve for a latency at batch 64, measured here, at most this
    /// fraction of the dense model's.
    #[arg(long, value_name = "FRACTION", group = "budget")]
    pub target_latency: Option<f64>,
    /// What the budget solver minimises, summed over the groups' curves:
    /// the evaluation loss's increase, or the accuracy points lost.
    #[arg(long, value_enum, default_value_t)]
    pub objective: crate::sensitivity::solve::Objective,
    /// Where the results go [default: the recipe's export folder, `sensitivity/`].
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// CPU threads for libtorch (default: libtorch's choice).
    #[arg(long)]
    pub threads: Option<i32>,
}

impl SensitivityArgs {
    /// The ratios asked for, or the default ones.
    pub fn ratios(&self) -> Vec<f64> {
        if self.ratios.is_empty() {
            crate::sensitivity::DEFAULT_RATIOS.to_vec()
        } else {
            self.ratios.clone()
        }
    }

    /// The budget asked for.
    pub fn budget(&self) -> Option<crate::sensitivity::solve::Budget> {
        use crate::sensitivity::solve::Budget;
        self.target_macs
            .map(Budget::Macs)
            .or(self.target_params.map(Budget::Params))
            .or(self.target_latency.map(Budget::Latency))
    }

    /// The same arguments on a command line (for the executor).
    pub fn to_args(&self) -> Vec<std::ffi::OsString> {
        let mut a: Vec<std::ffi::OsString> = vec![self.recipe.clone().into()];
        for s in &self.set {
            a.push("--set".into());
            a.push(s.into());
        }
        if !self.ratios.is_empty() {
            let r: Vec<String> = self.ratios.iter().map(|r| r.to_string()).collect();
            a.push(format!("--ratios={}", r.join(",")).into());
        }
        a.push(format!("--batches={}", self.batches).into());
        for (flag, v) in [
            ("--target-macs", self.target_macs),
            ("--target-params", self.target_params),
            ("--target-latency", self.target_latency),
        ] {
            if let Some(v) = v {
                a.push(format!("{flag}={v}").into());
            }
        }
        if let Some(v) = clap::ValueEnum::to_possible_value(&self.objective) {
            a.push(format!("--objective={}", v.get_name()).into());
        }
        if let Some(o) = &self.out {
            a.push("--out".into());
            a.push(o.clone().into());
        }
        if let Some(t) = self.threads {
            a.push(format!("--threads={t}").into());
        }
        a
    }
}
