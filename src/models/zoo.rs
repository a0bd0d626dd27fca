//! Built-in models with torchvision's module names and shapes, so that
//! recipes name layers exactly as `model.named_modules()` prints them and
//! torchvision state_dicts load unchanged.

use crate::graph::{analyze, Graph, GraphError, Node, NodeId, Op, Shape};

/// Options every zoo model takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ZooOptions {
    /// Input `[C, H, W]`.
    pub input: [usize; 3],
    /// Number of classes of the classifier.
    pub classes: usize,
}

impl ZooOptions {
    /// The torchvision defaults: 3×224×224, 1000 classes.
    pub fn imagenet() -> Self {
        ZooOptions {
            input: [3, 224, 224],
            classes: 1000,
        }
    }
}

/// The names of the built-in models.
pub const NAMES: &[&str] = &[
    "lenet5",
    "simplecnn",
    "vgg11_bn",
    "vgg16_bn",
    "resnet18",
    "resnet34",
    "resnet50",
    "mobilenet_v2",
    "vit_b_16",
    "vit_mini",
];

/// The default input of a zoo model, when a recipe gives none.
pub fn default_input(name: &str) -> [usize; 3] {
    match name {
        "lenet5" | "simplecnn" | "vit_mini" => [1, 28, 28],
        _ => [3, 224, 224],
    }
}

/// Builds a zoo model, or `None` when the name is not one.
pub fn build(name: &str, opts: ZooOptions) -> Option<Result<Graph, GraphError>> {
    let mut b = Builder::new(name, opts.input);
    let built = match name {
        "lenet5" => lenet5(&mut b, opts.classes),
        "simplecnn" => simplecnn(&mut b, opts.classes),
        "vgg11_bn" => vgg(&mut b, &VGG11, opts.classes),
        "vgg16_bn" => vgg(&mut b, &VGG16, opts.classes),
        "resnet18" => resnet(&mut b, Block::Basic, [2, 2, 2, 2], opts.classes),
        "resnet34" => resnet(&mut b, Block::Basic, [3, 4, 6, 3], opts.classes),
        "resnet50" => resnet(&mut b, Block::Bottleneck, [3, 4, 6, 3], opts.classes),
        "mobilenet_v2" => mobilenet_v2(&mut b, opts.classes),
        "vit_b_16" => vit(&mut b, &VIT_B_16, opts.classes),
        "vit_mini" => vit(&mut b, &VIT_MINI, opts.classes),
        _ => return None,
    };
    Some(built.and_then(|out| b.finish(out)))
}

/// Adds nodes while tracking shapes, so builders read channel counts and
/// flattened sizes instead of hard-coding them.
struct Builder {
    graph: Graph,
    shapes: Vec<Shape>,
}

type R = Result<NodeId, GraphError>;

impl Builder {
    fn new(name: &str, input: [usize; 3]) -> Self {
        let graph = Graph {
            name: name.to_owned(),
            input,
            nodes: vec![Node {
                name: "input".into(),
                op: Op::Input,
                inputs: vec![],
                functional: true,
            }],
            output: 0,
        };
        let shapes = vec![Shape::Map {
            c: input[0],
            h: input[1],
            w: input[2],
        }];
        Builder { graph, shapes }
    }

    fn add(&mut self, name: &str, op: Op, inputs: &[NodeId], functional: bool) -> R {
        self.graph.nodes.push(Node {
            name: name.to_owned(),
            op,
            inputs: inputs.to_vec(),
            functional,
        });
        self.graph.output = self.graph.nodes.len() - 1;
        // Re-analysing the growing graph keeps one source of truth for
        // shapes; zoo graphs are small enough for this to cost nothing.
        let a = analyze(&self.graph, self.graph.input)?;
        self.shapes = a.shapes;
        Ok(self.graph.output)
    }

    fn channels(&self, x: NodeId) -> usize {
        self.shapes[x].channels()
    }

    #[allow(clippy::too_many_arguments)]
    fn conv(
        &mut self,
        name: &str,
        x: NodeId,
        out: usize,
        k: usize,
        stride: usize,
        padding: usize,
        groups: usize,
        bias: bool,
    ) -> R {
        let op = Op::Conv2d {
            in_channels: self.channels(x),
            out_channels: out,
            kernel: [k, k],
            stride: [stride, stride],
            padding: [padding, padding],
            dilation: [1, 1],
            groups,
            bias,
        };
        self.add(name, op, &[x], false)
    }

