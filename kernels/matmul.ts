/**
 * Matmul family: Y = act(A·B + bias) over the last two dims, batched over the leading dims with
 * NumPy broadcasting; its backward (`matmulBackwardRaw`); the float64 reference of both. The
 * autograd glue is engine/ops/matmul.ts.
 *
 * Math (A: [..., M, K], B: [..., K, N], Z = A·B + bias, Y = act(Z))
 *   Z[m, n] = Σ_k A[m, k]·B[k, n] + bias[n]
 *   backward, G = ∂L/∂Y:   Gz = G ⊙ act'(Z)        (relu: [Z > 0] = [Y > 0]; gelu: Φ(Z) + Z·φ(Z))
 *                          ∂L/∂A = Gz·Bᵀ,  ∂L/∂B = Aᵀ·Gz,  ∂L/∂bias[n] = Σ_rows Gz[..., n]
 *   A broadcast batch dim receives the sum of its gradients (`sumTo`).
 *
 * Layout invariants
 * - Operands are read IN PLACE when the last two dims have strides (ld, 1) ("N", row-major) or
 *   (1, ld) ("T", a transposed view such as `w.transpose()`), with any ld and element offset. The
 *   transposition is a compile-time flag (4 combinations), ld/offsets/batch strides are uniforms.
 *   Any other layout of the last two dims is copied with `dense()` first.
 * - Batch dims (≤ MAX_BATCH after broadcasting) are decomposed from workgroup_id.z with per-operand
 *   strides in the uniform block; stride 0 is a broadcast. When B has no batch (the linear layer),
 *   A's batch dims are folded into its rows (one 2-D matmul of (batch·M) rows) whenever A's layout
 *   allows it; the output Y is always a new contiguous [..., M, N] tensor.
 * - Shapes never enter the WGSL: one pipeline per (variant, tile, transA, transB, vec4 flags,
 *   bias, activation, saveZ).
 * - Nothing is read out of bounds: row and column indices are clamped to the last valid one for
 *   the loads (the extra lanes compute garbage that is never stored), K tails use scalar steps,
 *   and vec4 views of an operand are only used when every address they form is aligned and the
 *   vec4 dimension is a multiple of 4 (otherwise the scalar-load kernel of the same tile runs).
 *
 * Variants (`dev.variants`)
 * - 'cpu' (lavapipe, SwiftShader): register-blocked, no workgroup memory and no barriers. A
 *   workgroup is W = 8 invocations in a row along N; each invocation accumulates a TM×TN = 16×4
 *   block with K unrolled by 4, taking the 4 products of a k-step as acc += (p0 + p1) + (p2 + p3)
 *   (this order is part of the numerics). B is read as vec4 along N (along K when transposed). A's
 *   16×4 block of a k-step is the same for every lane: with the `subgroups` feature and a fixed
 *   subgroup size the subgroup loads it cooperatively and `subgroupBroadcast`s the pieces,
 *   otherwise every invocation loads it itself (the same kernel otherwise).
 * - 'gpu': a 64×64 output tile per workgroup of 16×16 invocations (4×4 outputs each), A and B
 *   staged in padded workgroup-memory tiles of BK = 16, two barriers per K step.
 * Why these shapes, and the variants that lost: bench/lab/kernel-notes.md, bench/lab/matmul-variants.md.
 *
 * Fused epilogue and what is saved: bias and activation are applied in the output write. When
 * gradients will be recorded and the activation is GELU, the kernel also writes the pre-activation
 * Z (a second output of the same dispatch), which the backward needs for GELU'(Z); ReLU' is read
 * from Y itself (Y > 0 ⇔ Z > 0), so nothing extra is saved. Without gradients only Y is written.
 */
import { Uniforms } from '../engine/device.js';
import { broadcastShapes, broadcastStrides, contiguousStrides, fmt, type Shape, ShapeError } from '../engine/shape.js';
import type { Tensor } from '../engine/tensor.js';
import { bind, fixedSubgroupSize, memoSource } from './common.js';
import { halfNames, halfStorage, halfSuffix } from './f16.js';
import { binaryRaw, dense, denseAligned, MATH_WGSL, release, UNARY } from './elementwise.js';
import { sumTo } from './reduce.js';

export type Activation = 'none' | 'relu' | 'gelu';

/** Options of the matmul op (engine/ops/matmul.ts). */
export interface MatmulOptions {
  /** Added to every row: shape [N]. */
  bias?: Tensor | null;
  /** Applied after the bias, fused into the output write. */
  activation?: Activation;
}

/** Batch dims the kernels decompose (after broadcasting); more must be merged by the caller. */
export const MAX_BATCH = 4;

/** Register tile of the 'cpu' kernel: TM rows × TN columns per invocation, W invocations per workgroup. */
export interface CpuTile {
  /** Rows per invocation, shared by the workgroup (a multiple of 4, and of the subgroup size for sharing A). */
  TM: number;
  /** Columns per invocation (1, 2, 4 or 8: a multiple of 4 enables vec4 loads of B along N). */
  TN: number;
  /** Invocations per workgroup, all along N. */
  W: number;
  /**
   * Order of the multiply-adds of one 4-k step (kernel lab): 'kr' k outer, then rows and columns;
   * 'rk' per accumulator a chain of 4 fma; 'tree' per accumulator acc += (p0 + p1) + (p2 + p3).
   */
  order?: 'kr' | 'rk' | 'tree';
}

