"""PyTorch and Torch-Pruning side of prunex's transformer tests.

`vit_reference.py make OUT CASES.json` writes, into OUT:
  vit_mini.safetensors, vit_mini.io.safetensors: prunex's `vit_mini`
    (torchvision's VisionTransformer at 28x28, one input channel, 10
    classes) with seeded random weights (LayerNorms, class token and head
    randomised too: torchvision starts the last two at zero), an input `x`
    and its eval-mode output `y`;
  vit_mini.dynamo.onnx (+ .data), vit_mini.torchscript.onnx: that model
    exported by torch.onnx.export, by the dynamo exporter (optimize=False)
    and by the TorchScript one;
  vit_b_16.safetensors, vit_b_16.io.safetensors: the same for torchvision's
    vit_b_16 at 224x224;
  vit_b_16.tp.safetensors, vit_b_16.tp.json: vit_b_16 pruned by
    Torch-Pruning 1.6.1's MetaPruner with its default setting for this
    model (MagnitudeImportance p=2, local, pruning_ratio 0.5, `heads.head`
    ignored; the class token and position embedding are found as unwrapped
    parameters), then `hidden_dim` set as its torchvision example does; its
    parameters and MACs by Torch-Pruning's counter, before and after.
CASES.json is unused (the cases are fixed); it keeps the harness uniform.
"""
import contextlib
import io
import json
import os
import sys
import warnings

import torch
import torchvision
import torch_pruning as tp
from safetensors.torch import save_file

from reference import randomise, vit_mini


def save(m, out, key, x):
    save_file({k: v.contiguous() for k, v in m.state_dict().items()}, os.path.join(out, key + ".safetensors"))
    with torch.no_grad():
        y = m(x)
    save_file({"x": x.contiguous(), "y": y.contiguous()}, os.path.join(out, key + ".io.safetensors"))


def make(out):
    torch.manual_seed(0)
    m = vit_mini().eval()
    randomise(m, 0)
    x = torch.randn([2, 1, 28, 28], generator=torch.Generator().manual_seed(1))
    save(m, out, "vit_mini", x)
    # Both exporters, at the batch of 2 they write into their shapes.
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(m, (x,), os.path.join(out, "vit_mini.dynamo.onnx"), optimize=False)
        torch.onnx.export(m, (x,), os.path.join(out, "vit_mini.torchscript.onnx"), dynamo=False)

    torch.manual_seed(0)
    m = torchvision.models.vit_b_16().eval()
    randomise(m, 0)
    x = torch.randn([1, 3, 224, 224], generator=torch.Generator().manual_seed(1))
    save(m, out, "vit_b_16", x)
    macs0, params0 = tp.utils.count_ops_and_params(m, x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Unwrapped parameters detected"
        pruner = tp.pruner.MetaPruner(
            m, x, importance=tp.importance.MagnitudeImportance(p=2), pruning_ratio=0.5,
            ignored_layers=[m.heads.head], global_pruning=False,
        )
        pruner.step()
    m.hidden_dim = m.conv_proj.out_channels
    macs, params = tp.utils.count_ops_and_params(m, x)
    save_file({k: v.contiguous() for k, v in m.state_dict().items()}, os.path.join(out, "vit_b_16.tp.safetensors"))
    with open(os.path.join(out, "vit_b_16.tp.json"), "w") as f:
        json.dump({"params_before": int(params0), "macs_before": int(macs0),
                   "params": int(params), "macs": int(macs)}, f)


if __name__ == "__main__":
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    if sys.argv[1] == "make":
        make(sys.argv[2])
