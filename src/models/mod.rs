//! Models: the built-in zoo, user descriptions in YAML, and weights
//! (safetensors and `.pt`) — all plain Rust, no libtorch.

pub mod onnx;
mod pickle;
pub mod weights;
pub mod yaml;
pub mod zoo;

use miette::Diagnostic;
use thiserror::Error;

use crate::graph::{Graph, GraphError};

/// Why a model could not be built.
#[derive(Debug, Error, Diagnostic)]
pub enum ModelError {
    /// The name is neither a zoo model nor a file.
    #[error("`{name}` is not a built-in model")]
    #[diagnostic(code(prunex::model::unknown), help("{help}"))]
    Unknown {
        /// The name.
        name: String,
        /// Closest names.
        help: String,
    },
    /// The description file cannot be read.
    #[error("cannot read model description `{path}`: {reason}")]
    #[diagnostic(code(prunex::model::unreadable), help("model descriptions are YAML files; paths in a recipe are relative to the recipe's folder"))]
    Unreadable {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// The description is malformed.
    #[error(transparent)]
    #[diagnostic(transparent)]
    Description(#[from] yaml::DescriptionError),
    /// The graph does not compute.
    #[error(transparent)]
    #[diagnostic(transparent)]
    Graph(#[from] GraphError),
    /// An ONNX file that does not import.
    #[error(transparent)]
    #[diagnostic(transparent)]
    Onnx(#[from] onnx::OnnxError),
}

/// Builds a zoo model or reads a description file: a name with a `/` or
/// ending in `.yaml`/`.yml` is a file, anything else a zoo name. `input`
/// and `classes` override the zoo defaults (a description's own input is
/// used when `input` is `None`).
pub fn load(
    source: &str,
    input: Option<[usize; 3]>,
    classes: Option<usize>,
) -> Result<Graph, ModelError> {
    load_with(source, input, classes, &crate::syntax::FsLoader)
}

/// [`load`], reading a model description through `loader`.
pub fn load_with(
    source: &str,
    input: Option<[usize; 3]>,
    classes: Option<usize>,
    loader: &dyn crate::syntax::Loader,
) -> Result<Graph, ModelError> {
    if onnx::is_onnx(source) {
        let mut g = onnx::import(std::path::Path::new(source), loader)?.graph;
        if let Some(i) = input {
            g.input = i;
        }
        crate::graph::analyze(&g, g.input)?;
        return Ok(g);
    }
    let is_file = source.contains('/') || source.ends_with(".yaml") || source.ends_with(".yml");
    if is_file {
        let (_, text) =
            loader
                .read(std::path::Path::new(source))
                .map_err(|e| ModelError::Unreadable {
                    path: source.to_owned(),
                    reason: e.to_string(),
                })?;
        let mut g = yaml::from_yaml(&text, source)?;
        if let Some(i) = input {
            g.input = i;
        }
        crate::graph::analyze(&g, g.input)?;
        return Ok(g);
    }
    let opts = zoo::ZooOptions {
        input: input.unwrap_or_else(|| zoo::default_input(source)),
        classes: classes.unwrap_or(if matches!(source, "lenet5" | "simplecnn") {
            10
        } else {
            1000
        }),
    };
    match zoo::build(source, opts) {
        Some(g) => Ok(g?),
        None => {
            let help = match crate::syntax::keywords::closest(source, zoo::NAMES) {
                Some(best) => format!("did you mean `{best}`?"),
                None => format!(
                    "the zoo has {}; or give the path of a YAML model description",
                    crate::syntax::keywords::list(zoo::NAMES)
                ),
            };
            Err(ModelError::Unknown {
                name: source.to_owned(),
                help,
            })
        }
    }
}
