"""Makes recipes/models/mobilenet_v3_small-fashion.onnx, the model of
recipes/mobilenet-v3-onnx.prune: the way a PyTorch user brings their own
model to prunex.

torchvision's MobileNetV3-small (width 0.5, 10 classes) with a 1-channel
stem, trained for 2 epochs on Fashion-MNIST padded to 32×32 (the data
block of the recipe), then exported in eval mode by
`torch.onnx.export(model, (x,), path, optimize=False, external_data=False)`:
the dynamo exporter, BatchNorm kept, weights inline in one file.

    .venv/bin/python recipes/models/export-mobilenet-v3.py

Needs torch and torchvision (`scripts/setup --reference`) and the full
Fashion-MNIST (`scripts/setup --data`).
"""

import gzip
import os
import struct
import sys

import torch
import torch.nn.functional as F
import torchvision

DATA = "/usr/share/datasets/fashion-mnist"
MEAN, STD = 0.2860, 0.3530
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "mobilenet_v3_small-fashion.onnx")


def idx(path):
    data = gzip.open(path).read()
    if struct.unpack(">I", data[:4])[0] == 0x0803:
        n, h, w = struct.unpack(">III", data[4:16])
        return torch.frombuffer(bytearray(data[16:]), dtype=torch.uint8).reshape(n, 1, h, w)
    return torch.frombuffer(bytearray(data[8:]), dtype=torch.uint8).long()


def images(split):
    x = idx(f"{DATA}/{split}-images-idx3-ubyte.gz").float() / 255.0
    return (F.pad(x, (2, 2, 2, 2)) - MEAN) / STD, idx(f"{DATA}/{split}-labels-idx1-ubyte.gz")


def main():
    torch.manual_seed(0)
    torch.set_num_threads(2)
    m = torchvision.models.mobilenet_v3_small(num_classes=10, width_mult=0.5)
    stem = m.features[0][0]
    m.features[0][0] = torch.nn.Conv2d(1, stem.out_channels, 3, stride=2, padding=1, bias=False)
    xtr, ytr = images("train")
    xte, yte = images("t10k")
    opt = torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9, weight_decay=4e-5)
    for epoch in range(2):
        m.train()
        perm = torch.randperm(len(ytr))
        for i in range(0, len(ytr), 128):
            b = perm[i:i + 128]
            opt.zero_grad()
            F.cross_entropy(m(xtr[b]), ytr[b]).backward()
            opt.step()
        m.eval()
        with torch.no_grad():
            acc = sum((m(xte[i:i + 1000]).argmax(-1) == yte[i:i + 1000]).sum().item()
                      for i in range(0, len(yte), 1000)) / len(yte)
        print(f"epoch {epoch + 1}: test accuracy {acc:.4f}", file=sys.stderr)
    m.eval()
    torch.onnx.export(m, (torch.zeros(1, 1, 32, 32),), OUT, optimize=False, external_data=False)
    print(f"wrote {OUT} ({os.path.getsize(OUT):,} bytes)", file=sys.stderr)


if __name__ == "__main__":
    main()
