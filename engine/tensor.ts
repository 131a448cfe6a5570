/**
 * Tensors: a handle on a GPU buffer (the storage) with a shape, strides and an element offset.
 *
 * - Storage is reference-counted by its views: `reshape` of a contiguous tensor, `transpose`,
 *   `permute` and `slice` share it; the buffer returns to the pool when the last view is disposed.
 * - Every tensor belongs to the scope active when it was made (see scope.ts) unless kept.
 * - Use after `dispose()` is an error that names the tensor's shape and the op that made it.
 * - dtype 'f32' (default) or 'f16' (IEEE half, needs the adapter's `shader-f16`): f16 is a storage
 *   format; kernels load it into f32, compute in f32 and round to f16 at the store (kernels/f16.ts).
 *   Views keep their storage's dtype; `toArray()` always returns f32 values; `cast` converts.
 *
 * The op methods (add, matmul, softmax...) are thin: each calls the op of the same name in the
 * engine's ops table (engine/ops/, `this.engine.ops`), which launches the kernel of its family
 * (kernels/*.ts) and records the gradient. Going through the engine keeps this module below the
 * ops: engine/ops/* import Tensor (to check their arguments), and nothing here imports them back.
 */
import type { GradNode } from './autograd.js';
import { backward as runBackward } from './autograd.js';
import type { Engine } from './engine.js';
import type { SoftmaxOptions } from './ops/index.js';
import { contiguousStrides, fmt, inferReshape, isContiguous, normAxis, numel, type Shape, ShapeError } from './shape.js';
import { track } from './scope.js';
import { decodeF16 } from './half.js';

export type DType = 'f32' | 'f16';

/** Bytes per element of a dtype. */
export function dtypeBytes(d: DType): number {
  return d === 'f16' ? 2 : 4;
}

/** A GPU buffer shared by a tensor and its views. */
export class Storage {
  refs = 1;
  constructor(
    readonly engine: Engine,
    readonly buffer: GPUBuffer,
    /** Bytes requested (the buffer may be larger: pool buckets). */
    readonly bytes: number,
  ) {}
  release(): void {
    if (--this.refs === 0) this.engine.pool.release(this.buffer);
  }
}

export class UseAfterDisposeError extends Error {
  constructor(what: string) {
    super(what);
    this.name = 'UseAfterDisposeError';
  }
}

export class Tensor {
  readonly shape: readonly number[];
  readonly strides: readonly number[];
  /** Offset of element [0, 0, ...] in the storage, in elements. */
  readonly offset: number;
  readonly dtype: DType;
  readonly engine: Engine;
  /** When true, `backward()` fills `.grad` for this tensor (if a leaf) or propagates through it. */
  requiresGrad = false;
  /** The accumulated gradient of a leaf after `backward()`; kept alive outside scopes. */
  grad: Tensor | null = null;
  /** The op that produced this tensor, when gradients are recorded. */
  gradFn: GradNode | null = null;
  /** A label for error messages (the op that made it, or a parameter name). */
  label: string;
  private _storage: Storage | null;

  /** @internal Use the engine's factories (`wd.tensor`, `wd.zeros`, ...) instead. */
  constructor(engine: Engine, storage: Storage, shape: Shape, strides?: Shape, offset = 0, label = 'tensor', dtype: DType = 'f32') {
    this.engine = engine;
    this.dtype = dtype;
    this._storage = storage;
    this.shape = Object.freeze([...shape]);
    this.strides = Object.freeze(strides ? [...strides] : contiguousStrides(shape));
    this.offset = offset;
    this.label = label;
    track(this);
  }

  // ---------------------------------------------------------------------------------------------
  // Identity and memory

  get size(): number {
    return numel(this.shape);
  }
  get rank(): number {
    return this.shape.length;
  }
  get disposed(): boolean {
    return this._storage === null;
  }
  /** True when the elements are laid out row-major with no gaps, starting at offset 0. */
  get isContiguous(): boolean {
    return this.offset === 0 && isContiguous(this.shape, this.strides);
  }
  /** The storage; throws if the tensor was disposed. */
  get storage(): Storage {
    if (!this._storage) {
      throw new UseAfterDisposeError(`webdino: tensor ${fmt(this.shape)} ('${this.label}') used after dispose()`);
    }
    return this._storage;
  }
  get buffer(): GPUBuffer {
    return this.storage.buffer;
  }

