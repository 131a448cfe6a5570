import { existsSync, rmSync } from 'node:fs';

import { describe, expect, it } from 'vitest';

import { nodeInflateRaw } from '../../models/io/node-files.js';
import { PickleError, PY_ATTRIBUTES, unpickle, UnsafePickleError } from '../../models/io/pickle.js';
import {
  flattenStateDict,
  loadTorchCheckpoint,
  loadTorchCheckpointAsync,
  TORCH_GLOBALS,
  TorchTensor,
} from '../../models/io/torch.js';
import { ZipArchive, ZipError } from '../../models/io/zip.js';
import { ascii, concat, expectExact, fixture, fixtureJson, makeZip, P, rng } from './fixtures.js';

interface ExpectedTensor {
  dtype: string;
  shape: number[];
  stride: number[];
  offset: number;
  values: (number | string)[];
}

function expectTensor(t: unknown, exp: ExpectedTensor, name: string): void {
  expect(t, name).toBeInstanceOf(TorchTensor);
  const tt = t as TorchTensor;
  expect(tt.dtype, name).toBe(exp.dtype);
  expect(tt.shape, name).toEqual(exp.shape);
  expect(tt.stride, name).toEqual(exp.stride);
  expect(tt.offset, name).toBe(exp.offset);
  expectExact(tt.data, exp.values, name);
}

function expectTensors(obj: unknown, expected: Record<string, ExpectedTensor>): void {
  const flat = flattenStateDict(obj);
  expect(new Set(flat.keys())).toEqual(new Set(Object.keys(expected)));
  for (const [k, exp] of Object.entries(expected)) expectTensor(flat.get(k), exp, k);
}

const stateDict = fixtureJson('state_dict.expected.json');

