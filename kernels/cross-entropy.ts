/** Cross-entropy family (owner: softmax helper). STUB: to be replaced. */
import type { CrossEntropyOptions } from '../engine/ops.js';
import type { Tensor } from '../engine/tensor.js';
export function softCrossEntropy(target: Tensor, logits: Tensor, opts: CrossEntropyOptions): Tensor {
  void target; void logits; void opts;
  throw new Error('softCrossEntropy: not implemented yet');
}
