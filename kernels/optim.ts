/**
 * The optimizer family: fused AdamW, the EMA / lerp update (teacher weights, DINO's center),
 * per-segment L2 norms and per-segment gradient clipping: all "multi-tensor" kernels that cover
 * many parameter tensors laid out in ONE flat buffer with one dispatch, never reading anything back.
 *
 * Multi-tensor layout (the contract between these kernels and engine/optim.ts's ParamArena)
 * - A flat f32 buffer holds S segments (one per parameter tensor). Segment k is the elements
 *   [start_k, start_k + size_k). Starts are ascending, segments do not overlap, and every start is a
 *   multiple of 4 (the arena aligns them to 64 elements = 256 bytes), so a vec4 never straddles two
 *   segments. Elements between segments (alignment padding) are zero and stay zero under every
 *   kernel here (AdamW of p = g = m = v = 0 is 0; clipping scales 0; norms skip them).
 * - A `SegmentLayout` uploads, once, the segment table T (array<vec4<u32>>: start, size,
 *   blockStart, blocks) that the kernels binary-search: element e belongs to the last segment whose
 *   start ≤ e; norm block b to the last segment whose blockStart ≤ b. Per-step values (AdamW's bias
 *   corrections, skip flags and per-parameter lr / weight-decay multipliers) live in a separate
 *   small table H written by the caller.
 * - Hyperparameters (lr, β₁, β₂, ε, weight decay, momentum, max norm) are uniforms: schedules that
 *   change them every step never create a pipeline. One pipeline per kernel, no compile-time shapes.
 *
 * Math (PyTorch's torch.optim.AdamW, decoupled decay; t = the segment's own step count; a segment
 * is a parameter of a torch parameter group with lr = lr·λ and weight_decay = wd·ω, where the
 * uniforms carry the schedules' lr and wd and the table H the segment's multipliers λ, ω)
 *   lr' = lr·λ
 *   p ← p − lr'·wd·ω·p                     (ω = 0/1 is DINO's decay flag: it exempts biases/1-D)
 *   m ← β₁ m + (1−β₁) g                   v ← β₂ v + (1−β₂) g²
 *   m̂ = m / (1−β₁ᵗ)                       v̂ = v / (1−β₂ᵗ)
 *   p ← p − lr' · m̂ / (√v̂ + ε)
 *   With λ = 1 the f32 arithmetic is the same as without multipliers (lr·1 is exact), so a caller
 *   with one lr (DINO v1) gets the same bits as before multipliers existed. λ = 0 (DINOv2's frozen
 *   last layer) still advances m, v and t, as torch AdamW at lr 0 does.
 *   Segments flagged inactive (no gradient this step: PyTorch's `p.grad is None`) are left untouched,
 *   m and v included, and their t does not advance. (1−β) and the bias corrections are computed in
 *   float64 on the host and passed as f32, so 1 − 0.999 is not cancelled in f32.
 * EMA / lerp: d ← m·d + (1−m)·s (teacher ← student; DINO's center ← batch center).
 * Norms: ‖g_k‖₂ = √(Σ g²) per segment. Clipping (DINO utils.clip_gradients, per tensor):
 *   c_k = maxNorm / (‖g_k‖ + 1e-6); if c_k < 1 then g_k ← c_k·g_k.
 *
 * Norm reduction: passes of a segmented sum, no workgroup memory, no barriers. A segment of n
 * elements is cut into B = max(1, ⌈n / NORM_BLOCK⌉) blocks; block r sums elements r, r+B, r+2B, …
 * (≤ NORM_BLOCK of them), so neighbouring invocations read neighbouring addresses. The B partials
 * of each segment form the next pass's segment, until every segment has one block; the last pass
 * takes the square root and writes segment k's norm at out[outOffset + k]. Each f32 partial sums at
 * most NORM_BLOCK (256) terms, so the relative error stays ~1e-6 even for 16M-element tensors.
 */
