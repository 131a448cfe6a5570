/**
 * `webdino embed --dtype f16` through bin/cli.ts's `main` (./harness.ts), on a tiny random-weight
 * ViT saved as our own export: the features, patch tokens and CLS attention of the f16 run are
 * float32 .npy files within 1e-2 relative error (per row) of the f32 run's; the model line names
 * the dtype; a sharded run records f16 in its manifest and refuses to be resumed in the other dtype;
 * a dtype the command does not know is a usage error. The refusal on an adapter
 * without shader-f16 is tested at the library level (test/models/vit-f16.test.ts), where the
 * engine can be one without the feature.
 */
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Rng } from '../../index.js';
import { createViT } from '../../models/vit.js';
import { writeSafetensors } from '../../models/io/safetensors.js';
import { encodePng } from '../../models/io/image.js';
import { parseNpy } from '../../models/io/npy.js';
import { webdino } from './harness.js';
import { getEngine } from '../helpers.js';

const ARCH_META = JSON.stringify({ arch: 'custom', embed_dim: 48, depth: 3, num_heads: 3, patch_size: 8, img_size: 32 });
let dir: string;
let weights: string;
let imgDir: string;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'webdino-embed-f16-'));
  const wd = await getEngine();
  const model = createViT({ engine: wd, rng: new Rng(12) }, { embedDim: 48, depth: 3, numHeads: 3, patchSize: 8, imgSize: 32 });
  weights = join(dir, 'vit.safetensors');
  writeFileSync(weights, writeSafetensors(await model.stateDict(), { webdino_arch: ARCH_META }));
  model.dispose();
  imgDir = join(dir, 'imgs');
  mkdirSync(imgDir);
  for (let i = 0; i < 3; i++) {
    const [w, h] = [36 + 5 * i, 44 - 3 * i];
    const r = new Rng(40 + i);
    const px = new Uint8Array(w * h * 3).map((_, j) => Math.floor(((j % (w * 3)) * 2 + r.uniform() * 60) % 256));
    writeFileSync(join(imgDir, `img${i}.png`), encodePng(w, h, px, 3));
  }
});

afterAll(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

const npy = (path: string) => parseNpy(new Uint8Array(readFileSync(path)));

/** max over rows of ‖got − want‖₂ / ‖want‖₂. */
function rowRelError(got: ArrayLike<number>, want: ArrayLike<number>, row: number): number {
  let worst = 0;
  for (let r = 0; r * row < want.length; r++) {
    let d = 0;
    let n = 0;
    for (let j = r * row; j < (r + 1) * row; j++) {
      d += (got[j] - want[j]) ** 2;
      n += want[j] ** 2;
    }
    worst = Math.max(worst, Math.sqrt(d / n));
  }
  return worst;
}

describe('webdino embed --dtype f16', () => {
  it('writes float32 features, patch tokens and attention within 1e-2 of the f32 run', async () => {
    const run = async (dtype: string) => {
      const [out, attn, patches] = ['feats', 'attn', 'patches'].map((n) => join(dir, `${n}-${dtype}.npy`));
      const r = await webdino('embed', '--weights', weights, '--input', imgDir, '--out', out, '--attn', attn, '--patch-out', patches, '--image-size', '32', '--batch-size', '2', '--dtype', dtype);
      expect(r.code, r.err).toBe(0);
      expect(r.out).toMatch(new RegExp(`custom/8 \\(dim 48, depth 3, 3 heads\\) from .*, ${dtype}`));
      return { f: npy(out), a: npy(attn), p: npy(patches) };
    };
    const a = await run('f32');
    const b = await run('f16');
    expect(b.f.descr).toBe('<f4');
    expect(b.f.shape).toEqual([3, 48]);
    expect(b.a.shape).toEqual([3, 3, 16]);
    expect(b.p.shape).toEqual([3, 16, 48]);
    const errors = { features: rowRelError(b.f.data, a.f.data, 48), patches: rowRelError(b.p.data, a.p.data, 48), attention: rowRelError(b.a.data, a.a.data, 16) };
    console.log(`embed --dtype f16 vs f32, worst row relative error: ${JSON.stringify(errors)}`);
    for (const [k, e] of Object.entries(errors)) expect(e, k).toBeLessThanOrEqual(1e-2);
    // Not the same numbers: the f16 run really ran in f16.
    expect(errors.features).toBeGreaterThan(0);
  });

  it('in shards: the manifest records f16, and a resume in f32 is refused (and the other way round)', async () => {
    const stem = join(dir, 'pool');
    const args = ['--weights', weights, '--input', imgDir, '--out', stem, '--image-size', '32', '--shard-size', '2'];
    const r = await webdino('embed', ...args, '--dtype', 'f16');
    expect(r.code, r.err).toBe(0);
    const manifest = JSON.parse(readFileSync(`${stem}-manifest.json`, 'utf8'));
    expect(manifest.fingerprint.dtype).toBe('f16');
    const again = await webdino('embed', ...args, '--dtype', 'f16');
    expect(again.code, again.err).toBe(0);
    expect(again.out).toMatch(/resumed: 2 shards already done/);
    const f32 = await webdino('embed', ...args);
    expect(f32.code).toBe(1);
    expect(f32.err).toMatch(/records another embedding run \(dtype: "f16" → undefined\)/);
    const stem32 = join(dir, 'pool32');
    expect((await webdino('embed', ...args.slice(0, 4), '--out', stem32, '--image-size', '32', '--shard-size', '2')).code).toBe(0);
    const f16 = await webdino('embed', ...args.slice(0, 4), '--out', stem32, '--image-size', '32', '--shard-size', '2', '--dtype', 'f16');
    expect(f16.code).toBe(1);
    expect(f16.err).toMatch(/\(dtype: undefined → "f16"\)/);
  });

  it('refuses a dtype it does not know', async () => {
    const r = await webdino('embed', '--weights', weights, '--input', imgDir, '--out', join(dir, 'x.npy'), '--dtype', 'bf16');
    expect(r.code).not.toBe(0);
    expect(r.err).toMatch(/--dtype/);
  });
});
