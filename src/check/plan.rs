//! Recipe + model graph → [`Plan`]: globs resolved against module names,
//! rules applied in order (later rules refine earlier ones) with the line
//! that set every target, coupling enforced, schedules expanded, and every
//! problem reported at once.

use std::collections::{BTreeMap, BTreeSet};

use globset::{Glob, GlobMatcher};
use miette::{LabeledSpan, Report};

use super::diag::CheckError;
use super::recipe::{Cmp, PruneSpec, Recipe, RuleKind, RuleSpec, ScheduleSpec};
use crate::graph::{analyze, coupling, Coupling, Frozen, Graph, GroupKind, NodeId, Op};
use crate::plan::{
    Aggregate, Criterion, Curve, Granularity, GroupPlan, LayerPlan, Plan, Scope, Stage, Step,
    Target, Unit,
};
use crate::prune::decide;
use crate::syntax::{SourceMap, Span, Spanned};

struct Ctx<'a> {
    g: &'a Graph,
    sources: &'a SourceMap,
    reports: Vec<Report>,
    /// Module names in graph order, each once.
    modules: Vec<(String, NodeId)>,
}

impl Ctx<'_> {
    fn src(&self, span: Span) -> miette::NamedSource<std::sync::Arc<str>> {
        self.sources.named(span)
    }

    /// `file:line` of a span (rules are named by line).
    fn place(&self, span: Span) -> String {
        let p = self.sources.place(span);
        p.rsplit_once(':')
            .map_or(p.clone(), |(fl, _)| fl.to_owned())
    }

    fn text(&self, span: Span) -> String {
        self.sources.get(span.file).text[span.start..span.end].to_owned()
    }

    fn push(&mut self, e: CheckError) {
        self.reports.push(Report::new(e));
    }

    /// Module nodes matching a glob; reports a glob that matches nothing.
    fn matches(&mut self, pattern: &Spanned<String>) -> Vec<NodeId> {
        let glob: GlobMatcher = match Glob::new(&pattern.node) {
            Ok(g) => g.compile_matcher(),
            Err(e) => {
                self.push(CheckError::InvalidValue {
                    src: self.src(pattern.span),
                    span: pattern.span.source_span(),
                    message: format!("`{}` is not a valid pattern", pattern.node),
                    label: e.kind().to_string(),
                    help: "patterns use `*` for any text and `?` for one character, e.g. `layer*.*.conv1`".into(),
                });
                return Vec::new();
            }
        };
        let found: Vec<NodeId> = self
            .modules
            .iter()
            .filter(|(n, _)| glob.is_match(n))
            .map(|(_, id)| *id)
            .collect();
        if found.is_empty() {
            let mut near: Vec<(usize, &str)> = self
                .modules
                .iter()
                .map(|(n, _)| {
                    (
                        strsim::levenshtein(&pattern.node.replace('*', ""), n),
                        n.as_str(),
                    )
                })
                .collect();
            near.sort();
            let names: Vec<String> = near.iter().take(3).map(|(_, n)| format!("`{n}`")).collect();
            let bare = pattern.node.trim_matches('*').trim_matches('.');
            let containing = self
                .modules
                .iter()
                .filter(|(n, _)| !bare.is_empty() && n.contains(bare))
                .count();
            let names = if containing > 0 && !pattern.node.contains('*') {
                vec![format!(
                    "the {containing} modules that `\"*{bare}*\"` matches"
                )]
            } else {
                names
            };
            let dp = if pattern.node.starts_with("module.")
                || pattern.node.starts_with("_orig_mod.")
            {
                " (prunex strips the `module.`/`_orig_mod.` prefixes of wrapped checkpoints: write names without them)"
            } else {
                ""
            };
            self.push(CheckError::UnmatchedPattern {
                src: self.src(pattern.span),
                span: pattern.span.source_span(),
                pattern: pattern.node.clone(),
                model: self.g.name.clone(),
                help: format!(
                    "the closest module names are {}{dp}; `prunex inspect {}` lists them all",
                    names.join(", "),
                    self.g.name
                ),
            });
        }
        found
    }

    /// The prunable layers among matches: conv/linear layers (and attention
    /// layers, whose output projection is a producer of their channels), or
    /// attention layers for `prune heads`; reports a rule that names only
    /// layers without weights, only BatchNorms, or no attention for heads.
    fn prunable(
        &mut self,
        pattern: &Spanned<String>,
        found: &[NodeId],
        rule: Span,
        granularity: Granularity,
    ) -> Vec<NodeId> {
        let heads = granularity == Granularity::Heads;
        let layers: Vec<NodeId> = found
            .iter()
            .copied()
            .filter(|&n| match self.g.nodes[n].op {
                Op::MultiheadAttention { .. } => true,
                Op::Conv2d { .. } | Op::Linear { .. } => !heads,
                _ => false,
            })
            .collect();
        if !layers.is_empty() || found.is_empty() {
            return layers;
        }
        if heads {
            let kinds: Vec<String> = found
                .iter()
                .take(3)
                .map(|&n| format!("`{}` ({})", self.g.nodes[n].name, self.g.nodes[n].op.kind()))
                .collect();
            self.push(CheckError::NoHeads {
                src: self.src(rule),
                span: pattern.span.source_span(),
                pattern: pattern.node.clone(),
                matched: kinds.join(", "),
                model: self.g.name.clone(),
            });
            return Vec::new();
        }
        let first = found[0];
        if let Op::BatchNorm2d { .. } = self.g.nodes[first].op {
            let conv = self.g.nodes[first]
                .inputs
                .first()
                .map(|&i| self.g.nodes[i].name.clone())
                .unwrap_or_default();
            self.push(CheckError::BatchNormRule {
                src: self.src(rule),
                span: pattern.span.source_span(),
                layer: self.g.nodes[first].name.clone(),
                help: format!(
                    "BatchNorm follows its convolution: it loses exactly the channels `{conv}` loses. Put the rule on the convolution: `layer \"{conv}\" ...`"
                ),
            });
        } else {
            let kinds: Vec<String> = found
                .iter()
                .take(3)
                .map(|&n| format!("`{}` ({})", self.g.nodes[n].name, self.g.nodes[n].op.kind()))
                .collect();
            self.push(CheckError::NoWeights {
                src: self.src(rule),
                span: pattern.span.source_span(),
                pattern: pattern.node.clone(),
                matched: kinds.join(", "),
            });
        }
        Vec::new()
    }
}

