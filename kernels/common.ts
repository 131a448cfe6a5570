/**
 * Pieces every kernel family uses: launch geometry for large 1-D launches, buffer bindings, and
 * WGSL snippets (the row kernels of softmax, cross-entropy and the normalisations). Dense copies of
 * views (`dense`, `denseAligned`) live with the copy kernel in elementwise.ts.
 */
import { type BufferBinding, type Device, ROW_LAYOUTS, ROW_SUBGROUP_LANES, type RowLayout } from '../engine/device.js';
import type { Tensor } from '../engine/tensor.js';

/** Workgroups for `n` invocations of `wgSize`, folded into x·y so x stays under the 65 535 cap. */
export function grid1d(n: number, wgSize: number, maxPerDim = 65535): [number, number, number] {
  const groups = Math.ceil(n / wgSize);
  if (groups <= maxPerDim) return [Math.max(groups, 1), 1, 1];
  const y = Math.ceil(groups / maxPerDim);
  return [Math.ceil(groups / y), y, 1];
}

/**
 * WGSL: the linear invocation index of a 1-D launch folded by `grid1d` (requires the builtins
 * `gid: global_invocation_id` and `nwg: num_workgroups`).
 */
export function linearIndexWgsl(wgSize: number): string {
  return `fn linear_index(gid: vec3<u32>, nwg: vec3<u32>) -> u32 { return gid.x + gid.y * nwg.x * ${wgSize}u; }`;
}

/**
 * The subgroup size when the device has the `subgroups` feature and the adapter reports one fixed
 * size (subgroupMinSize = subgroupMaxSize: 8 on lavapipe, 4 on SwiftShader); 0 otherwise. Kernels
 * that share operand loads through subgroupBroadcast (matmul, k-means) compile for this size.
 */
export function fixedSubgroupSize(device: Device): number {
  if (!device.features.subgroups) return 0;
  const info = (device.gpu as { adapterInfo?: { subgroupMinSize?: number; subgroupMaxSize?: number } }).adapterInfo;
  const lo = info?.subgroupMinSize ?? 0;
  return lo > 0 && lo === info?.subgroupMaxSize ? lo : 0;
}

/** The buffer range holding a dense tensor's elements (from `denseAligned` or `dense` in elementwise.ts). */
export function bind(t: Tensor): BufferBinding {
  const bytes = t.dtype === 'f16' ? 2 : 4;
  // Whole 4-byte words (an odd number of f16 elements binds 2 bytes more, inside the storage).
  return { buffer: t.buffer, offset: t.offset * bytes, size: Math.ceil((Math.max(t.size, 1) * bytes) / 4) * 4 };
}

/**
 * A WGSL builder that builds each source once: the same arguments return the same string, from a
 * cache keyed by their JSON (so arguments must be plain data: numbers, strings, booleans, plain
 * objects and arrays of them). Builders are pure functions of their compile-time constants, and the
 * device finds a pipeline by its source on every dispatch, so without this every dispatch rebuilt
 * its kernel's text: a DINO step at the CPU default config (~520 dispatches) spent about 20 % of
 * its main-thread time building the same strings again (matmul's builder alone 17 %, V8 CPU
 * profile on lavapipe). The cache holds one string per constant set, as the pipeline cache holds
 * one pipeline.
 */
export function memoSource<A extends unknown[]>(build: (...args: A) => string): (...args: A) => string {
  const cache = new Map<string, string>();
  return (...args: A) => {
    const key = JSON.stringify(args);
    let source = cache.get(key);
    if (source === undefined) {
      source = build(...args);
      cache.set(key, source);
    }
    return source;
  };
}

/** Formats a float for WGSL source (always with a decimal point or exponent). */
export function f32Lit(x: number): string {
  if (!Number.isFinite(x)) throw new Error(`cannot embed ${x} in WGSL`);
  const s = String(x);
  return /[.eE]/.test(s) ? s : `${s}.0`;
}