    fn bn(&mut self, name: &str, x: NodeId) -> R {
        let op = Op::BatchNorm2d {
            features: self.channels(x),
            eps: 1e-5,
            momentum: 0.1,
        };
        self.add(name, op, &[x], false)
    }

    fn relu(&mut self, name: &str, x: NodeId, functional: bool) -> R {
        self.add(name, Op::Relu, &[x], functional)
    }

    fn maxpool(
        &mut self,
        name: &str,
        x: NodeId,
        k: usize,
        s: usize,
        p: usize,
        functional: bool,
    ) -> R {
        let op = Op::MaxPool2d {
            kernel: [k, k],
            stride: [s, s],
            padding: [p, p],
            ceil_mode: false,
        };
        self.add(name, op, &[x], functional)
    }

    fn flatten(&mut self, x: NodeId) -> R {
        self.add("flatten", Op::Flatten, &[x], true)
    }

    fn linear(&mut self, name: &str, x: NodeId, out: usize) -> R {
        let op = Op::Linear {
            in_features: self.channels(x),
            out_features: out,
            bias: true,
        };
        self.add(name, op, &[x], false)
    }

    fn finish(mut self, out: NodeId) -> Result<Graph, GraphError> {
        self.graph.output = out;
        Ok(self.graph)
    }
}

/// LeNet-5 as in the classic post-training pruning tutorial: `F.relu`,
/// one `maxpool` module used twice, three linear layers.
fn lenet5(b: &mut Builder, classes: usize) -> R {
    let x = b.conv("conv1", 0, 6, 5, 1, 0, 1, true)?;
    let x = b.relu("relu", x, true)?;
    let x = b.maxpool("maxpool", x, 2, 2, 0, false)?;
    let x = b.conv("conv2", x, 16, 5, 1, 0, 1, true)?;
    let x = b.relu("relu", x, true)?;
    let x = b.maxpool("maxpool", x, 2, 2, 0, false)?;
    let x = b.flatten(x)?;
    let x = b.linear("fc1", x, 120)?;
    let x = b.relu("relu", x, true)?;
    let x = b.linear("fc2", x, 84)?;
    let x = b.relu("relu", x, true)?;
    b.linear("fc3", x, classes)
}

/// A small CNN: conv1 → bn1 → ReLU → pool, conv2 → ReLU → pool, fc.
fn simplecnn(b: &mut Builder, classes: usize) -> R {
    let x = b.conv("conv1", 0, 32, 3, 1, 1, 1, true)?;
    let x = b.bn("bn1", x)?;
    let x = b.relu("relu", x, true)?;
    let x = b.maxpool("max_pool2d", x, 2, 2, 0, true)?;
    let x = b.conv("conv2", x, 64, 3, 1, 1, 1, true)?;
    let x = b.relu("relu", x, true)?;
    let x = b.maxpool("max_pool2d", x, 2, 2, 0, true)?;
    let x = b.flatten(x)?;
    b.linear("fc", x, classes)
}

const VGG11: [usize; 13] = [64, 0, 128, 0, 256, 256, 0, 512, 512, 0, 512, 512, 0];
const VGG16: [usize; 18] = [
    64, 64, 0, 128, 128, 0, 256, 256, 256, 0, 512, 512, 512, 0, 512, 512, 512, 0,
];

/// torchvision's VGG with BatchNorm; `0` in the configuration is a max pool.
fn vgg(b: &mut Builder, cfg: &[usize], classes: usize) -> R {
    let mut x = 0;
    let mut i = 0;
    for &v in cfg {
        if v == 0 {
            x = b.maxpool(&format!("features.{i}"), x, 2, 2, 0, false)?;
            i += 1;
        } else {
            x = b.conv(&format!("features.{i}"), x, v, 3, 1, 1, 1, true)?;
            x = b.bn(&format!("features.{}", i + 1), x)?;
            x = b.relu(&format!("features.{}", i + 2), x, false)?;
            i += 3;
        }
    }
    x = b.add(
        "avgpool",
        Op::AdaptiveAvgPool2d { output: [7, 7] },
        &[x],
        false,
    )?;
    x = b.flatten(x)?;
    x = b.linear("classifier.0", x, 4096)?;
    x = b.relu("classifier.1", x, false)?;
    x = b.add("classifier.2", Op::Dropout { p: 0.5 }, &[x], false)?;
    x = b.linear("classifier.3", x, 4096)?;
    x = b.relu("classifier.4", x, false)?;
    x = b.add("classifier.5", Op::Dropout { p: 0.5 }, &[x], false)?;
    b.linear("classifier.6", x, classes)
}

