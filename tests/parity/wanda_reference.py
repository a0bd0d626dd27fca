"""Wanda (Sun et al., 2023) on prunex's `vit_mini`, in PyTorch.

    wanda_reference.py WEIGHTS IO.safetensors SPARSITY OUT.safetensors

loads WEIGHTS into torchvision's VisionTransformer (`vit_mini`), runs IO's
`x` through it in eval mode as the calibration batch, and for every weight
matrix of a convolution, linear layer and attention projection scores
|W| * ||X_j||_2 (the L2 norm of input feature j over every sample and
token; a convolution's input channel over every position); each output row
then keeps all but its SPARSITY * columns lowest scores. Writes each mask
(1 kept, 0 pruned) under its weight's state_dict key.
"""
import sys

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from reference import vit_mini

weights, io, sparsity, out = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4]
m = vit_mini().eval()
m.load_state_dict(load_file(weights), strict=True)
norms = {}


def add(key, x, dims):
    s = x.detach().square().sum(dims)
    norms[key] = norms.get(key, 0) + s


hooks = []
for name, mod in m.named_modules():
    if isinstance(mod, nn.MultiheadAttention):
        def attention(mod, args, kwargs, name=name):
            x = args[0]
            add(f"{name}.in_proj_weight", x, (0, 1))
            # What out_proj multiplies (F.multi_head_attention_forward reads
            # its weight without calling it as a module).
            n, t, e = x.shape
            h = mod.num_heads
            qkv = F.linear(x, mod.in_proj_weight, mod.in_proj_bias).view(n, t, 3, h, e // h)
            q, k, v = qkv.permute(2, 0, 3, 1, 4)
            mixed = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(n, t, e)
            add(f"{name}.out_proj.weight", mixed, (0, 1))
        hooks.append(mod.register_forward_pre_hook(attention, with_kwargs=True))
    elif isinstance(mod, nn.Linear) and not isinstance(mod, nn.modules.linear.NonDynamicallyQuantizableLinear):
        hooks.append(mod.register_forward_pre_hook(
            lambda mod, args, name=name: add(f"{name}.weight", args[0], tuple(range(args[0].dim() - 1)))))
    elif isinstance(mod, nn.Conv2d):
        hooks.append(mod.register_forward_pre_hook(
            lambda mod, args, name=name: add(f"{name}.weight", args[0], (0, 2, 3))))
with torch.no_grad():
    m(load_file(io)["x"])
sd = m.state_dict()
masks = {}
for key, s in norms.items():
    w = sd[key]
    score = w.abs() * s.sqrt().view(1, -1, *([1] * (w.dim() - 2)))
    rows = score.reshape(w.shape[0], -1)
    remove = int(rows.shape[1] * sparsity)
    order = torch.sort(rows, dim=1, stable=True).indices[:, :remove]
    mask = torch.ones_like(rows)
    mask.scatter_(1, order, 0.0)
    masks[key] = mask.reshape(w.shape).contiguous()
save_file(masks, out)
