//! `prunex run`: the checked plan executed on libtorch — dense training when
//! no weights are given, evaluation, pruning at each scheduled step
//! (masks re-applied after every optimizer step; channels and blocks removed
//! physically, the optimizer rebuilt), fine-tuning, export.
//!
//! A run is a chain of units — each pretraining epoch, the dense
//! evaluation, the pruning before fine-tuning, each fine-tuning epoch, the
//! final measurement — and each unit's result is stored in the stage cache
//! ([`prunex::cache`]) under a hash of everything upstream of it. That one
//! mechanism gives the pretraining cache, a checkpoint every epoch,
//! `--resume`, Ctrl-C (the current batch finishes, the position inside the
//! epoch is saved) and watch mode's "re-run only what changed".
//!
//! Runs repeat: every unit reseeds its data order from its key and libtorch
//! from its key and step, so a resumed run computes exactly what an
//! uninterrupted one does.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use miette::{Diagnostic, Report};
use prunex::cache::{hash_bytes, Cache, Key, KeyBuilder};
use prunex::check::recipe::{Device as DeviceSpec, LrSchedule, Recipe, TrainSpec, Unit};
use prunex::check::{check_path, parse_override, Mode};
use prunex::data::{batches, load, Batch, DataSet, Rng, Transform};
use prunex::diagnostics::{is_error, render_human};
use prunex::graph::{analyze, coupling, Graph};
use prunex::models::weights::{self, StateDict};
use prunex::output::write_atomically;
use prunex::plan::{Plan, Stage, Step, Target};
use prunex::prune::{blocks, importance, mask, surgery};
use prunex::syntax::FsLoader;
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};
use thiserror::Error;

use super::convert::{from_plain, to_plain};
use super::loss;
use super::model::TorchModel;
use super::optim::{Optimizer, Rule};

/// Set by Ctrl-C (or by watch mode, which sends SIGINT): the run stops at
/// the next batch boundary, saves where it is, and exits.
pub static CANCEL: AtomicBool = AtomicBool::new(false);

fn cancelled() -> bool {
    CANCEL.load(Ordering::SeqCst)
}

/// `PRUNEX_INTERRUPT_AT=finetune:2:5` acts as a Ctrl-C before step 5 of
/// fine-tuning epoch 2, so tests can interrupt a run at an exact place.
fn interrupt_at() -> Option<(String, u64, usize)> {
    let v = std::env::var("PRUNEX_INTERRUPT_AT").ok()?;
    let mut it = v.split(':');
    Some((
        it.next()?.to_owned(),
        it.next()?.parse().ok()?,
        it.next()?.parse().ok()?,
    ))
}

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
    /// Ctrl-C (or watch mode) stopped the run; where it was is saved.
    #[error("interrupted in {at}; progress saved")]
    #[diagnostic(
        code(prunex::run::interrupted),
        help(
            "`prunex run --resume {recipe}` continues from here; the export folder was not touched"
        )
    )]
    Interrupted {
        /// Where.
        at: String,
        /// The recipe, for the help line.
        recipe: String,
    },
    /// A schedule counted in steps prunes after the last fine-tuning epoch
    /// (only the data's size tells how many steps an epoch has).
    #[error(
        "the schedule prunes at step {at}, but fine-tuning ends after {total} steps ({epochs} epochs of {per_epoch})"
    )]
    #[diagnostic(
        code(prunex::run::schedule_after_finetune),
        help("end the schedule by step {last}, count it in epochs, or fine-tune longer")
    )]
    ScheduleAfterFinetune {
        /// The step.
        at: u64,
        /// Fine-tuning steps in all.
        total: u64,
        /// Fine-tuning epochs.
        epochs: u64,
        /// Steps per epoch.
        per_epoch: u64,
        /// The last step a schedule may prune at.
        last: u64,
    },
    /// The model's input does not fit the data.
    #[error("the model takes {model:?} inputs but the data's images are {data:?}")]
    #[diagnostic(
        code(prunex::run::input_mismatch),
        help("set the model's `input` to the data's shape, or add `pad` to the data block")
    )]
    InputMismatch {
        /// `[C, H, W]` of the model.
        model: [usize; 3],
        /// `[C, H, W]` of the data after the transform.
        data: [usize; 3],
    },
}

/// Metrics of one epoch (deterministic: same seed, device and threads →
/// same numbers).
#[derive(Clone, Debug, Serialize, Deserialize)]
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

/// Wall-clock measurements, kept apart from the deterministic report.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Timings {
    /// Training epochs: stage, epoch, seconds, images per second.
    pub epochs: Vec<(String, u64, f64, f64)>,
    /// Inference latency of the dense model.
    pub dense: Option<Latency>,
    /// Inference latency of the pruned model.
    pub pruned: Option<Latency>,
    /// libtorch CPU threads.
    pub threads: i32,
}

/// Median inference latency in milliseconds.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
pub struct Latency {
    /// Batch of 1.
    pub batch1_ms: f64,
    /// Batch of [`LATENCY_BATCH`].
    pub batch64_ms: f64,
}

/// The larger batch latency is measured at.
pub const LATENCY_BATCH: i64 = 64;

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

