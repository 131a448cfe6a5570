/**
 * F14 (reliability-2026-12.md): SIGTERM and SIGHUP killed `webdino train` with no checkpoint (only
 * Ctrl-C saved), and an interrupted run exited 0 like a finished one. Now SIGINT, SIGTERM and SIGHUP
 * all stop after the current step and save; the command exits 130, 143 or 129 and prints how to
 * resume, and the resumed run continues from the saved iteration.
 *
 * The built command runs as a user starts it (bin/webdino.js, which runs dist/cli.js as its child
 * and forwards signals); the signal goes to that process once training has printed its first step.
 * Also checked on these runs, F19: no "used in submit while destroyed" validation message on
 * stdout, and none of Dawn's "artificially reduced" start-up warnings on stderr.
 */
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readCheckpointMetaFile } from '../../train/run-folder-node.js';
import { buildIfStale, runCli, startCli, TINY_TRAIN, waitForOutput } from './cli-process.js';

let dir: string;

beforeAll(() => {
  buildIfStale();
  dir = mkdtempSync(join(tmpdir(), 'webdino-signals-'));
});

afterAll(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

const CASES = [
  ['SIGINT', 130],
  ['SIGTERM', 143],
  ['SIGHUP', 129],
] as const;

describe('a stop signal saves a checkpoint and exits 128 + n', () => {
  for (const [signal, code] of CASES) {
    it(`${signal}: exit ${code}, checkpoint saved, how to resume printed`, async () => {
      const out = join(dir, signal);
      const run = startCli(['train', '--out', out, ...TINY_TRAIN, '--max-iterations', '300', '--checkpoint-every', '1000'], { limitMs: 120_000 });
      await waitForOutput(run, /^iter 1\//m);
      run.child.kill(signal);
      const r = await run.done;
      expect(r.timedOut).toBe(false);
      expect(r.code, `${r.stdout}\n${r.stderr}`).toBe(code);
      expect(r.stderr).toContain(`webdino train: ${signal}: stopping after this step and saving a checkpoint`);
      const ckpt = join(out, 'checkpoint.safetensors');
      expect(existsSync(ckpt)).toBe(true);
      const saved = readCheckpointMetaFile(ckpt).iteration;
      expect(saved).toBeGreaterThanOrEqual(1);
      expect(saved).toBeLessThan(300);
      expect(r.stdout).toContain(`stopped by ${signal} at iteration ${saved} of`);
      expect(r.stdout).toContain(`resume with: webdino train --out ${out} --resume`);
      // One step line per saved iteration (plus the evaluation at initialisation: the default data has a held-out split).
      expect(readFileSync(join(out, 'metrics.jsonl'), 'utf8').trim().split('\n').filter((l) => l.includes('"type":"step"'))).toHaveLength(saved);
      // F19 on the same run.
      expect(r.stdout).not.toMatch(/used in submit while destroyed/);
      expect(r.stderr).not.toMatch(/artificially reduced/);

      if (signal === 'SIGTERM') {
        const resumed = await runCli(['train', '--out', out, '--resume', '--max-iterations', '1'], { limitMs: 120_000 });
        expect(resumed.code, resumed.stderr).toBe(0);
        expect(resumed.stdout).toContain(`resuming from ${ckpt} at iteration ${saved}`);
        expect(readCheckpointMetaFile(ckpt).iteration).toBe(saved + 1);
      }
    }, 180_000);
  }
});
