/**
 * `webdino embed` and `webdino attention`, run in-process through bin/cli.ts's `main` (./harness.ts), on a tiny
 * ViT (dim 32, depth 2, 2 heads, patch 8, 32 px) with random weights saved as our own export
 * (safetensors + webdino_arch metadata):
 * - features equal the model's forward on DINO's eval transform of the same images (and the last
 *   layer's CLS attention equals lastSelfAttention's row 0 without the CLS column), from a folder
 *   of PNGs and from an NCHW .npy; a last partial batch is exercised (3 images, batch 2);
 * - hostile inputs (truncated safetensors, a header length beyond the file, a pickle naming
 *   os.system, a file that is not an image, a bad .npy) and architecture mismatches each exit 1
 *   with one message and leave no file at --out; --skip-bad skips and counts;
 * - the attention command writes img/attn/mask PNGs of the right sizes and masks that keep the
 *   threshold's share of the attention mass;
 * - DINO's th_attn rule (eval/attention-maps.ts) on hand-computed cases.
 */
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Rng } from '../../index.js';
import { createViT, type VisionTransformer } from '../../models/vit.js';
import { writeSafetensors } from '../../models/io/safetensors.js';
import { decodeImage, encodePng } from '../../models/io/image.js';
import { parseNpy, writeNpy } from '../../models/io/npy.js';
import { evalTransform } from '../../train/data/transforms.js';
import { attentionMasks, heatmapRgb, jaccard, maskedMass, upsampleNearest, viridis } from '../../eval/attention-maps.js';
import { webdino } from './harness.js';
import { expectClose, getEngine } from '../helpers.js';

const CFG = { embedDim: 32, depth: 2, numHeads: 2, patchSize: 8, imgSize: 32 };
const ARCH_META = JSON.stringify({ arch: 'custom', embed_dim: 32, depth: 2, num_heads: 2, patch_size: 8, img_size: 32 });
const HOSTILE_MARKER = '/tmp/webdino-io-test-pwned-marker';

let dir: string;
let model: VisionTransformer;
let weights: string; // with webdino_arch metadata
let bare: string; // same tensors, no metadata
let imgDir: string;
const SIZES = [
  [40, 30],
  [37, 52],
  [32, 32],
] as const;

function randomImage(w: number, h: number, seed: number): Uint8Array {
  const r = new Rng(seed);
  const px = new Uint8Array(w * h * 3);
  // Smooth gradients plus noise: something the bicubic resize does real work on.
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      for (let c = 0; c < 3; c++) px[(y * w + x) * 3 + c] = Math.min(255, Math.floor(((x * (c + 1) + y * 3) % 200) + r.uniform() * 55));
    }
  }
  return px;
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'webdino-embed-'));
  const wd = await getEngine();
  model = createViT({ engine: wd, rng: new Rng(11) }, CFG);
  model.eval();
  const sd = await model.stateDict();
  weights = join(dir, 'vit.safetensors');
  writeFileSync(weights, writeSafetensors(sd, { webdino_arch: ARCH_META }));
  bare = join(dir, 'bare.safetensors');
  writeFileSync(bare, writeSafetensors(sd));
  imgDir = join(dir, 'imgs');
  mkdirSync(imgDir);
  SIZES.forEach(([w, h], i) => writeFileSync(join(imgDir, `img${i}.png`), encodePng(w, h, randomImage(w, h, 100 + i), 3)));
  writeFileSync(join(imgDir, 'notes.txt'), 'not an image, and not named like one: ignored');
});

