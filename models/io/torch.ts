/**
 * PyTorch checkpoint reader (`.pth` / `.pt` written by `torch.save`), without Python and without
 * executing anything from the file.
 *
 * Formats:
 * - zip (torch >= 1.6): `<dir>/data.pkl` (the pickled object; tensors refer to storages by
 *   persistent id) + `<dir>/data/<key>` (raw storages) + optional `<dir>/byteorder`. `<dir>` is
 *   "archive" or the saved file's stem; it is found from the entry ending in `data.pkl`.
 * - legacy (torch < 1.6, or `_use_new_zipfile_serialization=False`): consecutive pickles (magic
 *   number, protocol version, system info, the object, the storage keys) then the raw storages.
 *
 * The pickle goes through the restricted unpickler of `pickle.ts` with {@link TORCH_GLOBALS}: tensor
 * rebuild functions, storage types, `collections.OrderedDict`, `torch.Size`, sets, `_codecs.encode`
 * (bytes at protocol 2), `torch.device`, and `argparse.Namespace` (DINO checkpoints store their
 * training arguments as one; it becomes a plain object). Anything else, e.g. `os.system`, throws
 * {@link UnsafePickleError} while the pickle is read, before any tensor data is touched.
 *
 * Tensors become {@link TorchTensor}s: float32 data, materialized contiguous (row-major) from the
 * storage using the saved offset and strides.
 *
 * Budget: the pickle costs time and memory linear in its size (see `pickle.ts`). Everything else
 * this loader allocates is charged to one {@link LoadBudget} before it is allocated: inflated zip
 * entries (at their declared size, and inflation stops there) and every float32 array materialized
 * (each tensor, and a whole storage converted once for strided views). The limit is
 * `options.maxBytes`, by default 8x the file size, at least 64 MiB: enough for float32 copies of
 * 1-byte storages and a few views of one storage, while a stride-0 tensor of 2^28 elements over one
 * stored float (a 668-byte file) or a zip bomb is refused before anything is allocated. Stored zip
 * entries and legacy storages are views of the file's bytes, not copies. {@link flattenStateDict}
 * counts the keys a nested checkpoint expands to before building them (see there).
 *
 * Pure TypeScript, no Node built-ins.
 */

import { LoadBudget } from './budget.js';
import { ELEMENT_BYTES, type ElementType, formatShape, numel, toFloat32 } from './dtypes.js';
import { clip, firstBytes, formatCount, listNames } from './error-text.js';
import {
  defineKey,
  type PickleGlobal,
  PickleError,
  PickleGlobalRef,
  preview,
  unpickleAt,
  UnsafePickleError,
  type UnpickleOptions,
} from './pickle.js';
import { FORMAT_NAMES, sniffFormat } from './sniff.js';
import { type InflateRaw, type InflateRawSync, ZipArchive, ZipError } from './zip.js';

export { PickleError, UnsafePickleError, PY_ATTRIBUTES } from './pickle.js';
export { ZipError } from './zip.js';

/** Element types of torch storages, by their torch name. */
export type TorchDtype = 'float32' | 'float16' | 'bfloat16' | 'float64' | 'int64' | 'int32' | 'int16' | 'int8' | 'uint8' | 'bool';

const STORAGE_TYPES: Record<string, TorchDtype> = {
  FloatStorage: 'float32',
  HalfStorage: 'float16',
  BFloat16Storage: 'bfloat16',
  DoubleStorage: 'float64',
  LongStorage: 'int64',
  IntStorage: 'int32',
  ShortStorage: 'int16',
  CharStorage: 'int8',
  ByteStorage: 'uint8',
  BoolStorage: 'bool',
};

const ELEMENT_OF: Record<TorchDtype, ElementType> = {
  float32: 'f32',
  float16: 'f16',
  bfloat16: 'bf16',
  float64: 'f64',
  int64: 'i64',
  int32: 'i32',
  int16: 'i16',
  int8: 'i8',
  uint8: 'u8',
  bool: 'bool',
};

/**
 * A tensor read from a checkpoint. `data` is always a contiguous row-major float32 copy (whatever
 * the stored dtype); `stride` and `offset` describe how the tensor lay in its storage in the file
 * (in elements), kept for inspection: do not apply them to `data`.
 */
