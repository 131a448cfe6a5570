/**
 * Fused scaled dot-product attention: out = softmax(Q·Kᵀ·scale)·V, forward and backward, without
 * ever materialising the N×N score matrix (FlashAttention-2's recurrences; rows per invocation),
 * and the float64 reference. The autograd glue is engine/ops/attention.ts.
 *
 * Shapes and layouts
 * - q [..., Nq, d], k [..., Nk, d], v [..., Nk, d] with the same leading (batch) dims: usually
 *   [B, H, N, d] or [BH, N, d]; any number of batch dims is accepted. out has q's shape: row-major,
 *   or token-major ([..., N, H, d] storage, `AttentionOutLayout`); the outputs (out, dq, dk, dv)
 *   are written through offsets and strides like the inputs, so gradients can land directly in
 *   the layout of the tensor they belong to (attentionPacked's qkv).
 * - Inputs (and the upstream gradient dO) are read IN PLACE through offsets and strides in the
 *   uniform block: the batch dims collapse into at most two levels (b, h), each with a stride
 *   (size-1 dims dropped, adjacent dims merged where every operand allows). So the views ViT makes,
 *   `qkv.reshape(B, N, 3, H, d).permute(2, 0, 3, 1, 4).slice(0, i, i + 1)`, cost no copy.
 *   An operand is copied with `dense()` only when the views need three batch levels or, with
 *   d % 4 == 0, when its rows are not vec4-aligned (d-stride ≠ 1, or an offset/stride that is not
 *   a multiple of 4). With d % 4 ≠ 0 (the scalar path) any d-stride is read in place.
 * - d is a compile-time constant (≤ MAX_HEAD_DIM): rows are held per invocation as NC chunks,
 *   vec4 when d % 4 == 0 (buffers bound as array<vec4<f32>>), f32 otherwise. Shapes and strides
 *   are uniforms: one pipeline per (kernel, d, variant, probs), never per shape.
 *
 * Math (per batch-head; rows i of Q, rows j of K and V; s = scale)
 *   forward   S_ij = s·Q_i·K_j,  m_i = max_j S_ij,  L_i = m_i + log Σ_j exp(S_ij − m_i)
 *             P_ij = exp(S_ij − L_i),  O_i = Σ_j P_ij V_j
 *   online softmax (one pass over the keys in blocks of 4, one rescale of A per block):
 *             m' = max(m, max_block S),  c = exp(m − m'),  ℓ' = c·ℓ + Σ_block exp(S_j − m'),
 *             A' = c·A + Σ_block exp(S_j − m')·V_j;   finally O_i = A/ℓ, L_i = m + log ℓ.
 *   backward  (dO = upstream gradient; P recomputed from the saved L as exp(S_ij − L_i))
 *             D_i   = Σ_e dO_ie·O_ie                (= Σ_j P_ij·(dO_i·V_j))
 *             dS_ij = P_ij·(dO_i·V_j − D_i)         (the softmax Jacobian applied to dP = dO·Vᵀ)
 *             dQ_i = s·Σ_j dS_ij·K_j,   dK_j = s·Σ_i dS_ij·Q_i,   dV_j = Σ_i P_ij·dO_i
 *
 * Kernels (barrier-free, no workgroup memory, no atomics; every row's sums run in one invocation)
 * - attention_fwd: per query row, one pass over the keys with the online softmax; writes O_i and
 *   L_i. With returnProbs, a second pass over the keys (L_i now known) writes P_i.
 * - attention_bwd_dq: per query row: D_i, then one pass over the keys → dQ_i; writes D for dK/dV.
 * - attention_bwd_dkv: per key row, one pass over the query rows → dK_j and dV_j.
 * Launch (AttentionConsts.packed): either workgroup id y (and z past 65 535) is the batch-head and x
 * the block of rows, so all invocations of a workgroup read the same K/V (or Q/dO) chunk at the same
 * time, from a workgroup-uniform address; or, packed, the invocations number (batch-head, block)
 * pairs in one flat range, so no lane idles when a batch-head has few rows (N = 5 or 17).
 * Keys (queries in dK/dV) go 4 at a time, the tail block clamped to the last row and masked.
 *
 * Variants (AttentionConsts)
 * - 'cpu' (lavapipe, SwiftShader): each invocation owns several rows (forward 4, dQ 2, dK/dV 2) so
 *   each broadcast K/V chunk feeds several rows; the loops over the d-chunks take their trip count
 *   from the uniform block (they stay loops); workgroups of 16.
 * - 'gpu': one row per invocation, workgroups of 64, chunk loops with a constant trip count that
 *   the driver unrolls into registers.
 * Measurements, compile times and the tiled GPU variant not built yet: bench/lab/kernel-notes.md.
 *
 * Saved for backward: q, k, v, out, and L. L lives in out's own storage, behind the O rows at a
 * binding-aligned offset (out is a contiguous view of the first BH·Nq·d elements), so it lives
 * exactly as long as out: nothing extra to keep or dispose. D is a temporary of the backward.
 *
 * probs (returnProbs) carry NO gradient: they are an extra output for inspection (DINO's attention
 * maps); gradients flow through `out` only.
 *
 * Limits: u32 index arithmetic (each tensor, and probs, below 2³² elements); 1 ≤ d ≤ 256; Nk ≥ 1.
 */
import { type BufferBinding, Uniforms } from '../engine/device.js';
import type { Engine } from '../engine/engine.js';
import { contiguousStrides, fmt, type Shape, ShapeError } from '../engine/shape.js';
import type { Tensor } from '../engine/tensor.js';
import { grid1d } from './common.js';
import { dense, release, stridedCopy } from './elementwise.js';

/** Options of the attention ops (engine/ops/attention.ts). */
export interface AttentionOptions {
  /** Multiplies Q·Kᵀ; default 1/√(head dim). */
  scale?: number;
  /** Also return the attention probabilities softmax(Q·Kᵀ·scale) (no gradient flows through them). */
  returnProbs?: boolean;
  /**
   * The launch (AttentionConsts.packed): true packs several batch-heads per workgroup, false one
   * per workgroup row; default: always packed on the 'cpu' variant, and on 'gpu' when a
   * batch-head has fewer rows than half a workgroup (short sequences: N = 5 and 17 in the CPU
   * default config). Both give the same results; tests force each.
   */
  packed?: boolean;
}

