//! Sensitivity analysis (`prunex sensitivity`): each prunable group (or
//! layer) of a recipe's first prune stage pruned alone at a range of
//! ratios, by the stage's own criterion, with its ignore list, rounding and
//! caps, and the model evaluated on a bounded number of test batches.
//!
//! This module is the plain-data half: what is probed ([`Analysis`],
//! [`Analysis::probe`]), what each probe leaves of the model (predicted by
//! [`decide::step`] without weights, as `prunex plan` predicts), the
//! results ([`Report`]) with their table and chart, the budget solver
//! ([`solve`]) and the recipe fragment it writes ([`fragment`]). The
//! executor evaluates the probes (`exec/run/sensitivity.rs`).

pub mod fragment;
pub mod solve;

use serde::{Deserialize, Serialize};

use crate::graph::{analyze, Graph, GraphError};
use crate::plan::{Criterion, Granularity, Plan, Scope, Stage, Step, Target, Unit};
use crate::prune::decide;

/// The ratios probed when `--ratios` is not given.
pub const DEFAULT_RATIOS: [f64; 9] = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9];

/// Evaluation batches per probe when `--batches` is not given.
pub const DEFAULT_BATCHES: u64 = 5;

/// What can stop a sensitivity analysis before any tensor exists.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum SensitivityError {
    /// The recipe has no prune stage.
    #[error("the recipe has no prune stage, so there is nothing to measure")]
    #[diagnostic(
        code(prunex::sensitivity::no_stage),
        help("add a `prune channels by l2 {{ … }}` block; sensitivity prunes its groups one at a time")
    )]
    NoStage,
    /// A granularity without ratios.
    #[error("sensitivity measures pruning ratios, and `prune {granularity}` has none")]
    #[diagnostic(
        code(prunex::sensitivity::granularity),
        help("measure a `prune channels`, `prune heads` or `prune weights` stage (sensitivity uses the recipe's first prune stage; move it first)")
    )]
    Granularity {
        /// The stage's granularity.
        granularity: String,
    },
    /// Every group is ignored or frozen.
    #[error("every group of the first prune stage is ignored or frozen")]
    #[diagnostic(
        code(prunex::sensitivity::nothing_to_probe),
        help("`prunex plan` shows which groups are ignored and why; shorten the ignore list")
    )]
    NothingToProbe,
    /// `--out` names a folder that cannot be written.
    #[error("cannot write the results into {path}: {reason}")]
    #[diagnostic(
        code(prunex::sensitivity::out_unwritable),
        help("give `--out` a folder you can write (it is created), or leave it out to write into the export folder's `sensitivity/`")
    )]
    OutUnwritable {
        /// The folder.
        path: String,
        /// Why not.
        reason: String,
    },
    /// A ratio outside (0, 1).
    #[error("ratio {ratio} is not between 0 and 1 (exclusive)")]
    #[diagnostic(
        code(prunex::sensitivity::ratio),
        help("give fractions removed, e.g. `--ratios 0.1,0.2,0.3,0.5,0.7`")
    )]
    Ratio {
        /// The ratio.
        ratio: f64,
    },
    /// A budget outside (0, 1].
    #[error("the budget {value} is not a fraction of the dense model's {what} between 0 and 1")]
    #[diagnostic(
        code(prunex::sensitivity::budget),
        help("`{flag} 0.5` keeps half the dense model's {what}")
    )]
    Budget {
        /// What is budgeted.
        what: &'static str,
        /// The option that gave it.
        flag: &'static str,
        /// The value.
        value: f64,
    },
    /// Masks do not reduce MACs.
    #[error("`prune {granularity}` zeroes weights by mask, which leaves the MACs of dense kernels as they are")]
    #[diagnostic(
        code(prunex::sensitivity::masks_keep_macs),
        help("budget the nonzero parameters instead (`--target-params 0.5`), or measure a `prune channels` stage")
    )]
    MasksKeepMacs {
        /// The stage's granularity.
        granularity: String,
    },
    /// The budget cannot be met with the ratios measured.
    #[error("the budget asks for {what} ≤ {target} of the dense model's, but pruning every group at its largest measured ratio leaves {reachable:.3}")]
    #[diagnostic(
        code(prunex::sensitivity::infeasible),
        help("measure larger ratios (`--ratios …,0.9`), allow more groups (the ignore list, `scope … max`), or relax the budget")
    )]
    Infeasible {
        /// What is budgeted.
        what: &'static str,
        /// The budget.
        target: f64,
        /// The smallest fraction the measured ratios reach.
        reachable: f64,
    },
    /// The model's graph could not be pruned as planned.
    #[error(transparent)]
    #[diagnostic(code(prunex::sensitivity::graph))]
    Graph(#[from] GraphError),
}