/// What a run's results follow from: hashes (BLAKE3) of its inputs.
#[derive(Clone, Debug, Serialize)]
pub struct Lock {
    /// The recipe and every file it includes.
    pub recipe: String,
    /// The resolved plan.
    pub plan: String,
    /// The model architecture (its YAML description).
    pub model: String,
    /// The weights file, when the recipe names one.
    pub weights: Option<String>,
    /// The data (every image and label of both splits).
    pub data: String,
    /// Seed.
    pub seed: u64,
    /// prunex version.
    pub prunex: String,
    /// libtorch version.
    pub libtorch: String,
}

/// The run report written as report.yaml and report.json.
#[derive(Clone, Debug, Serialize)]
pub struct RunReport {
    /// Recipe name.
    pub recipe: String,
    /// The device used.
    pub device: String,
    /// What the results follow from.
    pub lock: Lock,
    /// Test accuracy of the dense model.
    pub dense_accuracy: f64,
    /// Right after the pruning before fine-tuning, when there is one.
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
    /// Wall-clock measurements (also written apart, as timings.yaml).
    #[serde(skip)]
    pub timings: Timings,
}

/// How a run uses the stage cache.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Reuse {
    /// Reuse the dense model (pretraining and its evaluation); redo pruning
    /// and fine-tuning.
    #[default]
    Dense,
    /// Continue from the last unit saved, even inside an epoch.
    Resume,
    /// Reuse nothing (results are still saved).
    Fresh,
}

/// Where a unit stopped inside an epoch (Ctrl-C), to continue from there.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Partial {
    /// Steps done.
    step: usize,
    loss_sum: f64,
    right: i64,
    seen: i64,
    seconds: f64,
}

/// What a snapshot keeps besides tensors.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Meta {
    label: String,
    epochs: Vec<EpochReport>,
    dense_accuracy: Option<f64>,
    pruned_accuracy: Option<f64>,
    final_accuracy: Option<f64>,
    timings: Timings,
    teacher: Option<(f64, f64)>,
    partial: Option<Partial>,
}

struct Session {
    device: Device,
    data: DataSet,
    transform: Transform,
    batch: usize,
    eval_batch: usize,
    seed: u64,
    rng: Rng,
    /// Seeds libtorch per step within the current unit.
    unit_seed: u64,
    /// Whether the model draws random numbers in training (dropout).
    stochastic: bool,
    model: TorchModel,
    masks: BTreeMap<String, Tensor>,
    dense_weights: u64,
    epochs: Vec<EpochReport>,
    /// The teacher and (temperature, alpha), while distilling.
    teacher: Option<(TorchModel, f64, f64)>,
    /// Network Slimming's L1 strength on BatchNorm γ, while training.
    penalty: Option<f64>,
    opt: Option<Optimizer>,
    /// Optimizer state restored from a snapshot, loaded when the optimizer is built.
    pending_opt: Option<StateDict>,
    dense_accuracy: Option<f64>,
    pruned_accuracy: Option<f64>,
    final_accuracy: Option<f64>,
    /// The dense model, when this process evaluated it, for the latency
    /// comparison at the end.
    dense: Option<(Graph, StateDict)>,
    timings: Timings,
    progress: bool,
}

/// The model a cache entry holds: its graph and weights.
fn model_of(dir: &Path) -> Option<(Graph, StateDict)> {
    let text = std::fs::read_to_string(dir.join("model.yaml")).ok()?;
    let g = prunex::models::yaml::from_yaml(&text, "model.yaml").ok()?;
    let sd = weights::read_safetensors(&std::fs::read(dir.join("model.safetensors")).ok()?).ok()?;
    Some((g, sd))
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

/// A 64-bit seed from a key.
fn seed_of(key: &Key) -> u64 {
    u64::from_str_radix(&key.0[..16], 16).unwrap_or(0)
}

/// The learning rate at step `i` of `steps` in epoch `epoch` of `total`.
fn lr_at(t: &TrainSpec, epoch: u64, total: u64, i: usize, steps: usize) -> f64 {
    let base = t.lr.unwrap_or(0.01);
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
            let step = match unit {
                Unit::Epochs => 1.0 / steps as f64,
                Unit::Steps => 1.0,
            };
            lr *= (done + step).min(w as f64) / w as f64;
        }
    }
    lr
}

