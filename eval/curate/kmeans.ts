/**
 * Hierarchical k-means with resampling, as ssl-data-curation (Vo et al. 2024; reference
 * dinov2-dinov3.md §2.2), on the GPU kernels of kernels/kmeans.ts, streaming the points chunk by
 * chunk (chunks.ts) so the pool never has to fit on the GPU.
 *
 * One k-means (`kmeans`)
 *   init: k-means++ (greedy: L = 2 + ⌊ln k⌋ D²-sampled candidates per new centre, keep the one
 *         with the lowest potential; first centre uniform), or k distinct uniform rows ('random',
 *         faiss's default, for benchmarks);
 *   then `iters` Lloyd iterations. Pass p assigns every point to C_p (fused distance + argmin)
 *   and, for p < iters, accumulates the per-cluster sums in the same pass; C_{p+1} = sums/counts
 *   in float64 (rounded to f32), and an EMPTY CLUSTER KEEPS ITS CENTROID. So iters + 1 passes, the
 *   last one only assigns: the result is C_iters with the assignment to it, as the official loop
 *   (assign after init, then iters × (update, assign)).
 * A level (`clusterLevel`), T = spec.steps resampling steps, r = spec.sample:
 *   step 0: k-means on all points; step s ≥ 1: take the r points closest to each centroid of
 *   step s − 1 (ties: lower row), run k-means (init + Lloyd) on their union only, and reassign
 *   ALL points to the new centroids. The level's centroids are those of the last step (not
 *   recomputed from the final assignment: the official scripts do the same).
 * The hierarchy (`hierarchicalKmeans`): level 1 clusters the points, level ℓ > 1 clusters the
 *   k_{ℓ−1} centroids of level ℓ − 1 (empty clusters included, as the official code).
 *
 * Determinism: the same inputs, options and seed give bit-identical centroids and assignments
 * whatever the chunk size: per (point, centroid) the distance arithmetic does not depend on the
 * chunk, the TwoSum centroid sums add each cluster's members in global row order, and the
 * k-means++ block sums cover fixed global rows (chunk sizes are multiples of 256). Each
 * (level, step) draws from its own generator seeded from (seed, level, step), so a run resumed
 * from a checkpoint repeats exactly what an uninterrupted run does.
 *
 * k-means++ needs every point on the GPU for each of its k steps; when the points exceed the
 * resident budget it seeds on a uniform subsample that fits (logged), then Lloyd runs on all.
 */
import type { Engine } from '../../engine/engine.js';
import { Rng } from '../../engine/random.js';
import type { Tensor } from '../../engine/tensor.js';
import {
  accumulateCentroids,
  assignNearest,
  blockSums,
  candidateDistances,
  D2_BLOCK,
  d2Blocks,
  gatherRows,
  type GpuRows,
  type KmeansTuning,
  MAX_CANDIDATES,
  packDraws,
  pickD2,
} from '../../kernels/kmeans.js';
import { type Chunk, ChunkedRows, DEFAULT_RESIDENT_BYTES, defaultChunkRows, padRows, readU32, u32Tensor } from './chunks.js';
import { CurateInputError, type RowSource, SubsetSource } from './source.js';

export type KmeansInit = 'kmeans++' | 'random';

/** Where k-means keeps its centroids between runs (checkpoints); see run-node.ts for files. */
export interface CentroidStore {
  /** The centroids saved under `key` and the Lloyd iteration they belong to, or null. */
  load(key: string): { centroids: Float32Array; iter: number } | null;
  save(key: string, centroids: Float32Array, dim: number, iter: number): Promise<void> | void;
}

export interface KmeansOptions {
  k: number;
  /** Lloyd iterations after the initialisation. */
  iters: number;
  init?: KmeansInit;
  seed?: number;
  chunkRows?: number;
  /** GPU bytes a point set may keep resident for Lloyd (default 1 GiB); beyond, chunks stream. */
  residentBytes?: number;
  /** GPU bytes k-means++ may hold (default 1 GiB): it seeds on a uniform subsample beyond. */
  seedBytes?: number;
  tuning?: KmeansTuning;
  log?: (line: string) => void;
  /** Checkpoints: the running centroids are saved under `key` (at most every checkpointSeconds). */
  store?: CentroidStore;
  key?: string;
  /** Least seconds between two Lloyd checkpoints (default 60; 0: every iteration). */
  checkpointSeconds?: number;
}

