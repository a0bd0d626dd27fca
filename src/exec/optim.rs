//! Optimizers with PyTorch's update rules (`torch.optim.SGD`, `Adam`,
//! `AdamW`), written here rather than taken from tch's `nn::Optimizer` for
//! two things tch does not expose: per-parameter learning-rate multipliers
//! (`lr_mult "glob" x`) and the optimizer state itself, which checkpoints and
//! `--resume` must save and restore to continue a run exactly.

use std::collections::BTreeMap;

use globset::Glob;
use prunex::tensor::{self, StateDict};
use tch::{TchError, Tensor};

use super::convert::{from_plain, to_plain};

/// Which update rule.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Rule {
    /// SGD with momentum, dampening 0, optional Nesterov, L2 weight decay.
    Sgd {
        /// Momentum.
        momentum: f64,
        /// Nesterov.
        nesterov: bool,
    },
    /// Adam (L2 weight decay added to the gradient).
    Adam,
    /// AdamW (decoupled weight decay).
    AdamW,
}

const BETA1: f64 = 0.9;
const BETA2: f64 = 0.999;
const EPS: f64 = 1e-8;

struct Param {
    name: String,
    var: Tensor,
    mult: f64,
    /// SGD: momentum buffer. Adam: exp_avg, exp_avg_sq.
    state: Vec<Tensor>,
}

/// An optimizer over a model's trainable variables.
pub struct Optimizer {
    rule: Rule,
    wd: f64,
    params: Vec<Param>,
    /// Steps taken (Adam's bias correction).
    pub steps: u64,
}

/// The module a variable belongs to (`layer1.0.conv1.weight` → `layer1.0.conv1`).
fn module_of(name: &str) -> &str {
    name.rsplit_once('.').map_or(name, |(m, _)| m)
}

impl Optimizer {
    /// An optimizer over `vars` (trainable variables by state_dict name);
    /// the first `lr_mult` glob matching a variable's module sets its
    /// multiplier (1 otherwise).
    pub fn new(
        rule: Rule,
        wd: f64,
        vars: &std::collections::HashMap<String, Tensor>,
        lr_mult: &[(String, f64)],
    ) -> Self {
        let globs: Vec<(globset::GlobMatcher, f64)> = lr_mult
            .iter()
            .filter_map(|(p, m)| Some((Glob::new(p).ok()?.compile_matcher(), *m)))
            .collect();
        let mut names: Vec<&String> = vars.keys().collect();
        names.sort();
        let params = names
            .into_iter()
            .filter(|n| vars[*n].requires_grad())
            .map(|n| Param {
                name: n.clone(),
                var: vars[n].shallow_clone(),
                mult: globs
                    .iter()
                    .find(|(g, _)| g.is_match(module_of(n)))
                    .map_or(1.0, |(_, m)| *m),
                state: Vec::new(),
            })
            .collect();
        Optimizer {
            rule,
            wd,
            params,
            steps: 0,
        }
    }

    /// The variables, in the order [`Optimizer::step_with`] takes gradients.
    pub fn vars(&self) -> Vec<Tensor> {
        self.params.iter().map(|p| p.var.shallow_clone()).collect()
    }

