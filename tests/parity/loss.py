"""PyTorch reference for tests/loss.rs: cross-entropy, and the distillation
loss alpha * T^2 * KL(teacher/T || student/T) + (1 - alpha) * CE written
the way PyTorch users write it (F.kl_div on log-probabilities, batchmean),
with its gradient with respect to the student's logits. Prints JSON."""
import json

import torch
import torch.nn.functional as F


def inputs():
    s = torch.sin(torch.arange(40, dtype=torch.float32) * 0.7).reshape(4, 10) * 3
    t = torch.cos(torch.arange(40, dtype=torch.float32) * 0.3).reshape(4, 10) * 4
    y = torch.tensor([3, 0, 9, 3])
    return s, t, y


out = []
for temperature, alpha in [(None, None), (1.0, 0.5), (2.0, 0.7), (4.0, 0.9), (8.0, 1.0)]:
    s, t, y = inputs()
    s.requires_grad_()
    loss = F.cross_entropy(s, y)
    if temperature is not None:
        kl = F.kl_div(F.log_softmax(s / temperature, -1), F.log_softmax(t / temperature, -1),
                      log_target=True, reduction="batchmean")
        loss = alpha * temperature ** 2 * kl + (1 - alpha) * loss
    loss.backward()
    out.append({"temperature": temperature, "alpha": alpha, "loss": loss.item(),
                "grad": s.grad.flatten().tolist()})
print(json.dumps(out))
