//! prunex's optimizers (`src/exec/optim.rs`) against `torch.optim` on the
//! same tensors and gradients: SGD with momentum and weight decay, Nesterov,
//! plain SGD, Adam and AdamW, with a per-step learning rate and an
//! `lr_mult` of 0.5 on one tensor (a parameter group in PyTorch). Halfway
//! through, the optimizer is saved and rebuilt from its state, as a
//! checkpoint and `--resume` do; the result must not change.

#![cfg(feature = "torch")]

mod common;

#[path = "../src/exec/convert.rs"]
mod convert;

#[path = "../src/exec/optim.rs"]
#[allow(dead_code)]
mod optim;

use std::collections::HashMap;

use optim::{Optimizer, Rule};
use tch::{Kind, Tensor};

fn lr_at(k: usize) -> f64 {
    0.05 * (k + 1) as f64 / 3.0
}

fn train(rule: Rule, wd: f64) -> Vec<f32> {
    let w = (Tensor::arange(12, (Kind::Float, tch::Device::Cpu)).reshape([3, 4]) / 10.0 - 0.5)
        .set_requires_grad(true);
    let b = Tensor::from_slice(&[0.1f32, -0.2, 0.3]).set_requires_grad(true);
    let x = Tensor::arange(20, (Kind::Float, tch::Device::Cpu))
        .sin()
        .reshape([5, 4]);
    let vars: HashMap<String, Tensor> = [
        ("a.weight".to_owned(), w.shallow_clone()),
        ("b.bias".to_owned(), b.shallow_clone()),
    ]
    .into();
    let mult = [("b".to_owned(), 0.5)];
    let mut opt = Optimizer::new(rule, wd, &vars, &mult);
    for k in 0..6 {
        if k == 3 {
            // A checkpoint: save, rebuild, restore.
            let state = opt.state_dict().unwrap();
            opt = Optimizer::new(rule, wd, &vars, &mult);
            opt.load(&state).unwrap();
        }
        let y = x.matmul(&w.tr()) + &b;
        let loss = (y.pow_tensor_scalar(2).mean(Kind::Float) + y.sin().sum(Kind::Float))
            * (1.0 + 0.1 * k as f64);
        let grads = Tensor::run_backward(&[&loss], &opt.vars(), false, false);
        opt.step_with(lr_at(k), grads).unwrap();
    }
    let mut out = Vec::<f32>::try_from(w.detach().flatten(0, -1)).unwrap();
    out.extend(Vec::<f32>::try_from(b.detach()).unwrap());
    out
}

#[test]
fn optimizers_match_torch_optim_and_survive_a_checkpoint() {
    let r = common::python_reference("optim.py");
    let cases = [
        (
            "sgd",
            Rule::Sgd {
                momentum: 0.9,
                nesterov: false,
            },
            0.01,
        ),
        (
            "nesterov",
            Rule::Sgd {
                momentum: 0.9,
                nesterov: true,
            },
            0.0,
        ),
        (
            "plain",
            Rule::Sgd {
                momentum: 0.0,
                nesterov: false,
            },
            0.001,
        ),
        ("adam", Rule::Adam, 0.01),
        ("adamw", Rule::AdamW, 0.01),
    ];
    for (name, rule, wd) in cases {
        let ours = train(rule, wd);
        let theirs: Vec<f64> = r[name]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        assert_eq!(ours.len(), theirs.len());
        for (i, (a, b)) in ours.iter().zip(&theirs).enumerate() {
            assert!(
                (*a as f64 - b).abs() < 1e-5,
                "{name}[{i}]: prunex {a} vs torch.optim {b}"
            );
        }
    }
}
