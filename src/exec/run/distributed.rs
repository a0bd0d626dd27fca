//! A run's side of data-parallel training: what each rank does so that N
//! ranks with batch B compute what one process with batch N·B would.
//!
//! - every epoch's seeded order is drawn whole on every rank and each
//!   global batch cut into rank slices (`data::batches_of_rank`);
//! - each rank's loss is scaled by `N · local / global` samples, so the
//!   Reducer's mean over ranks is the global batch's mean gradient, also
//!   for a short last batch;
//! - gradients are all-reduced by DDP's Reducer while backward runs;
//! - the model starts, and restarts after every pruning step, from rank 0's
//!   variables; a pruning decision (same weights, same reduced statistics)
//!   is checked to be the same graph on every rank;
//! - BatchNorm runs per rank with rank 0's running statistics broadcast
//!   before each step (DDP's `broadcast_buffers`), or over the global batch
//!   with `sync_bn`;
//! - Ctrl-C is agreed on through the store (a batch a few ahead) inside an
//!   epoch and by a collective between units, so all ranks stop at the
//!   same batch;
//! - only rank 0 writes (cache, checkpoints, exports, reports) and prints.

use std::rc::Rc;

use prunex::distributed::World;
use tch::{Kind, Tensor};

use super::session::Session;
use super::RunError;
use crate::exec::dist::{Group, Op, Reducer};

/// The distributed state of a run.
pub(super) struct Dist {
    pub(super) group: Rc<Group>,
    /// Built with the optimizer, over its variables; dropped when the
    /// model changes.
    pub(super) reducer: Option<Reducer>,
    /// BatchNorm over the global batch.
    pub(super) sync_bn: bool,
}

impl Dist {
    pub(super) fn world(&self) -> &World {
        &self.group.world
    }
}

/// A stable 64-bit fingerprint of bytes (FNV-1a), as two exact f64 halves.
fn fingerprint(bytes: &[u8]) -> [f64; 2] {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    [(h >> 32) as f64, (h & 0xffff_ffff) as f64]
}

impl Session {
    /// Whether this process writes and prints (rank 0, or the only one).
    pub(super) fn leader(&self) -> bool {
        self.dist.as_ref().is_none_or(|d| d.world().leader())
    }

    /// Prints a line of progress (on rank 0 only).
    pub(super) fn say(&self, line: std::fmt::Arguments) {
        if self.leader() {
            eprintln!("{line}");
        }
    }

    /// How many ranks train together.
    pub(super) fn world_size(&self) -> usize {
        self.dist.as_ref().map_or(1, |d| d.world().size)
    }

    /// This rank.
    pub(super) fn rank(&self) -> usize {
        self.dist.as_ref().map_or(0, |d| d.world().rank)
    }

    /// Sums numbers over ranks (as they are on one process).
    pub(super) fn sum_over_ranks(&self, v: &[f64], during: &str) -> Result<Vec<f64>, RunError> {
        match &self.dist {
            Some(d) => Ok(d.group.sum(v, during)?),
            None => Ok(v.to_vec()),
        }
    }

    /// Sums tensors over ranks, in place.
    pub(super) fn sum_tensors(&self, ts: &[&Tensor], during: &str) -> Result<(), RunError> {
        if let Some(d) = &self.dist {
            d.group.all_reduce(ts, Op::Sum, during)?;
        }
        Ok(())
    }

    /// Inside an epoch: whether to stop before step `step`. A collective
    /// every step would cost a sixth of the throughput (measured), so the
    /// agreement goes through the store: the first rank asked to stop
    /// names a step a few ahead (ranks are at most one step apart: every
    /// step ends in the gradient all-reduce), every rank looks for it
    /// before each step, and all stop before that same step.
    pub(super) fn stop_at_step(
        &self,
        mine: bool,
        unit: &str,
        step: usize,
    ) -> Result<bool, RunError> {
        let Some(d) = &self.dist else {
            return Ok(mine);
        };
        let key = format!("stop/{unit}/{}", self.unit_seed);
        let at = if mine {
            Some(d.group.first(&key, step as i64 + 3)?)
        } else {
            d.group.peek(&key)?
        };
        Ok(at.is_some_and(|s| step as i64 >= s))
    }

    /// Whether any rank was asked to stop (Ctrl-C reaches every worker, but
    /// not at the same moment), between units: all stop at the same one.
    pub(super) fn any_cancelled(&self, mine: bool) -> Result<bool, RunError> {
        match &self.dist {
            Some(d) => Ok(d.group.max(mine as i32 as f64, "agreeing to stop")? > 0.0),
            None => Ok(mine),
        }
    }

