/**
 * `webdino curate` through bin/cli.ts's `main` (./harness.ts): the help lists it and its declared
 * defaults; bad values and combinations of options are usage errors (exit 2, the message and the
 * usage); bad input data fails with the library's message (exit 1); a small run on planted blobs
 * writes its selection, and a --shard job its part.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { blobs, saveNpy } from '../eval/curate-data.js';
import { webdino } from './harness.js';

let dir: string;
let a: string;
let b: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'webdino-curate-cli-'));
  const { x } = blobs([60, 40, 30, 20, 10, 10], 8, 4);
  a = saveNpy(dir, 'a.npy', x.subarray(0, 100 * 8), 8);
  b = saveNpy(dir, 'b.npy', x.subarray(100 * 8), 8);
});
afterAll(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('webdino curate (command line)', () => {
  it('is listed by webdino --help, and its --help prints the declared defaults', async () => {
    const top = await webdino('--help');
    expect(top.code).toBe(0);
    expect(top.out).toMatch(/^ {2}curate +Curate an embedded image pool/m);
    const h = await webdino('curate', '--help');
    expect(h.code).toBe(0);
    expect(h.out).toMatch(/--dedup-k <k> +Neighbours per row for --dedup \(default: 64\)/);
    expect(h.out).toMatch(/--iters <n> +Lloyd iterations per k-means \(default: 50\)/);
    expect(h.out).toMatch(/--gpu-memory <MiB> .*\(default: 1024\)/);
    expect(h.out).toMatch(/--embeddings <files> .*\(required\)/);
  });

  it('refuses bad values and combinations with the usage (exit 2)', async () => {
    const base = ['curate', '--embeddings', a, '--out', join(dir, 'never')];
    const cases: [string[], RegExp][] = [
      [['curate', '--out', join(dir, 'never')], /--embeddings is required/],
      [[...base, '--dedup', '1.5'], /--dedup must be a number from -1 to 1, got '1\.5'/],
      [[...base, '--retrieve', '3'], /--retrieve \/ --cluster-retrieve need --queries/],
      [[...base, '--queries', b], /--queries needs --retrieve N or --cluster-retrieve M/],
      [[...base, '--queries', b, '--retrieve', '2', '--cluster-retrieve', '2'], /exclusive: pick one retrieval mode/],
      // Repeated level values are kept (a per-level list), so the lengths are compared as given.
      [[...base, '--levels', '4,4', '--resample', '3'], /--resample has 1 values for 2 levels/],
      [[...base, '--levels', '4', '--sample', '2,2'], /--sample has 2 values for 1 levels/],
      [[...base, '--levels', '4,x'], /--levels: 'x' is not an integer/],
      [[...base, '--dedup-against', b], /--dedup-against needs --dedup T/],
      [[...base, '--shard', '3/3'], /--shard must be i\/n with 0 ≤ i < n/],
      [[...base, '--shard', '0/2'], /--shard and --centroids go together/],
      [[...base, '--shard', '0/2', '--centroids', b, '--target', '5'], /runs only an assignment job: --target do not apply/],
      [[...base, '--init', 'forgy'], /--init must be one of kmeans\+\+, random/],
    ];
    for (const [args, message] of cases) {
      const r = await webdino(...args);
      expect(r.code, args.join(' ')).toBe(2);
      expect(r.err, args.join(' ')).toMatch(message);
      expect(r.err).toMatch(/Usage: webdino curate \[options\]/);
    }
  });

  it('fails with the message of bad input data (exit 1)', async () => {
    const nan = new Float32Array(20 * 8).fill(0.5);
    nan[7 * 8 + 2] = NaN;
    const p = saveNpy(dir, 'nan.npy', nan, 8);
    const r = await webdino('curate', '--embeddings', `${a},${p}`, '--out', join(dir, 'o-nan'));
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/^webdino curate: .*nan\.npy row 7 \(pool row 107\) has a non-finite value \(NaN\) in column 2/m);
  });

  it('curates two shards end to end, and runs a --shard assignment job', async () => {
    const out = join(dir, 'o');
    const r = await webdino('curate', '--embeddings', `${a},${b}`, '--out', out, '--dedup', '0.999', '--levels', '6,2', '--resample', '2,1', '--iters', '4', '--target', '30', '--seed', '3');
    expect(r.code, r.err).toBe(0);
    expect(r.out).toMatch(/pool: 170 rows of width 8 from 2 files/);
    expect(r.out).toMatch(/done in [\d.]+ s: 30 rows selected/);
    const rows = readFileSync(join(out, 'selected.txt'), 'utf8').trim().split('\n').map(Number);
    expect(rows).toHaveLength(30);
    expect(rows.every((x) => Number.isInteger(x) && x >= 0 && x < 170)).toBe(true);
    const summary = JSON.parse(readFileSync(join(out, 'summary.json'), 'utf8'));
    expect(summary.levels.map((l: { k: number; steps: number }) => [l.k, l.steps])).toEqual([
      [6, 2],
      [2, 1],
    ]);

    const job = await webdino('curate', '--embeddings', `${a},${b}`, '--out', out, '--shard', '1/2', '--centroids', join(out, 'levels', 'level-1-centroids.npy'));
    expect(job.code, job.err).toBe(0);
    expect(job.out).toMatch(/shard 1\/2: rows \[85, 170\) assigned/);
    expect(JSON.parse(readFileSync(join(out, 'shards', 'part-1-of-2.json'), 'utf8')).counts.reduce((s: number, c: number) => s + c, 0)).toBe(85);
  });
});
