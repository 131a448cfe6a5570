/**
 * The device layer: one interface over WebGPU in Node (the `webgpu` package, Dawn) and in browsers
 * (`navigator.gpu`).
 *
 * Responsibilities
 * - find an adapter and request its larger limits (storage binding size, buffer size, workgroup
 *   storage, invocations) instead of the spec defaults, and the optional features we use
 *   (`shader-f16`, `subgroups`, `timestamp-query`);
 * - record many dispatches into one command encoder / compute pass and submit them together
 *   (`flush`), so a training step is a few submits, not hundreds; but not all of a step in one:
 *   a submit every `maxDispatchesPerSubmit` (64) lets the GPU run while JavaScript records the
 *   rest (see that option);
 * - pack every dispatch's uniforms into one staging arena that is written once per submit;
 * - cache compute pipelines by (kernel name, WGSL source) — shapes never enter a pipeline key;
 * - watch `device.lost` and uncaptured errors and turn them into exceptions on the next call.
 *
 * Invariants
 * - Dispatches execute in recording order (WebGPU inserts the barriers between dispatches), so a
 *   buffer returned to the pool may be reused by the very next dispatch without a fence.
 * - Uniform structs used by kernels contain only 4-byte scalars (u32 / i32 / f32), so their WGSL
 *   layout is the packed order of the fields.
 */
/// <reference types="@webgpu/types" />

export type VariantPreference = 'auto' | 'cpu' | 'gpu';

/**
 * How the row kernels (softmax, cross-entropy, layernorm, l2-normalize) spread a row over lanes
 * (kernels/common.ts has the layouts): 'serial' one invocation per row; 'subgroup' one 8-lane
 * workgroup per row reduced with subgroup operations; 'workgroup' 256 lanes per row reduced
 * through workgroup memory; 'workgroup-subgroup' 256 lanes, subgroup operations then one barrier.
 */
export type RowLayout = 'serial' | 'subgroup' | 'workgroup' | 'workgroup-subgroup';
/** Every row layout, in the order tests force them. */
export const ROW_LAYOUTS: readonly RowLayout[] = ['serial', 'subgroup', 'workgroup', 'workgroup-subgroup'];
/** Lanes of the 'subgroup' row layout; the adapter's smallest subgroup must hold them. */
export const ROW_SUBGROUP_LANES = 8;

export interface DeviceOptions {
  /**
   * Which kernel variants to prefer. 'auto' picks per adapter: CPU Vulkan drivers (lavapipe,
   * SwiftShader) get the barrier-free register-blocked kernels, real GPUs the workgroup-memory
   * tiled ones. Tests force each in turn.
   */
  variants?: VariantPreference;
  /**
   * Layout of the row kernels. 'auto' (default) picks per variant family and row shape
   * (kernels/common.ts `rowConsts`): on CPU drivers 'serial' for rows of up to 4096 elements when
   * there are at least 64 of them, else 'subgroup' when the adapter has subgroups of at least 8
   * lanes (barriers cost more than they save there); on GPUs 'workgroup-subgroup' with subgroups,
   * else 'workgroup'. Measurements: bench/lab/row-probe.ts (figures: bench/lab/memory-bound.md). Forcing a layout the adapter cannot
   * run throws.
   */
  rowLayout?: RowLayout | 'auto';
  /**
   * Submit automatically after this many recorded dispatches (default 64). The GPU starts on a
   * submit only, so with one submit per step (512 and more: the DINO step at the CPU default
   * config has ~520 dispatches between its two readbacks) JavaScript's recording and the GPU's
   * work run one after the other; at 64 the GPU works while the rest is recorded. DINO step at the
   * CPU default, lavapipe on 2 cores shared with other jobs (load average 21; median of 5 steps
   * per run, runs alternated): 512: 2.29, 3.93, 2.31, 2.47 s; 128: 1.49; 64: 1.45; 48: 1.12,
   * 1.41, 2.12; 32: 2.73. The noise does not tell 32–128 apart; 512 was the slowest of every
   * round. A submit costs one uniform upload and one queue submit.
   */
  maxDispatchesPerSubmit?: number;
  /** 'high-performance' (default) or 'low-power'. */
  powerPreference?: GPUPowerPreference;
  /** An existing GPU object (navigator.gpu or Dawn's `create()` result); found automatically otherwise. */
  gpu?: GPU;
  /**
   * Node only: Dawn toggles passed to `create()`, e.g. `['disable-dawn-features=timestamp_quantization']`.
   * Timestamp quantization is disabled by default so kernel timings are not rounded to 65.5 µs.
   */
  dawnToggles?: string[];
}

