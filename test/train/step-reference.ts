/**
 * A float64 CPU reference of one whole DINO training step of a tiny ViT student/teacher, written
 * from the official formulas (main_dino.py, vision_transformer.py, utils.py), for
 * test/train/trainer.test.ts. Nothing here calls the engine; the only shared code is the 1-D
 * bicubic weights of models/interpolate.ts (a CPU function with its own tests), used for the
 * position-embedding resize of the local crops.
 *
 * Forward (per image, S×S, patch p, g = ⌊S/p⌋, N = 1 + g² tokens, D channels, H heads, d = D/H)
 *   patches  x_t = b + Σ_{c,i,j} W[o,c,i,j]·img[c, p·r + i, p·s + j]   (conv stride p = a matmul)
 *   tokens   [cls; x_1..x_g²] + pos, pos resized bicubically (scale (g + 0.1)/√N₀) when g² ≠ N₀
 *   block    x ← x + proj(attn(LN₁(x))),  x ← x + fc2(GELU(fc1(LN₂(x))))   LN eps 1e-6, biased var
 *            attn: per head softmax(q·kᵀ/√d)·v, q/k/v = the 3 thirds of qkv(x), head h at h·d..h·d+d−1
 *   output   LN(x_cls) (D)
 *   head     h = GELU(W₀x + b₀), h = GELU(W₂h + b₂), z = W₄h + b₄, ẑ = z / max(‖z‖, 1e-12)
 *            logits_k = ẑ · v_k / ‖v_k‖   (norm_last_layer: weight_g is fixed to 1)
 *   GELU     exact: ½x(1 + erf(x/√2))
 *
 * Loss (DINOLoss, V crops, rows crop-major):
 *   q_i = softmax((t_i − c)/τt) (i = the 2 global crops), log p_v = log_softmax(s_v/τs)
 *   L = mean over the 2(V − 1) pairs (i, v ≠ i) of mean_b −Σ_k q_i·log p_v
 *   + w·(KoLeo(f_g1) + KoLeo(f_g2)) with koleoWeight w > 0: the KoLeo loss (train/dinov2/koleo.ts
 *     koleoRef) of each global crop's B backbone CLS outputs
 *
 * Step (train_one_epoch order):
 *   g = ∂L/∂θ by Richardson-extrapolated central differences of the float64 loss,
 *   (4·D(h/2) − D(h))/3 with D(h) = (L(θ + h) − L(θ − h))/2h and h = 1e-5: truncation O(h⁴),
 *   rounding ~1e-16·L/h ≈ 1e-11. Plain central differences are not enough here: the head
 *   l2-normalises a bottleneck vector with ‖z‖ ≈ 1e-2 (trunc_normal(0.02) init), so L''' is large
 *   and D(1e-6) is off by 2e-5 of the gradient scale of head.mlp.4.bias (D(1e-5) by 2e-3).
 *   clip per tensor: c = clip/(‖g‖ + 1e-6), g ← c·g when c < 1      (utils.clip_gradients)
 *   epoch < freeze_last_layer: last_layer gradients become None      (no update, no decay, no step)
 *   AdamW (torch, decoupled): p ← p − lr·wd·p (not biases / 1-D), m ← β₁m + (1−β₁)g,
 *     v ← β₂v + (1−β₂)g², p ← p − lr·(m/(1−β₁ᵗ))/(√(v/(1−β₂ᵗ)) + ε), t = the tensor's own step count
 *   teacher ← m·teacher + (1 − m)·student     (every tensor)
 *   center ← cm·center + (1 − cm)·mean_rows(teacher outputs of this step)
 */
import { bicubicWeights1d } from '../../models/interpolate.js';
import { koleoRef } from '../../train/dinov2/koleo.js';

/** The architecture of the tiny model (the TrainConfig fields the forward needs). */
export interface RefModelConfig {
  embedDim: number;
  depth: number;
  numHeads: number;
  patchSize: number;
  /** Side of the global crops = the ViT's img_size (sets the stored pos_embed grid). */
  globalSize: number;
  outDim: number;
  headHidden: number;
  headBottleneck: number;
  /** MLP ratio of the blocks (4 in DINO). */
  mlpRatio?: number;
  /** LayerNorm epsilon (1e-6 in DINO). */
  eps?: number;
}

