/**
 * Rotary position embedding (DINOv3's rope_apply) as one kernel per direction, and the float64
 * references. The autograd glue is engine/ops/rope.ts.
 *
 * Math, over the last dimension of x (d channels, h = d/2), with tables sin θ and cos θ of shape
 * (N, d) indexed by the token n (dim −2) and the channel c:
 *   forward   y_c = x_c·cos_c + r_c·sin_c,   r = rotate_half(x) = [−x_{h..d}, x_{0..h}]
 *             i.e. r_c = −x_{c+h} for c < h, x_{c−h} for c ≥ h
 *   backward  the transpose (for DINOv3's tiled tables, sin_c = sin_{c+h}, the rotation by −θ):
 *             gx_c = g_c·cos_c + g_{c+h}·sin_{c+h}   for c < h
 *             gx_c = g_c·cos_c − g_{c−h}·sin_{c−h}   for c ≥ h
 * Each output element reads its own input element and its partner c ± h; elements are independent.
 *
 * `rotated`: only the first `rotated` elements of the output (row-major over x's shape) are
 * rotated, the rest copied. The packed qkv of ViT attention, (3, B, H, N, d), is rotated with
 * rotated = ⅔ of its size: q and k turn, v passes, in the one dispatch that also makes the
 * contiguous tensor the fused attention reads (engine/ops/rope.ts `ropePacked`).
 *
 * Layout: x (and the upstream gradient) are read IN PLACE through offset and strides in the
 * uniform block (rank ≤ 6; the permuted slices of the qkv projection cost no copy); the tables
 * are contiguous (copied by `dense` otherwise); outputs are new contiguous tensors. One pipeline
 * per (direction, rank): shapes and strides are uniforms.
 */
import { Uniforms } from '../engine/device.js';
import { fmt, ShapeError } from '../engine/shape.js';
import type { Tensor } from '../engine/tensor.js';
import { grid1d, linearIndexWgsl } from './common.js';
import { dense, MAX_RANK, release } from './elementwise.js';
import { halfNames, halfStorage, halfSuffix } from './f16.js';

const WG = 256;

/** sin θ and cos θ per token and channel: (N, d) each, broadcast over the leading dims of x. */
export interface RopeTables {
  sin: Tensor;
  cos: Tensor;
}

/** WGSL of the forward (`backward` false) or backward kernel over tensors of rank `rank` (≤ 6). */
export function ropeSource(backward: boolean, rank: number): string {
  const R = MAX_RANK;
  const used = Math.max(2, Math.min(rank, R));
  const dims = Array.from({ length: R }, (_, i) => `d${i}: i32,`).join(' ');
  const strides = Array.from({ length: R }, (_, i) => `s${i}: i32,`).join(' ');
  // Output index i → the input's element offset, through the trailing `used` dims of the shape.
  const decompose = Array.from({ length: used }, (_, k) => {
    const d = R - 1 - k;
    return `{ let q = rem % u.d${d}; rem = rem / u.d${d}; ix += q * u.s${d}; }`;
  }).join('\n  ');
  // Forward: the partner's value times this channel's sin; backward: times the partner's sin.
  const body = backward
    ? `let tp = select(t - hu, t + hu, lo);
  Y[i] = X[u32(ix)] * C[u.offC + t] + select(-xp, xp, lo) * S[u.offS + tp];`
    : `Y[i] = X[u32(ix)] * C[u.offC + t] + select(xp, -xp, lo) * S[u.offS + t];`;
  return /* wgsl */ `
// n: elements; rotated: the first \`rotated\` are rotated, the rest copied; off: x's offset;
// N, D: the tables' rows and the channels; offS, offC: the tables' offsets; d/s: shape and strides.
struct U { n: u32, rotated: u32, off: i32, N: u32, D: u32, offS: u32, offC: u32, pad: u32, ${dims} ${strides} }
@group(0) @binding(0) var<uniform> u: U;
@group(0) @binding(1) var<storage, read_write> Y: array<f32>;
@group(0) @binding(2) var<storage, read> X: array<f32>;
@group(0) @binding(3) var<storage, read> S: array<f32>;
@group(0) @binding(4) var<storage, read> C: array<f32>;
${linearIndexWgsl(WG)}
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = linear_index(gid, nwg);
  if (i >= u.n) { return; }
  var rem = i32(i); var ix = u.off;
  ${decompose}
  if (i >= u.rotated) { Y[i] = X[u32(ix)]; return; }
  let c = i % u.D;
  let hu = u.D / 2u;
  let lo = c < hu;
  // The partner channel c ± h of the same token, through the channel stride.
  let xp = X[u32(ix + select(-i32(hu), i32(hu), lo) * u.s${R - 1})];
  let t = ((i / u.D) % u.N) * u.D + c;
  ${body}
}`;
}

