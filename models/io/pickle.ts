/**
 * A restricted, non-executing unpickler: enough of Python's pickle (protocols 0-5 opcodes as
 * written by `torch.save`) to read checkpoints, and nothing that can run code.
 *
 * Safety model: GLOBAL / STACK_GLOBAL / INST resolve names only through an allowlist supplied by
 * the caller ({@link UnpickleOptions.globals}); any other name throws {@link UnsafePickleError}
 * the moment the opcode is read, before the object it would build exists. Allowed globals are
 * TypeScript descriptions ({@link PickleGlobal}): REDUCE / NEWOBJ / BUILD on them run our own
 * code, never anything named in the file. Extension-registry codes (EXT1/2/4) and out-of-band
 * buffers are refused too.
 *
 * Value mapping: None -> null, bool -> boolean, int -> number (bigint beyond 2^53), float ->
 * number, str -> string, bytes/bytearray -> Uint8Array, list/tuple -> Array, dict -> plain object
 * (keys converted to strings: ints as decimal, tuples as "(a, b)"), set/frozenset -> Set.
 * Attributes set on a dict by BUILD (e.g. a state dict's `_metadata`) are kept out of its keys,
 * under the non-enumerable symbol {@link PY_ATTRIBUTES}.
 *
 * Budget: time and memory are linear in the pickle's size. Every opcode builds at most one new
 * value of a size bounded by the bytes it reads; containers fetched from the memo are shared, never
 * copied (a DAG of shared references stays a DAG: expanding it is the caller's business, see
 * `flattenStateDict`). Integers are bounded: binary ones (LONG1/LONG4) to {@link MAX_LONG_BYTES}
 * bytes, decoded in linear time; decimal ones (INT/LONG) to {@link MAX_INT_DIGITS} digits. Tuple
 * dict keys render to at most {@link MAX_KEY_CHARS} characters and nest at most
 * {@link MAX_KEY_DEPTH} deep, and values quoted in errors are cut short.
 *
 * Pure TypeScript, no Node built-ins.
 */

import { clip } from './error-text.js';

/**
 * Longest decimal integer accepted (INT / LONG text): CPython's own default limit on int <-> str
 * conversion (`sys.get_int_max_str_digits()`, 4300), set there because the conversion is
 * superlinear, as it is for BigInt in JavaScript.
 */
export const MAX_INT_DIGITS = 4300;

/**
 * Longest binary integer accepted (LONG1 / LONG4 payload), in bytes. torch.save writes 64-bit
 * sizes, strides and offsets, and an 80-bit magic number; training arguments hold ordinary Python
 * ints. 2048 bytes (16384 bits) holds every int CPython prints by default (4300 digits need 1786
 * bytes), so nothing a real checkpoint holds is refused, while a 256 KB integer (once a load that
 * never finished) is refused at once.
 */
export const MAX_LONG_BYTES = 2048;

/**
 * Constructors (REDUCE / NEWOBJ / BUILD) may copy at most this many elements per byte of pickle,
 * plus {@link COPY_FLOOR}: a checkpoint hands each container to a constructor once, so it copies
 * about one element per byte; shared containers handed over repeatedly would be quadratic.
 */
export const COPY_FACTOR = 4;
/** See {@link COPY_FACTOR}. */
export const COPY_FLOOR = 2 ** 20;

/** Longest text a tuple dict key may render to ("(a, b)"); shared tuples could otherwise explode. */
export const MAX_KEY_CHARS = 65536;
/** Deepest nesting of tuples in a dict key (rendered recursively; real keys nest one or two levels). */
export const MAX_KEY_DEPTH = 100;

/** A pickle stream that is malformed or uses something this reader does not support. */
export class PickleError extends Error {
  override name = 'PickleError';
}

/** The pickle names a global outside the allowlist (or another code-loading mechanism). */
export class UnsafePickleError extends PickleError {
  override name = 'UnsafePickleError';
}

/** Symbol under which attributes that BUILD set on a dict (Python `obj.__dict__`) are kept. */
export const PY_ATTRIBUTES: unique symbol = Symbol('python attributes');