impl Ctx<'_> {
    /// Each rule with the prunable layers it names, in rule order; reports
    /// patterns that match nothing or only layers without weights.
    fn rule_matches<'s>(&mut self, spec: &'s PruneSpec) -> Vec<(&'s RuleSpec, Vec<NodeId>)> {
        spec.rules
            .iter()
            .map(|r| {
                let found = self.matches(&r.pattern);
                (
                    r,
                    self.prunable(&r.pattern, &found, r.span, spec.granularity),
                )
            })
            .collect()
    }

    /// The modules `ignore` names, each with the pattern that named it.
    fn ignored<'s>(&mut self, spec: &'s PruneSpec) -> BTreeMap<NodeId, &'s Spanned<String>> {
        let mut out = BTreeMap::new();
        for pat in &spec.ignore {
            for n in self.matches(pat) {
                out.insert(n, pat);
            }
        }
        out
    }
}

/// What planning yields: the plan, the distillation teacher's graph (the
/// executor builds it from this, never from the recipe), and every problem.
#[derive(Debug, Default)]
pub struct Planned {
    /// The plan, when the recipe has what a run needs.
    pub plan: Option<Plan>,
    /// The teacher's graph, when the recipe distils from another model.
    pub teacher: Option<Graph>,
    /// Errors and warnings.
    pub reports: Vec<Report>,
}

