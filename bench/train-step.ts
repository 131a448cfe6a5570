/**
 * The DINO training step as a benchmark case (`webdino bench --only train`): one
 * `DinoTrainer.step` on fixed random crops (augmentation excluded: it is timed by its own kernels),
 * at the CPU default config (f32, and mixed precision f16 where the adapter has shader-f16) and at
 * ViT-S/16. A mixed-precision step repeated on the same crops may be a skipped one (gradient
 * overflow at the initial loss scale: no AdamW or EMA), which is a little cheaper.
 *
 * What a row reports
 * - ms: the median wall time of a step (the step reads the loss back once, so the GPU idles during
 *   that round trip and wall time, not the GPU bracket, is what a user waits for); images/s =
 *   batch / that time.
 * - GFLOP/s: the step's useful flop (below) per wall second; compare with the matmul rows.
 * - details, from one more untimed step: dispatches and buffer copies recorded, bytes handed out by
 *   the buffer pool (every intermediate tensor, reuses included), the pool's peak (live + pooled
 *   bytes), and the per-kernel GPU time of a profiled step (each dispatch in its own timestamped
 *   pass, so the total exceeds an unprofiled step's).
 *
 * Flop model (multiply-add = 2, softmax/normalisation/elementwise not counted), per image:
 *   ViT forward at N tokens (N = 1 + (S/p)²), width D, depth L, MLP 4D:
 *     patch embedding 2·(N − 1)·3p²·D + L·(24·N·D² + 4·N²·D)
 *   head forward: 2·(D·h + h·h + h·b + b·K) per crop (3-layer MLP and the last layer)
 *   step = 3 × student forward (forward + backward) over all crops + teacher forward on the 2 globals.
 */
import type { Engine } from '../engine/engine.js';
import { CPU_DEFAULT_CONFIG, DinoTrainer, resolveConfig, type TrainConfig } from '../train/trainer.js';
import type { BenchCase, BenchDetails } from './suite.js';

/** Flop of one crop through the backbone and head (forward). */
function cropFlops(c: TrainConfig, size: number): number {
  const D = c.embedDim;
  const patches = Math.floor(size / c.patchSize) ** 2;
  const N = patches + 1;
  const embed = 2 * patches * 3 * c.patchSize * c.patchSize * D;
  const blocks = c.depth * (24 * N * D * D + 4 * N * N * D);
  const h = c.headHidden;
  const b = c.headBottleneck;
  const head = 2 * (D * h + h * h + h * b + b * c.outDim);
  return embed + blocks + head;
}

/** Flop of one DINO step at `c` (see the header). */
export function dinoStepFlops(c: TrainConfig): number {
  const g = cropFlops(c, c.globalSize);
  const l = cropFlops(c, c.localSize);
  const student = 2 * g + c.localCrops * l;
  const teacher = 2 * g;
  return c.batchSize * (3 * student + teacher);
}

/** A named step configuration of the suite. */
export interface StepConfig {
  label: string;
  config: Partial<TrainConfig>;
}

/** The suite's step configurations: the CPU default and ViT-S/16 (or a tiny one for quick runs). */
export function stepConfigs(quick: boolean): StepConfig[] {
  if (quick) {
    return [
      {
        label: 'tiny ViT d32 L1 p8, 2x16+2x8 px, B2',
        config: { ...CPU_DEFAULT_CONFIG, embedDim: 32, depth: 1, numHeads: 2, globalSize: 16, localSize: 8, localCrops: 2, batchSize: 2, outDim: 64, headHidden: 64, headBottleneck: 32 },
      },
    ];
  }
  return [
    { label: 'CPU default: d64 L4 p8, 2x32+6x16 px, B32', config: { ...CPU_DEFAULT_CONFIG } },
    // Mixed precision (--precision f16): on lavapipe ~1.7x slower than f32 (bench/RESULTS.md).
    { label: 'CPU default, --precision f16 (mixed)', config: { ...CPU_DEFAULT_CONFIG, precision: 'f16' } },
    { label: 'ViT-S/16, 2x224+8x96 px, B8', config: { arch: 'vit_small', batchSize: 8 } },
  ];
}