export interface KmeansResult {
  k: number;
  dim: number;
  /** [k, dim] row-major. */
  centroids: Float32Array;
  /** Cluster of every point. */
  assign: Int32Array;
  /** Squared distance of every point to its centroid (f32 kernel value). */
  dist: Float32Array;
  /** Σ dist (float64): the k-means objective of the final assignment. */
  objective: number;
  /** Objective of each assignment pass run in this call (pass p: assignment to C_p). */
  objectives: number[];
}

/** A generator for one (seed, level, step, purpose): independent streams, stable across resumes. */
export function streamRng(seed: number, ...parts: number[]): Rng {
  let h = seed >>> 0;
  for (const p of parts) h = (Math.imul(h ^ (p >>> 0), 0x9e3779b1) + 0x7f4a7c15) >>> 0;
  return new Rng(h);
}

/** Uploads rows (centroids) as kept GpuRows; the caller disposes. */
function uploadRows(engine: Engine, data: Float32Array, dim: number): GpuRows {
  const n = data.length / dim;
  const { x, xn } = padRows(data, dim, false);
  return { x: engine.keep(engine.tensor(x, [n, x.length / Math.max(n, 1)])), xn: engine.keep(engine.tensor(xn, [n])) };
}

function disposeRows(r: GpuRows | null): void {
  r?.x.dispose();
  r?.xn.dispose();
}

// -------------------------------------------------------------------------------------------------
// Assignment passes and the centroid update

export interface PassResult {
  assign: Int32Array;
  dist: Float32Array;
  objective: number;
  /** With `accumulate`: per-cluster sums [k, dim] (float64 from the TwoSum pairs) and counts. */
  sums: Float64Array | null;
  counts: Float64Array | null;
}

/** CSR of a chunk's rows by cluster: offsets [k + 1] and the local rows, each cluster's in order. */
export function clusterCsr(assign: ArrayLike<number>, k: number): { offsets: Uint32Array; members: Uint32Array } {
  const offsets = new Uint32Array(k + 1);
  for (let i = 0; i < assign.length; i++) offsets[assign[i] + 1]++;
  for (let c = 0; c < k; c++) offsets[c + 1] += offsets[c];
  const fill = offsets.slice(0, k);
  const members = new Uint32Array(assign.length);
  for (let i = 0; i < assign.length; i++) members[fill[assign[i]]++] = i;
  return { offsets, members };
}

/** Rows of [*, D4] f32 that fit half the adapter's storage binding (and buffer) limit. */
export function maxBoundRows(engine: Engine, D4: number): number {
  const lim = engine.device.limits;
  return Math.max(1, Math.floor(Math.min(lim.maxStorageBufferBindingSize, lim.maxBufferSize) / 2 / (4 * D4)));
}

/**
 * One pass over the points: the nearest of the k `centroids` for every point and, with
 * `accumulate`, the per-cluster sums for the next Lloyd update.
 *
 * Centroids that exceed the binding limit (k·D large) go in blocks of `blockRows` rows: each block
 * is one assign launch, and the per-point minima merge on the host in block order with a strict
 * `<`, which is exactly the argmin of one launch (the kernel returns the partial distance
 * ‖c‖² − 2x·c, compared the same way). The TwoSum sums run per block with the CSR restricted to
 * its clusters, each cluster's members still in row order: the same sums as one block.
 */
