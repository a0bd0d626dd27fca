//! The execution plan: a recipe resolved against its model graph — the
//! complete, typed contract between checking and executing. Every setting
//! the executor reads is here, with its default filled in once
//! ([`defaults`]); the executor reads nothing else of the recipe. Plain
//! data with a stable YAML dump (`prunex plan --yaml`), read by golden
//! tests, reviewers and watch mode.

use std::path::PathBuf;

use serde::{Serialize, Serializer};

pub use crate::data::Kind as DataKind;

/// Defaults of every setting a recipe may leave out, in one place.
pub mod defaults {
    /// Seed.
    pub const SEED: u64 = 0;
    /// Training batch size.
    pub const BATCH: u64 = 128;
    /// Evaluation batch size.
    pub const EVAL_BATCH: u64 = 1000;
    /// Learning rate.
    pub const LR: f64 = 0.01;
    /// Distillation temperature.
    pub const TEMPERATURE: f64 = 4.0;
    /// Weight of the distillation term.
    pub const ALPHA: f64 = 0.9;
    /// Taylor importance: batches of gradients gathered.
    pub const TAYLOR_BATCHES: u64 = 100;
    /// Wanda: calibration batches whose activations are measured.
    pub const WANDA_BATCHES: u64 = 16;
    /// Network Slimming's L1 strength on BatchNorm γ.
    pub const PENALTY: f64 = 1e-4;
}

/// Everything a run will do to the model, resolved and checked.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Plan {
    /// The recipe's name.
    pub recipe: String,
    /// The model.
    pub model: String,
    /// Its input `[C, H, W]`.
    pub input: [usize; 3],
    /// Parameters before pruning.
    pub params_before: u64,
    /// MACs per sample before pruning.
    pub macs_before: u64,
    /// The `--set` arguments it was made with (variables and settings).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub overrides: Vec<String>,
    /// Seed of data order, initialisation and `random` importance.
    pub seed: u64,
    /// Where the run happens.
    pub device: Device,
    /// In a distributed run, BatchNorm normalises over all ranks' batches
    /// (PyTorch's SyncBatchNorm) instead of each rank's own.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub sync_bn: bool,
    /// The starting weights; without them the model is trained first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weights: Option<PathBuf>,
    /// The data set and how it is fed.
    pub data: DataPlan,
    /// Dense training (only when no weights are given and it has epochs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pretrain: Option<Training>,
    /// Prune stages, in order.
    pub stages: Vec<Stage>,
    /// Distillation during fine-tuning.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub distill: Option<Distill>,
    /// Fine-tuning (only when it has epochs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finetune: Option<Training>,
    /// The folder results are written to.
    pub export: PathBuf,
}

/// Where the run happens.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Device {
    /// CUDA when available, else CPU.
    Auto,
    /// CPU.
    Cpu,
    /// A CUDA device by index.
    Cuda(usize),
}

/// Time units.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Unit {
    /// Epochs.
    Epochs,
    /// Optimizer steps.
    Steps,
}

/// The data set and how it is fed, defaults filled in.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DataPlan {
    /// Data set kind.
    pub kind: DataKind,
    /// Where it is.
    pub path: PathBuf,
    /// Training batch size (a training block's `batch` overrides it).
    pub batch: u64,
    /// Evaluation batch size.
    pub eval_batch: u64,
    /// Per-channel mean (one value: all channels).
    pub mean: Vec<f64>,
    /// Per-channel standard deviation.
    pub std: Vec<f64>,
    /// Random crop padding, in pixels (0: none).
    pub crop: u64,
    /// Random horizontal flip.
    pub flip: bool,
    /// Zero padding added to every image, in pixels per side.
    pub pad: u64,
    /// At most this many samples of each split.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<u64>,
}

/// A training stage (pretraining or fine-tuning), defaults filled in.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Training {
    /// Epochs.
    pub epochs: u64,
    /// Update rule.
    pub optimizer: Optimizer,
    /// Base learning rate.
    pub lr: f64,
    /// Weight decay (decoupled for AdamW, L2 otherwise).
    pub weight_decay: f64,
    /// How the learning rate moves over the stage.
    pub lr_schedule: LrSchedule,
    /// Linear warm-up.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warmup: Option<Warmup>,
    /// Per-layer learning-rate multipliers (module-name globs, in order).
    #[serde(skip_serializing_if = "Vec::is_empty", serialize_with = "ser_pairs")]
    pub lr_mult: Vec<(String, f64)>,
    /// Batch size.
    pub batch: u64,
}