import { Uniforms, type Kernel } from '../engine/device.js';
import type { Engine } from '../engine/engine.js';
import { fmt, isContiguous, ShapeError } from '../engine/shape.js';
import type { Tensor } from '../engine/tensor.js';
import { grid1d, linearIndexWgsl } from './common.js';

/** Workgroup size of every kernel in this file. */
const WG = 256;
/** Elements summed by one invocation of a norm pass (see the header). */
export const NORM_BLOCK = 256;
/** Added to a norm before dividing, as DINO's clip_gradients does. */
export const CLIP_EPS = 1e-6;

/** Launch geometry override: fold the grid past this many workgroups per dimension (tests use a small value). */
export interface LaunchOptions {
  maxGroupsPerDim?: number;
}

// -------------------------------------------------------------------------------------------------
// WGSL

/** WGSL: `fn seg_of(key, nseg)`: the last segment k < nseg with T[k].<field> ≤ key (binary search). */
function segSearchWgsl(field: 'x' | 'z'): string {
  return /* wgsl */ `
fn seg_of(key: u32, nseg: u32) -> u32 {
  var lo = 0u;
  var hi = nseg - 1u;
  loop {
    if (lo >= hi) { break; }
    let mid = (lo + hi + 1u) >> 1u;
    if (T[mid].${field} <= key) { lo = mid; } else { hi = mid - 1u; }
  }
  return lo;
}`;
}

/** vec4 elements per AdamW invocation: one segment lookup serves them all when they share a segment. */
export const ADAMW_VEC4S = 4;

/**
 * WGSL of fused AdamW over a flat buffer, ADAMW_VEC4S consecutive vec4 per invocation (16
 * elements). H[k] = (λ, ω, 1−β₁ᵗ, 1−β₂ᵗ) of segment k: its lr multiplier λ ≥ 0, or −1 when the
 * segment is inactive this step, and its weight-decay multiplier ω. Bindings: P, M, V
 * (read_write), G, T, H (read). The segment search (a binary search over ~150 segments: 8
 * dependent table loads) cost as much as the update itself per vec4 on lavapipe; the 4 vec4 of an
 * invocation share the segment of their first element unless the last one lies in another (then
 * each looks its own up).
 */
export function adamwSource(): string {
  return /* wgsl */ `
struct U { n4: u32, nseg: u32, lr: f32, wd: f32, beta1: f32, beta2: f32, omb1: f32, omb2: f32, eps: f32, }
@group(0) @binding(0) var<uniform> u: U;
@group(0) @binding(1) var<storage, read_write> P: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> M: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> V: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> G: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read> T: array<vec4<u32>>;
@group(0) @binding(6) var<storage, read> H: array<vec4<f32>>;
${segSearchWgsl('x')}
${linearIndexWgsl(WG)}
fn update(i: u32, h: vec4<f32>) {
  if (h.x < 0.0) { return; }               // no gradient this step: p, m, v untouched
  let lr = u.lr * h.x;                     // the segment's group lr
  let g = G[i];
  var p = P[i];
  p = p - (lr * u.wd * h.y) * p;           // decoupled weight decay
  let m = u.beta1 * M[i] + u.omb1 * g;
  let v = u.beta2 * V[i] + u.omb2 * (g * g);
  let mhat = m / h.z;
  let vhat = v / h.w;
  P[i] = p - lr * mhat / (sqrt(vhat) + u.eps);
  M[i] = m;
  V[i] = v;
}
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i0 = linear_index(gid, nwg) * ${ADAMW_VEC4S}u;
  if (i0 >= u.n4) { return; }
  let i1 = min(i0 + ${ADAMW_VEC4S - 1}u, u.n4 - 1u);
  let k0 = seg_of(4u * i0, u.nseg);
  let k1 = seg_of(4u * i1, u.nseg);
  if (k0 == k1) {
    let h = H[k0];
    for (var i = i0; i <= i1; i++) { update(i, h); }
  } else {
    for (var i = i0; i <= i1; i++) { update(i, H[seg_of(4u * i, u.nseg)]); }
  }
}`;
}