#[derive(Clone, Copy, PartialEq)]
enum Block {
    Basic,
    Bottleneck,
}

/// torchvision's ResNet (v1.5: the stride of a bottleneck is on its 3×3 conv).
fn resnet(b: &mut Builder, block: Block, layers: [usize; 4], classes: usize) -> R {
    let expansion = if block == Block::Basic { 1 } else { 4 };
    let mut x = b.conv("conv1", 0, 64, 7, 2, 3, 1, false)?;
    x = b.bn("bn1", x)?;
    x = b.relu("relu", x, false)?;
    x = b.maxpool("maxpool", x, 3, 2, 1, false)?;
    for (li, (&n, planes)) in layers.iter().zip([64, 128, 256, 512]).enumerate() {
        for j in 0..n {
            let p = format!("layer{}.{j}", li + 1);
            let stride = if j == 0 && li > 0 { 2 } else { 1 };
            let identity = x;
            let inplanes = b.channels(x);
            let mut y;
            if block == Block::Basic {
                y = b.conv(&format!("{p}.conv1"), x, planes, 3, stride, 1, 1, false)?;
                y = b.bn(&format!("{p}.bn1"), y)?;
                y = b.relu(&format!("{p}.relu"), y, false)?;
                y = b.conv(&format!("{p}.conv2"), y, planes, 3, 1, 1, 1, false)?;
                y = b.bn(&format!("{p}.bn2"), y)?;
            } else {
                y = b.conv(&format!("{p}.conv1"), x, planes, 1, 1, 0, 1, false)?;
                y = b.bn(&format!("{p}.bn1"), y)?;
                y = b.relu(&format!("{p}.relu"), y, false)?;
                y = b.conv(&format!("{p}.conv2"), y, planes, 3, stride, 1, 1, false)?;
                y = b.bn(&format!("{p}.bn2"), y)?;
                y = b.relu(&format!("{p}.relu"), y, false)?;
                y = b.conv(
                    &format!("{p}.conv3"),
                    y,
                    planes * expansion,
                    1,
                    1,
                    0,
                    1,
                    false,
                )?;
                y = b.bn(&format!("{p}.bn3"), y)?;
            }
            let shortcut = if stride != 1 || inplanes != planes * expansion {
                let d = b.conv(
                    &format!("{p}.downsample.0"),
                    identity,
                    planes * expansion,
                    1,
                    stride,
                    0,
                    1,
                    false,
                )?;
                b.bn(&format!("{p}.downsample.1"), d)?
            } else {
                identity
            };
            let sum = b.add(&format!("{p}.add"), Op::Add, &[y, shortcut], true)?;
            x = b.relu(&format!("{p}.relu"), sum, false)?;
        }
    }
    x = b.add(
        "avgpool",
        Op::AdaptiveAvgPool2d { output: [1, 1] },
        &[x],
        false,
    )?;
    x = b.flatten(x)?;
    b.linear("fc", x, classes)
}

/// torchvision's MobileNetV2 (width 1.0).
fn mobilenet_v2(b: &mut Builder, classes: usize) -> R {
    fn conv_bn_relu6(
        b: &mut Builder,
        p: &str,
        x: NodeId,
        out: usize,
        k: usize,
        stride: usize,
        groups: usize,
    ) -> R {
        let y = b.conv(
            &format!("{p}.0"),
            x,
            out,
            k,
            stride,
            (k - 1) / 2,
            groups,
            false,
        )?;
        let y = b.bn(&format!("{p}.1"), y)?;
        b.add(&format!("{p}.2"), Op::Relu6, &[y], false)
    }
    let settings = [
        (1, 16, 1, 1),
        (6, 24, 2, 2),
        (6, 32, 3, 2),
        (6, 64, 4, 2),
        (6, 96, 3, 1),
        (6, 160, 3, 2),
        (6, 320, 1, 1),
    ];
    let mut x = conv_bn_relu6(b, "features.0", 0, 32, 3, 2, 1)?;
    let mut f = 1;
    for (t, c, n, s) in settings {
        for i in 0..n {
            let stride = if i == 0 { s } else { 1 };
            let inp = b.channels(x);
            let hidden = inp * t;
            let p = format!("features.{f}.conv");
            let mut y = x;
            let mut k = 0;
            if t != 1 {
                y = conv_bn_relu6(b, &format!("{p}.{k}"), y, hidden, 1, 1, 1)?;
                k += 1;
            }
            y = conv_bn_relu6(b, &format!("{p}.{k}"), y, hidden, 3, stride, hidden)?;
            y = b.conv(&format!("{p}.{}", k + 1), y, c, 1, 1, 0, 1, false)?;
            y = b.bn(&format!("{p}.{}", k + 2), y)?;
            x = if stride == 1 && inp == c {
                b.add(&format!("features.{f}.add"), Op::Add, &[x, y], true)?
            } else {
                y
            };
            f += 1;
        }
    }
    x = conv_bn_relu6(b, &format!("features.{f}"), x, 1280, 1, 1, 1)?;
    x = b.add(
        "adaptive_avg_pool2d",
        Op::AdaptiveAvgPool2d { output: [1, 1] },
        &[x],
        true,
    )?;
    x = b.flatten(x)?;
    x = b.add("classifier.0", Op::Dropout { p: 0.2 }, &[x], false)?;
    b.linear("classifier.1", x, classes)
}

