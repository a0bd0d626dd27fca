//! Training: one epoch of a unit (from where an interrupted one stopped),
//! the learning rate at each step, the optimizer, and the distillation
//! teacher.

use std::sync::atomic::Ordering;
use std::time::Instant;

use prunex::cache::{Cache, Key, KeyBuilder};
use prunex::data::{batch_len, batches_of_rank, Rng};
use prunex::graph::Graph;
use prunex::models::weights;
use prunex::plan::{LrSchedule, Optimizer as PlanRule, Plan, Teacher, Training, Unit};
use prunex::report::EpochReport;
use tch::Tensor;

use super::distributed;
use super::session::{correct, to_tensor, Session};
use super::units::{checkpoint, Partial};
use super::{cancelled, interrupt_at, RunError, CANCEL};
use crate::exec::loss;
use crate::exec::model::TorchModel;
use crate::exec::optim::{Optimizer, Rule};

/// The training phases of a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Phase {
    /// Dense training.
    Pretrain,
    /// Training after pruning, with the masks held and the teacher's soft
    /// targets when distilling.
    Finetune,
}

impl Phase {
    /// As reports, progress lines and `PRUNEX_INTERRUPT_AT` name it.
    pub(super) fn name(self) -> &'static str {
        match self {
            Phase::Pretrain => "pretrain",
            Phase::Finetune => "finetune",
        }
    }
}