/// Builds the plan of a checked recipe whose model graph is `g`.
pub fn plan(
    recipe: &Recipe,
    g: &Graph,
    sources: &SourceMap,
    loader: &dyn crate::syntax::Loader,
) -> Planned {
    let mut seen = BTreeSet::new();
    let modules = g
        .modules()
        .filter(|(_, n)| seen.insert(n.name.clone()))
        .map(|(id, n)| (n.name.clone(), id))
        .collect();
    let mut cx = Ctx {
        g,
        sources,
        reports: Vec::new(),
        modules,
    };
    let failed = |cx: Ctx<'_>, e: crate::graph::GraphError| Planned {
        reports: cx.reports.into_iter().chain([Report::new(e)]).collect(),
        ..Planned::default()
    };
    let before = match analyze(g, g.input) {
        Ok(a) => a,
        Err(e) => return failed(cx, e),
    };
    let finetune_epochs = recipe.finetune.as_ref().and_then(|f| f.epochs);
    let mut stages = Vec::new();
    // Each stage is planned on the graph the stages before it leave.
    let mut current = g.clone();
    let mut counts = (before.total_params, before.total_macs);
    for spec in &recipe.prune {
        let steps = schedule(&mut cx, spec, finetune_epochs);
        let c = match coupling(&current) {
            Ok(c) => c,
            Err(e) => return failed(cx, e),
        };
        // bn_scale needs BatchNorms after what the stage prunes: heads
        // never have one, and a model without any has none.
        let no_bn = match spec.granularity {
            Granularity::Heads => true,
            Granularity::Channels => !current
                .nodes
                .iter()
                .any(|n| matches!(n.op, Op::BatchNorm2d { .. })),
            _ => false,
        };
        if spec.importance == Some(Criterion::Wanda)
            && !matches!(
                spec.granularity,
                Granularity::Weights | Granularity::NM { .. }
            )
        {
            cx.push(CheckError::WandaStructured {
                src: cx.src(spec.span),
                span: spec.span.source_span(),
                granularity: spec.granularity.to_string(),
            });
        }
        if spec.importance == Some(Criterion::BnScale) && no_bn {
            cx.push(CheckError::NoBatchNorm {
                src: cx.src(spec.span),
                span: spec.span.source_span(),
                what: if spec.granularity == Granularity::Heads {
                    "heads"
                } else {
                    "channels"
                },
                model: g.name.clone(),
            });
        }
        let mut stage = match spec.granularity {
            Granularity::Channels | Granularity::Heads => {
                channels(&mut cx, spec, &c, steps, &current)
            }
            Granularity::Blocks => blocks(&mut cx, spec, steps, &current),
            Granularity::Weights | Granularity::NM { .. } => masks(&mut cx, spec, steps, &current),
        };
        match predict(&mut stage, &current, counts) {
            Ok(next) => current = next,
            Err(e) => return failed(cx, e),
        }
        counts = (stage.params_after, stage.macs_after);
        stages.push(stage);
    }
    let teacher = teacher(&mut cx, recipe, loader);
    // Learning-rate multipliers must name layers, like every other glob.
    for t in [&recipe.pretrain, &recipe.finetune].into_iter().flatten() {
        for (pattern, _) in &t.lr_mult {
            cx.matches(pattern);
        }
    }
    let plan = super::settings::resolve(recipe, teacher.as_ref().map(|(t, _)| t.clone())).map(
        |settings| Plan {
            recipe: recipe
                .name
                .as_ref()
                .map(|n| n.node.clone())
                .unwrap_or_default(),
            model: g.name.clone(),
            input: g.input,
            params_before: before.total_params,
            macs_before: before.total_macs,
            overrides: Vec::new(),
            seed: settings.seed,
            device: settings.device,
            sync_bn: settings.sync_bn,
            weights: settings.weights,
            data: settings.data,
            pretrain: settings.pretrain,
            stages,
            distill: settings.distill,
            finetune: settings.finetune,
            export: settings.export,
        },
    );
    cx.reports.extend(super::preflight::preflight(
        recipe,
        g,
        &before,
        plan.as_ref(),
        sources,
        loader,
    ));
    Planned {
        plan,
        teacher: teacher.map(|(_, g)| g),
        reports: cx.reports,
    }
}

/// Fills in a stage's predicted counts (and each group's channels kept)
/// from [`decide::step`] without weights: the same function the executor
/// prunes with. Returns the graph the stage leaves.
fn predict(
    stage: &mut Stage,
    g: &Graph,
    (params, macs): (u64, u64),
) -> Result<Graph, crate::graph::GraphError> {
    let Some(last) = stage.schedule.last().cloned() else {
        stage.params_after = params;
        stage.macs_after = macs;
        return Ok(g.clone());
    };
    let decided =
        |gp: &GroupPlan| stage.scope == Scope::Local || matches!(gp.target, Target::Exact(_));
    let keeps: Vec<_> = stage
        .groups
        .iter()
        .map(|gp| {
            decide::group_keep(stage, gp, &last).map(|(k, r)| {
                let steps = stage
                    .schedule
                    .iter()
                    .filter_map(|st| decide::fraction_at(stage, &gp.target, st))
                    .map(|f| (f * 1e6).round() / 1e6)
                    .collect();
                (decided(gp).then_some(k), r.filter(|_| decided(gp)), steps)
            })
        })
        .collect();
    for (gp, k) in stage.groups.iter_mut().zip(keeps) {
        if let Some((keep, rounded, steps)) = k {
            gp.keep = keep;
            gp.rounded = rounded;
            gp.steps = steps;
        }
    }
    Ok(
        match decide::step(stage, &last, g, decide::Inputs::default())? {
            decide::Outcome::Rebuilt { graph, .. } => {
                let after = analyze(&graph, graph.input)?;
                stage.params_after = after.total_params;
                stage.macs_after = after.total_macs;
                graph
            }
            decide::Outcome::Masks { zeros, .. } => {
                stage.params_after = params.saturating_sub(zeros);
                stage.macs_after = macs;
                g.clone()
            }
        },
    )
}

