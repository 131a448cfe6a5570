/**
 * K-means family for data curation (eval/curate/): the fused nearest-centroid assignment, the
 * kernels of k-means++ D² seeding, and compensated per-cluster sums for the centroid update, each
 * with a float64 CPU reference. No autograd: curation needs no gradients.
 *
 * Point sets on the GPU ("rows")
 *   x  [n, D] f32, row-major, D a multiple of 4 (callers zero-pad: padding adds nothing to dot
 *      products or norms, so distances are unchanged), bound as vec4 arrays;
 *   xn [n]    f32, ‖x_i‖², computed by the caller (in float64, then rounded).
 * Index tensors (assignments, CSR offsets and members, candidate ids, draws) are f32 tensors whose
 * 4-byte elements hold u32 BITS, written and read as Uint32Array by the caller (indices of any
 * size stay exact; the f32 convention of topk.ts would stop at 2²⁴).
 *
 * Math
 *   assign:  a_i = argmin_j ‖x_i − c_j‖² = argmin_j (‖c_j‖² − 2 x_i·c_j)   (ties: lower j)
 *            p_i = min_j (‖c_j‖² − 2 x_i·c_j), the "partial" distance; the caller forms
 *            d_i = max(‖x_i‖² + p_i, 0). Returning p_i rather than d_i keeps launches over
 *            blocks of centroids exactly mergeable (the minimum of the blocks' p is one launch's p).
 *            The [n, k] distance matrix is never stored: each workgroup walks all k centroids in
 *            tiles, keeping a running (min, argmin) per row in registers, and reduces its lanes once.
 *   k-means++ (D² sampling, Arthur & Vassilvitskii; the greedy variant of sklearn and
 *            ssl-data-curation: L = 2 + ⌊ln k⌋ candidates per new centre, keep the one that
 *            minimises the potential Σ_i min(D²_i, ‖x_i − cand‖²)):
 *     candidateDistances: M[t, i] = min(D²_i, max(‖x_i‖² + ‖y_t‖² − 2 x_i·y_t, 0)) for the L
 *            candidates y_t: the D² vector each candidate would leave;
 *     blockSums: P[t, b] = Σ_{i ∈ block b} M[t, i], BLOCK = 256 consecutive rows, summed in order
 *            with Kahan compensation; the caller adds the blocks in float64, so the potential of
 *            a candidate is Σ_b P[t, b];
 *     pickD2: the draw u·pot falls in block b (found by the caller on the float64 prefix of the
 *            block sums) with residual r; the kernel rescans block b with the SAME Kahan
 *            arithmetic and returns the first row whose running sum exceeds r (rows with D² = 0
 *            never), i.e. torch.searchsorted on the cumulative D², two-level;
 *     gatherRows: copies the chosen rows (and their norms) into the candidate set.
 *   centroid sums: S_c = Σ_{i: a_i = c} x_i, accumulated as a float pair (hi, lo) with TwoSum
 *            (Knuth): s = hi + x; b' = s − hi; lo += (hi − (s − b')) + (x − b'); hi = s. The
 *            members of a cluster are added ONE BY ONE IN GLOBAL ROW ORDER (the caller passes a
 *            CSR of each chunk's members sorted by row, and chunks in row order), and the pair
 *            persists across chunks, so the sums are bit-identical for every chunking; the pair
 *            carries ~48 bits, so the mean (hi + lo)/count formed in float64 is f32-exact in
 *            practice. Shader compilers treat float arithmetic as reassociable (Mesa's NIR folds
 *            (hi + x) − hi to x, which zeroes the error term: measured, the sums were then plain
 *            f32 sums); every intermediate is therefore multiplied by a uniform 1.0 the compiler
 *            cannot see through (exact, and it blocks the rewrites). The test replays the kernel's
 *            arithmetic in f32 on the CPU and requires bit equality.
 *
 * Variants (`device.variants`)
 * - 'cpu' (lavapipe): the register-blocked, barrier-free tile of kernels/matmul.ts (TM rows ×
 *   TN columns per invocation, W invocations along the columns, one subgroup per workgroup; the
 *   TM shared rows are loaded cooperatively and handed out with subgroupBroadcast when the adapter
 *   has a fixed subgroup size). Assign: rows = points, columns = centroids (tiles of W·TN looped
 *   inside the kernel), then ONE workgroup barrier to reduce the W lanes' (min, argmin) per row.
 *   Candidate distances: rows = the ≤ 16 candidates, columns = points.
 * - 'gpu': assign stages 64 points × 64 centroids × 16 dims in workgroup memory (4×4 outputs per
 *   invocation), loops over the centroid tiles, and reduces the 16 column lanes per row in
 *   workgroup memory. Candidate distances: one invocation per point.
 *
 * Invariants
 * - Shapes are uniforms; only the variant, the tile and the subgroup size enter the WGSL.
 * - Nothing is read out of bounds: row and column indices are clamped for loads, and clamped
 *   columns are masked out of the argmin.
 * - Per (point, centroid) pair the arithmetic is the same wherever the pair sits in a tile or a
 *   chunk, so assignments do not depend on the chunking either.
 * - NaN inputs give unspecified results: callers reject non-finite rows before upload.
 */