/** Named float64 tensors (official names with the MultiCropWrapper prefixes backbone./head.). */
export type RefParams = Map<string, { shape: number[]; data: Float64Array }>;

/** Deep copy of a parameter map. */
export function cloneParams(p: RefParams): RefParams {
  return new Map([...p].map(([k, v]) => [k, { shape: [...v.shape], data: Float64Array.from(v.data) }]));
}

// -------------------------------------------------------------------------------------------------
// Scalar functions

/**
 * erf in float64: the all-positive series erf(x) = 2/√π·e^{−x²}·Σ 2ⁿx^{2n+1}/(1·3·…·(2n+1)) (no
 * cancellation, ~1e-16 relative) for |x| < 6, ±1 beyond (erfc(6) ≈ 2e-17).
 */
export function erf(x: number): number {
  const ax = Math.abs(x);
  if (ax >= 6) return Math.sign(x);
  let term = ax;
  let sum = ax;
  for (let n = 1; n < 200; n++) {
    term *= (2 * ax * ax) / (2 * n + 1);
    sum += term;
    if (term < 1e-17 * sum) break;
  }
  return Math.sign(x) * (2 / Math.sqrt(Math.PI)) * Math.exp(-ax * ax) * sum;
}

/** Exact GELU: ½x(1 + erf(x/√2)). */
export function gelu(x: number): number {
  return 0.5 * x * (1 + erf(x / Math.SQRT2));
}

// -------------------------------------------------------------------------------------------------
// Layers on row-major float64 matrices

/** y[r, o] = b[o] + Σ_i x[r, i]·W[o, i] (PyTorch Linear layout), optional GELU. */
export function linear(x: Float64Array, rows: number, inDim: number, W: Float64Array, b: Float64Array | null, outDim: number, act = false): Float64Array {
  const y = new Float64Array(rows * outDim);
  for (let r = 0; r < rows; r++) {
    for (let o = 0; o < outDim; o++) {
      let s = b ? b[o] : 0;
      for (let i = 0; i < inDim; i++) s += x[r * inDim + i] * W[o * inDim + i];
      y[r * outDim + o] = act ? gelu(s) : s;
    }
  }
  return y;
}

/** LayerNorm over rows of D (biased variance, two passes). */
export function layerNorm(x: Float64Array, rows: number, D: number, w: Float64Array, b: Float64Array, eps: number): Float64Array {
  const y = new Float64Array(rows * D);
  for (let r = 0; r < rows; r++) {
    let mu = 0;
    for (let j = 0; j < D; j++) mu += x[r * D + j];
    mu /= D;
    let v = 0;
    for (let j = 0; j < D; j++) v += (x[r * D + j] - mu) ** 2;
    const rstd = 1 / Math.sqrt(v / D + eps);
    for (let j = 0; j < D; j++) y[r * D + j] = (x[r * D + j] - mu) * rstd * w[j] + b[j];
  }
  return y;
}

/** Multi-head self-attention of one image's tokens X (N, D); qkv/proj Linear layers. */
export function attention(X: Float64Array, N: number, D: number, H: number, p: (n: string) => Float64Array, pre: string): Float64Array {
  const qkv = linear(X, N, D, p(`${pre}qkv.weight`), p(`${pre}qkv.bias`), 3 * D); // (N, 3, H, d)
  const d = D / H;
  const scale = d ** -0.5;
  const merged = new Float64Array(N * D); // (N, H, d)
  const s = new Float64Array(N);
  for (let h = 0; h < H; h++) {
    for (let i = 0; i < N; i++) {
      let m = -Infinity;
      for (let j = 0; j < N; j++) {
        let dot = 0;
        for (let c = 0; c < d; c++) dot += qkv[i * 3 * D + h * d + c] * qkv[j * 3 * D + D + h * d + c];
        s[j] = dot * scale;
        m = Math.max(m, s[j]);
      }
      let z = 0;
      for (let j = 0; j < N; j++) z += (s[j] = Math.exp(s[j] - m));
      for (let c = 0; c < d; c++) {
        let acc = 0;
        for (let j = 0; j < N; j++) acc += s[j] * qkv[j * 3 * D + 2 * D + h * d + c];
        merged[i * D + h * d + c] = acc / z;
      }
    }
  }
  return linear(merged, N, D, p(`${pre}proj.weight`), p(`${pre}proj.bias`), D);
}