/// The stage-wide fraction the schedule ends at.
fn stage_end(spec: &PruneSpec) -> f64 {
    match spec.schedule.as_ref().map(|s| &s.node) {
        Some(ScheduleSpec::Gradual { end, .. }) => *end,
        Some(ScheduleSpec::Iterative { to: Some(t), .. }) => *t,
        _ => spec.target.unwrap_or(0.0),
    }
}

fn curve_at(curve: Curve, start: f64, end: f64, k: usize, n: usize) -> f64 {
    let t = k as f64 / n as f64;
    let x = match curve {
        Curve::Cubic => end + (start - end) * (1.0 - t).powi(3),
        Curve::Exp => {
            // Geometric in what is kept: (1-s) moves by a constant factor.
            let (a, b) = ((1.0 - start).max(1e-9), (1.0 - end).max(1e-9));
            1.0 - a * (b / a).powf(t)
        }
        Curve::Linear => start + (end - start) * t,
    };
    (x * 1e6).round() / 1e6
}

/// A one-step schedule of a stage without a stage-wide fraction (per-layer
/// rules only) takes every layer all the way to its own target.
fn whole(end: f64) -> Option<f64> {
    (end <= 0.0).then_some(1.0)
}

/// Expands a stage's schedule and checks it against the fine-tuning length.
fn schedule(cx: &mut Ctx<'_>, spec: &PruneSpec, finetune: Option<u64>) -> Vec<Step> {
    let end = stage_end(spec);
    let Some(s) = &spec.schedule else {
        return vec![Step {
            at: 0,
            unit: Unit::Epochs,
            fraction: end,
            progress: whole(end),
        }];
    };
    // A step at epoch E prunes before fine-tuning epoch E+1; one at or
    // past the last epoch would never run (epoch 0 always does).
    let beyond = |cx: &mut Ctx<'_>, at: u64, unit: Unit, what: &dyn Fn(u64) -> String| {
        let f = finetune.unwrap_or(0);
        if unit == Unit::Epochs && at > 0 && at >= f {
            let (ends, fix) = if f == 0 {
                (
                    "the recipe does not fine-tune, so pruning can only happen at epoch 0"
                        .to_owned(),
                    "prune at epoch 0, or add `finetune { epochs N }` to prune during fine-tuning"
                        .to_owned(),
                )
            } else {
                (
                    format!(
                        "fine-tuning has {f} epoch{}, so the last epoch a schedule can prune at is {}",
                        if f == 1 { "" } else { "s" },
                        f - 1
                    ),
                    format!("{}, or fine-tune longer", what(f - 1)),
                )
            };
            cx.push(CheckError::ScheduleBeyondFinetune {
                src: cx.src(s.span),
                span: s.span.source_span(),
                at,
                ends,
                fix,
            });
        }
    };
    match &s.node {
        ScheduleSpec::Oneshot { at, unit } => {
            beyond(cx, *at, *unit, &|last| {
                format!("prune at epoch {last} at the latest")
            });
            vec![Step {
                at: *at,
                unit: *unit,
                fraction: end,
                progress: whole(end),
            }]
        }
        ScheduleSpec::Iterative { rounds, to } => {
            let target = to.unwrap_or(end);
            let per = finetune.map(|f| f / rounds).unwrap_or(1).max(1);
            // Without a stage-wide fraction (per-layer rules only) each
            // round goes k/N of the way to every layer's own target.
            let relative = target <= 0.0;
            beyond(cx, (*rounds - 1) * per, Unit::Epochs, &|last| {
                format!("use at most {} rounds", last + 1)
            });
            (1..=*rounds)
                .map(|k| Step {
                    at: (k - 1) * per,
                    unit: Unit::Epochs,
                    fraction: curve_at(Curve::Linear, 0.0, target, k as usize, *rounds as usize),
                    progress: relative
                        .then(|| curve_at(Curve::Linear, 0.0, 1.0, k as usize, *rounds as usize)),
                })
                .collect()
        }
        ScheduleSpec::Gradual {
            start,
            end,
            every,
            unit,
            from,
            until,
            curve,
        } => {
            let from_at = from.map(|(f, _)| f).unwrap_or(0);
            let until_at = match until {
                Some((u, _)) => *u,
                None => match (unit, finetune) {
                    (Unit::Epochs, Some(f)) => f.saturating_sub(*every).max(from_at),
                    _ => from_at + 10 * every,
                },
            };
            if until_at < from_at {
                cx.push(CheckError::ScheduleOrder {
                    src: cx.src(s.span),
                    span: s.span.source_span(),
                    from: from_at,
                    until: until_at,
                });
                return Vec::new();
            }
            let n = ((until_at - from_at) / every) as usize;
            beyond(cx, from_at + n as u64 * every, *unit, &|last| {
                format!("end the schedule by epoch {last} (`until epoch {last}`)")
            });
            if n == 0 && (start - end).abs() > 1e-12 {
                cx.push(CheckError::UnreachableTarget {
                    src: cx.src(s.span),
                    span: s.span.source_span(),
                    every: *every,
                    from: from_at,
                    until: until_at,
                    end: *end,
                });
                return Vec::new();
            }
            (0..=n)
                .map(|k| Step {
                    at: from_at + k as u64 * every,
                    unit: *unit,
                    fraction: if n == 0 {
                        *end
                    } else {
                        curve_at(*curve, *start, *end, k, n)
                    },
                    progress: None,
                })
                .collect()
        }
    }
}

