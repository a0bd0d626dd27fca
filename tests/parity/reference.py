"""PyTorch side of prunex's parity tests.

`reference.py make OUT CASES.json` builds each case's model with torchvision
(or the reference definitions below), randomises its weights and BatchNorm
statistics, and writes into OUT:
  CASE.safetensors, CASE.pt (torch.save(state_dict)), CASE.dp.pt (from a
  DataParallel wrapper), CASE.plain.pt (a plain dict), CASE.io.safetensors
  (an input batch `x` and the eval-mode output `y`), and CASE.json (params
  and MACs by Torch-Pruning's counter).
`reference.py verify OUT CASES.json` loads OUT/CASE.prunex.safetensors (written
by prunex) into the PyTorch model with strict=True and checks it reproduces y.
"""
import json
import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision
import torch_pruning as tp
from safetensors.torch import load_file, save_file


class LeNet5(nn.Module):
    """LeNet-5 as in the classic post-training pruning tutorial."""

    def __init__(self, in_ch=1, hw=28, classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, 6, 5)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.maxpool = nn.MaxPool2d(2, 2)
        side = ((hw - 4) // 2 - 4) // 2
        self.fc1 = nn.Linear(16 * side * side, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, classes)

    def forward(self, x):
        x = self.maxpool(F.relu(self.conv1(x)))
        x = self.maxpool(F.relu(self.conv2(x)))
        x = torch.flatten(x, 1)
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return self.fc3(x)


class SimpleCNN(nn.Module):
    def __init__(self, in_ch=1, hw=28, classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, 32, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(32)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1)
        self.fc = nn.Linear(64 * (hw // 4) * (hw // 4), classes)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return self.fc(torch.flatten(x, 1))


class TimmAttention(nn.Module):
    """timm's `Attention` as its forward computes it: a packed `qkv` and a
    `proj` linear layer, sized by `num_heads` and `head_dim` attributes."""

    def __init__(self, dim, num_heads):
        super().__init__()
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        b, n, _ = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        return self.proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, -1))


def vit_mini(c=1, hw=28, classes=10):
    """prunex's `vit_mini`: torchvision's VisionTransformer at 28x28."""
    from torchvision.models.vision_transformer import VisionTransformer

    m = VisionTransformer(image_size=hw, patch_size=4, num_layers=4, num_heads=4,
                          hidden_dim=64, mlp_dim=128, num_classes=classes)
    if c != 3:
        m.conv_proj = nn.Conv2d(c, 64, 4, 4)
    return m


def build(case):
    name, (c, h, w), classes = case["model"], case["input"], case["classes"]
    if name == "lenet5":
        return LeNet5(c, h, classes)
    if name == "simplecnn":
        return SimpleCNN(c, h, classes)
    if name == "vit_mini":
        return vit_mini(c, h, classes)
    m = getattr(torchvision.models, name)(num_classes=classes)
    if c != 3:
        if name.startswith("resnet"):
            m.conv1 = nn.Conv2d(c, 64, 7, 2, 3, bias=False)
        elif name.startswith("vgg"):
            m.features[0] = nn.Conv2d(c, 64, 3, padding=1)
        elif name == "mobilenet_v2":
            m.features[0][0] = nn.Conv2d(c, 32, 3, 2, 1, bias=False)
    return m


def randomise(m, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, nn.BatchNorm2d):
                mod.weight.copy_(torch.rand(mod.weight.shape, generator=g) + 0.5)
                mod.bias.copy_(torch.randn(mod.bias.shape, generator=g) * 0.1)
                mod.running_mean.copy_(torch.randn(mod.running_mean.shape, generator=g) * 0.1)
                mod.running_var.copy_(torch.rand(mod.running_var.shape, generator=g) + 0.5)
                mod.num_batches_tracked.fill_(7)
            if isinstance(mod, nn.LayerNorm):
                mod.weight.copy_(torch.rand(mod.weight.shape, generator=g) + 0.5)
                mod.bias.copy_(torch.randn(mod.bias.shape, generator=g) * 0.1)
            if isinstance(mod, nn.MultiheadAttention):
                # PyTorch starts both projection biases at zero.
                mod.in_proj_bias.copy_(torch.randn(mod.in_proj_bias.shape, generator=g) * 0.1)
                mod.out_proj.bias.copy_(torch.randn(mod.out_proj.bias.shape, generator=g) * 0.1)
        # torchvision starts a ViT's class token and head at zero, which
        # would make every output 0 and the comparison vacuous.
        for name in ("class_token", "heads.head.weight", "heads.head.bias"):
            if name in dict(m.named_parameters()):
                p = m.get_parameter(name)
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)


def make(out, cases):
    for case in cases:
        torch.manual_seed(case.get("seed", 0))
        m = build(case).eval()
        randomise(m, case.get("seed", 0))
        sd = {k: v.contiguous() for k, v in m.state_dict().items()}
        key = case["id"]
        formats = case.get("formats", ["safetensors", "pt", "dp", "plain"])
        if "safetensors" in formats:
            save_file(sd, os.path.join(out, key + ".safetensors"))
        if "pt" in formats:
            torch.save(m.state_dict(), os.path.join(out, key + ".pt"))
        if "dp" in formats:
            torch.save(nn.DataParallel(m).state_dict(), os.path.join(out, key + ".dp.pt"))
        if "plain" in formats:
            torch.save(dict(m.state_dict()), os.path.join(out, key + ".plain.pt"))
        x = torch.randn([case.get("batch", 2)] + list(case["input"]), generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            y = m(x)
        save_file({"x": x.contiguous(), "y": y.contiguous()}, os.path.join(out, key + ".io.safetensors"))
        macs, params = tp.utils.count_ops_and_params(m, torch.randn([1] + list(case["input"])))
        with open(os.path.join(out, key + ".json"), "w") as f:
            json.dump({"params": int(params), "macs": int(macs)}, f)


def verify(out, cases, written):
    for case in cases:
        key = case["id"]
        m = build(case).eval()
        m.load_state_dict(load_file(os.path.join(written, key + ".prunex.safetensors")), strict=True)
        io = load_file(os.path.join(out, key + ".io.safetensors"))
        with torch.no_grad():
            y = m(io["x"])
        diff = (y - io["y"]).abs().max().item()
        if diff > 1e-4:
            raise SystemExit(f"{key}: PyTorch output differs by {diff} after loading prunex's weights")
    print("verified", len(cases))


if __name__ == "__main__":
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    mode, out, spec = sys.argv[1], sys.argv[2], sys.argv[3]
    with open(spec) as f:
        cases = json.load(f)
    if mode == "make":
        make(out, cases)
    else:
        verify(out, cases, sys.argv[4])