/** Which features the adapter gave us. */
export interface DeviceFeatures {
  shaderF16: boolean;
  subgroups: boolean;
  timestampQuery: boolean;
}

export interface AdapterDescription {
  vendor: string;
  architecture: string;
  device: string;
  description: string;
  /** True for CPU Vulkan implementations (lavapipe / llvmpipe, SwiftShader). */
  isCpu: boolean;
  /** Smallest and largest subgroup size the adapter reports (0 when it does not say). */
  subgroupMinSize: number;
  subgroupMaxSize: number;
}

/** A storage or uniform binding of one dispatch. */
export interface BufferBinding {
  buffer: GPUBuffer;
  /** Bytes; must respect minStorageBufferOffsetAlignment when non-zero. */
  offset?: number;
  size?: number;
}

export interface DispatchArgs {
  /** Storage buffers bound at @binding(1), @binding(2), ... in this order. */
  buffers: (GPUBuffer | BufferBinding)[];
  /** Uniform data bound at @binding(0); see `Uniforms`. Omit for kernels without uniforms. */
  uniforms?: ArrayBuffer;
  workgroups: [number, number?, number?];
}

/** A compiled kernel: the pipeline of one WGSL source. */
export interface Kernel {
  readonly name: string;
  readonly pipeline: GPUComputePipeline;
  readonly hasUniforms: boolean;
}

/** Builds an ArrayBuffer for a uniform struct made only of 4-byte scalars, in field order. */
export class Uniforms {
  private readonly view: DataView;
  private readonly buf: ArrayBuffer;
  private n = 0;
  constructor(capacityFields = 64) {
    this.buf = new ArrayBuffer(capacityFields * 4);
    this.view = new DataView(this.buf);
  }
  u32(...values: number[]): this {
    for (const v of values) {
      if (!Number.isInteger(v) || v < 0 || v > 0xffffffff) throw new RangeError(`uniform u32 out of range: ${v}`);
      this.view.setUint32(4 * this.n++, v, true);
    }
    return this;
  }
  i32(...values: number[]): this {
    for (const v of values) this.view.setInt32(4 * this.n++, v, true);
    return this;
  }
  f32(...values: number[]): this {
    for (const v of values) this.view.setFloat32(4 * this.n++, v, true);
    return this;
  }
  /** The bytes, padded to 16 (uniform structs are sized in multiples of 16). */
  bytes(): ArrayBuffer {
    const size = Math.max(16, Math.ceil((this.n * 4) / 16) * 16);
    return this.buf.slice(0, size);
  }
}

/** Thrown when no WebGPU adapter can be found: says what to install. */
export class NoAdapterError extends Error {
  constructor(detail: string) {
    super(
      `webdino: no WebGPU adapter found (${detail}).\n` +
        (typeof process !== 'undefined' && process.platform === 'linux'
          ? '  On Linux without a GPU, install the Mesa Vulkan driver (lavapipe) 25.x: on Debian bookworm,\n' +
            '  enable bookworm-backports and `apt-get install -t bookworm-backports mesa-vulkan-drivers libvulkan1`\n' +
            '  (scripts/setup.sh in this repository does exactly that).\n' +
            '  With a GPU, install its Vulkan driver (e.g. the NVIDIA driver with Vulkan ICD).'
          : '  In a browser, WebGPU needs a secure context (https or localhost) and a browser with WebGPU\n' +
            '  enabled (Chrome/Edge 113+, or --enable-unsafe-webgpu on Linux).'),
    );
    this.name = 'NoAdapterError';
  }
}

/** Thrown when the device was lost or reported an uncaptured error. */
export class DeviceError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'DeviceError';
  }
}

