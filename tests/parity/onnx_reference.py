"""References for tests/onnx.rs: torchvision models exported to ONNX.

    onnx_reference.py make OUT CASES.json

For each case (a torchvision classifier, an input size), with seeded weights
and randomised BatchNorm statistics, LayerNorm parameters and layer scales
(so that no two initializers are equal and the exporters cannot merge them),
writes:

- ID.dynamo.onnx (+ .onnx.data): torch.onnx.export(optimize=False), the
  dynamo exporter with external data;
- ID.torchscript.onnx: dynamo=False, do_constant_folding=False;
- ID.folded.onnx: dynamo=False with its defaults (BatchNorm folded into the
  convolutions, anonymous initializers);
- ID.json: the state_dict's keys and shapes, the parameter count, the MACs
  Torch-Pruning's counter gives and the LayerNorm2d MACs it skips;
- ID.io.safetensors: an input `x` and the eval-mode output `y`;
- ID.tp.safetensors: the state_dict after Torch-Pruning 1.6.1's MetaPruner
  removed half of every coupled group (MagnitudeImportance(p=2), local,
  the classifier ignored), or ID.tp.error with the reason it failed.
"""

import copy
import json
import sys
import warnings

import torch
import torchvision
from safetensors.torch import save_file

warnings.filterwarnings("ignore")


def build(case):
    torch.manual_seed(0)
    m = getattr(torchvision.models, case["model"])(num_classes=case["classes"])
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.weight.uniform_(0.5, 1.5)
                mod.bias.uniform_(-0.2, 0.2)
                mod.running_mean.uniform_(-0.2, 0.2)
                mod.running_var.uniform_(0.5, 1.5)
            if isinstance(mod, (torch.nn.Conv2d, torch.nn.Linear)) and mod.bias is not None:
                mod.bias.uniform_(-0.1, 0.1)
            if isinstance(mod, torch.nn.LayerNorm):
                mod.weight.uniform_(0.5, 1.5)
                mod.bias.uniform_(-0.2, 0.2)
        # ConvNeXt's layer scales start at 1e-6: the blocks would add nothing.
        for name, p in m.named_parameters():
            if name.endswith("layer_scale"):
                p.uniform_(0.5, 1.5)
    return m.eval()


def make(out, cases):
    for case in cases:
        m = build(case)
        c, h, w = case["input"]
        torch.manual_seed(1)
        x = torch.randn(2, c, h, w)
        with torch.no_grad():
            y = m(x)
        one = x[:1]
        base = f"{out}/{case['id']}"
        torch.onnx.export(m, (one,), f"{base}.dynamo.onnx", dynamo=True,
                          optimize=False, external_data=True)
        torch.onnx.export(m, (one,), f"{base}.torchscript.onnx", dynamo=False,
                          do_constant_folding=False)
        torch.onnx.export(m, (one,), f"{base}.folded.onnx", dynamo=False)
        sd = m.state_dict()
        info = {
            "keys": {k: list(v.shape) for k, v in sd.items()},
            "params": sum(p.numel() for p in m.parameters()),
            "macs": macs(m, one),
            "macs_skipped": layernorm2d_elements(m, one),
        }
        with open(f"{base}.json", "w") as f:
            json.dump(info, f)
        save_file({"x": x.contiguous(), "y": y.contiguous()}, f"{base}.io.safetensors")
        try:
            save_file(torch_pruning(m, one), f"{base}.tp.safetensors")
        except Exception as e:  # Torch-Pruning 1.6.1 fails on ShuffleNet
            with open(f"{base}.tp.error", "w") as f:
                f.write(f"{type(e).__name__}: {e}")


def macs(m, x):
    """Torch-Pruning's count (tp.utils.count_ops_and_params)."""
    import torch_pruning as tp
    return int(tp.utils.count_ops_and_params(copy.deepcopy(m), x)[0])


def layernorm2d_elements(m, x):
    """2 per element of every torchvision LayerNorm2d: what prunex counts
    and Torch-Pruning's counter, matching module types exactly, skips."""
    from torchvision.models.convnext import LayerNorm2d
    seen = []
    hooks = [mod.register_forward_hook(lambda mod, i, o: seen.append(2 * i[0].numel()))
             for mod in m.modules() if type(mod) is LayerNorm2d]
    with torch.no_grad():
        m(x)
    for h in hooks:
        h.remove()
    return sum(seen)


def torch_pruning(m, x):
    import torch_pruning as tp
    m = copy.deepcopy(m)
    last = [mod for mod in m.modules() if isinstance(mod, (torch.nn.Linear, torch.nn.Conv2d))][-1]
    pruner = tp.pruner.MetaPruner(m, x, importance=tp.importance.MagnitudeImportance(p=2),
                                  pruning_ratio=0.5, ignored_layers=[last], global_pruning=False)
    pruner.step()
    return {k: v.contiguous() for k, v in m.state_dict().items()}


if __name__ == "__main__":
    if sys.argv[1] == "make":
        with open(sys.argv[3]) as f:
            make(sys.argv[2], json.load(f))
    else:
        sys.exit(f"unknown command {sys.argv[1]}")