describe('loadTorchCheckpoint (zip format, torch.save of torch 1.13)', () => {
  it('reads every dtype, non-contiguous, strided, offset and expanded views exactly', () => {
    const sd = loadTorchCheckpoint(fixture('state_dict.pth'), { name: 'state_dict.pth' }) as Record<string, unknown>;
    expect(Object.keys(sd)).toEqual(stateDict.keys);
    for (const [k, exp] of Object.entries<ExpectedTensor>(stateDict.tensors)) expectTensor(sd[k], exp, k);
    expect((sd['param'] as TorchTensor).requiresGrad).toBe(true);
    expect((sd['0.weight'] as TorchTensor).requiresGrad).toBe(false);
    // `_metadata` is an attribute of the OrderedDict, not a key.
    expect((sd as { [PY_ATTRIBUTES]?: unknown })[PY_ATTRIBUTES]).toEqual({ _metadata: stateDict.metadata });
  });

  it('reads pickle protocol 4 (FRAME, MEMOIZE, STACK_GLOBAL)', () => {
    const obj = loadTorchCheckpoint(fixture('state_dict_proto4.pth'));
    expectTensors(obj, fixtureJson('state_dict_proto4.expected.json').tensors);
  });

  it('reads a big-endian checkpoint (<dir>/byteorder = big)', () => {
    expectTensors(loadTorchCheckpoint(fixture('big_endian.pth')), fixtureJson('big_endian.expected.json').tensors);
  });

  it('reads deflate-compressed zips with an injected inflater or DecompressionStream', async () => {
    const bytes = fixture('state_dict_deflated.pth');
    expect(() => loadTorchCheckpoint(bytes, { name: 'd.pth' })).toThrow(
      new ZipError("zip: entry 'archive/data.pkl' is deflate-compressed; pass an inflateRaw function or use the async loader"),
    );
    const sync = loadTorchCheckpoint(bytes, { inflateRaw: nodeInflateRaw }) as Record<string, unknown>;
    const viaStream = (await loadTorchCheckpointAsync(bytes)) as Record<string, unknown>;
    for (const obj of [sync, viaStream]) {
      expect(Object.keys(obj)).toEqual(stateDict.keys);
      for (const [k, exp] of Object.entries<ExpectedTensor>(stateDict.tensors)) expectTensor(obj[k], exp, k);
    }
  });

  it('reads the legacy (pre-1.6) format', () => {
    const obj = loadTorchCheckpoint(fixture('legacy_state_dict.pth')) as Record<string, unknown>;
    const exp = fixtureJson('legacy_state_dict.expected.json');
    expect(obj['epoch']).toBe(exp.epoch);
    expectTensors(obj, exp.tensors);
  });

  it('reads a DINO training checkpoint: teacher/student, optimizer, epoch, argparse.Namespace, set, bytes', () => {
    const exp = fixtureJson('dino_checkpoint.expected.json');
    const ckpt = loadTorchCheckpoint(fixture('dino_checkpoint.pth')) as Record<string, any>;
    expectTensors(ckpt['teacher'], exp.teacher);
    expectTensors(ckpt['student'], exp.student);
    expectTensor(ckpt['dino_loss'].center, exp.center, 'center');
    expect(ckpt['epoch']).toBe(3);
    const { huge, ...args } = ckpt['args'];
    expect(args).toEqual(exp.args);
    expect(huge).toBe(BigInt(exp.args_huge));
    expect(Object.getPrototypeOf(ckpt['args'])).toBe(Object.prototype);
    expect(ckpt['optimizer'].param_groups).toEqual(exp.optimizer_param_groups);
    for (const [i, state] of Object.entries<Record<string, ExpectedTensor>>(exp.optimizer_state)) {
      for (const [k, t] of Object.entries(state)) expectTensor(ckpt['optimizer'].state[i][k], t, `state.${i}.${k}`);
    }
    expect(ckpt['names']).toEqual(new Set(exp.names));
    expect(ckpt['blob']).toEqual(Uint8Array.from(exp.blob));
  });

  it('flattenStateDict joins nested keys and applies a prefix', () => {
    const ckpt = loadTorchCheckpoint(fixture('dino_checkpoint.pth')) as Record<string, unknown>;
    const flat = flattenStateDict(ckpt['teacher'], 'teacher.');
    expect([...flat.keys()][0]).toBe('teacher.module.backbone.cls_token');
    const all = flattenStateDict(ckpt);
    expect(all.has('optimizer.state.0.exp_avg')).toBe(true);
    expect(all.has('dino_loss.center')).toBe(true);
    const cyclic: Record<string, unknown> = { t: ckpt['dino_loss'] };
    cyclic['self'] = cyclic;
    expect([...flattenStateDict(cyclic).keys()]).toEqual(['t.center']);
    // Shared (non-cyclic) containers appear under every path; deep nesting does not overflow.
    const shared = { a: ckpt['dino_loss'], b: ckpt['dino_loss'] };
    expect([...flattenStateDict(shared).keys()]).toEqual(['a.center', 'b.center']);
    let deep: unknown = { w: (ckpt['dino_loss'] as Record<string, unknown>)['center'] };
    for (let i = 0; i < 100_000; i++) deep = [deep];
    expect(flattenStateDict(deep).size).toBe(1);
  });
});