const UNIFORM_ALIGN = 256; // the spec's largest minUniformBufferOffsetAlignment

async function findGpu(opts: DeviceOptions): Promise<GPU> {
  if (opts.gpu) return opts.gpu;
  const nav = (globalThis as { navigator?: { gpu?: GPU } }).navigator;
  if (nav?.gpu) return nav.gpu;
  // Node: Dawn's bindings. The import is dynamic so browser bundles never include it.
  const { nodeGpu } = await import('./node-gpu.js');
  return nodeGpu(opts.dawnToggles ?? ['disable-dawn-features=timestamp_quantization']);
}

function describeAdapter(info: GPUAdapterInfo | undefined): AdapterDescription {
  const vendor = info?.vendor ?? '';
  const architecture = info?.architecture ?? '';
  const device = info?.device ?? '';
  const description = info?.description ?? '';
  const all = `${vendor} ${architecture} ${device} ${description}`.toLowerCase();
  const isCpu =
    /llvmpipe|lavapipe|swiftshader|\bcpu\b|software/.test(all) || (info as { type?: string } | undefined)?.type === 'CPU';
  const sizes = info as { subgroupMinSize?: number; subgroupMaxSize?: number } | undefined;
  return { vendor, architecture, device, description, isCpu, subgroupMinSize: sizes?.subgroupMinSize ?? 0, subgroupMaxSize: sizes?.subgroupMaxSize ?? 0 };
}

/**
 * A WebGPU device with recording, pipelines and uniforms. Create it with `Device.create()`.
 */
export class Device {
  readonly gpu: GPUDevice;
  readonly adapter: AdapterDescription;
  readonly features: DeviceFeatures;
  readonly limits: GPUSupportedLimits;
  /** 'cpu' selects barrier-free kernel variants, 'gpu' workgroup-memory tiled ones. */
  variants: 'cpu' | 'gpu';
  /** Layout of the row kernels (see RowLayout), or 'auto'; set it only to one `rowLayoutSupported` accepts. */
  rowLayout: RowLayout | 'auto';
  readonly maxDispatchesPerSubmit: number;

  private encoder: GPUCommandEncoder | null = null;
  private pass: GPUComputePassEncoder | null = null;
  private dispatchesInSubmit = 0;
  private readonly pipelines = new Map<string, Kernel>();
  private readonly modules = new Map<string, GPUShaderModule>();
  /** Uniform data of the dispatches recorded since the last submit. */
  private uniformStaging = new Uint8Array(64 * 1024);
  private uniformUsed = 0;
  private uniformBuffer: GPUBuffer;
  private fatal: Error | null = null;
  private destroyed = false;
  /** Counters, for tests and benchmarks. */
  readonly stats = { dispatches: 0, submits: 0, pipelines: 0, copies: 0 };
  /** Called at every submit; the buffer pool uses it to return buffers released during recording. */
  onSubmit: (() => void) | null = null;
  /** Per-kernel GPU time while profiling (see `startProfile`). */
  private profile: {
    querySet: GPUQuerySet;
    names: string[];
    totals: Map<string, { ms: number; count: number }>;
    pending: Promise<void>[];
  } | null = null;

  private constructor(gpu: GPUDevice, adapter: AdapterDescription, features: DeviceFeatures, opts: DeviceOptions) {
    this.gpu = gpu;
    this.adapter = adapter;
    this.features = features;
    this.limits = gpu.limits;
    const pref = opts.variants ?? 'auto';
    this.variants = pref === 'auto' ? (adapter.isCpu ? 'cpu' : 'gpu') : pref;
    const row = opts.rowLayout ?? 'auto';
    if (row !== 'auto' && !this.rowLayoutSupported(row)) {
      throw new DeviceError(`webdino: row layout '${row}' needs subgroups of at least ${ROW_SUBGROUP_LANES} lanes, which ${this.adapterName()} does not offer`);
    }
    this.rowLayout = row;
    this.maxDispatchesPerSubmit = opts.maxDispatchesPerSubmit ?? 64;
    this.uniformBuffer = this.makeUniformBuffer(this.uniformStaging.byteLength);
    gpu.lost.then((info) => {
      if (!this.destroyed) this.fatal = new DeviceError(`webdino: the GPU device was lost (${info.reason}): ${info.message}`);
    });
    gpu.addEventListener('uncapturederror', this.onUncapturedError);
  }