/**
 * How an allowlisted global behaves. Only what is defined here can happen: REDUCE calls `call`,
 * NEWOBJ calls `newObj`, BUILD on an object created by this global calls `build`. A global with
 * none of them is an inert marker (e.g. a storage type named in a persistent id).
 */
export interface PickleGlobal {
  /** REDUCE: `global(*args)`. */
  call?(args: unknown[]): unknown;
  /** NEWOBJ / NEWOBJ_EX: `cls.__new__(cls, *args)`. */
  newObj?(args: unknown[]): unknown;
  /** BUILD on an object this global created: `obj.__setstate__(state)`. */
  build?(obj: unknown, state: unknown): void;
}

/** A resolved, allowlisted global as it sits on the unpickler stack or in the result. */
export class PickleGlobalRef {
  constructor(
    readonly module: string,
    readonly name: string,
    readonly impl: PickleGlobal,
  ) {}

  /** "module.name". */
  get qualifiedName(): string {
    return `${this.module}.${this.name}`;
  }
}

/** Options of {@link unpickle}. */
export interface UnpickleOptions {
  /** Allowed globals by "module.name" (after mapping Python 2 names such as `__builtin__`). */
  globals: ReadonlyMap<string, PickleGlobal>;
  /** BINPERSID / PERSID handler; without one, persistent ids are an error. */
  persistentLoad?: (pid: unknown) => unknown;
  /** Names the input in error messages (e.g. "model.pth:archive/data.pkl"). */
  source?: string;
  /** Why only these globals are allowed (ends the UnsafePickleError message). */
  allowedDescription?: string;
}

/** Python 2 module names written by Python 3 pickles at protocol < 3 (fix_imports). */
const MODULE_RENAMES: Record<string, string> = { __builtin__: 'builtins', copy_reg: 'copyreg' };

/** Two lowercase hex digits of each byte value. */
const HEX_BYTE = Array.from({ length: 256 }, (_, b) => b.toString(16).padStart(2, '0'));

/**
 * Converts a Python dict key to the string used as JS property name; tuples render as "(a, b)".
 * A tuple key is bounded to {@link MAX_KEY_CHARS} characters: a tuple of shared tuples (a DAG,
 * 2^depth characters once written out) is refused as soon as it passes the limit.
 */
function keyString(k: unknown, where: () => string): string {
  return typeof k === 'string' ? k : renderKey(k, where, { left: MAX_KEY_CHARS }, 0);
}

/** One part of a key; `budget.left` is what the whole key may still take (every call pays). */
function renderKey(k: unknown, where: () => string, budget: { left: number }, depth: number): string {
  let s: string;
  if (Array.isArray(k)) {
    if (depth >= MAX_KEY_DEPTH) throw new PickleError(`pickle: a tuple dict key nested deeper than ${MAX_KEY_DEPTH} levels ${where()}`);
    // Parentheses, ", " separators, and the trailing comma of a 1-tuple.
    budget.left -= 2 + 2 * Math.max(0, k.length - 1) + (k.length === 1 ? 1 : 0);
    if (budget.left < 0) keyTooLong(where);
    const parts: string[] = [];
    for (const x of k) parts.push(renderKey(x, where, budget, depth + 1));
    return `(${parts.join(', ')}${k.length === 1 ? ',' : ''})`;
  }
  if (typeof k === 'string') s = k;
  else if (typeof k === 'number' || typeof k === 'bigint') s = String(k);
  else if (typeof k === 'boolean') s = k ? 'True' : 'False';
  else if (k === null) s = 'None';
  else throw new PickleError(`pickle: unsupported dict key type ${describe(k)} ${where()}`);
  budget.left -= s.length;
  if (budget.left < 0) keyTooLong(where);
  return s;
}

function keyTooLong(where: () => string): never {
  throw new PickleError(`pickle: a tuple dict key renders to more than ${MAX_KEY_CHARS} characters ${where()}`);
}

function describe(v: unknown): string {
  if (v === null) return 'None';
  if (Array.isArray(v)) return 'list/tuple';
  if (v instanceof PickleGlobalRef) return `global '${clip(v.qualifiedName)}'`;
  if (v instanceof Uint8Array) return 'bytes';
  if (v instanceof Set) return 'set';
  return typeof v;
}

/**
 * A short rendering of an unpickled value for error messages: at most about `max` characters,
 * however large or shared the value (a tuple of shared tuples is never expanded in full).
 */