import { Uniforms } from '../engine/device.js';
import { fmt, ShapeError } from '../engine/shape.js';
import type { Tensor } from '../engine/tensor.js';
import { fixedSubgroupSize, grid1d, linearIndexWgsl } from './common.js';

/** Register tile of the 'cpu' kernels: TM shared rows × TN columns per invocation, W invocations. */
export interface KmeansCpuTile {
  TM: number;
  TN: number;
  W: number;
}

/**
 * The assign tile: 32 points × 4 centroids per invocation, one subgroup of 8 per workgroup.
 * Measured on lavapipe (2 cores, CPU-normalised, n = 20480, k = 1000, D = 384): 32×4 31–35
 * GFLOP/s; 16×4 (matmul's winner) 21–24; 48×4 and 64×4 22; 32×2 19–22; 16×8 and 8×8 ~20.
 * Unlike matmul, there is no output tile to write, so more shared rows per centroid load pay.
 */
export const ASSIGN_CPU_TILE: KmeansCpuTile = { TM: 32, TN: 4, W: 8 };
/** The candidate-distance tile: the TM rows are the candidates, so TM bounds L. */
const D2_CPU_TILE: KmeansCpuTile = { TM: 16, TN: 4, W: 8 };
/** Most k-means++ candidates per step (2 + ⌊ln k⌋ ≤ 16 for k < e¹⁵ ≈ 3.3 M). */
export const MAX_CANDIDATES = D2_CPU_TILE.TM;
/** Rows per block of the two-level D² cumulative sum. */
export const D2_BLOCK = 256;
/** Invocations per workgroup of the 1-D kernels. */
const WG = 64;
/** The 'gpu' assign tile: BM points × BN centroids, BK dims per stage, T×T invocations. */
const G = { BM: 64, BN: 64, BK: 16, T: 16, PAD: 4 } as const;
/** Larger than every finite distance: the argmin's starting value. */
const BIG = '3.4028234e38';

/** Kernel-lab and test switches; the engine uses the defaults. */
export interface KmeansTuning {
  /** Force the variant instead of `device.variants`. */
  variant?: 'cpu' | 'gpu';
  /** Share the tile's rows through subgroupBroadcast where the adapter allows it (default true). */
  subgroups?: boolean;
  /** The 'cpu' assign tile (default ASSIGN_CPU_TILE). */
  tile?: KmeansCpuTile;
}

/** A point set on the GPU: rows x [n, D] (D % 4 = 0) and their squared norms xn [n]. */
export interface GpuRows {
  x: Tensor;
  xn: Tensor;
}

// -------------------------------------------------------------------------------------------------
// WGSL

/**
 * WGSL: the dot-product loop of a register tile. Rows come from array `A` (shared by the W lanes:
 * loaded once per subgroup and broadcast when `sg` > 0), columns from array `B` (per lane). Both
 * are vec4 arrays of rows of `D4` vec4s. `aRow(e)` / `bRow(c)` give the (clamped) row index of
 * shared row `e` (a WGSL u32 expression) and of column `c`. Declares acc{r}_{c}: f32.
 */
function tileDots(t: KmeansCpuTile, sg: number, aRow: (e: string) => string, bRow: (c: number) => string): string {
  const rows = [...Array(t.TM).keys()];
  const cols = [...Array(t.TN).keys()];
  const L: string[] = [];
  if (sg) for (let p = 0; p < t.TM / sg; p++) L.push(`let sa${p} = ${aRow(`sl + ${sg * p}u`)} * D4;`);
  else for (const r of rows) L.push(`let pa${r} = ${aRow(`${r}u`)} * D4;`);
  for (const c of cols) L.push(`let pb${c} = ${bRow(c)} * D4;`);
  for (const r of rows) for (const c of cols) L.push(`var acc${r}_${c} = 0.0;`);
  const body: string[] = [];
  if (sg) {
    for (let p = 0; p < t.TM / sg; p++) body.push(`let ap${p} = A[sa${p} + q];`);
    for (const r of rows) body.push(`let a${r} = subgroupBroadcast(ap${Math.floor(r / sg)}, ${r % sg}u);`);
  } else {
    for (const r of rows) body.push(`let a${r} = A[pa${r} + q];`);
  }
  for (const c of cols) body.push(`let b${c} = B[pb${c} + q];`);
  for (const r of rows) for (const c of cols) body.push(`acc${r}_${c} += dot(a${r}, b${c});`);
  return `${L.join('\n    ')}
    for (var q = 0u; q < D4; q++) {
      ${body.join('\n      ')}
    }`;
}

/**
 * WGSL: the final argmin of one point row `m0 + local` over the `width` partial (value, index)
 * pairs its lanes left in workgroup memory rv/ri (slots local·width …), ties to the lower index,
 * written to OI/OD. Shared by both assign kernels.
 */