fn rule_text(cx: &Ctx<'_>, r: &RuleSpec) -> String {
    format!(
        "{} ({})",
        cx.text(r.span)
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" "),
        cx.place(r.span)
    )
}

fn target_of(r: &RuleSpec) -> Target {
    match r.cmp {
        Cmp::Eq => Target::Exact(r.value),
        Cmp::Le => Target::AtMost(r.value),
        Cmp::Ge => Target::AtLeast(r.value),
    }
}

/// Plans a channels stage on `g` (the graph earlier stages leave): each
/// coupled group's target and the recipe lines behind it. Counts are filled
/// in by [`predict`].
fn channels(
    cx: &mut Ctx<'_>,
    spec: &PruneSpec,
    c: &Coupling,
    schedule: Vec<Step>,
    g: &Graph,
) -> Stage {
    let end = stage_end(spec);
    // Rules match the model's module names; by name, they find the layers
    // of a graph an earlier stage changed.
    let name = |cx: &Ctx<'_>, id: NodeId| cx.g.nodes[id].name.clone();
    let kind = spec.granularity.group_kind();
    let of = match kind {
        GroupKind::Channels => &c.group_of,
        GroupKind::Heads => &c.heads_of,
    };
    let group_of: BTreeMap<String, usize> = of
        .iter()
        .map(|(&n, &gid)| (g.nodes[n].name.clone(), gid))
        .collect();
    // Per producer: the latest rule that covers it (a layer rule its own
    // layer, a group rule every layer of the group), in rule order, so a
    // later rule refines an earlier one; coupled layers left with
    // different targets are the `coupled_ratio` error below.
    let mut latest: BTreeMap<String, (usize, &RuleSpec)> = BTreeMap::new();
    for (k, (r, layers)) in cx.rule_matches(spec).into_iter().enumerate() {
        for &l in &layers {
            let l = name(cx, l);
            match r.kind {
                RuleKind::Layer => {
                    latest.insert(l, (k, r));
                }
                RuleKind::Group => {
                    if let Some(&gid) = group_of.get(&l) {
                        for &p in &c.groups[gid].producers {
                            latest.insert(g.nodes[p].name.clone(), (k, r));
                        }
                    }
                }
            }
        }
    }
    let ignored: BTreeMap<String, &Spanned<String>> = cx
        .ignored(spec)
        .into_iter()
        .map(|(id, pat)| (name(cx, id), pat))
        .collect();
    let mut groups = Vec::new();
    for grp in c.groups.iter().filter(|grp| grp.kind == kind) {
        let names: Vec<String> = grp
            .producers
            .iter()
            .map(|&p| g.nodes[p].name.clone())
            .collect();
        let coupled_by: Vec<String> = grp
            .couplers
            .iter()
            .map(|&p| g.nodes[p].name.clone())
            .collect();
        let mut explicit: Vec<(usize, &RuleSpec)> = names
            .iter()
            .filter_map(|p| latest.get(p).copied())
            .collect();
        explicit.sort_by_key(|&(k, _)| k);
        explicit.dedup_by_key(|&mut (k, _)| k);
        let explicit: Vec<&RuleSpec> = explicit.into_iter().map(|(_, r)| r).collect();
        let set_by: Vec<String> = explicit.iter().map(|r| rule_text(cx, r)).collect();
        let nonzero = explicit.iter().any(|r| r.value > 0.0);
        let all_ignored = names.iter().all(|p| ignored.contains_key(p));
        let target = if let Some(why) = &grp.frozen {
            // A broad pattern such as `group "*"` may match frozen layers that
            // the ignore list names; a rule naming them outright may not.
            let glob = |r: &&&RuleSpec| r.pattern.node.contains(['*', '?', '[', '{']);
            let offending = explicit
                .iter()
                .filter(|r| r.value > 0.0)
                .find(|r| !(all_ignored && glob(r)));
            if let Some(r) = offending {
                cx.push(CheckError::PruneFrozen {
                    src: cx.src(r.span),
                    span: r.span.source_span(),
                    layers: names.join(", "),
                    why: why.to_string(),
                    help: if matches!(why, Frozen::Output(_)) {
                        format!("its output channels are the model's outputs (the classes); leave it out of channel pruning: `ignore \"{}\"`", names[0])
                    } else {
                        format!("leave the group out of channel pruning: `ignore \"{}\"`", names[0])
                    },
                });
            }
            Target::Frozen(why.to_string())
        } else if let Some((ig, pat)) = names.iter().find_map(|p| ignored.get_key_value(p)) {
            // Warn when the group would otherwise lose channels: through an
            // explicit rule on a coupled layer, or the stage's target.
            if !all_ignored && (nonzero || (explicit.is_empty() && end > 0.0)) {
                let rest = names
                    .iter()
                    .filter(|n| *n != ig)
                    .map(|n| format!("`{n}`"))
                    .collect::<Vec<_>>()
                    .join(", ");
                let (src, span, layer) = (cx.src(pat.span), pat.span.source_span(), ig.clone());
                let channels = grp.channels.len();
                cx.push(if spec.strict {
                    CheckError::IgnoredCoupledStrict {
                        src,
                        span,
                        layer,
                        rest,
                        channels,
                    }
                } else {
                    CheckError::IgnoredCoupled {
                        src,
                        span,
                        layer,
                        rest,
                        channels,
                    }
                });
            }
            Target::Ignored
        } else if explicit.len() > 1
            && explicit
                .iter()
                .any(|r| target_of(r) != target_of(explicit[0]))
        {
            coupled_conflict(cx, g, grp, &explicit);
            target_of(explicit[explicit.len() - 1])
        } else if let Some(r) = explicit.first() {
            target_of(r)
        } else {
            match spec.max {
                Some(m) if end > m => Target::AtMost(m),
                _ => Target::Stage(end),
            }
        };
        let n = grp.channels.len();
        let units = grp.units.len();
        if let (Some(r), false) = (
            explicit.last(),
            matches!(target, Target::Ignored | Target::Frozen(_)),
        ) {
            let fraction = target.fraction(end);
            let raw = ((units as f64) * (1.0 - fraction)).floor() as usize;
            if raw == 0 && fraction > 0.0 {
                cx.push(CheckError::RemovesAll {
                    src: cx.src(r.span),
                    span: r.span.source_span(),
                    layers: names.join(", "),
                    channels: n,
                    max: (units as f64 - 1.0) / units as f64,
                });
            }
        }
        groups.push(GroupPlan {
            group: grp.id,
            layers: names,
            coupled_by,
            channels: n,
            unit: grp.unit(),
            heads_per_unit: match grp.kind {
                GroupKind::Heads => {
                    crate::graph::AttentionLayout::of(&g.nodes[grp.producers[0]].op)
                        .map_or(1, |l| l.group())
                }
                GroupKind::Channels => 1,
            },
            target,
            keep: None,
            rounded: None,
            steps: Vec::new(),
            set_by,
        });
    }
    // Groups an operator froze (not the model's input or output): said once.
    let by_op: Vec<&crate::graph::Group> = c
        .groups
        .iter()
        .filter(|grp| grp.frozen.as_ref().is_some_and(Frozen::by_operator))
        .collect();
    if let Some(why) = by_op.first().and_then(|grp| grp.frozen.as_ref()) {
        let layers: Vec<&str> = by_op
            .iter()
            .flat_map(|grp| grp.producers.iter().map(|&p| g.nodes[p].name.as_str()))
            .collect();
        cx.push(CheckError::FrozenChannels {
            src: cx.src(spec.span),
            span: spec.span.source_span(),
            count: by_op.len(),
            model: g.name.clone(),
            why: why.to_string(),
            layers: crate::plan::shorten_layers(&layers),
        });
    }
    Stage {
        groups,
        estimate: spec.scope == Some(Scope::Global),
        ..stage(spec, schedule, Criterion::L2)
    }
}

