/**
 * The KoLeo regulariser (Sablayrolles et al. 2018) as DINOv2 applies it (dinov2/loss/koleo_loss.py),
 * on the student's global-crop CLS backbone outputs, one crop at a time (ssl_meta_arch.py: the sum
 * over `student_cls_tokens.chunk(2)`, so two crops of one image are never each other's neighbour).
 *
 *   x̂_i   = x_i / max(‖x_i‖, ε)                                  F.normalize(eps=1e-8), float32
 *   nn(i) = argmax_j x̂_i·x̂_j with the diagonal set to −1        (pairwise_NNs_inner)
 *   d_i   = ‖x̂_i − x̂_nn(i) + ε‖₂                                PairwiseDistance(2, eps=1e-8): ε is
 *                                                                 added to every difference element
 *   L     = −(1/n) Σ_i log(d_i + ε)                               ε = 1e-8
 *
 * The neighbour index is not differentiated (argmax); the gradient flows through both x̂_i and
 * x̂_nn(i). With δ_i = x̂_i − x̂_nn(i) + ε and a_i = −1/(n·d_i·(d_i + ε)):
 *   ∂L/∂x̂_i += a_i·δ_i,   ∂L/∂x̂_nn(i) −= a_i·δ_i,   ∂L/∂x = (G − x̂(x̂·G))/‖x‖ (‖x‖ > ε), G/ε otherwise.
 *
 * Duplicate rows (the same image twice in a batch) give δ = ε·1, d = ε·√D, a term of
 * −log(ε(√D + 1)) ≈ 18.4 − log(√D + 1): large and finite. Between two duplicates that are each
 * other's neighbour the two gradient contributions cancel exactly. (The "inf" of dinov2#143 is an
 * fp16 effect; this runs in float32.)
 *
 * Ties in the argmax go to the lowest index (the engine's argmax, as torch.max on the CPU). A single
 * row has only itself (its dot is −1): d = ε·√D, as the official code.
 *
 * The nearest-neighbour row is selected with a one-hot (n, n) matrix built on the GPU from the argmax
 * (no readback): onehot[i, j] = relu(1 − (nn(i) − j)²), exact for integer indices.
 */
import * as ops from '../../engine/ops/index.js';
import { fmt, ShapeError } from '../../engine/shape.js';
import type { Tensor } from '../../engine/tensor.js';

/** The official epsilon of the normalisation, the pairwise distance and the log. */
export const KOLEO_EPS = 1e-8;

/** The KoLeo loss of the rows of x (n, D): a scalar. */
export function koleoLoss(x: Tensor, eps = KOLEO_EPS): Tensor {
  if (x.rank !== 2) throw new ShapeError(`KoLeo: x must be (n, D), got ${fmt(x.shape)}`);
  const [n] = x.shape;
  if (n < 1) throw new ShapeError('KoLeo: no rows');
  const e = x.engine;
  const xn = x.l2Normalize(eps); // (n, D)
  const onehot = e.noGrad(() => {
    const u = xn.detach();
    const eye = new Float32Array(n * n);
    for (let i = 0; i < n; i++) eye[i * n + i] = 1;
    const I = e.tensor(eye, [n, n], { label: 'koleo-eye' });
    // dots with the diagonal replaced by −1: dots·(1 − I) − I
    const dots = ops.matmul(u, u.transpose(0, 1)).mul(ops.rsub(I, 1)).sub(I);
    const nn = dots.argmax(1).reshape(n, 1); // (n, 1) indices as f32
    const cols = e.tensor(Float32Array.from({ length: n }, (_, j) => j), [1, n], { label: 'koleo-iota' });
    const d = nn.sub(cols);
    return d.mul(d).neg().add(1).relu(); // (n, n) one-hot rows
  });
  const neighbour = ops.matmul(onehot, xn); // x̂_nn(i), differentiable through xn
  const delta = xn.sub(neighbour).add(eps);
  const dist = delta.mul(delta).sum(1).sqrt(); // (n)
  return dist.add(eps).log().mean().neg();
}

/** Float64 reference: the loss and the neighbour of each row (x row-major (n, D)). */
export function koleoRef(x: ArrayLike<number>, n: number, D: number, eps = KOLEO_EPS): { loss: number; nn: Int32Array; dist: Float64Array } {
  const xn = normalizeRowsRef(x, n, D, eps);
  const nn = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    let best = -Infinity;
    for (let j = 0; j < n; j++) {
      let dot = -1;
      if (j !== i) {
        dot = 0;
        for (let k = 0; k < D; k++) dot += xn[i * D + k] * xn[j * D + k];
      }
      if (dot > best) {
        best = dot;
        nn[i] = j;
      }
    }
  }
  const dist = new Float64Array(n);
  let loss = 0;
  for (let i = 0; i < n; i++) {
    let s = 0;
    for (let k = 0; k < D; k++) s += (xn[i * D + k] - xn[nn[i] * D + k] + eps) ** 2;
    dist[i] = Math.sqrt(s);
    loss -= Math.log(dist[i] + eps) / n;
  }
  return { loss, nn, dist };
}

/** Float64 gradient ∂L/∂x of the reference, for the given neighbours (see the header). */
export function koleoVjpRef(x: ArrayLike<number>, n: number, D: number, nn: ArrayLike<number>, eps = KOLEO_EPS): Float64Array {
  const xn = normalizeRowsRef(x, n, D, eps);
  const G = new Float64Array(n * D);
  for (let i = 0; i < n; i++) {
    const j = nn[i];
    let s = 0;
    for (let k = 0; k < D; k++) s += (xn[i * D + k] - xn[j * D + k] + eps) ** 2;
    const d = Math.sqrt(s);
    const a = -1 / (n * d * (d + eps));
    for (let k = 0; k < D; k++) {
      const delta = xn[i * D + k] - xn[j * D + k] + eps;
      G[i * D + k] += a * delta;
      G[j * D + k] -= a * delta;
    }
  }
  const gx = new Float64Array(n * D);
  for (let i = 0; i < n; i++) {
    let r = 0;
    for (let k = 0; k < D; k++) r += x[i * D + k] ** 2;
    r = Math.sqrt(r);
    if (r > eps) {
      let dot = 0;
      for (let k = 0; k < D; k++) dot += xn[i * D + k] * G[i * D + k];
      for (let k = 0; k < D; k++) gx[i * D + k] = (G[i * D + k] - xn[i * D + k] * dot) / r;
    } else {
      for (let k = 0; k < D; k++) gx[i * D + k] = G[i * D + k] / eps;
    }
  }
  return gx;
}

function normalizeRowsRef(x: ArrayLike<number>, n: number, D: number, eps: number): Float64Array {
  const out = new Float64Array(n * D);
  for (let i = 0; i < n; i++) {
    let s = 0;
    for (let k = 0; k < D; k++) s += x[i * D + k] ** 2;
    const inv = 1 / Math.max(Math.sqrt(s), eps);
    for (let k = 0; k < D; k++) out[i * D + k] = x[i * D + k] * inv;
  }
  return out;
}
