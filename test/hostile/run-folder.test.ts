/**
 * The run folder of `webdino train` (reliability-2026-12.md), with the built command as a user
 * runs it, on an ImageFolder of 16 images (batch 8: 2 iterations per epoch, 1 epoch) and a tiny ViT:
 *
 * - F7: re-running `train` over a finished or interrupted run, without --resume, wiped it
 *   (metrics.jsonl truncated, checkpoint replaced). Now it is refused, the message naming --resume
 *   and --force, and no file changes; `--resume` on a finished run has nothing to do (what `npm start`
 *   twice does) and changes nothing; `--force` starts over.
 * - F8: two runs in one folder both ran and interleaved their metrics. OUT/.lock now lets one in:
 *   a lock held by a live process refuses the run (naming the pid); a lock left by a dead process
 *   is stale and taken over; of two runs started together, exactly one trains.
 * - F16: `--resume` dropped changed options silently (--batch-size, --lr) and resumed on other data
 *   with other iterations per epoch (the lr jumped). Both are refused now, before any file changes.
 * - F20: a checkpoint whose metadata is not valid JSON gave a message that did not name the file.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { cpSync, existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { writeSafetensors } from '../../models/io/safetensors.js';
import { buildIfStale, type CliRun, imageFolder, runCli, TINY_TRAIN } from './cli-process.js';

let dir: string;
let data: string;
let finished: string;
const sleepers: ChildProcess[] = [];

/** `webdino train` on the 16-image folder, 1 epoch of 2 iterations. */
const train = (out: string, ...extra: string[]) => runCli(['train', '--data', data, '--out', out, ...TINY_TRAIN, '--epochs', '1', ...extra], { limitMs: 120_000 });

/** What a run folder holds, to compare before and after a refused command. */
function snapshot(run: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const f of ['checkpoint.safetensors', 'teacher_backbone.safetensors', 'metrics.jsonl']) {
    const p = join(run, f);
    out[f] = existsSync(p) ? `${statSync(p).size}:${readFileSync(p).toString('base64').slice(-64)}` : 'absent';
  }
  return out;
}

function expectOk(r: CliRun): void {
  expect(r.timedOut).toBe(false);
  expect(r.code, `${r.stdout}\n${r.stderr}`).toBe(0);
}

beforeAll(async () => {
  buildIfStale();
  dir = mkdtempSync(join(tmpdir(), 'webdino-runfolder-'));
  data = imageFolder(join(dir, 'images'), ['a', 'b'], 8);
  finished = join(dir, 'finished');
  expectOk(await train(finished));
  expect(readFileSync(join(finished, 'metrics.jsonl'), 'utf8').trim().split('\n')).toHaveLength(2);
}, 180_000);

afterAll(() => {
  for (const s of sleepers) s.kill('SIGKILL');
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('F7: a run folder that holds a run is not reused silently', () => {
  it('train over a finished run without --resume or --force is refused and changes nothing', async () => {
    const before = snapshot(finished);
    const r = await train(finished, '--seed', '7', '--max-iterations', '1');
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/holds a finished run \(2 iterations\)\. --resume --epochs N trains it longer, --force starts over/);
    expect(snapshot(finished)).toEqual(before);
  });

  it('--resume on a finished run has nothing to do (npm start twice) and changes nothing', async () => {
    const before = snapshot(finished);
    const r = await train(finished, '--resume');
    expectOk(r);
    expect(r.stdout).toMatch(/the run is finished \(2 iterations\): nothing to train/);
    expect(snapshot(finished)).toEqual(before);
  });

  it('an interrupted run is refused without a flag, continued with --resume, replaced with --force', async () => {
    const run = join(dir, 'interrupted');
    expectOk(await train(run, '--max-iterations', '1'));
    const before = snapshot(run);
    const refused = await train(run);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/holds an interrupted run \(iteration 1 of 2\)\. --resume continues it, --force starts over/);
    expect(snapshot(run)).toEqual(before);
    const resumed = await train(run, '--resume');
    expectOk(resumed);
    expect(resumed.stdout).toMatch(/done: 2 iterations/);
    const forced = await train(run, '--force', '--max-iterations', '1');
    expectOk(forced);
    expect(readFileSync(join(run, 'metrics.jsonl'), 'utf8').trim().split('\n')).toHaveLength(1);
  }, 180_000);
});

