//! Resolution: the items of every loaded file, in effect order, merged into
//! one [`Recipe`] with values checked; single-valued items given twice in a
//! file, missing items and settings that cannot take effect are reported.

use std::collections::BTreeMap;

use super::patch::{Patch, Target};
use super::values::max;
use super::vars::{Override, Var};
use super::*;
use crate::check::diag::CheckError;
use crate::data::Kind as DataKind;
use crate::syntax::ast::{self, Item};
use crate::syntax::keywords;
use crate::syntax::{SourceMap, Span, Spanned, UnresolvedRecipe};

/// Resolves a loaded recipe. Returns the recipe (even when there are
/// errors, with the bad parts left out) and every problem found.
pub fn resolve(
    unresolved: &UnresolvedRecipe,
    overrides: &[Override],
    patches: &[Patch],
) -> (Recipe, Vec<CheckError>) {
    let mut r = Resolver {
        sources: &unresolved.sources,
        vars: BTreeMap::new(),
        errors: Vec::new(),
        origin: None,
    };
    let recipe = r.run(unresolved, overrides, patches);
    (recipe, r.errors)
}

pub(super) struct Resolver<'a> {
    pub(super) sources: &'a SourceMap,
    pub(super) vars: BTreeMap<String, Var>,
    pub(super) errors: Vec<CheckError>,
    /// Where the value read last came from, when it was a variable; range
    /// errors about that value say so.
    pub(super) origin: Option<String>,
}

