/**
 * Pieces every kernel family uses: launch geometry for large 1-D launches, output allocation, and
 * WGSL snippets. Kernel families import from here and from engine/ (Tensor, Uniforms); they know
 * nothing of models or training.
 */
import type { Engine } from '../engine/engine.js';
import type { Shape } from '../engine/shape.js';
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

/** A new contiguous output tensor on the engine of `like`. */
export function output(engine: Engine, shape: Shape, label: string): Tensor {
  return engine.empty(shape, { label });
}

/** A contiguous tensor with offset 0: `t` itself when it already is, else a copy (caller disposes). */
export function dense(t: Tensor): Tensor {
  return t.isContiguous ? t : t.contiguous();
}

/** Disposes `t` if it is a temporary made by `dense` from `orig`. */
export function release(t: Tensor, orig: Tensor): void {
  if (t !== orig) t.dispose();
}

/** Formats a float for WGSL source (always with a decimal point or exponent). */
export function f32Lit(x: number): string {
  if (!Number.isFinite(x)) throw new Error(`cannot embed ${x} in WGSL`);
  const s = String(x);
  return /[.eE]/.test(s) ? s : `${s}.0`;
}