export async function assignPass(
  chunks: ChunkedRows,
  centroids: Float32Array,
  k: number,
  opts: { accumulate?: boolean; tuning?: KmeansTuning; blockRows?: number } = {},
): Promise<PassResult> {
  const e = chunks.engine;
  const dim = chunks.source.dim;
  const N = chunks.source.rows;
  const D4 = chunks.D4;
  const assign = new Int32Array(N);
  const dist = new Float32Array(N);
  const counts = opts.accumulate ? new Float64Array(k) : null;
  const blockRows = Math.min(k, opts.blockRows ?? maxBoundRows(e, D4));
  const blocks: { c0: number; c1: number; C: GpuRows; hi: Tensor | null; lo: Tensor | null }[] = [];
  try {
    for (let c0 = 0; c0 < k; c0 += blockRows) {
      const c1 = Math.min(k, c0 + blockRows);
      const b = { c0, c1, C: uploadRows(e, centroids.subarray(c0 * dim, c1 * dim), dim), hi: null as Tensor | null, lo: null as Tensor | null };
      blocks.push(b);
      if (counts) {
        b.hi = e.keep(e.zeros([c1 - c0, D4]));
        b.lo = e.keep(e.zeros([c1 - c0, D4]));
      }
    }
    await chunks.forEach(async (c: Chunk) => {
      const launches = blocks.map((b) => assignNearest(c, b.C, opts.tuning));
      let reads: [Uint32Array, Float32Array][];
      try {
        reads = await Promise.all(launches.map((r) => Promise.all([readU32(r.idx), r.part.toArray()])));
      } finally {
        for (const r of launches) {
          r.idx.dispose();
          r.part.dispose();
        }
      }
      // Merge the blocks: the first strict minimum of the partial distance, as one launch would.
      const [idx, part] = reads[0];
      for (let b = 1; b < blocks.length; b++) {
        const [ib, pb] = reads[b];
        for (let i = 0; i < c.rows; i++) {
          if (pb[i] < part[i]) {
            part[i] = pb[i];
            idx[i] = ib[i] + blocks[b].c0;
          }
        }
      }
      for (let i = 0; i < c.rows; i++) {
        assign[c.start + i] = idx[i];
        dist[c.start + i] = Math.max(c.xnHost[i] + part[i], 0);
      }
      if (counts) {
        for (let i = 0; i < idx.length; i++) counts[idx[i]]++;
        const { offsets, members } = clusterCsr(idx, k);
        for (const b of blocks) {
          const off = u32Tensor(e, offsets.slice(b.c0, b.c1 + 1).map((o) => o - offsets[b.c0]));
          const mem = u32Tensor(e, members.subarray(offsets[b.c0], offsets[b.c1]));
          accumulateCentroids(c.x, off, mem, b.hi!, b.lo!);
          off.dispose(); // recorded dispatches run before any later reuse of these buffers
          mem.dispose();
        }
      }
    });
    let objective = 0;
    for (let i = 0; i < N; i++) objective += dist[i];
    let sums: Float64Array | null = null;
    if (counts) {
      sums = new Float64Array(k * dim);
      for (const b of blocks) {
        const [h, l] = await Promise.all([b.hi!.toArray(), b.lo!.toArray()]);
        for (let c = b.c0; c < b.c1; c++) {
          for (let q = 0; q < dim; q++) sums[c * dim + q] = h[(c - b.c0) * D4 + q] + l[(c - b.c0) * D4 + q];
        }
      }
    }
    return { assign, dist, objective, sums, counts };
  } finally {
    for (const b of blocks) {
      disposeRows(b.C);
      b.hi?.dispose();
      b.lo?.dispose();
    }
  }
}

/** C' = sums / counts (float64, rounded to f32); an empty cluster keeps its previous centroid. */
export function updateCentroids(prev: Float32Array, sums: Float64Array, counts: Float64Array, dim: number): Float32Array {
  const out = new Float32Array(prev.length);
  for (let c = 0; c < counts.length; c++) {
    for (let q = 0; q < dim; q++) out[c * dim + q] = counts[c] > 0 ? sums[c * dim + q] / counts[c] : prev[c * dim + q];
  }
  return out;
}

// -------------------------------------------------------------------------------------------------
// Initialisation

/** Number of k-means++ candidates per new centre: 2 + ⌊ln k⌋ (sklearn's, ssl-data-curation's). */
export function kmeansppCandidates(k: number): number {
  return Math.min(MAX_CANDIDATES, 2 + Math.floor(Math.log(k)));
}