fn bar(len: usize, prefix: String, show: bool) -> indicatif::ProgressBar {
    if !show {
        return indicatif::ProgressBar::hidden();
    }
    let pb = indicatif::ProgressBar::with_draw_target(
        Some(len as u64),
        indicatif::ProgressDrawTarget::stderr(),
    );
    pb.set_style(
        indicatif::ProgressStyle::with_template(
            "{prefix} [{bar:28}] {pos}/{len} {msg} ({elapsed}<{eta})",
        )
        .expect("template is valid")
        .progress_chars("=> "),
    );
    pb.set_prefix(prefix);
    pb
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

    /// Median inference latency at batch 1 and 64 of the current model and,
    /// when given, of the dense one, measured in alternation (warm-up first;
    /// repeats for at least 5 runs or two seconds), so that the speed-up
    /// compares two models under the same conditions, never a measurement
    /// from an earlier, cached run.
    fn latencies(
        &mut self,
        mut dense: Option<&mut TorchModel>,
    ) -> Result<(Latency, Option<Latency>), RunError> {
        let [c, h, w] = self.transform.shape(self.data.test.shape);
        let device = self.device;
        let mut results = [Latency::default(); 2];
        for n in [1, LATENCY_BATCH] {
            let x = Tensor::zeros([n, c as i64, h as i64, w as i64], (Kind::Float, device));
            let once = |m: &mut TorchModel| -> Result<f64, RunError> {
                if let Device::Cuda(i) = device {
                    tch::Cuda::synchronize(i as i64);
                }
                let t = Instant::now();
                let out = tch::no_grad(|| m.forward(&x, false))?;
                let _ = out.f_sum(Kind::Float)?.double_value(&[]);
                Ok(t.elapsed().as_secs_f64() * 1e3)
            };
            for _ in 0..3 {
                once(&mut self.model)?;
                if let Some(d) = dense.as_deref_mut() {
                    once(d)?;
                }
            }
            let mut times = [Vec::new(), Vec::new()];
            let start = Instant::now();
            while times[0].len() < 5 || (times[0].len() < 50 && start.elapsed().as_secs_f64() < 2.0)
            {
                times[0].push(once(&mut self.model)?);
                if let Some(d) = dense.as_deref_mut() {
                    times[1].push(once(d)?);
                }
            }
            for (k, mut v) in times.into_iter().enumerate() {
                if v.is_empty() {
                    continue;
                }
                v.sort_by(f64::total_cmp);
                let median = v[v.len() / 2];
                if n == 1 {
                    results[k].batch1_ms = median;
                } else {
                    results[k].batch64_ms = median;
                }
            }
        }
        Ok((results[0], dense.is_some().then_some(results[1])))
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

    /// The optimizer for `t`, built on first use after a change of model
    /// (and given the state a snapshot saved).
    fn optimizer(&mut self, t: &TrainSpec) -> Result<&mut Optimizer, RunError> {
        if self.opt.is_none() {
            let rule = match t.optimizer.as_deref().unwrap_or("sgd") {
                "adam" => Rule::Adam,
                "adamw" => Rule::AdamW,
                _ => Rule::Sgd {
                    momentum: t.momentum.unwrap_or(0.0),
                    nesterov: t.nesterov.unwrap_or(false),
                },
            };
            let lr_mult: Vec<(String, f64)> = t
                .lr_mult
                .iter()
                .map(|(p, m)| (p.node.clone(), *m))
                .collect();
            let mut opt = Optimizer::new(
                rule,
                t.weight_decay.unwrap_or(0.0),
                &self.model.vs.variables(),
                &lr_mult,
            );
            if let Some(sd) = self.pending_opt.take() {
                opt.load(&sd)?;
            }
            self.opt = Some(opt);
        }
        Ok(self.opt.as_mut().expect("just built"))
    }

    /// One training epoch from `partial` (where an interrupted one stopped);
    /// returns the finished totals, or where it stopped when cancelled.
    #[allow(clippy::too_many_arguments)]
    fn train_epoch(
        &mut self,
        t: &TrainSpec,
        stage: &str,
        epoch: u64,
        total: u64,
        mut p: Partial,
    ) -> Result<Result<Partial, Partial>, RunError> {
        let batch = t.batch.map(|b| b as usize).unwrap_or(self.batch);
        // The epoch's order and augmentation follow from the unit alone, so a
        // resumed epoch sees the batches the interrupted one did.
        let mut rng = Rng::new(self.unit_seed);
        let data = batches(&self.data.train, &self.transform, batch, Some(&mut rng));
        let steps = data.len();
        let pb = bar(steps, format!("{stage} {epoch}/{total}"), self.progress);
        pb.set_position(p.step as u64);
        let start = Instant::now() - std::time::Duration::from_secs_f64(p.seconds);
        let sparsity = self.sparsity();
        let stop_at = interrupt_at();
        for (i, b) in data.iter().enumerate().skip(p.step) {
            if stop_at.as_ref() == Some(&(stage.to_owned(), epoch, i)) {
                CANCEL.store(true, Ordering::SeqCst);
            }
            if cancelled() {
                pb.finish_and_clear();
                p.seconds = start.elapsed().as_secs_f64();
                return Ok(Err(p));
            }
            if self.stochastic {
                // Dropout draws from libtorch's generator: seeded per step, so
                // a run resumed inside this epoch draws the same masks.
                tch::manual_seed((self.unit_seed ^ (i as u64).wrapping_mul(0x9e37_79b9)) as i64);
            }
            let lr = lr_at(t, epoch, total, i, steps);
            let (x, y) = to_tensor(b, self.device);
            let out = self.model.forward(&x, true)?;
            let loss = match self.teacher.as_mut().filter(|_| stage == "finetune") {
                Some((teacher, temperature, alpha)) => {
                    let soft = tch::no_grad(|| teacher.forward(&x, false))?;
                    loss::loss(
                        &out,
                        &y,
                        Some(loss::Soft {
                            teacher: &soft,
                            temperature: *temperature,
                            alpha: *alpha,
                        }),
                    )?
                }
                None => loss::loss(&out, &y, None)?,
            };
            let value = loss.double_value(&[]);
            if !value.is_finite() {
                pb.finish_and_clear();
                return Err(RunError::NonFinite {
                    stage: stage.into(),
                    epoch,
                    step: i + 1,
                    value,
                });
            }
            let penalty = self.penalty;
            let vars = self.optimizer(t)?.vars();
            // Gradients come back fresh (no zeroing of `.grad` every step).
            let mut grads = Tensor::f_run_backward(&[&loss], &vars, false, false)?;
            if let Some(lambda) = penalty {
                // Network Slimming: the subgradient of lambda * |gamma|.
                let names: Vec<String> = self.optimizer(t)?.names().map(str::to_owned).collect();
                tch::no_grad(|| -> Result<(), RunError> {
                    for ((name, v), g) in names.iter().zip(&vars).zip(grads.iter_mut()) {
                        let module = name.strip_suffix(".weight").unwrap_or("");
                        if g.defined() && self.model.batches_tracked.contains_key(module) {
                            let _ = g.f_add_(&v.f_sign()?.f_mul_scalar(lambda)?)?;
                        }
                    }
                    Ok(())
                })?;
            }
            self.optimizer(t)?.step_with(lr, grads)?;
            self.apply_masks()?;
            p.loss_sum += value * b.y.len() as f64;
            p.right += correct(&out, &y);
            p.seen += b.y.len() as i64;
            p.step = i + 1;
            pb.inc(1);
            if i % 10 == 0 {
                pb.set_message(format!(
                    "loss {:.4} · acc {:.1} % · sparsity {:.1} %",
                    p.loss_sum / p.seen.max(1) as f64,
                    100.0 * p.right as f64 / p.seen.max(1) as f64,
                    sparsity * 100.0
                ));
            }
        }
        pb.finish_and_clear();
        p.seconds = start.elapsed().as_secs_f64();
        Ok(Ok(p))
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
                grads.insert(k.clone(), to_plain(&g)?);
            }
        }
        zero(&vars);
        Ok(grads)
    }

    /// Prunes one stage to schedule step `step` (the stage ends at `end`).
    fn prune(&mut self, stage: &Stage, step: &Step, end: f64, seed: u64) -> Result<(), RunError> {
        let fraction = step.fraction;
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
        let scale = |t: &Target| step.scale(t, end);
        // The weights a mask stage covers: every layer it does not ignore.
        let weight_keys: Vec<String> = stage
            .layers
            .iter()
            .filter(|l| l.target != Target::Ignored)
            .map(|l| format!("{}.weight", l.layer))
            .collect();
        if let Some((n, m)) = stage
            .granularity
            .split_once(':')
            .and_then(|(n, m)| Some((n.parse().ok()?, m.parse().ok()?)))
        {
            let (masks, _) = mask::n_m(&sd, &weight_keys, n, m);
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
                    mask::global(&sd, &weight_keys, fraction)
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
        self.opt = None;
        Ok(())
    }

    /// Saves everything the run needs to continue from here.
    fn save(
        &self,
        cache: &Cache,
        key: &Key,
        label: &str,
        partial: Option<Partial>,
    ) -> Result<(), RunError> {
        let mut files = vec![
            (
                "model.yaml",
                prunex::models::yaml::to_yaml(&self.model.graph).into_bytes(),
            ),
            (
                "model.safetensors",
                weights::to_safetensors(&self.model.state_dict()?),
            ),
        ];
        if !self.masks.is_empty() {
            let mut sd = StateDict::new();
            for (k, m) in &self.masks {
                sd.insert(k.clone(), to_plain(m)?);
            }
            files.push(("masks.safetensors", weights::to_safetensors(&sd)));
        }
        if let Some(opt) = &self.opt {
            files.push((
                "optim.safetensors",
                weights::to_safetensors(&opt.state_dict()?),
            ));
        } else if let Some(sd) = &self.pending_opt {
            files.push(("optim.safetensors", weights::to_safetensors(sd)));
        }
        if let Some((t, _, _)) = &self.teacher {
            files.push((
                "teacher.yaml",
                prunex::models::yaml::to_yaml(&t.graph).into_bytes(),
            ));
            files.push((
                "teacher.safetensors",
                weights::to_safetensors(&t.state_dict()?),
            ));
        }
        let meta = Meta {
            label: label.into(),
            epochs: self.epochs.clone(),
            dense_accuracy: self.dense_accuracy,
            pruned_accuracy: self.pruned_accuracy,
            final_accuracy: self.final_accuracy,
            timings: self.timings.clone(),
            teacher: self.teacher.as_ref().map(|(_, t, a)| (*t, *a)),
            partial,
        };
        let meta = serde_json::to_vec_pretty(&meta).expect("meta serializes");
        cache.put(key, &meta, &files).map_err(|e| RunError::Write {
            path: cache.dir.join(&key.0).display().to_string(),
            reason: e.to_string(),
        })
    }

    /// Restores a snapshot; `None` when it cannot be read (then the unit runs).
    fn restore(&mut self, dir: &Path) -> Option<Meta> {
        let read = |name: &str| std::fs::read(dir.join(name)).ok();
        let graph = |name: &str| {
            let text = String::from_utf8(read(name)?).ok()?;
            prunex::models::yaml::from_yaml(&text, name).ok()
        };
        let sd = |name: &str| weights::read_safetensors(&read(name)?).ok();
        let meta: Meta = serde_json::from_slice(&read("meta.json")?).ok()?;
        let (g, weights) = model_of(dir)?;
        let mut model = TorchModel::new(&g, self.device);
        model.load(&weights).ok()?;
        let mut masks = BTreeMap::new();
        if dir.join("masks.safetensors").exists() {
            for (k, t) in sd("masks.safetensors")? {
                masks.insert(k, from_plain(&t, self.device).ok()??);
            }
        }
        let teacher = match meta.teacher {
            Some((temp, alpha)) => {
                let mut t = TorchModel::new(&graph("teacher.yaml")?, self.device);
                t.load(&sd("teacher.safetensors")?).ok()?;
                Some((t, temp, alpha))
            }
            None => None,
        };
        self.pending_opt = sd("optim.safetensors");
        self.model = model;
        self.masks = masks;
        self.teacher = teacher;
        self.opt = None;
        self.epochs = meta.epochs.clone();
        self.dense_accuracy = meta.dense_accuracy;
        self.pruned_accuracy = meta.pruned_accuracy;
        self.final_accuracy = meta.final_accuracy;
        let threads = self.timings.threads;
        self.timings = meta.timings.clone();
        self.timings.threads = threads;
        Some(meta)
    }
}

