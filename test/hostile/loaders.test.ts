/**
 * Hostile files against the weight and array loaders of models/io: the reproductions of issue 17's
 * F3, F4, F5a-c, F11, F17 and F20 (npy) from reference/reliability-2026-12.md, built in JS by
 * hostile-files.ts. Each must end in one short, clear refusal (or a correct load), quickly and
 * without allocating what the file describes.
 *
 * Files that made the loaders hang or allocate gigabytes run in a child process (load-child.ts,
 * bundled with esbuild as in test/train/kill-save.test.ts) under `ulimit -v` and a deadline: a
 * regression then fails its test (killed, crashed, or refused for the wrong reason) instead of
 * hanging or swapping the runner. The child reports its peak RSS, which must stay far below what
 * the file describes (1 GiB and more).
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { build } from 'esbuild';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { LoadBudget } from '../../models/io/budget.js';
import { MAX_LISTED_NAMES } from '../../models/io/error-text.js';
import { nodeInflateRaw } from '../../models/io/node-files.js';
import { NpyError, parseNpy } from '../../models/io/npy.js';
import { MAX_INT_DIGITS, MAX_LONG_BYTES, PickleError, unpickle } from '../../models/io/pickle.js';
import { looksLikeLegacyTorch, parseSafetensors, SafetensorsError, writeSafetensors } from '../../models/io/safetensors.js';
import { sniffFormat } from '../../models/io/sniff.js';
import { checkStrict, loadStateDict, selectCheckpointEntry, StateDictMismatchError } from '../../models/io/state-dict.js';
import { flattenStateDict, loadTorchCheckpoint, TORCH_GLOBALS, TorchTensor } from '../../models/io/torch.js';
import { ZipArchive, ZipError } from '../../models/io/zip.js';
import { ascii, concat, expectExact, fixture, fixtureJson, makeZip, P, rng } from '../io/fixtures.js';
import {
  dagCheckpoint,
  deepNpy,
  f32Bytes,
  npyV2,
  safetensorsOf,
  stride0Checkpoint,
  tensorOps,
  torchZip,
  zipBombCheckpoint,
} from './hostile-files.js';

// ---------------------------------------------------------------------------------------------
// The child process
// ---------------------------------------------------------------------------------------------

/** Address-space cap of the child (KiB): node needs ~0.7 GB of it; 1 GiB more does not fit. */
const CHILD_VM_KIB = 1_200_000;
/** The child is killed past this (a hang); loads here take well under a second. */
const CHILD_DEADLINE_MS = 20_000;
/** Peak RSS allowed to a child: node itself plus the hostile file (at most 8 MiB), never the bomb. */
const CHILD_MAX_RSS_KIB = 300_000;

const tmpRoots: string[] = [];
let childScript = '';
beforeAll(async () => {
  const dir = mkdtempSync(join(tmpdir(), 'webdino-hostile-'));
  tmpRoots.push(dir);
  childScript = join(dir, 'load-child.mjs');
  await build({
    entryPoints: [fileURLToPath(new URL('./load-child.ts', import.meta.url))],
    outfile: childScript,
    bundle: true,
    format: 'esm',
    platform: 'node',
    target: 'node20',
    logLevel: 'warning',
  });
});
afterAll(() => {
  for (const d of tmpRoots) rmSync(d, { recursive: true, force: true });
});

interface ChildResult {
  outcome: 'loaded' | 'refused';
  error?: string;
  message?: string;
  maxRssKiB: number;
}

/** Runs one case of load-child.ts under the memory cap; rejects if it is killed, crashes or says nothing. */
function runChild(name: string): Promise<ChildResult> {
  return new Promise((resolve, reject) => {
    const child = spawn('bash', ['-c', `ulimit -v ${CHILD_VM_KIB}; exec "${process.execPath}" "$0" "$1"`, childScript, name], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), CHILD_DEADLINE_MS);
    child.on('error', reject);
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      if (signal === 'SIGKILL') reject(new Error(`case '${name}' did not finish in ${CHILD_DEADLINE_MS} ms (killed)`));
      else if (code !== 0 || !out.trim()) reject(new Error(`case '${name}' crashed (exit ${code}, signal ${signal}): ${err.slice(-600)}`));
      else resolve(JSON.parse(out.trim().split('\n').at(-1)!) as ChildResult);
    });
  });
}