fn ser_pairs<S: Serializer>(v: &[(String, f64)], s: S) -> Result<S::Ok, S::Error> {
    s.collect_map(v.iter().map(|(k, f)| (k, f)))
}

/// An update rule with its settings.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Optimizer {
    /// SGD with momentum.
    Sgd {
        /// Momentum.
        momentum: f64,
        /// Nesterov momentum.
        nesterov: bool,
    },
    /// Adam.
    Adam,
    /// AdamW (decoupled weight decay).
    AdamW,
}

/// A learning-rate schedule.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LrSchedule {
    /// Constant.
    Constant,
    /// Step decay.
    Step {
        /// Period.
        every: u64,
        /// Unit of the period.
        unit: Unit,
        /// Factor.
        gamma: f64,
    },
    /// Cosine annealing.
    Cosine {
        /// Final learning rate.
        min: f64,
    },
}

/// A linear warm-up.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Warmup {
    /// Length.
    pub length: u64,
    /// Unit of the length.
    pub unit: Unit,
}

/// Distillation, resolved.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Distill {
    /// The teacher.
    pub teacher: Teacher,
    /// Softmax temperature.
    pub temperature: f64,
    /// Weight of the distillation term (1 − alpha weighs the labels).
    pub alpha: f64,
}

/// The distillation teacher.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Teacher {
    /// The unpruned starting model.
    Dense,
    /// Another model, checked against the student before any tensor.
    Model {
        /// Zoo name or description file.
        model: String,
        /// Its weights (checked key by key); without them it is untrained.
        #[serde(skip_serializing_if = "Option::is_none")]
        weights: Option<PathBuf>,
        /// Its parameters.
        params: u64,
    },
}

/// What is pruned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Granularity {
    /// Single weights, by mask.
    Weights,
    /// N of every M consecutive input channels kept, by mask.
    NM {
        /// Kept.
        n: usize,
        /// Of.
        m: usize,
    },
    /// Coupled output channels, physically.
    Channels,
    /// Residual blocks with an identity shortcut.
    Blocks,
    /// Attention heads, physically.
    Heads,
}

impl Granularity {
    /// The coupled groups a stage of this granularity prunes: attention
    /// heads, or channels.
    pub fn group_kind(&self) -> crate::graph::GroupKind {
        match self {
            Granularity::Heads => crate::graph::GroupKind::Heads,
            _ => crate::graph::GroupKind::Channels,
        }
    }
}

impl std::fmt::Display for Granularity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Granularity::Weights => f.write_str("weights"),
            Granularity::NM { n, m } => write!(f, "{n}:{m}"),
            Granularity::Channels => f.write_str("channels"),
            Granularity::Blocks => f.write_str("blocks"),
            Granularity::Heads => f.write_str("heads"),
        }
    }
}

/// `Display` as the recipe language spells each value.
macro_rules! spelled {
    ($ty:ty { $($v:ident => $s:literal),* $(,)? }) => {
        impl std::fmt::Display for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(match self { $(<$ty>::$v => $s),* })
            }
        }
    };
}

spelled!(Criterion { L1 => "l1", L2 => "l2", BnScale => "bn_scale", Taylor => "taylor", Random => "random", Wanda => "wanda" });
spelled!(Aggregate { Sum => "sum", Mean => "mean", Max => "max" });
spelled!(Scope { Local => "local", Global => "global" });
spelled!(Curve { Linear => "linear", Cubic => "cubic", Exp => "exp" });

impl Serialize for Granularity {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Importance criteria.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Criterion {
    /// Σ|w|.
    L1,
    /// Σw².
    L2,
    /// BatchNorm |γ| only.
    BnScale,
    /// |w · gradient|, summed like L1.
    Taylor,
    /// Wanda (Sun et al., 2023): |w| times the L2 norm of the input
    /// feature it multiplies, over calibration batches; weights compete
    /// within their output row.
    Wanda,
    /// Uniform random scores (seeded).
    Random,
}

/// How a coupled channel's contributions combine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Aggregate {
    /// Sum over the places the channel occupies.
    Sum,
    /// Mean over them (Torch-Pruning's default).
    Mean,
    /// The largest one.
    Max,
}

