//! Recipe + model graph → [`Plan`]: globs resolved against module names,
//! rules applied in order (later rules refine earlier ones) with the line
//! that set every target, coupling enforced, schedules expanded, and every
//! problem reported at once.

use std::collections::{BTreeMap, BTreeSet};

use globset::{Glob, GlobMatcher};
use miette::{LabeledSpan, Report};

use super::diag::CheckError;
use super::recipe::{Cmp, PruneSpec, Recipe, RuleKind, RuleSpec, ScheduleSpec, Unit};
use crate::graph::{analyze, coupling, Coupling, Graph, NodeId, Op};
use crate::plan::{GroupPlan, LayerPlan, Plan, Stage, Step, Target};
use crate::prune::importance::keep_count;
use crate::prune::surgery::{remove_channels, Removal};
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

    /// The prunable layers (conv/linear) among matches; reports a rule that
    /// names only layers without weights, or only BatchNorms.
    fn prunable(&mut self, pattern: &Spanned<String>, found: &[NodeId], rule: Span) -> Vec<NodeId> {
        let layers: Vec<NodeId> = found
            .iter()
            .copied()
            .filter(|&n| matches!(self.g.nodes[n].op, Op::Conv2d { .. } | Op::Linear { .. }))
            .collect();
        if !layers.is_empty() || found.is_empty() {
            return layers;
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
                (r, self.prunable(&r.pattern, &found, r.span))
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

/// Builds the plan of a checked recipe whose model graph is `g`.
pub fn plan(
    recipe: &Recipe,
    g: &Graph,
    sources: &SourceMap,
    loader: &dyn crate::syntax::Loader,
) -> (Option<Plan>, Vec<Report>) {
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
    let before = match analyze(g, g.input) {
        Ok(a) => a,
        Err(e) => {
            cx.reports.push(Report::new(e));
            return (None, cx.reports);
        }
    };
    let c = match coupling(g) {
        Ok(c) => c,
        Err(e) => {
            cx.reports.push(Report::new(e));
            return (None, cx.reports);
        }
    };
    let finetune_epochs = recipe.finetune.as_ref().and_then(|f| f.epochs);
    let mut stages = Vec::new();
    for spec in &recipe.prune {
        let steps = schedule(&mut cx, spec, finetune_epochs);
        let stage = match spec.granularity.as_str() {
            "channels" => channels(&mut cx, spec, &c, steps, &before),
            "blocks" => blocks(&mut cx, spec, steps, &before),
            _ => masks(&mut cx, spec, steps, &before),
        };
        stages.push(stage);
    }
    teacher(&mut cx, recipe, loader);
    // Learning-rate multipliers must name layers, like every other glob.
    for t in [&recipe.pretrain, &recipe.finetune].into_iter().flatten() {
        for (pattern, _) in &t.lr_mult {
            cx.matches(pattern);
        }
    }
    let plan = Plan {
        recipe: recipe
            .name
            .as_ref()
            .map(|n| n.node.clone())
            .unwrap_or_default(),
        model: g.name.clone(),
        input: g.input,
        params_before: before.total_params,
        macs_before: before.total_macs,
        stages,
    };
    (Some(plan), cx.reports)
}

/// The stage-wide fraction the schedule ends at.
fn stage_end(spec: &PruneSpec) -> f64 {
    match spec.schedule.as_ref().map(|s| &s.node) {
        Some(ScheduleSpec::Gradual { end, .. }) => *end,
        Some(ScheduleSpec::Iterative { to: Some(t), .. }) => *t,
        _ => spec.target.unwrap_or(0.0),
    }
}

fn curve_at(curve: &str, start: f64, end: f64, k: usize, n: usize) -> f64 {
    let t = k as f64 / n as f64;
    let x = match curve {
        "cubic" => end + (start - end) * (1.0 - t).powi(3),
        "exp" => {
            // Geometric in what is kept: (1-s) moves by a constant factor.
            let (a, b) = ((1.0 - start).max(1e-9), (1.0 - end).max(1e-9));
            1.0 - a * (b / a).powf(t)
        }
        _ => start + (end - start) * t,
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
                    fraction: curve_at("linear", 0.0, target, k as usize, *rounds as usize),
                    progress: relative
                        .then(|| curve_at("linear", 0.0, 1.0, k as usize, *rounds as usize)),
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
                        curve_at(curve, *start, *end, k, n)
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

/// Plans a channels (or blocks) stage.
fn channels(
    cx: &mut Ctx<'_>,
    spec: &PruneSpec,
    c: &Coupling,
    schedule: Vec<Step>,
    before: &crate::graph::Analysis,
) -> Stage {
    let g = cx.g;
    let end = stage_end(spec);
    // Per producer: its latest layer rule; per group: its latest group rule.
    let mut layer_rule: BTreeMap<NodeId, &RuleSpec> = BTreeMap::new();
    let mut group_rule: BTreeMap<usize, &RuleSpec> = BTreeMap::new();
    for (r, layers) in cx.rule_matches(spec) {
        for &l in &layers {
            match r.kind {
                RuleKind::Layer => {
                    layer_rule.insert(l, r);
                }
                RuleKind::Group => {
                    if let Some(&gid) = c.group_of.get(&l) {
                        group_rule.insert(gid, r);
                    }
                }
            }
        }
    }
    let ignored = cx.ignored(spec);
    let mut groups = Vec::new();
    let mut removal: Removal = BTreeMap::new();
    for grp in &c.groups {
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
        let explicit: Vec<&RuleSpec> = match group_rule.get(&grp.id) {
            Some(r) => vec![*r],
            None => {
                let mut v: Vec<&RuleSpec> = grp
                    .producers
                    .iter()
                    .filter_map(|p| layer_rule.get(p).copied())
                    .collect();
                v.sort_by_key(|r| r.span);
                v.dedup_by_key(|r| r.span);
                v
            }
        };
        let set_by: Vec<String> = explicit.iter().map(|r| rule_text(cx, r)).collect();
        let nonzero = explicit.iter().any(|r| r.value > 0.0);
        let all_ignored = grp.producers.iter().all(|p| ignored.contains_key(p));
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
                    why: why.clone(),
                    help: if why.contains("output") {
                        format!("its output channels are the model's outputs (the classes); leave it out of channel pruning: `ignore \"{}\"`", names[0])
                    } else {
                        "grouped convolutions keep their channels; leave them out of channel pruning".to_owned()
                    },
                });
            }
            Target::Frozen(why.clone())
        } else if let Some((&ig, pat)) = grp.producers.iter().find_map(|p| ignored.get_key_value(p))
        {
            // Warn when the group would otherwise lose channels: through an
            // explicit rule on a coupled layer, or the stage's target.
            if !all_ignored && (nonzero || (explicit.is_empty() && end > 0.0)) {
                let others: Vec<&String> =
                    names.iter().filter(|n| **n != g.nodes[ig].name).collect();
                let e = |strict| {
                    let src = cx.src(pat.span);
                    let span = pat.span.source_span();
                    let layer = g.nodes[ig].name.clone();
                    let rest = others
                        .iter()
                        .map(|n| format!("`{n}`"))
                        .collect::<Vec<_>>()
                        .join(", ");
                    let n = grp.channels.len();
                    if strict {
                        CheckError::IgnoredCoupledStrict {
                            src,
                            span,
                            layer,
                            rest,
                            channels: n,
                        }
                    } else {
                        CheckError::IgnoredCoupled {
                            src,
                            span,
                            layer,
                            rest,
                            channels: n,
                        }
                    }
                };
                let err = e(spec.strict);
                cx.push(err);
            }
            Target::Ignored
        } else if explicit.len() > 1
            && explicit
                .iter()
                .any(|r| target_of(r) != target_of(explicit[0]))
        {
            coupled_conflict(cx, grp, &explicit);
            target_of(explicit[explicit.len() - 1])
        } else if let Some(r) = explicit.first() {
            target_of(r)
        } else {
            let mut t = Target::Stage(end);
            if let Some(m) = spec.max {
                if end > m {
                    t = Target::AtMost(m);
                }
            }
            t
        };
        let mut fraction = target.fraction(end);
        if let (Some(m), Target::Stage(_)) = (spec.max, &target) {
            fraction = fraction.min(m);
        }
        if let Some(m) = spec.min {
            if !matches!(target, Target::Ignored | Target::Frozen(_)) {
                fraction = fraction.max(m);
            }
        }
        let n = grp.channels.len();
        let round_to = spec.round_to.map(|r| r as usize);
        let prunable = !matches!(target, Target::Ignored | Target::Frozen(_));
        // Under global ranking a group without an exact target gets what the
        // ranking leaves it (within its caps): only run time knows.
        let global = spec.scope.as_deref() == Some("global");
        let decided = prunable && (!global || matches!(target, Target::Exact(_)));
        let keep = prunable.then(|| keep_count(n, fraction, round_to));
        if let (Some(k), Some(r)) = (keep, explicit.last()) {
            let raw = ((n as f64) * (1.0 - fraction) + 1e-9).floor() as usize;
            if raw == 0 && fraction > 0.0 {
                cx.push(CheckError::RemovesAll {
                    src: cx.src(r.span),
                    span: r.span.source_span(),
                    layers: names.join(", "),
                    channels: n,
                    max: (n as f64 - 1.0) / n as f64,
                });
            }
            let _ = k;
        }
        if let Some(k) = keep {
            if k < n {
                removal.insert(grp.id, (0..n - k).collect());
            }
        }
        groups.push(GroupPlan {
            group: grp.id,
            layers: names,
            coupled_by,
            channels: n,
            target,
            keep: keep.filter(|_| decided),
            steps: if prunable {
                schedule
                    .iter()
                    .map(|st| (st.scale(&Target::Exact(fraction), end) * 1e6).round() / 1e6)
                    .collect()
            } else {
                Vec::new()
            },
            set_by,
        });
    }
    let (pruned, _) = remove_channels(g, c, &removal, None);
    let after = analyze(&pruned, pruned.input).unwrap_or_else(|_| before.clone());
    Stage {
        groups,
        ..stage(spec, schedule, "l2", (after.total_params, after.total_macs))
    }
}

