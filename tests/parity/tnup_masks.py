"""torch.nn.utils.prune reference for prunex's unstructured masks:
`tnup_masks.py OUT` builds LeNet-5 with seeded weights, saves them to
OUT/lenet.safetensors, then writes the masks of l1_unstructured per layer
(conv1 0.85, conv2 0.80, fc1 0.75, fc2 0.70, fc3 0.80) to OUT/local.safetensors
and of global_unstructured (L1, 0.9) to OUT/global.safetensors."""
import os
import sys

import torch
import torch.nn.utils.prune as P
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(__file__))
import reference

out = sys.argv[1]
torch.manual_seed(0)
m = reference.LeNet5()
save_file({k: v.contiguous() for k, v in m.state_dict().items()}, os.path.join(out, "lenet.safetensors"))
amounts = {"conv1": 0.85, "conv2": 0.80, "fc1": 0.75, "fc2": 0.70, "fc3": 0.80}
local = reference.LeNet5()
local.load_state_dict(m.state_dict())
for name, s in amounts.items():
    P.l1_unstructured(getattr(local, name), "weight", amount=s)
save_file({f"{n}.weight": getattr(local, n).weight_mask.contiguous() for n in amounts}, os.path.join(out, "local.safetensors"))
glob = reference.LeNet5()
glob.load_state_dict(m.state_dict())
P.global_unstructured([(getattr(glob, n), "weight") for n in amounts], pruning_method=P.L1Unstructured, amount=0.9)
save_file({f"{n}.weight": getattr(glob, n).weight_mask.contiguous() for n in amounts}, os.path.join(out, "global.safetensors"))