/** k distinct rows of [0, n), uniformly (Floyd's algorithm), in draw order. */
export function sampleDistinct(n: number, k: number, rng: Rng): Int32Array {
  if (k > n) throw new RangeError(`cannot draw ${k} distinct rows from ${n}`);
  const chosen = new Set<number>();
  const out = new Int32Array(k);
  let q = 0;
  for (let j = n - k; j < n; j++) {
    const t = rng.int(j + 1);
    const pick = chosen.has(t) ? j : t;
    chosen.add(pick);
    out[q++] = pick;
  }
  return out;
}

/** Rows `ids` of `source`, as [ids.length, dim]. */
function readRows(source: RowSource, ids: ArrayLike<number>): Float32Array {
  const out = new Float32Array(ids.length * source.dim);
  for (let t = 0; t < ids.length; t++) out.set(source.read(ids[t], ids[t] + 1), t * source.dim);
  return out;
}

export interface SeedResult {
  centroids: Float32Array;
  /** The source rows chosen as centres. */
  rows: Int32Array;
}

/** k distinct uniform rows as the initial centroids (faiss's default initialisation). */
export function randomInit(source: RowSource, k: number, rng: Rng): SeedResult {
  const rows = sampleDistinct(source.rows, k, rng);
  return { centroids: readRows(source, rows), rows };
}

/**
 * k-means++ seeding on the GPU (see the file header and kernels/kmeans.ts for the D² kernels).
 * The host keeps each resident chunk's per-block D² sums in float64 to place the draws; one
 * readback per new centre.
 */
