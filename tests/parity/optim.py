"""torch.optim reference for tests/optim.rs: SGD (momentum, Nesterov,
weight decay), Adam and AdamW on two fixed tensors for six steps, with a
per-step learning rate and a 0.5 learning-rate multiplier on the second
tensor (a parameter group). Prints the final tensors as JSON."""
import json
import math

import torch

CONFIGS = {
    "sgd": (torch.optim.SGD, dict(momentum=0.9, weight_decay=0.01)),
    "nesterov": (torch.optim.SGD, dict(momentum=0.9, nesterov=True)),
    "plain": (torch.optim.SGD, dict(weight_decay=0.001)),
    "adam": (torch.optim.Adam, dict(weight_decay=0.01)),
    "adamw": (torch.optim.AdamW, dict(weight_decay=0.01)),
}


def tensors():
    w = (torch.arange(12, dtype=torch.float32).reshape(3, 4) / 10 - 0.5).requires_grad_()
    b = torch.tensor([0.1, -0.2, 0.3]).requires_grad_()
    x = torch.sin(torch.arange(20, dtype=torch.float32)).reshape(5, 4)
    return w, b, x


def lr_at(k):
    return 0.05 * (k + 1) / 3


out = {}
for name, (cls, kw) in CONFIGS.items():
    w, b, x = tensors()
    opt = cls([{"params": [w]}, {"params": [b]}], lr=lr_at(0), **kw)
    for k in range(6):
        opt.param_groups[0]["lr"] = lr_at(k)
        opt.param_groups[1]["lr"] = lr_at(k) * 0.5
        opt.zero_grad()
        y = x @ w.T + b
        loss = (y.pow(2).mean() + y.sin().sum()) * (1 + 0.1 * k)
        loss.backward()
        opt.step()
    out[name] = w.detach().flatten().tolist() + b.detach().tolist()
print(json.dumps(out))
