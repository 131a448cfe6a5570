/**
 * For the hostile run tests: the built `webdino` command as a user runs it (`node bin/webdino.js`,
 * which starts dist/cli.js), small fixtures (an ImageFolder of PNGs, a tiny training config), and
 * `main` in-process through test/bin/harness.ts.
 *
 * `buildIfStale` builds dist/ only when a source file is newer than dist/.stamp (scripts/setup.sh's
 * rule), so several test files do not each pay for a build.
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { encodePng } from '../../models/io/image.js';

export const ROOT = resolve(import.meta.dirname, '../..');
/**
 * The command under test: this tree's bin/webdino.js, or WEBDINO_TEST_CLI (another build of it, e.g.
 * an older commit's, to show that these tests fail there).
 */
const CLI = process.env.WEBDINO_TEST_CLI ?? join(ROOT, 'bin/webdino.js');

/** A tiny ViT and DINO head: a training step takes well under a second on lavapipe. */
export const TINY_TRAIN = ['--arch', 'custom', '--embed-dim', '32', '--depth', '2', '--heads', '2', '--patch-size', '8', '--out-dim', '64', '--batch-size', '8', '--local-crops', '2', '--epoch-length', '0'];

function newestSource(dir: string): number {
  let t = 0;
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) t = Math.max(t, newestSource(p));
    else if (/\.(ts|js|mjs)$/.test(e.name)) t = Math.max(t, statSync(p).mtimeMs);
  }
  return t;
}

/** Runs scripts/build.mjs unless dist/ is newer than every source. */
export function buildIfStale(): void {
  if (process.env.WEBDINO_TEST_CLI) return;
  const stamp = join(ROOT, 'dist/.stamp');
  const sources = ['engine', 'kernels', 'models', 'train', 'eval', 'bench', 'bin'].map((d) => newestSource(join(ROOT, d)));
  if (existsSync(stamp) && existsSync(join(ROOT, 'dist/cli.js')) && statSync(stamp).mtimeMs > Math.max(...sources, statSync(join(ROOT, 'index.ts')).mtimeMs)) return;
  const b = spawnSync(process.execPath, ['scripts/build.mjs'], { cwd: ROOT, encoding: 'utf8' });
  if (b.status !== 0) throw new Error(`build failed:\n${b.stdout}\n${b.stderr}`);
}

export interface CliRun {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  /** The harness killed it after `limitMs`: it did not exit by itself. */
  timedOut: boolean;
}

/**
 * Starts `node bin/webdino.js args...`. `done` resolves when it exits, or after `limitMs` (the
 * harness's limit: then it is killed and `timedOut` is set).
 */
export function startCli(args: readonly string[], opts: { cwd?: string; env?: Record<string, string>; limitMs?: number } = {}): { child: ChildProcess; output: () => { stdout: string; stderr: string }; done: Promise<CliRun> } {
  const child = spawn(process.execPath, [CLI, ...args], { cwd: opts.cwd ?? ROOT, env: { ...process.env, ...opts.env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout!.setEncoding('utf8').on('data', (d: string) => (stdout += d));
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    child.kill('SIGKILL');
  }, opts.limitMs ?? 90_000);
  const done = new Promise<CliRun>((resolveRun) => {
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolveRun({ code, signal, stdout, stderr, timedOut });
    });
  });
  return { child, output: () => ({ stdout, stderr }), done };
}

/** Runs the built CLI to its end (or the harness limit). */
export function runCli(args: readonly string[], opts: { cwd?: string; env?: Record<string, string>; limitMs?: number } = {}): Promise<CliRun> {
  return startCli(args, opts).done;
}

/** Resolves once `output()` matches `pattern` (rejects if the process ends first). */
export async function waitForOutput(run: ReturnType<typeof startCli>, pattern: RegExp): Promise<void> {
  let ended = false;
  void run.done.then(() => (ended = true));
  for (;;) {
    const { stdout, stderr } = run.output();
    if (pattern.test(stdout) || pattern.test(stderr)) return;
    if (ended) throw new Error(`exited before printing ${pattern}:\n${stdout}\n${stderr}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** An ImageFolder `dir/<class>/<i>.png` of small, distinct RGB images. */
export function imageFolder(dir: string, classes: readonly string[] = ['a', 'b'], perClass = 4, side = 40): string {
  classes.forEach((c, ci) => {
    mkdirSync(join(dir, c), { recursive: true });
    for (let i = 0; i < perClass; i++) {
      const px = new Uint8Array(side * side * 3);
      for (let p = 0; p < side * side; p++) {
        px[3 * p] = (40 * i + 7 * (p % side)) & 255;
        px[3 * p + 1] = (90 * ci + 3 * Math.floor(p / side)) & 255;
        px[3 * p + 2] = (p * 13 + i * 31) & 255;
      }
      writeFileSync(join(dir, c, `${i}.png`), encodePng(side, side, px, 3));
    }
  });
  return dir;
}
