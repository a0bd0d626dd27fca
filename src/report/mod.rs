//! What a run reports: per-epoch metrics, per-layer shapes and counts before
//! and after, what the results follow from (the lock), and wall-clock
//! timings kept apart from the deterministic report. Plain data, written as
//! report.yaml/json and timings.yaml by the executor and shown as a table
//! ([`text`]).

pub mod chart;
pub mod html;
pub mod schedule;
pub mod text;

use serde::{Deserialize, Serialize};

use crate::plan::Plan;

/// Metrics of one epoch (deterministic: same seed, device and threads →
/// same numbers).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EpochReport {
    /// `pretrain` or `finetune`.
    pub stage: String,
    /// 1-based epoch.
    pub epoch: u64,
    /// Mean training loss.
    pub loss: f64,
    /// Training accuracy.
    pub train_accuracy: f64,
    /// Test accuracy after the epoch.
    pub test_accuracy: f64,
    /// Fraction of conv/linear weights that are zero or removed, relative to the dense model.
    pub sparsity: f64,
}

/// Wall-clock measurements, kept apart from the deterministic report.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Timings {
    /// Training epochs: stage, epoch, seconds, images per second.
    pub epochs: Vec<(String, u64, f64, f64)>,
    /// Inference latency of the dense model.
    pub dense: Option<Latency>,
    /// Inference latency of the pruned model.
    pub pruned: Option<Latency>,
    /// libtorch CPU threads.
    pub threads: i32,
}

/// Median inference latency in milliseconds.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
pub struct Latency {
    /// Batch of 1.
    pub batch1_ms: f64,
    /// Batch of [`LATENCY_BATCH`].
    pub batch64_ms: f64,
}

/// The larger batch latency is measured at.
pub const LATENCY_BATCH: i64 = 64;

/// One conv or linear layer before and after.
#[derive(Clone, Debug, Serialize)]
pub struct LayerReport {
    /// Module path.
    pub layer: String,
    /// Weight shape before.
    pub shape_before: Vec<usize>,
    /// Weight shape after (absent when a block was removed).
    pub shape_after: Option<Vec<usize>>,
    /// Weights zero or removed, relative to before.
    pub sparsity: f64,
    /// Parameters before and after.
    pub params: (u64, u64),
    /// MACs per sample before and after.
    pub macs: (u64, u64),
}

/// What a run's results follow from: hashes (BLAKE3) of its inputs.
#[derive(Clone, Debug, Serialize)]
pub struct Lock {
    /// The recipe and every file it includes.
    pub recipe: String,
    /// The resolved plan.
    pub plan: String,
    /// The model architecture (its YAML description).
    pub model: String,
    /// The weights file, when the recipe names one.
    pub weights: Option<String>,
    /// The data (every image and label of both splits).
    pub data: String,
    /// Seed.
    pub seed: u64,
    /// prunex version.
    pub prunex: String,
    /// libtorch version.
    pub libtorch: String,
}

/// The run report written as report.yaml and report.json.
#[derive(Clone, Debug, Serialize)]
pub struct RunReport {
    /// Recipe name.
    pub recipe: String,
    /// The device used.
    pub device: String,
    /// What the results follow from.
    pub lock: Lock,
    /// Test accuracy of the dense model.
    pub dense_accuracy: f64,
    /// Right after the pruning before fine-tuning, when there is one.
    pub pruned_accuracy: Option<f64>,
    /// After fine-tuning.
    pub final_accuracy: f64,
    /// Parameters before and after.
    pub params: (u64, u64),
    /// MACs per sample before and after.
    pub macs: (u64, u64),
    /// Fraction of conv/linear weights zero or removed.
    pub sparsity: f64,
    /// Per-epoch metrics.
    pub epochs: Vec<EpochReport>,
    /// Per conv/linear layer: shapes, sparsity, params and MACs before and after.
    pub layers: Vec<LayerReport>,
    /// The plan that was run.
    pub plan: Plan,
    /// Wall-clock measurements (also written apart, as timings.yaml).
    #[serde(skip)]
    pub timings: Timings,
}
