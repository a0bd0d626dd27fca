//! Weights in plain Rust: a `state_dict` read from safetensors or from a
//! `.pt` file saved by `torch.save`, checked against the model graph, and
//! written back as safetensors with PyTorch's key names.

use std::collections::BTreeMap;
use std::path::Path;

use miette::Diagnostic;
use thiserror::Error;

use crate::graph::Graph;

pub use crate::tensor::{DType, StateDict, Tensor, TensorData};

/// What went wrong reading or matching weights.
#[derive(Debug, Error, Diagnostic)]
pub enum WeightsError {
    /// The file cannot be read or is not a weights file prunex knows.
    #[error("cannot read weights `{path}`: {reason}")]
    #[diagnostic(code(prunex::weights::unreadable), help("{help}"))]
    Unreadable {
        /// The file.
        path: String,
        /// Why.
        reason: String,
        /// The fix.
        help: String,
    },
    /// The keys or shapes do not fit the model.
    #[error("weights `{path}` do not fit `{model}`: {summary}")]
    #[diagnostic(code(prunex::weights::mismatch), help("{details}"))]
    Mismatch {
        /// The file.
        path: String,
        /// The model.
        model: String,
        /// Counts of each kind of problem.
        summary: String,
        /// One line per key, with the nearest expected name.
        details: String,
    },
}

/// Reads safetensors bytes.
pub fn read_safetensors(bytes: &[u8]) -> Result<StateDict, String> {
    let st = safetensors::SafeTensors::deserialize(bytes).map_err(|e| e.to_string())?;
    let mut out = StateDict::new();
    for (name, view) in st.tensors() {
        let dtype = match view.dtype() {
            safetensors::Dtype::F32 => DType::F32,
            safetensors::Dtype::F64 => DType::F64,
            safetensors::Dtype::F16 => DType::F16,
            safetensors::Dtype::BF16 => DType::BF16,
            safetensors::Dtype::I64 => DType::I64,
            safetensors::Dtype::I32 => DType::I32,
            other => {
                return Err(format!(
                    "tensor `{name}` has type {other:?}, which prunex does not read"
                ))
            }
        };
        out.insert(
            name,
            Tensor {
                shape: view.shape().to_vec(),
                data: TensorData::from_le_bytes(dtype, view.data()),
            },
        );
    }
    Ok(out)
}

/// Encodes a state_dict as safetensors (float32, and int64 for integer
/// buffers), keys in PyTorch's names.
pub fn to_safetensors(sd: &StateDict) -> Vec<u8> {
    let bytes: Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)> = sd
        .iter()
        .map(|(k, t)| match &t.data {
            TensorData::F32(v) => (
                k.clone(),
                safetensors::Dtype::F32,
                t.shape.clone(),
                v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            ),
            TensorData::I64(v) => (
                k.clone(),
                safetensors::Dtype::I64,
                t.shape.clone(),
                v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            ),
        })
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = bytes
        .iter()
        .map(|(k, d, s, b)| {
            (
                k.clone(),
                safetensors::tensor::TensorView::new(*d, s.clone(), b).expect("sizes agree"),
            )
        })
        .collect();
    safetensors::serialize(views, None).expect("safetensors serialization")
}

/// What a weights file holds: the values, or only the shapes.
trait Entry: Sized {
    fn from_value(v: &super::pickle::Value) -> Option<Self>;
}

impl Entry for Tensor {
    fn from_value(v: &super::pickle::Value) -> Option<Self> {
        match v {
            super::pickle::Value::Tensor(t) => Some(t.clone()),
            _ => None,
        }
    }
}

impl Entry for Vec<usize> {
    fn from_value(v: &super::pickle::Value) -> Option<Self> {
        match v {
            super::pickle::Value::Shape(s) => Some(s.clone()),
            _ => None,
        }
    }
}

