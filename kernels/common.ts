/**
 * Pieces every kernel family uses: launch geometry for large 1-D launches, buffer bindings, and
 * WGSL snippets (the row kernels of softmax, cross-entropy and the normalisations). Dense copies of
 * views (`dense`, `denseAligned`) live with the copy kernel in elementwise.ts.
 */
import type { BufferBinding, Device } from '../engine/device.js';
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
  return { buffer: t.buffer, offset: t.offset * 4, size: Math.max(t.size, 1) * 4 };
}

/** Formats a float for WGSL source (always with a decimal point or exponent). */
export function f32Lit(x: number): string {
  if (!Number.isFinite(x)) throw new Error(`cannot embed ${x} in WGSL`);
  const s = String(x);
  return /[.eE]/.test(s) ? s : `${s}.0`;
}

// -------------------------------------------------------------------------------------------------
// Row kernels (softmax, cross-entropy, layernorm, l2-normalize): rows of D contiguous elements, each
// row reduced independently. The kernel body is written once and runs in either layout:
// - 'cpu': one invocation per row, looping over it: no workgroup memory, no barriers (what CPU
//   Vulkan drivers run fastest); ROW_WG_CPU rows per workgroup, launched with `grid1d`.
// - 'gpu': one workgroup of ROW_WG_GPU lanes per row; lane `lid` visits j = lid, lid + 256, ...
//   and `row_sum` / `row_max` combine the lanes through a workgroup-memory tree (log₂ 256 steps).
// Body contract: the uniform struct `u` has fields `rows: u32` and `D: u32`; the body sees `row`
// (< u.rows) and `lid`, loops with `for (var j = lid; j < u.D; j += ROW_STEP)` (or the helpers
// below) and calls `row_sum`/`row_max` in uniform control flow (not inside a branch on data).
// Sums are blocked (ROW_BLOCK elements per partial) so long rows (K = 65 536) keep f32 accuracy.

/** Which row-kernel layout; see above. */
export type RowVariant = 'cpu' | 'gpu';
/** Rows per workgroup of the 'cpu' layout. */
export const ROW_WG_CPU = 64;
/** Lanes per row (= per workgroup) of the 'gpu' layout; a power of two (tree reduction). */
export const ROW_WG_GPU = 256;
/** Elements per partial sum of a lane before it is added into the lane's total. */
const ROW_BLOCK = 64;

/** WGSL of a row kernel: `decls` at module scope (struct U, bindings, helpers), `body` per row. */
export function rowKernelSource(variant: RowVariant, decls: string, body: string): string {
  const gpu = variant === 'gpu';
  const wg = gpu ? ROW_WG_GPU : ROW_WG_CPU;
  const tree = (name: string, op: (a: string, b: string) => string) => /* wgsl */ `
fn ${name}(v: f32, lid: u32) -> f32 {
  row_red[lid] = v;
  workgroupBarrier();
  for (var s = ${wg / 2}u; s > 0u; s = s >> 1u) {
    if (lid < s) { row_red[lid] = ${op(`row_red[lid]`, `row_red[lid + s]`)}; }
    workgroupBarrier();
  }
  let r = row_red[0];
  workgroupBarrier(); // every lane has read r before row_red is reused
  return r;
}`;
  const reductions = gpu
    ? `var<workgroup> row_red: array<f32, ${wg}>;
${tree('row_sum', (a, b) => `${a} + ${b}`)}
${tree('row_max', (a, b) => `max(${a}, ${b})`)}`
    : `fn row_sum(v: f32, lid: u32) -> f32 { return v; }
fn row_max(v: f32, lid: u32) -> f32 { return v; }`;
  const index = gpu ? 'let row = wid.x + wid.y * nwg.x; let lid = lidx;' : `let row = gid.x + gid.y * nwg.x * ${wg}u; let lid = 0u;`;
  return /* wgsl */ `${decls}
const ROW_STEP: u32 = ${gpu ? wg : 1}u;
${reductions}
@compute @workgroup_size(${wg})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(local_invocation_index) lidx: u32,
        @builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  ${index}
  if (row >= u.rows) { return; }
  ${body}
}`;
}

/** Workgroups of a row kernel over `rows` rows (folded into x·y past 65 535). */
export function rowGrid(variant: RowVariant, rows: number): [number, number, number] {
  return grid1d(rows, variant === 'gpu' ? 1 : ROW_WG_CPU);
}

/**
 * WGSL: blocked sums over the row, combined across lanes. `sums` maps a variable name to its
 * per-element expression of `j`; `perElement` statements run first for each j (shared `let`s).
 * Afterwards every lane holds the row totals in those variables.
 */
export function rowSumsWgsl(sums: Record<string, string>, perElement = ''): string {
  const names = Object.keys(sums);
  const each = (f: (n: string) => string) => names.map(f).join(' ');
  return /* wgsl */ `
  ${each((n) => `var ${n}: f32 = 0.0;`)}
  for (var j0 = lid; j0 < u.D; j0 += ROW_STEP * ${ROW_BLOCK}u) {
    let j1 = min(j0 + ROW_STEP * ${ROW_BLOCK}u, u.D);
    ${each((n) => `var ${n}_blk: f32 = 0.0;`)}
    for (var j = j0; j < j1; j += ROW_STEP) {
      ${perElement}
      ${each((n) => `${n}_blk += ${sums[n]};`)}
    }
    ${each((n) => `${n} += ${n}_blk;`)}
  }
  ${each((n) => `${n} = row_sum(${n}, lid);`)}`;
}

/** WGSL: `acc` = the row maximum of `expr` (of `j`), in every lane. */
export function rowMaxWgsl(acc: string, expr: string): string {
  return /* wgsl */ `
  var ${acc}: f32 = -3.402823e38;
  for (var j = lid; j < u.D; j += ROW_STEP) { ${acc} = max(${acc}, ${expr}); }
  ${acc} = row_max(${acc}, lid);`;
}

/** WGSL: runs `body` for every element j of the row (each lane its own j's). */
export function rowForEachWgsl(body: string): string {
  return /* wgsl */ `
  for (var j = lid; j < u.D; j += ROW_STEP) { ${body} }`;
}