/** Largest head dim: the accumulators of one row must fit in registers (or the spill area). */
export const MAX_HEAD_DIM = 256;
/** Most negative finite f32: the running max before the first key, and the score of masked keys. */
const NEG_BIG = '-3.402823e38';

// -------------------------------------------------------------------------------------------------
// Layout: batch dims collapsed into (b, h) with strides

/** Element strides of one operand seen as [B, H, N, d]. */
interface Strided4 {
  off: number;
  sb: number;
  sh: number;
  sn: number;
  sd: number;
}

interface Collapsed {
  B: number;
  H: number;
  views: Strided4[];
}

/**
 * Collapses the batch dims (all but the last two) of tensors with the same batch shape into at most
 * two levels (B, H) such that batch index bh = b·H + h is the row-major flat batch index. Returns
 * null when some tensor's layout needs three levels.
 */
function collapseBatch(ts: readonly Tensor[]): Collapsed | null {
  const r = ts[0].rank - 2;
  const dims = [...Array(r).keys()].filter((i) => ts[0].shape[i] !== 1);
  // Groups of consecutive batch dims that merge in every tensor: stride[a] = stride[a+1]·shape[a+1].
  const groups: number[][] = [];
  for (const a of dims) {
    const last = groups[groups.length - 1];
    const prev = last?.[last.length - 1];
    if (prev !== undefined && ts.every((t) => t.strides[prev] === t.strides[a] * t.shape[a])) last.push(a);
    else groups.push([a]);
  }
  if (groups.length > 2) return null;
  while (groups.length < 2) groups.unshift([]);
  const size = (g: number[]) => g.reduce((p, a) => p * ts[0].shape[a], 1);
  const stride = (t: Tensor, g: number[]) => (g.length ? t.strides[g[g.length - 1]] : 0);
  return {
    B: size(groups[0]),
    H: size(groups[1]),
    views: ts.map((t) => ({
      off: t.offset,
      sb: stride(t, groups[0]),
      sh: stride(t, groups[1]),
      sn: t.shape[t.rank - 2] === 1 ? 0 : t.strides[t.rank - 2],
      sd: t.shape[t.rank - 1] === 1 ? 1 : t.strides[t.rank - 1],
    })),
  };
}

/** True when every view can be read as vec4 rows: unit stride along d, offsets and strides ≡ 0 mod 4. */
function vec4Aligned(s: Strided4): boolean {
  return s.sd === 1 && [s.off, s.sb, s.sh, s.sn].every((x) => x % 4 === 0);
}

/**
 * Collapses the batch dims of the inputs together with the outputs. Inputs are copied to contiguous
 * tensors (`used`; release them with `release`) when the views need three batch levels or, with
 * d % 4 == 0, are not vec4-aligned (a unit stride along d and offsets/strides that are multiples
 * of 4). Outputs are written in place and never copied: null when they cannot be (three levels, or
 * not vec4-aligned), and then nothing is left to release.
 */
function layoutWith(ins: readonly Tensor[], outs: readonly Tensor[], d: number): { c: Collapsed; used: Tensor[] } | null {
  let used = [...ins];
  const drop = () => used.forEach((t, i) => release(t, ins[i]));
  let c = collapseBatch([...used, ...outs]);
  if (!c) {
    used = ins.map(dense);
    c = collapseBatch([...used, ...outs]);
    if (!c) return drop(), null;
  }
  if (d % 4 === 0) {
    if (!c.views.slice(ins.length).every(vec4Aligned)) return drop(), null;
    if (!c.views.slice(0, ins.length).every(vec4Aligned)) {
      const cc = c;
      used = used.map((t, i) => (vec4Aligned(cc.views[i]) ? t : t === ins[i] ? dense(t) : t));
      c = collapseBatch([...used, ...outs]);
      if (!c) return drop(), null;
    }
  }
  return { c, used };
}

/** The problem size shared by the three kernels. */
export interface Dims {
  B: number;
  H: number;
  BH: number;
  nq: number;
  nk: number;
  d: number;
  scale: number;
}

function checkShapes(q: Tensor, k: Tensor, v: Tensor): { nq: number; nk: number; d: number } {
  const all = `q ${fmt(q.shape)}, k ${fmt(k.shape)}, v ${fmt(v.shape)}`;
  if (q.rank < 3 || k.rank !== q.rank || v.rank !== q.rank) {
    throw new ShapeError(`attention: q, k, v must have one rank ≥ 3 ([B, H, N, d] or [BH, N, d]); got ${all}`);
  }
  if (q.engine !== k.engine || q.engine !== v.engine) throw new Error('attention: q, k, v belong to different engines');
  const r = q.rank;
  for (let i = 0; i < r - 2; i++) {
    if (k.shape[i] !== q.shape[i] || v.shape[i] !== q.shape[i]) {
      throw new ShapeError(`attention: the batch dims (all but the last two) of q, k, v differ: ${all}`);
    }
  }
  const d = q.shape[r - 1];
  if (k.shape[r - 1] !== d) {
    throw new ShapeError(`attention: q ${fmt(q.shape)} and k ${fmt(k.shape)} have different head dims (${d} vs ${k.shape[r - 1]})`);
  }
  if (k.shape[r - 2] !== v.shape[r - 2]) {
    throw new ShapeError(`attention: k ${fmt(k.shape)} and v ${fmt(v.shape)} have different lengths (${k.shape[r - 2]} vs ${v.shape[r - 2]})`);
  }
  if (v.shape[r - 1] !== d) {
    throw new ShapeError(`attention: v ${fmt(v.shape)} must have the head dim of q ${fmt(q.shape)} (${d})`);
  }
  if (d < 1 || d > MAX_HEAD_DIM) throw new ShapeError(`attention: head dim ${d} of q ${fmt(q.shape)} is outside 1..${MAX_HEAD_DIM}`);
  const nk = k.shape[r - 2];
  if (nk < 1) throw new ShapeError(`attention: no keys (k ${fmt(k.shape)})`);
  return { nq: q.shape[r - 2], nk, d };
}

// -------------------------------------------------------------------------------------------------
// WGSL builders (pure functions of the compile-time constants)

