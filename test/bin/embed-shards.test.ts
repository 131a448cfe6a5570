/**
 * `webdino embed` for curation pools, in-process through bin/cli.ts's `main` (./harness.ts), on
 * the tiny random ViT of test/eval/cli.ts and a two-class image tree with one undecodable file:
 * - --normalize gives unit rows equal to the plain features over their norms; --paths-out lists
 *   the readable images in row order (the bad one is skipped, counted, and has no row or line);
 * - --shard-size writes shards + paths files + a manifest whose rows equal the whole run's;
 *   re-running resumes past finished shards, a manifest of other options is refused;
 * - --shard i/n jobs write the same shard files as one job, and `webdino curate` takes the jobs'
 *   manifests (rows and paths in pool order), refusing an unfinished one;
 * - a run stopped by SIGINT, and a child process SIGKILLed in the middle of a shard, continue
 *   with the shard they were on and end with byte-identical files.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Rng } from '../../index.js';
import { encodePng } from '../../models/io/image.js';
import { parseNpy } from '../../models/io/npy.js';
import type { EmbedManifest } from '../../eval/embed-shards-node.js';
import { bundleChild } from '../child-bundle.js';
import { expectClose } from '../helpers.js';
import { tinyBackbone } from '../eval/cli.js';
import { main } from '../../bin/cli.js';
import { testIo, webdino } from './harness.js';

let dir: string;
let weights: string;
let pool: string;
/** The image files in listing order (the broken one included) and the readable ones. */
let files: string[];
let readable: string[];
const children: ChildProcess[] = [];

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'webdino-embed-shards-'));
  ({ path: weights } = await tinyBackbone(dir));
  pool = join(dir, 'pool');
  const rng = new Rng(3);
  const write = (cls: string, name: string, w: number, h: number) => {
    mkdirSync(join(pool, cls), { recursive: true });
    const px = new Uint8Array(w * h * 3).map(() => rng.int(256));
    writeFileSync(join(pool, cls, name), encodePng(w, h, px, 3));
  };
  ['a0', 'a1', 'a2', 'a3'].forEach((n, i) => write('alpha', `${n}.png`, 32 + i, 40 - i));
  ['b0', 'b1', 'b2'].forEach((n, i) => write('beta', `${n}.png`, 36, 33 + i));
  writeFileSync(join(pool, 'alpha', 'a9-broken.png'), 'not a PNG at all');
  files = ['alpha/a0', 'alpha/a1', 'alpha/a2', 'alpha/a3', 'alpha/a9-broken', 'beta/b0', 'beta/b1', 'beta/b2'].map((f) => join(pool, `${f}.png`));
  readable = files.filter((f) => !f.includes('broken'));
});

afterAll(() => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  if (dir) rmSync(dir, { recursive: true, force: true });
});

const npy = (path: string) => parseNpy(new Uint8Array(readFileSync(path)));
const lines = (path: string) => readFileSync(path, 'utf8').trim().split('\n');
const manifest = (path: string) => JSON.parse(readFileSync(path, 'utf8')) as EmbedManifest;
const COMMON = ['--input', '', '--recursive', '--image-size', '32', '--batch-size', '2', '--skip-bad'];
/** `webdino embed` on the pool with the common options plus `args`. */
const embed = (...args: string[]) => webdino('embed', '--weights', weights, ...COMMON.map((a) => a || pool), ...args);
/** The bytes of shard files, by name. */
const shardBytes = (stem: string, names: string[]) => Object.fromEntries(names.map((n) => [n, readFileSync(`${stem}-${n}`).toString('base64')]));
const SHARD_FILES = ['00000.npy', '00001.npy', '00002.npy', '00000.txt', '00001.txt', '00002.txt'];

let whole: Float32Array;