impl Resolver<'_> {
    pub(super) fn src(&self, span: Span) -> miette::NamedSource<std::sync::Arc<str>> {
        self.sources.named(span)
    }

    pub(super) fn place(&self, span: Span) -> String {
        self.sources.place(span)
    }

    pub(super) fn run(
        &mut self,
        u: &UnresolvedRecipe,
        overrides: &[Override],
        patches: &[Patch],
    ) -> Recipe {
        self.collect_variables(u, overrides);
        let mut recipe = Recipe::default();
        // Single-valued items: the first span per (file, keyword), to refuse
        // a second one in the same file.
        let mut seen: BTreeMap<(usize, &'static str), Span> = BTreeMap::new();
        for item in &u.items {
            let kw = item.node.keyword();
            if matches!(
                kw,
                "recipe" | "seed" | "device" | "sync_bn" | "model" | "data" | "export" | "distill"
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
        // `--set` on settings: after every item, as if written last.
        for p in patches {
            self.patch(&mut recipe, p);
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
            // A data item that did not resolve has its own diagnostic.
            if recipe.data.is_none() && !u.items.iter().any(|i| matches!(i.node, Item::Data(_))) {
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
    pub(super) fn longer_than_training(&mut self, block: &str, t: &TrainSpec) {
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

    pub(super) fn missing(&mut self, span: Span, what: &'static str, example: &str) {
        self.errors.push(CheckError::MissingItem {
            src: self.src(span),
            span: span.source_span(),
            what,
            help: format!("add one, for example: `{example}`"),
        });
    }

    pub(super) fn item(&mut self, recipe: &mut Recipe, item: &Spanned<Item>) {
        match &item.node {
            Item::Recipe(v) => {
                if let Some(name) = self.text(v, "a recipe name in quotes") {
                    recipe.name = Some(Spanned::new(name, v.span));
                }
            }
            Item::Seed(v) => recipe.seed = self.whole(v, "the seed").or(recipe.seed),
            Item::SyncBn(v) => {
                if let Some(w) = self.text(v, "`true` or `false`") {
                    match w.as_str() {
                        "true" => recipe.sync_bn = Some(true),
                        "false" => recipe.sync_bn = Some(false),
                        _ => self.errors.push(CheckError::InvalidValue {
                            src: self.src(v.span),
                            span: v.span.source_span(),
                            message: format!("`{w}` is not `true` or `false`"),
                            label: "sync_bn is on or off".to_owned(),
                            help: "write `sync_bn true` (BatchNorm over all ranks' batches in a distributed run) or `sync_bn false` (per rank, the default)".to_owned(),
                        }),
                    }
                }
            }
            Item::Device(v) => {
                if let Some(d) = self.text(v, "a device") {
                    match parse_device(&d) {
                        Some(dev) => {
                            recipe.device = Some(dev);
                            recipe.device_span = Some(v.span);
                        }
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

    /// Applies a `--set` patch to the recipe resolved so far.
    fn patch(&mut self, recipe: &mut Recipe, p: &Patch) {
        match (p.target, &p.item.node) {
            (Target::Item, _) => self.item(recipe, &p.item),
            (Target::Model, Item::Model(m)) => {
                let stmts: Vec<_> = m
                    .body
                    .iter()
                    .flat_map(|b| b.stmts.iter().cloned())
                    .collect();
                match recipe.model.as_mut() {
                    Some(spec) => self.model_stmts(spec, &stmts),
                    None => self.unpatched(p, "the recipe has no `model` item"),
                }
            }
            (Target::Data, Item::Data(d)) => {
                let stmts: Vec<_> = d
                    .body
                    .iter()
                    .flat_map(|b| b.stmts.iter().cloned())
                    .collect();
                match recipe.data.as_mut() {
                    Some(spec) => self.data_stmts(spec, &stmts),
                    None => self.unpatched(p, "the recipe has no `data` item"),
                }
            }
            (Target::Prune(n), Item::Prune(block)) => {
                let stages = recipe.prune.len();
                match recipe.prune.get_mut(n - 1) {
                    Some(spec) => self.prune_stmts(spec, &block.body.stmts),
                    None => self.unpatched(
                        p,
                        &format!(
                            "the recipe has {stages} prune stage{}, counted from 1",
                            if stages == 1 { "" } else { "s" }
                        ),
                    ),
                }
            }
            _ => {}
        }
    }

    fn unpatched(&mut self, p: &Patch, reason: &str) {
        self.errors.push(CheckError::BadOverride {
            text: p.arg.clone(),
            reason: reason.to_owned(),
        });
    }

    pub(super) fn model(&mut self, m: &ast::ModelBlock) -> ModelSpec {
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
        let stmts: Vec<_> = m
            .body
            .iter()
            .flat_map(|b| b.stmts.iter().cloned())
            .collect();
        self.model_stmts(&mut spec, &stmts);
        spec
    }

    /// Applies a model block's statements (or a `--set model.…` patch's).
    pub(super) fn model_stmts(&mut self, spec: &mut ModelSpec, stmts: &[Spanned<ast::ModelStmt>]) {
        for s in stmts {
            match &s.node {
                ast::ModelStmt::Input(dims) => {
                    let vals: Option<Vec<u64>> = dims
                        .iter()
                        .map(|d| self.positive_up_to(d, "an input dimension", max::DIMENSION))
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
                        .positive_up_to(v, "the number of classes", max::CLASSES)
                        .map(|c| Spanned::new(c, v.span));
                }
                ast::ModelStmt::Weights(v) => {
                    spec.weights = self.path(v, "a weights file in quotes")
                }
            }
        }
    }

    pub(super) fn data(&mut self, d: &ast::DataBlock) -> Option<DataSpec> {
        let kinds: Vec<&str> = DataKind::ALL.iter().map(|k| k.name()).collect();
        let kind = DataKind::parse(&d.kind.node);
        if kind.is_none() {
            let help = match keywords::closest(&d.kind.node, &kinds) {
                Some(best) => format!("did you mean `{best}`?"),
                None => format!("prunex reads {}", keywords::list(&kinds)),
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
            // An unknown kind is reported above; the block's values are
            // still checked, then the data item is left out.
            kind: Spanned::new(kind.unwrap_or(DataKind::FashionMnist), d.kind.span),
            path,
            batch: None,
            eval_batch: None,
            normalize: None,
            crop: None,
            flip: false,
            limit: None,
            pad: None,
        };
        let stmts: Vec<_> = d
            .body
            .iter()
            .flat_map(|b| b.stmts.iter().cloned())
            .collect();
        self.data_stmts(&mut spec, &stmts);
        kind.map(|_| spec)
    }

    /// Applies a data block's statements (or a `--set data.…` patch's).
    pub(super) fn data_stmts(&mut self, spec: &mut DataSpec, stmts: &[Spanned<ast::DataStmt>]) {
        for s in stmts {
            match &s.node {
                ast::DataStmt::Batch(v) => {
                    spec.batch = self.positive_up_to(v, "the batch size", max::BATCH)
                }
                ast::DataStmt::EvalBatch(v) => {
                    spec.eval_batch =
                        self.positive_up_to(v, "the evaluation batch size", max::BATCH)
                }
                ast::DataStmt::Limit(v) => spec.limit = self.positive_whole(v, "the sample limit"),
                ast::DataStmt::Pad(v) => spec.pad = self.whole_up_to(v, "the padding", max::PIXELS),
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
                            ast::Augment::Crop(v) => {
                                spec.crop = self.whole_up_to(v, "the crop padding", max::PIXELS)
                            }
                            ast::Augment::Flip => spec.flip = true,
                        }
                    }
                }
            }
        }
    }

    pub(super) fn train(&mut self, t: &mut TrainSpec, stmts: &[Spanned<ast::TrainStmt>]) {
        use ast::TrainStmt as S;
        for s in stmts {
            match &s.node {
                S::Epochs(v) => t.epochs = self.whole_up_to(v, "epochs", max::EPOCHS).or(t.epochs),
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
                S::Batch(v) => {
                    t.batch = self
                        .positive_up_to(v, "the batch size", max::BATCH)
                        .or(t.batch)
                }
                S::Optimizer { kind, args } => {
                    t.optimizer = Some(match kind.node {
                        ast::OptimizerKind::Sgd => OptimizerKind::Sgd,
                        ast::OptimizerKind::Adam => OptimizerKind::Adam,
                        ast::OptimizerKind::AdamW => OptimizerKind::AdamW,
                    });
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

    pub(super) fn distill(&mut self, d: &mut DistillSpec, stmts: &[Spanned<ast::DistillStmt>]) {
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

    pub(super) fn prune(&mut self, p: &ast::PruneBlock, span: Span) -> PruneSpec {
        let granularity = match p.granularity.node {
            ast::Granularity::Weights => Granularity::Weights,
            ast::Granularity::Channels => Granularity::Channels,
            ast::Granularity::Blocks => Granularity::Blocks,
            ast::Granularity::Heads => Granularity::Heads,
            ast::Granularity::NM { n, m } => Granularity::NM {
                n: n as usize,
                m: m as usize,
            },
        };
        let importance = p.importance.as_ref().map(|i| match i.node {
            ast::Importance::L1 => Criterion::L1,
            ast::Importance::L2 => Criterion::L2,
            ast::Importance::Random => Criterion::Random,
            ast::Importance::BnScale => Criterion::BnScale,
            ast::Importance::Taylor => Criterion::Taylor,
            ast::Importance::Wanda => Criterion::Wanda,
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
        self.prune_stmts(&mut spec, &p.body.stmts);
        spec
    }

    /// Applies a prune block's statements (or a `--set prune.N.…` patch's).
    pub(super) fn prune_stmts(&mut self, spec: &mut PruneSpec, stmts: &[Spanned<ast::PruneStmt>]) {
        use ast::PruneStmt as S;
        for s in stmts {
            match &s.node {
                S::Schedule(sch) => {
                    if let Some(x) = self.schedule(&sch.node) {
                        spec.schedule = Some(Spanned::new(x, sch.span));
                    }
                }
                S::Scope { kind, max, min } => {
                    spec.scope = Some(match kind {
                        ast::ScopeKind::Global => Scope::Global,
                        ast::ScopeKind::Local => Scope::Local,
                    });
                    if let Some(m) = max {
                        spec.max = self.fraction(m, "the per-layer cap");
                    }
                    if let Some(m) = min {
                        spec.min = self.fraction(m, "the per-layer floor");
                    }
                }
                S::RoundTo(v) => spec.round_to = self.positive_up_to(v, "round_to", max::ROUND_TO),
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
                    spec.aggregate = Some(match a {
                        ast::Aggregate::Sum => Aggregate::Sum,
                        ast::Aggregate::Mean => Aggregate::Mean,
                        ast::Aggregate::Max => Aggregate::Max,
                    })
                }
                S::Batches(v) => {
                    spec.batches = self.positive_up_to(v, "the number of batches", max::ROUNDS)
                }
                S::Penalty(v) => spec.penalty = self.non_negative(v, "the penalty"),
                S::Target { value, .. } => spec.target = self.fraction(value, "the target"),
                S::Strict => spec.strict = true,
            }
        }
    }

    pub(super) fn schedule(&mut self, s: &ast::Schedule) -> Option<ScheduleSpec> {
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
                let rounds = self.positive_up_to(rounds, "the number of rounds", max::ROUNDS);
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
                    None | Some(ast::Curve::Linear) => Curve::Linear,
                    Some(ast::Curve::Cubic) => Curve::Cubic,
                    Some(ast::Curve::Exp) => Curve::Exp,
                };
                Some(ScheduleSpec::Gradual {
                    start: s0?,
                    end: s1?,
                    every: ev?,
                    unit: (*unit).into(),
                    from: f,
                    until: t,
                    curve,
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