/// What a rule naming a subject is: `group` (a coupled group of channels
/// or heads) or `layer` (masks).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuleWord {
    /// `group "name" ratio …`
    Group,
    /// `layer "name" sparsity …`
    Layer,
}

/// One thing pruned alone: a coupled group of channels or heads, or a
/// layer under masks.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Subject {
    /// The layer a rule names it by (the group's first layer).
    pub name: String,
    /// Every layer whose output it prunes.
    pub layers: Vec<String>,
    /// Channels, heads or weights it has.
    pub size: usize,
    /// The largest ratio the stage allows it (`scope … max`, `<=` rules).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
}

/// What a sensitivity analysis probes: the first prune stage's subjects
/// at each ratio.
#[derive(Clone, Debug)]
pub struct Analysis {
    /// The stage, as planned.
    pub stage: Stage,
    /// The rule word of its subjects.
    pub rule: RuleWord,
    /// What is probed, in the plan's order.
    pub subjects: Vec<Subject>,
    /// The ratios, increasing.
    pub ratios: Vec<f64>,
}

/// The largest ratio a target allows under the stage's cap.
fn cap_of(stage: &Stage, t: &Target) -> Option<f64> {
    let rule = match t {
        Target::AtMost(x) => Some(*x),
        _ => None,
    };
    match (stage.max, rule) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// One step removing `fraction` at once, at the start.
fn one_step(fraction: f64) -> Vec<Step> {
    vec![Step {
        at: 0,
        unit: Unit::Epochs,
        fraction,
        progress: Some(1.0),
    }]
}

impl Analysis {
    /// The analysis of `plan`'s first prune stage at `ratios`.
    pub fn new(plan: &Plan, ratios: &[f64]) -> Result<Analysis, SensitivityError> {
        let stage = plan.stages.first().ok_or(SensitivityError::NoStage)?;
        let mut ratios = ratios.to_vec();
        if let Some(&r) = ratios.iter().find(|r| !(**r > 0.0 && **r < 1.0)) {
            return Err(SensitivityError::Ratio { ratio: r });
        }
        ratios.sort_by(f64::total_cmp);
        ratios.dedup();
        let live = |t: &Target| !matches!(t, Target::Ignored | Target::Frozen(_));
        let (rule, subjects): (RuleWord, Vec<Subject>) = match stage.granularity {
            Granularity::Channels | Granularity::Heads => (
                RuleWord::Group,
                stage
                    .groups
                    .iter()
                    .filter(|g| live(&g.target) && !g.layers.is_empty())
                    .map(|g| Subject {
                        name: g.layers[0].clone(),
                        layers: g.layers.clone(),
                        size: g.channels,
                        max: cap_of(stage, &g.target),
                    })
                    .collect(),
            ),
            Granularity::Weights => (
                RuleWord::Layer,
                stage
                    .layers
                    .iter()
                    .filter(|l| live(&l.target))
                    .map(|l| Subject {
                        name: l.layer.clone(),
                        layers: vec![l.layer.clone()],
                        size: l.weights as usize,
                        max: cap_of(stage, &l.target),
                    })
                    .collect(),
            ),
            g @ (Granularity::NM { .. } | Granularity::Blocks) => {
                return Err(SensitivityError::Granularity {
                    granularity: g.to_string(),
                })
            }
        };
        if subjects.is_empty() {
            return Err(SensitivityError::NothingToProbe);
        }
        Ok(Analysis {
            stage: stage.clone(),
            rule,
            subjects,
            ratios,
        })
    }

    /// The stage with each subject at its own ratio (0: left alone) and
    /// everything else left alone, in one step: what a probe or a solution
    /// prunes. Counts are rounded as the recipe's stage rounds them.
    pub fn stage_with(&self, ratios: &[f64]) -> Stage {
        let mut st = self.stage.clone();
        st.scope = Scope::Local;
        st.max = None;
        st.min = None;
        st.schedule = one_step(ratios.iter().copied().fold(0.0, f64::max));
        let by_name: std::collections::BTreeMap<&str, f64> = self
            .subjects
            .iter()
            .zip(ratios)
            .map(|(s, &r)| (s.name.as_str(), r))
            .collect();
        let target = |name: &str| match by_name.get(name) {
            Some(&r) if r > 0.0 => Target::Exact(r),
            _ => Target::Ignored,
        };
        for g in &mut st.groups {
            g.target = g.layers.first().map_or(Target::Ignored, |l| target(l));
            g.set_by.clear();
        }
        for l in &mut st.layers {
            l.target = target(&l.layer);
            l.set_by.clear();
        }
        st
    }

    /// Channels (heads, weights) subject `i` keeps at `ratio`, rounded as
    /// the stage rounds.
    pub fn kept(&self, i: usize, ratio: f64) -> usize {
        let st = self.probe(i, ratio);
        let s = &self.subjects[i];
        let at = &st.schedule[0];
        match self.rule {
            RuleWord::Group => st
                .groups
                .iter()
                .find(|g| g.layers.first() == Some(&s.name))
                .and_then(|g| decide::group_keep(&st, g, at))
                .map_or(s.size, |(k, _)| k),
            RuleWord::Layer => s.size - ((s.size as f64) * ratio).round() as usize,
        }
    }

    /// What every probe shares, for cache keys: the stage with nothing
    /// targeted and nothing derived from the block's own targets (counts
    /// kept, rounding, steps, predicted cost). Changing the block's ratio,
    /// caps or scope changes what a run prunes but not what pruning one
    /// group alone does, so the probes measured stay valid.
    pub fn shared(&self) -> Stage {
        let mut st = self.stage_with(&vec![0.0; self.subjects.len()]);
        for g in &mut st.groups {
            g.keep = None;
            g.rounded = None;
            g.steps.clear();
        }
        st.params_after = 0;
        st.macs_after = 0;
        st.estimate = false;
        st
    }

    /// The stage that prunes subject `i` alone at `ratio`.
    pub fn probe(&self, i: usize, ratio: f64) -> Stage {
        let mut r = vec![0.0; self.subjects.len()];
        r[i] = ratio;
        self.stage_with(&r)
    }

    /// What pruning by `stage` (one of [`Self::stage_with`]) leaves of
    /// `graph`, without weights: parameters (nonzero ones under masks) and
    /// MACs per sample.
    pub fn cost(&self, stage: &Stage, graph: &Graph) -> Result<Cost, GraphError> {
        let Some(at) = stage.schedule.last() else {
            let a = analyze(graph, graph.input)?;
            return Ok(Cost {
                params: a.total_params,
                macs: a.total_macs,
            });
        };
        Ok(
            match decide::step(stage, at, graph, decide::Inputs::default())? {
                decide::Outcome::Rebuilt { graph, .. } => {
                    let a = analyze(&graph, graph.input)?;
                    Cost {
                        params: a.total_params,
                        macs: a.total_macs,
                    }
                }
                decide::Outcome::Masks { zeros, .. } => {
                    let a = analyze(graph, graph.input)?;
                    Cost {
                        params: a.total_params.saturating_sub(zeros),
                        macs: a.total_macs,
                    }
                }
            },
        )
    }
}

/// Parameters (nonzero, under masks) and MACs per sample.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cost {
    /// Parameters.
    pub params: u64,
    /// MACs per sample.
    pub macs: u64,
}

