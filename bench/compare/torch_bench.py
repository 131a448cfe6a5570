#!/usr/bin/env python3
"""The PyTorch side of bench/compare/run.sh: the same workloads as bench/compare/webdino.ts, one per
process, printed as one JSON line.

    python3 torch_bench.py --workload matmul|attention|dino-step|dinov2-inf --mode fp32|amp [--quick]

Modes
- fp32: eager float32 with TF32 off (torch.backends.cuda.matmul.allow_tf32 = False and the cuDNN
  flag), the like-for-like baseline of webdino's f32 kernels.
- amp: autocast, float16 with a GradScaler on CUDA (as DINO trains), bfloat16 on CPU.

The models are written here (not imported from the DINO repositories) to match webdino's
(models/vit.ts, models/dino-head.ts, train/loss.ts): a pre-norm ViT (qkv bias, exact GELU, MLP 4x,
LayerNorm eps 1e-6, a CLS token, learned position embeddings resized bicubically for other grids),
DINO's head (3-layer MLP 2048 wide, bottleneck 256, l2-normalised features into a weight-normalised
last layer of 65536 prototypes with fixed norms), DINO's loss (teacher centering and sharpening,
student temperature 0.1, every global/other-crop pair), per-tensor gradient clipping at 3, AdamW
(no decay on biases and 1-D tensors), teacher EMA and center update. Attention is written out
(softmax(QKᵀ/√d)V) since torch 1.13 has no fused attention; on torch ≥ 2 the fused kernel would
be faster, so the fp32 figures here are a conservative baseline there.
Timing: median wall time of `reps` runs after warm-up, each ending with torch.cuda.synchronize().
"""
import argparse
import json
import math
import os
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


def sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize()


def time_runs(fn, dev, warmup, reps):
    for _ in range(warmup):
        fn()
    sync(dev)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        sync(dev)
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


# ------------------------------------------------------------------------------------------------
# Models (same shapes and parameter layout as webdino's)


class Block(nn.Module):
    def __init__(self, dim, heads, drop_path, layer_scale):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.fc1 = nn.Linear(dim, 4 * dim)
        self.fc2 = nn.Linear(4 * dim, dim)
        self.drop_path = drop_path
        self.ls1 = nn.Parameter(torch.full((dim,), layer_scale)) if layer_scale else None
        self.ls2 = nn.Parameter(torch.full((dim,), layer_scale)) if layer_scale else None

    def branch(self, x):
        # Per-sample drop path: keep with probability 1 - p, scaled by 1 / (1 - p).
        if not self.training or self.drop_path == 0:
            return x
        keep = 1 - self.drop_path
        mask = torch.floor(keep + torch.rand(x.shape[0], 1, 1, device=x.device, dtype=x.dtype)) / keep
        return x * mask

    def attn(self, x):
        B, N, D = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        a = torch.softmax((q @ k.transpose(-2, -1)) * (D // self.heads) ** -0.5, dim=-1)
        return self.proj((a @ v).transpose(1, 2).reshape(B, N, D))

    def forward(self, x):
        a = self.attn(self.norm1(x))
        x = x + self.branch(a * self.ls1 if self.ls1 is not None else a)
        m = self.fc2(F.gelu(self.fc1(self.norm2(x))))
        return x + self.branch(m * self.ls2 if self.ls2 is not None else m)


class ViT(nn.Module):
    def __init__(self, dim=384, depth=12, heads=6, patch=16, img=224, drop_path=0.0, layer_scale=0.0):
        super().__init__()
        self.patch = patch
        self.proj = nn.Conv2d(3, dim, patch, stride=patch)
        grid = img // patch
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos = nn.Parameter(torch.randn(1, grid * grid + 1, dim) * 0.02)
        rates = [drop_path * i / max(depth - 1, 1) for i in range(depth)]
        self.blocks = nn.ModuleList(Block(dim, heads, r, layer_scale) for r in rates)
        self.norm = nn.LayerNorm(dim, eps=1e-6)

    def pos_for(self, h, w):
        n = self.pos.shape[1] - 1
        if h * w == n:
            return self.pos
        side = int(math.sqrt(n))
        patch = self.pos[:, 1:].reshape(1, side, side, -1).permute(0, 3, 1, 2)
        patch = F.interpolate(patch, size=(h, w), mode="bicubic", align_corners=False)
        return torch.cat([self.pos[:, :1], patch.permute(0, 2, 3, 1).reshape(1, h * w, -1)], dim=1)

    def forward(self, x):
        B, _, H, W = x.shape
        t = self.proj(x).flatten(2).transpose(1, 2)
        t = torch.cat([self.cls.expand(B, -1, -1), t], dim=1) + self.pos_for(H // self.patch, W // self.patch)
        for b in self.blocks:
            t = b(t)
        return self.norm(t)[:, 0]


class DINOHead(nn.Module):
    def __init__(self, dim, out_dim=65536, hidden=2048, bottleneck=256):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, bottleneck))
        self.v = nn.Parameter(torch.randn(out_dim, bottleneck) * bottleneck**-0.5)

    def forward(self, x):
        # Weight-normalised last layer with fixed norms: prototypes are unit vectors.
        return F.normalize(self.mlp(x), dim=-1) @ F.normalize(self.v, dim=-1).t()


class Model(nn.Module):
    def __init__(self, backbone, head):
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, groups):
        return self.head(torch.cat([self.backbone(g) for g in groups]))