/**
 * WGSL of D[offD + i] ← m·D[offD + i] + (1−m)·S[offS + i] for i < n, in units of `ty` (vec4 when
 * n and both offsets are multiples of 4: a parameter arena always is).
 */
export function lerpSource(ty: 'f32' | 'vec4<f32>' = 'f32'): string {
  return /* wgsl */ `
struct U { n: u32, offD: u32, offS: u32, m: f32, omm: f32, }
@group(0) @binding(0) var<uniform> u: U;
@group(0) @binding(1) var<storage, read_write> D: array<${ty}>;
@group(0) @binding(2) var<storage, read> S: array<${ty}>;
${linearIndexWgsl(WG)}
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = linear_index(gid, nwg);
  if (i >= u.n) { return; }
  let d = u.offD + i;
  D[d] = u.m * D[d] + u.omm * S[u.offS + i];
}`;
}

/** WGSL of Y[off + i] ← value for i < n (a fill of a sub-range, e.g. one segment). */
export function fillRangeSource(): string {
  return /* wgsl */ `
struct U { n: u32, off: u32, value: f32, }
@group(0) @binding(0) var<uniform> u: U;
@group(0) @binding(1) var<storage, read_write> Y: array<f32>;
${linearIndexWgsl(WG)}
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = linear_index(gid, nwg);
  if (i >= u.n) { return; }
  Y[u.off + i] = u.value;
}`;
}

/**
 * WGSL of one norm pass: invocation b (a block of the segment k found by binary search on
 * blockStart) sums X[start + r], X[start + r + B], … (squared on the first pass), r = b − blockStart,
 * B = the segment's block count; the last pass takes the square root.
 */
export function segmentSumSource(): string {
  return /* wgsl */ `
struct U { nblocks: u32, nseg: u32, square: u32, root: u32, outOff: u32, }
@group(0) @binding(0) var<uniform> u: U;
@group(0) @binding(1) var<storage, read_write> OUT: array<f32>;
@group(0) @binding(2) var<storage, read> X: array<f32>;
@group(0) @binding(3) var<storage, read> T: array<vec4<u32>>;
${segSearchWgsl('z')}
${linearIndexWgsl(WG)}
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let b = linear_index(gid, nwg);
  if (b >= u.nblocks) { return; }
  let t = T[seg_of(b, u.nseg)];            // (start, size, blockStart, blocks)
  var acc = 0.0;
  for (var e = b - t.z; e < t.y; e += t.w) {
    let x = X[t.x + e];
    acc += select(x, x * x, u.square != 0u);
  }
  OUT[u.outOff + b] = select(acc, sqrt(acc), u.root != 0u);
}`;
}

/** WGSL of per-segment clipping, 4 elements per invocation: G_k ← c_k·G_k when c_k < 1. */
export function clipSource(): string {
  return /* wgsl */ `
struct U { n4: u32, nseg: u32, normOff: u32, maxNorm: f32, }
@group(0) @binding(0) var<uniform> u: U;
@group(0) @binding(1) var<storage, read_write> G: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> N: array<f32>;
@group(0) @binding(3) var<storage, read> T: array<vec4<u32>>;
${segSearchWgsl('x')}
${linearIndexWgsl(WG)}
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = linear_index(gid, nwg);
  if (i >= u.n4) { return; }
  let k = seg_of(4u * i, u.nseg);
  let c = u.maxNorm / (N[u.normOff + k] + ${CLIP_EPS});
  if (c < 1.0) { G[i] = G[i] * c; }
}`;
}

// -------------------------------------------------------------------------------------------------
// Segment tables

/** One pass of the norm reduction: its table rows (start, size, blockStart, blocks) and block count. */
export interface NormPass {
  rows: Uint32Array;
  blocks: number;
}

/**
 * The passes of the segmented norm reduction for segments (starts, sizes), on the host: pass 0 reads
 * the data itself, pass p + 1 reads the partials of pass p (segment k's partials are contiguous at
 * its blockStart). Ends with a pass in which every segment has exactly one block.
 */
