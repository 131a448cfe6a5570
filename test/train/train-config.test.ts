/**
 * `webdino train`'s options → TrainConfig: the small CPU recipe by default, DINO's own recipe for a
 * named ViT, the user's options on top of either.
 */
import { describe, expect, it } from 'vitest';
import { trainConfig } from '../../bin/commands/train.js';
import { CPU_DEFAULT_CONFIG, DINO_DEFAULTS, resolveConfig } from '../../train/trainer.js';

describe('webdino train options', () => {
  it('no options: the CPU default (teacher 0.02, no brightness/contrast jitter, patch 8)', () => {
    const c = trainConfig({});
    expect(c).toEqual(CPU_DEFAULT_CONFIG);
    const r = resolveConfig(c);
    expect([r.arch, r.embedDim, r.patchSize, r.teacherTemp, r.warmupTeacherTemp]).toEqual(['custom', 64, 8, 0.02, 0.02]);
    expect(r.augment).toEqual({ brightness: 0, contrast: 0 });
    // Targets that neither flatten nor collapse on real images, and a run length independent of the data.
    expect([r.useBnInHead, r.centering, r.outDim, r.epochLength, r.epochs]).toEqual([true, 'sinkhorn_knopp', 64, 156, 5]);
  });

  it("a named ViT brings DINO's recipe, not the CPU departures", () => {
    const r = resolveConfig(trainConfig({ arch: 'vit_tiny' }));
    expect([r.arch, r.embedDim, r.depth, r.numHeads, r.patchSize]).toEqual(['vit_tiny', 192, 12, 3, 16]);
    expect([r.outDim, r.teacherTemp, r.warmupTeacherTemp, r.momentumTeacher, r.globalSize, r.localSize]).toEqual([
      DINO_DEFAULTS.outDim, 0.04, 0.04, 0.996, 224, 96,
    ]);
    expect(r.augment).toEqual({});
    expect([r.useBnInHead, r.centering, r.epochLength]).toEqual([false, 'center', 0]);
  });

  it('options apply on top of either base', () => {
    const a = resolveConfig(trainConfig({ arch: 'vit_small', 'teacher-temp': '0.07', 'warmup-teacher-temp': '0.04', 'patch-size': '8' }));
    expect([a.teacherTemp, a.warmupTeacherTemp, a.patchSize]).toEqual([0.07, 0.04, 8]);
    const b = resolveConfig(trainConfig({ arch: 'custom', 'embed-dim': '32', heads: '2', epochs: '3' }));
    expect([b.embedDim, b.numHeads, b.epochs, b.teacherTemp]).toEqual([32, 2, 3, 0.02]);
    expect(() => trainConfig({ arch: 'vit_huge' })).toThrow(/--arch must be one of/);
    expect(() => trainConfig({ arch: 'vit_small', depth: '3' })).toThrow(/need --arch custom/);
  });
});
