/**
 * Fused scaled dot-product attention with its gradient (kernels and math: kernels/attention.ts),
 * on separate q, k, v or on ViT's packed qkv. The attention probabilities (`returnProbs`) are an
 * extra output without gradient. Saved for the backward: q, k, v (the caller's tensors or, for
 * the packed form, three views of qkv made here) and the output, whose storage also holds the row
 * log-sum-exp L.
 */
import { record } from '../autograd.js';
import { fmt, ShapeError } from '../shape.js';
import { checkTensor, type Tensor } from '../tensor.js';
import { type AttentionOptions, attentionBackwardRaw, attentionForwardRaw } from '../../kernels/attention.js';

export type { AttentionOptions };

/**
 * softmax(Q·Kᵀ·scale)·V for q, k, v of shape [B, H, N, d] (or [BH, N, d]).
 * Returns `{ out, probs? }`; `probs` has shape [..., N, N].
 */
export function attention(q: Tensor, k: Tensor, v: Tensor, opts: AttentionOptions = {}): { out: Tensor; probs?: Tensor } {
  checkTensor(q, 'attention');
  checkTensor(k, 'attention');
  checkTensor(v, 'attention');
  const f = attentionForwardRaw(q, k, v, opts);
  record(f.out, { name: 'attention', inputs: [q, k, v], backward: (g) => attentionBackwardRaw(q, k, v, f, g, [q.requiresGrad, k.requiresGrad, v.requiresGrad]) });
  return f.probs ? { out: f.out, probs: f.probs } : { out: f.out };
}

/**
 * Attention on a packed qkv tensor [3, ..., N, d] (any strides: ViT's permuted qkv projection):
 * the same result as `attention(qkv[0], qkv[1], qkv[2])`, with ONE gradient for qkv: dq, dk and dv
 * are copied into the three contiguous blocks of a single [3, ..., N, d] tensor, instead of three
 * zero-padded gradients (one per slice) that autograd would then add together.
 */
export function attentionPacked(qkv: Tensor, opts: AttentionOptions = {}): { out: Tensor; probs?: Tensor } {
  checkTensor(qkv, 'attentionPacked');
  if (qkv.rank < 3 || qkv.shape[0] !== 3) throw new ShapeError(`attentionPacked: qkv must be [3, ..., N, d], got ${fmt(qkv.shape)}`);
  const shape = qkv.shape.slice(1);
  const strides = qkv.strides.slice(1);
  const part = (i: number): Tensor => qkv.view(shape, strides, qkv.offset + i * qkv.strides[0], `qkv[${i}]`);
  const [q, k, v] = [part(0), part(1), part(2)];
  const f = attentionForwardRaw(q, k, v, opts);
  record(f.out, {
    name: 'attention',
    inputs: [qkv],
    saved: [q, k, v],
    backward: (g) => {
      const grads = attentionBackwardRaw(q, k, v, f, g, [true, true, true]);
      const e = qkv.engine;
      const gq = e.empty(qkv.shape, { label: 'attention_dqkv' });
      const n = q.size;
      grads.forEach((t, i) => {
        if (t) e.device.copy(t.buffer, 0, gq.buffer, i * n * 4, n * 4);
        t?.dispose();
      });
      return [gq];
    },
  });
  return f.probs ? { out: f.out, probs: f.probs } : { out: f.out };
}
