//! Pruning inside a run: the plan's steps applied through
//! [`decide::step`] (the one function that decides a pruning step), masks
//! held after every optimizer step, the model and optimizer rebuilt after
//! surgery.

use std::collections::BTreeMap;

use prunex::data::{batch_len, batches_of_rank};
use prunex::graph::Graph;
use prunex::plan::{Criterion, Plan, Stage, Step};
use prunex::prune::{decide, mask};
use prunex::tensor::StateDict;
use tch::Tensor;

use super::session::{to_tensor, Session};
use super::RunError;
use crate::exec::convert::to_plain;
use crate::exec::model::TorchModel;

impl Session {
    /// Sums the loss gradients of `n` training batches, by state_dict key
    /// (first-order Taylor importance).
    pub(super) fn gather_gradients(&mut self, n: u64) -> Result<StateDict, RunError> {
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
        // The Reducer's hooks would fire on this backward pass.
        self.drop_reducer();
        self.ensure_sync_bn();
        // With N ranks each takes its slice of the same batches; the sum
        // over ranks of the scaled gradients is the batches' gradient.
        let (rank, world) = (self.rank(), self.world_size());
        let len = self.data.train.len();
        let data = batches_of_rank(
            &self.data.train,
            &self.transform,
            self.batch * world,
            Some(&mut self.rng),
            rank,
            world,
        );
        for (i, b) in data.iter().take(n as usize).enumerate() {
            // An empty slice still runs: a synchronised BatchNorm's
            // all-reduce needs every rank.
            let (x, y) = to_tensor(b, self.device);
            let out = self.model.forward(&x, true)?;
            let loss = if b.y.is_empty() {
                out.f_sum(tch::Kind::Float)?.f_mul_scalar(0.0)?
            } else {
                let global = batch_len(len, self.batch * world, i);
                out.f_cross_entropy_loss::<Tensor>(&y, None, tch::Reduction::Mean, -100, 0.0)?
                    .f_mul_scalar(b.y.len() as f64 / global as f64)?
            };
            loss.f_backward()?;
        }
        let mut keys: Vec<&String> = vars.keys().collect();
        keys.sort();
        let mut gs: Vec<(String, Tensor)> = Vec::new();
        for k in keys {
            let g = vars[k].grad();
            // Every rank's variables took part in the same graph, so the
            // same gradients are defined on each.
            if g.defined() {
                gs.push((k.clone(), g));
            }
        }
        let refs: Vec<&Tensor> = gs.iter().map(|(_, g)| g).collect();
        self.sum_tensors(&refs, "adding up Taylor gradients")?;
        let mut grads = StateDict::new();
        for (k, g) in &gs {
            grads.insert(k.clone(), to_plain(g)?);
        }
        zero(&vars);
        Ok(grads)
    }

    /// Wanda's calibration: the L2 norm of every input feature of every
    /// weight matrix over `n` training batches, the model in eval mode.
    pub(super) fn gather_activations(&mut self, n: u64) -> Result<decide::Activations, RunError> {
        let (rank, world) = (self.rank(), self.world_size());
        let data = batches_of_rank(
            &self.data.train,
            &self.transform,
            self.batch * world,
            Some(&mut self.rng),
            rank,
            world,
        );
        self.model.record = Some(BTreeMap::new());
        let ran = tch::no_grad(|| -> Result<(), RunError> {
            for b in data.iter().take(n as usize) {
                if b.y.is_empty() {
                    continue;
                }
                let (x, _) = to_tensor(b, self.device);
                let _ = self.model.forward(&x, false)?;
            }
            Ok(())
        });
        let sums = self.model.record.take().unwrap_or_default();
        ran?;
        // Sums of squares add up over ranks (the same keys on each: every
        // rank ran the same model on a slice of the same batches).
        let refs: Vec<&Tensor> = sums.values().collect();
        self.sum_tensors(&refs, "adding up Wanda's activation norms")?;
        let mut out = decide::Activations::new();
        for (k, s) in sums {
            let v: Vec<f64> = Vec::<f64>::try_from(s.f_sqrt()?.f_to_kind(tch::Kind::Double)?)?;
            out.insert(k, v);
        }
        Ok(out)
    }

    /// Prunes one stage to its schedule step `at`, as [`decide::step`]
    /// decides from the plan (the same function `prunex plan` predicts with).
    pub(super) fn prune(&mut self, stage: &Stage, at: &Step) -> Result<(), RunError> {
        let sd = self.model.state_dict()?;
        let grads = match (stage.importance, stage.batches) {
            (Criterion::Taylor, Some(n)) => Some(self.gather_gradients(n)?),
            _ => None,
        };
        let activations = match (stage.importance, stage.batches) {
            (Criterion::Wanda, Some(n)) => Some(self.gather_activations(n)?),
            _ => None,
        };
        let inputs = decide::Inputs {
            weights: Some(&sd),
            grads: grads.as_ref(),
            seed: self.seed,
            activations: activations.as_ref(),
        };
        let graph = self.model.graph.clone();
        match decide::step(stage, at, &graph, inputs)
            .map_err(|e| tch::TchError::Kind(e.to_string()))?
        {
            decide::Outcome::Masks { masks, .. } => self.set_masks(masks.unwrap_or_default()),
            decide::Outcome::Rebuilt { graph, weights } => {
                self.rebuild(graph, weights.expect("weights were given"))
            }
        }
    }

    pub(super) fn set_masks(&mut self, masks: mask::Masks) -> Result<(), RunError> {
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

    pub(super) fn rebuild(&mut self, g: Graph, sd: StateDict) -> Result<(), RunError> {
        let mut m = TorchModel::new(&g, self.device);
        m.load(&sd)?;
        self.model = m;
        self.masks.clear();
        self.opt = None;
        Ok(())
    }
}

/// Applies the plan's pruning steps `(stage, step)` due now.
pub(super) fn apply_events(
    s: &mut Session,
    plan: &Plan,
    events: &[(usize, usize)],
) -> Result<(), RunError> {
    for &(i, k) in events {
        let st = &plan.stages[i];
        s.prune(st, &st.schedule[k])?;
    }
    // The optimizer starts afresh on the changed model; every rank holds
    // rank 0's.
    s.opt = None;
    s.pending_opt = None;
    s.drop_reducer();
    s.sync_from_leader("pruning")
}