/** Compile-time constants of the attention kernels. */
export interface AttentionConsts {
  /** Head dim. d % 4 == 0 selects the vec4 layout (buffers bound as array<vec4<f32>>). */
  d: number;
  /** Invocations per workgroup (rows per workgroup). */
  wg: number;
  /**
   * 'gpu': loops over the d-chunks have the constant trip count d/4 (unrolled by the driver, rows
   * in registers). 'cpu': the trip count comes from the uniform block, so they stay loops (see
   * bench/lab/kernel-notes.md).
   */
  variant: 'cpu' | 'gpu';
  /** Rows per invocation (query rows in the forward and dQ, key rows in dK/dV). */
  rows: number;
  /**
   * Launch: false, one batch-head per workgroup row (id y), blocks of rows along x: every
   * invocation of a workgroup reads the same K/V (Q/dO) row at the same time. true ('packed', for
   * short sequences): invocations numbered (batch-head, block) in one flat range, so a workgroup
   * covers several batch-heads and few lanes idle when N is far below the workgroup's rows.
   */
  packed: boolean;
}

/**
 * The operands of the uniform block: inputs q, k, v, the upstream gradient g (= dO), and the
 * outputs o (written by the forward, read by the backward), dq, dk, dv, each with its own offset
 * and strides, so outputs are written in whatever layout their consumer wants (see `attentionPacked`).
 */
const OPERANDS = ['q', 'k', 'v', 'g', 'o', 'dq', 'dk', 'dv'] as const;

/** Register chunks of a row: vec4 when d % 4 == 0 (offsets/strides then in vec4 units), else f32. */
function chunks(c: AttentionConsts): { n: number; vec: boolean; ty: string; nc: string } {
  const vec = c.d % 4 === 0;
  const n = vec ? c.d / 4 : c.d;
  return { n, vec, ty: vec ? 'vec4<f32>' : 'f32', nc: c.variant === 'cpu' ? 'u.nc' : `${n}u` };
}

function header(c: AttentionConsts): string {
  const fields = OPERANDS.map((o) => `${o}_off: u32, ${o}_b: u32, ${o}_h: u32, ${o}_n: u32, ${o}_d: u32,`).join('\n  ');
  const { n, ty } = chunks(c);
  return /* wgsl */ `
// nq, nk: rows of Q and of K/V per batch-head; nh: heads (inner batch level); nbh: batch-heads;
// nc: chunks per row (= NC); nblk: row blocks per batch-head (the packed launch). <x>_{off,b,h,n,d}: offset and strides of q, k, v, dO, O, dQ, dK, dV
// in chunks.
struct U {
  nq: u32, nk: u32, nh: u32, nbh: u32,
  scale: f32, nc: u32, nblk: u32, pad1: u32,
  ${fields}
}
@group(0) @binding(0) var<uniform> u: U;
const NC: u32 = ${n}u;
alias Chunk = ${ty};
alias Row = array<Chunk, NC>;`;
}

/** A storage binding of row data: array<vec4<f32>> in the vec4 layout, else array<f32>. */
function rowBuffer(binding: number, name: string, write: boolean): string {
  return `@group(0) @binding(${binding}) var<storage, ${write ? 'read_write' : 'read'}> ${name}: array<Chunk>;`;
}

/** A storage binding of one f32 per row (L, D, P). */
function scalars(binding: number, name: string, write: boolean): string {
  return `@group(0) @binding(${binding}) var<storage, ${write ? 'read_write' : 'read'}> ${name}: array<f32>;`;
}

/** WGSL expression: chunk `c` of the strided row starting at `row` of `buf` (operand `o`). */
function at(c: AttentionConsts, buf: string, o: string, row: string): string {
  return chunks(c).vec ? `${buf}[${row} + c]` : `${buf}[${row} + c * u.${o}_d]`;
}

/** WGSL expression: the dot product of two chunks. */
function dotc(c: AttentionConsts, a: string, b: string): string {
  return chunks(c).vec ? `dot(${a}, ${b})` : `${a} * ${b}`;
}

/** `for c in 0..NC` (a loop the cpu variant keeps as a loop; see AttentionConsts.variant). */
function forChunks(c: AttentionConsts, body: string): string {
  return `for (var c = 0u; c < ${chunks(c).nc}; c++) {\n${body.trim()}\n}`;
}

/** Re-indents generated WGSL by brace depth (two spaces per level), so the source reads cleanly. */
function indent(src: string): string {
  let depth = 0;
  const out: string[] = [];
  for (const raw of src.split('\n')) {
    const line = raw.trim();
    if (line === '') continue;
    const opens = (line.match(/[{(]/g) ?? []).length;
    const closes = (line.match(/[})]/g) ?? []).length;
    const lead = /^[})]/.test(line) ? 1 : 0;
    out.push('  '.repeat(Math.max(depth - lead, 0)) + line);
    depth = Math.max(depth + opens - closes, 0);
  }
  return out.join('\n') + '\n';
}

const T4 = [0, 1, 2, 3];
const LANES = 'vec4<u32>(0u, 1u, 2u, 3u)';

/**
 * Prologue: the batch-head and the invocation's block of rows `blk` (the first row is blk·rows):
 * from the workgroup id y (uniform across the workgroup) and gid.x, or, packed, from the flat
 * invocation index (folded into x·y·z by the launch); then the batch-head's (b, h).
 */
function entry(c: AttentionConsts): string {
  const ids = c.packed
    ? `let flat = gid.x + (wid.y + wid.z * nwg.y) * nwg.x * ${c.wg}u;
  let bh = flat / u.nblk;
  let blk = flat % u.nblk;`
    : `let bh = wid.y + wid.z * nwg.y;
  let blk = gid.x;`;
  return /* wgsl */ `@compute @workgroup_size(${c.wg})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  ${ids}
  if (bh >= u.nbh) { return; }
  let b = bh / u.nh;
  let h = bh % u.nh;`;
}

/** Row base of operand `o` for batch-head (b, h). */
const base = (o: string) => `u.${o}_off + b * u.${o}_b + h * u.${o}_h`;

