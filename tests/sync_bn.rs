//! The synchronised BatchNorm of the distributed shim against libtorch's
//! own, on one rank (a group of one): forward output, running statistics
//! and every gradient.

#![cfg(feature = "torch")]

#[allow(dead_code)]
#[path = "../src/exec/dist/mod.rs"]
mod dist;

use prunex::distributed::{Launcher, World};
use tch::{Device, Kind, Tensor};

#[test]
fn sync_batch_norm_on_one_rank_is_batch_norm() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let world = World {
        rank: 0,
        size: 1,
        local_rank: 0,
        master_addr: "127.0.0.1".into(),
        master_port: port,
        agent_store: false,
        launcher: Launcher::Prunex,
    };
    let g = dist::Group::join(&world, Device::Cpu).unwrap();
    tch::manual_seed(0);
    let x = (Tensor::randn([6, 3, 5, 4], (Kind::Float, Device::Cpu)) * 3.0 + 1.5)
        .set_requires_grad(true);
    let w = Tensor::rand([3], (Kind::Float, Device::Cpu)).set_requires_grad(true);
    let b = Tensor::randn([3], (Kind::Float, Device::Cpu)).set_requires_grad(true);
    let up = Tensor::randn([6, 3, 5, 4], (Kind::Float, Device::Cpu));
    let (m1, v1) = (
        Tensor::zeros([3], (Kind::Float, Device::Cpu)),
        Tensor::ones([3], (Kind::Float, Device::Cpu)),
    );
    let (m2, v2) = (m1.copy(), v1.copy());
    let y1 = x.batch_norm(
        Some(&w),
        Some(&b),
        Some(&m1),
        Some(&v1),
        true,
        0.1,
        1e-5,
        false,
    );
    let g1 = Tensor::run_backward(
        &[&(&y1 * &up).sum(Kind::Float)],
        &[&x, &w, &b],
        false,
        false,
    );
    let y2 = g.sync_batch_norm(&x, &w, &b, &m2, &v2, 0.1, 1e-5).unwrap();
    let g2 = Tensor::run_backward(
        &[&(&y2 * &up).sum(Kind::Float)],
        &[&x, &w, &b],
        false,
        false,
    );
    let diff = |a: &Tensor, b: &Tensor| (a - b).abs().max().double_value(&[]);
    assert!(diff(&y1, &y2) < 1e-5, "output {}", diff(&y1, &y2));
    assert!(diff(&m1, &m2) < 1e-6, "running mean {}", diff(&m1, &m2));
    assert!(diff(&v1, &v2) < 1e-5, "running var {}", diff(&v1, &v2));
    for (name, (a, b)) in ["x", "weight", "bias"].iter().zip(g1.iter().zip(&g2)) {
        assert!(diff(a, b) < 1e-5, "{name} gradient {}", diff(a, b));
    }
}