# ------------------------------------------------------------------------------------------------
# Workloads


def workload_matmul(dev, amp, quick):
    n = 256 if quick else 4096
    a = torch.randn(n, n, device=dev)
    b = torch.randn(n, n, device=dev)

    def run():
        with autocast(dev, amp):
            a @ b

    ms = time_runs(run, dev, 1, 3 if quick else 10)
    return {"shape": f"{n}x{n} @ {n}x{n}", "ms": ms, "gflops": 2 * n**3 / ms / 1e6}


def workload_attention(dev, amp, quick):
    B, H, N, d = (2, 2, 17, 16) if quick else (64, 6, 197, 64)
    q, k, v = (torch.randn(B, H, N, d, device=dev, requires_grad=True) for _ in range(3))
    g = torch.randn(B, H, N, d, device=dev)

    def run():
        with autocast(dev, amp):
            out = torch.softmax((q @ k.transpose(-2, -1)) * d**-0.5, dim=-1) @ v
        out.backward(g.to(out.dtype))
        for t in (q, k, v):
            t.grad = None

    ms = time_runs(run, dev, 1, 3 if quick else 10)
    return {"shape": f"fwd+bwd B{B} H{H} N{N} d{d}", "ms": ms, "gflops": 12 * B * H * N * N * d / ms / 1e6}


def dino_config(quick):
    if quick:
        return dict(dim=32, depth=1, heads=2, patch=8, out_dim=64, hidden=64, bottleneck=32, batch=2, gsize=16, lsize=8, nlocal=2)
    return dict(dim=384, depth=12, heads=6, patch=16, out_dim=65536, hidden=2048, bottleneck=256, batch=64, gsize=224, lsize=96, nlocal=8)


