//! The spanned syntax tree of one `.prune` file, exactly as written: includes
//! are not followed and `$variables` are not substituted (see `resolve`).

use super::span::{FileId, Span, Spanned};

/// A value in a slot that takes a number, a string or a variable.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// A number, with the text it was written as (kept by the formatter).
    Number {
        /// The value.
        value: f64,
        /// How it was written (`1e-4`, `0.0001`).
        text: String,
    },
    /// A percentage such as `80%`; `value` is the fraction (0.8).
    Percent {
        /// The fraction.
        value: f64,
        /// How it was written, without the `%`.
        text: String,
    },
    /// A quoted string, unescaped.
    Str(String),
    /// A bare word where the grammar allows one (a device name).
    Word(String),
    /// A `$name` reference.
    Var(String),
}

/// A spanned value.
pub type SValue = Spanned<Value>;

/// One parsed `.prune` file.
#[derive(Clone, Debug, PartialEq)]
pub struct File {
    /// The file the tree came from.
    pub file: FileId,
    /// Top-level items in order.
    pub items: Vec<Spanned<Item>>,
    /// Every comment in the file, in order (for the formatter).
    pub comments: Vec<Spanned<String>>,
}

/// A block body `{ ... }`: its statements and where its braces are.
#[derive(Clone, Debug, PartialEq)]
pub struct Block<S> {
    /// The statements in order.
    pub stmts: Vec<Spanned<S>>,
    /// The span of `{`.
    pub open: Spanned<()>,
    /// The span of `}`.
    pub close: Spanned<()>,
}

/// A top-level item.
#[derive(Clone, Debug, PartialEq)]
pub enum Item {
    /// `recipe "name"`
    Recipe(SValue),
    /// `seed 0`
    Seed(SValue),
    /// `device auto|cpu|cuda|cuda:N`
    Device(SValue),
    /// `sync_bn true|false`: BatchNorm over all ranks' batches.
    SyncBn(SValue),
    /// `include "file.prune"`
    Include(Spanned<String>),
    /// `let name = value`
    Let {
        /// Variable name, without `$`.
        name: Spanned<String>,
        /// Its literal value.
        value: SValue,
    },
    /// `model <zoo-name|"file.yaml"> { ... }`
    Model(ModelBlock),
    /// `data <kind> "path" { ... }`
    Data(DataBlock),
    /// `pretrain { ... }`
    Pretrain(Block<TrainStmt>),
    /// `prune <granularity> [by <importance>] { ... }`
    Prune(PruneBlock),
    /// `distill { ... }`
    Distill(Block<DistillStmt>),
    /// `finetune { ... }`
    Finetune(Block<TrainStmt>),
    /// `export "folder"`
    Export(SValue),
}

impl Item {
    /// The keyword that starts this item.
    pub fn keyword(&self) -> &'static str {
        match self {
            Item::Recipe(_) => "recipe",
            Item::Seed(_) => "seed",
            Item::Device(_) => "device",
            Item::SyncBn(_) => "sync_bn",
            Item::Include(_) => "include",
            Item::Let { .. } => "let",
            Item::Model(_) => "model",
            Item::Data(_) => "data",
            Item::Pretrain(_) => "pretrain",
            Item::Prune(_) => "prune",
            Item::Distill(_) => "distill",
            Item::Finetune(_) => "finetune",
            Item::Export(_) => "export",
        }
    }
}

/// Where a model comes from.
#[derive(Clone, Debug, PartialEq)]
pub enum ModelSource {
    /// A built-in model by name (`resnet18`).
    Zoo(String),
    /// A YAML model description by path.
    File(String),
}

/// `model ... { ... }`
#[derive(Clone, Debug, PartialEq)]
pub struct ModelBlock {
    /// Zoo name or description file.
    pub source: Spanned<ModelSource>,
    /// The settings, when a body was written.
    pub body: Option<Block<ModelStmt>>,
}

/// A statement in a model block.
#[derive(Clone, Debug, PartialEq)]
pub enum ModelStmt {
    /// `input [C, H, W]`
    Input(Vec<SValue>),
    /// `classes N`
    Classes(SValue),
    /// `weights "file"`
    Weights(SValue),
}

/// `data <kind> "path" { ... }`
#[derive(Clone, Debug, PartialEq)]
pub struct DataBlock {
    /// Dataset kind (`fashion_mnist`, `mnist`, `cifar10`, `image_folder`).
    pub kind: Spanned<String>,
    /// Where the data is.
    pub path: SValue,
    /// The settings, when a body was written.
    pub body: Option<Block<DataStmt>>,
}

