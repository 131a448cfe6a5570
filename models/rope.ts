/**
 * DINOv3's axial 2-D rotary position embedding (layers/rope_position_encoding.py), the module
 * `rope_embed` with its one buffer `periods` [d/4] (d = head dim). No learned position embedding:
 * the patch tokens' q and k are rotated in every block (engine/ops/rope.ts `ropePacked`).
 *
 *   periods P_j = base^(2j/(d/2)), j = 0 … d/4 − 1 (base 100); the loaded buffer's values are used
 *   coordinates of the patch centres, per axis normalised ("separate"), row-major over (h, w):
 *     y_r = 2(r + ½)/h − 1,  x_c = 2(c + ½)/w − 1                       both in [−1, 1]
 *   training only (each switch off when null, as in the released models' eval):
 *     shift:   (y, x) += (U(−s, s), U(−s, s))
 *     jitter:  (y, x) *= (e^U(−ln j, ln j), e^U(−ln j, ln j))
 *     rescale: (y, x) *= e^U(−ln r, ln r)                    one factor for both axes
 *   angles θ = 2π·[y/P_0 … y/P_{d/4−1}, x/P_0 … x/P_{d/4−1}], tiled twice → d channels
 *   tables sin θ, cos θ: (prefix + h·w, d), with the prefix rows (CLS, storage tokens) sin = 0,
 *   cos = 1, so the rotation leaves them unchanged (x·1 + y·0 = x exactly for finite y): the
 *   official "rotate the patch tokens only" without slicing the sequence.
 *
 * The official model calls rope_embed inside its block loop, so in training the augmentation is
 * redrawn for every block (and shared across the batch): `tables` draws anew on every call in
 * training mode with augmentation, and caches per grid otherwise.
 *
 * Angles are computed in float64 on the CPU and rounded once (the official code works in float32
 * for the released models); the tables are uploaded as constants, no gradient flows into them.
 */
import { Rng } from '../engine/random.js';
import type { Tensor } from '../engine/tensor.js';
import { ropePeriods } from './io/dino-arch.js';
import type { RopeTables } from '../engine/ops/index.js';
import { Module, type ModuleContext } from './nn.js';

export type { RopeTables };

/** RoPE settings (DINOv3's pos_embed_rope_*). */
export interface RopeConfig {
  /** Period base (100). */
  base: number;
  /** Training-time coordinate shift bound s, or null (off). */
  shiftCoords: number | null;
  /** Training-time per-axis log-uniform jitter bound j (> 1), or null (off). */
  jitterCoords: number | null;
  /** Training-time log-uniform rescale bound r (> 1; 2 in DINOv3's recipe), or null (off). */
  rescaleCoords: number | null;
}

export class RopePositionEmbedding extends Module {
  periods: Tensor;
  /** The buffer's values on the host (the angles are computed on the CPU). */
  private hostPeriods: Float32Array;
  /** Eval tables per `${prefix}:${h}x${w}` (kept tensors, freed on dispose or new periods). */
  private readonly cache = new Map<string, RopeTables>();

  constructor(ctx: ModuleContext, readonly headDim: number, readonly cfg: RopeConfig, private readonly rng: Rng) {
    super(ctx);
    this.hostPeriods = ropePeriods(headDim, cfg.base);
    this.periods = this.buffer('periods', [headDim / 4], () => Float32Array.from(this.hostPeriods));
  }

  protected override onReplace(name: string, t: Tensor): void {
    if (name === 'periods') this.periods = t;
  }

  /** The host copy of the periods after the buffer was loaded (VisionTransformer.loadStateDict). */
  setPeriods(values: Float32Array): void {
    if (values.length !== this.headDim / 4) throw new Error(`rope_embed.periods: ${values.length} values, expected ${this.headDim / 4}`);
    this.hostPeriods = Float32Array.from(values);
    this.releaseTables();
  }

  private get augments(): boolean {
    const c = this.cfg;
    return this.training && (c.shiftCoords !== null || c.jitterCoords !== null || c.rescaleCoords !== null);
  }

  /** sin/cos tables (prefix + h·w, d) for `prefix` unrotated tokens followed by an h×w grid. */
  tables(h: number, w: number, prefix: number): RopeTables {
    if (this.augments) return this.compute(h, w, prefix, false);
    const key = `${prefix}:${h}x${w}`;
    let t = this.cache.get(key);
    if (!t) {
      t = this.compute(h, w, prefix, true);
      this.cache.set(key, t);
    }
    return t;
  }

  /** Patch-centre coordinates (y, x) per token, augmented in training (see the file header). */
  private coords(h: number, w: number): Float64Array {
    const c = new Float64Array(h * w * 2);
    for (let r = 0; r < h; r++) {
      for (let q = 0; q < w; q++) {
        c[(r * w + q) * 2] = (2 * (r + 0.5)) / h - 1;
        c[(r * w + q) * 2 + 1] = (2 * (q + 0.5)) / w - 1;
      }
    }
    if (!this.training) return c;
    const { shiftCoords: s, jitterCoords: j, rescaleCoords: z } = this.cfg;
    const scale = [1, 1];
    const shift = [0, 0];
    if (s !== null) for (let a = 0; a < 2; a++) shift[a] = this.rng.range(-s, s);
    if (j !== null) for (let a = 0; a < 2; a++) scale[a] = Math.exp(this.rng.range(-Math.log(j), Math.log(j)));
    if (z !== null) {
      const f = Math.exp(this.rng.range(-Math.log(z), Math.log(z)));
      scale[0] *= f;
      scale[1] *= f;
    }
    // The official order: shift, then jitter, then rescale: ((c + shift)·jitter)·rescale.
    for (let i = 0; i < h * w; i++) for (let a = 0; a < 2; a++) c[i * 2 + a] = (c[i * 2 + a] + shift[a]) * scale[a];
    return c;
  }

  private compute(h: number, w: number, prefix: number, keep: boolean): RopeTables {
    const d = this.headDim;
    const q = d / 4;
    const n = prefix + h * w;
    const sin = new Float32Array(n * d);
    const cos = new Float32Array(n * d).fill(1, 0, prefix * d);
    const coords = this.coords(h, w);
    for (let i = 0; i < h * w; i++) {
      const row = (prefix + i) * d;
      for (let a = 0; a < 2; a++) {
        for (let k = 0; k < q; k++) {
          const theta = (2 * Math.PI * coords[i * 2 + a]) / this.hostPeriods[k];
          const s = Math.sin(theta);
          const co = Math.cos(theta);
          // channel a·d/4 + k, and its copy d/2 later (the tile ×2)
          for (const ch of [a * q + k, a * q + k + d / 2]) {
            sin[row + ch] = s;
            cos[row + ch] = co;
          }
        }
      }
    }
    const e = this.engine;
    const make = (data: Float32Array, label: string) => {
      const t = e.tensor(data, [n, d], { label });
      return keep ? e.keep(t) : t;
    };
    return { sin: make(sin, `rope_sin_${h}x${w}`), cos: make(cos, `rope_cos_${h}x${w}`) };
  }

  /** Frees the cached eval tables (they are recomputed on demand). */
  releaseTables(): void {
    for (const t of this.cache.values()) {
      t.sin.dispose();
      t.cos.dispose();
    }
    this.cache.clear();
  }

  override dispose(): void {
    super.dispose();
    this.releaseTables();
  }
}