export class TorchTensor {
  constructor(
    /** dtype of the stored tensor (data is float32 regardless). */
    readonly dtype: TorchDtype,
    readonly shape: number[],
    /** Strides of the saved tensor in its storage, in elements. */
    readonly stride: number[],
    /** Storage offset of the saved tensor, in elements. */
    readonly offset: number,
    /** Values, contiguous row-major float32. */
    public data: Float32Array,
    /** Whether the tensor was saved as a Parameter requiring grad. */
    public requiresGrad = false,
  ) {}
}

/** Reference to a storage named by a persistent id (resolved after the pickle is read). */
class StorageRef {
  constructor(
    readonly key: string,
    readonly dtype: TorchDtype,
    /** Elements of the (view of the) storage. */
    readonly numel: number,
    /** Element offset into the root storage (legacy storage views). */
    readonly base = 0,
  ) {}
}

interface StorageTypeGlobal extends PickleGlobal {
  storageDtype: TorchDtype;
}

function isInt(v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v);
}

function intList(v: unknown, what: string): number[] {
  if (!Array.isArray(v) || !v.every(isInt)) throw new PickleError(`${what} is not a tuple of ints: ${preview(v)}`);
  return v.slice();
}

const pending = new WeakMap<TorchTensor, StorageRef>();

function rebuildTensor(args: unknown[]): TorchTensor {
  const [storage, offset, size, stride] = args;
  if (!(storage instanceof StorageRef)) throw new PickleError('tensor storage is not a persistent storage reference');
  if (!isInt(offset) || offset < 0) throw new PickleError(`bad storage offset ${preview(offset)}`);
  const shape = intList(size, 'tensor size');
  const strides = intList(stride, 'tensor stride');
  if (shape.length !== strides.length) {
    throw new PickleError(`tensor size ${formatShape(shape)} and stride ${formatShape(strides)} differ in rank`);
  }
  if (shape.some((d) => d < 0) || strides.some((s) => s < 0)) {
    throw new PickleError(`negative size or stride: ${formatShape(shape)} / ${formatShape(strides)}`);
  }
  const t = new TorchTensor(storage.dtype, shape, strides, offset, new Float32Array(0), args[4] === true);
  pending.set(t, storage);
  return t;
}

function asTensor(v: unknown, what: string): TorchTensor {
  if (!(v instanceof TorchTensor)) throw new PickleError(`${what}: expected a tensor`);
  return v;
}

function dictFromPairs(args: unknown[]): Record<string, unknown> {
  const d: Record<string, unknown> = {};
  if (args.length === 0) return d;
  const items = args[0];
  if (!Array.isArray(items)) throw new PickleError('OrderedDict argument is not a list of pairs');
  for (const pair of items) {
    if (!Array.isArray(pair) || pair.length !== 2 || typeof pair[0] !== 'string') {
      throw new PickleError('OrderedDict item is not a (str, value) pair');
    }
    defineKey(d, pair[0], pair[1]);
  }
  return d;
}

function setFrom(args: unknown[]): Set<unknown> {
  if (args.length === 0) return new Set();
  if (!Array.isArray(args[0])) throw new PickleError('set argument is not a list');
  return new Set(args[0]);
}

const inert: PickleGlobal = {};

/**
 * The allowlist used for checkpoints: "module.name" -> TypeScript behaviour. Every entry only
 * builds data; none calls anything named in the file.
 */