/// A statement in a data block.
#[derive(Clone, Debug, PartialEq)]
pub enum DataStmt {
    /// `batch N`
    Batch(SValue),
    /// `eval_batch N`
    EvalBatch(SValue),
    /// `normalize mean M std S` (scalars or per-channel lists)
    Normalize {
        /// Means.
        mean: NumList,
        /// Standard deviations.
        std: NumList,
    },
    /// `augment crop 4 flip`
    Augment(Vec<Spanned<Augment>>),
    /// `limit N`: use at most N samples of each split.
    Limit(SValue),
    /// `pad N`: zero-pad every image by N pixels on each side (28×28
    /// Fashion-MNIST to the 32×32 a VGG needs).
    Pad(SValue),
}

/// A number or a bracketed list of numbers.
#[derive(Clone, Debug, PartialEq)]
pub struct NumList {
    /// The numbers.
    pub values: Vec<SValue>,
    /// Whether it was written in brackets.
    pub bracketed: bool,
}

/// One augmentation.
#[derive(Clone, Debug, PartialEq)]
pub enum Augment {
    /// Random crop after zero padding by N pixels.
    Crop(SValue),
    /// Random horizontal flip.
    Flip,
}

/// Time unit of schedules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    /// Epochs.
    Epochs,
    /// Optimizer steps (batches).
    Steps,
}

/// Optimizers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OptimizerKind {
    /// SGD (with optional momentum, Nesterov).
    Sgd,
    /// Adam.
    Adam,
    /// AdamW (decoupled weight decay).
    AdamW,
}

/// Learning-rate schedules.
#[derive(Clone, Debug, PartialEq)]
pub enum LrSchedule {
    /// Constant learning rate.
    Constant,
    /// Multiply by `gamma` every `every` units.
    Step {
        /// Period.
        every: SValue,
        /// Unit of the period.
        unit: Unit,
        /// Factor.
        gamma: SValue,
    },
    /// Cosine annealing down to `min` (default 0).
    Cosine {
        /// Final learning rate.
        min: Option<SValue>,
    },
}

/// A statement in a pretrain or finetune block.
#[derive(Clone, Debug, PartialEq)]
pub enum TrainStmt {
    /// `epochs N`
    Epochs(SValue),
    /// `optimizer sgd|adam|adamw [lr X] [momentum X] [weight_decay X] [nesterov]`
    Optimizer {
        /// Which optimizer.
        kind: Spanned<OptimizerKind>,
        /// Settings written on the same statement.
        args: Vec<Spanned<TrainStmt>>,
    },
    /// `lr X`
    Lr(SValue),
    /// `momentum X`
    Momentum(SValue),
    /// `weight_decay X`
    WeightDecay(SValue),
    /// `nesterov`
    Nesterov,
    /// `lr_schedule constant|step ...|cosine ...`
    LrSchedule(Spanned<LrSchedule>),
    /// `warmup N epochs|steps` (linear warm-up)
    Warmup {
        /// Length.
        length: SValue,
        /// Unit.
        unit: Unit,
    },
    /// `lr_mult "glob" X`: learning-rate multiplier for matching layers.
    LrMult {
        /// Module-name glob.
        pattern: SValue,
        /// Multiplier.
        factor: SValue,
    },
    /// `batch N` (overrides the data block's batch size for this stage)
    Batch(SValue),
}

/// What a prune block removes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Granularity {
    /// Single weights (unstructured).
    Weights,
    /// At most N nonzero weights in every M consecutive ones (`2:4`).
    NM {
        /// Nonzero weights kept per group.
        n: u32,
        /// Group size.
        m: u32,
    },
    /// Conv filters / linear neurons, physically removed.
    Channels,
    /// Whole residual blocks, replaced by their identity path.
    Blocks,
    /// Whole attention heads, physically removed.
    Heads,
}

/// Importance criteria.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Importance {
    /// Sum of absolute values.
    L1,
    /// Euclidean norm.
    L2,
    /// Random (a baseline).
    Random,
    /// BatchNorm |gamma| (Network Slimming).
    BnScale,
    /// First-order Taylor |weight x gradient|.
    Taylor,
    /// Wanda: |weight| x the norm of its input feature on calibration data.
    Wanda,
}

/// `ratio` or `sparsity`: two names for the fraction removed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TargetWord {
    /// `ratio`
    Ratio,
    /// `sparsity`
    Sparsity,
}