/// One unit of a run, cached on its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Work {
    Pretrain(u64),
    Dense,
    Prune,
    Finetune(u64),
    Final,
}

impl Work {
    fn name(self) -> &'static str {
        match self {
            Work::Pretrain(_) => "pretrain",
            Work::Dense => "dense evaluation",
            Work::Prune => "pruning",
            Work::Finetune(_) => "finetune",
            Work::Final => "final measurement",
        }
    }

    fn label(self) -> String {
        match self {
            Work::Pretrain(e) | Work::Finetune(e) => format!("{} epoch {e}", self.name()),
            _ => self.name().into(),
        }
    }
}

/// `pretrain epochs 1–5, dense evaluation` for a list of units.
fn describe(works: &[Work]) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut i = 0;
    while i < works.len() {
        match works[i] {
            Work::Pretrain(a) | Work::Finetune(a) => {
                let mut j = i;
                while j + 1 < works.len()
                    && works[j + 1].name() == works[i].name()
                    && matches!(works[j + 1], Work::Pretrain(_) | Work::Finetune(_))
                {
                    j += 1;
                }
                let b = match works[j] {
                    Work::Pretrain(b) | Work::Finetune(b) => b,
                    _ => a,
                };
                parts.push(if a == b {
                    format!("{} epoch {a}", works[i].name())
                } else {
                    format!("{} epochs {a}–{b}", works[i].name())
                });
                i = j + 1;
            }
            w => {
                parts.push(w.name().into());
                i += 1;
            }
        }
    }
    parts.join(", ")
}

