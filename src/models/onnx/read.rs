//! Decoding an ONNX file and its tensors, through the checker's loader.

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Component, Path, PathBuf};

use prost::Message;

use super::proto::{tensor_proto::DataType, ModelProto, TensorProto};
use super::OnnxError;
use crate::syntax::Loader;
use crate::tensor::{Tensor, TensorData};

/// The oldest default-domain opset prunex reads (`ReduceMean` and `Clip`
/// take their axes and bounds as inputs from 13 and 11 on).
pub const MIN_OPSET: i64 = 13;

/// Files larger than this are refused before they are read (protobuf
/// itself stops at 2 GiB; larger models keep their weights outside).
const MAX_MODEL_BYTES: u64 = 2 << 30;

/// A decoded model file.
#[derive(Debug)]
pub struct Model {
    /// The file, as the recipe names it.
    pub path: PathBuf,
    /// The decoded model.
    pub proto: ModelProto,
    /// The default-domain opset.
    pub opset: i64,
}

impl Model {
    /// Reads and decodes `path`, checks its opset and that every external
    /// data range is inside its file.
    pub fn open(path: &Path, loader: &dyn Loader) -> Result<Model, OnnxError> {
        let shown = path.display().to_string();
        let unreadable = |e: std::io::Error| OnnxError::Unreadable {
            path: shown.clone(),
            reason: e.to_string(),
        };
        let mut f = loader.open(path).map_err(unreadable)?;
        let size = f.seek(SeekFrom::End(0)).map_err(unreadable)?;
        if size > MAX_MODEL_BYTES {
            return Err(OnnxError::NotOnnx {
                path: shown,
                reason: format!("it is {size} bytes, more than a protobuf message can hold (2 GiB); export with `external_data=True`"),
            });
        }
        f.seek(SeekFrom::Start(0)).map_err(unreadable)?;
        let mut bytes = Vec::with_capacity(size as usize);
        f.read_to_end(&mut bytes).map_err(unreadable)?;
        let not = |reason: String| OnnxError::NotOnnx {
            path: shown.clone(),
            reason,
        };
        let proto = ModelProto::decode(&bytes[..])
            .map_err(|e| not(format!("it does not decode as an ONNX ModelProto ({e})")))?;
        let Some(graph) = &proto.graph else {
            return Err(not("it holds no graph".into()));
        };
        if graph.node.is_empty() {
            return Err(not("its graph has no nodes".into()));
        }
        let opset = proto
            .opset_import
            .iter()
            .find(|o| matches!(o.domain.as_deref(), None | Some("") | Some("ai.onnx")))
            .and_then(|o| o.version)
            .ok_or_else(|| not("it imports no default-domain opset".into()))?;
        if opset < MIN_OPSET {
            return Err(OnnxError::OldOpset {
                path: shown,
                opset,
                min: MIN_OPSET,
            });
        }
        let model = Model {
            path: path.to_path_buf(),
            proto,
            opset,
        };
        model.check_external(loader)?;
        Ok(model)
    }

    fn graph(&self) -> &super::proto::GraphProto {
        self.proto.graph.as_ref().expect("checked in open")
    }

    fn shown(&self) -> String {
        self.path.display().to_string()
    }

    /// Every external data range lies inside its file.
    fn check_external(&self, loader: &dyn Loader) -> Result<(), OnnxError> {
        let mut sizes: HashMap<String, u64> = HashMap::new();
        for t in &self.graph().initializer {
            let Some(ext) = self.external(t)? else {
                continue;
            };
            let size = match sizes.get(&ext.location) {
                Some(s) => *s,
                None => {
                    let s = loader
                        .open(&ext.file)
                        .and_then(|mut f| f.seek(SeekFrom::End(0)))
                        .map_err(|e| self.external_error(&ext.location, e.to_string()))?;
                    sizes.insert(ext.location.clone(), s);
                    s
                }
            };
            let need = byte_len(t).ok_or_else(|| self.bad_tensor(t, "an unsupported data type"))?;
            let length = ext.length.unwrap_or(need);
            if length != need {
                return Err(self.bad_tensor(
                    t,
                    &format!("its external data is {length} bytes, its shape needs {need}"),
                ));
            }
            if ext.offset.saturating_add(length) > size {
                return Err(self.external_error(
                    &ext.location,
                    format!(
                        "`{}` needs bytes {}..{} but the file has {size}",
                        t.name(),
                        ext.offset,
                        ext.offset.saturating_add(length)
                    ),
                ));
            }
        }
        Ok(())
    }

    fn external_error(&self, location: &str, reason: String) -> OnnxError {
        OnnxError::ExternalData {
            path: self.shown(),
            location: location.to_owned(),
            reason,
        }
    }

    /// A tensor the file holds but prunex cannot use.
    pub fn bad_tensor(&self, t: &TensorProto, reason: &str) -> OnnxError {
        OnnxError::Malformed {
            path: self.shown(),
            node: t.name().to_owned(),
            op: "initializer".into(),
            module: String::new(),
            reason: reason.to_owned(),
        }
    }

