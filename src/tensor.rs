//! Plain tensors: a shape and row-major values, and a `state_dict` of them.
//! Every reader (safetensors, `torch.save`) yields these, pruning works on
//! them, and the executor converts them to and from libtorch
//! (`exec::convert`). Nothing here reads files or links libtorch.

use std::collections::BTreeMap;

/// Element types as stored on disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DType {
    /// float32
    F32,
    /// float64
    F64,
    /// float16
    F16,
    /// bfloat16
    BF16,
    /// int64
    I64,
    /// int32
    I32,
}

impl DType {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DType::F32 | DType::I32 => 4,
            DType::F64 | DType::I64 => 8,
            DType::F16 | DType::BF16 => 2,
        }
    }
}

/// Tensor values: floating point kept as f32, integers as i64.
#[derive(Clone, Debug, PartialEq)]
pub enum TensorData {
    /// Floating-point values.
    F32(Vec<f32>),
    /// Integer values (`num_batches_tracked`).
    I64(Vec<i64>),
}

fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h >> 15) as u32) << 31;
    let exp = ((h >> 10) & 0x1f) as u32;
    let frac = (h & 0x3ff) as u32;
    let bits = match exp {
        0 if frac == 0 => sign,
        0 => {
            // Subnormal: normalise.
            let mut e = 127 - 15 + 1;
            let mut f = frac;
            while f & 0x400 == 0 {
                f <<= 1;
                e -= 1;
            }
            sign | (e << 23) | ((f & 0x3ff) << 13)
        }
        0x1f => sign | 0x7f80_0000 | (frac << 13),
        _ => sign | ((exp + 127 - 15) << 23) | (frac << 13),
    };
    f32::from_bits(bits)
}

impl TensorData {
    /// Decodes little-endian bytes of `dtype`.
    pub fn from_le_bytes(dtype: DType, b: &[u8]) -> Self {
        let w = dtype.size();
        let chunks = b.chunks_exact(w);
        match dtype {
            DType::F32 => TensorData::F32(
                chunks
                    .map(|c| f32::from_le_bytes(c.try_into().expect("4")))
                    .collect(),
            ),
            DType::F64 => TensorData::F32(
                chunks
                    .map(|c| f64::from_le_bytes(c.try_into().expect("8")) as f32)
                    .collect(),
            ),
            DType::F16 => TensorData::F32(
                chunks
                    .map(|c| f16_to_f32(u16::from_le_bytes([c[0], c[1]])))
                    .collect(),
            ),
            DType::BF16 => TensorData::F32(
                chunks
                    .map(|c| f32::from_bits((u16::from_le_bytes([c[0], c[1]]) as u32) << 16))
                    .collect(),
            ),
            DType::I64 => TensorData::I64(
                chunks
                    .map(|c| i64::from_le_bytes(c.try_into().expect("8")))
                    .collect(),
            ),
            DType::I32 => TensorData::I64(
                chunks
                    .map(|c| i32::from_le_bytes(c.try_into().expect("4")) as i64)
                    .collect(),
            ),
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            TensorData::F32(v) => v.len(),
            TensorData::I64(v) => v.len(),
        }
    }

    /// Whether there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A tensor: shape and row-major values.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    /// Shape.
    pub shape: Vec<usize>,
    /// Values.
    pub data: TensorData,
}

impl Tensor {
    /// A float tensor.
    pub fn f32(shape: Vec<usize>, values: Vec<f32>) -> Self {
        Tensor {
            shape,
            data: TensorData::F32(values),
        }
    }

    /// The float values, when the tensor is floating point.
    pub fn as_f32(&self) -> Option<&[f32]> {
        match &self.data {
            TensorData::F32(v) => Some(v),
            TensorData::I64(_) => None,
        }
    }
}

/// Parameters and buffers by PyTorch `state_dict` key, in key order.
pub type StateDict = BTreeMap<String, Tensor>;
