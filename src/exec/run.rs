//! `prunex run`: the checked plan executed on libtorch — dense training when
//! no weights are given, evaluation, pruning at each scheduled step
//! (masks re-applied after every optimizer step; channels and blocks removed
//! physically, the optimizer rebuilt), fine-tuning, export.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use miette::{Diagnostic, Report};
use prunex::check::recipe::{Device as DeviceSpec, LrSchedule, Recipe, TrainSpec, Unit};
use prunex::check::{check_path, parse_override, Mode};
use prunex::data::{batches, load, Batch, DataSet, Rng, Transform};
use prunex::diagnostics::{is_error, render_human};
use prunex::graph::{analyze, coupling, Graph};
use prunex::models::weights::{self, StateDict};
use prunex::output::write_atomically;
use prunex::plan::{Plan, Stage, Target};
use prunex::prune::{blocks, importance, mask, surgery};
use prunex::syntax::FsLoader;
use serde::Serialize;
use tch::{nn, nn::OptimizerConfig, Device, Kind, Tensor};
use thiserror::Error;

use super::model::TorchModel;

/// What can stop a run.
#[derive(Debug, Error, Diagnostic)]
pub enum RunError {
    /// The recipe does not check (its diagnostics were printed).
    #[error("the recipe has errors; nothing was run")]
    #[diagnostic(
        code(prunex::run::invalid_recipe),
        help("fix the problems above (`prunex check` shows them)")
    )]
    Invalid,
    /// libtorch failed.
    #[error("libtorch failed: {0}")]
    #[diagnostic(
        code(prunex::run::torch),
        help("this usually means the device ran out of memory or the device name is wrong")
    )]
    Torch(#[from] tch::TchError),
    /// The loss stopped being a number.
    #[error("the loss became {value} in {stage} epoch {epoch}, step {step}")]
    #[diagnostic(
        code(prunex::run::non_finite_loss),
        help("lower the learning rate, or add warm-up (`warmup 1 epochs`)")
    )]
    NonFinite {
        /// Stage.
        stage: String,
        /// Epoch (1-based).
        epoch: u64,
        /// Step within the epoch.
        step: usize,
        /// NaN or inf.
        value: f64,
    },
    /// An output could not be written.
    #[error("cannot write {path}: {reason}")]
    #[diagnostic(
        code(prunex::run::write_failed),
        help("check that the export folder is writable; earlier outputs are left as they were")
    )]
    Write {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
}

/// Metrics of one epoch.
#[derive(Clone, Debug, Serialize)]
pub struct EpochReport {
    /// `pretrain` or `finetune`.
    pub stage: String,
    /// 1-based epoch.
    pub epoch: u64,
    /// Mean training loss.
    pub loss: f64,
    /// Training accuracy.
    pub train_accuracy: f64,
    /// Test accuracy after the epoch.
    pub test_accuracy: f64,
    /// Fraction of conv/linear weights that are zero or removed, relative to the dense model.
    pub sparsity: f64,
}

/// One conv or linear layer before and after.
#[derive(Clone, Debug, Serialize)]
pub struct LayerReport {
    /// Module path.
    pub layer: String,
    /// Weight shape before.
    pub shape_before: Vec<usize>,
    /// Weight shape after (absent when a block was removed).
    pub shape_after: Option<Vec<usize>>,
    /// Weights zero or removed, relative to before.
    pub sparsity: f64,
    /// Parameters before and after.
    pub params: (u64, u64),
    /// MACs per sample before and after.
    pub macs: (u64, u64),
}

/// The run report written as report.yaml.
#[derive(Clone, Debug, Serialize)]
pub struct RunReport {
    /// Recipe name.
    pub recipe: String,
    /// prunex version.
    pub prunex: String,
    /// libtorch version.
    pub libtorch: String,
    /// The device used.
    pub device: String,
    /// Seed.
    pub seed: u64,
    /// Test accuracy of the dense model.
    pub dense_accuracy: f64,
    /// Right after the first pruning step, before fine-tuning.
    pub pruned_accuracy: Option<f64>,
    /// After fine-tuning.
    pub final_accuracy: f64,
    /// Parameters before and after.
    pub params: (u64, u64),
    /// MACs per sample before and after.
    pub macs: (u64, u64),
    /// Fraction of conv/linear weights zero or removed.
    pub sparsity: f64,
    /// Per-epoch metrics.
    pub epochs: Vec<EpochReport>,
    /// Per conv/linear layer: shapes, sparsity, params and MACs before and after.
    pub layers: Vec<LayerReport>,
    /// The plan that was run.
    pub plan: Plan,
}

