/**
 * Command-line failures of reliability-2026-12.md, with the built command as a user runs it:
 *
 * - F20: a negative number was "Option '--epochs' argument is ambiguous" (now a value, range-checked,
 *   exit 2); an empty class folder said "pass allowEmptyClasses", which is no option (now
 *   --allow-empty-classes, named in the message); `webdino eval` alone was "unknown command 'eval'"
 *   (now the eval commands are listed); a folder on a read-only mount failed with ENOENT (now the
 *   real reason: the injectable file system of makeDir plays the read-only mount, which tests
 *   cannot make);
 * - F22: `embed --out` equal to `--weights` overwrote the weights. Outputs are compared with every
 *   input file by real path and by inode: the same path, a symlink to it and a hard link are all
 *   refused (exit 2, before anything runs), as is an output onto an input image (exit 1);
 * - F19: Dawn's two "artificially reduced" lines on stderr of every command (now only with
 *   --verbose), and "used in submit while destroyed" on stdout after an error in training (now
 *   pending GPU work settles before anything is freed).
 */
import { copyFileSync, linkSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeDir } from '../../models/io/node-files.js';
import { tinyBackbone } from '../eval/cli.js';
import { buildIfStale, imageFolder, runCli, TINY_TRAIN } from './cli-process.js';

let dir: string;
let weights: string;

beforeAll(async () => {
  buildIfStale();
  dir = mkdtempSync(join(tmpdir(), 'webdino-cli-'));
  weights = (await tinyBackbone(dir)).path;
});

afterAll(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('F20: messages that say what to do', () => {
  it('a negative number is a value, range-checked (exit 2)', async () => {
    for (const [args, message] of [
      [['train', '--epochs', '-1'], /--epochs must be an integer from 1 to 100000, got '-1'/],
      [['eval', 'linear', '--weights', weights, '--views', '-3'], /--views must be an integer from 0 to 100000, got '-3'/],
      [['eval', 'knn', '--weights', weights, '--temperature', '-0.5'], /--temperature must be a number from 0\.000001 to 1000000, got '-0\.5'/],
    ] as const) {
      const r = await runCli(args);
      expect(r.code, args.join(' ')).toBe(2);
      expect(r.stderr).toMatch(message);
      expect(r.stderr).not.toMatch(/ambiguous/);
    }
  });

  it('an empty class folder names --allow-empty-classes, which works', async () => {
    const folder = imageFolder(join(dir, 'with-empty'), ['a'], 4);
    mkdirSync(join(folder, 'b'));
    const refused = await runCli(['eval', 'knn', '--weights', weights, '--train', folder, '--val', folder, '--k', '1']);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/no \.jpg\/\.jpeg\/\.png images in class folder b of .*: remove the empty folder, or pass --allow-empty-classes/);
    expect(refused.stderr).not.toMatch(/pass allowEmptyClasses/);
    const allowed = await runCli(['eval', 'knn', '--weights', weights, '--train', folder, '--val', folder, '--k', '1', '--allow-empty-classes']);
    expect(allowed.code, allowed.stderr).toBe(0);
    expect(allowed.stdout).toMatch(/^k=1: top-1 /m);
  });

  it('`webdino eval` lists the eval commands', async () => {
    const r = await runCli(['eval']);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain("webdino: 'eval' needs a command: knn, linear, segment");
    const help = await runCli(['eval', '--help']);
    expect(help.code).toBe(0);
    expect(help.stdout).toMatch(/^\s+eval knn\s+Weighted k-NN/m);
    const wrong = await runCli(['eval', 'frob']);
    expect(wrong.code).toBe(2);
    expect(wrong.stderr).toContain("unknown command 'eval frob' (eval commands: knn, linear, segment)");
  });

  it('a folder that cannot be created says why: read-only file system (EROFS), not ENOENT', () => {
    const ro = mkdtempSync(join(dir, 'ro-'));
    const errno = (code: string, text: string, path: string) => Object.assign(new Error(`${code}: ${text}, mkdir '${path}'`), { code });
    // Node's recursive mkdir under a read-only mount reports ENOENT; one level at a time, EROFS.
    const readOnly = {
      mkdirSync: (p: string, o?: { recursive?: boolean }) => {
        throw o?.recursive ? errno('ENOENT', 'no such file or directory', p) : errno('EROFS', 'read-only file system', p);
      },
      statSync: (p: string) => (p === ro || !p.startsWith(ro) ? { isDirectory: () => true } : (() => { throw errno('ENOENT', 'no such file or directory', p); })()),
    };
    expect(() => makeDir(join(ro, 'runs', 'dino'), readOnly)).toThrow(`cannot create the folder ${join(ro, 'runs', 'dino')}: ${join(ro, 'runs')}: read-only file system (EROFS)`);
  });
});