/** pos_embed rows for a g×g grid: stored ones, or the patch rows resized bicubically (DINO's +0.1). */
export function positionRows(pos: Float64Array, N0: number, g: number, D: number): Float64Array {
  const side = Math.round(Math.sqrt(N0));
  if (g * g === N0) return pos.slice(D, D + N0 * D);
  const { weights: w1, outSize } = bicubicWeights1d(side, (g + 0.1) / side);
  if (outSize !== g) throw new Error(`reference: bicubic resize gave ${outSize}, expected ${g}`);
  const out = new Float64Array(g * g * D);
  for (let orow = 0; orow < g; orow++) {
    for (let ocol = 0; ocol < g; ocol++) {
      for (let ir = 0; ir < side; ir++) {
        for (let ic = 0; ic < side; ic++) {
          const w = w1[orow * side + ir] * w1[ocol * side + ic];
          if (w === 0) continue;
          for (let c = 0; c < D; c++) out[(orow * g + ocol) * D + c] += w * pos[(1 + ir * side + ic) * D + c];
        }
      }
    }
  }
  return out;
}

// -------------------------------------------------------------------------------------------------
// Models

function getter(params: RefParams): (n: string) => Float64Array {
  return (n) => {
    const t = params.get(n);
    if (!t) throw new Error(`reference: no parameter '${n}'`);
    return t.data;
  };
}

/** The ViT's CLS feature after the final norm for n images (n, 3, S, S): returns (n, D). */
export function vitForwardRef(params: RefParams, c: RefModelConfig, images: ArrayLike<number>, n: number, S: number): Float64Array {
  const p = getter(params);
  const D = c.embedDim;
  const P = c.patchSize;
  const eps = c.eps ?? 1e-6;
  const hidden = Math.floor(D * (c.mlpRatio ?? 4));
  const g = Math.floor(S / P);
  const N = 1 + g * g;
  const N0 = Math.floor(c.globalSize / P) ** 2;
  const conv = p('backbone.patch_embed.proj.weight'); // (D, 3, P, P)
  const convB = p('backbone.patch_embed.proj.bias');
  const cls = p('backbone.cls_token');
  const posAll = p('backbone.pos_embed'); // (1, 1 + N0, D)
  const pos = positionRows(posAll, N0, g, D);
  const out = new Float64Array(n * D);
  for (let b = 0; b < n; b++) {
    let x = new Float64Array(N * D);
    for (let ch = 0; ch < D; ch++) x[ch] = cls[ch] + posAll[ch];
    for (let r = 0; r < g; r++) {
      for (let s = 0; s < g; s++) {
        const t = 1 + r * g + s;
        for (let o = 0; o < D; o++) {
          let acc = convB[o];
          for (let ci = 0; ci < 3; ci++) {
            for (let i = 0; i < P; i++) {
              for (let j = 0; j < P; j++) acc += conv[((o * 3 + ci) * P + i) * P + j] * images[((b * 3 + ci) * S + r * P + i) * S + s * P + j];
            }
          }
          x[t * D + o] = acc + pos[(t - 1) * D + o];
        }
      }
    }
    for (let l = 0; l < c.depth; l++) {
      const pre = `backbone.blocks.${l}.`;
      const a = attention(layerNorm(x, N, D, p(`${pre}norm1.weight`), p(`${pre}norm1.bias`), eps), N, D, c.numHeads, p, `${pre}attn.`);
      const x1 = x.map((v, i) => v + a[i]);
      const h1 = linear(layerNorm(x1, N, D, p(`${pre}norm2.weight`), p(`${pre}norm2.bias`), eps), N, D, p(`${pre}mlp.fc1.weight`), p(`${pre}mlp.fc1.bias`), hidden, true);
      const m = linear(h1, N, hidden, p(`${pre}mlp.fc2.weight`), p(`${pre}mlp.fc2.bias`), D);
      x = x1.map((v, i) => v + m[i]);
    }
    const clsOut = layerNorm(x.subarray(0, D), 1, D, p('backbone.norm.weight'), p('backbone.norm.bias'), eps);
    out.set(clsOut, b * D);
  }
  return out;
}