/** `let <name>t = <base> + min(<i0> + t, <n> − 1)·<stride>` for the 4 rows of a block (clamped). */
function blockRows(name: string, baseExpr: string, i0: string, n: string, stride: string): string {
  return T4.map((t) => `let ${name}${t} = ${baseExpr} + min(${i0} + ${t}u, ${n} - 1u) * ${stride};`).join('\n    ');
}

/** vec4 of a per-row expression over the 4 rows of a block. */
const vec4Of = (f: (t: number) => string) => `vec4<f32>(${T4.map(f).join(', ')})`;

/** One line per row r of an invocation's block of `c.rows` rows. */
function perRow(c: AttentionConsts, f: (r: number) => string, sep = '\n    '): string {
  return Array.from({ length: c.rows }, (_, r) => f(r)).join(sep);
}

/**
 * Forward: one invocation per `rows` query rows; online softmax over blocks of 4 keys.
 * Bindings: O (rows, rw), L (rw), [P (rw) when probs], Q, K, V.
 */
export function forwardSource(c: AttentionConsts, probs: boolean): string {
  const nb = probs ? 4 : 3;
  const R = c.rows;
  return indent(/* wgsl */ `${header(c)}
${rowBuffer(1, 'O', true)}
${scalars(2, 'L', true)}
${probs ? scalars(3, 'P', true) : ''}
${rowBuffer(nb, 'Q', false)}
${rowBuffer(nb + 1, 'K', false)}
${rowBuffer(nb + 2, 'V', false)}
${entry(c)}
  let i0 = blk * ${R}u;
  let kbase = ${base('k')};
  let vbase = ${base('v')};
  // Rows past nq compute on row nq − 1 and skip the writes (no early return: lanes stay in step).
  ${perRow(c, (r) => `let qrow${r} = ${base('q')} + min(i0 + ${r}u, u.nq - 1u) * u.q_n;`, '\n  ')}
  // The query rows, pre-multiplied by the scale (S_ij = (s·Q_i)·K_j), and the accumulators A.
  ${perRow(c, (r) => `var q${r}: Row;\n  var a${r}: Row;\n  var m${r}: f32 = ${NEG_BIG};\n  var l${r}: f32 = 0.0;`, '\n  ')}
  ${forChunks(c, perRow(c, (r) => `q${r}[c] = ${at(c, 'Q', 'q', `qrow${r}`)} * u.scale;\na${r}[c] = Chunk(0.0);`, '\n'))}
  for (var j0 = 0u; j0 < u.nk; j0 += 4u) {
    // Keys j0..j0+3 (clamped to nk − 1; the clamped duplicates are masked below).
    ${blockRows('kr', 'kbase', 'j0', 'u.nk', 'u.k_n')}
    ${blockRows('vr', 'vbase', 'j0', 'u.nk', 'u.v_n')}
    let valid = vec4<u32>(j0) + ${LANES} < vec4<u32>(u.nk);
    ${perRow(c, (r) => `var s${r} = vec4<f32>(0.0);`)}
    ${forChunks(c, `${T4.map((t) => `let k${t} = ${at(c, 'K', 'k', `kr${t}`)};`).join('\n')}\n${perRow(c, (r) => `s${r} += ${vec4Of((t) => dotc(c, `q${r}[c]`, `k${t}`))};`, '\n')}`)}
    ${perRow(
      c,
      (r) => `s${r} = select(vec4<f32>(${NEG_BIG}), s${r}, valid);
    let mn${r} = max(m${r}, max(max(s${r}.x, s${r}.y), max(s${r}.z, s${r}.w)));
    let corr${r} = exp(m${r} - mn${r});
    let p${r} = exp(s${r} - vec4<f32>(mn${r}));
    l${r} = l${r} * corr${r} + ((p${r}.x + p${r}.y) + (p${r}.z + p${r}.w));
    m${r} = mn${r};`,
    )}
    ${forChunks(c, `${T4.map((t) => `let v${t} = ${at(c, 'V', 'v', `vr${t}`)};`).join('\n')}\n${perRow(c, (r) => `a${r}[c] = a${r}[c] * corr${r} + ((p${r}.x * v0 + p${r}.y * v1) + (p${r}.z * v2 + p${r}.w * v3));`, '\n')}`)}
  }
  ${perRow(
    c,
    (r) => `if (i0 + ${r}u < u.nq) {
    let row = bh * u.nq + i0 + ${r}u;
    let orow = ${base('o')} + (i0 + ${r}u) * u.o_n;
    let inv = 1.0 / l${r};
    let lse = m${r} + log(l${r});
    ${forChunks(c, `${at(c, 'O', 'o', 'orow')} = a${r}[c] * inv;`)}
    L[row] = lse;${
      probs
        ? `
    // P_ij = exp(S_ij − L_i), recomputed now that L_i is known.
    for (var j = 0u; j < u.nk; j++) {
      let kr = kbase + j * u.k_n;
      var s = 0.0;
      ${forChunks(c, `s += ${dotc(c, `q${r}[c]`, at(c, 'K', 'k', 'kr'))};`)}
      P[row * u.nk + j] = exp(s - lse);
    }`
        : ''
    }
  }`,
    '\n  ',
  )}
}`);
}

/**
 * Backward, query side: one invocation per `rows` query rows, blocks of 4 keys. D_i = dO_i·O_i,
 * then dQ_i = s·Σ_j P_ij (dO_i·V_j − D_i) K_j. Bindings: dQ (rows, rw), Dv (rw), Q, K, V, G (= dO),
 * O, L.
 */
