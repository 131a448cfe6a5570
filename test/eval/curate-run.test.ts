/**
 * The whole `curate` pipeline (eval/curate/run-node.ts) on synthetic embeddings with planted
 * structure, written as .npy shards:
 * - dedup removes exactly the planted near-duplicates (within the pool and against an "eval"
 *   set), the balanced sample has the target size and avoids removed rows, the level files and
 *   summary have the documented shapes and counts, the report has its histogram and thumbnails;
 * - outputs are byte-identical for two chunk sizes;
 * - a run SIGKILLed in the middle of a resampling step's Lloyd iterations, then re-run, resumes
 *   from its checkpoints and writes byte-identical outputs to an uninterrupted run;
 * - bad inputs and options fail with messages that say what and where.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Rng } from '../../index.js';
import { encodePng } from '../../models/io/image.js';
import { parseNpy, writeNpy } from '../../models/io/npy.js';
import { checkCurateOptions, curate, CURATE_DEFAULTS, type CurateOptions, CurateUsageError } from '../../eval/curate/run-node.js';
import { ChunkedRows } from '../../eval/curate/chunks.js';
import { assignPass } from '../../eval/curate/kmeans.js';
import { assignShard, mergeShards } from '../../eval/curate/shard-node.js';
import { NpyShards } from '../../eval/curate/shards-node.js';
import { bundleChild } from '../child-bundle.js';
import { getEngine } from '../helpers.js';
import { blobs, cosine, nearCopy, saveNpy } from './curate-data.js';

const roots: string[] = [];
const children: ChildProcess[] = [];
function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'webdino-curate-'));
  roots.push(d);
  return d;
}
afterAll(() => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  for (const d of roots) rmSync(d, { recursive: true, force: true });
});

const dim = 32;

/**
 * A pool of 12 blobs (1200 rows) followed by 40 near copies of pool rows (within-pool
 * duplicates), in two shards; an eval set with near copies of 15 other pool rows plus 30
 * unrelated rows; one tiny PNG per row and a paths file.
 */
function plantedPool(dir: string) {
  // Blob members stay ≥ ~18° apart (σ 4 around centres of norm ~57): none is a near-duplicate
  // of another at cosine 0.99 (checked in the first test), while the copies are at ~1 − 1e-7.
  const { x } = blobs([300, 200, 150, 120, 100, 90, 80, 60, 40, 30, 20, 10], dim, 7, 10, 4);
  const nBase = x.length / dim;
  const rng = new Rng(11);
  const dupOf = Array.from({ length: 40 }, (_, i) => (i * 29) % nBase);
  const pool = new Float32Array((nBase + dupOf.length) * dim);
  pool.set(x);
  dupOf.forEach((src, i) => pool.set(nearCopy(x, dim, src, 0.02, rng), (nBase + i) * dim));
  const evalOf = Array.from({ length: 15 }, (_, i) => 7 + i * 53).filter((i) => !dupOf.includes(i));
  const evalRows = new Float32Array((evalOf.length + 30) * dim);
  evalOf.forEach((src, i) => evalRows.set(nearCopy(x, dim, src, 0.02, rng), i * dim));
  for (let q = evalOf.length * dim; q < evalRows.length; q++) evalRows[q] = rng.normal() * 10;
  const split = 700 * dim;
  const shards = [saveNpy(dir, 'pool-a.npy', pool.subarray(0, split), dim), saveNpy(dir, 'pool-b.npy', pool.subarray(split), dim)];
  const evalPath = saveNpy(dir, 'eval.npy', evalRows, dim);
  const imgDir = join(dir, 'img');
  mkdirSync(imgDir);
  const rows = pool.length / dim;
  const paths: string[] = [];
  for (let i = 0; i < rows; i++) {
    const p = join(imgDir, `${i}.png`);
    writeFileSync(p, encodePng(4, 4, new Uint8Array(48).fill(i % 256), 3));
    paths.push(p);
  }
  const pathsFile = join(dir, 'paths.txt');
  writeFileSync(pathsFile, `${paths.join('\n')}\n`);
  return { x, shards, evalPath, pathsFile, rows, nBase, dupRows: dupOf.map((_, i) => nBase + i), evalOf };
}

/** Options with the library's defaults for what `o` leaves out. */
function opts(o: Pick<CurateOptions, 'embeddings' | 'out'> & Partial<CurateOptions>): CurateOptions {
  return { ...CURATE_DEFAULTS, dedupAgainst: [], queries: [], ...o };
}