export const TORCH_GLOBALS: ReadonlyMap<string, PickleGlobal> = new Map<string, PickleGlobal>([
  ['torch._utils._rebuild_tensor_v2', { call: rebuildTensor }],
  ['torch._utils._rebuild_tensor', { call: rebuildTensor }],
  [
    'torch._utils._rebuild_parameter',
    {
      call(args) {
        const t = asTensor(args[0], '_rebuild_parameter');
        t.requiresGrad = args[1] === true;
        return t;
      },
    },
  ],
  [
    'torch._utils._rebuild_parameter_with_state',
    {
      call(args) {
        const t = asTensor(args[0], '_rebuild_parameter_with_state');
        t.requiresGrad = args[1] === true;
        return t;
      },
    },
  ],
  [
    'torch._tensor._rebuild_from_type_v2',
    {
      // (func, new_type, args, state): tensor subclasses; only plain Tensor / Parameter types.
      call(args) {
        const [func, newType, fargs] = args;
        if (!(func instanceof PickleGlobalRef) || !func.impl.call) throw new PickleError('_rebuild_from_type_v2: bad function');
        if (!(newType instanceof PickleGlobalRef)) throw new PickleError('_rebuild_from_type_v2: bad type');
        if (!Array.isArray(fargs)) throw new PickleError('_rebuild_from_type_v2: bad arguments');
        return asTensor(func.impl.call(fargs), '_rebuild_from_type_v2');
      },
    },
  ],
  ['torch.Tensor', inert],
  ['torch.nn.parameter.Parameter', inert],
  ...Object.entries(STORAGE_TYPES).map(([name, dtype]): [string, PickleGlobal] => {
    const marker: StorageTypeGlobal = { storageDtype: dtype };
    return [`torch.${name}`, marker];
  }),
  ['collections.OrderedDict', { call: dictFromPairs, newObj: dictFromPairs }],
  ['torch.Size', { call: (args) => intList(args[0], 'torch.Size') }],
  ['builtins.set', { call: setFrom }],
  ['builtins.frozenset', { call: setFrom }],
  [
    '_codecs.encode',
    {
      // Protocol 2 pickles bytes as _codecs.encode(text, 'latin1').
      call(args) {
        const [text, encoding] = args;
        if (typeof text !== 'string') throw new PickleError('_codecs.encode: text is not a string');
        const enc = typeof encoding === 'string' ? encoding.toLowerCase().replace('_', '-') : '';
        if (enc === 'latin1' || enc === 'latin-1' || enc === 'iso-8859-1') {
          const out = new Uint8Array(text.length);
          for (let i = 0; i < text.length; i++) {
            const c = text.charCodeAt(i);
            if (c > 255) throw new PickleError('_codecs.encode: character outside latin-1');
            out[i] = c;
          }
          return out;
        }
        if (enc === 'utf-8' || enc === 'utf8') return new TextEncoder().encode(text);
        throw new PickleError(`_codecs.encode: unsupported encoding ${preview(encoding)}`);
      },
    },
  ],
  [
    'torch.device',
    {
      call(args) {
        if (typeof args[0] !== 'string') throw new PickleError('torch.device: bad arguments');
        return args.length > 1 && isInt(args[1]) ? `${args[0]}:${args[1]}` : args[0];
      },
    },
  ],
  [
    'argparse.Namespace',
    {
      newObj: () => ({}),
      call: () => ({}),
      build(obj, state) {
        const parts = Array.isArray(state) ? state : [state];
        for (const part of parts) {
          if (part === null) continue;
          if (typeof part !== 'object' || Array.isArray(part)) throw new PickleError('argparse.Namespace: bad state');
          for (const [k, v] of Object.entries(part as Record<string, unknown>)) defineKey(obj as object, k, v);
        }
      },
    },
  ],
]);

const ALLOWED = 'only tensor-rebuild globals are allowed';

/** Options of the checkpoint loaders. */
export interface TorchLoadOptions {
  /** Name of the file, for error messages. */
  name?: string;
  /** Verify CRC-32 of zip entries (default true). */
  verifyCrc?: boolean;
  /**
   * Most bytes the load may allocate beyond the file itself: inflated zip entries and float32
   * tensor data (default 8x the file size, at least 64 MiB; see the module doc).
   */
  maxBytes?: number;
}

/** Options of {@link loadTorchCheckpoint}. */
export interface TorchLoadSyncOptions extends TorchLoadOptions {
  /** Raw-deflate decompressor for zips with compressed entries (torch itself never compresses). */
  inflateRaw?: InflateRawSync;
}

/** Options of {@link loadTorchCheckpointAsync}. */
export interface TorchLoadAsyncOptions extends TorchLoadOptions {
  /** Raw-deflate decompressor; defaults to `DecompressionStream('deflate-raw')`. */
  inflateRaw?: InflateRaw;
}

function storageTypeOf(v: unknown): TorchDtype {
  if (v instanceof PickleGlobalRef && 'storageDtype' in v.impl) return (v.impl as StorageTypeGlobal).storageDtype;
  throw new PickleError(`persistent id names an unknown storage type (${v instanceof PickleGlobalRef ? clip(v.qualifiedName) : typeof v})`);
}

