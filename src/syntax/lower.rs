//! Lowering pest pairs into the spanned AST.
//!
//! The grammar has already accepted the shape of every pair this module sees,
//! so a mismatch here is a bug in prunex and becomes
//! [`SyntaxError::Internal`], never a panic.

use pest::iterators::Pair;

use super::ast::*;
use super::diag::SyntaxError;
use super::keywords::BlockKind;
use super::parser::{diagnose_bad_stmt, span_of, Rule};
use super::span::{SourceFile, Span, Spanned};

type P<'i> = Pair<'i, Rule>;

/// Builds AST nodes from pairs and collects the errors found on the way.
pub(super) struct Lower<'s> {
    src: &'s SourceFile,
    /// Errors found so far.
    pub errors: Vec<SyntaxError>,
}

/// The children of a pair, without comments.
fn kids<'i>(pair: &P<'i>) -> Vec<P<'i>> {
    pair.clone()
        .into_inner()
        .filter(|p| p.as_rule() != Rule::COMMENT)
        .collect()
}

impl<'s> Lower<'s> {
    pub(super) fn new(src: &'s SourceFile) -> Self {
        Lower {
            src,
            errors: Vec::new(),
        }
    }

    fn span(&self, pair: &P<'_>) -> Span {
        span_of(self.src.id, pair)
    }

    pub(super) fn internal(&mut self, pair: &P<'_>, message: String) {
        let s = pair.as_span();
        self.errors.push(SyntaxError::Internal {
            src: self.src.named(),
            span: (s.start(), s.end() - s.start()).into(),
            message,
        });
    }

    /// Reports a pair whose shape this module did not expect.
    fn shape<T>(&mut self, pair: &P<'_>, what: &str) -> Option<T> {
        self.internal(
            pair,
            format!("unexpected {:?} while reading {what}", pair.as_rule()),
        );
        None
    }

