//! Check diagnostics: what is wrong with a recipe that parses.

use miette::{Diagnostic, NamedSource, SourceSpan};
use std::sync::Arc;
use thiserror::Error;

/// A problem found while resolving and checking a recipe. Each kind has a
/// stable code.
#[derive(Debug, Error, Diagnostic)]
pub enum CheckError {
    /// `$name` is used but never defined with `let` or `--set`.
    #[error("variable `${name}` is not defined")]
    #[diagnostic(code(prunex::check::undefined_variable))]
    UndefinedVariable {
        /// The file.
        #[source_code]
        src: NamedSource<Arc<str>>,
        /// The reference.
        #[label("used here")]
        span: SourceSpan,
        /// The name.
        name: String,
        /// Closest defined name, or how to define it.
        #[help]
        help: String,
    },

    /// `let name` twice.
    #[error("variable `{name}` is defined twice")]
    #[diagnostic(
        code(prunex::check::duplicate_variable),
        help("a recipe defines each variable once; to change it for one run, use `--set {name}=VALUE`")
    )]
    DuplicateVariable {
        /// The file of the second definition.
        #[source_code]
        src: NamedSource<Arc<str>>,
        /// The second definition.
        #[label("defined again here (first defined at {first})")]
        span: SourceSpan,
        /// The name.
        name: String,
        /// Where the first definition is (file:line).
        first: String,
    },

    /// A warm-up or learning-rate step period as long as the training it
    /// belongs to, which would silently never take effect.
    #[error("{message}")]
    #[diagnostic(
        code(prunex::check::longer_than_training),
        severity(Warning),
        help("{help}")
    )]
    LongerThanTraining {
        /// The file.
        #[source_code]
        src: NamedSource<Arc<str>>,
        /// The setting.
        #[label("longer than the training")]
        span: SourceSpan,
        /// What happens.
        message: String,
        /// What to change.
        help: String,
    },

    /// A variable defined with `let` and never used.
    #[error("variable `{name}` is never used")]
    #[diagnostic(
        code(prunex::check::unused_variable),
        severity(Warning),
        help("use it as `${name}`, or remove the `let`")
    )]
    UnusedVariable {
        /// The file.
        #[source_code]
        src: NamedSource<Arc<str>>,
        /// The definition.
        #[label("defined here")]
        span: SourceSpan,
        /// The name.
        name: String,
    },

    /// `--set name=value` names a variable the recipe does not define.
    #[error("`--set {name}=...` names a variable the recipe does not define")]
    #[diagnostic(code(prunex::check::unknown_override))]
    UnknownOverride {
        /// The name.
        name: String,
        /// The variables the recipe defines.
        #[help]
        help: String,
    },

    /// `--set` text that is not `name=value` with a literal value.
    #[error("cannot read `--set {text}`: {reason}")]
    #[diagnostic(
        code(prunex::check::bad_override),
        help("write `--set name=value`: the name of a `let` variable or a setting (`seed`, `finetune.epochs`, `data.batch`, `prune.1.ratio`), and a number (0.5, 1e-3), a percentage (50%) or text")
    )]
    BadOverride {
        /// The argument.
        text: String,
        /// Why.
        reason: String,
    },

    /// A value of the wrong kind for its slot (text where a number is
    /// expected, a fraction where a whole number is expected).
    #[error("expected {expected}, found {found}")]
    #[diagnostic(code(prunex::check::type_mismatch))]
    TypeMismatch {
        /// The file.
        #[source_code]
        src: NamedSource<Arc<str>>,
        /// The value.
        #[label("{label}")]
        span: SourceSpan,
        /// What the slot takes.
        expected: String,
        /// What it got.
        found: String,
        /// Label text.
        label: String,
        /// Where a variable got its value, when it did.
        #[help]
        help: Option<String>,
    },

    /// A number outside the range its setting allows.
    #[error("{message}")]
    #[diagnostic(code(prunex::check::out_of_range))]
    OutOfRange {
        /// The file.
        #[source_code]
        src: NamedSource<Arc<str>>,
        /// The value.
        #[label("{label}")]
        span: SourceSpan,
        /// Headline.
        message: String,
        /// Label text.
        label: String,
        /// The fix.
        #[help]
        help: String,
    },

    /// A word that is not one of the values a setting allows.
    #[error("{message}")]
    #[diagnostic(code(prunex::check::invalid_value))]
    InvalidValue {
        /// The file.
        #[source_code]
        src: NamedSource<Arc<str>>,
        /// The value.
        #[label("{label}")]
        span: SourceSpan,
        /// Headline.
        message: String,
        /// Label text.
        label: String,
        /// The allowed values, or the closest one.
        #[help]
        help: String,
    },

    /// A setting that may appear once per recipe appears twice in one file.
    #[error("`{what}` is given twice in this file")]
    #[diagnostic(
        code(prunex::check::duplicate_item),
        help("keep one; a file may override what an included file sets, but not itself")
    )]
    DuplicateItem {
        /// The file.
        #[source_code]
        src: NamedSource<Arc<str>>,
        /// The first one.
        #[label("first here")]
        first: SourceSpan,
        /// The second one.
        #[label("again here")]
        second: SourceSpan,
        /// The keyword.
        what: String,
    },

    /// A recipe without something every run needs.
    #[error("this recipe has no `{what}`")]
    #[diagnostic(code(prunex::check::missing_item))]
    MissingItem {
        /// The file.
        #[source_code]
        src: NamedSource<Arc<str>>,
        /// The recipe header.
        #[label("recipe declared here")]
        span: SourceSpan,
        /// What is missing.
        what: &'static str,
        /// An example of it.
        #[help]
        help: String,
    },

    /// Layers given different ratios although they keep or lose the same
    /// channels (a residual stream, a concat, a depthwise pair).
    #[error("{kind} layers are given different channel ratios")]
    #[diagnostic(code(prunex::check::coupled_ratio))]
    CoupledRatio {
        /// The file of the rules.
        #[source_code]
        src: NamedSource<Arc<str>>,
        /// Every conflicting rule.
        #[label(collection)]
        labels: Vec<miette::LabeledSpan>,
        /// "residual-coupled", "concat-coupled", ...
        kind: String,
        /// The members, what couples them, and the one-line fix.
        #[help]
        help: String,
    },

    /// A block stage on a model with no removable residual block.
    #[error("`{model}` has no residual block with an identity shortcut{why}: this stage removes nothing")]
    #[diagnostic(
        code(prunex::check::no_blocks),
        severity(Warning),
        help("`prune blocks` replaces a residual block by its identity shortcut (resnets, mobilenet_v2's inverted residuals); prune `channels` instead, or drop the stage")
    )]
    NoBlocks {
        /// The file.
        #[source_code]
        src: NamedSource<Arc<str>>,
        /// The prune block.
        #[label("removes nothing")]
        span: SourceSpan,
        /// The model.
        model: String,
        /// ", outside what `ignore` names", when the ignore list took them all.
        why: String,
    },

    /// Channel groups that an operator prunex cannot prune through keeps
    /// whole (a channel shuffle, a slice of the channels).
    #[error("{count} channel groups of `{model}` keep their channels: {why}")]
    #[diagnostic(
        code(prunex::check::frozen_channels),
        severity(Warning),
        help("their layers ({layers}) keep every channel; the other groups are pruned as planned (`prunex inspect MODEL --groups` lists each group and why)")
    )]
    FrozenChannels {
        /// The file.
        #[source_code]
        src: NamedSource<Arc<str>>,
        /// The stage.
        #[label("this stage prunes channels")]
        span: SourceSpan,
        /// Groups frozen.
        count: usize,
        /// The model.
        model: String,
        /// The first reason.
        why: String,
        /// Their layers, shortened.
        layers: String,
    },

    /// An ignored layer coupled to layers the recipe prunes.
    #[error("`{layer}` is ignored, but it is coupled with {rest}: the whole group of {channels} channels stays unpruned")]
    #[diagnostic(
        code(prunex::check::ignored_coupled),
        severity(Warning),
        help("coupled layers keep or lose the same channels, so ignoring one keeps them all; to prune the group, drop `{layer}` from `ignore` (add `strict` to make this an error)")
    )]
    IgnoredCoupled {
        /// The file.
        #[source_code]
        src: NamedSource<Arc<str>>,
        /// The ignore pattern.
        #[label("ignored here")]
        span: SourceSpan,
        /// The ignored layer.
        layer: String,
        /// The others.
        rest: String,
        /// Channels in the group.
        channels: usize,
    },

    /// The same, under `strict`.
    #[error("`{layer}` is ignored, but it is coupled with {rest}: the whole group of {channels} channels would stay unpruned")]
    #[diagnostic(
        code(prunex::check::ignored_coupled),
        help("coupled layers keep or lose the same channels, so ignoring one keeps them all; drop `{layer}` from `ignore`, or remove `strict` to accept an unpruned group")
    )]
    IgnoredCoupledStrict {
        /// The file.
        #[source_code]
        src: NamedSource<Arc<str>>,
        /// The ignore pattern.
        #[label("ignored here")]
        span: SourceSpan,
        /// The ignored layer.
        layer: String,
        /// The others.
        rest: String,
        /// Channels in the group.
        channels: usize,
    },

    /// A pattern that names no module of the model.
    #[error("`{pattern}` matches no module of `{model}`")]
    #[diagnostic(code(prunex::check::unmatched_pattern), help("{help}"))]
    UnmatchedPattern {
        /// The file.
        #[source_code]
        src: NamedSource<Arc<str>>,
        /// The pattern.
        #[label("matches nothing")]
        span: SourceSpan,
        /// The pattern.
        pattern: String,
        /// The model.
        model: String,
        /// The closest names.
        help: String,
    },

    /// A rule that names only layers without weights.
    #[error("`{pattern}` names only layers without weights: {matched}")]
    #[diagnostic(
        code(prunex::check::no_weights),
        help("ReLU, pooling and other parameterless layers are never pruned; name the convolution or linear layer instead")
    )]
    NoWeights {
        /// The file.
        #[source_code]
        src: NamedSource<Arc<str>>,
        /// The pattern.
        #[label("no weights to prune")]
        span: SourceSpan,
        /// The pattern.
        pattern: String,
        /// What it matched.
        matched: String,
    },

    /// A `prune heads` rule that names no attention layer.
    #[error("`{pattern}` names no attention layer: {matched}")]
    #[diagnostic(
        code(prunex::check::no_heads),
        help("`prune heads` removes heads of attention layers (`multihead_attention`); name those (`prunex inspect {model} --groups` lists their groups), or prune these layers' channels in a `prune channels` stage")
    )]
    NoHeads {
        /// The file.
        #[source_code]
        src: NamedSource<Arc<str>>,
        /// The pattern.
        #[label("no attention heads here")]
        span: SourceSpan,
        /// The pattern.
        pattern: String,
        /// What it matched.
        matched: String,
        /// The model.
        model: String,
    },

    /// Wanda on a structured granularity.
    #[error("`wanda` ranks single weights, but this stage prunes {granularity}")]
    #[diagnostic(
        code(prunex::check::wanda_structured),
        help("use `wanda` in a `prune weights` or `prune 2:4` stage; rank {granularity} by `l2`, `l1` or `taylor`")
    )]
    WandaStructured {
        /// The file.
        #[source_code]
        src: NamedSource<Arc<str>>,
        /// The stage.
        #[label("ranked by wanda")]
        span: SourceSpan,
        /// The stage's granularity.
        granularity: String,
    },

    /// `bn_scale` where no BatchNorm follows what the stage prunes.
    #[error("`bn_scale` ranks by BatchNorm γ, but no BatchNorm follows the {what} this stage prunes in `{model}`")]
    #[diagnostic(
        code(prunex::check::no_batchnorm),
        help("every score would be 0 and the first {what} would go: rank by weights instead, `by l2` (or `l1`, or `taylor`)")
    )]
    NoBatchNorm {
        /// The file.
        #[source_code]
        src: NamedSource<Arc<str>>,
        /// The stage.
        #[label("ranked by bn_scale")]
        span: SourceSpan,
        /// Channels or heads.
        what: &'static str,
        /// The model.
        model: String,
    },

    /// A rule on a BatchNorm.
    #[error("`{layer}` is a BatchNorm: it is not pruned on its own")]
    #[diagnostic(code(prunex::check::batchnorm_rule), help("{help}"))]
    BatchNormRule {
        /// The file.
        #[source_code]
        src: NamedSource<Arc<str>>,
        /// The pattern.
        #[label("a BatchNorm")]
        span: SourceSpan,
        /// The BatchNorm.
        layer: String,
        /// The convolution to name instead.
        help: String,
    },

    /// A rule that would prune channels that must not change.
    #[error("{layers} cannot lose channels: they are {why}")]
    #[diagnostic(code(prunex::check::prune_output))]
    PruneFrozen {
        /// The file.
        #[source_code]
        src: NamedSource<Arc<str>>,
        /// The rule.
        #[label("asks to prune them")]
        span: SourceSpan,
        /// The layers.
        layers: String,
        /// Why they are frozen.
        why: String,
        /// The fix.
        #[help]
        help: String,
    },

    /// A ratio that leaves no channel.
    #[error("this ratio removes every channel of {layers} ({channels} channels)")]
    #[diagnostic(
        code(prunex::check::removes_all),
        help("at least one channel must stay: use a ratio of at most {max:.3}")
    )]
    RemovesAll {
        /// The file.
        #[source_code]
        src: NamedSource<Arc<str>>,
        /// The rule.
        #[label("keeps no channel")]
        span: SourceSpan,
        /// The layers.
        layers: String,
        /// Their channels.
        channels: usize,
        /// The largest ratio that keeps one.
        max: f64,
    },

    /// A CUDA device this machine does not have. A warning: the recipe may
    /// be meant for another machine; `prunex run` here stops before any
    /// data is read (`prunex::run::no_cuda`).
    #[error("`cuda:{index}` is not on this machine (it has {count} CUDA device(s)): `prunex run` here would stop before training")]
    #[diagnostic(
        code(prunex::check::no_cuda),
        severity(Warning),
        help("use `device auto` (CUDA when there is one, else the CPU) or `device cpu` to run here; `prunex version` shows what libtorch sees")
    )]
    NoCuda {
        /// The file.
        #[source_code]
        src: NamedSource<Arc<str>>,
        /// The device line.
        #[label("no such device")]
        span: SourceSpan,
        /// The index asked for.
        index: usize,
        /// Devices found.
        count: usize,
    },

    /// A data folder that is not on this machine. A warning: the recipe may
    /// be meant for another machine; `prunex run` here stops before
    /// training (`prunex::data::missing`).
    #[error("the {kind} data `{path}` is not on this machine: `prunex run` here would stop before training")]
    #[diagnostic(code(prunex::check::no_data), severity(Warning), help("{help}"))]
    NoData {
        /// The file.
        #[source_code]
        src: NamedSource<Arc<str>>,
        /// The data line's path.
        #[label("not found")]
        span: SourceSpan,
        /// The data set kind.
        kind: &'static str,
        /// The folder.
        path: String,
        /// Where to get it.
        help: String,
    },

    /// Images of another shape than the model takes.
    #[error("the model `{model}` takes {input:?} (C, H, W) inputs but this data's images are {data:?}{padded}")]
    #[diagnostic(code(prunex::check::input_mismatch), help("{help}"))]
    InputMismatch {
        /// The file.
        #[source_code]
        src: NamedSource<Arc<str>>,
        /// The data line.
        #[label("images of {data:?}")]
        span: SourceSpan,
        /// The model's name.
        model: String,
        /// Its input.
        input: [usize; 3],
        /// The images, after padding.
        data: [usize; 3],
        /// ", after `pad N`", when padded.
        padded: String,
        /// What to change.
        help: String,
    },

    /// More classes in the data than the model has outputs.
    #[error("this data has {classes} classes but the model `{model}` has {outputs} outputs")]
    #[diagnostic(
        code(prunex::check::too_few_outputs),
        help("set the model's `classes {classes}` (a zoo model or a model file), or use data with at most {outputs} classes")
    )]
    TooFewOutputs {
        /// The file.
        #[source_code]
        src: NamedSource<Arc<str>>,
        /// The data line.
        #[label("{classes} classes")]
        span: SourceSpan,
        /// The model's name.
        model: String,
        /// The model's outputs.
        outputs: usize,
        /// The data's classes.
        classes: usize,
    },

    /// The export folder cannot be created or written.
    #[error("the results cannot be written to `{path}`: {reason}")]
    #[diagnostic(
        code(prunex::check::export_unwritable),
        help("export to a folder you can write (`export \"runs/NAME\"`); nothing runs until it can be written, so no training is lost")
    )]
    ExportUnwritable {
        /// The file.
        #[source_code]
        src: NamedSource<Arc<str>>,
        /// The export line (or the recipe name, for the default folder).
        #[label("written here")]
        span: SourceSpan,
        /// The folder.
        path: String,
        /// Why not.
        reason: String,
    },

    /// A schedule whose last update comes before its first.
    #[error("this schedule ends (epoch {until}) before it starts (epoch {from})")]
    #[diagnostic(
        code(prunex::check::schedule_order),
        help("make `until` later than `from`")
    )]
    ScheduleOrder {
        /// The file.
        #[source_code]
        src: NamedSource<Arc<str>>,
        /// The schedule.
        #[label("ends before it starts")]
        span: SourceSpan,
        /// Start.
        from: u64,
        /// End.
        until: u64,
    },

    /// A gradual schedule too short for its period.
    #[error("updating every {every} from {from} until {until} leaves a single update: the schedule cannot ramp to {end}")]
    #[diagnostic(
        code(prunex::check::unreachable_target),
        help("make the period shorter than the span, or use `schedule oneshot`")
    )]
    UnreachableTarget {
        /// The file.
        #[source_code]
        src: NamedSource<Arc<str>>,
        /// The schedule.
        #[label("one update only")]
        span: SourceSpan,
        /// Period.
        every: u64,
        /// Start.
        from: u64,
        /// End.
        until: u64,
        /// The target.
        end: f64,
    },

    /// A schedule that prunes when no fine-tuning epoch follows: at epoch
    /// E the model is pruned before fine-tuning epoch E+1, so with N epochs
    /// the last step may be at epoch N-1 (epoch 0 without fine-tuning).
    #[error("this schedule prunes at epoch {at}, but {ends}")]
    #[diagnostic(code(prunex::check::schedule_beyond_finetune), help("{fix}"))]
    ScheduleBeyondFinetune {
        /// The file.
        #[source_code]
        src: NamedSource<Arc<str>>,
        /// The schedule.
        #[label("past the end of fine-tuning")]
        span: SourceSpan,
        /// When.
        at: u64,
        /// How fine-tuning ends.
        ends: String,
        /// What to change.
        fix: String,
    },

    /// A teacher whose output does not match the student's.
    #[error("the teacher `{teacher}` outputs {teacher_shape}, the student {student_shape}")]
    #[diagnostic(code(prunex::check::teacher_shape), help("distillation compares outputs class by class: use a teacher with the student's classes"))]
    TeacherShape {
        /// The file.
        #[source_code]
        src: NamedSource<Arc<str>>,
        /// The teacher statement.
        #[label("this teacher")]
        span: SourceSpan,
        /// The teacher.
        teacher: String,
        /// Its output.
        teacher_shape: String,
        /// The student's.
        student_shape: String,
    },
}
