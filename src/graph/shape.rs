//! Shape inference, parameter and MAC counts. No tensors are allocated: the
//! cost of planning does not depend on the input resolution.
//!
//! MACs follow the counter Torch-Pruning ships (`tp.utils.count_ops_and_params`,
//! adapted from ptflops), so numbers compare one to one with it: a convolution
//! costs `Cout·(Cin/groups)·kh·kw·Hout·Wout` plus `Cout·Hout·Wout` for a bias,
//! a linear layer `in·out` per position plus `out` once for a bias, a
//! BatchNorm or LayerNorm 2 per element, a ReLU/ReLU6/GELU module 1 per output
//! element, a pooling module 1 per input element. Operations called as
//! functions (additions, concatenation, `F.relu`, functional pooling, a
//! layer scale's product) and other activations count 0, as there. One
//! difference: torchvision's `LayerNorm2d` (ConvNeXt's stem, downsampling
//! and head norms) counts 2 per element here, while that counter, which
//! matches module types exactly, skips it as a subclass of `nn.LayerNorm`.

use miette::Diagnostic;
use serde::Serialize;
use thiserror::Error;

use super::{Graph, Op};

/// The shape of one sample (batch dimension left out).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Shape {
    /// A feature map `[C, H, W]`.
    Map {
        /// Channels.
        c: usize,
        /// Height.
        h: usize,
        /// Width.
        w: usize,
    },
    /// A feature vector `[F]`.
    Flat(usize),
    /// A sequence of `t` tokens of `f` features each (`[T, F]`).
    Tokens {
        /// Tokens.
        t: usize,
        /// Features per token.
        f: usize,
    },
}

impl Shape {
    /// Number of elements.
    pub fn numel(&self) -> u64 {
        match *self {
            Shape::Map { c, h, w } => product(&[c, h, w]),
            Shape::Flat(f) => f as u64,
            Shape::Tokens { t, f } => product(&[t, f]),
        }
    }

    /// Channels (features for a vector or a token).
    pub fn channels(&self) -> usize {
        match *self {
            Shape::Map { c, .. } => c,
            Shape::Flat(f) | Shape::Tokens { f, .. } => f,
        }
    }

    /// Positions the channels repeat at: H·W of a map, the tokens of a
    /// sequence, 1 for a vector.
    pub fn positions(&self) -> u64 {
        match *self {
            Shape::Map { h, w, .. } => product(&[h, w]),
            Shape::Flat(_) => 1,
            Shape::Tokens { t, .. } => t as u64,
        }
    }
}

impl std::fmt::Display for Shape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Shape::Map { c, h, w } => write!(f, "[{c}, {h}, {w}]"),
            Shape::Flat(n) => write!(f, "[{n}]"),
            Shape::Tokens { t, f: n } => write!(f, "[{t} tokens, {n}]"),
        }
    }
}