/// How a run is started.
#[derive(Clone, Debug)]
pub struct Options {
    /// What may come from the cache.
    pub reuse: Reuse,
    /// The stage cache.
    pub cache: Cache,
    /// Progress bars (shown only on a terminal).
    pub progress: bool,
}

/// Runs a recipe; prints diagnostics and progress, returns the report.
pub fn run(path: &Path, set: &[String], opts: &Options) -> Result<RunReport, RunError> {
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
    let mut h = blake3::Hasher::new();
    for f in checked.sources.files() {
        h.update(f.name.as_bytes());
        h.update(&[0]);
        h.update(f.text.as_bytes());
        h.update(&[0]);
    }
    let recipe_hash = h.finalize().to_hex().to_string();
    execute(&recipe, &graph, plan, recipe_hash, path, opts)
}

fn show(e: impl Diagnostic + Send + Sync + 'static) -> RunError {
    eprint!("{}", render_human(&Report::new(e), super::color()));
    RunError::Invalid
}

/// The plan's stages without the recipe lines behind targets, so that
/// moving a rule or adding a comment does not invalidate the cache.
fn stages_for_key(plan: &Plan) -> Vec<Stage> {
    let mut stages = plan.stages.clone();
    for st in &mut stages {
        for g in &mut st.groups {
            g.set_by.clear();
        }
        for l in &mut st.layers {
            l.set_by.clear();
        }
    }
    stages
}

fn hash_data(d: &DataSet) -> String {
    let mut h = blake3::Hasher::new();
    for split in [&d.train, &d.test] {
        for n in split.shape {
            h.update(&(n as u64).to_le_bytes());
        }
        h.update(&(split.len() as u64).to_le_bytes());
        h.update(&split.pixels);
        h.update(&split.labels);
    }
    h.finalize().to_hex().to_string()
}