function padTo(v: readonly number[], fillWith: number): number[] {
  return [...Array(MAX_RANK - v.length).fill(fillWith), ...v];
}

/** Checks x (..., N, d) against tables (N, d); returns N and d. */
export function checkRope(x: Tensor, t: RopeTables, op: string): { N: number; d: number } {
  if (x.rank < 2 || x.rank > MAX_RANK) throw new ShapeError(`${op}: x ${fmt(x.shape)} must have rank 2..${MAX_RANK} (..., N, d)`);
  const [N, d] = x.shape.slice(-2);
  for (const [name, tab] of [['sin', t.sin], ['cos', t.cos]] as const) {
    if (tab.engine !== x.engine) throw new Error(`${op}: the ${name} table belongs to another engine`);
    if (tab.rank !== 2 || tab.shape[0] !== N || tab.shape[1] !== d) {
      throw new ShapeError(`${op}: the ${name} table ${fmt(tab.shape)} does not match x ${fmt(x.shape)} (expected [${N}, ${d}])`);
    }
  }
  if (d % 2 !== 0) throw new ShapeError(`${op}: the last dimension of x ${fmt(x.shape)} must be even (rotate_half), got ${d}`);
  return { N, d };
}

function launch(backward: boolean, x: Tensor, t: RopeTables, rotated: number, label: string): Tensor {
  const { N, d } = checkRope(x, t, label);
  const e = x.engine;
  const out = e.empty(x.shape, { label, dtype: x.dtype });
  const n = x.size;
  if (n === 0) return out;
  const sin = dense(t.sin);
  const cos = dense(t.cos);
  const u = new Uniforms(8 + 2 * MAX_RANK)
    .u32(n, Math.min(Math.max(rotated, 0), n))
    .i32(x.offset)
    .u32(N, d, sin.offset, cos.offset, 0)
    .i32(...padTo(x.shape, 1), ...padTo(x.strides, 0));
  const dev = e.device;
  // f16 x (and y); the tables may be either dtype: all read into f32.
  const halves = halfNames({ Y: out, X: x, S: sin, C: cos });
  dev.dispatch(dev.kernel(`${backward ? 'rope_bwd' : 'rope_fwd'}${halfSuffix(halves)}`, halfStorage(ropeSource(backward, x.rank), halves)), {
    uniforms: u.bytes(),
    buffers: [out.buffer, x.buffer, sin.buffer, cos.buffer],
    workgroups: grid1d(n, WG),
  });
  release(sin, t.sin);
  release(cos, t.cos);
  return out;
}

/** y = x⊙cos + rotate_half(x)⊙sin on the first `rotated` elements (default all), x copied elsewhere. */
export function ropeForwardRaw(x: Tensor, t: RopeTables, rotated = x.size): Tensor {
  return launch(false, x, t, rotated, 'rope');
}

/** The vector-Jacobian product of {@link ropeForwardRaw} for the upstream gradient g (x's shape, any view). */
export function ropeBackwardRaw(g: Tensor, t: RopeTables, rotated = g.size): Tensor {
  return launch(true, g, t, rotated, 'rope_grad');
}

// -------------------------------------------------------------------------------------------------
// Float64 references (row-major arrays: x [A, N, d], tables [N, d])

/** Float64 forward: rotate_half in its textbook form, the first `rotated` elements rotated. */
export function ropeRef(x: ArrayLike<number>, sin: ArrayLike<number>, cos: ArrayLike<number>, N: number, d: number, rotated = x.length): Float64Array {
  const out = Float64Array.from(x);
  const h = d / 2;
  for (let i = 0; i < Math.min(rotated, x.length); i++) {
    const c = i % d;
    const t = (Math.floor(i / d) % N) * d + c;
    const r = c < h ? -x[i + h] : x[i - h];
    out[i] = x[i] * cos[t] + r * sin[t];
  }
  return out;
}

/**
 * Float64 vector-Jacobian product of {@link ropeRef}, by accumulating every output's two partial
 * derivatives into the inputs (deliberately not the closed form the kernel uses).
 */
export function ropeVjpRef(g: ArrayLike<number>, sin: ArrayLike<number>, cos: ArrayLike<number>, N: number, d: number, rotated = g.length): Float64Array {
  const gx = new Float64Array(g.length);
  const h = d / 2;
  for (let i = 0; i < g.length; i++) {
    if (i >= rotated) {
      gx[i] += g[i];
      continue;
    }
    const c = i % d;
    const t = (Math.floor(i / d) % N) * d + c;
    gx[i] += g[i] * cos[t]; // ∂y_i/∂x_i = cos
    if (c < h) gx[i + h] -= g[i] * sin[t]; // ∂y_i/∂x_{i+h} = −sin
    else gx[i - h] += g[i] * sin[t]; // ∂y_i/∂x_{i−h} = sin
  }
  return gx;
}
