//! A libtorch module built from the graph IR, walking it once like tch-rs's
//! `darknet.rs`: variables are named by their PyTorch module paths, so a
//! `VarStore` holds exactly a PyTorch `state_dict` (BatchNorm buffers
//! included) and weights map both ways without renaming.

use std::collections::BTreeMap;

use prunex::graph::{Graph, Op};
use prunex::tensor::{StateDict, Tensor as Weights, TensorData};
use tch::nn::{self, Init};
use tch::{Device, TchError, Tensor};

use super::convert::{from_plain, to_plain};

/// Parameters of one node.
enum Params {
    None,
    Conv {
        w: Tensor,
        b: Option<Tensor>,
    },
    Linear {
        w: Tensor,
        b: Option<Tensor>,
    },
    Bn {
        w: Tensor,
        b: Tensor,
        mean: Tensor,
        var: Tensor,
    },
    Ln {
        w: Tensor,
        b: Tensor,
    },
    Scale {
        s: Tensor,
    },
    /// A class token or position embedding.
    Embedding {
        e: Tensor,
    },
    /// Each projection's weight and bias, in the layout's order (the
    /// output projection last).
    Attention {
        proj: Vec<(Tensor, Option<Tensor>)>,
    },
}

impl Params {
    /// The same variables (a module called twice).
    fn share(&self) -> Params {
        let c = Tensor::shallow_clone;
        let o = |t: &Option<Tensor>| t.as_ref().map(Tensor::shallow_clone);
        match self {
            Params::Conv { w, b } => Params::Conv { w: c(w), b: o(b) },
            Params::Linear { w, b } => Params::Linear { w: c(w), b: o(b) },
            Params::Bn { w, b, mean, var } => Params::Bn {
                w: c(w),
                b: c(b),
                mean: c(mean),
                var: c(var),
            },
            Params::Ln { w, b } => Params::Ln { w: c(w), b: c(b) },
            Params::Scale { s } => Params::Scale { s: c(s) },
            Params::Embedding { e } => Params::Embedding { e: c(e) },
            Params::Attention { proj } => Params::Attention {
                proj: proj.iter().map(|(w, b)| (c(w), o(b))).collect(),
            },
            Params::None => Params::None,
        }
    }
}

/// A graph with its parameters on a device.
pub struct TorchModel {
    /// The graph.
    pub graph: Graph,
    /// The variables, named as the PyTorch state_dict names them.
    pub vs: nn::VarStore,
    params: Vec<Params>,
    /// `num_batches_tracked` of each BatchNorm, by module path.
    pub batches_tracked: BTreeMap<String, i64>,
    /// When set, forward adds the sum of squares of every input feature
    /// of every weight matrix here, by its key (Wanda's calibration).
    pub record: Option<BTreeMap<String, Tensor>>,
    /// When set, BatchNorm in training mode calls this instead of
    /// libtorch's (a distributed run's synchronised BatchNorm).
    pub batch_norm: Option<std::rc::Rc<BatchNormFn>>,
}

/// A BatchNorm in training mode: `(x, γ, β, running mean, running var,
/// momentum, eps)` to the output, updating the running statistics.
pub type BatchNormFn =
    dyn Fn(&Tensor, &Tensor, &Tensor, &Tensor, &Tensor, f64, f64) -> Result<Tensor, TchError>;

/// Adds the sum of squares of `x`'s features (dimension 1 of a map, the
/// last of tokens or vectors) to `rec[key]`.
fn record(rec: &mut BTreeMap<String, Tensor>, key: String, x: &Tensor) -> Result<(), TchError> {
    let dims: Vec<i64> = if x.dim() == 4 {
        vec![0, 2, 3]
    } else {
        (0..x.dim() as i64 - 1).collect()
    };
    let s = x
        .f_square()?
        .f_sum_dim_intlist(dims.as_slice(), false, tch::Kind::Float)?;
    let sum = match rec.remove(&key) {
        Some(prev) => prev.f_add(&s)?,
        None => s,
    };
    rec.insert(key, sum);
    Ok(())
}

fn ints(v: [usize; 2]) -> [i64; 2] {
    [v[0] as i64, v[1] as i64]
}

