/**
 * Near-duplicate removal (DINOv2 §3 / App. A; reference dinov2-dinov3.md §2.1), on embeddings
 * compared by cosine similarity.
 *
 * Within the pool: every row's k nearest other rows (neighbors.ts); an edge joins two rows whose
 * similarity is ≥ T; the connected components of that graph are groups of near-duplicates, and
 * each keeps ONE row: its lowest row number (so originals listed before their copies survive).
 * Union-find always hangs the larger root under the smaller, so a component's root IS its
 * lowest row and no second pass is needed. Rows with more than k near-duplicates still join one
 * component through their neighbours' lists.
 *
 * Against other sets ("relative" deduplication, e.g. evaluation images): a pool row whose most
 * similar row in those sets has similarity ≥ T is removed.
 *
 * Thresholds are cosine similarities in [−1, 1]; `sim ≥ T` (equality removes).
 */
import type { Engine } from '../../engine/engine.js';
import { nearestNeighbors, type NeighborOptions } from './neighbors.js';
import type { RowSource } from './source.js';

export interface DedupResult {
  /** 1 for rows kept, 0 for removed near-duplicates; one entry per row. */
  keep: Uint8Array;
  removed: number;
  /** Groups of ≥ 2 near-duplicates found (each keeps one row). */
  groups: number;
  /** Rows in the largest group. */
  largestGroup: number;
}

/** Union-find over n items whose roots are the lowest item of each set. */
export class LowestRootUnionFind {
  readonly parent: Int32Array;
  constructor(n: number) {
    this.parent = Int32Array.from({ length: n }, (_, i) => i);
  }
  find(i: number): number {
    const p = this.parent;
    while (p[i] !== i) {
      p[i] = p[p[i]]; // path halving
      i = p[i];
    }
    return i;
  }
  union(a: number, b: number): void {
    const ra = this.find(a);
    const rb = this.find(b);
    if (ra < rb) this.parent[rb] = ra;
    else if (rb < ra) this.parent[ra] = rb;
  }
}

/** Removes near-duplicates within `pool` (see the file header); `k` neighbours per row. */
export async function dedupPool(
  engine: Engine,
  pool: RowSource,
  threshold: number,
  k: number,
  opts: Omit<NeighborOptions, 'k' | 'excludeSelf'> & { log?: (line: string) => void } = {},
): Promise<DedupResult> {
  const n = pool.rows;
  const uf = new LowestRootUnionFind(n);
  const kk = Math.min(k, n - 1);
  let edges = 0;
  if (kk >= 1) {
    let last = performance.now();
    await nearestNeighbors(engine, pool, pool, { ...opts, k: kk, excludeSelf: true }, (c) => {
      for (let r = 0; r < c.rows; r++) {
        for (let q = 0; q < kk; q++) {
          const at = r * kk + q;
          if (!(c.sims[at] >= threshold)) break; // sorted: the rest are below too
          uf.union(c.start + r, c.ids[at]);
          edges++;
        }
      }
      if (opts.log && performance.now() - last > 10_000) {
        last = performance.now();
        opts.log(`dedup: neighbours of ${c.start + c.rows}/${n} rows, ${edges} near-duplicate pairs so far`);
      }
    });
  }
  const keep = new Uint8Array(n);
  const size = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    const r = uf.find(i);
    size[r]++;
    keep[i] = r === i ? 1 : 0;
  }
  let removed = 0;
  let groups = 0;
  let largestGroup = 0;
  for (let i = 0; i < n; i++) {
    if (!keep[i]) removed++;
    if (size[i] > 1) {
      groups++;
      largestGroup = Math.max(largestGroup, size[i]);
    }
  }
  return { keep, removed, groups, largestGroup };
}

/** Marks pool rows whose nearest row of `against` has cosine similarity ≥ threshold. */
export async function dedupAgainst(
  engine: Engine,
  pool: RowSource,
  against: RowSource,
  threshold: number,
  opts: Omit<NeighborOptions, 'k' | 'excludeSelf'> = {},
): Promise<{ remove: Uint8Array; removed: number }> {
  const remove = new Uint8Array(pool.rows);
  let removed = 0;
  await nearestNeighbors(engine, pool, against, { ...opts, k: 1 }, (c) => {
    for (let r = 0; r < c.rows; r++) {
      if (c.sims[r] >= threshold) {
        remove[c.start + r] = 1;
        removed++;
      }
    }
  });
  return { remove, removed };
}