    /// Where a tensor's data lives, when outside the model file.
    fn external(&self, t: &TensorProto) -> Result<Option<External>, OnnxError> {
        if t.data_location != Some(super::proto::tensor_proto::DataLocation::External as i32) {
            return Ok(None);
        }
        let get = |k: &str| {
            t.external_data
                .iter()
                .find(|e| e.key() == k)
                .map(|e| e.value().to_owned())
        };
        let location = get("location")
            .ok_or_else(|| self.bad_tensor(t, "its external data names no location"))?;
        let rel = Path::new(&location);
        if rel.is_absolute()
            || rel
                .components()
                .any(|c| matches!(c, Component::ParentDir | Component::Prefix(_)))
        {
            return Err(self.external_error(
                &location,
                "external data must be a file beside the model (no absolute path or `..`)".into(),
            ));
        }
        let number = |k: &str| -> Result<Option<u64>, OnnxError> {
            get(k)
                .map(|v| {
                    v.parse::<u64>()
                        .map_err(|_| self.bad_tensor(t, &format!("its external `{k}` is `{v}`")))
                })
                .transpose()
        };
        Ok(Some(External {
            file: self.path.parent().unwrap_or(Path::new("")).join(rel),
            offset: number("offset")?.unwrap_or(0),
            length: number("length")?,
            location,
        }))
    }

    /// The values of a tensor (an initializer or a `Constant`'s value).
    pub fn tensor(&self, t: &TensorProto, loader: &dyn Loader) -> Result<Tensor, OnnxError> {
        let shape: Vec<usize> = t
            .dims
            .iter()
            .map(|&d| usize::try_from(d))
            .collect::<Result<_, _>>()
            .map_err(|_| self.bad_tensor(t, "a negative dimension"))?;
        let n = shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .ok_or_else(|| self.bad_tensor(t, "a shape too large to hold"))?;
        let dtype = DataType::try_from(t.data_type.unwrap_or(0)).unwrap_or(DataType::Undefined);
        let raw: Option<Vec<u8>> = match self.external(t)? {
            Some(ext) => {
                let len =
                    byte_len(t).ok_or_else(|| self.bad_tensor(t, "an unsupported data type"))?;
                let mut buf = vec![0u8; len as usize];
                loader
                    .open(&ext.file)
                    .and_then(|mut f| {
                        f.seek(SeekFrom::Start(ext.offset))?;
                        f.read_exact(&mut buf)
                    })
                    .map_err(|e| self.external_error(&ext.location, e.to_string()))?;
                Some(buf)
            }
            None => t.raw_data.clone(),
        };
        let data = match (dtype, raw) {
            (DataType::Float, Some(b)) => TensorData::F32(
                b.chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect(),
            ),
            (DataType::Float, None) => TensorData::F32(t.float_data.clone()),
            (DataType::Double, Some(b)) => TensorData::F32(
                b.chunks_exact(8)
                    .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")) as f32)
                    .collect(),
            ),
            (DataType::Double, None) => {
                TensorData::F32(t.double_data.iter().map(|&x| x as f32).collect())
            }
            (DataType::Float16, Some(b)) => TensorData::F32(
                b.chunks_exact(2)
                    .map(|c| f16_to_f32(u16::from_le_bytes([c[0], c[1]])))
                    .collect(),
            ),
            (DataType::Float16, None) => {
                TensorData::F32(t.int32_data.iter().map(|&x| f16_to_f32(x as u16)).collect())
            }
            (DataType::Int64, Some(b)) => TensorData::I64(
                b.chunks_exact(8)
                    .map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")))
                    .collect(),
            ),
            (DataType::Int64, None) => TensorData::I64(t.int64_data.clone()),
            (DataType::Int32, Some(b)) => TensorData::I64(
                b.chunks_exact(4)
                    .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as i64)
                    .collect(),
            ),
            (DataType::Int32 | DataType::Bool, None) => {
                TensorData::I64(t.int32_data.iter().map(|&x| x as i64).collect())
            }
            (DataType::Bool, Some(b)) => TensorData::I64(b.iter().map(|&x| x as i64).collect()),
            (other, _) => {
                return Err(self.bad_tensor(
                    t,
                    &format!(
                        "its data type {} is not one prunex reads",
                        other.as_str_name()
                    ),
                ))
            }
        };
        if data.len() != n {
            return Err(self.bad_tensor(
                t,
                &format!(
                    "it holds {} values but its shape {shape:?} needs {n}",
                    data.len()
                ),
            ));
        }
        Ok(Tensor { shape, data })
    }
}

/// A tensor's external data.
struct External {
    location: String,
    file: PathBuf,
    offset: u64,
    length: Option<u64>,
}

/// The bytes a tensor's values take, for the data types prunex reads.
fn byte_len(t: &TensorProto) -> Option<u64> {
    let per = match DataType::try_from(t.data_type.unwrap_or(0)).ok()? {
        DataType::Float | DataType::Int32 => 4,
        DataType::Double | DataType::Int64 => 8,
        DataType::Float16 => 2,
        DataType::Bool => 1,
        _ => return None,
    };
    t.dims
        .iter()
        .try_fold(per, |a: u64, &d| a.checked_mul(u64::try_from(d).ok()?))
}

/// IEEE half to single precision.
fn f16_to_f32(h: u16) -> f32 {
    let sign = u32::from(h >> 15) << 31;
    let exp = u32::from((h >> 10) & 0x1f);
    let frac = u32::from(h & 0x3ff);
    let bits = match (exp, frac) {
        (0, 0) => sign,
        (0, f) => {
            // Subnormal: normalise.
            let mut e = 127 - 15 + 1;
            let mut f = f;
            while f & 0x400 == 0 {
                f <<= 1;
                e -= 1;
            }
            sign | (e << 23) | ((f & 0x3ff) << 13)
        }
        (0x1f, f) => sign | 0x7f80_0000 | (f << 13),
        (e, f) => sign | ((e + 127 - 15) << 23) | (f << 13),
    };
    f32::from_bits(bits)
}
