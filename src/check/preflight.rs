//! Pre-flight: what a run would meet on this machine, known before any
//! training — the device exists (libtorch would fail on the first tensor),
//! the data is there with headers and sizes that agree and images the
//! model takes, and the results can be written. Reads only through the
//! [`Loader`]; loaders that are not the file system have nothing to say.

use std::io;

use miette::Report;

use super::diag::CheckError;
use super::recipe::Recipe;
use crate::data;
use crate::diagnostics::Located;
use crate::graph::{Analysis, Graph, Shape};
use crate::plan::{Device, Plan};
use crate::syntax::{Loader, SourceMap};

/// The pre-flight diagnostics of a recipe whose model `g` analysed as
/// `before`, planned as `plan`.
pub fn preflight(
    recipe: &Recipe,
    g: &Graph,
    before: &Analysis,
    plan: Option<&Plan>,
    sources: &SourceMap,
    loader: &dyn Loader,
) -> Vec<Report> {
    let mut out = Vec::new();
    if let (Some(Device::Cuda(index)), Some(span), Some(count)) =
        (recipe.device, recipe.device_span, loader.cuda_devices())
    {
        if index >= count {
            out.push(Report::new(CheckError::NoCuda {
                src: sources.named(span),
                span: span.source_span(),
                index,
                count,
            }));
        }
    }
    out.extend(data(recipe, g, before, sources, loader));
    if let (Some(p), Some(span)) = (
        plan,
        recipe
            .export
            .as_ref()
            .map(|e| e.span)
            .or(recipe.name.as_ref().map(|n| n.span)),
    ) {
        if let Err(e) = loader.writable(&p.export) {
            out.push(Report::new(CheckError::ExportUnwritable {
                src: sources.named(span),
                span: span.source_span(),
                path: p.export.display().to_string(),
                reason: e.to_string(),
            }));
        }
    }
    out
}

/// The data block: its folder holds what a run reads, and its images fit
/// the model (from the files' headers, or from the kind alone when the
/// folder cannot be looked at).
fn data(
    recipe: &Recipe,
    g: &Graph,
    before: &Analysis,
    sources: &SourceMap,
    loader: &dyn Loader,
) -> Vec<Report> {
    let Some(d) = &recipe.data else {
        return Vec::new();
    };
    let (kind, span) = (d.kind.node, d.path.span);
    let pad = d.pad.unwrap_or(0) as usize;
    let padded = |s: [usize; 3]| [s[0], s[1] + 2 * pad, s[2] + 2 * pad];
    let mismatch = |images: [usize; 3]| {
        let data = padded(images);
        let mut help = format!(
            "set the model's `input [{}, {}, {}]`",
            data[0], data[1], data[2]
        );
        let grow = (
            g.input[1].checked_sub(images[1]),
            g.input[2].checked_sub(images[2]),
        );
        if let (true, (Some(dh), Some(dw))) = (images[0] == g.input[0], grow) {
            if dh == dw && dh > 0 && dh % 2 == 0 && dh / 2 != pad {
                help.push_str(&format!(", or `pad {}` in the data block", dh / 2));
            }
        }
        Report::new(CheckError::InputMismatch {
            src: sources.named(span),
            span: span.source_span(),
            model: g.name.clone(),
            input: g.input,
            data,
            padded: if pad > 0 {
                format!(" after `pad {pad}`")
            } else {
                String::new()
            },
            help,
        })
    };
    /// What the folder turned out to be.
    enum Found {
        Probe(data::Probe),
        Absent,
        Damaged(data::DataError),
        /// A loader that does not look at data folders.
        Unknown,
    }
    let found = match loader.list(&d.path.node) {
        Err(e) if e.kind() == io::ErrorKind::Unsupported => Found::Unknown,
        Err(e) if e.kind() == io::ErrorKind::NotFound => Found::Absent,
        _ => match data::probe(kind, &d.path.node, loader) {
            Ok(p) => Found::Probe(p),
            Err(e) => Found::Damaged(e),
        },
    };
    let (shape, certain) = match &found {
        Found::Probe(p) => (Some(p.shape), p.channels_certain),
        _ => (kind.nominal_shape(), true),
    };
    let mut out = Vec::new();
    if let Some(shape) = shape {
        let data = padded(shape);
        // Grey images of an image folder become RGB when any image has
        // colour.
        let fits =
            data[1..] == g.input[1..] && (data[0] == g.input[0] || (!certain && g.input[0] == 3));
        if !fits {
            out.push(mismatch(shape));
        }
    }
    let probe = match found {
        Found::Probe(p) => p,
        Found::Unknown => return out,
        Found::Absent => {
            out.push(Report::new(CheckError::NoData {
                src: sources.named(span),
                span: span.source_span(),
                kind: kind.name(),
                path: d.path.node.display().to_string(),
                help: data::how_to_get(kind).to_owned(),
            }));
            return out;
        }
        Found::Damaged(e) => {
            out.push(Report::new(Located::new(
                e,
                sources.named(span),
                span.source_span(),
                "this data",
            )));
            return out;
        }
    };
    if let Shape::Flat(outputs) = before.shapes[g.output] {
        if outputs < probe.classes {
            out.push(Report::new(CheckError::TooFewOutputs {
                src: sources.named(span),
                span: span.source_span(),
                model: g.name.clone(),
                outputs,
                classes: probe.classes,
            }));
        }
    }
    out
}