/// Finds the state_dict in an unpickled `torch.save` value: an
/// `OrderedDict` or plain dict of tensors, or a checkpoint dict holding one
/// under `state_dict`, `model`, `model_state_dict` or `net`.
fn find_state_dict<T: Entry>(
    value: super::pickle::Value,
    notes: &mut Vec<String>,
) -> Result<BTreeMap<String, T>, String> {
    use super::pickle::Value;
    fn entries<T: Entry>(items: &[(Value, Value)]) -> Option<BTreeMap<String, T>> {
        let mut sd = BTreeMap::new();
        for (k, v) in items {
            match (k, T::from_value(v)) {
                (Value::Str(k), Some(t)) => {
                    sd.insert(k.clone(), t);
                }
                _ => return None,
            }
        }
        (!sd.is_empty()).then_some(sd)
    }
    let Value::Dict(items) = value else {
        return Err("the file holds a whole pickled object, not a state_dict; save `model.state_dict()` instead of the model".into());
    };
    if let Some(sd) = entries(&items) {
        return Ok(sd);
    }
    for key in ["state_dict", "model", "model_state_dict", "net"] {
        if let Some((_, Value::Dict(inner))) =
            items.iter().find(|(k, _)| *k == Value::Str(key.into()))
        {
            if let Some(sd) = entries(inner) {
                notes.push(format!(
                    "read the state_dict under the checkpoint key `{key}`"
                ));
                return Ok(sd);
            }
        }
    }
    Err("the file is a dict, but not of tensors (nor a checkpoint with a `state_dict` or `model` entry)".into())
}

/// Reads a `.pt` file written by `torch.save`.
pub fn read_torch(bytes: &[u8]) -> Result<(StateDict, Vec<String>), String> {
    let value = super::pickle::read_torch_zip(bytes, false).map_err(|e| e.0)?;
    let mut notes = Vec::new();
    let sd = find_state_dict(value, &mut notes)?;
    Ok((sd, notes))
}

/// Shapes by key.
pub type Shapes = BTreeMap<String, Vec<usize>>;

/// Reads only the keys and shapes of a weights file: the safetensors header
/// or the pickle of a `.pt` file, never the tensor data, so checking a
/// recipe's weights costs milliseconds whatever their size.
pub fn read_shapes(path: &Path) -> Result<(Shapes, Vec<String>), WeightsError> {
    read_shapes_with(path, &crate::syntax::FsLoader)
}