/** The measured winner on lavapipe (bench/lab/matmul-variants.md, variant 8). */
export const CPU_TILE: CpuTile = { TM: 16, TN: 4, W: 8, order: 'tree' };

/** Tile of the 'gpu' kernel (fixed): 64×64 outputs per 16×16 workgroup, BK = 16. */
const G = { BM: 64, BN: 64, BK: 16, T: 16, R: 4, PAD: 4 } as const;

/** What changes the code of a matmul kernel (everything else is a uniform). */
export interface MatmulKernelKey {
  /** A is read as A[k·ld + m] (a transposed view) instead of A[m·ld + k]. */
  transA: boolean;
  /** B is read as B[n·ld + k] instead of B[k·ld + n]. */
  transB: boolean;
  /** A is bound as vec4 (cpu only): along K when !transA, along M when transA. */
  vecA: boolean;
  /** B is bound as vec4 (cpu only): along N when !transB, along K when transB. */
  vecB: boolean;
  bias: boolean;
  act: Activation;
  /** Also write the pre-activation Z (for the GELU backward). */
  saveZ: boolean;
}

// -------------------------------------------------------------------------------------------------
// WGSL

function uniformStruct(): string {
  const b = (p: string) => Array.from({ length: MAX_BATCH }, (_, i) => `${p}${i}: u32,`).join(' ');
  return `struct U { M: u32, N: u32, K: u32, lda: u32, ldb: u32, offA: u32, offB: u32, zbase: u32,
  ${b('bd')} ${b('sa')} ${b('sb')} }`;
}

function bindings(key: MatmulKernelKey, aType: string, bType: string): string {
  let i = 1;
  const lines = [`@group(0) @binding(0) var<uniform> u: U;`, `@group(0) @binding(${i++}) var<storage, read_write> Y: array<f32>;`];
  if (key.saveZ) lines.push(`@group(0) @binding(${i++}) var<storage, read_write> Z: array<f32>;`);
  lines.push(`@group(0) @binding(${i++}) var<storage, read> A: array<${aType}>;`);
  lines.push(`@group(0) @binding(${i++}) var<storage, read> B: array<${bType}>;`);
  if (key.bias) lines.push(`@group(0) @binding(${i++}) var<storage, read> BIAS: array<f32>;`);
  return lines.join('\n');
}

/** WGSL: batch index → per-operand offsets `oa`, `ob` and the output offset `ybase`. */
function batchPrologue(): string {
  const steps = Array.from({ length: MAX_BATCH }, (_, k) => {
    const d = MAX_BATCH - 1 - k;
    return `{ let c = rem % u.bd${d}; rem = rem / u.bd${d}; oa += c * u.sa${d}; ob += c * u.sb${d}; }`;
  }).join('\n  ');
  return `let M = u.M; let N = u.N; let K = u.K;
  var rem = wg.z + u.zbase;
  let ybase = rem * M * N;
  var oa = u.offA; var ob = u.offB;
  ${steps}`;
}

/** WGSL: the epilogue for one output element `v` at (row expr, col expr). */
function storeElement(key: MatmulKernelKey, v: string, idx: string, col: string): string {
  const act = key.act === 'relu' ? 'max(v, 0.0)' : key.act === 'gelu' ? 'gelu(v)' : 'v';
  return `{ var v = ${v};${key.bias ? ` v += BIAS[${col}];` : ''}${key.saveZ ? ` Z[${idx}] = v;` : ''} Y[${idx}] = ${act}; }`;
}

const C4 = ['x', 'y', 'z', 'w'];

/**
 * WGSL of the 'cpu' kernel: register-blocked, barrier-free (see the file header). Pure function
 * of the key, the tile and `sg`: the subgroup size when A is shared through subgroupBroadcast
 * (0: every invocation loads its own copy of A's rows).
 */