struct Session {
    device: Device,
    data: DataSet,
    transform: Transform,
    batch: usize,
    eval_batch: usize,
    rng: Rng,
    model: TorchModel,
    masks: BTreeMap<String, Tensor>,
    dense_weights: u64,
    epochs: Vec<EpochReport>,
    /// The teacher and (temperature, alpha), while distilling.
    teacher: Option<(TorchModel, f64, f64)>,
    /// Network Slimming's L1 strength on BatchNorm γ, while training.
    penalty: Option<f64>,
}

fn to_tensor(b: &Batch, device: Device) -> (Tensor, Tensor) {
    let s: Vec<i64> = b.shape.iter().map(|&d| d as i64).collect();
    (
        Tensor::from_slice(&b.x).reshape(&s).to_device(device),
        Tensor::from_slice(&b.y).to_device(device),
    )
}

/// How many predictions in a batch are right.
fn correct(logits: &Tensor, y: &Tensor) -> i64 {
    logits
        .argmax(-1, false)
        .eq_tensor(y)
        .sum(Kind::Int64)
        .int64_value(&[])
}

fn device_of(spec: Option<DeviceSpec>) -> Device {
    match spec.unwrap_or(DeviceSpec::Auto) {
        DeviceSpec::Auto => Device::cuda_if_available(),
        DeviceSpec::Cpu => Device::Cpu,
        DeviceSpec::Cuda(i) => Device::Cuda(i),
    }
}

impl Session {
    fn evaluate(&mut self) -> Result<f64, RunError> {
        let (mut right, mut total) = (0i64, 0i64);
        for b in batches(&self.data.test, &self.transform, self.eval_batch, None) {
            let (x, y) = to_tensor(&b, self.device);
            let out = tch::no_grad(|| self.model.forward(&x, false))?;
            right += correct(&out, &y);
            total += b.y.len() as i64;
        }
        Ok(right as f64 / total.max(1) as f64)
    }

    /// Zero or removed conv/linear weights, relative to the dense model.
    fn sparsity(&self) -> f64 {
        let mut nonzero = 0u64;
        for (name, t) in self.model.vs.variables() {
            let module = name.rsplit_once('.').map_or("", |(m, _)| m);
            let is_weight = name.ends_with(".weight")
                && self.model.graph.nodes.iter().any(|n| {
                    n.name == module
                        && matches!(
                            n.op,
                            prunex::graph::Op::Conv2d { .. } | prunex::graph::Op::Linear { .. }
                        )
                });
            if is_weight {
                nonzero += t.ne(0.0).sum(Kind::Int64).int64_value(&[]) as u64;
            }
        }
        1.0 - nonzero as f64 / self.dense_weights.max(1) as f64
    }

    fn apply_masks(&mut self) -> Result<(), RunError> {
        let vars = self.model.vs.variables();
        tch::no_grad(|| -> Result<(), RunError> {
            for (k, m) in &self.masks {
                if let Some(v) = vars.get(k) {
                    let mut v = v.shallow_clone();
                    let _ = v.f_mul_(m)?;
                }
            }
            Ok(())
        })
    }

    fn optimizer(&self, t: &TrainSpec) -> Result<nn::Optimizer, RunError> {
        let lr = t.lr.unwrap_or(0.01);
        let wd = t.weight_decay.unwrap_or(0.0);
        Ok(match t.optimizer.as_deref().unwrap_or("sgd") {
            "adam" => nn::Adam {
                wd,
                ..Default::default()
            }
            .build(&self.model.vs, lr)?,
            "adamw" => nn::AdamW {
                wd,
                ..Default::default()
            }
            .build(&self.model.vs, lr)?,
            _ => nn::Sgd {
                momentum: t.momentum.unwrap_or(0.0),
                dampening: 0.0,
                wd,
                nesterov: t.nesterov.unwrap_or(false),
            }
            .build(&self.model.vs, lr)?,
        })
    }

