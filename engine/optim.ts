/**
 * Optimisation on the GPU without per-tensor readbacks: a parameter arena, AdamW, the teacher EMA,
 * per-tensor gradient norms and clipping, and gradient cancelling (DINO's freeze_last_layer).
 *
 * Design: a flat arena (the "multi-tensor" layout of kernels/optim.ts), not a per-tensor dispatch
 * table. Parameters are views into one long-lived buffer, with their gradients, AdamW's m and v and
 * the teacher's weights in buffers of the same layout, so AdamW, the EMA and clipping are one
 * dispatch each over all ~150 tensors of a ViT-S, and the norms a few (one per reduction pass).
 * A dispatch costs 10–40 µs of API time and AdamW over 22M floats ~0.1 ms of memory traffic on a
 * big GPU, so per-tensor dispatches would cost more than the work itself.
 *
 * Layout
 * - The arena is a list of chunks (usually one). A chunk is one buffer; `add` appends the parameter
 *   at the next multiple of ALIGN = 64 elements (256 bytes: any parameter can be bound on its own)
 *   and returns a view of the chunk (`requiresGrad` set, so it is an autograd leaf). The total is
 *   not known while a model is built, so when the last chunk is full a new one is opened, twice as
 *   large as the previous regular one, up to the device's storage binding limit (a parameter larger
 *   than that gets a chunk of its own size). Pass `capacity` = the parameter count for one chunk.
 * - The first use of the layout (gathering gradients, an optimizer, an EMA) freezes it: `add`
 *   then throws. Gradient, m and v buffers are sized to the used part of each chunk.
 * - Padding between parameters is zero in every buffer and stays zero.
 *
 * Gradients: backward leaves `.grad` on each parameter as a separate tensor. `gatherGrads()` copies
 * each one into the flat gradient arena (one buffer copy per tensor, recorded, no readback); a
 * parameter without a gradient has its segment zeroed and is marked absent, which AdamW treats as
 * PyTorch treats `p.grad is None`: no update, no weight decay, m, v and its step count untouched
 * (DINO relies on this for freeze_last_layer). AdamW, clipping and the norms gather automatically
 * when the gradients were not gathered since the last optimizer step.
 *
 * Step order of DINO (main_dino.train_one_epoch):
 *   loss.backward(); arena.gatherGrads(); clipGradients(arena, 3.0);
 *   if (epoch < freezeLastLayer) arena.cancelGradients((n) => n.includes('last_layer'));
 *   opt.lr = lrSchedule[it]; opt.weightDecay = wdSchedule[it]; opt.step(); opt.zeroGrad();
 *   emaUpdate(teacherArena, arena, momentumSchedule[it]);
 */
import type { Engine } from './engine.js';
import { contiguousStrides, fmt, isContiguous, numel, type Shape, ShapeError } from './shape.js';
import { checkTensor, Tensor } from './tensor.js';
import { copyRaw, stridedCopy } from '../kernels/elementwise.js';
import { ADAMW_INACTIVE, adamwRaw, clipSegmentsRaw, fillRangeRaw, lerpRaw, SegmentLayout, segmentNormsRaw } from '../kernels/optim.js';

/** Parameter starts are multiples of this many elements (256 bytes, the largest storage offset alignment). */
export const ALIGN = 64;
/** Elements of the first chunk when no capacity is given (4 MiB). */
const DEFAULT_CAPACITY = 1 << 20;

const alignUp = (n: number, a = ALIGN): number => Math.ceil(n / a) * a;

/** Elements of `t` are laid out row-major without gaps from `t.offset` (offset allowed). */
const isDense = (t: Tensor): boolean => isContiguous(t.shape, t.strides);

/**
 * dst ← m·dst + (1−m)·src in place, for two tensors with the same number of elements (row-major
 * order). `dst` must be dense (a contiguous view at any offset); `src` may be any view. No autograd.
 * DINO: center ← 0.9·center + 0.1·batchCenter is `lerpInPlace(center, batchCenter, 0.9)`.
 */
