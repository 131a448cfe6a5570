/** Matmul family (owner: matmul helper). STUB: to be replaced. */
import type { MatmulOptions } from '../engine/ops.js';
import type { Tensor } from '../engine/tensor.js';
export function matmul(a: Tensor, b: Tensor, opts: MatmulOptions): Tensor {
  void a; void b; void opts;
  throw new Error('matmul: not implemented yet');
}
