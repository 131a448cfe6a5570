/**
 * Hostile weight and array files of the December 2026 reliability sweep (reference/
 * reliability-2026-12.md, F3, F4, F5, F11, F17, F20), assembled byte by byte. Nothing here loads
 * them: loaders.test.ts does, some in a child process (load-child.ts) under a memory cap and a
 * deadline, because the loaders they were written against hang or allocate gigabytes.
 */

import { constants, deflateRawSync } from 'node:zlib';

import { crc32 } from '../../models/io/zip.js';
import { ascii, concat, P } from '../io/fixtures.js';

/** Opcodes the fixtures' pickle assembler lacks. */
const OP = {
  emptyList: [0x5d],
  binput: (i: number) => [0x71, i],
  binget: (i: number) => [0x68, i],
  pop: [0x30],
  append: [0x61],
  setitems: [0x75],
  long4: (n: number) => {
    const b = new Uint8Array(5);
    b[0] = 0x8b;
    new DataView(b.buffer).setInt32(1, n, true);
    return b;
  },
};

/** A u32 / u64 little-endian field. */
function u32(n: number): Uint8Array {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setUint32(0, n, true);
  return b;
}

/** One zip entry to write: stored (method 0) or deflated (8), with sizes and CRC that may lie. */
export interface ZipEntrySpec {
  name: string;
  /** The bytes as stored in the archive (already deflated for method 8). */
  data: Uint8Array;
  method?: 0 | 8;
  /** Declared uncompressed size (default: data.length). */
  size?: number;
  /** Declared CRC-32 (default: CRC of `data`, right for stored entries). */
  crc?: number;
}

/** A zip archive of the given entries, laid out as Python's zipfile writes it. */
export function zipOf(entries: ZipEntrySpec[]): Uint8Array {
  const locals: Uint8Array[] = [];
  const centrals: Uint8Array[] = [];
  let offset = 0;
  for (const e of entries) {
    const name = ascii(e.name);
    const method = e.method ?? 0;
    const size = e.size ?? e.data.length;
    const crc = e.crc ?? crc32(e.data);
    const local = new Uint8Array(30);
    const lv = new DataView(local.buffer);
    lv.setUint32(0, 0x04034b50, true);
    lv.setUint16(4, 20, true);
    lv.setUint16(8, method, true);
    lv.setUint32(14, crc, true);
    lv.setUint32(18, e.data.length, true);
    lv.setUint32(22, size, true);
    lv.setUint16(26, name.length, true);
    const central = new Uint8Array(46);
    const cv = new DataView(central.buffer);
    cv.setUint32(0, 0x02014b50, true);
    cv.setUint16(4, 20, true);
    cv.setUint16(6, 20, true);
    cv.setUint16(10, method, true);
    cv.setUint32(16, crc, true);
    cv.setUint32(20, e.data.length, true);
    cv.setUint32(24, size, true);
    cv.setUint16(28, name.length, true);
    cv.setUint32(42, offset, true);
    locals.push(local, name, e.data);
    centrals.push(central, name);
    offset += 30 + name.length + e.data.length;
  }
  const cd = concat(...centrals);
  const end = new Uint8Array(22);
  const ev = new DataView(end.buffer);
  ev.setUint32(0, 0x06054b50, true);
  ev.setUint16(8, entries.length, true);
  ev.setUint16(10, entries.length, true);
  ev.setUint32(12, cd.length, true);
  ev.setUint32(16, offset, true);
  return concat(...locals, cd, end);
}

/** A torch zip checkpoint holding `pkl` as archive/data.pkl and the given storages. */
export function torchZip(pkl: Uint8Array, storages: [string, Uint8Array][] = []): Uint8Array {
  return zipOf([{ name: 'archive/data.pkl', data: pkl }, ...storages.map(([key, data]) => ({ name: `archive/data/${key}`, data }))]);
}

/**
 * Pickle ops building `_rebuild_tensor_v2(<FloatStorage 'key' of `numel`>, 0, shape, stride,
 * False, OrderedDict())`, as torch.save writes a tensor (protocol 2).
 */
export function tensorOps(key: string, numel: number, shape: number[], stride: number[]): Uint8Array {
  const tuple = (xs: number[]) => concat(P.mark, ...xs.map((x) => P.int(x)), P.tuple);
  return concat(
    P.global('torch._utils', '_rebuild_tensor_v2'),
    P.mark,
    P.mark, P.str('storage'), P.global('torch', 'FloatStorage'), P.str(key), P.str('cpu'), P.int(numel), P.tuple,
    P.binpersid,
    P.int(0), tuple(shape), tuple(stride), P.newfalse,
    P.global('collections', 'OrderedDict'), P.emptyTuple, P.reduce,
    P.tuple,
    P.reduce,
  );
}

/** Float32 values as little-endian bytes (a storage). */
export function f32Bytes(values: number[]): Uint8Array {
  return new Uint8Array(new Float32Array(values).buffer);
}

/** F3: a LONG4 integer of `length` bytes (0x01 each) as a torch zip's data.pkl. */
export function long4Checkpoint(length: number): Uint8Array {
  return torchZip(concat(P.proto(2), OP.long4(length), new Uint8Array(length).fill(1), P.stop));
}

