/**
 * Modules: named parameters with PyTorch's state_dict names, children, train/eval mode, and the
 * layers every model here uses (Linear, LayerNorm). Parameters are long-lived tensors owned by the
 * module (kept out of scopes); `dispose()` frees them.
 *
 * Naming: a parameter registered as `weight` on a child registered as `qkv` of a child `attn` of a
 * child `blocks.0` is `blocks.0.attn.qkv.weight`, exactly the official key. Buffers (batch-norm
 * running statistics) are state too but never receive gradients.
 */
import type { Engine } from '../engine/engine.js';
import { Rng } from '../engine/random.js';
import { fmt, type Shape } from '../engine/shape.js';
import type { DType, Tensor } from '../engine/tensor.js';
import * as ops from '../engine/ops/index.js';
import { checkStrict } from './io/state-dict.js';

export type InitFn = (n: number, rng: Rng) => Float32Array;

export const init = {
  zeros: (): InitFn => (n) => new Float32Array(n),
  ones: (): InitFn => (n) => new Float32Array(n).fill(1),
  /** timm's trunc_normal_(std, a=-2, b=2): DINO's init for Linear weights, cls_token, pos_embed. */
  truncNormal: (std: number): InitFn => (n, rng) => rng.fillTruncNormal(new Float32Array(n), std, -2, 2),
  /** PyTorch's default Linear/Conv weight init: kaiming_uniform(a=√5) = U(−1/√fanIn, 1/√fanIn). */
  torchDefault: (fanIn: number): InitFn => (n, rng) => {
    const b = 1 / Math.sqrt(fanIn);
    return rng.fillUniform(new Float32Array(n), -b, b);
  },
  /** Kaiming normal, fan_out, ReLU gain: torchvision ResNet conv init. */
  kaimingNormalFanOut: (fanOut: number): InitFn => (n, rng) => rng.fillNormal(new Float32Array(n), 0, Math.sqrt(2 / fanOut)),
};

/**
 * Compute precision of a module's matrix products (mixed precision, as torch.autocast):
 * - 'f32': everything in f32 (the default; the f16 inference of castParameters is separate).
 * - 'f16': each Linear rounds its input and its weight to f16 (the weight through a cast of the
 *   f32 master parameter, every forward: the cast's gradient converts back, so the parameters'
 *   gradients stay f32), multiplies f16 × f16 with f32 accumulation (kernels/matmul.ts) and gives
 *   an f16 output. The modules convert an f16 activation back to f32 (`toF32`) before an op that
 *   computes in f32: norms, attention, the head's l2-normalisation and its logits, so that the
 *   residual stream, the statistics and every loss stay f32.
 */
export type Precision = 'f32' | 'f16';

/** An f16 activation converted to f32 (differentiably); an f32 one as it is. */
export function toF32(x: Tensor): Tensor {
  return x.dtype === 'f16' ? ops.cast(x, 'f32') : x;
}

/** f16 inputs and weight, f32 accumulation, f16 output; the bias stays f32 (read as f32 by the kernel). */
export function linearF16(x: Tensor, weight: Tensor, bias: Tensor | null, activation: 'none' | 'relu' | 'gelu' = 'none'): Tensor {
  const x16 = x.dtype === 'f16' ? x : ops.cast(x, 'f16');
  return ops.linear(x16, ops.cast(weight, 'f16'), bias, activation);
}

export interface ModuleContext {
  engine: Engine;
  /** Generator for initialisation; its state advances as parameters are created. */
  rng: Rng;
}

export class Module {
  /** Training mode (dropout/drop-path active, batch-norm batch statistics). */
  training = true;
  /** Compute precision of the matrix products (see `Precision`); set with `setPrecision`. */
  precision: Precision = 'f32';
  protected readonly params = new Map<string, Tensor>();
  protected readonly buffers = new Map<string, Tensor>();
  protected readonly children = new Map<string, Module>();

  constructor(protected readonly ctx: ModuleContext) {}

  get engine(): Engine {
    return this.ctx.engine;
  }

  /** Creates and registers a parameter (requiresGrad, kept outside scopes). */
  protected param(name: string, shape: Shape, initFn: InitFn, trainable = true): Tensor {
    const n = shape.reduce((a, b) => a * b, 1);
    const data = initFn(n, this.ctx.rng);
    const t = this.engine.keep(this.engine.tensor(data, shape, { label: name, requiresGrad: trainable }));
    this.params.set(name, t);
    return t;
  }

