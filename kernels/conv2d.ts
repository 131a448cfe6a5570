/** Conv2d family (owner: conv helper). STUB: to be replaced. */
import type { Conv2dOptions } from '../engine/ops.js';
import type { Tensor } from '../engine/tensor.js';
export function conv2d(x: Tensor, weight: Tensor, bias: Tensor | null, opts: Conv2dOptions): Tensor {
  void x; void weight; void bias; void opts;
  throw new Error('conv2d: not implemented yet');
}
