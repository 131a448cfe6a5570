/**
 * The engine: a device, its buffer pool, gradient mode and tensor factories. Everything a user
 * needs starts from `const wd = await init()`. There is no global engine: tensors carry theirs.
 */
import { GradMode } from './autograd.js';
import { Device, type DeviceOptions } from './device.js';
import { BufferPool, type PoolStats } from './pool.js';
import { Rng } from './random.js';
import { keep as keepTensor, scope as runScope } from './scope.js';
import { checkShape, fmt, numel, type Shape, ShapeError } from './shape.js';
import { type DType, dtypeBytes, Storage, Tensor } from './tensor.js';
import { encodeF16 } from './half.js';
import * as ops from './ops/index.js';

export interface TensorOptions {
  /** Track gradients for this tensor (makes it a leaf of the autograd graph). */
  requiresGrad?: boolean;
  /** A label for error messages and checkpoints. */
  label?: string;
  /** Storage type: 'f32' (default) or 'f16' (needs the adapter's shader-f16; see tensor.ts). */
  dtype?: DType;
}

export interface RandomOptions extends TensorOptions {
  /** Seed of the generator; the same seed gives the same values. Default 0. */
  seed?: number;
  /** Or an explicit generator (its state advances). */
  rng?: Rng;
}

type NestedArray = number | NestedArray[];

function flatten(data: NestedArray, out: number[], shape: number[], depth: number): void {
  if (typeof data === 'number') {
    out.push(data);
    return;
  }
  if (shape.length <= depth) shape.push(data.length);
  else if (shape[depth] !== data.length) throw new ShapeError('tensor(): ragged nested array');
  for (const d of data) flatten(d, out, shape, depth + 1);
}

export class Engine {
  readonly device: Device;
  readonly pool: BufferPool;
  readonly grad = new GradMode();
  /** The differentiable ops (the package's `ops` export); tensor methods call through this table. */
  readonly ops: typeof ops = ops;

  constructor(device: Device) {
    this.device = device;
    this.pool = new BufferPool(device.gpu, device.limits.maxBufferSize);
  }

  /** Creates a device (see `DeviceOptions`) and an engine on it. */
  static async create(opts: DeviceOptions = {}): Promise<Engine> {
    return new Engine(await Device.create(opts));
  }

  // ---------------------------------------------------------------------------------------------
  // Factories

  /** An uninitialised tensor (contents undefined until written). */
  empty(shape: Shape, opts: TensorOptions = {}): Tensor {
    checkShape(shape);
    const dtype = opts.dtype ?? 'f32';
    if (dtype === 'f16') this.device.require('shaderF16');
    // Whole 4-byte words: storage bindings are sized in multiples of 4 bytes.
    const bytes = Math.ceil((Math.max(numel(shape), 1) * dtypeBytes(dtype)) / 4) * 4;
    const buf = this.pool.acquire(bytes, opts.label);
    const t = new Tensor(this, new Storage(this, buf, bytes), shape, undefined, 0, opts.label ?? 'tensor', dtype);
    if (opts.requiresGrad) t.requiresGrad = true;
    return t;
  }

  /**
   * A tensor from a typed array, a flat number array with a shape, or nested arrays.
   * `wd.tensor([1, 2, 3, 4], [2, 2])`, `wd.tensor([[1, 2], [3, 4]])`.
   */
  tensor(data: Float32Array | ArrayLike<number> | NestedArray, shape?: Shape, opts: TensorOptions = {}): Tensor {
    let flat: Float32Array;
    let sh: number[];
    if (data instanceof Float32Array) {
      flat = data;
      sh = shape ? [...shape] : [data.length];
    } else if (typeof data === 'number' || (Array.isArray(data) && data.some((d) => Array.isArray(d)))) {
      const out: number[] = [];
      const inferred: number[] = [];
      flatten(data as NestedArray, out, inferred, 0);
      flat = Float32Array.from(out);
      sh = shape ? [...shape] : inferred;
    } else {
      flat = Float32Array.from(data as ArrayLike<number>);
      sh = shape ? [...shape] : [flat.length];
    }
    checkShape(sh);
    if (numel(sh) !== flat.length) {
      throw new ShapeError(`tensor(): ${flat.length} values do not fill shape ${fmt(sh)} (${numel(sh)} elements)`);
    }
    const t = this.empty(sh, opts);
    if (flat.length && t.dtype === 'f16') {
      // Padded to whole 4-byte words (writeBuffer sizes are multiples of 4).
      const bits = new Uint16Array(Math.ceil(flat.length / 2) * 2);
      bits.set(encodeF16(flat));
      this.device.write(t.buffer, 0, bits);
    } else if (flat.length) this.device.write(t.buffer, 0, flat);
    return t;
  }

  /** A tensor filled with `value`. */
  full(shape: Shape, value: number, opts: TensorOptions = {}): Tensor {
    return ops.fill(this.empty(shape, opts), value);
  }
  zeros(shape: Shape, opts: TensorOptions = {}): Tensor {
    return this.full(shape, 0, opts);
  }
  ones(shape: Shape, opts: TensorOptions = {}): Tensor {
    return this.full(shape, 1, opts);
  }

  /** Standard normal values (mean 0, std 1) from a seeded generator. */
  randn(shape: Shape, opts: RandomOptions = {}): Tensor {
    const rng = opts.rng ?? new Rng(opts.seed ?? 0);
    return this.tensor(rng.fillNormal(new Float32Array(numel(shape))), shape, opts);
  }

  /** Uniform values in [lo, hi) from a seeded generator. */
  rand(shape: Shape, opts: RandomOptions & { lo?: number; hi?: number } = {}): Tensor {
    const rng = opts.rng ?? new Rng(opts.seed ?? 0);
    return this.tensor(rng.fillUniform(new Float32Array(numel(shape)), opts.lo ?? 0, opts.hi ?? 1), shape, opts);
  }

  // ---------------------------------------------------------------------------------------------
  // Scopes, gradients, memory

  /**
   * Runs `fn` in a scope: every tensor it creates is disposed when it finishes, except what it
   * returns (and tensors passed to `keep`). `await wd.scope(async () => { ... })` works too.
   */
  scope<R>(fn: () => R): R {
    return runScope(fn);
  }

  /** Lets `t` outlive the enclosing scopes (the caller then owns it: dispose it yourself). */
  keep<T extends Tensor>(t: T): T {
    return keepTensor(t);
  }

  /** Runs `fn` without recording gradients (sync or async). */
  noGrad<R>(fn: () => R): R {
    return this.grad.run(fn);
  }

  /** Memory figures of the pool, in bytes. */
  memory(): PoolStats {
    return { ...this.pool.stats };
  }

  /** Submits recorded GPU work and waits for it to finish. */
  sync(): Promise<void> {
    return this.device.sync();
  }

  /** Frees the pool and the device. */
  destroy(): void {
    this.pool.trim();
    this.device.destroy();
  }
}