export function preview(v: unknown, max = 80): string {
  const budget = { left: max };
  const s = render(v, budget);
  return s.length > max ? `${s.slice(0, max)}...` : s;
}

function render(v: unknown, budget: { left: number }): string {
  if (budget.left <= 0) return '...';
  if (Array.isArray(v)) {
    budget.left -= 2;
    const parts: string[] = [];
    for (const x of v) {
      if (budget.left <= 0) {
        parts.push('...');
        break;
      }
      parts.push(render(x, budget));
      budget.left -= 2;
    }
    return `(${parts.join(', ')})`;
  }
  let s: string;
  if (typeof v === 'string') s = JSON.stringify(v.length > budget.left ? `${v.slice(0, budget.left)}...` : v);
  else if (typeof v === 'number' || typeof v === 'boolean') s = String(v);
  else if (typeof v === 'bigint') s = v.toString(16).length > 16 ? `<int of ${v.toString(16).length * 4} bits>` : String(v);
  else if (v === null || v === undefined) s = 'None';
  else s = `<${describe(v)}>`;
  budget.left -= s.length;
  return s;
}

/** Defines `obj[key] = value` as an own property, never touching the prototype (`__proto__`). */
export function defineKey(obj: object, key: string, value: unknown): void {
  Object.defineProperty(obj, key, { value, enumerable: true, writable: true, configurable: true });
}

function isDict(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === 'object' && Object.getPrototypeOf(v) === Object.prototype;
}

/**
 * Unpickles one pickle from `bytes` starting at `offset` and returns the value and the offset just
 * past its STOP opcode (several pickles may follow each other, as in legacy torch files).
 */
export function unpickleAt(bytes: Uint8Array, offset: number, options: UnpickleOptions): { value: unknown; end: number } {
  try {
    return new Unpickler(bytes, offset, options).run();
  } catch (e) {
    if (e instanceof PickleError) throw e;
    // Anything else (e.g. a stack overflow on absurdly nested keys) is still malformed input.
    throw new PickleError(`pickle: malformed data${options.source ? ` in ${options.source}` : ''} (${(e as Error)?.message ?? String(e)})`, {
      cause: e,
    });
  }
}

/** Unpickles the pickle at the start of `bytes` (see the module doc for the value mapping). */
export function unpickle(bytes: Uint8Array, options: UnpickleOptions): unknown {
  return unpickleAt(bytes, 0, options).value;
}

class Unpickler {
  private pos: number;
  private readonly dv: DataView;
  private stack: unknown[] = [];
  private readonly metastack: unknown[][] = [];
  private readonly memo = new Map<number, unknown>();
  private readonly creators = new WeakMap<object, PickleGlobal>();
  /** Elements the constructors (REDUCE / NEWOBJ / BUILD) may still copy; see {@link chargeCopy}. */
  private copyLeft: number;
  private opStart = 0;
  private static readonly utf8 = new TextDecoder('utf-8');
  private static readonly latin1 = new TextDecoder('latin1');

  constructor(
    private readonly bytes: Uint8Array,
    offset: number,
    private readonly opts: UnpickleOptions,
  ) {
    this.pos = offset;
    this.copyLeft = COPY_FACTOR * (bytes.length - offset) + COPY_FLOOR;
    this.dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }

  private where(): string {
    return `at byte ${this.opStart}${this.opts.source ? ` of ${this.opts.source}` : ''}`;
  }

  private error(msg: string): never {
    throw new PickleError(`pickle: ${msg} ${this.where()}`);
  }

  private need(n: number): number {
    if (n < 0 || this.pos + n > this.bytes.length) {
      this.error(`truncated data: needs ${n} more bytes, ${this.bytes.length - this.pos} left`);
    }
    const p = this.pos;
    this.pos += n;
    return p;
  }

