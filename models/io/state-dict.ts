/**
 * Helpers to turn a loaded checkpoint into the state dict a model expects, following the layout of
 * DINO checkpoints: `{'teacher': {...}, 'student': {...}, 'epoch': n, 'args': Namespace, ...}`
 * with keys such as `module.backbone.blocks.0.attn.qkv.weight` and `module.head.mlp.0.weight`.
 *
 * Pure TypeScript, no Node built-ins. Works on any tensor type with a `shape` (TorchTensor,
 * SafeTensor, NpyArray).
 *
 * Budget: {@link loadStateDict} is bounded by the loader it dispatches to (safetensors: 4x the
 * data section; torch: `maxBytes`, then the key count checked by `flattenStateDict`). Errors list
 * at most {@link MAX_LISTED_NAMES} names per list and say how many more there are: a file with a
 * million tensors gives a short message, not an 8.9 MB line.
 */

import { formatShape } from './dtypes.js';
import { clip, formatCount, listNames, MAX_LISTED_NAMES, quoteName } from './error-text.js';
import { parseSafetensors } from './safetensors.js';
import { sniffFormat, wrongFormatMessage } from './sniff.js';
import { type FlattenOptions, flattenStateDict, loadTorchCheckpoint, TorchTensor } from './torch.js';

/** Anything with a shape (tensors of the readers in this folder). */
export interface Shaped {
  shape: readonly number[];
}

/** A loaded state dict does not match what the model expects. */
export class StateDictMismatchError extends Error {
  override name = 'StateDictMismatchError';
  constructor(
    message: string,
    /** Expected names absent from the state dict. */
    readonly missing: string[],
    /** Names in the state dict the model does not have. */
    readonly unexpected: string[],
    /** "name: expected [..], got [..]" lines. */
    readonly mismatched: string[],
  ) {
    super(message);
  }
}

function isObject(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === 'object' && !Array.isArray(v) && !(v instanceof TorchTensor);
}

function holdsTensors(v: Record<string, unknown>): boolean {
  return Object.values(v).some((x) => x instanceof TorchTensor);
}

/**
 * Picks the state dict inside a training checkpoint. If the top level has `key` (default
 * 'teacher', as DINO's evaluation code does), that entry is returned; otherwise 'state_dict' or
 * 'model' if present; otherwise, if the object itself holds tensors, it is returned as is (a bare
 * state dict). Throws, listing the top-level keys, when none applies.
 */
export function selectCheckpointEntry(obj: unknown, key = 'teacher'): Record<string, unknown> {
  if (!isObject(obj)) throw new Error(`checkpoint: expected a dict at the top level, got ${describe(obj)}`);
  for (const k of [key, 'state_dict', 'model']) {
    const v = obj[k];
    if (Object.hasOwn(obj, k) && isObject(v)) return v;
  }
  if (holdsTensors(obj)) return obj;
  throw new Error(
    `checkpoint: no ${quoteName(key)}, 'state_dict' or 'model' entry and no tensors at the top level (keys: ${listNames(Object.keys(obj), 20)})`,
  );
}

function describe(v: unknown): string {
  if (v === null) return 'None';
  if (Array.isArray(v)) return 'a list';
  if (v instanceof TorchTensor) return 'a tensor';
  return typeof v;
}

/**
 * Removes leading prefixes from every name, repeatedly (so 'module.backbone.x' -> 'x' with the
 * default `['module.', 'backbone.']`, like DINO's loading code). Throws if two names collide.
 */
export function stripPrefixes<T>(map: ReadonlyMap<string, T>, prefixes: readonly string[] = ['module.', 'backbone.']): Map<string, T> {
  const out = new Map<string, T>();
  const from = new Map<string, string>();
  for (const [name, v] of map) {
    let n = name;
    for (let changed = true; changed; ) {
      changed = false;
      for (const p of prefixes) {
        if (p && n.startsWith(p)) {
          n = n.slice(p.length);
          changed = true;
        }
      }
    }
    const prev = from.get(n);
    if (prev !== undefined) throw new Error(`stripPrefixes: ${quoteName(prev)} and ${quoteName(name)} both become ${quoteName(n)}`);
    from.set(n, name);
    out.set(n, v);
  }
  return out;
}

/**
 * Splits a DINO state dict into the backbone entries (`backbone.*`) and the projection-head
 * entries (`head.*`), with those prefixes (and a leading `module.`) removed; anything else goes to
 * `other` unchanged.
 */
