/**
 * A float64 CPU reference of one whole DINOv2 training step of a tiny ViT student/teacher, written
 * from the official code (dinov2/train/ssl_meta_arch.py forward_backward, train/train.py do_train,
 * utils/param_groups.py, loss/*.py, models/vision_transformer.py), for dinov2-trainer.test.ts.
 * It shares only the float64 layers of step-reference.ts (Linear, LayerNorm, attention, the
 * position-embedding resize) and sinkhornKnoppRef (tested in loss.test.ts); the recipe's code is
 * not called.
 *
 * Backbone (per image, S×S, patch p, g = ⌊S/p⌋, hw = g², R registers)
 *   x_t = conv patch t, or mask_token where the image's mask is set (prepare_tokens_with_masks)
 *   tokens = [cls + pos₀; reg₁..reg_R; x_t + pos_t]
 *   block: x ← x + γ₁⊙attn(LN₁(x)), x ← x + γ₂⊙mlp(LN₂(x))   (LayerScale γ; LN eps 1e-6)
 *   cls = LN(x)[0], patches = LN(x)[1 + R:]
 * Head (dino_head, ibot_head): GELU(W₀x+b₀) → GELU(W₂h+b₂) → W₄h+b₄ → /max(‖·‖, 1e-12) →
 *   logits_k = g_k · ẑ·v_k/‖v_k‖   (weight_g trainable: DINOv2 has no norm_last_layer)
 * Teacher (unmasked global crops): CLS logits t_cls (2B, K), masked patch logits t_p (M, K') from
 *   the patch tokens at the masked positions (flat index image·hw + patch, ascending)
 *   targets: softmax((t − c)/τt) with the current centers, or Sinkhorn-Knopp (N = 2B, N = M)
 * Loss, forward_backward's loops: teacher list [q_B, q_A];
 *   local  = Σ_v Σ_{t ∈ list} mean_b CE(t, s_v) / (2 + max(2·n_l, 1))
 *   global = 2 · mean_{2B rows} CE(flatten(list), s_global) / (2 + max(2·n_l, 1))
 *   koleo  = w_k · Σ_{crop ∈ {A, B}} −mean log(‖x̂_i − x̂_nn(i) + ε‖ + ε), ε = 1e-8
 *   ibot   = −Σ_p w_p Σ_k t·log softmax(s_p/τs) / 2B, w_p = 1/(masked patches of p's image)
 *   total  = w_d(local + global) + koleo + w_i·ibot
 * Step:
 *   g = ∂total/∂θ by Richardson-extrapolated central differences (as step-reference.ts)
 *   per sub-model (backbone, dino_head, ibot_head): n = ‖all its g‖, g ← g·min(clip/(n + 1e-6), 1)
 *   AdamW per parameter: lr·lr_mult (last layer: last_layer_lr·lr_mult), wd·wd_mult, every
 *     parameter steps (lr 0 for the frozen last layer still moves m and v)
 *     lr_mult = 0.9^(L + 1 − layer) (tokens and patch_embed: layer 0; blocks.i: i + 1; else L + 1),
 *     × 0.2 for patch_embed; heads 1.  wd_mult = 0 for *.bias, *norm*, *gamma*
 *   teacher ← m·teacher + (1 − m)·student; centers ← 0.9·c + 0.1·mean_rows(t) (centering only)
 */
import { sinkhornKnoppRef } from '../../train/loss.js';
import { adamwElement, attention, cloneParams, layerNorm, linear, positionRows, type RefParams } from './step-reference.js';

export interface V2RefConfig {
  embedDim: number;
  depth: number;
  numHeads: number;
  patchSize: number;
  globalSize: number;
  numRegisterTokens: number;
  outDim: number;
  headHidden: number;
  headBottleneck: number;
  ibotSeparateHead: boolean;
  ibotOutDim: number;
  ibotHeadHidden: number;
  ibotHeadBottleneck: number;
}

/** The crops and masks of one step (rows crop-major). */
export interface V2Crops {
  B: number;
  globals: ArrayLike<number>;
  globalSize: number;
  locals: ArrayLike<number> | null;
  localSize: number;
  localCrops: number;
  /** 2B·hw bytes, 1 = masked. */
  masks: Uint8Array;
}

export interface V2Hyper {
  lr: number;
  lastLayerLr: number;
  weightDecay: number;
  momentum: number;
  teacherTemp: number;
  studentTemp: number;
  centerMomentum: number;
  centering: 'center' | 'sinkhorn_knopp';
  clipGrad: number;
  layerwiseDecay: number;
  patchEmbedLrMult: number;
  lossWeights: { dino: number; koleo: number; ibot: number };
  fdStep?: number;
}

