/** Attention family (owner: attention helper). STUB: to be replaced. */
import type { AttentionOptions } from '../engine/ops.js';
import type { Tensor } from '../engine/tensor.js';
export function attention(q: Tensor, k: Tensor, v: Tensor, opts: AttentionOptions): { out: Tensor; probs?: Tensor } {
  void q; void k; void v; void opts;
  throw new Error('attention: not implemented yet');
}