/** Random crops for a config: globals (2B, 3, G, G), locals (nB, 3, L, L) or null. */
function makeCrops(wd: Engine, c: TrainConfig): { globals: ReturnType<Engine['randn']>; locals: ReturnType<Engine['randn']> | null } {
  const B = c.batchSize;
  const globals = wd.randn([2 * B, 3, c.globalSize, c.globalSize], { seed: 11 });
  const locals = c.localCrops > 0 ? wd.randn([c.localCrops * B, 3, c.localSize, c.localSize], { seed: 12 }) : null;
  return { globals, locals };
}

/** Megabytes with one decimal. */
const mb = (bytes: number): string => `${(bytes / 2 ** 20).toFixed(1)} MiB`;

/** The DINO-step case of one configuration. */
export function trainStepCase(s: StepConfig): BenchCase {
  const c = resolveConfig(s.config);
  return {
    kernel: 'train',
    pass: 'step',
    shape: s.label,
    flops: dinoStepFlops(c),
    images: c.batchSize,
    timing: 'wall',
    setup(wd) {
      if (c.precision === 'f16' && !wd.device.features.shaderF16) throw new Error(`not implemented on ${wd.device.adapterName()}: mixed precision needs shader-f16`);
      const trainer = new DinoTrainer(wd, c);
      trainer.setItersPerEpoch(1_000_000);
      const { globals, locals } = makeCrops(wd, c);
      const step = () => trainer.step(globals, locals);
      const details = async (): Promise<BenchDetails> => {
        const dev = wd.device;
        await dev.sync();
        const d0 = dev.stats.dispatches;
        const c0 = dev.stats.copies;
        const s0 = dev.stats.submits;
        const a0 = wd.pool.stats.acquiredBytes;
        const n0 = wd.pool.stats.acquired;
        wd.pool.resetPeak();
        await wd.scope(step);
        await dev.sync();
        const fields = {
          dispatches: dev.stats.dispatches - d0,
          copies: dev.stats.copies - c0,
          submits: dev.stats.submits - s0,
          allocations: wd.pool.stats.acquired - n0,
          allocatedBytes: wd.pool.stats.acquiredBytes - a0,
          peakBytes: wd.pool.stats.peakBytes,
        };
        const lines = [
          `  per step: ${fields.dispatches} dispatches, ${fields.copies} buffer copies, ${fields.submits} submits; ` +
            `${fields.allocations} tensors allocated (${mb(fields.allocatedBytes)}); peak pool ${mb(fields.peakBytes)}`,
        ];
        if (dev.features.timestampQuery) {
          dev.startProfile();
          await wd.scope(step);
          const prof = await dev.stopProfile();
          const total = prof.reduce((a, p) => a + p.ms, 0);
          lines.push(`  GPU profile of one step (${total.toFixed(1)} ms in ${prof.reduce((a, p) => a + p.count, 0)} timed dispatches):`);
          for (const p of prof.slice(0, 14)) {
            lines.push(`    ${p.kernel.padEnd(34)} ${p.ms.toFixed(2).padStart(9)} ms ${((100 * p.ms) / total).toFixed(1).padStart(5)} % ${String(p.count).padStart(5)}×`);
          }
          const rest = prof.slice(14);
          if (rest.length) {
            const ms = rest.reduce((a, p) => a + p.ms, 0);
            lines.push(`    ${`(${rest.length} more kernels)`.padEnd(34)} ${ms.toFixed(2).padStart(9)} ms ${((100 * ms) / total).toFixed(1).padStart(5)} %`);
          }
          Object.assign(fields, { profile: prof });
        }
        return { fields, lines };
      };
      return { run: step, details, dispose: () => trainer.dispose() };
    },
  };
}