function options(out: string, data: ReturnType<typeof plantedPool>, extra: Partial<CurateOptions> = {}): CurateOptions {
  return opts({
    embeddings: data.shards,
    paths: data.pathsFile,
    out,
    dedup: 0.99,
    dedupK: 8,
    dedupAgainst: [data.evalPath],
    levels: [24, 6],
    resample: [3, 2],
    sample: [10, 2],
    iters: 8,
    target: 400,
    seed: 5,
    ...extra,
  });
}

function outputs(dir: string): Record<string, string> {
  const names = ['selected.txt', 'levels/level-1.npy', 'levels/level-1-centroids.npy', 'levels/level-2.npy', 'levels/level-2-centroids.npy'];
  return Object.fromEntries(names.map((n) => [n, readFileSync(join(dir, n)).toString('base64')]));
}

let data: ReturnType<typeof plantedPool>;
let outA = '';
beforeAll(async () => {
  data = plantedPool(tempDir());
  outA = join(tempDir(), 'a');
  const e = await getEngine();
  await curate(e, options(outA, data, { chunkRows: 256 }), () => undefined);
});

describe('curate pipeline', () => {
  it('removes the planted duplicates, samples the target and writes the documented files', async () => {
    let maxCos = -1;
    for (let i = 0; i < data.nBase; i++) for (let j = 0; j < i; j++) maxCos = Math.max(maxCos, cosine(data.x, i, data.x, j, dim));
    expect(maxCos, 'the planted pool rows are distinct at the threshold').toBeLessThan(0.985);
    const summary = JSON.parse(readFileSync(join(outA, 'summary.json'), 'utf8'));
    expect(summary.pool).toEqual({ rows: data.rows, dim, files: data.shards });
    expect(summary.dedup.removedAgainst).toBe(data.evalOf.length);
    expect(summary.dedup.removedWithin).toBe(data.dupRows.length);
    expect(summary.dedup.kept).toBe(data.nBase - data.evalOf.length);
    expect(summary.levels.map((l: { k: number; points: number }) => [l.k, l.points])).toEqual([
      [24, data.nBase - data.evalOf.length],
      [6, 24],
    ]);
    expect(summary.balanced.chosen).toBe(400);
    expect(summary.selected).toBe(400);

    const lines = readFileSync(join(outA, 'selected.txt'), 'utf8').trim().split('\n');
    expect(lines.length).toBe(400);
    const rows = lines.map((l) => Number(l.split('\t')[0]));
    expect(rows).toEqual([...rows].sort((a, b) => a - b));
    expect(new Set(rows).size).toBe(400);
    const removed = new Set([...data.dupRows, ...data.evalOf]);
    expect(rows.filter((r) => removed.has(r))).toEqual([]);
    expect(lines[0].split('\t')[1]).toBe(join(data.pathsFile, '..', 'img', `${rows[0]}.png`));

    const l1 = parseNpy(new Uint8Array(readFileSync(join(outA, 'levels/level-1.npy'))));
    expect(l1.descr).toBe('<i4');
    expect(l1.shape).toEqual([data.rows]);
    l1.data.forEach((c, i) => expect(c < 0, `row ${i}`).toBe(removed.has(i)));
    expect(parseNpy(new Uint8Array(readFileSync(join(outA, 'levels/level-1-centroids.npy')))).shape).toEqual([24, dim]);
    expect(parseNpy(new Uint8Array(readFileSync(join(outA, 'levels/level-2.npy')))).shape).toEqual([24]);

    const html = readFileSync(join(outA, 'report.html'), 'utf8');
    expect(html).toContain('<svg');
    expect(html).toContain('after balancing');
    expect(html).toContain('data:image/png;base64,');
  });

  it('gives byte-identical outputs for another chunk size', async () => {
    const e = await getEngine();
    const out = join(tempDir(), 'b');
    await curate(e, options(out, data, { chunkRows: 1024 }), () => undefined);
    expect(outputs(out)).toEqual(outputs(outA));
  });

  it('retrieval modes add the queries’ neighbours or cluster members', async () => {
    const e = await getEngine();
    const dir = tempDir();
    const pool = parseNpy(new Uint8Array(readFileSync(data.shards[0]))).data;
    const q = new Float32Array(3 * dim);
    [10, 20, 30].forEach((r, t) => q.set(pool.subarray(r * dim, (r + 1) * dim), t * dim));
    const qPath = saveNpy(dir, 'q.npy', q, dim);
    const base = { embeddings: data.shards, out: join(dir, 'r'), queries: [qPath], iters: 3 };
    const s1 = await curate(e, opts({ ...base, retrieve: 1 }), () => undefined);
    expect(s1.selected).toBe(3);
    expect(readFileSync(join(dir, 'r', 'selected.txt'), 'utf8')).toBe('10\n20\n30\n');
    const s2 = await curate(e, opts({ ...base, out: join(dir, 'c'), clusterRetrieve: 5, levels: [12] }), () => undefined);
    expect(s2.retrieval!.mode).toBe('cluster');
    expect(s2.selected).toBe(5 * s2.retrieval!.clustersHit!);
  });
});