    fn duplicates(&mut self, seen: &[(&'static str, Span)]) {
        for (i, (key, span)) in seen.iter().enumerate() {
            if let Some((_, first)) = seen[..i].iter().find(|(k, _)| k == key) {
                self.errors.push(SyntaxError::Duplicate {
                    src: self.src.named(),
                    first: first.source_span(),
                    second: span.source_span(),
                    what: format!("`{key}`"),
                });
            }
        }
    }

    // ------------------------------------------------------------ values

    /// A number, percentage, string, device word or `$variable`.
    fn value(&mut self, pair: P<'_>) -> Option<SValue> {
        let span = self.span(&pair);
        let v = match pair.as_rule() {
            Rule::number => Value::Number {
                value: self.float(&pair, pair.as_str())?,
                text: pair.as_str().to_owned(),
            },
            Rule::percent => {
                let text = pair.as_str().trim_end_matches('%');
                Value::Percent {
                    value: self.float(&pair, text)? / 100.0,
                    text: text.to_owned(),
                }
            }
            Rule::string => Value::Str(self.string(&pair)),
            Rule::var_ref => Value::Var(pair.as_str()[1..].to_owned()),
            Rule::device_name | Rule::bool_word => Value::Word(pair.as_str().to_owned()),
            _ => return self.shape(&pair, "a value"),
        };
        Some(Spanned::new(v, span))
    }

    fn float(&mut self, pair: &P<'_>, text: &str) -> Option<f64> {
        match text.parse::<f64>() {
            Ok(v) if v.is_finite() => Some(v),
            _ => {
                let s = pair.as_span();
                self.errors.push(SyntaxError::InvalidNumber {
                    src: self.src.named(),
                    span: (s.start(), s.end() - s.start()).into(),
                    text: pair.as_str().to_owned(),
                    reason: "too large to represent".to_owned(),
                });
                None
            }
        }
    }

    fn string(&self, pair: &P<'_>) -> String {
        let raw = pair.as_str();
        let inner = &raw[1..raw.len() - 1];
        let mut out = String::with_capacity(inner.len());
        let mut chars = inner.chars();
        while let Some(c) = chars.next() {
            if c == '\\' {
                match chars.next() {
                    Some('n') => out.push('\n'),
                    Some('t') => out.push('\t'),
                    Some(other) => out.push(other),
                    None => {}
                }
            } else {
                out.push(c);
            }
        }
        out
    }

    fn num_list(&mut self, pair: P<'_>) -> Option<NumList> {
        let mut values = Vec::new();
        let mut bracketed = false;
        for k in kids(&pair) {
            match k.as_rule() {
                Rule::lbracket => bracketed = true,
                Rule::rbracket | Rule::comma => {}
                _ => values.push(self.value(k)?),
            }
        }
        Some(NumList { values, bracketed })
    }

    fn unit(&mut self, pair: P<'_>) -> Option<Unit> {
        match kids(&pair).first().map(|p| p.as_rule()) {
            Some(Rule::k_epochs | Rule::k_epoch) => Some(Unit::Epochs),
            Some(Rule::k_steps | Rule::k_step) => Some(Unit::Steps),
            _ => self.shape(&pair, "a unit"),
        }
    }

    // ------------------------------------------------------------ items

    /// Lowers one `item` pair.
    pub(super) fn item(&mut self, pair: P<'_>) -> Option<Spanned<Item>> {
        let span = self.span(&pair);
        let inner = kids(&pair).into_iter().next()?;
        let k = kids(&inner);
        let item = match inner.as_rule() {
            Rule::recipe_decl => Item::Recipe(self.value(k.get(1)?.clone())?),
            Rule::seed_decl => Item::Seed(self.value(k.get(1)?.clone())?),
            Rule::device_decl => Item::Device(self.value(k.get(1)?.clone())?),
            Rule::sync_bn_decl => Item::SyncBn(self.value(k.get(1)?.clone())?),
            Rule::export_decl => Item::Export(self.value(k.get(1)?.clone())?),
            Rule::include_decl => {
                let s = k.get(1)?;
                Item::Include(Spanned::new(self.string(s), self.span(s)))
            }
            Rule::let_decl => {
                let name = k.get(1)?;
                Item::Let {
                    name: Spanned::new(name.as_str().to_owned(), self.span(name)),
                    value: self.value(k.get(3)?.clone())?,
                }
            }
            Rule::model_block => Item::Model(self.model_block(k)?),
            Rule::data_block => Item::Data(self.data_block(k)?),
            Rule::pretrain_block => {
                Item::Pretrain(self.block(&k[1..], BlockKind::Pretrain, Self::train_stmt)?)
            }
            Rule::finetune_block => {
                Item::Finetune(self.block(&k[1..], BlockKind::Finetune, Self::train_stmt)?)
            }
            Rule::prune_block => Item::Prune(self.prune_block(k)?),
            Rule::distill_block => {
                Item::Distill(self.block(&k[1..], BlockKind::Distill, Self::distill_stmt)?)
            }
            _ => return self.shape(&inner, "an item"),
        };
        Some(Spanned::new(item, span))
    }

    /// Lowers `{ stmt* }` from the pairs starting at its `lbrace`.
    fn block<S>(
        &mut self,
        pairs: &[P<'_>],
        kind: BlockKind,
        mut stmt: impl FnMut(&mut Self, P<'_>) -> Option<Spanned<S>>,
    ) -> Option<Block<S>>
    where
        S: Setting,
    {
        let (first, rest) = pairs.split_first()?;
        if first.as_rule() != Rule::lbrace {
            return self.shape(first, "a block");
        }
        let open = Spanned::at(self.span(first));
        let mut stmts = Vec::new();
        let mut close = None;
        for p in rest {
            match p.as_rule() {
                Rule::bad_stmt => {
                    let e = diagnose_bad_stmt(self.src, p.as_span().start(), kind);
                    self.errors.push(e);
                }
                Rule::rbrace => close = Some(Spanned::at(self.span(p))),
                _ => {
                    if let Some(s) = stmt(self, p.clone()) {
                        stmts.push(s);
                    }
                }
            }
        }
        let mut seen = Vec::new();
        for s in &stmts {
            s.node.keys(s.span, &mut seen);
        }
        self.duplicates(&seen);
        Some(Block {
            stmts,
            open,
            close: close?,
        })
    }

    fn model_source(&mut self, pair: &P<'_>) -> Option<Spanned<ModelSource>> {
        let inner = kids(pair).into_iter().next()?;
        let src = match inner.as_rule() {
            Rule::ident => ModelSource::Zoo(inner.as_str().to_owned()),
            Rule::string => ModelSource::File(self.string(&inner)),
            _ => return self.shape(&inner, "a model source"),
        };
        Some(Spanned::new(src, self.span(pair)))
    }

    fn model_block(&mut self, k: Vec<P<'_>>) -> Option<ModelBlock> {
        let source = self.model_source(k.get(1)?)?;
        let body = if k.len() > 2 {
            Some(self.block(&k[2..], BlockKind::Model, Self::model_stmt)?)
        } else {
            None
        };
        Some(ModelBlock { source, body })
    }

    fn model_stmt(&mut self, pair: P<'_>) -> Option<Spanned<ModelStmt>> {
        let inner = kids(&pair).into_iter().next()?;
        let span = self.span(&inner);
        let k = kids(&inner);
        let stmt = match inner.as_rule() {
            Rule::input_stmt => {
                let mut dims = Vec::new();
                for p in &k[1..] {
                    if !matches!(p.as_rule(), Rule::lbracket | Rule::rbracket | Rule::comma) {
                        dims.push(self.value(p.clone())?);
                    }
                }
                ModelStmt::Input(dims)
            }
            Rule::classes_stmt => ModelStmt::Classes(self.value(k.get(1)?.clone())?),
            Rule::weights_stmt => ModelStmt::Weights(self.value(k.get(1)?.clone())?),
            _ => return self.shape(&inner, "a model setting"),
        };
        Some(Spanned::new(stmt, span))
    }

    fn data_block(&mut self, k: Vec<P<'_>>) -> Option<DataBlock> {
        let kind = k.get(1)?;
        let kind = Spanned::new(kind.as_str().to_owned(), self.span(kind));
        let path = self.value(k.get(2)?.clone())?;
        let body = if k.len() > 3 {
            Some(self.block(&k[3..], BlockKind::Data, Self::data_stmt)?)
        } else {
            None
        };
        Some(DataBlock { kind, path, body })
    }

    fn data_stmt(&mut self, pair: P<'_>) -> Option<Spanned<DataStmt>> {
        let inner = kids(&pair).into_iter().next()?;
        let span = self.span(&inner);
        let k = kids(&inner);
        let stmt = match inner.as_rule() {
            Rule::batch_stmt => DataStmt::Batch(self.value(k.get(1)?.clone())?),
            Rule::eval_batch_stmt => DataStmt::EvalBatch(self.value(k.get(1)?.clone())?),
            Rule::limit_stmt => DataStmt::Limit(self.value(k.get(1)?.clone())?),
            Rule::pad_stmt => DataStmt::Pad(self.value(k.get(1)?.clone())?),
            Rule::normalize_stmt => DataStmt::Normalize {
                mean: self.num_list(k.get(2)?.clone())?,
                std: self.num_list(k.get(4)?.clone())?,
            },
            Rule::augment_stmt => {
                let mut augs = Vec::new();
                let mut seen = Vec::new();
                for a in &k[1..] {
                    let ak = kids(a);
                    let sp = self.span(a);
                    let aug = match ak.first()?.as_rule() {
                        Rule::k_crop => Augment::Crop(self.value(ak.get(1)?.clone())?),
                        Rule::k_flip => Augment::Flip,
                        _ => return self.shape(a, "an augmentation"),
                    };
                    seen.push((
                        if matches!(aug, Augment::Flip) {
                            "flip"
                        } else {
                            "crop"
                        },
                        sp,
                    ));
                    augs.push(Spanned::new(aug, sp));
                }
                self.duplicates(&seen);
                DataStmt::Augment(augs)
            }
            _ => return self.shape(&inner, "a data setting"),
        };
        Some(Spanned::new(stmt, span))
    }

    fn train_stmt(&mut self, pair: P<'_>) -> Option<Spanned<TrainStmt>> {
        let inner = kids(&pair).into_iter().next()?;
        let span = self.span(&inner);
        let k = kids(&inner);
        let stmt = match inner.as_rule() {
            Rule::epochs_stmt => TrainStmt::Epochs(self.value(k.get(1)?.clone())?),
            Rule::lr_stmt => TrainStmt::Lr(self.value(k.get(1)?.clone())?),
            Rule::momentum_stmt => TrainStmt::Momentum(self.value(k.get(1)?.clone())?),
            Rule::weight_decay_stmt => TrainStmt::WeightDecay(self.value(k.get(1)?.clone())?),
            Rule::nesterov_stmt => TrainStmt::Nesterov,
            Rule::batch_stmt => TrainStmt::Batch(self.value(k.get(1)?.clone())?),
            Rule::optimizer_stmt => {
                let kind_pair = k.get(1)?;
                let kind = match kids(kind_pair).first()?.as_rule() {
                    Rule::k_sgd => OptimizerKind::Sgd,
                    Rule::k_adam => OptimizerKind::Adam,
                    Rule::k_adamw => OptimizerKind::AdamW,
                    _ => return self.shape(kind_pair, "an optimizer"),
                };
                let mut args = Vec::new();
                for a in &k[2..] {
                    args.push(self.train_stmt(a.clone())?);
                }
                TrainStmt::Optimizer {
                    kind: Spanned::new(kind, self.span(kind_pair)),
                    args,
                }
            }
            Rule::lr_schedule_stmt => {
                let s = k.get(1)?;
                let sk = kids(s);
                let sched = match s.as_rule() {
                    Rule::lr_constant => LrSchedule::Constant,
                    Rule::lr_cosine => LrSchedule::Cosine {
                        min: match sk.get(2) {
                            Some(p) => Some(self.value(p.clone())?),
                            None => None,
                        },
                    },
                    Rule::lr_step => {
                        // k_step k_every? num unit k_gamma num
                        let rest: Vec<_> = sk
                            .iter()
                            .filter(|p| p.as_rule() != Rule::k_every)
                            .skip(1)
                            .collect();
                        LrSchedule::Step {
                            every: self.value((*rest.first()?).clone())?,
                            unit: self.unit((*rest.get(1)?).clone())?,
                            gamma: self.value((*rest.get(3)?).clone())?,
                        }
                    }
                    _ => return self.shape(s, "a learning-rate schedule"),
                };
                TrainStmt::LrSchedule(Spanned::new(sched, self.span(s)))
            }
            Rule::warmup_stmt => TrainStmt::Warmup {
                length: self.value(k.get(1)?.clone())?,
                unit: self.unit(k.get(2)?.clone())?,
            },
            Rule::lr_mult_stmt => TrainStmt::LrMult {
                pattern: self.value(k.get(1)?.clone())?,
                factor: self.value(k.get(2)?.clone())?,
            },
            Rule::optimizer_arg => return self.train_stmt(inner),
            _ => return self.shape(&inner, "a training setting"),
        };
        Some(Spanned::new(stmt, span))
    }

    fn prune_block(&mut self, k: Vec<P<'_>>) -> Option<PruneBlock> {
        let g = k.get(1)?;
        let gk = kids(g);
        let granularity = match gk.first().map(|p| p.as_rule()) {
            Some(Rule::n_m) => {
                let text = gk[0].as_str();
                let (n, m) = text.split_once(':')?;
                match (n.parse::<u32>(), m.parse::<u32>()) {
                    (Ok(n), Ok(m)) if n >= 1 && m > n => Granularity::NM { n, m },
                    _ => {
                        let s = g.as_span();
                        self.errors.push(SyntaxError::InvalidNM {
                            src: self.src.named(),
                            span: (s.start(), s.end() - s.start()).into(),
                            text: text.to_owned(),
                            n: n.to_owned(),
                            m: m.to_owned(),
                        });
                        return None;
                    }
                }
            }
            Some(Rule::k_weights) => Granularity::Weights,
            Some(Rule::k_channels) => Granularity::Channels,
            Some(Rule::k_blocks) => Granularity::Blocks,
            Some(Rule::k_heads) => Granularity::Heads,
            _ => return self.shape(g, "a granularity"),
        };
        let granularity = Spanned::new(granularity, self.span(g));
        let (importance, body_at) = if k.get(2).map(|p| p.as_rule()) == Some(Rule::k_by) {
            let ip = k.get(3)?;
            let imp = match kids(ip).first()?.as_rule() {
                Rule::k_l1 => Importance::L1,
                Rule::k_l2 => Importance::L2,
                Rule::k_random => Importance::Random,
                Rule::k_bn_scale => Importance::BnScale,
                Rule::k_taylor => Importance::Taylor,
                Rule::k_wanda => Importance::Wanda,
                _ => return self.shape(ip, "an importance"),
            };
            (Some(Spanned::new(imp, self.span(ip))), 4)
        } else {
            (None, 2)
        };
        let body = self.block(&k[body_at..], BlockKind::Prune, Self::prune_stmt)?;
        Some(PruneBlock {
            granularity,
            importance,
            body,
        })
    }

    fn target(&mut self, pair: &P<'_>) -> Option<Target> {
        let k = kids(pair);
        let word = match k.first()?.as_rule() {
            Rule::k_ratio => TargetWord::Ratio,
            _ => TargetWord::Sparsity,
        };
        let (cmp, value) = if k.len() == 3 {
            let cmp = match k[1].as_str() {
                "<=" => Cmp::Le,
                ">=" => Cmp::Ge,
                _ => Cmp::Eq,
            };
            (cmp, k[2].clone())
        } else {
            (Cmp::Eq, k.get(1)?.clone())
        };
        Some(Target {
            word,
            cmp,
            value: self.value(value)?,
        })
    }

    fn rule(&mut self, k: &[P<'_>]) -> Option<LayerRule> {
        Some(LayerRule {
            pattern: self.value(k.get(1)?.clone())?,
            target: self.target(k.get(2)?)?,
        })
    }

    fn prune_stmt(&mut self, pair: P<'_>) -> Option<Spanned<PruneStmt>> {
        let inner = kids(&pair).into_iter().next()?;
        let span = self.span(&inner);
        let k = kids(&inner);
        let stmt = match inner.as_rule() {
            Rule::schedule_stmt => {
                let s = k.get(1)?;
                PruneStmt::Schedule(Spanned::new(self.schedule(s)?, self.span(s)))
            }
            Rule::scope_stmt => {
                let kind = match k.get(1)?.as_rule() {
                    Rule::k_global => ScopeKind::Global,
                    _ => ScopeKind::Local,
                };
                let (mut max, mut min) = (None, None);
                let mut seen = Vec::new();
                for c in &k[2..] {
                    let v = self.value(kids(c).get(1)?.clone())?;
                    if c.as_rule() == Rule::scope_max {
                        seen.push(("max", self.span(c)));
                        max = Some(v);
                    } else {
                        seen.push(("min", self.span(c)));
                        min = Some(v);
                    }
                }
                self.duplicates(&seen);
                PruneStmt::Scope { kind, max, min }
            }
            Rule::round_to_stmt => PruneStmt::RoundTo(self.value(k.get(1)?.clone())?),
            Rule::layer_rule => PruneStmt::Layer(self.rule(&k)?),
            Rule::group_rule => PruneStmt::Group(self.rule(&k)?),
            Rule::ignore_stmt => {
                let mut pats = Vec::new();
                for p in &k[1..] {
                    if p.as_rule() != Rule::comma {
                        pats.push(self.value(p.clone())?);
                    }
                }
                PruneStmt::Ignore(pats)
            }
            Rule::aggregate_stmt => PruneStmt::Aggregate(match k.get(1)?.as_rule() {
                Rule::k_sum => Aggregate::Sum,
                Rule::k_mean => Aggregate::Mean,
                _ => Aggregate::Max,
            }),
            Rule::batches_stmt => PruneStmt::Batches(self.value(k.get(1)?.clone())?),
            Rule::penalty_stmt => PruneStmt::Penalty(self.value(k.get(1)?.clone())?),
            Rule::target_stmt => PruneStmt::Target {
                word: if k.first()?.as_rule() == Rule::k_ratio {
                    TargetWord::Ratio
                } else {
                    TargetWord::Sparsity
                },
                value: self.value(k.get(1)?.clone())?,
            },
            Rule::strict_stmt => PruneStmt::Strict,
            _ => return self.shape(&inner, "a prune setting"),
        };
        Some(Spanned::new(stmt, span))
    }

    fn schedule(&mut self, pair: &P<'_>) -> Option<Schedule> {
        let k = kids(pair);
        match pair.as_rule() {
            Rule::oneshot => {
                let at = if k.len() >= 4 {
                    Some((self.unit(k[2].clone())?, self.value(k[3].clone())?))
                } else {
                    None
                };
                Some(Schedule::Oneshot { at })
            }
            Rule::iterative => Some(Schedule::Iterative {
                rounds: self.value(k.get(1)?.clone())?,
                to: match k.get(4) {
                    Some(p) => Some(self.value(p.clone())?),
                    None => None,
                },
            }),
            Rule::gradual => {
                // k_gradual num arrow num k_every num unit clause*
                let start = self.value(k.get(1)?.clone())?;
                let end = self.value(k.get(3)?.clone())?;
                let every = self.value(k.get(5)?.clone())?;
                let unit = self.unit(k.get(6)?.clone())?;
                let (mut from, mut until, mut curve) = (None, None, None);
                let mut seen = Vec::new();
                for c in &k[7..] {
                    let ck = kids(c);
                    let sp = self.span(c);
                    match c.as_rule() {
                        Rule::gradual_curve => {
                            seen.push(("curve", sp));
                            let cv = match ck.get(1)?.as_rule() {
                                Rule::k_linear => Curve::Linear,
                                Rule::k_cubic => Curve::Cubic,
                                _ => Curve::Exp,
                            };
                            curve = Some(Spanned::new(cv, self.span(&ck[1])));
                        }
                        Rule::gradual_from | Rule::gradual_until => {
                            let (u, v) = if ck.len() == 3 {
                                (self.unit(ck[1].clone())?, self.value(ck[2].clone())?)
                            } else {
                                (unit, self.value(ck.get(1)?.clone())?)
                            };
                            if c.as_rule() == Rule::gradual_from {
                                seen.push(("from", sp));
                                from = Some((u, v));
                            } else {
                                seen.push(("until", sp));
                                until = Some((u, v));
                            }
                        }
                        _ => return self.shape(c, "a gradual schedule"),
                    }
                }
                self.duplicates(&seen);
                Some(Schedule::Gradual {
                    start,
                    end,
                    every,
                    unit,
                    from,
                    until,
                    curve,
                })
            }
            _ => self.shape(pair, "a schedule"),
        }
    }

    fn distill_stmt(&mut self, pair: P<'_>) -> Option<Spanned<DistillStmt>> {
        let inner = kids(&pair).into_iter().next()?;
        let span = self.span(&inner);
        let k = kids(&inner);
        let stmt = match inner.as_rule() {
            Rule::teacher_stmt => {
                let t = k.get(1)?;
                if t.as_rule() == Rule::k_dense {
                    DistillStmt::Teacher(Teacher::Dense)
                } else {
                    let source = self.model_source(t)?;
                    let weights = match k.get(3) {
                        Some(w) => Some(self.value(w.clone())?),
                        None => None,
                    };
                    DistillStmt::Teacher(Teacher::Model { source, weights })
                }
            }
            Rule::temperature_stmt => DistillStmt::Temperature(self.value(k.get(1)?.clone())?),
            Rule::alpha_stmt => DistillStmt::Alpha(self.value(k.get(1)?.clone())?),
            _ => return self.shape(&inner, "a distill setting"),
        };
        Some(Spanned::new(stmt, span))
    }
}

/// Statements that may appear once per block report their key here.
pub(super) trait Setting {
    /// Pushes the keys this statement sets, for duplicate detection.
    fn keys(&self, span: Span, out: &mut Vec<(&'static str, Span)>);
}

impl Setting for ModelStmt {
    fn keys(&self, span: Span, out: &mut Vec<(&'static str, Span)>) {
        out.push((
            match self {
                ModelStmt::Input(_) => "input",
                ModelStmt::Classes(_) => "classes",
                ModelStmt::Weights(_) => "weights",
            },
            span,
        ));
    }
}

impl Setting for DataStmt {
    fn keys(&self, span: Span, out: &mut Vec<(&'static str, Span)>) {
        out.push((
            match self {
                DataStmt::Batch(_) => "batch",
                DataStmt::EvalBatch(_) => "eval_batch",
                DataStmt::Normalize { .. } => "normalize",
                DataStmt::Augment(_) => "augment",
                DataStmt::Limit(_) => "limit",
                DataStmt::Pad(_) => "pad",
            },
            span,
        ));
    }
}

impl Setting for TrainStmt {
    fn keys(&self, span: Span, out: &mut Vec<(&'static str, Span)>) {
        let key = match self {
            TrainStmt::Epochs(_) => "epochs",
            TrainStmt::Optimizer { args, .. } => {
                out.push(("optimizer", span));
                for a in args {
                    a.node.keys(a.span, out);
                }
                return;
            }
            TrainStmt::Lr(_) => "lr",
            TrainStmt::Momentum(_) => "momentum",
            TrainStmt::WeightDecay(_) => "weight_decay",
            TrainStmt::Nesterov => "nesterov",
            TrainStmt::LrSchedule(_) => "lr_schedule",
            TrainStmt::Warmup { .. } => "warmup",
            TrainStmt::Batch(_) => "batch",
            TrainStmt::LrMult { .. } => return,
        };
        out.push((key, span));
    }
}

impl Setting for PruneStmt {
    fn keys(&self, span: Span, out: &mut Vec<(&'static str, Span)>) {
        let key = match self {
            PruneStmt::Schedule(_) => "schedule",
            PruneStmt::Scope { .. } => "scope",
            PruneStmt::RoundTo(_) => "round_to",
            PruneStmt::Aggregate(_) => "aggregate",
            PruneStmt::Batches(_) => "batches",
            PruneStmt::Penalty(_) => "penalty",
            PruneStmt::Target { .. } => "ratio/sparsity",
            PruneStmt::Strict => "strict",
            PruneStmt::Layer(_) | PruneStmt::Group(_) | PruneStmt::Ignore(_) => return,
        };
        out.push((key, span));
    }
}

impl Setting for DistillStmt {
    fn keys(&self, span: Span, out: &mut Vec<(&'static str, Span)>) {
        out.push((
            match self {
                DistillStmt::Teacher(_) => "teacher",
                DistillStmt::Temperature(_) => "temperature",
                DistillStmt::Alpha(_) => "alpha",
            },
            span,
        ));
    }
}