/// [`read_shapes`], opening the file through `loader`.
pub fn read_shapes_with(
    path: &Path,
    loader: &dyn crate::syntax::Loader,
) -> Result<(Shapes, Vec<String>), WeightsError> {
    use std::io::Read;
    let shown = path.display().to_string();
    if super::onnx::is_onnx(path) {
        // An ONNX model's initializers: their shapes are the graph's.
        let imported = super::onnx::import(path, loader).map_err(|e| onnx_unreadable(path, e))?;
        let shapes = imported.graph.state_keys().into_iter().collect::<Shapes>();
        return Ok((shapes, imported.notes));
    }
    let unreadable = |reason: String| WeightsError::Unreadable {
        path: shown.clone(),
        reason,
        help:
            "prunex reads safetensors and `.pt` files from `torch.save(model.state_dict(), path)`"
                .into(),
    };
    let mut file = loader.open(path).map_err(|e| WeightsError::Unreadable {
        path: shown.clone(),
        reason: e.to_string(),
        help: "check the path; weights paths in a recipe are relative to the recipe's folder"
            .into(),
    })?;
    let mut head = [0u8; 8];
    file.read_exact(&mut head)
        .map_err(|e| unreadable(e.to_string()))?;
    let mut notes = Vec::new();
    if head.starts_with(b"PK") {
        let mut bytes = head.to_vec();
        file.read_to_end(&mut bytes)
            .map_err(|e| unreadable(e.to_string()))?;
        let value = super::pickle::read_torch_zip(&bytes, true).map_err(|e| unreadable(e.0))?;
        let shapes = find_state_dict(value, &mut notes).map_err(unreadable)?;
        return Ok((strip_prefixes(shapes, &mut notes), notes));
    }
    if head[0] == 0x80 && head[1] <= 5 {
        // A pickle stream opens with PROTO: `torch.save` before PyTorch 1.6
        // (or with `_use_new_zipfile_serialization=False`).
        return Err(WeightsError::Unreadable {
            path: shown.clone(),
            reason: "it is a legacy torch.save file (the format before PyTorch 1.6), which prunex does not read".into(),
            help: "re-save it with a current PyTorch: `torch.save(torch.load(path, weights_only=True), path)`, or as safetensors".into(),
        });
    }
    let n = u64::from_le_bytes(head) as usize;
    if n > 100_000_000 {
        return Err(unreadable(
            "not a safetensors file (its header length is implausible)".into(),
        ));
    }
    let mut header = vec![0u8; n];
    file.read_exact(&mut header)
        .map_err(|e| unreadable(format!("not a safetensors file ({e})")))?;
    let json: serde_json::Value = serde_json::from_slice(&header)
        .map_err(|e| unreadable(format!("not a safetensors file ({e})")))?;
    let damaged = |reason: String| {
        WeightsError::Unreadable {
        path: shown.clone(),
        reason,
        help: "the file is damaged or was not written to the end: save it again (`safetensors.torch.save_file(model.state_dict(), path)`)".into(),
    }
    };
    // The data after the header, which every tensor's range must lie in.
    let data_len = {
        use std::io::{Seek, SeekFrom};
        let end = file
            .seek(SeekFrom::End(0))
            .map_err(|e| unreadable(e.to_string()))?;
        end.saturating_sub(8 + n as u64)
    };
    let mut shapes = Shapes::new();
    let mut ranges: Vec<(u64, u64, &str)> = Vec::new();
    for (k, v) in json.as_object().into_iter().flatten() {
        if k == "__metadata__" {
            continue;
        }
        let shape = v["shape"]
            .as_array()
            .and_then(|a| {
                a.iter()
                    .map(|d| d.as_u64().map(|d| d as usize))
                    .collect::<Option<Vec<_>>>()
            })
            .ok_or_else(|| unreadable(format!("the header entry of `{k}` has no shape")))?;
        let size = safetensors_dtype_size(v["dtype"].as_str().unwrap_or("")).ok_or_else(|| {
            unreadable(format!(
                "`{k}` has dtype {}, which prunex does not read",
                v["dtype"]
            ))
        })?;
        let (b, e) = match v["data_offsets"].as_array().map(|a| {
            (
                a.first().and_then(|x| x.as_u64()),
                a.get(1).and_then(|x| x.as_u64()),
            )
        }) {
            Some((Some(b), Some(e))) if b <= e => (b, e),
            _ => {
                return Err(unreadable(format!(
                    "the header entry of `{k}` has no valid data_offsets"
                )))
            }
        };
        // Saturating: a damaged header may claim any shape.
        let numel = shape.iter().fold(1u64, |a, &d| a.saturating_mul(d as u64));
        if e - b != numel.saturating_mul(size) {
            return Err(damaged(format!(
                "`{k}` is {shape:?} of {}-byte values ({} bytes) but its data range [{b}, {e}) holds {}",
                size,
                numel.saturating_mul(size),
                e - b
            )));
        }
        if e > data_len {
            return Err(damaged(format!(
                "`{k}`'s data ends at byte {e} but the file holds {data_len} bytes of data: it is truncated"
            )));
        }
        ranges.push((b, e, k));
        shapes.insert(k.clone(), shape);
    }
    // The tensors tile the data exactly, as the safetensors format (and
    // so the run's reader) requires: no overlap, no gap, nothing after.
    ranges.sort();
    let mut at = 0;
    for (k, &(b, e, name)) in ranges.iter().enumerate() {
        if b < at {
            let (pb, pe, prev) = ranges[k - 1];
            return Err(damaged(format!(
                "the data of `{prev}` [{pb}, {pe}) and `{name}` [{b}, {e}) overlap"
            )));
        }
        if b > at {
            return Err(damaged(format!(
                "bytes [{at}, {b}) of the data belong to no tensor (before `{name}`)"
            )));
        }
        at = e;
    }
    if at != data_len {
        return Err(damaged(format!(
            "the file holds {} bytes after the last tensor's data",
            data_len - at
        )));
    }
    Ok((strip_prefixes(shapes, &mut notes), notes))
}

/// Reads weights from a file: safetensors, or `.pt`/`.pth` from `torch.save`
/// (told apart by content, not by name). Returns notes for the user
/// (prefixes stripped, checkpoint keys used).
pub fn read(path: &Path) -> Result<(StateDict, Vec<String>), WeightsError> {
    let shown = path.display().to_string();
    if super::onnx::is_onnx(path) {
        let (imported, sd) = super::onnx::import_weights(path, &crate::syntax::FsLoader)
            .map_err(|e| onnx_unreadable(path, e))?;
        return Ok((sd, imported.notes));
    }
    let bytes = std::fs::read(path).map_err(|e| WeightsError::Unreadable {
        path: shown.clone(),
        reason: e.to_string(),
        help: "check the path; weights paths in a recipe are relative to the recipe's folder"
            .into(),
    })?;
    let result = if bytes.starts_with(b"PK") {
        read_torch(&bytes)
    } else {
        read_safetensors(&bytes).map(|sd| (sd, Vec::new()))
    };
    result.map_err(|reason| WeightsError::Unreadable {
        path: shown,
        reason,
        help:
            "prunex reads safetensors and `.pt` files from `torch.save(model.state_dict(), path)`"
                .into(),
    })
}

