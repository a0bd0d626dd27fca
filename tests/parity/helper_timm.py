"""python/prunex_load on a timm-style attention (packed `qkv` and `proj`
linear layers, `num_heads` and `head_dim` attributes, timm's forward):
weights with head 1 of 4 removed load (strict) and the module computes
what the original computes with that head silenced. Exits non-zero
otherwise."""
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "python"))
from prunex_load import load_pruned  # noqa: E402
from reference import TimmAttention as Attention  # noqa: E402


torch.manual_seed(0)
m, x = Attention(16, 4), torch.randn(2, 5, 16)
sd = m.state_dict()
keep = [0, 2, 3]
rows = torch.cat([torch.arange(s * 16 + h * 4, s * 16 + h * 4 + 4) for s in range(3) for h in keep])
cols = torch.cat([torch.arange(h * 4, h * 4 + 4) for h in keep])
pruned = {"qkv.weight": sd["qkv.weight"][rows], "qkv.bias": sd["qkv.bias"][rows],
          "proj.weight": sd["proj.weight"][:, cols], "proj.bias": sd["proj.bias"]}
silenced = {k: v.clone() for k, v in sd.items()}
drop = torch.cat([torch.arange(s * 16 + 4, s * 16 + 8) for s in range(3)])
silenced["qkv.weight"][drop] = 0
silenced["qkv.bias"][drop] = 0
silenced["proj.weight"][:, 4:8] = 0
ref = Attention(16, 4)
ref.load_state_dict(silenced)
loaded = load_pruned(Attention(16, 4), pruned)
with torch.no_grad():
    diff = (loaded(x) - ref(x)).abs().max().item()
if loaded.num_heads != 3 or diff > 1e-6:
    sys.exit(f"num_heads {loaded.num_heads}, differs by {diff}")