    /// One training epoch; returns mean loss and training accuracy.
    fn train_epoch(
        &mut self,
        opt: &mut nn::Optimizer,
        t: &TrainSpec,
        stage: &str,
        epoch: u64,
        total: u64,
    ) -> Result<(f64, f64), RunError> {
        let batch = t.batch.map(|b| b as usize).unwrap_or(self.batch);
        let data = batches(
            &self.data.train,
            &self.transform,
            batch,
            Some(&mut self.rng),
        );
        let steps = data.len();
        let base = t.lr.unwrap_or(0.01);
        let (mut loss_sum, mut right, mut seen) = (0.0, 0i64, 0i64);
        for (i, b) in data.iter().enumerate() {
            // Learning-rate schedule, evaluated per step.
            let progress = ((epoch - 1) as f64 + i as f64 / steps as f64) / total.max(1) as f64;
            let mut lr = match &t.lr_schedule {
                Some(LrSchedule::Cosine { min }) => {
                    min + (base - min) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
                }
                Some(LrSchedule::Step { every, unit, gamma }) => {
                    let done = match unit {
                        Unit::Epochs => epoch - 1,
                        Unit::Steps => (epoch - 1) * steps as u64 + i as u64,
                    };
                    base * gamma.powi((done / every.max(&1)) as i32)
                }
                _ => base,
            };
            if let Some((w, unit)) = t.warmup {
                let done = match unit {
                    Unit::Epochs => (epoch - 1) as f64 + i as f64 / steps as f64,
                    Unit::Steps => ((epoch - 1) * steps as u64 + i as u64) as f64,
                };
                if done < w as f64 {
                    lr *= (done + 1.0 / steps as f64).min(w as f64) / w as f64;
                }
            }
            opt.set_lr(lr);
            let (x, y) = to_tensor(b, self.device);
            let out = self.model.forward(&x, true)?;
            let ce =
                out.f_cross_entropy_loss::<Tensor>(&y, None, tch::Reduction::Mean, -100, 0.0)?;
            let loss = match self.teacher.as_mut().filter(|_| stage == "finetune") {
                // alpha * T^2 * KL(teacher/T || student/T) + (1 - alpha) * CE
                Some((teacher, temp, alpha)) => {
                    let (temp, alpha) = (*temp, *alpha);
                    let soft = tch::no_grad(|| teacher.forward(&x, false))?.f_div_scalar(temp)?;
                    let log_pt = soft.f_log_softmax(-1, Kind::Float)?;
                    let log_ps = out.f_div_scalar(temp)?.f_log_softmax(-1, Kind::Float)?;
                    let kl = log_pt
                        .f_exp()?
                        .f_mul(&log_pt.f_sub(&log_ps)?)?
                        .f_sum(Kind::Float)?
                        .f_div_scalar(b.y.len() as f64)?;
                    kl.f_mul_scalar(alpha * temp * temp)?
                        .f_add(&ce.f_mul_scalar(1.0 - alpha)?)?
                }
                None => ce,
            };
            let value = loss.double_value(&[]);
            if !value.is_finite() {
                return Err(RunError::NonFinite {
                    stage: stage.into(),
                    epoch,
                    step: i + 1,
                    value,
                });
            }
            opt.zero_grad();
            loss.backward();
            if let Some(lambda) = self.penalty {
                // Network Slimming: the subgradient of lambda * |gamma|.
                tch::no_grad(|| -> Result<(), RunError> {
                    for (name, v) in self.model.vs.variables() {
                        let module = name.strip_suffix(".weight").unwrap_or("");
                        if self.model.batches_tracked.contains_key(module) {
                            let mut g = v.grad();
                            if g.defined() {
                                let _ = g.f_add_(&v.f_sign()?.f_mul_scalar(lambda)?)?;
                            }
                        }
                    }
                    Ok(())
                })?;
            }
            opt.step();
            self.apply_masks()?;
            loss_sum += value * b.y.len() as f64;
            right += correct(&out, &y);
            seen += b.y.len() as i64;
        }
        Ok((
            loss_sum / seen.max(1) as f64,
            right as f64 / seen.max(1) as f64,
        ))
    }