describe('F8: one process trains in a run folder at a time', () => {
  it('a lock held by a live process refuses the run; a dead one is stale and taken over', async () => {
    const run = join(dir, 'locked');
    const sleeper = spawn(process.execPath, ['-e', 'setInterval(() => {}, 1000)'], { stdio: 'ignore' });
    sleepers.push(sleeper);
    cpSync(finished, run, { recursive: true });
    rmSync(join(run, 'checkpoint.safetensors'));
    rmSync(join(run, 'metrics.jsonl'));
    rmSync(join(run, 'teacher_backbone.safetensors'));
    writeFileSync(join(run, '.lock'), JSON.stringify({ pid: sleeper.pid, host: hostname(), started: 'earlier' }));
    const busy = await train(run, '--max-iterations', '1');
    expect(busy.code).toBe(1);
    expect(busy.stderr).toContain(`is in use by process ${sleeper.pid}`);
    expect(existsSync(join(run, 'metrics.jsonl'))).toBe(false);

    sleeper.kill('SIGKILL');
    await new Promise((r) => sleeper.once('exit', r));
    const stale = await train(run, '--max-iterations', '1');
    expectOk(stale);
    expect(stale.stderr).toContain(`removed the lock of process ${sleeper.pid}, which is no longer running`);
    expect(existsSync(join(run, '.lock'))).toBe(false);
  }, 180_000);

  it('of two runs started together in one folder, exactly one trains', async () => {
    const run = join(dir, 'concurrent');
    const [a, b] = await Promise.all([train(run, '--checkpoint-every', '1'), train(run, '--checkpoint-every', '1', '--seed', '8')]);
    expect([a.code, b.code].sort(), `${a.stderr}\n${b.stderr}`).toEqual([0, 1]);
    const loser = a.code === 1 ? a : b;
    expect(loser.stderr).toMatch(/is in use by process \d+|holds a finished run/);
    const lines = readFileSync(join(run, 'metrics.jsonl'), 'utf8').trim().split('\n');
    expect(lines.map((l) => (JSON.parse(l) as { iteration: number }).iteration)).toEqual([0, 1]);
  }, 180_000);
});

describe('F16: --resume runs with the options and data the run started with', () => {
  it('changed options are refused, listed with the values of the run; nothing changes', async () => {
    const run = join(dir, 'resume-options');
    expectOk(await train(run, '--max-iterations', '1'));
    const before = snapshot(run);
    const r = await train(run, '--resume', '--batch-size', '4', '--lr', '0.5', '--embed-dim', '64');
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/these differ: --embed-dim 64 \(the run has 32\), --batch-size 4 \(the run has 8\), --lr 0\.5 \(the run has 0\.004\)/);
    expect(snapshot(run)).toEqual(before);
  }, 120_000);

  it('other data (other iterations per epoch) is refused; nothing changes', async () => {
    const run = join(dir, 'resume-data');
    expectOk(await train(run, '--max-iterations', '1'));
    const bigger = imageFolder(join(dir, 'bigger'), ['a', 'b', 'c'], 8);
    const before = snapshot(run);
    const r = await runCli(['train', '--data', bigger, '--out', run, '--resume'], { limitMs: 120_000 });
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/was trained on 16 images of .*images, 2 iterations per epoch; this data has 24 images, 3 iterations per epoch/);
    expect(snapshot(run)).toEqual(before);
  }, 120_000);
});

describe('F20: a bad checkpoint names its file', () => {
  it('metadata that is not JSON', async () => {
    const run = join(dir, 'bad-json');
    cpSync(finished, run, { recursive: true });
    const ckpt = join(run, 'checkpoint.safetensors');
    writeFileSync(ckpt, writeSafetensors({ w: { shape: [1], data: new Float32Array(1) } }, { webdino: '{"format": "webdino-dino-checkpoint-v1", iteration' }));
    const r = await train(run, '--resume');
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(ckpt);
    expect(r.stderr).toMatch(/metadata is not valid JSON .*\(--force starts over in /);
    // The way out it names works.
    const forced = await train(run, '--force', '--max-iterations', '1');
    expectOk(forced);
    expect(readFileSync(join(run, 'metrics.jsonl'), 'utf8').trim().split('\n')).toHaveLength(1);
  }, 120_000);
});