  /**
   * Turns an uncaptured error into the exception of the next call. A field, not a method, so that
   * `destroy()` can remove the very listener: Dawn keeps a listener (and through it this Device,
   * its pipelines and compiled shaders) alive for as long as it is registered, even after
   * `GPUDevice.destroy()`.
   */
  private readonly onUncapturedError = (ev: Event): void => {
    const err = (ev as GPUUncapturedErrorEvent).error;
    this.fatal ??= new DeviceError(`webdino: uncaptured WebGPU error: ${err.message}`);
  };

  /** Finds an adapter, requests its larger limits and our optional features, and returns a device. */
  static async create(opts: DeviceOptions = {}): Promise<Device> {
    let gpu: GPU;
    try {
      gpu = await findGpu(opts);
    } catch (e) {
      throw new NoAdapterError(`WebGPU is not available: ${(e as Error).message}`);
    }
    const adapter = await gpu.requestAdapter({ powerPreference: opts.powerPreference ?? 'high-performance' });
    if (!adapter) throw new NoAdapterError('requestAdapter() returned null');
    const wanted: GPUFeatureName[] = ['shader-f16', 'subgroups', 'timestamp-query'] as GPUFeatureName[];
    const requiredFeatures = wanted.filter((f) => adapter.features.has(f));
    const l = adapter.limits;
    const requiredLimits: Record<string, number> = {
      maxStorageBufferBindingSize: l.maxStorageBufferBindingSize,
      maxBufferSize: l.maxBufferSize,
      maxComputeWorkgroupStorageSize: l.maxComputeWorkgroupStorageSize,
      maxComputeInvocationsPerWorkgroup: l.maxComputeInvocationsPerWorkgroup,
      maxComputeWorkgroupSizeX: l.maxComputeWorkgroupSizeX,
      maxComputeWorkgroupSizeY: l.maxComputeWorkgroupSizeY,
      maxComputeWorkgroupSizeZ: l.maxComputeWorkgroupSizeZ,
      maxStorageBuffersPerShaderStage: l.maxStorageBuffersPerShaderStage,
      maxComputeWorkgroupsPerDimension: l.maxComputeWorkgroupsPerDimension,
    };
    const device = await adapter.requestDevice({ requiredFeatures, requiredLimits });
    const features: DeviceFeatures = {
      shaderF16: device.features.has('shader-f16'),
      subgroups: device.features.has('subgroups'),
      timestampQuery: device.features.has('timestamp-query'),
    };
    return new Device(device, describeAdapter(adapter.info), features, opts);
  }

  /** Whether the row layout computes correct results here (the subgroup ones need subgroups). */
  rowLayoutSupported(layout: RowLayout): boolean {
    if (layout === 'subgroup') return this.features.subgroups && this.adapter.subgroupMinSize >= ROW_SUBGROUP_LANES;
    if (layout === 'workgroup-subgroup') return this.features.subgroups;
    return true;
  }

  /**
   * The row layout for rows×D rows (DeviceOptions.rowLayout): the forced one, or the 'auto' rule.
   * The CPU rule is measured (bench/lab/row-probe.ts (figures: bench/lab/memory-bound.md)); the GPU one is the usual practice
   * (subgroup reductions, then workgroup memory), not measured here.
   */
  rowLayoutFor(rows: number, D: number): RowLayout {
    if (this.rowLayout !== 'auto') return this.rowLayout;
    if (this.variants === 'cpu') {
      if ((D <= 4096 && rows >= 64) || !this.rowLayoutSupported('subgroup')) return 'serial';
      return 'subgroup';
    }
    return this.rowLayoutSupported('workgroup-subgroup') ? 'workgroup-subgroup' : 'workgroup';
  }

  /** Throws if a feature the caller needs is missing, naming the feature and the adapter. */
  require(feature: keyof DeviceFeatures): void {
    if (!this.features[feature]) {
      const names: Record<keyof DeviceFeatures, string> = {
        shaderF16: 'shader-f16',
        subgroups: 'subgroups',
        timestampQuery: 'timestamp-query',
      };
      throw new DeviceError(
        `webdino: this needs the adapter feature '${names[feature]}', which ${this.adapterName()} does not offer`,
      );
    }
  }