def step_flops(c):
    """The flop model of webdino's bench/train-step.ts (multiply-add = 2)."""

    def crop(size):
        D, p = c["dim"], c["patch"]
        patches = (size // p) ** 2
        N = patches + 1
        h, b = c["hidden"], c["bottleneck"]
        return 2 * patches * 3 * p * p * D + c["depth"] * (24 * N * D * D + 4 * N * N * D) + 2 * (D * h + h * h + h * b + b * c["out_dim"])

    g, l = crop(c["gsize"]), crop(c["lsize"])
    return c["batch"] * (3 * (2 * g + c["nlocal"] * l) + 2 * g)


def workload_dino_step(dev, amp, quick):
    c = dino_config(quick)
    torch.manual_seed(0)
    make = lambda dp: Model(ViT(c["dim"], c["depth"], c["heads"], c["patch"], c["gsize"], dp), DINOHead(c["dim"], c["out_dim"], c["hidden"], c["bottleneck"])).to(dev)
    student, teacher = make(0.1), make(0.0)
    teacher.load_state_dict(student.state_dict())
    for p in teacher.parameters():
        p.requires_grad = False
    decay = [p for n, p in student.named_parameters() if not n.endswith("bias") and p.ndim > 1]
    no_decay = [p for n, p in student.named_parameters() if n.endswith("bias") or p.ndim <= 1]
    opt = torch.optim.AdamW([{"params": decay}, {"params": no_decay, "weight_decay": 0.0}], lr=5e-4 * c["batch"] / 256, weight_decay=0.04)
    scaler = torch.cuda.amp.GradScaler() if amp and dev.type == "cuda" else None
    center = torch.zeros(1, c["out_dim"], device=dev)
    B, V = c["batch"], 2 + c["nlocal"]
    globals_ = torch.randn(2 * B, 3, c["gsize"], c["gsize"], device=dev)
    locals_ = torch.randn(c["nlocal"] * B, 3, c["lsize"], c["lsize"], device=dev)

    def run():
        nonlocal center
        with autocast(dev, amp):
            with torch.no_grad():
                t_out = teacher([globals_])
            s_out = student([globals_, locals_])
            q = torch.softmax((t_out.float() - center) / 0.04, dim=-1).chunk(2)
            logp = torch.log_softmax(s_out.float() / 0.1, dim=-1).chunk(V)
            loss = sum(-(q[i] * logp[v]).sum(-1).mean() for i in range(2) for v in range(V) if v != i) / (2 * (V - 1))
        opt.zero_grad(set_to_none=True)
        if scaler:
            scaler.scale(loss).backward()
            scaler.unscale_(opt)
        else:
            loss.backward()
        for p in student.parameters():  # DINO's per-tensor clipping
            if p.grad is not None:
                n = p.grad.norm()
                p.grad.mul_(torch.clamp(3.0 / (n + 1e-6), max=1.0))
        if scaler:
            scaler.step(opt)
            scaler.update()
        else:
            opt.step()
        with torch.no_grad():
            for ps, pt in zip(student.parameters(), teacher.parameters()):
                pt.mul_(0.996).add_(ps.detach(), alpha=0.004)
            center = 0.9 * center + 0.1 * t_out.float().mean(0, keepdim=True)
        loss.item()  # the one readback per step, as webdino's trainer does

    ms = time_runs(run, dev, 1, 3 if quick else 5)
    shape = f"tiny ViT d32 L1, 2x16+2x8 px, B{B}" if quick else f"ViT-S/16, 2x224+8x96 px, B{B}"
    return {"shape": shape, "ms": ms, "imagesPerSec": B / (ms / 1000), "gflops": step_flops(c) / ms / 1e6}


def workload_dinov2_inf(dev, amp, quick):
    B, S = (2, 28) if quick else (64, 224)
    vit = ViT(384, 12, 6, 14, 518, 0.0, 1e-5).to(dev).eval()
    x = torch.randn(B, 3, S, S, device=dev)

    def run():
        with torch.no_grad(), autocast(dev, amp):
            vit(x).float().cpu()

    ms = time_runs(run, dev, 1, 3 if quick else 10)
    return {"shape": f"ViT-S/14 (DINOv2 shape) fwd, B{B} at {S} px", "ms": ms, "imagesPerSec": B / (ms / 1000)}


class autocast:
    """AMP context: float16 on CUDA, bfloat16 on CPU; a no-op in fp32 mode."""

    def __init__(self, dev, amp):
        self.ctx = torch.autocast(dev.type, dtype=torch.float16 if dev.type == "cuda" else torch.bfloat16) if amp else None

    def __enter__(self):
        return self.ctx.__enter__() if self.ctx else None

    def __exit__(self, *a):
        return self.ctx.__exit__(*a) if self.ctx else None


WORKLOADS = {"matmul": workload_matmul, "attention": workload_attention, "dino-step": workload_dino_step, "dinov2-inf": workload_dinov2_inf}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--workload", required=True, choices=list(WORKLOADS))
    ap.add_argument("--mode", required=True, choices=["fp32", "amp"])
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if dev.type == "cpu":
        torch.set_num_threads(os.cpu_count() or 1)  # some builds default to 1 thread; lavapipe uses every core
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    name = torch.cuda.get_device_name(0) if dev.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    res = WORKLOADS[args.workload](dev, args.mode == "amp", args.quick)
    note = None
    if args.mode == "amp":
        note = "float16 autocast + GradScaler" if dev.type == "cuda" else "bfloat16 autocast (CPU)"
    out = {"impl": f"torch-{args.mode}", "workload": args.workload, "device": f"{name}, torch {torch.__version__}", **res}
    if note:
        out["note"] = note
    print(json.dumps(out))


if __name__ == "__main__":
    main()