/** The DINO head (3 layers, l2-norm, weight-normalised last layer with g fixed to 1): (rows, K). */
export function headForwardRef(params: RefParams, c: RefModelConfig, feats: Float64Array, rows: number): Float64Array {
  const p = getter(params);
  const { embedDim: D, headHidden: Hd, headBottleneck: Bn, outDim: K } = c;
  let h = linear(feats, rows, D, p('head.mlp.0.weight'), p('head.mlp.0.bias'), Hd, true);
  h = linear(h, rows, Hd, p('head.mlp.2.weight'), p('head.mlp.2.bias'), Hd, true);
  const z = linear(h, rows, Hd, p('head.mlp.4.weight'), p('head.mlp.4.bias'), Bn);
  for (let r = 0; r < rows; r++) {
    let s = 0;
    for (let j = 0; j < Bn; j++) s += z[r * Bn + j] ** 2;
    const inv = 1 / Math.max(Math.sqrt(s), 1e-12);
    for (let j = 0; j < Bn; j++) z[r * Bn + j] *= inv;
  }
  const V = p('head.last_layer.weight_v'); // (K, Bn)
  const unit = new Float64Array(K * Bn);
  for (let k = 0; k < K; k++) {
    let s = 0;
    for (let j = 0; j < Bn; j++) s += V[k * Bn + j] ** 2;
    const inv = 1 / Math.sqrt(s);
    for (let j = 0; j < Bn; j++) unit[k * Bn + j] = V[k * Bn + j] * inv;
  }
  return linear(z, rows, Bn, unit, null, K);
}

/** Backbone features of the crops in MultiCropWrapper order: globals then locals, ((2 + n)·B, D). */
export function multiCropFeaturesRef(params: RefParams, c: RefModelConfig, crops: RefCrops): Float64Array {
  const fg = vitForwardRef(params, c, crops.globals, 2 * crops.B, crops.globalSize);
  if (!crops.locals || crops.localCrops === 0) return fg;
  const fl = vitForwardRef(params, c, crops.locals, crops.localCrops * crops.B, crops.localSize);
  const all = new Float64Array(fg.length + fl.length);
  all.set(fg);
  all.set(fl, fg.length);
  return all;
}

/** The crops of one step (rows crop-major, as the trainer takes them). */
export interface RefCrops {
  B: number;
  globals: ArrayLike<number>;
  globalSize: number;
  locals: ArrayLike<number> | null;
  localSize: number;
  localCrops: number;
}

/** DINOLoss in float64 (the official double loop). Rows crop-major; teacher holds the 2 global crops. */
export function dinoLoss64(student: Float64Array, teacher: Float64Array, center: ArrayLike<number>, V: number, B: number, K: number, tauS: number, tauT: number): number {
  const q = new Float64Array(2 * B * K);
  for (let r = 0; r < 2 * B; r++) softmaxRow(teacher, r, K, (k) => (teacher[r * K + k] - center[k]) / tauT, q, false);
  const lp = new Float64Array(V * B * K);
  for (let r = 0; r < V * B; r++) softmaxRow(student, r, K, (k) => student[r * K + k] / tauS, lp, true);
  let total = 0;
  let terms = 0;
  for (let iq = 0; iq < 2; iq++) {
    for (let v = 0; v < V; v++) {
      if (v === iq) continue;
      let mean = 0;
      for (let b = 0; b < B; b++) {
        let ce = 0;
        for (let k = 0; k < K; k++) ce -= q[(iq * B + b) * K + k] * lp[(v * B + b) * K + k];
        mean += ce / B;
      }
      total += mean;
      terms++;
    }
  }
  return total / terms;
}

function softmaxRow(_x: Float64Array, r: number, K: number, z: (k: number) => number, out: Float64Array, log: boolean): void {
  let m = -Infinity;
  for (let k = 0; k < K; k++) m = Math.max(m, z(k));
  let s = 0;
  for (let k = 0; k < K; k++) s += Math.exp(z(k) - m);
  const lse = m + Math.log(s);
  for (let k = 0; k < K; k++) out[r * K + k] = log ? z(k) - lse : Math.exp(z(k) - lse);
}

