import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterEach, beforeEach, describe, expect, it } from 'vitest';

import {
  loadTorchCheckpointFile,
  readBytes,
  readBytesSync,
  writeFileAtomic,
  writeFileAtomicSync,
} from '../../models/io/node-files.js';
import { UnsafePickleError } from '../../models/io/pickle.js';
import { TorchTensor } from '../../models/io/torch.js';
import { fixturePath } from './fixtures.js';

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'webdino-io-'));
});
afterEach(() => {
  rmSync(dir, { recursive: true, force: true });
});

describe('writeFileAtomic', () => {
  it('writes bytes, text and streamed chunks, leaving no temp file', async () => {
    const p = join(dir, 'out.bin');
    await writeFileAtomic(p, Uint8Array.from([1, 2, 3]));
    expect([...readFileSync(p)]).toEqual([1, 2, 3]);
    await writeFileAtomic(p, 'hello');
    expect(readFileSync(p, 'utf8')).toBe('hello');
    await writeFileAtomic(p, async (write) => {
      await write('a');
      await write(Uint8Array.from([0x62]));
      await write('c');
    });
    expect(readFileSync(p, 'utf8')).toBe('abc');
    expect(readdirSync(dir)).toEqual(['out.bin']);
  });

  it('leaves no file at all when the writer throws', async () => {
    const p = join(dir, 'never.bin');
    await expect(
      writeFileAtomic(p, async (write) => {
        await write('partial content');
        throw new Error('writer failed');
      }),
    ).rejects.toThrow('writer failed');
    expect(existsSync(p)).toBe(false);
    expect(readdirSync(dir)).toEqual([]);
  });

  it('keeps the previous content when the writer throws', async () => {
    const p = join(dir, 'keep.txt');
    writeFileSync(p, 'old');
    await expect(
      writeFileAtomic(p, async (write) => {
        await write('new, incomplete');
        throw new Error('boom');
      }),
    ).rejects.toThrow('boom');
    expect(readFileSync(p, 'utf8')).toBe('old');
    expect(readdirSync(dir)).toEqual(['keep.txt']);
  });

  it('fails cleanly when the directory does not exist', async () => {
    await expect(writeFileAtomic(join(dir, 'missing', 'x.bin'), 'x')).rejects.toThrow(/ENOENT/);
    expect(readdirSync(dir)).toEqual([]);
  });
});

describe('writeFileAtomicSync', () => {
  it('writes, and leaves no file when the writer throws', () => {
    const p = join(dir, 'sync.bin');
    writeFileAtomicSync(p, (write) => {
      write('x');
      write(Uint8Array.from([0x79]));
    });
    expect(readFileSync(p, 'utf8')).toBe('xy');
    const q = join(dir, 'never.bin');
    expect(() =>
      writeFileAtomicSync(q, (write) => {
        write('partial');
        throw new Error('sync writer failed');
      }),
    ).toThrow('sync writer failed');
    expect(existsSync(q)).toBe(false);
    expect(readdirSync(dir)).toEqual(['sync.bin']);
  });
});

describe('reading files', () => {
  it('readBytes / readBytesSync return plain Uint8Arrays', async () => {
    const p = join(dir, 'r.bin');
    writeFileSync(p, Uint8Array.from([9, 8, 7]));
    for (const b of [await readBytes(p), readBytesSync(p)]) {
      expect(Object.getPrototypeOf(b)).toBe(Uint8Array.prototype);
      expect([...b]).toEqual([9, 8, 7]);
    }
  });

  it('loadTorchCheckpointFile inflates compressed entries and names the file in errors', async () => {
    const sd = (await loadTorchCheckpointFile(fixturePath('state_dict_deflated.pth'))) as Record<string, unknown>;
    expect(sd['scalar']).toBeInstanceOf(TorchTensor);
    expect(Array.from((sd['scalar'] as TorchTensor).data)).toEqual([3.25]);
    await expect(loadTorchCheckpointFile(fixturePath('hostile_os_system.pth'))).rejects.toThrow(
      new UnsafePickleError(
        "refusing to load global 'os.system' from hostile_os_system.pth:hostile/data.pkl: only tensor-rebuild globals are allowed",
      ),
    );
  });
});
