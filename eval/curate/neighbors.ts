/**
 * Cosine k-nearest-neighbour search for deduplication and retrieval: for every query row, the k
 * database rows of highest cosine similarity, ordered by (similarity descending, row ascending),
 * streamed query chunk by query chunk so the caller never holds more than one chunk's lists.
 *
 * Per (query chunk, database chunk): rows are l2-normalised on upload (chunks.ts), one matmul
 * gives the [q, p] similarities (q·p·4 ≤ 64 MiB; the database rows are read through a transposed
 * view, no copy), kernels/topk.ts keeps each row's best k' = min(k (+1 to skip itself), p) with
 * chunk-local indices (exact in f32: p < 2²⁴), and the host merges them into the running lists
 * with global row numbers (any pool size: no f32 index limit on the merged ids). Equal
 * similarities keep the lower row, in the chunk (topk's order) and across chunks (earlier chunks
 * hold lower rows and win ties in the merge), so the result is the same total order as one
 * global top-k.
 */
import type { Engine } from '../../engine/engine.js';
import { matmulRaw } from '../../kernels/matmul.js';
import { topk, MAX_K } from '../../kernels/topk.js';
import { ChunkedRows } from './chunks.js';
import type { RowSource } from './source.js';

/** Largest [q, p] similarity block, in bytes. */
const SIM_BYTES = 64 * 1024 * 1024;

export interface NeighborOptions {
  k: number;
  /** Queries and database are the same rows: a row is never its own neighbour. */
  excludeSelf?: boolean;
  /** Database rows per chunk (default 8192). */
  dbRows?: number;
  /** GPU bytes the database may keep resident (default 1 GiB). */
  residentBytes?: number;
}

/** The neighbour lists of query rows [start, start + rows): row r's k entries at r·k (−1 / −∞ where fewer exist). */
export interface NeighborChunk {
  start: number;
  rows: number;
  k: number;
  sims: Float32Array;
  ids: Int32Array;
}

/**
 * Calls `onChunk` with the k nearest database rows (cosine) of each chunk of query rows, in order.
 */
export async function nearestNeighbors(
  engine: Engine,
  queries: RowSource,
  db: RowSource,
  opts: NeighborOptions,
  onChunk: (c: NeighborChunk) => void | Promise<void>,
): Promise<void> {
  const { k } = opts;
  if (queries.dim !== db.dim) throw new RangeError(`nearestNeighbors: queries of width ${queries.dim} against rows of width ${db.dim}`);
  const self = opts.excludeSelf ? 1 : 0;
  if (!Number.isInteger(k) || k < 1 || k + self > MAX_K) throw new RangeError(`nearestNeighbors: k = ${k} must be in [1, ${MAX_K - self}]`);
  const dbChunks = new ChunkedRows(engine, db, { chunkRows: Math.min(opts.dbRows ?? 8192, Math.max(db.rows, 1)), normalize: true, residentBytes: opts.residentBytes });
  const qRows = Math.max(1, Math.min(4096, Math.floor(SIM_BYTES / (4 * dbChunks.chunkRows))));
  const qChunks = new ChunkedRows(engine, queries, { chunkRows: qRows, normalize: true, residentBytes: 0 });
  try {
    await qChunks.forEach(async (qc) => {
      const sims = new Float32Array(qc.rows * k).fill(-Infinity);
      const ids = new Int32Array(qc.rows * k).fill(-1);
      await dbChunks.forEach(async (dc) => {
        const kk = Math.min(k + self, dc.rows);
        const dT = dc.x.transpose(); // [D4, p], read in place
        const { y } = matmulRaw(qc.x, dT); // [q, p] cosine similarities
        dT.dispose();
        const { values, indices } = topk(y, kk);
        y.dispose();
        let v: Float32Array;
        let ix: Float32Array;
        try {
          [v, ix] = await Promise.all([values.toArray(), indices.toArray()]);
        } finally {
          values.dispose();
          indices.dispose();
        }
        mergeLists(sims, ids, k, v, ix, kk, dc.start, self ? qc.start : -1);
      });
      await onChunk({ start: qc.start, rows: qc.rows, k, sims, ids });
    });
  } finally {
    dbChunks.dispose();
    qChunks.dispose();
  }
}

/**
 * Merges, for each query row r, its running list (sims/ids at r·k, sorted) with the chunk's
 * `kk` candidates (values v, chunk-local indices ix + `offset`), skipping the query's own row
 * (`selfStart` + r; −1: no self), keeping the best k by (similarity desc, row asc).
 */
export function mergeLists(sims: Float32Array, ids: Int32Array, k: number, v: Float32Array, ix: Float32Array, kk: number, offset: number, selfStart: number): void {
  const rows = sims.length / k;
  const ms = new Float32Array(k);
  const mi = new Int32Array(k);
  for (let r = 0; r < rows; r++) {
    let a = r * k;
    const aEnd = a + k;
    let b = r * kk;
    const bEnd = b + kk;
    const self = selfStart >= 0 ? selfStart + r : -2;
    let q = 0;
    while (q < k) {
      while (b < bEnd && (ix[b] + offset === self || !(v[b] > -Infinity))) b++;
      const hasA = a < aEnd && ids[a] >= 0;
      const hasB = b < bEnd;
      if (!hasA && !hasB) break;
      // Existing entries hold lower rows than this chunk's, so they win ties.
      if (hasA && (!hasB || sims[a] >= v[b])) {
        ms[q] = sims[a];
        mi[q++] = ids[a++];
      } else {
        ms[q] = v[b];
        mi[q++] = ix[b++] + offset;
      }
    }
    for (let t = q; t < k; t++) {
      ms[t] = -Infinity;
      mi[t] = -1;
    }
    sims.set(ms, r * k);
    ids.set(mi, r * k);
  }
}