    /// Sums the loss gradients of `n` training batches, by state_dict key
    /// (first-order Taylor importance).
    fn gather_gradients(&mut self, n: u64) -> Result<StateDict, RunError> {
        let vars = self.model.vs.variables();
        let zero = |vars: &std::collections::HashMap<String, Tensor>| {
            for v in vars.values() {
                let mut g = v.grad();
                if g.defined() {
                    let _ = g.zero_();
                }
            }
        };
        zero(&vars);
        let data = batches(
            &self.data.train,
            &self.transform,
            self.batch,
            Some(&mut self.rng),
        );
        for b in data.iter().take(n as usize) {
            let (x, y) = to_tensor(b, self.device);
            let out = self.model.forward(&x, true)?;
            out.f_cross_entropy_loss::<Tensor>(&y, None, tch::Reduction::Mean, -100, 0.0)?
                .backward();
        }
        let mut grads = StateDict::new();
        for (k, v) in &vars {
            let g = v.grad();
            if g.defined() {
                let g = g.f_to_device(Device::Cpu)?.f_contiguous()?;
                let shape = g.size().iter().map(|&d| d as usize).collect();
                grads.insert(
                    k.clone(),
                    weights::Tensor::f32(shape, Vec::<f32>::try_from(g.f_flatten(0, -1)?)?),
                );
            }
        }
        zero(&vars);
        Ok(grads)
    }

