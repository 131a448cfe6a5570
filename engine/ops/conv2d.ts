/**
 * 2-D convolution and max pooling (NCHW) with their gradients. Kernels and math: kernels/conv2d.ts.
 * Saved for the backward: conv2d keeps its operands (the caller's tensors); max pooling keeps the
 * index of every window's maximum (written by the forward only when a gradient will be recorded).
 */
import { record } from '../autograd.js';
import { fmt, ShapeError } from '../shape.js';
import { checkTensor, type Tensor } from '../tensor.js';
import {
  conv2dBackwardRaw,
  conv2dForwardRaw,
  conv2dGeometry,
  type Conv2dOptions,
  maxPool2dBackwardRaw,
  maxPool2dForwardRaw,
  maxPool2dGeometry,
  type MaxPool2dOptions,
} from '../../kernels/conv2d.js';

export type { Conv2dOptions, MaxPool2dOptions };

/**
 * 2-D convolution: x [B, Cin, H, W] (NCHW), weight [Cout, Cin, kh, kw], optional bias [Cout],
 * stride and zero padding per axis (a number applies to both). Groups = 1. Returns [B, Cout, Ho, Wo].
 */
export function conv2d(x: Tensor, weight: Tensor, bias: Tensor | null = null, opts: Conv2dOptions = {}): Tensor {
  checkTensor(x, 'conv2d');
  checkTensor(weight, 'conv2d');
  if (bias) checkTensor(bias, 'conv2d');
  if (x.engine !== weight.engine || (bias && bias.engine !== x.engine)) throw new Error('conv2d: tensors belong to different engines');
  const g = conv2dGeometry(x.shape, weight.shape, opts);
  if (bias && (bias.rank !== 1 || bias.shape[0] !== g.Cout)) {
    throw new ShapeError(`conv2d: bias ${fmt(bias.shape)} must be [${g.Cout}] for weight ${fmt(weight.shape)}`);
  }
  const y = conv2dForwardRaw(x, weight, bias, g);
  return record(y, {
    name: 'conv2d',
    inputs: [x, weight, bias],
    backward: (gy) => conv2dBackwardRaw(x, weight, gy, g, [x.requiresGrad, weight.requiresGrad, !!bias?.requiresGrad]),
  });
}

/**
 * 2-D max pooling over NCHW input (ResNet: {kernel: 3, stride: 2, padding: 1}), −∞ padding. The
 * gradient goes to the (first) maximum of each window.
 */
export function maxPool2d(x: Tensor, opts: MaxPool2dOptions): Tensor {
  checkTensor(x, 'maxPool2d');
  const g = maxPool2dGeometry(x.shape, opts);
  const withIndices = x.engine.grad.enabled && x.requiresGrad;
  const { y, idx } = maxPool2dForwardRaw(x, g, withIndices);
  if (!idx) return y;
  return record(y, { name: 'maxPool2d', inputs: [x], saved: [idx], backward: (gy) => [maxPool2dBackwardRaw(gy, idx, g)] });
}