// -------------------------------------------------------------------------------------------------
// Row kernels (softmax, cross-entropy, layernorm, l2-normalize): rows of D contiguous elements, each
// row reduced independently. The kernel body is written once and runs in every layout:
// - 'serial': one invocation per row, looping over it: no workgroup memory, no barriers, no
//   subgroup operations; ROW_WG_SERIAL rows per workgroup, launched with `grid1d`.
// - 'subgroup': one workgroup of ROW_WG_SUBGROUP (8) lanes per row; lane `lid` visits
//   j = lid, lid + 8, ... and `row_sum` / `row_max` are subgroupAdd / subgroupMax: no workgroup
//   memory, no barriers. Correct only when a subgroup holds the whole workgroup (subgroup size ≥ 8;
//   a larger subgroup just has inactive lanes), which Device.rowLayoutSupported checks.
// - 'workgroup': one workgroup of ROW_WG_WIDE (256) lanes per row; `row_sum`/`row_max` combine the
//   lanes through a workgroup-memory tree (log₂ 256 steps, a barrier each).
// - 'workgroup-subgroup': 256 lanes per row; each subgroup reduces with subgroupAdd/Max, its first
//   lane writes the partial to workgroup memory, one barrier, and every lane combines the partials.
//   Assumes subgroups are consecutive ranges of local_invocation_index (lane / subgroup_size is
//   the subgroup's index), as every Vulkan, Metal and D3D12 driver lays them out.
// Which one runs is the device's choice for the row shape (Device.rowLayoutFor: per variant family
// and row length; tests force each layout in turn). Why these four and what each costs:
// bench/lab/row-probe.ts (figures: bench/lab/memory-bound.md).
//
// Vector width: when D % 4 == 0 the row data are bound as array<vec4<f32>> and a row is D/4 vec4
// elements (VEC = 4); otherwise f32 (VEC = 1). The body is written over the alias `T` (f32 or
// vec4<f32>): per-element expressions are T-valued (scalars broadcast in +, −, ·, /; wrap them in
// `T(...)` for max/min/select), `hsum(t)` / `hmax(t)` fold a T into an f32.
//
// Body contract: the uniform struct `u` has fields `rows: u32` and `D: u32` (elements); the body
// sees `row` (< u.rows), `lid`, `DV` (= D / VEC, the row length in T elements) and loops with
// `for (var j = lid; j < DV; j += ROW_STEP)` (or the helpers below); row-data bindings are
// array<T> indexed by row·DV + j, per-column parameters array<T> indexed by j, per-row scalars
// array<f32>. It calls `row_sum`/`row_max` in uniform control flow (not inside a branch on data).
// Sums are blocked (ROW_BLOCK T elements per partial) so long rows (K = 65 536) keep f32 accuracy.

export { ROW_LAYOUTS, type RowLayout };
/** Rows per workgroup of the 'serial' layout. */
export const ROW_WG_SERIAL = 64;
/** Lanes per row of the 'subgroup' layout: lavapipe's subgroup (one 256-bit SIMD register of f32). */
export const ROW_WG_SUBGROUP = ROW_SUBGROUP_LANES;
/** Lanes per row of the 'workgroup' layouts; a power of two (tree reduction). */
export const ROW_WG_WIDE = 256;
/** T elements per partial sum of a lane before it is added into the lane's total. */
const ROW_BLOCK = 64;

/** Compile-time constants of a row kernel: the layout, the vector width and the register cache. */
export interface RowConsts {
  layout: RowLayout;
  /** 4: row data as vec4 (D % 4 == 0); 1: f32. */
  vec: 1 | 4;
  /**
   * 0, or the T elements per lane a short row is held in (a power of two ≤ ROW_CACHE_MAX): the
   * kernel then reads the row from memory once into a private array and its later passes read the
   * array (see `rowLoopWgsl`).
   */
  cache: number;
}

/** Largest register cache per lane, in T elements (16 vec4 = 64 floats). */
export const ROW_CACHE_MAX = 16;

