//! The state of a run in progress — the model, its masks, the optimizer,
//! the teacher, the metrics so far — and what it does between training
//! epochs: evaluation, sparsity, latency, masks and rebuilding after
//! surgery.

use std::collections::BTreeMap;
use std::time::Instant;

use prunex::data::{batches, Batch, DataSet, Rng, Transform};
use prunex::graph::Graph;
use prunex::report::{EpochReport, Latency, Timings, LATENCY_BATCH};
use prunex::tensor::StateDict;
use tch::{Device, Kind, Tensor};

use super::RunError;
use crate::exec::model::TorchModel;
use crate::exec::optim::Optimizer;

pub(super) struct Session {
    pub(super) device: Device,
    pub(super) data: DataSet,
    pub(super) transform: Transform,
    pub(super) batch: usize,
    pub(super) eval_batch: usize,
    pub(super) seed: u64,
    pub(super) rng: Rng,
    /// Seeds libtorch per step within the current unit.
    pub(super) unit_seed: u64,
    /// Whether the model draws random numbers in training (dropout).
    pub(super) stochastic: bool,
    pub(super) model: TorchModel,
    pub(super) masks: BTreeMap<String, Tensor>,
    pub(super) dense_weights: u64,
    pub(super) epochs: Vec<EpochReport>,
    /// The teacher and (temperature, alpha), while distilling.
    pub(super) teacher: Option<(TorchModel, f64, f64)>,
    /// Network Slimming's L1 strength on BatchNorm γ, while training.
    pub(super) penalty: Option<f64>,
    pub(super) opt: Option<Optimizer>,
    /// Optimizer state restored from a snapshot, loaded when the optimizer is built.
    pub(super) pending_opt: Option<StateDict>,
    pub(super) dense_accuracy: Option<f64>,
    pub(super) pruned_accuracy: Option<f64>,
    pub(super) final_accuracy: Option<f64>,
    /// The dense model, when this process evaluated it, for the latency
    /// comparison at the end.
    pub(super) dense: Option<(Graph, StateDict)>,
    pub(super) timings: Timings,
    pub(super) progress: bool,
    /// The other ranks, in a distributed run.
    pub(super) dist: Option<super::distributed::Dist>,
}

pub(super) fn to_tensor(b: &Batch, device: Device) -> (Tensor, Tensor) {
    let s: Vec<i64> = b.shape.iter().map(|&d| d as i64).collect();
    (
        Tensor::from_slice(&b.x).reshape(&s).to_device(device),
        Tensor::from_slice(&b.y).to_device(device),
    )
}

/// How many predictions in a batch are right.
pub(super) fn correct(logits: &Tensor, y: &Tensor) -> i64 {
    logits
        .argmax(-1, false)
        .eq_tensor(y)
        .sum(Kind::Int64)
        .int64_value(&[])
}

/// The device a recipe's `device` means here. In a distributed run each
/// rank takes the GPU of its local rank (`cuda:LOCAL_RANK`, as DDP does),
/// whatever index the recipe names.
pub(super) fn device_of(
    spec: prunex::plan::Device,
    world: Option<&prunex::distributed::World>,
) -> Device {
    use prunex::plan::Device as DeviceSpec;
    match (spec, world) {
        (DeviceSpec::Auto, None) => Device::cuda_if_available(),
        (DeviceSpec::Auto, Some(w)) if tch::Cuda::is_available() => Device::Cuda(w.local_rank),
        (DeviceSpec::Auto, Some(_)) | (DeviceSpec::Cpu, _) => Device::Cpu,
        (DeviceSpec::Cuda(i), None) => Device::Cuda(i),
        (DeviceSpec::Cuda(_), Some(w)) => Device::Cuda(w.local_rank),
    }
}

impl Session {
    pub(super) fn evaluate(&mut self) -> Result<f64, RunError> {
        // With N ranks each evaluates every N-th batch; the counts add up.
        let (rank, world) = (self.rank(), self.world_size());
        let (mut right, mut total) = (0i64, 0i64);
        let all = batches(&self.data.test, &self.transform, self.eval_batch, None);
        for b in all.iter().skip(rank).step_by(world) {
            let (x, y) = to_tensor(b, self.device);
            let out = tch::no_grad(|| self.model.forward(&x, false))?;
            right += correct(&out, &y);
            total += b.y.len() as i64;
        }
        let v = self.sum_over_ranks(&[right as f64, total as f64], "evaluation")?;
        Ok(v[0] / v[1].max(1.0))
    }

    /// Median inference latency at batch 1 and 64 of the current model and,
    /// when given, of the dense one, measured in alternation (warm-up first;
    /// repeats for at least 5 runs or two seconds), so that the speed-up
    /// compares two models under the same conditions, never a measurement
    /// from an earlier, cached run.
    pub(super) fn latencies(
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

    /// Zero or removed weights of convolutions, linear layers and
    /// attention projections, relative to the dense model.
    pub(super) fn sparsity(&self) -> f64 {
        let mut nonzero = 0u64;
        let vars = self.model.vs.variables();
        for (_, matrices) in self.model.graph.weight_layers() {
            for (key, _) in matrices {
                if let Some(t) = vars.get(&key) {
                    nonzero += t.ne(0.0).sum(Kind::Int64).int64_value(&[]) as u64;
                }
            }
        }
        1.0 - nonzero as f64 / self.dense_weights.max(1) as f64
    }

    pub(super) fn apply_masks(&mut self) -> Result<(), RunError> {
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
}