/// Accuracy and mean loss on the evaluation batches.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Score {
    /// Fraction right.
    pub accuracy: f64,
    /// Mean cross-entropy.
    pub loss: f64,
}

/// One probe's result.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Point {
    /// Fraction removed.
    pub ratio: f64,
    /// Channels, heads or weights left.
    pub kept: usize,
    /// Its evaluation.
    #[serde(flatten)]
    pub score: Score,
    /// What the model keeps.
    #[serde(flatten)]
    pub cost: Cost,
}

/// One subject's curve.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Curve {
    /// What was pruned.
    #[serde(flatten)]
    pub subject: Subject,
    /// One point per ratio.
    pub points: Vec<Point>,
}

impl Curve {
    /// Accuracy lost at point `j`, in points (never below 0: a probe that
    /// gains on a few batches is noise), and the largest loss at any ratio
    /// up to it, so that the curve a solver reads never falls.
    pub fn drops(&self, dense: &Score) -> Vec<f64> {
        let mut worst: f64 = 0.0;
        self.points
            .iter()
            .map(|p| {
                worst = worst.max((dense.accuracy - p.score.accuracy) * 100.0);
                worst
            })
            .collect()
    }

    /// The evaluation loss's increase at point `j` (never below 0), read the
    /// same way: the largest at any ratio up to it.
    pub fn loss_rises(&self, dense: &Score) -> Vec<f64> {
        let mut worst: f64 = 0.0;
        self.points
            .iter()
            .map(|p| {
                worst = worst.max(p.score.loss - dense.loss);
                worst
            })
            .collect()
    }