export function lerpInPlace(dst: Tensor, src: Tensor, momentum: number): Tensor {
  checkTensor(dst, 'lerpInPlace');
  checkTensor(src, 'lerpInPlace');
  if (dst.size !== src.size) throw new ShapeError(`lerpInPlace: ${fmt(dst.shape)} and ${fmt(src.shape)} differ in size`);
  if (!isDense(dst)) throw new ShapeError('lerpInPlace: the destination must be a contiguous view');
  const s = isDense(src) && src.buffer !== dst.buffer ? src : copyRaw(src);
  lerpRaw(dst.engine, dst.buffer, dst.offset, s.buffer, s.offset, dst.size, momentum);
  if (s !== src) s.dispose();
  return dst;
}

/** √(Σ norms²): the global norm of all tensors from their per-tensor norms, as a [1] tensor. */
export function totalNorm(norms: Tensor): Tensor {
  checkTensor(norms, 'totalNorm');
  const e = norms.engine;
  const x = isDense(norms) && norms.offset === 0 ? norms : copyRaw(norms);
  const layout = new SegmentLayout(e, [0], [norms.size]);
  const out = e.empty([1], { label: 'total-norm' });
  segmentNormsRaw(x, layout, out, 0);
  layout.dispose();
  if (x !== norms) x.dispose();
  return out;
}

/** Initial values of a parameter: a constant, the values (row-major), or a function of the element count. */
export type ParamInit = number | ArrayLike<number> | ((n: number) => ArrayLike<number>);

/** Options of a ParamArena. */
export interface ParamArenaOptions {
  /** Elements of the first chunk; the parameter count of the model gives exactly one chunk. */
  capacity?: number;
  /** Default `requiresGrad` of added parameters (false for a teacher). Default true. */
  requiresGrad?: boolean;
  /** Label of the buffers (for debugging). */
  label?: string;
}

/** Per-parameter options of `ParamArena.add`. */
export interface AddParamOptions {
  /** Overrides the arena's default; a parameter without it is never updated by the optimizer. */
  requiresGrad?: boolean;
}

/** One parameter: where it lives. */
interface Entry {
  readonly name: string;
  readonly tensor: Tensor;
  readonly chunk: number;
  /** Start in the chunk, elements (a multiple of ALIGN). */
  readonly start: number;
  readonly size: number;
  /** Position in the arena's parameter order. */
  readonly index: number;
}

interface Chunk {
  /** The parameter buffer (capacity elements). */
  readonly data: Tensor;
  readonly capacity: number;
  used: number;
  readonly entries: Entry[];
  /** Set when the layout is frozen. */
  layout: SegmentLayout | null;
  /** The flat gradients (`used` elements), allocated on the first gather. */
  grads: Tensor | null;
}

/**
 * Parameters as views into long-lived flat buffers, with a flat gradient arena of the same layout.
 * Create one per model (student, teacher); `dispose()` frees everything it owns.
 */
export class ParamArena {
  readonly engine: Engine;
  private readonly opts: Required<ParamArenaOptions>;
  private readonly chunks: Chunk[] = [];
  private readonly list: Entry[] = [];
  private readonly byName = new Map<string, Entry>();
  private frozen = false;
  /** Capacity of the next regular chunk (doubles each time one opens). */
  private nextCapacity: number;
  /** Per parameter: its gradient is in the gradient arena (false: absent or cancelled). */
  private readonly present: boolean[] = [];
  /** Per parameter: its gradient segment may hold non-zero values. */
  private readonly dirty: boolean[] = [];
  private gathered = false;
  private disposed = false;

  constructor(engine: Engine, opts: ParamArenaOptions = {}) {
    this.engine = engine;
    this.opts = {
      capacity: alignUp(Math.max(1, opts.capacity ?? DEFAULT_CAPACITY)),
      requiresGrad: opts.requiresGrad ?? true,
      label: opts.label ?? 'params',
    };
    this.nextCapacity = this.opts.capacity;
  }

  // ---------------------------------------------------------------------------------------------
  // Building