  adapterName(): string {
    const a = this.adapter;
    return [a.vendor, a.architecture, a.device, a.description].filter(Boolean).join(' ') || 'the adapter';
  }

  /** Throws the pending device-lost or uncaptured error, if any. */
  check(): void {
    if (this.fatal) throw this.fatal;
    if (this.destroyed) throw new DeviceError('webdino: the device was destroyed');
  }

  // ---------------------------------------------------------------------------------------------
  // Pipelines

  /**
   * Returns the compiled kernel for a WGSL source, compiling it on first use. `name` is for error
   * messages and profiles; the cache key is the source itself, so a kernel builder that is a pure
   * function of its compile-time constants yields one pipeline per constant set.
   */
  kernel(name: string, wgsl: string): Kernel {
    const key = wgsl;
    let k = this.pipelines.get(key);
    if (k) return k;
    this.check();
    this.gpu.pushErrorScope('validation');
    const module = this.gpu.createShaderModule({ code: wgsl, label: name });
    const pipeline = this.gpu.createComputePipeline({ layout: 'auto', compute: { module, entryPoint: 'main' }, label: name });
    // Validation errors surface asynchronously; report them with the kernel's name and source.
    void this.gpu.popErrorScope().then((err) => {
      if (err) {
        this.fatal ??= new DeviceError(`webdino: kernel '${name}' failed to compile: ${err.message}\n--- WGSL ---\n${wgsl}`);
      }
    });
    this.modules.set(key, module);
    k = { name, pipeline, hasUniforms: /@binding\(0\)\s*var<uniform>/.test(wgsl) };
    this.pipelines.set(key, k);
    this.stats.pipelines++;
    return k;
  }

  /** Compile-time errors of a kernel, for tests: resolves to the messages (empty when it compiled). */
  async compilationMessages(wgsl: string): Promise<string[]> {
    const module = this.modules.get(wgsl) ?? this.gpu.createShaderModule({ code: wgsl });
    const info = await module.getCompilationInfo();
    return info.messages.filter((m) => m.type === 'error').map((m) => `${m.lineNum}:${m.linePos} ${m.message}`);
  }

  // ---------------------------------------------------------------------------------------------
  // Recording

  private makeUniformBuffer(size: number): GPUBuffer {
    return this.gpu.createBuffer({ size, usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST, label: 'webdino-uniforms' });
  }

  private ensurePass(): GPUComputePassEncoder {
    if (!this.encoder) this.encoder = this.gpu.createCommandEncoder();
    if (!this.pass) this.pass = this.encoder.beginComputePass();
    return this.pass;
  }

  /** The open command encoder with no pass open, for copies and timestamp passes. */
  encoderForCopy(): GPUCommandEncoder {
    if (this.pass) {
      this.pass.end();
      this.pass = null;
    }
    if (!this.encoder) this.encoder = this.gpu.createCommandEncoder();
    return this.encoder;
  }

