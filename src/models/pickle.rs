//! Reading PyTorch `.pt` files without Python: the zip container that
//! `torch.save` writes, and the subset of the pickle protocol a saved
//! `state_dict` uses (an `OrderedDict` or a plain dict of tensors, possibly
//! inside a checkpoint dict). `tch` alone cannot read the default
//! `torch.save(model.state_dict())` file, which is why this exists.
//!
//! Nothing here executes pickled code: globals are only recognised by name
//! (`collections.OrderedDict`, `torch._utils._rebuild_tensor_v2`, the
//! storage types), everything else is kept as an inert value.

use std::collections::HashMap;
use std::io::Read;

use crate::tensor::{DType, Tensor, TensorData};

/// A pickled value, as far as a state_dict needs.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// `None`.
    None,
    /// A boolean.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A float.
    Float(f64),
    /// A string.
    Str(String),
    /// Bytes.
    Bytes(Vec<u8>),
    /// A tuple.
    Tuple(Vec<Value>),
    /// A list.
    List(Vec<Value>),
    /// A dict (order kept).
    Dict(Vec<(Value, Value)>),
    /// A global `module.name`, not resolved.
    Global(String, String),
    /// A call of a global on arguments, not executed.
    Call(Box<Value>, Box<Value>),
    /// A persistent id (torch's storage references).
    PersId(Box<Value>),
    /// A tensor rebuilt from its storage.
    Tensor(Tensor),
    /// A tensor's shape only (when storages are not read).
    Shape(Vec<usize>),
}

/// Why a `.pt` file could not be read.
#[derive(Debug, Clone, PartialEq)]
pub struct PickleError(pub String);

fn err<T>(msg: impl Into<String>) -> Result<T, PickleError> {
    Err(PickleError(msg.into()))
}

/// Reads a `torch.save` zip archive and returns its top-level value with
/// tensors materialised, or with only their shapes when `shapes_only`
/// (cheap: no storage is read).
pub fn read_torch_zip(bytes: &[u8], shapes_only: bool) -> Result<Value, PickleError> {
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bytes)).map_err(|e| {
        PickleError(format!("not a zip archive ({e}); files from torch.save before PyTorch 1.6 (the legacy format) are not supported: load and save them again with a current PyTorch"))
    })?;
    let names: Vec<String> = zip.file_names().map(str::to_owned).collect();
    let pkl = names
        .iter()
        .find(|n| n.ends_with("/data.pkl") || *n == "data.pkl")
        .ok_or_else(|| {
            PickleError("the archive has no data.pkl: it was not written by torch.save".into())
        })?
        .clone();
    let prefix = pkl.trim_end_matches("data.pkl").to_owned();
    let mut data = Vec::new();
    zip.by_name(&pkl)
        .and_then(|mut f| f.read_to_end(&mut data).map_err(Into::into))
        .map_err(|e| PickleError(format!("cannot read {pkl}: {e}")))?;
    let mut storages: HashMap<String, Vec<u8>> = HashMap::new();
    let mut load_storage = |key: &str, _need: u64| -> Result<Vec<u8>, PickleError> {
        if let Some(s) = storages.get(key) {
            return Ok(s.clone());
        }
        let name = format!("{prefix}data/{key}");
        let mut buf = Vec::new();
        zip.by_name(&name)
            .and_then(|mut f| f.read_to_end(&mut buf).map_err(Into::into))
            .map_err(|e| PickleError(format!("cannot read storage {name}: {e}")))?;
        storages.insert(key.to_owned(), buf.clone());
        Ok(buf)
    };
    let value = Unpickler::new(&data).run()?;
    if shapes_only {
        // No storage is read, but every tensor's storage entry must be there
        // and long enough for its offset, shape and strides.
        let sizes: HashMap<String, u64> = (0..zip.len())
            .filter_map(|i| {
                zip.by_index_raw(i)
                    .ok()
                    .map(|f| (f.name().to_owned(), f.size()))
            })
            .collect();
        let mut extent = |key: &str, need: u64| -> Result<Vec<u8>, PickleError> {
            let name = format!("{prefix}data/{key}");
            match sizes.get(&name) {
                None => err(format!("the archive has no storage {name}")),
                Some(&have) if have < need => err(format!(
                    "storage {name} holds {have} bytes but a tensor needs {need}: the archive is damaged"
                )),
                Some(_) => Ok(Vec::new()),
            }
        };
        return materialise(value, &mut extent, true);
    }
    materialise(value, &mut load_storage, false)
}