function rowArgminWgsl(local: string, width: number): string {
  return `let row = m0 + ${local};
    if (row < u.n) {
      var v = rv[${local} * ${width}u];
      var i = ri[${local} * ${width}u];
      for (var l = 1u; l < ${width}u; l++) {
        let w = rv[${local} * ${width}u + l];
        let j = ri[${local} * ${width}u + l];
        if (w < v || (w == v && j < i)) { v = w; i = j; }
      }
      OI[row] = i;
      OD[row] = v;
    }`;
}

/**
 * WGSL of the 'cpu' assign kernel (see the file header). Bindings: OI (u32 argmin), OD (partial
 * distance p), A = points, B = centroids, CN. Pure function of the tile and `sg`.
 */
export function assignCpuSource(t: KmeansCpuTile, sg: number): string {
  const { TM, TN, W } = t;
  if (sg && (TM % sg !== 0 || W !== sg)) throw new Error(`kmeans: subgroup sharing needs TM a multiple of ${sg} and W = ${sg}`);
  const rows = [...Array(TM).keys()];
  const cols = [...Array(TN).keys()];
  const epilogue = cols
    .map(
      (c) => `{
      let j = j0 + ${c}u;
      let ok = j < u.k;
      let cn = CN[min(j, u.k - 1u)];
      ${rows.map((r) => `{ let d = cn - 2.0 * acc${r}_${c}; if (ok && d < bv${r}) { bv${r} = d; bi${r} = j; } }`).join('\n      ')}
    }`,
    )
    .join('\n    ');
  return /* wgsl */ `${sg ? 'enable subgroups;\n' : ''}// kmeans assign cpu TM=${TM} TN=${TN} W=${W} sg=${sg}
struct U { n: u32, k: u32, D4: u32, pad: u32, }
@group(0) @binding(0) var<uniform> u: U;
@group(0) @binding(1) var<storage, read_write> OI: array<u32>;
@group(0) @binding(2) var<storage, read_write> OD: array<f32>;
@group(0) @binding(3) var<storage, read> A: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> B: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read> CN: array<f32>;
var<workgroup> rv: array<f32, ${TM * W}>;
var<workgroup> ri: array<u32, ${TM * W}>;
@compute @workgroup_size(${W})
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lane: u32${sg ? ', @builtin(subgroup_invocation_id) sl: u32' : ''}) {
  let m0 = (wg.x + wg.y * nwg.x) * ${TM}u;
  if (m0 >= u.n) { return; }
  let D4 = u.D4;
  ${rows.map((r) => `var bv${r} = ${BIG}; var bi${r} = 0u;`).join('\n  ')}
  for (var t0 = 0u; t0 < u.k; t0 += ${W * TN}u) {
    let j0 = t0 + lane * ${TN}u;
    ${tileDots(t, sg, (e) => `min(m0 + ${e}, u.n - 1u)`, (c) => `min(j0 + ${c}u, u.k - 1u)`)}
    ${epilogue}
  }
  ${rows.map((r) => `rv[${r * W}u + lane] = bv${r}; ri[${r * W}u + lane] = bi${r};`).join('\n  ')}
  workgroupBarrier();
  for (var r = lane; r < ${TM}u; r += ${W}u) {
    ${rowArgminWgsl('r', W)}
  }
}`;
}

/** WGSL of the 'gpu' assign kernel: 64×64 tiles through workgroup memory (see the file header). */
export function assignGpuSource(): string {
  const { BM, BN, BK, T, PAD } = G;
  const R = BM / T;
  const C4 = ['x', 'y', 'z', 'w'];
  return /* wgsl */ `// kmeans assign gpu ${BM}x${BN}x${BK}
struct U { n: u32, k: u32, D4: u32, pad: u32, }
@group(0) @binding(0) var<uniform> u: U;
@group(0) @binding(1) var<storage, read_write> OI: array<u32>;
@group(0) @binding(2) var<storage, read_write> OD: array<f32>;
@group(0) @binding(3) var<storage, read> X: array<f32>;
@group(0) @binding(4) var<storage, read> C: array<f32>;
@group(0) @binding(5) var<storage, read> CN: array<f32>;
var<workgroup> As: array<array<f32, ${BM + PAD}>, ${BK}>;
var<workgroup> Bs: array<array<f32, ${BN + PAD}>, ${BK}>;
var<workgroup> rv: array<f32, ${BM * T}>;
var<workgroup> ri: array<u32, ${BM * T}>;
@compute @workgroup_size(${T}, ${T})
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_id) lid: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
  let m0 = (wg.x + wg.y * nwg.x) * ${BM}u;
  if (m0 >= u.n) { return; }
  let D = u.D4 * 4u;
  var bv = array<f32, ${R}>(${Array(R).fill(BIG).join(', ')});
  var bi = array<u32, ${R}>(${Array(R).fill('0u').join(', ')});
  for (var t0 = 0u; t0 < u.k; t0 += ${BN}u) {
    var acc = array<vec4<f32>, ${R}>(); // explicitly zeroed per tile: a bare declaration was not
                                        // re-initialised per loop iteration on lavapipe
    for (var kt = 0u; kt < D; kt += ${BK}u) {
      for (var e = tid; e < ${BM * BK}u; e += ${T * T}u) {
        let kk = e % ${BK}u;
        let mm = e / ${BK}u;
        let inK = kt + kk < D;
        let gm = min(m0 + mm, u.n - 1u);
        let gn = min(t0 + mm, u.k - 1u);
        As[kk][mm] = select(0.0, X[gm * D + min(kt + kk, D - 1u)], inK);
        Bs[kk][mm] = select(0.0, C[gn * D + min(kt + kk, D - 1u)], inK);
      }
      workgroupBarrier();
      for (var kk = 0u; kk < ${BK}u; kk++) {
        let a = vec4<f32>(${[0, 1, 2, 3].map((i) => `As[kk][lid.y + ${i * T}u]`).join(', ')});
        let b = vec4<f32>(${[0, 1, 2, 3].map((j) => `Bs[kk][lid.x + ${j * T}u]`).join(', ')});
        ${[0, 1, 2, 3].map((i) => `acc[${i}] = fma(vec4<f32>(a.${C4[i]}), b, acc[${i}]);`).join('\n        ')}
      }
      workgroupBarrier();
    }
    for (var j = 0u; j < 4u; j++) {
      let col = t0 + lid.x + j * ${T}u;
      if (col < u.k) {
        let cn = CN[col];
        for (var i = 0u; i < ${R}u; i++) {
          let d = cn - 2.0 * acc[i][j];
          if (d < bv[i]) { bv[i] = d; bi[i] = col; }
        }
      }
    }
  }
  for (var i = 0u; i < ${R}u; i++) {
    rv[(lid.y + i * ${T}u) * ${T}u + lid.x] = bv[i];
    ri[(lid.y + i * ${T}u) * ${T}u + lid.x] = bi[i];
  }
  workgroupBarrier();
  if (tid < ${BM}u) {
    ${rowArgminWgsl('tid', T)}
  }
}`;
}