    /// Prunes one stage to the schedule fraction `fraction`.
    fn prune(&mut self, stage: &Stage, fraction: f64, end: f64, seed: u64) -> Result<(), RunError> {
        let mut sd = self.model.state_dict()?;
        let grads = match stage.importance.as_str() {
            "taylor" => Some(self.gather_gradients(stage.batches.unwrap_or(100))?),
            _ => None,
        };
        let criterion = match stage.importance.as_str() {
            "l1" => importance::Criterion::L1,
            "random" => importance::Criterion::Random,
            "bn_scale" => importance::Criterion::BnScale,
            "taylor" => importance::Criterion::Taylor,
            _ => importance::Criterion::L2,
        };
        let scale = |t: &Target| {
            if end > 0.0 {
                t.fraction(end) * fraction / end
            } else {
                t.fraction(end)
            }
        };
        if let Some((n, m)) = stage
            .granularity
            .split_once(':')
            .and_then(|(n, m)| Some((n.parse().ok()?, m.parse().ok()?)))
        {
            let keys: Vec<String> = stage
                .layers
                .iter()
                .filter(|l| l.target != Target::Ignored)
                .map(|l| format!("{}.weight", l.layer))
                .collect();
            let (masks, _) = mask::n_m(&sd, &keys, n, m);
            return self.set_masks(masks);
        }
        // Masks rank magnitudes; under Taylor those are |w · g|. The
        // values only pick the masks: masks apply to the model's weights.
        if let (Some(gr), false) = (
            &grads,
            stage.granularity == "channels" || stage.granularity == "blocks",
        ) {
            for (k, t) in sd.iter_mut() {
                if let (weights::TensorData::F32(w), Some(g)) =
                    (&mut t.data, gr.get(k).and_then(|g| g.as_f32()))
                {
                    w.iter_mut().zip(g).for_each(|(w, g)| *w *= g);
                }
            }
        }
        match stage.granularity.as_str() {
            "weights" => {
                let masks = if stage.scope == "global" {
                    let keys: Vec<String> = stage
                        .layers
                        .iter()
                        .filter(|l| l.target != Target::Ignored)
                        .map(|l| format!("{}.weight", l.layer))
                        .collect();
                    mask::global(&sd, &keys, fraction)
                } else {
                    let targets = stage
                        .layers
                        .iter()
                        .filter(|l| l.target != Target::Ignored)
                        .map(|l| (format!("{}.weight", l.layer), scale(&l.target)))
                        .collect();
                    mask::local(&sd, &targets)
                };
                self.set_masks(masks)
            }
            "blocks" => {
                let g = self.model.graph.clone();
                let found = blocks::find(&g);
                let plan = stage.blocks.as_ref();
                let candidates: Vec<&blocks::Block> = found
                    .iter()
                    .filter(|b| plan.is_none_or(|p| p.candidates.contains(&b.name)))
                    .collect();
                let remove = ((candidates.len() as f64) * fraction + 1e-9).floor() as usize;
                let mut ranked: Vec<(f64, &blocks::Block)> = candidates
                    .iter()
                    .map(|b| {
                        (
                            blocks::score(&g, b, &sd, criterion == importance::Criterion::BnScale),
                            *b,
                        )
                    })
                    .collect();
                ranked.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap_or(std::cmp::Ordering::Equal));
                let chosen: Vec<&blocks::Block> =
                    ranked.iter().take(remove).map(|(_, b)| *b).collect();
                let (ng, nsd) = blocks::remove(&g, &chosen, Some(&sd));
                self.rebuild(ng, nsd.expect("weights given"))
            }
            _ => {
                let g = self.model.graph.clone();
                let c = coupling(&g).map_err(|e| tch::TchError::Kind(e.to_string()))?;
                let sel = importance::Selection {
                    criterion,
                    aggregate: match stage.aggregate.as_str() {
                        "sum" => importance::Aggregate::Sum,
                        "max" => importance::Aggregate::Max,
                        _ => importance::Aggregate::Mean,
                    },
                    round_to: stage.round_to,
                    seed,
                };
                let mut removal = surgery::Removal::new();
                if stage.scope == "global" {
                    // One ranking across groups; rules become per-group bounds.
                    let bounds: BTreeMap<usize, importance::Bounds> = stage
                        .groups
                        .iter()
                        .filter(|gp| !matches!(gp.target, Target::Ignored | Target::Frozen(_)))
                        .filter(|gp| c.groups.get(gp.group).is_some())
                        .map(|gp| {
                            let b = match gp.target {
                                Target::Exact(x) => importance::Bounds {
                                    max: scale(&Target::Exact(x)),
                                    min: scale(&Target::Exact(x)),
                                },
                                Target::AtMost(x) => importance::Bounds {
                                    max: x.min(0.999),
                                    min: 0.0,
                                },
                                Target::AtLeast(x) => importance::Bounds {
                                    max: 0.999,
                                    min: scale(&Target::Exact(x)),
                                },
                                _ => importance::Bounds {
                                    max: 0.999,
                                    min: 0.0,
                                },
                            };
                            (gp.group, b)
                        })
                        .collect();
                    // The fraction is of the dense channels; part may be gone already.
                    let dense: usize = stage
                        .groups
                        .iter()
                        .filter(|gp| bounds.contains_key(&gp.group))
                        .map(|gp| gp.channels)
                        .sum();
                    let now: usize = bounds.keys().map(|&gid| c.groups[gid].channels.len()).sum();
                    let keep = ((dense as f64) * (1.0 - fraction)).round() as usize;
                    let ratio = if now > 0 {
                        now.saturating_sub(keep) as f64 / now as f64
                    } else {
                        0.0
                    };
                    let removal =
                        importance::select_global(&g, &c, &sd, &bounds, ratio, sel, grads.as_ref());
                    let (ng, nsd) = surgery::remove_channels(&g, &c, &removal, Some(&sd));
                    return self.rebuild(ng, nsd.expect("weights given"));
                }
                // Targets count channels of the dense model; a group may have
                // lost some already, so each becomes a fraction of what is left.
                let mut ratios = BTreeMap::new();
                for gp in &stage.groups {
                    let Some(grp) = c.groups.get(gp.group) else {
                        continue;
                    };
                    if matches!(gp.target, Target::Ignored | Target::Frozen(_)) {
                        continue;
                    }
                    let keep =
                        importance::keep_count(gp.channels, scale(&gp.target), stage.round_to);
                    let n = grp.channels.len();
                    if n > keep {
                        ratios.insert(grp.id, 1.0 - keep as f64 / n as f64);
                    }
                }
                let local = importance::Selection {
                    round_to: None,
                    ..sel
                };
                removal.extend(importance::select_local(
                    &g,
                    &c,
                    &sd,
                    &ratios,
                    local,
                    grads.as_ref(),
                ));
                let (ng, nsd) = surgery::remove_channels(&g, &c, &removal, Some(&sd));
                self.rebuild(ng, nsd.expect("weights given"))
            }
        }
    }

    fn set_masks(&mut self, masks: mask::Masks) -> Result<(), RunError> {
        let shapes: BTreeMap<String, Vec<i64>> = self
            .model
            .vs
            .variables()
            .iter()
            .map(|(k, v)| (k.clone(), v.size()))
            .collect();
        for (k, keep) in masks {
            let m: Vec<f32> = keep.iter().map(|&b| if b { 1.0 } else { 0.0 }).collect();
            let t = Tensor::from_slice(&m)
                .reshape(&shapes[&k])
                .to_device(self.device);
            self.masks.insert(k, t);
        }
        self.apply_masks()
    }

    fn rebuild(&mut self, g: Graph, sd: StateDict) -> Result<(), RunError> {
        let mut m = TorchModel::new(&g, self.device);
        m.load(&sd)?;
        self.model = m;
        self.masks.clear();
        Ok(())
    }
}

