//! A recipe's settings resolved for the plan: every training, data and
//! distillation setting with its default (`plan::defaults`) filled in, once.
//! The executor reads these from the plan and nothing from the recipe.

use std::path::PathBuf;

use super::recipe::{OptimizerKind, Recipe, TeacherSpec, TrainSpec};
use crate::plan::{
    defaults, DataPlan, Device, Distill, LrSchedule, Optimizer, Teacher, Training, Warmup,
};

/// The settings part of a [`crate::plan::Plan`].
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    /// Seed.
    pub seed: u64,
    /// Device.
    pub device: Device,
    /// BatchNorm over all ranks' batches.
    pub sync_bn: bool,
    /// Starting weights.
    pub weights: Option<PathBuf>,
    /// Data.
    pub data: DataPlan,
    /// Dense training, when it happens.
    pub pretrain: Option<Training>,
    /// Distillation.
    pub distill: Option<Distill>,
    /// Fine-tuning, when it happens.
    pub finetune: Option<Training>,
    /// Output folder.
    pub export: PathBuf,
}

/// Resolves a checked recipe's settings; `None` when it lacks what a run
/// needs (a model or data: their own diagnostics say so). `teacher` is the
/// resolved teacher model, when the recipe distils from one.
pub fn resolve(recipe: &Recipe, teacher: Option<Teacher>) -> Option<Settings> {
    let model = recipe.model.as_ref()?;
    let d = recipe.data.as_ref()?;
    let (mean, std) = d.normalize.clone().unwrap_or((vec![0.0], vec![1.0]));
    let data = DataPlan {
        kind: d.kind.node,
        path: d.path.node.clone(),
        batch: d.batch.unwrap_or(defaults::BATCH),
        eval_batch: d.eval_batch.unwrap_or(defaults::EVAL_BATCH),
        mean,
        std,
        crop: d.crop.unwrap_or(0),
        flip: d.flip,
        pad: d.pad.unwrap_or(0),
        limit: d.limit,
    };
    // An ONNX model carries its weights (its initializers).
    let weights =
        model
            .weights
            .as_ref()
            .map(|w| w.node.clone())
            .or_else(|| match &model.source.node {
                crate::syntax::ast::ModelSource::File(p) if crate::models::onnx::is_onnx(p) => {
                    Some(PathBuf::from(p))
                }
                _ => None,
            });
    let pretrain = recipe
        .pretrain
        .as_ref()
        .filter(|_| weights.is_none())
        .map(|t| training(t, data.batch))
        .filter(|t| t.epochs > 0);
    let finetune = recipe
        .finetune
        .as_ref()
        .map(|t| training(t, data.batch))
        .filter(|t| t.epochs > 0);
    let distill = recipe.distill.as_ref().map(|d| Distill {
        teacher: match &d.teacher {
            None | Some(TeacherSpec::Dense) => Teacher::Dense,
            Some(TeacherSpec::Model { .. }) => teacher.clone().unwrap_or(Teacher::Dense),
        },
        temperature: d.temperature.unwrap_or(defaults::TEMPERATURE),
        alpha: d.alpha.unwrap_or(defaults::ALPHA),
    });
    let name = recipe
        .name
        .as_ref()
        .map(|n| n.node.clone())
        .unwrap_or_default();
    Some(Settings {
        seed: recipe.seed.unwrap_or(defaults::SEED),
        device: recipe.device.unwrap_or(Device::Auto),
        sync_bn: recipe.sync_bn.unwrap_or(false),
        weights,
        data,
        pretrain,
        distill,
        finetune,
        export: recipe
            .export
            .as_ref()
            .map(|e| e.node.clone())
            .unwrap_or_else(|| PathBuf::from("runs").join(name)),
    })
}

/// A training block with its defaults.
fn training(t: &TrainSpec, data_batch: u64) -> Training {
    Training {
        epochs: t.epochs.unwrap_or(0),
        optimizer: match t.optimizer.unwrap_or(OptimizerKind::Sgd) {
            OptimizerKind::Sgd => Optimizer::Sgd {
                momentum: t.momentum.unwrap_or(0.0),
                nesterov: t.nesterov.unwrap_or(false),
            },
            OptimizerKind::Adam => Optimizer::Adam,
            OptimizerKind::AdamW => Optimizer::AdamW,
        },
        lr: t.lr.unwrap_or(defaults::LR),
        weight_decay: t.weight_decay.unwrap_or(0.0),
        lr_schedule: t.lr_schedule.clone().unwrap_or(LrSchedule::Constant),
        warmup: t.warmup.map(|(length, unit)| Warmup { length, unit }),
        lr_mult: t
            .lr_mult
            .iter()
            .map(|(p, m)| (p.node.clone(), *m))
            .collect(),
        batch: t.batch.unwrap_or(data_batch),
    }
}