/**
 * WGSL of the 'cpu' candidate-distance kernel: rows = the L ≤ TM candidates (shared), columns =
 * points. Bindings: DM [L, n] out, B = points, XN, A = candidates, CNN, CLOSEST.
 */
export function candidatesCpuSource(sg: number): string {
  const t = D2_CPU_TILE;
  const { TM, TN, W } = t;
  if (sg && (TM % sg !== 0 || W !== sg)) throw new Error(`kmeans: subgroup sharing needs TM a multiple of ${sg} and W = ${sg}`);
  const rows = [...Array(TM).keys()];
  const cols = [...Array(TN).keys()];
  const epilogue = cols
    .map(
      (c) => `{
    let j = j0 + ${c}u;
    if (j < u.n) {
      let xn = XN[j];
      let cl = CLOSEST[j];
      ${rows.map((r) => `if (${r}u < u.L) { DM[${r}u * u.n + j] = min(cl, max(xn + CNN[${r}u] - 2.0 * acc${r}_${c}, 0.0)); }`).join('\n      ')}
    }
  }`,
    )
    .join('\n  ');
  return /* wgsl */ `${sg ? 'enable subgroups;\n' : ''}// kmeans++ candidate distances cpu TM=${TM} TN=${TN} W=${W} sg=${sg}
struct U { n: u32, L: u32, D4: u32, pad: u32, }
@group(0) @binding(0) var<uniform> u: U;
@group(0) @binding(1) var<storage, read_write> DM: array<f32>;
@group(0) @binding(2) var<storage, read> B: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> XN: array<f32>;
@group(0) @binding(4) var<storage, read> A: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read> CNN: array<f32>;
@group(0) @binding(6) var<storage, read> CLOSEST: array<f32>;
@compute @workgroup_size(${W})
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lane: u32${sg ? ', @builtin(subgroup_invocation_id) sl: u32' : ''}) {
  let g = wg.x + wg.y * nwg.x;
  if (g * ${W * TN}u >= u.n) { return; }
  let D4 = u.D4;
  let j0 = (g * ${W}u + lane) * ${TN}u;
  ${tileDots(t, sg, (e) => `min(${e}, u.L - 1u)`, (c) => `min(j0 + ${c}u, u.n - 1u)`)}
  ${epilogue}
}`;
}

/** WGSL of the 'gpu' candidate-distance kernel: one invocation per point, candidates in a loop. */
export function candidatesGpuSource(): string {
  return /* wgsl */ `// kmeans++ candidate distances gpu
struct U { n: u32, L: u32, D4: u32, pad: u32, }
@group(0) @binding(0) var<uniform> u: U;
@group(0) @binding(1) var<storage, read_write> DM: array<f32>;
@group(0) @binding(2) var<storage, read> X: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> XN: array<f32>;
@group(0) @binding(4) var<storage, read> Y: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read> CNN: array<f32>;
@group(0) @binding(6) var<storage, read> CLOSEST: array<f32>;
${linearIndexWgsl(WG)}
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = linear_index(gid, nwg);
  if (i >= u.n) { return; }
  let xn = XN[i];
  let cl = CLOSEST[i];
  for (var t = 0u; t < u.L; t++) {
    var acc = 0.0;
    for (var q = 0u; q < u.D4; q++) { acc += dot(X[i * u.D4 + q], Y[t * u.D4 + q]); }
    DM[t * u.n + i] = min(cl, max(xn + CNN[t] - 2.0 * acc, 0.0));
  }
}`;
}

