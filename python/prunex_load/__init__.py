"""Load what prunex exports into your own PyTorch module.

A channel-pruned model has fewer channels than the class that defines it.
``load_pruned`` resizes every Conv2d, Linear, BatchNorm2d, LayerNorm and
MultiheadAttention of ``model``, and every other parameter (ConvNeXt's
``layer_scale``, a ViT's ``class_token`` and ``pos_embedding``), to the
shapes in prunex's ``weights.safetensors`` (keyed as the module's
``state_dict``), then loads the weights with ``strict=True``::

    import torchvision
    from prunex_load import load_pruned

    model = torchvision.models.resnet18(num_classes=10)
    load_pruned(model, "runs/my-recipe/weights.safetensors")

Import it from the repository (``sys.path.insert(0, "python")``) or install
it: ``pip install ./python``. It needs torch and safetensors.

Layers are resized in place; nothing else of the module changes, so its
``forward`` runs as written. Two exceptions, because PyTorch's classes
cannot say what a pruned transformer is: an ``nn.MultiheadAttention``
whose heads prunex removed keeps ``embed_dim`` wide tokens but attends in
fewer heads, narrower than ``embed_dim``, which it cannot hold; it is
replaced by ``PrunedMultiheadAttention``, which computes what it computes
with the same ``state_dict`` keys. A torchvision ``VisionTransformer``
reads its width from ``hidden_dim``, and a timm ``Attention`` its heads
from ``num_heads``: both are set to what the pruned weights hold. Other
attention classes that keep their sizes in attributes need them set by
hand (``model.yaml`` lists every layer's heads). A model whose blocks prunex removed (``prune
blocks``) has a different structure: ``load_state_dict`` then names the
missing keys; use ``model.onnx`` or ``model.yaml`` for such a model.
"""

import os

import torch
from safetensors.torch import load_file
from torch import nn

__all__ = ["load_pruned", "resize", "PrunedMultiheadAttention"]


