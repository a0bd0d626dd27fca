//! libtorch tensors ↔ prunex's plain tensors (`tensor::Tensor`),
//! the one place the two meet: state dicts, optimizer state, masks and
//! gradients all cross here.

use prunex::tensor as plain;
use tch::{Device, Kind, TchError, Tensor};

/// A libtorch tensor as a plain float32 tensor on the CPU.
pub fn to_plain(t: &Tensor) -> Result<plain::Tensor, TchError> {
    let t = t
        .f_to_device(Device::Cpu)?
        .f_to_kind(Kind::Float)?
        .f_contiguous()?;
    let shape = t.size().iter().map(|&d| d as usize).collect();
    Ok(plain::Tensor::f32(
        shape,
        Vec::<f32>::try_from(t.f_flatten(0, -1)?)?,
    ))
}

/// A plain float32 tensor on `device`; `None` when it is not float32.
pub fn from_plain(t: &plain::Tensor, device: Device) -> Result<Option<Tensor>, TchError> {
    let Some(values) = t.as_f32() else {
        return Ok(None);
    };
    let shape: Vec<i64> = t.shape.iter().map(|&d| d as i64).collect();
    Ok(Some(
        Tensor::from_slice(values)
            .f_reshape(&shape)?
            .f_to_device(device)?,
    ))
}
