/**
 * The DINO head with BatchNorm (DINO's --use_bn_in_head): the official nn.Sequential key names,
 * the forward against a float64 reference (Linear → BatchNorm1d with batch statistics → exact GELU
 * per hidden layer, Linear, l2-normalise, weight-normalised prototypes), PyTorch's running-statistic
 * update, and the gradient with respect to the input against central finite differences of the
 * reference. Shapes (7 rows, 5 → 6 → 6 → 4 → 9) are multiples of no tile.
 */
import { describe, expect, it } from 'vitest';
import { DINOHead, dinoHeadConfig } from '../../models/dino-head.js';
import { Rng } from '../../index.js';
import { expectClose, finiteDiff, getEngine } from '../helpers.js';

const R = 7;
const cfg = dinoHeadConfig({ inDim: 5, hiddenDim: 6, bottleneckDim: 4, outDim: 9, nlayers: 3, useBn: true });

/** erf by Abramowitz–Stegun 7.1.26 (|error| < 1.5e-7), for the exact GELU x·Φ(x). */
function erf(x: number): number {
  const s = Math.sign(x);
  const a = Math.abs(x);
  const t = 1 / (1 + 0.3275911 * a);
  const y = 1 - ((((1.061405429 * t - 1.453152027) * t + 1.421413741) * t - 0.284496736) * t + 0.254829592) * t * Math.exp(-a * a);
  return s * y;
}
const gelu = (x: number) => 0.5 * x * (1 + erf(x / Math.SQRT2));

type W = Map<string, Float64Array>;

/** Float64 head forward on rows x (R × in), row-major. */
function reference(w: W, x: Float64Array): Float64Array {
  const linear = (h: Float64Array, name: string, a: number, b: number) => {
    const wt = w.get(`${name}.weight`)!;
    const bias = w.get(`${name}.bias`)!;
    const out = new Float64Array(R * b);
    for (let r = 0; r < R; r++) for (let j = 0; j < b; j++) {
      let s = bias[j];
      for (let i = 0; i < a; i++) s += h[r * a + i] * wt[j * a + i];
      out[r * b + j] = s;
    }
    return out;
  };
  const bnGelu = (h: Float64Array, name: string, c: number) => {
    const g = w.get(`${name}.weight`)!;
    const beta = w.get(`${name}.bias`)!;
    const out = new Float64Array(R * c);
    for (let j = 0; j < c; j++) {
      let m = 0;
      for (let r = 0; r < R; r++) m += h[r * c + j] / R;
      let v = 0;
      for (let r = 0; r < R; r++) v += (h[r * c + j] - m) ** 2 / R; // biased, as in training mode
      for (let r = 0; r < R; r++) out[r * c + j] = gelu(((h[r * c + j] - m) / Math.sqrt(v + 1e-5)) * g[j] + beta[j]);
    }
    return out;
  };
  let h = bnGelu(linear(x, 'mlp.0', 5, 6), 'mlp.1', 6);
  h = bnGelu(linear(h, 'mlp.3', 6, 6), 'mlp.4', 6);
  h = linear(h, 'mlp.6', 6, 4);
  const v = w.get('last_layer.weight_v')!;
  const y = new Float64Array(R * 9);
  for (let r = 0; r < R; r++) {
    let n = 0;
    for (let i = 0; i < 4; i++) n += h[r * 4 + i] ** 2;
    for (let k = 0; k < 9; k++) {
      let dot = 0;
      let nv = 0;
      for (let i = 0; i < 4; i++) {
        dot += (h[r * 4 + i] / Math.sqrt(n)) * v[k * 4 + i];
        nv += v[k * 4 + i] ** 2;
      }
      y[r * 9 + k] = dot / Math.sqrt(nv);
    }
  }
  return y;
}

