//! Why an ONNX file could not be imported (`prunex::onnx::*`).

use miette::Diagnostic;
use thiserror::Error;

/// How to export so that prunex imports everything.
pub const EXPORT_HELP: &str = "export with `torch.onnx.export(model.eval(), (x,), \"net.onnx\", optimize=False)` (torch 2.x), or with `dynamo=False, do_constant_folding=False`; see docs/models.md";

/// An ONNX file prunex cannot import.
#[derive(Debug, Error, Diagnostic)]
pub enum OnnxError {
    /// The file cannot be read.
    #[error("cannot read `{path}`: {reason}")]
    #[diagnostic(
        code(prunex::onnx::unreadable),
        help("check the path; model paths in a recipe are relative to the recipe's folder")
    )]
    Unreadable {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// Not an ONNX model.
    #[error("`{path}` is not an ONNX model: {reason}")]
    #[diagnostic(code(prunex::onnx::not_onnx), help("{EXPORT_HELP}"))]
    NotOnnx {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// An opset older than prunex reads.
    #[error("`{path}` uses ONNX opset {opset}; prunex reads opset {min} and later")]
    #[diagnostic(
        code(prunex::onnx::old_opset),
        help("export again with `opset_version=18` (torch 2.x's default), or convert it with `onnx.version_converter.convert_version(model, 18)`")
    )]
    OldOpset {
        /// The file.
        path: String,
        /// Its opset.
        opset: i64,
        /// The oldest prunex reads.
        min: i64,
    },
    /// External data that is missing or too short.
    #[error("the weights of `{path}` are in `{location}`, which cannot be read: {reason}")]
    #[diagnostic(
        code(prunex::onnx::external_data),
        help("keep the `.onnx.data` file the exporter wrote beside the `.onnx` file (same folder, same name), or export with `external_data=False`")
    )]
    ExternalData {
        /// The model file.
        path: String,
        /// The data file, as the model names it.
        location: String,
        /// Why.
        reason: String,
    },
    /// Operators prunex does not understand.
    #[error("`{path}` uses operators prunex does not import: {ops}")]
    #[diagnostic(code(prunex::onnx::unsupported_op), help("{help}"))]
    Unsupported {
        /// The file.
        path: String,
        /// Each operator with its count and first node and module.
        ops: String,
        /// What to do.
        help: String,
    },
    /// A graph prunex cannot use as a whole (its inputs, outputs, layers).
    #[error("`{path}`: {reason}")]
    #[diagnostic(code(prunex::onnx::bad_graph), help("prunex imports classifiers: one image input `[N, C, H, W]` of a fixed size, one output (the logits), layers between; {EXPORT_HELP}"))]
    BadGraph {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// A node prunex understands, used in a way it does not.
    #[error("`{path}`: node `{node}` ({op}, module `{module}`): {reason}")]
    #[diagnostic(code(prunex::onnx::malformed), help("{EXPORT_HELP}"))]
    Malformed {
        /// The file.
        path: String,
        /// The node.
        node: String,
        /// Its operator.
        op: String,
        /// Its module path, when known.
        module: String,
        /// What is wrong.
        reason: String,
    },
}
