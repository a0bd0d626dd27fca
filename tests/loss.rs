//! prunex's training loss (`src/exec/loss.rs`) against PyTorch: cross-entropy
//! and the distillation loss at several temperatures and alphas, value and
//! gradient with respect to the student's logits, on the same logits.

#![cfg(feature = "torch")]

mod common;

#[path = "../src/exec/loss.rs"]
mod loss;

use tch::Tensor;

#[test]
fn loss_and_gradient_equal_pytorch() {
    let cases = common::python_reference("loss.py");
    let cases = cases.as_array().unwrap();
    assert_eq!(cases.len(), 5);
    let teacher = (Tensor::arange(40, (tch::Kind::Float, tch::Device::Cpu)) * 0.3).cos() * 4.0;
    let teacher = teacher.reshape([4, 10]);
    let y = Tensor::from_slice(&[3i64, 0, 9, 3]);
    for case in cases {
        let s = ((Tensor::arange(40, (tch::Kind::Float, tch::Device::Cpu)) * 0.7).sin() * 3.0)
            .reshape([4, 10])
            .set_requires_grad(true);
        let soft = case["temperature"].as_f64().map(|t| loss::Soft {
            teacher: &teacher,
            temperature: t,
            alpha: case["alpha"].as_f64().unwrap(),
        });
        let l = loss::loss(&s, &y, soft).unwrap();
        l.backward();
        let value = l.double_value(&[]);
        let expected = case["loss"].as_f64().unwrap();
        assert!(
            (value - expected).abs() < 1e-5 * expected.abs().max(1.0),
            "T={} alpha={}: loss {value} vs PyTorch {expected}",
            case["temperature"],
            case["alpha"]
        );
        let grad = Vec::<f32>::try_from(s.grad().flatten(0, -1)).unwrap();
        let reference: Vec<f64> = case["grad"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| g.as_f64().unwrap())
            .collect();
        for (i, (a, b)) in grad.iter().zip(&reference).enumerate() {
            assert!(
                (*a as f64 - b).abs() < 1e-6,
                "T={} alpha={}: grad[{i}] {a} vs PyTorch {b}",
                case["temperature"],
                case["alpha"]
            );
        }
    }
}