describe('DINO head with BatchNorm (use_bn_in_head)', () => {
  it('official names; forward, running statistics and input gradient against float64', async () => {
    const wd = await getEngine();
    const head = new DINOHead({ engine: wd, rng: new Rng(5) }, cfg);
    const names = head.stateEntries().map(([n]) => n).sort();
    expect(names).toEqual(
      [
        'last_layer.weight_g', 'last_layer.weight_v',
        'mlp.0.bias', 'mlp.0.weight', 'mlp.1.bias', 'mlp.1.num_batches_tracked', 'mlp.1.running_mean', 'mlp.1.running_var', 'mlp.1.weight',
        'mlp.3.bias', 'mlp.3.weight', 'mlp.4.bias', 'mlp.4.num_batches_tracked', 'mlp.4.running_mean', 'mlp.4.running_var', 'mlp.4.weight',
        'mlp.6.bias', 'mlp.6.weight',
      ].sort(),
    );
    // Non-trivial BN affine parameters and biases (the defaults are 1 and 0).
    const rng = new Rng(9);
    const state = new Map<string, { shape: number[]; data: Float32Array }>();
    const bnWeight = (n: string) => n === 'mlp.1.weight' || n === 'mlp.4.weight';
    const fixed: Record<string, number> = { running_mean: 0, running_var: 1, num_batches_tracked: 0, weight_g: 1 };
    for (const [n, t] of head.stateEntries()) {
      const kept = fixed[n.slice(n.lastIndexOf('.') + 1)];
      const data = Float32Array.from({ length: t.size }, () => (kept !== undefined ? kept : bnWeight(n) ? 0.5 + rng.uniform() : (rng.uniform() - 0.5) * 0.8));
      state.set(n, { shape: [...t.shape], data });
    }
    head.loadStateDict(state);
    const w: W = new Map([...state].map(([k, v]) => [k, Float64Array.from(v.data)]));
    const x = Float64Array.from({ length: R * 5 }, () => rng.uniform() * 2 - 1);
    const want = reference(w, x);
    // A fixed random weighting of the outputs makes a scalar whose gradient checks every path.
    const cot = Float64Array.from({ length: R * 9 }, () => rng.uniform() * 2 - 1);
    await wd.scope(async () => {
      const xt = wd.tensor(Float32Array.from(x), [R, 5], { requiresGrad: true });
      const y = head.forward(xt);
      expectClose(await y.toArray(), want, 1e-4, 1e-5, 'head with BN');
      y.mul(wd.tensor(Float32Array.from(cot), [R, 9])).sum().backward();
      const fd = finiteDiff((xx) => reference(w, xx).reduce((s, v, i) => s + v * cot[i], 0), x, 1e-5);
      expectClose(await xt.grad!.toArray(), fd, 2e-3, 2e-4, 'input gradient');
      // PyTorch's update: running = 0.9·running + 0.1·batch (mean; unbiased variance).
      const h0 = new Float64Array(R * 6);
      const w0 = w.get('mlp.0.weight')!;
      const b0 = w.get('mlp.0.bias')!;
      for (let r = 0; r < R; r++) for (let j = 0; j < 6; j++) {
        let s = b0[j];
        for (let i = 0; i < 5; i++) s += x[r * 5 + i] * w0[j * 5 + i];
        h0[r * 6 + j] = s;
      }
      const mean = Array.from({ length: 6 }, (_, j) => Array.from({ length: R }, (_, r) => h0[r * 6 + j]).reduce((a, b) => a + b) / R);
      const uvar = mean.map((m, j) => Array.from({ length: R }, (_, r) => (h0[r * 6 + j] - m) ** 2).reduce((a, b) => a + b) / (R - 1));
      expectClose(await head.norms[0]!.runningMean.toArray(), mean.map((m) => 0.1 * m), 1e-4, 1e-6, 'running mean');
      expectClose(await head.norms[0]!.runningVar.toArray(), uvar.map((v) => 0.9 + 0.1 * v), 1e-4, 1e-6, 'running var');
    });
    head.dispose();
  });
});

describe('DINO head without norm_last_layer (DINOv2, DINO --norm_last_layer false)', () => {
  it("a frozen head (a teacher) still applies its learned weight_g: logits scale row by row", async () => {
    const wd = await getEngine();
    const cfgG = dinoHeadConfig({ inDim: 5, hiddenDim: 6, bottleneckDim: 4, outDim: 9, nlayers: 3, normLastLayer: false });
    const head = new DINOHead({ engine: wd, rng: new Rng(5) }, cfgG);
    const fixedHead = new DINOHead({ engine: wd, rng: new Rng(5) }, { ...cfgG, normLastLayer: true });
    const g = Float32Array.from({ length: 9 }, (_, k) => 0.5 + 0.25 * k);
    const state = new Map<string, { shape: number[]; data: Float32Array }>();
    for (const [n, t] of head.stateEntries()) state.set(n, { shape: [...t.shape], data: n.endsWith('weight_g') ? g : Float32Array.from(await t.toArray()) });
    head.loadStateDict(state);
    fixedHead.loadStateDict(new Map([...state].map(([n, v]) => [n, n.endsWith('weight_g') ? { ...v, data: new Float32Array(9).fill(1) } : v])));
    // A teacher: no parameter takes a gradient.
    for (const [, t] of head.namedParameters()) t.requiresGrad = false;
    const rng = new Rng(11);
    const x = Float32Array.from({ length: R * 5 }, () => rng.uniform() * 2 - 1);
    await wd.scope(async () => {
      const y = await head.forward(wd.tensor(x, [R, 5])).toArray();
      const unit = await fixedHead.forward(wd.tensor(x, [R, 5])).toArray();
      const want = Float64Array.from(unit, (u, i) => u * g[i % 9]);
      expectClose(y, want, 1e-5, 1e-6, 'g · (v/|v|) · h on a frozen head');
    });
    head.dispose();
    fixedHead.dispose();
  });
});