describe('restricted unpickler: refuses code, runs nothing', () => {
  const hostile = fixtureJson('hostile.expected.json');

  it("refuses the os.system fixture with UnsafePickleError, and the command never runs", () => {
    rmSync(hostile.marker, { force: true });
    let error: unknown;
    try {
      loadTorchCheckpoint(fixture('hostile_os_system.pth'), { name: 'hostile_os_system.pth' });
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(UnsafePickleError);
    expect(String(error)).toBe(
      "UnsafePickleError: refusing to load global 'os.system' from hostile_os_system.pth:hostile/data.pkl: only tensor-rebuild globals are allowed",
    );
    expect(existsSync(hostile.marker)).toBe(false);
  });

  const opts = { globals: TORCH_GLOBALS, source: 'test.pkl', allowedDescription: 'only tensor-rebuild globals are allowed' };
  const call = (g: Uint8Array) => concat(P.proto(2), g, P.str('touch /tmp/x'), P.tuple1, P.reduce, P.stop);

  for (const [module, name, shown] of [
    ['os', 'system', 'os.system'],
    ['posix', 'system', 'posix.system'],
    ['nt', 'system', 'nt.system'],
    ['builtins', 'eval', 'builtins.eval'],
    ['__builtin__', 'eval', 'builtins.eval'],
    ['builtins', 'exec', 'builtins.exec'],
    ['builtins', 'getattr', 'builtins.getattr'],
    ['builtins', '__import__', 'builtins.__import__'],
    ['subprocess', 'Popen', 'subprocess.Popen'],
    ['torch.storage', '_load_from_bytes', 'torch.storage._load_from_bytes'],
    ['torch', 'load', 'torch.load'],
    ['pickle', 'loads', 'pickle.loads'],
    ['collections', 'OrderedDict.fromkeys', 'collections.OrderedDict.fromkeys'],
    ['torch._utils', '_rebuild_tensor_v2.__globals__', 'torch._utils._rebuild_tensor_v2.__globals__'],
  ] as const) {
    it(`refuses GLOBAL ${shown}`, () => {
      expect(() => unpickle(call(P.global(module, name)), opts)).toThrow(
        new UnsafePickleError(`refusing to load global '${shown}' from test.pkl: only tensor-rebuild globals are allowed`),
      );
    });
  }

  it('refuses STACK_GLOBAL, INST and extension codes too', () => {
    const stackGlobal = concat(P.proto(4), P.str('builtins'), P.str('exec'), P.stackGlobal, P.str('1'), P.tuple1, P.reduce, P.stop);
    expect(() => unpickle(stackGlobal, opts)).toThrow(/refusing to load global 'builtins.exec'/);
    const inst = concat(P.proto(0), P.mark, P.str('echo'), P.inst('os', 'system'), P.stop);
    expect(() => unpickle(inst, opts)).toThrow(/refusing to load global 'os.system'/);
    const ext = concat(P.proto(2), [0x82, 1], P.stop);
    expect(() => unpickle(ext, opts)).toThrow(UnsafePickleError);
  });

  it('refuses before reading any tensor data (a hostile global after a tensor)', () => {
    // data.pkl: {'w': _rebuild_tensor_v2(<storage '0'>, 0, (2,), (1,), False, OrderedDict()), 'x': os.system('...')}
    // and no archive/data/0 entry: if loading got as far as tensor data it would fail differently.
    const tensor = concat(
      P.global('torch._utils', '_rebuild_tensor_v2'),
      P.mark,
      P.mark, P.str('storage'), P.global('torch', 'FloatStorage'), P.str('0'), P.str('cpu'), P.int(2), P.tuple,
      P.binpersid,
      P.int(0), P.int(2), P.tuple1, P.int(1), P.tuple1, P.newfalse,
      P.global('collections', 'OrderedDict'), P.emptyTuple, P.reduce,
      P.tuple,
      P.reduce,
    );
    const pkl = concat(P.proto(2), P.emptyDict, P.str('w'), tensor, P.setitem, P.str('x'), call(P.global('os', 'system')).subarray(2));
    const zip = makeZip([['archive/data.pkl', pkl], ['archive/version', ascii('3\n')]]);
    expect(() => loadTorchCheckpoint(zip, { name: 'h.pth' })).toThrow(
      "refusing to load global 'os.system' from h.pth:archive/data.pkl",
    );
    // The same file without the hostile part only fails on the missing storage.
    const benign = makeZip([['archive/data.pkl', concat(P.proto(2), P.emptyDict, P.str('w'), tensor, P.setitem, P.stop)]]);
    expect(() => loadTorchCheckpoint(benign, { name: 'h.pth' })).toThrow("h.pth: storage '0' is missing (no entry 'archive/data/0')");
  });

  it('treats REDUCE / BUILD on non-globals and malformed streams as PickleError', () => {
    expect(() => unpickle(concat(P.proto(2), P.str('os'), P.emptyTuple, P.reduce, P.stop), opts)).toThrow(
      'pickle: REDUCE on a string, not a global at byte 10 of test.pkl',
    );
    expect(() => unpickle(concat(P.proto(2), P.global('torch', 'FloatStorage'), P.emptyTuple, P.reduce, P.stop), opts)).toThrow(
      "global 'torch.FloatStorage' cannot be used with REDUCE",
    );
    expect(() => unpickle(concat(P.proto(2), P.str('abc')), opts)).toThrow('pickle: truncated data: no STOP opcode');
    expect(() => unpickle(concat(P.proto(2), [0x58, 0xff, 0xff, 0xff, 0x7f]), opts)).toThrow(/truncated data: needs 2147483647 more bytes/);
    expect(() => unpickle(concat(P.proto(2), [0xfe], P.stop), opts)).toThrow('pickle: unsupported opcode 0xfe');
    expect(() => unpickle(concat(P.proto(2), [0x68, 7], P.stop), opts)).toThrow('memo key 7 not defined');
  });

  it('keeps hostile dict keys as plain data (no prototype pollution)', () => {
    const pkl = concat(P.proto(2), P.emptyDict, P.str('__proto__'), P.emptyDict, P.str('polluted'), P.int(1), P.setitem, P.setitem, P.stop);
    const v = unpickle(pkl, opts) as Record<string, unknown>;
    expect(Object.getPrototypeOf(v)).toBe(Object.prototype);
    expect(Object.keys(v)).toEqual(['__proto__']);
    expect(({} as Record<string, unknown>)['polluted']).toBeUndefined();
  });
});

describe('malformed checkpoints fail cleanly', () => {
  it('detects CRC corruption and truncation', () => {
    const good = fixture('state_dict.pth');
    const zip = new ZipArchive(good);
    const entry = zip.entries.get('archive/data/0')!;
    const bad = good.slice();
    bad[entry.dataOffset] ^= 0xff;
    expect(() => loadTorchCheckpoint(bad)).toThrow("zip: entry 'archive/data/0': CRC-32 mismatch (corrupt data)");
    expect(() => loadTorchCheckpoint(good.subarray(0, good.length - 10))).toThrow(ZipError);
    for (let n = 0; n < good.length; n += 97) {
      expect(() => loadTorchCheckpoint(good.subarray(0, n))).toThrow(/zip:|pickle:|not a PyTorch checkpoint/);
    }
  });

  it('rejects tensors that read past their storage', () => {
    const tensor = (numel: number, size: number) =>
      concat(
        P.proto(2),
        P.global('torch._utils', '_rebuild_tensor_v2'),
        P.mark,
        P.mark, P.str('storage'), P.global('torch', 'FloatStorage'), P.str('0'), P.str('cpu'), P.int(numel), P.tuple,
        P.binpersid,
        P.int(0), P.int(size), P.tuple1, P.int(1), P.tuple1, P.newfalse, P.emptyDict,
        P.tuple,
        P.reduce,
        P.stop,
      );
    const data = new Uint8Array(new Float32Array([1, 2, 3, 4]).buffer);
    const ok = loadTorchCheckpoint(makeZip([['a/data.pkl', tensor(4, 4)], ['a/data/0', data]])) as TorchTensor;
    expect(Array.from(ok.data)).toEqual([1, 2, 3, 4]);
    expect(() => loadTorchCheckpoint(makeZip([['a/data.pkl', tensor(4, 5)], ['a/data/0', data]]))).toThrow(
      "tensor of shape [5], stride [1], offset 0 reads element 4 of storage '0', which has 4",
    );
    expect(() => loadTorchCheckpoint(makeZip([['a/data.pkl', tensor(5, 5)], ['a/data/0', data]]), { name: 'c.pth' })).toThrow(
      "c.pth: truncated checkpoint: storage 'a/data/0' has 16 bytes but its 5 float32 elements need 20",
    );
  });

  it('names what is wrong with non-checkpoints', () => {
    expect(() => loadTorchCheckpoint(ascii('hello world'), { name: 'x.pth' })).toThrow(
      'x.pth: not a PyTorch checkpoint (neither a zip nor a pickle; first bytes: 68 65 6c 6c 6f 20 77 6f)',
    );
    expect(() => loadTorchCheckpoint(makeZip([['foo.txt', ascii('hi')]]), { name: 'x.zip' })).toThrow(
      "x.zip: not a PyTorch checkpoint: the zip has no '<dir>/data.pkl' entry (entries: foo.txt)",
    );
    expect(() => loadTorchCheckpoint(concat(P.proto(2), P.int(5), P.stop), { name: 'p.pkl' })).toThrow(
      "p.pkl: not a PyTorch checkpoint (a pickle, but without torch's magic number)",
    );
  });

  it('never throws anything but PickleError/ZipError on mutated pickles', () => {
    const good = fixture('state_dict.pth');
    const pklEntry = new ZipArchive(good).entries.get('archive/data.pkl')!;
    const rand = rng(3);
    for (let i = 0; i < 400; i++) {
      const bad = good.slice();
      const flips = 1 + Math.floor(rand() * 3);
      for (let k = 0; k < flips; k++) {
        bad[pklEntry.dataOffset + Math.floor(rand() * pklEntry.size)] = Math.floor(rand() * 256);
      }
      try {
        loadTorchCheckpoint(bad, { verifyCrc: false });
      } catch (e) {
        if (!(e instanceof PickleError || e instanceof ZipError)) throw e;
      }
    }
  });
});
