/**
 * DINO loss and schedules against the official formulas: the fused loss equals the float64 double
 * loop (centering and both temperatures included), its gradient matches finite differences, the
 * center is an EMA of the raw teacher outputs, no gradient reaches the teacher, and the schedules
 * reproduce the worked values of dino.md.
 */
import { describe, expect, it } from 'vitest';
import { DinoLoss, dinoLossRef, sinkhornKnopp, sinkhornKnoppRef } from '../../train/loss.js';
import { cosineScheduler, teacherTempSchedule } from '../../train/schedules.js';
import { expectClose, finiteDiff, getEngine, randn } from '../helpers.js';

describe('Sinkhorn-Knopp teacher (DINOv2)', () => {
  it('equals the float64 reference; rows sum to 1 and prototypes tend to N/K', async () => {
    const wd = await getEngine();
    await wd.scope(async () => {
      const N = 6;
      const K = 37;
      // Cosine-like logits as the weight-normalised head gives, shifted by +40 so that exp(t / τ)
      // would overflow without the max subtraction (a common shift changes nothing else).
      const t = randn(N * K, 5, 0.5).map((x) => x + 40);
      const q = await sinkhornKnopp(wd.tensor(t, [N, K]), 0.04).toArray();
      const ref = sinkhornKnoppRef(t, N, K, 0.04);
      expectClose(q, ref, 1e-4, 1e-7, 'sinkhorn');
      for (let r = 0; r < N; r++) expect(Math.abs(ref.slice(r * K, (r + 1) * K).reduce((a, b) => a + b, 0) - 1)).toBeLessThan(1e-9);
      // More iterations approach the balanced assignment: every prototype gets N/K of the mass.
      const many = sinkhornKnoppRef(t, N, K, 0.04, 200);
      for (let k = 0; k < K; k++) {
        let col = 0;
        for (let r = 0; r < N; r++) col += many[r * K + k];
        expect(col).toBeCloseTo(N / K, 3);
      }
    });
  });

  it('DinoLoss with sinkhorn_knopp uses those targets and leaves the center alone', async () => {
    const wd = await getEngine();
    await wd.scope(async () => {
      const V = 3, B = 2, K = 11;
      const loss = new DinoLoss(wd, { outDim: K, ncrops: V, studentTemp: 0.1, centerMomentum: 0.9, centering: 'sinkhorn_knopp' });
      const s = randn(V * B * K, 7, 1);
      const t = randn(2 * B * K, 8, 1);
      const L = await loss.forward(wd.tensor(s, [V * B, K]), wd.tensor(t, [2 * B, K]), 0.07).item();
      const q = sinkhornKnoppRef(t, 2 * B, K, 0.07);
      let want = 0;
      for (let iq = 0; iq < 2; iq++) for (let v = 0; v < V; v++) {
        if (v === iq) continue;
        for (let b = 0; b < B; b++) {
          const z = Array.from({ length: K }, (_, k) => s[(v * B + b) * K + k] / 0.1);
          const m = Math.max(...z);
          const lse = m + Math.log(z.reduce((a, x) => a + Math.exp(x - m), 0));
          want -= z.reduce((a, x, k) => a + q[(iq * B + b) * K + k] * (x - lse), 0) / B;
        }
      }
      want /= 2 * (V - 1);
      expectClose([L], [want], 1e-5, 1e-6, 'loss');
      expect(Array.from(await loss.center.toArray()).every((c) => c === 0)).toBe(true);
      loss.dispose();
    });
  });
});