export function backwardDqSource(c: AttentionConsts): string {
  const R = c.rows;
  return indent(/* wgsl */ `${header(c)}
${rowBuffer(1, 'dQ', true)}
${scalars(2, 'Dv', true)}
${rowBuffer(3, 'Q', false)}
${rowBuffer(4, 'K', false)}
${rowBuffer(5, 'V', false)}
${rowBuffer(6, 'G', false)}
${rowBuffer(7, 'O', false)}
${scalars(8, 'L', false)}
${entry(c)}
  let i0 = blk * ${R}u;
  let kbase = ${base('k')};
  let vbase = ${base('v')};
  ${perRow(
    c,
    (r) => `let iq${r} = min(i0 + ${r}u, u.nq - 1u);
  let row${r} = bh * u.nq + iq${r};
  let qrow${r} = ${base('q')} + iq${r} * u.q_n;
  let grow${r} = ${base('g')} + iq${r} * u.g_n;
  let orow${r} = ${base('o')} + iq${r} * u.o_n;
  var q${r}: Row;
  var g${r}: Row;
  var a${r}: Row;
  var D${r} = 0.0;`,
    '\n  ',
  )}
  ${forChunks(c, perRow(c, (r) => `q${r}[c] = ${at(c, 'Q', 'q', `qrow${r}`)} * u.scale;\ng${r}[c] = ${at(c, 'G', 'g', `grow${r}`)};\na${r}[c] = Chunk(0.0);\nD${r} += ${dotc(c, `g${r}[c]`, at(c, 'O', 'o', `orow${r}`))};`, '\n'))}
  ${perRow(c, (r) => `let L${r} = L[row${r}];`, '\n  ')}
  for (var j0 = 0u; j0 < u.nk; j0 += 4u) {
    ${blockRows('kr', 'kbase', 'j0', 'u.nk', 'u.k_n')}
    ${blockRows('vr', 'vbase', 'j0', 'u.nk', 'u.v_n')}
    let valid = vec4<u32>(j0) + ${LANES} < vec4<u32>(u.nk);
    ${perRow(c, (r) => `var s${r} = vec4<f32>(0.0);\n    var dp${r} = vec4<f32>(0.0);`)}
    ${forChunks(
      c,
      `${T4.map((t) => `let k${t} = ${at(c, 'K', 'k', `kr${t}`)};\nlet v${t} = ${at(c, 'V', 'v', `vr${t}`)};`).join('\n')}
${perRow(c, (r) => `s${r} += ${vec4Of((t) => dotc(c, `q${r}[c]`, `k${t}`))};\ndp${r} += ${vec4Of((t) => dotc(c, `g${r}[c]`, `v${t}`))};`, '\n')}`,
    )}
    ${perRow(c, (r) => `let ds${r} = select(vec4<f32>(0.0), exp(s${r} - vec4<f32>(L${r})), valid) * (dp${r} - vec4<f32>(D${r}));`)}
    ${forChunks(
      c,
      `${T4.map((t) => `let k${t} = ${at(c, 'K', 'k', `kr${t}`)};`).join('\n')}
${perRow(c, (r) => `a${r}[c] += (ds${r}.x * k0 + ds${r}.y * k1) + (ds${r}.z * k2 + ds${r}.w * k3);`, '\n')}`,
    )}
  }
  ${perRow(
    c,
    (r) => `if (i0 + ${r}u < u.nq) {
    let dqrow = ${base('dq')} + iq${r} * u.dq_n;
    ${forChunks(c, `${at(c, 'dQ', 'dq', 'dqrow')} = a${r}[c] * u.scale;`)}
    Dv[row${r}] = D${r};
  }`,
    '\n  ',
  )}
}`);
}

/**
 * Backward, key side: one invocation per `rows` key rows, blocks of 4 query rows:
 * dV_j = Σ_i P_ij dO_i, dK_j = s·Σ_i P_ij (dO_i·V_j − D_i) Q_i.
 * Bindings: dK, dV (rows, rw) — or, with `sharedKV`, one binding dKV holding both (dK and dV are
 * then views of one buffer, e.g. ViT's packed qkv gradient, where two writable bindings of the
 * same buffer would alias) — then Q, K, V, G (= dO), L, Dv.
 */
export function backwardDkvSource(c: AttentionConsts, sharedKV = false): string {
  const R = c.rows;
  const first = sharedKV ? 2 : 3;
  const dkBuf = sharedKV ? 'dKV' : 'dK';
  const dvBuf = sharedKV ? 'dKV' : 'dV';
  return indent(/* wgsl */ `${header(c)}
${sharedKV ? rowBuffer(1, 'dKV', true) : `${rowBuffer(1, 'dK', true)}\n${rowBuffer(2, 'dV', true)}`}
${rowBuffer(first, 'Q', false)}
${rowBuffer(first + 1, 'K', false)}
${rowBuffer(first + 2, 'V', false)}
${rowBuffer(first + 3, 'G', false)}
${scalars(first + 4, 'L', false)}
${scalars(first + 5, 'Dv', false)}
${entry(c)}
  let j0 = blk * ${R}u;
  let qbase = ${base('q')};
  let gbase = ${base('g')};
  let rbase = bh * u.nq;
  // The key rows, pre-multiplied by the scale (S_ij = Q_i·(s·K_j)), the value rows, dK and dV.
  ${perRow(
    c,
    (r) => `let krow${r} = ${base('k')} + min(j0 + ${r}u, u.nk - 1u) * u.k_n;
  let vrow${r} = ${base('v')} + min(j0 + ${r}u, u.nk - 1u) * u.v_n;
  var k${r}: Row;
  var v${r}: Row;
  var dk${r}: Row;
  var dv${r}: Row;`,
    '\n  ',
  )}
  ${forChunks(c, perRow(c, (r) => `k${r}[c] = ${at(c, 'K', 'k', `krow${r}`)} * u.scale;\nv${r}[c] = ${at(c, 'V', 'v', `vrow${r}`)};\ndk${r}[c] = Chunk(0.0);\ndv${r}[c] = Chunk(0.0);`, '\n'))}
  for (var i0 = 0u; i0 < u.nq; i0 += 4u) {
    // Query rows i0..i0+3 (clamped to nq − 1; the duplicates are masked below).
    ${blockRows('qr', 'qbase', 'i0', 'u.nq', 'u.q_n')}
    ${blockRows('gr', 'gbase', 'i0', 'u.nq', 'u.g_n')}
    let it = rbase + min(vec4<u32>(i0) + ${LANES}, vec4<u32>(u.nq - 1u));
    let valid = vec4<u32>(i0) + ${LANES} < vec4<u32>(u.nq);
    let Li = ${vec4Of((t) => `L[it.${'xyzw'[t]}]`)};
    let Di = ${vec4Of((t) => `Dv[it.${'xyzw'[t]}]`)};
    ${perRow(c, (r) => `var s${r} = vec4<f32>(0.0);\n    var dp${r} = vec4<f32>(0.0);`)}
    ${forChunks(
      c,
      `${T4.map((t) => `let q${t} = ${at(c, 'Q', 'q', `qr${t}`)};\nlet g${t} = ${at(c, 'G', 'g', `gr${t}`)};`).join('\n')}
${perRow(c, (r) => `s${r} += ${vec4Of((t) => dotc(c, `q${t}`, `k${r}[c]`))};\ndp${r} += ${vec4Of((t) => dotc(c, `g${t}`, `v${r}[c]`))};`, '\n')}`,
    )}
    ${perRow(c, (r) => `let p${r} = select(vec4<f32>(0.0), exp(s${r} - Li), valid);\n    let ds${r} = p${r} * (dp${r} - Di);`)}
    ${forChunks(
      c,
      `${T4.map((t) => `let q${t} = ${at(c, 'Q', 'q', `qr${t}`)};\nlet g${t} = ${at(c, 'G', 'g', `gr${t}`)};`).join('\n')}
${perRow(c, (r) => `dv${r}[c] += (p${r}.x * g0 + p${r}.y * g1) + (p${r}.z * g2 + p${r}.w * g3);\ndk${r}[c] += (ds${r}.x * q0 + ds${r}.y * q1) + (ds${r}.z * q2 + ds${r}.w * q3);`, '\n')}`,
    )}
  }
  ${perRow(
    c,
    (r) => `if (j0 + ${r}u < u.nk) {
    let dkrow = ${base('dk')} + (j0 + ${r}u) * u.dk_n;
    let dvrow = ${base('dv')} + (j0 + ${r}u) * u.dv_n;
    ${forChunks(c, `${at(c, dkBuf, 'dk', 'dkrow')} = dk${r}[c] * u.scale;\n${at(c, dvBuf, 'dv', 'dvrow')} = dv${r}[c];`)}
  }`,
    '\n  ',
  )}
}`);
}