  /** Records one dispatch of `kernel` into the current compute pass. */
  dispatch(kernel: Kernel, args: DispatchArgs): void {
    this.check();
    const entries: GPUBindGroupEntry[] = [];
    if (kernel.hasUniforms) {
      if (!args.uniforms) throw new Error(`webdino: kernel '${kernel.name}' needs uniforms`);
      const off = this.stageUniforms(args.uniforms);
      entries.push({ binding: 0, resource: { buffer: this.uniformBuffer, offset: off, size: args.uniforms.byteLength } });
    }
    const bindLimit = this.limits.maxStorageBufferBindingSize;
    args.buffers.forEach((b, i) => {
      const binding: BufferBinding = 'buffer' in b ? b : { buffer: b };
      // A binding over the limit would be a validation error reported later, asynchronously and
      // far from its cause; refuse it here with the kernel and the buffer named.
      const size = binding.size ?? binding.buffer.size - (binding.offset ?? 0);
      if (size > bindLimit) {
        throw new RangeError(
          `webdino: kernel '${kernel.name}' would bind ${binding.buffer.label ? `'${binding.buffer.label}'` : `buffer ${i}`} of ${size} bytes, over the device's ${bindLimit}-byte storage binding limit; use smaller batches or inputs`,
        );
      }
      entries.push({ binding: i + 1, resource: { buffer: binding.buffer, offset: binding.offset ?? 0, size: binding.size } });
    });
    const bindGroup = this.gpu.createBindGroup({ layout: kernel.pipeline.getBindGroupLayout(0), entries });
    const [x, y = 1, z = 1] = args.workgroups;
    const maxDim = this.limits.maxComputeWorkgroupsPerDimension;
    if (x > maxDim || y > maxDim || z > maxDim) {
      throw new RangeError(`webdino: kernel '${kernel.name}' dispatch ${x}x${y}x${z} exceeds ${maxDim} workgroups per dimension`);
    }
    if (x === 0 || y === 0 || z === 0) return;
    if (this.profile) {
      // One pass per dispatch, bracketed by timestamps, read back at the next submit.
      const p = this.profile;
      const enc = this.encoderForCopy();
      const i = p.names.length;
      const pass = enc.beginComputePass({ timestampWrites: { querySet: p.querySet, beginningOfPassWriteIndex: 2 * i, endOfPassWriteIndex: 2 * i + 1 } });
      pass.setPipeline(kernel.pipeline);
      pass.setBindGroup(0, bindGroup);
      pass.dispatchWorkgroups(x, y, z);
      pass.end();
      p.names.push(kernel.name);
      this.stats.dispatches++;
      if (p.names.length * 2 >= p.querySet.count) this.flush();
      return;
    }
    const pass = this.ensurePass();
    pass.setPipeline(kernel.pipeline);
    pass.setBindGroup(0, bindGroup);
    pass.dispatchWorkgroups(x, y, z);
    this.stats.dispatches++;
    if (++this.dispatchesInSubmit >= this.maxDispatchesPerSubmit) this.flush();
  }

  /**
   * Copies `size` bytes between buffers in recording order (ends the current pass; the next
   * dispatch opens a new one).
   */
  copy(src: GPUBuffer, srcOffset: number, dst: GPUBuffer, dstOffset: number, size: number): void {
    this.check();
    this.encoderForCopy().copyBufferToBuffer(src, srcOffset, dst, dstOffset, size);
    this.stats.copies++;
  }

  private stageUniforms(data: ArrayBuffer): number {
    const off = this.uniformUsed;
    const need = off + data.byteLength;
    if (need > this.uniformStaging.byteLength) {
      if (this.uniformUsed > 0 && need > 4 * 1024 * 1024) {
        // Keep the arena bounded: submit what is recorded and start over.
        this.flush();
        return this.stageUniforms(data);
      }
      // Grow: the bind groups recorded so far point at the old buffer, so submit them first.
      const size = Math.max(need, this.uniformStaging.byteLength * 2);
      if (this.uniformUsed > 0) this.flush();
      this.uniformStaging = new Uint8Array(size);
      this.uniformBuffer.destroy();
      this.uniformBuffer = this.makeUniformBuffer(size);
      return this.stageUniforms(data);
    }
    this.uniformStaging.set(new Uint8Array(data), off);
    this.uniformUsed = Math.ceil(need / UNIFORM_ALIGN) * UNIFORM_ALIGN;
    return off;
  }

  /** Submits everything recorded so far. Cheap when nothing is recorded. */
  flush(): void {
    this.check();
    if (this.pass) {
      this.pass.end();
      this.pass = null;
    }
    if (!this.encoder) return;
    if (this.uniformUsed > 0) {
      // Queue order: this write lands before the command buffer below runs and after every earlier
      // submit has finished reading the buffer.
      this.gpu.queue.writeBuffer(this.uniformBuffer, 0, this.uniformStaging, 0, this.uniformUsed);
      this.uniformUsed = 0;
    }
    const readProfile = this.profile && this.profile.names.length ? this.resolveProfile(this.encoder) : null;
    const cb = this.encoder.finish();
    this.encoder = null;
    this.dispatchesInSubmit = 0;
    this.gpu.queue.submit([cb]);
    this.stats.submits++;
    readProfile?.();
    this.onSubmit?.();
  }

