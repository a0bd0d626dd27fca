"""Torch-Pruning side of the surgery parity test.

`tp_prune.py MODEL OUT` builds torchvision's MODEL at 224x224 with seeded
random weights (BatchNorm gammas spread so their magnitudes matter), saves
them to OUT/MODEL.orig.safetensors, prunes with Torch-Pruning 1.6's
MetaPruner (MagnitudeImportance p=2, local 50 %, `fc` ignored), and saves
the pruned state_dict to OUT/MODEL.tp.safetensors and its counts to
OUT/MODEL.tp.json.
"""
import json
import os
import sys

import torch
import torchvision
import torch_pruning as tp
from safetensors.torch import save_file

name, out = sys.argv[1], sys.argv[2]
torch.manual_seed(0)
m = getattr(torchvision.models, name)().eval()
with torch.no_grad():
    for mod in m.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.weight.uniform_(0.5, 1.5)
save_file({k: v.contiguous() for k, v in m.state_dict().items()}, os.path.join(out, name + ".orig.safetensors"))
x = torch.randn(1, 3, 224, 224)
pruner = tp.pruner.MetaPruner(
    m, x, importance=tp.importance.MagnitudeImportance(p=2), pruning_ratio=0.5, ignored_layers=[m.fc], global_pruning=False
)
pruner.step()
macs, params = tp.utils.count_ops_and_params(m, x)
save_file({k: v.contiguous() for k, v in m.state_dict().items()}, os.path.join(out, name + ".tp.safetensors"))
with open(os.path.join(out, name + ".tp.json"), "w") as f:
    json.dump({"params": int(params), "macs": int(macs)}, f)