export interface V2State {
  student: RefParams;
  teacher: RefParams;
  dinoCenter: Float64Array;
  ibotCenter: Float64Array;
  m: Map<string, Float64Array>;
  v: Map<string, Float64Array>;
  steps: Map<string, number>;
}

export interface V2StepResult {
  loss: { total: number; local: number; global: number; koleo: number; ibot: number };
  grads: Map<string, Float64Array>;
  /** Global gradient norm of each sub-model before clipping. */
  norms: Map<string, number>;
  clipped: Map<string, Float64Array>;
  state: V2State;
}

function getter(params: RefParams): (n: string) => Float64Array {
  return (n) => {
    const t = params.get(n);
    if (!t) throw new Error(`reference: no parameter '${n}'`);
    return t.data;
  };
}

/** Backbone CLS (n, D) and patch tokens (n, hw, D) after the final norm. */
export function vitTokensRef(params: RefParams, c: V2RefConfig, images: ArrayLike<number>, n: number, S: number, masks: Uint8Array | null): { cls: Float64Array; patches: Float64Array } {
  const p = getter(params);
  const D = c.embedDim;
  const P = c.patchSize;
  const eps = 1e-6;
  const hidden = 4 * D;
  const g = Math.floor(S / P);
  const hw = g * g;
  const R = c.numRegisterTokens;
  const N = 1 + R + hw;
  const N0 = Math.floor(c.globalSize / P) ** 2;
  const conv = p('backbone.patch_embed.proj.weight');
  const convB = p('backbone.patch_embed.proj.bias');
  const posAll = p('backbone.pos_embed');
  const pos = positionRows(posAll, N0, g, D);
  const cls = p('backbone.cls_token');
  const maskToken = p('backbone.mask_token');
  const regs = R > 0 ? p('backbone.register_tokens') : null;
  const clsOut = new Float64Array(n * D);
  const patchOut = new Float64Array(n * hw * D);
  for (let b = 0; b < n; b++) {
    let x = new Float64Array(N * D);
    for (let ch = 0; ch < D; ch++) x[ch] = cls[ch] + posAll[ch];
    for (let r = 0; r < R; r++) for (let ch = 0; ch < D; ch++) x[(1 + r) * D + ch] = regs![r * D + ch];
    for (let t = 0; t < hw; t++) {
      const row = Math.floor(t / g);
      const col = t % g;
      const masked = masks !== null && masks[b * hw + t] === 1;
      for (let o = 0; o < D; o++) {
        let acc = convB[o];
        if (masked) acc = maskToken[o];
        else {
          for (let ci = 0; ci < 3; ci++) {
            for (let i = 0; i < P; i++) {
              for (let j = 0; j < P; j++) acc += conv[((o * 3 + ci) * P + i) * P + j] * images[((b * 3 + ci) * S + row * P + i) * S + col * P + j];
            }
          }
        }
        x[(1 + R + t) * D + o] = acc + pos[t * D + o];
      }
    }
    for (let l = 0; l < c.depth; l++) {
      const pre = `backbone.blocks.${l}.`;
      const g1 = p(`${pre}ls1.gamma`);
      const g2 = p(`${pre}ls2.gamma`);
      const a = attention(layerNorm(x, N, D, p(`${pre}norm1.weight`), p(`${pre}norm1.bias`), eps), N, D, c.numHeads, p, `${pre}attn.`);
      const x1 = x.map((v, i) => v + g1[i % D] * a[i]);
      const h1 = linear(layerNorm(x1, N, D, p(`${pre}norm2.weight`), p(`${pre}norm2.bias`), eps), N, D, p(`${pre}mlp.fc1.weight`), p(`${pre}mlp.fc1.bias`), hidden, true);
      const m = linear(h1, N, hidden, p(`${pre}mlp.fc2.weight`), p(`${pre}mlp.fc2.bias`), D);
      x = x1.map((v, i) => v + g2[i % D] * m[i]);
    }
    const out = layerNorm(x, N, D, p('backbone.norm.weight'), p('backbone.norm.bias'), eps);
    clsOut.set(out.subarray(0, D), b * D);
    patchOut.set(out.subarray((1 + R) * D), b * hw * D);
  }
  return { cls: clsOut, patches: patchOut };
}

