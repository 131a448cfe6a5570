/**
 * F1 (reliability-2026-12.md): every command exits after an early error, also when it has opened an
 * ImageFolder (whose decode worker threads kept the process alive: the pool was never closed).
 * Each case runs the built command as a user does and waits for it to exit by itself; the harness
 * kills it after 60 s, which fails the case ("did not exit"). Bad weights, a k larger than the
 * data (a usage error found after opening it), an output folder that is a file, a truncated
 * checkpoint on --resume, and `report` on a run with a corrupt checkpoint; and missing weights for
 * every other command that loads them.
 */
import { copyFileSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tinyBackbone } from '../eval/cli.js';
import { buildIfStale, type CliRun, imageFolder, runCli } from './cli-process.js';

let dir: string;
let folder: string;
let weights: string;

beforeAll(async () => {
  buildIfStale();
  dir = mkdtempSync(join(tmpdir(), 'webdino-exit-'));
  folder = imageFolder(join(dir, 'images'));
  weights = (await tinyBackbone(dir)).path;
});

afterAll(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/** Runs the command; it must exit by itself with `code` and print `message`. */
async function exitsWith(args: string[], code: number, message: RegExp): Promise<CliRun> {
  const r = await runCli(args, { limitMs: 60_000 });
  expect(r.timedOut, `did not exit within 60 s after: ${r.stderr}`).toBe(false);
  expect(r.code, r.stderr).toBe(code);
  expect(r.stderr).toMatch(message);
  return r;
}

describe('an early error with an ImageFolder open still ends the process', () => {
  it('eval knn: missing weights; eval knn: every k above the data; eval linear: missing weights', async () => {
    await exitsWith(['eval', 'knn', '--weights', join(dir, 'nonexistent'), '--train', folder, '--val', folder, '--k', '2'], 1, /no such file/);
    await exitsWith(['eval', 'knn', '--weights', weights, '--train', folder, '--val', folder, '--k', '100'], 2, /every k exceeds the 8 training images/);
    await exitsWith(['eval', 'linear', '--weights', join(dir, 'nonexistent'), '--train', folder, '--val', folder], 1, /no such file/);
  });

  it('train: --out is a file; --resume with a truncated checkpoint', async () => {
    const file = join(dir, 'afile');
    writeFileSync(file, 'x\n');
    await exitsWith(['train', '--data', folder, '--out', file, '--max-iterations', '1'], 1, /afile is a file, not a folder/);
    const run = join(dir, 'truncated');
    mkdirSync(run);
    writeFileSync(join(run, 'checkpoint.safetensors'), new Uint8Array(1000).fill(7));
    await exitsWith(['train', '--data', folder, '--out', run, '--resume'], 1, /checkpoint .*truncated[/\\]checkpoint\.safetensors/);
  });

  it('the other commands that load weights: missing weights', async () => {
    const missing = join(dir, 'nonexistent');
    const image = join(folder, 'a', '0.png');
    await exitsWith(['embed', '--weights', missing, '--input', join(folder, 'a'), '--out', join(dir, 'f.npy')], 1, /no such file/);
    await exitsWith(['attention', '--weights', missing, '--image', image, '--out', join(dir, 'att')], 1, /no such file/);
    await exitsWith(['visualize', '--weights', missing, '--input', join(folder, 'a'), '--out', join(dir, 'vis')], 1, /no such file/);
    await exitsWith(['eval', 'segment', '--weights', missing], 1, /no such file/);
  });

  it('report: a run folder whose checkpoint is corrupt', async () => {
    const run = join(dir, 'report-corrupt');
    mkdirSync(run);
    writeFileSync(join(run, 'metrics.jsonl'), '{"type":"step","iteration":0,"loss":1}\n');
    copyFileSync(weights, join(run, 'teacher_backbone.safetensors'));
    writeFileSync(join(run, 'checkpoint.safetensors'), new Uint8Array(1000).fill(7));
    await exitsWith(['report', '--run', run, '--data', folder], 1, /report-corrupt[/\\]checkpoint\.safetensors/);
  });
});