/// Where importance is ranked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Each group or layer on its own.
    Local,
    /// One ranking across groups (or layers).
    Global,
}

/// How a gradual schedule moves from its first fraction to its last.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Curve {
    /// Evenly.
    Linear,
    /// Zhu & Gupta's cubic: fast first, slow last.
    Cubic,
    /// Geometric in what is kept.
    Exp,
}

/// One prune block.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Stage {
    /// What is pruned.
    pub granularity: Granularity,
    /// Importance criterion.
    pub importance: Criterion,
    /// How coupled channels' importance combines.
    pub aggregate: Aggregate,
    /// Where importance is ranked.
    pub scope: Scope,
    /// `scope … max`: no group or layer loses more than this.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    /// `scope … min`: every group or layer loses at least this.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    /// Channel counts are kept multiples of this.
    pub round_to: Option<usize>,
    /// Taylor importance: batches of gradients gathered; Wanda:
    /// calibration batches.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batches: Option<u64>,
    /// Network Slimming: L1 strength on BatchNorm γ while training.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub penalty: Option<f64>,
    /// When the fraction changes, and to what (the stage-wide fraction;
    /// each group or layer scales its final target by it).
    pub schedule: Vec<Step>,
    /// Channel groups (channels and blocks granularity).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<GroupPlan>,
    /// Layers (weights and N:M granularity).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub layers: Vec<LayerPlan>,
    /// Residual blocks that may be replaced by their identity (blocks
    /// granularity), and how many will be.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blocks: Option<BlocksPlan>,
    /// Predicted parameters after the last step (nonzero ones for masks).
    pub params_after: u64,
    /// Predicted MACs per sample after the last step (unchanged by masks:
    /// zeros do not speed up dense kernels).
    pub macs_after: u64,
    /// Whether `params_after` and `macs_after` are estimates: under global
    /// ranking, or when blocks of different sizes compete, the weights
    /// decide at run time which groups or blocks lose most.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub estimate: bool,
}

impl Stage {
    /// The stage-wide fraction its schedule ends at.
    pub fn end(&self) -> f64 {
        self.schedule.last().map_or(0.0, |s| s.fraction)
    }
}

/// A point of a schedule.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Step {
    /// When.
    pub at: u64,
    /// In what unit.
    pub unit: Unit,
    /// The stage-wide fraction removed from then on.
    pub fraction: f64,
    /// How far toward each layer's or group's own final target this step
    /// goes, when the stage has no stage-wide fraction to scale by
    /// (per-layer rules only): k/N at round k of `iterative N steps`, 1 for
    /// a one-step schedule.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub progress: Option<f64>,
}

impl Step {
    /// The fine-tuning epoch before which this step runs (0: before
    /// fine-tuning): its epoch, or the epoch its step falls in.
    pub fn epoch(&self, steps_per_epoch: u64) -> u64 {
        match self.unit {
            Unit::Epochs => self.at,
            Unit::Steps => self.at / steps_per_epoch.max(1),
        }
    }

    /// The fraction a layer or group whose final target is `target` (of a
    /// stage ending at `end`) removes at this step.
    pub fn scale(&self, target: &Target, end: f64) -> f64 {
        let t = target.fraction(end);
        match self.progress {
            Some(p) => t * p,
            // At the stage's end the factor is exactly 1: the target
            // itself, as Torch-Pruning counts it.
            None if end > 0.0 => t * (self.fraction / end),
            None => t,
        }
    }

    /// What this step removes, as people read it: the stage-wide fraction,
    /// or how far toward each layer's own target.
    pub fn amount(&self) -> String {
        match self.progress {
            Some(p) => format!("{}% of each target", (p * 1000.0).round() / 10.0),
            None => self.fraction.to_string(),
        }
    }
}