  // ---------------------------------------------------------------------------------------------
  // Profiling

  /**
   * Starts per-kernel GPU timing (needs 'timestamp-query'): every dispatch then runs in its own
   * timestamped pass, which serialises work, so use it to find hot kernels, not for throughput.
   */
  startProfile(): void {
    this.require('timestampQuery');
    this.flush();
    const count = 2 * 256;
    this.profile = { querySet: this.gpu.createQuerySet({ type: 'timestamp', count }), names: [], totals: new Map(), pending: [] };
  }

  /** Stops profiling and returns GPU milliseconds and dispatch counts per kernel name, largest first. */
  async stopProfile(): Promise<{ kernel: string; ms: number; count: number }[]> {
    const p = this.profile;
    if (!p) return [];
    this.flush();
    await Promise.all(p.pending);
    this.profile = null;
    p.querySet.destroy();
    return [...p.totals].map(([kernel, v]) => ({ kernel, ...v })).sort((a, b) => b.ms - a.ms);
  }

  private resolveProfile(enc: GPUCommandEncoder): () => void {
    const p = this.profile!;
    const n = p.names.length;
    const names = p.names.splice(0);
    const resolve = this.gpu.createBuffer({ size: n * 16, usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC });
    const read = this.gpu.createBuffer({ size: n * 16, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
    enc.resolveQuerySet(p.querySet, 0, 2 * n, resolve, 0);
    enc.copyBufferToBuffer(resolve, 0, read, 0, n * 16);
    return () => {
      p.pending.push(
        read.mapAsync(GPUMapMode.READ).then(() => {
          const t = new BigUint64Array(read.getMappedRange());
          names.forEach((name, i) => {
            const ms = Number(t[2 * i + 1] - t[2 * i]) / 1e6;
            const e = p.totals.get(name) ?? { ms: 0, count: 0 };
            e.ms += ms;
            e.count++;
            p.totals.set(name, e);
          });
          read.unmap();
          read.destroy();
          resolve.destroy();
        }),
      );
    };
  }

  /** Submits and waits until the GPU has finished all submitted work. */
  async sync(): Promise<void> {
    this.flush();
    await this.gpu.queue.onSubmittedWorkDone();
    this.check();
  }

  /** Reads `size` bytes of `buffer` from `offset` back to the CPU (submits pending work first). */
  async read(buffer: GPUBuffer, offset: number, size: number): Promise<ArrayBuffer> {
    const aligned = Math.ceil(size / 4) * 4;
    const staging = this.gpu.createBuffer({ size: Math.max(aligned, 4), usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
    this.encoderForCopy().copyBufferToBuffer(buffer, offset, staging, 0, aligned);
    this.flush();
    await staging.mapAsync(GPUMapMode.READ);
    this.check();
    const out = staging.getMappedRange().slice(0, size);
    staging.unmap();
    staging.destroy();
    return out;
  }

  /** Writes `data` into `buffer` at `offset` in queue order (pending dispatches are submitted first). */
  write(buffer: GPUBuffer, offset: number, data: ArrayBufferView): void {
    // Dispatches recorded before this call must see the old contents: submit them first.
    if (this.encoder) this.flush();
    this.gpu.queue.writeBuffer(buffer, offset, data.buffer, data.byteOffset, data.byteLength);
  }

  /**
   * Releases the device. Every buffer and tensor of it becomes unusable. Native memory is returned
   * too: the error listener is removed (it would keep this object and every pipeline reachable),
   * and the pipeline and shader caches are dropped.
   */
  destroy(): void {
    if (this.destroyed) return;
    try {
      if (!this.fatal) this.flush();
    } catch {
      /* destroying anyway */
    }
    this.destroyed = true;
    this.gpu.removeEventListener('uncapturederror', this.onUncapturedError);
    this.profile?.querySet.destroy();
    this.profile = null;
    this.pipelines.clear();
    this.modules.clear();
    this.encoder = null;
    this.pass = null;
    this.uniformBuffer.destroy();
    this.gpu.destroy();
  }
}