/** persistent_load for both formats: ('storage', type, key, location, numel[, view_metadata]). */
function storageFromPid(pid: unknown, refs: Map<string, StorageRef>): StorageRef {
  if (!Array.isArray(pid) || pid[0] !== 'storage' || pid.length < 5) {
    throw new PickleError(`unsupported persistent id ${Array.isArray(pid) ? preview(pid[0]) : typeof pid}`);
  }
  const dtype = storageTypeOf(pid[1]);
  const key = pid[2];
  const count = pid[4];
  if (typeof key !== 'string' || !/^[\w.-]+$/.test(key)) throw new PickleError(`bad storage key ${preview(key)}`);
  if (!isInt(count) || count < 0) throw new PickleError(`bad storage size ${preview(count)}`);
  const seen = refs.get(key);
  if (seen && (seen.dtype !== dtype || seen.numel !== count)) {
    throw new PickleError(`storage '${clip(key)}' is referenced with different types or sizes`);
  }
  const root = seen ?? new StorageRef(key, dtype, count);
  refs.set(key, root);
  const view = pid[5];
  if (Array.isArray(view)) {
    // Legacy storage view: (view_key, offset, view_size), in elements of the root storage.
    const [, off, size] = view;
    if (!isInt(off) || !isInt(size) || off < 0 || size < 0 || off + size > count) {
      throw new PickleError(`bad storage view ${preview(view)} of storage '${clip(key)}'`);
    }
    return new StorageRef(key, dtype, size, off);
  }
  return root;
}

interface StorageBytes {
  bytes: Uint8Array;
  littleEndian: boolean;
  /** Name for error messages. */
  label: string;
}

/** Largest tensor materialized (elements); larger ones cannot be a Float32Array in every engine. */
const MAX_ELEMENTS = 2 ** 31 - 1;

/**
 * Fills in `data` of every tensor the pickle created. Every float32 array is charged to `budget`
 * before it is allocated (`fail` throws the refusal): one per tensor, plus one per storage that
 * strided views read from, converted once.
 */
function materialize(
  tensors: TorchTensor[],
  storageBytes: (ref: StorageRef) => StorageBytes,
  budget: LoadBudget,
  fail: (message: string) => never,
): void {
  const whole = new Map<string, Float32Array>();
  for (const t of tensors) {
    const ref = pending.get(t);
    if (!ref) continue;
    pending.delete(t);
    const sb = storageBytes(ref);
    const n = numel(t.shape);
    if (!(n <= MAX_ELEMENTS)) {
      throw new PickleError(`tensor of shape ${formatShape(t.shape)} is too large to materialize (${n} elements)`);
    }
    if (n === 0) {
      t.data = new Float32Array(0);
      continue;
    }
    let last = t.offset;
    for (let d = 0; d < t.shape.length; d++) last += (t.shape[d]! - 1) * t.stride[d]!;
    if (last >= ref.numel) {
      throw new PickleError(
        `tensor of shape ${formatShape(t.shape)}, stride ${formatShape(t.stride)}, offset ${t.offset} reads element ${last} of storage '${clip(ref.key)}', which has ${ref.numel}`,
      );
    }
    const elem = ELEMENT_OF[ref.dtype];
    const size = ELEMENT_BYTES[elem];
    const spread = n > ref.numel ? ` (${formatCount(n)} elements over a storage of ${formatCount(ref.numel)}: an expanded, stride-0 view)` : '';
    budget.charge(n * 4, `tensor of shape ${formatShape(t.shape)}, stride ${formatShape(t.stride)}${spread} as float32`, fail);
    if (isContiguous(t.shape, t.stride)) {
      t.data = toFloat32(sb.bytes, (ref.base + t.offset) * size, n, elem, sb.littleEndian);
      continue;
    }
    let all = whole.get(ref.key);
    if (!all) {
      const rootElements = Math.floor(sb.bytes.length / size);
      budget.charge(rootElements * 4, `storage '${clip(ref.key)}' (${formatCount(rootElements)} ${ref.dtype} elements) as float32`, fail);
      all = toFloat32(sb.bytes, 0, rootElements, elem, sb.littleEndian);
      whole.set(ref.key, all);
    }
    t.data = gather(all, ref.base + t.offset, t.shape, t.stride);
  }
}

function isContiguous(shape: number[], stride: number[]): boolean {
  let expected = 1;
  for (let d = shape.length - 1; d >= 0; d--) {
    if (shape[d] !== 1 && stride[d] !== expected) return false;
    expected *= shape[d]!;
  }
  return true;
}

