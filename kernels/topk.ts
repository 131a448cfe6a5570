/**
 * Top-k per row: the k largest elements of every row of x [..., C] and their column indices,
 * sorted descending, as torch.topk(x, k, dim=-1, largest=True, sorted=True), plus the float64
 * reference. Not differentiable (k-NN evaluation only needs the forward).
 *
 * Order (a total order, so the result is unique and the GPU and the reference agree exactly)
 *   element (v, j) ranks before (w, i)  ⇔  v > w  or  (v = w and j < i)
 *   i.e. descending by value, ties broken by the LOWER column index.
 *
 * Algorithm: barrier-free heap selection, one invocation per (row, segment).
 *   Each invocation keeps its best k (value, index) pairs in a private min-heap of KMAX ≥ k
 *   entries (initialised to the sentinel (−∞, NONE)) whose root, the worst of the k, is cached in
 *   registers as the threshold. An element that does not beat it costs one load and one compare
 *   (the common case: in random order only ≈ k·(1 + ln(C/k)) of C elements ever enter); one that
 *   does replaces the root and is sifted down (≤ log₂ k levels). A final in-place heap sort puts
 *   the k best first. No workgroup memory, no barriers: the shape CPU Vulkan drivers run fastest,
 *   and correct on any GPU. (A sorted array with insertion lost: bench/lab/kernel-notes.md.)
 *   When there are too few rows to fill the device, the rows run in TWO passes: pass 1 splits every row into
 *   S segments of L columns (the last one shorter) and selects the top k of each into [R, S·k]
 *   candidates (values + original indices); pass 2 selects the top k of those S·k candidates,
 *   comparing (value, original index), so the result is the same total order as one pass. A
 *   segment shorter than k leaves sentinels, which lose against every real element (their index
 *   NONE is larger than any column), so they never reach the output since k ≤ C.
 *
 * Invariants
 * - k is a uniform; only KMAX (the private heap length: k rounded up to a power of two ≥ 8) and
 *   whether indices come from a buffer enter the WGSL, so there are at most 2·8 pipelines.
 * - 1 ≤ k ≤ C (k > C throws), k ≤ MAX_K, C ≤ 2²⁴ (indices are returned as f32, exact below 2²⁴,
 *   the same convention as argmax in kernels/reduce.ts).
 * - −∞ and +∞ are ordinary values. NaN is never selected (every comparison with it is false): a
 *   row with fewer than k non-NaN values keeps sentinels (−∞, index 2³²) in its last slots. WGSL
 *   does not promise NaN semantics, so callers that may see NaN must check (eval/knn.ts does).
 * - The input is read through `dense()` (views are copied first); the outputs are new contiguous
 *   tensors [..., k].
 */
import { Uniforms } from '../engine/device.js';
import { fmt, ShapeError } from '../engine/shape.js';
import type { Tensor } from '../engine/tensor.js';
import { grid1d, linearIndexWgsl } from './common.js';
import { dense, release } from './elementwise.js';

/** Invocations per workgroup (one (row, segment) each). */
const WG = 64;
/** Largest supported k (the private heap is KMAX f32 + KMAX u32 per invocation). */
export const MAX_K = 1024;
/** Largest row length: the f32 indices are exact integers below 2²⁴. */
export const MAX_C = 1 << 24;
/** Smallest private-array length (below it, the bucket costs nothing and saves pipelines). */
const MIN_KMAX = 8;
/**
 * Invocations the single pass must reach before rows are split into segments: lavapipe runs one
 * workgroup per core with 8 SIMD lanes, so a few workgroups suffice; a GPU wants thousands.
 */
const TARGET_INVOCATIONS = { cpu: 4 * WG, gpu: 64 * WG } as const;
/** A segment is at least this many columns and ≥ 4k, so pass 2 reads ≤ C/4 extra candidates. */
const MIN_SEGMENT = 1024;

/** The private-array length compiled for a given k: the next power of two ≥ max(k, 8). */
export function kmaxFor(k: number): number {
  return Math.max(MIN_KMAX, 2 ** Math.ceil(Math.log2(k)));
}

/**
 * WGSL: places (v, id) at heap slot `from` of the min-heap hv/hi of `size` entries, moving the
 * worse child up while (v, id) beats it (the heap's children are never worse than their parent).
 */
