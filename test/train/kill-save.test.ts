/**
 * Crash safety of checkpoints: a process killed (SIGKILL: no cleanup runs) while writing a
 * checkpoint with writeFileAtomic leaves the previous checkpoint at the path, complete and loadable.
 *
 * Setup: checkpoint A (a trainer after one step) is written to out/checkpoint.safetensors with
 * writeFileAtomic. A child Node process (test/train/kill-save-child.ts, bundled here with esbuild
 * from the current sources, so it runs the project's writeFileAtomic) then writes checkpoint B (the
 * same trainer one step later) to the same path, in 4 KiB pieces 2 ms apart, and waits once a
 * third of B is written (the temporary file open, partly written); it is SIGKILLed there. Then:
 *   - the kill landed mid-write: the child's temporary file exists, partially written;
 *   - the path still holds exactly A's bytes, it parses, its metadata says iteration 1, and a fresh
 *     trainer restores from it to the same state (its checkpoint bytes equal A's);
 *   - control: the same child left alone replaces the file by B (so the child really writes there).
 *
 * Leftovers: the killed process's temporary file (.checkpoint.safetensors.<pid>.<random>.tmp, in
 * the checkpoint's directory) stays until the next run: runTraining calls removeStaleTempFiles,
 * which deletes temporaries whose writer process is gone and keeps those of live writers.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { build } from 'esbuild';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { removeStaleTempFiles, writeFileAtomic } from '../../models/io/node-files.js';
import { parseSafetensors } from '../../models/io/safetensors.js';
import { checkpointBytes, readCheckpointMeta, restoreCheckpoint } from '../../train/checkpoint.js';
import { DinoTrainer, type TrainConfig } from '../../train/trainer.js';
import { getEngine, randn } from '../helpers.js';

const tmpRoots: string[] = [];
function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'webdino-kill-'));
  tmpRoots.push(d);
  return d;
}
/** Children still running when the file ends (a failed assertion before the kill) are killed. */
const children: ChildProcess[] = [];
afterAll(() => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  for (const d of tmpRoots) rmSync(d, { recursive: true, force: true });
});

let childScript = '';
beforeAll(async () => {
  childScript = join(tempDir(), 'kill-save-child.mjs');
  await build({
    entryPoints: [fileURLToPath(new URL('./kill-save-child.ts', import.meta.url))],
    outfile: childScript,
    bundle: true,
    format: 'esm',
    platform: 'node',
    target: 'node20',
    logLevel: 'warning',
  });
});

const CONFIG: Partial<TrainConfig> = {
  arch: 'custom',
  embedDim: 16,
  depth: 1,
  numHeads: 2,
  patchSize: 4,
  outDim: 256,
  headHidden: 64,
  headBottleneck: 32,
  epochs: 1,
  batchSize: 4,
  warmupEpochs: 0,
  globalSize: 16,
  localSize: 8,
  localCrops: 2,
  seed: 4,
};

/** Starts the child writing `source` into `target`; resolves its progress lines through `onLine`. */
function startChild(
  target: string,
  source: string,
  chunk: number,
  delayMs: number,
  stallAt: number,
  onLine: (line: string, child: ChildProcess) => void,
): { child: ChildProcess; exit: Promise<{ code: number | null; signal: NodeJS.Signals | null }> } {
  const child = spawn(process.execPath, [childScript, target, source, String(chunk), String(delayMs), String(stallAt)], { stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(child);
  let buf = '';
  let err = '';
  child.stdout!.setEncoding('utf8');
  child.stdout!.on('data', (d: string) => {
    buf += d;
    let nl: number;
    while ((nl = buf.indexOf('\n')) >= 0) {
      onLine(buf.slice(0, nl), child);
      buf = buf.slice(nl + 1);
    }
  });
  child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  const exit = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve, reject) => {
    child.on('error', reject);
    child.on('exit', (code, signal) => {
      if (code !== 0 && signal === null) reject(new Error(`child exited with ${code}: ${err}`));
      else resolve({ code, signal });
    });
  });
  return { child, exit };
}

