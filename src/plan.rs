//! The execution plan: a recipe resolved against its model graph. Plain data
//! with a stable YAML dump (`prunex plan --yaml`), read by golden tests,
//! reviewers and watch mode.

use serde::Serialize;

use crate::check::recipe::Unit;

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
    /// Prune stages, in order.
    pub stages: Vec<Stage>,
}

/// One prune block.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Stage {
    /// `weights`, `2:4`, `channels` or `blocks`.
    pub granularity: String,
    /// Importance criterion.
    pub importance: String,
    /// How coupled channels' importance combines.
    pub aggregate: String,
    /// `local` or `global`.
    pub scope: String,
    /// Channel counts are kept multiples of this.
    pub round_to: Option<usize>,
    /// Taylor importance: batches of gradients gathered.
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
    /// The fraction a layer or group whose final target is `target` (of a
    /// stage ending at `end`) removes at this step.
    pub fn scale(&self, target: &Target, end: f64) -> f64 {
        let t = target.fraction(end);
        match self.progress {
            Some(p) => t * p,
            None if end > 0.0 => t * self.fraction / end,
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
    /// The target.
    pub target: Target,
    /// Channels kept after the last step (for local scope; global ranking
    /// decides at run time within the caps).
    pub keep: Option<usize>,
    /// The group's fraction removed at each schedule step: its final target
    /// scaled by the stage's progress.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<f64>,
    /// The recipe lines that set the target.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub set_by: Vec<String>,
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
