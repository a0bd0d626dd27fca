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

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::diag::CheckError;
use crate::syntax::ast::{self, Item, SValue, Value};
use crate::syntax::keywords;
use crate::syntax::{SourceMap, Span, Spanned, UnresolvedRecipe};

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
    pub kind: Spanned<String>,
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

/// A learning-rate schedule with values resolved.
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

/// Time units.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Unit {
    /// Epochs.
    Epochs,
    /// Optimizer steps.
    Steps,
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
    pub optimizer: Option<String>,
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
        curve: String,
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
    /// `weights`, `2:4`, `channels`, `blocks`.
    pub granularity: String,
    /// Importance criterion, when said.
    pub importance: Option<String>,
    /// Schedule, when said (with its span).
    #[serde(serialize_with = "ser_opt_node")]
    pub schedule: Option<Spanned<ScheduleSpec>>,
    /// `local` or `global`.
    pub scope: Option<String>,
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
    /// Group aggregation.
    pub aggregate: Option<String>,
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

/// A `--set name=value` override.
#[derive(Clone, Debug)]
pub struct Override {
    /// Variable name.
    pub name: String,
    /// Literal value.
    pub value: Value,
}

/// Parses `name=value`.
pub fn parse_override(text: &str) -> Result<Override, Box<CheckError>> {
    let bad = |reason: &str| {
        Box::new(CheckError::BadOverride {
            text: text.to_owned(),
            reason: reason.to_owned(),
        })
    };
    let (name, raw) = text.split_once('=').ok_or_else(|| bad("there is no `=`"))?;
    let name = name.trim().trim_start_matches('$');
    let ident_ok = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !ident_ok {
        return Err(bad(
            "the name must be letters, digits and `_`, starting with a letter",
        ));
    }
    let raw = raw.trim();
    let value = if let Some(p) = raw.strip_suffix('%') {
        match p.parse::<f64>() {
            Ok(v) if v.is_finite() => Value::Percent {
                value: v / 100.0,
                text: p.to_owned(),
            },
            _ => return Err(bad("a value ending in `%` must be a number before it")),
        }
    } else if let Ok(v) = raw.parse::<f64>() {
        if !v.is_finite() {
            return Err(bad("the number is not finite"));
        }
        Value::Number {
            value: v,
            text: raw.to_owned(),
        }
    } else {
        let unquoted = raw
            .strip_prefix('"')
            .and_then(|r| r.strip_suffix('"'))
            .unwrap_or(raw);
        Value::Str(unquoted.to_owned())
    };
    Ok(Override {
        name: name.to_owned(),
        value,
    })
}

struct Var {
    value: Value,
    span: Option<Span>,
    used: bool,
    from_set: bool,
}

/// Resolves a loaded recipe. Returns the recipe (even when there are
/// errors, with the bad parts left out) and every problem found.
pub fn resolve(unresolved: &UnresolvedRecipe, overrides: &[Override]) -> (Recipe, Vec<CheckError>) {
    let mut r = Resolver {
        sources: &unresolved.sources,
        vars: BTreeMap::new(),
        errors: Vec::new(),
        origin: None,
    };
    let recipe = r.run(unresolved, overrides);
    (recipe, r.errors)
}

struct Resolver<'a> {
    sources: &'a SourceMap,
    vars: BTreeMap<String, Var>,
    errors: Vec<CheckError>,
    /// Where the value read last came from, when it was a variable; range
    /// errors about that value say so.
    origin: Option<String>,
}

/// Describes a literal for "found ..." messages.
fn describe(v: &Value) -> String {
    match v {
        Value::Number { text, .. } => format!("the number {text}"),
        Value::Percent { text, .. } => format!("the percentage {text}%"),
        Value::Str(s) | Value::Word(s) => format!("the text \"{s}\""),
        Value::Var(n) => format!("`${n}`"),
    }
}