/** A DINOv2 head `prefix` (dino_head. / ibot_head.) on rows of D features: (rows, K). */
export function headRef(params: RefParams, prefix: string, dims: { D: number; hidden: number; bottleneck: number; K: number }, feats: Float64Array, rows: number): Float64Array {
  const p = getter(params);
  const { D, hidden: Hd, bottleneck: Bn, K } = dims;
  let h = linear(feats, rows, D, p(`${prefix}mlp.0.weight`), p(`${prefix}mlp.0.bias`), Hd, true);
  h = linear(h, rows, Hd, p(`${prefix}mlp.2.weight`), p(`${prefix}mlp.2.bias`), Hd, true);
  const z = linear(h, rows, Hd, p(`${prefix}mlp.4.weight`), p(`${prefix}mlp.4.bias`), Bn);
  for (let r = 0; r < rows; r++) {
    let s = 0;
    for (let j = 0; j < Bn; j++) s += z[r * Bn + j] ** 2;
    const inv = 1 / Math.max(Math.sqrt(s), 1e-12);
    for (let j = 0; j < Bn; j++) z[r * Bn + j] *= inv;
  }
  const V = p(`${prefix}last_layer.weight_v`);
  const G = p(`${prefix}last_layer.weight_g`);
  const W = new Float64Array(K * Bn);
  for (let k = 0; k < K; k++) {
    let s = 0;
    for (let j = 0; j < Bn; j++) s += V[k * Bn + j] ** 2;
    const f = G[k] / Math.sqrt(s);
    for (let j = 0; j < Bn; j++) W[k * Bn + j] = V[k * Bn + j] * f;
  }
  return linear(z, rows, Bn, W, null, K);
}

function dinoDims(c: V2RefConfig) {
  return { D: c.embedDim, hidden: c.headHidden, bottleneck: c.headBottleneck, K: c.outDim };
}
function patchHead(c: V2RefConfig): { prefix: string; dims: { D: number; hidden: number; bottleneck: number; K: number } } {
  return c.ibotSeparateHead
    ? { prefix: 'ibot_head.', dims: { D: c.embedDim, hidden: c.ibotHeadHidden, bottleneck: c.ibotHeadBottleneck, K: c.ibotOutDim } }
    : { prefix: 'dino_head.', dims: dinoDims(c) };
}

/** Rows of `patches` (n·hw, D) at the masked flat indices. */
function maskedRows(patches: Float64Array, masks: Uint8Array, D: number): Float64Array {
  const idx: number[] = [];
  masks.forEach((m, i) => m && idx.push(i));
  const out = new Float64Array(idx.length * D);
  idx.forEach((r, j) => out.set(patches.subarray(r * D, (r + 1) * D), j * D));
  return out;
}

function logSoftmax(s: ArrayLike<number>, off: number, K: number, tau: number): Float64Array {
  let m = -Infinity;
  for (let k = 0; k < K; k++) m = Math.max(m, s[off + k] / tau);
  let z = 0;
  for (let k = 0; k < K; k++) z += Math.exp(s[off + k] / tau - m);
  const lse = m + Math.log(z);
  return Float64Array.from({ length: K }, (_, k) => s[off + k] / tau - lse);
}

function ceRow(q: ArrayLike<number>, qOff: number, s: ArrayLike<number>, sOff: number, K: number, tau: number): number {
  const lp = logSoftmax(s, sOff, K, tau);
  let out = 0;
  for (let k = 0; k < K; k++) out -= q[qOff + k] * lp[k];
  return out;
}

function koleo(x: Float64Array, n: number, D: number): number {
  const eps = 1e-8;
  const xn = new Float64Array(n * D);
  for (let i = 0; i < n; i++) {
    let s = 0;
    for (let k = 0; k < D; k++) s += x[i * D + k] ** 2;
    const inv = 1 / Math.max(Math.sqrt(s), eps);
    for (let k = 0; k < D; k++) xn[i * D + k] = x[i * D + k] * inv;
  }
  let loss = 0;
  for (let i = 0; i < n; i++) {
    let best = -Infinity;
    let nn = 0;
    for (let j = 0; j < n; j++) {
      let dot = -1;
      if (j !== i) {
        dot = 0;
        for (let k = 0; k < D; k++) dot += xn[i * D + k] * xn[j * D + k];
      }
      if (dot > best) {
        best = dot;
        nn = j;
      }
    }
    let s = 0;
    for (let k = 0; k < D; k++) s += (xn[i * D + k] - xn[nn * D + k] + eps) ** 2;
    loss -= Math.log(Math.sqrt(s) + eps) / n;
  }
  return loss;
}