/** Copies a strided view of `src` into a new contiguous array. */
function gather(src: Float32Array, offset: number, shape: number[], stride: number[]): Float32Array {
  const out = new Float32Array(numel(shape));
  const rank = shape.length;
  const inner = shape[rank - 1]!;
  const innerStride = stride[rank - 1]!;
  const idx = new Array<number>(rank).fill(0);
  let base = offset;
  for (let o = 0; o < out.length; o += inner) {
    for (let i = 0; i < inner; i++) out[o + i] = src[base + i * innerStride]!;
    // Advance the outer index (odometer), skipping the innermost dimension.
    for (let d = rank - 2; d >= 0; d--) {
      idx[d]!++;
      base += stride[d]!;
      if (idx[d]! < shape[d]!) break;
      base -= idx[d]! * stride[d]!;
      idx[d] = 0;
    }
  }
  return out;
}

/** Unpickles with the torch allowlist, recording every tensor created. */
function unpickleTorch(
  bytes: Uint8Array,
  offset: number,
  source: string,
  refs: Map<string, StorageRef>,
  tensors: TorchTensor[],
): { value: unknown; end: number } {
  const globals = new Map(TORCH_GLOBALS);
  for (const name of ['torch._utils._rebuild_tensor_v2', 'torch._utils._rebuild_tensor']) {
    globals.set(name, {
      call(args) {
        const t = rebuildTensor(args);
        tensors.push(t);
        return t;
      },
    });
  }
  const options: UnpickleOptions = {
    globals,
    source,
    allowedDescription: ALLOWED,
    persistentLoad: (pid) => storageFromPid(pid, refs),
  };
  return unpickleAt(bytes, offset, options);
}

/** Finds `<dir>/data.pkl` in a torch zip and returns `<dir>`. */
function archiveDir(zip: ZipArchive, name: string): string {
  const candidates = zip.names().filter((n) => n === 'data.pkl' || n.endsWith('/data.pkl'));
  const top = candidates.filter((n) => n.split('/').length <= 2);
  const pick = top.length ? top : candidates;
  if (pick.length === 0) {
    throw new PickleError(`${name}: not a PyTorch checkpoint: the zip has no '<dir>/data.pkl' entry (entries: ${listNames(zip.names(), 8)})`);
  }
  if (pick.length > 1) throw new PickleError(`${name}: several data.pkl entries (${listNames(pick, 8)})`);
  const p = pick[0]!;
  return p.slice(0, p.length - 'data.pkl'.length);
}

/** One load's context: the file's name (for messages) and its allocation budget. */
interface LoadContext {
  name: string;
  budget: LoadBudget;
}

/** Throws a budget refusal as a PickleError naming the file. */
function refuse(ctx: LoadContext): (message: string) => never {
  return (message) => {
    throw new PickleError(`${ctx.name}: ${message}`);
  };
}

function loadFromZip(zip: ZipArchive, ctx: LoadContext, readEntry: (entry: string) => Uint8Array): unknown {
  const { name } = ctx;
  // Each entry is read (inflated, CRC-checked) once, however many tensors view its storage.
  const cache = new Map<string, Uint8Array>();
  const read = (entry: string): Uint8Array => {
    let b = cache.get(entry);
    if (!b) {
      b = readEntry(entry);
      cache.set(entry, b);
    }
    return b;
  };
  const dir = archiveDir(zip, name);
  let littleEndian = true;
  if (zip.entries.has(`${dir}byteorder`)) {
    const order = new TextDecoder().decode(read(`${dir}byteorder`)).trim();
    if (order !== 'little' && order !== 'big') throw new PickleError(`${name}: unknown byteorder '${clip(order)}'`);
    littleEndian = order === 'little';
  }
  const refs = new Map<string, StorageRef>();
  const tensors: TorchTensor[] = [];
  const pkl = read(`${dir}data.pkl`);
  const { value } = unpickleTorch(pkl, 0, `${name}:${dir}data.pkl`, refs, tensors);
  materialize(
    tensors,
    (ref) => {
      const entry = `${dir}data/${ref.key}`;
      if (!zip.entries.has(entry)) throw new PickleError(`${name}: storage '${clip(ref.key)}' is missing (no entry '${clip(entry)}')`);
      const bytes = read(entry);
      const need = ref.numel * ELEMENT_BYTES[ELEMENT_OF[ref.dtype]];
      if (bytes.length < need) {
        throw new PickleError(
          `${name}: truncated checkpoint: storage '${clip(entry)}' has ${bytes.length} bytes but its ${ref.numel} ${ref.dtype} elements need ${need}`,
        );
      }
      return { bytes, littleEndian, label: entry };
    },
    ctx.budget,
    refuse(ctx),
  );
  return value;
}

const LEGACY_MAGIC = 0x1950a86a20f9469cfc6cn;