/// A vision transformer's sizes (torchvision's `VisionTransformer` arguments).
struct VitConfig {
    patch: usize,
    layers: usize,
    heads: usize,
    hidden: usize,
    mlp: usize,
}

/// torchvision's `vit_b_16`.
const VIT_B_16: VitConfig = VitConfig {
    patch: 16,
    layers: 12,
    heads: 12,
    hidden: 768,
    mlp: 3072,
};

/// A small ViT for 28×28 images (Fashion-MNIST) that trains on a few CPU
/// cores: torchvision's `VisionTransformer(image_size=28, patch_size=4,
/// num_layers=4, num_heads=4, hidden_dim=64, mlp_dim=128)`.
const VIT_MINI: VitConfig = VitConfig {
    patch: 4,
    layers: 4,
    heads: 4,
    hidden: 64,
    mlp: 128,
};

/// torchvision's `VisionTransformer`: a strided convolution cuts the image
/// into patches, a class token goes first, a position embedding is added,
/// pre-norm encoder blocks (attention, then the MLP, each with a residual),
/// a last LayerNorm, and the head reads the class token. The tokens follow
/// from the input size (torchvision fixes it at `image_size`).
fn vit(b: &mut Builder, cfg: &VitConfig, classes: usize) -> R {
    let ln = |features| Op::LayerNorm {
        features,
        eps: 1e-6,
    };
    let e = cfg.hidden;
    let x = b.conv("conv_proj", 0, e, cfg.patch, cfg.patch, 0, 1, true)?;
    let x = b.add("tokens", Op::ToTokens, &[x], true)?;
    let x = b.add("class_token", Op::ClassToken { features: e }, &[x], false)?;
    let tokens = match b.shapes[x] {
        Shape::Tokens { t, .. } => t,
        _ => unreachable!("a class token makes tokens"),
    };
    let x = b.add(
        "encoder.pos_embedding",
        Op::PosEmbedding {
            tokens,
            features: e,
        },
        &[x],
        false,
    )?;
    let mut x = b.add("encoder.dropout", Op::Dropout { p: 0.0 }, &[x], false)?;
    for i in 0..cfg.layers {
        let p = format!("encoder.layers.encoder_layer_{i}");
        let input = x;
        let y = b.add(&format!("{p}.ln_1"), ln(e), &[x], false)?;
        let y = b.add(
            &format!("{p}.self_attention"),
            Op::MultiheadAttention {
                embed: e,
                heads: cfg.heads,
                head_dim: e / cfg.heads,
                bias: true,
                kv_heads: None,
                style: Default::default(),
            },
            &[y],
            false,
        )?;
        let y = b.add(&format!("{p}.dropout"), Op::Dropout { p: 0.0 }, &[y], false)?;
        let x1 = b.add(&format!("{p}.add"), Op::Add, &[y, input], true)?;
        let y = b.add(&format!("{p}.ln_2"), ln(e), &[x1], false)?;
        let y = b.linear(&format!("{p}.mlp.0"), y, cfg.mlp)?;
        let y = b.add(&format!("{p}.mlp.1"), Op::Gelu, &[y], false)?;
        let y = b.add(&format!("{p}.mlp.2"), Op::Dropout { p: 0.0 }, &[y], false)?;
        let y = b.linear(&format!("{p}.mlp.3"), y, e)?;
        let y = b.add(&format!("{p}.mlp.4"), Op::Dropout { p: 0.0 }, &[y], false)?;
        x = b.add(&format!("{p}.add_1"), Op::Add, &[x1, y], true)?;
    }
    let x = b.add("encoder.ln", ln(e), &[x], false)?;
    let x = b.add("select", Op::TokenSelect { index: 0 }, &[x], true)?;
    b.linear("heads.head", x, classes)
}