/// A stage with the spec's settings (defaults filled in), no members and
/// no counts yet.
fn stage(spec: &PruneSpec, schedule: Vec<Step>, importance: Criterion) -> Stage {
    let importance = spec.importance.unwrap_or(importance);
    Stage {
        granularity: spec.granularity,
        importance,
        aggregate: spec.aggregate.unwrap_or(Aggregate::Mean),
        scope: spec.scope.unwrap_or(Scope::Local),
        max: spec.max,
        min: spec.min,
        round_to: spec.round_to.map(|r| r as usize),
        batches: match importance {
            Criterion::Taylor => Some(
                spec.batches
                    .unwrap_or(crate::plan::defaults::TAYLOR_BATCHES),
            ),
            Criterion::Wanda => Some(spec.batches.unwrap_or(crate::plan::defaults::WANDA_BATCHES)),
            _ => None,
        },
        penalty: (importance == Criterion::BnScale)
            .then(|| spec.penalty.unwrap_or(crate::plan::defaults::PENALTY)),
        schedule,
        groups: Vec::new(),
        layers: Vec::new(),
        blocks: None,
        params_after: 0,
        macs_after: 0,
        estimate: false,
    }
}

/// The headline diagnostic: coupled layers given different ratios.
fn coupled_conflict(cx: &mut Ctx<'_>, g: &Graph, grp: &crate::graph::Group, rules: &[&RuleSpec]) {
    let file = rules[0].span.file;
    let mut labels = Vec::new();
    for r in rules.iter().filter(|r| r.span.file == file) {
        let hits: Vec<&str> = grp
            .producers
            .iter()
            .map(|&p| g.nodes[p].name.as_str())
            .filter(|n| {
                Glob::new(&r.pattern.node)
                    .map(|gl| gl.compile_matcher().is_match(n))
                    .unwrap_or(false)
            })
            .collect();
        let what = match r.cmp {
            Cmp::Eq => format!("set to {}", r.value),
            Cmp::Le => format!("capped at {}", r.value),
            Cmp::Ge => format!("held at least at {}", r.value),
        };
        let whose = match r.kind {
            RuleKind::Layer => hits.join(", "),
            RuleKind::Group => format!("the group of {}", hits.join(", ")),
        };
        labels.push(LabeledSpan::new_with_span(
            Some(format!("{whose} {what} here")),
            r.span.source_span(),
        ));
    }
    let kinds: BTreeSet<&str> = grp
        .couplers
        .iter()
        .map(|&n| match g.nodes[n].op {
            Op::Add => "residual",
            Op::Concat => "concat",
            Op::Mul => "gating",
            _ => "depthwise",
        })
        .collect();
    let kind = kinds.iter().copied().collect::<Vec<_>>().join("- and ");
    let members: Vec<&str> = grp
        .producers
        .iter()
        .map(|&p| g.nodes[p].name.as_str())
        .collect();
    let couplers: Vec<&str> = grp
        .couplers
        .iter()
        .map(|&p| g.nodes[p].name.as_str())
        .collect();
    let value = rules.iter().map(|r| r.value).fold(f64::INFINITY, f64::min);
    let pattern = &rules[rules.len() - 1].pattern.node;
    // A rule on an attention in a channels stage sets the embedding width
    // its tokens share with the whole residual stream; its heads are
    // pruned by their own stage.
    let attention = grp.producers.iter().map(|&p| &g.nodes[p]).find(|n| {
        matches!(n.op, Op::MultiheadAttention { .. })
            && rules.iter().any(|r| {
                r.kind == RuleKind::Layer
                    && Glob::new(&r.pattern.node)
                        .map(|gl| gl.compile_matcher().is_match(&n.name))
                        .unwrap_or(false)
            })
    });
    let heads = attention.map_or(String::new(), |n| {
        format!(
            ". To prune `{}`'s heads instead, rule it in a `prune heads` stage",
            n.name
        )
    });
    cx.push(CheckError::CoupledRatio {
        src: cx.src(rules[0].span),
        labels,
        kind: if kind.is_empty() { "coupled".into() } else { format!("{kind}-coupled") },
        help: format!(
            "{} are coupled (by {}): they keep or lose the same channels. Give the group one ratio: `group \"{pattern}\" ratio {value}`{heads}",
            list(&members),
            couplers.join(", ")
        ),
    });
}