function siftDown(from: string, size: string, v: string, id: string): string {
  return /* wgsl */ `{
      var p = ${from};
      loop {
        let l = 2u * p + 1u;
        if (l >= ${size}) { break; }
        var c = l;
        if (l + 1u < ${size} && better(hv[l], hi[l], hv[l + 1u], hi[l + 1u])) { c = l + 1u; }
        if (!better(${v}, ${id}, hv[c], hi[c])) { break; }
        hv[p] = hv[c];
        hi[p] = hi[c];
        p = c;
      }
      hv[p] = ${v};
      hi[p] = ${id};
    }`;
}

/**
 * WGSL of the selection kernel. Bindings: OV, OI (outputs: values, indices as f32), X (values),
 * and XI (candidate indices as f32) when `indexed` (pass 2). Pure function of (kmax, indexed).
 */
export function topkSource(kmax: number, indexed: boolean): string {
  return /* wgsl */ `
struct U { n: u32, C: u32, k: u32, S: u32, L: u32, ninf: f32, pad0: u32, pad1: u32, }
@group(0) @binding(0) var<uniform> u: U;
@group(0) @binding(1) var<storage, read_write> OV: array<f32>;
@group(0) @binding(2) var<storage, read_write> OI: array<f32>;
@group(0) @binding(3) var<storage, read> X: array<f32>;
${indexed ? '@group(0) @binding(4) var<storage, read> XI: array<f32>;' : ''}
const KMAX: u32 = ${kmax}u;
const NONE: u32 = 0xffffffffu;
${linearIndexWgsl(WG)}
// (v, j) ranks before (w, i): larger value, or equal value and lower index.
fn better(v: f32, j: u32, w: f32, i: u32) -> bool { return v > w || (v == w && j < i); }
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let t = linear_index(gid, nwg);
  if (t >= u.n) { return; }
  let row = t / u.S;
  let seg = t - row * u.S;
  let base = row * u.C;
  let j0 = seg * u.L;
  let j1 = min(j0 + u.L, u.C);
  let k = u.k;
  // A min-heap of the best k so far: the root hv[0] is the worst of them (the threshold).
  var hv: array<f32, KMAX>;
  var hi: array<u32, KMAX>;
  for (var q = 0u; q < k; q++) { hv[q] = u.ninf; hi[q] = NONE; }
  var thv = u.ninf;
  var thi = NONE;
  for (var j = j0; j < j1; j++) {
    let v = X[base + j];
    let id = ${indexed ? 'u32(XI[base + j])' : 'j'};
    if (better(v, id, thv, thi)) {
      // Replace the root and sift it down to restore the heap.
      ${siftDown('0u', 'k', 'v', 'id')}
      thv = hv[0];
      thi = hi[0];
    }
  }
  // Heap sort: move the worst to the end, one at a time → best first.
  for (var s = k - 1u; s > 0u; s--) {
    let lv = hv[s];
    let li = hi[s];
    hv[s] = hv[0];
    hi[s] = hi[0];
    ${siftDown('0u', 's', 'lv', 'li')}
  }
  let o = t * k;
  for (var q = 0u; q < k; q++) {
    OV[o + q] = hv[q];
    OI[o + q] = f32(hi[q]);
  }
}`;
}

export interface TopkOptions {
  /**
   * Segments per row of pass 1 (1 = a single pass). Default: chosen from the row count and the
   * device's variant so the launch has enough invocations (see TARGET_INVOCATIONS); tests force it.
   */
  segments?: number;
}

export interface TopkResult {
  /** The k largest values of each row, descending: [..., k]. */
  values: Tensor;
  /** Their column indices as f32 (exact integers, C ≤ 2²⁴): [..., k]. Ties: lower index first. */
  indices: Tensor;
}

/** The segment count of pass 1 for R rows of C columns (1 = single pass). */
export function topkSegments(variant: 'cpu' | 'gpu', R: number, C: number, k: number): number {
  const target = TARGET_INVOCATIONS[variant];
  if (R >= target) return 1;
  const maxByLength = Math.floor(C / Math.max(MIN_SEGMENT, 4 * k));
  return Math.max(1, Math.min(Math.ceil(target / R), maxByLength));
}

