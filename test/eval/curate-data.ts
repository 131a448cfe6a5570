/**
 * Synthetic embeddings with planted structure for the curation tests: Gaussian blobs around
 * well-separated centres (so the true clustering is known), exact and near-duplicate copies,
 * and .npy shards written to a temporary folder.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Rng } from '../../index.js';
import { writeNpy } from '../../models/io/npy.js';

/** Points of `sizes.length` blobs (blob b has sizes[b] points), centres ~N(0, spread²), noise σ. */
export function blobs(sizes: readonly number[], dim: number, seed: number, spread = 10, sigma = 0.5): { x: Float32Array; label: Int32Array; centres: Float32Array } {
  const rng = new Rng(seed);
  const centres = new Float32Array(sizes.length * dim);
  for (let q = 0; q < centres.length; q++) centres[q] = rng.normal() * spread;
  const n = sizes.reduce((a, b) => a + b, 0);
  const x = new Float32Array(n * dim);
  const label = new Int32Array(n);
  // Interleave the blobs so clusters are not contiguous row ranges.
  const order: number[] = [];
  sizes.forEach((s, b) => {
    for (let i = 0; i < s; i++) order.push(b);
  });
  for (let i = order.length - 1; i > 0; i--) {
    const j = rng.int(i + 1);
    [order[i], order[j]] = [order[j], order[i]];
  }
  order.forEach((b, i) => {
    label[i] = b;
    for (let q = 0; q < dim; q++) x[i * dim + q] = centres[b * dim + q] + rng.normal() * sigma;
  });
  return { x, label, centres };
}

/** Unit vectors uniformly on the sphere S^{dim−1}. */
export function sphere(n: number, dim: number, seed: number): Float32Array {
  const rng = new Rng(seed);
  const x = new Float32Array(n * dim);
  for (let i = 0; i < n; i++) {
    let s = 0;
    for (let q = 0; q < dim; q++) s += (x[i * dim + q] = rng.normal()) ** 2;
    for (let q = 0; q < dim; q++) x[i * dim + q] /= Math.sqrt(s);
  }
  return x;
}

/** A copy of row `i` of x moved by noise of relative size `eps` (cosine to the original ≈ 1 − eps²/2). */
export function nearCopy(x: Float32Array, dim: number, i: number, eps: number, rng: Rng): Float32Array {
  const out = new Float32Array(dim);
  for (let q = 0; q < dim; q++) out[q] = x[i * dim + q] + (eps / Math.sqrt(dim)) * rng.normal();
  return out;
}

/** Writes [rows, dim] float32 to `dir/name` as .npy; returns the path. */
export function saveNpy(dir: string, name: string, data: Float32Array, dim: number): string {
  const path = join(dir, name);
  writeFileSync(path, writeNpy({ shape: [data.length / dim, dim], data }));
  return path;
}

/** Cosine similarity of rows i of a and j of b. */
export function cosine(a: Float32Array, i: number, b: Float32Array, j: number, dim: number): number {
  let d = 0;
  let na = 0;
  let nb = 0;
  for (let q = 0; q < dim; q++) {
    d += a[i * dim + q] * b[j * dim + q];
    na += a[i * dim + q] ** 2;
    nb += b[j * dim + q] ** 2;
  }
  return d / Math.sqrt(na * nb);
}
