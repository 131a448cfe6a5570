/**
 * Normalisations over the last dimension with their gradients: LayerNorm (optional affine weight
 * and bias) and L2 normalisation. Kernels and math: kernels/layernorm.ts.
 *
 * Saved for the backward
 *   layerNorm:   x, weight (the caller's) and the row statistics μ, 1/√(σ² + eps) ([rows] each)
 *   l2Normalize: the output y (the caller's) and the row norms ([rows])
 */
import { record } from '../autograd.js';
import { fmt, ShapeError } from '../shape.js';
import { checkTensor, type Tensor } from '../tensor.js';
import {
  l2NormalizeBackwardRaw,
  l2NormalizeForwardRaw,
  layerNormBackwardRaw,
  layerNormForwardRaw,
  layerNormParamGradRaw,
} from '../../kernels/layernorm.js';

/** (x − μ)/√(σ² + eps) · weight + bias over the last dimension; weight and bias ([D]) are optional. */
export function layerNorm(x: Tensor, weight: Tensor | null, bias: Tensor | null, eps = 1e-5): Tensor {
  const op = 'layerNorm';
  checkTensor(x, op);
  if (x.rank < 1) throw new ShapeError(`${op}: x ${fmt(x.shape)} needs at least one dimension`);
  checkEps(op, eps);
  if (weight) checkParam(x, weight, 'weight', op);
  if (bias) checkParam(x, bias, 'bias', op);
  const { y, mean, rstd } = layerNormForwardRaw(x, weight, bias, eps);
  return record(y, {
    name: op,
    inputs: [x, weight, bias],
    saved: [mean, rstd],
    backward: (g) => {
      const dx = x.requiresGrad ? layerNormBackwardRaw(x, weight, mean, rstd, g) : null;
      let dw: Tensor | null = null;
      let db: Tensor | null = null;
      if (weight?.requiresGrad || bias?.requiresGrad) {
        [dw, db] = layerNormParamGradRaw(x, mean, rstd, g);
        if (!weight?.requiresGrad) {
          dw.dispose();
          dw = null;
        }
        if (!bias?.requiresGrad) {
          db.dispose();
          db = null;
        }
      }
      return [dx, dw, db];
    },
  });
}

/** x / max(‖x‖₂, eps) over the last dimension (as torch.nn.functional.normalize). */
export function l2Normalize(x: Tensor, eps = 1e-12): Tensor {
  const op = 'l2Normalize';
  checkTensor(x, op);
  if (x.rank < 1) throw new ShapeError(`${op}: x ${fmt(x.shape)} needs at least one dimension`);
  checkEps(op, eps);
  const { y, norm } = l2NormalizeForwardRaw(x, eps);
  return record(y, { name: op, inputs: [x], saved: [norm], backward: (g) => [l2NormalizeBackwardRaw(y, norm, g, eps)] });
}

function checkParam(x: Tensor, p: Tensor, what: string, op: string): void {
  checkTensor(p, `${op} ${what}`);
  const D = x.shape[x.rank - 1];
  if (p.rank !== 1 || p.shape[0] !== D) {
    throw new ShapeError(`${op}: ${what} ${fmt(p.shape)} does not match the last dimension of x ${fmt(x.shape)} (expected [${D}])`);
  }
}

function checkEps(op: string, eps: number): void {
  if (typeof eps !== 'number' || !Number.isFinite(eps) || eps < 0) throw new RangeError(`${op}: eps must be a finite number ≥ 0, got ${eps}`);
}