function launch(x: Tensor, xi: Tensor | null, R: number, C: number, k: number, S: number, out: { v: Tensor; i: Tensor }): void {
  const dev = x.engine.device;
  const L = Math.ceil(C / S);
  const n = R * S;
  const kernel = dev.kernel(`topk_${kmaxFor(k)}${xi ? '_indexed' : ''}`, topkSource(kmaxFor(k), xi !== null));
  dev.dispatch(kernel, {
    uniforms: new Uniforms(8).u32(n, C, k, S, L).f32(-Infinity).u32(0, 0).bytes(),
    buffers: xi ? [out.v.buffer, out.i.buffer, x.buffer, xi.buffer] : [out.v.buffer, out.i.buffer, x.buffer],
    workgroups: grid1d(n, WG),
  });
}

/**
 * The k largest elements along the last axis of `x` [..., C] and their indices, sorted descending
 * (ties: lower index first), as torch.topk(x, k). Throws when k is not an integer in [1, C] or
 * exceeds MAX_K. Not differentiable: call it under noGrad or on tensors without gradients.
 */
export function topk(x: Tensor, k: number, opts: TopkOptions = {}): TopkResult {
  const op = 'topk';
  if (x.rank < 1) throw new ShapeError(`${op}: x ${fmt(x.shape)} needs at least one dimension`);
  const C = x.shape[x.rank - 1];
  if (!Number.isInteger(k) || k < 1) throw new RangeError(`${op}: k must be a positive integer (got ${k})`);
  if (k > C) throw new RangeError(`${op}: k = ${k} is larger than the last dimension of x ${fmt(x.shape)} (${C} elements)`);
  if (k > MAX_K) throw new RangeError(`${op}: k = ${k} exceeds the supported maximum ${MAX_K}`);
  if (C > MAX_C) throw new RangeError(`${op}: rows of ${C} elements exceed ${MAX_C} (indices are f32)`);
  const R = x.size / C;
  const e = x.engine;
  const outShape = [...x.shape.slice(0, -1), k];
  const values = e.empty(outShape, { label: 'topk_values' });
  const indices = e.empty(outShape, { label: 'topk_indices' });
  if (R === 0) return { values, indices };
  const S = opts.segments ?? topkSegments(e.device.variants, R, C, k);
  if (!Number.isInteger(S) || S < 1) throw new RangeError(`${op}: segments must be a positive integer (got ${S})`);
  const xd = dense(x);
  if (S === 1) {
    launch(xd, null, R, C, k, 1, { v: values, i: indices });
  } else {
    // Pass 1: top k of each of the S segments → [R, S·k] candidates (sentinels where a segment is
    // shorter than k). Pass 2: top k of the candidates, comparing their original indices.
    const L = Math.ceil(C / S);
    const segs = Math.ceil(C / L); // no empty segment
    const cv = e.empty([R, segs * k], { label: 'topk_cand_values' });
    const ci = e.empty([R, segs * k], { label: 'topk_cand_indices' });
    launch(xd, null, R, C, k, segs, { v: cv, i: ci });
    launch(cv, ci, R, segs * k, k, 1, { v: values, i: indices });
    cv.dispose();
    ci.dispose();
  }
  release(xd, x);
  return { values, indices };
}

/**
 * Float64 reference: per row of `x` (R rows of C), the k largest values descending and their
 * indices, ties broken by the lower index; NaN is never selected (slots left over hold −∞ and
 * index 2³², as the kernel does).
 */
export function topkRef(x: ArrayLike<number>, C: number, k: number): { values: Float64Array; indices: Float64Array } {
  if (!Number.isInteger(k) || k < 1 || k > C) throw new RangeError(`topkRef: k = ${k} must be in [1, ${C}]`);
  const R = C === 0 ? 0 : x.length / C;
  const values = new Float64Array(R * k);
  const indices = new Float64Array(R * k);
  for (let r = 0; r < R; r++) {
    const order: number[] = [];
    for (let j = 0; j < C; j++) if (!Number.isNaN(x[r * C + j])) order.push(j);
    order.sort((a, b) => {
      const va = x[r * C + a];
      const vb = x[r * C + b];
      return va > vb ? -1 : va < vb ? 1 : a - b;
    });
    for (let q = 0; q < k; q++) {
      const j = order[q];
      values[r * k + q] = j === undefined ? -Infinity : x[r * C + j];
      indices[r * k + q] = j === undefined ? 2 ** 32 : j;
    }
  }
  return { values, indices };
}