/// Replaces `_rebuild_tensor_v2(storage, offset, size, stride, ...)` calls
/// by tensors read from the archive, or by their shapes when `meta`.
fn materialise(v: Value, load: &mut LoadStorage<'_>, meta: bool) -> Result<Value, PickleError> {
    let all = |items: Vec<Value>, load: &mut LoadStorage<'_>| {
        items
            .into_iter()
            .map(|v| materialise(v, load, meta))
            .collect::<Result<Vec<_>, _>>()
    };
    Ok(match v {
        Value::Call(f, args) => {
            let args = materialise(*args, load, meta)?;
            let is =
                |name: &str| matches!(&*f, Value::Global(m, n) if m == "torch._utils" && n == name);
            match &args {
                Value::Tuple(a) if is("_rebuild_tensor_v2") && meta => {
                    let r = storage_ref(a)?;
                    load(&r.key, r.bytes_needed())?;
                    Value::Shape(r.shape)
                }
                Value::Tuple(a) if is("_rebuild_tensor_v2") => Value::Tensor(rebuild(a, load)?),
                Value::Tuple(a) if is("_rebuild_parameter") => {
                    a.first().cloned().unwrap_or(Value::None)
                }
                _ => Value::Call(f, Box::new(args)),
            }
        }
        Value::Dict(items) => Value::Dict(
            items
                .into_iter()
                .map(|(k, v)| Ok((k, materialise(v, load, meta)?)))
                .collect::<Result<_, PickleError>>()?,
        ),
        Value::Tuple(items) => Value::Tuple(all(items, load)?),
        Value::List(items) => Value::List(all(items, load)?),
        other => other,
    })
}

fn as_usizes(v: &Value) -> Option<Vec<usize>> {
    match v {
        Value::Tuple(items) | Value::List(items) => items
            .iter()
            .map(|x| match x {
                Value::Int(i) if *i >= 0 => Some(*i as usize),
                _ => None,
            })
            .collect(),
        _ => None,
    }
}

/// Reads a storage by key (full reading), or checks that it holds the given
/// number of bytes and returns nothing (shape-only reading).
type LoadStorage<'a> = dyn FnMut(&str, u64) -> Result<Vec<u8>, PickleError> + 'a;

/// What `_rebuild_tensor_v2` reads: a storage, an offset into it, a shape
/// and strides.
struct StorageRef {
    key: String,
    dtype: DType,
    offset: usize,
    shape: Vec<usize>,
    strides: Vec<usize>,
}

impl StorageRef {
    /// Bytes of its storage the tensor reaches.
    fn bytes_needed(&self) -> u64 {
        if self.shape.contains(&0) {
            return 0;
        }
        let last: u64 = self
            .shape
            .iter()
            .zip(&self.strides)
            .map(|(&n, &s)| (n as u64 - 1).saturating_mul(s as u64))
            .fold(self.offset as u64, u64::saturating_add);
        last.saturating_add(1)
            .saturating_mul(self.dtype.size() as u64)
    }
}

fn storage_ref(a: &[Value]) -> Result<StorageRef, PickleError> {
    let (Some(Value::PersId(pid)), Some(Value::Int(offset)), Some(size), Some(stride)) =
        (a.first(), a.get(1), a.get(2), a.get(3))
    else {
        return err("a tensor record has an unexpected layout");
    };
    let Value::Tuple(pid) = &**pid else {
        return err("a storage reference has an unexpected layout");
    };
    let (Some(Value::Global(_, storage_type)), Some(Value::Str(key))) = (pid.get(1), pid.get(2))
    else {
        return err("a storage reference has an unexpected layout");
    };
    let dtype = match storage_type.as_str() {
        "FloatStorage" => DType::F32,
        "DoubleStorage" => DType::F64,
        "HalfStorage" => DType::F16,
        "BFloat16Storage" => DType::BF16,
        "LongStorage" => DType::I64,
        "IntStorage" => DType::I32,
        other => return err(format!("tensors of storage type {other} are not supported (use float32, float64, float16, bfloat16, int64 or int32)")),
    };
    let shape = as_usizes(size)
        .ok_or_else(|| PickleError("a tensor size is not a tuple of integers".into()))?;
    let strides = as_usizes(stride)
        .ok_or_else(|| PickleError("a tensor stride is not a tuple of integers".into()))?;
    Ok(StorageRef {
        key: key.clone(),
        dtype,
        offset: usize::try_from(*offset)
            .map_err(|_| PickleError("a tensor offset is negative".into()))?,
        shape,
        strides,
    })
}