/// The learning rate at step `i` of `steps` in epoch `epoch` of `total`.
fn lr_at(t: &Training, epoch: u64, total: u64, i: usize, steps: usize) -> f64 {
    let base = t.lr;
    let progress = ((epoch - 1) as f64 + i as f64 / steps as f64) / total.max(1) as f64;
    let mut lr = match &t.lr_schedule {
        LrSchedule::Cosine { min } => {
            min + (base - min) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
        }
        LrSchedule::Step { every, unit, gamma } => {
            let done = match unit {
                Unit::Epochs => epoch - 1,
                Unit::Steps => (epoch - 1) * steps as u64 + i as u64,
            };
            base * gamma.powi((done / every.max(&1)) as i32)
        }
        LrSchedule::Constant => base,
    };
    if let Some(prunex::plan::Warmup { length: w, unit }) = t.warmup {
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

pub(super) fn bar(len: usize, prefix: String, show: bool) -> indicatif::ProgressBar {
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
    /// The optimizer for `t`, built on first use after a change of model
    /// (and given the state a snapshot saved).
    pub(super) fn optimizer(&mut self, t: &Training) -> Result<&mut Optimizer, RunError> {
        if self.opt.is_none() {
            let rule = match t.optimizer {
                PlanRule::Adam => Rule::Adam,
                PlanRule::AdamW => Rule::AdamW,
                PlanRule::Sgd { momentum, nesterov } => Rule::Sgd { momentum, nesterov },
            };
            let mut opt =
                Optimizer::new(rule, t.weight_decay, &self.model.vs.variables(), &t.lr_mult);
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
    pub(super) fn train_epoch(
        &mut self,
        t: &Training,
        phase: Phase,
        epoch: u64,
        mut p: Partial,
    ) -> Result<Result<Partial, Partial>, RunError> {
        let batch = t.batch as usize;
        let (rank, world) = (self.rank(), self.world_size());
        // The epoch's order and augmentation follow from the unit alone, so a
        // resumed epoch sees the batches the interrupted one did. With N
        // ranks the batch is per rank: each takes its slice of batches of
        // N·B drawn as one process would draw them.
        let mut rng = Rng::new(self.unit_seed);
        let n = self.data.train.len();
        let data = batches_of_rank(
            &self.data.train,
            &self.transform,
            batch * world,
            Some(&mut rng),
            rank,
            world,
        );
        let steps = data.len();
        let (stage, total) = (phase.name(), t.epochs);
        let pb = bar(steps, format!("{stage} {epoch}/{total}"), self.progress);
        pb.set_position(p.step as u64);
        let start = Instant::now() - std::time::Duration::from_secs_f64(p.seconds);
        let sparsity = self.sparsity();
        let stop_at = interrupt_at();
        for (i, b) in data.iter().enumerate().skip(p.step) {
            // A scripted interrupt comes to every rank at this very step.
            let scripted = stop_at.as_ref() == Some(&(stage.to_owned(), epoch, i));
            if scripted || self.stop_at_step(cancelled(), stage, i)? {
                CANCEL.store(true, Ordering::SeqCst);
                pb.finish_and_clear();
                p.seconds = start.elapsed().as_secs_f64();
                return Ok(Err(p));
            }
            if self.stochastic {
                // Dropout draws from libtorch's generator: seeded per step
                // (and rank), so a run resumed inside this epoch draws the
                // same masks.
                tch::manual_seed(
                    (self.unit_seed
                        ^ (i as u64).wrapping_mul(0x9e37_79b9)
                        ^ (rank as u64).wrapping_mul(0x85eb_ca6b)) as i64,
                );
            }
            let lr = lr_at(t, epoch, total, i, steps);
            let vars = self.optimizer(t)?.vars();
            self.before_step(&vars)?;
            let (x, y) = to_tensor(b, self.device);
            let out = self.model.forward(&x, true)?;
            let local = b.y.len();
            let loss = if local == 0 {
                None
            } else {
                Some(
                    match self.teacher.as_mut().filter(|_| phase == Phase::Finetune) {
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
                    },
                )
            };
            let value = loss.as_ref().map_or(0.0, |l| l.double_value(&[]));
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
            let mut grads = if self.dist.is_some() {
                let global = batch_len(n, batch * world, i);
                let scaled = distributed::scale_loss(loss, &out, local, global, world)?;
                self.reduced_backward(&scaled, &vars)?
            } else {
                // Gradients come back fresh (no zeroing of `.grad` every step).
                let loss = loss.expect("one process has no empty batch");
                Tensor::f_run_backward(&[&loss], &vars, false, false)?
            };
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
            if self.dist.is_some() {
                Session::clear_grads(&vars);
            }
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
}

/// Runs one training epoch of a unit (from where an interrupted one
/// stopped); on Ctrl-C saves the position and stops the run.
#[allow(clippy::too_many_arguments)]
pub(super) fn epoch(
    s: &mut Session,
    t: &Training,
    phase: Phase,
    e: u64,
    resumed: Option<Partial>,
    cache: &Cache,
    key: &Key,
    recipe: &str,
) -> Result<(), RunError> {
    let (stage, total) = (phase.name(), t.epochs);
    let label = format!("{stage} epoch {e}");
    let mut resumed = resumed.unwrap_or_default();
    if !s.leader() {
        // The saved totals are all ranks' (rank 0 saved them); this rank
        // adds only its own from here.
        (resumed.loss_sum, resumed.right, resumed.seen) = (0.0, 0, 0);
    }
    let p = match s.train_epoch(t, phase, e, resumed)? {
        Ok(p) => s.totals(p)?,
        Err(p) => {
            let p = s.totals(p)?;
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
    s.say(format_args!(
        "{stage} epoch {e}/{total}: loss {loss:.4}, train {:.2} %, test {:.2} %, sparsity {:.2} %",
        acc * 100.0,
        test * 100.0,
        sparsity * 100.0
    ));
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

impl Session {
    /// An epoch's loss, right answers and samples over all ranks.
    fn totals(&self, mut p: Partial) -> Result<Partial, RunError> {
        let v = self.sum_over_ranks(
            &[p.loss_sum, p.right as f64, p.seen as f64],
            "adding up the epoch's loss",
        )?;
        (p.loss_sum, p.right, p.seen) = (v[0], v[1] as i64, v[2] as i64);
        Ok(p)
    }
}

/// The distillation teacher the plan resolved: the dense model as it is
/// before pruning, or another model (its graph checked by `prunex check`)
/// with its weights.
pub(super) fn teacher(
    plan: &Plan,
    teacher: Option<&Graph>,
    graph: &Graph,
    s: &Session,
) -> Result<Option<(TorchModel, f64, f64)>, RunError> {
    let Some(d) = &plan.distill else {
        return Ok(None);
    };
    let model = match &d.teacher {
        Teacher::Dense => {
            let mut t = TorchModel::new(graph, s.device);
            t.load(&s.model.state_dict()?)?;
            t
        }
        Teacher::Model { weights: w, .. } => {
            let g = teacher.ok_or(RunError::Invalid)?;
            let mut t = TorchModel::new(g, s.device);
            if let Some(w) = w {
                let (sd, _) = weights::load_for(w, g).map_err(super::show)?;
                t.load(&sd)?;
            }
            t
        }
    };
    Ok(Some((model, d.temperature, d.alpha)))
}
