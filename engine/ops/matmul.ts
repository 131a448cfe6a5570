/**
 * Matrix products with their gradient: matmul (batched, broadcast, optional fused bias and
 * activation) and the linear layer. Kernels and the backward math: kernels/matmul.ts.
 *
 * Saved for the backward: the operands and the output (the caller's tensors), and, only when a
 * gradient will be recorded and the activation is GELU, the pre-activation Z (written by the same
 * forward dispatch). ReLU' is read from the output itself (Y > 0 ⇔ Z > 0).
 */
import { record } from '../autograd.js';
import { checkTensor, type Tensor } from '../tensor.js';
import { matmulBackwardRaw, type MatmulOptions, matmulRaw } from '../../kernels/matmul.js';

export type { MatmulOptions };

/** a @ b over the last two dims, batched (broadcast) over leading ones; transposed views read in place. */
export function matmul(a: Tensor, b: Tensor, opts: MatmulOptions = {}): Tensor {
  checkTensor(a, 'matmul');
  checkTensor(b, 'matmul');
  const act = opts.activation ?? 'none';
  const bias = opts.bias ?? null;
  if (bias) checkTensor(bias, 'matmul bias');
  const needGrad = a.engine.grad.enabled && (a.requiresGrad || b.requiresGrad || !!bias?.requiresGrad);
  const { y, z } = matmulRaw(a, b, { bias, activation: act, saveZ: needGrad && act === 'gelu' });
  if (!needGrad) return y;
  return record(y, {
    name: act === 'none' ? 'matmul' : `matmul_${act}`,
    inputs: [a, b, bias],
    saved: z ? [z] : [],
    backward: (g) => matmulBackwardRaw(a, b, bias, act, y, z, g, [a.requiresGrad, b.requiresGrad, !!bias?.requiresGrad]),
  });
}

/** x @ weightᵀ + bias, the linear layer with PyTorch's weight layout [out, in]. */
export function linear(x: Tensor, weight: Tensor, bias?: Tensor | null, activation: MatmulOptions['activation'] = 'none'): Tensor {
  return matmul(x, weight.transpose(-2, -1), { bias: bias ?? null, activation });
}