  /**
   * Frees this handle; the buffer returns to the pool when no view uses it. Idempotent. The op
   * node that produced it is released with it (its saved tensors freed): a backward through this
   * tensor then throws, naming it.
   */
  dispose(): void {
    if (!this._storage) return;
    this._storage.release();
    this._storage = null;
    this.gradFn?.release();
    this.gradFn = null;
    if (this.grad) {
      this.grad.dispose();
      this.grad = null;
    }
  }

  /** A new handle on the same storage (shares memory; disposing one does not free the other). */
  view(shape: Shape, strides: Shape, offset: number, label = this.label): Tensor {
    const s = this.storage;
    s.refs++;
    return new Tensor(this.engine, s, shape, strides, offset, label, this.dtype);
  }

  toString(): string {
    return `Tensor(${fmt(this.shape)}, ${this.dtype}${this.requiresGrad ? ', requiresGrad' : ''}, '${this.label}')`;
  }

  // ---------------------------------------------------------------------------------------------
  // Readback

  /** Copies the elements back to the CPU, row-major. Submits pending GPU work. */
  async toArray(): Promise<Float32Array> {
    const t = this.isContiguous ? this : this.contiguous();
    try {
      if (t.dtype === 'f16') return decodeF16(new Uint16Array(await this.engine.device.read(t.buffer, 0, t.size * 2)));
      const bytes = await this.engine.device.read(t.buffer, 0, t.size * 4);
      return new Float32Array(bytes);
    } finally {
      if (t !== this) t.dispose();
    }
  }

  /** The single value of a one-element tensor. */
  async item(): Promise<number> {
    if (this.size !== 1) throw new ShapeError(`item(): tensor ${fmt(this.shape)} has ${this.size} elements, not 1`);
    return (await this.toArray())[0];
  }

  // ---------------------------------------------------------------------------------------------
  // Autograd

  /** Back-propagates from this tensor (a scalar unless `grad` is given). */
  backward(grad?: Tensor): void {
    runBackward(this, grad);
  }

  /** A tensor sharing storage but cut from the graph: no gradient flows through it. */
  detach(): Tensor {
    return this.view(this.shape, this.strides, this.offset, this.label);
  }

  /** Marks this tensor as a leaf that needs a gradient; returns it. */
  requireGrad(flag = true): this {
    this.requiresGrad = flag;
    return this;
  }

  zeroGrad(): void {
    this.grad?.dispose();
    this.grad = null;
  }

  // ---------------------------------------------------------------------------------------------
  // Views (no copies)

  /** Same elements, new shape (one dimension may be -1). Copies only when the layout requires it. */
  reshape(...shape: number[] | [Shape]): Tensor {
    const target = inferReshape(this.shape, (Array.isArray(shape[0]) ? shape[0] : shape) as number[]);
    return this.engine.ops.reshape(this, target);
  }

  /** Swaps two dimensions (default: the last two). A view: strides change, data does not move. */
  transpose(dim0 = -2, dim1 = -1): Tensor {
    const r = this.rank;
    const a = normAxis(dim0, r, 'transpose dim');
    const b = normAxis(dim1, r, 'transpose dim');
    const perm = [...Array(r).keys()];
    perm[a] = b;
    perm[b] = a;
    return this.permute(perm);
  }

  /** Reorders the dimensions. A view. */
  permute(...perm: number[] | [number[]]): Tensor {
    const p = (Array.isArray(perm[0]) ? perm[0] : perm) as number[];
    return this.engine.ops.permute(this, p);
  }

  /** Elements `start` to `end` (exclusive) along `dim`. A view. */
  slice(dim: number, start: number, end: number): Tensor {
    return this.engine.ops.slice(this, dim, start, end);
  }