export async function kmeansPlusPlus(
  engine: Engine,
  source: RowSource,
  k: number,
  rng: Rng,
  opts: { chunkRows?: number; seedBytes?: number; tuning?: KmeansTuning; log?: (line: string) => void } = {},
): Promise<SeedResult> {
  const N = source.rows;
  if (!Number.isInteger(k) || k < 1 || k > N) throw new RangeError(`k-means++: k = ${k} must be in [1, ${N}]`);
  const dim = source.dim;
  const D4 = Math.ceil(dim / 4) * 4;
  const L = kmeansppCandidates(k);
  // Rows, norms, the current D² and the L candidate D² rows, per point.
  const bytesPerRow = (D4 + 2 + L) * 4;
  const maxRows = Math.max(k, Math.floor((opts.seedBytes ?? DEFAULT_RESIDENT_BYTES) / bytesPerRow));
  let src = source;
  let subset: Int32Array | null = null;
  if (N > maxRows) {
    subset = Int32Array.from(sampleDistinct(N, maxRows, rng)).sort();
    src = new SubsetSource(source, subset);
    opts.log?.(`k-means++: ${N} points exceed the resident budget; seeding on a uniform subsample of ${maxRows}`);
  }
  const n = src.rows;
  const e = engine;
  // The candidate D² block [L, rows] of a chunk must fit the binding limit as well as its rows.
  const dmRows = Math.max(D2_BLOCK, Math.floor(maxBoundRows(e, MAX_CANDIDATES) / D2_BLOCK) * D2_BLOCK);
  const chunks = new ChunkedRows(e, src, { chunkRows: Math.min(opts.chunkRows ?? defaultChunkRows(e, dim), dmRows), residentBytes: Infinity });
  const list: Chunk[] = [];
  const closest: Tensor[] = [];
  const held: Tensor[] = [];
  const keep = <T extends Tensor>(t: T): T => {
    held.push(e.keep(t));
    return t;
  };
  try {
    for (let c = 0; c < chunks.count; c++) {
      list.push(chunks.load(c));
      closest.push(keep(e.tensor(new Float32Array(chunks.rowsOf(c)).fill(Infinity), [chunks.rowsOf(c)])));
    }
    const cand: GpuRows = { x: keep(e.zeros([MAX_CANDIDATES, D4])), xn: keep(e.zeros([MAX_CANDIDATES])) };
    const ids = keep(e.empty([MAX_CANDIDATES]));
    const drawsT = keep(e.empty([4 * MAX_CANDIDATES]));
    /** Float64 block sums of the current D², per chunk, and the running potential. */
    let blocks: Float64Array[] = [];
    let pot = 0;
    const rows = new Int32Array(k);

    /**
     * Scores the `m` candidates whose ids are in `ids`: gathers them, computes each one's D²
     * vector and block sums, keeps the best (lowest potential; ties: first), and returns its id.
     */
    const score = async (m: number): Promise<number> => {
      for (let c = 0; c < list.length; c++) gatherRows(list[c], ids, m, list[c].start, cand);
      const dms = list.map((ch, c) => candidateDistances(ch, closest[c], cand, m, opts.tuning));
      const ps = dms.map((dm) => blockSums(dm));
      try {
        const [idv, ...pv] = await Promise.all([readU32(ids, m), ...ps.map((p) => p.toArray())]);
        const pots = new Float64Array(m);
        for (let c = 0; c < list.length; c++) {
          const nb = d2Blocks(list[c].rows);
          for (let t = 0; t < m; t++) for (let b = 0; b < nb; b++) pots[t] += pv[c][t * nb + b];
        }
        let best = 0;
        for (let t = 1; t < m; t++) if (pots[t] < pots[best]) best = t;
        blocks = list.map((ch, c) => {
          const nb = d2Blocks(ch.rows);
          return Float64Array.from(pv[c].subarray(best * nb, (best + 1) * nb));
        });
        pot = pots[best];
        for (let c = 0; c < list.length; c++) e.device.copy(dms[c].buffer, best * list[c].rows * 4, closest[c].buffer, 0, list[c].rows * 4);
        return idv[best];
      } finally {
        for (const t of [...dms, ...ps]) t.dispose();
      }
    };

    e.device.write(ids.buffer, 0, Uint32Array.of(rng.int(n)));
    rows[0] = await score(1);
    let last = performance.now();
    for (let j = 1; j < k; j++) {
      if (!(pot > 0)) {
        // Every point coincides with a centre (fewer distinct points than k): the remaining
        // centres are uniform rows; their clusters stay empty and keep these centroids.
        for (; j < k; j++) rows[j] = rng.int(n);
        break;
      }
      // L draws u·pot, placed on the float64 prefix of the block sums: (chunk, block, residual).
      const prefix: { c: number; b: number; at: number }[] = [];
      let acc = 0;
      blocks.forEach((bs, c) => bs.forEach((s, b) => {
        if (s > 0) {
          prefix.push({ c, b, at: acc });
          acc += s;
        }
      }));
      const draws = Array.from({ length: L }, () => {
        const v = rng.uniform() * pot;
        let lo = 0;
        let hi = prefix.length - 1;
        while (lo < hi) {
          const mid = (lo + hi + 1) >> 1;
          if (prefix[mid].at <= v) lo = mid;
          else hi = mid - 1;
        }
        const p = prefix[lo];
        return { chunk: p.c, block: p.b, residual: v - p.at };
      });
      e.device.write(drawsT.buffer, 0, packDraws(draws));
      for (let c = 0; c < list.length; c++) pickD2(closest[c], drawsT, L, c, list[c].start, ids);
      rows[j] = await score(L);
      if (opts.log && performance.now() - last > 10_000) {
        last = performance.now();
        opts.log(`k-means++: ${j + 1}/${k} centres, potential ${pot.toPrecision(6)}`);
      }
    }
    const srcRows = subset ? Int32Array.from(rows, (r) => subset![r]) : rows;
    return { centroids: readRows(source, srcRows), rows: srcRows };
  } finally {
    for (const t of held) t.dispose();
    chunks.dispose(); // resident (residentBytes: Infinity): frees every chunk
  }
}

// -------------------------------------------------------------------------------------------------
// One k-means, one level, the hierarchy