function loadLegacy(bytes: Uint8Array, ctx: LoadContext): unknown {
  const { name } = ctx;
  const plain: UnpickleOptions = { globals: new Map(), source: name, allowedDescription: ALLOWED };
  const magic = unpickleAt(bytes, 0, plain);
  if (magic.value !== LEGACY_MAGIC) {
    throw new PickleError(`${name}: not a PyTorch checkpoint (a pickle, but without torch's magic number)`);
  }
  const version = unpickleAt(bytes, magic.end, plain);
  if (version.value !== 1001) throw new PickleError(`${name}: unsupported legacy torch format version ${preview(version.value)}`);
  const sysInfo = unpickleAt(bytes, version.end, plain);
  const info = sysInfo.value as Record<string, unknown> | null;
  const littleEndian = !(info && info['little_endian'] === false);
  const refs = new Map<string, StorageRef>();
  const tensors: TorchTensor[] = [];
  const main = unpickleTorch(bytes, sysInfo.end, name, refs, tensors);
  const keys = unpickleAt(bytes, main.end, plain);
  if (!Array.isArray(keys.value) || !keys.value.every((k) => typeof k === 'string')) {
    throw new PickleError(`${name}: legacy storage key list is malformed`);
  }
  // Raw storages follow, in key order: int64 element count, then the elements (views of `bytes`).
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const located = new Map<string, Uint8Array>();
  let pos = keys.end;
  for (const key of keys.value as string[]) {
    const ref = refs.get(key);
    if (!ref) throw new PickleError(`${name}: storage '${clip(key)}' is not used by any tensor`);
    if (pos + 8 > bytes.length) throw new PickleError(`${name}: truncated checkpoint: storage '${clip(key)}' header missing`);
    const count = Number(dv.getBigInt64(pos, littleEndian));
    const nbytes = count * ELEMENT_BYTES[ELEMENT_OF[ref.dtype]];
    if (count < 0 || pos + 8 + nbytes > bytes.length) {
      throw new PickleError(
        `${name}: truncated checkpoint: storage '${clip(key)}' needs ${nbytes} bytes at ${pos + 8}, file has ${bytes.length}`,
      );
    }
    if (count < ref.numel) throw new PickleError(`${name}: storage '${clip(key)}' has ${count} elements, expected ${ref.numel}`);
    located.set(key, bytes.subarray(pos + 8, pos + 8 + nbytes));
    pos += 8 + nbytes;
  }
  materialize(
    tensors,
    (ref) => {
      const b = located.get(ref.key);
      if (!b) throw new PickleError(`${name}: storage '${clip(ref.key)}' is missing`);
      return { bytes: b, littleEndian, label: ref.key };
    },
    ctx.budget,
    refuse(ctx),
  );
  return main.value;
}

/**
 * Loads a PyTorch checkpoint (zip or legacy format) into nested JS values (see `pickle.ts` for the
 * mapping; tensors are {@link TorchTensor}). Throws {@link UnsafePickleError} if the pickle names
 * any global outside {@link TORCH_GLOBALS}, before any tensor data is read; {@link PickleError} or
 * `ZipError` for malformed files, and for files that would allocate past `options.maxBytes` (see
 * the module doc). Zips with deflated entries need `options.inflateRaw` (or use
 * {@link loadTorchCheckpointAsync}).
 */
export function loadTorchCheckpoint(bytes: Uint8Array, options: TorchLoadSyncOptions = {}): unknown {
  const ctx = contextFor(bytes, options);
  try {
    return loadAny(bytes, ctx, options);
  } catch (e) {
    throw wrapError(e, ctx.name);
  }
}

function contextFor(bytes: Uint8Array, options: TorchLoadOptions): LoadContext {
  return { name: options.name ?? 'checkpoint', budget: LoadBudget.forFile(bytes.length, options.maxBytes) };
}

/** Errors of this layer pass through; anything else (RangeError, ...) becomes a PickleError. */
function wrapError(e: unknown, name: string): unknown {
  if (e instanceof PickleError || e instanceof ZipError) return e;
  return new PickleError(`${name}: malformed checkpoint (${clip(String((e as Error)?.message ?? e))})`, { cause: e });
}