impl TorchModel {
    /// Creates the variables of `graph` on `device`, initialised as PyTorch
    /// initialises them: convolution and linear weights and biases uniform in
    /// ±1/√fan_in (what `kaiming_uniform_(a=√5)` amounts to), BatchNorm γ=1
    /// β=0, running mean 0 and variance 1.
    pub fn new(graph: &Graph, device: Device) -> Self {
        let vs = nn::VarStore::new(device);
        let root = vs.root();
        let mut params = Vec::with_capacity(graph.nodes.len());
        let mut made: BTreeMap<String, usize> = BTreeMap::new();
        let mut batches_tracked = BTreeMap::new();
        for (id, node) in graph.nodes.iter().enumerate() {
            if node.functional || !node.op.has_weights() {
                params.push(Params::None);
                continue;
            }
            // A module used twice shares its variables.
            if let Some(&first) = made.get(&node.name) {
                let shared = params[first].share();
                params.push(shared);
                continue;
            }
            made.insert(node.name.clone(), id);
            let shapes: BTreeMap<&str, Vec<i64>> = node
                .op
                .state()
                .into_iter()
                .map(|(k, s)| (k, s.iter().map(|&d| d as i64).collect()))
                .collect();
            // The variable of tensor `suffix`, at its state_dict key's path
            // (tch names a variable by one path component).
            let var = |suffix: &str, init: Init| -> Option<Tensor> {
                let shape = shapes.get(suffix)?;
                let key = node.key(suffix);
                let (path, name) = key.rsplit_once('.').unwrap_or(("", key.as_str()));
                let p = path
                    .split('.')
                    .filter(|s| !s.is_empty())
                    .fold(root.clone(), |p, part| p / part);
                Some(p.var(name, shape, init))
            };
            let p = node.name.split('.').fold(root.clone(), |p, part| p / part);
            // Uniform in ±1/√fan_in, for weights and biases alike.
            let uniform = |name: &str, fan_in: usize| {
                let bound = 1.0 / (fan_in as f64).sqrt();
                var(
                    name,
                    Init::Uniform {
                        lo: -bound,
                        up: bound,
                    },
                )
            };
            let entry = match node.op {
                Op::Conv2d {
                    in_channels,
                    groups,
                    kernel,
                    ..
                } => {
                    let fan_in = in_channels / groups.max(1) * kernel[0] * kernel[1];
                    Params::Conv {
                        w: uniform("weight", fan_in).expect("a convolution has weights"),
                        b: uniform("bias", fan_in),
                    }
                }
                Op::Linear { in_features, .. } => Params::Linear {
                    w: uniform("weight", in_features).expect("a linear layer has weights"),
                    b: uniform("bias", in_features),
                },
                Op::BatchNorm2d { .. } => {
                    batches_tracked.insert(node.name.clone(), 0);
                    Params::Bn {
                        w: p.var("weight", &shapes["weight"], Init::Const(1.0)),
                        b: p.var("bias", &shapes["bias"], Init::Const(0.0)),
                        mean: p.zeros_no_train("running_mean", &shapes["running_mean"]),
                        var: p.ones_no_train("running_var", &shapes["running_var"]),
                    }
                }
                Op::LayerNorm2d { .. } | Op::LayerNorm { .. } => Params::Ln {
                    w: p.var("weight", &shapes["weight"], Init::Const(1.0)),
                    b: p.var("bias", &shapes["bias"], Init::Const(0.0)),
                },
                // torchvision's ConvNeXt starts its layer scales at 1e-6.
                Op::LayerScale { .. } => Params::Scale {
                    s: p.var("layer_scale", &shapes["layer_scale"], Init::Const(1e-6)),
                },
                // torchvision: the class token starts at zero, the
                // position embedding normal with σ 0.02.
                Op::ClassToken { .. } => Params::Embedding {
                    e: var("", Init::Const(0.0)).expect("a class token has a parameter"),
                },
                Op::PosEmbedding { .. } => Params::Embedding {
                    e: var(
                        "",
                        Init::Randn {
                            mean: 0.0,
                            stdev: 0.02,
                        },
                    )
                    .expect("a position embedding has a parameter"),
                },
                // nn.MultiheadAttention: a Xavier-uniform packed
                // projection, zero biases, the output projection as a
                // linear layer's weight. Linear layers (timm's, separate
                // projections): PyTorch's linear initialisation.
                Op::MultiheadAttention { .. } => {
                    let l = prunex::graph::AttentionLayout::of(&node.op).expect("an attention");
                    let torch = l.style == prunex::graph::AttentionStyle::Torch;
                    let proj = l
                        .projections()
                        .iter()
                        .map(|p| {
                            let [rows, cols] = l.shape(p);
                            if torch && p.part != prunex::graph::attention::Part::Out {
                                let bound = (6.0 / (rows + cols) as f64).sqrt();
                                let w = Init::Uniform {
                                    lo: -bound,
                                    up: bound,
                                };
                                (var(p.weight, w), var(p.bias, Init::Const(0.0)))
                            } else if torch {
                                (uniform(p.weight, cols), var(p.bias, Init::Const(0.0)))
                            } else {
                                (uniform(p.weight, cols), uniform(p.bias, cols))
                            }
                        })
                        .map(|(w, b)| (w.expect("a projection has a weight"), b))
                        .collect();
                    Params::Attention { proj }
                }
                _ => Params::None,
            };
            params.push(entry);
        }
        TorchModel {
            graph: graph.clone(),
            vs,
            params,
            batches_tracked,
            record: None,
            batch_norm: None,
        }
    }

