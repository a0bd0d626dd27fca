//! Resolving an [`UnresolvedRecipe`] into a [`Recipe`]: variables substituted
//! (with `--set` overrides), values checked for kind and range, and the
//! settings of all files merged.
//!
//! Merging: items take effect in order, an include's items where the include
//! stands. A later `seed`, `device`, `model`, `data`, `export` replaces an
//! earlier one; a later `pretrain`, `finetune` or `distill` block overrides
//! the earlier one setting by setting (so a shared fragment can hold the
//! optimizer and a recipe only its epochs); every `prune` block is its own
//! stage. Within one file, a single-valued item given twice is an error.

pub mod patch;
mod resolve;
mod values;
mod vars;

pub use resolve::resolve;
pub use vars::{parse_override, Override};

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Serialize;

use crate::data::Kind as DataKind;
pub use crate::plan::{Aggregate, Criterion, Curve, Device, Granularity, LrSchedule, Scope, Unit};
use crate::syntax::ast;
use crate::syntax::{Span, Spanned};

/// The model and its weights.
#[derive(Clone, Debug, Serialize)]
pub struct ModelSpec {
    /// Zoo name or description file.
    #[serde(serialize_with = "ser_node")]
    pub source: Spanned<ast::ModelSource>,
    /// Input shape `[C, H, W]`.
    #[serde(serialize_with = "ser_opt_node")]
    pub input: Option<Spanned<Vec<u64>>>,
    /// Number of classes.
    #[serde(serialize_with = "ser_opt_node")]
    pub classes: Option<Spanned<u64>>,
    /// Weights file (absolute, or relative to the file that names it).
    #[serde(serialize_with = "ser_opt_node")]
    pub weights: Option<Spanned<PathBuf>>,
}

/// The data set and how it is fed.
#[derive(Clone, Debug, Serialize)]
pub struct DataSpec {
    /// Data set kind.
    #[serde(serialize_with = "ser_node")]
    pub kind: Spanned<DataKind>,
    /// Where it is.
    #[serde(serialize_with = "ser_node")]
    pub path: Spanned<PathBuf>,
    /// Training batch size.
    pub batch: Option<u64>,
    /// Evaluation batch size.
    pub eval_batch: Option<u64>,
    /// Per-channel mean and standard deviation.
    pub normalize: Option<(Vec<f64>, Vec<f64>)>,
    /// Random crop padding.
    pub crop: Option<u64>,
    /// Random horizontal flip.
    pub flip: bool,
    /// At most this many samples of each split.
    pub limit: Option<u64>,
    /// Zero padding added to every image, in pixels per side.
    pub pad: Option<u64>,
}

impl From<ast::Unit> for Unit {
    fn from(u: ast::Unit) -> Self {
        match u {
            ast::Unit::Epochs => Unit::Epochs,
            ast::Unit::Steps => Unit::Steps,
        }
    }
}

/// Training settings of a pretrain or finetune stage. `None` means "not
/// said": the plan fills in defaults.
#[derive(Clone, Debug, Default, Serialize)]
pub struct TrainSpec {
    /// Epochs.
    pub epochs: Option<u64>,
    /// Optimizer.
    pub optimizer: Option<OptimizerKind>,
    /// Learning rate.
    pub lr: Option<f64>,
    /// Momentum (SGD).
    pub momentum: Option<f64>,
    /// Weight decay.
    pub weight_decay: Option<f64>,
    /// Nesterov momentum.
    pub nesterov: Option<bool>,
    /// Learning-rate schedule.
    pub lr_schedule: Option<LrSchedule>,
    /// Linear warm-up length and unit.
    pub warmup: Option<(u64, Unit)>,
    /// Per-layer learning-rate multipliers.
    #[serde(serialize_with = "ser_pairs")]
    pub lr_mult: Vec<(Spanned<String>, f64)>,
    /// Batch size override.
    pub batch: Option<u64>,
    /// Where the warm-up was set (for diagnostics; not part of the settings).
    #[serde(skip)]
    pub warmup_span: Option<Span>,
    /// Where the learning-rate schedule was set.
    #[serde(skip)]
    pub lr_schedule_span: Option<Span>,
}

/// The update rules a training block names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    /// SGD (with momentum when set).
    Sgd,
    /// Adam.
    Adam,
    /// AdamW.
    AdamW,
}

/// One layer or group rule.
#[derive(Clone, Debug, Serialize)]
pub struct RuleSpec {
    /// `layer` or `group`.
    pub kind: RuleKind,
    /// Module-name glob.
    #[serde(serialize_with = "ser_node")]
    pub pattern: Spanned<String>,
    /// Exactly, at most or at least.
    pub cmp: Cmp,
    /// Fraction removed.
    pub value: f64,
    /// The whole rule, for diagnostics.
    #[serde(skip)]
    pub span: Span,
}

/// Rule kinds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RuleKind {
    /// Per matching layer.
    Layer,
    /// One ratio for a coupled group.
    Group,
}

/// Comparisons.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Cmp {
    /// Exactly.
    Eq,
    /// At most.
    Le,
    /// At least.
    Ge,
}

