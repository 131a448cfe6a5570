/** LayerNorm / l2-normalize family (owner: norm helper). STUB: to be replaced. */
import type { Tensor } from '../engine/tensor.js';
export function layerNorm(x: Tensor, weight: Tensor | null, bias: Tensor | null, eps: number): Tensor {
  void x; void weight; void bias; void eps;
  throw new Error('layerNorm: not implemented yet');
}
export function l2Normalize(x: Tensor, eps: number): Tensor {
  void x; void eps;
  throw new Error('l2Normalize: not implemented yet');
}