    /// Names of the variables, in the same order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.params.iter().map(|p| p.name.as_str())
    }

    /// One update with learning rate `lr` (times each parameter's
    /// multiplier) from fresh gradients, one per variable in [`Optimizer::vars`]
    /// order (undefined: no gradient). The gradients are used up: updates run
    /// in place on them, so a step allocates no parameter-sized temporaries
    /// beyond what PyTorch's own single-tensor implementations do.
    pub fn step_with(&mut self, lr: f64, grads: Vec<Tensor>) -> Result<(), TchError> {
        self.steps += 1;
        let t = self.steps as i32;
        let (rule, wd) = (self.rule, self.wd);
        let scalar = |x: f64, like: &Tensor| Tensor::from(x as f32).to_device(like.device());
        tch::no_grad(|| -> Result<(), TchError> {
            for (p, mut g) in self.params.iter_mut().zip(grads) {
                if !g.defined() {
                    continue;
                }
                let lr = lr * p.mult;
                let mut var = p.var.shallow_clone();
                match rule {
                    Rule::Sgd { momentum, nesterov } => {
                        if wd != 0.0 {
                            let _ = g.f_addcmul_(&var, &scalar(wd, &var))?;
                        }
                        let d = if momentum != 0.0 {
                            if p.state.is_empty() {
                                p.state.push(g.f_detach_copy()?);
                            } else {
                                let _ = p.state[0].f_mul_scalar_(momentum)?.f_add_(&g)?;
                            }
                            if nesterov {
                                let _ = g.f_addcmul_(&p.state[0], &scalar(momentum, &var))?;
                                g
                            } else {
                                p.state[0].shallow_clone()
                            }
                        } else {
                            g
                        };
                        let _ = var.f_addcmul_(&d, &scalar(-lr, &var))?;
                    }
                    Rule::Adam | Rule::AdamW => {
                        if wd != 0.0 && rule == Rule::Adam {
                            let _ = g.f_addcmul_(&var, &scalar(wd, &var))?;
                        }
                        if wd != 0.0 && rule == Rule::AdamW {
                            let _ = var.f_mul_scalar_(1.0 - lr * wd)?;
                        }
                        if p.state.is_empty() {
                            p.state.push(var.f_zeros_like()?);
                            p.state.push(var.f_zeros_like()?);
                        }
                        // As torch.optim.Adam: exp_avg.lerp_(grad, 1 - beta1).
                        let _ = p.state[0].f_lerp_(&g, 1.0 - BETA1)?;
                        let g2 = g.f_mul_scalar(1.0 - BETA2)?;
                        let _ = p.state[1].f_mul_scalar_(BETA2)?.f_addcmul_(&g, &g2)?;
                        let bc1 = 1.0 - BETA1.powi(t);
                        let bc2 = 1.0 - BETA2.powi(t);
                        let step = lr / bc1;
                        let mut denom = p.state[1].f_sqrt()?;
                        let _ = denom
                            .f_div_scalar_(bc2.sqrt())?
                            .f_add_scalar_(EPS)?
                            .f_mul_scalar_(-1.0 / step)?;
                        if lr != 0.0 {
                            let _ = var.f_addcdiv_(&p.state[0], &denom)?;
                        }
                    }
                }
            }
            Ok(())
        })
    }

    /// The optimizer state as tensors named `{param}.{buffer}` plus `steps`,
    /// for checkpoints.
    pub fn state_dict(&self) -> Result<StateDict, TchError> {
        let mut sd = StateDict::new();
        for p in &self.params {
            for (i, t) in p.state.iter().enumerate() {
                sd.insert(format!("{}.{}", p.name, i), to_plain(t)?);
            }
        }
        sd.insert(
            "steps".into(),
            tensor::Tensor {
                shape: vec![],
                data: tensor::TensorData::I64(vec![self.steps as i64]),
            },
        );
        Ok(sd)
    }

    /// Restores what [`Optimizer::state_dict`] saved.
    pub fn load(&mut self, sd: &StateDict) -> Result<(), TchError> {
        if let Some(tensor::TensorData::I64(v)) = sd.get("steps").map(|t| &t.data) {
            self.steps = v.first().copied().unwrap_or(0) as u64;
        }
        let mut by_param: BTreeMap<&str, Vec<(usize, &tensor::Tensor)>> = BTreeMap::new();
        for (k, t) in sd {
            if let Some((name, i)) = k.rsplit_once('.') {
                if let Ok(i) = i.parse::<usize>() {
                    by_param.entry(name).or_default().push((i, t));
                }
            }
        }
        for p in &mut self.params {
            let Some(mut bufs) = by_param.remove(p.name.as_str()) else {
                continue;
            };
            bufs.sort_by_key(|(i, _)| *i);
            p.state.clear();
            for (_, t) in bufs {
                if let Some(buf) = from_plain(t, p.var.device())? {
                    p.state.push(buf);
                }
            }
        }
        Ok(())
    }
}