export function cpuKernelSource(key: MatmulKernelKey, tile: CpuTile, sg = 0): string {
  const { TM, TN, W } = tile;
  if (TM % 4 !== 0 && key.vecA && key.transA) throw new Error('matmul: vec4 A along M needs TM % 4 == 0');
  if (TN % 4 !== 0 && key.vecB && !key.transB) throw new Error('matmul: vec4 B along N needs TN % 4 == 0');
  if (sg && (TM % sg !== 0 || W % sg !== 0)) throw new Error(`matmul: subgroup sharing needs TM and W multiples of ${sg}`);
  const rows = [...Array(TM).keys()];
  const cols = [...Array(TN).keys()];
  const aMode = key.transA ? (key.vecA ? 'Tv' : 'Ts') : key.vecA ? 'Nv' : 'Ns';
  const L: string[] = [];
  // Per-row (uniform) and per-column (per-invocation) base addresses, clamped so every load is in range.
  if (aMode === 'Tv') {
    for (let r4 = 0; r4 < TM / 4; r4++) L.push(`let pa${r4} = (oa + min(m0 + ${4 * r4}u, M - 4u)) >> 2u;`);
  } else {
    for (const r of rows) {
      const row = `min(m0 + ${r}u, M - 1u)`;
      if (key.transA) L.push(`let pa${r} = oa + ${row};`);
      else if (key.vecA) L.push(`let pa${r} = (oa + ${row} * u.lda) >> 2u;`);
      else L.push(`let pa${r} = oa + ${row} * u.lda;`);
    }
  }
  // Subgroup sharing: A's TM×4 block of one k-step is cut into `pieces` (a vec4 or a scalar each);
  // lane l of the subgroup loads pieces l, l + sg, ... and subgroupBroadcast hands them to all lanes.
  const pieces = aMode === 'Nv' || aMode === 'Tv' ? TM : 4 * TM;
  if (sg) {
    for (let q = 0; q < pieces / sg; q++) {
      const p = `(sl + ${sg * q}u)`;
      if (aMode === 'Nv') L.push(`let sa${q} = (oa + min(m0 + ${p}, M - 1u) * u.lda) >> 2u;`);
      else if (aMode === 'Tv') L.push(`let skk${q} = ${p} / ${TM / 4}u; let sa${q} = (oa + min(m0 + 4u * (${p} % ${TM / 4}u), M - 4u)) >> 2u;`);
      else if (aMode === 'Ns') L.push(`let sa${q} = oa + min(m0 + ${p} / 4u, M - 1u) * u.lda + ${p} % 4u;`);
      else L.push(`let sa${q} = oa + min(m0 + ${p} % ${TM}u, M - 1u) + (${p} / ${TM}u) * u.lda;`);
    }
  }
  /** Piece index and vec4 component of a(r, kk) in the subgroup scheme. */
  const piece = (r: number, kk: number): [number, string] =>
    aMode === 'Nv' ? [r, `.${C4[kk]}`] : aMode === 'Tv' ? [kk * (TM / 4) + (r >> 2), `.${C4[r & 3]}`] : aMode === 'Ns' ? [4 * r + kk, ''] : [kk * TM + r, ''];
  if (!key.transB && key.vecB) {
    for (let c4 = 0; c4 < TN / 4; c4++) L.push(`let pb${c4} = (ob + min(n0 + ${4 * c4}u, N - 4u)) >> 2u;`);
  } else {
    for (const c of cols) {
      const col = `min(n0 + ${c}u, N - 1u)`;
      if (!key.transB) L.push(`let pb${c} = ob + ${col};`);
      else if (key.vecB) L.push(`let pb${c} = (ob + ${col} * u.ldb) >> 2u;`);
      else L.push(`let pb${c} = ob + ${col} * u.ldb;`);
    }
  }
  for (const r of rows) L.push(TN === 1 ? `var acc${r} = 0.0;` : `var acc${r}: array<f32, ${TN}>;`);
  const accRef = (r: number, c: number) => (TN === 1 ? `acc${r}` : `acc${r}[${c}]`);

  /** Statements for the k-steps k+0 .. k+nk-1 (nk = 4 in the main loop, 1 in the tail). */
  const step = (nk: number): string => {
    const S: string[] = [];
    const ks = [...Array(nk).keys()];
    // A values a(r, kk).
    const a: string[][] = rows.map(() => []);
    if (sg && nk === 4) {
      for (let q = 0; q < pieces / sg; q++) {
        if (aMode === 'Nv') S.push(`let ap${q} = A[sa${q} + (k >> 2u)];`);
        else if (aMode === 'Tv') S.push(`let ap${q} = A[sa${q} + (((k + skk${q}) * u.lda) >> 2u)];`);
        else if (aMode === 'Ns') S.push(`let ap${q} = A[sa${q} + k];`);
        else S.push(`let ap${q} = A[sa${q} + k * u.lda];`);
      }
      for (let p = 0; p < pieces; p++) S.push(`let ab${p} = subgroupBroadcast(ap${Math.floor(p / sg)}, ${p % sg}u);`);
      for (const r of rows)
        for (const kk of ks) {
          const [p, comp] = piece(r, kk);
          a[r][kk] = `ab${p}${comp}`;
        }
    } else if (aMode === 'Nv') {
      for (const r of rows) {
        S.push(`let av${r} = A[pa${r} + (k >> 2u)];`);
        for (const kk of ks) a[r][kk] = `av${r}.${C4[kk]}`;
      }
    } else if (aMode === 'Tv') {
      for (const kk of ks) {
        S.push(`let ka${kk} = ((k + ${kk}u) * u.lda) >> 2u;`);
        for (let r4 = 0; r4 < TM / 4; r4++) {
          S.push(`let av${kk}_${r4} = A[pa${r4} + ka${kk}];`);
          for (let j = 0; j < 4; j++) a[4 * r4 + j][kk] = `av${kk}_${r4}.${C4[j]}`;
        }
      }
    } else if (aMode === 'Ts') {
      for (const kk of ks) {
        S.push(`let ka${kk} = (k + ${kk}u) * u.lda;`);
        for (const r of rows) a[r][kk] = `A[pa${r} + ka${kk}]`;
      }
    } else {
      for (const r of rows) for (const kk of ks) a[r][kk] = `A[pa${r} + k + ${kk}u]`;
    }
    // B values b(kk, c): per-invocation loads (vec4 along N, or along K when B is transposed).
    const b: string[][] = ks.map(() => []);
    if (!key.transB && key.vecB) {
      for (const kk of ks) {
        S.push(`let kb${kk} = ((k + ${kk}u) * u.ldb) >> 2u;`);
        for (let c4 = 0; c4 < TN / 4; c4++) {
          S.push(`let bv${kk}_${c4} = B[pb${c4} + kb${kk}];`);
          for (let j = 0; j < 4; j++) b[kk][4 * c4 + j] = `bv${kk}_${c4}.${C4[j]}`;
        }
      }
    } else if (key.transB && key.vecB) {
      for (const c of cols) {
        S.push(`let bv${c} = B[pb${c} + (k >> 2u)];`);
        for (const kk of ks) b[kk][c] = `bv${c}.${C4[kk]}`;
      }
    } else if (!key.transB) {
      for (const kk of ks) {
        S.push(`let kb${kk} = (k + ${kk}u) * u.ldb;`);
        for (const c of cols) {
          S.push(`let b${kk}_${c} = B[pb${c} + kb${kk}];`);
          b[kk][c] = `b${kk}_${c}`;
        }
      }
    } else {
      for (const kk of ks)
        for (const c of cols) {
          S.push(`let b${kk}_${c} = B[pb${c} + k + ${kk}u];`);
          b[kk][c] = `b${kk}_${c}`;
        }
    }
    const order = tile.order ?? 'kr';
    if (order === 'kr' || nk === 1) {
      for (const kk of ks) for (const r of rows) for (const c of cols) S.push(`${accRef(r, c)} = fma(${a[r][kk]}, ${b[kk][c]}, ${accRef(r, c)});`);
    } else {
      for (const r of rows) {
        for (const c of cols) {
          const p = ks.map((kk) => `${a[r][kk]} * ${b[kk][c]}`);
          S.push(
            order === 'tree'
              ? `${accRef(r, c)} += (${p[0]} + ${p[1]}) + (${p[2]} + ${p[3]});`
              : `${accRef(r, c)} = ${ks.reduce((acc, kk) => `fma(${a[r][kk]}, ${b[kk][c]}, ${acc})`, accRef(r, c))};`,
          );
        }
      }
    }
    return S.join('\n    ');
  };
  // vec4 along K (A untransposed or B transposed) is only chosen when K % 4 == 0: no tail then.
  const kVec = (!key.transA && key.vecA) || (key.transB && key.vecB);
  const tail = kVec ? '' : `for (var k = K4; k < K; k++) {\n    ${step(1)}\n  }`;
  const store = rows
    .map(
      (r) => `if (m0 + ${r}u < M) {
    let yrow = ybase + (m0 + ${r}u) * N;
    ${cols.map((c) => `if (n0 + ${c}u < N) ${storeElement(key, accRef(r, c), `yrow + n0 + ${c}u`, `n0 + ${c}u`)}`).join('\n    ')}
  }`,
    )
    .join('\n  ');
  const aType = key.vecA ? 'vec4<f32>' : 'f32';
  const bType = key.vecB ? 'vec4<f32>' : 'f32';
  return /* wgsl */ `${sg ? 'enable subgroups;\n' : ''}// matmul cpu TM=${TM} TN=${TN} W=${W} sg=${sg}
${uniformStruct()}
${bindings(key, aType, bType)}
${key.act === 'gelu' ? MATH_WGSL : ''}
@compute @workgroup_size(${W})
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>${sg ? ', @builtin(subgroup_invocation_id) sl: u32' : ''}) {
  ${batchPrologue()}
  let m0 = wg.y * ${TM}u;
  let n0 = (wg.x * ${W}u + lid.x) * ${TN}u;
  ${L.join('\n  ')}
  let K4 = K & ~3u;
  for (var k = 0u; k < K4; k += 4u) {
    ${step(4)}
  }
  ${tail}
  ${store}
}`;
}