/// Runs a recipe; prints diagnostics and progress, returns the report.
pub fn run(path: &Path, set: &[String]) -> Result<RunReport, RunError> {
    let overrides: Vec<_> = set.iter().filter_map(|s| parse_override(s).ok()).collect();
    let checked = check_path(path, &FsLoader, &overrides, Mode::Single);
    for r in &checked.reports {
        eprint!("{}", render_human(r, super::color()));
    }
    if checked.reports.iter().any(|r| is_error(r.as_ref())) {
        return Err(RunError::Invalid);
    }
    let (Some(recipe), Some(graph), Some(plan)) = (checked.recipe, checked.graph, checked.plan)
    else {
        return Err(RunError::Invalid);
    };
    execute(&recipe, &graph, plan)
}

fn execute(recipe: &Recipe, graph: &Graph, plan: Plan) -> Result<RunReport, RunError> {
    let seed = recipe.seed.unwrap_or(0);
    tch::manual_seed(seed as i64);
    let device = device_of(recipe.device);
    let d = recipe.data.as_ref().ok_or(RunError::Invalid)?;
    let data = load(&d.kind.node, &d.path.node, d.limit.map(|l| l as usize)).map_err(|e| {
        eprint!("{}", render_human(&Report::new(e), super::color()));
        RunError::Invalid
    })?;
    let (mean, std) = d.normalize.clone().unwrap_or((vec![0.0], vec![1.0]));
    let transform = Transform {
        mean: mean.iter().map(|&x| x as f32).collect(),
        std: std.iter().map(|&x| x as f32).collect(),
        pad: d.pad.unwrap_or(0) as usize,
        crop: d.crop.unwrap_or(0) as usize,
        flip: d.flip,
    };
    let before = analyze(graph, graph.input).map_err(|e| tch::TchError::Kind(e.to_string()))?;
    let dense_weights: u64 = graph
        .modules()
        .filter(|(_, n)| {
            matches!(
                n.op,
                prunex::graph::Op::Conv2d { .. } | prunex::graph::Op::Linear { .. }
            )
        })
        .map(|(_, n)| n.op.state()[0].1.iter().product::<usize>() as u64)
        .sum();
    let mut s = Session {
        device,
        data,
        transform,
        batch: d.batch.unwrap_or(128) as usize,
        eval_batch: d.eval_batch.unwrap_or(1000) as usize,
        rng: Rng::new(seed),
        model: TorchModel::new(graph, device),
        masks: BTreeMap::new(),
        dense_weights,
        epochs: Vec::new(),
        teacher: None,
        penalty: plan.stages.iter().find_map(|st| st.penalty),
    };
    let spec = recipe.model.as_ref().ok_or(RunError::Invalid)?;
    if let Some(w) = &spec.weights {
        let (sd, notes) = weights::load_for(&w.node, graph).map_err(|e| {
            eprint!("{}", render_human(&Report::new(e), super::color()));
            RunError::Invalid
        })?;
        for n in notes {
            eprintln!("note: {n}");
        }
        s.model.load(&sd)?;
    } else if let Some(pre) = &recipe.pretrain {
        train(&mut s, pre, "pretrain", &BTreeMap::new(), &plan)?;
    }
    let dense = s.evaluate()?;
    eprintln!("dense test accuracy: {:.2} %", dense * 100.0);
    s.teacher = teacher(recipe, graph, &s)?;

    // Prune steps by fine-tuning epoch: (stage, fraction, end).
    let mut events: BTreeMap<u64, Vec<(usize, f64)>> = BTreeMap::new();
    for (i, st) in plan.stages.iter().enumerate() {
        for step in &st.schedule {
            let epoch = match step.unit {
                Unit::Epochs => step.at,
                Unit::Steps => step.at / (s.data.train.len().div_ceil(s.batch) as u64).max(1),
            };
            events.entry(epoch).or_default().push((i, step.fraction));
        }
    }
    let ft = recipe.finetune.clone().unwrap_or_default();
    let mut pruned_accuracy = None;
    // Steps at epoch 0 happen before fine-tuning, and are measured.
    apply_events(
        &mut s,
        &plan,
        events.get(&0).map(Vec::as_slice).unwrap_or(&[]),
        seed,
    )?;
    if events.contains_key(&0) {
        let a = s.evaluate()?;
        eprintln!(
            "after pruning: {:.2} % (sparsity {:.2} %)",
            a * 100.0,
            s.sparsity() * 100.0
        );
        pruned_accuracy = Some(a);
    }
    train(&mut s, &ft, "finetune", &events, &plan)?;
    let last = s.evaluate()?;
    let after = analyze(&s.model.graph, s.model.graph.input)
        .map_err(|e| tch::TchError::Kind(e.to_string()))?;
    let final_sd = s.model.state_dict()?;
    let layers = graph
        .modules()
        .filter(|(_, n)| {
            matches!(
                n.op,
                prunex::graph::Op::Conv2d { .. } | prunex::graph::Op::Linear { .. }
            )
        })
        .map(|(id, n)| {
            let key = format!("{}.weight", n.name);
            let shape_before = n.op.state()[0].1.clone();
            let numel: usize = shape_before.iter().product();
            let after_id = s.model.graph.nodes.iter().position(|m| m.name == n.name);
            let w = final_sd.get(&key);
            let nonzero = w
                .and_then(|t| t.as_f32())
                .map_or(0, |v| v.iter().filter(|x| **x != 0.0).count());
            LayerReport {
                layer: n.name.clone(),
                shape_before,
                shape_after: w.map(|t| t.shape.clone()),
                sparsity: 1.0 - nonzero as f64 / numel.max(1) as f64,
                params: (before.params[id], after_id.map_or(0, |i| after.params[i])),
                macs: (before.macs[id], after_id.map_or(0, |i| after.macs[i])),
            }
        })
        .collect();
    let report = RunReport {
        layers,
        recipe: plan.recipe.clone(),
        prunex: env!("CARGO_PKG_VERSION").into(),
        libtorch: env!("PRUNEX_LIBTORCH_VERSION").into(),
        device: format!("{device:?}"),
        seed,
        dense_accuracy: dense,
        pruned_accuracy,
        final_accuracy: last,
        params: (before.total_params, after.total_params),
        macs: (before.total_macs, after.total_macs),
        sparsity: s.sparsity(),
        epochs: s.epochs.clone(),
        plan,
    };
    let out_dir: PathBuf = recipe
        .export
        .as_ref()
        .map(|e| e.node.clone())
        .unwrap_or_else(|| PathBuf::from("runs").join(&report.recipe));
    export(&out_dir, &s.model, &report)?;
    print_summary(&report, &out_dir);
    Ok(report)
}

