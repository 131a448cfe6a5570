/**
 * webdino: a WebGPU compute engine with hand-written WGSL kernels and a small autograd.
 *
 * ```ts
 * import { init } from 'webdino';
 * const wd = await init();
 * const x = wd.randn([4, 8], { seed: 1, requiresGrad: true });
 * const loss = await wd.scope(async () => {
 *   const y = x.matmul(x.transpose()).softmax(-1, { temperature: 0.1 }).sum();
 *   y.backward();
 *   return y.item();
 * });
 * console.log(loss, await x.grad!.toArray());
 * ```
 */
import { Engine } from './engine/engine.js';
import type { DeviceOptions } from './engine/device.js';

export { Engine } from './engine/engine.js';
export type { TensorOptions, RandomOptions } from './engine/engine.js';
export { Tensor, Storage, UseAfterDisposeError } from './engine/tensor.js';
export type { SoftmaxOptions, DType } from './engine/tensor.js';
export { Device, DeviceError, NoAdapterError, Uniforms } from './engine/device.js';
export type { DeviceOptions, DeviceFeatures, AdapterDescription, VariantPreference, Kernel } from './engine/device.js';
export { ShapeError } from './engine/shape.js';
export type { Shape } from './engine/shape.js';
export { Rng } from './engine/random.js';
export type { PoolStats } from './engine/pool.js';
export * as ops from './engine/ops.js';
export type { MatmulOptions, AttentionOptions, CrossEntropyOptions, Conv2dOptions } from './engine/ops.js';
export { ParamArena, AdamW, emaUpdate, gradNorms, clipGradients, tensorNorms, totalNorm, lerpInPlace, dinoDecayMask } from './engine/optim.js';
export type { ParamArenaOptions, AddParamOptions, ParamInit, AdamWOptions, AdamWState } from './engine/optim.js';

/**
 * Creates an engine on the best available WebGPU adapter (Dawn in Node, navigator.gpu in
 * browsers). Throws `NoAdapterError` (which says what to install) when there is none.
 */
export async function init(opts: DeviceOptions = {}): Promise<Engine> {
  const proc = (globalThis as { process?: { versions?: { node?: string } } }).process;
  if (proc?.versions?.node) await import('./engine/node.js');
  return Engine.create(opts);
}