export function normPlan(starts: readonly number[], sizes: readonly number[], block = NORM_BLOCK): NormPass[] {
  const passes: NormPass[] = [];
  let st = [...starts];
  let sz = [...sizes];
  for (;;) {
    const rows = new Uint32Array(4 * st.length);
    let total = 0;
    let done = true;
    for (let k = 0; k < st.length; k++) {
      const blocks = Math.max(1, Math.ceil(sz[k] / block));
      if (blocks > 1) done = false;
      rows.set([st[k], sz[k], total, blocks], 4 * k);
      total += blocks;
    }
    passes.push({ rows, blocks: total });
    if (done) return passes;
    st = Array.from({ length: st.length }, (_, k) => rows[4 * k + 2]);
    sz = Array.from({ length: st.length }, (_, k) => rows[4 * k + 3]);
  }
}

/**
 * The segment tables of one flat buffer, uploaded once and reused every step. Pass 0's table is
 * also the element → segment table of AdamW and clipping. Owns GPU tensors: `dispose()` them.
 */
export class SegmentLayout {
  readonly engine: Engine;
  readonly starts: readonly number[];
  readonly sizes: readonly number[];
  /** One past the last element covered, rounded up to a multiple of 4 (the vec4 kernels' extent). */
  readonly span: number;
  readonly passes: { table: Tensor; blocks: number }[];

  /** Builds and uploads the tables; starts must be ascending multiples of 4, segments disjoint. */
  constructor(engine: Engine, starts: readonly number[], sizes: readonly number[]) {
    if (starts.length === 0 || starts.length !== sizes.length) throw new Error('SegmentLayout: needs one size per start, at least one segment');
    for (let k = 0; k < starts.length; k++) {
      if (starts[k] % 4 !== 0) throw new Error(`SegmentLayout: segment ${k} starts at ${starts[k]}, not a multiple of 4`);
      if (k > 0 && starts[k] < starts[k - 1] + sizes[k - 1]) throw new Error(`SegmentLayout: segment ${k} overlaps segment ${k - 1}`);
    }
    this.engine = engine;
    this.starts = [...starts];
    this.sizes = [...sizes];
    const last = starts.length - 1;
    this.span = Math.ceil((starts[last] + sizes[last]) / 4) * 4;
    this.passes = normPlan(starts, sizes).map((p) => {
      const table = engine.keep(engine.empty([p.rows.length], { label: 'segment-table' }));
      engine.device.write(table.buffer, 0, p.rows);
      return { table, blocks: p.blocks };
    });
  }

  /** Number of segments (parameter tensors). */
  get numSegments(): number {
    return this.starts.length;
  }

  /** The element → segment table (pass 0's). */
  get table(): Tensor {
    return this.passes[0].table;
  }

  /** Frees the tables. */
  dispose(): void {
    for (const p of this.passes) p.table.dispose();
  }
}

// -------------------------------------------------------------------------------------------------
// Launchers (optimizer updates are not differentiated)

function kernelOf(engine: Engine, name: string, source: () => string): Kernel {
  return engine.device.kernel(name, source());
}

/** The lr multiplier of a segment AdamW skips this step (no gradient). */
export const ADAMW_INACTIVE = -1;

/** Hyperparameters of one AdamW step (uniforms: changing them never compiles anything). */
export interface AdamWHyper {
  lr: number;
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
}

/**
 * One fused AdamW step over every segment of `layout` in the flat buffers p, m, v (updated in
 * place) with gradients g. `hyper` holds 4 floats per segment: (lr multiplier λ ≥ 0, or
 * {@link ADAMW_INACTIVE} to skip the segment; weight-decay multiplier ω; 1−β₁ᵗ; 1−β₂ᵗ).
 * One dispatch.
 */
