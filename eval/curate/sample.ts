/**
 * Balanced hierarchical sampling (ssl-data-curation's hierarchical_sampling.py; reference
 * dinov2-dinov3.md §2.2): pick `target` points so that the clusters of the top level get equal
 * shares as far as their sizes allow, then recursively the sub-clusters inside each, and points
 * at random inside each level-1 cluster.
 *
 * Water-filling: for sizes s_i and a budget S < Σ s_i, the cut c is the largest integer with
 * Σ min(c, s_i) ≤ S; cluster i gets min(c, s_i), and the remainder R = S − Σ min(c, s_i) goes +1
 * to R distinct clusters drawn uniformly among those with s_i > c (there are more than R of
 * them, else c + 1 would fit). With S ≥ Σ s_i every cluster gets all of its points. The result
 * sums to min(S, Σ s_i) exactly and never exceeds a size.
 *
 * Hierarchy: levels[0].assign maps each point to its level-1 cluster, levels[ℓ].assign maps each
 * level-ℓ cluster to its level-(ℓ+1) cluster. Sizes are counted in points ("flat" sizes) at every
 * level, as the official code does. The top level's budget is S; a cluster's budget is split over
 * its children (in index order) by water-filling on their flat sizes; a level-1 cluster's budget
 * is drawn uniformly without replacement from its points. No replication (the official
 * `multiplier` > 1 is not offered).
 *
 * Randomness comes from one seeded generator consumed in a fixed order (clusters by index, top
 * down), so the same hierarchy, target and seed give the same selection.
 */
import type { Rng } from '../../engine/random.js';

/** Per-cluster counts by water-filling `target` over `sizes` (see the file header). */
export function waterFill(sizes: ArrayLike<number>, target: number, rng: Rng): Int32Array {
  const n = sizes.length;
  let total = 0;
  let max = 0;
  for (let i = 0; i < n; i++) {
    total += sizes[i];
    max = Math.max(max, sizes[i]);
  }
  if (!Number.isInteger(target) || target < 0) throw new RangeError(`waterFill: target ${target} must be a non-negative integer`);
  const out = Int32Array.from(sizes);
  if (target >= total) return out;
  const filled = (c: number) => {
    let s = 0;
    for (let i = 0; i < n; i++) s += Math.min(c, sizes[i]);
    return s;
  };
  // Largest c in [0, max] with filled(c) ≤ target (filled(0) = 0 ≤ target; filled(max) = total > target).
  let lo = 0;
  let hi = max;
  while (hi - lo > 1) {
    const mid = Math.floor((lo + hi) / 2);
    if (filled(mid) <= target) lo = mid;
    else hi = mid;
  }
  const cut = lo;
  const over: number[] = [];
  let sum = 0;
  for (let i = 0; i < n; i++) {
    out[i] = Math.min(cut, sizes[i]);
    sum += out[i];
    if (sizes[i] > cut) over.push(i);
  }
  // R distinct clusters among `over`: a partial Fisher-Yates shuffle.
  const R = target - sum;
  for (let q = 0; q < R; q++) {
    const j = q + rng.int(over.length - q);
    [over[q], over[j]] = [over[j], over[q]];
    out[over[q]]++;
  }
  return out;
}

/** A level's assignment: the cluster (< k) of each of its items (points, or clusters below). */
export interface LevelAssignment {
  k: number;
  assign: Int32Array;
}

/** Members of each cluster in increasing item order: CSR offsets [k + 1] and items. */
function members(level: LevelAssignment): { offsets: Int32Array; items: Int32Array } {
  const offsets = new Int32Array(level.k + 1);
  for (const c of level.assign) offsets[c + 1]++;
  for (let c = 0; c < level.k; c++) offsets[c + 1] += offsets[c];
  const fill = offsets.slice(0, level.k);
  const items = new Int32Array(level.assign.length);
  level.assign.forEach((c, i) => {
    items[fill[c]++] = i;
  });
  return { offsets, items };
}

/** Flat sizes (in points) of the clusters of every level: sizes[ℓ][c]. */
export function flatSizes(levels: readonly LevelAssignment[]): Int32Array[] {
  const out: Int32Array[] = [];
  levels.forEach((lvl, l) => {
    const s = new Int32Array(lvl.k);
    lvl.assign.forEach((c, i) => {
      s[c] += l === 0 ? 1 : out[l - 1][i];
    });
    out.push(s);
  });
  return out;
}

export interface SampleResult {
  /** Selected points, increasing. */
  points: Int32Array;
  /** Points taken from each level-1 cluster. */
  perLeaf: Int32Array;
}

/** Balanced hierarchical sampling of `target` points (see the file header). */
export function hierarchicalSample(levels: readonly LevelAssignment[], target: number, rng: Rng): SampleResult {
  if (levels.length === 0) throw new RangeError('hierarchicalSample: no levels');
  for (let l = 1; l < levels.length; l++) {
    if (levels[l].assign.length !== levels[l - 1].k) {
      throw new RangeError(`hierarchicalSample: level ${l + 1} assigns ${levels[l].assign.length} items but level ${l} has ${levels[l - 1].k} clusters`);
    }
  }
  const sizes = flatSizes(levels);
  const mem = levels.map(members);
  const top = levels.length - 1;
  const perLeaf = new Int32Array(levels[0].k);
  // Budgets flow top-down, level by level, clusters in index order.
  let budget = waterFill(sizes[top], target, rng);
  for (let l = top; l >= 1; l--) {
    const next = new Int32Array(levels[l - 1].k);
    const { offsets, items } = mem[l];
    for (let c = 0; c < levels[l].k; c++) {
      if (budget[c] === 0) continue;
      const kids = items.subarray(offsets[c], offsets[c + 1]);
      const share = waterFill(Array.from(kids, (i) => sizes[l - 1][i]), budget[c], rng);
      kids.forEach((i, q) => {
        next[i] = share[q];
      });
    }
    budget = next;
  }
  const chosen: number[] = [];
  const { offsets, items } = mem[0];
  for (let c = 0; c < levels[0].k; c++) {
    const pts = Array.from(items.subarray(offsets[c], offsets[c + 1]));
    const b = budget[c];
    perLeaf[c] = b;
    for (let q = 0; q < b; q++) {
      const j = q + rng.int(pts.length - q);
      [pts[q], pts[j]] = [pts[j], pts[q]];
      chosen.push(pts[q]);
    }
  }
  return { points: Int32Array.from(chosen).sort(), perLeaf };
}