afterAll(() => {
  model?.dispose();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/** The model's features and CLS attention (row 0, patch columns) for a normalised batch. */
async function reference(x: Float32Array, shape: number[]): Promise<{ feats: Float32Array; attn: Float32Array }> {
  const wd = await getEngine();
  return wd.noGrad(() =>
    wd.scope(async () => {
      const t = wd.tensor(x, shape);
      const feats = await model.forward(t).toArray();
      const probs = model.lastSelfAttention(t); // [B, H, N, N]
      const [B, H, N] = probs.shape;
      const all = await probs.toArray();
      const attn = new Float32Array(B * H * (N - 1));
      for (let bh = 0; bh < B * H; bh++) attn.set(all.subarray(bh * N * N + 1, bh * N * N + N), bh * (N - 1));
      return { feats, attn };
    }),
  );
}

/** The eval transform of the test images at 32 px, as the command should compute it. */
async function transformedImages(): Promise<Float32Array> {
  const wd = await getEngine();
  const images = readdirSync(imgDir)
    .filter((f) => f.endsWith('.png'))
    .sort()
    .map((f) => decodeImage(new Uint8Array(readFileSync(join(imgDir, f)))));
  return wd.scope(async () => evalTransform(wd, images, { crop: 32 }).toArray());
}

const npy = (path: string) => parseNpy(new Uint8Array(readFileSync(path)));

describe('webdino embed', () => {
  it('features and CLS attention of a folder of images equal the model on the eval transform', async () => {
    const out = join(dir, 'feats.npy');
    const attn = join(dir, 'attn.npy');
    const r = await webdino('embed', '--weights', weights, '--input', imgDir, '--out', out, '--attn', attn, '--image-size', '32', '--batch-size', '2');
    expect(r.code, r.err).toBe(0);
    expect(r.out).toMatch(/custom\/8 \(dim 32, depth 2, 2 heads\)/);
    expect(r.out).toMatch(/3 images in [\d.]+ s: [\d.]+ images\/s/);
    const f = npy(out);
    const a = npy(attn);
    expect(f.descr).toBe('<f4');
    expect(f.shape).toEqual([3, 32]);
    expect(a.shape).toEqual([3, 2, 16]);
    const ref = await reference(await transformedImages(), [3, 3, 32, 32]);
    // Same kernels, different batch composition (2 + 1 vs 3): f32 rounding only.
    expectClose(f.data, ref.feats, 1e-5, 1e-5, 'features');
    expectClose(a.data, ref.attn, 1e-5, 1e-6, 'attention');
    // Softmax rows over 17 keys: the patch columns hold what the CLS column does not.
    for (let i = 0; i < 6; i++) {
      const s = a.data.subarray(i * 16, (i + 1) * 16).reduce((x, y) => x + y, 0);
      expect(s).toBeGreaterThan(0);
      expect(s).toBeLessThan(1);
    }
  });

  it('an NCHW .npy input is used as is; arch flags that agree with the metadata are accepted', async () => {
    const x = await transformedImages();
    const input = join(dir, 'x.npy');
    writeFileSync(input, writeNpy({ shape: [3, 3, 32, 32], data: x }));
    const out = join(dir, 'feats-npy.npy');
    const r = await webdino('embed', '--weights', weights, '--input', input, '--out', out, '--arch', 'custom', '--embed-dim', '32', '--depth', '2', '--heads', '2', '--patch-size', '8');
    expect(r.code, r.err).toBe(0);
    const f = npy(out);
    expect(f.shape).toEqual([3, 32]);
    expectClose(f.data, (await reference(x, [3, 3, 32, 32])).feats, 1e-5, 1e-5, 'features from .npy');
    // A non-square input (interpolated position embedding) runs too.
    const wide = join(dir, 'wide.npy');
    writeFileSync(wide, writeNpy({ shape: [1, 3, 32, 48], data: new Rng(5).fillNormal(new Float32Array(3 * 32 * 48)) }));
    const r2 = await webdino('embed', '--weights', weights, '--input', wide, '--out', join(dir, 'wide-feats.npy'), '--attn', join(dir, 'wide-attn.npy'));
    expect(r2.code, r2.err).toBe(0);
    expect(npy(join(dir, 'wide-attn.npy')).shape).toEqual([1, 2, 24]);
  });

  /** Runs embed expecting failure: exit 1, one message matching `pattern`, no file at --out. */
  async function expectFailure(args: string[], pattern: RegExp): Promise<string> {
    const out = join(dir, `fail-${Math.random().toString(36).slice(2)}.npy`);
    const attn = `${out}.attn.npy`;
    const r = await webdino('embed', '--out', out, '--attn', attn, ...args);
    expect(r.code, r.err).toBe(1);
    expect(r.err).toMatch(/^webdino embed: /);
    expect(r.err).toMatch(pattern);
    expect(r.err).not.toMatch(/^\s+at /m); // no stack trace without --verbose
    expect(existsSync(out)).toBe(false);
    expect(existsSync(attn)).toBe(false);
    expect(readdirSync(dir).filter((f) => f.endsWith('.tmp'))).toEqual([]);
    return r.err;
  }

  it('hostile weights: truncated safetensors, header length beyond the file, a pickle naming os.system', async () => {
    const bytes = readFileSync(weights);
    const truncated = join(dir, 'truncated.safetensors');
    writeFileSync(truncated, bytes.subarray(0, Math.floor(bytes.length / 2)));
    let err = await expectFailure(['--weights', truncated, '--input', imgDir], /weights .*truncated\.safetensors: safetensors: /);
    expect(err.split('\n')).toHaveLength(1);

    const long = Buffer.from(bytes);
    long.writeBigUInt64LE(BigInt(bytes.length) * 10n, 0);
    const bigHeader = join(dir, 'big-header.safetensors');
    writeFileSync(bigHeader, long);
    err = await expectFailure(['--weights', bigHeader, '--input', imgDir], /header length \d+ exceeds file size/);
    expect(err.split('\n')).toHaveLength(1);

    rmSync(HOSTILE_MARKER, { force: true });
    const pickle = new URL('../fixtures/io/hostile_os_system.pth', import.meta.url).pathname;
    err = await expectFailure(['--weights', pickle, '--input', imgDir], /hostile_os_system\.pth: .*(posix|os)\.?system/);
    expect(err.split('\n')).toHaveLength(1);
    expect(existsSync(HOSTILE_MARKER)).toBe(false);

    await expectFailure(['--weights', join(dir, 'missing.safetensors'), '--input', imgDir], /missing\.safetensors: no such file/);
  });

  it('an image that is not an image stops the run with its path; --skip-bad skips and counts it', async () => {
    const bad = join(dir, 'with-bad');
    mkdirSync(bad);
    for (const f of readdirSync(imgDir)) writeFileSync(join(bad, f), readFileSync(join(imgDir, f)));
    writeFileSync(join(bad, 'img1b.png'), 'GIF89a... not really a PNG');
    await expectFailure(['--weights', weights, '--input', bad, '--image-size', '32'], /with-bad\/img1b\.png: not a JPEG or PNG image/);

    const out = join(dir, 'skip.npy');
    const r = await webdino('embed', '--weights', weights, '--input', bad, '--out', out, '--image-size', '32', '--skip-bad', '--batch-size', '2');
    expect(r.code, r.err).toBe(0);
    expect(r.err).toMatch(/warning: skipping .*img1b\.png/);
    expect(r.err).toMatch(/skipped 1 image/);
    const f = npy(out);
    expect(f.shape).toEqual([3, 32]);
    expectClose(f.data, (await reference(await transformedImages(), [3, 3, 32, 32])).feats, 1e-5, 1e-5, 'features without the bad image');
  });

  it('bad array inputs: not [N, 3, H, W], integer pixels', async () => {
    const rank3 = join(dir, 'rank3.npy');
    writeFileSync(rank3, writeNpy({ shape: [3, 32, 32], data: new Float32Array(3 * 32 * 32) }));
    await expectFailure(['--weights', weights, '--input', rank3], /rank3\.npy: shape \[3, 32, 32\] is not \[N, 3, H, W\]/);
    const ints = join(dir, 'ints.npy');
    writeFileSync(ints, writeNpy({ shape: [1, 3, 8, 8], data: new Uint8Array(192) }));
    await expectFailure(['--weights', weights, '--input', ints], /not floating point/);
  });

  it('architecture mismatches: against the metadata, and strict loading listing the keys', async () => {
    await expectFailure(['--weights', weights, '--input', imgDir, '--arch', 'vit_small'], /record the architecture custom\/8 .*asks for vit_small\/8/);
    await expectFailure(['--weights', weights, '--input', imgDir, '--patch-size', '16'], /--patch-size is 16/);
    // Bare weights: the architecture comes from the command line; strict loading lists every problem.
    let err = await expectFailure(
      ['--weights', bare, '--input', imgDir, '--arch', 'custom', '--embed-dim', '32', '--depth', '3', '--heads', '2', '--patch-size', '8'],
      /state dict does not match the model: 12 missing, 0 unexpected, 0 shape mismatches/,
    );
    expect(err).toMatch(/missing keys: blocks\.2\.norm1\.weight, blocks\.2\.norm1\.bias, blocks\.2\.attn\.qkv\.weight/);
    err = await expectFailure(['--weights', bare, '--input', imgDir, '--arch', 'vit_tiny', '--patch-size', '8'], /shape mismatch: cls_token: expected \[1, 1, 192\], got \[1, 1, 32\]/);
    // Blocks 2..11 missing (120 keys), shapes listed; the message names the first 50 keys and counts the rest.
    expect(err).toMatch(/missing keys: blocks\.2\.norm1\.weight, .*, blocks\.6\.norm1\.bias, \.\.\. and 70 more\n/);
    // Bare weights that match no preset and no --arch.
    await expectFailure(['--weights', bare, '--input', imgDir], /cannot tell the architecture .*dim 32 and depth 2/);
    // A DINO training checkpoint (PyTorch): teacher entry, module./backbone. stripped, head ignored.
    const ckpt = new URL('../fixtures/io/dino_checkpoint.pth', import.meta.url).pathname;
    err = await expectFailure(['--weights', ckpt, '--input', imgDir, '--arch', 'custom', '--embed-dim', '4', '--depth', '1', '--heads', '2'], /missing keys: .*pos_embed/);
    expect(err).not.toMatch(/module\.|backbone\.|head\./);
  });

  it('usage errors exit 2', async () => {
    expect((await webdino('embed', '--input', imgDir, '--out', join(dir, 'usage.npy'))).code).toBe(2);
    expect((await webdino('embed', '--weights', weights, '--input', imgDir, '--out', join(dir, 'usage.npy'), '--arch', 'vit_small', '--heads', '2')).code).toBe(2);
    const heads = await webdino('embed', '--weights', weights, '--input', imgDir, '--out', join(dir, 'usage.npy'), '--heads', '4');
    expect(heads.code).toBe(1);
    expect(heads.err).toMatch(/--heads 4 contradicts the architecture custom\/8 \(dim 32, depth 2, 2 heads\)/);
    expect((await webdino('embed', '--weights', weights, '--input', imgDir, '--out', join(dir, 'usage.npy'), '--batch-size', '0')).code).toBe(2);
    expect(existsSync(join(dir, 'usage.npy'))).toBe(false);
  });
});

describe('webdino attention', () => {
  it('writes the input crop, per-head heat maps and 60 % masks at image resolution', async () => {
    const out = join(dir, 'attn-maps');
    const image = join(imgDir, 'img1.png'); // 37x52 → 36x36 → 32x32 crop (4x4 patches of 8)
    const r = await webdino('attention', '--weights', weights, '--image', image, '--out', out, '--image-size', '36');
    expect(r.code, r.err).toBe(0);
    expect(readdirSync(out).sort()).toEqual(['attention.npy', 'attn-head0.png', 'attn-head1.png', 'img.png', 'mask-head0.png', 'mask-head1.png']);
    const png = (f: string) => decodeImage(new Uint8Array(readFileSync(join(out, f))));
    for (const f of ['img.png', 'attn-head0.png', 'attn-head1.png', 'mask-head0.png', 'mask-head1.png']) {
      expect([png(f).width, png(f).height], f).toEqual([32, 32]);
    }
    const a = npy(join(out, 'attention.npy'));
    expect(a.shape).toEqual([2, 4, 4]);
    const masks = attentionMasks(a.data, 2, 0.6);
    const mass = maskedMass(a.data, masks, 2);
    for (let h = 0; h < 2; h++) {
      // The mask PNG is the mask upsampled by 8: sample each patch's pixels.
      const m = png(`mask-head${h}.png`);
      for (let i = 0; i < 16; i++) {
        const [py, px] = [Math.floor(i / 4), i % 4];
        for (const [dy, dx] of [[0, 0], [7, 7], [3, 5]]) {
          expect(m.data[((py * 8 + dy) * 32 + px * 8 + dx) * 3], `head ${h} patch ${i}`).toBe(masks[h * 16 + i] ? 255 : 0);
        }
      }
      // Kept mass ≥ 60 %, and dropping the smallest kept patch would fall below it.
      const row = a.data.subarray(h * 16, (h + 1) * 16);
      const total = row.reduce((x, y) => x + y, 0);
      const smallestKept = Math.min(...Array.from(row).filter((_, i) => masks[h * 16 + i]));
      expect(mass[h]).toBeGreaterThanOrEqual(0.6 - 1e-6);
      expect(mass[h] - smallestKept / total).toBeLessThan(0.6);
      // The heat map: brightest (viridis yellow) at the largest attention.
      const heat = png(`attn-head${h}.png`);
      const top = row.indexOf(Math.max(...row));
      const at = ((Math.floor(top / 4) * 8 + 4) * 32 + (top % 4) * 8 + 4) * 3;
      expect(Array.from(heat.data.subarray(at, at + 3))).toEqual(viridis(1));
    }
  });

  it('the attention equals lastSelfAttention on the same normalised crop', async () => {
    const out = join(dir, 'attn-maps-32');
    const image = join(imgDir, 'img2.png'); // 32x32: the 32 px resize is the identity
    const r = await webdino('attention', '--weights', weights, '--image', image, '--out', out, '--image-size', '32', '--threshold', '0.5');
    expect(r.code, r.err).toBe(0);
    const wd = await getEngine();
    const img = decodeImage(new Uint8Array(readFileSync(image)));
    const x = await wd.scope(async () => evalTransform(wd, [img], { crop: 32, resize: 1 }).toArray());
    expectClose(npy(join(out, 'attention.npy')).data, (await reference(x, [1, 3, 32, 32])).attn, 1e-5, 1e-6, 'attention');
  });

  it('fails with one message on an image that is not an image, writing nothing', async () => {
    const bad = join(dir, 'bad.jpg');
    writeFileSync(bad, 'hello');
    const out = join(dir, 'attn-bad');
    const r = await webdino('attention', '--weights', weights, '--image', bad, '--out', out);
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/^webdino attention: .*bad\.jpg: not a JPEG or PNG image/);
    expect(existsSync(out)).toBe(false);
  });
});

describe('attention maps (DINO th_attn)', () => {
  it('keeps the largest patches until their mass reaches the threshold (hand-computed)', () => {
    // Head 0: ascending 0.1(0) 0.2(2) 0.3(3) 0.4(1); cumsum 0.1 0.3 0.6 1.0; > 0.4 → idx 3, 1.
    // Head 1 (unnormalised, sum 8): ascending 1(3) 1(0) 2(2) 4(1) → 1/8 2/8 4/8 8/8; > 0.4 → idx 2, 1.
    const attn = [0.1, 0.4, 0.2, 0.3, 1, 4, 2, 1];
    expect(Array.from(attentionMasks(attn, 2, 0.6))).toEqual([0, 1, 0, 1, 0, 1, 1, 0]);
    const mass = maskedMass(attn, attentionMasks(attn, 2, 0.6), 2);
    expect(mass[0]).toBeCloseTo(0.7, 12);
    expect(mass[1]).toBe(0.75);
    // Threshold 0.3: cumsum > 0.7 → only the largest; 1: everything; 0: nothing.
    expect(Array.from(attentionMasks(attn, 2, 0.3))).toEqual([0, 1, 0, 0, 0, 1, 0, 0]);
    // Strictly greater: at 0.75, head 1's cumsum 2/8 equals 1 − 0.75 exactly and is not kept.
    expect(Array.from(attentionMasks([1, 4, 2, 1], 1, 0.75))).toEqual([0, 1, 1, 0]);
    expect(Array.from(attentionMasks(attn, 2, 1))).toEqual([1, 1, 1, 1, 1, 1, 1, 1]);
    expect(Array.from(attentionMasks(attn, 2, 0))).toEqual([0, 0, 0, 0, 0, 0, 0, 0]);
    // Uniform attention over 5 patches at 0.6: cumsum 0.2 .. 1.0, > 0.4 keeps the 3 last in the
    // stable ascending order (the highest indices).
    expect(Array.from(attentionMasks([1, 1, 1, 1, 1], 1, 0.6))).toEqual([0, 0, 1, 1, 1]);
    expect(() => attentionMasks([1, 2, 3], 2)).toThrow(RangeError);
  });

  it('helpers: jaccard, heat map colours, nearest upsampling', () => {
    expect(jaccard([1, 1, 0, 0], [1, 0, 1, 0])).toBeCloseTo(1 / 3);
    expect(jaccard([0, 0], [0, 0])).toBe(1);
    expect(viridis(0)).toEqual([0x44, 0x01, 0x54]);
    expect(viridis(1)).toEqual([0xfd, 0xe7, 0x25]);
    expect(viridis(0.5)).toEqual([0x21, 0x90, 0x8c]);
    const heat = heatmapRgb([2, 4, 3, 2], 2, 2);
    expect(Array.from(heat.subarray(0, 3))).toEqual(viridis(0));
    expect(Array.from(heat.subarray(3, 6))).toEqual(viridis(1));
    expect(Array.from(heat.subarray(6, 9))).toEqual(viridis(0.5));
    const up = upsampleNearest(Uint8Array.from([1, 2, 3, 4]), 2, 2, 1, 2);
    expect(Array.from(up)).toEqual([1, 1, 2, 2, 1, 1, 2, 2, 3, 3, 4, 4, 3, 3, 4, 4]);
  });
});

describe('webdino eval knn', () => {
  it('prints top-1 and top-5 per k, equal to knnClassify on the same features', async () => {
    const r = await webdino('eval', 'knn', '--weights', weights, '--train-limit', '40', '--val-limit', '20', '--k', '1,5', '--image-size', '32');
    expect(r.code, r.err).toBe(0);
    const { SyntheticShapes } = await import('../../train/data/synthetic.js');
    const { firstN } = await import('../../train/eval-hooks-node.js');
    const { datasetFeatures } = await import('../../eval/features.js');
    const { knnClassify } = await import('../../eval/knn.js');
    const wd = await getEngine();
    const tr = await datasetFeatures(wd, model, firstN(new SyntheticShapes({ split: 'train' }), 40), { crop: 32 });
    const va = await datasetFeatures(wd, model, firstN(new SyntheticShapes({ split: 'val' }), 20), { crop: 32 });
    const want = await knnClassify({ trainFeatures: tr.features, trainLabels: tr.labels, testFeatures: va.features, testLabels: va.labels, numClasses: 10, ks: [1, 5] });
    tr.features.dispose();
    va.features.dispose();
    for (const w of want) expect(r.out).toContain(`k=${w.k}: top-1 ${w.top1.toFixed(2)} %, top-5 ${w.top5.toFixed(2)} %`);
  });

  it('a k larger than the training set is a usage error', async () => {
    const r = await webdino('eval', 'knn', '--weights', weights, '--train-limit', '10', '--k', '20');
    expect(r.code).toBe(2);
    expect(r.err).toMatch(/every k exceeds the 10 training images/);
  });
});
