/**
 * Two functions the DINOv2 / DINOv3 backbones need that have no fused kernel yet, composed from
 * differentiable engine ops so that autograd gives their backward. Each is the one place to swap
 * in a fused forward/backward kernel pair later (one edit each); correctness first.
 *
 * silu(x) = x·σ(x), with σ(x) = ½ + ½·tanh(x/2)
 *   The tanh form, not x / (1 + e⁻ˣ): e⁻ˣ overflows to ∞ for x < −88 in float32 and the division
 *   rule then gives 0·∞ = NaN in the backward; tanh is bounded (the kernel clamps its argument to
 *   ±15, where tanh is ±1 in float32) and its derivative 1 − tanh² is too. Absolute error of σ
 *   about 3e-8 (one float32 ulp of tanh), so |silu error| ≲ 3e-8·|x|.
 *   d silu/dx = σ + x·σ(1 − σ), which the composition yields: ½·½·(1 − tanh²) = σ(1 − σ).
 *
 * applyRope(x, rope) = x⊙cos θ + rotate_half(x)⊙sin θ, rotate_half([a, b]) = [−b, a] over the last
 *   dimension (halves of d/2): DINOv3's rope_apply on q and k. The tables cover every token of
 *   the sequence; rows of the CLS / storage tokens are cos = 1, sin = 0, so those tokens pass
 *   unchanged (x·1 + y·0 = x exactly in IEEE arithmetic for finite y), which is the official
 *   "rotate the patch tokens only" without slicing the sequence.
 *   Backward (a rotation by −θ): gx = g⊙cos − rotate_half(g⊙sin), since rotate_halfᵀ =
 *   −rotate_half; the composition yields exactly that.
 */
import * as ops from '../engine/ops/index.js';
import type { Tensor } from '../engine/tensor.js';

/** SiLU (swish), x·σ(x), differentiable (see the file header). */
export function silu(x: Tensor): Tensor {
  const sigmoid = x.mul(0.5).tanh().mul(0.5).add(0.5);
  return x.mul(sigmoid);
}

/** sin θ and cos θ per token and channel: (N, d) each, broadcast over batch and heads. */
export interface RopeTables {
  sin: Tensor;
  cos: Tensor;
}

/** rotate_half over the last dimension: [a, b] → [−b, a]. */
function rotateHalf(x: Tensor): Tensor {
  const d = x.shape[x.rank - 1];
  const a = x.slice(-1, 0, d / 2);
  const b = x.slice(-1, d / 2, d);
  return ops.concat([b.neg(), a], x.rank - 1);
}

/** x⊙cos + rotate_half(x)⊙sin for x (..., N, d) and tables (N, d) (see the file header). */
export function applyRope(x: Tensor, rope: RopeTables): Tensor {
  return x.mul(rope.cos).add(rotateHalf(x).mul(rope.sin));
}