/**
 * WGSL: Kahan's compensated running sum, shared by blockSums and pickD2 so both see equal sums.
 * `one` is the uniform 1.0: multiplying by a value the compiler cannot see keeps it from
 * simplifying (s + y) − s to y and the compensation to 0 (shader compilers treat float ops as
 * reassociable: Mesa's NIR does, and measured sums were then plain f32 sums); × 1.0 is exact, so
 * the arithmetic is Kahan's.
 */
const KAHAN = /* wgsl */ `
fn kahan_add(s: ptr<function, f32>, c: ptr<function, f32>, v: f32, one: f32) {
  let y = v - *c;
  let t = (*s + y) * one;
  *c = ((t - *s) * one) - y;
  *s = t;
}`;

/** WGSL: P[t, b] = Σ of block b of row t of M [L, n] (Kahan, rows in order). */
export function blockSumsSource(): string {
  return /* wgsl */ `// kmeans++ block sums
struct U { n: u32, L: u32, nb: u32, one: f32, }
@group(0) @binding(0) var<uniform> u: U;
@group(0) @binding(1) var<storage, read_write> P: array<f32>;
@group(0) @binding(2) var<storage, read> M: array<f32>;
${KAHAN}
${linearIndexWgsl(WG)}
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let e = linear_index(gid, nwg);
  if (e >= u.L * u.nb) { return; }
  let t = e / u.nb;
  let b = e - t * u.nb;
  let i0 = b * ${D2_BLOCK}u;
  let i1 = min(i0 + ${D2_BLOCK}u, u.n);
  var s = 0.0;
  var c = 0.0;
  for (var i = i0; i < i1; i++) { kahan_add(&s, &c, M[t * u.n + i], u.one); }
  P[e] = s;
}`;
}

/**
 * WGSL: D² draws. Draw t = (block, residual, chunk); for the draws of this chunk, the first row of
 * the block whose running Kahan sum of D² exceeds the residual (rows with D² = 0 never; if rounding
 * leaves none, the block's last row with D² > 0, else its first row). IDS[t] = chunk start + row.
 */
export function pickD2Source(): string {
  return /* wgsl */ `// kmeans++ D2 pick
struct U { n: u32, L: u32, chunk: u32, start: u32, one: f32, pad0: u32, pad1: u32, pad2: u32, }
struct Draw { block: u32, residual: f32, chunk: u32, pad: u32, }
@group(0) @binding(0) var<uniform> u: U;
@group(0) @binding(1) var<storage, read_write> IDS: array<u32>;
@group(0) @binding(2) var<storage, read> CLOSEST: array<f32>;
@group(0) @binding(3) var<storage, read> DRAWS: array<Draw>;
${KAHAN}
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let t = gid.x;
  if (t >= u.L) { return; }
  let d = DRAWS[t];
  if (d.chunk != u.chunk) { return; }
  let i0 = d.block * ${D2_BLOCK}u;
  let i1 = min(i0 + ${D2_BLOCK}u, u.n);
  var s = 0.0;
  var c = 0.0;
  var pick = i0;
  var last = i0;
  var found = false;
  for (var i = i0; i < i1; i++) {
    let v = CLOSEST[i];
    kahan_add(&s, &c, v, u.one);
    if (v > 0.0) {
      last = i;
      if (!found && s > d.residual) { pick = i; found = true; }
    }
  }
  if (!found) { pick = last; }
  IDS[t] = u.start + pick;
}`;
}

/** WGSL: CAND[t] = X[IDS[t] − start] and CNN[t] = XN[…] for the ids that fall in this chunk. */
export function gatherRowsSource(): string {
  return /* wgsl */ `// kmeans gather rows
struct U { D4: u32, L: u32, start: u32, rows: u32, }
@group(0) @binding(0) var<uniform> u: U;
@group(0) @binding(1) var<storage, read_write> CAND: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> CNN: array<f32>;
@group(0) @binding(3) var<storage, read> IDS: array<u32>;
@group(0) @binding(4) var<storage, read> X: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read> XN: array<f32>;
${linearIndexWgsl(WG)}
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let e = linear_index(gid, nwg);
  if (e >= u.L * u.D4) { return; }
  let t = e / u.D4;
  let q = e - t * u.D4;
  let id = IDS[t];
  if (id < u.start || id - u.start >= u.rows) { return; }
  let r = id - u.start;
  CAND[e] = X[r * u.D4 + q];
  if (q == 0u) { CNN[t] = XN[r]; }
}`;
}

/**
 * WGSL: compensated per-cluster sums. Invocation (c, q) adds, in CSR order, vec4 q of every member
 * row of cluster c into the pair (HI, LO) with TwoSum (see the file header).
 */
