/**
 * Fused scaled dot-product attention with its gradient (kernels and math: kernels/attention.ts),
 * on separate q, k, v or on ViT's packed qkv. The attention probabilities (`returnProbs`) are an
 * extra output without gradient. Saved for the backward: q, k, v (the caller's tensors or, for
 * the packed form, three views of qkv made here) and the output, whose storage also holds the row
 * log-sum-exp L.
 */
import { record } from '../autograd.js';
import { contiguousStrides, fmt, type Shape, ShapeError } from '../shape.js';
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
 * the same values as `attention(qkv[0], qkv[1], qkv[2])`, laid out for ViT, with ONE gradient for
 * qkv instead of three zero-padded ones (one per slice) that autograd would then add together.
 *
 * Layouts (no copies on ViT's path)
 * - out [..., H, N, d] is stored token-major ([..., N, H, d], kernels/attention.ts 'tokens'), so
 *   ViT's out.transpose(1, 2).reshape(B, N, D) is a view.
 * - The qkv gradient has qkv's own strides when qkv is a permutation of a dense block (ViT's
 *   linear(x).reshape(B, N, 3, H, d).permute(2, 0, 3, 1, 4)): the kernels write dq, dk and dv
 *   straight into it, and the permute and reshape back to the linear's [B, N, 3D] are views.
 *   Otherwise it is a contiguous [3, ..., N, d].
 */
export function attentionPacked(qkv: Tensor, opts: AttentionOptions = {}): { out: Tensor; probs?: Tensor } {
  checkTensor(qkv, 'attentionPacked');
  if (qkv.rank < 3 || qkv.shape[0] !== 3) throw new ShapeError(`attentionPacked: qkv must be [3, ..., N, d], got ${fmt(qkv.shape)}`);
  const shape = qkv.shape.slice(1);
  const parts = (t: Tensor, label: string): [Tensor, Tensor, Tensor] =>
    [0, 1, 2].map((i) => t.view(shape, t.strides.slice(1), t.offset + i * t.strides[0], `${label}[${i}]`)) as [Tensor, Tensor, Tensor];
  const [q, k, v] = parts(qkv, 'qkv');
  const f = attentionForwardRaw(q, k, v, opts, 'tokens');
  record(f.out, {
    name: 'attention',
    inputs: [qkv],
    saved: [q, k, v],
    backward: (g) => {
      const e = qkv.engine;
      const layoutStrides = isDensePermutation(qkv.shape, qkv.strides) ? qkv.strides : contiguousStrides(qkv.shape);
      const storage = e.empty([qkv.size], { label: 'attention_dqkv' });
      const gq = storage.view(qkv.shape, layoutStrides, 0);
      storage.dispose();
      const into = parts(gq, 'dqkv');
      attentionBackwardRaw(q, k, v, f, g, [true, true, true], into);
      for (const t of into) t.dispose();
      return [gq];
    },
  });
  return f.probs ? { out: f.out, probs: f.probs } : { out: f.out };
}

/** True when the strides lay the shape out over a dense block of numel elements in some dimension order. */
function isDensePermutation(shape: Shape, strides: Shape): boolean {
  const dims = shape.map((n, i) => ({ n, s: strides[i] })).filter((x) => x.n !== 1);
  dims.sort((a, b) => b.s - a.s);
  let expect = 1;
  for (let i = dims.length - 1; i >= 0; i--) {
    if (dims[i].s !== expect) return false;
    expect *= dims[i].n;
  }
  return true;
}
