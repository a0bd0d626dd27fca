"""Builds a PyTorch module from a prunex model description (model.yaml), so
tests can load prunex's exported weights into the pruned architecture with
load_state_dict(strict=True).

`yaml_model.py accuracy MODEL.yaml WEIGHTS.safetensors DATA_DIR MEAN STD [PAD]`
prints the test accuracy on the IDX test split.
"""
import gzip
import struct
import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F
import yaml
from safetensors.torch import load_file


def pair(v):
    return tuple(v) if isinstance(v, list) else (v, v)


class Attention(nn.Module):
    """prunex's `multihead_attention` as PyTorch code computes it, with each
    style's state_dict names: nn.MultiheadAttention's (`style: torch`; the
    class itself where its width is the embedding's), timm's `qkv`/`proj`,
    or separate `q_proj`/`k_proj`/`v_proj`/`o_proj` with grouped-query
    attention (key/value head g serves query heads g*r .. g*r + r - 1)."""

    def __init__(self, l):
        super().__init__()
        e, h, d, bias = l["embed"], l["heads"], l["head_dim"], l.get("bias", True)
        self.h, self.g, self.d = h, l.get("kv_heads") or h, d
        self.style = l.get("style", "torch")
        a = h * d
        if self.style == "torch":
            self.in_proj_weight = nn.Parameter(torch.empty(3 * a, e))
            self.in_proj_bias = nn.Parameter(torch.empty(3 * a)) if bias else None
            self.out_proj = nn.Linear(a, e, bias=bias)
        elif self.style == "timm":
            self.qkv = nn.Linear(e, 3 * a, bias=bias)
            self.proj = nn.Linear(a, e, bias=bias)
        else:
            self.q_proj = nn.Linear(e, a, bias=bias)
            self.k_proj = nn.Linear(e, self.g * d, bias=bias)
            self.v_proj = nn.Linear(e, self.g * d, bias=bias)
            self.o_proj = nn.Linear(a, e, bias=bias)

    def forward(self, x):
        n, t, _ = x.shape
        h, g, d = self.h, self.g, self.d
        if self.style in ("torch", "timm"):
            w, b = (self.in_proj_weight, self.in_proj_bias) if self.style == "torch" else (self.qkv.weight, self.qkv.bias)
            q, k, v = F.linear(x, w, b).view(n, t, 3, h, d).permute(2, 0, 3, 1, 4)
            out = self.out_proj if self.style == "torch" else self.proj
        else:
            q = self.q_proj(x).view(n, t, h, d).transpose(1, 2)
            k = self.k_proj(x).view(n, t, g, d).transpose(1, 2).repeat_interleave(h // g, dim=1)
            v = self.v_proj(x).view(n, t, g, d).transpose(1, 2).repeat_interleave(h // g, dim=1)
            out = self.o_proj
        y = F.scaled_dot_product_attention(q, k, v)
        return out(y.transpose(1, 2).reshape(n, t, h * d))


class Described(nn.Module):
    def __init__(self, desc):
        super().__init__()
        self.layers = desc["layers"]
        self.refs = {"input": 0}
        self.inputs = []
        for i, l in enumerate(self.layers, start=1):
            ins = l.get("inputs")
            self.inputs.append([self.refs[r] for r in ins] if ins else [i - 1])
            self.refs[l.get("ref", l["name"])] = i
            self.refs[l["name"]] = i
            if l.get("functional"):
                continue
            op = l["op"]
            if op == "conv2d":
                m = nn.Conv2d(l["in_channels"], l["out_channels"], pair(l["kernel"]), pair(l.get("stride", 1)),
                              pair(l.get("padding", 0)), pair(l.get("dilation", 1)), l.get("groups", 1), l.get("bias", True))
            elif op == "linear":
                m = nn.Linear(l["in_features"], l["out_features"], l.get("bias", True))
            elif op == "batchnorm2d":
                m = nn.BatchNorm2d(l["features"], eps=l.get("eps", 1e-5), momentum=l.get("momentum", 0.1))
            elif op == "layernorm2d":
                m = nn.LayerNorm(l["features"], eps=l.get("eps", 1e-6))
            elif op == "layer_scale":
                self._owner(l["name"]).register_parameter("layer_scale", nn.Parameter(torch.ones(l["features"], 1, 1)))
                continue
            elif op == "layernorm":
                m = nn.LayerNorm(l["features"], eps=l.get("eps", 1e-6))
            elif op in ("class_token", "pos_embedding"):
                shape = (1, 1, l["features"]) if op == "class_token" else (1, l["tokens"], l["features"])
                owner, _, leaf = l["name"].rpartition(".")
                (self._owner(owner) if owner else self).register_parameter(leaf, nn.Parameter(torch.zeros(shape)))
                continue
            elif op == "multihead_attention":
                m = Attention(l)
            else:
                continue
            self._register(l["name"], m)
        self.output = self.refs[desc["output"]] if "output" in desc else len(self.layers)

    def _register(self, path, m):
        parent = self
        parts = path.split(".")
        for p in parts[:-1]:
            if not hasattr(parent, p):
                parent.add_module(p, nn.Module())
            parent = getattr(parent, p)
        if not hasattr(parent, parts[-1]):
            parent.add_module(parts[-1], m)

    def _owner(self, path):
        """The module at `path`, made (empty) where it does not exist yet."""
        parent = self
        for p in path.split("."):
            if not hasattr(parent, p):
                parent.add_module(p, nn.Module())
            parent = getattr(parent, p)
        return parent

    def _get(self, path):
        m = self
        for p in path.split("."):
            m = getattr(m, p)
        return m

    def forward(self, x):
        vals = [x]
        for l, ins in zip(self.layers, self.inputs):
            a = [vals[i] for i in ins]
            op = l["op"]
            if op == "linear" and a[0].dim() == 4:
                # The channels at every position.
                y = self._get(l["name"])(a[0].permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
            elif op == "layernorm2d":
                y = self._get(l["name"])(a[0].permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
            elif op == "layer_scale":
                y = self._get(l["name"]).layer_scale * a[0]
            elif op in ("conv2d", "linear", "batchnorm2d", "layernorm", "multihead_attention"):
                y = self._get(l["name"])(a[0])
            elif op == "to_tokens":
                y = a[0].flatten(2).transpose(1, 2)
            elif op == "class_token":
                y = torch.cat([self._get(l["name"]).expand(a[0].shape[0], -1, -1), a[0]], 1)
            elif op == "pos_embedding":
                y = a[0] + self._get(l["name"])
            elif op == "token_select":
                y = a[0][:, l.get("index", 0)]
            elif op == "relu":
                y = F.relu(a[0])
            elif op == "relu6":
                y = F.relu6(a[0])
            elif op == "maxpool2d":
                y = F.max_pool2d(a[0], pair(l["kernel"]), pair(l["stride"]), pair(l.get("padding", 0)), ceil_mode=l.get("ceil_mode", False))
            elif op == "avgpool2d":
                y = F.avg_pool2d(a[0], pair(l["kernel"]), pair(l["stride"]), pair(l.get("padding", 0)))
            elif op == "adaptive_avgpool2d":
                y = F.adaptive_avg_pool2d(a[0], pair(l["output"]))
            elif op == "flatten":
                y = torch.flatten(a[0], 1)
            elif op == "add":
                y = sum(a[1:], a[0])
            elif op == "mul":
                y = a[0] * a[1]
            elif op == "concat":
                y = torch.cat(a, 1)
            elif op == "sigmoid":
                y = torch.sigmoid(a[0])
            elif op == "gelu":
                y = F.gelu(a[0])
            elif op == "silu":
                y = F.silu(a[0])
            elif op == "hardswish":
                y = F.hardswish(a[0])
            elif op == "hardsigmoid":
                y = F.hardsigmoid(a[0])
            elif op == "channel_shuffle":
                n, c, h, w = a[0].shape
                g = l["groups"]
                y = a[0].view(n, g, c // g, h, w).transpose(1, 2).reshape(n, c, h, w)
            elif op == "slice":
                y = a[0][:, l["start"]:l["end"]]
            elif op in ("dropout", "identity"):  # identity in eval
                y = a[0]
            else:
                sys.exit(f"yaml_model.py does not know the op `{op}`")
            vals.append(y)
        return vals[self.output]


def idx(path):
    data = gzip.open(path).read() if path.endswith(".gz") else open(path, "rb").read()
    magic = struct.unpack(">I", data[:4])[0]
    if magic == 0x0803:
        n, h, w = struct.unpack(">III", data[4:16])
        return torch.frombuffer(bytearray(data[16:16 + n * h * w]), dtype=torch.uint8).reshape(n, 1, h, w)
    n = struct.unpack(">I", data[4:8])[0]
    return torch.frombuffer(bytearray(data[8:8 + n]), dtype=torch.uint8).long()


if __name__ == "__main__":
    _, mode, model_yaml, weights, data, mean, std = sys.argv[:7]
    pad = int(sys.argv[7]) if len(sys.argv) > 7 else 0
    m = Described(yaml.safe_load(open(model_yaml))).eval()
    m.load_state_dict(load_file(weights), strict=True)
    x = idx(data + "/t10k-images-idx3-ubyte.gz").float() / 255.0
    x = (F.pad(x, (pad, pad, pad, pad)) - float(mean)) / float(std) if pad else (x - float(mean)) / float(std)
    y = idx(data + "/t10k-labels-idx1-ubyte.gz")
    with torch.no_grad():
        logits = m(x)
    acc = (logits.argmax(-1) == y).float().mean().item()
    # The model.onnx written beside: onnxruntime must compute the same.
    onnx_path = os.path.join(os.path.dirname(model_yaml), "model.onnx")
    if os.path.exists(onnx_path):
        import onnxruntime as ort
        session = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
        (theirs,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
        diff = (torch.from_numpy(theirs) - logits).abs().max().item()
        if diff > 1e-4:
            sys.exit(f"model.onnx differs from the PyTorch model by {diff}")
    print(f"{acc:.6f}")
