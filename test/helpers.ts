/**
 * Test helpers: one engine per test file, float64 comparisons with clear messages, seeded random
 * inputs, and central finite differences for gradient checks.
 */
import { expect } from 'vitest';
import { init, type Engine, Rng, type Tensor } from '../index.js';
import { ROW_LAYOUTS, type RowLayout, type VariantPreference } from '../engine/device.js';

const engines = new Map<string, Promise<Engine>>();

/**
 * A shared engine for this test file, optionally forcing a kernel-variant family and a row-kernel
 * layout (engine/device.ts RowLayout; 'auto' is the device's per-shape choice).
 */
export function getEngine(variants: VariantPreference = 'auto', rowLayout: RowLayout | 'auto' = 'auto'): Promise<Engine> {
  const key = `${variants}/${rowLayout}`;
  let e = engines.get(key);
  if (!e) {
    e = init({ variants, rowLayout });
    engines.set(key, e);
  }
  return e;
}

/**
 * True in a browser page (test/browser/conformance.test.ts runs these files in Chromium, whose
 * WebGPU here is SwiftShader: subgroups of 4 lanes, no shader-f16).
 */
const IN_BROWSER_PAGE = typeof (globalThis as { document?: unknown }).document !== 'undefined';

/**
 * The row-kernel configurations the row-kernel tests run under: every layout forced in turn (on
 * the 'cpu' variants), then the automatic choice of each variant family. The subgroup layouts
 * need subgroups of at least 8 lanes: lavapipe, the Node/CI adapter, has them (size 8), and under
 * Node an adapter without them fails those entries (it cannot create the device), never passes
 * them silently. In a browser page (SwiftShader, 4 lanes) they are left out: the automatic
 * choices still run there, and the subgroup layouts are covered under Node.
 */
export const ROW_CONFIGS: readonly { name: string; variants: VariantPreference; rowLayout: RowLayout | 'auto' }[] = [
  ...ROW_LAYOUTS.filter((l) => !(IN_BROWSER_PAGE && l.includes('subgroup'))).map((rowLayout) => ({ name: rowLayout, variants: 'cpu' as const, rowLayout })),
  { name: 'auto (cpu)', variants: 'cpu', rowLayout: 'auto' },
  { name: 'auto (gpu)', variants: 'gpu', rowLayout: 'auto' },
];

/** Seeded standard-normal data. */
export function randn(n: number, seed: number, scale = 1): Float32Array {
  const r = new Rng(seed);
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = r.normal() * scale;
  return a;
}

/** Seeded uniform data in [lo, hi). */
export function randu(n: number, seed: number, lo = -1, hi = 1): Float32Array {
  return new Rng(seed).fillUniform(new Float32Array(n), lo, hi);
}

/**
 * Asserts |got − want| <= atol + rtol·|want| elementwise and reports the worst element.
 */
export function expectClose(got: ArrayLike<number>, want: ArrayLike<number>, rtol = 1e-5, atol = 1e-6, what = 'values'): void {
  expect(got.length, `${what}: length`).toBe(want.length);
  let worst = -1;
  let worstExcess = 0;
  for (let i = 0; i < want.length; i++) {
    const g = got[i];
    const w = want[i];
    const tol = atol + rtol * Math.abs(w);
    const err = Math.abs(g - w);
    if (!(err <= tol) && (worst < 0 || err - tol > worstExcess || Number.isNaN(err))) {
      worst = i;
      worstExcess = Number.isNaN(err) ? Infinity : err - tol;
    }
  }
  if (worst >= 0) {
    throw new Error(
      `${what}: element ${worst} is ${got[worst]}, expected ${want[worst]} (|err| ${Math.abs(got[worst] - want[worst])} > atol ${atol} + rtol ${rtol}·|want|)`,
    );
  }
}

/**
 * Central finite differences of a scalar float64 function f at x: df/dx_i ≈ (f(x+h) − f(x−h)) / 2h.
 * Use on the float64 reference to check a VJP, or on the GPU forward (in float32) with a larger h.
 */
export function finiteDiff(f: (x: Float64Array) => number, x: ArrayLike<number>, h = 1e-6): Float64Array {
  const xx = Float64Array.from(x);
  const g = new Float64Array(xx.length);
  for (let i = 0; i < xx.length; i++) {
    const v = xx[i];
    xx[i] = v + h;
    const fp = f(xx);
    xx[i] = v - h;
    const fm = f(xx);
    xx[i] = v;
    g[i] = (fp - fm) / (2 * h);
  }
  return g;
}

/** Dot product of two arrays in float64. */
export function dot(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i] * b[i];
  return s;
}

/** Reads a tensor to a Float64Array. */
export async function read(t: Tensor): Promise<Float64Array> {
  return Float64Array.from(await t.toArray());
}

/**
 * Asserts max|got − want| <= rtol · max|want|: error relative to the tensor's scale. Used for
 * gradients of deep models, where entries near zero come from cancelling sums and an elementwise
 * relative bound would measure f32 rounding, not correctness.
 */
export function expectCloseScaled(got: ArrayLike<number>, want: ArrayLike<number>, rtol: number, what = 'values'): void {
  expect(got.length, `${what}: length`).toBe(want.length);
  let scale = 0;
  let worst = 0;
  let at = -1;
  for (let i = 0; i < want.length; i++) {
    scale = Math.max(scale, Math.abs(want[i]));
    const err = Math.abs(got[i] - want[i]);
    if (!(err <= worst)) {
      worst = err;
      at = i;
    }
  }
  if (!(worst <= rtol * scale)) {
    throw new Error(`${what}: max |err| ${worst} at element ${at} (got ${got[at]}, expected ${want[at]}) exceeds ${rtol} × max|want| ${scale}`);
  }
}