// -------------------------------------------------------------------------------------------------
// Launch

/**
 * Workgroups for `n` rows per batch-head × BH batch-heads in blocks of c.rows: blocks along x and
 * BH along y (folded into y·z past 65 535), or, packed, BH·blocks invocations in one flat range.
 */
function grid(c: AttentionConsts, n: number, BH: number): [number, number, number] {
  const blocks = Math.ceil(n / c.rows);
  if (c.packed) return grid1d(BH * blocks, c.wg);
  const z = Math.ceil(BH / 65535);
  return [Math.ceil(blocks / c.wg), Math.ceil(BH / z), z];
}

/** The uniform block for a kernel of constants `c` over n rows per batch-head; offsets and strides divided by 4 in the vec4 layout. Absent operands are zero. */
function uniforms(dm: Dims, c: AttentionConsts, n: number, views: Partial<Record<(typeof OPERANDS)[number], Strided4>>): ArrayBuffer {
  const div = dm.d % 4 === 0 ? 4 : 1;
  const u = new Uniforms(8 + 5 * OPERANDS.length).u32(dm.nq, dm.nk, dm.H, dm.BH).f32(dm.scale).u32(dm.d / div, Math.ceil(n / c.rows), 0);
  for (const o of OPERANDS) {
    const s = views[o] ?? { off: 0, sb: 0, sh: 0, sn: 0, sd: 0 };
    u.u32(s.off / div, s.sb / div, s.sh / div, s.sn / div, s.sd);
  }
  return u.bytes();
}

/** The views of a collapsed layout by operand name (`names[i]` is the name of view i). */
function named(c: Collapsed, names: readonly (typeof OPERANDS)[number][]): Partial<Record<(typeof OPERANDS)[number], Strided4>> {
  return Object.fromEntries(names.map((n, i) => [n, c.views[i]]));
}

/**
 * Rows per invocation of the cpu variant: each broadcast K/V (Q/dO) chunk then feeds that many
 * rows. The fastest measured on lavapipe per kernel, bounded by LLVM's compile time, which grows
 * with the rows (bench/lab/kernel-notes.md).
 */
const CPU_ROWS = { fwd: 4, dq: 2, dkv: 2 } as const;

/**
 * Compile-time constants of one kernel on this engine's variant, for n rows per batch-head (query
 * rows, key rows in dK/dV); `packed` forces the launch (see AttentionOptions.packed).
 */
function consts(e: Engine, d: number, kernel: keyof typeof CPU_ROWS, n: number, packed?: boolean): AttentionConsts {
  const variant = e.device.variants;
  // 'cpu': packed at every length (lavapipe measured it faster even at N = 197, bench/lab/kernel-notes.md);
  // 'gpu': packed only for short sequences, where a per-batch-head workgroup would be mostly idle.
  if (variant === 'cpu') return { d, wg: 16, variant, rows: CPU_ROWS[kernel], packed: packed ?? true };
  return { d, wg: 64, variant, rows: 1, packed: packed ?? Math.ceil(n / 1) < 32 };
}

/**
 * Where L sits behind the O rows in out's storage: the first element offset at or after BH·Nq·d
 * that is aligned for a storage binding (so O and L bind as two non-overlapping ranges).
 */
function tailOffset(e: Engine, n: number): number {
  const align = e.device.limits.minStorageBufferOffsetAlignment / 4;
  return Math.ceil(n / align) * align;
}

/**
 * Layout of the forward's output: 'contiguous' (q's shape, row-major), or 'tokens' for q of shape
 * [..., B, H, N, d]: stored as [..., B, N, H, d] and viewed as q's shape, so that the usual next
 * step, out.transpose(-3, -2).reshape(..., B, N, H·d) (merging the heads back into channels), is a
 * free view instead of a copy.
 */
export type AttentionOutLayout = 'contiguous' | 'tokens';

/** Strides of `shape` ([..., H, N, d]) in `layout` (see AttentionOutLayout). */
function outStrides(shape: Shape, layout: AttentionOutLayout): number[] {
  const r = shape.length;
  if (layout === 'contiguous' || r < 4) return contiguousStrides(shape);
  const stored = [...shape.slice(0, r - 3), shape[r - 2], shape[r - 3], shape[r - 1]];
  const cs = contiguousStrides(stored);
  return [...cs.slice(0, r - 3), cs[r - 2], cs[r - 3], cs[r - 1]];
}