  /** Registers a state tensor without gradient (running mean/var). */
  protected buffer(name: string, shape: Shape, initFn: InitFn): Tensor {
    const n = shape.reduce((a, b) => a * b, 1);
    const t = this.engine.keep(this.engine.tensor(initFn(n, this.ctx.rng), shape, { label: name }));
    this.buffers.set(name, t);
    return t;
  }

  protected child<M extends Module>(name: string, m: M): M {
    return this.addModule(name, m);
  }

  /** Registers `m` as a named child (its parameters get the prefix `name.`); returns it. */
  addModule<M extends Module>(name: string, m: M): M {
    this.children.set(name, m);
    return m;
  }

  /** Parameters with their full names (trainable or not), depth-first in registration order. */
  namedParameters(prefix = ''): [string, Tensor][] {
    const out: [string, Tensor][] = [];
    for (const [n, t] of this.params) out.push([prefix + n, t]);
    for (const [n, c] of this.children) out.push(...c.namedParameters(`${prefix}${n}.`));
    return out;
  }

  /** Buffers (non-trainable state) with their full names. */
  namedBuffers(prefix = ''): [string, Tensor][] {
    const out: [string, Tensor][] = [];
    for (const [n, t] of this.buffers) out.push([prefix + n, t]);
    for (const [n, c] of this.children) out.push(...c.namedBuffers(`${prefix}${n}.`));
    return out;
  }

  /** Parameters and buffers: what a state_dict holds. */
  stateEntries(prefix = ''): [string, Tensor][] {
    return [...this.namedParameters(prefix), ...this.namedBuffers(prefix)];
  }

  /** Only the parameters that receive gradients. */
  trainableParameters(): [string, Tensor][] {
    return this.namedParameters().filter(([, t]) => t.requiresGrad);
  }

  /** Replaces the tensor behind a parameter or buffer (e.g. a view into an optimizer arena). */
  replaceTensor(fullName: string, t: Tensor): Tensor {
    // Child names may contain dots ('blocks.3'): route to the child whose name prefixes the key.
    for (const [cn, c] of this.children) {
      if (fullName.startsWith(cn + '.')) return c.replaceTensor(fullName.slice(cn.length + 1), t);
    }
    const map = this.params.has(fullName) ? this.params : this.buffers.has(fullName) ? this.buffers : null;
    if (!map) throw new Error(`no parameter or buffer named '${fullName}'`);
    const old = map.get(fullName)!;
    if (old.shape.join() !== t.shape.join()) throw new Error(`${fullName}: shape ${fmt(t.shape)} replaces ${fmt(old.shape)}`);
    t.requiresGrad = old.requiresGrad;
    t.label = old.label;
    map.set(fullName, t);
    this.onReplace(fullName, t);
    return old;
  }

  /** Subclasses that cache parameter handles in fields refresh them here. */
  protected onReplace(_name: string, _t: Tensor): void {}

  /** Looks a parameter or buffer up by full name. */
  get(fullName: string): Tensor {
    for (const [n, t] of this.stateEntries()) if (n === fullName) return t;
    throw new Error(`no parameter or buffer named '${fullName}'`);
  }

  /**
   * Writes weights into the parameters and buffers. Strict by default: missing keys, unexpected keys
   * and shape mismatches are one error that lists them all, and nothing is written.
   */
  loadStateDict(tensors: ReadonlyMap<string, { shape: readonly number[]; data: Float32Array }>, opts: { strict?: boolean } = {}): void {
    const entries = this.stateEntries();
    if (opts.strict !== false) {
      checkStrict(new Map(entries.map(([n, t]) => [n, t.shape])), tensors);
    }
    for (const [name, t] of entries) {
      const src = tensors.get(name);
      if (!src) continue;
      if (src.data.length !== t.size) throw new Error(`${name}: ${src.data.length} values for ${fmt(t.shape)}`);
      if (t.dtype !== 'f32') throw new Error(`${name}: weights load into f32 parameters; load first, then castParameters('${t.dtype}')`);
      this.engine.device.write(t.buffer, t.offset * 4, src.data);
    }
  }

  /**
   * Converts every parameter and buffer to `dtype` in place (new tensors replace the old, which
   * are freed), except those for which `keep(name)` is true. For f16 inference: weights converted
   * once at load, activations then follow them (every op gives f16 for f16 operands).
   */
  castParameters(dtype: DType, keep: (name: string) => boolean = () => false): void {
    if (dtype === 'f16') this.engine.device.require('shaderF16');
    this.engine.noGrad(() => {
      for (const [name, t] of this.stateEntries()) {
        if (t.dtype === dtype || keep(name)) continue;
        const c = this.engine.keep(ops.cast(t, dtype));
        this.replaceTensor(name, c);
        t.dispose();
      }
    });
  }