/** Teacher targets of the step: q_cls (2B, K) in crop order A, B, q_patch (M, K'), raw logits. */
export function teacherRef(state: V2State, c: V2RefConfig, crops: V2Crops, h: V2Hyper) {
  const B = crops.B;
  const t = vitTokensRef(state.teacher, c, crops.globals, 2 * B, crops.globalSize, null);
  const clsLogits = headRef(state.teacher, 'dino_head.', dinoDims(c), t.cls, 2 * B);
  const ph = patchHead(c);
  const masked = maskedRows(t.patches, crops.masks, c.embedDim);
  const M = masked.length / c.embedDim;
  const patchLogits = headRef(state.teacher, ph.prefix, ph.dims, masked, M);
  const targets = (z: Float64Array, N: number, K: number, center: Float64Array) => {
    if (h.centering === 'sinkhorn_knopp') return sinkhornKnoppRef(z, N, K, h.teacherTemp);
    const q = new Float64Array(N * K);
    for (let r = 0; r < N; r++) {
      const centered = Float64Array.from({ length: K }, (_, k) => z[r * K + k] - center[k]);
      const lp = logSoftmax(centered, 0, K, h.teacherTemp);
      for (let k = 0; k < K; k++) q[r * K + k] = Math.exp(lp[k]);
    }
    return q;
  };
  return {
    clsLogits,
    patchLogits,
    M,
    qCls: targets(clsLogits, 2 * B, c.outDim, state.dinoCenter),
    qPatch: targets(patchLogits, M, ph.dims.K, state.ibotCenter),
  };
}

/** forward_backward's loss of the student `params` against fixed teacher targets. */
function studentLoss(c: V2RefConfig, crops: V2Crops, qCls: Float64Array, qPatch: Float64Array, h: V2Hyper) {
  const B = crops.B;
  const D = c.embedDim;
  const K = c.outDim;
  const nl = crops.locals ? crops.localCrops : 0;
  const hw = (crops.globalSize / c.patchSize) ** 2;
  const counts = new Int32Array(2 * B);
  crops.masks.forEach((m, i) => (counts[Math.floor(i / hw)] += m));
  const weights: number[] = [];
  crops.masks.forEach((m, i) => m && weights.push(1 / Math.max(counts[Math.floor(i / hw)], 1)));
  const M = weights.length;
  const ph = patchHead(c);
  const tau = h.studentTemp;
  const denom = 2 + Math.max(2 * nl, 1);
  const tList = [qCls.subarray(B * K), qCls.subarray(0, B * K)]; // [q_B, q_A]
  const swapped = new Float64Array(2 * B * K);
  swapped.set(tList[0]);
  swapped.set(tList[1], B * K);
  type Feats = { gCls: Float64Array; lCls: Float64Array | null; masked: Float64Array };
  const features = (p: RefParams): Feats => {
    const g = vitTokensRef(p, c, crops.globals, 2 * B, crops.globalSize, crops.masks);
    const l = nl > 0 ? vitTokensRef(p, c, crops.locals!, nl * B, crops.localSize, null).cls : null;
    return { gCls: g.cls, lCls: l, masked: maskedRows(g.patches, crops.masks, D) };
  };
  const fromFeatures = (p: RefParams, f: Feats) => {
    const sG = headRef(p, 'dino_head.', dinoDims(c), f.gCls, 2 * B);
    let local = 0;
    if (f.lCls) {
      const sL = headRef(p, 'dino_head.', dinoDims(c), f.lCls, nl * B);
      for (let v = 0; v < nl; v++) {
        for (const t of tList) {
          let mean = 0;
          for (let b = 0; b < B; b++) mean += ceRow(t, b * K, sL, (v * B + b) * K, K, tau) / B;
          local += mean;
        }
      }
      local /= denom;
    }
    let gmean = 0;
    for (let r = 0; r < 2 * B; r++) gmean += ceRow(swapped, r * K, sG, r * K, K, tau) / (2 * B);
    const global = (2 * gmean) / denom;
    const kol = h.lossWeights.koleo * (koleo(f.gCls.subarray(0, B * D), B, D) + koleo(f.gCls.subarray(B * D), B, D));
    let ibot = 0;
    if (M > 0) {
      const sP = headRef(p, ph.prefix, ph.dims, f.masked, M);
      const Kp = ph.dims.K;
      for (let j = 0; j < M; j++) ibot += (weights[j] * ceRow(qPatch, j * Kp, sP, j * Kp, Kp, tau)) / (2 * B);
      ibot *= 2 * 0.5;
    }
    const total = h.lossWeights.dino * (local + global) + kol + h.lossWeights.ibot * ibot;
    return { total, local, global, koleo: kol, ibot };
  };
  return { features, fromFeatures, full: (p: RefParams) => fromFeatures(p, features(p)) };
}