describe('fanned-out assignment', () => {
  it('three --shard jobs merge into the one-process assignment and sums', async () => {
    const e = await getEngine();
    const out = join(tempDir(), 'sharded');
    const centroids = join(outA, 'levels', 'level-1-centroids.npy');
    for (let i = 0; i < 3; i++) await assignShard(e, { embeddings: data.shards, centroids, shard: { i, n: 3 }, out, chunkRows: 256 });
    const merged = mergeShards(out, 3);
    const pool = new NpyShards(data.shards, 'pool');
    const C = parseNpy(new Uint8Array(readFileSync(centroids))).data;
    const chunks = new ChunkedRows(e, pool);
    const one = await assignPass(chunks, C, 24, { accumulate: true });
    chunks.dispose();
    pool.close();
    expect(Array.from(merged.assign)).toEqual(Array.from(one.assign));
    expect(Array.from(merged.counts)).toEqual(Array.from(one.counts!));
    for (let q = 0; q < one.sums!.length; q++) expect(Math.abs(merged.sums[q] - one.sums![q])).toBeLessThanOrEqual(1e-9 * (1 + Math.abs(one.sums![q])));
    expect(Math.abs(merged.objective - one.objective) / one.objective).toBeLessThan(1e-12);
    expect(() => mergeShards(out, 4)).toThrow(/shard 0\/4 has not finished/);
  });
});

describe('resume after a kill', () => {
  let childScript = '';
  beforeAll(async () => {
    childScript = join(tempDir(), 'curate-kill-child.mjs');
    await bundleChild(new URL('./curate-kill-child.ts', import.meta.url), childScript);
  });

  it('a run killed mid-level and re-run writes the same outputs as an uninterrupted run', async () => {
    const out = join(tempDir(), 'killed');
    const opts = options(out, data, { chunkRows: 256, checkpointSeconds: 0 });
    // Stall once step 1 of level 1 has done two Lloyd updates (its checkpoint says iteration 2).
    const child = spawn(process.execPath, [childScript, JSON.stringify(opts), 'level-1-step-1-kmeans: pass 2/'], {
      cwd: fileURLToPath(new URL('../..', import.meta.url)),
      stdio: ['ignore', 'pipe', 'pipe'],
    });
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
    expect(existsSync(join(out, 'checkpoint', 'level-1-step-0.json'))).toBe(true);
    expect(JSON.parse(readFileSync(join(out, 'checkpoint', 'level-1-step-1-kmeans.json'), 'utf8')).iter).toBe(2);
    expect(existsSync(join(out, 'selected.txt'))).toBe(false);

    const e = await getEngine();
    const log: string[] = [];
    await curate(e, opts, (l) => log.push(l));
    expect(log.join('\n')).toContain('dedup: done (checkpoint)');
    expect(log.join('\n')).toContain('level-1-step-0: done (checkpoint)');
    expect(log.join('\n')).toContain('level-1-step-1-kmeans: resuming at iteration 2');
    expect(outputs(out)).toEqual(outputs(outA));
    for (const d of ['', 'checkpoint', 'levels']) expect(readdirSync(join(out, d)).filter((n) => n.endsWith('.tmp')), `temporaries in ${d}`).toEqual([]);
  });
});