/**
 * WGSL of the 'gpu' kernel: 64×64 output tile, 16×16 invocations with 4×4 outputs each, A and B
 * staged through padded workgroup memory in K steps of 16. Out-of-range tile elements load as 0.
 */
export function gpuKernelSource(key: MatmulKernelKey): string {
  const { BM, BN, BK, T, R, PAD } = G;
  const per = (BM * BK) / (T * T); // tile elements loaded per invocation (A and B alike)
  // Global loads walk the operand's unit-stride dimension fastest (coalesced).
  const aIdx = key.transA
    ? `let mm = e % ${BM}u; let kk = e / ${BM}u; let gm = m0 + mm; let gk = kt + kk;
       if (gm < M && gk < K) { v = A[oa + gk * u.lda + gm]; }`
    : `let kk = e % ${BK}u; let mm = e / ${BK}u; let gm = m0 + mm; let gk = kt + kk;
       if (gm < M && gk < K) { v = A[oa + gm * u.lda + gk]; }`;
  const bIdx = key.transB
    ? `let kk = e % ${BK}u; let nn = e / ${BK}u; let gn = n0 + nn; let gk = kt + kk;
       if (gn < N && gk < K) { v = B[ob + gn * u.ldb + gk]; }`
    : `let nn = e % ${BN}u; let kk = e / ${BN}u; let gn = n0 + nn; let gk = kt + kk;
       if (gn < N && gk < K) { v = B[ob + gk * u.ldb + gn]; }`;
  const stores: string[] = [];
  for (let i = 0; i < R; i++) {
    for (let j = 0; j < R; j++) {
      stores.push(
        `if (r${i} < M && c${j} < N) ${storeElement(key, `acc[${i}].${C4[j]}`, `ybase + r${i} * N + c${j}`, `c${j}`)}`,
      );
    }
  }
  return /* wgsl */ `// matmul gpu ${BM}x${BN}x${BK}
${uniformStruct()}
${bindings(key, 'f32', 'f32')}
${key.act === 'gelu' ? MATH_WGSL : ''}
var<workgroup> As: array<array<f32, ${BM + PAD}>, ${BK}>;
var<workgroup> Bs: array<array<f32, ${BN + PAD}>, ${BK}>;
@compute @workgroup_size(${T}, ${T})
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
        @builtin(local_invocation_index) tid: u32) {
  ${batchPrologue()}
  let m0 = wg.y * ${BM}u;
  let n0 = wg.x * ${BN}u;
  var acc: array<vec4<f32>, ${R}>;
  for (var kt = 0u; kt < K; kt += ${BK}u) {
    for (var i = 0u; i < ${per}u; i++) {
      let e = tid + i * ${T * T}u;
      var v = 0.0;
      ${aIdx}
      As[kk][mm] = v;
    }
    for (var i = 0u; i < ${per}u; i++) {
      let e = tid + i * ${T * T}u;
      var v = 0.0;
      ${bIdx}
      Bs[kk][nn] = v;
    }
    workgroupBarrier();
    for (var kk = 0u; kk < ${BK}u; kk++) {
      let a = vec4<f32>(${[0, 1, 2, 3].map((i) => `As[kk][lid.y + ${i * T}u]`).join(', ')});
      let b = vec4<f32>(${[0, 1, 2, 3].map((j) => `Bs[kk][lid.x + ${j * T}u]`).join(', ')});
      ${[0, 1, 2, 3].map((i) => `acc[${i}] = fma(vec4<f32>(a.${C4[i]}), b, acc[${i}]);`).join('\n      ')}
    }
    workgroupBarrier();
  }
  ${[0, 1, 2, 3].map((i) => `let r${i} = m0 + lid.y + ${i * T}u;`).join(' ')}
  ${[0, 1, 2, 3].map((j) => `let c${j} = n0 + lid.x + ${j * T}u;`).join(' ')}
  ${stores.join('\n  ')}
}`;
}