export function splitBackboneHead<T>(map: ReadonlyMap<string, T>): {
  backbone: Map<string, T>;
  head: Map<string, T>;
  other: Map<string, T>;
} {
  const backbone = new Map<string, T>();
  const head = new Map<string, T>();
  const other = new Map<string, T>();
  for (const [name, v] of map) {
    const n = name.startsWith('module.') ? name.slice('module.'.length) : name;
    if (n.startsWith('backbone.')) backbone.set(n.slice('backbone.'.length), v);
    else if (n.startsWith('head.')) head.set(n.slice('head.'.length), v);
    else other.set(name, v);
  }
  return { backbone, head, other };
}

function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}

/**
 * Strict loading check: throws ONE {@link StateDictMismatchError} for every missing name, every
 * unexpected name and every shape mismatch (`blocks.0.attn.qkv.weight: expected [576, 192], got
 * [192, 576]`); returns normally when `got` has exactly the expected names and shapes. The error
 * carries the complete lists; its message shows at most {@link MAX_LISTED_NAMES} of each
 * ("... and 999,950 more").
 */
export function checkStrict(expected: ReadonlyMap<string, readonly number[]>, got: ReadonlyMap<string, Shaped>): void {
  const missing: string[] = [];
  const unexpected: string[] = [];
  const mismatched: string[] = [];
  for (const [name, shape] of expected) {
    const t = got.get(name);
    if (!t) missing.push(name);
    else if (!sameShape(shape, t.shape)) mismatched.push(`${name}: expected ${formatShape(shape)}, got ${clip(formatShape(t.shape))}`);
  }
  for (const name of got.keys()) if (!expected.has(name)) unexpected.push(name);
  if (!missing.length && !unexpected.length && !mismatched.length) return;
  const lines = [
    `state dict does not match the model: ${missing.length} missing, ${unexpected.length} unexpected, ${mismatched.length} shape mismatch${
      mismatched.length === 1 ? '' : 'es'
    }`,
  ];
  if (missing.length) lines.push(`  missing keys: ${listNames(missing)}`);
  if (unexpected.length) lines.push(`  unexpected keys: ${listNames(unexpected)}`);
  for (const m of mismatched.slice(0, MAX_LISTED_NAMES)) lines.push(`  shape mismatch: ${clip(m)}`);
  if (mismatched.length > MAX_LISTED_NAMES) lines.push(`  ... and ${formatCount(mismatched.length - MAX_LISTED_NAMES)} more shape mismatches`);
  throw new StateDictMismatchError(lines.join('\n'), missing, unexpected, mismatched);
}

/** A weights file's tensors, whatever the format, as name -> {shape, data}. */
export interface LoadedStateDict {
  format: 'torch' | 'safetensors';
  tensors: Map<string, { shape: number[]; data: Float32Array }>;
}

/** Options of {@link loadStateDict}. */
export interface LoadStateDictOptions extends FlattenOptions {
  /** Entry of a training checkpoint to load (see {@link selectCheckpointEntry}; default 'teacher'). */
  key?: string;
  /** Name of the file, for error messages. */
  name?: string;
  /** Most bytes a PyTorch checkpoint's load may allocate (see `TorchLoadOptions.maxBytes`). */
  maxBytes?: number;
}

/** What {@link loadStateDict} reads, as named in its refusals. */
const WEIGHTS_FILE = 'a weights file (expected safetensors or a PyTorch checkpoint: a .pth zip or legacy pickle)';

/**
 * Reads a weights file from its bytes, sniffing the format: a PyTorch checkpoint (zip or legacy
 * pickle of any protocol 2-5; the entry is chosen by {@link selectCheckpointEntry} with
 * `options.key`, then flattened) or safetensors. Any other file is refused naming what it is
 * ("this is a PNG image, not a weights file ..."). Names are returned as stored; apply
 * {@link stripPrefixes} as needed.
 */
export function loadStateDict(bytes: Uint8Array, options: LoadStateDictOptions = {}): LoadedStateDict {
  const format = sniffFormat(bytes);
  if (format === 'zip' || format === 'torch-legacy') {
    const ckpt = loadTorchCheckpoint(bytes, { name: options.name, maxBytes: options.maxBytes });
    return { format: 'torch', tensors: flattenStateDict(selectCheckpointEntry(ckpt, options.key), '', options) };
  }
  // A truncated safetensors file still shows its JSON header: its parser says what is missing.
  const truncatedSafetensors = format === 'unknown' && bytes.length > 8 && bytes[8] === 0x7b;
  if (format === 'safetensors' || truncatedSafetensors) return { format: 'safetensors', tensors: parseSafetensors(bytes) };
  throw new Error(`${options.name ?? 'weights'}: ${wrongFormatMessage(bytes, format, WEIGHTS_FILE)}`);
}