/// What happens to one coupled group.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct GroupPlan {
    /// Group index (as `prunex inspect --groups` shows).
    pub group: usize,
    /// Layers whose output channels it prunes.
    pub layers: Vec<String>,
    /// What couples them (add, concat, mul, depthwise convolutions).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub coupled_by: Vec<String>,
    /// Coupled channels.
    pub channels: usize,
    /// Channels pruned together (one per convolution group where grouped
    /// convolutions split the channels, else 1): counts move in steps of it.
    #[serde(skip_serializing_if = "is_one")]
    pub unit: usize,
    /// Query heads per pruned unit, in a group of heads with grouped-query
    /// attention (a unit is a key/value head and the query heads it
    /// serves); 1 otherwise.
    #[serde(skip_serializing_if = "is_one")]
    pub heads_per_unit: usize,
    /// The target.
    pub target: Target,
    /// Channels kept after the last step (for local scope; global ranking
    /// decides at run time within the caps).
    pub keep: Option<usize>,
    /// When `round_to`, a cap or a floor moved the count of channels kept
    /// away from Torch-Pruning's `int(n · (1 − ratio))`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rounded: Option<Rounding>,
    /// The group's fraction removed at each schedule step: its final target
    /// scaled by the stage's progress.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<f64>,
    /// The recipe lines that set the target.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub set_by: Vec<String>,
}

/// A count of channels kept that rounding toward a bound moved.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Rounding {
    /// What `int(n · (1 − ratio))` alone keeps.
    pub from: usize,
    /// What moved it.
    pub by: RoundedBy,
}

/// What moved a count of channels kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RoundedBy {
    /// A multiple of `round_to`.
    RoundTo,
    /// A cap (`max`, `<=`): never more than it is removed.
    Cap,
    /// A floor (`min`, `>=`): never less than it is removed.
    Floor,
}

impl Rounding {
    /// As people read it, next to the count kept.
    pub fn describe(&self) -> String {
        let by = match self.by {
            RoundedBy::RoundTo => "round_to",
            RoundedBy::Cap => "the cap",
            RoundedBy::Floor => "the floor",
        };
        format!("{} before {by}", self.from)
    }
}

/// Block pruning.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BlocksPlan {
    /// Blocks with an identity shortcut, not ignored.
    pub candidates: Vec<String>,
    /// How many are removed at the last step, least important first.
    pub remove: usize,
}

/// What happens to one layer under masks.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LayerPlan {
    /// The layer.
    pub layer: String,
    /// Weights in it.
    pub weights: u64,
    /// The target.
    pub target: Target,
    /// The recipe lines that set the target.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub set_by: Vec<String>,
}

/// A group's or layer's final fraction removed.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    /// Exactly this.
    Exact(f64),
    /// The stage's fraction, but at most this.
    AtMost(f64),
    /// The stage's fraction, but at least this.
    AtLeast(f64),
    /// The stage's fraction.
    Stage(f64),
    /// Not pruned: named in `ignore`, or coupled with a layer that is.
    Ignored,
    /// Not prunable, with the reason.
    Frozen(String),
}

impl Target {
    /// The final fraction removed under a stage fraction.
    pub fn fraction(&self, stage: f64) -> f64 {
        match *self {
            Target::Exact(x) => x,
            Target::AtMost(x) => stage.min(x),
            Target::AtLeast(x) => stage.max(x),
            Target::Stage(x) => x,
            Target::Ignored | Target::Frozen(_) => 0.0,
        }
    }

    /// As people read it.
    pub fn describe(&self) -> String {
        match self {
            Target::Exact(x) => format!("{x}"),
            Target::AtMost(x) => format!("≤ {x}"),
            Target::AtLeast(x) => format!("≥ {x}"),
            Target::Stage(x) => format!("{x} (stage)"),
            Target::Ignored => "ignored".into(),
            Target::Frozen(why) => format!("frozen: {why}"),
        }
    }
}

impl Plan {
    /// The stable text dump.
    pub fn to_yaml(&self) -> String {
        crate::yaml::to_string(self)
    }
}

fn is_one(n: &usize) -> bool {
    *n == 1
}

/// Layer names as people read them in a table or a message: all of them up
/// to three, else `a, b … z (n layers)`.
pub fn shorten_layers<S: AsRef<str>>(names: &[S]) -> String {
    let n = names.len();
    match n {
        0..=3 => names
            .iter()
            .map(AsRef::as_ref)
            .collect::<Vec<_>>()
            .join(", "),
        _ => format!(
            "{}, {} … {} ({n} layers)",
            names[0].as_ref(),
            names[1].as_ref(),
            names[n - 1].as_ref()
        ),
    }
}