// -------------------------------------------------------------------------------------------------
// Operand layout analysis and launch

/** How one operand's last two dims [R, C] are read: X[off + r·ld + c] (N) or X[off + c·ld + r] (T). */
interface MatrixLayout {
  trans: boolean;
  ld: number;
}

/** N or T layout of the last two dims, or null when neither stride is 1 (then `dense()` it). */
function matrixLayout(t: Tensor): MatrixLayout | null {
  const r = t.rank;
  const [R, C] = [t.shape[r - 2], t.shape[r - 1]];
  const [s0, s1] = [t.strides[r - 2], t.strides[r - 1]];
  if (s1 === 1 || C === 1) return { trans: false, ld: R === 1 ? 0 : s0 };
  if (s0 === 1 || R === 1) return { trans: true, ld: C === 1 ? 0 : s1 };
  return null;
}

/**
 * Rows of an N-layout [..., R, C] (shape, strides) when its leading dims merge with R into one row
 * index of constant stride: {rows, ld} with element (row, c) at offset + row·ld + c. Null otherwise.
 */
function mergedRows(shape: Shape, strides: Shape): { rows: number; ld: number } | null {
  const r = shape.length;
  if (strides[r - 1] !== 1 && shape[r - 1] !== 1) return null;
  let rows = 1;
  let ld = 0;
  let expect = -1; // stride the next outer non-trivial dim must have
  for (let d = r - 2; d >= 0; d--) {
    const n = shape[d];
    if (n === 1) continue;
    const s = strides[d];
    if (expect >= 0 && s !== expect) return null;
    if (expect < 0) ld = s;
    rows *= n;
    expect = s * n;
  }
  return { rows, ld };
}