function loadAny(bytes: Uint8Array, ctx: LoadContext, options: TorchLoadSyncOptions): unknown {
  const format = sniffFormat(bytes);
  if (format === 'zip') {
    const zip = new ZipArchive(bytes, { verifyCrc: options.verifyCrc ?? true, budget: ctx.budget });
    return loadFromZip(zip, ctx, (entry) => zip.read(entry, options.inflateRaw));
  }
  if (format === 'torch-legacy' || format === 'pickle' || (format === 'unknown' && bytes[0] === 0x80)) return loadLegacy(bytes, ctx);
  const what = format === 'unknown' ? `neither a zip nor a pickle; first bytes: ${firstBytes(bytes)}` : `this is ${FORMAT_NAMES[format]}`;
  throw new PickleError(`${ctx.name}: not a PyTorch checkpoint (${what})`);
}

/**
 * Like {@link loadTorchCheckpoint}, but inflates deflate-compressed zip entries asynchronously with
 * `options.inflateRaw` or `DecompressionStream('deflate-raw')` (browsers, Node >= 20).
 */
export async function loadTorchCheckpointAsync(bytes: Uint8Array, options: TorchLoadAsyncOptions = {}): Promise<unknown> {
  if (sniffFormat(bytes) !== 'zip') return loadTorchCheckpoint(bytes, { ...options, inflateRaw: undefined });
  const ctx = contextFor(bytes, options);
  try {
    const zip = new ZipArchive(bytes, { verifyCrc: options.verifyCrc ?? true, budget: ctx.budget });
    const dir = archiveDir(zip, ctx.name);
    const contents = new Map<string, Uint8Array>();
    for (const entry of zip.names()) {
      if (entry === `${dir}data.pkl` || entry === `${dir}byteorder` || entry.startsWith(`${dir}data/`)) {
        contents.set(entry, await zip.readAsync(entry, options.inflateRaw));
      }
    }
    return loadFromZip(zip, ctx, (entry) => contents.get(entry) ?? zip.read(entry));
  } catch (e) {
    throw wrapError(e, ctx.name);
  }
}

/** Default {@link FlattenOptions.maxEntries}. */
export const FLATTEN_MAX_ENTRIES = 10_000_000;
/** Default {@link FlattenOptions.maxKeyChars}. */
export const FLATTEN_MAX_KEY_CHARS = 100_000_000;

/** Limits of {@link flattenStateDict}, checked before any key is built. */
export interface FlattenOptions {
  /** Most container entries the expansion may visit, every path to them counted (default 10^7). */
  maxEntries?: number;
  /** Most characters in all keys of the result together (default 10^8). */
  maxKeyChars?: number;
}

/**
 * Flattens nested dicts (and lists) of a loaded checkpoint into "a.b.c" -> tensor, in insertion
 * order; non-tensor leaves are skipped. `prefix` is prepended to every key (e.g. "teacher.").
 *
 * A container shared by two paths appears under both (a tied tensor, or one state dict stored
 * under two names, loads under each key), and a container that contains itself is not entered
 * again. Shared containers make the result's size exponential in the pickle's (60 levels of
 * `x = (x, x)` are 2^60 keys in 638 bytes), so the expansion is first counted on the container
 * graph, each container once (memoised: linear time), and refused in one line past
 * `options.maxEntries` entries visited or `options.maxKeyChars` characters of keys; only then are
 * the keys built. The walk is iterative (no recursion limit on deeply nested input).
 */
export function flattenStateDict(obj: unknown, prefix = '', options: FlattenOptions = {}): Map<string, TorchTensor> {
  const out = new Map<string, TorchTensor>();
  if (obj instanceof TorchTensor) {
    out.set(prefix, obj);
    return out;
  }
  if (!isContainer(obj)) return out;
  const nodes = containerGraph(obj);
  const root = nodes.get(obj)!;
  const base = prefix === '' || prefix.endsWith('.') ? prefix : `${prefix}.`;
  const maxEntries = options.maxEntries ?? FLATTEN_MAX_ENTRIES;
  const maxKeyChars = options.maxKeyChars ?? FLATTEN_MAX_KEY_CHARS;
  const keyChars = root.chars + root.leaves * base.length;
  if (!(root.walk <= maxEntries) || !(keyChars <= maxKeyChars)) {
    const over = !(root.walk <= maxEntries)
      ? `${bigCount(root.walk)} entries visited, past the limit of ${formatCount(maxEntries)} (maxEntries)`
      : `${bigCount(keyChars)} characters of keys, past the limit of ${formatCount(maxKeyChars)} (maxKeyChars)`;
    throw new PickleError(
      `checkpoint: its nested containers expand to ${bigCount(root.leaves)} tensor keys and ${over}; shared references reached by exponentially many paths (a "billion laughs" file?)`,
    );
  }
  // Depth-first, in entry order; each frame's `path` is the key prefix of its entries.
  const stack: { node: ContainerNode; index: number; path: string }[] = [{ node: root, index: 0, path: base }];
  while (stack.length) {
    const frame = stack[stack.length - 1]!;
    const { node } = frame;
    if (frame.index >= node.values.length) {
      stack.pop();
      continue;
    }
    const i = frame.index++;
    const v = node.values[i];
    if (node.kinds[i] === TENSOR) out.set(frame.path + keyOf(node, i), v as TorchTensor);
    else if (node.kinds[i] === CONTAINER) stack.push({ node: nodes.get(v as object)!, index: 0, path: `${frame.path}${keyOf(node, i)}.` });
  }
  return out;
}