/// The distillation teacher: the dense model as it is before pruning, or
/// another model with its weights; temperature 4 and alpha 0.9 unless set.
fn teacher(
    recipe: &Recipe,
    graph: &Graph,
    s: &Session,
) -> Result<Option<(TorchModel, f64, f64)>, RunError> {
    use prunex::check::recipe::TeacherSpec;
    let Some(d) = &recipe.distill else {
        return Ok(None);
    };
    let (temp, alpha) = (d.temperature.unwrap_or(4.0), d.alpha.unwrap_or(0.9));
    let model = match &d.teacher {
        None | Some(TeacherSpec::Dense) => {
            let mut t = TorchModel::new(graph, s.device);
            t.load(&s.model.state_dict()?)?;
            t
        }
        Some(TeacherSpec::Model { source, weights: w }) => {
            use prunex::syntax::ast::ModelSource;
            let name = match source {
                ModelSource::Zoo(n) | ModelSource::File(n) => n.clone(),
            };
            let spec = recipe.model.as_ref().ok_or(RunError::Invalid)?;
            let input = spec
                .input
                .as_ref()
                .map(|i| [i.node[0] as usize, i.node[1] as usize, i.node[2] as usize]);
            let classes = spec.classes.as_ref().map(|c| c.node as usize);
            let show = |e: &dyn Diagnostic| eprintln!("{e}");
            let g = prunex::models::load(&name, input, classes).map_err(|e| {
                show(&e);
                RunError::Invalid
            })?;
            let mut t = TorchModel::new(&g, s.device);
            if let Some(w) = w {
                let (sd, _) = weights::load_for(w, &g).map_err(|e| {
                    eprint!("{}", render_human(&Report::new(e), super::color()));
                    RunError::Invalid
                })?;
                t.load(&sd)?;
            }
            t
        }
    };
    Ok(Some((model, temp, alpha)))
}

fn apply_events(
    s: &mut Session,
    plan: &Plan,
    events: &[(usize, f64)],
    seed: u64,
) -> Result<(), RunError> {
    for &(i, fraction) in events {
        let st = &plan.stages[i];
        let end = st.schedule.last().map_or(fraction, |x| x.fraction);
        s.prune(st, fraction, end, seed)?;
    }
    Ok(())
}