fn rebuild(a: &[Value], load: &mut LoadStorage<'_>) -> Result<Tensor, PickleError> {
    let r = storage_ref(a)?;
    let raw = load(&r.key, r.bytes_needed())?;
    let StorageRef {
        key,
        dtype,
        offset,
        shape,
        strides,
    } = r;
    let width = dtype.size();
    let numel: usize = shape.iter().product();
    // Gather element by element in row-major order, honouring strides
    // (a saved view need not be contiguous).
    let mut out = Vec::with_capacity(numel * width);
    let mut index = vec![0usize; shape.len()];
    for _ in 0..numel {
        let at = offset
            + index
                .iter()
                .zip(&strides)
                .map(|(i, s)| i * s)
                .sum::<usize>();
        let bytes = raw
            .get(at * width..(at + 1) * width)
            .ok_or_else(|| PickleError(format!("storage {key} is shorter than its tensor")))?;
        out.extend_from_slice(bytes);
        for d in (0..shape.len()).rev() {
            index[d] += 1;
            if index[d] < shape[d] {
                break;
            }
            index[d] = 0;
        }
    }
    Ok(Tensor {
        shape,
        data: TensorData::from_le_bytes(dtype, &out),
    })
}

struct Unpickler<'a> {
    data: &'a [u8],
    pos: usize,
    stack: Vec<Value>,
    marks: Vec<usize>,
    memo: HashMap<u32, Value>,
}