  /** The state dict (parameters and buffers) read back to the CPU, with official names. */
  async stateDict(): Promise<Map<string, { shape: number[]; data: Float32Array }>> {
    const out = new Map<string, { shape: number[]; data: Float32Array }>();
    for (const [name, t] of this.stateEntries()) out.set(name, { shape: [...t.shape], data: await t.toArray() });
    return out;
  }

  train(flag = true): this {
    this.training = flag;
    for (const c of this.children.values()) c.train(flag);
    return this;
  }

  eval(): this {
    return this.train(false);
  }

  /** Sets the compute precision of this module and its children (parameters stay as they are). */
  setPrecision(p: Precision): this {
    if (p === 'f16') this.engine.device.require('shaderF16');
    this.precision = p;
    for (const c of this.children.values()) c.setPrecision(p);
    return this;
  }

  /** Under mixed precision, `x` in f32 for an op that computes in f32 (see `Precision`); otherwise `x`. */
  protected f32(x: Tensor): Tensor {
    return this.precision === 'f16' ? toF32(x) : x;
  }

  /** Number of parameter elements. */
  numParameters(): number {
    return this.namedParameters().reduce((a, [, t]) => a + t.size, 0);
  }

  /** Frees every parameter and buffer. */
  dispose(): void {
    for (const [, t] of this.stateEntries()) t.dispose();
  }
}

/** y = x Wᵀ + b with PyTorch's layout: weight [out, in], bias [out]. */
export class Linear extends Module {
  weight: Tensor;
  bias: Tensor | null;
  constructor(
    ctx: ModuleContext,
    readonly inFeatures: number,
    readonly outFeatures: number,
    opts: { bias?: boolean; weightInit?: InitFn; biasInit?: InitFn } = {},
  ) {
    super(ctx);
    this.weight = this.param('weight', [outFeatures, inFeatures], opts.weightInit ?? init.torchDefault(inFeatures));
    this.bias = opts.bias === false ? null : this.param('bias', [outFeatures], opts.biasInit ?? init.torchDefault(inFeatures));
  }
  protected override onReplace(name: string, t: Tensor): void {
    if (name === 'weight') this.weight = t;
    if (name === 'bias') this.bias = t;
  }
  /** Under `precision` 'f16' the output is f16 (see `Precision`). */
  forward(x: Tensor, activation: 'none' | 'relu' | 'gelu' = 'none'): Tensor {
    if (this.precision === 'f16') return linearF16(x, this.weight, this.bias, activation);
    return ops.linear(x, this.weight, this.bias, activation);
  }
}

/** LayerNorm over the last dimension with affine weight and bias. */
export class LayerNorm extends Module {
  weight: Tensor;
  bias: Tensor;
  constructor(ctx: ModuleContext, dim: number, readonly eps = 1e-5) {
    super(ctx);
    this.weight = this.param('weight', [dim], init.ones());
    this.bias = this.param('bias', [dim], init.zeros());
  }
  protected override onReplace(name: string, t: Tensor): void {
    if (name === 'weight') this.weight = t;
    if (name === 'bias') this.bias = t;
  }
  forward(x: Tensor): Tensor {
    return ops.layerNorm(x, this.weight, this.bias, this.eps);
  }
}

/** 2-D convolution with PyTorch's layout: weight [out, in, kh, kw], bias [out]. */
export class Conv2d extends Module {
  weight: Tensor;
  bias: Tensor | null;
  constructor(
    ctx: ModuleContext,
    readonly inChannels: number,
    readonly outChannels: number,
    readonly kernel: number,
    readonly opts: { stride?: number; padding?: number; bias?: boolean; weightInit?: InitFn } = {},
  ) {
    super(ctx);
    const fanIn = inChannels * kernel * kernel;
    this.weight = this.param('weight', [outChannels, inChannels, kernel, kernel], opts.weightInit ?? init.torchDefault(fanIn));
    this.bias = opts.bias === false ? null : this.param('bias', [outChannels], init.torchDefault(fanIn));
  }
  protected override onReplace(name: string, t: Tensor): void {
    if (name === 'weight') this.weight = t;
    if (name === 'bias') this.bias = t;
  }
  forward(x: Tensor): Tensor {
    return ops.conv2d(x, this.weight, this.bias, { stride: this.opts.stride ?? 1, padding: this.opts.padding ?? 0 });
  }
}