export function accumulateSource(): string {
  return /* wgsl */ `// kmeans centroid sums (TwoSum pairs)
struct U { k: u32, D4: u32, one: f32, pad: u32, }
@group(0) @binding(0) var<uniform> u: U;
@group(0) @binding(1) var<storage, read_write> HI: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> LO: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> X: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> OFF: array<u32>;
@group(0) @binding(5) var<storage, read> MEM: array<u32>;
${linearIndexWgsl(WG)}
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let e = linear_index(gid, nwg);
  if (e >= u.k * u.D4) { return; }
  let c = e / u.D4;
  let q = e - c * u.D4;
  var hi = HI[e];
  var lo = LO[e];
  let end = OFF[c + 1u];
  for (var i = OFF[c]; i < end; i++) {
    let x = X[MEM[i] * u.D4 + q];
    // TwoSum; the products by the uniform 1.0 hide the identities (hi + x) − hi = x and
    // s − (s − hi) = hi from the compiler, which would otherwise fold the error term away.
    let s = (hi + x) * u.one;
    let bp = (s - hi) * u.one;
    let ap = (s - bp) * u.one;
    lo += (hi - ap) + (x - bp);
    hi = s;
  }
  HI[e] = hi;
  LO[e] = lo;
}`;
}

// -------------------------------------------------------------------------------------------------
// Launchers

function checkRows(r: GpuRows, what: string, op: string): { n: number; D: number } {
  if (r.x.rank !== 2) throw new ShapeError(`${op}: ${what} must be [n, D], got ${fmt(r.x.shape)}`);
  const [n, D] = r.x.shape;
  if (D % 4 !== 0 || D === 0) throw new ShapeError(`${op}: ${what} rows must be zero-padded to a multiple of 4 (got D = ${D})`);
  if (r.xn.size !== n) throw new ShapeError(`${op}: ${what} norms ${fmt(r.xn.shape)} do not match ${n} rows`);
  if (!r.x.isContiguous || !r.xn.isContiguous) throw new ShapeError(`${op}: ${what} must be contiguous`);
  return { n, D };
}

function variantOf(x: Tensor, tuning: KmeansTuning): 'cpu' | 'gpu' {
  return tuning.variant ?? x.engine.device.variants;
}

function subgroupSize(x: Tensor, tuning: KmeansTuning, t: KmeansCpuTile): number {
  if (tuning.subgroups === false) return 0;
  const sg = fixedSubgroupSize(x.engine.device);
  return sg && t.TM % sg === 0 && t.W === sg ? sg : 0;
}

/**
 * Nearest centroid of every point: `idx` [n] (u32 bits: the argmin, ties to the lower index) and
 * `part` [n] = min_j (‖c_j‖² − 2 x·c_j) (f32; add ‖x‖² for the squared distance). New tensors;
 * nothing [n, k] is ever allocated. (points.xn is not read.)
 */
export function assignNearest(points: GpuRows, centroids: GpuRows, tuning: KmeansTuning = {}): { idx: Tensor; part: Tensor } {
  const op = 'assignNearest';
  const { n, D } = checkRows(points, 'points', op);
  const { n: k, D: Dc } = checkRows(centroids, 'centroids', op);
  if (Dc !== D) throw new ShapeError(`${op}: points ${fmt(points.x.shape)} and centroids ${fmt(centroids.x.shape)} differ in width`);
  if (k === 0) throw new RangeError(`${op}: no centroids`);
  const e = points.x.engine;
  const idx = e.empty([n], { label: 'kmeans_assign' });
  const part = e.empty([n], { label: 'kmeans_partial_distance' });
  if (n === 0) return { idx, part };
  const dev = e.device;
  const uniforms = new Uniforms(4).u32(n, k, D / 4, 0).bytes();
  const buffers = [idx.buffer, part.buffer, points.x.buffer, centroids.x.buffer, centroids.xn.buffer];
  if (variantOf(points.x, tuning) === 'cpu') {
    const t = tuning.tile ?? ASSIGN_CPU_TILE;
    const sg = subgroupSize(points.x, tuning, t);
    const kernel = dev.kernel(`kmeans_assign_cpu${sg ? '_sg' : ''}`, assignCpuSource(t, sg));
    dev.dispatch(kernel, { uniforms, buffers, workgroups: grid1d(n, t.TM, dev.limits.maxComputeWorkgroupsPerDimension) });
  } else {
    const kernel = dev.kernel('kmeans_assign_gpu', assignGpuSource());
    dev.dispatch(kernel, { uniforms, buffers, workgroups: grid1d(n, G.BM, dev.limits.maxComputeWorkgroupsPerDimension) });
  }
  return { idx, part };
}

/**
 * k-means++ step: for the L candidates `cand` ([L, D], L ≤ MAX_CANDIDATES; only the first L rows
 * are read), M[t, i] = min(closest_i, ‖x_i − cand_t‖²) as a new tensor [L, n].
 */
