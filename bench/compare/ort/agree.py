#!/usr/bin/python3
"""Agreement of the outputs bench/compare/ort/run.sh collects, per model folder: every engine's
CLS and patch features against PyTorch's (torch_*.npy), as the relative error
max|a - ref| / max|ref| over each output (float64 arithmetic), and the images/s of the JSON lines
in results.jsonl; prints one table.

    /usr/bin/python3 bench/compare/ort/agree.py OUT_DIR
"""
import json
import os
import sys

import numpy as np

ENGINES = ["webdino", "ort-webgpu", "ort-cpu"]


def rel(a, ref):
    a, ref = a.astype(np.float64), ref.astype(np.float64)
    return float(np.abs(a - ref).max() / np.abs(ref).max())


def main():
    out = sys.argv[1]
    results = []
    path = os.path.join(out, "results.jsonl")
    if os.path.exists(path):
        results = [json.loads(l) for l in open(path) if l.strip().startswith("{")]
    models = sorted(d for d in os.listdir(out) if os.path.exists(os.path.join(out, d, "torch_cls.npy")))
    print(f"{'model':16s} {'engine':12s} {'images/s':>10s} {'ms/batch':>10s} {'rel err cls':>12s} {'rel err patch':>14s}")
    for m in models:
        d = os.path.join(out, m)
        ref = {k: np.load(os.path.join(d, f"torch_{k}.npy")) for k in ("cls", "patch")}
        rates = {}
        for e in ENGINES:
            r = next((r for r in reversed(results) if r.get("model") == m and r.get("impl") == e), None)
            errs = []
            for k in ("cls", "patch"):
                f = os.path.join(d, f"{e}_{k}.npy")
                errs.append(f"{rel(np.load(f), ref[k]):.1e}" if os.path.exists(f) else "-")
            ips = f"{r['imagesPerSec']:.3g}" if r else "not run"
            ms = f"{r['ms']:.0f}" if r else "-"
            if r:
                rates[e] = r["imagesPerSec"]
            print(f"{m:16s} {e:12s} {ips:>10s} {ms:>10s} {errs[0]:>12s} {errs[1]:>14s}")
        if "webdino" in rates and "ort-webgpu" in rates:
            print(f"{m:16s} webdino / ORT WebGPU EP: {rates['webdino'] / rates['ort-webgpu']:.2f}x")
        if "webdino" in rates and "ort-cpu" in rates:
            print(f"{m:16s} webdino / ORT CPU EP:    {rates['webdino'] / rates['ort-cpu']:.2f}x")


if __name__ == "__main__":
    main()