  private u8(): number {
    return this.bytes[this.need(1)]!;
  }
  private u16(): number {
    return this.dv.getUint16(this.need(2), true);
  }
  private u32(): number {
    return this.dv.getUint32(this.need(4), true);
  }
  private i32(): number {
    return this.dv.getInt32(this.need(4), true);
  }
  private u64(): number {
    const v = this.dv.getBigUint64(this.need(8), true);
    if (v > BigInt(this.bytes.length)) this.error(`length ${v} exceeds the data`);
    return Number(v);
  }
  private take(n: number): Uint8Array {
    const p = this.need(n);
    return this.bytes.subarray(p, p + n);
  }
  private line(): string {
    const start = this.pos;
    const nl = this.bytes.indexOf(0x0a, start);
    if (nl < 0) this.error('truncated data: unterminated text line');
    this.pos = nl + 1;
    return Unpickler.latin1.decode(this.bytes.subarray(start, nl));
  }

  private push(v: unknown): void {
    this.stack.push(v);
  }
  private pop(): unknown {
    if (this.stack.length === 0) this.error('stack underflow');
    return this.stack.pop();
  }
  private top(): unknown {
    if (this.stack.length === 0) this.error('stack underflow');
    return this.stack[this.stack.length - 1];
  }
  private popMark(): unknown[] {
    const items = this.stack;
    const prev = this.metastack.pop();
    if (!prev) this.error('MARK expected but none is open');
    this.stack = prev;
    return items;
  }

  /**
   * A LONG1 / LONG4 payload: little-endian two's complement. Linear time: the bytes become one hex
   * string, parsed once (a BigInt shift per byte made a 256 KB integer take minutes).
   */
  private long(data: Uint8Array): number | bigint {
    if (data.length > MAX_LONG_BYTES) {
      this.error(`integer of ${data.length} bytes is longer than the ${MAX_LONG_BYTES}-byte limit (checkpoints hold 64-bit integers)`);
    }
    if (data.length === 0) return 0;
    const hex = new Array<string>(data.length);
    for (let i = 0; i < data.length; i++) hex[data.length - 1 - i] = HEX_BYTE[data[i]!]!;
    let v = BigInt(`0x${hex.join('')}`);
    if (data[data.length - 1]! & 0x80) v -= 1n << BigInt(8 * data.length);
    return v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v;
  }

  /** A protocol-0 decimal integer (INT / LONG text), at most {@link MAX_INT_DIGITS} digits. */
  private decimal(s: string, op: string): number | bigint {
    if (!/^[-+]?\d+$/.test(s)) this.error(`bad ${op} ${JSON.stringify(clip(s))}`);
    if (s.replace(/^[-+]?0*/, '').length > MAX_INT_DIGITS) {
      this.error(`${op} of ${s.length} characters is longer than the ${MAX_INT_DIGITS}-digit limit`);
    }
    return Number.isSafeInteger(Number(s)) ? Number(s) : BigInt(s);
  }

  private resolveGlobal(module: string, name: string): PickleGlobalRef {
    const mod = MODULE_RENAMES[module] ?? module;
    const qualified = `${mod}.${name}`;
    const impl = this.opts.globals.get(qualified);
    if (!impl) {
      throw new UnsafePickleError(
        `refusing to load global '${clip(qualified)}' from ${this.opts.source ?? 'the pickle'}: ${
          this.opts.allowedDescription ?? 'it is not on the allowlist'
        }`,
      );
    }
    return new PickleGlobalRef(mod, name, impl);
  }

  private setItems(target: unknown, items: unknown[]): void {
    if (items.length % 2) this.error('SETITEMS with an odd number of items');
    if (!isDict(target)) this.error(`SETITEM(S) on a ${describe(target)}`);
    for (let i = 0; i < items.length; i += 2) defineKey(target, keyString(items[i], () => this.where()), items[i + 1]);
  }

  private appendItems(target: unknown, items: unknown[]): void {
    if (!Array.isArray(target)) this.error(`APPEND(S) on a ${describe(target)}`);
    for (const it of items) target.push(it);
  }

  /**
   * Charges what a constructor may copy out of `v` (its arguments or BUILD state), `depth` levels
   * deep. Containers from the memo are shared, so a tiny pickle could hand one big list to a
   * constructor a million times; every hand-over pays one unit per element it reaches, and the
   * load stops once {@link COPY_FACTOR} x the pickle's size (+ {@link COPY_FLOOR}) is spent. Each
   * step of this walk pays too, so the walk itself is bounded by the same allowance.
   */
  private chargeCopy(v: unknown, depth: number): void {
    this.spend(1);
    if (typeof v === 'string' || v instanceof Uint8Array) this.spend(v.length);
    else if (Array.isArray(v)) {
      this.spend(v.length);
      if (depth > 0) for (const x of v) this.chargeCopy(x, depth - 1);
    } else if (isDict(v)) {
      for (const k in v) {
        this.spend(1);
        if (depth > 0) this.chargeCopy(v[k], depth - 1);
      }
    }
  }