/// A model graph that cannot compute: what is wrong, at which layer.
#[derive(Debug, Error, Diagnostic, Clone, PartialEq)]
pub enum GraphError {
    /// A layer receives a different number of channels than it was built for.
    #[error("`{node}` expects {expected} input channels, but `{from}` gives it {found}")]
    #[diagnostic(
        code(prunex::model::channel_mismatch),
        help("make `{node}`'s in_channels {found}, or change what feeds it")
    )]
    ChannelMismatch {
        /// The layer.
        node: String,
        /// What it expects.
        expected: usize,
        /// What it gets.
        found: usize,
        /// The layer feeding it.
        from: String,
    },
    /// A linear layer receives a different number of features.
    #[error("`{node}` expects {expected} input features, but gets {found} (from `{from}`, shape {shape})")]
    #[diagnostic(code(prunex::model::feature_mismatch), help("set `{node}`'s in_features to {found}; the input size changes what reaches the classifier"))]
    FeatureMismatch {
        /// The layer.
        node: String,
        /// What it expects.
        expected: usize,
        /// What it gets.
        found: usize,
        /// The layer feeding it.
        from: String,
        /// That layer's output shape.
        shape: Shape,
    },
    /// Inputs of an add, concat or mul whose shapes do not fit together.
    #[error("`{node}` ({op}) gets inputs of shapes that do not fit: {shapes}")]
    #[diagnostic(code(prunex::model::shape_mismatch), help("{help}"))]
    ShapeMismatch {
        /// The node.
        node: String,
        /// Its operation.
        op: &'static str,
        /// The inputs and their shapes.
        shapes: String,
        /// What they must satisfy.
        help: String,
    },
    /// The feature map shrinks to nothing.
    #[error(
        "the input {input} is too small for `{model}`: `{node}` would produce an empty feature map"
    )]
    #[diagnostic(
        code(prunex::model::input_too_small),
        help("use an input of at least {min}×{min} for this model (resize or pad the data)")
    )]
    TooSmall {
        /// The model.
        model: String,
        /// The input shape.
        input: Shape,
        /// The layer.
        node: String,
        /// A size that works.
        min: usize,
    },
    /// A layer given the wrong kind of input (a vector to a convolution).
    #[error("`{node}` ({op}) cannot take the {shape} output of `{from}`")]
    #[diagnostic(code(prunex::model::wrong_input), help("{help}"))]
    WrongInput {
        /// The layer.
        node: String,
        /// Its operation.
        op: &'static str,
        /// The input shape.
        shape: Shape,
        /// The layer feeding it.
        from: String,
        /// The fix.
        help: String,
    },
    /// A sequence of another length than a position embedding was made for.
    #[error("`{node}` holds embeddings for {expected} tokens, but `{from}` gives it {found}")]
    #[diagnostic(
        code(prunex::model::token_mismatch),
        help("the tokens follow from the input size and the patch size: use the input the model was built for, or give `{node}` {found} tokens")
    )]
    TokenMismatch {
        /// The node.
        node: String,
        /// Tokens it holds.
        expected: usize,
        /// Tokens it gets.
        found: usize,
        /// The node feeding it.
        from: String,
    },
    /// A graph whose structure is broken (a missing input, a cycle, an
    /// operation with the wrong number of inputs).
    #[error("the model graph is malformed at `{node}`: {message}")]
    #[diagnostic(code(prunex::model::malformed))]
    Malformed {
        /// The node.
        node: String,
        /// What is wrong.
        message: String,
    },
}

/// Per-node and total counts for one input size.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Analysis {
    /// Output shape of each node.
    pub shapes: Vec<Shape>,
    /// Learnable parameters of each node (a shared module counts once).
    pub params: Vec<u64>,
    /// MACs of each node for one sample.
    pub macs: Vec<u64>,
    /// Total learnable parameters.
    pub total_params: u64,
    /// Total MACs for one sample.
    pub total_macs: u64,
}

/// The product of sizes as a count, saturating at `u64::MAX` (a model
/// description may hold any number; no real count comes near it).
fn product(xs: &[usize]) -> u64 {
    xs.iter().fold(1u64, |a, &x| a.saturating_mul(x as u64))
}

fn conv_out(size: usize, k: usize, s: usize, p: usize, d: usize, ceil: bool) -> Option<usize> {
    // Saturating: a description may hold any number; a span past usize is
    // simply larger than any input.
    let span = d.saturating_mul(k.saturating_sub(1)).saturating_add(1);
    let padded = size.saturating_add(p.saturating_mul(2));
    if padded < span || s == 0 {
        return None;
    }
    let n = padded - span;
    let out = if ceil { n.div_ceil(s) + 1 } else { n / s + 1 };
    // PyTorch drops a last window that would start in the right padding.
    let out = if ceil && (out - 1).saturating_mul(s) >= size.saturating_add(p) {
        out - 1
    } else {
        out
    };
    (out > 0).then_some(out)
}

