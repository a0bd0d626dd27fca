//! The model IR: a plain-Rust graph of PyTorch-named operations that the
//! checker analyses without libtorch (shapes, parameters, MACs, channel
//! coupling) and the executor turns into a tch module.
//!
//! Nodes are in topological order and each produces one tensor; `inputs`
//! are the nodes whose tensors it reads. A node's `name` is the PyTorch
//! module path users see in `model.named_modules()` (`layer1.0.conv1`). An
//! operation called as a function in PyTorch (`x + identity`,
//! `torch.flatten`, `F.relu`) is marked `functional`: it has a name for
//! messages, but no module, so recipe globs never match it.

pub mod attention;
pub mod coupling;
pub mod shape;

use serde::{Deserialize, Serialize};

pub use attention::{AttentionStyle, Layout as AttentionLayout};
pub use coupling::{coupling, Coupling, Frozen, Group, GroupKind, Role, Slot};
pub use shape::{analyze, Analysis, GraphError, Shape};

/// A `state_dict` key and its tensor's shape.
pub type KeyShape = (String, Vec<usize>);

/// Index of a node in [`Graph::nodes`].
pub type NodeId = usize;

/// A model graph.
#[derive(Clone, Debug, PartialEq)]
pub struct Graph {
    /// Model name (`resnet18`, or a user model's name).
    pub name: String,
    /// Default input shape `[C, H, W]`.
    pub input: [usize; 3],
    /// Nodes in topological order; `nodes[0]` is the input.
    pub nodes: Vec<Node>,
    /// The node whose tensor is the model's output.
    pub output: NodeId,
}

/// One operation.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    /// PyTorch module path, or a descriptive name for functional operations.
    pub name: String,
    /// The operation.
    pub op: Op,
    /// Input nodes, in argument order.
    pub inputs: Vec<NodeId>,
    /// Whether PyTorch calls this as a function rather than a module.
    pub functional: bool,
}