  private spend(n: number): void {
    this.copyLeft -= n;
    if (this.copyLeft < 0) {
      this.error(
        `constructor arguments would copy more than ${COPY_FACTOR}x the pickle's size (the same container handed to constructors over and over?)`,
      );
    }
  }

  private callGlobal(fn: unknown, args: unknown, kind: 'REDUCE' | 'NEWOBJ'): unknown {
    if (!(fn instanceof PickleGlobalRef)) this.error(`${kind} on a ${describe(fn)}, not a global`);
    if (!Array.isArray(args)) this.error(`${kind} arguments are not a tuple`);
    // Three levels: the argument tuple, its items, and theirs (_rebuild_from_type_v2's inner args).
    this.chargeCopy(args, 3);
    const method = kind === 'REDUCE' ? fn.impl.call : (fn.impl.newObj ?? fn.impl.call);
    if (!method) this.error(`global '${fn.qualifiedName}' cannot be used with ${kind}`);
    let result: unknown;
    try {
      result = method.call(fn.impl, args);
    } catch (e) {
      if (e instanceof PickleError) throw e;
      throw new PickleError(`pickle: ${fn.qualifiedName}: ${(e as Error).message} ${this.where()}`, { cause: e });
    }
    if (result !== null && typeof result === 'object') this.creators.set(result, fn.impl);
    return result;
  }

  private build(obj: unknown, state: unknown): void {
    this.chargeCopy(state, 2);
    const creator = obj !== null && typeof obj === 'object' ? this.creators.get(obj) : undefined;
    if (creator?.build) {
      creator.build(obj, state);
      return;
    }
    if (isDict(obj)) {
      // dict subclass with instance attributes (OrderedDict state_dict with `_metadata`).
      let attrs: unknown = state;
      if (Array.isArray(state) && state.length === 2) attrs = state[0] ?? state[1];
      if (!isDict(attrs)) this.error('BUILD state of a dict is not a dict');
      const store = (obj as { [PY_ATTRIBUTES]?: Record<string, unknown> })[PY_ATTRIBUTES] ?? {};
      for (const [k, v] of Object.entries(attrs)) defineKey(store, k, v);
      Object.defineProperty(obj, PY_ATTRIBUTES, { value: store, enumerable: false, configurable: true });
      return;
    }
    this.error(`BUILD on a ${describe(obj)} is not supported`);
  }