    /// Mean accuracy lost over the ratios, in points: the rank's key.
    pub fn mean_drop(&self, dense: &Score) -> f64 {
        let d: Vec<f64> = self
            .points
            .iter()
            .map(|p| (dense.accuracy - p.score.accuracy) * 100.0)
            .collect();
        d.iter().sum::<f64>() / d.len().max(1) as f64
    }
}

/// A finished analysis: `sensitivity.yaml`/`.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// The recipe.
    pub recipe: String,
    /// The model.
    pub model: String,
    /// What the stage prunes.
    pub granularity: String,
    /// By what criterion.
    pub importance: String,
    /// `group` or `layer`.
    pub rule: RuleWord,
    /// Evaluation batches per probe.
    pub batches: u64,
    /// Test images per probe.
    pub images: u64,
    /// The dense model on the same batches.
    pub dense: Score,
    /// The dense model's parameters and MACs.
    pub dense_cost: Cost,
    /// The ratios probed.
    pub ratios: Vec<f64>,
    /// One curve per subject, in the plan's order.
    pub curves: Vec<Curve>,
    /// The budget's solution, when one was asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub solution: Option<solve::Solution>,
}

impl Report {
    /// Subjects from most to least sensitive (mean accuracy lost over the
    /// ratios; ties by name).
    pub fn ranking(&self) -> Vec<usize> {
        let mut idx: Vec<usize> = (0..self.curves.len()).collect();
        let m: Vec<f64> = self
            .curves
            .iter()
            .map(|c| c.mean_drop(&self.dense))
            .collect();
        idx.sort_by(|&a, &b| {
            m[b].total_cmp(&m[a]).then_with(|| {
                self.curves[a]
                    .subject
                    .name
                    .cmp(&self.curves[b].subject.name)
            })
        });
        idx
    }