/// Operations.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    /// The model input.
    Input,
    /// `nn.Conv2d`.
    Conv2d {
        /// Input channels.
        in_channels: usize,
        /// Output channels.
        out_channels: usize,
        /// Kernel `[kh, kw]`.
        #[serde(with = "pair")]
        kernel: [usize; 2],
        /// Stride.
        #[serde(with = "pair", default = "one")]
        stride: [usize; 2],
        /// Zero padding.
        #[serde(with = "pair", default)]
        padding: [usize; 2],
        /// Dilation.
        #[serde(with = "pair", default = "one")]
        dilation: [usize; 2],
        /// Groups (`in_channels` for depthwise).
        #[serde(default = "one_usize")]
        groups: usize,
        /// Whether it has a bias.
        #[serde(default = "yes")]
        bias: bool,
    },
    /// `nn.Linear`. On a feature map it acts on the channels at every
    /// position, as `nn.Linear` does on a channels-last tensor (ConvNeXt's
    /// pointwise layers).
    Linear {
        /// Input features.
        in_features: usize,
        /// Output features.
        out_features: usize,
        /// Whether it has a bias.
        #[serde(default = "yes")]
        bias: bool,
    },
    /// `nn.BatchNorm2d` (affine, tracking running statistics).
    #[serde(rename = "batchnorm2d")]
    BatchNorm2d {
        /// Channels.
        features: usize,
        /// Epsilon.
        #[serde(default = "bn_eps")]
        eps: f64,
        /// Running-statistics momentum.
        #[serde(default = "bn_momentum")]
        momentum: f64,
    },
    /// `nn.LayerNorm` over the channels of a feature map at every position
    /// (torchvision's `LayerNorm2d`, or a `LayerNorm` between channels-last
    /// permutes: ConvNeXt).
    #[serde(rename = "layernorm2d")]
    LayerNorm2d {
        /// Channels.
        features: usize,
        /// Epsilon.
        #[serde(default = "ln_eps")]
        eps: f64,
    },
    /// A learned scale per channel, a `[C, 1, 1]` parameter `layer_scale`
    /// of the module (ConvNeXt's blocks).
    LayerScale {
        /// Channels.
        features: usize,
    },
    /// ReLU.
    Relu,
    /// ReLU6.
    Relu6,
    /// GELU.
    Gelu,
    /// SiLU (swish).
    Silu,
    /// Sigmoid.
    Sigmoid,
    /// Hardswish.
    Hardswish,
    /// Hardsigmoid (MobileNetV3's squeeze-excitation gate).
    Hardsigmoid,
    /// `nn.MaxPool2d`.
    #[serde(rename = "maxpool2d")]
    MaxPool2d {
        /// Window.
        #[serde(with = "pair")]
        kernel: [usize; 2],
        /// Stride (PyTorch's default is the window).
        #[serde(with = "pair")]
        stride: [usize; 2],
        /// Padding.
        #[serde(with = "pair", default)]
        padding: [usize; 2],
        /// Round output sizes up.
        #[serde(default)]
        ceil_mode: bool,
    },
    /// `nn.AvgPool2d`.
    #[serde(rename = "avgpool2d")]
    AvgPool2d {
        /// Window.
        #[serde(with = "pair")]
        kernel: [usize; 2],
        /// Stride.
        #[serde(with = "pair")]
        stride: [usize; 2],
        /// Padding.
        #[serde(with = "pair", default)]
        padding: [usize; 2],
    },
    /// `nn.AdaptiveAvgPool2d`.
    #[serde(rename = "adaptive_avgpool2d")]
    AdaptiveAvgPool2d {
        /// Output size `[h, w]`.
        #[serde(with = "pair")]
        output: [usize; 2],
    },
    /// Flatten everything after the batch dimension.
    Flatten,
    /// Element-wise sum of the inputs (residual connections).
    Add,
    /// Concatenation along channels.
    Concat,
    /// Element-wise product; a `[C, 1, 1]` input broadcasts (squeeze-excitation).
    Mul,
    /// Dropout.
    Dropout {
        /// Drop probability.
        #[serde(default = "half")]
        p: f64,
    },
    /// Identity.
    Identity,
    /// `channel_shuffle(x, groups)` (ShuffleNet): the channels, read as
    /// `groups` runs, interleaved.
    ChannelShuffle {
        /// Runs.
        groups: usize,
    },
    /// The channels `start..end` (`x[:, start:end]`; `torch.chunk` and
    /// `split` along the channels).
    Slice {
        /// First channel.
        start: usize,
        /// One past the last channel.
        end: usize,
    },
    /// A feature map read as a sequence of tokens, one per position, the
    /// channels as features: `x.reshape(n, c, h * w).permute(0, 2, 1)`
    /// (a ViT's patch embedding after its strided convolution).
    ToTokens,
    /// A learned token prepended to the sequence: a `[1, 1, F]` parameter
    /// outside any module, whose `state_dict` key is the node's name
    /// (`class_token`), expanded over the batch and concatenated first.
    ClassToken {
        /// Features.
        features: usize,
    },
    /// A learned `[1, T, F]` parameter outside any module added to the
    /// tokens (`encoder.pos_embedding`; the key is the node's name).
    PosEmbedding {
        /// Tokens.
        tokens: usize,
        /// Features.
        features: usize,
    },
    /// `nn.LayerNorm` over the features of every token (or of a vector).
    #[serde(rename = "layernorm")]
    LayerNorm {
        /// Features.
        features: usize,
        /// Epsilon.
        #[serde(default = "ln_eps")]
        eps: f64,
    },
    /// Multi-head self-attention on tokens (`batch_first`, no masks):
    /// `nn.MultiheadAttention` called as `attn(x, x, x,
    /// need_weights=False)` with its packed `in_proj_weight` `[3·A, embed]`
    /// and `out_proj` `[embed, A]`, where the attention width `A` is
    /// `heads · head_dim` (`embed` in PyTorch, less once heads are
    /// pruned); or timm's `qkv`/`proj`, or separate `q_proj`/`k_proj`/
    /// `v_proj`/`o_proj` with grouped-query attention (see
    /// [`attention`]).
    MultiheadAttention {
        /// Features of the tokens it reads and writes.
        embed: usize,
        /// Query heads.
        heads: usize,
        /// Features per head.
        head_dim: usize,
        /// Whether the projections have biases.
        #[serde(default = "yes")]
        bias: bool,
        /// Key/value heads, when fewer than `heads` (grouped-query
        /// attention; `style: separate` only).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        kv_heads: Option<usize>,
        /// Where the projections are.
        #[serde(default, skip_serializing_if = "AttentionStyle::is_torch")]
        style: AttentionStyle,
    },
    /// One token of the sequence as a vector (`x[:, index]`: a ViT's
    /// class token before its head).
    TokenSelect {
        /// The token.
        #[serde(default)]
        index: usize,
    },
}