  run(): { value: unknown; end: number } {
    const { opts } = this;
    for (;;) {
      this.opStart = this.pos;
      if (this.pos >= this.bytes.length) this.error('truncated data: no STOP opcode');
      const op = this.u8();
      switch (op) {
        case 0x80: // PROTO
          if (this.u8() > 5) this.error('unsupported pickle protocol (> 5)');
          break;
        case 0x95: // FRAME (framing is only an I/O hint)
          this.need(8);
          break;
        case 0x2e: // STOP '.'
          if (this.metastack.length) this.error('STOP with an open MARK');
          return { value: this.pop(), end: this.pos };
        case 0x28: // MARK '('
          this.metastack.push(this.stack);
          this.stack = [];
          break;
        case 0x30: // POP '0' (pops the MARK itself when nothing was pushed after it)
          if (this.stack.length) this.stack.pop();
          else this.popMark();
          break;
        case 0x31: // POP_MARK '1'
          this.popMark();
          break;
        case 0x32: // DUP '2'
          this.push(this.top());
          break;

        // --- constants and numbers ---
        case 0x4e: // NONE 'N'
          this.push(null);
          break;
        case 0x88: // NEWTRUE
          this.push(true);
          break;
        case 0x89: // NEWFALSE
          this.push(false);
          break;
        case 0x4a: // BININT 'J'
          this.push(this.i32());
          break;
        case 0x4b: // BININT1 'K'
          this.push(this.u8());
          break;
        case 0x4d: // BININT2 'M'
          this.push(this.u16());
          break;
        case 0x8a: // LONG1
          this.push(this.long(this.take(this.u8())));
          break;
        case 0x8b: {
          // LONG4
          const n = this.i32();
          if (n < 0) this.error('negative LONG4 length');
          this.push(this.long(this.take(n)));
          break;
        }
        case 0x49: {
          // INT 'I' (protocol 0): decimal, or 00/01 for False/True
          const s = this.line().trim();
          if (s === '00' || s === '01') this.push(s === '01');
          else this.push(this.decimal(s, 'INT'));
          break;
        }
        case 0x4c: {
          // LONG 'L' (protocol 0)
          this.push(this.decimal(this.line().trim().replace(/L$/, ''), 'LONG'));
          break;
        }
        case 0x47: // BINFLOAT 'G' (big-endian double)
          this.push(this.dv.getFloat64(this.need(8), false));
          break;
        case 0x46: {
          // FLOAT 'F' (protocol 0)
          const s = this.line().trim();
          const v = Number(s);
          if (Number.isNaN(v) && s.toLowerCase() !== 'nan') this.error(`bad FLOAT ${JSON.stringify(clip(s))}`);
          this.push(v);
          break;
        }

        // --- strings and bytes ---
        case 0x58: // BINUNICODE 'X'
          this.push(Unpickler.utf8.decode(this.take(this.u32())));
          break;
        case 0x8c: // SHORT_BINUNICODE
          this.push(Unpickler.utf8.decode(this.take(this.u8())));
          break;
        case 0x8d: // BINUNICODE8
          this.push(Unpickler.utf8.decode(this.take(this.u64())));
          break;
        case 0x54: // BINSTRING 'T' (Python 2 str, read as latin-1 text)
          this.push(Unpickler.latin1.decode(this.take(this.u32())));
          break;
        case 0x55: // SHORT_BINSTRING 'U'
          this.push(Unpickler.latin1.decode(this.take(this.u8())));
          break;
        case 0x42: // BINBYTES 'B'
          this.push(this.take(this.u32()).slice());
          break;
        case 0x43: // SHORT_BINBYTES 'C'
          this.push(this.take(this.u8()).slice());
          break;
        case 0x8e: // BINBYTES8
        case 0x96: // BYTEARRAY8
          this.push(this.take(this.u64()).slice());
          break;

        // --- containers ---
        case 0x7d: // EMPTY_DICT '}'
          this.push({});
          break;
        case 0x64: {
          // DICT 'd'
          const d = {};
          this.setItems(d, this.popMark());
          this.push(d);
          break;
        }
        case 0x5d: // EMPTY_LIST ']'
          this.push([]);
          break;
        case 0x6c: // LIST 'l'
          this.push(this.popMark());
          break;
        case 0x29: // EMPTY_TUPLE ')'
          this.push([]);
          break;
        case 0x74: // TUPLE 't'
          this.push(this.popMark());
          break;
        case 0x85: // TUPLE1
          this.push([this.pop()]);
          break;
        case 0x86: {
          // TUPLE2
          const b = this.pop();
          const a = this.pop();
          this.push([a, b]);
          break;
        }
        case 0x87: {
          // TUPLE3
          const c = this.pop();
          const b = this.pop();
          const a = this.pop();
          this.push([a, b, c]);
          break;
        }
        case 0x8f: // EMPTY_SET
          this.push(new Set());
          break;
        case 0x90: {
          // ADDITEMS
          const items = this.popMark();
          const s = this.top();
          if (!(s instanceof Set)) this.error(`ADDITEMS on a ${describe(s)}`);
          for (const it of items) s.add(it);
          break;
        }
        case 0x91: // FROZENSET
          this.push(new Set(this.popMark()));
          break;
        case 0x61: {
          // APPEND 'a'
          const v = this.pop();
          this.appendItems(this.top(), [v]);
          break;
        }
        case 0x65: {
          // APPENDS 'e'
          const items = this.popMark();
          this.appendItems(this.top(), items);
          break;
        }
        case 0x73: {
          // SETITEM 's'
          const v = this.pop();
          const k = this.pop();
          this.setItems(this.top(), [k, v]);
          break;
        }
        case 0x75: {
          // SETITEMS 'u'
          const items = this.popMark();
          this.setItems(this.top(), items);
          break;
        }

        // --- memo ---
        case 0x71: // BINPUT 'q'
          this.memo.set(this.u8(), this.top());
          break;
        case 0x72: // LONG_BINPUT 'r'
          this.memo.set(this.u32(), this.top());
          break;
        case 0x94: // MEMOIZE
          this.memo.set(this.memo.size, this.top());
          break;
        case 0x70: {
          // PUT 'p'
          const s = this.line();
          if (!/^\d+$/.test(s)) this.error('bad PUT index');
          this.memo.set(Number(s), this.top());
          break;
        }
        case 0x68: // BINGET 'h'
        case 0x6a: // LONG_BINGET 'j'
        case 0x67: {
          // GET 'g'
          const idx = op === 0x68 ? this.u8() : op === 0x6a ? this.u32() : Number(this.line());
          if (!this.memo.has(idx)) this.error(`memo key ${clip(String(idx))} not defined`);
          this.push(this.memo.get(idx));
          break;
        }

        // --- globals and objects (the only way to reach code, so all allowlisted) ---
        case 0x63: {
          // GLOBAL 'c'
          const module = this.line();
          const name = this.line();
          this.push(this.resolveGlobal(module, name));
          break;
        }
        case 0x93: {
          // STACK_GLOBAL
          const name = this.pop();
          const module = this.pop();
          if (typeof module !== 'string' || typeof name !== 'string') this.error('STACK_GLOBAL needs two strings');
          this.push(this.resolveGlobal(module, name));
          break;
        }
        case 0x69: {
          // INST 'i': module and name inline, args from the mark
          const module = this.line();
          const name = this.line();
          const cls = this.resolveGlobal(module, name);
          this.push(this.callGlobal(cls, this.popMark(), 'NEWOBJ'));
          break;
        }
        case 0x6f: {
          // OBJ 'o': class and args from the mark
          const items = this.popMark();
          if (items.length === 0) this.error('OBJ without a class');
          this.push(this.callGlobal(items[0], items.slice(1), 'NEWOBJ'));
          break;
        }
        case 0x52: {
          // REDUCE 'R'
          const args = this.pop();
          const fn = this.pop();
          this.push(this.callGlobal(fn, args, 'REDUCE'));
          break;
        }
        case 0x81: {
          // NEWOBJ
          const args = this.pop();
          const cls = this.pop();
          this.push(this.callGlobal(cls, args, 'NEWOBJ'));
          break;
        }
        case 0x92: {
          // NEWOBJ_EX
          const kwargs = this.pop();
          const args = this.pop();
          const cls = this.pop();
          if (!isDict(kwargs) || Object.keys(kwargs).length) this.error('NEWOBJ_EX with keyword arguments');
          this.push(this.callGlobal(cls, args, 'NEWOBJ'));
          break;
        }
        case 0x62: {
          // BUILD 'b'
          const state = this.pop();
          this.build(this.top(), state);
          break;
        }
        case 0x51: {
          // BINPERSID 'Q'
          const pid = this.pop();
          if (!opts.persistentLoad) this.error('persistent id without a persistent_load handler');
          this.push(opts.persistentLoad(pid));
          break;
        }
        case 0x50: {
          // PERSID 'P'
          const pid = this.line();
          if (!opts.persistentLoad) this.error('persistent id without a persistent_load handler');
          this.push(opts.persistentLoad(pid));
          break;
        }
        case 0x82: // EXT1
        case 0x83: // EXT2
        case 0x84: // EXT4
          throw new UnsafePickleError(
            `refusing extension-registry code (EXT${op === 0x82 ? 1 : op === 0x83 ? 2 : 4}) from ${
              opts.source ?? 'the pickle'
            }: it names a global indirectly`,
          );
        case 0x97: // NEXT_BUFFER
        case 0x98: // READONLY_BUFFER
          this.error('out-of-band buffers (pickle protocol 5) are not supported');
        default:
          this.error(`unsupported opcode 0x${op.toString(16).padStart(2, '0')}`);
      }
    }
  }
}