/** A refusal as the child saw it: the error class, a one-line message matching `pattern`, small RSS. */
async function expectRefusal(name: string, error: string, pattern: RegExp): Promise<void> {
  const r = await runChild(name);
  expect(r.outcome, JSON.stringify(r)).toBe('refused');
  expect(r.error, r.message).toBe(error);
  expect(r.message).toMatch(pattern);
  expect(r.message).not.toContain('\n');
  expect(r.message!.length).toBeLessThan(600);
  expect(r.maxRssKiB).toBeLessThan(CHILD_MAX_RSS_KIB);
}

const CHILD_TIMEOUT = CHILD_DEADLINE_MS + 10_000;

// ---------------------------------------------------------------------------------------------
// F3: LONG4 integers
// ---------------------------------------------------------------------------------------------

const pickleOpts = { globals: TORCH_GLOBALS, source: 't.pkl' };
const long4 = (payload: Uint8Array) => {
  const n = new Uint8Array(4);
  new DataView(n.buffer).setInt32(0, payload.length, true);
  return concat(P.proto(2), [0x8b], n, payload, P.stop);
};

/** Little-endian two's complement, the slow obvious way (the reference). */
function referenceLong(bytes: Uint8Array): bigint {
  let v = 0n;
  for (let i = 0; i < bytes.length; i++) v += BigInt(bytes[i]!) << BigInt(8 * i);
  if (bytes.length && bytes[bytes.length - 1]! & 0x80) v -= 1n << BigInt(8 * bytes.length);
  return v;
}

describe('F3: integers in pickles', () => {
  it('a 256 KB LONG4 is refused at once (it once took minutes)', async () => {
    await expectRefusal('long4', 'PickleError', /integer of 262144 bytes is longer than the 2048-byte limit .* of long4\.pth:archive\/data\.pkl/);
  }, CHILD_TIMEOUT);

  it('decodes LONG4 exactly up to the limit, positive and negative, and refuses one byte more', () => {
    const rand = rng(17);
    for (const length of [1, 2, 7, 8, 9, 10, 100, 1000, MAX_LONG_BYTES]) {
      for (const top of [0x00, 0x7f, 0x80, 0xff]) {
        const bytes = Uint8Array.from({ length }, () => Math.floor(rand() * 256));
        bytes[length - 1] = top;
        const want = referenceLong(bytes);
        const got = unpickle(long4(bytes), pickleOpts);
        expect(BigInt(got as number | bigint), `${length} bytes, top ${top}`).toBe(want);
        // Safe integers come back as numbers, others as bigints.
        expect(typeof got).toBe(want >= BigInt(Number.MIN_SAFE_INTEGER) && want <= BigInt(Number.MAX_SAFE_INTEGER) ? 'number' : 'bigint');
      }
    }
    expect(() => unpickle(long4(new Uint8Array(MAX_LONG_BYTES + 1)), pickleOpts)).toThrow(
      new PickleError(`pickle: integer of ${MAX_LONG_BYTES + 1} bytes is longer than the ${MAX_LONG_BYTES}-byte limit (checkpoints hold 64-bit integers) at byte 2 of t.pkl`),
    );
  });

  it('bounds protocol-0 decimal integers to CPython\'s 4300 digits', () => {
    const int = (digits: string) => concat(ascii(`I${digits}\n`), P.stop);
    const long = (digits: string) => concat(ascii(`L${digits}L\n`), P.stop);
    const limit = '9'.repeat(MAX_INT_DIGITS);
    expect(unpickle(int(limit), pickleOpts)).toBe(BigInt(limit));
    expect(unpickle(long(`-${limit}`), pickleOpts)).toBe(-BigInt(limit));
    expect(unpickle(int(`000${limit}`), pickleOpts)).toBe(BigInt(limit)); // leading zeros are free
    expect(() => unpickle(int(`1${limit}`), pickleOpts)).toThrow(/INT of 4301 characters is longer than the 4300-digit limit/);
    expect(() => unpickle(long('7'.repeat(300_000)), pickleOpts)).toThrow(/LONG of 300000 characters is longer than the 4300-digit limit/);
    // A bad INT is quoted, but not in full.
    const bad = (() => {
      try {
        unpickle(int('x'.repeat(100_000)), pickleOpts);
      } catch (e) {
        return (e as Error).message;
      }
      return '';
    })();
    expect(bad).toMatch(/^pickle: bad INT "x{200}\.\.\. \(100,000 characters\)" at byte 0 of t\.pkl$/);
  });
});