  /**
   * Adds a parameter and returns it: a view into the arena, kept out of scopes, owned by the arena.
   * `source` is a shape (values from `init`, default zeros) or a tensor whose values are copied.
   */
  add(name: string, source: Shape | Tensor, init?: ParamInit, opts: AddParamOptions = {}): Tensor {
    this.checkLive();
    if (this.frozen) throw new Error(`ParamArena.add('${name}'): the layout is frozen (gradients, an optimizer or an EMA already use it)`);
    if (this.byName.has(name)) throw new Error(`ParamArena.add: a parameter named '${name}' exists already`);
    const shape = source instanceof Tensor ? [...source.shape] : [...source];
    const size = numel(shape);
    const { chunk, start } = this.place(size);
    const c = this.chunks[chunk];
    const e = this.engine;
    const tensor = e.keep(c.data.view(shape, contiguousStrides(shape), start, name));
    tensor.requiresGrad = opts.requiresGrad ?? this.opts.requiresGrad;
    if (source instanceof Tensor) {
      if (init !== undefined) throw new Error(`ParamArena.add('${name}'): give either a tensor or an init, not both`);
      stridedCopy(tensor, source);
    } else if (init !== undefined && size > 0) {
      this.initialise(name, c, start, size, init);
    }
    const entry: Entry = { name, tensor, chunk, start, size, index: this.list.length };
    c.entries.push(entry);
    c.used = alignUp(start + size);
    this.list.push(entry);
    this.byName.set(name, entry);
    this.present.push(false);
    this.dirty.push(false);
    return tensor;
  }

  private initialise(name: string, c: Chunk, start: number, size: number, init: ParamInit): void {
    const dev = this.engine.device;
    if (typeof init === 'number') {
      if (init !== 0) fillRangeRaw(this.engine, c.data.buffer, start, size, init);
      return;
    }
    const values = typeof init === 'function' ? init(size) : init;
    if (values.length !== size) throw new ShapeError(`ParamArena.add('${name}'): ${values.length} initial values for ${size} elements`);
    const data = values instanceof Float32Array ? values : Float32Array.from(values);
    dev.write(c.data.buffer, start * 4, data);
  }

  /** Finds room for `size` elements: the end of the last chunk, or a new chunk. */
  private place(size: number): { chunk: number; start: number } {
    const last = this.chunks[this.chunks.length - 1];
    if (last && last.used + size <= last.capacity) return { chunk: this.chunks.length - 1, start: last.used };
    // The largest power of two of bytes under both limits (pool buckets never round past it).
    const lim = this.engine.device.limits;
    const maxChunk = 2 ** Math.floor(Math.log2(Math.min(lim.maxStorageBufferBindingSize, lim.maxBufferSize))) / 4;
    let capacity = Math.min(this.nextCapacity, maxChunk);
    if (alignUp(size) > capacity) {
      capacity = alignUp(size); // an oversized parameter gets a chunk of its own; the sequence is unchanged
    } else {
      this.nextCapacity = Math.min(2 * this.nextCapacity, maxChunk);
    }
    if (capacity > maxChunk) {
      throw new RangeError(`ParamArena: a parameter of ${size} elements exceeds the device's storage binding limit (${maxChunk} elements)`);
    }
    const data = this.engine.keep(this.engine.zeros([capacity], { label: this.opts.label }));
    this.chunks.push({ data, capacity, used: 0, entries: [], layout: null, grads: null });
    return { chunk: this.chunks.length - 1, start: 0 };
  }

  // ---------------------------------------------------------------------------------------------
  // Lookup

  /** The parameter called `name`; throws when there is none. */
  get(name: string): Tensor {
    return this.entry(name).tensor;
  }

  /** Whether a parameter called `name` exists. */
  has(name: string): boolean {
    return this.byName.has(name);
  }

  /** Parameter names in the arena's order (the order of `add`). */
  get names(): string[] {
    return this.list.map((e) => e.name);
  }

  /** Parameters in the arena's order. */
  get params(): Tensor[] {
    return this.list.map((e) => e.tensor);
  }

  /** [name, parameter] pairs in order. */
  entries(): [string, Tensor][] {
    return this.list.map((e) => [e.name, e.tensor]);
  }

  /** Number of parameter tensors. */
  get numTensors(): number {
    return this.list.length;
  }

  /** Number of parameter elements (padding excluded). */
  get numel(): number {
    return this.list.reduce((a, e) => a + e.size, 0);
  }

  /** Number of chunks (= dispatches per AdamW / EMA step). */
  get numChunks(): number {
    return this.chunks.length;
  }