fn one() -> [usize; 2] {
    [1, 1]
}
fn one_usize() -> usize {
    1
}
fn yes() -> bool {
    true
}
fn ln_eps() -> f64 {
    1e-6
}
fn bn_eps() -> f64 {
    1e-5
}
fn bn_momentum() -> f64 {
    0.1
}
fn half() -> f64 {
    0.5
}

/// `[a, a]` is written as `a` in YAML; either form reads back.
mod pair {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize, Deserialize)]
    #[serde(untagged)]
    enum Pair {
        One(usize),
        Two([usize; 2]),
    }

    pub fn serialize<S: Serializer>(v: &[usize; 2], s: S) -> Result<S::Ok, S::Error> {
        if v[0] == v[1] {
            Pair::One(v[0]).serialize(s)
        } else {
            Pair::Two(*v).serialize(s)
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[usize; 2], D::Error> {
        Ok(match Pair::deserialize(d)? {
            Pair::One(a) => [a, a],
            Pair::Two(v) => v,
        })
    }
}

impl Op {
    /// Short lowercase name of the operation, as in YAML.
    pub fn kind(&self) -> &'static str {
        match self {
            Op::Input => "input",
            Op::Conv2d {
                groups,
                in_channels,
                ..
            } if *groups == *in_channels && *groups > 1 => "conv2d (depthwise)",
            Op::Conv2d { .. } => "conv2d",
            Op::Linear { .. } => "linear",
            Op::BatchNorm2d { .. } => "batchnorm2d",
            Op::LayerNorm2d { .. } => "layernorm2d",
            Op::LayerScale { .. } => "layer_scale",
            Op::Relu => "relu",
            Op::Relu6 => "relu6",
            Op::Gelu => "gelu",
            Op::Silu => "silu",
            Op::Sigmoid => "sigmoid",
            Op::Hardswish => "hardswish",
            Op::Hardsigmoid => "hardsigmoid",
            Op::MaxPool2d { .. } => "maxpool2d",
            Op::AvgPool2d { .. } => "avgpool2d",
            Op::AdaptiveAvgPool2d { .. } => "adaptive_avgpool2d",
            Op::Flatten => "flatten",
            Op::Add => "add",
            Op::Concat => "concat",
            Op::Mul => "mul",
            Op::Dropout { .. } => "dropout",
            Op::Identity => "identity",
            Op::ChannelShuffle { .. } => "channel_shuffle",
            Op::Slice { .. } => "slice",
            Op::ToTokens => "to_tokens",
            Op::ClassToken { .. } => "class_token",
            Op::PosEmbedding { .. } => "pos_embedding",
            Op::LayerNorm { .. } => "layernorm",
            Op::MultiheadAttention { .. } => "multihead_attention",
            Op::TokenSelect { .. } => "token_select",
        }
    }

    /// Whether the operation has learnable parameters (a prunable layer).
    pub fn has_weights(&self) -> bool {
        matches!(
            self,
            Op::Conv2d { .. }
                | Op::Linear { .. }
                | Op::BatchNorm2d { .. }
                | Op::LayerNorm2d { .. }
                | Op::LayerScale { .. }
                | Op::ClassToken { .. }
                | Op::PosEmbedding { .. }
                | Op::LayerNorm { .. }
                | Op::MultiheadAttention { .. }
        )
    }

    /// The weight matrices of a layer that weight pruning (masks, N:M)
    /// prunes, as `(suffix, shape)`: a convolution's or linear layer's
    /// weight, an attention's input and output projections.
    pub fn weight_matrices(&self) -> Vec<(&'static str, Vec<usize>)> {
        match self {
            Op::Conv2d { .. } | Op::Linear { .. } | Op::MultiheadAttention { .. } => self
                .state()
                .into_iter()
                .filter(|(k, s)| {
                    *k == "weight"
                        || (s.len() == 2
                            && attention::Layout::of(self)
                                .is_some_and(|l| l.projections().iter().any(|p| p.weight == *k)))
                })
                .collect(),
            _ => Vec::new(),
        }
    }

    /// The parameters and buffers of the module, as `(suffix, shape)`, in
    /// PyTorch's `state_dict` order. An empty suffix is a parameter outside
    /// any module, whose key is the node's name ([`Node::key`]).
    pub fn state(&self) -> Vec<(&'static str, Vec<usize>)> {
        match *self {
            Op::Conv2d {
                in_channels,
                out_channels,
                kernel,
                groups,
                bias,
                ..
            } => {
                let mut v = vec![(
                    "weight",
                    vec![
                        out_channels,
                        in_channels / groups.max(1),
                        kernel[0],
                        kernel[1],
                    ],
                )];
                if bias {
                    v.push(("bias", vec![out_channels]));
                }
                v
            }
            Op::Linear {
                in_features,
                out_features,
                bias,
            } => {
                let mut v = vec![("weight", vec![out_features, in_features])];
                if bias {
                    v.push(("bias", vec![out_features]));
                }
                v
            }
            Op::BatchNorm2d { features, .. } => vec![
                ("weight", vec![features]),
                ("bias", vec![features]),
                ("running_mean", vec![features]),
                ("running_var", vec![features]),
                ("num_batches_tracked", vec![]),
            ],
            Op::LayerNorm2d { features, .. } => {
                vec![("weight", vec![features]), ("bias", vec![features])]
            }
            Op::LayerScale { features } => vec![("layer_scale", vec![features, 1, 1])],
            Op::ClassToken { features } => vec![("", vec![1, 1, features])],
            Op::PosEmbedding { tokens, features } => vec![("", vec![1, tokens, features])],
            Op::LayerNorm { features, .. } => {
                vec![("weight", vec![features]), ("bias", vec![features])]
            }
            Op::MultiheadAttention { .. } => {
                let l = attention::Layout::of(self).expect("an attention");
                let mut v = Vec::new();
                for p in l.projections() {
                    let [r, c] = l.shape(p);
                    v.push((p.weight, vec![r, c]));
                    if l.bias {
                        v.push((p.bias, vec![r]));
                    }
                }
                v
            }
            _ => Vec::new(),
        }
    }
}