/**
 * The constants of a row kernel over `rows` rows of D elements on `dev` (layout from
 * Device.rowLayoutFor). With `cacheable` (kernels whose bodies use `rowLoopWgsl`), rows of at
 * most ROW_CACHE_MAX T elements in the 'serial' layout get a register cache of the next power of
 * two of their length, so at most log₂ ROW_CACHE_MAX + 1 pipelines per kernel, whatever D. (The
 * cache made the serial LayerNorm ~1.5× faster at D = 64 and the subgroup one slower at
 * D = 384: bench/lab/row-probe.ts (figures: bench/lab/memory-bound.md).)
 */
export function rowConsts(dev: Pick<Device, 'rowLayoutFor'>, rows: number, D: number, cacheable = false): RowConsts {
  const layout = dev.rowLayoutFor(rows, D);
  const vec = D % 4 === 0 ? 4 : 1;
  const perLane = Math.ceil(D / vec / rowStep(layout));
  const cache = cacheable && layout === 'serial' && perLane <= ROW_CACHE_MAX ? 2 ** Math.ceil(Math.log2(Math.max(perLane, 1))) : 0;
  return { layout, vec, cache };
}

/** Pipeline-name suffix of the constants, e.g. `_subgroup_v4_c2`. */
export function rowSuffix(k: RowConsts): string {
  return `_${k.layout}_v${k.vec}${k.cache ? `_c${k.cache}` : ''}`;
}

/** Lanes that share a row in a layout (ROW_STEP). */
function rowStep(layout: RowLayout): number {
  return layout === 'serial' ? 1 : rowWorkgroup(layout);
}

/** Lanes per workgroup of a layout. */
function rowWorkgroup(layout: RowLayout): number {
  return layout === 'serial' ? ROW_WG_SERIAL : layout === 'subgroup' ? ROW_WG_SUBGROUP : ROW_WG_WIDE;
}

/** WGSL of `row_sum` and `row_max` for a layout (see above). */
function reductionsWgsl(layout: RowLayout): string {
  const ops = { sum: (a: string, b: string) => `${a} + ${b}`, max: (a: string, b: string) => `max(${a}, ${b})` };
  const name = { sum: 'Add', max: 'Max' };
  const each = (f: (op: 'sum' | 'max') => string) => f('sum') + f('max');
  switch (layout) {
    case 'serial':
      return each((op) => `fn row_${op}(v: f32, lid: u32) -> f32 { return v; }\n`);
    case 'subgroup':
      return each((op) => `fn row_${op}(v: f32, lid: u32) -> f32 { return subgroup${name[op]}(v); }\n`);
    case 'workgroup':
      return `var<workgroup> row_red: array<f32, ${ROW_WG_WIDE}>;\n${each(
        (op) => /* wgsl */ `
fn row_${op}(v: f32, lid: u32) -> f32 {
  row_red[lid] = v;
  workgroupBarrier();
  for (var s = ${ROW_WG_WIDE / 2}u; s > 0u; s = s >> 1u) {
    if (lid < s) { row_red[lid] = ${ops[op]('row_red[lid]', 'row_red[lid + s]')}; }
    workgroupBarrier();
  }
  let r = row_red[0];
  workgroupBarrier(); // every lane has read r before row_red is reused
  return r;
}`,
      )}`;
    case 'workgroup-subgroup':
      return `var<workgroup> row_red: array<f32, ${ROW_WG_WIDE}>;
var<private> sg_lane: u32;
var<private> sg_size: u32;
${each(
  (op) => /* wgsl */ `
fn row_${op}(v: f32, lid: u32) -> f32 {
  let p = subgroup${name[op]}(v);
  if (sg_lane == 0u) { row_red[lid / sg_size] = p; }
  workgroupBarrier();
  var r = row_red[0];
  for (var i = 1u; i < ${ROW_WG_WIDE}u / sg_size; i++) { r = ${ops[op]('r', 'row_red[i]')}; }
  workgroupBarrier(); // every lane has read the partials before row_red is reused
  return r;
}`,
)}`;
  }
}