// ---------------------------------------------------------------------------------------------
// F4: shared references (billion laughs)
// ---------------------------------------------------------------------------------------------

describe('F4: shared references', () => {
  it('a 60-level DAG of shared tuples (2^60 paths) is refused at once, with or without tensors', async () => {
    await expectRefusal('dag', 'PickleError', /expand to 0 tensor keys and 2\.31e\+18 entries visited, past the limit of 10,000,000 .*billion laughs/);
    await expectRefusal('dag-tensor', 'PickleError', /expand to 1\.15e\+18 tensor keys .*billion laughs/);
  }, 2 * CHILD_TIMEOUT);

  it('a dict key that is a 60-level tuple DAG is refused, not rendered', async () => {
    await expectRefusal('dag-key', 'PickleError', /a tuple dict key renders to more than 65536 characters/);
  }, CHILD_TIMEOUT);

  it('a tuple key nested 100000 deep is refused by its depth, not by a stack overflow', () => {
    const key = (depth: number) => concat(P.proto(2), P.emptyDict, P.emptyTuple, new Array(depth).fill(0x85), P.int(1), P.setitem, P.stop);
    expect(Object.keys(unpickle(key(99), pickleOpts) as object)[0]).toBe(`${'('.repeat(99)}()${',)'.repeat(99)}`);
    expect(() => unpickle(key(100_000), pickleOpts)).toThrow(new PickleError('pickle: a tuple dict key nested deeper than 100 levels at byte 100006 of t.pkl'));
  });

  it('one big string handed to a constructor 2000 times is refused (shared, never copied 2000 times)', async () => {
    await expectRefusal('shared-copy', 'PickleError', /constructor arguments would copy more than 4x the pickle's size/);
  }, CHILD_TIMEOUT);

  it('counts keys before building them: maxEntries and maxKeyChars refuse a 12-level DAG the default allows', () => {
    const ckpt = loadTorchCheckpoint(dagCheckpoint(12, 'tensor'));
    const teacher = selectCheckpointEntry(ckpt);
    const flat = flattenStateDict(teacher);
    expect(flat.size).toBe(4096);
    expect(flat.has('a.0.1.0.1.0.1.0.1.0.1.0.1')).toBe(true);
    // Every key names the one shared tensor.
    expect(new Set(flat.values()).size).toBe(1);
    expect(() => flattenStateDict(teacher, '', { maxEntries: 4000 })).toThrow(
      /^checkpoint: its nested containers expand to 4,096 tensor keys and 8,191 entries visited, past the limit of 4,000 \(maxEntries\)/,
    );
    // 4096 keys of 25 characters.
    expect(() => flattenStateDict(teacher, '', { maxKeyChars: 100_000 })).toThrow(/102,400 characters of keys, past the limit of 100,000 \(maxKeyChars\)/);
  });

  it('a tied tensor under two keys, and one state dict under two names, still load under every key', () => {
    const good = concat(
      P.proto(2),
      P.emptyDict,
      P.str('teacher'), P.emptyDict,
      P.str('blocks.0.w'), tensorOps('0', 3, [3], [1]), [0x71, 0], P.setitem,
      P.str('head.w'), [0x68, 0], P.setitem,
      [0x71, 1], // BINPUT 1: the teacher dict
      P.setitem,
      P.str('student'), [0x68, 1], P.setitem, // the same dict under a second name
      P.stop,
    );
    const file = torchZip(good, [['0', f32Bytes([1, 2, 3])]]);
    const teacher = loadStateDict(file).tensors;
    expect([...teacher.keys()]).toEqual(['blocks.0.w', 'head.w']);
    expect(teacher.get('head.w')).toBe(teacher.get('blocks.0.w'));
    expect(Array.from(teacher.get('head.w')!.data)).toEqual([1, 2, 3]);
    const all = flattenStateDict(loadTorchCheckpoint(file));
    expect([...all.keys()]).toEqual(['teacher.blocks.0.w', 'teacher.head.w', 'student.blocks.0.w', 'student.head.w']);
  });
});

// ---------------------------------------------------------------------------------------------
// F5a: stride-0 (expanded) tensors
// ---------------------------------------------------------------------------------------------

describe('F5a: expanded tensors are bounded by the load budget', () => {
  it('2^28 float32s (1 GiB) from one stored float are refused before allocating', async () => {
    await expectRefusal(
      'stride0',
      'PickleError',
      /^s0\.pth: tensor of shape \[268435456\], stride \[0\] \(268,435,456 elements over a storage of 1: an expanded, stride-0 view\) as float32 needs 1 GiB \(1,073,741,824 bytes\), past the load budget of 64 MiB \(the default for a \d+-byte file: 8x its size, at least 64 MiB\)\. Refused before allocating/,
    );
  }, CHILD_TIMEOUT);

  it('a small expanded tensor loads within the default budget; maxBytes lowers or raises the limit', () => {
    const file = stride0Checkpoint(2 ** 22); // 16 MiB of float32
    const t = loadStateDict(file).tensors.get('pos_embed')!;
    expect(t.shape).toEqual([2 ** 22]);
    expect(t.data.length).toBe(2 ** 22);
    expect(t.data.every((v) => v === 0)).toBe(true);
    expect(() => loadStateDict(file, { name: 'x.pth', maxBytes: 2 ** 20 })).toThrow(
      /^x\.pth: tensor of shape \[4194304\], stride \[0\] .* needs 16 MiB \(16,777,216 bytes\), past the load budget of 1 MiB \(set by maxBytes\)/,
    );
    // Past the 64 MiB floor by default; allowed when the caller raises the budget.
    const big = stride0Checkpoint(2 ** 24 + 1);
    expect(() => loadTorchCheckpoint(big)).toThrow(/past the load budget of 64 MiB/);
    expect((loadTorchCheckpoint(big, { maxBytes: 2 ** 27 }) as any).teacher.pos_embed.data.length).toBe(2 ** 24 + 1);
  });

  it('charges every copy: many tensors viewing one storage add up', () => {
    // 40 contiguous tensors, each the whole 1 MiB storage: 40 MiB of copies from a 1 MiB file.
    const n = 2 ** 18;
    const items = Array.from({ length: 40 }, (_, i) => concat(P.str(`t${i}`), tensorOps('0', n, [n], [1]), P.setitem));
    const file = torchZip(concat(P.proto(2), P.emptyDict, ...items, P.stop), [['0', new Uint8Array(4 * n)]]);
    expect(Object.keys(loadTorchCheckpoint(file) as object)).toHaveLength(40);
    expect(() => loadTorchCheckpoint(file, { maxBytes: 20 * 4 * n })).toThrow(/20 MiB of it already used/);
  });

  it('LoadBudget refuses before the allocation and says so', () => {
    const b = LoadBudget.forFile(1000);
    expect(b.limit).toBe(64 * 2 ** 20);
    expect(LoadBudget.forFile(2 ** 30).limit).toBe(8 * 2 ** 30);
    const fail = (m: string): never => {
      throw new Error(m);
    };
    b.charge(60 * 2 ** 20, 'a', fail);
    expect(() => b.charge(5 * 2 ** 20, 'tensor x', fail)).toThrow(
      'tensor x needs 5 MiB (5,242,880 bytes), past the load budget of 64 MiB (the default for a 1,000-byte file: 8x its size, at least 64 MiB, 60 MiB of it already used). Refused before allocating; pass a larger maxBytes if the file is trusted',
    );
    expect(b.spent).toBe(60 * 2 ** 20);
  });
});

// ---------------------------------------------------------------------------------------------
// F5b: zip bombs
// ---------------------------------------------------------------------------------------------

describe('F5b: deflated zip entries are capped', () => {
  it('1 GiB of zeros in a 1 MB file, declared truthfully: refused before inflating (sync and async)', async () => {
    const bomb = /^zip: entry 'archive\/data\/0' \(1020 KiB deflated, declaring 1 GiB inflated\) needs 1 GiB .*past the load budget of 64 MiB/;
    await expectRefusal('bomb-sync', 'ZipError', bomb);
    await expectRefusal('bomb-async', 'ZipError', bomb);
  }, 2 * CHILD_TIMEOUT);

  it('the same bomb declaring the 16 bytes its tensor needs: inflation stops at 16 bytes (sync and async)', async () => {
    const lie = /^zip: entry 'archive\/data\/0' inflates to more than its declared 16 bytes \(a zip bomb, or corrupt\); stopped there$/;
    await expectRefusal('bomb-sync-lie', 'ZipError', lie);
    await expectRefusal('bomb-async-lie', 'ZipError', lie);
  }, 2 * CHILD_TIMEOUT);

  it('small bombs in process: the budget is shared by all entries, and ZipArchive caps on its own', () => {
    const honest = zipBombCheckpoint(2, 'true-size'); // 32 MiB declared and real
    expect(() => loadTorchCheckpoint(honest, { inflateRaw: nodeInflateRaw, maxBytes: 2 ** 20 })).toThrow(
      /needs 32 MiB \(33,554,432 bytes\), past the load budget of 1 MiB \(set by maxBytes\); a zip bomb\?/,
    );
    const zip = new ZipArchive(zipBombCheckpoint(2, 'storage-size'));
    expect(() => zip.read('archive/data/0', nodeInflateRaw)).toThrow(
      new ZipError("zip: entry 'archive/data/0' inflates to more than its declared 16 bytes (a zip bomb, or corrupt); stopped there"),
    );
    // An inflater that ignores the cap is still caught by the size check.
    const careless = (d: Uint8Array) => nodeInflateRaw(d, 2 ** 30);
    expect(() => zip.read('archive/data/0', careless)).toThrow("zip: entry 'archive/data/0': expected 16 bytes, got 33554432");
  });

  it('legitimately deflated checkpoints still load (the fixture written by Python zipfile)', () => {
    const sd = loadTorchCheckpoint(fixture('state_dict_deflated.pth'), { inflateRaw: nodeInflateRaw }) as Record<string, TorchTensor>;
    expect(Array.from(sd['scalar']!.data)).toEqual([3.25]);
  });
});

// ---------------------------------------------------------------------------------------------
// F5c: safetensors offsets must tile the data section
// ---------------------------------------------------------------------------------------------

describe('F5c: safetensors data_offsets tile the data section exactly', () => {
  const u8 = (n: number, begin: number, end: number) => ({ dtype: 'U8', shape: [n], data_offsets: [begin, end] });

  it('50 tensors aliasing one 8 MiB section are refused, naming the tensors', async () => {
    await expectRefusal('overlap', 'SafetensorsError', /^safetensors: tensor 'u1': data_offsets \[0,8388608\) overlap tensor 'u0' \[0,8388608\)/);
  }, CHILD_TIMEOUT);

  it('refuses overlaps, holes and leftover bytes; accepts zero-length tensors sharing an offset', () => {
    const data = new Uint8Array(8);
    expect(() => parseSafetensors(safetensorsOf({ a: u8(6, 0, 6), b: u8(4, 4, 8) }, data))).toThrow(
      new SafetensorsError("safetensors: tensor 'b': data_offsets [4,8) overlap tensor 'a' [0,6) (tensors must not share bytes)"),
    );
    expect(() => parseSafetensors(safetensorsOf({ a: u8(4, 0, 4), b: u8(2, 6, 8) }, data))).toThrow(
      new SafetensorsError("safetensors: tensor 'b': data_offsets [6,8) leave bytes [4,6) of the data section unused (offsets must tile it without holes)"),
    );
    expect(() => parseSafetensors(safetensorsOf({ a: u8(2, 2, 4), b: u8(4, 4, 8) }, data))).toThrow(
      "tensor 'a': data_offsets [2,4) leave bytes [0,2) of the data section unused",
    );
    expect(() => parseSafetensors(safetensorsOf({ a: u8(4, 0, 4), b: u8(2, 4, 6) }, data))).toThrow(
      new SafetensorsError("safetensors: data section has 8 bytes but the tensors cover 6: 2 bytes left over after tensor 'b'"),
    );
    expect(() => parseSafetensors(safetensorsOf({}, data))).toThrow('data section has 8 bytes but the tensors cover 0: 8 bytes left over with no tensors');
    const ok = parseSafetensors(safetensorsOf({ e: u8(0, 4, 4), a: u8(4, 0, 4), f: u8(0, 4, 4), b: u8(4, 4, 8) }, Uint8Array.from([1, 2, 3, 4, 5, 6, 7, 8])));
    expect([...ok.keys()]).toEqual(['a', 'e', 'f', 'b']);
    expect(Array.from(ok.get('b')!.data)).toEqual([5, 6, 7, 8]);
    // Files from the reference writer (the Python fixtures) and ours tile exactly.
    expect(parseSafetensors(fixture('mixed.safetensors')).size).toBe(10);
    expect(parseSafetensors(writeSafetensors({ w: { shape: [2], data: new Float32Array([1, 2]) } })).size).toBe(1);
  });
});

// ---------------------------------------------------------------------------------------------
// F11: format sniffing
// ---------------------------------------------------------------------------------------------

describe('F11: every loader names the format it was given', () => {
  const weights = 'a weights file (expected safetensors or a PyTorch checkpoint: a .pth zip or legacy pickle)';
  const others: [string, Uint8Array, string][] = [
    ['png', fixture('gray.png'), 'a PNG image'],
    ['jpeg', fixture('rgb.jpg'), 'a JPEG image'],
    ['npy', fixture('f4_2d.npy'), 'a NumPy .npy array'],
    ['pickle', concat(P.proto(4), [0x95, 3, 0, 0, 0, 0, 0, 0, 0], P.int(5), P.stop), 'a Python pickle that is not a PyTorch checkpoint'],
    ['gzip', Uint8Array.from([0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3]), 'a gzip-compressed file (decompress it first)'],
    ['html', ascii('\n<!DOCTYPE html><html><body>404</body></html>'), 'an HTML page (a failed download?)'],
    ['git-lfs-pointer', ascii('version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 12345\n'), 'a Git LFS pointer file, not the weights themselves (run `git lfs pull`)'],
  ];

  it('a legacy torch file saved with pickle_protocol=4 (80 04 95 ...) loads as torch', () => {
    const file = fixture('legacy_proto4.pth');
    expect(Array.from(file.subarray(0, 3))).toEqual([0x80, 0x04, 0x95]);
    expect(sniffFormat(file)).toBe('torch-legacy');
    expect(looksLikeLegacyTorch(file)).toBe(true);
    const loaded = loadStateDict(file, { name: 'l4.pth' });
    expect(loaded.format).toBe('torch');
    const exp = fixtureJson('legacy_proto4.expected.json').tensors;
    expect([...loaded.tensors.keys()]).toEqual(['w', 'b']);
    for (const k of ['w', 'b']) {
      expect(loaded.tensors.get(k)!.shape, k).toEqual(exp[k].shape);
      expectExact(loaded.tensors.get(k)!.data, exp[k].values, k);
    }
  });

  it('protocols 2 to 5 with the torch magic are legacy torch; without it, a plain pickle', () => {
    const magic = [0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19, 0x2e];
    for (const proto of [2, 3]) expect(sniffFormat(concat(P.proto(proto), magic))).toBe('torch-legacy');
    for (const proto of [4, 5]) expect(sniffFormat(concat(P.proto(proto), [0x95, 13, 0, 0, 0, 0, 0, 0, 0], magic))).toBe('torch-legacy');
    expect(sniffFormat(concat(P.proto(2), P.int(5), P.stop))).toBe('pickle');
    expect(sniffFormat(fixture('legacy_state_dict.pth'))).toBe('torch-legacy');
    expect(sniffFormat(fixture('state_dict.pth'))).toBe('zip');
    expect(sniffFormat(fixture('mixed.safetensors'))).toBe('safetensors');
  });

  for (const [format, bytes, described] of others) {
    it(`${format}: "this is ${described}" from loadStateDict, the safetensors, torch and npy parsers`, () => {
      expect(sniffFormat(bytes)).toBe(format);
      expect(() => loadStateDict(bytes, { name: 'x.bin' })).toThrow(`x.bin: this is ${described}, not ${weights}`);
      // What `embed --weights` reaches when its own sniffing falls through to safetensors.
      expect(() => parseSafetensors(bytes)).toThrow(new SafetensorsError(`safetensors: this is ${described}, not a safetensors file`));
      expect(() => loadTorchCheckpoint(bytes, { name: 'x.bin' })).toThrow(
        format === 'pickle' ? "x.bin: not a PyTorch checkpoint (a pickle, but without torch's magic number)" : `x.bin: not a PyTorch checkpoint (this is ${described})`,
      );
      if (format !== 'npy') expect(() => parseNpy(bytes)).toThrow(`: this is ${described}, not a .npy file`);
    });
  }

  it('an unknown format says what was expected and shows the first bytes', () => {
    const junk = ascii('hello world, not weights');
    expect(sniffFormat(junk)).toBe('unknown');
    expect(() => loadStateDict(junk)).toThrow(`weights: not ${weights}: the format is not recognised (first bytes: 68 65 6c 6c 6f 20 77 6f)`);
    expect(() => loadStateDict(new Uint8Array(0))).toThrow(`weights: this is an empty file, not ${weights}`);
    expect(() => parseSafetensors(junk)).toThrow(/exceeds file size 24 \(and no JSON header follows: not a safetensors file\? first bytes: 68 65 6c 6c 6f 20 77 6f\)/);
    // A truncated safetensors file still gets the safetensors parser's own message.
    const st = writeSafetensors({ w: { shape: [4], data: new Float32Array(4) } });
    expect(() => loadStateDict(st.subarray(0, 30))).toThrow(/^safetensors: header length \d+ exceeds file size 30$/);
  });

  it('a zip that is not a torch checkpoint (an .npz) is named by its entries', () => {
    const npz = makeZip([['arr_0.npy', fixture('f4_2d.npy')]]);
    expect(() => loadStateDict(npz, { name: 'a.npz' })).toThrow("a.npz: not a PyTorch checkpoint: the zip has no '<dir>/data.pkl' entry (entries: arr_0.npy)");
  });
});

// ---------------------------------------------------------------------------------------------
// F17: bounded key lists in errors
// ---------------------------------------------------------------------------------------------

describe('F17: key lists in errors are capped', () => {
  it('a strict load of 10^6 unexpected tensors gives a short message, and the error keeps every name', () => {
    const expected = new Map<string, number[]>([
      ['cls_token', [1, 1, 32]],
      ['pos_embed', [1, 17, 32]],
    ]);
    const got = new Map<string, { shape: number[] }>();
    const one = { shape: [1] };
    for (let i = 0; i < 1_000_000; i++) got.set(`t${i}`, one);
    let err: StateDictMismatchError | undefined;
    try {
      checkStrict(expected, got);
    } catch (e) {
      err = e as StateDictMismatchError;
    }
    expect(err).toBeInstanceOf(StateDictMismatchError);
    expect(err!.message.length).toBeLessThan(2000);
    expect(err!.message).toContain('state dict does not match the model: 2 missing, 1000000 unexpected, 0 shape mismatches');
    expect(err!.message).toContain('  missing keys: cls_token, pos_embed\n');
    expect(err!.message).toContain(`t48, t49, ... and 999,950 more`);
    expect(err!.unexpected).toHaveLength(1_000_000);
  });

  it('missing keys and shape mismatches are capped too, and very long names are cut', () => {
    const expected = new Map<string, number[]>();
    const got = new Map<string, { shape: number[] }>();
    for (let i = 0; i < 5000; i++) {
      expected.set(`m${i}`, [1]);
      expected.set(`s${i}`, [2]);
      got.set(`s${i}`, { shape: [3] });
    }
    got.set('x'.repeat(1_000_000), { shape: [1] });
    let msg = '';
    try {
      checkStrict(expected, got);
    } catch (e) {
      msg = (e as Error).message;
    }
    const lines = msg.split('\n');
    expect(lines[0]).toBe('state dict does not match the model: 5000 missing, 1 unexpected, 5000 shape mismatches');
    expect(lines[1]).toMatch(/^ {2}missing keys: m0, m1, .*, m49, \.\.\. and 4,950 more$/);
    expect(lines[2]).toBe(`  unexpected keys: ${'x'.repeat(200)}... (1,000,000 characters)`);
    expect(lines.filter((l) => l.startsWith('  shape mismatch: '))).toHaveLength(MAX_LISTED_NAMES);
    expect(lines.at(-1)).toBe('  ... and 4,950 more shape mismatches');
    expect(msg.length).toBeLessThan(6000);
  });

  it('other lists of names from a file are capped: checkpoint keys, zip entries, tensor names', () => {
    const keys = Object.fromEntries(Array.from({ length: 100_000 }, (_, i) => [`k${i}`, i]));
    expect(() => selectCheckpointEntry(keys)).toThrow(/\(keys: k0, k1, .*, k19, \.\.\. and 99,980 more\)$/);
    const entries = makeZip(Array.from({ length: 30 }, (_, i): [string, Uint8Array] => [`x/data.pkl${i}`, new Uint8Array(0)]));
    expect(() => loadTorchCheckpoint(entries, { name: 'z.pth' })).toThrow(/entries: x\/data\.pkl0, .*, x\/data\.pkl7, \.\.\. and 22 more\)$/);
    const longName = 'n'.repeat(500_000);
    let msg = '';
    try {
      parseSafetensors(safetensorsOf({ [longName]: { dtype: 'F32', shape: [2], data_offsets: [0, 4] } }, new Uint8Array(8)));
    } catch (e) {
      msg = (e as Error).message;
    }
    expect(msg).toBe(`safetensors: tensor '${'n'.repeat(200)}... (500,000 characters)': shape [2] of F32 needs 8 bytes but data_offsets [0,4) span 4`);
  });
});

