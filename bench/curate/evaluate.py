"""The k-means objective of centroid sets on the bench/curate data, all computed the same way.

    python3 evaluate.py --data data.npy RUN [RUN ...]

For each RUN (a prefix with RUN-centroids.npy and RUN.json), Σ_i min_j ‖x_i − c_j‖² over all
points: distances ‖x‖² + ‖c‖² − 2x·c from float32 BLAS in blocks of rows, minima summed in
float64. Prints one line per run with its time, objective and ratio to the first run.
"""
import argparse
import json

import numpy as np


def objective(x, c):
    cn = (c.astype(np.float64) ** 2).sum(1).astype(np.float32)
    total = 0.0
    for s in range(0, x.shape[0], 16384):
        xb = np.ascontiguousarray(x[s : s + 16384], dtype=np.float32)
        d = (xb.astype(np.float64) ** 2).sum(1)[:, None].astype(np.float32) + cn[None, :] - 2.0 * (xb @ c.T)
        total += float(np.maximum(d.min(1), 0).astype(np.float64).sum())
    return total


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("runs", nargs="+")
    a = ap.parse_args()
    x = np.load(a.data, mmap_mode="r")
    rows = []
    for r in a.runs:
        meta = json.load(open(r + ".json"))
        c = np.load(r + "-centroids.npy").astype(np.float32)
        rows.append((r.split("/")[-1], meta, objective(x, c)))
    base = rows[0][2]
    print(f"{'run':<22} {'tool':<16} {'init':<16} {'seconds':>9} {'objective':>14} {'ratio':>8}")
    for name, meta, obj in rows:
        print(f"{name:<22} {meta['tool']:<16} {meta['init']:<16} {meta['seconds']:>9.1f} {obj:>14.6f} {obj / base:>8.5f}")


if __name__ == "__main__":
    main()
