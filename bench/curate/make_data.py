"""Synthetic embeddings for bench/curate: a skewed Gaussian mixture on the unit sphere.

    python3 make_data.py --rows 200000 --dim 384 --seed 0 --out data.npy

rows/100 mixture centres drawn uniformly on the sphere, component weights ∝ 1/(i+1)^0.8 (web
pools are long-tailed), points = centre + N(0, 0.04²·I) noise, then l2-normalised like model
embeddings. Written in float32, block by block so memory stays ~ one block.
"""
import argparse

import numpy as np


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, required=True)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    rng = np.random.default_rng(a.seed)
    m = max(1, a.rows // 100)
    centres = rng.standard_normal((m, a.dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    w = 1.0 / np.arange(1, m + 1) ** 0.8
    w /= w.sum()
    out = np.lib.format.open_memmap(a.out, mode="w+", dtype=np.float32, shape=(a.rows, a.dim))
    block = 65536
    for s in range(0, a.rows, block):
        n = min(block, a.rows - s)
        comp = rng.choice(m, size=n, p=w)
        x = centres[comp] + 0.04 * rng.standard_normal((n, a.dim)).astype(np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        out[s : s + n] = x
    out.flush()
    print(f"wrote {a.out}: {a.rows} x {a.dim}, {m} mixture components")


if __name__ == "__main__":
    main()