describe('webdino embed for curation', () => {
  it('--normalize writes unit rows, --paths-out the readable images in row order', async () => {
    const plain = join(dir, 'plain.npy');
    const r = await embed('--out', plain);
    expect(r.code, r.err).toBe(0);
    expect(r.err).toMatch(/skipped 1 image that could not be decoded/);
    const out = join(dir, 'normed.npy');
    const paths = join(dir, 'paths.txt');
    const rn = await embed('--out', out, '--normalize', '--paths-out', paths);
    expect(rn.code, rn.err).toBe(0);
    const p = npy(plain);
    const n = npy(out);
    expect(n.shape).toEqual([7, 32]);
    const want = new Float32Array(p.data);
    for (let i = 0; i < 7; i++) {
      const row = p.data.subarray(i * 32, (i + 1) * 32);
      const norm = Math.hypot(...row);
      expect(norm, 'plain features are not unit rows already').not.toBeCloseTo(1, 2);
      for (let q = 0; q < 32; q++) want[i * 32 + q] = row[q] / norm;
      expect(Math.hypot(...n.data.subarray(i * 32, (i + 1) * 32))).toBeCloseTo(1, 5);
    }
    expectClose(n.data, want, 1e-5, 1e-6, 'normalised rows');
    expect(lines(paths)).toEqual(readable);
    whole = n.data;

    const flat = await webdino('embed', '--weights', weights, '--input', pool, '--out', join(dir, 'x.npy'));
    expect(flat.code).toBe(1);
    expect(flat.err).toMatch(/no \.jpg, \.jpeg or \.png files in this folder \(it has sub-folders: --recursive/);
  });

  it('--shard-size writes shards, paths files and a manifest; a re-run resumes, other options are refused', async () => {
    const stem = join(dir, 'sh', 'pool');
    const pathsOut = join(dir, 'sh-paths.txt');
    const r = await embed('--out', `${stem}.npy`, '--normalize', '--shard-size', '3', '--paths-out', pathsOut);
    expect(r.code, r.err).toBe(0);
    expect(r.out).toMatch(/features: 7 rows of width 32 in 3 shards/);
    const m = manifest(`${stem}-manifest.json`);
    expect(m.complete).toBe(true);
    expect(m.totalShards).toBe(3);
    expect(m.done.map((d) => [d.index, d.first, d.end, d.rows])).toEqual([
      [0, 0, 3, 3],
      [1, 3, 6, 2],
      [2, 6, 8, 2],
    ]);
    expect(m.done[1].skipped).toEqual([files[4]]);
    const rows = [0, 1, 2].map((s) => npy(`${stem}-0000${s}.npy`));
    expect(rows.map((a) => a.shape)).toEqual([
      [3, 32],
      [2, 32],
      [2, 32],
    ]);
    expectClose(Float32Array.from(rows.flatMap((a) => Array.from(a.data))), whole, 1e-5, 1e-6, 'shards vs one file');
    expect([0, 1, 2].flatMap((s) => lines(`${stem}-0000${s}.txt`))).toEqual(readable);
    expect(lines(pathsOut)).toEqual(readable);

    const before = shardBytes(stem, SHARD_FILES);
    const again = await embed('--out', `${stem}.npy`, '--normalize', '--shard-size', '3');
    expect(again.code, again.err).toBe(0);
    expect(again.out).toMatch(/resumed: 3 shards already done/);
    expect(again.out).toMatch(/0 shards written/);
    expect(shardBytes(stem, SHARD_FILES)).toEqual(before);

    const other = await embed('--out', `${stem}.npy`, '--normalize', '--shard-size', '3', '--image-size', '24');
    expect(other.code).toBe(1);
    expect(other.err).toMatch(/pool-manifest\.json records another embedding run \(crop: 32 → 24\)/);
  });

  it('--shard i/n jobs write the same shards, and curate takes their manifests in order', async () => {
    const stem = join(dir, 'fan', 'pool');
    const m0 = `${stem}-manifest-0-of-2.json`;
    const m1 = `${stem}-manifest-1-of-2.json`;
    const j0 = await embed('--out', `${stem}.npy`, '--normalize', '--shard-size', '3', '--shard', '0/2');
    expect(j0.code, j0.err).toBe(0);
    expect(manifest(m0).done.map((d) => d.index)).toEqual([0, 1]);
    expect(existsSync(`${stem}-00002.npy`)).toBe(false);
    const early = await webdino('curate', '--embeddings', `${m0},${m1}`, '--out', join(dir, 'cur-early'));
    expect(early.code).toBe(1);
    expect(early.err).toMatch(/pool-manifest-1-of-2\.json: not a readable embedding manifest/);

    const j1 = await embed('--out', `${stem}.npy`, '--normalize', '--shard-size', '3', '--shard', '1/2');
    expect(j1.code, j1.err).toBe(0);
    expect(manifest(m1).done.map((d) => d.index)).toEqual([2]);
    expect(shardBytes(stem, SHARD_FILES)).toEqual(shardBytes(join(dir, 'sh', 'pool'), SHARD_FILES));

    const out = join(dir, 'cur');
    const c = await webdino('curate', '--embeddings', `${m0},${m1}`, '--out', out, '--levels', '2', '--iters', '2', '--target', '4');
    expect(c.code, c.err).toBe(0);
    expect(c.out).toMatch(/pool: 7 rows of width 32 from 3 files/);
    const sel = lines(join(out, 'selected.txt')).map((l) => l.split('\t'));
    expect(sel).toHaveLength(4);
    for (const [row, path] of sel) expect(path).toBe(readable[Number(row)]);

    const bad = await webdino('embed', '--weights', weights, '--input', pool, '--recursive', '--out', join(dir, 'y.npy'), '--shard', '0/2');
    expect(bad.code).toBe(2);
    expect(bad.err).toMatch(/--shard i\/n needs --shard-size/);
    const attn = await embed('--out', join(dir, 'z.npy'), '--shard-size', '3', '--attn', join(dir, 'za.npy'));
    expect(attn.code).toBe(2);
    expect(attn.err).toMatch(/--attn is not written in shards/);
  });

  it('a run stopped by SIGINT continues with the shard it was on', async () => {
    const stem = join(dir, 'stop', 'pool');
    const args = ['embed', '--weights', weights, ...COMMON.map((a) => a || pool), '--out', `${stem}.npy`, '--normalize', '--shard-size', '3'];
    const t = testIo();
    let clock = 0;
    let stopped = false;
    const code = await main(args, {
      ...t.io,
      // Every progress update prints a line (10 s apart on this clock): stop once 4 images are done.
      now: () => (clock += 20_000),
      out: (l) => {
        t.out.push(l);
        const m = /^embed (\d+)\/8 images/.exec(l);
        if (m && Number(m[1]) >= 4 && !stopped) {
          stopped = true;
          t.stop('SIGINT');
        }
      },
    });
    expect(code, t.err.join('\n')).toBe(130);
    expect(t.out.join('\n')).toMatch(/stopped by SIGINT: the finished shards are recorded/);
    const m = manifest(`${stem}-manifest.json`);
    expect(m.complete).toBe(false);
    expect(m.done.map((d) => d.index)).toEqual([0]);
    const early = await webdino('curate', '--embeddings', `${stem}-manifest.json`, '--out', join(dir, 'cur-stop'));
    expect(early.code).toBe(1);
    expect(early.err).toMatch(/the embedding job is not finished \(1 of 3 shards done\)/);

    const r = await webdino(...args);
    expect(r.code, r.err).toBe(0);
    expect(r.out).toMatch(/resumed: 1 shard already done/);
    expect(r.out).toMatch(/2 shards written/);
    expect(shardBytes(stem, SHARD_FILES)).toEqual(shardBytes(join(dir, 'sh', 'pool'), SHARD_FILES));
  });

  it('a child killed in the middle of a shard, then re-run, ends with the files of an uninterrupted run', async () => {
    const script = join(dir, 'embed-kill-child.mjs');
    await bundleChild(new URL('./embed-kill-child.ts', import.meta.url), script);
    const stem = join(dir, 'killed', 'pool');
    const opts = { input: pool, out: `${stem}.npy`, weights, shardSize: 3, batchSize: 2, crop: 32, normalize: true, stallAt: 4 };
    const child = spawn(process.execPath, [script, JSON.stringify(opts)], { cwd: fileURLToPath(new URL('../..', import.meta.url)), stdio: ['ignore', 'pipe', 'pipe'] });
    children.push(child);
    let stdout = '';
    let stderr = '';
    child.stderr!.on('data', (b) => (stderr += b));
    await new Promise<void>((resolve, reject) => {
      child.stdout!.on('data', (b) => {
        stdout += b;
        if (stdout.includes('stalled\n')) resolve();
      });
      child.on('exit', (code) => reject(new Error(`child exited (${code}) before stalling:\n${stdout}\n${stderr}`)));
    });
    child.kill('SIGKILL');
    await new Promise((r) => child.once('exit', r));
    // Killed after shard 0 was recorded, while shard 1 was being computed.
    expect(stdout).toMatch(/^shard 0 done\nstalled\n$/);
    expect(manifest(`${stem}-manifest.json`).done.map((d) => d.index)).toEqual([0]);
    expect(existsSync(`${stem}-00001.npy`)).toBe(false);

    const r = await embed('--out', `${stem}.npy`, '--normalize', '--shard-size', '3');
    expect(r.code, r.err).toBe(0);
    expect(r.out).toMatch(/resumed: 1 shard already done/);
    expect(shardBytes(stem, SHARD_FILES)).toEqual(shardBytes(join(dir, 'sh', 'pool'), SHARD_FILES));
    expect(manifest(`${stem}-manifest.json`).complete).toBe(true);
  });
});