  private entry(name: string): Entry {
    const e = this.byName.get(name);
    if (!e) throw new Error(`ParamArena: no parameter named '${name}'`);
    return e;
  }

  // ---------------------------------------------------------------------------------------------
  // Layout (for the optimizer, the EMA and the norms; internal to engine/optim.ts)

  /** Freezes the layout and uploads the segment tables (idempotent). @internal */
  freeze(): void {
    this.checkLive();
    if (this.frozen) return;
    if (this.list.length === 0) throw new Error('ParamArena: no parameters');
    this.frozen = true;
    for (const c of this.chunks) {
      c.layout = new SegmentLayout(
        this.engine,
        c.entries.map((e) => e.start),
        c.entries.map((e) => e.size),
      );
    }
  }

  /** Chunk views for the kernels. @internal */
  chunkViews(): readonly { data: Tensor; used: number; layout: SegmentLayout; firstIndex: number; entries: readonly Entry[] }[] {
    this.freeze();
    return this.chunks.map((c) => ({ data: c.data, used: c.used, layout: c.layout!, firstIndex: c.entries[0].index, entries: c.entries }));
  }

  /** The flat gradient buffer of chunk `i` (allocated zeroed on first use). @internal */
  gradBuffer(i: number): Tensor {
    this.freeze();
    const c = this.chunks[i];
    c.grads ??= this.engine.keep(this.engine.zeros([c.used], { label: `${this.opts.label}-grads` }));
    return c.grads;
  }

  /** Per parameter: was a gradient gathered (and not cancelled)? @internal */
  gradPresent(): readonly boolean[] {
    return this.present;
  }

  // ---------------------------------------------------------------------------------------------
  // Gradients

  /**
   * Copies every parameter's `.grad` into the flat gradient arena (recorded copies, no readback).
   * Parameters without a gradient get a zero segment and are marked absent (skipped by AdamW).
   */
  gatherGrads(): void {
    this.freeze();
    const dev = this.engine.device;
    for (const e of this.list) {
      const grads = this.gradBuffer(e.chunk);
      const g = e.tensor.grad;
      if (g && e.size > 0) {
        if (isContiguous(g.shape, g.strides) && g.buffer !== grads.buffer) {
          dev.copy(g.buffer, g.offset * 4, grads.buffer, e.start * 4, e.size * 4);
        } else {
          const dst = grads.view(e.tensor.shape, contiguousStrides(e.tensor.shape), e.start);
          stridedCopy(dst, g);
          dst.dispose();
        }
        this.present[e.index] = true;
        this.dirty[e.index] = true;
      } else {
        this.zeroSegment(e);
        this.present[e.index] = g !== null;
      }
    }
    this.gathered = true;
  }

  /** Gathers unless gathered since the last optimizer step. @internal */
  ensureGathered(): void {
    if (!this.gathered) this.gatherGrads();
  }

  /** Marks the gathered gradients as used by an optimizer step. @internal */
  consumeGrads(): void {
    this.gathered = false;
  }

  private zeroSegment(e: Entry): void {
    if (!this.dirty[e.index]) return;
    fillRangeRaw(this.engine, this.gradBuffer(e.chunk).buffer, e.start, e.size, 0);
    this.dirty[e.index] = false;
  }

  /**
   * Drops the gradients of the selected parameters for this step (DINO's
   * cancel_gradients_last_layer sets them to None): their segments are zeroed, their `.grad` freed,
   * and AdamW skips them. Returns how many parameters were cancelled.
   */
  cancelGradients(which: readonly string[] | ((name: string) => boolean)): number {
    const pick = typeof which === 'function' ? which : (n: string) => which.includes(n);
    if (Array.isArray(which)) for (const n of which) this.entry(n);
    this.ensureGathered();
    let count = 0;
    for (const e of this.list) {
      if (!pick(e.name)) continue;
      this.zeroSegment(e);
      this.present[e.index] = false;
      e.tensor.zeroGrad();
      count++;
    }
    return count;
  }

  /** Frees every parameter's `.grad` (PyTorch's zero_grad(set_to_none=True)). */
  zeroGrad(): void {
    for (const e of this.list) e.tensor.zeroGrad();
    this.gathered = false;
  }