/** WGSL of a row kernel: `decls` at module scope (struct U, bindings, helpers), `body` per row. */
export function rowKernelSource(k: RowConsts, decls: string, body: string): string {
  const wg = rowWorkgroup(k.layout);
  const subgroups = k.layout === 'subgroup' || k.layout === 'workgroup-subgroup';
  const index =
    k.layout === 'serial'
      ? `let row = gid.x + gid.y * nwg.x * ${wg}u; let lid = 0u;`
      : `let row = wid.x + wid.y * nwg.x; let lid = lidx;${k.layout === 'workgroup-subgroup' ? ' sg_lane = sgl; sg_size = sgs;' : ''}`;
  const sgBuiltins = k.layout === 'workgroup-subgroup' ? ',\n        @builtin(subgroup_invocation_id) sgl: u32, @builtin(subgroup_size) sgs: u32' : '';
  const fold =
    k.vec === 4
      ? `fn hsum(v: T) -> f32 { return (v.x + v.y) + (v.z + v.w); }
fn hmax(v: T) -> f32 { return max(max(v.x, v.y), max(v.z, v.w)); }`
      : `fn hsum(v: T) -> f32 { return v; }
fn hmax(v: T) -> f32 { return v; }`;
  return /* wgsl */ `${subgroups ? 'enable subgroups;\n' : ''}alias T = ${k.vec === 4 ? 'vec4<f32>' : 'f32'};
const VEC: u32 = ${k.vec}u;
${decls}
const ROW_STEP: u32 = ${rowStep(k.layout)}u;
${fold}
${reductionsWgsl(k.layout)}
@compute @workgroup_size(${wg})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(local_invocation_index) lidx: u32,
        @builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>${sgBuiltins}) {
  ${index}
  if (row >= u.rows) { return; }
  let DV = u.D / VEC;
  ${body}
}`;
}

/** Workgroups of a row kernel over `rows` rows (folded into x·y past 65 535). */
export function rowGrid(k: RowConsts, rows: number): [number, number, number] {
  return grid1d(rows, k.layout === 'serial' ? ROW_WG_SERIAL : 1);
}

/**
 * WGSL: blocked sums over the row, combined across lanes. `sums` maps a variable name to its
 * per-element T-valued expression of `j`; `perElement` statements run first for each j (shared
 * `let`s). Afterwards every lane holds the row totals (f32) in those variables.
 */
export function rowSumsWgsl(sums: Record<string, string>, perElement = ''): string {
  const names = Object.keys(sums);
  const each = (f: (n: string) => string) => names.map(f).join(' ');
  return /* wgsl */ `
  ${each((n) => `var ${n}: f32 = 0.0;`)}
  for (var j0 = lid; j0 < DV; j0 += ROW_STEP * ${ROW_BLOCK}u) {
    let j1 = min(j0 + ROW_STEP * ${ROW_BLOCK}u, DV);
    ${each((n) => `var ${n}_blk = T(0.0);`)}
    for (var j = j0; j < j1; j += ROW_STEP) {
      ${perElement}
      ${each((n) => `${n}_blk += ${sums[n]};`)}
    }
    ${each((n) => `${n} += hsum(${n}_blk);`)}
  }
  ${each((n) => `${n} = row_sum(${n}, lid);`)}`;
}

/** WGSL: `acc` = the row maximum (f32) of the T-valued `expr` (of `j`), in every lane. */
export function rowMaxWgsl(acc: string, expr: string): string {
  return /* wgsl */ `
  var ${acc}_t = T(-3.402823e38);
  for (var j = lid; j < DV; j += ROW_STEP) { ${acc}_t = max(${acc}_t, ${expr}); }
  let ${acc} = row_max(hmax(${acc}_t), lid);`;
}

/** WGSL: runs `body` for every element j (in T units) of the row (each lane its own j's). */
export function rowForEachWgsl(body: string): string {
  return /* wgsl */ `
  for (var j = lid; j < DV; j += ROW_STEP) { ${body} }`;
}