describe('DINO loss', () => {
  const V = 4;
  const B = 3;
  const K = 37;

  it('equals the float64 double loop, updates the center, no gradient to the teacher', async () => {
    const wd = await getEngine();
    await wd.scope(async () => {
      const loss = new DinoLoss(wd, { outDim: K, ncrops: V, studentTemp: 0.1, centerMomentum: 0.9 });
      const c0 = randn(K, 1, 0.5);
      wd.device.write(loss.center.buffer, 0, c0);
      const s = randn(V * B * K, 2, 2);
      const t = randn(2 * B * K, 3, 2);
      const student = wd.tensor(s, [V * B, K], { requiresGrad: true });
      const teacher = wd.tensor(t, [2 * B, K], { requiresGrad: true });
      const L = loss.forward(student, teacher, 0.04);
      const ref = dinoLossRef(s, t, c0, V, B, K, 0.1, 0.04);
      expectClose([await L.item()], [ref.loss], 1e-5, 1e-6, 'loss');
      // Mean entropy of the teacher's sharpened distribution, against float64.
      // ... and of the batch-mean distribution (the marginal).
      let ent = 0;
      const marginal = new Float64Array(K);
      for (let r = 0; r < 2 * B; r++) {
        const z = Array.from({ length: K }, (_, k) => (t[r * K + k] - c0[k]) / 0.04);
        const m = Math.max(...z);
        const lse = m + Math.log(z.reduce((acc, x) => acc + Math.exp(x - m), 0));
        ent -= z.reduce((acc, x) => acc + Math.exp(x - lse) * (x - lse), 0) / (2 * B);
        z.forEach((x, k) => (marginal[k] += Math.exp(x - lse) / (2 * B)));
      }
      const margEnt = -marginal.reduce((acc, p) => acc + p * Math.log(p), 0);
      expectClose([await loss.lastTeacherEntropy!.item()], [ent], 1e-4, 1e-5, 'teacher entropy');
      expectClose([await loss.lastTeacherMarginalEntropy!.item()], [margEnt], 1e-4, 1e-5, 'teacher marginal entropy');
      expect(margEnt).toBeGreaterThan(ent + 0.1); // the rows differ, so the check above is not the per-row one again
      expectClose(await loss.center.toArray(), Array.from(c0, (c, k) => 0.9 * c + 0.1 * ref.newCenterDelta[k]), 1e-6, 1e-7, 'center');
      L.backward();
      expect(teacher.grad).toBeNull();
      const fd = finiteDiff((x) => dinoLossRef(x, t, c0, V, B, K, 0.1, 0.04).loss, s, 1e-5);
      expectClose(await student.grad!.toArray(), fd, 1e-3, 1e-6, 'student grad vs finite differences');
      loss.dispose();
    });
  });

  it('shape errors name the shapes', async () => {
    const wd = await getEngine();
    await wd.scope(async () => {
      const loss = new DinoLoss(wd, { outDim: K, ncrops: V, studentTemp: 0.1, centerMomentum: 0.9 });
      expect(() => loss.forward(wd.zeros([V * B, K]), wd.zeros([B, K]), 0.04)).toThrow(/\[3, 37\]/);
      loss.dispose();
    });
  });
});

describe('schedules (official cosine_scheduler values)', () => {
  it('lr: peak 1e-3, 3 epochs x 2 iters, 1 warm-up epoch', () => {
    expectClose(cosineScheduler(1e-3, 1e-6, 3, 2, { warmupEpochs: 1 }), [0, 1e-3, 1e-3, 8.537e-4, 5.005e-4, 1.473e-4], 1e-3, 1e-9, 'lr');
  });
  it('weight decay 0.04 → 0.4 and momentum 0.996 → 1', () => {
    expectClose(cosineScheduler(0.04, 0.4, 2, 2), [0.04, 0.0927208, 0.22, 0.3472792], 1e-6, 0, 'wd');
    expectClose(cosineScheduler(0.996, 1, 2, 2), [0.996, 0.9965858, 0.998, 0.9994142], 1e-7, 0, 'momentum');
  });
  it('teacher temperature warm-up per epoch', () => {
    expectClose(teacherTempSchedule(0.04, 0.07, 3, 5), [0.04, 0.055, 0.07, 0.07, 0.07], 1e-12, 0, 'teacher temp');
  });
});