  /** A view of parameter `name`'s gradient in the gradient arena (dispose it; it is a new handle). */
  gradOf(name: string): Tensor {
    const e = this.entry(name);
    return this.gradBuffer(e.chunk).view(e.tensor.shape, contiguousStrides(e.tensor.shape), e.start, `${name}.grad`);
  }

  // ---------------------------------------------------------------------------------------------
  // Whole-arena copies

  /** Copies every parameter value from `other` (same layout: the same adds in the same order). */
  copyFrom(other: ParamArena): void {
    const mine = this.chunkViews();
    const theirs = checkSameLayout(this, other);
    const dev = this.engine.device;
    mine.forEach((c, i) => dev.copy(theirs[i].data.buffer, 0, c.data.buffer, 0, c.used * 4));
  }

  /** Frees the parameters, gradients and tables. */
  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    for (const e of this.list) e.tensor.dispose();
    for (const c of this.chunks) {
      c.data.dispose();
      c.grads?.dispose();
      c.layout?.dispose();
    }
  }

  private checkLive(): void {
    if (this.disposed) throw new Error('ParamArena: used after dispose()');
  }
}

/** Throws unless two arenas have the same chunks and segments; returns `b`'s chunk views. */
function checkSameLayout(a: ParamArena, b: ParamArena): ReturnType<ParamArena['chunkViews']> {
  const ca = a.chunkViews();
  const cb = b.chunkViews();
  const same =
    ca.length === cb.length &&
    ca.every(
      (c, i) =>
        c.used === cb[i].used &&
        c.entries.length === cb[i].entries.length &&
        c.entries.every((e, j) => e.start === cb[i].entries[j].start && e.size === cb[i].entries[j].size),
    );
  if (!same) throw new Error('ParamArena: the two arenas have different layouts (build both models with the same adds in the same order)');
  return cb;
}

// -------------------------------------------------------------------------------------------------
// AdamW

/** Hyperparameters of AdamW (all may be changed between steps through the optimizer's fields). */
export interface AdamWOptions {
  lr: number;
  /** Default 0.9. */
  beta1?: number;
  /** Default 0.999. */
  beta2?: number;
  /** Default 1e-8. */
  eps?: number;
  /** Decoupled weight decay; default 0.01 (PyTorch's AdamW default; DINO schedules 0.04 → 0.4). */
  weightDecay?: number;
  /**
   * Which parameters are decayed: a predicate or the list of decayed names. Default: DINO's
   * get_params_groups, no decay for names ending in `.bias` and for tensors of rank ≤ 1.
   */
  wdMask?: ((name: string, shape: Shape) => boolean) | readonly string[];
  /**
   * Parameter groups inside the one arena: each parameter's lr and weight-decay multipliers, so
   * that it steps as a torch parameter group with lr·lrMultiplier and weightDecay·wdMultiplier
   * (DINOv2's layer-wise lr decay, patch-embed factor, no decay on biases, norms and LayerScale).
   * Replaces `wdMask` (give one or the other). Default: lr multiplier 1 and `wdMask`'s 0/1.
   */
  multipliers?: (name: string, shape: Shape) => ParamMultipliers;
}

/** A parameter's group multipliers (see AdamWOptions.multipliers). */
export interface ParamMultipliers {
  lr: number;
  wd: number;
}

/** AdamW's state for checkpoints: m and v flat in parameter order (no padding), per-parameter steps. */
export interface AdamWState {
  /** Number of `step()` calls. */
  step: number;
  m: Tensor;
  v: Tensor;
  /** Steps each parameter was updated (differs from `step` for parameters that missed gradients). */
  paramSteps: number[];
}

/** DINO's rule: biases and 1-D tensors (norm weights) are not decayed. */
export function dinoDecayMask(name: string, shape: Shape): boolean {
  return !(name.endsWith('.bias') || shape.length <= 1);
}

/**
 * AdamW over a whole ParamArena: one fused dispatch per chunk per step. The hyperparameters are
 * plain fields: set `opt.lr` / `opt.weightDecay` (or betas, eps) before any step; they are uniforms.
 * Each parameter has an lr and a weight-decay multiplier (AdamWOptions.multipliers, changeable
 * between steps with `setMultipliers`), written with the bias corrections into the per-segment
 * table that is uploaded every step anyway: parameter groups cost nothing extra.
 */