/** Tuning for the kernel lab; the engine always uses the defaults. */
export interface MatmulTuning {
  cpuTile?: CpuTile;
  /** Force scalar loads even where vec4 loads would be legal. */
  noVec4?: boolean;
  /** Force the variant instead of `dev.variants`. */
  variant?: 'cpu' | 'gpu';
  /** Share A's rows through subgroupBroadcast where the adapter allows it (default true). */
  subgroups?: boolean;
}

/** The builders as the launcher calls them: each source built once (see `memoSource`). */
const cpuSource = memoSource(cpuKernelSource);
const gpuSource = memoSource(gpuKernelSource);

/** Epilogue of `matmulRaw`. */
export interface MatmulEpilogue {
  bias?: Tensor | null;
  activation?: Activation;
  /** Also return the pre-activation Z (only meaningful with an activation). */
  saveZ?: boolean;
}

const isAligned = (...v: number[]) => v.every((x) => x % 4 === 0);

/**
 * act(a·b + bias): the launcher. Returns Y (new, contiguous [...batch, M, N]) and,
 * when `saveZ` and an activation is set, the pre-activation Z of the same shape.
 */
export function matmulRaw(a: Tensor, b: Tensor, epi: MatmulEpilogue = {}, tuning: MatmulTuning = {}): { y: Tensor; z: Tensor | null } {
  if (a.engine !== b.engine) throw new Error('matmul: tensors belong to different engines');
  if (a.rank < 2 || b.rank < 2) {
    throw new ShapeError(`matmul: both operands need at least 2 dims (got ${fmt(a.shape)} @ ${fmt(b.shape)}); reshape vectors to [1, K] or [K, 1]`);
  }
  const M = a.shape[a.rank - 2];
  const K = a.shape[a.rank - 1];
  const N = b.shape[b.rank - 1];
  if (b.shape[b.rank - 2] !== K) throw new ShapeError(`matmul: inner dims differ: ${fmt(a.shape)} @ ${fmt(b.shape)}`);
  const batch = broadcastShapes(a.shape.slice(0, -2), b.shape.slice(0, -2), 'matmul batch');
  if (batch.length > MAX_BATCH) throw new ShapeError(`matmul: at most ${MAX_BATCH} batch dims are supported (got ${fmt(batch)})`);
  const act = epi.activation ?? 'none';
  const bias = epi.bias ?? null;
  if (bias) {
    if (bias.rank !== 1 || bias.shape[0] !== N) throw new ShapeError(`matmul: bias must have shape [${N}] (got ${fmt(bias.shape)})`);
  }
  const e = a.engine;
  const outShape = [...batch, M, N];
  // f16 operands are read as f16 and accumulated in f32; Y (and Z) are f16 when both operands are.
  const dtype = a.dtype === 'f16' && b.dtype === 'f16' ? 'f16' : 'f32';
  const y = e.empty(outShape, { label: 'matmul', dtype });
  const saveZ = !!epi.saveZ && act !== 'none';
  const z = saveZ ? e.empty(outShape, { label: 'matmul_z', dtype }) : null;
  if (y.size === 0) return { y, z };

  // Operands in N or T layout, read in place; anything else densified.
  const la0 = matrixLayout(a);
  const lb0 = matrixLayout(b);
  const da = la0 ? a : dense(a);
  const db = lb0 ? b : dense(b);
  const la = la0 ?? matrixLayout(da)!;
  const lb = lb0 ?? matrixLayout(db)!;
  const biasD = bias ? denseAligned(bias) : null; // an arena view: bound in place

  let sa = broadcastStrides(da.shape.slice(0, -2), da.strides.slice(0, -2), batch);
  let sb = broadcastStrides(db.shape.slice(0, -2), db.strides.slice(0, -2), batch);
  let bd = [...batch];
  let rowsM = M;
  let lda = la.ld;
  const variant = tuning.variant ?? e.device.variants;
  const tile = tuning.cpuTile ?? CPU_TILE;
  const cpu = variant === 'cpu';
  const rowsPerGroup = cpu ? tile.TM : G.BM;
  const maxDim = e.device.limits.maxComputeWorkgroupsPerDimension;
  // The linear layer: B has no batch → fold A's batch into its rows when A's layout allows it
  // (and the row blocks still fit in one grid dimension).
  if (bd.length > 0 && sb.every((s, i) => s === 0 || bd[i] === 1) && !la.trans) {
    const mr = mergedRows([...batch, M, K], [...sa, da.strides[da.rank - 2], da.strides[da.rank - 1]]);
    if (mr && Math.ceil(mr.rows / rowsPerGroup) <= maxDim) {
      rowsM = mr.rows;
      lda = mr.ld;
      bd = [];
      sa = [];
      sb = [];
    }
  }
  const nBatch = bd.reduce((p, q) => p * q, 1);
  const vecOk = cpu && !tuning.noVec4;
  const aAligned = isAligned(da.offset, lda, ...sa);
  const bAligned = isAligned(db.offset, lb.ld, ...sb);
  const key: MatmulKernelKey = {
    transA: la.trans,
    transB: lb.trans,
    vecA: vecOk && aAligned && (la.trans ? rowsM % 4 === 0 && tile.TM % 4 === 0 : K % 4 === 0),
    vecB: vecOk && bAligned && (lb.trans ? K % 4 === 0 : N % 4 === 0 && tile.TN % 4 === 0),
    bias: !!biasD,
    act,
    saveZ,
  };
  const name = `matmul_${variant}${key.transA ? 'T' : 'N'}${key.transB ? 'T' : 'N'}`;
  const sgSize = cpu && tuning.subgroups !== false ? fixedSubgroupSize(e.device) : 0;
  const sg = sgSize && tile.TM % sgSize === 0 && tile.W % sgSize === 0 ? sgSize : 0;
  const halves = halfNames({ Y: y, Z: z, A: da, B: db, BIAS: biasD });
  const source = cpu ? cpuSource(key, tile, sg) : gpuSource(key);
  const kernel = e.device.kernel(`${name}${halfSuffix(halves)}`, halfStorage(source, halves));
  const pad = (v: number[], fill: number) => [...Array(MAX_BATCH - v.length).fill(fill), ...v];
  const groupsX = cpu ? Math.ceil(N / (tile.W * tile.TN)) : Math.ceil(N / G.BN);
  const groupsY = Math.ceil(rowsM / rowsPerGroup);
  if (groupsX > maxDim || groupsY > maxDim) throw new ShapeError(`matmul: ${fmt(a.shape)} @ ${fmt(b.shape)} needs more than ${maxDim} workgroups per dimension`);
  const buffers = [y.buffer, ...(z ? [z.buffer] : []), da.buffer, db.buffer, ...(biasD ? [bind(biasD)] : [])];
  for (let z0 = 0; z0 < nBatch; z0 += maxDim) {
    const u = new Uniforms(8 + 3 * MAX_BATCH)
      .u32(rowsM, N, K, lda, lb.ld, da.offset, db.offset, z0)
      .u32(...pad(bd, 1), ...pad(sa, 0), ...pad(sb, 0));
    e.device.dispatch(kernel, { uniforms: u.bytes(), buffers, workgroups: [groupsX, groupsY, Math.min(maxDim, nBatch - z0)] });
  }
  release(da, a);
  release(db, b);
  if (bias && biasD) release(biasD, bias);
  return { y, z };
}