describe('bad inputs', () => {
  it('are refused with messages that name the file, row or option', async () => {
    const e = await getEngine();
    const dir = tempDir();
    const good = saveNpy(dir, 'good.npy', new Float32Array(40 * 8).fill(1), 8);
    const run = (v: Pick<CurateOptions, 'embeddings'> & Partial<CurateOptions>) => curate(e, opts({ out: join(dir, 'o'), ...v }), () => undefined);
    const empty = join(dir, 'empty.npy');
    writeFileSync(empty, '');
    await expect(run({ embeddings: [empty] })).rejects.toThrow(/empty\.npy is empty \(0 bytes\)/);
    const zero = join(dir, 'zero.npy');
    writeFileSync(zero, writeNpy({ shape: [0, 8], data: new Float32Array(0) }));
    await expect(run({ embeddings: [zero] })).rejects.toThrow(/zero\.npy is empty \(shape \(0, 8\)\)/);
    const flat = join(dir, 'flat.npy');
    writeFileSync(flat, writeNpy({ shape: [8], data: new Float32Array(8) }));
    await expect(run({ embeddings: [flat] })).rejects.toThrow(/must be 2-D \[N, D\]/);
    const wide = saveNpy(dir, 'wide.npy', new Float32Array(10 * 9), 9);
    await expect(run({ embeddings: [good, wide] })).rejects.toThrow(/wide\.npy has rows of width 9, but .*good\.npy has 8/);
    await expect(run({ embeddings: [good], queries: [wide], retrieve: 2 })).rejects.toThrow(/--queries rows have width 9 but the pool's have 8/);
    const nan = new Float32Array(40 * 8).fill(0.5);
    nan[17 * 8 + 3] = NaN;
    const nanPath = saveNpy(dir, 'nan.npy', nan, 8);
    await expect(run({ embeddings: [good, nanPath] })).rejects.toThrow(/nan\.npy row 17 \(pool row 57\) has a non-finite value \(NaN\) in column 3/);
    await expect(run({ embeddings: [good], target: 41 })).rejects.toThrow(/--target 41 is larger than the pool \(40 rows\)/);
    // All 40 rows are identical: dedup keeps one, so a target of 2 cannot be met.
    await expect(run({ embeddings: [good], dedup: 0.9, target: 2 })).rejects.toThrow(/--target 2 is larger than the 1 rows left after deduplication/);
    await expect(run({ embeddings: [good], levels: [50] })).rejects.toThrow(/level 1 asks for 50 clusters but has only 40 pool rows/);
    const paths = join(dir, 'paths.txt');
    writeFileSync(paths, 'a\nb\n');
    await expect(run({ embeddings: [good], paths })).rejects.toThrow(/paths\.txt has 2 lines but the embeddings have 40 rows/);
    await expect(run({ embeddings: [join(dir, 'missing.npy')] })).rejects.toThrow(/cannot open .*missing\.npy/);
  });

  it('refuses combinations of options that cannot run', () => {
    const base = opts({ embeddings: ['pool.npy'], out: 'o' });
    const check = (o: Partial<CurateOptions>) => () => checkCurateOptions({ ...base, ...o });
    expect(check({})).not.toThrow();
    expect(check({ dedup: 1.5 })).toThrow(/--dedup must be a cosine similarity/);
    expect(check({ retrieve: 3 })).toThrow(CurateUsageError);
    expect(check({ retrieve: 3 })).toThrow(/need --queries/);
    expect(check({ queries: ['q.npy'] })).toThrow(/--queries needs --retrieve N or --cluster-retrieve M/);
    expect(check({ queries: ['q.npy'], retrieve: 3, clusterRetrieve: 2 })).toThrow(/exclusive/);
    expect(check({ levels: [4, 2], resample: [3] })).toThrow(/--resample has 1 values for 2 levels/);
    expect(check({ levels: [4, 2], sample: [3, 3, 3] })).toThrow(/--sample has 3 values for 2 levels/);
    expect(check({ sample: [3] })).toThrow(/--sample needs --levels/);
    expect(check({ dedupAgainst: ['e.npy'] })).toThrow(/needs --dedup/);
    expect(check({ shard: { i: 0, n: 2 } })).toThrow(/--shard and --centroids go together/);
    expect(check({ centroids: 'c.npy' })).toThrow(/--shard and --centroids go together/);
    expect(check({ shard: { i: 0, n: 2 }, centroids: 'c.npy', target: 5 })).toThrow(/runs only an assignment job: --target/);
    expect(check({ shard: { i: 0, n: 2 }, centroids: 'c.npy' })).not.toThrow();
  });

  it('refuses to resume from checkpoints of other options', async () => {
    const e = await getEngine();
    const dir = tempDir();
    const { x } = blobs([50, 50], 8, 3);
    const p = saveNpy(dir, 'p.npy', x, 8);
    const v = opts({ embeddings: [p], out: join(dir, 'o'), levels: [4], iters: 2 });
    await curate(e, v, () => undefined);
    await expect(curate(e, { ...v, seed: 1 }, () => undefined)).rejects.toThrow(/holds clustering checkpoints of a run with other inputs or options/);
    // Selection options are free to change.
    const s = await curate(e, { ...v, target: 10 }, () => undefined);
    expect(s.selected).toBe(10);
  });
});
