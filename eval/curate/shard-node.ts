/**
 * Node only: the assignment pass of k-means fanned out as independent jobs. Job i of n takes the
 * contiguous pool rows [round(N·i/n), round(N·(i+1)/n)) (ssl-data-curation's split of rows over
 * ranks), assigns them to given centroids and accumulates its per-cluster sums, and writes
 *   DIR/shards/part-i-of-n.npy        int32 cluster of each of its rows
 *   DIR/shards/part-i-of-n-sums.npy   float64 [k, D] sums of its rows per cluster (TwoSum on the GPU)
 *   DIR/shards/part-i-of-n.json       {start, end, k, dim, objective, counts}
 * atomically, so jobs can run on different machines and be retried. `mergeShards` then joins the
 * parts into the assignment of the whole pool and the Lloyd update's sums and counts.
 *
 * The merged assignment equals one process's exactly (per point the kernel arithmetic does not
 * depend on the rows around it); the merged sums add the parts' float64 sums in part order, so
 * they agree with one process's to ~1e-16 relative and are reproducible for a given n.
 */
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Engine } from '../../engine/engine.js';
import { writeFileAtomic } from '../../models/io/node-files.js';
import { parseNpy, readNpyHeader, writeNpy } from '../../models/io/npy.js';
import { ChunkedRows } from './chunks.js';
import { assignPass } from './kmeans.js';
import { expandEmbeddings, NpyShards } from './shards-node.js';
import { CurateInputError, RangeSource } from './source.js';

/** Rows [start, end) of job i of n over `rows` rows. */
export function shardRange(rows: number, i: number, n: number): [number, number] {
  return [Math.round((rows * i) / n), Math.round((rows * (i + 1)) / n)];
}

const partName = (i: number, n: number) => `part-${i}-of-${n}`;

export interface AssignShardOptions {
  /** .npy shards or embed manifests, as CurateOptions.embeddings. */
  embeddings: string[];
  /** A .npy of centroids [k, D] (e.g. levels/level-1-centroids.npy, or a Lloyd checkpoint). */
  centroids: string;
  shard: { i: number; n: number };
  out: string;
  chunkRows?: number;
  gpuBytes?: number;
}

/** Runs job `shard.i` of `shard.n` (see the file header); returns its rows and objective. */
export async function assignShard(engine: Engine, o: AssignShardOptions): Promise<{ start: number; end: number; objective: number }> {
  const pool = new NpyShards(expandEmbeddings(o.embeddings).npy, '--embeddings');
  try {
    const c = parseNpy(new Uint8Array(readFileSync(o.centroids)));
    if (c.shape.length !== 2 || c.shape[1] !== pool.dim) {
      throw new CurateInputError(`${o.centroids} holds [${c.shape.join(', ')}]; centroids must be [k, ${pool.dim}] like the pool`);
    }
    const k = c.shape[0];
    const [start, end] = shardRange(pool.rows, o.shard.i, o.shard.n);
    const chunks = new ChunkedRows(engine, new RangeSource(pool, start, end), { chunkRows: o.chunkRows, residentBytes: o.gpuBytes });
    let r;
    try {
      r = await assignPass(chunks, c.data, k, { accumulate: true });
    } finally {
      chunks.dispose();
    }
    const dir = join(o.out, 'shards');
    mkdirSync(dir, { recursive: true });
    const name = partName(o.shard.i, o.shard.n);
    await writeFileAtomic(join(dir, `${name}.npy`), writeNpy({ shape: [end - start], data: r.assign }));
    await writeFileAtomic(join(dir, `${name}-sums.npy`), writeNpy({ shape: [k, pool.dim], data: r.sums! }));
    await writeFileAtomic(join(dir, `${name}.json`), JSON.stringify({ start, end, k, dim: pool.dim, objective: r.objective, counts: Array.from(r.counts!) }));
    return { start, end, objective: r.objective };
  } finally {
    pool.close();
  }
}

/** The float64 values of a '<f8' .npy of `count` elements, without the float32 conversion of parseNpy. */
function readFloat64(path: string, count: number): Float64Array {
  const bytes = new Uint8Array(readFileSync(path));
  const h = readNpyHeader(bytes);
  if (h.descr !== '<f8' || h.shape.reduce((a, b) => a * b, 1) !== count) throw new CurateInputError(`${path}: expected ${count} '<f8' values, found ${h.descr} [${h.shape.join(', ')}]`);
  return new Float64Array(bytes.slice(h.dataOffset, h.dataOffset + 8 * count).buffer);
}

/** Joins the n parts in DIR/shards: the pool's assignment, per-cluster sums and counts, objective. */
export function mergeShards(out: string, n: number): { assign: Int32Array; sums: Float64Array; counts: Float64Array; objective: number; k: number; dim: number } {
  const dir = join(out, 'shards');
  const metas = Array.from({ length: n }, (_, i) => {
    const path = join(dir, `${partName(i, n)}.json`);
    if (!existsSync(path)) throw new CurateInputError(`shard ${i}/${n} has not finished: ${path} is missing`);
    return JSON.parse(readFileSync(path, 'utf8')) as { start: number; end: number; k: number; dim: number; objective: number; counts: number[] };
  });
  const { k, dim } = metas[0];
  const rows = metas[n - 1].end;
  const assign = new Int32Array(rows);
  const sums = new Float64Array(k * dim);
  const counts = new Float64Array(k);
  let objective = 0;
  metas.forEach((m, i) => {
    if (m.k !== k || m.dim !== dim || m.start !== (i === 0 ? 0 : metas[i - 1].end)) throw new CurateInputError(`shard ${i}/${n} does not continue the parts before it (another run's file?)`);
    const a = parseNpy(new Uint8Array(readFileSync(join(dir, `${partName(i, n)}.npy`))));
    assign.set(Int32Array.from(a.data), m.start);
    const f64 = readFloat64(join(dir, `${partName(i, n)}-sums.npy`), k * dim);
    for (let q = 0; q < k * dim; q++) sums[q] += f64[q];
    m.counts.forEach((c, j) => {
      counts[j] += c;
    });
    objective += m.objective;
  });
  return { assign, sums, counts, objective, k, dim };
}