// -------------------------------------------------------------------------------------------------
// Backward

/** The view of `t` with its last two dims swapped (no copy; caller disposes). */
function transposedView(t: Tensor): Tensor {
  const r = t.rank;
  const shape = [...t.shape];
  const strides = [...t.strides];
  [shape[r - 2], shape[r - 1]] = [shape[r - 1], shape[r - 2]];
  [strides[r - 2], strides[r - 1]] = [strides[r - 1], strides[r - 2]];
  return t.view(shape, strides, t.offset);
}

/** Sums the (batch-broadcast) gradient `full` back to `shape`, disposing `full` when it reduces. */
function reduceTo(full: Tensor, shape: Shape): Tensor {
  if (full.shape.length === shape.length && full.shape.every((s, i) => s === shape[i])) return full;
  const r = sumTo(full, shape);
  full.dispose();
  return r;
}

/** ∂L/∂A = Gz·Bᵀ (B read transposed in place), summed over A's broadcast batch dims. */
function gradA(a: Tensor, b: Tensor, gz: Tensor): Tensor {
  const bT = transposedView(b);
  const { y } = matmulRaw(gz, bT);
  bT.dispose();
  return reduceTo(y, a.shape);
}

/**
 * ∂L/∂B = Aᵀ·Gz. When B has no batch (the linear layer), the batch sum is folded into the
 * contraction: one [K, batch·M] @ [batch·M, N] matmul instead of a batched one and a reduction.
 */
function gradB(a: Tensor, b: Tensor, gz: Tensor): Tensor {
  const bBatch = b.shape.slice(0, -2).reduce((p, q) => p * q, 1);
  const outBatch = gz.shape.slice(0, -2).reduce((p, q) => p * q, 1);
  const aBatch = a.shape.slice(0, -2).reduce((p, q) => p * q, 1);
  const [M, K, N] = [a.shape[a.rank - 2], a.shape[a.rank - 1], b.shape[b.rank - 1]];
  if (outBatch > 1 && bBatch === 1 && aBatch === outBatch) {
    let da = a;
    let mr = mergedRows(a.shape, a.strides);
    if (!mr) {
      da = dense(a);
      mr = mergedRows(da.shape, da.strides)!;
    }
    const rows = outBatch * M;
    const aT = da.view([K, rows], [1, mr.ld], da.offset); // (batch·M, K) read transposed
    const gd = dense(gz); // an upstream gradient may be a view (e.g. from a permute)
    const g2 = gd.view([rows, N], [N, 1], 0);
    const { y } = matmulRaw(aT, g2);
    aT.dispose();
    g2.dispose();
    release(gd, gz);
    release(da, a);
    const out = y.view(b.shape, contiguousStrides(b.shape), 0);
    y.dispose();
    return out;
  }
  const aT = transposedView(a);
  const { y } = matmulRaw(aT, gz);
  aT.dispose();
  return reduceTo(y, b.shape);
}