impl Node {
    /// The `state_dict` key of this node's tensor `suffix` (one of
    /// [`Op::state`]'s): `module.suffix`, or the node's name for a
    /// parameter outside modules.
    pub fn key(&self, suffix: &str) -> String {
        if suffix.is_empty() {
            self.name.clone()
        } else {
            format!("{}.{suffix}", self.name)
        }
    }
}

impl Graph {
    /// Nodes that are modules in PyTorch (what recipe globs match).
    pub fn modules(&self) -> impl Iterator<Item = (NodeId, &Node)> {
        self.nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| !n.functional && !matches!(n.op, Op::Input))
    }

    /// The `state_dict` keys and shapes the model expects, in order.
    pub fn state_keys(&self) -> Vec<(String, Vec<usize>)> {
        let mut seen = std::collections::HashSet::new();
        let mut out = Vec::new();
        for n in &self.nodes {
            if n.functional || !seen.insert(n.name.as_str()) {
                continue;
            }
            for (suffix, shape) in n.op.state() {
                out.push((n.key(suffix), shape));
            }
        }
        out
    }

    /// The layers weight pruning prunes (convolutions, linear layers,
    /// attentions; each module once), with the `state_dict` keys and
    /// shapes of their weight matrices.
    pub fn weight_layers(&self) -> Vec<(NodeId, Vec<KeyShape>)> {
        let mut seen = std::collections::HashSet::new();
        self.modules()
            .filter(|(_, n)| seen.insert(n.name.as_str()))
            .filter_map(|(id, n)| {
                let m: Vec<(String, Vec<usize>)> =
                    n.op.weight_matrices()
                        .into_iter()
                        .map(|(k, s)| (n.key(k), s))
                        .collect();
                (!m.is_empty()).then_some((id, m))
            })
            .collect()
    }

    /// The nodes that read node `id`'s tensor.
    pub fn consumers(&self, id: NodeId) -> Vec<NodeId> {
        self.nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| n.inputs.contains(&id))
            .map(|(i, _)| i)
            .collect()
    }
}