export function candidateDistances(points: GpuRows, closest: Tensor, cand: GpuRows, L: number, tuning: KmeansTuning = {}): Tensor {
  const op = 'candidateDistances';
  const { n, D } = checkRows(points, 'points', op);
  const { n: rows, D: Dc } = checkRows(cand, 'candidates', op);
  if (Dc !== D) throw new ShapeError(`${op}: points ${fmt(points.x.shape)} and candidates ${fmt(cand.x.shape)} differ in width`);
  if (!Number.isInteger(L) || L < 1 || L > Math.min(rows, MAX_CANDIDATES)) {
    throw new RangeError(`${op}: L = ${L} candidates must be in [1, ${Math.min(rows, MAX_CANDIDATES)}]`);
  }
  if (closest.size !== n) throw new ShapeError(`${op}: closest ${fmt(closest.shape)} does not match ${n} points`);
  const e = points.x.engine;
  const dm = e.empty([L, n], { label: 'kmeans_candidate_d2' });
  if (n === 0) return dm;
  const dev = e.device;
  const uniforms = new Uniforms(4).u32(n, L, D / 4, 0).bytes();
  const buffers = [dm.buffer, points.x.buffer, points.xn.buffer, cand.x.buffer, cand.xn.buffer, closest.buffer];
  const maxDim = dev.limits.maxComputeWorkgroupsPerDimension;
  if (variantOf(points.x, tuning) === 'cpu') {
    const sg = subgroupSize(points.x, tuning, D2_CPU_TILE);
    const kernel = dev.kernel(`kmeans_candidates_cpu${sg ? '_sg' : ''}`, candidatesCpuSource(sg));
    dev.dispatch(kernel, { uniforms, buffers, workgroups: grid1d(n, D2_CPU_TILE.W * D2_CPU_TILE.TN, maxDim) });
  } else {
    const kernel = dev.kernel('kmeans_candidates_gpu', candidatesGpuSource());
    dev.dispatch(kernel, { uniforms, buffers, workgroups: grid1d(n, WG, maxDim) });
  }
  return dm;
}

/** Blocks of D2_BLOCK rows in n rows. */
export function d2Blocks(n: number): number {
  return Math.ceil(n / D2_BLOCK);
}

/** P [L, nb] = per-block Kahan sums of the rows of M [L, n] (nb = d2Blocks(n)); a new tensor. */
export function blockSums(m: Tensor): Tensor {
  if (m.rank !== 2 || !m.isContiguous) throw new ShapeError(`blockSums: M must be a contiguous [L, n], got ${fmt(m.shape)}`);
  const [L, n] = m.shape;
  const nb = d2Blocks(n);
  const e = m.engine;
  const p = e.empty([L, nb], { label: 'kmeans_block_sums' });
  if (L * nb === 0) return p;
  const dev = e.device;
  dev.dispatch(dev.kernel('kmeans_block_sums', blockSumsSource()), {
    uniforms: new Uniforms(4).u32(n, L, nb).f32(1).bytes(),
    buffers: [p.buffer, m.buffer],
    workgroups: grid1d(L * nb, WG, dev.limits.maxComputeWorkgroupsPerDimension),
  });
  return p;
}

/** One D² draw: the block (within its chunk), the residual mass inside it, and the chunk. */
export interface D2Draw {
  chunk: number;
  block: number;
  residual: number;
}

/** The bytes of `draws` as the pick kernel's Draw structs (16 bytes each). */
export function packDraws(draws: readonly D2Draw[]): Uint8Array {
  const buf = new ArrayBuffer(Math.max(draws.length, 1) * 16);
  const v = new DataView(buf);
  draws.forEach((d, t) => {
    v.setUint32(16 * t, d.block, true);
    v.setFloat32(16 * t + 4, d.residual, true);
    v.setUint32(16 * t + 8, d.chunk, true);
  });
  return new Uint8Array(buf);
}

/**
 * For the draws of chunk `chunk` (packed by `packDraws` into `draws`), writes the picked global
 * row ids (chunk start + row, u32 bits) into `ids` [L]; other draws' slots are left alone.
 */
export function pickD2(closest: Tensor, draws: Tensor, L: number, chunk: number, start: number, ids: Tensor): void {
  const n = closest.size;
  if (draws.size < 4 * L || ids.size < L) throw new ShapeError(`pickD2: ${L} draws need draws [${4 * L}] and ids [${L}]`);
  const dev = closest.engine.device;
  dev.dispatch(dev.kernel('kmeans_pick_d2', pickD2Source()), {
    uniforms: new Uniforms(8).u32(n, L, chunk, start).f32(1).u32(0, 0, 0).bytes(),
    buffers: [ids.buffer, closest.buffer, draws.buffer],
    workgroups: [Math.ceil(L / WG)],
  });
}

/**
 * Copies rows `ids` (global ids, u32 bits, [L]) that fall in [start, start + n) of `points` into
 * `out.x` [≥ L, D] and their norms into `out.xn`; other slots are left alone.
 */