/// An ONNX file's problem, as a weights diagnostic.
fn onnx_unreadable(path: &Path, e: super::onnx::OnnxError) -> WeightsError {
    WeightsError::Unreadable {
        path: path.display().to_string(),
        reason: e.to_string(),
        help: miette::Diagnostic::help(&e)
            .map(|h| h.to_string())
            .unwrap_or_default(),
    }
}

/// Strips the `module.` prefix of DataParallel/DistributedDataParallel and
/// the `_orig_mod.` prefix of `torch.compile`, when every key has it.
pub fn strip_prefixes<T>(sd: BTreeMap<String, T>, notes: &mut Vec<String>) -> BTreeMap<String, T> {
    let mut sd = sd;
    for (prefix, why) in [
        ("module.", "DataParallel/DistributedDataParallel"),
        ("_orig_mod.", "torch.compile"),
    ] {
        if !sd.is_empty() && sd.keys().all(|k| k.starts_with(prefix)) {
            sd = sd
                .into_iter()
                .map(|(k, v)| (k[prefix.len()..].to_owned(), v))
                .collect();
            notes.push(format!(
                "stripped the `{prefix}` prefix that {why} adds to every key"
            ));
        }
    }
    sd
}

/// Checks that a state_dict has exactly the keys and shapes `graph`
/// expects; every problem is listed in one diagnostic.
pub fn check(sd: &StateDict, graph: &Graph, path: &str) -> Result<(), WeightsError> {
    let shapes: Shapes = sd
        .iter()
        .map(|(k, t)| (k.clone(), t.shape.clone()))
        .collect();
    check_shapes(&shapes, graph, path)
}

/// [`check`] on keys and shapes alone.
pub fn check_shapes(sd: &Shapes, graph: &Graph, path: &str) -> Result<(), WeightsError> {
    let expected = graph.state_keys();
    let names: Vec<&str> = expected.iter().map(|(k, _)| k.as_str()).collect();
    let mut missing = Vec::new();
    let mut wrong = Vec::new();
    for (key, shape) in &expected {
        match sd.get(key) {
            None => missing.push(key.as_str()),
            Some(t) if t != shape => wrong.push(format!(
                "`{key}` has shape {t:?}, the model needs {shape:?}"
            )),
            Some(_) => {}
        }
    }
    let unexpected: Vec<String> = sd
        .keys()
        .filter(|k| !names.contains(&k.as_str()))
        .map(|k| {
            let near = names
                .iter()
                .map(|n| (strsim::levenshtein(k, n), n))
                .min_by_key(|(d, _)| *d)
                .filter(|(d, n)| *d <= n.len() / 2)
                .map(|(_, n)| format!(" (nearest expected: `{n}`)"))
                .unwrap_or_default();
            format!("`{k}` is not a key of the model{near}")
        })
        .collect();
    if missing.is_empty() && wrong.is_empty() && unexpected.is_empty() {
        return Ok(());
    }
    let mut parts = Vec::new();
    let mut details = Vec::new();
    if !missing.is_empty() {
        parts.push(format!("{} missing", missing.len()));
        details.extend(missing.iter().map(|k| format!("`{k}` is missing")));
    }
    if !wrong.is_empty() {
        parts.push(format!("{} with the wrong shape", wrong.len()));
        details.extend(wrong);
    }
    if !unexpected.is_empty() {
        parts.push(format!("{} unexpected", unexpected.len()));
        details.extend(unexpected);
    }
    let shown = 20;
    let extra = details.len().saturating_sub(shown);
    let mut details: Vec<String> = details.into_iter().take(shown).collect();
    if extra > 0 {
        details.push(format!("... and {extra} more"));
    }
    details.push(
        "were these weights saved from this model, with the same input channels and classes?"
            .into(),
    );
    Err(WeightsError::Mismatch {
        path: path.to_owned(),
        model: graph.name.clone(),
        summary: parts.join(", "),
        details: details.join("\n"),
    })
}

/// Reads, normalises and checks the weights of `graph` from `path`.
pub fn load_for(path: &Path, graph: &Graph) -> Result<(StateDict, Vec<String>), WeightsError> {
    let (sd, mut notes) = read(path)?;
    let sd = strip_prefixes(sd, &mut notes);
    check(&sd, graph, &path.display().to_string())?;
    Ok((sd, notes))
}

/// Bytes per element of a safetensors dtype prunex reads.
fn safetensors_dtype_size(dtype: &str) -> Option<u64> {
    Some(match dtype {
        "F64" | "I64" => 8,
        "F32" | "I32" => 4,
        "F16" | "BF16" => 2,
        _ => return None,
    })
}