fn list(names: &[&str]) -> String {
    crate::syntax::keywords::list(names)
}

/// Plans a weights or N:M stage: per-layer targets, masks only.
fn masks(cx: &mut Ctx<'_>, spec: &PruneSpec, schedule: Vec<Step>, g: &Graph) -> Stage {
    let end = stage_end(spec);
    let mut rule_of: BTreeMap<String, &RuleSpec> = BTreeMap::new();
    for (r, layers) in cx.rule_matches(spec) {
        for l in layers {
            rule_of.insert(cx.g.nodes[l].name.clone(), r);
        }
    }
    let ignored: BTreeSet<String> = cx
        .ignored(spec)
        .into_keys()
        .map(|id| cx.g.nodes[id].name.clone())
        .collect();
    let mut layers = Vec::new();
    for (id, matrices) in g.weight_layers() {
        let node = &g.nodes[id];
        let weights: u64 = matrices
            .iter()
            .map(|(_, s)| s.iter().product::<usize>() as u64)
            .sum();
        let (target, set_by) = if ignored.contains(&node.name) {
            (Target::Ignored, Vec::new())
        } else if let Granularity::NM { n, m } = spec.granularity {
            (Target::Exact(1.0 - n as f64 / m as f64), Vec::new())
        } else if let Some(r) = rule_of.get(&node.name) {
            (target_of(r), vec![rule_text(cx, r)])
        } else {
            (Target::Stage(end), Vec::new())
        };
        layers.push(LayerPlan {
            layer: node.name.clone(),
            weights,
            target,
            set_by,
        });
    }
    Stage {
        layers,
        round_to: None,
        ..stage(spec, schedule, Criterion::L1)
    }
}