export function adamwRaw(
  p: Tensor,
  g: Tensor,
  m: Tensor,
  v: Tensor,
  layout: SegmentLayout,
  hyper: Tensor,
  h: AdamWHyper,
  opts: LaunchOptions = {},
): void {
  for (const t of [p, g, m, v]) {
    if (t.offset !== 0 || t.size < layout.span) throw new ShapeError(`adamw: flat buffers must start at 0 and hold ${layout.span} elements (got ${fmt(t.shape)})`);
  }
  const e = p.engine;
  const n4 = layout.span / 4;
  if (n4 === 0) return;
  const u = new Uniforms(12)
    .u32(n4, layout.numSegments)
    .f32(h.lr, h.weightDecay, h.beta1, h.beta2, 1 - h.beta1, 1 - h.beta2, h.eps);
  e.device.dispatch(kernelOf(e, 'adamw', adamwSource), {
    uniforms: u.bytes(),
    buffers: [p.buffer, m.buffer, v.buffer, g.buffer, layout.table.buffer, hyper.buffer],
    workgroups: grid1d(Math.ceil(n4 / ADAMW_VEC4S), WG, opts.maxGroupsPerDim),
  });
}

/** d[offD + i] ← m·d[offD + i] + (1−m)·s[offS + i] for i < n, on raw buffers (one dispatch). */
export function lerpRaw(
  engine: Engine,
  dst: GPUBuffer,
  offD: number,
  src: GPUBuffer,
  offS: number,
  n: number,
  momentum: number,
  opts: LaunchOptions = {},
): void {
  if (n === 0) return;
  if (dst === src) throw new Error('lerp: source and destination share a buffer');
  const w = n % 4 === 0 && offD % 4 === 0 && offS % 4 === 0 ? 4 : 1;
  const u = new Uniforms(8).u32(n / w, offD / w, offS / w).f32(momentum, 1 - momentum);
  engine.device.dispatch(engine.device.kernel(w === 4 ? 'lerp_v4' : 'lerp', lerpSource(w === 4 ? 'vec4<f32>' : 'f32')), {
    uniforms: u.bytes(),
    buffers: [dst, src],
    workgroups: grid1d(n / w, WG, opts.maxGroupsPerDim),
  });
}

/** Elements of `t` are laid out row-major without gaps from `t.offset` (offset allowed). */
function isDense(t: Tensor): boolean {
  return isContiguous(t.shape, t.strides);
}

/** buf[off + i] ← value for i < n (one dispatch). */
export function fillRangeRaw(engine: Engine, buf: GPUBuffer, off: number, n: number, value: number): void {
  if (n === 0) return;
  engine.device.dispatch(kernelOf(engine, 'fill_range', fillRangeSource), {
    uniforms: new Uniforms(4).u32(n, off).f32(value).bytes(),
    buffers: [buf],
    workgroups: grid1d(n, WG),
  });
}

/**
 * L2 norm of every segment of `layout` in the flat buffer `x`, written to out[outOffset + k].
 * A few dispatches (one per pass, see the header); temporaries are freed before returning.
 */
export function segmentNormsRaw(x: Tensor, layout: SegmentLayout, out: Tensor, outOffset: number, opts: LaunchOptions = {}): void {
  if (x.offset !== 0) throw new ShapeError('segmentNorms: the flat buffer must start at offset 0');
  if (!isDense(out) || out.size < outOffset + layout.numSegments) throw new ShapeError(`segmentNorms: output ${fmt(out.shape)} is too small`);
  const e = x.engine;
  const kernel = kernelOf(e, 'segment_sum', segmentSumSource);
  let input = x;
  const nseg = layout.numSegments;
  layout.passes.forEach((pass, i) => {
    const last = i === layout.passes.length - 1;
    const target = last ? out : e.empty([pass.blocks], { label: 'norm-partials' });
    const u = new Uniforms(8).u32(pass.blocks, nseg, i === 0 ? 1 : 0, last ? 1 : 0, last ? out.offset + outOffset : 0);
    e.device.dispatch(kernel, {
      uniforms: u.bytes(),
      buffers: [target.buffer, input.buffer, pass.table.buffer],
      workgroups: grid1d(pass.blocks, WG, opts.maxGroupsPerDim),
    });
    if (input !== x) input.dispose();
    input = target;
  });
}