    /// Copies a state_dict (already checked against the graph) into the
    /// variables.
    pub fn load(&mut self, sd: &StateDict) -> Result<(), TchError> {
        let device = self.vs.device();
        let vars = self.vs.variables();
        tch::no_grad(|| -> Result<(), TchError> {
            for (key, t) in sd {
                if let Some(module) = key.strip_suffix(".num_batches_tracked") {
                    if let TensorData::I64(v) = &t.data {
                        self.batches_tracked
                            .insert(module.to_owned(), v.first().copied().unwrap_or(0));
                    }
                    continue;
                }
                let Some(var) = vars.get(key) else { continue };
                let src = from_plain(t, device)?
                    .ok_or_else(|| TchError::Kind(format!("`{key}` is not floating point")))?;
                let mut var = var.shallow_clone();
                var.f_copy_(&src)?;
            }
            Ok(())
        })
    }

    /// The variables (and BatchNorm counters) as a state_dict on the CPU.
    pub fn state_dict(&self) -> Result<StateDict, TchError> {
        let mut sd = StateDict::new();
        for (key, t) in self.vs.variables() {
            sd.insert(key, to_plain(&t)?);
        }
        for (module, n) in &self.batches_tracked {
            sd.insert(
                format!("{module}.num_batches_tracked"),
                Weights {
                    shape: vec![],
                    data: TensorData::I64(vec![*n]),
                },
            );
        }
        Ok(sd)
    }