    /// Every variable and buffer takes rank 0's value; the ranks must hold
    /// the same graph (checked first: a different pruning decision on one
    /// rank is an error, not a silent divergence).
    pub(super) fn sync_from_leader(&mut self, during: &str) -> Result<(), RunError> {
        let Some(d) = &self.dist else {
            return Ok(());
        };
        let mut text = prunex::models::yaml::to_yaml(&self.model.graph);
        for k in self.masks.keys() {
            text.push_str(k);
            text.push('\n');
        }
        let f = fingerprint(text.as_bytes());
        let m = d.group.max_each(&[f[0], f[1], -f[0], -f[1]], during)?;
        if m[0] != -m[2] || m[1] != -m[3] {
            return Err(crate::exec::dist::DistError::Mismatch {
                what: format!("after {during} the ranks hold different models"),
            }
            .into());
        }
        let vars = self.model.vs.variables();
        let mut names: Vec<&String> = vars.keys().collect();
        names.sort();
        let ts: Vec<&Tensor> = names.iter().map(|k| &vars[*k]).collect();
        d.group.broadcast(&ts, 0, during)?;
        // Masks are decided from the same weights on every rank; rank 0's
        // are the ones kept.
        let masks: Vec<&Tensor> = self.masks.values().collect();
        d.group.broadcast(&masks, 0, during)?;
        let mut tracked: Vec<(String, i64)> = self
            .model
            .batches_tracked
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        if !tracked.is_empty() {
            let t = Tensor::from_slice(&tracked.iter().map(|x| x.1).collect::<Vec<_>>());
            d.group.broadcast(&[&t], 0, during)?;
            let v = Vec::<i64>::try_from(&t).unwrap_or_default();
            for ((_, n), m) in tracked.iter_mut().zip(v) {
                *n = m;
            }
            self.model.batches_tracked = tracked.into_iter().collect();
        }
        Ok(())
    }

    /// BatchNorm's running statistics from rank 0 (DDP's
    /// `broadcast_buffers`), before a training step without `sync_bn`.
    fn broadcast_buffers(&self) -> Result<(), RunError> {
        let Some(d) = self.dist.as_ref().filter(|d| !d.sync_bn) else {
            return Ok(());
        };
        let vars = self.model.vs.variables();
        let mut names: Vec<&String> = vars
            .keys()
            .filter(|k| k.ends_with(".running_mean") || k.ends_with(".running_var"))
            .collect();
        if names.is_empty() {
            return Ok(());
        }
        names.sort();
        let ts: Vec<&Tensor> = names.iter().map(|k| &vars[*k]).collect();
        d.group.broadcast(&ts, 0, "sharing BatchNorm statistics")?;
        Ok(())
    }

    /// Before a distributed training step's forward pass: the Reducer over
    /// the optimizer's variables (built after every change of model), the
    /// synchronised BatchNorm, rank 0's buffers.
    pub(super) fn before_step(&mut self, vars: &[Tensor]) -> Result<(), RunError> {
        let Some(d) = self.dist.as_mut() else {
            return Ok(());
        };
        if d.reducer.is_none() {
            let refs: Vec<&Tensor> = vars.iter().collect();
            d.reducer = Some(d.group.reducer(&refs)?);
        }
        self.ensure_sync_bn();
        self.broadcast_buffers()?;
        if let Some(r) = self.dist.as_ref().and_then(|d| d.reducer.as_ref()) {
            r.before_forward()?;
        }
        Ok(())
    }

    /// With `sync_bn`, the model's BatchNorm in training mode normalises
    /// over every rank's batch (set again on each new model).
    pub(super) fn ensure_sync_bn(&mut self) {
        let Some(d) = self.dist.as_ref().filter(|d| d.sync_bn) else {
            return;
        };
        if self.model.batch_norm.is_none() {
            let g = d.group.clone();
            self.model.batch_norm = Some(Rc::new(move |x, w, b, m, v, momentum, eps| {
                g.sync_batch_norm(x, w, b, m, v, momentum, eps)
                    .map_err(|e| tch::TchError::Torch(e.to_string()))
            }));
        }
    }

    /// The model or optimizer changed: the Reducer holds the old
    /// parameters, and is built again at the next step.
    pub(super) fn drop_reducer(&mut self) {
        if let Some(d) = self.dist.as_mut() {
            d.reducer = None;
        }
    }

    /// Backward through a distributed step's loss: the Reducer all-reduces
    /// gradients while it runs and leaves their mean over ranks in each
    /// variable's `.grad`, which this returns (and which
    /// [`Session::clear_grads`] zeroes after the optimizer used them).
    pub(super) fn reduced_backward(
        &self,
        loss: &Tensor,
        vars: &[Tensor],
    ) -> Result<Vec<Tensor>, RunError> {
        let r = self
            .dist
            .as_ref()
            .and_then(|d| d.reducer.as_ref())
            .expect("before_step built the reducer");
        r.before_backward()?;
        r.backward(loss)?;
        Ok(vars.iter().map(|v| v.grad()).collect())
    }

    /// Drops `.grad` of these variables after the optimizer used them
    /// (as DDP users' `zero_grad()` does): zeroing them cost a pass over
    /// every parameter each step.
    pub(super) fn clear_grads(vars: &[Tensor]) {
        crate::exec::dist::drop_grads(vars);
    }
}

/// Scales a rank's mean loss over `local` samples so that the mean over
/// `world` ranks is the mean over the `global` samples of the batch; an
/// empty slice contributes zero gradients (every parameter still takes
/// part, as the Reducer needs).
pub(super) fn scale_loss(
    loss: Option<Tensor>,
    out: &Tensor,
    local: usize,
    global: usize,
    world: usize,
) -> Result<Tensor, RunError> {
    match loss {
        Some(l) if local > 0 => Ok(l.f_mul_scalar((world * local) as f64 / global.max(1) as f64)?),
        _ => Ok(out.f_sum(Kind::Float)?.f_mul_scalar(0.0)?),
    }
}