impl Resolver<'_> {
    fn src(&self, span: Span) -> miette::NamedSource<std::sync::Arc<str>> {
        self.sources.named(span)
    }

    fn place(&self, span: Span) -> String {
        self.sources.place(span)
    }

    fn run(&mut self, u: &UnresolvedRecipe, overrides: &[Override]) -> Recipe {
        self.collect_variables(u, overrides);
        let mut recipe = Recipe::default();
        // Single-valued items: the first span per (file, keyword), to refuse
        // a second one in the same file.
        let mut seen: BTreeMap<(usize, &'static str), Span> = BTreeMap::new();
        for item in &u.items {
            let kw = item.node.keyword();
            if matches!(
                kw,
                "recipe" | "seed" | "device" | "model" | "data" | "export" | "distill"
            ) {
                let key = (item.span.file, kw);
                if let Some(first) = seen.get(&key) {
                    self.errors.push(CheckError::DuplicateItem {
                        src: self.src(item.span),
                        first: first.source_span(),
                        second: item.span.source_span(),
                        what: kw.to_owned(),
                    });
                    continue;
                }
                seen.insert(key, item.span);
            }
            self.item(&mut recipe, item);
        }
        for (name, var) in &self.vars {
            recipe
                .variables
                .insert(name.clone(), crate::syntax::fmt::value(&var.value));
        }
        let unused: Vec<(String, Span)> = self
            .vars
            .iter()
            .filter(|(_, v)| !v.used && !v.from_set)
            .filter_map(|(n, v)| Some((n.clone(), v.span?)))
            .collect();
        for (name, span) in unused {
            self.errors.push(CheckError::UnusedVariable {
                src: self.src(span),
                span: span.source_span(),
                name,
            });
        }
        if recipe.name.is_some() {
            for (block, t) in [
                ("pretrain", &recipe.pretrain),
                ("finetune", &recipe.finetune),
            ] {
                if let Some(t) = t {
                    self.longer_than_training(block, t);
                }
            }
        }
        if let Some(name) = &recipe.name {
            let span = name.span;
            if recipe.model.is_none() {
                self.missing(
                    span,
                    "model",
                    "model resnet18 { input [3, 32, 32] classes 10 }",
                );
            }
            if recipe.data.is_none() {
                self.missing(
                    span,
                    "data",
                    "data fashion_mnist \"/usr/share/datasets/fashion-mnist\" { batch 128 }",
                );
            }
        }
        recipe
    }

    /// A warm-up or step schedule (in epochs) that the block's training
    /// ends before: its settings would silently not do what they say.
    fn longer_than_training(&mut self, block: &str, t: &TrainSpec) {
        let epochs = t.epochs.unwrap_or(0);
        if epochs == 0 {
            return;
        }
        let only = format!(
            "{block} has {epochs} epoch{}",
            if epochs == 1 { "" } else { "s" }
        );
        if let (Some((w, Unit::Epochs)), Some(span)) = (t.warmup, t.warmup_span) {
            if w >= epochs {
                self.errors.push(CheckError::LongerThanTraining {
                    src: self.src(span),
                    span: span.source_span(),
                    message: format!(
                        "the warm-up lasts {w} epochs, but {only}: the learning rate {}",
                        if w == epochs {
                            "reaches its peak only as training ends"
                        } else {
                            "never reaches its peak"
                        }
                    ),
                    help: format!("warm up for fewer than {epochs} epochs, or train longer"),
                });
            }
        }
        if let (
            Some(LrSchedule::Step {
                every,
                unit: Unit::Epochs,
                ..
            }),
            Some(span),
        ) = (&t.lr_schedule, t.lr_schedule_span)
        {
            if *every >= epochs {
                self.errors.push(CheckError::LongerThanTraining {
                    src: self.src(span),
                    span: span.source_span(),
                    message: format!(
                        "the learning rate steps every {every} epochs, but {only}: it never steps"
                    ),
                    help: format!(
                        "step more often than every {epochs} epochs, or use `lr_schedule constant`"
                    ),
                });
            }
        }
    }

    fn missing(&mut self, span: Span, what: &'static str, example: &str) {
        self.errors.push(CheckError::MissingItem {
            src: self.src(span),
            span: span.source_span(),
            what,
            help: format!("add one, for example: `{example}`"),
        });
    }

    fn collect_variables(&mut self, u: &UnresolvedRecipe, overrides: &[Override]) {
        for item in &u.items {
            if let Item::Let { name, value } = &item.node {
                if let Some(prev) = self.vars.get(&name.node) {
                    let first = prev.span.map(|s| self.place(s)).unwrap_or_default();
                    self.errors.push(CheckError::DuplicateVariable {
                        src: self.src(name.span),
                        span: name.span.source_span(),
                        name: name.node.clone(),
                        first,
                    });
                    continue;
                }
                self.vars.insert(
                    name.node.clone(),
                    Var {
                        value: value.node.clone(),
                        span: Some(name.span),
                        used: false,
                        from_set: false,
                    },
                );
            }
        }
        for o in overrides {
            match self.vars.get_mut(&o.name) {
                Some(var) => {
                    var.value = o.value.clone();
                    var.from_set = true;
                }
                None => {
                    let names: Vec<&str> = self.vars.keys().map(String::as_str).collect();
                    let help = match keywords::closest(&o.name, &names) {
                        Some(best) => format!("did you mean `{best}`?"),
                        None if names.is_empty() => {
                            "the recipe defines no variables; add `let NAME = VALUE` to it"
                                .to_owned()
                        }
                        None => format!("the recipe defines {}", keywords::list(&names)),
                    };
                    self.errors.push(CheckError::UnknownOverride {
                        name: o.name.clone(),
                        help,
                    });
                }
            }
        }
    }

    /// The literal behind a value, with a note on where a variable got it.
    fn lit(&mut self, v: &SValue) -> Option<(Value, Option<String>)> {
        let found = self.lit_inner(v);
        self.origin = found.as_ref().and_then(|(_, o)| o.clone());
        found
    }

    fn lit_inner(&mut self, v: &SValue) -> Option<(Value, Option<String>)> {
        match &v.node {
            Value::Var(name) => {
                if let Some(var) = self.vars.get_mut(name) {
                    var.used = true;
                    let (value, from_set, span) = (var.value.clone(), var.from_set, var.span);
                    let origin = if from_set {
                        format!(
                            "`${name}` is {} from `--set`",
                            crate::syntax::fmt::value(&value)
                        )
                    } else {
                        let at = span.map(|s| self.place(s)).unwrap_or_default();
                        format!(
                            "`${name}` is {} (defined at {at})",
                            crate::syntax::fmt::value(&value)
                        )
                    };
                    return Some((value, Some(origin)));
                }
                let names: Vec<&str> = self.vars.keys().map(String::as_str).collect();
                let help = match keywords::closest(name, &names) {
                    Some(best) => format!("did you mean `${best}`?"),
                    None => format!("define it with `let {name} = VALUE` before using it, or pass `--set {name}=VALUE`"),
                };
                self.errors.push(CheckError::UndefinedVariable {
                    src: self.src(v.span),
                    span: v.span.source_span(),
                    name: name.clone(),
                    help,
                });
                None
            }
            other => Some((other.clone(), None)),
        }
    }

    fn mismatch(&mut self, v: &SValue, expected: &str, found: &Value, origin: Option<String>) {
        self.errors.push(CheckError::TypeMismatch {
            src: self.src(v.span),
            span: v.span.source_span(),
            expected: expected.to_owned(),
            found: describe(found),
            label: format!("expected {expected}"),
            help: origin,
        });
    }

    fn number(&mut self, v: &SValue, expected: &str) -> Option<f64> {
        let (lit, origin) = self.lit(v)?;
        match lit {
            Value::Number { value, .. } | Value::Percent { value, .. } => Some(value),
            other => {
                self.mismatch(v, expected, &other, origin);
                None
            }
        }
    }

    fn whole(&mut self, v: &SValue, what: &str) -> Option<u64> {
        let (lit, origin) = self.lit(v)?;
        let expected = format!("a whole number for {what}");
        match lit {
            Value::Number { value, .. }
                if value >= 0.0 && value.fract() == 0.0 && value < 9.0e15 =>
            {
                Some(value as u64)
            }
            other => {
                self.mismatch(v, &expected, &other, origin);
                None
            }
        }
    }

    fn positive_whole(&mut self, v: &SValue, what: &str) -> Option<u64> {
        let n = self.whole(v, what)?;
        if n == 0 {
            self.range(
                v,
                format!("{what} must be at least 1"),
                "zero",
                format!("set {what} to 1 or more"),
            );
            return None;
        }
        Some(n)
    }

    fn text(&mut self, v: &SValue, expected: &str) -> Option<String> {
        let (lit, origin) = self.lit(v)?;
        match lit {
            Value::Str(s) | Value::Word(s) => Some(s),
            other => {
                self.mismatch(v, expected, &other, origin);
                None
            }
        }
    }

    fn path(&mut self, v: &SValue, expected: &str) -> Option<Spanned<PathBuf>> {
        let t = self.text(v, expected)?;
        Some(Spanned::new(self.relative_to_file(v.span, &t), v.span))
    }

    /// A path written in a file is relative to that file's folder.
    fn relative_to_file(&self, span: Span, p: &str) -> PathBuf {
        let p = Path::new(p);
        if p.is_absolute() {
            return p.to_path_buf();
        }
        let base = self.sources.get(span.file).name.clone();
        crate::syntax::load::normalize(&Path::new(&base).parent().unwrap_or(Path::new("")).join(p))
    }

    fn range(&mut self, v: &SValue, message: String, label: &str, help: String) {
        let help = match &self.origin {
            Some(origin) => format!("{help}; {origin}"),
            None => help,
        };
        self.errors.push(CheckError::OutOfRange {
            src: self.src(v.span),
            span: v.span.source_span(),
            message,
            label: label.to_owned(),
            help,
        });
    }

    /// A fraction of weights or channels removed: in [0, 1).
    fn fraction(&mut self, v: &SValue, what: &str) -> Option<f64> {
        let x = self.number(v, &format!("a fraction for {what}"))?;
        if !(0.0..1.0).contains(&x) {
            let label = if x >= 1.0 {
                "this removes everything"
            } else {
                "negative"
            };
            self.range(
                v,
                format!("{what} must be at least 0 and below 1"),
                label,
                "a fraction is the share removed: 0.5 or 50% removes half, and at least one weight or channel must stay".to_owned(),
            );
            return None;
        }
        Some(x)
    }

    fn non_negative(&mut self, v: &SValue, what: &str) -> Option<f64> {
        let x = self.number(v, &format!("a number for {what}"))?;
        if x < 0.0 {
            self.range(
                v,
                format!("{what} cannot be negative"),
                "negative",
                format!("use 0 or more for {what}"),
            );
            return None;
        }
        Some(x)
    }

    fn positive(&mut self, v: &SValue, what: &str) -> Option<f64> {
        let x = self.number(v, &format!("a number for {what}"))?;
        if x <= 0.0 {
            self.range(
                v,
                format!("{what} must be above 0"),
                "not positive",
                "use a value above 0".to_owned(),
            );
            return None;
        }
        Some(x)
    }

    fn unit_interval(&mut self, v: &SValue, what: &str) -> Option<f64> {
        let x = self.number(v, &format!("a number for {what}"))?;
        if !(0.0..=1.0).contains(&x) {
            self.range(
                v,
                format!("{what} must be between 0 and 1"),
                "outside [0, 1]",
                "use a value from 0 to 1".to_owned(),
            );
            return None;
        }
        Some(x)
    }

    fn item(&mut self, recipe: &mut Recipe, item: &Spanned<Item>) {
        match &item.node {
            Item::Recipe(v) => {
                if let Some(name) = self.text(v, "a recipe name in quotes") {
                    recipe.name = Some(Spanned::new(name, v.span));
                }
            }
            Item::Seed(v) => recipe.seed = self.whole(v, "the seed").or(recipe.seed),
            Item::Device(v) => {
                if let Some(d) = self.text(v, "a device") {
                    match parse_device(&d) {
                        Some(dev) => recipe.device = Some(dev),
                        None => self.errors.push(CheckError::InvalidValue {
                            src: self.src(v.span),
                            span: v.span.source_span(),
                            message: format!("`{d}` is not a device"),
                            label: "unknown device".to_owned(),
                            help: match d.as_str() {
                                "gpu" => "prunex calls this `cuda`; or use `auto` (CUDA when available, else CPU)".to_owned(),
                                _ => "use `auto` (CUDA when available, else CPU), `cpu`, `cuda` or `cuda:N` with N the device index".to_owned(),
                            },
                        }),
                    }
                }
            }
            Item::Include(_) | Item::Let { .. } => {}
            Item::Export(v) => {
                if let Some(p) = self.path(v, "an export folder in quotes") {
                    recipe.export = Some(p);
                }
            }
            Item::Model(m) => recipe.model = Some(self.model(m)),
            Item::Data(d) => {
                if let Some(spec) = self.data(d) {
                    recipe.data = Some(spec);
                }
            }
            Item::Pretrain(b) => {
                let mut t = recipe.pretrain.take().unwrap_or_default();
                self.train(&mut t, &b.stmts);
                recipe.pretrain = Some(t);
            }
            Item::Finetune(b) => {
                let mut t = recipe.finetune.take().unwrap_or_default();
                self.train(&mut t, &b.stmts);
                recipe.finetune = Some(t);
            }
            Item::Distill(b) => {
                let mut d = recipe.distill.take().unwrap_or_default();
                self.distill(&mut d, &b.stmts);
                recipe.distill = Some(d);
            }
            Item::Prune(p) => recipe.prune.push(self.prune(p, item.span)),
        }
    }

    fn model(&mut self, m: &ast::ModelBlock) -> ModelSpec {
        let mut spec = ModelSpec {
            source: m.source.clone(),
            input: None,
            classes: None,
            weights: None,
        };
        if let ast::ModelSource::File(p) = &m.source.node {
            let resolved = self.relative_to_file(m.source.span, p);
            spec.source.node = ast::ModelSource::File(resolved.display().to_string());
        }
        for s in m.body.iter().flat_map(|b| &b.stmts) {
            match &s.node {
                ast::ModelStmt::Input(dims) => {
                    let vals: Option<Vec<u64>> = dims
                        .iter()
                        .map(|d| self.positive_whole(d, "an input dimension"))
                        .collect();
                    if let Some(vals) = vals {
                        if vals.len() != 3 {
                            self.errors.push(CheckError::InvalidValue {
                                src: self.src(s.span),
                                span: s.span.source_span(),
                                message: format!("`input` takes 3 dimensions [C, H, W], not {}", vals.len()),
                                label: "channels, height, width".to_owned(),
                                help: "for example `input [1, 28, 28]` for Fashion-MNIST or `input [3, 32, 32]` for CIFAR-10".to_owned(),
                            });
                        } else {
                            spec.input = Some(Spanned::new(vals, s.span));
                        }
                    }
                }
                ast::ModelStmt::Classes(v) => {
                    spec.classes = self
                        .positive_whole(v, "the number of classes")
                        .map(|c| Spanned::new(c, v.span));
                }
                ast::ModelStmt::Weights(v) => {
                    spec.weights = self.path(v, "a weights file in quotes")
                }
            }
        }
        spec
    }

    fn data(&mut self, d: &ast::DataBlock) -> Option<DataSpec> {
        const KINDS: &[&str] = &["fashion_mnist", "mnist", "cifar10", "image_folder"];
        if !KINDS.contains(&d.kind.node.as_str()) {
            let help = match keywords::closest(&d.kind.node, KINDS) {
                Some(best) => format!("did you mean `{best}`?"),
                None => format!("prunex reads {}", keywords::list(KINDS)),
            };
            self.errors.push(CheckError::InvalidValue {
                src: self.src(d.kind.span),
                span: d.kind.span.source_span(),
                message: format!("`{}` is not a data set kind prunex reads", d.kind.node),
                label: "unknown data set kind".to_owned(),
                help,
            });
        }
        let path = self.path(&d.path, "the data folder in quotes")?;
        let mut spec = DataSpec {
            kind: d.kind.clone(),
            path,
            batch: None,
            eval_batch: None,
            normalize: None,
            crop: None,
            flip: false,
            limit: None,
            pad: None,
        };
        for s in d.body.iter().flat_map(|b| &b.stmts) {
            match &s.node {
                ast::DataStmt::Batch(v) => spec.batch = self.positive_whole(v, "the batch size"),
                ast::DataStmt::EvalBatch(v) => {
                    spec.eval_batch = self.positive_whole(v, "the evaluation batch size")
                }
                ast::DataStmt::Limit(v) => spec.limit = self.positive_whole(v, "the sample limit"),
                ast::DataStmt::Pad(v) => spec.pad = self.whole(v, "the padding"),
                ast::DataStmt::Normalize { mean, std } => {
                    let m: Option<Vec<f64>> = mean
                        .values
                        .iter()
                        .map(|v| self.number(v, "a mean"))
                        .collect();
                    let sd: Option<Vec<f64>> = std
                        .values
                        .iter()
                        .map(|v| self.positive(v, "a standard deviation"))
                        .collect();
                    if let (Some(m), Some(sd)) = (m, sd) {
                        if m.len() != sd.len() {
                            self.errors.push(CheckError::InvalidValue {
                                src: self.src(s.span),
                                span: s.span.source_span(),
                                message: format!("`normalize` has {} means but {} standard deviations", m.len(), sd.len()),
                                label: "counts differ".to_owned(),
                                help: "give one mean and one standard deviation per input channel, or one of each for all".to_owned(),
                            });
                        } else {
                            spec.normalize = Some((m, sd));
                        }
                    }
                }
                ast::DataStmt::Augment(augs) => {
                    for a in augs {
                        match &a.node {
                            ast::Augment::Crop(v) => spec.crop = self.whole(v, "the crop padding"),
                            ast::Augment::Flip => spec.flip = true,
                        }
                    }
                }
            }
        }
        Some(spec)
    }

    fn train(&mut self, t: &mut TrainSpec, stmts: &[Spanned<ast::TrainStmt>]) {
        use ast::TrainStmt as S;
        for s in stmts {
            match &s.node {
                S::Epochs(v) => t.epochs = self.whole(v, "epochs").or(t.epochs),
                S::Lr(v) => t.lr = self.positive(v, "the learning rate").or(t.lr),
                S::Momentum(v) => {
                    let m = self.number(v, "a momentum");
                    if let Some(m) = m {
                        if !(0.0..1.0).contains(&m) {
                            self.range(
                                v,
                                "momentum must be at least 0 and below 1".into(),
                                "outside [0, 1)",
                                "typical values are 0.5 to 0.9".into(),
                            );
                        } else {
                            t.momentum = Some(m);
                        }
                    }
                }
                S::WeightDecay(v) => {
                    t.weight_decay = self.non_negative(v, "weight decay").or(t.weight_decay)
                }
                S::Nesterov => t.nesterov = Some(true),
                S::Batch(v) => t.batch = self.positive_whole(v, "the batch size").or(t.batch),
                S::Optimizer { kind, args } => {
                    t.optimizer = Some(
                        match kind.node {
                            ast::OptimizerKind::Sgd => "sgd",
                            ast::OptimizerKind::Adam => "adam",
                            ast::OptimizerKind::AdamW => "adamw",
                        }
                        .to_owned(),
                    );
                    self.train(t, args);
                }
                S::LrSchedule(ls) => {
                    let sched = match &ls.node {
                        ast::LrSchedule::Constant => Some(LrSchedule::Constant),
                        ast::LrSchedule::Cosine { min } => match min {
                            Some(m) => self
                                .non_negative(m, "the final learning rate")
                                .map(|min| LrSchedule::Cosine { min }),
                            None => Some(LrSchedule::Cosine { min: 0.0 }),
                        },
                        ast::LrSchedule::Step { every, unit, gamma } => {
                            let e = self.positive_whole(every, "the step period");
                            let g = self.positive(gamma, "gamma");
                            match (e, g) {
                                (Some(every), Some(gamma)) => Some(LrSchedule::Step {
                                    every,
                                    unit: (*unit).into(),
                                    gamma,
                                }),
                                _ => None,
                            }
                        }
                    };
                    if sched.is_some() {
                        t.lr_schedule = sched;
                        t.lr_schedule_span = Some(s.span);
                    }
                }
                S::Warmup { length, unit } => {
                    if let Some(n) = self.whole(length, "the warm-up length") {
                        t.warmup = Some((n, (*unit).into()));
                        t.warmup_span = Some(s.span);
                    }
                }
                S::LrMult { pattern, factor } => {
                    let p = self.text(pattern, "a module-name pattern in quotes");
                    let f = self.non_negative(factor, "a learning-rate multiplier");
                    if let (Some(p), Some(f)) = (p, f) {
                        t.lr_mult.push((Spanned::new(p, pattern.span), f));
                    }
                }
            }
        }
    }

    fn distill(&mut self, d: &mut DistillSpec, stmts: &[Spanned<ast::DistillStmt>]) {
        for s in stmts {
            match &s.node {
                ast::DistillStmt::Teacher(ast::Teacher::Dense) => {
                    d.teacher = Some(TeacherSpec::Dense)
                }
                ast::DistillStmt::Teacher(ast::Teacher::Model { source, weights }) => {
                    let weights = match weights {
                        Some(w) => self.path(w, "a weights file in quotes").map(|p| p.node),
                        None => None,
                    };
                    let source = match &source.node {
                        ast::ModelSource::File(p) => ast::ModelSource::File(
                            self.relative_to_file(source.span, p).display().to_string(),
                        ),
                        zoo => zoo.clone(),
                    };
                    d.teacher = Some(TeacherSpec::Model { source, weights });
                    d.teacher_span = Some(s.span);
                }
                ast::DistillStmt::Temperature(v) => {
                    d.temperature = self.positive(v, "the temperature").or(d.temperature)
                }
                ast::DistillStmt::Alpha(v) => d.alpha = self.unit_interval(v, "alpha").or(d.alpha),
            }
        }
    }

    fn prune(&mut self, p: &ast::PruneBlock, span: Span) -> PruneSpec {
        use ast::PruneStmt as S;
        let granularity = match p.granularity.node {
            ast::Granularity::Weights => "weights".to_owned(),
            ast::Granularity::Channels => "channels".to_owned(),
            ast::Granularity::Blocks => "blocks".to_owned(),
            ast::Granularity::NM { n, m } => format!("{n}:{m}"),
        };
        let importance = p.importance.as_ref().map(|i| {
            match i.node {
                ast::Importance::L1 => "l1",
                ast::Importance::L2 => "l2",
                ast::Importance::Random => "random",
                ast::Importance::BnScale => "bn_scale",
                ast::Importance::Taylor => "taylor",
            }
            .to_owned()
        });
        let mut spec = PruneSpec {
            granularity,
            importance,
            schedule: None,
            scope: None,
            max: None,
            min: None,
            round_to: None,
            rules: Vec::new(),
            ignore: Vec::new(),
            aggregate: None,
            batches: None,
            penalty: None,
            target: None,
            strict: false,
            span,
        };
        for s in &p.body.stmts {
            match &s.node {
                S::Schedule(sch) => {
                    if let Some(x) = self.schedule(&sch.node) {
                        spec.schedule = Some(Spanned::new(x, sch.span));
                    }
                }
                S::Scope { kind, max, min } => {
                    spec.scope = Some(
                        if *kind == ast::ScopeKind::Global {
                            "global"
                        } else {
                            "local"
                        }
                        .to_owned(),
                    );
                    if let Some(m) = max {
                        spec.max = self.fraction(m, "the per-layer cap");
                    }
                    if let Some(m) = min {
                        spec.min = self.fraction(m, "the per-layer floor");
                    }
                }
                S::RoundTo(v) => spec.round_to = self.positive_whole(v, "round_to"),
                S::Layer(r) | S::Group(r) => {
                    let kind = if matches!(s.node, S::Layer(_)) {
                        RuleKind::Layer
                    } else {
                        RuleKind::Group
                    };
                    let pat = self.text(&r.pattern, "a module-name pattern in quotes");
                    let val = self.fraction(&r.target.value, "a ratio");
                    if let (Some(pat), Some(value)) = (pat, val) {
                        spec.rules.push(RuleSpec {
                            kind,
                            pattern: Spanned::new(pat, r.pattern.span),
                            cmp: match r.target.cmp {
                                ast::Cmp::Eq => Cmp::Eq,
                                ast::Cmp::Le => Cmp::Le,
                                ast::Cmp::Ge => Cmp::Ge,
                            },
                            value,
                            span: s.span,
                        });
                    }
                }
                S::Ignore(pats) => {
                    for v in pats {
                        if let Some(t) = self.text(v, "a module-name pattern in quotes") {
                            spec.ignore.push(Spanned::new(t, v.span));
                        }
                    }
                }
                S::Aggregate(a) => {
                    spec.aggregate = Some(
                        match a {
                            ast::Aggregate::Sum => "sum",
                            ast::Aggregate::Mean => "mean",
                            ast::Aggregate::Max => "max",
                        }
                        .to_owned(),
                    )
                }
                S::Batches(v) => spec.batches = self.positive_whole(v, "the number of batches"),
                S::Penalty(v) => spec.penalty = self.non_negative(v, "the penalty"),
                S::Target { value, .. } => spec.target = self.fraction(value, "the target"),
                S::Strict => spec.strict = true,
            }
        }
        spec
    }

    fn schedule(&mut self, s: &ast::Schedule) -> Option<ScheduleSpec> {
        match s {
            ast::Schedule::Oneshot { at } => match at {
                None => Some(ScheduleSpec::Oneshot {
                    at: 0,
                    unit: Unit::Epochs,
                }),
                Some((u, v)) => Some(ScheduleSpec::Oneshot {
                    at: self.whole(v, "the pruning time")?,
                    unit: (*u).into(),
                }),
            },
            ast::Schedule::Iterative { rounds, to } => {
                let rounds = self.positive_whole(rounds, "the number of rounds");
                let to = match to {
                    Some(t) => Some(self.fraction(t, "the final fraction")?),
                    None => None,
                };
                Some(ScheduleSpec::Iterative {
                    rounds: rounds?,
                    to,
                })
            }
            ast::Schedule::Gradual {
                start,
                end,
                every,
                unit,
                from,
                until,
                curve,
            } => {
                let s0 = self.fraction(start, "the initial fraction");
                let s1 = self.fraction(end, "the final fraction");
                let ev = self.positive_whole(every, "the update period");
                let f = match from {
                    Some((u, v)) => Some((self.whole(v, "the first update")?, (*u).into())),
                    None => None,
                };
                let t = match until {
                    Some((u, v)) => Some((self.whole(v, "the last update")?, (*u).into())),
                    None => None,
                };
                let curve = match curve.as_ref().map(|c| c.node) {
                    None | Some(ast::Curve::Linear) => "linear",
                    Some(ast::Curve::Cubic) => "cubic",
                    Some(ast::Curve::Exp) => "exp",
                };
                Some(ScheduleSpec::Gradual {
                    start: s0?,
                    end: s1?,
                    every: ev?,
                    unit: (*unit).into(),
                    from: f,
                    until: t,
                    curve: curve.to_owned(),
                })
            }
        }
    }
}

fn parse_device(d: &str) -> Option<Device> {
    match d {
        "auto" => Some(Device::Auto),
        "cpu" => Some(Device::Cpu),
        "cuda" => Some(Device::Cuda(0)),
        _ => d.strip_prefix("cuda:")?.parse().ok().map(Device::Cuda),
    }
}
