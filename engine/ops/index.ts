/**
 * The differentiable ops (the package's `ops` export): each launches the kernels of its family
 * (kernels/<family>.ts) and records its gradient rule with autograd. Tensor methods call these
 * through their engine (`x.add(y)` is `add(x, y)`).
 *
 * One file per family, as in kernels/:
 *   elementwise.ts    add sub mul div rsub pow neg exp log sqrt relu gelu tanh silu swiglu copy fill, and the
 *                     typed gradient tables UNARY_GRADS / BINARY_GRADS behind them
 *   reduce.ts         sum mean max argmax sumTo
 *   views.ts          contiguous reshape permute slice expand concat copyInto
 *   matmul.ts         matmul linear
 *   softmax.ts        softmax logSoftmax
 *   layernorm.ts      layerNorm l2Normalize
 *   attention.ts      attention attentionPacked
 *   rope.ts           rope ropePacked (rotary position embedding)
 *   cross-entropy.ts  softCrossEntropy
 *   gather.ts         indexSelect
 *   conv2d.ts         conv2d maxPool2d
 *
 * Two tiers (as tinygrad and llm.c do): primitives carry gradient rules composed of other kernels
 * (elementwise, reductions, views), and fused ops (matmul + bias + activation, softmax with
 * temperature and center, layernorm, attention, RoPE, cross-entropy, conv2d) ship a forward/backward
 * kernel pair and say what they save.
 */
export { add, sub, mul, div, neg, exp, log, sqrt, relu, gelu, tanh, silu, swiglu, pow, rsub, copy, fill } from './elementwise.js';
export { sum, mean, max, argmax, sumTo } from './reduce.js';
export { contiguous, reshape, permute, slice, expand, concat, copyInto } from './views.js';
export { matmul, linear, type MatmulOptions } from './matmul.js';
export { softmax, logSoftmax, type SoftmaxOptions } from './softmax.js';
export { layerNorm, l2Normalize } from './layernorm.js';
export { attention, attentionPacked, type AttentionOptions } from './attention.js';
export { rope, ropePacked, type RopeTables } from './rope.js';
export { softCrossEntropy, type CrossEntropyOptions } from './cross-entropy.js';
export { indexSelect } from './gather.js';
export { conv2d, maxPool2d, type Conv2dOptions, type MaxPool2dOptions } from './conv2d.js';
