/**
 * F6 (reliability-2026-12.md): the atomic writer (models/io/node-files.ts writeFileAtomic) renamed
 * its temporary file over whatever the destination was: a device node (/dev/full became a regular
 * file), a FIFO, a socket; and it replaced a symbolic link instead of writing through it. It now
 * writes regular files only: other existing targets are refused with what they are, before any file
 * is created; a symlink is written through (the link stays, its target is replaced); a dangling
 * one is refused.
 *
 * Device nodes cannot be made without root and must never be a test target (no /dev/null, no
 * /dev/full): the device case goes through the injectable file-system check. The FIFO, the socket,
 * the folder and the links are real, in a temporary folder; the FIFO is also tried through the
 * built `webdino embed --out`.
 */
import { execFileSync } from 'node:child_process';
import { lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { atomicWriteTarget, type TargetFs, writeFileAtomic, writeFileAtomicSync } from '../../models/io/node-files.js';
import { tinyBackbone } from '../eval/cli.js';
import { buildIfStale, imageFolder, runCli } from './cli-process.js';

let dir: string;
let server: Server | null = null;

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'webdino-atomic-'));
});

afterAll(async () => {
  await new Promise<void>((r) => (server ? server.close(() => r()) : r()));
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/** A file-system view in which `path` is a character device (as /dev/full is); the rest is real. */
function fakeCharDevice(path: string): TargetFs {
  const no = () => false;
  return {
    lstatSync: (p) =>
      p === path
        ? { isFile: no, isDirectory: no, isSymbolicLink: no, isCharacterDevice: () => true, isBlockDevice: no, isFIFO: no, isSocket: no }
        : lstatSync(p),
    realpathSync: (p) => p,
  };
}

/** Names in `dir` that look like temporary files of an atomic write. */
const leftovers = (d: string) => readdirSync(d).filter((n) => n.endsWith('.tmp'));

describe('writeFileAtomic writes regular files only', () => {
  it('refuses a character device (injected check), and creates nothing', async () => {
    const sub = join(dir, 'dev');
    mkdirSync(sub);
    const full = join(sub, 'full');
    await expect(writeFileAtomic(full, 'x', { fs: fakeCharDevice(full) })).rejects.toThrow(/refusing to write .*full: it is a character device; only regular files are written/);
    expect(() => writeFileAtomicSync(full, 'x', { fs: fakeCharDevice(full) })).toThrow(/character device/);
    expect(readdirSync(sub)).toEqual([]);
  });

  it('refuses a FIFO, a socket and a folder; they stay what they were', async () => {
    const fifo = join(dir, 'pipe.npy');
    execFileSync('mkfifo', [fifo]);
    const sock = join(dir, 'sock.npy');
    server = createServer();
    await new Promise<void>((r) => server!.listen(sock, r));
    const folder = join(dir, 'folder.npy');
    mkdirSync(folder);
    for (const [path, what, check] of [
      [fifo, /a FIFO \(named pipe\)/, () => lstatSync(fifo).isFIFO()],
      [sock, /a socket/, () => lstatSync(sock).isSocket()],
      [folder, /a folder/, () => lstatSync(folder).isDirectory()],
    ] as const) {
      await expect(writeFileAtomic(path, 'data')).rejects.toThrow(what);
      expect(() => writeFileAtomicSync(path, 'data')).toThrow(what);
      expect(check(), path).toBe(true);
    }
    expect(leftovers(dir)).toEqual([]);
  });

  it('writes through a symlink (the link stays); refuses a dangling one', async () => {
    const target = join(dir, 'real.bin');
    writeFileSync(target, 'old');
    const link = join(dir, 'link.bin');
    symlinkSync(target, link);
    await writeFileAtomic(link, 'new');
    expect(lstatSync(link).isSymbolicLink()).toBe(true);
    expect(readlinkSync(link)).toBe(target);
    expect(readFileSync(target, 'utf8')).toBe('new');
    writeFileAtomicSync(link, 'newer');
    expect(lstatSync(link).isSymbolicLink()).toBe(true);
    expect(readFileSync(target, 'utf8')).toBe('newer');
    expect(atomicWriteTarget(link)).toBe(target);
    const dangling = join(dir, 'dangling.bin');
    symlinkSync(join(dir, 'nowhere', 'x'), dangling);
    await expect(writeFileAtomic(dangling, 'x')).rejects.toThrow(/symbolic link to a file that does not exist/);
    expect(lstatSync(dangling).isSymbolicLink()).toBe(true);
  });

  it('a regular file is still replaced atomically', async () => {
    const p = join(dir, 'plain.bin');
    writeFileSync(p, 'old');
    await writeFileAtomic(p, 'new');
    expect(readFileSync(p, 'utf8')).toBe('new');
    expect(leftovers(dir)).toEqual([]);
  });
});

describe('webdino embed --out a FIFO (the built command)', () => {
  it('exits 1 naming what the target is; the FIFO is still a FIFO', async () => {
    buildIfStale();
    const weights = (await tinyBackbone(dir)).path;
    const images = imageFolder(join(dir, 'images'), ['a'], 2);
    const fifo = join(dir, 'features.npy');
    execFileSync('mkfifo', [fifo]);
    const r = await runCli(['embed', '--weights', weights, '--input', join(images, 'a'), '--out', fifo, '--image-size', '32'], { limitMs: 60_000 });
    expect(r.timedOut).toBe(false);
    expect(r.code, r.stdout + r.stderr).toBe(1);
    expect(r.stderr).toMatch(/features\.npy: it is a FIFO \(named pipe\); only regular files are written/);
    expect(lstatSync(fifo).isFIFO()).toBe(true);
  });
});