/// Infers every node's shape for `input` and counts parameters and MACs.
pub fn analyze(g: &Graph, input: [usize; 3]) -> Result<Analysis, GraphError> {
    let n = g.nodes.len();
    let mut shapes: Vec<Shape> = Vec::with_capacity(n);
    let mut params = vec![0u64; n];
    let mut macs = vec![0u64; n];
    let input_shape = Shape::Map {
        c: input[0],
        h: input[1],
        w: input[2],
    };
    let mut counted = std::collections::HashSet::new();
    for (id, node) in g.nodes.iter().enumerate() {
        for &i in &node.inputs {
            if i >= id {
                return Err(GraphError::Malformed {
                    node: node.name.clone(),
                    message: format!("it reads node {i}, which comes after it (nodes must be in execution order)"),
                });
            }
        }
        let arity = |want: &str, ok: bool| -> Result<(), GraphError> {
            if ok {
                Ok(())
            } else {
                Err(GraphError::Malformed {
                    node: node.name.clone(),
                    message: format!("{} takes {want}, got {}", node.op.kind(), node.inputs.len()),
                })
            }
        };
        let first = || {
            node.inputs
                .first()
                .map(|&i| (shapes[i], g.nodes[i].name.clone()))
        };
        let shape = match &node.op {
            Op::Input => input_shape,
            Op::Add | Op::Mul | Op::Concat => {
                arity("at least two inputs", node.inputs.len() >= 2)?;
                let ins: Vec<Shape> = node.inputs.iter().map(|&i| shapes[i]).collect();
                let listing = || {
                    node.inputs
                        .iter()
                        .map(|&i| format!("`{}` {}", g.nodes[i].name, shapes[i]))
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                match node.op {
                    Op::Add => {
                        if ins.iter().any(|s| *s != ins[0]) {
                            return Err(GraphError::ShapeMismatch {
                                node: node.name.clone(),
                                op: "add",
                                shapes: listing(),
                                help: "the tensors added by a residual connection must have the same channels and size; a shortcut that changes them needs a `downsample` convolution".into(),
                            });
                        }
                        ins[0]
                    }
                    Op::Mul => {
                        let full = ins
                            .iter()
                            .copied()
                            .find(|s| !matches!(s, Shape::Map { h: 1, w: 1, .. }))
                            .unwrap_or(ins[0]);
                        let fits = ins.iter().all(|s| {
                            *s == full || matches!((s, full), (Shape::Map { c, h: 1, w: 1 }, Shape::Map { c: fc, .. }) if *c == fc)
                        });
                        if !fits {
                            return Err(GraphError::ShapeMismatch {
                                node: node.name.clone(),
                                op: "mul",
                                shapes: listing(),
                                help: "multiplied tensors must have the same shape, or one must be [C, 1, 1] with the same channels (squeeze-excitation)".into(),
                            });
                        }
                        full
                    }
                    _ => {
                        let (mut c, hw) = (
                            0,
                            match ins[0] {
                                Shape::Map { h, w, .. } => (h, w),
                                Shape::Flat(_) | Shape::Tokens { .. } => (0, 0),
                            },
                        );
                        for s in &ins {
                            match *s {
                                Shape::Map { c: sc, h, w } if (h, w) == hw => c += sc,
                                _ => {
                                    return Err(GraphError::ShapeMismatch {
                                        node: node.name.clone(),
                                        op: "concat",
                                        shapes: listing(),
                                        help: "concatenated feature maps must have the same height and width".into(),
                                    })
                                }
                            }
                        }
                        Shape::Map {
                            c,
                            h: hw.0,
                            w: hw.1,
                        }
                    }
                }
            }
            op => {
                arity("one input", node.inputs.len() == 1)?;
                let (s, from) = first().expect("arity checked");
                let map = |help: &str| -> Result<(usize, usize, usize), GraphError> {
                    match s {
                        Shape::Map { c, h, w } => Ok((c, h, w)),
                        Shape::Flat(_) | Shape::Tokens { .. } => Err(GraphError::WrongInput {
                            node: node.name.clone(),
                            op: op.kind(),
                            shape: s,
                            from: from.clone(),
                            help: help.to_owned(),
                        }),
                    }
                };
                let tokens = |s: Shape, from: &str| -> Result<(usize, usize), GraphError> {
                    match s {
                        Shape::Tokens { t, f } => Ok((t, f)),
                        _ => Err(GraphError::WrongInput {
                            node: node.name.clone(),
                            op: op.kind(),
                            shape: s,
                            from: from.to_owned(),
                            help: "it reads a sequence of tokens: put a `to_tokens` after the patch embedding's convolution".into(),
                        }),
                    }
                };
                // The channels a layer reads, against the ones it gets.
                let channels = |found: usize, expected: usize| -> Result<(), GraphError> {
                    if found == expected {
                        return Ok(());
                    }
                    Err(GraphError::ChannelMismatch {
                        node: node.name.clone(),
                        expected,
                        found,
                        from: from.clone(),
                    })
                };
                let too_small = || GraphError::TooSmall {
                    model: g.name.clone(),
                    input: input_shape,
                    node: node.name.clone(),
                    min: min_input(g, input).unwrap_or(0),
                };
                match *op {
                    Op::Conv2d {
                        in_channels,
                        out_channels,
                        kernel,
                        stride,
                        padding,
                        dilation,
                        groups,
                        bias,
                    } => {
                        let (c, h, w) = map("a convolution needs a [C, H, W] feature map; it cannot follow a flatten")?;
                        channels(c, in_channels)?;
                        if groups == 0 || in_channels % groups != 0 || out_channels % groups != 0 {
                            return Err(GraphError::Malformed {
                                node: node.name.clone(),
                                message: format!("groups {groups} must divide in_channels {in_channels} and out_channels {out_channels}"),
                            });
                        }
                        let oh = conv_out(h, kernel[0], stride[0], padding[0], dilation[0], false)
                            .ok_or_else(too_small)?;
                        let ow = conv_out(w, kernel[1], stride[1], padding[1], dilation[1], false)
                            .ok_or_else(too_small)?;
                        let positions = product(&[oh, ow, out_channels]);
                        let per = product(&[kernel[0], kernel[1], in_channels / groups]);
                        macs[id] = positions.saturating_mul(per).saturating_add(if bias {
                            positions
                        } else {
                            0
                        });
                        params[id] =
                            product(&[out_channels, in_channels / groups, kernel[0], kernel[1]])
                                .saturating_add(if bias { out_channels as u64 } else { 0 });
                        Shape::Map {
                            c: out_channels,
                            h: oh,
                            w: ow,
                        }
                    }
                    Op::Linear {
                        in_features,
                        out_features,
                        bias,
                    } => {
                        // On a feature map or tokens: the channels, at
                        // every position.
                        let (f, positions) = (s.channels(), s.positions());
                        if f != in_features {
                            return Err(GraphError::FeatureMismatch {
                                node: node.name.clone(),
                                expected: in_features,
                                found: f,
                                from,
                                shape: s,
                            });
                        }
                        let weights = product(&[in_features, out_features]);
                        let bias = if bias { out_features as u64 } else { 0 };
                        // Torch-Pruning's counter adds a bias once, not per position.
                        macs[id] = weights.saturating_mul(positions).saturating_add(bias);
                        params[id] = weights.saturating_add(bias);
                        match s {
                            Shape::Flat(_) => Shape::Flat(out_features),
                            Shape::Map { h, w, .. } => Shape::Map {
                                c: out_features,
                                h,
                                w,
                            },
                            Shape::Tokens { t, .. } => Shape::Tokens { t, f: out_features },
                        }
                    }
                    Op::BatchNorm2d { features, .. } => {
                        let (c, _, _) = map("BatchNorm2d needs a [C, H, W] feature map")?;
                        channels(c, features)?;
                        macs[id] = s.numel().saturating_mul(2);
                        params[id] = (features as u64).saturating_mul(2);
                        s
                    }
                    Op::LayerNorm2d { features, .. } | Op::LayerScale { features } => {
                        let (c, _, _) =
                            map("it normalises or scales the channels of a [C, H, W] feature map")?;
                        channels(c, features)?;
                        // A layer scale is a product in its block's forward,
                        // which Torch-Pruning's counter does not see.
                        let ln = matches!(op, Op::LayerNorm2d { .. });
                        macs[id] = if ln { s.numel().saturating_mul(2) } else { 0 };
                        params[id] = (features as u64).saturating_mul(if ln { 2 } else { 1 });
                        s
                    }
                    Op::ChannelShuffle { groups } => {
                        let (c, _, _) = map(
                            "a channel shuffle permutes the channels of a [C, H, W] feature map",
                        )?;
                        if groups == 0 || c % groups != 0 {
                            return Err(GraphError::Malformed {
                                node: node.name.clone(),
                                message: format!(
                                    "its {groups} groups do not divide the {c} channels it reads"
                                ),
                            });
                        }
                        s
                    }
                    Op::Slice { start, end } => {
                        let (c, h, w) = map("a slice takes channels of a [C, H, W] feature map")?;
                        if start >= end || end > c {
                            return Err(GraphError::Malformed {
                                node: node.name.clone(),
                                message: format!(
                                    "it takes channels {start}..{end}, but its input has {c}"
                                ),
                            });
                        }
                        Shape::Map {
                            c: end - start,
                            h,
                            w,
                        }
                    }
                    // Torch-Pruning's counter counts these modules (GELU as
                    // it counts ReLU) and no other activation.
                    Op::Relu | Op::Relu6 | Op::Gelu => {
                        macs[id] = s.numel();
                        s
                    }
                    Op::Silu
                    | Op::Sigmoid
                    | Op::Hardswish
                    | Op::Hardsigmoid
                    | Op::Dropout { .. }
                    | Op::Identity => s,
                    Op::MaxPool2d {
                        kernel,
                        stride,
                        padding,
                        ceil_mode,
                    } => {
                        let (c, h, w) = map("pooling needs a [C, H, W] feature map")?;
                        let oh = conv_out(h, kernel[0], stride[0], padding[0], 1, ceil_mode)
                            .ok_or_else(too_small)?;
                        let ow = conv_out(w, kernel[1], stride[1], padding[1], 1, ceil_mode)
                            .ok_or_else(too_small)?;
                        macs[id] = s.numel();
                        Shape::Map { c, h: oh, w: ow }
                    }
                    Op::AvgPool2d {
                        kernel,
                        stride,
                        padding,
                    } => {
                        let (c, h, w) = map("pooling needs a [C, H, W] feature map")?;
                        let oh = conv_out(h, kernel[0], stride[0], padding[0], 1, false)
                            .ok_or_else(too_small)?;
                        let ow = conv_out(w, kernel[1], stride[1], padding[1], 1, false)
                            .ok_or_else(too_small)?;
                        macs[id] = s.numel();
                        Shape::Map { c, h: oh, w: ow }
                    }
                    Op::AdaptiveAvgPool2d { output } => {
                        let (c, _, _) = map("pooling needs a [C, H, W] feature map")?;
                        macs[id] = s.numel();
                        Shape::Map {
                            c,
                            h: output[0],
                            w: output[1],
                        }
                    }
                    Op::Flatten => Shape::Flat(usize::try_from(s.numel()).unwrap_or(usize::MAX)),
                    Op::ToTokens => {
                        let (c, h, w) = map("tokens are made of a [C, H, W] feature map (a patch embedding's convolution)")?;
                        Shape::Tokens {
                            t: h.saturating_mul(w),
                            f: c,
                        }
                    }
                    Op::ClassToken { features } => {
                        let (t, f) = tokens(s, &from)?;
                        channels(f, features)?;
                        params[id] = features as u64;
                        Shape::Tokens {
                            t: t.saturating_add(1),
                            f,
                        }
                    }
                    Op::PosEmbedding {
                        tokens: want,
                        features,
                    } => {
                        let (t, f) = tokens(s, &from)?;
                        channels(f, features)?;
                        if t != want {
                            return Err(GraphError::TokenMismatch {
                                node: node.name.clone(),
                                expected: want,
                                found: t,
                                from,
                            });
                        }
                        params[id] = product(&[want, features]);
                        s
                    }
                    Op::LayerNorm { features, .. } => {
                        if let Shape::Map { .. } = s {
                            return Err(GraphError::WrongInput {
                                node: node.name.clone(),
                                op: op.kind(),
                                shape: s,
                                from,
                                help: "LayerNorm normalises the last dimension of tokens or a vector; over the channels of a feature map it is `layernorm2d`".into(),
                            });
                        }
                        channels(s.channels(), features)?;
                        macs[id] = s.numel().saturating_mul(2);
                        params[id] = (features as u64).saturating_mul(2);
                        s
                    }
                    Op::MultiheadAttention { embed, .. } => {
                        let (t, f) = tokens(s, &from)?;
                        channels(f, embed)?;
                        let l = super::AttentionLayout::of(op).expect("an attention");
                        l.check().map_err(|message| GraphError::Malformed {
                            node: node.name.clone(),
                            message,
                        })?;
                        macs[id] = l.macs(t);
                        params[id] = l.params();
                        s
                    }
                    Op::TokenSelect { index } => {
                        let (t, f) = tokens(s, &from)?;
                        if index >= t {
                            return Err(GraphError::Malformed {
                                node: node.name.clone(),
                                message: format!(
                                    "it selects token {index}, but its input has {t} tokens"
                                ),
                            });
                        }
                        Shape::Flat(f)
                    }
                    Op::Input | Op::Add | Op::Mul | Op::Concat => unreachable!("handled above"),
                }
            }
        };
        if node.functional {
            macs[id] = 0;
        }
        // A module called twice (torchvision's shared `relu`) has its
        // parameters once.
        if params[id] > 0 && !counted.insert(node.name.clone()) {
            params[id] = 0;
        }
        shapes.push(shape);
    }
    if g.output >= n {
        return Err(GraphError::Malformed {
            node: g.name.clone(),
            message: "the output node does not exist".into(),
        });
    }
    let total_params = params.iter().fold(0u64, |a, &b| a.saturating_add(b));
    let total_macs = macs.iter().fold(0u64, |a, &b| a.saturating_add(b));
    Ok(Analysis {
        shapes,
        params,
        macs,
        total_params,
        total_macs,
    })
}

/// The smallest square input (up to 1024) for which the graph computes, to
/// suggest in a diagnostic.
fn min_input(g: &Graph, input: [usize; 3]) -> Option<usize> {
    let start = input[1].max(input[2]);
    (start..=1024).step_by(1).find(|&s| {
        let mut probe = g.clone();
        probe.input = [input[0], s, s];
        // Guard against recursion: analyze only reports TooSmall through here.
        analyze_no_hint(&probe, [input[0], s, s])
    })
}

fn analyze_no_hint(g: &Graph, input: [usize; 3]) -> bool {
    // Cheap re-run of the spatial arithmetic only.
    let mut hw: Vec<Option<(usize, usize)>> = Vec::with_capacity(g.nodes.len());
    for node in &g.nodes {
        let prev = node
            .inputs
            .first()
            .and_then(|&i| hw.get(i).copied().flatten());
        let next = match node.op {
            Op::Input => Some((input[1], input[2])),
            Op::Conv2d {
                kernel,
                stride,
                padding,
                dilation,
                ..
            } => prev.and_then(|(h, w)| {
                Some((
                    conv_out(h, kernel[0], stride[0], padding[0], dilation[0], false)?,
                    conv_out(w, kernel[1], stride[1], padding[1], dilation[1], false)?,
                ))
            }),
            Op::MaxPool2d {
                kernel,
                stride,
                padding,
                ceil_mode,
            } => prev.and_then(|(h, w)| {
                Some((
                    conv_out(h, kernel[0], stride[0], padding[0], 1, ceil_mode)?,
                    conv_out(w, kernel[1], stride[1], padding[1], 1, ceil_mode)?,
                ))
            }),
            Op::AvgPool2d {
                kernel,
                stride,
                padding,
            } => prev.and_then(|(h, w)| {
                Some((
                    conv_out(h, kernel[0], stride[0], padding[0], 1, false)?,
                    conv_out(w, kernel[1], stride[1], padding[1], 1, false)?,
                ))
            }),
            Op::AdaptiveAvgPool2d { output } => prev.map(|_| (output[0], output[1])),
            _ => prev.or(Some((1, 1))),
        };
        if next.is_none() && !matches!(node.op, Op::Linear { .. } | Op::Flatten) {
            return false;
        }
        hw.push(next);
    }
    true
}