/** A tensor of `shape` with `strides` (a permutation of a dense block) whose storage holds `total` ≥ numel(shape) elements. */
function withTail(e: Engine, shape: Shape, strides: Shape, total: number, label: string): Tensor {
  const big = e.empty([total], { label });
  const t = big.view(shape, strides, 0, label);
  big.dispose();
  return t;
}

/** Binding of `n` f32 elements of `t`'s storage from element `start`. */
function range(t: Tensor, start: number, n: number): BufferBinding {
  return { buffer: t.buffer, offset: start * 4, size: Math.max(n, 1) * 4 };
}

/** What the forward returns: out (L in its storage, at `lOff`), probs when asked, and the problem size. */
export interface AttentionForward {
  out: Tensor;
  probs?: Tensor;
  /** Element offset of L behind the O rows in out's storage. */
  lOff: number;
  dm: Dims;
  /** The launch asked for (AttentionOptions.packed), which the backward follows. */
  packed?: boolean;
}

/**
 * softmax(q·kᵀ·scale)·v, fused (see the file header): out has q's shape, in `outLayout`; probs
 * [..., Nq, Nk] (with `returnProbs`). q, k, v are read in place where their layout allows.
 */
export function attentionForwardRaw(q: Tensor, k: Tensor, v: Tensor, opts: AttentionOptions, outLayout: AttentionOutLayout = 'contiguous'): AttentionForward {
  const { nq, nk, d } = checkShapes(q, k, v);
  const scale = opts.scale ?? 1 / Math.sqrt(d);
  if (!Number.isFinite(scale)) throw new Error(`attention: scale must be finite (got ${scale})`);
  const e = q.engine;
  const n = q.size;
  // Checked before anything is allocated: the probabilities are one binding of BH·Nq·Nk floats.
  const probsBytes = (n / d) * nk * 4;
  const limit = e.device.limits.maxStorageBufferBindingSize;
  if (opts.returnProbs && probsBytes > limit) {
    throw new RangeError(
      `attention: the probabilities of ${n / d / Math.max(nq, 1)} heads × ${nq}×${nk} would take ${probsBytes} bytes, over the device's ${limit}-byte storage binding limit; ` +
        'ask only for the rows you need (the ViT gives the CLS row with `forwardFeatures(x, { attention: "cls" })`) or use a smaller input',
    );
  }
  const lOff = tailOffset(e, n);
  let out = withTail(e, q.shape, outStrides(q.shape, outLayout), lOff + n / d, 'attention');
  let lay = layoutWith([q, k, v], [out], d);
  if (!lay) {
    // The token layout does not collapse with these inputs: write row-major instead.
    out.dispose();
    out = withTail(e, q.shape, contiguousStrides(q.shape), lOff + n / d, 'attention');
    lay = layoutWith([q, k, v], [out], d)!;
  }
  const { c, used } = lay;
  const dm: Dims = { B: c.B, H: c.H, BH: c.B * c.H, nq, nk, d, scale };
  const nrows = dm.BH * nq;
  const probs = opts.returnProbs ? e.empty([...q.shape.slice(0, -2), nq, nk], { label: 'attention_probs' }) : undefined;
  if (nrows > 0) {
    const kc = consts(e, d, 'fwd', nq, opts.packed);
    const dev = e.device;
    dev.dispatch(dev.kernel(`attention_fwd_d${d}${kc.packed ? '_packed' : ''}`, forwardSource(kc, !!probs)), {
      uniforms: uniforms(dm, kc, nq, named(c, ['q', 'k', 'v', 'o'])),
      buffers: [range(out, 0, nrows * d), range(out, lOff, nrows), ...(probs ? [probs.buffer] : []), ...used.map((t) => t.buffer)],
      workgroups: grid(kc, nq, dm.BH),
    });
  }
  used.forEach((t, i) => release(t, [q, k, v][i]));
  return { out, probs, lOff, dm, packed: opts.packed };
}

/**
 * The three gradients [dq, dk, dv] from the upstream gradient g, each only where `need` asks (null
 * otherwise; dq's kernel runs regardless, since it also writes the D that dK/dV read). `fwd` is
 * the forward's result; the (b, h) split is redone with g, whose layout may group the batch dims
 * differently (the flat batch-head index, and so O and L, are the same).
 *
 * `into`: views (shaped like q, k, v) to write the gradients into, in place, instead of new
 * contiguous tensors (attentionPacked's single qkv gradient); they are then what is returned. dk
 * and dv may be views of one buffer (one writable binding then holds both).
 */