/** Entry kinds of a {@link ContainerNode}: skipped (other leaves, and edges that close a cycle). */
const SKIP = 0;
const TENSOR = 1;
const CONTAINER = 2;

/** A container of the checkpoint, with what expanding it costs (all paths below counted). */
interface ContainerNode {
  /** Keys of a dict's entries; undefined for a list, whose keys are its indices. */
  keys: string[] | undefined;
  /** Values of the entries (a list itself, not a copy). */
  values: unknown[];
  /** Per entry: {@link SKIP}, {@link TENSOR} or {@link CONTAINER} (to descend into). */
  kinds: number[];
  /** Entries visited when expanding this container. */
  walk: number;
  /** Tensor keys produced. */
  leaves: number;
  /** Characters of those keys, from this container down. */
  chars: number;
  done: boolean;
}

/**
 * Every container reachable from `root`, each visited once (iterative depth-first search). An
 * entry leading to a container still open on the search path closes a cycle and is skipped; what
 * remains is acyclic, so each container's costs are sums over its entries of its children's,
 * finished before it (post-order). Costs are floats: 2^60 stays a number, past 2^1024 Infinity.
 */
function containerGraph(root: object): Map<object, ContainerNode> {
  const nodes = new Map<object, ContainerNode>();
  const open = (o: object): ContainerNode => {
    const keys = Array.isArray(o) ? undefined : Object.keys(o);
    const values: unknown[] = Array.isArray(o) ? o : keys!.map((k) => (o as Record<string, unknown>)[k]);
    const node: ContainerNode = { keys, values, kinds: new Array<number>(values.length).fill(SKIP), walk: 0, leaves: 0, chars: 0, done: false };
    nodes.set(o, node);
    return node;
  };
  const stack: { node: ContainerNode; index: number }[] = [{ node: open(root), index: 0 }];
  while (stack.length) {
    const frame = stack[stack.length - 1]!;
    const { node } = frame;
    if (frame.index < node.values.length) {
      const i = frame.index++;
      const v = node.values[i];
      if (v instanceof TorchTensor) node.kinds[i] = TENSOR;
      else if (isContainer(v)) {
        const seen = nodes.get(v);
        if (!seen) {
          node.kinds[i] = CONTAINER;
          stack.push({ node: open(v), index: 0 });
        } else if (seen.done) node.kinds[i] = CONTAINER;
        // else: `v` is open, an ancestor on the search path: a cycle, skipped.
      }
      continue;
    }
    node.walk = node.values.length;
    for (let i = 0; i < node.values.length; i++) {
      if (node.kinds[i] === TENSOR) {
        node.leaves += 1;
        node.chars += keyLength(node, i);
      } else if (node.kinds[i] === CONTAINER) {
        const child = nodes.get(node.values[i] as object)!;
        node.walk += child.walk;
        node.leaves += child.leaves;
        node.chars += (keyLength(node, i) + 1) * child.leaves + child.chars;
      }
    }
    node.done = true;
    stack.pop();
  }
  return nodes;
}

/** A count that may be astronomically large: digits with commas, or an exponent. */
function bigCount(n: number): string {
  return n < 1e15 ? formatCount(n) : n.toExponential(2);
}

function isContainer(v: unknown): v is object {
  return v !== null && typeof v === 'object' && !(v instanceof Uint8Array) && !(v instanceof Set) && !(v instanceof TorchTensor);
}

/** The key of entry `i` of a container. */
function keyOf(node: ContainerNode, i: number): string {
  return node.keys ? node.keys[i]! : String(i);
}

function keyLength(node: ContainerNode, i: number): number {
  return node.keys ? node.keys[i]!.length : String(i).length;
}