fn train(
    s: &mut Session,
    t: &TrainSpec,
    stage: &str,
    events: &BTreeMap<u64, Vec<(usize, f64)>>,
    plan: &Plan,
) -> Result<(), RunError> {
    let epochs = t.epochs.unwrap_or(0);
    let mut opt = s.optimizer(t)?;
    for e in 1..=epochs {
        // Pruning steps scheduled at this fine-tuning epoch (epoch 0 ran before).
        if let Some(ev) = events.get(&(e - 1)).filter(|_| e > 1) {
            apply_events(s, plan, ev, 0)?;
            opt = s.optimizer(t)?;
        }
        let (loss, acc) = s.train_epoch(&mut opt, t, stage, e, epochs)?;
        let test = s.evaluate()?;
        let sparsity = s.sparsity();
        eprintln!(
            "{stage} epoch {e}/{epochs}: loss {loss:.4}, train {:.2} %, test {:.2} %, sparsity {:.2} %",
            acc * 100.0,
            test * 100.0,
            sparsity * 100.0
        );
        s.epochs.push(EpochReport {
            stage: stage.into(),
            epoch: e,
            loss,
            train_accuracy: acc,
            test_accuracy: test,
            sparsity,
        });
    }
    Ok(())
}

fn export(dir: &Path, m: &TorchModel, report: &RunReport) -> Result<(), RunError> {
    let fail = |p: &Path, e: std::io::Error| RunError::Write {
        path: p.display().to_string(),
        reason: e.to_string(),
    };
    std::fs::create_dir_all(dir).map_err(|e| fail(dir, e))?;
    let sd = m.state_dict()?;
    let w = dir.join("weights.safetensors");
    write_atomically(&w, weights::to_safetensors(&sd)).map_err(|e| fail(&w, e))?;
    let y = dir.join("model.yaml");
    write_atomically(&y, prunex::models::yaml::to_yaml(&m.graph)).map_err(|e| fail(&y, e))?;
    let r = dir.join("report.yaml");
    write_atomically(&r, prunex::yaml::to_string(report)).map_err(|e| fail(&r, e))?;
    let j = dir.join("report.json");
    write_atomically(
        &j,
        serde_json::to_string_pretty(report).expect("reports serialize"),
    )
    .map_err(|e| fail(&j, e))?;
    Ok(())
}

#[derive(tabled::Tabled)]
struct Row {
    layer: String,
    #[tabled(rename = "weight shape")]
    shape: String,
    #[tabled(rename = "zero or removed")]
    sparsity: String,
    params: String,
    #[tabled(rename = "MACs")]
    macs: String,
}

fn print_summary(r: &RunReport, dir: &Path) {
    use prunex::cli::inspect::{si, thousands};
    let dims = |s: &[usize]| {
        s.iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join("×")
    };
    let rows: Vec<Row> = r
        .layers
        .iter()
        .map(|l| Row {
            layer: l.layer.clone(),
            shape: match &l.shape_after {
                Some(a) if *a != l.shape_before => {
                    format!("{} → {}", dims(&l.shape_before), dims(a))
                }
                Some(a) => dims(a),
                None => format!("{} → removed", dims(&l.shape_before)),
            },
            sparsity: format!("{:.1} %", l.sparsity * 100.0),
            params: format!("{} → {}", thousands(l.params.0), thousands(l.params.1)),
            macs: format!("{} → {}", thousands(l.macs.0), thousands(l.macs.1)),
        })
        .collect();
    let mut t = tabled::Table::new(rows);
    t.with(tabled::settings::Style::sharp());
    println!("{t}");
    println!("{} · seed {} · {}", r.recipe, r.seed, r.device);
    println!(
        "accuracy: dense {:.2} %{} → after fine-tuning {:.2} %",
        r.dense_accuracy * 100.0,
        r.pruned_accuracy
            .map(|a| format!(" → after pruning {:.2} %", a * 100.0))
            .unwrap_or_default(),
        r.final_accuracy * 100.0
    );
    println!(
        "params {} → {} · MACs {} → {} · conv/linear weights zero or removed: {:.2} %",
        si(r.params.0),
        si(r.params.1),
        si(r.macs.0),
        si(r.macs.1),
        r.sparsity * 100.0
    );
    if r.macs.0 == r.macs.1 && r.sparsity > 0.0 {
        println!("note: the pruning is unstructured: zeros do not speed up dense kernels. For a faster model, prune `channels` (or `2:4` on hardware with sparse tensor cores).");
    }
    println!(
        "wrote {}/weights.safetensors, model.yaml, report.yaml, report.json",
        dir.display()
    );
}
