"""Torch-Pruning's head pruning on a timm-style attention, for prunex's
heads parity test.

    tp_heads.py OUT

builds a small transformer with timm's attention layout (a patch
convolution, tokens, LayerNorm, `attn.qkv` and `attn.proj` linear layers
with `num_heads` 8 and `head_dim` 8, a residual, the first token to `head`),
seeded random weights, and prunes it with Torch-Pruning 1.6.1's MetaPruner:
MagnitudeImportance(p=2), local, `num_heads={attn.qkv: 8}`,
`prune_num_heads=True`, `prune_head_dims=False`, `head_pruning_ratio=0.5`,
`pruning_ratio=0.5`, `head` ignored. Writes OUT/heads.safetensors (the
original weights), OUT/heads.tp.safetensors (the pruned ones) and
OUT/heads.yaml (the model as a prunex description).
"""
import os
import sys
import warnings

import torch
import torch_pruning as tp
from safetensors.torch import save_file
from torch import nn

from reference import TimmAttention as Attention


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.patch = nn.Conv2d(1, 64, 4, 4)
        self.norm = nn.LayerNorm(64, eps=1e-6)
        self.attn = Attention(64, 8)
        self.head = nn.Linear(64, 3)

    def forward(self, x):
        x = self.patch(x).flatten(2).transpose(1, 2)
        x = x + self.attn(self.norm(x))
        return self.head(x[:, 0])


YAML = """name: heads
input: [1, 8, 8]
layers:
  - {name: patch, op: conv2d, in_channels: 1, out_channels: 64, kernel: 4, stride: 4}
  - {name: tokens, op: to_tokens, functional: true}
  - {name: norm, op: layernorm, features: 64}
  - {name: attn, op: multihead_attention, embed: 64, heads: 8, head_dim: 8, style: timm}
  - {name: add, op: add, inputs: [attn, tokens], functional: true}
  - {name: select, op: token_select, functional: true}
  - {name: head, op: linear, in_features: 64, out_features: 3}
"""

out = sys.argv[1]
torch.manual_seed(0)
m = Net().eval()
save_file({k: v.contiguous() for k, v in m.state_dict().items()}, os.path.join(out, "heads.safetensors"))
with open(os.path.join(out, "heads.yaml"), "w") as f:
    f.write(YAML)
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    tp.pruner.MetaPruner(m, torch.randn(1, 1, 8, 8), importance=tp.importance.MagnitudeImportance(p=2),
                         pruning_ratio=0.5, num_heads={m.attn.qkv: 8}, prune_num_heads=True,
                         prune_head_dims=False, head_pruning_ratio=0.5, ignored_layers=[m.head],
                         global_pruning=False).step()
save_file({k: v.contiguous() for k, v in m.state_dict().items()}, os.path.join(out, "heads.tp.safetensors"))
print({k: list(v.shape) for k, v in m.state_dict().items()})
