/**
 * `webdino train`'s options → TrainConfig: the small CPU recipe by default, DINO's own recipe for a
 * named ViT, the user's options on top of either; options are parsed from a command line as the CLI
 * does (bin/options.ts), so defaults come from their one declaration. `--recipe dinov2` likewise
 * gives DinoV2Config: its CPU default, ssl_default_config for a named ViT, shared and DINOv2-only
 * options on top (nested fields keep their other half), DINOv2 options refused without it.
 */
import { describe, expect, it } from 'vitest';
import { checkResumeOptions, recipeConfig, train, trainConfig } from '../../bin/commands/train.js';
import { DINOV2_CPU_DEFAULT_CONFIG, DINOV2_DEFAULTS, resolveDinoV2Config } from '../../train/dinov2-trainer.js';
import { parseOptions } from '../../bin/options.js';
import { CPU_DEFAULT_CONFIG, cpuDefaultConfig, DINO_DEFAULTS, resolveConfig } from '../../train/trainer.js';

const parse = (...args: string[]) => parseOptions(train.options, args, '/work');

describe('webdino train options', () => {
  it('no options: the CPU default (teacher 0.02, no brightness/contrast jitter, no KoLeo, patch 8)', () => {
    const c = trainConfig(parse());
    expect(c).toEqual(CPU_DEFAULT_CONFIG);
    const r = resolveConfig(c);
    expect([r.arch, r.embedDim, r.patchSize, r.teacherTemp, r.warmupTeacherTemp]).toEqual(['custom', 64, 8, 0.02, 0.02]);
    expect(r.augment).toEqual({ brightness: 0, contrast: 0 });
    expect(r.koleoWeight).toBe(0);
    // Targets that neither flatten nor collapse on real images, and a run length independent of the data.
    expect([r.useBnInHead, r.centering, r.outDim, r.epochLength, r.epochs]).toEqual([true, 'sinkhorn_knopp', 64, 156, 5]);
  });

  it('grey training images: the CPU default adds brightness/contrast jitter, a blur sized to 32 px crops and KoLeo 0.5, nothing else', () => {
    const grey = resolveConfig(trainConfig(parse(), { grey: true }));
    expect(grey.augment).toEqual({ brightness: 0.4, contrast: 0.4, blurSigma: [0.1, 0.5] });
    expect(grey.koleoWeight).toBe(0.5);
    const colour = resolveConfig(trainConfig(parse()));
    expect({ ...grey, augment: colour.augment, koleoWeight: colour.koleoWeight }).toEqual(colour);
    expect(trainConfig(parse(), { grey: true })).toEqual(cpuDefaultConfig(true));
    expect(cpuDefaultConfig(false)).toEqual(CPU_DEFAULT_CONFIG);
    // Options still apply on top; a named ViT keeps DINO's own recipe whatever the data.
    expect(resolveConfig(trainConfig(parse('--koleo-weight', '0.3'), { grey: true })).koleoWeight).toBe(0.3);
    expect(resolveConfig(trainConfig(parse('--arch', 'vit_tiny'), { grey: true })).augment).toEqual({});
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
    expect(derived['teacher-temp']).toBe("0.02; with a named --arch, DINO's 0.04; --recipe dinov2: 0.02, with a named --arch 0.07");
    expect(derived['epoch-length']).toBe("156; with a named --arch, DINO's 0; --recipe dinov2: one pass over the data, with a named --arch 1250");
    expect(derived['batch-size']).toBe(`${CPU_DEFAULT_CONFIG.batchSize}; with a named --arch, DINO's ${DINO_DEFAULTS.batchSize}`);
    expect(derived['koleo-weight']).toBe('0 (grey images: 0.5); --recipe dinov2: 0.1');
    expect(derived['ibot-head']).toBe("separate; with a named --arch, DINOv2's shared");
    expect(derived['out-dim']).toBe("64; with a named --arch, DINO's 65536");
    expect(derived.centering).toBe("sinkhorn_knopp; with a named --arch, DINO's center");
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
    // --koleo-weight is DINOv2's option that DINO's recipe takes too.
    expect(checkResumeOptions(parse('--koleo-weight', '0'), recorded, 156)).toEqual([]);
    expect(() => checkResumeOptions(parse('--koleo-weight', '0.5'), recorded, 156)).toThrow(/--koleo-weight 0\.5 \(the run has 0\)/);
  });

  it('--koleo-weight sets the KoLeo term of the DINO recipe (0, the default, leaves it out)', () => {
    expect(recipeConfig(parse('--koleo-weight', '0.5'))).toEqual({ recipe: 'dino', config: { ...CPU_DEFAULT_CONFIG, koleoWeight: 0.5 } });
    expect(resolveConfig(trainConfig(parse('--arch', 'vit_tiny', '--koleo-weight', '0.1'))).koleoWeight).toBe(0.1);
    expect(resolveConfig(trainConfig(parse('--arch', 'vit_tiny'))).koleoWeight).toBe(0);
  });

  it('--recipe dinov2: its CPU default, its named-ViT default, options on top; its options need it', () => {
    const cpu = recipeConfig(parse('--recipe', 'dinov2'));
    expect(cpu.recipe).toBe('dinov2');
    const r = resolveDinoV2Config({ ...cpu.config, epochLength: 156 });
    const want = resolveDinoV2Config({ ...DINOV2_CPU_DEFAULT_CONFIG, epochLength: 156 });
    expect(r).toEqual(want);
    expect([r.embedDim, r.depth, r.patchSize, r.globalSize, r.outDim, r.lossWeights.ibot, r.lossWeights.koleo]).toEqual([64, 4, 8, 32, 64, 1, 0.1]);
    // The CPU default's head: BatchNorm, Sinkhorn-Knopp with K = 64, a separate iBOT head of 64.
    expect([r.useBnInHead, r.centering, r.ibotSeparateHead, r.ibotOutDim]).toEqual([true, 'sinkhorn_knopp', true, 64]);
    expect((cpu.config as { epochLength?: number }).epochLength, "the data's epoch").toBeUndefined();
    const named = resolveDinoV2Config(recipeConfig(parse('--recipe', 'dinov2', '--arch', 'vit_small')).config);
    expect([named.patchSize, named.outDim, named.epochLength, named.teacherTemp, named.layerScale, named.dropPathRate]).toEqual([14, 65536, 1250, 0.07, 1e-5, 0.3]);
    expect([named.useBnInHead, named.centering, named.ibotSeparateHead, named.ibotOutDim]).toEqual([false, 'center', false, 65536]);
    expect(named.augment).toEqual(DINOV2_DEFAULTS.augment);
    const o = recipeConfig(
      parse('--recipe', 'dinov2', '--ibot-weight', '0.5', '--ibot-mask-ratio-max', '0.4', '--ibot-head', 'separate', '--drop-path-rule', 'linear', '--lr', '0.002', '--registers', '4', '--epoch-length', '100', '--layer-decay', '0.75'),
    ).config as Partial<import('../../train/dinov2-trainer.js').DinoV2Config>;
    const ro = resolveDinoV2Config(o);
    expect([ro.lossWeights.ibot, ro.lossWeights.koleo, ro.maskRatioMinMax, ro.ibotSeparateHead, ro.dropPathUniform, ro.baseLr, ro.numRegisterTokens, ro.epochLength, ro.layerwiseDecay]).toEqual([
      0.5, 0.1, [0.1, 0.4], true, false, 0.002, 4, 100, 0.75,
    ]);
    expect(() => recipeConfig(parse('--ibot-weight', '2', '--registers', '4'))).toThrow(/--ibot-weight, --registers belong to DINOv2's recipe: add --recipe dinov2/);
    expect(recipeConfig(parse()).config).toEqual(CPU_DEFAULT_CONFIG);
    // Resume checks read the DINOv2 fields, nested ones included.
    expect(checkResumeOptions(parse('--koleo-weight', '0.1', '--lr', String(r.baseLr)), r, 156, 'dinov2')).toEqual([]);
    // --epoch-length 0 is one pass over the data: no epochLength in the config (the run records the data's).
    expect((recipeConfig(parse('--recipe', 'dinov2', '--epoch-length', '0')).config as { epochLength?: number }).epochLength).toBeUndefined();
    expect(checkResumeOptions(parse('--epoch-length', '0'), r, 156, 'dinov2')).toEqual([]);
    expect(() => checkResumeOptions(parse('--epoch-length', '100'), r, 156, 'dinov2')).toThrow(/--epoch-length 100 \(the run has 156\)/);
    expect(() => checkResumeOptions(parse('--ibot-weight', '2', '--ibot-head', 'shared'), r, 156, 'dinov2')).toThrow(/--ibot-weight 2 \(the run has 1\), --ibot-head shared \(the run has separate\)/);
  });
});