/** get_vit_lr_decay_rate × patch_embed_lr_mult, transcribed for full names. */
function lrMultRef(name: string, L: number, h: V2Hyper): number {
  if (!name.startsWith('backbone.')) return 1;
  const rel = name.slice('backbone.'.length);
  let layer = L + 1;
  if (/^(cls_token|pos_embed|register_tokens|mask_token|patch_embed)/.test(rel)) layer = 0;
  else if (rel.startsWith('blocks.')) layer = Number(rel.split('.')[1]) + 1;
  return h.layerwiseDecay ** (L + 1 - layer) * (rel.includes('patch_embed') ? h.patchEmbedLrMult : 1);
}

function wdMultRef(name: string): number {
  return /\.bias$/.test(name) || name.includes('norm') || name.includes('gamma') ? 0 : 1;
}

/** One DINOv2 step in float64 from `state` (not modified); every student parameter is trainable. */
export function v2ReferenceStep(state: V2State, c: V2RefConfig, crops: V2Crops, h: V2Hyper): V2StepResult {
  const fd = h.fdStep ?? 1e-5;
  const teacher = teacherRef(state, c, crops, h);
  const L = studentLoss(c, crops, teacher.qCls, teacher.qPatch, h);
  const student = cloneParams(state.student);
  const loss = L.full(student);
  const feats = L.features(student);

  const grads = new Map<string, Float64Array>();
  for (const [name, t] of student) {
    const f = name.startsWith('backbone.') ? () => L.full(student).total : () => L.fromFeatures(student, feats).total;
    const central = (i: number, step: number): number => {
      const x = t.data[i];
      t.data[i] = x + step;
      const fp = f();
      t.data[i] = x - step;
      const fm = f();
      t.data[i] = x;
      return (fp - fm) / (2 * step);
    };
    const g = new Float64Array(t.data.length);
    for (let i = 0; i < g.length; i++) g[i] = (4 * central(i, fd / 2) - central(i, fd)) / 3;
    grads.set(name, g);
  }

  // Per sub-model clipping by global norm.
  const norms = new Map<string, number>();
  const clipped = new Map<string, Float64Array>();
  for (const sub of ['backbone.', 'dino_head.', 'ibot_head.']) {
    const names = [...grads.keys()].filter((n) => n.startsWith(sub));
    if (names.length === 0) continue;
    const norm = Math.sqrt(names.reduce((a, n) => a + grads.get(n)!.reduce((s, x) => s + x * x, 0), 0));
    norms.set(sub.slice(0, -1), norm);
    const coef = h.clipGrad > 0 ? Math.min(h.clipGrad / (norm + 1e-6), 1) : 1;
    for (const n of names) clipped.set(n, grads.get(n)!.map((x) => x * coef));
  }

  // AdamW per parameter group.
  const m = new Map([...state.m].map(([k, a]) => [k, Float64Array.from(a)]));
  const v = new Map([...state.v].map(([k, a]) => [k, Float64Array.from(a)]));
  const steps = new Map(state.steps);
  for (const [name, g] of clipped) {
    const p = student.get(name)!;
    const mm = m.get(name)!;
    const vv = v.get(name)!;
    const t = (steps.get(name) ?? 0) + 1;
    steps.set(name, t);
    const lr = (name.includes('last_layer') ? h.lastLayerLr : h.lr) * lrMultRef(name, c.depth, h);
    const wd = h.weightDecay * wdMultRef(name);
    for (let i = 0; i < g.length; i++) [p.data[i], mm[i], vv[i]] = adamwElement(p.data[i], g[i], mm[i], vv[i], t, lr, wd);
  }

  const tNew = cloneParams(state.teacher);
  for (const [name, t] of tNew) {
    const s = student.get(name)!.data;
    for (let i = 0; i < t.data.length; i++) t.data[i] = h.momentum * t.data[i] + (1 - h.momentum) * s[i];
  }
  const update = (center: Float64Array, z: Float64Array, N: number) => {
    if (h.centering !== 'center' || N === 0) return Float64Array.from(center);
    const K = center.length;
    return Float64Array.from(center, (x, k) => {
      let mean = 0;
      for (let r = 0; r < N; r++) mean += z[r * K + k];
      return h.centerMomentum * x + (1 - h.centerMomentum) * (mean / N);
    });
  };
  return {
    loss,
    grads,
    norms,
    clipped,
    state: {
      student,
      teacher: tNew,
      dinoCenter: update(state.dinoCenter, teacher.clsLogits, 2 * crops.B),
      ibotCenter: update(state.ibotCenter, teacher.patchLogits, teacher.M),
      m,
      v,
      steps,
    },
  };
}
