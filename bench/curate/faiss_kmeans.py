"""faiss k-means on the bench/curate data, for comparison with webdino's.

    python3 faiss_kmeans.py --data data.npy --k 1000 --iters 10 --seed 1 --out faiss-random
    python3 faiss_kmeans.py ... --init-from wd-random-init.npy --out faiss-same-init

faiss.Kmeans with its defaults except: no training subsample (max_points_per_centroid large,
so every point is used, as webdino does) and the given seed. Without --init-from, faiss draws
its own initial centroids (k random points); with it, faiss starts from webdino's initial
centroids, so both run the same Lloyd iterations from the same start. Writes OUT-centroids.npy
and OUT.json (seconds, faiss's per-iteration objectives: iteration i's is the assignment to the
centroids before its update).
"""
import argparse
import json
import time

import faiss
import numpy as np


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--k", type=int, required=True)
    ap.add_argument("--iters", type=int, required=True)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--init-from")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    x = np.ascontiguousarray(np.load(a.data, mmap_mode="r"), dtype=np.float32)
    km = faiss.Kmeans(x.shape[1], a.k, niter=a.iters, seed=a.seed, max_points_per_centroid=1 << 30, verbose=True)
    init = np.load(a.init_from).astype(np.float32) if a.init_from else None
    t0 = time.time()
    km.train(x, init_centroids=init)
    secs = time.time() - t0
    np.save(a.out + "-centroids.npy", km.centroids)
    obj = [float(v) for v in km.obj]
    json.dump({"tool": "faiss " + faiss.__version__, "threads": faiss.omp_get_max_threads(), "seconds": secs, "objectives": obj, "init": "webdino's" if a.init_from else "faiss random"}, open(a.out + ".json", "w"))
    print(f"faiss: {secs:.1f} s, last iteration objective {obj[-1]:.6g}")


if __name__ == "__main__":
    main()
