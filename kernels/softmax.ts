/** Softmax family (owner: softmax helper). STUB: to be replaced. */
import type { SoftmaxOptions, Tensor } from '../engine/tensor.js';
export function softmax(x: Tensor, dim: number, opts: SoftmaxOptions, log: boolean): Tensor {
  void x; void dim; void opts; void log;
  throw new Error('softmax: not implemented yet');
}