export class AdamW {
  readonly arena: ParamArena;
  lr: number;
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
  private steps = 0;
  private readonly paramSteps: Float64Array;
  /** Per parameter: lr multiplier λ and weight-decay multiplier ω. */
  private readonly lrMult: Float64Array;
  private readonly wdMult: Float64Array;
  private readonly m: Tensor[];
  private readonly v: Tensor[];
  /** Per chunk: (λ or inactive, ω, 1−β₁ᵗ, 1−β₂ᵗ) per segment, uploaded every step. */
  private readonly hyper: Tensor[];
  private readonly hyperHost: Float32Array[];

  constructor(arena: ParamArena, opts: AdamWOptions) {
    this.arena = arena;
    this.lr = opts.lr;
    this.beta1 = opts.beta1 ?? 0.9;
    this.beta2 = opts.beta2 ?? 0.999;
    this.eps = opts.eps ?? 1e-8;
    this.weightDecay = opts.weightDecay ?? 0.01;
    if (opts.multipliers && opts.wdMask) throw new Error('AdamW: give either wdMask or multipliers, not both');
    const mask = opts.wdMask ?? dinoDecayMask;
    const decayed = (name: string, shape: Shape) => (typeof mask === 'function' ? mask(name, shape) : mask.includes(name));
    const chunks = arena.chunkViews();
    const e = arena.engine;
    const entries = arena.entries();
    this.lrMult = new Float64Array(entries.length).fill(1);
    this.wdMult = new Float64Array(entries.length);
    entries.forEach(([name, t], k) => {
      if (opts.multipliers) {
        const m = opts.multipliers(name, t.shape);
        this.setMultipliersAt(k, m.lr, m.wd);
      } else {
        this.wdMult[k] = decayed(name, t.shape) ? 1 : 0;
      }
    });
    this.paramSteps = new Float64Array(arena.numTensors);
    this.m = chunks.map((c) => e.keep(e.zeros([c.used], { label: 'adamw-m' })));
    this.v = chunks.map((c) => e.keep(e.zeros([c.used], { label: 'adamw-v' })));
    this.hyper = chunks.map((c) => e.keep(e.empty([4 * c.entries.length], { label: 'adamw-hyper' })));
    this.hyperHost = chunks.map((c) => new Float32Array(4 * c.entries.length));
  }

  /** Number of steps taken. */
  get stepCount(): number {
    return this.steps;
  }

  /** The lr and weight-decay multipliers of parameter `name`. */
  multipliersOf(name: string): ParamMultipliers {
    const k = this.indexOf(name);
    return { lr: this.lrMult[k], wd: this.wdMult[k] };
  }

  /** Changes the multipliers of parameter `name` from the next step on (a field of the next upload). */
  setMultipliers(name: string, m: Partial<ParamMultipliers>): void {
    const k = this.indexOf(name);
    this.setMultipliersAt(k, m.lr ?? this.lrMult[k], m.wd ?? this.wdMult[k]);
  }

  private setMultipliersAt(k: number, lr: number, wd: number): void {
    if (!(Number.isFinite(lr) && lr >= 0 && Number.isFinite(wd) && wd >= 0)) {
      throw new RangeError(`AdamW: the multipliers of '${this.arena.names[k]}' must be finite and ≥ 0 (lr ${lr}, wd ${wd})`);
    }
    this.lrMult[k] = lr;
    this.wdMult[k] = wd;
  }

  private indexOf(name: string): number {
    const k = this.arena.names.indexOf(name);
    if (k < 0) throw new Error(`AdamW: no parameter named '${name}'`);
    return k;
  }

