/**
 * Gradient clipping by global norm, per sub-model, as DINOv2 does it (train.py: for each student
 * sub-model v, v.clip_grad_norm_(3.0), i.e. torch.nn.utils.clip_grad_norm_ semantics):
 *
 *   n = √(Σ_tensors ‖g‖²)  over the sub-model's parameters that have a gradient
 *   c = min(maxNorm/(n + 1e-6), 1);  g ← c·g  for each of them
 *
 * unlike DINO v1's per-tensor clipping (engine/optim.ts clipGradients). The backbone, the DINO
 * head and the iBOT head are clipped separately, each by its own global norm.
 *
 * Composed from public engine pieces, no readback: the per-tensor norms (tensorNorms, one packed
 * dispatch), their norm (totalNorm), c on the GPU as a [1] tensor (min(x, 1) = x − relu(x − 1)), and
 * one broadcast multiply per gradient, whose result replaces `.grad`. An engine kernel that scales
 * the arena's gradient segments by a per-group factor would do the last part in one dispatch per
 * chunk (see the report of the DINOv2 recipe).
 */
import { tensorNorms, totalNorm } from '../../engine/optim.js';
import type { Tensor } from '../../engine/tensor.js';

/** torch's clip_grad_norm_ epsilon. */
const CLIP_EPS = 1e-6;

/**
 * Clips the `.grad` of `params` by their global norm in place (the `.grad` tensors are replaced).
 * Returns the norm before clipping as a [1] tensor of the current scope, or null when no parameter
 * has a gradient.
 */
export function clipGradNorm(params: readonly Tensor[], maxNorm: number): Tensor | null {
  const withGrad = params.filter((p) => p.grad);
  if (withGrad.length === 0) return null;
  const e = withGrad[0].engine;
  return e.noGrad(() => {
    const norms = tensorNorms(withGrad.map((p) => p.grad));
    const total = totalNorm(norms);
    norms.dispose();
    const ratio = e.full([1], maxNorm).div(total.add(CLIP_EPS));
    const coef = ratio.sub(ratio.sub(1).relu()); // min(ratio, 1)
    for (const p of withGrad) {
      const old = p.grad!;
      p.grad = e.keep(old.mul(coef));
      old.dispose();
    }
    return total;
  });
}

/** Float64 reference: the clipped gradients and the norm before clipping. */
export function clipGradNormRef(grads: readonly ArrayLike<number>[], maxNorm: number): { norm: number; clipped: Float64Array[] } {
  let sq = 0;
  for (const g of grads) for (let i = 0; i < g.length; i++) sq += g[i] * g[i];
  const norm = Math.sqrt(sq);
  const c = Math.min(maxNorm / (norm + CLIP_EPS), 1);
  return { norm, clipped: grads.map((g) => Float64Array.from(g, (x) => x * c)) };
}
