/**
 * `webdino train`'s options → TrainConfig: the small CPU recipe by default, DINO's own recipe for a
 * named ViT, the user's options on top of either; options are parsed from a command line as the CLI
 * does (bin/options.ts), so defaults come from their one declaration.
 */
import { describe, expect, it } from 'vitest';
import { checkResumeOptions, train, trainConfig } from '../../bin/commands/train.js';
import { parseOptions } from '../../bin/options.js';
import { CPU_DEFAULT_CONFIG, DINO_DEFAULTS, resolveConfig } from '../../train/trainer.js';

const parse = (...args: string[]) => parseOptions(train.options, args, '/work');

describe('webdino train options', () => {
  it('no options: the CPU default (teacher 0.02, no brightness/contrast jitter, patch 8)', () => {
    const c = trainConfig(parse());
    expect(c).toEqual(CPU_DEFAULT_CONFIG);
    const r = resolveConfig(c);
    expect([r.arch, r.embedDim, r.patchSize, r.teacherTemp, r.warmupTeacherTemp]).toEqual(['custom', 64, 8, 0.02, 0.02]);
    expect(r.augment).toEqual({ brightness: 0, contrast: 0 });
    // Targets that neither flatten nor collapse on real images, and a run length independent of the data.
    expect([r.useBnInHead, r.centering, r.outDim, r.epochLength, r.epochs]).toEqual([true, 'sinkhorn_knopp', 64, 156, 5]);
  });

  it("a named ViT brings DINO's recipe, not the CPU departures", () => {
    const r = resolveConfig(trainConfig(parse('--arch', 'vit_tiny')));
    expect([r.arch, r.embedDim, r.depth, r.numHeads, r.patchSize]).toEqual(['vit_tiny', 192, 12, 3, 16]);
    expect([r.outDim, r.teacherTemp, r.warmupTeacherTemp, r.momentumTeacher, r.globalSize, r.localSize]).toEqual([
      DINO_DEFAULTS.outDim, 0.04, 0.04, 0.996, 224, 96,
    ]);
    expect(r.augment).toEqual({});
    expect([r.useBnInHead, r.centering, r.epochLength]).toEqual([false, 'center', 0]);
  });

  it('options apply on top of either base', () => {
    const a = resolveConfig(trainConfig(parse('--arch', 'vit_small', '--teacher-temp', '0.07', '--warmup-teacher-temp', '0.04', '--patch-size', '8')));
    expect([a.teacherTemp, a.warmupTeacherTemp, a.patchSize]).toEqual([0.07, 0.04, 8]);
    const b = resolveConfig(trainConfig(parse('--arch', 'custom', '--embed-dim', '32', '--heads', '2', '--epochs', '3')));
    expect([b.embedDim, b.numHeads, b.epochs, b.teacherTemp]).toEqual([32, 2, 3, 0.02]);
    expect(() => parse('--arch', 'vit_huge')).toThrow(/--arch must be one of/);
    expect(() => trainConfig(parse('--arch', 'vit_small', '--depth', '3'))).toThrow(/need --arch custom/);
  });

  it('--help prints the defaults the parser applies (one declaration)', () => {
    const lines = Object.entries(train.options).map(([name, spec]) => [name, 'derived' in spec ? spec.derived : undefined] as const);
    const derived = Object.fromEntries(lines);
    // The recipe defaults shown are the resolved CPU recipe's, and DINO's where a named ViT differs.
    expect(derived['teacher-temp']).toBe("0.02; with a named --arch, DINO's 0.04");
    expect(derived['batch-size']).toBe(`${CPU_DEFAULT_CONFIG.batchSize}; with a named --arch, DINO's ${DINO_DEFAULTS.batchSize}`);
    expect(parse()['checkpoint-every']).toBe(100);
    expect(parse().out).toBe('/work/runs/dino');
  });

  it('--resume: a given option that differs from the run is refused, a longer --epochs is stated', () => {
    const recorded = resolveConfig(CPU_DEFAULT_CONFIG);
    expect(checkResumeOptions(parse(), recorded, 156)).toEqual([]);
    expect(checkResumeOptions(parse('--lr', String(recorded.lr), '--seed', String(recorded.seed)), recorded, 156)).toEqual([]);
    expect(() => checkResumeOptions(parse('--batch-size', '16', '--lr', '0.5', '--embed-dim', '64'), recorded, 156)).toThrow(
      /--batch-size 16 \(the run has 32\), --lr 0\.5 \(the run has 0\.004\)/,
    );
    expect(() => checkResumeOptions(parse('--arch', 'vit_tiny'), recorded, 156)).toThrow(/--arch vit_tiny \(the run has custom\)/);
    expect(() => checkResumeOptions(parse('--epochs', '3'), recorded, 156)).toThrow(/--epochs 3 \(the run has 5\)/);
    expect(checkResumeOptions(parse('--epochs', '10'), recorded, 156)).toEqual([
      '--epochs 10: the run is extended from 5 to 10 epochs; its cosine schedules now end at iteration 1560 instead of 780',
    ]);
  });
});