    /// The table printed at the end: one row per subject, most sensitive
    /// first, accuracy lost (points) at each ratio.
    pub fn table(&self) -> String {
        let mut b = tabled::builder::Builder::default();
        let mut head = vec![
            "rank".to_owned(),
            self.rule_title().to_owned(),
            self.size_title().to_owned(),
        ];
        head.extend(self.ratios.iter().map(|r| format!("{r}")));
        head.push("mean".into());
        b.push_record(head);
        for (rank, &i) in self.ranking().iter().enumerate() {
            let c = &self.curves[i];
            let mut row = vec![
                (rank + 1).to_string(),
                crate::plan::shorten_layers(&c.subject.layers),
                c.subject.size.to_string(),
            ];
            row.extend(
                c.points
                    .iter()
                    .map(|p| signed((p.score.accuracy - self.dense.accuracy) * 100.0)),
            );
            row.push(signed(-c.mean_drop(&self.dense)));
            b.push_record(row);
        }
        let mut t = b.build();
        t.with(tabled::settings::Style::sharp());
        t.to_string()
    }

    fn rule_title(&self) -> &'static str {
        match self.rule {
            RuleWord::Group => "group",
            RuleWord::Layer => "layer",
        }
    }

    /// What a subject's size counts: a group's coupled channels as the plan
    /// counts them (for `prune heads` too: channels, not heads), a layer's
    /// weights.
    fn size_title(&self) -> &'static str {
        match self.rule {
            RuleWord::Group => "channels",
            RuleWord::Layer => "weights",
        }
    }

    /// The chart: accuracy against ratio, one line per subject, the dense
    /// model's accuracy dashed.
    pub fn chart(&self) -> Result<String, crate::report::chart::ChartError> {
        use crate::report::chart::{line_svg, LineChart, Series};
        let mut series = vec![Series::dashed(
            "dense",
            vec![
                (0.0, self.dense.accuracy * 100.0),
                (
                    self.ratios.last().copied().unwrap_or(1.0),
                    self.dense.accuracy * 100.0,
                ),
            ],
        )];
        for c in &self.curves {
            let mut pts = vec![(0.0, self.dense.accuracy * 100.0)];
            pts.extend(c.points.iter().map(|p| (p.ratio, p.score.accuracy * 100.0)));
            series.push(Series::new(c.subject.name.clone(), pts));
        }
        line_svg(&LineChart {
            x_label: format!("fraction of {} removed", self.size_title()),
            y_label: format!("accuracy on {} test images (%)", self.images),
            series,
            marks: Vec::new(),
            y_range: None,
            x_whole: false,
        })
    }
}

/// Whether a criterion needs training batches before pruning (gradients
/// or activations), gathered once on the dense model for every probe.
pub fn needs_batches(c: Criterion) -> bool {
    matches!(c, Criterion::Taylor | Criterion::Wanda)
}

/// What the front end checks before the executor starts: the stage can be
/// measured at these ratios, and the budget is a fraction that this stage
/// can move (masks leave MACs and latency as they are).
pub fn preflight(
    plan: &Plan,
    ratios: &[f64],
    budget: Option<solve::Budget>,
) -> Result<Analysis, SensitivityError> {
    let a = Analysis::new(plan, ratios)?;
    if let Some(b) = budget {
        let x = b.fraction();
        if !(x > 0.0 && x <= 1.0) {
            return Err(SensitivityError::Budget {
                what: b.what(),
                flag: b.flag(),
                value: x,
            });
        }
        if a.rule == RuleWord::Layer && !matches!(b, solve::Budget::Params(_)) {
            return Err(SensitivityError::MasksKeepMacs {
                granularity: a.stage.granularity.to_string(),
            });
        }
    }
    Ok(a)
}

/// A change in points, signed, without a negative zero.
fn signed(x: f64) -> String {
    let r = (x * 100.0).round() / 100.0;
    if r == 0.0 {
        "0.00".into()
    } else {
        format!("{r:+.2}")
    }
}