fn execute(
    recipe: &Recipe,
    graph: &Graph,
    plan: Plan,
    recipe_hash: String,
    path: &Path,
    opts: &Options,
) -> Result<RunReport, RunError> {
    let seed = recipe.seed.unwrap_or(0);
    tch::manual_seed(seed as i64);
    let device = device_of(recipe.device);
    let d = recipe.data.as_ref().ok_or(RunError::Invalid)?;
    let data = load(&d.kind.node, &d.path.node, d.limit.map(|l| l as usize)).map_err(show)?;
    let (mean, std) = d.normalize.clone().unwrap_or((vec![0.0], vec![1.0]));
    let transform = Transform {
        mean: mean.iter().map(|&x| x as f32).collect(),
        std: std.iter().map(|&x| x as f32).collect(),
        pad: d.pad.unwrap_or(0) as usize,
        crop: d.crop.unwrap_or(0) as usize,
        flip: d.flip,
    };
    let shape = transform.shape(data.train.shape);
    if shape != plan.input {
        return Err(RunError::InputMismatch {
            model: plan.input,
            data: shape,
        });
    }
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
    let spec = recipe.model.as_ref().ok_or(RunError::Invalid)?;
    let weights_file = match &spec.weights {
        Some(w) => Some(std::fs::read(&w.node).map_err(|e| RunError::Write {
            path: w.node.display().to_string(),
            reason: format!("cannot read the weights: {e}"),
        })?),
        None => None,
    };
    let model_yaml = prunex::models::yaml::to_yaml(graph);
    let lock = Lock {
        recipe: recipe_hash,
        plan: hash_bytes(plan.to_yaml().as_bytes()),
        model: hash_bytes(model_yaml.as_bytes()),
        weights: weights_file.as_deref().map(hash_bytes),
        data: hash_data(&data),
        seed,
        prunex: env!("CARGO_PKG_VERSION").into(),
        libtorch: env!("PRUNEX_LIBTORCH_VERSION").into(),
    };
    let mut s = Session {
        device,
        batch: d.batch.unwrap_or(128) as usize,
        eval_batch: d.eval_batch.unwrap_or(1000) as usize,
        seed,
        rng: Rng::new(seed),
        unit_seed: seed,
        stochastic: graph
            .nodes
            .iter()
            .any(|n| matches!(n.op, prunex::graph::Op::Dropout { .. })),
        model: TorchModel::new(graph, device),
        masks: BTreeMap::new(),
        dense_weights,
        epochs: Vec::new(),
        teacher: None,
        penalty: plan.stages.iter().find_map(|st| st.penalty),
        opt: None,
        pending_opt: None,
        dense_accuracy: None,
        dense: None,
        pruned_accuracy: None,
        final_accuracy: None,
        timings: Timings {
            threads: tch::get_num_threads(),
            ..Timings::default()
        },
        progress: opts.progress,
        data,
        transform,
    };

    // Prune steps by fine-tuning epoch: (stage, step). The checker stops
    // epoch-counted steps that no fine-tuning epoch follows; step-counted
    // ones are known only now.
    let ft = recipe.finetune.clone().unwrap_or_default();
    let ft_epochs = ft.epochs.unwrap_or(0);
    let steps_per_epoch = (s.data.train.len().div_ceil(s.batch) as u64).max(1);
    let mut events: BTreeMap<u64, Vec<(usize, usize)>> = BTreeMap::new();
    for (i, st) in plan.stages.iter().enumerate() {
        for (k, step) in st.schedule.iter().enumerate() {
            let epoch = match step.unit {
                Unit::Epochs => step.at,
                Unit::Steps => step.at / steps_per_epoch,
            };
            if step.unit == Unit::Steps && epoch > 0 && epoch >= ft_epochs {
                return Err(RunError::ScheduleAfterFinetune {
                    at: step.at,
                    total: ft_epochs * steps_per_epoch,
                    epochs: ft_epochs,
                    per_epoch: steps_per_epoch,
                    last: ft_epochs.max(1) * steps_per_epoch - 1,
                });
            }
            events.entry(epoch).or_default().push((i, k));
        }
    }
    let pre = recipe.pretrain.clone().unwrap_or_default();

    // The chain of units and their keys.
    let mut works = Vec::new();
    if spec.weights.is_none() {
        works.extend((1..=pre.epochs.unwrap_or(0)).map(Work::Pretrain));
    }
    works.push(Work::Dense);
    if events.contains_key(&0) {
        works.push(Work::Prune);
    }
    works.extend((1..=ft.epochs.unwrap_or(0)).map(Work::Finetune));
    works.push(Work::Final);
    let stages = stages_for_key(&plan);
    let teacher_weights = match recipe.distill.as_ref().and_then(|d| d.teacher.as_ref()) {
        Some(prunex::check::recipe::TeacherSpec::Model {
            weights: Some(w), ..
        }) => std::fs::read(w).map(|b| hash_bytes(&b)).unwrap_or_default(),
        _ => String::new(),
    };
    let dk = &recipe.data.as_ref().expect("checked above");
    let mut prev = KeyBuilder::new("base")
        .str(&lock.prunex)
        .str(&lock.libtorch)
        .str(&format!("{device:?}"))
        .u64(seed)
        .str(&model_yaml)
        .str(lock.weights.as_deref().unwrap_or(""))
        .str(&lock.data)
        .json(&(
            dk.batch,
            dk.eval_batch,
            &dk.normalize,
            dk.crop,
            dk.flip,
            dk.pad,
        ))
        .key();
    let mut keys = Vec::new();
    for &w in &works {
        let mut kb = KeyBuilder::after(w.name(), &prev);
        match w {
            Work::Pretrain(e) => kb.json(&pre).u64(e),
            Work::Dense | Work::Final => &mut kb,
            Work::Prune => kb.json(&stages).json(&recipe.distill).str(&teacher_weights),
            Work::Finetune(e) => kb
                .json(&ft)
                .json(&recipe.distill)
                .str(&teacher_weights)
                .json(&stages)
                .u64(e),
        };
        prev = kb.key();
        keys.push(prev.clone());
    }

    // Where to start: after the last unit the cache has (and may give).
    let cache = &opts.cache;
    let allowed = |w: Work| match opts.reuse {
        Reuse::Fresh => false,
        Reuse::Resume => true,
        Reuse::Dense => matches!(w, Work::Pretrain(_) | Work::Dense),
    };
    let mut start = 0;
    for i in (0..works.len()).rev() {
        if allowed(works[i]) {
            if let Some(dir) = cache.get(&keys[i]) {
                if s.restore(&dir).is_some() {
                    start = i + 1;
                    break;
                }
            }
        }
    }
    let mut partial = None;
    if opts.reuse == Reuse::Resume && start < works.len() {
        let pk = KeyBuilder::after("partial", &keys[start]).key();
        if let Some(meta) = cache.get(&pk).and_then(|dir| s.restore(&dir)) {
            partial = meta.partial;
        }
    }
    if start == 0 && partial.is_none() {
        if let Some(w) = &spec.weights {
            let (sd, notes) = weights::load_for(&w.node, graph).map_err(show)?;
            for n in notes {
                eprintln!("note: {n}");
            }
            s.model.load(&sd)?;
        }
    }
    if start > 0 {
        eprintln!("from cache: {}", describe(&works[..start]));
    }
    if let (Some(p), Some(w)) = (&partial, works.get(start)) {
        eprintln!(
            "resuming {} at step {} (saved when the run was interrupted)",
            w.label(),
            p.step
        );
    }
    if start < works.len() {
        eprintln!("running: {}", describe(&works[start..]));
    }

    let recipe_path = path.display().to_string();
    for i in start..works.len() {
        if cancelled() {
            return Err(RunError::Interrupted {
                at: works[i].label(),
                recipe: recipe_path,
            });
        }
        let w = works[i];
        let key = &keys[i];
        s.unit_seed = seed_of(key);
        s.rng = Rng::new(s.unit_seed ^ 0x7a71_0e55);
        tch::manual_seed(s.unit_seed as i64);
        let resumed = if i == start { partial.take() } else { None };
        match w {
            Work::Pretrain(e) => {
                if e == 1 && resumed.is_none() {
                    s.opt = None;
                    s.pending_opt = None;
                }
                let total = pre.epochs.unwrap_or(0);
                epoch(
                    &mut s,
                    &pre,
                    "pretrain",
                    e,
                    total,
                    resumed,
                    cache,
                    key,
                    &recipe_path,
                )?;
            }
            Work::Dense => {
                s.opt = None;
                s.pending_opt = None;
                let a = s.evaluate()?;
                s.dense_accuracy = Some(a);
                s.dense = Some((s.model.graph.clone(), s.model.state_dict()?));
            }
            Work::Prune => {
                if s.teacher.is_none() {
                    s.teacher = teacher(recipe, graph, &s)?;
                }
                apply_events(
                    &mut s,
                    &plan,
                    events.get(&0).map(Vec::as_slice).unwrap_or(&[]),
                )?;
                let a = s.evaluate()?;
                eprintln!(
                    "after pruning: {:.2} % (sparsity {:.2} %)",
                    a * 100.0,
                    s.sparsity() * 100.0
                );
                s.pruned_accuracy = Some(a);
            }
            Work::Finetune(e) => {
                if s.teacher.is_none() {
                    s.teacher = teacher(recipe, graph, &s)?;
                }
                if resumed.is_none() {
                    if e == 1 {
                        s.opt = None;
                        s.pending_opt = None;
                    } else if let Some(ev) = events.get(&(e - 1)) {
                        apply_events(&mut s, &plan, ev)?;
                    }
                }
                let total = ft.epochs.unwrap_or(0);
                epoch(
                    &mut s,
                    &ft,
                    "finetune",
                    e,
                    total,
                    resumed,
                    cache,
                    key,
                    &recipe_path,
                )?;
            }
            Work::Final => {
                s.final_accuracy = Some(s.evaluate()?);
                let dense = match s.dense.take() {
                    Some(d) => Some(d),
                    None => works
                        .iter()
                        .position(|w| *w == Work::Dense)
                        .and_then(|k| cache.get(&keys[k]))
                        .and_then(|dir| model_of(&dir)),
                };
                // Only when the cache lost the dense model (evicted) is its
                // latency left unmeasured.
                let mut dense = match dense {
                    Some((g, sd)) => {
                        let mut m = TorchModel::new(&g, s.device);
                        m.load(&sd)?;
                        Some(m)
                    }
                    None => None,
                };
                let (p, d) = s.latencies(dense.as_mut())?;
                s.timings.dense = d;
                s.timings.pruned = Some(p);
            }
        }
        if w == Work::Dense {
            eprintln!(
                "dense test accuracy: {:.2} %",
                s.dense_accuracy.unwrap_or(0.0) * 100.0
            );
        }
        checkpoint(&s, cache, key, &w.label(), None);
        cache.remove(&KeyBuilder::after("partial", key).key());
    }
    if start == works.len() {
        eprintln!(
            "dense test accuracy: {:.2} %",
            s.dense_accuracy.unwrap_or(0.0) * 100.0
        );
    }

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
        device: match device {
            Device::Cuda(i) => format!("cuda:{i}"),
            Device::Mps => "mps".into(),
            Device::Vulkan => "vulkan".into(),
            Device::Cpu => "cpu".into(),
        },
        lock,
        dense_accuracy: s.dense_accuracy.unwrap_or(0.0),
        pruned_accuracy: s.pruned_accuracy,
        final_accuracy: s.final_accuracy.unwrap_or(0.0),
        params: (before.total_params, after.total_params),
        macs: (before.total_macs, after.total_macs),
        sparsity: s.sparsity(),
        epochs: s.epochs.clone(),
        plan,
        timings: s.timings.clone(),
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

/// Saves a unit to the cache. A cache that cannot be written (a full disk,
/// no permission) costs the checkpoint, not the run: a warning says so.
fn checkpoint(s: &Session, cache: &Cache, key: &Key, label: &str, partial: Option<Partial>) {
    if let Err(e) = s.save(cache, key, label, partial) {
        eprintln!(
            "warning[prunex::run::checkpoint_failed]: {label} was not saved to the stage cache ({e}); the run goes on, but `--resume` and later runs cannot start from it\n  help: free space in {} or point PRUNEX_CACHE elsewhere",
            cache.dir.display()
        );
    }
}

/// Runs one training epoch of a unit (from where an interrupted one
/// stopped); on Ctrl-C saves the position and stops the run.
#[allow(clippy::too_many_arguments)]
fn epoch(
    s: &mut Session,
    t: &TrainSpec,
    stage: &str,
    e: u64,
    total: u64,
    resumed: Option<Partial>,
    cache: &Cache,
    key: &Key,
    recipe: &str,
) -> Result<(), RunError> {
    let label = format!("{stage} epoch {e}");
    let p = match s.train_epoch(t, stage, e, total, resumed.unwrap_or_default())? {
        Ok(p) => p,
        Err(p) => {
            let at = format!("{label}, step {}", p.step);
            checkpoint(
                s,
                cache,
                &KeyBuilder::after("partial", key).key(),
                &label,
                Some(p),
            );
            return Err(RunError::Interrupted {
                at,
                recipe: recipe.into(),
            });
        }
    };
    let (loss, acc) = (
        p.loss_sum / p.seen.max(1) as f64,
        p.right as f64 / p.seen.max(1) as f64,
    );
    let test = s.evaluate()?;
    let sparsity = s.sparsity();
    eprintln!(
        "{stage} epoch {e}/{total}: loss {loss:.4}, train {:.2} %, test {:.2} %, sparsity {:.2} %",
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
    s.timings.epochs.push((
        stage.into(),
        e,
        p.seconds,
        p.seen as f64 / p.seconds.max(1e-9),
    ));
    Ok(())
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

fn apply_events(s: &mut Session, plan: &Plan, events: &[(usize, usize)]) -> Result<(), RunError> {
    for &(i, k) in events {
        let st = &plan.stages[i];
        let step = &st.schedule[k];
        let end = st.schedule.last().map_or(step.fraction, |x| x.fraction);
        let seed = s.seed;
        s.prune(st, step, end, seed)?;
    }
    // The optimizer starts afresh on the changed model.
    s.opt = None;
    s.pending_opt = None;
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
    let t = dir.join("timings.yaml");
    write_atomically(&t, prunex::yaml::to_string(&report.timings)).map_err(|e| fail(&t, e))?;
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
    println!("{} · seed {} · {}", r.recipe, r.lock.seed, r.device);
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
    if let (Some(a), Some(b)) = (r.timings.dense, r.timings.pruned) {
        println!(
            "measured latency ({} threads): batch 1 {:.3} → {:.3} ms ({:.2}×) · batch {LATENCY_BATCH} {:.2} → {:.2} ms ({:.2}×)",
            r.timings.threads,
            a.batch1_ms,
            b.batch1_ms,
            a.batch1_ms / b.batch1_ms.max(1e-9),
            a.batch64_ms,
            b.batch64_ms,
            a.batch64_ms / b.batch64_ms.max(1e-9),
        );
    } else if let Some(b) = r.timings.pruned {
        println!(
            "measured latency ({} threads): batch 1 {:.3} ms · batch {LATENCY_BATCH} {:.2} ms (the dense model left the stage cache, so it was not timed beside it)",
            r.timings.threads, b.batch1_ms, b.batch64_ms,
        );
    }
    if r.macs.0 == r.macs.1 && r.sparsity > 0.0 {
        println!("note: the pruning is unstructured: zeros do not speed up dense kernels. For a faster model, prune `channels` (or `2:4` on hardware with sparse tensor cores).");
    }
    println!(
        "wrote {}/weights.safetensors, model.yaml, report.yaml, report.json, timings.yaml",
        dir.display()
    );
}
