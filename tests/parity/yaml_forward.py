"""A prunex model description as PyTorch code computes it (yaml_model.py's
`Described`), for parity tests of operations without a torchvision class.

    yaml_forward.py init MODEL.yaml WEIGHTS.safetensors IO.safetensors
        random weights (seeded; every parameter, biases included) and an
        input batch `x` with the eval-mode output `y`;
    yaml_forward.py run MODEL.yaml WEIGHTS.safetensors IN.safetensors OUT.safetensors
        loads WEIGHTS (strict) and writes the output `y` on IN's `x`.
"""
import sys

import torch
import yaml
from safetensors.torch import load_file, save_file

from yaml_model import Described

mode, desc = sys.argv[1], yaml.safe_load(open(sys.argv[2]))
m = Described(desc).eval()
if mode == "init":
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    save_file({k: v.contiguous() for k, v in m.state_dict().items()}, sys.argv[3])
    x = torch.randn([2] + desc["input"], generator=g)
    with torch.no_grad():
        y = m(x)
    save_file({"x": x, "y": y.contiguous()}, sys.argv[4])
else:
    m.load_state_dict(load_file(sys.argv[3]), strict=True)
    with torch.no_grad():
        y = m(load_file(sys.argv[4])["x"])
    save_file({"y": y.contiguous()}, sys.argv[5])