/**
 * The backward of act(a·b + bias) for the upstream gradient g: [∂L/∂a, ∂L/∂b, ∂L/∂bias], each
 * computed only where `need` asks (null otherwise). `y` is the forward output (ReLU' is read from
 * it) and `z` the pre-activation the forward saved for GELU (null otherwise).
 */
export function matmulBackwardRaw(
  a: Tensor,
  b: Tensor,
  bias: Tensor | null,
  act: Activation,
  y: Tensor,
  z: Tensor | null,
  g: Tensor,
  need: readonly [boolean, boolean, boolean],
): [Tensor | null, Tensor | null, Tensor | null] {
  // Gz = ∂L/∂Z = G ⊙ act'(Z)
  const gz = act === 'relu' ? binaryRaw('reluBackward', y, g) : act === 'gelu' ? binaryRaw('geluBackward', z!, g) : g;
  const ga = need[0] ? gradA(a, b, gz) : null;
  const gb = need[1] ? gradB(a, b, gz) : null;
  const gbias = need[2] && bias ? sumTo(gz, bias.shape) : null;
  if (gz !== g) gz.dispose();
  return [ga, gb, gbias];
}

// -------------------------------------------------------------------------------------------------
// Float64 references

/** Shapes of a reference matmul: row-major data with explicit shapes. */
export interface RefOperand {
  data: ArrayLike<number>;
  shape: Shape;
}

function refBatch(a: RefOperand, b: RefOperand) {
  const M = a.shape[a.shape.length - 2];
  const K = a.shape[a.shape.length - 1];
  const N = b.shape[b.shape.length - 1];
  const batch = broadcastShapes(a.shape.slice(0, -2), b.shape.slice(0, -2));
  const nb = batch.reduce((p, q) => p * q, 1);
  const strides = (shape: Shape) => broadcastStrides(shape.slice(0, -2), contiguousStrides(shape.slice(0, -2)), batch);
  const sa = strides(a.shape);
  const sb = strides(b.shape);
  const bstr = contiguousStrides(batch);
  /** Batch index i → (matrix index into a, matrix index into b). */
  const idx = (i: number): [number, number] => {
    let ia = 0;
    let ib = 0;
    for (let d = 0; d < batch.length; d++) {
      const c = Math.floor(i / bstr[d]) % batch[d];
      ia += c * sa[d];
      ib += c * sb[d];
    }
    return [ia, ib];
  };
  return { M, K, N, batch, nb, idx };
}

/** Float64 reference of act(a·b + bias) with batch broadcasting; also returns Z. */
export function matmulRef(
  a: RefOperand,
  b: RefOperand,
  bias: ArrayLike<number> | null = null,
  act: Activation = 'none',
): { y: Float64Array; z: Float64Array; shape: number[] } {
  const { M, K, N, batch, nb, idx } = refBatch(a, b);
  const z = new Float64Array(nb * M * N);
  for (let i = 0; i < nb; i++) {
    const [ia, ib] = idx(i);
    for (let m = 0; m < M; m++) {
      for (let n = 0; n < N; n++) {
        let s = bias ? bias[n] : 0;
        for (let k = 0; k < K; k++) s += a.data[ia * M * K + m * K + k] * b.data[ib * K * N + k * N + n];
        z[i * M * N + m * N + n] = s;
      }
    }
  }
  const f = act === 'none' ? (x: number) => x : (x: number) => UNARY[act].ref(x, 0);
  return { y: z.map(f), z, shape: [...batch, M, N] };
}

/**
 * Float64 reference VJP of `matmulRef` for the upstream gradient g: (∂L/∂a, ∂L/∂b, ∂L/∂bias),
 * with batch-broadcast gradients summed back to the operand shapes.
 */
export function matmulVjpRef(
  a: RefOperand,
  b: RefOperand,
  bias: ArrayLike<number> | null,
  act: Activation,
  g: ArrayLike<number>,
): { ga: Float64Array; gb: Float64Array; gbias: Float64Array | null } {
  const { M, K, N, nb, idx } = refBatch(a, b);
  const { z } = matmulRef(a, b, bias, act);
  const d = act === 'none' ? () => 1 : (x: number) => UNARY[act].deriv(x, 0);
  const gz = Float64Array.from(z, (v, i) => g[i] * d(v));
  const ga = new Float64Array(a.data.length);
  const gb = new Float64Array(b.data.length);
  const gbias = bias ? new Float64Array(N) : null;
  for (let i = 0; i < nb; i++) {
    const [ia, ib] = idx(i);
    for (let m = 0; m < M; m++) {
      for (let n = 0; n < N; n++) {
        const gv = gz[i * M * N + m * N + n];
        if (gbias) gbias[n] += gv;
        for (let k = 0; k < K; k++) {
          ga[ia * M * K + m * K + k] += gv * b.data[ib * K * N + k * N + n];
          gb[ib * K * N + k * N + n] += gv * a.data[ia * M * K + m * K + k];
        }
      }
    }
  }
  return { ga, gb, gbias };
}