// -------------------------------------------------------------------------------------------------
// The step

/** Everything a step reads and writes. Moments m, v and step counts are per parameter name. */
export interface RefState {
  student: RefParams;
  teacher: RefParams;
  center: Float64Array;
  m: Map<string, Float64Array>;
  v: Map<string, Float64Array>;
  steps: Map<string, number>;
}

/** This iteration's hyperparameters (the trainer's schedules at this iteration). */
export interface RefHyper {
  lr: number;
  weightDecay: number;
  momentum: number;
  teacherTemp: number;
  studentTemp: number;
  centerMomentum: number;
  /** Per-tensor clip (0: off). */
  clipGrad: number;
  /** epoch < freeze_last_layer: drop the last layer's gradients. */
  freezeLastLayer: boolean;
  beta1?: number;
  beta2?: number;
  adamEps?: number;
  /** Finite-difference step h of the Richardson pair (h, h/2) (default 1e-5). */
  fdStep?: number;
  /** Weight of the KoLeo term on the global crops' backbone CLS outputs, one crop at a time (0: none). */
  koleoWeight?: number;
}

/** What the reference step produced (the new state plus the intermediate values tests compare). */
export interface RefStepResult {
  loss: number;
  /** Teacher outputs (2B, K) of this step (from the teacher before its update). */
  teacherOut: Float64Array;
  /** Raw gradients (finite differences) of the trainable parameters. */
  grads: Map<string, Float64Array>;
  /** Per-tensor gradient norms before clipping. */
  norms: Map<string, number>;
  /** Gradients after clipping and freezing; absent for frozen (cancelled) parameters. */
  clipped: Map<string, Float64Array>;
  /** Names whose gradients were scaled by clipping. */
  clippedNames: string[];
  state: RefState;
}

/** DINO's rule: no weight decay for biases and 1-D tensors. */
export function decays(name: string, shape: readonly number[]): boolean {
  return !(name.endsWith('.bias') || shape.length <= 1);
}

/** One torch AdamW element update; returns [p, m, v]. `t` is the step count after this step. */
export function adamwElement(p: number, g: number, m: number, v: number, t: number, lr: number, wd: number, beta1 = 0.9, beta2 = 0.999, eps = 1e-8): [number, number, number] {
  const p1 = p - lr * wd * p;
  const m1 = beta1 * m + (1 - beta1) * g;
  const v1 = beta2 * v + (1 - beta2) * g * g;
  const upd = m1 / (1 - beta1 ** t) / (Math.sqrt(v1 / (1 - beta2 ** t)) + eps);
  return [p1 - lr * upd, m1, v1];
}

/**
 * The DINO loss as a function of the student parameters, with the teacher outputs and center fixed.
 * `fromFeatures` evaluates only the head on cached backbone features (for head parameters).
 */
function studentLoss(c: RefModelConfig, crops: RefCrops, teacherOut: Float64Array, center: Float64Array, h: RefHyper) {
  const V = 2 + (crops.locals ? crops.localCrops : 0);
  const rows = V * crops.B;
  const lossOfOut = (out: Float64Array) => dinoLoss64(out, teacherOut, center, V, crops.B, c.outDim, h.studentTemp, h.teacherTemp);
  // KoLeo of each global crop's B CLS features (rows 0..B−1 and B..2B−1): it depends on the
  // backbone only, so the head parameters see it as a constant.
  const D = c.embedDim;
  const B = crops.B;
  const koleo = (feats: Float64Array) =>
    h.koleoWeight ? h.koleoWeight * (koleoRef(feats.subarray(0, B * D), B, D).loss + koleoRef(feats.subarray(B * D, 2 * B * D), B, D).loss) : 0;
  const lossOfFeats = (p: RefParams, feats: Float64Array) => lossOfOut(headForwardRef(p, c, feats, rows)) + koleo(feats);
  return {
    full: (p: RefParams) => lossOfFeats(p, multiCropFeaturesRef(p, c, crops)),
    fromFeatures: lossOfFeats,
  };
}

