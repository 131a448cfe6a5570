/**
 * Reliability sweep, evaluation side: F18 (NaN/Inf weights or NaN .npy input gave all-NaN features
 * written with exit status 0) and F23 (k-NN between folders whose class names differ scored labels
 * of different classes against each other, reporting 0.00 % without a word).
 */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { buildBackbone, parseBackboneWeights } from '../../models/backbone.js';
import { writeNpy } from '../../models/io/npy.js';
import { writeSafetensors } from '../../models/io/safetensors.js';
import { openEmbedInput } from '../../eval/embed-node.js';
import { alignClasses, type Dataset, type Sample } from '../../train/data/dataset.js';
import { DinoTrainer } from '../../train/trainer.js';
import { getEngine } from '../helpers.js';

function labelled(classNames: string[], labels: number[]): Dataset {
  const image = { width: 1, height: 1, data: new Uint8Array(3) };
  return { numClasses: classNames.length, classNames, length: labels.length, get: async (i: number): Promise<Sample> => ({ image, label: labels[i] }) };
}

describe('F18: non-finite weights and inputs', () => {
  it('weights holding NaN or Inf are refused at load, naming the tensors', async () => {
    const wd = await getEngine();
    const tr = new DinoTrainer(wd, { arch: 'custom', embedDim: 8, depth: 1, numHeads: 2, patchSize: 4, outDim: 16, headHidden: 16, headBottleneck: 8, globalSize: 8, localSize: 4, localCrops: 0 });
    const sd = await tr.teacherBackbone.stateDict();
    tr.dispose();
    sd.get('blocks.0.attn.qkv.weight')!.data[5] = NaN;
    sd.get('norm.bias')!.data[0] = Infinity;
    const weights = parseBackboneWeights(writeSafetensors(Object.fromEntries(sd), {}));
    expect(() => buildBackbone(wd, weights, { arch: 'custom', embedDim: 8, depth: 1, numHeads: 2, patchSize: 4 }, 'nan.safetensors')).toThrow(
      /nan\.safetensors: the weights hold NaN or infinite values in 2 tensors: blocks\.0\.attn\.qkv\.weight \(1 of 192\), norm\.bias \(1 of 8\)/,
    );
  });

  it('an .npy input holding NaN is refused before any forward', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'webdino-nan-'));
    const x = new Float32Array(2 * 3 * 4 * 4);
    x[3 * 16 + 7] = NaN;
    writeFileSync(join(dir, 'x.npy'), writeNpy({ shape: [2, 3, 4, 4], data: x }));
    await expect(openEmbedInput(join(dir, 'x.npy'))).rejects.toThrow(/element 55 is NaN \(image 1\): the array must hold finite pixels/);
  });
});

describe('F23: evaluated and training folders with different classes', () => {
  it('labels are renumbered by class name; an unknown class is an error', async () => {
    const train = labelled(['a', 'b', 'c'], [0, 1, 2]);
    const same = labelled(['a', 'b', 'c'], [2, 1]);
    expect(alignClasses(train, same)).toBe(same);
    const val = labelled(['b', 'c'], [0, 1, 1]); // a val folder without class a
    const aligned = alignClasses(train, val);
    expect(await Promise.all([0, 1, 2].map(async (i) => (await aligned.get(i)).label))).toEqual([1, 2, 2]);
    expect(aligned.classNames).toEqual(['a', 'b', 'c']);
    expect(() => alignClasses(train, labelled(['b', 'd'], [0]))).toThrow(/classes the training images do not: d \(training classes: a, b, c\)/);
  });
});

describe('F10: attention maps at sizes whose full attention exceeds a storage binding', () => {
  it('the CLS row is computed on its own (equal to row 0 of the full matrix), and asking for the full matrix is a clear error', async () => {
    const { VisionTransformer, vitConfig } = await import('../../models/vit.js');
    const { Rng } = await import('../../engine/random.js');
    const { computeAttentionMaps } = await import('../../eval/embed.js');
    const wd = await getEngine();
    const model = new VisionTransformer({ engine: wd, rng: new Rng(1) }, vitConfig({ embedDim: 8, depth: 1, numHeads: 2 }, { patchSize: 8, imgSize: 32 }));
    model.eval();
    try {
      // Small input: the CLS row equals row 0 of the full probabilities.
      const x = wd.randn([2, 3, 40, 24], { seed: 3 });
      const cls = await model.lastClsAttention(x).toArray();
      const full = model.lastSelfAttention(x); // (2, 2, 16, 16)
      const row0 = await full.slice(2, 0, 1).contiguous().toArray();
      for (let i = 0; i < row0.length; i++) expect(Math.abs(cls[i] - row0[i])).toBeLessThan(1e-6);
      // 520 px, patch 8: N = 4226; the full probabilities of 2 heads would be 143 MB (> 128 MiB).
      const img = { width: 520, height: 520, data: new Uint8Array(520 * 520 * 3).map((_, i) => (i * 37) % 251) };
      const maps = await computeAttentionMaps(wd, model, img, 520);
      expect([maps.heads, maps.h, maps.w]).toEqual([2, 65, 65]);
      const sums = [0, 0];
      for (let hd = 0; hd < 2; hd++) for (let i = 0; i < 65 * 65; i++) sums[hd] += maps.attention[hd * 65 * 65 + i];
      for (const s of sums) expect(s).toBeGreaterThan(0.5); // CLS → patches (the CLS column itself is dropped)
      const big = wd.randn([1, 3, 520, 520], { seed: 4 });
      expect(() => model.lastSelfAttention(big)).toThrow(/probabilities of 2 heads × 4226×4226 would take \d+ bytes, over the device's \d+-byte storage binding limit/);
    } finally {
      model.dispose();
    }
  }, 120_000);
});