/// Plans a blocks stage: which residual blocks may go, and how many will.
fn blocks(cx: &mut Ctx<'_>, spec: &PruneSpec, schedule: Vec<Step>, g: &Graph) -> Stage {
    let ignored: BTreeSet<String> = cx
        .ignored(spec)
        .into_keys()
        .map(|id| cx.g.nodes[id].name.clone())
        .collect();
    for r in &spec.rules {
        cx.matches(&r.pattern);
    }
    let found = crate::prune::blocks::find(g);
    let candidates: Vec<&crate::prune::blocks::Block> = found
        .iter()
        .filter(|b| !b.branch.iter().any(|&n| ignored.contains(&g.nodes[n].name)))
        .collect();
    if candidates.is_empty() {
        cx.push(CheckError::NoBlocks {
            src: cx.src(spec.span),
            span: spec.span.source_span(),
            model: cx.g.name.clone(),
            why: if found.is_empty() {
                String::new()
            } else {
                " outside what `ignore` names".to_owned()
            },
        });
    }
    let remove = decide::blocks_removed(candidates.len(), stage_end(spec));
    let blocks = crate::plan::BlocksPlan {
        candidates: candidates.iter().map(|b| b.name.clone()).collect(),
        remove,
    };
    Stage {
        scope: Scope::Global,
        round_to: None,
        blocks: Some(blocks),
        // Which blocks go is the weights' choice; blocks may differ in size.
        estimate: remove > 0 && remove < candidates.len(),
        ..stage(spec, schedule, Criterion::L2)
    }
}

/// The distillation teacher, resolved and checked before any tensor: its
/// model builds, produces what the student produces, and its weights file
/// fits it key by key (diagnostics point at the `teacher` line). Returns the
/// teacher and its graph when it is another model.
fn teacher(
    cx: &mut Ctx<'_>,
    recipe: &Recipe,
    loader: &dyn crate::syntax::Loader,
) -> Option<(crate::plan::Teacher, Graph)> {
    use super::recipe::TeacherSpec;
    use crate::syntax::ast::ModelSource;
    let d = recipe.distill.as_ref()?;
    let Some(TeacherSpec::Model { source, weights }) = &d.teacher else {
        return None;
    };
    let student = recipe.model.as_ref()?;
    let name = match source {
        ModelSource::Zoo(n) | ModelSource::File(n) => n.clone(),
    };
    let input = student
        .input
        .as_ref()
        .map(|i| [i.node[0] as usize, i.node[1] as usize, i.node[2] as usize]);
    let classes = student.classes.as_ref().map(|c| c.node as usize);
    let span = d.teacher_span.unwrap_or(student.source.span);
    let t = match crate::models::load_with(&name, input, classes, loader) {
        Ok(t) => t,
        Err(e) => {
            let src = cx.src(span);
            cx.reports
                .push(Report::new(crate::diagnostics::Located::new(
                    e,
                    src,
                    span.source_span(),
                    "this teacher",
                )));
            return None;
        }
    };
    let (ta, sa) = (analyze(&t, t.input), analyze(cx.g, cx.g.input));
    let (Ok(ta), Ok(sa)) = (ta, sa) else {
        return None;
    };
    let (to, so) = (ta.shapes[t.output], sa.shapes[cx.g.output]);
    if to != so {
        cx.push(CheckError::TeacherShape {
            src: cx.src(span),
            span: span.source_span(),
            teacher: name,
            teacher_shape: to.to_string(),
            student_shape: so.to_string(),
        });
        return None;
    }
    if let Some(w) = weights {
        if let Some(r) = super::model::check_weights(w, span, &t, cx.sources, loader) {
            cx.reports.push(r);
            return None;
        }
    }
    let resolved = crate::plan::Teacher::Model {
        model: name,
        weights: weights.clone(),
        params: ta.total_params,
    };
    Some((resolved, t))
}