describe('F22: an output never overwrites an input', () => {
  it('embed --out / --attn naming the weights, a symlink to them or a hard link: exit 2, weights intact', async () => {
    const w = join(dir, 'w.safetensors');
    copyFileSync(weights, w);
    const bytes = readFileSync(w);
    symlinkSync(w, join(dir, 'w-link.npy'));
    linkSync(w, join(dir, 'w-hard.npy'));
    const images = imageFolder(join(dir, 'imgs'), ['a'], 2);
    const embed = ['embed', '--weights', w, '--input', join(images, 'a'), '--image-size', '32'];
    for (const outputs of [
      ['--out', w],
      ['--out', join(dir, 'w-link.npy')],
      ['--out', join(dir, 'w-hard.npy')],
      ['--out', join(dir, 'f.npy'), '--attn', w],
    ]) {
      const r = await runCli([...embed, ...outputs]);
      expect(r.code, `${outputs.join(' ')}: ${r.stderr}`).toBe(2);
      expect(r.stderr).toMatch(/is the same file as --weights .*w\.safetensors: an output never overwrites an input/);
      expect(readFileSync(w).equals(bytes)).toBe(true);
    }
    const save = await runCli(['eval', 'linear', '--weights', w, '--save', w]);
    expect(save.code).toBe(2);
    expect(readFileSync(w).equals(bytes)).toBe(true);
  });

  it('embed --out onto one of the input images: exit 1, the image intact', async () => {
    const images = imageFolder(join(dir, 'imgs2'), ['a'], 2);
    const img = join(images, 'a', '0.png');
    const bytes = readFileSync(img);
    const r = await runCli(['embed', '--weights', weights, '--input', join(images, 'a'), '--out', img, '--image-size', '32']);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/refusing to write .*0\.png: it is an input of this command/);
    expect(readFileSync(img).equals(bytes)).toBe(true);
  });
});

describe('F19: no GPU driver noise', () => {
  it("Dawn's start-up warnings only with --verbose", async () => {
    const quiet = await runCli(['bench', '--quick', '--only', 'add', '--reps', '1']);
    expect(quiet.code, quiet.stderr).toBe(0);
    expect(quiet.stderr).not.toMatch(/artificially reduced/);
    const verbose = await runCli(['bench', '--quick', '--only', 'add', '--reps', '1', '--verbose']);
    expect(verbose.code).toBe(0);
    // Whether Dawn prints them depends on the driver's limits (lavapipe and NVIDIA do); where it
    // does, --verbose shows them.
    if (!/artificially reduced/.test(verbose.stderr)) console.log('note: this driver gives Dawn no limit to reduce; nothing to filter');
  });

  it('an error during training prints no "used in submit while destroyed"', async () => {
    const bad = join(dir, 'bad');
    for (const c of ['a', 'b']) {
      mkdirSync(join(bad, c), { recursive: true });
      for (let i = 0; i < 4; i++) copyFileSync(weights, join(bad, c, `${i}.jpg`)); // not images
    }
    // A held-out set with no readable image fails the first periodic evaluation, mid-run.
    const r = await runCli(['train', '--out', join(dir, 'eval-fails'), ...TINY_TRAIN, '--max-iterations', '3', '--eval-every', '1', '--val', bad], { limitMs: 120_000 });
    expect(r.timedOut).toBe(false);
    expect(r.stdout).not.toMatch(/used in submit while destroyed/);
    expect(r.stdout + r.stderr).not.toMatch(/validation:/i);
  }, 150_000);
});
