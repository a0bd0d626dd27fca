"""The Python helper (python/prunex_load) on a torchvision class.

    helper_check.py MODEL CLASSES WEIGHTS IO.safetensors OUT.safetensors

builds torchvision's MODEL (or prunex's `vit_mini`, a torchvision
VisionTransformer) with CLASSES outputs, loads prunex's (pruned)
WEIGHTS into it with prunex_load.load_pruned (strict), and writes its
eval-mode output on IO's `x` as `y` in OUT.
"""

import os
import sys

import torch
import torchvision
from safetensors.torch import load_file, save_file

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "python"))
from prunex_load import load_pruned  # noqa: E402

name, classes, weights, io, out = sys.argv[1:6]
if name == "vit_mini":
    from reference import vit_mini  # noqa: E402

    model = vit_mini(1, 28, int(classes))
else:
    model = getattr(torchvision.models, name)(num_classes=int(classes))
load_pruned(model, weights)
model.eval()
with torch.no_grad():
    y = model(load_file(io)["x"])
save_file({"y": y.contiguous()}, out)
