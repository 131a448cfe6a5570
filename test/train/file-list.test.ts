/**
 * File-list datasets (train/data/file-list-node.ts): the three line formats (PATH, PATH<TAB>LABEL,
 * curate's ROW<TAB>PATH), labels from parent folders numbered as an ImageFolder numbers them,
 * relative paths against the list's folder, lists with missing files or rows only refused with
 * line numbers; `openDataset` opens a list, and the CLI trains on one (`webdino train --data
 * selected.txt`) and evaluates with one (k-NN against the ImageFolder of the same images).
 */
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Rng } from '../../index.js';
import { decodeImage, encodePng } from '../../models/io/image.js';
import { FileListError, readFileList } from '../../train/data/file-list-node.js';
import { openImageFolder } from '../../train/data/image-folder-node.js';
import { openDataset } from '../../train/data/open-node.js';
import { tinyBackbone } from '../eval/cli.js';
import { webdino } from '../bin/harness.js';

let dir: string;
let pool: string;
/** pool/<class>/<name>.png, in ImageFolder order. */
let files: string[];

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'webdino-file-list-'));
  pool = join(dir, 'pool');
  const rng = new Rng(9);
  files = [];
  for (const [cls, names] of [
    ['cat', ['c0', 'c1', 'c2']],
    ['ant', ['a0', 'a1']],
    ['bee', ['b0']],
  ] as const) {
    mkdirSync(join(pool, cls), { recursive: true });
    for (const n of names) {
      const w = 20 + rng.int(20);
      writeFileSync(join(pool, cls, `${n}.png`), encodePng(w, 24, new Uint8Array(w * 24 * 3).map(() => rng.int(256)), 3));
    }
  }
  files = ['ant/a0', 'ant/a1', 'bee/b0', 'cat/c0', 'cat/c1', 'cat/c2'].map((f) => join(pool, `${f}.png`));
});
afterAll(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

function list(name: string, text: string): string {
  const p = join(dir, name);
  writeFileSync(p, text);
  return p;
}

describe('file lists', () => {
  it('PATH lines: labels from parent folders, numbered like the ImageFolder; relative paths, blank lines, repeats', () => {
    const l = readFileList(list('paths.txt', `pool/cat/c2.png\n\n${files[0]}\npool/bee/b0.png\npool/cat/c2.png\n`));
    expect(l.format).toBe('paths');
    expect(l.classNames).toEqual(['ant', 'bee', 'cat']);
    expect(l.files).toEqual([
      { path: files[5], label: 2 },
      { path: files[0], label: 0 },
      { path: files[2], label: 1 },
      { path: files[5], label: 2 },
    ]);
    // Every image of the folder, listed: the same classes and labels as the ImageFolder.
    const folder = openImageFolder(pool, { workers: 0 });
    const all = readFileList(list('all.txt', [...files].reverse().join('\n')));
    expect(all.classNames).toEqual([...folder.classNames]);
    for (const f of all.files) expect(f.label).toBe(folder.classNames.indexOf(f.path.split('/').at(-2)!));
  });

  it("PATH<TAB>LABEL lines name their class; curate's ROW<TAB>PATH lines are a selection", () => {
    const l = readFileList(list('labels.txt', `${files[0]}\tzebra\n${files[3]}\t3\n${files[4]}\n`));
    expect(l.format).toBe('path-label');
    expect(l.classNames).toEqual(['3', 'cat', 'zebra']);
    expect(l.files.map((f) => f.label)).toEqual([2, 0, 1]);
    const sel = readFileList(list('selected.txt', `0\t${files[0]}\n4\t${files[4]}\n17\tpool/bee/b0.png\n`));
    expect(sel.format).toBe('selection');
    expect(sel.classNames).toEqual(['ant', 'bee', 'cat']);
    expect(sel.files).toEqual([
      { path: files[0], label: 0 },
      { path: files[4], label: 2 },
      { path: files[2], label: 1 },
    ]);
  });

  it('refuses missing files, rows without paths, malformed lines and empty lists, naming the line', () => {
    const missing = Array.from({ length: 7 }, (_, i) => join(pool, 'cat', `gone${i}.png`));
    expect(() => readFileList(list('missing.txt', [files[0], ...missing].join('\n')))).toThrow(/7 listed files are missing or not a file \(line 2: .*gone0\.png; .*line 6: .*gone4\.png, and 2 more\)/);
    expect(() => readFileList(list('dir.txt', pool))).toThrow(/1 listed file is missing or not a file \(line 1:/);
    expect(() => readFileList(list('rows.txt', '0\n4\n17\n'))).toThrow(/every line is a number: a selection written by webdino curate without --paths/);
    expect(() => readFileList(list('three.txt', `${files[0]}\n${files[1]}\tant\textra\n`))).toThrow(/line 2: expected PATH, PATH<TAB>LABEL or ROW<TAB>PATH/);
    expect(() => readFileList(list('empty.txt', '\n\n'))).toThrow(FileListError);
    expect(() => readFileList(join(dir, 'nope.txt'))).toThrow(/cannot read it/);
  });

  it('openDataset opens a list: decoded images and labels', async () => {
    const ds = openDataset(list('open.txt', `1\t${files[4]}\n2\t${files[1]}\n`), { defaultSplit: 'train' }) as ReturnType<typeof openImageFolder>;
    try {
      expect(ds.length).toBe(2);
      expect(ds.classNames).toEqual(['ant', 'cat']);
      const s = await ds.get(0);
      expect(s.label).toBe(1);
      expect(s.image).toEqual(decodeImage(new Uint8Array(readFileSync(files[4]))));
    } finally {
      await ds.close();
    }
  });
});

describe('the CLI on file lists', () => {
  it('webdino train --data selected.txt trains on the listed images', async () => {
    const sel = list('train-selected.txt', files.map((f, i) => `${i * 3}\t${f}`).join('\n'));
    const out = join(dir, 'run');
    const r = await webdino(
      'train', '--data', sel, '--out', out, '--embed-dim', '16', '--depth', '1', '--heads', '2', '--patch-size', '4', '--out-dim', '64',
      '--batch-size', '4', '--global-size', '16', '--local-size', '8', '--local-crops', '2', '--epochs', '1', '--checkpoint-every', '0',
    ); // prettier-ignore
    expect(r.code, r.err).toBe(0);
    expect(r.out).toContain(`data: ${sel} (6 images, 3 classes)`);
    expect(r.out).toMatch(/done: 1 iterations/);
  });

  it('webdino eval knn takes a list: its parent-folder labels agree with the ImageFolder of the same images', async () => {
    const { path: weights } = await tinyBackbone(dir);
    const val = list('val.txt', [...files].reverse().join('\n'));
    const r = await webdino('eval', 'knn', '--weights', weights, '--train', pool, '--val', val, '--k', '1', '--image-size', '32');
    expect(r.code, r.err).toBe(0);
    // Each image's nearest training image is itself: top-1 is 100 % exactly when the labels agree.
    expect(r.out).toMatch(/k=1: top-1 100\.00 %/);
  });
});