/** Lloyd iterations from `init` (iteration `startIter`) to `iters`; see the file header. */
export async function lloyd(
  chunks: ChunkedRows,
  init: Float32Array,
  k: number,
  iters: number,
  opts: {
    startIter?: number;
    tuning?: KmeansTuning;
    log?: (line: string) => void;
    label?: string;
    onIteration?: (iter: number, centroids: Float32Array) => Promise<void> | void;
  } = {},
): Promise<KmeansResult> {
  const dim = chunks.source.dim;
  let C = init;
  const objectives: number[] = [];
  for (let it = opts.startIter ?? 0; ; it++) {
    const last = it >= iters;
    const t0 = performance.now();
    const p = await assignPass(chunks, C, k, { accumulate: !last, tuning: opts.tuning });
    objectives.push(p.objective);
    opts.log?.(`${opts.label ?? 'k-means'}: pass ${it}/${iters} objective ${p.objective.toPrecision(8)} (${((performance.now() - t0) / 1000).toFixed(1)} s)`);
    if (last) return { k, dim, centroids: C, assign: p.assign, dist: p.dist, objective: p.objective, objectives };
    C = updateCentroids(C, p.sums!, p.counts!, dim);
    await opts.onIteration?.(it + 1, C);
  }
}

/** k-means (init + Lloyd) on `source`, resuming from `opts.store` when it holds this key. */
export async function kmeans(engine: Engine, source: RowSource, opts: KmeansOptions): Promise<KmeansResult> {
  const { k, iters } = opts;
  if (!Number.isInteger(k) || k < 1 || k > source.rows) throw new CurateInputError(`k-means: k = ${k} must be an integer in [1, ${source.rows}] (the number of points)`);
  if (!Number.isInteger(iters) || iters < 0) throw new RangeError(`k-means: iters = ${iters} must be a non-negative integer`);
  const dim = source.dim;
  const key = opts.key ?? 'kmeans';
  const saved = opts.store?.load(key) ?? null;
  let init: Float32Array;
  let startIter = 0;
  if (saved && saved.centroids.length === k * dim) {
    init = saved.centroids;
    startIter = Math.min(saved.iter, iters);
    opts.log?.(`${key}: resuming at iteration ${startIter}`);
  } else {
    const rng = new Rng(opts.seed ?? 0);
    const t0 = performance.now();
    init =
      (opts.init ?? 'kmeans++') === 'kmeans++'
        ? (await kmeansPlusPlus(engine, source, k, rng, opts)).centroids
        : randomInit(source, k, rng).centroids;
    opts.log?.(`${key}: ${opts.init ?? 'kmeans++'} init of ${k} centres on ${source.rows} points in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
    await opts.store?.save(key, init, dim, 0);
  }
  const chunks = new ChunkedRows(engine, source, { chunkRows: opts.chunkRows, residentBytes: opts.residentBytes });
  let lastSave = performance.now();
  try {
    return await lloyd(chunks, init, k, iters, {
      startIter,
      tuning: opts.tuning,
      log: opts.log,
      label: key,
      onIteration: async (it, C) => {
        if (!opts.store || (it < iters && performance.now() - lastSave < (opts.checkpointSeconds ?? 60) * 1000)) return;
        await opts.store.save(key, C, dim, it);
        lastSave = performance.now();
      },
    });
  } finally {
    chunks.dispose();
  }
}

/**
 * The r rows closest to their centroid in each cluster (ties: lower row), all clusters together,
 * in increasing row order.
 */
export function closestPerCluster(assign: Int32Array, dist: Float32Array, k: number, r: number): Int32Array {
  const { offsets, members } = clusterCsr(assign, k);
  const out: number[] = [];
  for (let c = 0; c < k; c++) {
    const m = Array.from(members.subarray(offsets[c], offsets[c + 1]));
    m.sort((a, b) => dist[a] - dist[b] || a - b);
    for (let q = 0; q < Math.min(r, m.length); q++) out.push(m[q]);
  }
  return Int32Array.from(out).sort();
}

/** One level of the hierarchy: k clusters, `steps` resampling steps of `sample` points per cluster. */
export interface LevelSpec {
  k: number;
  /** Resampling steps T (1: plain k-means). */
  steps: number;
  /** Points per cluster r taken in each resampling step. */
  sample: number;
}

export interface LevelOptions extends Omit<KmeansOptions, 'k' | 'key'> {
  /** Level number (1-based), for keys, seeds and messages. */
  level: number;
}

/** One level: k-means with T − 1 resampling steps (see the file header). */
export async function clusterLevel(engine: Engine, source: RowSource, spec: LevelSpec, opts: LevelOptions): Promise<KmeansResult> {
  const { k, steps, sample } = spec;
  if (!Number.isInteger(steps) || steps < 1) throw new CurateInputError(`level ${opts.level}: resampling steps must be ≥ 1 (got ${steps})`);
  if (steps > 1 && (!Number.isInteger(sample) || sample < 1)) throw new CurateInputError(`level ${opts.level}: the resampling sample size must be ≥ 1 (got ${sample})`);
  if (!Number.isInteger(k) || k < 1 || k > source.rows) {
    throw new CurateInputError(`level ${opts.level}: k = ${k} clusters for ${source.rows} points; k must be in [1, ${source.rows}]`);
  }
  const seed = opts.seed ?? 0;
  let res: KmeansResult | null = null;
  let centroids: Float32Array | null = null;
  const allChunks = () => new ChunkedRows(engine, source, { chunkRows: opts.chunkRows, residentBytes: opts.residentBytes });
  /** The assignment of all points to `C` (one pass), as a KmeansResult. */
  const assignAll = async (C: Float32Array): Promise<KmeansResult> => {
    const chunks = allChunks();
    try {
      const p = await assignPass(chunks, C, k, { tuning: opts.tuning });
      return { k, dim: source.dim, centroids: C, assign: p.assign, dist: p.dist, objective: p.objective, objectives: [p.objective] };
    } finally {
      chunks.dispose();
    }
  };
  for (let s = 0; s < steps; s++) {
    const key = `level-${opts.level}-step-${s}`;
    const done = opts.store?.load(key);
    if (done && done.centroids.length === k * source.dim) {
      centroids = done.centroids;
      res = null; // its assignment is recomputed when needed
      opts.log?.(`${key}: done (checkpoint)`);
      continue;
    }
    const kopts: KmeansOptions = { ...opts, k, key: `${key}-kmeans`, seed: streamRng(seed, opts.level, s).nextU32() };
    if (s === 0) {
      res = await kmeans(engine, source, kopts);
      centroids = res.centroids;
    } else {
      const prev = res ?? (await assignAll(centroids!));
      const rows = closestPerCluster(prev.assign, prev.dist, k, sample);
      if (rows.length < k) {
        throw new CurateInputError(
          `level ${opts.level}, resampling step ${s}: the ${sample} closest points of each cluster are only ${rows.length} points for k = ${k}; raise the sample size or lower k`,
        );
      }
      opts.log?.(`${key}: k-means on the ${rows.length} points closest to the centroids (${sample} per cluster)`);
      const sub = await kmeans(engine, new SubsetSource(source, rows), kopts);
      centroids = sub.centroids;
      res = null;
    }
    await opts.store?.save(key, centroids, source.dim, 0);
  }
  return res ?? (await assignAll(centroids!));
}

/** The result of one level: the k centroids and the cluster of each of its points. */
export type LevelResult = KmeansResult;

/**
 * Hierarchical k-means: level 1 on `source`, level ℓ on the centroids of level ℓ − 1.
 * `levelDone` is consulted first (a level saved by an earlier run) and `onLevel` told of each
 * level computed here.
 */
export async function hierarchicalKmeans(
  engine: Engine,
  source: RowSource,
  specs: readonly LevelSpec[],
  opts: Omit<LevelOptions, 'level'> & {
    levelDone?: (level: number) => LevelResult | null;
    onLevel?: (level: number, r: LevelResult) => Promise<void> | void;
    /** The source of level ℓ > 1 built from the centroids of level ℓ − 1. */
    centroidSource: (level: number, prev: LevelResult) => RowSource;
  },
): Promise<LevelResult[]> {
  const out: LevelResult[] = [];
  for (let l = 1; l <= specs.length; l++) {
    const src = l === 1 ? source : opts.centroidSource(l, out[l - 2]);
    const done = opts.levelDone?.(l);
    if (done) {
      opts.log?.(`level ${l}: done (checkpoint)`);
      out.push(done);
      continue;
    }
    const t0 = performance.now();
    const r = await clusterLevel(engine, src, specs[l - 1], { ...opts, level: l });
    opts.log?.(`level ${l}: ${specs[l - 1].k} clusters of ${src.rows} points, objective ${r.objective.toPrecision(8)} (${((performance.now() - t0) / 1000).toFixed(1)} s)`);
    await opts.onLevel?.(l, r);
    out.push(r);
  }
  return out;
}

// -------------------------------------------------------------------------------------------------
// Float64 references

/** Float64 Lloyd from `init` (official semantics: iters × (update, assign); empty clusters keep). */
export function lloydRef(x: ArrayLike<number>, init: ArrayLike<number>, dim: number, iters: number): { centroids: Float64Array; assign: Int32Array; objective: number } {
  const n = x.length / dim;
  const k = init.length / dim;
  const C = Float64Array.from(init);
  const assign = new Int32Array(n);
  let objective = 0;
  const assignAll = () => {
    objective = 0;
    for (let i = 0; i < n; i++) {
      let best = Infinity;
      for (let c = 0; c < k; c++) {
        let s = 0;
        for (let q = 0; q < dim; q++) s += (x[i * dim + q] - C[c * dim + q]) ** 2;
        if (s < best) {
          best = s;
          assign[i] = c;
        }
      }
      objective += best;
    }
  };
  assignAll();
  for (let it = 0; it < iters; it++) {
    const sums = new Float64Array(k * dim);
    const counts = new Float64Array(k);
    for (let i = 0; i < n; i++) {
      counts[assign[i]]++;
      for (let q = 0; q < dim; q++) sums[assign[i] * dim + q] += x[i * dim + q];
    }
    for (let c = 0; c < k; c++) if (counts[c] > 0) for (let q = 0; q < dim; q++) C[c * dim + q] = sums[c * dim + q] / counts[c];
    assignAll();
  }
  return { centroids: C, assign, objective };
}

/**
 * Float64 k-means++ with the same random stream and sampling rule as `kmeansPlusPlus` (first
 * centre rng.int(n); per step L draws u·pot, the first row whose cumulative D² exceeds the draw;
 * the candidate with the lowest potential). Returns the chosen rows.
 */
export function kmeansPlusPlusRef(x: ArrayLike<number>, dim: number, k: number, rng: Rng): Int32Array {
  const n = x.length / dim;
  const L = kmeansppCandidates(k);
  const d2 = (i: number, j: number) => {
    let s = 0;
    for (let q = 0; q < dim; q++) s += (x[i * dim + q] - x[j * dim + q]) ** 2;
    return s;
  };
  const rows = new Int32Array(k);
  rows[0] = rng.int(n);
  let closest: Float64Array = Float64Array.from({ length: n }, (_, i) => d2(i, rows[0]));
  let pot = closest.reduce((a, b) => a + b, 0);
  for (let j = 1; j < k; j++) {
    if (!(pot > 0)) {
      for (; j < k; j++) rows[j] = rng.int(n);
      break;
    }
    const cands: number[] = [];
    for (let t = 0; t < L; t++) {
      const v = rng.uniform() * pot;
      let s = 0;
      let pick = -1;
      let last = 0;
      for (let i = 0; i < n; i++) {
        if (closest[i] > 0) {
          s += closest[i];
          last = i;
          if (s > v) {
            pick = i;
            break;
          }
        }
      }
      cands.push(pick < 0 ? last : pick);
    }
    let best = 0;
    let bestPot = Infinity;
    let bestD: Float64Array = closest;
    cands.forEach((cand, t) => {
      const d = Float64Array.from(closest, (c, i) => Math.min(c, d2(i, cand)));
      const p = d.reduce((a, b) => a + b, 0);
      if (p < bestPot) {
        bestPot = p;
        best = t;
        bestD = d;
      }
    });
    rows[j] = cands[best];
    closest = bestD;
    pot = bestPot;
  }
  return rows;
}