/**
 * WGSL: one pass over the row giving its maximum `m` of the T-valued `expr(j)` and the sum
 * `s` = Σ exp((expr(j) − m)·`scale`) (f32, in every lane), by the online recurrence: 4 T elements
 * per step, one rescale exp((m_old − m_new)·scale) per step (so ~1.25 exp per element instead of
 * the 1 of a sum against a known maximum, but one read of the row instead of two). Sums are
 * blocked (ROW_BLOCK T elements per partial, each rescaled along) for accuracy on long rows.
 * Elements past a block's end enter as −3.4e38, whose exp is 0. `scale` ≥ 0 (1/τ).
 */
export function rowMaxSumExpWgsl(m: string, s: string, expr: (j: string) => string, scale: string): string {
  const NEG = 'T(-3.402823e38)';
  const at = (t: number) =>
    t === 0 ? expr('j') : `select(${NEG}, ${expr(`min(j + ${t}u * ROW_STEP, DV - 1u)`)}, j + ${t}u * ROW_STEP < j1)`;
  return /* wgsl */ `
  var ${m}_t = ${NEG};
  var ${s}_t = T(0.0);
  for (var j0 = lid; j0 < DV; j0 += ROW_STEP * ${ROW_BLOCK}u) {
    let j1 = min(j0 + ROW_STEP * ${ROW_BLOCK}u, DV);
    var ${s}_blk = T(0.0);
    for (var j = j0; j < j1; j += 4u * ROW_STEP) {
      let z0 = ${at(0)};
      let z1 = ${at(1)};
      let z2 = ${at(2)};
      let z3 = ${at(3)};
      let mn = max(${m}_t, max(max(z0, z1), max(z2, z3)));
      let c = exp((${m}_t - mn) * ${scale});
      let e = (exp((z0 - mn) * ${scale}) + exp((z1 - mn) * ${scale})) + (exp((z2 - mn) * ${scale}) + exp((z3 - mn) * ${scale}));
      ${s}_blk = ${s}_blk * c + e;
      ${s}_t = ${s}_t * c;
      ${m}_t = mn;
    }
    ${s}_t += ${s}_blk;
  }
  let ${m} = row_max(hmax(${m}_t), lid);
  let ${s} = row_sum(hsum(${s}_t * exp((${m}_t - T(${m})) * ${scale})), lid);`;
}

/**
 * WGSL: runs `body` for every element j (in T units) of the lane's share of the row. Without a
 * cache a strided loop; with one (k.cache > 0) a loop of constant trip count over the cache slots
 * t, `j = lid + t·ROW_STEP`, skipping slots past the row's end: the body then reads cached values
 * as `<array>[t]` (arrays declared with `rowCacheWgsl`). Each lane has at most ROW_CACHE_MAX
 * elements then, so sums over it need no blocking.
 */
export function rowLoopWgsl(k: RowConsts, body: string): string {
  if (!k.cache) return rowForEachWgsl(body);
  return /* wgsl */ `
  for (var t = 0u; t < ${k.cache}u; t++) {
    let j = lid + t * ROW_STEP;
    if (j < DV) { ${body} }
  }`;
}

/** WGSL: declares the private array `name` of the register cache (nothing without a cache). */
export function rowCacheWgsl(k: RowConsts, name: string): string {
  return k.cache ? `var ${name}: array<T, ${k.cache}>;` : '';
}

/** WGSL: sums over the lane's share through `rowLoopWgsl`, combined across lanes (`rowSumsWgsl`'s contract). */
export function rowLoopSumsWgsl(k: RowConsts, sums: Record<string, string>, perElement = ''): string {
  if (!k.cache) return rowSumsWgsl(sums, perElement);
  const names = Object.keys(sums);
  const each = (f: (n: string) => string) => names.map(f).join(' ');
  return /* wgsl */ `
  ${each((n) => `var ${n}_t = T(0.0);`)}
  ${rowLoopWgsl(k, `${perElement} ${each((n) => `${n}_t += ${sums[n]};`)}`)}
  ${each((n) => `let ${n} = row_sum(hsum(${n}_t), lid);`)}`;
}
