//! The reference input `x` and output `y` a parity script saved as
//! `DIR/ID.io.safetensors`, as libtorch tensors (test crates that run
//! tensors include this with `#[path]`).

use std::path::Path;

/// `(x, y)` of case `id` under `dir`.
pub fn io(dir: &Path, id: &str) -> (tch::Tensor, tch::Tensor) {
    let io = prunex::models::weights::read_safetensors(
        &std::fs::read(dir.join(format!("{id}.io.safetensors"))).unwrap(),
    )
    .unwrap();
    let t = |k: &str| {
        let w = &io[k];
        let shape: Vec<i64> = w.shape.iter().map(|&d| d as i64).collect();
        tch::Tensor::from_slice(w.as_f32().unwrap()).reshape(&shape)
    };
    (t("x"), t("y"))
}

/// The tensor `y` of a safetensors file (what a reference script wrote).
#[allow(dead_code)] // not every test crate that includes this uses it
pub fn output_y(path: &Path) -> tch::Tensor {
    let y = prunex::models::weights::read_safetensors(&std::fs::read(path).unwrap()).unwrap();
    let y = &y["y"];
    let shape: Vec<i64> = y.shape.iter().map(|&d| d as i64).collect();
    tch::Tensor::from_slice(y.as_f32().unwrap()).reshape(&shape)
}
