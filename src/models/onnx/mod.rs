//! ONNX models in and out: a file written by `torch.onnx.export` (the dynamo
//! exporter of torch 2.x or the TorchScript one) becomes a model graph whose
//! layers carry PyTorch's module paths, and its initializers the weights,
//! keyed as the module's `state_dict` would be.
//!
//! - `proto`: ONNX's protobuf types, generated from `proto/onnx.proto`.
//! - [`read`]: decoding, the opset, tensors (inline or in external data
//!   files), all through the checker's [`Loader`].
//! - [`lower`]: ONNX nodes to graph operations. Shape arithmetic the
//!   exporters leave in (`Shape`, `Expand`, `Concat` of constants) is
//!   evaluated; module paths come from initializer names, the dynamo
//!   exporter's `name_scopes` metadata or the TorchScript exporter's node
//!   names.
//! - [`write`]: a graph and its weights back out as ONNX (`model.onnx`).

mod error;
pub mod lower;
pub mod read;
pub mod write;

/// ONNX's protobuf messages.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/onnx.rs"));
}

pub use error::OnnxError;
pub use write::{to_onnx, to_onnx_files, OnnxFiles, MAX_BYTES};

use std::path::Path;

use crate::graph::Graph;
use crate::syntax::Loader;
use crate::tensor::StateDict;

/// Whether a model source or weights path names an ONNX file (ONNX has
/// no magic number: the extension says it).
pub fn is_onnx(path: impl AsRef<Path>) -> bool {
    path.as_ref()
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("onnx"))
}

/// An imported model.
#[derive(Clone, Debug)]
pub struct Imported {
    /// The graph.
    pub graph: Graph,
    /// What the import changed or could not recover (folded BatchNorm,
    /// anonymous initializers named after their module), for `inspect`.
    pub notes: Vec<String>,
    /// Where each parameter of the graph comes from, by `state_dict` key.
    pub sources: Vec<(String, ParamSource)>,
}

/// Where a parameter's values are.
#[derive(Clone, Debug)]
pub enum ParamSource {
    /// An initializer, by name.
    Init(String),
    /// A constant the import computed (`num_batches_tracked`, a folded
    /// expression).
    Const(crate::tensor::Tensor),
    /// A 2-D initializer, by name, stored transposed (the TorchScript
    /// exporter writes a linear layer's `Wᵀ` for `MatMul`).
    Transposed(String),
}

/// Imports the graph of the ONNX file at `path`; weights are not read.
pub fn import(path: &Path, loader: &dyn Loader) -> Result<Imported, OnnxError> {
    let model = read::Model::open(path, loader)?;
    lower::lower(&model, loader)
}

/// The graph and its weights (`state_dict` keys), reading the initializers'
/// data, external data files included.
pub fn import_weights(
    path: &Path,
    loader: &dyn Loader,
) -> Result<(Imported, StateDict), OnnxError> {
    let model = read::Model::open(path, loader)?;
    let imported = lower::lower(&model, loader)?;
    let weights = lower::weights(&model, &imported, loader)?;
    Ok((imported, weights))
}