export function gatherRows(points: GpuRows, ids: Tensor, L: number, start: number, out: GpuRows): void {
  const { n, D } = checkRows(points, 'points', 'gatherRows');
  const { n: rows, D: Do } = checkRows(out, 'out', 'gatherRows');
  if (Do !== D || rows < L || ids.size < L) throw new ShapeError(`gatherRows: ${L} ids into ${fmt(out.x.shape)} from ${fmt(points.x.shape)}`);
  const dev = points.x.engine.device;
  dev.dispatch(dev.kernel('kmeans_gather_rows', gatherRowsSource()), {
    uniforms: new Uniforms(4).u32(D / 4, L, start, n).bytes(),
    buffers: [out.x.buffer, out.xn.buffer, ids.buffer, points.x.buffer, points.xn.buffer],
    workgroups: grid1d(L * (D / 4), WG, dev.limits.maxComputeWorkgroupsPerDimension),
  });
}

/**
 * Adds the members of each of k clusters into the TwoSum pairs hi, lo [k, D]: `offsets` [k + 1]
 * and `members` (u32 bits) are the CSR of the chunk's rows by cluster, each cluster's rows in
 * increasing order.
 */
export function accumulateCentroids(x: Tensor, offsets: Tensor, members: Tensor, hi: Tensor, lo: Tensor): void {
  if (x.rank !== 2 || x.shape[1] % 4 !== 0) throw new ShapeError(`accumulateCentroids: x must be [n, D] with D % 4 = 0, got ${fmt(x.shape)}`);
  const D = x.shape[1];
  const k = offsets.size - 1;
  if (k < 1 || hi.size !== k * D || lo.size !== k * D) {
    throw new ShapeError(`accumulateCentroids: offsets ${fmt(offsets.shape)} and sums ${fmt(hi.shape)}, ${fmt(lo.shape)} do not fit [k, ${D}]`);
  }
  const dev = x.engine.device;
  dev.dispatch(dev.kernel('kmeans_accumulate', accumulateSource()), {
    uniforms: new Uniforms(4).u32(k, D / 4).f32(1).u32(0).bytes(),
    buffers: [hi.buffer, lo.buffer, x.buffer, offsets.buffer, members.buffer],
    workgroups: grid1d(k * (D / 4), WG, dev.limits.maxComputeWorkgroupsPerDimension),
  });
}

// -------------------------------------------------------------------------------------------------
// Float64 references

/** Squared distance between row i of a [*, D] and row j of b [*, D], in float64. */
function sqDist(a: ArrayLike<number>, i: number, b: ArrayLike<number>, j: number, D: number): number {
  let s = 0;
  for (let d = 0; d < D; d++) {
    const t = a[i * D + d] - b[j * D + d];
    s += t * t;
  }
  return s;
}

/** Float64 reference of assignNearest: argmin_j ‖x_i − c_j‖² (ties: lower j) and the minimum. */
export function assignRef(x: ArrayLike<number>, c: ArrayLike<number>, D: number): { idx: Int32Array; dist: Float64Array } {
  const n = x.length / D;
  const k = c.length / D;
  const idx = new Int32Array(n);
  const dist = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    let best = Infinity;
    let at = 0;
    for (let j = 0; j < k; j++) {
      const d = sqDist(x, i, c, j, D);
      if (d < best) {
        best = d;
        at = j;
      }
    }
    idx[i] = at;
    dist[i] = best;
  }
  return { idx, dist };
}

/** Float64 reference of candidateDistances: M[t, i] = min(closest_i, ‖x_i − y_t‖²). */
export function candidateDistancesRef(x: ArrayLike<number>, closest: ArrayLike<number>, y: ArrayLike<number>, D: number): Float64Array {
  const n = x.length / D;
  const L = y.length / D;
  const m = new Float64Array(L * n);
  for (let t = 0; t < L; t++) for (let i = 0; i < n; i++) m[t * n + i] = Math.min(closest[i], sqDist(x, i, y, t, D));
  return m;
}

/** Float64 reference of blockSums. */
export function blockSumsRef(m: ArrayLike<number>, L: number, n: number): Float64Array {
  const nb = d2Blocks(n);
  const p = new Float64Array(L * nb);
  for (let t = 0; t < L; t++) for (let i = 0; i < n; i++) p[t * nb + Math.floor(i / D2_BLOCK)] += m[t * n + i];
  return p;
}

/** Float64 reference of one pickD2 draw: the first row of the block whose cumulative D² exceeds r. */
export function pickD2Ref(closest: ArrayLike<number>, block: number, residual: number): number {
  const i0 = block * D2_BLOCK;
  const i1 = Math.min(i0 + D2_BLOCK, closest.length);
  let s = 0;
  let last = i0;
  for (let i = i0; i < i1; i++) {
    if (closest[i] > 0) {
      s += closest[i];
      last = i;
      if (s > residual) return i;
    }
  }
  return last;
}

/** Float64 reference of the centroid sums: S [k, D] and the member counts. */
export function centroidSumsRef(x: ArrayLike<number>, assign: ArrayLike<number>, k: number, D: number): { sums: Float64Array; counts: Float64Array } {
  const n = x.length / D;
  const sums = new Float64Array(k * D);
  const counts = new Float64Array(k);
  for (let i = 0; i < n; i++) {
    const c = assign[i];
    counts[c]++;
    for (let d = 0; d < D; d++) sums[c * D + d] += x[i * D + d];
  }
  return { sums, counts };
}