/**
 * One DINO step in float64 from `state` on the given crops. `trainable(name)` says which student
 * parameters receive gradients (weight_g does not with norm_last_layer). Returns the new state
 * (the input is not modified) and the intermediate values.
 */
export function referenceStep(state: RefState, c: RefModelConfig, crops: RefCrops, h: RefHyper, trainable: (name: string) => boolean): RefStepResult {
  const beta1 = h.beta1 ?? 0.9;
  const beta2 = h.beta2 ?? 0.999;
  const adamEps = h.adamEps ?? 1e-8;
  const fd = h.fdStep ?? 1e-5;
  const B = crops.B;
  // Teacher: the 2 global crops only, its parameters before the update.
  const teacherOut = headForwardRef(state.teacher, c, vitForwardRef(state.teacher, c, crops.globals, 2 * B, crops.globalSize), 2 * B);
  const L = studentLoss(c, crops, teacherOut, state.center, h);
  const student = cloneParams(state.student);
  const loss = L.full(student);

  // Gradients by central differences (head parameters reuse the backbone features).
  const feats = multiCropFeaturesRef(student, c, crops);
  const grads = new Map<string, Float64Array>();
  for (const [name, t] of student) {
    if (!trainable(name)) continue;
    const f = name.startsWith('head.') ? () => L.fromFeatures(student, feats) : () => L.full(student);
    const g = new Float64Array(t.data.length);
    const central = (i: number, step: number): number => {
      const x = t.data[i];
      t.data[i] = x + step;
      const fp = f();
      t.data[i] = x - step;
      const fm = f();
      t.data[i] = x;
      return (fp - fm) / (2 * step);
    };
    // Richardson: D(h) = g + c·h² + O(h⁴), so (4·D(h/2) − D(h))/3 = g + O(h⁴).
    for (let i = 0; i < g.length; i++) g[i] = (4 * central(i, fd / 2) - central(i, fd)) / 3;
    grads.set(name, g);
  }

  // Per-tensor clipping, then cancel the last layer while frozen.
  const norms = new Map<string, number>();
  const clipped = new Map<string, Float64Array>();
  const clippedNames: string[] = [];
  for (const [name, g] of grads) {
    const norm = Math.sqrt(g.reduce((a, x) => a + x * x, 0));
    norms.set(name, norm);
    const coef = h.clipGrad > 0 ? h.clipGrad / (norm + 1e-6) : 1;
    if (coef < 1) clippedNames.push(name);
    clipped.set(name, coef < 1 ? g.map((x) => x * coef) : Float64Array.from(g));
  }
  if (h.freezeLastLayer) for (const name of [...clipped.keys()]) if (name.includes('last_layer')) clipped.delete(name);

  // AdamW on the parameters that have a gradient.
  const m = new Map([...state.m].map(([k, a]) => [k, Float64Array.from(a)]));
  const v = new Map([...state.v].map(([k, a]) => [k, Float64Array.from(a)]));
  const steps = new Map(state.steps);
  for (const [name, g] of clipped) {
    const p = student.get(name)!;
    const mm = m.get(name)!;
    const vv = v.get(name)!;
    const t = (steps.get(name) ?? 0) + 1;
    steps.set(name, t);
    const wd = decays(name, p.shape) ? h.weightDecay : 0;
    for (let i = 0; i < g.length; i++) [p.data[i], mm[i], vv[i]] = adamwElement(p.data[i], g[i], mm[i], vv[i], t, h.lr, wd, beta1, beta2, adamEps);
  }

  // Teacher EMA over every tensor, then the center from this step's teacher outputs.
  const teacher = cloneParams(state.teacher);
  for (const [name, t] of teacher) {
    const s = student.get(name)!.data;
    for (let i = 0; i < t.data.length; i++) t.data[i] = h.momentum * t.data[i] + (1 - h.momentum) * s[i];
  }
  const K = c.outDim;
  const center = Float64Array.from(state.center, (x, k) => {
    let mean = 0;
    for (let r = 0; r < 2 * B; r++) mean += teacherOut[r * K + k];
    return h.centerMomentum * x + (1 - h.centerMomentum) * (mean / (2 * B));
  });
  return { loss, teacherOut, grads, norms, clipped, clippedNames, state: { student, teacher, center, m, v, steps } };
}
