/**
 * Retrieval-based curation (DINOv2 §3; reference dinov2-dinov3.md §2.1): pool images similar to
 * a curated query set.
 *
 * - "sample" (large query sets): the N pool rows most similar to each query (cosine), as a
 *   union over the queries.
 * - "cluster" (small query sets): each query falls in the level-1 k-means cluster of its nearest
 *   centroid (squared L2, as the clustering), and M pool rows are drawn uniformly without
 *   replacement from that cluster (all of it when smaller). A cluster hit by several queries
 *   contributes its M rows once. Clusters are visited in index order with one seeded generator,
 *   so the draw is reproducible.
 */
import type { Engine } from '../../engine/engine.js';
import type { Rng } from '../../engine/random.js';
import { nearestNeighbors, type NeighborOptions } from './neighbors.js';
import type { RowSource } from './source.js';

/** The union of every query's `n` most similar pool rows, increasing. */
export async function retrieveNearest(
  engine: Engine,
  pool: RowSource,
  queries: RowSource,
  n: number,
  opts: Omit<NeighborOptions, 'k' | 'excludeSelf'> = {},
): Promise<Int32Array> {
  const k = Math.min(n, pool.rows);
  const hit = new Uint8Array(pool.rows);
  await nearestNeighbors(engine, queries, pool, { ...opts, k }, (c) => {
    for (let q = 0; q < c.ids.length; q++) if (c.ids[q] >= 0) hit[c.ids[q]] = 1;
  });
  const out: number[] = [];
  hit.forEach((h, i) => {
    if (h) out.push(i);
  });
  return Int32Array.from(out);
}

/**
 * Up to `m` uniform rows from each cluster that holds a query: `queryClusters` are the queries'
 * clusters, `pointClusters` the pool rows' (level 1), k clusters. Increasing pool rows.
 */
export function retrieveFromClusters(queryClusters: ArrayLike<number>, pointClusters: Int32Array, k: number, m: number, rng: Rng): Int32Array {
  const wanted = new Uint8Array(k);
  for (let q = 0; q < queryClusters.length; q++) wanted[queryClusters[q]] = 1;
  const byCluster: number[][] = Array.from({ length: k }, () => []);
  pointClusters.forEach((c, i) => {
    if (wanted[c]) byCluster[c].push(i);
  });
  const out: number[] = [];
  for (let c = 0; c < k; c++) {
    const pts = byCluster[c];
    const take = Math.min(m, pts.length);
    for (let q = 0; q < take; q++) {
      const j = q + rng.int(pts.length - q);
      [pts[q], pts[j]] = [pts[j], pts[q]];
      out.push(pts[q]);
    }
  }
  return Int32Array.from(out).sort();
}
