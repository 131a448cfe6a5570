/**
 * DINO loss and schedules against the official formulas: the fused loss equals the float64 double
 * loop (centering and both temperatures included), its gradient matches finite differences, the
 * center is an EMA of the raw teacher outputs, no gradient reaches the teacher, and the schedules
 * reproduce the worked values of dino.md.
 */
import { describe, expect, it } from 'vitest';
import { DinoLoss, dinoLossRef } from '../../train/loss.js';
import { cosineScheduler, teacherTempSchedule } from '../../train/schedules.js';
import { expectClose, finiteDiff, getEngine, randn } from '../helpers.js';

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
      let ent = 0;
      for (let r = 0; r < 2 * B; r++) {
        const z = Array.from({ length: K }, (_, k) => (t[r * K + k] - c0[k]) / 0.04);
        const m = Math.max(...z);
        const lse = m + Math.log(z.reduce((acc, x) => acc + Math.exp(x - m), 0));
        ent -= z.reduce((acc, x) => acc + Math.exp(x - lse) * (x - lse), 0) / (2 * B);
      }
      expectClose([await loss.lastTeacherEntropy!.item()], [ent], 1e-4, 1e-5, 'teacher entropy');
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