describe('checkpoint writes survive a kill', () => {
  it('a process killed while writing a checkpoint leaves the previous one loadable', async () => {
    const wd = await getEngine();
    const tr = new DinoTrainer(wd, CONFIG);
    const c = tr.config;
    tr.setItersPerEpoch(4);
    const step = (seed: number) =>
      wd.scope(() =>
        tr.step(
          wd.tensor(randn(8 * 3 * c.globalSize ** 2, seed), [8, 3, c.globalSize, c.globalSize]),
          wd.tensor(randn(8 * 3 * c.localSize ** 2, seed + 1), [8, 3, c.localSize, c.localSize]),
        ),
      );
    const dir = tempDir();
    const path = join(dir, 'checkpoint.safetensors');
    try {
      await step(1);
      const bytesA = await checkpointBytes(tr, 4, { loader: { epoch: 0, index: 4 } });
      await writeFileAtomic(path, bytesA);
      await step(3);
      const bytesB = await checkpointBytes(tr, 4, { loader: { epoch: 0, index: 8 } });
      expect(bytesB.length).toBe(bytesA.length);
      expect(bytesB.length).toBeGreaterThan(200_000); // ≥ 50 pieces of 4 KiB: a long write to kill
      const source = join(tempDir(), 'b.bin');
      writeFileSync(source, bytesB);

      // Kill the writer a third of the way in (it waits there, so the kill cannot come too late).
      let reported = 0;
      const killed = startChild(path, source, 4096, 2, Math.ceil(bytesB.length / 3), (line, child) => {
        const m = /^(wrote|stalled) (\d+)$/.exec(line);
        if (!m) return;
        reported = Number(m[2]);
        if (m[1] === 'stalled' && !child.killed) child.kill('SIGKILL');
      });
      const { signal } = await killed.exit;
      expect(signal).toBe('SIGKILL');
      expect(reported).toBeLessThan(bytesB.length);

      // The kill landed mid-write: the child's temporary file is there, partially written.
      const temps = readdirSync(dir).filter((f) => f.startsWith(`.checkpoint.safetensors.${killed.child.pid}.`) && f.endsWith('.tmp'));
      expect(temps).toHaveLength(1);
      const tmpSize = statSync(join(dir, temps[0])).size;
      expect(tmpSize).toBeGreaterThanOrEqual(reported);
      expect(tmpSize).toBeLessThan(bytesB.length);

      // The next run removes that leftover (its writer is dead) but not the file of a live writer (our parent).
      writeFileSync(join(dir, `.checkpoint.safetensors.${process.ppid}.abc123.tmp`), 'a live writer');
      expect(removeStaleTempFiles(path)).toEqual([join(dir, temps[0])]);
      expect(readdirSync(dir).filter((f) => f.endsWith('.tmp'))).toEqual([`.checkpoint.safetensors.${process.ppid}.abc123.tmp`]);
      rmSync(join(dir, `.checkpoint.safetensors.${process.ppid}.abc123.tmp`));

      // The checkpoint at the path is A, whole and loadable.
      const now = new Uint8Array(readFileSync(path));
      expect(Buffer.compare(now, bytesA), 'the file still holds checkpoint A').toBe(0);
      expect(parseSafetensors(now).size).toBeGreaterThan(0);
      const meta = readCheckpointMeta(now);
      expect(meta.iteration).toBe(1);
      expect(meta.extra).toEqual({ loader: { epoch: 0, index: 4 } });
      const restored = new DinoTrainer(wd, meta.config);
      try {
        restoreCheckpoint(restored, now);
        expect(restored.iteration).toBe(1);
        const again = await checkpointBytes(restored, 4, meta.extra);
        expect(Buffer.compare(again, bytesA), 'restored state re-serialises to A').toBe(0);
      } finally {
        restored.dispose();
      }

      // Control: left alone, the same child replaces the file by B (and leaves no temporary).
      const done = startChild(path, source, 65536, 0, 0, () => undefined);
      expect((await done.exit).code).toBe(0);
      expect(Buffer.compare(new Uint8Array(readFileSync(path)), bytesB), 'the child writes checkpoint B').toBe(0);
      expect(readdirSync(dir).filter((f) => f.startsWith(`.checkpoint.safetensors.${done.child.pid}.`))).toEqual([]);
      // The killed process's temporary was swept above; nothing else is left.
      expect(readdirSync(dir).filter((f) => f.endsWith('.tmp'))).toEqual([]);
    } finally {
      tr.dispose();
    }
  });
});