  /** A contiguous copy when the layout is not row-major from offset 0; otherwise a view. */
  contiguous(): Tensor {
    return this.engine.ops.contiguous(this);
  }

  /** The elements converted to `dtype` (a new contiguous tensor; this tensor's handle when it already has it). */
  cast(dtype: DType): Tensor {
    return this.engine.ops.cast(this, dtype);
  }

  /** A contiguous copy (always new storage). */
  clone(): Tensor {
    return this.engine.ops.copy(this);
  }

  // ---------------------------------------------------------------------------------------------
  // Arithmetic (broadcasting; a number is a scalar)

  add(other: Tensor | number): Tensor {
    return this.engine.ops.add(this, other);
  }
  sub(other: Tensor | number): Tensor {
    return this.engine.ops.sub(this, other);
  }
  mul(other: Tensor | number): Tensor {
    return this.engine.ops.mul(this, other);
  }
  div(other: Tensor | number): Tensor {
    return this.engine.ops.div(this, other);
  }
  pow(exponent: number): Tensor {
    return this.engine.ops.pow(this, exponent);
  }
  neg(): Tensor {
    return this.engine.ops.neg(this);
  }
  exp(): Tensor {
    return this.engine.ops.exp(this);
  }
  log(): Tensor {
    return this.engine.ops.log(this);
  }
  sqrt(): Tensor {
    return this.engine.ops.sqrt(this);
  }
  relu(): Tensor {
    return this.engine.ops.relu(this);
  }
  /** Exact GELU: x·Φ(x) with the error function (as PyTorch's default nn.GELU). */
  gelu(): Tensor {
    return this.engine.ops.gelu(this);
  }
  tanh(): Tensor {
    return this.engine.ops.tanh(this);
  }
  /** SiLU (swish): x·σ(x). */
  silu(): Tensor {
    return this.engine.ops.silu(this);
  }

  // ---------------------------------------------------------------------------------------------
  // Reductions (over one axis, or all elements when `dim` is omitted)

  sum(dim?: number, keepDim = false): Tensor {
    return this.engine.ops.sum(this, dim, keepDim);
  }
  mean(dim?: number, keepDim = false): Tensor {
    return this.engine.ops.mean(this, dim, keepDim);
  }
  max(dim?: number, keepDim = false): Tensor {
    return this.engine.ops.max(this, dim, keepDim);
  }
  /** Indices of the maxima (as f32 values), no gradient. */
  argmax(dim?: number, keepDim = false): Tensor {
    return this.engine.ops.argmax(this, dim, keepDim);
  }

  // ---------------------------------------------------------------------------------------------
  // Linear algebra and neural-network ops

  /** Matrix product over the last two dimensions, batched over the leading ones (broadcast). */
  matmul(other: Tensor): Tensor {
    return this.engine.ops.matmul(this, other);
  }
  /** softmax((x − center) / temperature) over `dim` (only the last dimension is supported: -1). */
  softmax(dim = -1, opts: SoftmaxOptions = {}): Tensor {
    return this.engine.ops.softmax(this, dim, opts);
  }
  logSoftmax(dim = -1, opts: SoftmaxOptions = {}): Tensor {
    return this.engine.ops.logSoftmax(this, dim, opts);
  }
  /** Layer normalisation over the last dimension with optional affine weight and bias. */
  layerNorm(weight?: Tensor | null, bias?: Tensor | null, eps = 1e-5): Tensor {
    return this.engine.ops.layerNorm(this, weight ?? null, bias ?? null, eps);
  }
  /** x / max(‖x‖₂, eps) over the last dimension (as torch.nn.functional.normalize). */
  l2Normalize(eps = 1e-12): Tensor {
    return this.engine.ops.l2Normalize(this, eps);
  }
}

/** Checks that `t` is a live tensor of `engine`; used by ops for clear errors. */
export function checkTensor(t: Tensor, op: string): void {
  if (!(t instanceof Tensor)) throw new TypeError(`${op}: expected a Tensor, got ${typeof t}`);
  void t.storage; // throws UseAfterDisposeError when disposed
}

export { contiguousStrides, numel };