class PrunedMultiheadAttention(nn.Module):
    """``nn.MultiheadAttention`` (self-attention, no masks, no attention
    dropout) whose attention width ``num_heads * head_dim`` may differ
    from ``embed_dim``: what remains when heads are pruned. Its parameters
    have ``nn.MultiheadAttention``'s names and layout."""

    def __init__(self, embed_dim, num_heads, head_dim, bias=True, batch_first=True):
        super().__init__()
        width = num_heads * head_dim
        self.embed_dim, self.num_heads, self.head_dim = embed_dim, num_heads, head_dim
        self.batch_first = batch_first
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, embed_dim))
        self.in_proj_bias = nn.Parameter(torch.empty(3 * width)) if bias else None
        self.out_proj = nn.Linear(width, embed_dim, bias=bias)

    def forward(self, query, key=None, value=None, need_weights=False, **_):
        x = query if self.batch_first else query.transpose(0, 1)
        n, t, _ = x.shape
        qkv = nn.functional.linear(x, self.in_proj_weight, self.in_proj_bias)
        q, k, v = qkv.view(n, t, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        y = nn.functional.scaled_dot_product_attention(q, k, v)
        y = self.out_proj(y.transpose(1, 2).reshape(n, t, self.num_heads * self.head_dim))
        return (y if self.batch_first else y.transpose(0, 1)), None


def _attention(old, state, name):
    """The attention layer ``old`` resized to ``state``, or None."""
    weight = state.get(f"{name}.in_proj_weight")
    out = state.get(f"{name}.out_proj.weight")
    if weight is None or out is None:
        return None
    if weight.shape == old.in_proj_weight.shape and out.shape == old.out_proj.weight.shape:
        return None
    embed, width = out.shape
    # prunex removes whole heads: the original head_dim stays.
    head_dim = old.head_dim
    heads = width // head_dim
    bias = old.in_proj_bias is not None
    if width == embed:
        # PyTorch's class holds it: resize in place.
        new = nn.MultiheadAttention(embed, heads, dropout=old.dropout, bias=bias,
                                    batch_first=old.batch_first)
        return new
    new = PrunedMultiheadAttention(embed, heads, head_dim, bias=bias, batch_first=old.batch_first)
    return new


def _conv(old, weight, bias):
    out_channels, per_group = weight.shape[0], weight.shape[1]
    if old.groups > 1 and old.groups == old.in_channels == old.out_channels:
        # Depthwise: one group per channel, however many are left.
        groups = out_channels
    else:
        groups = old.groups
    new = nn.Conv2d(
        per_group * groups,
        out_channels,
        old.kernel_size,
        stride=old.stride,
        padding=old.padding,
        dilation=old.dilation,
        groups=groups,
        bias=bias is not None,
        padding_mode=old.padding_mode,
    )
    return new


def _replacement(old, state, name):
    def get(key):
        return state.get(f"{name}.{key}" if name else key)

    weight = get("weight")
    if weight is None:
        return None
    if isinstance(old, nn.Conv2d):
        if weight.shape == old.weight.shape:
            return None
        return _conv(old, weight, get("bias"))
    if isinstance(old, nn.Linear):
        if weight.shape == old.weight.shape:
            return None
        return nn.Linear(weight.shape[1], weight.shape[0], bias=get("bias") is not None)
    if isinstance(old, nn.BatchNorm2d):
        if weight.shape == old.weight.shape:
            return None
        return nn.BatchNorm2d(
            weight.shape[0],
            eps=old.eps,
            momentum=old.momentum,
            affine=old.affine,
            track_running_stats=old.track_running_stats,
        )
    return None


def _parameter(module, attr, shape):
    old = getattr(module, attr)
    setattr(module, attr, nn.Parameter(torch.empty(shape, dtype=old.dtype, device=old.device),
                                       requires_grad=old.requires_grad))


def resize(model, state):
    """Replaces each layer of ``model`` whose shape differs from ``state``
    (a state_dict) by one of the state's shape, and resizes the other
    parameters in place. Returns the names resized."""
    resized = []
    for name, module in list(model.named_modules()):
        if isinstance(module, nn.LayerNorm) and module.elementwise_affine:
            # In place: subclasses (torchvision's LayerNorm2d) keep their
            # forward.
            weight = state.get(f"{name}.weight" if name else "weight")
            if weight is not None and weight.shape != module.weight.shape:
                module.normalized_shape = tuple(weight.shape)
                _parameter(module, "weight", weight.shape)
                if module.bias is not None:
                    _parameter(module, "bias", weight.shape)
                resized.append(name)
    for name, module in list(model.named_modules()):
        if isinstance(module, nn.MultiheadAttention):
            new = _attention(module, state, name)
        elif isinstance(module, nn.modules.linear.NonDynamicallyQuantizableLinear):
            # An attention's out_proj: replaced with its attention.
            new = None
        else:
            new = _replacement(module, state, name)
        if new is None:
            continue
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        device = next(module.parameters()).device
        setattr(parent, attr, new.to(device))
        resized.append(name)
    # Parameters outside those layers (a block's own `layer_scale`).
    for key, p in list(model.named_parameters()):
        target = state.get(key)
        if target is not None and target.shape != p.shape:
            owner, _, attr = key.rpartition(".")
            _parameter(model.get_submodule(owner) if owner else model, attr, target.shape)
            resized.append(key)
    # timm's Attention reshapes by `num_heads` and `head_dim`: heads pruned
    # keep their width, so the count follows the packed projection.
    for module in model.modules():
        qkv = getattr(module, "qkv", None)
        heads, head_dim = getattr(module, "num_heads", None), getattr(module, "head_dim", None)
        if isinstance(qkv, nn.Linear) and isinstance(heads, int) and isinstance(head_dim, int) and head_dim:
            module.num_heads = qkv.out_features // (3 * head_dim)
            if hasattr(module, "attn_dim"):
                module.attn_dim = module.num_heads * head_dim
    # torchvision's VisionTransformer reshapes its patches to `hidden_dim`.
    conv = getattr(model, "conv_proj", None)
    if isinstance(getattr(model, "hidden_dim", None), int) and isinstance(conv, nn.Conv2d):
        model.hidden_dim = conv.out_channels
    return resized


def load_pruned(model, weights, strict=True):
    """Resizes ``model``'s layers to prunex's exported weights (a path to
    ``weights.safetensors``, or a state_dict) and loads them. Returns the
    model."""
    if isinstance(weights, (str, os.PathLike)):
        state = load_file(os.fspath(weights))
    else:
        state = weights
    resize(model, state)
    model.load_state_dict(state, strict=strict)
    return model