  /**
   * One AdamW step of every parameter that has a gradient (gathering `.grad` first unless
   * `arena.gatherGrads()` ran since the last step). Records the dispatches; no readback.
   */
  step(): void {
    const a = this.arena;
    a.ensureGathered();
    const present = a.gradPresent();
    const params = a.params;
    const chunks = a.chunkViews();
    const h = { lr: this.lr, beta1: this.beta1, beta2: this.beta2, eps: this.eps, weightDecay: this.weightDecay };
    this.steps++;
    chunks.forEach((c, ci) => {
      const host = this.hyperHost[ci];
      c.entries.forEach((entry, j) => {
        const k = entry.index;
        const active = present[k] && params[k].requiresGrad;
        if (active) this.paramSteps[k]++;
        const t = this.paramSteps[k];
        // Bias corrections in float64 (1 − 0.999ᵗ would lose 5 digits in f32 at t = 1).
        host.set(active ? [this.lrMult[k], this.wdMult[k], 1 - this.beta1 ** t, 1 - this.beta2 ** t] : [ADAMW_INACTIVE, 0, 1, 1], 4 * j);
      });
      a.engine.device.write(this.hyper[ci].buffer, 0, host);
      adamwRaw(c.data, a.gradBuffer(ci), this.m[ci], this.v[ci], c.layout, this.hyper[ci], h);
    });
    a.consumeGrads();
  }

  /** Frees the parameters' `.grad` (set_to_none). */
  zeroGrad(): void {
    this.arena.zeroGrad();
  }

  /** Copies of m and v (flat, parameter order, no padding) and the step counts, for a checkpoint. */
  state(): AdamWState {
    const e = this.arena.engine;
    const total = this.arena.numel;
    const m = e.empty([total], { label: 'adamw-m' });
    const v = e.empty([total], { label: 'adamw-v' });
    this.eachSegment((ci, start, flat, size) => {
      e.device.copy(this.m[ci].buffer, start * 4, m.buffer, flat * 4, size * 4);
      e.device.copy(this.v[ci].buffer, start * 4, v.buffer, flat * 4, size * 4);
    });
    return { step: this.steps, m, v, paramSteps: Array.from(this.paramSteps) };
  }

  /** Restores a state from `state()` (same arena layout; `paramSteps` defaults to `step` for all). */
  loadState(s: { step: number; m: Tensor; v: Tensor; paramSteps?: readonly number[] }): void {
    const total = this.arena.numel;
    if (s.m.size !== total || s.v.size !== total) {
      throw new ShapeError(`AdamW.loadState: m ${fmt(s.m.shape)} / v ${fmt(s.v.shape)} do not hold ${total} elements`);
    }
    if (s.paramSteps && s.paramSteps.length !== this.paramSteps.length) {
      throw new Error(`AdamW.loadState: ${s.paramSteps.length} step counts for ${this.paramSteps.length} parameters`);
    }
    const e = this.arena.engine;
    const m = s.m.isContiguous ? s.m : s.m.contiguous();
    const v = s.v.isContiguous ? s.v : s.v.contiguous();
    this.eachSegment((ci, start, flat, size) => {
      e.device.copy(m.buffer, flat * 4, this.m[ci].buffer, start * 4, size * 4);
      e.device.copy(v.buffer, flat * 4, this.v[ci].buffer, start * 4, size * 4);
    });
    if (m !== s.m) m.dispose();
    if (v !== s.v) v.dispose();
    this.steps = s.step;
    this.paramSteps.set(s.paramSteps ?? new Array(this.paramSteps.length).fill(s.step));
  }

  private eachSegment(fn: (chunk: number, start: number, flat: number, size: number) => void): void {
    let flat = 0;
    this.arena.chunkViews().forEach((c, ci) => {
      for (const entry of c.entries) {
        if (entry.size > 0) fn(ci, entry.start, flat, entry.size);
        flat += entry.size;
      }
    });
  }

  /** Frees m, v and the tables (not the arena). */
  dispose(): void {
    for (const t of [...this.m, ...this.v, ...this.hyper]) t.dispose();
  }
}

// -------------------------------------------------------------------------------------------------
// EMA, norms, clipping

/**
 * teacher ← m·teacher + (1−m)·student over every parameter: one dispatch per chunk. Both arenas
 * must have the same layout (the same model built twice). `momentum` is a uniform.
 */
export function emaUpdate(teacher: ParamArena, student: ParamArena, momentum: number): void {
  const t = teacher.chunkViews();
  const s = checkSameLayout(teacher, student);
  t.forEach((c, i) => lerpRaw(teacher.engine, c.data.buffer, 0, s[i].data.buffer, 0, c.used, momentum));
}