/**
 * F4 (billion laughs): `{'teacher': {'a': x_levels}}` with x_0 a list (or a tensor) and
 * x_{i+1} = (x_i, x_i) through the memo: `levels` * 7 bytes for 2^levels paths. The doc's 638-byte
 * file is `levels` = 60 with an empty list at the bottom.
 */
export function dagCheckpoint(levels: number, bottom: 'list' | 'tensor' = 'list'): Uint8Array {
  const leaf = bottom === 'list' ? OP.emptyList : tensorOps('0', 1, [1], [1]);
  const pkl = concat(
    P.proto(2),
    P.emptyDict, P.str('teacher'), P.emptyDict, P.str('a'),
    leaf, OP.binput(0),
    ...Array.from({ length: levels }, () => concat(OP.pop, OP.binget(0), OP.binget(0), P.tuple2, OP.binput(0))),
    P.setitem, P.setitem, P.stop,
  );
  return torchZip(pkl, bottom === 'tensor' ? [['0', f32Bytes([1.5])]] : []);
}

/** F4's cousin in the unpickler: a dict whose one key is a tuple DAG of `levels` levels. */
export function dagKeyPickle(levels: number): Uint8Array {
  return concat(
    P.proto(2),
    P.emptyDict,
    P.emptyTuple, OP.binput(0),
    ...Array.from({ length: levels }, () => concat(OP.pop, OP.binget(0), OP.binget(0), P.tuple2, OP.binput(0))),
    P.int(1), P.setitem, P.stop,
  );
}

/**
 * "Share the memo, never copy": one `textLength`-character string handed `times` times to the
 * allowlisted `_codecs.encode`, each call copying it (protocol-2 bytes). 8 bytes of pickle per call.
 */
export function sharedCopyCheckpoint(textLength: number, times: number): Uint8Array {
  const call = concat(OP.binget(1), OP.binget(0), OP.binget(2), P.tuple2, P.reduce, OP.append);
  const pkl = concat(
    P.proto(2),
    P.str('x'.repeat(textLength)), OP.binput(0),
    P.global('_codecs', 'encode'), OP.binput(1),
    P.str('latin1'), OP.binput(2),
    P.emptyDict, P.str('teacher'), OP.emptyList,
    ...Array.from({ length: times }, () => call),
    P.setitem, P.stop,
  );
  return torchZip(pkl);
}

/** F5a: `{'teacher': {'pos_embed': zeros(1).expand(n)}}`: n float32s from one stored float. */
export function stride0Checkpoint(n: number): Uint8Array {
  const pkl = concat(P.proto(2), P.emptyDict, P.str('teacher'), P.emptyDict, P.str('pos_embed'), tensorOps('0', 1, [n], [0]), P.setitem, P.setitem, P.stop);
  return torchZip(pkl, [['0', f32Bytes([0])]]);
}

/**
 * F5b: a torch zip `{'w': zeros(4)}` whose storage entry is deflated: `chunks` x 16 MiB of zeros
 * (about 16 KB of deflate each). `declared` is the uncompressed size its headers claim: the real
 * one, or 16 bytes (what the tensor needs) to slip past a check made before inflating.
 */
export function zipBombCheckpoint(chunks: number, declared: 'true-size' | 'storage-size'): Uint8Array {
  const chunk = 16 * 2 ** 20;
  // Sync-flushed chunks end byte-aligned and not final, so they concatenate into one stream;
  // 0x03 0x00 is an empty final block.
  const piece = deflateRawSync(new Uint8Array(chunk), { finishFlush: constants.Z_SYNC_FLUSH });
  const deflated = concat(...Array.from({ length: chunks }, () => piece), [0x03, 0x00]);
  const size = declared === 'true-size' ? chunks * chunk : 16;
  const pkl = concat(P.proto(2), P.emptyDict, P.str('w'), tensorOps('0', 4, [4], [1]), P.setitem, P.stop);
  return zipOf([
    { name: 'archive/data.pkl', data: pkl },
    { name: 'archive/data/0', data: deflated, method: 8, size, crc: crc32(new Uint8Array(16)) },
  ]);
}

/** A safetensors file from a header object and a data section. */
export function safetensorsOf(header: unknown, data: Uint8Array): Uint8Array {
  const json = new TextEncoder().encode(JSON.stringify(header));
  const len = new Uint8Array(8);
  new DataView(len.buffer).setBigUint64(0, BigInt(json.length), true);
  return concat(len, json, data);
}

/** F5c: `count` U8 tensors of `bytes` bytes, every one aliasing the whole data section. */
export function overlapSafetensors(bytes: number, count: number): Uint8Array {
  const header = Object.fromEntries(Array.from({ length: count }, (_, i) => [`u${i}`, { dtype: 'U8', shape: [bytes], data_offsets: [0, bytes] }]));
  return safetensorsOf(header, new Uint8Array(bytes));
}

/** F20: a .npy file whose header opens `depth` parentheses (version 2: the header may be long). */
export function deepNpy(depth: number): Uint8Array {
  return npyV2(`{'descr': '<f4', 'fortran_order': False, 'shape': ${'('.repeat(depth)}`);
}

/** A v2 .npy header (u32 length), for headers longer than 65535 bytes. */
export function npyV2(header: string, data: Uint8Array = new Uint8Array(0)): Uint8Array {
  const text = ascii(`${header}\n`);
  return concat([0x93], ascii('NUMPY'), [2, 0], u32(text.length), text, data);
}
