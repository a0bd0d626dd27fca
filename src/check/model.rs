//! Resolving a recipe's model and checking its weights' keys and shapes,
//! before any tensor exists. Diagnostics keep their model/weights codes and
//! point at the recipe line that named the model or the weights.

use crate::check::recipe::{ModelSpec, Recipe};
use crate::diagnostics::Located;
use crate::graph::{Graph, GraphError};
use crate::models::{self, weights, ModelError};
use crate::syntax::{ast::ModelSource, Loader, SourceMap, Span};
use std::path::Path;

/// Builds the recipe's model graph and checks its weights file, if any.
pub fn check_model(
    recipe: &Recipe,
    sources: &SourceMap,
    loader: &dyn Loader,
) -> (Option<Graph>, Vec<miette::Report>) {
    let Some(spec) = &recipe.model else {
        return (None, Vec::new());
    };
    let mut reports = Vec::new();
    let graph = match build(spec, loader) {
        Ok(g) => g,
        Err(e) => {
            // An input too small for the model is about the `input` line.
            let (span, label) = match (&e, &spec.input) {
                (ModelError::Graph(GraphError::TooSmall { .. }), Some(input)) => {
                    (input.span, "this input")
                }
                _ => (spec.source.span, "this model"),
            };
            let src = sources.get(span.file).named();
            reports.push(miette::Report::new(Located::new(
                e,
                src,
                span.source_span(),
                label,
            )));
            return (None, reports);
        }
    };
    if let Some(w) = &spec.weights {
        reports.extend(check_weights(&w.node, w.span, &graph, sources, loader));
    }
    (Some(graph), reports)
}

/// Checks that a weights file fits `graph` key by key and shape by shape;
/// the diagnostic points at `span`, the recipe line that named the file.
pub fn check_weights(
    path: &Path,
    span: Span,
    graph: &Graph,
    sources: &SourceMap,
    loader: &dyn Loader,
) -> Option<miette::Report> {
    let checked = weights::read_shapes_with(path, loader).and_then(|(shapes, _notes)| {
        weights::check_shapes(&shapes, graph, &path.display().to_string())
    });
    let e = checked.err()?;
    let src = sources.get(span.file).named();
    let label = match e {
        weights::WeightsError::Unreadable { .. } => "these weights",
        weights::WeightsError::Mismatch { .. } => "these weights do not fit the model",
    };
    Some(miette::Report::new(Located::new(
        e,
        src,
        span.source_span(),
        label,
    )))
}

fn build(spec: &ModelSpec, loader: &dyn Loader) -> Result<Graph, ModelError> {
    let input = spec
        .input
        .as_ref()
        .map(|i| [i.node[0] as usize, i.node[1] as usize, i.node[2] as usize]);
    let classes = spec.classes.as_ref().map(|c| c.node as usize);
    let source = match &spec.source.node {
        ModelSource::Zoo(name) => name.clone(),
        ModelSource::File(path) => path.clone(),
    };
    models::load_with(&source, input, classes, loader)
}