/**
 * Per-segment clipping of the flat gradient buffer `g` (in place), reading segment k's norm from
 * norms[normOffset + k]: g_k ← g_k · maxNorm/(‖g_k‖ + 1e-6) where that factor is below 1. One dispatch.
 */
export function clipSegmentsRaw(g: Tensor, layout: SegmentLayout, norms: Tensor, normOffset: number, maxNorm: number, opts: LaunchOptions = {}): void {
  if (g.offset !== 0 || g.size < layout.span) throw new ShapeError(`clip: the flat gradient buffer must start at 0 and hold ${layout.span} elements`);
  if (!isDense(norms)) throw new ShapeError('clip: norms must be contiguous');
  const e = g.engine;
  const n4 = layout.span / 4;
  if (n4 === 0) return;
  const u = new Uniforms(4).u32(n4, layout.numSegments, norms.offset + normOffset).f32(maxNorm);
  e.device.dispatch(kernelOf(e, 'clip_segments', clipSource), {
    uniforms: u.bytes(),
    buffers: [g.buffer, norms.buffer, layout.table.buffer],
    workgroups: grid1d(n4, WG, opts.maxGroupsPerDim),
  });
}

// -------------------------------------------------------------------------------------------------
// Float64 references

/**
 * Reference AdamW step of one tensor, in place on float64 arrays. `t` is the tensor's step count
 * after this step (1 on the first). `decay`: the weight-decay multiplier ω (true = 1, false = 0);
 * `lrMult`: the lr multiplier λ.
 */
export function adamwRef(
  p: Float64Array,
  g: ArrayLike<number>,
  m: Float64Array,
  v: Float64Array,
  t: number,
  h: AdamWHyper,
  decay: boolean | number,
  lrMult = 1,
): void {
  const bc1 = 1 - h.beta1 ** t;
  const bc2 = 1 - h.beta2 ** t;
  const lr = h.lr * lrMult;
  const wd = h.weightDecay * Number(decay);
  for (let i = 0; i < p.length; i++) {
    let pi = p[i] - lr * wd * p[i];
    m[i] = h.beta1 * m[i] + (1 - h.beta1) * g[i];
    v[i] = h.beta2 * v[i] + (1 - h.beta2) * g[i] * g[i];
    pi -= (lr * (m[i] / bc1)) / (Math.sqrt(v[i] / bc2) + h.eps);
    p[i] = pi;
  }
}

/** Reference lerp: m·d + (1−m)·s elementwise. */
export function lerpRef(d: ArrayLike<number>, s: ArrayLike<number>, m: number): Float64Array {
  return Float64Array.from(d, (x, i) => m * x + (1 - m) * s[i]);
}

/** Reference L2 norm of each array. */
export function normsRef(xs: readonly ArrayLike<number>[]): Float64Array {
  return Float64Array.from(xs, (x) => {
    let s = 0;
    for (let i = 0; i < x.length; i++) s += x[i] * x[i];
    return Math.sqrt(s);
  });
}

/** Reference global norm √(Σ‖x_k‖²). */
export function totalNormRef(xs: readonly ArrayLike<number>[]): number {
  return Math.sqrt(normsRef(xs).reduce((a, n) => a + n * n, 0));
}

/** Reference DINO clip_gradients: per tensor, scale by maxNorm/(‖g‖+1e-6) when that is < 1. */
export function clipRef(gs: readonly ArrayLike<number>[], maxNorm: number): { norms: Float64Array; clipped: Float64Array[] } {
  const norms = normsRef(gs);
  const clipped = gs.map((g, k) => {
    const c = maxNorm / (norms[k] + CLIP_EPS);
    return Float64Array.from(g, (x) => (c < 1 ? x * c : x));
  });
  return { norms, clipped };
}
