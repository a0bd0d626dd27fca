"""prunex side by side with PyTorch and Torch-Pruning, in one run; writes
BENCHMARKS.md. Started by `benches/compare` (which sets up the Python
environment and builds prunex first); see `benches/compare --help`.

Every pair runs in alternation (prunex, reference, prunex, reference, ...)
with the same model, data, seeds and threads, each side in a fresh process;
figures are medians (timings) or means over seeds (accuracy), and every
table prints the ratio.
"""
import argparse
import datetime
import gzip
import json
import os
import platform
import re
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PY = sys.executable
PRUNEX = os.path.join(ROOT, "target/release/prunex")
SURGERY = os.path.join(ROOT, "target/release/examples/surgery")
ZOO = os.path.join(ROOT, "target/release/examples/zoo")
DATA = "/usr/share/datasets/fashion-mnist"
MEAN, STD = 0.2860, 0.3530
sys.path.insert(0, os.path.join(ROOT, "tests/parity"))


# ---------------------------------------------------------------- helpers

def sh(cmd, env=None, cwd=None):
    e = dict(os.environ)
    e.update(env or {})
    r = subprocess.run(cmd, cwd=cwd, env=e, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return r.stdout


def me(*args):
    """Runs a subcommand of this script in a fresh process; returns its JSON."""
    return json.loads(sh([PY, os.path.abspath(__file__), *map(str, args)]).strip().splitlines()[-1])


def idx(path):
    with gzip.open(path) as f:
        b = f.read()
    magic, n = struct.unpack(">II", b[:8])
    import torch
    if magic == 2049:
        return torch.frombuffer(bytearray(b[8:]), dtype=torch.uint8).long()
    h, w = struct.unpack(">II", b[8:16])
    x = torch.frombuffer(bytearray(b[16:]), dtype=torch.uint8).reshape(n, 1, h, w)
    return ((x.float() / 255.0) - MEAN) / STD


def fashion(limit=None):
    limit = limit or int(os.environ.get("BENCH_LIMIT") or 0)
    f = lambda n: os.path.join(DATA, n)
    xtr, ytr = idx(f("train-images-idx3-ubyte.gz")), idx(f("train-labels-idx1-ubyte.gz"))
    xte, yte = idx(f("t10k-images-idx3-ubyte.gz")), idx(f("t10k-labels-idx1-ubyte.gz"))
    if limit:
        xtr, ytr, xte, yte = xtr[:limit], ytr[:limit], xte[:limit], yte[:limit]
    return xtr, ytr, xte, yte


def model(name):
    import reference
    return reference.build({"model": name, "input": [1, 28, 28], "classes": 10})


def prunex_run(recipe_text, threads=None, extra=(), name="r"):
    """Runs a recipe with prunex in a temp folder; returns (report, timings)."""
    import yaml
    d = tempfile.mkdtemp(prefix="prunex-bench-")
    text = recipe_text.replace('include "common/', f'include "{ROOT}/recipes/common/')
    text = re.sub(r'export "[^"]*"', 'export "out"', text)
    if 'export "out"' not in text:
        text += '\nexport "out"\n'
    with open(os.path.join(d, f"{name}.prune"), "w") as f:
        f.write(text)
    cmd = [PRUNEX, "run", f"{name}.prune", *extra]
    if threads:
        cmd += ["--threads", str(threads)]
    sh(cmd, cwd=d, env={"PRUNEX_CACHE": os.environ.get("PRUNEX_BENCH_CACHE", os.path.join(d, "cache")), "NO_COLOR": "1"})
    with open(os.path.join(d, "out/report.json")) as f:
        report = json.load(f)
    with open(os.path.join(d, "out/timings.yaml")) as f:
        timings = yaml.safe_load(f)
    shutil.rmtree(d, ignore_errors=True)
    return report, timings


def median_ratio(a, b):
    return statistics.median(a), statistics.median(b), statistics.median(a) / statistics.median(b)


# ----------------------------------------------- subcommands (one process each)

def cmd_torch_epoch(name, threads, limit):
    """Images/s of one training epoch of an eager PyTorch loop."""
    import torch
    import torch.nn.functional as F
    torch.set_num_threads(int(threads))
    torch.manual_seed(0)
    xtr, ytr, _, _ = fashion(int(limit))
    m = model(name).train()
    opt = torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9)
    perm = torch.randperm(len(ytr))
    start = time.perf_counter()
    for i in range(0, len(ytr), 128):
        b = perm[i:i + 128]
        x, y = xtr[b], ytr[b]
        loss = F.cross_entropy(m(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    secs = time.perf_counter() - start
    print(json.dumps({"images_per_second": len(ytr) / secs}))


def cmd_ddp_epoch(name, limit, per_rank):
    """Images/s of one training epoch of PyTorch's own DDP (run under
    `torchrun --nproc_per_node N`, gloo, 1 thread per process): each rank
    takes its slice of the same global batches, as prunex's ranks do."""
    import torch
    import torch.distributed as dist
    import torch.nn.functional as F
    from torch.nn.parallel import DistributedDataParallel as DDP
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(0)
    xtr, ytr, _, _ = fashion(int(limit))
    m = DDP(model(name).train())
    opt = torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9)
    perm = torch.randperm(len(ytr))
    per, glob = int(per_rank), int(per_rank) * world
    dist.barrier()
    start = time.perf_counter()
    for i in range(0, len(ytr), glob):
        b = perm[i:i + glob][rank * per:(rank + 1) * per]
        loss = F.cross_entropy(m(xtr[b]), ytr[b])
        opt.zero_grad()
        loss.backward()
        opt.step()
    dist.barrier()
    secs = time.perf_counter() - start
    if rank == 0:
        print(json.dumps({"images_per_second": len(ytr) / secs}))
    dist.destroy_process_group()


def cmd_seed_weights(name, out):
    """torchvision MODEL with seeded random weights (BatchNorm γ spread)."""
    import torch
    import torchvision
    from safetensors.torch import save_file
    torch.manual_seed(0)
    m = getattr(torchvision.models, name)().eval()
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.weight.uniform_(0.5, 1.5)
    save_file({k: v.contiguous() for k, v in m.state_dict().items()}, out)
    print(json.dumps({"ok": True}))


def cmd_tp_surgery(name, weights, ratio, out):
    """Torch-Pruning 1.6: graph build + step, timed; saves the pruned model."""
    import torch
    import torchvision
    import torch_pruning as tp
    from safetensors.torch import load_file
    torch.set_num_threads(2)
    m = getattr(torchvision.models, name)().eval()
    m.load_state_dict(load_file(weights))
    x = torch.randn(1, 3, 224, 224)
    start = time.perf_counter()
    pruner = tp.pruner.MetaPruner(m, x, importance=tp.importance.MagnitudeImportance(p=2),
                                  pruning_ratio=float(ratio), ignored_layers=[m.fc], global_pruning=False)
    pruner.step()
    secs = time.perf_counter() - start
    macs, params = tp.utils.count_ops_and_params(m, x)
    torch.save(m, out)
    print(json.dumps({"seconds": secs, "params": int(params), "macs": int(macs)}))


def latency(m, shape, threads, batches=(1, 64)):
    import torch
    torch.set_num_threads(int(threads))
    m.eval()
    out = {}
    with torch.no_grad():
        for b in batches:
            x = torch.randn(b, *shape)
            for _ in range(3):
                m(x)
            ts = []
            start = time.perf_counter()
            while len(ts) < 5 or (len(ts) < 30 and time.perf_counter() - start < 8):
                t = time.perf_counter()
                m(x)
                ts.append((time.perf_counter() - t) * 1e3)
            out[b] = statistics.median(ts)
    return out


def pruned_torchvision(name, sd):
    """torchvision's MODEL with each conv, BatchNorm and linear layer resized
    to the shapes in the state dict, then loaded strictly: how a PyTorch user
    runs a channel-pruned model in the class they already use."""
    import torch.nn as nn
    import torchvision
    m = getattr(torchvision.models, name)()
    for full, mod in list(m.named_modules()):
        if isinstance(mod, nn.Conv2d):
            w = sd[full + ".weight"]
            new = nn.Conv2d(w.shape[1] * mod.groups, w.shape[0], mod.kernel_size, mod.stride, mod.padding,
                            mod.dilation, mod.groups, bias=mod.bias is not None)
        elif isinstance(mod, nn.BatchNorm2d):
            new = nn.BatchNorm2d(sd[full + ".weight"].shape[0], eps=mod.eps, momentum=mod.momentum)
        elif isinstance(mod, nn.Linear):
            w = sd[full + ".weight"]
            new = nn.Linear(w.shape[1], w.shape[0], bias=mod.bias is not None)
        else:
            continue
        parent, _, leaf = full.rpartition(".")
        setattr(m.get_submodule(parent) if parent else m, leaf, new)
    m.load_state_dict(sd, strict=True)
    return m.eval()


def cmd_latency(kind, path, threads):
    """Median latency (ms) at batch 1 and 64 of: a torchvision model with
    weights (dense), a saved Torch-Pruning model (tp), prunex's export
    (prunex: its exported weights.safetensors in a folder, in torchvision's
    class resized to them), or the dense
    model with its conv/linear weights magnitude-masked to a sparsity
    (unstructured:SPARSITY)."""
    import torch
    import torchvision
    from safetensors.torch import load_file
    if kind == "dense" or kind.startswith("unstructured"):
        m = torchvision.models.resnet18().eval()
        m.load_state_dict(load_file(path))
        if kind.startswith("unstructured"):
            import torch.nn.utils.prune as P
            s = float(kind.split(":")[1])
            params = [(mod, "weight") for mod in m.modules() if isinstance(mod, (torch.nn.Conv2d, torch.nn.Linear))]
            P.global_unstructured(params, pruning_method=P.L1Unstructured, amount=s)
            for mod, n in params:
                P.remove(mod, n)
    elif kind == "tp":
        m = torch.load(path, weights_only=False)
    else:
        m = pruned_torchvision("resnet18", load_file(os.path.join(path, "weights.safetensors")))
    r = latency(m, (3, 224, 224), threads)
    print(json.dumps({"b1": r[1], "b64": r[64]}))


def cmd_tnup_lenet(seed):
    """The LeNet-5 per-layer recipe done with torch.nn.utils.prune: the same
    schedule, optimizer, epochs, batch and data as recipes/lenet5-fashion."""
    import torch
    import torch.nn.utils.prune as P
    torch.set_num_threads(2)
    torch.manual_seed(int(seed))
    xtr, ytr, xte, yte = fashion()
    m = model("lenet5")
    train(m, xtr, ytr, 10, 0.05, 5e-4)
    dense = evaluate(m, xte, yte)
    for name, s in [("conv1", 0.85), ("conv2", 0.80), ("fc1", 0.75), ("fc2", 0.70), ("fc3", 0.80)]:
        P.l1_unstructured(getattr(m, name), "weight", amount=s)
    pruned = evaluate(m, xte, yte)
    train(m, xtr, ytr, 5, 0.02, 0.0, batch=32)
    print(json.dumps({"dense": dense, "pruned": pruned, "final": evaluate(m, xte, yte)}))


def evaluate(m, xte, yte):
    import torch
    m.eval()
    with torch.no_grad():
        right = sum((m(xte[i:i + 1000]).argmax(-1) == yte[i:i + 1000]).sum().item() for i in range(0, len(yte), 1000))
    return right / len(yte)


def train(m, xtr, ytr, epochs, lr, wd, teacher=None, temperature=4.0, alpha=0.9, batch=128, opt="sgd"):
    """The eager loop every reference uses: SGD with momentum 0.9 (or AdamW), batch 128 (or BATCH),
    cosine annealing per step (as prunex's `lr_schedule cosine`), optionally
    distilling: alpha * T^2 * KL(teacher/T || student/T) + (1 - alpha) * CE,
    the loss prunex's `distill` block defines."""
    import math
    import torch
    import torch.nn.functional as F
    if opt == "adamw":
        opt = torch.optim.AdamW(m.parameters(), lr=lr, weight_decay=wd)
    else:
        opt = torch.optim.SGD(m.parameters(), lr=lr, momentum=0.9, weight_decay=wd)
    steps = math.ceil(len(ytr) / batch)
    if teacher is not None:
        teacher.eval()
    for e in range(epochs):
        m.train()
        perm = torch.randperm(len(ytr))
        for k, i in enumerate(range(0, len(ytr), batch)):
            progress = (e + k / steps) / epochs
            for g in opt.param_groups:
                g["lr"] = lr * 0.5 * (1 + math.cos(math.pi * progress))
            b = perm[i:i + batch]
            out = m(xtr[b])
            loss = F.cross_entropy(out, ytr[b])
            if teacher is not None:
                with torch.no_grad():
                    t = teacher(xtr[b])
                kl = F.kl_div(F.log_softmax(out / temperature, -1), F.log_softmax(t / temperature, -1),
                              log_target=True, reduction="batchmean")
                loss = alpha * temperature ** 2 * kl + (1 - alpha) * loss
            opt.zero_grad()
            loss.backward()
            opt.step()


RESNET_DENSE_EPOCHS, RESNET_FT_EPOCHS, RESNET_RATIO = 12, 3, 0.3
# The distillation settings of recipes/resnet18-distill.prune.
RESNET_T, RESNET_ALPHA = 2.0, 0.7


def cmd_resnet_dense(seed, out):
    """Dense ResNet-18 (1×28×28, 10 classes) trained by an eager PyTorch loop;
    both tools start from these weights."""
    import torch
    from safetensors.torch import save_file
    torch.set_num_threads(2)
    torch.manual_seed(int(seed))
    xtr, ytr, xte, yte = fashion()
    m = model("resnet18")
    train(m, xtr, ytr, RESNET_DENSE_EPOCHS, 0.05, 5e-4)
    save_file({k: v.contiguous() for k, v in m.state_dict().items()}, out)
    print(json.dumps({"dense": evaluate(m, xte, yte)}))


def cmd_tp_resnet(seed, dense, distill):
    """Torch-Pruning 1.6: local L2 channel pruning of every group by
    RESNET_RATIO (`fc` ignored), then fine-tuning, optionally distilling from
    the dense model."""
    import copy
    import torch
    import torch_pruning as tp
    from safetensors.torch import load_file
    torch.set_num_threads(2)
    torch.manual_seed(int(seed))
    xtr, ytr, xte, yte = fashion()
    m = model("resnet18")
    m.load_state_dict(load_file(dense))
    teacher = copy.deepcopy(m).eval() if distill == "1" else None
    x = torch.randn(1, 1, 28, 28)
    tp.pruner.MetaPruner(m.eval(), x, importance=tp.importance.MagnitudeImportance(p=2),
                         pruning_ratio=RESNET_RATIO, ignored_layers=[m.fc], global_pruning=False).step()
    macs, params = tp.utils.count_ops_and_params(m, x)
    pruned = evaluate(m, xte, yte)
    train(m, xtr, ytr, RESNET_FT_EPOCHS, 0.01, 5e-4, teacher, RESNET_T, RESNET_ALPHA)
    print(json.dumps({"pruned": pruned, "final": evaluate(m, xte, yte), "macs": int(macs), "params": int(params)}))


# The settings of recipes/vit-fashion.prune (its pretraining is what the
# reference loop does for the dense model both tools start from).
VIT_DENSE_EPOCHS, VIT_FT_EPOCHS, VIT_T, VIT_ALPHA = 15, 5, 2.0, 0.7


def vit_dense_path(seed, limit, quick):
    """Where the dense model of a seed is kept between runs (target/bench/):
    training it is half of the section's time. Delete it to retrain."""
    epochs = 2 if quick else VIT_DENSE_EPOCHS
    return os.path.join(ROOT, "target", "bench", f"vit-dense-s{seed}-e{epochs}-l{limit}.safetensors")


def vit_dense(seed, limit, quick):
    """The dense model's accuracy, training it first unless it is kept."""
    path = vit_dense_path(seed, limit, quick)
    if not (os.path.exists(path) and os.path.exists(path + ".json")):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        r = me("vit-dense", seed, path + ".partial")
        with open(path + ".json", "w") as f:
            json.dump(r, f)
        os.replace(path + ".partial", path)
    with open(path + ".json") as f:
        return json.load(f)["dense"]


def cmd_vit_dense(seed, out):
    """Dense vit_mini (torchvision's VisionTransformer at 1×28×28) trained by
    the eager loop with the recipe's pretraining (AdamW 1e-3, weight decay
    0.05, cosine, batch 128); both tools start from these weights."""
    import torch
    from safetensors.torch import save_file
    torch.set_num_threads(2)
    torch.manual_seed(int(seed))
    xtr, ytr, xte, yte = fashion()
    m = model("vit_mini")
    epochs = int(os.environ.get("BENCH_VIT_EPOCHS") or VIT_DENSE_EPOCHS)
    train(m, xtr, ytr, epochs, 1e-3, 0.05, opt="adamw")
    save_file({k: v.contiguous() for k, v in m.state_dict().items()}, out)
    print(json.dumps({"dense": evaluate(m, xte, yte)}))


def tp_vit_prune(m, ratio):
    """Torch-Pruning 1.6.1's one working setting for torchvision's ViT
    (docs/design/vit-research.md): local L2, every coupled group by RATIO,
    `heads.head` ignored, widths rounded to the 4 heads (it keeps the number
    of heads and narrows each), then `hidden_dim` set as its example does."""
    import warnings
    import torch
    import torch_pruning as tp
    x = torch.randn(1, 1, 28, 28)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tp.pruner.MetaPruner(m.eval(), x, importance=tp.importance.MagnitudeImportance(p=2), pruning_ratio=ratio,
                             ignored_layers=[m.heads.head], round_to=4, global_pruning=False).step()
    m.hidden_dim = m.conv_proj.out_channels
    macs, params = tp.utils.count_ops_and_params(m, x)
    return int(macs), int(params)


def cmd_tp_vit(seed, dense, target_macs):
    """Torch-Pruning at the smallest ratio whose MACs are at most TARGET_MACS
    (prunex's), then the recipe's fine-tuning with distillation from the
    dense model; accuracies, counts and latency before and after."""
    import copy
    import torch
    from safetensors.torch import load_file
    torch.set_num_threads(2)
    torch.manual_seed(int(seed))
    xtr, ytr, xte, yte = fashion()
    m = model("vit_mini")
    m.load_state_dict(load_file(dense))
    teacher = copy.deepcopy(m).eval()
    before = latency(copy.deepcopy(m), (1, 28, 28), 2)
    # The smallest ratio whose MACs are not above prunex's: same MACs or fewer.
    ratio = next(r / 100 for r in range(15, 60) if tp_vit_prune(copy.deepcopy(m), r / 100)[0] <= int(target_macs))
    macs, params = tp_vit_prune(m, ratio)
    pruned = evaluate(m, xte, yte)
    train(m, xtr, ytr, VIT_FT_EPOCHS, 5e-4, 0.05, teacher, VIT_T, VIT_ALPHA, opt="adamw")
    after = latency(m, (1, 28, 28), 2)
    print(json.dumps({"ratio": ratio, "pruned": pruned, "final": evaluate(m, xte, yte), "macs": macs,
                      "params": params, "b64": [before[64], after[64]], "b1": [before[1], after[1]],
                      "width": m.conv_proj.out_channels}))


# ------------------------------------------------------------ the sections

def throughput(md, quick):
    md.append("## 1. Executor throughput: a training epoch, prunex vs an eager PyTorch loop\n")
    md.append("Images/s of one training epoch (SGD, momentum 0.9, batch 128, 1×28×28 Fashion-MNIST, 10 classes); "
              "prunex's figure is its own per-epoch timing (`timings.yaml`: the training steps, including "
              "copying each batch into a tensor, after the epoch's batches are built); PyTorch's loop indexes a "
              "normalised tensor already in memory. "
              "Alternating runs, median of each side. Target: prunex ≥ 1.05× PyTorch.\n")
    md.append("| model | threads | images | prunex img/s | PyTorch img/s | ratio | target |")
    md.append("|---|---|---|---|---|---|---|")
    rounds = 2 if quick else 3
    for name, limit in [("lenet5", 20000 if quick else 60000), ("resnet18", 2560 if quick else 10240)]:
        for threads in (1, 2):
            recipe = f'''recipe "throughput"
seed 0
device cpu
model {name} {{ input [1, 28, 28] classes 10 }}
data fashion_mnist "{DATA}" {{ batch 128 eval_batch 1000 normalize mean {MEAN} std {STD} limit {limit} }}
pretrain {{ epochs 1 optimizer sgd lr 0.01 momentum 0.9 }}
'''
            ours, theirs = [], []
            for _ in range(rounds):
                _, t = prunex_run(recipe, threads, ["--fresh"])
                ours.append(t["epochs"][0][3])
                theirs.append(me("torch-epoch", name, threads, limit)["images_per_second"])
            a, b, r = median_ratio(ours, theirs)
            ok = "met" if r >= 1.05 else "**missed**"
            md.append(f"| {name} | {threads} | {limit:,} | {a:,.0f} | {b:,.0f} | {r:.3f}× | ≥ 1.05×: {ok} |")
            print(f"throughput {name} {threads}: {a:.0f} vs {b:.0f} ({r:.2f}x)", flush=True)
    md.append("")


def distributed(md, quick):
    md.append("## 9. Data-parallel training: 2 processes × 1 thread, prunex vs PyTorch's DDP\n")
    md.append("Images/s of one ResNet-18 training epoch (1×28×28 Fashion-MNIST, SGD with momentum 0.9, global "
              "batch 128, BatchNorm per rank) on the 2 cores: prunex in one process with 2 threads, prunex with "
              "`--nproc 2` (Gloo, batch 64 per rank, 1 thread each, DDP's Reducer), PyTorch's "
              "`DistributedDataParallel` under `torchrun --standalone --nproc_per_node 2` (gloo, 1 thread each, "
              "each rank its slice of the same global batches), and PyTorch's eager loop in one process with 2 "
              "threads. prunex's figures are its per-epoch timings (`timings.yaml`, rank 0's clock, images of all "
              "ranks); PyTorch's time the same loop from a barrier to a barrier. Alternating runs, median of "
              "each. Target: prunex `--nproc 2` ≥ PyTorch DDP.\n")
    limit = 2560 if quick else 10240
    rounds = 2 if quick else 3
    recipe = lambda batch: f'''recipe "ddp"
seed 0
device cpu
model resnet18 {{ input [1, 28, 28] classes 10 }}
data fashion_mnist "{DATA}" {{ batch {batch} eval_batch 1000 normalize mean {MEAN} std {STD} limit {limit} }}
pretrain {{ epochs 1 optimizer sgd lr 0.01 momentum 0.9 }}
'''
    runs = {"prunex, 1 process × 2 threads": [], "prunex, --nproc 2 × 1 thread": [],
            "PyTorch DDP, torchrun 2 × 1 thread": [], "PyTorch eager, 1 process × 2 threads": []}
    torchrun = os.path.join(os.path.dirname(PY), "torchrun")
    for _ in range(rounds):
        _, t = prunex_run(recipe(128), 2, ["--fresh"])
        runs["prunex, 1 process × 2 threads"].append(t["epochs"][0][3])
        _, t = prunex_run(recipe(64), 1, ["--fresh", "--nproc", "2"])
        runs["prunex, --nproc 2 × 1 thread"].append(t["epochs"][0][3])
        out = sh([torchrun, "--standalone", "--nproc_per_node", "2", os.path.abspath(__file__),
                  "ddp-epoch", "resnet18", str(limit), "64"], env={"OMP_NUM_THREADS": "1"})
        runs["PyTorch DDP, torchrun 2 × 1 thread"].append(json.loads(out.strip().splitlines()[-1])["images_per_second"])
        runs["PyTorch eager, 1 process × 2 threads"].append(me("torch-epoch", "resnet18", 2, limit)["images_per_second"])
        print("distributed:", {k: round(v[-1]) for k, v in runs.items()}, flush=True)
    med = {k: statistics.median(v) for k, v in runs.items()}
    ddp = med["PyTorch DDP, torchrun 2 × 1 thread"]
    md.append(f"| run | images | img/s | ÷ PyTorch DDP |")
    md.append("|---|---|---|---|")
    for k, v in med.items():
        md.append(f"| {k} | {limit:,} | {v:,.0f} | {v / ddp:.3f}× |")
    r = med["prunex, --nproc 2 × 1 thread"] / ddp
    two = med["prunex, --nproc 2 × 1 thread"] / med["prunex, 1 process × 2 threads"]
    md.append(f"\nprunex `--nproc 2` ÷ PyTorch DDP: {r:.3f}× (target ≥ 1: {'met' if r >= 1 else '**missed**'}); "
              f"prunex 2 processes ÷ 1 process with 2 threads: {two:.3f}×.\n")


def planning(md, quick):
    md.append("## 2. Planning and surgery\n")
    md.append("### `prunex check` of a ResNet-50 channel-pruning recipe\n")
    md.append("The recipe is `benches/resnet50-channels.prune.in` (gradual cubic schedule, global scope with a cap, "
              "`round_to 8`, layer rules, an ignore list). Time: criterion's estimate (`cargo bench --bench check`); "
              "memory: peak RSS of the real `prunex check` (`/usr/bin/time`). `check` never loads libtorch.\n")
    out = sh(["cargo", "bench", "--bench", "check", "--", "--noplot"], cwd=ROOT)
    times = {}
    for side in (224, 1024):
        m = re.search(rf"check resnet50 recipe at {side}x{side}\s+time:\s+\[\S+ \S+ (\S+) (\S+)", out)
        times[side] = (float(m.group(1)), m.group(2))
    md.append("| input | time | target | peak memory |")
    md.append("|---|---|---|---|")
    tmpl = open(os.path.join(ROOT, "benches/resnet50-channels.prune.in")).read()
    for side in (224, 1024):
        d = tempfile.mkdtemp()
        p = os.path.join(d, "r.prune")
        with open(p, "w") as f:
            f.write(tmpl.replace("{side}", str(side)).replace("{lr}", "0.01"))
        r = subprocess.run(["/usr/bin/time", "-f", "%M", PRUNEX, "check", p], capture_output=True, text=True)
        shutil.rmtree(d, ignore_errors=True)
        rss = int(r.stderr.strip().splitlines()[-1]) / 1024
        t, unit = times[side]
        ms = t * (1000 if unit == "s" else 1 if unit == "ms" else 1e-3)
        ok = "met" if ms <= 20 else "**missed**"
        md.append(f"| 3×{side}×{side} | {ms:.1f} ms | ≤ 20 ms: {ok} | {rss:.0f} MB |")
    md.append("")
    out = sh(["cargo", "bench", "--bench", "watch"], cwd=ROOT)
    line = next(l for l in out.splitlines() if l.startswith("prunex watch"))
    md.append("`prunex watch` save-to-diagnostic latency on the same recipe (`cargo bench --bench watch`: the real "
              "binary watching a real file; each save changes the recipe and is timed until the verdict line "
              "arrives): " + line.split(": ", 1)[1] + ". Target: well under 200 ms.\n")
    md.append("### 50 % L2 channel surgery: prunex vs Torch-Pruning on the same weights\n")
    md.append("Seeded torchvision weights at 3×224×224, local 50 % per coupled group, `fc` ignored, "
              "`MagnitudeImportance(p=2)`. prunex: coupling analysis + importance + selection + surgery "
              "(`examples/surgery.rs`, median of 3 in one process); Torch-Pruning 1.6.1: `MetaPruner` "
              "construction (dependency-graph build) + `step()`. Alternating, 3 rounds each, medians. "
              "Target: ≥ 10× faster, identical params/MACs.\n")
    md.append("| model | prunex | Torch-Pruning | speed-up | params (both) | MACs (both) | target |")
    md.append("|---|---|---|---|---|---|---|")
    work = tempfile.mkdtemp(prefix="prunex-surgery-")
    pruned = {}
    for name in ("resnet18", "resnet50"):
        w = os.path.join(work, f"{name}.safetensors")
        me("seed-weights", name, w)
        ours, theirs, counts = [], [], set()
        for _ in range(2 if quick else 3):
            o = json.loads(sh([SURGERY, name, "3,224,224", "0.5", w, os.path.join(work, f"{name}-0.5"), "3"]))
            t = me("tp-surgery", name, w, 0.5, os.path.join(work, f"{name}-tp-0.5.pt"))
            ours.append(o["seconds"])
            theirs.append(t["seconds"])
            counts.add((o["params"][1], o["macs"][1]))
            counts.add((t["params"], t["macs"]))
        a, b, _ = median_ratio(ours, theirs)
        same = len(counts) == 1
        p, mac = sorted(counts)[0]
        ok = "met" if b / a >= 10 and same else "**missed**"
        md.append(f"| {name} | {a * 1e3:.0f} ms | {b * 1e3:.0f} ms | {b / a:.1f}× | {p:,}{'' if same else ' (differ!)'} | "
                  f"{mac / 1e9:.3f} G | ≥ 10×: {ok} |")
        print(f"surgery {name}: {a:.3f}s vs {b:.3f}s", flush=True)
        pruned[name] = w
    md.append("")
    return work, pruned


def speedup(md, work, weights, quick):
    md.append("## 3. Real speedup: resnet18 channel-pruned by prunex, measured\n")
    md.append("CPU inference latency (PyTorch 2.13 eager, 2 threads, 3×224×224, median of repeats) of resnet18 "
              "channel-pruned by prunex (its exported weights loaded strictly into torchvision's resnet18 with "
              "each layer resized to them, as a PyTorch user would) and by Torch-Pruning at the same ratio, against the MAC reduction; "
              "and the dense model with the same fraction of its weights zeroed (unstructured, "
              "`torch.nn.utils.prune.global_unstructured`), which dense kernels do not run faster. "
              "Target: latency speed-up ≥ 0.8 × MAC reduction at batch 64.\n")
    md.append("| pruned | MACs | MAC reduction | batch 1 (ms) | speed-up | batch 64 (ms) | speed-up | ≥ 0.8 × MAC reduction at 64 |")
    md.append("|---|---|---|---|---|---|---|---|")
    w = weights["resnet18"]
    dense = me("latency", "dense", w, 2)
    info = {}
    for ratio in (0.25, 0.5, 0.75):
        out = os.path.join(work, f"resnet18-{ratio}")
        info[ratio] = json.loads(sh([SURGERY, "resnet18", "3,224,224", str(ratio), w, out, "1"]))
        me("tp-surgery", "resnet18", w, ratio, os.path.join(work, f"resnet18-tp-{ratio}.pt"))
    m0 = info[0.5]["macs"][0]
    p0 = info[0.5]["params"][0]
    md.append(f"| dense | {m0 / 1e9:.3f} G | 1.00× | {dense['b1']:.2f} | 1.00× | {dense['b64']:.1f} | 1.00× | |")
    for ratio in (0.25, 0.5, 0.75):
        macs = info[ratio]["macs"][1]
        red = m0 / macs
        for who, kind, path in [("prunex", "prunex", os.path.join(work, f"resnet18-{ratio}")),
                                ("Torch-Pruning", "tp", os.path.join(work, f"resnet18-tp-{ratio}.pt"))]:
            r = me("latency", kind, path, 2)
            s1, s64 = dense["b1"] / r["b1"], dense["b64"] / r["b64"]
            ok = "met" if s64 >= 0.8 * red else "**missed**"
            md.append(f"| {who}, {int(ratio * 100)} % channels | {macs / 1e9:.3f} G | {red:.2f}× | {r['b1']:.2f} | {s1:.2f}× | "
                      f"{r['b64']:.1f} | {s64:.2f}× | {ok} |")
        sparsity = 1 - info[ratio]["params"][1] / p0
        r = me("latency", f"unstructured:{sparsity}", w, 2)
        md.append(f"| unstructured, {sparsity * 100:.0f} % of weights zero | {m0 / 1e9:.3f} G | 1.00× (dense kernels) | "
                  f"{r['b1']:.2f} | {dense['b1'] / r['b1']:.2f}× | {r['b64']:.1f} | {dense['b64'] / r['b64']:.2f}× | expected ≈ 1.0× |")
        print(f"speedup {ratio}: done", flush=True)
    md.append("")


def quality(md, quick):
    md.append("## 4. Quality on full Fashion-MNIST\n")
    seeds = [0, 1] if quick else [0, 1, 2, 3, 4]
    lenet = open(os.path.join(ROOT, "recipes/lenet5-fashion.prune")).read()
    md.append("### LeNet-5, per-layer post-training recipe: prunex vs `torch.nn.utils.prune`\n")
    md.append("`recipes/lenet5-fashion.prune` (dense: 10 epochs SGD 0.05, momentum 0.9, weight decay 5e-4, "
              "cosine; per-layer L1 sparsity conv1 0.85, conv2 0.80, fc1 0.75, fc2 0.70, fc3 0.80; 5 epochs of "
              "masked fine-tuning, batch 32, SGD 0.02, momentum 0.9, cosine), and the same written with "
              "`torch.nn.utils.prune.l1_unstructured` in an eager loop (same epochs, batch, optimizer, schedule, "
              "data, seeds; initialisation and data order come from each side's generator). 60,000 training and "
              "10,000 test images, CPU, mean over seeds "
              f"{', '.join(map(str, seeds))}. Target (decided for this recipe, which stays the main job as it "
              "is): after fine-tuning, no worse than `torch.nn.utils.prune` with the same settings, mean of the "
              "seeds.\n")
    md.append("| tool | dense | after pruning | after fine-tuning | fine-tuned − dense | per seed | target |")
    md.append("|---|---|---|---|---|---|---|")
    rows = {"prunex": [], "torch.nn.utils.prune": []}
    for s in seeds:
        rep, _ = prunex_run(re.sub(r"^seed \d+", f"seed {s}", lenet, flags=re.M), 2)
        rows["prunex"].append((rep["dense_accuracy"], rep["pruned_accuracy"], rep["final_accuracy"]))
        t = me("tnup-lenet", s)
        rows["torch.nn.utils.prune"].append((t["dense"], t["pruned"], t["final"]))
        print(f"lenet seed {s}: {rows['prunex'][-1]} vs {rows['torch.nn.utils.prune'][-1]}", flush=True)
    reference = statistics.mean(x[2] for x in rows["torch.nn.utils.prune"]) * 100
    for who, rs in rows.items():
        d, p, f = (statistics.mean(x[i] for x in rs) * 100 for i in range(3))
        each = ", ".join(f"{(x[2] - x[0]) * 100:+.2f}" for x in rs)
        if who == "prunex":
            ok = f"≥ {reference:.2f} %: {'met' if f >= reference else '**missed**'}"
        else:
            ok = "the reference"
        md.append(f"| {who} | {d:.2f} % | {p:.2f} % | {f:.2f} % | {f - d:+.2f} pt | {each} | {ok} |")
    md.append("")
    md.append("### LeNet-5 at 12× fewer nonzero weights, gradual cubic schedule (prunex)\n")
    grad = open(os.path.join(ROOT, "recipes/lenet5-gradual-12x.prune")).read()
    md.append("`recipes/lenet5-gradual-12x.prune`: the same dense model, global L1 magnitude pruning of all "
              "conv/linear weights from 0 to 91.7 % (12× fewer nonzero) on a cubic schedule over the fine-tuning "
              f"epochs. Mean over seeds {', '.join(map(str, seeds))}. Target: ≤ 0.5 pt below dense.\n")
    md.append("| dense | final | nonzero weights | final − dense | target |")
    md.append("|---|---|---|---|---|")
    rs = []
    for s in seeds:
        rep, _ = prunex_run(re.sub(r"^seed \d+", f"seed {s}", grad, flags=re.M), 2)
        rs.append((rep["dense_accuracy"], rep["final_accuracy"], rep["sparsity"]))
    d, f, sp = (statistics.mean(x[i] for x in rs) for i in range(3))
    ok = "met" if (f - d) * 100 >= -0.5 else "**missed**"
    md.append(f"| {d * 100:.2f} % | {f * 100:.2f} % | 1/{1 / (1 - sp):.1f} | {(f - d) * 100:+.2f} pt | ≥ −0.5 pt: {ok} |")
    md.append("")


def resnet(md, quick):
    md.append("## 5. Quality on full Fashion-MNIST: ResNet-18 at 2× fewer MACs, prunex vs Torch-Pruning\n")
    seeds = [0] if quick else [0, 1]
    limit = 3000 if quick else 0
    os.environ["BENCH_LIMIT"] = str(limit)
    md.append(f"ResNet-18 (torchvision's, 1×28×28 input, 10 classes). Per seed, one dense model is trained by an "
              f"eager PyTorch loop ({RESNET_DENSE_EPOCHS} epochs, SGD 0.05, momentum 0.9, weight decay 5e-4, cosine, "
              f"batch 128) and both tools start from its weights. Both prune every coupled channel group by "
              f"{RESNET_RATIO:.0%} by L2 norm (`fc` ignored; prunex: `group \"*\" ratio {RESNET_RATIO}`, Torch-Pruning "
              f"1.6.1: `MetaPruner(MagnitudeImportance(p=2), pruning_ratio={RESNET_RATIO})`), which halves the MACs, "
              f"then fine-tune {RESNET_FT_EPOCHS} epochs (SGD 0.01, momentum 0.9, weight decay 5e-4, cosine, batch 128), "
              f"without and with distillation from the dense model (T = {RESNET_T:g}, α = {RESNET_ALPHA:g}, as in "
              "`recipes/resnet18-distill.prune`; the reference loop uses "
              "`F.kl_div(..., log_target=True, reduction='batchmean')`). 60,000 training and 10,000 test images, "
              f"2 threads, mean over seeds {', '.join(map(str, seeds))}; each side draws its own data order. "
              "Targets: prunex not worse than Torch-Pruning and ≤ 0.5 pt below dense; distillation ≥ +0.3 pt over "
              "no distillation.\n")
    work = tempfile.mkdtemp(prefix="prunex-resnet-")
    rows = {k: [] for k in ("prunex", "prunex + distillation", "Torch-Pruning", "Torch-Pruning + distillation")}
    dense_acc, counts = [], set()
    for seed in seeds:
        w = os.path.join(work, f"dense-{seed}.safetensors")
        dense_acc.append(me("resnet-dense", seed, w)["dense"])
        for distill in (False, True):
            recipe = f"""recipe "resnet18-half-macs"
seed {seed}
device auto
data fashion_mnist "{DATA}" {{ batch 128 eval_batch 1000 normalize mean {MEAN} std {STD}{f' limit {limit}' if limit else ''} }}
model resnet18 {{
    input [1, 28, 28]
    classes 10
    weights "{w}"
}}
prune channels by l2 {{
    schedule oneshot at epoch 0
    group "*" ratio {RESNET_RATIO}
    ignore "fc"
}}
{f'distill {{ teacher dense temperature {RESNET_T} alpha {RESNET_ALPHA} }}' if distill else ''}
finetune {{
    epochs {RESNET_FT_EPOCHS}
    optimizer sgd lr 0.01 momentum 0.9 weight_decay 5e-4
    lr_schedule cosine
}}
"""
            rep, _ = prunex_run(recipe, 2)
            rows["prunex" + (" + distillation" if distill else "")].append((rep["pruned_accuracy"], rep["final_accuracy"]))
            counts.add((rep["params"][1], rep["macs"][1]))
            t = me("tp-resnet", seed, w, int(distill))
            rows["Torch-Pruning" + (" + distillation" if distill else "")].append((t["pruned"], t["final"]))
            counts.add((t["params"], t["macs"]))
            print(f"resnet seed {seed} distill {distill}: prunex {rows['prunex' + (' + distillation' if distill else '')][-1]} "
                  f"TP {(t['pruned'], t['final'])}", flush=True)
    shutil.rmtree(work, ignore_errors=True)
    dense = statistics.mean(dense_acc) * 100
    (params, macs), same = sorted(counts)[0], len(counts) == 1
    md.append(f"Dense: {dense:.2f} % (mean), 11,175,370 parameters, 33.1 M MACs. Pruned: {params:,} parameters, "
              f"{macs / 1e6:.1f} M MACs ({33149450 / macs:.2f}× fewer){'' if same else ' — **the two tools differ**: ' + str(sorted(counts))}.\n")
    md.append("| tool | after pruning | after fine-tuning | − dense | target |")
    md.append("|---|---|---|---|---|")
    final = {}
    for who, rs in rows.items():
        p, f = (statistics.mean(x[i] for x in rs) * 100 for i in range(2))
        final[who] = f
        if "distillation" in who:
            base = final[who.replace(" + distillation", "")]
            ok = f"≥ +0.3 pt over no distillation ({f - base:+.2f} pt): {'met' if f - base >= 0.3 else '**missed**'}"
        else:
            ok = f"≥ −0.5 pt: {'met' if f - dense >= -0.5 else '**missed**'}"
        md.append(f"| {who} | {p:.2f} % | {f:.2f} % | {f - dense:+.2f} pt | {ok} |")
    gap = final["prunex"] - final["Torch-Pruning"]
    md.append(f"\nprunex − Torch-Pruning after fine-tuning: {gap:+.2f} pt without distillation, "
              f"{final['prunex + distillation'] - final['Torch-Pruning + distillation']:+.2f} pt with "
              f"(target: not worse; seeds differ in data order, so differences within a few tenths are noise).\n")


def vit(md, quick):
    md.append("## 8. Transformers on full Fashion-MNIST: a ViT at half the MACs, prunex vs Torch-Pruning; Wanda vs magnitude\n")
    seeds = [0] if quick else [0, 1]
    limit = 3000 if quick else 0
    os.environ["BENCH_LIMIT"] = str(limit)
    if quick:
        os.environ["BENCH_VIT_EPOCHS"] = "2"
    recipe = open(os.path.join(ROOT, "recipes/vit-fashion.prune")).read()
    md.append(f"`vit_mini`: torchvision's `VisionTransformer(image_size=28, patch_size=4, num_layers=4, num_heads=4, "
              f"hidden_dim=64, mlp_dim=128)` on 1×28×28, 10 classes. Per seed, one dense model is trained by an eager "
              f"PyTorch loop with the pretraining of `recipes/vit-fashion.prune` ({VIT_DENSE_EPOCHS} epochs, AdamW 1e-3, "
              "weight decay 0.05, cosine, batch 128) and both tools start from its weights. prunex runs "
              "`recipes/vit-fashion.prune` itself (its `weights` set to the dense model): half the heads of every "
              "attention layer (`prune heads by l2 ratio 0.5`) and 55 % of every MLP's hidden width by L2 norm, then "
              f"{VIT_FT_EPOCHS} epochs of AdamW 5e-4 (weight decay 0.05, cosine, batch 128) distilling from the dense model "
              f"(T = {VIT_T:g}, α = {VIT_ALPHA:g}). Torch-Pruning 1.6.1 cannot prune `nn.MultiheadAttention`'s heads "
              "(its head-pruning settings skip the residual group; `docs/design/vit-research.md`): it prunes with its "
              "default setting for this model, every coupled group (embedding width, each MLP) by the smallest ratio "
              "(in steps of 0.01) whose MACs are not above prunex's, widths rounded to the 4 heads, then the same fine-tuning and distillation in "
              "the eager loop. Latency: batch 64, 2 threads, median of repeats, each tool in its own runtime "
              "(prunex's executor; PyTorch eager). 60,000 training and 10,000 test images, mean over seeds "
              f"{', '.join(map(str, seeds))}; each side draws its own data order. Targets: prunex ≤ 1 pt below dense "
              "and not worse than Torch-Pruning; latency speed-up ≥ 0.8 × the MAC reduction at batch 64.\n")
    work = tempfile.mkdtemp(prefix="prunex-vit-")
    rows = {"prunex": [], "Torch-Pruning": []}
    lat = {"prunex": [], "Torch-Pruning": []}
    counts = {"prunex": set(), "Torch-Pruning": set()}
    dense_acc, dense_macs, ratios, shape = [], 8075530, [], ""
    masks = {}
    for seed in seeds:
        dense_acc.append(vit_dense(seed, limit, quick))
        w = vit_dense_path(seed, limit, quick)
        text = re.sub(r"^seed \d+", f"seed {seed}", recipe, flags=re.M)
        text = text.replace("classes 10\n}", f'classes 10\n    weights "{w}"\n}}', 1)
        if limit:
            text = text.replace('include "common/fashion-mnist.prune"',
                                f'data fashion_mnist "{DATA}" {{ batch 128 eval_batch 1000 normalize mean {MEAN} std {STD} limit {limit} }}')
        rep, tim = prunex_run(text, 2)
        rows["prunex"].append((rep["pruned_accuracy"], rep["final_accuracy"]))
        lat["prunex"].append((tim["dense"]["batch64_ms"], tim["pruned"]["batch64_ms"]))
        counts["prunex"].add((rep["params"][1], rep["macs"][1]))
        dense_macs = rep["macs"][0]
        # Heads and MLP widths kept, from the plan the run carried out.
        kept = [g["keep"] for st in rep["plan"]["stages"] for g in st["groups"] if g.get("keep") is not None]
        heads = [g["keep"] for g in rep["plan"]["stages"][0]["groups"]]
        mlp = [g["keep"] for g in rep["plan"]["stages"][1]["groups"] if g["layers"][0].endswith("mlp.0") and g.get("keep")]
        shape = f"{heads[0]} of 4 heads, MLP {mlp[0]} of 128, embedding 64" if kept else ""
        t = me("tp-vit", seed, w, rep["macs"][1])
        rows["Torch-Pruning"].append((t["pruned"], t["final"]))
        lat["Torch-Pruning"].append(tuple(t["b64"]))
        counts["Torch-Pruning"].add((t["params"], t["macs"]))
        ratios.append((t["ratio"], t["width"]))
        print(f"vit seed {seed}: prunex {rows['prunex'][-1]} TP {rows['Torch-Pruning'][-1]}", flush=True)
        # Wanda against magnitude, before any fine-tuning.
        for gran in ("weights", "2:4"):
            for imp in ("wanda", "l1"):
                body = ["schedule oneshot at epoch 0"]
                if gran == "weights":
                    body.append("sparsity 0.5")
                if imp == "wanda":
                    body.append("batches 16")
                body = "\n    ".join(body)
                r = f"""recipe "vit-masks"
seed {seed}
device auto
data fashion_mnist "{DATA}" {{ batch 128 eval_batch 1000 normalize mean {MEAN} std {STD}{f' limit {limit}' if limit else ''} }}
model vit_mini {{ input [1, 28, 28] classes 10 weights "{w}" }}
prune {gran} by {imp} {{
    {body}
}}
finetune {{ epochs 1 optimizer adamw lr 5e-4 weight_decay 0.05 }}
"""
                rep, _ = prunex_run(r, 2)
                masks.setdefault((gran, imp), []).append((rep["pruned_accuracy"], rep["sparsity"]))
    shutil.rmtree(work, ignore_errors=True)
    dense = statistics.mean(dense_acc) * 100
    (pp, pm), = sorted(counts["prunex"])[:1]
    (tpp, tpm), = sorted(counts["Torch-Pruning"])[:1]
    md.append(f"Dense: {dense:.2f} % (mean), 139,018 parameters, {dense_macs / 1e6:.2f} M MACs. prunex: {pp:,} parameters, "
              f"{pm / 1e6:.2f} M MACs ({dense_macs / pm:.2f}× fewer; per layer {shape}). "
              f"Torch-Pruning: ratio {ratios[0][0]:.2f}, {tpp:,} parameters, {tpm / 1e6:.2f} M MACs ({dense_macs / tpm:.2f}× "
              f"fewer; embedding {ratios[0][1]}, 4 narrower heads).\n")
    md.append("| tool | MACs | after pruning | after fine-tuning | − dense | latency b64 dense → pruned | speed-up / MAC reduction | target |")
    md.append("|---|---|---|---|---|---|---|---|")
    final = {}
    for who, rs in rows.items():
        p, f = (statistics.mean(x[i] for x in rs) * 100 for i in range(2))
        final[who] = f
        d, a = statistics.median(x[0] for x in lat[who]), statistics.median(x[1] for x in lat[who])
        macs = pm if who == "prunex" else tpm
        eff = (d / a) / (dense_macs / macs)
        ok = (f"≤ 1 pt below dense: {'met' if f - dense >= -1 else '**missed**'}; speed-up ≥ 0.8 × MAC reduction: "
              f"{'met' if eff >= 0.8 else '**missed**'}") if who == "prunex" else ""
        md.append(f"| {who} | {macs / 1e6:.2f} M | {p:.2f} % | {f:.2f} % | {f - dense:+.2f} pt | {d:.2f} → {a:.2f} ms "
                  f"({d / a:.2f}×) | {eff:.2f} | {ok} |")
    gap = final["prunex"] - final["Torch-Pruning"]
    md.append(f"\nprunex − Torch-Pruning after fine-tuning: {gap:+.2f} pt (target: not worse: "
              f"{'met' if gap >= -0.1 else '**missed**'}; seeds differ in data order, so differences within a few "
              "tenths are noise).\n")
    md.append("Wanda against magnitude on the same dense models, before any fine-tuning: every weight matrix "
              "(convolution, linear layers, both attention projections, the head) at 50 % unstructured "
              "(Wanda: each output row loses half, `batches 16` of calibration; magnitude: `by l1`, half of each "
              "layer) and 2:4 (of every 4 consecutive input weights 2 stay).\n")
    md.append("| pruning | magnitude | Wanda | Wanda − magnitude |")
    md.append("|---|---|---|---|")
    for gran, label in (("weights", "50 % unstructured"), ("2:4", "2:4")):
        mag = statistics.mean(x[0] for x in masks[(gran, "l1")]) * 100
        wan = statistics.mean(x[0] for x in masks[(gran, "wanda")]) * 100
        md.append(f"| {label} | {mag:.2f} % | {wan:.2f} % | {wan - mag:+.2f} pt |")
    md.append("")


def diagnostics(md, quick):
    md.append("## 6. Many diagnostics: `prunex check` time grows linearly\n")
    md.append("Generated recipes with N problems (a `seed` repeated N times: N `duplicate_item` errors) checked by "
              "the release binary, for people (the first 50 drawn, the rest counted by code) and as JSON (every "
              "one, with its line and column). Median of 3 runs each. Linear: the time per diagnostic stays flat "
              "as N grows 16×. Before the cap, 40,000 took 55 s for people.\n")
    md.append("| N | file | for people | per diagnostic | JSON | per diagnostic |")
    md.append("|---|---|---|---|---|---|")
    ns = (10_000, 40_000) if quick else (10_000, 40_000, 160_000)
    per = {}
    for n in ns:
        d = tempfile.mkdtemp()
        p = os.path.join(d, "r.prune")
        with open(p, "w") as f:
            f.write('recipe "many"\nmodel lenet5 { input [1, 28, 28] classes 10 }\ndata fashion_mnist "/data"\n')
            f.write("seed 1\n" * n)
        size = os.path.getsize(p)
        times = {}
        for fmt in ("human", "json"):
            runs = []
            for _ in range(3):
                t = time.perf_counter()
                subprocess.run([PRUNEX, "check", "--format", fmt, p], capture_output=True)
                runs.append(time.perf_counter() - t)
            times[fmt] = statistics.median(runs)
        shutil.rmtree(d, ignore_errors=True)
        per[n] = (times["human"] / n, times["json"] / n)
        md.append(f"| {n:,} | {size / 1e6:.2f} MB | {times['human']:.2f} s | {per[n][0] * 1e6:.1f} µs | "
                  f"{times['json']:.2f} s | {per[n][1] * 1e6:.1f} µs |")
        print(f"diagnostics {n}: {times}", flush=True)
    lo, hi = ns[0], ns[-1]
    md.append("")
    md.append(f"Per-diagnostic time at {hi:,} over {lo:,}: {per[hi][0] / per[lo][0]:.2f}× for people, "
              f"{per[hi][1] / per[lo][1]:.2f}× as JSON (1× is linear; quadratic would be {hi / lo:.0f}×).\n")


def zoo_input(name):
    return 299 if name == "inception_v3" else 224


def cmd_zoo_export(name, out):
    """torchvision NAME (seeded, eval) exported by torch.onnx.export(optimize=False)
    to OUT/NAME.onnx, with its input and output in OUT/NAME.io.safetensors."""
    import warnings
    import torch
    import torchvision
    from safetensors.torch import save_file
    warnings.filterwarnings("ignore")
    torch.set_num_threads(2)
    torch.manual_seed(0)
    m = torchvision.models.get_model(name).eval()
    params = sum(p.numel() for p in m.parameters())
    size = zoo_input(name)
    x = torch.randn(1, 3, size, size)
    with torch.no_grad():
        y = m(x)
    start = time.perf_counter()
    try:
        torch.onnx.export(m, (x,), os.path.join(out, name + ".onnx"), optimize=False, external_data=True)
    except Exception as e:  # the exporter's own failures are part of the table
        print(json.dumps({"params": params, "error": f"torch.onnx.export: {type(e).__name__}: {str(e).splitlines()[0][:160]}"}))
        return
    save_file({"x": x.contiguous(), "y": y.contiguous()}, os.path.join(out, name + ".io.safetensors"))
    print(json.dumps({"params": params, "export_s": time.perf_counter() - start}))


def cmd_zoo_tp(name, ratio):
    """Torch-Pruning 1.6.1 on torchvision NAME: L2 magnitude, RATIO of every
    coupled group, the last layer (the classifier) ignored; timed."""
    import warnings
    import torch
    import torchvision
    import torch_pruning as tp
    warnings.filterwarnings("ignore")
    torch.set_num_threads(2)
    torch.manual_seed(0)
    m = torchvision.models.get_model(name).eval()
    size = zoo_input(name)
    x = torch.randn(1, 3, size, size)
    last = [mod for mod in m.modules() if isinstance(mod, (torch.nn.Linear, torch.nn.Conv2d))][-1]
    start = time.perf_counter()
    try:
        pruner = tp.pruner.MetaPruner(m, x, importance=tp.importance.MagnitudeImportance(p=2),
                                      pruning_ratio=float(ratio), ignored_layers=[last], global_pruning=False)
        pruner.step()
        secs = time.perf_counter() - start
        with torch.no_grad():
            m(x)
    except Exception as e:
        print(json.dumps({"error": f"{type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}"}))
        return
    print(json.dumps({"seconds": secs, "params_after": used_params(m, x)}))


def used_params(m, x):
    """The parameters of the modules an eval-mode forward pass runs: what an
    ONNX export holds (googlenet's and inception_v3's auxiliary heads exist
    in the module but run only in training)."""
    import torch
    ran = set()
    hooks = [mod.register_forward_hook(lambda mod, i, o: ran.add(mod)) for mod in m.modules()]
    with torch.no_grad():
        m(x)
    for h in hooks:
        h.remove()
    # nn.MultiheadAttention reads its out_proj's weight without calling it.
    owned = lambda mod: mod.parameters(recurse=isinstance(mod, torch.nn.MultiheadAttention))
    return sum(p.numel() for p in {id(p): p for mod in ran for p in owned(mod)}.values())


def attempt(args, timeout):
    """A subcommand (of this script, or a program) in a fresh process; its
    JSON line, or the reason it gave none."""
    try:
        r = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"took over {timeout} s"}
    lines = r.stdout.strip().splitlines()
    if r.returncode != 0 or not lines:
        tail = (r.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": f"exit {r.returncode}: {tail[:160]}"}
    return json.loads(lines[-1])


def zoo(md, quick):
    import torchvision
    names = torchvision.models.list_models(module=torchvision.models)
    if quick:
        names = ["resnet18", "mobilenet_v3_small", "shufflenet_v2_x0_5"]
    ratio = 0.3
    md.append("## 7. Every torchvision classifier, imported from ONNX and pruned beside Torch-Pruning\n")
    md.append(f"Each of the {len(names)} names `torchvision.models.list_models(module=torchvision.models)` returns, "
              "built with random weights in eval mode and exported by `torch.onnx.export(model, (x,), path, "
              "optimize=False)` (torch's default dynamo exporter, external data) at 224×224 (299 for "
              "inception_v3). prunex (`examples/zoo.rs`, the release build) imports the file, runs it with its "
              "executor on the same input and compares with torchvision's output, then removes "
              f"{ratio:.0%} of every coupled channel group it does not freeze (the output's; ShuffleNet's shuffled "
              "channels) by local L2 magnitude, and "
              "runs the pruned model. Torch-Pruning 1.6.1 prunes torchvision's module at the same setting "
              "(`MetaPruner`, `MagnitudeImportance(p=2)`, the last layer ignored) and runs it. Both in fresh "
              "processes on 2 threads, 20 minutes at most per step. \"equal\" compares the parameter counts "
              "after pruning; Torch-Pruning's counts the parameters of the modules an eval-mode forward pass runs "
              "(what the ONNX file holds: googlenet's and inception_v3's auxiliary heads run only in "
              "training).\n")
    md.append("| model | params | imports | output max diff | prunex params after | Torch-Pruning params after "
              "| equal | prunex prune s | TP prune s | why not |")
    md.append("|---|---|---|---|---|---|---|---|---|---|")
    work = tempfile.mkdtemp(prefix="prunex-zoo-")
    tally = {"models": 0, "imported": 0, "forward": 0, "prunex": 0, "tp": 0, "equal": 0, "both": 0}
    failures = []
    for name in names:
        tally["models"] += 1
        ex = attempt([PY, os.path.abspath(__file__), "zoo-export", name, work], 1200)
        ours = ex if "error" in ex else attempt(
            [ZOO, os.path.join(work, name + ".onnx"), os.path.join(work, name + ".io.safetensors"), str(ratio)], 1200)
        tp_ = attempt([PY, os.path.abspath(__file__), "zoo-tp", name, str(ratio)], 1200)
        for f in os.listdir(work):
            os.remove(os.path.join(work, f))
        imported = "params" in ours and "error" not in ex
        diff = ours.get("forward_diff")
        forward_ok = diff is not None and diff < 1e-3
        pruned = "pruned_output" in ours
        tp_ok = "params_after" in tp_
        equal = pruned and tp_ok and ours["params_after"] == tp_["params_after"]
        tally["imported"] += imported
        tally["forward"] += forward_ok
        tally["prunex"] += pruned
        tally["tp"] += tp_ok
        tally["both"] += pruned and tp_ok
        tally["equal"] += equal
        # Reasons name files by their name alone, not the temporary folder.
        for r in (ex, ours, tp_):
            if "error" in r:
                r["error"] = r["error"].replace(work + "/", "")
        why = "; ".join(x for x in (
            ("prunex: " + ours["error"]) if "error" in ours else "",
            ("Torch-Pruning: " + tp_["error"]) if "error" in tp_ else "") if x)
        if why:
            failures.append((name, why))
        def fmt(v, spec=","):
            return "—" if v is None else format(v, spec)
        cells = [
            name,
            fmt(ex.get("params")),
            "yes" if imported else "no",
            fmt(diff, ".1e"),
            fmt(ours.get("params_after")),
            fmt(tp_.get("params_after")),
            "yes" if equal else ("no" if pruned and tp_ok else "—"),
            fmt(ours.get("prune_s"), ".2f"),
            fmt(tp_.get("seconds"), ".2f"),
            why.replace("|", "\\|"),
        ]
        md.append("| " + " | ".join(cells) + " |")
        print(f"zoo {name}: prunex {ours} · TP {tp_}", flush=True)
    shutil.rmtree(work, ignore_errors=True)
    md.append("")
    md.append(f"Of {tally['models']} models: prunex imports {tally['imported']} (outputs within 1e-3 of "
              f"torchvision's: {tally['forward']}) and prunes {tally['prunex']}; Torch-Pruning prunes "
              f"{tally['tp']}. Both prune {tally['both']}, with equal parameter counts for {tally['equal']}. "
              "The last column gives each failure's reason as the tool reported it.\n")



def prunex_sensitivity(recipe_text, args, name="r", cache=None):
    """Runs `prunex sensitivity` on a recipe in a temp folder (with its own
    cache unless one is given); returns (sensitivity report, the fragment's
    text or None, seconds, the folder)."""
    import yaml
    d = tempfile.mkdtemp(prefix="prunex-sens-")
    text = recipe_text.replace('include "common/', f'include "{ROOT}/recipes/common/')
    with open(os.path.join(d, f"{name}.prune"), "w") as f:
        f.write(text)
    t = time.time()
    cache = cache or os.environ.get("PRUNEX_BENCH_CACHE", os.path.join(d, "cache"))
    sh([PRUNEX, "sensitivity", f"{name}.prune", "--out", "sens", *args], cwd=d,
       env={"PRUNEX_CACHE": cache, "NO_COLOR": "1"})
    seconds = time.time() - t
    with open(os.path.join(d, "sens/sensitivity.yaml")) as f:
        rep = yaml.safe_load(f)
    frag = None
    for n in os.listdir(os.path.join(d, "sens")):
        if n.endswith(".prune"):
            frag = open(os.path.join(d, "sens", n)).read()
    return rep, frag, seconds, d


def prunex_plan_macs(recipe_text):
    import yaml
    d = tempfile.mkdtemp(prefix="prunex-plan-")
    with open(os.path.join(d, "r.prune"), "w") as f:
        f.write(recipe_text)
    # The plan's YAML tags its enums (`!sgd`); their contents are enough here.
    class Loader(yaml.SafeLoader):
        pass
    Loader.add_multi_constructor("!", lambda loader, suffix, node: (
        loader.construct_mapping(node) if isinstance(node, yaml.MappingNode)
        else loader.construct_sequence(node) if isinstance(node, yaml.SequenceNode)
        else loader.construct_scalar(node)))
    plan = yaml.load(sh([PRUNEX, "plan", "r.prune", "--yaml"], cwd=d), Loader=Loader)
    shutil.rmtree(d, ignore_errors=True)
    return plan["stages"][-1]["macs_after"], plan["macs_before"]


SENS_RATIOS = "0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9"
SENS_BATCHES = 5


def sensitivity(md, quick):
    md.append("## 10. Sensitivity analysis and the budget solver: ResNet-18 on full Fashion-MNIST\n")
    seeds = [0] if quick else [0, 1]
    limit = 3000 if quick else 0
    os.environ["BENCH_LIMIT"] = str(limit)
    ft = 1 if quick else RESNET_FT_EPOCHS
    md.append(f"ResNet-18 (torchvision's, 1×28×28, 10 classes), per seed the dense model of section 5 "
              f"({RESNET_DENSE_EPOCHS} epochs, eager PyTorch). `prunex sensitivity` prunes each coupled channel "
              f"group of `prune channels by l2 {{ round_to 8  ignore \"fc\" }}` alone at ratios {SENS_RATIOS} "
              f"and evaluates the first {SENS_BATCHES} test batches of 1000 images. Then `--target-macs 0.5` "
              f"solves for per-group ratios at half the dense MACs, once minimising the summed loss increase (the "
              f"default objective) and once the summed accuracy points lost (`--objective accuracy`; the probes "
              f"come from the cache), and each fragment is fine-tuned by "
              f"the same recipe ({ft} epochs, SGD 0.01, momentum 0.9, weight decay 5e-4, cosine, batch 128) beside "
              f"the uniform `group \"*\" ratio R` at the smallest R (steps of 0.01) whose MACs are not above either "
              f"solver's. Mean over seeds {', '.join(map(str, seeds))}. Target: the solver's fragment (default "
              f"objective) ≥ the uniform ratio at the same MACs.\n")
    work = tempfile.mkdtemp(prefix="prunex-sensitivity-")
    data = f'data fashion_mnist "{DATA}" {{ batch 128 eval_batch 1000 normalize mean {MEAN} std {STD}{f" limit {limit}" if limit else ""} }}'
    finetune = f"""finetune {{
    epochs {ft}
    optimizer sgd lr 0.01 momentum 0.9 weight_decay 5e-4
    lr_schedule cosine
}}"""
    whos = ("solver", "solver-accuracy", "uniform")
    rows = {w: [] for w in whos}
    macs_of = {w: [] for w in whos}
    ranking_md, svg, chosen = None, None, None
    for seed in seeds:
        w = os.path.join(work, f"dense-{seed}.safetensors")
        dense = me("resnet-dense", seed, w)["dense"]
        head = f"""recipe "resnet18-sensitivity"
seed {seed}
device auto
{data}
model resnet18 {{
    input [1, 28, 28]
    classes 10
    weights "{w}"
}}
"""
        block = """prune channels by l2 {
    schedule oneshot at epoch 0
    round_to 8
    ignore "fc"
}
"""
        cache = os.path.join(work, f"cache-{seed}")
        args = ["--ratios", SENS_RATIOS, "--batches", str(SENS_BATCHES), "--target-macs", "0.5"]
        rep, frag, secs, d = prunex_sensitivity(head + block + finetune, args, cache=cache)
        print(f"sensitivity seed {seed}: {secs:.0f} s", flush=True)
        if ranking_md is None:
            ranking_md = sensitivity_ranking(rep, secs)
            svg = open(os.path.join(d, "sens/sensitivity.svg")).read()
        rep_acc, frag_acc, _, d_acc = prunex_sensitivity(head + block + finetune, args + ["--objective", "accuracy"],
                                                   cache=cache)
        shutil.rmtree(d_acc, ignore_errors=True)
        if chosen is None:
            chosen = (rep["solution"]["ratios"], rep_acc["solution"]["ratios"])
        solved = head + frag + finetune
        solved_acc = head + frag_acc + finetune
        sm = min(prunex_plan_macs(solved)[0], prunex_plan_macs(solved_acc)[0])
        # The uniform ratio with MACs not above either solver's.
        r = 0.01
        while True:
            um, _ = prunex_plan_macs(head + block.replace('ignore "fc"', f'group "*" ratio {r:.2f}\n    ignore "fc"') + finetune)
            if um <= sm or r > 0.9:
                break
            r += 0.01
        uniform = head + block.replace('ignore "fc"', f'group "*" ratio {r:.2f}\n    ignore "fc"') + finetune
        for who, text in (("solver", solved), ("solver-accuracy", solved_acc), ("uniform", uniform)):
            rp, _ = prunex_run(text, 2)
            rows[who].append((dense, rp["pruned_accuracy"], rp["final_accuracy"]))
            macs_of[who].append((rp["macs"][1], r if who == "uniform" else None))
            print(f"seed {seed} {who}: {rows[who][-1]} MACs {rp['macs'][1]}", flush=True)
        shutil.rmtree(d, ignore_errors=True)
    md.append(ranking_md)
    with open(os.path.join(RESULTS, "sensitivity-resnet18.svg"), "w") as f:
        f.write(svg)
    md.append("![accuracy against ratio, one line per group](benches/results/sensitivity-resnet18.svg)\n")
    md.append("Solver against uniform at the same MACs, after fine-tuning:\n")
    md.append("| ratios | MACs (per seed) | after pruning | after fine-tuning | − dense |")
    md.append("|---|---|---|---|---|")
    final = {}
    for who in whos:
        dn, p, f = (statistics.mean(x[i] for x in rows[who]) * 100 for i in range(3))
        final[who] = f
        if who == "solver":
            label = "solver's fragment (`--target-macs 0.5`, objective loss)"
        elif who == "solver-accuracy":
            label = "solver's fragment (`--target-macs 0.5 --objective accuracy`)"
        else:
            label = f"uniform `group \"*\" ratio {', '.join(f'{m[1]:.2f}' for m in macs_of[who])}`"
        macs = ", ".join(f"{m[0] / 1e6:.2f} M" for m in macs_of[who])
        md.append(f"| {label} | {macs} | {p:.2f} % | {f:.2f} % | {f - dn:+.2f} pt |")
    md.append("\nRatios the solver chose (seed 0) by objective:\n")
    md.append("| group | loss (default) | accuracy |")
    md.append("|---|---|---|")
    for (name, r_loss), (_, r_acc) in zip(*chosen):
        md.append(f"| `{name}` | {r_loss:.1f} | {r_acc:.1f} |")
    gap = final["solver"] - final["uniform"]
    md.append(f"\nsolver − uniform after fine-tuning: {gap:+.2f} pt (target ≥ 0: {'met' if gap >= 0 else '**missed**'}); "
              f"with `--objective accuracy`: {final['solver-accuracy'] - final['uniform']:+.2f} pt.\n")

    # A 37-group model: the time of a bounded analysis.
    md.append("Time of a larger analysis: torchvision's ResNet-50 at 1×28×28 (37 prunable groups; no weights, "
              "so the randomly initialised model is measured: only the time counts), 9 ratios, 2 batches of 1000 "
              "test images per probe, 2 threads, release build, an empty cache.\n")
    text = f"""recipe "resnet50-sensitivity"
seed 0
device auto
{data}
model resnet50 {{ input [1, 28, 28] classes 10 }}
prune channels by l2 {{
    schedule oneshot at epoch 0
    ignore "fc"
}}
"""
    rep, _, secs, d = prunex_sensitivity(text, ["--ratios", SENS_RATIOS, "--batches", "2", "--threads", "2"])
    shutil.rmtree(d, ignore_errors=True)
    probes = sum(len(c["points"]) for c in rep["curves"])
    md.append(f"| model | groups | probes | evaluated images | time | per probe |")
    md.append("|---|---|---|---|---|---|")
    md.append(f"| resnet50 | {len(rep['curves'])} | {probes} | {probes * rep['images']:,} | {secs:.0f} s | {secs / probes:.2f} s |\n")
    shutil.rmtree(work, ignore_errors=True)


def sensitivity_ranking(rep, secs):
    """The measured ranking beside recipes/common/resnet-guidance.prune."""
    dense = rep["dense"]["accuracy"]
    def mean_drop(c):
        return statistics.mean((dense - p["accuracy"]) * 100 for p in c["points"])
    def drop_at(c, r):
        return next(((dense - p["accuracy"]) * 100 for p in c["points"] if abs(p["ratio"] - r) < 1e-9), float("nan"))
    def kind(c):
        layers = c["layers"]
        if "conv1" in layers:
            return "stem and layer1's residual stream"
        if any(l.endswith("downsample.0") for l in layers):
            return "a stage's residual stream (its downsample path)"
        if layers[0].endswith(".0.conv1"):
            return "first conv of a stage's first block"
        return "first conv of a later block"
    curves = sorted(rep["curves"], key=mean_drop, reverse=True)
    out = [f"Dense on the {rep['images']:,} evaluation images: {dense * 100:.2f} %. {len(curves)} groups × "
           f"{len(rep['ratios'])} ratios in {secs:.0f} s (seed 0, release build, 2 threads). Accuracy lost (points), "
           "most sensitive first:\n",
           "| rank | group | layers | what it is | 0.3 | 0.5 | 0.7 | mean over ratios |",
           "|---|---|---|---|---|---|---|---|"]
    for k, c in enumerate(curves):
        out.append(f"| {k + 1} | `{c['name']}` | {len(c['layers'])} | {kind(c)} | {drop_at(c, 0.3):.2f} | "
                   f"{drop_at(c, 0.5):.2f} | {drop_at(c, 0.7):.2f} | {mean_drop(c):.2f} |")
    stream = [k for k, c in enumerate(curves) if "stream" in kind(c)]
    firsts = [k for k, c in enumerate(curves) if kind(c) == "first conv of a stage's first block"]
    out.append(f"\nThe residual-stream groups (the stem and the downsample paths, which the guidance caps lowest: "
               f"stem ≤ 20 %, last convs of blocks 20–50 %) rank {', '.join(str(k + 1) for k in stream)} of "
               f"{len(curves)}; the first convolutions of each stage's first block rank "
               f"{', '.join(str(k + 1) for k in firsts)}.\n")
    return "\n".join(out)

SECTIONS = ["throughput", "planning", "speedup", "quality", "resnet", "diagnostics", "zoo", "vit", "distributed",
            "sensitivity"]
RESULTS = os.path.join(ROOT, "benches/results")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer rounds and images (a smoke run, not for BENCHMARKS.md)")
    ap.add_argument("--sections", default=",".join(SECTIONS),
                    help=f"comma-separated, of: {', '.join(SECTIONS)}; `none` only reassembles BENCHMARKS.md")
    ap.add_argument("--out", default=os.path.join(ROOT, "BENCHMARKS.md"))
    ap.add_argument("sub", nargs="*", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.sub:
        fn = globals()["cmd_" + a.sub[0].replace("-", "_")]
        return fn(*a.sub[1:])
    import torch
    # `--sections none` only reassembles BENCHMARKS.md from benches/results.
    sections = [x for x in a.sections.split(",") if x not in ("", "none")]
    unknown = [x for x in sections if x not in SECTIONS]
    if unknown:
        raise SystemExit(f"unknown section(s) {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
    gpu = "GPU: " + torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    provenance = (f"_Measured {datetime.date.today().isoformat()} by `benches/compare{' --quick' if a.quick else ''} "
                  f"--sections {{}}` on {os.cpu_count()} cores ({cpu}), {gpu}; PyTorch {torch.__version__}, "
                  f"Torch-Pruning 1.6.1, prunex {sh([PRUNEX, '--version']).split()[-1]}._\n")
    # Each section is written to benches/results/SECTION.md (a quick run to a
    # temporary folder) and BENCHMARKS.md is assembled from all of them, so a
    # section can be re-measured alone and every figure keeps its own date
    # and command.
    results = RESULTS if not a.quick else tempfile.mkdtemp(prefix="prunex-bench-results-")
    os.makedirs(results, exist_ok=True)
    work = weights = None
    for name in SECTIONS:
        if name not in sections:
            continue
        md = []
        if name == "throughput":
            throughput(md, a.quick)
        elif name == "planning":
            work, weights = planning(md, a.quick)
        elif name == "speedup":
            if weights is None:
                work = tempfile.mkdtemp(prefix="prunex-surgery-")
                weights = {"resnet18": os.path.join(work, "resnet18.safetensors")}
                me("seed-weights", "resnet18", weights["resnet18"])
            speedup(md, work, weights, a.quick)
        elif name == "quality":
            quality(md, a.quick)
        elif name == "resnet":
            resnet(md, a.quick)
        elif name == "diagnostics":
            diagnostics(md, a.quick)
        elif name == "zoo":
            zoo(md, a.quick)
        elif name == "vit":
            vit(md, a.quick)
        elif name == "distributed":
            distributed(md, a.quick)
        elif name == "sensitivity":
            sensitivity(md, a.quick)
        md.insert(1, provenance.format(name))
        with open(os.path.join(results, name + ".md.tmp"), "w") as f:
            f.write("\n".join(md) + "\n")
        os.replace(os.path.join(results, name + ".md.tmp"), os.path.join(results, name + ".md"))
    if work:
        shutil.rmtree(work, ignore_errors=True)
    out = ["# Benchmarks", "",
           "Written by `benches/compare` — prunex beside PyTorch and Torch-Pruning on the same machine, "
           "model, data, seeds and threads, in one run per section. Ratios and medians, not single timings. "
           "Each section names the command and date that measured it; `benches/compare` re-measures "
           "everything (about 4 hours on 2 cores: the zoo and ViT sections take about an hour each), `--sections NAME,...` only those.", ""]
    if a.quick:
        out.insert(2, "**Quick run: fewer rounds and images; not the published figures.**\n")
    for name in SECTIONS:
        path = os.path.join(results, name + ".md")
        if os.path.exists(path):
            out.append(open(path).read())
    extra = os.path.join(ROOT, "benches/BENCHMARKS.notes.md")
    if os.path.exists(extra):
        out.append(open(extra).read())
    with open(a.out + ".tmp", "w") as f:
        f.write("\n".join(out))
    os.replace(a.out + ".tmp", a.out)
    if a.quick:
        shutil.rmtree(results, ignore_errors=True)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
