/**
 * Dynamic loss scaling (as PyTorch's GradScaler): the building block of mixed-precision training,
 * where gradients of f16 activations underflow unless the loss is multiplied up first.
 *
 * One step, in DINO's loop order:
 *   loss' = scaleLoss(loss)             loss · S
 *   loss'.backward()                    gradients · S (in the f32 parameter arena's .grad)
 *   r = await unscale(arena)            gradients gathered and divided by S in place, then one
 *                                       readback of the global gradient norm: finite or not
 *   if r.step: clip, optimizer step, EMA ...   else: the step is skipped (gradients dropped)
 * and the scale follows the outcome: an overflow (a non-finite norm) halves S (backoff) and
 * restarts the count; `growthInterval` finite steps in a row double it (growth). S is a power of
 * two whenever the initial scale and the factors are, so scaling and unscaling are exact in f32
 * (barring overflow, which is what the check catches).
 *
 * Invariants: after `unscale` the arena's gathered gradients are the true (unscaled) gradients,
 * or, on overflow, zeroed and marked consumed, so an optimizer step cannot use them by mistake.
 * One host readback per step (the norm), none per parameter.
 */
import * as ops from './ops/index.js';
import { gradNorms, type ParamArena, totalNorm } from './optim.js';
import type { Tensor } from './tensor.js';

export interface LossScalerOptions {
  /** Initial scale (default 2¹⁶, as torch.cuda.amp.GradScaler). */
  initScale?: number;
  /** Multiplier after `growthInterval` finite steps in a row (default 2). */
  growthFactor?: number;
  /** Multiplier after an overflow (default 0.5). */
  backoffFactor?: number;
  /** Finite steps in a row before the scale grows (default 2000). */
  growthInterval?: number;
  /** The scale never goes below this (default 1: below it f16 gradients only lose range). */
  minScale?: number;
}

/** What `unscale` found. */
export interface UnscaleResult {
  /** The gradients are finite: take the optimizer step. */
  step: boolean;
  /** The scale the gradients were computed with. */
  scale: number;
  /** The global gradient norm after unscaling (non-finite on overflow). */
  gradNorm: number;
}

export class DynamicLossScaler {
  scale: number;
  /** Finite steps since the last overflow or growth. */
  goodSteps = 0;
  /** Steps skipped for overflow so far (for the log). */
  skippedSteps = 0;
  private readonly o: Required<LossScalerOptions>;

  constructor(opts: LossScalerOptions = {}) {
    this.o = { initScale: 2 ** 16, growthFactor: 2, backoffFactor: 0.5, growthInterval: 2000, minScale: 1, ...opts };
    if (!(this.o.initScale > 0) || !(this.o.growthFactor >= 1) || !(this.o.backoffFactor > 0 && this.o.backoffFactor < 1)) {
      throw new RangeError(`DynamicLossScaler: need initScale > 0, growthFactor ≥ 1, 0 < backoffFactor < 1 (got ${JSON.stringify(opts)})`);
    }
    this.scale = this.o.initScale;
  }

  /** loss · scale (differentiable: its gradients are the true ones times the scale). */
  scaleLoss(loss: Tensor): Tensor {
    return ops.mul(loss, this.scale);
  }

  /**
   * Gathers the arena's gradients, divides them by the scale in place, checks their global norm
   * (one readback) and updates the scale (see the file header). On overflow the gradients are
   * zeroed and dropped: the caller skips the optimizer step.
   */
  async unscale(arena: ParamArena): Promise<UnscaleResult> {
    const e = arena.engine;
    const scale = this.scale;
    arena.ensureGathered();
    const norm = await e.noGrad(() =>
      e.scope(async () => {
        arena.chunkViews().forEach((_, i) => {
          const g = arena.gradBuffer(i);
          ops.copyInto(g, ops.mul(g, 1 / scale));
        });
        return totalNorm(gradNorms(arena)).item();
      }),
    );
    const step = Number.isFinite(norm);
    if (step) {
      if (++this.goodSteps >= this.o.growthInterval) {
        this.scale *= this.o.growthFactor;
        this.goodSteps = 0;
      }
    } else {
      this.scale = Math.max(this.scale * this.o.backoffFactor, this.o.minScale);
      this.goodSteps = 0;
      this.skippedSteps++;
      arena.zeroGrad();
      arena.chunkViews().forEach((_, i) => ops.fill(arena.gradBuffer(i), 0));
      arena.consumeGrads();
    }
    return { step, scale, gradNorm: norm };
  }

  /** The scaler's state, for checkpoints. */
  state(): { scale: number; goodSteps: number; skippedSteps: number } {
    return { scale: this.scale, goodSteps: this.goodSteps, skippedSteps: this.skippedSteps };
  }

  loadState(s: { scale: number; goodSteps: number; skippedSteps?: number }): void {
    this.scale = s.scale;
    this.goodSteps = s.goodSteps;
    this.skippedSteps = s.skippedSteps ?? 0;
  }
}