/// A stage with the spec's settings (defaults filled in) and no members yet.
fn stage(
    spec: &PruneSpec,
    schedule: Vec<Step>,
    importance: &str,
    (params, macs): (u64, u64),
) -> Stage {
    Stage {
        granularity: spec.granularity.clone(),
        importance: spec.importance.clone().unwrap_or_else(|| importance.into()),
        aggregate: spec.aggregate.clone().unwrap_or_else(|| "mean".into()),
        scope: spec.scope.clone().unwrap_or_else(|| "local".into()),
        round_to: spec.round_to.map(|r| r as usize),
        batches: (spec.importance.as_deref() == Some("taylor"))
            .then(|| spec.batches.unwrap_or(100)),
        penalty: (spec.importance.as_deref() == Some("bn_scale"))
            .then(|| spec.penalty.unwrap_or(1e-4)),
        schedule,
        groups: Vec::new(),
        layers: Vec::new(),
        blocks: None,
        params_after: params,
        macs_after: macs,
    }
}

/// The headline diagnostic: coupled layers given different ratios.
fn coupled_conflict(cx: &mut Ctx<'_>, grp: &crate::graph::Group, rules: &[&RuleSpec]) {
    let g = cx.g;
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
        labels.push(LabeledSpan::new_with_span(
            Some(format!("{} {what} here", hits.join(", "))),
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
    cx.push(CheckError::CoupledRatio {
        src: cx.src(rules[0].span),
        labels,
        kind: if kind.is_empty() { "coupled".into() } else { format!("{kind}-coupled") },
        help: format!(
            "{} are coupled (by {}): they keep or lose the same channels. Give the group one ratio: `group \"{pattern}\" ratio {value}`",
            list(&members),
            couplers.join(", ")
        ),
    });
}

fn list(names: &[&str]) -> String {
    crate::syntax::keywords::list(names)
}

/// Plans a weights or N:M stage: per-layer targets, masks only.
fn masks(
    cx: &mut Ctx<'_>,
    spec: &PruneSpec,
    schedule: Vec<Step>,
    before: &crate::graph::Analysis,
) -> Stage {
    let g = cx.g;
    let end = stage_end(spec);
    let mut rule_of: BTreeMap<NodeId, &RuleSpec> = BTreeMap::new();
    for (r, layers) in cx.rule_matches(spec) {
        for l in layers {
            rule_of.insert(l, r);
        }
    }
    let ignored = cx.ignored(spec);
    let nm = spec
        .granularity
        .split_once(':')
        .and_then(|(n, m)| Some((n.parse::<f64>().ok()?, m.parse::<f64>().ok()?)));
    let mut layers = Vec::new();
    let mut removed = 0u64;
    for (name, id) in &cx.modules {
        if !matches!(g.nodes[*id].op, Op::Conv2d { .. } | Op::Linear { .. }) {
            continue;
        }
        let weights: u64 = g.nodes[*id]
            .op
            .state()
            .first()
            .map_or(0, |(_, s)| s.iter().product::<usize>() as u64);
        let (target, set_by) = if ignored.contains_key(id) {
            (Target::Ignored, Vec::new())
        } else if let Some((n, m)) = nm {
            (Target::Exact(1.0 - n / m), Vec::new())
        } else if let Some(r) = rule_of.get(id) {
            (target_of(r), vec![rule_text(cx, r)])
        } else {
            (Target::Stage(end), Vec::new())
        };
        removed += (weights as f64 * target.fraction(end)).round() as u64;
        layers.push(LayerPlan {
            layer: name.clone(),
            weights,
            target,
            set_by,
        });
    }
    let counts = (
        before.total_params.saturating_sub(removed),
        before.total_macs,
    );
    Stage {
        layers,
        round_to: None,
        ..stage(spec, schedule, "l1", counts)
    }
}

/// Plans a blocks stage: which residual blocks may go, and how many will.
fn blocks(
    cx: &mut Ctx<'_>,
    spec: &PruneSpec,
    schedule: Vec<Step>,
    before: &crate::graph::Analysis,
) -> Stage {
    let g = cx.g;
    let ignored = cx.ignored(spec);
    for r in &spec.rules {
        cx.matches(&r.pattern);
    }
    let found = crate::prune::blocks::find(g);
    let candidates: Vec<&crate::prune::blocks::Block> = found
        .iter()
        .filter(|b| !b.branch.iter().any(|n| ignored.contains_key(n)))
        .collect();
    let remove = ((candidates.len() as f64) * stage_end(spec) + 1e-9).floor() as usize;
    let (pruned, _) = crate::prune::blocks::remove(g, &candidates[..remove], None);
    let after = analyze(&pruned, pruned.input).unwrap_or_else(|_| before.clone());
    let blocks = crate::plan::BlocksPlan {
        candidates: candidates.iter().map(|b| b.name.clone()).collect(),
        remove,
    };
    Stage {
        scope: "global".into(),
        round_to: None,
        blocks: Some(blocks),
        ..stage(spec, schedule, "l2", (after.total_params, after.total_macs))
    }
}

/// A teacher must produce what the student produces.
fn teacher(cx: &mut Ctx<'_>, recipe: &Recipe, loader: &dyn crate::syntax::Loader) {
    use super::recipe::TeacherSpec;
    use crate::syntax::ast::ModelSource;
    let Some(d) = &recipe.distill else { return };
    let Some(TeacherSpec::Model { source, .. }) = &d.teacher else {
        return;
    };
    let Some(student) = &recipe.model else { return };
    let name = match source {
        ModelSource::Zoo(n) | ModelSource::File(n) => n.clone(),
    };
    let input = student
        .input
        .as_ref()
        .map(|i| [i.node[0] as usize, i.node[1] as usize, i.node[2] as usize]);
    let classes = student.classes.as_ref().map(|c| c.node as usize);
    let span = d.teacher_span.unwrap_or(student.source.span);
    match crate::models::load_with(&name, input, classes, loader) {
        Ok(t) => {
            let (ta, sa) = (analyze(&t, t.input), analyze(cx.g, cx.g.input));
            if let (Ok(ta), Ok(sa)) = (ta, sa) {
                let (to, so) = (ta.shapes[t.output], sa.shapes[cx.g.output]);
                if to != so {
                    cx.push(CheckError::TeacherShape {
                        src: cx.src(span),
                        span: span.source_span(),
                        teacher: name,
                        teacher_shape: to.to_string(),
                        student_shape: so.to_string(),
                    });
                }
            }
        }
        Err(e) => cx.reports.push(Report::new(e)),
    }
}