/// A schedule with values resolved.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ScheduleSpec {
    /// Once.
    Oneshot {
        /// When.
        at: u64,
        /// Unit.
        unit: Unit,
    },
    /// Gradually.
    Gradual {
        /// First fraction.
        start: f64,
        /// Final fraction.
        end: f64,
        /// Period.
        every: u64,
        /// Unit.
        unit: Unit,
        /// First update, with its unit.
        from: Option<(u64, Unit)>,
        /// Last update, with its unit.
        until: Option<(u64, Unit)>,
        /// Curve.
        curve: Curve,
    },
    /// Prune, fine-tune, repeat.
    Iterative {
        /// Rounds.
        rounds: u64,
        /// Final fraction.
        to: Option<f64>,
    },
}

/// One prune stage.
#[derive(Clone, Debug, Serialize)]
pub struct PruneSpec {
    /// What is pruned.
    pub granularity: Granularity,
    /// Importance criterion, when said.
    pub importance: Option<Criterion>,
    /// Schedule, when said (with its span).
    #[serde(serialize_with = "ser_opt_node")]
    pub schedule: Option<Spanned<ScheduleSpec>>,
    /// Where importance is ranked, when said.
    pub scope: Option<Scope>,
    /// Per-layer cap.
    pub max: Option<f64>,
    /// Per-layer floor.
    pub min: Option<f64>,
    /// Channel-count multiple.
    pub round_to: Option<u64>,
    /// Rules in order.
    pub rules: Vec<RuleSpec>,
    /// Ignored globs.
    #[serde(serialize_with = "ser_vec_nodes")]
    pub ignore: Vec<Spanned<String>>,
    /// Group aggregation, when said.
    pub aggregate: Option<Aggregate>,
    /// Taylor batches.
    pub batches: Option<u64>,
    /// Slimming penalty.
    pub penalty: Option<f64>,
    /// Block-wide target.
    pub target: Option<f64>,
    /// Whether ignoring a coupled member is an error.
    pub strict: bool,
    /// The block, for diagnostics.
    #[serde(skip)]
    pub span: Span,
}

/// Distillation.
#[derive(Clone, Debug, Default, Serialize)]
pub struct DistillSpec {
    /// `dense` or a model.
    pub teacher: Option<TeacherSpec>,
    /// Temperature.
    pub temperature: Option<f64>,
    /// Weight of the distillation term.
    pub alpha: Option<f64>,
    /// Where the teacher is named, for diagnostics.
    #[serde(skip)]
    pub teacher_span: Option<Span>,
}

/// The teacher.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TeacherSpec {
    /// The unpruned starting model.
    Dense,
    /// Another model.
    Model {
        /// Zoo name or file.
        source: ast::ModelSource,
        /// Its weights.
        weights: Option<PathBuf>,
    },
}

/// A recipe with includes, variables and merging resolved. Everything is
/// still as the user said it: defaults are filled in by the plan.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Recipe {
    /// `recipe "name"`; `None` for a fragment.
    #[serde(serialize_with = "ser_opt_node")]
    pub name: Option<Spanned<String>>,
    /// Seed.
    pub seed: Option<u64>,
    /// Device.
    pub device: Option<Device>,
    /// Where the device was set, for diagnostics.
    #[serde(skip)]
    pub device_span: Option<Span>,
    /// BatchNorm over all ranks' batches in a distributed run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sync_bn: Option<bool>,
    /// Model.
    pub model: Option<ModelSpec>,
    /// Data.
    pub data: Option<DataSpec>,
    /// Dense training when no weights are given.
    pub pretrain: Option<TrainSpec>,
    /// Prune stages in order.
    pub prune: Vec<PruneSpec>,
    /// Distillation.
    pub distill: Option<DistillSpec>,
    /// Fine-tuning.
    pub finetune: Option<TrainSpec>,
    /// Output folder.
    #[serde(serialize_with = "ser_opt_node")]
    pub export: Option<Spanned<PathBuf>>,
    /// The variables and the values they resolved to.
    pub variables: BTreeMap<String, String>,
}

impl Recipe {
    /// Whether the file is a full recipe (it has a `recipe` header) rather
    /// than a fragment meant to be included.
    pub fn is_recipe(&self) -> bool {
        self.name.is_some()
    }
}

fn ser_node<T: Serialize, S: serde::Serializer>(v: &Spanned<T>, s: S) -> Result<S::Ok, S::Error> {
    v.node.serialize(s)
}
fn ser_opt_node<T: Serialize, S: serde::Serializer>(
    v: &Option<Spanned<T>>,
    s: S,
) -> Result<S::Ok, S::Error> {
    v.as_ref().map(|v| &v.node).serialize(s)
}
fn ser_vec_nodes<T: Serialize, S: serde::Serializer>(
    v: &[Spanned<T>],
    s: S,
) -> Result<S::Ok, S::Error> {
    s.collect_seq(v.iter().map(|x| &x.node))
}
fn ser_pairs<S: serde::Serializer>(v: &[(Spanned<String>, f64)], s: S) -> Result<S::Ok, S::Error> {
    s.collect_map(v.iter().map(|(k, f)| (&k.node, f)))
}

impl Serialize for ast::ModelSource {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            ast::ModelSource::Zoo(n) => s.serialize_str(n),
            ast::ModelSource::File(p) => s.serialize_str(p),
        }
    }
}