/** Tensors packed into one aligned flat buffer (a temporary arena) for the segmented kernels. */
interface Packed {
  flat: Tensor;
  layout: SegmentLayout;
  starts: number[];
}

function pack(engine: Engine, tensors: readonly (Tensor | null)[]): Packed {
  const starts: number[] = [];
  let end = 0;
  for (const t of tensors) {
    starts.push(end);
    end = alignUp(end + (t?.size ?? 0));
  }
  const flat = engine.empty([Math.max(end, ALIGN)], { label: 'packed' });
  tensors.forEach((t, k) => {
    if (!t || t.size === 0) return;
    if (isContiguous(t.shape, t.strides)) {
      engine.device.copy(t.buffer, t.offset * 4, flat.buffer, starts[k] * 4, t.size * 4);
    } else {
      const dst = flat.view(t.shape, contiguousStrides(t.shape), starts[k]);
      stridedCopy(dst, t);
      dst.dispose();
    }
  });
  const sizes = tensors.map((t) => t?.size ?? 0);
  return { flat, layout: new SegmentLayout(engine, starts, sizes), starts };
}

function releasePacked(p: Packed): void {
  p.flat.dispose();
  p.layout.dispose();
}

/** The engine of an arena or of the first tensor of a list. */
function engineOf(source: ParamArena | readonly (Tensor | null)[]): Engine {
  if (source instanceof ParamArena) return source.engine;
  const t = source.find((x) => x);
  if (!t) throw new Error('norms: no tensors');
  return t.engine;
}

/** L2 norm of each tensor's values, as a [n] GPU tensor (0 for null). A few dispatches, no readback. */
export function tensorNorms(tensors: readonly (Tensor | null)[]): Tensor {
  const e = engineOf(tensors);
  const p = pack(e, tensors);
  const out = e.empty([tensors.length], { label: 'norms' });
  segmentNormsRaw(p.flat, p.layout, out, 0);
  releasePacked(p);
  return out;
}

/**
 * Per-tensor L2 norms of the gradients, [numTensors] on the GPU (0 where a parameter has no
 * gradient). For an arena: of the gathered gradient arena (gathered first when needed); for a list of
 * parameters: of their `.grad`.
 */
export function gradNorms(source: ParamArena | readonly Tensor[]): Tensor {
  if (!(source instanceof ParamArena)) return tensorNorms(source.map((p) => p.grad));
  source.ensureGathered();
  const e = source.engine;
  const out = e.empty([source.numTensors], { label: 'grad-norms' });
  source.chunkViews().forEach((c, i) => segmentNormsRaw(source.gradBuffer(i), c.layout, out, c.firstIndex));
  return out;
}

/**
 * DINO's utils.clip_gradients, on the GPU: per tensor, g ← g·maxNorm/(‖g‖ + 1e-6) where that factor
 * is below 1. Returns the norms before clipping ([numTensors], caller owns it; `totalNorm(norms)`
 * gives the global norm). For a list of parameters their `.grad` are clipped in place.
 */
export function clipGradients(source: ParamArena | readonly Tensor[], maxNorm: number): Tensor {
  if (source instanceof ParamArena) {
    const norms = gradNorms(source);
    source.chunkViews().forEach((c, i) => clipSegmentsRaw(source.gradBuffer(i), c.layout, norms, c.firstIndex, maxNorm));
    return norms;
  }
  const grads = source.map((p) => p.grad);
  const e = engineOf(grads);
  const p = pack(e, grads);
  const norms = e.empty([grads.length], { label: 'grad-norms' });
  segmentNormsRaw(p.flat, p.layout, norms, 0);
  clipSegmentsRaw(p.flat, p.layout, norms, 0, maxNorm);
  grads.forEach((g, k) => {
    if (!g || g.size === 0) return;
    if (isContiguous(g.shape, g.strides)) {
      e.device.copy(p.flat.buffer, p.starts[k] * 4, g.buffer, g.offset * 4, g.size * 4);
    } else {
      const src = p.flat.view(g.shape, contiguousStrides(g.shape), p.starts[k]);
      stridedCopy(g, src);
      src.dispose();
    }
  });
  releasePacked(p);
  return norms;
}