    /// Runs the model on a batch `[N, C, H, W]`. In training mode BatchNorm
    /// uses batch statistics and updates its running ones, and dropout drops.
    pub fn forward(&mut self, x: &Tensor, train: bool) -> Result<Tensor, TchError> {
        let mut values: Vec<Option<Tensor>> = Vec::with_capacity(self.graph.nodes.len());
        let g = &self.graph;
        // Free each intermediate after its last use.
        let mut last_use = vec![0usize; g.nodes.len()];
        for (id, n) in g.nodes.iter().enumerate() {
            for &i in &n.inputs {
                last_use[i] = id;
            }
        }
        last_use[g.output] = usize::MAX;
        // A value with one reader, made by an op whose backward does not
        // read its own output, can be overwritten in place (ReLU and the
        // residual add, as torchvision's `inplace=True` and `out += identity`
        // do): one activation-sized buffer less per layer.
        let mut readers = vec![0usize; g.nodes.len()];
        for n in &g.nodes {
            for &i in &n.inputs {
                readers[i] += 1;
            }
        }
        readers[g.output] += 1;
        let reusable = |i: usize| {
            readers[i] == 1
                && matches!(
                    g.nodes[i].op,
                    Op::Conv2d { .. } | Op::BatchNorm2d { .. } | Op::Linear { .. } | Op::Add
                )
        };
        let mut counted = std::collections::HashSet::new();
        let mut rec = self.record.take();
        for (id, node) in g.nodes.iter().enumerate() {
            let arg = |k: usize| -> Result<&Tensor, TchError> {
                values[node.inputs[k]]
                    .as_ref()
                    .ok_or_else(|| TchError::Kind(format!("`{}` reads a freed value", node.name)))
            };
            if let Some(rec) = rec.as_mut() {
                // What the layer's weight matrices multiply: a layer's
                // weight, an attention's projections that read the tokens
                // (the output projection's input is measured inside it).
                let reads: Vec<&str> = match prunex::graph::AttentionLayout::of(&node.op) {
                    Some(l) => l
                        .projections()
                        .iter()
                        .filter(|p| p.part != prunex::graph::attention::Part::Out)
                        .map(|p| p.weight)
                        .collect(),
                    None => node
                        .op
                        .weight_matrices()
                        .first()
                        .map(|(s, _)| vec![*s])
                        .unwrap_or_default(),
                };
                for suffix in reads {
                    record(rec, node.key(suffix), arg(0)?)?;
                }
            }
            let out = match (&node.op, &self.params[id]) {
                (Op::Relu, _) if reusable(node.inputs[0]) => {
                    let mut v = values[node.inputs[0]].take().ok_or_else(|| {
                        TchError::Kind(format!("`{}` reads a freed value", node.name))
                    })?;
                    v.f_relu_()?
                }
                (Op::Add, _)
                    if node.inputs.len() == 2
                        && node.inputs[0] != node.inputs[1]
                        && reusable(node.inputs[0]) =>
                {
                    let mut v = values[node.inputs[0]].take().ok_or_else(|| {
                        TchError::Kind(format!("`{}` reads a freed value", node.name))
                    })?;
                    let other = values[node.inputs[1]].as_ref().ok_or_else(|| {
                        TchError::Kind(format!("`{}` reads a freed value", node.name))
                    })?;
                    v.f_add_(other)?
                }
                (Op::Input, _) => x.shallow_clone(),
                (
                    Op::Conv2d {
                        stride,
                        padding,
                        dilation,
                        groups,
                        ..
                    },
                    Params::Conv { w, b },
                ) => arg(0)?.f_conv2d(
                    w,
                    b.as_ref(),
                    ints(*stride),
                    ints(*padding),
                    ints(*dilation),
                    *groups as i64,
                )?,
                (Op::Linear { .. }, Params::Linear { w, b }) => {
                    let x = arg(0)?;
                    if x.dim() == 4 {
                        // The channels of a map, at every position.
                        x.f_permute([0, 2, 3, 1])?
                            .f_linear(w, b.as_ref())?
                            .f_permute([0, 3, 1, 2])?
                    } else {
                        x.f_linear(w, b.as_ref())?
                    }
                }
                (Op::LayerNorm2d { features, eps }, Params::Ln { w, b }) => arg(0)?
                    .f_permute([0, 2, 3, 1])?
                    .f_layer_norm([*features as i64], Some(w), Some(b), *eps, true)?
                    .f_permute([0, 3, 1, 2])?,
                (Op::LayerScale { .. }, Params::Scale { s }) => arg(0)?.f_mul(s)?,
                (Op::LayerNorm { features, eps }, Params::Ln { w, b }) => {
                    arg(0)?.f_layer_norm([*features as i64], Some(w), Some(b), *eps, true)?
                }
                (Op::ToTokens, _) => arg(0)?.f_flatten(2, 3)?.f_transpose(1, 2)?,
                (Op::ClassToken { .. }, Params::Embedding { e }) => {
                    let x = arg(0)?;
                    let token = e.f_expand([x.size()[0], -1, -1], false)?;
                    Tensor::f_cat(&[&token, x], 1)?
                }
                (Op::PosEmbedding { .. }, Params::Embedding { e }) => arg(0)?.f_add(e)?,
                (Op::MultiheadAttention { .. }, Params::Attention { proj }) => {
                    let l = prunex::graph::AttentionLayout::of(&node.op).expect("an attention");
                    let x = arg(0)?;
                    let (n, t, _) = x.size3()?;
                    let (h, g, d) = (l.heads as i64, l.kv_heads as i64, l.head_dim as i64);
                    let heads_of = |y: Tensor, k: i64| -> Result<Tensor, TchError> {
                        y.f_view([n, t, k, d])?.f_transpose(1, 2)
                    };
                    let (q, k, v) = if let [(w, b), _] = &proj[..] {
                        // Packed: [N, T, 3A] → [3, N, H, T, d].
                        let qkv = x
                            .f_linear(w, b.as_ref())?
                            .f_view([n, t, 3, h, d])?
                            .f_permute([2, 0, 3, 1, 4])?;
                        (
                            qkv.f_select(0, 0)?,
                            qkv.f_select(0, 1)?,
                            qkv.f_select(0, 2)?,
                        )
                    } else {
                        let lin = |k: usize| x.f_linear(&proj[k].0, proj[k].1.as_ref());
                        // Each key/value head serves `heads / kv_heads`
                        // query heads in a row.
                        let widen = |y: Tensor| -> Result<Tensor, TchError> {
                            if g == h {
                                Ok(y)
                            } else {
                                y.f_repeat_interleave_self_int(h / g, Some(1), None)
                            }
                        };
                        (
                            heads_of(lin(0)?, h)?,
                            widen(heads_of(lin(1)?, g)?)?,
                            widen(heads_of(lin(2)?, g)?)?,
                        )
                    };
                    // No attention dropout (torchvision's ViTs have none).
                    let mixed = Tensor::f_scaled_dot_product_attention::<Tensor>(
                        &q, &k, &v, None, 0.0, false, None, false,
                    )?
                    .f_transpose(1, 2)?
                    .f_reshape([n, t, h * d])?;
                    if let Some(rec) = rec.as_mut() {
                        record(rec, node.key(l.out().weight), &mixed)?;
                    }
                    let (w, b) = proj.last().expect("an output projection");
                    mixed.f_linear(w, b.as_ref())?
                }
                (Op::TokenSelect { index }, _) => arg(0)?.f_select(1, *index as i64)?,
                (Op::BatchNorm2d { eps, momentum, .. }, Params::Bn { w, b, mean, var }) => {
                    if train && counted.insert(node.name.clone()) {
                        *self.batches_tracked.entry(node.name.clone()).or_insert(0) += 1;
                    }
                    match self.batch_norm.as_ref().filter(|_| train) {
                        Some(f) => f(arg(0)?, w, b, mean, var, *momentum, *eps)?,
                        None => arg(0)?.f_batch_norm(
                            Some(w),
                            Some(b),
                            Some(mean),
                            Some(var),
                            train,
                            *momentum,
                            *eps,
                            true,
                        )?,
                    }
                }
                (Op::Relu, _) => arg(0)?.f_relu()?,
                (Op::Relu6, _) => arg(0)?.f_clamp(0.0, 6.0)?,
                (Op::Gelu, _) => arg(0)?.f_gelu("none")?,
                (Op::Silu, _) => arg(0)?.f_silu()?,
                (Op::Sigmoid, _) => arg(0)?.f_sigmoid()?,
                (Op::Hardswish, _) => arg(0)?.f_hardswish()?,
                (Op::Hardsigmoid, _) => arg(0)?.f_hardsigmoid()?,
                (
                    Op::MaxPool2d {
                        kernel,
                        stride,
                        padding,
                        ceil_mode,
                    },
                    _,
                ) => arg(0)?.f_max_pool2d(
                    ints(*kernel),
                    ints(*stride),
                    ints(*padding),
                    [1, 1],
                    *ceil_mode,
                )?,
                (
                    Op::AvgPool2d {
                        kernel,
                        stride,
                        padding,
                    },
                    _,
                ) => arg(0)?.f_avg_pool2d(
                    ints(*kernel),
                    ints(*stride),
                    ints(*padding),
                    false,
                    true,
                    None,
                )?,
                (Op::AdaptiveAvgPool2d { output }, _) => {
                    arg(0)?.f_adaptive_avg_pool2d(ints(*output))?
                }
                (Op::Flatten, _) => arg(0)?.f_flatten(1, -1)?,
                (Op::Add, _) => {
                    let mut acc = arg(0)?.f_add(arg(1)?)?;
                    for k in 2..node.inputs.len() {
                        acc = acc.f_add(arg(k)?)?;
                    }
                    acc
                }
                (Op::Mul, _) => {
                    let mut acc = arg(0)?.f_mul(arg(1)?)?;
                    for k in 2..node.inputs.len() {
                        acc = acc.f_mul(arg(k)?)?;
                    }
                    acc
                }
                (Op::Concat, _) => {
                    let parts: Vec<&Tensor> =
                        (0..node.inputs.len()).map(arg).collect::<Result<_, _>>()?;
                    Tensor::f_cat(&parts, 1)?
                }
                (Op::Dropout { p }, _) => arg(0)?.f_dropout(*p, train)?,
                (Op::Identity, _) => arg(0)?.shallow_clone(),
                (Op::ChannelShuffle { groups }, _) => {
                    let x = arg(0)?;
                    let (n, c, h, w) = x.size4()?;
                    let g = *groups as i64;
                    x.f_view([n, g, c / g, h, w])?
                        .f_transpose(1, 2)?
                        .f_contiguous()?
                        .f_view([n, c, h, w])?
                }
                (Op::Slice { start, end }, _) => {
                    arg(0)?.f_narrow(1, *start as i64, (*end - *start) as i64)?
                }
                (op, _) => {
                    return Err(TchError::Kind(format!(
                        "`{}`: {} has no parameters",
                        node.name,
                        op.kind()
                    )))
                }
            };
            values.push(Some(out));
            for &i in &node.inputs {
                if last_use[i] == id {
                    values[i] = None;
                }
            }
        }
        self.record = rec;
        values[g.output]
            .take()
            .ok_or_else(|| TchError::Kind("the output was freed".into()))
    }
}