export function attentionBackwardRaw(
  q: Tensor,
  k: Tensor,
  v: Tensor,
  fwd: AttentionForward,
  g: Tensor,
  need: readonly [boolean, boolean, boolean],
  into?: readonly [Tensor, Tensor, Tensor],
): [Tensor | null, Tensor | null, Tensor | null] {
  const { out, lOff } = fwd;
  const e = q.engine;
  const dev = e.device;
  const kv = need[1] || need[2];
  const fresh = (): Tensor[] => [
    e.empty(q.shape, { label: 'attention_dq' }),
    ...(kv ? [e.empty(k.shape, { label: 'attention_dk' }), e.empty(v.shape, { label: 'attention_dv' })] : []),
  ];
  const ins = [q, k, v, g, out];
  let outs = into ? (kv ? [...into] : [into[0]]) : fresh();
  let lay = layoutWith(ins, outs, fwd.dm.d);
  let copyBack = false;
  if (!lay) {
    // The given views cannot be written in place with these inputs: compute into new tensors and copy.
    outs = fresh();
    copyBack = true;
    lay = layoutWith(ins, outs, fwd.dm.d)!;
  }
  const { c, used } = lay;
  const [dq, dk = null, dv = null] = outs;
  const dm: Dims = { ...fwd.dm, B: c.B, H: c.H };
  const nrows = dm.BH * dm.nq;
  const cq = consts(e, dm.d, 'dq', dm.nq, fwd.packed);
  const ckv = consts(e, dm.d, 'dkv', dm.nk, fwd.packed);
  const views = named(c, ['q', 'k', 'v', 'g', 'o', 'dq', ...(kv ? (['dk', 'dv'] as const) : [])]);
  const [qb, kb, vb, gb] = used.map((t) => t.buffer);
  const O = used[4] === out ? range(out, 0, nrows * dm.d) : used[4].buffer;
  const L = range(out, lOff, nrows);
  const D = e.empty([Math.max(nrows, 1)], { label: 'attention_D' });
  if (nrows > 0) {
    dev.dispatch(dev.kernel(`attention_bwd_dq_d${dm.d}${cq.packed ? '_packed' : ''}`, backwardDqSource(cq)), {
      uniforms: uniforms(dm, cq, dm.nq, views),
      buffers: [dq.buffer, D.buffer, qb, kb, vb, gb, O, L],
      workgroups: grid(cq, dm.nq, dm.BH),
    });
  }
  // With nq = 0 the loop over queries is empty and dK = dV = 0 are written all the same.
  if (dk && dv && dm.BH * dm.nk > 0) {
    const shared = dk.buffer === dv.buffer;
    dev.dispatch(dev.kernel(`attention_bwd_dkv_d${dm.d}${shared ? '_shared' : ''}${ckv.packed ? '_packed' : ''}`, backwardDkvSource(ckv, shared)), {
      uniforms: uniforms(dm, ckv, dm.nk, views),
      buffers: [...(shared ? [dk.buffer] : [dk.buffer, dv.buffer]), qb, kb, vb, gb, L, D.buffer],
      workgroups: grid(ckv, dm.nk, dm.BH),
    });
  }
  D.dispose();
  used.forEach((t, i) => release(t, ins[i]));
  const result: (Tensor | null)[] = [dq, dk, dv];
  if (copyBack && into) {
    result.forEach((t, i) => {
      if (t && need[i]) stridedCopy(into[i], t);
      t?.dispose();
    });
    return [need[0] ? into[0] : null, need[1] ? into[1] : null, need[2] ? into[2] : null];
  }
  return [0, 1, 2].map((i) => {
    const t = result[i];
    if (t && !need[i] && !into) t.dispose();
    return need[i] ? t : null;
  }) as [Tensor | null, Tensor | null, Tensor | null];
}

// -------------------------------------------------------------------------------------------------
// Float64 references (the oracle of the tests)

/** Sizes of a reference problem: rows are laid out [bh, n, d], row-major. */
export interface AttentionRefDims {
  /** Batch-heads (product of the batch dims). */
  bh: number;
  nq: number;
  nk: number;
  d: number;
}

/**
 * Float64 attention on row-major arrays q [bh, nq, d], k and v [bh, nk, d]: the scores, a
 * max-subtracted softmax and the weighted sum, computed directly (no online recurrence).
 * Returns out [bh, nq, d], probs [bh, nq, nk] and the row logsumexp L [bh, nq].
 */
export function attentionRef(
  q: ArrayLike<number>,
  k: ArrayLike<number>,
  v: ArrayLike<number>,
  dims: AttentionRefDims,
  scale = 1 / Math.sqrt(dims.d),
): { out: Float64Array; probs: Float64Array; lse: Float64Array } {
  const { bh, nq, nk, d } = dims;
  const out = new Float64Array(bh * nq * d);
  const probs = new Float64Array(bh * nq * nk);
  const lse = new Float64Array(bh * nq);
  for (let b = 0; b < bh; b++) {
    for (let i = 0; i < nq; i++) {
      const qi = (b * nq + i) * d;
      const pr = (b * nq + i) * nk;
      let m = -Infinity;
      for (let j = 0; j < nk; j++) {
        const kj = (b * nk + j) * d;
        let s = 0;
        for (let e = 0; e < d; e++) s += q[qi + e] * k[kj + e];
        probs[pr + j] = s * scale;
        m = Math.max(m, s * scale);
      }
      let z = 0;
      for (let j = 0; j < nk; j++) z += Math.exp(probs[pr + j] - m);
      lse[b * nq + i] = m + Math.log(z);
      for (let j = 0; j < nk; j++) {
        const p = Math.exp(probs[pr + j] - m) / z;
        probs[pr + j] = p;
        const vj = (b * nk + j) * d;
        for (let e = 0; e < d; e++) out[qi + e] += p * v[vj + e];
      }
    }
  }
  return { out, probs, lse };
}

/**
 * Float64 vector-Jacobian product of `attentionRef`'s out for the upstream gradient gOut
 * [bh, nq, d], by the textbook chain rule (deliberately not the D_i = dO_i·O_i shortcut the
 * kernels use): dP = dO·Vᵀ, dS = P ⊙ (dP − rowsum(P ⊙ dP)), dQ = s·dS·K, dK = s·dSᵀ·Q, dV = Pᵀ·dO.
 */
export function attentionVjpRef(
  q: ArrayLike<number>,
  k: ArrayLike<number>,
  v: ArrayLike<number>,
  gOut: ArrayLike<number>,
  dims: AttentionRefDims,
  scale = 1 / Math.sqrt(dims.d),
): { dq: Float64Array; dk: Float64Array; dv: Float64Array } {
  const { bh, nq, nk, d } = dims;
  const { probs } = attentionRef(q, k, v, dims, scale);
  const dq = new Float64Array(bh * nq * d);
  const dk = new Float64Array(bh * nk * d);
  const dv = new Float64Array(bh * nk * d);
  const dP = new Float64Array(nk);
  for (let b = 0; b < bh; b++) {
    for (let i = 0; i < nq; i++) {
      const qi = (b * nq + i) * d;
      const pr = (b * nq + i) * nk;
      let rs = 0;
      for (let j = 0; j < nk; j++) {
        const vj = (b * nk + j) * d;
        let s = 0;
        for (let e = 0; e < d; e++) s += gOut[qi + e] * v[vj + e];
        dP[j] = s;
        rs += probs[pr + j] * s;
      }
      for (let j = 0; j < nk; j++) {
        const p = probs[pr + j];
        const ds = p * (dP[j] - rs) * scale;
        const kj = (b * nk + j) * d;
        for (let e = 0; e < d; e++) {
          dq[qi + e] += ds * k[kj + e];
          dk[kj + e] += ds * q[qi + e];
          dv[kj + e] += p * gOut[qi + e];
        }
      }
    }
  }
  return { dq, dk, dv };
}