impl<'a> Unpickler<'a> {
    fn new(data: &'a [u8]) -> Self {
        Unpickler {
            data,
            pos: 0,
            stack: Vec::new(),
            marks: Vec::new(),
            memo: HashMap::new(),
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], PickleError> {
        let s = self
            .data
            .get(self.pos..self.pos + n)
            .ok_or_else(|| PickleError("the pickle ends early".into()))?;
        self.pos += n;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8, PickleError> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, PickleError> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }

    fn line(&mut self) -> Result<String, PickleError> {
        let rest = &self.data[self.pos..];
        let n = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or_else(|| PickleError("a text field is unterminated".into()))?;
        let s = String::from_utf8_lossy(&rest[..n]).into_owned();
        self.pos += n + 1;
        Ok(s)
    }

    fn pop(&mut self) -> Result<Value, PickleError> {
        self.stack
            .pop()
            .ok_or_else(|| PickleError("the pickle pops an empty stack".into()))
    }

    fn pop_mark(&mut self) -> Result<Vec<Value>, PickleError> {
        let m = self
            .marks
            .pop()
            .ok_or_else(|| PickleError("the pickle has no mark to pop".into()))?;
        if m > self.stack.len() {
            return err("the pickle's mark is past the stack");
        }
        Ok(self.stack.split_off(m))
    }

    fn top(&mut self) -> Result<&mut Value, PickleError> {
        self.stack
            .last_mut()
            .ok_or_else(|| PickleError("the pickle's stack is empty".into()))
    }

    fn string(bytes: &[u8]) -> Value {
        Value::Str(String::from_utf8_lossy(bytes).into_owned())
    }

    fn set_items(&mut self, items: Vec<Value>) -> Result<(), PickleError> {
        let mut pairs = Vec::new();
        let mut it = items.into_iter();
        while let (Some(k), Some(v)) = (it.next(), it.next()) {
            pairs.push((k, v));
        }
        match self.top()? {
            Value::Dict(d) => {
                d.extend(pairs);
                Ok(())
            }
            _ => err("the pickle sets items on something that is not a dict"),
        }
    }

    fn run(mut self) -> Result<Value, PickleError> {
        loop {
            let op = self.u8()?;
            match op {
                0x80 => {
                    self.u8()?;
                } // PROTO
                0x95 => {
                    self.take(8)?;
                } // FRAME
                b'.' => return self.pop(),
                b'(' => self.marks.push(self.stack.len()),
                b'}' => self.stack.push(Value::Dict(Vec::new())),
                b']' => self.stack.push(Value::List(Vec::new())),
                b')' => self.stack.push(Value::Tuple(Vec::new())),
                b'N' => self.stack.push(Value::None),
                0x88 => self.stack.push(Value::Bool(true)),
                0x89 => self.stack.push(Value::Bool(false)),
                b'K' => {
                    let v = self.u8()? as i64;
                    self.stack.push(Value::Int(v))
                }
                b'M' => {
                    let b = self.take(2)?;
                    self.stack.push(Value::Int(u16::from_le_bytes([b[0], b[1]]) as i64))
                }
                b'J' => {
                    let b = self.take(4)?;
                    self.stack.push(Value::Int(i32::from_le_bytes(b.try_into().expect("4 bytes")) as i64))
                }
                0x8a => {
                    // LONG1: little-endian two's complement of n bytes.
                    let n = self.u8()? as usize;
                    let b = self.take(n)?;
                    if n > 8 {
                        return err("an integer in the pickle is too large");
                    }
                    let mut buf = if b.last().is_some_and(|&x| x & 0x80 != 0) { [0xffu8; 8] } else { [0u8; 8] };
                    buf[..n].copy_from_slice(b);
                    self.stack.push(Value::Int(i64::from_le_bytes(buf)))
                }
                b'G' => {
                    let b = self.take(8)?;
                    self.stack.push(Value::Float(f64::from_be_bytes(b.try_into().expect("8 bytes"))))
                }
                b'X' => {
                    let n = self.u32()? as usize;
                    let b = self.take(n)?;
                    self.stack.push(Self::string(b))
                }
                0x8c => {
                    let n = self.u8()? as usize;
                    let b = self.take(n)?;
                    self.stack.push(Self::string(b))
                }
                0x8d => {
                    let b = self.take(8)?;
                    let n = u64::from_le_bytes(b.try_into().expect("8 bytes")) as usize;
                    let b = self.take(n)?;
                    self.stack.push(Self::string(b))
                }
                b'C' => {
                    let n = self.u8()? as usize;
                    let b = self.take(n)?.to_vec();
                    self.stack.push(Value::Bytes(b))
                }
                b'B' => {
                    let n = self.u32()? as usize;
                    let b = self.take(n)?.to_vec();
                    self.stack.push(Value::Bytes(b))
                }
                b'q' => {
                    let k = self.u8()? as u32;
                    let v = self.top()?.clone();
                    self.memo.insert(k, v);
                }
                b'r' => {
                    let k = self.u32()?;
                    let v = self.top()?.clone();
                    self.memo.insert(k, v);
                }
                0x94 => {
                    let k = self.memo.len() as u32;
                    let v = self.top()?.clone();
                    self.memo.insert(k, v);
                }
                b'h' => {
                    let k = self.u8()? as u32;
                    let v = self.memo.get(&k).cloned().ok_or_else(|| PickleError("the pickle reads an unknown memo entry".into()))?;
                    self.stack.push(v)
                }
                b'j' => {
                    let k = self.u32()?;
                    let v = self.memo.get(&k).cloned().ok_or_else(|| PickleError("the pickle reads an unknown memo entry".into()))?;
                    self.stack.push(v)
                }
                b'c' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    self.stack.push(Value::Global(module, name))
                }
                0x93 => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    match (module, name) {
                        (Value::Str(m), Value::Str(n)) => self.stack.push(Value::Global(m, n)),
                        _ => return err("a global is not named by strings"),
                    }
                }
                b't' => {
                    let items = self.pop_mark()?;
                    self.stack.push(Value::Tuple(items))
                }
                0x85..=0x87 => {
                    let n = (op - 0x84) as usize;
                    if self.stack.len() < n {
                        return err("the pickle builds a tuple from too few values");
                    }
                    let items = self.stack.split_off(self.stack.len() - n);
                    self.stack.push(Value::Tuple(items))
                }
                b'l' => {
                    let items = self.pop_mark()?;
                    self.stack.push(Value::List(items))
                }
                b'd' => {
                    let items = self.pop_mark()?;
                    self.stack.push(Value::Dict(Vec::new()));
                    self.set_items(items)?;
                }
                b'a' => {
                    let v = self.pop()?;
                    match self.top()? {
                        Value::List(l) => l.push(v),
                        _ => return err("the pickle appends to something that is not a list"),
                    }
                }
                b'e' => {
                    let items = self.pop_mark()?;
                    match self.top()? {
                        Value::List(l) => l.extend(items),
                        _ => return err("the pickle appends to something that is not a list"),
                    }
                }
                b's' => {
                    let v = self.pop()?;
                    let k = self.pop()?;
                    self.set_items(vec![k, v])?;
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    self.set_items(items)?;
                }
                b'R' | 0x81 => {
                    let args = self.pop()?;
                    let f = self.pop()?;
                    // An OrderedDict is just a dict here, so SETITEMS can fill it.
                    let v = match &f {
                        Value::Global(m, n) if m == "collections" && n == "OrderedDict" => Value::Dict(Vec::new()),
                        _ => Value::Call(Box::new(f), Box::new(args)),
                    };
                    self.stack.push(v)
                }
                b'b' => {
                    // BUILD sets object state (a state_dict's `_metadata`); ignored.
                    self.pop()?;
                }
                b'Q' => {
                    let pid = self.pop()?;
                    self.stack.push(Value::PersId(Box::new(pid)))
                }
                other => return err(format!("unsupported pickle opcode 0x{other:02x}; the file holds more than a state_dict")),
            }
        }
    }
}