// ---------------------------------------------------------------------------------------------
// F20: .npy headers
// ---------------------------------------------------------------------------------------------

describe('F20: deeply nested .npy headers', () => {
  it('100000 open parentheses are refused with a clear NpyError (once a stack overflow)', () => {
    let err: unknown;
    try {
      parseNpy(deepNpy(100_000));
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(NpyError);
    expect((err as Error).message).toMatch(/^npy: malformed header \(brackets nested deeper than 32 levels at character \d+\): "\{'descr': '<f4', .*\.\.\. \(100,05\d characters\)"$/);
  });

  it('nesting up to the limit parses (and is then judged on its content)', () => {
    const nested = (depth: number) => `{'descr': '<f4', 'fortran_order': False, 'shape': ${'['.repeat(depth - 1)}${']'.repeat(depth - 1)}, }`;
    // The dict is one level, so the shape may nest 31 more.
    expect(() => parseNpy(npyV2(nested(32)))).toThrow(/^npy: invalid shape \[\[\[/);
    expect(() => parseNpy(npyV2(nested(33)))).toThrow(/brackets nested deeper than 32 levels/);
    const ok = npyV2("{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }", f32Bytes([1.5, -2]));
    expect(parseNpy(ok)).toEqual({ descr: '<f4', shape: [2], data: new Float32Array([1.5, -2]) });
  });
});