/// How a rule bounds its layers' fraction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cmp {
    /// Exactly (`ratio 0.5` or `ratio = 0.5`).
    Eq,
    /// At most (a cap).
    Le,
    /// At least (a floor).
    Ge,
}

/// `ratio <= 0.2`
#[derive(Clone, Debug, PartialEq)]
pub struct Target {
    /// The word used.
    pub word: TargetWord,
    /// The comparison.
    pub cmp: Cmp,
    /// The fraction.
    pub value: SValue,
}

/// `layer "glob" ratio 0.5` or `group "glob" ratio 0.5`
#[derive(Clone, Debug, PartialEq)]
pub struct LayerRule {
    /// Module-name glob.
    pub pattern: SValue,
    /// The target.
    pub target: Target,
}

/// Pruning schedules.
// A recipe holds a handful of these; boxing the large variant would only
// make the tree harder to match on.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq)]
pub enum Schedule {
    /// Prune once.
    Oneshot {
        /// When (default: epoch 0 of fine-tuning).
        at: Option<(Unit, SValue)>,
    },
    /// Raise the fraction from `start` to `end` every `every` units.
    Gradual {
        /// Initial fraction.
        start: SValue,
        /// Final fraction.
        end: SValue,
        /// Period.
        every: SValue,
        /// Unit of the period.
        unit: Unit,
        /// First update (`from epoch E0`); the unit defaults to the period's.
        from: Option<(Unit, SValue)>,
        /// Last update (`until epoch E1`); the unit defaults to the period's.
        until: Option<(Unit, SValue)>,
        /// Interpolation.
        curve: Option<Spanned<Curve>>,
    },
    /// Prune, fine-tune, repeat: N rounds, optionally to a final fraction.
    Iterative {
        /// Rounds.
        rounds: SValue,
        /// Final fraction.
        to: Option<SValue>,
    },
}

/// Interpolation curves of a gradual schedule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Curve {
    /// Evenly spaced.
    Linear,
    /// Zhu & Gupta.
    Cubic,
    /// Exponential.
    Exp,
}

/// `local` or `global` ranking.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScopeKind {
    /// Each layer ranked on its own.
    Local,
    /// One ranking across layers.
    Global,
}

/// Group aggregation of coupled channels' importance.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Aggregate {
    /// Sum.
    Sum,
    /// Mean.
    Mean,
    /// Max.
    Max,
}

/// `prune ... { ... }`
#[derive(Clone, Debug, PartialEq)]
pub struct PruneBlock {
    /// What is removed.
    pub granularity: Spanned<Granularity>,
    /// How importance is measured, when written.
    pub importance: Option<Spanned<Importance>>,
    /// The body.
    pub body: Block<PruneStmt>,
}

/// A statement in a prune block.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq)]
pub enum PruneStmt {
    /// `schedule ...`
    Schedule(Spanned<Schedule>),
    /// `scope local|global [max X] [min X]`
    Scope {
        /// Ranking scope.
        kind: ScopeKind,
        /// Per-layer cap.
        max: Option<SValue>,
        /// Per-layer floor.
        min: Option<SValue>,
    },
    /// `round_to N`
    RoundTo(SValue),
    /// `layer "glob" ratio ...`
    Layer(LayerRule),
    /// `group "glob" ratio ...`
    Group(LayerRule),
    /// `ignore "glob", ...`
    Ignore(Vec<SValue>),
    /// `aggregate sum|mean|max`
    Aggregate(Aggregate),
    /// `batches N` (Taylor: gradient batches)
    Batches(SValue),
    /// `penalty X` (Network Slimming: L1 strength on BN gamma)
    Penalty(SValue),
    /// `ratio X` / `sparsity X`: the block-wide target.
    Target {
        /// The word used.
        word: TargetWord,
        /// The fraction.
        value: SValue,
    },
    /// `strict`: ignoring one member of a coupled group is an error.
    Strict,
}

/// Who teaches.
#[derive(Clone, Debug, PartialEq)]
pub enum Teacher {
    /// The unpruned starting model.
    Dense,
    /// Another model, with weights.
    Model {
        /// Zoo name or description file.
        source: Spanned<ModelSource>,
        /// Its weights.
        weights: Option<SValue>,
    },
}

/// A statement in a distill block.
#[derive(Clone, Debug, PartialEq)]
pub enum DistillStmt {
    /// `teacher ...`
    Teacher(Teacher),
    /// `temperature T`
    Temperature(SValue),
    /// `alpha A`
    Alpha(SValue),
}

impl Spanned<()> {
    /// A zero-width marker.
    pub fn at(span: Span) -> Self {
        Spanned::new((), span)
    }
}
